//! Certificate chains that servers send incomplete, completed as browsers complete them.
//!
//! Many small sites install their own certificate and not the intermediate that signs
//! it. Browsers still show such a site: they fetch the missing intermediate from the URL
//! the certificate names (its Authority Information Access `caIssuers`), or know it
//! already; curl and most libraries do not, and call the site broken. picket does what
//! browsers do:
//! - [`ChainVerifier`] verifies as rustls's WebPKI verifier does; when the issuer is
//!   missing it tries again with the intermediates fetched before ([`Issuers`]), and
//!   failing that fails with a [`MissingIssuer`] that names where to fetch it;
//! - the prober fetches it (`fetch`: within the probe's time, through the same egress,
//!   screened by the address policy and counted by the per-IP limit) and offers it to
//!   [`Issuers::complete`], then asks the site again.
//!
//! A fetched certificate is only ever a candidate intermediate: the chain must still end
//! at a trusted root and pass every check WebPKI makes, so it adds no trust of its own.

mod failed;
mod fetch;
mod formats;
mod moved;

pub(in crate::http) use fetch::Incomplete;

use std::collections::{HashSet, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Arc, Mutex, PoisonError};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

/// Intermediates kept: far more than the issuing CAs of the web, few enough to try all.
const KEPT: usize = 128;

/// Leaves whose chain a kept intermediate completed, remembered for the note.
const COMPLETED_KEPT: usize = 4096;

/// Where the WebPKI verifier of the roots trusted now comes from: `tls::Trust`, which
/// reads them again when their files change, or fixed roots.
pub(super) trait Roots: Send + Sync + std::fmt::Debug {
    fn verifier(&self) -> Arc<WebPkiServerVerifier>;
}

impl Roots for Arc<WebPkiServerVerifier> {
    fn verifier(&self) -> Arc<WebPkiServerVerifier> {
        Arc::clone(self)
    }
}

/// The intermediates fetched so far, shared by every probe of the process.
#[derive(Debug)]
pub(super) struct Issuers {
    roots: Arc<dyn Roots>,
    kept: Mutex<VecDeque<Kept>>,
    /// Hashes of leaves whose chain only a kept intermediate completed.
    completed: Mutex<HashSet<u64>>,
    /// `caIssuers` URLs that failed lately, not asked again for a while.
    failed: failed::FailedUrls,
    /// `caIssuers` URLs that redirected lately, and where to.
    moved: moved::MovedUrls,
}

#[derive(Debug)]
struct Kept {
    cert: CertificateDer<'static>,
    /// Its `notAfter` (seconds since the epoch): an expired one is no longer offered.
    not_after: i64,
    /// The `caIssuers` URLs it was fetched at: it completes only chains that name one,
    /// as fetching that URL again would. A chain naming none, or other URLs, gets what
    /// a fetch of its own gives, whatever this process fetched for other sites.
    from: Vec<String>,
}

/// A site's chain lacks the certificate that signs its last one, and the certificates
/// name where it may be fetched.
#[derive(Debug)]
pub(super) struct MissingIssuer {
    pub(super) leaf: CertificateDer<'static>,
    pub(super) presented: Vec<CertificateDer<'static>>,
    /// `caIssuers` URLs: the leaf's first, then the presented intermediates'.
    pub(super) urls: Vec<String>,
}

impl std::fmt::Display for MissingIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the server does not send the certificate that signs its own (an incomplete chain)"
        )
    }
}

impl std::error::Error for MissingIssuer {}

impl Issuers {
    pub(super) fn new(roots: Arc<dyn Roots>) -> Issuers {
        Issuers {
            roots,
            kept: Mutex::new(VecDeque::new()),
            completed: Mutex::new(HashSet::new()),
            failed: failed::FailedUrls::default(),
            moved: moved::MovedUrls::default(),
        }
    }

