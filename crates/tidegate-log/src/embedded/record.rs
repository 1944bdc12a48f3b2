//! Record codec: the byte layout of one record in a segment file.
//!
//! `[len u32 LE][crc32c u32 LE][flags u8][offset u64 LE][timestamp_ms u64 LE][key_len u16 LE][key][payload]`
//!
//! `len` counts every byte after itself; the CRC covers everything after the CRC
//! field, so a torn or overwritten record is detected instead of misread. The
//! decoder is pure (slice in, view out) so it is property-tested in isolation.

/// Bytes before the key: len + crc + flags + offset + timestamp + key_len.
pub(crate) const HEADER_LEN: usize = 4 + 4 + 1 + 8 + 8 + 2;
/// Smallest valid `len` value (a record with no key and an empty payload).
pub(crate) const MIN_BODY: usize = HEADER_LEN - 4;
/// Hard ceiling for `max_record_bytes`. Decoding checks against this constant, not
/// the configured limit, so lowering the limit never turns stored records into "garbage".
pub(crate) const RECORD_BYTES_LIMIT: usize = 256 * 1024 * 1024;
/// Largest `len` the decoder accepts; anything above is garbage.
pub(crate) const MAX_BODY: usize = MIN_BODY + u16::MAX as usize + RECORD_BYTES_LIMIT;

/// Set on the last record of an append batch: recovery keeps a batch only when
/// its end marker made it to disk.
pub(crate) const FLAG_BATCH_END: u8 = 0x01;
/// Distinguishes "no dedup key" from an empty key.
pub(crate) const FLAG_HAS_KEY: u8 = 0x02;
const KNOWN_FLAGS: u8 = FLAG_BATCH_END | FLAG_HAS_KEY;

/// A decoded record borrowing the frame it came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Decoded<'a> {
    pub offset: u64,
    pub timestamp_ms: u64,
    pub flags: u8,
    pub key: Option<&'a [u8]>,
    pub payload: &'a [u8],
    /// Total bytes of the frame, including the length prefix.
    pub frame_len: usize,
}

impl Decoded<'_> {
    pub(crate) fn batch_end(&self) -> bool {
        self.flags & FLAG_BATCH_END != 0
    }
}

/// Size on disk of a record with these key and payload lengths.
pub(crate) fn encoded_len(key_len: usize, payload_len: usize) -> usize {
    HEADER_LEN + key_len + payload_len
}

/// Appends one encoded record to `buf`. The caller has checked `key.len() <= u16::MAX`
/// and the payload size, so the casts below cannot truncate.
pub(crate) fn encode(
    buf: &mut Vec<u8>,
    offset: u64,
    timestamp_ms: u64,
    batch_end: bool,
    key: Option<&[u8]>,
    payload: &[u8],
) {
    let key_bytes = key.unwrap_or(&[]);
    let body = MIN_BODY + key_bytes.len() + payload.len();
    let mut flags = 0;
    if batch_end {
        flags |= FLAG_BATCH_END;
    }
    if key.is_some() {
        flags |= FLAG_HAS_KEY;
    }
    let start = buf.len();
    buf.reserve(4 + body);
    buf.extend_from_slice(&(body as u32).to_le_bytes());
    buf.extend_from_slice(&[0; 4]); // CRC placeholder, filled below
    buf.push(flags);
    buf.extend_from_slice(&offset.to_le_bytes());
    buf.extend_from_slice(&timestamp_ms.to_le_bytes());
    buf.extend_from_slice(&(key_bytes.len() as u16).to_le_bytes());
    buf.extend_from_slice(key_bytes);
    buf.extend_from_slice(payload);
    let crc = crc32c::crc32c(&buf[start + 8..]);
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// Reads the `len` prefix of a frame; `None` when it cannot be a valid record.
pub(crate) fn body_len(prefix: [u8; 4]) -> Option<usize> {
    let len = u32::from_le_bytes(prefix) as usize;
    (MIN_BODY..=MAX_BODY).contains(&len).then_some(len)
}

/// Decodes exactly one complete frame (`frame.len()` must equal `4 + len`).
pub(crate) fn decode(frame: &[u8]) -> Result<Decoded<'_>, &'static str> {
    if frame.len() < HEADER_LEN {
        return Err("frame shorter than a header");
    }
    let len = u32::from_le_bytes(le4(&frame[0..4])) as usize;
    if len + 4 != frame.len() {
        return Err("length prefix does not match frame");
    }
    let stored_crc = u32::from_le_bytes(le4(&frame[4..8]));
    if crc32c::crc32c(&frame[8..]) != stored_crc {
        return Err("crc mismatch");
    }
    let flags = frame[8];
    if flags & !KNOWN_FLAGS != 0 {
        return Err("unknown flags");
    }
    let offset = u64::from_le_bytes(le8(&frame[9..17]));
    let timestamp_ms = u64::from_le_bytes(le8(&frame[17..25]));
    let key_len = u16::from_le_bytes([frame[25], frame[26]]) as usize;
    let rest = &frame[HEADER_LEN..];
    if key_len > rest.len() {
        return Err("key longer than record");
    }
    if flags & FLAG_HAS_KEY == 0 && key_len != 0 {
        return Err("key bytes without key flag");
    }
    let (key, payload) = rest.split_at(key_len);
    Ok(Decoded {
        offset,
        timestamp_ms,
        flags,
        key: (flags & FLAG_HAS_KEY != 0).then_some(key),
        payload,
        frame_len: frame.len(),
    })
}

fn le4(s: &[u8]) -> [u8; 4] {
    let mut a = [0; 4];
    a.copy_from_slice(s);
    a
}

fn le8(s: &[u8]) -> [u8; 8] {
    let mut a = [0; 8];
    a.copy_from_slice(s);
    a
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn roundtrip_with_and_without_key() {
        let mut buf = Vec::new();
        encode(&mut buf, 7, 99, false, Some(b"k1"), b"hello");
        let first = buf.len();
        encode(&mut buf, 8, 100, true, None, b"");
        assert_eq!(first, encoded_len(2, 5));
        let a = decode(&buf[..first]).unwrap();
        assert_eq!(
            (a.offset, a.timestamp_ms, a.key, a.payload),
            (7, 99, Some(&b"k1"[..]), &b"hello"[..])
        );
        assert!(!a.batch_end());
        let b = decode(&buf[first..]).unwrap();
        assert_eq!(
            (b.offset, b.key, b.payload, b.batch_end()),
            (8, None, &b""[..], true)
        );
    }

    #[test]
    fn empty_key_is_distinct_from_no_key() {
        let mut buf = Vec::new();
        encode(&mut buf, 0, 0, true, Some(b""), b"x");
        assert_eq!(decode(&buf).unwrap().key, Some(&b""[..]));
    }

    #[test]
    fn bad_lengths_are_rejected() {
        assert_eq!(body_len(0u32.to_le_bytes()), None);
        assert_eq!(body_len(u32::MAX.to_le_bytes()), None);
        assert_eq!(body_len((MIN_BODY as u32).to_le_bytes()), Some(MIN_BODY));
    }

    proptest! {
        #[test]
        fn any_bit_flip_is_detected(payload in proptest::collection::vec(any::<u8>(), 0..64), bit in 0usize..8 * 100) {
            let mut buf = Vec::new();
            encode(&mut buf, 1, 2, true, Some(b"key"), &payload);
            let bit = bit % (buf.len() * 8);
            buf[bit / 8] ^= 1 << (bit % 8);
            // A flip either breaks the length check or the CRC; it never decodes.
            prop_assert!(decode(&buf).is_err());
        }
    }
}
