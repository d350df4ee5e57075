//! The value parsers every section shares: durations, AMQP-sized names, URLs with a
//! scheme, and the redaction of a URL's password for messages and logs. Each takes the
//! dotted key it reads, so that its error names the key.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use super::{invalid, ConfigError};

/// Longest duration any key takes.
const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// Longest AMQP name (queues, exchanges, consumer tags): the protocol's short string.
const MAX_AMQP_NAME: usize = 255;

/// Most requests a burst or an in-flight cap, and probes a worker, may allow.
pub(super) const MAX_COUNT: u32 = 100_000;

/// Deserializes a whole number for a count, a size or a number of days, refusing a
/// decimal: the config crate rounds `attempts = 1.5` to 2, and `config check` then
/// calls a value valid that the operator did not write. A decimal that is whole
/// (`3.0`) means that number.
pub(super) fn whole<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: TryFrom<i128>,
{
    use serde::de::{Error, Unexpected};
    let n = d.deserialize_any(WholeVisitor)?;
    T::try_from(n).map_err(|_| {
        D::Error::invalid_value(
            Unexpected::Other(&n.to_string()),
            &"a whole number in range",
        )
    })
}

/// The visitor of [`whole`]: integers as they are, whole decimals, and digits in a
/// string (an environment variable the crate did not parse).
struct WholeVisitor;

impl serde::de::Visitor<'_> for WholeVisitor {
    type Value = i128;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a whole number")
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<i128, E> {
        Ok(i128::from(v))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<i128, E> {
        Ok(i128::from(v))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<i128, E> {
        // Beyond 2^53 a decimal no longer says which whole number it is.
        const EXACT: f64 = 9_007_199_254_740_992.0;
        if v.is_finite() && v.fract() == 0.0 && v.abs() <= EXACT {
            #[allow(clippy::cast_possible_truncation)] // whole and within ±2^53
            return Ok(v as i128);
        }
        Err(E::invalid_value(serde::de::Unexpected::Float(v), &self))
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<i128, E> {
        v.trim()
            .parse()
            .map_err(|_| E::invalid_value(serde::de::Unexpected::Str(v), &self))
    }
}

/// Deserializes a list of strings without its blank entries: what a trailing comma or
/// an empty value leaves in an environment list (`PICKET__AMQP__URLS=a,b,`) is no entry,
/// in every list alike.
pub(super) fn entries<'de, D>(d: D) -> Result<Vec<String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let all: Vec<String> = serde::Deserialize::deserialize(d)?;
    Ok(all.into_iter().filter(|s| !s.trim().is_empty()).collect())
}

/// Parses `"1500ms"`, `"30s"`, `"10m"`.
///
/// # Errors
/// A message saying what the value should look like.
pub(crate) fn parse_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = humantime::parse_duration(value.trim()).map_err(|e| {
        invalid(
            key,
            format!("{value:?} is not a duration like \"1500ms\", \"30s\" or \"10m\" ({e})"),
        )
    })?;
    // Past a year a duration is a typo, and adding it to a clock could overflow.
    if d > MAX_DURATION {
        return Err(invalid(key, format!("{value:?} is longer than a year")));
    }
    Ok(d)
}

/// A duration that must not be zero (a timeout, a TTL).
pub(super) fn positive_duration(key: &str, value: &str) -> Result<Duration, ConfigError> {
    let d = parse_duration(key, value)?;
    if d.is_zero() {
        return Err(invalid(key, "must be greater than zero"));
    }
    Ok(d)
}

/// A name that must not be blank and must fit an AMQP short string.
pub(super) fn nonempty(key: &str, value: &str) -> Result<String, ConfigError> {
    if value.trim().is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    no_control(key, value)?;
    if value.len() > MAX_AMQP_NAME {
        return Err(invalid(
            key,
            format!(
                "is {} bytes; AMQP names are at most {MAX_AMQP_NAME}",
                value.len()
            ),
        ));
    }
    Ok(value.to_string())
}

/// Refuses a value with a control character: a `\r` an env file with Windows line ends
/// leaves on every value (RabbitMQ drops it from a queue's name but keeps it in the
/// queue's arguments and in a consume, which then fails for ever).
pub(super) fn no_control(key: &str, value: &str) -> Result<(), ConfigError> {
    match value.chars().find(|c| c.is_control()) {
        Some(c) => Err(invalid(
            key,
            format!(
                "{value:?} holds a control character ({c:?}): an env file with Windows line \
                 ends leaves \\r on every value"
            ),
        )),
        None => Ok(()),
    }
}

