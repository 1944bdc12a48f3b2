//! One interface over SSE, WebSocket and long-polling, so a scenario runs on each
//! transport unchanged. [`Frontend::connect`] performs RIG's handshake — it asserts
//! that `rig.connection.create` (with `data.connection_token`) and then
//! `rig.subscriptions_set` are the first two events — and [`Frontend::next_event`]
//! yields the CloudEvent JSON of each later event, whatever the framing.
use serde_json::Value;
use std::collections::VecDeque;
use std::time::Duration;

use crate::gateway::Gateway;
use crate::longpoll::LongPoll;
use crate::sse::Sse;
use crate::ws::Ws;
use crate::{urlencode, Rejected};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Sse,
    Ws,
    LongPolling,
}

impl Kind {
    pub const ALL: [Kind; 3] = [Kind::Sse, Kind::Ws, Kind::LongPolling];

    /// The path segment (`sse`, `ws`, `longpolling`).
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Sse => "sse",
            Kind::Ws => "ws",
            Kind::LongPolling => "longpolling",
        }
    }
}

/// How to connect.
#[derive(Debug, Clone, Default)]
pub struct Opts {
    /// `?jwt=`
    pub jwt: Option<String>,
    /// `Authorization: Bearer`
    pub bearer: Option<String>,
    /// `?subscriptions=` (serialised as given)
    pub subscriptions: Option<Value>,
    /// Resume cursor: `Last-Event-ID` (SSE), `?lastEventId=` (WS), the
    /// `last_event_id` cookie (long-poll).
    pub resume: Option<String>,
}

impl Opts {
    pub fn subs(subscriptions: Value) -> Opts {
        Opts {
            subscriptions: Some(subscriptions),
            ..Opts::default()
        }
    }
    pub fn jwt(mut self, jwt: impl Into<String>) -> Opts {
        self.jwt = Some(jwt.into());
        self
    }
    pub fn bearer(mut self, jwt: impl Into<String>) -> Opts {
        self.bearer = Some(jwt.into());
        self
    }
    pub fn resume(mut self, cursor: impl Into<String>) -> Opts {
        self.resume = Some(cursor.into());
        self
    }
}

pub enum Client {
    Sse(Sse),
    Ws(Ws),
    Lp(LongPoll),
}

pub struct Frontend {
    pub kind: Kind,
    pub client: Client,
    /// `data.connection_token` of `rig.connection.create`.
    pub token: String,
    /// `data` of the last `rig.subscriptions_set`.
    pub subscriptions: Value,
    /// The `tidegatecursor` of the last event received.
    pub last_cursor: Option<String>,
    pending: VecDeque<Value>,
}

impl Frontend {
    /// Connects and performs the handshake (see the module documentation).
    pub async fn connect(gw: &Gateway, kind: Kind, opts: &Opts) -> Result<Frontend, Rejected> {
        Self::connect_with(gw, kind, opts, None).await
    }

    /// Long-poll only: opens a session with an existing client and its cookie jar, as a
    /// browser does when it comes back (after its session expired, say).
    pub async fn reopen_longpoll(
        gw: &Gateway,
        lp: LongPoll,
        opts: &Opts,
    ) -> Result<Frontend, Rejected> {
        Self::connect_with(gw, Kind::LongPolling, opts, Some(lp)).await
    }

