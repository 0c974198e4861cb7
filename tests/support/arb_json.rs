//! Arbitrary JSON for property tests, biased towards the words of a protocol so
//! that generated values look like (broken) frames rather than noise. Included
//! with `#[path]` by the tests that need it.

use proptest::prelude::*;
use serde_json::{Value, json};

/// Any JSON value up to `depth` levels and about `nodes` nodes: scalars of every
/// kind (including extreme numbers), strings that are often one of `words`, and
/// objects whose keys are often one of `keys`.
pub fn arb_json(
    words: &'static [&'static str],
    keys: &'static [&'static str],
    depth: u32,
    nodes: u32,
) -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        Just(json!(1e300)),
        ".{0,20}".prop_map(Value::String),
        prop::sample::select(words).prop_map(|s| Value::String(s.to_string())),
    ];
    leaf.prop_recursive(depth, nodes, 8, move |inner| {
        let key = prop_oneof![prop::sample::select(keys).prop_map(str::to_string), "[a-zA-Z]{1,8}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..7).prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}
