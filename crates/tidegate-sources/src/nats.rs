//! The NATS source, in one of two modes.
//!
//! - **JetStream** (`jetstream: Some`, at-least-once): a durable pull consumer on an
//!   existing stream, filtered to `subjects`. Messages are pulled in batches, their
//!   events appended to the log in one append, and only then is each message acked
//!   (poison messages are terminated, `+TERM`, so the server never redelivers them).
//!   While a batch waits for the hub or the log, the source sends progress acks
//!   (`+WPI`) so the server does not redeliver it behind our back. A crash before the
//!   ack redelivers the batch; the log's dedup key stores it once.
//! - **Core NATS** (RIG's behaviour): plain subscriptions to `subjects`, in
//!   `queue_group` so each message goes to one gateway node. Core NATS has no
//!   acknowledgements: a message is gone once delivered, so a crash between delivery
//!   and append loses it (at-most-once), and a consumer slower than the publishers
//!   overflows the client's bounded subscription buffer (`subscription_capacity`),
//!   which drops messages and logs a slow-consumer warning. Use JetStream where loss
//!   matters.
//!
//! Messages are structured CloudEvents JSON; a message with a `ce-specversion`
//! header (any case) is read in binary mode (attributes in `ce-*` headers, data in the
//! body). The client reconnects by itself after it once connected; before that, and
//! whenever the subscription or consumer breaks, the source rebuilds with backoff.
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull, AckKind};
use futures_util::future::BoxFuture;
use futures_util::{FutureExt, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::env::{self, ConfigError};
use crate::ingest::{self, Msg, Verdict};
use crate::sink::LogSink;
use crate::status::Cell;

/// RIG's default queue group (`NATSTOFILTER_QUEUE_GROUP`).
pub const RIG_QUEUE_GROUP: &str = "rig-nats-to-filter";
/// Default durable consumer name in JetStream mode.
pub const DEFAULT_DURABLE: &str = "tidegate-nats-to-log";

/// Reason of `Down` while the client is disconnected.
const DISCONNECTED: &str = "disconnected from NATS";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NatsSourceConfig {
    /// Metric label and log field (default `nats`).
    pub name: String,
    /// `host:port` or `nats://host:port` (`tls://…` for TLS).
    pub servers: Vec<String>,
    /// Subjects to consume (wildcards allowed). In JetStream mode the consumer's
    /// filter; empty there means every subject of the stream.
    pub subjects: Vec<String>,
    /// Core mode: the queue group shared by all gateway nodes (`None`: every node
    /// gets every message). Ignored in JetStream mode (the durable consumer shares).
    pub queue_group: Option<String>,
    /// `Some`: JetStream mode.
    pub jetstream: Option<JetStreamConfig>,
    pub credentials: Option<NatsCredentials>,
    /// Core mode: most messages appended together.
    pub batch_max: usize,
    /// Core mode: messages buffered per subscription before NATS drops (slow consumer).
    pub subscription_capacity: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JetStreamConfig {
    /// Existing stream holding `subjects` (Tidegate does not create it).
    pub stream: String,
    /// Durable consumer name, the same on every node so they share the work. Created
    /// if missing; an existing consumer keeps its own configuration.
    pub durable: String,
    /// How long the server waits for an ack before redelivering.
    pub ack_wait: Duration,
    /// Unacked messages the server lets the consumer have.
    pub max_ack_pending: i64,
    /// Messages per pull request and per log append.
    pub batch: usize,
}

impl Default for JetStreamConfig {
    fn default() -> Self {
        JetStreamConfig {
            stream: String::new(),
            durable: DEFAULT_DURABLE.to_owned(),
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 10_000,
            batch: 256,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub enum NatsCredentials {
    /// A `.creds` file (JWT + NKey seed).
    CredsFile(std::path::PathBuf),
    UserPassword {
        user: String,
        password: String,
    },
    Token(String),
}

impl fmt::Debug for NatsCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NatsCredentials::CredsFile(p) => f.debug_tuple("CredsFile").field(p).finish(),
            NatsCredentials::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .finish_non_exhaustive(),
            NatsCredentials::Token(_) => f.write_str("Token(..)"),
        }
    }
}

// === impl NatsSourceConfig ===

impl NatsSourceConfig {
    /// A core-NATS source with RIG's defaults.
    pub fn new(servers: Vec<String>, subjects: Vec<String>) -> Self {
        NatsSourceConfig {
            name: "nats".to_owned(),
            servers,
            subjects,
            queue_group: Some(RIG_QUEUE_GROUP.to_owned()),
            jetstream: None,
            credentials: None,
            batch_max: 256,
            subscription_capacity: 8192,
        }
    }

    /// Reads RIG's variables; `Ok(None)` when `NATS_SERVERS` is unset or empty (RIG
    /// then ran no NATS source).
    ///
    /// | variable | default | meaning |
    /// |---|---|---|
    /// | `NATS_SERVERS` | — | comma list of `host:port` |
    /// | `NATS_SOURCE_TOPICS` | `rig` | comma list of subjects |
    /// | `NATSTOFILTER_QUEUE_GROUP` | `rig-nats-to-filter` | core-mode queue group |
    /// | `TIDEGATE_NATS_SOURCE_STREAM` | — | set: JetStream mode on this stream |
    /// | `TIDEGATE_NATS_SOURCE_DURABLE` | `tidegate-nats-to-log` | durable consumer |
    /// | `TIDEGATE_NATS_CREDS_FILE` / `TIDEGATE_NATS_TOKEN` / `TIDEGATE_NATS_USER` + `TIDEGATE_NATS_PASSWORD` | — | authentication |
    pub fn from_rig_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, ConfigError> {
        let servers = env::list(&get, "NATS_SERVERS").unwrap_or_default();
        if servers.is_empty() {
            return Ok(None);
        }
        let subjects = env::list(&get, "NATS_SOURCE_TOPICS").unwrap_or_else(|| vec!["rig".into()]);
        let mut cfg = NatsSourceConfig::new(servers, subjects);
        if let Some(group) = get("NATSTOFILTER_QUEUE_GROUP") {
            let group = group.trim();
            cfg.queue_group = (!group.is_empty()).then(|| group.to_owned());
        }
        if let Some(stream) = env::string(&get, "TIDEGATE_NATS_SOURCE_STREAM") {
            let mut js = JetStreamConfig {
                stream,
                ..JetStreamConfig::default()
            };
            if let Some(durable) = env::string(&get, "TIDEGATE_NATS_SOURCE_DURABLE") {
                js.durable = durable;
            }
            cfg.jetstream = Some(js);
        }
        cfg.credentials = if let Some(path) = env::string(&get, "TIDEGATE_NATS_CREDS_FILE") {
            Some(NatsCredentials::CredsFile(path.into()))
        } else if let Some(token) = env::string(&get, "TIDEGATE_NATS_TOKEN") {
            Some(NatsCredentials::Token(token))
        } else {
            env::string(&get, "TIDEGATE_NATS_USER").map(|user| NatsCredentials::UserPassword {
                user,
                password: get("TIDEGATE_NATS_PASSWORD").unwrap_or_default(),
            })
        };
        if cfg.subjects.is_empty() && cfg.jetstream.is_none() {
            return Err(ConfigError::new(
                "NATS_SOURCE_TOPICS",
                "no subjects to subscribe to",
            ));
        }
        Ok(Some(cfg))
    }
}

// === the source task ===

#[derive(Debug, thiserror::Error)]
enum NatsSourceError {
    #[error("connect: {0}")]
    Connect(String),
    #[error("subscribe: {0}")]
    Subscribe(String),
    #[error("JetStream stream `{stream}`: {reason}")]
    Stream { stream: String, reason: String },
    #[error("JetStream consumer `{durable}`: {reason}")]
    Consumer { durable: String, reason: String },
    #[error("message stream: {0}")]
    Messages(String),
    #[error("message stream ended")]
    Ended,
}

/// Runs the source until `shutdown`; never returns early, never panics on broker
/// errors (it reports them in its status and retries).
pub(crate) async fn run(
    cfg: NatsSourceConfig,
    sink: LogSink,
    cell: Arc<Cell>,
    shutdown: CancellationToken,
) {
    let backoff = crate::reconnect_backoff();
    let mut retries = backoff.start(tokio::time::Instant::now());
    while !shutdown.is_cancelled() {
        let client = match connect(&cfg, &cell).await {
            Ok(c) => c,
            Err(e) => {
                cell.down(e.to_string());
                if !wait(&mut retries, &shutdown).await {
                    break;
                }
                continue;
            }
        };
        // Rebuild the subscription/consumer on the same client: the client
        // reconnects by itself, only what sits on top of it breaks.
        while !shutdown.is_cancelled() {
            let res = match &cfg.jetstream {
                Some(js) => {
                    consume_jetstream(&cfg, js, &client, &sink, &cell, &shutdown, &mut retries)
                        .await
                }
                None => consume_core(&cfg, &client, &sink, &cell, &shutdown, &mut retries).await,
            };
            match res {
                Ok(()) => break,
                Err(e) => {
                    cell.down(e.to_string());
                    if !wait(&mut retries, &shutdown).await {
                        break;
                    }
                }
            }
        }
        // Acks are fire-and-forget publishes: push out what is buffered before the
        // client goes away, or the server redelivers acked messages.
        if let Err(e) = tokio::time::timeout(Duration::from_secs(5), client.flush()).await {
            tracing::warn!(source = %cell.name(), error = %e, "Could not flush NATS acks on shutdown.");
        }
        drop(client);
    }
    tracing::info!(source = %cell.name(), "NATS source stopped.");
}

async fn wait(retries: &mut tidegate_flow::retry::Retries, shutdown: &CancellationToken) -> bool {
    let delay = retries
        .next_delay(tokio::time::Instant::now(), None, &mut rand::rng())
        .unwrap_or(Duration::from_secs(30));
    crate::sleep_or_shutdown(delay, shutdown).await
}

async fn connect(
    cfg: &NatsSourceConfig,
    cell: &Arc<Cell>,
) -> Result<async_nats::Client, NatsSourceError> {
    let events = cell.clone();
    let mut opts = async_nats::ConnectOptions::new()
        .name(format!("tidegate-{}", cfg.name))
        .subscription_capacity(cfg.subscription_capacity.max(1))
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |event| {
            let cell = events.clone();
            async move {
                match event {
                    async_nats::Event::Disconnected => cell.down(DISCONNECTED),
                    async_nats::Event::Connected => cell.running_if_down_with(DISCONNECTED),
                    async_nats::Event::SlowConsumer(sid) => {
                        tracing::warn!(source = %cell.name(), subscription = sid, "NATS dropped messages: the source is slower than the publishers.");
                    }
                    async_nats::Event::Closed => {
                        tracing::debug!(source = %cell.name(), "NATS connection closed.");
                    }
                    other => {
                        tracing::warn!(source = %cell.name(), event = %other, "NATS client event.");
                    }
                }
            }
        });
    opts = match &cfg.credentials {
        None => opts,
        Some(NatsCredentials::Token(t)) => opts.token(t.clone()),
        Some(NatsCredentials::UserPassword { user, password }) => {
            opts.user_and_password(user.clone(), password.clone())
        }
        Some(NatsCredentials::CredsFile(path)) => {
            opts.credentials_file(path).await.map_err(|e| {
                NatsSourceError::Connect(format!("credentials file {}: {e}", path.display()))
            })?
        }
    };
    opts.connect(cfg.servers.clone())
        .await
        .map_err(|e| NatsSourceError::Connect(e.to_string()))
}

// --- core NATS ---

struct CoreToken(async_nats::Subject);

impl fmt::Display for CoreToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "subject {}", self.0)
    }
}

