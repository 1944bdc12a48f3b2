//! RIG's API definition format (`PROXY_CONFIG_FILE`, the `/v3/apis` bodies): the serde
//! types, RIG's defaults, loading from a path or inline JSON, and validation.
//!
//! Data moves one way: JSON → [`ApiDefinition`] (the data as given, unknown fields kept
//! so a `GET /v3/apis/{id}` returns what was stored) → [`ApiDefinition::validate`],
//! which compiles the definition with [`crate::router`] and collects every problem into
//! [`ValidationErrors`], keyed like RIG's error map (`"api"`, `"<api>/<endpoint>"`).
//! Enumerated fields (`auth_type`, `target`, `response_from`) stay strings here; the
//! router turns them into enums, so an unknown value is a validation error with a
//! reason rather than a serde type error.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use std::collections::BTreeMap;
use std::path::Path;

/// One API (RIG: "service") with its endpoints and backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ApiDefinition {
    #[serde(default)]
    pub id: String,
    /// RIG required it; Tidegate defaults it to `id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `jwt` or `none` (default).
    #[serde(default = "default_auth_type")]
    pub auth_type: String,
    #[serde(default)]
    pub auth: AuthConfig,
    /// The HTTP backend; only needed when an endpoint targets `http`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proxy: Option<ProxyTarget>,
    #[serde(default)]
    pub version_data: BTreeMap<String, VersionData>,
    /// RIG also read `version_data.default.transform_request_headers`; both are honoured.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform_request_headers: Option<HeaderTransform>,
    #[serde(default = "yes")]
    pub active: bool,
    /// Versioned APIs are stored but never routed (RIG: "not supported yet").
    #[serde(default)]
    pub versioned: bool,
    /// Bumped on every runtime change (RIG's meta field).
    #[serde(default)]
    pub ref_number: u64,
    /// RFC 3339 time of the last change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AuthConfig {
    #[serde(default)]
    pub use_header: bool,
    #[serde(default)]
    pub header_name: String,
    #[serde(default)]
    pub use_query: bool,
    #[serde(default)]
    pub query_name: String,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProxyTarget {
    /// A host, a URL (`https://svc`), or with `use_env` the name of an env var holding one.
    #[serde(default)]
    pub target_url: String,
    /// RIG required it; without it the scheme's default port is used.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    #[serde(default)]
    pub use_env: bool,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VersionData {
    #[serde(default)]
    pub endpoints: Vec<EndpointDefinition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform_request_headers: Option<HeaderTransform>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HeaderTransform {
    #[serde(default)]
    pub add_headers: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EndpointDefinition {
    #[serde(default)]
    pub id: String,
    #[serde(default)]
    pub method: String,
    /// RIG 2 style: `/books/{id}`; each `{name}` matches one path segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    /// RIG 3 style: a regular expression, anchored at both ends, case-insensitive.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_regex: Option<String>,
    /// Rewrites the path: `\1` refers to a capture group of `path_regex`, `{name}` to a
    /// placeholder of `path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_replacement: Option<String>,
    #[serde(default)]
    pub secured: bool,
    #[serde(default)]
    pub transform_request_headers: bool,
    /// `http` (default), `kafka` or `nats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub topic: Option<String>,
    /// Avro schema name; accepted and stored, not used (Tidegate produces JSON).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema: Option<String>,
    /// `http` (default), `http_async`, `kafka` or `nats`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_from: Option<String>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_auth_type() -> String {
    "none".to_owned()
}

fn yes() -> bool {
    true
}

// === Errors ===

/// Every problem of one or more definitions, keyed as RIG did: `"api"` for the API's own
/// fields, `"<api id>/<endpoint id>"` for an endpoint. Serializes to RIG's 400 body:
/// `{"api": [{"name": "must be string"}], "svc/ep": [{"topic": "must be present"}]}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ValidationErrors {
    pub errors: BTreeMap<String, Vec<(String, String)>>,
}

impl ValidationErrors {
    pub fn push(
        &mut self,
        key: impl Into<String>,
        field: impl Into<String>,
        reason: impl Into<String>,
    ) {
        self.errors
            .entry(key.into())
            .or_default()
            .push((field.into(), reason.into()));
    }

    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    pub fn merge(&mut self, other: ValidationErrors) {
        for (key, list) in other.errors {
            self.errors.entry(key).or_default().extend(list);
        }
    }

    /// RIG's error map as JSON.
    pub fn to_json(&self) -> Value {
        let mut out = Map::new();
        for (key, list) in &self.errors {
            let items = list
                .iter()
                .map(|(field, reason)| {
                    let mut m = Map::new();
                    m.insert(field.clone(), Value::String(reason.clone()));
                    Value::Object(m)
                })
                .collect();
            out.insert(key.clone(), Value::Array(items));
        }
        Value::Object(out)
    }
}

impl std::fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (key, list) in &self.errors {
            for (field, reason) in list {
                if !first {
                    f.write_str("; ")?;
                }
                first = false;
                write!(f, "{key}: {field} {reason}")?;
            }
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// Why `PROXY_CONFIG_FILE` cannot be used. Reported at start-up.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(
        "PROXY_CONFIG_FILE is neither a readable file ({file_error}) nor valid JSON ({json_error})"
    )]
    Unreadable {
        file_error: String,
        json_error: String,
    },
    #[error("PROXY_CONFIG_FILE {origin}: invalid JSON: {source}")]
    Json {
        origin: String,
        source: serde_json::Error,
    },
    #[error("PROXY_CONFIG_FILE {origin}: the proxy config must be a JSON list of API definitions")]
    NotAList { origin: String },
    #[error("PROXY_CONFIG_FILE {origin}: API definition #{index} is not valid: {source}")]
    Definition {
        origin: String,
        index: usize,
        source: ValidationErrors,
    },
    #[error("PROXY_CONFIG_FILE {origin}: API id `{id}` is defined twice")]
    DuplicateId { origin: String, id: String },
}

