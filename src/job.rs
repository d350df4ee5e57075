//! Wire types: the job message that comes in and the result message ([`Report`]) that
//! goes out, and the decoding that sorts incoming bytes into a valid job, a job that is
//! wrong (answered with verdict `invalid`), or bytes that are no job at all (dead-lettered).
//!
//! Nothing here does I/O; the shapes follow `CONTRACT.md` exactly. What makes a decoded
//! job valid is in `validate`, what it asks of the site in `asks`, the verdict and reason
//! codes in `verdict`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::Value;
use url::Url;

/// Longest URL accepted; longer ones are `invalid` (browsers and servers choke past ~8 KB).
pub(crate) const MAX_URL_LEN: usize = 4096;
/// Most request headers a job may add.
pub(crate) const MAX_HEADERS: usize = 32;
/// Longest header name plus value a job may add.
pub(crate) const MAX_HEADER_LEN: usize = 2048;
/// Bounds of a job's `timeout_ms`.
pub(crate) const TIMEOUT_MS_RANGE: (u64, u64) = (100, 300_000);
/// Longest `body_contains` / `body_not_contains` text.
pub(crate) const MAX_PATTERN_LEN: usize = 4096;
/// Version of the message schemas in `schema/` (written in every result's `schema`):
/// raised when a field changes meaning or goes away, not when one is added.
pub(crate) const SCHEMA_VERSION: u32 = 1;

pub(crate) mod asks;
// The JSON Schemas under `schema/` are generated from these types by a test.
#[cfg(test)]
mod schema;
mod validate;
mod verdict;

pub use asks::{Expect, Method};
pub use validate::parse_target_url;
use validate::validate;
pub use verdict::{Reason, Verdict};

/// JSON kept exactly as it was sent (number forms, key order, spacing): a job's `meta`
/// comes back byte for byte, so a 30-digit integer or a long decimal is not rounded.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RawJson(Box<RawValue>);

impl RawJson {
    /// Parses `text` as one JSON value, keeping its text.
    ///
    /// # Errors
    /// The text is not JSON.
    pub fn from_text(text: &str) -> Result<RawJson, serde_json::Error> {
        RawValue::from_string(text.to_string()).map(RawJson)
    }

    /// The JSON text as sent.
    pub fn get(&self) -> &str {
        self.0.get()
    }
}

impl PartialEq for RawJson {
    fn eq(&self, other: &RawJson) -> bool {
        self.get() == other.get()
    }
}

/// The job message exactly as it may arrive; only `url` is required.
#[derive(Debug, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
#[cfg_attr(test, schemars(rename = "Job"))]
#[serde(deny_unknown_fields)]
struct WireJob {
    /// The job's id, echoed as the result's `job_id`; absent, the AMQP `message_id`,
    /// or one the worker makes.
    // Read by `decode` from the raw object (it may be a string or a number);
    // declared so that `deny_unknown_fields` accepts it.
    #[serde(default, rename = "id")]
    #[cfg_attr(test, schemars(with = "Option<schema::JobId>"))]
    _id: Option<Value>,
    /// The page to check: http or https, no credentials; at most 4096 bytes of UTF-8
    /// (`maxLength` counts characters: a URL of non-ASCII characters may pass it and
    /// still be longer).
    #[cfg_attr(test, schemars(length(min = 1, max = 4096)))]
    url: String,
    /// GET (the default) or HEAD, in any case.
    #[serde(default)]
    #[cfg_attr(test, schemars(regex(pattern = r"^([Gg][Ee][Tt]|[Hh][Ee][Aa][Dd])$")))]
    method: Option<String>,
    /// The identity of the monitored check (1 to 200 bytes of UTF-8, no control
    /// characters; `maxLength` counts characters); derived when absent.
    #[serde(default)]
    #[cfg_attr(test, schemars(length(min = 1, max = 200)))]
    key: Option<String>,
    /// Request headers replacing the browser's defaults of the same name (at most 32,
    /// each name once in any case; not Host, Content-Length, Transfer-Encoding,
    /// Connection, Upgrade or TE, nor If-* or Range: a check asks for the whole page).
    #[serde(default)]
    headers: Option<BTreeMap<String, String>>,
    /// Whole-request timeout in milliseconds, instead of `probe.timeout`.
    #[serde(default, deserialize_with = "asks::whole::option")]
    #[cfg_attr(test, schemars(range(min = 100, max = 300_000)))]
    timeout_ms: Option<u64>,
    /// What the site must do to be `up`.
    #[serde(default)]
    expect: Option<Expect>,
    /// Serve a verdict of the same check younger than this many seconds from Redis
    /// instead of probing (0 = always probe; at most 30 days).
    #[serde(default, deserialize_with = "asks::whole::option")]
    #[cfg_attr(test, schemars(range(max = 2_592_000)))]
    max_age_s: Option<u64>,
    /// Anything; echoed back unchanged in the result.
    #[serde(default)]
    #[cfg_attr(test, schemars(with = "Option<Value>"))]
    meta: Option<RawJson>,
}

