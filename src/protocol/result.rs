//! Server → client result items, decoded without copying their payloads.

use super::error::ApiError;
use super::shared_str::SharedStr;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::fmt;
use uuid::Uuid;

/// `status` of a `getResponse` item.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    /// `processing` (older docs: `pending`).
    Processing,
    /// `success`
    Success,
    /// `error`
    Error,
    /// Any other value, kept as sent.
    Other(SharedStr),
}

impl TaskStatus {
    fn parse(s: &str, shared: SharedStr) -> TaskStatus {
        match s {
            "processing" | "pending" => TaskStatus::Processing,
            "success" => TaskStatus::Success,
            "error" | "failed" => TaskStatus::Error,
            _ => TaskStatus::Other(shared),
        }
    }
}

/// One item of a `data` array: an image result, an acknowledgement, a pong, an
/// authentication reply, a `getResponse` entry or any other task's result.
///
/// String fields share the inbound frame's buffer (no copies). Fields this type
/// does not model, or known fields with an unexpected JSON type, are kept verbatim
/// in [`ResultItem::extra`] and serialized back as they came.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ResultItem {
    /// `taskType`
    pub task_type: Option<SharedStr>,
    /// `taskUUID` (`None` when absent or not a UUID; the raw value is then in `extra`)
    pub task_uuid: Option<Uuid>,
    /// `imageUUID`
    pub image_uuid: Option<SharedStr>,
    /// `imageURL`
    pub image_url: Option<SharedStr>,
    /// `imageBase64Data`
    pub image_base64_data: Option<SharedStr>,
    /// `imageDataURI`
    pub image_data_uri: Option<SharedStr>,
    /// `seed`
    pub seed: Option<u64>,
    /// `NSFWContent`
    pub nsfw_content: Option<bool>,
    /// `cost` in USD
    pub cost: Option<f64>,
    /// `status` (getResponse items)
    pub status: Option<TaskStatus>,
    /// `progress` 0–100 (getResponse items)
    pub progress: Option<f64>,
    /// `error` of an item whose status is `error` (boxed: rare, and large)
    pub error: Option<Box<ApiError>>,
    /// `connectionSessionUUID` (authentication replies)
    pub connection_session_uuid: Option<SharedStr>,
    /// `pong` (ping replies)
    pub pong: Option<bool>,
    /// Every other field: (name, raw JSON value).
    pub extra: Vec<(SharedStr, SharedStr)>,
}

impl ResultItem {
    /// Decodes one item object. String fields borrow from `json`.
    pub fn decode(json: &SharedStr) -> Result<ResultItem, serde_json::Error> {
        let mut de = serde_json::Deserializer::from_str(json.as_str());
        let item = ItemSeed { frame: json, strict: false }.deserialize_in(&mut de)?;
        de.end()?;
        Ok(item)
    }

    /// The output of an image result: URL, base64 data or data URI, whichever is set.
    pub fn output(&self) -> Option<&SharedStr> {
        self.image_url.as_ref().or(self.image_base64_data.as_ref()).or(self.image_data_uri.as_ref())
    }

    /// The key that makes this item distinct among a task's results: `imageUUID`,
    /// else another `…UUID` string field (`mediaUUID`, `videoUUID`, …), else none.
    pub fn result_key(&self) -> Option<&str> {
        if let Some(u) = &self.image_uuid {
            return Some(u.as_str());
        }
        self.extra
            .iter()
            .filter(|(k, v)| k.ends_with("UUID") && v.starts_with('"') && !v.contains('\\'))
            .map(|(_, v)| v.trim_matches('"'))
            .next()
    }

    /// True when the item carries more than its task's identity and status: an
    /// output, a seed, a cost or any other field.
    pub fn has_payload(&self) -> bool {
        self.output().is_some()
            || self.image_uuid.is_some()
            || self.seed.is_some()
            || self.cost.is_some()
            || self.nsfw_content.is_some()
            || !self.extra.is_empty()
    }

    /// `key` (a string returned by [`ResultItem::result_key`]) as a shared string.
    pub fn share_key(&self, key: &str) -> SharedStr {
        match &self.image_uuid {
            Some(u) if u.as_str() == key => u.clone(),
            _ => SharedStr::from(key),
        }
    }

    /// An unmodelled field, parsed.
    pub fn get(&self, name: &str) -> Option<serde_json::Value> {
        let (_, raw) = self.extra.iter().find(|(k, _)| k == name)?;
        serde_json::from_str(raw).ok()
    }

    /// True when this is a `getResponse`-style item with `status: error`, or carries an `error`.
    pub fn is_error(&self) -> bool {
        matches!(self.status, Some(TaskStatus::Error)) || self.error.is_some()
    }
}

/// A `Cow<str>` that stays borrowed whenever the input allows it (serde's own
/// `Cow<str>` always copies).
pub(crate) struct CowStr<'a>(pub(crate) Cow<'a, str>);

