//! A hostile target farm: our own web servers on 127.0.2.x ([`net`]), each behaving like a
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

use crate::support::targets::{raw, serve, serve_raw};

mod below_http;
mod bodies;
mod charsets;
mod dual_stack;
mod pages;
mod plain;
mod redirects;
mod tls;

use below_http::*;
use bodies::*;
use charsets::*;
use dual_stack::*;
use pages::*;
use plain::*;
use redirects::*;
use tls::*;
pub use tls::{serve_tls, serve_tls_at, server_config, Pki, Signer};

/// The /24 the farm's targets bind in: `127.0.2`, or `PICKET_TEST_FARM_NET` (three
/// octets of 127.0.0.0/8), so that two runs on one machine keep out of each other's way.
pub fn net() -> String {
    match std::env::var("PICKET_TEST_FARM_NET") {
        Ok(net) => {
            let octets: Vec<&str> = net.split('.').collect();
            assert!(
                octets.len() == 3
                    && octets[0] == "127"
                    && octets.iter().all(|o| o.parse::<u8>().is_ok()),
                "PICKET_TEST_FARM_NET must be three octets in 127.0.0.0/8, like 127.0.65: {net:?}"
            );
            net
        }
        Err(_) => "127.0.2".to_string(),
    }
}

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
    /// The port of the farm's CA server (at [`Farm::ca_ip`]): farms started at once
    /// share their addresses, not their ports.
    pub ca_port: u16,
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

    /// The address of the farm's CA server (`ca.farm.test`), which serves the
    /// intermediates the `tls-incomplete-chain-aia*` leaves name.
    pub fn ca_ip(&self) -> String {
        self.static_hosts
            .iter()
            .find(|(host, _)| host.starts_with("ca."))
            .map(|(_, ip)| ip.clone())
            .expect("the CA's host")
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
            ca_port: 0,
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
        incomplete_chains_with_aia(&mut b, &pki, dir.path()).await;
        legacy_tls(&mut b, &pki, dir.path()).await;
        dual_stack(&mut b).await;
        second_address(&mut b).await;
        blank_pages(&mut b).await;
        challenge_walls(&mut b).await;
        hidden_phrases(&mut b).await;

        let ns_ip = b.ip();
        // Every name is unknown to it: NXDOMAIN.
        let (nameserver, _) = crate::support::dns::serve(
            &ns_ip,
            crate::support::dns::Mode::Answer(Default::default()),
        )
        .await;
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
            ca_port: b.ca_port,
            _refusing: b.refusing,
            _helpers: b.helpers,
        }
    }
}

struct Builder {
    next_ip: u16,
    /// The CA server's port, once it serves.
    ca_port: u16,
    targets: Vec<Target>,
    static_hosts: Vec<(String, String)>,
    refusing: Vec<TcpSocket>,
    helpers: Vec<std::process::Child>,
}

impl Builder {
    /// The next free farm address, `NET.1` to `NET.254` ([`net`]).
    fn ip(&mut self) -> String {
        let net = net();
        assert!(self.next_ip <= 254, "the farm ran out of {net}.x addresses");
        let ip = format!("{net}.{}", self.next_ip);
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

    /// As [`Builder::http`] for a site whose every path answers 200 with `body`, HTML.
    async fn static_page(
        &mut self,
        name: &'static str,
        body: &'static str,
        truth: Truth,
        picket: Said,
    ) {
        let router =
            Router::new().route("/", any(move || async move { html(StatusCode::OK, body) }));
        self.http(name, router, None, truth, picket, vec![]).await;
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
