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
            dir: PathBuf::from("data"),
            durability: "fsync".into(),
            group_commit_window_us: 0,
            segment_bytes: 64 << 20,
            retention_age_secs: Some(7 * 24 * 3600),
            retention_bytes: None,
            dedup_window_secs: 300,
            tail_cache_bytes: 64 << 20,
            append_queue: 4096,
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
    fn toml_file_with_unknown_key_is_refused() {
        assert!(Config::from_toml("[inbound]\nport = 1\n").is_ok());
        let e = Config::from_toml("[inbound]\nprot = 1\n").unwrap_err();
        assert!(e.contains("prot"), "{e}");
    }
}
