//! Shared fixtures of the Kafka log tests: a log on a unique prefix, topic cleanup,
//! and a tansu child process for the outage test.
#![allow(dead_code)]

use bytes::Bytes;
use rdkafka::admin::{AdminClient, AdminOptions};
use rdkafka::client::DefaultClientContext;
use rdkafka::ClientConfig;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tidegate_log::{AppendRecord, EventLog};
use tidegate_log_kafka::{KafkaConfig, KafkaLog};

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .with_test_writer()
        .try_init();
}

/// The tests of one binary run one at a time: tansu answers metadata requests for a
/// deleted topic with a null topic name, on which librdkafka 2.12 crashes (SIGSEGV)
/// if a consumer of another test is still fetching that topic's id.
pub async fn serial() -> tokio::sync::MutexGuard<'static, ()> {
    static LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    LOCK.lock().await
}

/// Reads `[from, to)` with as many `read` calls as it takes (reads may be short).
pub async fn read_all(
    log: &KafkaLog,
    stream: &str,
    from: u64,
    to: u64,
) -> Vec<tidegate_log::Record> {
    let mut out: Vec<tidegate_log::Record> = Vec::new();
    let mut next = from;
    let deadline = Instant::now() + Duration::from_secs(10);
    while next < to {
        assert!(
            Instant::now() < deadline,
            "read_all({from}, {to}) stuck at {next}"
        );
        let recs = log.read(stream, next, 1000, 1 << 20).await.expect("read");
        if let Some(last) = recs.last() {
            next = last.offset + 1;
        }
        out.extend(recs);
    }
    out
}

pub fn config(brokers: &str, prefix: &str) -> KafkaConfig {
    let mut cfg = KafkaConfig::new(brokers);
    cfg.prefix = prefix.to_owned();
    cfg
}

pub async fn connect(brokers: &str, prefix: &str) -> Arc<KafkaLog> {
    KafkaLog::connect(config(brokers, prefix))
        .await
        .expect("connect to the test broker")
}

pub fn rec(key: Option<&str>, payload: &str) -> AppendRecord {
    AppendRecord {
        dedup_key: key.map(|k| Bytes::copy_from_slice(k.as_bytes())),
        payload: Bytes::copy_from_slice(payload.as_bytes()),
    }
}

pub async fn append_one(
    log: &KafkaLog,
    stream: &str,
    key: Option<&str>,
    payload: &str,
) -> tidegate_log::Appended {
    log.append(stream, vec![rec(key, payload)])
        .await
        .expect("append")
        .remove(0)
}

/// Deletes every topic starting with `prefix` (the test's streams and meta topic).
pub async fn delete_topics(brokers: &str, prefix: &str) {
    if std::env::var_os("TIDEGATE_TEST_KEEP_TOPICS").is_some() {
        return;
    }
    // tansu 0.6 (sqlite storage) panics in its storage task, and then fails every
    // request until restarted, when a fetch still parked on a topic finds the topic
    // deleted: let every client of the topic be gone for a while first.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("admin client");
    let names: Vec<String> = {
        let md = admin
            .inner()
            .fetch_metadata(None, Duration::from_secs(5))
            .expect("metadata");
        md.topics()
            .iter()
            .map(|t| t.name().to_owned())
            .filter(|n| n.starts_with(prefix))
            .collect()
    };
    if !names.is_empty() {
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let _ = admin.delete_topics(&refs, &AdminOptions::new()).await;
    }
    tokio::task::spawn_blocking(move || drop(admin)).await.ok();
}

/// A free TCP port on 127.0.0.1 (released for the child to bind).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A tansu broker child process with sqlite storage in `dir`; killed on drop.
pub struct Tansu {
    child: Child,
    pub port: u16,
}

pub fn tansu_bin() -> Option<String> {
    if let Ok(b) = std::env::var("TIDEGATE_TEST_TANSU_BIN") {
        return Some(b);
    }
    let home = std::env::var("HOME").ok()?;
    let candidate = format!("{home}/.cargo/bin/tansu");
    if Path::new(&candidate).exists() {
        return Some(candidate);
    }
    Command::new("tansu")
        .arg("--version")
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|_| "tansu".to_owned())
}

impl Tansu {
    pub fn start(bin: &str, dir: &Path, port: u16) -> Tansu {
        let url = format!("tcp://127.0.0.1:{port}");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("tansu.log"))
            .expect("tansu log file");
        let child = Command::new(bin)
            .arg("broker")
            .arg("--listener-url")
            .arg(&url)
            .arg("--advertised-listener-url")
            .arg(&url)
            .arg("--storage-engine")
            .arg("sqlite://tansu.db")
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log fd"))
            .stderr(log)
            .spawn()
            .expect("spawn tansu");
        let deadline = Instant::now() + Duration::from_secs(20);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        Tansu { child, port }
    }

    pub fn brokers(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Tansu {
    fn drop(&mut self) {
        self.kill();
    }
}
