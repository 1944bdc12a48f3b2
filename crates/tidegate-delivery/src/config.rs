//! Route configuration: one `[[routes]]` table per ingestion route, with its
//! delivery settings in `[routes.delivery]`. Everything has a default except
//! `name` and `path`; [`RouteConfig::validate`] names the offending setting.
use serde::{Deserialize, Serialize};

/// One ingestion route: where requests come in, how they are acknowledged, and
/// where the stored messages go.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct RouteConfig {
    /// Route name: used in the internal API (`/v3/routes/{name}`), in metric
    /// labels, and as the default stream name (`[A-Za-z0-9._-]`).
    pub name: String,
    /// HTTP method accepted on `path` (default `POST`).
    pub method: String,
    /// Static path on the inbound port, e.g. `/leads` (no `{params}`; not
    /// under `/_rig` or `/_tidegate`).
    pub path: String,
    /// Log stream the messages are appended to (default: the route name).
    /// Dead letters go to `<stream>.dlq`.
    pub stream: Option<String>,
    /// Largest accepted body; bigger requests get `413`.
    pub max_body_bytes: usize,
    /// Accepted media types (`application/json`, compared without
    /// parameters, case-insensitively); empty = any. Others get `415`.
    pub content_types: Vec<String>,
    /// Refuse bodies that are not well-formed JSON with `400`.
    pub validate_json: bool,
    /// Requests per second per client address; 0 = unlimited. Over it: `429`.
    pub rate_per_client: f64,
    pub burst_per_client: u32,
    /// Acknowledgement status (default 202).
    pub ack_status: u16,
    /// Acknowledgement body; `{id}` is replaced by the message id.
    pub ack_body: String,
    pub ack_content_type: String,
    /// Request headers stored with the message (and forwarded to the backend).
    pub keep_headers: Vec<String>,
    pub delivery: DeliveryConfig,
}

/// How a route's messages reach its backend(s).
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(default, deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Backend URLs, tried round-robin (each behind its own circuit breaker).
    /// Empty = store only, no delivery worker.
    pub backends: Vec<String>,
    /// Method of the backend call (default `POST`).
    pub method: String,
    /// Deliveries per second (all backends together); 0 = unlimited.
    pub rate_per_second: f64,
    pub burst: u32,
    /// Calls in flight at most (the maximum, when adaptive).
    pub concurrency: usize,
    /// AIMD concurrency between 1 and `concurrency` instead of a fixed cap.
    pub adaptive_concurrency: bool,
    /// Per-call timeout.
    pub timeout_ms: u64,
    /// Attempts before dead-lettering (the first one included).
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_cap_ms: u64,
    /// A `Retry-After` longer than this is cut to it.
    pub max_retry_after_secs: u64,
    /// A message older than this (since it was received) is dead-lettered
    /// instead of retried again; 0 = no age limit.
    pub max_age_secs: u64,
    /// Messages read ahead and being worked on at most (the in-flight window;
    /// the committed position never passes the oldest of them).
    pub window: usize,
    /// Consecutive failures that open a backend's breaker.
    pub breaker_failures: u32,
    /// How long an open breaker refuses calls before probing.
    pub breaker_open_ms: u64,
    /// Forward the stored `keep_headers` to the backend.
    pub forward_headers: bool,
}

impl Default for RouteConfig {
    fn default() -> Self {
        RouteConfig {
            name: String::new(),
            method: "POST".into(),
            path: String::new(),
            stream: None,
            max_body_bytes: 256 << 10,
            content_types: Vec::new(),
            validate_json: false,
            rate_per_client: 0.0,
            burst_per_client: 20,
            ack_status: 202,
            ack_body: r#"{"id":"{id}"}"#.into(),
            ack_content_type: "application/json".into(),
            keep_headers: Vec::new(),
            delivery: DeliveryConfig::default(),
        }
    }
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            backends: Vec::new(),
            method: "POST".into(),
            rate_per_second: 0.0,
            burst: 10,
            concurrency: 16,
            adaptive_concurrency: false,
            timeout_ms: 10_000,
            max_attempts: 10,
            backoff_base_ms: 100,
            backoff_cap_ms: 30_000,
            max_retry_after_secs: 300,
            max_age_secs: 24 * 3600,
            window: 256,
            breaker_failures: 5,
            breaker_open_ms: 5_000,
            forward_headers: true,
        }
    }
}

