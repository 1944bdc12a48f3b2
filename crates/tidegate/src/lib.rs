//! Tidegate, assembled: configuration → log → hub → edge → listeners.
//!
//! [`start`] builds everything from a [`config::Config`] and returns a [`Running`]
//! gateway with its bound addresses (tests bind port 0), [`Running::shutdown`] drains it.
#![forbid(unsafe_code)]

pub mod config;
mod h1stream;
pub mod tls;

use anyhow::Context;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use tidegate_auth::{Check, Checker, JwtConfig, KeySource, Verifier};
use tidegate_core::subscription::Limits;
use tidegate_core::Extractors;
use tidegate_edge::blacklist::BlacklistStore;
use tidegate_edge::cors::Cors;
use tidegate_edge::{AppState, EdgeConfig};
use tidegate_hub::{Hub, HubConfig, OverflowPolicy};
use tidegate_log::embedded::{EmbeddedConfig, EmbeddedLog};
use tidegate_log::{Durability, EventLog};
use tidegate_telemetry::{LogLevelHandle, Metrics};

use config::Config;

pub const EVENTS_STREAM: &str = "events";

pub struct Running {
    pub inbound: SocketAddr,
    pub internal: SocketAddr,
    /// HTTPS listeners, when a certificate is configured.
    pub inbound_https: Option<SocketAddr>,
    pub internal_https: Option<SocketAddr>,
    /// The internal API token in force (generated when none was configured).
    pub api_token: Option<String>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    log: Arc<dyn EventLog>,
}

impl Running {
    /// Stops accepting, closes connections (clients resume elsewhere), flushes the log.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        self.tasks.close();
        if tokio::time::timeout(Duration::from_secs(10), self.tasks.wait())
            .await
            .is_err()
        {
            warn!("Some tasks did not stop within 10 s");
        }
        self.log.close();
    }

    /// Resolves when shutdown has been requested.
    pub fn cancelled(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.shutdown.cancelled()
    }

    pub fn trigger_shutdown(&self) {
        self.shutdown.cancel();
    }
}

fn jwt_config(cfg: &Config) -> anyhow::Result<JwtConfig> {
    let j = &cfg.jwt;
    let mut jc = JwtConfig::from_rig(&j.secret_key, &j.alg).context("JWT_SECRET_KEY / JWT_ALG")?;
    for spec in &j.public_keys {
        let (alg, path) = spec
            .split_once(':')
            .with_context(|| format!("jwt.public_keys entry `{spec}` must be ALG:path"))?;
        let alg = tidegate_auth::jwt::parse_algorithm(alg)
            .with_context(|| format!("jwt.public_keys: unknown algorithm `{alg}`"))?;
        let pem = std::fs::read(path)
            .with_context(|| format!("jwt.public_keys: cannot read `{path}`"))?;
        jc.keys.push(KeySource::PublicPem {
            alg,
            pem,
            kid: None,
        });
    }
    jc.jwks_file = j.jwks_file.clone();
    jc.jwks_url = j.jwks_url.clone();
    jc.jwks_refresh = Duration::from_secs(j.jwks_refresh_secs.max(1));
    jc.leeway = Duration::from_secs(j.leeway_secs);
    jc.issuers = j.issuers.clone();
    jc.audiences = j.audiences.clone();
    jc.require_exp = j.require_exp;
    Ok(jc)
}

fn checker(name: &str, value: &str, timeout: Duration) -> anyhow::Result<Checker> {
    let check: Check = value
        .to_ascii_lowercase()
        .parse()
        .with_context(|| name.to_string())?;
    let check = match check {
        // Keep the URL's case: only the keywords are case-insensitive.
        Check::External(_) => value.parse().with_context(|| name.to_string())?,
        other => other,
    };
    Checker::new(check, timeout).with_context(|| name.to_string())
}