impl<'de> Deserialize<'de> for CowStr<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = CowStr<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v.to_owned())))
            }
            fn visit_string<E: de::Error>(self, v: String) -> Result<Self::Value, E> {
                Ok(CowStr(Cow::Owned(v)))
            }
        }
        d.deserialize_str(V)
    }
}

/// Decodes an item, slicing strings out of `frame` (which the input must borrow from).
pub(crate) struct ItemSeed<'f> {
    pub(crate) frame: &'f SharedStr,
    /// The fast path: the string fields (`imageBase64Data`…) are read as strings in
    /// one pass, and a value of another type fails the item, so that the lenient
    /// decoder (`strict: false`) keeps it in `extra`. Lenient: every value is first
    /// read as raw JSON, then checked for escapes (one more pass over it).
    pub(crate) strict: bool,
}

/// The string field of `item` named `key`, if `key` names one.
fn str_field<'a>(item: &'a mut ResultItem, key: &str) -> Option<&'a mut Option<SharedStr>> {
    Some(match key {
        "taskType" => &mut item.task_type,
        "imageUUID" => &mut item.image_uuid,
        "imageURL" => &mut item.image_url,
        "imageBase64Data" => &mut item.image_base64_data,
        "imageDataURI" => &mut item.image_data_uri,
        "connectionSessionUUID" => &mut item.connection_session_uuid,
        _ => return None,
    })
}

impl<'f> ItemSeed<'f> {
    pub(crate) fn deserialize_in<'de, D: Deserializer<'de>>(self, d: D) -> Result<ResultItem, D::Error> {
        d.deserialize_map(self)
    }

    fn share(&self, s: Cow<'_, str>) -> SharedStr {
        match s {
            Cow::Borrowed(b) => self.frame.share(b),
            Cow::Owned(o) => SharedStr::from(o),
        }
    }
}

impl<'de, 'f> Visitor<'de> for ItemSeed<'f> {
    type Value = ResultItem;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a result item object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<ResultItem, A::Error> {
        let mut item = ResultItem::default();
        while let Some(CowStr(key)) = map.next_key::<CowStr<'de>>()? {
            if self.strict && str_field(&mut item, &key).is_some() {
                // One scan: serde_json borrows the string when it has no escapes.
                match map.next_value::<Option<CowStr<'de>>>()? {
                    Some(CowStr(s)) => {
                        let value = self.share(s);
                        if let Some(field) = str_field(&mut item, &key) {
                            *field = Some(value);
                        }
                    }
                    None => item.extra.push((self.share(key), SharedStr::from_static("null"))),
                }
                continue;
            }
            if self.strict {
                // One pass for the other fields the client reads on every result;
                // a value of another type fails the item (the lenient decoder then
                // keeps it in `extra`).
                match key.as_ref() {
                    "taskUUID" => {
                        let CowStr(s) = map.next_value()?;
                        let uuid = Uuid::parse_str(&s).map_err(|_| de::Error::custom("taskUUID is not a UUID"))?;
                        item.task_uuid = Some(uuid);
                        continue;
                    }
                    "seed" => {
                        item.seed = Some(map.next_value()?);
                        continue;
                    }
                    "NSFWContent" => {
                        item.nsfw_content = Some(map.next_value()?);
                        continue;
                    }
                    "cost" => {
                        item.cost = Some(map.next_value()?);
                        continue;
                    }
                    _ => {}
                }
            }
            let raw: &'de RawValue = map.next_value()?;
            let text = raw.get();
            // Typed parse of a known field; on a type mismatch the raw value is kept in extra.
            let kept = match key.as_ref() {
                "taskType" => as_str(text).map(|s| item.task_type = Some(self.share(s))),
                "taskUUID" => as_str(text).and_then(|s| Uuid::parse_str(&s).ok()).map(|u| item.task_uuid = Some(u)),
                "imageUUID" => as_str(text).map(|s| item.image_uuid = Some(self.share(s))),
                "imageURL" => as_str(text).map(|s| item.image_url = Some(self.share(s))),
                "imageBase64Data" => as_str(text).map(|s| item.image_base64_data = Some(self.share(s))),
                "imageDataURI" => as_str(text).map(|s| item.image_data_uri = Some(self.share(s))),
                "connectionSessionUUID" => as_str(text).map(|s| item.connection_session_uuid = Some(self.share(s))),
                "seed" => serde_json::from_str::<u64>(text).ok().map(|v| item.seed = Some(v)),
                "NSFWContent" => serde_json::from_str::<bool>(text).ok().map(|v| item.nsfw_content = Some(v)),
                "pong" => serde_json::from_str::<bool>(text).ok().map(|v| item.pong = Some(v)),
                "cost" => serde_json::from_str::<f64>(text).ok().map(|v| item.cost = Some(v)),
                "progress" => serde_json::from_str::<f64>(text).ok().map(|v| item.progress = Some(v)),
                "status" => as_str(text).map(|s| {
                    let shared = self.share(s);
                    item.status = Some(TaskStatus::parse(shared.as_str(), shared.clone()));
                }),
                "error" => serde_json::from_str::<ApiError>(text).ok().map(|e| item.error = Some(Box::new(e))),
                _ => None,
            };
            if kept.is_none() {
                item.extra.push((self.share(key), self.frame.share(text)));
            }
        }
        Ok(item)
    }
}

