//! The validated, lookup-ready form of a configuration. Decisions read a `Snapshot` through an
//! `ArcSwap` without taking any lock; a change builds a new snapshot and swaps it in.

use std::collections::BTreeMap;

use super::document::{
    max_keys_problem, new_keys_problem, request_window_problem, weight_problem, ConfigDocument,
    ConfigProblem, GlobalSettings, LimitEntry, TenantDocument,
};
use super::policy_spec;
use super::sorted_map::SortedMap;
use super::tenant_map::TenantMap;
use crate::credentials::{self, ApiKeyRecord};
use crate::limit::{validate_id, Limit, LimitSource};
use crate::policy::Policy;

/// One tenant's limits, ready for lookup. Kept small: a million of them may be configured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TenantLimits {
    pub weight: u32,
    /// action → policy; tenants built from identical documents share one (see `Interner`).
    pub actions: SortedMap<Policy>,
    /// client id → action → policy.
    pub clients: SortedMap<SortedMap<Policy>>,
    /// Overrides of the global bounds on state; `None` = the global value.
    pub max_keys: Option<u64>,
    pub new_keys_per_second: Option<u64>,
    pub max_request_window_seconds: Option<u64>,
    /// key id → the tenant's API key (hashed).
    pub api_keys: SortedMap<ApiKeyRecord>,
}

impl TenantLimits {
    /// True when the tenant carries nothing beyond defaults and can be forgotten.
    pub fn is_default(&self) -> bool {
        self.weight == 1
            && self.actions.is_empty()
            && self.clients.is_empty()
            && self.max_keys.is_none()
            && self.new_keys_per_second.is_none()
            && self.max_request_window_seconds.is_none()
            && self.api_keys.is_empty()
    }
}

/// A persistent ordered map: a clone shares every node, and a change copies only the O(log n)
/// nodes on its path, so publishing a new snapshot after a one-tenant change does not copy the
/// other tenants. Ordered by id, which gives paging a stable order.
pub type SharedMap<V> = imbl::OrdMap<String, V>;

/// An immutable, validated configuration.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Snapshot {
    pub version: u64,
    pub global: GlobalSettings,
    /// Tenants are shared entries, so a change to one tenant copies pointers, not every tenant.
    pub tenants: TenantMap,
    /// key id → the tenant holding that key, so a presented key is found without a scan.
    pub key_owners: SharedMap<String>,
}

impl Snapshot {
    /// The limit for a decision: client-specific, else the tenant's action limit, else the one in
    /// the request, else none. For a policy of several limits, its first limit (the decision
    /// path uses [`Snapshot::resolve_in`], which gives the whole policy).
    #[inline]
    pub fn resolve(
        &self,
        tenant: &str,
        client: &str,
        action: &str,
        requested: Option<Limit>,
    ) -> Option<(Limit, LimitSource)> {
        Self::resolve_in(
            self.tenants.get(tenant).map(|t| t.limits()),
            client,
            action,
            requested,
        )
        .map(|(p, s)| (p.limits[0].limit, s))
    }

    /// `resolve` for a tenant already looked up, so the decision path finds the tenant's limits
    /// and its weight with one hash lookup.
    #[inline]
    pub fn resolve_in(
        tenant: Option<&TenantLimits>,
        client: &str,
        action: &str,
        requested: Option<Limit>,
    ) -> Option<(Policy, LimitSource)> {
        if let Some(t) = tenant {
            if let Some(p) = t.clients.get(client).and_then(|c| c.get(action)) {
                return Some((p.clone(), LimitSource::Client));
            }
            if let Some(p) = t.actions.get(action) {
                return Some((p.clone(), LimitSource::Action));
            }
        }
        requested.map(|l| (Policy::single(l), LimitSource::Request))
    }

    /// Validates a document and builds a snapshot, or lists every problem found.
    pub fn from_document(doc: &ConfigDocument) -> Result<Self, Vec<ConfigProblem>> {
        let mut b = SnapshotBuilder::new(&doc.global);
        for (tid, tdoc) in &doc.tenants {
            b.add(tid, tdoc);
        }
        b.finish(doc.version, doc.global)
    }