/// A validated job, ready to plan.
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The job's id (from the message, the AMQP message id, or made up).
    pub id: String,
    /// The identity of the monitored check: the job's `key`, or derived ([`crate::key`]).
    pub key: String,
    /// The URL to probe (http or https).
    pub url: Url,
    /// GET unless the job says HEAD.
    pub method: Method,
    /// Extra request headers, replacing the browser defaults of the same name.
    pub headers: Vec<(String, String)>,
    /// Whole-request timeout, if the job sets one.
    pub timeout: Option<Duration>,
    /// What the site must do to be `up`.
    pub expect: Expect,
    /// Serve a cached verdict younger than this instead of probing.
    pub max_age: Option<Duration>,
    /// Echoed back unchanged.
    pub meta: Option<RawJson>,
}

/// A JSON job that is wrong: answered with verdict `invalid`, never retried.
#[derive(Debug, Clone, PartialEq)]
pub struct Rejected {
    /// The id, as far as it could be read.
    pub id: String,
    /// The URL as given (possibly empty).
    pub url: String,
    /// The check's key when one can be told (the job's own, or derived from a usable URL).
    pub key: Option<String>,
    /// Echoed back unchanged when it could be read.
    pub meta: Option<RawJson>,
    /// Why the job was refused.
    pub detail: String,
}

/// `url` with its password, if it has one, replaced by `***`; as given otherwise. Text
/// that does not parse as a URL (a port out of range, a space in the host) is masked
/// where its authority's password would be: it is echoed, and quoted in the refusal.
pub(crate) fn without_password(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if !parsed.username().is_empty() || parsed.password().is_some() => {
            // A user alone may be a token (`https://ghp_…@host/`): both go.
            let _ = parsed.set_username("***");
            if parsed.password().is_some() {
                let _ = parsed.set_password(Some("***"));
            }
            parsed.to_string()
        }
        Ok(_) => url.to_string(),
        Err(_) => password_masked(url),
    }
}

/// `text`, a URL that does not parse, with the userinfo of its authority
/// (`scheme://user:password@host`) replaced by `***`.
fn password_masked(text: &str) -> String {
    let Some(scheme_end) = text.find("://") else {
        return text.to_string();
    };
    let start = scheme_end + 3;
    let authority_len = text[start..]
        .find(['/', '?', '#', '\\'])
        .unwrap_or(text.len() - start);
    let authority = &text[start..start + authority_len];
    let Some(at) = authority.rfind('@') else {
        return text.to_string();
    };
    format!("{}***{}", &text[..start], &text[start + at..])
}

/// What a message turned out to be.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// A valid job.
    Job(Box<Job>),
    /// A JSON object meant as a job but wrong: answer `invalid`.
    Rejected(Rejected),
}

/// Bytes that are not a JSON job at all; the message is dead-lettered with this reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct NotAJob(pub String);

