//! The synchronous reverse proxy: one request to an HTTP backend, bodies streamed both
//! ways (never buffered whole), headers rewritten as RIG did.
//!
//! Request headers: hop-by-hop headers (and those named in `Connection`) are dropped;
//! `host` becomes the backend's `host:port`; `forwarded` is replaced with
//! `for=<client>;by=<gateway>`; `x-forwarded-for/-host/-proto` are replaced likewise
//! (never appended to, so a client cannot spoof them); endpoints with
//! `transform_request_headers` get the API's `add_headers` last, so they can even
//! override `host`. Response headers: hop-by-hop headers are dropped.
//!
//! Errors: connect failure → 502, no response head within `PROXY_RECV_TIMEOUT` → 504,
//! a request body over the limit → 413 (checked on `content-length` up front and
//! counted while streaming).
use axum::body::{Body, HttpBody};
use axum::response::Response;
use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::ProxyError;

/// RFC 9110 §7.6.1 hop-by-hop headers, plus those RIG dropped for HTTP/2's sake.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// Removes hop-by-hop headers and every header the `Connection` header names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().to_ascii_lowercase().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP.iter().chain(["http2-settings"].iter()) {
        headers.remove(*name);
    }
}

/// `for=` / `by=` node of a `forwarded` header: IPv6 quoted and bracketed (RFC 7239).
fn forwarded_node(ip: &str) -> String {
    if ip.contains(':') {
        format!("\"[{ip}]\"")
    } else {
        ip.to_owned()
    }
}

/// Who the request came from and through which gateway, for the forwarding headers.
pub struct Origin<'a> {
    pub client_ip: Option<IpAddr>,
    /// `by=` of `forwarded` (RIG: the gateway's own address); omitted when `None`.
    pub gateway: Option<&'a str>,
    /// `x-forwarded-proto`.
    pub scheme: &'a str,
}

/// The backend's request headers, from the client's.
pub fn backend_headers(
    incoming: &HeaderMap,
    authority: &str,
    origin: &Origin<'_>,
    add: &[(HeaderName, HeaderValue)],
) -> HeaderMap {
    let mut headers = incoming.clone();
    strip_hop_by_hop(&mut headers);
    let original_host = headers.remove(header::HOST);
    for name in [
        "forwarded",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
    ] {
        headers.remove(name);
    }
    if let Ok(v) = HeaderValue::from_str(authority) {
        headers.insert(header::HOST, v);
    }
    if let Some(ip) = origin.client_ip {
        let ip = ip.to_canonical().to_string();
        let mut forwarded = format!("for={}", forwarded_node(&ip));
        if let Some(by) = origin.gateway {
            forwarded.push_str(&format!(";by={}", forwarded_node(by)));
        }
        if let Ok(v) = HeaderValue::from_str(&forwarded) {
            headers.insert(HeaderName::from_static("forwarded"), v);
        }
        if let Ok(v) = HeaderValue::from_str(&ip) {
            headers.insert(HeaderName::from_static("x-forwarded-for"), v);
        }
    }
    if let Some(host) = original_host {
        headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    if let Ok(v) = HeaderValue::from_str(origin.scheme) {
        headers.insert(HeaderName::from_static("x-forwarded-proto"), v);
    }
    for (name, value) in add {
        headers.insert(name.clone(), value.clone());
    }
    headers
}

#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("request body exceeds {0} bytes")]
    TooLarge(usize),
    #[error("reading the request body: {0}")]
    Client(#[from] axum::Error),
}

/// The HTTP client of the proxy (one connection pool for every backend).
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    recv_timeout: Duration,
    max_body: usize,
}

impl HttpClient {
    pub fn new(
        connect_timeout: Duration,
        recv_timeout: Duration,
        max_body: usize,
    ) -> Result<Self, ProxyError> {
        let client = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .read_timeout(recv_timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| ProxyError::Internal(format!("building the HTTP client: {e}")))?;
        Ok(Self {
            client,
            recv_timeout,
            max_body,
        })
    }

