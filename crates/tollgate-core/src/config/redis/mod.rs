//! Configuration kept in Redis (redis mode), so every instance shares one versioned configuration
//! and a restarted instance loses nothing.
//!
//! Layout (all keys share the hash tag `{config}`, so a cluster keeps them on one node and the
//! scripts may touch them together):
//! - `<prefix>{config}:meta` — hash: `version` (global version), `global` (JSON of the global
//!   settings), `global_version` (version that last changed them), `floor` (version of the last
//!   whole replacement);
//! - `<prefix>{config}:tenants` — hash: tenant id → JSON of that tenant's record;
//! - `<prefix>{config}:tenant-versions` — hash: tenant id → version that last changed it (kept
//!   for removed tenants too, so a writer that has not seen the removal conflicts);
//! - `<prefix>{config}:changes` — stream: one entry per change (`v` new version, `p` version it
//!   was applied on, `g` global changed, `t` tenant ids; or `all` for a whole replacement or a
//!   bulk change), trimmed to about [`STREAM_MAX_LEN`] entries;
//! - channel `<prefix>:config-changed` — the new version, published with every change so other
//!   instances catch up at once (they also poll the version, in case a message is missed).
//!
//! A change is one script: it stores the touched records only, checking each against the version
//! the writer built on (see [`scripts::COMMIT`]). An instance catching up reads the stream from
//! where it was and only the records named there ([`scripts::DELTA`]); a gap (trimmed entries,
//! Redis lost data, a whole replacement) makes it reload everything, in chunks (HSCAN).
//!
//! The previous layout (one hash `<prefix>{}:config` holding the whole document in `doc`) is
//! imported when no configuration is stored in the new one, then kept as
//! `<prefix>{}:config:imported` and deleted.

mod delta;
mod scripts;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use redis::Script;

use super::document::{GlobalSettings, TenantDocument};
use super::{
    check_version, stored_snapshot, Commit, ConfigBackend, ConfigDocument, ConfigError, Snapshot,
    MAX_VERSION,
};
use crate::redis_conn::RedisConnection;

/// Records read per HSCAN call of a full load, and written per HSET when staging a bulk change.
pub const CHUNK: usize = 1000;
/// A change touching more records than this is staged in chunks and applied by one script that
/// reads them from Redis, rather than sent as one giant command.
const INLINE_MAX: usize = 1000;
/// A change touching more records than this is stored as a whole replacement: every tenant
/// staged, then swapped in by one script that renames the staging hash (O(1) in Redis). Applying
/// the staged records one by one in a script blocks Redis for all of them: 4.2 s for 1,000,000 on
/// the benchmark VM, during which every instance's decisions wait; 10,000 of them ~40 ms.
const STAGED_APPLY_MAX: usize = 10_000;
/// Stream entries kept (approximately); a follower further behind reloads everything.
pub const STREAM_MAX_LEN: usize = 10_000;
/// The most stream entries a follower applies as a delta before it reloads instead.
const DELTA_MAX_ENTRIES: usize = 1000;
/// Staged records left by a writer that died before committing them expire after this.
const STAGING_TTL_SECONDS: u64 = 3600;

/// How this backend has read the configuration, for tests and diagnostics.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct LoadStats {
    /// Whole-configuration loads (start-up, or after a gap).
    pub full_loads: u64,
    /// Catch-ups that read only what changed.
    pub deltas: u64,
    /// Tenant records read from Redis, by either.
    pub records_read: u64,
}

/// Where this instance is in the change stream: the version it holds and the last entry read.
#[derive(Debug, Clone)]
struct Cursor {
    version: u64,
    stream_id: String,
}

/// What a `DELTA` script found.
enum Delta {
    Nothing,
    Same,
    Gap,
    Changed {
        version: u64,
        stream_id: String,
        global: Option<GlobalSettings>,
        records: Vec<(String, Option<TenantDocument>)>,
    },
}

struct Keys {
    meta: String,
    tenants: String,
    versions: String,
    stream: String,
    legacy: String,
    imported: String,
    staging_prefix: String,
}

/// Keeps the configuration in Redis under `<prefix>{config}:*` and announces changes on
/// `<prefix>:config-changed`.
pub struct RedisConfigBackend {
    conn: RedisConnection,
    keys: Keys,
    channel: String,
    timeout: Duration,
    commit: Script,
    save: Script,
    head: Script,
    delta: Script,
    cursor: parking_lot::Mutex<Option<Cursor>>,
    full_loads: AtomicU64,
    deltas: AtomicU64,
    records_read: AtomicU64,
    staging_seq: AtomicU64,
}

