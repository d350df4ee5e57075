//! Egresses against our own proxies on loopback (`support::proxy`): requests through a
//! SOCKS5 or HTTP proxy leave from the proxy's address and go to the IP picket counted;
//! a dead proxy is no evidence about a site and gets rested while the direct route
//! answers; every egress failing is `unknown`; a bot wall on one egress is confirmed or
//! disproved through another; a reset right after a burst is a ban, not an outage.
//!
//! These run the engine in process (`picket::app::engine`, in-memory cache and limiter):
//! no broker is involved in choosing egresses.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use picket::engine::Engine;
use picket::job::Verdict;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::support::farm::{self, Farm};
use crate::support::picket::{check, check_job, engine_from_toml, engine_with, page};
use crate::support::targets::read_request_head;
use crate::support::{free_port, proxy, serve_raw};

fn engine(toml: &str) -> Engine {
    engine_with(
        "attempts = 2\nconnect_timeout = \"2s\"\negress_fail_targets = 3",
        toml,
    )
}

/// A raw HTTP target on `ip` whose answer (status, body) depends on the peer address
/// the request came from; it records those addresses.
async fn target<F>(ip: &str, answer: F) -> (SocketAddr, Arc<Mutex<Vec<IpAddr>>>)
where
    F: Fn(IpAddr) -> (u16, String) + Send + Sync + 'static,
{
    let peers = Arc::new(Mutex::new(Vec::new()));
    let p = peers.clone();
    let answer = Arc::new(answer);
    let addr = serve_raw(ip, move |mut stream: TcpStream| {
        let (peers, answer) = (p.clone(), answer.clone());
        async move {
            let _ = read_request_head(&mut stream).await;
            let Ok(peer) = stream.peer_addr() else { return };
            peers.lock().expect("peers").push(peer.ip());
            let (status, body) = answer(peer.ip());
            let response = format!(
                "HTTP/1.1 {status} X\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    })
    .await;
    (addr, peers)
}

fn ok_page(_: IpAddr) -> (u16, String) {
    (200, page("egress"))
}

fn ip(s: &str) -> IpAddr {
    s.parse().expect("ip")
}

#[tokio::test]
async fn proxies_carry_the_probe_from_their_own_address_to_the_counted_ip() {
    let (site, peers) = target("127.0.6.1", ok_page).await;
    let hosts = HashMap::from([("site.egress.test".to_string(), site.ip())]);
    let (socks, socks_log) = proxy::socks5("127.0.6.10", "127.0.6.11", hosts.clone()).await;
    let (http, http_log) = proxy::http("127.0.6.20", "127.0.6.21", hosts).await;
    let dns = format!(
        "[dns]\nstatic = {{ \"site.egress.test\" = \"{}\" }}\n",
        site.ip()
    );
    let url = format!("http://site.egress.test:{}/", site.port());

    let e = engine(&format!(
        "{dns}[[egress]]\nname = \"socks\"\nproxy = \"socks5://{socks}\"\n"
    ));
    let r = check(&e, &url).await;
    assert_eq!(
        (r.verdict, r.egress.as_deref()),
        (Verdict::Up, Some("socks")),
        "{}",
        r.detail
    );
    assert_eq!(peers.lock().expect("peers").last(), Some(&ip("127.0.6.11")));
    // socks5:// resolves here: the proxy is given the very IP the limiter counted.
    assert_eq!(socks_log.asked(), vec![site.to_string()]);
    assert!(
        r.timing_ms.connect.is_some(),
        "connect time through the proxy"
    );
    assert!(r.timing_ms.tls.is_none(), "no TLS on http");

    let e = engine(&format!(
        "{dns}[[egress]]\nname = \"web\"\nproxy = \"http://{http}\"\n"
    ));
    let r = check(&e, &url).await;
    assert_eq!(
        (r.verdict, r.egress.as_deref()),
        (Verdict::Up, Some("web")),
        "{}",
        r.detail
    );
    assert_eq!(peers.lock().expect("peers").last(), Some(&ip("127.0.6.21")));
    // An HTTP proxy too is asked for the counted address (CONNECT ip:port), not the name.
    assert_eq!(http_log.asked(), vec![site.to_string()]);
}

#[tokio::test]
async fn a_proxy_reporting_the_site_refused_is_the_site_down() {
    let port = free_port(); // nothing listens there
    let (socks, _) = proxy::socks5("127.0.6.30", "127.0.6.31", HashMap::new()).await;
    let e = engine(&format!(
        "[[egress]]\nname = \"socks\"\nproxy = \"socks5://{socks}\"\n"
    ));
    let r = check(&e, &format!("http://127.0.6.32:{port}/")).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "connect"),
        "{}",
        r.detail
    );
    assert!(
        r.detail.contains("proxy reports connection refused"),
        "{}",
        r.detail
    );
}

#[tokio::test]
async fn every_egress_failing_is_unknown_never_down() {
    let (site, _) = target("127.0.6.40", ok_page).await;
    let (dead_socks, dead_http) = (free_port(), free_port());
    let e = engine(&format!(
        "[[egress]]\nname = \"s\"\nproxy = \"socks5://127.0.0.1:{dead_socks}\"\n\
         [[egress]]\nname = \"h\"\nproxy = \"http://127.0.0.1:{dead_http}\"\n"
    ));
    for path in ["a", "b", "c"] {
        let r = check(&e, &format!("http://{site}/{path}")).await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Unknown, "egress_unavailable"),
            "{}",
            r.detail
        );
    }
}

