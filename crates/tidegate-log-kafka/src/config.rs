//! [`KafkaConfig`]: what the binary hands to [`crate::KafkaLog::connect`], and how it
//! becomes librdkafka properties for each of our clients (producer, admin, tail and
//! read consumers, consumer-group clients). `extra` is applied last, so an operator
//! can override anything we set.

use crate::error::Error;
use rdkafka::ClientConfig;
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

/// Kafka's limit on topic name length.
pub(crate) const TOPIC_NAME_LIMIT: usize = 249;

/// SASL mechanisms we configure (librdkafka `sasl.mechanism`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaslMechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl SaslMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

impl FromStr for SaslMechanism {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(SaslMechanism::Plain),
            "SCRAM-SHA-256" => Ok(SaslMechanism::ScramSha256),
            "SCRAM-SHA-512" => Ok(SaslMechanism::ScramSha512),
            _ => Err(format!(
                "unknown SASL mechanism `{s}` (expected PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)"
            )),
        }
    }
}

/// SASL credentials. `Debug` does not print the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl fmt::Debug for Sasl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sasl")
            .field("mechanism", &self.mechanism)
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// TLS to the brokers. Every field is optional: with none set, the system trust
/// store verifies the brokers and no client certificate is sent. `Debug` does not
/// print the key password.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Ssl {
    pub ca_file: Option<PathBuf>,
    pub cert_file: Option<PathBuf>,
    pub key_file: Option<PathBuf>,
    pub key_password: Option<String>,
}

impl fmt::Debug for Ssl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ssl")
            .field("ca_file", &self.ca_file)
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field(
                "key_password",
                &self.key_password.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// Configuration of [`crate::KafkaLog`]. Only `brokers` has no usable default.
#[derive(Clone)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port…]`.
    pub brokers: String,
    /// Prepended to every topic and consumer-group name (default `tidegate.`).
    /// Nodes sharing a log must use the same prefix.
    pub prefix: String,
    /// Replication factor of the topics we create (default 1).
    pub replication_factor: i32,
    pub sasl: Option<Sasl>,
    pub ssl: Option<Ssl>,
    /// Bound on every broker round trip we wait for: an append fails with
    /// `Unavailable` after this long (default 5 s).
    pub request_timeout: Duration,
    /// Max key + payload bytes of one record (default 1 MiB). The broker's and the
    /// topic's `max.message.bytes` must allow it too.
    pub max_record_bytes: usize,
    /// Memory for the newest records of all streams, served to reads without a
    /// broker round trip (default 64 MiB).
    pub tail_cache_bytes: usize,
    /// How long a dedup key is remembered, by record timestamp (default 5 min).
    pub dedup_window: Duration,
    /// Per stream cap on remembered dedup keys, oldest evicted first (default
    /// 1,000,000). Also bounds how many records are re-read at startup.
    pub dedup_max_keys: usize,
    /// Before producing records with dedup keys, catch the tail up to the topic's
    /// high watermark (one ListOffsets round trip) so keys other nodes stored are
    /// known (default true). Off: cross-node dedup only covers keys the tail has
    /// already seen (typically a few ms behind).
    pub dedup_sync: bool,
    /// Consumer `fetch.wait.max.ms` (default 100 ms): how long the broker may hold a
    /// fetch with no new data. Kafka answers as soon as data arrives; tansu 0.6 always
    /// waits the full time, so there it is the tail's delivery latency.
    pub fetch_wait: Duration,
    /// Producer `linger.ms` (default 1 ms): how long librdkafka waits to batch
    /// concurrent appends into one produce request.
    pub linger: Duration,
    /// Raw librdkafka properties applied to every client, after ours.
    pub extra: Vec<(String, String)>,
}

