//! Through an HTTP proxy (a real squid), the request goes to the address picket
//! resolved, checked against the address policy and counted, never to one the proxy
//! looks up itself: squid is asked for `127.0.x.y:port`, and the site still sees its
//! own name (TLS SNI and certificate, `Host`), so name-based virtual hosts answer.
//!
//! squid's own lookups are answered from a hosts file that sends the test names
//! elsewhere (or to a site the policy refuses), so a request that squid routed by name
//! would go wrong in a way the test sees.

use picket::job::Verdict;

use crate::support::free_port;
use crate::support::picket::{check, engine_from_toml};
use crate::support::real::apache::Apache;
use crate::support::real::haproxy::Haproxy;
use crate::support::real::nginx::Nginx;
use crate::support::real::squid::Squid;
use crate::support::real::{now_us, page, scratch, settled_hits, write, Daemon, Hits};

/// The name every test site is asked by.
pub(crate) const NAME: &str = "site.pin.test";

/// nginx with name-based virtual hosts on one address: [`NAME`] on a plain and a TLS
/// port (HTTP/2), and a default server on each that answers `421 Misdirected Request`
/// with a certificate for another name, so a request without the right `Host` or SNI
/// is no success. Pages are sent gzipped.
pub(crate) struct Vhosts {
    daemon: Daemon,
    pub(crate) http: u16,
    pub(crate) https: u16,
    /// The test CA (PEM file), for `tls.extra_ca_file`.
    pub(crate) ca_file: String,
    /// A certificate and its key for [`PROXY`], in one PEM file (as haproxy takes them).
    proxy_pem: String,
}

/// The name an `https://` proxy is asked by.
const PROXY: &str = "proxy.pin.test";

impl Vhosts {
    pub(crate) fn start(ip: &str, names: &[&str]) -> Vhosts {
        Vhosts::start_at(ip, names, free_port(), free_port())
    }

    /// The same sites on given ports (another address may use the same ones).
    fn start_at(ip: &str, names: &[&str], http: u16, https: u16) -> Vhosts {
        let dir = scratch("nginx-vhosts");
        let d = dir.display().to_string();
        let ca_key = rcgen::KeyPair::generate().expect("CA key");
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "picket proxy-pin test CA");
        let ca = ca_params.self_signed(&ca_key).expect("CA certificate");
        let leaf = |file: &str, names: Vec<String>| {
            let key = rcgen::KeyPair::generate().expect("key");
            let cert = rcgen::CertificateParams::new(names)
                .expect("leaf")
                .signed_by(&key, &ca, &ca_key)
                .expect("leaf certificate");
            write(&dir, &format!("{file}.pem"), &cert.pem());
            write(&dir, &format!("{file}.key"), &key.serialize_pem());
        };
        leaf("site", names.iter().map(|n| n.to_string()).collect());
        leaf("decoy", vec!["decoy.pin.test".into()]);
        leaf("proxy", vec![PROXY.into()]);
        let proxy_pem = [dir.join("proxy.pem"), dir.join("proxy.key")]
            .iter()
            .map(|f| std::fs::read_to_string(f).expect("proxy certificate"))
            .collect::<String>();
        let proxy_pem = write(&dir, "proxy-both.pem", &proxy_pem)
            .display()
            .to_string();
        let ca_file = write(&dir, "ca.pem", &ca.pem()).display().to_string();
        write(&dir, "www/index.html", &page(NAME));
        let server_names = names.join(" ");
        let servers = format!(
            r#"  # Every page compressed: picket must decode it on the tunnel's path too.
  gzip on;
  gzip_min_length 1;
  server {{ listen {ip}:{http} default_server; location / {{ return 421; }} }}
  server {{ listen {ip}:{http}; server_name {server_names}; root {d}/www;
    add_header Cache-Control "max-age=3600"; }}
  server {{ listen {ip}:{https} ssl http2 default_server;
    ssl_certificate {d}/decoy.pem; ssl_certificate_key {d}/decoy.key;
    location / {{ return 421; }} }}
  server {{ listen {ip}:{https} ssl http2; server_name {server_names};
    ssl_certificate {d}/site.pem; ssl_certificate_key {d}/site.key; root {d}/www; }}
"#
        );
        let daemon = Nginx::run("nginx", &dir, ip, http, &servers).daemon;
        Vhosts {
            daemon,
            http,
            https,
            ca_file,
            proxy_pem,
        }
    }

    pub(crate) fn hits(&self) -> Hits {
        Hits::parse(&self.daemon.read("access.log"))
    }

    /// The site's page over https and over plain http.
    pub(crate) fn urls(&self) -> [String; 2] {
        [
            format!("https://{NAME}:{}/", self.https),
            format!("http://{NAME}:{}/", self.http),
        ]
    }
}

