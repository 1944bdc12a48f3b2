use super::*;
use proptest::prelude::*;
use serde_json::json;

fn extractors() -> Extractors {
    Extractors::parse(
        r#"{"greeting":{
              "name":{"stable_field_index":0,"event":{"json_pointer":"/data/name"}},
              "lang":{"stable_field_index":1,"event":{"json_pointer":"/data/lang"}}}}"#,
    )
    .unwrap()
}

const LIMITS: Limits = Limits {
    max_subscriptions: 4,
    max_constraints: 3,
};

fn parse_v(v: Value) -> Result<Vec<Subscription>, SubscriptionError> {
    parse(v.to_string().as_bytes(), &extractors(), LIMITS)
}

fn c(pairs: &[(&str, &str)]) -> Constraint {
    Constraint(
        pairs
            .iter()
            .map(|(f, v)| (f.to_string(), v.to_string()))
            .collect(),
    )
}

fn reason(r: Result<Vec<Subscription>, SubscriptionError>) -> String {
    match r {
        Err(SubscriptionError::Invalid { reason, .. }) => reason,
        other => panic!("{other:?}"),
    }
}

#[test]
fn rig_put_body() {
    let subs = parse_v(json!({"subscriptions":[{"eventType":"greeting","oneOf":[{"name":"john"},{"name":"frank"}]}]}))
        .unwrap();
    assert_eq!(
        subs,
        vec![Subscription {
            event_type: "greeting".into(),
            one_of: vec![c(&[("name", "\"john\"")]), c(&[("name", "\"frank\"")])],
        }]
    );
}

#[test]
fn plain_array_and_snake_case() {
    let subs = parse_v(json!([
        {"event_type":"greeting","one_of":[{"name":"john","lang":"en"}]},
        {"eventType":"other"},
        {"eventType":"other2","oneOf":[]},
        {"eventType":"other3","oneOf":null},
    ]))
    .unwrap();
    assert_eq!(
        subs[0].one_of,
        vec![c(&[("lang", "\"en\""), ("name", "\"john\"")])]
    );
    assert!(subs[1..].iter().all(|s| s.one_of.is_empty()));
    assert_eq!(subs.len(), 4);
}

