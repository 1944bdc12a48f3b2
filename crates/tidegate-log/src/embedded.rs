//! The embedded backend: append-only segment files per stream, written by one
//! dedicated thread with group commit.
//!
//! # On-disk layout
//!
//! ```text
//! <dir>/EPOCH                                 random nonzero u64 + crc32c (12 bytes)
//! <dir>/streams/<stream>/00000000000000000000.log   segment, named by its base offset
//! <dir>/streams/<stream>/00000000000000001234.log
//! <dir>/streams/<stream>/consumers/<name>.pos       next offset (u64 LE + crc32c)
//! ```
//!
//! A segment is a run of records, each
//! `[len u32 LE][crc32c u32 LE][flags u8][offset u64 LE][timestamp_ms u64 LE][key_len u16 LE][key][payload]`
//! where `len` counts the bytes after itself and the CRC covers everything after
//! the CRC. Flag `0x01` marks the last record of an append batch; `0x02` says a
//! dedup key is present. A segment is rolled at `segment_bytes`, only between
//! batches. Sparse indexes and the dedup window are rebuilt by scanning at open
//! (nothing besides the records needs to be kept consistent).
//!
//! # Guarantees
//!
//! - An acknowledged append is in the page cache (`Buffered`) or on disk
//!   (`Fsync`, one `fdatasync` per touched file per group commit).
//! - A batch is all-or-nothing, across crashes too: recovery truncates at the
//!   first invalid record and at a trailing batch without its end marker.
//! - Offsets are consecutive; reads and `watch_next` only expose committed batches.
//! - After a write/fsync error a stream refuses appends until reopen (fsyncgate; see the
//!   `writer` module).
//! - Dedup keys are remembered for `dedup_window` by record timestamp, across restarts.
//!
//! # Threads
//!
//! All writes, fsyncs, rolls and retention happen on the writer thread. Reads are
//! served from the in-memory tail cache or by `pread` on `spawn_blocking`. Consumer
//! commits run on `spawn_blocking`. `ensure_stream` creates the
//! stream directory inline; it is rare and does nothing once the stream exists.
//! `append` needs a tokio runtime with the time driver (for `append_wait`).

mod consumers;
mod dedup;
mod fsutil;
mod index;
mod record;
mod recovery;
mod retention;
mod segment;
mod stats;
mod stream;
mod writer;

#[cfg(test)]
mod tests;

pub use stats::{LogStats, FSYNC_BUCKETS_SECONDS};

use crate::{AppendRecord, Appended, Bounds, Durability, EventLog, LogError, Record};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use segment::{Next, Segment, SegmentReader};
use std::collections::HashMap;
use std::fs;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use stream::Stream;
use tokio::sync::{oneshot, watch, Semaphore, TryAcquireError};
use writer::Msg;

const EPOCH_FILE: &str = "EPOCH";
const STREAMS_DIR: &str = "streams";

