//! The Redis store: every store call is one EVALSHA of `redis_policy.lua`, which runs every
//! algorithm of every limit of every item atomically inside Redis, on Redis's clock, with the same
//! formulas as the memory store (README "Policies"). Any number of tollgate instances sharing one
//! Redis (or Redis Cluster) therefore make the decisions one instance would, whatever their own
//! clocks say. On a single node, one-consume decisions that arrive together share one call of
//! `redis_consume_one.lua` (`redis_batch.rs`); each is still answered, and fails, on its own.
//!
//! Keys: every state key of one (tenant, client, action) is `<prefix>{<tag>}<limit>:<key>`, where
//! the hash tag is FNV-1a-64 of the key's injective encoding (16 hex digits) and `<limit>` names
//! the limit's state identity (algorithm and window). The tag puts one key's limits in one Redis
//! Cluster slot, so one script sees them all; the full encoding after it keeps names injective even
//! if two tags collide. On a cluster, the items of one call whose keys live in different slots are
//! decided slot group by slot group; a later group's denial gives back what earlier groups consumed.
//!
//! Faults: each call is bounded by the command timeout, and a circuit breaker turns a Redis
//! outage into fast `Unavailable` errors (the limiter then applies `--on-store-error`) with one
//! probe per interval, instead of a timeout per request. A key whose stored value is not valid
//! state is a different matter: Redis answered, the script reset the key, and the call is a
//! per-key `Corrupt` error that never counts against the breaker.

use std::hash::Hasher;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::{Cmd, ErrorKind, RedisError, RedisResult, Script};
use smallvec::SmallVec;

use super::breaker::{Admit, CircuitBreaker};
use super::creation::{CreationLimiter, Reservation};
use super::redis_batch::{self, Batcher, ITEM_BYTES, REPLY_BYTES};
use super::redis_script_call::{evalsha, invoke, Failure};
use super::{KeyBound, KeyBounds, KeyRefusal, Store, StoreError};
use crate::clock::{Clock, Micros, SystemClock};
use crate::limit::{Limit, RateKey};
use crate::policy::{
    Algorithm, Calendar, ItemVerdict, LimitVerdict, Op, PolicyItem, PolicyLimit, PolicyVerdict,
};
use crate::redis_conn::{RedisConnection, RedisOptions};
use crate::window::Verdict;

/// Prefix of every state key (the server passes `--redis-prefix` followed by `:`).
pub const DEFAULT_KEY_PREFIX: &str = "tollgate:";

/// Batched one-consume calls outstanding at once (README "Batching" says how this was chosen).
pub const DEFAULT_BATCH_IN_FLIGHT: usize = 2;

/// Tuning for the Redis store beyond how to connect.
#[derive(Debug, Clone)]
pub struct RedisStoreOptions {
    /// Prefix of every key. Braces are replaced by parentheses: the store's own hash tag must be
    /// the first one in the name.
    pub key_prefix: String,
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// While open, how often one request probes Redis.
    pub probe_interval: Duration,
    /// On a single node, how many batched one-consume calls may be outstanding before the
    /// decisions that arrive queue and go together as the next call (`redis_batch.rs`); 0 sends
    /// every decision as its own call. Not used on a cluster.
    pub batch_in_flight: usize,
    /// The most decisions in one batched call.
    pub batch_max_items: usize,
}

impl Default for RedisStoreOptions {
    fn default() -> Self {
        Self {
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            failure_threshold: 3,
            probe_interval: Duration::from_millis(500),
            batch_in_flight: DEFAULT_BATCH_IN_FLIGHT,
            batch_max_items: 64,
        }
    }
}

/// Cheap-to-clone handle to the Redis store.
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    conn: RedisConnection,
    script: Script,
    /// The general script's common case (one consume, one key, one enforced limit) in straight
    /// lines: a third of its Redis CPU (see `redis_consume_one.lua`).
    consume_one: Script,
    /// Batches the one-consume calls at Redis time on a single node (`None` on a cluster).
    batcher: Option<Arc<Batcher>>,
    prefix: Vec<u8>,
    timeout: Duration,
    breaker: CircuitBreaker,
    /// This instance's key-creation buckets per tenant (see `creation.rs` for the bound they give).
    creation: CreationLimiter,
}

/// Values the script returns per call, per item and per limit (see `redis_policy.lua`).
const CALL_FIELDS: usize = 3;
const ITEM_FIELDS: usize = 3;
const LIMIT_FIELDS: usize = 5;

