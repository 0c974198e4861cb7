//! Who a line is, and the taskUUIDs its attempts run under.
//!
//! A line's **identity** survives editing and moving the input: it is the line's
//! own `id` (a string, unique in the file), or else a hash of the line's canonical
//! content (its JSON with keys sorted and no white space) plus its occurrence index
//! among identical lines. Never the file's path, never the line number: inserting a
//! line or moving the input and its journal re-runs nothing that was done.
//!
//! The taskUUID of attempt *k* of a line is a pure function of (batch id, identity,
//! k): a SHA-1 name-based hash stamped as a UUID v4 (the API takes v4 taskUUIDs).
//! A re-run derives the same UUIDs, so a resent attempt is recognised by the server
//! (`conflictTaskUUID`) and recovered instead of run twice.

use serde_json::Value;
use std::collections::HashMap;
use uuid::Uuid;

/// Namespace of attempt taskUUIDs.
const ATTEMPT_NAMESPACE: Uuid = Uuid::from_u128(0x5d0f_3c8a_91e2_4b67_a4c9_0e7d_26b1_f853);
/// Namespace of line content hashes.
const CONTENT_NAMESPACE: Uuid = Uuid::from_u128(0x3b9d_62c7_0e48_4f15_a1d2_97c3_5e80_b6f9);
/// Namespace of the taskUUIDs of journals without a header (format 1).
const LEGACY_NAMESPACE: Uuid = Uuid::from_u128(0x8c4e_1f0a_52b3_4c8e_9d57_2a61_f3b0_7e14);

/// A line's identity, as the journal stores it: `id:<the line's id>` or
/// `c:<content hash>/<occurrence>`. The prefixes keep the two kinds apart.
pub type JobKey = String;

/// The key of a line with its own `id`.
pub fn given_key(id: &str) -> JobKey {
    format!("id:{id}")
}

/// The key of the `occurrence`-th (0-based) line whose content hashes to `hash`.
fn content_key(hash: Uuid, occurrence: u32) -> JobKey {
    // Built by hand: this runs once per line (`format!` costs more than the rest).
    let mut hex = [0u8; uuid::fmt::Simple::LENGTH];
    let mut key = String::with_capacity(2 + hex.len() + 1 + 10);
    key.push_str("c:");
    key.push_str(hash.simple().encode_lower(&mut hex));
    key.push('/');
    push_decimal(&mut key, occurrence);
    key
}

