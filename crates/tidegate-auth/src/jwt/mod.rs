//! JWT verification: configured keys in, verified claims out.
//!
//! Keys come from three places — [`KeySource`]s in the config (RIG's
//! `JWT_SECRET_KEY`/`JWT_ALG` become one of these), a JWKS file, and a JWKS
//! URL. [`Verifier::new`] loads the first two; [`Verifier::refresh`] re-reads
//! the file and fetches the URL, and [`Verifier::run_refresh`] does so
//! periodically. The keys in force live in one immutable `KeySet` behind an
//! `Arc`, swapped whole on refresh, so [`Verifier::verify`] takes a read lock
//! only long enough to clone a pointer and a rotation can never be seen half
//! done.
//!
//! A token passes when, in this order: it is a well-formed compact JWS; its
//! `alg` is one we support (never `none`); a key selected by `kid` and bound to
//! that algorithm verifies its signature; and its `exp`, `nbf`, `iss`, `aud`
//! claims satisfy the config. Failures are [`JwtError`]s whose
//! [`status`](JwtError::status) is 400 for malformed tokens and 401 otherwise.

mod keys;
mod token;

use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub use jsonwebtoken::Algorithm;
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value};

use keys::{Key, KeySet};

/// Every algorithm Tidegate verifies. Anything else — `none` above all — is
/// refused with [`JwtError::UnsupportedAlgorithm`].
pub const SUPPORTED_ALGORITHMS: [Algorithm; 12] = [
    Algorithm::HS256,
    Algorithm::HS384,
    Algorithm::HS512,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The JOSE name of an algorithm (`"RS256"`).
pub fn alg_name(alg: Algorithm) -> &'static str {
    match alg {
        Algorithm::HS256 => "HS256",
        Algorithm::HS384 => "HS384",
        Algorithm::HS512 => "HS512",
        Algorithm::RS256 => "RS256",
        Algorithm::RS384 => "RS384",
        Algorithm::RS512 => "RS512",
        Algorithm::PS256 => "PS256",
        Algorithm::PS384 => "PS384",
        Algorithm::PS512 => "PS512",
        Algorithm::ES256 => "ES256",
        Algorithm::ES384 => "ES384",
        Algorithm::EdDSA => "EdDSA",
    }
}

/// Parses a JOSE algorithm name, exactly as spelled in a token header.
pub fn parse_algorithm(name: &str) -> Option<Algorithm> {
    SUPPORTED_ALGORITHMS
        .into_iter()
        .find(|alg| alg_name(*alg) == name)
}

// === Config ===

/// One verification key from the configuration.
#[derive(Clone)]
pub enum KeySource {
    /// A shared secret; verifies only the given `HS*` algorithm.
    Secret {
        /// `HS256`, `HS384` or `HS512`.
        alg: Algorithm,
        /// The raw secret bytes (RIG uses the string as-is, not base64).
        secret: Vec<u8>,
        /// Selects this key when a token names it.
        kid: Option<String>,
    },
    /// A PEM public key (`-----BEGIN PUBLIC KEY-----`, or `RSA PUBLIC KEY`);
    /// verifies only the given asymmetric algorithm.
    PublicPem {
        /// `RS*`, `PS*`, `ES256`, `ES384` or `EdDSA`.
        alg: Algorithm,
        /// The PEM text.
        pem: Vec<u8>,
        /// Selects this key when a token names it.
        kid: Option<String>,
    },
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Why by hand: a derived Debug would print the secret into logs.
        match self {
            Self::Secret { alg, kid, .. } => f
                .debug_struct("Secret")
                .field("alg", alg)
                .field("secret", &"[redacted]")
                .field("kid", kid)
                .finish(),
            Self::PublicPem { alg, kid, .. } => f
                .debug_struct("PublicPem")
                .field("alg", alg)
                .field("kid", kid)
                .finish_non_exhaustive(),
        }
    }
}

