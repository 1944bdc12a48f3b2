//! One stream as this node sees it: the locally known bounds, the tail cache, and the
//! tail task that keeps both current.
//!
//! The tail task owns an ephemeral pull consumer that starts right after the newest
//! record it has seen and pulls batches forever. Every delivered record goes into the
//! cache and advances `tail_next`; `next` (what `watch_next` and `bounds` report) is
//! the maximum of `tail_next`, the acknowledgements of this node's appends, and the
//! stream's `last_seq` from the info refresh (1 s), so records appended by other nodes
//! are announced even while the consumer is being re-created.
//!
//! The consumer is re-created from `tail_next` (so no sequence is skipped and none is
//! cached twice) when the connection comes back, when a pull fails, when a consumer
//! sequence is missing (a lost delivery), and when the stream has records the tail
//! has not delivered for [`STALL_TICKS`] refreshes (the server forgot the consumer).

use crate::Inner;
use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy};
use async_nats::jetstream::stream::Info;
use futures_util::StreamExt;
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tidegate_log::{Bounds, Record};
use tokio::sync::watch;

use crate::names::StreamNames;

/// How often `first`/`next` are refreshed from the stream info.
pub(crate) const INFO_INTERVAL: Duration = Duration::from_secs(1);
/// Refreshes with undelivered records and no progress before the consumer is re-created.
const STALL_TICKS: u32 = 3;
/// Records asked for per pull request of the tail.
const TAIL_BATCH: usize = 512;
/// How long a tail pull request waits at the server for records.
const TAIL_EXPIRES: Duration = Duration::from_secs(5);
/// Server-side lifetime of a consumer nobody pulls from (crashed node, replaced tail).
pub(crate) const CONSUMER_INACTIVE: Duration = Duration::from_secs(30);
/// Approximate memory of one cached record beyond its payload.
const CACHE_RECORD_OVERHEAD: usize = 64;

/// The tail caches of all streams share one budget; each stream evicts its own oldest
/// records while the total is over budget and it holds at least its fair share.
#[derive(Debug, Default)]
pub(crate) struct CacheBudget {
    pub budget: usize,
    pub total: AtomicU64,
    pub streams: AtomicU64,
}

/// Newest records of one stream: every stored record with offset in `[lo, tail_next)`.
#[derive(Debug, Default)]
pub(crate) struct Cache {
    lo: u64,
    records: VecDeque<Record>,
    bytes: usize,
}

/// Reads from the server start a consumer at an offset; one whose next offset matches
/// the next read (sequential replay) is reused.
pub(crate) struct Reader {
    pub consumer: async_nats::jetstream::consumer::PullConsumer,
    /// Offset after the last record returned.
    pub next: u64,
    /// Records delivered but not yet returned (the read hit `max_bytes`).
    pub leftover: VecDeque<Record>,
    pub consumer_seq: u64,
    pub last_used: tokio::time::Instant,
}

pub(crate) struct StreamState {
    pub name: String,
    pub names: StreamNames,
    pub js: async_nats::jetstream::stream::Stream<Info>,
    pub first: AtomicU64,
    pub next_tx: watch::Sender<u64>,
    /// Offset after the newest record the tail delivered into the cache.
    pub tail_tx: watch::Sender<u64>,
    pub cache: Mutex<Cache>,
    pub readers: Mutex<Vec<Reader>>,
    /// Held while one append sends its publishes, so a node's batch gets increasing,
    /// consecutive sequences unless another node appends at the same moment.
    pub append_lock: tokio::sync::Mutex<()>,
}

/// Bounds from stream info: JetStream sequences start at 1, offsets at 0.
pub(crate) fn bounds_of(info: &Info) -> Bounds {
    let s = &info.state;
    let next = s.last_sequence;
    let first = if s.messages == 0 {
        next
    } else {
        s.first_sequence.saturating_sub(1)
    };
    Bounds {
        first: first.min(next),
        next,
    }
}

impl StreamState {
    pub(crate) fn new(
        name: String,
        names: StreamNames,
        js: async_nats::jetstream::stream::Stream<Info>,
    ) -> Self {
        let b = bounds_of(js.cached_info());
        let (next_tx, _) = watch::channel(b.next);
        let (tail_tx, _) = watch::channel(b.next);
        StreamState {
            name,
            names,
            js,
            first: AtomicU64::new(b.first),
            next_tx,
            tail_tx,
            cache: Mutex::new(Cache {
                lo: b.next,
                ..Cache::default()
            }),
            readers: Mutex::new(Vec::new()),
            append_lock: tokio::sync::Mutex::new(()),
        }
    }

    pub(crate) fn bounds(&self) -> Bounds {
        let next = *self.next_tx.borrow();
        Bounds {
            first: self.first.load(Ordering::Acquire).min(next),
            next,
        }
    }

    pub(crate) fn tail_next(&self) -> u64 {
        *self.tail_tx.borrow()
    }

    /// Announces that `next` (exclusive) is committed.
    pub(crate) fn advance(&self, next: u64) {
        self.next_tx.send_if_modified(|n| {
            let grew = next > *n;
            if grew {
                *n = next;
            }
            grew
        });
    }

