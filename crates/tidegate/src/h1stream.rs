//! Event streams without hyper's per-connection buffers.
//!
//! An SSE response lives as long as its client, and hyper keeps an 8 KiB read buffer
//! and an 8 KiB header write buffer for the life of every HTTP/1 connection — two
//! thirds of an idle SSE connection's memory (bench/NOTES.md). So the accept loop
//! looks at the first request of each plain HTTP/1 connection: when it is a `GET` of
//! the SSE endpoint without a body, it is parsed here (`httparse`), answered by the
//! same router, and its body written straight to the socket in chunked encoding;
//! the head buffer is freed before the stream starts. Anything else — another path, a
//! body, an upgrade, HTTP/2, a malformed or oversized head, bytes pipelined after the
//! head — goes to hyper untouched, with the bytes read so far replayed in front of the
//! socket ([`Rewind`]). Such a connection serves one response and then closes
//! (`connection: close`), as an event stream ends only when one side gives up anyway.
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{header, HeaderName, HeaderValue, Method, Request, Response, Version};
use axum::Router;
use bytes::{Buf, Bytes, BytesMut};
use http_body_util::BodyExt;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt;
use tracing::debug;

/// The request line every candidate starts with.
const SSE_PREFIX: &[u8] = b"GET /_rig/v1/connection/sse";
/// The first read's buffer; grown (doubling) up to the head limit for long heads.
const FIRST_READ: usize = 2048;
/// Headers parsed here at most; a request with more goes to hyper.
const MAX_HEADERS: usize = 64;
/// After shutdown, how long an open stream may take to end by itself.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// What the first bytes of a connection turned out to be.
pub enum Sniffed<I> {
    /// An SSE request, parsed; the socket is positioned after its head.
    Stream(Box<Request<Body>>, I),
    /// Anything else: the socket with the bytes already read in front.
    Other(Rewind<I>),
    /// The client went away (or sent nothing in time) before a whole head.
    Gone,
}

enum Verdict {
    NeedMore,
    Other,
    Stream(Box<Request<Body>>),
}

/// Reads just enough of the first request to tell whether it is ours.
pub async fn sniff<I>(mut io: I, max_head: usize, timeout: Duration) -> Sniffed<I>
where
    I: AsyncRead + Unpin,
{
    let mut buf = BytesMut::with_capacity(FIRST_READ.min(max_head.max(64)));
    let read = async {
        loop {
            match classify(&buf) {
                Verdict::Stream(req) => return Some(Some(req)),
                Verdict::Other => return Some(None),
                Verdict::NeedMore if buf.len() >= max_head => return Some(None),
                Verdict::NeedMore => {}
            }
            if buf.len() == buf.capacity() {
                let more = buf.capacity().min(max_head - buf.len());
                buf.reserve(more.max(64));
            }
            match io.read_buf(&mut buf).await {
                Ok(0) if buf.is_empty() => return None,
                // Hyper answers a truncated head (or reports the error).
                Ok(0) => return Some(None),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    };
    match tokio::time::timeout(timeout, read).await {
        Ok(Some(Some(req))) => Sniffed::Stream(req, io),
        Ok(Some(None)) => Sniffed::Other(Rewind::new(buf.freeze(), io)),
        Ok(None) | Err(_) => Sniffed::Gone,
    }
}

fn classify(buf: &[u8]) -> Verdict {
    let n = buf.len().min(SSE_PREFIX.len());
    if buf[..n] != SSE_PREFIX[..n] {
        return Verdict::Other;
    }
    if buf.len() <= SSE_PREFIX.len() {
        return Verdict::NeedMore;
    }
    if !matches!(buf[SSE_PREFIX.len()], b' ' | b'?') {
        return Verdict::Other;
    }
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut parsed = httparse::Request::new(&mut headers);
    let len = match parsed.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Verdict::NeedMore,
        Err(_) => return Verdict::Other,
    };
    if len != buf.len() {
        // Pipelined bytes after the head: hyper knows what to do with them.
        return Verdict::Other;
    }
    match build(&parsed) {
        Some(req) => Verdict::Stream(Box::new(req)),
        None => Verdict::Other,
    }
}

/// The parsed head as a request for the router, or `None` when hyper should see it.
fn build(parsed: &httparse::Request<'_, '_>) -> Option<Request<Body>> {
    let version = match parsed.version? {
        0 => Version::HTTP_10,
        1 => Version::HTTP_11,
        _ => return None,
    };
    let mut req = Request::builder()
        .method(Method::GET)
        .uri(parsed.path?)
        .version(version)
        .body(Body::empty())
        .ok()?;
    let headers = req.headers_mut();
    for h in parsed.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).ok()?;
        // A body or a protocol switch is hyper's business.
        if name == header::CONTENT_LENGTH && h.value != b"0"
            || name == header::TRANSFER_ENCODING
            || name == header::UPGRADE
            || name == header::EXPECT
        {
            return None;
        }
        headers.append(name, HeaderValue::from_bytes(h.value).ok()?);
    }
    if version == Version::HTTP_11 && !headers.contains_key(header::HOST) {
        return None; // hyper answers 400
    }
    Some(req)
}

