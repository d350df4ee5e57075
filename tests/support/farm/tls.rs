//! TLS targets: a test CA with an intermediate (rcgen), leaf certificates good and bad,
//! HTTP/2 only, and a legacy server that speaks only a CBC cipher suite.

use super::*;

// ---------------------------------------------------------------------------
// TLS: a test CA, leaf certificates good and bad

/// A test CA with an intermediate, made with rcgen (also used by `tests/holes.rs`).
pub struct Pki {
    pub ca: Certificate,
    ca_key: KeyPair,
    intermediate: Certificate,
    intermediate_key: KeyPair,
    /// Another intermediate, which no `caIssuers` URL serves: a site it signed stays
    /// incomplete whatever intermediates a prober fetched for other sites before.
    unserved: Certificate,
    unserved_key: KeyPair,
}

/// Sets a certificate's validity to [now + from_days, now + to_days].
pub(super) fn validity(p: &mut CertificateParams, from_days: i64, to_days: i64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let at = |days: i64| epoch + Duration::from_secs((now + days * 86_400) as u64);
    p.not_before = at(from_days);
    p.not_after = at(to_days);
}

pub(super) fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.distinguished_name
        .push(DnType::OrganizationName, "picket test farm");
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    validity(&mut p, -1, 3650);
    p
}

pub(super) fn leaf_params(name: &str, from_days: i64, to_days: i64) -> CertificateParams {
    let mut p = CertificateParams::new(vec![name.to_string()]).expect("leaf params");
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.use_authority_key_identifier_extension = true;
    validity(&mut p, from_days, to_days);
    p
}

impl Pki {
    pub fn new() -> Pki {
        let ca_key = KeyPair::generate().expect("CA key");
        let ca = ca_params("picket farm root CA")
            .self_signed(&ca_key)
            .expect("CA certificate");
        let intermediate_ca = |name: &str| {
            let key = KeyPair::generate().expect("intermediate key");
            let mut p = ca_params(name);
            p.use_authority_key_identifier_extension = true;
            let cert = p
                .signed_by(&key, &ca, &ca_key)
                .expect("intermediate certificate");
            (cert, key)
        };
        let (intermediate, intermediate_key) = intermediate_ca("picket farm intermediate CA");
        let (unserved, unserved_key) = intermediate_ca("picket farm unserved intermediate CA");
        Pki {
            ca,
            ca_key,
            intermediate,
            intermediate_key,
            unserved,
            unserved_key,
        }
    }
}

impl Pki {
    /// A new test CA, its certificate written to `ca.pem` in `dir` (for
    /// `tls.extra_ca_file`), and that file's path.
    pub fn with_ca_file(dir: &std::path::Path) -> (Pki, std::path::PathBuf) {
        let pki = Pki::new();
        let ca_file = dir.join("ca.pem");
        std::fs::write(&ca_file, pki.ca.pem()).expect("write the CA file");
        (pki, ca_file)
    }

    /// A certificate for `name` signed by the root CA, and its key, in PEM: for servers
    /// that read files (redis-server).
    pub fn leaf_pem(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().expect("leaf key");
        let cert = leaf_params(name, -1, 365)
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("leaf");
        (cert.pem(), key.serialize_pem())
    }

    /// A client certificate (`clientAuth`) for `name` and its key, PEM.
    pub fn client_pem(&self, name: &str) -> (String, String) {
        let key = KeyPair::generate().expect("client key");
        let mut params = leaf_params(name, -1, 365);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.ca, &self.ca_key)
            .expect("client certificate");
        (cert.pem(), key.serialize_pem())
    }
}

pub enum Signer {
    SelfSigned,
    /// Self-signed and marked a CA (`basicConstraints CA:TRUE`), as `openssl req -x509`
    /// makes one by default.
    SelfSignedCa,
    Ca,
    Intermediate {
        send_intermediate: bool,
    },
    /// Signed by the intermediate, which is not sent: the leaf names this URL as where
    /// to fetch it (Authority Information Access, `caIssuers`).
    IntermediateAt(String),
    /// The same, signed by the intermediate that no URL serves.
    UnservedIntermediateAt(String),
}