/// One limit as the script receives it.
#[derive(Debug, Clone)]
struct LimitSpec {
    key: Vec<u8>,
    kind: u8,
    max: u64,
    window: Micros,
    burst: u64,
}

/// One item as the script receives it.
#[derive(Debug, Clone)]
struct ItemSpec<'a> {
    key: RateKey<'a>,
    cost: u64,
    bounds: KeyBounds,
    limits: SmallVec<[LimitSpec; 2]>,
}

/// What one script call answered for one item.
struct ItemReply {
    verdict: ItemVerdict,
    /// Per limit: cost counted now (the sliding log's `used`).
    used: SmallVec<[u64; 2]>,
    /// This call made the item's first key.
    created: bool,
}

struct CallReply {
    allowed: bool,
    now: Micros,
    items: Vec<ItemReply>,
    /// The item refused for want of a creation token.
    refused: Option<usize>,
}

/// The hash tag of a key: FNV-1a-64 of its injective encoding, in 16 lowercase hex digits.
pub fn hash_tag(key: RateKey<'_>) -> [u8; 16] {
    let mut h = fnv::FnvHasher::default();
    h.write(&key.encode());
    let v = h.finish();
    let mut out = [0u8; 16];
    for (i, b) in out.iter_mut().enumerate() {
        let nibble = (v >> (60 - 4 * i)) & 0xF;
        *b = b"0123456789abcdef"[nibble as usize];
    }
    out
}

/// Index of the limit that keeps the key's base identity: the sliding log with the longest window
/// (ties: the first).
fn base_log(limits: &[PolicyLimit]) -> Option<usize> {
    let mut best: Option<usize> = None;
    for (i, pl) in limits.iter().enumerate() {
        if pl.algorithm == Algorithm::SlidingLog
            && best.is_none_or(|b| pl.limit.window_micros > limits[b].limit.window_micros)
        {
            best = Some(i);
        }
    }
    best
}

/// The name of a limit's state identity inside the key (algorithm and window or calendar).
fn identity(pl: &PolicyLimit, base: bool, out: &mut Vec<u8>) {
    use std::io::Write;
    let w = pl.limit.window_micros;
    // Writing into a Vec cannot fail.
    let _ = match pl.algorithm {
        Algorithm::SlidingLog if base => write!(out, "l"),
        Algorithm::SlidingLog => write!(out, "l{w}"),
        Algorithm::Gcra { .. } => write!(out, "g{w}"),
        Algorithm::SlidingWindowCounter => write!(out, "c{w}"),
        Algorithm::FixedWindow { calendar: None } => write!(out, "f{w}"),
        Algorithm::FixedWindow {
            calendar: Some(Calendar::Day),
        } => write!(out, "fd"),
        Algorithm::FixedWindow {
            calendar: Some(Calendar::Week),
        } => write!(out, "fw"),
        Algorithm::FixedWindow {
            calendar: Some(Calendar::Month),
        } => write!(out, "fm"),
    };
}

fn kind_of(pl: &PolicyLimit, shadow: bool) -> (u8, u64) {
    let (k, burst) = match pl.algorithm {
        Algorithm::SlidingLog => (b'l', 0),
        Algorithm::Gcra { burst } => (b'g', burst),
        Algorithm::SlidingWindowCounter => (b'c', 0),
        Algorithm::FixedWindow { calendar: None } => (b'f', 0),
        Algorithm::FixedWindow {
            calendar: Some(Calendar::Day),
        } => (b'd', 0),
        Algorithm::FixedWindow {
            calendar: Some(Calendar::Week),
        } => (b'w', 0),
        Algorithm::FixedWindow {
            calendar: Some(Calendar::Month),
        } => (b'm', 0),
    };
    (if shadow { k.to_ascii_uppercase() } else { k }, burst)
}

/// The Redis Cluster slot of a key's hash tag.
fn slot_of(tag: &[u8; 16]) -> u16 {
    crc16::State::<crc16::XMODEM>::calculate(tag) % 16384
}

impl RedisStore {
    /// Connects to Redis (one node or a cluster) and returns the store.
    pub async fn connect(
        redis: &RedisOptions,
        opts: RedisStoreOptions,
    ) -> Result<Self, StoreError> {
        let conn = RedisConnection::connect(redis)
            .await
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to Redis: {e}")))?;
        let store = Self::with_connection(conn, redis.command_timeout, opts);
        // Load the script up front so the first burst of decisions does not each hit NOSCRIPT
        // and load it again. Best effort: EVALSHA reloads it whenever it is missing anyway.
        let mut conn = store.inner.conn.clone();
        for script in [&store.inner.script, &store.inner.consume_one] {
            let load = script.load_async(&mut conn);
            if let Ok(Err(e)) = tokio::time::timeout(redis.connect_timeout, load).await {
                tracing::debug!(error = %e, "could not preload a decision script");
            }
        }
        Ok(store)
    }

