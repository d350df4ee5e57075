//! How a request error becomes a failure with a precise kind and detail: TLS problems
//! by their certificate error, connection errors by their I/O kind, and through a proxy
//! the proxy's own failure told from the site's.

use std::net::IpAddr;
use std::time::Duration;

use super::{fail, Egress};
use crate::probe::{FailureKind, Observation, Outcome};

/// The time one request had, and how far its connection got: what a timeout's detail
/// says ran out (the job's whole time only for its first request).
#[derive(Clone, Copy, Debug)]
pub(super) struct Allowed {
    /// All of the request's time: what the probe had left when it was sent.
    pub(super) request: Duration,
    /// The connect's time: TCP and, over HTTPS, the TLS handshake.
    pub(super) connect: Duration,
    /// How long TCP took, when it was up but the connection never got ready: the TLS
    /// handshake (or, through a proxy, the tunnel) is what stalled.
    pub(super) tcp: Option<Duration>,
    /// Whether TCP connected at all.
    pub(super) tcp_up: bool,
    /// Whether the connection was ready and the request went out.
    pub(super) sent: bool,
    /// Whether its slot came right behind another of the backed-off IP
    /// (`Permit::at_our_pace`): a limit counting requests per second may hold it.
    pub(super) at_our_pace: bool,
}

impl Allowed {
    /// For a request given `request`, whose hop wrote its connection's times into `obs`.
    /// `https` tells whether the connection had a TLS handshake to finish.
    pub(super) fn new(
        request: Duration,
        connect: Duration,
        https: bool,
        obs: &Observation,
    ) -> Allowed {
        Allowed {
            request,
            connect: connect.min(request),
            tcp: obs.connect.filter(|_| obs.tls.is_none()),
            tcp_up: obs.connect.is_some(),
            sent: obs.connect.is_some() && (obs.tls.is_some() || !https),
            at_our_pace: false,
        }
    }

    /// What a connect that ran out of time got to.
    pub(super) fn no_connection(&self) -> String {
        match self.tcp {
            Some(tcp) => format!(
                "TCP connected in {} ms, but the TLS handshake was not done within the \
                 connect time ({} ms)",
                tcp.as_millis(),
                self.connect.as_millis()
            ),
            None => format!("no connection within {} ms", self.connect.as_millis()),
        }
    }

    /// What an answer that did not come in time had: the probe's time may have run out
    /// before the connection did (a connect time as long as the probe's).
    pub(super) fn no_answer(&self) -> String {
        if self.sent {
            return format!("no answer within {} ms", self.request.as_millis());
        }
        Allowed {
            connect: self.request,
            ..*self
        }
        .no_connection()
    }
}

pub(super) fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

/// Sorts a request error into a failure kind with a precise detail.
pub(super) fn classify(
    e: &reqwest::Error,
    host: &str,
    ip: IpAddr,
    port: u16,
    allowed: &Allowed,
    egress: &Egress,
) -> Outcome {
    let at = format!("{host} ({ip}:{port})");
    // A TLS failure is the site's even through a proxy: the handshake runs end to end
    // inside the tunnel.
    if let Some(tls) = tls_error(e) {
        return tls_failure(tls, &at);
    }
    if egress.proxy.is_some() {
        if let Some(outcome) = classify_proxy(e, &at, egress) {
            return outcome;
        }
    }
    if let Some(outcome) = socket_failure(e, &at) {
        return outcome;
    }
    if e.is_timeout() {
        let phase = if e.is_connect() {
            allowed.no_connection()
        } else {
            allowed.no_answer()
        };
        return fail(FailureKind::Timeout, format!("{at}: {phase}"));
    }
    let cause = root_cause(e);
    if e.is_connect() {
        return fail(
            FailureKind::Connect,
            format!("{at}: connection failed: {cause}"),
        );
    }
    if cause.contains("reset") {
        return fail(FailureKind::Reset, format!("{at}: {cause}"));
    }
    if cause.contains("closed") || cause.contains("incomplete") {
        return fail(FailureKind::Connect, format!("{at}: {cause}"));
    }
    fail(FailureKind::Protocol, format!("{at}: {cause}"))
}

