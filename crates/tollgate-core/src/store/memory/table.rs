//! The hash table of one shard: open addressing with linear probing, entries stored inline.
//!
//! Why not `hashbrown`: a SwissTable keeps its control bytes in one array and its slots in
//! another, so a lookup among a million keys costs two dependent cache misses (control group, then
//! slot) before the decision can start, and on the 2-vCPU VM this project is measured on each miss
//! is ~150-200 ns. Here a key's home slot is computed from its hash and holds the key itself, so the
//! common lookup is one miss (two adjacent lines), and the neighbours a collision moves a key to
//! are the next slots in memory. The million-key decision went from ~700 to ~560 ns in alternating
//! runs against the hashbrown build (`cargo bench -p tollgate-core --bench memory_store`), and to
//! ~470 ns once that one miss is also prefetched before the lock (`prefetch.rs`).
//!
//! The table is kept at most 3/4 full, where linear probing finds a present key in ~2.5 probes on
//! average and an absent one in ~8.5 (Knuth). Removal uses backward-shift deletion (Knuth's
//! Algorithm R), so there are no tombstones and lookups never slow down with churn.
//!
//! The table does not store hashes; operations that move entries take a function that recomputes
//! an entry's hash from the entry.

/// Smallest non-empty capacity.
const MIN_CAPACITY: usize = 8;

pub(super) struct Table<T> {
    /// Power-of-two length (or empty); `None` is a free slot.
    slots: Box<[Option<T>]>,
    len: usize,
}

/// Where a probe for a key ended.
enum Probe {
    /// The key is at this index.
    Found(usize),
    /// The key is absent; this free slot is where it would go.
    Vacant(usize),
}

impl<T> Default for Table<T> {
    fn default() -> Self {
        Self {
            slots: Box::default(),
            len: 0,
        }
    }
}

impl<T> Table<T> {
    #[cfg(test)]
    pub(super) fn len(&self) -> usize {
        self.len
    }

    pub(super) fn capacity(&self) -> usize {
        self.slots.len()
    }

    /// The slot array, for the prefetch hint (`prefetch.rs`); slot `hash & (len - 1)` is a key's
    /// home.
    pub(super) fn slots(&self) -> &[Option<T>] {
        &self.slots
    }

    #[inline]
    fn mask(&self) -> usize {
        self.slots.len().wrapping_sub(1)
    }

    #[inline]
    fn home(&self, hash: u64) -> usize {
        // The low bits: the shard is picked from bits 40-46, so these are independent of it.
        hash as usize & self.mask()
    }

    /// Looks for the entry `eq` accepts, starting at `hash`'s home slot. On an empty table the
    /// answer is `Vacant(0)` (an index `insert` is never handed without growing first).
    #[inline]
    fn probe(&self, hash: u64, mut eq: impl FnMut(&T) -> bool) -> Probe {
        if self.slots.is_empty() {
            return Probe::Vacant(0);
        }
        let mask = self.mask();
        let mut i = self.home(hash);
        // Terminates: the table is never full (load <= 3/4), so some slot is free.
        loop {
            match &self.slots[i] {
                None => return Probe::Vacant(i),
                Some(entry) if eq(entry) => return Probe::Found(i),
                Some(_) => i = (i + 1) & mask,
            }
        }
    }

    /// The entry `eq` accepts among those hashed to `hash`.
    #[inline]
    pub(super) fn get_mut(&mut self, hash: u64, eq: impl FnMut(&T) -> bool) -> Option<&mut T> {
        match self.probe(hash, eq) {
            Probe::Found(i) => self.slots[i].as_mut(),
            Probe::Vacant(_) => None,
        }
    }

