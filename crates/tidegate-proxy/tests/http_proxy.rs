//! The HTTP reverse proxy against a real backend on port 0.
mod common;

use common::*;
use futures_util::StreamExt;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tidegate_proxy::{ProxyConfig, Timeouts};

fn endpoints() -> Value {
    json!([
        {"id": "echo-get", "method": "GET", "path_regex": "/api/echo(/.*)?", "path_replacement": "/echo\\1"},
        {"id": "echo-post", "method": "POST", "path_regex": "/api/echo"  , "path_replacement": "/echo", "transform_request_headers": true},
        {"id": "users", "method": "GET", "path": "/users/{uid}/posts/{pid}", "path_replacement": "/echo/posts/{pid}/by/{uid}"},
        {"id": "upload", "method": "POST", "path_regex": "/upload"},
        {"id": "big", "method": "GET", "path_regex": "/big"},
        {"id": "slow", "method": "GET", "path_regex": "/slow"},
        {"id": "secured", "method": "GET", "path_regex": "/secure/echo", "path_replacement": "/echo", "secured": true}
    ])
}

async fn setup(max_body: usize) -> (Arc<Backend>, Gateway, tempfile::TempDir) {
    let backend = backend().await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("proxy.json");
    std::fs::write(
        &file,
        json!([api("svc", backend.addr.port(), endpoints())]).to_string(),
    )
    .unwrap();
    let log = open_log(&dir.path().join("log"));
    let gw = gateway(
        log,
        ProxyConfig {
            file: Some(file.to_string_lossy().into_owned()),
            verifier: Some(verifier()),
            max_body,
            timeouts: Timeouts {
                recv: Duration::from_secs(1),
                ..Timeouts::default()
            },
            forwarded_by: Some("10.9.8.7".into()),
            ..ProxyConfig::default()
        },
    )
    .await;
    (backend, gw, dir)
}

#[tokio::test]
async fn get_and_post_with_rewrites_and_headers() {
    let (backend, gw, _dir) = setup(10 << 20).await;
    let c = client();

    let r = c
        .get(format!("{}/api/echo/a/b?x=1&y=two", gw.inbound))
        .header("x-forwarded-for", "6.6.6.6")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["path"], "/echo/a/b");
    assert_eq!(seen["query"], "x=1&y=two");
    let h = &seen["headers"];
    assert_eq!(h["host"], format!("127.0.0.1:{}", backend.addr.port()));
    assert_eq!(h["forwarded"], "for=127.0.0.1;by=10.9.8.7");
    assert_eq!(
        h["x-forwarded-for"], "127.0.0.1",
        "client-supplied value is replaced"
    );
    assert!(h["x-forwarded-host"]
        .as_str()
        .unwrap()
        .starts_with("127.0.0.1:"));
    assert!(
        h.get("x-hop").is_none(),
        "headers named in Connection are hop-by-hop"
    );
    assert!(h.get("x-added").is_none(), "no transform on this endpoint");

    let r = c
        .post(format!("{}/api/echo", gw.inbound))
        .header("content-type", "application/json")
        .body(r#"{"hello":"world"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["path"], "/echo");
    assert_eq!(seen["body"], r#"{"hello":"world"}"#);
    assert_eq!(seen["headers"]["x-added"], "by-gateway");
    assert_eq!(seen["headers"]["content-type"], "application/json");

    let seen: Value = c
        .get(format!("{}/users/7/posts/42", gw.inbound))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(seen["path"], "/echo/posts/42/by/7");

    // Unmatched: RIG's 404; the gateway's own routes still win.
    let r = c.get(format!("{}/nope", gw.inbound)).send().await.unwrap();
    assert_eq!(r.status(), 404);
    assert_eq!(r.text().await.unwrap(), r#"{"message":"Not Found"}"#);
    let r = c
        .delete(format!("{}/api/echo", gw.inbound))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "method must match too");
    let r = c
        .get(format!("{}/_rig/health", gw.inbound))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "own route");
    gw.stop().await;
}

