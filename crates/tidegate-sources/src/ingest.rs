//! One batch of broker messages through the sink.
//!
//! A source decodes each message it takes into a [`Msg`] (its broker handle plus its
//! events, or why it has none), hands the batch to [`store`] — one log append for
//! all events of all messages — and gets one [`Verdict`] per message back: `Ack` (its
//! events are stored, or were already) or `Poison` (nothing of it can ever be stored:
//! acknowledge or terminate it, never redeliver it). Counting and warning about what
//! was skipped happen here, once per successful store, so a retried batch is not
//! counted twice.
use std::fmt::Display;
use std::time::Duration;

use futures_util::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use tidegate_core::event::{Event, EventError};

use crate::sink::{LogSink, SinkError, Stored};
use crate::status::Cell;

/// One broker message: `token` is what the source needs to acknowledge it and to
/// name it in a warning.
pub(crate) struct Msg<T> {
    pub token: T,
    pub decoded: Result<Vec<Event>, EventError>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    Ack,
    Poison,
}

/// Appends the events of `msgs` in order. On `Err` nothing may be acknowledged and
/// nothing was counted: retry the same batch.
pub(crate) async fn store<T: Display>(
    sink: &LogSink,
    cell: &Cell,
    msgs: &[Msg<T>],
) -> Result<Vec<Verdict>, SinkError> {
    let events: Vec<Event> = msgs
        .iter()
        .filter_map(|m| m.decoded.as_ref().ok())
        .flat_map(|evs| evs.iter().cloned())
        .collect();
    let stored = if events.is_empty() {
        Vec::new()
    } else {
        sink.append(&events).await?
    };

    let mut results = stored.into_iter();
    let mut verdicts = Vec::with_capacity(msgs.len());
    let (mut appended, mut duplicates, mut rejected) = (0u64, 0u64, 0u64);
    for m in msgs {
        let evs = match &m.decoded {
            Ok(evs) => evs,
            Err(e) => {
                rejected += 1;
                tracing::warn!(source = %cell.name(), message = %m.token, reason = %e, "Skipping a message that is not a CloudEvent.");
                verdicts.push(Verdict::Poison);
                continue;
            }
        };
        let mut kept = 0usize;
        for ev in evs {
            match results.next() {
                Some(Stored::New(_)) => {
                    appended += 1;
                    kept += 1;
                }
                Some(Stored::Duplicate(_)) => {
                    duplicates += 1;
                    kept += 1;
                }
                Some(Stored::Rejected(why)) => {
                    rejected += 1;
                    tracing::warn!(source = %cell.name(), message = %m.token, id = %ev.id, reason = %why, "Skipping an event that cannot be stored.");
                }
                None => {}
            }
        }
        verdicts.push(if kept == 0 && !evs.is_empty() {
            Verdict::Poison
        } else {
            Verdict::Ack
        });
    }
    cell.appended(appended);
    cell.duplicates(duplicates);
    cell.rejected(rejected);
    Ok(verdicts)
}

/// Something to do every period while a batch waits (JetStream progress acks).
pub(crate) type KeepAlive<'a> = (Duration, &'a (dyn Fn() -> BoxFuture<'a, ()> + Sync));

/// [`store`], retrying log failures with backoff until the log takes the batch (the
/// source shows `Down` meanwhile). `None`: shutting down, nothing acknowledged.
pub(crate) async fn store_with_retry<T: Display>(
    sink: &LogSink,
    cell: &Cell,
    msgs: &[Msg<T>],
    shutdown: &CancellationToken,
    keep_alive: Option<KeepAlive<'_>>,
) -> Option<Vec<Verdict>> {
    let mut retries = crate::reconnect_backoff().start(tokio::time::Instant::now());
    let period = keep_alive.map_or(Duration::from_secs(3600), |(d, _)| {
        d.max(Duration::from_millis(100))
    });
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
    let mut failed = false;
    loop {
        let attempt = store(sink, cell, msgs);
        tokio::pin!(attempt);
        let res = loop {
            tokio::select! {
                _ = shutdown.cancelled() => return None,
                r = &mut attempt => break r,
                _ = ticker.tick() => {
                    if let Some((_, f)) = keep_alive {
                        f().await;
                    }
                }
            }
        };
        match res {
            Ok(v) => {
                if failed {
                    cell.running();
                }
                return Some(v);
            }
            Err(e) => {
                failed = true;
                cell.down(format!("log: {e}"));
                let delay = retries
                    .next_delay(tokio::time::Instant::now(), None, &mut rand::rng())
                    .unwrap_or(Duration::from_secs(30));
                if !crate::sleep_or_shutdown(delay, shutdown).await {
                    return None;
                }
            }
        }
    }
}