/// `r` (of `url`) is up, answered from `ip`.
pub(crate) fn assert_up_at(r: &picket::job::Report, ip: &str, url: &str) {
    assert_eq!(
        (r.verdict, r.reason.as_str(), r.ip.as_deref()),
        (Verdict::Up, "ok", Some(ip)),
        "{url}: {}",
        r.detail
    );
}

/// picket through the HTTP proxy at `proxy` alone, `hosts` in `dns.static`.
pub(crate) fn engine(
    proxy: &str,
    ca_file: &str,
    allow_private: bool,
    hosts: &[(&str, &str)],
) -> picket::engine::Engine {
    engine_with(proxy, ca_file, allow_private, hosts, "")
}

/// [`engine`], with more keys (`egress_keys`) in its `[[egress]]`.
pub(crate) fn engine_with(
    proxy: &str,
    ca_file: &str,
    allow_private: bool,
    hosts: &[(&str, &str)],
    egress_keys: &str,
) -> picket::engine::Engine {
    let mut dns = String::from("[dns.static]\n");
    for (name, ip) in hosts {
        dns.push_str(&format!("\"{name}\" = \"{ip}\"\n"));
    }
    engine_from_toml(&format!(
        r#"[probe]
timeout = "5s"
connect_timeout = "3s"
retry_delay = "50ms"
attempts = 1
[rate_limit.per_ip]
rate = 1000.0
burst = 1000
max_inflight = 100
[targets]
allow_private = {allow_private}
[tls]
extra_ca_file = "{ca_file}"
{dns}
[[egress]]
name = "squid"
proxy = "{proxy}"
{egress_keys}
"#
    ))
}

