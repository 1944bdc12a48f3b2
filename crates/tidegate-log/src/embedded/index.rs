//! Sparse offset index of one segment: every `index_interval_bytes` of records the
//! writer notes `(offset, file position)`, so a read seeks close to its start offset
//! and scans forward at most one interval.
//!
//! The index lives in memory only and is rebuilt by the open-time scan, which has to
//! read every segment anyway to validate it and to rebuild the dedup window; that
//! keeps a second on-disk structure (and its own crash consistency) out of the log.

/// Monotonic list of `(offset, position)` pairs.
#[derive(Debug, Default, Clone)]
pub(crate) struct SparseIndex {
    entries: Vec<(u64, u64)>,
}

impl SparseIndex {
    /// Adds an entry; offsets and positions only grow, so pushes keep the list sorted.
    pub(crate) fn push(&mut self, offset: u64, pos: u64) {
        debug_assert!(self
            .entries
            .last()
            .is_none_or(|&(o, p)| o < offset && p < pos));
        self.entries.push((offset, pos));
    }

    /// File position of the newest indexed record with `offset <= target` (0 when none):
    /// scanning from there reaches `target` without skipping it.
    pub(crate) fn floor(&self, target: u64) -> u64 {
        let i = self.entries.partition_point(|&(o, _)| o <= target);
        if i == 0 {
            0
        } else {
            self.entries[i - 1].1
        }
    }

    pub(crate) fn retain_below(&mut self, len: u64) {
        self.entries.retain(|&(_, p)| p < len);
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floor_lookups() {
        let mut ix = SparseIndex::default();
        assert_eq!(ix.floor(5), 0);
        ix.push(10, 4096);
        ix.push(20, 8200);
        ix.push(30, 12300);
        assert_eq!(ix.floor(0), 0);
        assert_eq!(ix.floor(9), 0);
        assert_eq!(ix.floor(10), 4096);
        assert_eq!(ix.floor(19), 4096);
        assert_eq!(ix.floor(20), 8200);
        assert_eq!(ix.floor(u64::MAX), 12300);
        ix.retain_below(8200);
        assert_eq!(ix.floor(25), 4096);
        assert_eq!(ix.len(), 1);
    }
}
