//! The routing table: API definitions compiled into matchers, looked up by method and
//! path, first match wins in definition order (RIG warned on several matches and took
//! the first).
//!
//! [`CompiledApi::compile`] is also the validator: every check that needs the compiled
//! form (regex syntax, known `target` / `response_from`, a `topic` for brokers, a JWT
//! `auth_type` for `secured` endpoints) happens here once, and its errors go back to
//! [`crate::config::ValidationErrors`]. A [`Table`] is immutable; the store swaps a new
//! one in on every change.
use http::{HeaderName, HeaderValue, Method};
use regex::{Regex, RegexBuilder};
use std::sync::Arc;

use crate::config::{ApiDefinition, EndpointDefinition, ValidationErrors};

/// A regex from an API definition may not compile to more than this (a guard against a
/// runtime definition that makes every request slow or the process large).
const REGEX_SIZE_LIMIT: usize = 1 << 20;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Http,
    Kafka,
    Nats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseFrom {
    Http,
    HttpAsync,
    Kafka,
    Nats,
}

impl ResponseFrom {
    pub fn as_str(self) -> &'static str {
        match self {
            ResponseFrom::Http => "http",
            ResponseFrom::HttpAsync => "http_async",
            ResponseFrom::Kafka => "kafka",
            ResponseFrom::Nats => "nats",
        }
    }
}

/// Where a secured endpoint looks for tokens.
#[derive(Debug, Clone, Default)]
pub struct TokenSources {
    /// Lower-cased header name (`authorization` expects `Bearer <jwt>`).
    pub header: Option<HeaderName>,
    pub query: Option<String>,
}

/// The HTTP backend of an API: `scheme://host:port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    pub scheme: String,
    pub host: String,
    pub port: u16,
}

impl Backend {
    /// `host:port` as RIG put it into the `host` header.
    pub fn authority(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]:{}", self.host, self.port)
        } else {
            format!("{}:{}", self.host, self.port)
        }
    }

    pub fn url(&self, path: &str, query: Option<&str>) -> String {
        let mut url = format!("{}://{}{}", self.scheme, self.authority(), path);
        if let Some(q) = query.filter(|q| !q.is_empty()) {
            url.push('?');
            url.push_str(q);
        }
        url
    }
}

#[derive(Debug)]
pub struct CompiledApi {
    pub id: String,
    pub jwt: bool,
    pub tokens: TokenSources,
    pub backend: Option<Backend>,
    pub add_headers: Vec<(HeaderName, HeaderValue)>,
    pub endpoints: Vec<Endpoint>,
}

#[derive(Debug)]
pub struct Endpoint {
    pub id: String,
    pub method: Method,
    matcher: Regex,
    /// Replacement in `regex` syntax (`${1}`, `${name}`).
    replacement: Option<String>,
    pub secured: bool,
    pub transform_headers: bool,
    pub target: Target,
    pub topic: Option<String>,
    pub response_from: ResponseFrom,
}

/// A lookup hit: the API, the endpoint and the (possibly rewritten) path to forward.
#[derive(Debug)]
pub struct Matched<'a> {
    pub api: &'a Arc<CompiledApi>,
    pub endpoint: &'a Endpoint,
    pub path: String,
}

/// Every active, unversioned API in definition order.
#[derive(Debug, Default)]
pub struct Table {
    apis: Vec<Arc<CompiledApi>>,
}

