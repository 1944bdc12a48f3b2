//! `target: nats | kafka` and `response_from: nats | kafka` against real brokers
//! (skipped, with a line saying so, when a broker is not running).
mod common;

use bytes::Bytes;
use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tidegate_log::testsuite::brokers::{kafka_brokers, nats_url, unique};
use tidegate_proxy::{
    KafkaConfig, KafkaPublisher, KafkaResponsesConfig, NatsConfig, NatsPublisher, ProxyConfig,
    Publisher, Timeouts,
};

fn broker_api(target: &str, topic: &str, response_from: &str) -> Value {
    json!([{
        "id": "events", "name": "events",
        "version_data": {"default": {"endpoints": [
            {"id": "fire", "method": "POST", "path_regex": "/fire", "target": target, "topic": topic},
            {"id": "fire-preflight", "method": "OPTIONS", "path_regex": "/fire", "target": target, "topic": topic},
            {"id": "ask", "method": "POST", "path_regex": "/ask/(.+)", "path_replacement": "/asked/\\1",
             "target": target, "topic": topic, "response_from": response_from}
        ]}}
    }])
}

fn cloud_event() -> Value {
    json!({"specversion": "1.0", "id": "e1", "source": "/test", "type": "greeting",
           "rig": {"target_partition": "k1"}, "data": {"hello": "world"}})
}