/// The requests in squid's access log: not the line of the readiness check's bare
/// TCP connection (`transaction-end-before-headers`).
fn squid_requests(squid: &Squid) -> String {
    squid
        .daemon
        .read("access.log")
        .lines()
        .filter(|l| !l.contains("transaction-end-before-headers"))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// squid's requests once `lines` are logged, or what is logged after 3 s (squid logs a
/// tunnel when it closes, a moment after picket read the answer).
async fn squid_log(squid: &Squid, lines: usize) -> String {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    loop {
        let log = squid_requests(squid);
        if log.lines().count() >= lines || tokio::time::Instant::now() >= deadline {
            return log;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_is_asked_for_the_counted_address_and_the_site_sees_its_name() {
    let site_ip = "127.0.12.30";
    let site = Vhosts::start(site_ip, &[NAME]);
    // Were squid to look the name up itself, it would go where nothing listens.
    let squid = Squid::with_hosts("127.0.12.32", false, &[(NAME, "127.0.12.31")]);
    let e = engine(&squid.url, &site.ca_file, true, &[(NAME, site_ip)]);
    let since = now_us();
    for url in site.urls() {
        let r = check(&e, &url).await;
        assert_up_at(&r, site_ip, &url);
        // The decoded page, not the gzipped bytes.
        let body = r.http.as_ref().map(|h| h.body_bytes);
        assert_eq!(body, Some(page(NAME).len() as u64), "{url}: {:?}", r.http);
        if url.starts_with("https") {
            assert!(r.tls_days_left.is_some(), "certificate read: {r:?}");
            assert!(r.timing_ms.tls.is_some(), "{:?}", r.timing_ms);
        }
    }
    let log = squid_log(&squid, 2).await;
    eprintln!("squid access log:\n{log}");
    assert!(
        log.contains(&format!("CONNECT {site_ip}:{}", site.https)),
        "https: squid asked for the counted address"
    );
    assert!(
        log.contains(&format!("{site_ip}:{}", site.http)),
        "http: squid asked for the counted address"
    );
    assert!(!log.contains(NAME), "squid never saw the name");
    // The site saw its own name (Host, and SNI: else the decoy server answers 421).
    let hits = settled_hits(|| site.hits(), since, 2).await;
    assert_eq!(hits.all.len(), 2, "{hits:?}");
    assert!(
        hits.all
            .iter()
            .all(|(_, status, host)| *status == 200 && host == NAME),
        "{hits:?}"
    );
    let log = site.daemon.read("access.log");
    assert!(
        log.lines().all(|l| !l.ends_with(" -")),
        "every answer was gzipped (the last field is nginx's $gzip_ratio):\n{log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_the_policy_refuses_is_never_sent_to_squid() {
    let site_ip = "127.0.12.33";
    let site = Vhosts::start(site_ip, &[NAME]);
    let squid = Squid::with_hosts("127.0.12.34", false, &[(NAME, site_ip)]);
    // Private addresses refused: the name resolves to loopback here.
    let e = engine(&squid.url, &site.ca_file, false, &[(NAME, site_ip)]);
    for url in site.urls() {
        let r = check(&e, &url).await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Invalid, "blocked_target"),
            "{url}: {}",
            r.detail
        );
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(squid_requests(&squid), "", "squid was never asked");
    assert!(site.hits().all.is_empty(), "the site was never reached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_resolving_the_name_elsewhere_cannot_send_the_request_there() {
    // DNS rebinding or split horizon: picket's resolver gives one address, the proxy's
    // another, where the same sites listen on the same ports. The request must go to
    // picket's address, the one its policy checked and its limiter counted; before the
    // tunnel, squid went to its own and the page came from the other site. (Both are
    // loopback here, so `allow_private` is on; in production the proxy's address is the
    // private one the policy would have refused.)
    let rebind = "rebind.pin.test";
    let (counted_ip, elsewhere_ip) = ("127.0.12.37", "127.0.12.35");
    let counted = Vhosts::start(counted_ip, &[NAME, rebind]);
    let elsewhere = Vhosts::start_at(elsewhere_ip, &[NAME, rebind], counted.http, counted.https);
    let squid = Squid::with_hosts("127.0.12.36", false, &[(rebind, elsewhere_ip)]);
    let e = engine(&squid.url, &counted.ca_file, true, &[(rebind, counted_ip)]);
    for url in [
        format!("http://{rebind}:{}/", counted.http),
        format!("https://{rebind}:{}/", counted.https),
    ] {
        let r = check(&e, &url).await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Up, "ok"),
            "{url}: {}",
            r.detail
        );
        assert_eq!(r.ip.as_deref(), Some(counted_ip), "{url}");
    }
    let log = squid_log(&squid, 2).await;
    for port in [counted.http, counted.https] {
        assert!(
            log.contains(&format!("{counted_ip}:{port}")),
            "squid asked for {counted_ip}:{port}:\n{log}"
        );
    }
    assert!(!log.contains(rebind), "squid never saw the name:\n{log}");
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert!(
        elsewhere.hits().all.is_empty(),
        "the proxy's own address was reached: {:?}",
        elsewhere.hits()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_squid_refusing_the_tunnel_is_the_egress_failing_never_the_site() {
    let site_ip = "127.0.12.37";
    let site = Vhosts::start(site_ip, &[NAME]);
    // `http_access deny all`: squid answers CONNECT, and a URL asked by name, with its
    // own 403 page.
    let squid = Squid::with_hosts("127.0.12.38", true, &[]);
    let e = engine(&squid.url, &site.ca_file, true, &[(NAME, site_ip)]);
    let only = engine_with(
        &squid.url,
        &site.ca_file,
        true,
        &[(NAME, site_ip)],
        "by_name = \"never\"",
    );
    let [https, http] = site.urls();
    // After the refused tunnel to the address, https asks for a tunnel by name and plain
    // http for the URL by name, unless the egress says `by_name = "never"`.
    for (e, url, refused) in [
        (&e, &https, "the tunnel"),
        (&e, &http, "the request"),
        (&only, &http, "the tunnel"),
    ] {
        let r = check(e, url).await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Unknown, "egress_unavailable"),
            "{url}: {}",
            r.detail
        );
        assert!(r.detail.contains("ERR_ACCESS_DENIED"), "{}", r.detail);
        assert!(
            r.detail.contains(&format!("refused {refused} itself")),
            "{}",
            r.detail
        );
    }
    // Five refusals, and the question for a host that does not exist, asked before the
    // first URL asked by name (to tell a proxy from a web server).
    let log = squid_log(&squid, 6).await;
    let denied = |what: &str| {
        log.lines()
            .filter(|l| l.contains("TCP_DENIED/403") && l.contains(what))
            .count()
    };
    assert_eq!(
        (
            denied(&format!(" CONNECT {site_ip}:")),
            denied(&format!(" CONNECT {NAME}:{} ", site.https)),
            denied(&format!(" GET {http} "))
        ),
        (3, 1, 1),
        "{log}"
    );
    assert!(site.hits().all.is_empty(), "the site was never asked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_egress_urls_credentials_open_the_tunnel() {
    let site_ip = "127.0.12.39";
    let site = Vhosts::start(site_ip, &[NAME]);
    // `openssl passwd -1 -salt picketpn 'p@ss w'`
    let squid = Squid::with_auth(
        "127.0.12.40",
        &[],
        "pinuser:$1$picketpn$h41hRNHMi9EJUdYunK5Bm.\n",
    );
    let authed = squid.url.replace("http://", "http://pinuser:p%40ss%20w@");
    let good = engine(&authed, &site.ca_file, true, &[(NAME, site_ip)]);
    let none = engine(&squid.url, &site.ca_file, true, &[(NAME, site_ip)]);
    for url in site.urls() {
        let r = check(&good, &url).await;
        assert_eq!(r.verdict, Verdict::Up, "{url}: {}", r.detail);
        // Without them squid answers 407 itself: the egress failing, not the site.
        let r = check(&none, &url).await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Unknown, "egress_unavailable"),
            "{url}: {}",
            r.detail
        );
    }
    let log = squid_log(&squid, 4).await;
    eprintln!("squid access log:\n{log}");
    assert_eq!(log.matches(" pinuser ").count(), 2, "{log}");
}

/// An egress whose address is a web server, not a proxy (a typo, a port reused): nginx
/// answers CONNECT with 400, Apache with 405, which were taken for a proxy's rules, so
/// every plain-http URL was asked "by name" and judged on the server's own page (Apache
/// serves `GET http://name/` from its own pages), the site never reached: `up` or
/// `down` as that page went. It is the egress failing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_egress_that_is_no_proxy_is_the_egress_failing_never_the_sites_verdict() {
    let site_ip = "127.0.59.73";
    let site = Vhosts::start(site_ip, &[NAME]);
    let nginx = Vhosts::start("127.0.59.74", &["elsewhere.pin.test"]);
    let apache = Apache::plain("127.0.59.79", &["elsewhere.pin.test".into()]);
    for not_a_proxy in [
        format!("http://127.0.59.74:{}", nginx.http),
        format!("http://127.0.59.79:{}", apache.port),
    ] {
        let e = engine(&not_a_proxy, &site.ca_file, true, &[(NAME, site_ip)]);
        for url in site.urls() {
            let r = check(&e, &url).await;
            assert_eq!(
                (r.verdict, r.reason.as_str()),
                (Verdict::Unknown, "egress_unavailable"),
                "{not_a_proxy} {url}: {}",
                r.detail
            );
        }
    }
    assert!(site.hits().all.is_empty(), "the site was never asked");
}

/// A URL asked by name goes through the proxy's cache: squid as Debian ships it (memory
/// cache on) answered a page the site had called fresh for an hour from its cache, and
/// the site, down since, was `up`. A request asked by name says no cached copy will do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_asked_by_name_is_never_answered_from_the_proxys_cache() {
    let site_ip = "127.0.59.71";
    let site = Vhosts::start(site_ip, &[NAME]);
    let squid = Squid::stock_caching("127.0.59.72", &[(NAME, site_ip)]);
    let e = engine(&squid.url, &site.ca_file, true, &[(NAME, site_ip)]);
    let url = format!("http://{NAME}:{}/", site.http);
    for _ in 0..2 {
        let r = check(&e, &url).await;
        assert_up_at(&r, site_ip, &url);
        assert!(r.detail.contains("by name"), "{}", r.detail);
    }
    drop(site);
    let r = check(&e, &url).await;
    let log = squid_requests(&squid);
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "connect"),
        "{url}: {}\nsquid: {log}",
        r.detail
    );
    assert!(!log.contains("HIT/"), "{log}");
}