/// `[A-Za-z0-9._-]{1,190}`: the log's stream name rule, leaving room for `.dlq`.
fn valid_name(s: &str) -> bool {
    (1..=190).contains(&s.len())
        && s != "."
        && s != ".."
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

impl RouteConfig {
    /// The log stream of the route.
    pub fn stream(&self) -> &str {
        self.stream.as_deref().unwrap_or(&self.name)
    }

    /// The dead-letter stream of the route.
    pub fn dlq_stream(&self) -> String {
        format!("{}.dlq", self.stream())
    }

    /// Checks one route; the error is `(setting, message)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let at = |field: &str| format!("routes.{}.{field}", self.name);
        let err = |field: &str, msg: &str| Err((at(field), msg.to_string()));
        if !valid_name(&self.name) {
            return Err((
                "routes.name".into(),
                format!("`{}` must match [A-Za-z0-9._-]{{1,190}}", self.name),
            ));
        }
        if !valid_name(self.stream()) {
            return err("stream", "must match [A-Za-z0-9._-]{1,190}");
        }
        if self.stream().ends_with(".dlq") {
            return err(
                "stream",
                "must not end with .dlq (reserved for dead letters)",
            );
        }
        if http_method(&self.method).is_none() {
            return err("method", "not an HTTP method");
        }
        let p = &self.path;
        if !p.starts_with('/')
            || p.contains(['{', '}', '*', '?', '#', ' '])
            || p.contains("//")
            || p.starts_with("/_rig")
            || p.starts_with("/_tidegate")
        {
            return err(
                "path",
                "must be a static path starting with / (no {params}, not under /_rig or /_tidegate)",
            );
        }
        if self.max_body_bytes == 0 {
            return err("max_body_bytes", "must be at least 1");
        }
        if !(self.rate_per_client >= 0.0 && self.rate_per_client.is_finite()) {
            return err("rate_per_client", "must be a finite number >= 0");
        }
        if !(200..=299).contains(&self.ack_status) {
            return err("ack_status", "must be a 2xx status");
        }
        for h in &self.keep_headers {
            if h.is_empty() || !h.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return err("keep_headers", "header names are letters, digits and -");
            }
        }
        let d = &self.delivery;
        for url in &d.backends {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return err(
                    "delivery.backends",
                    "URLs must start with http:// or https://",
                );
            }
        }
        if http_method(&d.method).is_none() {
            return err("delivery.method", "not an HTTP method");
        }
        if !(d.rate_per_second >= 0.0 && d.rate_per_second.is_finite()) {
            return err("delivery.rate_per_second", "must be a finite number >= 0");
        }
        if d.concurrency == 0 || d.window == 0 || d.max_attempts == 0 {
            return err(
                "delivery",
                "concurrency, window and max_attempts must be at least 1",
            );
        }
        if d.backoff_base_ms == 0 || d.backoff_cap_ms < d.backoff_base_ms {
            return err(
                "delivery.backoff_base_ms",
                "need 0 < base <= backoff_cap_ms",
            );
        }
        if d.timeout_ms == 0 || d.breaker_failures == 0 || d.breaker_open_ms == 0 {
            return err(
                "delivery",
                "timeout_ms, breaker_failures and breaker_open_ms must be at least 1",
            );
        }
        Ok(())
    }
}

/// Checks a list of routes: each valid, names, streams and (method, path) unique.
pub fn validate_routes(routes: &[RouteConfig]) -> Result<(), (String, String)> {
    let mut names = std::collections::HashSet::new();
    let mut streams = std::collections::HashSet::new();
    let mut endpoints = std::collections::HashSet::new();
    for r in routes {
        r.validate()?;
        if !names.insert(r.name.as_str()) {
            return Err(("routes.name".into(), format!("`{}` is used twice", r.name)));
        }
        if !streams.insert(r.stream()) {
            return Err((
                format!("routes.{}.stream", r.name),
                format!("stream `{}` is used by two routes", r.stream()),
            ));
        }
        if !endpoints.insert((r.method.to_ascii_uppercase(), r.path.as_str())) {
            return Err((
                format!("routes.{}.path", r.name),
                format!("{} {} is defined twice", r.method, r.path),
            ));
        }
    }
    Ok(())
}

/// The method, if it is one reqwest and axum both accept.
pub fn http_method(m: &str) -> Option<reqwest::Method> {
    let m = m.to_ascii_uppercase();
    match m.as_str() {
        "GET" | "POST" | "PUT" | "PATCH" | "DELETE" => {
            reqwest::Method::from_bytes(m.as_bytes()).ok()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, path: &str) -> RouteConfig {
        RouteConfig {
            name: name.into(),
            path: path.into(),
            ..Default::default()
        }
    }

    #[test]
    fn defaults_are_valid_and_documented_values() {
        let r = route("leads", "/leads");
        r.validate().unwrap();
        assert_eq!(r.stream(), "leads");
        assert_eq!(r.dlq_stream(), "leads.dlq");
        assert_eq!(r.ack_status, 202);
    }

    #[test]
    fn bad_settings_are_named() {
        let e = route("a b", "/x").validate().unwrap_err();
        assert_eq!(e.0, "routes.name");
        let e = route("a", "/_rig/x").validate().unwrap_err();
        assert!(e.0.ends_with(".path"), "{e:?}");
        let e = route("a", "/x/{id}").validate().unwrap_err();
        assert!(e.0.ends_with(".path"), "{e:?}");
        let mut r = route("a", "/x");
        r.delivery.backends = vec!["ftp://x".into()];
        assert!(r.validate().unwrap_err().0.ends_with("delivery.backends"));
        let e = validate_routes(&[route("a", "/x"), route("b", "/x")]).unwrap_err();
        assert!(e.1.contains("twice"), "{e:?}");
    }
}
