//! Redaction of secrets from log output, dependencies' traces included.
//!
//! [`ApiKey`](crate::ApiKey) never prints itself, and this crate never logs a
//! frame that carries it. But dependencies do: at `trace` level tungstenite logs
//! every frame it sends, the authentication frame (with the key) among them. A
//! program that installs its own `tracing` subscriber at `trace` for every target
//! therefore needs a writer that removes the key from each line, whatever wrote
//! it. That writer is [`RedactingWriter`], made by a [`Redactor`]:
//!
//! ```
//! use runware_ws::redact::Redactor;
//! use std::io::Write;
//!
//! let redactor = Redactor::new(["sk-live-1234567890"]);
//! let mut out = Vec::new();
//! {
//!     let mut w = redactor.writer(&mut out);
//!     w.write_all(b"Sending frame: {\"apiKey\":\"sk-live-1234567890\"}\n").unwrap();
//! }
//! assert_eq!(out, b"Sending frame: {\"apiKey\":\"***\"}\n");
//! ```
//!
//! With `tracing-subscriber`, give the fmt layer a closure that wraps its real
//! writer (a `Fn() -> impl Write` is a `MakeWriter`):
//!
//! ```no_run
//! # use runware_ws::{ApiKey, redact::Redactor};
//! # let key = ApiKey::new("…");
//! let redactor = Redactor::new([key.expose()]);
//! tracing_subscriber::fmt()
//!     .with_writer(move || redactor.writer(std::io::stderr()))
//!     .init();
//! ```
//!
//! Each secret is removed as written, as lowercase and uppercase hex (how some
//! libraries print frame payloads), and as a JSON-escaped string. A secret shorter
//! than [`WHOLE_TOKEN_BELOW`] bytes (no real API key is; a test key may be) is
//! removed only where it stands as a whole token — not between letters, digits,
//! `_` or `-` — so that a key like `k` does not turn `taskType` into `tas***Type`. The writer
//! buffers up to the end of each line, so a secret split across two `write` calls
//! of one line is still found; a line is written when its newline arrives, on
//! `flush`, or when the writer is dropped.

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::Arc;

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Secrets shorter than this many bytes are masked only as whole tokens.
pub const WHOLE_TOKEN_BELOW: usize = 8;

/// One form of a secret to mask.
#[derive(Clone, PartialEq)]
struct Pattern {
    bytes: Vec<u8>,
    /// Masked only where no token character touches it.
    whole_token: bool,
}

/// A set of secrets to remove from text. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Redactor {
    patterns: Arc<[Pattern]>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the patterns themselves: they are the secrets.
        f.debug_struct("Redactor").field("patterns", &self.patterns.len()).finish()
    }
}

impl Redactor {
    /// A redactor for these secrets. Blank ones are ignored.
    pub fn new<I, S>(secrets: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let mut patterns: Vec<Pattern> = Vec::new();
        for secret in secrets {
            let secret = secret.as_ref();
            if secret.trim().is_empty() {
                continue;
            }
            let hex_lower: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
            let escaped = serde_json::to_string(secret).unwrap_or_default();
            let escaped = escaped.trim_matches('"');
            let whole_token = secret.len() < WHOLE_TOKEN_BELOW;
            for form in [secret, hex_lower.as_str(), hex_lower.to_uppercase().as_str(), escaped] {
                let form = Pattern { bytes: form.as_bytes().to_vec(), whole_token };
                if !form.bytes.is_empty() && !patterns.contains(&form) {
                    patterns.push(form);
                }
            }
        }
        // Longest first, so a secret that contains another is masked whole.
        patterns.sort_by_key(|p| std::cmp::Reverse(p.bytes.len()));
        Redactor { patterns: patterns.into() }
    }

    /// True when there is nothing to redact.
    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    /// `text` with every secret replaced by [`MASK`].
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        match self.redact_bytes(text.as_bytes()) {
            Cow::Borrowed(_) => Cow::Borrowed(text),
            // Masking whole secrets (valid UTF-8) inside valid UTF-8 keeps it valid.
            Cow::Owned(bytes) => Cow::Owned(String::from_utf8_lossy(&bytes).into_owned()),
        }
    }

    /// `bytes` with every secret replaced by [`MASK`].
    pub fn redact_bytes<'a>(&self, bytes: &'a [u8]) -> Cow<'a, [u8]> {
        let mut out: Cow<'a, [u8]> = Cow::Borrowed(bytes);
        for pattern in self.patterns.iter() {
            if let Some(replaced) = replace_all(&out, &pattern.bytes, MASK.as_bytes(), pattern.whole_token) {
                out = Cow::Owned(replaced);
            }
        }
        out
    }

    /// A writer that passes everything to `inner` with the secrets removed.
    pub fn writer<W: Write>(&self, inner: W) -> RedactingWriter<W> {
        RedactingWriter { inner, line: Vec::new(), redactor: self.clone() }
    }
}