impl Table {
    /// Compiles the routable definitions; one that does not compile (a stored record
    /// from an older version, say) is skipped and named in the returned list.
    pub fn build<'a>(
        defs: impl IntoIterator<Item = &'a ApiDefinition>,
    ) -> (Table, Vec<(String, ValidationErrors)>) {
        let mut apis = Vec::new();
        let mut skipped = Vec::new();
        for def in defs {
            if !def.active || def.versioned {
                continue;
            }
            match CompiledApi::compile(def) {
                Ok(api) => apis.push(Arc::new(api)),
                Err(e) => skipped.push((def.id.clone(), e)),
            }
        }
        (Table { apis }, skipped)
    }

    pub fn len(&self) -> usize {
        self.apis.len()
    }

    pub fn is_empty(&self) -> bool {
        self.apis.is_empty()
    }

    pub fn find(&self, method: &Method, path: &str) -> Option<Matched<'_>> {
        for api in &self.apis {
            for endpoint in &api.endpoints {
                if endpoint.method != *method {
                    continue;
                }
                let Some(captures) = endpoint.matcher.captures(path) else {
                    continue;
                };
                let path = match &endpoint.replacement {
                    Some(replacement) => {
                        let mut out = String::new();
                        captures.expand(replacement, &mut out);
                        out
                    }
                    None => path.to_owned(),
                };
                return Some(Matched {
                    api,
                    endpoint,
                    path,
                });
            }
        }
        None
    }
}

impl CompiledApi {
    /// Validates and compiles one definition; all problems are reported at once.
    pub fn compile(def: &ApiDefinition) -> Result<CompiledApi, ValidationErrors> {
        let mut errors = ValidationErrors::default();
        if def.id.trim().is_empty() {
            errors.push("api", "id", "must be present");
        }
        if def.version_data.is_empty() {
            errors.push(
                "api",
                "version_data",
                "must have at least one version, e.g. default",
            );
        }
        let jwt = match def.auth_type.as_str() {
            "jwt" => true,
            "none" | "" => false,
            other => {
                errors.push(
                    "api",
                    "auth_type",
                    format!("must be one of jwt, none (got `{other}`)"),
                );
                false
            }
        };
        let mut tokens = TokenSources::default();
        if def.auth.use_header {
            if def.auth.header_name.trim().is_empty() {
                errors.push("api", "header_name", "must be present");
            } else {
                match HeaderName::from_bytes(
                    def.auth.header_name.trim().to_ascii_lowercase().as_bytes(),
                ) {
                    Ok(h) => tokens.header = Some(h),
                    Err(_) => errors.push("api", "header_name", "must be a valid header name"),
                }
            }
        }
        if def.auth.use_query {
            if def.auth.query_name.is_empty() {
                errors.push("api", "query_name", "must be present");
            } else {
                tokens.query = Some(def.auth.query_name.clone());
            }
        }
        if (def.auth.use_header || def.auth.use_query) && !jwt {
            errors.push(
                "api",
                "auth_type",
                "must be jwt when auth.use_header or auth.use_query is set",
            );
        }

        let mut add_headers = Vec::new();
        if let Some(headers) = def.add_headers() {
            for (name, value) in headers {
                match (
                    HeaderName::from_bytes(name.to_ascii_lowercase().as_bytes()),
                    HeaderValue::from_str(value),
                ) {
                    (Ok(n), Ok(v)) => add_headers.push((n, v)),
                    _ => errors.push(
                        "api",
                        "add_headers",
                        format!("`{name}` is not a valid header"),
                    ),
                }
            }
        }

        let mut endpoints = Vec::new();
        let mut needs_backend = false;
        for ep in def.endpoints() {
            let scope = format!("{}/{}", def.id, ep.id);
            if let Some(endpoint) = compile_endpoint(ep, jwt, &scope, &mut errors) {
                needs_backend |= endpoint.target == Target::Http;
                endpoints.push(endpoint);
            }
        }
        let mut ids: Vec<&str> = def.endpoints().iter().map(|e| e.id.as_str()).collect();
        ids.sort_unstable();
        if let Some(w) = ids.windows(2).find(|w| w[0] == w[1] && !w[0].is_empty()) {
            errors.push(
                format!("{}/{}", def.id, w[0]),
                "id",
                "must be unique within the API",
            );
        }

        let backend = match &def.proxy {
            Some(p) => resolve_backend(p, &mut errors),
            None => {
                if needs_backend {
                    errors.push(
                        "api",
                        "proxy",
                        "must be present for endpoints with target http",
                    );
                }
                None
            }
        };
        if errors.is_empty() {
            Ok(CompiledApi {
                id: def.id.clone(),
                jwt,
                tokens,
                backend,
                add_headers,
                endpoints,
            })
        } else {
            Err(errors)
        }
    }
}

