//! The pure domain of Tidegate. Nothing here does IO or reads a clock, so every
//! rule is unit- and property-testable.
//!
//! - [`event`]: CloudEvents (0.1, 0.2, 1.0; structured, binary, batch) parsed,
//!   validated and normalised into one [`event::Event`] whose JSON is what every
//!   transport delivers.
//! - [`record`]: how an event is framed inside a log record, so the hub can read
//!   its type without parsing its body.
//! - [`cursor`]: opaque, URL-safe event ids that encode a log epoch and position(s).
//! - [`extractor`]: the `EXTRACTORS` config: which fields of which event type can be
//!   constrained, where they live in an event and in a JWT.
//! - [`subscription`]: subscriptions (`eventType` + `oneOf`) parsed and validated
//!   against the extractors.
//! - [`index`]: the subscription index (event type → field value → subscribers) and a
//!   naive reference matcher it is property-tested against.
#![forbid(unsafe_code)]

pub mod cursor;
pub mod event;
pub mod extractor;
pub mod index;
pub mod record;
pub mod subscription;

pub use cursor::Cursor;
pub use event::Event;
pub use extractor::Extractors;
pub use index::SubscriptionIndex;
pub use subscription::{Constraint, Subscription};
