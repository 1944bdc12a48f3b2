//! The Kafka backend of the [`EventLog`]: in cluster mode every Tidegate node appends
//! to and tails the same topics, so a client resumes on any node with the same cursor.
//!
//! # Layout in Kafka
//!
//! - Stream `s` is topic `{prefix}s` with **one partition**: the trait's positions
//!   are single `u64` offsets and the hub delivers in log order, so offset = Kafka
//!   offset of partition 0. (A multi-partition events topic would need vector
//!   cursors — future work.) Topics are created with the admin client when absent;
//!   an existing topic with more than one partition is refused.
//! - `{prefix}_meta` (one partition, no retention) holds the epoch: the first record
//!   ever produced to it. A node that finds it empty produces a random one and
//!   re-reads the first record, so the first writer wins and all nodes agree. The
//!   stream name `_meta` is therefore reserved.
//! - Named consumer `c` is the committed offset of consumer group `{prefix}c` for
//!   (`{prefix}s`, 0) ([`groups`]).
//!
//! # How data moves
//!
//! `append` checks the local dedup index ([`dedup`]), produces the new records with an
//! idempotent producer (`acks=all`, key = dedup key, CreateTime = now), awaits every
//! delivery report and returns their offsets. One tail task per stream ([`tail`])
//! consumes the topic from the broker — this node's records and every other node's —
//! into a byte-bounded cache ([`cache`]) and the dedup index, and raises the `next`
//! watch that wakes the hub. `read` answers from the cache, waits briefly for a tail
//! that is just behind, else fetches from the broker with a pooled consumer
//! ([`reader`]). A probe task checks broker metadata every second ([`context`] owns
//! the resulting health) and refreshes the low watermark (retention) and the lag.
//!
//! # Guarantees and their limits
//!
//! - An acknowledged append is stored with `acks=all`.
//! - A batch is **not** atomic: a failure mid-batch (timeout, broker down) may leave a
//!   prefix stored. The offsets of records already stored enter the dedup index, so a
//!   retry with the same keys returns `Duplicate` for them. Offsets of one batch are
//!   in order but may interleave with other nodes' records.
//! - Dedup is per node and best effort across nodes: a key is known to a node once it
//!   appended it or its tail saw it. With `dedup_sync` (default) an append with keys
//!   first lets the tail catch up to the high watermark (one ListOffsets round trip),
//!   so a retry on another node after the first append returned is recognised. Two
//!   nodes that receive the same event concurrently (within that round trip plus the
//!   produce) may both store it (the hub and clients then see two records with the
//!   same CloudEvents id). At startup each stream re-reads the last
//!   `dedup_window` (at most `dedup_max_keys` records) to rebuild the index.
//! - While the broker is down, `health()` errs and appends fail with `Unavailable`
//!   within `request_timeout`; the tail keeps polling and resumes by itself.
//! - Kafka refuses topics whose names differ only in `.` vs `_` (`a.b` and `a_b`)
//!   on some brokers; such stream names cannot coexist.
//!
//! # Threads
//!
//! librdkafka's blocking calls (metadata, watermarks, offsets, commits, polls of the
//! read consumers, client destruction) run on `spawn_blocking`; the producer's
//! delivery reports, the admin client and the tails' `StreamConsumer`s are async.
//! Every task is owned by a `TaskTracker` and stopped by [`KafkaLog::close`].
#![forbid(unsafe_code)]

mod cache;
mod config;
mod context;
mod dedup;
mod error;
mod groups;
mod lease;
mod reader;
mod stats;
mod stream;
mod tail;

pub use config::{KafkaConfig, Sasl, SaslMechanism, Ssl};
pub use error::Error;
pub use stats::KafkaStats;

