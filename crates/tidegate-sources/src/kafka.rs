//! The Kafka source: one consumer in a consumer group, reading `topics`.
//!
//! ```text
//! recv (first message) ─► drain up to batch_max ready messages ─► decode
//!   ─► LogSink::append (one append) ─► store_offset of every message ─► auto-commit
//! ```
//!
//! - **At-least-once.** `enable.auto.offset.store=false`: an offset is stored only
//!   after the log took the message's events (or rejected the message as poison);
//!   librdkafka's auto-commit (every second) commits only stored offsets. On
//!   rebalance (partitions revoked) and on shutdown the stored offsets are committed
//!   synchronously, so the next owner of a partition starts right after what this
//!   one stored. A crash redelivers at most the uncommitted tail, which the log's
//!   dedup key (`source` + `id`) stores once.
//! - **Where a new group starts:** `offset_reset`, default `earliest`. RIG used
//!   `latest`, which loses what is published while a group has no committed offset
//!   yet (for instance between a first start without traffic and a restart). With
//!   `earliest` nothing is lost; the price is that a brand-new group on a topic with
//!   history replays that history. Reusing RIG's group id
//!   (`rig-kafka-to-filter`) continues from the offsets RIG committed.
//! - **Formats** (the Kafka protocol binding): structured (the value is a CloudEvent
//!   JSON object; a `content-type: application/cloudevents-batch+json` header makes it
//!   a batch) or binary (`ce_*` headers, `content-type` header, value = data).
//! - **Broker down:** librdkafka reconnects by itself; the source keeps polling and
//!   reports `Down` when librdkafka says all brokers are down, or statistics show no
//!   broker connection, and `Running` again once one is up.
//! - **Lag** comes from librdkafka's statistics (every second): per assigned
//!   partition, high watermark − stored position, summed.
//!
//! Limitation: while the hub or the log holds a batch back, the consumer is not
//! polled; past `max.poll.interval.ms` (5 min) librdkafka leaves the group and its
//! partitions move — nothing is lost, the next owner re-reads the unstored tail.
use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use rdkafka::client::ClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{
    BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance, StreamConsumer,
};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{BorrowedMessage, Headers, Message};
use rdkafka::statistics::Statistics;
use rdkafka::TopicPartitionList;
use tokio_util::sync::CancellationToken;

use crate::env::{self, ConfigError};
use crate::ingest::{self, Msg};
use crate::sink::LogSink;
use crate::status::Cell;

/// RIG's default consumer group (`KAFKATOFILTER_KAFKA_GROUP_ID`).
pub const RIG_GROUP_ID: &str = "rig-kafka-to-filter";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaSourceConfig {
    /// Metric label and log field (default `kafka`).
    pub name: String,
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    pub topics: Vec<String>,
    pub group_id: String,
    pub client_id: String,
    pub sasl: Option<KafkaSasl>,
    pub ssl: Option<KafkaSsl>,
    /// Most messages appended to the log together.
    pub batch_max: usize,
    /// Where a group without committed offsets starts.
    pub offset_reset: OffsetReset,
    /// Further librdkafka properties, applied last (they win).
    pub extra: Vec<(String, String)>,
}

