//! Security, end to end: a real gateway (`tidegate::start`) on port 0 with a
//! temporary log, real HTTP/WebSocket clients, and a real local HTTP server as the
//! external checker. Covers the JWT attacks at every connect endpoint, the session
//! blacklist on all three transports (custom `JWT_SESSION_FIELD`, expiry, restart),
//! the internal API token, each check mode, each soft limit, and TLS.
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use futures_util::StreamExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio_tungstenite::tungstenite::{self, Message};

use tidegate::config::Config;
use tidegate::Running;

const API_TOKEN: &str = "admin-test-token";
const SECRET: &str = "hs256-test-secret";

// === fixtures ===

fn keys_dir() -> PathBuf {
    // The auth crate's committed test-only key pairs.
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tidegate-auth/tests/keys")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hs(claims: &Value) -> String {
    hs_with(SECRET.as_bytes(), claims)
}

fn hs_with(secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn token_for(session: &str) -> String {
    hs(&json!({"sub": "alice", "jti": session, "exp": now() + 600}))
}

fn config(dir: &Path) -> Config {
    let mut c = Config::default();
    c.inbound.host = "127.0.0.1".into();
    c.inbound.port = 0;
    c.internal.port = 0;
    c.internal.token = Some(API_TOKEN.into());
    c.log.dir = dir.to_path_buf();
    c.log.durability = "buffered".into();
    c.jwt.secret_key = SECRET.into();
    // Tests open many connections from one address; the limit tests re-enable these.
    c.connections.max_connections_per_minute = 0;
    c.connections.max_connections_per_minute_per_client = 0;
    c.connections.longpoll_wait_secs = 5;
    c
}

struct Gw {
    run: Running,
    dir: TempDir,
    http: reqwest::Client,
}

impl Gw {
    async fn start(tweak: impl FnOnce(&mut Config)) -> Gw {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path());
        tweak(&mut cfg);
        let run = tidegate::start(cfg, None).await.unwrap();
        Gw {
            run,
            dir,
            http: reqwest::Client::new(),
        }
    }

    fn inbound(&self, path: &str) -> String {
        format!("http://{}{}", self.run.inbound, path)
    }

    fn ws(&self, query: &str) -> String {
        format!("ws://{}/_rig/v1/connection/ws?{}", self.run.inbound, query)
    }

    fn internal(&self, path: &str) -> String {
        format!("http://{}{}", self.run.internal, path)
    }

    async fn blacklist(&self, session: &str, secs: u64) {
        let resp = self
            .http
            .post(self.internal("/v3/session-blacklist"))
            .bearer_auth(API_TOKEN)
            .json(&json!({"sessionId": session, "validityInSeconds": secs}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 201, "{:?}", resp.text().await);
    }

    async fn blacklisted(&self, session: &str) -> u16 {
        self.http
            .get(self.internal(&format!("/v3/session-blacklist/{session}")))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn metrics(&self) -> String {
        self.http
            .get(self.internal("/metrics"))
            .bearer_auth(API_TOKEN)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    async fn sse(&self, query: &str) -> Result<Sse, (u16, String)> {
        sse_open(
            &self.http,
            &self.inbound(&format!("/_rig/v1/connection/sse?{query}")),
        )
        .await
    }

    async fn publish(&self, event_type: &str, data: Value) -> reqwest::Response {
        self.http
            .post(self.inbound("/_rig/v1/events"))
            .header("content-type", "application/cloudevents+json")
            .body(
                json!({"specversion": "1.0", "id": uuid(), "type": event_type,
                       "source": "/test", "data": data})
                .to_string(),
            )
            .send()
            .await
            .unwrap()
    }
}

fn uuid() -> String {
    format!("{:x}", rand_u64())
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    RandomState::new().hash_one(Instant::now())
}

fn enc(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn jwt_query(jwt: &str) -> String {
    format!("jwt={}", enc(jwt))
}

// === clients ===

struct Sse {
    resp: reqwest::Response,
    buf: String,
}

#[derive(Debug)]
enum Next {
    Event(String, Value),
    End,
}

async fn sse_open(http: &reqwest::Client, url: &str) -> Result<Sse, (u16, String)> {
    let resp = http.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    if status != 200 {
        return Err((status, resp.text().await.unwrap_or_default()));
    }
    Ok(Sse {
        resp,
        buf: String::new(),
    })
}

impl Sse {
    async fn next(&mut self, within: Duration) -> Next {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            while let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let mut ty = None;
                let mut data = None;
                for line in block.lines() {
                    if let Some(t) = line.strip_prefix("event: ") {
                        ty = Some(t.to_string());
                    } else if let Some(d) = line.strip_prefix("data: ") {
                        data = Some(serde_json::from_str(d).unwrap());
                    }
                }
                if let (Some(t), Some(d)) = (ty, data) {
                    return Next::Event(t, d);
                }
            }
            match tokio::time::timeout_at(deadline, self.resp.chunk()).await {
                Err(_) => panic!("no SSE event within {within:?}"),
                Ok(Ok(Some(chunk))) => self.buf.push_str(std::str::from_utf8(&chunk).unwrap()),
                Ok(_) => return Next::End,
            }
        }
    }

    async fn expect(&mut self, ty: &str) -> Value {
        match self.next(Duration::from_secs(5)).await {
            Next::Event(t, d) if t == ty => d,
            other => panic!("expected {ty}, got {other:?}"),
        }
    }
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_open(url: &str) -> Result<Ws, (u16, String)> {
    match tokio_tungstenite::connect_async(url).await {
        Ok((ws, _)) => Ok(ws),
        Err(tungstenite::Error::Http(resp)) => {
            let body = resp
                .body()
                .as_ref()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .unwrap_or_default();
            Err((resp.status().as_u16(), body))
        }
        Err(e) => panic!("WebSocket connect failed: {e}"),
    }
}

/// The next event's JSON, or `None` when the socket closed.
async fn ws_next(ws: &mut Ws, within: Duration) -> Option<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, ws.next()).await {
            Err(_) => panic!("no WebSocket message within {within:?}"),
            Ok(None) | Ok(Some(Err(_))) | Ok(Some(Ok(Message::Close(_)))) => return None,
            Ok(Some(Ok(Message::Text(t)))) => return Some(serde_json::from_str(&t).unwrap()),
            Ok(Some(Ok(_))) => {}
        }
    }
}

