//! Idempotent producers: parsing `Producer-Id`/`-Epoch`/`-Seq` and deciding what an
//! append with them means, given the producer's last committed `(epoch, seq)`.
//! Pure: the caller holds the stream's write lock and commits the new state in the
//! same log batch as the data ([`super::store`]).
use axum::http::HeaderMap;

use super::store::{ProducerState, ProducerTuple};

/// Largest epoch / seq (JavaScript's safe integer range).
const MAX_SAFE: u64 = (1 << 53) - 1;

#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Append, then record this state.
    Accept,
    /// Already stored; report the highest accepted seq.
    Duplicate { last_seq: u64 },
    /// Older epoch than the server's: fenced (403).
    StaleEpoch { current: u64 },
    /// A new epoch must start at seq 0 (400).
    BadEpochStart,
    /// Gap (409).
    Gap { expected: u64, received: u64 },
}

/// `Ok(None)` without producer headers; `Err` with a reason for a 400.
pub fn parse(headers: &HeaderMap) -> Result<Option<ProducerTuple>, String> {
    let get = |n: &str| {
        headers
            .get(n)
            .map(|v| v.to_str().unwrap_or("\u{0}").to_owned())
    };
    match (
        get("producer-id"),
        get("producer-epoch"),
        get("producer-seq"),
    ) {
        (None, None, None) => Ok(None),
        (Some(id), Some(epoch), Some(seq)) => {
            if id.is_empty() || id.contains('\u{0}') {
                return Err("Producer-Id must be a non-empty string".into());
            }
            Ok(Some(ProducerTuple {
                id,
                epoch: integer(&epoch).ok_or("Producer-Epoch must be an integer")?,
                seq: integer(&seq).ok_or("Producer-Seq must be an integer")?,
            }))
        }
        _ => Err("Producer-Id, Producer-Epoch and Producer-Seq go together".into()),
    }
}

fn integer(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<u64>().ok().filter(|n| *n <= MAX_SAFE)
}

pub fn check(state: Option<ProducerState>, p: &ProducerTuple) -> Verdict {
    let Some(st) = state else {
        return if p.seq == 0 {
            Verdict::Accept
        } else {
            Verdict::Gap {
                expected: 0,
                received: p.seq,
            }
        };
    };
    if p.epoch < st.epoch {
        return Verdict::StaleEpoch { current: st.epoch };
    }
    if p.epoch > st.epoch {
        return if p.seq == 0 {
            Verdict::Accept
        } else {
            Verdict::BadEpochStart
        };
    }
    if p.seq <= st.last_seq {
        Verdict::Duplicate {
            last_seq: st.last_seq,
        }
    } else if p.seq == st.last_seq + 1 {
        Verdict::Accept
    } else {
        Verdict::Gap {
            expected: st.last_seq + 1,
            received: p.seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(epoch: u64, seq: u64) -> ProducerTuple {
        ProducerTuple {
            id: "p".into(),
            epoch,
            seq,
        }
    }

    fn st(epoch: u64, last_seq: u64) -> Option<ProducerState> {
        Some(ProducerState { epoch, last_seq })
    }

    #[test]
    fn validates_epochs_and_sequences() {
        assert_eq!(check(None, &t(0, 0)), Verdict::Accept);
        assert_eq!(check(None, &t(3, 0)), Verdict::Accept);
        assert_eq!(check(st(0, 0), &t(0, 1)), Verdict::Accept);
        assert_eq!(
            check(st(0, 2), &t(0, 1)),
            Verdict::Duplicate { last_seq: 2 }
        );
        assert_eq!(
            check(st(0, 2), &t(0, 2)),
            Verdict::Duplicate { last_seq: 2 }
        );
        assert_eq!(
            check(st(0, 0), &t(0, 2)),
            Verdict::Gap {
                expected: 1,
                received: 2
            }
        );
        assert_eq!(
            check(st(1, 0), &t(0, 5)),
            Verdict::StaleEpoch { current: 1 }
        );
        assert_eq!(check(st(0, 9), &t(1, 5)), Verdict::BadEpochStart);
        assert_eq!(check(st(0, 9), &t(1, 0)), Verdict::Accept);
    }

    #[test]
    fn parses_headers_strictly() {
        let mut h = HeaderMap::new();
        assert_eq!(parse(&h), Ok(None));
        h.insert("producer-id", "a".parse().unwrap());
        assert!(parse(&h).is_err());
        h.insert("producer-epoch", "0".parse().unwrap());
        h.insert("producer-seq", "1abc".parse().unwrap());
        assert!(parse(&h).is_err());
        h.insert("producer-seq", "-1".parse().unwrap());
        assert!(parse(&h).is_err());
        h.insert("producer-seq", "9007199254740992".parse().unwrap());
        assert!(parse(&h).is_err());
        h.insert("producer-seq", "7".parse().unwrap());
        assert_eq!(
            parse(&h),
            Ok(Some(ProducerTuple {
                id: "a".into(),
                epoch: 0,
                seq: 7
            }))
        );
    }
}
