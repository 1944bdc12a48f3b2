//! NATS sources against a real nats-server with JetStream (`TIDEGATE_TEST_NATS_URL`,
//! default `nats://127.0.0.1:4222`); skipped when none answers.
mod common;

use std::time::Duration;

use async_nats::jetstream::{self, stream};
use bytes::Bytes;
use common::*;
use tidegate_log::testsuite::brokers::{nats_url, unique};
use tidegate_log::EventLog;
use tidegate_sources::nats::{JetStreamConfig, NatsSourceConfig};
use tidegate_sources::{SourceConfig, SourceState};

struct Js {
    client: async_nats::Client,
    js: jetstream::Context,
    stream: String,
    prefix: String,
}

impl Js {
    async fn new(url: &str) -> Js {
        let client = async_nats::connect(url).await.unwrap();
        let js = jetstream::new(client.clone());
        let stream = unique("TGSRC");
        let prefix = unique("tgsrc");
        js.create_stream(stream::Config {
            name: stream.clone(),
            subjects: vec![format!("{prefix}.>")],
            ..Default::default()
        })
        .await
        .unwrap();
        Js {
            client,
            js,
            stream,
            prefix,
        }
    }

    async fn publish(&self, subject: &str, payload: impl Into<Bytes>) {
        self.js
            .publish(format!("{}.{subject}", self.prefix), payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
    }

    fn source(&self, durable: &str) -> SourceConfig {
        self.source_with_batch(durable, 16)
    }

    fn source_with_batch(&self, durable: &str, batch: usize) -> SourceConfig {
        let mut cfg = NatsSourceConfig::new(
            vec![nats_url().unwrap()],
            vec![format!("{}.>", self.prefix)],
        );
        cfg.jetstream = Some(JetStreamConfig {
            stream: self.stream.clone(),
            durable: durable.to_owned(),
            ack_wait: Duration::from_secs(5),
            batch,
            ..JetStreamConfig::default()
        });
        SourceConfig::Nats(cfg)
    }

    /// `(num_pending, num_ack_pending)` of the durable consumer.
    async fn pending(&self, durable: &str) -> (u64, usize) {
        let mut consumer: jetstream::consumer::PullConsumer = self
            .js
            .get_stream(&self.stream)
            .await
            .unwrap()
            .get_consumer(durable)
            .await
            .unwrap();
        let info = consumer.info().await.unwrap();
        (info.num_pending, info.num_ack_pending)
    }

    async fn wait_all_acked(&self, durable: &str) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let p = self.pending(durable).await;
            if p == (0, 0) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "consumer still has (pending, ack pending) = {p:?}"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn delete(self) {
        let _ = self.js.delete_stream(&self.stream).await;
        let _ = self.client.flush().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_events_arrive_in_order() {
    init_tracing();
    let Some(url) = nats_url() else { return };
    let js = Js::new(&url).await;
    let ids: Vec<String> = (0..50).map(|i| format!("e{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        js.publish("orders", event("/orders", id, i)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    // With a hub and no backlog allowed, every append waits for the hub to have
    // dispatched everything before it.
    let hub_tasks = tokio_util::task::TaskTracker::new();
    let hub_shutdown = tokio_util::sync::CancellationToken::new();
    let hub = tidegate_hub::Hub::start(
        tidegate_hub::HubConfig::default(),
        log.clone(),
        std::sync::Arc::new(tidegate_core::Extractors::default()),
        std::sync::Arc::new(tidegate_telemetry::Metrics::new()),
        hub_shutdown.clone(),
        &hub_tasks,
    )
    .await
    .unwrap();
    let mut sink = sink(&log);
    sink.hub = Some(hub.clone());
    sink.max_backlog = 0;
    let running = Running::start(vec![js.source("tidegate")], sink);
    running.wait_running().await;

    let events = wait_for_records(&log, 50).await;
    let got: Vec<&str> = events.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(events[7].0, "test.event");
    assert_eq!(events[7].2["data"]["n"], 7);
    // Live events after the backlog.
    js.publish("orders", event("/orders", "live", 50)).await;
    wait_for_records(&log, 51).await;

    js.wait_all_acked("tidegate").await;
    running
        .wait_until("lag 0", |s| s.appended == 51 && s.lag == Some(0))
        .await;
    let s = running.status();
    assert_eq!((s.received, s.rejected, s.duplicates), (51, 0, 0));
    assert_eq!(s.kind, "jetstream");
    assert!(running.sources.ready().is_ok());
    let metrics = running.sources.render_metrics();
    assert!(
        metrics.contains("tidegate_source_events_total{source=\"nats\",result=\"appended\"} 51")
    );
    assert!(metrics.contains("tidegate_source_up{source=\"nats\"} 1"));
    assert!(metrics.contains("tidegate_source_lag{source=\"nats\"} 0"));

    running.stop().await;
    assert_eq!(hub.backlog(), 0);
    hub_shutdown.cancel();
    js.delete().await;
}

/// Stopping mid-stream and a log outage lose nothing: a message is acked only after
/// its event is in the log; what was not acked comes again, and the log's dedup key
/// keeps each event once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_acks_only_after_append() {
    init_tracing();
    let Some(url) = nats_url() else { return };
    let js = Js::new(&url).await;
    let total = 1000;
    let mut ids: Vec<String> = (0..total).map(|i| format!("a{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        js.publish("users", event("/users", id, i)).await;
    }
    let dir = tempfile::tempdir().unwrap();

    // 1. Stop mid-stream (small batches, one fsync each, so it is still busy).
    let log = open_log(dir.path());
    let first = Running::start(vec![js.source_with_batch("durable", 2)], sink(&log));
    wait_for_records(&log, 40).await;
    let stopped = first.stop().await;
    let stored_by_first = log.bounds(STREAM).unwrap().next;
    eprintln!("first run stored {stored_by_first} of {total}: {stopped:?}");

    // 2. The log goes away under a running source: it reports it and acks nothing.
    let second = Running::start(vec![js.source("durable")], sink(&log));
    second.wait_running().await;
    let closing = log.clone();
    tokio::task::spawn_blocking(move || closing.close())
        .await
        .unwrap();
    for i in total..total + 100 {
        let id = format!("a{i}");
        js.publish("users", event("/users", &id, i)).await;
        ids.push(id);
    }
    second
        .wait_until(
            "down because of the log",
            |s| matches!(&s.state, SourceState::Down(r) if r.starts_with("log:")),
        )
        .await;
    assert!(second.sources.ready().unwrap_err().contains("log"));
    second.stop().await;
    let (pending, ack_pending) = js.pending("durable").await;
    assert!(
        pending + ack_pending as u64 > 0,
        "messages were acked although the log was closed"
    );

    // 3. Restart with the log reopened: everything arrives, each event once.
    let log = open_log(dir.path());
    let third = Running::start(vec![js.source("durable")], sink(&log));
    let events = wait_for_records(&log, total as u64 + 100).await;
    js.wait_all_acked("durable").await;
    // Redeliveries, if any, have been deduplicated by now.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let events_after = log_events(&log).await;
    assert_eq!(events.len(), events_after.len());
    assert_each_once(&events_after, &ids);
    let s = third.stop().await.remove(0);
    assert_eq!(s.rejected, 0);
    js.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn core_nats_queue_group_shares_messages() {
    init_tracing();
    let Some(url) = nats_url() else { return };
    let client = async_nats::connect(&url).await.unwrap();
    let subject = unique("tgsrc.core.");
    let group = unique("tgsrc-group-");
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());

    let config = || {
        let mut c = NatsSourceConfig::new(vec![url.clone()], vec![subject.clone()]);
        c.queue_group = Some(group.clone());
        SourceConfig::Nats(c)
    };
    let a = Running::start(vec![config()], sink(&log));
    let b = Running::start(vec![config()], sink(&log));
    a.wait_running().await;
    b.wait_running().await;
    assert_eq!(a.status().kind, "nats");

    let ids: Vec<String> = (0..100).map(|i| format!("c{i}")).collect();
    for (i, id) in ids.iter().enumerate() {
        client
            .publish(subject.clone(), event("/core", id, i).into())
            .await
            .unwrap();
    }
    client.flush().await.unwrap();

    let events = wait_for_records(&log, 100).await;
    assert_each_once(&events, &ids);
    let (sa, sb) = (a.status(), b.status());
    assert_eq!(sa.received + sb.received, 100, "{sa:?} {sb:?}");
    assert!(
        sa.received > 0 && sb.received > 0,
        "the queue group did not share: {sa:?} {sb:?}"
    );
    assert_eq!(sa.lag, None);
    a.stop().await;
    b.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn poison_messages_are_skipped_and_counted() {
    init_tracing();
    let Some(url) = nats_url() else { return };
    let js = Js::new(&url).await;
    js.publish("p", event("/p", "ok-1", 1)).await;
    js.publish("p", "this is not json").await;
    js.publish("p", event("/p", "ok-2", 2)).await;
    js.publish("p", r#"{"id":"x","source":"/p","type":"t"}"#)
        .await;
    // Binary mode: attributes in `ce-*` headers, data in the body.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Ce-Specversion", "1.0");
    headers.insert("Ce-Id", "ok-3");
    headers.insert("Ce-Source", "/p");
    headers.insert("Ce-Type", "test.binary");
    headers.insert("Content-Type", "application/json");
    js.js
        .publish_with_headers(format!("{}.p", js.prefix), headers, r#"{"n":3}"#.into())
        .await
        .unwrap()
        .await
        .unwrap();
    js.publish("p", event("/p", "ok-4", 4)).await;

    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let running = Running::start(vec![js.source("poison")], sink(&log));
    let events = wait_for_records(&log, 4).await;
    let got: Vec<&str> = events.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(got, ["ok-1", "ok-2", "ok-3", "ok-4"]);
    assert_eq!(events[2].0, "test.binary");
    assert_eq!(events[2].2["data"], serde_json::json!({"n": 3}));
    assert_eq!(events[2].2["datacontenttype"], "application/json");

    running
        .wait_until("poison counted", |s| s.rejected == 2 && s.appended == 4)
        .await;
    // Terminated, not waiting for redelivery.
    js.wait_all_acked("poison").await;
    let s = running.stop().await.remove(0);
    assert_eq!(s.received, 6);
    assert!(tidegate_sources::render_metrics(&[s])
        .contains("tidegate_source_events_total{source=\"nats\",result=\"rejected\"} 2"));
    js.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_stream_reports_down_then_recovers() {
    init_tracing();
    let Some(url) = nats_url() else { return };
    let client = async_nats::connect(&url).await.unwrap();
    let js = jetstream::new(client.clone());
    let name = unique("TGSRCLATE");
    let prefix = unique("tgsrclate");
    let mut cfg = NatsSourceConfig::new(vec![url.clone()], vec![format!("{prefix}.>")]);
    cfg.jetstream = Some(JetStreamConfig {
        stream: name.clone(),
        durable: "late".into(),
        ..JetStreamConfig::default()
    });
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let running = Running::start(vec![SourceConfig::Nats(cfg)], sink(&log));
    running.wait_until("down", is_down).await;
    let err = running.sources.ready().unwrap_err();
    assert!(err.contains("nats") && err.contains(&name), "{err}");

    js.create_stream(stream::Config {
        name: name.clone(),
        subjects: vec![format!("{prefix}.>")],
        ..Default::default()
    })
    .await
    .unwrap();
    js.publish(format!("{prefix}.x"), event("/late", "l1", 1).into())
        .await
        .unwrap()
        .await
        .unwrap();
    wait_for_records(&log, 1).await;
    running.wait_running().await;
    assert!(running.status().reconnects >= 1);
    running.stop().await;
    let _ = js.delete_stream(&name).await;
}