use async_trait::async_trait;
use bytes::Bytes;
use config::{Role, TOPIC_NAME_LIMIT};
use context::{Ctx, Health};
use dedup::{Dedup, Pending};
use parking_lot::RwLock;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::consumer::{Consumer, StreamConsumer};
use rdkafka::producer::{DeliveryFuture, FutureProducer, FutureRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use stats::Stats;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use stream::Stream;
use tidegate_log::{AppendRecord, Appended, Bounds, EventLog, LogError, Record};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Name (after the prefix) of the topic holding the epoch.
const META: &str = "_meta";
/// How often the probe task checks broker metadata.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// Upper bound on one metadata probe (shorter than `request_timeout` if that is long).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// The low watermark and lag are refreshed every this many probes.
const WATERMARK_EVERY: u64 = 5;
/// How long `read` waits for a tail that is just behind before fetching itself.
const TAIL_WAIT: Duration = Duration::from_millis(500);
/// How long `ensure_stream` waits for the tail to rebuild the dedup index.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The clients that must be destroyed off the runtime (librdkafka joins threads).
#[derive(Clone)]
struct Clients {
    producer: FutureProducer<Ctx>,
    admin: Arc<AdminClient<Ctx>>,
}

/// State shared by the API side, the tail tasks and the probe task.
pub(crate) struct Shared {
    pub(crate) config: KafkaConfig,
    meta_topic: String,
    clients: RwLock<Option<Clients>>,
    /// Deliveries failed since the producer was created (see `renew_producer`).
    producer_suspect: AtomicBool,
    readers: Arc<reader::Readers>,
    groups: Arc<groups::Groups>,
    streams: RwLock<HashMap<String, Arc<Stream>>>,
    health: Arc<Health>,
    pub(crate) stats: Arc<Stats>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl Drop for Shared {
    fn drop(&mut self) {
        let clients = self.clients.get_mut().take();
        let readers = self.readers.clone();
        let groups = self.groups.clone();
        // Destroying librdkafka clients blocks; never do it on a runtime thread.
        let _ = std::thread::Builder::new()
            .name("tidegate-kafka-drop".into())
            .spawn(move || {
                drop(clients);
                readers.clear();
                groups.clear();
            });
    }
}

/// Runs a blocking librdkafka call on the blocking pool.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| Error::Broker(format!("blocking task failed: {e}")))?
}

/// `[A-Za-z0-9._-]{1,200}`, not `.` or `..` — the names Tidegate allows everywhere.
fn valid_name(name: &str) -> bool {
    (1..=200).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl Shared {
    fn clients(&self) -> Result<Clients, Error> {
        self.clients.read().clone().ok_or(Error::Closed)
    }

    fn topic_for(&self, stream: &str) -> Result<String, LogError> {
        let topic = format!("{}{stream}", self.config.prefix);
        if !valid_name(stream) || stream == META || topic.len() > TOPIC_NAME_LIMIT {
            return Err(LogError::InvalidStreamName(stream.to_owned()));
        }
        Ok(topic)
    }

    fn stream(&self, name: &str) -> Result<Arc<Stream>, LogError> {
        if self.clients.read().is_none() {
            return Err(LogError::Closed);
        }
        if let Some(s) = self.streams.read().get(name) {
            return Ok(s.clone());
        }
        self.topic_for(name)?;
        Err(LogError::UnknownStream(name.to_owned()))
    }

    /// Blocking-pool metadata request: the number of partitions of `topic`, or `None`
    /// when the broker does not know it.
    async fn partitions(&self, topic: &str) -> Result<Option<usize>, Error> {
        let producer = self.clients()?.producer;
        let topic = topic.to_owned();
        let timeout = self.config.request_timeout;
        blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map_err(Error::kafka("fetching topic metadata"))?;
            Ok(md
                .topics()
                .iter()
                .find(|t| t.name() == topic)
                .filter(|t| t.error().is_none() && !t.partitions().is_empty())
                .map(|t| t.partitions().len()))
        })
        .await
    }

    /// Creates `topic` with one partition unless it exists; refuses one with more.
    async fn ensure_topic(&self, topic: &str, keep_forever: bool) -> Result<(), Error> {
        let check = |n: usize| {
            if n == 1 {
                Ok(())
            } else {
                Err(Error::Partitions {
                    topic: topic.to_owned(),
                    partitions: n,
                })
            }
        };
        if let Some(n) = self.partitions(topic).await? {
            return check(n);
        }
        let admin = self.clients()?.admin;
        let timeout = self.config.request_timeout;
        let mut new = NewTopic::new(
            topic,
            1,
            TopicReplication::Fixed(self.config.replication_factor),
        );
        if keep_forever {
            new = new.set("retention.ms", "-1").set("retention.bytes", "-1");
        }
        let opts = AdminOptions::new()
            .request_timeout(Some(timeout))
            .operation_timeout(Some(timeout));
        let results = tokio::time::timeout(
            timeout + Duration::from_secs(1),
            admin.create_topics([&new], &opts),
        )
        .await
        .map_err(|_| Error::Timeout("creating a topic"))?
        .map_err(Error::kafka("creating a topic"))?;
        for r in results {
            match r {
                Ok(_) => tracing::info!(topic, "Created Kafka topic."),
                Err((_, code)) if error::is_already_exists(code) => {}
                Err((t, code)) => {
                    return Err(Error::Broker(format!("creating topic `{t}`: {code}")));
                }
            }
        }
        // Metadata may lag the creation for a moment.
        for _ in 0..50 {
            if let Some(n) = self.partitions(topic).await? {
                return check(n);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(Error::Broker(format!(
            "topic `{topic}` does not appear in metadata after creation"
        )))
    }

    /// Produces one record to partition 0 (enqueue only).
    fn enqueue(
        producer: &FutureProducer<Ctx>,
        topic: &str,
        key: Option<&Bytes>,
        payload: &[u8],
        ts: u64,
    ) -> Result<DeliveryFuture, Error> {
        let mut rec = FutureRecord::<[u8], [u8]>::to(topic)
            .partition(0)
            .payload(payload)
            .timestamp(ts.min(i64::MAX as u64) as i64);
        if let Some(k) = key {
            rec = rec.key(&k[..]);
        }
        producer
            .send_result(rec)
            .map_err(|(e, _)| Error::kafka("enqueueing a record")(e))
    }

    /// Awaits one delivery report until `deadline`; the stored offset.
    async fn delivered(
        &self,
        f: DeliveryFuture,
        deadline: tokio::time::Instant,
    ) -> Result<u64, Error> {
        match tokio::time::timeout_at(deadline, f).await {
            Err(_) => Err(Error::Timeout("waiting for a delivery report")),
            Ok(Err(_canceled)) => Err(Error::Closed),
            Ok(Ok(Err((e, _)))) => Err(Error::kafka("producing")(e)),
            Ok(Ok(Ok(d))) => Ok(d.offset.max(0) as u64),
        }
    }

    /// Rebuilds the producer when its idempotence state is unusable: after a fatal
    /// error (librdkafka cannot recover), or — `suspect` — after deliveries failed
    /// (timeouts, broker errors) once the broker answers again. tansu 0.6 does not
    /// implement KIP-360 epoch bumps: after timed-out messages left a sequence gap it
    /// rejects the producer's next batches with UNKNOWN_SERVER_ERROR, so only a new
    /// producer id gets appends going again. The old producer is flushed (its
    /// in-flight deliveries still complete) and destroyed on a background thread.
    fn renew_producer(&self) {
        let fatal = self
            .clients
            .read()
            .as_ref()
            .and_then(|c| c.producer.client().fatal_error());
        let why = match fatal {
            Some((code, reason)) => format!("fatal error {code}: {reason}"),
            None if self.health.get().is_ok()
                && self.producer_suspect.swap(false, Ordering::AcqRel) =>
            {
                "deliveries failed".to_owned()
            }
            None => return,
        };
        let fresh: Result<FutureProducer<Ctx>, _> = self
            .config
            .client_config(Role::Producer)
            .create_with_context(Ctx::new(
                Role::Producer,
                self.health.clone(),
                self.stats.clone(),
            ));
        let p = match fresh {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "Could not recreate the Kafka producer.");
                return;
            }
        };
        let old = {
            let mut guard = self.clients.write();
            let Some(clients) = guard.as_mut() else {
                return;
            };
            std::mem::replace(&mut clients.producer, p)
        };
        tracing::warn!(reason = %why, "Recreated the Kafka producer.");
        self.stats.producer_restarts.fetch_add(1, Ordering::Relaxed);
        let timeout = self.config.request_timeout;
        let _ = std::thread::Builder::new()
            .name("tidegate-kafka-drop".into())
            .spawn(move || {
                let _ = old.flush(timeout);
                drop(old);
            });
    }

    /// Waits (bounded) until the tail has seen everything stored in the topic right
    /// now, so the dedup index knows the keys other nodes appended. Best effort: on
    /// any error the append goes ahead with what the index knows.
    async fn sync_tail(&self, st: &Stream) {
        // A down broker fails the produce anyway: do not spend the time twice.
        if self.health.get().is_err() {
            return;
        }
        let Ok(clients) = self.clients() else {
            return;
        };
        let topic = st.topic.clone();
        let timeout = (self.config.request_timeout / 4).max(Duration::from_millis(100));
        let high = blocking(move || {
            clients
                .producer
                .client()
                .fetch_watermarks(&topic, 0, timeout)
                .map_err(Error::kafka("fetching watermarks"))
        })
        .await;
        let Ok((_, high)) = high else {
            return;
        };
        let high = high.max(0) as u64;
        st.high.store(high, Ordering::Relaxed);
        // Done once the tail or this node's own delivery reports account for every
        // offset below `high` (concurrent appends here are delivered, not tailed).
        let deadline = tokio::time::Instant::now() + TAIL_WAIT;
        let mut seen = st.seen.subscribe();
        let mut next = st.next.subscribe();
        while !st.all_ours(high) {
            tokio::select! {
                _ = seen.changed() => {}
                _ = next.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(5)) => {}
                _ = tokio::time::sleep_until(deadline) => break,
            }
        }
    }

    /// One metadata round trip: is a broker answering?
    async fn probe(&self) -> Result<(), Error> {
        let producer = self.clients()?.producer;
        let topic = self.meta_topic.clone();
        let timeout = self.config.request_timeout.min(PROBE_TIMEOUT);
        blocking(move || {
            let md = producer
                .client()
                .fetch_metadata(Some(&topic), timeout)
                .map_err(Error::kafka("metadata probe"))?;
            if md.brokers().is_empty() {
                return Err(Error::Broker("metadata lists no brokers".into()));
            }
            Ok(())
        })
        .await
    }

    async fn refresh_watermarks(&self) {
        let streams: Vec<Arc<Stream>> = self.streams.read().values().cloned().collect();
        let mut max_lag = 0;
        for s in streams {
            let readers = self.readers.clone();
            let topic = s.topic.clone();
            match blocking(move || readers.watermarks(&topic)).await {
                Ok((low, high)) => {
                    s.first.store(low, Ordering::Relaxed);
                    s.high.store(high, Ordering::Relaxed);
                }
                Err(e) => {
                    tracing::debug!(stream = %s.name, error = %e, "Could not refresh watermarks.")
                }
            }
            max_lag = max_lag.max(s.lag());
        }
        self.stats
            .tail_lag_records
            .store(max_lag, Ordering::Relaxed);
    }

    async fn probe_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(PROBE_INTERVAL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut n: u64 = 0;
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            let probe = tokio::select! {
                _ = self.shutdown.cancelled() => break,
                p = self.probe() => p,
            };
            match probe {
                Ok(()) => self.health.set_up(),
                Err(Error::Closed) => break,
                Err(e) => {
                    self.stats.probe_failures.fetch_add(1, Ordering::Relaxed);
                    self.health.set_down(e.to_string());
                }
            }
            self.renew_producer();
            n += 1;
            if n.is_multiple_of(WATERMARK_EVERY) && self.health.get().is_ok() {
                tokio::select! {
                    _ = self.shutdown.cancelled() => break,
                    _ = self.refresh_watermarks() => {}
                }
            }
        }
    }

    /// Reads the epoch from the meta topic, creating it (first writer wins).
    async fn load_epoch(&self) -> Result<u64, Error> {
        self.ensure_topic(&self.meta_topic, true).await?;
        for attempt in 0..3 {
            let readers = self.readers.clone();
            let topic = self.meta_topic.clone();
            let first = blocking(move || readers.read(&topic, 0, 1, usize::MAX)).await?;
            if let Some(r) = first.first() {
                let bytes: [u8; 8] = r
                    .payload
                    .as_ref()
                    .try_into()
                    .map_err(|_| Error::BadEpoch(self.meta_topic.clone()))?;
                let epoch = u64::from_be_bytes(bytes);
                if epoch == 0 {
                    return Err(Error::BadEpoch(self.meta_topic.clone()));
                }
                return Ok(epoch);
            }
            if attempt == 0 {
                let mut epoch = 0;
                while epoch == 0 {
                    epoch = rand::random::<u64>();
                }
                let producer = self.clients()?.producer;
                let f = Self::enqueue(
                    &producer,
                    &self.meta_topic,
                    None,
                    &epoch.to_be_bytes(),
                    now_ms(),
                )?;
                let deadline = tokio::time::Instant::now() + self.config.request_timeout;
                self.delivered(f, deadline).await?;
            }
        }
        Err(Error::Broker(format!(
            "no epoch record readable in `{}`",
            self.meta_topic
        )))
    }
}

