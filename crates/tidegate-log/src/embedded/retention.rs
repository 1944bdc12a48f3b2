//! Retention policy: which whole segments of a stream may be deleted.
//!
//! Pure (time is a parameter) so it is unit-tested without files; the writer
//! thread applies the result. Only a prefix of the oldest segments is ever
//! deleted and the active (last) segment never is, so `Bounds::first` only
//! moves forward and appends are never disturbed.

use std::time::Duration;

#[derive(Debug, Clone, Copy)]
pub(crate) struct SegmentInfo {
    pub bytes: u64,
    pub newest_ts: u64,
}

/// Number of oldest segments to delete.
pub(crate) fn expired_prefix(
    segments: &[SegmentInfo],
    now_ms: u64,
    age: Option<Duration>,
    max_bytes: Option<u64>,
) -> usize {
    let deletable = segments.len().saturating_sub(1);
    let mut n = 0;
    if let Some(age) = age {
        let age_ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX);
        while n < deletable && segments[n].newest_ts.saturating_add(age_ms) < now_ms {
            n += 1;
        }
    }
    if let Some(max) = max_bytes {
        let mut total: u64 = segments[n..].iter().map(|s| s.bytes).sum();
        while n < deletable && total > max {
            total -= segments[n].bytes;
            n += 1;
        }
    }
    n
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segs(v: &[(u64, u64)]) -> Vec<SegmentInfo> {
        v.iter()
            .map(|&(bytes, newest_ts)| SegmentInfo { bytes, newest_ts })
            .collect()
    }

    #[test]
    fn by_age_keeps_active() {
        let s = segs(&[(10, 100), (10, 200), (10, 300)]);
        let age = Some(Duration::from_millis(50));
        assert_eq!(expired_prefix(&s, 120, age, None), 0);
        assert_eq!(expired_prefix(&s, 151, age, None), 1);
        assert_eq!(expired_prefix(&s, 251, age, None), 2);
        assert_eq!(
            expired_prefix(&s, 10_000, age, None),
            2,
            "never the active segment"
        );
    }

    #[test]
    fn by_size_oldest_first() {
        let s = segs(&[(10, 0), (20, 0), (30, 0)]);
        assert_eq!(expired_prefix(&s, 0, None, Some(60)), 0);
        assert_eq!(expired_prefix(&s, 0, None, Some(59)), 1);
        assert_eq!(expired_prefix(&s, 0, None, Some(30)), 2);
        assert_eq!(expired_prefix(&s, 0, None, Some(0)), 2);
        assert_eq!(expired_prefix(&[], 0, None, Some(0)), 0);
    }
}