/// Hunt M: squid with `reload-into-ims` turns our `no-cache` into a revalidation, and
/// when that fails (the site is gone) answers its stale copy: a 200 with `Warning: 111
/// "Revalidation failed"`, and the dead site was `up`. A stale copy says nothing of
/// the site but that the proxy could not reach it: the egress's failure, never `up`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_copy_a_proxy_serves_after_a_failed_revalidation_is_never_up() {
    let site_ip = "127.0.59.75";
    let site = Vhosts::start(site_ip, &[NAME]);
    let squid = Squid::reload_into_ims("127.0.59.76", &[(NAME, site_ip)]);
    let e = engine(&squid.url, &site.ca_file, true, &[(NAME, site_ip)]);
    let url = format!("http://{NAME}:{}/", site.http);
    for _ in 0..2 {
        let r = check(&e, &url).await;
        assert_up_at(&r, site_ip, &url);
    }
    drop(site);
    let r = check(&e, &url).await;
    let log = squid_requests(&squid);
    assert_ne!(r.verdict, Verdict::Up, "{url}: {}\nsquid: {log}", r.detail);
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "egress_unavailable"),
        "{url}: {}\nsquid: {log}",
        r.detail
    );
}

/// Hunt M: three egresses, the direct one working; a haproxy pool of proxies with no
/// proxy left (its own 503 to CONNECT) and an Apache forward proxy whose upstream is
/// gone (its own bare 503 to every URL asked by name). A job that met the two broken
/// ones first was `down`, "confirmed", by two failures that disagreed, and the direct
/// egress was never asked. Failures that disagree leave room for another egress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_broken_proxies_failing_differently_do_not_confirm_a_down() {
    let site_ip = "127.0.59.77";
    let site = Vhosts::start(site_ip, &[NAME]);
    let pool = Haproxy::dead_backend("127.0.59.80");
    let forward = Apache::forward_proxy("127.0.59.81", &format!("127.0.59.81:{}", free_port()));
    // Let haproxy's health check mark its backend down.
    tokio::time::sleep(std::time::Duration::from_millis(1200)).await;
    let e = crate::support::picket::engine_with(
        "connect_timeout = \"3s\"\nattempts = 2",
        &format!(
            r#"[tls]
extra_ca_file = "{ca}"
[dns.static]
"{NAME}" = "{site_ip}"
[[egress]]
name = "direct"
[[egress]]
name = "pool"
proxy = "http://127.0.59.80:{pool}"
[[egress]]
name = "forward"
proxy = "http://127.0.59.81:{forward}"
"#,
            ca = site.ca_file,
            pool = pool.port,
            forward = forward.port,
        ),
    );
    // URLs whose first attempt goes through each broken egress (the engine spreads
    // first attempts by an FNV-1a hash of the URL over the egresses, in order).
    let fnv = |s: &str| {
        s.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
        })
    };
    let urls: Vec<String> = (0..40)
        .map(|n| format!("http://{NAME}:{}/?n={n}", site.http))
        .filter(|u| fnv(u) % 3 != 0)
        .take(6)
        .collect();
    assert!(
        urls.iter().any(|u| fnv(u) % 3 == 1),
        "one starts at the pool"
    );
    for url in &urls {
        let r = check(&e, url).await;
        assert_up_at(&r, site_ip, url);
        assert_eq!(r.egress.as_deref(), Some("direct"), "{url}: {}", r.detail);
    }
}