// === Loading ===

/// RIG's `PROXY_CONFIG_FILE`: a path to a JSON file, or the JSON itself. Every
/// definition is validated; the first invalid one fails the whole load.
pub fn load(path_or_json: &str) -> Result<Vec<ApiDefinition>, ConfigError> {
    let trimmed = path_or_json.trim();
    let (origin, text) = match std::fs::read_to_string(Path::new(trimmed)) {
        Ok(text) => (format!("file {trimmed}"), text),
        Err(file_error) => {
            if trimmed.starts_with('[') || trimmed.starts_with('{') {
                ("(inline JSON)".to_owned(), trimmed.to_owned())
            } else {
                let json_error = serde_json::from_str::<Value>(trimmed)
                    .err()
                    .map(|e| e.to_string())
                    .unwrap_or_else(|| "not a list".to_owned());
                return Err(ConfigError::Unreadable {
                    file_error: file_error.to_string(),
                    json_error,
                });
            }
        }
    };
    let value: Value = serde_json::from_str(&text).map_err(|source| ConfigError::Json {
        origin: origin.clone(),
        source,
    })?;
    let Value::Array(items) = value else {
        return Err(ConfigError::NotAList { origin });
    };
    let mut out: Vec<ApiDefinition> = Vec::with_capacity(items.len());
    for (index, item) in items.into_iter().enumerate() {
        let def = ApiDefinition::from_value(item).map_err(|source| ConfigError::Definition {
            origin: origin.clone(),
            index,
            source,
        })?;
        if out.iter().any(|d| d.id == def.id) {
            return Err(ConfigError::DuplicateId { origin, id: def.id });
        }
        out.push(def);
    }
    Ok(out)
}

impl ApiDefinition {
    /// Parses one definition, applies RIG's defaults and validates it.
    pub fn from_value(value: Value) -> Result<ApiDefinition, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if !value.is_object() {
            errors.push("api", "definition", "must be a JSON object");
            return Err(errors);
        }
        check_types(&value, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut def: ApiDefinition = match serde_json::from_value(value) {
            Ok(def) => def,
            Err(e) => {
                errors.push("api", "definition", e.to_string());
                return Err(errors);
            }
        };
        def.apply_defaults();
        def.validate()?;
        Ok(def)
    }

