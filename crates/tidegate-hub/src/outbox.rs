//! The per-connection outbound queue: bounded in bytes, with a named overflow policy.
//!
//! Producers (the hub, a replay task) push without waiting — the hub never awaits a
//! single connection, so a slow consumer cannot delay anyone else. The connection's
//! transport task is the only consumer: it takes everything queued at once (bounded
//! batch) and writes it in one go (write coalescing).
use parking_lot::Mutex;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::Instant;

use crate::frame::{Encoded, Frame};

/// What happens when an event does not fit into a connection's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum OverflowPolicy {
    /// Close the connection, telling the client to resume from its last cursor:
    /// nothing is lost because every stored event can be replayed.
    #[default]
    Disconnect,
    /// Discard the oldest queued events; the client gets a gap marker.
    DropOldest,
    /// Discard the new event; the client gets a gap marker.
    DropNewest,
}

impl OverflowPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            OverflowPolicy::Disconnect => "disconnect",
            OverflowPolicy::DropOldest => "drop_oldest",
            OverflowPolicy::DropNewest => "drop_newest",
        }
    }
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "disconnect" => Some(OverflowPolicy::Disconnect),
            "drop_oldest" => Some(OverflowPolicy::DropOldest),
            "drop_newest" => Some(OverflowPolicy::DropNewest),
            _ => None,
        }
    }
}

/// Why a connection is being closed by the gateway.
#[derive(Debug, Clone)]
pub enum CloseReason {
    /// Queue overflow under `disconnect`: resume from the last cursor.
    SlowClient,
    /// The session was blacklisted; the frame to send last (`rig.session_killed`).
    SessionKilled(Arc<Encoded>),
    /// A resume could not keep up with the live stream: resume again.
    ReplayLagging,
    /// The log could not be read for a resume (a broker outage): resume again.
    ReplayFailed,
    /// Long-poll session not polled in time.
    Expired,
    /// The node is shutting down: reconnect (to any node) and resume.
    Shutdown,
}

impl PartialEq for CloseReason {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}

