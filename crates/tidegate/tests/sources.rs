//! Event sources end to end, with the binary and real brokers: CloudEvents produced to
//! NATS and Kafka reach an SSE subscriber; a gateway SIGKILLed in the middle of
//! consuming and restarted loses nothing (the broker is acknowledged only after the
//! log append) and stores nothing twice (the log's dedup key).
use std::collections::HashSet;
use std::time::Duration;

use serde_json::json;
use tidegate_log::testsuite::brokers;
use tidegate_testkit::process::{self, Process};
use tidegate_testkit::sse::Sse;

async fn gateway(dir: &std::path::Path, extra: &[(&str, &str)]) -> Process {
    let dir = dir.to_string_lossy().to_string();
    let mut env = vec![
        ("INBOUND_PORT", "0"),
        ("API_HTTP_PORT", "0"),
        ("TIDEGATE_INBOUND_HOST", "127.0.0.1"),
        ("TIDEGATE_INTERNAL_TOKEN", "t"),
        ("MAX_CONNECTIONS_PER_MINUTE", "0"),
        ("TIDEGATE_LOG_DIR", dir.as_str()),
        ("LOG_LEVEL", "warn"),
    ];
    env.extend_from_slice(extra);
    let bin = process::binary(env!("CARGO_BIN_EXE_tidegate"));
    process::spawn(&bin, &[], &env, Duration::from_secs(60))
        .await
        .expect("gateway starts")
}

