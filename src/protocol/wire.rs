//! A hand-written JSON writer for the task every caller sends: an
//! `imageInference` serialized straight into its frame buffer, keys pre-escaped,
//! strings copied in one piece when they need no escape.
//!
//! It writes exactly what `serde_json::to_writer` writes for the derived
//! `Serialize` of [`ImageInference`] (same fields, order and escapes): the
//! derived code goes through `serialize_map` (the struct has a flattened `extra`)
//! and escapes every key and string byte by byte, which was most of the cost of
//! submitting a task. Nested objects (`safety`, `inputs`, `providerSettings`) and
//! `extra` values are rare and go through `serde_json`. Tests compare the two
//! writers on the canonical fixtures and on generated tasks.

use super::inference::{DeliveryMethod, ImageInference, OutputFormat, OutputType};

/// True when `s` has a byte JSON must escape (a control character, `"` or `\`).
/// Checked 16 bytes at a time without a branch per byte.
fn needs_escape(s: &[u8]) -> bool {
    let special = |b: u8| (b < 0x20) | (b == b'"') | (b == b'\\');
    let mut chunks = s.chunks_exact(16);
    for chunk in &mut chunks {
        if chunk.iter().fold(false, |acc, &b| acc | special(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| special(b))
}

/// Appends `s` as a JSON string, escaped as `serde_json` escapes it.
pub(crate) fn write_str(out: &mut Vec<u8>, s: &str) {
    if needs_escape(s.as_bytes()) {
        // Rare: let serde_json do the escaping (writing to a Vec cannot fail).
        let _ = serde_json::to_writer(&mut *out, s);
        return;
    }
    out.reserve(s.len() + 2);
    out.push(b'"');
    out.extend_from_slice(s.as_bytes());
    out.push(b'"');
}

/// Appends an unsigned integer in decimal (as serde_json writes it).
fn write_u64(out: &mut Vec<u8>, n: u64) {
    out.extend_from_slice(itoa::Buffer::new().format(n).as_bytes());
}

fn output_type(t: OutputType) -> &'static [u8] {
    match t {
        OutputType::Url => b"\"URL\"",
        OutputType::Base64Data => b"\"base64Data\"",
        OutputType::DataUri => b"\"dataURI\"",
    }
}

fn output_format(f: OutputFormat) -> &'static [u8] {
    match f {
        OutputFormat::Jpg => b"\"JPG\"",
        OutputFormat::Png => b"\"PNG\"",
        OutputFormat::Webp => b"\"WEBP\"",
    }
}

fn delivery(d: DeliveryMethod) -> &'static [u8] {
    match d {
        DeliveryMethod::Sync => b"\"sync\"",
        DeliveryMethod::Async => b"\"async\"",
    }
}

