//! The inbound frame decoder: one server frame → typed items and errors, ready to
//! route by `taskUUID`.
//!
//! The fast path makes a single pass over the frame: each item's fields are
//! sliced out of the frame's buffer as they are met, so a multi-MiB base64 payload
//! is scanned once and never copied. Only a frame that does not fit the expected
//! shape takes the lenient path, which salvages every well-formed item and reports
//! the rest as [`MalformedItem`]s (with their `taskUUID` when it can be read).

use super::error::ApiError;
use super::result::{CowStr, ItemSeed, ResultItem};
use super::shared_str::SharedStr;
use serde::Deserialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use std::collections::BTreeMap;
use std::fmt;
use uuid::Uuid;

/// One decoded server frame.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Frame {
    /// The `data` items, in frame order.
    pub items: Vec<ResultItem>,
    /// The `errors` (and legacy `error`) entries, in frame order.
    pub errors: Vec<ApiError>,
    /// Entries that could not be decoded.
    pub malformed: Vec<MalformedItem>,
}

impl Frame {
    /// Scrubs `secret` out of every error of the frame (see [`ApiError::redact`]).
    pub fn redact(&mut self, secret: &str) {
        for e in &mut self.errors {
            e.redact(secret);
        }
        for item in &mut self.items {
            if let Some(e) = &mut item.error {
                e.redact(secret);
            }
        }
    }
}

/// An entry of a frame that is not a well-formed item or error.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MalformedItem {
    /// The task it names, when a `taskUUID` could be read.
    pub task_uuid: Option<Uuid>,
    /// What was wrong.
    pub reason: String,
}

/// Why a whole frame could not be decoded.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not JSON at all.
    #[error("frame is not valid JSON: {0}")]
    NotJson(String),
    /// JSON, but not an object envelope.
    #[error("frame is not a JSON object envelope (got {0})")]
    NotAnObject(&'static str),
}

/// Decodes one text frame. String fields of the result share `text`'s buffer.
pub fn decode_frame(text: &SharedStr) -> Result<Frame, DecodeError> {
    let mut de = serde_json::Deserializer::from_str(text.as_str());
    let fast = EnvelopeSeed { frame: text }.deserialize(&mut de).and_then(|f| de.end().map(|_| f));
    match fast {
        Ok(frame) => Ok(frame),
        Err(_) => decode_lenient(text),
    }
}

struct EnvelopeSeed<'f> {
    frame: &'f SharedStr,
}

impl<'de> DeserializeSeed<'de> for EnvelopeSeed<'_> {
    type Value = Frame;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Frame, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for EnvelopeSeed<'_> {
    type Value = Frame;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an envelope object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Frame, A::Error> {
        let mut frame = Frame::default();
        let mut legacy: Option<&'de RawValue> = None;
        let mut error_id: Option<i64> = None;
        let mut error_message: Option<String> = None;
        while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
            match key.as_ref() {
                "data" => frame.items = map.next_value_seed(ItemsSeed { frame: self.frame })?,
                "errors" => frame.errors.extend(map.next_value::<Option<Vec<ApiError>>>()?.unwrap_or_default()),
                "error" => legacy = Some(map.next_value()?),
                "errorId" => error_id = map.next_value()?,
                "errorMessage" => error_message = map.next_value()?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        if let Some(raw) = legacy {
            frame.errors.extend(legacy_errors(raw, error_id, error_message).map_err(de::Error::custom)?);
        }
        Ok(frame)
    }
}

/// The singular `error` key: an object, a list, or `true` with `errorId`/`errorMessage`.
fn legacy_errors(
    raw: &RawValue,
    error_id: Option<i64>,
    error_message: Option<String>,
) -> Result<Vec<ApiError>, serde_json::Error> {
    match raw.get().trim_start().as_bytes().first() {
        Some(b'{') => Ok(vec![serde_json::from_str(raw.get())?]),
        Some(b'[') => serde_json::from_str(raw.get()),
        _ => {
            let flag: serde_json::Value = serde_json::from_str(raw.get())?;
            if flag == serde_json::Value::Bool(false) {
                return Ok(Vec::new());
            }
            Ok(vec![ApiError {
                message: error_message.unwrap_or_else(|| "error".to_string()),
                error_id,
                ..ApiError::default()
            }])
        }
    }
}

struct ItemsSeed<'f> {
    frame: &'f SharedStr,
}

impl<'de> DeserializeSeed<'de> for ItemsSeed<'_> {
    type Value = Vec<ResultItem>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for ItemsSeed<'_> {
    type Value = Vec<ResultItem>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array of items")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        // serde_json gives no length; busy connections carry dozens of items per
        // frame, so start at 8 rather than regrowing (and moving items) from 1.
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(8));
        while let Some(item) = seq.next_element_seed(OneItem { frame: self.frame })? {
            items.push(item);
        }
        Ok(items)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(Vec::new())
    }
}

struct OneItem<'f> {
    frame: &'f SharedStr,
}

impl<'de> DeserializeSeed<'de> for OneItem<'_> {
    type Value = ResultItem;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<ResultItem, D::Error> {
        ItemSeed { frame: self.frame, strict: true }.deserialize_in(d)
    }
}

