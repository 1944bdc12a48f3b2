//! `/v3/apis` CRUD, persistence across re-opens, cluster propagation through the
//! log, and `http_async` responses via `/v3/responses`.
mod common;

use common::*;
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use tidegate_log::EventLog;
use tidegate_proxy::{ProxyConfig, Timeouts};

fn echo_api(id: &str, port: u16, path: &str) -> Value {
    json!({
        "id": id, "name": id,
        "proxy": {"target_url": "127.0.0.1", "port": port},
        "version_data": {"default": {"endpoints": [
            {"id": "e", "method": "GET", "path_regex": path, "path_replacement": "/echo"}
        ]}}
    })
}

#[tokio::test]
async fn crud_round_trip_and_persistence() {
    let backend = backend().await;
    let port = backend.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let c = client();
    let file_json = json!([echo_api("from-file", port, "/file")]).to_string();

    {
        let log = open_log(dir.path());
        let gw = gateway(
            log.clone(),
            ProxyConfig {
                file: Some(file_json.clone()),
                ..ProxyConfig::default()
            },
        )
        .await;
        let apis = format!("{}/v3/apis", gw.internal);

        let list: Vec<Value> = c.get(&apis).send().await.unwrap().json().await.unwrap();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0]["id"], "from-file");
        assert_eq!(list[0]["active"], true);
        assert_eq!(list[0]["auth_type"], "none");

        // Create → 201, duplicate → 409, invalid → 400 with RIG's error map.
        let r = c
            .post(&apis)
            .json(&echo_api("rt", port, "/rt"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.json::<Value>().await.unwrap(), json!({"message": "ok"}));
        let r = c
            .post(&apis)
            .json(&echo_api("rt", port, "/rt"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 409);
        assert_eq!(
            r.json::<Value>().await.unwrap()["message"],
            "API with id=rt already exists."
        );
        let mut broken = echo_api("broken", port, "/(");
        broken["version_data"]["default"]["endpoints"]
            .as_array_mut()
            .unwrap()
            .push(json!({"id": "k", "method": "POST", "path_regex": "/k", "target": "kafka"}));
        let r = c.post(&apis).json(&broken).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let errors: Value = r.json().await.unwrap();
        assert!(errors["broken/e"][0]["path_regex"]
            .as_str()
            .unwrap()
            .contains("invalid regex"));
        assert_eq!(errors["broken/k"][0]["topic"], "must be present");
        let r = c.post(&apis).body("{not json").send().await.unwrap();
        assert_eq!(r.status(), 400);

        // The new route works at once.
        let r = c.get(format!("{}/rt", gw.inbound)).send().await.unwrap();
        assert_eq!(r.status(), 200);

        // Get, update (merge), 404s.
        let got: Value = c
            .get(format!("{apis}/rt"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["ref_number"], 0);
        let r = c.get(format!("{apis}/missing")).send().await.unwrap();
        assert_eq!(r.status(), 404);
        assert_eq!(
            r.json::<Value>().await.unwrap()["message"],
            "API with id=missing doesn't exists."
        );
        let r = c
            .put(format!("{apis}/rt"))
            .json(&json!({"version_data": {"default": {"endpoints": [
                {"id": "e", "method": "GET", "path_regex": "/rt2", "path_replacement": "/echo"}
            ]}}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let got: Value = c
            .get(format!("{apis}/rt"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got["ref_number"], 1);
        assert_eq!(got["name"], "rt", "fields not in the update are kept");
        assert_eq!(
            c.get(format!("{}/rt", gw.inbound))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            c.get(format!("{}/rt2", gw.inbound))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        let r = c
            .put(format!("{apis}/missing"))
            .json(&echo_api("missing", port, "/m"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);

        // Deactivate a file API → 204; gone from list, get and routing.
        let r = c.delete(format!("{apis}/from-file")).send().await.unwrap();
        assert_eq!(r.status(), 204);
        assert_eq!(
            c.delete(format!("{apis}/from-file"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            c.get(format!("{apis}/from-file"))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        assert_eq!(
            c.get(format!("{}/file", gw.inbound))
                .send()
                .await
                .unwrap()
                .status(),
            404
        );
        gw.stop().await;
        log.close();
    }

    // Re-open on the same directory with the same file: runtime changes win.
    let log = open_log(dir.path());
    let gw = gateway(
        log.clone(),
        ProxyConfig {
            file: Some(file_json),
            ..ProxyConfig::default()
        },
    )
    .await;
    let list: Vec<Value> = c
        .get(format!("{}/v3/apis", gw.internal))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list.iter().map(|a| a["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["rt"], "from-file stays deactivated, rt survives");
    assert_eq!(list[0]["ref_number"], 1);
    assert_eq!(
        c.get(format!("{}/rt2", gw.inbound))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        c.get(format!("{}/file", gw.inbound))
            .send()
            .await
            .unwrap()
            .status(),
        404
    );

    // A deactivated API can be created again (RIG: replaced, 201).
    let r = c
        .post(format!("{}/v3/apis", gw.internal))
        .json(&echo_api("from-file", port, "/file"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(
        c.get(format!("{}/file", gw.inbound))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    gw.stop().await;
    log.close();
}

#[tokio::test]
async fn second_node_follows_changes() {
    let backend = backend().await;
    let port = backend.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let log = open_log(dir.path());
    let a = gateway(log.clone(), ProxyConfig::default()).await;
    let b = gateway(log.clone(), ProxyConfig::default()).await;
    let c = client();

    let r = c
        .post(format!("{}/v3/apis", a.internal))
        .json(&echo_api("shared", port, "/shared"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let r = c.get(format!("{}/shared", b.inbound)).send().await.unwrap();
        if r.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "node b never saw the new API"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // A change on b checks against the log, so it sees a's API: 409.
    let r = c
        .post(format!("{}/v3/apis", b.internal))
        .json(&echo_api("shared", port, "/shared"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    let r = c
        .delete(format!("{}/v3/apis/shared", b.internal))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while c
        .get(format!("{}/shared", a.inbound))
        .send()
        .await
        .unwrap()
        .status()
        != 404
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "node a never saw the deactivation"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(log.bounds("_apis").unwrap().next, 2);
    a.stop().await;
    b.stop().await;
}

#[tokio::test]
async fn http_async_round_trip_and_timeout() {
    let backend = backend().await;
    let port = backend.addr.port();
    let dir = tempfile::tempdir().unwrap();
    let config = json!([{
        "id": "async", "name": "async",
        "proxy": {"target_url": "127.0.0.1", "port": port},
        "version_data": {"default": {"endpoints": [
            {"id": "a", "method": "POST", "path_regex": "/async", "response_from": "http_async"},
            {"id": "c", "method": "POST", "path_regex": "/cached", "response_from": "http_async"}
        ]}}
    }]);
    let gw = gateway(
        open_log(dir.path()),
        ProxyConfig {
            file: Some(config.to_string()),
            timeouts: Timeouts {
                http_async_response: Duration::from_millis(800),
                ..Timeouts::default()
            },
            ..ProxyConfig::default()
        },
    )
    .await;
    let gw = Arc::new(gw);
    let c = client();

    // Backend answers 202 → wait; the response comes through /v3/responses.
    let inbound = gw.inbound.clone();
    let pending = tokio::spawn({
        let c = c.clone();
        async move {
            c.post(format!("{inbound}/async"))
                .body("req")
                .send()
                .await
                .unwrap()
        }
    });
    let id = tokio::time::timeout(
        Duration::from_secs(5),
        backend.async_ids.lock().await.recv(),
    )
    .await
    .unwrap()
    .unwrap();
    assert!(!id.is_empty());
    let r = c
        .post(format!("{}/v3/responses", gw.internal))
        .header("rig-correlation", &id)
        .header("rig-response-code", "201")
        .header("content-type", "application/json")
        .body(r#"{"done":true}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = pending.await.unwrap();
    assert_eq!(r.status(), 201);
    assert_eq!(header(r.headers(), "content-type"), "application/json");
    assert_eq!(r.text().await.unwrap(), r#"{"done":true}"#);
    assert!(gw.proxy.correlations().is_empty());

    // The same id again: nobody waits any more.
    let r = c
        .post(format!("{}/v3/responses", gw.internal))
        .header("rig-correlation", &id)
        .header("rig-response-code", "200")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = c
        .post(format!("{}/v3/responses", gw.internal))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);

    // No response in time → 504.
    let started = std::time::Instant::now();
    let r = c
        .post(format!("{}/async", gw.inbound))
        .body("req")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() >= Duration::from_millis(700));
    let _ = backend.async_ids.lock().await.recv().await;
    assert!(
        gw.proxy.correlations().is_empty(),
        "timed-out waiter removed"
    );

    // A backend answering other than 202 answers directly (RIG: cached responses).
    let r = c
        .post(format!("{}/cached", gw.inbound))
        .body("req")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "from cache");

    match Arc::try_unwrap(gw) {
        Ok(gw) => gw.stop().await,
        Err(_) => panic!("gateway still shared"),
    }
}

#[tokio::test]
async fn waiters_are_bounded() {
    let backend = backend().await;
    let dir = tempfile::tempdir().unwrap();
    let config = json!([{
        "id": "async", "name": "async",
        "proxy": {"target_url": "127.0.0.1", "port": backend.addr.port()},
        "version_data": {"default": {"endpoints": [
            {"id": "a", "method": "POST", "path_regex": "/async", "response_from": "http_async"}
        ]}}
    }]);
    let gw = gateway(
        open_log(dir.path()),
        ProxyConfig {
            file: Some(config.to_string()),
            max_waiters: 1,
            ..ProxyConfig::default()
        },
    )
    .await;
    let c = client();
    let inbound = gw.inbound.clone();
    let first = tokio::spawn({
        let c = c.clone();
        async move {
            c.post(format!("{inbound}/async"))
                .send()
                .await
                .unwrap()
                .status()
        }
    });
    let id = backend.async_ids.lock().await.recv().await.unwrap();
    let r = c
        .post(format!("{}/async", gw.inbound))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);
    assert_eq!(header(r.headers(), "retry-after"), "1");
    c.post(format!("{}/v3/responses", gw.internal))
        .header("rig-correlation", id)
        .header("rig-response-code", "200")
        .send()
        .await
        .unwrap();
    assert_eq!(first.await.unwrap(), 200);
    gw.stop().await;
}
