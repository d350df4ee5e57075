//! Whether an HTTP-proxy egress intercepts TLS (a corporate proxy's `ssl_bump`): it
//! answers a tunnel to a host that does not exist, and presents a certificate for it,
//! issued by its own CA. Through such a proxy a site's own certificate is never seen:
//! when a site's certificate fails through it, issued by that CA, the egress is why, and
//! the site is not judged by it (its CA belongs in `tls.extra_ca_file`).

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use tokio::time::Instant;

use super::Proxy;

/// The host a tunnel is asked for: `.invalid` names nothing (RFC 6761), so only a proxy
/// that makes up certificates presents one for it.
const NO_SUCH_SITE: &str = "picket-egress-check.invalid";

/// How long what was found is remembered.
const REMEMBERED: Duration = Duration::from_secs(600);

impl Proxy {
    /// The issuer of the certificate the proxy presents for a host that does not exist,
    /// if it presents one (it intercepts TLS); asked once per [`REMEMBERED`], within
    /// `within`.
    pub(super) async fn interceptor(&self, within: Duration) -> Option<String> {
        let mut known = self.intercepts.lock().await;
        if let Some((_, found)) = known.as_ref().filter(|(at, _)| at.elapsed() < REMEMBERED) {
            return found.clone();
        }
        let found = tokio::time::timeout(within, self.presented_issuer())
            .await
            .ok()
            .flatten();
        *known = Some((Instant::now(), found.clone()));
        found
    }

    /// The issuer of the certificate presented in a tunnel to [`NO_SUCH_SITE`].
    async fn presented_issuer(&self) -> Option<String> {
        let proxy = self.reach().await.ok()?;
        let tunnel = self
            .connect(proxy, &format!("{NO_SUCH_SITE}:443"))
            .await
            .ok()?;
        let name = ServerName::try_from(NO_SUCH_SITE).ok()?;
        let tls = tokio_rustls::TlsConnector::from(any_certificate()?)
            .connect(name, tunnel)
            .await
            .ok()?;
        let leaf = tls.get_ref().1.peer_certificates()?.first()?;
        issuer(leaf)
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
