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
