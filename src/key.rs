//! The identity of a monitored check (`CONTRACT.md`, "Monitors"): the job's own `key`, or
//! one derived from what makes two checks the same check, so that two monitors of one
//! URL with different expectations keep separate histories.
//!
//! The derived key is `sha256:` and the first 32 hex digits of the SHA-256 of a canonical
//! text, documented in docs/OPERATIONS.md so that a publisher can compute it:
//!
//! ```text
//! picket-key-v1\n
//! METHOD\n                      GET or HEAD
//! URL\n                         the URL as parsed (WHATWG: lower-case scheme and host,
//!                               default port dropped, "/" for an empty path)
//! header:NAME:VALUE\n           one line per job header, NAME lower-cased, sorted by NAME
//!                               then VALUE (`accept` before `accept-language`)
//! expect:FIELD:VALUE\n          one line per expect field present, in this order:
//!                               status (codes sorted, comma-separated), min_body_bytes,
//!                               body_contains, body_not_contains, max_latency_ms;
//!                               a pattern holding a line end is written
//!                               expect:FIELD~json:"JSON string"\n instead
//! ```
//!
//! Nothing here does I/O.

use sha2::{Digest, Sha256};

use crate::job::asks::{Expect, Method};

/// Longest `key` a job may give.
pub(crate) const MAX_KEY_LEN: usize = 200;

/// Checks a job's own `key`.
///
/// # Errors
/// A sentence saying what is wrong (empty, too long, or control characters).
pub(crate) fn check_given(key: &str) -> Result<(), String> {
    if key.is_empty() {
        return Err("key is empty".into());
    }
    if key.len() > MAX_KEY_LEN {
        return Err(format!("key is longer than {MAX_KEY_LEN} bytes"));
    }
    if key.chars().any(char::is_control) {
        return Err("key has control characters".into());
    }
    Ok(())
}

/// The canonical text the derived key hashes (see the module documentation).
pub(crate) fn canonical(
    url: &str,
    method: Method,
    headers: &[(String, String)],
    e: &Expect,
) -> String {
    use std::fmt::Write;
    let method = match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
    };
    let mut text = format!("picket-key-v1\n{method}\n{url}\n");
    let mut sorted: Vec<(String, &str)> = headers
        .iter()
        .map(|(n, v)| (n.to_ascii_lowercase(), v.as_str()))
        .collect();
    sorted.sort();
    for (name, value) in sorted {
        let _ = writeln!(text, "header:{name}:{value}");
    }
    if let Some(codes) = &e.status {
        let mut codes = codes.clone();
        codes.sort_unstable();
        codes.dedup();
        let list: Vec<String> = codes.iter().map(u16::to_string).collect();
        let _ = writeln!(text, "expect:status:{}", list.join(","));
    }
    if let Some(n) = e.min_body_bytes {
        let _ = writeln!(text, "expect:min_body_bytes:{n}");
    }
    if let Some(t) = &e.body_contains {
        pattern_line(&mut text, "body_contains", t);
    }
    if let Some(t) = &e.body_not_contains {
        pattern_line(&mut text, "body_not_contains", t);
    }
    if let Some(n) = e.max_latency_ms {
        let _ = writeln!(text, "expect:max_latency_ms:{n}");
    }
    text
}

/// The line of a body pattern. One holding a line end, written as it is, would make the
/// lines of other fields (`"a\nexpect:max_latency_ms:5000"`): it is written as a JSON
/// string under a label of its own (`FIELD~json:`), which no value without a line end
/// can produce, as every line starts after one. Any other value keeps its v1 line.
fn pattern_line(text: &mut String, field: &str, value: &str) {
    use std::fmt::Write;
    if value.contains('\n') {
        let json = serde_json::Value::from(value);
        let _ = writeln!(text, "expect:{field}~json:{json}");
    } else {
        let _ = writeln!(text, "expect:{field}:{value}");
    }
}

/// The derived key of a check.
pub(crate) fn derive(
    url: &str,
    method: Method,
    headers: &[(String, String)],
    e: &Expect,
) -> String {
    format!("sha256:{}", short_hash(&canonical(url, method, headers, e)))
}