/// `n` in decimal ASCII digits, written at the end of `buf`.
fn decimal(n: u32, buf: &mut [u8; 10]) -> &[u8] {
    let mut i = buf.len();
    let mut n = n;
    loop {
        i -= 1;
        buf[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    &buf[i..]
}

/// Appends `n` in decimal.
fn push_decimal(out: &mut String, n: u32) {
    for d in decimal(n, &mut [0u8; 10]) {
        out.push(char::from(*d));
    }
}

/// The taskUUID of attempt `attempt` (1-based) of the line `key` in batch `batch`.
pub fn attempt_uuid(batch: Uuid, key: &str, attempt: u32) -> Uuid {
    // `Uuid::new_v5(ATTEMPT_NAMESPACE, batch ‖ key ‖ "\n" ‖ attempt)` stamped as v4,
    // hashed in place (no buffer for the name).
    let mut h = sha1_smol::Sha1::new();
    h.update(ATTEMPT_NAMESPACE.as_bytes());
    h.update(batch.as_bytes());
    h.update(key.as_bytes());
    h.update(b"\n");
    h.update(decimal(attempt, &mut [0u8; 10]));
    let digest = h.digest().bytes();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    // The v4 stamp overwrites the version and variant bits a v5 stamp would set.
    uuid::Builder::from_random_bytes(bytes).into_uuid()
}

/// The taskUUID a format-1 journal (no header) gave a line: a hash of the input's
/// canonical path, the line number and the line's bytes. Only used to carry such a
/// journal over to the current format without running anything twice.
pub fn legacy_uuid(canonical_input: &str, line: usize, content: &str) -> Uuid {
    let content_hash = Uuid::new_v5(&CONTENT_NAMESPACE, content.as_bytes());
    stamp_v4(Uuid::new_v5(&LEGACY_NAMESPACE, format!("{canonical_input}\n{line}\n{content_hash}").as_bytes()))
}

fn stamp_v4(u: Uuid) -> Uuid {
    uuid::Builder::from_random_bytes(u.into_bytes()).into_uuid()
}

/// The canonical text of a JSON value: object keys sorted, no white space. What a
/// line's content hash is computed over, so that reformatting a line or reordering
/// its fields does not change who it is. ([`content_hash`] streams it into the hash.)
#[cfg(test)]
fn canonical(value: &Value) -> String {
    let mut out = Vec::with_capacity(256);
    write_canonical(value, &mut out);
    String::from_utf8(out).unwrap_or_default()
}

/// The content hash of a parsed line: `Uuid::new_v5(CONTENT_NAMESPACE, canonical(value))`,
/// computed while the canonical text is written, without building it.
pub fn content_hash(value: &Value) -> Uuid {
    let mut h = Sha1Writer(sha1_smol::Sha1::new());
    h.0.update(CONTENT_NAMESPACE.as_bytes());
    write_canonical(value, &mut h);
    let digest = h.0.digest().bytes();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// Feeds what is written to a SHA-1.
struct Sha1Writer(sha1_smol::Sha1);

impl std::io::Write for Sha1Writer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Writes the canonical text of `value` (writing to memory or a hash cannot fail).
fn write_canonical(value: &Value, out: &mut impl std::io::Write) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
            let _ = out.write_all(b"{");
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    let _ = out.write_all(b",");
                }
                let _ = serde_json::to_writer(&mut *out, k);
                let _ = out.write_all(b":");
                write_canonical(v, out);
            }
            let _ = out.write_all(b"}");
        }
        Value::Array(items) => {
            let _ = out.write_all(b"[");
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    let _ = out.write_all(b",");
                }
                write_canonical(v, out);
            }
            let _ = out.write_all(b"]");
        }
        other => {
            let _ = serde_json::to_writer(&mut *out, other);
        }
    }
}

/// Hands out identities in file order: counts occurrences of identical content and
/// reports a repeated `id`.
#[derive(Debug, Default)]
pub struct Identities {
    occurrences: HashMap<Uuid, u32>,
    ids: HashMap<String, usize>,
}

/// Why a line has no identity of its own.
#[derive(Debug, PartialEq, Eq)]
pub enum IdentityError {
    /// `id` is not a non-empty string.
    NotAString(String),
    /// `id` was already used by an earlier line.
    Duplicate {
        /// The repeated id.
        id: String,
        /// The line that used it first.
        first_line: usize,
    },
}