fn resolve_backend(
    p: &crate::config::ProxyTarget,
    errors: &mut ValidationErrors,
) -> Option<Backend> {
    if p.target_url.trim().is_empty() {
        errors.push("api", "target_url", "must be present");
        return None;
    }
    // RIG: with `use_env` the target is read from that env var, `localhost` if unset.
    let raw = if p.use_env {
        std::env::var(p.target_url.trim()).unwrap_or_else(|_| "localhost".to_owned())
    } else {
        p.target_url.trim().to_owned()
    };
    let (scheme, rest) = match raw.split_once("://") {
        Some((s, rest)) => (s.to_ascii_lowercase(), rest),
        None => ("http".to_owned(), raw.as_str()),
    };
    if scheme != "http" && scheme != "https" {
        errors.push(
            "api",
            "target_url",
            format!("scheme `{scheme}` is not http or https"),
        );
        return None;
    }
    // RIG kept only scheme and host of the target URL; the path comes from the request.
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let authority = authority
        .rsplit_once('@')
        .map(|(_, a)| a)
        .unwrap_or(authority);
    let (host, url_port) = split_host_port(authority);
    if host.is_empty() {
        errors.push("api", "target_url", format!("`{raw}` has no host"));
        return None;
    }
    let default_port = if scheme == "https" { 443 } else { 80 };
    Some(Backend {
        scheme,
        host,
        port: p.port.or(url_port).unwrap_or(default_port),
    })
}

fn split_host_port(authority: &str) -> (String, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
            return (host.to_owned(), port);
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h.to_owned(), p.parse().ok()),
        _ => (authority.to_owned(), None),
    }
}

fn compile_endpoint(
    ep: &EndpointDefinition,
    jwt: bool,
    scope: &str,
    errors: &mut ValidationErrors,
) -> Option<Endpoint> {
    let before = errors.errors.get(scope).map_or(0, Vec::len);
    if ep.id.trim().is_empty() {
        errors.push(scope, "id", "must be present");
    }
    let method = if ep.method.is_empty() {
        errors.push(scope, "method", "must be present");
        None
    } else {
        match Method::from_bytes(ep.method.to_ascii_uppercase().as_bytes()) {
            Ok(m) => Some(m),
            Err(_) => {
                errors.push(
                    scope,
                    "method",
                    format!("`{}` is not an HTTP method", ep.method),
                );
                None
            }
        }
    };
    let target = match ep.target.as_deref().map(str::to_ascii_lowercase).as_deref() {
        None | Some("http") => Some(Target::Http),
        Some("kafka") => Some(Target::Kafka),
        Some("nats") => Some(Target::Nats),
        Some(other) => {
            errors.push(
                scope,
                "target",
                format!("must be one of http, kafka, nats (got `{other}`)"),
            );
            None
        }
    };
    let response_from = match ep
        .response_from
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("http") => Some(ResponseFrom::Http),
        Some("http_async") => Some(ResponseFrom::HttpAsync),
        Some("kafka") => Some(ResponseFrom::Kafka),
        Some("nats") => Some(ResponseFrom::Nats),
        Some(other) => {
            errors.push(
                scope,
                "response_from",
                format!("must be one of http, http_async, kafka, nats (got `{other}`)"),
            );
            None
        }
    };
    let topic = ep.topic.as_deref().map(str::trim).filter(|t| !t.is_empty());
    if matches!(target, Some(Target::Kafka | Target::Nats)) && topic.is_none() {
        errors.push(scope, "topic", "must be present");
    }
    if ep.secured && !jwt {
        errors.push(scope, "secured", "requires the API's auth_type to be jwt");
    }
    let (matcher, replacement) = match (&ep.path_regex, &ep.path) {
        (Some(re), _) if !re.is_empty() => {
            let matcher = compile_regex(&anchor(re), scope, "path_regex", errors);
            let replacement = ep
                .path_replacement
                .as_deref()
                .filter(|r| !r.is_empty())
                .map(regex_replacement);
            (matcher, replacement)
        }
        (_, Some(path)) if !path.is_empty() => match template_regex(path) {
            Ok(pattern) => {
                let matcher = compile_regex(&pattern, scope, "path", errors);
                let replacement = ep
                    .path_replacement
                    .as_deref()
                    .filter(|r| !r.is_empty())
                    .map(template_replacement);
                (matcher, replacement)
            }
            Err(reason) => {
                errors.push(scope, "path", reason);
                (None, None)
            }
        },
        _ => {
            errors.push(scope, "path_regex", "must be present (or `path`)");
            (None, None)
        }
    };
    if errors.errors.get(scope).map_or(0, Vec::len) > before {
        return None;
    }
    Some(Endpoint {
        id: ep.id.clone(),
        method: method?,
        matcher: matcher?,
        replacement,
        secured: ep.secured,
        transform_headers: ep.transform_request_headers,
        target: target?,
        topic: topic.map(str::to_owned),
        response_from: response_from?,
    })
}

