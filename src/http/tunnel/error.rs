//! Why a request through a tunnel failed, and what that is in the prober's terms: the
//! proxy failing (the egress, nothing known about the site) or the site failing, read
//! from the proxy's own status and markers (`X-Squid-Error`, RFC 9209 `Proxy-Status`).
//! [`SendError`] is either path's failure to send, reqwest's or the tunnel's.

use std::error::Error as StdError;

use http::StatusCode;

use crate::http::fail;
use crate::http::failure::{root_cause, rustls_inside, tls_failure, Allowed};
use crate::http::pin::{pin_error, PinError};
use crate::probe::{FailureKind, Outcome};

use super::words::{header, OwnPage, Words};

/// How far a tunnel got when its connect time ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::http) enum Stage {
    /// Reaching the proxy.
    Proxy,
    /// Waiting for the proxy's answer to CONNECT (it is connecting to the site).
    Connect,
    /// The TLS handshake with the site.
    Tls,
}

/// Why a request through a tunnel got no answer.
#[derive(Debug, thiserror::Error)]
pub(in crate::http) enum TunnelError {
    /// The proxy could not be reached or broke off: nothing is known about the site.
    #[error("{0}")]
    Proxy(String),
    /// The proxy answered the CONNECT with something other than 200.
    #[error("the proxy answered CONNECT with {}", .0.status_line())]
    Refused(Box<Refusal>),
    /// The connection was not ready within the connect timeout.
    #[error("not connected in time ({0:?})")]
    ConnectTimeout(Stage),
    /// The direct route's TCP connection to the site failed.
    #[error("{0}")]
    Site(#[source] std::io::Error),
    /// The TLS handshake with the site failed.
    #[error("TLS: {0}")]
    Tls(#[source] std::io::Error),
    /// The HTTP exchange with the site failed.
    #[error("HTTP: {0}")]
    Http(#[source] hyper::Error),
    /// No answer within the probe's time.
    #[error("no answer in time")]
    Timeout,
}

/// A proxy's non-200 answer to CONNECT, with its own words about why.
#[derive(Debug)]
pub(in crate::http) struct Refusal {
    /// Its status, reason phrase (when not the standard one) and `Server`.
    page: OwnPage,
    /// squid's `X-Squid-Error`, e.g. `ERR_CONNECT_FAIL 111` or `ERR_ACCESS_DENIED 0`.
    squid: Option<String>,
    /// An RFC 9209 `Proxy-Status` error, e.g. `connection_refused`.
    proxy_status: Option<String>,
    /// What the proxy refused: "the tunnel" (CONNECT) or "the request" (by name).
    refused: &'static str,
    /// The page, marked by nothing, is the one the proxy serves for a host that does not
    /// exist: its own.
    as_for_no_such_host: bool,
}

impl Refusal {
    /// The proxy's answer to CONNECT.
    pub(super) fn of<B>(answer: &http::Response<B>) -> Refusal {
        Refusal::read(answer, "the tunnel")
    }

    /// The proxy's own error page in answer to a request asked by name, if it is one: it
    /// carries the proxy's markers or words, or is the page the proxy serves for a host
    /// that does not exist (`own`). Anything else is the site's answer.
    pub(super) fn reported<B>(
        answer: &http::Response<B>,
        own: Option<&OwnPage>,
    ) -> Option<Refusal> {
        let r = Refusal::read(answer, "the request").against(own);
        let marked = r.squid.is_some() || r.proxy_status.is_some();
        (marked || r.words().is_some() || r.as_for_no_such_host).then_some(r)
    }

    /// This refusal, known for the proxy's own when it is the page the proxy serves for
    /// a host that does not exist (`own`) and carries no marker that says more.
    pub(super) fn against(mut self, own: Option<&OwnPage>) -> Refusal {
        let unmarked = self.squid.is_none() && self.proxy_status.is_none();
        self.as_for_no_such_host = unmarked && own == Some(&self.page);
        self
    }

    /// The proxy's status line's code.
    pub(super) fn status(&self) -> StatusCode {
        self.page.status
    }

    /// Whether the proxy refused to tunnel by its rules (squid's `ERR_ACCESS_DENIED` or
    /// `deny_info` page, RFC 9209's `http_request_denied`, a bare 403 or 405): the URL may
    /// be asked by name instead. Not missing credentials (407), not the site, and not a proxy failing
    /// (squid's 500 `ERR_CANNOT_FORWARD`) or a server that is no proxy at all (a 400):
    /// asked by name, that server's own page would pass for every site's.
    pub(super) fn refuses_tunnels(&self) -> bool {
        let squid = self.squid.as_deref().unwrap_or("");
        let denied = matches!(
            self.proxy_status.as_deref(),
            Some("http_request_denied" | "destination_ip_prohibited")
        );
        let by_rule = match (self.squid.as_deref(), self.proxy_status.as_deref()) {
            // `deny_info` with a page of the operator's (any name, 403) or a URL (a
            // redirect marked "403 Access Denied"); not a login asked for.
            (Some(_), _) => {
                squid.starts_with("ERR_ACCESS_DENIED")
                    || squid.ends_with("Access Denied")
                    || (self.page.status == StatusCode::FORBIDDEN
                        && !squid.starts_with("ERR_CACHE_ACCESS_DENIED"))
            }
            (None, None) => {
                self.words() == Some(Words::Rules)
                    || matches!(
                        self.page.status,
                        StatusCode::FORBIDDEN | StatusCode::METHOD_NOT_ALLOWED
                    )
            }
            (None, Some(_)) => false,
        };
        self.site_failure().is_none() && (denied || by_rule)
    }

    fn read<B>(answer: &http::Response<B>, refused: &'static str) -> Refusal {
        Refusal {
            page: OwnPage::read(answer),
            squid: header(answer, "x-squid-error"),
            proxy_status: header(answer, "proxy-status").and_then(|v| {
                let (_, after) = v.split_once("error=")?;
                Some(
                    after
                        .split([';', ','])
                        .next()?
                        .trim()
                        .trim_matches('"')
                        .to_string(),
                )
            }),
            refused,
            as_for_no_such_host: false,
        }
    }

    /// What the proxy's reason phrase says, when it is one a proxy uses for its own page.
    fn words(&self) -> Option<Words> {
        Words::of(self.page.reason.as_deref()?)
    }

    /// The proxy's status line: its code and its own reason phrase, or the standard one.
    fn status_line(&self) -> String {
        let status = self.page.status;
        match &self.page.reason {
            Some(reason) => format!("{} {reason}", status.as_u16()),
            None => status.to_string(),
        }
    }

    /// Why the proxy failed, when it says that it, not the site, is why.
    fn own_failure(&self) -> String {
        let said = self.status_line();
        let marker = self
            .squid
            .as_deref()
            .or(self.proxy_status.as_deref())
            .map(|m| format!(", {m}"))
            .unwrap_or_default();
        match self.words() {
            _ if self.as_for_no_such_host => format!(
                "asked by name, the proxy served the page it serves for a host that does not \
                 exist ({said}): its own lookup of the name failed, or it does not say what \
                 did"
            ),
            Some(Words::ParentDown) => format!(
                "the proxy reports that its own way out, the proxy it forwards to, failed \
                 ({said}); the site was not asked"
            ),
            Some(Words::NoSuchDomain) => format!(
                "the proxy's own lookup of the name failed ({said}); the site was not asked"
            ),
            Some(Words::Full) => format!(
                "the proxy has no room for another client ({said}): it serves as many at \
                 once as it takes; the site was not asked"
            ),
            _ => format!(
                "the proxy refused {} itself ({said}{marker}); the site was not asked",
                self.refused
            ),
        }
    }

    /// squid's errno of a failed connect (`ERR_CONNECT_FAIL 111`), if that is its report.
    fn connect_errno(&self) -> Option<&str> {
        let squid = self.squid.as_deref()?;
        squid.strip_prefix("ERR_CONNECT_FAIL ").map(str::trim)
    }

    /// Whether the proxy reports that the site's address refused its connection.
    fn reports_refused(&self) -> bool {
        self.connect_errno() == Some("111")
            || self.proxy_status.as_deref() == Some("connection_refused")
    }

    /// Whether the proxy reports that its connection to the site's address timed out.
    fn reports_connect_timeout(&self) -> bool {
        self.connect_errno() == Some("110")
            || self.proxy_status.as_deref() == Some("connection_timeout")
    }

    /// Whether the proxy, asked by name, reports that the site closed the connection
    /// without an answer.
    fn closed_before_answer(&self) -> bool {
        self.squid
            .as_deref()
            .is_some_and(|s| s.starts_with("ERR_ZERO_SIZE_OBJECT"))
            || self.proxy_status.as_deref() == Some("http_response_incomplete")
    }

    /// What the site did, when the proxy says the site is why (else `None`: the proxy
    /// refused for its own reasons).
    fn site_failure(&self) -> Option<(FailureKind, &'static str)> {
        if let Some(failure) = self.connect_failure().or_else(|| self.answer_failure()) {
            return Some(failure);
        }
        if self.squid.is_some() || self.proxy_status.is_some() || self.as_for_no_such_host {
            return None;
        }
        self.unmarked_failure()
    }

    /// What a marker (squid's errno, `Proxy-Status`) reports of connecting to the site.
    fn connect_failure(&self) -> Option<(FailureKind, &'static str)> {
        let squid = self.squid.as_deref().unwrap_or("");
        if self.reports_refused() {
            return Some((FailureKind::Connect, "the proxy reports connection refused"));
        }
        if matches!(self.connect_errno(), Some("101" | "113"))
            || self.proxy_status.as_deref() == Some("destination_ip_unroutable")
        {
            return Some((FailureKind::Unreachable, "the proxy reports no route to it"));
        }
        if self.reports_connect_timeout() || squid.starts_with("ERR_READ_TIMEOUT") {
            return Some((
                FailureKind::Timeout,
                "the proxy got no connection to it in time",
            ));
        }
        None
    }

    /// What a marker of a proxy asked by name reports of the site's answer (a tunnel's
    /// bytes are the site's own and never get these).
    fn answer_failure(&self) -> Option<(FailureKind, &'static str)> {
        let squid = self.squid.as_deref().unwrap_or("");
        let (error, errno) = squid.split_once(' ').unwrap_or((squid, ""));
        match (error, self.proxy_status.as_deref()) {
            ("ERR_ZERO_SIZE_OBJECT", _) | (_, Some("http_response_incomplete")) => Some((
                FailureKind::Connect,
                "the proxy reports the connection closed before an answer",
            )),
            // With errno 0 squid never reached the site (its own DNS failed, or its
            // parent is down): the egress's failure.
            ("ERR_READ_ERROR", _) if errno.trim() != "0" => {
                Some((FailureKind::Reset, "the proxy reports the connection reset"))
            }
            ("ERR_LIFETIME_EXP", _) | (_, Some("http_response_timeout")) => Some((
                FailureKind::Timeout,
                "the proxy got no answer from it in time",
            )),
            ("ERR_INVALID_RESP", _) | (_, Some("http_protocol_error")) => Some((
                FailureKind::Protocol,
                "the proxy reports an answer that breaks HTTP",
            )),
            _ => None,
        }
    }

    /// What a proxy with no marker says, in its reason phrase or, failing that, its
    /// status alone.
    fn unmarked_failure(&self) -> Option<(FailureKind, &'static str)> {
        match self.words() {
            Some(Words::NoConnection) => {
                return Some((
                    FailureKind::Connect,
                    "the proxy reports it could not connect",
                ))
            }
            Some(Words::NoConnectionInTime) => {
                return Some((
                    FailureKind::Timeout,
                    "the proxy got no connection to it in time",
                ))
            }
            Some(Words::ParentDown | Words::NoSuchDomain | Words::Rules | Words::Full) => {
                return None
            }
            None => {}
        }
        // A proxy that says nothing more: a gateway error is the site's, as before.
        match self.page.status.as_u16() {
            502 | 503 => Some((
                FailureKind::Connect,
                "the proxy could not open a tunnel to it",
            )),
            504 => Some((
                FailureKind::Timeout,
                "the proxy got no connection to it in time",
            )),
            _ => None,
        }
    }
}

impl TunnelError {
    /// Whether the next address of the site is worth trying (the site's connect failed).
    fn is_connect(&self) -> bool {
        match self {
            TunnelError::Refused(r) => r.site_failure().is_some(),
            TunnelError::ConnectTimeout(stage) => *stage != Stage::Proxy,
            TunnelError::Site(_) | TunnelError::Tls(_) => true,
            TunnelError::Proxy(_) | TunnelError::Http(_) | TunnelError::Timeout => false,
        }
    }

    /// The failure this is, in the prober's terms, for the site `at` through the egress
    /// named `egress`.
    pub(in crate::http) fn classify(&self, at: &str, allowed: &Allowed, egress: &str) -> Outcome {
        let proxy_failed = |why: String| {
            fail(
                FailureKind::Egress,
                format!(
                    "egress {} failed, so nothing is known about {at}: {why}",
                    egress
                ),
            )
        };
        let connect_ms = allowed.connect.as_millis();
        match self {
            TunnelError::Proxy(why) => proxy_failed(why.clone()),
            TunnelError::Refused(r) => match r.site_failure() {
                Some((kind, what)) => fail(kind, format!("{at} via egress {}: {what}", egress)),
                None => proxy_failed(r.own_failure()),
            },
            TunnelError::ConnectTimeout(Stage::Proxy) => {
                proxy_failed(format!("no connection to the proxy within {connect_ms} ms"))
            }
            TunnelError::ConnectTimeout(_) => fail(
                FailureKind::Timeout,
                format!(
                    "{at}: {} (through egress {})",
                    allowed.no_connection(),
                    egress
                ),
            ),
            TunnelError::Site(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
                fail(FailureKind::Connect, format!("{at}: connection refused"))
            }
            TunnelError::Site(io) => fail(
                FailureKind::Connect,
                format!("{at}: connection failed: {io}"),
            ),
            TunnelError::Tls(io) => match rustls_inside(io) {
                Some(tls) => tls_failure(tls, at),
                None => site_failure(io, at),
            },
            TunnelError::Http(e) => site_failure(e, at),
            TunnelError::Timeout => fail(
                FailureKind::Timeout,
                format!("{at}: {}", allowed.no_answer()),
            ),
        }
    }
}

/// A failure of the site's connection inside the tunnel, sorted by its I/O kind as
/// `failure::classify` sorts reqwest's errors.
fn site_failure(e: &(dyn StdError + 'static), at: &str) -> Outcome {
    use std::io::ErrorKind as K;
    let mut source: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let found = match io.kind() {
                K::ConnectionReset => Some((FailureKind::Reset, "connection reset by the server")),
                K::ConnectionAborted => Some((FailureKind::Reset, "connection aborted")),
                K::UnexpectedEof => {
                    Some((FailureKind::Connect, "connection closed before an answer"))
                }
                _ => None,
            };
            if let Some((kind, what)) = found {
                return fail(kind, format!("{at}: {what}"));
            }
        }
        if let Some(h) = err.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() {
                return fail(
                    FailureKind::Connect,
                    format!("{at}: connection closed before an answer"),
                );
            }
        }
        source = err.source();
    }
    let cause = root_cause(e);
    let kind = if cause.contains("reset") {
        FailureKind::Reset
    } else if cause.contains("closed") || cause.contains("incomplete") {
        FailureKind::Connect
    } else {
        FailureKind::Protocol
    };
    fail(kind, format!("{at}: {cause}"))
}

/// Why sending one request to one address failed, on either path.
#[derive(Debug)]
pub(in crate::http) enum SendError {
    /// reqwest's path (direct and SOCKS egresses).
    Client(reqwest::Error),
    /// The tunnel through an HTTP proxy.
    Tunnel(TunnelError),
}

impl SendError {
    /// The operating system's error number under a failed request, if one is there.
    pub(in crate::http) fn os_error(&self) -> Option<i32> {
        let top: &(dyn std::error::Error + 'static) = match self {
            SendError::Client(e) => e,
            SendError::Tunnel(e) => e,
        };
        let mut source = Some(top);
        while let Some(err) = source {
            if let Some(n) = err
                .downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
            {
                return Some(n);
            }
            source = err.source();
        }
        None
    }

