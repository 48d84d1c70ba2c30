//! One handle over a single Redis node or a Redis Cluster, shared by the Redis store and the Redis
//! configuration backend.
//!
//! Both variants are redis-rs's self-healing, multiplexed connections: `ConnectionManager`
//! reconnects a single node in the background, the cluster connection follows MOVED/ASK and
//! refreshes its slot map. Every command through them is bounded by a timeout here, so a stalled
//! Redis costs a caller at most that long.

use std::time::Duration;

use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, Pipeline, RedisError, RedisFuture, Value};

/// How to reach Redis.
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// One URL: a single node. Several: seed nodes of a Redis Cluster.
    pub urls: Vec<String>,
    /// Longest any one command may take before it counts as a failure.
    pub command_timeout: Duration,
    /// Longest a (re)connection attempt may take.
    pub connect_timeout: Duration,
    /// Treat a single URL as a cluster seed (a cluster reachable through one node).
    pub force_cluster: bool,
}

impl RedisOptions {
    pub fn new(urls: Vec<String>) -> Self {
        Self {
            urls,
            command_timeout: Duration::from_millis(50),
            connect_timeout: Duration::from_millis(500),
            force_cluster: false,
        }
    }
}

/// A cheap-to-clone connection to one node or to a cluster.
#[derive(Clone)]
pub enum RedisConnection {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

impl RedisConnection {
    /// Connects now, so a wrong URL or an unreachable Redis is reported at startup.
    pub async fn connect(opts: &RedisOptions) -> Result<Self, RedisError> {
        let urls: Vec<&str> = opts
            .urls
            .iter()
            .map(|u| u.trim())
            .filter(|u| !u.is_empty())
            .collect();
        match urls.as_slice() {
            [] => Err(RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "no Redis URL given; pass --redis-url redis://host:port",
            ))),
            [one] if !opts.force_cluster => {
                let client = redis::Client::open(*one)?;
                let config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(opts.connect_timeout))
                    .set_response_timeout(Some(opts.command_timeout))
                    // Keep retrying quickly in the background; the store's circuit breaker, not
                    // this backoff, decides how often callers wait on a dead Redis.
                    .set_number_of_retries(3)
                    .set_min_delay(Duration::from_millis(10))
                    .set_max_delay(Duration::from_millis(200));
                let conn = tokio::time::timeout(
                    opts.connect_timeout * 2,
                    ConnectionManager::new_with_config(client, config),
                )
                .await
                .map_err(|_| timeout_error("connecting to Redis"))??;
                Ok(Self::Single(conn))
            }
            seeds => {
                let client = ClusterClientBuilder::new(seeds.to_vec())
                    .connection_timeout(opts.connect_timeout)
                    .response_timeout(opts.command_timeout)
                    // No retries: the client would resend an EVALSHA whose connection dropped
                    // after Redis ran it, counting one decision twice (at least once). Without
                    // them a failed call is answered per --on-store-error and counted at most
                    // once; a MOVED/ASK costs that one call, and the slot map is refreshed.
                    .retries(0)
                    .min_retry_wait(5)
                    .max_retry_wait(50)
                    .build()?;
                let conn =
                    tokio::time::timeout(opts.connect_timeout * 4, client.get_async_connection())
                        .await
                        .map_err(|_| timeout_error("connecting to the Redis Cluster"))??;
                Ok(Self::Cluster(conn))
            }
        }
    }

    /// Sends one command and reads its reply; an error reply (e.g. `NOSCRIPT`, a script's error)
    /// is returned as the error. The single-node path calls the manager directly, without the
    /// boxed future of the `ConnectionLike` route.
    pub async fn send(&mut self, cmd: &Cmd) -> Result<Value, RedisError> {
        let reply = match self {
            Self::Single(c) => c.send_packed_command(cmd).await?,
            Self::Cluster(c) => c.req_packed_command(cmd).await?,
        };
        match reply {
            Value::ServerError(e) => Err(e.into()),
            v => Ok(v),
        }
    }

    /// Whether this is a cluster connection.
    pub fn is_cluster(&self) -> bool {
        matches!(self, Self::Cluster(_))
    }
}

pub(crate) fn timeout_error(what: &str) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("{what} timed out"),
    ))
}

impl ConnectionLike for RedisConnection {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Self::Single(c) => c.req_packed_command(cmd),
            Self::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Self::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Self::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Self::Single(c) => c.get_db(),
            Self::Cluster(c) => c.get_db(),
        }
    }
}
