//! `subs`: opens N subscriber connections (SSE or WebSocket) to Tidegate, Pushpin or
//! Nchan, each JWT-authenticated with two subscriptions (one per-user constrained, one
//! shared), parses the protocol, and records publish→receive latency of bench events.
//!
//! One process runs a single-threaded runtime (no locks on the hot path); run several
//! processes for more connections or cores.

use std::cell::{Cell, RefCell};
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Result};
use futures_util::StreamExt;
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;

use crate::common::*;

#[derive(Clone, Copy, PartialEq)]
enum Target {
    Tidegate,
    Pushpin,
    Nchan,
}

struct Shared {
    hist: RefCell<Histogram<u64>>,
    /// Bench events received per connection.
    received: Vec<Cell<u32>>,
    ready: Cell<usize>,
    failed: Cell<usize>,
    closed: Cell<usize>,
    first_error: RefCell<Option<String>>,
    deliveries: Cell<u64>,
    /// Largest latency seen by a non-slow connection (µs).
    bytes: Cell<u64>,
}

impl Shared {
    fn record(&self, idx: usize, payload: &[u8]) {
        if let Some(ts) = find_ts(payload) {
            let lat_us = now_ns().saturating_sub(ts) / 1000;
            let _ = self.hist.borrow_mut().record(lat_us.max(1));
            let c = &self.received[idx];
            c.set(c.get() + 1);
            self.deliveries.set(self.deliveries.get() + 1);
        }
    }
    fn fail(&self, e: &anyhow::Error) {
        self.failed.set(self.failed.get() + 1);
        let mut f = self.first_error.borrow_mut();
        if f.is_none() {
            *f = Some(format!("{e:#}"));
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    if args.num("jitter-period", 0.0)? > 0.0 {
        return crate::jitter::run(args);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let local = tokio::task::LocalSet::new();
    local.block_on(&rt, main(args))
}

async fn main(args: &Args) -> Result<()> {
    let target = match args.str("target", "tidegate").as_str() {
        "tidegate" => Target::Tidegate,
        "pushpin" => Target::Pushpin,
        "nchan" => Target::Nchan,
        t => bail!("unknown --target {t}"),
    };
    let ws = match args.str("transport", "sse").as_str() {
        "sse" => false,
        "ws" => true,
        t => bail!("unknown --transport {t}"),
    };
    let addr: SocketAddr = args.str("addr", "127.0.0.1:4000").parse()?;
    let n: usize = args.num("n", 100)?;
    let user_offset: usize = args.num("user-offset", 0)?;
    let slow: usize = args.num("slow", 0)?;
    let secret = args.str("secret", "bench-secret");
    let duration = secs(args.num("duration", 30.0)?);
    let conc: usize = args.num("connect-concurrency", 256)?;
    let rotate = args.str("rotate", "1") == "1";
    let ready_file = args.opt("ready-file");
    let stop_file = args.opt("stop-file");
    let out = args.opt("out");
    let connect_timeout = secs(args.num("connect-timeout", 90.0)?);
    let deadline = Instant::now() + duration;

    let shared = Rc::new(Shared {
        hist: RefCell::new(new_hist()),
        received: (0..n).map(|_| Cell::new(0)).collect(),
        ready: Cell::new(0),
        failed: Cell::new(0),
        closed: Cell::new(0),
        first_error: RefCell::new(None),
        deliveries: Cell::new(0),
        bytes: Cell::new(0),
    });
    let sem = Rc::new(Semaphore::new(conc));
    let t0 = Instant::now();
    for i in 0..n {
        let user = format!("user-{}", user_offset + i);
        let token = jwt(&secret, &user)?;
        let shared = shared.clone();
        let sem = sem.clone();
        let is_slow = i < slow;
        tokio::task::spawn_local(async move {
            let permit = sem.acquire().await.ok();
            let res = conn(
                target, ws, addr, i, rotate, &user, &token, is_slow, &shared, permit,
            )
            .await;
            match res {
                Ok(()) => shared.closed.set(shared.closed.get() + 1),
                Err(e) => shared.fail(&e),
            }
        });
    }
    // Wait until every connection is ready or failed, then announce it.
    let mut announced = false;
    let mut connect_secs = 0.0;
    loop {
        let done = shared.ready.get() + shared.failed.get() >= n || t0.elapsed() >= connect_timeout;
        if done && !announced {
            announced = true;
            connect_secs = t0.elapsed().as_secs_f64();
            if let Some(f) = &ready_file {
                let j = serde_json::json!({
                    "ready": shared.ready.get(), "failed": shared.failed.get(),
                    "connect_secs": connect_secs,
                    "first_error": shared.first_error.borrow().clone(),
                });
                std::fs::write(f, j.to_string())?;
            }
        }
        if Instant::now() >= deadline {
            break;
        }
        if let Some(f) = &stop_file {
            if std::path::Path::new(f).exists() {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let fast: Vec<u32> = shared.received[slow.min(n)..]
        .iter()
        .map(|c| c.get())
        .collect();
    let j = serde_json::json!({
        "target": args.str("target", "tidegate"),
        "transport": args.str("transport", "sse"),
        "n": n,
        "ready": shared.ready.get(),
        "failed": shared.failed.get(),
        "closed_by_server": shared.closed.get(),
        "first_error": shared.first_error.borrow().clone(),
        "connect_secs": connect_secs,
        "deliveries": shared.deliveries.get(),
        "bytes": shared.bytes.get(),
        "fast_min_received": fast.iter().min().copied().unwrap_or(0),
        "fast_max_received": fast.iter().max().copied().unwrap_or(0),
        "slow_received": shared.received[..slow.min(n)].iter().map(|c| c.get()).sum::<u32>(),
        "latency": hist_json(&shared.hist.borrow()),
    });
    match out {
        Some(f) => std::fs::write(f, j.to_string())?,
        None => println!("{j}"),
    }
    // Exiting drops every connection at once.
    std::process::exit(0);
}

fn query(target: Target, user: &str, token: &str) -> String {
    match target {
        Target::Tidegate => {
            let subs = format!(
                r#"[{{"eventType":"greeting","oneOf":[{{"name":"{user}"}}]}},{{"eventType":"bench.shared"}}]"#
            );
            format!("jwt={token}&subscriptions={}", urlencode(&subs))
        }
        // Peers do not verify JWTs; the token still travels so the requests are alike.
        _ => format!("user={user}&jwt={token}"),
    }
}

fn path(target: Target, ws: bool) -> &'static str {
    match (target, ws) {
        (Target::Tidegate, false) => "/_rig/v1/connection/sse",
        (Target::Tidegate, true) => "/_rig/v1/connection/ws",
        (Target::Pushpin, false) => "/stream",
        (Target::Pushpin, true) => "/ws",
        (Target::Nchan, _) => "/sub",
    }
}

#[allow(clippy::too_many_arguments)]
async fn conn(
    target: Target,
    ws: bool,
    addr: SocketAddr,
    idx: usize,
    rotate: bool,
    user: &str,
    token: &str,
    slow: bool,
    shared: &Shared,
    permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> Result<()> {
    let stream = connect_rotating(addr, idx, rotate).await?;
    let uri = format!("{}?{}", path(target, ws), query(target, user, token));
    if ws {
        ws_conn(target, stream, addr, &uri, idx, slow, shared, permit).await
    } else {
        sse_conn(target, stream, addr, &uri, idx, slow, shared, permit).await
    }
}

#[allow(clippy::too_many_arguments)]
async fn sse_conn(
    target: Target,
    mut stream: TcpStream,
    addr: SocketAddr,
    uri: &str,
    idx: usize,
    slow: bool,
    shared: &Shared,
    permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> Result<()> {
    let req = format!(
        "GET {uri} HTTP/1.1\r\nHost: {addr}\r\nAccept: text/event-stream\r\nCache-Control: no-cache\r\n\r\n"
    );
    stream.write_all(req.as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let (head, rest) = read_head(&mut stream, &mut buf).await?;
    if head.status != 200 {
        bail!("SSE status {}", head.status);
    }
    let mut dechunk = head.chunked.then(Dechunk::default);
    let mut parser = SseParser::default();
    let mut ready = target != Target::Tidegate;
    let mut permit = permit;
    if ready {
        shared.ready.set(shared.ready.get() + 1);
        drop(permit.take());
    }
    let mut body = Vec::with_capacity(512);
    let mut tmp = vec![0u8; 4096];
    let mut input: Vec<u8> = rest;
    loop {
        if !input.is_empty() {
            shared.bytes.set(shared.bytes.get() + input.len() as u64);
            let data: &[u8] = match &mut dechunk {
                Some(d) => {
                    body.clear();
                    d.feed(&input, &mut body)?;
                    &body
                }
                None => &input,
            };
            parser.feed(data, |ev, payload, _id| {
                if !ready && ev == b"rig.subscriptions_set" {
                    ready = true;
                    shared.ready.set(shared.ready.get() + 1);
                    drop(permit.take());
                } else if ev != b"rig.connection.create" {
                    shared.record(idx, payload);
                }
            });
            input.clear();
        }
        if slow && ready {
            // The slow client: connected and subscribed, never reads again.
            std::future::pending::<()>().await;
        }
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            if !ready {
                bail!("closed before ready");
            }
            return Ok(());
        }
        input.extend_from_slice(&tmp[..n]);
    }
}

#[allow(clippy::too_many_arguments)]
async fn ws_conn(
    target: Target,
    stream: TcpStream,
    addr: SocketAddr,
    uri: &str,
    idx: usize,
    slow: bool,
    shared: &Shared,
    permit: Option<tokio::sync::SemaphorePermit<'_>>,
) -> Result<()> {
    let url = format!("ws://{addr}{uri}");
    let cfg = WebSocketConfig::default()
        .read_buffer_size(4 << 10)
        .write_buffer_size(0)
        .max_message_size(Some(1 << 20));
    let (mut ws, resp) = tokio_tungstenite::client_async_with_config(url, stream, Some(cfg))
        .await
        .map_err(|e| anyhow!("ws handshake: {e}"))?;
    drop(resp);
    let mut ready = target != Target::Tidegate;
    let mut permit = permit;
    if ready {
        shared.ready.set(shared.ready.get() + 1);
        drop(permit.take());
    }
    loop {
        if slow && ready {
            std::future::pending::<()>().await;
        }
        let Some(msg) = ws.next().await else {
            if !ready {
                bail!("closed before ready");
            }
            return Ok(());
        };
        match msg.map_err(|e| anyhow!("ws: {e}"))? {
            Message::Text(t) => {
                let b = t.as_bytes();
                shared.bytes.set(shared.bytes.get() + b.len() as u64);
                if !ready {
                    if memfind(b, b"\"rig.subscriptions_set\"").is_some() {
                        ready = true;
                        shared.ready.set(shared.ready.get() + 1);
                        drop(permit.take());
                    }
                } else {
                    shared.record(idx, b);
                }
            }
            Message::Binary(b) => shared.record(idx, &b),
            Message::Close(_) => return Ok(()),
            _ => {}
        }
    }
}

/// Server-sent events parser (WHATWG): lines end in LF or CRLF; `event:`, `data:` and
/// `id:` fields; a blank line dispatches; comments (`:`) are ignored. The callback gets
/// the event type, the data and the `id:` given in this event (if any).
#[derive(Default)]
pub struct SseParser {
    line: Vec<u8>,
    event: Vec<u8>,
    data: Vec<u8>,
    id: Vec<u8>,
    has_data: bool,
    has_id: bool,
}

impl SseParser {
    pub fn feed(
        &mut self,
        mut input: &[u8],
        mut on_event: impl FnMut(&[u8], &[u8], Option<&[u8]>),
    ) {
        while let Some(nl) = input.iter().position(|&b| b == b'\n') {
            let line_owned;
            let line: &[u8] = if self.line.is_empty() {
                &input[..nl]
            } else {
                self.line.extend_from_slice(&input[..nl]);
                line_owned = std::mem::take(&mut self.line);
                &line_owned
            };
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.is_empty() {
                if self.has_data {
                    let ev: &[u8] = if self.event.is_empty() {
                        b"message"
                    } else {
                        &self.event
                    };
                    on_event(ev, &self.data, self.has_id.then_some(&self.id[..]));
                }
                self.event.clear();
                self.data.clear();
                self.id.clear();
                self.has_data = false;
                self.has_id = false;
            } else if line[0] != b':' {
                let (field, value) = match line.iter().position(|&b| b == b':') {
                    Some(c) => {
                        let v = &line[c + 1..];
                        (&line[..c], v.strip_prefix(b" ").unwrap_or(v))
                    }
                    None => (line, &b""[..]),
                };
                match field {
                    b"event" => {
                        self.event.clear();
                        self.event.extend_from_slice(value);
                    }
                    b"id" => {
                        self.id.clear();
                        self.id.extend_from_slice(value);
                        self.has_id = true;
                    }
                    b"data" => {
                        if self.has_data {
                            self.data.push(b'\n');
                        }
                        self.data.extend_from_slice(value);
                        self.has_data = true;
                    }
                    _ => {}
                }
            }
            input = &input[nl + 1..];
        }
        self.line.extend_from_slice(input);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_parses_split_frames() {
        let mut p = SseParser::default();
        let mut got = Vec::new();
        let text = b"event: a\r\nid: 1\r\ndata: {\"bench_ts\":5}\r\n\r\n: hb\n\nevent: b\ndata: x\ndata: y\n\n";
        for chunk in text.chunks(3) {
            p.feed(chunk, |e, d, id| {
                got.push((e.to_vec(), d.to_vec(), id.map(|i| i.to_vec())))
            });
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, b"a");
        assert_eq!(got[0].2.as_deref(), Some(&b"1"[..]));
        assert_eq!(got[1].2, None);
        assert_eq!(find_ts(&got[0].1), Some(5));
        assert_eq!(got[1].1, b"x\ny");
    }

    #[test]
    fn dechunk_across_reads() {
        let mut d = Dechunk::default();
        let mut out = Vec::new();
        let raw = b"5\r\nhello\r\n6;x=y\r\n world\r\n0\r\n\r\n";
        for c in raw.chunks(2) {
            d.feed(c, &mut out).unwrap();
        }
        assert_eq!(out, b"hello world");
        assert!(d.done);
    }
}