/// RIG anchored the pattern at both ends and matched case-insensitively. The group
/// keeps an alternation (`/a|/b`) anchored as a whole, which RIG's string splice did not.
fn anchor(pattern: &str) -> String {
    let inner = pattern.strip_prefix('^').unwrap_or(pattern);
    let inner = match inner.strip_suffix('$') {
        Some(i) if !i.ends_with('\\') => i,
        _ => inner,
    };
    format!("(?i)^(?:{inner})$")
}

fn compile_regex(
    pattern: &str,
    scope: &str,
    field: &str,
    errors: &mut ValidationErrors,
) -> Option<Regex> {
    match RegexBuilder::new(pattern)
        .size_limit(REGEX_SIZE_LIMIT)
        .build()
    {
        Ok(r) => Some(r),
        Err(e) => {
            errors.push(scope, field, format!("invalid regex: {e}"));
            None
        }
    }
}

/// `/books/{id}/pages/{page}` → `^/books/(?P<id>[^/]+)/pages/(?P<page>[^/]+)$`.
fn template_regex(path: &str) -> Result<String, String> {
    let mut out = String::from("^");
    let mut rest = path;
    while let Some(start) = rest.find('{') {
        out.push_str(&regex::escape(&rest[..start]));
        let after = &rest[start + 1..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("unclosed `{{` in `{path}`"))?;
        let name = &after[..end];
        let valid = !name.is_empty()
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
            && !name.starts_with(|c: char| c.is_ascii_digit());
        if !valid {
            return Err(format!("`{{{name}}}` is not a valid placeholder name"));
        }
        out.push_str(&format!("(?P<{name}>[^/]+)"));
        rest = &after[end + 1..];
    }
    out.push_str(&regex::escape(rest));
    out.push('$');
    Ok(out)
}

/// RIG's `\1` back-references → `${1}`; a literal `$` stays literal.
fn regex_replacement(replacement: &str) -> String {
    let mut out = String::with_capacity(replacement.len() + 8);
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '$' => out.push_str("$$"),
            '\\' if chars.peek().is_some_and(char::is_ascii_digit) => {
                let mut n = String::new();
                while let Some(d) = chars.peek().copied().filter(char::is_ascii_digit) {
                    n.push(d);
                    chars.next();
                }
                out.push_str(&format!("${{{n}}}"));
            }
            c => out.push(c),
        }
    }
    out
}

