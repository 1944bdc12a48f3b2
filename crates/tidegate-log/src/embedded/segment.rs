//! One segment file: an append-only run of records named by its base offset, plus
//! the shared handle readers and the writer use concurrently.
//!
//! The writer thread writes with `pwrite` at positions it tracks itself and
//! publishes `committed_len` only after the group's sync; readers use `pread`
//! on the same descriptor and never look past `committed_len`. A deleted
//! segment (retention) stays readable through the open descriptor until the
//! last reader drops its `Arc`.

use super::index::SparseIndex;
use super::record::{self, Decoded};
use parking_lot::RwLock;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicU64;

pub(crate) const SUFFIX: &str = ".log";

/// `00000000000000000042.log`: zero-padded so lexical order is offset order.
pub(crate) fn file_name(base: u64) -> String {
    format!("{base:020}{SUFFIX}")
}

pub(crate) fn parse_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(SUFFIX)?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

#[derive(Debug)]
pub(crate) struct Segment {
    pub base: u64,
    pub path: PathBuf,
    pub file: File,
    pub index: RwLock<SparseIndex>,
    /// Bytes readers may look at: everything up to the end of the last synced batch.
    pub committed_len: AtomicU64,
    /// Timestamp of the newest committed record (0 when empty); drives age retention.
    pub newest_ts: AtomicU64,
}

impl Segment {
    /// Creates a new, empty segment file. `create_new` so a stale file is never reused.
    pub(crate) fn create(dir: &Path, base: u64) -> io::Result<Self> {
        let path = dir.join(file_name(base));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)?;
        Ok(Self::from_parts(
            base,
            path,
            file,
            SparseIndex::default(),
            0,
            0,
        ))
    }

    pub(crate) fn from_parts(
        base: u64,
        path: PathBuf,
        file: File,
        index: SparseIndex,
        len: u64,
        newest_ts: u64,
    ) -> Self {
        Segment {
            base,
            path,
            file,
            index: RwLock::new(index),
            committed_len: AtomicU64::new(len),
            newest_ts: AtomicU64::new(newest_ts),
        }
    }
}

/// What the reader found at the current position.
#[derive(Debug)]
pub(crate) enum Next<'a> {
    /// A valid record at this file position.
    Record(u64, Decoded<'a>),
    /// Clean end: the position reached the limit exactly.
    End,
    /// Not a record (short read, bad length, CRC mismatch, ...) at this position.
    Bad(u64, &'static str),
}

const CHUNK: usize = 256 * 1024;

/// Sequential record reader over `[start, end)` of a file using positional reads.
pub(crate) struct SegmentReader<'f> {
    file: &'f File,
    buf: Vec<u8>,
    /// File position of `buf[0]`.
    buf_pos: u64,
    cursor: usize,
    end: u64,
}

impl<'f> SegmentReader<'f> {
    pub(crate) fn new(file: &'f File, start: u64, end: u64) -> Self {
        SegmentReader {
            file,
            buf: Vec::new(),
            buf_pos: start,
            cursor: 0,
            end,
        }
    }

    pub(crate) fn next_record(&mut self) -> io::Result<Next<'_>> {
        let pos = self.buf_pos + self.cursor as u64;
        if pos >= self.end {
            return Ok(Next::End);
        }
        if !self.fill(4)? {
            return Ok(Next::Bad(pos, "short read in length prefix"));
        }
        let mut prefix = [0; 4];
        prefix.copy_from_slice(&self.buf[self.cursor..self.cursor + 4]);
        let Some(body) = record::body_len(prefix) else {
            return Ok(Next::Bad(pos, "implausible length"));
        };
        if !self.fill(4 + body)? {
            return Ok(Next::Bad(pos, "short read in record"));
        }
        let start = self.cursor;
        self.cursor += 4 + body;
        match record::decode(&self.buf[start..start + 4 + body]) {
            Ok(rec) => Ok(Next::Record(pos, rec)),
            Err(reason) => Ok(Next::Bad(pos, reason)),
        }
    }

    /// Makes `need` bytes available at the cursor; `false` when the range (or the
    /// file) ends first. Never allocates more than the remaining range, so a garbage
    /// length cannot make us allocate gigabytes.
    fn fill(&mut self, need: usize) -> io::Result<bool> {
        if self.buf.len() - self.cursor >= need {
            return Ok(true);
        }
        let pos = self.buf_pos + self.cursor as u64;
        let remaining = self.end.saturating_sub(pos);
        if (need as u64) > remaining {
            return Ok(false);
        }
        self.buf.drain(..self.cursor);
        self.buf_pos = pos;
        self.cursor = 0;
        let want = (need.max(CHUNK) as u64).min(remaining) as usize;
        let have = self.buf.len();
        self.buf.resize(want, 0);
        let mut filled = have;
        while filled < want {
            let n = self
                .file
                .read_at(&mut self.buf[filled..], self.buf_pos + filled as u64)?;
            if n == 0 {
                break;
            }
            filled += n;
        }
        self.buf.truncate(filled);
        Ok(filled >= need)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_roundtrip() {
        assert_eq!(file_name(42), "00000000000000000042.log");
        assert_eq!(parse_file_name("00000000000000000042.log"), Some(42));
        assert_eq!(parse_file_name("42.log"), None);
        assert_eq!(parse_file_name("0000000000000000004a.log"), None);
        assert_eq!(parse_file_name("00000000000000000042.tmp"), None);
    }

    #[test]
    fn reader_walks_records_across_chunks_and_flags_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let seg = Segment::create(dir.path(), 0).unwrap();
        let mut buf = Vec::new();
        let big = vec![7u8; CHUNK + 10];
        for i in 0..5u64 {
            let payload: &[u8] = if i == 2 { &big } else { b"small" };
            record::encode(&mut buf, i, i, true, None, payload);
        }
        let full = buf.len() as u64;
        buf.extend_from_slice(&[1, 2, 3]); // torn tail
        seg.file.write_all_at(&buf, 0).unwrap();
        let mut r = SegmentReader::new(&seg.file, 0, buf.len() as u64);
        let mut seen = Vec::new();
        loop {
            match r.next_record().unwrap() {
                Next::Record(_, rec) => seen.push((rec.offset, rec.payload.len())),
                Next::End => panic!("tail is torn"),
                Next::Bad(pos, _) => {
                    assert_eq!(pos, full);
                    break;
                }
            }
        }
        assert_eq!(seen, vec![(0, 5), (1, 5), (2, CHUNK + 10), (3, 5), (4, 5)]);
    }
}