#[tokio::test]
async fn a_dead_proxy_is_no_evidence_and_is_rested_while_direct_works() {
    let dead = free_port();
    let e = engine(&format!(
        "[[egress]]\nname = \"dead\"\nproxy = \"socks5://127.0.0.1:{dead}\"\n\
         [[egress]]\nname = \"direct\"\n"
    ));
    let mut sites = Vec::new();
    for n in 0..8 {
        sites.push(target(&format!("127.0.6.{}", 50 + n), ok_page).await.0);
    }
    // Which egress a job starts on follows a hash of its URL: ask paths on the sites
    // until three distinct sites have failed through the dead proxy (bounded).
    let mut failed_through_dead = std::collections::HashSet::new();
    'rounds: for round in 0..16 {
        for site in &sites {
            if failed_through_dead.len() >= 3 {
                break 'rounds;
            }
            let r = check(&e, &format!("http://{site}/{round}")).await;
            assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
            for a in r.attempt_log.iter().filter(|a| a.egress == "dead") {
                assert_eq!(a.reason, "egress_unavailable", "{}", a.detail);
                failed_through_dead.insert(*site);
            }
        }
    }
    assert_eq!(
        failed_through_dead.len(),
        3,
        "the dead proxy was never tried"
    );
    // Three distinct sites failing through it while direct answered rest it: no later
    // job tries it.
    for (n, site) in sites.iter().enumerate() {
        for path in ["again", "and-again"] {
            let r = check(&e, &format!("http://{site}/{path}")).await;
            assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
            assert!(
                r.attempt_log.iter().all(|a| a.egress == "direct"),
                "site {n} still went through the rested proxy: {:?}",
                r.attempt_log
            );
        }
    }

    // A site that is really down is still down, confirmed through the egress that works.
    let refused = free_port();
    let r = check(&e, &format!("http://127.0.6.70:{refused}/")).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "connect"),
        "{}",
        r.detail
    );
    assert!(r.attempt_log.iter().all(|a| a.egress == "direct"));
    assert_eq!(r.attempts, 2);
}

