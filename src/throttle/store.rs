//! The counter store: Envoy shared data seen through a trait, the compare-and-swap update loop,
//! and an in-memory store with Envoy's semantics for tests.
//!
//! Envoy's shared data is one map per VM id, shared by every worker thread of the process. A
//! `set` with a CAS token fails with a mismatch when the entry changed since it was read, but a
//! `set` on a key that does not exist yet is an unconditional insert: two workers creating the
//! same key could each think they won. tollgate therefore creates every key it will ever use at
//! configuration time ([`ensure`]), before traffic, and afterwards only updates with CAS.

use std::fmt;

/// Errors of a store operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreError {
    /// The entry changed since it was read.
    CasMismatch,
    /// The host refused the call.
    Host,
}

/// Envoy shared data, or a stand-in.
pub trait SharedStore {
    /// The value and its CAS token, or `None` when the key does not exist.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Stores `value`; with `cas` `Some`, only when the entry's token still equals it.
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// What a shared-data read gave (Envoy's `get_shared_data` through the SDK: the value and the
/// CAS token) as [`SharedStore::get`]'s answer. Envoy hands over an empty value as no data at
/// all, with its token: that entry exists, and an update must compare-and-swap it like any
/// other, or two workers could both write it unconditionally. Only a read without a token is
/// an absent key.
pub fn entry_from_host(value: Option<Vec<u8>>, cas: Option<u32>) -> Option<(Vec<u8>, u32)> {
    match (value, cas) {
        (value, Some(cas)) => Some((value.unwrap_or_default(), cas)),
        (Some(value), None) => Some((value, 0)),
        (None, None) => None,
    }
}

/// Why an update gave up.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UpdateError {
    /// Every attempt met a concurrent writer.
    Contended,
    /// The host refused a call.
    Host,
}

impl UpdateError {
    /// What went wrong, in words.
    pub fn as_str(self) -> &'static str {
        match self {
            UpdateError::Contended => "shared data stayed contended through every retry",
            UpdateError::Host => "the host refused a shared data call",
        }
    }
}

impl fmt::Display for UpdateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Attempts a read-modify-write makes before giving up. With two workers about 1% of updates
/// meet one conflict; eight in a row do not happen outside pathological contention.
pub const MAX_ATTEMPTS: u32 = 8;

/// Creates `key` with `initial` when it does not exist. Existing values (counters that survive a
/// plugin reload) are left alone.
pub fn ensure(store: &dyn SharedStore, key: &str, initial: &[u8]) -> Result<bool, StoreError> {
    match store.get(key)? {
        Some(_) => Ok(false),
        None => store.set(key, initial, None).map(|_| true),
    }
}

/// Read-modify-write of one key with compare-and-swap. `step` sees the current value (`None`
/// when absent) and returns its result and the value to write (`None`: write nothing).
pub fn update<T>(
    store: &dyn SharedStore,
    key: &str,
    mut step: impl FnMut(Option<&[u8]>) -> (T, Option<[u8; 16]>),
) -> Result<T, UpdateError> {
    for _ in 0..MAX_ATTEMPTS {
        let current = store.get(key).map_err(|_| UpdateError::Host)?;
        let (value, cas) = match &current {
            Some((v, cas)) => (Some(v.as_slice()), Some(*cas)),
            // Keys are created at configure time; should one be missing anyway, it is
            // inserted (Envoy cannot compare-and-swap an absent key).
            None => (None, None),
        };
        let (result, write) = step(value);
        let Some(bytes) = write else {
            return Ok(result);
        };
        match store.set(key, &bytes, cas) {
            Ok(()) => return Ok(result),
            Err(StoreError::CasMismatch) => continue,
            Err(StoreError::Host) => return Err(UpdateError::Host),
        }
    }
    Err(UpdateError::Contended)
}

/// A thread-safe in-memory store with Envoy's shared-data semantics (a global CAS counter,
/// unconditional insert of absent keys). For tests and the native tools.
#[derive(Default)]
pub struct MemoryStore {
    inner: std::sync::Mutex<MemoryMap>,
}