    /// RIG's `set_default_api_values`, minus its bug: for `auth_type: jwt` RIG forced
    /// `use_header: true, header_name: "Authorization"` over whatever was configured;
    /// here they only fill in when no token source is configured at all.
    pub fn apply_defaults(&mut self) {
        if self.name.as_deref().is_none_or(str::is_empty) {
            self.name = Some(self.id.clone());
        }
        self.auth_type = self.auth_type.to_ascii_lowercase();
        if self.auth_type == "jwt" && !self.auth.use_header && !self.auth.use_query {
            self.auth.use_header = true;
            if self.auth.header_name.is_empty() {
                self.auth.header_name = "Authorization".to_owned();
            }
        }
        for version in self.version_data.values_mut() {
            for endpoint in &mut version.endpoints {
                endpoint.method = endpoint.method.to_ascii_uppercase();
            }
        }
    }

    /// Every problem at once; compiles the endpoints (regexes included) to find them.
    pub fn validate(&self) -> Result<(), ValidationErrors> {
        crate::router::CompiledApi::compile(self).map(|_| ())
    }

    /// The endpoints that are routed (RIG routes only `version_data.default`).
    pub fn endpoints(&self) -> &[EndpointDefinition] {
        self.version_data
            .get("default")
            .map(|v| v.endpoints.as_slice())
            .unwrap_or(&[])
    }

    /// Headers added by endpoints with `transform_request_headers: true`.
    pub fn add_headers(&self) -> Option<&BTreeMap<String, String>> {
        self.version_data
            .get("default")
            .and_then(|v| v.transform_request_headers.as_ref())
            .or(self.transform_request_headers.as_ref())
            .map(|t| &t.add_headers)
    }