    /// The pinning layer's refusal, if that is why (reqwest's path only: the tunnel asks
    /// for the literal address and needs no pin).
    pub(in crate::http) fn pin_error(&self) -> Option<&PinError> {
        match self {
            SendError::Client(e) => pin_error(e),
            SendError::Tunnel(_) => None,
        }
    }

    /// Whether the connection to the site failed (the next address is tried).
    pub(in crate::http) fn is_connect(&self) -> bool {
        match self {
            SendError::Client(e) => e.is_connect(),
            SendError::Tunnel(e) => e.is_connect(),
        }
    }

    /// Whether the site's address refused the TCP connection: ours, or the HTTP proxy's
    /// as it reports it (`ERR_CONNECT_FAIL 111`, `Proxy-Status: connection_refused`).
    pub(in crate::http) fn connection_refused(&self) -> bool {
        match self {
            SendError::Client(e) => crate::http::failure::connection_refused(e),
            SendError::Tunnel(TunnelError::Refused(r)) => r.reports_refused(),
            SendError::Tunnel(_) => false,
        }
    }

    /// Whether the connection died under the request, its packets no longer
    /// acknowledged (`failure::went_silent`).
    pub(in crate::http) fn went_silent(&self) -> bool {
        match self {
            SendError::Client(e) => crate::http::failure::went_silent(e),
            SendError::Tunnel(_) => false,
        }
    }

