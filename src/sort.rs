//! A heapsort for the configuration's few sorts: O(n log n) in the worst case and a few hundred
//! bytes of wasm, where the standard library's sorts cost kilobytes per element type.

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
/// the smallest such later index. O(n log n), for long configuration lists.
pub(crate) fn first_duplicate(items: &[&[u8]]) -> Option<(usize, usize)> {
    let order = sorted_order(items);
    let mut found: Option<(usize, usize)> = None;
    let mut run_start = None;
    for pair in order.windows(2) {
        let (a, b) = match pair {
            [a, b] => (*a, *b),
            _ => continue,
        };
        if items.get(a) == items.get(b) {
            // `a` is the run's first item only if the run starts here.
            let first = *run_start.get_or_insert(a);
            if found.is_none_or(|(_, i)| b < i) {
                found = Some((first, b));
            }
        } else {
            run_start = None;
        }
    }
    found
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
