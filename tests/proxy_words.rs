//! Proxies that mark their own pages with no header (hunt Z2): tinyproxy, Privoxy and
//! Apache's mod_proxy say what happened only in their status line's reason phrase
//! ("502 Unable to connect to upstream proxy", "503 Forwarding failure", "404 No such
//! domain", "403 Request blocked by Privoxy") or in the page they serve for a host that
//! does not exist. Their failures are the egress's, never the site's `down`; what they
//! report of the site (a refused connection) is still the site's.
//!
//! Each proxy looks names up with the system's resolver, which knows none of the test
//! names: a URL asked of it by name fails at its own lookup, as an egress whose DNS
//! is broken would.

use picket::job::{Report, Verdict};

use crate::proxy_pin::{assert_up_at, engine, engine_with, Vhosts, NAME};
use crate::support::free_port;
use crate::support::real::apache::Apache;
use crate::support::real::privoxy::Privoxy;
use crate::support::real::tinyproxy::Tinyproxy;

/// `r` is our egress failing, in the words of its proxy (`said`).
pub(crate) fn assert_egress_failed(r: &Report, url: &str, said: &str) {
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "egress_unavailable"),
        "{url}: {}",
        r.detail
    );
    assert!(r.detail.contains(said), "{url}: {}", r.detail);
}

/// A proxy whose own parent is gone (tinyproxy's `Upstream`, Privoxy's `forward-socks5`)
/// answers every request with its own gateway error. Every site was a confirmed `down`,
/// "the proxy could not open a tunnel to it".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_whose_parent_is_down_is_the_egress_failing_never_the_site() {
    let site_ip = "127.0.63.1";
    let site = Vhosts::start(site_ip, &[NAME]);
    let dead = format!("127.0.63.2:{}", free_port());
    let tiny = Tinyproxy::start("127.0.63.3", &format!("Upstream http {dead}"));
    let privoxy = Privoxy::start("127.0.63.4", &format!("forward-socks5 / {dead} ."), &[]);
    for (proxy, said) in [
        (&tiny.url, "Unable to connect to upstream proxy"),
        (&privoxy.url, "Forwarding failure"),
    ] {
        let e = engine(proxy, &site.ca_file, true, &[(NAME, site_ip)]);
        for url in site.urls() {
            let r = check(&e, &url).await;
            assert_egress_failed(&r, &url, said);
        }
    }
    assert!(site.hits().all.is_empty(), "the site was never asked");
}

/// A site that is up is up through tinyproxy and Privoxy, and one whose port is closed
/// is `down`: tinyproxy's "500 Unable to connect" to a tunnel asked for an address is the
/// site refusing the connection (it was `unknown`, "the proxy refused the tunnel
/// itself"), as is Privoxy's "503 Connect failed".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_refusing_tinyproxy_or_privoxy_is_down_and_one_that_answers_up() {
    let site_ip = "127.0.63.10";
    let site = Vhosts::start(site_ip, &[NAME]);
    let tiny = Tinyproxy::start("127.0.63.11", "");
    let privoxy = Privoxy::start("127.0.63.12", "", &[]);
    for proxy in [&tiny.url, &privoxy.url] {
        let e = engine(proxy, &site.ca_file, true, &[(NAME, site_ip)]);
        for url in site.urls() {
            let r = check(&e, &url).await;
            assert_up_at(&r, site_ip, &url);
        }
        for scheme in ["http", "https"] {
            let closed = format!("{scheme}://{NAME}:{}/", free_port());
            let r = check(&e, &closed).await;
            assert_eq!(
                (r.verdict, r.reason.as_str()),
                (Verdict::Down, "connect"),
                "{proxy} {closed}: {}",
                r.detail
            );
        }
    }
}

