//! The one place where the proxy's errors become HTTP responses. Bodies and status
//! codes follow RIG (`404 {"message":"Not Found"}`, `401 Authentication failed.`,
//! `502 Bad gateway.`); the broker and overload cases RIG never reported are `503`
//! with `Retry-After`.
use axum::body::Body;
use axum::response::Response;
use http::{header, HeaderValue, StatusCode};

use crate::correlation::Full;
use crate::publish::PublishError;

/// Seconds a client is asked to wait after a 503.
pub const RETRY_AFTER_SECS: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    #[error("no API endpoint matches")]
    NotFound,
    #[error("authentication failed")]
    Unauthorized,
    /// The text is RIG's explanation for a bad broker request body.
    #[error("bad request: {0}")]
    BadRequest(String),
    #[error("request body exceeds {0} bytes")]
    PayloadTooLarge(usize),
    #[error("backend unreachable: {0}")]
    BadGateway(String),
    #[error("backend did not answer in time")]
    BackendTimeout,
    #[error("no asynchronous response in time")]
    ResponseTimeout,
    #[error(transparent)]
    TooManyWaiters(#[from] Full),
    #[error("{0} target is not configured")]
    NoPublisher(&'static str),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error("internal error: {0}")]
    Internal(String),
}

impl ProxyError {
    pub fn status(&self) -> StatusCode {
        match self {
            ProxyError::NotFound => StatusCode::NOT_FOUND,
            ProxyError::Unauthorized => StatusCode::UNAUTHORIZED,
            ProxyError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ProxyError::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ProxyError::BadGateway(_) => StatusCode::BAD_GATEWAY,
            ProxyError::BackendTimeout | ProxyError::ResponseTimeout => StatusCode::GATEWAY_TIMEOUT,
            ProxyError::TooManyWaiters(_) | ProxyError::NoPublisher(_) => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            ProxyError::Publish(e) => match e {
                PublishError::Rejected(_) | PublishError::NoResponders(_) => {
                    StatusCode::BAD_GATEWAY
                }
                PublishError::Unavailable(_) | PublishError::Unsupported(_) => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
                PublishError::Timeout(_) => StatusCode::SERVICE_UNAVAILABLE,
            },
            ProxyError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// The response; `cors` is RIG's `CORS` value, sent where RIG sent CORS headers.
    pub fn into_response(self, cors: &str) -> Response {
        let status = self.status();
        let (content_type, body): (&str, String) = match &self {
            ProxyError::NotFound => ("application/json", r#"{"message":"Not Found"}"#.to_owned()),
            ProxyError::Unauthorized => (
                "text/plain; charset=utf-8",
                "Authentication failed.".to_owned(),
            ),
            ProxyError::BadRequest(text) => ("text/plain; charset=utf-8", text.clone()),
            ProxyError::BadGateway(_) => ("text/plain; charset=utf-8", "Bad gateway.".to_owned()),
            ProxyError::BackendTimeout => {
                ("text/plain; charset=utf-8", "Gateway timeout.".to_owned())
            }
            // RIG answered an async timeout with an empty 504.
            ProxyError::ResponseTimeout => ("text/plain; charset=utf-8", String::new()),
            other => ("text/plain; charset=utf-8", format!("{other}.")),
        };
        let mut response = Response::new(Body::from(body));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECS));
        }
        if !matches!(self, ProxyError::NotFound | ProxyError::BadGateway(_)) {
            crate::inbound::put_cors(headers, cors);
        }
        response
    }
}