/// RIG's API gateway: definitions from `PROXY_CONFIG_FILE` and the `_apis` stream,
/// publishers for `target: kafka | nats`, the Kafka response consumer.
async fn open_proxy(
    cfg: &Config,
    log: Arc<dyn EventLog>,
    verifier: Arc<Verifier>,
    blacklist: Arc<BlacklistStore>,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<Arc<tidegate_proxy::Proxy>> {
    use tidegate_proxy as proxy;
    let p = &cfg.proxy;
    let ms = Duration::from_millis;
    let kafka_cfg = (!cfg.kafka.brokers.is_empty()).then(|| proxy::KafkaConfig {
        properties: cfg.kafka.client_properties(),
        ..proxy::KafkaConfig::new(cfg.kafka.bootstrap())
    });
    let kafka: Option<Arc<dyn proxy::Publisher>> = match &kafka_cfg {
        Some(k) => Some(Arc::new(
            proxy::KafkaPublisher::new(k).context("the proxy's Kafka producer")?,
        )),
        None => None,
    };
    let nats: Option<Arc<dyn proxy::Publisher>> = if cfg.nats.servers.is_empty() {
        None
    } else {
        let nc = proxy::NatsConfig::new(cfg.nats.servers.join(","));
        Some(Arc::new(
            proxy::NatsPublisher::connect(&nc)
                .await
                .context("the proxy's NATS client (NATS_SERVERS)")?,
        ))
    };
    let session_field = cfg.jwt.session_field.clone();
    let session_denied: proxy::SessionCheck = Arc::new(move |claims: &serde_json::Value| {
        claims
            .pointer(&session_field)
            .and_then(|v| v.as_str())
            .is_some_and(|s| blacklist.contains(s))
    });
    let px = proxy::Proxy::open(
        log,
        proxy::ProxyConfig {
            file: p.config_file.clone(),
            timeouts: proxy::Timeouts {
                recv: ms(p.recv_timeout_ms.max(1)),
                http_async_response: ms(p.http_async_response_timeout_ms.max(1)),
                kafka_response: ms(p.kafka_response_timeout_ms.max(1)),
                nats_response: ms(p.nats_response_timeout_ms.max(1)),
                ..proxy::Timeouts::default()
            },
            kafka,
            nats,
            verifier: Some(verifier),
            session_denied: Some(session_denied),
            max_body: p.max_body_bytes,
            max_waiters: p.max_waiters,
            cors: cfg.cors.clone(),
            scheme: "http".into(),
            ..proxy::ProxyConfig::default()
        },
    )
    .await
    .context("PROXY_CONFIG_FILE / API definitions")?;
    px.spawn_follower(tasks, shutdown.clone());
    if let Some(k) = kafka_cfg {
        let rc = proxy::KafkaResponsesConfig {
            topics: p.kafka_response_topics.clone(),
            group_prefix: p.kafka_response_group.clone(),
            ..proxy::KafkaResponsesConfig::new(k)
        };
        px.spawn_kafka_responses(&rc, tasks, shutdown.clone())
            .context("the proxy's Kafka response consumer")?;
    }
    Ok(px)
}

/// The Kafka and NATS sources: their events are appended to the `events` stream like
/// published ones, and acknowledged to the broker only after that.
fn start_sources(
    cfg: &Config,
    log: Arc<dyn EventLog>,
    hub: Hub,
    tasks: &TaskTracker,
    shutdown: &CancellationToken,
) -> anyhow::Result<tidegate_sources::Sources> {
    use tidegate_sources as src;
    let mut configs = Vec::new();
    let s = &cfg.sources;
    if cfg.kafka.source_enabled(&s.kafka) {
        anyhow::ensure!(
            !cfg.kafka.brokers.is_empty(),
            "sources.kafka is enabled but no brokers are set (KAFKA_BROKERS)"
        );
        let mut k = src::KafkaSourceConfig::new(cfg.kafka.brokers.clone(), s.kafka.topics.clone());
        k.group_id = s.kafka.group_id.clone();
        k.offset_reset = if s.kafka.offset_reset == "latest" {
            src::kafka::OffsetReset::Latest
        } else {
            src::kafka::OffsetReset::Earliest
        };
        k.extra = cfg.kafka.client_properties();
        configs.push(src::SourceConfig::Kafka(k));
    }
    let nats_on = s.nats.enabled.unwrap_or(!cfg.nats.servers.is_empty());
    if nats_on && (!s.nats.subjects.is_empty() || s.nats.jetstream_stream.is_some()) {
        anyhow::ensure!(
            !cfg.nats.servers.is_empty(),
            "sources.nats is enabled but no servers are set (NATS_SERVERS)"
        );
        let mut n = src::NatsSourceConfig::new(cfg.nats.servers.clone(), s.nats.subjects.clone());
        n.queue_group = Some(s.nats.queue_group.clone()).filter(|q| !q.is_empty());
        n.jetstream = s
            .nats
            .jetstream_stream
            .clone()
            .map(|stream| src::nats::JetStreamConfig {
                stream,
                durable: s.nats.jetstream_durable.clone(),
                ..Default::default()
            });
        n.credentials = match (
            &cfg.nats.credentials_file,
            &cfg.nats.user,
            &cfg.nats.password,
            &cfg.nats.token,
        ) {
            (Some(f), ..) => Some(src::nats::NatsCredentials::CredsFile(f.clone())),
            (None, Some(user), Some(password), _) => {
                Some(src::nats::NatsCredentials::UserPassword {
                    user: user.clone(),
                    password: password.clone(),
                })
            }
            (None, _, _, Some(t)) => Some(src::nats::NatsCredentials::Token(t.clone())),
            _ => None,
        };
        configs.push(src::SourceConfig::Nats(n));
    }
    let mut sink = src::LogSink::new(log, EVENTS_STREAM);
    sink.max_event_bytes = cfg.events.max_event_bytes;
    sink.hub = Some(hub);
    sink.max_backlog = cfg.events.max_backlog_records;
    Ok(src::Sources::start(configs, sink, tasks, shutdown.clone()))
}

type StatsFn = Box<dyn Fn() -> String + Send + Sync>;

/// The log backend of `log.backend`, and the renderer of its statistics for /metrics.
async fn open_log(cfg: &Config) -> anyhow::Result<(Arc<dyn EventLog>, StatsFn)> {
    let l = &cfg.log;
    let max_record_bytes = cfg.events.max_event_bytes + 1024;
    let retention_age = l.retention_age_secs.map(Duration::from_secs);
    match l.backend.as_str() {
        "nats" => {
            let nc = tidegate_log_nats::NatsConfig {
                servers: cfg.nats.servers.clone(),
                prefix: l.nats_prefix.clone(),
                user: cfg.nats.user.clone(),
                password: cfg.nats.password.clone(),
                token: cfg.nats.token.clone(),
                credentials_file: cfg.nats.credentials_file.clone(),
                replicas: l.nats_replicas.max(1),
                max_age: retention_age,
                max_bytes: l.retention_bytes.map(|b| b.min(i64::MAX as u64) as i64),
                duplicate_window: Duration::from_secs(l.dedup_window_secs.max(1)),
                max_record_bytes,
                request_timeout: Duration::from_millis(l.request_timeout_ms.max(100)),
                tail_cache_bytes: l.tail_cache_bytes,
            };
            let nats = tidegate_log_nats::NatsLog::connect(nc)
                .await
                .with_context(|| {
                    format!("connecting the JetStream log to {:?}", cfg.nats.servers)
                })?;
            info!(servers = ?cfg.nats.servers, prefix = %l.nats_prefix, epoch = nats.epoch(), "Log opened on NATS JetStream");
            let stats = nats.clone();
            Ok((nats, Box::new(move || render_nats_stats(&stats.stats()))))
        }
        "kafka" => {
            let mut kc = tidegate_log_kafka::KafkaConfig::new(cfg.kafka.bootstrap());
            kc.prefix = l.kafka_prefix.clone();
            kc.replication_factor = l.kafka_replication_factor.max(1);
            kc.request_timeout = Duration::from_millis(l.request_timeout_ms.max(100));
            kc.max_record_bytes = max_record_bytes;
            kc.tail_cache_bytes = l.tail_cache_bytes;
            kc.dedup_window = Duration::from_secs(l.dedup_window_secs.max(1));
            // Security and extras as for every Kafka client (KAFKA_SASL, KAFKA_SSL_*).
            kc.extra = cfg.kafka.client_properties();
            let kafka = tidegate_log_kafka::KafkaLog::connect(kc)
                .await
                .with_context(|| format!("connecting the Kafka log to {:?}", cfg.kafka.brokers))?;
            info!(brokers = ?cfg.kafka.brokers, prefix = %l.kafka_prefix, epoch = kafka.epoch(), "Log opened on Kafka");
            let stats = kafka.clone();
            Ok((kafka, Box::new(move || render_kafka_stats(&stats.stats()))))
        }
        _ => {
            let mut lc = EmbeddedConfig::new(&l.dir);
            lc.durability = if l.durability == "buffered" {
                Durability::Buffered
            } else {
                Durability::Fsync
            };
            lc.group_commit_window = Duration::from_micros(l.group_commit_window_us);
            lc.segment_bytes = l.segment_bytes;
            lc.retention_age = retention_age;
            lc.retention_bytes = l.retention_bytes;
            lc.dedup_window = Duration::from_secs(l.dedup_window_secs);
            lc.tail_cache_bytes = l.tail_cache_bytes;
            lc.append_queue = l.append_queue;
            lc.max_record_bytes = max_record_bytes;
            let embedded = EmbeddedLog::open(lc)
                .with_context(|| format!("opening the log in {}", l.dir.display()))?;
            info!(dir = %l.dir.display(), epoch = embedded.epoch(), durability = %l.durability, "Log opened");
            let stats = embedded.clone();
            Ok((
                embedded,
                Box::new(move || tidegate_edge::logstats::render(&stats.stats())),
            ))
        }
    }
}

/// OpenMetrics text of a networked backend's counters and gauges.
fn render_metrics(
    backend: &str,
    counters: &[(&str, &str, u64)],
    gauges: &[(&str, &str, u64)],
) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(1024);
    for (name, help, v) in counters {
        let _ = write!(out, "# HELP tidegate_log_{name} {help}\n# TYPE tidegate_log_{name} counter\ntidegate_log_{name}_total{{backend=\"{backend}\"}} {v}\n");
    }
    for (name, help, v) in gauges {
        let _ = write!(out, "# HELP tidegate_log_{name} {help}\n# TYPE tidegate_log_{name} gauge\ntidegate_log_{name}{{backend=\"{backend}\"}} {v}\n");
    }
    out
}

