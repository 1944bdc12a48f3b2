//! The NATS JetStream backend of the [`EventLog`]: the log of cluster mode. Every
//! node appends to and tails the same JetStream streams, so a cursor taken on one
//! node resumes on any other.
//!
//! # Layout in JetStream
//!
//! ```text
//! stream  {PREFIX}_{enc(name)}   subject {prefix}.{enc(name)}   file storage, limits retention
//! KV      {prefix}_meta          key `epoch`: decimal u64, created once by whichever node is first
//! KV      {prefix}_consumers     key {enc(stream)}.{enc(consumer)}: decimal next offset
//! ```
//!
//! `enc` is the injective escaping of [`names`]. Offset = stream sequence − 1.
//!
//! # How data moves
//!
//! - `append` publishes each record (header `Nats-Msg-Id` = hex of the dedup key) and
//!   awaits the acknowledgements in order; an acknowledged record is stored with the
//!   stream's replication. The acknowledged sequence advances `next` at once.
//! - `ensure_stream` starts one tail task per stream ([`tail`]): it pulls every new
//!   record, from any node, into a bytes-bounded cache and advances `next`; it refreshes
//!   `first` (retention) and `next` from the stream info every second. `bounds` and
//!   `watch_next` are answered from this state without a round trip.
//! - `read` is served from the cache when it can be, else by a pull consumer from the
//!   requested offset ([`fetch`]).
//!
//! # Guarantees and limits (JetStream 2.9)
//!
//! - A batch is NOT atomic: JetStream 2.9 has no atomic batch publish. If an append
//!   fails midway a prefix of the batch may be stored; retrying with the same dedup
//!   keys is idempotent within `duplicate_window` (the stored ones come back as
//!   `Duplicate`). A timed-out append may still be stored (the ack was lost).
//! - A batch gets increasing offsets, consecutive unless another node appends to the
//!   same stream at the same moment.
//! - Dedup is JetStream's: keys are remembered for `duplicate_window` (default 2 min).
//! - Appends while disconnected fail at once with `Unavailable` rather than being
//!   buffered by the client.
#![forbid(unsafe_code)]

mod fetch;
mod lease;
mod names;
mod stats;
mod tail;

pub use stats::NatsStats;

use async_nats::jetstream::{self, context::PublishErrorKind, kv, stream};
use async_trait::async_trait;
use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tail::{CacheBudget, StreamState};
use tidegate_log::{AppendRecord, Appended, Bounds, EventLog, LogError, Record};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a read whose offset this node has just had acknowledged waits for the
/// tail to deliver it before asking the server.
const TAIL_WAIT: Duration = Duration::from_millis(200);
const EPOCH_KEY: &str = "epoch";

/// Configuration of [`NatsLog`].
#[derive(Debug, Clone)]
pub struct NatsConfig {
    /// Server URLs (`nats://host:4222`); the client also learns the cluster's others.
    pub servers: Vec<String>,
    /// Names everything this log creates; `[a-z0-9-]{1,32}` (default `tidegate`).
    /// Nodes of one cluster share it; two clusters on one NATS use two prefixes.
    pub prefix: String,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    /// A `.creds` file (JWT + NKey seed).
    pub credentials_file: Option<PathBuf>,
    /// Replicas of streams and KV buckets created by this log (default 1).
    pub replicas: usize,
    /// Retention by age (`None`: keep forever).
    pub max_age: Option<Duration>,
    /// Retention by size per stream (`None`: unlimited).
    pub max_bytes: Option<i64>,
    /// How long JetStream remembers dedup keys (default 2 min).
    pub duplicate_window: Duration,
    /// Max payload + encoded key bytes of one record (default 1,000,000; capped by the
    /// server's `max_payload` less 4 KiB for headers).
    pub max_record_bytes: usize,
    /// Bound of every request to NATS: publish acks, fetches, API calls (default 5 s).
    pub request_timeout: Duration,
    /// Memory for the newest records of all streams (default 64 MiB).
    pub tail_cache_bytes: usize,
}

