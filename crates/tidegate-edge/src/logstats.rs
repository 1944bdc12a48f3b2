//! Exposition of the embedded log's statistics (the log counts; this renders).
use std::fmt::Write;

use tidegate_log::embedded::LogStats;

pub fn render(s: &LogStats) -> String {
    let mut out = String::with_capacity(2048);
    let mut counter = |name: &str, help: &str, v: u64| {
        let _ = write!(out, "# HELP tidegate_log_{name} {help}\n# TYPE tidegate_log_{name} counter\ntidegate_log_{name}_total {v}\n");
    };
    counter("appends", "Records stored (duplicates excluded)", s.appends);
    counter(
        "append_batches",
        "Append batches that reached the writer",
        s.append_batches,
    );
    counter(
        "bytes_appended",
        "Bytes written to segment files",
        s.bytes_appended,
    );
    counter("fsyncs", "fdatasync calls", s.fsyncs);
    counter("commits", "Group commits", s.commits);
    counter(
        "commit_records",
        "Records made durable by group commits",
        s.commit_records_sum,
    );
    counter(
        "retention_deletions",
        "Segments deleted by retention",
        s.retention_deletions,
    );
    counter(
        "duplicates",
        "Records not stored again because of their dedup key",
        s.duplicates,
    );
    counter(
        "overloaded_rejections",
        "Appends refused because the append queue was full",
        s.overloaded_rejections,
    );
    let _ = write!(
        out,
        "# HELP tidegate_log_segments Segment files present\n# TYPE tidegate_log_segments gauge\ntidegate_log_segments {}\n",
        s.segments
    );
    let _ = write!(
        out,
        "# HELP tidegate_log_failed_streams Streams refusing appends after an I/O error\n# TYPE tidegate_log_failed_streams gauge\ntidegate_log_failed_streams {}\n",
        s.failed_streams
    );
    let _ = write!(out, "# HELP tidegate_log_fsync_seconds fdatasync latency\n# TYPE tidegate_log_fsync_seconds histogram\n");
    for (le, count) in &s.fsync_latency_buckets {
        let _ = writeln!(
            out,
            "tidegate_log_fsync_seconds_bucket{{le=\"{le}\"}} {count}"
        );
    }
    let _ = write!(
        out,
        "tidegate_log_fsync_seconds_bucket{{le=\"+Inf\"}} {}\ntidegate_log_fsync_seconds_sum {}\ntidegate_log_fsync_seconds_count {}\n",
        s.fsyncs, s.fsync_seconds_sum, s.fsyncs
    );
    out
}
