//! SSE on the wire, over raw sockets: the event-stream endpoint is served outside
//! hyper when it is a connection's first request (see `src/h1stream.rs`), so its
//! HTTP/1 framing is checked byte by byte here, along with what must still reach
//! hyper.
use std::time::Duration;
use tidegate_testkit::{greeting, GatewayBuilder};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const WAIT: Duration = Duration::from_secs(5);

/// Reads until `needle` has arrived (or panics after `WAIT`); everything read so far.
async fn read_until(s: &mut TcpStream, got: &mut Vec<u8>, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(text) = std::str::from_utf8(got).ok().filter(|t| t.contains(needle)) {
            return text.to_owned();
        }
        let mut buf = [0u8; 4096];
        let n = tokio::time::timeout_at(deadline, s.read(&mut buf))
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no {needle:?} within {WAIT:?}; got {:?}",
                    String::from_utf8_lossy(got)
                )
            })
            .unwrap();
        assert!(
            n > 0,
            "closed before {needle:?}: {:?}",
            String::from_utf8_lossy(got)
        );
        got.extend_from_slice(&buf[..n]);
    }
}

fn head_of(text: &str) -> String {
    text.split("\r\n\r\n").next().unwrap().to_ascii_lowercase()
}

async fn open_sse(gw: &tidegate_testkit::Gateway, version: &str) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(gw.inbound).await.unwrap();
    let q = "subscriptions=%5B%7B%22eventType%22%3A%22greeting%22%7D%5D";
    s.write_all(
        format!("GET /_rig/v1/connection/sse?{q} {version}\r\nHost: x\r\nAccept: text/event-stream\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut got = Vec::new();
    read_until(&mut s, &mut got, "rig.subscriptions_set").await;
    (s, got)
}

async fn sse_connections(gw: &tidegate_testkit::Gateway) -> u64 {
    let text = gw
        .http
        .get(gw.internal_url("/metrics"))
        .bearer_auth(tidegate_testkit::gateway::API_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix("tidegate_connections{transport=\"sse\"} "))
        .map_or(0, |v| v.trim().parse().unwrap())
}

#[tokio::test]
async fn an_event_stream_is_chunked_and_says_it_closes() {
    let gw = GatewayBuilder::new().start().await;
    let (mut s, mut got) = open_sse(&gw, "HTTP/1.1").await;
    let text = String::from_utf8(got.clone()).unwrap();
    let head = head_of(&text);
    assert!(head.starts_with("http/1.1 200 ok\r\n"), "{head}");
    for h in [
        "content-type: text/event-stream; charset=utf-8",
        "cache-control: no-cache",
        "transfer-encoding: chunked",
        "connection: close",
        "date: ",
    ] {
        assert!(head.contains(h), "{h:?} missing from {head}");
    }
    assert!(!head.contains("content-length"), "{head}");
    // Chunks: `<hex size>\r\n<data>\r\n`, the data being SSE frames.
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    let (size, rest) = body.split_once("\r\n").unwrap();
    let size = usize::from_str_radix(size, 16).unwrap();
    assert!(rest.len() >= size + 2);
    assert!(
        rest[..size].starts_with("event: rig.connection.create\n"),
        "{rest}"
    );
    assert_eq!(&rest[size..size + 2], "\r\n");

    gw.publish(&greeting("john", "w-1")).await;
    let text = read_until(&mut s, &mut got, "\"w-1\"").await;
    assert!(text.contains("event: greeting\nid: "), "{text}");
}

#[tokio::test]
async fn an_http_1_0_stream_is_delimited_by_the_close() {
    let gw = GatewayBuilder::new().start().await;
    let (_s, got) = open_sse(&gw, "HTTP/1.0").await;
    let text = String::from_utf8(got).unwrap();
    let head = head_of(&text);
    assert!(!head.contains("transfer-encoding"), "{head}");
    assert!(head.contains("connection: close"), "{head}");
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    assert!(body.starts_with("event: rig.connection.create\n"), "{body}");
}

#[tokio::test]
async fn a_client_that_hangs_up_is_unregistered_at_once() {
    // Heartbeats far away: only the read side can notice the client leaving.
    let gw = GatewayBuilder::new().heartbeat_secs(3600).start().await;
    let (s, _) = open_sse(&gw, "HTTP/1.1").await;
    assert_eq!(sse_connections(&gw).await, 1);
    drop(s);
    let deadline = tokio::time::Instant::now() + WAIT;
    while sse_connections(&gw).await != 0 {
        assert!(tokio::time::Instant::now() < deadline, "still registered");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_refused_stream_gets_a_sized_error_body() {
    let gw = GatewayBuilder::new().start().await;
    let mut s = TcpStream::connect(gw.inbound).await.unwrap();
    s.write_all(
        b"GET /_rig/v1/connection/sse?subscriptions=%5Bnot-json HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await
    .unwrap();
    let mut all = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut all))
        .await
        .expect("the gateway closes after the answer")
        .unwrap();
    let text = String::from_utf8(all).unwrap();
    let head = head_of(&text);
    assert!(head.starts_with("http/1.1 400 "), "{text}");
    let len: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .expect("content-length")
        .parse()
        .unwrap();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    assert_eq!(body.len(), len, "{text}");
    assert!(!body.is_empty());
}

#[tokio::test]
async fn requests_that_are_not_a_first_sse_get_still_reach_hyper() {
    let gw = GatewayBuilder::new().start().await;
    let mut s = TcpStream::connect(gw.inbound).await.unwrap();
    // A health check, then an event stream, on one keep-alive connection, sent in
    // small pieces (the first bytes alone cannot tell what the request is).
    let req = "GET /_rig/health HTTP/1.1\r\nHost: x\r\n\r\n";
    for piece in req.as_bytes().chunks(5) {
        s.write_all(piece).await.unwrap();
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let mut got = Vec::new();
    read_until(&mut s, &mut got, "\r\n\r\n").await;
    assert!(String::from_utf8_lossy(&got).starts_with("HTTP/1.1 200"));
    got.clear();
    s.write_all(b"GET /_rig/v1/connection/sse HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let text = read_until(&mut s, &mut got, "rig.connection.create").await;
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");

    // An SSE GET that carries a body is hyper's too.
    let mut s = TcpStream::connect(gw.inbound).await.unwrap();
    s.write_all(b"GET /_rig/v1/connection/sse HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        .await
        .unwrap();
    let mut got = Vec::new();
    let text = read_until(&mut s, &mut got, "\r\n\r\n").await;
    assert!(text.starts_with("HTTP/1.1 "), "{text}");
}
