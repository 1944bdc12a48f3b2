//! Sse end to end: the shared transport scenarios (see `common`), plus what only
//! this transport does.
mod common;

use tidegate_testkit::Kind;

const KIND: Kind = Kind::Sse;

#[tokio::test]
async fn handshake_subscribe_and_receive() {
    common::handshake_subscribe_and_receive(KIND).await;
}

#[tokio::test]
async fn constraint_filtering() {
    common::constraint_filtering(KIND).await;
}

#[tokio::test]
async fn jwt_inferred_via_query() {
    common::jwt_inferred(KIND, false).await;
}

#[tokio::test]
async fn jwt_inferred_via_bearer_header() {
    common::jwt_inferred(KIND, true).await;
}

#[tokio::test]
async fn jwt_inferred_merged_with_explicit() {
    common::jwt_inferred_merged_with_explicit(KIND).await;
}

#[tokio::test]
async fn put_replaces_subscriptions() {
    common::put_replaces_subscriptions(KIND).await;
}

/// The exact SSE framing: headers, gateway events without `id:`, stored events as
/// `event: <type>\nid: <cursor>\ndata: <json>\n\n` with `id` = `tidegatecursor`.
#[tokio::test]
async fn exact_frames_and_headers() {
    use serde_json::json;
    use tidegate_testkit::sse::{Sse, SseItem};
    use tidegate_testkit::{greeting, urlencode, GatewayBuilder, WAIT};

    let gw = GatewayBuilder::new().start().await;
    let subs = urlencode(&json!([{"eventType": "greeting"}]).to_string());
    let mut sse = Sse::connect(
        &gw.url(&format!("/_rig/v1/connection/sse?subscriptions={subs}")),
        &[],
    )
    .await
    .unwrap();
    assert_eq!(
        sse.headers["content-type"].to_str().unwrap(),
        "text/event-stream; charset=utf-8"
    );
    assert_eq!(sse.headers["cache-control"].to_str().unwrap(), "no-cache");

    let create = sse.next_event(WAIT).await.unwrap();
    assert_eq!(create.event, "rig.connection.create");
    assert_eq!(create.id, None);
    assert_eq!(
        create.raw,
        format!("event: rig.connection.create\ndata: {}\n\n", create.data)
    );
    let ev = create.json();
    assert_eq!(ev["source"], "rig");
    assert!(ev["id"].as_str().is_some_and(|s| !s.is_empty()));
    let set = sse.next_event(WAIT).await.unwrap();
    assert_eq!(set.event, "rig.subscriptions_set");
    assert_eq!(
        set.json()["data"],
        json!([{"eventType": "greeting", "oneOf": []}])
    );

    let ack = gw.publish(&greeting("john", "g-1")).await;
    let cursor = ack.cursor();
    let got = sse.next_item(WAIT).await.unwrap();
    let SseItem::Event(got) = got else {
        panic!("expected an event, got {got:?}")
    };
    assert_eq!(
        got.raw,
        format!("event: greeting\nid: {cursor}\ndata: {}\n\n", ack.body)
    );
}
