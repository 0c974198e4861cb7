//! Reference images: a UUID of an uploaded image, an http(s) URL, a data URI or
//! bare base64; local files become data URIs.

use super::validation::Violation;
use base64::Engine as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::path::Path;
use uuid::Uuid;

/// One reference image, in one of the four forms the API takes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ReferenceImage {
    /// The UUID of an image uploaded earlier (`imageUpload` or `mediaStorage`).
    Uuid(Uuid),
    /// An absolute http(s) URL the server fetches.
    Url(String),
    /// A `data:image/…;base64,…` URI.
    DataUri(String),
    /// Bare base64 image data.
    Base64(String),
}

/// The rule every reference image must follow, as reported in violations.
pub const REFERENCE_RULE: &str = "must be an image UUID, an http(s) URL, a data:image/… URI or base64 image data";

/// Image types the API takes, by magic bytes.
const IMAGE_MAGIC: &[(&[u8], &str)] = &[
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
];

/// The MIME type of image bytes, sniffed from their first bytes.
pub fn sniff_image_mime(bytes: &[u8]) -> Option<&'static str> {
    if bytes.len() >= 12 && &bytes[..4] == b"RIFF" && &bytes[8..12] == b"WEBP" {
        return Some("image/webp");
    }
    IMAGE_MAGIC.iter().find(|(magic, _)| bytes.starts_with(magic)).map(|(_, mime)| *mime)
}

fn is_base64_body(s: &str) -> bool {
    let body = s.trim_end_matches('=');
    s.len() - body.len() <= 2
        && !body.is_empty()
        && body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'-' || b == b'_')
}

/// Decodes the first bytes of a base64 string (enough to sniff an image header).
fn base64_head(s: &str) -> Option<Vec<u8>> {
    let take = s.len().min(64) / 4 * 4;
    let head = &s[..take];
    base64::engine::general_purpose::STANDARD
        .decode(head)
        .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(head))
        .ok()
}

impl ReferenceImage {
    /// Classifies a string as one of the four forms.
    ///
    /// Errors name `parameter` (for example `inputs.referenceImages[0]`).
    pub fn parse(value: &str, parameter: &str) -> Result<ReferenceImage, Violation> {
        let trimmed = value.trim();
        if trimmed.is_empty() {
            return Err(Violation::new(parameter, REFERENCE_RULE, "an empty string"));
        }
        if let (Ok(uuid), 36) = (Uuid::parse_str(trimmed), trimmed.len()) {
            return Ok(ReferenceImage::Uuid(uuid));
        }
        if let Some(rest) = trimmed.strip_prefix("data:") {
            let Some((meta, data)) = rest.split_once(',') else {
                return Err(Violation::new(parameter, "a data URI must have a comma before its data", value));
            };
            let Some(mime) = meta.strip_suffix(";base64") else {
                return Err(Violation::new(parameter, "a data URI must be base64-encoded (;base64,)", value));
            };
            if !mime.starts_with("image/") {
                return Err(Violation::new(parameter, "a data URI must have an image/* MIME type", value));
            }
            if !is_base64_body(data) {
                return Err(Violation::new(parameter, "the data URI's data is not valid base64", value));
            }
            return Ok(ReferenceImage::DataUri(trimmed.to_string()));
        }
        let lower = trimmed.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            return match url::Url::parse(trimmed) {
                Ok(u) if u.host().is_some() => Ok(ReferenceImage::Url(trimmed.to_string())),
                _ => Err(Violation::new(parameter, "must be a valid absolute http(s) URL", value)),
            };
        }
        let looks_like_image = || {
            trimmed.len() >= 16
                && is_base64_body(trimmed)
                && base64_head(trimmed).is_some_and(|h| sniff_image_mime(&h).is_some())
        };
        if looks_like_image() {
            return Ok(ReferenceImage::Base64(trimmed.to_string()));
        }
        Err(Violation::new(parameter, REFERENCE_RULE, value))
    }

    /// Reads a local image file into a data URI with the MIME type of its content.
    ///
    /// This reads the file synchronously; call it off the async runtime for big files.
    pub fn from_path(path: impl AsRef<Path>, parameter: &str) -> Result<ReferenceImage, Violation> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| {
            let rule = if e.kind() == std::io::ErrorKind::NotFound {
                "the file does not exist".to_string()
            } else {
                format!("the file cannot be read ({e})")
            };
            Violation::new(parameter, rule, path.display())
        })?;
        Self::from_bytes(&bytes, parameter).map_err(|mut v| {
            v.value = path.display().to_string();
            v
        })
    }

    /// Encodes image bytes as a data URI with the MIME type of their content.
    pub fn from_bytes(bytes: &[u8], parameter: &str) -> Result<ReferenceImage, Violation> {
        let Some(mime) = sniff_image_mime(bytes) else {
            return Err(Violation::new(
                parameter,
                "unsupported image type (expected JPEG, PNG, WEBP, GIF or BMP)",
                format!("{} bytes", bytes.len()),
            ));
        };
        let data = base64::engine::general_purpose::STANDARD.encode(bytes);
        Ok(ReferenceImage::DataUri(format!("data:{mime};base64,{data}")))
    }

    /// The string sent on the wire.
    pub fn as_wire(&self) -> std::borrow::Cow<'_, str> {
        match self {
            ReferenceImage::Uuid(u) => std::borrow::Cow::Owned(u.to_string()),
            ReferenceImage::Url(s) | ReferenceImage::DataUri(s) | ReferenceImage::Base64(s) => {
                std::borrow::Cow::Borrowed(s)
            }
        }
    }
}