    /// The document form, with keys sorted so files and responses are stable.
    pub fn to_document(&self) -> ConfigDocument {
        let spec = policy_spec::entry;
        let tenants = self
            .tenants
            .iter()
            .map(|(tid, t)| (tid.clone(), tenant_document(t, spec)))
            .collect();
        ConfigDocument {
            version: self.version,
            global: self.global,
            tenants,
        }
    }

    /// Up to `limit` configured tenants after `after` (exclusive) in id order, with the id to pass
    /// as `after` for the next page (`None` when this page reaches the end). O(log n + limit).
    pub fn page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> (Vec<(&String, &TenantLimits)>, Option<String>) {
        use std::ops::Bound;
        let start = after.map_or(Bound::Unbounded, Bound::Excluded);
        let mut it = self.tenants.range_from(start);
        let page: Vec<_> = it
            .by_ref()
            .take(limit)
            .map(|(k, v)| (k, v.limits()))
            .collect();
        let next = match (page.last(), it.next()) {
            (Some((last, _)), Some(_)) => Some((*last).clone()),
            _ => None,
        };
        (page, next)
    }

    /// One tenant's document; defaults when the tenant has no configuration.
    pub fn tenant_document(&self, tenant: &str) -> TenantDocument {
        let spec = policy_spec::entry;
        self.tenants
            .get(tenant)
            .map(|t| tenant_document(t, spec))
            .unwrap_or_default()
    }
}

/// Builds a [`Snapshot`] one tenant at a time, validating as it goes, so a store can load its
/// records one by one without first holding the whole document (whose many small allocations,
/// freed after the snapshot's were made among them, would leave the heap fragmented).
pub struct SnapshotBuilder {
    problems: Vec<ConfigProblem>,
    tenants: TenantMap,
    key_owners: SharedMap<String>,
    interner: Interner,
}

impl SnapshotBuilder {
    pub fn new(global: &GlobalSettings) -> Self {
        Self {
            problems: global.problems("global."),
            tenants: TenantMap::default(),
            key_owners: SharedMap::default(),
            interner: Interner::default(),
        }
    }

    /// Adds one tenant's document. Tenants may come in any order, each id once.
    pub fn add(&mut self, tid: &str, tdoc: &TenantDocument) {
        let base = format!("tenants.{tid}");
        if let Err(e) = validate_id("tenant_id", tid) {
            self.problems.push(ConfigProblem {
                path: base.clone(),
                message: e.0,
            });
        }
        if let Some(m) = weight_problem(tdoc.weight) {
            self.problems.push(ConfigProblem {
                path: format!("{base}.weight"),
                message: m,
            });
        }
        for (field, value, check) in [
            (
                "max_keys",
                tdoc.max_keys,
                max_keys_problem as fn(u64) -> Option<String>,
            ),
            (
                "new_keys_per_second",
                tdoc.new_keys_per_second,
                new_keys_problem,
            ),
            (
                "max_request_window_seconds",
                tdoc.max_request_window_seconds,
                request_window_problem,
            ),
        ] {
            if let Some(m) = value.and_then(check) {
                self.problems.push(ConfigProblem {
                    path: format!("{base}.{field}"),
                    message: m,
                });
            }
        }
        let mut t = TenantLimits {
            weight: tdoc.weight,
            max_keys: tdoc.max_keys,
            new_keys_per_second: tdoc.new_keys_per_second,
            max_request_window_seconds: tdoc.max_request_window_seconds,
            ..Default::default()
        };
        if let Some(shared) = self.interner.get(&tdoc.actions) {
            t.actions = shared;
        } else {
            let before = self.problems.len();
            let mut actions = Vec::with_capacity(tdoc.actions.len());
            for (aid, spec) in &tdoc.actions {
                let path = format!("{base}.actions.{aid}");
                if let Some(l) = check_limit(&path, "action_type", aid, spec, &mut self.problems) {
                    actions.push((aid.as_str(), l));
                }
            }
            t.actions = actions.into_iter().collect();
            if self.problems.len() == before {
                self.interner.put(&tdoc.actions, &t.actions);
            }
        }
        let mut clients = Vec::with_capacity(tdoc.clients.len());
        for (cid, actions) in &tdoc.clients {
            let cpath = format!("{base}.clients.{cid}");
            if let Err(e) = validate_id("client_id", cid) {
                self.problems.push(ConfigProblem {
                    path: cpath.clone(),
                    message: e.0,
                });
            }
            let mut m = Vec::with_capacity(actions.len());
            for (aid, spec) in actions {
                let path = format!("{cpath}.{aid}");
                if let Some(l) = check_limit(&path, "action_type", aid, spec, &mut self.problems) {
                    m.push((aid.as_str(), l));
                }
            }
            if !m.is_empty() {
                clients.push((cid.as_str(), m.into_iter().collect()));
            }
        }
        t.clients = clients.into_iter().collect();
        let mut api_keys = Vec::with_capacity(tdoc.api_keys.len());
        for (kid, record) in &tdoc.api_keys {
            let path = format!("{base}.api_keys.{kid}");
            if let Some(m) = credentials::record_problem(kid, record) {
                self.problems.push(ConfigProblem { path, message: m });
            } else if self
                .key_owners
                .insert(kid.clone(), tid.to_string())
                .is_some()
            {
                self.problems.push(ConfigProblem {
                    path,
                    message: "key id is held by more than one tenant".into(),
                });
            } else {
                api_keys.push((kid.as_str(), record.clone()));
            }
        }
        t.api_keys = api_keys.into_iter().collect();
        if !t.is_default() {
            self.tenants.insert(tid.to_string(), t);
        }
    }

