//! The entries of one log: a vector that is appended at the back and evicted at the front.
//!
//! Why not a `VecDeque`: most tracked keys hold a single entry, and a `VecDeque` puts even that one
//! in its own heap block: a second allocation per key and, on a table of a million keys, a second
//! cache miss per decision. Here the first entry lives inline (a `SmallVec` of one), and eviction
//! only advances `head`; the evicted prefix is dropped when the buffer would otherwise have to grow
//! and is at least half dead, so every entry is moved at most a constant number of times
//! (amortized O(1) per push and per eviction, like a ring).

use smallvec::SmallVec;

use super::Entry;

/// Capacity above which a mostly-empty buffer gives memory back.
const SHRINK_ABOVE: usize = 64;

#[derive(Debug, Clone, Default)]
pub(super) struct Entries {
    /// `buf[head..]` are the live entries, oldest first; `buf[..head]` were evicted.
    buf: SmallVec<[Entry; 1]>,
    head: usize,
}

impl Entries {
    /// The live entries, oldest first.
    #[inline]
    pub(super) fn live(&self) -> &[Entry] {
        &self.buf[self.head..]
    }

    #[inline]
    pub(super) fn len(&self) -> usize {
        self.buf.len() - self.head
    }

    #[inline]
    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    #[inline]
    pub(super) fn front(&self) -> Option<&Entry> {
        self.live().first()
    }

    #[inline]
    pub(super) fn back(&self) -> Option<&Entry> {
        self.live().last()
    }

    #[inline]
    pub(super) fn back_mut(&mut self) -> Option<&mut Entry> {
        let head = self.head;
        self.buf[head..].last_mut()
    }

    /// Removes the newest entry (no-op when empty).
    #[inline]
    pub(super) fn pop_back(&mut self) {
        if self.head < self.buf.len() {
            self.buf.pop();
        }
        if self.head == self.buf.len() {
            self.buf.clear();
            self.head = 0;
        }
    }

    /// The entry before the newest one, if any.
    #[inline]
    pub(super) fn second_last(&self) -> Option<&Entry> {
        let live = self.live();
        live.len().checked_sub(2).map(|i| &live[i])
    }

    /// Evicts the oldest entry (no-op when empty).
    #[inline]
    pub(super) fn pop_front(&mut self) {
        if self.head < self.buf.len() {
            self.head += 1;
        }
        if self.head == self.buf.len() {
            // Empty: start over at the front, keeping the capacity.
            self.buf.clear();
            self.head = 0;
        }
    }

    #[inline]
    pub(super) fn push_back(&mut self, entry: Entry) {
        if self.buf.len() == self.buf.capacity() && self.head * 2 >= self.buf.len() {
            // Full and at least half dead: reuse the space instead of growing. Moves at most as
            // many live entries as were evicted since the last compaction.
            self.compact();
        }
        self.buf.push(entry);
    }

    /// Gives memory back: a log that fits inline again moves back from its heap block (an idle
    /// key then holds no heap memory, and the next decision on it reads no second cache line), and
    /// after a burst a mostly-empty buffer halves. Either way the entries copied are paid for by
    /// the evictions that emptied the buffer, so the cost stays amortized O(1).
    #[inline]
    pub(super) fn shrink_if_sparse(&mut self) {
        if !self.buf.spilled() {
            return;
        }
        let len = self.len();
        if len <= self.buf.inline_size() {
            self.compact();
            self.buf.shrink_to_fit();
        } else if self.buf.capacity() > SHRINK_ABOVE && len * 4 < self.buf.capacity() {
            self.compact();
            // `grow` reallocates to exactly the asked capacity, which here is a smaller one.
            self.buf.grow(len * 2);
        }
    }

    /// Drops the evicted prefix.
    fn compact(&mut self) {
        self.buf.drain(..self.head);
        self.head = 0;
    }

    #[cfg(test)]
    fn capacity(&self) -> usize {
        self.buf.capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn e(at: u64) -> Entry {
        Entry { at, cumulative: at }
    }

    #[test]
    fn behaves_like_a_queue() {
        let mut q = Entries::default();
        let mut model = std::collections::VecDeque::new();
        // A deterministic mix of pushes and pops, with long runs of each.
        let mut x = 7u64;
        for step in 0..20_000u64 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            let push_bias = if (step / 2000) % 2 == 0 { 3 } else { 1 };
            if (x >> 60) % 4 < push_bias {
                q.push_back(e(step));
                model.push_back(e(step));
            } else {
                q.pop_front();
                model.pop_front();
            }
            q.shrink_if_sparse();
            assert_eq!(q.len(), model.len());
            assert_eq!(q.front(), model.front());
            assert_eq!(q.back(), model.back());
            assert!(q.live().iter().eq(model.iter()));
        }
    }

    #[test]
    fn one_entry_is_inline_and_steady_state_does_not_grow() {
        let mut q = Entries::default();
        q.push_back(e(1));
        assert!(!q.buf.spilled());
        // Evict one, log one, many times: the buffer never needs more than one slot.
        for t in 2..1000 {
            q.pop_front();
            q.push_back(e(t));
        }
        assert!(!q.buf.spilled());
        // A window holding 100 entries and sliding: capacity stays bounded (no unbounded growth
        // from the dead prefix).
        for t in 0..100 {
            q.push_back(e(1000 + t));
        }
        for t in 1100..50_000 {
            q.pop_front();
            q.push_back(e(t));
        }
        assert!(q.capacity() <= 256, "{}", q.capacity());
        // Drained back down, the memory is given back.
        while q.len() > 1 {
            q.pop_front();
            q.shrink_if_sparse();
        }
        assert!(!q.buf.spilled(), "one live entry is back inline");
    }
}
