//! A heapsort for the configuration's few sorts: O(n log n) in the worst case and a few hundred
//! bytes of wasm, where the standard library's sorts cost kilobytes per element type.

use crate::hash_index::HashIndex;

/// Sorts `v` by `less` (not stable).
pub(crate) fn heapsort<T>(v: &mut [T], less: impl Fn(&T, &T) -> bool) {
    let len = v.len();
    heapsort_indexes(len, &mut |a, b, swap| {
        if swap {
            v.swap(a, b);
            false
        } else {
            match (v.get(a), v.get(b)) {
                (Some(x), Some(y)) => less(x, y),
                _ => false,
            }
        }
    });
}

/// The sort itself, once for every element type: `op(a, b, false)` is whether item `a` sorts
/// before item `b`, `op(a, b, true)` swaps them.
fn heapsort_indexes(len: usize, op: &mut dyn FnMut(usize, usize, bool) -> bool) {
    fn sift(op: &mut dyn FnMut(usize, usize, bool) -> bool, mut root: usize, end: usize) {
        loop {
            let mut child = 2 * root + 1;
            if child >= end {
                break;
            }
            if child + 1 < end && op(child, child + 1, false) {
                child += 1;
            }
            if !op(root, child, false) {
                break;
            }
            op(root, child, true);
            root = child;
        }
    }
    for i in (0..len / 2).rev() {
        sift(op, i, len);
    }
    for end in (1..len).rev() {
        op(0, end, true);
        sift(op, 0, end);
    }
}

/// The indexes of `items` in the order of (item, index): equal items stay in index order.
pub(crate) fn sorted_order(items: &[&[u8]]) -> Vec<usize> {
    let mut order: Vec<usize> = (0..items.len()).collect();
    heapsort(&mut order, |&a, &b| (items.get(a), a) < (items.get(b), b));
    order
}

/// The first item that equals an earlier one, as (the earliest equal item's index, its index):
/// the smallest such later index. O(n): the items go into a [`HashIndex`] in order, and an item
/// meets only earlier items it may equal. (The hash's keys are fixed: only a configuration's
/// author could choose ids that collide, and make their own load quadratic.)
pub(crate) fn first_duplicate(items: &[&[u8]]) -> Option<(usize, usize)> {
    use std::hash::Hasher;
    let mut index = HashIndex::with_capacity(items.len());
    for (b, item) in items.iter().enumerate() {
        let mut hasher = std::hash::DefaultHasher::new();
        hasher.write(item);
        let hash = hasher.finish();
        if let Some(a) = index.candidates(hash).find(|&a| items.get(a) == Some(item)) {
            return Some((a, b));
        }
        index.insert(hash, b);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::{first_duplicate, heapsort};

    #[test]
    fn finds_the_first_duplicate_as_a_scan_would() {
        let scan = |v: &[u8]| {
            v.iter().enumerate().find_map(|(i, x)| {
                v.get(..i)
                    .and_then(|before| before.iter().position(|y| y == x))
                    .map(|j| (j, i))
            })
        };
        let slices = |v: &[u8]| -> Vec<Vec<u8>> { v.iter().map(|b| vec![*b]).collect() };
        let dup = |v: &[u8]| {
            let owned = slices(v);
            let refs: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
            first_duplicate(&refs)
        };
        let mut x: u64 = 99;
        for n in 0..120 {
            let v: Vec<u8> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 40) as u8
                })
                .collect();
            assert_eq!(dup(&v), scan(&v), "{v:?}");
        }
        assert_eq!(dup(&[]), None);
        assert_eq!(dup(&[3, 1, 2]), None);
        assert_eq!(dup(&[5, 1, 5, 1, 5]), Some((0, 2)));
        assert_eq!(first_duplicate(&[b"ab", b"a", b"ab"]), Some((0, 2)));
        // Many items: 20,000 ids, then repeats of two of them.
        let mut ids: Vec<String> = (0..20_000).map(|i| format!("k{i}")).collect();
        let refs =
            |v: &[String]| -> Vec<Vec<u8>> { v.iter().map(|s| s.clone().into_bytes()).collect() };
        let owned = refs(&ids);
        let slices: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        assert_eq!(first_duplicate(&slices), None);
        ids.push("k19999".to_string());
        ids.push("k7".to_string());
        let owned = refs(&ids);
        let slices: Vec<&[u8]> = owned.iter().map(Vec::as_slice).collect();
        assert_eq!(first_duplicate(&slices), Some((19_999, 20_000)));
    }

    #[test]
    fn sorts() {
        let mut x: u64 = 12345;
        for n in 0..200 {
            let mut v: Vec<u64> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    x % 50
                })
                .collect();
            let mut want = v.clone();
            want.sort();
            heapsort(&mut v, |a, b| a < b);
            assert_eq!(v, want);
        }
    }
}
