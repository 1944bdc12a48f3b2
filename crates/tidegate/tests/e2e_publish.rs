//! Publishing over HTTP in every CloudEvents mode the gateway accepts, checked at the
//! producer (202 and the acknowledged JSON with its `tidegatecursor`) and at three
//! real subscribers (SSE, WebSocket, long-poll), plus idempotent publishing.
use serde_json::{json, Value};
use tidegate_testkit::frontend::Opts;
use tidegate_testkit::{ce, Frontend, Gateway, GatewayBuilder, Kind, Published};

const TYPES: [&str; 6] = [
    "fmt.v10",
    "fmt.bin",
    "fmt.text",
    "fmt.batch",
    "fmt.v01",
    "fmt.v02",
];

async fn subscribers(gw: &Gateway) -> Vec<Frontend> {
    let subs: Vec<Value> = TYPES.iter().map(|t| json!({"eventType": t})).collect();
    let mut out = Vec::new();
    for kind in Kind::ALL {
        out.push(
            Frontend::connect(gw, kind, &Opts::subs(Value::Array(subs.clone())))
                .await
                .unwrap(),
        );
    }
    out
}

fn assert_ack(p: &Published) -> Value {
    assert_eq!(p.status, 202, "{}", p.body);
    assert_eq!(
        p.header("content-type"),
        Some("application/json; charset=utf-8")
    );
    p.json()
}

/// The ack is the submitted JSON, byte for byte (attribute order kept), with
/// `tidegatecursor` appended.
fn assert_verbatim_plus_cursor(sent: &Value, p: &Published) {
    let sent = sent.to_string();
    let cursor = p.cursor();
    assert_eq!(
        p.body,
        format!(
            "{},\"tidegatecursor\":\"{cursor}\"}}",
            &sent[..sent.len() - 1]
        )
    );
}