    /// A store over an existing connection (shared with the config backend).
    pub fn with_connection(
        conn: RedisConnection,
        timeout: Duration,
        opts: RedisStoreOptions,
    ) -> Self {
        let prefix = opts.key_prefix.replace('{', "(").replace('}', ")");
        let consume_one = Script::new(CONSUME_ONE_SCRIPT);
        let batcher = (opts.batch_in_flight > 0 && !conn.is_cluster()).then(|| {
            Arc::new(Batcher::new(
                conn.clone(),
                consume_one.clone(),
                timeout,
                opts.batch_in_flight,
                opts.batch_max_items,
            ))
        });
        Self {
            inner: Arc::new(Inner {
                conn,
                script: Script::new(SCRIPT),
                consume_one,
                batcher,
                prefix: prefix.into_bytes(),
                timeout,
                breaker: CircuitBreaker::new(opts.failure_threshold, opts.probe_interval),
                creation: CreationLimiter::default(),
            }),
        }
    }

    fn state_key(&self, key: RateKey<'_>, tag: &[u8; 16], pl: &PolicyLimit, base: bool) -> Vec<u8> {
        let p = &self.inner.prefix;
        let mut k = Vec::with_capacity(p.len() + 64);
        k.extend_from_slice(p);
        k.push(b'{');
        k.extend_from_slice(tag);
        k.push(b'}');
        identity(pl, base, &mut k);
        k.push(b':');
        key.encode_into(&mut k);
        k
    }

    /// The Redis key holding `key`'s sliding log (the seed's one limit; in a policy, the sliding
    /// log with the longest window).
    pub fn redis_key(&self, key: RateKey<'_>) -> Vec<u8> {
        let pl = PolicyLimit::sliding_log(Limit {
            max_requests: 1,
            window_micros: 1,
        });
        self.state_key(key, &hash_tag(key), &pl, true)
    }

    /// The Redis keys of every limit of `limits` on `key`, in order.
    pub fn policy_keys(&self, key: RateKey<'_>, limits: &[PolicyLimit]) -> Vec<Vec<u8>> {
        let tag = hash_tag(key);
        let base = base_log(limits);
        (0..limits.len())
            .map(|i| self.state_key(key, &tag, &limits[i], base == Some(i)))
            .collect()
    }