    /// The entry `eq` accepts, or a new one from `make` (whose error is passed on, leaving the
    /// table unchanged). `hasher` recomputes entries' hashes if the table has to grow.
    #[inline]
    pub(super) fn get_or_try_insert_with<E>(
        &mut self,
        hash: u64,
        eq: impl FnMut(&T) -> bool,
        make: impl FnOnce() -> Result<T, E>,
        hasher: impl Fn(&T) -> u64,
    ) -> Result<&mut T, E> {
        let index = match self.probe(hash, eq) {
            Probe::Found(i) => i,
            Probe::Vacant(i) => self.insert(i, hash, make()?, hasher),
        };
        Ok(self.slots[index]
            .as_mut()
            .expect("`probe` found or `insert` just put an entry at this index"))
    }

    /// Inserts `value` whose key `probe` reported at `Vacant(index)`; returns where it went. Grows
    /// first when the table would pass 3/4 full, which moves the free slot.
    fn insert(&mut self, index: usize, hash: u64, value: T, hasher: impl Fn(&T) -> u64) -> usize {
        let index = if (self.len + 1) * 4 > self.capacity() * 3 {
            self.resize((self.capacity() * 2).max(MIN_CAPACITY), &hasher);
            self.free_slot_for(hash)
        } else {
            index
        };
        self.len += 1;
        self.slots[index] = Some(value);
        index
    }

    /// The first free slot from `hash`'s home on.
    fn free_slot_for(&self, hash: u64) -> usize {
        let mask = self.mask();
        let mut i = self.home(hash);
        while self.slots[i].is_some() {
            i = (i + 1) & mask;
        }
        i
    }

    /// Moves every entry into a table of `capacity` slots (a power of two above `len * 4 / 3`).
    fn resize(&mut self, capacity: usize, hasher: &impl Fn(&T) -> u64) {
        debug_assert!(capacity.is_power_of_two() && self.len * 4 <= capacity * 3);
        let old = std::mem::replace(
            &mut self.slots,
            std::iter::repeat_with(|| None).take(capacity).collect(),
        );
        for value in old.into_vec().into_iter().flatten() {
            let i = self.free_slot_for(hasher(&value));
            self.slots[i] = Some(value);
        }
    }

    /// Keeps the entries `keep` accepts (it may change them) and drops the rest; returns how many
    /// were dropped. Gives memory back when the table ends up less than 1/4 full.
    pub(super) fn retain(
        &mut self,
        mut keep: impl FnMut(&mut T) -> bool,
        hasher: impl Fn(&T) -> u64,
    ) -> usize {
        let cap = self.capacity();
        if self.len == 0 {
            return 0;
        }
        let mask = self.mask();
        // Start just after a free slot: no run of occupied slots then wraps past the start, so
        // backward shifts only move entries from slots this walk has not reached yet into the
        // slot it is on, which is then examined again.
        let Some(free) = self.slots.iter().position(Option::is_none) else {
            return 0; // unreachable: the table is at most 3/4 full
        };
        let mut dropped = 0;
        let mut i = (free + 1) & mask;
        let mut steps = 0;
        while steps < cap {
            let drop_here = match &mut self.slots[i] {
                Some(v) => !keep(v),
                None => false,
            };
            if drop_here {
                self.remove_at(i, &hasher);
                dropped += 1;
                // Slot `i` now holds an entry shifted back from further on, or is free: look again.
            } else {
                i = (i + 1) & mask;
                steps += 1;
            }
        }
        if cap > MIN_CAPACITY && self.len * 4 < cap {
            let target = (self.len * 2).next_power_of_two().max(MIN_CAPACITY);
            self.resize(target, &hasher);
        }
        dropped
    }