/// A server config presenting a certificate for `name`, valid over the given days.
pub fn server_config(
    pki: &Pki,
    name: &str,
    from_days: i64,
    to_days: i64,
    signer: Signer,
) -> Arc<rustls::ServerConfig> {
    let key = KeyPair::generate().expect("leaf key");
    let params = leaf_params(name, from_days, to_days);
    let (cert, chain_extra): (Certificate, Vec<CertificateDer<'static>>) = match signer {
        Signer::SelfSigned => (params.self_signed(&key).expect("self-signed"), vec![]),
        Signer::SelfSignedCa => {
            let mut params = params;
            params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            (params.self_signed(&key).expect("self-signed CA"), vec![])
        }
        Signer::Ca => (
            params.signed_by(&key, &pki.ca, &pki.ca_key).expect("leaf"),
            vec![],
        ),
        Signer::Intermediate { send_intermediate } => (
            params
                .signed_by(&key, &pki.intermediate, &pki.intermediate_key)
                .expect("leaf"),
            if send_intermediate {
                vec![pki.intermediate.der().clone()]
            } else {
                vec![]
            },
        ),
        Signer::IntermediateAt(url) => (
            aia_leaf(params, &key, &url, &pki.intermediate, &pki.intermediate_key),
            vec![],
        ),
        Signer::UnservedIntermediateAt(url) => (
            aia_leaf(params, &key, &url, &pki.unserved, &pki.unserved_key),
            vec![],
        ),
    };
    let mut chain = vec![cert.der().clone()];
    chain.extend(chain_extra);
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .expect("server certificate");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(config)
}

/// A leaf from `params` signed by `by`, naming `url` as where `by` is (AIA `caIssuers`).
fn aia_leaf(
    mut params: CertificateParams,
    key: &KeyPair,
    url: &str,
    by: &Certificate,
    by_key: &KeyPair,
) -> Certificate {
    params.custom_extensions = vec![rcgen::CustomExtension::from_oid_content(
        testbed::tls::AIA_OID,
        testbed::tls::aia_ca_issuers(url),
    )];
    params.signed_by(key, by, by_key).expect("leaf")
}

/// Serves a fixed page over TLS with `config` on a fresh address.
pub async fn serve_tls(ip: &str, config: Arc<rustls::ServerConfig>, body: &str) -> SocketAddr {
    serve_raw(ip, tls_page(config, body)).await
}

/// As [`serve_tls`] on a given address (port 443, say).
pub async fn serve_tls_at(
    addr: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    body: &str,
) -> SocketAddr {
    crate::support::targets::serve_raw_at(addr, tls_page(config, body)).await
}

/// How a TLS target's answer ends.
#[derive(Clone, Copy, PartialEq)]
enum Ending {
    /// A `Content-Length`, then TLS's close_notify.
    Whole,
    /// The close of the connection (no length, not chunked), without close_notify, as
    /// old and embedded servers close.
    Bare,
}

/// A connection handler answering one request over TLS with a fixed page.
fn tls_page(
    config: Arc<rustls::ServerConfig>,
    body: &str,
) -> impl Fn(TcpStream) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync + 'static {
    tls_page_ending(config, body, Ending::Whole)
}