impl Default for NatsConfig {
    fn default() -> Self {
        NatsConfig {
            servers: vec!["nats://127.0.0.1:4222".to_owned()],
            prefix: "tidegate".to_owned(),
            user: None,
            password: None,
            token: None,
            credentials_file: None,
            replicas: 1,
            max_age: None,
            max_bytes: None,
            duplicate_window: Duration::from_secs(120),
            max_record_bytes: 1_000_000,
            request_timeout: Duration::from_secs(5),
            tail_cache_bytes: 64 * 1024 * 1024,
        }
    }
}

impl NatsConfig {
    fn validate(&self) -> Result<(), LogError> {
        let bad = |msg: String| {
            Err(LogError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("nats log config: {msg}"),
            )))
        };
        if self.servers.is_empty() {
            return bad("servers must not be empty".into());
        }
        if let Err(e) = names::validate_prefix(&self.prefix) {
            return bad(e);
        }
        if self.replicas == 0 || self.replicas > 5 {
            return bad("replicas must be 1..=5".into());
        }
        if self.request_timeout.is_zero() || self.max_record_bytes == 0 {
            return bad("request_timeout and max_record_bytes must be > 0".into());
        }
        if self.user.is_some() != self.password.is_some() {
            return bad("user and password go together".into());
        }
        Ok(())
    }
}

/// Connection events, shared with the client's event callback.
#[derive(Debug)]
pub(crate) struct Connection {
    /// Bumped on every (re)connect: tails re-create their consumers.
    pub generation: watch::Sender<u64>,
    pub reconnects: AtomicU64,
    connected_once: AtomicBool,
}

/// State shared by the API and the tail tasks.
pub(crate) struct Inner {
    pub cfg: NatsConfig,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    /// Effective limit: the configured one, capped by the server's `max_payload`.
    pub max_record_bytes: usize,
    pub stats: stats::Stats,
    pub cache: CacheBudget,
    pub conn: Arc<Connection>,
    /// The error of the last JetStream request, cleared by the next success.
    pub js_error: Mutex<Option<String>>,
    pub shutdown: CancellationToken,
}

impl Inner {
    pub(crate) fn js_ok(&self) {
        let mut e = self.js_error.lock();
        if e.is_some() {
            tracing::info!("JetStream requests succeed again.");
            *e = None;
        }
    }

    /// Records a failed JetStream request; returns its description.
    pub(crate) fn js_failed(&self, error: String) -> String {
        tracing::debug!(%error, "JetStream request failed.");
        *self.js_error.lock() = Some(error.clone());
        error
    }

    fn unavailable(&self, what: &str, e: impl std::fmt::Display) -> LogError {
        LogError::Unavailable(self.js_failed(format!("{what}: {e}")))
    }

    async fn timed<T, E: std::fmt::Display>(
        &self,
        what: &str,
        f: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<Result<T, E>, LogError> {
        tokio::time::timeout(self.cfg.request_timeout, f)
            .await
            .map_err(|_| self.unavailable(what, "timed out"))
    }
}

/// The JetStream log. Create with [`NatsLog::connect`]; stop with [`NatsLog::close`].
pub struct NatsLog {
    inner: Arc<Inner>,
    epoch: u64,
    consumers: kv::Store,
    /// The leases bucket, opened on the first `lease` call.
    leases: tokio::sync::OnceCell<kv::Store>,
    /// This instance's name in leases.
    node: String,
    streams: RwLock<HashMap<String, Arc<StreamState>>>,
    tasks: TaskTracker,
    closed: AtomicBool,
}

impl std::fmt::Debug for NatsLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsLog")
            .field("servers", &self.inner.cfg.servers)
            .field("prefix", &self.inner.cfg.prefix)
            .field("epoch", &self.epoch)
            .finish_non_exhaustive()
    }
}