#[derive(Clone, PartialEq, Eq)]
pub struct KafkaSasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for KafkaSasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    fn as_librdkafka(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// TLS to the brokers. A `None` file is not configured (system CAs; no client
/// certificate).
#[derive(Clone, PartialEq, Eq, Default)]
pub struct KafkaSsl {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub key_password: Option<String>,
}

impl fmt::Debug for KafkaSsl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KafkaSsl")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("key_password", &self.key_password.as_ref().map(|_| ".."))
            .finish()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OffsetReset {
    #[default]
    Earliest,
    Latest,
}

// === impl KafkaSourceConfig ===

impl KafkaSourceConfig {
    /// A source with RIG's group id and Tidegate's defaults.
    pub fn new(brokers: Vec<String>, topics: Vec<String>) -> Self {
        KafkaSourceConfig {
            name: "kafka".to_owned(),
            brokers,
            topics,
            group_id: RIG_GROUP_ID.to_owned(),
            client_id: "tidegate".to_owned(),
            sasl: None,
            ssl: None,
            batch_max: 500,
            offset_reset: OffsetReset::Earliest,
            extra: Vec::new(),
        }
    }

    /// Reads RIG's variables; `Ok(None)` when `KAFKA_BROKERS` is unset/empty or
    /// `KAFKA_SOURCE_TOPICS` is set to nothing (RIG then consumed nothing).
    ///
    /// | variable | default | meaning |
    /// |---|---|---|
    /// | `KAFKA_BROKERS` | — | comma list of `host:port` |
    /// | `KAFKA_SOURCE_TOPICS` | `rig` | comma list of topics |
    /// | `KAFKATOFILTER_KAFKA_GROUP_ID` | `rig-kafka-to-filter` | consumer group |
    /// | `KAFKA_SASL` | — | `plain:user:pass` (RIG), also `scram_sha_256:…`, `scram_sha_512:…`; the password may contain `:` |
    /// | `KAFKA_SSL_ENABLED` | `false` | TLS; the `KAFKA_SSL_*` files below apply only then |
    /// | `KAFKA_SSL_CA_CERTFILE` | `ca.crt.pem` | CA file; set empty for none (system CAs) |
    /// | `KAFKA_SSL_CERTFILE` | `client.crt.pem` | client certificate; empty for none |
    /// | `KAFKA_SSL_KEYFILE` | `client.key.pem` | client key; empty for none |
    /// | `KAFKA_SSL_KEYFILE_PASS` | empty | key password |
    /// | `KAFKA_SERIALIZER` | — | `avro` is refused (not supported) |
    /// | `TIDEGATE_KAFKA_SOURCE_OFFSET_RESET` | `earliest` | `earliest` or `latest` |
    /// | `TIDEGATE_KAFKA_SOURCE_BATCH_MAX` | `500` | messages per log append |
    ///
    /// File paths are taken relative to the working directory (RIG resolved them in
    /// its `priv` directory).
    pub fn from_rig_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let brokers = env::list(&get, "KAFKA_BROKERS").unwrap_or_default();
        if brokers.is_empty() {
            return Ok(None);
        }
        for b in &brokers {
            if !b
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            {
                return Err(ConfigError::new(
                    "KAFKA_BROKERS",
                    format!("`{b}` is not host:port"),
                ));
            }
        }
        let topics = env::list(&get, "KAFKA_SOURCE_TOPICS").unwrap_or_else(|| vec!["rig".into()]);
        if topics.is_empty() {
            return Ok(None);
        }
        if let Some(ser) = env::string(&get, "KAFKA_SERIALIZER") {
            if ser.eq_ignore_ascii_case("avro") {
                return Err(ConfigError::new(
                    "KAFKA_SERIALIZER",
                    "Avro-encoded events are not supported; publish CloudEvents as JSON",
                ));
            }
        }
        let mut cfg = KafkaSourceConfig::new(brokers, topics);
        if let Some(group) = env::string(&get, "KAFKATOFILTER_KAFKA_GROUP_ID") {
            cfg.group_id = group;
        }
        if let Some(sasl) = get("KAFKA_SASL").filter(|s| !s.trim().is_empty()) {
            cfg.sasl = Some(parse_sasl(&sasl)?);
        }
        if env::boolean(&get, "KAFKA_SSL_ENABLED", false)? {
            // Unset: RIG's default file name. Set but empty: not used.
            let file = |name: &str, default: &str| -> Option<PathBuf> {
                match get(name) {
                    None => Some(PathBuf::from(default)),
                    Some(v) if v.trim().is_empty() => None,
                    Some(v) => Some(PathBuf::from(v.trim())),
                }
            };
            cfg.ssl = Some(KafkaSsl {
                ca_file: file("KAFKA_SSL_CA_CERTFILE", "ca.crt.pem"),
                cert_file: file("KAFKA_SSL_CERTFILE", "client.crt.pem"),
                key_file: file("KAFKA_SSL_KEYFILE", "client.key.pem"),
                key_password: get("KAFKA_SSL_KEYFILE_PASS").filter(|p| !p.is_empty()),
            });
        }
        if let Some(reset) = env::string(&get, "TIDEGATE_KAFKA_SOURCE_OFFSET_RESET") {
            cfg.offset_reset = match reset.to_ascii_lowercase().as_str() {
                "earliest" => OffsetReset::Earliest,
                "latest" => OffsetReset::Latest,
                _ => {
                    return Err(ConfigError::new(
                        "TIDEGATE_KAFKA_SOURCE_OFFSET_RESET",
                        format!("`{reset}` is neither `earliest` nor `latest`"),
                    ))
                }
            };
        }
        let batch = env::positive(&get, "TIDEGATE_KAFKA_SOURCE_BATCH_MAX", 500)?;
        cfg.batch_max = usize::try_from(batch).unwrap_or(usize::MAX).min(100_000);
        Ok(Some(cfg))
    }

    /// The librdkafka consumer properties.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", self.brokers.join(","))
            .set("group.id", &self.group_id)
            .set("client.id", &self.client_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("enable.partition.eof", "false")
            .set("statistics.interval.ms", "1000")
            // A member that dies (SIGKILL, lost host) keeps its partitions until the
            // coordinator gives up on it: 10 s instead of librdkafka's 45 s, so the
            // survivors take over quickly. `extra` may override both.
            .set("session.timeout.ms", "10000")
            .set("heartbeat.interval.ms", "2000")
            .set(
                "auto.offset.reset",
                match self.offset_reset {
                    OffsetReset::Earliest => "earliest",
                    OffsetReset::Latest => "latest",
                },
            );
        let protocol = match (&self.sasl, &self.ssl) {
            (None, None) => "plaintext",
            (None, Some(_)) => "ssl",
            (Some(_), None) => "sasl_plaintext",
            (Some(_), Some(_)) => "sasl_ssl",
        };
        c.set("security.protocol", protocol);
        if let Some(sasl) = &self.sasl {
            if self.ssl.is_none() {
                tracing::warn!(source = %self.name, "SASL is enabled, but SSL is not: credentials are sent as cleartext.");
            }
            c.set("sasl.mechanism", sasl.mechanism.as_librdkafka())
                .set("sasl.username", &sasl.username)
                .set("sasl.password", &sasl.password);
        }
        if let Some(ssl) = &self.ssl {
            let path = |p: &PathBuf| p.to_string_lossy().into_owned();
            if let Some(p) = &ssl.ca_file {
                c.set("ssl.ca.location", path(p));
            }
            if let Some(p) = &ssl.cert_file {
                c.set("ssl.certificate.location", path(p));
            }
            if let Some(p) = &ssl.key_file {
                c.set("ssl.key.location", path(p));
            }
            if let Some(p) = &ssl.key_password {
                c.set("ssl.key.password", p);
            }
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

/// `mechanism:username:password`; the password may contain `:`.
fn parse_sasl(value: &str) -> Result<KafkaSasl, ConfigError> {
    let bad = |why: &str| ConfigError::new("KAFKA_SASL", why.to_owned());
    let mut parts = value.splitn(3, ':');
    let (Some(mech), Some(username), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(bad(
            "expected mechanism:username:password, e.g. plain:user:pass",
        ));
    };
    let mechanism = match mech.trim().to_ascii_lowercase().replace('-', "_").as_str() {
        "plain" => SaslMechanism::Plain,
        "scram_sha_256" => SaslMechanism::ScramSha256,
        "scram_sha_512" => SaslMechanism::ScramSha512,
        _ => {
            return Err(bad(
                "the mechanism must be plain, scram_sha_256 or scram_sha_512",
            ))
        }
    };
    Ok(KafkaSasl {
        mechanism,
        username: username.to_owned(),
        password: password.to_owned(),
    })
}

// === the consumer context ===

/// librdkafka callbacks: logs into tracing, statistics into lag and state,
/// rebalances into commits. Callbacks run inside the consumer's polls.
struct SourceContext {
    cell: Arc<Cell>,
    /// When librdkafka last said every broker is down.
    all_down_at: parking_lot::Mutex<Option<std::time::Instant>>,
}

impl SourceContext {
    fn new(cell: Arc<Cell>) -> Self {
        SourceContext {
            cell,
            all_down_at: parking_lot::Mutex::new(None),
        }
    }
}

impl ClientContext for SourceContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        let source = self.cell.name();
        match level {
            RDKafkaLogLevel::Emerg
            | RDKafkaLogLevel::Alert
            | RDKafkaLogLevel::Critical
            | RDKafkaLogLevel::Error => {
                tracing::error!(
                    source,
                    facility = fac,
                    message = log_message,
                    "librdkafka error."
                )
            }
            RDKafkaLogLevel::Warning => {
                tracing::warn!(
                    source,
                    facility = fac,
                    message = log_message,
                    "librdkafka warning."
                )
            }
            RDKafkaLogLevel::Notice | RDKafkaLogLevel::Info => {
                tracing::info!(source, facility = fac, message = log_message, "librdkafka.")
            }
            RDKafkaLogLevel::Debug => {
                tracing::debug!(source, facility = fac, message = log_message, "librdkafka.")
            }
        }
    }

    fn stats(&self, stats: Statistics) {
        self.cell.set_lag(Some(lag(&stats)));
        // A statistics snapshot can still show a connection as UP a moment after
        // librdkafka reported every broker down; only a connection that came up
        // after that report counts as a recovery.
        let since_down = self.all_down_at.lock().map(|at| at.elapsed());
        let up = stats.brokers.values().any(|b| {
            b.source != "internal"
                && b.state == "UP"
                && since_down
                    .is_none_or(|d| u128::try_from(b.stateage).unwrap_or(u128::MAX) < d.as_micros())
        });
        if up {
            self.cell.running();
        } else if self.cell.is_running() {
            // Only a running source goes down here; one still connecting stays
            // `Connecting` until librdkafka gives up on every broker (`error`).
            self.cell.down("no connection to any Kafka broker");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        let code = error.rdkafka_error_code();
        if code == Some(RDKafkaErrorCode::AllBrokersDown) {
            *self.all_down_at.lock() = Some(std::time::Instant::now());
            self.cell
                .down(format!("all Kafka brokers are down: {reason}"));
        } else {
            tracing::warn!(source = %self.cell.name(), error = %error, reason, "Kafka client error.");
        }
    }
}

impl ConsumerContext for SourceContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Revoke(tpl) => {
                tracing::info!(source = %self.cell.name(), partitions = tpl.count(), "Kafka partitions revoked; committing stored offsets.");
                commit(consumer, &self.cell);
            }
            Rebalance::Assign(tpl) => {
                tracing::info!(source = %self.cell.name(), partitions = tpl.count(), "Kafka partitions assigned.");
            }
            Rebalance::Error(e) => {
                tracing::warn!(source = %self.cell.name(), error = %e, "Kafka rebalance error.");
            }
        }
    }

    fn commit_callback(
        &self,
        result: rdkafka::error::KafkaResult<()>,
        _offsets: &TopicPartitionList,
    ) {
        if let Err(e) = result {
            if e.rdkafka_error_code() != Some(RDKafkaErrorCode::NoOffset) {
                tracing::warn!(source = %self.cell.name(), error = %e, "Kafka offset commit failed.");
            }
        }
    }
}

