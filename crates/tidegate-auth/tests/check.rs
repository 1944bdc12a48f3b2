//! Subscription/submission checks, with the external checker as a real HTTP
//! server on 127.0.0.1:0.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::*;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tidegate_auth::check::{Check, CheckError, Checker};
use tidegate_auth::jwt::{Algorithm, JwtConfig, JwtError, KeySource, Verifier};

const SECRET: &[u8] = b"check-test-secret";

fn hs_verifier() -> Verifier {
    Verifier::new(JwtConfig {
        keys: vec![KeySource::Secret {
            alg: Algorithm::HS256,
            secret: SECRET.to_vec(),
            kid: None,
        }],
        ..JwtConfig::default()
    })
    .unwrap()
}

fn checker(value: &str) -> Checker {
    Checker::new(value.parse().unwrap(), Duration::from_millis(300)).unwrap()
}

fn body() -> Value {
    json!({"subscriptions": [{"eventType": "greeting", "oneOf": [{"name": "john"}]}]})
}

#[tokio::test]
async fn no_check_allows_everything() {
    let checker = checker("no_check");
    assert_eq!(checker.check(), &Check::NoCheck);
    let verifier = hs_verifier();
    assert!(checker
        .authorize(&body(), None, &verifier, None)
        .await
        .is_ok());
    assert!(checker
        .authorize(&body(), Some("Bearer garbage"), &verifier, Some("garbage"))
        .await
        .is_ok());
}

#[tokio::test]
async fn jwt_validation_requires_a_valid_token() {
    let checker = checker("jwt_validation");
    let verifier = hs_verifier();
    let good = hs(Algorithm::HS256, SECRET, &claims());

    let err = checker
        .authorize(&body(), None, &verifier, None)
        .await
        .unwrap_err();
    assert_eq!(err, CheckError::MissingToken);
    assert_eq!(
        (err.status(), err.reason().as_str()),
        (401, "a valid JWT is required")
    );

    assert!(checker
        .authorize(&body(), None, &verifier, Some(&good))
        .await
        .is_ok());
    // From the Authorization header when no token was extracted.
    let header = format!("Bearer {good}");
    assert!(checker
        .authorize(&body(), Some(&header), &verifier, None)
        .await
        .is_ok());

    let forged = hs(Algorithm::HS256, b"wrong", &claims());
    let err = checker
        .authorize(&body(), None, &verifier, Some(&forged))
        .await
        .unwrap_err();
    assert_eq!(err, CheckError::InvalidToken(JwtError::InvalidSignature));
    assert_eq!(err.status(), 401);

    let err = checker
        .authorize(&body(), None, &verifier, Some("not-a-jwt"))
        .await
        .unwrap_err();
    assert_eq!(err.status(), 400);
}

/// What the external checker saw.
#[derive(Default, Clone)]
struct Seen {
    authorization: Option<String>,
    content_type: Option<String>,
    body: Option<Value>,
}

async fn external_checker() -> (String, Arc<Mutex<Vec<Seen>>>) {
    let seen: Arc<Mutex<Vec<Seen>>> = Arc::default();
    let record = |seen: Arc<Mutex<Vec<Seen>>>, headers: HeaderMap, body: String| {
        let header = |name: &str| {
            headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        seen.lock().push(Seen {
            authorization: header("authorization"),
            content_type: header("content-type"),
            body: serde_json::from_str(&body).ok(),
        });
    };
    let route = |status: StatusCode, reply: &'static str, delay: Duration| {
        let seen = seen.clone();
        post(move |headers: HeaderMap, body: String| {
            let seen = seen.clone();
            async move {
                record(seen, headers, body);
                tokio::time::sleep(delay).await;
                (status, reply)
            }
        })
    };
    let router = axum::Router::new()
        .route("/allow", route(StatusCode::OK, "", Duration::ZERO))
        .route("/created", route(StatusCode::CREATED, "", Duration::ZERO))
        .route(
            "/forbid",
            route(StatusCode::FORBIDDEN, "not your topic\n", Duration::ZERO),
        )
        .route(
            "/forbid-silent",
            route(StatusCode::FORBIDDEN, "", Duration::ZERO),
        )
        .route(
            "/unauth",
            route(StatusCode::UNAUTHORIZED, "log in", Duration::ZERO),
        )
        .route(
            "/error",
            route(StatusCode::INTERNAL_SERVER_ERROR, "boom", Duration::ZERO),
        )
        .route("/moved", route(StatusCode::FOUND, "", Duration::ZERO))
        .route("/slow", route(StatusCode::OK, "", Duration::from_secs(3)));
    let addr = serve(router).await;
    (format!("http://{addr}"), seen)
}

