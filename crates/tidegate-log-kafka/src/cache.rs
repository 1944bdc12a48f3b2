//! The tail cache of one stream: the newest records the tail task has seen, covering
//! a contiguous offset range `[start, end)` of the topic (every record of the topic
//! in that range is here; offsets missing in between do not exist in Kafka either).
//! Reads inside the range are answered without a broker round trip.
//!
//! Bytes are accounted globally (all streams share `tail_cache_bytes`); a stream that
//! pushes evicts its own oldest records while the total is over budget.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use tidegate_log::Record;

/// Per-record bookkeeping overhead counted on top of the payload.
const RECORD_OVERHEAD: usize = 64;

#[derive(Debug)]
pub(crate) struct TailCache {
    records: VecDeque<Record>,
    start: u64,
    end: u64,
    bytes: usize,
}

fn cost(r: &Record) -> usize {
    r.payload.len() + RECORD_OVERHEAD
}

impl TailCache {
    /// An empty cache whose range begins (and ends) at `pos`.
    pub(crate) fn new(pos: u64) -> Self {
        TailCache {
            records: VecDeque::new(),
            start: pos,
            end: pos,
            bytes: 0,
        }
    }

    /// Oldest offset the cache covers.
    pub(crate) fn start(&self) -> u64 {
        self.start
    }

    #[cfg(test)]
    pub(crate) fn end(&self) -> u64 {
        self.end
    }

    /// Adds the next record the tail saw; ignores one the cache already covers.
    pub(crate) fn push(&mut self, rec: Record, total: &AtomicU64, budget: usize) {
        if rec.offset < self.end {
            return;
        }
        self.end = rec.offset + 1;
        let c = cost(&rec);
        self.bytes += c;
        self.records.push_back(rec);
        let mut now = total.fetch_add(c as u64, Ordering::Relaxed) + c as u64;
        while now > budget as u64 {
            let Some(old) = self.records.pop_front() else {
                break;
            };
            let c = cost(&old);
            self.bytes -= c;
            self.start = old.offset + 1;
            now = total.fetch_sub(c as u64, Ordering::Relaxed) - c as u64;
        }
        if self.records.is_empty() {
            self.start = self.end;
        }
    }

    /// Records with `offset >= from`, within the limits (at least one); `None` when
    /// `from` is outside the cached range.
    pub(crate) fn read(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Option<Vec<Record>> {
        if from < self.start || from >= self.end {
            return None;
        }
        let skip = self.records.partition_point(|r| r.offset < from);
        let mut out = Vec::new();
        let mut bytes = 0;
        for r in self.records.iter().skip(skip) {
            if out.len() >= max_records || (!out.is_empty() && bytes + r.payload.len() > max_bytes)
            {
                break;
            }
            bytes += r.payload.len();
            out.push(r.clone());
        }
        (!out.is_empty()).then_some(out)
    }

    /// Returns this cache's bytes to the global budget (the stream is going away).
    pub(crate) fn release(&mut self, total: &AtomicU64) {
        total.fetch_sub(self.bytes as u64, Ordering::Relaxed);
        self.bytes = 0;
        self.records.clear();
        self.start = self.end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn rec(offset: u64, len: usize) -> Record {
        Record {
            offset,
            timestamp_ms: 1,
            payload: Bytes::from(vec![b'x'; len]),
        }
    }

    #[test]
    fn serves_reads_inside_its_range_only() {
        let total = AtomicU64::new(0);
        let mut c = TailCache::new(10);
        assert!(c.read(10, 10, 100).is_none());
        for o in 10..15 {
            c.push(rec(o, 10), &total, 1 << 20);
        }
        assert_eq!(c.read(12, 10, 1 << 20).map(|v| v.len()), Some(3));
        assert!(c.read(9, 10, 100).is_none());
        assert!(c.read(15, 10, 100).is_none());
        // At least one record even if it exceeds max_bytes.
        assert_eq!(c.read(10, 10, 1).map(|v| v.len()), Some(1));
        assert_eq!(c.read(10, 2, 1 << 20).map(|v| v.len()), Some(2));
    }

    #[test]
    fn gaps_inside_the_range_are_skipped() {
        let total = AtomicU64::new(0);
        let mut c = TailCache::new(0);
        c.push(rec(0, 1), &total, 1 << 20);
        c.push(rec(3, 1), &total, 1 << 20);
        let v = c.read(1, 10, 100).unwrap_or_default();
        assert_eq!(v.iter().map(|r| r.offset).collect::<Vec<_>>(), vec![3]);
        c.push(rec(2, 1), &total, 1 << 20);
        assert_eq!(c.end(), 4);
    }

    #[test]
    fn evicts_oldest_over_budget_and_accounts_globally() {
        let total = AtomicU64::new(0);
        let mut c = TailCache::new(0);
        let budget = 3 * (100 + RECORD_OVERHEAD);
        for o in 0..5 {
            c.push(rec(o, 100), &total, budget);
        }
        assert!(c.read(1, 10, 1 << 20).is_none());
        assert_eq!(c.read(2, 10, 1 << 20).map(|v| v.len()), Some(3));
        assert_eq!(total.load(Ordering::Relaxed) as usize, budget);
        c.release(&total);
        assert_eq!(total.load(Ordering::Relaxed), 0);
    }
}
