//! An index of a list's items by a 64-bit hash: open addressing with linear probing over at
//! least twice as many slots as items, each slot an item's index + 1 (0: empty). It serves the
//! configuration's duplicate checks and the API keys' lookup, where a sort cost a large share
//! of loading 20,000 keys.

#[derive(Clone, Debug)]
pub(crate) struct HashIndex {
    slots: Vec<u32>,
}

impl HashIndex {
    /// An empty index for up to `items` items (more would fill it: an insert then does
    /// nothing).
    pub(crate) fn with_capacity(items: usize) -> Self {
        HashIndex {
            slots: vec![0; (items * 2).next_power_of_two()],
        }
    }

    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    /// Indexes item `index` under `hash`.
    pub(crate) fn insert(&mut self, hash: u64, index: usize) {
        let (Ok(entry), mask) = (u32::try_from(index + 1), self.mask()) else {
            return;
        };
        let mut s = hash as usize & mask;
        for _ in 0..self.slots.len() {
            match self.slots.get_mut(s) {
                Some(slot) if *slot == 0 => {
                    *slot = entry;
                    return;
                }
                _ => s = (s + 1) & mask,
            }
        }
    }

    /// The items that may be under `hash` (all items of the same hash among them): those in
    /// the slots from `hash`'s own to the first empty one.
    pub(crate) fn candidates(&self, hash: u64) -> Candidates<'_> {
        Candidates {
            index: self,
            slot: hash as usize & self.mask(),
            left: self.slots.len(),
        }
    }

    #[cfg(test)]
    pub(crate) fn slots(&self) -> &[u32] {
        &self.slots
    }
}

pub(crate) struct Candidates<'a> {
    index: &'a HashIndex,
    slot: usize,
    left: usize,
}

impl Iterator for Candidates<'_> {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        self.left = self.left.checked_sub(1)?;
        let item = (*self.index.slots.get(self.slot)? as usize).checked_sub(1)?;
        self.slot = (self.slot + 1) & self.index.mask();
        Some(item)
    }
}