impl NatsLog {
    /// Connects, creates (or finds) the KV buckets and reads (or creates) the epoch.
    /// Fails with `Unavailable` if NATS cannot be reached within `request_timeout`.
    pub async fn connect(cfg: NatsConfig) -> Result<Arc<NatsLog>, LogError> {
        cfg.validate()?;
        let conn = Arc::new(Connection {
            generation: watch::channel(0).0,
            reconnects: AtomicU64::new(0),
            connected_once: AtomicBool::new(false),
        });
        let client = connect_client(&cfg, conn.clone()).await?;
        let server_max = client.server_info().max_payload;
        let max_record_bytes = if server_max > 4096 {
            cfg.max_record_bytes.min(server_max - 4096)
        } else {
            cfg.max_record_bytes
        };
        if max_record_bytes < cfg.max_record_bytes {
            tracing::warn!(
                configured = cfg.max_record_bytes,
                server_max_payload = server_max,
                effective = max_record_bytes,
                "Record size limit capped by the NATS server's max_payload."
            );
        }
        let js = jetstream::ContextBuilder::new()
            .timeout(cfg.request_timeout)
            .build(client.clone());
        let inner = Arc::new(Inner {
            max_record_bytes,
            cache: CacheBudget {
                budget: cfg.tail_cache_bytes,
                ..CacheBudget::default()
            },
            cfg,
            client,
            js,
            stats: stats::Stats::default(),
            conn,
            js_error: Mutex::new(None),
            shutdown: CancellationToken::new(),
        });
        let meta = bucket(&inner, "meta").await?;
        let consumers = bucket(&inner, "consumers").await?;
        let epoch = load_or_create_epoch(&inner, &meta).await?;
        tracing::info!(servers = ?inner.cfg.servers, prefix = %inner.cfg.prefix, epoch, "JetStream log connected.");
        Ok(Arc::new(NatsLog {
            inner,
            epoch,
            consumers,
            leases: tokio::sync::OnceCell::new(),
            node: format!("{:016x}", rand::random::<u64>()),
            streams: RwLock::new(HashMap::new()),
            tasks: TaskTracker::new(),
            closed: AtomicBool::new(false),
        }))
    }

    /// Counters and gauges for `/metrics`.
    pub fn stats(&self) -> NatsStats {
        let mut s = self.inner.stats.snapshot();
        s.reconnects = self.inner.conn.reconnects.load(Ordering::Relaxed);
        let streams = self.streams.read();
        s.streams = streams.len() as u64;
        s.tail_lag = streams.values().map(|st| tail::lag(st)).sum();
        s.cache_bytes = self.inner.cache.total.load(Ordering::Relaxed);
        s
    }