async fn ws_expect(ws: &mut Ws, ty: &str) -> Value {
    let v = ws_next(ws, Duration::from_secs(5))
        .await
        .unwrap_or_else(|| panic!("socket closed while waiting for {ty}"));
    assert_eq!(v["type"], ty, "{v}");
    v
}

/// A long-polling client keeping RIG's cookies.
#[derive(Clone)]
struct LongPoll {
    http: reqwest::Client,
    url: String,
    cookies: Arc<Mutex<Vec<(String, String)>>>,
}

impl LongPoll {
    fn new(gw: &Gw, query: &str) -> LongPoll {
        LongPoll {
            http: gw.http.clone(),
            url: gw.inbound(&format!("/_rig/v1/connection/longpolling?{query}")),
            cookies: Arc::default(),
        }
    }

    /// One request: status and JSON body.
    async fn get(&self) -> (u16, Value) {
        let cookie = self
            .cookies
            .lock()
            .unwrap()
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ");
        let mut req = self.http.get(&self.url);
        if !cookie.is_empty() {
            req = req.header("cookie", cookie);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        for v in resp.headers().get_all("set-cookie") {
            let v = v.to_str().unwrap();
            let (kv, attrs) = v.split_once(';').unwrap_or((v, ""));
            let (k, val) = kv.split_once('=').unwrap();
            let mut jar = self.cookies.lock().unwrap();
            jar.retain(|(name, _)| name != k);
            if !attrs.contains("Max-Age=0") {
                jar.push((k.to_string(), val.to_string()));
            }
        }
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn types(body: &Value) -> Vec<String> {
        body["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["type"].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// Status and reason of a connect attempt on each transport (101/200 = accepted).
async fn connect_status(gw: &Gw, query: &str) -> [(u16, String); 3] {
    let sse = match gw.sse(query).await {
        Ok(_) => (200, String::new()),
        Err(e) => e,
    };
    let ws = match ws_open(&gw.ws(query)).await {
        Ok(_) => (101, String::new()),
        Err(e) => e,
    };
    let (status, body) = LongPoll::new(gw, query).get().await;
    let lp = (status, body.as_str().unwrap_or_default().to_string());
    [sse, ws, lp]
}

// === JWT attacks ===

fn assert_refused(results: &[(u16, String); 3], status: u16, reason: &str) {
    for (i, (s, r)) in results.iter().enumerate() {
        let transport = ["sse", "ws", "longpolling"][i];
        assert_eq!(*s, status, "{transport}: {r}");
        assert!(r.contains(reason), "{transport}: `{r}` lacks `{reason}`");
    }
}

#[tokio::test]
async fn jwt_alg_none_is_refused_on_every_transport() {
    let gw = Gw::start(|_| {}).await;
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = URL_SAFE_NO_PAD.encode(json!({"sub": "x", "exp": now() + 60}).to_string());
    for token in [format!("{header}.{claims}."), format!("{header}.{claims}")] {
        let r = connect_status(&gw, &jwt_query(&token)).await;
        // Two parts is not a JWS at all: 400; `alg: none` is a JWT we refuse: 401.
        if token.ends_with('.') {
            assert_refused(&r, 401, "not accepted");
        } else {
            assert_refused(&r, 400, "malformed");
        }
    }
}

#[tokio::test]
async fn jwt_hs256_signed_with_the_rsa_public_key_is_refused() {
    let pem_path = keys_dir().join("rsa_public.pem");
    let pem = std::fs::read(&pem_path).unwrap();
    let gw = Gw::start(|c| {
        c.jwt.alg = "RS256".into();
        c.jwt.secret_key = pem_path.display().to_string();
    })
    .await;
    let forged = hs_with(&pem, &json!({"sub": "mallory", "exp": now() + 60}));
    let r = connect_status(&gw, &jwt_query(&forged)).await;
    assert_refused(&r, 401, "no key accepts JWT algorithm HS256");

    // The genuine RS256 token passes.
    let private = std::fs::read(keys_dir().join("rsa_private.pem")).unwrap();
    let good = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &json!({"sub": "alice", "exp": now() + 60}),
        &EncodingKey::from_rsa_pem(&private).unwrap(),
    )
    .unwrap();
    let r = connect_status(&gw, &jwt_query(&good)).await;
    assert_eq!([r[0].0, r[1].0, r[2].0], [200, 101, 200], "{r:?}");
}

#[tokio::test]
async fn jwt_with_unknown_kid_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let private = std::fs::read(keys_dir().join("rsa_private.pem")).unwrap();
    let key = EncodingKey::from_rsa_pem(&private).unwrap();
    let mut jwk = serde_json::to_value(
        jsonwebtoken::jwk::Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap(),
    )
    .unwrap();
    jwk["kid"] = json!("k1");
    let jwks = dir.path().join("jwks.json");
    std::fs::write(&jwks, json!({"keys": [jwk]}).to_string()).unwrap();
    let gw = Gw::start(|c| {
        c.jwt.secret_key = String::new();
        c.jwt.jwks_file = Some(jwks.clone());
    })
    .await;
    let sign = |kid: &str| {
        let mut h = Header::new(Algorithm::RS256);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, &json!({"sub": "a", "exp": now() + 60}), &key).unwrap()
    };
    let r = connect_status(&gw, &jwt_query(&sign("k2"))).await;
    assert_refused(&r, 401, "key id \"k2\" is unknown");
    let r = connect_status(&gw, &jwt_query(&sign("k1"))).await;
    assert_eq!([r[0].0, r[1].0, r[2].0], [200, 101, 200], "{r:?}");
}

#[tokio::test]
async fn malformed_expired_and_wrong_key_jwts_are_refused() {
    let gw = Gw::start(|_| {}).await;
    for (token, status, reason) in [
        ("not-a-jwt".to_string(), 400, "malformed"),
        ("a.b.c".to_string(), 400, "malformed"),
        (
            hs(&json!({"sub": "a", "exp": now() - 3600})),
            401,
            "expired",
        ),
        (
            hs_with(
                b"some other secret",
                &json!({"sub": "a", "exp": now() + 60}),
            ),
            401,
            "signature is invalid",
        ),
    ] {
        let r = connect_status(&gw, &jwt_query(&token)).await;
        assert_refused(&r, status, reason);
    }
    // The same refusal when the token comes as `Authorization: Bearer`.
    let resp = gw
        .http
        .get(gw.inbound("/_rig/v1/connection/sse"))
        .bearer_auth(hs(&json!({"sub": "a", "exp": now() - 3600})))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("expired"));
}

// === session blacklist ===

#[tokio::test]
async fn blacklist_kills_sse_ws_and_longpoll_of_a_custom_session_field() {
    let gw = Gw::start(|c| c.jwt.session_field = "/sid".into()).await;
    // The session is `sid`; `jti` is something else (RIG checked only `jti`).
    let token = hs(&json!({"sub": "alice", "sid": "s-1", "jti": "j-1", "exp": now() + 600}));
    let other = hs(&json!({"sub": "bob", "sid": "s-2", "jti": "s-1", "exp": now() + 600}));
    let q = jwt_query(&token);

    let mut sse = gw.sse(&q).await.unwrap();
    sse.expect("rig.connection.create").await;
    sse.expect("rig.subscriptions_set").await;
    let mut ws = ws_open(&gw.ws(&q)).await.unwrap();
    ws_expect(&mut ws, "rig.connection.create").await;
    let lp = LongPoll::new(&gw, &q);
    assert_eq!(lp.get().await.0, 200);
    let (_, first) = lp.get().await;
    assert!(LongPoll::types(&first).contains(&"rig.connection.create".to_string()));
    let mut other_sse = gw.sse(&jwt_query(&other)).await.unwrap();
    other_sse.expect("rig.connection.create").await;

    // A poll waiting for events when the kill comes.
    let waiting = {
        let lp = lp.clone();
        tokio::spawn(async move { lp.get().await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    let t0 = Instant::now();
    gw.blacklist("s-1", 60).await;

    let killed = Duration::from_secs(1);
    loop {
        match sse.next(killed).await {
            Next::Event(t, _) if t == "rig.session_killed" => break,
            Next::Event(..) => {}
            Next::End => panic!("SSE ended without rig.session_killed"),
        }
    }
    assert!(matches!(sse.next(killed).await, Next::End));
    loop {
        let v = ws_next(&mut ws, killed)
            .await
            .expect("socket closed before rig.session_killed");
        if v["type"] == "rig.session_killed" {
            break;
        }
    }
    assert!(
        ws_next(&mut ws, killed).await.is_none(),
        "socket must close"
    );
    let (status, body) = tokio::time::timeout(killed, waiting)
        .await
        .expect("the waiting long-poll was not answered within 1 s")
        .unwrap();
    assert_eq!(status, 200);
    assert!(
        LongPoll::types(&body).contains(&"rig.session_killed".to_string()),
        "{body}"
    );
    assert!(t0.elapsed() < Duration::from_secs(2), "{:?}", t0.elapsed());

    // Reconnecting is refused on every transport, with a reason.
    let r = connect_status(&gw, &q).await;
    assert_refused(&r, 401, "blacklisted");
    // The long-poll client coming back with its cookies is refused too.
    let (status, _) = lp.get().await;
    assert_eq!(status, 401);

    // Another session — even one whose `jti` is "s-1" — is untouched.
    let r = connect_status(&gw, &jwt_query(&other)).await;
    assert_eq!([r[0].0, r[1].0, r[2].0], [200, 101, 200], "{r:?}");
    assert_eq!(gw.blacklisted("s-1").await, 200);
    assert_eq!(gw.blacklisted("s-2").await, 404);
    assert_eq!(gw.blacklisted("j-1").await, 404);
    assert!(gw.metrics().await.contains("blacklisted"));
}

#[tokio::test]
async fn subscription_change_with_a_blacklisted_jwt_is_refused() {
    let gw = Gw::start(|_| {}).await;
    let mut sse = gw.sse(&jwt_query(&token_for("a"))).await.unwrap();
    let create = sse.expect("rig.connection.create").await;
    let conn = create["data"]["connection_token"]
        .as_str()
        .unwrap()
        .to_string();
    gw.blacklist("b", 60).await;
    let put = |jwt: String| {
        gw.http
            .put(gw.inbound(&format!("/_rig/v1/connection/sse/{conn}/subscriptions")))
            .bearer_auth(jwt)
            .json(&json!({"subscriptions": [{"eventType": "greeting"}]}))
            .send()
    };
    let resp = put(token_for("b")).await.unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.text().await.unwrap().contains("blacklisted"));
    assert_eq!(put(token_for("a")).await.unwrap().status(), 204);
}

#[tokio::test]
async fn blacklist_entries_expire() {
    let gw = Gw::start(|_| {}).await;
    gw.blacklist("short", 1).await;
    assert_eq!(gw.blacklisted("short").await, 200);
    assert_eq!(
        gw.sse(&jwt_query(&token_for("short")))
            .await
            .err()
            .unwrap()
            .0,
        401
    );
    let deadline = Instant::now() + Duration::from_secs(4);
    while gw.blacklisted("short").await != 404 {
        assert!(Instant::now() < deadline, "entry did not expire");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(gw.sse(&jwt_query(&token_for("short"))).await.is_ok());
}

#[tokio::test]
async fn blacklist_survives_a_restart() {
    let gw = Gw::start(|_| {}).await;
    gw.blacklist("persisted", 600).await;
    gw.blacklist("brief", 1).await;
    let Gw { run, dir, .. } = gw;
    run.shutdown().await;
    tokio::time::sleep(Duration::from_millis(1100)).await;

    let run = tidegate::start(config(dir.path()), None).await.unwrap();
    let gw = Gw {
        run,
        dir,
        http: reqwest::Client::new(),
    };
    assert_eq!(gw.blacklisted("persisted").await, 200);
    assert_eq!(gw.blacklisted("brief").await, 404, "expired while down");
    let r = connect_status(&gw, &jwt_query(&token_for("persisted"))).await;
    assert_refused(&r, 401, "blacklisted");
    let _ = &gw.dir;
}

#[tokio::test]
async fn blacklist_requests_are_validated() {
    let gw = Gw::start(|_| {}).await;
    for body in [
        json!({}),
        json!({"sessionId": "", "validityInSeconds": 5}),
        json!({"sessionId": "x"}),
        json!({"sessionId": "x", "validityInSeconds": -1}),
        json!({"sessionId": ["x"], "validityInSeconds": 5}),
    ] {
        let resp = gw
            .http
            .post(gw.internal("/v3/session-blacklist"))
            .bearer_auth(API_TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        assert!(!resp.text().await.unwrap().trim().is_empty());
    }
}

// === internal API authentication ===

#[tokio::test]
async fn internal_api_requires_the_token() {
    let gw = Gw::start(|_| {}).await;
    let get = |path: &str, token: Option<&str>| {
        let mut req = gw.http.get(gw.internal(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    for path in ["/metrics", "/v3/session-blacklist/x", "/v3/log-level"] {
        let resp = get(path, None).await.unwrap();
        assert_eq!(resp.status(), 401, "{path}");
        assert_eq!(resp.headers()["www-authenticate"], "Bearer");
        assert_eq!(get(path, Some("wrong")).await.unwrap().status(), 401);
    }
    let resp = gw
        .http
        .post(gw.internal("/v3/session-blacklist"))
        .json(&json!({"sessionId": "x", "validityInSeconds": 5}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(
        gw.blacklisted("x").await,
        404,
        "unauthenticated POST stored nothing"
    );

    assert_eq!(
        get("/metrics", Some(API_TOKEN)).await.unwrap().status(),
        200
    );
    assert_eq!(
        get("/v3/session-blacklist/x", Some(API_TOKEN))
            .await
            .unwrap()
            .status(),
        404
    );
    let health = get("/health", None).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "OK");
}

#[tokio::test]
async fn internal_api_opt_out_and_generated_token() {
    let gw = Gw::start(|c| {
        c.internal.token = None;
        c.internal.auth_disabled = true;
    })
    .await;
    assert!(gw.run.api_token.is_none());
    let resp = gw.http.get(gw.internal("/metrics")).send().await.unwrap();
    assert_eq!(resp.status(), 200);

    let gw = Gw::start(|c| c.internal.token = None).await;
    let generated = gw.run.api_token.clone().expect("a token is generated");
    assert_eq!(
        gw.http
            .get(gw.internal("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        401
    );
    let resp = gw
        .http
        .get(gw.internal("/metrics"))
        .bearer_auth(generated)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

// === checks ===

/// What the checker was asked: the `Authorization` header and the JSON body.
type Asked = (Option<String>, Value);

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<Asked>>>);

/// A real external checker: `/allow` 200, `/deny` 403, `/fail` 500, `/slow` never in time.
async fn checker() -> (SocketAddr, Seen) {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::post;
    let seen = Seen::default();
    let record = |seen: Seen| {
        move |headers: HeaderMap, body: axum::body::Bytes| {
            let seen = seen.clone();
            async move {
                let auth = headers
                    .get("authorization")
                    .map(|v| v.to_str().unwrap().to_string());
                let body = serde_json::from_slice(&body).unwrap_or(Value::Null);
                seen.0.lock().unwrap().push((auth, body));
                StatusCode::OK
            }
        }
    };
    let app = axum::Router::new()
        .route("/allow", post(record(seen.clone())))
        .route(
            "/deny",
            post(|| async { (StatusCode::FORBIDDEN, "not yours") }),
        )
        .route(
            "/fail",
            post(|| async { StatusCode::INTERNAL_SERVER_ERROR }),
        )
        .route(
            "/slow",
            post(|| async {
                tokio::time::sleep(Duration::from_secs(10)).await;
                StatusCode::OK
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, seen)
}

fn subs_query(jwt: Option<&str>) -> String {
    let subs = enc(&json!([{"eventType": "greeting"}]).to_string());
    match jwt {
        Some(j) => format!("subscriptions={subs}&{}", jwt_query(j)),
        None => format!("subscriptions={subs}"),
    }
}

#[tokio::test]
async fn subscription_check_with_an_external_service() {
    let (addr, seen) = checker().await;
    let token = token_for("s");
    for (path, connect_status, put_status, reason) in [
        ("allow", 200, 204, ""),
        ("deny", 400, 403, "not yours"),
        ("fail", 503, 503, "HTTP 500"),
        ("slow", 503, 503, "timed out"),
    ] {
        let gw = Gw::start(|c| {
            c.subscription_check = format!("http://{addr}/{path}");
            c.check_timeout_ms = 300;
        })
        .await;
        // At connect (RIG answers a denied subscription with 400).
        match gw.sse(&subs_query(Some(&token))).await {
            Ok(_) => assert_eq!(connect_status, 200, "{path}"),
            Err((s, r)) => {
                assert_eq!(s, connect_status, "{path}: {r}");
                assert!(r.contains(reason), "{path}: {r}");
            }
        }
        // On a subscription change: 403 when denied.
        let mut sse = gw.sse("").await.unwrap();
        let create = sse.expect("rig.connection.create").await;
        let conn = create["data"]["connection_token"].as_str().unwrap();
        let resp = gw
            .http
            .put(gw.inbound(&format!("/_rig/v1/connection/sse/{conn}/subscriptions")))
            .bearer_auth(&token)
            .json(&json!({"subscriptions": [{"eventType": "greeting"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), put_status, "{path}");
        if put_status == 503 {
            assert!(resp.headers().contains_key("retry-after"));
        }
    }
    // The checker saw the caller's Authorization and the subscriptions.
    let seen = seen.0.lock().unwrap();
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (auth, body) in seen.iter() {
        assert_eq!(auth.as_deref(), Some(format!("Bearer {token}").as_str()));
        assert_eq!(body[0]["eventType"], "greeting", "{body}");
    }
}

#[tokio::test]
async fn submission_check_with_an_external_service() {
    let (addr, seen) = checker().await;
    for (path, status) in [("allow", 202), ("deny", 403), ("fail", 503), ("slow", 503)] {
        let gw = Gw::start(|c| {
            c.submission_check = format!("http://{addr}/{path}");
            c.check_timeout_ms = 300;
        })
        .await;
        let resp = gw.publish("greeting", json!({"name": "john"})).await;
        assert_eq!(resp.status(), status, "{path}");
        if status != 202 {
            assert!(resp.text().await.unwrap().contains("submission denied"));
        }
    }
    let seen = seen.0.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].1["type"], "greeting", "{:?}", seen[0].1);
}

#[tokio::test]
async fn jwt_validation_checks_require_a_valid_jwt() {
    let gw = Gw::start(|c| {
        c.subscription_check = "jwt_validation".into();
        c.submission_check = "jwt_validation".into();
    })
    .await;
    // Subscribing.
    let (status, reason) = gw.sse(&subs_query(None)).await.err().unwrap();
    assert_eq!(status, 401, "{reason}");
    assert!(reason.contains("valid JWT is required"), "{reason}");
    let expired = hs(&json!({"sub": "a", "exp": now() - 3600}));
    assert_eq!(
        gw.sse(&subs_query(Some(&expired))).await.err().unwrap().0,
        401
    );
    assert!(gw.sse(&subs_query(Some(&token_for("s")))).await.is_ok());
    // Publishing.
    let event = json!({"specversion": "1.0", "id": "1", "type": "greeting", "source": "/t"});
    let post = |jwt: Option<String>| {
        let mut req = gw
            .http
            .post(gw.inbound("/_rig/v1/events"))
            .header("content-type", "application/cloudevents+json")
            .body(event.to_string());
        if let Some(j) = jwt {
            req = req.bearer_auth(j);
        }
        req.send()
    };
    assert_eq!(post(None).await.unwrap().status(), 401);
    assert_eq!(
        post(Some(hs_with(b"wrong", &json!({"sub": "a"}))))
            .await
            .unwrap()
            .status(),
        401
    );
    assert_eq!(post(Some(token_for("s"))).await.unwrap().status(), 202);
}

// === soft limits ===

fn retry_after(resp: &reqwest::Response) -> u64 {
    resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn connections_per_session_are_bounded() {
    let gw = Gw::start(|c| c.connections.max_connections_per_session = 2).await;
    let q = jwt_query(&token_for("busy"));
    let mut a = gw.sse(&q).await.unwrap();
    a.expect("rig.connection.create").await;
    let _b = ws_open(&gw.ws(&q)).await.unwrap();
    let r = connect_status(&gw, &q).await;
    assert_refused(&r, 429, "too many connections for this session (limit 2)");
    // Another session is not affected.
    assert!(gw.sse(&jwt_query(&token_for("calm"))).await.is_ok());
    // Closing one frees a slot.
    drop(a);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match gw.sse(&q).await {
            Ok(_) => break,
            Err((429, _)) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{e:?}"),
        }
    }
    assert!(gw.metrics().await.contains("session_limit"));
}

#[tokio::test]
async fn new_connections_per_minute_per_client_are_bounded() {
    let gw = Gw::start(|c| c.connections.max_connections_per_minute_per_client = 3).await;
    let lp = LongPoll::new(&gw, "");
    assert_eq!(lp.get().await.0, 200);
    // Polls of a live long-poll session are not new connections.
    for _ in 0..3 {
        assert_eq!(lp.get().await.0, 200);
    }
    let _a = gw.sse("").await.unwrap();
    let _b = ws_open(&gw.ws("")).await.unwrap();
    let resp = gw
        .http
        .get(gw.inbound("/_rig/v1/connection/sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(retry_after(&resp) >= 1);
    assert!(resp.text().await.unwrap().contains("for this client"));
    assert_eq!(ws_open(&gw.ws("")).await.err().unwrap().0, 429);
    // Other endpoints are not rate limited.
    assert_eq!(gw.publish("greeting", json!({})).await.status(), 202);
    assert!(gw.metrics().await.contains("client_rate_limited"));
}

#[tokio::test]
async fn new_connections_per_minute_per_node_are_bounded() {
    let gw = Gw::start(|c| c.connections.max_connections_per_minute = 2).await;
    let _a = gw.sse("").await.unwrap();
    let _b = gw.sse("").await.unwrap();
    let resp = gw
        .http
        .get(gw.inbound("/_rig/v1/connection/sse"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    assert!(retry_after(&resp) >= 1);
    assert!(gw.metrics().await.contains("rate_limited"));
}

#[tokio::test]
async fn longpoll_sessions_per_node_are_bounded() {
    let gw = Gw::start(|c| c.connections.max_longpoll_sessions = 2).await;
    let (a, b, c) = (
        LongPoll::new(&gw, ""),
        LongPoll::new(&gw, ""),
        LongPoll::new(&gw, ""),
    );
    assert_eq!(a.get().await.0, 200);
    assert_eq!(b.get().await.0, 200);
    let (status, body) = c.get().await;
    assert_eq!(status, 503, "{body}");
    assert!(body.as_str().unwrap().contains("long-polling sessions"));
    // Existing sessions keep polling; SSE is not affected.
    assert_eq!(a.get().await.0, 200);
    assert!(gw.sse("").await.is_ok());
    assert!(gw.metrics().await.contains("longpoll_limit"));
}

#[tokio::test]
async fn subscriptions_and_constraints_are_bounded() {
    let gw = Gw::start(|c| {
        c.connections.max_subscriptions = 2;
        c.connections.max_constraints = 1;
        c.extractors = Some(
            json!({"greeting": {"name": {"stable_field_index": 1,
                   "event": {"json_pointer": "/data/name"}}}})
            .to_string(),
        );
    })
    .await;
    let subs = |v: Value| format!("subscriptions={}", enc(&v.to_string()));
    let three = json!([{"eventType": "a"}, {"eventType": "b"}, {"eventType": "c"}]);
    let (s, r) = gw.sse(&subs(three.clone())).await.err().unwrap();
    assert_eq!(s, 400);
    assert!(r.contains("too many") || r.contains("limit"), "{r}");
    let two_constraints =
        json!([{"eventType": "greeting", "oneOf": [{"name": "john"}, {"name": "frank"}]}]);
    let (s, r) = gw.sse(&subs(two_constraints.clone())).await.err().unwrap();
    assert_eq!(s, 400, "{r}");
    // A field the extractors do not declare is refused (RIG silently widened).
    let undeclared = json!([{"eventType": "greeting", "oneOf": [{"age": 3}]}]);
    assert_eq!(gw.sse(&subs(undeclared)).await.err().unwrap().0, 400);
    let ok = json!([{"eventType": "greeting", "oneOf": [{"name": "john"}]}, {"eventType": "b"}]);
    let mut sse = gw.sse(&subs(ok)).await.unwrap();
    let create = sse.expect("rig.connection.create").await;
    let conn = create["data"]["connection_token"].as_str().unwrap();
    for body in [three, two_constraints] {
        let resp = gw
            .http
            .put(gw.inbound(&format!("/_rig/v1/connection/sse/{conn}/subscriptions")))
            .json(&json!({ "subscriptions": body }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400);
    }
}

#[tokio::test]
async fn oversized_request_heads_get_431() {
    let gw = Gw::start(|c| c.connections.max_header_bytes = 16 << 10).await;
    let ok = gw
        .http
        .get(gw.inbound("/_rig/health"))
        .header("x-pad", "a".repeat(8 << 10))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for url in [gw.inbound("/_rig/health"), gw.internal("/health")] {
        let resp = gw
            .http
            .get(url)
            .header("x-pad", "a".repeat(32 << 10))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 431);
    }
    // A huge JWT in the query string is part of the head too.
    let resp = gw
        .http
        .get(gw.inbound(&format!(
            "/_rig/v1/connection/sse?jwt={}",
            "a".repeat(40 << 10)
        )))
        .send()
        .await
        .unwrap();
    assert!(
        resp.status() == 431 || resp.status() == 414,
        "{}",
        resp.status()
    );
}

// === TLS ===

struct Certs {
    _dir: TempDir,
    cert: PathBuf,
    key: PathBuf,
    pem: String,
}

fn self_signed() -> Certs {
    let dir = tempfile::tempdir().unwrap();
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = dir.path().join("cert.pem");
    let key = dir.path().join("key.pem");
    let pem = ck.cert.pem();
    std::fs::write(&cert, &pem).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    Certs {
        _dir: dir,
        cert,
        key,
        pem,
    }
}

async fn tls_gateway(certs: &Certs) -> (Gw, reqwest::Client) {
    let gw = Gw::start(|c| {
        c.tls.cert_file = Some(certs.cert.clone());
        c.tls.key_file = Some(certs.key.clone());
        c.tls.inbound_port = 0;
        c.tls.internal_port = 0;
    })
    .await;
    let client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certs.pem.as_bytes()).unwrap())
        .resolve("localhost", gw.run.inbound_https.unwrap())
        .build()
        .unwrap();
    (gw, client)
}

#[tokio::test]
async fn tls_handshake_on_both_ports() {
    let certs = self_signed();
    let (gw, client) = tls_gateway(&certs).await;
    let inbound = gw.run.inbound_https.unwrap();
    let internal = gw.run.internal_https.unwrap();
    let resp = client
        .get(format!("https://localhost:{}/_rig/health", inbound.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let internal_client = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(certs.pem.as_bytes()).unwrap())
        .resolve("localhost", internal)
        .build()
        .unwrap();
    let url = format!("https://localhost:{}/metrics", internal.port());
    assert_eq!(
        internal_client.get(&url).send().await.unwrap().status(),
        401
    );
    let resp = internal_client
        .get(&url)
        .bearer_auth(API_TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    // Plain HTTP keeps working beside HTTPS.
    assert_eq!(
        gw.http
            .get(gw.inbound("/_rig/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // A client that does not trust the certificate fails the handshake.
    let untrusting = reqwest::Client::builder()
        .resolve("localhost", inbound)
        .build()
        .unwrap();
    let err = untrusting
        .get(format!("https://localhost:{}/_rig/health", inbound.port()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
    // Plain HTTP on the HTTPS port gets no HTTP answer.
    assert!(gw
        .http
        .get(format!("http://{inbound}/_rig/health"))
        .send()
        .await
        .is_err());
}

#[tokio::test]
async fn sse_event_over_tls() {
    let certs = self_signed();
    let (gw, client) = tls_gateway(&certs).await;
    let port = gw.run.inbound_https.unwrap().port();
    let url = format!(
        "https://localhost:{port}/_rig/v1/connection/sse?{}",
        subs_query(None)
    );
    let mut sse = sse_open(&client, &url).await.unwrap();
    sse.expect("rig.connection.create").await;
    sse.expect("rig.subscriptions_set").await;
    let resp = client
        .post(format!("https://localhost:{port}/_rig/v1/events"))
        .header("content-type", "application/cloudevents+json")
        .body(
            json!({"specversion": "1.0", "id": "tls-1", "type": "greeting",
                   "source": "/t", "data": {"name": "john"}})
            .to_string(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let ev = sse.expect("greeting").await;
    assert_eq!(ev["data"]["name"], "john");
}
