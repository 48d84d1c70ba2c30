//! The Redis store: every decision is one EVALSHA of `redis_window.lua`, which runs the same
//! sliding-window-log algorithm as [`WindowLog`](crate::window::WindowLog) atomically inside Redis,
//! on Redis's clock. Any number of tollgate instances sharing one Redis (or Redis Cluster) therefore
//! make the decisions one instance would, whatever their own clocks say.
//!
//! Faults: each call is bounded by the command timeout, and a circuit breaker turns a Redis
//! outage into fast `Unavailable` errors (the limiter then applies `--on-store-error`) with one
//! probe per interval, instead of a timeout per request. A key whose stored value is not a valid
//! log is a different matter: Redis answered, the script reset the key, and the call is a
//! per-key `Corrupt` error that never counts against the breaker.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::breaker::{Admit, CircuitBreaker};
use super::creation::CreationLimiter;
use super::{KeyBound, KeyBounds, KeyRefusal, Store, StoreError};
use crate::clock::{Clock, Micros, SystemClock};
use crate::limit::{Limit, RateKey};
use crate::redis_conn::{RedisConnection, RedisOptions};
use crate::window::Verdict;

/// Prefix of every log key. The empty hash tag `{}` makes Redis Cluster hash the whole key, so a
/// `{` in a tenant id cannot pile many tenants' keys onto one slot.
pub const DEFAULT_KEY_PREFIX: &str = "tollgate{}:w:";

/// Tuning for the Redis store beyond how to connect.
#[derive(Debug, Clone)]
pub struct RedisStoreOptions {
    pub key_prefix: String,
    /// Consecutive failures that open the circuit.
    pub failure_threshold: u32,
    /// While open, how often one request probes Redis.
    pub probe_interval: Duration,
}