/// [`tls_page`], its answer ending as `ending` says.
fn tls_page_ending(
    config: Arc<rustls::ServerConfig>,
    body: &str,
    ending: Ending,
) -> impl Fn(TcpStream) -> futures_util::future::BoxFuture<'static, ()> + Send + Sync + 'static {
    let headers = [("Content-Type", HTML_UTF8), ("Connection", "close")];
    let response = Arc::new(match ending {
        Ending::Whole => raw_response("200 OK", &headers, body.as_bytes()),
        Ending::Bare => {
            let mut r = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: {HTML_UTF8}\r\nConnection: close\r\n\r\n"
            )
            .into_bytes();
            r.extend_from_slice(body.as_bytes());
            r
        }
    });
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    move |stream: TcpStream| {
        let acceptor = acceptor.clone();
        let response = Arc::clone(&response);
        Box::pin(async move {
            // A client that rejects the certificate ends the handshake here.
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let _ = crate::support::targets::read_request_head(&mut tls).await;
            let _ = tls.write_all(&response).await;
            match ending {
                Ending::Whole => {
                    let _ = tls.shutdown().await;
                }
                Ending::Bare => {
                    // The TCP connection ends with no TLS shutdown: no close_notify.
                    let _ = tls.flush().await;
                    drop(tls.into_inner().0);
                }
            }
        })
    }
}

/// What a TLS target's ALPN offers.
#[derive(Clone, Copy, PartialEq)]
pub(super) enum Alpn {
    /// HTTP/1.1 only.
    Http1,
    /// HTTP/2 only, as many sites' front ends prefer: a client that cannot speak HTTP/2
    /// gets nothing from it.
    H2Only,
}

/// Serves `router` over TLS with `config`, speaking what `alpn` offers.
pub(super) async fn serve_tls_router(
    ip: &str,
    mut config: rustls::ServerConfig,
    router: Router,
    alpn: Alpn,
) -> SocketAddr {
    config.alpn_protocols = match alpn {
        Alpn::Http1 => vec![b"http/1.1".to_vec()],
        Alpn::H2Only => vec![b"h2".to_vec()],
    };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    serve_raw(ip, move |stream: TcpStream| {
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let mut server =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            if alpn == Alpn::H2Only {
                server = server.http2_only();
            } else {
                server = server.http1_only();
            }
            let _ = server
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .await;
        }
    })
    .await
}

/// One TLS target: its certificate's name, validity (days from now) and signer.
pub(super) struct TlsCase {
    name: &'static str,
    cert: &'static str,
    from: i64,
    to: i64,
    signer: Signer,
    truth: Truth,
    said: Said,
    facts: Vec<Fact>,
}

