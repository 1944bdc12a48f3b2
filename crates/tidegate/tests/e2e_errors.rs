//! Bad input: each case gets its exact status and a non-empty text reason, and the
//! gateway keeps working afterwards (health, and a live publish → receive round trip).
use serde_json::json;
use tidegate_testkit::frontend::Opts;
use tidegate_testkit::longpoll::LongPoll;
use tidegate_testkit::sse::Sse;
use tidegate_testkit::ws::Ws;
use tidegate_testkit::{ce, greeting, jwt, urlencode, Frontend, Gateway, GatewayBuilder, Kind};

/// Health endpoints answer and a fresh connection still receives a fresh event.
async fn still_healthy(gw: &Gateway) {
    gw.assert_healthy().await;
    let mut f = Frontend::connect(gw, Kind::Sse, &Opts::subs(json!([{"eventType": "probe"}])))
        .await
        .unwrap();
    let p = gw
        .publish(&ce("probe", &uuid_like(), json!({"ok": true})))
        .await;
    assert_eq!(f.take(1).await, vec![p.json()]);
}

fn uuid_like() -> String {
    format!("{:?}", std::time::Instant::now())
}

fn subs_q(v: &serde_json::Value) -> String {
    format!("subscriptions={}", urlencode(&v.to_string()))
}

/// Tries a connection on every transport; each must be refused with `status`.
/// Returns the SSE reason.
async fn refused_everywhere(
    gw: &Gateway,
    query: &str,
    headers: &[(&str, &str)],
    status: u16,
) -> String {
    let sse = Sse::connect(
        &gw.url(&format!("/_rig/v1/connection/sse?{query}")),
        headers,
    )
    .await
    .err()
    .expect("SSE connection must be refused");
    assert_eq!(sse.status, status, "SSE {query}: {}", sse.body);
    assert!(!sse.body.trim().is_empty(), "SSE {query}: empty reason");
    let ws = Ws::connect(
        &gw.ws_url(&format!("/_rig/v1/connection/ws?{query}")),
        headers,
    )
    .await
    .err()
    .expect("WebSocket upgrade must be refused");
    assert_eq!(ws.status, status, "WS {query}: {}", ws.body);
    assert!(!ws.body.trim().is_empty(), "WS {query}: empty reason");
    let mut lp = LongPoll::new(gw.url("/_rig/v1/connection/longpolling"));
    let r = lp.get(query, headers).await;
    assert_eq!(r.status, status, "LP {query}: {}", r.body);
    assert!(!r.body.trim().is_empty(), "LP {query}: empty reason");
    assert!(
        lp.cookie("connection_token").is_none(),
        "no session on refusal"
    );
    sse.body
}