/// The failure the first telling socket error under `e` is (`at`: the host and
/// address asked), if there is one: our own resources gone, refused, reset, closed, no
/// route.
fn socket_failure(e: &reqwest::Error, at: &str) -> Option<Outcome> {
    use std::io::ErrorKind as K;
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        source = err.source();
        let Some(io) = err.downcast_ref::<std::io::Error>() else {
            continue;
        };
        if io
            .raw_os_error()
            .is_some_and(crate::probe::local_resource_errno)
        {
            return Some(fail(
                FailureKind::LocalResources,
                format!("{at}: not asked: this worker has no file descriptors, local ports or socket buffers left ({io})"),
            ));
        }
        let (kind, what) = match io.kind() {
            K::ConnectionRefused => (FailureKind::Connect, "connection refused"),
            K::ConnectionReset => (FailureKind::Reset, "connection reset by the server"),
            K::ConnectionAborted => (FailureKind::Reset, "connection aborted"),
            // A clean close: a crashing backend behind a proxy, or nginx's 444 refusal
            // (the limiter tells them apart, `Signal::Closed`); not a reset.
            K::UnexpectedEof => (FailureKind::Connect, "connection closed before an answer"),
            K::HostUnreachable | K::NetworkUnreachable => {
                (FailureKind::Unreachable, "no route to host")
            }
            K::TimedOut if io.raw_os_error().is_some() && !e.is_connect() => (
                FailureKind::Timeout,
                "the connection went silent before an answer: the server's side stopped \
                 acknowledging it (TCP keepalive unanswered)",
            ),
            _ => continue,
        };
        return Some(fail(kind, format!("{at}: {what}")));
    }
    None
}

/// Whether an established connection died under the request because its packets
/// stopped being acknowledged (the kernel's ETIMEDOUT once TCP keepalive ran out): a
/// firewall that began to drop them, a host gone. Not our own deadline.
pub(super) fn went_silent(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut && io.raw_os_error().is_some() {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// Whether the target refused the connection itself (ECONNREFUSED: a TCP reset or an
/// ICMP port unreachable in answer to our SYN), as a firewall ban does; a proxy's
/// refusal reaches us as words, not as this error.
pub(super) fn connection_refused(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::ConnectionRefused {
                return true;
            }
        }
        source = err.source();
    }
    false
}

/// Whether the server closed the connection before a whole answer's head came (nginx's
/// 444, a crashed backend).
pub(super) fn closed_before_answer(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            return h.is_incomplete_message();
        }
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::UnexpectedEof;
        }
        source = err.source();
    }
    false
}

/// Through a proxy, tells the proxy's own failure (nothing known about the site) from
/// the site's failure as the proxy reports it. reqwest and hyper-util expose these only
/// as messages, so this reads the error chain's words.
fn classify_proxy(e: &reqwest::Error, at: &str, egress: &Egress) -> Option<Outcome> {
    let mut chain = Vec::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        chain.push(err.to_string());
        source = err.source();
    }
    let words = chain.join(": ");
    let socks = words.contains("socks proxy");
    let tunnel = words.contains("tunnel error");
    if !socks && !tunnel {
        // Plain http through an HTTP proxy: the only connection made is to the proxy.
        if !egress.socks && e.is_connect() {
            return Some(fail(
                FailureKind::Egress,
                format!(
                    "egress {} failed, so nothing is known about {at}: {}",
                    egress.name,
                    chain[1..].join(": ")
                ),
            ));
        }
        return None;
    }
    // What the proxy says about the target (SOCKS5 replies; a refused CONNECT).
    const TARGET_FAILURES: [(&str, FailureKind); 5] = [
        ("connection refused", FailureKind::Connect),
        ("host unreachable", FailureKind::Unreachable),
        ("network unreachable", FailureKind::Unreachable),
        ("ttl expired", FailureKind::Timeout),
        ("tunnel error: unsuccessful", FailureKind::Connect),
    ];
    for (marker, kind) in TARGET_FAILURES {
        let said = if socks {
            chain[1..].iter().any(|c| c.ends_with(marker))
        } else {
            words.contains(marker)
        };
        if said {
            let what = if tunnel {
                "the proxy could not open a tunnel to it".to_string()
            } else {
                format!("the proxy reports {marker}")
            };
            return Some(fail(
                kind,
                format!("{at} via egress {}: {what}", egress.name),
            ));
        }
    }
    Some(fail(
        FailureKind::Egress,
        format!(
            "egress {} failed, so nothing is known about {at}: {}",
            egress.name,
            socks_login(chain[1..].join(": "), egress.login)
        ),
    ))
}

/// A SOCKS5 proxy's refusal of every way to log in, in words that say which side lacks
/// what: hyper-util says "server does not support user/pass authentication" whether or
/// not a user name and password were offered.
fn socks_login(why: String, login: bool) -> String {
    if !why.ends_with("server does not support user/pass authentication") {
        return why;
    }
    if login {
        "the SOCKS5 proxy refuses a login by user name and password, the one picket \
         offers"
            .to_string()
    } else {
        "the SOCKS5 proxy asks for a login, which the egress URL does not give \
         (socks5://user:password@host:port)"
            .to_string()
    }
}