/// Configuration of [`EmbeddedLog`]. `dir` has no usable default and must be set.
#[derive(Debug, Clone)]
pub struct EmbeddedConfig {
    pub dir: PathBuf,
    pub durability: Durability,
    /// 0: sync whatever is queued as soon as the writer wakes; > 0: wait this long
    /// after the first queued append to gather more into the same sync.
    pub group_commit_window: Duration,
    /// Segment files are rolled once they would grow past this (default 64 MiB).
    pub segment_bytes: u64,
    /// Distance between sparse index entries (default 4 KiB).
    pub index_interval_bytes: u64,
    /// Delete segments whose newest record is older than this.
    pub retention_age: Option<Duration>,
    /// Per stream: delete oldest segments while the stream is larger than this.
    pub retention_bytes: Option<u64>,
    /// How often the writer checks retention (default 1 s; also after every roll).
    pub retention_interval: Duration,
    /// How long a dedup key is remembered, by record timestamp (default 5 min).
    pub dedup_window: Duration,
    /// Per stream cap on remembered dedup keys, oldest evicted first (default 1,000,000).
    pub dedup_max_entries: usize,
    /// Max key + payload bytes of one record (default 1 MiB, at most 256 MiB).
    pub max_record_bytes: usize,
    /// Max queued (unanswered) append batches (default 4096).
    pub append_queue: usize,
    /// How long `append` waits for queue space before `Overloaded` (default 100 ms).
    pub append_wait: Duration,
    /// Memory for the newest records of all streams, served to reads without disk (default 64 MiB).
    pub tail_cache_bytes: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> Self {
        EmbeddedConfig {
            dir: PathBuf::new(),
            durability: Durability::Fsync,
            group_commit_window: Duration::ZERO,
            segment_bytes: 64 * 1024 * 1024,
            index_interval_bytes: 4096,
            retention_age: None,
            retention_bytes: None,
            retention_interval: Duration::from_secs(1),
            dedup_window: Duration::from_secs(300),
            dedup_max_entries: 1_000_000,
            max_record_bytes: 1024 * 1024,
            append_queue: 4096,
            append_wait: Duration::from_millis(100),
            tail_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

impl EmbeddedConfig {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        EmbeddedConfig {
            dir: dir.into(),
            ..Default::default()
        }
    }

    fn validate(&self) -> Result<(), LogError> {
        let bad = |msg: &str| {
            Err(LogError::Io(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("embedded log config: {msg}"),
            )))
        };
        if self.dir.as_os_str().is_empty() {
            return bad("dir must be set");
        }
        if self.max_record_bytes > record::RECORD_BYTES_LIMIT {
            return bad("max_record_bytes exceeds 256 MiB");
        }
        if self.segment_bytes == 0 || self.append_queue == 0 {
            return bad("segment_bytes and append_queue must be > 0");
        }
        Ok(())
    }
}

/// State shared by the API side and the writer thread.
pub(crate) struct Shared {
    pub config: EmbeddedConfig,
    pub streams_dir: PathBuf,
    pub streams: RwLock<HashMap<String, Arc<Stream>>>,
    pub stats: stats::Stats,
    /// Milliseconds since the Unix epoch; injectable so tests can age records.
    pub clock: Clock,
    /// Total accounted bytes of all tail caches.
    pub cache_bytes: AtomicU64,
    /// Test hook: segment syncs fail while set.
    #[cfg(test)]
    pub fail_syncs: AtomicBool,
}

pub(crate) type Clock = Arc<dyn Fn() -> u64 + Send + Sync>;

fn system_now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, writer::duration_ms)
}

/// The embedded log. Dropping it (or [`EmbeddedLog::close`]) flushes queued appends
/// and stops the writer thread.
pub struct EmbeddedLog {
    shared: Arc<Shared>,
    epoch: u64,
    tx: mpsc::Sender<Msg>,
    permits: Arc<Semaphore>,
    closed: AtomicBool,
    writer: Mutex<Option<JoinHandle<()>>>,
    /// Exclusive lock on `<dir>/LOCK` for the life of the log: two processes appending
    /// to the same segments would corrupt each other. The OS drops it when we die.
    lock: Mutex<Option<fs::File>>,
}

impl std::fmt::Debug for EmbeddedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedLog")
            .field("dir", &self.shared.config.dir)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

fn lock_dir(dir: &std::path::Path) -> Result<fs::File, LogError> {
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join("LOCK"))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(fs::TryLockError::WouldBlock) => Err(LogError::Io(std::io::Error::new(
            std::io::ErrorKind::WouldBlock,
            format!(
                "the log directory {} is in use by another process",
                dir.display()
            ),
        ))),
        Err(fs::TryLockError::Error(e)) => Err(LogError::Io(e)),
    }
}

impl EmbeddedLog {
    /// Opens (or creates) the log in `config.dir`, recovering every stream. Blocking:
    /// call at startup, or from `spawn_blocking`.
    pub fn open(config: EmbeddedConfig) -> Result<Arc<Self>, LogError> {
        Self::open_with_clock(config, Arc::new(system_now_ms))
    }