    /// The snapshot, or every problem found in the tenants added and the global settings.
    pub fn finish(
        self,
        version: u64,
        global: GlobalSettings,
    ) -> Result<Snapshot, Vec<ConfigProblem>> {
        if self.problems.is_empty() {
            Ok(Snapshot {
                version,
                global,
                tenants: self.tenants,
                key_owners: self.key_owners,
            })
        } else {
            Err(self.problems)
        }
    }
}

fn tenant_document(t: &TenantLimits, spec: impl Fn(&Policy) -> LimitEntry) -> TenantDocument {
    TenantDocument {
        weight: t.weight,
        actions: t
            .actions
            .iter()
            .map(|(a, l)| (a.to_string(), spec(l)))
            .collect(),
        clients: t
            .clients
            .iter()
            .map(|(c, m)| {
                (
                    c.to_string(),
                    m.iter().map(|(a, l)| (a.to_string(), spec(l))).collect(),
                )
            })
            .collect(),
        max_keys: t.max_keys,
        new_keys_per_second: t.new_keys_per_second,
        max_request_window_seconds: t.max_request_window_seconds,
        api_keys: t
            .api_keys
            .iter()
            .map(|(k, r)| (k.to_string(), r.clone()))
            .collect(),
    }
}

/// Shares the action maps of tenants whose documents list the same actions with the same limits
/// (a bulk import of many tenants on a few plans), so each distinct map is built and held once.
/// Remembers the last few distinct ones: tenants on one plan tend to come together.
#[derive(Default)]
struct Interner {
    recent: Vec<(BTreeMap<String, LimitEntry>, SortedMap<Policy>)>,
}

impl Interner {
    const KEEP: usize = 8;

    fn get(&mut self, actions: &BTreeMap<String, LimitEntry>) -> Option<SortedMap<Policy>> {
        if actions.is_empty() {
            return Some(SortedMap::default());
        }
        let i = self.recent.iter().position(|(d, _)| d == actions)?;
        let hit = self.recent.remove(i);
        let map = hit.1.shared();
        self.recent.push(hit);
        Some(map)
    }

    fn put(&mut self, actions: &BTreeMap<String, LimitEntry>, map: &SortedMap<Policy>) {
        if self.recent.len() == Self::KEEP {
            self.recent.remove(0);
        }
        self.recent.push((actions.clone(), map.shared()));
    }
}

fn check_limit(
    path: &str,
    id_field: &str,
    id: &str,
    spec: &LimitEntry,
    problems: &mut Vec<ConfigProblem>,
) -> Option<Policy> {
    if let Err(e) = validate_id(id_field, id) {
        problems.push(ConfigProblem {
            path: path.to_string(),
            message: e.0,
        });
        return None;
    }
    match policy_spec::policy(spec) {
        Ok(p) => Some(p),
        Err(ps) => {
            problems.extend(ps.into_iter().map(|(sub, message)| ConfigProblem {
                path: format!("{path}{sub}"),
                message,
            }));
            None
        }
    }
}