    async fn connect_with(
        gw: &Gateway,
        kind: Kind,
        opts: &Opts,
        lp: Option<LongPoll>,
    ) -> Result<Frontend, Rejected> {
        let mut query = Vec::new();
        if let Some(j) = &opts.jwt {
            query.push(format!("jwt={}", urlencode(j)));
        }
        if let Some(s) = &opts.subscriptions {
            query.push(format!("subscriptions={}", urlencode(&s.to_string())));
        }
        if let (Some(c), Kind::Ws) = (&opts.resume, kind) {
            query.push(format!("lastEventId={}", urlencode(c)));
        }
        let query = query.join("&");
        let path = format!("/_rig/v1/connection/{}", kind.as_str());
        let bearer = opts.bearer.as_ref().map(|b| format!("Bearer {b}"));
        let mut headers: Vec<(&str, &str)> = Vec::new();
        if let Some(b) = &bearer {
            headers.push(("authorization", b));
        }
        let client = match kind {
            Kind::Sse => {
                if let Some(c) = &opts.resume {
                    headers.push(("last-event-id", c));
                }
                Client::Sse(Sse::connect(&gw.url(&format!("{path}?{query}")), &headers).await?)
            }
            Kind::Ws => {
                Client::Ws(Ws::connect(&gw.ws_url(&format!("{path}?{query}")), &headers).await?)
            }
            Kind::LongPolling => {
                let mut lp = lp.unwrap_or_else(|| LongPoll::new(gw.url(&path)));
                if let Some(c) = &opts.resume {
                    lp.cookies.insert("last_event_id".into(), c.clone());
                }
                let r = lp.get(&query, &headers).await;
                if r.status != 200 {
                    return Err(Rejected {
                        status: r.status,
                        body: r.body,
                    });
                }
                assert_eq!(r.body, "\"ok\"", "first long-poll answer");
                assert!(
                    lp.cookie("connection_token").is_some_and(|t| !t.is_empty()),
                    "no connection_token cookie in {:?}",
                    r.set_cookies
                );
                assert!(
                    lp.cookie("last_event_id").is_some(),
                    "no last_event_id cookie in {:?}",
                    r.set_cookies
                );
                Client::Lp(lp)
            }
        };
        let mut f = Frontend {
            kind,
            client,
            token: String::new(),
            subscriptions: Value::Null,
            last_cursor: opts.resume.clone(),
            pending: VecDeque::new(),
        };
        let create = f
            .next_raw(crate::WAIT)
            .await
            .expect("rig.connection.create");
        assert_eq!(
            create["type"], "rig.connection.create",
            "first event: {create}"
        );
        f.token = create["data"]["connection_token"]
            .as_str()
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| panic!("no data.connection_token in {create}"))
            .to_string();
        if let Client::Lp(lp) = &f.client {
            assert_eq!(
                lp.cookie("connection_token"),
                Some(f.token.as_str()),
                "the cookie and data.connection_token name the same session"
            );
        }
        let set = f
            .next_raw(crate::WAIT)
            .await
            .expect("rig.subscriptions_set");
        assert_eq!(set["type"], "rig.subscriptions_set", "second event: {set}");
        assert!(set["data"].is_array(), "subscriptions_set data: {set}");
        f.subscriptions = set["data"].clone();
        Ok(f)
    }

    /// The next event's JSON, whatever its type. For SSE it also checks that `id:`
    /// equals the event's `tidegatecursor` (and is absent for gateway events).
    pub async fn next_raw(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let v = loop {
            if let Some(v) = self.pending.pop_front() {
                break v;
            }
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                anyhow::bail!("no event within {timeout:?}");
            }
            match &mut self.client {
                Client::Sse(s) => {
                    let e = s.next_event(left).await?;
                    let v = e.json();
                    anyhow::ensure!(
                        e.event == v["type"].as_str().unwrap_or_default()
                            || e.event == v["eventType"].as_str().unwrap_or_default(),
                        "SSE event field {:?} differs from the type in {v}",
                        e.event
                    );
                    anyhow::ensure!(
                        e.id.as_deref() == v["tidegatecursor"].as_str(),
                        "SSE id {:?} differs from tidegatecursor in {v}",
                        e.id
                    );
                    break v;
                }
                Client::Ws(w) => break w.next_json(left).await?,
                Client::Lp(lp) => {
                    let poll = tokio::time::timeout(left, lp.poll()).await;
                    let Ok(batch) = poll else { continue };
                    self.pending.extend(batch.events);
                    // The cookie follows the body's last_event_id.
                    anyhow::ensure!(
                        lp.cookie("last_event_id").map(|c| c.trim_matches('"'))
                            == Some(batch.last_event_id.as_str()),
                        "last_event_id cookie {:?} differs from the body's {:?}",
                        lp.cookie("last_event_id"),
                        batch.last_event_id
                    );
                }
            }
        };
        if let Some(c) = v["tidegatecursor"].as_str() {
            self.last_cursor = Some(c.to_string());
        }
        Ok(v)
    }

    /// The next event, which must not be a gateway event other than
    /// `rig.subscriptions_set` (recorded in [`Frontend::subscriptions`]).
    pub async fn next_event(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        let v = self.next_raw(timeout).await?;
        if v["type"] == "rig.subscriptions_set" {
            self.subscriptions = v["data"].clone();
        }
        Ok(v)
    }

    /// Receives `n` events.
    pub async fn take(&mut self, n: usize) -> Vec<Value> {
        let mut out = Vec::with_capacity(n);
        for i in 0..n {
            match self.next_event(crate::WAIT).await {
                Ok(v) => out.push(v),
                Err(e) => panic!(
                    "{:?}: event {} of {n}: {e}; got so far: {out:?}",
                    self.kind,
                    i + 1
                ),
            }
        }
        out
    }

    /// Events already received (long-poll batches) but not yet handed out.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The long-poll client with its cookies (the session stays in the gateway).
    pub fn into_longpoll(self) -> LongPoll {
        match self.client {
            Client::Lp(l) => l,
            _ => panic!("not a long-poll frontend"),
        }
    }

    pub fn sse(&mut self) -> &mut Sse {
        match &mut self.client {
            Client::Sse(s) => s,
            _ => panic!("not an SSE frontend"),
        }
    }

    pub fn ws(&mut self) -> &mut Ws {
        match &mut self.client {
            Client::Ws(w) => w,
            _ => panic!("not a WebSocket frontend"),
        }
    }

    pub fn lp(&mut self) -> &mut LongPoll {
        match &mut self.client {
            Client::Lp(l) => l,
            _ => panic!("not a long-poll frontend"),
        }
    }

    /// Ends the connection from the client side (WebSocket: close handshake).
    pub async fn close(self) {
        match self.client {
            Client::Ws(w) => w.close().await,
            Client::Sse(s) => drop(s),
            Client::Lp(l) => drop(l),
        }
    }
}
