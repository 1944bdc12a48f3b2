//! An SSE client over a real socket: a streaming `GET` whose body is cut into blocks at
//! blank lines. Each block is an event (`event:`, `id:`, `data:` fields) or a comment
//! (`: heartbeat`); the raw bytes of every block are kept so tests can assert the
//! exact framing.
use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde_json::Value;
use std::pin::Pin;
use std::time::Duration;

use crate::{http_client, Rejected};

#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
    /// The block as received, including its terminating blank line.
    pub raw: String,
}

impl SseEvent {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {}", self.data))
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum SseItem {
    Event(SseEvent),
    /// A comment block (without the leading `:` and one space), e.g. `heartbeat`.
    Comment(String),
}

type BodyStream = Pin<Box<dyn Stream<Item = reqwest::Result<Bytes>> + Send>>;

pub struct Sse {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    body: BodyStream,
    buf: BytesMut,
}

impl Sse {
    /// Opens the stream; a non-200 answer is returned as [`Rejected`].
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Sse, Rejected> {
        let mut req = http_client().get(url).header("accept", "text/event-stream");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = req.send().await.map_err(|e| Rejected {
            status: 0,
            body: format!("request failed: {e}"),
        })?;
        let status = resp.status().as_u16();
        if status != 200 {
            return Err(Rejected {
                status,
                body: resp.text().await.unwrap_or_default(),
            });
        }
        Ok(Sse {
            status,
            headers: resp.headers().clone(),
            body: Box::pin(resp.bytes_stream()),
            buf: BytesMut::new(),
        })
    }

    /// The next block, or an error on timeout or end of stream.
    pub async fn next_item(&mut self, timeout: Duration) -> anyhow::Result<SseItem> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(item) = self.parse_one()? {
                return Ok(item);
            }
            match tokio::time::timeout_at(deadline, self.body.next()).await {
                Err(_) => anyhow::bail!("no SSE block within {timeout:?}"),
                Ok(None) => anyhow::bail!("the SSE stream ended"),
                Ok(Some(Err(e))) => anyhow::bail!("the SSE stream failed: {e}"),
                Ok(Some(Ok(chunk))) => self.buf.extend_from_slice(&chunk),
            }
        }
    }

    /// The next event, skipping comments (heartbeats).
    pub async fn next_event(&mut self, timeout: Duration) -> anyhow::Result<SseEvent> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if let SseItem::Event(e) = self.next_item(left).await? {
                return Ok(e);
            }
        }
    }

    /// Resolves when the server ends the stream (after any remaining blocks), or
    /// fails after `timeout`.
    pub async fn ended(&mut self, timeout: Duration) -> anyhow::Result<Vec<SseItem>> {
        let mut rest = Vec::new();
        loop {
            match self.next_item(timeout).await {
                Ok(item) => rest.push(item),
                Err(e) if e.to_string().contains("ended") => return Ok(rest),
                Err(e) => return Err(e),
            }
        }
    }

    fn parse_one(&mut self) -> anyhow::Result<Option<SseItem>> {
        let Some(end) = self.buf.windows(2).position(|w| w == b"\n\n") else {
            return Ok(None);
        };
        let block = self.buf.split_to(end + 2);
        let raw = std::str::from_utf8(&block)?.to_string();
        let body = &raw[..raw.len() - 2];
        let mut event = None;
        let mut id = None;
        let mut data: Vec<&str> = Vec::new();
        let mut comments: Vec<&str> = Vec::new();
        for line in body.split('\n') {
            if let Some(c) = line.strip_prefix(':') {
                comments.push(c.strip_prefix(' ').unwrap_or(c));
                continue;
            }
            let (field, value) = line.split_once(':').unwrap_or((line, ""));
            let value = value.strip_prefix(' ').unwrap_or(value);
            match field {
                "event" => event = Some(value.to_string()),
                "id" => id = Some(value.to_string()),
                "data" => data.push(value),
                other => anyhow::bail!("unexpected SSE field `{other}` in {raw:?}"),
            }
        }
        if event.is_none() && id.is_none() && data.is_empty() {
            return Ok(Some(SseItem::Comment(comments.join("\n"))));
        }
        Ok(Some(SseItem::Event(SseEvent {
            // The SSE default event type.
            event: event.unwrap_or_else(|| "message".into()),
            id,
            data: data.join("\n"),
            raw,
        })))
    }
}