#[tokio::test]
async fn every_mode_is_acknowledged_and_delivered_verbatim() {
    let gw = GatewayBuilder::new().start().await;
    let mut fronts = subscribers(&gw).await;
    let mut acks: Vec<Value> = Vec::new();

    // 1.0 structured.
    let v10 = ce("fmt.v10", "v10-1", json!({"n": 1}));
    let p = gw.publish(&v10).await;
    assert_verbatim_plus_cursor(&v10, &p);
    acks.push(assert_ack(&p));

    // Structured as plain application/json.
    let v10b = ce("fmt.v10", "v10-2", json!({"n": 2}));
    let p = gw.post_events("application/json", v10b.to_string()).await;
    assert_verbatim_plus_cursor(&v10b, &p);
    acks.push(assert_ack(&p));

    // Binary, JSON data.
    let p = gw
        .request(
            gw.http
                .post(gw.url("/_rig/v1/events"))
                .header("ce-specversion", "1.0")
                .header("ce-id", "bin-1")
                .header("ce-source", "/e2e/binary")
                .header("ce-type", "fmt.bin")
                .header("ce-subject", "a%20b")
                .header("content-type", "application/json")
                .body(r#"{"name":"bin"}"#),
        )
        .await;
    let ack = assert_ack(&p);
    assert_eq!(ack["specversion"], "1.0");
    assert_eq!(ack["id"], "bin-1");
    assert_eq!(ack["source"], "/e2e/binary");
    assert_eq!(ack["type"], "fmt.bin");
    assert_eq!(ack["subject"], "a b", "ce-* values are percent-decoded");
    assert_eq!(ack["datacontenttype"], "application/json");
    assert_eq!(ack["data"], json!({"name": "bin"}));
    acks.push(ack);

    // Binary, text data.
    let p = gw
        .request(
            gw.http
                .post(gw.url("/_rig/v1/events"))
                .header("ce-specversion", "1.0")
                .header("ce-id", "text-1")
                .header("ce-source", "/e2e/binary")
                .header("ce-type", "fmt.text")
                .header("content-type", "text/plain; charset=utf-8")
                .body("hello, text"),
        )
        .await;
    let ack = assert_ack(&p);
    assert_eq!(ack["data"], "hello, text");
    assert_eq!(ack["datacontenttype"], "text/plain; charset=utf-8");
    acks.push(ack);

    // Batch: one 202 with one ack per event, in order.
    let batch = json!([
        ce("fmt.batch", "batch-1", json!({"i": 1})),
        ce("fmt.batch", "batch-2", json!({"i": 2})),
        ce("fmt.batch", "batch-3", json!({"i": 3})),
    ]);
    let p = gw
        .post_events("application/cloudevents-batch+json", batch.to_string())
        .await;
    let ack = assert_ack(&p);
    let items = ack.as_array().expect("a batch ack is an array").clone();
    assert_eq!(items.len(), 3);
    let mut cursors = std::collections::HashSet::new();
    for (i, item) in items.iter().enumerate() {
        let mut without = item.clone();
        let c = without.as_object_mut().unwrap().remove("tidegatecursor");
        assert!(cursors.insert(c.expect("cursor").as_str().unwrap().to_string()));
        assert_eq!(without, batch[i]);
    }
    acks.extend(items);

    // 0.1 structured (RIG's demo pages): names are kept as sent.
    let v01 = json!({
        "cloudEventsVersion": "0.1",
        "eventType": "fmt.v01",
        "eventID": "v01-1",
        "source": "/e2e/legacy",
        "eventTime": "2022-08-12T10:11:12Z",
        "contentType": "application/json",
        "data": {"legacy": true}
    });
    let p = gw.publish(&v01).await;
    assert_verbatim_plus_cursor(&v01, &p);
    acks.push(assert_ack(&p));

    // 0.2 structured, through the internal port.
    let v02 = json!({
        "specversion": "0.2",
        "type": "fmt.v02",
        "id": "v02-1",
        "source": "/e2e/legacy",
        "data": {"v": "0.2"}
    });
    let p = gw.publish_internal(&v02).await;
    assert_verbatim_plus_cursor(&v02, &p);
    acks.push(assert_ack(&p));

    // Every subscriber receives exactly the acknowledged events, in order (the SSE
    // frontend also checks `event:` = type and `id:` = tidegatecursor per frame).
    for f in &mut fronts {
        assert_eq!(f.take(acks.len()).await, acks, "{:?}", f.kind);
    }
    // And nothing else: the next event is a barrier published now.
    let barrier = gw
        .publish(&ce("fmt.v10", "barrier", json!(null)))
        .await
        .json();
    for f in &mut fronts {
        assert_eq!(f.take(1).await, vec![barrier.clone()], "{:?}", f.kind);
    }
}

/// The same event (same source + id) from several concurrent producers is stored
/// once: every producer gets 202 with the same cursor, subscribers get it once.
#[tokio::test]
async fn concurrent_duplicates_are_stored_once() {
    let gw = std::sync::Arc::new(GatewayBuilder::new().start().await);
    let mut fronts = Vec::new();
    for kind in Kind::ALL {
        fronts.push(
            Frontend::connect(&gw, kind, &Opts::subs(json!([{"eventType": "dup"}])))
                .await
                .unwrap(),
        );
    }
    for round in 0..5 {
        let ev = ce("dup", &format!("same-{round}"), json!({"round": round}));
        let mut producers = Vec::new();
        for p in 0..6 {
            let gw = gw.clone();
            let ev = ev.clone();
            producers.push(tokio::spawn(async move {
                if p % 2 == 0 {
                    gw.publish(&ev).await
                } else {
                    gw.publish_internal(&ev).await
                }
            }));
        }
        let mut cursors = std::collections::HashSet::new();
        let mut first = None;
        for h in producers {
            let p = h.await.unwrap();
            cursors.insert(p.cursor());
            first.get_or_insert(p.json());
        }
        assert_eq!(cursors.len(), 1, "round {round}: {cursors:?}");
        // Same id, different source: a different event.
        let mut other = ev.clone();
        other["source"] = json!("/another/producer");
        let o = gw.publish(&other).await;
        assert!(!cursors.contains(&o.cursor()));
        for f in &mut fronts {
            assert_eq!(
                f.take(2).await,
                vec![first.clone().unwrap(), o.json()],
                "{:?} round {round}",
                f.kind
            );
        }
    }
    // A later sequential retry is still recognised (within the dedup window).
    let again = gw.publish(&ce("dup", "same-0", json!({"round": 0}))).await;
    let barrier = gw.publish(&ce("dup", "barrier", json!(null))).await;
    assert_ne!(again.cursor(), barrier.cursor());
    for f in &mut fronts {
        assert_eq!(f.take(1).await, vec![barrier.json()], "{:?}", f.kind);
    }
}
