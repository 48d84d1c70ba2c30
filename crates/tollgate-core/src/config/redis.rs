//! Configuration kept in Redis (redis mode), so every instance shares one versioned configuration
//! and a restarted instance loses nothing.
//!
//! The document lives in one hash (`version`, `doc`). Saving is a compare-and-set in a Lua script:
//! the write happens only if the stored version is still the one the writer started from, and it
//! publishes the new version on a channel so other instances reload at once (they also poll the
//! version, in case a message is missed).

use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::{check_version, ConfigBackend, ConfigDocument, ConfigError, MAX_VERSION};
use crate::redis_conn::RedisConnection;

// Versions are compared as the decimal strings they are stored as: Lua numbers are doubles, which
// would take two versions above 2^53 for equal (and turn a stored 2^64-1 into a float).
const SAVE_SCRIPT: &str = r#"
local cur = redis.call('HGET', KEYS[1], 'version') or '0'
if cur ~= ARGV[1] then return {0, cur} end
redis.call('HSET', KEYS[1], 'version', ARGV[2], 'doc', ARGV[3])
redis.call('PUBLISH', ARGV[4], ARGV[2])
return {1, ARGV[2]}
"#;

/// Keeps the configuration in Redis under `<prefix>{}:config` and announces changes on
/// `<prefix>:config-changed`.
pub struct RedisConfigBackend {
    conn: RedisConnection,
    key: String,
    channel: String,
    timeout: Duration,
    save: Script,
}

impl RedisConfigBackend {
    /// `timeout` bounds each call; configuration calls are rare, so it can be generous.
    pub fn new(conn: RedisConnection, prefix: &str, timeout: Duration) -> Self {
        Self {
            conn,
            // The empty hash tag makes a cluster hash the whole name, like the log keys.
            key: format!("{prefix}{{}}:config"),
            channel: Self::channel_for(prefix),
            timeout,
            save: Script::new(SAVE_SCRIPT),
        }
    }

    /// The channel change notifications are published on.
    pub fn channel_for(prefix: &str) -> String {
        format!("{prefix}:config-changed")
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The stored version (0 when nothing is stored); one small read, for polling.
    pub async fn stored_version(&self) -> Result<u64, ConfigError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("HGET").arg(&self.key).arg("version").to_owned();
        let v: Option<String> = self
            .bounded(cmd.query_async(&mut conn))
            .await
            .map_err(ConfigError::Persist)?;
        v.map_or(Ok(0), |v| self.parse_version(&v))
    }

    /// A stored `version` field, which must be a decimal integer no larger than [`MAX_VERSION`].
    fn parse_version(&self, v: &str) -> Result<u64, ConfigError> {
        v.parse::<u64>()
            .ok()
            .filter(|n| check_version(*n).is_ok())
            .ok_or_else(|| {
                let shown: String = v.chars().take(40).collect();
                ConfigError::Corrupt(format!(
                    "the configuration version stored in Redis key {} is '{shown}', not an integer from 0 to {MAX_VERSION} (fix or delete the key; a running instance then stores its configuration again)",
                    self.key
                ))
            })
    }

    async fn bounded<T>(
        &self,
        fut: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, String> {
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(format!("Redis: {e}")),
            Err(_) => Err(format!(
                "Redis did not answer within {} ms",
                self.timeout.as_millis()
            )),
        }
    }
}

#[async_trait]
impl ConfigBackend for RedisConfigBackend {
    async fn load(&self) -> Result<Option<ConfigDocument>, ConfigError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("HMGET")
            .arg(&self.key)
            .arg("version")
            .arg("doc")
            .to_owned();
        let (version, doc): (Option<String>, Option<String>) = self
            .bounded(cmd.query_async(&mut conn))
            .await
            .map_err(|e| ConfigError::Persist(format!("cannot read the configuration: {e}")))?;
        let (version, doc) = match (version, doc) {
            (None, None) => return Ok(None),
            (Some(v), Some(d)) => (self.parse_version(&v)?, d),
            _ => {
                return Err(ConfigError::Corrupt(format!(
                "Redis key {} holds only one of the fields version and doc (fix or delete the key)",
                self.key
            )))
            }
        };
        let doc: ConfigDocument = serde_json::from_str(&doc).map_err(|e| {
            ConfigError::Corrupt(format!(
                "the configuration stored in Redis key {} is not valid: {e} (fix or delete it)",
                self.key
            ))
        })?;
        // The compare-and-set reads the field; a document that says otherwise would make every
        // change conflict without ever adopting anything.
        if doc.version != version {
            return Err(ConfigError::Corrupt(format!(
                "Redis key {}: the version field ({version}) and the document's version ({}) disagree (fix or delete the key)",
                self.key, doc.version
            )));
        }
        Ok(Some(doc))
    }

    async fn save(&self, doc: &ConfigDocument, expected_version: u64) -> Result<(), ConfigError> {
        check_version(doc.version).map_err(ConfigError::Invalid)?;
        let json = serde_json::to_string(doc).map_err(|e| ConfigError::Persist(e.to_string()))?;
        let mut conn = self.conn.clone();
        let mut inv = self.save.key(&self.key);
        inv.arg(expected_version)
            .arg(doc.version)
            .arg(json)
            .arg(&self.channel);
        let (ok, stored): (i64, String) = self
            .bounded(inv.invoke_async(&mut conn))
            .await
            .map_err(|e| ConfigError::Persist(format!("cannot store the configuration: {e}")))?;
        if ok == 1 {
            Ok(())
        } else {
            Err(ConfigError::Conflict {
                stored: self.parse_version(&stored)?,
            })
        }
    }
}