impl RedisConfigBackend {
    /// `timeout` bounds each call; configuration calls are rare, so it can be generous.
    pub fn new(conn: RedisConnection, prefix: &str, timeout: Duration) -> Self {
        let key = |name: &str| format!("{prefix}{{config}}:{name}");
        Self {
            conn,
            keys: Keys {
                meta: key("meta"),
                tenants: key("tenants"),
                versions: key("tenant-versions"),
                stream: key("changes"),
                // Where the previous version kept the whole document; the empty hash tag made a
                // cluster hash the whole name.
                legacy: format!("{prefix}{{}}:config"),
                imported: format!("{prefix}{{}}:config:imported"),
                staging_prefix: key("staging"),
            },
            channel: Self::channel_for(prefix),
            timeout,
            commit: Script::new(scripts::COMMIT),
            save: Script::new(scripts::SAVE),
            head: Script::new(scripts::HEAD),
            delta: Script::new(scripts::DELTA),
            cursor: parking_lot::Mutex::new(None),
            full_loads: AtomicU64::new(0),
            deltas: AtomicU64::new(0),
            records_read: AtomicU64::new(0),
            staging_seq: AtomicU64::new(0),
        }
    }

    /// The channel change notifications are published on.
    pub fn channel_for(prefix: &str) -> String {
        format!("{prefix}:config-changed")
    }

    pub fn channel(&self) -> &str {
        &self.channel
    }

    /// The hash holding the global version and settings.
    pub fn meta_key(&self) -> &str {
        &self.keys.meta
    }

    /// The hash holding one record per tenant.
    pub fn tenants_key(&self) -> &str {
        &self.keys.tenants
    }

    /// The stream of changes.
    pub fn stream_key(&self) -> &str {
        &self.keys.stream
    }

    /// Where the previous version kept the whole document.
    pub fn legacy_key(&self) -> &str {
        &self.keys.legacy
    }

    pub fn load_stats(&self) -> LoadStats {
        LoadStats {
            full_loads: self.full_loads.load(Ordering::Relaxed),
            deltas: self.deltas.load(Ordering::Relaxed),
            records_read: self.records_read.load(Ordering::Relaxed),
        }
    }