    pub(crate) fn open_with_clock(
        config: EmbeddedConfig,
        clock: Clock,
    ) -> Result<Arc<Self>, LogError> {
        config.validate()?;
        fs::create_dir_all(&config.dir)?;
        let lock = lock_dir(&config.dir)?;
        let epoch = load_or_create_epoch(&config.dir)?;
        let streams_dir = config.dir.join(STREAMS_DIR);
        if !streams_dir.exists() {
            fs::create_dir_all(&streams_dir)?;
            fsutil::sync_dir(&config.dir)?;
        }
        let params = recovery::RecoverParams {
            index_interval: config.index_interval_bytes,
            dedup_window_ms: writer::duration_ms(config.dedup_window),
            dedup_max_entries: config.dedup_max_entries,
            now_ms: clock(),
        };
        let mut streams = HashMap::new();
        let mut writers = HashMap::new();
        let mut segments = 0;
        for entry in fs::read_dir(&streams_dir)? {
            let entry = entry?;
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            if !entry.file_type()?.is_dir() || validate_name(&name).is_err() {
                tracing::warn!(entry = %entry.path().display(), "Ignoring foreign entry in the streams directory.");
                continue;
            }
            let (stream, w) = recovery::open_stream(&entry.path(), &name, &params)?;
            segments += stream.view.read().segments.len() as u64;
            streams.insert(name.clone(), stream);
            writers.insert(name, w);
        }
        let shared = Arc::new(Shared {
            config,
            streams_dir,
            streams: RwLock::new(streams),
            stats: stats::Stats::default(),
            clock,
            cache_bytes: AtomicU64::new(0),
            #[cfg(test)]
            fail_syncs: AtomicBool::new(false),
        });
        shared.stats.segments.store(segments, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel();
        let w = writer::Writer {
            shared: shared.clone(),
            rx,
            streams: writers,
        };
        let handle = std::thread::Builder::new()
            .name("tidegate-log-writer".into())
            .spawn(move || w.run())?;
        let permits = Arc::new(Semaphore::new(shared.config.append_queue));
        tracing::info!(dir = %shared.config.dir.display(), epoch, "Embedded log opened.");
        Ok(Arc::new(EmbeddedLog {
            shared,
            epoch,
            tx,
            permits,
            closed: AtomicBool::new(false),
            writer: Mutex::new(Some(handle)),
            lock: Mutex::new(Some(lock)),
        }))
    }

    /// Metrics snapshot.
    pub fn stats(&self) -> LogStats {
        self.shared.stats.snapshot()
    }

    /// Names of all streams, sorted.
    pub fn streams(&self) -> Vec<String> {
        let mut v: Vec<String> = self.shared.streams.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// Stops accepting appends, lets the writer finish everything queued, and joins
    /// it. Idempotent; blocks for at most one group commit.
    pub fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.permits.close();
        let _ = self.tx.send(Msg::Shutdown);
        if let Some(handle) = self.writer.lock().take() {
            if handle.join().is_err() {
                tracing::error!("Log writer thread panicked.");
            }
        }
        // Nothing writes after the writer stopped: another process may open the log now
        // (a restart in the same process, while readers still hold this handle).
        self.lock.lock().take();
    }

    fn stream(&self, name: &str) -> Result<Arc<Stream>, LogError> {
        validate_name(name)?;
        self.shared
            .streams
            .read()
            .get(name)
            .cloned()
            .ok_or_else(|| LogError::UnknownStream(name.to_owned()))
    }

    /// Test hook: blocks the writer until the returned sender is dropped.
    #[cfg(test)]
    pub(crate) fn stall_writer(&self) -> mpsc::Sender<()> {
        let (release, wait) = mpsc::channel();
        let _ = self.tx.send(Msg::Stall(wait));
        release
    }

    async fn acquire_slot(&self) -> Result<tokio::sync::OwnedSemaphorePermit, LogError> {
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => Ok(p),
            Err(TryAcquireError::Closed) => Err(LogError::Closed),
            Err(TryAcquireError::NoPermits) => {
                match tokio::time::timeout(
                    self.shared.config.append_wait,
                    self.permits.clone().acquire_owned(),
                )
                .await
                {
                    Ok(Ok(p)) => Ok(p),
                    Ok(Err(_)) => Err(LogError::Closed),
                    Err(_) => {
                        self.shared
                            .stats
                            .overloaded_rejections
                            .fetch_add(1, Ordering::Relaxed);
                        Err(LogError::Overloaded)
                    }
                }
            }
        }
    }
}

