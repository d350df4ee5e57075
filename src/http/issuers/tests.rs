use rcgen::{
    BasicConstraints, Certificate, CertificateParams, CustomExtension, IsCa, KeyPair,
    KeyUsagePurpose,
};

use super::*;

const AIA: &str = "http://ca.test/intermediate.crt";

/// A CA: its certificate and key.
struct Ca {
    cert: Certificate,
    key: KeyPair,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("params");
    p.distinguished_name
        .push(rcgen::DnType::CommonName, name.to_string());
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    p
}

fn root(name: &str) -> Ca {
    let key = KeyPair::generate().expect("key");
    let cert = ca_params(name).self_signed(&key).expect("root");
    Ca { cert, key }
}

fn intermediate(name: &str, by: &Ca) -> Ca {
    let key = KeyPair::generate().expect("key");
    let cert = ca_params(name)
        .signed_by(&key, &by.cert, &by.key)
        .expect("intermediate");
    Ca { cert, key }
}

/// A leaf for `host` signed by `by`, naming `aia` as where its issuer is.
fn leaf(host: &str, by: &Ca, aia: Option<&str>) -> CertificateDer<'static> {
    let key = KeyPair::generate().expect("key");
    let mut p = CertificateParams::new(vec![host.to_string()]).expect("params");
    p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
    if let Some(url) = aia {
        p.custom_extensions = vec![CustomExtension::from_oid_content(
            testbed::tls::AIA_OID,
            testbed::tls::aia_ca_issuers(url),
        )];
    }
    p.signed_by(&key, &by.cert, &by.key)
        .expect("leaf")
        .der()
        .clone()
}

/// The verifier's store, trusting `root` only.
fn issuers(root: &Ca) -> Issuers {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(root.cert.der().clone()).expect("root");
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let webpki = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider)
        .build()
        .expect("verifier");
    Issuers::new(Arc::new(webpki))
}

fn verify(i: &Issuers, leaf: &CertificateDer<'_>, host: &str) -> Result<ServerCertVerified, Error> {
    let name = ServerName::try_from(host.to_string()).expect("name");
    i.verify(leaf, &[], &name, &[], UnixTime::now())
}

fn missing_of(e: &Error) -> &MissingIssuer {
    missing_issuer(e).unwrap_or_else(|| panic!("not a missing issuer: {e:?}"))
}

#[test]
fn a_chain_sent_without_its_intermediate_fails_naming_where_to_fetch_it() {
    let root = root("root");
    let int = intermediate("intermediate", &root);
    let leaf = leaf("site.test", &int, Some(AIA));
    let i = issuers(&root);
    let err = verify(&i, &leaf, "site.test").expect_err("incomplete");
    assert_eq!(missing_of(&err).urls, [AIA]);
    assert!(!i.was_completed(&leaf));
}

#[test]
fn without_a_url_to_fetch_from_the_unknown_issuer_error_stands() {
    let root = root("root");
    let int = intermediate("intermediate", &root);
    let leaf = leaf("site.test", &int, None);
    let err = verify(&issuers(&root), &leaf, "site.test").expect_err("incomplete");
    assert!(unknown_issuer(&err), "{err:?}");
}

#[test]
fn a_fetched_intermediate_completes_the_chain_and_serves_later_probes() {
    let root = root("root");
    let int = intermediate("intermediate", &root);
    let leaf = leaf("site.test", &int, Some(AIA));
    let i = issuers(&root);
    let err = verify(&i, &leaf, "site.test").expect_err("incomplete");
    let fetched = [int.cert.der().clone()];
    assert!(matches!(
        i.complete(
            missing_of(&err),
            "site.test",
            (&fetched, &[AIA.to_string()])
        ),
        Ok(true)
    ));
    verify(&i, &leaf, "site.test").expect("completed from the kept intermediate");
    assert!(i.was_completed(&leaf));
    // Another site of the same CA needs no fetch of its own.
    let other = leaf_for_other_site(&int);
    verify(&i, &other, "other.test").expect("the same intermediate serves it");
}