/// The Kafka log. [`KafkaLog::close`] stops its tasks and destroys its clients;
/// dropping it without `close` stops the tasks and destroys the clients on a
/// background thread.
pub struct KafkaLog {
    shared: Arc<Shared>,
    epoch: u64,
    /// Serializes `ensure_stream` so each stream gets exactly one tail.
    ensure: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for KafkaLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaLog")
            .field("brokers", &self.shared.config.brokers)
            .field("prefix", &self.shared.config.prefix)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl KafkaLog {
    /// Connects to the brokers, checks that one answers within `request_timeout`,
    /// and loads (or creates) the epoch. Needs a tokio runtime.
    pub async fn connect(config: KafkaConfig) -> Result<Arc<KafkaLog>, LogError> {
        config.validate()?;
        let health = Arc::new(Health::default());
        let stats = Arc::new(Stats::default());
        let ctx = |role| Ctx::new(role, health.clone(), stats.clone());
        let producer: FutureProducer<Ctx> = config
            .client_config(Role::Producer)
            .create_with_context(ctx(Role::Producer))
            .map_err(Error::kafka("creating the producer"))?;
        let admin: AdminClient<Ctx> = config
            .client_config(Role::Admin)
            .create_with_context(ctx(Role::Admin))
            .map_err(Error::kafka("creating the admin client"))?;
        let shared = Arc::new(Shared {
            meta_topic: format!("{}{META}", config.prefix),
            readers: Arc::new(reader::Readers::new(&config, health.clone(), stats.clone())),
            groups: Arc::new(groups::Groups::new(&config, health.clone(), stats.clone())),
            clients: RwLock::new(Some(Clients {
                producer,
                admin: Arc::new(admin),
            })),
            producer_suspect: AtomicBool::new(false),
            streams: RwLock::new(HashMap::new()),
            health,
            stats,
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            config,
        });
        shared.probe().await.map_err(|e| {
            LogError::Unavailable(format!(
                "kafka: no broker answers at {}: {e}",
                shared.config.brokers
            ))
        })?;
        let epoch = shared.load_epoch().await?;
        shared.tasks.spawn(shared.clone().probe_loop());
        tracing::info!(
            brokers = %shared.config.brokers,
            prefix = %shared.config.prefix,
            epoch,
            "Kafka log connected."
        );
        Ok(Arc::new(KafkaLog {
            shared,
            epoch,
            ensure: tokio::sync::Mutex::new(()),
        }))
    }

    /// Metrics snapshot.
    pub fn stats(&self) -> KafkaStats {
        let mut s = self.shared.stats.snapshot();
        let streams = self.shared.streams.read();
        s.streams = streams.len() as u64;
        s.dedup_keys = streams
            .values()
            .map(|st| st.dedup.lock().len() as u64)
            .sum();
        s
    }

    /// Names of the streams with a running tail on this node, sorted.
    pub fn streams(&self) -> Vec<String> {
        let mut v: Vec<String> = self.shared.streams.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// The topic that holds `stream`.
    pub fn topic(&self, stream: &str) -> Result<String, LogError> {
        self.shared.topic_for(stream)
    }

    /// Stops the tails and the probe, flushes the producer (at most
    /// `request_timeout`) and destroys every client. Idempotent; afterwards every
    /// call fails with `Closed`.
    pub async fn close(&self) {
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        self.shared.tasks.wait().await;
        let clients = self.shared.clients.write().take();
        let streams: Vec<Arc<Stream>> = self
            .shared
            .streams
            .write()
            .drain()
            .map(|(_, s)| s)
            .collect();
        for s in &streams {
            s.cache.lock().release(&self.shared.stats.cache_bytes);
        }
        let readers = self.shared.readers.clone();
        let groups = self.shared.groups.clone();
        let timeout = self.shared.config.request_timeout;
        let _ = tokio::task::spawn_blocking(move || {
            if let Some(c) = clients {
                if let Err(e) = c.producer.flush(timeout) {
                    tracing::warn!(error = %e, "Kafka producer did not flush before close.");
                }
                drop(c);
            }
            readers.clear();
            groups.clear();
        })
        .await;
    }

    async fn open_stream(&self, name: &str, topic: String) -> Result<Arc<Stream>, Error> {
        let shared = &self.shared;
        shared.ensure_topic(&topic, false).await?;
        let readers = shared.readers.clone();
        let t = topic.clone();
        let (low, high) = blocking(move || readers.watermarks(&t)).await?;
        // Re-read the dedup window so retries of recent appends are still recognised.
        let cfg = &shared.config;
        let since = now_ms()
            .saturating_sub(u64::try_from(cfg.dedup_window.as_millis()).unwrap_or(u64::MAX));
        let readers = shared.readers.clone();
        let t = topic.clone();
        let by_time = match blocking(move || readers.offset_for_time(&t, since)).await {
            Ok(Some(o)) => o,
            Ok(None) => high,
            Err(e) => {
                tracing::warn!(%topic, error = %e, "Offsets by time unavailable; rebuilding dedup from the newest records.");
                0
            }
        };
        let start = by_time
            .max(low)
            .max(high.saturating_sub(cfg.dedup_max_keys as u64))
            .min(high);
        let window_ms = u64::try_from(cfg.dedup_window.as_millis()).unwrap_or(u64::MAX);
        let stream = Arc::new(Stream::new(
            name.to_owned(),
            topic.clone(),
            start,
            low,
            high,
            Dedup::new(window_ms, cfg.dedup_max_keys),
        ));
        let consumer: StreamConsumer<Ctx> = cfg
            .client_config(Role::Reader)
            .create_with_context(Ctx::new(
                Role::Reader,
                shared.health.clone(),
                shared.stats.clone(),
            ))
            .map_err(Error::kafka("creating a tail consumer"))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Offset(start as i64))
            .map_err(Error::kafka("building a partition list"))?;
        if let Err(e) = consumer.assign(&tpl) {
            let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
            return Err(Error::kafka("assigning the tail")(e));
        }
        let mut caught_up = stream.caught_up.subscribe();
        shared.tasks.spawn(tail::run(
            shared.clone(),
            stream.clone(),
            consumer,
            high,
            shared.shutdown.child_token(),
        ));
        let rebuilt = tokio::time::timeout(CATCH_UP_TIMEOUT, caught_up.wait_for(|&c| c)).await;
        if rebuilt.is_err() {
            tracing::warn!(
                stream = name,
                from = start,
                to = high,
                "Tail did not catch up in time; the dedup index is incomplete until it does."
            );
        }
        tracing::info!(stream = name, %topic, first = low, next = high, dedup_from = start, "Kafka stream open.");
        Ok(stream)
    }
}

impl Drop for KafkaLog {
    fn drop(&mut self) {
        self.shared.shutdown.cancel();
    }
}

/// How one record of an append batch is answered.
enum Plan {
    Duplicate(u64),
    /// Produced by this call; index into the delivery list.
    New,
    /// Same key as an earlier record of this batch.
    SameBatch(usize),
    /// Same key as a concurrent append on this node that is still in flight.
    Wait(watch::Receiver<Pending>),
}

/// Keys this append registered as pending; whatever is not resolved when it is
/// dropped (error, cancellation) is marked failed so waiters do not hang.
struct PendingGuard<'a> {
    stream: &'a Stream,
    keys: HashMap<usize, (Bytes, watch::Sender<Pending>)>,
}

