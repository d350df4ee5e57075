//! The checks that make a decoded job a [`Job`]: its URL (the same checks as every job
//! URL, [`parse_target_url`]), method, headers, timeout, expectations, key and cache
//! age, each in a function of its own. A failure is the sentence of the job's
//! `invalid` result, and the first one found is the one reported.

use std::collections::BTreeMap;
use std::time::Duration;

use url::Url;

use super::{
    Expect, Job, Method, WireJob, MAX_HEADERS, MAX_HEADER_LEN, MAX_PATTERN_LEN, MAX_URL_LEN,
    TIMEOUT_MS_RANGE,
};

/// Longest `max_age_s` a job may ask for: 30 days.
const MAX_AGE_S: u64 = 30 * 86_400;

/// Parses and checks a URL the way every job URL is checked.
///
/// # Errors
/// A sentence saying what is wrong.
pub fn parse_target_url(raw: &str) -> Result<Url, String> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Err("url is empty".into());
    }
    if raw.len() > MAX_URL_LEN {
        return Err(format!("url is longer than {MAX_URL_LEN} bytes"));
    }
    let url = Url::parse(raw).map_err(|e| {
        // Quoted in the refusal every results subscriber reads: never a password.
        let shown = super::without_password(raw);
        format!("url {shown:?} is not a valid URL: {e}{}", scheme_hint(raw))
    })?;
    if url.scheme() != "http" && url.scheme() != "https" {
        return Err(format!(
            "url scheme {:?} is not supported (only http and https){}",
            url.scheme(),
            scheme_hint(raw)
        ));
    }
    match url.host_str() {
        None | Some("") => return Err("url has no host".into()),
        Some(_) => {}
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err("url must not carry credentials (user:password@)".into());
    }
    if url.port() == Some(0) {
        return Err("url port 0 is not valid".into());
    }
    Ok(url)
}

/// What to say of a URL written without its scheme, as people write a site's address
/// (`www.county.gov`, `county.gov:8080/x`, `localhost:8080`): the URL meant. Nothing
/// for a URL with a scheme of its own (`mailto:`), or text that names no host.
fn scheme_hint(raw: &str) -> String {
    if raw.contains("://") {
        return String::new();
    }
    let host = raw.split([':', '/', '?', '#']).next().unwrap_or("");
    let named = host.eq_ignore_ascii_case("localhost")
        || (host.contains('.') && !host.contains(char::is_whitespace) && !host.contains('@'));
    if !named {
        return String::new();
    }
    format!(" (a URL starts with its scheme: \"http://{raw}\" or \"https://{raw}\")")
}

/// An RFC 9110 token: what a header name may be made of.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Checks `w`, the job as it arrived, and makes it the [`Job`] with id `id`.
///
/// # Errors
/// A sentence saying the first thing that is wrong.
pub(super) fn validate(w: WireJob, id: &str) -> Result<Job, String> {
    let url = parse_target_url(&w.url)?;
    let method = method_of(w.method.as_deref())?;
    let headers = headers_of(w.headers.unwrap_or_default())?;
    let timeout = timeout_of(w.timeout_ms)?;
    let expect = w.expect.unwrap_or_default();
    check_expect(&expect)?;
    check_head(method, &expect)?;
    let key = key_of(w.key, &url, method, &headers, &expect)?;
    let max_age = max_age_of(w.max_age_s)?;
    Ok(Job {
        id: id.to_string(),
        key,
        url,
        method,
        headers,
        timeout,
        expect,
        max_age,
        meta: w.meta,
    })
}

/// GET unless the job asks for HEAD, in any case.
fn method_of(given: Option<&str>) -> Result<Method, String> {
    match given.map(str::to_ascii_uppercase).as_deref() {
        None | Some("GET") => Ok(Method::Get),
        Some("HEAD") => Ok(Method::Head),
        Some(other) => Err(format!("method {other:?} is not supported (GET or HEAD)")),
    }
}