pub(super) async fn tls(b: &mut Builder, pki: &Pki) {
    let body = page("County office", "Served over TLS.");
    // Certificate errors come out as down/connect today, not degraded/tls: tokio-rustls
    // wraps the rustls::Error in an io::Error, and io::Error::source() skips the error
    // it wraps (it returns the inner error's own source), so http::classify never sees
    // the rustls::Error and falls through to "connection failed".
    let ok = |says| truth("up", Some("ok"), says);
    let cert_error = |says| truth("degraded", Some("tls"), says);
    let cases = [
        TlsCase {
            name: "tls-valid",
            cert: "tls-valid",
            from: -1,
            to: 365,
            signer: Signer::Ca,
            truth: ok("a valid certificate from a trusted CA"),
            said: said("up", "ok"),
            facts: vec![Fact::TlsDaysLeft(360, 365)],
        },
        TlsCase {
            name: "tls-full-chain",
            cert: "tls-full-chain",
            from: -1,
            to: 365,
            signer: Signer::Intermediate {
                send_intermediate: true,
            },
            truth: ok("leaf signed by an intermediate the server sends along"),
            said: said("up", "ok"),
            facts: vec![],
        },
        TlsCase {
            name: "tls-self-signed",
            cert: "tls-self-signed",
            from: -1,
            to: 365,
            signer: Signer::SelfSigned,
            truth: cert_error("self-signed certificate: the browser shows a full-page warning"),
            said: said("degraded", "tls"),
            facts: vec![],
        },
        TlsCase {
            name: "tls-expired",
            cert: "tls-expired",
            from: -60,
            to: -2,
            signer: Signer::Ca,
            truth: cert_error("certificate expired two days ago: NET::ERR_CERT_DATE_INVALID"),
            said: said("degraded", "tls"),
            facts: vec![],
        },
        TlsCase {
            name: "tls-wrong-name",
            cert: "somewhere-else.farm.test",
            from: -1,
            to: 365,
            signer: Signer::Ca,
            truth: cert_error("certificate for another name: NET::ERR_CERT_COMMON_NAME_INVALID"),
            said: said("degraded", "tls"),
            facts: vec![],
        },
        TlsCase {
            name: "tls-incomplete-chain",
            cert: "tls-incomplete-chain",
            from: -1,
            to: 365,
            signer: Signer::Intermediate {
                send_intermediate: false,
            },
            truth: cert_error(
                "leaf signed by an intermediate the server does not send (and no AIA URL to fetch it): certificate error",
            ),
            said: said("degraded", "tls"),
            facts: vec![],
        },
        TlsCase {
            name: "tls-expiring-soon",
            cert: "tls-expiring-soon",
            from: -80,
            to: 5,
            signer: Signer::Ca,
            truth: cert_error(
                "works, but the certificate expires in 5 days (tls.expiry_warn_days = 14)",
            ),
            said: said("degraded", "tls"),
            facts: vec![Fact::TlsDaysLeft(4, 5)],
        },
        // Hunt Z1a (Caddy's `tls internal`, 12-hour certificates): a certificate
        // issued for fewer days than tls.expiry_warn_days is degraded on every check by
        // the contract's rule; `tls.expiry_by_lifetime` judges it by its life
        // (`accuracy::a_short_lived_certificate_is_judged_by_its_life_when_asked`).
        TlsCase {
            name: "tls-short-lived",
            cert: "tls-short-lived",
            from: -1,
            to: 5,
            signer: Signer::Ca,
            truth: cert_error(
                "a 6-day certificate (Let's Encrypt's short-lived profile) with 5 days left: fewer than tls.expiry_warn_days (14), as the contract counts; up with tls.expiry_by_lifetime",
            ),
            said: said("degraded", "tls"),
            facts: vec![Fact::TlsDaysLeft(4, 5)],
        },
    ];
    for c in cases {
        // The certificate's name: the target's own unless the case names another.
        let cert_name = if c.cert.contains('.') {
            c.cert.to_string()
        } else {
            format!("{}.{DOMAIN}", c.cert)
        };
        let config = server_config(pki, &cert_name, c.from, c.to, c.signer);
        let ip = b.ip();
        let addr = serve_tls(&ip, config, &body).await;
        b.add(c.name, "https", addr, "/", None, c.truth, c.said, c.facts);
    }

    // A page whose end is the close of the connection, closed without close_notify.
    // Hunt O: rustls calls that an unexpected end, and the page was degraded/protocol
    // ("the body broke off"), while browsers and curl show it whole.
    let name = "tls-close-without-close-notify";
    let config = server_config(pki, &format!("{name}.{DOMAIN}"), -1, 90, Signer::Ca);
    let ip = b.ip();
    let addr = serve_raw(&ip, tls_page_ending(config, &body, Ending::Bare)).await;
    b.add(
        name,
        "https",
        addr,
        "/",
        None,
        truth(
            "up",
            Some("ok"),
            "a page ending with the connection, closed without TLS close_notify: browsers and curl show it whole",
        ),
        said("up", "ok"),
        vec![],
    );

    // An HTTPS page that sends HSTS and redirects to plain HTTP on another port of the
    // same host (hunt O): browsers rewrite the redirect to https:// (RFC 6797 8.3), and
    // that port speaks no TLS. picket followed the plain http:// and said up.
    let name = "hsts-then-plain-http";
    let ip = b.ip();
    let plain_page = page("County office", "Served over plain HTTP.");
    let plain = serve(
        &ip,
        Router::new().route(
            "/",
            any(move || async move { html(StatusCode::OK, plain_page) }),
        ),
    )
    .await;
    let host = format!("{name}.{DOMAIN}");
    let to_plain = format!("http://{host}:{}/", plain.port());
    let router = Router::new().route(
        "/",
        any(move || {
            let to_plain = to_plain.clone();
            async move {
                (
                    StatusCode::MOVED_PERMANENTLY,
                    [
                        (
                            header::STRICT_TRANSPORT_SECURITY,
                            "max-age=31536000".to_string(),
                        ),
                        (header::LOCATION, to_plain),
                    ],
                    "",
                )
                    .into_response()
            }
        }),
    );
    let config = server_config(pki, &host, -1, 90, Signer::Ca);
    let addr = serve_tls_router(&ip, (*config).clone(), router, Alpn::Http1).await;
    b.add(
        name,
        "https",
        addr,
        "/",
        None,
        truth(
            "down",
            Some("tls"),
            "an HTTPS page sending HSTS redirects to plain HTTP on another port: browsers ask that port over HTTPS, which it does not speak",
        ),
        said("down", "tls"),
        vec![Fact::DetailContains("Strict-Transport-Security")],
    );

    // Most sites' TLS front ends negotiate HTTP/2; this one speaks nothing else.
    let name = "tls-h2-only";
    let config = server_config(pki, &format!("{name}.{DOMAIN}"), -1, 90, Signer::Ca);
    let page_h2 = page("County office", "Served over HTTP/2.");
    let router = Router::new().route(
        "/",
        any(move || async move { html(StatusCode::OK, page_h2) }),
    );
    let ip = b.ip();
    let addr = serve_tls_router(&ip, (*config).clone(), router, Alpn::H2Only).await;
    b.add(
        name,
        "https",
        addr,
        "/",
        None,
        truth("up", Some("ok"), "a page served only over HTTP/2 (ALPN h2)"),
        said("up", "ok"),
        // Only an HTTP/2 client gets an answer at all.
        vec![Fact::Attempts(1)],
    );

    // An `https://` URL naming a port that speaks plain HTTP (upstream lists carry
    // `https://host:8080/` for plain ports): the server answers the ClientHello with an
    // HTTP 400, which is no TLS record. Browsers show ERR_SSL_PROTOCOL_ERROR and no page:
    // the site is down for them, whatever the certificate policy says.
    let plain = page("County office", "Plain HTTP only.");
    let ip = b.ip();
    let addr = serve(
        &ip,
        Router::new().route("/", any(move || async move { html(StatusCode::OK, plain) })),
    )
    .await;
    b.add(
        "https-to-a-plain-port",
        "https",
        addr,
        "/",
        None,
        truth(
            "down",
            Some("tls"),
            "an https:// URL whose port speaks plain HTTP: browsers show a TLS protocol error, no page",
        ),
        said("down", "tls"),
        vec![Fact::DetailContains("does not speak TLS")],
    );

    browser_checks(b, pki).await;
}

