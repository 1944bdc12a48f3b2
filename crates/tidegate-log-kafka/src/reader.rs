//! Reads that the tail cache cannot answer (history, or a tail that is behind): a
//! small pool of group-less `BaseConsumer`s, each assigned partition 0 of the topic
//! at `from` for the duration of one read and polled until the limits, the end of
//! the partition (`enable.partition.eof`) or the deadline. Everything here blocks:
//! callers run it on `spawn_blocking`.

use crate::config::{KafkaConfig, Role};
use crate::context::{Ctx, Health};
use crate::error::Error;
use crate::stats::Stats;
use bytes::Bytes;
use parking_lot::Mutex;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_log::Record;

/// Idle consumers kept for reuse; more concurrent reads create (and drop) extras.
const POOL_SIZE: usize = 4;

pub(crate) struct Readers {
    config: ClientConfig,
    health: Arc<Health>,
    stats: Arc<Stats>,
    timeout: Duration,
    pool: Mutex<Vec<BaseConsumer<Ctx>>>,
}

/// Milliseconds since the Unix epoch of a Kafka message (CreateTime as produced).
pub(crate) fn timestamp_ms<M: Message>(m: &M) -> u64 {
    m.timestamp().to_millis().map_or(0, |t| t.max(0) as u64)
}

pub(crate) fn to_record<M: Message>(m: &M) -> Record {
    Record {
        offset: m.offset().max(0) as u64,
        timestamp_ms: timestamp_ms(m),
        payload: Bytes::copy_from_slice(m.payload().unwrap_or_default()),
    }
}

impl Readers {
    pub(crate) fn new(cfg: &KafkaConfig, health: Arc<Health>, stats: Arc<Stats>) -> Self {
        Readers {
            config: cfg.client_config(Role::Reader),
            health,
            stats,
            timeout: cfg.request_timeout,
            pool: Mutex::new(Vec::new()),
        }
    }

    fn take(&self) -> Result<BaseConsumer<Ctx>, Error> {
        if let Some(c) = self.pool.lock().pop() {
            return Ok(c);
        }
        self.config
            .create_with_context(Ctx::new(
                Role::Reader,
                self.health.clone(),
                self.stats.clone(),
            ))
            .map_err(Error::kafka("creating a read consumer"))
    }

    fn give_back(&self, c: BaseConsumer<Ctx>) {
        if c.unassign().is_err() {
            return;
        }
        let mut pool = self.pool.lock();
        if pool.len() < POOL_SIZE {
            pool.push(c);
        }
    }

    /// Blocking. Records of `topic` partition 0 with `offset >= from`, at most
    /// `max_records` and about `max_bytes` (at least one when one exists), stopping
    /// at the end of the partition.
    pub(crate) fn read(
        &self,
        topic: &str,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, Error> {
        self.stats
            .broker_reads
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let consumer = self.take()?;
        let result = poll_range(&consumer, topic, from, max_records, max_bytes, self.timeout);
        self.give_back(consumer);
        result
    }

    /// Blocking. `(low, high)` watermarks of partition 0.
    pub(crate) fn watermarks(&self, topic: &str) -> Result<(u64, u64), Error> {
        let consumer = self.take()?;
        let r = consumer
            .fetch_watermarks(topic, 0, self.timeout)
            .map_err(Error::kafka("fetching watermarks"));
        self.give_back(consumer);
        let (low, high) = r?;
        Ok((low.max(0) as u64, high.max(0) as u64))
    }

    /// Blocking. Offset of the first record stamped at or after `ts_ms`; `None` when
    /// there is none (or the broker cannot answer by time).
    pub(crate) fn offset_for_time(&self, topic: &str, ts_ms: u64) -> Result<Option<u64>, Error> {
        let consumer = self.take()?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Offset(ts_ms as i64))
            .map_err(Error::kafka("building a partition list"))?;
        let r = consumer
            .offsets_for_times(tpl, self.timeout)
            .map_err(Error::kafka("listing offsets by time"));
        self.give_back(consumer);
        let tpl = r?;
        Ok(tpl.find_partition(topic, 0).and_then(|p| match p.offset() {
            Offset::Offset(o) if o >= 0 => Some(o as u64),
            _ => None,
        }))
    }

    /// Drops the pooled consumers (blocking: librdkafka joins its threads).
    pub(crate) fn clear(&self) {
        let pooled = std::mem::take(&mut *self.pool.lock());
        drop(pooled);
    }
}

fn poll_range(
    consumer: &BaseConsumer<Ctx>,
    topic: &str,
    from: u64,
    max_records: usize,
    max_bytes: usize,
    timeout: Duration,
) -> Result<Vec<Record>, Error> {
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, 0, Offset::Offset(from.min(i64::MAX as u64) as i64))
        .map_err(Error::kafka("building a partition list"))?;
    consumer
        .assign(&tpl)
        .map_err(Error::kafka("assigning a read consumer"))?;
    let deadline = Instant::now() + timeout;
    let mut out: Vec<Record> = Vec::new();
    let mut bytes = 0usize;
    let mut last_error = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        match consumer.poll(left.min(Duration::from_millis(100))) {
            None => {}
            Some(Ok(m)) => {
                if m.topic() != topic || m.partition() != 0 || (m.offset() as u64) < from {
                    continue;
                }
                let len = m.payload().map_or(0, <[u8]>::len);
                if !out.is_empty() && bytes + len > max_bytes {
                    return Ok(out);
                }
                bytes += len;
                out.push(to_record(&m));
                if out.len() >= max_records {
                    return Ok(out);
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) => return Ok(out),
            Some(Err(e)) => {
                if !out.is_empty() {
                    return Ok(out);
                }
                last_error = Some(e);
            }
        }
    }
    if !out.is_empty() {
        return Ok(out);
    }
    Err(match last_error {
        Some(e) => Error::Kafka {
            op: "reading",
            source: e,
        },
        None => Error::Timeout("reading"),
    })
}
