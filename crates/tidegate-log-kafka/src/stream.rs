//! State of one stream on this node: its topic, the tail cache, the dedup index and
//! the watches. The tail task is the single writer of the cache and of `seen`; appends
//! and the tail both raise `next` (whichever learns of a record first).

use crate::cache::TailCache;
use crate::dedup::Dedup;
use parking_lot::Mutex;
use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::watch;

/// Cap on remembered own offsets per stream.
const OWN_MAX: usize = 65_536;

pub(crate) struct Stream {
    pub name: String,
    pub topic: String,
    pub cache: Mutex<TailCache>,
    pub dedup: Mutex<Dedup>,
    /// `Bounds::next` as the trait exposes it: one past the newest record this node
    /// knows is stored (from the tail, or from its own delivery reports).
    pub next: watch::Sender<u64>,
    /// One past the newest record the tail has put into the cache.
    pub seen: watch::Sender<u64>,
    /// The tail has read everything that was stored when the stream was opened (the
    /// dedup index is rebuilt).
    pub caught_up: watch::Sender<bool>,
    /// Low watermark at the last probe (retention moves it).
    pub first: AtomicU64,
    /// High watermark at the last probe (for the lag gauge).
    pub high: AtomicU64,
    /// Offsets this node stored that the tail has not seen yet: if everything between
    /// the tail and the high watermark is ours, the dedup index already knows it.
    pub own: Mutex<BTreeSet<u64>>,
    /// Held while one append enqueues its records, so a batch stays contiguous in
    /// the producer's queue.
    pub produce: Mutex<()>,
}

impl Stream {
    pub(crate) fn new(
        name: String,
        topic: String,
        start: u64,
        low: u64,
        high: u64,
        dedup: Dedup,
    ) -> Self {
        Stream {
            name,
            topic,
            cache: Mutex::new(TailCache::new(start)),
            dedup: Mutex::new(dedup),
            next: watch::Sender::new(high),
            seen: watch::Sender::new(start),
            caught_up: watch::Sender::new(start >= high),
            first: AtomicU64::new(low),
            high: AtomicU64::new(high),
            own: Mutex::new(BTreeSet::new()),
            produce: Mutex::new(()),
        }
    }

    pub(crate) fn advance_next(&self, n: u64) {
        self.next.send_if_modified(|v| {
            let raise = n > *v;
            if raise {
                *v = n;
            }
            raise
        });
    }

    /// Remembers an offset this node stored (bounded: forgetting one only costs a
    /// tail wait in `sync_tail`).
    pub(crate) fn stored_here(&self, offset: u64) {
        let mut own = self.own.lock();
        if own.len() < OWN_MAX {
            own.insert(offset);
        }
    }

    /// Whether every offset in `[seen, high)` was stored by this node.
    pub(crate) fn all_ours(&self, high: u64) -> bool {
        let seen = *self.seen.borrow();
        seen >= high || self.own.lock().range(seen..high).count() as u64 == high - seen
    }

    /// The tail saw everything below `seen`.
    pub(crate) fn forget_own_below(&self, seen: u64) {
        let mut own = self.own.lock();
        if own.first().is_some_and(|&o| o < seen) {
            *own = own.split_off(&seen);
        }
    }

    pub(crate) fn next(&self) -> u64 {
        *self.next.borrow()
    }

    pub(crate) fn first(&self) -> u64 {
        self.first.load(Ordering::Relaxed).min(self.next())
    }

    /// Records between the tail and the newest known offset.
    pub(crate) fn lag(&self) -> u64 {
        let known = self.high.load(Ordering::Relaxed).max(self.next());
        known.saturating_sub(*self.seen.borrow())
    }
}