impl Drop for EmbeddedLog {
    fn drop(&mut self) {
        self.close();
    }
}

/// `[A-Za-z0-9._-]{1,200}`, not `.` or `..`: safe as a single path component.
pub(crate) fn validate_name(name: &str) -> Result<(), LogError> {
    let ok = (1..=200).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidStreamName(name.to_owned()))
    }
}

fn load_or_create_epoch(dir: &std::path::Path) -> Result<u64, LogError> {
    let path = dir.join(EPOCH_FILE);
    match fsutil::read_u64_file(&path)? {
        Some(Ok(epoch)) if epoch != 0 => Ok(epoch),
        Some(_) => Err(LogError::Corrupt(format!(
            "epoch file {} is damaged",
            path.display()
        ))),
        None => {
            let mut epoch = 0;
            while epoch == 0 {
                epoch = rand::random::<u64>();
            }
            fsutil::write_atomic(&path, &fsutil::encode_u64(epoch))?;
            Ok(epoch)
        }
    }
}

/// Appends records to `out` within the limits; `false` once a limit is reached.
fn take(
    out: &mut Vec<Record>,
    bytes: &mut usize,
    max_records: usize,
    max_bytes: usize,
    rec: Record,
) -> bool {
    if out.len() >= max_records || (!out.is_empty() && *bytes + rec.payload.len() > max_bytes) {
        return false;
    }
    *bytes += rec.payload.len();
    out.push(rec);
    true
}

fn read_cache(
    stream: &Stream,
    from: u64,
    max_records: usize,
    max_bytes: usize,
) -> Option<Vec<Record>> {
    let tail = stream.tail.lock();
    let first = tail.first_offset()?;
    if from < first {
        return None;
    }
    let mut out = Vec::new();
    let mut bytes = 0;
    for r in tail.records.iter().skip((from - first) as usize) {
        if !take(&mut out, &mut bytes, max_records, max_bytes, r.clone()) {
            break;
        }
    }
    (!out.is_empty()).then_some(out)
}

