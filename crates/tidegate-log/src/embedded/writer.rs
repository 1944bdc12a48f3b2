//! The writer thread: the single owner of every segment file's write side.
//!
//! `append` puts `(stream, batch, reply)` on an unbounded std channel whose length
//! is bounded by a semaphore permit carried inside each message (the permit is
//! released after the reply, so at most `append_queue` batches are in flight).
//! The thread blocks on the channel, optionally sleeps `group_commit_window` to
//! gather more, drains everything queued, then per stream: assigns offsets and
//! dedups, encodes all batches into one buffer, writes it with one `pwrite`, issues
//! one `fdatasync` per touched segment file, and only then publishes the new
//! committed length, tail-cache records and `next` watch, and replies. Readers can
//! therefore never see a record before its batch is durable.
//!
//! A failed write or fsync fails every append of that stream in the group and marks
//! the stream failed for good (until reopen): after a failed fsync Linux may have
//! dropped the dirty pages and cleared the error (the "fsyncgate" behaviour), so a
//! retry could report success for data that never reached the disk. Reopening
//! re-runs recovery, which trusts only what is actually on disk.
//!
//! Retention runs here too (every `retention_interval` and after a segment roll),
//! so deleting segments never races with writing them.

use super::dedup::DedupIndex;
use super::record;
use super::retention::{self, SegmentInfo};
use super::segment::Segment;
use super::stream::{Stream, CACHE_RECORD_OVERHEAD};
use super::Shared;
use crate::{AppendRecord, Appended, Durability, LogError, Record};
use std::collections::HashMap;
use std::io;
use std::os::unix::fs::FileExt;
use std::sync::atomic::Ordering::{AcqRel, Relaxed, Release};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::{oneshot, OwnedSemaphorePermit};

/// Flush the group buffer to the file once it grows past this, so a flood of
/// queued batches does not build one giant allocation.
const FLUSH_BYTES: usize = 4 * 1024 * 1024;

pub(crate) type Reply = oneshot::Sender<Result<Vec<Appended>, LogError>>;

pub(crate) enum Msg {
    Append {
        stream: Arc<Stream>,
        records: Vec<AppendRecord>,
        reply: Reply,
        permit: OwnedSemaphorePermit,
    },
    /// Test hook: the writer blocks until the sender side is dropped.
    #[cfg(test)]
    Stall(std::sync::mpsc::Receiver<()>),
    Shutdown,
}

/// Writer-side state of one stream (offsets handed out, active segment, dedup).
pub(crate) struct StreamWriter {
    pub stream: Arc<Stream>,
    /// Next offset to assign; runs ahead of the committed `View::next` within a group.
    pub next: u64,
    /// Newest timestamp written; new records never get an older one, so timestamps
    /// are monotonic per stream (retention and dedup expiry rely on that).
    pub last_ts: u64,
    pub active: Option<Active>,
    pub dedup: DedupIndex,
}

pub(crate) struct Active {
    pub seg: Arc<Segment>,
    /// Bytes written (or staged in the group buffer) so far.
    pub len: u64,
    pub since_index: u64,
    /// Written in the current group and not yet synced.
    pub dirty: bool,
}

/// One stream's share of the current group commit.
#[derive(Default)]
struct Work {
    buf: Vec<u8>,
    buf_start: u64,
    /// Segments to sync and publish: `(segment, committed length, newest timestamp)`.
    touched: Vec<(Arc<Segment>, u64, u64)>,
    cache: Vec<Record>,
    pendings: Vec<(Reply, Vec<Appended>, OwnedSemaphorePermit)>,
    error: Option<io::Error>,
    records: u64,
    bytes: u64,
    rolled: bool,
}

pub(crate) struct Writer {
    pub shared: Arc<Shared>,
    pub rx: Receiver<Msg>,
    pub streams: HashMap<String, StreamWriter>,
}