/// Whether `headers` carry what Chrome sends with every HTTPS navigation besides its
/// User-Agent: the client hints matching that User-Agent (a Windows desktop Chrome
/// here), the fetch metadata of a page the user asked for, and zstd among the codings.
fn chrome_over_https(headers: &HeaderMap) -> bool {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    };
    let ua = get("user-agent");
    let Some(major) = ua.split("Chrome/").nth(1).and_then(|v| v.split('.').next()) else {
        return false;
    };
    let brands = get("sec-ch-ua");
    brands.contains(&format!("\"Google Chrome\";v=\"{major}\""))
        && brands.contains(&format!("\"Chromium\";v=\"{major}\""))
        && get("sec-ch-ua-mobile") == "?0"
        && ua.contains("Windows")
        && get("sec-ch-ua-platform") == "\"Windows\""
        && get("sec-fetch-site") == "none"
        && get("sec-fetch-mode") == "navigate"
        && get("sec-fetch-user") == "?1"
        && get("sec-fetch-dest") == "document"
        && get("accept-encoding")
            .split(',')
            .any(|c| c.trim() == "zstd")
}

/// How a page is compressed for a `Content-Encoding`.
type Compress = fn(&[u8]) -> Vec<u8>;

/// Sites that judge the client by more than its User-Agent, over HTTPS.
async fn browser_checks(b: &mut Builder, pki: &Pki) {
    // A bot manager in front of the site (as many government sites have): a request
    // that calls itself Chrome but lacks what Chrome sends on every HTTPS navigation is
    // refused as a bot. Chrome gets the page.
    let name = "bot-manager";
    let config = server_config(pki, &format!("{name}.{DOMAIN}"), -1, 90, Signer::Ca);
    let home = page("County office", "Permits, licences and council minutes.");
    let router = Router::new().route(
        "/",
        any(move |headers: HeaderMap| {
            let home = home.clone();
            async move {
                if chrome_over_https(&headers) {
                    html(StatusCode::OK, home)
                } else {
                    html(
                        StatusCode::FORBIDDEN,
                        "<html><head><title>Access Denied</title></head><body><h1>Access Denied</h1>\
                         You don't have permission to access this server. Reference #18.4f2e</body></html>"
                            .to_string(),
                    )
                }
            }
        }),
    );
    let ip = b.ip();
    let addr = serve_tls_router(&ip, (*config).clone(), router, Alpn::Http1).await;
    b.add(
        name,
        "https",
        addr,
        "/",
        None,
        truth(
            "up",
            Some("ok"),
            "refuses a Chrome User-Agent without Chrome's client hints, fetch metadata and codings; Chrome gets the page",
        ),
        said("up", "ok"),
        vec![Fact::Attempts(1)],
    );

    // zstd and br, which Chrome (zstd from 123) and Firefox (zstd from 126) ask for over
    // HTTPS only, and CDNs serve to them; and the same labelled in capitals (hunt Q),
    // which Chrome decodes too: codings are case-insensitive.
    let zstd: Compress = |text| zstd::encode_all(text, 3).expect("zstd");
    let br: Compress = super::bodies::br;
    let codings = [
        (
            "zstd",
            "zstd",
            "a zstd-encoded page containing 欢迎光临",
            zstd,
        ),
        (
            "zstd-capitals",
            "ZSTD",
            "a zstd-encoded page labelled \"ZSTD\": codings are case-insensitive",
            zstd,
        ),
        ("brotli", "br", "a br-encoded page containing 欢迎光临", br),
        (
            "brotli-capitals",
            "BR",
            "a br-encoded page labelled \"BR\": codings are case-insensitive",
            br,
        ),
    ];
    for (name, label, says, compress) in codings {
        let config = server_config(pki, &format!("{name}.{DOMAIN}"), -1, 90, Signer::Ca);
        let text = page(
            "County office",
            "欢迎光临 — this page travels compressed. Opening hours and services.",
        );
        let packed = Bytes::from(compress(text.as_bytes()));
        let router = Router::new().route(
            "/",
            any(move || {
                let packed = packed.clone();
                async move {
                    (
                        [
                            (header::CONTENT_TYPE, HTML_UTF8),
                            (header::CONTENT_ENCODING, label),
                        ],
                        packed,
                    )
                        .into_response()
                }
            }),
        );
        let ip = b.ip();
        let addr = serve_tls_router(&ip, (*config).clone(), router, Alpn::Http1).await;
        b.add(
            name,
            "https",
            addr,
            "/",
            Some(json!({"body_contains": "欢迎光临"})),
            truth("up", Some("ok"), says),
            said("up", "ok"),
            vec![Fact::Charset("UTF-8")],
        );
    }
}

