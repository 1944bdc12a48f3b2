//! HS256 tokens signed with the secret the test gateways are configured with.
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

/// `jwt.secret_key` of every [`crate::GatewayBuilder`] gateway.
pub const SECRET: &str = "tidegate-e2e-secret-0123456789abcdef";

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Signs `claims` with `secret` (HS256).
pub fn sign_with(claims: &Value, secret: &str) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .expect("signing a JWT")
}

/// Signs `claims` with [`SECRET`].
pub fn sign(claims: &Value) -> String {
    sign_with(claims, SECRET)
}

/// A valid token for `sub`, expiring in an hour, with a fresh `jti`.
pub fn for_sub(sub: &str) -> String {
    sign(&json!({
        "sub": sub,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now(),
        "exp": now() + 3600,
    }))
}

/// A correctly signed token for `sub` that expired ten minutes ago.
pub fn expired(sub: &str) -> String {
    sign(&json!({
        "sub": sub,
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now() - 7200,
        "exp": now() - 600,
    }))
}

/// A well-formed token for `sub` signed with the wrong secret.
pub fn wrong_signature(sub: &str) -> String {
    sign_with(
        &json!({"sub": sub, "exp": now() + 3600}),
        "not-the-gateway-secret-at-all-000000",
    )
}