    pub fn to_json(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// Type checks with RIG's wording, so a wrong type is reported per field instead of as
/// one serde message.
fn check_types(value: &Value, errors: &mut ValidationErrors) {
    let string = |v: &Value, key: &str, scope: &str, errors: &mut ValidationErrors| {
        if let Some(x) = v.get(key) {
            if !x.is_string() && !x.is_null() {
                errors.push(scope, key, "must be string");
            }
        }
    };
    let boolean = |v: &Value, key: &str, scope: &str, errors: &mut ValidationErrors| {
        if let Some(x) = v.get(key) {
            if !x.is_boolean() && !x.is_null() {
                errors.push(scope, key, "must be boolean");
            }
        }
    };
    for key in ["id", "name", "auth_type", "timestamp"] {
        string(value, key, "api", errors);
    }
    for key in ["active", "versioned"] {
        boolean(value, key, "api", errors);
    }
    if let Some(auth) = value.get("auth") {
        if !auth.is_object() {
            errors.push("api", "auth", "must be an object");
        } else {
            string(auth, "header_name", "api", errors);
            string(auth, "query_name", "api", errors);
            boolean(auth, "use_header", "api", errors);
            boolean(auth, "use_query", "api", errors);
        }
    }
    if let Some(proxy) = value.get("proxy") {
        if !proxy.is_object() {
            errors.push("api", "proxy", "must be an object");
        } else {
            string(proxy, "target_url", "api", errors);
            boolean(proxy, "use_env", "api", errors);
            if let Some(port) = proxy.get("port") {
                if !port.is_null() && port.as_u64().is_none_or(|p| p == 0 || p > 65535) {
                    errors.push("api", "port", "must be integer");
                }
            }
        }
    }
    match value.get("version_data") {
        None => {}
        Some(Value::Object(versions)) => {
            for (name, version) in versions {
                match version.get("endpoints") {
                    Some(Value::Array(endpoints)) => {
                        let api_id = value.get("id").and_then(Value::as_str).unwrap_or("");
                        for (i, ep) in endpoints.iter().enumerate() {
                            let ep_id = ep
                                .get("id")
                                .and_then(Value::as_str)
                                .map(str::to_owned)
                                .unwrap_or_else(|| format!("#{i}"));
                            let scope = format!("{api_id}/{ep_id}");
                            if !ep.is_object() {
                                errors.push(scope, "endpoint", "must be an object");
                                continue;
                            }
                            for key in [
                                "id",
                                "method",
                                "path",
                                "path_regex",
                                "path_replacement",
                                "target",
                                "topic",
                                "schema",
                                "response_from",
                            ] {
                                string(ep, key, &scope, errors);
                            }
                            boolean(ep, "secured", &scope, errors);
                            boolean(ep, "transform_request_headers", &scope, errors);
                        }
                    }
                    None | Some(Value::Null) => {}
                    Some(_) => {
                        errors.push("api", "endpoints", format!("must be list (version {name})"))
                    }
                }
                if let Some(t) = version.get("transform_request_headers") {
                    check_transform(t, errors);
                }
            }
        }
        Some(_) => errors.push("api", "version_data", "must be an object"),
    }
    if let Some(t) = value.get("transform_request_headers") {
        check_transform(t, errors);
    }
}

fn check_transform(t: &Value, errors: &mut ValidationErrors) {
    match t.get("add_headers") {
        None | Some(Value::Null) => {}
        Some(Value::Object(headers)) => {
            if headers.values().any(|v| !v.is_string()) {
                errors.push("api", "add_headers", "values must be strings");
            }
        }
        Some(_) => errors.push("api", "add_headers", "must be an object"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_follow_rig() {
        let def = ApiDefinition::from_value(json!({
            "id": "svc",
            "auth_type": "jwt",
            "proxy": {"target_url": "localhost", "port": 3000},
            "version_data": {"default": {"endpoints": [
                {"id": "e", "method": "get", "path_regex": "/x", "secured": true}
            ]}}
        }))
        .unwrap();
        assert!(def.active);
        assert_eq!(def.name.as_deref(), Some("svc"));
        assert!(def.auth.use_header);
        assert_eq!(def.auth.header_name, "Authorization");
        assert_eq!(def.endpoints()[0].method, "GET");
    }

    #[test]
    fn custom_header_is_kept_for_jwt() {
        let def = ApiDefinition::from_value(json!({
            "id": "svc", "auth_type": "jwt",
            "auth": {"use_header": true, "header_name": "x-token"},
            "proxy": {"target_url": "localhost", "port": 3000},
            "version_data": {"default": {"endpoints": []}}
        }))
        .unwrap();
        assert_eq!(def.auth.header_name, "x-token");
    }

    #[test]
    fn errors_are_collected_per_field() {
        let err = ApiDefinition::from_value(json!({
            "id": "svc",
            "proxy": {"target_url": "localhost", "port": 3000},
            "version_data": {"default": {"endpoints": [
                {"id": "k", "method": "POST", "path_regex": "/k", "target": "kafka"},
                {"id": "r", "method": "GET", "path_regex": "/(unclosed"},
                {"id": "t", "method": "GET", "path_regex": "/t", "target": "smtp"},
                {"id": "s", "method": "GET", "path_regex": "/s", "secured": true}
            ]}}
        }))
        .unwrap_err();
        let j = err.to_json();
        assert_eq!(j["svc/k"][0]["topic"], "must be present");
        assert!(j["svc/r"][0]["path_regex"]
            .as_str()
            .unwrap()
            .contains("invalid regex"));
        assert!(j["svc/t"][0]["target"].as_str().unwrap().contains("smtp"));
        assert!(j["svc/s"][0]["secured"].is_string());
    }

    #[test]
    fn wrong_types_are_reported_rig_style() {
        let err = ApiDefinition::from_value(json!({"id": 5, "proxy": {"port": "x"}})).unwrap_err();
        let j = err.to_json();
        assert_eq!(j["api"][0]["id"], "must be string");
    }

    #[test]
    fn load_inline_and_file() {
        let json = r#"[{"id":"a","proxy":{"target_url":"h","port":1},
            "version_data":{"default":{"endpoints":[{"id":"e","method":"GET","path":"/a/{x}"}]}}}]"#;
        assert_eq!(load(json).unwrap().len(), 1);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("proxy.json");
        std::fs::write(&path, json).unwrap();
        assert_eq!(load(path.to_str().unwrap()).unwrap()[0].id, "a");
        assert!(matches!(
            load("/no/such/file.json"),
            Err(ConfigError::Unreadable { .. })
        ));
        assert!(matches!(load("{}"), Err(ConfigError::NotAList { .. })));
        let dup = format!("[{0},{0}]", &json[1..json.len() - 1]);
        assert!(matches!(load(&dup), Err(ConfigError::DuplicateId { .. })));
    }
}
