//! The request-head deadline (`--header-read-timeout`) of one connection, without a timer-wheel
//! entry per request.
//!
//! hyper arms its header-read timer afresh for every request head it waits for: with tokio's
//! timer that is an entry inserted into and removed from the shared timer wheel per request, on
//! every keep-alive request. [`HeadTimer`] gives hyper sleeps that only record their deadline;
//! one [`HeadTimer::watch`] future per connection, polled beside the connection, wakes at most
//! once per timeout period and fires the sleep whose deadline has passed. hyper's own behaviour
//! (what it does when the deadline passes, when it starts and stops the timer) is unchanged.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;

/// No sleep outstanding.
const NONE: u64 = u64::MAX;

/// A [`hyper::rt::Timer`] for one connection; see the [module documentation](self).
#[derive(Clone)]
pub struct HeadTimer {
    shared: Arc<Shared>,
}

struct Shared {
    /// Times are nanoseconds since this.
    origin: Instant,
    /// The longest sleep hyper asks for (the header-read timeout): how long the watch may sleep
    /// while no sleep is outstanding, since any sleep made later ends later than that.
    period: Duration,
    /// Deadline of the outstanding sleep, or [`NONE`].
    deadline: AtomicU64,
    /// The task waiting on the outstanding sleep.
    waker: AtomicWaker,
}

impl Shared {
    fn since_origin(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.origin).as_nanos()).unwrap_or(NONE - 1)
    }

    fn at(&self, nanos: u64) -> Instant {
        self.origin + Duration::from_nanos(nanos)
    }
}

impl HeadTimer {
    /// A timer whose sleeps last at most `period` (the header-read timeout).
    pub fn new(period: Duration) -> Self {
        Self {
            shared: Arc::new(Shared {
                origin: Instant::now(),
                period,
                deadline: AtomicU64::new(NONE),
                waker: AtomicWaker::new(),
            }),
        }
    }

    /// Fires the connection's sleeps when their deadline passes. Never finishes: poll it beside
    /// the connection and drop it with the connection.
    pub async fn watch(self) {
        let shared = &self.shared;
        loop {
            let now = Instant::now();
            let wake_at = match shared.deadline.load(Ordering::Acquire) {
                NONE => now + shared.period,
                d if shared.at(d) <= now => {
                    shared.waker.wake();
                    // hyper drops a fired sleep (and closes the connection) or makes a new one.
                    now + shared.period
                }
                d => shared.at(d),
            };
            tokio::time::sleep_until(wake_at.into()).await;
        }
    }
}

impl hyper::rt::Timer for HeadTimer {
    fn sleep(&self, duration: Duration) -> Pin<Box<dyn hyper::rt::Sleep>> {
        self.sleep_until(Instant::now() + duration)
    }

    fn sleep_until(&self, deadline: Instant) -> Pin<Box<dyn hyper::rt::Sleep>> {
        let nanos = self.shared.since_origin(deadline);
        self.shared.deadline.store(nanos, Ordering::Release);
        Box::pin(HeadSleep {
            shared: self.shared.clone(),
            deadline,
            nanos,
        })
    }
}

struct HeadSleep {
    shared: Arc<Shared>,
    deadline: Instant,
    nanos: u64,
}

impl Future for HeadSleep {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if Instant::now() >= self.deadline {
            return Poll::Ready(());
        }
        self.shared.waker.register(cx.waker());
        Poll::Pending
    }
}

impl hyper::rt::Sleep for HeadSleep {}

impl Drop for HeadSleep {
    fn drop(&mut self) {
        // Only this sleep's own deadline is withdrawn, not one set by a newer sleep.
        let _ = self.shared.deadline.compare_exchange(
            self.nanos,
            NONE,
            Ordering::AcqRel,
            Ordering::Relaxed,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::rt::Timer;

    #[tokio::test]
    async fn a_sleep_fires_at_its_deadline_through_the_watch() {
        let timer = HeadTimer::new(Duration::from_millis(50));
        let watch = tokio::spawn(timer.clone().watch());
        let started = Instant::now();
        let sleep = timer.sleep(Duration::from_millis(50));
        tokio::time::timeout(Duration::from_secs(10), sleep)
            .await
            .expect("the watch fires the sleep once its deadline passes");
        assert!(started.elapsed() >= Duration::from_millis(50));
        watch.abort();
    }

    #[test]
    fn dropping_a_sleep_withdraws_only_its_own_deadline() {
        let timer = HeadTimer::new(Duration::from_secs(10));
        let first = timer.sleep(Duration::from_secs(1));
        let second = timer.sleep(Duration::from_secs(2));
        drop(first);
        assert_ne!(timer.shared.deadline.load(Ordering::Acquire), NONE);
        drop(second);
        assert_eq!(timer.shared.deadline.load(Ordering::Acquire), NONE);
    }
}
