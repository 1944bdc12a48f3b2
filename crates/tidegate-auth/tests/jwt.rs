//! JWT verification with real keys and real crypto; JWKS from a file and
//! from a real HTTP server.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tidegate_auth::jwt::{Algorithm, ConfigError, JwtConfig, JwtError, KeySource, Verifier};

const SECRET: &[u8] = b"a-long-enough-test-secret-for-hmac";

fn secret(alg: Algorithm, kid: Option<&str>) -> KeySource {
    KeySource::Secret {
        alg,
        secret: SECRET.to_vec(),
        kid: kid.map(str::to_owned),
    }
}

#[test]
fn every_algorithm_verifies() {
    for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
        let verifier = verifier(vec![secret(alg, None)]);
        let claims = verifier.verify(&hs(alg, SECRET, &claims())).unwrap();
        assert_eq!(claims["sub"], "alice", "{alg:?}");
    }
    for alg in [
        Algorithm::RS256,
        Algorithm::RS384,
        Algorithm::RS512,
        Algorithm::PS256,
        Algorithm::PS384,
        Algorithm::PS512,
        Algorithm::ES256,
        Algorithm::ES384,
        Algorithm::EdDSA,
    ] {
        let verifier = verifier(vec![public_key(stem(alg), alg, None)]);
        let token = sign_with(stem(alg), alg, None, &claims());
        let claims = verifier
            .verify(&token)
            .unwrap_or_else(|e| panic!("{alg:?}: {e}"));
        assert_eq!(claims["jti"], "session-1", "{alg:?}");
    }
}

#[test]
fn wrong_key_is_401() {
    let verifier = verifier(vec![public_key("rsa", Algorithm::RS256, None)]);
    let token = sign_with("rsa2", Algorithm::RS256, None, &claims());
    let err = verifier.verify(&token).unwrap_err();
    assert_eq!(err, JwtError::InvalidSignature);
    assert_eq!(err.status(), 401);

    let verifier = verifier_hs();
    let err = verifier
        .verify(&hs(Algorithm::HS256, b"another-secret", &claims()))
        .unwrap_err();
    assert_eq!(err, JwtError::InvalidSignature);
}

fn verifier_hs() -> Verifier {
    verifier(vec![secret(Algorithm::HS256, None)])
}