/// Sorts a message body into a job, a rejected job, or not a job.
///
/// `fallback_id` is the AMQP `message_id` or a generated id.
///
/// # Errors
/// [`NotAJob`] when the bytes are not a UTF-8 JSON object.
pub fn decode(bytes: &[u8], fallback_id: &str, max_bytes: usize) -> Result<Decoded, NotAJob> {
    let (text, fields) = json_object(bytes, max_bytes)?;
    // From here on it is meant as a job: whatever is wrong is reported as `invalid`,
    // so the publisher sees its mistake in the results.
    let field = |name: &str| -> Option<Value> {
        fields
            .get(name)
            .and_then(|raw| serde_json::from_str(raw.get()).ok())
    };
    let id = match field("id") {
        Some(Value::String(s)) if !s.is_empty() => s,
        // As written: read as a float, a big number would lose digits.
        Some(Value::Number(n)) => fields
            .get("id")
            .map_or_else(|| n.to_string(), |raw| raw.get().trim().to_string()),
        _ => fallback_id.to_string(),
    };
    let url_given = match field("url") {
        Some(Value::String(s)) => s.chars().take(MAX_URL_LEN).collect::<String>(),
        _ => String::new(),
    };
    // Echoed in the refusal, which every results subscriber reads: never a password.
    let url_echoed = without_password(&url_given);
    let meta = echoed_meta(&fields)?;
    let reject = |detail: String| {
        Ok(Decoded::Rejected(Rejected {
            id: id.clone(),
            key: rejected_key(&fields, &url_given),
            url: url_echoed.clone(),
            meta: meta.clone(),
            detail,
        }))
    };
    let wire: WireJob = match serde_json::from_str(text) {
        Ok(w) => w,
        Err(e) => {
            return reject(format!(
                "job does not match the job format (job schema version {SCHEMA_VERSION}, schema/job.schema.json): {e}"
            ))
        }
    };
    match validate(wire, &id) {
        // Its raw text: serde reads a `null` as no `meta` at all.
        Ok(job) => Ok(Decoded::Job(Box::new(Job { meta, ..job }))),
        Err(detail) => reject(detail),
    }
}

/// The message as a JSON object: its text and its fields, each kept as raw JSON so
/// that `meta` keeps its exact text.
fn json_object(
    bytes: &[u8],
    max_bytes: usize,
) -> Result<(&str, BTreeMap<String, &RawValue>), NotAJob> {
    if bytes.len() > max_bytes {
        return Err(NotAJob(format!(
            "message of {} bytes is larger than amqp.max_message_bytes ({max_bytes})",
            bytes.len()
        )));
    }
    let text =
        std::str::from_utf8(bytes).map_err(|e| NotAJob(format!("message is not UTF-8: {e}")))?;
    let text = text.trim_start_matches('\u{feff}');
    match serde_json::from_str(text) {
        Ok(fields) => Ok((text, fields)),
        Err(e) => {
            let value: Value = serde_json::from_str(text)
                .map_err(|_| NotAJob(format!("message is not JSON: {e}")))?;
            Err(NotAJob(format!(
                "message is JSON but not an object (a {})",
                json_kind(&value)
            )))
        }
    }
}

/// The job's `meta`, to be echoed as its exact text. Kept raw, it is still held to
/// what any JSON reader takes (serde_json's nesting limit): subscribers must be able
/// to read the result it is echoed in. A `null` sent is echoed as `null`: unchanged.
fn echoed_meta(fields: &BTreeMap<String, &RawValue>) -> Result<Option<RawJson>, NotAJob> {
    let meta = fields.get("meta").map(|raw| RawJson((*raw).to_owned()));
    if meta
        .as_ref()
        .is_some_and(|m| nesting(m.get()) > MAX_META_NESTING)
    {
        return Err(NotAJob(format!(
            "meta is nested deeper than {MAX_META_NESTING} levels, more than JSON readers take"
        )));
    }
    Ok(meta)
}

/// The key of a job that is refused: its own when usable, else one derived from its URL
/// and the raw text of the fields that make a check (so it never mixes with the history
/// of a valid job); none without a usable URL.
fn rejected_key(fields: &BTreeMap<String, &RawValue>, url: &str) -> Option<String> {
    if let Some(Ok(Value::String(k))) = fields.get("key").map(|r| serde_json::from_str(r.get())) {
        if crate::key::check_given(&k).is_ok() {
            return Some(k);
        }
    }
    let url = parse_target_url(url).ok()?;
    let mut text = format!("picket-key-v1-invalid\n{url}\n");
    for name in ["method", "headers", "expect"] {
        if let Some(raw) = fields.get(name) {
            text.push_str(raw.get());
        }
        text.push('\n');
    }
    Some(format!("sha256:{}", crate::key::short_hash(&text)))
}

/// Deepest `meta` echoed: serde_json's own limit, and below most readers' (Python's is
/// about 1000).
pub const MAX_META_NESTING: usize = 128;

