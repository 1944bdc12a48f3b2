//! A cursor older than retention yields an explicit `tidegate.events_lost` signal,
//! then every event that is still stored — never a silent gap.
use futures_util::StreamExt;
use std::time::Duration;

use tidegate::config::Config;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cursor_older_than_retention_gets_a_loss_event_then_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = Config::default();
    cfg.inbound.host = "127.0.0.1".into();
    cfg.inbound.port = 0;
    cfg.internal.port = 0;
    cfg.internal.token = Some("t".into());
    cfg.log.dir = dir.path().to_path_buf();
    cfg.log.durability = "buffered".into();
    cfg.log.segment_bytes = 8 << 10;
    cfg.log.retention_bytes = Some(24 << 10);
    cfg.connections.max_connections_per_minute = 0;
    cfg.log_level = "warn".into();
    let gw = tidegate::start(cfg, None).await.unwrap();
    let base = format!("http://{}", gw.inbound);
    let client = reqwest::Client::new();

    let mut cursors = Vec::new();
    for n in 0..300 {
        let ev = serde_json::json!({"specversion":"1.0","id":format!("r{n}"),"source":"/ret","type":"old","data":{"n":n,"pad":"p".repeat(400)}});
        let resp = client
            .post(format!("{base}/_rig/v1/events"))
            .header("content-type", "application/cloudevents+json")
            .body(ev.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 202);
        let body: serde_json::Value = resp.json().await.unwrap();
        cursors.push(body["tidegatecursor"].as_str().unwrap().to_string());
    }
    // Retention runs on the log's writer thread about once a second.
    let mut deleted = false;
    for _ in 0..50 {
        let text = client
            .get(format!("http://{}/metrics", gw.internal))
            .bearer_auth("t")
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if text
            .lines()
            .any(|l| l.starts_with("tidegate_log_retention_deletions_total") && !l.ends_with(" 0"))
        {
            deleted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(deleted, "retention deleted segments");

    let subs = "%5B%7B%22eventType%22%3A%22old%22%7D%5D";
    let url = format!(
        "{base}/_rig/v1/connection/sse?subscriptions={subs}&lastEventId={}",
        cursors[0]
    );
    let resp = client.get(url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut stream = resp.bytes_stream();
    let mut buf = String::new();
    let mut types = Vec::new();
    let mut ns = Vec::new();
    let mut lost = None;
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        while ns.last() != Some(&299) {
            let Some(Ok(chunk)) = stream.next().await else {
                break;
            };
            buf.push_str(std::str::from_utf8(&chunk).unwrap());
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let Some(t) = frame.lines().find_map(|l| l.strip_prefix("event: ")) else {
                    continue;
                };
                let data = frame
                    .lines()
                    .find_map(|l| l.strip_prefix("data: "))
                    .unwrap();
                let v: serde_json::Value = serde_json::from_str(data).unwrap();
                types.push(t.to_string());
                match t {
                    "tidegate.events_lost" => lost = Some(v),
                    "old" => ns.push(v["data"]["n"].as_u64().unwrap()),
                    _ => {}
                }
            }
        }
    })
    .await;
    assert!(read.is_ok(), "received {types:?}");
    assert_eq!(
        &types[..3],
        [
            "rig.connection.create",
            "rig.subscriptions_set",
            "tidegate.events_lost"
        ]
    );
    let lost = lost.unwrap();
    let first = ns[0];
    assert!(first > 1, "old events were deleted");
    assert_eq!(
        lost["data"]["lost_from_offset"], 1,
        "the loss starts right after the cursor"
    );
    assert_eq!(
        lost["data"]["lost_to_offset"].as_u64(),
        Some(first - 1),
        "and ends right before the first stored event"
    );
    assert_eq!(
        lost["data"]["first_available"].as_str(),
        Some(cursors[first as usize].as_str())
    );
    assert_eq!(
        ns,
        (first..300).collect::<Vec<_>>(),
        "everything still stored, in order, once"
    );
    gw.shutdown().await;
}
