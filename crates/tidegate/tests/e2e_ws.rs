//! Ws end to end: the shared transport scenarios (see `common`), plus what only
//! this transport does.
mod common;

use tidegate_testkit::Kind;

const KIND: Kind = Kind::Ws;

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

/// Every event is one text frame holding exactly the acknowledged event JSON.
#[tokio::test]
async fn text_frames_are_the_event_json() {
    use serde_json::json;
    use tidegate_testkit::ws::{Ws, WsItem};
    use tidegate_testkit::{greeting, urlencode, GatewayBuilder, WAIT};

    let gw = GatewayBuilder::new().start().await;
    let subs = urlencode(&json!([{"eventType": "greeting"}]).to_string());
    let mut ws = Ws::connect(
        &gw.ws_url(&format!("/_rig/v1/connection/ws?subscriptions={subs}")),
        &[],
    )
    .await
    .unwrap();
    let first: serde_json::Value =
        serde_json::from_str(&ws.next_text(WAIT).await.unwrap()).unwrap();
    assert_eq!(first["type"], "rig.connection.create");
    assert!(first.get("tidegatecursor").is_none());
    let second = ws.next_json(WAIT).await.unwrap();
    assert_eq!(second["type"], "rig.subscriptions_set");

    let ack = gw.publish(&greeting("john", "g-1")).await;
    assert_eq!(
        ws.next_item(WAIT).await.unwrap(),
        WsItem::Text(ack.body.clone())
    );
    // Client data is ignored: the endpoint is server-to-client, the connection stays.
    ws.send_text("hello").await.unwrap();
    let ack2 = gw.publish(&greeting("mike", "g-2")).await;
    assert_eq!(ws.next_text(WAIT).await.unwrap(), ack2.body);
}