/// How deeply arrays and objects nest in a JSON text (brackets inside strings skipped).
fn nesting(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for b in json.bytes() {
        match (in_string, escaped, b) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') | (false, _, b'"') => in_string = !in_string,
            (false, _, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// A job made from a bare URL (for `picket check` and `picket enqueue`).
///
/// # Errors
/// The same sentences as a job's URL validation.
pub fn job_for_url(url: &str, id: &str) -> Result<Job, String> {
    let url = parse_target_url(url)?;
    let key = crate::key::derive(url.as_str(), Method::Get, &[], &Expect::default());
    Ok(Job::plain_get(id, key, url))
}

impl Job {
    /// A plain GET of `url`, expecting nothing in particular.
    pub(crate) fn plain_get(id: &str, key: String, url: Url) -> Job {
        Job {
            id: id.to_string(),
            key,
            url,
            method: Method::Get,
            headers: Vec::new(),
            timeout: None,
            expect: Expect::default(),
            max_age: None,
            meta: None,
        }
    }

    /// What makes this check the check it is (URL, method, headers, expect: the key it
    /// would derive, [`crate::key::derive`]; and its `timeout_ms`), whatever its own
    /// `key`. Jobs sharing a key may differ in it, and a verdict is served for
    /// `max_age_s` only to a job of the same: one judged under another `expect`, or
    /// with more time, may be a false `up` (review V: a page answering in 12 s is up
    /// within 30 s and down within 2 s).
    pub fn fingerprint(&self) -> String {
        let check = crate::key::derive(self.url.as_str(), self.method, &self.headers, &self.expect);
        match self.timeout {
            Some(t) => format!("{check};timeout_ms={}", t.as_millis()),
            None => check,
        }
    }
}

/// HTTP facts of the final answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct HttpFacts {
    /// Final status code.
    pub status: u16,
    /// Decoded body bytes read (at most `max_body_bytes`).
    pub body_bytes: u64,
    /// URL after redirects.
    pub final_url: String,
    /// Redirect hops followed.
    pub redirects: u32,
    /// Charset the body was decoded with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub charset: Option<String>,
    /// True when the body was longer than `max_body_bytes` and cut.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// Where the time of a probe went, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Timing {
    /// The decisive attempt, from first lookup to last body byte.
    pub total: u64,
    /// Name resolution of the first hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dns: Option<u64>,
    /// Opening the connection of the last hop (TCP; through a proxy, its handshake too).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connect: Option<u64>,
    /// The TLS handshake of the last hop (https only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<u64>,
    /// Connection ready to response headers received, last hop: the server's own time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_byte: Option<u64>,
    /// Time spent waiting for the per-IP limit: a deferred job's from its first
    /// deferral (its delay queues and its place in its IP's line), then this run's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<u64>,
}

/// One probe attempt, as listed in a result.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct AttemptRecord {
    /// Egress it went through.
    pub egress: String,
    /// Its verdict on its own.
    pub verdict: Verdict,
    /// Its reason code.
    pub reason: Reason,
    /// Its detail line.
    pub detail: String,
    /// Address it reached, when one was resolved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
    /// Its duration in milliseconds.
    pub total_ms: u64,
}

/// The result message (`CONTRACT.md`, "Result message").
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(test, derive(schemars::JsonSchema))]
pub struct Report {
    /// Version of this message's schema (`schema/result.schema.json`).
    // Results written before the field existed still parse (`picket results`).
    #[serde(default)]
    pub schema: SchemaVersion,
    /// The job's id.
    pub job_id: String,
    /// The URL as asked.
    pub url: String,
    /// The verdict.
    pub verdict: Verdict,
    /// Stable snake_case reason code.
    pub reason: Reason,
    /// One readable line.
    pub detail: String,
    /// The final HTTP answer, when there was one.
    pub http: Option<HttpFacts>,
    /// Where the time went.
    pub timing_ms: Timing,
    /// Address of the decisive attempt's last hop.
    pub ip: Option<String>,
    /// Egress of the decisive attempt.
    pub egress: Option<String>,
    /// Probe attempts made.
    pub attempts: u32,
    /// Every attempt made, in order.
    #[serde(default)]
    pub attempt_log: Vec<AttemptRecord>,
    /// When the verdict was reached (RFC 3339, UTC).
    pub checked_at: String,
    /// True when served from the verdict cache.
    pub cached: bool,
    /// The monitored check's key (null only for a job with no usable URL).
    pub key: Option<String>,
    /// The last verdict this key had before this one, if known (`unknown` and `invalid`
    /// results are not verdicts on the site and never become it).
    pub previous_verdict: Option<Verdict>,
    /// True when this result changes the key's verdict (`previous_verdict` is known and
    /// differs, and this is a verdict on the site).
    pub changed: bool,
    /// Results in a row, this one included, that the key has had this verdict.
    pub streak: u64,
    /// When the key's current verdict began (RFC 3339, UTC), or null when unknown.
    pub since: Option<String>,
    /// Name of the worker that answered.
    pub worker: String,
    /// The job's `meta`, unchanged.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[cfg_attr(test, schemars(with = "Option<Value>"))]
    pub meta: Option<RawJson>,
    /// Days until the certificate expires (https only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_days_left: Option<i64>,
    /// When the observation behind this verdict began: the instant its probing started
    /// (ms since the epoch, the checking worker's clock); `None` for a report with no
    /// probe behind it. Not on the wire: the key's state orders results by it, so that a
    /// check finishing after a newer one does not step the key back (`state::step`).
    #[serde(skip)]
    pub looked_ms: Option<u64>,
}

