//! Names through a real nameserver, asked as the probe uses them: IPv4 is tried first,
//! so the A answer comes first and AAAA is asked only when IPv4 gives no address that
//! answers (no A record, or every IPv4 address refused). Half the queries of asking
//! both at once, with the same fallback to IPv6.
//!
//! Engine in process, the test nameserver of `support::dns`.

use std::collections::HashMap;
use std::net::IpAddr;

use picket::job::Verdict;

use crate::support::dns::{self, Mode};
use crate::support::picket::{check, engine_with, page};
use crate::support::serve;

fn engine(nameserver: std::net::SocketAddr) -> picket::engine::Engine {
    engine_with(
        "attempts = 1\nconnect_timeout = \"2s\"",
        &format!("[dns]\ntimeout = \"1s\"\nnameservers = [\"{nameserver}\"]\n"),
    )
}

async fn site(ip: &str) -> std::net::SocketAddr {
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::response::Html(page("Resolved and served.")) }),
    );
    serve(ip, router).await
}

fn table(name: &str, ips: &[&str]) -> HashMap<String, Vec<IpAddr>> {
    let ips = ips.iter().map(|ip| ip.parse().expect("an IP")).collect();
    HashMap::from([(name.to_string(), ips)])
}

fn ipv6_loopback() {
    assert!(
        std::net::TcpListener::bind("[::1]:0").is_ok(),
        "these tests need the IPv6 loopback address ::1 (sysctl net.ipv6.conf.lo.disable_ipv6=0)"
    );
}

#[tokio::test]
async fn a_name_that_answers_over_ipv4_costs_one_query() {
    ipv6_loopback();
    let web = site("127.0.7.21").await;
    let zone = table("www.four.test", &["127.0.7.21", "::1"]);
    let (ns, asked) = dns::serve_counting("127.0.7.22", Mode::Answer(zone)).await;
    let r = check(
        &engine(ns),
        &format!("http://www.four.test:{}/", web.port()),
    )
    .await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Up, "ok"),
        "{}",
        r.detail
    );
    assert_eq!(r.ip.as_deref(), Some("127.0.7.21"));
    assert_eq!(asked.now(), (1, 0), "one A query, no AAAA: (all, AAAA)");
}

#[tokio::test]
async fn ipv6_is_asked_when_no_ipv4_address_answers() {
    ipv6_loopback();
    let web = site("::1").await;
    // Nothing listens on this address's port: the IPv4 address refuses.
    let zone = table("www.dual.test", &["127.0.7.23", "::1"]);
    let (ns, asked) = dns::serve_counting("127.0.7.24", Mode::Answer(zone)).await;
    let r = check(
        &engine(ns),
        &format!("http://www.dual.test:{}/", web.port()),
    )
    .await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Up, "ok"),
        "{}",
        r.detail
    );
    assert_eq!(r.ip.as_deref(), Some("::1"), "{}", r.detail);
    assert!(
        r.detail.contains("127.0.7.23"),
        "the refused address is named: {}",
        r.detail
    );
    assert_eq!(asked.now(), (2, 1), "A, then AAAA once IPv4 had failed");
}

#[tokio::test]
async fn an_ipv6_only_name_is_found() {
    ipv6_loopback();
    let web = site("::1").await;
    let zone = table("www.six.test", &["::1"]);
    let (ns, asked) = dns::serve_counting("127.0.7.25", Mode::Answer(zone)).await;
    let r = check(&engine(ns), &format!("http://www.six.test:{}/", web.port())).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Up, "ok"),
        "{}",
        r.detail
    );
    assert_eq!(r.ip.as_deref(), Some("::1"));
    assert_eq!(asked.now(), (2, 1), "A (no data), then AAAA");
}

#[tokio::test]
async fn a_name_with_no_address_of_either_kind_is_down_for_dns() {
    let zone = table("www.none.test", &[]);
    let (ns, asked) = dns::serve_counting("127.0.7.26", Mode::Answer(zone)).await;
    let r = check(&engine(ns), "http://www.none.test/").await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "dns"),
        "{}",
        r.detail
    );
    assert_eq!(
        asked.now(),
        (2, 1),
        "A and AAAA both asked before calling it down"
    );
}