/// A site behind a bot wall for the direct route (peer 127.0.0.1): 429 with a challenge.
fn walled(other: (u16, &'static str)) -> impl Fn(IpAddr) -> (u16, String) + Send + Sync {
    move |peer| {
        if peer == ip("127.0.0.1") {
            (
                429,
                "<html><title>Just a moment...</title>checking your browser</html>".into(),
            )
        } else {
            (other.0, page(other.1))
        }
    }
}

#[tokio::test]
async fn a_bot_wall_on_one_egress_is_settled_through_another() {
    let (socks, _) = proxy::socks5("127.0.6.80", "127.0.6.81", HashMap::new()).await;
    let egresses = format!(
        "[[egress]]\nname = \"direct\"\n[[egress]]\nname = \"socks\"\nproxy = \"socks5://{socks}\"\n"
    );
    let e = engine(&egresses);
    let (fine, _) = target("127.0.6.82", walled((200, "fine"))).await;
    let (broken, _) = target("127.0.6.83", walled((500, "broken"))).await;
    // Which egress a job starts on follows a hash of its URL: go on (bounded) until jobs
    // have started on the walled route too.
    let mut walled_first = 0;
    for path in 0..32 {
        if path >= 6 && walled_first >= 2 {
            break;
        }
        let r = check(&e, &format!("http://{fine}/{path}")).await;
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
        if r.attempt_log.first().is_some_and(|a| a.reason == "blocked") {
            walled_first += 1;
            assert_eq!(r.egress.as_deref(), Some("socks"));
        }
        let r = check(&e, &format!("http://{broken}/{path}")).await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Down, "http_status"),
            "{}",
            r.detail
        );
    }
    assert!(
        walled_first >= 2,
        "jobs seldom started on the walled egress"
    );

    // With the direct route alone, the wall is all we know: unknown, not down.
    let e = engine("");
    let r = check(&e, &format!("http://{broken}/")).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "blocked"),
        "{}",
        r.detail
    );
}

