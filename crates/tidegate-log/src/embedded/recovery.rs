//! Open-time recovery of one stream: validate every segment, rebuild the sparse
//! indexes and the dedup window, and cut the log back to the last complete batch.
//!
//! Each segment is scanned from its start (the index is not persisted). The scan
//! stops at the first record that is not valid — short read, implausible length,
//! CRC mismatch, unknown flags, offset not consecutive — and the segment is
//! truncated at the end of the last record carrying the batch-end flag, so a batch
//! whose end marker never reached the disk vanishes whole. A crash can only tear
//! the active (last) segment; damage found earlier means the disk lost data, and the
//! log keeps the valid prefix: later segments are deleted (loudly) because offsets
//! after a hole would no longer be consecutive. Truncations and deletions are synced
//! before the log accepts appends, so they are not undone by a second crash.

use super::consumers::{self, Consumers};
use super::dedup::DedupIndex;
use super::fsutil;
use super::index::SparseIndex;
use super::segment::{self, Next, Segment, SegmentReader};
use super::stream::{Stream, View};
use super::writer::{Active, StreamWriter};
use crate::LogError;
use bytes::Bytes;
use std::fs::{self, OpenOptions};
use std::path::Path;
use std::sync::Arc;

pub(crate) struct RecoverParams {
    pub index_interval: u64,
    pub dedup_window_ms: u64,
    pub dedup_max_entries: usize,
    pub now_ms: u64,
}

/// Result of scanning one segment file.
#[derive(Debug)]
pub(crate) struct Scan {
    /// Bytes up to the end of the last complete batch.
    pub valid_len: u64,
    /// Offset after the last complete batch.
    pub next: u64,
    pub newest_ts: u64,
    pub index: SparseIndex,
    /// Bytes since the last index entry (or the segment start) at `valid_len`.
    pub since_index: u64,
    /// `(key, offset, timestamp)` of keyed records at or after the dedup cutoff.
    pub dedup: Vec<(Bytes, u64, u64)>,
    /// Where and why the scan stopped early, if it did.
    pub damage: Option<(u64, &'static str)>,
}

pub(crate) fn scan_segment(
    file: &fs::File,
    base: u64,
    file_len: u64,
    index_interval: u64,
    dedup_cutoff_ms: u64,
) -> std::io::Result<Scan> {
    let mut reader = SegmentReader::new(file, 0, file_len);
    let mut scan = Scan {
        valid_len: 0,
        next: base,
        newest_ts: 0,
        index: SparseIndex::default(),
        since_index: 0,
        dedup: Vec::new(),
        damage: None,
    };
    let mut expected = base;
    let mut since_index = 0u64;
    let mut since_at_valid = 0u64;
    loop {
        match reader.next_record()? {
            Next::End => break,
            Next::Bad(pos, reason) => {
                scan.damage = Some((pos, reason));
                break;
            }
            Next::Record(pos, rec) => {
                if rec.offset != expected {
                    scan.damage = Some((pos, "offset not consecutive"));
                    break;
                }
                // Same rule as the writer, so a reopened log indexes like a live one.
                if since_index >= index_interval {
                    scan.index.push(rec.offset, pos);
                    since_index = 0;
                }
                since_index += rec.frame_len as u64;
                if let Some(key) = rec.key {
                    if rec.timestamp_ms >= dedup_cutoff_ms {
                        scan.dedup.push((
                            Bytes::copy_from_slice(key),
                            rec.offset,
                            rec.timestamp_ms,
                        ));
                    }
                }
                expected += 1;
                if rec.batch_end() {
                    scan.valid_len = pos + rec.frame_len as u64;
                    scan.next = expected;
                    scan.newest_ts = rec.timestamp_ms;
                    since_at_valid = since_index;
                }
            }
        }
    }
    if scan.damage.is_none() && scan.valid_len < file_len {
        scan.damage = Some((scan.valid_len, "incomplete trailing batch"));
    }
    scan.index.retain_below(scan.valid_len);
    scan.since_index = since_at_valid;
    let next = scan.next;
    scan.dedup.retain(|&(_, off, _)| off < next);
    Ok(scan)
}

/// Recovers one stream directory; returns the shared state and the writer's state.
pub(crate) fn open_stream(
    dir: &Path,
    name: &str,
    p: &RecoverParams,
) -> Result<(Arc<Stream>, StreamWriter), LogError> {
    let mut bases = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        if let Some(base) = entry
            .file_name()
            .to_str()
            .and_then(segment::parse_file_name)
        {
            bases.push(base);
        }
    }
    bases.sort_unstable();

