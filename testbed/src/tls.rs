//! The PEM files of a server that serves TLS, shared by the RabbitMQ and Redis launchers.

use std::path::PathBuf;

/// A TLS listener's certificate, key and CA, in PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    pub ca: PathBuf,
    /// Ask every client for a certificate signed by `ca`, and refuse one without.
    pub verify_clients: bool,
}

/// TLS for Redis servers that also reach each other (a replica its primary, Sentinels
/// the servers and each other, a cluster's nodes over its bus): what they serve, and the
/// client certificate they show each other, since the served one may be for servers only.
#[derive(Clone, Debug)]
pub struct RedisTls {
    pub served: TlsFiles,
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

impl RedisTls {
    /// `redis-server` (and `redis-sentinel`) arguments for TLS on `port`, the plain port
    /// kept for the launcher's own `redis-cli`; connections between the servers use TLS.
    pub(crate) fn args(&self, port: u16) -> Vec<String> {
        let file = |p: &PathBuf| p.display().to_string();
        let f = &self.served;
        [
            ("--tls-port", port.to_string()),
            ("--tls-cert-file", file(&f.cert)),
            ("--tls-key-file", file(&f.key)),
            ("--tls-ca-cert-file", file(&f.ca)),
            ("--tls-client-cert-file", file(&self.client_cert)),
            ("--tls-client-key-file", file(&self.client_key)),
            (
                "--tls-auth-clients",
                (if f.verify_clients { "yes" } else { "no" }).into(),
            ),
            ("--tls-replication", "yes".into()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_string(), v])
        .collect()
    }
}

/// The OID of the Authority Information Access extension (RFC 5280, 4.2.2.1).
pub const AIA_OID: &[u64] = &[1, 3, 6, 1, 5, 5, 7, 1, 1];

/// The DER content of an Authority Information Access extension naming `url` as the
/// place to fetch the issuer's certificate (`id-ad-caIssuers`), as CAs put in the
/// certificates they issue: for tests of chains a server sends incomplete.
pub fn aia_ca_issuers(url: &str) -> Vec<u8> {
    // id-ad-caIssuers, 1.3.6.1.5.5.7.48.2
    let mut description = vec![0x06, 0x08, 0x2b, 0x06, 0x01, 0x05, 0x05, 0x07, 0x30, 0x02];
    // GeneralName uniformResourceIdentifier: [6] IMPLICIT IA5String
    description.extend(der_item(0x86, url.as_bytes()));
    der_item(0x30, &der_item(0x30, &description))
}

/// One DER item: tag, definite length, content.
fn der_item(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    let len = content.len();
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend(bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_aia_extension_is_der_with_short_and_long_lengths() {
        let short = aia_ca_issuers("http://a.test/i.crt");
        assert_eq!(&short[..4], &[0x30, 33, 0x30, 31]);
        assert_eq!(&short[14..16], &[0x86, 19]);
        let long_url = format!("http://a.test/{}", "x".repeat(200));
        let long = aia_ca_issuers(&long_url);
        // 214 bytes of URL: its length takes a second byte, and so do the sequences'.
        assert_eq!(&long[..3], &[0x30, 0x81, 230]);
        assert_eq!(long.len(), 233);
    }
}
