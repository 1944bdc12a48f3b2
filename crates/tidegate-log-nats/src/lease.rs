//! Cluster-wide leases on a KV bucket `{prefix}_leases` whose entries expire after
//! [`TTL`] (the bucket's `max_age`): the holder of `name` is the node whose `create`
//! succeeded and that keeps renewing it (`update` at its revision) every `TTL / 3`.
//! A node that dies stops renewing; the entry expires and another node's `create`
//! wins. A node that can't renew in time (broker outage) gives the lease up locally
//! before it could expire on the server, so two nodes never both believe they hold it.
//! Dropping a held lease deletes the entry so a successor need not wait for expiry.
use async_nats::jetstream::kv;
use bytes::Bytes;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::Inner;

/// How long an unrenewed lease survives on the server.
pub const TTL: Duration = Duration::from_secs(9);
const RENEW: Duration = Duration::from_secs(3);

/// Drives one lease until `stop` (the lease was dropped) or the log shuts down.
pub(crate) async fn run(
    inner: Arc<Inner>,
    bucket: kv::Store,
    key: String,
    node: String,
    held: watch::Sender<bool>,
    stop: CancellationToken,
) {
    let mut revision: Option<u64> = None;
    let mut last_renewed = tokio::time::Instant::now();
    loop {
        let attempt = match revision {
            Some(rev) => {
                tokio::time::timeout(RENEW, bucket.update(&key, Bytes::from(node.clone()), rev))
                    .await
                    .map(|r| r.map_err(|e| e.to_string()))
            }
            None => tokio::time::timeout(RENEW, bucket.create(&key, Bytes::from(node.clone())))
                .await
                .map(|r| r.map_err(|e| e.to_string())),
        };
        match attempt {
            Ok(Ok(rev)) => {
                if revision.is_none() {
                    tracing::info!(lease = %key, node = %node, "Lease acquired.");
                }
                revision = Some(rev);
                last_renewed = tokio::time::Instant::now();
                held.send_replace(true);
            }
            Ok(Err(e)) => {
                // Someone else holds it (create: exists; update: wrong revision).
                if revision.take().is_some() {
                    tracing::warn!(lease = %key, error = %e, "Lease lost to another node.");
                }
                held.send_replace(false);
            }
            Err(_) => {
                // Broker unreachable: keep the lease only while it cannot have expired.
                if revision.is_some() && last_renewed.elapsed() >= TTL - RENEW {
                    tracing::warn!(lease = %key, "Lease not renewed in time; giving it up.");
                    revision = None;
                    held.send_replace(false);
                }
            }
        }
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = inner.shutdown.cancelled() => break,
            _ = tokio::time::sleep(RENEW) => {}
        }
    }
    held.send_replace(false);
    if revision.is_some() {
        // Hand over at once instead of after expiry.
        let _ = tokio::time::timeout(Duration::from_secs(2), bucket.delete(&key)).await;
        tracing::info!(lease = %key, "Lease released.");
    }
}