/// A URL with a host and one of `schemes`; the message never shows its password.
pub(super) fn url_with_scheme(
    key: &str,
    value: &str,
    schemes: &[&str],
) -> Result<Url, ConfigError> {
    let url = Url::parse(value)
        .map_err(|e| invalid(key, format!("{:?} is not a URL ({e})", redact_url(value))))?;
    if !schemes.contains(&url.scheme()) {
        return Err(invalid(
            key,
            format!(
                "scheme {:?} is not one of {}",
                url.scheme(),
                schemes.join(", ")
            ),
        ));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(invalid(key, "URL has no host"));
    }
    Ok(url)
}

/// Validates each URL of a list, naming the bad one as `key[i]`.
pub(super) fn each_url(key: &str, values: &[String], schemes: &[&str]) -> Result<(), ConfigError> {
    for (i, value) in values.iter().enumerate() {
        url_with_scheme(&format!("{key}[{i}]"), value, schemes)?;
    }
    Ok(())
}

/// Replaces the password of a URL (and any userinfo) so that it can be logged.
pub(crate) fn redact_url(value: &str) -> String {
    match Url::parse(value) {
        Ok(mut url) => {
            if url.password().is_some() {
                let _ = url.set_password(Some("***"));
            }
            url.to_string()
        }
        Err(_) => match value.rfind('@') {
            Some(at) => format!("***{}", &value[at..]),
            None => value.to_string(),
        },
    }
}

/// `value` as the path of a file that exists (checked at start, so that a typo stops
/// the start, not every connection).
pub(super) fn existing_file(key: &str, value: &str) -> Result<PathBuf, ConfigError> {
    let path = PathBuf::from(value);
    if path.is_dir() {
        return Err(invalid(
            key,
            format!("{}: is a directory, not a file", path.display()),
        ));
    }
    if !path.is_file() {
        return Err(invalid(key, format!("{}: no such file", path.display())));
    }
    Ok(path)
}

/// A file of CA certificates (`key`): readable, and at least one PEM certificate, each
/// well formed. Checked at start: a file that is no PEM passed `config check` and then
/// failed every connection made with it.
pub(super) fn pem_certificates(key: &str, path: &std::path::Path) -> Result<(), ConfigError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::CertificateDer;
    let at = |why: String| invalid(key, format!("{}: {why}", path.display()));
    let pem = std::fs::read(path).map_err(|e| at(format!("cannot read: {e}")))?;
    // Parsed as the TLS set-up parses them: a PEM block of base64 that is no X.509
    // certificate passes the PEM reading alone.
    let mut roots = rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&pem) {
        let cert = cert.map_err(|e| at(format!("not a PEM certificate: {e}")))?;
        roots
            .add(cert)
            .map_err(|e| at(format!("not a certificate: {e}")))?;
    }
    if roots.is_empty() {
        return Err(at("holds no PEM certificate".into()));
    }
    Ok(())
}

/// A CA file for a server reached over TLS (`key`): empty is none; otherwise a file
/// that exists (checked at start, so a typo does not leave every connection failing),
/// and every URL in `urls` must use `tls_scheme`, so that a CA file never sits beside a
/// connection that would go unencrypted.
pub(super) fn tls_file(
    key: &str,
    value: &str,
    urls: &[&str],
    tls_scheme: &str,
) -> Result<Option<PathBuf>, ConfigError> {
    if value.trim().is_empty() {
        return Ok(None);
    }
    let path = existing_file(key, value)?;
    let prefix = format!("{tls_scheme}://");
    if let Some(plain) = urls
        .iter()
        .find(|u| !u.trim_start().to_ascii_lowercase().starts_with(&prefix))
    {
        let scheme = plain.split("://").next().unwrap_or(plain);
        return Err(invalid(
            key,
            format!(
                "is set but a URL uses {scheme}://, without TLS: write {tls_scheme}:// (or leave {key} empty)"
            ),
        ));
    }
    Ok(Some(path))
}

