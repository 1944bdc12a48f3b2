//! The inbound side: every request the gateway's own routes did not claim lands here
//! (the inbound port's fallback), is matched against the routing table, authenticated
//! when the endpoint is `secured`, and handed to its target.
//!
//! - `target: http` → [`crate::http`]; with `response_from` other than `http` the
//!   backend gets a correlation id, and a `202` from it means "the answer comes later"
//!   through the correlation table.
//! - `target: kafka | nats` → the body must be a CloudEvent; it is published with RIG's
//!   `rig` metadata added and answered `202` after the broker's ack, or, with
//!   `response_from`, with the correlated response (NATS: request/reply).
//!
//! Errors travel as [`ProxyError`] and become responses in [`crate::error`] only.
use axum::body::{to_bytes, Body};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::Response;
use bytes::Bytes;
use http::request::Parts;
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use serde_json::{json, Map, Value};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tracing::{debug, warn};

use crate::correlation::{AsyncResponse, Waiter, CORRELATION_HEADER, RESPONSE_CODE_HEADER};
use crate::error::ProxyError;
use crate::http::{backend_headers, streamed_response, Origin};
use crate::publish::{Headers, PublishError, Publisher};
use crate::router::{Matched, ResponseFrom, Target, TokenSources};
use crate::Proxy;

/// At most this many tokens are verified per request (headers and query together).
const MAX_TOKENS: usize = 8;

const HELP_KAFKA: &str =
    "Produce the request to a Kafka topic and optionally wait for the (correlated) response.\n\n\
Expects a JSON encoded CloudEvent in the HTTP body.\n\n\
Optionally set a partition key via this field:\n\n\
`rig`: {\"target_partition\":\"the-partition-key\"}\n";
const HELP_NATS: &str =
    "Produce the request to a NATS topic and optionally wait for the response.\n\n\
Expects a JSON encoded CloudEvent in the HTTP body.\n";

/// RIG's CORS headers (`CORS` env, default `*`).
pub fn put_cors(headers: &mut HeaderMap, cors: &str) {
    if let Ok(v) = HeaderValue::from_str(cors) {
        headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
    }
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_METHODS,
        HeaderValue::from_static("*"),
    );
    headers.insert(
        header::ACCESS_CONTROL_ALLOW_HEADERS,
        HeaderValue::from_static("content-type,authorization"),
    );
}

/// The fallback handler.
pub async fn handle(State(proxy): State<Arc<Proxy>>, request: Request) -> Response {
    match proxy.dispatch(request).await {
        Ok(response) => response,
        Err(e) => {
            debug!(error = %e, "Proxy request failed");
            e.into_response(&proxy.config.cors)
        }
    }
}

fn text_response(status: StatusCode, body: &'static str, cors: &str) -> Response {
    let mut r = Response::new(Body::from(body));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    put_cors(r.headers_mut(), cors);
    r
}

fn async_response(resp: AsyncResponse, cors: &str) -> Response {
    let mut r = Response::new(Body::from(resp.body));
    *r.status_mut() = resp.status;
    for (name, value) in resp.headers {
        r.headers_mut().append(name, value);
    }
    put_cors(r.headers_mut(), cors);
    r
}

impl Proxy {
    async fn dispatch(&self, request: Request) -> Result<Response, ProxyError> {
        let table = self.store.table();
        let (parts, body) = request.into_parts();
        let matched = table
            .find(&parts.method, parts.uri.path())
            .ok_or(ProxyError::NotFound)?;
        if matched.api.jwt && matched.endpoint.secured {
            self.authenticate(&matched.api.tokens, &parts)?;
        }
        match matched.endpoint.target {
            Target::Http => self.forward_http(&matched, parts, body).await,
            Target::Kafka | Target::Nats => self.publish_event(&matched, parts, body).await,
        }
    }

    // === auth ===

