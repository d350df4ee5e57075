//! A hostile target farm: our own web servers on 127.0.2.x, each behaving like a
//! site picket meets in the wild (slow, picky, mis-encoded, compressed, broken TLS,
//! redirect games, block pages, silence), with the truth about it, what a person
//! with a browser would say, and the verdict and reason picket is expected to give.
//!
//! Every target has its own loopback address and a host name `NAME.farm.test`
//! resolved through `dns.static`, except `nxdomain`, which goes to a tiny DNS
//! server here that answers NXDOMAIN to everything. TLS certificates come from a
//! test CA made at start-up with rcgen; its PEM file is `tls.extra_ca_file`.
//!
//! [`Farm::config_toml`] and [`Farm::jobs`] give what `picket check` needs; the
//! accuracy test (`tests/accuracy.rs`) runs them and compares.

use std::io::Write as _;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use rcgen::{
    BasicConstraints, Certificate, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

use super::targets::{raw, serve, serve_raw};

/// Host names of the farm end in this.
pub const DOMAIN: &str = "farm.test";

/// A verdict with its reason code, as picket writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Said {
    pub verdict: &'static str,
    pub reason: &'static str,
}

const fn said(verdict: &'static str, reason: &'static str) -> Said {
    Said { verdict, reason }
}

/// What is really going on, as a person with a browser would put it.
#[derive(Debug, Clone, Copy)]
pub struct Truth {
    /// `up`, `degraded`, `down`, `unknown`, or `not up` (any verdict but `up`).
    pub verdict: &'static str,
    /// The reason code that says it right, when only one does.
    pub reason: Option<&'static str>,
    /// In words.
    pub says: &'static str,
}

const fn truth(verdict: &'static str, reason: Option<&'static str>, says: &'static str) -> Truth {
    Truth {
        verdict,
        reason,
        says,
    }
}

impl Truth {
    /// Whether picket saying `verdict`/`reason` tells the truth.
    pub fn holds(&self, verdict: &str, reason: &str) -> bool {
        match self.verdict {
            "not up" => verdict != "up",
            v => v == verdict && self.reason.is_none_or(|r| r == reason),
        }
    }

    /// `down/http_status`, `not up`, ...
    pub fn code(&self) -> String {
        match self.reason {
            Some(r) => format!("{}/{r}", self.verdict),
            None => self.verdict.to_string(),
        }
    }
}

