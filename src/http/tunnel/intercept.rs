//! Whether an HTTP-proxy egress looks into TLS (a corporate proxy's `ssl_bump`), told by
//! what it does with a tunnel to a host that does not exist:
//! - it presents a certificate for it, issued by its own CA: it intercepts TLS. Through
//!   it a site's own certificate is never seen: when a site's certificate fails through
//!   it, issued by that CA, the egress is why, and the site is not judged by it (its CA
//!   belongs in `tls.extra_ca_file`);
//! - it answers `200` and presents nothing: it answers a tunnel before it connects it,
//!   to read the ClientHello's server name, and may close a tunnel by its own rules
//!   (`ssl_bump terminate`). A handshake it closes is then no word of the site's;
//! - it refuses it: it connects a tunnel before it answers, and what comes through is
//!   the site's.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::time::Instant;

use super::{Proxy, TunnelError};
use crate::http::failure::rustls_inside;

/// The host a tunnel is asked for: `.invalid` names nothing (RFC 6761), so only a proxy
/// that makes up certificates presents one for it.
const NO_SUCH_SITE: &str = "picket-egress-check.invalid";

/// How long what was found is remembered.
const REMEMBERED: Duration = Duration::from_secs(600);

/// What a proxy does with a tunnel to a host that does not exist.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Stranger {
    /// It refused it (or did not answer in time): it connects a tunnel before it
    /// answers.
    Refused,
    /// It answered `200`, then presented no certificate: it answers a tunnel before it
    /// connects it.
    AnsweredFirst,
    /// It presented a certificate, issued by this: it intercepts TLS.
    Intercepts(String),
}

impl Stranger {
    /// Whether the proxy answers a tunnel before it connects it, so that what happens
    /// in a TLS handshake through it may be its own doing.
    pub(super) fn answers_first(&self) -> bool {
        *self != Stranger::Refused
    }
}

impl Proxy {
    /// What the proxy does with a tunnel to a host that does not exist; asked once per
    /// [`REMEMBERED`], within `within` for the tunnel and as long again for the
    /// handshake.
    pub(super) async fn stranger(&self, within: Duration) -> Stranger {
        let mut known = self.intercepts.lock().await;
        if let Some((_, found)) = known.as_ref().filter(|(at, _)| at.elapsed() < REMEMBERED) {
            return found.clone();
        }
        let found = self.ask_stranger(within).await;
        *known = Some((Instant::now(), found.clone()));
        found
    }

    /// A TLS failure `e` in a tunnel through this proxy, the site's certificate `leaf`
    /// if one came: the egress failing when the proxy had a hand in it (the certificate
    /// is one it made up, or it closed the handshake in a tunnel it answered before
    /// connecting it), else the site's.
    pub(super) async fn tls_failure(
        &self,
        e: std::io::Error,
        within: Duration,
        leaf: Option<&Vec<u8>>,
    ) -> TunnelError {
        use std::io::ErrorKind as K;
        let inside = rustls_inside(&e);
        let certificate = matches!(inside, Some(rustls::Error::InvalidCertificate(_)));
        let closed = inside.is_none()
            && matches!(
                e.kind(),
                K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted
            );
        if !certificate && !closed {
            return TunnelError::Tls(e);
        }
        match self.stranger(within).await {
            Stranger::Intercepts(made_up)
                if certificate && leaf.and_then(|l| issuer(l)).as_ref() == Some(&made_up) =>
            {
                TunnelError::Proxy(format!(
                    "it intercepts TLS: the certificate presented for the site ({e}) is \
                     issued by {made_up}, which also signs one for a host that does not \
                     exist, so the site's own certificate is not seen through it; put that \
                     CA in tls.extra_ca_file, or probe https through another egress"
                ))
            }
            stranger if closed && stranger.answers_first() => TunnelError::Proxy(format!(
                "it answers a tunnel before it connects it (it answered one to \
                 {NO_SUCH_SITE}, a host that does not exist), and it closed this one in the \
                 TLS handshake ({e}): its own rules (a TLS inspection policy such as squid's \
                 `ssl_bump terminate`) or its own failure, not a word of the site's; probe \
                 https through another egress"
            )),
            _ => TunnelError::Tls(e),
        }
    }

    /// [`Proxy::stranger`], asked: a tunnel to [`NO_SUCH_SITE`], and a handshake in it.
    async fn ask_stranger(&self, within: Duration) -> Stranger {
        let tunnel = async {
            let proxy = self.reach().await.ok()?;
            self.connect(proxy, &format!("{NO_SUCH_SITE}:443"))
                .await
                .ok()
        };
        let Ok(Some(tunnel)) = tokio::time::timeout(within, tunnel).await else {
            return Stranger::Refused;
        };
        let (Ok(name), Some(config)) = (ServerName::try_from(NO_SUCH_SITE), any_certificate())
        else {
            return Stranger::AnsweredFirst;
        };
        let handshake = tokio_rustls::TlsConnector::from(config).connect(name, tunnel);
        let Ok(Ok(tls)) = tokio::time::timeout(within, handshake).await else {
            return Stranger::AnsweredFirst;
        };
        let issued = tls.get_ref().1.peer_certificates().and_then(|c| c.first());
        match issued.and_then(|leaf| issuer(leaf)) {
            Some(by) => Stranger::Intercepts(by),
            None => Stranger::AnsweredFirst,
        }
    }
}

/// The issuer of a certificate (DER), as text.
pub(super) fn issuer(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(cert.issuer().to_string())
}

/// A TLS configuration that takes any certificate: what is asked is only what the proxy
/// presents, and nothing is sent over it.
fn any_certificate() -> Option<Arc<rustls::ClientConfig>> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
        .with_no_client_auth();
    Some(Arc::new(config))
}

/// Takes any certificate, checking only the handshake's signatures.
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.0.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}
