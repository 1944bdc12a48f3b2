//! Fixtures of the source tests: an embedded log in a temp dir, sources started and
//! stopped like the binary does (TaskTracker + CancellationToken), and waiting for
//! what reached the log.
#![allow(dead_code)]

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use tidegate_core::record;
use tidegate_log::embedded::{EmbeddedConfig, EmbeddedLog};
use tidegate_log::EventLog;
use tidegate_sources::{LogSink, SourceConfig, SourceState, SourceStatus, Sources};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub const STREAM: &str = "events";
pub const WAIT: Duration = Duration::from_secs(60);

pub fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,tidegate_sources=info".into()),
        )
        .with_test_writer()
        .try_init();
}

pub fn open_log(dir: &Path) -> Arc<EmbeddedLog> {
    let log = EmbeddedLog::open(EmbeddedConfig::new(dir)).unwrap();
    log.ensure_stream(STREAM).unwrap();
    log
}

pub fn sink(log: &Arc<EmbeddedLog>) -> LogSink {
    LogSink::new(log.clone(), STREAM)
}

/// A structured 1.0 CloudEvent.
pub fn event(source: &str, id: &str, n: usize) -> String {
    serde_json::json!({
        "specversion": "1.0",
        "id": id,
        "source": source,
        "type": "test.event",
        "data": {"n": n},
    })
    .to_string()
}

/// Running sources and what stops them.
pub struct Running {
    pub sources: Sources,
    tasks: TaskTracker,
    shutdown: CancellationToken,
}

impl Running {
    pub fn start(configs: Vec<SourceConfig>, sink: LogSink) -> Running {
        let tasks = TaskTracker::new();
        let shutdown = CancellationToken::new();
        let sources = Sources::start(configs, sink, &tasks, shutdown.clone());
        Running {
            sources,
            tasks,
            shutdown,
        }
    }

    pub fn status(&self) -> SourceStatus {
        self.sources.status().remove(0)
    }

    pub async fn wait_running(&self) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while self.sources.ready().is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "sources not running: {:?}",
                self.sources.ready()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn wait_until(&self, what: &str, f: impl Fn(&SourceStatus) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let s = self.status();
            if f(&s) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting for {what}: {s:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) -> Vec<SourceStatus> {
        self.shutdown.cancel();
        self.tasks.close();
        tokio::time::timeout(Duration::from_secs(30), self.tasks.wait())
            .await
            .expect("sources did not stop within 30 s");
        self.sources.status()
    }
}

/// `(type, id, data.n)` of every record in the log, in log order.
pub async fn log_events(log: &Arc<EmbeddedLog>) -> Vec<(String, String, serde_json::Value)> {
    let mut out = Vec::new();
    let mut from = 0;
    loop {
        let recs = log.read(STREAM, from, 1000, 16 << 20).await.unwrap();
        if recs.is_empty() {
            return out;
        }
        for r in &recs {
            let (ty, json) = record::decode(&r.payload).unwrap();
            let v: serde_json::Value = serde_json::from_slice(json).unwrap();
            let id = v["id"].as_str().unwrap_or_default().to_owned();
            out.push((ty.to_owned(), id, v));
            from = r.offset + 1;
        }
    }
}

/// Waits until the log holds at least `n` records; returns them.
pub async fn wait_for_records(
    log: &Arc<EmbeddedLog>,
    n: u64,
) -> Vec<(String, String, serde_json::Value)> {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let next = log.bounds(STREAM).unwrap().next;
        if next >= n {
            return log_events(log).await;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out: the log holds {next} of {n} records"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that the log holds exactly the ids `expected`, each once.
pub fn assert_each_once(events: &[(String, String, serde_json::Value)], expected: &[String]) {
    let ids: Vec<&str> = events.iter().map(|(_, id, _)| id.as_str()).collect();
    let unique: HashSet<&str> = ids.iter().copied().collect();
    assert_eq!(unique.len(), ids.len(), "the log holds an event twice");
    let want: HashSet<&str> = expected.iter().map(String::as_str).collect();
    let missing: Vec<&&str> = want.difference(&unique).take(10).collect();
    assert!(missing.is_empty(), "missing from the log: {missing:?} …");
    assert_eq!(unique.len(), want.len(), "the log holds unexpected events");
}

pub fn is_down(s: &SourceStatus) -> bool {
    matches!(s.state, SourceState::Down(_))
}