#[tokio::test]
async fn external_check_allows_on_2xx_and_receives_body_and_header() {
    let (base, seen) = external_checker().await;
    let verifier = hs_verifier();
    let checker = checker(&format!("{base}/allow"));
    assert!(matches!(checker.check(), Check::External(_)));
    checker
        .authorize(
            &body(),
            Some("Bearer abc.def.ghi"),
            &verifier,
            Some("abc.def.ghi"),
        )
        .await
        .unwrap();
    checker
        .authorize(&body(), None, &verifier, None)
        .await
        .unwrap();
    ask(&format!("{base}/created"), &verifier).await.unwrap();

    let seen = seen.lock().clone();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer abc.def.ghi"));
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!(seen[0].body, Some(body()));
    assert_eq!(seen[1].authorization, None);
    assert_eq!(seen[1].body, Some(body()));
}

async fn ask(url: &str, verifier: &Verifier) -> Result<(), CheckError> {
    checker_plain(url)
        .authorize(&body(), Some("Bearer x"), verifier, None)
        .await
}

fn checker_plain(url: &str) -> Checker {
    Checker::new(url.parse().unwrap(), Duration::from_millis(300)).unwrap()
}

#[tokio::test]
async fn external_check_replaces_local_validation() {
    // RIG #377: RIG validated the JWT locally as well, refusing tokens the
    // external service accepts. Here the service alone decides.
    let (base, seen) = external_checker().await;
    let verifier = hs_verifier();
    let foreign = hs(
        Algorithm::HS256,
        b"a key the gateway does not know",
        &claims(),
    );
    checker_plain(&format!("{base}/allow"))
        .authorize(&body(), None, &verifier, Some(&foreign))
        .await
        .unwrap();
    // A query-string token is forwarded as a bearer header.
    let expected = format!("Bearer {foreign}");
    assert_eq!(
        seen.lock()[0].authorization.as_deref(),
        Some(expected.as_str())
    );
}

#[tokio::test]
async fn external_check_denials() {
    let (base, _seen) = external_checker().await;
    let verifier = hs_verifier();

    let err = ask(&format!("{base}/forbid"), &verifier).await.unwrap_err();
    assert_eq!(err.status(), 403);
    assert_eq!(err.reason(), "not your topic");

    let err = ask(&format!("{base}/forbid-silent"), &verifier)
        .await
        .unwrap_err();
    assert_eq!(err.status(), 403);
    assert_eq!(err.reason(), "denied by the authorization service");

    let err = ask(&format!("{base}/unauth"), &verifier).await.unwrap_err();
    assert_eq!((err.status(), err.reason().as_str()), (401, "log in"));
}

#[tokio::test]
async fn external_check_failures_are_503() {
    let (base, _seen) = external_checker().await;
    let verifier = hs_verifier();

    for path in ["/error", "/moved", "/missing-route"] {
        let err = ask(&format!("{base}{path}"), &verifier).await.unwrap_err();
        assert_eq!(err.status(), 503, "{path}: {err}");
    }

    let started = std::time::Instant::now();
    let err = ask(&format!("{base}/slow"), &verifier).await.unwrap_err();
    assert_eq!(err.status(), 503);
    assert!(err.reason().contains("timed out"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2));

    // Nothing listens on this port any more.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}/check", listener.local_addr().unwrap());
    drop(listener);
    let err = ask(&dead, &verifier).await.unwrap_err();
    assert_eq!(err.status(), 503, "{err}");
}

#[test]
fn invalid_check_values_are_config_errors() {
    let err = "jwt_validaton".parse::<Check>().unwrap_err();
    assert!(err.to_string().contains("\"jwt_validaton\""), "{err}");
}
