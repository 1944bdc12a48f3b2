//! Shared test fixtures: the committed test key pairs, token minting, JWKs
//! built from the same keys, and a real HTTP server on 127.0.0.1:0.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};
use tidegate_auth::jwt::{Algorithm, JwtConfig, KeySource, Verifier};

pub fn key_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/keys")
        .join(name)
}

pub fn pem(name: &str) -> Vec<u8> {
    std::fs::read(key_path(name)).unwrap()
}

/// The key pair file stem for an asymmetric algorithm.
pub fn stem(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::ES256 => "ec256",
        Algorithm::ES384 => "ec384",
        Algorithm::EdDSA => "ed25519",
        _ => "rsa",
    }
}

pub fn encoding_key(stem: &str, alg: Algorithm) -> EncodingKey {
    let private = pem(&format!("{stem}_private.pem"));
    match alg {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&private).unwrap(),
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&private).unwrap(),
        _ => EncodingKey::from_rsa_pem(&private).unwrap(),
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn sign(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    encode(&header, claims, key).unwrap()
}

/// A token signed with the committed private key for `alg`.
pub fn sign_with(stem: &str, alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
    sign(alg, kid, &encoding_key(stem, alg), claims)
}

pub fn hs(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
    sign(alg, None, &EncodingKey::from_secret(secret), claims)
}

pub fn claims() -> Value {
    json!({"sub": "alice", "jti": "session-1", "exp": now() + 600})
}

pub fn public_key(stem: &str, alg: Algorithm, kid: Option<&str>) -> KeySource {
    KeySource::PublicPem {
        alg,
        pem: pem(&format!("{stem}_public.pem")),
        kid: kid.map(str::to_owned),
    }
}

pub fn verifier(keys: Vec<KeySource>) -> Verifier {
    Verifier::new(JwtConfig {
        keys,
        ..JwtConfig::default()
    })
    .unwrap()
}

/// The public JWK of a committed key pair, with a kid.
pub fn jwk(stem: &str, alg: Algorithm, kid: &str) -> Value {
    let mut value = if alg == Algorithm::EdDSA {
        // The library cannot derive Ed25519 JWKs; the raw public key is the
        // last 32 bytes of the SubjectPublicKeyInfo DER.
        let text = String::from_utf8(pem(&format!("{stem}_public.pem"))).unwrap();
        let body: String = text.lines().filter(|l| !l.starts_with("-----")).collect();
        let der = STANDARD.decode(body).unwrap();
        let x = URL_SAFE_NO_PAD.encode(&der[der.len() - 32..]);
        json!({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA"})
    } else {
        let jwk = Jwk::from_encoding_key(&encoding_key(stem, alg), alg).unwrap();
        serde_json::to_value(jwk).unwrap()
    };
    value["kid"] = json!(kid);
    value["use"] = json!("sig");
    value
}

pub fn jwks(keys: &[Value]) -> Value {
    json!({ "keys": keys })
}

/// Serves `router` on 127.0.0.1:0 for the rest of the test.
pub async fn serve(router: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    addr
}