impl Writer {
    pub(crate) fn run(mut self) {
        let interval = self.shared.config.retention_interval;
        let mut last_retention = Instant::now();
        loop {
            let wait = interval.saturating_sub(last_retention.elapsed());
            let first = match self.rx.recv_timeout(wait) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    self.retention();
                    last_retention = Instant::now();
                    continue;
                }
                Err(RecvTimeoutError::Disconnected) => break,
            };
            let window = self.shared.config.group_commit_window;
            if !window.is_zero() && matches!(first, Msg::Append { .. }) {
                std::thread::sleep(window);
            }
            let mut msgs = vec![first];
            while let Ok(m) = self.rx.try_recv() {
                msgs.push(m);
            }
            let mut shutdown = false;
            let mut works: HashMap<String, Work> = HashMap::new();
            for m in msgs {
                match m {
                    Msg::Append {
                        stream,
                        records,
                        reply,
                        permit,
                    } => self.stage(&mut works, stream, records, reply, permit),
                    #[cfg(test)]
                    Msg::Stall(release) => {
                        self.commit(std::mem::take(&mut works));
                        let _ = release.recv();
                    }
                    // Appends drained with (or after) the shutdown are still served.
                    Msg::Shutdown => shutdown = true,
                }
            }
            let rolled = self.commit(works);
            if rolled || last_retention.elapsed() >= interval {
                self.retention();
                last_retention = Instant::now();
            }
            if shutdown {
                break;
            }
        }
        tracing::debug!("Log writer stopped.");
    }

    fn stage(
        &mut self,
        works: &mut HashMap<String, Work>,
        stream: Arc<Stream>,
        records: Vec<AppendRecord>,
        reply: Reply,
        permit: OwnedSemaphorePermit,
    ) {
        if stream.is_failed() {
            let _ = reply.send(Err(failed_error(&stream.name)));
            return;
        }
        let shared = &self.shared;
        let sw = self
            .streams
            .entry(stream.name.clone())
            .or_insert_with(|| StreamWriter {
                next: stream.view.read().next,
                stream: stream.clone(),
                last_ts: 0,
                active: None,
                dedup: DedupIndex::new(
                    duration_ms(shared.config.dedup_window),
                    shared.config.dedup_max_entries,
                ),
            });
        let work = works.entry(stream.name.clone()).or_default();
        if work.error.is_some() {
            work.pendings.push((reply, Vec::new(), permit));
            return;
        }
        let ts = (shared.clock)().max(sw.last_ts);
        let mut results = Vec::with_capacity(records.len());
        let mut fresh: Vec<&AppendRecord> = Vec::with_capacity(records.len());
        for r in &records {
            let offset = sw.next + fresh.len() as u64;
            if let Some(key) = &r.dedup_key {
                // Looked up before insert, so a repeat inside the same batch is caught too.
                if let Some(orig) = sw.dedup.check_insert(key, offset, ts) {
                    results.push(Appended::Duplicate(orig));
                    shared.stats.duplicates.fetch_add(1, Relaxed);
                    continue;
                }
            }
            results.push(Appended::New(offset));
            fresh.push(r);
        }
        if !fresh.is_empty() {
            if let Err(e) = write_batch(shared, sw, work, &fresh, ts) {
                work.error = Some(e);
            }
        }
        shared.stats.append_batches.fetch_add(1, Relaxed);
        work.pendings.push((reply, results, permit));
    }

    /// Flushes, syncs and publishes every stream of the group, then replies.
    /// Returns whether a segment was rolled (retention may have work).
    fn commit(&mut self, works: HashMap<String, Work>) -> bool {
        let mut rolled = false;
        let fsync = self.shared.config.durability == Durability::Fsync;
        for (name, mut work) in works {
            rolled |= work.rolled;
            let Some(sw) = self.streams.get_mut(&name) else {
                continue;
            };
            if work.error.is_none() {
                if let Some(a) = sw.active.as_mut() {
                    if let Err(e) = flush(&mut work, &a.seg) {
                        work.error = Some(e);
                    } else if a.dirty {
                        work.touched.push((a.seg.clone(), a.len, sw.last_ts));
                        a.dirty = false;
                    }
                }
            }
            if work.error.is_none() && fsync {
                for (seg, _, _) in &work.touched {
                    let started = Instant::now();
                    match sync_segment(&self.shared, seg) {
                        Ok(()) => self.shared.stats.observe_fsync(started.elapsed()),
                        Err(e) => {
                            work.error = Some(e);
                            break;
                        }
                    }
                }
            }
            if let Some(e) = work.error.take() {
                fail_stream(&self.shared, &sw.stream, &e);
                for (reply, _, _permit) in work.pendings {
                    let _ = reply.send(Err(LogError::Io(io::Error::new(
                        e.kind(),
                        format!("append to `{name}` failed: {e}"),
                    ))));
                }
                continue;
            }
            self.publish(&name, &mut work);
            let stats = &self.shared.stats;
            stats.appends.fetch_add(work.records, Relaxed);
            stats.bytes_appended.fetch_add(work.bytes, Relaxed);
            if work.records > 0 {
                stats.commit_records_sum.fetch_add(work.records, Relaxed);
                stats.commits.fetch_add(1, Relaxed);
            }
            for (reply, results, _permit) in work.pendings {
                // The caller may have given up (cancelled future); the data is stored anyway.
                let _ = reply.send(Ok(results));
            }
        }
        self.trim_caches();
        rolled
    }

    fn publish(&self, name: &str, work: &mut Work) {
        let Some(sw) = self.streams.get(name) else {
            return;
        };
        for (seg, len, ts) in &work.touched {
            seg.newest_ts.store(*ts, Relaxed);
            // Release pairs with readers' Acquire: the length is visible before `next`.
            seg.committed_len.store(*len, Release);
        }
        let stream = &sw.stream;
        if self.shared.config.tail_cache_bytes > 0 && !work.cache.is_empty() {
            let mut tail = stream.tail.lock();
            let mut added = 0;
            for r in work.cache.drain(..) {
                added += r.payload.len() as u64 + CACHE_RECORD_OVERHEAD;
                tail.records.push_back(r);
            }
            tail.bytes += added;
            stream.tail_bytes.store(tail.bytes, Relaxed);
            self.shared.cache_bytes.fetch_add(added, AcqRel);
        }
        stream.view.write().next = sw.next;
        stream.next_tx.send_replace(sw.next);
    }

    /// Keeps the tail caches of all streams within `tail_cache_bytes`, taking from
    /// the largest cache first so one hot stream cannot starve the others.
    fn trim_caches(&self) {
        let budget = self.shared.config.tail_cache_bytes as u64;
        loop {
            let total = self.shared.cache_bytes.load(Relaxed);
            if total <= budget {
                return;
            }
            let Some(victim) = self
                .streams
                .values()
                .max_by_key(|sw| sw.stream.tail_bytes.load(Relaxed))
            else {
                return;
            };
            let mut tail = victim.stream.tail.lock();
            let target = tail.bytes / 2;
            let mut freed = 0;
            while tail.bytes > target && total - freed > budget {
                match tail.pop_front() {
                    Some(size) => freed += size,
                    None => break,
                }
            }
            victim.stream.tail_bytes.store(tail.bytes, Relaxed);
            drop(tail);
            self.shared.cache_bytes.fetch_sub(freed, AcqRel);
            if freed == 0 {
                return;
            }
        }
    }

    /// Deletes whole expired segments (never the active one) of every stream.
    pub(crate) fn retention(&mut self) {
        let cfg = &self.shared.config;
        if cfg.retention_age.is_none() && cfg.retention_bytes.is_none() {
            return;
        }
        let now = (self.shared.clock)();
        for sw in self.streams.values() {
            let stream = &sw.stream;
            let (doomed, first) = {
                let mut view = stream.view.write();
                let infos: Vec<SegmentInfo> = view
                    .segments
                    .iter()
                    .map(|s| SegmentInfo {
                        bytes: s.committed_len.load(Relaxed),
                        newest_ts: s.newest_ts.load(Relaxed),
                    })
                    .collect();
                let n =
                    retention::expired_prefix(&infos, now, cfg.retention_age, cfg.retention_bytes);
                if n == 0 {
                    continue;
                }
                let doomed: Vec<Arc<Segment>> = view.segments.drain(..n).collect();
                (doomed, view.bounds().first)
            };
            {
                let mut tail = stream.tail.lock();
                let mut freed = 0;
                while tail.first_offset().is_some_and(|o| o < first) {
                    freed += tail.pop_front().unwrap_or(0);
                }
                stream.tail_bytes.store(tail.bytes, Relaxed);
                self.shared.cache_bytes.fetch_sub(freed, AcqRel);
            }
            for seg in doomed {
                // Readers holding the Arc keep reading through the open descriptor.
                // The unlink is not synced: a segment resurrected by a crash is harmless
                // and is deleted again on the next pass.
                if let Err(e) = std::fs::remove_file(&seg.path) {
                    tracing::warn!(stream = %stream.name, segment = %seg.path.display(), error = %e, "Could not delete expired segment.");
                }
                self.shared.stats.retention_deletions.fetch_add(1, Relaxed);
                self.shared.stats.segments.fetch_sub(1, Relaxed);
            }
            tracing::debug!(stream = %stream.name, first, "Retention deleted segments.");
        }
    }
}