/// Chains sent without their intermediate whose leaf names where it is (AIA
/// `caIssuers`), as many small sites' are: browsers fetch it and show the page.
pub(super) async fn incomplete_chains_with_aia(b: &mut Builder, pki: &Pki, dir: &std::path::Path) {
    // The CA's own server: the intermediate (DER, as CAs serve it; and in a PKCS#7
    // bundle, as government CAs serve theirs), and nothing else.
    let der = pki.intermediate.der().to_vec();
    let bundle = pkcs7_bundle(&pki.intermediate.pem(), dir);
    let router = Router::new()
        .route(
            "/intermediate.crt",
            any(move || {
                let der = der.clone();
                async move { ([(header::CONTENT_TYPE, "application/pkix-cert")], der) }
            }),
        )
        .route(
            "/intermediate.p7c",
            any(move || {
                let bundle = bundle.clone();
                async move { ([(header::CONTENT_TYPE, "application/pkcs7-mime")], bundle) }
            }),
        )
        // A CA that moved its files keeps the old URLs as redirects.
        .route(
            "/old/intermediate.crt",
            any(|| async {
                (
                    StatusCode::MOVED_PERMANENTLY,
                    [(header::LOCATION, "/intermediate.crt")],
                )
            }),
        );
    let ip = b.ip();
    let ca = serve(&ip, router).await;
    b.ca_port = ca.port();
    let ca_host = b.host("ca", &ip);
    let sinkhole = b.host("ca-sinkhole", "0.0.0.0");
    let at = |path: &str| format!("http://{ca_host}:{}{path}", ca.port());
    let body = page("County office", "Served over TLS with an incomplete chain.");
    let cases = [
        (
            "tls-incomplete-chain-aia",
            Signer::IntermediateAt(at("/intermediate.crt")),
            truth(
                "up",
                Some("ok"),
                "leaf signed by an intermediate the server does not send, whose URL the leaf names (AIA): browsers fetch it and show the page",
            ),
            said("up", "ok"),
            vec![Fact::DetailContains("incomplete chain"), Fact::Attempts(1)],
        ),
        (
            "tls-incomplete-chain-aia-moved",
            Signer::IntermediateAt(at("/old/intermediate.crt")),
            truth(
                "up",
                Some("ok"),
                "the same, but the URL the leaf names redirects to where the intermediate is now: browsers follow it",
            ),
            said("up", "ok"),
            vec![Fact::DetailContains("incomplete chain"), Fact::Attempts(1)],
        ),
        (
            "tls-incomplete-chain-aia-p7c",
            Signer::IntermediateAt(at("/intermediate.p7c")),
            truth(
                "up",
                Some("ok"),
                "the same, but the URL serves the intermediate in a certs-only PKCS#7 bundle (.p7c), as government CAs do: browsers read it",
            ),
            said("up", "ok"),
            vec![Fact::DetailContains("incomplete chain"), Fact::Attempts(1)],
        ),
        (
            "tls-incomplete-chain-aia-gone",
            // Signed by an intermediate no URL serves, so what the farm's other sites
            // had fetched cannot complete it (as in one process's accuracy run).
            Signer::UnservedIntermediateAt(at("/gone.crt")),
            truth(
                "degraded",
                Some("tls"),
                "the same, but the URL the leaf names answers 404: no browser can complete the chain",
            ),
            said("degraded", "tls"),
            vec![Fact::DetailContains("404")],
        ),
        (
            // The URL is the site's word: it must not reach what the policy refuses.
            "tls-incomplete-chain-aia-sinkhole",
            Signer::UnservedIntermediateAt(format!(
                "http://{sinkhole}:{}/intermediate.crt",
                ca.port()
            )),
            truth(
                "degraded",
                Some("tls"),
                "the same, but the URL the leaf names is on a host that resolves to 0.0.0.0: refused by policy, not fetched",
            ),
            said("degraded", "tls"),
            vec![Fact::DetailContains("refused by policy")],
        ),
    ];
    for (name, signer, truth, said, facts) in cases {
        let config = server_config(pki, &format!("{name}.{DOMAIN}"), -1, 365, signer);
        let ip = b.ip();
        let addr = serve_tls(&ip, config, &body).await;
        b.add(name, "https", addr, "/", None, truth, said, facts);
    }
}

