use super::*;
use serde_json::json;

fn structured(v: Value) -> Result<Event, EventError> {
    parse_structured(v.to_string().as_bytes())
}

fn attr_err(name: &str) -> impl Fn(&EventError) -> bool + '_ {
    move |e| matches!(e, EventError::InvalidAttribute(n, _) if n == name)
}

// === structured ===

#[test]
fn rig_demo_0_1_event() {
    // What RIG's example frontends publish.
    let body = br#"{"cloudEventsVersion":"0.1","eventType":"greeting","eventID":"a1","source":"tutorial","contentType":"application/json","data":{"name":"john","greeting":"hi"}}"#;
    let ev = parse_structured(body).unwrap();
    assert_eq!(ev.specversion, SpecVersion::V01);
    assert_eq!(ev.id, "a1");
    assert_eq!(ev.source, "tutorial");
    assert_eq!(ev.event_type, "greeting");
    // Delivered exactly as sent: same names, same order, compact.
    assert_eq!(ev.to_json().as_ref(), body.as_slice());
}

#[test]
fn rig_0_2_event() {
    let body = br#"{"specversion":"0.2","type":"greeting","source":"/cli","id":"b2","time":"2018-04-05T17:31:00Z","contenttype":"application/json","data":{"name":"frank"}}"#;
    let ev = parse_structured(body).unwrap();
    assert_eq!(ev.specversion, SpecVersion::V02);
    assert_eq!((ev.id.as_str(), ev.event_type.as_str()), ("b2", "greeting"));
    assert_eq!(ev.data(), Some(&json!({"name": "frank"})));
    assert_eq!(ev.to_json().as_ref(), body.as_slice());
}

#[test]
fn cloudevents_1_0_event_with_extension() {
    let body = br#"{"specversion":"1.0","type":"com.example.created","source":"https://example.com","id":"c3","time":"2020-01-01T00:00:00Z","datacontenttype":"application/json","traceparent0":"x","data":[1,2]}"#;
    let ev = parse_structured(body).unwrap();
    assert_eq!(ev.specversion, SpecVersion::V10);
    assert_eq!(ev.event_type, "com.example.created");
    assert_eq!(ev.to_json().as_ref(), body.as_slice());
}

#[test]
fn cloudevents_0_3_is_accepted_as_1_0_like() {
    let ev =
        structured(json!({"specversion":"0.3","type":"t","source":"s","id":"i","schemaurl":"x"}))
            .unwrap();
    assert_eq!(ev.specversion, SpecVersion::V10);
    assert_eq!(ev.attributes["specversion"], "0.3");
}

#[test]
fn data_base64_alone_is_fine() {
    let ev = structured(
        json!({"specversion":"1.0","type":"t","source":"s","id":"i","data_base64":"aGk="}),
    )
    .unwrap();
    assert_eq!(ev.attributes["data_base64"], "aGk=");
}

#[test]
fn invalid_json() {
    assert!(matches!(
        parse_structured(b"{"),
        Err(EventError::InvalidJson(_))
    ));
    assert!(matches!(
        parse_structured(b""),
        Err(EventError::InvalidJson(_))
    ));
}

#[test]
fn non_objects_are_not_cloud_events() {
    for body in ["[]", "1", "\"x\"", "null", "true"] {
        assert!(
            matches!(
                parse_structured(body.as_bytes()),
                Err(EventError::NotACloudEvent(_))
            ),
            "{body}"
        );
    }
}

#[test]
fn object_without_version_is_not_a_cloud_event() {
    let err = structured(json!({"id":"i","type":"t","source":"s"})).unwrap_err();
    assert!(matches!(err, EventError::NotACloudEvent(_)));
}

#[test]
fn unsupported_versions() {
    assert_eq!(
        structured(json!({"specversion":"2.0","id":"i","type":"t","source":"s"})).unwrap_err(),
        EventError::UnsupportedVersion("2.0".into())
    );
    assert_eq!(
        structured(json!({"cloudEventsVersion":"0.2","eventID":"i","eventType":"t","source":"s"}))
            .unwrap_err(),
        EventError::UnsupportedVersion("0.2".into())
    );
}

#[test]
fn non_string_versions() {
    let err = structured(json!({"specversion":1.0,"id":"i","type":"t","source":"s"})).unwrap_err();
    assert!(attr_err("specversion")(&err), "{err}");
    let err = structured(json!({"cloudEventsVersion":0.1})).unwrap_err();
    assert!(attr_err("cloudEventsVersion")(&err), "{err}");
}