    /// The stored version (0 when nothing is stored); one small read, for polling.
    pub async fn stored_version(&self) -> Result<u64, ConfigError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("HGET")
            .arg(&self.keys.meta)
            .arg("version")
            .to_owned();
        let v: Option<String> = self
            .bounded(cmd.query_async(&mut conn))
            .await
            .map_err(ConfigError::Persist)?;
        v.map_or(Ok(0), |v| self.parse_version(&self.keys.meta, &v))
    }

    /// A stored version, which must be a decimal integer no larger than [`MAX_VERSION`].
    fn parse_version(&self, key: &str, v: &str) -> Result<u64, ConfigError> {
        v.parse::<u64>()
            .ok()
            .filter(|n| check_version(*n).is_ok())
            .ok_or_else(|| {
                let shown: String = v.chars().take(40).collect();
                ConfigError::Corrupt(format!(
                    "the configuration version stored in Redis key {key} is '{shown}', not an integer from 0 to {MAX_VERSION} (fix or delete the key; a running instance then stores its configuration again)"
                ))
            })
    }

    fn parse_global(&self, raw: &str) -> Result<GlobalSettings, ConfigError> {
        serde_json::from_str(raw).map_err(|e| {
            ConfigError::Corrupt(format!(
                "the global settings stored in Redis key {} are not valid: {e} (fix them or delete the key)",
                self.keys.meta
            ))
        })
    }

    fn parse_record(&self, tenant: &str, raw: &str) -> Result<TenantDocument, ConfigError> {
        self.records_read.fetch_add(1, Ordering::Relaxed);
        serde_json::from_str(raw).map_err(|e| {
            let shown: String = tenant.chars().take(80).collect();
            ConfigError::Corrupt(format!(
                "the record of tenant '{shown}' in Redis key {} is not valid: {e} (fix or delete the field)",
                self.keys.tenants
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

    fn read_error(e: String) -> ConfigError {
        ConfigError::Persist(format!("cannot read the configuration: {e}"))
    }

    fn write_error(e: String) -> ConfigError {
        ConfigError::Persist(format!("cannot store the configuration: {e}"))
    }

    /// Runs the `DELTA` script from `stream_id` / `version`.
    async fn read_delta(&self, stream_id: &str, version: u64) -> Result<Delta, ConfigError> {
        let mut conn = self.conn.clone();
        let mut inv = self.delta.key(&self.keys.meta);
        inv.key(&self.keys.tenants)
            .key(&self.keys.stream)
            .arg(stream_id)
            .arg(version)
            .arg(DELTA_MAX_ENTRIES);
        let reply: Vec<String> = self
            .bounded(inv.invoke_async(&mut conn))
            .await
            .map_err(Self::read_error)?;
        let unexpected = || {
            ConfigError::Persist(format!(
                "unexpected reply from the configuration delta script: {:?}",
                reply.iter().take(4).collect::<Vec<_>>()
            ))
        };
        match reply.first().map(String::as_str) {
            Some("none") => Ok(Delta::Nothing),
            Some("same") => Ok(Delta::Same),
            Some("gap") => Ok(Delta::Gap),
            Some("delta") if reply.len() >= 4 && reply.len().is_multiple_of(2) => {
                let version = self.parse_version(&self.keys.meta, &reply[1])?;
                let global = match reply[3].as_str() {
                    "" => None,
                    g => Some(self.parse_global(g)?),
                };
                let records = reply[4..]
                    .chunks_exact(2)
                    .map(|pair| {
                        let record = match pair[1].as_str() {
                            "" => None,
                            raw => Some(self.parse_record(&pair[0], raw)?),
                        };
                        Ok((pair[0].clone(), record))
                    })
                    .collect::<Result<Vec<_>, ConfigError>>()?;
                Ok(Delta::Changed {
                    version,
                    stream_id: reply[2].clone(),
                    global,
                    records,
                })
            }
            _ => Err(unexpected()),
        }
    }

    /// Reads everything: where the stream ends and the global record, then the tenant records in
    /// chunks, then what changed while the chunks were read (from the stream), so the result is
    /// the configuration of one version even though writers kept writing.
    async fn full_load(&self) -> Result<Option<(ConfigDocument, Cursor)>, ConfigError> {
        for _ in 0..3 {
            let mut conn = self.conn.clone();
            let mut inv = self.head.key(&self.keys.meta);
            inv.key(&self.keys.stream);
            let head: Vec<String> = self
                .bounded(inv.invoke_async(&mut conn))
                .await
                .map_err(Self::read_error)?;
            let [version, global, stream_id] = head.as_slice() else {
                return Err(ConfigError::Persist(format!(
                    "unexpected reply from the configuration head script: {head:?}"
                )));
            };
            if version.is_empty() {
                if global.is_empty() && self.import_legacy().await? {
                    continue;
                }
                if global.is_empty() {
                    return Ok(None);
                }
            }
            let version = self.parse_version(&self.keys.meta, version)?;
            if global.is_empty() {
                return Err(ConfigError::Corrupt(format!(
                    "Redis key {} holds a version but no global settings (fix or delete the key)",
                    self.keys.meta
                )));
            }
            let mut doc = ConfigDocument {
                version,
                global: self.parse_global(global)?,
                tenants: BTreeMap::new(),
            };
            let mut cursor = 0u64;
            loop {
                let cmd = redis::cmd("HSCAN")
                    .arg(&self.keys.tenants)
                    .arg(cursor)
                    .arg("COUNT")
                    .arg(CHUNK)
                    .to_owned();
                let (next, flat): (u64, Vec<String>) = self
                    .bounded(cmd.query_async(&mut conn))
                    .await
                    .map_err(Self::read_error)?;
                for pair in flat.chunks_exact(2) {
                    let record = self.parse_record(&pair[0], &pair[1])?;
                    doc.tenants.insert(pair[0].clone(), record);
                }
                if next == 0 {
                    break;
                }
                cursor = next;
            }
            match self.read_delta(stream_id, version).await? {
                Delta::Same => {}
                Delta::Changed {
                    version,
                    stream_id,
                    global,
                    records,
                } => {
                    doc.version = version;
                    if let Some(g) = global {
                        doc.global = g;
                    }
                    for (tid, record) in records {
                        match record {
                            Some(r) => doc.tenants.insert(tid, r),
                            None => doc.tenants.remove(&tid),
                        };
                    }
                    self.full_loads.fetch_add(1, Ordering::Relaxed);
                    return Ok(Some((doc, Cursor { version, stream_id })));
                }
                // Replaced, trimmed or deleted while it was read: start again.
                Delta::Gap | Delta::Nothing => continue,
            }
            self.full_loads.fetch_add(1, Ordering::Relaxed);
            return Ok(Some((
                doc,
                Cursor {
                    version,
                    stream_id: stream_id.clone(),
                },
            )));
        }
        Err(ConfigError::Persist(
            "the stored configuration kept changing while it was loaded; retry".into(),
        ))
    }

    /// Imports a configuration stored by the previous version (one hash field holding the whole
    /// document) when the new layout holds none; true when there was one to import.
    async fn import_legacy(&self) -> Result<bool, ConfigError> {
        let mut conn = self.conn.clone();
        let cmd = redis::cmd("HMGET")
            .arg(&self.keys.legacy)
            .arg("version")
            .arg("doc")
            .to_owned();
        let (version, raw): (Option<String>, Option<String>) = self
            .bounded(cmd.query_async(&mut conn))
            .await
            .map_err(Self::read_error)?;
        let (version, raw) = match (version, raw) {
            (None, None) => return Ok(false),
            (Some(v), Some(d)) => (self.parse_version(&self.keys.legacy, &v)?, d),
            _ => {
                return Err(ConfigError::Corrupt(format!(
                "Redis key {} holds only one of the fields version and doc (fix or delete the key)",
                self.keys.legacy
            )))
            }
        };
        let doc: ConfigDocument = serde_json::from_str(&raw).map_err(|e| {
            ConfigError::Corrupt(format!(
                "the configuration stored in Redis key {} is not valid: {e} (fix or delete it)",
                self.keys.legacy
            ))
        })?;
        if doc.version != version {
            return Err(ConfigError::Corrupt(format!(
                "Redis key {}: the version field ({version}) and the document's version ({}) disagree (fix or delete the key)",
                self.keys.legacy, doc.version
            )));
        }
        // Validated before it is taken: a document this version cannot use stops start-up with
        // the key's name rather than being half imported.
        stored_snapshot(&doc)?;
        match self.save(&doc, 0).await {
            // Another instance imported it first.
            Ok(()) | Err(ConfigError::Conflict { .. }) => {}
            Err(e) => return Err(e),
        }
        tracing::info!(
            key = %self.keys.legacy,
            version = doc.version,
            tenants = doc.tenants.len(),
            "imported the configuration stored by an earlier version into per-tenant records"
        );
        self.retire_legacy(Some((version, raw))).await?;
        Ok(true)
    }

    /// Keeps the imported document under another name and deletes the old key, so it is not
    /// imported again. Two commands rather than RENAME: in a cluster the names hash to different
    /// slots. A crash between them leaves both; the next start finishes the job.
    async fn retire_legacy(&self, read: Option<(u64, String)>) -> Result<(), ConfigError> {
        let mut conn = self.conn.clone();
        let (version, raw) = match read {
            Some(r) => r,
            None => {
                let cmd = redis::cmd("HMGET")
                    .arg(&self.keys.legacy)
                    .arg("version")
                    .arg("doc")
                    .to_owned();
                let got: (Option<String>, Option<String>) = self
                    .bounded(cmd.query_async(&mut conn))
                    .await
                    .map_err(Self::read_error)?;
                match got {
                    (Some(v), Some(d)) => (self.parse_version(&self.keys.legacy, &v)?, d),
                    _ => return Ok(()),
                }
            }
        };
        let keep = redis::cmd("HSET")
            .arg(&self.keys.imported)
            .arg("version")
            .arg(version)
            .arg("doc")
            .arg(raw)
            .to_owned();
        self.bounded(keep.query_async::<()>(&mut conn))
            .await
            .map_err(Self::write_error)?;
        let del = redis::cmd("DEL").arg(&self.keys.legacy).to_owned();
        self.bounded(del.query_async::<()>(&mut conn))
            .await
            .map_err(Self::write_error)
    }

    /// Writes `records` (tenant id → JSON, empty = remove) into a fresh staging hash in chunks;
    /// the staging key, or `None` when there is nothing to stage.
    async fn stage(&self, records: &[(&str, String)]) -> Result<Option<String>, ConfigError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let key = format!(
            "{}:{}-{nanos}-{}",
            self.keys.staging_prefix,
            std::process::id(),
            self.staging_seq.fetch_add(1, Ordering::Relaxed)
        );
        let mut conn = self.conn.clone();
        let mut cmd = redis::cmd("HSET");
        let mut in_cmd = 0;
        let mut any = false;
        let mut records = records.iter().peekable();
        while let Some((tid, json)) = records.next() {
            if in_cmd == 0 {
                cmd = redis::cmd("HSET");
                cmd.arg(&key);
            }
            cmd.arg(*tid).arg(json.as_str());
            in_cmd += 1;
            if in_cmd == CHUNK || records.peek().is_none() {
                self.bounded(cmd.query_async::<()>(&mut conn))
                    .await
                    .map_err(Self::write_error)?;
                if !any {
                    let expire = redis::cmd("EXPIRE")
                        .arg(&key)
                        .arg(STAGING_TTL_SECONDS)
                        .to_owned();
                    self.bounded(expire.query_async::<()>(&mut conn))
                        .await
                        .map_err(Self::write_error)?;
                }
                any = true;
                in_cmd = 0;
            }
        }
        Ok(any.then_some(key))
    }

    /// Stores `records` as the whole set of tenants, with `global`, under `version`: staged in
    /// chunks, then swapped in by one O(1) script (`SAVE`) if the stored version is still
    /// `expected_version`.
    async fn replace_all(
        &self,
        records: &[(&str, String)],
        global: String,
        version: u64,
        expected_version: u64,
    ) -> Result<(), ConfigError> {
        let staging = self.stage(records).await?;
        let staging_key = staging
            .clone()
            .unwrap_or_else(|| format!("{}:none", self.keys.staging_prefix));
        let mut conn = self.conn.clone();
        let mut inv = self.save.key(&self.keys.meta);
        inv.key(&self.keys.tenants)
            .key(&self.keys.versions)
            .key(&self.keys.stream)
            .key(&staging_key)
            .arg(expected_version)
            .arg(version)
            .arg(global)
            .arg(&self.channel)
            .arg(STREAM_MAX_LEN);
        let reply: Result<Vec<String>, String> = self.bounded(inv.invoke_async(&mut conn)).await;
        let reply = match reply {
            Ok(r) => r,
            Err(e) => return Err(Self::write_error(e)),
        };
        match self.outcome(&reply) {
            Ok(_) => {
                if let Some(id) = reply.get(2) {
                    *self.cursor.lock() = Some(Cursor {
                        version,
                        stream_id: id.clone(),
                    });
                }
                Ok(())
            }
            Err(e) => {
                if let Some(key) = staging {
                    // Refused: the staged records are of no use. Best effort; they expire anyway.
                    let del = redis::cmd("UNLINK").arg(key).to_owned();
                    let _ = self.bounded(del.query_async::<()>(&mut conn)).await;
                }
                Err(e)
            }
        }
    }

    /// A script's `{status, version}` reply as the trait reports it.
    fn outcome(&self, reply: &[String]) -> Result<u64, ConfigError> {
        match reply {
            [ok, v, ..] if ok == "1" => self.parse_version(&self.keys.meta, v),
            [c, v, ..] if c == "0" => Err(ConfigError::Conflict {
                stored: self.parse_version(&self.keys.meta, v)?,
            }),
            [m, v, ..] if m == "2" => Err(ConfigError::Corrupt(format!(
                "the configuration version {v} is at its maximum ({MAX_VERSION}) and cannot be incremented; store the configuration again with a lower version"
            ))),
            _ => Err(ConfigError::Persist(format!(
                "unexpected reply from a configuration script: {reply:?}"
            ))),
        }
    }
}

fn json<T: serde::Serialize>(v: &T) -> Result<String, ConfigError> {
    serde_json::to_string(v).map_err(|e| ConfigError::Persist(e.to_string()))
}

#[async_trait]
impl ConfigBackend for RedisConfigBackend {
    async fn load(&self) -> Result<Option<ConfigDocument>, ConfigError> {
        let loaded = self.full_load().await?;
        let Some((doc, cursor)) = loaded else {
            *self.cursor.lock() = None;
            return Ok(None);
        };
        *self.cursor.lock() = Some(cursor);
        // A crash after an import but before the old key was retired leaves it behind.
        let mut conn = self.conn.clone();
        let exists = redis::cmd("EXISTS").arg(&self.keys.legacy).to_owned();
        let n: u64 = self
            .bounded(exists.query_async(&mut conn))
            .await
            .map_err(Self::read_error)?;
        if n > 0 {
            self.retire_legacy(None).await?;
        }
        Ok(Some(doc))
    }

    async fn load_onto(&self, base: &Snapshot) -> Result<Option<Snapshot>, ConfigError> {
        let cursor = self.cursor.lock().clone();
        if let Some(c) = cursor.filter(|c| c.version == base.version) {
            match self.read_delta(&c.stream_id, c.version).await? {
                Delta::Same => return Ok(Some(base.clone())),
                Delta::Changed {
                    version,
                    stream_id,
                    global,
                    records,
                } => {
                    let next = delta::apply(base, version, global, records)?;
                    self.deltas.fetch_add(1, Ordering::Relaxed);
                    *self.cursor.lock() = Some(Cursor { version, stream_id });
                    return Ok(Some(next));
                }
                Delta::Gap | Delta::Nothing => {}
            }
        }
        self.load()
            .await?
            .map(|doc| stored_snapshot(&doc))
            .transpose()
    }

    async fn save(&self, doc: &ConfigDocument, expected_version: u64) -> Result<(), ConfigError> {
        check_version(doc.version).map_err(ConfigError::Invalid)?;
        let records = doc
            .tenants
            .iter()
            .map(|(tid, t)| Ok((tid.as_str(), json(t)?)))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        self.replace_all(&records, json(&doc.global)?, doc.version, expected_version)
            .await
    }

    async fn commit(&self, commit: &Commit<'_>, expected_version: u64) -> Result<(), ConfigError> {
        self.commit_records(commit, expected_version)
            .await
            .map(|_| ())
    }

    async fn commit_records(
        &self,
        commit: &Commit<'_>,
        expected_version: u64,
    ) -> Result<u64, ConfigError> {
        check_version(commit.next.version).map_err(ConfigError::Invalid)?;
        if commit.tenants.len() > STAGED_APPLY_MAX {
            // Checked against the version only, as a staged change is; followers reload
            // everything after it either way.
            let records = commit
                .next
                .tenants
                .keys()
                .map(|t| Ok((t.as_str(), json(&commit.next.tenant_document(t))?)))
                .collect::<Result<Vec<_>, ConfigError>>()?;
            self.replace_all(
                &records,
                json(&commit.next.global)?,
                commit.next.version,
                expected_version,
            )
            .await?;
            return Ok(commit.next.version);
        }
        let global = if commit.global {
            json(&commit.next.global)?
        } else {
            String::new()
        };
        let records = commit
            .records()
            .map(|(t, doc)| Ok((t, doc.map(|d| json(&d)).transpose()?.unwrap_or_default())))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let inline = records.len() <= INLINE_MAX;
        let staging = if inline {
            None
        } else {
            self.stage(&records).await?
        };
        let staging_key = staging
            .clone()
            .unwrap_or_else(|| format!("{}:none", self.keys.staging_prefix));
        // A follower reads the records a change names; past a thousand it reloads everything.
        let named = if inline {
            records
                .iter()
                .map(|(t, _)| *t)
                .collect::<Vec<_>>()
                .join("\n")
        } else {
            "all".to_string()
        };
        let mut conn = self.conn.clone();
        let mut inv = self.commit.key(&self.keys.meta);
        inv.key(&self.keys.tenants)
            .key(&self.keys.versions)
            .key(&self.keys.stream)
            .key(&staging_key)
            .arg(expected_version)
            .arg(if commit.global { "1" } else { "0" })
            .arg(global)
            .arg(if inline { "inline" } else { "staged" })
            .arg(&self.channel)
            .arg(STREAM_MAX_LEN)
            .arg(named);
        if inline {
            for (tid, rec) in &records {
                inv.arg(*tid).arg(rec.as_str());
            }
        }
        let reply: Vec<String> = match self.bounded(inv.invoke_async(&mut conn)).await {
            Ok(r) => r,
            Err(e) => return Err(Self::write_error(e)),
        };
        match self.outcome(&reply) {
            Ok(version) => {
                let mut cursor = self.cursor.lock();
                // Only when nothing else was stored in between is our cursor still exact; else
                // the next catch-up reads the others' changes (and ours) from the stream.
                if version == expected_version + 1 {
                    if let (Some(c), Some(id)) = (cursor.as_mut(), reply.get(2)) {
                        if c.version == expected_version {
                            c.version = version;
                            c.stream_id = id.clone();
                        }
                    }
                }
                Ok(version)
            }
            Err(e) => {
                if let Some(key) = staging {
                    let del = redis::cmd("DEL").arg(key).to_owned();
                    let _ = self.bounded(del.query_async::<()>(&mut conn)).await;
                }
                Err(e)
            }
        }
    }
}