impl Identities {
    /// The identity of line `line` (1-based, for messages). `value` is the parsed
    /// line (when it parses); `text` the raw line, used when it does not.
    pub fn next(&mut self, line: usize, value: Option<&Value>, text: &str) -> (JobKey, Result<(), IdentityError>) {
        let content_key_of = |this: &mut Self, hash: Uuid| {
            let n = this.occurrences.entry(hash).or_insert(0);
            let key = content_key(hash, *n);
            *n += 1;
            key
        };
        let Some(value) = value else {
            return (content_key_of(self, Uuid::new_v5(&CONTENT_NAMESPACE, text.trim().as_bytes())), Ok(()));
        };
        match value.get("id") {
            None | Some(Value::Null) => (content_key_of(self, content_hash(value)), Ok(())),
            Some(Value::String(id)) if !id.is_empty() => {
                if let Some(&first_line) = self.ids.get(id) {
                    // The repeated line gets a content identity of its own, so that its
                    // error is journaled without touching the first line's record.
                    let key = content_key_of(self, content_hash(value));
                    return (key, Err(IdentityError::Duplicate { id: id.clone(), first_line }));
                }
                self.ids.insert(id.clone(), line);
                (given_key(id), Ok(()))
            }
            Some(other) => {
                (content_key_of(self, content_hash(value)), Err(IdentityError::NotAString(other.to_string())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn content_identity_ignores_formatting_and_key_order_but_counts_repeats() {
        let mut ids = Identities::default();
        let a = json!({"positivePrompt":"snow","width":1024,"height":1024});
        let b: Value = serde_json::from_str(r#"{ "height": 1024, "width": 1024, "positivePrompt": "snow" }"#).unwrap();
        let (ka, ra) = ids.next(1, Some(&a), "");
        let (kb, rb) = ids.next(2, Some(&b), "");
        assert!(ra.is_ok() && rb.is_ok());
        assert_ne!(ka, kb, "a repeated line is a second occurrence");
        assert!(ka.ends_with("/0") && kb.ends_with("/1"), "{ka} {kb}");
        assert_eq!(ka.trim_end_matches("/0"), kb.trim_end_matches("/1"));
        // A fresh pass gives the same keys: nothing depends on where the file is.
        let mut again = Identities::default();
        assert_eq!(again.next(7, Some(&b), "").0, ka);
    }

    #[test]
    fn the_streamed_content_hash_is_the_hash_of_the_canonical_text() {
        // Journals written before the hash was streamed must keep their identities.
        let values = [
            json!({"positivePrompt":"snow","width":1024,"height":1024}),
            json!({"b":[1,2.5,{"z":null,"a":"\u{e9}\"q\"\n"}],"a":true,"é":-3}),
            json!({}),
            json!([]),
            json!("text"),
        ];
        for v in &values {
            assert_eq!(content_hash(v), Uuid::new_v5(&CONTENT_NAMESPACE, canonical(v).as_bytes()), "{v}");
        }
        assert_eq!(canonical(&values[0]), r#"{"height":1024,"positivePrompt":"snow","width":1024}"#);
        // A fixed point, computed by the code that wrote the journals so far.
        assert_eq!(
            content_hash(&values[0]),
            Uuid::new_v5(&CONTENT_NAMESPACE, br#"{"height":1024,"positivePrompt":"snow","width":1024}"#)
        );
    }

    #[test]
    fn keys_and_attempt_names_are_written_as_format_would() {
        let hash = Uuid::from_u128(0x0123_4567_89ab_cdef_0011_2233_4455_6677);
        for n in [0, 7, 10, 99, 4_294_967_295] {
            assert_eq!(content_key(hash, n), format!("c:{}/{n}", hash.simple()));
            let mut s = String::new();
            push_decimal(&mut s, n);
            assert_eq!(s, n.to_string());
        }
        // An attempt's taskUUID is what earlier journals recorded for it.
        let batch = Uuid::from_u128(7);
        let name = [batch.as_bytes().as_slice(), b"id:x\n12"].concat();
        assert_eq!(attempt_uuid(batch, "id:x", 12), stamp_v4(Uuid::new_v5(&ATTEMPT_NAMESPACE, &name)));
    }

    #[test]
    fn given_ids_win_and_must_be_unique_strings() {
        let mut ids = Identities::default();
        let (k, r) = ids.next(1, Some(&json!({"id":"cat-1","positivePrompt":"x"})), "");
        assert_eq!((k.as_str(), r), ("id:cat-1", Ok(())));
        let (k2, r2) = ids.next(5, Some(&json!({"id":"cat-1","positivePrompt":"y"})), "");
        assert!(k2.starts_with("c:"));
        assert_eq!(r2, Err(IdentityError::Duplicate { id: "cat-1".into(), first_line: 1 }));
        let (_, r3) = ids.next(6, Some(&json!({"id":7})), "");
        assert_eq!(r3, Err(IdentityError::NotAString("7".into())));
        let (k4, _) = ids.next(8, None, "  {not json ");
        assert!(k4.starts_with("c:"));
    }

    #[test]
    fn attempt_uuids_are_pure_distinct_and_v4() {
        let batch = Uuid::from_u128(7);
        let a1 = attempt_uuid(batch, "id:x", 1);
        assert_eq!(a1, attempt_uuid(batch, "id:x", 1));
        assert_ne!(a1, attempt_uuid(batch, "id:x", 2));
        assert_ne!(a1, attempt_uuid(batch, "id:y", 1));
        assert_ne!(a1, attempt_uuid(Uuid::from_u128(8), "id:x", 1));
        assert_eq!(a1.get_version_num(), 4);
        let l = legacy_uuid("/x/in.jsonl", 1, "{}");
        assert_eq!(l, legacy_uuid("/x/in.jsonl", 1, "{}"));
        assert_ne!(l, legacy_uuid("/x/in.jsonl", 2, "{}"));
        assert_eq!(l.get_version_num(), 4);
    }
}