/// What a [`Verifier`] trusts and how strict it is.
#[derive(Debug, Clone)]
pub struct JwtConfig {
    /// Keys from the configuration.
    pub keys: Vec<KeySource>,
    /// A JSON Web Key Set on disk, read at start and on every refresh.
    pub jwks_file: Option<PathBuf>,
    /// A JSON Web Key Set URL, fetched by [`Verifier::refresh`].
    pub jwks_url: Option<String>,
    /// How often [`Verifier::run_refresh`] reloads the JWKS (default 5 min).
    pub jwks_refresh: Duration,
    /// Clock skew tolerated on `exp` and `nbf` (default 30 s).
    pub leeway: Duration,
    /// Accepted `iss` values; empty means `iss` is not checked.
    pub issuers: Vec<String>,
    /// Accepted `aud` values; empty means `aud` is not checked.
    pub audiences: Vec<String>,
    /// Refuse tokens without `exp`. Off by default, like RIG.
    pub require_exp: bool,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            jwks_file: None,
            jwks_url: None,
            jwks_refresh: Duration::from_secs(5 * 60),
            leeway: Duration::from_secs(30),
            issuers: Vec::new(),
            audiences: Vec::new(),
            require_exp: false,
        }
    }
}

impl JwtConfig {
    /// RIG's `JWT_SECRET_KEY` + `JWT_ALG`.
    ///
    /// For `HS*` the string is the secret. For the asymmetric algorithms it is
    /// a PEM public key — inline (literal `\n` escapes, common in env files,
    /// are turned into newlines) or a path to a PEM file. An empty
    /// `secret_key` (RIG's default) yields a config with no keys, so
    /// [`Verifier::is_configured`] is false.
    pub fn from_rig(secret_key: &str, alg: &str) -> Result<Self, ConfigError> {
        let alg = parse_algorithm(alg.trim())
            .ok_or_else(|| ConfigError::UnsupportedAlgorithm(alg.to_owned()))?;
        let mut config = Self::default();
        if secret_key.is_empty() {
            return Ok(config);
        }
        let key = if keys::is_hmac(alg) {
            KeySource::Secret {
                alg,
                secret: secret_key.as_bytes().to_vec(),
                kid: None,
            }
        } else if secret_key.contains("-----BEGIN") {
            let pem = if secret_key.contains('\n') {
                secret_key.to_owned()
            } else {
                secret_key.replace("\\n", "\n")
            };
            KeySource::PublicPem {
                alg,
                pem: pem.into_bytes(),
                kid: None,
            }
        } else {
            let path = PathBuf::from(secret_key.trim());
            let pem = std::fs::read(&path).map_err(|source| ConfigError::ReadFile {
                path: path.clone(),
                source,
            })?;
            KeySource::PublicPem {
                alg,
                pem,
                kid: None,
            }
        };
        config.keys.push(key);
        Ok(config)
    }
}

// === Errors ===