/// Synchronous commit of the stored offsets; "nothing to commit" is fine.
fn commit<C: Consumer<SourceContext>>(consumer: &C, cell: &Cell) {
    match consumer.commit_consumer_state(CommitMode::Sync) {
        Ok(()) => {}
        Err(e) if e.rdkafka_error_code() == Some(RDKafkaErrorCode::NoOffset) => {}
        Err(e) => tracing::warn!(source = %cell.name(), error = %e, "Kafka offset commit failed."),
    }
}

/// High watermark − stored (else committed, else fetch) position, over the partitions
/// this consumer is fetching.
fn lag(stats: &Statistics) -> u64 {
    let mut total = 0u64;
    for topic in stats.topics.values() {
        for p in topic.partitions.values() {
            if p.partition < 0 || matches!(p.fetch_state.as_str(), "none" | "stopped" | "stopping")
            {
                continue;
            }
            let end = if p.ls_offset >= 0 {
                p.ls_offset
            } else {
                p.hi_offset
            };
            let pos = [p.stored_offset, p.committed_offset, p.app_offset]
                .into_iter()
                .find(|o| *o >= 0);
            if let (true, Some(pos)) = (end >= 0, pos) {
                total = total.saturating_add(u64::try_from(end - pos).unwrap_or(0));
            }
        }
    }
    total
}

