//! The reqwest clients, built once per egress and TLS mode (rustls, and OpenSSL for
//! servers that speak only legacy TLS, built again when the roots change) and shared by
//! every probe: no redirects, no
//! pooling, every request pinned to its counted address by [`PinLayer`] and the pinned
//! resolver.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rustls::pki_types::CertificateDer;

use super::head::{MAX_HEADER_LINES, MAX_HEADER_LIST_BYTES};

/// Quiet time on a connection before its first TCP keepalive probe.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(1);
/// Time between keepalive probes.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
/// Keepalive probes left unanswered before the connection is given up (ETIMEDOUT).
const KEEPALIVE_RETRIES: u32 = 2;

/// A request left unanswered this long on a connection that did not fail was kept
/// open by the server: by then a connection it dropped would have met a reset at the
/// first keepalive probe, and one whose packets go nowhere would have run out of
/// probes (with a second for the request's own way there).
pub(crate) const KEPT_OPEN_AFTER: Duration = Duration::from_secs(
    KEEPALIVE_IDLE.as_secs() + KEEPALIVE_INTERVAL.as_secs() * KEEPALIVE_RETRIES as u64 + 1,
);
use super::pin::{MarkHello, PinLayer, Route};
use super::slots::Slots;
use super::tls::{Trust, Trusted};
use super::tunnel::Tunnel;
use super::SetupError;
use crate::config::EgressSettings;

/// One egress: its proxy, if any, and its two clients.
pub(super) struct Egress {
    pub(super) name: String,
    pub(super) proxy: Option<reqwest::Proxy>,
    /// The proxy speaks SOCKS (else HTTP, when there is a proxy).
    pub(super) socks: bool,
    /// The proxy URL gives a user name (and password) to log in with.
    pub(super) login: bool,
    /// What the connection's peer can be checked against.
    pub(super) route: Route,
    /// The egress's client over rustls, shared by every probe.
    pub(super) client: reqwest::Client,
    /// The same speaking HTTP/1.1 only, for a server that refused a request over
    /// HTTP/2 with `HTTP_1_1_REQUIRED`.
    pub(super) http1: reqwest::Client,
    /// The same over OpenSSL, for servers that speak only legacy TLS.
    pub(super) legacy: Legacy,
    /// For an HTTP proxy, how requests reach it with the counted address in place of
    /// the name (`tunnel/`): the clients above only build those requests.
    pub(super) tunnel: Option<Tunnel>,
    /// For the direct and SOCKS egresses, the route a request is asked again on when
    /// reqwest's client could not read the answer's head or chunks (`tunnel/mend`).
    pub(super) mended: Option<Tunnel>,
    /// For an HTTP proxy, its tunnel reading heads as long as browsers take them: where
    /// a request whose head had more lines than the tunnel reads is asked again.
    pub(super) long_heads: Option<Tunnel>,
    /// The connections it may hold at once (`egress.max_connections`).
    pub(super) slots: Slots,
}

impl Egress {
    /// The egress with its two clients, built once for every probe through it.
    pub(super) fn new(
        e: &EgressSettings,
        resolve: &Arc<dyn reqwest::dns::Resolve>,
        tls: &rustls::ClientConfig,
        trust: &Arc<Trust>,
    ) -> Result<Egress, SetupError> {
        let proxy = match &e.proxy {
            None => None,
            Some(url) => {
                Some(
                    reqwest::Proxy::all(url.as_str()).map_err(|err| SetupError::Proxy {
                        name: e.name.clone(),
                        message: err.to_string(),
                    })?,
                )
            }
        };
        let scheme = e.proxy.as_ref().map(|u| u.scheme());
        let route = match scheme {
            None => Route::Direct,
            // socks5 and socks4 are given the address we resolved; socks5h, socks4a
            // and HTTP proxies resolve the name themselves.
            Some("socks5" | "socks4") => Route::SocksLocal,
            Some(_) => Route::ProxyResolves,
        };
        let tls_err = |err: reqwest::Error| SetupError::Tls(err.to_string());
        let client =
            rustls_client(builder(resolve.clone(), proxy.as_ref()), tls).map_err(tls_err)?;
        // Its ALPN offers HTTP/1.1 alone: reqwest speaks what the handshake chose.
        let mut tls_http1 = tls.clone();
        tls_http1.alpn_protocols = vec![b"http/1.1".to_vec()];
        let http1 = rustls_client(
            builder(resolve.clone(), proxy.as_ref()).http1_only(),
            &tls_http1,
        )
        .map_err(tls_err)?;
        let legacy = Legacy::new(resolve, proxy.as_ref(), trust)?;
        let tunnel = Tunnel::for_egress(e, resolve, tls);
        Ok(Egress {
            name: e.name.clone(),
            socks: scheme.is_some_and(|s| s.starts_with("socks")),
            login: e.proxy.as_ref().is_some_and(|u| !u.username().is_empty()),
            proxy,
            route,
            client,
            http1,
            legacy,
            long_heads: tunnel.as_ref().and_then(Tunnel::reading_long_heads),
            tunnel,
            mended: Tunnel::mended(e, resolve, tls),
            slots: Slots::new(&e.name, e.max_connections),
        })
    }
}

