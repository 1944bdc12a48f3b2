use super::*;
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// The fast path agrees with the slow path: the same event (routing attributes, and
/// JSON meaning the same), or the same error; and its JSON is compact.
fn agree_structured(body: &[u8]) -> Option<IngestEvent> {
    let slow = parse_structured(body);
    let fast = fast_structured(body);
    let ingest = parse_structured_ingest(body);
    match &slow {
        Err(e) => {
            assert!(
                fast.is_none(),
                "fast path accepted what the slow path rejects: {e}"
            );
            assert_eq!(ingest.as_ref().err(), Some(e));
        }
        Ok(ev) => {
            let got = ingest
                .as_ref()
                .expect("ingest accepts what the slow path accepts");
            same_event(ev, got);
            if let Some(f) = &fast {
                same_event(ev, f);
            }
        }
    }
    fast
}

fn same_event(slow: &Event, fast: &IngestEvent) {
    assert_eq!(fast.specversion, slow.specversion);
    assert_eq!(fast.id, slow.id);
    assert_eq!(fast.source, slow.source);
    assert_eq!(fast.event_type, slow.event_type);
    let reparsed: Value = serde_json::from_slice(&fast.json).expect("fast JSON parses");
    assert_eq!(
        serde_json::to_vec(&reparsed).unwrap(),
        slow.to_json().as_ref(),
        "same attributes, order and values"
    );
    assert_eq!(fast.attributes(), slow.attributes);
    assert!(
        compact(&fast.json),
        "{}",
        String::from_utf8_lossy(&fast.json)
    );
}

/// No whitespace outside strings (SSE frames one event per `data:` line).
fn compact(json: &[u8]) -> bool {
    let mut out = Vec::new();
    compact_into(&mut out, json);
    out == json && !json.contains(&b'\n')
}

fn agree_batch(body: &[u8]) -> Option<Vec<IngestEvent>> {
    let slow = parse_batch(body);
    let fast = fast_batch(body);
    let ingest = parse_batch_ingest(body);
    match &slow {
        Err(e) => {
            assert!(
                fast.is_none(),
                "fast path accepted a batch the slow path rejects: {e}"
            );
            assert_eq!(ingest.as_ref().err(), Some(e));
        }
        Ok(evs) => {
            let got = ingest
                .as_ref()
                .expect("ingest accepts what the slow path accepts");
            assert_eq!(got.len(), evs.len());
            for (s, g) in evs.iter().zip(got) {
                same_event(s, g);
            }
            if let Some(f) = &fast {
                assert_eq!(f, got);
            }
        }
    }
    fast
}

#[test]
fn compact_events_are_kept_byte_for_byte() {
    for body in [
        br#"{"cloudEventsVersion":"0.1","eventType":"greeting","eventID":"a1","source":"tutorial","contentType":"application/json","data":{"name":"john","greeting":"hi"}}"#.as_slice(),
        br#"{"specversion":"0.2","type":"greeting","source":"/cli","id":"b2","time":"2018-04-05T17:31:00Z","contenttype":"application/json","data":{"name":"frank"}}"#,
        br#"{"specversion":"1.0","type":"com.example.created","source":"https://example.com","id":"c3","traceparent0":"x","data":[1,2,{"n":null,"b":true,"f":-1.5e3}]}"#,
        br#"{"specversion":"1.0","type":"t","source":"s","id":"i","data_base64":"aGk="}"#,
    ] {
        let fast = agree_structured(body).expect("fast path");
        assert_eq!(fast.json.as_ref(), body);
    }
}

#[test]
fn whitespace_between_tokens_is_removed_not_inside_strings() {
    let body = b" {\n  \"specversion\" : \"1.0\",\t\"id\": \"a b\",\r\n \"source\":\"/s\" , \"type\":\"t\",\n \"data\": { \"msg\" : \"hello \\\" world\\\\\" , \"l\": [ 1 , 2 ] }\n}\n ";
    let fast = agree_structured(body).expect("fast path");
    assert_eq!(
        fast.json.as_ref(),
        br#"{"specversion":"1.0","id":"a b","source":"/s","type":"t","data":{"msg":"hello \" world\\","l":[1,2]}}"#
    );
}

#[test]
fn escapes_in_values_are_kept_and_decoded_for_routing() {
    let body = br#"{"specversion":"1.0","id":"\u0041\n","source":"\/s","type":"t\u00e9","data":"\ud83d\ude00"}"#;
    let fast = agree_structured(body).expect("fast path");
    assert_eq!(fast.id, "A\n");
    assert_eq!(fast.source, "/s");
    assert_eq!(fast.event_type, "t\u{e9}");
    assert_eq!(fast.json.as_ref(), body.as_slice());
}