// === the source task ===

type SourceConsumer = StreamConsumer<SourceContext>;

/// Where a message came from: what `store_offset` and a warning need.
struct Position {
    topic: String,
    partition: i32,
    offset: i64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}@{}", self.topic, self.partition, self.offset)
    }
}

/// Runs the source until `shutdown`; never returns early, never panics on broker
/// errors (it reports them in its status and retries).
pub(crate) async fn run(
    cfg: KafkaSourceConfig,
    sink: LogSink,
    cell: Arc<Cell>,
    shutdown: CancellationToken,
) {
    let mut retries = crate::reconnect_backoff().start(tokio::time::Instant::now());
    while !shutdown.is_cancelled() {
        let consumer: SourceConsumer = match cfg
            .client_config()
            .create_with_context(SourceContext::new(cell.clone()))
        {
            Ok(c) => c,
            Err(e) => {
                // Bad configuration (unknown property, unreadable certificate…): it
                // will not fix itself, but keep reporting it rather than exiting.
                cell.down(format!("Kafka client: {e}"));
                let delay = retries
                    .next_delay(tokio::time::Instant::now(), None, &mut rand::rng())
                    .unwrap_or(Duration::from_secs(30));
                if !crate::sleep_or_shutdown(delay, &shutdown).await {
                    break;
                }
                continue;
            }
        };
        let consumer = Arc::new(consumer);
        let topics: Vec<&str> = cfg.topics.iter().map(String::as_str).collect();
        if let Err(e) = consumer.subscribe(&topics) {
            cell.down(format!("subscribe: {e}"));
            close(consumer, &cell).await;
            let delay = retries
                .next_delay(tokio::time::Instant::now(), None, &mut rand::rng())
                .unwrap_or(Duration::from_secs(30));
            if !crate::sleep_or_shutdown(delay, &shutdown).await {
                break;
            }
            continue;
        }
        tracing::info!(source = %cell.name(), group = %cfg.group_id, topics = ?cfg.topics, "Kafka source subscribed.");
        consume(&consumer, &cfg, &sink, &cell, &shutdown).await;
        close(consumer, &cell).await;
    }
    tracing::info!(source = %cell.name(), "Kafka source stopped.");
}

