//! The snapshot's tenants: a persistent hash map that every decision looks its tenant up in, and a
//! persistent ordered set of the same entries for paging and export in id order.
//!
//! Both are structurally shared (a clone shares every node; a change copies only its path), so
//! publishing a snapshot after a one-tenant change stays O(log n). The ordered set alone made a
//! lookup O(log n) string comparisons, each a cache miss among a million tenants (~5 µs); the hash
//! map finds a tenant with one hash and a few node hops whatever their number.
//!
//! Both hold the same [`Tenant`], one pointer to one allocation with the id and the limits: the
//! hash map's nodes have a slot per possible child whether used or not, so what a slot holds is
//! paid several times over (with an id string and an `Arc` per slot they cost 135 bytes a tenant;
//! with one pointer, a third of that), and the id is stored once. The two are private and changed
//! only together here, so they cannot disagree.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher};
use std::ops::{Bound, Deref, Index};
use std::sync::Arc;

use super::snapshot::TenantLimits;

type Ordered = imbl::OrdSet<Tenant>;
type Hashed = imbl::GenericHashMap<
    Tenant,
    (),
    foldhash::fast::RandomState,
    imbl::shared_ptr::DefaultSharedPtr,
>;

/// One configured tenant: its id and its limits (which it dereferences to). Compared, ordered and
/// hashed by id alone, so the maps find it by `&str`.
#[derive(Clone)]
pub struct Tenant(Arc<Entry>);

struct Entry {
    id: String,
    limits: TenantLimits,
}

impl Tenant {
    pub fn new(id: String, limits: TenantLimits) -> Self {
        Self(Arc::new(Entry { id, limits }))
    }

    pub fn id(&self) -> &String {
        &self.0.id
    }

    pub fn limits(&self) -> &TenantLimits {
        &self.0.limits
    }
}

impl Deref for Tenant {
    type Target = TenantLimits;

    fn deref(&self) -> &TenantLimits {
        &self.0.limits
    }
}

impl Borrow<str> for Tenant {
    fn borrow(&self) -> &str {
        &self.0.id
    }
}

impl Hash for Tenant {
    // The same hash as the id's `str`, as `Borrow<str>` requires.
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.0.id.as_str().hash(state)
    }
}

impl PartialEq for Tenant {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}

impl Eq for Tenant {}

impl PartialOrd for Tenant {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Tenant {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.id.as_str().cmp(other.0.id.as_str())
    }
}

impl std::fmt::Debug for Tenant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.limits.fmt(f)
    }
}

fn pair(t: &Tenant) -> (&String, &Tenant) {
    (t.id(), t)
}

type PairIter<'a, I> = std::iter::Map<I, fn(&'a Tenant) -> (&'a String, &'a Tenant)>;

/// Tenant id → its limits; lookups by hash, iteration in id order.
#[derive(Clone, Default)]
pub struct TenantMap {
    ordered: Ordered,
    index: Hashed,
}

impl TenantMap {
    /// The tenant's limits, by hash: the decision path's lookup.
    #[inline]
    pub fn get(&self, tenant: &str) -> Option<&Tenant> {
        self.index.get_key_value(tenant).map(|(t, ())| t)
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

    /// Sets `tenant`'s limits, returning the entry it replaces.
    pub fn insert(&mut self, tenant: String, limits: TenantLimits) -> Option<Tenant> {
        let t = Tenant::new(tenant, limits);
        self.index.insert(t.clone(), ());
        self.ordered.insert(t)
    }

    pub fn remove(&mut self, tenant: &str) -> Option<Tenant> {
        self.index.remove(tenant);
        self.ordered.remove(tenant)
    }

    /// Every tenant in id order.
    pub fn iter(
        &self,
    ) -> PairIter<'_, imbl::ordset::Iter<'_, Tenant, imbl::shared_ptr::DefaultSharedPtr>> {
        self.ordered
            .iter()
            .map(pair as fn(&Tenant) -> (&String, &Tenant))
    }

    /// Tenant ids in order.
    pub fn keys(&self) -> impl Iterator<Item = &String> + '_ {
        self.ordered.iter().map(Tenant::id)
    }

    /// Tenants after `start` in id order.
    pub fn range_from<'a>(
        &'a self,
        start: Bound<&str>,
    ) -> impl Iterator<Item = (&'a String, &'a Tenant)> + 'a {
        self.ordered
            .range::<_, str>((start, Bound::Unbounded))
            .map(pair)
    }
}

impl PartialEq for TenantMap {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self.ordered.iter().zip(other.ordered.iter()).all(|(a, b)| {
                Arc::ptr_eq(&a.0, &b.0) || (a.id() == b.id() && a.limits() == b.limits())
            })
    }
}

impl std::fmt::Debug for TenantMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<'a> IntoIterator for &'a TenantMap {
    type Item = (&'a String, &'a Tenant);
    type IntoIter =
        PairIter<'a, imbl::ordset::Iter<'a, Tenant, imbl::shared_ptr::DefaultSharedPtr>>;

    fn into_iter(self) -> Self::IntoIter {
        self.iter()
    }
}

impl Index<&str> for TenantMap {
    type Output = Tenant;

    /// Panics when the tenant is absent, like a map's index; for tests and known-present ids.
    fn index(&self, tenant: &str) -> &Self::Output {
        match self.get(tenant) {
            Some(t) => t,
            None => panic!("no tenant {tenant:?} in the configuration"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(weight: u32) -> TenantLimits {
        TenantLimits {
            weight,
            ..Default::default()
        }
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
        // The entry a lookup finds is the one inserted last, in both views.
        assert_eq!(m.iter().map(|(_, t)| t.weight).collect::<Vec<_>>(), [9, 3]);
        assert_eq!(m["c"].id(), "c");
        // The clone taken before shares nothing that changed.
        assert_eq!(before.get("a").map(|t| t.weight), Some(2));
        assert_eq!(before.get("b").map(|t| t.weight), Some(1));
        assert_ne!(before, m);
    }
}