    /// Whether no connection to the site's address came in time: our own connect timed
    /// out (through a SOCKS proxy this covers the proxy too).
    pub(in crate::http) fn connect_timed_out(&self) -> bool {
        match self {
            SendError::Client(e) => e.is_connect() && e.is_timeout(),
            SendError::Tunnel(_) => false,
        }
    }

    /// Whether the HTTP proxy said it has no room for another client (Privoxy's "503
    /// Too many open connections"): the site was not asked.
    pub(in crate::http) fn no_room(&self) -> bool {
        matches!(self, SendError::Tunnel(TunnelError::Refused(r)) if r.words() == Some(Words::Full))
    }

    /// Whether the HTTP proxy reports that its connection to the site's address timed
    /// out (`ERR_CONNECT_FAIL 110`, `Proxy-Status: connection_timeout`).
    pub(in crate::http) fn proxy_connect_timed_out(&self) -> bool {
        matches!(self, SendError::Tunnel(TunnelError::Refused(r)) if r.reports_connect_timeout())
    }

    /// Whether no connection to the site came up at all. On reqwest's path our clock
    /// notes a connection only once its TLS is done (`connected`), and a TLS failure
    /// is a connect error too: one that OpenSSL's handshake failed reached the site.
    pub(in crate::http) fn reached_no_site(&self, connected: bool) -> bool {
        match self {
            SendError::Client(e) => !connected && !openssl_inside(e),
            SendError::Tunnel(TunnelError::ConnectTimeout(Stage::Connect)) => true,
            SendError::Tunnel(TunnelError::Site(_)) => true,
            SendError::Tunnel(TunnelError::Refused(r)) => {
                r.reports_refused() || r.reports_connect_timeout()
            }
            SendError::Tunnel(_) => false,
        }
    }

