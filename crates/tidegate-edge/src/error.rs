//! The one place errors become HTTP responses: a status, a one-line text reason, and
//! `Retry-After` where waiting helps.
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use tidegate_hub::HubError;
use tidegate_log::LogError;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub reason: String,
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, reason: impl Into<String>) -> Self {
        ApiError {
            status,
            reason: reason.into(),
            retry_after: None,
        }
    }
    pub fn bad_request(reason: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, reason)
    }
    pub fn unavailable(reason: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            reason: reason.into(),
            retry_after: Some(retry_after),
        }
    }
    pub fn too_many(reason: impl Into<String>, retry_after: u64) -> Self {
        ApiError {
            status: StatusCode::TOO_MANY_REQUESTS,
            reason: reason.into(),
            retry_after: Some(retry_after),
        }
    }
    pub fn from_status(status: u16, reason: impl Into<String>) -> Self {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
        let mut e = Self::new(status, reason);
        if status == StatusCode::SERVICE_UNAVAILABLE {
            e.retry_after = Some(1);
        }
        e
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = self.reason;
        body.push('\n');
        let mut resp = (self.status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        if let Some(secs) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

impl From<HubError> for ApiError {
    fn from(e: HubError) -> Self {
        let reason = e.to_string();
        match e {
            HubError::Overloaded | HubError::ShuttingDown | HubError::Log(_) => {
                ApiError::unavailable(reason, 1)
            }
            HubError::TooManyConnections => ApiError::unavailable(reason, 5),
            HubError::ForeignCursor | HubError::BadCursor | HubError::UnknownToken => {
                ApiError::bad_request(reason)
            }
            HubError::Gone => ApiError::new(StatusCode::GONE, "connection no longer exists"),
        }
    }
}

impl From<LogError> for ApiError {
    fn from(e: LogError) -> Self {
        match &e {
            LogError::RecordTooLarge(..) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, e.to_string())
            }
            LogError::Overloaded => ApiError::unavailable(e.to_string(), 1),
            LogError::UnknownStream(_) | LogError::InvalidStreamName(_) => {
                ApiError::bad_request(e.to_string())
            }
            // Nothing was acknowledged; the producer may retry.
            _ => ApiError::unavailable(format!("event could not be stored: {e}"), 1),
        }
    }
}

pub type ApiResult<T> = Result<T, ApiError>;