#[test]
fn missing_attributes_are_named_as_spelled_in_their_version() {
    let v1 = json!({"specversion":"1.0","id":"i","type":"t","source":"s"});
    for drop in ["id", "type", "source"] {
        let mut v = v1.clone();
        v.as_object_mut().unwrap().remove(drop);
        assert_eq!(
            structured(v).unwrap_err(),
            EventError::MissingAttribute(drop)
        );
    }
    let v01 = json!({"cloudEventsVersion":"0.1","eventID":"i","eventType":"t","source":"s"});
    for drop in ["eventID", "eventType", "source"] {
        let mut v = v01.clone();
        v.as_object_mut().unwrap().remove(drop);
        let err = structured(v).unwrap_err();
        assert!(
            matches!(err, EventError::MissingAttribute(n) if n == drop),
            "{err}"
        );
    }
    // A 0.1 event spelling its id the 1.0 way still lacks `eventID`.
    let err = structured(json!({"cloudEventsVersion":"0.1","id":"i","eventType":"t","source":"s"}))
        .unwrap_err();
    assert_eq!(err, EventError::MissingAttribute("eventID"));
}

#[test]
fn required_attributes_must_be_non_empty_strings() {
    for (name, bad) in [
        ("id", json!("")),
        ("id", json!(5)),
        ("source", json!(null)),
        ("type", json!({})),
    ] {
        let mut v = json!({"specversion":"1.0","id":"i","type":"t","source":"s"});
        v[name] = bad;
        let err = structured(v).unwrap_err();
        assert!(attr_err(name)(&err), "{name}: {err}");
    }
    let err =
        structured(json!({"cloudEventsVersion":"0.1","eventID":"","eventType":"t","source":"s"}))
            .unwrap_err();
    assert!(attr_err("eventID")(&err), "{err}");
}

#[test]
fn time_must_be_a_string() {
    let err = structured(json!({"specversion":"1.0","id":"i","type":"t","source":"s","time":5}))
        .unwrap_err();
    assert!(attr_err("time")(&err));
    let err = structured(json!({"specversion":"0.2","id":"i","type":"t","source":"s","time":[]}))
        .unwrap_err();
    assert!(attr_err("time")(&err));
    let err = structured(json!({"cloudEventsVersion":"0.1","eventID":"i","eventType":"t","source":"s","eventTime":1}))
        .unwrap_err();
    assert!(attr_err("eventTime")(&err));
}

#[test]
fn v0_1_extensions_must_be_an_object() {
    let base = json!({"cloudEventsVersion":"0.1","eventID":"i","eventType":"t","source":"s"});
    let mut ok = base.clone();
    ok["extensions"] = json!({"a": 1});
    assert!(structured(ok).is_ok());
    let mut bad = base;
    bad["extensions"] = json!("x");
    assert!(attr_err("extensions")(&structured(bad).unwrap_err()));
}

#[test]
fn v1_0_extension_names_must_be_lowercase_alphanumeric() {
    for bad in ["myExt", "my-ext", "my_ext", ""] {
        let mut v = json!({"specversion":"1.0","id":"i","type":"t","source":"s"});
        v[bad] = json!("x");
        let err = structured(v).unwrap_err();
        assert!(attr_err(bad)(&err), "{bad}: {err}");
    }
    // 0.2 had no such rule and RIG accepted camelCase extensions.
    assert!(
        structured(json!({"specversion":"0.2","id":"i","type":"t","source":"s","myExt":1})).is_ok()
    );
}

#[test]
fn data_and_data_base64_are_exclusive() {
    let err = structured(
        json!({"specversion":"1.0","id":"i","type":"t","source":"s","data":1,"data_base64":"aGk="}),
    )
    .unwrap_err();
    assert!(attr_err("data_base64")(&err));
}

#[test]
fn data_base64_must_be_base64_string() {
    for bad in [json!(1), json!("not base64!")] {
        let err = structured(
            json!({"specversion":"1.0","id":"i","type":"t","source":"s","data_base64":bad}),
        )
        .unwrap_err();
        assert!(attr_err("data_base64")(&err), "{err}");
    }
}

// === batch ===

#[test]
fn batch_of_mixed_versions() {
    let body = json!([
        {"specversion":"1.0","id":"1","type":"a","source":"s"},
        {"cloudEventsVersion":"0.1","eventID":"2","eventType":"b","source":"s"},
    ]);
    let evs = parse_batch(body.to_string().as_bytes()).unwrap();
    let ids: Vec<_> = evs
        .iter()
        .map(|e| (e.id.as_str(), e.event_type.as_str()))
        .collect();
    assert_eq!(ids, [("1", "a"), ("2", "b")]);
}

