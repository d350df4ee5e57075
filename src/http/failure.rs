//! How a request error becomes a failure with a precise kind and detail: TLS problems
//! by their certificate error, connection errors by their I/O kind, and through a proxy
//! the proxy's own failure told from the site's.

use std::net::IpAddr;

use super::{fail, Egress};
use crate::probe::{FailureKind, Outcome, Plan};

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
    plan: &Plan,
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
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind as K;
            if io
                .raw_os_error()
                .is_some_and(crate::probe::local_resource_errno)
            {
                return fail(
                    FailureKind::LocalResources,
                    format!("{at}: not asked: this worker has no file descriptors or socket buffers left ({io})"),
                );
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
                _ => {
                    source = err.source();
                    continue;
                }
            };
            return fail(kind, format!("{at}: {what}"));
        }
        source = err.source();
    }
    if e.is_timeout() {
        let phase = if e.is_connect() {
            format!(
                "no connection within {} ms",
                plan.connect_timeout.as_millis()
            )
        } else {
            format!("no answer within {} ms", plan.timeout.as_millis())
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
            chain[1..].join(": ")
        ),
    ))
}

/// The rustls error somewhere in `e`'s chain, if any. It sits inside io::Errors
/// (hyper-util and tokio-rustls each wrap it) whose source() skips it.
fn tls_error(e: &reqwest::Error) -> Option<&rustls::Error> {
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
pub(super) fn no_common_tls(e: &reqwest::Error) -> bool {
    use rustls::AlertDescription as A;
    matches!(
        tls_error(e),
        Some(
            rustls::Error::AlertReceived(A::HandshakeFailure | A::ProtocolVersion)
                | rustls::Error::PeerIncompatible(_)
        )
    )
}

/// hyper could not read the status line of the answer (its version or its code), as
/// it reads only the strict form (`mend` in `tunnel/` reads it as browsers do).
pub(super) fn unreadable_status_line(e: &reqwest::Error) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            // hyper names the version's failure only in its message.
            return h.is_parse_status() || (h.is_parse() && h.to_string().contains("version"));
        }
        source = err.source();
    }
    false
}

/// The chain `e` failed on lacks an issuer whose URL its certificates name.
pub(super) fn missing_issuer(e: &reqwest::Error) -> Option<&super::issuers::MissingIssuer> {
    tls_error(e).and_then(super::issuers::missing_issuer)
}

/// A failed handshake as a failure: a certificate or TLS problem, or an answer that is
/// no TLS at all (an `https://` URL naming a port that speaks plain HTTP).
pub(super) fn tls_failure(e: &rustls::Error, at: &str) -> Outcome {
    match e {
        rustls::Error::InvalidMessage(_) => fail(
            FailureKind::NoTls,
            format!("{at}: TLS failed: the server does not speak TLS on this port ({e})"),
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
        other => format!("is not valid: {other:?}"),
    }
}
