//! `grip-origin`: the backend Pushpin proxies to. It answers every SSE request with a
//! GRIP hold on two channels (`user-<id>` and `shared`), and every WebSocket-over-HTTP
//! `OPEN` with a grip subscribe to the same two channels. Pushpin then holds the
//! connections itself; the origin is only involved at connect time.

use anyhow::{bail, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::common::*;

pub fn run(args: &Args) -> Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let addr = args.str("listen", "127.0.0.1:7999");
    let secs_limit = secs(args.num("duration", 3600.0)?);
    rt.block_on(async move {
        let l = TcpListener::bind(&addr).await?;
        println!("grip-origin listening {}", l.local_addr()?);
        let serve = async {
            loop {
                let (s, _) = l.accept().await?;
                tokio::spawn(async move {
                    let _ = serve_conn(s).await;
                });
            }
            #[allow(unreachable_code)]
            Ok::<(), anyhow::Error>(())
        };
        tokio::select! {
            r = serve => r,
            _ = tokio::time::sleep(secs_limit) => Ok(()),
        }
    })
}

fn ws_event(kind: &str, content: &str) -> String {
    format!("{kind} {:x}\r\n{content}\r\n", content.len())
}

async fn serve_conn(mut s: TcpStream) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut tmp = [0u8; 4096];
    loop {
        let end = loop {
            if let Some(e) = memfind(&buf, b"\r\n\r\n") {
                break e;
            }
            let n = s.read(&mut tmp).await?;
            if n == 0 {
                return Ok(());
            }
            buf.extend_from_slice(&tmp[..n]);
        };
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let mut clen = 0usize;
        let mut is_ws = false;
        for l in head.split("\r\n").skip(1) {
            if let Some((k, v)) = l.split_once(':') {
                let k = k.trim().to_ascii_lowercase();
                if k == "content-length" {
                    clen = v.trim().parse().unwrap_or(0);
                } else if k == "content-type" && v.contains("websocket-events") {
                    is_ws = true;
                }
            }
        }
        while buf.len() < end + 4 + clen {
            let n = s.read(&mut tmp).await?;
            if n == 0 {
                bail!("closed in body");
            }
            buf.extend_from_slice(&tmp[..n]);
        }
        let body = buf[end + 4..end + 4 + clen].to_vec();
        buf.drain(..end + 4 + clen);
        let target = head.split(' ').nth(1).unwrap_or("/").to_string();
        let user = target
            .split_once("user=")
            .map(|(_, r)| r.split('&').next().unwrap_or("").to_string())
            .unwrap_or_else(|| "anon".into());
        let resp = if is_ws {
            let mut out = String::new();
            if body.starts_with(b"OPEN") {
                out.push_str("OPEN\r\n");
                for ch in [format!("user-{user}"), "shared".to_string()] {
                    let c = format!(r#"c:{{"type":"subscribe","channel":"{ch}"}}"#);
                    out.push_str(&ws_event("TEXT", &c));
                }
                let ka = r#"c:{"type":"keep-alive","content":"","timeout":15}"#;
                out.push_str(&ws_event("TEXT", ka));
            } else if memfind(&body, b"CLOSE").is_some() {
                out.push_str("CLOSE\r\n");
            }
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/websocket-events\r\nSec-WebSocket-Extensions: grip\r\nContent-Length: {}\r\n\r\n{out}",
                out.len()
            )
        } else {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nGrip-Hold: stream\r\nGrip-Channel: user-{user}, shared\r\nGrip-Keep-Alive: :\\n\\n; format=cstring; timeout=15\r\nContent-Length: 0\r\n\r\n"
            )
        };
        s.write_all(resp.as_bytes()).await?;
    }
}
