//! Batching of one-consume decisions (`redis_consume_one.lua`) on a single Redis node.
//!
//! Why a module of its own: per `EVALSHA` Redis pays command parsing, the script lookup, the Lua
//! call set-up, `TIME` and the reply on top of the decision itself, and under load Redis' CPU is
//! what bounds the Redis store (README "The server's side of a Redis decision"). Decisions that
//! arrive together are therefore sent as one call of the same script over all their keys, which
//! reads `TIME` once and decides them in order (exactly as the same calls at that microsecond
//! would). That is the only job of this file; everything else of a decision (breaker, creation
//! tokens, the corrupt-key error, the caller's timeout) stays per request in `redis.rs`.
//!
//! Natural batching, no timer: a request is sent at once while fewer than `in_flight` calls are
//! outstanding; while that many are, requests queue, and when a call's reply arrives the queue
//! (up to `max_items`) goes as the next call. An idle store adds no latency; a loaded one adds at
//! most the wait for one outstanding call's reply. A request that gave up while queued (its
//! receiver dropped) is not sent.
//!
//! Timeouts: one timer per call, not per decision. Each decision gets its deadline (now + the
//! command timeout) when `decide` is called. A call waits for its reply under one timer, set at
//! the earliest deadline of its decisions still waiting; when it fires, those decisions are
//! answered with the timeout and the timer moves to the next deadline, until the reply comes or
//! the last one has passed (then the call is dropped, as a timed-out call always was). A queued
//! decision waits only for calls holding older decisions, which end by their deadlines, before its
//! own; one whose deadline still passed in the queue is answered with the timeout, not sent. So
//! every decision is answered by its own deadline, queueing included, exactly as when each carried
//! its own timer, but a call whose reply comes in time (every call, unless Redis stalls)
//! registers one timer instead of one per decision (a tokio timer registered and removed per
//! decision was ~3% of the server's CPU under HTTP load).
//!
//! Only for a single node: on a Redis Cluster the keys of one call must share a hash slot, which
//! random keys rarely do, so the store does not batch there.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use redis::{Cmd, Script};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::redis_script_call::{evalsha, run, timed_out, Failure, CORRUPT_CODE};
use crate::redis_conn::RedisConnection;

/// Bytes of one packed item in the script's `ARGV[1]`, and of one item's reply.
pub(super) const ITEM_BYTES: usize = 34;
pub(super) const REPLY_BYTES: usize = 48;
/// The reply flag of an item that failed (its `remaining` is its message's length).
const FAILED: f64 = 16.0;

/// One item's answer: its 48 reply bytes, or why it failed.
pub(super) type Outcome = Result<[u8; REPLY_BYTES], Failure>;

struct Entry {
    key: Vec<u8>,
    packed: [u8; ITEM_BYTES],
    /// When `decide` was called plus the command timeout: the latest its answer may come.
    deadline: Instant,
    tx: oneshot::Sender<Outcome>,
}

struct State {
    /// Calls sent and not yet answered (or given up by their sender).
    in_flight: usize,
    /// Requests waiting for a call to finish. Non-empty only while `in_flight` is at its bound.
    queue: VecDeque<Entry>,
}

/// The batcher of one store (see the module comment).
pub(super) struct Batcher {
    conn: RedisConnection,
    script: Script,
    timeout: Duration,
    in_flight: usize,
    max_items: usize,
    state: Mutex<State>,
    calls: AtomicU64,
    items: AtomicU64,
}

/// Gives a sending slot back (or on to the queue) however the sender's future ends.
struct Slot(Arc<Batcher>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.release();
    }
}

impl Batcher {
    pub(super) fn new(
        conn: RedisConnection,
        script: Script,
        timeout: Duration,
        in_flight: usize,
        max_items: usize,
    ) -> Self {
        Self {
            conn,
            script,
            timeout,
            in_flight: in_flight.max(1),
            max_items: max_items.max(1),
            state: Mutex::new(State {
                in_flight: 0,
                queue: VecDeque::new(),
            }),
            calls: AtomicU64::new(0),
            items: AtomicU64::new(0),
        }
    }