/// Why a configuration cannot be used. Reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `JWT_ALG` or a key's algorithm is not one of [`SUPPORTED_ALGORITHMS`].
    #[error("unsupported JWT algorithm {0:?}; supported: HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA")]
    UnsupportedAlgorithm(String),
    /// A secret configured for an asymmetric algorithm or a PEM for `HS*`.
    #[error("{alg} needs {expected}")]
    KeyAlgorithmMismatch {
        /// The configured algorithm.
        alg: &'static str,
        /// What kind of key it needs.
        expected: &'static str,
    },
    /// An HMAC secret of zero bytes, which anyone could forge.
    #[error("the JWT secret is empty")]
    EmptySecret,
    /// A PEM that does not hold a public key for its algorithm.
    #[error("invalid {alg} public key: {reason}")]
    InvalidKey {
        /// The configured algorithm.
        alg: &'static str,
        /// What is wrong with the key.
        reason: String,
    },
    /// A key or JWKS file that cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    ReadFile {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The JWKS file does not hold a usable key set.
    #[error("JWKS file: {0}")]
    Jwks(#[source] JwksError),
    /// The JWKS URL is not an http(s) URL.
    #[error("invalid JWKS URL {0:?}")]
    InvalidJwksUrl(String),
    /// `jwks_refresh` is zero, which would fetch in a tight loop.
    #[error("the JWKS refresh interval must be greater than zero")]
    ZeroRefresh,
    /// The HTTP client for the JWKS URL could not be built.
    #[error("cannot build the JWKS HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

/// Why a JWKS refresh failed. The previous keys stay in force.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The JWKS file cannot be read.
    #[error("cannot read {}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The JWKS URL could not be fetched (connection, timeout, body).
    #[error("fetching {url} failed: {source}")]
    Fetch {
        /// The URL.
        url: String,
        /// The HTTP client error.
        source: reqwest::Error,
    },
    /// The JWKS URL answered with a non-2xx status.
    #[error("{url} answered HTTP {status}")]
    Status {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The document is not a usable JSON Web Key Set.
    #[error("invalid JWKS: {0}")]
    Invalid(String),
}

/// Why a token was refused. `Display` is the human reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwtError {
    /// Not a compact JWS: not three base64url parts, or header/payload not
    /// JSON objects.
    #[error("malformed JWT: {0}")]
    Malformed(&'static str),
    /// The header's `alg` is `none` or not in [`SUPPORTED_ALGORITHMS`].
    #[error("JWT algorithm {0:?} is not accepted")]
    UnsupportedAlgorithm(String),
    /// The header has `crit` extensions, none of which we implement.
    #[error("JWT uses critical header extensions, which are not supported")]
    UnsupportedCritical,
    /// No key is configured at all.
    #[error("no JWT verification key is configured")]
    NoKeys,
    /// The token's `kid` names no key we hold.
    #[error("JWT key id {0:?} is unknown")]
    UnknownKid(String),
    /// No key we hold may verify the token's algorithm (this is where an
    /// algorithm-confusion attempt ends).
    #[error("no key accepts JWT algorithm {0}")]
    NoKeyForAlgorithm(&'static str),
    /// No candidate key verified the signature.
    #[error("JWT signature is invalid")]
    InvalidSignature,
    /// `exp` is in the past (beyond the leeway).
    #[error("JWT has expired")]
    Expired,
    /// `nbf` is in the future (beyond the leeway).
    #[error("JWT is not valid yet")]
    NotYetValid,
    /// `exp` is required by config but absent.
    #[error("JWT has no exp claim")]
    MissingExp,
    /// A registered claim has the wrong type (`exp` not a number, …).
    #[error("JWT claim {0:?} has an invalid value")]
    InvalidClaim(&'static str),
    /// `iss` is absent or not accepted.
    #[error("JWT issuer is not accepted")]
    WrongIssuer,
    /// `aud` is absent or names none of the accepted audiences.
    #[error("JWT audience is not accepted")]
    WrongAudience,
}

impl JwtError {
    /// The HTTP status this refusal maps to: 400 when the token is not a JWT
    /// at all, 401 when it is a JWT we do not accept.
    pub fn status(&self) -> u16 {
        match self {
            Self::Malformed(_) => 400,
            _ => 401,
        }
    }
}

// === impl Verifier ===

/// Verifies tokens against the keys in force. Share it as `Arc<Verifier>`.
pub struct Verifier {
    leeway_secs: u64,
    issuers: Vec<String>,
    audiences: Vec<String>,
    require_exp: bool,
    configured: bool,
    jwks_file: Option<PathBuf>,
    jwks_url: Option<String>,
    refresh_every: Duration,
    http: Option<reqwest::Client>,
    /// Per-source key lists; the lock also serialises refreshes so two of them
    /// cannot interleave their swaps.
    sources: Mutex<Sources>,
    current: RwLock<Arc<KeySet>>,
}

struct Sources {
    configured: Vec<Arc<Key>>,
    file: Vec<Arc<Key>>,
    url: Vec<Arc<Key>>,
}

impl Sources {
    fn compose(&self) -> KeySet {
        KeySet {
            keys: self
                .configured
                .iter()
                .chain(&self.file)
                .chain(&self.url)
                .cloned()
                .collect(),
        }
    }
}

/// A JWKS is a few KiB; anything past this is not a key set we want.
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// How long one JWKS fetch may take.
const JWKS_TIMEOUT: Duration = Duration::from_secs(10);
/// After a failed refresh, try again sooner than the normal interval.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(30);

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("keys", &self.key_count())
            .field("jwks_file", &self.jwks_file)
            .field("jwks_url", &self.jwks_url)
            .finish_non_exhaustive()
    }
}

impl Verifier {
    /// Loads the configured keys and the JWKS file (blocking file reads: call
    /// at start-up). A JWKS URL is not fetched here; call [`refresh`] next.
    ///
    /// [`refresh`]: Verifier::refresh
    pub fn new(config: JwtConfig) -> Result<Self, ConfigError> {
        let configured = config
            .keys
            .iter()
            .map(|source| keys::from_source(source).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        let file = match &config.jwks_file {
            Some(path) => {
                let bytes = std::fs::read(path).map_err(|source| ConfigError::ReadFile {
                    path: path.clone(),
                    source,
                })?;
                keys::from_jwks(&bytes).map_err(ConfigError::Jwks)?
            }
            None => Vec::new(),
        };
        let http = match &config.jwks_url {
            Some(url) => {
                let parsed = reqwest::Url::parse(url)
                    .map_err(|_| ConfigError::InvalidJwksUrl(url.clone()))?;
                if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
                    return Err(ConfigError::InvalidJwksUrl(url.clone()));
                }
                if config.jwks_refresh.is_zero() {
                    return Err(ConfigError::ZeroRefresh);
                }
                Some(
                    reqwest::Client::builder()
                        .timeout(JWKS_TIMEOUT)
                        .build()
                        .map_err(ConfigError::HttpClient)?,
                )
            }
            None => None,
        };
        if config.jwks_file.is_some() && config.jwks_refresh.is_zero() {
            return Err(ConfigError::ZeroRefresh);
        }
        let sources = Sources {
            configured,
            file,
            url: Vec::new(),
        };
        let current = RwLock::new(Arc::new(sources.compose()));
        Ok(Self {
            leeway_secs: config.leeway.as_secs(),
            issuers: config.issuers,
            audiences: config.audiences,
            require_exp: config.require_exp,
            configured: !config.keys.is_empty()
                || config.jwks_file.is_some()
                || config.jwks_url.is_some(),
            jwks_file: config.jwks_file,
            jwks_url: config.jwks_url,
            refresh_every: config.jwks_refresh,
            http,
            sources: Mutex::new(sources),
            current,
        })
    }

    /// Whether any key source is configured. When false, the gateway runs
    /// without JWT support (RIG with an empty `JWT_SECRET_KEY`) and every
    /// [`verify`](Verifier::verify) fails with [`JwtError::NoKeys`].
    pub fn is_configured(&self) -> bool {
        self.configured
    }

    /// The number of keys in force now.
    pub fn key_count(&self) -> usize {
        self.current.read().keys.len()
    }

    /// Verifies `token` (the compact JWS, without `Bearer `) and returns its
    /// claims, a JSON object.
    pub fn verify(&self, token: &str) -> Result<Value, JwtError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.verify_at(token, now)
    }

    /// [`verify`](Verifier::verify) with the clock as a parameter (unix
    /// seconds), for tests and replay.
    pub fn verify_at(&self, token: &str, now_secs: u64) -> Result<Value, JwtError> {
        let parsed = token::parse(token)?;
        // Clone the Arc and drop the lock at once: verification (RSA!) must
        // not hold up a refresh, and a refresh must not hold up verification.
        let set = Arc::clone(&self.current.read());
        if set.keys.is_empty() {
            return Err(JwtError::NoKeys);
        }
        let candidates = select(&set, parsed.alg, parsed.kid.as_deref())?;
        let verified = candidates.iter().any(|key| {
            jsonwebtoken::crypto::verify(
                parsed.signature,
                parsed.signed.as_bytes(),
                &key.decoding,
                parsed.alg,
            )
            .unwrap_or(false)
        });
        if !verified {
            return Err(JwtError::InvalidSignature);
        }
        self.check_claims(&parsed.claims, now_secs)?;
        Ok(Value::Object(parsed.claims))
    }

    fn check_claims(&self, claims: &Map<String, Value>, now: u64) -> Result<(), JwtError> {
        match claims.get("exp") {
            None if self.require_exp => return Err(JwtError::MissingExp),
            None => {}
            Some(exp) => {
                let exp = token::numeric_date(exp).ok_or(JwtError::InvalidClaim("exp"))?;
                // RFC 7519 §4.1.4: the current time must be *before* exp.
                if now >= exp.saturating_add(self.leeway_secs) {
                    return Err(JwtError::Expired);
                }
            }
        }
        if let Some(nbf) = claims.get("nbf") {
            let nbf = token::numeric_date(nbf).ok_or(JwtError::InvalidClaim("nbf"))?;
            if nbf > now.saturating_add(self.leeway_secs) {
                return Err(JwtError::NotYetValid);
            }
        }
        if !self.issuers.is_empty() {
            let iss = claims.get("iss").and_then(Value::as_str);
            if !iss.is_some_and(|iss| self.issuers.iter().any(|ok| ok == iss)) {
                return Err(JwtError::WrongIssuer);
            }
        }
        if !self.audiences.is_empty() {
            let accepted = |aud: &str| self.audiences.iter().any(|ok| ok == aud);
            let ok = match claims.get("aud") {
                Some(Value::String(aud)) => accepted(aud),
                Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accepted),
                _ => false,
            };
            if !ok {
                return Err(JwtError::WrongAudience);
            }
        }
        Ok(())
    }

    /// Re-reads the JWKS file and fetches the JWKS URL (whichever are
    /// configured) and swaps in the new key set; keys no longer published stop
    /// verifying at once. A source that fails keeps its previous keys, and the
    /// first failure is returned. Returns the number of keys now in force.
    pub async fn refresh(&self) -> Result<usize, JwksError> {
        let mut failure = None;
        let file = match &self.jwks_file {
            Some(path) => match load_file(path).await {
                Ok(keys) => Some(keys),
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS file refresh failed; keeping previous keys");
                    failure.get_or_insert(e);
                    None
                }
            },
            None => None,
        };
        let url = match (&self.jwks_url, &self.http) {
            (Some(url), Some(http)) => match fetch(http, url).await {
                Ok(keys) => Some(keys),
                Err(e) => {
                    tracing::warn!(error = %e, "JWKS URL refresh failed; keeping previous keys");
                    failure.get_or_insert(e);
                    None
                }
            },
            _ => None,
        };
        let count = {
            let mut sources = self.sources.lock();
            if let Some(keys) = file {
                sources.file = keys;
            }
            if let Some(keys) = url {
                sources.url = keys;
            }
            let set = Arc::new(sources.compose());
            let count = set.keys.len();
            *self.current.write() = set;
            count
        };
        match failure {
            Some(e) => Err(e),
            None => {
                tracing::debug!(keys = count, "JWKS refreshed");
                Ok(count)
            }
        }
    }

    /// Refreshes the JWKS every `jwks_refresh` (sooner after a failure) until
    /// `shutdown` completes. Returns at once when no JWKS is configured. The
    /// first refresh happens after one interval: call [`refresh`] at start-up.
    ///
    /// Spawn it on a task you own; `shutdown` is any future, e.g.
    /// `async move { let _ = rx.changed().await; }` for a `watch` channel.
    ///
    /// [`refresh`]: Verifier::refresh
    pub async fn run_refresh<F>(self: Arc<Self>, shutdown: F)
    where
        F: Future<Output = ()>,
    {
        if self.jwks_file.is_none() && self.jwks_url.is_none() {
            return;
        }
        tokio::pin!(shutdown);
        let mut delay = self.refresh_every;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(delay) => {}
            }
            // Cancel-safe: refresh swaps its result in one synchronous step, so
            // stopping it at any await point leaves the old set in force.
            tokio::select! {
                () = &mut shutdown => return,
                result = self.refresh() => {
                    delay = match result {
                        Ok(_) => self.refresh_every,
                        Err(_) => self.refresh_every.min(RETRY_AFTER_FAILURE),
                    };
                }
            }
        }
    }
}

