//! Property tests: the inbound decoder never panics, and valid envelopes round-trip.

use proptest::prelude::*;
use runware_ws::protocol::{SharedStr, decode_frame};
use serde_json::{Value, json};

#[path = "support/arb_json.rs"]
mod arb;

/// Arbitrary JSON in the words of Runware's envelopes and errors.
fn arb_json() -> impl Strategy<Value = Value> {
    const WORDS: &[&str] =
        &["taskUUID", "imageUUID", "data", "errors", "error", "11111111-1111-4111-8111-111111111111"];
    const KEYS: &[&str] = &["data", "errors", "error", "taskUUID", "seed", "status", "code", "parameter"];
    arb::arb_json(WORDS, KEYS, 5, 64)
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