    pub fn max_body(&self) -> usize {
        self.max_body
    }

    /// Sends the request with `body` streamed through; returns the backend's response
    /// head (its body still streaming).
    pub async fn send(
        &self,
        method: Method,
        url: &str,
        headers: HeaderMap,
        body: Body,
    ) -> Result<reqwest::Response, ProxyError> {
        let declared = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok());
        if declared.is_some_and(|n| n > self.max_body as u64) {
            return Err(ProxyError::PayloadTooLarge(self.max_body));
        }
        let mut request = self.client.request(method, url).headers(headers);
        let too_large = Arc::new(AtomicBool::new(false));
        if !body.is_end_stream() {
            let max = self.max_body;
            let flag = too_large.clone();
            let mut seen = 0usize;
            let stream = body
                .into_data_stream()
                .map_err(BodyError::Client)
                .map(move |chunk| {
                    let chunk: Bytes = chunk?;
                    seen = seen.saturating_add(chunk.len());
                    if seen > max {
                        flag.store(true, Ordering::Relaxed);
                        return Err(BodyError::TooLarge(max));
                    }
                    Ok(chunk)
                });
            request = request.body(reqwest::Body::wrap_stream(stream));
        }
        match tokio::time::timeout(self.recv_timeout, request.send()).await {
            Err(_) => Err(ProxyError::BackendTimeout),
            Ok(Ok(response)) => Ok(response),
            Ok(Err(_)) if too_large.load(Ordering::Relaxed) => {
                Err(ProxyError::PayloadTooLarge(self.max_body))
            }
            Ok(Err(e)) if e.is_timeout() => Err(ProxyError::BackendTimeout),
            Ok(Err(e)) => Err(ProxyError::BadGateway(error_chain(&e))),
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// The client's response: the backend's status, headers (hop-by-hop removed) and
/// streamed body.
pub fn streamed_response(response: reqwest::Response) -> Response {
    let status = response.status();
    let mut headers = response.headers().clone();
    strip_hop_by_hop(&mut headers);
    let mut out = Response::new(Body::from_stream(response.bytes_stream()));
    *out.status_mut() = status;
    *out.headers_mut() = headers;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_rewritten() {
        let mut incoming = HeaderMap::new();
        incoming.insert("host", HeaderValue::from_static("gw.example:4000"));
        incoming.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-secret"),
        );
        incoming.insert("x-secret", HeaderValue::from_static("1"));
        incoming.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        incoming.insert("forwarded", HeaderValue::from_static("for=6.6.6.6"));
        incoming.insert("x-forwarded-for", HeaderValue::from_static("6.6.6.6"));
        incoming.insert("accept", HeaderValue::from_static("text/plain"));
        let origin = Origin {
            client_ip: Some("10.0.0.1".parse().unwrap()),
            gateway: Some("10.0.0.2"),
            scheme: "http",
        };
        let add = [(
            HeaderName::from_static("x-added"),
            HeaderValue::from_static("yes"),
        )];
        let h = backend_headers(&incoming, "backend:8080", &origin, &add);
        assert_eq!(h["host"], "backend:8080");
        assert_eq!(h["forwarded"], "for=10.0.0.1;by=10.0.0.2");
        assert_eq!(h["x-forwarded-for"], "10.0.0.1");
        assert_eq!(h["x-forwarded-host"], "gw.example:4000");
        assert_eq!(h["x-added"], "yes");
        assert_eq!(h["accept"], "text/plain");
        assert!(
            h.get("x-secret").is_none()
                && h.get("keep-alive").is_none()
                && h.get("connection").is_none()
        );
    }

    #[test]
    fn ipv6_forwarded_is_quoted() {
        let origin = Origin {
            client_ip: Some("::1".parse().unwrap()),
            gateway: None,
            scheme: "https",
        };
        let h = backend_headers(&HeaderMap::new(), "b:1", &origin, &[]);
        assert_eq!(h["forwarded"], "for=\"[::1]\"");
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