impl Serialize for ReferenceImage {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.as_wire())
    }
}

impl<'de> Deserialize<'de> for ReferenceImage {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        ReferenceImage::parse(&s, "inputs.referenceImages").map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PNG_1PX: &str =
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg==";

    #[test]
    fn four_forms_are_recognised() {
        let p = "inputs.referenceImages[0]";
        assert!(matches!(
            ReferenceImage::parse("59a2edc2-45e6-429f-be5f-7ded59b92046", p),
            Ok(ReferenceImage::Uuid(_))
        ));
        assert!(matches!(ReferenceImage::parse("https://example.com/a.jpg", p), Ok(ReferenceImage::Url(_))));
        assert!(matches!(
            ReferenceImage::parse(&format!("data:image/png;base64,{PNG_1PX}"), p),
            Ok(ReferenceImage::DataUri(_))
        ));
        assert!(matches!(ReferenceImage::parse(PNG_1PX, p), Ok(ReferenceImage::Base64(_))));
    }

    #[test]
    fn other_strings_are_refused_with_the_parameter() {
        let p = "inputs.referenceImages[3]";
        for bad in [
            "not an image",
            "",
            "ftp://example.com/a.png",
            "data:text/plain;base64,aGVsbG8=",
            "aGVsbG8gd29ybGQgaGVsbG8gd29ybGQ=",
        ] {
            let err = ReferenceImage::parse(bad, p).unwrap_err();
            assert_eq!(err.parameter, p, "{bad}");
        }
        assert!(ReferenceImage::parse("https://", p).is_err());
    }

    #[test]
    fn files_become_data_uris_or_clear_errors() {
        let dir = std::env::temp_dir().join(format!("rw-ref-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let png = dir.join("a.png");
        let bytes = base64::engine::general_purpose::STANDARD.decode(PNG_1PX).unwrap();
        std::fs::write(&png, &bytes).unwrap();
        let r = ReferenceImage::from_path(&png, "image").unwrap();
        assert!(r.as_wire().starts_with("data:image/png;base64,iVBOR"));
        let txt = dir.join("a.txt");
        std::fs::write(&txt, b"hello").unwrap();
        let err = ReferenceImage::from_path(&txt, "image").unwrap_err();
        assert!(err.rule.contains("unsupported image type"), "{err}");
        let err = ReferenceImage::from_path(dir.join("missing.png"), "image").unwrap_err();
        assert!(err.rule.contains("does not exist"), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