/// The job's headers, in name order, each checked by [`check_header`], and no name
/// twice in other cases (HTTP's names are case-insensitive: both would be sent).
fn headers_of(headers: BTreeMap<String, String>) -> Result<Vec<(String, String)>, String> {
    if headers.len() > MAX_HEADERS {
        return Err(format!("more than {MAX_HEADERS} headers"));
    }
    let mut seen = std::collections::HashSet::new();
    for name in headers.keys() {
        if !seen.insert(name.to_ascii_lowercase()) {
            return Err(format!("header {name:?} is given twice"));
        }
    }
    headers
        .into_iter()
        .map(|(name, value)| check_header(&name, &value).map(|()| (name, value)))
        .collect()
}

/// One header: bounded, a token for a name, a printable ASCII value, and none of the
/// headers that frame the request or name its target (the prober sets those) or ask
/// for less than the whole page.
fn check_header(name: &str, value: &str) -> Result<(), String> {
    if name.len() + value.len() > MAX_HEADER_LEN {
        return Err(format!(
            "header {name:?} is longer than {MAX_HEADER_LEN} bytes"
        ));
    }
    if !is_token(name) {
        return Err(format!("header name {name:?} is not valid"));
    }
    if value
        .chars()
        .any(|c| (c.is_control() && c != '\t') || !c.is_ascii())
    {
        return Err(format!("header {name:?} has a value that is not valid"));
    }
    let lower = name.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "host" | "content-length" | "transfer-encoding" | "connection" | "upgrade" | "te"
    ) {
        return Err(format!("header {name:?} may not be set by a job"));
    }
    // A conditional or partial request is answered 304 or 206, with no page to judge.
    if lower.starts_with("if-") || lower == "range" {
        return Err(format!(
            "header {name:?} may not be set by a job: a check asks for the whole page"
        ));
    }
    Ok(())
}

/// The job's own timeout, within [`TIMEOUT_MS_RANGE`].
fn timeout_of(ms: Option<u64>) -> Result<Option<Duration>, String> {
    let Some(ms) = ms else {
        return Ok(None);
    };
    let (min, max) = TIMEOUT_MS_RANGE;
    if !(min..=max).contains(&ms) {
        return Err(format!("timeout_ms {ms} is outside {min}..={max}"));
    }
    Ok(Some(Duration::from_millis(ms)))
}

/// What the job expects: status codes that are HTTP statuses, body texts neither empty
/// nor too long, and a latency bound above zero.
fn check_expect(expect: &Expect) -> Result<(), String> {
    if let Some(codes) = &expect.status {
        check_status(codes)?;
    }
    check_pattern("expect.body_contains", expect.body_contains.as_deref())?;
    check_pattern(
        "expect.body_not_contains",
        expect.body_not_contains.as_deref(),
    )?;
    if expect.max_latency_ms == Some(0) {
        return Err("expect.max_latency_ms must be greater than zero".into());
    }
    Ok(())
}

/// `expect.status`: at least one code, each an HTTP status.
/// A HEAD answer has no body: a job that asks about the page could never pass, or would
/// be judged without what it asks (hunt U).
fn check_head(method: Method, expect: &Expect) -> Result<(), String> {
    let about_the_page = [
        ("body_contains", expect.body_contains.is_some()),
        ("body_not_contains", expect.body_not_contains.is_some()),
        ("min_body_bytes", expect.min_body_bytes.is_some()),
    ];
    match about_the_page.iter().find(|(_, set)| *set) {
        Some((field, _)) if method == Method::Head => Err(format!(
            "expect.{field} asks about the page, which a HEAD request does not get: use GET"
        )),
        _ => Ok(()),
    }
}

fn check_status(codes: &[u16]) -> Result<(), String> {
    if codes.is_empty() {
        return Err("expect.status is empty".into());
    }
    if let Some(bad) = codes.iter().find(|c| !(100..=599).contains(*c)) {
        return Err(format!("expect.status {bad} is not an HTTP status"));
    }
    Ok(())
}

