//! Cursors are event ids: opaque, URL-safe strings encoding the log epoch and the
//! position(s) of an event (one offset for the embedded log and JetStream, one per
//! partition for Kafka). "Resume from cursor c" means "everything after c".

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cursor {
    /// Identifies one log incarnation; a cursor from another epoch is foreign.
    pub epoch: u64,
    pub offsets: Vec<u64>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CursorError {
    #[error("cursor is empty")]
    Empty,
    #[error("cursor is too long")]
    TooLong,
    #[error("cursor is not valid: {0}")]
    Malformed(&'static str),
}

impl Cursor {
    pub fn single(epoch: u64, offset: u64) -> Self {
        Cursor { epoch, offsets: vec![offset] }
    }
    pub fn encode(&self) -> String {
        todo!()
    }
    pub fn parse(s: &str) -> Result<Cursor, CursorError> {
        let _ = s;
        todo!()
    }
}
