//! Transient events (configured types, or the `tidegatetransient` extension) are
//! delivered live on every transport, carry no cursor, and are never stored: a
//! replay from the start and the history endpoint do not contain them.
use serde_json::json;
use std::time::Duration;

use tidegate_testkit::frontend::{Frontend, Kind, Opts};
use tidegate_testkit::gateway::{ce, GatewayBuilder};

const T: Duration = Duration::from_secs(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_events_are_live_only() {
    let gw = GatewayBuilder::new()
        .configure(|c| c.events.transient_types = vec!["typing".into()])
        .start()
        .await;
    let subs = json!([{ "eventType": "typing" }, { "eventType": "note" }]);
    let mut clients = Vec::new();
    for kind in [Kind::Sse, Kind::Ws, Kind::LongPolling] {
        clients.push(
            Frontend::connect(&gw, kind, &Opts::subs(subs.clone()))
                .await
                .expect("connect"),
        );
    }

    let typed = gw.publish(&ce("typing", "t1", json!({"who": "ann"}))).await;
    assert_eq!(typed.status, 202, "{}", typed.body);
    assert!(
        typed.json().get("tidegatecursor").is_none(),
        "a transient ack has no cursor"
    );
    let mut flagged = ce("note", "n1", json!({"text": "hi"}));
    flagged["tidegatetransient"] = json!(true);
    assert_eq!(gw.publish(&flagged).await.status, 202);
    let stored = gw
        .publish(&ce("note", "n2", json!({"text": "kept"})))
        .await
        .cursor();

    for c in &mut clients {
        let a = c.next_event(T).await.unwrap();
        let b = c.next_event(T).await.unwrap();
        let s = c.next_event(T).await.unwrap();
        assert_eq!(
            (a["id"].as_str(), b["id"].as_str(), s["id"].as_str()),
            (Some("t1"), Some("n1"), Some("n2"))
        );
        assert!(a.get("tidegatecursor").is_none() && b.get("tidegatecursor").is_none());
        assert_eq!(s["tidegatecursor"].as_str(), Some(stored.as_str()));
    }

    // Nothing transient was stored: a replay from the start has only n2.
    let mut replay = Frontend::connect(&gw, Kind::Sse, &Opts::subs(subs.clone()).resume("start"))
        .await
        .unwrap();
    let first = replay.next_event(T).await.unwrap();
    assert_eq!(first["id"], "n2");
    let history = reqwest::get(gw.url(&format!(
        "/_tidegate/v1/history?subscriptions={}",
        urlencode(&subs.to_string())
    )))
    .await
    .unwrap()
    .json::<serde_json::Value>()
    .await
    .unwrap();
    let ids: Vec<&str> = history["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["n2"]);
    assert_eq!(history["head"].as_str(), Some(stored.as_str()));
    gw.shutdown().await;
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