#[tokio::test]
async fn nats_target_publishes_and_replies() {
    let Some(url) = nats_url() else { return };
    let subject = unique("tidegate.proxy.test.");
    let nats = async_nats::connect(&url).await.unwrap();
    let mut sub = nats.subscribe(subject.clone()).await.unwrap();
    nats.flush().await.unwrap();

    let publisher = NatsPublisher::connect(&NatsConfig::new(url.clone()))
        .await
        .unwrap();
    // Wait for the background connect.
    for _ in 0..50 {
        if publisher
            .publish("tidegate.proxy.warmup", None, vec![], Bytes::new())
            .await
            .is_ok()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        open_log(dir.path()),
        ProxyConfig {
            file: Some(broker_api("nats", &subject, "nats").to_string()),
            nats: Some(Arc::new(publisher)),
            timeouts: Timeouts {
                nats_response: Duration::from_secs(2),
                ..Timeouts::default()
            },
            ..ProxyConfig::default()
        },
    )
    .await;
    let c = client();

    // Fire and forget: 202 only after the publish; the subscriber has it.
    let r = c
        .post(format!("{}/fire?x=1", gw.inbound))
        .header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
        .json(&cloud_event())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    assert_eq!(r.text().await.unwrap(), "Accepted.");
    let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
        .await
        .unwrap()
        .unwrap();
    let event: Value = serde_json::from_slice(&msg.payload).unwrap();
    assert_eq!(event["data"]["hello"], "world");
    assert_eq!(event["rig"]["method"], "POST");
    assert_eq!(event["rig"]["path"], "/fire");
    assert_eq!(event["rig"]["query"], "x=1");
    assert_eq!(event["rig"]["remoteip"], "127.0.0.1");
    assert!(event["rig"]["correlation"]
        .as_str()
        .is_some_and(|c| !c.is_empty()));
    assert!(
        event["rig"].get("target_partition").is_none(),
        "rig is replaced by the metadata"
    );
    assert_eq!(
        event["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );

    // Not a CloudEvent → 400 with RIG's help text; preflight → 204.
    let r = c
        .post(format!("{}/fire", gw.inbound))
        .json(&json!({"a": 1}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r
        .text()
        .await
        .unwrap()
        .contains("does not look like a CloudEvent"));
    let r = c
        .post(format!("{}/fire", gw.inbound))
        .body("not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c
        .request(reqwest::Method::OPTIONS, format!("{}/fire", gw.inbound))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    assert_eq!(header(r.headers(), "access-control-allow-origin"), "*");

    // response_from: nats — request/reply; a `rig-response-code` header sets the status.
    let responder = tokio::spawn({
        let nats = nats.clone();
        async move {
            let msg = tokio::time::timeout(Duration::from_secs(5), sub.next())
                .await
                .unwrap()
                .unwrap();
            let event: Value = serde_json::from_slice(&msg.payload).unwrap();
            let mut headers = async_nats::HeaderMap::new();
            headers.insert("rig-response-code", "201");
            let body = json!({"answer": event["rig"]["path"]}).to_string();
            nats.publish_with_headers(msg.reply.unwrap(), headers, body.into())
                .await
                .unwrap();
            nats.flush().await.unwrap();
            sub
        }
    });
    let r = c
        .post(format!("{}/ask/me", gw.inbound))
        .json(&cloud_event())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(r.headers(), "content-type"), "application/json");
    assert_eq!(
        r.json::<Value>().await.unwrap(),
        json!({"answer": "/asked/me"})
    );
    let sub = responder.await.unwrap();

    // Nobody answers in time → 504.
    let quiet = tokio::spawn(async move {
        let mut sub = sub;
        let _ = tokio::time::timeout(Duration::from_secs(4), sub.next()).await;
    });
    let r = c
        .post(format!("{}/ask/again", gw.inbound))
        .json(&cloud_event())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    quiet.abort();
    gw.stop().await;
}

#[tokio::test]
async fn nats_subject_in_a_stream_gets_a_jetstream_ack() {
    let Some(url) = nats_url() else { return };
    let subject = unique("tidegate.proxy.js.");
    let stream_name = unique("TIDEGATE_PROXY_");
    let nats = async_nats::connect(&url).await.unwrap();
    let js = async_nats::jetstream::new(nats);
    let mut stream = js
        .create_stream(async_nats::jetstream::stream::Config {
            name: stream_name.clone(),
            subjects: vec![subject.clone()],
            ..Default::default()
        })
        .await
        .unwrap();
    let publisher = NatsPublisher::connect(&NatsConfig::new(url)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        open_log(dir.path()),
        ProxyConfig {
            file: Some(broker_api("nats", &subject, "nats").to_string()),
            nats: Some(Arc::new(publisher)),
            ..ProxyConfig::default()
        },
    )
    .await;
    let mut status = reqwest::StatusCode::SERVICE_UNAVAILABLE;
    for _ in 0..50 {
        let r = client()
            .post(format!("{}/fire", gw.inbound))
            .json(&cloud_event())
            .send()
            .await
            .unwrap();
        status = r.status();
        if status == 202 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, 202);
    // 202 came after the stream's ack: the message is stored.
    let info = stream.info().await.unwrap();
    assert_eq!(info.state.messages, 1);
    let _ = js.delete_stream(&stream_name).await;
    gw.stop().await;
}

#[tokio::test]
async fn nats_unreachable_is_503() {
    // A port nothing listens on: the publisher keeps retrying in the background.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let publisher = NatsPublisher::connect(&NatsConfig::new(format!("nats://127.0.0.1:{port}")))
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        open_log(dir.path()),
        ProxyConfig {
            file: Some(broker_api("nats", "some.subject", "nats").to_string()),
            nats: Some(Arc::new(publisher)),
            ..ProxyConfig::default()
        },
    )
    .await;
    let c = client();
    let started = std::time::Instant::now();
    let r = c
        .post(format!("{}/fire", gw.inbound))
        .json(&cloud_event())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(header(r.headers(), "retry-after"), "1");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "fails fast, does not wait for a reconnect"
    );
    let r = c
        .post(format!("{}/ask/x", gw.inbound))
        .json(&cloud_event())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    gw.stop().await;
}

#[tokio::test]
async fn kafka_unreachable_is_503() {
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = free.local_addr().unwrap().port();
    drop(free);
    let kafka = KafkaConfig {
        ack_timeout: Duration::from_secs(1),
        ..KafkaConfig::new(format!("127.0.0.1:{port}"))
    };
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        open_log(dir.path()),
        ProxyConfig {
            file: Some(broker_api("kafka", "t", "kafka").to_string()),
            kafka: Some(Arc::new(KafkaPublisher::new(&kafka).unwrap())),
            ..ProxyConfig::default()
        },
    )
    .await;
    let started = std::time::Instant::now();
    let r = client()
        .post(format!("{}/fire", gw.inbound))
        .json(&cloud_event())
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        503,
        "no ack from an unreachable broker is not a 202"
    );
    assert_eq!(header(r.headers(), "retry-after"), "1");
    assert!(started.elapsed() < Duration::from_secs(4));
    gw.stop().await;
}

#[tokio::test]
async fn target_without_publisher_is_503() {
    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        open_log(dir.path()),
        ProxyConfig {
            file: Some(broker_api("kafka", "t", "kafka").to_string()),
            ..ProxyConfig::default()
        },
    )
    .await;
    let r = client()
        .post(format!("{}/fire", gw.inbound))
        .json(&cloud_event())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    gw.stop().await;
}