/// The last CAS token handed out, and the entries with their tokens.
type MemoryMap = (u32, hashbrown::HashMap<String, (Vec<u8>, u32)>);

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn len(&self) -> usize {
        self.inner.lock().map(|g| g.1.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        let g = self.inner.lock().map_err(|_| StoreError::Host)?;
        Ok(g.1.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut g = self.inner.lock().map_err(|_| StoreError::Host)?;
        g.0 = g.0.wrapping_add(1).max(1);
        let next = g.0;
        match g.1.get_mut(key) {
            Some(entry) => {
                if let Some(c) = cas {
                    if c != 0 && c != entry.1 {
                        return Err(StoreError::CasMismatch);
                    }
                }
                *entry = (value.to_vec(), next);
            }
            None => {
                g.1.insert(key.to_string(), (value.to_vec(), next));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::throttle::bucket::{take, BucketSpec, BucketState};
    use std::sync::atomic::{AtomicU64, Ordering};

    fn take_one(store: &dyn SharedStore, key: &str, spec: &BucketSpec, now: u64) -> bool {
        update(store, key, |cur| {
            let prior = cur
                .and_then(BucketState::decode)
                .unwrap_or_else(|| BucketState::full(spec, now));
            let (o, next) = take(spec, prior, now);
            (o.allowed, Some(next.encode()))
        })
        .unwrap()
    }

    /// Envoy's shared data as the SDK shows it: an empty value comes back as no data, with
    /// its CAS token.
    struct EnvoyLike(MemoryStore);

    impl SharedStore for EnvoyLike {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            let raw = self.0.get(key)?;
            let (value, cas) = match raw {
                Some((v, cas)) => ((!v.is_empty()).then_some(v), Some(cas)),
                None => (None, None),
            };
            Ok(entry_from_host(value, cas))
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.0.set(key, value, cas)
        }
    }

    #[test]
    fn an_empty_entry_is_updated_with_compare_and_swap() {
        assert_eq!(entry_from_host(None, Some(7)), Some((Vec::new(), 7)));
        assert_eq!(
            entry_from_host(Some(b"v".to_vec()), Some(7)),
            Some((b"v".to_vec(), 7))
        );
        assert_eq!(
            entry_from_host(Some(b"v".to_vec()), None),
            Some((b"v".to_vec(), 0))
        );
        assert_eq!(entry_from_host(None, None), None);
        // A quota counter is created empty. Another worker writes it between this worker's
        // read and its write: the write must fail its CAS and be retried on the new value,
        // not overwrite it.
        let s = EnvoyLike(MemoryStore::new());
        assert!(ensure(&s, "q", &[]).unwrap());
        let mut seen = Vec::new();
        update(&s, "q", |cur| {
            seen.push(cur.map(<[u8]>::to_vec));
            if seen.len() == 1 {
                s.set("q", b"other", None).unwrap();
            }
            ((), Some([1; 16]))
        })
        .unwrap();
        assert_eq!(seen, vec![Some(Vec::new()), Some(b"other".to_vec())]);
    }

    #[test]
    fn ensure_keeps_existing_values() {
        let s = MemoryStore::new();
        assert!(ensure(&s, "k", b"one").unwrap());
        assert!(!ensure(&s, "k", b"two").unwrap());
        assert_eq!(s.get("k").unwrap().unwrap().0, b"one");
    }

    #[test]
    fn cas_mismatch_is_detected() {
        let s = MemoryStore::new();
        s.set("k", b"a", None).unwrap();
        let (_, cas) = s.get("k").unwrap().unwrap();
        s.set("k", b"b", None).unwrap();
        assert_eq!(s.set("k", b"c", Some(cas)), Err(StoreError::CasMismatch));
    }

    /// A store that lets another writer in between a read and a write, a given number of times.
    struct Interfering {
        inner: MemoryStore,
        interfere: AtomicU64,
    }

    impl SharedStore for Interfering {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            let v = self.inner.get(key);
            if self.interfere.load(Ordering::SeqCst) > 0 {
                self.interfere.fetch_sub(1, Ordering::SeqCst);
                // Another worker takes a token right after our read.
                let (bytes, _) = self.inner.get(key)?.unwrap();
                let spec = BucketSpec::new(0.001, 100).unwrap();
                let (_, next) = take(&spec, BucketState::decode(&bytes).unwrap(), 1);
                self.inner.set(key, &next.encode(), None)?;
            }
            v
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.inner.set(key, value, cas)
        }
    }

    #[test]
    fn interleaved_writer_loses_no_update() {
        let spec = BucketSpec::new(0.001, 100).unwrap();
        let s = Interfering {
            inner: MemoryStore::new(),
            interfere: AtomicU64::new(3),
        };
        ensure(&s.inner, "b", &BucketState::full(&spec, 1).encode()).unwrap();
        assert!(take_one(&s, "b", &spec, 1));
        let left = BucketState::decode(&s.inner.get("b").unwrap().unwrap().0).unwrap();
        // 3 interfering takes + ours.
        assert_eq!(left.tokens_micro / 1_000_000, 96);
    }

    #[test]
    fn gives_up_after_bounded_attempts() {
        let spec = BucketSpec::new(0.001, 100).unwrap();
        let s = Interfering {
            inner: MemoryStore::new(),
            interfere: AtomicU64::new(u64::MAX),
        };
        ensure(&s.inner, "b", &BucketState::full(&spec, 1).encode()).unwrap();
        let r = update(&s, "b", |cur| {
            let (o, n) = take(&spec, BucketState::decode(cur.unwrap()).unwrap(), 1);
            (o.allowed, Some(n.encode()))
        });
        assert_eq!(r, Err(UpdateError::Contended));
    }

    /// Needs threads, which wasm32-wasip1 does not have (`make unit-wasm32` skips it).
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn threads_never_over_admit() {
        use std::sync::Arc;
        let spec = BucketSpec::new(0.000_001, 20).unwrap();
        let store = Arc::new(MemoryStore::new());
        ensure(&*store, "b", &BucketState::full(&spec, 7).encode()).unwrap();
        let admitted = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let store = store.clone();
                let admitted = admitted.clone();
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let ok = loop {
                            let r = update(&*store, "b", |cur| {
                                let prior = BucketState::decode(cur.unwrap()).unwrap();
                                let (o, n) = take(&spec, prior, 7);
                                (o.allowed, Some(n.encode()))
                            });
                            match r {
                                Ok(ok) => break ok,
                                Err(UpdateError::Contended) => continue,
                                Err(e) => panic!("{e}"),
                            }
                        };
                        if ok {
                            admitted.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(admitted.load(Ordering::SeqCst), 20);
    }
}