    fn authenticate(&self, sources: &TokenSources, parts: &Parts) -> Result<(), ProxyError> {
        let verifier = self
            .config
            .verifier
            .as_ref()
            .ok_or(ProxyError::Unauthorized)?;
        let mut tokens: Vec<String> = Vec::new();
        if let Some(name) = &sources.header {
            for value in parts
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
            {
                for credential in value.split(',').map(str::trim).filter(|c| !c.is_empty()) {
                    let bearer = credential
                        .get(..7)
                        .filter(|p| p.eq_ignore_ascii_case("bearer "))
                        .map(|_| credential[7..].trim());
                    match (name == header::AUTHORIZATION, bearer) {
                        (_, Some(t)) => tokens.push(t.to_owned()),
                        // `Authorization` carries only Bearer tokens; custom headers the raw token.
                        (true, None) => {}
                        (false, None) => tokens.push(credential.to_owned()),
                    }
                }
            }
        }
        if let (Some(param), Some(query)) = (&sources.query, parts.uri.query()) {
            for (k, v) in query_pairs(query) {
                if k == *param {
                    tokens.extend(
                        v.split(',')
                            .map(str::trim)
                            .filter(|t| !t.is_empty())
                            .map(str::to_owned),
                    );
                }
            }
        }
        let ok = tokens
            .iter()
            .take(MAX_TOKENS)
            .any(|token| match verifier.verify(token) {
                Ok(claims) => !self
                    .config
                    .session_denied
                    .as_ref()
                    .is_some_and(|denied| denied(&claims)),
                Err(e) => {
                    debug!(error = %e, "Proxy token rejected");
                    false
                }
            });
        if ok {
            Ok(())
        } else {
            Err(ProxyError::Unauthorized)
        }
    }

    // === http target ===

    async fn forward_http(
        &self,
        m: &Matched<'_>,
        parts: Parts,
        body: Body,
    ) -> Result<Response, ProxyError> {
        let backend =
            m.api.backend.as_ref().ok_or_else(|| {
                ProxyError::Internal(format!("API {} has no proxy target", m.api.id))
            })?;
        let waiter = match m.endpoint.response_from {
            ResponseFrom::Http => None,
            _ => Some(self.correlations.register()?),
        };
        let mut query = parts.uri.query().unwrap_or("").to_owned();
        if let Some(w) = &waiter {
            // RIG's way to pass the correlation id to an HTTP backend.
            if !query.is_empty() {
                query.push('&');
            }
            query.push_str("correlation=");
            query.push_str(w.id());
        }
        let url = backend.url(&m.path, Some(&query));
        let add: &[(HeaderName, HeaderValue)] = if m.endpoint.transform_headers {
            &m.api.add_headers
        } else {
            &[]
        };
        let mut headers = backend_headers(
            &parts.headers,
            &backend.authority(),
            &self.origin(&parts),
            add,
        );
        if let Some(w) = &waiter {
            if let Ok(v) = HeaderValue::from_str(w.id()) {
                headers.insert(HeaderName::from_static(CORRELATION_HEADER), v);
            }
        }
        let response = self
            .http
            .send(parts.method.clone(), &url, headers, body)
            .await;
        let response = match response {
            Ok(r) => r,
            Err(e) => {
                if matches!(e, ProxyError::BadGateway(_) | ProxyError::BackendTimeout) {
                    warn!(api = %m.api.id, endpoint = %m.endpoint.id, url = %url, error = %e, "Proxying to the backend failed");
                }
                return Err(e);
            }
        };
        match waiter {
            Some(w) if response.status() == StatusCode::ACCEPTED => {
                drop(response);
                self.wait(w, m.endpoint.response_from).await
            }
            _ => Ok(streamed_response(response)),
        }
    }