impl Default for RedisStoreOptions {
    fn default() -> Self {
        Self {
            key_prefix: DEFAULT_KEY_PREFIX.to_string(),
            failure_threshold: 3,
            probe_interval: Duration::from_millis(500),
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
    prefix: Vec<u8>,
    timeout: Duration,
    breaker: CircuitBreaker,
    /// This instance's key-creation buckets per tenant (see `creation.rs` for the bound they give).
    creation: CreationLimiter,
}

/// The error code the script raises for a key that is not a valid log (see `redis_window.lua`).
const CORRUPT_CODE: &str = "TGCORRUPT";

/// Which of the script's two operations to run.
#[derive(Clone, Copy)]
enum Op {
    Consume(u64, KeyBounds),
    Status,
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
        let load = store.inner.script.load_async(&mut conn);
        if let Ok(Err(e)) = tokio::time::timeout(redis.connect_timeout, load).await {
            tracing::debug!(error = %e, "could not preload the decision script");
        }
        Ok(store)
    }

    /// A store over an existing connection (shared with the config backend).
    pub fn with_connection(
        conn: RedisConnection,
        timeout: Duration,
        opts: RedisStoreOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                conn,
                script: Script::new(include_str!("redis_window.lua")),
                prefix: opts.key_prefix.into_bytes(),
                timeout,
                breaker: CircuitBreaker::new(opts.failure_threshold, opts.probe_interval),
                creation: CreationLimiter::default(),
            }),
        }
    }

    /// The Redis key holding `key`'s log.
    pub fn redis_key(&self, key: RateKey<'_>) -> Vec<u8> {
        let mut k = Vec::with_capacity(self.inner.prefix.len() + 32);
        k.extend_from_slice(&self.inner.prefix);
        key.encode_into(&mut k);
        k
    }

    async fn run(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        op: Op,
        at: Option<Micros>,
    ) -> Result<Verdict, StoreError> {
        let inner = &*self.inner;
        if inner.breaker.admit() == Admit::FailFast {
            return Err(StoreError::Unavailable(
                "Redis is unreachable (circuit open; retrying in the background)".into(),
            ));
        }
        let mut inv = inner.script.key(self.redis_key(key));
        let (mode, cost) = match op {
            Op::Consume(c, _) => ("c", c),
            Op::Status => ("s", 1),
        };
        // A creation token is reserved before the call (the script may create the key) and given
        // back if the key existed; with none, the script refuses to create one. No extra round trip.
        let reservation = match op {
            Op::Consume(_, bounds) => {
                let now = at.unwrap_or_else(|| SystemClock.now_micros());
                Some(inner.creation.reserve(key.tenant, bounds, now))
            }
            Op::Status => None,
        };
        let may_create = if matches!(reservation, Some(Err(_))) {
            "0"
        } else {
            "1"
        };
        inv.arg(mode)
            .arg(limit.max_requests)
            .arg(limit.window_micros)
            .arg(cost)
            .arg(may_create);
        if let Some(t) = at {
            inv.arg(t);
        }
        let mut conn = inner.conn.clone();
        let reply: Result<(i64, i64, i64, i64, i64, i64), String> =
            match tokio::time::timeout(inner.timeout, inv.invoke_async(&mut conn)).await {
                Ok(Ok(r)) => Ok(r),
                Ok(Err(e)) if e.code() == Some(CORRUPT_CODE) => {
                    // Redis answered: the breaker counts this as a success.
                    inner.breaker.on_success();
                    return Err(self.corrupt(key, &e));
                }
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!(
                    "Redis did not answer within {} ms",
                    inner.timeout.as_millis()
                )),
            };
        match reply {
            Ok((allowed, used, reset_at, retry_at, now, created)) => {
                inner.breaker.on_success();
                if let (Op::Consume(_, bounds), Some(r)) = (op, reservation) {
                    match r {
                        Ok(r) if created == 0 => inner.creation.give_back(key.tenant, bounds, r),
                        Err(bound) if created < 0 => return Err(refused(key.tenant, bound)),
                        // A lost reply after a creation (error path below) keeps its token:
                        // the bound stays a bound.
                        _ => {}
                    }
                }
                Ok(Verdict {
                    allowed: allowed == 1,
                    used: used.max(0) as u64,
                    reset_at: reset_at.max(0) as u64,
                    retry_at: (retry_at >= 0).then_some(retry_at as u64),
                    now: now.max(0) as u64,
                })
            }
            Err(msg) => {
                inner.breaker.on_failure();
                tracing::debug!(error = %msg, "Redis store call failed");
                Err(StoreError::Unavailable(msg))
            }
        }
    }

    /// The per-key error for a key the script found corrupt (and has already reset).
    fn corrupt(&self, key: RateKey<'_>, e: &redis::RedisError) -> StoreError {
        let name = String::from_utf8_lossy(&self.redis_key(key)).into_owned();
        // The detail ends with where in the script the error was raised; keep only the reason.
        let detail = e.detail().unwrap_or("");
        let reason = detail
            .split(" script: ")
            .next()
            .unwrap_or(detail)
            .to_string();
        tracing::warn!(key = %name.escape_debug(), %reason, "corrupt rate-limit state in Redis; the key was reset");
        StoreError::Corrupt { key: name, reason }
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
        self.run(
            key,
            limit,
            Op::Consume(cost, KeyBounds::UNBOUNDED),
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
        self.run(key, limit, Op::Consume(cost, bounds), Some(now))
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
        self.run(key, limit, Op::Status, Some(now)).await
    }

    /// The connection, for sharing with the Redis configuration backend.
    pub fn connection(&self) -> &RedisConnection {
        &self.inner.conn
    }
}

fn refused(tenant: &str, bound: KeyBound) -> StoreError {
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
        self.run(key, limit, Op::Consume(cost, KeyBounds::UNBOUNDED), None)
            .await
    }

    async fn check_and_consume_bounded(
        &self,
        key: RateKey<'_>,
        limit: Limit,
        cost: u64,
        bounds: KeyBounds,
    ) -> Result<Verdict, StoreError> {
        self.run(key, limit, Op::Consume(cost, bounds), None).await
    }

    async fn status(&self, key: RateKey<'_>, limit: Limit) -> Result<Verdict, StoreError> {
        self.run(key, limit, Op::Status, None).await
    }

    fn is_healthy(&self) -> bool {
        self.inner.breaker.is_closed()
    }

    fn kind(&self) -> &'static str {
        "redis"
    }
}
