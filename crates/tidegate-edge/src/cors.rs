//! CORS as RIG does it (`CORS`, default `*`), with one fix: a credentialed request
//! (long-polling uses cookies) cannot be answered with `*` — browsers reject that — so
//! the request's `Origin` is reflected when it is allowed.
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cors {
    /// `*`: every origin.
    Any,
    /// Only these origins (comma-separated in `CORS`).
    Origins(Vec<String>),
}

impl Cors {
    pub fn parse(value: &str) -> Cors {
        let v = value.trim();
        if v.is_empty() || v == "*" {
            return Cors::Any;
        }
        Cors::Origins(
            v.split(',')
                .map(|s| s.trim().trim_end_matches('/').to_string())
                .filter(|s| !s.is_empty())
                .collect(),
        )
    }

    fn allowed(&self, origin: &str) -> bool {
        match self {
            Cors::Any => true,
            Cors::Origins(list) => list.iter().any(|o| o == origin),
        }
    }
}

/// Response headers browsers may read: back-pressure hints and the Durable Streams
/// protocol headers (offsets, cursors, producer state).
const EXPOSE: &str = "retry-after, location, content-type, etag, stream-next-offset, stream-cursor, \
stream-up-to-date, stream-closed, stream-expires-at, stream-ttl, stream-forked-from, producer-epoch, \
producer-seq, producer-expected-seq, producer-received-seq";
const ALLOW_HEADERS: &str = "content-type, authorization, last-event-id, idempotency-key";

fn apply(cors: &Cors, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
    match origin.and_then(|o| o.to_str().ok()) {
        Some(o) if cors.allowed(o) => {
            if let Ok(v) = HeaderValue::from_str(o) {
                headers.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
                    HeaderValue::from_static("true"),
                );
                headers.append(header::VARY, HeaderValue::from_static("origin"));
            }
        }
        Some(_) => {}
        None => {
            if *cors == Cors::Any {
                headers.insert(
                    header::ACCESS_CONTROL_ALLOW_ORIGIN,
                    HeaderValue::from_static("*"),
                );
            }
        }
    }
    headers.insert(
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
        HeaderValue::from_static(EXPOSE),
    );
}

pub async fn layer(State(cors): State<Cors>, req: Request, next: Next) -> Response {
    let origin = req.headers().get(header::ORIGIN).cloned();
    if req.method() == Method::OPTIONS
        && req
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        let mut resp = StatusCode::NO_CONTENT.into_response();
        let h = resp.headers_mut();
        apply(&cors, origin.as_ref(), h);
        h.insert(
            header::ACCESS_CONTROL_ALLOW_METHODS,
            HeaderValue::from_static("GET, POST, PUT, DELETE, OPTIONS"),
        );
        let requested = req
            .headers()
            .get(header::ACCESS_CONTROL_REQUEST_HEADERS)
            .cloned();
        h.insert(
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            requested.unwrap_or(HeaderValue::from_static(ALLOW_HEADERS)),
        );
        h.insert(
            header::ACCESS_CONTROL_MAX_AGE,
            HeaderValue::from_static("600"),
        );
        return resp;
    }
    let mut resp = next.run(req).await;
    apply(&cors, origin.as_ref(), resp.headers_mut());
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cors_values() {
        assert_eq!(Cors::parse("*"), Cors::Any);
        assert_eq!(Cors::parse(""), Cors::Any);
        assert_eq!(
            Cors::parse("https://a.example, https://b.example/"),
            Cors::Origins(vec!["https://a.example".into(), "https://b.example".into()])
        );
    }

    #[test]
    fn reflects_allowed_origin_with_credentials() {
        let mut h = HeaderMap::new();
        apply(
            &Cors::Any,
            Some(&HeaderValue::from_static("http://x.test")),
            &mut h,
        );
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_ORIGIN], "http://x.test");
        assert_eq!(h[header::ACCESS_CONTROL_ALLOW_CREDENTIALS], "true");
        let mut h = HeaderMap::new();
        apply(
            &Cors::Origins(vec!["http://a.test".into()]),
            Some(&HeaderValue::from_static("http://x.test")),
            &mut h,
        );
        assert!(!h.contains_key(header::ACCESS_CONTROL_ALLOW_ORIGIN));
    }
}