/// Hunt M: before a URL is first asked of a proxy by name, the proxy is asked for a
/// host that does not exist, to tell a proxy from a web server. That question's time
/// (here 3 s: this squid's own DNS never answers) was charged to the site: a page
/// answered in 5 ms was `degraded/slow`, "3024 ms (more than 2000 ms)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_question_whether_an_egress_is_a_proxy_is_not_the_sites_time() {
    let site_ip = "127.0.59.82";
    let site = Vhosts::start(site_ip, &[NAME]);
    let squid = Squid::stock("127.0.59.83", &[(NAME, site_ip)]);
    let e = engine(&squid.url, &site.ca_file, true, &[(NAME, site_ip)]);
    let url = format!("http://{NAME}:{}/", site.http);
    let job = serde_json::json!({"url": url, "expect": {"max_latency_ms": 1500}});
    let r = crate::support::picket::check_job(&e, job).await;
    let log = squid_requests(&squid);
    assert_up_at(&r, site_ip, &url);
    let connect = r.timing_ms.connect.unwrap_or(0);
    assert!(connect < 1000, "{connect} ms: {}\nsquid: {log}", r.detail);
}

/// A proxy with the rules most ship (squid's `http_access deny CONNECT !SSL_ports`)
/// refuses to tunnel to a plain-http port. The request is then asked by name, in the
/// absolute form browsers and curl send to such a proxy, and the result says that the
/// proxy chose the address; the refusal is remembered, so the proxy is not asked for a
/// tunnel on every probe. What the proxy reports of the site is still the site's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_refusing_to_tunnel_plain_http_is_asked_for_the_url_by_name() {
    let site_ip = "127.0.12.41";
    let site = Vhosts::start(site_ip, &[NAME]);
    let squid = Squid::stock("127.0.12.42", &[(NAME, site_ip)]);
    let e = engine(&squid.url, &site.ca_file, true, &[(NAME, site_ip)]);
    let since = now_us();
    let url = format!("http://{NAME}:{}/", site.http);
    for _ in 0..2 {
        let r = check(&e, &url).await;
        assert_up_at(&r, site_ip, &url);
        assert!(r.detail.contains("by name"), "{}", r.detail);
        let body = r.http.as_ref().map(|h| h.body_bytes);
        assert_eq!(body, Some(page(NAME).len() as u64), "{url}: {:?}", r.http);
    }
    // Nothing listens on this port of the site's address: squid's ERR_CONNECT_FAIL page
    // is the site refusing the connection, not the proxy failing.
    let closed = format!("http://{NAME}:{}/", free_port());
    let r = check(&e, &closed).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "connect"),
        "{closed}: {}",
        r.detail
    );
    // A server that closes every connection without a word: squid's
    // ERR_ZERO_SIZE_OBJECT page is the site's failure too (browsers: ERR_EMPTY_RESPONSE).
    let silent = tokio::net::TcpListener::bind((site_ip, 0))
        .await
        .expect("bind");
    let silent_port = silent.local_addr().expect("port").port();
    let closer = tokio::spawn(async move {
        use tokio::io::AsyncReadExt as _;
        while let Ok((mut conn, _)) = silent.accept().await {
            // Reads the request first: closing with it unread would be a reset.
            let mut head = [0u8; 4096];
            let _ = conn.read(&mut head).await;
            drop(conn);
        }
    });
    let empty = format!("http://{NAME}:{silent_port}/");
    let r = check(&e, &empty).await;
    closer.abort();
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "connect"),
        "{empty}: {}",
        r.detail
    );
    assert!(r.detail.contains("closed before an answer"), "{}", r.detail);
    let log = squid_log(&squid, 4).await;
    eprintln!("squid access log:\n{log}");
    let refused = |port: &str| {
        let connect = format!("CONNECT {site_ip}:{port} ");
        log.lines()
            .filter(|l| l.contains("TCP_DENIED/403") && l.contains(&connect))
            .count()
    };
    let closed_port = closed
        .rsplit(':')
        .next()
        .unwrap_or("")
        .trim_end_matches('/');
    assert_eq!(
        (refused(&site.http.to_string()), refused(closed_port)),
        (1, 1),
        "one refused CONNECT for each port, then remembered:\n{log}"
    );
    assert_eq!(log.matches(&format!("GET {url}")).count(), 2, "{log}");
    let hits = settled_hits(|| site.hits(), since, 2).await;
    assert_eq!(hits.all.len(), 2, "{hits:?}");
    assert!(
        hits.all
            .iter()
            .all(|(_, status, host)| *status == 200 && host == NAME),
        "{hits:?}"
    );
}

