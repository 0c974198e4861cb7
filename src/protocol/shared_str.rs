//! [`SharedStr`]: an immutable, cheaply clonable UTF-8 string backed by [`Bytes`].
//!
//! Inbound frames are kept as one `SharedStr`; every string field decoded out of
//! them (image URLs, multi-MiB base64 payloads) is a zero-copy slice of it.

use bytes::Bytes;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::ops::Deref;

/// An immutable UTF-8 string that shares its buffer: cloning and slicing never copy.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SharedStr(Bytes);

impl SharedStr {
    /// A string from a static literal, without allocating.
    pub const fn from_static(s: &'static str) -> Self {
        SharedStr(Bytes::from_static(s.as_bytes()))
    }

    /// Wraps bytes that are known to be UTF-8; `None` if they are not.
    pub fn from_utf8(bytes: Bytes) -> Option<Self> {
        std::str::from_utf8(&bytes).ok()?;
        Some(SharedStr(bytes))
    }

    /// Wraps bytes whose UTF-8 validity a trusted source has already checked
    /// (tungstenite's `Utf8Bytes`), without checking again.
    pub(crate) fn from_utf8_trusted(bytes: Bytes) -> Self {
        debug_assert!(std::str::from_utf8(&bytes).is_ok());
        SharedStr(bytes)
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor checks or guarantees UTF-8, and slices are
        // only taken at the boundaries of `&str` values borrowed from `self`.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying bytes (shares the buffer).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// A `SharedStr` for `part`: a zero-copy slice when `part` lies inside `self`,
    /// otherwise a copy (for strings that were unescaped during decoding).
    pub fn share(&self, part: &str) -> SharedStr {
        let base = self.0.as_ptr() as usize;
        let start = part.as_ptr() as usize;
        if start >= base && start + part.len() <= base + self.0.len() {
            SharedStr(self.0.slice_ref(part.as_bytes()))
        } else {
            SharedStr::from(part)
        }
    }
}

impl Deref for SharedStr {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for SharedStr {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl std::borrow::Borrow<str> for SharedStr {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}

impl From<String> for SharedStr {
    fn from(s: String) -> Self {
        SharedStr(Bytes::from(s))
    }
}

impl From<&str> for SharedStr {
    fn from(s: &str) -> Self {
        SharedStr(Bytes::copy_from_slice(s.as_bytes()))
    }
}

impl From<SharedStr> for Bytes {
    fn from(s: SharedStr) -> Bytes {
        s.0
    }
}

impl PartialEq<str> for SharedStr {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for SharedStr {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Debug output is cut after 96 characters so that a 2 MiB base64 payload does not
/// flood a log line.
impl fmt::Debug for SharedStr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 96;
        let s = self.as_str();
        if s.len() <= MAX {
            fmt::Debug::fmt(s, f)
        } else {
            let mut cut = MAX;
            while !s.is_char_boundary(cut) {
                cut -= 1;
            }
            write!(f, "{:?}…({} bytes)", &s[..cut], s.len())
        }
    }
}

impl Serialize for SharedStr {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(SharedStr::from)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn share_is_zero_copy_inside_and_copies_outside() {
        let whole = SharedStr::from(String::from("hello world"));
        let inner = whole.share(&whole[6..]);
        assert_eq!(inner, "world");
        assert_eq!(inner.as_bytes().as_ptr(), whole.as_bytes()[6..].as_ptr());
        let outside = whole.share("world");
        assert_eq!(outside, "world");
        assert_ne!(outside.as_bytes().as_ptr(), whole.as_bytes()[6..].as_ptr());
    }

    #[test]
    fn debug_is_truncated() {
        let long = SharedStr::from("a".repeat(10_000));
        let dbg = format!("{long:?}");
        assert!(dbg.len() < 200, "{dbg}");
        assert!(dbg.contains("10000 bytes"));
    }

    #[test]
    fn from_utf8_rejects_invalid() {
        assert!(SharedStr::from_utf8(Bytes::from_static(&[0xff, 0xfe])).is_none());
        assert_eq!(SharedStr::from_utf8(Bytes::from_static(b"ok")).unwrap(), "ok");
    }
}