async fn consume_core(
    cfg: &NatsSourceConfig,
    client: &async_nats::Client,
    sink: &LogSink,
    cell: &Cell,
    shutdown: &CancellationToken,
    retries: &mut tidegate_flow::retry::Retries,
) -> Result<(), NatsSourceError> {
    let mut subs = Vec::with_capacity(cfg.subjects.len());
    for subject in &cfg.subjects {
        let sub = match &cfg.queue_group {
            Some(group) => client.queue_subscribe(subject.clone(), group.clone()).await,
            None => client.subscribe(subject.clone()).await,
        }
        .map_err(|e| NatsSourceError::Subscribe(format!("{subject}: {e}")))?;
        subs.push(sub);
    }
    // Make sure the server has the subscriptions before saying we run.
    client
        .flush()
        .await
        .map_err(|e| NatsSourceError::Subscribe(e.to_string()))?;
    let mut messages = futures_util::stream::select_all(subs);
    cell.running();
    *retries = crate::reconnect_backoff().start(tokio::time::Instant::now());
    let batch_max = cfg.batch_max.max(1);
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let Some(first) = first else {
            return Err(NatsSourceError::Ended);
        };
        let mut batch = vec![first];
        while batch.len() < batch_max {
            match messages.next().now_or_never() {
                Some(Some(m)) => batch.push(m),
                _ => break,
            }
        }
        cell.received(batch.len() as u64);
        let msgs: Vec<Msg<CoreToken>> = batch
            .into_iter()
            .map(|m| Msg {
                decoded: decode(&m),
                token: CoreToken(m.subject),
            })
            .collect();
        // Core NATS cannot redeliver: hold the batch and retry the log until it
        // takes it or we shut down.
        if ingest::store_with_retry(sink, cell, &msgs, shutdown, None)
            .await
            .is_none()
        {
            return Ok(());
        }
    }
}

