//! What TLS trusts and what a certificate says: the rustls configuration (bundled and
//! system roots, `tls.extra_ca_file`), the extra CA for the OpenSSL fallback, and how
//! many days a site's certificate has left.
//!
//! The roots are read again when `tls.extra_ca_file` or the system's bundle changes
//! ([`Trust`]): an operator who rotates an internal CA, or adds one with
//! `update-ca-certificates`, gets the next handshake trusting it, where a restart of
//! every worker was needed (Go's and curl's clients read them once too; a monitor that
//! runs for weeks reports every internal site `degraded/tls` meanwhile).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;

use super::issuers::{ChainVerifier, Issuers, Roots};
use super::SetupError;
use crate::config::TlsSettings;
use crate::probe::CertDays;
use crate::reread::{Looks, Reread};

/// Builds the rustls configuration: bundled roots, system roots, and the extra CA file,
/// verified as browsers verify (a chain the server sends incomplete is completed:
/// `issuers`).
///
/// # Errors
/// The extra CA file is unreadable or empty, or rustls refuses the configuration.
pub fn tls_config(settings: &TlsSettings) -> Result<rustls::ClientConfig, SetupError> {
    trust(settings).map(|(config, _, _)| config)
}

/// The rustls configuration, the intermediates its verifier completes chains with, and
/// the roots both follow.
pub(super) fn trust(
    settings: &TlsSettings,
) -> Result<(rustls::ClientConfig, Arc<Issuers>, Arc<Trust>), SetupError> {
    let trust = Arc::new(Trust::new(settings)?);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let issuers = Arc::new(Issuers::new(trust.clone()));
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| SetupError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(ChainVerifier(issuers.clone())))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok((config, issuers, trust))
}

/// What TLS trusts, as last read: rustls's verifier over the roots, and
/// `tls.extra_ca_file`'s certificates for the OpenSSL client (which loads the system's
/// roots itself when it is built).
pub(super) struct Trusted {
    webpki: Arc<WebPkiServerVerifier>,
    pub(super) extra_ca: Vec<CertificateDer<'static>>,
}

/// The roots, read again when `tls.extra_ca_file`, the system's bundle or its directory
/// changes. A reading that fails (a file caught half written, or emptied) leaves the
/// last one.
pub(super) struct Trust {
    roots: Reread<Trusted>,
    looks: Looks,
}

impl Trust {
    fn new(settings: &TlsSettings) -> Result<Trust, SetupError> {
        let again = settings.clone();
        let read = Box::new(move || trusted(&again).map_err(|e| e.to_string()));
        let files = root_files(settings);
        let roots = Reread::new("tls roots", files, || trusted(settings), read)?;
        Ok(Trust {
            roots,
            looks: Looks::new(),
        })
    }

    /// What is trusted now; the files are looked at when it is time.
    pub(super) fn now(&self) -> Arc<Trusted> {
        if self.looks.due() {
            self.roots.look();
        }
        self.roots.get()
    }
}

impl Roots for Trust {
    fn verifier(&self) -> Arc<WebPkiServerVerifier> {
        Arc::clone(&self.now().webpki)
    }
}

impl std::fmt::Debug for Trust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Trust")
    }
}

/// The files the roots are read from: `tls.extra_ca_file`, and the system's bundle and
/// directory where rustls-native-certs finds them (`SSL_CERT_FILE`, `SSL_CERT_DIR`, or
/// OpenSSL's layout).
fn root_files(settings: &TlsSettings) -> Vec<PathBuf> {
    let system = openssl_probe::probe();
    settings
        .extra_ca_file
        .iter()
        .cloned()
        .chain(system.cert_file)
        .chain(system.cert_dir)
        .collect()
}

/// One reading of every root.
fn trusted(settings: &TlsSettings) -> Result<Trusted, SetupError> {
    let roots = Arc::new(roots(settings)?);
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| SetupError::Tls(e.to_string()))?;
    Ok(Trusted {
        webpki,
        extra_ca: extra_ca(settings)?,
    })
}

/// The roots: bundled, the system's, and `tls.extra_ca_file`.
fn roots(settings: &TlsSettings) -> Result<rustls::RootCertStore, SetupError> {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    // System roots are a bonus: a machine without them still has the bundled ones.
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        let _ = roots.add(cert);
    }
    if let Some(path) = &settings.extra_ca_file {
        let ca_err = |message: String| SetupError::CaFile {
            path: path.display().to_string(),
            message,
        };
        let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
        let mut added = 0;
        for cert in CertificateDer::pem_slice_iter(&pem) {
            let cert = cert.map_err(|e| ca_err(e.to_string()))?;
            roots.add(cert).map_err(|e| ca_err(e.to_string()))?;
            added += 1;
        }
        if added == 0 {
            return Err(ca_err("no PEM certificate in the file".into()));
        }
    }
    Ok(roots)
}