    /// Script calls sent and items decided through them so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.calls.load(Ordering::Relaxed),
            self.items.load(Ordering::Relaxed),
        )
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is a counter and a queue, consistent between statements: a panic elsewhere
        // while holding the lock cannot leave it half-updated.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Decides one item (its key and packed argument) at Redis time, alone or with others,
    /// within the command timeout from now, queueing included (see the module comment): the
    /// caller needs no timer of its own.
    pub(super) async fn decide(self: &Arc<Self>, key: &[u8], packed: [u8; ITEM_BYTES]) -> Outcome {
        let (tx, rx) = oneshot::channel();
        let entry = Entry {
            key: key.to_vec(),
            packed,
            deadline: Instant::now() + self.timeout,
            tx,
        };
        // Queued (while the slots are taken), or sent at once from this task on a free slot.
        let direct = {
            let mut st = self.lock();
            if st.in_flight >= self.in_flight {
                st.queue.push_back(entry);
                None
            } else {
                st.in_flight += 1;
                Some(entry)
            }
        };
        if let Some(entry) = direct {
            let slot = Slot(Arc::clone(self));
            self.send(vec![entry]).await;
            drop(slot);
        }
        rx.await
            .unwrap_or_else(|_| Err(Failure::Failed("a batched Redis call was lost".into())))
    }

    /// The next batch from the queue; when there is none, the slot is freed. Decisions whose
    /// deadline passed while they queued are answered with the timeout instead (after the lock is
    /// released: a send wakes their task).
    fn next_batch(&self) -> Vec<Entry> {
        let mut batch = Vec::new();
        let mut expired = Vec::new();
        {
            let mut st = self.lock();
            let mut now = None;
            while batch.len() < self.max_items {
                match st.queue.pop_front() {
                    Some(e) if e.tx.is_closed() => {}
                    Some(e) if e.deadline <= *now.get_or_insert_with(Instant::now) => {
                        expired.push(e)
                    }
                    Some(e) => batch.push(e),
                    None => break,
                }
            }
            if batch.is_empty() {
                st.in_flight -= 1;
            }
        }
        for e in expired {
            let _ = e.tx.send(Err(self.timed_out()));
        }
        batch
    }

    fn timed_out(&self) -> Failure {
        Failure::Failed(timed_out(self.timeout).to_string())
    }

    /// A slot's call is done: the queued requests go as the next call, from a task of their own
    /// (the request that held the slot has its answer and returns).
    fn release(self: &Arc<Self>) {
        let batch = self.next_batch();
        if batch.is_empty() {
            return;
        }
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(Arc::clone(self).drive(batch));
            }
            Err(_) => {
                // No runtime (shutting down): the batch's requests see their sender dropped.
                drop(batch);
                self.lock().in_flight -= 1;
            }
        }
    }

    /// Sends batches while requests keep queueing, then frees the slot.
    async fn drive(self: Arc<Self>, mut batch: Vec<Entry>) {
        loop {
            self.send(batch).await;
            batch = self.next_batch();
            if batch.is_empty() {
                return;
            }
        }
    }

    /// One script call over `batch`; answers each entry by its deadline (module comment).
    async fn send(&self, batch: Vec<Entry>) {
        let cmd = batch_cmd(&self.script, &batch);
        self.calls.fetch_add(1, Ordering::Relaxed);
        self.items.fetch_add(batch.len() as u64, Ordering::Relaxed);
        let n = batch.len();
        let mut waiting: Vec<(Instant, Option<oneshot::Sender<Outcome>>)> = batch
            .into_iter()
            .map(|e| (e.deadline, Some(e.tx)))
            .collect();
        let call = run(&self.conn, &self.script, &cmd);
        tokio::pin!(call);
        let reply = loop {
            let Some(next) = waiting
                .iter()
                .filter(|(_, tx)| tx.is_some())
                .map(|(d, _)| *d)
                .min()
            else {
                // Every decision of the call has had its timeout: drop the call.
                return;
            };
            match tokio::time::timeout_at(next, &mut call).await {
                Ok(reply) => break reply,
                Err(_) => {
                    let now = Instant::now();
                    for (d, tx) in &mut waiting {
                        if *d <= now {
                            if let Some(tx) = tx.take() {
                                let _ = tx.send(Err(self.timed_out()));
                            }
                        }
                    }
                }
            }
        };
        // The connection's own response timeout is the same command timeout, started a moment
        // later than the deadlines: when it fires first, the answer is the same timeout.
        let reply = reply.map_err(|e| {
            if e.is_timeout() {
                self.timed_out()
            } else {
                Failure::from(e)
            }
        });
        let txs = waiting.into_iter().map(|(_, tx)| tx);
        if n == 1 {
            // One key: the script's single call, whose corrupt key is an error reply.
            let out = reply.and_then(single_reply);
            for tx in txs.flatten() {
                let _ = tx.send(out.clone());
            }
            return;
        }
        match reply.and_then(|v| split(v, n)) {
            Ok(outs) => {
                for (tx, out) in txs.zip(outs) {
                    if let Some(tx) = tx {
                        let _ = tx.send(out);
                    }
                }
            }
            Err(f) => {
                for tx in txs.flatten() {
                    let _ = tx.send(Err(f.clone()));
                }
            }
        }
    }
}