#[tokio::test]
async fn bad_publishes() {
    let gw = GatewayBuilder::new()
        .configure(|c| {
            c.events.max_body_bytes = 64 << 10;
            c.events.max_event_bytes = 16 << 10;
        })
        .start()
        .await;
    let ct = "application/cloudevents+json";

    let r = gw.post_events(ct, r#"{"foo":"bar"}"#).await;
    assert!(r.assert_rejected(400).contains("CloudEvent"), "{}", r.body);

    let r = gw
        .post_events(ct, r#"{"specversion":"1.0","id":"x","source":"/s"}"#)
        .await;
    assert!(r.assert_rejected(400).contains("type"), "{}", r.body);
    let r = gw
        .post_events(ct, r#"{"specversion":"1.0","type":"t","source":"/s"}"#)
        .await;
    assert!(r.assert_rejected(400).contains("id"), "{}", r.body);

    let r = gw.post_events(ct, r#"{"specversion": "1.0", "id":"#).await;
    assert!(
        r.assert_rejected(400).to_lowercase().contains("json"),
        "{}",
        r.body
    );

    let r = gw
        .post_events("application/cloudevents-batch+json", r#"[]"#)
        .await;
    r.assert_rejected(400);
    let r = gw
        .post_events(
            "application/cloudevents-batch+json",
            json!([ce("t", "1", json!(1)), {"nope": true}]).to_string(),
        )
        .await;
    r.assert_rejected(400);

    // Binary mode with an unknown version.
    let r = gw
        .request(
            gw.http
                .post(gw.url("/_rig/v1/events"))
                .header("ce-specversion", "9.9")
                .header("ce-id", "x")
                .header("ce-source", "/s")
                .header("ce-type", "t")
                .header("content-type", "application/json")
                .body("{}"),
        )
        .await;
    r.assert_rejected(400);

    // Oversized: the body limit, and the single-event limit below it.
    let big = "x".repeat(100 << 10);
    let r = gw
        .post_events(ct, ce("t", "big", json!(big)).to_string())
        .await;
    r.assert_rejected(413);
    let r = gw
        .post_events(ct, ce("t", "big2", json!("y".repeat(20 << 10))).to_string())
        .await;
    assert!(r.assert_rejected(413).contains("limit"), "{}", r.body);

    // Unsupported content types.
    let r = gw.post_events("text/plain", "hello").await;
    r.assert_rejected(415);
    let r = gw.post_events("application/cloudevents+xml", "<e/>").await;
    r.assert_rejected(415);
    let r = gw
        .request(gw.http.post(gw.url("/_rig/v1/events")).body("{}"))
        .await;
    r.assert_rejected(415);

    // The internal port wants its token.
    let r = gw
        .request(
            gw.http
                .post(gw.internal_url("/v3/messages"))
                .header("content-type", ct)
                .body(ce("t", "1", json!(1)).to_string()),
        )
        .await;
    r.assert_rejected(401);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));

    still_healthy(&gw).await;
}

#[tokio::test]
async fn bad_connections() {
    let gw = GatewayBuilder::new().greeting_extractors().start().await;

    let r = gw
        .request(gw.http.get(gw.url("/_rig/v1/connection/foo")))
        .await;
    assert!(r.assert_rejected(400).contains("foo"), "{}", r.body);

    // JWTs: malformed 400; wrong signature and expired 401.
    let reason = refused_everywhere(&gw, "jwt=not-a-jwt", &[], 400).await;
    assert!(reason.contains("JWT"), "{reason}");
    let bad_sig = jwt::wrong_signature("john");
    refused_everywhere(&gw, &format!("jwt={bad_sig}"), &[], 401).await;
    let expired = jwt::expired("john");
    let reason = refused_everywhere(&gw, &format!("jwt={expired}"), &[], 401).await;
    assert!(reason.to_lowercase().contains("expired"), "{reason}");
    let header = format!("Bearer {expired}");
    refused_everywhere(&gw, "", &[("authorization", header.as_str())], 401).await;

    // Subscriptions.
    let reason = refused_everywhere(&gw, "subscriptions=%5B%7B", &[], 400).await;
    assert!(reason.contains("subscriptions"), "{reason}");
    refused_everywhere(&gw, &subs_q(&json!({"eventType": "greeting"})), &[], 400).await;
    refused_everywhere(&gw, &subs_q(&json!([{"oneOf": []}])), &[], 400).await;
    // A constraint on a field the extractor config does not declare for its type.
    let reason = refused_everywhere(
        &gw,
        &subs_q(&json!([{"eventType": "greeting", "oneOf": [{"age": 3}]}])),
        &[],
        400,
    )
    .await;
    assert!(reason.contains("age"), "{reason}");
    refused_everywhere(
        &gw,
        &subs_q(&json!([{"eventType": "chat", "oneOf": [{"name": "john"}]}])),
        &[],
        400,
    )
    .await;

    // Resume cursors: malformed, and from a different log epoch.
    let sse = Sse::connect(
        &gw.url("/_rig/v1/connection/sse"),
        &[("last-event-id", "%%%")],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(sse.status, 400, "{}", sse.body);
    assert!(sse.body.contains("Last-Event-ID"), "{}", sse.body);
    refused_everywhere(&gw, "lastEventId=not-a-cursor!", &[], 400).await;
    let foreign = {
        let other = GatewayBuilder::new().start().await;
        let c = other.publish(&ce("t", "1", json!(1))).await.cursor();
        other.shutdown().await;
        c
    };
    let reason = refused_everywhere(&gw, &format!("lastEventId={foreign}"), &[], 400).await;
    assert!(reason.contains("epoch"), "{reason}");
    let sse = Sse::connect(
        &gw.url("/_rig/v1/connection/sse"),
        &[("last-event-id", foreign.as_str())],
    )
    .await
    .err()
    .unwrap();
    assert_eq!(sse.status, 400, "{}", sse.body);
    // Long-poll: a foreign cursor in the cookie is refused and the cookie reset, so
    // the client is not stuck with it.
    let mut lp = LongPoll::new(gw.url("/_rig/v1/connection/longpolling"));
    lp.cookies.insert("last_event_id".into(), foreign.clone());
    let r = lp.get("", &[]).await;
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(lp.cookie("last_event_id").is_none(), "{:?}", r.set_cookies);
    let r = lp.get("", &[]).await;
    assert_eq!((r.status, r.body.as_str()), (200, "\"ok\""));

    still_healthy(&gw).await;
}

#[tokio::test]
async fn bad_subscription_changes() {
    let gw = GatewayBuilder::new().greeting_extractors().start().await;
    let mut f = Frontend::connect(
        &gw,
        Kind::Ws,
        &Opts::subs(json!([{"eventType": "greeting"}])),
    )
    .await
    .unwrap();
    let good = json!({"subscriptions": [{"eventType": "greeting"}]});

    let r = gw.put_subscriptions("foo", &f.token, &good).await;
    r.assert_rejected(400);
    let r = gw.put_subscriptions("ws", "no-such-token", &good).await;
    assert!(r.assert_rejected(400).contains("token"), "{}", r.body);
    // The token of a WebSocket connection used on the SSE path.
    let r = gw.put_subscriptions("sse", &f.token, &good).await;
    r.assert_rejected(400);
    let r = gw
        .put_subscriptions(
            "ws",
            &f.token,
            &json!({"subscriptions": [{"eventType": "greeting", "oneOf": [{"age": 1}]}]}),
        )
        .await;
    assert!(r.assert_rejected(400).contains("age"), "{}", r.body);
    let r = gw
        .request(
            gw.http
                .put(gw.url(&format!("/_rig/v1/connection/ws/{}/subscriptions", f.token)))
                .header("content-type", "application/json")
                .body("{not json"),
        )
        .await;
    r.assert_rejected(400);
    let r = gw
        .request(
            gw.http
                .put(gw.url(&format!("/_rig/v1/connection/ws/{}/subscriptions", f.token)))
                .header("content-type", "application/json")
                .bearer_auth(jwt::expired("john")),
        )
        .await;
    assert!(
        r.status == 401 || r.status == 400,
        "{} {}",
        r.status,
        r.body
    );
    assert!(!r.body.trim().is_empty());

    // None of that changed the connection: it still has its set.
    let p = gw.publish(&greeting("mike", "m-1")).await;
    assert_eq!(f.take(1).await, vec![p.json()]);

    // Once the connection is closed its token answers 410.
    let token = f.token.clone();
    f.close().await;
    let r = tidegate_testkit::eventually(
        tidegate_testkit::WAIT,
        "410 for a closed connection",
        || {
            let gw = &gw;
            let token = token.clone();
            let good = good.clone();
            async move {
                let r = gw.put_subscriptions("ws", &token, &good).await;
                (r.status != 204).then_some(r)
            }
        },
    )
    .await;
    assert!(
        r.assert_rejected(410).contains("no longer exists"),
        "{}",
        r.body
    );

    still_healthy(&gw).await;
}
