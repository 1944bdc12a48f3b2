//! The log: the single source of truth of Tidegate. Every stored event is appended
//! here before anyone is told about it; its offset becomes its cursor.
//!
//! - [`EventLog`]: the trait every backend implements (embedded now; Kafka and
//!   JetStream later). Positions are `u64` offsets per stream; a backend with
//!   partitions maps a stream to several partitions and exposes them as
//!   [`Position`] vectors.
//! - [`embedded`]: the default backend: append-only segment files per stream,
//!   CRC32C-checked length-prefixed records, a sparse index, group commit on a
//!   dedicated writer thread, recovery, retention, a dedup index, named consumers.
#![forbid(unsafe_code)]

pub mod embedded;
#[cfg(feature = "testsuite")]
pub mod testsuite;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::watch;

/// What a producer hands to the log.
#[derive(Debug, Clone)]
pub struct AppendRecord {
    /// Idempotency key (for events: CloudEvents `source` + `id`). A key seen within
    /// the dedup window is not stored again; the original offset is returned.
    pub dedup_key: Option<Bytes>,
    pub payload: Bytes,
}

/// A stored record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub offset: u64,
    /// Milliseconds since the Unix epoch, stamped by the log at append.
    pub timestamp_ms: u64,
    pub payload: Bytes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Appended {
    New(u64),
    /// Same dedup key seen within the window: nothing stored, original offset.
    Duplicate(u64),
}

impl Appended {
    pub fn offset(self) -> u64 {
        match self {
            Appended::New(o) | Appended::Duplicate(o) => o,
        }
    }
}

/// Durability of an acknowledged append.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// fdatasync before acknowledging (group commit shares one sync between appends).
    #[default]
    Fsync,
    /// Written to the OS page cache; lost on power failure, not on process crash.
    Buffered,
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("log I/O error: {0}")]
    Io(#[from] std::io::Error),
    #[error("log is overloaded: append queue full")]
    Overloaded,
    #[error("log is closed")]
    Closed,
    #[error("record of {0} bytes exceeds the maximum of {1}")]
    RecordTooLarge(usize, usize),
    #[error("unknown stream `{0}`")]
    UnknownStream(String),
    #[error("invalid stream name `{0}`")]
    InvalidStreamName(String),
    #[error("log is corrupt: {0}")]
    Corrupt(String),
    /// A networked backend (Kafka, JetStream) cannot be reached or did not answer in time.
    #[error("log backend unavailable: {0}")]
    Unavailable(String),
}

impl LogError {
    /// Errors a caller may retry later (503 + Retry-After), as opposed to bad input.
    pub fn is_unavailable(&self) -> bool {
        matches!(
            self,
            LogError::Io(_)
                | LogError::Overloaded
                | LogError::Closed
                | LogError::Corrupt(_)
                | LogError::Unavailable(_)
        )
    }
}

/// Head/tail of a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Bounds {
    /// Oldest offset still stored (retention moves it forward).
    pub first: u64,
    /// Offset the next append will get; `next - 1` is the newest record (if `next > first`).
    pub next: u64,
}

/// Cluster-wide exclusive ownership of a named piece of work (e.g. the delivery worker
/// of an ingestion route): at most one node holds a lease at a time; when the holder
/// dies or loses the broker, another node takes it over after the lease's timeout.
pub struct Lease {
    /// `true` while this node holds the lease.
    pub held: watch::Receiver<bool>,
    /// Dropping the lease gives it up (stops renewing, leaves the group).
    _release: Option<Box<dyn std::any::Any + Send + Sync>>,
}

impl Lease {
    /// A lease that is always held: one node, no competition.
    pub fn always() -> Lease {
        let (tx, held) = watch::channel(true);
        Lease {
            held,
            _release: Some(Box::new(tx)),
        }
    }

    /// A lease whose state a backend task drives through `held`; `release` is
    /// dropped with the lease (a cancellation guard, a sender the task watches…).
    pub fn new(
        held: watch::Receiver<bool>,
        release: Box<dyn std::any::Any + Send + Sync>,
    ) -> Lease {
        Lease {
            held,
            _release: Some(release),
        }
    }
}

impl std::fmt::Debug for Lease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lease")
            .field("held", &*self.held.borrow())
            .finish()
    }
}

#[async_trait]
pub trait EventLog: Send + Sync + 'static {
    /// Identifies this log incarnation; changes when the data directory is wiped.
    /// Every node sharing a networked log sees the same epoch.
    fn epoch(&self) -> u64;

    /// Whether the backend can take appends right now (readiness): `Err` names the
    /// dependency that is down. The embedded log is always reachable.
    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// Competes for the cluster-wide lease `name` ([`Lease`]). A single-node backend
    /// (the embedded log) holds every lease at once.
    async fn lease(&self, name: &str) -> Result<Lease, LogError> {
        let _ = name;
        Ok(Lease::always())
    }

    /// Stops background work (writer thread, tails) after flushing what was
    /// acknowledged; later appends fail with [`LogError::Closed`]. Idempotent.
    fn close(&self) {}

    /// Creates the stream if needed (idempotent).
    async fn ensure_stream(&self, stream: &str) -> Result<(), LogError>;

    /// Appends a batch atomically (all records or none) and returns once the
    /// configured durability is satisfied. Offsets are consecutive for new records.
    async fn append(
        &self,
        stream: &str,
        records: Vec<AppendRecord>,
    ) -> Result<Vec<Appended>, LogError>;

    fn bounds(&self, stream: &str) -> Result<Bounds, LogError>;

    /// Watch of `Bounds::next` of committed (durable, readable) records.
    fn watch_next(&self, stream: &str) -> Result<watch::Receiver<u64>, LogError>;

    /// Reads records with `offset >= from`, at most `max_records` and about `max_bytes`
    /// (at least one record when one exists). `from < first` starts at `first`.
    async fn read(
        &self,
        stream: &str,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Vec<Record>, LogError>;

    /// Named consumers: a durable committed position (the next offset to process).
    async fn commit_consumer(
        &self,
        stream: &str,
        consumer: &str,
        next: u64,
    ) -> Result<(), LogError>;
    async fn consumer_position(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<Option<u64>, LogError>;
}
