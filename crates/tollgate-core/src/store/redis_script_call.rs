//! One script call to Redis, shared by the store's direct calls (`redis.rs`) and its batcher
//! (`redis_batch.rs`): the `EVALSHA` packed into one buffer, the reload after `NOSCRIPT` within
//! the command timeout, and how a failed call is told apart (a corrupt key, or anything else).
//! Its own module so that the batcher and the store both depend on it, not on each other.

use std::time::Duration;

use redis::{Cmd, ErrorKind, RedisError, RedisResult, Script, ServerErrorKind};

use crate::redis_conn::RedisConnection;

/// The error code the script raises for a key that is not valid state (see `redis_policy.lua`).
pub(super) const CORRUPT_CODE: &str = "TGCORRUPT";

/// Why one decision's script call did not answer it.
#[derive(Debug, Clone)]
pub(super) enum Failure {
    /// The script found the key corrupt and reset it: the detail `<key index> <reason>`.
    Corrupt(String),
    /// Anything else (transport, timeout, another script error), as its message.
    Failed(String),
}

impl From<RedisError> for Failure {
    fn from(e: RedisError) -> Self {
        if e.code() == Some(CORRUPT_CODE) {
            // The detail is "<key index> <reason>", then where in the script it was raised.
            let detail = e.detail().unwrap_or("");
            let detail = detail.split(" script: ").next().unwrap_or(detail);
            Failure::Corrupt(detail.to_string())
        } else {
            Failure::Failed(e.to_string())
        }
    }
}

/// Runs `script` with the keys and arguments packed in `cmd` (its EVALSHA, see `evalsha`) and
/// returns the reply: one round trip. Only when Redis has lost its script cache (a restart, a
/// `SCRIPT FLUSH`) does it load the script and send the same command again. The whole call,
/// reload included, is bounded by `timeout`.
pub(super) async fn invoke(
    conn: &RedisConnection,
    timeout: Duration,
    script: &Script,
    cmd: &Cmd,
) -> RedisResult<redis::Value> {
    match tokio::time::timeout(timeout, run(conn, script, cmd)).await {
        // The connection's own response timeout is this same timeout, started a moment later;
        // when the two fire in one timer tick either may win, and the answer is the same.
        Ok(Err(e)) if e.is_timeout() => Err(timed_out(timeout)),
        Ok(r) => r,
        Err(_) => Err(timed_out(timeout)),
    }
}

/// `invoke` without its timer, for a caller that bounds the call itself: the batcher, whose one
/// timer bounds every decision of a call (`redis_batch.rs`). Not to be awaited unbounded.
pub(super) async fn run(
    conn: &RedisConnection,
    script: &Script,
    cmd: &Cmd,
) -> RedisResult<redis::Value> {
    let mut conn = conn.clone();
    match conn.send(cmd).await {
        Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
            script.load_async(&mut conn).await?;
            conn.send(cmd).await
        }
        other => other,
    }
}

pub(super) fn timed_out(timeout: Duration) -> RedisError {
    RedisError::from(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        format!("Redis did not answer within {} ms", timeout.as_millis()),
    ))
}

/// The `EVALSHA` of `script` over `keys`, its arguments written by `args`: packed straight into
/// one buffer (no per-argument allocation), with the script's hash computed once in `Script::new`.
pub(super) fn evalsha<'k>(
    script: &Script,
    keys: impl ExactSizeIterator<Item = &'k [u8]>,
    args: impl FnOnce(&mut Cmd),
) -> Cmd {
    let mut cmd = Cmd::with_capacity(3 + keys.len() + 16, 256);
    cmd.arg("EVALSHA").arg(script.get_hash()).arg(keys.len());
    for k in keys {
        cmd.arg(k);
    }
    args(&mut cmd);
    cmd
}
