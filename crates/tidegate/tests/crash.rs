//! Crash safety of the publish path with real processes: publishers run against the
//! gateway binary while it is SIGKILLed at random moments, again and again. At the end
//! every acknowledged event must be in the log exactly once, at the position its `202`
//! named, in order; events that were never acknowledged may be there at most once.
use futures_util::StreamExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tidegate_testkit::process::{self, Process};

/// Starts the gateway binary on free ports over `dir`; returns it and its base URL.
async fn spawn(dir: &std::path::Path) -> (Process, String) {
    let bin = process::binary(env!("CARGO_BIN_EXE_tidegate"));
    let dir = dir.to_string_lossy();
    let env = [
        ("INBOUND_PORT", "0"),
        ("API_HTTP_PORT", "0"),
        ("TIDEGATE_INBOUND_HOST", "127.0.0.1"),
        ("TIDEGATE_LOG_DIR", dir.as_ref()),
        ("TIDEGATE_INTERNAL_TOKEN", "t"),
        ("MAX_CONNECTIONS_PER_MINUTE", "0"),
        ("LOG_LEVEL", "warn"),
    ];
    let p = process::spawn(&bin, &[], &env, Duration::from_secs(30))
        .await
        .expect("spawn gateway");
    let base = format!("http://{}", p.inbound);
    (p, base)
}

fn event(id: u64) -> String {
    format!(
        r#"{{"specversion":"1.0","id":"e{id}","source":"/crash","type":"crash","data":{{"n":{id}}}}}"#
    )
}

/// Reads SSE frames `(event type, id, data)` until `stop` returns true.
async fn read_sse(
    url: &str,
    mut stop: impl FnMut(&str, &str, &str) -> bool,
) -> Vec<(String, String, String)> {
    let resp = reqwest::get(url).await.expect("sse connect");
    assert_eq!(resp.status(), 200, "sse status");
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut frames = Vec::new();
    while let Some(chunk) = stream.next().await {
        buf.push_str(std::str::from_utf8(&chunk.expect("sse chunk")).expect("utf8"));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let (mut t, mut id, mut data) = (String::new(), String::new(), String::new());
            for l in frame.lines() {
                if let Some(v) = l.strip_prefix("event: ") {
                    t = v.into();
                } else if let Some(v) = l.strip_prefix("id: ") {
                    id = v.into();
                } else if let Some(v) = l.strip_prefix("data: ") {
                    data = v.into();
                }
            }
            if t.is_empty() {
                continue; // heartbeat comment
            }
            let done = stop(&t, &id, &data);
            frames.push((t, id, data));
            if done {
                return frames;
            }
        }
    }
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_sigkill() {
    let dir = tempfile::tempdir().expect("tempdir");
    let client = reqwest::Client::new();
    // id → cursor from the 202.
    let acked: Arc<Mutex<HashMap<u64, String>>> = Arc::default();
    let next_id = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let rounds = 8;
    for round in 0..rounds {
        let (mut gw, base) = spawn(dir.path()).await;
        let mut publishers = Vec::new();
        for _ in 0..4 {
            let (client, base, acked, next_id) =
                (client.clone(), base.clone(), acked.clone(), next_id.clone());
            publishers.push(tokio::spawn(async move {
                loop {
                    let id = next_id.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let res = client
                        .post(format!("{base}/_rig/v1/events"))
                        .header("content-type", "application/cloudevents+json")
                        .body(event(id))
                        .send()
                        .await;
                    let Ok(resp) = res else { return };
                    if resp.status() != 202 {
                        continue;
                    }
                    let Ok(body) = resp.json::<serde_json::Value>().await else {
                        return;
                    };
                    let cursor = body["tidegatecursor"]
                        .as_str()
                        .expect("cursor in ack")
                        .to_string();
                    acked.lock().unwrap().insert(id, cursor);
                }
            }));
        }
        // A kill somewhere between 150 and 650 ms into the run, varying per round.
        let pause = 150 + (round * 137 + 61) % 500;
        tokio::time::sleep(Duration::from_millis(pause)).await;
        // tokio's Child::kill is SIGKILL, then reaps.
        gw.child.kill().await.expect("SIGKILL");
        for p in publishers {
            let _ = tokio::time::timeout(Duration::from_secs(5), p).await;
        }
    }

    let (mut gw, base) = spawn(dir.path()).await;
    let marker = u64::MAX;
    let resp = client
        .post(format!("{base}/_rig/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .body(event(marker))
        .send()
        .await
        .expect("publish marker");
    assert_eq!(resp.status(), 202);
    let subs = "%5B%7B%22eventType%22%3A%22crash%22%7D%5D";
    let url = format!("{base}/_rig/v1/connection/sse?subscriptions={subs}&lastEventId=start");
    let marker_id = format!("e{marker}");
    let frames = tokio::time::timeout(
        Duration::from_secs(60),
        read_sse(&url, |t, _, data| {
            t == "crash" && data.contains(&format!("\"id\":\"{marker_id}\""))
        }),
    )
    .await
    .expect("replay finished in time");
    gw.child.kill().await.ok();

    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() > 100,
        "publishers made progress: {} acknowledged",
        acked.len()
    );
    let mut seen: HashMap<String, (usize, String)> = HashMap::new();
    let mut last_offset_cursor: Option<String> = None;
    let mut count = 0;
    for (t, id, data) in &frames {
        if t != "crash" {
            continue;
        }
        count += 1;
        let v: serde_json::Value = serde_json::from_str(data).expect("event json");
        let eid = v["id"].as_str().expect("id").to_string();
        assert_eq!(
            v["tidegatecursor"].as_str(),
            Some(id.as_str()),
            "SSE id is the cursor"
        );
        let entry = seen.entry(eid.clone()).or_insert((0, id.clone()));
        entry.0 += 1;
        assert_eq!(entry.0, 1, "event {eid} stored more than once");
        let offset = tidegate_core::Cursor::parse(id).expect("cursor").offsets[0];
        if let Some(prev) = &last_offset_cursor {
            let prev = tidegate_core::Cursor::parse(prev).expect("cursor").offsets[0];
            assert!(offset > prev, "replay in log order ({prev} then {offset})");
        }
        last_offset_cursor = Some(id.clone());
    }
    assert!(last_offset_cursor.is_some());
    for (id, cursor) in &acked {
        let (n, stored_cursor) = seen
            .get(&format!("e{id}"))
            .unwrap_or_else(|| panic!("acknowledged event e{id} lost"));
        assert_eq!(*n, 1);
        assert_eq!(stored_cursor, cursor, "event e{id} is where its 202 said");
    }
    eprintln!(
        "{rounds} kills, {} acknowledged, {count} stored and replayed in order",
        acked.len()
    );
}
