//! A URL asked of an HTTP proxy by name, when the proxy refuses a tunnel to the address
//! picket counted. Operators keep two habits that do: rules that allow CONNECT to port
//! 443 only (squid's `http_access deny CONNECT !SSL_ports`, tinyproxy's `ConnectPort
//! 443`, Apache's `AllowCONNECT 443 563`), which refuse every plain-http tunnel, and
//! allow lists that name sites (squid's `dstdomain`), which refuse every tunnel to an
//! address. Without this every such site would be the egress failing. Browsers and curl
//! ask such a proxy by name and let it resolve the name: so does this, https with
//! `CONNECT name:port` (TLS with the site as ever) and plain http in absolute form
//! (`GET http://name/`, here), and the proxy, not picket, then chooses the address (the
//! result says so).
//!
//! The refusal is remembered per port for a while, so that the proxy is not asked for a
//! tunnel it refuses on every probe. So is a plain-http tunnel closed without an answer
//! by a proxy that answers tunnels before it connects them (one that intercepts TLS),
//! once asking by name answered; through any other, the close is the site's. The proxy's own
//! error pages (`X-Squid-Error`, RFC 9209 `Proxy-Status`, its own reason phrases, or the
//! page it serves for a host that does not exist: `words`) are read as its reports, the
//! site's or its own, as a refused CONNECT is.

use std::time::Duration;

use tokio::time::Instant;

use super::answer::{answer_to_reqwest, ask, Form};
use super::error::{Refusal, Stage, TunnelError};
use super::heard::{FirstWords, Heard};
use super::words::OwnPage;
use super::Proxy;
use crate::http::head::MAX_HEADER_LINES;
use crate::http::pin::Hop;

/// How long a refused tunnel port is remembered before the proxy is asked again (its
/// rules may change).
const REMEMBERED: Duration = Duration::from_secs(600);

/// What a proxy is asked for, once, before a URL is asked of it by name: `.invalid` names
/// nothing (RFC 6761), so a proxy answers with its own error, while a web server that is
/// no proxy (a typo in the egress, a port reused) serves one of its own pages, as it
/// would for every site asked of it by name.
const NO_SUCH_HOST: &str = "http://picket-egress-check.invalid/";

/// What a proxy answers for [`NO_SUCH_HOST`].
#[derive(Debug, Clone)]
pub(super) struct NoSuchHost {
    /// It forwards what it is asked by name (it reports an error, not a page of its own).
    forwards: bool,
    /// Its error page, if it served one.
    own: Option<OwnPage>,
}

/// Why a URL is asked of the proxy by name rather than through a tunnel to the counted
/// address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(in crate::http) enum NoTunnel {
    /// The proxy refuses a tunnel to the address on this port, by its rules.
    Refused,
    /// The proxy closes a tunnel carrying plain http without an answer (it intercepts
    /// TLS, and takes every tunnel for TLS), and answers the URL asked by name.
    ClosedPlain,
}

/// Marks an answer the proxy was asked for by name, as its tunnels to the counted address
/// on this port fail.
#[derive(Debug, Clone, Copy)]
pub(in crate::http) struct AskedByName {
    pub port: u16,
    pub why: NoTunnel,
}

impl Proxy {
    /// Why tunnels to `port` failed within [`REMEMBERED`], if they did.
    pub(super) fn no_tunnel_lately(&self, port: u16) -> Option<NoTunnel> {
        let mut failed = self.no_tunnel.lock().unwrap_or_else(|p| p.into_inner());
        match failed.get(&port) {
            Some((at, why)) if at.elapsed() < REMEMBERED => Some(*why),
            Some(_) => {
                failed.remove(&port);
                None
            }
            None => None,
        }
    }

    /// Notes that tunnels to `port` fail, and why.
    pub(super) fn remember(&self, port: u16, why: NoTunnel) {
        let mut failed = self.no_tunnel.lock().unwrap_or_else(|p| p.into_inner());
        failed.insert(port, (Instant::now(), why));
    }