impl Default for KafkaConfig {
    fn default() -> Self {
        KafkaConfig {
            brokers: String::new(),
            prefix: "tidegate.".to_owned(),
            replication_factor: 1,
            sasl: None,
            ssl: None,
            request_timeout: Duration::from_secs(5),
            max_record_bytes: 1024 * 1024,
            tail_cache_bytes: 64 * 1024 * 1024,
            dedup_window: Duration::from_secs(300),
            dedup_max_keys: 1_000_000,
            dedup_sync: true,
            fetch_wait: Duration::from_millis(100),
            linger: Duration::from_millis(1),
            extra: Vec::new(),
        }
    }
}

impl fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let extra: Vec<(&str, &str)> = self
            .extra
            .iter()
            .map(|(k, v)| {
                let secret = ["password", "secret", "token"]
                    .iter()
                    .any(|s| k.to_ascii_lowercase().contains(s));
                (k.as_str(), if secret { "<redacted>" } else { v.as_str() })
            })
            .collect();
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("prefix", &self.prefix)
            .field("replication_factor", &self.replication_factor)
            .field("sasl", &self.sasl)
            .field("ssl", &self.ssl)
            .field("request_timeout", &self.request_timeout)
            .field("max_record_bytes", &self.max_record_bytes)
            .field("tail_cache_bytes", &self.tail_cache_bytes)
            .field("dedup_window", &self.dedup_window)
            .field("dedup_max_keys", &self.dedup_max_keys)
            .field("dedup_sync", &self.dedup_sync)
            .field("fetch_wait", &self.fetch_wait)
            .field("linger", &self.linger)
            .field("extra", &extra)
            .finish()
    }
}

/// Which of our clients a librdkafka configuration is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Producer,
    Admin,
    /// Group-less consumers: stream tails and reads.
    Reader,
    /// A consumer-group client for named-consumer commits.
    Group,
}

impl Role {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Role::Producer => "producer",
            Role::Admin => "admin",
            Role::Reader => "reader",
            Role::Group => "group",
        }
    }
}