/// Stages one batch (already deduplicated) into the stream's group buffer.
fn write_batch(
    shared: &Shared,
    sw: &mut StreamWriter,
    work: &mut Work,
    fresh: &[&AppendRecord],
    ts: u64,
) -> io::Result<()> {
    let cfg = &shared.config;
    let batch_bytes: u64 = fresh
        .iter()
        .map(|r| {
            record::encoded_len(r.dedup_key.as_ref().map_or(0, |k| k.len()), r.payload.len()) as u64
        })
        .sum();
    // Roll only between batches, so a batch never spans segments and its
    // all-or-nothing recovery stays local to the last segment.
    let need_roll = match &sw.active {
        None => true,
        Some(a) => a.len > 0 && a.len + batch_bytes > cfg.segment_bytes,
    };
    if need_roll {
        roll(shared, sw, work)?;
    }
    let Some(a) = sw.active.as_mut() else {
        return Err(io::Error::other("no active segment after roll"));
    };
    if work.buf.is_empty() {
        work.buf_start = a.len;
    }
    let n = fresh.len();
    for (i, r) in fresh.iter().enumerate() {
        let offset = sw.next + i as u64;
        // Entries may point at bytes not yet synced; readers only look up offsets
        // below the committed `next`, so they only ever follow committed entries.
        if a.since_index >= cfg.index_interval_bytes {
            a.seg.index.write().push(offset, a.len);
            a.since_index = 0;
        }
        let before = work.buf.len();
        record::encode(
            &mut work.buf,
            offset,
            ts,
            i + 1 == n,
            r.dedup_key.as_deref(),
            &r.payload,
        );
        let len = (work.buf.len() - before) as u64;
        a.len += len;
        a.since_index += len;
        work.cache.push(Record {
            offset,
            timestamp_ms: ts,
            payload: r.payload.clone(),
        });
    }
    a.dirty = true;
    sw.next += n as u64;
    sw.last_ts = ts;
    work.records += n as u64;
    work.bytes += batch_bytes;
    if work.buf.len() >= FLUSH_BYTES {
        flush(work, &a.seg)?;
    }
    Ok(())
}

