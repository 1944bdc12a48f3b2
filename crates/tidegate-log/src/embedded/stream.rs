//! Shared state of one stream: what readers see (segments, committed bounds, tail
//! cache, watch of the next offset) and its health. The writer thread is the only
//! one that changes it; readers take short read locks.

use super::consumers::Consumers;
use super::segment::Segment;
use crate::{Bounds, Record};
use parking_lot::{Mutex, RwLock};
use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::watch;

/// Approximate memory of one cached record beyond its payload.
pub(crate) const CACHE_RECORD_OVERHEAD: u64 = 64;

#[derive(Debug)]
pub(crate) struct Stream {
    pub name: String,
    pub dir: PathBuf,
    pub view: RwLock<View>,
    pub tail: Mutex<TailCache>,
    /// Mirror of `tail.bytes` so the writer can pick eviction victims without locking.
    pub tail_bytes: AtomicU64,
    pub next_tx: watch::Sender<u64>,
    /// Set after a write or fsync error; see the module docs of `embedded`.
    pub failed: AtomicBool,
    pub consumers: Consumers,
}

#[derive(Debug, Default)]
pub(crate) struct View {
    pub segments: Vec<Arc<Segment>>,
    /// Next offset after the last committed record.
    pub next: u64,
}

impl View {
    pub(crate) fn bounds(&self) -> Bounds {
        let first = self.segments.first().map_or(self.next, |s| s.base);
        Bounds {
            first,
            next: self.next,
        }
    }
}

/// The newest committed records of a stream, consecutive by offset.
#[derive(Debug, Default)]
pub(crate) struct TailCache {
    pub records: VecDeque<Record>,
    pub bytes: u64,
}

impl TailCache {
    pub(crate) fn first_offset(&self) -> Option<u64> {
        self.records.front().map(|r| r.offset)
    }

    /// Removes the oldest record, returning its accounted size.
    pub(crate) fn pop_front(&mut self) -> Option<u64> {
        let r = self.records.pop_front()?;
        let size = r.payload.len() as u64 + CACHE_RECORD_OVERHEAD;
        self.bytes -= size;
        Some(size)
    }
}

impl Stream {
    pub(crate) fn new(name: String, dir: PathBuf, view: View, consumers: Consumers) -> Self {
        let (next_tx, _) = watch::channel(view.next);
        Stream {
            name,
            dir,
            view: RwLock::new(view),
            tail: Mutex::new(TailCache::default()),
            tail_bytes: AtomicU64::new(0),
            next_tx,
            failed: AtomicBool::new(false),
            consumers,
        }
    }

    pub(crate) fn is_failed(&self) -> bool {
        self.failed.load(Ordering::Acquire)
    }
}
