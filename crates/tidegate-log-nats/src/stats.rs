//! Counters of the JetStream log, kept here and read by whoever exports metrics
//! ([`crate::NatsLog::stats`]); nothing in this crate registers metrics itself.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub appended: AtomicU64,
    pub duplicates: AtomicU64,
    pub append_errors: AtomicU64,
    pub reconnects: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub tail_restarts: AtomicU64,
}

/// A snapshot of [`crate::NatsLog`] counters (monotonic unless noted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NatsStats {
    /// Records stored by appends of this node.
    pub appended: u64,
    /// Records the server reported as duplicates (nothing stored).
    pub duplicates: u64,
    /// Append calls that failed.
    pub append_errors: u64,
    /// Reconnections of the NATS client after a lost connection.
    pub reconnects: u64,
    /// Reads served from the tail cache.
    pub cache_hits: u64,
    /// Reads that went to the server.
    pub cache_misses: u64,
    /// Times a tail consumer was re-created (reconnect, stall, sequence gap).
    pub tail_restarts: u64,
    /// Gauge: records known to be committed that no tail has delivered yet, summed
    /// over streams.
    pub tail_lag: u64,
    /// Gauge: bytes held by the tail caches.
    pub cache_bytes: u64,
    /// Gauge: streams this node tails.
    pub streams: u64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> NatsStats {
        NatsStats {
            appended: self.appended.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            append_errors: self.append_errors.load(Relaxed),
            reconnects: self.reconnects.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            tail_restarts: self.tail_restarts.load(Relaxed),
            ..NatsStats::default()
        }
    }
}