/// A fact about a result beyond its verdict and reason.
#[derive(Debug, Clone)]
pub enum Fact {
    /// `http.redirects`.
    Redirects(u64),
    /// `http.truncated` (absent = false).
    Truncated(bool),
    /// `http.body_bytes`.
    BodyBytes(u64),
    /// `http.charset`.
    Charset(&'static str),
    /// `attempts` and the length of `attempt_log`.
    Attempts(u64),
    /// `attempt_log[0].reason`.
    FirstAttemptReason(&'static str),
    /// `timing_ms.total` at least this.
    TotalAtLeastMs(u64),
    /// `tls_days_left` within these bounds.
    TlsDaysLeft(i64, i64),
    /// `ip` of the result.
    Ip(String),
    /// The detail line contains this.
    DetailContains(&'static str),
}

impl Fact {
    /// Checks the fact against one result.
    ///
    /// # Errors
    /// What was found instead.
    pub fn check(&self, r: &Value) -> Result<(), String> {
        let http = |k: &str| r.pointer(&format!("/http/{k}")).cloned();
        let (ok, found) = match self {
            Fact::Redirects(n) => (
                http("redirects") == Some(json!(n)),
                http("redirects").unwrap_or(Value::Null),
            ),
            Fact::Truncated(t) => {
                let got = http("truncated").and_then(|v| v.as_bool()).unwrap_or(false);
                (got == *t, json!(got))
            }
            Fact::BodyBytes(n) => (
                http("body_bytes") == Some(json!(n)),
                http("body_bytes").unwrap_or(Value::Null),
            ),
            Fact::Charset(c) => (
                http("charset") == Some(json!(c)),
                http("charset").unwrap_or(Value::Null),
            ),
            Fact::Attempts(n) => {
                let log = r["attempt_log"].as_array().map_or(0, Vec::len) as u64;
                (
                    r["attempts"] == json!(n) && log == *n,
                    json!({"attempts": r["attempts"], "attempt_log": log}),
                )
            }
            Fact::FirstAttemptReason(reason) => {
                let got = r.pointer("/attempt_log/0/reason").cloned();
                (got == Some(json!(reason)), got.unwrap_or(Value::Null))
            }
            Fact::TotalAtLeastMs(ms) => {
                let got = r.pointer("/timing_ms/total").and_then(Value::as_u64);
                (got.is_some_and(|t| t >= *ms), json!(got))
            }
            Fact::TlsDaysLeft(lo, hi) => {
                let got = r["tls_days_left"].as_i64();
                (got.is_some_and(|d| (*lo..=*hi).contains(&d)), json!(got))
            }
            Fact::Ip(ip) => (r["ip"] == json!(ip), r["ip"].clone()),
            Fact::DetailContains(s) => (
                r["detail"].as_str().is_some_and(|d| d.contains(s)),
                r["detail"].clone(),
            ),
        };
        if ok {
            Ok(())
        } else {
            Err(format!("{self:?}, found {found}"))
        }
    }
}

/// One site of the farm.
#[derive(Debug, Clone)]
pub struct Target {
    /// Also the job id and the first label of its host name.
    pub name: &'static str,
    /// Where picket starts.
    pub url: String,
    /// The job's `expect` object, if any.
    pub expect: Option<Value>,
    /// What is really going on.
    pub truth: Truth,
    /// What picket says today (per `src/probe/judge.rs` and `src/http.rs`).
    pub picket: Said,
    /// More that must hold of picket's result.
    pub facts: Vec<Fact>,
}

impl Target {
    /// The job line for `picket check --file`.
    pub fn job(&self) -> Value {
        let mut job = json!({"id": self.name, "url": self.url});
        if let Some(expect) = &self.expect {
            job["expect"] = expect.clone();
        }
        job
    }

    /// Picket's expected answer is not the truth: an accuracy bug, tested (ignored)
    /// against the truth on its own.
    pub fn is_known_bug(&self) -> bool {
        !self.truth.holds(self.picket.verdict, self.picket.reason)
    }
}

/// The running farm. Servers run on the runtime that started it.
pub struct Farm {
    pub targets: Vec<Target>,
    /// `dns.static` entries: host name to one or more addresses ("a, b").
    pub static_hosts: Vec<(String, String)>,
    /// The NXDOMAIN-only DNS server, for `dns.nameservers`.
    pub nameserver: SocketAddr,
    /// The test CA's certificate (PEM), for `tls.extra_ca_file`.
    pub ca_file: PathBuf,
    /// Scratch directory (CA file, and room for the test's config and jobs).
    pub dir: tempfile::TempDir,
    /// Bound, never listening: connections to these are refused.
    _refusing: Vec<TcpSocket>,
    /// Helper servers in processes of their own; each stops when this process goes.
    _helpers: Vec<std::process::Child>,
}

impl Farm {
    /// The target called `name`.
    pub fn target(&self, name: &str) -> &Target {
        self.targets
            .iter()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no farm target {name:?}"))
    }

    /// A configuration for `picket check` against the farm: private addresses allowed,
    /// the farm's names in `dns.static`, its DNS server, its CA, short timeouts, and
    /// per-IP limits out of the way.
    pub fn config_toml(&self) -> String {
        let mut s = format!(
            r#"[probe]
timeout = "5s"
connect_timeout = "2s"
retry_delay = "200ms"
attempts = 2

[rate_limit.per_ip]
rate = 1000.0
burst = 1000
max_inflight = 100

[targets]
allow_private = true

[tls]
extra_ca_file = "{ca}"

[log]
level = "warn"

[dns]
nameservers = ["{ns}"]
timeout = "2s"

[dns.static]
"#,
            ca = self.ca_file.display(),
            ns = self.nameserver,
        );
        for (host, ips) in &self.static_hosts {
            s.push_str(&format!("\"{host}\" = \"{ips}\"\n"));
        }
        s
    }

    /// Job lines (JSON, one a line) for the named targets, in that order.
    pub fn jobs(&self, names: &[&str]) -> String {
        names
            .iter()
            .map(|n| format!("{}\n", self.target(n).job()))
            .collect()
    }

    /// Starts every target (about a second, mostly key generation).
    pub async fn start() -> Farm {
        let dir = tempfile::Builder::new()
            .prefix("picket-test-farm-")
            .tempdir()
            .expect("farm scratch directory");
        let pki = Pki::new();
        let ca_file = dir.path().join("farm-ca.pem");
        std::fs::write(&ca_file, pki.ca.pem()).expect("write the farm CA file");

        let mut b = Builder {
            next_ip: 1,
            targets: Vec::new(),
            static_hosts: Vec::new(),
            refusing: Vec::new(),
            helpers: Vec::new(),
        };
        plain_http(&mut b).await;
        charsets(&mut b).await;
        failures(&mut b).await;
        redirects(&mut b).await;
        bodies(&mut b).await;
        tls(&mut b, &pki).await;
        legacy_tls(&mut b, &pki, dir.path()).await;
        dual_stack(&mut b).await;
        second_address(&mut b).await;

        let ns_ip = b.ip();
        // Every name is unknown to it: NXDOMAIN.
        let (nameserver, _) =
            super::dns::serve(&ns_ip, super::dns::Mode::Answer(Default::default())).await;
        b.targets.push(Target {
            name: "nxdomain",
            url: format!("http://nxdomain.{DOMAIN}/"),
            expect: None,
            truth: truth(
                "down",
                Some("dns"),
                "the name does not exist: the browser says DNS_PROBE_FINISHED_NXDOMAIN",
            ),
            picket: said("down", "dns"),
            facts: vec![Fact::Attempts(2)],
        });

        Farm {
            targets: b.targets,
            static_hosts: b.static_hosts,
            nameserver,
            ca_file,
            dir,
            _refusing: b.refusing,
            _helpers: b.helpers,
        }
    }
}

struct Builder {
    next_ip: u16,
    targets: Vec<Target>,
    static_hosts: Vec<(String, String)>,
    refusing: Vec<TcpSocket>,
    helpers: Vec<std::process::Child>,
}

impl Builder {
    /// The next free farm address, 127.0.2.1 to 127.0.2.254.
    fn ip(&mut self) -> String {
        assert!(
            self.next_ip <= 254,
            "the farm ran out of 127.0.2.x addresses"
        );
        let ip = format!("127.0.2.{}", self.next_ip);
        self.next_ip += 1;
        ip
    }

    /// `NAME.farm.test`, resolved to `ips` through dns.static.
    fn host(&mut self, name: &str, ips: &str) -> String {
        let host = format!("{name}.{DOMAIN}");
        self.static_hosts.push((host.clone(), ips.to_string()));
        host
    }

    /// Registers a target served at `addr` under its own host name, path `path`.
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        name: &'static str,
        scheme: &str,
        addr: SocketAddr,
        path: &str,
        expect: Option<Value>,
        truth: Truth,
        picket: Said,
        facts: Vec<Fact>,
    ) {
        let host = self.host(name, &addr.ip().to_string());
        self.targets.push(Target {
            name,
            url: format!("{scheme}://{host}:{}{path}", addr.port()),
            expect,
            truth,
            picket,
            facts,
        });
    }

    /// Serves `router` on a fresh address and registers it as target `name` (path "/").
    async fn http(
        &mut self,
        name: &'static str,
        router: Router,
        expect: Option<Value>,
        truth: Truth,
        picket: Said,
        facts: Vec<Fact>,
    ) {
        let ip = self.ip();
        let addr = serve(&ip, router).await;
        self.add(name, "http", addr, "/", expect, truth, picket, facts);
    }

    /// As [`Builder::http`] for a raw TCP handler.
    async fn raw<F, Fut>(
        &mut self,
        name: &'static str,
        handler: F,
        truth: Truth,
        picket: Said,
        facts: Vec<Fact>,
    ) where
        F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let ip = self.ip();
        let addr = serve_raw(&ip, handler).await;
        self.add(name, "http", addr, "/", None, truth, picket, facts);
    }

    /// A socket bound on a fresh address but never listening: connections are refused.
    fn refusing(&mut self) -> SocketAddr {
        self.refusing_on(0)
    }

    /// Like [`refusing`](Self::refusing), on `port` (0: any).
    fn refusing_on(&mut self, port: u16) -> SocketAddr {
        let ip: IpAddr = self.ip().parse().expect("farm ip");
        let socket = TcpSocket::new_v4().expect("socket");
        socket
            .bind(SocketAddr::new(ip, port))
            .expect("bind a refusing socket");
        let addr = socket.local_addr().expect("local address");
        self.refusing.push(socket);
        addr
    }
}

// ---------------------------------------------------------------------------
// Pages and raw responses

/// An ordinary English page, well over `min_body_bytes`.
fn page(title: &str, body: &str) -> String {
    format!(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>{title}</title></head>\
         <body><h1>{title}</h1><p>{body}</p><p>Opening hours, services and contact \
         details of the county office are listed below.</p></body></html>"
    )
}

const HTML_UTF8: &str = "text/html; charset=utf-8";

fn html(status: StatusCode, body: impl Into<Bytes>) -> Response {
    (status, [(header::CONTENT_TYPE, HTML_UTF8)], body.into()).into_response()
}

/// A whole HTTP/1.1 response, `Content-Length` set.
fn raw_response(status: &str, headers: &[(&str, &str)], body: &[u8]) -> Vec<u8> {
    let mut r = format!("HTTP/1.1 {status}\r\n");
    for (k, v) in headers {
        r.push_str(&format!("{k}: {v}\r\n"));
    }
    r.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
    let mut r = r.into_bytes();
    r.extend_from_slice(body);
    r
}

/// The path of a request head ("/" when unreadable).
fn request_path(head: &[u8]) -> String {
    String::from_utf8_lossy(head)
        .lines()
        .next()
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("/")
        .to_string()
}

// ---------------------------------------------------------------------------
// Plain HTTP sites: healthy, slow, picky, empty, tiny, block pages, statuses

async fn plain_http(b: &mut Builder) {
    let healthy = page("County office", "Welcome.");
    b.http(
        "healthy",
        Router::new().route(
            "/",
            any(move || async move { html(StatusCode::OK, healthy) }),
        ),
        None,
        truth("up", Some("ok"), "an ordinary page"),
        said("up", "ok"),
        vec![Fact::Attempts(1), Fact::Redirects(0)],
    )
    .await;

    let slow = page("County office", "This one thinks for a while.");
    b.http(
        "slow-first-byte",
        Router::new().route(
            "/",
            any(move || async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                html(StatusCode::OK, slow)
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "the page comes after 1.5 s, well within any patience (timeout 5 s)",
        ),
        said("up", "ok"),
        vec![Fact::TotalAtLeastMs(1500), Fact::Attempts(1)],
    )
    .await;

    let p = page("County office", "GET works; HEAD does not.");
    b.http(
        "head-405",
        Router::new().route(
            "/",
            any(move |method: Method| async move {
                if method == Method::GET {
                    html(StatusCode::OK, p)
                } else {
                    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET")], "").into_response()
                }
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "HEAD answers 405, but browsers GET and the page is fine",
        ),
        said("up", "ok"),
        vec![],
    )
    .await;

    let p = page("County office", "Only for browsers.");
    b.http(
        "browsers-only",
        Router::new().route(
            "/",
            any(move |headers: HeaderMap| async move {
                let get = |h: header::HeaderName| {
                    headers
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let ua = get(header::USER_AGENT);
                let browser = ua.starts_with("Mozilla/5.0")
                    && ["Chrome/", "Firefox/", "Safari/"].iter().any(|b| ua.contains(b))
                    && get(header::ACCEPT).contains("text/html")
                    && !get(header::ACCEPT_LANGUAGE).is_empty();
                if browser {
                    html(StatusCode::OK, p)
                } else {
                    html(
                        StatusCode::FORBIDDEN,
                        "<html><body><h1>403 Forbidden</h1>Robots are not welcome here.</body></html>",
                    )
                }
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "403 to clients without a browser's User-Agent, Accept and Accept-Language; browsers get the page",
        ),
        said("up", "ok"),
        vec![],
    )
    .await;

    b.http(
        "empty-200",
        Router::new().route("/", any(|| async { html(StatusCode::OK, "") })),
        None,
        truth("down", None, "a blank page"),
        said("down", "body_too_small"),
        vec![Fact::BodyBytes(0), Fact::Attempts(2)],
    )
    .await;

    b.http(
        "tiny-200",
        Router::new().route("/", any(|| async { html(StatusCode::OK, "ok") })),
        None,
        truth(
            "down",
            None,
            "a page that says just \"ok\": a stub or a health check, not the site",
        ),
        said("down", "body_too_small"),
        vec![Fact::BodyBytes(2)],
    )
    .await;

    b.http(
        "no-content-204",
        Router::new().route("/", any(|| async { StatusCode::NO_CONTENT })),
        None,
        truth(
            "down",
            None,
            "204 No Content for a page: a browser shows nothing (a job that lists 204 in expect.status accepts it)",
        ),
        said("down", "body_too_small"),
        vec![Fact::BodyBytes(0)],
    )
    .await;

    let cookie_storm = page("Portal", "Welcome.");
    b.http(
        "many-headers",
        Router::new().route(
            "/",
            any(move || async move {
                // 150 header lines (hyper stops at 100 by default); browsers take them.
                let mut headers = HeaderMap::new();
                for i in 0..150 {
                    headers.append(
                        header::SET_COOKIE,
                        format!("tracker{i}=1; Path=/")
                            .parse()
                            .expect("cookie header"),
                    );
                }
                (headers, html(StatusCode::OK, cookie_storm)).into_response()
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "a page sent with 150 header lines (a cookie storm)",
        ),
        said("up", "ok"),
        vec![Fact::Attempts(1)],
    )
    .await;

    let denied = "<html><head><title>Access Denied</title></head><body><h1>Access Denied</h1>\
                  You don't have permission to access \"http://www.example.gov/\" on this server.\
                  <p>Reference #18.5c2e3b17.1732456789.1a2b3c4d</p></body></html>";
    b.http(
        "block-page",
        Router::new().route(
            "/",
            any(move || async move { html(StatusCode::OK, denied) }),
        ),
        Some(json!({"body_not_contains": "Access Denied"})),
        truth(
            "down",
            Some("body_mismatch"),
            "200, but the page is \"Access Denied\" (the job forbids that text)",
        ),
        said("down", "body_mismatch"),
        vec![],
    )
    .await;

    let denied_zh = "<html><head><meta charset=\"utf-8\"><title>访问被拒绝</title></head><body>\
                     <h1>访问被拒绝</h1><p>您的请求已被网站防火墙拦截，如有疑问请联系网站管理员。</p>\
                     </body></html>";
    b.http(
        "block-page-zh",
        Router::new().route(
            "/",
            any(move || async move { html(StatusCode::OK, denied_zh) }),
        ),
        Some(json!({"body_not_contains": "访问被拒绝"})),
        truth(
            "down",
            Some("body_mismatch"),
            "200, but the page is \"访问被拒绝\" (the job forbids that text)",
        ),
        said("down", "body_mismatch"),
        vec![Fact::Charset("UTF-8")],
    )
    .await;

    b.http(
        "block-page-no-expect",
        Router::new().route(
            "/",
            any(move || async move { html(StatusCode::OK, denied) }),
        ),
        None,
        truth(
            "not up",
            None,
            "200, but the page is \"Access Denied\"; the job sets no expectation",
        ),
        said("degraded", "body_mismatch"),
        vec![],
    )
    .await;

    let challenge = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>\
                     <div>Checking your browser before accessing the site.</div>\
                     <script src=\"/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1\"></script>\
                     </body></html>";
    b.http(
        "bot-challenge",
        Router::new().route(
            "/",
            any(move || async move { html(StatusCode::FORBIDDEN, challenge) }),
        ),
        None,
        truth(
            "unknown",
            Some("blocked"),
            "403 JavaScript challenge: people pass it and see the site, a probe cannot tell",
        ),
        said("unknown", "blocked"),
        vec![],
    )
    .await;

    b.http(
        "status-503",
        Router::new().route(
            "/",
            any(|| async {
                html(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "<html><head><title>503 Service Unavailable</title></head><body><h1>Service \
                     Unavailable</h1>The server is temporarily unable to service your request \
                     due to maintenance downtime.</body></html>",
                )
            }),
        ),
        None,
        truth("down", Some("http_status"), "503 Service Unavailable"),
        said("down", "http_status"),
        vec![Fact::Attempts(2)],
    )
    .await;

    b.http(
        "status-429",
        Router::new().route(
            "/",
            any(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::CONTENT_TYPE, HTML_UTF8), (header::RETRY_AFTER, "120")],
                    "<html><body><h1>Too Many Requests</h1>Slow down and retry in two minutes.</body></html>",
                )
                    .into_response()
            }),
        ),
        None,
        truth(
            "unknown",
            Some("blocked"),
            "429 with Retry-After: the site works, it is throttling us",
        ),
        said("unknown", "blocked"),
        vec![Fact::DetailContains("Retry-After 120")],
    )
    .await;
}

// ---------------------------------------------------------------------------
// Charsets: GBK, GB18030 and Big5 pages, declared in the header, only in a <meta>,
// by a UTF-8 byte-order mark, or not at all

struct CharsetCase {
    name_yes: &'static str,
    name_no: &'static str,
    encoding: &'static encoding_rs::Encoding,
    /// `Content-Type` sent.
    content_type: &'static str,
    /// Put in the <head>.
    meta: &'static str,
    traditional: bool,
    bom: bool,
    /// http.charset picket reports.
    reported: &'static str,
    /// Truth and expectation with the keyword present.
    yes: (Truth, Said),
}

fn charset_page(case: &CharsetCase, with_keyword: bool) -> Vec<u8> {
    let (title, main) = match (case.traditional, with_keyword) {
        (false, true) => (
            "县政府门户网站",
            "<h1>欢迎访问县政府门户网站</h1><p>办事指南、政务公开、便民服务、互动交流。</p>",
        ),
        (false, false) => (
            "县政府门户网站",
            "<h1>系统升级维护中</h1><p>本站正在进行系统升级，请稍后再试。给您带来不便，敬请谅解。</p>",
        ),
        (true, true) => (
            "縣政府入口網站",
            "<h1>歡迎光臨縣政府入口網站</h1><p>便民服務、政府資訊公開、線上申辦。</p>",
        ),
        (true, false) => (
            "縣政府入口網站",
            "<h1>系統維護中</h1><p>本網站正在進行系統升級，請稍後再試。造成不便，敬請見諒。</p>",
        ),
    };
    // GB18030 pages carry a character outside GBK and the BMP (four bytes in GB18030).
    let extra = if case.encoding == encoding_rs::GB18030 {
        "<p>吉祥如意 𠮷</p>"
    } else {
        ""
    };
    let text = format!(
        "<!DOCTYPE html><html><head>{}<title>{title}</title></head><body>{main}{extra}</body></html>",
        case.meta
    );
    let mut bytes = Vec::new();
    if case.bom {
        bytes.extend_from_slice(&[0xEF, 0xBB, 0xBF]);
    }
    let (encoded, _, unmappable) = case.encoding.encode(&text);
    assert!(!unmappable, "{}: page not encodable", case.name_yes);
    bytes.extend_from_slice(&encoded);
    bytes
}

async fn charsets(b: &mut Builder) {
    use encoding_rs::{BIG5, GB18030, GBK, UTF_8};
    let ok = |says| (truth("up", Some("ok"), says), said("up", "ok"));
    let cases = [
        CharsetCase {
            name_yes: "gbk-header",
            name_no: "gbk-header-no-keyword",
            encoding: GBK,
            content_type: "text/html; charset=GBK",
            meta: "",
            traditional: false,
            bom: false,
            reported: "gb18030",
            yes: ok("GBK page, charset in Content-Type, shows 欢迎"),
        },
        CharsetCase {
            name_yes: "gbk-meta",
            name_no: "gbk-meta-no-keyword",
            encoding: GBK,
            content_type: "text/html",
            meta: "<meta charset=\"gb2312\">",
            traditional: false,
            bom: false,
            reported: "gb18030",
            yes: ok("GBK page, charset only in <meta charset=gb2312>, shows 欢迎"),
        },
        CharsetCase {
            name_yes: "gb18030-header",
            name_no: "gb18030-header-no-keyword",
            encoding: GB18030,
            content_type: "text/html; charset=GB18030",
            meta: "",
            traditional: false,
            bom: false,
            reported: "gb18030",
            yes: ok(
                "GB18030 page (with a four-byte character), charset in Content-Type, shows 欢迎",
            ),
        },
        CharsetCase {
            name_yes: "gb18030-meta",
            name_no: "gb18030-meta-no-keyword",
            encoding: GB18030,
            content_type: "text/html",
            meta: "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=gb18030\">",
            traditional: false,
            bom: false,
            reported: "gb18030",
            yes: ok("GB18030 page, charset only in <meta http-equiv>, shows 欢迎"),
        },
        CharsetCase {
            name_yes: "big5-header",
            name_no: "big5-header-no-keyword",
            encoding: BIG5,
            content_type: "text/html; charset=big5",
            meta: "",
            traditional: true,
            bom: false,
            reported: "Big5",
            yes: ok("Big5 page, charset in Content-Type, shows 歡迎"),
        },
        CharsetCase {
            name_yes: "big5-meta",
            name_no: "big5-meta-no-keyword",
            encoding: BIG5,
            content_type: "text/html",
            meta: "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=big5\">",
            traditional: true,
            bom: false,
            reported: "Big5",
            yes: ok("Big5 page, charset only in <meta http-equiv>, shows 歡迎"),
        },
        CharsetCase {
            name_yes: "utf8-bom",
            name_no: "utf8-bom-no-keyword",
            encoding: UTF_8,
            // The header lies; the byte-order mark wins, in browsers as in the spec.
            content_type: "text/html; charset=GBK",
            meta: "",
            traditional: false,
            bom: true,
            reported: "UTF-8",
            yes: ok("UTF-8 page with a byte-order mark, header wrongly says GBK; shows 欢迎"),
        },
        CharsetCase {
            name_yes: "gbk-undeclared",
            name_no: "gbk-undeclared-no-keyword",
            encoding: GBK,
            content_type: "text/html",
            meta: "",
            traditional: false,
            bom: false,
            reported: "gb18030",
            // Browsers guess GBK from the bytes (Chrome's detector, Firefox's chardetng)
            // and show 欢迎; so does picket (chardetng when nothing declares a charset).
            yes: (
                truth(
                    "up",
                    Some("ok"),
                    "GBK page with no charset anywhere: browsers detect GBK and show 欢迎",
                ),
                said("up", "ok"),
            ),
        },
    ];
    for case in cases {
        let keyword = if case.traditional { "歡迎" } else { "欢迎" };
        for with_keyword in [true, false] {
            let body = Bytes::from(charset_page(&case, with_keyword));
            let ct = case.content_type;
            let router = Router::new().route(
                "/",
                any(move || async move { ([(header::CONTENT_TYPE, ct)], body).into_response() }),
            );
            let (name, truth_, said_) = if with_keyword {
                (case.name_yes, case.yes.0, case.yes.1)
            } else {
                (
                    case.name_no,
                    truth(
                        "down",
                        Some("body_mismatch"),
                        if case.traditional {
                            "the same site's maintenance page: no 歡迎"
                        } else {
                            "the same site's maintenance page: no 欢迎"
                        },
                    ),
                    said("down", "body_mismatch"),
                )
            };
            b.http(
                name,
                router,
                Some(json!({"body_contains": keyword})),
                truth_,
                said_,
                vec![Fact::Charset(case.reported)],
            )
            .await;
        }
    }
}

// ---------------------------------------------------------------------------
// Failures below HTTP: refused, silent, trickling, empty reply, first connection reset,
// idle keep-alive connections closed early

async fn failures(b: &mut Builder) {
    let addr = b.refusing();
    b.add(
        "connection-refused",
        "http",
        addr,
        "/",
        None,
        truth(
            "down",
            Some("connect"),
            "nothing listens on the port: ERR_CONNECTION_REFUSED",
        ),
        said("down", "connect"),
        vec![Fact::Attempts(2)],
    );

    b.raw(
        "never-answers",
        raw::never_answer,
        truth(
            "down",
            Some("timeout"),
            "accepts the connection and never says a word",
        ),
        said("down", "timeout"),
        vec![Fact::Attempts(2)],
    )
    .await;

    let body = page("County office", "Served one byte a second.");
    let response = raw_response("200 OK", &[("Content-Type", HTML_UTF8)], body.as_bytes());
    b.raw(
        "trickle",
        raw::trickle(response, 1, Duration::from_secs(1)),
        truth(
            "down",
            Some("timeout"),
            "one byte a second: the page would take minutes",
        ),
        said("down", "timeout"),
        vec![Fact::Attempts(2)],
    )
    .await;

    b.raw(
        "empty-reply",
        raw::close_without_answer,
        truth(
            "down",
            None,
            "closes the connection without a byte: ERR_EMPTY_RESPONSE",
        ),
        said("down", "connect"),
        vec![Fact::Attempts(2)],
    )
    .await;

    let body = page("County office", "Second time lucky.");
    let ok = Arc::new(raw_response(
        "200 OK",
        &[("Content-Type", HTML_UTF8), ("Connection", "close")],
        body.as_bytes(),
    ));
    let connections = Arc::new(AtomicUsize::new(0));
    b.raw(
        "reset-first-connection",
        move |mut stream: TcpStream| {
            let ok = Arc::clone(&ok);
            let n = connections.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    raw::reset(stream).await;
                } else {
                    let _ = crate::support::targets::read_request_head(&mut stream).await;
                    let _ = stream.write_all(&ok).await;
                    let _ = stream.shutdown().await;
                }
            }
        },
        truth(
            "up",
            Some("ok"),
            "resets the first connection, then answers: a reload works",
        ),
        said("up", "ok"),
        vec![Fact::Attempts(2), Fact::FirstAttemptReason("connect")],
    )
    .await;

    let home = Arc::new(page("County office", "Keep-alive, briefly.").into_bytes());
    b.raw(
        "keepalive-closer",
        move |mut stream: TcpStream| {
            let home = Arc::clone(&home);
            async move {
                loop {
                    let head = crate::support::targets::read_request_head(&mut stream).await;
                    if head.is_empty() {
                        return;
                    }
                    // Promises a minute of keep-alive, closes after 50 ms idle.
                    let keep = [
                        ("Content-Type", HTML_UTF8),
                        ("Connection", "keep-alive"),
                        ("Keep-Alive", "timeout=60, max=100"),
                    ];
                    let response = if request_path(&head) == "/" {
                        let mut h = keep.to_vec();
                        h.push(("Location", "/home"));
                        raw_response("302 Found", &h, b"")
                    } else {
                        raw_response("200 OK", &keep, &home)
                    };
                    if stream.write_all(&response).await.is_err() {
                        return;
                    }
                    let idle =
                        tokio::time::timeout(Duration::from_millis(50), stream.readable()).await;
                    if idle.is_err() {
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
            }
        },
        truth(
            "up",
            Some("ok"),
            "promises keep-alive but closes idle connections after 50 ms; a fresh connection works",
        ),
        said("up", "ok"),
        vec![Fact::Redirects(1)],
    )
    .await;
}

// ---------------------------------------------------------------------------
// Redirects: a chain, a loop, and a cookie check

async fn redirects(b: &mut Builder) {
    fn to(status: StatusCode, location: String) -> Response {
        (status, [(header::LOCATION, location)], "").into_response()
    }
    let last = page("County office", "Three hops later.");
    b.http(
        "redirect-chain",
        Router::new()
            .route(
                "/",
                any(|| async { to(StatusCode::MOVED_PERMANENTLY, "/two".into()) }),
            )
            .route(
                "/two",
                any(|headers: HeaderMap| async move {
                    // An absolute Location this time, built from the Host header.
                    let host = headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    to(StatusCode::FOUND, format!("http://{host}/three"))
                }),
            )
            .route(
                "/three",
                any(|| async { to(StatusCode::TEMPORARY_REDIRECT, "four".into()) }),
            )
            .route(
                "/four",
                any(move || async move { html(StatusCode::OK, last) }),
            ),
        None,
        truth("up", Some("ok"), "301, 302, 307, then the page"),
        said("up", "ok"),
        vec![Fact::Redirects(3), Fact::DetailContains("200 OK")],
    )
    .await;

    b.http(
        "redirect-loop",
        Router::new()
            .route("/", any(|| async { to(StatusCode::FOUND, "/b".into()) }))
            .route("/b", any(|| async { to(StatusCode::FOUND, "/".into()) })),
        None,
        truth(
            "down",
            Some("too_many_redirects"),
            "/ → /b → /: ERR_TOO_MANY_REDIRECTS",
        ),
        said("down", "too_many_redirects"),
        vec![],
    )
    .await;

    let p = page("County office", "Cookies are on.");
    b.http(
        "cookie-redirect",
        Router::new().route(
            "/",
            any(move |headers: HeaderMap| async move {
                let has_cookie = headers
                    .get_all(header::COOKIE)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(|v| v.contains("visited=1"));
                if has_cookie {
                    html(StatusCode::OK, p)
                } else {
                    (
                        StatusCode::FOUND,
                        [
                            (header::LOCATION, "/"),
                            (header::SET_COOKIE, "visited=1; Path=/"),
                        ],
                        "",
                    )
                        .into_response()
                }
            }),
        ),
        None,
        // Browsers keep the cookie and get the page on the second request; picket keeps
        // no cookies and sees the same URL again.
        truth(
            "up",
            Some("ok"),
            "sets a cookie and redirects to itself; with the cookie, the page (a common load-balancer check)",
        ),
        said("up", "ok"),
        vec![],
    )
    .await;
}

// ---------------------------------------------------------------------------
// Bodies: compressed (gzip, deflate, br, raw deflate), and far too large

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}

fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("deflate");
    e.finish().expect("deflate")
}

fn br(data: &[u8]) -> Vec<u8> {
    let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    w.write_all(data).expect("brotli");
    w.into_inner()
}

async fn bodies(b: &mut Builder) {
    let text = page(
        "County office",
        "欢迎光临 — this page travels compressed. The county office publishes its opening hours.",
    );
    struct Encoded {
        name: &'static str,
        encoding: &'static str,
        compress: fn(&[u8]) -> Vec<u8>,
        truth: Truth,
        said: Said,
    }
    let up = |says| truth("up", Some("ok"), says);
    let cases = [
        Encoded {
            name: "gzip",
            encoding: "gzip",
            compress: gzip,
            truth: up("gzip-encoded page containing 欢迎光临"),
            said: said("up", "ok"),
        },
        Encoded {
            name: "deflate",
            encoding: "deflate",
            compress: zlib,
            truth: up("deflate-encoded (zlib-wrapped, as RFC 9110 says) page containing 欢迎光临"),
            said: said("up", "ok"),
        },
        Encoded {
            name: "brotli",
            encoding: "br",
            compress: br,
            truth: up("br-encoded page containing 欢迎光临"),
            said: said("up", "ok"),
        },
        // Old IIS and some embedded servers send raw deflate; Chrome and Firefox accept
        // it. reqwest's deflate decoder (tower-http's ZlibDecoder) only takes the zlib
        // wrapper.
        Encoded {
            name: "deflate-raw",
            encoding: "deflate",
            compress: raw_deflate,
            truth: up(
                "\"deflate\" sent as a raw deflate stream without the zlib wrapper; browsers decode it",
            ),
            said: said("up", "ok"),
        },
    ];
    for Encoded {
        name,
        encoding,
        compress,
        truth: truth_,
        said: said_,
    } in cases
    {
        let body = Bytes::from(compress(text.as_bytes()));
        let router = Router::new().route(
            "/",
            any(move || async move {
                (
                    [
                        (header::CONTENT_TYPE, HTML_UTF8),
                        (header::CONTENT_ENCODING, encoding),
                    ],
                    body,
                )
                    .into_response()
            }),
        );
        b.http(
            name,
            router,
            Some(json!({"body_contains": "欢迎光临"})),
            truth_,
            said_,
            vec![Fact::Charset("UTF-8")],
        )
        .await;
    }

    // 5 MB of page; picket reads 2 MB (probe.max_body_bytes) and stops.
    let mut huge = String::from("<!doctype html><html><head><title>Archive</title></head><body>");
    let line = "<p>Minutes of the county council meeting, item by item, with all annexes.</p>\n";
    while huge.len() < 5 * 1024 * 1024 {
        huge.push_str(line);
    }
    huge.push_str("</body></html>");
    let huge = Bytes::from(huge);
    b.http(
        "huge-body",
        Router::new().route("/", any(move || async move { html(StatusCode::OK, huge) })),
        None,
        truth("up", Some("ok"), "a 5 MB page; the first 2 MB are plenty"),
        said("up", "ok"),
        vec![Fact::Truncated(true), Fact::BodyBytes(2 * 1024 * 1024)],
    )
    .await;
}

// ---------------------------------------------------------------------------
// TLS: a test CA, leaf certificates good and bad

/// A test CA with an intermediate, made with rcgen (also used by `tests/holes.rs`).
pub struct Pki {
    pub ca: Certificate,
    ca_key: KeyPair,
    intermediate: Certificate,
    intermediate_key: KeyPair,
}

/// Sets a certificate's validity to [now + from_days, now + to_days].
fn validity(p: &mut CertificateParams, from_days: i64, to_days: i64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    let at = |days: i64| epoch + Duration::from_secs((now + days * 86_400) as u64);
    p.not_before = at(from_days);
    p.not_after = at(to_days);
}

fn ca_params(name: &str) -> CertificateParams {
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

fn leaf_params(name: &str, from_days: i64, to_days: i64) -> CertificateParams {
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
        let intermediate_key = KeyPair::generate().expect("intermediate key");
        let mut ip = ca_params("picket farm intermediate CA");
        ip.use_authority_key_identifier_extension = true;
        let intermediate = ip
            .signed_by(&intermediate_key, &ca, &ca_key)
            .expect("intermediate certificate");
        Pki {
            ca,
            ca_key,
            intermediate,
            intermediate_key,
        }
    }
}

pub enum Signer {
    SelfSigned,
    Ca,
    Intermediate { send_intermediate: bool },
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

/// Serves a fixed page over TLS with `config` on a fresh address.
async fn serve_tls(ip: &str, config: Arc<rustls::ServerConfig>, body: &str) -> SocketAddr {
    let response = Arc::new(raw_response(
        "200 OK",
        &[("Content-Type", HTML_UTF8), ("Connection", "close")],
        body.as_bytes(),
    ));
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    serve_raw(ip, move |stream: TcpStream| {
        let acceptor = acceptor.clone();
        let response = Arc::clone(&response);
        async move {
            // A client that rejects the certificate ends the handshake here.
            let Ok(mut tls) = acceptor.accept(stream).await else {
                return;
            };
            let _ = crate::support::targets::read_request_head(&mut tls).await;
            let _ = tls.write_all(&response).await;
            let _ = tls.shutdown().await;
        }
    })
    .await
}

/// Serves `router` over TLS that offers HTTP/2 only (ALPN `h2`), as many sites' front
/// ends prefer: a client that cannot speak HTTP/2 gets nothing from it.
async fn serve_h2(ip: &str, mut config: rustls::ServerConfig, router: Router) -> SocketAddr {
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    serve_raw(ip, move |stream: TcpStream| {
        let acceptor = acceptor.clone();
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let _ =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .http2_only()
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                    .await;
        }
    })
    .await
}

/// One TLS target: its certificate's name, validity (days from now) and signer.
struct TlsCase {
    name: &'static str,
    cert: &'static str,
    from: i64,
    to: i64,
    signer: Signer,
    truth: Truth,
    said: Said,
    facts: Vec<Fact>,
}

async fn tls(b: &mut Builder, pki: &Pki) {
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

    // Most sites' TLS front ends negotiate HTTP/2; this one speaks nothing else.
    let name = "tls-h2-only";
    let config = server_config(pki, &format!("{name}.{DOMAIN}"), -1, 90, Signer::Ca);
    let page_h2 = page("County office", "Served over HTTP/2.");
    let router = Router::new().route(
        "/",
        any(move || async move { html(StatusCode::OK, page_h2) }),
    );
    let ip = b.ip();
    let addr = serve_h2(&ip, (*config).clone(), router).await;
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
}

// ---------------------------------------------------------------------------
// Legacy TLS: a server that speaks only a CBC cipher suite

/// `openssl s_server` with TLS 1.2 and ECDHE-RSA-AES128-SHA only: an old but still
/// common setup that Chrome still negotiates and rustls never will.
async fn legacy_tls(b: &mut Builder, pki: &Pki, dir: &std::path::Path) {
    let name = "tls-legacy-cbc";
    let openssl = super::procs::find_binary("openssl", &[]).unwrap_or_else(|| {
        panic!(
            "openssl not found (the farm's legacy TLS server): {}",
            super::procs::INSTALL_HINT
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

// ---------------------------------------------------------------------------
// Dual stack: the IPv4 address refuses, the IPv6 one answers

async fn dual_stack(b: &mut Builder) {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("farm: no IPv6 loopback here; target dual-stack left out");
        return;
    }
    refused_then_answered(
        b,
        "dual-stack",
        "::1",
        "Reachable over IPv6.",
        "IPv4 address refuses, IPv6 address answers: browsers fall back (Happy Eyeballs)",
    )
    .await;
}

/// Two IPv4 addresses for one name, the first refusing: a load-balanced site with one
/// backend down. Browsers try the next address on a failed connect.
async fn second_address(b: &mut Builder) {
    let live = b.ip();
    refused_then_answered(
        b,
        "second-address",
        &live,
        "Served by the second address.",
        "two A records, the first refuses (one backend down): browsers try the next address",
    )
    .await;
}

/// Target `name` whose host name resolves to a farm IPv4 address that refuses, then to
/// `live`, which serves the page on the same port: up/ok, from `live`, and the detail
/// says which address failed.
async fn refused_then_answered(
    b: &mut Builder,
    name: &'static str,
    live: &str,
    text: &'static str,
    truth_words: &'static str,
) {
    let p = page("County office", text);
    let served = serve(
        live,
        Router::new().route("/", any(move || async move { html(StatusCode::OK, p) })),
    )
    .await;
    let dead = b.refusing_on(served.port()).ip();
    let host = b.host(name, &format!("{dead}, {live}"));
    b.targets.push(Target {
        name,
        url: format!("http://{host}:{}/", served.port()),
        expect: None,
        truth: truth("up", Some("ok"), truth_words),
        picket: said("up", "ok"),
        facts: vec![
            Fact::Ip(live.to_string()),
            Fact::DetailContains("answered instead"),
            Fact::Attempts(1),
        ],
    });
}

// ---------------------------------------------------------------------------
// A DNS server that knows no name
