//! The correlation table: requests waiting for an asynchronous response
//! (`response_from: http_async | kafka | nats`), keyed by the correlation id Tidegate
//! sends along (`correlation` query parameter and `rig-correlation` header for HTTP
//! backends, `rig.correlation` in produced events).
//!
//! A request [`Correlations::register`]s a [`Waiter`] (bounded: when the table is full
//! the request is refused with 503 instead of growing memory), sends its request, then
//! awaits the waiter. Whoever receives a response — `POST /v3/responses`, the Kafka
//! response consumer — calls [`Correlations::resolve`]. Dropping a waiter (timeout,
//! client gone) removes its entry, so the table only holds live requests.
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::oneshot;

/// The header carrying the correlation id, both ways.
pub const CORRELATION_HEADER: &str = "rig-correlation";
/// The header carrying the HTTP status of an asynchronous response.
pub const RESPONSE_CODE_HEADER: &str = "rig-response-code";

/// What the waiting client gets.
#[derive(Debug, Clone)]
pub struct AsyncResponse {
    pub status: StatusCode,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub body: Bytes,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ParseError {
    #[error("missing header `rig-correlation` (or `rig.correlation` in the JSON body)")]
    MissingCorrelation,
    #[error("missing header `rig-response-code`")]
    MissingResponseCode,
    #[error("`rig-response-code` is not an HTTP status code: {0}")]
    BadResponseCode(String),
}

/// Headers of a response message that are not passed on to the waiting client.
fn forwardable(name: &str) -> bool {
    !matches!(
        name,
        CORRELATION_HEADER
            | RESPONSE_CODE_HEADER
            | "host"
            | "content-length"
            | "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "expect"
            | "accept"
            | "accept-encoding"
            | "accept-language"
            | "authorization"
            | "cookie"
            | "user-agent"
            | "origin"
            | "referer"
            | "forwarded"
            | "x-forwarded-for"
            | "x-forwarded-host"
            | "x-forwarded-proto"
            | "http2-settings"
    )
}

/// RIG's response format (binary mode): `rig-correlation` and `rig-response-code`
/// headers, the body as is, the other headers (`content-type`…) passed on. When the
/// header is missing, `rig.correlation` of a JSON body is used (RIG's documentation of
/// `/v3/responses` promised it); the status then defaults to 200.
pub fn parse_response<'a>(
    headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    body: Bytes,
) -> Result<(String, AsyncResponse), ParseError> {
    let mut correlation = None;
    let mut code = None;
    let mut extra = Vec::new();
    for (name, value) in headers {
        let lower = name.to_ascii_lowercase();
        match lower.as_str() {
            CORRELATION_HEADER => {
                correlation = Some(String::from_utf8_lossy(value).trim().to_owned())
            }
            RESPONSE_CODE_HEADER => code = Some(String::from_utf8_lossy(value).trim().to_owned()),
            n if forwardable(n) => {
                if let (Ok(n), Ok(v)) = (
                    HeaderName::from_bytes(n.as_bytes()),
                    HeaderValue::from_bytes(value),
                ) {
                    extra.push((n, v));
                }
            }
            _ => {}
        }
    }
    let from_body = correlation.is_none();
    let correlation = match correlation.filter(|c| !c.is_empty()) {
        Some(c) => c,
        None => serde_json::from_slice::<serde_json::Value>(&body)
            .ok()
            .and_then(|v| {
                v.pointer("/rig/correlation")
                    .and_then(|c| c.as_str())
                    .map(str::to_owned)
            })
            .ok_or(ParseError::MissingCorrelation)?,
    };
    let status = match code {
        Some(code) => code
            .parse::<u16>()
            .ok()
            .and_then(|c| StatusCode::from_u16(c).ok())
            .ok_or(ParseError::BadResponseCode(code))?,
        None if from_body => StatusCode::OK,
        None => return Err(ParseError::MissingResponseCode),
    };
    Ok((
        correlation,
        AsyncResponse {
            status,
            headers: extra,
            body,
        },
    ))
}