#[tokio::test]
async fn a_reset_right_after_a_burst_is_a_ban_not_an_outage() {
    // Answers the first four connections, then resets every one: a server that bans a
    // client for a burst.
    let served = Arc::new(AtomicUsize::new(0));
    let s = served.clone();
    let site = serve_raw("127.0.6.90", move |mut stream: TcpStream| {
        let n = s.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = read_request_head(&mut stream).await;
            if n < 4 {
                let body = page("burst");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
                let _ = stream.shutdown().await;
            } else {
                let _ = stream.set_zero_linger();
            }
        }
    })
    .await;
    let e = engine("");
    for n in 0..4 {
        let r = check(&e, &format!("http://{site}/{n}")).await;
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
    }
    let r = check(&e, &format!("http://{site}/after")).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "blocked"),
        "{}",
        r.detail
    );
    assert!(r.detail.contains("right after"), "{}", r.detail);

    // Answers, then clean closes without an answer: a crashing backend, not a ban.
    let served = Arc::new(AtomicUsize::new(0));
    let s = served.clone();
    let crashing = serve_raw("127.0.6.92", move |mut stream: TcpStream| {
        let n = s.fetch_add(1, Ordering::SeqCst);
        async move {
            let _ = read_request_head(&mut stream).await;
            if n < 4 {
                let body = page("crash");
                let response = format!(
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = stream.write_all(response.as_bytes()).await;
            }
            let _ = stream.shutdown().await;
        }
    })
    .await;
    for n in 0..4 {
        let r = check(&e, &format!("http://{crashing}/{n}")).await;
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
    }
    let r = check(&e, &format!("http://{crashing}/after")).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "connect"),
        "{}",
        r.detail
    );

    // The same resets with no answers before them are an outage.
    let dead = serve_raw("127.0.6.91", crate::support::targets::raw::reset).await;
    let r = check(&e, &format!("http://{dead}/")).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "connect"),
        "{}",
        r.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_either_proxy_a_site_is_judged_as_it_is_directly() {
    let farm = Farm::start().await;
    let hosts: HashMap<String, IpAddr> = farm
        .static_hosts
        .iter()
        .filter_map(|(h, ips)| Some((h.clone(), ips.split(',').next()?.trim().parse().ok()?)))
        .collect();
    let (web, web_log) = proxy::http("127.0.6.100", "127.0.6.101", hosts.clone()).await;
    let (socks, socks_log) = proxy::socks5("127.0.6.102", "127.0.6.103", hosts).await;
    for (name, proxy_url) in [
        ("web", format!("http://{web}")),
        ("socks", format!("socks5://{socks}")),
    ] {
        let e = engine_from_toml(&format!(
            "{}\n[[egress]]\nname = \"{name}\"\nproxy = \"{proxy_url}\"\n",
            farm.config_toml()
        ));
        let r = check(&e, &farm.target("tls-valid").url).await;
        assert_eq!(
            (r.verdict, r.egress.as_deref()),
            (Verdict::Up, Some(name)),
            "{}",
            r.detail
        );
        assert!(
            r.timing_ms.tls.is_some() && r.timing_ms.connect.is_some(),
            "{:?}",
            r.timing_ms
        );
        // A certificate problem seen through the tunnel is the site's, not the proxy's.
        let r = check(&e, &farm.target("tls-expired").url).await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Degraded, "tls"),
            "through {name}: {}",
            r.detail
        );
        // The certificate's days left are read through either proxy (reqwest keeps no
        // TLS info on its SOCKS path), so an expiry warning holds through both.
        let r = check(&e, &farm.target("tls-expiring-soon").url).await;
        assert_eq!(
            (r.verdict, r.reason.as_str(), r.tls_days_left.is_some()),
            (Verdict::Degraded, "tls", true),
            "through {name}: {}",
            r.detail
        );
        // Header lines browsers forgive are forgiven on either path (through the HTTP
        // proxy the answer is read by the tunnel's own hyper connection).
        let r = check(&e, &farm.target("sloppy-headers").url).await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Up, "ok"),
            "through {name}: {}",
            r.detail
        );
        // The browser's headers, their case and the codings it asks for hold through
        // either proxy (through the HTTP one the request is written by the tunnel's
        // own hyper connection), and so does reading a status line or chunks as
        // browsers do (through SOCKS it is asked again through the same proxy).
        for target in [
            "header-case-sensitive",
            "bot-manager",
            "zstd",
            "x-gzip",
            "status-line-lower-case",
            "status-line-two-spaces",
            "status-line-http-1-2",
            "chunk-lines-ended-by-lf",
            "chunk-data-ended-by-lf",
        ] {
            let r = check_job(&e, farm.target(target).job()).await;
            assert_eq!(
                (r.verdict, r.reason.as_str()),
                (Verdict::Up, "ok"),
                "{target} through {name}: {}",
                r.detail
            );
            // Forgiven, and said: the server is broken for clients stricter than
            // browsers (through either route).
            assert_eq!(
                target.starts_with("status-line"),
                r.detail.contains("breaks HTTP's grammar"),
                "{target} through {name}: {}",
                r.detail
            );
            assert_eq!(
                target.starts_with("chunk-"),
                r.detail.contains("ends in a bare LF"),
                "{target} through {name}: {}",
                r.detail
            );
        }
        // A chain sent incomplete is completed through the proxy too: the intermediate
        // is fetched through the same egress.
        let r = check(&e, &farm.target("tls-incomplete-chain-aia").url).await;
        assert_eq!(
            (r.verdict, r.egress.as_deref()),
            (Verdict::Up, Some(name)),
            "through {name}: {}",
            r.detail
        );
        assert!(
            r.detail.contains("incomplete chain"),
            "through {name}: {r:?}"
        );
    }
    // A SOCKS5 egress named by its host name: a status line is asked again through
    // the proxy found by the shared resolver (here `dns.static`), as reqwest found it.
    let e = engine_from_toml(&format!(
        "{}\"socks-proxy.test\" = \"{}\"\n[[egress]]\nname = \"socks\"\nproxy = \"socks5://socks-proxy.test:{}\"\n",
        farm.config_toml(),
        socks.ip(),
        socks.port()
    ));
    let r = check(&e, &farm.target("status-line-lower-case").url).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Up, "ok"),
        "through the SOCKS5 proxy by name: {}",
        r.detail
    );
    // Both proxies were asked for the address picket counted, never the name (the
    // HTTP one with CONNECT ip:port, the name going to the site in SNI). The one name
    // asked is picket's own question whether the proxy intercepts TLS, after a
    // certificate failed through it: a host that does not exist.
    for (what, asked) in [("http", web_log.asked()), ("socks5", socks_log.asked())] {
        assert!(
            !asked.is_empty() && only_counted_addresses(&asked),
            "{what}: {asked:?}"
        );
    }
}

