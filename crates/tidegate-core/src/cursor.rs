//! Cursors are event ids: opaque, URL-safe strings encoding the log epoch and the
//! position(s) of an event (one offset for the embedded log and JetStream, one per
//! partition for Kafka). "Resume from cursor c" means "everything after c".
//!
//! Wire form: base64url without padding of `[version][epoch][n][offset × n]`, every
//! number after the version an unsigned LEB128 varint. Parsing accepts only the
//! canonical form (shortest varints, canonical base64), so a cursor has exactly one
//! spelling and clients may compare ids as strings.
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use std::fmt;
use std::str::FromStr;

/// Layout version; bumped if the encoding ever changes.
const VERSION: u8 = 1;

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

// === impl Cursor ===

impl Cursor {
    /// Longest cursor [`Cursor::parse`] accepts, in characters. Cursors arrive from
    /// clients (`Last-Event-ID`, cookies), so their size is bounded before decoding.
    pub const MAX_LEN: usize = 512;
    /// Most offsets (partitions) a parsed cursor may carry.
    pub const MAX_OFFSETS: usize = 1024;

    pub fn single(epoch: u64, offset: u64) -> Self {
        Cursor {
            epoch,
            offsets: vec![offset],
        }
    }

    /// The wire form. Not limited here: a cursor with very many large offsets can
    /// encode to more than [`Cursor::MAX_LEN`] characters, which `parse` then rejects.
    pub fn encode(&self) -> String {
        let mut buf = Vec::with_capacity(2 + 10 * (1 + self.offsets.len()));
        buf.push(VERSION);
        put_varint(&mut buf, self.epoch);
        put_varint(&mut buf, self.offsets.len() as u64);
        for &offset in &self.offsets {
            put_varint(&mut buf, offset);
        }
        URL_SAFE_NO_PAD.encode(buf)
    }

    /// `Cursor::single(epoch, offset).encode()` appended to `out`, without allocating.
    pub fn write_single(epoch: u64, offset: u64, out: &mut impl bytes::BufMut) {
        // Version, two varints of at most 10 bytes and the count (1).
        let mut raw = [0u8; 22];
        raw[0] = VERSION;
        let mut n = 1;
        n += put_varint_slice(&mut raw[n..], epoch);
        raw[n] = 1;
        n += 1;
        n += put_varint_slice(&mut raw[n..], offset);
        // 22 bytes are at most 30 base64 characters.
        let mut text = [0u8; 32];
        let len = URL_SAFE_NO_PAD
            .encode_slice(&raw[..n], &mut text)
            .unwrap_or(0);
        out.put_slice(&text[..len]);
    }

    pub fn parse(s: &str) -> Result<Cursor, CursorError> {
        if s.is_empty() {
            return Err(CursorError::Empty);
        }
        if s.len() > Self::MAX_LEN {
            return Err(CursorError::TooLong);
        }
        let bytes = URL_SAFE_NO_PAD
            .decode(s)
            .map_err(|_| CursorError::Malformed("not base64url"))?;
        let (&version, mut rest) = bytes
            .split_first()
            .ok_or(CursorError::Malformed("no version"))?;
        if version != VERSION {
            return Err(CursorError::Malformed("unknown version"));
        }
        let epoch = take_varint(&mut rest)?;
        let count = take_varint(&mut rest)?;
        if count == 0 {
            return Err(CursorError::Malformed("no offsets"));
        }
        if count > Self::MAX_OFFSETS as u64 {
            return Err(CursorError::Malformed("too many offsets"));
        }
        // Each offset takes at least one byte; checking first keeps a lying count
        // from reserving memory.
        if count > rest.len() as u64 {
            return Err(CursorError::Malformed("truncated"));
        }
        let mut offsets = Vec::with_capacity(rest.len().min(Self::MAX_OFFSETS));
        for _ in 0..count {
            offsets.push(take_varint(&mut rest)?);
        }
        if !rest.is_empty() {
            return Err(CursorError::Malformed("trailing bytes"));
        }
        Ok(Cursor { epoch, offsets })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl FromStr for Cursor {
    type Err = CursorError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Cursor::parse(s)
    }
}

// === varints ===

fn put_varint(buf: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        buf.push((v as u8 & 0x7f) | 0x80);
        v >>= 7;
    }
    buf.push(v as u8);
}

/// [`put_varint`] into a slice of at least 10 bytes; returns the bytes written.
fn put_varint_slice(buf: &mut [u8], mut v: u64) -> usize {
    let mut i = 0;
    while v >= 0x80 {
        buf[i] = (v as u8 & 0x7f) | 0x80;
        v >>= 7;
        i += 1;
    }
    buf[i] = v as u8;
    i + 1
}