fn sse_url(p: &Process, event_type: &str) -> String {
    let subs = format!(r#"[{{"eventType":"{event_type}"}}]"#);
    let enc: String = subs
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!(
        "http://{}/_rig/v1/connection/sse?subscriptions={enc}",
        p.inbound
    )
}

/// Reads events of `event_type` until `want` distinct CloudEvents ids arrived; returns
/// every id received, duplicates included.
async fn collect(sse: &mut Sse, event_type: &str, want: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut distinct = HashSet::new();
    while distinct.len() < want {
        let ev = sse
            .next_event(Duration::from_secs(30))
            .await
            .unwrap_or_else(|e| panic!("{} of {want} events: {e}", distinct.len()));
        if ev.event == event_type {
            let id = ev.json()["id"].as_str().unwrap().to_string();
            distinct.insert(id.clone());
            ids.push(id);
        }
    }
    ids
}

async fn wait_source_ready(p: &Process) {
    for _ in 0..100 {
        if let Ok(r) = reqwest::get(format!("http://{}/health/ready", p.internal)).await {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the gateway's sources never became ready");
}

fn ce(event_type: &str, id: &str) -> String {
    json!({"specversion":"1.0","id":id,"source":"/src-test","type":event_type,"data":{"id":id}})
        .to_string()
}

// === NATS ===

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_core_subjects_structured_and_binary() {
    let Some(url) = brokers::nats_url() else {
        return;
    };
    let subject = brokers::unique("tg.src.");
    let dir = tempfile::tempdir().unwrap();
    let p = gateway(
        dir.path(),
        &[("NATS_SERVERS", &url), ("NATS_SOURCE_TOPICS", &subject)],
    )
    .await;
    wait_source_ready(&p).await;
    let mut sse = Sse::connect(&sse_url(&p, "src.nats"), &[]).await.unwrap();
    sse.next_event(Duration::from_secs(5)).await.unwrap();
    let client = async_nats::connect(&url).await.unwrap();
    client
        .publish(subject.clone(), ce("src.nats", "n1").into())
        .await
        .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    for (k, v) in [
        ("ce-specversion", "1.0"),
        ("ce-id", "n2"),
        ("ce-source", "/src-test"),
        ("ce-type", "src.nats"),
        ("content-type", "application/json"),
    ] {
        headers.insert(k, v);
    }
    client
        .publish_with_headers(subject.clone(), headers, r#"{"id":"n2"}"#.into())
        .await
        .unwrap();
    client.flush().await.unwrap();
    let ids = collect(&mut sse, "src.nats", 2).await;
    assert_eq!(ids, vec!["n1", "n2"], "structured then binary, once each");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jetstream_source_killed_mid_consumption_loses_nothing() {
    const N: usize = 3000;
    let Some(url) = brokers::nats_url() else {
        return;
    };
    let client = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let stream = brokers::unique("TGSRC");
    let subject = format!("{}.events", stream.to_ascii_lowercase());
    js.create_stream(async_nats::jetstream::stream::Config {
        name: stream.clone(),
        subjects: vec![subject.clone()],
        ..Default::default()
    })
    .await
    .unwrap();
    for i in 0..N {
        js.publish(subject.clone(), ce("src.js", &format!("j{i}")).into())
            .await
            .unwrap()
            .await
            .unwrap();
    }
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("NATS_SERVERS", url.as_str()),
        ("NATS_SOURCE_TOPICS", subject.as_str()),
        ("TIDEGATE_NATS_SOURCE_JETSTREAM_STREAM", stream.as_str()),
    ];
    // Kill the gateway as soon as it has stored some, but not all.
    let mut p = gateway(dir.path(), &env).await;
    let mut sse = Sse::connect(&format!("{}&lastEventId=start", sse_url(&p, "src.js")), &[])
        .await
        .unwrap();
    let first = collect(&mut sse, "src.js", 100).await;
    assert!(first.len() >= 100);
    p.child.start_kill().unwrap();
    p.child.wait().await.unwrap();

    let p = gateway(dir.path(), &env).await;
    let mut sse = Sse::connect(&format!("{}&lastEventId=start", sse_url(&p, "src.js")), &[])
        .await
        .unwrap();
    let all = collect(&mut sse, "src.js", N).await;
    let distinct: HashSet<&String> = all.iter().collect();
    assert_eq!(distinct.len(), N, "every event stored");
    assert_eq!(
        all.len(),
        N,
        "no event stored twice (dedup across the kill)"
    );
    drop(p);
    let _ = js.delete_stream(&stream).await;
}

// === Kafka ===

fn kafka_producer(brokers: &str) -> rdkafka::producer::FutureProducer {
    rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("message.timeout.ms", "10000")
        .create()
        .unwrap()
}

async fn create_topic(brokers: &str, topic: &str, partitions: i32) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    let admin: AdminClient<rdkafka::client::DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .unwrap();
    let r = admin
        .create_topics(
            &[NewTopic::new(topic, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    for x in r {
        x.unwrap();
    }
}

async fn produce(
    p: &rdkafka::producer::FutureProducer,
    topic: &str,
    key: &str,
    payload: &str,
    headers: Option<rdkafka::message::OwnedHeaders>,
) {
    let mut rec = rdkafka::producer::FutureRecord::to(topic)
        .key(key)
        .payload(payload);
    if let Some(h) = headers {
        rec = rec.headers(h);
    }
    p.send(rec, Duration::from_secs(10))
        .await
        .map_err(|(e, _)| e)
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kafka_structured_binary_and_a_kill_mid_consumption() {
    const N: usize = 1500;
    let Some(b) = brokers::kafka_brokers() else {
        return;
    };
    let topic = brokers::unique("tg-src-");
    create_topic(&b, &topic, 2).await;
    let producer = kafka_producer(&b);
    produce(
        &producer,
        &topic,
        "s",
        &ce("src.kafka", "k-structured"),
        None,
    )
    .await;
    let headers = rdkafka::message::OwnedHeaders::new()
        .insert(rdkafka::message::Header {
            key: "ce_specversion",
            value: Some("1.0"),
        })
        .insert(rdkafka::message::Header {
            key: "ce_id",
            value: Some("k-binary"),
        })
        .insert(rdkafka::message::Header {
            key: "ce_source",
            value: Some("/src-test"),
        })
        .insert(rdkafka::message::Header {
            key: "ce_type",
            value: Some("src.kafka"),
        })
        .insert(rdkafka::message::Header {
            key: "content-type",
            value: Some("application/json"),
        });
    produce(
        &producer,
        &topic,
        "b",
        r#"{"id":"k-binary"}"#,
        Some(headers),
    )
    .await;
    for i in 0..N {
        produce(
            &producer,
            &topic,
            &format!("k{i}"),
            &ce("src.kafka", &format!("k{i}")),
            None,
        )
        .await;
    }
    let group = brokers::unique("tg-src-group-");
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("KAFKA_BROKERS", b.as_str()),
        ("KAFKA_SOURCE_TOPICS", topic.as_str()),
        ("KAFKATOFILTER_KAFKA_GROUP_ID", group.as_str()),
    ];
    let mut p = gateway(dir.path(), &env).await;
    let mut sse = Sse::connect(
        &format!("{}&lastEventId=start", sse_url(&p, "src.kafka")),
        &[],
    )
    .await
    .unwrap();
    collect(&mut sse, "src.kafka", 50).await;
    p.child.start_kill().unwrap();
    p.child.wait().await.unwrap();

    let p = gateway(dir.path(), &env).await;
    let mut sse = Sse::connect(
        &format!("{}&lastEventId=start", sse_url(&p, "src.kafka")),
        &[],
    )
    .await
    .unwrap();
    let all = collect(&mut sse, "src.kafka", N + 2).await;
    let distinct: HashSet<&String> = all.iter().collect();
    assert!(
        distinct.contains(&"k-structured".to_string())
            && distinct.contains(&"k-binary".to_string())
    );
    assert_eq!(distinct.len(), N + 2, "every event stored");
    assert_eq!(
        all.len(),
        N + 2,
        "no event stored twice (dedup across the kill)"
    );
    drop(p);
}
