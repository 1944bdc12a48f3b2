//! Heartbeats with `connections.heartbeat_secs = 1`: an idle SSE stream receives
//! `: heartbeat` comments, an idle WebSocket receives empty pings; events still flow.
use serde_json::json;
use std::time::{Duration, Instant};
use tidegate_testkit::sse::{Sse, SseItem};
use tidegate_testkit::ws::{Ws, WsItem};
use tidegate_testkit::{greeting, urlencode, GatewayBuilder};

fn subs() -> String {
    urlencode(&json!([{"eventType": "greeting"}]).to_string())
}

#[tokio::test]
async fn idle_sse_receives_heartbeat_comments() {
    let gw = GatewayBuilder::new().heartbeat_secs(1).start().await;
    let mut sse = Sse::connect(
        &gw.url(&format!("/_rig/v1/connection/sse?subscriptions={}", subs())),
        &[],
    )
    .await
    .unwrap();
    let wait = Duration::from_secs(3);
    assert_eq!(
        sse.next_event(wait).await.unwrap().event,
        "rig.connection.create"
    );
    assert_eq!(
        sse.next_event(wait).await.unwrap().event,
        "rig.subscriptions_set"
    );
    let started = Instant::now();
    for _ in 0..2 {
        assert_eq!(
            sse.next_item(wait).await.unwrap(),
            SseItem::Comment("heartbeat".into()),
            "only heartbeats on an idle stream"
        );
    }
    // Two heartbeats about a second apart, not a burst.
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "{:?}",
        started.elapsed()
    );
    let ack = gw.publish(&greeting("john", "g-1")).await;
    let e = sse.next_event(wait).await.unwrap();
    assert_eq!(e.data, ack.body);
}

#[tokio::test]
async fn idle_websocket_receives_pings() {
    let gw = GatewayBuilder::new().heartbeat_secs(1).start().await;
    let mut ws = Ws::connect(
        &gw.ws_url(&format!("/_rig/v1/connection/ws?subscriptions={}", subs())),
        &[],
    )
    .await
    .unwrap();
    let wait = Duration::from_secs(3);
    assert_eq!(
        ws.next_json(wait).await.unwrap()["type"],
        "rig.connection.create"
    );
    assert_eq!(
        ws.next_json(wait).await.unwrap()["type"],
        "rig.subscriptions_set"
    );
    for _ in 0..2 {
        assert_eq!(ws.next_item(wait).await.unwrap(), WsItem::Ping(Vec::new()));
    }
    let ack = gw.publish(&greeting("john", "g-1")).await;
    assert_eq!(ws.next_text(wait).await.unwrap(), ack.body);
}