    fn spec<'a>(
        &self,
        key: RateKey<'a>,
        limits: &[PolicyLimit],
        cost: u64,
        bounds: KeyBounds,
        shadow: impl Fn(usize) -> bool,
    ) -> (ItemSpec<'a>, u16) {
        let tag = hash_tag(key);
        let base = base_log(limits);
        let limits = limits
            .iter()
            .enumerate()
            .map(|(i, pl)| {
                let (kind, burst) = kind_of(pl, shadow(i));
                LimitSpec {
                    key: self.state_key(key, &tag, pl, base == Some(i)),
                    kind,
                    max: pl.limit.max_requests,
                    window: pl.limit.window_micros,
                    burst,
                }
            })
            .collect();
        (
            ItemSpec {
                key,
                cost,
                bounds,
                limits,
            },
            slot_of(&tag),
        )
    }

    /// One EVALSHA over `items` (whose keys must share a slot on a cluster).
    async fn call(
        &self,
        op: Op,
        items: &[ItemSpec<'_>],
        at: Option<Micros>,
    ) -> Result<CallReply, StoreError> {
        let inner = &*self.inner;
        if inner.breaker.admit() == Admit::FailFast {
            return Err(StoreError::Unavailable(
                "Redis is unreachable (circuit open; retrying in the background)".into(),
            ));
        }
        let creates = matches!(op, Op::Consume | Op::Report);
        // A creation token is reserved before the call (the script may create the key) and given
        // back if the key existed; with none, the script refuses to create one. No extra round trip.
        let reservations: SmallVec<[Option<Result<Reservation, KeyBound>>; 1]> = if creates {
            let now = at.unwrap_or_else(|| SystemClock.now_micros());
            items
                .iter()
                .map(|it| Some(inner.creation.reserve(it.key.tenant, it.bounds, now)))
                .collect()
        } else {
            items.iter().map(|_| None).collect()
        };
        // One consume on one key under one enforced limit goes to the script written for it
        // (`redis_consume_one.lua`): the same decision at a fraction of the general script's
        // Redis CPU. Its parameters are one packed argument, its reply one packed string, because
        // every argument and reply value costs Redis more than packing it.
        let one = matches!(op, Op::Consume)
            && items.len() == 1
            && items[0].limits.len() == 1
            && items[0].limits[0].kind.is_ascii_lowercase();
        let reply: Result<Vec<i64>, Failure> = if one {
            let packed = consume_one_packed(&items[0], &reservations[0]);
            let bytes = match (&inner.batcher, at) {
                // At Redis time, with the decisions that arrive with it; the batcher bounds the
                // whole wait, queueing included, by the command timeout (one timer per batch).
                (Some(batcher), None) => batcher.decide(&items[0].limits[0].key, packed).await,
                _ => {
                    let script = &inner.consume_one;
                    let cmd = consume_one_cmd(script, &items[0].limits[0].key, &packed, at);
                    invoke(&inner.conn, inner.timeout, script, &cmd)
                        .await
                        .map_err(Failure::from)
                        .and_then(redis_batch::single_reply)
                }
            };
            bytes.map(|b| consume_one_reply(&b))
        } else {
            let script = &inner.script;
            let cmd = decision_cmd(script, op, items, &reservations, at);
            invoke(&inner.conn, inner.timeout, script, &cmd)
                .await
                .and_then(ints)
                .map_err(Failure::from)
        };
        let reply = match reply {
            Ok(r) => r,
            Err(Failure::Corrupt(detail)) => {
                // Redis answered: the breaker counts this as a success.
                inner.breaker.on_success();
                return Err(corrupt(items, &detail));
            }
            Err(Failure::Failed(msg)) => {
                inner.breaker.on_failure();
                tracing::debug!(error = %msg, "Redis store call failed");
                return Err(StoreError::Unavailable(msg));
            }
        };
        inner.breaker.on_success();
        let parsed = parse(&reply, items)
            .ok_or_else(|| StoreError::Unavailable("Redis answered the script oddly".into()))?;
        for ((it, r), ir) in items.iter().zip(&reservations).zip(&parsed.items) {
            if let Some(Ok(r)) = r {
                // A lost reply after a creation keeps its token: the bound stays a bound.
                if !ir.created {
                    inner.creation.give_back(it.key.tenant, it.bounds, *r);
                }
            }
        }
        if let Some(i) = parsed.refused {
            if let (Some(it), Some(Some(Err(bound)))) = (items.get(i), reservations.get(i)) {
                return Err(refused_err(it.key.tenant, *bound));
            }
            return Err(StoreError::Unavailable(
                "Redis refused a key the store held a creation token for".into(),
            ));
        }
        Ok(parsed)
    }

    /// Script calls the batcher has sent and the decisions they carried (tests: batching
    /// happened); (0, 0) when the store does not batch.
    #[doc(hidden)]
    pub fn batch_counts(&self) -> (u64, u64) {
        self.inner.batcher.as_ref().map_or((0, 0), |b| b.counts())
    }

    /// `apply`, at a given time instead of Redis's clock (tests and benchmarks; `None` = Redis
    /// TIME). Expiries are absolute from this time, so send times at or after the real clock.
    #[doc(hidden)]
    pub async fn apply_at(
        &self,
        op: Op,
        items: &[PolicyItem<'_>],
        at: Option<Micros>,
    ) -> Result<PolicyVerdict, StoreError> {
        let mut specs = Vec::with_capacity(items.len());
        let mut slots: SmallVec<[u16; 1]> = SmallVec::new();
        for it in items {
            let (spec, slot) = self.spec(it.key, &it.policy.limits, it.cost, it.bounds, |i| {
                it.is_shadow(i)
            });
            specs.push(spec);
            slots.push(slot);
        }
        let one_slot = slots.iter().all(|&s| s == slots[0]);
        let reply = if !self.inner.conn.is_cluster() || one_slot {
            self.call(op, &specs, at).await?
        } else {
            self.by_slot(op, &specs, &slots, at).await?
        };
        Ok(PolicyVerdict {
            allowed: reply.allowed,
            now: reply.now,
            items: reply.items.into_iter().map(|r| r.verdict).collect(),
        })
    }

    /// A call whose items live in several cluster slots: one script per slot, in order of first
    /// appearance. A consume that a later group denies gives back what earlier groups consumed
    /// (best effort: until the give-back lands, those keys count the cost, which can only deny
    /// others, never admit; if the give-back fails, the cost stays counted until the window frees
    /// it). The groups after a denial are read with a status call.
    async fn by_slot(
        &self,
        op: Op,
        specs: &[ItemSpec<'_>],
        slots: &[u16],
        at: Option<Micros>,
    ) -> Result<CallReply, StoreError> {
        let mut order: Vec<u16> = Vec::new();
        for &s in slots {
            if !order.contains(&s) {
                order.push(s);
            }
        }
        let mut answers: Vec<Option<ItemReply>> = (0..specs.len()).map(|_| None).collect();
        let mut allowed = true;
        let mut now = 0;
        // What earlier groups consumed: (item index, its consumed limits' indexes, their spec).
        let mut consumed: Vec<(usize, Vec<usize>, ItemSpec<'_>)> = Vec::new();
        for slot in order {
            let idx: Vec<usize> = (0..specs.len()).filter(|&i| slots[i] == slot).collect();
            let group: Vec<ItemSpec<'_>> = idx.iter().map(|&i| specs[i].clone()).collect();
            let this_op = if op == Op::Consume && !allowed {
                Op::Status
            } else {
                op
            };
            let reply = match self.call(this_op, &group, at).await {
                Ok(r) => r,
                Err(e) => {
                    if op == Op::Consume {
                        self.give_back(&consumed, at, &mut answers).await;
                    }
                    return Err(e);
                }
            };
            now = now.max(reply.now);
            if this_op == Op::Consume {
                if reply.allowed {
                    for (&i, r) in idx.iter().zip(&reply.items) {
                        let (lims, part) = consumed_part(&specs[i], &r.verdict);
                        consumed.push((i, lims, part));
                    }
                } else {
                    allowed = false;
                }
            } else if this_op == Op::Status && op == Op::Consume {
                allowed = false;
            }
            for (i, r) in idx.into_iter().zip(reply.items) {
                answers[i] = Some(r);
            }
            if op == Op::Consume && !allowed && !consumed.is_empty() {
                self.give_back(&consumed, at, &mut answers).await;
                consumed.clear();
            }
        }
        let items = answers
            .into_iter()
            .collect::<Option<Vec<_>>>()
            .ok_or_else(|| {
                StoreError::Unavailable("a slot group of the call was not answered".into())
            })?;
        if op == Op::Status {
            allowed = items.iter().all(|r| r.verdict.allowed);
        }
        Ok(CallReply {
            allowed,
            now,
            items,
            refused: None,
        })
    }

    /// Refunds what earlier slot groups of a denied call consumed, and reports the state after it
    /// in their answers (errors are logged: the cost then stays counted, which can only over-deny).
    async fn give_back(
        &self,
        consumed: &[(usize, Vec<usize>, ItemSpec<'_>)],
        at: Option<Micros>,
        answers: &mut [Option<ItemReply>],
    ) {
        let mut groups: Vec<(u16, Vec<usize>)> = Vec::new();
        for (n, (_, _, spec)) in consumed.iter().enumerate() {
            if spec.limits.is_empty() {
                continue;
            }
            let slot = slot_of(&hash_tag(spec.key));
            match groups.iter_mut().find(|(s, _)| *s == slot) {
                Some((_, g)) => g.push(n),
                None => groups.push((slot, vec![n])),
            }
        }
        for (_, g) in groups {
            let specs: Vec<ItemSpec<'_>> = g.iter().map(|&n| consumed[n].2.clone()).collect();
            match self.call(Op::Refund, &specs, at).await {
                Ok(reply) => {
                    for (&n, r) in g.iter().zip(&reply.items) {
                        let (item, lims, _) = &consumed[n];
                        let Some(Some(answer)) = answers.get_mut(*item) else {
                            continue;
                        };
                        for (&li, after) in lims.iter().zip(&r.verdict.limits) {
                            if let Some(lv) = answer.verdict.limits.get_mut(li) {
                                lv.remaining = after.remaining;
                                lv.reset_at = after.reset_at;
                            }
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not give back a cross-slot call's consumption; it stays counted until its window frees it")
                }
            }
        }
    }

    /// The seed's one-limit calls, through the same script.
    async fn single(
        &self,
        op: Op,
        key: RateKey<'_>,
        limit: Limit,
        cost: u64,
        bounds: KeyBounds,
        at: Option<Micros>,
    ) -> Result<Verdict, StoreError> {
        let limits = [PolicyLimit::sliding_log(limit)];
        let (spec, _) = self.spec(key, &limits, cost, bounds, |_| false);
        let reply = self.call(op, std::slice::from_ref(&spec), at).await?;
        let item = reply
            .items
            .first()
            .ok_or_else(|| StoreError::Unavailable("Redis answered the script oddly".into()))?;
        let (Some(lv), Some(&used)) = (item.verdict.limits.first(), item.used.first()) else {
            return Err(StoreError::Unavailable(
                "Redis answered the script oddly".into(),
            ));
        };
        Ok(Verdict {
            allowed: item.verdict.allowed,
            used,
            reset_at: lv.reset_at,
            retry_at: lv.retry_at,
            now: reply.now,
        })
    }

    /// The decision at a given time instead of Redis's clock. Only for differential tests against
    /// `WindowLog`; the service always uses Redis time. The key's expiry is set absolutely from
    /// this time, so send times at or after the real clock or the key expires at once.
    #[doc(hidden)]
    pub async fn check_and_consume_at(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        cost: u64,
        now: Micros,
    ) -> Result<Verdict, StoreError> {
        self.single(
            Op::Consume,
            key,
            limit,
            cost,
            KeyBounds::UNBOUNDED,
            Some(now),
        )
        .await
    }

    /// `check_and_consume_bounded` at a given time, used for the creation buckets too; tests only.
    #[doc(hidden)]
    pub async fn check_and_consume_bounded_at(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        cost: u64,
        bounds: KeyBounds,
        now: Micros,
    ) -> Result<Verdict, StoreError> {
        self.single(Op::Consume, key, limit, cost, bounds, Some(now))
            .await
    }

    /// Status at a given time; see `check_and_consume_at`.
    #[doc(hidden)]
    pub async fn status_at(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        now: Micros,
    ) -> Result<Verdict, StoreError> {
        self.single(Op::Status, key, limit, 1, KeyBounds::UNBOUNDED, Some(now))
            .await
    }

    /// The connection, for sharing with the Redis configuration backend.
    pub fn connection(&self) -> &RedisConnection {
        &self.inner.conn
    }
}

/// One decision script call over `items` (layout of `KEYS` and `ARGV` in `redis_policy.lua`).
fn decision_cmd(
    script: &Script,
    op: Op,
    items: &[ItemSpec<'_>],
    reservations: &[Option<Result<Reservation, KeyBound>>],
    at: Option<Micros>,
) -> Cmd {
    let keys: SmallVec<[&[u8]; 4]> = items
        .iter()
        .flat_map(|it| it.limits.iter().map(|l| &l.key[..]))
        .collect();
    evalsha(script, keys.iter().copied(), |cmd| {
        cmd.arg(match op {
            Op::Consume => "c",
            Op::Status => "s",
            Op::Report => "r",
            Op::Refund => "f",
        });
        match at {
            Some(t) => cmd.arg(t),
            None => cmd.arg(""),
        };
        cmd.arg(items.len());
        for (it, r) in items.iter().zip(reservations) {
            let may_create = if matches!(r, Some(Err(_))) { "0" } else { "1" };
            cmd.arg(it.cost).arg(may_create).arg(it.limits.len());
            for l in &it.limits {
                cmd.arg(&[l.kind][..]).arg(l.max).arg(l.window).arg(l.burst);
            }
        }
    })
}

/// The script, for benchmarks that call it directly.
#[doc(hidden)]
pub const SCRIPT: &str = include_str!("redis_policy.lua");

/// The packed argument of `redis_consume_one.lua` for one item under one limit: kind, may-create
/// '1' / '0', then cost, max, window and burst as little-endian doubles (all below 2^53 and so
/// exact).
fn consume_one_packed(
    item: &ItemSpec<'_>,
    reservation: &Option<Result<Reservation, KeyBound>>,
) -> [u8; ITEM_BYTES] {
    let l = &item.limits[0];
    let mut p = [0u8; ITEM_BYTES];
    p[0] = l.kind;
    p[1] = if matches!(reservation, Some(Err(_))) {
        b'0'
    } else {
        b'1'
    };
    for (i, v) in [item.cost, l.max, l.window, l.burst]
        .into_iter()
        .enumerate()
    {
        p[2 + 8 * i..10 + 8 * i].copy_from_slice(&(v as f64).to_le_bytes());
    }
    p
}

/// The call of `redis_consume_one.lua` for one item: its key, its packed argument and the time
/// argument of `redis_policy.lua`.
fn consume_one_cmd(script: &Script, key: &[u8], packed: &[u8], at: Option<Micros>) -> Cmd {
    evalsha(script, std::iter::once(key), |cmd| {
        cmd.arg(packed);
        match at {
            Some(t) => cmd.arg(t),
            None => cmd.arg(""),
        };
    })
}

/// The one-consume script's reply, six little-endian doubles {now, flags, remaining, reset_at,
/// retry_at, used}, spread into the general script's layout for one item under one limit.
fn consume_one_reply(b: &[u8; REPLY_BYTES]) -> Vec<i64> {
    let mut f = [0i64; 6];
    for (x, c) in f.iter_mut().zip(b.chunks_exact(8)) {
        let mut d = [0u8; 8];
        d.copy_from_slice(c);
        // Integers below 2^53; truncated as Redis truncates a Lua number it replies.
        *x = f64::from_le_bytes(d) as i64;
    }
    let [now, flags, remaining, reset, retry, used] = f;
    let bit = |b: i64| i64::from(flags & b != 0);
    let ok = bit(4);
    vec![
        now,
        bit(1),
        bit(2),
        ok,
        -1,
        bit(8),
        ok,
        remaining,
        reset,
        retry,
        used,
    ]
}

/// The one-consume script, for benchmarks that call it directly.
#[doc(hidden)]
pub const CONSUME_ONE_SCRIPT: &str = include_str!("redis_consume_one.lua");

/// The limits of `spec` that consumed in an allowed call (the non-shadow ones and the shadow ones
/// that allowed): their indexes, and the spec of just them.
fn consumed_part<'a>(spec: &ItemSpec<'a>, v: &ItemVerdict) -> (Vec<usize>, ItemSpec<'a>) {
    let idx: Vec<usize> = (0..spec.limits.len())
        .filter(|&i| {
            spec.limits[i].kind.is_ascii_lowercase() || v.limits.get(i).is_some_and(|l| l.allowed)
        })
        .collect();
    let mut part = spec.clone();
    part.limits = idx.iter().map(|&i| spec.limits[i].clone()).collect();
    (idx, part)
}

/// The script's reply as the flat array of integers it always is (an error value inside it is
/// Redis' error, passed on as such).
fn ints(reply: redis::Value) -> RedisResult<Vec<i64>> {
    match reply {
        redis::Value::Array(items) => items
            .into_iter()
            .map(|v| match v {
                redis::Value::Int(i) => Ok(i),
                other => Err(odd_reply(other)),
            })
            .collect(),
        other => Err(odd_reply(other)),
    }
}

fn odd_reply(v: redis::Value) -> RedisError {
    match v.extract_error() {
        Ok(v) => RedisError::from((
            ErrorKind::UnexpectedReturnType,
            "the decision script answered with",
            format!("{v:?}"),
        )),
        Err(e) => e,
    }
}

/// Reads the script's flat reply (layout in `redis_policy.lua`).
fn parse(r: &[i64], items: &[ItemSpec<'_>]) -> Option<CallReply> {
    let want = CALL_FIELDS
        + items
            .iter()
            .map(|it| ITEM_FIELDS + LIMIT_FIELDS * it.limits.len())
            .sum::<usize>();
    if r.len() != want {
        return None;
    }
    let time = |v: i64| v.max(0) as u64;
    let refused = (r[2] > 0).then(|| (r[2] - 1) as usize);
    let mut at = CALL_FIELDS;
    let mut out = Vec::with_capacity(items.len());
    for it in items {
        let (allowed, shadow, created) = (r[at], r[at + 1], r[at + 2]);
        at += ITEM_FIELDS;
        let mut limits = SmallVec::new();
        let mut used = SmallVec::new();
        for _ in &it.limits {
            let f = &r[at..at + LIMIT_FIELDS];
            limits.push(LimitVerdict {
                allowed: f[0] == 1,
                remaining: time(f[1]),
                reset_at: time(f[2]),
                retry_at: (f[3] >= 0).then_some(f[3] as u64),
            });
            used.push(time(f[4]));
            at += LIMIT_FIELDS;
        }
        out.push(ItemReply {
            verdict: ItemVerdict {
                allowed: allowed == 1,
                limits,
                shadow_denied: (shadow >= 0).then_some(shadow as usize),
            },
            used,
            created: created == 1,
        });
    }
    Some(CallReply {
        allowed: r[1] == 1,
        now: time(r[0]),
        items: out,
        refused,
    })
}

/// The per-key error for a key the script found corrupt (and has already reset).
fn corrupt(items: &[ItemSpec<'_>], detail: &str) -> StoreError {
    // The detail is "<key index> <reason>".
    let (index, reason) = detail.split_once(' ').unwrap_or(("0", detail));
    let index: usize = index.parse().unwrap_or(0);
    let name = items
        .iter()
        .flat_map(|it| it.limits.iter())
        .nth(index.wrapping_sub(1))
        .map(|l| String::from_utf8_lossy(&l.key).into_owned())
        .unwrap_or_default();
    let reason = reason.to_string();
    tracing::warn!(key = %name.escape_debug(), %reason, "corrupt rate-limit state in Redis; the key was reset");
    StoreError::Corrupt { key: name, reason }
}

fn refused_err(tenant: &str, bound: KeyBound) -> StoreError {
    StoreError::TenantKeyBudget(KeyRefusal {
        tenant: tenant.to_string(),
        bound,
    })
}

#[async_trait]
impl Store for RedisStore {
    async fn check_and_consume(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        cost: u64,
    ) -> Result<Verdict, StoreError> {
        self.single(Op::Consume, key, limit, cost, KeyBounds::UNBOUNDED, None)
            .await
    }

    async fn check_and_consume_bounded(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        cost: u64,
        bounds: KeyBounds,
    ) -> Result<Verdict, StoreError> {
        self.single(Op::Consume, key, limit, cost, bounds, None)
            .await
    }

    async fn status(&self, key: RateKey<'_>, limit: Limit) -> Result<Verdict, StoreError> {
        self.single(Op::Status, key, limit, 1, KeyBounds::UNBOUNDED, None)
            .await
    }

    async fn apply(&self, op: Op, items: &[PolicyItem<'_>]) -> Result<PolicyVerdict, StoreError> {
        self.apply_at(op, items, None).await
    }

    fn is_healthy(&self) -> bool {
        self.inner.breaker.is_closed()
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use redis::Arg;
    use smallvec::smallvec;

    fn words(cmd: &Cmd) -> Vec<String> {
        cmd.args_iter()
            .map(|a| match a {
                Arg::Simple(b) => String::from_utf8_lossy(b).into_owned(),
                _ => "<not a plain argument>".to_string(),
            })
            .collect()
    }

    fn limit(key: &str, kind: u8, max: u64, window: Micros, burst: u64) -> LimitSpec {
        LimitSpec {
            key: key.as_bytes().to_vec(),
            kind,
            max,
            window,
            burst,
        }
    }

    /// The hand-packed command must keep the layout `redis_policy.lua` reads: every key first
    /// (KEYS), then the call's, each item's and each limit's arguments (ARGV).
    #[test]
    fn decision_cmd_is_one_evalsha_with_the_script_layout() {
        let script = Script::new(SCRIPT);
        let items = [
            ItemSpec {
                key: RateKey::new("t", "c", "a"),
                cost: 2,
                bounds: KeyBounds::UNBOUNDED,
                limits: smallvec![
                    limit("k1", b'l', 10, 1_000_000, 0),
                    limit("k2", b'G', 5, 60_000_000, 3)
                ],
            },
            ItemSpec {
                key: RateKey::new("t", "d", "a"),
                cost: 1,
                bounds: KeyBounds::UNBOUNDED,
                limits: smallvec![limit("k3", b'f', 7, 2_000_000, 0)],
            },
        ];
        let reservations = [None, Some(Err(KeyBound::TenantKeys { max: 1 }))];
        let cmd = decision_cmd(&script, Op::Consume, &items, &reservations, Some(42));
        let mut want = vec!["EVALSHA", script.get_hash(), "3", "k1", "k2", "k3"];
        want.extend(["c", "42", "2"]);
        want.extend([
            "2", "1", "2", "l", "10", "1000000", "0", "G", "5", "60000000", "3",
        ]);
        want.extend(["1", "0", "1", "f", "7", "2000000", "0"]);
        assert_eq!(words(&cmd), want);
        assert_eq!(script.get_hash().len(), 40);

        let status = decision_cmd(&script, Op::Status, &items[1..], &[None], None);
        assert_eq!(
            words(&status)[..9],
            [
                "EVALSHA",
                script.get_hash(),
                "1",
                "k3",
                "s",
                "",
                "1",
                "1",
                "1"
            ]
        );
    }
}
