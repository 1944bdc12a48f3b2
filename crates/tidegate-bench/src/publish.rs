//! `pub`: publishes bench events over HTTP/1.1 keep-alive (single-event requests or
//! batches) at a target rate, each payload carrying its send timestamp (`bench_ts`) and
//! a sequence number (`seq`, 0, 1, 2, … over the whole run); bounded by `--count` and
//! `--duration`. Reports requests/s, events/s, request latency, how many sequence
//! numbers were sent and which of them were not acknowledged.
//!
//! `--type-groups G` spreads events over G event types: sequence `s` gets the type
//! `<event-type>.<s % G>` (the jitter scenario subscribes each connection to one group).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use hdrhistogram::Histogram;

use crate::common::*;

#[derive(Clone)]
struct Cfg {
    target: String,
    addr: SocketAddr,
    batch: usize,
    event_type: String,
    channel: String,
    pad: usize,
    run_id: String,
    type_groups: u64,
}

struct Totals {
    claimed: AtomicU64,
    ok_events: AtomicU64,
    ok_requests: AtomicU64,
    errors: AtomicU64,
    /// Sequence numbers handed to requests (all of `0..sent` were attempted).
    sent: AtomicU64,
    /// Sequence numbers whose request failed (not acknowledged), up to `MAX_FAILED`.
    failed: std::sync::Mutex<Vec<u64>>,
}

/// Failed sequence numbers listed individually; beyond this only the count is kept.
const MAX_FAILED: usize = 100_000;

impl Totals {
    fn failed(&self, first: u64, n: usize) {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        for s in first..first + n as u64 {
            if f.len() < MAX_FAILED {
                f.push(s);
            }
        }
    }
}

pub fn run(args: &Args) -> Result<()> {
    let threads: usize = args.num("threads", 1)?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .enable_all()
        .build()?;
    rt.block_on(main(args))
}

/// A 100-byte JSON payload (with the default pad) carrying the send timestamp.
fn data(seq: u64, pad: usize) -> String {
    let head = format!("{{\"bench_ts\":{},\"seq\":{seq},\"pad\":\"", now_ns());
    let fill = pad.saturating_sub(head.len() + 2).max(1);
    let mut s = head;
    s.extend(std::iter::repeat_n('x', fill));
    s.push_str("\"}");
    s
}

fn cloudevent(cfg: &Cfg, seq: u64) -> String {
    let ty = if cfg.type_groups > 0 {
        format!("{}.{}", cfg.event_type, seq % cfg.type_groups)
    } else {
        cfg.event_type.clone()
    };
    format!(
        r#"{{"specversion":"1.0","id":"{}-{seq}","source":"/bench","type":"{ty}","datacontenttype":"application/json","data":{}}}"#,
        cfg.run_id,
        data(seq, cfg.pad)
    )
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_string()).to_string()
}