/// Commits what was stored and leaves the group. Both block on the network, so they
/// run on the blocking pool.
async fn close(consumer: Arc<SourceConsumer>, cell: &Arc<Cell>) {
    let cell = cell.clone();
    let res = tokio::task::spawn_blocking(move || {
        commit(consumer.as_ref(), &cell);
        consumer.unsubscribe();
        drop(consumer);
    })
    .await;
    if let Err(e) = res {
        tracing::warn!(error = %e, "Closing the Kafka consumer failed.");
    }
}

async fn consume(
    consumer: &SourceConsumer,
    cfg: &KafkaSourceConfig,
    sink: &LogSink,
    cell: &Cell,
    shutdown: &CancellationToken,
) {
    let batch_max = cfg.batch_max.max(1);
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return,
            m = consumer.recv() => m,
        };
        let mut batch = Vec::with_capacity(batch_max.min(64));
        match first {
            Ok(m) => batch.push(take(&m)),
            Err(e) => {
                tracing::warn!(source = %cell.name(), error = %e, "Kafka consume error.");
                // Errors come from the broker side (unknown topic, fetch failure);
                // librdkafka retries. Do not spin on them.
                if !crate::sleep_or_shutdown(Duration::from_millis(200), shutdown).await {
                    return;
                }
                continue;
            }
        }
        cell.running();
        while batch.len() < batch_max {
            match consumer.recv().now_or_never() {
                Some(Ok(m)) => batch.push(take(&m)),
                Some(Err(e)) => {
                    tracing::warn!(source = %cell.name(), error = %e, "Kafka consume error.");
                    break;
                }
                None => break,
            }
        }
        cell.received(batch.len() as u64);
        let Some(_verdicts) = ingest::store_with_retry(sink, cell, &batch, shutdown, None).await
        else {
            // Shutting down before the log took the batch: store nothing, the
            // group re-reads it.
            return;
        };
        // Stored and poison messages alike: both are done with.
        for m in &batch {
            if let Err(e) = consumer.store_offset(&m.token.topic, m.token.partition, m.token.offset)
            {
                // The partition was revoked meanwhile; its next owner re-reads the
                // message and the log deduplicates it.
                tracing::debug!(source = %cell.name(), message = %m.token, error = %e, "Could not store a Kafka offset.");
            }
        }
    }
}