    /// The egress's proxy failing, for `why` (a SOCKS5 proxy that hung: `socks_watch`).
    pub(in crate::http) fn proxy(why: String) -> SendError {
        SendError::Tunnel(TunnelError::Proxy(why))
    }

    /// Why the egress's proxy failed, when it did: nothing is known of the site then.
    pub(in crate::http) fn proxy_failure(&self) -> Option<String> {
        match self {
            SendError::Tunnel(TunnelError::Proxy(why)) => Some(why.clone()),
            SendError::Tunnel(TunnelError::ConnectTimeout(Stage::Proxy)) => {
                Some("no connection to the proxy in time".into())
            }
            SendError::Tunnel(TunnelError::Refused(r)) if r.site_failure().is_none() => {
                Some(r.own_failure())
            }
            _ => None,
        }
    }

    /// The error of either path, to walk its sources.
    pub(in crate::http) fn as_error(&self) -> &(dyn StdError + 'static) {
        match self {
            SendError::Client(e) => e,
            SendError::Tunnel(e) => e,
        }
    }

    /// What went wrong, in the deepest error's words.
    pub(in crate::http) fn cause(&self) -> String {
        match self {
            SendError::Client(e) => root_cause(e),
            SendError::Tunnel(e) => root_cause(e),
        }
    }

