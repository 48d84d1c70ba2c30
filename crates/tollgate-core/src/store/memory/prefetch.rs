//! Where a shard's slots live, readable without the shard's lock, so a decision can start fetching
//! its key's home slot from memory before it has the lock.
//!
//! Why: among a million keys the home slot is almost never in cache, and that one miss (~200 ns
//! on the VM this is measured on) was most of a decision. Issued before the lock, the fetch
//! overlaps with taking the lock and reading the clock. The hint is published under the lock
//! whenever the table may have moved; a stale hint only fetches the wrong line, never reads it.

use std::sync::atomic::{AtomicPtr, AtomicUsize, Ordering};

#[derive(Default)]
pub(super) struct SlotHint {
    base: AtomicPtr<u8>,
    /// Index mask of the table (its capacity minus one).
    mask: AtomicUsize,
}

impl SlotHint {
    /// Records where `slots` are; called with the shard locked after anything that may resize.
    pub(super) fn publish<T>(&self, slots: &[T]) {
        self.base
            .store(slots.as_ptr().cast::<u8>().cast_mut(), Ordering::Relaxed);
        self.mask
            .store(slots.len().wrapping_sub(1), Ordering::Relaxed);
    }

    /// Starts fetching the home slot of `hash` (a table of `T`s that probes from `hash & mask`).
    #[inline]
    pub(super) fn prefetch<T>(&self, hash: u64) {
        let base = self.base.load(Ordering::Relaxed);
        if base.is_null() {
            return;
        }
        let index = hash as usize & self.mask.load(Ordering::Relaxed);
        // Address arithmetic only: nothing here is dereferenced.
        let first = base.wrapping_add(index.wrapping_mul(size_of::<T>()));
        fetch(first);
        // A slot is not line-aligned; its end is usually on the next line.
        fetch(first.wrapping_add(size_of::<T>() - 1));
    }
}

#[cfg(target_arch = "x86_64")]
#[inline]
#[allow(unsafe_code)]
fn fetch(at: *const u8) {
    // SAFETY: `_mm_prefetch` needs SSE, which every x86_64 CPU has (it is in the baseline target).
    // A prefetch is a hint that never reads memory into the program and never faults, whatever
    // the address (Intel SDM, PREFETCHh: "does not affect program behavior"), so a stale or
    // dangling `at` is harmless.
    unsafe { std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(at.cast()) }
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
fn fetch(_: *const u8) {}
