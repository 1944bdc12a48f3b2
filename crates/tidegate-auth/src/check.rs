//! RIG's subscription and submission checks (`SUBSCRIPTION_CHECK`,
//! `SUBMISSION_CHECK`): may this caller subscribe / publish this?
//!
//! Three policies: allow everything (`no_check`), require a JWT that verifies
//! (`jwt_validation`), or ask an external service (an http(s) URL) by POSTing
//! the subscription or event to it with the caller's `Authorization`. An
//! external check *replaces* local validation: the service is the authority,
//! and RIG's extra local check (bug #377) refused tokens the service accepts,
//! e.g. ones signed by a key the gateway does not know.
//!
//! The edge builds one [`Checker`] per policy at start-up, calls
//! [`Checker::authorize`] per request and turns a [`CheckError`] into a
//! response with its [`status`](CheckError::status) and reason.

use std::str::FromStr;
use std::time::Duration;

use reqwest::header::{HeaderValue, AUTHORIZATION};
use serde_json::Value;

use crate::jwt::{JwtError, Verifier};

/// A checker's denial reason is shown to the caller; more than this is noise.
const MAX_REASON_BYTES: usize = 1024;

/// A check policy, as written in `SUBSCRIPTION_CHECK` / `SUBMISSION_CHECK`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Check {
    /// `no_check`: everything is allowed.
    NoCheck,
    /// `jwt_validation`: a JWT that verifies is required.
    JwtValidation,
    /// An http(s) URL: the external service decides.
    External(reqwest::Url),
}

/// Why a check policy cannot be used. Reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The value is not `no_check`, `jwt_validation` or an http(s) URL.
    #[error("invalid check {0:?}: expected no_check, jwt_validation or an http(s) URL")]
    InvalidCheck(String),
    /// The HTTP client for an external check could not be built.
    #[error("cannot build the check HTTP client: {0}")]
    HttpClient(#[source] reqwest::Error),
}

impl FromStr for Check {
    type Err = ConfigError;

    /// Parses RIG's values. Unset variables are the caller's business (RIG's
    /// default is `no_check`); an empty or unknown value is an error, because
    /// a typo in a security setting must not quietly mean "allow all".
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.trim() {
            "no_check" => Ok(Self::NoCheck),
            "jwt_validation" => Ok(Self::JwtValidation),
            trimmed => match reqwest::Url::parse(trimmed) {
                Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
                    Ok(Self::External(url))
                }
                _ => Err(ConfigError::InvalidCheck(value.to_owned())),
            },
        }
    }
}

/// Why a request was not authorized. `Display` is the human reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckError {
    /// `jwt_validation` and no token was presented.
    #[error("a valid JWT is required")]
    MissingToken,
    /// `jwt_validation` and the token did not verify.
    #[error("{0}")]
    InvalidToken(#[from] JwtError),
    /// The external service said no (it answered 401 or 403).
    #[error("{reason}")]
    Denied {
        /// 401 or 403, as the service answered.
        status: u16,
        /// The service's response body, or a generic reason.
        reason: String,
    },
    /// The external service could not decide: other status, timeout,
    /// connection error. The request is denied (fail closed).
    #[error("the authorization service is unavailable: {0}")]
    Unavailable(String),
}

impl CheckError {
    /// The HTTP status for the response: 401 for a missing token, the
    /// [`JwtError`]'s status for an invalid one, the service's 401/403 for a
    /// denial, 503 when the service could not be asked.
    pub fn status(&self) -> u16 {
        match self {
            Self::MissingToken => 401,
            Self::InvalidToken(e) => e.status(),
            Self::Denied { status, .. } => *status,
            Self::Unavailable(_) => 503,
        }
    }

    /// The human reason, for the response body.
    pub fn reason(&self) -> String {
        self.to_string()
    }
}

// === impl Checker ===

/// One check policy, ready to authorize requests.
#[derive(Debug, Clone)]
pub struct Checker {
    check: Check,
    http: Option<reqwest::Client>,
}

impl Checker {
    /// Builds the checker; `timeout` bounds a whole external call (connect,
    /// request, response body).
    pub fn new(check: Check, timeout: Duration) -> Result<Self, ConfigError> {
        let http = match check {
            Check::External(_) => Some(
                reqwest::Client::builder()
                    .timeout(timeout)
                    .connect_timeout(timeout)
                    // Why no redirects: a redirect would carry the caller's
                    // credentials to a URL nobody configured. A 3xx is
                    // "unavailable" like any other unexpected answer.
                    .redirect(reqwest::redirect::Policy::none())
                    .build()
                    .map_err(ConfigError::HttpClient)?,
            ),
            _ => None,
        };
        Ok(Self { check, http })
    }

