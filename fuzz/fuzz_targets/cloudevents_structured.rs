//! Structured-mode CloudEvents (0.1, 0.2, 1.0): never panics, and an accepted
//! event's normalised JSON parses again to the same JSON.
#![no_main]
use libfuzzer_sys::fuzz_target;
use tidegate_core::event::parse_structured;

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = parse_structured(data) {
        let json = event.to_json();
        let again = parse_structured(&json).expect("normalised event must parse again");
        assert_eq!(again.to_json(), json, "normalisation must be idempotent");
    }
});
