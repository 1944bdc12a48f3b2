//! The HTTP edge of Tidegate: routers for the inbound port (frontends: SSE, WebSocket,
//! long-polling, subscriptions, publishing) and the internal port (health, metrics,
//! `/v3` API). Handlers are thin: they parse and authorize, then hand over to the log
//! (publishing) or the hub (connections); errors become responses in [`error`].
#![forbid(unsafe_code)]

pub mod admission;
pub mod blacklist;
pub mod connect;
pub mod cors;
pub mod error;
pub mod history;
pub mod ingest;
pub mod internal;
pub mod limits;
pub mod logstats;
pub mod longpoll;
pub mod net;
pub mod publish;
pub mod render;
pub mod sse;
pub mod state;
pub mod streams;
pub mod subscriptions;
pub mod ws;

use axum::extract::{DefaultBodyLimit, Path};
use axum::routing::{get, post, put};
use axum::Router;

pub use state::{AppState, EdgeConfig, SharedState};

/// Frontend-facing routes (RIG's inbound port, 4000).
///
/// `fallback` serves every path no gateway route matched (the API gateway's reverse
/// proxy); without one such paths are `404`.
pub fn inbound_router(state: SharedState, fallback: Option<Router>) -> Router {
    let cors = state.cfg.cors.clone();
    let limit = state.cfg.max_body_bytes;
    let router = Router::new()
        .route("/_rig/v1/connection/sse", get(sse::handler))
        .route("/_rig/v1/connection/ws", get(ws::handler))
        .route("/_rig/v1/connection/longpolling", get(longpoll::handler))
        .route(
            "/_rig/v1/connection/{transport}/{token}/subscriptions",
            put(subscriptions::put),
        )
        .route("/_rig/v1/connection/{transport}", get(unknown_transport))
        .route("/_rig/v1/events", post(publish::inbound))
        .route("/_tidegate/v1/history", get(history::handler))
        .route("/_rig/health", get(internal::health))
        .merge(ingest::router(&state))
        .merge(streams::router(state.clone()));
    let router = match fallback {
        Some(f) => router.fallback_service(f),
        None => router.fallback(not_found),
    };
    router
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            limits::client_rate,
        ))
        .layer(axum::middleware::from_fn_with_state(cors, cors::layer))
        .with_state(state)
}

/// Operator-facing routes (RIG's API port, 4010).
pub fn internal_router(state: SharedState) -> Router {
    let limit = state.cfg.max_body_bytes;
    Router::new()
        .route("/health", get(internal::health))
        .route("/health/live", get(internal::live))
        .route("/health/ready", get(internal::ready))
        .route("/metrics", get(internal::metrics))
        .route("/v3/messages", post(publish::internal))
        .route("/v3/routes", get(ingest::routes_list))
        .route("/v3/routes/{name}", get(ingest::route_get))
        .route("/v3/routes/{name}/dlq", get(ingest::dlq_list))
        .route("/v3/routes/{name}/dlq/replay", post(ingest::dlq_replay))
        .route(
            "/v3/routes/{name}/dlq/{offset}",
            get(ingest::dlq_get).delete(ingest::dlq_delete),
        )
        .route("/v3/session-blacklist", post(internal::blacklist_add))
        .route("/v3/session-blacklist/{id}", get(internal::blacklist_get))
        .route(
            "/v3/log-level",
            get(internal::log_level_get).put(internal::log_level_put),
        )
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limit))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            internal::require_token,
        ))
        .with_state(state)
}

async fn unknown_transport(Path(t): Path<String>) -> error::ApiError {
    longpoll::unknown_transport(&t)
}

async fn not_found() -> (axum::http::StatusCode, &'static str) {
    (
        axum::http::StatusCode::NOT_FOUND,
        "{\"message\":\"Not Found\"}",
    )
}