    /// Names of the streams this node tails, sorted.
    pub fn streams(&self) -> Vec<String> {
        let mut v: Vec<String> = self.streams.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// The JetStream stream name and subject of a Tidegate stream (for operators).
    pub fn jetstream_names(&self, stream: &str) -> Result<(String, String), LogError> {
        let n = names::StreamNames::new(&self.inner.cfg.prefix, stream)?;
        Ok((n.js_stream, n.subject))
    }

    /// The underlying client (e.g. for a NATS source sharing the connection).
    pub fn client(&self) -> async_nats::Client {
        self.inner.client.clone()
    }

    /// Stops the tail tasks and waits for them, then flushes the connection.
    /// Appends and reads fail with `Closed` afterwards. Idempotent.
    pub async fn close(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.shutdown.cancel();
        self.tasks.close();
        self.tasks.wait().await;
        for st in self.streams.write().drain().map(|(_, st)| st) {
            st.release_cache(&self.inner.cache);
        }
        let _ =
            tokio::time::timeout(self.inner.cfg.request_timeout, self.inner.client.flush()).await;
        tracing::info!(prefix = %self.inner.cfg.prefix, "JetStream log closed.");
    }

    fn check_open(&self) -> Result<(), LogError> {
        if self.closed.load(Ordering::Acquire) {
            Err(LogError::Closed)
        } else {
            Ok(())
        }
    }

    fn local(&self, stream: &str) -> Result<Arc<StreamState>, LogError> {
        self.check_open()?;
        names::validate(stream)?;
        self.streams
            .read()
            .get(stream)
            .cloned()
            .ok_or_else(|| LogError::UnknownStream(stream.to_owned()))
    }

    /// The local state of a stream, looking it up in JetStream (without creating it)
    /// when another node created it and this one has not tailed it yet.
    async fn attach(&self, stream: &str) -> Result<Arc<StreamState>, LogError> {
        match self.local(stream) {
            Err(LogError::UnknownStream(_)) => self.open_stream(stream, false).await,
            r => r,
        }
    }

    async fn open_stream(&self, stream: &str, create: bool) -> Result<Arc<StreamState>, LogError> {
        self.check_open()?;
        let names = names::StreamNames::new(&self.inner.cfg.prefix, stream)?;
        if let Some(st) = self.streams.read().get(stream) {
            return Ok(st.clone());
        }
        let inner = &self.inner;
        let js_stream = if create {
            let config = stream::Config {
                name: names.js_stream.clone(),
                subjects: vec![names.subject.clone()],
                storage: stream::StorageType::File,
                retention: stream::RetentionPolicy::Limits,
                discard: stream::DiscardPolicy::Old,
                num_replicas: inner.cfg.replicas,
                duplicate_window: inner.cfg.duplicate_window,
                max_age: inner.cfg.max_age.unwrap_or_default(),
                max_bytes: inner.cfg.max_bytes.unwrap_or(-1),
                max_message_size: i32::try_from(inner.max_record_bytes + 4096).unwrap_or(i32::MAX),
                description: Some(format!("Tidegate stream `{stream}`")),
                ..stream::Config::default()
            };
            inner
                .timed("creating the stream", inner.js.get_or_create_stream(config))
                .await?
                .map_err(|e| {
                    inner.unavailable(&format!("creating stream {}", names.js_stream), e)
                })?
        } else {
            match inner
                .timed(
                    "looking up the stream",
                    inner.js.get_stream(&names.js_stream),
                )
                .await?
            {
                Ok(s) => s,
                Err(e) => {
                    if let jetstream::context::GetStreamErrorKind::JetStream(je) = e.kind() {
                        if je.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND {
                            inner.js_ok();
                            return Err(LogError::UnknownStream(stream.to_owned()));
                        }
                    }
                    return Err(
                        inner.unavailable(&format!("looking up stream {}", names.js_stream), e)
                    );
                }
            }
        };
        inner.js_ok();
        let mut map = self.streams.write();
        if let Some(st) = map.get(stream) {
            return Ok(st.clone());
        }
        // Under the write lock so a concurrent close() cannot miss this task.
        self.check_open()?;
        let st = Arc::new(StreamState::new(stream.to_owned(), names, js_stream));
        map.insert(stream.to_owned(), st.clone());
        inner.cache.streams.fetch_add(1, Ordering::Relaxed);
        self.tasks.spawn(tail::run(inner.clone(), st.clone()));
        tracing::info!(stream, js_stream = %st.names.js_stream, bounds = ?st.bounds(), "Tailing JetStream stream.");
        Ok(st)
    }
}

impl Drop for NatsLog {
    fn drop(&mut self) {
        // Tail tasks hold only `Inner`: without this they would outlive the log.
        self.inner.shutdown.cancel();
    }
}

async fn connect_client(
    cfg: &NatsConfig,
    conn: Arc<Connection>,
) -> Result<async_nats::Client, LogError> {
    let mut opts = async_nats::ConnectOptions::new()
        .name("tidegate")
        .connection_timeout(cfg.request_timeout)
        .request_timeout(Some(cfg.request_timeout))
        .ping_interval(Duration::from_secs(10))
        .max_reconnects(None)
        .reconnect_delay_callback(|attempts| Duration::from_millis(100 * attempts.min(20) as u64))
        .event_callback(move |event| {
            let conn = conn.clone();
            async move {
                match event {
                    async_nats::Event::Connected => {
                        if conn.connected_once.swap(true, Ordering::AcqRel) {
                            conn.reconnects.fetch_add(1, Ordering::Relaxed);
                            tracing::info!("NATS connection re-established.");
                        }
                        conn.generation.send_modify(|g| *g += 1);
                    }
                    async_nats::Event::Disconnected => tracing::warn!("NATS connection lost."),
                    other => tracing::warn!(event = %other, "NATS client event."),
                }
            }
        });
    if let (Some(user), Some(password)) = (&cfg.user, &cfg.password) {
        opts = opts.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &cfg.token {
        opts = opts.token(token.clone());
    }
    if let Some(path) = &cfg.credentials_file {
        opts = opts.credentials_file(path).await.map_err(LogError::Io)?;
    }
    let addrs = cfg
        .servers
        .iter()
        .map(|s| s.parse::<async_nats::ServerAddr>())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| {
            LogError::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("nats server address: {e}"),
            ))
        })?;
    opts.connect(addrs)
        .await
        .map_err(|e| LogError::Unavailable(format!("connecting to NATS {:?}: {e}", cfg.servers)))
}