    fn apply_info(&self, info: &Info) {
        let b = bounds_of(info);
        self.first.fetch_max(b.first, Ordering::AcqRel);
        self.advance(b.next);
    }

    /// Records from the cache when `from` lies within it.
    pub(crate) fn read_cache(
        &self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Option<Vec<Record>> {
        let cache = self.cache.lock();
        if from < cache.lo || from >= self.tail_next() {
            return None;
        }
        let start = cache.records.partition_point(|r| r.offset < from);
        let mut out = Vec::new();
        let mut bytes = 0;
        for r in cache.records.iter().skip(start) {
            if !take(&mut out, &mut bytes, max_records, max_bytes, r) {
                break;
            }
        }
        (!out.is_empty()).then_some(out)
    }

    fn push(&self, budget: &CacheBudget, rec: Record) {
        let next = rec.offset + 1;
        {
            let mut cache = self.cache.lock();
            if budget.budget == 0 {
                cache.lo = next;
            } else {
                let size = rec.payload.len() + CACHE_RECORD_OVERHEAD;
                cache.bytes += size;
                cache.records.push_back(rec);
                budget.total.fetch_add(size as u64, Ordering::AcqRel);
                let streams = budget.streams.load(Ordering::Relaxed).max(1) as usize;
                let share = budget.budget / streams;
                while !cache.records.is_empty()
                    && (cache.bytes > budget.budget
                        || (budget.total.load(Ordering::Acquire) > budget.budget as u64
                            && cache.bytes > share))
                {
                    let Some(old) = cache.records.pop_front() else {
                        break;
                    };
                    let size = old.payload.len() + CACHE_RECORD_OVERHEAD;
                    cache.bytes -= size;
                    cache.lo = old.offset + 1;
                    budget.total.fetch_sub(size as u64, Ordering::AcqRel);
                }
                if cache.records.is_empty() {
                    cache.lo = next;
                }
            }
        }
        // After the cache holds the record: readers woken by the watch find it there.
        self.tail_tx.send_replace(next);
        self.advance(next);
    }

    /// Gives the cache's bytes back to the budget (the stream is being dropped).
    pub(crate) fn release_cache(&self, budget: &CacheBudget) {
        let mut cache = self.cache.lock();
        budget.total.fetch_sub(cache.bytes as u64, Ordering::AcqRel);
        cache.bytes = 0;
        cache.records.clear();
    }

    pub(crate) fn take_reader(&self, from: u64) -> Option<Reader> {
        let mut readers = self.readers.lock();
        // Drop readers whose server-side consumer may have expired meanwhile.
        readers.retain(|r| r.last_used.elapsed() < CONSUMER_INACTIVE / 2);
        let i = readers.iter().position(|r| r.next == from)?;
        Some(readers.swap_remove(i))
    }

    pub(crate) fn put_reader(&self, mut reader: Reader, max: usize) {
        reader.last_used = tokio::time::Instant::now();
        let mut readers = self.readers.lock();
        if readers.len() >= max {
            // The oldest one's server-side consumer expires after CONSUMER_INACTIVE.
            readers.remove(0);
        }
        readers.push(reader);
    }
}

/// Appends `rec` to `out` within the limits (always at least one); `false` once full.
pub(crate) fn take(
    out: &mut Vec<Record>,
    bytes: &mut usize,
    max_records: usize,
    max_bytes: usize,
    rec: &Record,
) -> bool {
    if out.len() >= max_records || (!out.is_empty() && *bytes + rec.payload.len() > max_bytes) {
        return false;
    }
    *bytes += rec.payload.len();
    out.push(rec.clone());
    true
}

/// A delivered JetStream message as a record, with its consumer sequence.
pub(crate) fn to_record(msg: &async_nats::jetstream::Message) -> Result<(u64, Record), String> {
    let info = msg
        .info()
        .map_err(|e| format!("message without JetStream metadata: {e}"))?;
    let nanos = info.published.unix_timestamp_nanos();
    let rec = Record {
        offset: info.stream_sequence.saturating_sub(1),
        timestamp_ms: u64::try_from(nanos / 1_000_000).unwrap_or(0),
        payload: msg.payload.clone(),
    };
    Ok((info.consumer_sequence, rec))
}

/// An ephemeral pull consumer delivering from stream sequence `start_seq`.
pub(crate) async fn create_consumer(
    inner: &Inner,
    st: &StreamState,
    start_seq: u64,
) -> Result<async_nats::jetstream::consumer::PullConsumer, String> {
    let config = pull::Config {
        deliver_policy: DeliverPolicy::ByStartSequence {
            start_sequence: start_seq.max(1),
        },
        ack_policy: AckPolicy::None,
        inactive_threshold: CONSUMER_INACTIVE,
        memory_storage: true,
        num_replicas: 1,
        ..pull::Config::default()
    };
    let r = tokio::time::timeout(inner.cfg.request_timeout, st.js.create_consumer(config)).await;
    match r {
        Ok(Ok(c)) => {
            inner.js_ok();
            Ok(c)
        }
        Ok(Err(e)) => Err(inner.js_failed(format!(
            "creating a consumer on {}: {e}",
            st.names.js_stream
        ))),
        Err(_) => Err(inner.js_failed(format!(
            "creating a consumer on {}: timed out",
            st.names.js_stream
        ))),
    }
}

async fn refresh(inner: &Inner, st: &StreamState) {
    match tokio::time::timeout(inner.cfg.request_timeout, st.js.get_info()).await {
        Ok(Ok(info)) => {
            inner.js_ok();
            st.apply_info(&info);
            // Records retention removed are no use to anyone: free them.
            let first = st.first.load(Ordering::Acquire);
            let mut cache = st.cache.lock();
            let mut freed = 0;
            while cache.records.front().is_some_and(|r| r.offset < first) {
                if let Some(old) = cache.records.pop_front() {
                    freed += old.payload.len() + CACHE_RECORD_OVERHEAD;
                }
            }
            cache.bytes -= freed;
            inner.cache.total.fetch_sub(freed as u64, Ordering::AcqRel);
        }
        Ok(Err(e)) => {
            inner.js_failed(format!("stream info of {}: {e}", st.names.js_stream));
        }
        Err(_) => {
            inner.js_failed(format!("stream info of {}: timed out", st.names.js_stream));
        }
    }
}

enum Restart {
    Shutdown,
    Because(String),
}

/// The tail task of one stream; returns on shutdown.
pub(crate) async fn run(inner: Arc<Inner>, st: Arc<StreamState>) {
    let mut conn = inner.conn.generation.subscribe();
    let mut tick = tokio::time::interval(INFO_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut failures = 0u32;
    tracing::debug!(stream = %st.name, from = st.tail_next(), "Tail started.");
    loop {
        match follow(&inner, &st, &mut conn, &mut tick).await {
            Restart::Shutdown => break,
            Restart::Because(reason) => {
                failures += 1;
                inner.stats.tail_restarts.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(stream = %st.name, from = st.tail_next(), %reason, "Re-creating the tail consumer.");
                // Immediately the first time (a reconnect), then back off up to 2 s.
                let backoff =
                    Duration::from_millis(100 * u64::from(failures.saturating_sub(1).min(20)));
                tokio::select! {
                    _ = inner.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(backoff) => {}
                }
            }
        }
    }
    tracing::debug!(stream = %st.name, "Tail stopped.");
}

/// Follows the stream with one consumer until it must be replaced.
async fn follow(
    inner: &Inner,
    st: &StreamState,
    conn: &mut watch::Receiver<u64>,
    tick: &mut tokio::time::Interval,
) -> Restart {
    conn.borrow_and_update();
    let start = st.tail_next() + 1;
    let consumer = tokio::select! {
        _ = inner.shutdown.cancelled() => return Restart::Shutdown,
        c = create_consumer(inner, st, start) => match c {
            Ok(c) => c,
            Err(e) => return Restart::Because(e),
        },
    };
    let mut consumer_seq = 0u64;
    let mut stalled = 0u32;
    let mut progressed = false;
    loop {
        let pull = consumer
            .batch()
            .max_messages(TAIL_BATCH)
            .expires(TAIL_EXPIRES)
            .messages();
        let mut batch = tokio::select! {
            _ = inner.shutdown.cancelled() => return Restart::Shutdown,
            b = tokio::time::timeout(inner.cfg.request_timeout, pull) => match b {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => return Restart::Because(format!("pull request failed: {e}")),
                Err(_) => return Restart::Because("pull request timed out".into()),
            },
        };
        loop {
            tokio::select! {
                _ = inner.shutdown.cancelled() => return Restart::Shutdown,
                changed = conn.changed() => {
                    if changed.is_err() {
                        return Restart::Shutdown;
                    }
                    return Restart::Because("reconnected".into());
                }
                _ = tick.tick() => {
                    refresh(inner, st).await;
                    if st.bounds().next > st.tail_next() && !progressed {
                        stalled += 1;
                    } else {
                        stalled = 0;
                    }
                    progressed = false;
                    if stalled >= STALL_TICKS {
                        return Restart::Because("no delivery while the stream has newer records".into());
                    }
                }
                m = batch.next() => match m {
                    None => break,
                    Some(Err(e)) => return Restart::Because(format!("pull failed: {e}")),
                    Some(Ok(msg)) => {
                        let (cseq, rec) = match to_record(&msg) {
                            Ok(r) => r,
                            Err(e) => return Restart::Because(e),
                        };
                        if cseq != consumer_seq + 1 {
                            return Restart::Because(format!(
                                "consumer sequence jumped from {consumer_seq} to {cseq}"
                            ));
                        }
                        consumer_seq = cseq;
                        progressed = true;
                        // A stream sequence beyond the expected one is a deletion (retention),
                        // not a loss: the consumer sequence above is contiguous.
                        if rec.offset >= st.tail_next() {
                            st.push(&inner.cache, rec);
                        }
                    }
                },
            }
        }
    }
}

/// Reports how far the tail of `st` is behind what is known to be committed.
pub(crate) fn lag(st: &StreamState) -> u64 {
    st.bounds().next.saturating_sub(st.tail_next())
}