impl CloseReason {
    pub fn as_str(&self) -> &'static str {
        match self {
            CloseReason::SlowClient => "slow_client",
            CloseReason::SessionKilled(_) => "session_killed",
            CloseReason::ReplayLagging => "replay_lagging",
            CloseReason::ReplayFailed => "replay_failed",
            CloseReason::Expired => "expired",
            CloseReason::Shutdown => "shutdown",
        }
    }
    /// Whether the client should reconnect with its last cursor.
    pub fn resumable(&self) -> bool {
        !matches!(self, CloseReason::SessionKilled(_))
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum Pushed {
    Queued,
    /// Lossy policy discarded this many events (to count).
    Dropped(u64),
    /// Overflow under `disconnect`: the outbox is now closed.
    Overflowed,
    /// The outbox was already closed.
    Closed,
}

struct Inner {
    frames: VecDeque<Frame>,
    bytes: usize,
    closed: Option<CloseReason>,
    last_taken: Instant,
    /// Long-polling only: the frames of the last response and the `last_event_id` it
    /// carried, kept until the next poll proves the client received them.
    unconfirmed: Option<Box<(String, Vec<Frame>)>>,
}

pub struct Outbox {
    inner: Mutex<Inner>,
    /// Wakes the consumer when frames arrive or the outbox closes.
    ready: Notify,
    /// Wakes a replay producer waiting for room.
    room: Notify,
    limit_bytes: usize,
    /// Set when the consumer side is gone (client disconnected).
    detached: AtomicBool,
}

impl Outbox {
    pub fn new(limit_bytes: usize) -> Arc<Outbox> {
        Arc::new(Outbox {
            inner: Mutex::new(Inner {
                frames: VecDeque::new(),
                bytes: 0,
                closed: None,
                last_taken: Instant::now(),
                unconfirmed: None,
            }),
            ready: Notify::new(),
            room: Notify::new(),
            limit_bytes: limit_bytes.max(1),
            detached: AtomicBool::new(false),
        })
    }

    pub fn limit_bytes(&self) -> usize {
        self.limit_bytes
    }

    /// Queues a frame without waiting, applying `policy` when it does not fit.
    pub fn push(&self, frame: Frame, policy: OverflowPolicy) -> Pushed {
        self.push_within(frame, policy, self.limit_bytes)
    }

    /// [`Outbox::push`] against a tighter bound for this frame's event type (e.g. 64 KiB
    /// for typing indicators): such events overflow early while others still fit.
    pub fn push_within(&self, frame: Frame, policy: OverflowPolicy, limit: usize) -> Pushed {
        let limit = limit.min(self.limit_bytes);
        let cost = frame.cost();
        let mut inner = self.inner.lock();
        if inner.closed.is_some() {
            return Pushed::Closed;
        }
        if inner.bytes + cost <= limit {
            inner.bytes += cost;
            inner.frames.push_back(frame);
            drop(inner);
            self.ready.notify_one();
            return Pushed::Queued;
        }
        match policy {
            OverflowPolicy::Disconnect => {
                inner.frames.clear();
                inner.bytes = 0;
                inner.closed = Some(CloseReason::SlowClient);
                drop(inner);
                self.ready.notify_one();
                Pushed::Overflowed
            }
            OverflowPolicy::DropNewest => {
                push_gap_back(&mut inner, 1);
                drop(inner);
                self.ready.notify_one();
                Pushed::Dropped(1)
            }
            OverflowPolicy::DropOldest => {
                let mut dropped = 0u64;
                // Room for the gap marker too, unless one is already at the front.
                let marker = if matches!(inner.frames.front(), Some(Frame::Gap { .. })) {
                    0
                } else {
                    Frame::Gap { dropped: 0 }.cost()
                };
                // Gap markers and heartbeats stay: only events are discarded.
                while inner.bytes + cost + marker > limit {
                    let Some(pos) = inner
                        .frames
                        .iter()
                        .position(|f| matches!(f, Frame::Event(_)))
                    else {
                        break;
                    };
                    if let Some(f) = inner.frames.remove(pos) {
                        inner.bytes -= f.cost();
                        dropped += 1;
                    }
                }
                if dropped > 0 {
                    push_gap_front(&mut inner, dropped);
                }
                if inner.bytes + cost <= limit {
                    inner.bytes += cost;
                    inner.frames.push_back(frame);
                } else {
                    // A single event larger than the whole queue: drop it too.
                    push_gap_back(&mut inner, 1);
                    dropped += 1;
                }
                drop(inner);
                self.ready.notify_one();
                Pushed::Dropped(dropped)
            }
        }
    }

    /// Queues a frame, waiting for room (replay: back pressure from the client).
    /// Returns `false` if the outbox closed meanwhile.
    pub async fn push_wait(&self, frame: Frame) -> bool {
        let cost = frame.cost();
        loop {
            let room = self.room.notified();
            {
                let mut inner = self.inner.lock();
                if inner.closed.is_some() || self.detached.load(Ordering::Relaxed) {
                    return false;
                }
                // An oversized frame is allowed into an empty queue, or it would never fit.
                if inner.bytes + cost <= self.limit_bytes || inner.frames.is_empty() {
                    inner.bytes += cost;
                    inner.frames.push_back(frame);
                    drop(inner);
                    self.ready.notify_one();
                    return true;
                }
            }
            room.await;
        }
    }

    /// Moves up to about `max_bytes` of frames into `out` (at least one), waiting until
    /// there is something. Returns the close reason once the queue is closed and empty.
    pub async fn take(&self, out: &mut Vec<Frame>, max_bytes: usize) -> Option<CloseReason> {
        loop {
            let ready = self.ready.notified();
            if let Some(reason) = self.try_take(out, max_bytes) {
                return Some(reason);
            }
            if !out.is_empty() {
                return None;
            }
            ready.await;
        }
    }

    /// Non-waiting [`Outbox::take`]: `Some(reason)` when closed.
    pub fn try_take(&self, out: &mut Vec<Frame>, max_bytes: usize) -> Option<CloseReason> {
        let mut inner = self.inner.lock();
        inner.last_taken = Instant::now();
        let mut taken = 0usize;
        while let Some(f) = inner.frames.front() {
            let c = f.cost();
            if taken > 0 && taken + c > max_bytes {
                break;
            }
            taken += c;
            if let Some(f) = inner.frames.pop_front() {
                out.push(f);
            }
        }
        inner.bytes -= taken.min(inner.bytes);
        let closed = if inner.frames.is_empty() && out.is_empty() {
            inner.closed.clone()
        } else {
            None
        };
        drop(inner);
        if taken > 0 {
            self.room.notify_waiters();
        }
        closed
    }

    /// Closes the outbox. Queued frames are discarded: for a resumable close the
    /// client gets them again by cursor, for a killed session it must not get them.
    pub fn close(&self, reason: CloseReason) {
        let mut inner = self.inner.lock();
        if inner.closed.is_none() {
            inner.frames.clear();
            inner.bytes = 0;
            inner.closed = Some(reason);
        }
        drop(inner);
        self.ready.notify_one();
        self.room.notify_waiters();
    }

    pub fn is_closed(&self) -> bool {
        self.inner.lock().closed.is_some()
    }

    pub fn queued_bytes(&self) -> usize {
        self.inner.lock().bytes
    }

    pub fn is_empty(&self) -> bool {
        self.inner.lock().frames.is_empty()
    }

    /// When the consumer last took frames (long-poll expiry).
    pub fn last_taken(&self) -> Instant {
        self.inner.lock().last_taken
    }

    /// Keeps a long-poll response until the client confirms it (see [`Outbox::unconfirmed`]).
    pub fn set_unconfirmed(&self, last_event_id: String, frames: Vec<Frame>) {
        self.inner.lock().unconfirmed = Some(Box::new((last_event_id, frames)));
    }

    /// Takes the last long-poll response: `(last_event_id it carried, its frames)`.
    /// A poll whose cookie still holds an older id means that response was lost in
    /// flight; its frames are sent again, so long-polling is at-least-once too.
    pub fn take_unconfirmed(&self) -> Option<(String, Vec<Frame>)> {
        self.inner.lock().unconfirmed.take().map(|b| *b)
    }

    /// The consumer is gone; producers stop and the hub forgets the connection.
    pub fn detach(&self) {
        self.detached.store(true, Ordering::Relaxed);
        self.room.notify_waiters();
    }

    pub fn is_detached(&self) -> bool {
        self.detached.load(Ordering::Relaxed)
    }
}

fn push_gap_back(inner: &mut Inner, n: u64) {
    if let Some(Frame::Gap { dropped }) = inner.frames.back_mut() {
        *dropped += n;
        return;
    }
    inner.bytes += Frame::Gap { dropped: n }.cost();
    inner.frames.push_back(Frame::Gap { dropped: n });
}

fn push_gap_front(inner: &mut Inner, n: u64) {
    if let Some(Frame::Gap { dropped }) = inner.frames.front_mut() {
        *dropped += n;
        return;
    }
    inner.bytes += Frame::Gap { dropped: n }.cost();
    inner.frames.push_front(Frame::Gap { dropped: n });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(n: usize) -> Frame {
        let json = format!("{{\"n\":\"{}\"}}", "x".repeat(n));
        Frame::Event(Encoded::new("t", None, json.as_bytes()))
    }

    #[tokio::test]
    async fn disconnect_policy_closes_on_overflow() {
        let o = Outbox::new(300);
        assert_eq!(o.push(ev(100), OverflowPolicy::Disconnect), Pushed::Queued);
        assert_eq!(o.push(ev(100), OverflowPolicy::Disconnect), Pushed::Queued);
        assert_eq!(
            o.push(ev(100), OverflowPolicy::Disconnect),
            Pushed::Overflowed
        );
        assert_eq!(o.push(ev(1), OverflowPolicy::Disconnect), Pushed::Closed);
        let mut out = Vec::new();
        assert_eq!(
            o.take(&mut out, 1 << 20).await,
            Some(CloseReason::SlowClient)
        );
        assert!(out.is_empty());
    }

    #[tokio::test]
    async fn a_tighter_type_bound_overflows_first() {
        let o = Outbox::new(10_000);
        assert_eq!(
            o.push_within(ev(100), OverflowPolicy::DropNewest, 300),
            Pushed::Queued
        );
        assert_eq!(
            o.push_within(ev(100), OverflowPolicy::DropNewest, 300),
            Pushed::Queued
        );
        assert_eq!(
            o.push_within(ev(100), OverflowPolicy::DropNewest, 300),
            Pushed::Dropped(1)
        );
        // Other types still fit under the connection's own bound.
        assert_eq!(o.push(ev(100), OverflowPolicy::Disconnect), Pushed::Queued);
    }

    #[tokio::test]
    async fn drop_newest_keeps_queue_and_marks_gap() {
        let o = Outbox::new(300);
        o.push(ev(100), OverflowPolicy::DropNewest);
        o.push(ev(100), OverflowPolicy::DropNewest);
        assert_eq!(
            o.push(ev(100), OverflowPolicy::DropNewest),
            Pushed::Dropped(1)
        );
        assert_eq!(
            o.push(ev(100), OverflowPolicy::DropNewest),
            Pushed::Dropped(1)
        );
        let mut out = Vec::new();
        assert_eq!(o.take(&mut out, 1 << 20).await, None);
        assert_eq!(out.len(), 3);
        assert!(matches!(out[2], Frame::Gap { dropped: 2 }));
    }

    #[tokio::test]
    async fn drop_oldest_discards_front_and_marks_gap_first() {
        // Two events fit; a third makes room for itself and the gap marker by
        // dropping exactly the oldest (an event costs 133 bytes, a marker 64).
        let o = Outbox::new(350);
        o.push(ev(100), OverflowPolicy::DropOldest);
        o.push(ev(100), OverflowPolicy::DropOldest);
        assert_eq!(
            o.push(ev(100), OverflowPolicy::DropOldest),
            Pushed::Dropped(1)
        );
        let mut out = Vec::new();
        o.take(&mut out, 1 << 20).await;
        assert!(matches!(out[0], Frame::Gap { dropped: 1 }));
        assert_eq!(out.len(), 3);
        assert_eq!(o.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn take_is_bounded_and_push_wait_waits_for_room() {
        let o = Outbox::new(400);
        for _ in 0..3 {
            o.push(ev(100), OverflowPolicy::Disconnect);
        }
        let o2 = o.clone();
        let waiter = tokio::spawn(async move { o2.push_wait(ev(100)).await });
        tokio::task::yield_now().await;
        assert!(!waiter.is_finished());
        let mut out = Vec::new();
        o.take(&mut out, 150).await;
        assert_eq!(out.len(), 1, "bounded batch");
        assert!(waiter.await.unwrap());
        out.clear();
        o.take(&mut out, 1 << 20).await;
        assert_eq!(out.len(), 3);
    }

    #[tokio::test]
    async fn close_wakes_consumer_and_discards_queue() {
        let o = Outbox::new(1000);
        o.push(ev(10), OverflowPolicy::Disconnect);
        o.close(CloseReason::Shutdown);
        let mut out = Vec::new();
        assert_eq!(o.take(&mut out, 1000).await, Some(CloseReason::Shutdown));
        assert!(!o.push_wait(ev(1)).await);
    }
}