/// The KV bucket `{prefix}_{suffix}`, created if missing.
///
/// The bucket's stream is created here with the standard KV layout rather than by
/// `create_key_value`, which first queries the account info and cannot parse the
/// answer of a 2.9 server.
async fn bucket(inner: &Inner, suffix: &str) -> Result<kv::Store, LogError> {
    bucket_with_age(inner, suffix, Duration::ZERO).await
}

/// [`bucket`] whose entries expire after `max_age` (zero: never).
async fn bucket_with_age(
    inner: &Inner,
    suffix: &str,
    max_age: Duration,
) -> Result<kv::Store, LogError> {
    let name = format!("{}_{suffix}", inner.cfg.prefix);
    let config = stream::Config {
        name: format!("KV_{name}"),
        description: Some(format!("Tidegate log {suffix}")),
        subjects: vec![format!("$KV.{name}.>")],
        max_messages_per_subject: 1,
        max_messages: -1,
        max_bytes: -1,
        max_message_size: -1,
        storage: stream::StorageType::File,
        num_replicas: inner.cfg.replicas,
        allow_rollup: true,
        deny_delete: true,
        allow_direct: true,
        discard: stream::DiscardPolicy::New,
        duplicate_window: if max_age.is_zero() {
            Duration::from_secs(120)
        } else {
            max_age.min(Duration::from_secs(120))
        },
        max_age,
        ..stream::Config::default()
    };
    inner
        .timed(
            "creating a KV bucket",
            inner.js.get_or_create_stream(config),
        )
        .await?
        .map_err(|e| inner.unavailable(&format!("creating KV bucket {name}"), e))?;
    inner
        .timed("opening a KV bucket", inner.js.get_key_value(&name))
        .await?
        .map_err(|e| inner.unavailable(&format!("opening KV bucket {name}"), e))
}

async fn load_or_create_epoch(inner: &Inner, meta: &kv::Store) -> Result<u64, LogError> {
    let mut epoch = 0;
    while epoch == 0 {
        epoch = rand::random::<u64>();
    }
    match inner
        .timed(
            "creating the epoch",
            meta.create(EPOCH_KEY, Bytes::from(epoch.to_string())),
        )
        .await?
    {
        Ok(_) => {
            tracing::info!(epoch, "New JetStream log epoch.");
            return Ok(epoch);
        }
        Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
        Err(e) => return Err(inner.unavailable("creating the epoch", e)),
    }
    let value = inner
        .timed("reading the epoch", meta.get(EPOCH_KEY))
        .await?
        .map_err(|e| inner.unavailable("reading the epoch", e))?
        .ok_or_else(|| LogError::Corrupt("epoch key exists but has no value".into()))?;
    std::str::from_utf8(&value)
        .ok()
        .and_then(|s| s.parse::<u64>().ok())
        .filter(|&e| e != 0)
        .ok_or_else(|| LogError::Corrupt(format!("epoch value {value:?} is not a nonzero u64")))
}