/// An `https://` egress: the proxy is spoken to over TLS, its certificate checked
/// against its name (here haproxy terminating TLS in front of squid, as operators put a
/// load balancer before their proxies), and the CONNECT inside that TLS still asks for
/// the counted address, for https and plain http.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_https_proxy_is_spoken_to_over_tls_and_asked_for_the_counted_address() {
    let site_ip = "127.0.12.43";
    let site = Vhosts::start(site_ip, &[NAME]);
    let squid = Squid::with_hosts("127.0.12.44", false, &[(NAME, "127.0.12.31")]);
    let squid_at = squid.url.trim_start_matches("http://").to_string();
    let front = Haproxy::tls_front("127.0.12.45", &squid_at, &site.proxy_pem);
    let url = format!("https://{PROXY}:{}", front.port);
    let e = engine(
        &url,
        &site.ca_file,
        true,
        &[(NAME, site_ip), (PROXY, "127.0.12.45")],
    );
    for url in site.urls() {
        assert_up_at(&check(&e, &url).await, site_ip, &url);
    }
    let log = squid_log(&squid, 2).await;
    eprintln!("squid access log:\n{log}");
    for port in [site.https, site.http] {
        assert!(
            log.contains(&format!("CONNECT {site_ip}:{port} ")),
            "squid asked for the counted address:\n{log}"
        );
    }
    // The proxy's certificate is checked: another name for the same address fails, and
    // that is the egress failing, not the site.
    let wrong = engine(
        &format!("https://127.0.12.45:{}", front.port),
        &site.ca_file,
        true,
        &[(NAME, site_ip)],
    );
    let [https, _] = site.urls();
    let r = check(&wrong, &https).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "egress_unavailable"),
        "{}",
        r.detail
    );
}

