//! RIG's `EXTRACTORS` config: never panics; an accepted config infers
//! subscriptions from arbitrary claims without panicking either.
#![no_main]
use libfuzzer_sys::fuzz_target;
use serde_json::json;
use tidegate_core::Extractors;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(ex) = Extractors::parse(text) {
        let claims = json!({"sub": "alice", "n": 1, "a": [1, {"b": null}], "o": {"": "x", "~": 2}});
        let _ = ex.infer_from_claims(&claims);
        let _ = ex.infer_from_claims(&json!(null));
    }
});
