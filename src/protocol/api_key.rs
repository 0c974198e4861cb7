//! [`ApiKey`]: the secret that never shows up in `Debug`, `Display`, logs or errors.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;

/// A Runware API key. Its `Debug` and `Display` print `ApiKey(***)`; only the
/// authentication frame's serializer sees the real value.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    /// Wraps a key.
    pub fn new(key: impl Into<String>) -> Self {
        ApiKey(key.into())
    }

    /// The key itself. Call only to put it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// A [`Redactor`](crate::redact::Redactor) that removes this key from log
    /// output (see [`redact`](crate::redact)).
    pub fn redactor(&self) -> crate::redact::Redactor {
        crate::redact::Redactor::new([self.expose()])
    }

    /// True when the key is empty or only whitespace.
    pub fn is_blank(&self) -> bool {
        self.0.trim().is_empty()
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(***)")
    }
}

impl fmt::Display for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl From<&str> for ApiKey {
    fn from(s: &str) -> Self {
        ApiKey::new(s)
    }
}

impl From<String> for ApiKey {
    fn from(s: String) -> Self {
        ApiKey(s)
    }
}

impl Serialize for ApiKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ApiKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(ApiKey)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_redacted_in_debug_and_display() {
        let key = ApiKey::new("sk-very-secret-123");
        assert!(!format!("{key:?}").contains("secret"));
        assert!(!format!("{key}").contains("secret"));
        assert_eq!(serde_json::to_string(&key).unwrap(), "\"sk-very-secret-123\"");
    }
}
