//! libpq connection strings, in their two forms: a `postgres://` URL (its query
//! percent-encoded) and `key = value` pairs (values optionally single-quoted).

/// `(everything before '?', the query)` of a `postgres://` or `postgresql://` URL.
pub fn url_query(s: &str) -> Option<(&str, &str)> {
    if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
        return None;
    }
    s.split_once('?')
}

/// Percent-decoding only: a `+` stays a plus (libpq does not read it as a space).
pub fn percent_decode(s: &str) -> String {
    let escaped = s.replace('+', "%2B");
    url::form_urlencoded::parse(format!("x={escaped}").as_bytes())
        .next()
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default()
}

/// The `key = value` pairs of a libpq keyword/value string: `(start, end, key,
/// value)`, the span covering the pair. Values may be single-quoted with `\'` and
/// `\\` escapes.
pub fn key_values(s: &str) -> Result<Vec<(usize, usize, String, String)>, String> {
    let b = s.as_bytes();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < b.len() && b[*i].is_ascii_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= b.len() {
            return Ok(out);
        }
        let start = i;
        while i < b.len() && b[i] != b'=' && !b[i].is_ascii_whitespace() {
            i += 1;
        }
        let key = s[start..i].to_string();
        skip_ws(&mut i);
        if i >= b.len() || b[i] != b'=' {
            return Err(format!("{key:?} has no value (expected key=value)"));
        }
        i += 1;
        skip_ws(&mut i);
        let mut value = String::new();
        if i < b.len() && b[i] == b'\'' {
            i += 1;
            loop {
                match b.get(i) {
                    None => return Err(format!("the value of {key:?} has no closing quote")),
                    Some(b'\'') => {
                        i += 1;
                        break;
                    }
                    Some(b'\\') if i + 1 < b.len() => {
                        value.push(b[i + 1] as char);
                        i += 2;
                    }
                    Some(_) => {
                        let ch = s[i..].chars().next().unwrap_or('\u{fffd}');
                        value.push(ch);
                        i += ch.len_utf8();
                    }
                }
            }
        } else {
            let vstart = i;
            while i < b.len() && !b[i].is_ascii_whitespace() {
                i += 1;
            }
            value.push_str(&s[vstart..i]);
        }
        out.push((start, i, key, value));
    }
}

/// The password of a PostgreSQL URL or key-value connection string, if it has one,
/// as written and percent-decoded (for the redactor: it is a secret like the API key).
pub fn password(queue: &str) -> Vec<String> {
    if let Ok(url) = url::Url::parse(queue)
        && let Some(p) = url.password()
    {
        let decoded = percent_decode(p);
        let mut forms = vec![p.to_string()];
        if decoded != p {
            forms.push(decoded);
        }
        return forms;
    }
    let pairs = key_values(queue).unwrap_or_else(|_| {
        // Unparsable: still redact whatever follows `password=`.
        queue
            .split_whitespace()
            .filter_map(|kv| {
                kv.strip_prefix("password=").map(|p| (0, 0, "password".to_string(), p.trim_matches('\'').to_string()))
            })
            .collect()
    });
    pairs.into_iter().filter(|(_, _, k, v)| k == "password" && !v.is_empty()).map(|(_, _, _, v)| v).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_found_in_urls_and_key_values() {
        assert_eq!(password("postgres://u:s%40cret@h:5432/db"), ["s%40cret", "s@cret"]);
        assert_eq!(password("postgres://u:a+b@h/db"), ["a+b"]);
        assert_eq!(password("host=h user=u password=hunter2 dbname=x"), ["hunter2"]);
        assert_eq!(password(r"host=h password = 'two words\'q' dbname=x"), [r"two words'q"]);
        assert_eq!(password("host=h password='unclosed"), ["unclosed"]);
        assert!(password("postgres://u@h/db").is_empty());
    }

    #[test]
    fn key_values_give_spans_and_unquoted_values() {
        let s = "a=1  b = 'x y'  c=";
        let kv = key_values(s).unwrap();
        let got: Vec<_> = kv.iter().map(|(st, en, k, v)| (&s[*st..*en], k.as_str(), v.as_str())).collect();
        assert_eq!(got, [("a=1", "a", "1"), ("b = 'x y'", "b", "x y"), ("c=", "c", "")]);
        assert!(key_values("a").unwrap_err().contains("\"a\""));
    }
}
