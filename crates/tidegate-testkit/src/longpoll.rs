//! A long-poll client with its own cookie jar, speaking RIG's protocol: the first
//! `GET` opens a session (`"ok"` plus cookies `connection_token` and `last_event_id`),
//! later ones send the cookies and get `{"last_event_id":…,"events":[…]}`.
use serde_json::Value;
use std::collections::BTreeMap;

use crate::http_client;

/// One answer of the endpoint.
#[derive(Debug, Clone)]
pub struct LpResponse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
    /// Every `Set-Cookie` header, verbatim.
    pub set_cookies: Vec<String>,
}

impl LpResponse {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body)
            .unwrap_or_else(|e| panic!("long-poll body is not JSON ({e}): {}", self.body))
    }
}

/// A decoded later poll.
#[derive(Debug, Clone)]
pub struct Batch {
    pub last_event_id: String,
    pub events: Vec<Value>,
}

pub struct LongPoll {
    http: reqwest::Client,
    /// `http://host:port/_rig/v1/connection/longpolling`
    pub endpoint: String,
    /// The cookie jar: name → value as the server set it.
    pub cookies: BTreeMap<String, String>,
}

impl LongPoll {
    pub fn new(endpoint: impl Into<String>) -> Self {
        LongPoll {
            http: http_client(),
            endpoint: endpoint.into(),
            cookies: BTreeMap::new(),
        }
    }

    fn cookie_header(&self) -> Option<String> {
        (!self.cookies.is_empty()).then(|| {
            self.cookies
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join("; ")
        })
    }

    /// `GET endpoint?query` with the jar's cookies and `headers`; updates the jar
    /// (`Max-Age=0` deletes).
    pub async fn get(&mut self, query: &str, headers: &[(&str, &str)]) -> LpResponse {
        let url = if query.is_empty() {
            self.endpoint.clone()
        } else {
            format!("{}?{query}", self.endpoint)
        };
        let mut req = self.http.get(url);
        if let Some(c) = self.cookie_header() {
            req = req.header("cookie", c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.expect("long-poll request");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let set_cookies: Vec<String> = headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_string))
            .collect();
        for sc in &set_cookies {
            let mut parts = sc.split(';');
            let Some((name, value)) = parts.next().and_then(|kv| kv.split_once('=')) else {
                continue;
            };
            let delete = parts.any(|a| a.trim().eq_ignore_ascii_case("max-age=0"));
            if delete {
                self.cookies.remove(name.trim());
            } else {
                self.cookies
                    .insert(name.trim().to_string(), value.trim().to_string());
            }
        }
        let body = resp.text().await.expect("long-poll body");
        LpResponse {
            status,
            headers,
            body,
            set_cookies,
        }
    }

    /// A later poll that must succeed with the `{"last_event_id","events"}` shape.
    pub async fn poll(&mut self) -> Batch {
        let r = self.get("", &[]).await;
        assert_eq!(r.status, 200, "poll failed: {}", r.body);
        let v = r.json();
        let last_event_id = v["last_event_id"]
            .as_str()
            .unwrap_or_else(|| panic!("no last_event_id in {}", r.body))
            .to_string();
        let events = v["events"]
            .as_array()
            .unwrap_or_else(|| panic!("no events array in {}", r.body))
            .clone();
        assert_eq!(
            v.as_object().map(|o| o.len()),
            Some(2),
            "unexpected keys in {}",
            r.body
        );
        Batch {
            last_event_id,
            events,
        }
    }

    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.cookies.get(name).map(String::as_str)
    }
}