fn render_kafka_stats(s: &tidegate_log_kafka::KafkaStats) -> String {
    render_metrics(
        "kafka",
        &[
            (
                "appends",
                "Records stored by this node's appends",
                s.appends,
            ),
            (
                "append_batches",
                "Append batches produced",
                s.append_batches,
            ),
            ("bytes_appended", "Bytes produced", s.bytes_appended),
            (
                "duplicates",
                "Records not stored again because of their dedup key",
                s.duplicates,
            ),
            ("append_errors", "Append calls that failed", s.append_errors),
            (
                "overloaded_rejections",
                "Appends refused because the producer queue was full",
                s.overloaded_rejections,
            ),
            (
                "tail_records",
                "Records received by the tails",
                s.tail_records,
            ),
            ("tail_errors", "Tail consumer errors", s.tail_errors),
            (
                "cache_hits",
                "Reads served from the tail cache",
                s.cache_hits,
            ),
            (
                "cache_misses",
                "Reads that went to the broker",
                s.cache_misses,
            ),
            (
                "client_errors",
                "Errors reported by the Kafka clients",
                s.client_errors,
            ),
            (
                "producer_restarts",
                "Producers rebuilt after failed deliveries",
                s.producer_restarts,
            ),
        ],
        &[
            (
                "tail_lag",
                "Records on the broker the tail has not received yet",
                s.tail_lag_records,
            ),
            (
                "cache_bytes",
                "Bytes held by the tail caches",
                s.cache_bytes,
            ),
        ],
    )
}

