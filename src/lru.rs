//! A bounded map shared by threads, evicting the least recently used
//! entry: the one cache shape of the worker's runtimes (wasm modules,
//! native libraries, language-host pools, parsed descriptors).
//!
//! Reads take the read lock and touch an atomic stamp, so concurrent hits
//! never serialise; inserts take the write lock. Eviction scans for the
//! oldest stamp: O(n) for n ≤ capacity, paid only when a miss meets a full
//! map (caches of hundreds of entries, misses cost a compile or a load).
//! Values are `Arc`s, so an evicted entry stays alive for its users.

use std::borrow::Borrow;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::sync::{read, write};

struct Slot<V> {
    value: Arc<V>,
    /// Microseconds since the map was made: a total order of uses.
    last_used_us: AtomicU64,
}

pub struct LruMap<K, V> {
    entries: RwLock<HashMap<K, Slot<V>>>,
    capacity: usize,
    created: Instant,
}

impl<K: Eq + Hash + Clone, V> LruMap<K, V> {
    pub fn new(capacity: usize) -> LruMap<K, V> {
        assert!(capacity > 0, "a cache holds at least one entry");
        LruMap {
            entries: RwLock::new(HashMap::new()),
            capacity,
            created: Instant::now(),
        }
    }

    fn now_us(&self) -> u64 {
        u64::try_from(self.created.elapsed().as_micros()).unwrap_or(u64::MAX)
    }

    /// The entry for `key`, marked as just used.
    pub fn get<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let entries = read(&self.entries);
        let slot = entries.get(key)?;
        slot.last_used_us.store(self.now_us(), Ordering::Relaxed);
        Some(slot.value.clone())
    }

    /// The entry already under `key` (another thread may have been first),
    /// or `value` inserted; with the entry evicted to make room, if any.
    pub fn get_or_insert(&self, key: K, value: Arc<V>) -> (Arc<V>, Option<Arc<V>>) {
        let now_us = self.now_us();
        let mut entries = write(&self.entries);
        if let Some(slot) = entries.get(&key) {
            slot.last_used_us.store(now_us, Ordering::Relaxed);
            return (slot.value.clone(), None);
        }
        let evicted = self.make_room(&mut entries);
        entries.insert(key, self.slot(value.clone(), now_us));
        (value, evicted)
    }

    /// Puts `value` under `key`, replacing what was there (a new version
    /// of the same thing); returns the entry evicted to make room, if any.
    pub fn insert(&self, key: K, value: Arc<V>) -> Option<Arc<V>> {
        let now_us = self.now_us();
        let mut entries = write(&self.entries);
        let evicted = if entries.contains_key(&key) {
            None
        } else {
            self.make_room(&mut entries)
        };
        entries.insert(key, self.slot(value, now_us));
        debug_assert!(entries.len() <= self.capacity, "the bound holds");
        evicted
    }

    pub fn remove<Q>(&self, key: &Q) -> Option<Arc<V>>
    where
        K: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        write(&self.entries).remove(key).map(|slot| slot.value)
    }

    /// Every entry, without marking any as used.
    pub fn values(&self) -> Vec<Arc<V>> {
        read(&self.entries)
            .values()
            .map(|slot| slot.value.clone())
            .collect()
    }

    pub fn len(&self) -> usize {
        read(&self.entries).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn slot(&self, value: Arc<V>, now_us: u64) -> Slot<V> {
        Slot {
            value,
            last_used_us: AtomicU64::new(now_us),
        }
    }

    fn make_room(&self, entries: &mut HashMap<K, Slot<V>>) -> Option<Arc<V>> {
        if entries.len() < self.capacity {
            return None;
        }
        let oldest = entries
            .iter()
            .min_by_key(|(_, slot)| slot.last_used_us.load(Ordering::Relaxed))
            .map(|(key, _)| key.clone())?;
        entries.remove(&oldest).map(|slot| slot.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_least_recently_used_entry_goes_first() {
        let map: LruMap<&str, u32> = LruMap::new(2);
        assert!(map.insert("a", Arc::new(1)).is_none());
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert!(map.insert("b", Arc::new(2)).is_none());
        std::thread::sleep(std::time::Duration::from_millis(1));
        assert_eq!(map.get("a").as_deref(), Some(&1), "a is now the newest");
        let evicted = map.insert("c", Arc::new(3));
        assert_eq!(evicted.as_deref(), Some(&2), "b was the oldest");
        assert_eq!(map.len(), 2);
        assert!(map.get("b").is_none());
    }

    #[test]
    fn get_or_insert_keeps_the_first_and_insert_replaces() {
        let map: LruMap<&str, u32> = LruMap::new(4);
        let (first, _) = map.get_or_insert("k", Arc::new(1));
        let (second, evicted) = map.get_or_insert("k", Arc::new(2));
        assert_eq!((*first, *second), (1, 1));
        assert!(evicted.is_none());
        assert!(
            map.insert("k", Arc::new(3)).is_none(),
            "a replace evicts nothing"
        );
        assert_eq!(map.get("k").as_deref(), Some(&3));
        assert_eq!(map.remove("k").as_deref(), Some(&3));
        assert!(map.is_empty());
    }
}
