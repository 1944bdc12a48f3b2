//! Dedup index of one stream: dedup key → offset of the record that first carried
//! it, for records younger than the window (by record timestamp).
//!
//! Owned by the writer thread only (lookups happen while assigning offsets), so it
//! needs no lock. It is not persisted separately: the keys are stored in the
//! records themselves and the open-time scan re-inserts those younger than the
//! window. Memory is bounded twice: entries expire by time and the entry count is
//! capped, evicting the oldest first.
//!
//! Every record of the hot path costs one hash of its key: the table is a
//! [`HashTable`] addressed by a hash computed once, and the insertion-order queue
//! remembers that hash and the entry's offset, so eviction finds its entry without
//! hashing or comparing the key again (offsets are unique per entry). Keys come from
//! clients, so the hasher is seeded per index (foldhash), not a fixed function an
//! attacker could aim collisions at.

use bytes::Bytes;
use foldhash::fast::RandomState;
use hashbrown::hash_table::{Entry as TableEntry, HashTable};
use std::collections::VecDeque;
use std::hash::BuildHasher;

#[derive(Debug)]
struct Entry {
    key: Bytes,
    offset: u64,
    ts: u64,
}

/// Insertion order (= timestamp order, since a stream's timestamps never go back) for
/// expiry and eviction.
#[derive(Debug)]
struct Queued {
    ts: u64,
    hash: u64,
    offset: u64,
}

#[derive(Debug)]
pub(crate) struct DedupIndex {
    window_ms: u64,
    cap: usize,
    hasher: RandomState,
    table: HashTable<Entry>,
    order: VecDeque<Queued>,
}

impl DedupIndex {
    pub(crate) fn new(window_ms: u64, cap: usize) -> Self {
        DedupIndex {
            window_ms,
            cap,
            hasher: RandomState::default(),
            table: HashTable::new(),
            order: VecDeque::new(),
        }
    }

    fn hash(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one(key)
    }

    fn enabled(&self) -> bool {
        self.cap > 0 && self.window_ms > 0
    }

    /// Offset of an earlier record with this key that is still inside the window.
    #[cfg(test)]
    pub(crate) fn lookup(&mut self, key: &[u8], now_ms: u64) -> Option<u64> {
        self.expire(now_ms);
        let hash = self.hash(key);
        self.table
            .find(hash, |e| e.key.as_ref() == key)
            .filter(|e| e.ts.saturating_add(self.window_ms) >= now_ms)
            .map(|e| e.offset)
    }

    /// Remembers `key` for the record at `offset` (replacing an older entry).
    pub(crate) fn insert(&mut self, key: Bytes, offset: u64, ts: u64) {
        if !self.enabled() {
            return;
        }
        let hash = self.hash(&key);
        self.put(hash, key, offset, ts);
    }

    /// The hot path: `lookup` then, when it finds nothing, `insert`, with one hash.
    /// Returns the offset of the earlier record when `key` is a duplicate.
    pub(crate) fn check_insert(&mut self, key: &Bytes, offset: u64, ts: u64) -> Option<u64> {
        self.expire(ts);
        if !self.enabled() {
            return None;
        }
        let hash = self.hash(key);
        let window = self.window_ms;
        if let Some(e) = self.table.find(hash, |e| e.key == *key) {
            if e.ts.saturating_add(window) >= ts {
                return Some(e.offset);
            }
        }
        self.put(hash, key.clone(), offset, ts);
        None
    }