fn take_varint(buf: &mut &[u8]) -> Result<u64, CursorError> {
    let mut value: u64 = 0;
    for (i, &byte) in buf.iter().enumerate() {
        let shift = 7 * i as u32;
        let bits = u64::from(byte & 0x7f);
        // The tenth byte may only contribute the top bit of a u64.
        if shift >= 64 || (shift == 63 && bits > 1) {
            return Err(CursorError::Malformed("varint overflow"));
        }
        value |= bits << shift;
        if byte & 0x80 == 0 {
            // A zero final byte after others means a longer-than-needed encoding.
            if byte == 0 && i > 0 {
                return Err(CursorError::Malformed("non-canonical varint"));
            }
            *buf = &buf[i + 1..];
            return Ok(value);
        }
    }
    Err(CursorError::Malformed("truncated"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn write_single_matches_encode() {
        for (epoch, offset) in [(0, 0), (1, 127), (u64::MAX, u64::MAX), (12345, 1 << 40)] {
            let mut out = Vec::new();
            Cursor::write_single(epoch, offset, &mut out);
            out.extend_from_slice(b"|");
            Cursor::write_single(offset, epoch, &mut out);
            let want = format!(
                "{}|{}",
                Cursor::single(epoch, offset).encode(),
                Cursor::single(offset, epoch).encode()
            );
            assert_eq!(String::from_utf8(out).unwrap(), want);
        }
    }

    fn raw(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn single_is_short_and_url_safe() {
        let c = Cursor::single(7, 300);
        let s = c.encode();
        assert_eq!(s, raw(&[1, 7, 1, 0xac, 0x02]));
        assert!(s
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(Cursor::parse(&s).unwrap(), c);
        assert_eq!(s.parse::<Cursor>().unwrap(), c);
        assert_eq!(c.to_string(), s);
    }

    #[test]
    fn extremes_round_trip() {
        let c = Cursor {
            epoch: u64::MAX,
            offsets: vec![0, u64::MAX, 1 << 63],
        };
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
    }

    #[test]
    fn errors() {
        let malformed = |s: &str| match Cursor::parse(s) {
            Err(CursorError::Malformed(why)) => why,
            other => panic!("{s}: {other:?}"),
        };
        assert_eq!(Cursor::parse(""), Err(CursorError::Empty));
        assert_eq!(Cursor::parse(&"A".repeat(513)), Err(CursorError::TooLong));
        assert_eq!(malformed("!!!!"), "not base64url");
        assert_eq!(malformed("AQ=="), "not base64url"); // padding
        assert_eq!(malformed("A"), "not base64url"); // impossible length
        assert_eq!(malformed("AR"), "not base64url"); // non-zero trailing bits
        assert_eq!(malformed(&raw(&[2, 0, 1, 0])), "unknown version");
        assert_eq!(malformed(&raw(&[1])), "truncated");
        assert_eq!(malformed(&raw(&[1, 0])), "truncated");
        assert_eq!(malformed(&raw(&[1, 0, 0])), "no offsets");
        assert_eq!(malformed(&raw(&[1, 0, 2, 5])), "truncated");
        assert_eq!(malformed(&raw(&[1, 0, 1, 0x80])), "truncated");
        assert_eq!(malformed(&raw(&[1, 0, 1, 5, 0])), "trailing bytes");
        assert_eq!(malformed(&raw(&[1, 0, 0x81, 0x08])), "too many offsets"); // 1025
        let mut overflow = vec![1];
        overflow.extend([0xff; 9]);
        overflow.push(0x02);
        overflow.extend([1, 0]);
        assert_eq!(malformed(&raw(&overflow)), "varint overflow");
        let mut eleven = vec![1];
        eleven.extend([0x80; 10]);
        eleven.push(0);
        assert_eq!(malformed(&raw(&eleven)), "varint overflow");
        assert_eq!(
            malformed(&raw(&[1, 0x80, 0x00, 1, 0])),
            "non-canonical varint"
        );
    }

    #[test]
    fn many_offsets_round_trip_when_short_enough() {
        let c = Cursor {
            epoch: 1,
            offsets: (0..100).collect(),
        };
        assert_eq!(Cursor::parse(&c.encode()).unwrap(), c);
    }

    proptest! {
        #[test]
        fn round_trip(epoch in any::<u64>(), offsets in proptest::collection::vec(any::<u64>(), 1..20)) {
            let c = Cursor { epoch, offsets };
            prop_assert_eq!(Cursor::parse(&c.encode()), Ok(c));
        }

        #[test]
        fn parse_never_panics(s in "\\PC{0,600}") {
            let _ = Cursor::parse(&s);
        }

        #[test]
        fn accepted_cursors_have_one_spelling(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            // Bias towards the valid version so the decoder is exercised.
            let mut bytes = bytes;
            if let Some(b) = bytes.first_mut() { *b = VERSION; }
            let s = raw(&bytes);
            if let Ok(c) = Cursor::parse(&s) {
                prop_assert_eq!(c.encode(), s);
            }
        }

        #[test]
        fn parse_never_panics_on_base64url(s in "[A-Za-z0-9_-]{0,600}") {
            let _ = Cursor::parse(&s);
        }
    }
}
