//! The forms a `caIssuers` URL serves certificates in: one DER certificate (most CAs),
//! a "certs-only" PKCS#7/CMS bundle, BER or DER (`.p7c`: RFC 5280 allows both, and US
//! federal, military and other government CAs serve bundles), or PEM (seen on small
//! CAs' servers). Browsers read all of them; Chromium's fetcher reads DER and PKCS#7.

use rustls::pki_types::CertificateDer;
use x509_parser::asn1_rs::{Any, Class, FromBer, Oid, Tag};

/// Certificates taken from one answer at most: a bundle may hold a CA's whole family
/// (a federal bridge's cross-certificates), and each is offered to every verification.
pub(super) const MAX_CERTS: usize = 16;

/// The content type `pkcs7-signedData` (1.2.840.113549.1.7.2), as encoded in an OID.
const SIGNED_DATA: [u8; 9] = [0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, 0x02];

/// The certificates in an answer, in its order ([`MAX_CERTS`] at most); none when it
/// holds none in a form read here.
pub(super) fn parse_certificates(bytes: &[u8]) -> Vec<CertificateDer<'static>> {
    let mut certs = if let Some(cert) = leading_certificate(bytes) {
        vec![cert]
    } else if let Some(bundle) = pkcs7(bytes) {
        bundle
    } else {
        pem(bytes)
    };
    certs.truncate(MAX_CERTS);
    certs
}

/// The DER certificate `der` starts with (what follows it, a stray newline say, is left).
fn leading_certificate(der: &[u8]) -> Option<CertificateDer<'static>> {
    let (rest, _) = x509_parser::parse_x509_certificate(der).ok()?;
    Some(CertificateDer::from(der[..der.len() - rest.len()].to_vec()))
}

/// The `CERTIFICATE` blocks of a PEM file.
fn pem(bytes: &[u8]) -> Vec<CertificateDer<'static>> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(bytes)
        .map_while(Result::ok)
        .filter(|der| x509_parser::parse_x509_certificate(der).is_ok())
        .collect()
}

/// The certificates of a PKCS#7 `ContentInfo` holding `SignedData` (its optional
/// `certificates [0] IMPLICIT SET OF Certificate`); `None` when it is not one.
fn pkcs7(ber: &[u8]) -> Option<Vec<CertificateDer<'static>>> {
    let (_, content_info) = Any::from_ber(ber).ok()?;
    if content_info.tag() != Tag::Sequence {
        return None;
    }
    let (rest, content_type) = Oid::from_ber(content_info.data).ok()?;
    if content_type.as_bytes() != SIGNED_DATA {
        return None;
    }
    // content [0] EXPLICIT SignedData
    let (_, content) = Any::from_ber(rest).ok()?;
    let (_, signed_data) = Any::from_ber(content.data).ok()?;
    let mut fields = signed_data.data;
    while !fields.is_empty() {
        let (rest, field) = Any::from_ber(fields).ok()?;
        if field.class() == Class::ContextSpecific && field.tag() == Tag(0) {
            return Some(certificates_in(field.data));
        }
        fields = rest;
    }
    Some(Vec::new())
}

/// The DER certificates laid one after another in `set`.
fn certificates_in(mut set: &[u8]) -> Vec<CertificateDer<'static>> {
    let mut certs = Vec::new();
    while certs.len() < MAX_CERTS {
        let Some(cert) = leading_certificate(set) else {
            break;
        };
        set = &set[cert.len()..];
        certs.push(cert);
    }
    certs
}