    /// The policy this checker applies.
    pub fn check(&self) -> &Check {
        &self.check
    }

    /// Decides one request.
    ///
    /// - `body`: the subscription or event, sent to an external service.
    /// - `authorization`: the caller's `Authorization` header, passed through
    ///   to an external service verbatim.
    /// - `token`: the caller's JWT (from `?jwt=` or the bearer header). For
    ///   `jwt_validation`, when `token` is `None` a `Bearer` token in
    ///   `authorization` is used. For an external check without an
    ///   `Authorization` header, the token is sent as `Bearer <token>` so the
    ///   service sees the same credential however the frontend passed it.
    pub async fn authorize(
        &self,
        body: &Value,
        authorization: Option<&str>,
        verifier: &Verifier,
        token: Option<&str>,
    ) -> Result<(), CheckError> {
        match &self.check {
            Check::NoCheck => Ok(()),
            Check::JwtValidation => {
                let token = token
                    .or_else(|| authorization.and_then(bearer))
                    .ok_or(CheckError::MissingToken)?;
                verifier.verify(token)?;
                Ok(())
            }
            Check::External(url) => {
                let forwarded = match (authorization, token) {
                    (Some(header), _) => Some(header.to_owned()),
                    (None, Some(token)) => Some(format!("Bearer {token}")),
                    (None, None) => None,
                };
                self.ask(url, body, forwarded.as_deref()).await
            }
        }
    }

    async fn ask(
        &self,
        url: &reqwest::Url,
        body: &Value,
        authorization: Option<&str>,
    ) -> Result<(), CheckError> {
        let Some(http) = &self.http else {
            // Proven invariant: `new` builds a client for every External check.
            return Err(CheckError::Unavailable("no HTTP client".to_owned()));
        };
        let mut request = http.post(url.clone()).json(body);
        if let Some(header) = authorization {
            let value = HeaderValue::from_str(header).map_err(|_| CheckError::Denied {
                status: 401,
                reason: "the Authorization header is invalid".to_owned(),
            })?;
            request = request.header(AUTHORIZATION, value);
        }
        let response = request.send().await.map_err(|e| {
            tracing::warn!(url = %url, error = %e, "External check failed");
            if e.is_timeout() {
                CheckError::Unavailable("the check timed out".to_owned())
            } else {
                CheckError::Unavailable("the check could not be reached".to_owned())
            }
        })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        if status == reqwest::StatusCode::UNAUTHORIZED || status == reqwest::StatusCode::FORBIDDEN {
            let reason = crate::body::read_capped(response, MAX_REASON_BYTES)
                .await
                .map(|bytes| String::from_utf8_lossy(&bytes).trim().to_owned())
                .unwrap_or_default();
            let reason = if reason.is_empty() {
                "denied by the authorization service".to_owned()
            } else {
                reason
            };
            tracing::debug!(url = %url, status = status.as_u16(), reason, "External check denied");
            return Err(CheckError::Denied {
                status: status.as_u16(),
                reason,
            });
        }
        tracing::warn!(url = %url, status = status.as_u16(), "External check answered unexpectedly");
        Err(CheckError::Unavailable(format!(
            "the check answered HTTP {}",
            status.as_u16()
        )))
    }
}

/// The token of a `Bearer` authorization header (scheme case-insensitive).
fn bearer(header: &str) -> Option<&str> {
    let (scheme, token) = header.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_rig_values() {
        assert_eq!("no_check".parse::<Check>().unwrap(), Check::NoCheck);
        assert_eq!(
            " jwt_validation ".parse::<Check>().unwrap(),
            Check::JwtValidation
        );
        match "https://authz.example/check".parse::<Check>().unwrap() {
            Check::External(url) => assert_eq!(url.as_str(), "https://authz.example/check"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rejects_other_values_naming_them() {
        for value in [
            "",
            "jwt",
            "NO_CHECK",
            "ftp://x/y",
            "localhost:8080",
            "http://",
        ] {
            let err = value.parse::<Check>().unwrap_err();
            assert!(err.to_string().contains(&format!("{value:?}")), "{err}");
        }
    }

    #[test]
    fn bearer_extraction() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
        assert_eq!(bearer("Bearer"), None);
    }

    #[test]
    fn statuses() {
        assert_eq!(CheckError::MissingToken.status(), 401);
        assert_eq!(
            CheckError::InvalidToken(JwtError::Malformed("x")).status(),
            400
        );
        assert_eq!(CheckError::InvalidToken(JwtError::Expired).status(), 401);
        assert_eq!(CheckError::Unavailable(String::new()).status(), 503);
        assert_eq!(CheckError::MissingToken.reason(), "a valid JWT is required");
    }
}