fn publish_error(
    inner: &Inner,
    stream: &str,
    size: usize,
    e: jetstream::context::PublishError,
) -> LogError {
    match e.kind() {
        PublishErrorKind::MaxPayloadExceeded => {
            LogError::RecordTooLarge(size, inner.max_record_bytes)
        }
        // Also what a restarting server answers before JetStream has recovered the
        // stream; this node knew the stream, so it is an outage, not bad input.
        PublishErrorKind::StreamNotFound => inner.unavailable(
            "publish",
            format!("no JetStream stream answered for `{stream}`"),
        ),
        _ => inner.unavailable("publish", e),
    }
}

#[async_trait]
impl EventLog for NatsLog {
    fn epoch(&self) -> u64 {
        self.epoch
    }

    async fn lease(&self, name: &str) -> Result<tidegate_log::Lease, LogError> {
        self.check_open()?;
        let bucket = self
            .leases
            .get_or_try_init(|| bucket_with_age(&self.inner, "leases", lease::TTL))
            .await?
            .clone();
        names::validate(name)?;
        let key = names::encode(name);
        let (tx, rx) = watch::channel(false);
        let stop = CancellationToken::new();
        self.tasks.spawn(lease::run(
            self.inner.clone(),
            bucket,
            key,
            self.node.clone(),
            tx,
            stop.clone(),
        ));
        Ok(tidegate_log::Lease::new(rx, Box::new(stop.drop_guard())))
    }

    fn close(&self) {
        // The trait's close is synchronous: stop the tails now and let the flush
        // finish in the background when a runtime is around.
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.shutdown.cancel();
        self.tasks.close();
    }

    fn health(&self) -> Result<(), String> {
        match self.inner.client.connection_state() {
            async_nats::connection::State::Connected => {}
            async_nats::connection::State::Disconnected => return Err("nats: disconnected".into()),
            async_nats::connection::State::Pending => return Err("nats: connecting".into()),
        }
        match &*self.inner.js_error.lock() {
            Some(e) => Err(format!("nats: {e}")),
            None => Ok(()),
        }
    }

    async fn ensure_stream(&self, stream: &str) -> Result<(), LogError> {
        self.open_stream(stream, true).await.map(|_| ())
    }

    async fn append(
        &self,
        stream: &str,
        records: Vec<AppendRecord>,
    ) -> Result<Vec<Appended>, LogError> {
        let st = self.attach(stream).await?;
        if records.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        let max = inner.max_record_bytes;
        for r in &records {
            let size = r.payload.len() + r.dedup_key.as_ref().map_or(0, |k| 2 * k.len());
            if size > max {
                return Err(LogError::RecordTooLarge(size, max));
            }
        }
        if inner.client.connection_state() != async_nats::connection::State::Connected {
            inner.stats.append_errors.fetch_add(1, Ordering::Relaxed);
            return Err(LogError::Unavailable("nats: disconnected".into()));
        }
        let result = self.publish(&st, records).await;
        match &result {
            Ok(v) => {
                let dups = v
                    .iter()
                    .filter(|a| matches!(a, Appended::Duplicate(_)))
                    .count() as u64;
                inner.stats.duplicates.fetch_add(dups, Ordering::Relaxed);
                inner
                    .stats
                    .appended
                    .fetch_add(v.len() as u64 - dups, Ordering::Relaxed);
                inner.js_ok();
            }
            Err(e) => {
                inner.stats.append_errors.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(stream, error = %e, "Append to JetStream failed.");
            }
        }
        result
    }

    fn bounds(&self, stream: &str) -> Result<Bounds, LogError> {
        Ok(self.local(stream)?.bounds())
    }

