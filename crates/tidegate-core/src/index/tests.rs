use super::*;
use proptest::prelude::*;
use serde_json::json;

const CONFIG: &str = r#"{
    "a": {
        "f0": {"stable_field_index": 0, "event": {"json_pointer": "/data/f0"}},
        "f1": {"stable_field_index": 1, "event": {"json_pointer": "/data/f1"}},
        "f2": {"stable_field_index": 2, "event": {"json_pointer": "/data/n/f2"}},
        "f3": {"stable_field_index": 3, "jwt": {"json_pointer": "/sub"}}
    },
    "b": {
        "f0": {"stable_field_index": 5, "event": {"json_pointer": "/data/f0"}},
        "f1": {"stable_field_index": 1, "event": {"json_pointer": "/f1"}}
    },
    "c": {}
}"#;

fn extractors() -> Extractors {
    Extractors::parse(CONFIG).unwrap()
}

fn sub(event_type: &str, one_of: &[&[(&str, Value)]]) -> Subscription {
    Subscription {
        event_type: event_type.into(),
        one_of: one_of
            .iter()
            .map(|c| {
                let mut pairs: Vec<_> = c
                    .iter()
                    .map(|(f, v)| (f.to_string(), value_key(v)))
                    .collect();
                pairs.sort();
                Constraint(pairs)
            })
            .collect(),
    }
}

fn matches(index: &SubscriptionIndex<u32>, event_type: &str, event: &Value) -> Vec<u32> {
    let mut out = Vec::new();
    index.matching(event_type, event, &extractors(), &mut out);
    out
}

#[test]
fn unconstrained_and_constrained() {
    let mut index = SubscriptionIndex::new();
    index.set(1, &[sub("a", &[])]);
    index.set(2, &[sub("a", &[&[("f0", json!("x"))]])]);
    index.set(
        3,
        &[sub(
            "a",
            &[
                &[("f0", json!("x")), ("f1", json!(1))],
                &[("f2", json!(true))],
            ],
        )],
    );
    index.set(4, &[sub("b", &[])]);
    index.check_invariants();
    assert_eq!(index.subscription_count(), 4);
    assert!(index.has_type("a") && index.has_type("b") && !index.has_type("c"));

    assert_eq!(matches(&index, "a", &json!({"data": {}})), [1]);
    assert_eq!(matches(&index, "a", &json!({"data": {"f0": "x"}})), [1, 2]);
    assert_eq!(
        matches(&index, "a", &json!({"data": {"f0": "x", "f1": 1}})),
        [1, 2, 3]
    );
    assert_eq!(
        matches(
            &index,
            "a",
            &json!({"data": {"f0": "y", "f1": 1, "n": {"f2": true}}})
        ),
        [1, 3]
    );
    // Exact match: "1" is not 1.
    assert_eq!(
        matches(&index, "a", &json!({"data": {"f0": "x", "f1": "1"}})),
        [1, 2]
    );
    assert_eq!(matches(&index, "b", &json!({})), [4]);
    assert!(matches(&index, "c", &json!({})).is_empty());
}

#[test]
fn key_matching_twice_is_reported_once_and_out_is_appended() {
    let mut index = SubscriptionIndex::new();
    index.set(
        7,
        &[
            sub("a", &[&[("f0", json!(1))], &[("f1", json!(1))]]),
            sub("a", &[&[("f0", json!(1)), ("f1", json!(1))]]),
        ],
    );
    index.set(3, &[sub("a", &[&[("f1", json!(1))]])]);
    let mut out = vec![99, 0];
    index.matching(
        "a",
        &json!({"data": {"f0": 1, "f1": 1}}),
        &extractors(),
        &mut out,
    );
    assert_eq!(out, [99, 0, 3, 7]);
}

#[test]
fn set_replaces_and_remove_cleans_up() {
    let mut index = SubscriptionIndex::new();
    index.set(1, &[sub("a", &[&[("f0", json!(1))]]), sub("b", &[])]);
    index.set(2, &[sub("a", &[&[("f0", json!(1))]])]);
    assert_eq!(index.subscription_count(), 3);
    index.set(1, &[sub("b", &[&[("f1", json!(2))]])]);
    index.check_invariants();
    assert_eq!(index.subscription_count(), 2);
    assert_eq!(matches(&index, "a", &json!({"data": {"f0": 1}})), [2]);
    assert!(matches(&index, "b", &json!({"f1": 3})).is_empty());
    assert_eq!(matches(&index, "b", &json!({"f1": 2})), [1]);

    index.remove(2);
    index.remove(2);
    assert!(!index.has_type("a"));
    index.set(1, &[]);
    index.check_invariants();
    assert!(index.is_empty());
    assert!(index.types.is_empty());
    assert_eq!(index.subscription_count(), 0);
}

#[test]
fn duplicates_count_once() {
    let mut index = SubscriptionIndex::new();
    let s = sub("a", &[&[("f0", json!(1))]]);
    index.set(1, &[s.clone(), s]);
    assert_eq!(index.subscription_count(), 1);
    assert_eq!(index.key_count(), 1);
    assert!(index.contains_key(1));
}

#[test]
fn empty_constraint_matches_every_event_of_the_type() {
    // `parse` never produces one, but the index must agree with the semantics anyway.
    let mut index = SubscriptionIndex::new();
    let s = Subscription {
        event_type: "a".into(),
        one_of: vec![
            Constraint(vec![("f0".into(), "1".into())]),
            Constraint(vec![]),
        ],
    };
    index.set(1, std::slice::from_ref(&s));
    let ev = json!({"data": {}});
    assert!(naive_matches(&[s], "a", &ev, &extractors()));
    assert_eq!(matches(&index, "a", &ev), [1]);
}

