//! Applying the records that changed in Redis onto the configuration in force, so a follower's
//! cost follows the size of the change, not of the configuration.

use super::super::document::{GlobalSettings, TenantDocument};
use super::super::{join, ConfigDocument, ConfigError, Snapshot};

/// `base` with `records` (tenant id → its new record, `None` = removed) and, when given, new
/// global settings, under `version`. Records are validated as a full load would validate them.
pub(super) fn apply(
    base: &Snapshot,
    version: u64,
    global: Option<GlobalSettings>,
    records: Vec<(String, Option<TenantDocument>)>,
) -> Result<Snapshot, ConfigError> {
    let corrupt = |m: String| ConfigError::Corrupt(format!("stored configuration is invalid: {m}"));
    let mut next = base.clone();
    next.version = version;
    if let Some(g) = global {
        let p = g.problems("global.");
        if !p.is_empty() {
            return Err(corrupt(join(&p)));
        }
        next.global = g;
    }
    for (tid, record) in records {
        if let Some(old) = next.tenants.remove(tid.as_str()) {
            for kid in old.api_keys.keys() {
                next.key_owners.remove(kid);
            }
        }
        let Some(record) = record else { continue };
        // One tenant through the same validation as a whole document.
        let one = ConfigDocument {
            version,
            global: next.global,
            tenants: [(tid.clone(), record)].into_iter().collect(),
        };
        let built = Snapshot::from_document(&one).map_err(|p| corrupt(join(&p)))?;
        let Some(limits) = built.tenants.get(tid.as_str()) else {
            continue;
        };
        for kid in limits.api_keys.keys() {
            if let Some(owner) = next.key_owners.insert(kid.to_string(), tid.clone()) {
                if owner != tid {
                    return Err(corrupt(format!(
                        "tenants.{tid}.api_keys.{kid}: key id is held by more than one tenant (also '{owner}')"
                    )));
                }
            }
        }
        next.tenants.insert(tid, limits.limits().clone());
    }
    Ok(next)
}
