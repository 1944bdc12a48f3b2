//! Shared helpers: arguments, clocks, histograms, source-address rotation, HTTP bits.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::os::fd::AsRawFd;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use hdrhistogram::Histogram;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// `--key value` pairs; a `--flag` followed by another `--…` (or nothing) reads as "1".
pub struct Args(HashMap<String, String>);

impl Args {
    pub fn parse(raw: &[String]) -> Result<Self> {
        let mut map = HashMap::new();
        let mut i = 0;
        while i < raw.len() {
            let k = raw[i]
                .strip_prefix("--")
                .ok_or_else(|| anyhow!("unexpected argument `{}`", raw[i]))?;
            match raw.get(i + 1) {
                Some(v) if !v.starts_with("--") => {
                    map.insert(k.to_string(), v.clone());
                    i += 2;
                }
                _ => {
                    map.insert(k.to_string(), "1".to_string());
                    i += 1;
                }
            }
        }
        Ok(Args(map))
    }
    pub fn str(&self, k: &str, default: &str) -> String {
        self.0
            .get(k)
            .cloned()
            .unwrap_or_else(|| default.to_string())
    }
    pub fn opt(&self, k: &str) -> Option<String> {
        self.0.get(k).cloned()
    }
    pub fn num<T: std::str::FromStr>(&self, k: &str, default: T) -> Result<T> {
        match self.0.get(k) {
            None => Ok(default),
            Some(v) => v.parse().map_err(|_| anyhow!("--{k}: not a number: {v}")),
        }
    }
}

/// Nanoseconds since the Unix epoch (CLOCK_REALTIME: comparable across processes).
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Latency histogram in microseconds, 1 µs .. 10 min, 3 significant digits.
pub fn new_hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("histogram bounds")
}

/// Percentiles plus the raw (value, count) buckets so that the orchestrator can merge
/// histograms of several client processes exactly.
pub fn hist_json(h: &Histogram<u64>) -> serde_json::Value {
    let buckets: Vec<[u64; 2]> = h
        .iter_recorded()
        .map(|v| {
            [
                h.highest_equivalent(v.value_iterated_to()),
                v.count_at_value(),
            ]
        })
        .collect();
    serde_json::json!({
        "count": h.len(),
        "p50_us": h.value_at_quantile(0.50),
        "p99_us": h.value_at_quantile(0.99),
        "p999_us": h.value_at_quantile(0.999),
        "max_us": h.max(),
        "mean_us": h.mean(),
        "buckets": buckets,
    })
}

/// Finds `"bench_ts":<digits>` in a payload and returns the nanosecond timestamp.
pub fn find_ts(payload: &[u8]) -> Option<u64> {
    find_num(payload, b"\"bench_ts\":")
}

/// Finds `"seq":<digits>` (the publisher's sequence number) in a payload.
pub fn find_seq(payload: &[u8]) -> Option<u64> {
    find_num(payload, b"\"seq\":")
}

/// The unsigned integer right after `key` (e.g. `"seq":`), spaces allowed before it.
pub fn find_num(payload: &[u8], key: &[u8]) -> Option<u64> {
    let pos = memfind(payload, key)?;
    let mut v: u64 = 0;
    let mut any = false;
    for &b in &payload[pos + key.len()..] {
        if b.is_ascii_digit() {
            v = v.checked_mul(10)?.checked_add((b - b'0') as u64)?;
            any = true;
        } else if b == b' ' && !any {
            continue;
        } else {
            break;
        }
    }
    any.then_some(v)
}