/// The `schema` field of a result: always [`SCHEMA_VERSION`] when written; whatever an
/// older message held when read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SchemaVersion;

impl Serialize for SchemaVersion {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u32(SCHEMA_VERSION)
    }
}

impl<'de> Deserialize<'de> for SchemaVersion {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        serde::de::IgnoredAny::deserialize(d).map(|_| SchemaVersion)
    }
}

/// Current time as RFC 3339 (UTC, seconds).
pub fn now_rfc3339() -> String {
    humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string()
}

/// A time in milliseconds since the Unix epoch as RFC 3339 (UTC, seconds).
pub fn rfc3339_of_ms(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    humantime::format_rfc3339_seconds(t).to_string()
}

#[cfg(test)]
impl Report {
    /// A report of `verdict` for `key`, with nothing else to say: for unit tests.
    pub(crate) fn sample(key: &str, verdict: Verdict) -> Report {
        Report {
            schema: SchemaVersion,
            job_id: key.into(),
            url: format!("http://{key}.test/"),
            verdict,
            reason: Reason::Ok,
            detail: String::new(),
            http: None,
            timing_ms: Timing::default(),
            ip: None,
            egress: Some("direct".into()),
            attempts: 1,
            attempt_log: vec![],
            checked_at: now_rfc3339(),
            cached: false,
            key: Some(key.into()),
            previous_verdict: None,
            changed: false,
            streak: 1,
            since: None,
            worker: "w".into(),
            meta: None,
            tls_days_left: None,
            looked_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(json: &str) -> Job {
        match decode(json.as_bytes(), "fallback", 65536).expect("decodes") {
            Decoded::Job(j) => *j,
            Decoded::Rejected(r) => panic!("rejected: {}", r.detail),
        }
    }

    fn rejected(json: &str) -> Rejected {
        match decode(json.as_bytes(), "fallback", 65536).expect("decodes") {
            Decoded::Rejected(r) => r,
            Decoded::Job(j) => panic!("accepted: {j:?}"),
        }
    }

    /// The refusal goes to every subscriber of the results exchange and into
    /// `picket results` tables: the password a publisher put in a URL must not.
    #[test]
    fn a_url_refused_for_its_credentials_is_echoed_without_its_password() {
        let r = rejected(r#"{"url":"http://user:secretpw@a.example/priv"}"#);
        assert!(r.detail.contains("credentials"), "{}", r.detail);
        assert_eq!(r.url, "http://***:***@a.example/priv");
        let r = rejected(r#"{"url":"ftp://a.example/x"}"#);
        assert_eq!(r.url, "ftp://a.example/x", "nothing to hide: as given");
    }

    /// The same for a password in a URL refused for something else as well (a port out
    /// of range: the URL does not parse), where the refusal's detail quotes the URL too.
    #[test]
    fn a_url_that_does_not_parse_is_echoed_without_its_password() {
        let r = rejected(r#"{"url":"http://user:secretpw@a.example:99999/priv"}"#);
        assert!(
            !r.url.contains("secretpw") && !r.detail.contains("secretpw"),
            "url {:?}, detail {:?}",
            r.url,
            r.detail
        );
    }

    /// A token given as the URL's user (`https://TOKEN@host/`, as Git hosts and many
    /// APIs take it) is as secret as a password, and refused for the same reason.
    #[test]
    fn a_token_in_the_user_of_a_refused_url_is_not_echoed() {
        let r = rejected(r#"{"url":"https://ghp_secrettoken123@a.example/priv"}"#);
        assert!(r.detail.contains("credentials"), "{}", r.detail);
        assert!(!r.url.contains("ghp_secrettoken123"), "{}", r.url);
    }

    #[test]
    fn an_unknown_job_field_is_refused_by_name_with_the_schema_version() {
        let Decoded::Rejected(r) =
            decode(br#"{"url":"http://a.example/","colour":"red"}"#, "f", 65536).expect("JSON")
        else {
            panic!("a job with an unknown field is refused");
        };
        assert!(r.detail.contains("`colour`"), "{}", r.detail);
        assert!(
            r.detail
                .contains(&format!("job schema version {SCHEMA_VERSION}")),
            "{}",
            r.detail
        );
    }

    #[test]
    fn a_result_says_its_schema_version() {
        let v: Value = serde_json::from_str(r#"{"schema":7}"#).expect("json");
        assert_eq!(v["schema"], 7);
        let r: SchemaVersion = serde_json::from_value(v["schema"].clone()).expect("any is read");
        assert_eq!(serde_json::to_value(r).expect("ser"), SCHEMA_VERSION);
    }

    #[test]
    fn full_contract_example_decodes() {
        let j = job(
            r#"{"id":"a1b2","url":"https://www.example.gov/","method":"GET",
            "headers":{"Accept-Language":"zh-CN"},"timeout_ms":30000,
            "expect":{"status":[200,301],"min_body_bytes":512,"body_contains":"欢迎",
            "body_not_contains":"Access Denied","max_latency_ms":5000},
            "max_age_s":60,"meta":{"anything":"echoed back unchanged"}}"#,
        );
        assert_eq!(j.id, "a1b2");
        assert_eq!(j.url.as_str(), "https://www.example.gov/");
        assert_eq!(j.timeout, Some(Duration::from_secs(30)));
        assert_eq!(j.expect.status, Some(vec![200, 301]));
        assert_eq!(j.expect.body_contains.as_deref(), Some("欢迎"));
        assert_eq!(j.max_age, Some(Duration::from_secs(60)));
        assert_eq!(j.headers, vec![("Accept-Language".into(), "zh-CN".into())]);
        assert_eq!(
            j.meta.as_ref().map(RawJson::get),
            Some(r#"{"anything":"echoed back unchanged"}"#)
        );
    }

    #[test]
    fn id_falls_back_to_message_id() {
        assert_eq!(job(r#"{"url":"http://a.example/"}"#).id, "fallback");
        assert_eq!(job(r#"{"id":17,"url":"http://a.example/"}"#).id, "17");
    }

    /// A numeric id is its digits as written: read as a float, big ones lost digits and
    /// two jobs' ids could become one ("1.8446744073709552e+19").
    #[test]
    fn a_numeric_id_keeps_every_digit() {
        for n in [
            "18446744073709551616",
            "12345678901234567890123",
            "-3",
            "2.50",
        ] {
            let text = format!(r#"{{"id": {n} ,"url":"http://a.example/"}}"#);
            assert_eq!(job(&text).id, n);
        }
    }

    #[test]
    fn not_a_job_is_told_apart_from_a_wrong_job() {
        for bad in [
            &b"not json"[..],
            b"\xff\xfe\x00",
            b"[1,2]",
            b"\"http://x/\"",
            b"null",
        ] {
            assert!(decode(bad, "f", 65536).is_err(), "{bad:?}");
        }
        let big = vec![b' '; 70_000];
        assert!(decode(&big, "f", 65536).is_err());
    }

    #[test]
    fn wrong_jobs_are_rejected_with_a_reason() {
        let cases = [
            (r#"{"url":"ftp://a.example/"}"#, "scheme"),
            (r#"{"url":"not a url"}"#, "not a valid URL"),
            (r#"{"url":""}"#, "empty"),
            (r#"{}"#, "url"),
            (r#"{"url":42}"#, "job format"),
            (r#"{"url":"http://a.example/","method":"POST"}"#, "method"),
            (
                r#"{"url":"http://a.example/","timeout_ms":5}"#,
                "timeout_ms",
            ),
            (
                r#"{"url":"http://a.example/","expect":{"status":[]}}"#,
                "expect.status",
            ),
            (
                r#"{"url":"http://a.example/","expect":{"status":[999]}}"#,
                "999",
            ),
            (
                r#"{"url":"http://a.example/","headers":{"Host":"x"}}"#,
                "Host",
            ),
            (
                r#"{"url":"http://a.example/","headers":{"Bad Name":"x"}}"#,
                "not valid",
            ),
            (r#"{"url":"http://u:p@a.example/"}"#, "credentials"),
            (r#"{"url":"http://a.example/","surprise":1}"#, "surprise"),
        ];
        for (json, needle) in cases {
            let r = rejected(json);
            assert!(r.detail.contains(needle), "{json}: {}", r.detail);
        }
        let long = format!(
            r#"{{"id":"x","url":"http://a.example/{}"}}"#,
            "a".repeat(5000)
        );
        let r = rejected(&long);
        assert_eq!(r.id, "x");
        assert!(r.detail.contains("longer"));
    }

    #[test]
    fn rejected_keeps_id_and_meta() {
        let r = rejected(r#"{"id":"j1","url":"gopher://x/","meta":{"k":1}}"#);
        assert_eq!(r.id, "j1");
        assert_eq!(r.url, "gopher://x/");
        assert_eq!(r.meta.as_ref().map(RawJson::get), Some(r#"{"k":1}"#));
    }

    /// CONTRACT: `meta` is "echoed back unchanged"; a job's `"meta": null` came back
    /// with no `meta` at all.
    #[test]
    fn a_null_meta_is_echoed_as_null() {
        let j = job(r#"{"url":"http://a.example/","meta":null}"#);
        assert_eq!(j.meta.as_ref().map(RawJson::get), Some("null"));
        let r = rejected(r#"{"url":"ftp://a.example/","meta":null}"#);
        assert_eq!(r.meta.as_ref().map(RawJson::get), Some("null"));
        let mut report = Report::sample("k", Verdict::Up);
        report.meta = j.meta.clone();
        let text = serde_json::to_string(&report).expect("serializes");
        assert!(text.contains(r#""meta":null"#), "{text}");
        let absent = job(r#"{"url":"http://a.example/"}"#);
        assert!(absent.meta.is_none(), "no meta sent, none echoed");
    }

    #[test]
    fn meta_numbers_and_key_order_come_back_exactly_as_sent() {
        let meta = r#"{"z":123456789012345678901234567890,"a":0.1000000000000000055511151231257827,"m":[1e400,-0.0]}"#;
        let j = job(&format!(r#"{{"url":"http://a.example/","meta":{meta}}}"#));
        assert_eq!(j.meta.as_ref().map(RawJson::get), Some(meta));
        let r = rejected(&format!(r#"{{"url":"ftp://a.example/","meta":{meta}}}"#));
        assert_eq!(r.meta.as_ref().map(RawJson::get), Some(meta));
    }

    #[test]
    fn meta_nested_deeper_than_readers_take_is_not_a_job() {
        let deep = format!(
            r#"{{"url":"http://a.example/","meta":{}{}}}"#,
            "[".repeat(5000),
            "]".repeat(5000)
        );
        assert!(decode(deep.as_bytes(), "f", 1 << 20).is_err());
        assert_eq!(nesting(r#"{"a":"[[[{","b":[[1],{"c":"\"]"}]}"#), 3);
    }

    #[test]
    fn a_job_has_its_own_key_or_a_derived_one() {
        assert_eq!(
            job(r#"{"url":"http://a.example/","key":"site-1"}"#).key,
            "site-1"
        );
        let plain = job(r#"{"url":"http://a.example/"}"#).key;
        assert_eq!(
            plain,
            job_for_url("http://a.example/", "x").expect("job").key
        );
        let other = job(r#"{"url":"http://a.example/","expect":{"body_contains":"x"}}"#).key;
        assert_ne!(plain, other);
        let long = format!(
            r#"{{"url":"http://a.example/","key":"{}"}}"#,
            "k".repeat(201)
        );
        assert!(rejected(&long).detail.contains("key"));
        assert!(rejected(r#"{"url":"http://a.example/","key":""}"#)
            .detail
            .contains("key"));
        // A refused job keeps a key when its URL is usable, and none when it is not.
        let r = rejected(r#"{"url":"http://a.example/","method":"POST"}"#);
        assert!(r.key.is_some_and(|k| k != plain));
        assert_eq!(rejected(r#"{"url":"not a url"}"#).key, None);
        assert_eq!(
            rejected(r#"{"url":"nope","key":"mine"}"#).key.as_deref(),
            Some("mine")
        );
    }

    /// Hunt U: a publisher whose numbers are doubles (Python floats, Jackson's `Double`,
    /// JavaScript) writes `30000.0`; JSON Schema's `integer`, which the job schema says,
    /// takes it, and picket refused the job. A fraction is still refused.
    #[test]
    fn whole_numbers_written_as_floats_are_read() {
        let j = job(
            r#"{"url":"http://a.example/","timeout_ms":5000.0,"max_age_s":6e1,
                "expect":{"status":[200.0,301],"min_body_bytes":512.0,"max_latency_ms":1e3}}"#,
        );
        assert_eq!(j.timeout, Some(Duration::from_secs(5)));
        assert_eq!(j.max_age, Some(Duration::from_secs(60)));
        assert_eq!(j.expect.status, Some(vec![200, 301]));
        assert_eq!(j.expect.min_body_bytes, Some(512));
        assert_eq!(j.expect.max_latency_ms, Some(1000));
        let same = job(
            r#"{"url":"http://a.example/","timeout_ms":5000,"max_age_s":60,
                "expect":{"status":[200,301],"min_body_bytes":512,"max_latency_ms":1000}}"#,
        );
        assert_eq!(j.key, same.key, "the same check");
        for bad in [
            r#""timeout_ms":5000.5"#,
            r#""max_age_s":-1.0"#,
            r#""expect":{"status":[200.5]}"#,
        ] {
            let r = rejected(&format!(r#"{{"url":"http://a.example/",{bad}}}"#));
            assert!(!r.detail.is_empty(), "{bad}");
        }
    }

    /// Hunt U: a HEAD job whose `expect` asks about the page can never pass (a HEAD
    /// answer has no body): `body_contains` was a confirmed `down/body_mismatch` for a
    /// working site, and `min_body_bytes` or `body_not_contains` were silently ignored.
    /// Such a job is wrong, and says why.
    #[test]
    fn a_head_job_asking_about_the_page_is_refused() {
        for expect in [
            r#"{"body_contains":"Welcome"}"#,
            r#"{"body_not_contains":"Error"}"#,
            r#"{"min_body_bytes":100}"#,
        ] {
            let r = rejected(&format!(
                r#"{{"url":"http://a.example/","method":"head","expect":{expect}}}"#
            ));
            assert!(r.detail.contains("HEAD"), "{expect}: {}", r.detail);
        }
        job(r#"{"url":"http://a.example/","method":"HEAD","expect":{"status":[200]}}"#);
        job(r#"{"url":"http://a.example/","expect":{"min_body_bytes":100}}"#);
    }

    #[test]
    fn report_serializes_contract_fields() {
        let r = Report {
            timing_ms: Timing {
                total: 5,
                ..Timing::default()
            },
            ..Report::sample("k", Verdict::Up)
        };
        let v = serde_json::to_value(&r).expect("json");
        for key in [
            "job_id",
            "url",
            "verdict",
            "reason",
            "detail",
            "http",
            "timing_ms",
            "ip",
            "egress",
            "attempts",
            "checked_at",
            "cached",
            "previous_verdict",
            "changed",
            "worker",
            "key",
            "streak",
            "since",
        ] {
            assert!(v.get(key).is_some(), "missing {key}");
        }
        assert_eq!(v["verdict"], "up");
        assert_eq!(v["timing_ms"]["total"], 5);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Any bytes at all: a job, a rejected job, or not a job, never a panic.
        #[test]
        fn decode_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode(&bytes, "f", 512);
        }

        /// JSON objects with arbitrary field values decode to a verdict on them.
        #[test]
        fn json_objects_are_always_answered(
            url in ".{0,80}",
            id in proptest::option::of(".{0,20}"),
            timeout in proptest::option::of(any::<u64>()),
            status in proptest::option::of(proptest::collection::vec(any::<u16>(), 0..4)),
        ) {
            let mut obj = serde_json::json!({ "url": url });
            if let Some(id) = id { obj["id"] = id.into(); }
            if let Some(t) = timeout { obj["timeout_ms"] = t.into(); }
            if let Some(s) = status { obj["expect"] = serde_json::json!({ "status": s }); }
            let bytes = obj.to_string().into_bytes();
            let decoded = decode(&bytes, "f", 1 << 20);
            prop_assert!(decoded.is_ok(), "a JSON object is never dead-lettered");
            if let Ok(Decoded::Job(job)) = decoded {
                prop_assert!(job.url.scheme() == "http" || job.url.scheme() == "https");
                prop_assert!(job.url.host_str().is_some_and(|h| !h.is_empty()));
                prop_assert!(job.url.as_str().len() <= MAX_URL_LEN + 16);
            }
        }
    }
}