    let cutoff = p.now_ms.saturating_sub(p.dedup_window_ms);
    let mut dedup = DedupIndex::new(p.dedup_window_ms, p.dedup_max_entries);
    let mut segments: Vec<Arc<Segment>> = Vec::new();
    let mut next = bases.first().copied().unwrap_or(0);
    let mut last_ts = 0;
    let mut active: Option<Active> = None;
    let mut changed_dir = false;

    for (i, &base) in bases.iter().enumerate() {
        let path = dir.join(segment::file_name(base));
        if i > 0 && base != next {
            tracing::error!(stream = name, segment = %path.display(), expected = next, "Segment base does not follow the previous segment; dropping it and later segments.");
            remove_segments(dir, &bases[i..])?;
            changed_dir = true;
            break;
        }
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        let file_len = file.metadata()?.len();
        let scan = scan_segment(&file, base, file_len, p.index_interval, cutoff)?;
        let is_last = i + 1 == bases.len();
        if let Some((pos, reason)) = scan.damage {
            if is_last {
                tracing::warn!(stream = name, segment = %path.display(), pos, reason, kept = scan.valid_len, "Truncating torn tail of the log.");
            } else {
                tracing::error!(stream = name, segment = %path.display(), pos, reason, kept = scan.valid_len, "Damage inside an older segment; keeping the valid prefix and dropping later segments.");
            }
            file.set_len(scan.valid_len)?;
            file.sync_all()?;
        }
        for (key, off, ts) in scan.dedup {
            dedup.insert(key, off, ts);
        }
        next = scan.next;
        last_ts = last_ts.max(scan.newest_ts);
        let seg = Arc::new(Segment::from_parts(
            base,
            path,
            file,
            scan.index,
            scan.valid_len,
            scan.newest_ts,
        ));
        active = Some(Active {
            seg: seg.clone(),
            len: scan.valid_len,
            since_index: scan.since_index,
            dirty: false,
        });
        segments.push(seg);
        if scan.damage.is_some() && !is_last {
            remove_segments(dir, &bases[i + 1..])?;
            changed_dir = true;
            break;
        }
    }
    if changed_dir {
        fsutil::sync_dir(dir)?;
    }

    let consumers = Consumers::load(dir)?;
    let stream = Arc::new(Stream::new(
        name.to_owned(),
        dir.to_path_buf(),
        View { segments, next },
        consumers,
    ));
    let writer = StreamWriter {
        stream: stream.clone(),
        next,
        last_ts,
        active,
        dedup,
    };
    Ok((stream, writer))
}

fn remove_segments(dir: &Path, bases: &[u64]) -> std::io::Result<()> {
    for &b in bases {
        fs::remove_file(dir.join(segment::file_name(b)))?;
    }
    Ok(())
}

/// Creates the directory layout of a new stream (its directory and `consumers/`).
pub(crate) fn create_stream_dir(
    streams_dir: &Path,
    name: &str,
) -> std::io::Result<std::path::PathBuf> {
    let dir = streams_dir.join(name);
    fs::create_dir_all(dir.join(consumers::DIR))?;
    fsutil::sync_dir(&dir)?;
    fsutil::sync_dir(streams_dir)?;
    Ok(dir)
}
