//! Counters and gauges of the Kafka log, for the telemetry crate to export
//! ([`crate::KafkaLog::stats`]). Relaxed atomics; a snapshot has no cross-counter
//! consistency.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub appends: AtomicU64,
    pub append_batches: AtomicU64,
    pub bytes_appended: AtomicU64,
    pub duplicates: AtomicU64,
    pub append_errors: AtomicU64,
    pub overloaded_rejections: AtomicU64,
    pub tail_records: AtomicU64,
    pub tail_errors: AtomicU64,
    pub tail_lag_records: AtomicU64,
    pub cache_hits: AtomicU64,
    pub cache_misses: AtomicU64,
    pub cache_bytes: AtomicU64,
    pub broker_reads: AtomicU64,
    pub client_errors: AtomicU64,
    pub producer_restarts: AtomicU64,
    pub probe_failures: AtomicU64,
}

impl Stats {
    pub(crate) fn snapshot(&self) -> KafkaStats {
        KafkaStats {
            appends: self.appends.load(Relaxed),
            append_batches: self.append_batches.load(Relaxed),
            bytes_appended: self.bytes_appended.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            append_errors: self.append_errors.load(Relaxed),
            overloaded_rejections: self.overloaded_rejections.load(Relaxed),
            tail_records: self.tail_records.load(Relaxed),
            tail_errors: self.tail_errors.load(Relaxed),
            tail_lag_records: self.tail_lag_records.load(Relaxed),
            cache_hits: self.cache_hits.load(Relaxed),
            cache_misses: self.cache_misses.load(Relaxed),
            cache_bytes: self.cache_bytes.load(Relaxed),
            broker_reads: self.broker_reads.load(Relaxed),
            client_errors: self.client_errors.load(Relaxed),
            producer_restarts: self.producer_restarts.load(Relaxed),
            probe_failures: self.probe_failures.load(Relaxed),
            streams: 0,
            dedup_keys: 0,
        }
    }
}

/// Snapshot of the Kafka log's metrics. Counters only grow; gauges are marked.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KafkaStats {
    /// Records stored by this node (duplicates excluded).
    pub appends: u64,
    /// `append` calls that produced at least one record.
    pub append_batches: u64,
    /// Key + payload bytes this node stored.
    pub bytes_appended: u64,
    /// Records answered `Duplicate` by the local dedup index.
    pub duplicates: u64,
    /// `append` calls that failed after reaching the producer (timeouts, broker errors).
    pub append_errors: u64,
    /// Appends refused because librdkafka's producer queue was full.
    pub overloaded_rejections: u64,
    /// Records the stream tails received (this node's and other nodes').
    pub tail_records: u64,
    /// Errors the tail consumers reported (they keep polling).
    pub tail_errors: u64,
    /// Gauge: max over streams of (high watermark − tail position) at the last probe.
    pub tail_lag_records: u64,
    /// Reads answered from the tail cache.
    pub cache_hits: u64,
    /// Reads that went to the broker.
    pub cache_misses: u64,
    /// Gauge: bytes held by the tail caches.
    pub cache_bytes: u64,
    /// Fetches from the broker by read consumers (one per `read` miss).
    pub broker_reads: u64,
    /// Errors librdkafka reported through the client `error` callback.
    pub client_errors: u64,
    /// Producers rebuilt after a fatal (idempotence) error.
    pub producer_restarts: u64,
    /// Failed periodic metadata probes.
    pub probe_failures: u64,
    /// Gauge: streams with a running tail.
    pub streams: u64,
    /// Gauge: keys in the dedup indexes of all streams.
    pub dedup_keys: u64,
}
