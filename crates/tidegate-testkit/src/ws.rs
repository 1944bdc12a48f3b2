//! A WebSocket client (tokio-tungstenite) that surfaces every frame kind, so tests can
//! see the gateway's pings and close frames as well as its text frames.
use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::Rejected;

#[derive(Debug, Clone, PartialEq)]
pub enum WsItem {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong(Vec<u8>),
    /// The close frame's code and reason, if it had them.
    Close(Option<(u16, String)>),
}

pub struct Ws {
    stream: WebSocketStream<MaybeTlsStream<TcpStream>>,
}

impl Ws {
    /// Upgrades; an HTTP answer other than 101 is returned as [`Rejected`].
    pub async fn connect(url: &str, headers: &[(&str, &str)]) -> Result<Ws, Rejected> {
        let mut req = url.into_client_request().map_err(|e| Rejected {
            status: 0,
            body: e.to_string(),
        })?;
        for (k, v) in headers {
            let name: tokio_tungstenite::tungstenite::http::HeaderName =
                k.parse().expect("header name");
            req.headers_mut()
                .insert(name, HeaderValue::from_str(v).expect("header value"));
        }
        match tokio_tungstenite::connect_async(req).await {
            Ok((stream, _)) => Ok(Ws { stream }),
            Err(tokio_tungstenite::tungstenite::Error::Http(resp)) => Err(Rejected {
                status: resp.status().as_u16(),
                body: resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default(),
            }),
            Err(e) => Err(Rejected {
                status: 0,
                body: e.to_string(),
            }),
        }
    }

    /// The next frame, or an error on timeout or end of stream.
    pub async fn next_item(&mut self, timeout: Duration) -> anyhow::Result<WsItem> {
        let msg = match tokio::time::timeout(timeout, self.stream.next()).await {
            Err(_) => anyhow::bail!("no WebSocket frame within {timeout:?}"),
            Ok(None) => anyhow::bail!("the WebSocket stream ended"),
            Ok(Some(Err(e))) => anyhow::bail!("the WebSocket failed: {e}"),
            Ok(Some(Ok(m))) => m,
        };
        Ok(match msg {
            Message::Text(t) => WsItem::Text(t.as_str().to_string()),
            Message::Binary(b) => WsItem::Binary(b.to_vec()),
            Message::Ping(p) => WsItem::Ping(p.to_vec()),
            Message::Pong(p) => WsItem::Pong(p.to_vec()),
            Message::Close(c) => {
                WsItem::Close(c.map(|f| (u16::from(f.code), f.reason.to_string())))
            }
            Message::Frame(_) => anyhow::bail!("raw frame"),
        })
    }

    /// The next text frame, skipping pings and pongs; its text.
    pub async fn next_text(&mut self, timeout: Duration) -> anyhow::Result<String> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next_item(left).await? {
                WsItem::Text(t) => return Ok(t),
                WsItem::Ping(_) | WsItem::Pong(_) => {}
                other => anyhow::bail!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// The next text frame as JSON.
    pub async fn next_json(&mut self, timeout: Duration) -> anyhow::Result<Value> {
        let t = self.next_text(timeout).await?;
        Ok(serde_json::from_str(&t)?)
    }

    /// Sends a close frame and waits for the server's.
    pub async fn close(mut self) {
        let _ = self.stream.close(None).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), async {
            while let Some(Ok(_)) = self.stream.next().await {}
        })
        .await;
    }

    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        self.stream.send(Message::text(text)).await?;
        Ok(())
    }
}