    /// Verifies `leaf` for `name` as WebPKI does, completing its chain from the kept
    /// intermediates when the server sent it incomplete.
    fn verify(
        &self,
        leaf: &CertificateDer<'_>,
        presented: &[CertificateDer<'_>],
        name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let webpki = self.roots.verifier();
        match webpki.verify_server_cert(leaf, presented, name, ocsp, now) {
            Err(e) if unknown_issuer(&e) => {}
            other => return other,
        }
        // Only a chain that names where its issuer is may be completed from what was
        // fetched there before.
        let named = missing(leaf, presented);
        let kept = named
            .as_ref()
            .map_or_else(Vec::new, |m| self.kept(&m.urls, now));
        if !kept.is_empty() {
            let mut all: Vec<CertificateDer<'_>> = presented.to_vec();
            all.extend(kept);
            match webpki.verify_server_cert(leaf, &all, name, ocsp, now) {
                Ok(verified) => {
                    self.remember_completed(leaf);
                    return Ok(verified);
                }
                Err(e) if unknown_issuer(&e) => {}
                // With its chain complete the certificate is wrong in another way.
                Err(e) => return Err(e),
            }
        }
        Err(named.map_or(
            Error::InvalidCertificate(CertificateError::UnknownIssuer),
            |m| Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(m)))),
        ))
    }

    /// Offers certificates fetched for `missing` (in the order fetched): when they
    /// complete its chain to a trusted root, they are kept for every later probe, even if
    /// the leaf is not for `host` (asked again, the site then fails on its own fault, not
    /// on the chain). `Ok(false)` when the issuer is still missing; the error when a
    /// fetched certificate is itself at fault (expired, say).
    pub(super) fn complete(
        &self,
        missing: &MissingIssuer,
        host: &str,
        (fetched, from): (&[CertificateDer<'static>], &[String]),
    ) -> Result<bool, Error> {
        let name = ServerName::try_from(host.to_string())
            .map_err(|_| Error::General(format!("{host} is not a name TLS can verify")))?;
        let mut all = missing.presented.clone();
        all.extend(fetched.iter().cloned());
        let webpki = self.roots.verifier();
        match webpki.verify_server_cert(&missing.leaf, &all, &name, &[], UnixTime::now()) {
            Ok(_)
            | Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) if unknown_issuer(&e) => return Ok(false),
            Err(e) => return Err(e),
        }
        let mut kept = self.kept.lock().unwrap_or_else(PoisonError::into_inner);
        for cert in fetched {
            let Some(not_after) = ca_not_after(cert) else {
                continue;
            };
            if let Some(k) = kept.iter_mut().find(|k| k.cert == *cert) {
                for url in from {
                    if !k.from.contains(url) {
                        k.from.push(url.clone());
                    }
                }
                continue;
            }
            if kept.len() == KEPT {
                kept.pop_front();
            }
            kept.push_back(Kept {
                cert: cert.clone(),
                not_after,
                from: from.to_vec(),
            });
        }
        Ok(true)
    }

    /// Whether a kept intermediate completed the chain of the site whose leaf is `der`.
    pub(super) fn was_completed(&self, der: &[u8]) -> bool {
        let completed = self
            .completed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        // Asked of every answer over TLS: most processes never complete a chain.
        !completed.is_empty() && completed.contains(&leaf_hash(der))
    }

    /// Whether the kept intermediates complete `missing`'s chain now: another probe
    /// fetched the issuer while this one could not.
    pub(super) fn kept_complete(&self, missing: &MissingIssuer, host: &str) -> bool {
        let kept = self.kept(&missing.urls, UnixTime::now());
        !kept.is_empty() && matches!(self.complete(missing, host, (&kept, &[])), Ok(true))
    }

    /// The kept intermediates still valid at `now` that were fetched at one of `urls`.
    fn kept(&self, urls: &[String], now: UnixTime) -> Vec<CertificateDer<'static>> {
        let now = i64::try_from(now.as_secs()).unwrap_or(i64::MAX);
        self.kept
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|k| k.not_after > now && k.from.iter().any(|u| urls.contains(u)))
            .map(|k| k.cert.clone())
            .collect()
    }

    fn remember_completed(&self, leaf: &CertificateDer<'_>) {
        let mut completed = self
            .completed
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if completed.len() >= COMPLETED_KEPT {
            completed.clear();
        }
        completed.insert(leaf_hash(leaf));
    }
}

fn leaf_hash(der: &[u8]) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    der.hash(&mut h);
    h.finish()
}

fn unknown_issuer(e: &Error) -> bool {
    matches!(
        e,
        Error::InvalidCertificate(CertificateError::UnknownIssuer)
    )
}

/// The [`MissingIssuer`] for a chain whose certificates name where their issuers are;
/// `None` when none does (nothing to fetch: the plain unknown-issuer error stands).
fn missing(leaf: &CertificateDer<'_>, presented: &[CertificateDer<'_>]) -> Option<MissingIssuer> {
    let mut urls: Vec<String> = Vec::new();
    for cert in std::iter::once(leaf).chain(presented) {
        for url in ca_issuers(cert) {
            if !urls.contains(&url) {
                urls.push(url);
            }
        }
    }
    if urls.is_empty() {
        return None;
    }
    Some(MissingIssuer {
        leaf: leaf.clone().into_owned(),
        presented: presented.iter().map(|c| c.clone().into_owned()).collect(),
        urls,
    })
}

/// The `caIssuers` URLs of a certificate's Authority Information Access.
pub(super) fn ca_issuers(der: &[u8]) -> Vec<String> {
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::oid_registry::OID_PKIX_ACCESS_DESCRIPTOR_CA_ISSUERS;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else {
        return Vec::new();
    };
    let mut urls = Vec::new();
    for ext in cert.extensions() {
        if let ParsedExtension::AuthorityInfoAccess(aia) = ext.parsed_extension() {
            for desc in aia.iter() {
                if desc.access_method == OID_PKIX_ACCESS_DESCRIPTOR_CA_ISSUERS {
                    if let GeneralName::URI(uri) = desc.access_location {
                        urls.push(uri.to_string());
                    }
                }
            }
        }
    }
    urls
}

/// A CA certificate's `notAfter`; `None` for anything that cannot sign certificates.
fn ca_not_after(der: &[u8]) -> Option<i64> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    cert.is_ca().then(|| cert.validity().not_after.timestamp())
}

/// rustls's WebPKI verifier with the chain completion above.
#[derive(Debug)]
pub(super) struct ChainVerifier(pub(super) Arc<Issuers>);

impl ServerCertVerifier for ChainVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        if let Some(hop) = super::pin::current() {
            let _ = hop.leaf.set(end_entity.to_vec());
        }
        self.0
            .verify(end_entity, intermediates, server_name, ocsp_response, now)
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0
            .roots
            .verifier()
            .verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.0
            .roots
            .verifier()
            .verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.roots.verifier().supported_verify_schemes()
    }
}

/// The [`MissingIssuer`] inside a rustls error, if that is why it failed.
pub(super) fn missing_issuer(e: &Error) -> Option<&MissingIssuer> {
    match e {
        Error::InvalidCertificate(CertificateError::Other(OtherError(inner))) => {
            inner.downcast_ref::<MissingIssuer>()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests;
