//! The `tidegate` binary: starts from a config file plus environment variables (RIG's
//! names and `TIDEGATE_*`), prints its listening line, serves, stops cleanly on
//! SIGTERM; refuses an invalid setting with a message naming it.
use serde_json::json;
use std::time::Duration;
use tidegate_testkit::process::{self, binary};
use tidegate_testkit::sse::Sse;
use tidegate_testkit::{greeting, http_client, jwt, urlencode};

fn bin() -> std::path::PathBuf {
    binary(env!("CARGO_BIN_EXE_tidegate"))
}

#[tokio::test]
async fn starts_from_file_and_env_and_serves() {
    let dir = tempfile::tempdir().unwrap();
    let log_dir = dir.path().join("log");
    let cfg = dir.path().join("tidegate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[inbound]\nhost = \"127.0.0.1\"\nport = 0\n\n[internal]\nport = 0\n\n[log]\ndir = {:?}\ndurability = \"buffered\"\n",
            log_dir.display().to_string()
        ),
    )
    .unwrap();
    let extractors = tidegate_testkit::gateway::GREETING_EXTRACTORS;
    let proc = process::spawn(
        &bin(),
        &["--config", cfg.to_str().unwrap()],
        &[
            ("JWT_SECRET_KEY", jwt::SECRET),
            ("EXTRACTORS", extractors),
            ("TIDEGATE_INTERNAL_TOKEN", "bin-token"),
            ("LOG_LEVEL", "warn"),
        ],
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert!(proc.inbound.ip().is_loopback() && proc.inbound.port() != 0);
    assert_ne!(proc.internal.port(), 0);
    assert!(
        log_dir.exists(),
        "the log directory of the config file is used"
    );

    let http = http_client();
    let health = http
        .get(format!("http://{}/health", proc.internal))
        .send()
        .await
        .unwrap();
    assert_eq!(health.text().await.unwrap(), "OK");

    // JWT_SECRET_KEY and EXTRACTORS apply: john's token infers john's greetings.
    let token = jwt::for_sub("john");
    let mut sse = Sse::connect(
        &format!(
            "http://{}/_rig/v1/connection/sse?jwt={}",
            proc.inbound,
            urlencode(&token)
        ),
        &[],
    )
    .await
    .unwrap();
    let wait = Duration::from_secs(10);
    sse.next_event(wait).await.unwrap();
    let set = sse.next_event(wait).await.unwrap();
    assert_eq!(
        set.json()["data"],
        json!([{"eventType": "greeting", "oneOf": [{"name": "john"}]}])
    );

    // TIDEGATE_INTERNAL_TOKEN applies.
    let url = format!("http://{}/v3/messages", proc.internal);
    let post = |token: &'static str, body: String| {
        http.post(&url)
            .bearer_auth(token)
            .header("content-type", "application/cloudevents+json")
            .body(body)
            .send()
    };
    let denied = post("wrong", greeting("john", "x").to_string())
        .await
        .unwrap();
    assert_eq!(denied.status().as_u16(), 401);
    post("bin-token", greeting("mike", "m-1").to_string())
        .await
        .unwrap();
    let ok = post("bin-token", greeting("john", "j-1").to_string())
        .await
        .unwrap();
    assert_eq!(ok.status().as_u16(), 202);
    let ack = ok.text().await.unwrap();
    assert_eq!(sse.next_event(wait).await.unwrap().data, ack);

    let code = proc.terminate(Duration::from_secs(15)).await.unwrap();
    assert_eq!(code, Some(0), "a clean shutdown on SIGTERM");
}

#[tokio::test]
async fn invalid_settings_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().to_str().unwrap();
    let out = process::run(
        &bin(),
        &[],
        &[("INBOUND_PORT", "abc"), ("TIDEGATE_LOG_DIR", log)],
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("INBOUND_PORT"), "{}", out.stderr);
    assert!(!out.stdout.contains("listening"), "{}", out.stdout);

    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[inbound]\nprot = 4000\n").unwrap();
    let out = process::run(
        &bin(),
        &["--config", cfg.to_str().unwrap()],
        &[("TIDEGATE_LOG_DIR", log)],
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("prot"), "{}", out.stderr);

    let out = process::run(
        &bin(),
        &[],
        &[
            ("TIDEGATE_LOG_DURABILITY", "sometimes"),
            ("TIDEGATE_LOG_DIR", log),
        ],
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_ne!(out.code, Some(0), "{out:?}");
    assert!(out.stderr.contains("log.durability"), "{}", out.stderr);
}
