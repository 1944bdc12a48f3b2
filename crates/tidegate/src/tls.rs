//! Serving a router on a listener, in plain HTTP or in HTTPS (rustls), with the
//! connection-level limits hyper enforces: the largest request head (a bigger one is
//! answered `431`), the time a client may take to send it, and the TLS handshake
//! timeout. Each accepted connection is one task in a [`TaskTracker`]; on shutdown
//! the accept loop stops, every connection is asked to finish gracefully, and
//! [`serve`] returns when the last one is done.
use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::service::TowerToHyperService;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt;
use tracing::{debug, warn};

use crate::h1stream;

/// A client must complete the TLS handshake within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A client must send a whole request head within this (slowloris).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read certificates from {path}: {message}")]
    Certificates { path: PathBuf, message: String },
    #[error("cannot read a private key from {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("certificate and key do not form a usable TLS configuration: {0}")]
    Config(#[from] rustls::Error),
}

/// A TLS acceptor from PEM files (RIG's `HTTPS_CERTFILE` / `HTTPS_KEYFILE`),
/// offering HTTP/2 and HTTP/1.1 by ALPN.
pub fn acceptor(cert_file: &Path, key_file: &Path) -> Result<TlsAcceptor, TlsError> {
    let certs = CertificateDer::pem_file_iter(cert_file)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| TlsError::Certificates {
            path: cert_file.into(),
            message: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::Certificates {
            path: cert_file.into(),
            message: "no CERTIFICATE block found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(key_file).map_err(|e| TlsError::Key {
        path: key_file.into(),
        message: e.to_string(),
    })?;
    // Why an explicit provider: `builder()` panics when the dependency graph enables
    // more than one rustls crypto backend.
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(cfg)))
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy)]
pub struct ServeOptions {
    /// Largest request head; at least 8192 (hyper's smallest buffer).
    pub max_header_bytes: usize,
    /// A write that makes no progress for this long fails and the connection is
    /// dropped: a client that stopped reading must not hold its socket forever.
    pub write_stall: Duration,
}

/// Accepts on `listener` until `shutdown`, then drains the open connections.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    tls: Option<TlsAcceptor>,
    opts: ServeOptions,
    shutdown: CancellationToken,
) {
    let conns = TaskTracker::new();
    loop {
        let (tcp, remote) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    warn!(error = %e, "Accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        let tcp = tidegate_edge::net::StallGuard::new(tcp, opts.write_stall);
        let router = router.clone();
        let sd = shutdown.clone();
        let tls = tls.clone();
        let tracker = conns.clone();
        conns.spawn(async move {
            match tls {
                None => serve_io(tcp, remote, router, opts, sd, tracker).await,
                Some(acceptor) => {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => serve_io(stream, remote, router, opts, sd, tracker).await,
                        Ok(Err(e)) => debug!(%remote, error = %e, "TLS handshake failed"),
                        Err(_) => debug!(%remote, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
    drop(listener);
    conns.close();
    conns.wait().await;
}

async fn serve_io<I>(
    io: I,
    remote: SocketAddr,
    router: Router,
    opts: ServeOptions,
    shutdown: CancellationToken,
    conns: TaskTracker,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Event streams are served without hyper (its buffers would live as long as the
    // stream); everything else, with the bytes read so far, goes to hyper.
    let io = match h1stream::sniff(io, opts.max_header_bytes.max(8192), HEADER_READ_TIMEOUT).await {
        h1stream::Sniffed::Stream(req, io) => {
            // A task of its own (~1.5 KiB): this one is sized for the largest state of
            // any connection (TLS handshake, hyper) and would live as long as the stream.
            conns.spawn(h1stream::serve(req, io, remote, router, shutdown));
            return;
        }
        h1stream::Sniffed::Other(io) => io,
        h1stream::Sniffed::Gone => return,
    };
    let service = router.map_request(move |req: Request<Incoming>| {
        let mut req = req.map(Body::new);
        req.extensions_mut().insert(ConnectInfo(remote));
        req
    });
    let service = TowerToHyperService::new(service);
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(opts.max_header_bytes.max(8192));
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(opts.max_header_bytes).unwrap_or(u32::MAX))
        // WebSockets over HTTP/2 (RFC 8441), as axum supports them.
        .enable_connect_protocol();
    let mut conn = pin!(builder.serve_connection_with_upgrades(TokioIo::new(io), service));
    let mut draining = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    debug!(%remote, error = %e, "Connection ended with an error");
                }
                return;
            }
            _ = shutdown.cancelled(), if !draining => {
                draining = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