/// The first 32 hex digits of the SHA-256 of `text`: also what names a key's records in
/// Redis, so that any key, whatever characters it has, makes a valid hash tag.
pub(crate) fn short_hash(text: &str) -> String {
    use std::fmt::Write;
    let digest = Sha256::digest(text.as_bytes());
    digest[..16]
        .iter()
        .fold(String::with_capacity(32), |mut s, b| {
            let _ = write!(s, "{b:02x}");
            s
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expect(contains: &str) -> Expect {
        Expect {
            body_contains: Some(contains.into()),
            ..Expect::default()
        }
    }

    #[test]
    fn the_same_check_gets_the_same_key_and_another_check_another() {
        let h = vec![("Accept-Language".to_string(), "zh-CN".to_string())];
        let a = derive("http://a.example/", Method::Get, &h, &expect("ok"));
        assert_eq!(
            a,
            derive("http://a.example/", Method::Get, &h, &expect("ok"))
        );
        assert!(a.starts_with("sha256:") && a.len() == 7 + 32, "{a}");
        assert_ne!(
            a,
            derive("http://a.example/", Method::Get, &h, &expect("no"))
        );
        assert_ne!(
            a,
            derive("http://a.example/", Method::Head, &h, &expect("ok"))
        );
        assert_ne!(
            a,
            derive("http://a.example/", Method::Get, &[], &expect("ok"))
        );
        assert_ne!(
            a,
            derive("http://b.example/", Method::Get, &h, &expect("ok"))
        );
    }

    #[test]
    fn header_order_and_case_and_status_order_do_not_matter() {
        let h1 = vec![("B".to_string(), "2".to_string()), ("a".into(), "1".into())];
        let h2 = vec![("A".to_string(), "1".to_string()), ("b".into(), "2".into())];
        let s1 = Expect {
            status: Some(vec![301, 200]),
            ..Expect::default()
        };
        let s2 = Expect {
            status: Some(vec![200, 301, 200]),
            ..Expect::default()
        };
        assert_eq!(
            derive("http://a.example/", Method::Get, &h1, &s1),
            derive("http://a.example/", Method::Get, &h2, &s2)
        );
    }

    #[test]
    fn the_canonical_text_is_the_documented_one() {
        let e = Expect {
            status: Some(vec![301, 200]),
            max_latency_ms: Some(5000),
            ..expect("欢迎")
        };
        let h = vec![("Accept-Language".to_string(), "zh-CN".to_string())];
        assert_eq!(
            canonical("https://www.example.gov/", Method::Get, &h, &e),
            "picket-key-v1\nGET\nhttps://www.example.gov/\nheader:accept-language:zh-CN\n\
             expect:status:200,301\nexpect:body_contains:欢迎\nexpect:max_latency_ms:5000\n"
        );
        // Sorted by name, then value: not by the whole line, where `-` (0x2d) sorts
        // before `:` (0x3a) and `accept-language:` would come first.
        let h = vec![
            ("Accept-Language".to_string(), "zh-CN".to_string()),
            ("Accept".to_string(), "text/html".to_string()),
        ];
        assert_eq!(
            canonical(
                "https://www.example.gov/",
                Method::Get,
                &h,
                &Expect::default()
            ),
            "picket-key-v1\nGET\nhttps://www.example.gov/\nheader:accept:text/html\n\
             header:accept-language:zh-CN\n"
        );
        // sha256("abc") begins ba7816bf8f01cfea414140de5dae2223.
        assert_eq!(short_hash("abc"), "ba7816bf8f01cfea414140de5dae2223");
    }

    /// A pattern may hold a line end, and written as it is it made the lines of another
    /// expectation: `body_contains: "alpha\nexpect:max_latency_ms:5000"` and
    /// `body_contains: "alpha", max_latency_ms: 5000` had one key, so one check was
    /// served the other's verdict under `max_age_s` and their changes mixed.
    #[test]
    fn a_pattern_with_a_line_end_cannot_pass_for_other_fields() {
        let forged = expect("alpha\nexpect:max_latency_ms:5000");
        let real = Expect {
            max_latency_ms: Some(5000),
            ..expect("alpha")
        };
        let url = "http://a.example/";
        assert_ne!(
            derive(url, Method::Get, &[], &forged),
            derive(url, Method::Get, &[], &real)
        );
        let forged = expect("omega\nexpect:body_not_contains:alpha");
        let real = Expect {
            body_not_contains: Some("alpha".into()),
            ..expect("omega")
        };
        assert_ne!(
            derive(url, Method::Get, &[], &forged),
            derive(url, Method::Get, &[], &real)
        );
        // As documented: such a value is written as a JSON string, under its own label.
        assert_eq!(
            canonical(url, Method::Get, &[], &expect("a\nb")),
            "picket-key-v1\nGET\nhttp://a.example/\nexpect:body_contains~json:\"a\\nb\"\n"
        );
    }

    #[test]
    fn given_keys_are_checked() {
        assert!(check_given("site-42").is_ok());
        assert!(check_given("").is_err());
        assert!(check_given(&"k".repeat(201)).is_err());
        assert!(check_given("a\nb").is_err());
    }
}
