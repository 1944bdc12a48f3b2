//! Counters and gauges of the embedded log, for the telemetry crate to export.
//!
//! The writer thread is the single owner that increments most of them; readers of
//! [`LogStats`] get a snapshot of relaxed atomics (no cross-counter consistency).

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

/// Upper bounds (seconds) of the fsync latency histogram buckets; `+Inf` is implied
/// (its cumulative count is `fsyncs`).
pub const FSYNC_BUCKETS_SECONDS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub appends: AtomicU64,
    pub append_batches: AtomicU64,
    pub bytes_appended: AtomicU64,
    pub fsyncs: AtomicU64,
    pub fsync_nanos: AtomicU64,
    pub fsync_buckets: [AtomicU64; FSYNC_BUCKETS_SECONDS.len()],
    pub commit_records_sum: AtomicU64,
    pub commits: AtomicU64,
    pub segments: AtomicU64,
    pub retention_deletions: AtomicU64,
    pub duplicates: AtomicU64,
    pub overloaded_rejections: AtomicU64,
    pub failed_streams: AtomicU64,
}

impl Stats {
    pub(crate) fn observe_fsync(&self, took: Duration) {
        self.fsyncs.fetch_add(1, Relaxed);
        self.fsync_nanos
            .fetch_add(u64::try_from(took.as_nanos()).unwrap_or(u64::MAX), Relaxed);
        let secs = took.as_secs_f64();
        if let Some(i) = FSYNC_BUCKETS_SECONDS.iter().position(|&b| secs <= b) {
            self.fsync_buckets[i].fetch_add(1, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> LogStats {
        let mut cumulative = 0;
        let fsync_latency_buckets = FSYNC_BUCKETS_SECONDS
            .iter()
            .zip(&self.fsync_buckets)
            .map(|(&bound, count)| {
                cumulative += count.load(Relaxed);
                (bound, cumulative)
            })
            .collect();
        let fsync_nanos_sum = self.fsync_nanos.load(Relaxed);
        LogStats {
            appends: self.appends.load(Relaxed),
            append_batches: self.append_batches.load(Relaxed),
            bytes_appended: self.bytes_appended.load(Relaxed),
            fsyncs: self.fsyncs.load(Relaxed),
            fsync_nanos_sum,
            fsync_seconds_sum: fsync_nanos_sum as f64 / 1e9,
            fsync_latency_buckets,
            commit_records_sum: self.commit_records_sum.load(Relaxed),
            commits: self.commits.load(Relaxed),
            segments: self.segments.load(Relaxed),
            retention_deletions: self.retention_deletions.load(Relaxed),
            duplicates: self.duplicates.load(Relaxed),
            overloaded_rejections: self.overloaded_rejections.load(Relaxed),
            failed_streams: self.failed_streams.load(Relaxed),
        }
    }
}

/// Snapshot of the log's metrics.
#[derive(Debug, Clone, PartialEq)]
pub struct LogStats {
    /// Records stored (duplicates excluded).
    pub appends: u64,
    /// `append` calls that reached the writer.
    pub append_batches: u64,
    /// Encoded bytes written to segment files.
    pub bytes_appended: u64,
    /// fdatasync calls on segment files and directories.
    pub fsyncs: u64,
    pub fsync_nanos_sum: u64,
    pub fsync_seconds_sum: f64,
    /// `(upper bound in seconds, cumulative count)` per [`FSYNC_BUCKETS_SECONDS`] bucket.
    pub fsync_latency_buckets: Vec<(f64, u64)>,
    /// Group commit size: records made durable per commit (sum and count of commits).
    pub commit_records_sum: u64,
    pub commits: u64,
    /// Gauge: segment files currently present, over all streams.
    pub segments: u64,
    /// Segments deleted by retention.
    pub retention_deletions: u64,
    /// Records not stored because their dedup key was seen within the window.
    pub duplicates: u64,
    /// Appends rejected with `Overloaded`.
    pub overloaded_rejections: u64,
    /// Gauge: streams refusing appends after a write or fsync error.
    pub failed_streams: u64,
}