/// Whether a connection's error says it ended in its TLS: a certificate refused, an
/// alert (a server's `CertificateRequired`), or a reset right after the handshake, which
/// is all a client often sees of a TLS 1.3 server refusing a missing client certificate.
/// For hints that name the TLS settings (`ca_file`, `client_cert_file`).
pub(crate) fn ended_in_tls(error: &str) -> bool {
    let m = error.to_ascii_lowercase();
    ["certificate", "alert", "handshake", "reset by peer"]
        .iter()
        .any(|w| m.contains(w))
}

/// A client certificate and its private key (PEM files), shown to a TLS server that
/// asks for one (mutual TLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientIdentity {
    /// The certificate (and any intermediates), PEM.
    pub cert_file: PathBuf,
    /// Its private key, PEM (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
}

/// `{section}.client_cert_file` and `{section}.client_key_file`: both or neither, each
/// an existing file, and only beside URLs that use `tls_scheme`.
pub(super) fn client_identity(
    section: &str,
    cert: &str,
    key: &str,
    urls: &[&str],
    tls_scheme: &str,
) -> Result<Option<ClientIdentity>, ConfigError> {
    let cert_key = format!("{section}.client_cert_file");
    let key_key = format!("{section}.client_key_file");
    let both = "give both the certificate and its key, or neither";
    match (cert.trim().is_empty(), key.trim().is_empty()) {
        (true, true) => Ok(None),
        (false, true) => Err(invalid(&key_key, format!("is empty: {both}"))),
        (true, false) => Err(invalid(&cert_key, format!("is empty: {both}"))),
        (false, false) => {
            let file = |k: &str, v: &str| {
                tls_file(k, v, urls, tls_scheme)?.ok_or_else(|| invalid(k, "is empty"))
            };
            Ok(Some(ClientIdentity {
                cert_file: file(&cert_key, cert)?,
                key_file: file(&key_key, key)?,
            }))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_exists_and_only_sits_beside_tls_urls() {
        let dir = tempfile::tempdir().expect("dir");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&ca, "PEM").expect("write");
        let file = ca.to_str().expect("utf-8 path");
        let tls = ["amqps://a:5671/%2f", "AMQPS://b:5671/%2f"];
        assert_eq!(tls_file("k", "", &tls, "amqps").expect("none"), None);
        assert_eq!(
            tls_file("k", file, &tls, "amqps").expect("ok"),
            Some(ca.clone())
        );
        let mixed = ["amqps://a:5671/%2f", "amqp://b:5672/%2f"];
        let e = tls_file("k", file, &mixed, "amqps").expect_err("a plain node");
        assert!(e.to_string().contains("amqp://, without TLS"), "{e}");
        let e = tls_file("k", "/no/such/ca.pem", &tls, "amqps").expect_err("missing");
        assert!(e.to_string().contains("no such file"), "{e}");
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("amqp://user:secret@host:5672/%2f"),
            "amqp://user:***@host:5672/%2f"
        );
        assert!(!redact_url("redis://:pw@h:1/0").contains("pw"));
    }

    #[test]
    fn durations_are_bounded_and_name_their_key() {
        assert_eq!(
            parse_duration("k.d", " 1500ms ").expect("ms"),
            Duration::from_millis(1500)
        );
        assert!(parse_duration("k.d", "2y").is_err());
        let e = parse_duration("k.d", "soon")
            .expect_err("words")
            .to_string();
        assert!(e.contains("k.d") && e.contains("soon"), "{e}");
        assert!(positive_duration("k.d", "0s")
            .expect_err("zero")
            .to_string()
            .contains("greater than zero"));
    }

    #[test]
    fn names_must_be_present_and_fit_amqp() {
        assert_eq!(nonempty("k.n", "q").expect("ok"), "q");
        assert!(nonempty("k.n", "  ").is_err());
        assert!(nonempty("k.n", &"q".repeat(256)).is_err());
    }

    #[test]
    fn a_list_of_urls_names_the_bad_entry_without_its_password() {
        let urls = vec!["amqp://a:5672".to_string(), "amqp://u:secret@".to_string()];
        let e = each_url("amqp.urls", &urls, &["amqp"])
            .expect_err("no host")
            .to_string();
        assert!(e.contains("amqp.urls[1]") && !e.contains("secret"), "{e}");
    }
}
