//! Splitting a compact JWS into its parts and reading its header and claims,
//! before any key is touched.
//!
//! We parse the header ourselves rather than through the library so that the
//! outcome is precise: a token that is not a JWT at all is *malformed* (400),
//! while a well-formed token with `alg: none` or an algorithm we do not
//! support is *unacceptable* (401).

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use super::{parse_algorithm, JwtError};

/// Longer tokens are refused before decoding: real ones are a few KiB, and
/// every byte past that is work an attacker chooses for us.
pub(crate) const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Attacker-chosen strings echoed in error reasons are cut to this length.
const MAX_ECHO: usize = 64;

pub(crate) struct Parsed<'a> {
    pub(crate) alg: Algorithm,
    pub(crate) kid: Option<String>,
    /// `header.payload`, the bytes the signature covers.
    pub(crate) signed: &'a str,
    pub(crate) signature: &'a str,
    pub(crate) claims: Map<String, Value>,
}

pub(crate) fn parse(token: &str) -> Result<Parsed<'_>, JwtError> {
    if token.is_empty() {
        return Err(JwtError::Malformed("the token is empty"));
    }
    if token.len() > MAX_TOKEN_LEN {
        return Err(JwtError::Malformed("the token is too long"));
    }
    let Some((signed, signature)) = token.rsplit_once('.') else {
        return Err(JwtError::Malformed(
            "a JWT has three parts separated by dots",
        ));
    };
    let Some((header, payload)) = signed.split_once('.') else {
        return Err(JwtError::Malformed(
            "a JWT has three parts separated by dots",
        ));
    };
    if payload.contains('.') {
        return Err(JwtError::Malformed(
            "a JWT has three parts separated by dots",
        ));
    }

    let header = decode_object(header, "header")?;
    let alg = match header.get("alg") {
        Some(Value::String(name)) => {
            parse_algorithm(name).ok_or_else(|| JwtError::UnsupportedAlgorithm(echo(name)))?
        }
        _ => return Err(JwtError::Malformed("the header has no \"alg\" string")),
    };
    // Why: RFC 7515 §4.1.11 — a recipient that does not understand a critical
    // extension must reject the token; we understand none.
    if header.contains_key("crit") {
        return Err(JwtError::UnsupportedCritical);
    }
    let kid = match header.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JwtError::Malformed("the header's \"kid\" is not a string")),
    };
    let claims = decode_object(payload, "payload")?;
    if URL_SAFE_NO_PAD.decode(signature).is_err() {
        return Err(JwtError::Malformed("the signature is not base64url"));
    }
    Ok(Parsed {
        alg,
        kid,
        signed,
        signature,
        claims,
    })
}

fn decode_object(part: &str, what: &'static str) -> Result<Map<String, Value>, JwtError> {
    let (not_base64, not_object) = match what {
        "header" => (
            "the header is not base64url",
            "the header is not a JSON object",
        ),
        _ => (
            "the payload is not base64url",
            "the payload is not a JSON object",
        ),
    };
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| JwtError::Malformed(not_base64))?;
    match serde_json::from_slice(&bytes) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(JwtError::Malformed(not_object)),
    }
}

pub(crate) fn echo(s: &str) -> String {
    s.chars().take(MAX_ECHO).collect()
}

/// A NumericDate (RFC 7519 §2): seconds since the epoch, integer or not.
pub(crate) fn numeric_date(value: &Value) -> Option<u64> {
    let number = value.as_number()?;
    if let Some(secs) = number.as_u64() {
        return Some(secs);
    }
    let secs = number.as_f64()?;
    if secs.is_finite() && secs >= 0.0 {
        // Truncation is intended: a fractional second never extends validity
        // by more than the leeway already does.
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        Some(secs as u64)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(s: &str) -> String {
        URL_SAFE_NO_PAD.encode(s)
    }

    #[test]
    fn three_parts_required() {
        for token in ["abc", "a.b", "a.b.c.d", "..."] {
            assert!(
                matches!(parse(token), Err(JwtError::Malformed(_))),
                "{token}"
            );
        }
    }

    #[test]
    fn none_is_unsupported_not_malformed() {
        let token = format!("{}.{}.", b64(r#"{"alg":"none"}"#), b64("{}"));
        assert_eq!(
            parse(&token).err(),
            Some(JwtError::UnsupportedAlgorithm("none".into()))
        );
    }

    #[test]
    fn kid_and_claims_are_read() {
        let token = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"RS256","kid":"k1"}"#),
            b64(r#"{"sub":"x"}"#)
        );
        let parsed = parse(&token).ok().unwrap();
        assert_eq!(parsed.alg, Algorithm::RS256);
        assert_eq!(parsed.kid.as_deref(), Some("k1"));
        assert_eq!(parsed.claims["sub"], "x");
        assert_eq!(parsed.signature, "c2ln");
    }

    #[test]
    fn crit_is_refused() {
        let token = format!(
            "{}.{}.c2ln",
            b64(r#"{"alg":"HS256","crit":["b64"],"b64":false}"#),
            b64("{}")
        );
        assert_eq!(parse(&token).err(), Some(JwtError::UnsupportedCritical));
    }

    #[test]
    fn numeric_dates() {
        assert_eq!(numeric_date(&serde_json::json!(10)), Some(10));
        assert_eq!(numeric_date(&serde_json::json!(10.9)), Some(10));
        assert_eq!(numeric_date(&serde_json::json!(-1)), None);
        assert_eq!(numeric_date(&serde_json::json!("10")), None);
    }
}