impl PendingGuard<'_> {
    fn resolve(&mut self, i: usize, state: Pending) {
        if let Some((key, tx)) = self.keys.remove(&i) {
            tx.send_replace(state);
            self.stream.dedup.lock().pending.remove(&key);
        }
    }
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        if self.keys.is_empty() {
            return;
        }
        let mut d = self.stream.dedup.lock();
        for (_, (key, tx)) in self.keys.drain() {
            tx.send_replace(Pending::Failed);
            d.pending.remove(&key);
        }
    }
}

#[async_trait]
impl EventLog for KafkaLog {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    async fn lease(&self, name: &str) -> Result<tidegate_log::Lease, LogError> {
        if name.is_empty() || name.len() > 200 {
            return Err(LogError::InvalidStreamName(name.to_owned()));
        }
        let topic = format!("{}_leases", self.shared.config.prefix);
        self.shared
            .ensure_topic(&topic, true)
            .await
            .map_err(LogError::from)?;
        let (tx, rx) = watch::channel(false);
        let consumer = lease::start(&self.shared.config, &topic, name, tx)
            .map_err(|e| LogError::Unavailable(format!("kafka lease {name}: {e}")))?;
        let stop = CancellationToken::new();
        self.shared.tasks.spawn(lease::run(
            consumer,
            stop.clone(),
            self.shared.shutdown.clone(),
        ));
        Ok(tidegate_log::Lease::new(rx, Box::new(stop.drop_guard())))
    }

