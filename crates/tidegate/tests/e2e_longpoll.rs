//! LongPolling end to end: the shared transport scenarios (see `common`), plus what only
//! this transport does.
mod common;

use tidegate_testkit::Kind;

const KIND: Kind = Kind::LongPolling;

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

/// RIG's cookie protocol: `"ok"` + cookies first, then the handshake events, then
/// `{"last_event_id":…,"events":[…]}` with the cookie following `last_event_id`; an
/// empty poll waits (`longpoll_wait_secs` = 1 here) and answers `events: []`.
#[tokio::test]
async fn cookie_protocol() {
    use serde_json::json;
    use tidegate_testkit::longpoll::LongPoll;
    use tidegate_testkit::{greeting, urlencode, GatewayBuilder};

    let gw = GatewayBuilder::new().start().await;
    let mut lp = LongPoll::new(gw.url("/_rig/v1/connection/longpolling"));
    let subs = urlencode(&json!([{"eventType": "greeting"}]).to_string());
    let first = lp.get(&format!("subscriptions={subs}"), &[]).await;
    assert_eq!((first.status, first.body.as_str()), (200, "\"ok\""));
    assert_eq!(
        first.headers["content-type"].to_str().unwrap(),
        "application/json; charset=utf-8"
    );
    assert_eq!(first.set_cookies.len(), 2, "{:?}", first.set_cookies);
    let token = lp.cookie("connection_token").unwrap().to_string();
    assert!(first
        .set_cookies
        .contains(&format!("connection_token={token}; Path=/; HttpOnly")));
    assert!(first
        .set_cookies
        .contains(&"last_event_id=first_event; Path=/; HttpOnly".to_string()));

    let b = lp.poll().await;
    let types: Vec<_> = b.events.iter().map(|e| e["type"].clone()).collect();
    assert_eq!(
        types,
        vec![
            json!("rig.connection.create"),
            json!("rig.subscriptions_set")
        ]
    );
    assert_eq!(b.events[0]["data"]["connection_token"], json!(token));
    assert_eq!(
        b.events[1]["data"],
        json!([{"eventType": "greeting", "oneOf": []}])
    );
    assert_eq!(b.last_event_id, "first_event");

    let a1 = gw.publish(&greeting("john", "g-1")).await;
    let a2 = gw.publish(&greeting("mike", "g-2")).await;
    let mut got = Vec::new();
    let mut last = String::new();
    while got.len() < 2 {
        let b = lp.poll().await;
        got.extend(b.events);
        last = b.last_event_id;
    }
    assert_eq!(got, vec![a1.json(), a2.json()]);
    assert_eq!(last, a2.cursor());
    assert_eq!(lp.cookie("last_event_id"), Some(last.as_str()));
    assert_eq!(lp.cookie("connection_token"), Some(token.as_str()));

    let started = std::time::Instant::now();
    let empty = lp.poll().await;
    assert!(empty.events.is_empty(), "{:?}", empty.events);
    assert_eq!(empty.last_event_id, last);
    assert!(started.elapsed() >= std::time::Duration::from_millis(900));
}