#[test]
fn malformed_json_is_left_to_the_slow_path() {
    for body in [
        "",
        "{",
        "}",
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t""#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t",}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t"} x"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t"}{}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":01}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":1e400}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":{"x":-1e999}}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":"\ud800"}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":["\ud800x"]}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":"\x"}"#,
        "{\"specversion\":\"1.0\",\"id\":\"i\",\"source\":\"s\",\"type\":\"t\",\"data\":\"a\u{1}\"}",
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":[1,]}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":tru}"#,
        "[]",
        "1",
        "null",
        "\"x\"",
    ] {
        assert!(agree_structured(body.as_bytes()).is_none(), "{body}");
    }
    // Not UTF-8, inside and outside a string.
    for body in [
        b"{\"specversion\":\"1.0\",\"id\":\"i\",\"source\":\"s\",\"type\":\"t\",\"data\":\"\xff\"}"
            .as_slice(),
        b"{\"specversion\":\"1.0\",\"id\":\"i\",\"source\":\"s\",\"type\":\"t\"}\xff",
    ] {
        assert!(agree_structured(body).is_none());
    }
}

#[test]
fn cloudevents_violations_give_the_slow_paths_errors() {
    for body in [
        r#"{"id":"i","source":"s","type":"t"}"#,
        r#"{"specversion":1,"id":"i","source":"s","type":"t"}"#,
        r#"{"specversion":"2.0","id":"i","source":"s","type":"t"}"#,
        r#"{"cloudEventsVersion":"0.2","eventID":"i","source":"s","eventType":"t"}"#,
        r#"{"specversion":"1.0","source":"s","type":"t"}"#,
        r#"{"specversion":"1.0","id":"","source":"s","type":"t"}"#,
        r#"{"specversion":"1.0","id":"i","source":["s"],"type":"t"}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":null}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","time":5}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","Bad":5}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":1,"data_base64":"aGk="}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data_base64":"!!"}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data_base64":{}}"#,
        r#"{"cloudEventsVersion":"0.1","eventID":"i","source":"s","eventType":"t","extensions":[]}"#,
        r#"{"cloudEventsVersion":"0.1","eventID":"i","source":"s","eventType":"t","extensions":"x"}"#,
        r#"{"specversion":"0.2","id":"i","source":"s","type":"t","contenttype":false}"#,
    ] {
        let err = parse_structured(body.as_bytes()).unwrap_err();
        assert!(agree_structured(body.as_bytes()).is_none(), "{body}");
        assert_eq!(parse_structured_ingest(body.as_bytes()).unwrap_err(), err);
    }
}

#[test]
fn duplicate_keys_take_the_slow_path_and_mean_the_same() {
    for body in [
        r#"{"specversion":"1.0","id":"first","source":"s","type":"t","id":"second"}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":{"a":1,"b":2,"a":3}}"#,
        r#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":[{"a":1},{"a":1,"a":2}]}"#,
    ] {
        assert!(agree_structured(body.as_bytes()).is_none(), "{body}");
        let ev = parse_structured_ingest(body.as_bytes()).unwrap();
        assert!(!ev.json.is_empty());
    }
    let ev = parse_structured_ingest(
        br#"{"specversion":"1.0","id":"first","source":"s","type":"t","id":"second"}"#,
    )
    .unwrap();
    assert_eq!(ev.id, "second");
    assert_eq!(
        ev.json.as_ref(),
        br#"{"specversion":"1.0","id":"second","source":"s","type":"t"}"#
    );
    // Same keys in sibling objects are not duplicates.
    let body = br#"{"specversion":"1.0","id":"i","source":"s","type":"t","data":[{"a":1},{"a":2,"b":{"a":3}}]}"#;
    assert!(agree_structured(body).is_some());
}

#[test]
fn large_objects_detect_duplicates_too() {
    let keys: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
    let body = format!(
        r#"{{"specversion":"1.0","id":"i","source":"s","type":"t","data":{{{}}}}}"#,
        keys.join(",")
    );
    assert!(agree_structured(body.as_bytes()).is_some());
    let dup = format!(
        r#"{{"specversion":"1.0","id":"i","source":"s","type":"t","data":{{{},"k3":0}}}}"#,
        keys.join(",")
    );
    assert!(agree_structured(dup.as_bytes()).is_none());
    let top: Vec<String> = (0..30).map(|i| format!("\"x{i}\":{i}")).collect();
    let body = format!(
        r#"{{"specversion":"1.0","id":"i","source":"s","type":"t",{},"x7":"again"}}"#,
        top.join(",")
    );
    assert!(agree_structured(body.as_bytes()).is_none());
}