fn request(cfg: &Cfg, first_seq: u64, n: usize) -> Result<Vec<u8>> {
    let host = cfg.addr;
    let (path, ctype, body) = match cfg.target.as_str() {
        "tidegate" if cfg.batch == 0 => (
            "/_rig/v1/events".to_string(),
            "application/cloudevents+json",
            cloudevent(cfg, first_seq),
        ),
        "tidegate" => {
            let mut body = String::with_capacity(n * 260);
            body.push('[');
            for i in 0..n {
                if i > 0 {
                    body.push(',');
                }
                body.push_str(&cloudevent(cfg, first_seq + i as u64));
            }
            body.push(']');
            (
                "/_rig/v1/events".to_string(),
                "application/cloudevents-batch+json",
                body,
            )
        }
        "nchan" => {
            if n != 1 {
                bail!("nchan publishes one message per request");
            }
            (
                format!("/pub?id={}", cfg.channel),
                "application/json",
                data(first_seq, cfg.pad),
            )
        }
        "pushpin" => {
            let items: Vec<String> = (0..n)
                .map(|i| {
                    let d = data(first_seq + i as u64, cfg.pad);
                    let sse = format!("event: bench\ndata: {d}\n\n");
                    format!(
                        r#"{{"channel":"{}","formats":{{"http-stream":{{"content":{}}},"ws-message":{{"content":{}}}}}}}"#,
                        cfg.channel,
                        json_str(&sse),
                        json_str(&d)
                    )
                })
                .collect();
            (
                "/publish/".to_string(),
                "application/json",
                format!(r#"{{"items":[{}]}}"#, items.join(",")),
            )
        }
        t => bail!("unknown --target {t}"),
    };
    Ok(format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes())
}

async fn main(args: &Args) -> Result<()> {
    let target = args.str("target", "tidegate");
    let batch: usize = args.num("batch", 0)?;
    let cfg = Cfg {
        target: target.clone(),
        addr: args.str("addr", "127.0.0.1:4000").parse()?,
        batch,
        event_type: args.str("event-type", "bench.shared"),
        channel: args.str("channel", "shared"),
        pad: args.num("payload-bytes", 100)?,
        run_id: args.str("run-id", &format!("r{}", now_ns())),
        type_groups: args.num("type-groups", 0)?,
    };
    let per_req = batch.max(1);
    let rate: f64 = args.num("rate", 0.0)?;
    let count: u64 = args.num("count", 10_000)?;
    let duration = secs(args.num("duration", 10.0)?);
    let conc: usize = args.num("concurrency", 1)?;
    let out = args.opt("out");
    let totals = Arc::new(Totals {
        claimed: AtomicU64::new(0),
        ok_events: AtomicU64::new(0),
        ok_requests: AtomicU64::new(0),
        errors: AtomicU64::new(0),
        sent: AtomicU64::new(0),
        failed: std::sync::Mutex::new(Vec::new()),
    });
    let t0 = Instant::now();
    let deadline = t0 + duration;
    let mut handles = Vec::new();
    for w in 0..conc {
        let cfg = cfg.clone();
        let totals = totals.clone();
        let interval = (rate > 0.0).then(|| secs(per_req as f64 * conc as f64 / rate));
        handles.push(tokio::spawn(async move {
            worker(w, cfg, totals, interval, count, per_req, deadline).await
        }));
    }
    let mut hist = new_hist();
    let mut first_error: Option<String> = None;
    for h in handles {
        match h.await? {
            Ok(h) => hist.add(&h)?,
            Err(e) => {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                first_error.get_or_insert(format!("{e:#}"));
            }
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let ok_events = totals.ok_events.load(Ordering::Relaxed);
    let ok_requests = totals.ok_requests.load(Ordering::Relaxed);
    let failed = std::mem::take(&mut *totals.failed.lock().unwrap_or_else(|e| e.into_inner()));
    let sent = totals.sent.load(Ordering::Relaxed);
    let j = serde_json::json!({
        "target": target,
        "batch": batch,
        "rate_target": rate,
        "concurrency": conc,
        "elapsed_secs": elapsed,
        "ok_events": ok_events,
        "ok_requests": ok_requests,
        "errors": totals.errors.load(Ordering::Relaxed),
        "first_error": first_error,
        "events_per_sec": ok_events as f64 / elapsed,
        "requests_per_sec": ok_requests as f64 / elapsed,
        "request_latency": hist_json(&hist),
        "sent_events": sent,
        "unacked_events": sent - ok_events,
        "failed_seqs": failed,
        "type_groups": cfg.type_groups,
    });
    match out {
        Some(f) => std::fs::write(f, j.to_string())?,
        None => println!("{j}"),
    }
    Ok(())
}

async fn worker(
    w: usize,
    cfg: Cfg,
    totals: Arc<Totals>,
    interval: Option<Duration>,
    count: u64,
    per_req: usize,
    deadline: Instant,
) -> Result<Histogram<u64>> {
    let mut hist = new_hist();
    let mut stream = connect_rotating(cfg.addr, w, true).await?;
    let mut buf = Vec::with_capacity(4096);
    let start = Instant::now();
    let mut k: u32 = 0;
    loop {
        if Instant::now() >= deadline {
            break;
        }
        let first = totals.claimed.fetch_add(per_req as u64, Ordering::Relaxed);
        if first >= count {
            break;
        }
        let n = per_req.min((count - first) as usize);
        totals.sent.fetch_add(n as u64, Ordering::Relaxed);
        if let Some(iv) = interval {
            let due = start + iv * k;
            k += 1;
            let now = Instant::now();
            if due > now {
                tokio::time::sleep(due - now).await;
            }
        }
        let req = request(&cfg, first, n)?;
        let t = Instant::now();
        let mut res = roundtrip(&mut stream, &req, &mut buf).await;
        if res.is_err() {
            // The server closed an idle keep-alive connection: reconnect, retry once.
            stream = connect_rotating(cfg.addr, w, true).await?;
            res = roundtrip(&mut stream, &req, &mut buf).await;
        }
        if let Ok((_, true)) = res {
            stream = connect_rotating(cfg.addr, w, true).await?;
        }
        match res.map(|(s, _)| s) {
            Ok(status) if (200..300).contains(&status) => {
                let _ = hist.record((t.elapsed().as_micros() as u64).max(1));
                totals.ok_events.fetch_add(n as u64, Ordering::Relaxed);
                totals.ok_requests.fetch_add(1, Ordering::Relaxed);
            }
            Ok(status) => {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                totals.failed(first, n);
                if status == 429 || status == 503 {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
            Err(_) => {
                totals.errors.fetch_add(1, Ordering::Relaxed);
                totals.failed(first, n);
                stream = connect_rotating(cfg.addr, w, true).await?;
            }
        }
    }
    Ok(hist)
}
