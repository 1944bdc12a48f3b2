//! The tail task of one stream: a group-less `StreamConsumer` assigned partition 0 of
//! the stream's topic, from where the dedup window begins (at open) onwards, forever.
//! Every record — this node's and every other node's — goes into the tail cache and
//! the dedup index, then raises `seen` and `next`, which wakes the hub.
//!
//! librdkafka reconnects by itself after a broker restart and resumes fetching at
//! the consumer's position; the loop only keeps polling, logs when the tail starts
//! failing and when it recovers, and stops on shutdown.

use crate::reader::to_record;
use crate::stream::Stream;
use crate::{now_ms, Shared};
use bytes::Bytes;
use rdkafka::consumer::StreamConsumer;
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Pause after a consumer error, so a broken connection does not spin the loop.
const ERROR_BACKOFF: Duration = Duration::from_millis(200);

pub(crate) async fn run(
    shared: Arc<Shared>,
    stream: Arc<Stream>,
    consumer: StreamConsumer<crate::context::Ctx>,
    target: u64,
    shutdown: CancellationToken,
) {
    let mut failing: Option<String> = None;
    loop {
        let msg = tokio::select! {
            _ = shutdown.cancelled() => break,
            m = consumer.recv() => m,
        };
        match msg {
            Ok(m) => {
                if let Some(why) = failing.take() {
                    tracing::info!(stream = %stream.name, after = %why, "Kafka tail resumed.");
                }
                if m.partition() != 0 {
                    continue;
                }
                let rec = to_record(&m);
                let offset = rec.offset;
                if offset < *stream.seen.borrow() {
                    continue;
                }
                if let Some(key) = m.key() {
                    stream.dedup.lock().insert(
                        Bytes::copy_from_slice(key),
                        offset,
                        rec.timestamp_ms,
                        now_ms(),
                    );
                }
                stream.cache.lock().push(
                    rec,
                    &shared.stats.cache_bytes,
                    shared.config.tail_cache_bytes,
                );
                stream.seen.send_replace(offset + 1);
                stream.forget_own_below(offset + 1);
                stream.advance_next(offset + 1);
                shared.stats.tail_records.fetch_add(1, Ordering::Relaxed);
                if offset + 1 >= target && !*stream.caught_up.borrow() {
                    stream.caught_up.send_replace(true);
                }
            }
            Err(KafkaError::PartitionEOF(_)) => {
                if !*stream.caught_up.borrow() {
                    stream.caught_up.send_replace(true);
                }
            }
            Err(e) => {
                shared.stats.tail_errors.fetch_add(1, Ordering::Relaxed);
                let text = e.to_string();
                if failing.is_none() {
                    tracing::warn!(stream = %stream.name, error = %text, "Kafka tail error; still polling.");
                } else {
                    tracing::debug!(stream = %stream.name, error = %text, "Kafka tail error; still polling.");
                }
                failing = Some(text);
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(ERROR_BACKOFF) => {}
                }
            }
        }
    }
    // librdkafka joins its threads when a client is destroyed: not on a runtime thread.
    let _ = tokio::task::spawn_blocking(move || drop(consumer)).await;
    tracing::debug!(stream = %stream.name, "Kafka tail stopped.");
}