/// Copies what the source needs out of a borrowed message and decodes it.
fn take(m: &BorrowedMessage<'_>) -> Msg<Position> {
    let headers: Vec<(&str, &[u8])> = m
        .headers()
        .map(|hs| hs.iter().map(|h| (h.key, h.value.unwrap_or(&[]))).collect())
        .unwrap_or_default();
    Msg {
        decoded: crate::decode::decode("ce_", headers.iter().copied(), m.payload().unwrap_or(&[])),
        token: Position {
            topic: m.topic().to_owned(),
            partition: m.partition(),
            offset: m.offset(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::lookup;

    #[test]
    fn rig_env_defaults() {
        assert_eq!(KafkaSourceConfig::from_rig_env(lookup(&[])).unwrap(), None);
        let cfg = KafkaSourceConfig::from_rig_env(lookup(&[("KAFKA_BROKERS", "k1:9092, k2:9093")]))
            .unwrap()
            .unwrap();
        assert_eq!(cfg.brokers, vec!["k1:9092", "k2:9093"]);
        assert_eq!(cfg.topics, vec!["rig"]);
        assert_eq!(cfg.group_id, RIG_GROUP_ID);
        assert_eq!(cfg.sasl, None);
        assert_eq!(cfg.ssl, None);
        assert_eq!(cfg.offset_reset, OffsetReset::Earliest);
        let c = cfg.client_config();
        assert_eq!(c.get("enable.auto.offset.store"), Some("false"));
        assert_eq!(c.get("enable.auto.commit"), Some("true"));
        assert_eq!(c.get("security.protocol"), Some("plaintext"));
        assert_eq!(
            KafkaSourceConfig::from_rig_env(lookup(&[
                ("KAFKA_BROKERS", "k1:9092"),
                ("KAFKA_SOURCE_TOPICS", "")
            ]))
            .unwrap(),
            None
        );
    }

    #[test]
    fn rig_env_sasl_ssl() {
        let cfg = KafkaSourceConfig::from_rig_env(lookup(&[
            ("KAFKA_BROKERS", "hub.servicebus.windows.net:9093"),
            ("KAFKA_SOURCE_TOPICS", "a,b"),
            ("KAFKATOFILTER_KAFKA_GROUP_ID", "g"),
            (
                "KAFKA_SASL",
                "plain:$ConnectionString:Endpoint=sb://x;Key=y",
            ),
            ("KAFKA_SSL_ENABLED", "1"),
            ("KAFKA_SSL_CA_CERTFILE", "priv/ca.crt.pem"),
            ("KAFKA_SSL_CERTFILE", ""),
            ("KAFKA_SSL_KEYFILE", ""),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(cfg.topics, vec!["a", "b"]);
        assert_eq!(cfg.group_id, "g");
        let sasl = cfg.sasl.clone().unwrap();
        assert_eq!(sasl.mechanism, SaslMechanism::Plain);
        assert_eq!(sasl.username, "$ConnectionString");
        assert_eq!(sasl.password, "Endpoint=sb://x;Key=y");
        assert!(!format!("{sasl:?}").contains("Endpoint"));
        let ssl = cfg.ssl.clone().unwrap();
        assert_eq!(ssl.ca_file, Some(PathBuf::from("priv/ca.crt.pem")));
        assert_eq!(ssl.cert_file, None);
        assert_eq!(ssl.key_password, None);
        let c = cfg.client_config();
        assert_eq!(c.get("security.protocol"), Some("sasl_ssl"));
        assert_eq!(c.get("sasl.mechanism"), Some("PLAIN"));
        assert_eq!(c.get("ssl.ca.location"), Some("priv/ca.crt.pem"));
        assert_eq!(c.get("ssl.certificate.location"), None);

        let cfg = KafkaSourceConfig::from_rig_env(lookup(&[
            ("KAFKA_BROKERS", "k:9092"),
            ("KAFKA_SSL_ENABLED", "true"),
            ("KAFKA_SSL_KEYFILE_PASS", "pw"),
            ("KAFKA_SASL", "scram_sha_256:u:p"),
        ]))
        .unwrap()
        .unwrap();
        let ssl = cfg.ssl.clone().unwrap();
        assert_eq!(ssl.cert_file, Some(PathBuf::from("client.crt.pem")));
        assert_eq!(ssl.key_file, Some(PathBuf::from("client.key.pem")));
        assert_eq!(ssl.key_password.as_deref(), Some("pw"));
        assert_eq!(cfg.sasl.unwrap().mechanism, SaslMechanism::ScramSha256);
    }

    #[test]
    fn rig_env_errors() {
        let err = |pairs: &[(&str, &str)]| {
            KafkaSourceConfig::from_rig_env(lookup(pairs))
                .unwrap_err()
                .name
        };
        assert_eq!(err(&[("KAFKA_BROKERS", "k")]), "KAFKA_BROKERS");
        assert_eq!(
            err(&[("KAFKA_BROKERS", "k:1"), ("KAFKA_SASL", "gssapi:u:p")]),
            "KAFKA_SASL"
        );
        assert_eq!(
            err(&[("KAFKA_BROKERS", "k:1"), ("KAFKA_SASL", "plain:u")]),
            "KAFKA_SASL"
        );
        assert_eq!(
            err(&[("KAFKA_BROKERS", "k:1"), ("KAFKA_SSL_ENABLED", "maybe")]),
            "KAFKA_SSL_ENABLED"
        );
        assert_eq!(
            err(&[("KAFKA_BROKERS", "k:1"), ("KAFKA_SERIALIZER", "avro")]),
            "KAFKA_SERIALIZER"
        );
        assert_eq!(
            err(&[
                ("KAFKA_BROKERS", "k:1"),
                ("TIDEGATE_KAFKA_SOURCE_OFFSET_RESET", "middle")
            ]),
            "TIDEGATE_KAFKA_SOURCE_OFFSET_RESET"
        );
    }
}