impl ImageInference {
    /// Appends this task's JSON object to `out`: the bytes `serde_json::to_writer`
    /// would write.
    pub(crate) fn write_json(&self, out: &mut Vec<u8>) -> Result<(), serde_json::Error> {
        out.extend_from_slice(b"{\"taskType\":\"imageInference\",\"taskUUID\":\"");
        let mut uuid = [0u8; uuid::fmt::Hyphenated::LENGTH];
        out.extend_from_slice(self.task_uuid.hyphenated().encode_lower(&mut uuid).as_bytes());
        out.extend_from_slice(b"\",\"model\":");
        write_str(out, &self.model);
        out.extend_from_slice(b",\"positivePrompt\":");
        write_str(out, &self.positive_prompt);
        let number = |out: &mut Vec<u8>, key: &[u8], n: Option<u64>| {
            if let Some(n) = n {
                out.extend_from_slice(key);
                write_u64(out, n);
            }
        };
        number(out, b",\"width\":", self.width.map(u64::from));
        number(out, b",\"height\":", self.height.map(u64::from));
        number(out, b",\"seed\":", self.seed);
        number(out, b",\"numberResults\":", self.number_results.map(u64::from));
        if let Some(t) = self.output_type {
            out.extend_from_slice(b",\"outputType\":");
            out.extend_from_slice(output_type(t));
        }
        if let Some(f) = self.output_format {
            out.extend_from_slice(b",\"outputFormat\":");
            out.extend_from_slice(output_format(f));
        }
        number(out, b",\"outputQuality\":", self.output_quality.map(u64::from));
        if let Some(d) = self.delivery_method {
            out.extend_from_slice(b",\"deliveryMethod\":");
            out.extend_from_slice(delivery(d));
        }
        if let Some(u) = &self.webhook_url {
            out.extend_from_slice(b",\"webhookURL\":");
            write_str(out, u);
        }
        if let Some(u) = &self.upload_endpoint {
            out.extend_from_slice(b",\"uploadEndpoint\":");
            write_str(out, u);
        }
        number(out, b",\"ttl\":", self.ttl);
        if let Some(b) = self.include_cost {
            out.extend_from_slice(b",\"includeCost\":");
            out.extend_from_slice(if b { b"true" } else { b"false" });
        }
        if let Some(s) = &self.safety {
            out.extend_from_slice(b",\"safety\":");
            serde_json::to_writer(&mut *out, s)?;
        }
        if let Some(i) = &self.inputs {
            out.extend_from_slice(b",\"inputs\":");
            serde_json::to_writer(&mut *out, i)?;
        }
        if let Some(p) = &self.provider_settings {
            out.extend_from_slice(b",\"providerSettings\":");
            serde_json::to_writer(&mut *out, p)?;
        }
        for (key, value) in &self.extra {
            out.push(b',');
            write_str(out, key);
            out.push(b':');
            serde_json::to_writer(&mut *out, value)?;
        }
        out.push(b'}');
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{BflSettings, Inputs, ProviderSettings, ReferenceImage, Safety, SafetyMode, tag};
    use proptest::prelude::*;
    use serde_json::{Map, Value, json};
    use uuid::Uuid;

    fn ours(task: &ImageInference) -> String {
        let mut out = Vec::new();
        task.write_json(&mut out).expect("writes");
        String::from_utf8(out).expect("UTF-8")
    }

    fn bare(prompt: &str) -> ImageInference {
        ImageInference {
            task_type: tag::ImageInference,
            task_uuid: Uuid::from_u128(0x0123_4567_89ab_cdef_0123_4567_89ab_cdef),
            model: "bfl:3@1".into(),
            positive_prompt: prompt.into(),
            width: None,
            height: None,
            seed: None,
            number_results: None,
            output_type: None,
            output_format: None,
            output_quality: None,
            delivery_method: None,
            webhook_url: None,
            upload_endpoint: None,
            ttl: None,
            include_cost: None,
            safety: None,
            inputs: None,
            provider_settings: None,
            extra: Map::new(),
        }
    }

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        for s in [
            "",
            "plain",
            "exactly sixteen!",
            "quote \" inside",
            "back\\slash",
            "new\nline and\ttab",
            "\u{1}\u{1f}\u{7f}",
            "ünïcödé ✓ 雨の夜",
            "a long prompt that has no escapes in it at all but runs over several chunks",
            "a long prompt whose escape comes only at the very end of the last chunk\"",
        ] {
            let mut out = Vec::new();
            write_str(&mut out, s);
            assert_eq!(String::from_utf8(out).unwrap(), serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }

    #[test]
    fn numbers_are_written_in_decimal() {
        for n in [0, 7, 10, 99, 1024, u64::from(u32::MAX), u64::MAX] {
            let mut out = Vec::new();
            write_u64(&mut out, n);
            assert_eq!(String::from_utf8(out).unwrap(), n.to_string());
        }
    }

    #[test]
    fn every_field_set_gives_the_derived_json() {
        let mut task = bare("Make it \"rainy\"\n");
        task.width = Some(1024);
        task.height = Some(768);
        task.seed = Some(u64::MAX >> 1);
        task.number_results = Some(3);
        task.output_type = Some(OutputType::DataUri);
        task.output_format = Some(OutputFormat::Webp);
        task.output_quality = Some(95);
        task.delivery_method = Some(DeliveryMethod::Async);
        task.webhook_url = Some("https://example.com/hook?a=1&b=\"2\"".into());
        task.upload_endpoint = Some("https://example.com/put".into());
        task.ttl = Some(3600);
        task.include_cost = Some(false);
        task.safety = Some(Safety { check_content: Some(true), mode: Some(SafetyMode::Fast) });
        task.inputs =
            Some(Inputs { reference_images: vec![ReferenceImage::Url("https://example.com/a.png".parse().unwrap())] });
        let mut other = Map::new();
        other.insert("other".into(), json!({"x": [1, 2.5, null]}));
        task.provider_settings = Some(ProviderSettings {
            bfl: Some(BflSettings { prompt_upsampling: Some(true), safety_tolerance: Some(2) }),
            other,
        });
        task.extra.insert("unknownField".into(), json!(1.5));
        task.extra.insert("weird \"key\"".into(), json!("v\u{0}"));
        assert_eq!(ours(&task), serde_json::to_string(&task).unwrap());
    }

    #[test]
    fn the_canonical_kontext_request_is_written_as_derived() {
        let task = crate::Kontext::builder()
            .prompt("Make it a rainy night in the same city, keep the people")
            .size(crate::KontextSize::R1x1)
            .build()
            .expect("valid");
        let wire = task.as_inference();
        assert_eq!(ours(wire), serde_json::to_string(wire).unwrap());
    }

    fn opt<T: std::fmt::Debug + Clone>(s: impl Strategy<Value = T>) -> impl Strategy<Value = Option<T>> {
        proptest::option::of(s)
    }

    fn any_string() -> impl Strategy<Value = String> {
        // Mostly plain text, sometimes every kind of character JSON escapes.
        prop_oneof![3 => "[ -~]{0,40}", 1 => any::<String>(), 1 => "[\"\\\\\\x00-\\x1f a-z]{0,20}"]
    }

    proptest! {
        #[test]
        fn generated_tasks_are_written_as_derived(
            prompt in any_string(),
            model in any_string(),
            uuid in any::<u128>(),
            width in opt(any::<u32>()),
            height in opt(any::<u32>()),
            seed in opt(any::<u64>()),
            number_results in opt(any::<u32>()),
            output_type in opt(prop_oneof![Just(OutputType::Url), Just(OutputType::Base64Data), Just(OutputType::DataUri)]),
            output_format in opt(prop_oneof![Just(OutputFormat::Jpg), Just(OutputFormat::Png), Just(OutputFormat::Webp)]),
            output_quality in opt(any::<u32>()),
            delivery_method in opt(prop_oneof![Just(DeliveryMethod::Sync), Just(DeliveryMethod::Async)]),
            webhook_url in opt(any_string()),
            ttl in opt(any::<u64>()),
            include_cost in opt(any::<bool>()),
            extra in proptest::collection::vec((any_string(), any_string(), any::<i64>()), 0..3),
        ) {
            let mut task = bare(&prompt);
            task.model = model;
            task.task_uuid = Uuid::from_u128(uuid);
            task.width = width;
            task.height = height;
            task.seed = seed;
            task.number_results = number_results;
            task.output_type = output_type;
            task.output_format = output_format;
            task.output_quality = output_quality;
            task.delivery_method = delivery_method;
            task.webhook_url = webhook_url;
            task.ttl = ttl;
            task.include_cost = include_cost;
            for (k, s, n) in extra {
                let v = if n % 2 == 0 { Value::from(s) } else { Value::from(n) };
                task.extra.insert(k, v);
            }
            prop_assert_eq!(ours(&task), serde_json::to_string(&task).unwrap());
        }
    }
}
