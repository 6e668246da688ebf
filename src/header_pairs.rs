//! A header map as proxy-wasm hosts hand it over (`proxy_get_header_map_pairs`), read in place:
//! the filter fetches a request's headers with one host call into one buffer, and every lookup
//! borrows from it. (One call costs about what one single-header read costs, because the host's
//! price is mostly the allocation it makes in the VM for each answer; and the SDK's own decoding
//! would allocate a `String` and a `Vec` per header.)
//!
//! Layout, little-endian: the number of pairs N (u32); N pairs of u32 (name length, value
//! length); then each name and each value, every one followed by a NUL byte. Bytes that do not
//! follow it read as fewer (or no) headers: nothing here panics.

/// A serialized header map.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeaderPairs {
    bytes: Vec<u8>,
}

fn le32(bytes: &[u8], at: usize) -> Option<usize> {
    let b: [u8; 4] = bytes.get(at..at.checked_add(4)?)?.try_into().ok()?;
    usize::try_from(u32::from_le_bytes(b)).ok()
}

impl HeaderPairs {
    /// Takes the bytes the host returned.
    pub fn new(bytes: Vec<u8>) -> HeaderPairs {
        HeaderPairs { bytes }
    }

    /// Serializes pairs the way the ABI wants a map (the filter's own replies; tests and
    /// benchmarks).
    pub fn encode(pairs: &[(&str, &[u8])]) -> HeaderPairs {
        let size = pairs.iter().fold(4, |n: usize, (k, v)| {
            n.saturating_add(k.len())
                .saturating_add(v.len())
                .saturating_add(10)
        });
        let mut bytes = Vec::with_capacity(size);
        let count = u32::try_from(pairs.len()).unwrap_or(u32::MAX);
        bytes.extend_from_slice(&count.to_le_bytes());
        for (name, value) in pairs {
            for len in [name.len(), value.len()] {
                bytes.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_le_bytes());
            }
        }
        for (name, value) in pairs {
            bytes.extend_from_slice(name.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(value);
            bytes.push(0);
        }
        HeaderPairs { bytes }
    }

    /// The serialized map.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The pairs in the host's order.
    pub fn iter(&self) -> Pairs<'_> {
        let count = le32(&self.bytes, 0).unwrap_or(0);
        // Where the names and values start; a count the bytes cannot hold reads as no pairs.
        let data = count
            .checked_mul(8)
            .and_then(|n| n.checked_add(4))
            .filter(|&start| start <= self.bytes.len());
        Pairs {
            bytes: &self.bytes,
            index: 0,
            count: if data.is_some() { count } else { 0 },
            pos: data.unwrap_or(0),
        }
    }

    /// The first value of header `name`, compared ASCII case-insensitively (hosts keep names in
    /// lower case). Hosts answer a single-header read with the first value too.
    ///
    /// The hot path of every request: names of another length are skipped on their size
    /// alone, and a lower-case name is compared as bytes before it is compared ignoring case.
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        let want = name.as_bytes();
        let mut pairs = self.iter();
        while pairs.index < pairs.count {
            let sizes = pairs.index.checked_mul(8)?.checked_add(4)?;
            let name_len = le32(pairs.bytes, sizes)?;
            let value_len = le32(pairs.bytes, sizes.checked_add(4)?)?;
            let name_end = pairs.pos.checked_add(name_len)?;
            let value_start = name_end.checked_add(1)?;
            let value_end = value_start.checked_add(value_len)?;
            if name_len == want.len() {
                let found = pairs.bytes.get(pairs.pos..name_end)?;
                if found == want || found.eq_ignore_ascii_case(want) {
                    return pairs.bytes.get(value_start..value_end);
                }
            }
            pairs.pos = value_end.checked_add(1)?;
            pairs.index += 1;
        }
        None
    }

    /// Whether the map holds none of its pairs (an empty or unreadable map), or a header named
    /// as one of `names` (lower case): one pass, names of other lengths skipped on their size.
    pub fn empty_or_any_of(&self, names: &[&str]) -> bool {
        let mut pairs = self.iter();
        if pairs.count == 0 {
            return true;
        }
        pairs.any(|(n, _)| {
            names
                .iter()
                .any(|w| w.len() == n.len() && n.eq_ignore_ascii_case(w.as_bytes()))
        })
    }

    /// The value of header `name` when it is sent once; `Err` when it is sent more than once.
    pub fn get_once(&self, name: &str) -> Option<Result<&[u8], crate::gateway::Repeated>> {
        let want = name.as_bytes();
        let mut found = None;
        for (n, v) in self.iter() {
            if n.len() == want.len() && n.eq_ignore_ascii_case(want) {
                if found.is_some() {
                    return Some(Err(crate::gateway::Repeated));
                }
                found = Some(v);
            }
        }
        found.map(Ok)
    }

    /// Every value of header `name`, in order, joined with `, ` (what the values mean together,
    /// RFC 9110 5.3); None when the header is absent. Found as [`HeaderPairs::get`] finds one.
    pub fn joined(&self, name: &str) -> Option<Vec<u8>> {
        let want = name.as_bytes();
        let mut out: Option<Vec<u8>> = None;
        for (n, v) in self.iter() {
            if n.len() == want.len() && n.eq_ignore_ascii_case(want) {
                match &mut out {
                    Some(o) => {
                        o.extend_from_slice(b", ");
                        o.extend_from_slice(v);
                    }
                    None => out = Some(v.to_vec()),
                }
            }
        }
        out
    }
}

