//! Scenarios every transport must pass, run by `e2e_sse.rs`, `e2e_ws.rs` and
//! `e2e_longpoll.rs` through [`Frontend`].
//!
//! "Nothing else" is asserted with barriers rather than sleeps: events are delivered
//! in log order, so when the event published last arrives next, every event published
//! before it that should have been filtered out was.
#![allow(dead_code)]

use serde_json::{json, Value};
use tidegate_testkit::frontend::Opts;
use tidegate_testkit::{ce, greeting, jwt, Frontend, GatewayBuilder, Kind};

pub fn john_only() -> Value {
    json!([{"eventType": "greeting", "oneOf": [{"name": "john"}]}])
}

/// Handshake, `subscriptions` query param, publishing on both ports, exact delivery.
pub async fn handshake_subscribe_and_receive(kind: Kind) {
    let gw = GatewayBuilder::new().start().await;
    let mut f = Frontend::connect(&gw, kind, &Opts::subs(json!([{"eventType": "greeting"}])))
        .await
        .unwrap();
    assert_eq!(
        f.subscriptions,
        json!([{"eventType": "greeting", "oneOf": []}])
    );

    let other = gw.publish(&ce("other", "o-1", json!({"x": 1}))).await;
    assert_eq!(other.status, 202, "{}", other.body);
    let a = gw.publish(&greeting("john", "g-1")).await;
    let b = gw.publish_internal(&greeting("mike", "g-2")).await;
    assert_eq!((a.status, b.status), (202, 202), "{} / {}", a.body, b.body);
    let got = f.take(2).await;
    assert_eq!(got, vec![a.json(), b.json()]);

    // Barrier: the non-matching event published first must not come before it.
    gw.publish(&ce("other", "o-2", json!({}))).await;
    let c = gw.publish(&greeting("frank", "g-3")).await;
    assert_eq!(f.take(1).await, vec![c.json()]);

    // A second connection gets its own token.
    let f2 = Frontend::connect(&gw, kind, &Opts::subs(json!([{"eventType": "greeting"}])))
        .await
        .unwrap();
    assert_ne!(f.token, f2.token);
}

/// Constraint filtering with the extractor config: john gets john's greetings only,
/// mike gets mike's.
pub async fn constraint_filtering(kind: Kind) {
    let gw = GatewayBuilder::new().greeting_extractors().start().await;
    let mut john = Frontend::connect(&gw, kind, &Opts::subs(john_only()))
        .await
        .unwrap();
    assert_eq!(john.subscriptions, john_only());
    let mut mike = Frontend::connect(
        &gw,
        kind,
        &Opts::subs(json!([{"eventType": "greeting", "oneOf": [{"name": "mike"}]}])),
    )
    .await
    .unwrap();

    let m1 = gw.publish(&greeting("mike", "m-1")).await;
    let j1 = gw.publish(&greeting("john", "j-1")).await;
    let m2 = gw.publish_internal(&greeting("mike", "m-2")).await;
    let j2 = gw.publish_internal(&greeting("john", "j-2")).await;
    assert_eq!(john.take(2).await, vec![j1.json(), j2.json()]);
    assert_eq!(mike.take(2).await, vec![m1.json(), m2.json()]);
}

/// A token with `sub=john` and no explicit subscription receives john's greetings only.
pub async fn jwt_inferred(kind: Kind, via_header: bool) {
    let gw = GatewayBuilder::new().greeting_extractors().start().await;
    let token = jwt::for_sub("john");
    let opts = if via_header {
        Opts::default().bearer(token)
    } else {
        Opts::default().jwt(token)
    };
    let mut f = Frontend::connect(&gw, kind, &opts).await.unwrap();
    assert_eq!(f.subscriptions, john_only());
    gw.publish(&greeting("mike", "m-1")).await;
    let j1 = gw.publish(&greeting("john", "j-1")).await;
    gw.publish(&greeting("mike", "m-2")).await;
    let j2 = gw.publish(&greeting("john", "j-2")).await;
    assert_eq!(f.take(2).await, vec![j1.json(), j2.json()]);
}

/// JWT-inferred subscriptions come first, then the explicit ones (RIG's order).
pub async fn jwt_inferred_merged_with_explicit(kind: Kind) {
    let gw = GatewayBuilder::new().greeting_extractors().start().await;
    let opts = Opts::subs(json!([{"eventType": "chat"}])).jwt(jwt::for_sub("john"));
    let mut f = Frontend::connect(&gw, kind, &opts).await.unwrap();
    assert_eq!(
        f.subscriptions,
        json!([
            {"eventType": "greeting", "oneOf": [{"name": "john"}]},
            {"eventType": "chat", "oneOf": []}
        ])
    );
    gw.publish(&greeting("mike", "m-1")).await;
    let c = gw.publish(&ce("chat", "c-1", json!({"text": "hi"}))).await;
    let j = gw.publish(&greeting("john", "j-1")).await;
    assert_eq!(f.take(2).await, vec![c.json(), j.json()]);
}

/// PUT replaces the whole set (204), the connection hears `rig.subscriptions_set`,
/// and the new set applies; RIG's snake-case keys are accepted.
pub async fn put_replaces_subscriptions(kind: Kind) {
    let gw = GatewayBuilder::new().greeting_extractors().start().await;
    let mut f = Frontend::connect(&gw, kind, &Opts::subs(john_only()))
        .await
        .unwrap();

    let mike = json!([{"eventType": "greeting", "oneOf": [{"name": "mike"}]}]);
    let r = gw
        .put_subscriptions(kind.as_str(), &f.token, &json!({"subscriptions": mike}))
        .await;
    assert_eq!((r.status, r.body.as_str()), (204, ""));
    let set = f.take(1).await.remove(0);
    assert_eq!(set["type"], "rig.subscriptions_set");
    assert_eq!(set["data"], mike);

    gw.publish(&greeting("john", "j-1")).await;
    let m1 = gw.publish(&greeting("mike", "m-1")).await;
    assert_eq!(f.take(1).await, vec![m1.json()]);

    let r = gw
        .put_subscriptions(
            kind.as_str(),
            &f.token,
            &json!({"subscriptions": [{"event_type": "greeting", "one_of": [{"name": "john"}]}, {"eventType": "chat"}]}),
        )
        .await;
    assert_eq!(r.status, 204, "{}", r.body);
    let set = f.take(1).await.remove(0);
    assert_eq!(
        set["data"],
        json!([
            {"eventType": "greeting", "oneOf": [{"name": "john"}]},
            {"eventType": "chat", "oneOf": []}
        ])
    );
    gw.publish(&greeting("mike", "m-2")).await;
    let j2 = gw.publish(&greeting("john", "j-2")).await;
    let c = gw.publish(&ce("chat", "c-1", json!({}))).await;
    assert_eq!(f.take(2).await, vec![j2.json(), c.json()]);
}