/// The certificates of `tls.extra_ca_file`, for the OpenSSL fallback.
fn extra_ca(settings: &TlsSettings) -> Result<Vec<CertificateDer<'static>>, SetupError> {
    let Some(path) = &settings.extra_ca_file else {
        return Ok(Vec::new());
    };
    let ca_err = |message: String| SetupError::CaFile {
        path: path.display().to_string(),
        message,
    };
    let pem = std::fs::read(path).map_err(|e| ca_err(e.to_string()))?;
    let certificates: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|e| ca_err(e.to_string()))?;
    // Checked as OpenSSL will read them, so that a bad one stops here.
    for der in &certificates {
        native_tls::Certificate::from_der(der).map_err(|e| ca_err(e.to_string()))?;
    }
    Ok(certificates)
}

/// Whole days from `now` until the site's certificate on `resp` expires (negative when
/// expired).
pub(super) fn days(resp: &reqwest::Response, now: SystemTime) -> Option<CertDays> {
    leaf(resp).and_then(|der| cert_days(der, now))
}

/// The site's own certificate (DER) on `resp`, when it came over TLS.
pub(super) fn leaf(resp: &reqwest::Response) -> Option<&[u8]> {
    resp.extensions()
        .get::<reqwest::tls::TlsInfo>()
        .and_then(reqwest::tls::TlsInfo::peer_certificate)
        // Through a tunnel the TLS is ours, and on its SOCKS path reqwest keeps no
        // `TlsInfo`: the certificate is then the one the verifier saw.
        .or_else(|| {
            resp.extensions()
                .get::<SiteCertificate>()
                .map(|c| c.0.as_slice())
        })
}

/// The site's certificate (DER) as picket's own TLS code saw it, kept on an answer
/// that has no reqwest `TlsInfo`.
#[derive(Clone)]
pub(super) struct SiteCertificate(pub(super) Vec<u8>);

/// Keeps the certificate `hop`'s handshake verified on `resp`, when reqwest kept none.
pub(super) fn keep_leaf(resp: &mut reqwest::Response, hop: &super::pin::Hop) {
    if leaf(resp).is_some() {
        return;
    }
    if let Some(der) = hop.leaf.get() {
        resp.extensions_mut().insert(SiteCertificate(der.clone()));
    }
}

/// Whole days from `now` until the certificate in `der` expires (negative when
/// expired: a certificate with hours left has 0 days, one expired an hour ago -1), and
/// the whole days it was issued for.
fn cert_days(der: &[u8], now: SystemTime) -> Option<CertDays> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let now = now.duration_since(SystemTime::UNIX_EPOCH).ok()?.as_secs() as i64;
    let validity = cert.validity();
    let end = validity.not_after.timestamp();
    let days = |secs: i64| i32::try_from(secs.div_euclid(86_400)).ok();
    Some(CertDays {
        left: days(end - now)?,
        lifetime: days(end - validity.not_before.timestamp())?,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const DAY: u64 = 86_400;

    /// A certificate expiring at midnight UTC on 2030-01-31, and that moment.
    fn expiring() -> (Vec<u8>, SystemTime) {
        let mut p = rcgen::CertificateParams::new(vec!["a.test".into()]).expect("params");
        p.not_before = rcgen::date_time_ymd(2029, 1, 1);
        p.not_after = rcgen::date_time_ymd(2030, 1, 31);
        let end = p.not_after.unix_timestamp() as u64;
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = p.self_signed(&key).expect("cert");
        (
            cert.der().to_vec(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(end),
        )
    }

    #[test]
    fn days_left_count_whole_days_and_go_negative_once_expired() {
        let (der, end) = expiring();
        let at = |secs_before: i64| {
            let t = if secs_before >= 0 {
                end - Duration::from_secs(secs_before as u64)
            } else {
                end + Duration::from_secs(secs_before.unsigned_abs())
            };
            cert_days(&der, t).map(|d| d.left)
        };
        assert_eq!(at(30 * DAY as i64), Some(30));
        assert_eq!(at(30 * DAY as i64 - 1), Some(29), "29 days and some hours");
        assert_eq!(at(3600), Some(0), "an hour left");
        assert_eq!(at(0), Some(0));
        assert_eq!(at(-1), Some(-1), "expired a second ago");
        assert_eq!(at(-(DAY as i64)), Some(-1));
        assert_eq!(at(-(DAY as i64) - 1), Some(-2));
    }

    #[test]
    fn bytes_that_are_no_certificate_have_no_days_left() {
        assert_eq!(cert_days(b"not DER", SystemTime::now()), None);
    }
}