/// Blocking: reads committed records `[from, next)` from segment files.
fn read_segments(
    segments: &[Arc<Segment>],
    from: u64,
    next: u64,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<Record>, LogError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    for seg in segments {
        if seg.base >= next {
            break;
        }
        // Acquire pairs with the writer's Release: all records below `next` lie within.
        let end = seg.committed_len.load(Ordering::Acquire);
        let start = if from > seg.base {
            seg.index.read().floor(from)
        } else {
            0
        };
        let mut reader = SegmentReader::new(&seg.file, start, end);
        loop {
            match reader.next_record()? {
                Next::End => break,
                Next::Bad(pos, reason) => {
                    return Err(LogError::Corrupt(format!(
                        "{}: invalid record at byte {pos}: {reason}",
                        seg.path.display()
                    )))
                }
                Next::Record(_, rec) => {
                    if rec.offset >= next {
                        return Ok(out);
                    }
                    if rec.offset < from {
                        continue;
                    }
                    let r = Record {
                        offset: rec.offset,
                        timestamp_ms: rec.timestamp_ms,
                        payload: Bytes::copy_from_slice(rec.payload),
                    };
                    if !take(&mut out, &mut bytes, max_records, max_bytes, r) {
                        return Ok(out);
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Synchronous forms of the trait's stream and consumer lookups (the embedded log
/// needs no network round trip for either).
impl EmbeddedLog {
    pub fn ensure_stream(&self, name: &str) -> Result<(), LogError> {
        validate_name(name)?;
        if self.shared.streams.read().contains_key(name) {
            return Ok(());
        }
        // Directory IO outside the map lock; concurrent creators race harmlessly.
        let dir = recovery::create_stream_dir(&self.shared.streams_dir, name)?;
        let mut map = self.shared.streams.write();
        map.entry(name.to_owned()).or_insert_with(|| {
            let consumers = consumers::Consumers::empty(&dir);
            Arc::new(Stream::new(
                name.to_owned(),
                dir,
                stream::View::default(),
                consumers,
            ))
        });
        Ok(())
    }

    pub fn consumer_position(&self, stream: &str, consumer: &str) -> Result<Option<u64>, LogError> {
        let st = self.stream(stream)?;
        validate_name(consumer)?;
        Ok(st.consumers.get(consumer))
    }
}

#[async_trait]
impl EventLog for EmbeddedLog {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    async fn ensure_stream(&self, name: &str) -> Result<(), LogError> {
        EmbeddedLog::ensure_stream(self, name)
    }

    fn close(&self) {
        EmbeddedLog::close(self)
    }

    async fn append(
        &self,
        stream: &str,
        records: Vec<AppendRecord>,
    ) -> Result<Vec<Appended>, LogError> {
        let st = self.stream(stream)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let max = self.shared.config.max_record_bytes;
        for r in &records {
            let key_len = r.dedup_key.as_ref().map_or(0, |k| k.len());
            if key_len > u16::MAX as usize {
                return Err(LogError::RecordTooLarge(key_len, u16::MAX as usize));
            }
            if key_len + r.payload.len() > max {
                return Err(LogError::RecordTooLarge(key_len + r.payload.len(), max));
            }
        }
        if st.is_failed() {
            return Err(writer::failed_error(stream));
        }
        if self.closed.load(Ordering::Acquire) {
            return Err(LogError::Closed);
        }
        let permit = self.acquire_slot().await?;
        let (reply, answer) = oneshot::channel();
        self.tx
            .send(Msg::Append {
                stream: st,
                records,
                reply,
                permit,
            })
            .map_err(|_| LogError::Closed)?;
        // If this future is dropped now, the batch is still written (outcome unknown to
        // the caller, as with any lost acknowledgement).
        answer.await.map_err(|_| LogError::Closed)?
    }

    fn bounds(&self, stream: &str) -> Result<Bounds, LogError> {
        Ok(self.stream(stream)?.view.read().bounds())
    }

    fn watch_next(&self, stream: &str) -> Result<watch::Receiver<u64>, LogError> {
        Ok(self.stream(stream)?.next_tx.subscribe())
    }

    async fn read(
        &self,
        stream: &str,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let st = self.stream(stream)?;
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let (segments, bounds) = {
            let view = st.view.read();
            let bounds = view.bounds();
            let from = from.max(bounds.first);
            let idx = view
                .segments
                .partition_point(|s| s.base <= from)
                .saturating_sub(1);
            (
                view.segments[idx.min(view.segments.len())..].to_vec(),
                bounds,
            )
        };
        let from = from.max(bounds.first);
        if from >= bounds.next {
            return Ok(Vec::new());
        }
        if let Some(out) = read_cache(&st, from, max_records, max_bytes) {
            return Ok(out);
        }
        tokio::task::spawn_blocking(move || {
            read_segments(&segments, from, bounds.next, max_records, max_bytes)
        })
        .await
        .map_err(|e| LogError::Io(io::Error::other(e)))?
    }

    async fn commit_consumer(
        &self,
        stream: &str,
        consumer: &str,
        next: u64,
    ) -> Result<(), LogError> {
        let st = self.stream(stream)?;
        validate_name(consumer)?;
        let consumer = consumer.to_owned();
        tokio::task::spawn_blocking(move || st.consumers.commit(&consumer, next))
            .await
            .map_err(|e| LogError::Io(io::Error::other(e)))??;
        Ok(())
    }

    async fn consumer_position(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<Option<u64>, LogError> {
        EmbeddedLog::consumer_position(self, stream, consumer)
    }
}