/// Whether a proxy was asked only for the farm's addresses (besides picket's own
/// question whether it intercepts TLS, a host that does not exist), never a name.
fn only_counted_addresses(asked: &[String]) -> bool {
    asked
        .iter()
        .filter(|a| *a != "picket-egress-check.invalid:443")
        .all(|a| a.starts_with(&format!("{}.", farm::net())))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_legacy_tls_server_is_asked_again_over_openssl_through_an_http_proxys_tunnel() {
    // A server speaking only legacy TLS is answered over OpenSSL through every egress:
    // through an HTTP proxy on picket's own tunnel to the counted address (the proxy
    // asked `CONNECT ip:port`, never the name), through SOCKS5 by reqwest's client.
    let farm = Farm::start().await;
    let hosts: HashMap<String, IpAddr> = farm
        .static_hosts
        .iter()
        .filter_map(|(h, ips)| Some((h.clone(), ips.split(',').next()?.trim().parse().ok()?)))
        .collect();
    let (web, web_log) = proxy::http("127.0.6.104", "127.0.6.105", hosts.clone()).await;
    let (socks, _) = proxy::socks5("127.0.6.106", "127.0.6.107", hosts).await;
    let url = &farm.target("tls-legacy-cbc").url;
    let through = |proxy_url: String| {
        engine_from_toml(&format!(
            "{}\n[[egress]]\nname = \"p\"\nproxy = \"{proxy_url}\"\n",
            farm.config_toml()
        ))
    };
    for proxy_url in [format!("http://{web}"), format!("socks5://{socks}")] {
        let r = check(&through(proxy_url.clone()), url).await;
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Up, "ok"),
            "through {proxy_url}: {}\n{:#?}",
            r.detail,
            r.attempt_log
        );
        assert!(r.detail.contains("answered over OpenSSL"), "{}", r.detail);
    }
    let asked = web_log.asked();
    assert!(
        asked.len() >= 2 && only_counted_addresses(&asked),
        "the HTTP proxy was asked for the name, or not twice: {asked:?}"
    );
}

/// A squid whose allow list names sites refuses a tunnel to the address, so a plain-http
/// site is asked of it by name (`GET http://name/`), and that is remembered for the port.
/// When the proxy then hangs (SIGSTOP: it takes the connection and answers nothing), a
/// site asked meanwhile is the egress failing, not the site's `down/timeout`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_asked_by_name_of_a_proxy_that_hangs_is_the_egress_failing() {
    use crate::support::real::squid::Squid;
    let farm = Farm::start().await;
    let target = farm.target("healthy");
    let host = url::Url::parse(&target.url).expect("url");
    let name = host.host_str().expect("host").to_string();
    let ip = farm
        .static_hosts
        .iter()
        .find(|(h, _)| *h == name)
        .map(|(_, ips)| ips.clone())
        .expect("the target's address");
    let squid = Squid::named_sites(
        "127.0.12.67",
        &format!(".{}", farm::DOMAIN),
        &[(name.as_str(), ip.as_str())],
    );
    let e = engine_from_toml(&format!(
        "{}\n[[egress]]\nname = \"squid\"\nproxy = \"{}\"\n",
        farm.config_toml().replace("attempts = 2", "attempts = 1"),
        squid.url
    ));
    let r = check(&e, &target.url).await;
    assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
    assert!(r.detail.contains("asked by name"), "{}", r.detail);
    squid.daemon.freeze();
    let r = check(&e, &target.url).await;
    squid.daemon.thaw();
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "egress_unavailable"),
        "{}",
        r.detail
    );
}