#[test]
fn escaped_keys_take_the_slow_path() {
    let body =
        br#"{"specversion":"1.0","id":"i","source":"s","\u0074ype":"t","data":{"\u0061":1}}"#;
    assert!(agree_structured(body).is_none());
    assert_eq!(parse_structured_ingest(body).unwrap().event_type, "t");
}

#[test]
fn deep_nesting_takes_the_slow_path() {
    for depth in [10, 70, 126, 127, 200] {
        let data = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        let body =
            format!(r#"{{"specversion":"1.0","id":"i","source":"s","type":"t","data":{data}}}"#);
        let fast = agree_structured(body.as_bytes());
        assert_eq!(fast.is_some(), depth < 60, "depth {depth}");
        let batch = format!("[{body}]");
        agree_batch(batch.as_bytes());
    }
}

#[test]
fn batches() {
    let body = br#"[{"specversion":"1.0","id":"1","source":"s","type":"a","data":{"x":1}},
        {"cloudEventsVersion":"0.1","eventID":"2","source":"s","eventType":"b"} ,
        {"specversion":"0.2","id":"3","source":"s","type":"c"}]"#;
    let evs = agree_batch(body).expect("fast path");
    assert_eq!(evs.len(), 3);
    assert_eq!(
        evs[0].json.as_ref(),
        br#"{"specversion":"1.0","id":"1","source":"s","type":"a","data":{"x":1}}"#
    );
    assert_eq!(evs[1].event_type, "b");
    assert_eq!(evs[2].specversion, SpecVersion::V02);
}

#[test]
fn batch_errors_are_the_slow_paths() {
    for body in [
        "",
        "[",
        "[]",
        " [ ] ",
        "{}",
        r#"{"specversion":"1.0","id":"1","source":"s","type":"a"}"#,
        r#"[{"specversion":"1.0","id":"1","source":"s","type":"a"},]"#,
        r#"[{"specversion":"1.0","id":"1","source":"s","type":"a"}] x"#,
        r#"[{"specversion":"1.0","id":"1","source":"s","type":"a"},1]"#,
        r#"[{"specversion":"1.0","id":"1","source":"s","type":"a"},{"specversion":"1.0","id":"2","source":"s"}]"#,
        r#"[{"specversion":"1.0","id":"1","source":"s","type":"a","data":1e400}]"#,
        r#"[{"specversion":"1.0","id":"1","source":"s","type":"a","data":"\udc00"}]"#,
    ] {
        assert!(agree_batch(body.as_bytes()).is_none(), "{body}");
        assert!(parse_batch_ingest(body.as_bytes()).is_err(), "{body}");
    }
    let err = parse_batch_ingest(
        br#"[{"specversion":"1.0","id":"1","source":"s","type":"a"},{"specversion":"1.0","id":"2","source":"s"}]"#,
    )
    .unwrap_err();
    assert_eq!(
        err,
        EventError::InBatch {
            index: 1,
            source: Box::new(EventError::MissingAttribute("type"))
        }
    );
}

#[test]
fn batch_with_a_duplicate_in_one_event_falls_back_for_all() {
    let body = br#"[{"specversion":"1.0","id":"1","source":"s","type":"a"},{"specversion":"1.0","id":"2","source":"s","type":"b","type":"c"}]"#;
    assert!(agree_batch(body).is_none());
    let evs = parse_batch_ingest(body).unwrap();
    assert_eq!(evs[1].event_type, "c");
}

#[test]
fn events_of_a_batch_share_one_buffer() {
    let body = br#"[{"specversion":"1.0","id":"1","source":"s","type":"a"},{"specversion":"1.0","id":"2","source":"s","type":"a"}]"#;
    let evs = parse_batch_ingest(body).unwrap();
    let gap = evs[1].json.as_ptr() as usize - evs[0].json.as_ptr() as usize;
    assert_eq!(gap, evs[0].json.len());
}

#[test]
fn attribute_lookup() {
    let ev = parse_structured_ingest(
        br#"{"specversion":"1.0","id":"i","source":"s","type":"t","flag":true,"name":"x","data":{"other":"flag","nested":1}}"#,
    )
    .unwrap();
    assert_eq!(ev.attribute("flag"), Some(Value::Bool(true)));
    assert_eq!(ev.attribute("name"), Some(Value::String("x".into())));
    assert_eq!(ev.attribute("data").unwrap()["nested"], 1);
    assert_eq!(
        ev.attribute("other"),
        None,
        "nested keys are not attributes"
    );
    assert_eq!(ev.attribute("nested"), None);
    assert_eq!(ev.attribute("missing"), None);
    assert_eq!(ev.attribute("fla"), None);
    // Through the slow path (a duplicate), too.
    let ev = parse_structured_ingest(
        br#"{"specversion":"1.0","id":"i","source":"s","type":"t","flag":false,"flag":"true"}"#,
    )
    .unwrap();
    assert_eq!(ev.attribute("flag"), Some(Value::String("true".into())));
}

