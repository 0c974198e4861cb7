//! Property tests: the inbound decoder never panics, and valid envelopes round-trip.

use proptest::prelude::*;
use runware_ws::protocol::{SharedStr, decode_frame};
use serde_json::{Value, json};

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        (-1e300f64..1e300).prop_map(|f| json!(f)),
        ".{0,20}".prop_map(Value::String),
        prop_oneof![
            Just("taskUUID"),
            Just("imageUUID"),
            Just("data"),
            Just("errors"),
            Just("error"),
            Just("11111111-1111-4111-8111-111111111111")
        ]
        .prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(5, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec(
                (
                    prop_oneof![
                        Just("data".to_string()),
                        Just("errors".to_string()),
                        Just("error".to_string()),
                        Just("taskUUID".to_string()),
                        Just("seed".to_string()),
                        Just("status".to_string()),
                        Just("code".to_string()),
                        Just("parameter".to_string()),
                        "[a-zA-Z]{1,8}"
                    ],
                    inner
                ),
                0..6
            )
            .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn arb_item() -> impl Strategy<Value = Value> {
    (
        any::<u128>(),
        proptest::option::of(any::<u128>()),
        proptest::option::of("[A-Za-z0-9+/]{0,64}"),
        proptest::option::of(0u64..=i64::MAX as u64),
        proptest::option::of(any::<bool>()),
        proptest::option::of(0u32..100_000),
        proptest::option::of(prop_oneof![Just("processing"), Just("success"), Just("error")]),
        proptest::option::of("[a-z]{1,6}"),
    )
        .prop_map(|(task, image, b64, seed, nsfw, cost_cents, status, extra)| {
            let mut m = serde_json::Map::new();
            m.insert("taskType".into(), json!("imageInference"));
            m.insert("taskUUID".into(), json!(uuid::Uuid::from_u128(task).to_string()));
            if let Some(i) = image {
                m.insert("imageUUID".into(), json!(uuid::Uuid::from_u128(i).to_string()));
            }
            if let Some(b) = b64 {
                m.insert("imageBase64Data".into(), json!(b));
            }
            if let Some(s) = seed {
                m.insert("seed".into(), json!(s));
            }
            if let Some(n) = nsfw {
                m.insert("NSFWContent".into(), json!(n));
            }
            if let Some(c) = cost_cents {
                m.insert("cost".into(), json!(c as f64 / 100.0));
            }
            if let Some(s) = status {
                m.insert("status".into(), json!(s));
            }
            if let Some(e) = extra {
                m.insert(format!("x{e}"), json!({"nested": [e]}));
            }
            Value::Object(m)
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn never_panics_on_arbitrary_bytes(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Ok(s) = String::from_utf8(bytes) {
            let _ = decode_frame(&SharedStr::from(s));
        }
    }

    #[test]
    fn never_panics_on_arbitrary_json(v in arb_json()) {
        let _ = decode_frame(&SharedStr::from(v.to_string()));
        let _ = decode_frame(&SharedStr::from(json!({"data": [v.clone()], "errors": [v.clone()]}).to_string()));
        let _ = decode_frame(&SharedStr::from(json!({"data": v.clone(), "error": v}).to_string()));
    }

    #[test]
    fn valid_envelopes_round_trip(items in prop::collection::vec(arb_item(), 0..8)) {
        let envelope = json!({ "data": items });
        let f = decode_frame(&SharedStr::from(envelope.to_string())).unwrap();
        prop_assert!(f.malformed.is_empty());
        prop_assert!(f.errors.is_empty());
        let back = serde_json::to_value(&f.items).unwrap();
        prop_assert_eq!(&back, &envelope["data"]);
    }
}