/// A proxy that refuses a tunnel to the address is asked for the URL by name, and then
/// answers with its own page: its lookup of the name failed (tinyproxy's "500 Unable to
/// connect", Privoxy's "404 No such domain", Apache's "500 Proxy Error"), or its rules
/// block the site ("403 Request blocked by Privoxy"). Each was the site's page, a
/// confirmed `down/http_status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxys_own_page_asked_by_name_is_the_egress_failing_never_the_site() {
    let site_ip = "127.0.63.20";
    let site = Vhosts::start(site_ip, &[NAME]);
    // CONNECT to port 443 only (its plain-http tunnel is refused).
    let tiny = Tinyproxy::start("127.0.63.21", "ConnectPort 443");
    // Blocks the address: its tunnel is refused, and the URL asked by name.
    let privoxy = Privoxy::start("127.0.63.22", "", &[site_ip]);
    let blocking = Privoxy::start("127.0.63.23", "", &[site_ip, NAME]);
    let apache = Apache::forward_proxy_alone("127.0.63.24");
    let apache_url = format!("http://{}:{}", apache.ip, apache.port);
    let http = format!("http://{NAME}:{}/", site.http);
    for (proxy, said) in [
        (&tiny.url, "Unable to connect"),
        (&privoxy.url, "No such domain"),
        (&blocking.url, "Request blocked by Privoxy"),
        (&apache_url, "Proxy Error"),
    ] {
        let e = engine(proxy, &site.ca_file, true, &[(NAME, site_ip)]);
        let r = check(&e, &http).await;
        assert_egress_failed(&r, &format!("{http} via {proxy}"), said);
    }
    assert!(site.hits().all.is_empty(), "the site was never asked");
}

/// tinyproxy serves at most `MaxClients` connections and leaves the next unaccepted until
/// one of them ends ("Maximum number of connections reached. Refusing new connections").
/// Twenty probes at once through one taking four had their tunnels wait unanswered past
/// their time, and the sites were `unknown`, "its proxy held the request up" (as three
/// farm sites were in the CI run of stop 69, through a tinyproxy taking 50). With the
/// egress's `max_connections` no more go to it at once: the others wait their turn in
/// picket, which is our time, not the site's, and every site is up. Without it, each
/// site held says how many other requests of ours were out through the proxy.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_taking_few_connections_is_sent_no_more_than_its_max_connections() {
    let site_ip = "127.0.12.82";
    let site = slow_site(site_ip).await;
    let tiny = Tinyproxy::start("127.0.12.83", "MaxClients 4");
    let hosts = [("slow.test", site_ip)];
    let urls: Vec<String> = (0..20)
        .map(|i| format!("http://slow.test:{}/?n={i}", site.port()))
        .collect();
    let all_at_once = |egress_keys: &'static str| {
        let e = engine_with(&tiny.url, "", true, &hosts, egress_keys);
        let urls = urls.clone();
        async move {
            let checks = urls.iter().map(|u| check(&e, u));
            futures_util::future::join_all(checks).await
        }
    };
    let unbounded = all_at_once("").await;
    let held: Vec<&Report> = unbounded
        .iter()
        .filter(|r| r.verdict == Verdict::Unknown && r.reason == "egress_unavailable")
        .collect();
    assert!(
        !held.is_empty(),
        "20 at once through a proxy taking 4 are held past their time (else this shows \
         nothing): {:?}",
        unbounded.iter().map(|r| &r.detail).collect::<Vec<_>>()
    );
    // Each says how many of ours were out through the proxy as it failed.
    for r in held {
        assert!(
            r.detail
                .contains("other requests of this worker were out through egress")
                && r.detail.contains("no egress.max_connections"),
            "{}",
            r.detail
        );
    }
    for r in all_at_once("max_connections = 4").await {
        assert_up_at(&r, site_ip, &r.url);
    }
}