/// The rustls error somewhere in `e`'s chain, if any. It sits inside io::Errors
/// (hyper-util and tokio-rustls each wrap it) whose source() skips it.
pub(super) fn tls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        if let Some(tls) = err.downcast_ref::<std::io::Error>().and_then(rustls_inside) {
            return Some(tls);
        }
        source = err.source();
    }
    None
}

pub(super) fn rustls_inside(io: &std::io::Error) -> Option<&rustls::Error> {
    let mut inner = io.get_ref();
    while let Some(e) = inner {
        if let Some(tls) = e.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        inner = e
            .downcast_ref::<std::io::Error>()
            .and_then(std::io::Error::get_ref);
    }
    None
}

/// The handshake failed because the server would speak nothing rustls offers: no
/// common TLS version or cipher suite (a server allowing only CBC suites, say).
pub(super) fn no_common_tls(e: &rustls::Error) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        e,
        rustls::Error::AlertReceived(A::HandshakeFailure | A::ProtocolVersion)
            | rustls::Error::PeerIncompatible(_)
    )
}

/// hyper could not read the answer's head (its status line, a header line, its length
/// or its codings), as it reads only the strict form: `mend` in `tunnel/` reads it as
/// browsers do.
pub(super) fn unreadable_head(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            return h.is_parse() || h.is_parse_status();
        }
        source = err.source();
    }
    false
}

/// hyper refused a chunked body's framing (a chunk's size line, the end of its data, a
/// trailer line): its words, when that is why the body read failed. A bare LF ending
/// those lines is one browsers read (`tunnel::chunks`).
pub(super) fn chunks_unread(e: &reqwest::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let framing = matches!(
                io.kind(),
                std::io::ErrorKind::InvalidInput | std::io::ErrorKind::InvalidData
            );
            let words = io.to_string();
            let chunks = words.to_ascii_lowercase().contains("chunk")
                || words.to_ascii_lowercase().contains("trailer");
            return (framing && chunks).then_some(words);
        }
        source = err.source();
    }
    None
}

/// The server reset the HTTP/2 request (or the connection) with `HTTP_1_1_REQUIRED`,
/// as mod_http2 and IIS do on paths that renegotiate for a client certificate or use
/// Windows authentication: browsers ask again over HTTP/1.1.
pub(super) fn http1_required(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h2) = err.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::HTTP_1_1_REQUIRED);
        }
        source = err.source();
    }
    false
}

/// A failed handshake as a failure: a certificate or TLS problem, or an answer that is
/// no TLS at all (an `https://` URL naming a port that speaks plain HTTP). Only a first
/// record whose header is no TLS header says so (plain HTTP's `HTTP/1.1`, an SSH or
/// SMTP banner: no content type, or no TLS version): the other `InvalidMessage`s are
/// TLS that rustls finds malformed or too large (a chain over 64 KB, which OpenSSL and
/// Chrome take up to 100 KB), from servers that do speak TLS.
pub(super) fn tls_failure(e: &rustls::Error, at: &str) -> Outcome {
    use rustls::InvalidMessage as M;
    match e {
        rustls::Error::InvalidMessage(M::InvalidContentType | M::UnknownProtocolVersion) => fail(
            FailureKind::NoTls,
            format!("{at}: TLS failed: the server does not speak TLS on this port ({e})"),
        ),
        // A TLS front end with no site of the name (nginx `ssl_reject_handshake`,
        // haproxy `strict-sni`) ends the handshake before any certificate: browsers
        // show an error with no way on (ERR_SSL_UNRECOGNIZED_NAME_ALERT).
        rustls::Error::AlertReceived(rustls::AlertDescription::UnrecognisedName) => fail(
            FailureKind::NoTls,
            format!(
                "{at}: TLS failed: the server refused the handshake for this name \
                 (unrecognized_name): it serves no site of this name, and browsers show \
                 an error, no page"
            ),
        ),
        _ => fail(
            FailureKind::Tls,
            format!("{at}: TLS failed: {}", tls_problem(e)),
        ),
    }
}

pub(super) fn tls_problem(e: &rustls::Error) -> String {
    use rustls::AlertDescription as A;
    match e {
        rustls::Error::InvalidCertificate(c) => format!("certificate {}", cert_problem(c)),
        // The server found nothing in our ClientHello it would speak. That is most often
        // a server that allows only legacy TLS: say so rather than leave a bare alert
        // name (the prober then asks again over OpenSSL, as browsers still would).
        rustls::Error::AlertReceived(A::HandshakeFailure | A::ProtocolVersion)
        | rustls::Error::PeerIncompatible(_) => format!(
            "{e}: no TLS version or cipher suite in common; the server may allow only legacy \
             TLS (TLS 1.0/1.1, or CBC cipher suites)"
        ),
        other => other.to_string(),
    }
}

