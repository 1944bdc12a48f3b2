//! Configuration: defaults, then an optional TOML file (`--config FILE` or
//! `TIDEGATE_CONFIG`), then environment variables — RIG's names (`INBOUND_PORT`,
//! `JWT_SECRET_KEY`, …) and `TIDEGATE_*` names, the latter winning. Every invalid
//! value stops start-up with a message naming the setting.
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("setting `{name}`: {message}")]
    Invalid { name: String, message: String },
}

fn invalid(name: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        name: name.to_string(),
        message: message.into(),
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Listener {
    pub host: String,
    pub port: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Internal {
    pub host: String,
    pub port: u16,
    /// Bearer token for the internal API.
    pub token: Option<String>,
    /// `true` opens the internal API without a token (development only; logged).
    pub auth_disabled: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogSection {
    /// `embedded` (default: segment files in `dir`, one node), `nats` (JetStream) or
    /// `kafka`: the cluster modes, where every node shares the broker's log.
    pub backend: String,
    /// Embedded log directory.
    pub dir: PathBuf,
    /// `fsync` (default) or `buffered`.
    pub durability: String,
    pub group_commit_window_us: u64,
    pub segment_bytes: u64,
    pub retention_age_secs: Option<u64>,
    pub retention_bytes: Option<u64>,
    pub dedup_window_secs: u64,
    pub tail_cache_bytes: usize,
    pub append_queue: usize,
    /// JetStream stream/bucket name prefix (`log.backend = "nats"`; servers from `[nats]`).
    pub nats_prefix: String,
    /// JetStream replicas of each stream.
    pub nats_replicas: usize,
    /// Kafka topic name prefix (`log.backend = "kafka"`; brokers from `[kafka]`).
    pub kafka_prefix: String,
    pub kafka_replication_factor: i32,
    /// Broker requests (append acknowledgements, metadata) time out after this; an
    /// append that times out answers 503.
    pub request_timeout_ms: u64,
}

/// Kafka client settings shared by the Kafka log, the Kafka source and the proxy's
/// Kafka targets (RIG's names in brackets).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Kafka {
    /// Bootstrap servers, `host:port` (`KAFKA_BROKERS`). Empty: no Kafka.
    pub brokers: Vec<String>,
    /// `mechanism:user:password`, mechanism `plain`, `scram_sha_256` or `scram_sha_512`
    /// (`KAFKA_SASL`).
    pub sasl: Option<String>,
    /// `KAFKA_SSL_ENABLED`.
    pub ssl_enabled: bool,
    /// `KAFKA_SSL_CA_CERTFILE`, `KAFKA_SSL_CERTFILE`, `KAFKA_SSL_KEYFILE`, `KAFKA_SSL_KEYFILE_PASS`.
    pub ssl_ca_file: Option<PathBuf>,
    pub ssl_cert_file: Option<PathBuf>,
    pub ssl_key_file: Option<PathBuf>,
    pub ssl_key_password: Option<String>,
    /// Raw librdkafka properties for every Kafka client.
    pub properties: HashMap<String, String>,
}

/// NATS client settings shared by the JetStream log, the NATS source and the proxy.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Nats {
    /// Server URLs (`NATS_SERVERS`). Empty: no NATS.
    pub servers: Vec<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub credentials_file: Option<PathBuf>,
}

/// RIG's API gateway (reverse proxy, `/v3/apis`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ProxySection {
    /// `PROXY_CONFIG_FILE`: a path or inline JSON list of API definitions.
    pub config_file: Option<String>,
    /// `PROXY_RECV_TIMEOUT` (ms): a backend's response head, and each body read.
    pub recv_timeout_ms: u64,
    /// `PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT` (ms).
    pub http_async_response_timeout_ms: u64,
    /// `PROXY_KAFKA_RESPONSE_TIMEOUT` (ms).
    pub kafka_response_timeout_ms: u64,
    /// `PROXY_NATS_RESPONSE_TIMEOUT` (ms).
    pub nats_response_timeout_ms: u64,
    /// `PROXY_KAFKA_RESPONSE_TOPICS`.
    pub kafka_response_topics: Vec<String>,
    /// `PROXY_KAFKA_RESPONSE_KAFKA_GROUP_ID` (each node adds its own suffix).
    pub kafka_response_group: String,
    /// Largest request body forwarded or published.
    pub max_body_bytes: usize,
    /// Requests waiting for asynchronous responses at once; more answer 503.
    pub max_waiters: usize,
}

impl Default for ProxySection {
    fn default() -> Self {
        ProxySection {
            config_file: None,
            recv_timeout_ms: 5000,
            http_async_response_timeout_ms: 5000,
            kafka_response_timeout_ms: 5000,
            nats_response_timeout_ms: 60_000,
            kafka_response_topics: vec!["rig-proxy-response".into()],
            kafka_response_group: "rig-proxy-response".into(),
            max_body_bytes: 10 << 20,
            max_waiters: 10_000,
        }
    }
}