#[tokio::test]
async fn bodies_stream_both_ways() {
    let (_backend, gw, _dir) = setup(64 << 20).await;
    let c = client();

    // A 16 MiB chunked upload, produced lazily.
    let chunks = futures_util::stream::iter(0..256u32)
        .map(|i| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![(i % 251) as u8; 64 * 1024])));
    let expected_sum: u64 = (0..256u32).map(|i| (i % 251) as u64 * 64 * 1024).sum();
    let r = c
        .post(format!("{}/upload", gw.inbound))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["bytes"], 256 * 64 * 1024);
    assert_eq!(seen["sum"], expected_sum);
    assert!(
        seen["chunks"].as_u64().unwrap() > 1,
        "arrived in pieces, not one buffer"
    );

    // A 4 MiB streamed download: the first bytes arrive before the backend finished.
    let r = c.get(format!("{}/big", gw.inbound)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(r.headers(), "x-backend"), "yes");
    let mut stream = r.bytes_stream();
    let mut total = 0usize;
    let mut pieces = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.unwrap();
        total += chunk.len();
        pieces += 1;
    }
    assert_eq!(total, 64 * 64 * 1024);
    assert!(pieces > 1);
    gw.stop().await;
}

#[tokio::test]
async fn body_limit_is_413() {
    let (_backend, gw, _dir) = setup(1024).await;
    let c = client();
    let r = c
        .post(format!("{}/upload", gw.inbound))
        .body(vec![1u8; 4096])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "declared length over the limit");
    let chunks = futures_util::stream::iter(0..8)
        .map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![1u8; 512])));
    let r = c
        .post(format!("{}/upload", gw.inbound))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413, "chunked body counted while streaming");
    gw.stop().await;
}

#[tokio::test]
async fn secured_endpoint_checks_jwt() {
    let (_backend, gw, _dir) = setup(1 << 20).await;
    let c = client();
    let url = format!("{}/secure/echo", gw.inbound);

    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(header(r.headers(), "access-control-allow-origin"), "*");
    assert_eq!(r.text().await.unwrap(), "Authentication failed.");

    let bad = token("some-other-secret-that-is-long-enough", 3600);
    let r = c.get(&url).bearer_auth(&bad).send().await.unwrap();
    assert_eq!(r.status(), 401, "wrong signature");
    let expired = token(SECRET, -3600);
    let r = c.get(&url).bearer_auth(&expired).send().await.unwrap();
    assert_eq!(r.status(), 401, "expired");
    let good = token(SECRET, 3600);
    let r = c
        .get(&url)
        .header("authorization", good.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401, "Authorization needs the Bearer scheme");

    let r = c.get(&url).bearer_auth(&good).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(
        seen["headers"]["authorization"],
        format!("Bearer {good}"),
        "the token is forwarded"
    );

    let r = c.get(format!("{url}?token={good}")).send().await.unwrap();
    assert_eq!(r.status(), 200, "token from the configured query parameter");
    let r = c
        .get(format!("{url}?token={bad},{good}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "any valid token of a comma-separated list");
    gw.stop().await;
}

#[tokio::test]
async fn backend_down_is_502_and_slow_is_504() {
    let (_backend, gw, _dir) = setup(1 << 20).await;
    let c = client();
    // A port nothing listens on.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_port = free.local_addr().unwrap().port();
    drop(free);
    let r = c
        .post(format!("{}/v3/apis", gw.internal))
        .json(&json!({
            "id": "dead", "name": "dead",
            "proxy": {"target_url": "127.0.0.1", "port": dead_port},
            "version_data": {"default": {"endpoints": [{"id": "d", "method": "GET", "path_regex": "/dead"}]}}
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let r = c.get(format!("{}/dead", gw.inbound)).send().await.unwrap();
    assert_eq!(r.status(), 502);
    assert_eq!(r.text().await.unwrap(), "Bad gateway.");

    let started = std::time::Instant::now();
    let r = c.get(format!("{}/slow", gw.inbound)).send().await.unwrap();
    assert_eq!(r.status(), 504);
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "PROXY_RECV_TIMEOUT (1 s) applies"
    );
    gw.stop().await;
}
