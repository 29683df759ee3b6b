//! A bounded, least-recently-used map, and the repository's cache of folded certificate
//! streams built on it.
//!
//! A stream is append-only and its events never change, so the state folded from its
//! events `1..=v` is the same forever: a cached fold at version `v` only ever needs the
//! events after `v`. The cache therefore never holds a wrong state, only a possibly old
//! one; whoever decides on it appends with the cached version as the expected one, and
//! the log's optimistic concurrency check refuses the append if the stream moved on (see
//! [`crate::repository`]).

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;

use crate::repository::Loaded;

/// How many certificate streams a repository keeps folded by default. A certificate's
/// state is a few kilobytes (its PEM and chain are the bulk), so the default bounds the
/// cache at about ten megabytes per repository.
pub const DEFAULT_CAPACITY: usize = 2048;

/// A map of at most `capacity` entries that forgets the least recently used one first.
/// `capacity` 0 keeps nothing.
#[derive(Debug)]
pub struct BoundedMap<V> {
    capacity: usize,
    tick: u64,
    entries: HashMap<String, (V, u64)>,
    /// Last use → key, oldest first.
    order: BTreeMap<u64, String>,
}

impl<V> BoundedMap<V> {
    /// An empty map of at most `capacity` entries.
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            tick: 0,
            entries: HashMap::new(),
            order: BTreeMap::new(),
        }
    }

    /// The most entries kept.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Entries held.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn next_tick(&mut self) -> u64 {
        self.tick += 1;
        self.tick
    }

    /// The entry of `key`, marked as just used.
    pub fn get(&mut self, key: &str) -> Option<&V> {
        let tick = self.next_tick();
        let (_, used) = self.entries.get_mut(key)?;
        self.order.remove(used);
        *used = tick;
        self.order.insert(tick, key.to_owned());
        self.entries.get(key).map(|(value, _)| value)
    }

    /// Stores `value` under `key` (replacing what was there), forgetting the least
    /// recently used entries beyond the capacity.
    pub fn insert(&mut self, key: &str, value: V) {
        if self.capacity == 0 {
            return;
        }
        let tick = self.next_tick();
        if let Some((_, used)) = self.entries.insert(key.to_owned(), (value, tick)) {
            self.order.remove(&used);
        }
        self.order.insert(tick, key.to_owned());
        while self.entries.len() > self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else {
                break;
            };
            self.entries.remove(&oldest);
        }
    }

    /// Forgets `key`; returns what was stored.
    pub fn remove(&mut self, key: &str) -> Option<V> {
        let (value, used) = self.entries.remove(key)?;
        self.order.remove(&used);
        Some(value)
    }
}

/// Folded certificate streams by certificate id: [`Loaded`] states, each at its stream
/// version. Shared by the clones of a repository.
#[derive(Debug)]
pub struct StreamCache {
    map: Mutex<BoundedMap<Loaded>>,
}

impl StreamCache {
    /// A cache of at most `capacity` streams (0: caching off).
    pub fn new(capacity: usize) -> Self {
        Self {
            map: Mutex::new(BoundedMap::new(capacity)),
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BoundedMap<Loaded>> {
        // The map is consistent after every statement: a panic elsewhere cannot leave it
        // half-updated.
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The cached fold of a certificate, if any.
    pub fn get(&self, certificate_id: &str) -> Option<Loaded> {
        self.map().get(certificate_id).cloned()
    }

    /// Stores a fold, unless the cache already holds a newer one (two readers may finish
    /// out of order; the newer fold wins). A stream that does not exist is not cached.
    pub fn put(&self, certificate_id: &str, loaded: &Loaded) {
        if !loaded.state.exists() {
            return;
        }
        let mut map = self.map();
        if map
            .get(certificate_id)
            .is_some_and(|cached| cached.state.version > loaded.state.version)
        {
            return;
        }
        map.insert(certificate_id, loaded.clone());
    }

    /// Forgets a certificate (after a conflicting or failed append).
    pub fn forget(&self, certificate_id: &str) {
        self.map().remove(certificate_id);
    }

    /// Streams held.
    pub fn len(&self) -> usize {
        self.map().len()
    }

    /// Whether no stream is held.
    pub fn is_empty(&self) -> bool {
        self.map().is_empty()
    }

    /// The most streams held.
    pub fn capacity(&self) -> usize {
        self.map().capacity()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forgets_the_least_recently_used_beyond_the_capacity() {
        let mut map = BoundedMap::new(2);
        map.insert("a", 1);
        map.insert("b", 2);
        assert_eq!(map.get("a"), Some(&1)); // b is now the oldest
        map.insert("c", 3);
        assert_eq!(map.len(), 2);
        assert_eq!(map.get("b"), None);
        assert_eq!(map.get("a"), Some(&1));
        assert_eq!(map.get("c"), Some(&3));
        map.insert("a", 10); // replacing does not grow it
        assert_eq!(map.len(), 2);
        assert_eq!(map.get("a"), Some(&10));
        assert_eq!(map.remove("a"), Some(10));
        assert_eq!(map.len(), 1);
        assert_eq!(map.order.len(), 1);
    }

    #[test]
    fn stays_within_its_bound_under_many_keys() {
        let mut map = BoundedMap::new(100);
        for i in 0..10_000 {
            map.insert(&format!("k{i}"), i);
            if i % 3 == 0 {
                map.get("k0");
            }
        }
        assert_eq!(map.len(), 100);
        assert_eq!(map.order.len(), 100);
        // The key used all along survived; the oldest others did not.
        assert_eq!(map.get("k0"), Some(&0));
        assert_eq!(map.get("k1"), None);
        assert_eq!(map.get("k9999"), Some(&9999));
    }

    #[test]
    fn capacity_zero_keeps_nothing() {
        let mut map = BoundedMap::new(0);
        map.insert("a", 1);
        assert!(map.is_empty());
        assert_eq!(map.get("a"), None);
    }
}
