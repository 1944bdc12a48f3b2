//! Turning configured key material (secrets, PEM public keys, JSON Web Key
//! Sets) into verification keys, each bound to the algorithms it may verify.
//!
//! The binding is the defence against algorithm confusion: a secret only ever
//! verifies `HS*`, an RSA key only `RS*`/`PS*`, an EC key only the one `ES*`
//! of its curve, an Ed25519 key only `EdDSA`. The token header chooses the
//! algorithm, but it can only choose among the keys that allow it.

use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use super::{alg_name, ConfigError, JwksError, KeySource};

const HMAC: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];
const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// One verification key and the algorithms it is allowed to verify.
pub(crate) struct Key {
    pub(crate) kid: Option<String>,
    pub(crate) algs: Vec<Algorithm>,
    pub(crate) decoding: DecodingKey,
}

impl Key {
    pub(crate) fn allows(&self, alg: Algorithm) -> bool {
        self.algs.contains(&alg)
    }
}

/// The keys in force at one moment; replaced as a whole on refresh.
#[derive(Default)]
pub(crate) struct KeySet {
    pub(crate) keys: Vec<Arc<Key>>,
}

pub(crate) fn is_hmac(alg: Algorithm) -> bool {
    HMAC.contains(&alg)
}

/// Loads one configured key, refusing combinations that would open the door
/// to algorithm confusion (a PEM for `HS*`, a secret for `RS*`).
pub(crate) fn from_source(source: &KeySource) -> Result<Key, ConfigError> {
    match source {
        KeySource::Secret { alg, secret, kid } => {
            if !is_hmac(*alg) {
                return Err(ConfigError::KeyAlgorithmMismatch {
                    alg: alg_name(*alg),
                    expected: "a PEM public key, not a shared secret",
                });
            }
            if secret.is_empty() {
                return Err(ConfigError::EmptySecret);
            }
            Ok(Key {
                kid: kid.clone(),
                algs: vec![*alg],
                decoding: DecodingKey::from_secret(secret),
            })
        }
        KeySource::PublicPem { alg, pem, kid } => {
            let invalid = |reason: String| ConfigError::InvalidKey {
                alg: alg_name(*alg),
                reason,
            };
            if is_hmac(*alg) {
                return Err(ConfigError::KeyAlgorithmMismatch {
                    alg: alg_name(*alg),
                    expected: "a shared secret, not a PEM public key",
                });
            }
            // Why: a private key here is a deployment mistake (and a leak); the
            // library would accept its bytes and then never verify anything.
            if String::from_utf8_lossy(pem).contains("PRIVATE KEY") {
                return Err(invalid(
                    "expected a public key but got a private key".to_owned(),
                ));
            }
            let decoding = match alg {
                Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem),
                Algorithm::EdDSA => DecodingKey::from_ed_pem(pem),
                _ => DecodingKey::from_rsa_pem(pem),
            }
            .map_err(|e| invalid(e.to_string()))?;
            check_point_size(*alg, decoding.as_bytes_checked())
                .map_err(|r| invalid(r.to_owned()))?;
            Ok(Key {
                kid: kid.clone(),
                algs: vec![*alg],
                decoding,
            })
        }
    }
}

/// EC and Ed keys are raw points; their size tells the curve. Why check: the
/// library only notices a P-384 key configured as ES256 when a token arrives,
/// and then every token fails with a misleading "invalid signature".
fn check_point_size(alg: Algorithm, point: &[u8]) -> Result<(), &'static str> {
    let ok = match alg {
        Algorithm::ES256 => matches!(point.len(), 33 | 65),
        Algorithm::ES384 => matches!(point.len(), 49 | 97),
        Algorithm::EdDSA => point.len() == 32,
        _ => true,
    };
    if ok {
        Ok(())
    } else {
        Err("the key's curve does not match the algorithm")
    }
}