fn ms(d: Duration) -> String {
    d.as_millis().clamp(1, i32::MAX as u128).to_string()
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        KafkaConfig {
            brokers: brokers.into(),
            ..Default::default()
        }
    }

    pub(crate) fn validate(&self) -> Result<(), Error> {
        let bad = |msg: String| Err(Error::Config(msg));
        if self.brokers.trim().is_empty() {
            return bad("brokers must be set".into());
        }
        // The meta topic is `{prefix}_meta`; room for it and a one-character stream.
        if self.prefix.len() > TOPIC_NAME_LIMIT - 6
            || !self
                .prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return bad(format!(
                "prefix `{}` must be at most {} characters of [A-Za-z0-9._-]",
                self.prefix,
                TOPIC_NAME_LIMIT - 6
            ));
        }
        if self.replication_factor < 1 {
            return bad("replication_factor must be >= 1".into());
        }
        if self.request_timeout < Duration::from_millis(100) {
            return bad("request_timeout must be at least 100 ms".into());
        }
        if self.linger >= self.request_timeout {
            return bad("linger must be shorter than request_timeout".into());
        }
        if self.max_record_bytes == 0 || self.max_record_bytes > 256 * 1024 * 1024 {
            return bad("max_record_bytes must be in 1..=256 MiB".into());
        }
        if self.fetch_wait >= self.request_timeout {
            return bad("fetch_wait must be shorter than request_timeout".into());
        }
        if self.dedup_max_keys == 0 {
            return bad("dedup_max_keys must be > 0".into());
        }
        Ok(())
    }

    /// librdkafka properties for one of our clients.
    pub(crate) fn client_config(&self, role: Role) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("client.id", format!("tidegate-{}", role.name()))
            // Requests (metadata, offsets, fetches) give up within our bound.
            .set(
                "socket.timeout.ms",
                ms(self.request_timeout.max(Duration::from_millis(10))),
            )
            // Default max is 10 s: far too slow to notice a restarted broker.
            .set("reconnect.backoff.ms", "100")
            .set("reconnect.backoff.max.ms", "1000")
            // Idle connections closed by the broker are not worth a log line.
            .set("log.connection.close", "false")
            .set(
                "security.protocol",
                match (self.sasl.is_some(), self.ssl.is_some()) {
                    (false, false) => "plaintext",
                    (false, true) => "ssl",
                    (true, false) => "sasl_plaintext",
                    (true, true) => "sasl_ssl",
                },
            );
        if let Some(sasl) = &self.sasl {
            c.set("sasl.mechanism", sasl.mechanism.as_str())
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
        match role {
            Role::Producer => {
                c.set("enable.idempotence", "true")
                    .set("acks", "all")
                    .set("linger.ms", self.linger.as_millis().to_string())
                    // Appends fail (delivery report) within our bound instead of
                    // librdkafka's default of 5 minutes.
                    .set("message.timeout.ms", ms(self.request_timeout))
                    .set("request.timeout.ms", ms(self.request_timeout))
                    .set(
                        "message.max.bytes",
                        (self.max_record_bytes + 64 * 1024)
                            .max(1_000_000)
                            .to_string(),
                    );
            }
            Role::Admin => {}
            Role::Reader | Role::Group => {
                if role == Role::Reader {
                    // librdkafka refuses `assign` without a group id. Readers never
                    // subscribe or commit, so the group is never joined; the `/` keeps
                    // it apart from every `{prefix}{consumer}` group.
                    c.set("group.id", "tidegate/reader");
                }
                c.set("enable.auto.commit", "false")
                    .set("enable.auto.offset.store", "false")
                    // `from < first` (retention) starts at the oldest record.
                    .set("auto.offset.reset", "earliest")
                    .set("enable.partition.eof", "true")
                    .set("fetch.wait.max.ms", ms(self.fetch_wait))
                    .set(
                        "fetch.message.max.bytes",
                        (self.max_record_bytes + 64 * 1024)
                            .max(1_048_576)
                            .to_string(),
                    );
            }
        }
        for (k, v) in &self.extra {
            c.set(k, v);
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sasl_mechanisms_parse_case_insensitively() {
        assert_eq!("plain".parse(), Ok(SaslMechanism::Plain));
        assert_eq!("SCRAM-SHA-512".parse(), Ok(SaslMechanism::ScramSha512));
        assert!("GSSAPI".parse::<SaslMechanism>().is_err());
    }

    #[test]
    fn debug_redacts_secrets() {
        let mut cfg = KafkaConfig::new("b:9092");
        cfg.sasl = Some(Sasl {
            mechanism: SaslMechanism::Plain,
            username: "u".into(),
            password: "hunter2".into(),
        });
        cfg.extra = vec![("sasl.password".into(), "hunter3".into())];
        let s = format!("{cfg:?}");
        assert!(!s.contains("hunter2") && !s.contains("hunter3"), "{s}");
    }

    #[test]
    fn validation_rejects_bad_prefixes_and_empty_brokers() {
        assert!(KafkaConfig::default().validate().is_err());
        assert!(KafkaConfig::new("b:9092").validate().is_ok());
        let mut cfg = KafkaConfig::new("b:9092");
        cfg.prefix = "a/b".into();
        assert!(cfg.validate().is_err());
    }

    #[test]
    fn security_protocol_follows_sasl_and_ssl() {
        let mut cfg = KafkaConfig::new("b:9092");
        cfg.ssl = Some(Ssl::default());
        let c = cfg.client_config(Role::Producer);
        assert_eq!(c.get("security.protocol"), Some("ssl"));
        assert_eq!(c.get("enable.idempotence"), Some("true"));
        cfg.extra = vec![("security.protocol".into(), "plaintext".into())];
        assert_eq!(
            cfg.client_config(Role::Reader).get("security.protocol"),
            Some("plaintext")
        );
    }
}