#[test]
fn fields_without_event_pointer_or_undeclared_never_match() {
    let mut index = SubscriptionIndex::new();
    index.set(1, &[sub("a", &[&[("f3", json!(1))]])]);
    index.set(2, &[sub("a", &[&[("zz", json!(1))]])]);
    index.set(3, &[sub("d", &[&[("f0", json!(1))]])]);
    assert!(matches(&index, "a", &json!({"sub": 1, "zz": 1, "data": {"f0": 1}})).is_empty());
    assert!(matches(&index, "d", &json!({"data": {"f0": 1}})).is_empty());
    assert!(index.has_type("d"));
}

#[test]
fn object_values_match_regardless_of_key_order() {
    let mut index = SubscriptionIndex::new();
    index.set(1, &[sub("a", &[&[("f0", json!({"x": 1, "y": 2}))]])]);
    let ev: Value = serde_json::from_str(r#"{"data":{"f0":{"y":2,"x":1}}}"#).unwrap();
    assert_eq!(matches(&index, "a", &ev), [1]);
}

// === property tests against the naive matcher ===

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(null)),
        Just(json!(true)),
        Just(json!(0)),
        Just(json!(1)),
        Just(json!(1.0)),
        Just(json!("1")),
        Just(json!("x")),
        Just(json!([1])),
        Just(json!({"k": 1})),
    ]
}

fn constraint() -> impl Strategy<Value = Constraint> {
    // Mostly non-empty; f3 has no event pointer and f4 is undeclared.
    proptest::collection::btree_map(prop_oneof!["f0", "f1", "f2", "f3", "f4"], value(), 0..4)
        .prop_map(|m| Constraint(m.into_iter().map(|(f, v)| (f, value_key(&v))).collect()))
}

fn subscription() -> impl Strategy<Value = Subscription> {
    (
        prop_oneof![Just("a"), Just("a"), Just("b"), Just("c"), Just("d")],
        proptest::collection::vec(constraint(), 0..4),
    )
        .prop_map(|(t, one_of)| Subscription {
            event_type: t.into(),
            one_of,
        })
}

fn event() -> impl Strategy<Value = (String, Value)> {
    let field = || proptest::option::of(value());
    (
        prop_oneof![Just("a"), Just("b"), Just("c"), Just("d")],
        field(),
        field(),
        field(),
        field(),
    )
        .prop_map(|(t, f0, f1, f2, top)| {
            let mut data = serde_json::Map::new();
            if let Some(v) = f0 {
                data.insert("f0".into(), v);
            }
            if let Some(v) = f1.clone() {
                data.insert("f1".into(), v);
            }
            if let Some(v) = f2 {
                data.insert("n".into(), json!({ "f2": v }));
            }
            let mut ev = json!({"type": t, "data": data, "sub": 1});
            if let Some(v) = top {
                ev["f1"] = v;
            }
            (t.to_string(), ev)
        })
}

#[derive(Debug, Clone)]
enum Op {
    Set(u32, Vec<Subscription>),
    Remove(u32),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0..6u32, proptest::collection::vec(subscription(), 0..4)).prop_map(|(k, s)| Op::Set(k, s)),
        1 => (0..6u32).prop_map(Op::Remove),
    ]
}

fn check_against_model(
    index: &SubscriptionIndex<u32>,
    model: &BTreeMap<u32, Vec<Subscription>>,
    events: &[(String, Value)],
    extractors: &Extractors,
) -> Result<(), TestCaseError> {
    index.check_invariants();
    let distinct: usize = model
        .values()
        .map(|subs| subs.iter().collect::<HashSet<_>>().len())
        .sum();
    prop_assert_eq!(index.subscription_count(), distinct);
    for (t, ev) in events {
        let expected: Vec<u32> = model
            .iter()
            .filter(|(_, subs)| naive_matches(subs, t, ev, extractors))
            .map(|(k, _)| *k)
            .collect();
        let mut got = Vec::new();
        index.matching(t, ev, extractors, &mut got);
        prop_assert_eq!(&got, &expected, "event {} {}", t, ev);
        let any_subscribed = model
            .values()
            .any(|subs| subs.iter().any(|s| s.event_type == *t));
        prop_assert_eq!(index.has_type(t), any_subscribed);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn index_agrees_with_naive_matcher(
        ops in proptest::collection::vec(op(), 1..24),
        events in proptest::collection::vec(event(), 1..10),
    ) {
        let extractors = extractors();
        let mut index = SubscriptionIndex::new();
        let mut model: BTreeMap<u32, Vec<Subscription>> = BTreeMap::new();
        for op in ops {
            match op {
                Op::Set(k, subs) => {
                    index.set(k, &subs);
                    if subs.is_empty() { model.remove(&k); } else { model.insert(k, subs); }
                }
                Op::Remove(k) => {
                    index.remove(k);
                    model.remove(&k);
                }
            }
            check_against_model(&index, &model, &events, &extractors)?;
        }
        // Removing everyone leaves nothing behind.
        for k in 0..6 {
            index.remove(k);
        }
        index.check_invariants();
        prop_assert!(index.types.is_empty());
        prop_assert_eq!(index.subscription_count(), 0);
    }
}
