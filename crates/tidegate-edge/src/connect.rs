//! What every transport does before it streams: authenticate the JWT (query `jwt` or
//! `Authorization: Bearer`), refuse blacklisted sessions, parse and check the
//! subscriptions, infer subscriptions from the JWT, read the resume cursor, register
//! with the hub.
use axum::http::{header, HeaderMap};
use serde_json::Value;

use tidegate_core::cursor::Cursor;
use tidegate_core::subscription::{self, Subscription};
use tidegate_hub::{ConnectRequest, Connection, Resume, Transport};

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// Query parameters of the connection endpoints.
#[derive(Debug, Default, serde::Deserialize)]
pub struct ConnectQuery {
    pub jwt: Option<String>,
    pub subscriptions: Option<String>,
    /// Resume cursor for clients that cannot set `Last-Event-ID` (also `last_event_id`).
    #[serde(rename = "lastEventId", alias = "last_event_id")]
    pub last_event_id: Option<String>,
}

/// The caller, as far as the JWT tells.
#[derive(Debug, Default)]
pub struct Caller {
    pub token: Option<String>,
    pub claims: Option<Value>,
    pub session: Option<String>,
    pub authorization: Option<String>,
}

pub fn bearer(headers: &HeaderMap) -> Option<&str> {
    let v = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = v.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Verifies the JWT if one is given (a given token must be valid) and refuses a
/// blacklisted session.
pub fn authenticate(
    state: &AppState,
    query_jwt: Option<&str>,
    headers: &HeaderMap,
) -> ApiResult<Caller> {
    let authorization = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let token = query_jwt
        .filter(|t| !t.is_empty())
        .or_else(|| bearer(headers))
        .map(str::to_string);
    let Some(token) = token else {
        return Ok(Caller {
            authorization,
            ..Caller::default()
        });
    };
    let claims = state
        .verifier
        .verify(&token)
        .map_err(|e| ApiError::from_status(e.status(), format!("invalid JWT: {e}")))?;
    let session = tidegate_auth::session_id(&claims, &state.cfg.session_field);
    if let Some(s) = &session {
        if state.blacklist.contains(s) {
            state
                .metrics
                .connections_rejected
                .get_or_create(&tidegate_telemetry::ReasonLabel {
                    reason: "blacklisted",
                })
                .inc();
            return Err(ApiError::from_status(
                401,
                "the session of this JWT is blacklisted",
            ));
        }
    }
    Ok(Caller {
        token: Some(token),
        claims: Some(claims),
        session,
        authorization,
    })
}

/// Explicit subscriptions (JSON) merged after the JWT-inferred ones, duplicates removed
/// (RIG's order), then authorized by `SUBSCRIPTION_CHECK`.
pub async fn resolve_subscriptions(
    state: &AppState,
    caller: &Caller,
    explicit_json: Option<&[u8]>,
    check_status_denied: u16,
) -> ApiResult<Vec<Subscription>> {
    let explicit = match explicit_json {
        Some(json) => subscription::parse(json, &state.extractors, state.cfg.subscription_limits)
            .map_err(|e| ApiError::bad_request(format!("invalid subscriptions: {e}")))?,
        None => Vec::new(),
    };
    if explicit_json.is_some() {
        let body = Value::Array(explicit.iter().map(Subscription::to_json).collect());
        state
            .subscription_check
            .authorize(
                &body,
                caller.authorization.as_deref(),
                &state.verifier,
                caller.token.as_deref(),
            )
            .await
            .map_err(|e| {
                let status = if matches!(e, tidegate_auth::CheckError::Denied { .. }) {
                    check_status_denied
                } else {
                    e.status()
                };
                ApiError::from_status(status, format!("subscription denied: {}", e.reason()))
            })?;
    }
    let mut subs = match &caller.claims {
        Some(claims) => state.extractors.infer_from_claims(claims),
        None => Vec::new(),
    };
    for s in explicit {
        if !subs.contains(&s) {
            subs.push(s);
        }
    }
    let limits = state.cfg.subscription_limits;
    if subs.len() > limits.max_subscriptions {
        return Err(ApiError::bad_request(format!(
            "too many subscriptions ({}, limit {})",
            subs.len(),
            limits.max_subscriptions
        )));
    }
    Ok(subs)
}

/// Value of `Last-Event-ID` meaning "everything still retained".
pub const START: &str = "start";

/// `Last-Event-ID` header, else the query parameter.
pub fn resume_cursor(headers: &HeaderMap, query: Option<&str>) -> ApiResult<Option<Resume>> {
    let raw = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .or(query);
    parse_resume(raw)
}

pub fn parse_resume(raw: Option<&str>) -> ApiResult<Option<Resume>> {
    match raw.map(str::trim).filter(|s| !s.is_empty()) {
        None => Ok(None),
        Some(START) => Ok(Some(Resume::Start)),
        Some(s) => Cursor::parse(s)
            .map(|c| Some(Resume::After(c)))
            .map_err(|e| ApiError::bad_request(format!("invalid Last-Event-ID: {e}"))),
    }
}

pub async fn open(
    state: &AppState,
    transport: Transport,
    query: &ConnectQuery,
    headers: &HeaderMap,
    resume: Option<Resume>,
) -> ApiResult<Connection> {
    if let Some(rate) = &state.connection_rate {
        if let Err(retry) = rate.check(tokio::time::Instant::now()) {
            state
                .metrics
                .connections_rejected
                .get_or_create(&tidegate_telemetry::ReasonLabel {
                    reason: "rate_limited",
                })
                .inc();
            return Err(ApiError::too_many(
                "Reached maximum number of connections per minute",
                retry.as_header_secs(),
            ));
        }
    }
    let caller = authenticate(state, query.jwt.as_deref(), headers)?;
    let subs = resolve_subscriptions(
        state,
        &caller,
        query.subscriptions.as_deref().map(str::as_bytes),
        400,
    )
    .await?;
    state
        .limits
        .admit(transport, caller.session.as_deref(), &state.metrics)?;
    let session = caller.session.clone();
    let conn = state
        .hub
        .connect(ConnectRequest {
            transport,
            session: caller.session,
            subscriptions: subs,
            resume,
        })
        .await?;
    state
        .limits
        .register(transport, session.as_deref(), &conn.outbox);
    Ok(conn)
}