/// The egress's OpenSSL client, built again when the roots change: OpenSSL reads the
/// system's when the client is built, and `tls.extra_ca_file`'s are added to it.
pub(super) struct Legacy {
    resolve: Arc<dyn reqwest::dns::Resolve>,
    proxy: Option<reqwest::Proxy>,
    trust: Arc<Trust>,
    /// What it was built of, and the roots it was built with.
    built: Mutex<(Arc<Trusted>, LegacyTls)>,
}

/// OpenSSL for one set of roots: reqwest's client (the direct and SOCKS routes), and
/// the same handshake for an HTTP proxy's tunnel (`tunnel/`), which reqwest's client
/// cannot use: it would ask the proxy for the name.
#[derive(Clone)]
pub(super) struct LegacyTls {
    pub(super) client: reqwest::Client,
    pub(super) handshake: tokio_native_tls::TlsConnector,
}

impl Legacy {
    fn new(
        resolve: &Arc<dyn reqwest::dns::Resolve>,
        proxy: Option<&reqwest::Proxy>,
        trust: &Arc<Trust>,
    ) -> Result<Legacy, SetupError> {
        let trusted = trust.now();
        let tls = legacy_tls(builder(resolve.clone(), proxy), &trusted.extra_ca)?;
        Ok(Legacy {
            resolve: resolve.clone(),
            proxy: proxy.cloned(),
            trust: trust.clone(),
            built: Mutex::new((trusted, tls)),
        })
    }

    /// OpenSSL for the roots trusted now.
    pub(super) fn now(&self) -> LegacyTls {
        let trusted = self.trust.now();
        let mut built = self.built.lock().unwrap_or_else(PoisonError::into_inner);
        if !Arc::ptr_eq(&built.0, &trusted) {
            let b = builder(self.resolve.clone(), self.proxy.as_ref());
            match legacy_tls(b, &trusted.extra_ca) {
                Ok(tls) => built.1 = tls,
                // Kept, and not tried again until the roots change again.
                Err(e) => {
                    tracing::warn!(error = %e, "the OpenSSL client could not be built for the new roots: it keeps the old")
                }
            }
            built.0 = trusted;
        }
        built.1.clone()
    }
}