/// A body text to look for, named `field` in what is said.
fn check_pattern(field: &str, text: Option<&str>) -> Result<(), String> {
    let Some(text) = text else {
        return Ok(());
    };
    if text.is_empty() {
        return Err(format!("{field} is empty"));
    }
    if text.len() > MAX_PATTERN_LEN {
        return Err(format!("{field} is longer than {MAX_PATTERN_LEN} bytes"));
    }
    Ok(())
}

/// The job's own key when it is usable, else the one derived from what makes the check.
fn key_of(
    given: Option<String>,
    url: &Url,
    method: Method,
    headers: &[(String, String)],
    expect: &Expect,
) -> Result<String, String> {
    match given {
        Some(k) => crate::key::check_given(&k).map(|()| k),
        None => Ok(crate::key::derive(url.as_str(), method, headers, expect)),
    }
}

/// How old a cached verdict may be; 0 (or none) always probes.
fn max_age_of(seconds: Option<u64>) -> Result<Option<Duration>, String> {
    match seconds {
        None | Some(0) => Ok(None),
        Some(s) if s > MAX_AGE_S => Err(format!("max_age_s {s} is more than 30 days")),
        Some(s) => Ok(Some(Duration::from_secs(s))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(list: &[(&str, &str)]) -> Result<Vec<(String, String)>, String> {
        headers_of(
            list.iter()
                .map(|(n, v)| (n.to_string(), v.to_string()))
                .collect(),
        )
    }

    /// A conditional or partial request gets 304 or 206 and no page to judge: a site
    /// that works was `down` ("304 Not Modified but the body is 0 bytes").
    #[test]
    fn headers_asking_for_less_than_the_whole_page_are_refused() {
        for name in [
            "If-Modified-Since",
            "if-none-match",
            "If-Match",
            "If-Unmodified-Since",
            "If-Range",
            "Range",
        ] {
            let e = headers(&[(name, "x")]).expect_err(name);
            assert!(e.contains("whole page"), "{name}: {e}");
        }
        assert!(headers(&[("Accept-Language", "zh-CN"), ("Cookie", "a=1")]).is_ok());
    }

    /// Names are case-insensitive: `Accept` and `accept` were both sent.
    #[test]
    fn a_header_given_twice_in_other_cases_is_refused() {
        let e = headers(&[("Accept", "text/plain"), ("accept", "application/json")])
            .expect_err("the same header twice");
        assert!(e.contains("twice"), "{e}");
    }

    #[test]
    fn a_url_written_without_its_scheme_says_what_was_meant() {
        for (raw, meant) in [
            ("www.county.gov", "http://www.county.gov"),
            ("county.gov/news", "http://county.gov/news"),
            ("county.gov:8080/x", "http://county.gov:8080/x"),
            ("localhost:8080", "http://localhost:8080"),
        ] {
            let e = parse_target_url(raw).expect_err(raw);
            assert!(e.contains(&format!("\"{meant}\"")), "{raw}: {e}");
        }
        // A scheme of its own, or no host at all, gets no guess.
        for raw in [
            "mailto:clerk@county.gov",
            "javascript:alert(1)",
            "ftp://county.gov/",
            "not a url",
        ] {
            let e = parse_target_url(raw).expect_err(raw);
            assert!(!e.contains("http://"), "{raw}: {e}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Whatever the input, an accepted URL is http(s), has a host and no credentials.
        #[test]
        fn accepted_urls_are_sane(raw in "(https?|ftp|javascript|file)?:?/{0,3}[a-zA-Z0-9.@:\\[\\]%/_-]{0,60}") {
            if let Ok(u) = parse_target_url(&raw) {
                prop_assert!(u.scheme() == "http" || u.scheme() == "https");
                prop_assert!(u.host_str().is_some_and(|h| !h.is_empty()));
                prop_assert!(u.username().is_empty() && u.password().is_none());
            }
        }
    }
}
