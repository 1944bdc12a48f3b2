//! Who may connect, subscribe and publish: Tidegate's authentication and
//! authorization checks, shared by the edge (frontend connections, `/_rig/*`)
//! and the internal API.
//!
//! - [`jwt`] owns token verification: the configured keys (secrets, PEM public
//!   keys, a JWKS file or URL), their rotation behind a cheap `Arc` swap, and the
//!   rules a token must pass (algorithm, signature, `exp`/`nbf`, `iss`/`aud`).
//! - [`session`] owns session identity and the session blacklist: which claim
//!   names a session (RIG's `JWT_SESSION_FIELD`) and which sessions are killed
//!   until when. It is pure: time is a parameter.
//! - [`check`] owns RIG's `SUBSCRIPTION_CHECK` / `SUBMISSION_CHECK` policies:
//!   allow everything, require a valid JWT, or ask an external HTTP service.
//!
//! Data flows one way: the edge extracts a token from the request, [`check`]
//! decides with the help of a [`jwt::Verifier`], and the edge turns the error's
//! `status()` into the HTTP response. Nothing here writes responses itself.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod body;
pub mod check;
pub mod jwt;
pub mod session;

pub use check::{Check, CheckError, Checker};
pub use jwt::{Algorithm, JwtConfig, JwtError, KeySource, Verifier};
pub use session::{session_id, Blacklist, BlacklistError};
