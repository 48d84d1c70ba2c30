//! A circuit breaker for a remote store: after repeated failures, callers fail fast without I/O,
//! and only one probe per interval pays the cost of finding out whether the backend is back.
//!
//! Lock-free: the state is two atomics, read on every decision.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// What a caller may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The circuit is closed: go ahead.
    Go,
    /// The circuit is open and this caller was chosen to probe the backend.
    Probe,
    /// The circuit is open: fail without trying.
    FailFast,
}

#[derive(Debug)]
pub struct CircuitBreaker {
    epoch: Instant,
    /// Consecutive failures since the last success.
    failures: AtomicU32,
    /// Nanoseconds after `epoch` until which callers fail fast; 0 while closed.
    open_until: AtomicU64,
    threshold: u32,
    probe_interval: Duration,
}

impl CircuitBreaker {
    /// Opens after `threshold` consecutive failures; while open, lets one caller through every
    /// `probe_interval`.
    pub fn new(threshold: u32, probe_interval: Duration) -> Self {
        Self {
            epoch: Instant::now(),
            failures: AtomicU32::new(0),
            open_until: AtomicU64::new(0),
            threshold: threshold.max(1),
            probe_interval,
        }
    }

    fn now(&self) -> u64 {
        // Never 0, so 0 can mean "closed".
        (self.epoch.elapsed().as_nanos() as u64).max(1)
    }

    pub fn admit(&self) -> Admit {
        let until = self.open_until.load(Ordering::Acquire);
        if until == 0 {
            return Admit::Go;
        }
        let now = self.now();
        if now < until {
            return Admit::FailFast;
        }
        // Push the deadline forward first: exactly one caller wins the probe, and if that probe
        // is cancelled mid-flight the next one still comes a probe interval later.
        let next = now + self.probe_interval.as_nanos() as u64;
        match self
            .open_until
            .compare_exchange(until, next, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => Admit::Probe,
            Err(_) => Admit::FailFast,
        }
    }

    pub fn on_success(&self) {
        self.failures.store(0, Ordering::Relaxed);
        if self.open_until.load(Ordering::Relaxed) != 0 {
            self.open_until.store(0, Ordering::Release);
            tracing::info!("store reachable again; circuit closed");
        }
    }

    pub fn on_failure(&self) {
        let failures = self
            .failures
            .fetch_add(1, Ordering::Relaxed)
            .saturating_add(1);
        if failures >= self.threshold {
            let next = self.now() + self.probe_interval.as_nanos() as u64;
            if self.open_until.swap(next, Ordering::AcqRel) == 0 {
                tracing::warn!(
                    failures,
                    probe_ms = self.probe_interval.as_millis() as u64,
                    "store failing; circuit opened, failing fast between probes"
                );
            }
        }
    }

    /// False while the circuit is open.
    pub fn is_closed(&self) -> bool {
        self.open_until.load(Ordering::Acquire) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_threshold_and_probes_once_per_interval() {
        let b = CircuitBreaker::new(2, Duration::from_millis(30));
        assert_eq!(b.admit(), Admit::Go);
        b.on_failure();
        assert!(b.is_closed(), "one failure is below the threshold");
        b.on_failure();
        assert!(!b.is_closed());
        assert_eq!(b.admit(), Admit::FailFast);
        std::thread::sleep(Duration::from_millis(35));
        assert_eq!(b.admit(), Admit::Probe);
        assert_eq!(b.admit(), Admit::FailFast, "only one probe per interval");
        b.on_failure();
        assert_eq!(b.admit(), Admit::FailFast);
        std::thread::sleep(Duration::from_millis(35));
        assert_eq!(b.admit(), Admit::Probe);
        b.on_success();
        assert!(b.is_closed());
        assert_eq!(b.admit(), Admit::Go);
        // A success resets the count: one more failure does not reopen it.
        b.on_failure();
        assert!(b.is_closed());
    }
}