/// What every shared client has: no redirects, no pooling, requests pinned by
/// `resolve` and [`PinLayer`], the egress's proxy. Timeouts are the request's.
pub(super) fn builder(
    resolve: Arc<dyn reqwest::dns::Resolve>,
    proxy: Option<&reqwest::Proxy>,
) -> reqwest::ClientBuilder {
    let b = reqwest::Client::builder()
        .connector_layer(PinLayer)
        .redirect(reqwest::redirect::Policy::none())
        // gzip is undone by picket (`body::own_codings`), which sees every
        // `Content-Encoding` line: reqwest's decoder undoes the first line's gzip and
        // drops the rest, so a page gzipped twice on two lines (browsers show it) could
        // not be told from one gzipped twice and labelled once (browsers show garbage),
        // and it refuses a gzip body whose trailer is missing, which Chrome shows. br and
        // zstd likewise: reqwest's decoders drop `Content-Length` too, which a body
        // framed as Chrome frames it needs (`body::length_browsers_take`, review Z).
        .no_gzip()
        .no_brotli()
        .no_zstd()
        // Pooling off: every probe is a first visitor, and a pooled connection would
        // go to whatever address it was opened for, not the one just counted.
        .pool_max_idle_per_host(0)
        // hyper stops at 100 header lines; browsers only limit the head's size
        // (256 KB in Chrome), and a site that sets many cookies still works in them.
        // Header names as browsers and curl write them ("Host:", "User-Agent:"), not in
        // hyper's lower case: old servers and appliances that read them case-sensitively
        // answer a lower-case "host:" with 400.
        .http1_title_case_headers()
        .http1_max_headers(MAX_HEADER_LINES)
        // Header lines that break the grammar in ways browsers forgive (a space before
        // the colon, a folded line, a line without a colon) are read as browsers read
        // them: a page they show is not "down" for its server's old formatting.
        .http1_allow_spaces_after_header_name_in_responses(true)
        .http1_allow_obsolete_multiline_headers_in_responses(true)
        .http1_ignore_invalid_headers_in_responses(true)
        // The same for HTTP/2, whose header list hyper caps at 16 KB.
        .http2_max_header_list_size(MAX_HEADER_LIST_BYTES)
        // reqwest sends a request again by itself on HTTP/2 REFUSED_STREAM or GOAWAY:
        // that request was never counted by the per-IP limit, so it is not sent.
        .retry(reqwest::retry::never())
        // TCP keepalive within a probe's time tells a server hanging from one that
        // dropped us: a connection haproxy's `silent-drop` left behind answers the
        // first keepalive probe with a reset, one the server keeps answers it, and one
        // whose packets a firewall began to drop ends unanswered ([`KEPT_OPEN_AFTER`]).
        .tcp_keepalive(KEEPALIVE_IDLE)
        .tcp_keepalive_interval(KEEPALIVE_INTERVAL)
        .tcp_keepalive_retries(KEEPALIVE_RETRIES)
        .tcp_user_timeout(None)
        .tls_info(true)
        // Deflate is decoded here: servers send raw deflate as often as zlib, and
        // browsers accept both.
        .no_deflate()
        .dns_resolver(resolve);
    match proxy {
        Some(p) => b.proxy(p.clone()),
        None => b.no_proxy(),
    }
}

/// A shared client over rustls.
fn rustls_client(
    builder: reqwest::ClientBuilder,
    tls: &rustls::ClientConfig,
) -> Result<reqwest::Client, reqwest::Error> {
    let mut tls = tls.clone();
    // No session resumption: a resumed session skips the certificate check and shows
    // no certificate, and every probe must see the site as a first visitor does. The
    // store is asked for a session when the ClientHello is built, which is the moment
    // the connection is up: that splits connect from TLS time.
    tls.resumption = rustls::client::Resumption::store(Arc::new(MarkHello));
    builder.use_preconfigured_tls(tls).build()
}

/// A shared client over OpenSSL, for a server that shares no TLS version or cipher
/// suite with rustls: TLS 1.2 at least, as browsers require, but with the CBC suites
/// browsers still offer. Roots: the system's and `tls.extra_ca_file`. OpenSSL keeps no
/// client-side session cache unless asked, so nothing is resumed here either. With it,
/// the same handshake for a tunnel.
///
/// HTTP/1.1 only: it is also the way to a server that renegotiates to ask for a client
/// certificate, which rustls cannot do and which HTTP/2 forbids (such a server resets
/// an HTTP/2 request with `HTTP_1_1_REQUIRED`; browsers use HTTP/1.1 there too).
fn legacy_tls(
    builder: reqwest::ClientBuilder,
    extra_ca: &[CertificateDer<'static>],
) -> Result<LegacyTls, SetupError> {
    let tls_err = |e: &dyn std::fmt::Display| SetupError::Tls(e.to_string());
    let mut b = builder
        .use_native_tls()
        .http1_only()
        .min_tls_version(reqwest::tls::Version::TLS_1_2);
    let mut handshake = native_tls::TlsConnector::builder();
    handshake
        .min_protocol_version(Some(native_tls::Protocol::Tlsv12))
        .request_alpns(&["http/1.1"]);
    for der in extra_ca {
        b = b.add_root_certificate(reqwest::Certificate::from_der(der).map_err(|e| tls_err(&e))?);
        handshake
            .add_root_certificate(native_tls::Certificate::from_der(der).map_err(|e| tls_err(&e))?);
    }
    Ok(LegacyTls {
        client: b.build().map_err(|e| tls_err(&e))?,
        handshake: handshake.build().map_err(|e| tls_err(&e))?.into(),
    })
}