    fn put(&mut self, hash: u64, key: Bytes, offset: u64, ts: u64) {
        let hasher = &self.hasher;
        match self
            .table
            .entry(hash, |e| e.key == key, |e| hasher.hash_one(e.key.as_ref()))
        {
            TableEntry::Occupied(mut o) => {
                // A key re-inserted later gets a newer queue entry of its own; the old
                // queue entry no longer matches the offset and evicts nothing.
                let e = o.get_mut();
                e.offset = offset;
                e.ts = ts;
            }
            TableEntry::Vacant(v) => {
                v.insert(Entry { key, offset, ts });
            }
        }
        self.order.push_back(Queued { ts, hash, offset });
        while self.table.len() > self.cap {
            if !self.pop_oldest() {
                break;
            }
        }
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some(q) = self.order.front() {
            if q.ts.saturating_add(self.window_ms) >= now_ms {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) -> bool {
        let Some(q) = self.order.pop_front() else {
            return false;
        };
        // Only remove the entry this queue entry created (offsets are unique).
        if let Ok(o) = self.table.find_entry(q.hash, |e| e.offset == q.offset) {
            o.remove();
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.table.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_by_time_and_caps_entries() {
        let mut d = DedupIndex::new(1000, 2);
        d.insert(Bytes::from_static(b"a"), 0, 100);
        assert_eq!(d.lookup(b"a", 1100), Some(0));
        assert_eq!(d.lookup(b"a", 1101), None);
        assert_eq!(d.len(), 0);
        d.insert(Bytes::from_static(b"a"), 1, 2000);
        d.insert(Bytes::from_static(b"b"), 2, 2000);
        d.insert(Bytes::from_static(b"c"), 3, 2001);
        assert_eq!(d.len(), 2);
        assert_eq!(d.lookup(b"a", 2001), None, "oldest evicted by the cap");
        assert_eq!(d.lookup(b"c", 2001), Some(3));
    }

    #[test]
    fn check_insert_finds_duplicates_and_remembers_new_keys() {
        let mut d = DedupIndex::new(1000, 10);
        let a = Bytes::from_static(b"src\0a");
        assert_eq!(d.check_insert(&a, 0, 100), None);
        assert_eq!(d.check_insert(&a, 1, 100), Some(0), "same batch");
        assert_eq!(d.check_insert(&a, 1, 1100), Some(0), "edge of the window");
        assert_eq!(d.check_insert(&a, 1, 1101), None, "expired: new again");
        assert_eq!(d.check_insert(&a, 2, 1200), Some(1));
        assert_eq!(d.len(), 1);
    }

    #[test]
    fn disabled_index_remembers_nothing() {
        for (window, cap) in [(0, 10), (1000, 0)] {
            let mut d = DedupIndex::new(window, cap);
            let a = Bytes::from_static(b"a");
            assert_eq!(d.check_insert(&a, 0, 100), None);
            assert_eq!(d.check_insert(&a, 1, 100), None);
            assert_eq!(d.len(), 0);
        }
    }

    #[test]
    fn reinserted_key_survives_expiry_of_its_old_entry() {
        // Recovery may insert a key twice (two records with the same key, the second
        // after the first one's window); expiring the first queue entry must not
        // remove the newer mapping.
        let mut d = DedupIndex::new(1000, 10);
        d.insert(Bytes::from_static(b"k"), 0, 100);
        d.insert(Bytes::from_static(b"k"), 5, 5000);
        d.insert(Bytes::from_static(b"x"), 6, 5000);
        assert_eq!(d.lookup(b"k", 5500), Some(5));
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn many_keys_with_eviction_stay_consistent() {
        let mut d = DedupIndex::new(u64::MAX, 1000);
        for i in 0..10_000u64 {
            let key = Bytes::from(format!("s\0{}", i % 3000));
            let ts = 1000 + i / 100;
            let got = d.check_insert(&key, i, ts);
            // A key repeats every 3000 records; the cap (1000) has evicted it by then.
            assert_eq!(got, None, "record {i}");
            assert!(d.len() <= 1000);
        }
        // Record 9500 carried key 500 and is among the newest 1000.
        let key = Bytes::from_static(b"s\x00500");
        assert_eq!(d.check_insert(&key, 10_000, 2000), Some(9500));
        let key = Bytes::from_static(b"s\x002999");
        assert_eq!(d.check_insert(&key, 10_001, 2000), None, "8999 was evicted");
    }
}