#[test]
fn values_keep_their_json_type() {
    let subs = parse_v(json!([{"eventType":"greeting","oneOf":[{"name":1},{"name":"1"},{"name":{"b":1,"a":[true,null]}}]}]))
        .unwrap();
    assert_eq!(
        subs[0].one_of,
        vec![
            c(&[("name", "1")]),
            c(&[("name", "\"1\"")]),
            c(&[("name", r#"{"a":[true,null],"b":1}"#)])
        ]
    );
}

#[test]
fn duplicates_are_dropped() {
    let subs = parse_v(json!([
        {"eventType":"greeting","oneOf":[{"name":"a"},{"name":"a"}]},
        {"eventType":"greeting","oneOf":[{"name":"a"}]},
        {"eventType":"x"},
    ]))
    .unwrap();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[0].one_of.len(), 1);
}

#[test]
fn errors() {
    assert!(matches!(
        parse(b"[", &extractors(), LIMITS),
        Err(SubscriptionError::InvalidJson(_))
    ));
    for bad in [
        json!(1),
        json!({}),
        json!({"subscriptions": {}}),
        json!("x"),
    ] {
        assert_eq!(parse_v(bad), Err(SubscriptionError::NotAList));
    }
    assert!(reason(parse_v(json!([1]))).contains("must be an object"));
    assert!(reason(parse_v(json!([{}]))).contains("`eventType` is missing"));
    assert!(reason(parse_v(json!([{"eventType": ""}]))).contains("must not be empty"));
    assert!(reason(parse_v(json!([{"eventType": 1}]))).contains("must be a string"));
    assert!(reason(parse_v(json!([{"eventType": "a", "event_type": "a"}]))).contains("both"));
    assert!(
        reason(parse_v(json!([{"eventType": "a", "oneof": []}]))).contains("unknown key `oneof`")
    );
    assert!(reason(parse_v(json!([{"eventType": "a", "oneOf": {}}]))).contains("must be an array"));
    assert!(
        reason(parse_v(json!([{"eventType": "greeting", "oneOf": [1]}])))
            .contains("`oneOf[0]` must be an object")
    );
    assert!(reason(parse_v(
        json!([{"eventType": "greeting", "oneOf": [{"name":"a"},{}]}])
    ))
    .contains("`oneOf[1]` is empty"));
    assert_eq!(
        parse_v(
            json!([{"eventType":"x"}, {"eventType": "greeting", "oneOf": [{"name":"a","age":3}]}])
        ),
        Err(SubscriptionError::UndeclaredField {
            index: 1,
            event_type: "greeting".into(),
            field: "age".into()
        })
    );
    assert_eq!(
        parse_v(json!([{"eventType": "undeclared", "oneOf": [{"name":"a"}]}])),
        Err(SubscriptionError::UndeclaredField {
            index: 0,
            event_type: "undeclared".into(),
            field: "name".into()
        })
    );
    assert_eq!(
        parse_v(
            json!([{"eventType":"a"},{"eventType":"a"},{"eventType":"a"},{"eventType":"a"},{"eventType":"a"}])
        ),
        Err(SubscriptionError::TooMany(5, 4))
    );
    assert_eq!(
        parse_v(
            json!([{"eventType":"greeting","oneOf":[{"name":1},{"name":2},{"name":3},{"name":4}]}])
        ),
        Err(SubscriptionError::TooManyConstraints(0, 4, 3))
    );
}

#[test]
fn error_messages_name_the_subscription() {
    let err = parse_v(json!([{"eventType":"x"}, {}])).unwrap_err();
    assert_eq!(err.to_string(), "subscription 1: `eventType` is missing");
}

#[test]
fn to_json_as_rig_renders_it() {
    let sub = Subscription {
        event_type: "greeting".into(),
        one_of: vec![
            c(&[("lang", "\"en\""), ("name", "1")]),
            c(&[("name", "not json")]),
        ],
    };
    assert_eq!(
        sub.to_json(),
        json!({"eventType":"greeting","oneOf":[{"lang":"en","name":1},{"name":"not json"}]})
    );
    assert_eq!(
        Subscription::all("x").to_json().to_string(),
        r#"{"eventType":"x","oneOf":[]}"#
    );
}

#[test]
fn value_key_is_canonical() {
    assert_eq!(value_key(&json!("a")), "\"a\"");
    assert_eq!(value_key(&json!(1)), "1");
    assert_eq!(value_key(&json!(1.0)), "1.0");
    assert_eq!(
        value_key(&json!([{"b":{"d":1,"c":2},"a":0}])),
        r#"[{"a":0,"b":{"c":2,"d":1}}]"#
    );
    let a: Value = serde_json::from_str(r#"{"x":1,"y":2}"#).unwrap();
    let b: Value = serde_json::from_str(r#"{"y":2,"x":1}"#).unwrap();
    assert_eq!(value_key(&a), value_key(&b));
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i32>().prop_map(Value::from),
        "[a-z]{0,3}".prop_map(Value::from),
    ];
    leaf.prop_recursive(2, 8, 3, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..3).prop_map(Value::from),
            proptest::collection::btree_map("[a-z]{1,2}", inner, 0..3)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #[test]
    fn parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let _ = parse(&bytes, &extractors(), LIMITS);
    }

    #[test]
    fn parse_never_panics_on_json(v in json_value()) {
        let _ = parse_v(json!([v.clone()]));
        let _ = parse_v(json!([{"eventType": "greeting", "oneOf": [{"name": v.clone()}, v]}]));
    }

    #[test]
    fn to_json_round_trips(values in proptest::collection::vec((json_value(), proptest::option::of(json_value())), 0..3)) {
        let one_of: Vec<Value> = values
            .into_iter()
            .map(|(name, lang)| {
                let mut o = Map::new();
                o.insert("name".into(), name);
                if let Some(lang) = lang { o.insert("lang".into(), lang); }
                Value::Object(o)
            })
            .collect();
        let subs = parse_v(json!([{"eventType":"greeting","oneOf": one_of}])).unwrap();
        let rendered = Value::Array(subs.iter().map(Subscription::to_json).collect());
        prop_assert_eq!(parse_v(rendered).unwrap(), subs);
    }
}
