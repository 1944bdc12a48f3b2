//! Reads the tail cache cannot answer (replays of older records): an ephemeral pull
//! consumer from the requested offset, one `no_wait` fetch per read.
//!
//! A consumer is kept in a small per-stream pool after the read, keyed by the offset
//! after the last record it returned, so a sequential replay (the hub catching up, a
//! client resuming far back) costs one round trip per read rather than three. Records
//! fetched beyond `max_bytes` stay with the reader for its next read.

use crate::tail::{create_consumer, take, to_record, Reader, StreamState};
use crate::Inner;
use futures_util::StreamExt;
use std::collections::VecDeque;
use tidegate_log::{LogError, Record};

/// Idle readers kept per stream.
pub(crate) const READERS_PER_STREAM: usize = 8;
/// Most records asked for in one fetch.
const FETCH_MAX: usize = 1024;
/// Most bytes asked for in one fetch.
const FETCH_MAX_BYTES: usize = 64 * 1024 * 1024;
/// Subject, headers and protocol framing the server counts besides the payload.
const MSG_OVERHEAD: usize = 4096;

pub(crate) async fn read(
    inner: &Inner,
    st: &StreamState,
    from: u64,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<Record>, LogError> {
    let mut reader = match st.take_reader(from) {
        Some(r) => r,
        None => {
            let consumer = create_consumer(inner, st, from + 1)
                .await
                .map_err(LogError::Unavailable)?;
            Reader {
                consumer,
                next: from,
                leftover: VecDeque::new(),
                consumer_seq: 0,
                last_used: tokio::time::Instant::now(),
            }
        }
    };
    let out = read_with(inner, &mut reader, max_records, max_bytes).await?;
    st.put_reader(reader, READERS_PER_STREAM);
    Ok(out)
}

async fn read_with(
    inner: &Inner,
    reader: &mut Reader,
    max_records: usize,
    max_bytes: usize,
) -> Result<Vec<Record>, LogError> {
    let mut out = Vec::new();
    let mut bytes = 0;
    while let Some(r) = reader.leftover.front() {
        if !take(&mut out, &mut bytes, max_records, max_bytes, r) {
            break;
        }
        reader.leftover.pop_front();
    }
    let full = out.len() >= max_records || (!out.is_empty() && bytes >= max_bytes);
    if reader.leftover.is_empty() && !full {
        let want = (max_records - out.len()).min(FETCH_MAX);
        // The server stops before the message that would pass `max_bytes` and refuses a
        // first message larger than it: leave room for one whole record, trim here.
        let server_bytes = max_bytes
            .saturating_sub(bytes)
            .saturating_add(inner.max_record_bytes + MSG_OVERHEAD)
            .min(FETCH_MAX_BYTES.max(inner.max_record_bytes + MSG_OVERHEAD));
        let fetched = tokio::time::timeout(inner.cfg.request_timeout, async {
            let mut batch = reader
                .consumer
                .fetch()
                .max_messages(want)
                .max_bytes(server_bytes)
                .messages()
                .await
                .map_err(|e| format!("fetch request failed: {e}"))?;
            let mut got = Vec::new();
            while let Some(m) = batch.next().await {
                let msg = m.map_err(|e| format!("fetch failed: {e}"))?;
                got.push(to_record(&msg)?);
            }
            Ok::<_, String>(got)
        })
        .await;
        let fetched = match fetched {
            Ok(Ok(v)) => {
                inner.js_ok();
                v
            }
            Ok(Err(e)) => return Err(LogError::Unavailable(inner.js_failed(e))),
            Err(_) => {
                return Err(LogError::Unavailable(
                    inner.js_failed("fetch timed out".into()),
                ))
            }
        };
        for (cseq, rec) in fetched {
            if cseq != reader.consumer_seq + 1 {
                // A lost delivery: this reader is unusable, its records untrustworthy.
                return Err(LogError::Unavailable(format!(
                    "fetch lost deliveries (consumer sequence {} after {})",
                    cseq, reader.consumer_seq
                )));
            }
            reader.consumer_seq = cseq;
            if reader.leftover.is_empty()
                && take(&mut out, &mut bytes, max_records, max_bytes, &rec)
            {
                continue;
            }
            reader.leftover.push_back(rec);
        }
    }
    if let Some(last) = out.last() {
        reader.next = last.offset + 1;
    }
    Ok(out)
}
