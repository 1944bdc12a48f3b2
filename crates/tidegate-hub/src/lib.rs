//! The hub owns subscriptions and fan-out.
//!
//! Data moves one way: the log's committed tail → [`Hub`] (one task that owns the
//! subscription index and the connection table) → each matching connection's
//! [`Outbox`] (bounded, never awaited by the hub) → the connection's transport task.
//!
//! - [`frame`]: an event encoded once ([`Encoded`]) and shared by every recipient; the
//!   SSE rendering is computed at most once, on first use.
//! - [`outbox`]: the per-connection bounded queue with its overflow policy.
//! - [`hub`]: the actor: registration, subscription changes, resume/replay with a
//!   gap-free switch to live, session kills, heartbeats, long-poll expiry.
#![forbid(unsafe_code)]

pub mod frame;
pub mod hub;
pub mod outbox;

pub use frame::{Encoded, Frame};
pub use hub::{ConnInfo, ConnectRequest, Connection, Hub, HubConfig, HubError, Resume, Transport};
pub use outbox::{CloseReason, Outbox, OverflowPolicy};
