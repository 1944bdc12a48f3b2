//! Dedup index of one stream: dedup key → offset of the record that first carried
//! it, for records younger than the window (by record timestamp).
//!
//! Owned by the writer thread only (lookups happen while assigning offsets), so it
//! needs no lock. It is not persisted separately: the keys are stored in the
//! records themselves and the open-time scan re-inserts those younger than the
//! window. Memory is bounded twice: entries expire by time and the entry count is
//! capped, evicting the oldest first.

use bytes::Bytes;
use std::collections::{HashMap, VecDeque};

#[derive(Debug)]
pub(crate) struct DedupIndex {
    window_ms: u64,
    cap: usize,
    map: HashMap<Bytes, (u64, u64)>,
    /// Insertion order (= timestamp order, since a stream's timestamps never go
    /// back) for expiry and eviction: `(timestamp, key, offset)`.
    order: VecDeque<(u64, Bytes, u64)>,
}

impl DedupIndex {
    pub(crate) fn new(window_ms: u64, cap: usize) -> Self {
        DedupIndex {
            window_ms,
            cap,
            map: HashMap::new(),
            order: VecDeque::new(),
        }
    }

    /// Offset of an earlier record with this key that is still inside the window.
    pub(crate) fn lookup(&mut self, key: &[u8], now_ms: u64) -> Option<u64> {
        self.expire(now_ms);
        self.map
            .get(key)
            .filter(|&&(_, ts)| ts.saturating_add(self.window_ms) >= now_ms)
            .map(|&(off, _)| off)
    }

    pub(crate) fn insert(&mut self, key: Bytes, offset: u64, ts: u64) {
        if self.cap == 0 || self.window_ms == 0 {
            return;
        }
        self.map.insert(key.clone(), (offset, ts));
        self.order.push_back((ts, key, offset));
        while self.map.len() > self.cap {
            if !self.pop_oldest() {
                break;
            }
        }
    }

    fn expire(&mut self, now_ms: u64) {
        while let Some((ts, _, _)) = self.order.front() {
            if ts.saturating_add(self.window_ms) >= now_ms {
                break;
            }
            self.pop_oldest();
        }
    }

    fn pop_oldest(&mut self) -> bool {
        let Some((_, key, offset)) = self.order.pop_front() else {
            return false;
        };
        // Only remove the map entry this queue entry created; a key re-inserted later
        // has a newer queue entry of its own.
        if self.map.get(&key).is_some_and(|&(o, _)| o == offset) {
            self.map.remove(&key);
        }
        true
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.map.len()
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
}
