//! The Kafka source against a real Kafka-protocol broker
//! (`TIDEGATE_TEST_KAFKA_BROKERS`, default `127.0.0.1:9092`); skipped when none answers.
//! Topics are created per test with unique names and deleted at the end.
mod common;

use std::time::Duration;

use common::*;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use tidegate_log::testsuite::brokers::{kafka_brokers, unique};
use tidegate_sources::kafka::KafkaSourceConfig;
use tidegate_sources::SourceConfig;

/// The Kafka tests run one at a time: deleting a topic while other librdkafka clients
/// of this process are connected crashes librdkafka's metadata cache when the broker
/// is tansu 0.6 (it answers for the deleted topic with neither name nor id, and
/// librdkafka `strcmp`s the missing name).
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Kafka {
    _serial: tokio::sync::MutexGuard<'static, ()>,
    brokers: String,
    admin: AdminClient<DefaultClientContext>,
    producer: FutureProducer,
    topic: String,
}

impl Kafka {
    async fn new(brokers: String, partitions: i32) -> Kafka {
        let serial = SERIAL.lock().await;
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        let topic = unique("tgsrc-");
        let res = admin
            .create_topics(
                &[NewTopic::new(
                    &topic,
                    partitions,
                    TopicReplication::Fixed(1),
                )],
                &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))),
            )
            .await
            .unwrap();
        for r in res {
            r.unwrap();
        }
        let producer: FutureProducer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .set("message.timeout.ms", "30000")
            .create()
            .unwrap();
        Kafka {
            _serial: serial,
            brokers,
            admin,
            producer,
            topic,
        }
    }

    async fn send(&self, partition: Option<i32>, payload: &str, headers: Option<OwnedHeaders>) {
        let mut rec: FutureRecord<'_, str, str> = FutureRecord::to(&self.topic).payload(payload);
        if let Some(p) = partition {
            rec = rec.partition(p);
        }
        if let Some(h) = headers {
            rec = rec.headers(h);
        }
        self.producer
            .send(rec, Duration::from_secs(30))
            .await
            .map_err(|(e, _)| e)
            .unwrap();
    }

    fn source(&self, group: &str) -> SourceConfig {
        let mut cfg = KafkaSourceConfig::new(vec![self.brokers.clone()], vec![self.topic.clone()]);
        cfg.group_id = group.to_owned();
        cfg.batch_max = 50;
        // Quicker group moves in tests.
        cfg.extra = vec![
            ("session.timeout.ms".into(), "6000".into()),
            ("heartbeat.interval.ms".into(), "500".into()),
        ];
        SourceConfig::Kafka(cfg)
    }

    async fn delete(self) {
        drop(self.producer);
        // tansu 0.6 (sqlite storage) panics in its storage task, and then fails every
        // request until restarted, when a fetch still parked on a topic finds the topic
        // deleted: let every client of the topic be gone for a while first.
        tokio::time::sleep(std::time::Duration::from_secs(2)).await;
        let _ = self
            .admin
            .delete_topics(&[&self.topic], &AdminOptions::new())
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn structured_and_binary_events() {
    init_tracing();
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let kafka = Kafka::new(brokers, 1).await;
    kafka.send(None, &event("/k", "s1", 1), None).await;
    let binary = OwnedHeaders::new()
        .insert(Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(Header {
            key: "ce_id",
            value: Some("b1"),
        })
        .insert(Header {
            key: "ce_source",
            value: Some("/k"),
        })
        .insert(Header {
            key: "ce_type",
            value: Some("test.binary"),
        })
        .insert(Header {
            key: "content-type",
            value: Some("application/json"),
        });
    kafka.send(None, r#"{"n":2}"#, Some(binary)).await;
    kafka.send(None, "not a cloud event", None).await;
    kafka
        .send(
            None,
            r#"{"id":"x","source":"/k","type":"no.specversion"}"#,
            None,
        )
        .await;
    kafka.send(None, &event("/k", "s2", 3), None).await;
    // The same event again (a producer retry): stored once.
    kafka.send(None, &event("/k", "s2", 3), None).await;

    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let running = Running::start(vec![kafka.source(&unique("g-"))], sink(&log));
    let events = wait_for_records(&log, 3).await;
    let got: Vec<&str> = events.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(got, ["s1", "b1", "s2"]);
    assert_eq!(events[1].0, "test.binary");
    assert_eq!(events[1].2["data"], serde_json::json!({"n": 2}));
    assert_eq!(events[1].2["datacontenttype"], "application/json");
    running
        .wait_until("all counted", |s| {
            s.received == 6 && s.appended == 3 && s.rejected == 2 && s.duplicates == 1
        })
        .await;
    running.wait_running().await;
    running.wait_until("lag 0", |s| s.lag == Some(0)).await;
    let metrics = running.sources.render_metrics();
    assert!(
        metrics.contains("tidegate_source_events_total{source=\"kafka\",result=\"duplicate\"} 1")
    );
    assert!(metrics.contains("tidegate_source_up{source=\"kafka\"} 1"));
    assert_eq!(running.status().kind, "kafka");
    running.stop().await;
    assert_eq!(log_events(&log).await.len(), 3);
    kafka.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_continues_from_committed_offsets() {
    init_tracing();
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let kafka = Kafka::new(brokers, 1).await;
    let group = unique("g-");
    let mut ids = Vec::new();
    for i in 0..100 {
        let id = format!("r{i}");
        kafka.send(None, &event("/r", &id, i), None).await;
        ids.push(id);
    }
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());

    let first = Running::start(vec![kafka.source(&group)], sink(&log));
    wait_for_records(&log, 100).await;
    first.wait_until("all stored", |s| s.appended == 100).await;
    let s1 = first.stop().await.remove(0);
    assert_eq!(s1.received, 100);

    for i in 100..200 {
        let id = format!("r{i}");
        kafka.send(None, &event("/r", &id, i), None).await;
        ids.push(id);
    }
    let second = Running::start(vec![kafka.source(&group)], sink(&log));
    let events = wait_for_records(&log, 200).await;
    second.wait_until("all stored", |s| s.appended == 100).await;
    let s2 = second.stop().await.remove(0);
    // It started at the committed offset: nothing of the first run came again.
    assert_eq!((s2.received, s2.duplicates), (100, 0), "{s2:?}");
    assert_each_once(&events, &ids);
    let got: Vec<&str> = events.iter().map(|(_, id, _)| id.as_str()).collect();
    assert_eq!(got, ids.iter().map(String::as_str).collect::<Vec<_>>());
    kafka.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_members_share_partitions_and_take_over() {
    init_tracing();
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    let kafka = Kafka::new(brokers, 2).await;
    let group = unique("g-");
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());

    let a = Running::start(vec![kafka.source(&group)], sink(&log));
    let b = Running::start(vec![kafka.source(&group)], sink(&log));
    a.wait_running().await;
    b.wait_running().await;

    // Keep producing to both partitions until each member got some: the group needs
    // a moment to settle on one partition each.
    let mut ids = Vec::new();
    let mut i = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while a.status().received == 0 || b.status().received == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the partitions were not shared: {:?} {:?}",
            a.status(),
            b.status()
        );
        for p in 0..2 {
            let id = format!("g{i}");
            kafka.send(Some(p), &event("/g", &id, i), None).await;
            ids.push(id);
            i += 1;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shared = i;
    wait_for_records(&log, shared as u64).await;

    // A leaves; B takes over both partitions.
    a.stop().await;
    let b_before = b.status().received;
    for n in 0..100 {
        let id = format!("g{i}");
        kafka.send(Some(n % 2), &event("/g", &id, i), None).await;
        ids.push(id);
        i += 1;
    }
    let events = wait_for_records(&log, i as u64).await;
    assert_each_once(&events, &ids);
    let sb = b.stop().await.remove(0);
    assert!(
        sb.received >= b_before + 100,
        "B did not take over A's partition: {sb:?}"
    );
    kafka.delete().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_broker_reports_down() {
    init_tracing();
    // A port nothing listens on.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    drop(listener);
    let mut cfg = KafkaSourceConfig::new(vec![addr], vec!["nothing".into()]);
    cfg.group_id = unique("g-");
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let running = Running::start(vec![SourceConfig::Kafka(cfg)], sink(&log));
    running.wait_until("down", is_down).await;
    let err = running.sources.ready().unwrap_err();
    assert!(err.contains("source kafka is down"), "{err}");
    let metrics = running.sources.render_metrics();
    assert!(metrics.contains("tidegate_source_up{source=\"kafka\"} 0"));
    // Stops promptly although it never connected.
    running.stop().await;
}