/// [`parse_response`] over an HTTP header map.
pub fn parse_http_response(
    headers: &HeaderMap,
    body: Bytes,
) -> Result<(String, AsyncResponse), ParseError> {
    parse_response(
        headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())),
        body,
    )
}

#[derive(Debug, thiserror::Error)]
#[error("too many requests waiting for asynchronous responses (limit {max})")]
pub struct Full {
    pub max: usize,
}

/// The bounded table of waiting requests.
#[derive(Debug)]
pub struct Correlations {
    waiting: Mutex<HashMap<String, oneshot::Sender<AsyncResponse>>>,
    max: usize,
}

impl Correlations {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            waiting: Mutex::new(HashMap::new()),
            max: max.max(1),
        })
    }

    /// A new waiter under a fresh correlation id, or [`Full`].
    pub fn register(self: &Arc<Self>) -> Result<Waiter, Full> {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let (tx, rx) = oneshot::channel();
        {
            let mut waiting = self.waiting.lock();
            if waiting.len() >= self.max {
                return Err(Full { max: self.max });
            }
            waiting.insert(id.clone(), tx);
        }
        Ok(Waiter {
            id,
            rx: Some(rx),
            table: self.clone(),
        })
    }

    /// Hands `response` to the request waiting under `id`; false when nobody waits
    /// (timed out, or the request is on another node).
    pub fn resolve(&self, id: &str, response: AsyncResponse) -> bool {
        let sender = self.waiting.lock().remove(id);
        match sender {
            Some(tx) => tx.send(response).is_ok(),
            None => false,
        }
    }

    pub fn len(&self) -> usize {
        self.waiting.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One waiting request; removes itself from the table when dropped.
#[derive(Debug)]
pub struct Waiter {
    id: String,
    rx: Option<oneshot::Receiver<AsyncResponse>>,
    table: Arc<Correlations>,
}

impl Waiter {
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The response, or `None` after `timeout`.
    pub async fn wait(mut self, timeout: Duration) -> Option<AsyncResponse> {
        let rx = self.rx.take()?;
        match tokio::time::timeout(timeout, rx).await {
            Ok(Ok(response)) => Some(response),
            _ => None,
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        self.table.waiting.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_and_cleaned_up() {
        let table = Correlations::new(2);
        let a = table.register().unwrap();
        let b = table.register().unwrap();
        assert!(table.register().is_err());
        drop(a);
        assert_eq!(table.len(), 1);
        let resp = AsyncResponse {
            status: StatusCode::CREATED,
            headers: vec![],
            body: Bytes::from_static(b"x"),
        };
        let id = b.id().to_owned();
        assert!(table.resolve(&id, resp.clone()));
        assert_eq!(
            b.wait(Duration::from_secs(1)).await.unwrap().status,
            StatusCode::CREATED
        );
        assert!(!table.resolve(&id, resp));
        assert!(table.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn wait_times_out() {
        let table = Correlations::new(1);
        let w = table.register().unwrap();
        assert!(w.wait(Duration::from_secs(5)).await.is_none());
        assert!(table.is_empty());
    }

    #[test]
    fn parses_rig_format() {
        let headers = [
            ("rig-correlation", &b"abc"[..]),
            ("rig-response-code", b"201"),
            ("content-type", b"application/json"),
            ("user-agent", b"curl"),
        ];
        let (id, r) = parse_response(headers, Bytes::from_static(b"{}")).unwrap();
        assert_eq!(id, "abc");
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.headers.len(), 1);
        let err = parse_response([("rig-correlation", &b"abc"[..])], Bytes::new()).unwrap_err();
        assert_eq!(err, ParseError::MissingResponseCode);
        let (id, r) =
            parse_response([], Bytes::from_static(br#"{"rig":{"correlation":"z"}}"#)).unwrap();
        assert_eq!((id.as_str(), r.status), ("z", StatusCode::OK));
        assert!(parse_response(
            [
                ("rig-correlation", &b"a"[..]),
                ("rig-response-code", b"abc")
            ],
            Bytes::new()
        )
        .is_err());
    }
}
