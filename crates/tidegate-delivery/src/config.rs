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
    /// JSON Schema the body must match (`422` otherwise): a file path
    /// (relative to the working directory), or inline JSON when the string
    /// starts with `{`. Compiled once at start-up by [`RouteConfig::compile_schema`];
    /// implies JSON (`400` when the body is not). No remote `$ref` is ever
    /// fetched: `http(s)://` and `file://` references fail at start-up.
    pub json_schema: Option<String>,
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
    /// Per-key ordering: `header:<Name>` (the header must be in the route's
    /// `keep_headers`) or `json:<JSON pointer>` into the body, e.g.
    /// `json:/customerId`. Messages with the same key are delivered one at a
    /// time in log order; messages without the key are unordered. Unset = no
    /// ordering. See [`OrderBy`].
    pub order_by: Option<String>,
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
            json_schema: None,
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
            order_by: None,
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
        if self
            .json_schema
            .as_deref()
            .is_some_and(|s| s.trim().is_empty())
        {
            return err("json_schema", "must be a file path or inline JSON");
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
        if let Some(o) = &d.order_by {
            match OrderBy::parse(o) {
                Err(msg) => return err("delivery.order_by", msg),
                Ok(OrderBy::Header(h))
                    if !self.keep_headers.iter().any(|k| k.eq_ignore_ascii_case(&h)) =>
                {
                    return err(
                        "delivery.order_by",
                        "the header must be listed in keep_headers (only kept headers are stored)",
                    );
                }
                Ok(_) => {}
            }
        }
        Ok(())
    }
}