#[test]
fn tampered_payload_is_refused() {
    let verifier = verifier_hs();
    let token = hs(Algorithm::HS256, SECRET, &claims());
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = URL_SAFE_NO_PAD.encode(r#"{"sub":"mallory"}"#);
    let err = verifier.verify(&parts.join(".")).unwrap_err();
    assert_eq!(err, JwtError::InvalidSignature);
}

#[test]
fn expiry_nbf_and_leeway() {
    let verifier = Verifier::new(JwtConfig {
        keys: vec![secret(Algorithm::HS256, None)],
        leeway: Duration::from_secs(30),
        ..JwtConfig::default()
    })
    .unwrap();
    let t = 1_000_000;
    let token = hs(Algorithm::HS256, SECRET, &json!({"exp": t}));
    assert!(verifier.verify_at(&token, t - 1).is_ok());
    assert!(verifier.verify_at(&token, t + 29).is_ok(), "within leeway");
    assert_eq!(verifier.verify_at(&token, t + 30), Err(JwtError::Expired));
    assert_eq!(JwtError::Expired.status(), 401);

    let token = hs(Algorithm::HS256, SECRET, &json!({"nbf": t}));
    assert!(verifier.verify_at(&token, t).is_ok());
    assert!(verifier.verify_at(&token, t - 30).is_ok(), "within leeway");
    assert_eq!(
        verifier.verify_at(&token, t - 31),
        Err(JwtError::NotYetValid)
    );

    // With the wall clock too.
    let expired = hs(Algorithm::HS256, SECRET, &json!({"exp": now() - 120}));
    assert_eq!(verifier.verify(&expired), Err(JwtError::Expired));

    let bad = hs(Algorithm::HS256, SECRET, &json!({"exp": "tomorrow"}));
    assert_eq!(verifier.verify(&bad), Err(JwtError::InvalidClaim("exp")));
}

#[test]
fn exp_is_optional_unless_required() {
    let token = hs(Algorithm::HS256, SECRET, &json!({"sub": "x"}));
    assert!(verifier_hs().verify(&token).is_ok(), "like RIG");
    let strict = Verifier::new(JwtConfig {
        keys: vec![secret(Algorithm::HS256, None)],
        require_exp: true,
        ..JwtConfig::default()
    })
    .unwrap();
    assert_eq!(strict.verify(&token), Err(JwtError::MissingExp));
}

#[test]
fn issuer_and_audience() {
    let verifier = Verifier::new(JwtConfig {
        keys: vec![secret(Algorithm::HS256, None)],
        issuers: vec!["https://idp.example".into()],
        audiences: vec!["tidegate".into(), "rig".into()],
        ..JwtConfig::default()
    })
    .unwrap();
    let ok = |claims: Value| verifier.verify(&hs(Algorithm::HS256, SECRET, &claims));
    assert!(ok(json!({"iss": "https://idp.example", "aud": "rig"})).is_ok());
    assert!(ok(json!({"iss": "https://idp.example", "aud": ["other", "tidegate"]})).is_ok());
    assert_eq!(
        ok(json!({"iss": "https://evil.example", "aud": "rig"})),
        Err(JwtError::WrongIssuer)
    );
    assert_eq!(ok(json!({"aud": "rig"})), Err(JwtError::WrongIssuer));
    assert_eq!(
        ok(json!({"iss": "https://idp.example", "aud": ["other"]})),
        Err(JwtError::WrongAudience)
    );
    assert_eq!(
        ok(json!({"iss": "https://idp.example"})),
        Err(JwtError::WrongAudience)
    );

    // Not configured: not checked, even when the token carries them.
    let lax = verifier_hs();
    let token = hs(
        Algorithm::HS256,
        SECRET,
        &json!({"iss": "anyone", "aud": "anything"}),
    );
    assert!(lax.verify(&token).is_ok());
}

#[test]
fn alg_none_is_refused() {
    let verifier = verifier_hs();
    for alg in ["none", "None", "NONE", "HS1", "RSA-OAEP"] {
        let header = URL_SAFE_NO_PAD.encode(format!(r#"{{"alg":"{alg}","typ":"JWT"}}"#));
        let payload = URL_SAFE_NO_PAD.encode(r#"{"sub":"admin"}"#);
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}.c2ln"),
        ] {
            let err = verifier.verify(&token).unwrap_err();
            assert_eq!(err, JwtError::UnsupportedAlgorithm(alg.into()));
            assert_eq!(err.status(), 401);
        }
    }
}

#[test]
fn algorithm_confusion_is_refused() {
    // The classic attack: sign HS256 with the *public* key's PEM bytes as the
    // HMAC secret, hoping the verifier feeds its RSA key to HMAC.
    let public_pem = pem("rsa_public.pem");
    let forged = hs(Algorithm::HS256, &public_pem, &claims());
    let verifier = verifier(vec![public_key("rsa", Algorithm::RS256, None)]);
    let err = verifier.verify(&forged).unwrap_err();
    assert_eq!(err, JwtError::NoKeyForAlgorithm("HS256"));
    assert_eq!(err.status(), 401);

    // Same through a JWKS: an RSA JWK never verifies HS*, even without `alg`.
    let mut jwk = jwk("rsa", Algorithm::RS256, "k1");
    jwk.as_object_mut().unwrap().remove("alg");
    let (verifier, _dir) = jwks_file_verifier(&jwks(&[jwk]));
    let forged = sign(
        Algorithm::HS256,
        Some("k1"),
        &jsonwebtoken::EncodingKey::from_secret(&public_pem),
        &claims(),
    );
    assert_eq!(
        verifier.verify(&forged),
        Err(JwtError::NoKeyForAlgorithm("HS256"))
    );
    // Without `alg`, the RSA JWK verifies the whole RSA family.
    let ps = sign_with("rsa", Algorithm::PS256, Some("k1"), &claims());
    assert!(verifier.verify(&ps).is_ok());

    // And the ES256 key does not verify an RS256 token either.
    let verifier = common::verifier(vec![public_key("ec256", Algorithm::ES256, None)]);
    let rs = sign_with("rsa", Algorithm::RS256, None, &claims());
    assert_eq!(
        verifier.verify(&rs),
        Err(JwtError::NoKeyForAlgorithm("RS256"))
    );
}

#[test]
fn config_refuses_confusable_keys() {
    let err = Verifier::new(JwtConfig {
        keys: vec![KeySource::PublicPem {
            alg: Algorithm::HS256,
            pem: pem("rsa_public.pem"),
            kid: None,
        }],
        ..JwtConfig::default()
    })
    .unwrap_err();
    assert!(
        matches!(err, ConfigError::KeyAlgorithmMismatch { .. }),
        "{err}"
    );

    let err = Verifier::new(JwtConfig {
        keys: vec![public_key("ec384", Algorithm::ES256, None)],
        ..JwtConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::InvalidKey { .. }), "{err}");

    let err = Verifier::new(JwtConfig {
        keys: vec![KeySource::PublicPem {
            alg: Algorithm::RS256,
            pem: pem("rsa_private.pem"),
            kid: None,
        }],
        ..JwtConfig::default()
    })
    .unwrap_err();
    assert!(err.to_string().contains("private key"), "{err}");

    let err = Verifier::new(JwtConfig {
        keys: vec![KeySource::PublicPem {
            alg: Algorithm::RS256,
            pem: b"not a pem".to_vec(),
            kid: None,
        }],
        ..JwtConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::InvalidKey { .. }), "{err}");
}

#[test]
fn kid_selects_the_key() {
    let verifier = verifier(vec![
        public_key("rsa", Algorithm::RS256, Some("one")),
        public_key("rsa2", Algorithm::RS256, Some("two")),
    ]);
    let one = sign_with("rsa", Algorithm::RS256, Some("one"), &claims());
    let two = sign_with("rsa2", Algorithm::RS256, Some("two"), &claims());
    assert!(verifier.verify(&one).is_ok());
    assert!(verifier.verify(&two).is_ok());

    // The right key under the wrong name is refused: kid pins the key.
    let swapped = sign_with("rsa", Algorithm::RS256, Some("two"), &claims());
    assert_eq!(verifier.verify(&swapped), Err(JwtError::InvalidSignature));

    let unknown = sign_with("rsa", Algorithm::RS256, Some("three"), &claims());
    let err = verifier.verify(&unknown).unwrap_err();
    assert_eq!(err, JwtError::UnknownKid("three".into()));
    assert_eq!(err.status(), 401);

    // Without a kid, every key of the algorithm is tried.
    let anonymous = sign_with("rsa2", Algorithm::RS256, None, &claims());
    assert!(verifier.verify(&anonymous).is_ok());
}

#[test]
fn kidless_keys_accept_any_kid() {
    // RIG's single JWT_SECRET_KEY has no kid; IdP tokens carry one anyway.
    let verifier = verifier(vec![public_key("rsa", Algorithm::RS256, None)]);
    let token = sign_with("rsa", Algorithm::RS256, Some("idp-key-7"), &claims());
    assert!(verifier.verify(&token).is_ok());
}

#[test]
fn multiple_keys_of_several_kinds() {
    let verifier = verifier(vec![
        secret(Algorithm::HS256, None),
        public_key("rsa", Algorithm::RS256, None),
        public_key("rsa2", Algorithm::RS256, None),
        public_key("ec256", Algorithm::ES256, None),
        public_key("ed25519", Algorithm::EdDSA, None),
    ]);
    assert_eq!(verifier.key_count(), 5);
    for token in [
        hs(Algorithm::HS256, SECRET, &claims()),
        sign_with("rsa", Algorithm::RS256, None, &claims()),
        sign_with("rsa2", Algorithm::RS256, None, &claims()),
        sign_with("ec256", Algorithm::ES256, None, &claims()),
        sign_with("ed25519", Algorithm::EdDSA, None, &claims()),
    ] {
        assert!(verifier.verify(&token).is_ok());
    }
    // A configured RS256 key does not verify RS512: the key pins its algorithm.
    let rs512 = sign_with("rsa", Algorithm::RS512, None, &claims());
    assert_eq!(
        verifier.verify(&rs512),
        Err(JwtError::NoKeyForAlgorithm("RS512"))
    );
}

#[test]
fn malformed_tokens_are_400() {
    let verifier = verifier_hs();
    let good = hs(Algorithm::HS256, SECRET, &claims());
    let parts: Vec<&str> = good.split('.').collect();
    let not_json = URL_SAFE_NO_PAD.encode("{not json");
    let array = URL_SAFE_NO_PAD.encode("[1,2]");
    let no_alg = URL_SAFE_NO_PAD.encode(r#"{"typ":"JWT"}"#);
    let cases = [
        String::new(),
        "abc".to_owned(),
        format!("{}.{}", parts[0], parts[1]),
        format!("{good}.extra"),
        "!!!.@@@.###".to_owned(),
        format!("{not_json}.{}.{}", parts[1], parts[2]),
        format!("{array}.{}.{}", parts[1], parts[2]),
        format!("{no_alg}.{}.{}", parts[1], parts[2]),
        format!("{}.{not_json}.{}", parts[0], parts[2]),
        format!("{}.{}.***", parts[0], parts[1]),
        "a".repeat(20_000),
    ];
    for token in cases {
        let err = verifier.verify(&token).unwrap_err();
        assert!(matches!(err, JwtError::Malformed(_)), "{token:.40}: {err}");
        assert_eq!(err.status(), 400);
    }
}

#[test]
fn no_keys_means_401() {
    let verifier = Verifier::new(JwtConfig::default()).unwrap();
    assert!(!verifier.is_configured());
    let token = hs(Algorithm::HS256, SECRET, &claims());
    assert_eq!(verifier.verify(&token), Err(JwtError::NoKeys));
}

#[test]
fn from_rig_hs256() {
    let config = JwtConfig::from_rig("mysecret", "HS256").unwrap();
    let verifier = Verifier::new(config).unwrap();
    assert!(verifier.is_configured());
    let token = hs(Algorithm::HS256, b"mysecret", &claims());
    assert_eq!(verifier.verify(&token).unwrap()["sub"], "alice");
    let rs = sign_with("rsa", Algorithm::RS256, None, &claims());
    assert_eq!(
        verifier.verify(&rs),
        Err(JwtError::NoKeyForAlgorithm("RS256"))
    );
}

#[test]
fn from_rig_rs256_inline_escaped_and_path() {
    let token = sign_with("rsa", Algorithm::RS256, None, &claims());
    let text = String::from_utf8(pem("rsa_public.pem")).unwrap();
    let escaped = text.trim_end().replace('\n', "\\n");
    let path = key_path("rsa_public.pem");
    for value in [text.as_str(), escaped.as_str(), path.to_str().unwrap()] {
        let verifier = Verifier::new(JwtConfig::from_rig(value, "RS256").unwrap()).unwrap();
        assert!(verifier.verify(&token).is_ok(), "{value:.30}");
        // The PEM bytes as an HMAC secret do not work.
        let forged = hs(Algorithm::HS256, text.as_bytes(), &claims());
        assert!(verifier.verify(&forged).is_err());
    }
    let err = JwtConfig::from_rig("/no/such/key.pem", "RS256").unwrap_err();
    assert!(matches!(err, ConfigError::ReadFile { .. }), "{err}");
}

// === JWKS ===

fn write_jwks(dir: &tempfile::TempDir, doc: &Value) -> std::path::PathBuf {
    let path = dir.path().join("jwks.json");
    std::fs::write(&path, serde_json::to_vec(doc).unwrap()).unwrap();
    path
}

fn jwks_file_verifier(doc: &Value) -> (Verifier, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_jwks(&dir, doc);
    let verifier = Verifier::new(JwtConfig {
        jwks_file: Some(path),
        ..JwtConfig::default()
    })
    .unwrap();
    (verifier, dir)
}

#[test]
fn jwks_file_all_key_types() {
    let oct =
        json!({"kty": "oct", "kid": "sym", "alg": "HS256", "k": URL_SAFE_NO_PAD.encode(SECRET)});
    let doc = jwks(&[
        jwk("rsa", Algorithm::RS256, "rsa"),
        jwk("ec256", Algorithm::ES256, "ec256"),
        jwk("ec384", Algorithm::ES384, "ec384"),
        jwk("ed25519", Algorithm::EdDSA, "ed"),
        oct,
        // Unusable entries are skipped, not fatal.
        json!({"kty": "RSA", "kid": "enc", "use": "enc", "n": "AQAB", "e": "AQAB"}),
        json!({"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"}),
        json!({"kty": "weird", "kid": "w"}),
    ]);
    let (verifier, _dir) = jwks_file_verifier(&doc);
    assert_eq!(verifier.key_count(), 5);
    for (stem, alg, kid) in [
        ("rsa", Algorithm::RS256, "rsa"),
        ("ec256", Algorithm::ES256, "ec256"),
        ("ec384", Algorithm::ES384, "ec384"),
        ("ed25519", Algorithm::EdDSA, "ed"),
    ] {
        let token = sign_with(stem, alg, Some(kid), &claims());
        assert!(verifier.verify(&token).is_ok(), "{alg:?}");
    }
    let token = sign(
        Algorithm::HS256,
        Some("sym"),
        &jsonwebtoken::EncodingKey::from_secret(SECRET),
        &claims(),
    );
    assert!(verifier.verify(&token).is_ok());
    // The JWK says RS256; RS512 with the same key is refused.
    let token = sign_with("rsa", Algorithm::RS512, Some("rsa"), &claims());
    assert_eq!(
        verifier.verify(&token),
        Err(JwtError::NoKeyForAlgorithm("RS512"))
    );
    let token = sign_with("rsa", Algorithm::RS256, Some("enc"), &claims());
    assert_eq!(
        verifier.verify(&token),
        Err(JwtError::UnknownKid("enc".into()))
    );
}

#[test]
fn jwks_file_errors_at_start() {
    let (dir, bad) = (tempfile::tempdir().unwrap(), json!({"nokeys": []}));
    let path = write_jwks(&dir, &bad);
    let err = Verifier::new(JwtConfig {
        jwks_file: Some(path),
        ..JwtConfig::default()
    })
    .unwrap_err();
    assert!(matches!(err, ConfigError::Jwks(_)), "{err}");
}

#[tokio::test]
async fn jwks_file_rotation_on_refresh() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_jwks(&dir, &jwks(&[jwk("rsa", Algorithm::RS256, "old")]));
    let verifier = Verifier::new(JwtConfig {
        jwks_file: Some(path.clone()),
        ..JwtConfig::default()
    })
    .unwrap();
    let old = sign_with("rsa", Algorithm::RS256, Some("old"), &claims());
    let new = sign_with("rsa2", Algorithm::RS256, Some("new"), &claims());
    assert!(verifier.verify(&old).is_ok());
    assert!(verifier.verify(&new).is_err());

    write_jwks(&dir, &jwks(&[jwk("rsa2", Algorithm::RS256, "new")]));
    assert_eq!(verifier.refresh().await.unwrap(), 1);
    assert!(verifier.verify(&new).is_ok());
    assert_eq!(
        verifier.verify(&old),
        Err(JwtError::UnknownKid("old".into()))
    );

    // A broken file keeps the previous keys.
    std::fs::write(&path, b"{ broken").unwrap();
    assert!(verifier.refresh().await.is_err());
    assert!(verifier.verify(&new).is_ok());
}

/// A JWKS endpoint whose document the test swaps, counting fetches.
struct JwksServer {
    url: String,
    doc: Arc<Mutex<(u16, Value)>>,
    hits: Arc<Mutex<usize>>,
}

async fn jwks_server(doc: Value) -> JwksServer {
    let state = Arc::new(Mutex::new((200u16, doc)));
    let hits = Arc::new(Mutex::new(0usize));
    let (s, h) = (state.clone(), hits.clone());
    let router = axum::Router::new().route(
        "/.well-known/jwks.json",
        get(move || {
            let (s, h) = (s.clone(), h.clone());
            async move {
                *h.lock() += 1;
                let (status, doc) = s.lock().clone();
                (
                    axum::http::StatusCode::from_u16(status).unwrap(),
                    axum::Json(doc),
                )
            }
        }),
    );
    let addr = serve(router).await;
    JwksServer {
        url: format!("http://{addr}/.well-known/jwks.json"),
        doc: state,
        hits,
    }
}

#[tokio::test]
async fn jwks_url_rotation() {
    let server = jwks_server(jwks(&[jwk("rsa", Algorithm::RS256, "k1")])).await;
    let verifier = Verifier::new(JwtConfig {
        jwks_url: Some(server.url.clone()),
        ..JwtConfig::default()
    })
    .unwrap();
    assert!(verifier.is_configured());
    let k1 = sign_with("rsa", Algorithm::RS256, Some("k1"), &claims());
    let k2 = sign_with("ec256", Algorithm::ES256, Some("k2"), &claims());
    assert_eq!(
        verifier.verify(&k1),
        Err(JwtError::NoKeys),
        "not fetched yet"
    );

    assert_eq!(verifier.refresh().await.unwrap(), 1);
    assert!(verifier.verify(&k1).is_ok());
    assert_eq!(verifier.verify(&k2), Err(JwtError::UnknownKid("k2".into())));

    // Rotation, step 1: the new key is published alongside the old one.
    server.doc.lock().1 = jwks(&[
        jwk("rsa", Algorithm::RS256, "k1"),
        jwk("ec256", Algorithm::ES256, "k2"),
    ]);
    assert_eq!(verifier.refresh().await.unwrap(), 2);
    assert!(verifier.verify(&k1).is_ok());
    assert!(verifier.verify(&k2).is_ok());

    // Step 2: the old key is withdrawn and refused at once.
    server.doc.lock().1 = jwks(&[jwk("ec256", Algorithm::ES256, "k2")]);
    assert_eq!(verifier.refresh().await.unwrap(), 1);
    assert_eq!(verifier.verify(&k1), Err(JwtError::UnknownKid("k1".into())));
    assert!(verifier.verify(&k2).is_ok());

    // An outage (500, or an empty set) keeps the last good keys.
    server.doc.lock().0 = 500;
    assert!(verifier.refresh().await.is_err());
    assert!(verifier.verify(&k2).is_ok());
    *server.doc.lock() = (200, jwks(&[]));
    assert!(verifier.refresh().await.is_err());
    assert!(verifier.verify(&k2).is_ok());
    assert_eq!(*server.hits.lock(), 5);
}

#[tokio::test]
async fn jwks_url_combines_with_configured_keys() {
    let server = jwks_server(jwks(&[jwk("rsa2", Algorithm::RS256, "remote")])).await;
    let verifier = Verifier::new(JwtConfig {
        keys: vec![secret(Algorithm::HS256, None)],
        jwks_url: Some(server.url.clone()),
        ..JwtConfig::default()
    })
    .unwrap();
    verifier.refresh().await.unwrap();
    assert!(verifier
        .verify(&hs(Algorithm::HS256, SECRET, &claims()))
        .is_ok());
    let remote = sign_with("rsa2", Algorithm::RS256, Some("remote"), &claims());
    assert!(verifier.verify(&remote).is_ok());
}

#[tokio::test]
async fn run_refresh_rotates_until_shutdown() {
    let server = jwks_server(jwks(&[jwk("rsa", Algorithm::RS256, "k1")])).await;
    let verifier = Arc::new(
        Verifier::new(JwtConfig {
            jwks_url: Some(server.url.clone()),
            jwks_refresh: Duration::from_millis(50),
            ..JwtConfig::default()
        })
        .unwrap(),
    );
    verifier.refresh().await.unwrap();
    let (stop, mut stopped) = tokio::sync::watch::channel(false);
    let task = tokio::spawn(Arc::clone(&verifier).run_refresh(async move {
        let _ = stopped.changed().await;
    }));

    server.doc.lock().1 = jwks(&[jwk("rsa2", Algorithm::RS256, "k2")]);
    let k2 = sign_with("rsa2", Algorithm::RS256, Some("k2"), &claims());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while verifier.verify(&k2).is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never refreshed");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let k1 = sign_with("rsa", Algorithm::RS256, Some("k1"), &claims());
    assert!(verifier.verify(&k1).is_err());

    stop.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(2), task)
        .await
        .unwrap()
        .unwrap();
}

#[test]
fn invalid_jwks_url_is_a_config_error() {
    for url in ["not a url", "ftp://idp/jwks"] {
        let err = Verifier::new(JwtConfig {
            jwks_url: Some(url.into()),
            ..JwtConfig::default()
        })
        .unwrap_err();
        assert!(matches!(err, ConfigError::InvalidJwksUrl(_)), "{err}");
    }
}