    /// Removes the entry at `hole` and closes the gap: each later entry of the run moves back into
    /// the hole unless its home lies cyclically in `(hole, position]`, where moving it would put it
    /// before its home and make it unreachable.
    fn remove_at(&mut self, mut hole: usize, hasher: &impl Fn(&T) -> u64) {
        let mask = self.mask();
        self.slots[hole] = None;
        self.len -= 1;
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let Some(entry) = &self.slots[j] else { return };
            let home = self.home(hasher(entry));
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.slots[hole] = self.slots[j].take();
                hole = j;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// A deliberately poor hash (few distinct homes) so runs are long, wrap around the end of
    /// the table and overlap: the cases backward-shift deletion can get wrong.
    fn clumpy(k: &(u16, u32)) -> u64 {
        u64::from(k.0 % 7) * 3 + 5
    }

    fn good(k: &(u16, u32)) -> u64 {
        u64::from(k.0).wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }

    #[derive(Debug, Clone)]
    enum Op {
        Upsert(u16),
        Lookup(u16),
        /// Drop every key whose id is divisible by this.
        RetainNotDivisible(u16),
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u16..300).prop_map(Op::Upsert),
            3 => (0u16..300).prop_map(Op::Lookup),
            1 => (2u16..9).prop_map(Op::RetainNotDivisible),
        ]
    }

    fn run(ops: &[Op], hash: fn(&(u16, u32)) -> u64) {
        let mut table: Table<(u16, u32)> = Table::default();
        let mut model: HashMap<u16, u32> = HashMap::new();
        for op in ops {
            match *op {
                Op::Upsert(k) => {
                    let e = table
                        .get_or_try_insert_with(
                            hash(&(k, 0)),
                            |e| e.0 == k,
                            || Ok::<_, ()>((k, 0)),
                            hash,
                        )
                        .unwrap();
                    e.1 += 1;
                    *model.entry(k).or_insert(0) += 1;
                }
                Op::Lookup(k) => {
                    let got = table.get_mut(hash(&(k, 0)), |e| e.0 == k).map(|e| e.1);
                    assert_eq!(got, model.get(&k).copied(), "lookup {k}");
                }
                Op::RetainNotDivisible(d) => {
                    let before = model.len();
                    model.retain(|k, _| k % d != 0);
                    let dropped = table.retain(|e| e.0 % d != 0, hash);
                    assert_eq!(dropped, before - model.len());
                }
            }
            assert_eq!(table.len(), model.len());
            assert!(table.len() * 4 <= table.capacity() * 3);
        }
        // Every key the model holds is found with its count, and nothing else is.
        for k in 0..300u16 {
            let got = table.get_mut(hash(&(k, 0)), |e| e.0 == k).map(|e| e.1);
            assert_eq!(got, model.get(&k).copied(), "final {k}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(500))]
        #[test]
        fn matches_a_hash_map_with_a_clumpy_hash(ops in prop::collection::vec(op(), 1..400)) {
            run(&ops, clumpy);
        }

        #[test]
        fn matches_a_hash_map_with_a_good_hash(ops in prop::collection::vec(op(), 1..400)) {
            run(&ops, good);
        }
    }

    #[test]
    fn grows_and_shrinks() {
        let mut t: Table<(u16, u32)> = Table::default();
        for k in 0..1000u16 {
            let mut made = false;
            t.get_or_try_insert_with(
                good(&(k, 0)),
                |e| e.0 == k,
                || {
                    made = true;
                    Ok::<_, ()>((k, 0))
                },
                good,
            )
            .unwrap();
            assert!(made);
        }
        // A failing `make` leaves the table as it was.
        assert_eq!(
            t.get_or_try_insert_with(good(&(5000, 0)), |e| e.0 == 5000, || Err("no"), good)
                .err(),
            Some("no")
        );
        assert_eq!(t.len(), 1000);
        assert_eq!(t.capacity(), 2048);
        assert_eq!(t.retain(|e| e.0 < 10, good), 990);
        assert_eq!(t.capacity(), 32);
        for k in 0..10u16 {
            assert!(t.get_mut(good(&(k, 0)), |e| e.0 == k).is_some());
        }
        assert_eq!(t.retain(|_| false, good), 10);
        assert_eq!(t.len(), 0);
    }
}