impl RouteConfig {
    /// Loads and compiles the route's `json_schema`, if it has one; the error
    /// is `(setting, message)` like [`RouteConfig::validate`]'s. The draft is
    /// the schema's `$schema` (default 2020-12) and the schema itself is
    /// checked against its meta-schema. Remote and file `$ref`s are not
    /// resolved (jsonschema is built without its resolvers): they are errors.
    pub fn compile_schema(&self) -> Result<Option<jsonschema::Validator>, (String, String)> {
        let Some(source) = self.json_schema.as_deref() else {
            return Ok(None);
        };
        let at = format!("routes.{}.json_schema", self.name);
        let (text, origin) = if source.trim_start().starts_with('{') {
            (source.to_string(), "the inline schema".to_string())
        } else {
            let text = std::fs::read_to_string(source)
                .map_err(|e| (at.clone(), format!("cannot read `{source}`: {e}")))?;
            (text, format!("`{source}`"))
        };
        let schema: serde_json::Value = serde_json::from_str(&text)
            .map_err(|e| (at.clone(), format!("{origin} is not valid JSON: {e}")))?;
        jsonschema::validator_for(&schema)
            .map(Some)
            .map_err(|e| (at, format!("{origin} is not a valid JSON Schema: {e}")))
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

/// Where a route's ordering key comes from (`delivery.order_by`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrderBy {
    /// `header:<Name>`: the value of a kept request header; the name is stored
    /// lower-case, as the envelope stores header names.
    Header(String),
    /// `json:<pointer>`: the value at an RFC 6901 JSON pointer into the body.
    Json(String),
}

impl OrderBy {
    /// Parses `header:<Name>` or `json:</pointer>`.
    pub fn parse(s: &str) -> Result<OrderBy, &'static str> {
        if let Some(name) = s.strip_prefix("header:") {
            if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
                return Err("header:<Name> needs a header name (letters, digits and -)");
            }
            Ok(OrderBy::Header(name.to_ascii_lowercase()))
        } else if let Some(ptr) = s.strip_prefix("json:") {
            // RFC 6901: `/`-separated tokens; `~` only as `~0` (~) or `~1` (/).
            let escapes_ok = ptr
                .split('~')
                .skip(1)
                .all(|rest| rest.starts_with('0') || rest.starts_with('1'));
            if !ptr.starts_with('/') || !escapes_ok {
                return Err("json:<pointer> needs a JSON pointer starting with / (e.g. json:/customerId; ~ only as ~0 or ~1)");
            }
            Ok(OrderBy::Json(ptr.to_string()))
        } else {
            Err("must be header:<Name> or json:<JSON pointer>")
        }
    }
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
        let mut r = route("a", "/x");
        r.json_schema = Some("  ".into());
        assert_eq!(r.validate().unwrap_err().0, "routes.a.json_schema");
    }

    #[test]
    fn json_schema_inline_and_from_a_file() {
        let mut r: RouteConfig = serde_json::from_value(serde_json::json!({
            "name": "leads",
            "path": "/leads",
            "json_schema": r#"{"type": "object", "required": ["email"]}"#,
        }))
        .unwrap();
        r.validate().unwrap();
        let v = r.compile_schema().unwrap().unwrap();
        assert!(v.is_valid(&serde_json::json!({"email": "a@b.c"})));
        assert!(!v.is_valid(&serde_json::json!({"name": "ada"})));

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lead.schema.json");
        std::fs::write(
            &path,
            r#"{"type": "object", "properties": {"age": {"type": "integer"}}}"#,
        )
        .unwrap();
        r.json_schema = Some(path.to_string_lossy().into_owned());
        let v = r.compile_schema().unwrap().unwrap();
        assert!(v.is_valid(&serde_json::json!({"age": 3})));
        assert!(!v.is_valid(&serde_json::json!({"age": "3"})));

        r.json_schema = None;
        assert!(r.compile_schema().unwrap().is_none());
    }

    #[test]
    fn bad_json_schemas_name_the_setting() {
        let mut r = route("leads", "/leads");
        for (schema, says) in [
            // Not JSON.
            ("{\"type\": ", "is not valid JSON"),
            // JSON, but not a schema.
            (r#"{"type": "no-such-type"}"#, "is not a valid JSON Schema"),
            (r#"{"minLength": -1}"#, "is not a valid JSON Schema"),
            // Remote references are never fetched.
            (
                r#"{"$ref": "https://example.com/schemas/lead.json"}"#,
                "is not a valid JSON Schema",
            ),
            // A file that does not exist.
            ("/nonexistent/tidegate/lead.schema.json", "cannot read"),
        ] {
            r.json_schema = Some(schema.into());
            let (at, msg) = r.compile_schema().unwrap_err();
            assert_eq!(at, "routes.leads.json_schema", "{schema}");
            assert!(msg.contains(says), "{schema}: {msg}");
        }
    }

    #[test]
    fn order_by_is_parsed_and_validated() {
        assert_eq!(
            OrderBy::parse("header:X-Customer"),
            Ok(OrderBy::Header("x-customer".into()))
        );
        assert_eq!(
            OrderBy::parse("json:/customer/id"),
            Ok(OrderBy::Json("/customer/id".into()))
        );
        assert_eq!(
            OrderBy::parse("json:/a~1b/c~0d"),
            Ok(OrderBy::Json("/a~1b/c~0d".into()))
        );
        for bad in [
            "",
            "header:",
            "header:X Y",
            "json:",
            "json:customerId",
            "json:/a~2",
            "json:/a~",
            "body:/x",
            "Header:X",
        ] {
            assert!(OrderBy::parse(bad).is_err(), "{bad:?} accepted");
        }

        let mut r = route("a", "/x");
        r.delivery.order_by = Some("json:/customerId".into());
        r.validate().unwrap();
        r.delivery.order_by = Some("json:customerId".into());
        let e = r.validate().unwrap_err();
        assert_eq!(e.0, "routes.a.delivery.order_by");
        r.delivery.order_by = Some("header:X-Tenant".into());
        let e = r.validate().unwrap_err();
        assert!(e.1.contains("keep_headers"), "{e:?}");
        r.keep_headers = vec!["x-tenant".into()];
        r.validate().unwrap();
        r.delivery.order_by = Some("header:".into());
        assert_eq!(r.validate().unwrap_err().0, "routes.a.delivery.order_by");
    }

    #[test]
    fn order_by_deserializes() {
        let r: RouteConfig = serde_json::from_value(serde_json::json!({
            "name": "a", "path": "/x", "delivery": {"order_by": "json:/k"}
        }))
        .unwrap();
        assert_eq!(r.delivery.order_by.as_deref(), Some("json:/k"));
        assert_eq!(RouteConfig::default().delivery.order_by, None);
    }
}
