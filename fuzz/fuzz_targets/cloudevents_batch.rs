//! Batch-mode CloudEvents: never panics; every accepted event re-parses.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidegate_core::event::{parse_batch, parse_structured};

fuzz_target!(|data: &[u8]| {
    if let Ok(events) = parse_batch(data) {
        assert!(!events.is_empty());
        for e in events {
            parse_structured(&e.to_json()).expect("normalised event must parse again");
        }
    }
});