fn cert_problem(c: &rustls::CertificateError) -> String {
    use rustls::CertificateError as C;
    match c {
        C::Expired | C::ExpiredContext { .. } => "has expired".into(),
        C::NotValidYet | C::NotValidYetContext { .. } => "is not valid yet".into(),
        C::UnknownIssuer => {
            "is not signed by a trusted authority (self-signed or incomplete chain)".into()
        }
        C::Other(rustls::OtherError(inner)) if inner.is::<super::issuers::MissingIssuer>() => {
            "is not signed by a trusted authority (incomplete chain)".into()
        }
        C::NotValidForName | C::NotValidForNameContext { .. } => {
            "is not valid for this host name".into()
        }
        C::Revoked => "is revoked".into(),
        C::BadSignature => "has a bad signature".into(),
        C::Other(rustls::OtherError(inner)) => webpki_problem(&format!("{inner:?}")),
        other => format!("is not valid: {other:?}"),
    }
}

/// WebPKI's own errors, which rustls passes on by name (`CaUsedAsEndEntity`), in words.
fn webpki_problem(debug: &str) -> String {
    // A variant's name, without the context some carry.
    let name = debug.split(['(', ' ', '{']).next().unwrap_or(debug);
    match name {
        "CaUsedAsEndEntity" => "is self-signed and marked a CA (as `openssl req -x509` makes \
                                one): no browser trusts it as a site's"
            .into(),
        "EndEntityUsedAsCa" => "chain has a site's certificate where a CA's should be".into(),
        "RequiredEkuNotFound" | "RequiredEkuNotFoundContext" => {
            "is not for a web server (its extended key usage leaves out server authentication)"
                .into()
        }
        "UnsupportedCertVersion" => "is of an X.509 version browsers do not take".into(),
        other => format!("is not valid ({other})"),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;

    /// The error a rustls client gets from a server that does speak TLS but sends a
    /// `Certificate` message of `chain_bytes` (a long chain, as some hosting and
    /// government CAs issue), in memory.
    fn handshake_with_a_chain_of(chain_bytes: usize) -> rustls::Error {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let key = rcgen::KeyPair::generate().expect("key");
        let cert = rcgen::CertificateParams::new(vec!["big.test".into()])
            .expect("params")
            .self_signed(&key)
            .expect("cert");
        let leaf = rustls::pki_types::CertificateDer::from(cert.der().to_vec());
        let mut chain = vec![leaf.clone()];
        while chain.iter().map(|c| c.len() + 3).sum::<usize>() < chain_bytes {
            chain.push(leaf.clone());
        }
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(
            rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der()),
        );
        let server = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(chain, key)
            .expect("server config");
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        let name = rustls::pki_types::ServerName::try_from("big.test").expect("name");
        let mut client = rustls::ClientConnection::new(Arc::new(client), name).expect("client");
        let mut server = rustls::ServerConnection::new(Arc::new(server)).expect("server");
        for _ in 0..10 {
            let mut wire = Vec::new();
            while client.wants_write() {
                client.write_tls(&mut wire).expect("client writes");
            }
            let mut rd = &wire[..];
            while !rd.is_empty() {
                server.read_tls(&mut rd).expect("server reads");
                server
                    .process_new_packets()
                    .expect("the server's side is fine");
            }
            let mut wire = Vec::new();
            while server.wants_write() {
                server.write_tls(&mut wire).expect("server writes");
            }
            let mut rd = &wire[..];
            while !rd.is_empty() {
                client.read_tls(&mut rd).expect("client reads");
                if let Err(e) = client.process_new_packets() {
                    return e;
                }
            }
        }
        panic!("the handshake did not fail");
    }

    /// A server that speaks TLS, whose chain (here 80 KB: OpenSSL, curl and Chrome take
    /// up to 100 KB) rustls refuses as too large, is no port "that does not speak TLS":
    /// at most the TLS problem `tls.on_error` judges, never down/tls as if the port
    /// spoke plain HTTP.
    #[test]
    fn a_tls_server_with_a_long_chain_is_not_said_to_speak_no_tls() {
        let e = handshake_with_a_chain_of(80_000);
        assert!(matches!(e, rustls::Error::InvalidMessage(_)), "{e:?}");
        let Outcome::Failure(f) = tls_failure(&e, "big.test (192.0.2.7:443)") else {
            panic!("a failure");
        };
        assert_ne!(f.kind, FailureKind::NoTls, "{}", f.detail);
    }
}
