//! The small maps inside one tenant's limits (action → policy, client → its actions, key id → API
//! key): a sorted, shared slice instead of a hash map.
//!
//! A typical tenant has a handful of actions, few client overrides and no API keys, and a million
//! of them are configured: an empty hash map is 48 bytes and a one-entry one allocates a table for
//! four, where an empty `SortedMap` is one word-pair and allocates nothing. The slice is behind an
//! `Arc` so tenants configured with identical limits share one (see [`SortedMap::shared`]). A
//! lookup is a binary search over the tenant's own few entries: allocation-free and independent of
//! how many tenants are configured. A change copies the slice (copy on write), which a change
//! already did when it cloned the tenant's hash maps.

use std::sync::Arc;

/// The entries, sorted by name; `None` when there are none, so an empty map allocates nothing.
type Entries<V> = Option<Arc<[(Arc<str>, V)]>>;

/// Name → value, sorted by name; cheap to clone (one reference count).
#[derive(Clone)]
pub struct SortedMap<V>(Entries<V>);

impl<V> Default for SortedMap<V> {
    fn default() -> Self {
        Self(None)
    }
}

impl<V> SortedMap<V> {
    fn entries(&self) -> &[(Arc<str>, V)] {
        self.0.as_deref().unwrap_or(&[])
    }

    fn find(&self, name: &str) -> Result<usize, usize> {
        self.entries().binary_search_by(|(k, _)| (**k).cmp(name))
    }

    #[inline]
    pub fn get(&self, name: &str) -> Option<&V> {
        self.find(name).ok().map(|i| &self.entries()[i].1)
    }

    pub fn contains_key(&self, name: &str) -> bool {
        self.find(name).is_ok()
    }

    pub fn len(&self) -> usize {
        self.entries().len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries().is_empty()
    }

    /// Entries in name order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &V)> + '_ {
        self.entries().iter().map(|(k, v)| (&**k, v))
    }

    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.entries().iter().map(|(k, _)| &**k)
    }

    /// The same map, sharing `self`'s slice (a reference count, no copy).
    pub fn shared(&self) -> Self {
        Self(self.0.clone())
    }

    fn from_vec(entries: Vec<(Arc<str>, V)>) -> Self {
        if entries.is_empty() {
            Self(None)
        } else {
            Self(Some(entries.into()))
        }
    }
}

impl<V: Clone> SortedMap<V> {
    /// Sets `name` to `value`, returning the value it replaces.
    pub fn insert(&mut self, name: &str, value: V) -> Option<V> {
        let mut entries = self.entries().to_vec();
        let old = match self.find(name) {
            Ok(i) => Some(std::mem::replace(&mut entries[i].1, value)),
            Err(i) => {
                entries.insert(i, (Arc::from(name), value));
                None
            }
        };
        *self = Self::from_vec(entries);
        old
    }

    /// Removes `name`, returning its value.
    pub fn remove(&mut self, name: &str) -> Option<V> {
        let i = self.find(name).ok()?;
        let mut entries = self.entries().to_vec();
        let (_, old) = entries.remove(i);
        *self = Self::from_vec(entries);
        Some(old)
    }
}

impl<'a, V> FromIterator<(&'a str, V)> for SortedMap<V> {
    /// The last value given for a name wins, as with a map's inserts.
    fn from_iter<I: IntoIterator<Item = (&'a str, V)>>(iter: I) -> Self {
        let mut entries: Vec<(Arc<str>, V)> =
            iter.into_iter().map(|(k, v)| (Arc::from(k), v)).collect();
        // Stable, so equal names keep their order and the last one can be kept.
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        let mut deduped: Vec<(Arc<str>, V)> = Vec::with_capacity(entries.len());
        for e in entries {
            match deduped.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => deduped.push(e),
            }
        }
        Self::from_vec(deduped)
    }
}

impl<V> std::ops::Index<&str> for SortedMap<V> {
    type Output = V;

    /// Panics when `name` is absent, like a map's index; for tests and known-present names.
    fn index(&self, name: &str) -> &V {
        match self.get(name) {
            Some(v) => v,
            None => panic!("no entry {name:?}"),
        }
    }
}

impl<V: PartialEq> PartialEq for SortedMap<V> {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (Some(a), Some(b)) if Arc::ptr_eq(a, b) => true,
            _ => self.entries() == other.entries(),
        }
    }
}

impl<V: std::fmt::Debug> std::fmt::Debug for SortedMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_a_map_in_name_order() {
        let mut m = SortedMap::default();
        assert!(m.is_empty() && m.get("a").is_none());
        assert_eq!(m.insert("b", 2), None);
        assert_eq!(m.insert("a", 1), None);
        assert_eq!(m.insert("c", 3), None);
        let before = m.shared();
        assert_eq!(m.insert("b", 20), Some(2));
        assert_eq!(m.get("b"), Some(&20));
        assert_eq!(m.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(m.remove("a"), Some(1));
        assert_eq!(m.remove("a"), None);
        assert_eq!(m.iter().collect::<Vec<_>>(), [("b", &20), ("c", &3)]);
        assert_eq!(m.len(), 2);
        // Copy on write: the map shared before is untouched.
        assert_eq!(before.get("b"), Some(&2));
        assert_eq!(before.len(), 3);
        assert_ne!(before, m);
        assert_eq!(m.remove("b"), Some(20));
        assert_eq!(m.remove("c"), Some(3));
        assert!(m.is_empty() && m == SortedMap::default());
    }

    #[test]
    fn from_iter_sorts_and_keeps_the_last_value_of_a_name() {
        let m: SortedMap<u32> = [("z", 1), ("a", 2), ("z", 3)].into_iter().collect();
        assert_eq!(m.iter().collect::<Vec<_>>(), [("a", &2), ("z", &3)]);
        let many: SortedMap<usize> = (0..100).map(|i| (["x", "y"][i % 2], i)).collect();
        assert_eq!(many.get("x"), Some(&98));
        assert_eq!(many.get("y"), Some(&99));
    }
}