    fn origin<'a>(&'a self, parts: &Parts) -> Origin<'a> {
        Origin {
            client_ip: parts
                .extensions
                .get::<ConnectInfo<SocketAddr>>()
                .map(|ConnectInfo(addr)| addr.ip()),
            gateway: self.config.forwarded_by.as_deref(),
            scheme: &self.config.scheme,
        }
    }

    fn response_timeout(&self, from: ResponseFrom) -> Duration {
        let t = &self.config.timeouts;
        match from {
            ResponseFrom::HttpAsync | ResponseFrom::Http => t.http_async_response,
            ResponseFrom::Kafka => t.kafka_response,
            ResponseFrom::Nats => t.nats_response,
        }
    }

    async fn wait(&self, waiter: Waiter, from: ResponseFrom) -> Result<Response, ProxyError> {
        let id = waiter.id().to_owned();
        match waiter.wait(self.response_timeout(from)).await {
            Some(resp) => Ok(async_response(resp, &self.config.cors)),
            None => {
                debug!(correlation = %id, response_from = from.as_str(), "No asynchronous response in time");
                Err(ProxyError::ResponseTimeout)
            }
        }
    }

    // === kafka / nats targets ===

    async fn publish_event(
        &self,
        m: &Matched<'_>,
        parts: Parts,
        body: Body,
    ) -> Result<Response, ProxyError> {
        let cors = &self.config.cors;
        if parts.method == Method::OPTIONS {
            // CORS preflight, as RIG answered it for broker targets.
            return Ok(text_response(StatusCode::NO_CONTENT, "", cors));
        }
        let (publisher, help, name): (&Option<Arc<dyn Publisher>>, &str, &'static str) =
            match m.endpoint.target {
                Target::Kafka => (&self.config.kafka, HELP_KAFKA, "kafka"),
                _ => (&self.config.nats, HELP_NATS, "nats"),
            };
        let publisher = publisher.as_ref().ok_or(ProxyError::NoPublisher(name))?;
        let topic = m.endpoint.topic.as_deref().unwrap_or_default();
        let body = read_body(body, self.http.max_body()).await?;
        let bad = |reason: &str| {
            ProxyError::BadRequest(format!("Bad request: {reason}.\n\n# Usage\n\n{help}"))
        };
        let mut event = match serde_json::from_slice::<Value>(&body) {
            Ok(Value::Object(e)) if e.contains_key("specversion") => e,
            Ok(_) => return Err(bad("the body does not look like a CloudEvent")),
            Err(_) => return Err(bad("expected a JSON encoded request body")),
        };
        let key = event
            .get("rig")
            .and_then(|r| r.get("target_partition"))
            .and_then(|p| match p {
                Value::String(s) => Some(s.clone().into_bytes()),
                Value::Null => None,
                other => Some(other.to_string().into_bytes()),
            });
        let waiter = match m.endpoint.response_from {
            ResponseFrom::Http => None,
            _ => Some(self.correlations.register()?),
        };
        let correlation = waiter
            .as_ref()
            .map(|w| w.id().to_owned())
            .unwrap_or_else(|| uuid::Uuid::new_v4().simple().to_string());
        event.insert(
            "rig".to_owned(),
            self.rig_metadata(&parts, &m.path, &correlation),
        );
        for name in ["traceparent", "tracestate"] {
            if let Some(v) = parts.headers.get(name).and_then(|v| v.to_str().ok()) {
                event
                    .entry(name)
                    .or_insert_with(|| Value::String(v.to_owned()));
            }
        }
        let payload = Bytes::from(
            serde_json::to_vec(&Value::Object(event))
                .map_err(|e| ProxyError::Internal(e.to_string()))?,
        );
        let headers: Headers = vec![(
            "content-type".to_owned(),
            Bytes::from_static(b"application/cloudevents+json"),
        )];

        if m.endpoint.target == Target::Nats && m.endpoint.response_from == ResponseFrom::Nats {
            return self
                .nats_request(publisher.as_ref(), topic, headers, payload, waiter)
                .await;
        }
        publisher
            .publish(topic, key.as_deref(), headers, payload)
            .await
            .inspect_err(|e| warn!(api = %m.api.id, endpoint = %m.endpoint.id, topic, error = %e, "Publishing a proxy request failed"))?;
        match waiter {
            Some(w) => self.wait(w, m.endpoint.response_from).await,
            None => Ok(text_response(StatusCode::ACCEPTED, "Accepted.", cors)),
        }
    }

    /// RIG's `response_from: nats`: a NATS request; the reply is the response (status
    /// from a `rig-response-code` header, else 200 JSON). A correlated response posted
    /// to `/v3/responses` meanwhile is accepted too.
    async fn nats_request(
        &self,
        publisher: &dyn Publisher,
        topic: &str,
        headers: Headers,
        payload: Bytes,
        waiter: Option<Waiter>,
    ) -> Result<Response, ProxyError> {
        let timeout = self.config.timeouts.nats_response;
        let cors = &self.config.cors;
        let waiter = waiter
            .ok_or_else(|| ProxyError::Internal("no waiter for a NATS request".to_owned()))?;
        let request = publisher.request(topic, headers, payload, timeout);
        tokio::select! {
            reply = request => match reply {
                Ok(reply) => {
                    let mut status = StatusCode::OK;
                    let mut r = Response::new(Body::from(reply.payload));
                    for (name, value) in &reply.headers {
                        if name.eq_ignore_ascii_case(RESPONSE_CODE_HEADER) {
                            if let Some(s) = std::str::from_utf8(value).ok().and_then(|s| s.trim().parse::<u16>().ok()).and_then(|c| StatusCode::from_u16(c).ok()) {
                                status = s;
                            }
                        } else if name.eq_ignore_ascii_case(CORRELATION_HEADER) {
                        } else if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()), HeaderValue::from_bytes(value)) {
                            r.headers_mut().append(n, v);
                        }
                    }
                    if !r.headers().contains_key(header::CONTENT_TYPE) {
                        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
                    }
                    *r.status_mut() = status;
                    put_cors(r.headers_mut(), cors);
                    Ok(r)
                }
                Err(PublishError::Timeout(_)) => Err(ProxyError::ResponseTimeout),
                Err(e) => Err(e.into()),
            },
            resp = waiter.wait(timeout) => match resp {
                Some(resp) => Ok(async_response(resp, cors)),
                None => Err(ProxyError::ResponseTimeout),
            },
        }
    }

    /// RIG's `rig` extension of a produced request.
    fn rig_metadata(&self, parts: &Parts, path: &str, correlation: &str) -> Value {
        let host_header = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| parts.uri.authority().map(|a| a.as_str()))
            .unwrap_or("");
        let (host, port) = match host_header.rsplit_once(':') {
            Some((h, p)) if !p.contains(']') => (h.to_owned(), p.parse::<u16>().ok()),
            _ => (host_header.to_owned(), None),
        };
        let port = port.unwrap_or(if self.config.scheme == "https" {
            443
        } else {
            80
        });
        let headers: Vec<Value> = parts
            .headers
            .iter()
            .map(|(k, v)| json!([k.as_str(), String::from_utf8_lossy(v.as_bytes())]))
            .collect();
        let remote = self
            .origin(parts)
            .client_ip
            .map(|ip| ip.to_canonical().to_string())
            .unwrap_or_default();
        let mut rig = Map::new();
        rig.insert("correlation".into(), json!(correlation));
        rig.insert("remoteip".into(), json!(remote));
        rig.insert("host".into(), json!(host));
        rig.insert("port".into(), json!(port));
        rig.insert("scheme".into(), json!(self.config.scheme));
        rig.insert("headers".into(), Value::Array(headers));
        rig.insert("method".into(), json!(parts.method.as_str()));
        rig.insert("path".into(), json!(path));
        rig.insert("query".into(), json!(parts.uri.query().unwrap_or("")));
        Value::Object(rig)
    }
}

/// Reads a whole (small) body with a limit: broker targets and `/v3/responses`.
pub async fn read_body(body: Body, max: usize) -> Result<Bytes, ProxyError> {
    to_bytes(body, max).await.map_err(|e| {
        let inner = e.into_inner();
        if inner
            .downcast_ref::<http_body_util::LengthLimitError>()
            .is_some()
        {
            ProxyError::PayloadTooLarge(max)
        } else {
            ProxyError::BadRequest(format!("reading the request body: {inner}"))
        }
    })
}

/// `a=1&b=x%20y` → pairs, percent- and `+`-decoded.
pub fn query_pairs(query: &str) -> Vec<(String, String)> {
    match reqwest::Url::parse(&format!("http://q/?{query}")) {
        Ok(url) => url
            .query_pairs()
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect(),
        Err(_) => Vec::new(),
    }
}