/// The lenient path: salvage what is well-formed, report the rest.
fn decode_lenient(text: &SharedStr) -> Result<Frame, DecodeError> {
    let top: &RawValue = serde_json::from_str(text.as_str()).map_err(|e| DecodeError::NotJson(e.to_string()))?;
    let envelope: BTreeMap<String, &RawValue> = match serde_json::from_str(top.get()) {
        Ok(m) => m,
        Err(_) => return Err(DecodeError::NotAnObject(json_kind(top.get()))),
    };
    let mut frame = Frame::default();
    if let Some(data) = envelope.get("data") {
        match serde_json::from_str::<Option<Vec<&RawValue>>>(data.get()) {
            Ok(list) => {
                for raw in list.unwrap_or_default() {
                    let mut de = serde_json::Deserializer::from_str(raw.get());
                    match (ItemSeed { frame: text, strict: false }).deserialize_in(&mut de) {
                        Ok(item) => frame.items.push(item),
                        Err(e) => frame.malformed.push(MalformedItem {
                            task_uuid: task_uuid_of(raw),
                            reason: format!("malformed data item: {e}"),
                        }),
                    }
                }
            }
            Err(_) => frame.malformed.push(MalformedItem {
                task_uuid: None,
                reason: format!("`data` is {}, not an array", json_kind(data.get())),
            }),
        }
    }
    fn push_errors(frame: &mut Frame, raws: Vec<&RawValue>) {
        for raw in raws {
            match serde_json::from_str::<ApiError>(raw.get()) {
                Ok(e) => frame.errors.push(e),
                Err(e) => frame.malformed.push(MalformedItem {
                    task_uuid: task_uuid_of(raw),
                    reason: format!("malformed error entry: {e}"),
                }),
            }
        }
    }
    for key in ["errors", "error"] {
        if let Some(raw) = envelope.get(key) {
            match raw.get().trim_start().as_bytes().first() {
                Some(b'[') => push_errors(&mut frame, serde_json::from_str(raw.get()).unwrap_or_default()),
                Some(b'{') => push_errors(&mut frame, vec![raw]),
                _ if key == "error" => {
                    let id = envelope.get("errorId").and_then(|r| serde_json::from_str(r.get()).ok());
                    let msg = envelope.get("errorMessage").and_then(|r| serde_json::from_str(r.get()).ok());
                    if let Ok(list) = legacy_errors(raw, id, msg) {
                        frame.errors.extend(list);
                    }
                }
                _ => {}
            }
        }
    }
    Ok(frame)
}

fn task_uuid_of(raw: &RawValue) -> Option<Uuid> {
    #[derive(Deserialize)]
    struct Head<'a> {
        #[serde(rename = "taskUUID", borrow, default)]
        task_uuid: Option<std::borrow::Cow<'a, str>>,
    }
    let head: Head<'_> = serde_json::from_str(raw.get()).ok()?;
    Uuid::parse_str(head.task_uuid?.as_ref()).ok()
}

fn json_kind(raw: &str) -> &'static str {
    match raw.trim_start().as_bytes().first() {
        Some(b'[') => "an array",
        Some(b'{') => "an object",
        Some(b'"') => "a string",
        Some(b't' | b'f') => "a boolean",
        Some(b'n') => "null",
        _ => "a number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A value for `key`: mostly the type the decoder expects, often not.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("\"0b3f6c6e-2a1d-4c5e-9f3a-7d6b5c4a3e21\"".to_string()),
            Just("\"0B3F6C6E2A1D4C5E9F3A7D6B5C4A3E21\"".to_string()),
            Just("\"not a uuid\"".to_string()),
            Just("\"esc\\\"aped\\n\"".to_string()),
            Just("\"\\u0030b3f6c6e-2a1d-4c5e-9f3a-7d6b5c4a3e21\"".to_string()),
            any::<u64>().prop_map(|n| n.to_string()),
            any::<i64>().prop_map(|n| n.to_string()),
            (-1e6f64..1e6).prop_map(|f| format!("{f:?}")),
            Just("1e400".to_string()),
            Just("true".to_string()),
            Just("false".to_string()),
            Just("null".to_string()),
            Just("{\"a\":[1,\"b\"]}".to_string()),
            Just("[]".to_string()),
            "[a-z ]{0,12}".prop_map(|s| format!("\"{s}\"")),
        ]
    }

    fn key() -> impl Strategy<Value = &'static str> {
        prop_oneof![
            Just("taskType"),
            Just("taskUUID"),
            Just("imageUUID"),
            Just("imageURL"),
            Just("imageBase64Data"),
            Just("seed"),
            Just("NSFWContent"),
            Just("cost"),
            Just("status"),
            Just("progress"),
            Just("pong"),
            Just("mediaUUID"),
            Just("other"),
        ]
    }

    proptest! {
        /// The one-pass decoder and the lenient one agree on every frame the fast
        /// path accepts, and the fast path falls back whenever a field has a type
        /// it does not expect.
        #[test]
        fn the_fast_path_decodes_as_the_lenient_one(
            items in prop::collection::vec(prop::collection::vec((key(), value()), 0..6), 0..4)
        ) {
            let data: Vec<String> = items
                .iter()
                .map(|fields| {
                    let body: Vec<String> = fields.iter().map(|(k, v)| format!("\"{k}\":{v}")).collect();
                    format!("{{{}}}", body.join(","))
                })
                .collect();
            let text = SharedStr::from(format!("{{\"data\":[{}]}}", data.join(",")));
            let fast = decode_frame(&text).expect("decodes");
            let lenient = decode_lenient(&text).expect("decodes");
            prop_assert_eq!(fast, lenient);
        }
    }
}