/// A proxy that lets through only the sites its allow list names (squid's `dstdomain`,
/// the way companies fence their egress) refuses a tunnel to an address. It is then
/// asked for the tunnel by name (https), or for the URL by name (plain http), and the
/// site is up; the result says that the proxy chose the address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_allowing_only_named_sites_is_asked_by_name() {
    let site_ip = "127.0.12.46";
    let site = Vhosts::start(site_ip, &[NAME]);
    let squid = Squid::named_sites("127.0.12.47", ".pin.test", &[(NAME, site_ip)]);
    let e = engine(&squid.url, &site.ca_file, true, &[(NAME, site_ip)]);
    for url in site.urls() {
        let r = check(&e, &url).await;
        assert_up_at(&r, site_ip, &url);
        assert!(r.detail.contains("by name"), "{}", r.detail);
        if url.starts_with("https") {
            assert!(
                r.tls_days_left.is_some(),
                "the site's certificate read: {r:?}"
            );
        }
    }
    let log = squid_log(&squid, 4).await;
    eprintln!("squid access log:\n{log}");
    let denied = |what: &str| {
        log.lines()
            .any(|l| l.contains("TCP_DENIED/403") && l.contains(what))
    };
    assert!(
        denied(&format!("CONNECT {site_ip}:{} ", site.https)),
        "{log}"
    );
    assert!(
        log.contains(&format!("CONNECT {NAME}:{} ", site.https)),
        "the tunnel asked for by name:\n{log}"
    );
}
