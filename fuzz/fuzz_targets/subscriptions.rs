//! Subscriptions JSON against a fixed extractor config: never panics, and an
//! accepted set renders to JSON that parses back to the same set.
#![no_main]
use libfuzzer_sys::fuzz_target;
use std::sync::OnceLock;
use tidegate_core::subscription::{parse, Limits, Subscription};
use tidegate_core::Extractors;

fn extractors() -> &'static Extractors {
    static E: OnceLock<Extractors> = OnceLock::new();
    E.get_or_init(|| {
        Extractors::parse(
            r#"{"greeting":{"name":{"stable_field_index":1,"event":{"json_pointer":"/data/name"},"jwt":{"json_pointer":"/sub"}},
                            "age":{"stable_field_index":2,"event":{"json_pointer":"/data/age"}}},
                "other":{"id":{"stable_field_index":1,"event":{"json_pointer":"/data/id"}}}}"#,
        )
        .expect("fixed extractors")
    })
}

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_subscriptions: 50,
        max_constraints: 50,
    };
    if let Ok(subs) = parse(data, extractors(), limits) {
        let json = serde_json::Value::Array(subs.iter().map(Subscription::to_json).collect());
        let again = parse(json.to_string().as_bytes(), extractors(), limits)
            .expect("rendered subscriptions must parse again");
        assert_eq!(again, subs);
    }
});