#[test]
fn batch_errors() {
    assert_eq!(parse_batch(b"[]").unwrap_err(), EventError::EmptyBatch);
    assert!(matches!(
        parse_batch(b"[").unwrap_err(),
        EventError::InvalidJson(_)
    ));
    assert!(matches!(
        parse_batch(b"{}").unwrap_err(),
        EventError::NotACloudEvent(_)
    ));
    let body = json!([{"specversion":"1.0","id":"1","type":"a","source":"s"}, {"specversion":"1.0","type":"a","source":"s"}]);
    assert_eq!(
        parse_batch(body.to_string().as_bytes()).unwrap_err(),
        EventError::InBatch {
            index: 1,
            source: Box::new(EventError::MissingAttribute("id"))
        }
    );
    let err = parse_batch(b"[1]").unwrap_err();
    assert!(
        matches!(err, EventError::InBatch { index: 0, ref source } if matches!(**source, EventError::NotACloudEvent(_)))
    );
    assert!(err.to_string().starts_with("event 0 in batch: "));
}

// === binary ===

fn binary(
    headers: &[(&str, &str)],
    content_type: Option<&str>,
    body: &[u8],
) -> Result<Event, EventError> {
    let headers: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    parse_binary("ce-", headers, content_type, body)
}

const BASE: [(&str, &str); 4] = [
    ("ce-specversion", "1.0"),
    ("ce-id", "i"),
    ("ce-source", "/src"),
    ("ce-type", "greeting"),
];

#[test]
fn binary_json_body() {
    let ev = binary(
        &BASE,
        Some("application/json; charset=utf-8"),
        br#"{"name":"john"}"#,
    )
    .unwrap();
    assert_eq!(ev.specversion, SpecVersion::V10);
    assert_eq!(ev.event_type, "greeting");
    assert_eq!(
        Value::Object(ev.attributes),
        json!({"specversion":"1.0","id":"i","source":"/src","type":"greeting",
               "datacontenttype":"application/json; charset=utf-8","data":{"name":"john"}})
    );
}

#[test]
fn binary_header_prefix_is_case_insensitive_and_names_lowercased() {
    let headers = [
        ("CE-SpecVersion", "1.0"),
        ("Ce-Id", "i"),
        ("ce-SOURCE", "s"),
        ("ce-type", "t"),
        ("content-length", "3"),
    ];
    let ev = binary(&headers, None, b"").unwrap();
    assert_eq!(
        ev.attributes.keys().collect::<Vec<_>>(),
        ["specversion", "id", "source", "type"]
    );
}

#[test]
fn binary_kafka_prefix() {
    let headers: Vec<(&str, &[u8])> = vec![
        ("ce_specversion", b"1.0"),
        ("ce_id", b"i"),
        ("ce_source", b"s"),
        ("ce_type", b"t"),
        ("ce-ignored", b"x"),
    ];
    let ev = parse_binary("ce_", headers, Some("application/cloudevents+json"), b"[1]").unwrap();
    assert_eq!(ev.data(), Some(&json!([1])));
    assert!(!ev.attributes.contains_key("ignored"));
}

#[test]
fn binary_percent_decoding() {
    let mut headers = BASE.to_vec();
    headers[2] = ("ce-source", "%2Fmy%20source%e2%82%ac");
    headers.push(("ce-note", "100%"));
    headers.push(("ce-bad", "%zz%4"));
    let ev = binary(&headers, None, b"").unwrap();
    assert_eq!(ev.source, "/my source€");
    // Invalid sequences are kept literally (Kafka headers are not percent-encoded).
    assert_eq!(ev.attributes["note"], "100%");
    assert_eq!(ev.attributes["bad"], "%zz%4");
}

#[test]
fn binary_values_must_be_utf8() {
    let mut headers: Vec<(&str, &[u8])> = BASE.iter().map(|(k, v)| (*k, v.as_bytes())).collect();
    headers.push(("ce-x", b"\xff"));
    let err = parse_binary("ce-", headers.clone(), None, b"").unwrap_err();
    assert!(attr_err("x")(&err));
    headers.pop();
    headers.push(("ce-y", b"%ff"));
    assert!(attr_err("y")(
        &parse_binary("ce-", headers, None, b"").unwrap_err()
    ));
}

#[test]
fn binary_text_body() {
    let ev = binary(&BASE, Some("text/plain"), "héllo".as_bytes()).unwrap();
    assert_eq!(ev.data(), Some(&json!("héllo")));
    // No content type, not JSON, but UTF-8: text.
    let ev = binary(&BASE, None, b"hello").unwrap();
    assert_eq!(ev.data(), Some(&json!("hello")));
    assert!(!ev.attributes.contains_key("datacontenttype"));
    // No content type and JSON.
    let ev = binary(&BASE, None, b"42").unwrap();
    assert_eq!(ev.data(), Some(&json!(42)));
}