    /// Whether the proxy forwards what it is asked by name (remembered for [`REMEMBERED`]):
    /// asked for [`NO_SUCH_HOST`], a proxy reports an error, a web server serves a page
    /// (2xx, or a redirect to its own). No answer within `connect_timeout` tells nothing:
    /// taken as a proxy, whose by-name answers then speak for themselves.
    pub(super) async fn forwards(&self, connect_timeout: Duration) -> bool {
        self.no_such_host(connect_timeout).await.forwards
    }

    /// The page the proxy serves for a host that does not exist, if it serves one: the
    /// same page for a site's name is its own, not the site's.
    pub(super) async fn own_page(&self, connect_timeout: Duration) -> Option<OwnPage> {
        self.no_such_host(connect_timeout).await.own
    }

    /// What the proxy answers for [`NO_SUCH_HOST`], asked once per [`REMEMBERED`].
    async fn no_such_host(&self, connect_timeout: Duration) -> NoSuchHost {
        let mut known = self.no_such_host.lock().await;
        if let Some((_, found)) = known.as_ref().filter(|(at, _)| at.elapsed() < REMEMBERED) {
            return found.clone();
        }
        let found = match self.serves_no_such_host(connect_timeout).await {
            Some(answer) => NoSuchHost {
                forwards: !(answer.status().is_success() || answer.status().is_redirection()),
                own: OwnPage::of(&answer),
            },
            None => NoSuchHost {
                forwards: true,
                own: None,
            },
        };
        *known = Some((Instant::now(), found.clone()));
        found
    }

    /// The proxy's answer to [`NO_SUCH_HOST`], asked by name.
    async fn serves_no_such_host(
        &self,
        connect_timeout: Duration,
    ) -> Option<http::Response<hyper::body::Incoming>> {
        let url = reqwest::Url::parse(NO_SUCH_HOST).ok()?;
        let request = reqwest::Request::new(reqwest::Method::GET, url);
        let asked = async {
            let io = self.reach().await.ok()?;
            ask(
                io,
                Form::Absolute(self.auth.clone()),
                request,
                MAX_HEADER_LINES,
            )
            .await
            .ok()
        };
        tokio::time::timeout(connect_timeout, asked).await.ok()?
    }

    /// A plain-http `request` asked of the proxy by name, in absolute form: connected within
    /// `connect_timeout`, answered by `deadline`.
    pub(super) async fn forward(
        &self,
        request: reqwest::Request,
        connect_timeout: Duration,
        deadline: Instant,
        hop: &Hop,
    ) -> Result<reqwest::Response, TunnelError> {
        let io = match tokio::time::timeout(connect_timeout, self.reach()).await {
            Err(_) => return Err(TunnelError::ConnectTimeout(Stage::Proxy)),
            Ok(io) => io?,
        };
        let _ = hop.clock.connected.set(Instant::now());
        let form = Form::Absolute(self.auth.clone());
        let (io, first) = Heard::new(io);
        let asked = ask(Box::new(io), form, request, MAX_HEADER_LINES);
        // No answer in time: the site's only if the proxy answers its own question
        // meanwhile (`late`), as inside a tunnel.
        let late = (deadline, TunnelError::Timeout);
        let answer = self
            .in_time(asked, late, connect_timeout, hop)
            .await
            .map_err(|e| said_first(e, &first))?;
        let status = answer.status();
        let own = match status.is_client_error() || status.is_server_error() {
            true => self.own_page(connect_timeout).await,
            false => None,
        };
        if let Some(report) = Refusal::reported(&answer, own.as_ref()) {
            return Err(TunnelError::Refused(Box::new(report)));
        }
        if let Some(warning) = stale_copy(answer.headers()) {
            return Err(TunnelError::Proxy(format!(
                "the proxy answered a stale copy from its cache ({warning}): it could not \
                 reach the site, and the site was not heard"
            )));
        }
        Ok(answer_to_reqwest(answer, None, deadline).await)
    }
}