/// A JSON string literal's content, borrowed when it has no escapes.
fn as_str(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if !inner.contains('\\') {
        return Some(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
}

impl Serialize for ResultItem {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut m = serializer.serialize_map(None)?;
        if let Some(v) = &self.task_type {
            m.serialize_entry("taskType", v)?;
        }
        if let Some(v) = &self.task_uuid {
            m.serialize_entry("taskUUID", v)?;
        }
        if let Some(v) = &self.connection_session_uuid {
            m.serialize_entry("connectionSessionUUID", v)?;
        }
        if let Some(v) = &self.pong {
            m.serialize_entry("pong", v)?;
        }
        if let Some(v) = &self.image_uuid {
            m.serialize_entry("imageUUID", v)?;
        }
        if let Some(v) = &self.image_url {
            m.serialize_entry("imageURL", v)?;
        }
        if let Some(v) = &self.image_base64_data {
            m.serialize_entry("imageBase64Data", v)?;
        }
        if let Some(v) = &self.image_data_uri {
            m.serialize_entry("imageDataURI", v)?;
        }
        if let Some(v) = &self.seed {
            m.serialize_entry("seed", v)?;
        }
        if let Some(v) = &self.nsfw_content {
            m.serialize_entry("NSFWContent", v)?;
        }
        if let Some(v) = &self.cost {
            m.serialize_entry("cost", v)?;
        }
        if let Some(v) = &self.status {
            let s = match v {
                TaskStatus::Processing => "processing",
                TaskStatus::Success => "success",
                TaskStatus::Error => "error",
                TaskStatus::Other(s) => s.as_str(),
            };
            m.serialize_entry("status", s)?;
        }
        if let Some(v) = &self.progress {
            m.serialize_entry("progress", v)?;
        }
        if let Some(v) = &self.error {
            m.serialize_entry("error", v)?;
        }
        for (k, raw) in &self.extra {
            let value: &RawValue = serde_json::from_str(raw).map_err(serde::ser::Error::custom)?;
            m.serialize_entry(k.as_str(), value)?;
        }
        m.end()
    }
}

impl<'de> Deserialize<'de> for ResultItem {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = Box::<RawValue>::deserialize(d)?;
        let owned = SharedStr::from(String::from(Box::<str>::from(raw)));
        ResultItem::decode(&owned).map_err(de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::decode_frame;

    #[test]
    fn string_fields_are_sliced_from_the_frame_in_the_fast_path() {
        let payload = "QUJD".repeat(1000);
        let text = SharedStr::from(format!(
            r#"{{"data":[{{"taskUUID":"11111111-1111-4111-8111-111111111111","imageUUID":"i","imageBase64Data":"{payload}"}}]}}"#
        ));
        let f = decode_frame(&text).unwrap();
        let b64 = f.items[0].image_base64_data.as_ref().unwrap();
        assert_eq!(b64.as_str(), payload);
        let start = text.as_bytes().as_ptr() as usize;
        let at = b64.as_bytes().as_ptr() as usize;
        assert!(at > start && at < start + text.len(), "a slice of the frame, not a copy");
    }

    #[test]
    fn string_fields_of_other_types_are_kept_in_extra_as_before() {
        let frame = |item: &str| decode_frame(&SharedStr::from(format!(r#"{{"data":[{item},{{"imageUUID":"ok"}}]}}"#)));
        for (raw, expect) in [("5", "5"), ("null", "null"), (r#"{"a":[1]}"#, r#"{"a":[1]}"#), ("true", "true")] {
            let f = frame(&format!(r#"{{"imageURL":{raw},"taskType":"imageInference"}}"#)).unwrap();
            assert_eq!(f.items.len(), 2, "{raw}");
            let item = &f.items[0];
            assert_eq!(item.image_url, None, "{raw}");
            assert_eq!(item.task_type.as_deref(), Some("imageInference"));
            assert_eq!(item.extra, vec![(SharedStr::from("imageURL"), SharedStr::from(expect))], "{raw}");
            assert_eq!(f.items[1].image_uuid.as_deref(), Some("ok"));
            // The lenient decoder of a single item agrees.
            let alone = ResultItem::decode(&SharedStr::from(format!(r#"{{"imageURL":{raw}}}"#))).unwrap();
            assert_eq!(alone.extra, item.extra, "{raw}");
        }
    }
}
