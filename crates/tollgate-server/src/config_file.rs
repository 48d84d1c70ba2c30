//! `--config FILE` as the source of truth: the file is applied at start-up over whatever
//! configuration is stored, re-applied on SIGHUP and whenever its content changes on disk.
//!
//! Changes on disk are found by polling: every [`POLL`] the file is read by its path and its
//! content compared with the content last tried. Reading by path follows symlinks, so an editor's
//! write-and-rename and a Kubernetes ConfigMap's `..data` symlink swap are seen like an in-place
//! write, without the pitfalls of inotify watches on a replaced inode. The content must read the
//! same twice, [`SETTLE`] apart, before it is tried, so a file caught halfway through a
//! non-atomic write is not applied.
//!
//! The file is applied as one [`Change::ReplaceAll`]; tenant API keys the file does not list are
//! kept (see there). A file that cannot be read, parsed or validated changes nothing: its problems
//! are logged at warn and the configuration in force stays.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use tollgate_core::config::{
    parse_toml, Change, ConfigDocument, ConfigError, LimitEntry, Snapshot, TenantDocument,
};

use crate::state::AppState;

/// How often the file is read to look for a change.
pub const POLL: Duration = Duration::from_secs(1);
/// How long a changed content must stay the same before it is tried.
pub const SETTLE: Duration = Duration::from_millis(200);

/// Reads and validates a `--config` file.
pub fn read_config_file(path: &Path) -> anyhow::Result<ConfigDocument> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    parse(path, &bytes)
}

fn parse(path: &Path, bytes: &[u8]) -> anyhow::Result<ConfigDocument> {
    let text = std::str::from_utf8(bytes)
        .map_err(|e| anyhow::anyhow!("{}: not UTF-8 text: {e}", path.display()))?;
    parse_toml(path, text).map_err(|e| anyhow::anyhow!("{e}"))
}

/// What applying the file did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The configuration in force already was the file's; nothing was written.
    Unchanged { version: u64 },
    /// The file's configuration replaced the one in force.
    Replaced { version: u64, changes: Changes },
}

/// How many things a replacement changed, for the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Changes {
    pub global_changed: bool,
    pub tenants_added: usize,
    pub tenants_removed: usize,
    pub tenants_changed: usize,
    pub limits_added: usize,
    pub limits_removed: usize,
    pub limits_changed: usize,
}

/// Puts `doc` (the file's configuration) in force, unless it already is.
pub async fn apply(state: &AppState, doc: ConfigDocument) -> Result<Applied, ConfigError> {
    let before = state.engine().config_arc();
    if already_in_force(&before, &doc) {
        return Ok(Applied::Unchanged {
            version: before.version,
        });
    }
    let after = state
        .engine()
        .update_config(Change::ReplaceAll(doc))
        .await?;
    Ok(Applied::Replaced {
        version: after.version,
        changes: changes(&before.to_document(), &after.to_document()),
    })
}

/// Whether replacing `cur` by `file` would change nothing (so a restart or a SIGHUP with the same
/// file does not bump the version on every instance).
fn already_in_force(cur: &Snapshot, file: &ConfigDocument) -> bool {
    let Ok(wanted) = Snapshot::from_document(file) else {
        return false;
    };
    let mut wanted = wanted.to_document();
    let mut ours = cur.to_document();
    wanted.version = 0;
    ours.version = 0;
    // Keys the file does not list are carried over by the replacement, so they do not count as a
    // difference; a tenant that holds nothing else is then no difference either.
    for (name, t) in ours.tenants.iter_mut() {
        if wanted
            .tenants
            .get(name)
            .is_none_or(|w| w.api_keys.is_empty())
        {
            t.api_keys.clear();
        }
    }
    ours.tenants
        .retain(|name, t| wanted.tenants.contains_key(name) || *t != TenantDocument::default());
    ours == wanted
}

type LimitKey<'a> = (&'a str, Option<&'a str>, &'a str);

fn limits(doc: &ConfigDocument) -> BTreeMap<LimitKey<'_>, &LimitEntry> {
    let mut out = BTreeMap::new();
    for (tenant, t) in &doc.tenants {
        for (action, l) in &t.actions {
            out.insert((tenant.as_str(), None, action.as_str()), l);
        }
        for (client, m) in &t.clients {
            for (action, l) in m {
                out.insert((tenant.as_str(), Some(client.as_str()), action.as_str()), l);
            }
        }
    }
    out
}

/// Counts what differs between two configurations.
pub fn changes(old: &ConfigDocument, new: &ConfigDocument) -> Changes {
    let mut c = Changes {
        global_changed: old.global != new.global,
        ..Changes::default()
    };
    for (name, t) in &new.tenants {
        match old.tenants.get(name) {
            None => c.tenants_added += 1,
            Some(o) if o != t => c.tenants_changed += 1,
            Some(_) => {}
        }
    }
    c.tenants_removed = old
        .tenants
        .keys()
        .filter(|n| !new.tenants.contains_key(*n))
        .count();
    let (old_limits, new_limits) = (limits(old), limits(new));
    for (k, l) in &new_limits {
        match old_limits.get(k) {
            None => c.limits_added += 1,
            Some(o) if o != l => c.limits_changed += 1,
            Some(_) => {}
        }
    }
    c.limits_removed = old_limits
        .keys()
        .filter(|k| !new_limits.contains_key(*k))
        .count();
    c
}