    /// Whether the site closed the connection before a whole answer's head came.
    pub(in crate::http) fn closed_before_answer(&self) -> bool {
        match self {
            SendError::Client(e) => crate::http::failure::closed_before_answer(e),
            SendError::Tunnel(TunnelError::Http(h)) => h.is_incomplete_message(),
            SendError::Tunnel(TunnelError::Refused(r)) => r.closed_before_answer(),
            SendError::Tunnel(_) => false,
        }
    }

    /// Whether hyper could not read the answer's head: on reqwest's path, its grammar
    /// or its length (the tunnel reads the grammar as browsers do, `mend`); on a
    /// tunnel, its length.
    pub(in crate::http) fn unreadable_head(&self) -> bool {
        match self {
            SendError::Client(e) => crate::http::failure::unreadable_head(e),
            SendError::Tunnel(TunnelError::Http(h)) => h.is_parse_too_large(),
            SendError::Tunnel(_) => false,
        }
    }

    /// Whether an HTTP/2 request was refused for HTTP/1.1 (reqwest's path: the tunnel
    /// speaks HTTP/1.1 only).
    pub(in crate::http) fn http1_required(&self) -> bool {
        match self {
            SendError::Client(e) => crate::http::failure::http1_required(e),
            SendError::Tunnel(_) => false,
        }
    }