/// Parses a JSON Web Key Set. Keys this gateway cannot use (encryption keys,
/// unsupported curves, unknown `kty`) are skipped with a warning rather than
/// failing the whole set, so one exotic key published by an IdP does not lock
/// out every user. A set with no usable key at all is an error, and the caller
/// keeps the previous set: an IdP rotates by publishing a new key, never by
/// publishing none, so an empty answer is far more likely an outage.
pub(crate) fn from_jwks(bytes: &[u8]) -> Result<Vec<Arc<Key>>, JwksError> {
    let doc: Value =
        serde_json::from_slice(bytes).map_err(|e| JwksError::Invalid(format!("not JSON: {e}")))?;
    let entries = doc
        .get("keys")
        .and_then(Value::as_array)
        .ok_or_else(|| JwksError::Invalid("no \"keys\" array".to_owned()))?;
    let mut keys = Vec::with_capacity(entries.len());
    for (index, entry) in entries.iter().enumerate() {
        match from_jwk(entry) {
            Ok(key) => keys.push(Arc::new(key)),
            Err(reason) => {
                let kid = entry.get("kid").and_then(Value::as_str).unwrap_or("");
                tracing::warn!(index, kid, reason, "Skipping unusable JWKS key");
            }
        }
    }
    if keys.is_empty() {
        return Err(JwksError::Invalid("no usable key in the set".to_owned()));
    }
    Ok(keys)
}

fn from_jwk(entry: &Value) -> Result<Key, String> {
    let jwk: Jwk =
        serde_json::from_value(entry.clone()).map_err(|e| format!("unsupported key: {e}"))?;
    if let Some(usage) = &jwk.common.public_key_use {
        if *usage != PublicKeyUse::Signature {
            return Err("key is not meant for signatures (use != sig)".to_owned());
        }
    }
    let bad = |e: jsonwebtoken::errors::Error| format!("invalid key material: {e}");
    let (family, decoding): (&[Algorithm], DecodingKey) = match &jwk.algorithm {
        AlgorithmParameters::RSA(p) => (
            RSA,
            DecodingKey::from_rsa_components(&p.n, &p.e).map_err(bad)?,
        ),
        AlgorithmParameters::EllipticCurve(p) => {
            let family: &[Algorithm] = match p.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => return Err("unsupported EC curve".to_owned()),
            };
            (
                family,
                DecodingKey::from_ec_components(&p.x, &p.y).map_err(bad)?,
            )
        }
        AlgorithmParameters::OctetKeyPair(p) => {
            if p.curve != EllipticCurve::Ed25519 {
                return Err("unsupported OKP curve".to_owned());
            }
            (
                &[Algorithm::EdDSA],
                DecodingKey::from_ed_components(&p.x).map_err(bad)?,
            )
        }
        AlgorithmParameters::OctetKey(_) => (HMAC, DecodingKey::from_jwk(&jwk).map_err(bad)?),
    };
    if let Some(&alg) = family.first() {
        check_point_size(alg, decoding.as_bytes_checked()).map_err(str::to_owned)?;
        if is_hmac(alg) && decoding.as_bytes_checked().is_empty() {
            return Err("empty symmetric key".to_owned());
        }
    }
    // Why intersect: a JWK saying `"kty":"RSA","alg":"HS256"` must not turn an
    // RSA public key into an HMAC secret.
    let algs = match jwk.common.key_algorithm {
        None => family.to_vec(),
        Some(declared) => match key_algorithm(declared) {
            Some(alg) if family.contains(&alg) => vec![alg],
            Some(_) => return Err("alg does not match the key type".to_owned()),
            None => return Err("alg is not a supported signature algorithm".to_owned()),
        },
    };
    Ok(Key {
        kid: jwk.common.key_id.clone(),
        algs,
        decoding,
    })
}

fn key_algorithm(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

/// `DecodingKey::as_bytes` panics for RSA modulus/exponent keys; this does not.
trait BytesChecked {
    fn as_bytes_checked(&self) -> &[u8];
}

impl BytesChecked for DecodingKey {
    fn as_bytes_checked(&self) -> &[u8] {
        match self.kind() {
            jsonwebtoken::DecodingKeyKind::SecretOrDer(bytes) => bytes,
            jsonwebtoken::DecodingKeyKind::RsaModulusExponent { .. } => &[],
        }
    }
}