/// A kept intermediate completes a chain that names the URL it came from, and no
/// other: one naming no URL, or another URL, gets what a fetch of its own would give,
/// whatever was fetched for other sites (else a site's verdict would depend on which
/// worker took its job).
#[test]
fn a_kept_intermediate_completes_only_chains_naming_the_url_it_came_from() {
    let root = root("root");
    let int = intermediate("intermediate", &root);
    let i = issuers(&root);
    let named = leaf("site.test", &int, Some(AIA));
    let err = verify(&i, &named, "site.test").expect_err("incomplete");
    let fetched = [int.cert.der().clone()];
    let completed = i.complete(
        missing_of(&err),
        "site.test",
        (&fetched, &[AIA.to_string()]),
    );
    assert!(matches!(completed, Ok(true)));
    let silent = leaf("silent.test", &int, None);
    assert!(
        unknown_issuer(&verify(&i, &silent, "silent.test").expect_err("names no URL")),
        "a chain naming no URL was completed from another site's fetch"
    );
    let elsewhere = leaf("elsewhere.test", &int, Some("http://other-ca.test/int.crt"));
    assert!(
        verify(&i, &elsewhere, "elsewhere.test").is_err(),
        "a chain naming another URL was completed from this one's"
    );
}

fn leaf_for_other_site(int: &Ca) -> CertificateDer<'static> {
    leaf("other.test", int, Some(AIA))
}

#[test]
fn a_certificate_that_is_not_the_issuer_completes_nothing_and_is_not_kept() {
    let root = root("root");
    let int = intermediate("intermediate", &root);
    let stranger = intermediate("another intermediate", &root);
    let leaf = leaf("site.test", &int, Some(AIA));
    let i = issuers(&root);
    let err = verify(&i, &leaf, "site.test").expect_err("incomplete");
    let fetched = [stranger.cert.der().clone()];
    assert!(matches!(
        i.complete(
            missing_of(&err),
            "site.test",
            (&fetched, &[AIA.to_string()])
        ),
        Ok(false)
    ));
    assert!(i.kept(&[AIA.to_string()], UnixTime::now()).is_empty());
}

#[test]
fn a_site_cannot_make_its_own_ca_trusted_by_naming_it() {
    // The site's certificate is signed by a CA nobody trusts, and names that CA's
    // certificate as its issuer: fetched, it is still no trusted root.
    let trusted = root("trusted root");
    let own = root("the site's own CA");
    let leaf = leaf("site.test", &own, Some(AIA));
    let i = issuers(&trusted);
    let err = verify(&i, &leaf, "site.test").expect_err("untrusted");
    let fetched = [own.cert.der().clone()];
    assert!(matches!(
        i.complete(
            missing_of(&err),
            "site.test",
            (&fetched, &[AIA.to_string()])
        ),
        Ok(false)
    ));
    assert!(verify(&i, &leaf, "site.test").is_err());
}

#[test]
fn once_the_chain_is_whole_the_certificates_own_fault_is_told() {
    let root = root("root");
    let int = intermediate("intermediate", &root);
    let leaf = leaf("site.test", &int, Some(AIA));
    let i = issuers(&root);
    let err = verify(&i, &leaf, "elsewhere.test").expect_err("incomplete");
    let fetched = [int.cert.der().clone()];
    assert!(matches!(
        i.complete(
            missing_of(&err),
            "elsewhere.test",
            (&fetched, &[AIA.to_string()])
        ),
        Ok(true)
    ));
    // With the intermediate kept, the handshake fails on the name, not the chain.
    let told = verify(&i, &leaf, "elsewhere.test").expect_err("wrong name");
    assert!(
        matches!(
            told,
            Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. }
            )
        ),
        "{told:?}"
    );
}

/// DER: `tag`, the content's length, the content.
fn tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len().to_be_bytes();
    let skip = len.iter().take_while(|b| **b == 0).count();
    let mut out = vec![tag];
    match content.len() {
        n if n < 0x80 => out.push(len[len.len() - 1]),
        _ => {
            out.push(0x80 | u8::try_from(len.len() - skip).expect("short"));
            out.extend(&len[skip..]);
        }
    }
    out.extend(content);
    out
}

/// BER: `tag`, an indefinite length, the content, end-of-contents.
fn indefinite(tag: u8, content: &[u8]) -> Vec<u8> {
    [&[tag, 0x80][..], content, &[0, 0]].concat()
}