/// Picks the keys that may verify a token with this `alg` and `kid`.
///
/// A `kid` selects the keys that carry it. Keys configured *without* a kid
/// (RIG's single `JWT_SECRET_KEY`) are trusted for any kid, because identity
/// providers stamp a kid on every token and RIG ignored it; a kid that matches
/// nothing is refused only when every key has a kid of its own.
fn select(set: &KeySet, alg: Algorithm, kid: Option<&str>) -> Result<Vec<Arc<Key>>, JwtError> {
    let allowed = |key: &&Arc<Key>| key.allows(alg);
    let candidates: Vec<Arc<Key>> = match kid {
        Some(kid) => {
            let named: Vec<&Arc<Key>> = set
                .keys
                .iter()
                .filter(|key| key.kid.as_deref() == Some(kid))
                .collect();
            if named.is_empty() {
                let anonymous: Vec<&Arc<Key>> =
                    set.keys.iter().filter(|key| key.kid.is_none()).collect();
                if anonymous.is_empty() {
                    return Err(JwtError::UnknownKid(token::echo(kid)));
                }
                anonymous.into_iter().filter(allowed).cloned().collect()
            } else {
                named.into_iter().filter(allowed).cloned().collect()
            }
        }
        None => set.keys.iter().filter(allowed).cloned().collect(),
    };
    if candidates.is_empty() {
        return Err(JwtError::NoKeyForAlgorithm(alg_name(alg)));
    }
    Ok(candidates)
}