pub fn memfind(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    let first = needle[0];
    let mut i = 0;
    while i + needle.len() <= hay.len() {
        match hay[i..hay.len() - needle.len() + 1]
            .iter()
            .position(|&b| b == first)
        {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i..i + needle.len()] == needle {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// Connects from source address 127.0.0.(2 + idx % 253) with `IP_BIND_ADDRESS_NO_PORT`
/// so that the kernel picks the port per 4-tuple and ephemeral ports do not run out.
pub async fn connect_rotating(dst: SocketAddr, idx: usize, rotate: bool) -> Result<TcpStream> {
    let sock = TcpSocket::new_v4()?;
    if rotate && dst.ip().is_loopback() {
        let one: libc::c_int = 1;
        // SAFETY: valid fd, option value is a c_int of the given size.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const libc::c_int as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            bail!(
                "IP_BIND_ADDRESS_NO_PORT: {}",
                std::io::Error::last_os_error()
            );
        }
        let src = Ipv4Addr::new(127, 0, 0, 2 + (idx % 253) as u8);
        sock.bind(SocketAddr::V4(SocketAddrV4::new(src, 0)))?;
    }
    // Small kernel buffers keep a 19 k-connection client process modest.
    let s2 = socket2::SockRef::from(&sock);
    let _ = s2.set_tcp_nodelay(true);
    let stream = sock.connect(dst).await?;
    Ok(stream)
}

/// Percent-encodes everything outside the URL "unreserved" set.
pub fn urlencode(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 3);
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// HS256 token for `sub`, valid for an hour.
pub fn jwt(secret: &str, sub: &str) -> Result<String> {
    let exp = now_ns() / 1_000_000_000 + 3600;
    let claims = serde_json::json!({"sub": sub, "exp": exp});
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .context("jwt encode")
}

/// Incremental decoder of HTTP/1.1 `Transfer-Encoding: chunked`.
#[derive(Default)]
pub struct Dechunk {
    state: ChunkState,
    size_line: Vec<u8>,
    pub done: bool,
}

#[derive(Default)]
enum ChunkState {
    #[default]
    Size,
    Data(usize),
    DataCrlf(u8),
    Trailer,
}

impl Dechunk {
    /// Appends the decoded bytes of `input` to `out`.
    pub fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        while !input.is_empty() && !self.done {
            match self.state {
                ChunkState::Size => {
                    if let Some(nl) = input.iter().position(|&b| b == b'\n') {
                        self.size_line.extend_from_slice(&input[..nl]);
                        input = &input[nl + 1..];
                        let line = std::str::from_utf8(&self.size_line)?.trim();
                        let hex = line.split(';').next().unwrap_or("").trim();
                        let n = usize::from_str_radix(hex, 16)
                            .map_err(|_| anyhow!("bad chunk size `{line}`"))?;
                        self.size_line.clear();
                        self.state = if n == 0 {
                            ChunkState::Trailer
                        } else {
                            ChunkState::Data(n)
                        };
                    } else {
                        self.size_line.extend_from_slice(input);
                        input = &[];
                    }
                }
                ChunkState::Data(n) => {
                    let take = n.min(input.len());
                    out.extend_from_slice(&input[..take]);
                    input = &input[take..];
                    self.state = if take == n {
                        ChunkState::DataCrlf(2)
                    } else {
                        ChunkState::Data(n - take)
                    };
                }
                ChunkState::DataCrlf(k) => {
                    input = &input[1..];
                    self.state = if k == 1 {
                        ChunkState::Size
                    } else {
                        ChunkState::DataCrlf(k - 1)
                    };
                }
                ChunkState::Trailer => {
                    // Trailers are ignored; the body has ended.
                    self.done = true;
                }
            }
        }
        Ok(())
    }
}

/// A parsed response head.
pub struct Head {
    pub status: u16,
    pub chunked: bool,
    pub content_length: Option<usize>,
    pub close: bool,
}

/// Reads until the end of the response head; returns it and the bytes read past it.
pub async fn read_head(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(Head, Vec<u8>)> {
    let mut tmp = [0u8; 4096];
    loop {
        if let Some(end) = memfind(buf, b"\r\n\r\n") {
            let head = parse_head(&buf[..end])?;
            let rest = buf[end + 4..].to_vec();
            buf.clear();
            return Ok((head, rest));
        }
        if buf.len() > 64 << 10 {
            bail!("response head too large");
        }
        let n = stream.read(&mut tmp).await?;
        if n == 0 {
            bail!("connection closed before response head");
        }
        buf.extend_from_slice(&tmp[..n]);
    }
}

fn parse_head(raw: &[u8]) -> Result<Head> {
    let text = std::str::from_utf8(raw)?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or("");
    let status: u16 = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow!("bad status line `{status_line}`"))?;
    let mut chunked = false;
    let mut content_length = None;
    let mut close = false;
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            let k = k.trim().to_ascii_lowercase();
            let v = v.trim();
            if k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked") {
                chunked = true;
            } else if k == "content-length" {
                content_length = v.parse().ok();
            } else if k == "connection" && v.eq_ignore_ascii_case("close") {
                close = true;
            }
        }
    }
    Ok(Head {
        status,
        chunked,
        content_length,
        close,
    })
}

/// Sends one request on a keep-alive connection and reads the whole response; returns
/// the status and whether the server asked to close the connection.
pub async fn roundtrip(
    stream: &mut TcpStream,
    req: &[u8],
    buf: &mut Vec<u8>,
) -> Result<(u16, bool)> {
    stream.write_all(req).await?;
    let (head, mut rest) = read_head(stream, buf).await?;
    let mut tmp = [0u8; 4096];
    if head.chunked {
        let mut d = Dechunk::default();
        let mut sink = Vec::new();
        d.feed(&rest, &mut sink)?;
        while !d.done {
            let n = stream.read(&mut tmp).await?;
            if n == 0 {
                bail!("closed inside chunked body");
            }
            d.feed(&tmp[..n], &mut sink)?;
        }
    } else {
        let len = head.content_length.unwrap_or(0);
        while rest.len() < len {
            let n = stream.read(&mut tmp).await?;
            if n == 0 {
                bail!("closed inside body");
            }
            rest.extend_from_slice(&tmp[..n]);
        }
        if rest.len() > len {
            // Pipelining is not used: anything past the body is a protocol error.
            bail!("unexpected bytes after response body");
        }
    }
    Ok((head.status, head.close))
}

pub fn secs(s: f64) -> Duration {
    Duration::from_secs_f64(s.max(0.0))
}