#[test]
fn binary_binary_body() {
    let ev = binary(&BASE, Some("application/octet-stream"), b"hi").unwrap();
    assert_eq!(ev.attributes["data_base64"], "aGk=");
    assert!(!ev.attributes.contains_key("data"));
    let ev = binary(&BASE, Some("image/png"), b"\x89PNG\xff").unwrap();
    assert_eq!(ev.attributes["data_base64"], "iVBOR/8=");
    let ev = binary(&BASE, None, b"\xff").unwrap();
    assert_eq!(ev.attributes["data_base64"], "/w==");
}

#[test]
fn binary_empty_body_has_no_data() {
    let ev = binary(&BASE, Some("application/json"), b"").unwrap();
    assert!(!ev.attributes.contains_key("data"));
    assert!(!ev.attributes.contains_key("data_base64"));
}

#[test]
fn binary_json_content_type_with_invalid_body() {
    let err = binary(&BASE, Some("application/vnd.x+json"), b"{").unwrap_err();
    assert!(attr_err("data")(&err));
}

#[test]
fn binary_older_versions() {
    let headers = [
        ("ce-specversion", "0.2"),
        ("ce-id", "i"),
        ("ce-source", "s"),
        ("ce-type", "t"),
    ];
    let ev = binary(&headers, Some("application/octet-stream"), b"hi").unwrap();
    assert_eq!(ev.specversion, SpecVersion::V02);
    assert_eq!(ev.attributes["contenttype"], "application/octet-stream");
    assert_eq!(ev.attributes["data"], "aGk=");

    let headers = [
        ("ce-specversion", "0.3"),
        ("ce-id", "i"),
        ("ce-source", "s"),
        ("ce-type", "t"),
    ];
    let ev = binary(&headers, Some("application/octet-stream"), b"hi").unwrap();
    assert_eq!(ev.specversion, SpecVersion::V10);
    assert_eq!(ev.attributes["datacontentencoding"], "base64");
    assert_eq!(ev.attributes["data"], "aGk=");
}

#[test]
fn binary_errors() {
    assert_eq!(
        binary(&BASE[1..], None, b"").unwrap_err(),
        EventError::MissingAttribute("specversion")
    );
    let mut headers = BASE.to_vec();
    headers[0] = ("ce-specversion", "0.1");
    assert_eq!(
        binary(&headers, None, b"").unwrap_err(),
        EventError::UnsupportedVersion("0.1".into())
    );
    assert_eq!(
        binary(&BASE[..3], None, b"").unwrap_err(),
        EventError::MissingAttribute("type")
    );
    let mut headers = BASE.to_vec();
    headers.push(("ce-", "x"));
    assert!(attr_err("ce-")(&binary(&headers, None, b"").unwrap_err()));
    let mut headers = BASE.to_vec();
    headers.push(("ce-data", "x"));
    assert!(attr_err("data")(&binary(&headers, None, b"").unwrap_err()));
    let mut headers = BASE.to_vec();
    headers.push(("CE-ID", "j"));
    assert!(attr_err("id")(&binary(&headers, None, b"").unwrap_err()));
    let mut headers = BASE.to_vec();
    headers.push(("ce-my_ext", "x"));
    assert!(attr_err("my_ext")(
        &binary(&headers, None, b"").unwrap_err()
    ));
}

#[test]
fn binary_multibyte_header_name_does_not_panic() {
    let headers: Vec<(&str, &[u8])> = vec![("cé-x", b"1"), ("é", b"1")];
    assert_eq!(
        parse_binary("ce-", headers, None, b"").unwrap_err(),
        EventError::MissingAttribute("specversion")
    );
}

// === gateway events ===

#[test]
fn gateway_event_shape() {
    let ev = gateway_event(
        "rig.connection.create",
        "abc",
        "2024-01-01T00:00:00Z",
        json!({"connection_token":"t"}),
    );
    assert_eq!(ev.source, "rig");
    assert_eq!(
        std::str::from_utf8(&ev.to_json()).unwrap(),
        r#"{"specversion":"1.0","id":"abc","source":"rig","type":"rig.connection.create","time":"2024-01-01T00:00:00Z","data":{"connection_token":"t"}}"#
    );
    // It is itself a valid event.
    assert_eq!(parse_structured(&ev.to_json()).unwrap(), ev);
}

proptest::proptest! {
    #[test]
    fn structured_never_panics(body in proptest::collection::vec(proptest::num::u8::ANY, 0..256)) {
        let _ = parse_structured(&body);
        let _ = parse_batch(&body);
    }

    #[test]
    fn binary_never_panics(
        headers in proptest::collection::vec(("(?i)(ce-)?[a-z%-]{0,6}", "[ -~%]{0,8}"), 0..8),
        body in proptest::collection::vec(proptest::num::u8::ANY, 0..32),
    ) {
        let hs: Vec<(&str, &[u8])> = headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect();
        let _ = parse_binary("ce-", hs, None, &body);
    }
}
