//! Names: how a Tidegate stream name becomes a JetStream stream name, a subject and
//! a KV key, and how a dedup key becomes a `Nats-Msg-Id`.
//!
//! Tidegate names are `[A-Za-z0-9._-]{1,200}`. JetStream stream names and KV keys
//! cannot hold every one of them (no `.` in stream names, no leading/trailing `.` in
//! keys), so every name is run through one prefix-free code: `_` → `__`, `.` → `_d`,
//! everything else unchanged. It is injective and its output is `[A-Za-z0-9_-]+`,
//! valid in stream names, subject tokens and KV keys alike.

use tidegate_log::LogError;

/// JetStream keeps a stream in a directory named after it: stay under `NAME_MAX`.
pub(crate) const MAX_JS_NAME: usize = 255;

/// `[A-Za-z0-9._-]{1,200}`, not `.` or `..` (the embedded log's rule, for one contract).
pub(crate) fn validate(name: &str) -> Result<(), LogError> {
    let ok = (1..=200).contains(&name.len())
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(LogError::InvalidStreamName(name.to_owned()))
    }
}

/// The injective `[A-Za-z0-9_-]+` form of a valid name.
pub(crate) fn encode(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 8);
    for c in name.chars() {
        match c {
            '_' => out.push_str("__"),
            '.' => out.push_str("_d"),
            c => out.push(c),
        }
    }
    out
}

/// A prefix is `[a-z0-9-]{1,32}`: lower case so that the upper-cased stream-name form
/// is injective too, and without `_`/`.` so that `{PREFIX}_{enc}` splits unambiguously.
pub(crate) fn validate_prefix(prefix: &str) -> Result<(), String> {
    let ok = (1..=32).contains(&prefix.len())
        && prefix
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!("prefix `{prefix}` must match [a-z0-9-]{{1,32}}"))
    }
}

/// Where one Tidegate stream lives in JetStream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct StreamNames {
    /// `{PREFIX}_{enc}`.
    pub js_stream: String,
    /// `{prefix}.{enc}`.
    pub subject: String,
    /// `enc`, the stream's part of consumer keys.
    pub encoded: String,
}

impl StreamNames {
    pub(crate) fn new(prefix: &str, stream: &str) -> Result<Self, LogError> {
        validate(stream)?;
        let encoded = encode(stream);
        let js_stream = format!("{}_{encoded}", prefix.to_ascii_uppercase());
        if js_stream.len() > MAX_JS_NAME {
            // Only names with many `.`/`_` near the 200-character limit get here.
            return Err(LogError::InvalidStreamName(stream.to_owned()));
        }
        Ok(StreamNames {
            subject: format!("{prefix}.{encoded}"),
            js_stream,
            encoded,
        })
    }

    /// The KV key of a named consumer: `{enc(stream)}.{enc(consumer)}`.
    pub(crate) fn consumer_key(&self, consumer: &str) -> Result<String, LogError> {
        validate(consumer)?;
        Ok(format!("{}.{}", self.encoded, encode(consumer)))
    }
}

/// Lower-case hex of a dedup key (any bytes) for the `Nats-Msg-Id` header.
pub(crate) fn msg_id(key: &[u8]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(key.len() * 2);
    for b in key {
        s.push(HEX[(b >> 4) as usize] as char);
        s.push(HEX[(b & 0xf) as usize] as char);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(enc: &str) -> Option<String> {
        let mut out = String::new();
        let mut it = enc.chars();
        while let Some(c) = it.next() {
            match c {
                '_' => match it.next()? {
                    '_' => out.push('_'),
                    'd' => out.push('.'),
                    _ => return None,
                },
                c => out.push(c),
            }
        }
        Some(out)
    }

    #[test]
    fn encoding_is_injective_and_valid() {
        let names = [
            "a", "a.b", "a_b", "a_d", "a__b", "_d", ".", "a.", ".a", "a-b", "A.B", "x_.y",
        ];
        let mut seen = std::collections::HashSet::new();
        for n in names {
            let e = encode(n);
            assert!(e
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'));
            assert_eq!(decode(&e).as_deref(), Some(n), "{n} -> {e}");
            assert!(seen.insert(e), "collision for {n}");
        }
    }

    #[test]
    fn stream_names_and_keys() {
        let s = StreamNames::new("tidegate", "orders.eu_1").unwrap();
        assert_eq!(s.js_stream, "TIDEGATE_orders_deu__1");
        assert_eq!(s.subject, "tidegate.orders_deu__1");
        assert_eq!(s.consumer_key(".w").unwrap(), "orders_deu__1._dw");
        assert!(StreamNames::new("tidegate", "a*b").is_err());
        assert!(StreamNames::new("tidegate", "..").is_err());
        assert!(StreamNames::new("tidegate", &".".repeat(200)).is_err());
        assert!(StreamNames::new("tidegate", &"a".repeat(200)).is_ok());
        assert!(validate_prefix("tg-1").is_ok());
        assert!(validate_prefix("TG").is_err());
        assert!(validate_prefix("a_b").is_err());
        assert_eq!(msg_id(&[0x00, 0xab, 0xff]), "00abff");
    }
}
