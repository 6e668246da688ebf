//! API keys and their lookup. Keys are held only as SHA-256 digests; a presented key is hashed
//! and compared with the stored digest in constant time. No key value is ever logged.

use crate::hash_index::HashIndex;
use sha2::{Digest, Sha256};

/// One configured key.
#[derive(Clone, Debug)]
pub struct ApiKey {
    pub id: String,
    digest: [u8; 32],
    /// Index of the usage plan in [`crate::config::Config::plans`].
    pub plan: Option<usize>,
    pub invalidate_cache: bool,
}

impl ApiKey {
    pub fn new(id: String, digest: [u8; 32], plan: Option<usize>, invalidate_cache: bool) -> Self {
        ApiKey {
            id,
            digest,
            plan,
            invalidate_cache,
        }
    }

    pub fn digest(&self) -> &[u8; 32] {
        &self.digest
    }
}

/// The key table: the header keys arrive in and the keys, indexed by a digest prefix.
#[derive(Clone, Debug)]
pub struct ApiKeys {
    pub header: String,
    keys: Vec<ApiKey>,
    /// The keys by the first 8 bytes of their digests. How far a lookup probes depends on
    /// which slots are filled, so many timed requests could tell the low bits of the stored
    /// digests' prefixes (about 16 for 20,000 keys); bits of a SHA-256 digest bring no key
    /// closer, and each key met on the way is compared in constant time. (A sorted list,
    /// searched by halves, took 8% of the load of 20,000 keys to sort and ~15 steps a lookup.)
    index: HashIndex,
}

impl ApiKeys {
    pub fn new(header: String, keys: Vec<ApiKey>) -> Self {
        let mut index = HashIndex::with_capacity(keys.len());
        for (i, k) in keys.iter().enumerate() {
            index.insert(prefix(&k.digest), i);
        }
        ApiKeys {
            header,
            keys,
            index,
        }
    }

    pub fn keys(&self) -> &[ApiKey] {
        &self.keys
    }

    /// The key whose digest matches the presented value.
    pub fn lookup(&self, presented: &[u8]) -> Option<&ApiKey> {
        self.lookup_index(presented).map(|(_, k)| k)
    }

    /// The key whose digest matches the presented value, with its index.
    pub fn lookup_index(&self, presented: &[u8]) -> Option<(usize, &ApiKey)> {
        let digest = sha256(presented);
        self.index.candidates(prefix(&digest)).find_map(|i| {
            let k = self.keys.get(i)?;
            constant_time_eq(&k.digest, &digest).then_some((i, k))
        })
    }
}

fn prefix(d: &[u8; 32]) -> u64 {
    d.first_chunk::<8>()
        .map_or(0, |head| u64::from_be_bytes(*head))
}

/// Whether a request could present this key: Envoy trims a header value's surrounding spaces
/// and tabs and refuses control characters, so a key that starts or ends with whitespace or
/// holds a control character could never match.
pub fn presentable(key: &[u8]) -> bool {
    let edge = |b: Option<&u8>| matches!(b, Some(b' ' | b'\t'));
    !key.is_empty()
        && !edge(key.first())
        && !edge(key.last())
        && !key.iter().any(|&b| (b < b' ' && b != b'\t') || b == 0x7f)
}

pub fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// Equality whose running time does not depend on where the inputs differ.
pub fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b.iter()) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

/// Parses 64 lowercase hex digits.
pub fn parse_sha256_hex(s: &str) -> Option<[u8; 32]> {
    let bytes = s.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (o, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let hi = lower_hex(*pair.first()?)?;
        let lo = lower_hex(*pair.get(1)?)?;
        *o = hi << 4 | lo;
    }
    Some(out)
}

fn lower_hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(d: &[u8; 32]) -> String {
        d.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sha256_known_vector() {
        assert_eq!(
            hex(&sha256(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn presentable_keys() {
        for k in ["a", "dev-key-123", "a b", "a\tb", "ключ"] {
            assert!(presentable(k.as_bytes()), "{k:?}");
        }
        for k in [
            "", " a", "a ", "\ta", "a\t", "a\nb", "a\rb", "a\0b", "a\x7fb",
        ] {
            assert!(!presentable(k.as_bytes()), "{k:?}");
        }
    }

    #[test]
    fn hex_parsing() {
        let h = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(parse_sha256_hex(h), Some(sha256(b"abc")));
        assert_eq!(parse_sha256_hex(&h.to_uppercase()), None);
        assert_eq!(parse_sha256_hex(&h[..63]), None);
        assert_eq!(parse_sha256_hex(&format!("{}g", &h[..63])), None);
    }

    #[test]
    fn lookup_finds_only_the_right_key() {
        let keys = ApiKeys::new(
            "x-api-key".into(),
            vec![
                ApiKey::new("a".into(), sha256(b"key-a"), None, false),
                ApiKey::new("b".into(), sha256(b"key-b"), Some(0), true),
            ],
        );
        assert_eq!(keys.lookup(b"key-a").map(|k| k.id.as_str()), Some("a"));
        assert_eq!(keys.lookup(b"key-b").map(|k| k.plan), Some(Some(0)));
        assert!(keys.lookup(b"key-c").is_none());
        assert!(keys.lookup(b"").is_none());
        assert!(keys.lookup(b"\xff\xfe").is_none());
    }

    /// Keys `k0`, `k1`, ... whose values are `key-0`, `key-1`, ...
    fn numbered(n: usize) -> Vec<ApiKey> {
        (0..n)
            .map(|i| {
                ApiKey::new(
                    format!("k{i}"),
                    sha256(format!("key-{i}").as_bytes()),
                    None,
                    false,
                )
            })
            .collect()
    }

    #[test]
    fn lookup_among_many_keys_and_shared_prefixes() {
        let mut keys = numbered(300);
        // Digests that share the 8-byte prefix of key-7's (no key hashes to them).
        let real = sha256(b"key-7");
        for (j, last) in [0u8, 0xff].into_iter().enumerate() {
            let mut d = real;
            d[31] = last ^ real[31] ^ 1;
            d[30] ^= j as u8;
            keys.push(ApiKey::new(format!("twin{j}"), d, None, false));
        }
        let keys = ApiKeys::new("x-api-key".into(), keys);
        for i in 0..300 {
            let (idx, k) = keys.lookup_index(format!("key-{i}").as_bytes()).unwrap();
            assert_eq!(k.id, format!("k{i}"));
            assert_eq!(idx, i);
        }
        assert!(keys.lookup(b"key-300").is_none());
        assert!(ApiKeys::new("x".into(), Vec::new())
            .lookup(b"key-1")
            .is_none());
    }

    #[test]
    fn lookup_among_20000_keys() {
        let keys = ApiKeys::new("x-api-key".into(), numbered(20_000));
        assert_eq!(keys.index.slots().len(), 65_536);
        assert_eq!(
            keys.index.slots().iter().filter(|&&s| s != 0).count(),
            20_000
        );
        for i in (0..20_000).step_by(7) {
            assert_eq!(
                keys.lookup_index(format!("key-{i}").as_bytes())
                    .map(|(j, _)| j),
                Some(i)
            );
        }
        for i in 20_000..25_000 {
            assert!(keys.lookup(format!("key-{i}").as_bytes()).is_none());
        }
    }

    #[test]
    fn constant_time_eq_compares_everything() {
        let a = [7u8; 32];
        let mut b = a;
        assert!(constant_time_eq(&a, &b));
        b[31] ^= 1;
        assert!(!constant_time_eq(&a, &b));
    }
}