    fn close(&self) {
        // Synchronous form: stop the tails and the probe now; clients are destroyed
        // off the runtime when the log is dropped.
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
    }

    fn health(&self) -> Result<(), String> {
        if self.shared.clients.read().is_none() {
            return Err("kafka: log is closed".into());
        }
        self.shared.health.get()
    }

    async fn ensure_stream(&self, stream: &str) -> Result<(), LogError> {
        let topic = self.shared.topic_for(stream)?;
        if self.shared.stream(stream).is_ok() {
            return Ok(());
        }
        let _serial = self.ensure.lock().await;
        match self.shared.stream(stream) {
            Ok(_) => return Ok(()),
            Err(LogError::UnknownStream(_)) => {}
            Err(e) => return Err(e),
        }
        let s = self.open_stream(stream, topic).await?;
        self.shared.streams.write().insert(stream.to_owned(), s);
        Ok(())
    }

    async fn append(
        &self,
        stream: &str,
        records: Vec<AppendRecord>,
    ) -> Result<Vec<Appended>, LogError> {
        let st = self.shared.stream(stream)?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let cfg = &self.shared.config;
        for r in &records {
            let len = r.dedup_key.as_ref().map_or(0, |k| k.len()) + r.payload.len();
            if len > cfg.max_record_bytes {
                return Err(LogError::RecordTooLarge(len, cfg.max_record_bytes));
            }
        }
        let stats = &self.shared.stats;
        if cfg.dedup_sync && records.iter().any(|r| r.dedup_key.is_some()) {
            self.shared.sync_tail(&st).await;
        }
        let now = now_ms();
        // 1. Plan every record against the dedup index and in-flight keys.
        let mut plan = Vec::with_capacity(records.len());
        let mut guard = PendingGuard {
            stream: &st,
            keys: HashMap::new(),
        };
        {
            let mut d = st.dedup.lock();
            let mut in_batch: HashMap<&Bytes, usize> = HashMap::new();
            for (i, r) in records.iter().enumerate() {
                let Some(key) = &r.dedup_key else {
                    plan.push(Plan::New);
                    continue;
                };
                if let Some(o) = d.get(key, now) {
                    plan.push(Plan::Duplicate(o));
                } else if let Some(&j) = in_batch.get(key) {
                    plan.push(Plan::SameBatch(j));
                } else if let Some(rx) = d.pending.get(key) {
                    plan.push(Plan::Wait(rx.clone()));
                } else {
                    let (tx, rx) = watch::channel(Pending::InFlight);
                    d.pending.insert(key.clone(), rx);
                    guard.keys.insert(i, (key.clone(), tx));
                    in_batch.insert(key, i);
                    plan.push(Plan::New);
                }
            }
        }
        // 2. Enqueue the new records, contiguously.
        let clients = self.shared.clients().map_err(LogError::from)?;
        let mut futures = Vec::new();
        let mut failure: Option<Error> = None;
        {
            let _contiguous = st.produce.lock();
            for (i, r) in records.iter().enumerate() {
                if !matches!(plan[i], Plan::New) {
                    continue;
                }
                match Shared::enqueue(
                    &clients.producer,
                    &st.topic,
                    r.dedup_key.as_ref(),
                    &r.payload,
                    now,
                ) {
                    Ok(f) => futures.push((i, f)),
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
        }
        drop(clients);
        // 3. Await every delivery report, even after a failure: what was stored must
        // enter the dedup index so a retry is recognised.
        let deadline = tokio::time::Instant::now() + cfg.request_timeout + Duration::from_secs(1);
        let mut offsets: Vec<Option<u64>> = vec![None; records.len()];
        let mut stored = 0u64;
        let mut stored_bytes = 0u64;
        let mut max_next = 0;
        for (i, f) in futures {
            match self.shared.delivered(f, deadline).await {
                Ok(o) => {
                    offsets[i] = Some(o);
                    stored += 1;
                    stored_bytes += (records[i].payload.len()
                        + records[i].dedup_key.as_ref().map_or(0, |k| k.len()))
                        as u64;
                    max_next = max_next.max(o + 1);
                    st.stored_here(o);
                    if let Some(key) = &records[i].dedup_key {
                        st.dedup.lock().insert(key.clone(), o, now, now);
                    }
                    guard.resolve(i, Pending::Stored(o));
                }
                Err(e) => {
                    guard.resolve(i, Pending::Failed);
                    failure.get_or_insert(e);
                }
            }
        }
        if stored > 0 {
            stats.appends.fetch_add(stored, Ordering::Relaxed);
            stats.append_batches.fetch_add(1, Ordering::Relaxed);
            stats
                .bytes_appended
                .fetch_add(stored_bytes, Ordering::Relaxed);
            st.advance_next(max_next);
        }
        drop(guard);
        if let Some(e) = failure {
            let e = LogError::from(e);
            if matches!(e, LogError::Overloaded) {
                stats.overloaded_rejections.fetch_add(1, Ordering::Relaxed);
            } else {
                stats.append_errors.fetch_add(1, Ordering::Relaxed);
                self.shared.producer_suspect.store(true, Ordering::Release);
            }
            return Err(e);
        }
        // 4. Answer duplicates, including keys another append was producing.
        let mut out = Vec::with_capacity(records.len());
        let mut duplicates = 0;
        for (i, p) in plan.into_iter().enumerate() {
            let a = match p {
                Plan::New => match offsets[i] {
                    Some(o) => Appended::New(o),
                    None => {
                        return Err(LogError::Unavailable("kafka: record not delivered".into()))
                    }
                },
                Plan::Duplicate(o) => Appended::Duplicate(o),
                Plan::SameBatch(j) => match offsets[j] {
                    Some(o) => Appended::Duplicate(o),
                    None => {
                        return Err(LogError::Unavailable("kafka: record not delivered".into()))
                    }
                },
                Plan::Wait(mut rx) => {
                    let state =
                        tokio::time::timeout_at(deadline, rx.wait_for(|s| *s != Pending::InFlight))
                            .await
                            .ok()
                            .and_then(|r| r.ok().map(|s| *s));
                    match state {
                        Some(Pending::Stored(o)) => Appended::Duplicate(o),
                        _ => {
                            stats.append_errors.fetch_add(1, Ordering::Relaxed);
                            return Err(LogError::Unavailable(
                                "kafka: a concurrent append of the same key failed".into(),
                            ));
                        }
                    }
                }
            };
            if matches!(a, Appended::Duplicate(_)) {
                duplicates += 1;
            }
            out.push(a);
        }
        stats.duplicates.fetch_add(duplicates, Ordering::Relaxed);
        Ok(out)
    }

    fn bounds(&self, stream: &str) -> Result<Bounds, LogError> {
        let st = self.shared.stream(stream)?;
        Ok(Bounds {
            first: st.first(),
            next: st.next(),
        })
    }

    fn watch_next(&self, stream: &str) -> Result<watch::Receiver<u64>, LogError> {
        Ok(self.shared.stream(stream)?.next.subscribe())
    }

    async fn read(
        &self,
        stream: &str,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let st = self.shared.stream(stream)?;
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let from = from.max(st.first());
        let next = st.next();
        if from >= next {
            return Ok(Vec::new());
        }
        let stats = &self.shared.stats;
        let cached_from = st.cache.lock().start();
        if from >= cached_from {
            // The tail may be just behind `next` (typically our own append, not yet
            // back through the tail): give it a moment rather than fetching again.
            let target = next.min(from.saturating_add(max_records as u64));
            if *st.seen.borrow() < target {
                let mut seen = st.seen.subscribe();
                let _ = tokio::time::timeout(TAIL_WAIT, seen.wait_for(|&s| s >= target)).await;
            }
            if let Some(v) = st.cache.lock().read(from, max_records, max_bytes) {
                stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(v);
            }
        }
        stats.cache_misses.fetch_add(1, Ordering::Relaxed);
        let readers = self.shared.readers.clone();
        let topic = st.topic.clone();
        Ok(blocking(move || readers.read(&topic, from, max_records, max_bytes)).await?)
    }

    async fn commit_consumer(
        &self,
        stream: &str,
        consumer: &str,
        next: u64,
    ) -> Result<(), LogError> {
        let st = self.shared.stream(stream)?;
        if !valid_name(consumer) {
            return Err(LogError::InvalidStreamName(consumer.to_owned()));
        }
        let group = format!("{}{consumer}", self.shared.config.prefix);
        let groups = self.shared.groups.clone();
        let topic = st.topic.clone();
        // librdkafka's synchronous commit has no timeout of its own.
        tokio::time::timeout(
            self.shared.config.request_timeout + Duration::from_secs(1),
            blocking(move || groups.commit(&group, &topic, next)),
        )
        .await
        .map_err(|_| LogError::from(Error::Timeout("committing a consumer offset")))??;
        Ok(())
    }

    async fn consumer_position(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<Option<u64>, LogError> {
        let st = self.shared.stream(stream)?;
        if !valid_name(consumer) {
            return Err(LogError::InvalidStreamName(consumer.to_owned()));
        }
        let group = format!("{}{consumer}", self.shared.config.prefix);
        let groups = self.shared.groups.clone();
        let topic = st.topic.clone();
        Ok(blocking(move || groups.position(&group, &topic)).await?)
    }
}