/// The pairs of a [`HeaderPairs`], as (name, value).
#[derive(Clone)]
pub struct Pairs<'a> {
    bytes: &'a [u8],
    index: usize,
    count: usize,
    /// Where the next name starts.
    pos: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.index >= self.count {
            return None;
        }
        let sizes = self.index.checked_mul(8)?.checked_add(4)?;
        let (name_len, value_len) = (le32(self.bytes, sizes)?, le32(self.bytes, sizes + 4)?);
        let name_end = self.pos.checked_add(name_len)?;
        let name = self.bytes.get(self.pos..name_end)?;
        let value_start = name_end.checked_add(1)?;
        let value_end = value_start.checked_add(value_len)?;
        let value = self.bytes.get(value_start..value_end)?;
        self.pos = value_end.checked_add(1)?;
        self.index += 1;
        Some((name, value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_every_value_of_a_repeated_header() {
        let m = HeaderPairs::encode(&[
            ("x-tenant", b"victim"),
            (":path", b"/t"),
            ("X-Tenant", b"evil"),
        ]);
        assert_eq!(m.get("x-tenant"), Some(&b"victim"[..]));
        assert_eq!(m.joined("x-tenant").as_deref(), Some(&b"victim, evil"[..]));
        assert_eq!(m.joined(":path").as_deref(), Some(&b"/t"[..]));
        assert_eq!(m.joined("x-other"), None);
    }

    #[test]
    fn reads_what_it_encodes_in_order() {
        let m = HeaderPairs::encode(&[
            (":method", b"GET"),
            (":path", b"/pets/1?x=1"),
            ("origin", b"http://localhost:3000"),
            ("x-empty", b""),
            ("accept", b"a"),
            ("accept", b"b"),
        ]);
        let pairs: Vec<_> = m.iter().collect();
        assert_eq!(pairs.len(), 6);
        assert_eq!(pairs[1], (&b":path"[..], &b"/pets/1?x=1"[..]));
        assert_eq!(m.get(":method"), Some(&b"GET"[..]));
        assert_eq!(m.get("Origin"), Some(&b"http://localhost:3000"[..]));
        assert_eq!(m.get("x-empty"), Some(&b""[..]));
        assert_eq!(
            m.get("accept"),
            Some(&b"a"[..]),
            "the first value, as the host's single read"
        );
        assert_eq!(m.get("absent"), None);
        assert_eq!(m.get(""), None);
        assert_eq!(m.get_once("x-empty"), Some(Ok(&b""[..])));
        assert_eq!(
            m.get_once("ORIGIN"),
            Some(Ok(&b"http://localhost:3000"[..]))
        );
        assert_eq!(m.get_once("accept"), Some(Err(crate::gateway::Repeated)));
        assert_eq!(m.get_once("absent"), None);
        assert!(m.empty_or_any_of(&["absent", "x-empty"]));
        assert!(m.empty_or_any_of(&["ORIGIN"]));
        assert!(!m.empty_or_any_of(&["absent", "x-emptY-not"]));
        assert!(HeaderPairs::new(Vec::new()).empty_or_any_of(&[]));
        assert!(HeaderPairs::encode(&[]).empty_or_any_of(&["x"]));
    }

    #[test]
    fn get_finds_what_iterating_finds_even_in_cut_or_garbled_maps() {
        let good = HeaderPairs::encode(&[
            (":method", b"GET"),
            ("ORIGIN", b"http://a"),
            ("x-b", b"1"),
            ("origin", b"http://b"),
            ("x-a", b""),
            ("accept", b"*/*"),
        ])
        .bytes;
        let names = [
            ":method", "origin", "Origin", "x-a", "x-b", "accept", "absent", "",
        ];
        let slow = |m: &HeaderPairs, name: &str| {
            m.iter()
                .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
                .map(|(_, v)| v.to_vec())
        };
        // Every cut of the map, and every single byte set to 0xFF (lengths and count too).
        let mut maps: Vec<Vec<u8>> = (0..=good.len()).map(|n| good[..n].to_vec()).collect();
        for i in 0..good.len() {
            let mut garbled = good.clone();
            garbled[i] = 0xFF;
            maps.push(garbled);
        }
        for bytes in maps {
            let m = HeaderPairs::new(bytes);
            for name in names {
                assert_eq!(m.get(name).map(<[u8]>::to_vec), slow(&m, name), "{name}");
            }
        }
    }

    #[test]
    fn empty_and_malformed_maps_read_as_fewer_headers_without_panicking() {
        assert_eq!(HeaderPairs::default().get(":path"), None);
        assert_eq!(HeaderPairs::encode(&[]).iter().count(), 0);
        let good = HeaderPairs::encode(&[("a", b"1"), ("bb", b"22")]);
        // Every truncation: a prefix of the pairs, never a wrong value.
        for cut in 0..good.bytes.len() {
            let m = HeaderPairs::new(good.bytes[..cut].to_vec());
            for (n, v) in m.iter() {
                assert!((n, v) == (&b"a"[..], &b"1"[..]) || (n, v) == (&b"bb"[..], &b"22"[..]));
            }
        }
        // A count larger than the bytes can hold.
        let mut huge = good.bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(HeaderPairs::new(huge).iter().count(), 0);
        // Lengths pointing past the end.
        let mut long = good.bytes.clone();
        long[4..8].copy_from_slice(&1000u32.to_le_bytes());
        assert_eq!(HeaderPairs::new(long).get("bb"), None);
        // Arbitrary bytes.
        for seed in 0u32..200 {
            let bytes: Vec<u8> = (0..seed % 40)
                .map(|i| (seed.wrapping_mul(31).wrapping_add(i * 7) % 256) as u8)
                .collect();
            let _ = HeaderPairs::new(bytes).iter().count();
        }
    }
}
