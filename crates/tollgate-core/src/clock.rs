//! Time sources. The limiter never reads the system clock directly so tests can move time by hand
//! instead of sleeping, and so the Redis store can use Redis's clock instead of ours.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

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
    fn now_micros(&self) -> Micros {
        // A clock before 1970 is a broken host; treat it as the epoch rather than panic.
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            // Whole seconds and sub-second micros separately: same value as `as_micros`
            // without its 128-bit arithmetic, on the path of every decision.
            .map(|d| d.as_secs() * 1_000_000 + Micros::from(d.subsec_micros()))
            .unwrap_or(0)
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