    /// Whether the OpenSSL retry applies: the server would speak nothing rustls offers.
    pub(in crate::http) fn no_common_tls(&self) -> bool {
        self.tls_error()
            .is_some_and(crate::http::failure::no_common_tls)
    }

    /// The issuer the site's chain lacks, when that is why the handshake failed.
    pub(in crate::http) fn missing_issuer(&self) -> Option<&crate::http::issuers::MissingIssuer> {
        self.tls_error()
            .and_then(crate::http::issuers::missing_issuer)
    }

    /// The rustls error under a failed handshake, if one is there.
    pub(in crate::http) fn tls_error(&self) -> Option<&rustls::Error> {
        match self {
            SendError::Client(e) => crate::http::failure::tls_error(e),
            SendError::Tunnel(TunnelError::Tls(io)) => rustls_inside(io),
            SendError::Tunnel(_) => None,
        }
    }
}

impl From<reqwest::Error> for SendError {
    fn from(e: reqwest::Error) -> SendError {
        SendError::Client(e)
    }
}

/// Whether OpenSSL's handshake (native-tls) is among the causes of `e`: it failed
/// after the connection came up.
fn openssl_inside(e: &reqwest::Error) -> bool {
    let native = |e: &(dyn StdError + 'static)| e.is::<native_tls::Error>();
    std::iter::successors(Some(e as &(dyn StdError + 'static)), |e| (*e).source()).any(|err| {
        native(err)
            || (err.downcast_ref::<std::io::Error>())
                .and_then(std::io::Error::get_ref)
                .is_some_and(|inner| native(inner))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(status: u16, headers: &[(&str, &str)]) -> Refusal {
        let mut answer = http::Response::builder().status(status);
        for (k, v) in headers {
            answer = answer.header(*k, *v);
        }
        Refusal::of(&answer.body(()).expect("answer"))
    }

    #[test]
    fn a_refused_connect_is_the_sites_only_when_the_proxy_says_the_site_is_why() {
        let kind = |r: Refusal| r.site_failure().map(|(k, _)| k);
        let squid = |code: &str| refusal(503, &[("X-Squid-Error", code)]);
        assert_eq!(
            kind(squid("ERR_CONNECT_FAIL 111")),
            Some(FailureKind::Connect)
        );
        assert_eq!(
            kind(squid("ERR_CONNECT_FAIL 113")),
            Some(FailureKind::Unreachable)
        );
        assert_eq!(
            kind(squid("ERR_CONNECT_FAIL 110")),
            Some(FailureKind::Timeout)
        );
        // squid's own refusals: the egress, not the site.
        assert_eq!(
            kind(refusal(403, &[("X-Squid-Error", "ERR_ACCESS_DENIED 0")])),
            None
        );
        assert_eq!(kind(refusal(407, &[])), None);
        assert_eq!(kind(refusal(403, &[])), None);
        assert_eq!(kind(squid("ERR_DNS_FAIL 0")), None);
        let status = |v: &str| refusal(502, &[("Proxy-Status", v)]);
        assert_eq!(
            kind(status("proxy.example; error=connection_refused")),
            Some(FailureKind::Connect)
        );
        assert_eq!(
            kind(status("proxy.example; error=http_request_denied")),
            None
        );
        // A bare gateway error, as from a plain proxy: the site's, as before.
        assert_eq!(kind(refusal(502, &[])), Some(FailureKind::Connect));
        assert_eq!(kind(refusal(504, &[])), Some(FailureKind::Timeout));
    }

    #[test]
    fn a_proxy_asked_by_name_reports_the_sites_answer_failing() {
        let kind = |r: Refusal| r.site_failure().map(|(k, _)| k);
        let squid = |code: &str| refusal(502, &[("X-Squid-Error", code)]);
        assert_eq!(
            kind(squid("ERR_ZERO_SIZE_OBJECT 0")),
            Some(FailureKind::Connect)
        );
        assert_eq!(kind(squid("ERR_READ_ERROR 104")), Some(FailureKind::Reset));
        assert_eq!(
            kind(squid("ERR_LIFETIME_EXP 0")),
            Some(FailureKind::Timeout)
        );
        assert_eq!(
            kind(squid("ERR_INVALID_RESP 0")),
            Some(FailureKind::Protocol)
        );
        let status = |v: &str| refusal(502, &[("Proxy-Status", v)]);
        assert_eq!(
            kind(status("p; error=http_response_incomplete")),
            Some(FailureKind::Connect)
        );
        assert_eq!(
            kind(status("p; error=http_protocol_error")),
            Some(FailureKind::Protocol)
        );
    }

    #[test]
    fn only_a_proxys_own_page_is_its_report_and_only_its_rules_send_a_url_by_name() {
        let answer = |status: u16, headers: &[(&str, &str)]| {
            let mut a = http::Response::builder().status(status);
            for (k, v) in headers {
                a = a.header(*k, *v);
            }
            a.body(()).expect("answer")
        };
        // The site's own 503, passed on by the proxy: the site's answer.
        assert!(Refusal::reported(&answer(503, &[]), None).is_none());
        assert!(Refusal::reported(&answer(200, &[("Proxy-Status", "squid")]), None).is_none());
        let own = Refusal::reported(
            &answer(403, &[("X-Squid-Error", "ERR_ACCESS_DENIED 0")]),
            None,
        );
        assert!(own.is_some_and(|r| r.refuses_tunnels()));
        // Credentials missing, or the site refusing: not a reason to ask by name.
        assert!(!refusal(407, &[]).refuses_tunnels());
        assert!(!refusal(503, &[("X-Squid-Error", "ERR_CONNECT_FAIL 111")]).refuses_tunnels());
        assert!(refusal(403, &[]).refuses_tunnels());
        assert!(refusal(405, &[]).refuses_tunnels());
        // A web server that is no proxy (nginx's 400 to CONNECT) made every plain-http
        // site `up` on its own page, asked "by name"; a proxy failing to forward
        // (squid's 500 ERR_CANNOT_FORWARD, its parent down) sent every URL by name for
        // ten minutes. Only a proxy's rules send a URL by name.
        assert!(!refusal(400, &[]).refuses_tunnels());
        assert!(!refusal(404, &[]).refuses_tunnels());
        assert!(!refusal(500, &[("X-Squid-Error", "ERR_CANNOT_FORWARD 0")]).refuses_tunnels());
        let denied = refusal(502, &[("Proxy-Status", "p; error=http_request_denied")]);
        assert!(denied.refuses_tunnels());
        // squid's `deny_info`: a page of the operator's own (any ERR_ name, 403), or a
        // redirect to a URL, marked with the status and "Access Denied".
        assert!(refusal(403, &[("X-Squid-Error", "ERR_MYPAGE 0")]).refuses_tunnels());
        assert!(refusal(302, &[("X-Squid-Error", "403 Access Denied")]).refuses_tunnels());
        // A proxy asking for a login is no rule against the address.
        let login = refusal(403, &[("X-Squid-Error", "ERR_CACHE_ACCESS_DENIED 0")]);
        assert!(!login.refuses_tunnels());
    }

    /// tinyproxy, Privoxy and Apache mark their pages with no header: their own words
    /// (a reason phrase), or the page they serve for a host that does not exist, tell
    /// them from the site's answer.
    #[test]
    fn an_unmarked_proxy_page_is_known_by_its_words_or_as_its_page_for_no_such_host() {
        let answer = |status: u16, reason: Option<&'static str>, server: &str| {
            let mut a = http::Response::builder()
                .status(status)
                .header("Server", server)
                .body(())
                .expect("answer");
            if let Some(r) = reason {
                a.extensions_mut()
                    .insert(hyper::ext::ReasonPhrase::from_static(r.as_bytes()));
            }
            a
        };
        let apache = "Apache/2.4.71 (Debian)";
        let own = OwnPage::of(&answer(500, Some("Proxy Error"), apache));
        let reported = |a: &http::Response<()>| Refusal::reported(a, own.as_ref());
        let dns = reported(&answer(500, Some("Proxy Error"), apache)).expect("its own page");
        assert!(dns.site_failure().is_none());
        assert!(dns
            .own_failure()
            .contains("host that does not exist (500 Proxy Error)"));
        // The site's own 500, or the proxy's 503 for a refused connection: not that page.
        assert!(reported(&answer(500, None, "nginx")).is_none());
        let refused = Refusal::of(&answer(503, None, apache)).against(own.as_ref());
        assert_eq!(
            refused.site_failure().map(|(k, _)| k),
            Some(FailureKind::Connect)
        );
        // Words: the proxy's parent gone is its own failure, never the site's.
        let tiny = "tinyproxy/1.11.1";
        let parent = Refusal::of(&answer(
            502,
            Some("Unable to connect to upstream proxy"),
            tiny,
        ));
        assert!(parent.site_failure().is_none());
        assert!(!parent.refuses_tunnels());
        let connect = Refusal::of(&answer(500, Some("Unable to connect"), tiny));
        assert_eq!(
            connect.site_failure().map(|(k, _)| k),
            Some(FailureKind::Connect)
        );
        let blocked = answer(403, Some("Request blocked by Privoxy"), "");
        assert!(reported(&blocked).is_some_and(|r| r.refuses_tunnels()));
    }

    /// Privoxy serving all the clients `max-client-connections` lets it answers the next
    /// "503 Too many open connections", a CONNECT or a URL asked by name: read as a bare
    /// 503, the site's failure to connect, every site was a confirmed `down/connect`.
    #[test]
    fn a_proxy_with_no_room_for_another_client_is_failing_itself() {
        let mut full = http::Response::builder()
            .status(503)
            .body(())
            .expect("answer");
        full.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(
                b"Too many open connections",
            ));
        let tunnel = Refusal::of(&full);
        assert_eq!(tunnel.site_failure().map(|(k, _)| k), None);
        assert!(
            !tunnel.refuses_tunnels(),
            "no rule of it refused the address"
        );
        assert!(
            tunnel.own_failure().contains("no room for another client"),
            "{}",
            tunnel.own_failure()
        );
        let by_name = Refusal::reported(&full, None).expect("its own page");
        assert_eq!(by_name.site_failure().map(|(k, _)| k), None);
    }

    /// squid 5 asked by name for a host its own DNS cannot resolve, or through a parent
    /// that is down, answers 502 `ERR_READ_ERROR 0` without ever contacting the site: it
    /// was read as the site resetting the connection, `down`. A reset by the site
    /// carries its errno (104).
    #[test]
    fn a_read_error_without_the_sites_errno_is_the_proxys() {
        let kind = |r: Refusal| r.site_failure().map(|(k, _)| k);
        let squid = |code: &str| refusal(502, &[("X-Squid-Error", code)]);
        assert_eq!(kind(squid("ERR_READ_ERROR 0")), None);
        assert_eq!(kind(squid("ERR_READ_ERROR 104")), Some(FailureKind::Reset));
    }

    #[test]
    fn a_proxys_report_of_a_refused_or_timed_out_connect_is_told_to_the_limiter() {
        let refused = |r: Refusal| SendError::Tunnel(TunnelError::Refused(Box::new(r)));
        let squid = |e: &str| refusal(503, &[("X-Squid-Error", e)]);
        assert!(refused(squid("ERR_CONNECT_FAIL 111")).connection_refused());
        assert!(refused(refusal(
            502,
            &[("Proxy-Status", "p; error=connection_refused")]
        ))
        .connection_refused());
        assert!(refused(squid("ERR_CONNECT_FAIL 110")).proxy_connect_timed_out());
        assert!(!refused(squid("ERR_CONNECT_FAIL 110")).connection_refused());
        assert!(!refused(squid("ERR_ACCESS_DENIED 0")).connection_refused());
        assert!(!refused(squid("ERR_ACCESS_DENIED 0")).proxy_connect_timed_out());
    }
}