async fn load_file(path: &std::path::Path) -> Result<Vec<Arc<Key>>, JwksError> {
    let bytes = tokio::fs::read(path)
        .await
        .map_err(|source| JwksError::Read {
            path: path.to_owned(),
            source,
        })?;
    keys::from_jwks(&bytes)
}

async fn fetch(http: &reqwest::Client, url: &str) -> Result<Vec<Arc<Key>>, JwksError> {
    let failed = |source| JwksError::Fetch {
        url: url.to_owned(),
        source,
    };
    let response = http
        .get(url)
        .header(reqwest::header::ACCEPT, "application/json")
        .send()
        .await
        .map_err(failed)?;
    if !response.status().is_success() {
        return Err(JwksError::Status {
            url: url.to_owned(),
            status: response.status().as_u16(),
        });
    }
    let bytes = crate::body::read_capped(response, MAX_JWKS_BYTES)
        .await
        .map_err(failed)?;
    keys::from_jwks(&bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn algorithm_names_round_trip() {
        for alg in SUPPORTED_ALGORITHMS {
            assert_eq!(parse_algorithm(alg_name(alg)), Some(alg));
        }
        assert_eq!(parse_algorithm("none"), None);
        assert_eq!(parse_algorithm("hs256"), None);
    }

    #[test]
    fn from_rig_empty_secret_is_unconfigured() {
        let config = JwtConfig::from_rig("", "HS256").unwrap();
        let verifier = Verifier::new(config).unwrap();
        assert!(!verifier.is_configured());
        assert_eq!(
            verifier.verify("a.b.c").err().map(|e| e.status()),
            Some(400)
        );
    }

    #[test]
    fn from_rig_rejects_unknown_alg() {
        let err = JwtConfig::from_rig("secret", "XS256").unwrap_err();
        assert!(err.to_string().contains("XS256"), "{err}");
    }

    #[test]
    fn secret_for_rsa_is_refused() {
        let config = JwtConfig {
            keys: vec![KeySource::Secret {
                alg: Algorithm::RS256,
                secret: b"s".to_vec(),
                kid: None,
            }],
            ..JwtConfig::default()
        };
        assert!(matches!(
            Verifier::new(config),
            Err(ConfigError::KeyAlgorithmMismatch { .. })
        ));
    }

    #[test]
    fn debug_redacts_secret() {
        let key = KeySource::Secret {
            alg: Algorithm::HS256,
            secret: b"hunter2".to_vec(),
            kid: None,
        };
        assert!(!format!("{key:?}").contains("hunter2"));
    }
}