/// What made the file be read again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Start,
    Sighup,
    FileChanged,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Start => "start",
            Trigger::Sighup => "sighup",
            Trigger::FileChanged => "file_changed",
        }
    }
}

/// The file's content, or why it could not be read.
type Content = Result<Vec<u8>, String>;

/// The `--config` file and the content last tried, so a change is tried once and a rejected
/// content is not retried (nor counted again) every poll.
pub struct FileWatch {
    path: PathBuf,
    last: Option<Content>,
}

impl FileWatch {
    /// Reads, validates and applies `path` at start-up. A file that cannot be used stops the
    /// start (the operator is there to see it); at runtime the configuration in force stays.
    pub async fn start(state: &AppState, path: PathBuf) -> anyhow::Result<Self> {
        let content = read(&path).await;
        if !state.engine().is_loaded() {
            // Redis was unreachable at start-up: the file's configuration is in force as the
            // placeholder, and the first poll after the stored one is loaded puts the file over it.
            content.clone().map_err(anyhow::Error::msg)?;
            tracing::info!(
                file = %path.display(),
                "the configuration store is not reachable yet; the file is in force and will replace the stored configuration once it is"
            );
            return Ok(Self { path, last: None });
        }
        let bytes = content.clone().map_err(anyhow::Error::msg)?;
        let doc = parse(&path, &bytes)?;
        let applied = apply(state, doc)
            .await
            .map_err(|e| anyhow::anyhow!("cannot apply {}: {e}", path.display()))?;
        log_applied(&path, Trigger::Start, &applied);
        Ok(Self {
            path,
            last: Some(content),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// SIGHUP: read and apply the file whatever was tried before, so a configuration that drifted
    /// from the file (another instance's write through Redis) is put back.
    pub async fn on_sighup(&mut self, state: &AppState) {
        if !state.engine().is_loaded() {
            return;
        }
        let content = read(&self.path).await;
        self.attempt(state, content, Trigger::Sighup).await;
    }

    /// A poll: apply the file if its content changed since last tried and has settled.
    pub async fn on_poll(&mut self, state: &AppState) {
        // Until the stored configuration is loaded (Redis down at start-up) there is nothing to
        // replace; `last` stays unset so the first poll after loading applies the file.
        if !state.engine().is_loaded() {
            return;
        }
        let content = read(&self.path).await;
        if self.last.as_ref() == Some(&content) {
            return;
        }
        tokio::time::sleep(SETTLE).await;
        if read(&self.path).await != content {
            // Still being written; the next poll looks again.
            return;
        }
        self.attempt(state, content, Trigger::FileChanged).await;
    }

    async fn attempt(&mut self, state: &AppState, content: Content, trigger: Trigger) {
        // The same content tried again (a SIGHUP after the poll saw it) is logged again but not
        // counted twice in the reload metric.
        let repeat = self.last.as_ref() == Some(&content);
        self.last = Some(content.clone());
        let result = match content {
            Ok(bytes) => match parse(&self.path, &bytes) {
                Ok(doc) => apply(state, doc).await.map_err(|e| {
                    if matches!(e, ConfigError::Persist(_) | ConfigError::Conflict { .. }) {
                        // The file is fine but the store could not take it: try again next poll.
                        self.last = None;
                    }
                    anyhow::anyhow!("{}: {e}", self.path.display())
                }),
                Err(e) => Err(e),
            },
            Err(e) => Err(anyhow::anyhow!(e)),
        };
        match result {
            Ok(applied) => {
                if matches!(applied, Applied::Replaced { .. }) && !repeat {
                    state.metrics().record_reload(true);
                }
                log_applied(&self.path, trigger, &applied);
            }
            Err(e) => {
                if !repeat {
                    state.metrics().record_reload(false);
                }
                tracing::warn!(
                    file = %self.path.display(),
                    trigger = %trigger.name(),
                    problems = %format!("{e:#}"),
                    "configuration reload rejected; the running configuration is unchanged"
                );
            }
        }
    }
}

async fn read(path: &Path) -> Content {
    let owned = path.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::read(&owned))
        .await
        .map_err(|e| format!("config reader task failed: {e}"))?
        .map_err(|e| format!("cannot read config file {}: {e}", path.display()))
}

fn log_applied(path: &Path, trigger: Trigger, applied: &Applied) {
    match applied {
        Applied::Unchanged { version } => tracing::info!(
            file = %path.display(),
            trigger = %trigger.name(),
            version,
            "configuration file applied: the configuration in force already matches it"
        ),
        Applied::Replaced {
            version,
            changes: c,
        } => tracing::info!(
            file = %path.display(),
            trigger = %trigger.name(),
            version,
            global_changed = c.global_changed,
            tenants_added = c.tenants_added,
            tenants_removed = c.tenants_removed,
            tenants_changed = c.tenants_changed,
            limits_added = c.limits_added,
            limits_removed = c.limits_removed,
            limits_changed = c.limits_changed,
            "configuration file applied; it replaced the configuration in force"
        ),
    }
}