fn render_nats_stats(s: &tidegate_log_nats::NatsStats) -> String {
    render_metrics(
        "nats",
        &[
            (
                "appends",
                "Records stored by this node's appends",
                s.appended,
            ),
            (
                "duplicates",
                "Records the broker reported as duplicates",
                s.duplicates,
            ),
            ("append_errors", "Append calls that failed", s.append_errors),
            ("reconnects", "Reconnections to the broker", s.reconnects),
            (
                "cache_hits",
                "Reads served from the tail cache",
                s.cache_hits,
            ),
            (
                "cache_misses",
                "Reads that went to the broker",
                s.cache_misses,
            ),
            (
                "tail_restarts",
                "Tail consumers re-created",
                s.tail_restarts,
            ),
        ],
        &[
            (
                "tail_lag",
                "Committed records the tail has not delivered yet",
                s.tail_lag,
            ),
            (
                "cache_bytes",
                "Bytes held by the tail caches",
                s.cache_bytes,
            ),
            ("streams", "Streams this node tails", s.streams),
        ],
    )
}

pub async fn start(cfg: Config, log_level: Option<LogLevelHandle>) -> anyhow::Result<Running> {
    let shutdown = CancellationToken::new();
    let tasks = TaskTracker::new();
    let metrics = Arc::new(Metrics::new());

    let (log, log_stats) = open_log(&cfg).await?;

    let extractors = match cfg.extractors_json()? {
        Some(json) => Extractors::parse(&json).context("EXTRACTORS")?,
        None => Extractors::default(),
    };
    let extractors = Arc::new(extractors);

    let verifier = Arc::new(Verifier::new(jwt_config(&cfg)?).context("JWT configuration")?);
    if cfg.jwt.jwks_url.is_some() {
        if let Err(e) = verifier.refresh().await {
            warn!(error = %e, "Initial JWKS fetch failed; retrying in the background");
        }
    }
    {
        let v = verifier.clone();
        let sd = shutdown.clone();
        tasks.spawn(async move { v.run_refresh(async move { sd.cancelled().await }).await });
    }
    let timeout = Duration::from_millis(cfg.check_timeout_ms);
    let subscription_check = checker("SUBSCRIPTION_CHECK", &cfg.subscription_check, timeout)?;
    let submission_check = checker("SUBMISSION_CHECK", &cfg.submission_check, timeout)?;

    let c = &cfg.connections;
    let mut type_policies = std::collections::HashMap::new();
    for (t, p) in &c.overflow_policies {
        type_policies.insert(t.clone(), OverflowPolicy::parse(p).unwrap_or_default());
    }
    let hub_cfg = HubConfig {
        stream: EVENTS_STREAM.into(),
        heartbeat: Duration::from_secs(c.heartbeat_secs),
        longpoll_session_timeout: Duration::from_secs(c.longpoll_session_timeout_secs),
        queue_limit_bytes: c.queue_limit_bytes,
        default_policy: OverflowPolicy::parse(&c.overflow_policy).unwrap_or_default(),
        type_policies,
        type_limits: c.queue_limits.clone(),
        max_connections: c.max_connections,
        ..HubConfig::default()
    };
    let hub = Hub::start(
        hub_cfg,
        log.clone(),
        extractors.clone(),
        metrics.clone(),
        shutdown.clone(),
        &tasks,
    )
    .await?;
    let blacklist = Arc::new(BlacklistStore::open(log.clone(), 1_000_000).await?);
    tasks.spawn(blacklist.clone().follow(hub.clone(), shutdown.clone()));

    let api_token = match (&cfg.internal.token, cfg.internal.auth_disabled) {
        (_, true) => {
            warn!("The internal API is open without authentication (internal.auth_disabled): use only for local development");
            None
        }
        (Some(t), false) => Some(t.clone()),
        (None, false) => {
            let t = uuid::Uuid::new_v4().simple().to_string();
            warn!(token = %t, "No internal API token configured (TIDEGATE_INTERNAL_TOKEN); generated one for this run");
            Some(t)
        }
    };
    let edge_cfg = EdgeConfig {
        cors: Cors::parse(&cfg.cors),
        max_body_bytes: cfg.events.max_body_bytes,
        max_event_bytes: cfg.events.max_event_bytes,
        max_batch_events: cfg.events.max_batch_events,
        longpoll_wait: Duration::from_secs(c.longpoll_wait_secs),
        session_field: cfg.jwt.session_field.clone(),
        transient_types: cfg
            .events
            .transient_types
            .iter()
            .cloned()
            .collect::<HashSet<_>>(),
        subscription_limits: Limits {
            max_subscriptions: c.max_subscriptions,
            max_constraints: c.max_constraints,
        },
        ws_max_message: c.ws_max_message_bytes,
        api_token: api_token.clone(),
        ..EdgeConfig::default()
    };
    let connection_rate = if c.max_connections_per_minute > 0 {
        let per_minute = c.max_connections_per_minute;
        Some(
            tidegate_flow::rate::Gcra::new(f64::from(per_minute) / 60.0, per_minute)
                .context("MAX_CONNECTIONS_PER_MINUTE")?,
        )
    } else {
        None
    };
    let delivery = tidegate_delivery::Delivery::open(log.clone(), cfg.routes.clone())
        .await
        .context("ingestion routes")?;
    let ingest =
        tidegate_edge::ingest::Ingest::new(delivery.clone()).map_err(anyhow::Error::msg)?;
    let route_metrics = delivery.clone();
    let sources = start_sources(&cfg, log.clone(), hub.clone(), &tasks, &shutdown)?;
    let (source_metrics, dep_sources) = (sources.clone(), sources.clone());
    let state = Arc::new(AppState {
        cfg: edge_cfg,
        hub,
        log: log.clone(),
        stream: EVENTS_STREAM.into(),
        metrics,
        extractors,
        verifier,
        subscription_check,
        submission_check,
        blacklist,
        log_level,
        log_metrics: Some(Box::new(move || {
            let mut text = log_stats();
            text.push_str(&route_metrics.render_metrics());
            text.push_str(&source_metrics.render_metrics());
            text
        })),
        dependencies: Some(Box::new(move || {
            dep_sources
                .status()
                .into_iter()
                .map(|s| {
                    let state = match &s.state {
                        tidegate_sources::SourceState::Running => Ok(()),
                        tidegate_sources::SourceState::Connecting => Err("connecting".to_owned()),
                        tidegate_sources::SourceState::Down(reason) => Err(reason.clone()),
                    };
                    (format!("source {}", s.name), state)
                })
                .collect()
        })),
        connection_rate,
        limits: tidegate_edge::limits::ConnectionLimits::new(tidegate_edge::limits::LimitsConfig {
            max_connections_per_session: c.max_connections_per_session,
            max_connections_per_minute_per_client: c.max_connections_per_minute_per_client,
            max_longpoll_sessions: c.max_longpoll_sessions,
            ..Default::default()
        })
        .context("connections.max_connections_per_minute_per_client")?,
        admission: tidegate_edge::admission::Admission::new(
            tidegate_edge::admission::AdmissionConfig {
                max_inflight: cfg.events.max_inflight_publishes,
                rate_per_second: cfg.events.publish_rate_per_second,
                burst: cfg.events.publish_burst,
                max_backlog: cfg.events.max_backlog_records,
                ..Default::default()
            },
        )
        .map_err(|e| anyhow::anyhow!("setting `events.publish_rate_per_second`: {e}"))?,
        ingest,
        streams: tidegate_edge::streams::Streams::new(tidegate_edge::streams::StreamsConfig {
            prefix: cfg.streams.prefix.clone(),
            require_auth: cfg.streams.require_auth,
            longpoll_wait: Duration::from_secs(cfg.streams.longpoll_wait_secs.max(1)),
            sse_max: Duration::from_secs(cfg.streams.sse_max_secs.max(1)),
            max_record_bytes: cfg.events.max_event_bytes.clamp(1024, 256 << 10),
            ..Default::default()
        }),
    });

    delivery.spawn(&tasks, shutdown.clone())?;
    if !sources.is_empty() {
        let s = sources.clone();
        info!(sources = ?s.status().iter().map(|s| s.name.clone()).collect::<Vec<_>>(), "Event sources started");
    }
    let inbound_addr = format!("{}:{}", cfg.inbound.host, cfg.inbound.port);
    let internal_addr = format!("{}:{}", cfg.internal.host, cfg.internal.port);
    let inbound = TcpListener::bind(&inbound_addr)
        .await
        .with_context(|| format!("binding the inbound port {inbound_addr}"))?;
    let internal = TcpListener::bind(&internal_addr)
        .await
        .with_context(|| format!("binding the internal port {internal_addr}"))?;
    let inbound_local = inbound.local_addr()?;
    let internal_local = internal.local_addr()?;
    let proxy = open_proxy(
        &cfg,
        log.clone(),
        state.verifier.clone(),
        state.blacklist.clone(),
        &tasks,
        &shutdown,
    )
    .await?;
    let inbound_router =
        tidegate_edge::inbound_router(state.clone(), Some(proxy.inbound_fallback()));
    let internal_router =
        tidegate_edge::internal_router(state.clone()).merge(proxy.management_router());
    let mut listeners = vec![
        (inbound, inbound_router.clone(), None),
        (internal, internal_router.clone(), None),
    ];
    let (mut inbound_https, mut internal_https) = (None, None);
    if let (Some(cert), Some(key)) = (&cfg.tls.cert_file, &cfg.tls.key_file) {
        let acceptor = tls::acceptor(cert, key).context("HTTPS_CERTFILE / HTTPS_KEYFILE")?;
        for (host, port, router, bound) in [
            (
                &cfg.inbound.host,
                cfg.tls.inbound_port,
                inbound_router,
                &mut inbound_https,
            ),
            (
                &cfg.internal.host,
                cfg.tls.internal_port,
                internal_router,
                &mut internal_https,
            ),
        ] {
            let addr = format!("{host}:{port}");
            let l = TcpListener::bind(&addr)
                .await
                .with_context(|| format!("binding the HTTPS port {addr}"))?;
            *bound = Some(l.local_addr()?);
            listeners.push((l, router, Some(acceptor.clone())));
        }
    }
    let opts = tls::ServeOptions {
        max_header_bytes: c.max_header_bytes,
        write_stall: Duration::from_secs(c.write_stall_secs.max(1)),
    };
    for (listener, router, acceptor) in listeners {
        tasks.spawn(tls::serve(
            listener,
            router,
            acceptor,
            opts,
            shutdown.clone(),
        ));
    }
    info!(inbound = %inbound_local, internal = %internal_local, inbound_https = ?inbound_https, internal_https = ?internal_https, "Tidegate is listening");
    Ok(Running {
        inbound: inbound_local,
        internal: internal_local,
        inbound_https,
        internal_https,
        api_token,
        shutdown,
        tasks,
        log,
    })
}