/// The `EVALSHA` of the one-consume script over a batch: the keys, the items packed back to back,
/// and '' for Redis time.
fn batch_cmd(script: &Script, batch: &[Entry]) -> Cmd {
    evalsha(script, batch.iter().map(|e| &e.key[..]), |cmd| {
        let mut packed = Vec::with_capacity(batch.len() * ITEM_BYTES);
        for e in batch {
            packed.extend_from_slice(&e.packed);
        }
        cmd.arg(packed).arg("");
    })
}

/// The 48 bytes of a single call's reply.
pub(super) fn single_reply(v: redis::Value) -> Outcome {
    match v {
        redis::Value::BulkString(b) => b
            .as_slice()
            .try_into()
            .map_err(|_| Failure::Failed("Redis answered the script oddly".into())),
        _ => Err(Failure::Failed("Redis answered the script oddly".into())),
    }
}

fn f64_at(b: &[u8], at: usize) -> Option<f64> {
    let bytes: [u8; 8] = b.get(at..at + 8)?.try_into().ok()?;
    Some(f64::from_le_bytes(bytes))
}

/// A batch reply: `n` items of 48 bytes, then the messages of the failed ones, in order.
fn split(v: redis::Value, n: usize) -> Result<Vec<Outcome>, Failure> {
    let odd = || Failure::Failed("Redis answered the batched script oddly".into());
    let redis::Value::BulkString(b) = v else {
        return Err(odd());
    };
    let mut msg_at = n * REPLY_BYTES;
    if b.len() < msg_at {
        return Err(odd());
    }
    let mut out = Vec::with_capacity(n);
    for chunk in b[..n * REPLY_BYTES].chunks_exact(REPLY_BYTES) {
        let flags = f64_at(chunk, 8).ok_or_else(odd)?;
        if flags == FAILED {
            let len = f64_at(chunk, 16).ok_or_else(odd)?;
            if !(len >= 0.0 && len <= (b.len() - msg_at) as f64) {
                return Err(odd());
            }
            let end = msg_at + len as usize;
            let msg = String::from_utf8_lossy(&b[msg_at..end]).into_owned();
            msg_at = end;
            out.push(Err(Failure::of_message(&msg)));
        } else {
            let mut r = [0u8; REPLY_BYTES];
            r.copy_from_slice(chunk);
            out.push(Ok(r));
        }
    }
    if msg_at != b.len() {
        return Err(odd());
    }
    Ok(out)
}

impl Failure {
    /// An item's error message inside a batch reply (`TGCORRUPT <index> <reason>`, or another
    /// script error).
    fn of_message(msg: &str) -> Self {
        match msg.split_once(' ') {
            Some((code, detail)) if code == CORRUPT_CODE => Failure::Corrupt(detail.to_string()),
            _ => Failure::Failed(format!("the decision script failed: {msg}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(flags: f64, remaining: f64) -> Vec<u8> {
        [1.0, flags, remaining, 4.0, -1.0, 6.0]
            .iter()
            .flat_map(|d: &f64| d.to_le_bytes())
            .collect()
    }

    #[test]
    fn a_batch_reply_splits_into_items_and_their_messages() {
        let mut b = item(5.0, 9.0);
        b.extend(item(FAILED, 24.0));
        b.extend(item(FAILED, 5.0));
        b.extend(b"TGCORRUPT 1 not a stringERR x");
        let out = split(redis::Value::BulkString(b.clone()), 3).unwrap();
        assert_eq!(
            out[0].as_ref().ok().map(|r| r.to_vec()),
            Some(item(5.0, 9.0))
        );
        assert!(matches!(&out[1], Err(Failure::Corrupt(d)) if d == "1 not a string"));
        assert!(matches!(&out[2], Err(Failure::Failed(m)) if m.ends_with("ERR x")));
        // Trailing or missing message bytes, or too few items: the whole reply is odd.
        let mut longer = b.clone();
        longer.push(b'!');
        assert!(split(redis::Value::BulkString(longer), 3).is_err());
        assert!(split(redis::Value::BulkString(b[..b.len() - 1].to_vec()), 3).is_err());
        assert!(split(redis::Value::BulkString(b), 4).is_err());
    }
}