#[tokio::test]
async fn kafka_target_and_kafka_response() {
    let Some(brokers) = kafka_brokers() else {
        return;
    };
    use rdkafka::consumer::{Consumer, StreamConsumer};
    use rdkafka::message::{Header, OwnedHeaders};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::{ClientConfig, Message};

    let requests = unique("tidegate-proxy-req-");
    let responses = unique("tidegate-proxy-resp-");
    let kafka = KafkaConfig {
        ack_timeout: Duration::from_secs(10),
        ..KafkaConfig::new(brokers.clone())
    };
    // Create both topics up front: a broker need not auto-create them on produce.
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        let admin: AdminClient<rdkafka::client::DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .unwrap();
        let topics = [
            NewTopic::new(&requests, 1, TopicReplication::Fixed(1)),
            NewTopic::new(&responses, 1, TopicReplication::Fixed(1)),
        ];
        for r in admin
            .create_topics(&topics, &AdminOptions::new())
            .await
            .unwrap()
        {
            r.unwrap();
        }
    }
    let publisher = KafkaPublisher::new(&kafka).unwrap();
    for topic in [&requests, &responses] {
        let mut ok = false;
        for _ in 0..20 {
            if publisher
                .publish(topic, None, vec![], Bytes::from_static(b"{}"))
                .await
                .is_ok()
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
        assert!(ok, "could not produce to {topic}");
    }

    let dir = tempfile::tempdir().unwrap();
    let gw = gateway(
        open_log(dir.path()),
        ProxyConfig {
            file: Some(broker_api("kafka", &requests, "kafka").to_string()),
            kafka: Some(Arc::new(publisher)),
            timeouts: Timeouts {
                kafka_response: Duration::from_secs(20),
                ..Timeouts::default()
            },
            ..ProxyConfig::default()
        },
    )
    .await;
    let mut responses_config = KafkaResponsesConfig::new(kafka.clone());
    responses_config.topics = vec![responses.clone()];
    gw.proxy
        .spawn_kafka_responses(&responses_config, &gw.tasks, gw.shutdown.clone())
        .unwrap();

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .set("group.id", unique("tidegate-proxy-test-"))
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    consumer.subscribe(&[requests.as_str()]).unwrap();
    let c = client();

    let r = c
        .post(format!("{}/fire", gw.inbound))
        .json(&cloud_event())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let event = loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
        if v.get("specversion").is_some() {
            assert_eq!(
                msg.key(),
                Some(&b"k1"[..]),
                "rig.target_partition is the key"
            );
            break v;
        }
    };
    assert_eq!(event["rig"]["path"], "/fire");

    // response_from: kafka — the answer comes on the response topic, by rig-correlation.
    let inbound = gw.inbound.clone();
    let pending = tokio::spawn({
        let c = c.clone();
        async move {
            c.post(format!("{inbound}/ask/k"))
                .json(&cloud_event())
                .send()
                .await
                .unwrap()
        }
    });
    let correlation = loop {
        let msg = tokio::time::timeout(Duration::from_secs(20), consumer.recv())
            .await
            .unwrap()
            .unwrap();
        let v: Value = serde_json::from_slice(msg.payload().unwrap()).unwrap();
        if v["rig"]["path"] == "/asked/k" {
            break v["rig"]["correlation"].as_str().unwrap().to_owned();
        }
    };
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &brokers)
        .create()
        .unwrap();
    // The response consumer may still be joining its group: repeat until answered.
    let answer = async {
        loop {
            let headers = OwnedHeaders::new()
                .insert(Header {
                    key: "rig-correlation",
                    value: Some(correlation.as_str()),
                })
                .insert(Header {
                    key: "rig-response-code",
                    value: Some("200"),
                })
                .insert(Header {
                    key: "content-type",
                    value: Some("application/json"),
                });
            let _ = producer
                .send(
                    FutureRecord::<(), _>::to(&responses)
                        .payload(r#"{"via":"kafka"}"#)
                        .headers(headers),
                    Duration::from_secs(5),
                )
                .await;
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    let r = tokio::select! {
        r = pending => r.unwrap(),
        _ = answer => unreachable!(),
    };
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "content-type"), "application/json");
    assert_eq!(r.text().await.unwrap(), r#"{"via":"kafka"}"#);
    consumer.unsubscribe();
    gw.stop().await;
}
