//! Time sources. The limiter never reads the system clock directly so tests can move time by hand
//! instead of sleeping, and so the Redis store can use Redis's clock instead of ours.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Microseconds since the Unix epoch.
pub type Micros = u64;

/// One microsecond-resolution time source.
pub trait Clock: Send + Sync + 'static {
    /// Microseconds since the Unix epoch.
    fn now_micros(&self) -> Micros;
}

/// The operating system's wall clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    #[inline]
    fn now_micros(&self) -> Micros {
        // rustix calls the kernel's vDSO directly; `SystemTime::now().duration_since(UNIX_EPOCH)`
        // goes through libc's wrapper and std's checked timespec arithmetic, which together cost
        // as much as the clock read itself on a hot-key decision.
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        // A clock before 1970 is a broken host; treat it as the epoch rather than panic.
        match (u64::try_from(t.tv_sec), u64::try_from(t.tv_nsec)) {
            (Ok(secs), Ok(nanos)) => secs * 1_000_000 + nanos / 1_000,
            _ => 0,
        }
    }
}

/// A clock that only moves when told to; cheap to clone, all clones share one time.
#[derive(Debug, Clone, Default)]
pub struct ManualClock(Arc<AtomicU64>);

impl ManualClock {
    pub fn new(start: Micros) -> Self {
        Self(Arc::new(AtomicU64::new(start)))
    }

    pub fn set(&self, t: Micros) {
        self.0.store(t, Ordering::SeqCst);
    }

    pub fn advance(&self, by: Micros) {
        self.0.fetch_add(by, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_micros(&self) -> Micros {
        self.0.load(Ordering::SeqCst)
    }
}

/// A clock offset from another by a fixed amount; used to simulate a host whose clock is skewed.
#[derive(Debug, Clone)]
pub struct SkewedClock<C> {
    pub inner: C,
    /// Signed offset in microseconds added to the inner clock's reading.
    pub offset_micros: i64,
}

impl<C: Clock> Clock for SkewedClock<C> {
    fn now_micros(&self) -> Micros {
        self.inner
            .now_micros()
            .saturating_add_signed(self.offset_micros)
    }
}