/// `{name}` placeholders (and `\1`) → `${name}` (and `${1}`).
fn template_replacement(replacement: &str) -> String {
    let escaped = regex_replacement(replacement);
    let mut out = String::with_capacity(escaped.len());
    let mut rest = escaped.as_str();
    while let Some(start) = rest.find('{') {
        let after = &rest[start + 1..];
        match after.find('}') {
            Some(end) if start == 0 || !rest[..start].ends_with('$') => {
                out.push_str(&rest[..start]);
                out.push_str(&format!("${{{}}}", &after[..end]));
                rest = &after[end + 1..];
            }
            _ => {
                out.push_str(&rest[..=start]);
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn table(endpoints: serde_json::Value) -> Table {
        let def = ApiDefinition::from_value(json!({
            "id": "svc",
            "proxy": {"target_url": "http://backend", "port": 8080},
            "version_data": {"default": {"endpoints": endpoints}}
        }))
        .unwrap();
        let (t, skipped) = Table::build([&def]);
        assert!(skipped.is_empty());
        t
    }

    #[test]
    fn regex_is_anchored_and_case_insensitive() {
        let t = table(json!([{"id": "a", "method": "GET", "path_regex": "/books/(.+)"}]));
        assert!(t.find(&Method::GET, "/books/1").is_some());
        assert!(t.find(&Method::GET, "/BOOKS/1").is_some());
        assert!(t.find(&Method::GET, "/x/books/1").is_none());
        assert!(t.find(&Method::POST, "/books/1").is_none());
    }

    #[test]
    fn replacement_with_backreferences() {
        let t = table(json!([{"id": "a", "method": "GET",
            "path_regex": "/foo/([^/]+)/bar/([^/]+)", "path_replacement": "/bar/\\1/foo/\\2$"}]));
        assert_eq!(
            t.find(&Method::GET, "/foo/1/bar/2").unwrap().path,
            "/bar/1/foo/2$"
        );
    }

    #[test]
    fn templates_match_one_segment() {
        let t = table(
            json!([{"id": "a", "method": "GET", "path": "/users/{id}/posts/{post}",
            "path_replacement": "/p/{post}/u/{id}"}]),
        );
        assert_eq!(
            t.find(&Method::GET, "/users/7/posts/9").unwrap().path,
            "/p/9/u/7"
        );
        assert!(t.find(&Method::GET, "/users/7/8/posts/9").is_none());
        assert!(t.find(&Method::GET, "/users/7/posts/9/x").is_none());
    }

    #[test]
    fn first_match_wins() {
        let t = table(json!([
            {"id": "a", "method": "GET", "path_regex": "/x/.*"},
            {"id": "b", "method": "GET", "path_regex": "/x/y"}
        ]));
        assert_eq!(t.find(&Method::GET, "/x/y").unwrap().endpoint.id, "a");
    }

    #[test]
    fn alternation_is_anchored_as_a_whole() {
        let t = table(json!([{"id": "a", "method": "GET", "path_regex": "/a|/b"}]));
        assert!(t.find(&Method::GET, "/b").is_some());
        assert!(t.find(&Method::GET, "/a/zzz").is_none());
        assert!(t.find(&Method::GET, "/zzz/b").is_none());
    }

    #[test]
    fn backend_from_url_forms() {
        let mut errors = ValidationErrors::default();
        let p = |url: &str, port: Option<u16>| crate::config::ProxyTarget {
            target_url: url.into(),
            port,
            use_env: false,
            extra: Default::default(),
        };
        let b = resolve_backend(&p("https://svc.local/ignored", Some(8443)), &mut errors).unwrap();
        assert_eq!(b.url("/p", Some("a=1")), "https://svc.local:8443/p?a=1");
        let b = resolve_backend(&p("svc", Some(3000)), &mut errors).unwrap();
        assert_eq!(b.authority(), "svc:3000");
        let b = resolve_backend(&p("http://[::1]:9000", None), &mut errors).unwrap();
        assert_eq!(b.authority(), "[::1]:9000");
        assert!(errors.is_empty());
    }
}