/// `haystack` with each `needle` replaced (only whole tokens when `whole_token`),
/// or `None` when there is none.
fn replace_all(haystack: &[u8], needle: &[u8], with: &[u8], whole_token: bool) -> Option<Vec<u8>> {
    let mut out: Option<Vec<u8>> = None;
    // Copied up to here; searched from `from`.
    let (mut copied, mut from) = (0, 0);
    while let Some(at) = find(&haystack[from..], needle).map(|i| i + from) {
        let end = at + needle.len();
        let bounded = !whole_token
            || (haystack[..at].last().is_none_or(|b| !is_token_byte(*b))
                && haystack.get(end).is_none_or(|b| !is_token_byte(*b)));
        if bounded {
            let o = out.get_or_insert_with(|| Vec::with_capacity(haystack.len()));
            o.extend_from_slice(&haystack[copied..at]);
            o.extend_from_slice(with);
            copied = end;
            from = end;
        } else {
            from = at + 1;
        }
    }
    let mut o = out?;
    o.extend_from_slice(&haystack[copied..]);
    Some(o)
}

/// A byte that continues a token (a word, a key, a hex run).
fn is_token_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_' || b == b'-'
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() || needle.len() > haystack.len() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// A [`Write`] that removes a [`Redactor`]'s secrets from each line before
/// passing it on. See the [module docs](self).
pub struct RedactingWriter<W: Write> {
    inner: W,
    line: Vec<u8>,
    redactor: Redactor,
}

impl<W: Write> RedactingWriter<W> {
    fn write_out(&mut self, upto: usize) -> io::Result<()> {
        let chunk: Vec<u8> = self.line.drain(..upto).collect();
        let clean = self.redactor.redact_bytes(&chunk);
        self.inner.write_all(&clean)
    }
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.line.extend_from_slice(buf);
        if let Some(last_newline) = self.line.iter().rposition(|b| *b == b'\n') {
            self.write_out(last_newline + 1)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        let all = self.line.len();
        self.write_out(all)?;
        self.inner.flush()
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        // Nowhere to report a failure from a drop; the bytes were for a log.
        let _ = self.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "sk-SECRETKEY42";

    fn written(redactor: &Redactor, chunks: &[&[u8]]) -> String {
        let mut out = Vec::new();
        {
            let mut w = redactor.writer(&mut out);
            for c in chunks {
                w.write_all(c).unwrap();
            }
        }
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_key_is_masked_literally_in_hex_and_escaped() {
        let r = Redactor::new([KEY]);
        let hex: String = KEY.bytes().map(|b| format!("{b:02x}")).collect();
        let text = format!("a {KEY} b 0x{hex} c {} d\n", hex.to_uppercase());
        let out = written(&r, &[text.as_bytes()]);
        assert_eq!(out, "a *** b 0x*** c *** d\n");
        assert_eq!(r.redact("no secret here"), "no secret here");
        assert!(matches!(r.redact("no secret here"), Cow::Borrowed(_)));
    }

    #[test]
    fn a_key_split_across_writes_of_one_line_is_still_masked() {
        let r = Redactor::new([KEY]);
        let out = written(&r, &[b"frame: sk-SEC", b"RETKEY42 done\nnext ", b"sk-SECRETKEY42"]);
        assert_eq!(out, "frame: *** done\nnext ***");
    }

    #[test]
    fn blank_secrets_are_ignored_and_debug_hides_the_patterns() {
        let r = Redactor::new(["", "  ", KEY]);
        assert!(!r.is_empty());
        assert!(!format!("{r:?}").contains("SECRET"));
        assert!(Redactor::new([""]).is_empty());
        assert_eq!(Redactor::new([""]).redact("x"), "x");
    }

    #[test]
    fn a_short_key_is_masked_only_as_a_whole_token() {
        // A one-character key (issue 29): the frame stays the frame, the key goes.
        let r = Redactor::new(["k"]);
        assert_eq!(
            r.redact(r#"{"taskType":"imageInference","apiKey":"k","k":1}"#),
            r#"{"taskType":"imageInference","apiKey":"***","***":1}"#
        );
        assert_eq!(r.redact("k"), "***");
        assert_eq!(r.redact("kk k-k"), "kk k-k", "inside a token: kept");
        // Its hex form ("6b") is no more masked inside longer hex runs.
        assert_eq!(r.redact("0x6b6c 6b"), "0x6b6c ***");
        // A key of real length is masked wherever it stands, inside a token too.
        let long = Redactor::new([KEY]);
        assert_eq!(long.redact(&format!("Bearer{KEY}x")), "Bearer***x");
    }

    #[test]
    fn a_secret_containing_another_is_masked_whole() {
        let r = Redactor::new(["abc", "xxabcxx"]);
        assert_eq!(r.redact("1 xxabcxx 2 abc"), "1 *** 2 ***");
    }
}
