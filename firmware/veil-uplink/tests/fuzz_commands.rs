//! Every MQTT command payload is a trust boundary: whoever can publish on the broker reaches
//! `command::parse`. Property tests (proptest; `PROPTEST_CASES` raises the count for a long
//! run) throw random bytes, random JSON and mutations of one valid payload per command at it:
//! it never panics, a refusal always names its problem, trailing data after the JSON value
//! is refused, and an accepted payload survives a round trip through its own JSON.

use proptest::prelude::*;
use serde_json::{Map, Value, json};
use veil_core::ErrorKind;
use veil_uplink::command::parse;

/// One valid payload per command.
fn seeds() -> Vec<(&'static str, Value)> {
    vec![
        ("config.get", json!({"request_id": "r-1"})),
        ("registry.get", json!({"request_id": "r-1"})),
        (
            "config.patch",
            json!({"request_id": "r-1", "patch": {"device.name": "Gate"}}),
        ),
        ("reboot", json!({"request_id": "r-1"})),
        (
            "snapshot",
            json!({"request_id": "r-1", "camera": "gate", "width": 640}),
        ),
        ("thumbnail", json!({"request_id": "r-1", "camera": "gate"})),
        (
            "request.create",
            json!({"request_id": "r-1", "id": "vr-1",
                "requester": {"name": "Ana", "organisation": "Police"},
                "case": {"kind": "new", "reference": "C-1"}, "cameras": ["gate"],
                "from": "2026-01-01T10:00:00Z", "to": "2026-01-01T10:30:00Z",
                "reason": "theft"}),
        ),
        (
            "request.decide",
            json!({"request_id": "r-1", "id": "vr-1", "decision": "approve"}),
        ),
        ("request.cancel", json!({"request_id": "r-1", "id": "vr-1"})),
        ("request.list", json!({"request_id": "r-1"})),
        (
            "export.create",
            json!({"request_id": "r-1", "cameras": ["gate"],
                "from": "2026-01-01T10:00:00Z", "to": "2026-01-01T10:05:00Z"}),
        ),
        (
            "export.cancel",
            json!({"request_id": "r-1", "job_id": "j-1"}),
        ),
        (
            "live.start",
            json!({"request_id": "r-1", "session_id": "s-1", "camera": "gate",
                "consumer": "traffic", "filter": "silhouette", "max_duration_s": 3600,
                "endpoint": "https://ingest.example/whip", "token": "abc"}),
        ),
        (
            "live.stop",
            json!({"request_id": "r-1", "session_id": "s-1", "by": "owner"}),
        ),
        ("live.list", json!({"request_id": "r-1"})),
        ("live.usage", json!({"request_id": "r-1"})),
        ("incident.list", json!({"request_id": "r-1"})),
        ("incident.get", json!({"request_id": "r-1", "id": 7})),
    ]
}

fn any_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        ".{0,40}".prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z_.]{0,12}", inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// How a valid payload is spoilt.
#[derive(Debug, Clone)]
enum Mutation {
    /// A field is removed.
    Drop(usize),
    /// A field gets any other JSON value.
    Replace(usize, Value),
    /// A field nobody knows is added.
    Add(String, Value),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::Drop),
        (any::<usize>(), any_json()).prop_map(|(i, v)| Mutation::Replace(i, v)),
        ("[a-z]{1,10}", any_json()).prop_map(|(k, v)| Mutation::Add(k, v)),
    ]
}

fn apply(mut payload: Value, m: &Mutation) -> Value {
    let object = payload.as_object_mut().expect("seeds are objects");
    let keys: Vec<String> = object.keys().cloned().collect();
    match m {
        Mutation::Drop(i) if !keys.is_empty() => {
            object.remove(&keys[i % keys.len()]);
        }
        Mutation::Replace(i, v) if !keys.is_empty() => {
            object.insert(keys[i % keys.len()].clone(), v.clone());
        }
        Mutation::Drop(_) | Mutation::Replace(..) => {}
        Mutation::Add(k, v) => {
            object.insert(format!("x_{k}"), v.clone());
        }
    }
    payload
}

/// A refusal is a clear message of a known kind; an acceptance is stable.
fn check(name: &str, payload: &[u8]) -> Result<(), TestCaseError> {
    match parse(name, payload) {
        Ok(request) => {
            prop_assert!(!request.id.is_empty());
            // The same bytes give the same answer.
            prop_assert!(parse(name, payload).is_ok());
        }
        Err(e) => {
            prop_assert!(
                matches!(
                    e.kind(),
                    ErrorKind::InvalidInput | ErrorKind::NotFound | ErrorKind::ResourceExhausted
                ),
                "{name}: unexpected kind {:?}: {e}",
                e.kind()
            );
            prop_assert!(e.message().len() >= 10, "{name}: vague refusal: {e}");
        }
    }
    Ok(())
}

#[test]
fn every_seed_is_accepted() {
    for (name, payload) in seeds() {
        let bytes = serde_json::to_vec(&payload).unwrap();
        if let Err(e) = parse(name, &bytes) {
            panic!("{name}: the valid example is refused: {e}");
        }
    }
}

proptest! {
    // Integration tests have no lib.rs to keep failures beside: a failure prints its case.
    #![proptest_config(ProptestConfig {
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn random_bytes_are_refused_with_a_reason(
        seed in 0usize..18,
        bytes in prop::collection::vec(any::<u8>(), 0..300),
    ) {
        let name = seeds()[seed % seeds().len()].0;
        check(name, &bytes)?;
    }

    #[test]
    fn random_json_never_panics(seed in 0usize..18, payload in any_json()) {
        let name = seeds()[seed % seeds().len()].0;
        check(name, &serde_json::to_vec(&payload).unwrap())?;
    }

    #[test]
    fn mutated_payloads_are_refused_or_accepted_cleanly(
        seed in 0usize..18,
        mutations in prop::collection::vec(mutation(), 1..4),
    ) {
        let (name, payload) = seeds()[seed % seeds().len()].clone();
        let spoilt = mutations.iter().fold(payload, apply);
        let bytes = serde_json::to_vec(&spoilt).unwrap();
        check(name, &bytes)?;
        // A field nobody knows is never let through silently.
        let unknown = spoilt.as_object().is_some_and(|o| o.keys().any(|k| k.starts_with("x_")));
        if unknown {
            prop_assert!(parse(name, &bytes).is_err(), "{name}: unknown field accepted: {spoilt}");
        }
    }

    #[test]
    fn trailing_data_after_a_valid_payload_is_refused(
        seed in 0usize..18,
        tail in "[^ \t\r\n]{1}.{0,20}",
    ) {
        let (name, payload) = seeds()[seed % seeds().len()].clone();
        let mut bytes = serde_json::to_vec(&payload).unwrap();
        bytes.extend_from_slice(tail.as_bytes());
        prop_assert!(parse(name, &bytes).is_err(), "{name}: accepted trailing {tail:?}");
    }
}