fn decode(
    m: &async_nats::Message,
) -> Result<Vec<tidegate_core::event::Event>, tidegate_core::event::EventError> {
    match &m.headers {
        Some(h) => {
            let headers: Vec<(&str, &[u8])> = h
                .iter()
                .flat_map(|(name, values)| {
                    values
                        .iter()
                        .map(move |v| (name.as_ref(), v.as_str().as_bytes()))
                })
                .collect();
            crate::decode::decode("ce-", headers.iter().copied(), &m.payload)
        }
        None => crate::decode::decode("ce-", std::iter::empty(), &m.payload),
    }
}

// --- JetStream ---

struct JsToken {
    subject: async_nats::Subject,
    sequence: Option<u64>,
}

impl fmt::Display for JsToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.sequence {
            Some(seq) => write!(f, "subject {} stream sequence {seq}", self.subject),
            None => write!(f, "subject {}", self.subject),
        }
    }
}

async fn consume_jetstream(
    cfg: &NatsSourceConfig,
    js_cfg: &JetStreamConfig,
    client: &async_nats::Client,
    sink: &LogSink,
    cell: &Cell,
    shutdown: &CancellationToken,
    retries: &mut tidegate_flow::retry::Retries,
) -> Result<(), NatsSourceError> {
    let js = jetstream::new(client.clone());
    let stream = js
        .get_stream(&js_cfg.stream)
        .await
        .map_err(|e| NatsSourceError::Stream {
            stream: js_cfg.stream.clone(),
            reason: e.to_string(),
        })?;
    let mut config = pull::Config {
        durable_name: Some(js_cfg.durable.clone()),
        ack_policy: jetstream::consumer::AckPolicy::Explicit,
        deliver_policy: jetstream::consumer::DeliverPolicy::All,
        ack_wait: js_cfg.ack_wait,
        max_ack_pending: js_cfg.max_ack_pending,
        ..Default::default()
    };
    // One subject goes in `filter_subject`, which every JetStream server knows;
    // several need `filter_subjects` (nats-server 2.10+).
    match cfg.subjects.as_slice() {
        [] => {}
        [one] => config.filter_subject = one.clone(),
        many => config.filter_subjects = many.to_vec(),
    }
    let consumer: jetstream::consumer::PullConsumer = stream
        .get_or_create_consumer(&js_cfg.durable, config)
        .await
        .map_err(|e| NatsSourceError::Consumer {
            durable: js_cfg.durable.clone(),
            reason: e.to_string(),
        })?;
    let batch = js_cfg.batch.max(1);
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| NatsSourceError::Consumer {
            durable: js_cfg.durable.clone(),
            reason: e.to_string(),
        })?;
    cell.running();
    *retries = crate::reconnect_backoff().start(tokio::time::Instant::now());
    loop {
        let first = tokio::select! {
            _ = shutdown.cancelled() => return Ok(()),
            m = messages.next() => m,
        };
        let first = match first {
            None => return Err(NatsSourceError::Ended),
            Some(Err(e)) => return Err(NatsSourceError::Messages(e.to_string())),
            Some(Ok(m)) => m,
        };
        cell.running();
        let mut held = vec![first];
        while held.len() < batch {
            match messages.next().now_or_never() {
                Some(Some(Ok(m))) => held.push(m),
                Some(Some(Err(e))) => {
                    tracing::warn!(source = %cell.name(), error = %e, "JetStream message stream error.");
                    break;
                }
                _ => break,
            }
        }
        cell.received(held.len() as u64);
        let msgs: Vec<Msg<JsToken>> = held
            .iter()
            .map(|m| Msg {
                decoded: decode(&m.message),
                token: JsToken {
                    subject: m.subject.clone(),
                    sequence: m.info().ok().map(|i| i.stream_sequence),
                },
            })
            .collect();
        // Progress acks while the batch waits for the hub or the log, so the server
        // does not redeliver it meanwhile.
        let held_ref = &held;
        let progress = move || {
            let fut: BoxFuture<'_, ()> = Box::pin(async move {
                for m in held_ref {
                    let _ = m.ack_with(AckKind::Progress).await;
                }
            });
            fut
        };
        let keep_alive: ingest::KeepAlive<'_> = (js_cfg.ack_wait / 2, &progress);
        let Some(verdicts) =
            ingest::store_with_retry(sink, cell, &msgs, shutdown, Some(keep_alive)).await
        else {
            // Shutting down before the log took the batch: hand it back so another
            // consumer (or our restart) gets it now rather than after `ack_wait`.
            for m in &held {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
            return Ok(());
        };
        for (m, verdict) in held.iter().zip(verdicts) {
            let kind = match verdict {
                Verdict::Ack => AckKind::Ack,
                Verdict::Poison => AckKind::Term,
            };
            if let Err(e) = m.ack_with(kind).await {
                // The event is in the log; a lost ack only means a redelivery, which
                // the dedup key absorbs.
                tracing::warn!(source = %cell.name(), error = %e, "Could not ack a JetStream message.");
            }
        }
        if let Some(last) = held.last() {
            if let Ok(info) = last.info() {
                cell.set_lag(Some(info.pending));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::env::lookup;

    #[test]
    fn rig_env_defaults() {
        assert_eq!(NatsSourceConfig::from_rig_env(lookup(&[])).unwrap(), None);
        assert_eq!(
            NatsSourceConfig::from_rig_env(lookup(&[("NATS_SERVERS", " ")])).unwrap(),
            None
        );
        let cfg = NatsSourceConfig::from_rig_env(lookup(&[("NATS_SERVERS", "a:4222, b:4222")]))
            .unwrap()
            .unwrap();
        assert_eq!(cfg.servers, vec!["a:4222", "b:4222"]);
        assert_eq!(cfg.subjects, vec!["rig"]);
        assert_eq!(cfg.queue_group.as_deref(), Some(RIG_QUEUE_GROUP));
        assert_eq!(cfg.jetstream, None);
        assert_eq!(cfg.credentials, None);
    }

    #[test]
    fn rig_env_jetstream_and_auth() {
        let cfg = NatsSourceConfig::from_rig_env(lookup(&[
            ("NATS_SERVERS", "nats://a:4222"),
            ("NATS_SOURCE_TOPICS", "orders.>,users.*"),
            ("NATSTOFILTER_QUEUE_GROUP", "g"),
            ("TIDEGATE_NATS_SOURCE_STREAM", "EVENTS"),
            ("TIDEGATE_NATS_USER", "u"),
            ("TIDEGATE_NATS_PASSWORD", "p"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(cfg.subjects, vec!["orders.>", "users.*"]);
        assert_eq!(cfg.queue_group.as_deref(), Some("g"));
        let js = cfg.jetstream.unwrap();
        assert_eq!(js.stream, "EVENTS");
        assert_eq!(js.durable, DEFAULT_DURABLE);
        assert_eq!(
            cfg.credentials,
            Some(NatsCredentials::UserPassword {
                user: "u".into(),
                password: "p".into()
            })
        );
        let secret = format!("{:?}", NatsCredentials::Token("s3cret".into()));
        assert!(!secret.contains("s3cret"));
    }
}
