//! The snapshot's tenants: a persistent hash map that every decision looks its tenant up in, and a
//! persistent ordered map of the same entries for paging and export in id order.
//!
//! Both are structurally shared (a clone shares every node; a change copies only its path), so
//! publishing a snapshot after a one-tenant change stays O(log n). The ordered map alone made a
//! lookup O(log n) string comparisons, each a cache miss among a million tenants (~5 µs); the hash
//! map finds a tenant with one hash and a few node hops whatever their number. The two maps are
//! private and changed only together here, so they cannot disagree.

use std::ops::{Bound, Index};
use std::sync::Arc;

use super::snapshot::TenantLimits;

type Ordered = imbl::OrdMap<String, Arc<TenantLimits>>;
type Hashed = imbl::GenericHashMap<
    String,
    Arc<TenantLimits>,
    foldhash::fast::RandomState,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// Tenant id → its limits; lookups by hash, iteration in id order.
#[derive(Clone, Default)]
pub struct TenantMap {
    ordered: Ordered,
    index: Hashed,
}

impl TenantMap {
    /// The tenant's limits, by hash: the decision path's lookup.
    #[inline]
    pub fn get(&self, tenant: &str) -> Option<&Arc<TenantLimits>> {
        self.index.get(tenant)
    }

    pub fn contains_key(&self, tenant: &str) -> bool {
        self.index.contains_key(tenant)
    }

    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ordered.is_empty()
    }

    pub fn insert(
        &mut self,
        tenant: String,
        limits: Arc<TenantLimits>,
    ) -> Option<Arc<TenantLimits>> {
        self.index.insert(tenant.clone(), limits.clone());
        self.ordered.insert(tenant, limits)
    }

    pub fn remove(&mut self, tenant: &str) -> Option<Arc<TenantLimits>> {
        self.index.remove(tenant);
        self.ordered.remove(tenant)
    }

    /// Every tenant in id order.
    pub fn iter(
        &self,
    ) -> imbl::ordmap::Iter<'_, String, Arc<TenantLimits>, imbl::shared_ptr::DefaultSharedPtr> {
        self.ordered.iter()
    }

    /// Tenant ids in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> + '_ {
        self.ordered.keys()
    }

    /// Tenants after `start` in id order.
    pub fn range_from<'a>(
        &'a self,
        start: Bound<&str>,
    ) -> impl Iterator<Item = (&'a String, &'a Arc<TenantLimits>)> + 'a {
        self.ordered.range::<_, str>((start, Bound::Unbounded))
    }
}

impl PartialEq for TenantMap {
    fn eq(&self, other: &Self) -> bool {
        self.ordered == other.ordered
    }
}

impl std::fmt::Debug for TenantMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.ordered.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a TenantMap {
    type Item = (&'a String, &'a Arc<TenantLimits>);
    type IntoIter =
        imbl::ordmap::Iter<'a, String, Arc<TenantLimits>, imbl::shared_ptr::DefaultSharedPtr>;

    fn into_iter(self) -> Self::IntoIter {
        self.ordered.iter()
    }
}

impl Index<&str> for TenantMap {
    type Output = Arc<TenantLimits>;

    /// Panics when the tenant is absent, like a map's index; for tests and known-present ids.
    fn index(&self, tenant: &str) -> &Self::Output {
        match self.index.get(tenant) {
            Some(t) => t,
            None => panic!("no tenant {tenant:?} in the configuration"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(weight: u32) -> Arc<TenantLimits> {
        Arc::new(TenantLimits {
            weight,
            ..Default::default()
        })
    }

    #[test]
    fn both_views_follow_every_change() {
        let mut m = TenantMap::default();
        for (i, id) in ["b", "a", "c"].into_iter().enumerate() {
            assert!(m.insert(id.to_string(), limits(i as u32 + 1)).is_none());
        }
        let before = m.clone();
        assert_eq!(m.insert("a".into(), limits(9)).map(|t| t.weight), Some(2));
        assert_eq!(m.get("a").map(|t| t.weight), Some(9));
        assert_eq!(m.remove("b").map(|t| t.weight), Some(1));
        assert!(m.get("b").is_none() && !m.contains_key("b"));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "c"]);
        assert_eq!(m.len(), 2);
        let after_a: Vec<_> = m.range_from(Bound::Excluded("a")).map(|(k, _)| k).collect();
        assert_eq!(after_a, ["c"]);
        // The clone taken before shares nothing that changed.
        assert_eq!(before.get("a").map(|t| t.weight), Some(2));
        assert_eq!(before.get("b").map(|t| t.weight), Some(1));
        assert_ne!(before, m);
    }
}