/// A certs-only PKCS#7 bundle holding `certs`, as `openssl crl2pkcs7 -nocrl` makes one
/// (DER), or with indefinite lengths (BER), as some CAs' tools make it.
fn p7c(certs: &[CertificateDer<'_>], ber: bool) -> Vec<u8> {
    let wrap = |tag: u8, content: &[u8]| {
        if ber {
            indefinite(tag, content)
        } else {
            tlv(tag, content)
        }
    };
    let oid = |last: u8| {
        tlv(
            0x06,
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x07, last],
        )
    };
    let all: Vec<u8> = certs.iter().flat_map(|c| c.to_vec()).collect();
    let signed_data = [
        tlv(0x02, &[1]),    // version
        tlv(0x31, &[]),     // digestAlgorithms
        tlv(0x30, &oid(1)), // encapContentInfo: data, no content
        wrap(0xa0, &all),   // certificates [0] IMPLICIT
        tlv(0x31, &[]),     // signerInfos
    ]
    .concat();
    let content = wrap(0xa0, &wrap(0x30, &signed_data));
    wrap(0x30, &[oid(2), content].concat())
}

#[test]
fn certificates_are_read_as_der_pkcs7_or_pem_and_nothing_else() {
    let root = root("root");
    let int = intermediate("intermediate", &root);
    let (r, i) = (root.cert.der().clone(), int.cert.der().clone());
    assert_eq!(formats::parse_certificates(&r), std::slice::from_ref(&r));
    assert_eq!(
        formats::parse_certificates(root.cert.pem().as_bytes()),
        std::slice::from_ref(&r)
    );
    let two = format!("{}{}", int.cert.pem(), root.cert.pem());
    assert_eq!(
        formats::parse_certificates(two.as_bytes()),
        [i.clone(), r.clone()]
    );
    for ber in [false, true] {
        let bundle = p7c(&[i.clone(), r.clone()], ber);
        assert_eq!(
            formats::parse_certificates(&bundle),
            [i.clone(), r.clone()],
            "BER: {ber}"
        );
        assert!(formats::parse_certificates(&p7c(&[], ber)).is_empty());
    }
    let many = p7c(&vec![i.clone(); formats::MAX_CERTS + 4], false);
    assert_eq!(formats::parse_certificates(&many).len(), formats::MAX_CERTS);
    for nothing in [&b"<html>Not Found</html>"[..], b"", &[0x30, 0x80, 0x06]] {
        assert!(formats::parse_certificates(nothing).is_empty());
    }
}

#[test]
fn an_intermediate_in_a_bundle_completes_the_chain() {
    let root = root("root");
    let int = intermediate("intermediate", &root);
    let stranger = intermediate("another intermediate", &root);
    let leaf = leaf("site.test", &int, Some(AIA));
    let i = issuers(&root);
    let err = verify(&i, &leaf, "site.test").expect_err("incomplete");
    let bundle = p7c(
        &[stranger.cert.der().clone(), int.cert.der().clone()],
        false,
    );
    let fetched = formats::parse_certificates(&bundle);
    assert!(matches!(
        i.complete(
            missing_of(&err),
            "site.test",
            (&fetched, &[AIA.to_string()])
        ),
        Ok(true)
    ));
    verify(&i, &leaf, "site.test").expect("completed from the bundle's intermediate");
}

#[tokio::test(start_paused = true)]
async fn a_failed_url_is_said_again_until_it_may_be_asked_again() {
    let failed = failed::FailedUrls::default();
    let now = tokio::time::Instant::now();
    assert_eq!(failed.lately(AIA, now), None);
    failed.failed(AIA, "answered 404 Not Found", now);
    let later = now + std::time::Duration::from_secs(30);
    let said = failed.lately(AIA, later).expect("remembered");
    assert!(
        said.starts_with("answered 404 Not Found (30 s ago"),
        "{said}"
    );
    assert_eq!(failed.lately("http://other.test/ca.crt", later), None);
    // After a while the URL is asked again: a CA's server back up serves again.
    assert_eq!(failed.lately(AIA, now + failed::FAILED_FOR), None);
}