/// Event sources: brokers whose CloudEvents are appended to the log like published ones.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Sources {
    pub kafka: KafkaSource,
    pub nats: NatsSource,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KafkaSource {
    /// On by default when `[kafka] brokers` is set (as in RIG); `false` turns it off.
    pub enabled: Option<bool>,
    /// `KAFKA_SOURCE_TOPICS`.
    pub topics: Vec<String>,
    /// `KAFKATOFILTER_KAFKA_GROUP_ID`.
    pub group_id: String,
    /// Where a group without committed offsets starts: `earliest` (default: nothing
    /// published before the group's first commit is skipped) or `latest` (RIG's).
    pub offset_reset: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NatsSource {
    /// On by default when `[nats] servers` is set (as in RIG); `false` turns it off.
    pub enabled: Option<bool>,
    /// `NATS_SOURCE_TOPICS`: core NATS subjects (RIG's mode, at-most-once).
    pub subjects: Vec<String>,
    /// `NATSTOFILTER_QUEUE_GROUP`.
    pub queue_group: String,
    /// A JetStream stream to consume with a durable consumer instead (at-least-once).
    pub jetstream_stream: Option<String>,
    pub jetstream_durable: String,
}

impl Default for KafkaSource {
    fn default() -> Self {
        KafkaSource {
            enabled: None,
            topics: vec!["rig".into()],
            group_id: "rig-kafka-to-filter".into(),
            offset_reset: "earliest".into(),
        }
    }
}

impl Default for NatsSource {
    fn default() -> Self {
        NatsSource {
            enabled: None,
            subjects: vec!["rig".into()],
            queue_group: "rig-nats-to-filter".into(),
            jetstream_stream: None,
            jetstream_durable: "tidegate-nats-to-log".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Jwt {
    /// RIG's `JWT_SECRET_KEY`: the HS secret, or a PEM public key / path for RS/ES/PS/EdDSA.
    pub secret_key: String,
    /// RIG's `JWT_ALG`.
    pub alg: String,
    /// Extra PEM public key files, each `ALG:path` (e.g. `RS256:/etc/keys/a.pem`).
    pub public_keys: Vec<String>,
    pub jwks_file: Option<PathBuf>,
    pub jwks_url: Option<String>,
    pub jwks_refresh_secs: u64,
    pub leeway_secs: u64,
    pub issuers: Vec<String>,
    pub audiences: Vec<String>,
    pub require_exp: bool,
    /// RIG's `JWT_SESSION_FIELD`: JSON pointer of the session id claim.
    pub session_field: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Connections {
    pub heartbeat_secs: u64,
    /// A write to a client that makes no progress for this long drops the connection.
    pub write_stall_secs: u64,
    pub queue_limit_bytes: usize,
    /// `disconnect` (default), `drop_oldest` or `drop_newest`.
    pub overflow_policy: String,
    /// Per event type overflow policies.
    pub overflow_policies: HashMap<String, String>,
    /// Per event type queue bounds in bytes, tighter than `queue_limit_bytes`.
    pub queue_limits: HashMap<String, usize>,
    pub max_connections: usize,
    /// RIG's `MAX_CONNECTIONS_PER_MINUTE` (node-wide; 0 = unlimited).
    pub max_connections_per_minute: u32,
    pub longpoll_wait_secs: u64,
    pub longpoll_session_timeout_secs: u64,
    pub max_subscriptions: usize,
    pub max_constraints: usize,
    pub ws_max_message_bytes: usize,
    /// Live connections per session id (the `JWT_SESSION_FIELD` claim); 0 = unlimited.
    pub max_connections_per_session: usize,
    /// New connections per minute per client IP address; 0 = unlimited.
    pub max_connections_per_minute_per_client: u32,
    /// Live long-polling sessions on this node; 0 = unlimited.
    pub max_longpoll_sessions: usize,
    /// Largest request head (request line + headers) on both ports; bigger ones get 431.
    pub max_header_bytes: usize,
}

/// HTTPS beside HTTP on both ports when a certificate and key are configured.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Tls {
    /// RIG's `HTTPS_CERTFILE`: PEM certificate chain, leaf first.
    pub cert_file: Option<PathBuf>,
    /// RIG's `HTTPS_KEYFILE`: PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// RIG's `INBOUND_HTTPS_PORT`.
    pub inbound_port: u16,
    /// RIG's `API_HTTPS_PORT`.
    pub internal_port: u16,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Events {
    pub transient_types: Vec<String>,
    /// Publish requests processed at once; more answer 503.
    pub max_inflight_publishes: usize,
    /// Publishes per second per principal (JWT sub, else client address); 0 = off.
    pub publish_rate_per_second: f64,
    pub publish_burst: u32,
    /// Fan-out backlog (records) beyond which publishes are shed with 503.
    pub max_backlog_records: u64,
    pub max_event_bytes: usize,
    pub max_body_bytes: usize,
    pub max_batch_events: usize,
}

/// The Durable Streams protocol on the inbound port.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Streams {
    /// URL prefix of stream paths; empty disables the protocol.
    pub prefix: String,
    /// Require a valid JWT bearer token for every request under the prefix.
    pub require_auth: bool,
    pub longpoll_wait_secs: u64,
    pub sse_max_secs: u64,
}

impl Default for Streams {
    fn default() -> Self {
        Streams {
            prefix: "/v1/stream".into(),
            require_auth: false,
            longpoll_wait_secs: 5,
            sse_max_secs: 60,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub inbound: Listener,
    pub internal: Internal,
    pub log: LogSection,
    pub jwt: Jwt,
    pub connections: Connections,
    pub events: Events,
    pub tls: Tls,
    pub streams: Streams,
    pub kafka: Kafka,
    pub nats: Nats,
    pub sources: Sources,
    pub proxy: ProxySection,
    /// RIG's `CORS`: `*` or a comma-separated list of origins.
    pub cors: String,
    /// RIG's `EXTRACTORS`: inline JSON or a file path.
    pub extractors: Option<String>,
    /// RIG's `SUBSCRIPTION_CHECK`: `no_check`, `jwt_validation` or a URL.
    pub subscription_check: String,
    /// RIG's `SUBMISSION_CHECK`.
    pub submission_check: String,
    pub check_timeout_ms: u64,
    /// RIG's `LOG_LEVEL` (a tracing filter).
    pub log_level: String,
    /// RIG's `LOG_FMT`: `erlang`/`text` or `json`.
    pub log_format: String,
    /// Ingestion routes with reliable delivery (`[[routes]]`, TOML only).
    pub routes: Vec<tidegate_delivery::RouteConfig>,
}

impl Default for Listener {
    fn default() -> Self {
        Listener {
            host: "0.0.0.0".into(),
            port: 4000,
        }
    }
}

impl Default for Internal {
    fn default() -> Self {
        // Loopback by default: the internal API is not for the network unless asked.
        Internal {
            host: "127.0.0.1".into(),
            port: 4010,
            token: None,
            auth_disabled: false,
        }
    }
}

impl Default for LogSection {
    fn default() -> Self {
        LogSection {
            backend: "embedded".into(),
            dir: PathBuf::from("data"),
            durability: "fsync".into(),
            group_commit_window_us: 0,
            segment_bytes: 64 << 20,
            retention_age_secs: Some(7 * 24 * 3600),
            retention_bytes: None,
            dedup_window_secs: 300,
            tail_cache_bytes: 64 << 20,
            append_queue: 4096,
            nats_prefix: "tidegate".into(),
            nats_replicas: 1,
            kafka_prefix: "tidegate.".into(),
            kafka_replication_factor: 1,
            request_timeout_ms: 5000,
        }
    }
}

impl Default for Jwt {
    fn default() -> Self {
        Jwt {
            secret_key: String::new(),
            alg: "HS256".into(),
            public_keys: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            jwks_refresh_secs: 300,
            leeway_secs: 30,
            issuers: Vec::new(),
            audiences: Vec::new(),
            require_exp: false,
            session_field: "/jti".into(),
        }
    }
}

impl Default for Connections {
    fn default() -> Self {
        Connections {
            heartbeat_secs: 15,
            write_stall_secs: 30,
            queue_limit_bytes: 1 << 20,
            overflow_policy: "disconnect".into(),
            overflow_policies: HashMap::new(),
            queue_limits: HashMap::new(),
            max_connections: 100_000,
            max_connections_per_minute: 5000,
            longpoll_wait_secs: 5,
            longpoll_session_timeout_secs: 300,
            max_subscriptions: 100,
            max_constraints: 100,
            ws_max_message_bytes: 64 << 10,
            max_connections_per_session: 100,
            max_connections_per_minute_per_client: 600,
            max_longpoll_sessions: 10_000,
            max_header_bytes: 64 << 10,
        }
    }
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            cert_file: None,
            key_file: None,
            inbound_port: 4001,
            internal_port: 4011,
        }
    }
}

impl Default for Events {
    fn default() -> Self {
        Events {
            transient_types: Vec::new(),
            max_inflight_publishes: 4096,
            publish_rate_per_second: 0.0,
            publish_burst: 100,
            max_backlog_records: 1_000_000,
            max_event_bytes: 1 << 20,
            max_body_bytes: 4 << 20,
            max_batch_events: 1000,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            inbound: Listener::default(),
            internal: Internal::default(),
            log: LogSection::default(),
            jwt: Jwt::default(),
            connections: Connections::default(),
            events: Events::default(),
            tls: Tls::default(),
            streams: Streams::default(),
            kafka: Kafka::default(),
            nats: Nats::default(),
            sources: Sources::default(),
            proxy: ProxySection::default(),
            cors: "*".into(),
            extractors: None,
            subscription_check: "no_check".into(),
            submission_check: "no_check".into(),
            check_timeout_ms: 5000,
            log_level: "info".into(),
            log_format: "text".into(),
            routes: Vec::new(),
        }
    }
}

/// One environment variable: RIG's name and/or Tidegate's, and how it applies.
struct EnvVar {
    names: &'static [&'static str],
    apply: fn(&mut Config, &str, &str) -> Result<(), ConfigError>,
}

fn num<T: std::str::FromStr>(name: &str, v: &str) -> Result<T, ConfigError> {
    v.trim()
        .parse()
        .map_err(|_| invalid(name, format!("`{v}` is not a valid number")))
}

fn boolean(name: &str, v: &str) -> Result<bool, ConfigError> {
    match v.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(invalid(name, format!("`{v}` is not a boolean"))),
    }
}

fn list(v: &str) -> Vec<String> {
    v.split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// Ordered: for each setting the first name is RIG's (if any); later names win.
// Each setter is `Ok(field = value)`: one line per variable reads best here.
#[allow(clippy::unit_arg)]
const ENV: &[EnvVar] = &[
    EnvVar {
        names: &["INBOUND_PORT", "TIDEGATE_INBOUND_PORT"],
        apply: |c, n, v| Ok(c.inbound.port = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_INBOUND_HOST"],
        apply: |c, _, v| Ok(c.inbound.host = v.to_string()),
    },
    EnvVar {
        names: &["API_HTTP_PORT", "TIDEGATE_INTERNAL_PORT"],
        apply: |c, n, v| Ok(c.internal.port = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_INTERNAL_HOST"],
        apply: |c, _, v| Ok(c.internal.host = v.to_string()),
    },
    EnvVar {
        names: &["TIDEGATE_INTERNAL_TOKEN"],
        apply: |c, _, v| Ok(c.internal.token = Some(v.to_string()).filter(|s| !s.is_empty())),
    },
    EnvVar {
        names: &["TIDEGATE_INTERNAL_AUTH_DISABLED"],
        apply: |c, n, v| Ok(c.internal.auth_disabled = boolean(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_DIR"],
        apply: |c, _, v| Ok(c.log.dir = PathBuf::from(v)),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_DURABILITY"],
        apply: |c, _, v| Ok(c.log.durability = v.to_string()),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_GROUP_COMMIT_WINDOW_US"],
        apply: |c, n, v| Ok(c.log.group_commit_window_us = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_SEGMENT_BYTES"],
        apply: |c, n, v| Ok(c.log.segment_bytes = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_RETENTION_AGE_SECS"],
        apply: |c, n, v| Ok(c.log.retention_age_secs = Some(num(n, v)?).filter(|s| *s > 0)),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_RETENTION_BYTES"],
        apply: |c, n, v| Ok(c.log.retention_bytes = Some(num(n, v)?).filter(|s| *s > 0)),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_DEDUP_WINDOW_SECS"],
        apply: |c, n, v| Ok(c.log.dedup_window_secs = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_BACKEND"],
        apply: |c, _, v| Ok(c.log.backend = v.trim().to_ascii_lowercase()),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_NATS_PREFIX"],
        apply: |c, _, v| Ok(c.log.nats_prefix = v.to_string()),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_NATS_REPLICAS"],
        apply: |c, n, v| Ok(c.log.nats_replicas = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_KAFKA_PREFIX"],
        apply: |c, _, v| Ok(c.log.kafka_prefix = v.to_string()),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_KAFKA_REPLICATION_FACTOR"],
        apply: |c, n, v| Ok(c.log.kafka_replication_factor = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_LOG_REQUEST_TIMEOUT_MS"],
        apply: |c, n, v| Ok(c.log.request_timeout_ms = num(n, v)?),
    },
    EnvVar {
        names: &["KAFKA_BROKERS", "TIDEGATE_KAFKA_BROKERS"],
        apply: |c, _, v| Ok(c.kafka.brokers = list(v)),
    },
    EnvVar {
        names: &["KAFKA_SASL", "TIDEGATE_KAFKA_SASL"],
        apply: |c, _, v| Ok(c.kafka.sasl = Some(v.to_string()).filter(|s| !s.trim().is_empty())),
    },
    EnvVar {
        names: &["KAFKA_SSL_ENABLED", "TIDEGATE_KAFKA_SSL_ENABLED"],
        apply: |c, n, v| Ok(c.kafka.ssl_enabled = boolean(n, v)?),
    },
    EnvVar {
        names: &["KAFKA_SSL_CA_CERTFILE", "TIDEGATE_KAFKA_SSL_CA_FILE"],
        apply: |c, _, v| {
            Ok(c.kafka.ssl_ca_file = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty()))
        },
    },
    EnvVar {
        names: &["KAFKA_SSL_CERTFILE", "TIDEGATE_KAFKA_SSL_CERT_FILE"],
        apply: |c, _, v| {
            Ok(
                c.kafka.ssl_cert_file =
                    Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty()),
            )
        },
    },
    EnvVar {
        names: &["KAFKA_SSL_KEYFILE", "TIDEGATE_KAFKA_SSL_KEY_FILE"],
        apply: |c, _, v| {
            Ok(c.kafka.ssl_key_file = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty()))
        },
    },
    EnvVar {
        names: &["KAFKA_SSL_KEYFILE_PASS", "TIDEGATE_KAFKA_SSL_KEY_PASSWORD"],
        apply: |c, _, v| {
            Ok(c.kafka.ssl_key_password = Some(v.to_string()).filter(|s| !s.is_empty()))
        },
    },
    EnvVar {
        names: &["KAFKA_SOURCE_TOPICS", "TIDEGATE_KAFKA_SOURCE_TOPICS"],
        apply: |c, _, v| Ok(c.sources.kafka.topics = list(v)),
    },
    EnvVar {
        names: &[
            "KAFKATOFILTER_KAFKA_GROUP_ID",
            "TIDEGATE_KAFKA_SOURCE_GROUP_ID",
        ],
        apply: |c, _, v| Ok(c.sources.kafka.group_id = v.to_string()),
    },
    EnvVar {
        names: &["TIDEGATE_KAFKA_SOURCE_OFFSET_RESET"],
        apply: |c, _, v| Ok(c.sources.kafka.offset_reset = v.trim().to_ascii_lowercase()),
    },
    EnvVar {
        names: &["TIDEGATE_KAFKA_SOURCE_ENABLED"],
        apply: |c, n, v| Ok(c.sources.kafka.enabled = Some(boolean(n, v)?)),
    },
    EnvVar {
        names: &["NATS_SERVERS", "TIDEGATE_NATS_SERVERS"],
        apply: |c, _, v| Ok(c.nats.servers = list(v)),
    },
    EnvVar {
        names: &["NATS_SOURCE_TOPICS", "TIDEGATE_NATS_SOURCE_SUBJECTS"],
        apply: |c, _, v| Ok(c.sources.nats.subjects = list(v)),
    },
    EnvVar {
        names: &[
            "NATSTOFILTER_QUEUE_GROUP",
            "TIDEGATE_NATS_SOURCE_QUEUE_GROUP",
        ],
        apply: |c, _, v| Ok(c.sources.nats.queue_group = v.to_string()),
    },
    EnvVar {
        names: &["TIDEGATE_NATS_SOURCE_ENABLED"],
        apply: |c, n, v| Ok(c.sources.nats.enabled = Some(boolean(n, v)?)),
    },
    EnvVar {
        names: &["TIDEGATE_NATS_SOURCE_JETSTREAM_STREAM"],
        apply: |c, _, v| {
            Ok(c.sources.nats.jetstream_stream = Some(v.to_string()).filter(|s| !s.is_empty()))
        },
    },
    EnvVar {
        names: &["TIDEGATE_NATS_SOURCE_JETSTREAM_DURABLE"],
        apply: |c, _, v| Ok(c.sources.nats.jetstream_durable = v.to_string()),
    },
    EnvVar {
        names: &["PROXY_CONFIG_FILE", "TIDEGATE_PROXY_CONFIG_FILE"],
        apply: |c, _, v| {
            Ok(c.proxy.config_file = Some(v.to_string()).filter(|s| !s.trim().is_empty()))
        },
    },
    EnvVar {
        names: &["PROXY_RECV_TIMEOUT"],
        apply: |c, n, v| Ok(c.proxy.recv_timeout_ms = num(n, v)?),
    },
    EnvVar {
        names: &["PROXY_HTTP_ASYNC_RESPONSE_TIMEOUT"],
        apply: |c, n, v| Ok(c.proxy.http_async_response_timeout_ms = num(n, v)?),
    },
    EnvVar {
        names: &["PROXY_KAFKA_RESPONSE_TIMEOUT"],
        apply: |c, n, v| Ok(c.proxy.kafka_response_timeout_ms = num(n, v)?),
    },
    EnvVar {
        names: &["PROXY_NATS_RESPONSE_TIMEOUT"],
        apply: |c, n, v| Ok(c.proxy.nats_response_timeout_ms = num(n, v)?),
    },
    EnvVar {
        names: &["PROXY_KAFKA_RESPONSE_TOPICS"],
        apply: |c, _, v| Ok(c.proxy.kafka_response_topics = list(v)),
    },
    EnvVar {
        names: &["PROXY_KAFKA_RESPONSE_KAFKA_GROUP_ID"],
        apply: |c, _, v| Ok(c.proxy.kafka_response_group = v.to_string()),
    },
    EnvVar {
        names: &["JWT_SECRET_KEY", "TIDEGATE_JWT_SECRET_KEY"],
        apply: |c, _, v| Ok(c.jwt.secret_key = v.to_string()),
    },
    EnvVar {
        names: &["JWT_ALG", "TIDEGATE_JWT_ALG"],
        apply: |c, _, v| Ok(c.jwt.alg = v.to_string()),
    },
    EnvVar {
        names: &["JWT_SESSION_FIELD", "TIDEGATE_JWT_SESSION_FIELD"],
        apply: |c, _, v| Ok(c.jwt.session_field = v.to_string()),
    },
    EnvVar {
        names: &["TIDEGATE_JWT_PUBLIC_KEYS"],
        apply: |c, _, v| Ok(c.jwt.public_keys = list(v)),
    },
    EnvVar {
        names: &["TIDEGATE_JWT_JWKS_FILE"],
        apply: |c, _, v| Ok(c.jwt.jwks_file = Some(PathBuf::from(v))),
    },
    EnvVar {
        names: &["TIDEGATE_JWT_JWKS_URL"],
        apply: |c, _, v| Ok(c.jwt.jwks_url = Some(v.to_string())),
    },
    EnvVar {
        names: &["TIDEGATE_JWT_LEEWAY_SECS"],
        apply: |c, n, v| Ok(c.jwt.leeway_secs = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_JWT_ISSUERS"],
        apply: |c, _, v| Ok(c.jwt.issuers = list(v)),
    },
    EnvVar {
        names: &["TIDEGATE_JWT_AUDIENCES"],
        apply: |c, _, v| Ok(c.jwt.audiences = list(v)),
    },
    EnvVar {
        names: &["TIDEGATE_JWT_REQUIRE_EXP"],
        apply: |c, n, v| Ok(c.jwt.require_exp = boolean(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_HEARTBEAT_SECS"],
        apply: |c, n, v| Ok(c.connections.heartbeat_secs = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_WRITE_STALL_SECS"],
        apply: |c, n, v| Ok(c.connections.write_stall_secs = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_QUEUE_LIMIT_BYTES"],
        apply: |c, n, v| Ok(c.connections.queue_limit_bytes = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_OVERFLOW_POLICY"],
        apply: |c, _, v| Ok(c.connections.overflow_policy = v.to_string()),
    },
    EnvVar {
        names: &["TIDEGATE_MAX_CONNECTIONS"],
        apply: |c, n, v| Ok(c.connections.max_connections = num(n, v)?),
    },
    EnvVar {
        names: &[
            "MAX_CONNECTIONS_PER_MINUTE",
            "TIDEGATE_MAX_CONNECTIONS_PER_MINUTE",
        ],
        apply: |c, n, v| Ok(c.connections.max_connections_per_minute = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_MAX_CONNECTIONS_PER_SESSION"],
        apply: |c, n, v| Ok(c.connections.max_connections_per_session = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_MAX_CONNECTIONS_PER_MINUTE_PER_CLIENT"],
        apply: |c, n, v| Ok(c.connections.max_connections_per_minute_per_client = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_MAX_LONGPOLL_SESSIONS"],
        apply: |c, n, v| Ok(c.connections.max_longpoll_sessions = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_MAX_HEADER_BYTES"],
        apply: |c, n, v| Ok(c.connections.max_header_bytes = num(n, v)?),
    },
    EnvVar {
        names: &["HTTPS_CERTFILE", "TIDEGATE_TLS_CERT_FILE"],
        apply: |c, _, v| {
            Ok(c.tls.cert_file = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty()))
        },
    },
    EnvVar {
        names: &["HTTPS_KEYFILE", "TIDEGATE_TLS_KEY_FILE"],
        apply: |c, _, v| {
            Ok(c.tls.key_file = Some(PathBuf::from(v)).filter(|p| !p.as_os_str().is_empty()))
        },
    },
    EnvVar {
        names: &["INBOUND_HTTPS_PORT", "TIDEGATE_INBOUND_HTTPS_PORT"],
        apply: |c, n, v| Ok(c.tls.inbound_port = num(n, v)?),
    },
    EnvVar {
        names: &["API_HTTPS_PORT", "TIDEGATE_INTERNAL_HTTPS_PORT"],
        apply: |c, n, v| Ok(c.tls.internal_port = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_LONGPOLL_WAIT_SECS"],
        apply: |c, n, v| Ok(c.connections.longpoll_wait_secs = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_LONGPOLL_SESSION_TIMEOUT_SECS"],
        apply: |c, n, v| Ok(c.connections.longpoll_session_timeout_secs = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_TRANSIENT_TYPES"],
        apply: |c, _, v| Ok(c.events.transient_types = list(v)),
    },
    EnvVar {
        names: &["TIDEGATE_MAX_EVENT_BYTES"],
        apply: |c, n, v| Ok(c.events.max_event_bytes = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_MAX_BODY_BYTES"],
        apply: |c, n, v| Ok(c.events.max_body_bytes = num(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_STREAMS_PREFIX"],
        apply: |c, _, v| Ok(c.streams.prefix = v.trim().trim_end_matches('/').to_string()),
    },
    EnvVar {
        names: &["TIDEGATE_STREAMS_REQUIRE_AUTH"],
        apply: |c, n, v| Ok(c.streams.require_auth = boolean(n, v)?),
    },
    EnvVar {
        names: &["TIDEGATE_STREAMS_LONGPOLL_WAIT_SECS"],
        apply: |c, n, v| Ok(c.streams.longpoll_wait_secs = num(n, v)?),
    },
    EnvVar {
        names: &["CORS", "TIDEGATE_CORS"],
        apply: |c, _, v| Ok(c.cors = v.to_string()),
    },
    EnvVar {
        names: &["EXTRACTORS", "TIDEGATE_EXTRACTORS"],
        apply: |c, _, v| Ok(c.extractors = Some(v.to_string()).filter(|s| !s.trim().is_empty())),
    },
    EnvVar {
        names: &["SUBSCRIPTION_CHECK", "TIDEGATE_SUBSCRIPTION_CHECK"],
        apply: |c, _, v| Ok(c.subscription_check = v.to_string()),
    },
    EnvVar {
        names: &["SUBMISSION_CHECK", "TIDEGATE_SUBMISSION_CHECK"],
        apply: |c, _, v| Ok(c.submission_check = v.to_string()),
    },
    EnvVar {
        names: &["LOG_LEVEL", "TIDEGATE_LOG_LEVEL"],
        apply: |c, _, v| Ok(c.log_level = v.to_string()),
    },
    EnvVar {
        names: &["LOG_FMT", "TIDEGATE_LOG_FORMAT"],
        apply: |c, _, v| Ok(c.log_format = v.to_string()),
    },
];

impl Kafka {
    /// The librdkafka properties for security and extras, shared by every Kafka client
    /// (log, source, proxy): SASL from RIG's `mechanism:user:password`, SSL files.
    pub fn client_properties(&self) -> Vec<(String, String)> {
        let mut p = Vec::new();
        let mut set = |k: &str, v: &str| p.push((k.to_owned(), v.to_owned()));
        let sasl = self.sasl.as_deref().and_then(|s| {
            let mut it = s.splitn(3, ':');
            Some((it.next()?, it.next()?, it.next()?))
        });
        match (sasl.is_some(), self.ssl_enabled) {
            (true, true) => set("security.protocol", "sasl_ssl"),
            (true, false) => set("security.protocol", "sasl_plaintext"),
            (false, true) => set("security.protocol", "ssl"),
            (false, false) => {}
        }
        if let Some((mechanism, user, password)) = sasl {
            let mechanism = match mechanism.to_ascii_lowercase().as_str() {
                "scram_sha_256" => "SCRAM-SHA-256",
                "scram_sha_512" => "SCRAM-SHA-512",
                _ => "PLAIN",
            };
            set("sasl.mechanism", mechanism);
            set("sasl.username", user);
            set("sasl.password", password);
        }
        if self.ssl_enabled {
            let path = |p: &Option<PathBuf>| p.as_ref().map(|p| p.to_string_lossy().into_owned());
            if let Some(ca) = path(&self.ssl_ca_file) {
                set("ssl.ca.location", &ca);
            }
            if let Some(cert) = path(&self.ssl_cert_file) {
                set("ssl.certificate.location", &cert);
            }
            if let Some(key) = path(&self.ssl_key_file) {
                set("ssl.key.location", &key);
            }
            if let Some(pass) = &self.ssl_key_password {
                set("ssl.key.password", pass);
            }
        }
        let mut extra: Vec<_> = self.properties.iter().collect();
        extra.sort();
        for (k, v) in extra {
            set(k, v);
        }
        p
    }

    /// Whether the Kafka source runs: RIG's rule (brokers set) unless turned off.
    pub fn source_enabled(&self, s: &KafkaSource) -> bool {
        s.enabled.unwrap_or(!self.brokers.is_empty()) && !s.topics.is_empty()
    }

    pub fn bootstrap(&self) -> String {
        self.brokers.join(",")
    }
}

impl Config {
    /// Defaults ← file ← environment (`env` is passed in so tests need not touch the
    /// process environment).
    pub fn load(
        file: Option<&std::path::Path>,
        env: &HashMap<String, String>,
    ) -> Result<Config, ConfigError> {
        let mut cfg = match file {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })?;
                Self::from_toml(&text).map_err(|message| ConfigError::Parse {
                    path: path.into(),
                    message,
                })?
            }
            None => Config::default(),
        };
        for var in ENV {
            for name in var.names {
                if let Some(v) = env.get(*name) {
                    (var.apply)(&mut cfg, name, v)?;
                }
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn from_toml(text: &str) -> Result<Config, String> {
        toml::from_str(text).map_err(|e| e.to_string())
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        tidegate_delivery::config::validate_routes(&self.routes)
            .map_err(|(name, message)| invalid(&name, message))?;
        for r in &self.routes {
            if r.max_body_bytes > self.events.max_event_bytes {
                return Err(invalid(
                    &format!("routes.{}.max_body_bytes", r.name),
                    "must not exceed events.max_event_bytes (the log's record limit)",
                ));
            }
        }
        match self.log.backend.as_str() {
            "embedded" => {}
            "nats" if self.nats.servers.is_empty() => {
                return Err(invalid(
                    "log.backend",
                    "`nats` needs NATS servers (NATS_SERVERS or [nats] servers)",
                ))
            }
            "kafka" if self.kafka.brokers.is_empty() => {
                return Err(invalid(
                    "log.backend",
                    "`kafka` needs brokers (KAFKA_BROKERS or [kafka] brokers)",
                ))
            }
            "nats" | "kafka" => {}
            other => {
                return Err(invalid(
                    "log.backend",
                    format!("`{other}` is not embedded, nats or kafka"),
                ))
            }
        }
        if !matches!(
            self.sources.kafka.offset_reset.as_str(),
            "earliest" | "latest"
        ) {
            return Err(invalid(
                "sources.kafka.offset_reset",
                "expected earliest or latest",
            ));
        }
        if let Some(sasl) = &self.kafka.sasl {
            let mut parts = sasl.splitn(3, ':');
            let mechanism = parts.next().unwrap_or_default().to_ascii_lowercase();
            if !matches!(
                mechanism.as_str(),
                "plain" | "scram_sha_256" | "scram_sha_512"
            ) || parts.next().is_none()
                || parts.next().is_none()
            {
                return Err(invalid(
                    "KAFKA_SASL",
                    "expected mechanism:user:password with mechanism plain, scram_sha_256 or scram_sha_512",
                ));
            }
        }
        if !matches!(self.log.durability.as_str(), "fsync" | "buffered") {
            return Err(invalid(
                "log.durability",
                format!("`{}` is not `fsync` or `buffered`", self.log.durability),
            ));
        }
        if tidegate_hub::OverflowPolicy::parse(&self.connections.overflow_policy).is_none() {
            return Err(invalid(
                "connections.overflow_policy",
                "expected disconnect, drop_oldest or drop_newest",
            ));
        }
        for (t, p) in &self.connections.overflow_policies {
            if tidegate_hub::OverflowPolicy::parse(p).is_none() {
                return Err(invalid(
                    &format!("connections.overflow_policies.{t}"),
                    "expected disconnect, drop_oldest or drop_newest",
                ));
            }
        }
        if self.connections.heartbeat_secs == 0 {
            return Err(invalid("connections.heartbeat_secs", "must be at least 1"));
        }
        if self.connections.queue_limit_bytes < 1024 {
            return Err(invalid(
                "connections.queue_limit_bytes",
                "must be at least 1024",
            ));
        }
        if self.events.max_event_bytes > self.events.max_body_bytes {
            return Err(invalid(
                "events.max_event_bytes",
                "must not exceed events.max_body_bytes",
            ));
        }
        if !matches!(self.log_format.as_str(), "text" | "erlang" | "json") {
            return Err(invalid("log_format", "expected text (or erlang) or json"));
        }
        if self.connections.max_header_bytes < 8192 {
            // hyper's smallest read buffer.
            return Err(invalid(
                "connections.max_header_bytes",
                "must be at least 8192",
            ));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(invalid(
                "tls",
                "HTTPS_CERTFILE and HTTPS_KEYFILE must be set together",
            ));
        }
        if !self.jwt.session_field.is_empty() && !self.jwt.session_field.starts_with('/') {
            return Err(invalid(
                "jwt.session_field",
                "must be a JSON pointer such as /jti",
            ));
        }
        Ok(())
    }

    /// RIG's `EXTRACTORS` may be inline JSON or a path to a JSON file.
    pub fn extractors_json(&self) -> Result<Option<String>, ConfigError> {
        match &self.extractors {
            None => Ok(None),
            Some(v) if v.trim_start().starts_with('{') => Ok(Some(v.clone())),
            Some(path) => std::fs::read_to_string(path).map(Some).map_err(|e| {
                invalid(
                    "EXTRACTORS",
                    format!("not inline JSON and not a readable file `{path}`: {e}"),
                )
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_match_rig() {
        let c = Config::load(None, &HashMap::new()).unwrap();
        assert_eq!(c.inbound.port, 4000);
        assert_eq!(c.internal.port, 4010);
        assert_eq!(c.cors, "*");
        assert_eq!(c.jwt.alg, "HS256");
        assert_eq!(c.jwt.session_field, "/jti");
        assert_eq!(c.connections.max_connections_per_minute, 5000);
        assert_eq!(c.connections.heartbeat_secs, 15);
    }

    #[test]
    fn rig_names_apply_and_tidegate_names_win() {
        let c = Config::load(
            None,
            &env(&[
                ("INBOUND_PORT", "5000"),
                ("API_HTTP_PORT", "5010"),
                ("TIDEGATE_INBOUND_PORT", "6000"),
            ]),
        )
        .unwrap();
        assert_eq!(c.inbound.port, 6000);
        assert_eq!(c.internal.port, 5010);
    }

    #[test]
    fn invalid_values_name_the_setting() {
        let e = Config::load(None, &env(&[("INBOUND_PORT", "x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("INBOUND_PORT"), "{e}");
        let e = Config::load(None, &env(&[("TIDEGATE_LOG_DURABILITY", "sometimes")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.durability"), "{e}");
    }

    #[test]
    fn tls_and_limit_settings_take_rig_and_tidegate_names() {
        let c = Config::load(None, &HashMap::new()).unwrap();
        assert_eq!((c.tls.inbound_port, c.tls.internal_port), (4001, 4011));
        assert!(c.tls.cert_file.is_none());
        let c = Config::load(
            None,
            &env(&[
                ("HTTPS_CERTFILE", "/c.pem"),
                ("HTTPS_KEYFILE", "/k.pem"),
                ("INBOUND_HTTPS_PORT", "5001"),
                ("API_HTTPS_PORT", "5011"),
                ("TIDEGATE_MAX_CONNECTIONS_PER_SESSION", "7"),
                ("TIDEGATE_MAX_HEADER_BYTES", "9000"),
            ]),
        )
        .unwrap();
        assert_eq!(
            c.tls.cert_file.as_deref(),
            Some(std::path::Path::new("/c.pem"))
        );
        assert_eq!((c.tls.inbound_port, c.tls.internal_port), (5001, 5011));
        assert_eq!(c.connections.max_connections_per_session, 7);
        assert_eq!(c.connections.max_header_bytes, 9000);
        let e = Config::load(None, &env(&[("HTTPS_CERTFILE", "/c.pem")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("HTTPS_KEYFILE"), "{e}");
    }

    #[test]
    fn broker_settings_take_rig_names() {
        let c = Config::load(None, &HashMap::new()).unwrap();
        assert_eq!(c.log.backend, "embedded");
        assert!(c.kafka.brokers.is_empty() && c.nats.servers.is_empty());
        assert_eq!(c.sources.kafka.topics, vec!["rig".to_string()]);
        let c = Config::load(
            None,
            &env(&[
                ("KAFKA_BROKERS", "a:9092, b:9092"),
                ("KAFKA_SOURCE_TOPICS", "t1,t2"),
                ("KAFKATOFILTER_KAFKA_GROUP_ID", "g"),
                ("KAFKA_SASL", "plain:u:p:w"),
                ("NATS_SERVERS", "nats://n:4222"),
                ("NATS_SOURCE_TOPICS", "s1"),
                ("NATSTOFILTER_QUEUE_GROUP", "q"),
                ("TIDEGATE_LOG_BACKEND", "Kafka"),
            ]),
        )
        .unwrap();
        assert_eq!(c.kafka.brokers, vec!["a:9092", "b:9092"]);
        assert_eq!(c.sources.kafka.topics, vec!["t1", "t2"]);
        assert_eq!(c.sources.kafka.group_id, "g");
        assert_eq!(c.kafka.sasl.as_deref(), Some("plain:u:p:w"));
        assert_eq!(c.nats.servers, vec!["nats://n:4222"]);
        assert_eq!(
            (
                c.sources.nats.subjects.clone(),
                c.sources.nats.queue_group.as_str()
            ),
            (vec!["s1".to_string()], "q")
        );
        assert_eq!(c.log.backend, "kafka");
        let e = Config::load(None, &env(&[("TIDEGATE_LOG_BACKEND", "nats")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("NATS_SERVERS"), "{e}");
        let e = Config::load(None, &env(&[("KAFKA_SASL", "gssapi:x")]))
            .unwrap_err()
            .to_string();
        assert!(e.contains("KAFKA_SASL"), "{e}");
    }

    #[test]
    fn toml_file_with_unknown_key_is_refused() {
        assert!(Config::from_toml("[inbound]\nport = 1\n").is_ok());
        let e = Config::from_toml("[inbound]\nprot = 1\n").unwrap_err();
        assert!(e.contains("prot"), "{e}");
    }
}