/// Answers `req` with `router` and streams the response body to `io` until the body
/// ends, the client closes, a write fails (the [`StallGuard`] underneath fails writes
/// that stall) or shutdown's grace period is over.
///
/// [`StallGuard`]: tidegate_edge::net::StallGuard
pub async fn serve<I>(
    req: Box<Request<Body>>,
    mut io: I,
    remote: SocketAddr,
    router: Router,
    shutdown: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin,
{
    let mut req = *req;
    let version = req.version();
    req.extensions_mut().insert(ConnectInfo(remote));
    let Ok(resp) = router.oneshot(req).await;
    let chunked = version == Version::HTTP_11;
    let (head, body) = resp.into_parts();
    let mut body = body;
    let exact = http_body::Body::size_hint(&body).exact();
    let head_bytes = encode_head(&Response::from_parts(head, ()), exact, chunked);
    if io.write_all(&head_bytes).await.is_err() {
        return;
    }
    drop(head_bytes);
    let framed = chunked && exact.is_none();
    let mut probe = [0u8; 64];
    let grace = async {
        shutdown.cancelled().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    tokio::pin!(grace);
    loop {
        tokio::select! {
            frame = body.frame() => match frame {
                Some(Ok(frame)) => {
                    let Ok(data) = frame.into_data() else { continue };
                    if data.is_empty() {
                        continue;
                    }
                    if write_data(&mut io, data, framed).await.is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    // No terminating chunk: the client sees a truncated response.
                    debug!(%remote, error = %e, "Event stream body failed");
                    return;
                }
                None => {
                    if framed {
                        let _ = io.write_all(b"0\r\n\r\n").await;
                    }
                    let _ = io.shutdown().await;
                    return;
                }
            },
            read = io.read(&mut probe) => match read {
                // Bytes after the head of an event stream are ignored (and bounded
                // by this small buffer); end of stream means the client is gone.
                Ok(n) if n > 0 => {}
                _ => return,
            },
            _ = &mut grace => return,
        }
    }
}

/// One body chunk, written with a single vectored write where the socket allows.
async fn write_data<I: AsyncWrite + Unpin>(
    io: &mut I,
    data: Bytes,
    framed: bool,
) -> io::Result<()> {
    if !framed {
        let mut data = data;
        return io.write_all_buf(&mut data).await;
    }
    let mut size = [0u8; 18];
    let n = chunk_size_line(data.len(), &mut size);
    let mut chain = Buf::chain(Buf::chain(&size[..n], data), &b"\r\n"[..]);
    io.write_all_buf(&mut chain).await
}

/// `{len:X}\r\n` into `out`; the number of bytes used.
fn chunk_size_line(len: usize, out: &mut [u8; 18]) -> usize {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let digits = (usize::BITS - len.leading_zeros()).div_ceil(4).max(1) as usize;
    for i in 0..digits {
        out[digits - 1 - i] = HEX[(len >> (4 * i)) & 0xF];
    }
    out[digits] = b'\r';
    out[digits + 1] = b'\n';
    digits + 2
}

fn encode_head(resp: &Response<()>, exact: Option<u64>, chunked: bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(256);
    let status = resp.status();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    for (name, value) in resp.headers() {
        if name == header::CONNECTION
            || name == header::TRANSFER_ENCODING
            || name == header::CONTENT_LENGTH
        {
            continue;
        }
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    match exact {
        Some(len) => {
            out.extend_from_slice(b"content-length: ");
            out.extend_from_slice(len.to_string().as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        None if chunked => out.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        None => {}
    }
    if !resp.headers().contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(httpdate::fmt_http_date(std::time::SystemTime::now()).as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"connection: close\r\n\r\n");
    out
}

/// A socket with bytes already read from it in front.
pub struct Rewind<I> {
    prefix: Option<Bytes>,
    io: I,
}

impl<I> Rewind<I> {
    fn new(prefix: Bytes, io: I) -> Self {
        Rewind {
            prefix: (!prefix.is_empty()).then_some(prefix),
            io,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Rewind<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Some(prefix) = self.prefix.as_mut() {
            let n = prefix.len().min(buf.remaining());
            buf.put_slice(&prefix[..n]);
            prefix.advance(n);
            if prefix.is_empty() {
                self.prefix = None;
            }
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Rewind<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdict(head: &str) -> &'static str {
        match classify(head.as_bytes()) {
            Verdict::NeedMore => "more",
            Verdict::Other => "other",
            Verdict::Stream(_) => "stream",
        }
    }

    #[test]
    fn only_a_complete_bodiless_sse_get_is_taken() {
        let ok = "GET /_rig/v1/connection/sse?jwt=x HTTP/1.1\r\nHost: a\r\n\r\n";
        assert_eq!(verdict(ok), "stream");
        assert_eq!(
            verdict("GET /_rig/v1/connection/sse HTTP/1.0\r\n\r\n"),
            "stream"
        );
        for partial in [
            "G",
            "GET /_rig/v1/conn",
            "GET /_rig/v1/connection/sse",
            &ok[..40],
        ] {
            assert_eq!(verdict(partial), "more", "{partial:?}");
        }
        for other in [
            "POST /_rig/v1/events HTTP/1.1\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "GET /_rig/v1/connection/ssex HTTP/1.1\r\nHost: a\r\n\r\n",
            "GET /_rig/v1/connection/ws HTTP/1.1\r\n",
            "GET /_rig/v1/connection/sse HTTP/1.1\r\n\r\n", // no Host
            "GET /_rig/v1/connection/sse HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\n",
            "GET /_rig/v1/connection/sse HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n",
            "GET /_rig/v1/connection/sse HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\n\r\n",
            "GET /_rig/v1/connection/sse HTTP/1.1\r\nHo st: a\r\n\r\n",
            "GET /_rig/v1/connection/sse HTTP/1.1\r\nHost: a\r\n\r\nGET / HTTP/1.1\r\n",
        ] {
            assert_eq!(verdict(other), "other", "{other:?}");
        }
    }

    #[test]
    fn the_parsed_request_keeps_query_and_headers() {
        let head = "GET /_rig/v1/connection/sse?a=1&b=2 HTTP/1.1\r\nHost: h\r\nLast-Event-ID: 7\r\nX: 1\r\nX: 2\r\n\r\n";
        let Verdict::Stream(req) = classify(head.as_bytes()) else {
            panic!("not taken")
        };
        assert_eq!(req.uri().query(), Some("a=1&b=2"));
        assert_eq!(req.headers()["last-event-id"], "7");
        assert_eq!(req.headers().get_all("x").iter().count(), 2);
    }

    #[test]
    fn chunk_size_lines_are_hex() {
        let mut b = [0u8; 18];
        for (len, want) in [
            (0, "0\r\n"),
            (9, "9\r\n"),
            (255, "FF\r\n"),
            (4096, "1000\r\n"),
        ] {
            let n = chunk_size_line(len, &mut b);
            assert_eq!(std::str::from_utf8(&b[..n]).unwrap(), want);
        }
        let n = chunk_size_line(usize::MAX, &mut b);
        assert_eq!(n, usize::BITS as usize / 4 + 2);
    }

    #[tokio::test]
    async fn what_is_not_ours_reaches_hyper_byte_for_byte() {
        let (mut client, server) = tokio::io::duplex(4096);
        let req = b"POST /_rig/v1/events HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\n{}";
        client.write_all(req).await.unwrap();
        drop(client);
        let Sniffed::Other(mut rw) = sniff(server, 8192, Duration::from_secs(1)).await else {
            panic!("taken")
        };
        let mut all = Vec::new();
        rw.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, req);
    }

    #[tokio::test]
    async fn an_oversized_head_is_left_to_hyper() {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let mut head = b"GET /_rig/v1/connection/sse HTTP/1.1\r\nHost: a\r\nX: ".to_vec();
        head.extend(std::iter::repeat_n(b'a', 20_000));
        client.write_all(&head).await.unwrap();
        let Sniffed::Other(mut rw) = sniff(server, 8192, Duration::from_secs(1)).await else {
            panic!("taken")
        };
        let mut first = vec![0u8; 8192];
        rw.read_exact(&mut first).await.unwrap();
        assert_eq!(first, head[..8192]);
    }

    #[tokio::test]
    async fn a_silent_client_is_dropped_after_the_head_timeout() {
        let (_client, server) = tokio::io::duplex(64);
        let got = sniff(server, 8192, Duration::from_millis(50)).await;
        assert!(matches!(got, Sniffed::Gone));
    }
}