    fn watch_next(&self, stream: &str) -> Result<watch::Receiver<u64>, LogError> {
        Ok(self.local(stream)?.next_tx.subscribe())
    }

    async fn read(
        &self,
        stream: &str,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError> {
        let st = self.attach(stream).await?;
        if max_records == 0 {
            return Ok(Vec::new());
        }
        let bounds = st.bounds();
        let from = from.max(bounds.first);
        if from >= bounds.next {
            return Ok(Vec::new());
        }
        if let Some(out) = st.read_cache(from, max_records, max_bytes) {
            self.inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
            return Ok(out);
        }
        if from >= st.tail_next() && self.inner.cache.budget > 0 {
            // Acknowledged (or announced by the info refresh) but not yet delivered to
            // the tail: it is usually a moment away.
            let mut rx = st.tail_tx.subscribe();
            let _ = tokio::time::timeout(TAIL_WAIT, rx.wait_for(|n| *n > from)).await;
            if let Some(out) = st.read_cache(from, max_records, max_bytes) {
                self.inner.stats.cache_hits.fetch_add(1, Ordering::Relaxed);
                return Ok(out);
            }
        }
        self.inner
            .stats
            .cache_misses
            .fetch_add(1, Ordering::Relaxed);
        fetch::read(&self.inner, &st, from, max_records, max_bytes).await
    }

    async fn commit_consumer(
        &self,
        stream: &str,
        consumer: &str,
        next: u64,
    ) -> Result<(), LogError> {
        let st = self.attach(stream).await?;
        let key = st.names.consumer_key(consumer)?;
        let inner = &self.inner;
        inner
            .timed(
                "committing a consumer",
                self.consumers.put(&key, Bytes::from(next.to_string())),
            )
            .await?
            .map_err(|e| inner.unavailable("committing a consumer", e))?;
        inner.js_ok();
        Ok(())
    }

    async fn consumer_position(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<Option<u64>, LogError> {
        let st = self.attach(stream).await?;
        let key = st.names.consumer_key(consumer)?;
        let inner = &self.inner;
        let value = inner
            .timed("reading a consumer", self.consumers.get(&key))
            .await?
            .map_err(|e| inner.unavailable("reading a consumer", e))?;
        inner.js_ok();
        value
            .map(|v| {
                std::str::from_utf8(&v)
                    .ok()
                    .and_then(|s| s.parse::<u64>().ok())
                    .ok_or_else(|| {
                        LogError::Corrupt(format!("consumer {key}: value {v:?} is not a u64"))
                    })
            })
            .transpose()
    }
}

impl NatsLog {
    /// Sends every record, then awaits the acknowledgements in order.
    async fn publish(
        &self,
        st: &StreamState,
        records: Vec<AppendRecord>,
    ) -> Result<Vec<Appended>, LogError> {
        let inner = &self.inner;
        let mut pending = Vec::with_capacity(records.len());
        {
            let _order = st.append_lock.lock().await;
            for r in records {
                let size = r.payload.len();
                let mut msg = jetstream::message::PublishMessage::build().payload(r.payload);
                if let Some(key) = &r.dedup_key {
                    msg = msg.message_id(names::msg_id(key));
                }
                let ack = inner
                    .timed(
                        "publish",
                        inner.js.send_publish(st.names.subject.clone(), msg),
                    )
                    .await?
                    .map_err(|e| publish_error(inner, &st.name, size, e))?;
                pending.push((size, ack));
            }
        }
        let mut out = Vec::with_capacity(pending.len());
        for (size, ack) in pending {
            let ack = inner
                .timed(
                    "publish acknowledgement",
                    std::future::IntoFuture::into_future(ack),
                )
                .await?
                .map_err(|e| publish_error(inner, &st.name, size, e))?;
            let offset = ack.sequence.saturating_sub(1);
            st.advance(ack.sequence);
            out.push(if ack.duplicate {
                Appended::Duplicate(offset)
            } else {
                Appended::New(offset)
            });
        }
        Ok(out)
    }
}