/// A request that broke before its answer (`e`) when the proxy had said something first:
/// its own page, sent before it read the request (Privoxy with no room answers its 503
/// as it accepts), which hyper took for a message nobody asked for. The proxy's page is
/// the failure then, never a site's broken HTTP.
fn said_first(e: TunnelError, first: &FirstWords) -> TunnelError {
    if !matches!(e, TunnelError::Http(_)) {
        return e;
    }
    match first.answer().and_then(|a| Refusal::reported(&a, None)) {
        Some(report) => TunnelError::Refused(Box::new(report)),
        None => e,
    }
}

/// The warning of a copy a cache served stale (RFC 7234's `Warning` codes 110 "Response
/// is Stale", 111 "Revalidation Failed", 112 "Disconnected Operation"), when the answer
/// carries one. squid sends them when it could not revalidate (`reload-into-ims`, a
/// site gone); a cache deletes them once the copy is revalidated, so one present means
/// the site was not heard.
pub(in crate::http) fn stale_copy(headers: &http::HeaderMap) -> Option<String> {
    headers
        .get_all(http::header::WARNING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .find(|w| {
            ["110 ", "111 ", "112 "]
                .iter()
                .any(|code| w.starts_with(code))
        })
        .map(|w| format!("Warning: {w}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Privoxy with no room answers its 503 as it accepts and closes, before it reads
    /// the request: whether hyper reads it as the answer or breaks on it as a message
    /// nobody asked for (then a site's broken HTTP, `down/protocol`), it is the
    /// proxy's page saying it has no room.
    #[tokio::test]
    async fn a_page_the_proxy_sent_before_the_request_is_its_own_whatever_hyper_made_of_it() {
        use tokio::io::AsyncWriteExt;
        const FULL: &[u8] = b"HTTP/1.1 503 Too many open connections\r\n\
            Content-Type: text/plain\r\nConnection: close\r\n\r\n\
            Maximum number of open connections reached.\n";
        let (mut broke, mut answered) = (0, 0);
        for _ in 0..20 {
            let (near, mut far) = tokio::io::duplex(4096);
            far.write_all(FULL).await.expect("written");
            drop(far);
            let (io, first) = Heard::new(near);
            let url = "http://127.0.12.90:8080/".parse().expect("url");
            let request = reqwest::Request::new(reqwest::Method::GET, url);
            let asked = ask(
                Box::new(io),
                Form::Absolute(None),
                request,
                MAX_HEADER_LINES,
            )
            .await;
            let refused = match asked {
                Ok(answer) => {
                    answered += 1;
                    Refusal::reported(&answer, None).map(|r| TunnelError::Refused(Box::new(r)))
                }
                Err(e) => {
                    broke += 1;
                    Some(said_first(e, &first))
                }
            };
            let refused = crate::http::tunnel::SendError::Tunnel(refused.expect("the proxy's"));
            assert!(refused.no_room(), "{answered} answered, {broke} broke");
        }
    }

    #[test]
    fn a_warning_of_a_stale_copy_is_read_and_others_are_not() {
        let with = |value: &str| {
            let mut h = http::HeaderMap::new();
            h.insert(http::header::WARNING, value.parse().expect("value"));
            stale_copy(&h)
        };
        assert_eq!(
            with(r#"111 squid/5.7 "Revalidation failed""#).as_deref(),
            Some(r#"Warning: 111 squid/5.7 "Revalidation failed""#)
        );
        assert!(with(r#"199 - "misc", 110 - "Response is Stale""#).is_some());
        assert!(with(r#"214 proxy "Transformation Applied""#).is_none());
        assert!(stale_copy(&http::HeaderMap::new()).is_none());
    }
}