fn roll(shared: &Shared, sw: &mut StreamWriter, work: &mut Work) -> io::Result<()> {
    if let Some(a) = sw.active.take() {
        flush(work, &a.seg)?;
        if a.dirty {
            work.touched.push((a.seg.clone(), a.len, sw.last_ts));
        }
    }
    let seg = Arc::new(Segment::create(&sw.stream.dir, sw.next)?);
    if shared.config.durability == Durability::Fsync {
        // The new file's directory entry must be durable before records in it are acked.
        let started = Instant::now();
        super::fsutil::sync_dir(&sw.stream.dir)?;
        shared.stats.observe_fsync(started.elapsed());
    }
    sw.stream.view.write().segments.push(seg.clone());
    shared.stats.segments.fetch_add(1, Relaxed);
    sw.active = Some(Active {
        seg,
        len: 0,
        since_index: 0,
        dirty: false,
    });
    work.rolled = true;
    Ok(())
}

#[cfg_attr(not(test), allow(unused_variables))]
fn sync_segment(shared: &Shared, seg: &Segment) -> io::Result<()> {
    #[cfg(test)]
    if shared.fail_syncs.load(Relaxed) {
        return Err(io::Error::other("injected fsync failure"));
    }
    seg.file.sync_data()
}

fn flush(work: &mut Work, seg: &Segment) -> io::Result<()> {
    if work.buf.is_empty() {
        return Ok(());
    }
    seg.file.write_all_at(&work.buf, work.buf_start)?;
    work.buf_start += work.buf.len() as u64;
    work.buf.clear();
    Ok(())
}

fn fail_stream(shared: &Shared, stream: &Stream, e: &io::Error) {
    if !stream.failed.swap(true, AcqRel) {
        shared.stats.failed_streams.fetch_add(1, Relaxed);
        tracing::error!(stream = %stream.name, error = %e, "Write or fsync failed; the stream refuses appends until the log is reopened.");
    }
}

pub(crate) fn failed_error(name: &str) -> LogError {
    LogError::Io(io::Error::other(format!(
        "stream `{name}` failed after an earlier write or fsync error; reopen the log"
    )))
}

pub(crate) fn duration_ms(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}