#[test]
fn from_event_keeps_to_json() {
    let ev =
        parse_structured(br#"{"specversion":"1.0","id":"i","source":"s","type":"t"}"#).unwrap();
    let json = ev.to_json();
    let ingest = IngestEvent::from(ev);
    assert_eq!(ingest.json, json);
}

// === differential property tests ===

fn ws() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => Just(String::new()),
        1 => "[ \t\r\n]{1,3}",
    ]
}

fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        Just("null".to_string()),
        Just("true".to_string()),
        Just("-0".to_string()),
        Just("1e400".to_string()),
        Just("18446744073709551616".to_string()),
        "-?[0-9]{1,4}(\\.[0-9]{1,3})?([eE][-+]?[0-9]{1,2})?",
        "\"([a-z \\\\/]|\\\\[nt\"/\\\\]|\\\\u00e9|\\\\ud800|\\\\ud83d\\\\ude00){0,6}\"",
    ];
    leaf.prop_recursive(4, 24, 4, |inner| {
        prop_oneof![
            (proptest::collection::vec((ws(), inner.clone()), 0..4)).prop_map(|items| {
                let parts: Vec<String> =
                    items.into_iter().map(|(w, v)| format!("{w}{v}")).collect();
                format!("[{}]", parts.join(","))
            }),
            (proptest::collection::vec(("[abc]", ws(), inner), 0..4)).prop_map(|items| {
                let parts: Vec<String> = items
                    .into_iter()
                    .map(|(k, w, v)| format!("\"{k}\":{w}{v}"))
                    .collect();
                format!("{{{}}}", parts.join(","))
            }),
        ]
    })
}

fn attribute_name() -> impl Strategy<Value = &'static str> {
    proptest::sample::select(vec![
        "specversion",
        "cloudEventsVersion",
        "id",
        "eventID",
        "source",
        "type",
        "eventType",
        "time",
        "data",
        "data_base64",
        "extensions",
        "ext1",
        "Bad",
    ])
}

fn attribute_value() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => proptest::sample::select(vec!["\"1.0\"", "\"0.1\"", "\"0.2\"", "\"0.3\"", "\"x\"", "\"\"", "\"aGk=\"", "{}"])
            .prop_map(str::to_string),
        2 => json_text(),
    ]
}

fn event_text() -> impl Strategy<Value = String> {
    (
        proptest::sample::select(vec!["\"1.0\"", "\"0.2\"", "\"0.1\""]),
        proptest::collection::vec((ws(), attribute_name(), ws(), attribute_value()), 0..6),
        ws(),
    )
        .prop_map(|(version, extra, tail)| {
            let mut parts: Vec<String> = if version == "\"0.1\"" {
                vec![
                    format!("\"cloudEventsVersion\":{version}"),
                    "\"eventID\":\"i\"".into(),
                    "\"source\":\"s\"".into(),
                    "\"eventType\":\"t\"".into(),
                ]
            } else {
                vec![
                    format!("\"specversion\":{version}"),
                    "\"id\":\"i\"".into(),
                    "\"source\":\"s\"".into(),
                    "\"type\":\"t\"".into(),
                ]
            };
            for (w1, k, w2, v) in extra {
                parts.push(format!("{w1}\"{k}\"{w2}:{v}"));
            }
            format!("{{{}{tail}}}", parts.join(","))
        })
}

#[test]
fn generated_events_cover_both_paths() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let (mut fast, mut slow_ok, mut slow_err) = (0, 0, 0);
    for _ in 0..500 {
        let body = event_text().new_tree(&mut runner).unwrap().current();
        match (
            agree_structured(body.as_bytes()),
            parse_structured(body.as_bytes()),
        ) {
            (Some(_), _) => fast += 1,
            (None, Ok(_)) => slow_ok += 1,
            (None, Err(_)) => slow_err += 1,
        }
    }
    assert!(
        fast > 50 && slow_ok > 5 && slow_err > 50,
        "{fast} {slow_ok} {slow_err}"
    );
}

proptest! {
    #[test]
    fn structured_agrees_with_the_slow_path(body in event_text()) {
        agree_structured(body.as_bytes());
    }

    #[test]
    fn batch_agrees_with_the_slow_path(events in proptest::collection::vec((ws(), event_text()), 0..4)) {
        let parts: Vec<String> = events.into_iter().map(|(w, e)| format!("{w}{e}")).collect();
        agree_batch(format!("[{}]", parts.join(",")).as_bytes());
    }

    #[test]
    fn ingest_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        let _ = parse_structured_ingest(&body);
        let _ = parse_batch_ingest(&body);
    }
}
