//! `PUT /_rig/v1/connection/{transport}/{token}/subscriptions`: replaces a live
//! connection's whole subscription set (JWT-inferred ones first, as RIG), answers
//! `204`, and the connection receives `rig.subscriptions_set`.
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

use tidegate_hub::{HubError, Transport};

use crate::connect::{self, ConnectQuery};
use crate::error::{ApiError, ApiResult};
use crate::longpoll::unknown_transport;
use crate::state::SharedState;

pub async fn put(
    State(state): State<SharedState>,
    Path((transport, token)): Path<(String, String)>,
    Query(query): Query<ConnectQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let transport = Transport::parse(&transport).ok_or_else(|| unknown_transport(&transport))?;
    let info = state.hub.lookup(&token)?;
    if info.transport != transport {
        return Err(ApiError::bad_request(format!(
            "connection token is not a {} connection",
            transport.as_str()
        )));
    }
    let caller = connect::authenticate(&state, query.jwt.as_deref(), &headers)?;
    // A connection registered under a blacklisted session is killed anyway; this
    // refuses the change while the kill is in flight.
    if let Some(s) = &info.session {
        if state.blacklist.contains(s) {
            return Err(ApiError::from_status(
                401,
                "the session of this connection is blacklisted",
            ));
        }
    }
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "request body must be {\"subscriptions\":[…]}",
        ));
    }
    let subs = connect::resolve_subscriptions(&state, &caller, Some(&body), 403).await?;
    match state.hub.set_subscriptions(&token, subs).await {
        Ok(()) => Ok(StatusCode::NO_CONTENT.into_response()),
        Err(HubError::Gone) => Err(ApiError::new(
            StatusCode::GONE,
            "connection no longer exists",
        )),
        Err(e) => Err(e.into()),
    }
}