/// `pem` as a certs-only PKCS#7 bundle (DER), made by `openssl crl2pkcs7` as CAs make
/// theirs.
fn pkcs7_bundle(pem: &str, dir: &std::path::Path) -> Vec<u8> {
    let openssl = crate::support::procs::find_binary("openssl", &[]).unwrap_or_else(|| {
        panic!(
            "openssl not found (the farm's PKCS#7 bundle): {}",
            crate::support::procs::INSTALL_HINT
        )
    });
    let (pem_file, p7c_file) = (dir.join("intermediate.pem"), dir.join("intermediate.p7c"));
    std::fs::write(&pem_file, pem).expect("write the intermediate");
    let status = std::process::Command::new(openssl)
        .args(["crl2pkcs7", "-nocrl", "-outform", "DER", "-certfile"])
        .arg(&pem_file)
        .arg("-out")
        .arg(&p7c_file)
        .status()
        .expect("run openssl crl2pkcs7");
    assert!(status.success(), "openssl crl2pkcs7 failed: {status}");
    std::fs::read(&p7c_file).expect("read the bundle")
}

// ---------------------------------------------------------------------------
// Legacy TLS: a server that speaks only a CBC cipher suite

/// `openssl s_server` with TLS 1.2 and ECDHE-RSA-AES128-SHA only: an old but still
/// common setup that Chrome still negotiates and rustls never will.
pub(super) async fn legacy_tls(b: &mut Builder, pki: &Pki, dir: &std::path::Path) {
    let name = "tls-legacy-cbc";
    let openssl = crate::support::procs::find_binary("openssl", &[]).unwrap_or_else(|| {
        panic!(
            "openssl not found (the farm's legacy TLS server): {}",
            crate::support::procs::INSTALL_HINT
        )
    });
    let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA leaf key");
    let cert = leaf_params(&format!("{name}.{DOMAIN}"), -1, 90)
        .signed_by(&key, &pki.ca, &pki.ca_key)
        .expect("leaf");
    let cert_file = dir.join("legacy-cert.pem");
    let key_file = dir.join("legacy-key.pem");
    std::fs::write(&cert_file, cert.pem()).expect("write the legacy cert");
    std::fs::write(&key_file, key.serialize_pem()).expect("write the legacy key");
    let ip = b.ip();
    let port = std::net::TcpListener::bind((ip.as_str(), 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // The shell stops the server once our end of its stdin closes, however we exit.
    let child = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#""$0" s_server -quiet -www -accept "$1" -cert "$2" -key "$3" -tls1_2 -cipher ECDHE-RSA-AES128-SHA </dev/null >/dev/null 2>&1 & pid=$!; read _; kill "$pid""#)
        .arg(&openssl)
        .arg(format!("{ip}:{port}"))
        .arg(&cert_file)
        .arg(&key_file)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("start openssl s_server");
    b.helpers.push(child);
    let addr = SocketAddr::new(ip.parse().expect("farm ip"), port);
    let t = std::time::Instant::now();
    while TcpStream::connect(addr).await.is_err() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "openssl s_server did not listen on {addr} within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.add(
        name,
        "https",
        addr,
        "/",
        None,
        truth(
            "up",
            Some("ok"),
            "TLS 1.2 with only ECDHE-RSA-AES128-SHA (a CBC suite): Chrome still negotiates it and shows the page",
        ),
        said("up", "ok"),
        vec![
            Fact::DetailContains("legacy TLS"),
            Fact::Attempts(1),
            Fact::TlsDaysLeft(89, 90),
        ],
    );
}
