//! The dedup index of one stream: dedup key → offset of the first record stored with
//! it, for `dedup_window` (by record timestamp) and at most `max_keys` keys, oldest
//! evicted first.
//!
//! Kafka does not deduplicate by content, so every node keeps its own index, fed by
//! its own appends (as soon as the delivery report names the offset) and by the
//! stream's tail (keys of records other nodes stored). `pending` holds the keys this
//! node is producing right now, so a concurrent append of the same key waits for the
//! first one's offset instead of storing the record twice.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};
use tokio::sync::watch;

/// State of a key some append on this node is producing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pending {
    InFlight,
    Stored(u64),
    Failed,
}

#[derive(Debug)]
pub(crate) struct Dedup {
    window_ms: u64,
    max_keys: usize,
    map: HashMap<Bytes, (u64, u64)>,
    /// Insertion order: `(key, offset, timestamp_ms)`.
    order: VecDeque<(Bytes, u64, u64)>,
    pub(crate) pending: HashMap<Bytes, watch::Receiver<Pending>>,
}

impl Dedup {
    pub(crate) fn new(window_ms: u64, max_keys: usize) -> Self {
        Dedup {
            window_ms,
            max_keys,
            map: HashMap::new(),
            order: VecDeque::new(),
            pending: HashMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.map.len()
    }

    /// Whether a record stamped `ts` is still inside the window at `now`.
    pub(crate) fn in_window(&self, ts: u64, now: u64) -> bool {
        ts.saturating_add(self.window_ms) >= now
    }

    /// The offset stored under `key`, if it is still within the window.
    pub(crate) fn get(&mut self, key: &[u8], now: u64) -> Option<u64> {
        self.expire(now);
        match self.map.get(key) {
            Some(&(offset, ts)) if self.in_window(ts, now) => Some(offset),
            _ => None,
        }
    }

    /// Remembers `key` → `offset` unless the key is already known (the first record
    /// with a key is the original; later ones seen on the tail are duplicates that
    /// another node stored concurrently).
    pub(crate) fn insert(&mut self, key: Bytes, offset: u64, ts: u64, now: u64) {
        if !self.in_window(ts, now) {
            return;
        }
        if let Some(&(_, old_ts)) = self.map.get(&key) {
            if self.in_window(old_ts, now) {
                return;
            }
        }
        self.map.insert(key.clone(), (offset, ts));
        self.order.push_back((key, offset, ts));
        self.expire(now);
    }

    fn expire(&mut self, now: u64) {
        while let Some((key, offset, ts)) = self.order.front() {
            if self.order.len() <= self.max_keys && self.in_window(*ts, now) {
                break;
            }
            // Remove the map entry only if it is this very insertion (a key evicted by
            // age and stored again later has a newer entry further back).
            if self
                .map
                .get(key)
                .is_some_and(|&(o, t)| o == *offset && t == *ts)
            {
                self.map.remove(key);
            }
            self.order.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(s: &str) -> Bytes {
        Bytes::copy_from_slice(s.as_bytes())
    }

    #[test]
    fn first_offset_wins_within_the_window() {
        let mut d = Dedup::new(1000, 10);
        d.insert(k("a"), 5, 100, 100);
        d.insert(k("a"), 9, 150, 150);
        assert_eq!(d.get(b"a", 200), Some(5));
        assert_eq!(d.get(b"b", 200), None);
    }

    #[test]
    fn keys_expire_by_timestamp() {
        let mut d = Dedup::new(1000, 10);
        d.insert(k("a"), 1, 100, 100);
        assert_eq!(d.get(b"a", 1100), Some(1));
        assert_eq!(d.get(b"a", 1101), None);
        assert_eq!(d.len(), 0);
        // Re-stored after expiry: the new offset is the original now.
        d.insert(k("a"), 7, 1200, 1200);
        assert_eq!(d.get(b"a", 1200), Some(7));
    }

    #[test]
    fn old_records_from_the_tail_are_not_indexed() {
        let mut d = Dedup::new(1000, 10);
        d.insert(k("a"), 1, 0, 5000);
        assert_eq!(d.get(b"a", 5000), None);
    }

    #[test]
    fn the_cap_evicts_oldest_first() {
        let mut d = Dedup::new(1_000_000, 3);
        for (i, key) in ["a", "b", "c", "d"].iter().enumerate() {
            d.insert(k(key), i as u64, 10, 10);
        }
        assert_eq!(d.len(), 3);
        assert_eq!(d.get(b"a", 10), None);
        assert_eq!(d.get(b"d", 10), Some(3));
    }
}