/// Privoxy serving as many clients as `max-client-connections` lets it answers the next
/// with its own "503 Too many open connections" ("Maximum number of open connections
/// reached."), CONNECT or not. A bare 503 to a CONNECT is the site's, so every site
/// was a confirmed `down/connect`, "the proxy could not open a tunnel to it": its own
/// crowd, not the site. It is the egress failing, in the proxy's words.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privoxy_serving_all_the_clients_it_takes_is_the_egress_failing_never_the_site() {
    use std::io::{Read, Write};
    let site_ip = "127.0.12.84";
    let site = Vhosts::start(site_ip, &[NAME]);
    let privoxy = Privoxy::start("127.0.12.85", "max-client-connections 2", &[]);
    let proxy = privoxy.url.trim_start_matches("http://").to_string();
    // As many tunnels to the site as it takes, held open, each answered 200: it is full
    // of ours alone (a connection of its readiness check may hold one of its threads for
    // a while, so a 503 is tried again later).
    let mut held = Vec::new();
    let connect = format!(
        "CONNECT {site_ip}:{0} HTTP/1.1\r\nHost: {site_ip}:{0}\r\n\r\n",
        site.http
    );
    for _ in 0..50 {
        if held.len() == 2 {
            break;
        }
        let mut tunnel = std::net::TcpStream::connect(&proxy).expect("privoxy");
        tunnel.write_all(connect.as_bytes()).expect("CONNECT");
        let mut answer = [0u8; 64];
        let n = tunnel.read(&mut answer).unwrap_or(0);
        if answer[..n].starts_with(b"HTTP/1.1 200") {
            held.push(tunnel);
        } else {
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    }
    assert_eq!(held.len(), 2, "privoxy never took two tunnels");
    let e = engine(&privoxy.url, &site.ca_file, true, &[(NAME, site_ip)]);
    for url in site.urls() {
        let r = check(&e, &url).await;
        // Its 503 is read in its words, though it answers before reading our CONNECT
        // and closes (`tunnel::heard`). Full of others' tunnels: asked again a moment
        // later, a few times, and told.
        assert_egress_failed(&r, &url, "Too many open connections");
        assert!(
            r.detail
                .contains("asked again a moment later (no other request of ours"),
            "{}",
            r.detail
        );
    }
    drop(held);
}

/// Privoxy taking 4 clients at once, asked for 20 sites at once with no
/// `egress.max_connections`: each request past its room was answered "503 Too many
/// open connections" and its site was `unknown/egress_unavailable`, though up. The
/// proxy's words teach its room: picket sends it no more than the requests of ours
/// out through it then, asks the turned-away ones again once one of those ends (our
/// time, not the site's), and every site is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_privoxy_with_no_room_for_more_of_ours_is_asked_again_as_ours_end() {
    let site_ip = "127.0.12.87";
    let site = slow_site(site_ip).await;
    let privoxy = Privoxy::start("127.0.12.88", "max-client-connections 4", &[]);
    let e = engine_with(&privoxy.url, "", true, &[("slow.test", site_ip)], "");
    let checks = (0..20).map(|i| {
        let url = format!("http://slow.test:{}/?n={i}", site.port());
        let e = &e;
        async move { check(e, &url).await }
    });
    let reports = futures_util::future::join_all(checks).await;
    for r in &reports {
        assert_up_at(r, site_ip, &r.url);
    }
    let turned_away = reports
        .iter()
        .filter(|r| r.detail.contains("Too many open connections"))
        .inspect(|r| {
            assert!(
                r.detail.contains("asked again once one of the")
                    || r.detail.contains("asked again a moment later"),
                "{}",
                r.detail
            )
        })
        .count();
    // Beside other tests the 20 reach it spread out, and fewer find it full.
    assert!(
        turned_away >= 1,
        "20 at once through a proxy taking 4 fill it (else this shows nothing): {:?}",
        reports.iter().map(|r| &r.detail).collect::<Vec<_>>()
    );
}

/// A site on `ip` whose every page comes after 1.5 s: a few at once fill a small proxy.
async fn slow_site(ip: &str) -> std::net::SocketAddr {
    use std::time::Duration;
    let slow = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            axum::response::Html(crate::support::picket::page("answered in 1.5 s"))
        }),
    );
    crate::support::serve(ip, slow).await
}

async fn check(e: &picket::engine::Engine, url: &str) -> Report {
    crate::support::picket::check(e, url).await
}
