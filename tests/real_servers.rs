//! picket against real server software (tests/support/real): Apache with mod_evasive at
//! its documented defaults, nginx with `limit_req`/`limit_conn`, Apache with ModSecurity
//! and the OWASP CRS at paranoia level 2, haproxy with a dead backend and with
//! stick-table rate limits, fail2ban banning what nginx refused, squid and dante as
//! egresses, nginx sending pages slowly (`limit_rate`). With the default limits, many
//! virtual hosts on one address checked in rounds with and without pauses are never
//! refused; a defence tripped by a generous override, the ban that follows, and a
//! proxy's refusal or death never make a site `down`; a page sent slowly is judged by
//! what came of it in time.

use std::sync::Arc;
use std::time::Duration;

use picket::config::Settings;
use picket::engine::Engine;
use picket::job::{Reason, Report, Verdict};

use crate::support::real::apache::{Apache, Dos, Evasive};
use crate::support::real::dante::Dante;
use crate::support::real::fail2ban::{Block, Fail2ban};
use crate::support::real::haproxy::{Haproxy, Limit};
use crate::support::real::microsocks::Microsocks;
use crate::support::real::nginx::{Nginx, Site};
use crate::support::real::recent::RecentBan;
use crate::support::real::squid::Squid;
use crate::support::real::{now_us, Hits};
use crate::support::{free_port, serve, servers, unique};

/// `n` virtual host names under `prefix`.
fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}{i}.county.test")).collect()
}

/// `[dns.static]` entries for `names` on `ip`.
fn static_dns(names: &[String], ip: &str) -> String {
    let mut toml = String::from("[dns.static]\n");
    for n in names {
        toml.push_str(&format!("\"{n}\" = \"{ip}\"\n"));
    }
    toml
}

/// Settings as a new user has them (default limits, the shared Redis limiter), on the
/// test servers, private targets allowed; `extra` is appended.
fn settings(extra: &str) -> Settings {
    settings_of_worker(&unique("real"), extra)
}

/// The same, for one of the workers sharing the limiter's keys under `prefix`.
fn settings_of_worker(prefix: &str, extra: &str) -> Settings {
    let text = format!(
        "[redis]\nurl = \"{}\"\nkey_prefix = \"{prefix}:\"\n[targets]\nallow_private = true\n{extra}",
        servers().redis_url,
    );
    Settings::from_toml(&text).unwrap_or_else(|e| panic!("settings: {e}\n{text}"))
}

/// The engine a worker runs over `s`: Redis limiter shared as between workers.
fn engine(s: &Settings) -> Arc<Engine> {
    crate::support::picket::engine_on_redis(s)
}

/// Checks every URL at once (as a worker with jobs for all of them would).
async fn round(engine: &Arc<Engine>, urls: &[String]) -> Vec<Report> {
    let tasks: Vec<_> = urls
        .iter()
        .map(|u| {
            let engine = engine.clone();
            let job = picket::job::job_for_url(u, "real").expect("job");
            tokio::spawn(async move { engine.run(&job).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("check task"));
    }
    out
}

fn assert_all_up(reports: &[Report], what: &str) {
    let bad: Vec<String> = reports
        .iter()
        .filter(|r| r.verdict != Verdict::Up)
        .map(|r| format!("{} {:?}/{}: {}", r.url, r.verdict, r.reason, r.detail))
        .collect();
    assert!(bad.is_empty(), "{what}: not up:\n{}", bad.join("\n"));
}

/// Rounds over `urls`: one with a full bucket, one right after (empty bucket), then
/// short rounds after pauses of different lengths (the bucket refilled, each round
/// starting at another phase of the calendar second).
async fn rounds(engine: &Arc<Engine>, urls: &[String], what: &str) -> usize {
    let mut checked = 0;
    let full = round(engine, urls).await;
    assert_all_up(&full, &format!("{what}, full bucket"));
    checked += full.len();
    let empty = round(engine, &urls[..urls.len() / 2]).await;
    assert_all_up(&empty, &format!("{what}, empty bucket"));
    checked += empty.len();
    for (i, pause) in [1100u64, 1650, 2300, 3050].iter().enumerate() {
        tokio::time::sleep(Duration::from_millis(*pause)).await;
        let some: Vec<String> = urls.iter().skip(i * 3).take(3).cloned().collect();
        let r = round(engine, &some).await;
        assert_all_up(&r, &format!("{what}, after a {pause} ms pause"));
        checked += r.len();
    }
    checked
}

fn report_line(server: &str, hits: &Hits, refused: usize) {
    eprintln!(
        "{server}: {} requests, at most {} in one calendar second, {} in any 1 s window, \
         shortest gap {:?}, refused {refused}",
        hits.all.len(),
        hits.max_per_calendar_second(),
        hits.max_in_window(Duration::from_secs(1)),
        hits.min_gap().unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mod_evasive_defaults_never_refuse_the_default_limits_on_any_schedule() {
    let ip = "127.0.12.1";
    let hosts = names("ev", 40);
    let apache = Apache::evasive(ip, &hosts, Evasive::default());
    let s = settings(&static_dns(&hosts, ip));
    let engine = engine(&s);
    let urls: Vec<String> = hosts
        .iter()
        .map(|h| format!("http://{h}:{}/", apache.port))
        .collect();
    let start = now_us();
    let checked = rounds(&engine, &urls, "mod_evasive").await;
    let hits = crate::support::real::settled_hits(|| apache.hits(), start, checked).await;
    let refused = hits.with_status(403);
    report_line("apache2 mod_evasive defaults", &hits, refused);
    assert_eq!(refused, 0, "mod_evasive refused us:\n{}", apache.errors());
    assert_eq!(hits.all.len(), checked, "one request per check");
    assert!(hits.max_per_calendar_second() <= 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nginx_limit_req_and_limit_conn_never_refuse_the_default_limits() {
    let strict = Site {
        ip: "127.0.12.2".into(),
        rate: 2,
        burst: 0,
        nodelay: false,
        conn: 4,
        status: 503,
        hosts: names("ngx", 30),
    };
    let lenient = Site {
        ip: "127.0.12.3".into(),
        rate: 2,
        burst: 5,
        nodelay: true,
        conn: 4,
        status: 503,
        hosts: names("ngxb", 10),
    };
    let nginx = Nginx::start(&[strict.clone(), lenient.clone()]);
    let mut dns = static_dns(&strict.hosts, &strict.ip);
    dns.push_str(&static_dns(&lenient.hosts, &lenient.ip).replace("[dns.static]\n", ""));
    let s = settings(&dns);
    let engine = engine(&s);
    let urls = |site: &Site| -> Vec<String> {
        site.hosts
            .iter()
            .map(|h| format!("http://{h}:{}/", nginx.port))
            .collect()
    };
    let (strict_urls, lenient_urls) = (urls(&strict), urls(&lenient));
    let start = now_us();
    let (a, b) = tokio::join!(
        rounds(&engine, &strict_urls, "nginx rate=2r/s"),
        rounds(&engine, &lenient_urls, "nginx rate=2r/s burst=5 nodelay")
    );
    let hits = crate::support::real::settled_hits(|| nginx.hits(), start, a + b).await;
    for (site, checked, what) in [
        (&strict, a, "nginx limit_req 2r/s, limit_conn 4"),
        (
            &lenient,
            b,
            "nginx limit_req 2r/s burst=5 nodelay, limit_conn 4",
        ),
    ] {
        let mine = hits.for_hosts(&site.hosts);
        let refused = mine.with_status(503);
        report_line(what, &mine, refused);
        assert_eq!(
            refused,
            0,
            "{what} refused us:\n{}",
            nginx.daemon.read("error.log")
        );
        assert_eq!(mine.all.len(), checked, "{what}: one request per check");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn modsecurity_crs_paranoia_2_passes_every_probe() {
    let ip = "127.0.12.4";
    let hosts = names("waf", 8);
    let apache = Apache::waf(ip, &hosts, 2);
    // Not a rate test: the WAF is the point, so this IP may be asked quickly.
    let s = settings(&format!(
        "{}[[rate_limit.override]]\ncidr = \"{ip}/32\"\nrate = 50.0\nburst = 10\nmax_inflight = 8\n",
        static_dns(&hosts, ip)
    ));
    let engine = engine(&s);
    let mut urls: Vec<String> = hosts
        .iter()
        .map(|h| format!("http://{h}:{}/", apache.port))
        .collect();
    urls.push(format!(
        "http://{}:{}/index.html?lang=en&page=2",
        hosts[0], apache.port
    ));
    urls.push(format!("http://{}:{}/", ip, apache.port));
    let reports = round(&engine, &urls).await;
    let hits = apache.hits();
    report_line("apache2 ModSecurity CRS PL2", &hits, hits.with_status(403));
    assert_all_up(&reports, "ModSecurity CRS PL2");
    assert_eq!(hits.with_status(403), 0, "{}", apache.errors());
    assert!(
        !apache.errors().contains("Access denied"),
        "ModSecurity denied a probe:\n{}",
        apache.errors()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_with_a_dead_backend_is_down_on_every_host() {
    let ip = "127.0.12.5";
    let hosts = names("hap", 3);
    let haproxy = Haproxy::dead_backend(ip);
    // Let haproxy's health check mark the backend down.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let s = settings(&format!(
        "{}[probe]\nretry_delay = \"300ms\"\n[[rate_limit.override]]\ncidr = \"{ip}/32\"\nrate = 20.0\nburst = 5\nmax_inflight = 4\n",
        static_dns(&hosts, ip)
    ));
    let engine = engine(&s);
    let urls = urls_of(&hosts, haproxy.port);
    for r in round(&engine, &urls).await {
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Down, "http_status"),
            "{}: {}",
            r.url,
            r.detail
        );
        assert!(r.detail.contains("503"), "{}", r.detail);
    }
}

/// A shared server's backend (PHP-FPM, an application server) dying while we check its
/// sites: every host answers the front's own 503 at once, right after it answered us,
/// just as a tripped `limit_req` does. But no limit refuses the first requests after a
/// pause, and these still get 503 after the hold: the sites are failing, `down` once
/// confirmed, never `unknown/blocked` for as long as the outage lasts. Every neighbour
/// is refused alike, as a limit remembering us would refuse them: held again until the
/// holds add up to `rate_limit.limit_memory` (6 s here, two holds), then `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_dying_under_our_checks_is_down_not_a_refusal_of_us() {
    for (front_ip, backend_ip, front) in [
        ("127.0.57.1", "127.0.57.2", "apache mod_proxy"),
        ("127.0.57.3", "127.0.57.4", "haproxy"),
    ] {
        let hosts = names(&format!("bk{}x", front_ip.replace('.', "")), 12);
        let backend = Nginx::start(&[Site {
            ip: backend_ip.into(),
            rate: 1000,
            burst: 1000,
            nodelay: true,
            conn: 512,
            status: 503,
            hosts: hosts.clone(),
        }]);
        let to = format!("{backend_ip}:{}", backend.port);
        let (port, _front): (u16, Box<dyn std::any::Any>) = if front == "haproxy" {
            let h = Haproxy::in_front_of(front_ip, &to);
            (h.port, Box::new(h))
        } else {
            let a = Apache::proxy(front_ip, &hosts, &to);
            (a.port, Box::new(a))
        };
        let s = settings(&format!(
            "{}[probe]\nretry_delay = \"500ms\"\n[rate_limit]\nbackoff = \"2s\"\n\
             limit_memory = \"6s\"\n\
             [[rate_limit.override]]\ncidr = \"{front_ip}/32\"\nrate = 10.0\nburst = 10\n\
             max_inflight = 8\n",
            static_dns(&hosts, front_ip),
        ));
        let engine = engine(&s);
        let urls: Vec<String> = hosts
            .iter()
            .map(|h| format!("http://{h}:{port}/"))
            .collect();
        assert_all_up(&round(&engine, &urls).await, front);
        drop(backend);
        // Let haproxy's check see the server gone (Apache finds out at the next request).
        tokio::time::sleep(Duration::from_millis(1200)).await;
        for r in round(&engine, &urls).await {
            assert_eq!(
                (r.verdict, r.reason.as_str()),
                (Verdict::Down, "http_status"),
                "{front}: {}: {}",
                r.url,
                r.detail
            );
            assert!(r.detail.contains("503"), "{front}: {}", r.detail);
        }
    }
}

/// A few sites of a shared server broken beside working ones (a deleted index's 403, a
/// dead pool's 503), checked round after round as a monitor does. Several hosts of one
/// IP refusing right after it answered look like a limit refusing us, and the IP is held
/// once; but the same hosts refusing again after the hold while their neighbours answer
/// must not step the hold up round after round, halving the IP's rate until every
/// working neighbour waits minutes. Working sites stay `up`, broken ones are never `up`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_sites_beside_working_ones_never_starve_their_neighbours() {
    // Two servers of their own, checked side by side: the test waits out holds, and
    // waiting for both at once halves its time.
    tokio::join!(
        broken_beside_working("127.0.57.6", 403),
        broken_beside_working("127.0.57.7", 503)
    );
}

/// Four rounds over 12 hosts of `ip`, three of which answer `status`.
async fn broken_beside_working(ip: &str, status: u16) {
    let hosts = names(&format!("sf{status}x"), 12);
    let failing = &hosts[6..9];
    let nginx = Nginx::some_failing(ip, &hosts, failing, status);
    let s = settings(&format!(
        "{}[probe]\nretry_delay = \"300ms\"\n[rate_limit]\nbackoff = \"2s\"\n\
         [[rate_limit.override]]\ncidr = \"{ip}/32\"\nrate = 10.0\nburst = 4\n\
         max_inflight = 8\n",
        static_dns(&hosts, ip)
    ));
    let engine = engine(&s);
    let urls = urls_of(&hosts, nginx.port);
    let mut highest = [0; 4];
    for (round_no, top) in highest.iter_mut().enumerate() {
        let started = std::time::Instant::now();
        for (h, r) in hosts.iter().zip(&round(&engine, &urls).await) {
            eprintln!(
                "{status} round {round_no} ({:?}): {h} {:?}/{}: {}",
                started.elapsed(),
                r.verdict,
                r.reason,
                r.detail
            );
            if failing.contains(h) {
                assert_ne!(r.verdict, Verdict::Up, "{status}: {h}: {}", r.detail);
            } else {
                assert_eq!(r.verdict, Verdict::Up, "{status}: {h}: {}", r.detail);
            }
            *top = (*top).max(level_named(&r.detail));
        }
    }
    // The first rounds may step up while the broken hosts' second asks come before
    // any neighbour has answered since the hold; after them, no more.
    let first = highest[0].max(highest[1]);
    assert!(
        highest[2..].iter().all(|&l| l <= first),
        "{status}: stepped up round after round for the same broken hosts: {highest:?}"
    );
}

/// The highest back-off level a detail names ("back-off level N"), 0 for none.
fn level_named(detail: &str) -> u32 {
    detail
        .split("back-off level ")
        .skip(1)
        .filter_map(|rest| {
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .and_then(|n| n.parse().ok())
        })
        .max()
        .unwrap_or(0)
}

/// A plain target on `ip` for the egress tests (proxies resolve names themselves, so
/// these use the address).
async fn plain_target(ip: &str) -> String {
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(|| async {
            axum::response::Html(crate::support::real::page("egress target"))
        }),
    );
    let addr = serve(ip, router).await;
    format!("http://{addr}/")
}

fn egress_settings(egresses: &[(&str, &str)]) -> Settings {
    let mut toml = String::from("[probe]\nretry_delay = \"200ms\"\n");
    for (name, proxy) in egresses {
        if proxy.is_empty() {
            toml.push_str(&format!("[[egress]]\nname = \"{name}\"\n"));
        } else {
            toml.push_str(&format!(
                "[[egress]]\nname = \"{name}\"\nproxy = \"{proxy}\"\n"
            ));
        }
    }
    settings(&toml)
}

/// A SOCKS5 proxy that asks for a login the egress URL does not give refuses every
/// way picket offers: the egress failing, said as that (hyper-util's words, "server does
/// not support user/pass authentication", said the opposite).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socks_proxy_asking_for_a_login_the_egress_lacks_says_so() {
    let target = plain_target("127.0.63.41").await;
    let socks = Microsocks::with_login("127.0.63.40", "probe", "s3cret");
    let without = format!("socks5://{}", socks.addr);
    let with = format!("socks5://probe:s3cret@{}", socks.addr);
    let r = round(
        &engine(&egress_settings(&[("socks", &without)])),
        std::slice::from_ref(&target),
    )
    .await
    .remove(0);
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "egress_unavailable"),
        "{}",
        r.detail
    );
    assert!(r.detail.contains("asks for a login"), "{}", r.detail);
    let r = round(&engine(&egress_settings(&[("socks", &with)])), &[target])
        .await
        .remove(0);
    assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn squid_and_dante_carry_probes_and_their_refusals_never_make_a_site_down() {
    let target = plain_target("127.0.12.9").await;
    let squid = Squid::start("127.0.12.6", false);
    let squid_deny = Squid::start("127.0.12.7", true);
    let dante = Dante::start("127.0.12.8", false);
    let dante_deny = Dante::start("127.0.12.11", true);
    let dead = format!("http://127.0.12.10:{}", free_port());
    // (what, egresses as (name, proxy URL or "" for direct), the verdict wanted or None
    // for "anything but down")
    type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<Verdict>);
    let cases: Vec<Case> = vec![
        (
            "squid",
            vec![("squid", squid.url.as_str())],
            Some(Verdict::Up),
        ),
        (
            "dante",
            vec![("dante", dante.url.as_str())],
            Some(Verdict::Up),
        ),
        (
            "squid refusing",
            vec![("deny", squid_deny.url.as_str())],
            None,
        ),
        (
            "squid refusing, then direct",
            vec![("deny", squid_deny.url.as_str()), ("direct", "")],
            None,
        ),
        (
            "dante refusing",
            vec![("deny", dante_deny.url.as_str())],
            None,
        ),
        ("dead proxy", vec![("dead", dead.as_str())], None),
    ];
    for (what, egresses, want) in cases {
        let s = egress_settings(&egresses);
        let engine = engine(&s);
        let r = round(&engine, std::slice::from_ref(&target))
            .await
            .remove(0);
        eprintln!("{what}: {:?}/{}: {}", r.verdict, r.reason, r.detail);
        match want {
            Some(v) => assert_eq!(r.verdict, v, "{what}: {}", r.detail),
            None => assert_ne!(
                r.verdict,
                Verdict::Down,
                "{what}: {}/{}",
                r.reason,
                r.detail
            ),
        }
    }
    assert!(
        squid_deny
            .daemon
            .read("access.log")
            .contains("TCP_DENIED/403"),
        "the refusing squid was asked and refused"
    );
}

/// Every report is `up`, or `unknown/blocked` naming `status`: never `down`.
fn assert_never_down(reports: &[Report], status: &str, what: &str) -> usize {
    let mut up = 0;
    for r in reports {
        eprintln!(
            "{what}: {} {:?}/{}: {}",
            r.url, r.verdict, r.reason, r.detail
        );
        match r.verdict {
            Verdict::Up => up += 1,
            Verdict::Unknown if r.reason == "blocked" => {
                // `status` may list words apart by `|`, any of which names the refusal.
                let named = status.split('|').any(|word| r.detail.contains(word));
                assert!(named, "{what}: {}", r.detail);
            }
            _ => panic!(
                "{what}: {} is {:?}/{}: {}\nattempts: {:#?}",
                r.url, r.verdict, r.reason, r.detail, r.attempt_log
            ),
        }
    }
    up
}

/// mod_qos's per-client request limit (`QS_ClientEventLimitCount`, Debian's
/// libapache2-mod-qos) refuses a client over it with its default status, **500**, on
/// every host of the server, the others served: a limit refusing us, as a 403 or 503
/// storm is, never the sites failing (review AG: 8 and 11 of 30 hosts `down/http_status`
/// "500 Internal Server Error … (confirmed by 2 attempts)", each serving curl from
/// another address at once).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mod_qos_client_limit_refusing_with_500_is_never_down() {
    let ip = "127.0.12.76";
    let hosts = names("qos", 12);
    let apache = Apache::qos(ip, &hosts, 6, 10);
    let s = settings(&format!(
        "{}[probe]\nretry_delay = \"500ms\"\n[rate_limit]\nbackoff = \"5s\"\n\
         [[rate_limit.override]]\ncidr = \"{ip}/32\"\nrate = 4.0\nburst = 4\nmax_inflight = 2\n",
        static_dns(&hosts, ip)
    ));
    let engine = engine(&s);
    let reports = round(&engine, &urls_of(&hosts, apache.port)).await;
    let hits = apache.hits();
    let refused = hits.with_status(500);
    report_line(
        "apache2 mod_qos QS_ClientEventLimitCount 6 10, picket 4/s burst 4",
        &hits,
        refused,
    );
    assert!(
        refused > 0,
        "the limit never refused: the test proves nothing"
    );
    assert_never_down(&reports, "500", "mod_qos limit");
}

/// The tutorials' iptables flood defence on a shared server (`recent`: a client that
/// opened 8 connections within 15 s has every new one dropped, and each one dropped
/// counts, so the ban lasts until the client stays away 15 s), tripped by an override
/// of 4/s: connections time out on every host right after it answered us. That is a
/// ban of us for as long as we keep knocking, never the sites down (review AG: with
/// `--seconds 60 --hitcount 20`, 9 of 30 hosts `down/timeout`, each serving curl from
/// another address: after one hold, timeouts were taken for the sites' own).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iptables_recent_ban_dropping_our_connections_is_never_down() {
    never_down_behind("127.0.12.77", "recent", RecentBan::dropping, "dropped").await;
}

/// The same ban refusing our connections (`-j REJECT`): every host's connection is
/// refused at once, as a server that stopped listening refuses it, and each refused
/// one lengthens the ban (review AG: 11 of 11 refused hosts `down/connect`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_iptables_recent_ban_rejecting_our_connections_is_never_down() {
    never_down_behind("127.0.12.80", "recentrej", RecentBan::rejecting, "refused").await;
}

/// 12 hosts named after `prefix` on nginx at `ip` behind `ban` (8 connections in 15 s),
/// checked in one round at 4/s: it turned some away, and no site is `down`, some `up`.
async fn never_down_behind(
    ip: &str,
    prefix: &str,
    ban: fn(&str, u16, u32, u32) -> RecentBan,
    how: &str,
) {
    let hosts = &names(prefix, 12);
    let nginx = Nginx::some_failing(ip, hosts, &[], 200);
    let ban = ban(ip, nginx.port, 8, 15);
    let s = settings(&format!(
        "{}[probe]\nretry_delay = \"500ms\"\nconnect_timeout = \"2s\"\n\
         [rate_limit]\nbackoff = \"5s\"\ndrop_memory = \"15s\"\n\
         [[rate_limit.override]]\ncidr = \"{ip}/32\"\nrate = 4.0\nburst = 4\nmax_inflight = 2\n",
        static_dns(hosts, ip)
    ));
    let reports = round(&engine(&s), &urls_of(hosts, nginx.port)).await;
    let turned = ban.turned_away();
    eprintln!("iptables recent: {turned} connections {how}");
    assert!(
        turned > 0,
        "the ban never {how} any: the test proves nothing"
    );
    let down: Vec<String> = reports
        .iter()
        .inspect(|r| eprintln!("{} {:?}/{}: {}", r.url, r.verdict, r.reason, r.detail))
        .filter(|r| r.verdict == Verdict::Down)
        .map(|r| format!("{} {}: {}", r.url, r.reason, r.detail))
        .collect();
    assert!(
        down.is_empty(),
        "a ban of us taken for the sites down:\n{}",
        down.join("\n")
    );
    assert!(reports.iter().any(|r| r.verdict == Verdict::Up));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_mod_evasive_is_backed_off_and_asked_again_never_down() {
    tripped_mod_evasive("127.0.12.12", "trip", "").await;
}

/// `probe.attempts = 1`: every site is asked once and no `down` is confirmed. The first
/// host a defence refuses is judged before a second host's refusal makes it a storm of
/// us: in every run, one host of each round was `down` ("403 Forbidden" from
/// mod_evasive, nginx's 503, "connection closed before message completed" for its 444).
/// A failure a defence refusing our burst gives, right after its IP answered us a
/// burst, is confirmed once all the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_mod_evasive_with_one_attempt_is_never_down() {
    tripped_mod_evasive("127.0.12.15", "tripone", "attempts = 1\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_nginx_with_one_attempt_is_never_down() {
    tripped_nginx("127.0.12.16", 503, "503", "attempts = 1\n").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_nginx_closing_with_one_attempt_is_never_down() {
    tripped_nginx(
        "127.0.12.17",
        444,
        "closed without an answer",
        "attempts = 1\n",
    )
    .await;
}

/// mod_evasive on `ip` tripped by an override of 4/s for 12 hosts named after `prefix`,
/// with `probe` (lines of `[probe]`): none `down`, most `up` after the hold.
async fn tripped_mod_evasive(ip: &str, prefix: &str, probe: &str) {
    let hosts = names(prefix, 12);
    // Tighter than the operator's override below: 4/s with a burst of 4 sends a fifth
    // request for `/` within the first second; half of it (2/s) fits.
    let evasive = Evasive {
        page_count: 3,
        site_count: 50,
        blocking_period: 2,
    };
    let apache = Apache::evasive(ip, &hosts, evasive);
    let s = settings(&format!(
        "{}[probe]\nretry_delay = \"500ms\"\n{probe}[rate_limit]\nbackoff = \"5s\"\n\
         [[rate_limit.override]]\ncidr = \"{ip}/32\"\nrate = 4.0\nburst = 4\nmax_inflight = 4\n",
        static_dns(&hosts, ip)
    ));
    let engine = engine(&s);
    let urls: Vec<String> = hosts
        .iter()
        .map(|h| format!("http://{h}:{}/", apache.port))
        .collect();
    let reports = round(&engine, &urls).await;
    let hits = apache.hits();
    let refused = hits.with_status(403);
    report_line(
        "apache2 mod_evasive DOSPageCount 3, picket 4/s burst 4",
        &hits,
        refused,
    );
    assert!(
        refused > 0,
        "the defence never tripped: the test proves nothing"
    );
    let up = assert_never_down(&reports, "403", "mod_evasive tripped");
    assert!(
        up >= hosts.len() / 2,
        "only {up} of {} up after the hold",
        hosts.len()
    );
    // The hold: after the refusals began nothing reached the server for a while.
    let mut t: Vec<u64> = hits.all.iter().map(|h| h.0).collect();
    t.sort_unstable();
    let longest = t.windows(2).map(|w| w[1] - w[0]).max().unwrap_or(0);
    assert!(
        longest >= 4_000_000,
        "no hold of the IP seen (longest gap {longest} µs)"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_nginx_limit_req_is_backed_off_and_asked_again_never_down() {
    tripped_nginx("127.0.12.13", 503, "503", "").await;
}

/// `limit_req_status 444`, as many hardening guides set it: nginx closes the connection
/// of a refused request without a word, which reads as a site that closed before
/// answering. Right after the IP answered us, from several hosts, it is a refusal of
/// us too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tripped_nginx_closing_without_an_answer_is_backed_off_never_down() {
    tripped_nginx("127.0.12.14", 444, "closed without an answer", "").await;
}

/// nginx on `ip` at 3r/s without burst, refusing with `status`, for 12 hosts named
/// after `prefix`.
fn strict_nginx(ip: &str, status: u16, prefix: &str) -> (Site, Nginx) {
    let site = Site {
        ip: ip.into(),
        rate: 3,
        burst: 0,
        nodelay: false,
        conn: 8,
        status,
        hosts: names(prefix, 12),
    };
    let nginx = Nginx::start(std::slice::from_ref(&site));
    (site, nginx)
}

/// One round over `hosts` of `ip` on `port` by an engine that trips the defences there:
/// an override of 10/s with a burst of 10, the IP held `backoff` when it refuses us,
/// `probe` (lines of `[probe]`), and `tail` (more tables) last.
async fn round_over_the_limit(
    hosts: &[String],
    (ip, port): (&str, u16),
    probe: &str,
    backoff: &str,
    tail: &str,
) -> Vec<Report> {
    let s = settings(&over_the_limit(hosts, ip, probe, backoff, tail));
    round(&engine(&s), &urls_of(hosts, port)).await
}

/// The settings of [`round_over_the_limit`] after the `[dns.static]` of `hosts`.
fn over_the_limit(hosts: &[String], ip: &str, probe: &str, backoff: &str, tail: &str) -> String {
    format!(
        "{}[probe]\nretry_delay = \"500ms\"\n{probe}[rate_limit]\nbackoff = \"{backoff}\"\n\
         [[rate_limit.override]]\ncidr = \"{ip}/32\"\nrate = 10.0\nburst = 10\nmax_inflight = 8\n\
         {tail}",
        static_dns(hosts, ip),
    )
}

/// The home page of each of `hosts` on `port`.
fn urls_of(hosts: &[String], port: u16) -> Vec<String> {
    hosts
        .iter()
        .map(|h| format!("http://{h}:{port}/"))
        .collect()
}

/// nginx at 3r/s without burst, refusing with `status`, under an override of 10/s: the
/// defence trips, and no site is down (`said` is in the detail of those held).
async fn tripped_nginx(ip: &str, status: u16, said: &str, probe: &str) {
    let prefix = format!(
        "trip{status}ngx{}",
        if probe.is_empty() { "" } else { "one" }
    );
    let (site, nginx) = strict_nginx(ip, status, &prefix);
    let reports = round_over_the_limit(&site.hosts, (ip, nginx.port), probe, "2s", "").await;
    let hits = nginx.hits();
    let refused = hits.with_status(status);
    report_line(
        &format!("nginx limit_req 3r/s status {status}, picket 10/s burst 10"),
        &hits,
        refused,
    );
    assert!(
        refused > 0,
        "the defence never tripped: the test proves nothing"
    );
    let up = assert_never_down(&reports, said, "limit_req tripped");
    assert!(
        up >= site.hosts.len() / 2,
        "only {up} of {} up",
        site.hosts.len()
    );
}

/// nginx's `limit_req` answering what it refuses with its own "Too many requests" page
/// and a 200 (`error_page 429 =200 /busy.html`), tripped by an override of 10/s, jobs
/// looking for the sites' own word: the limit's page lacks it, and is no site's page
/// (review AG: 1 of 20 and 2 of 12 `down/body_mismatch`); it is a refusal of us, which
/// holds the IP as a 429 would (before, 11 of 12 `unknown/blocked`, the IP asked on at
/// our pace).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_nginx_limit_answering_its_page_with_200_is_never_down() {
    let ip = "127.0.12.79";
    let hosts = names("busy", 12);
    let nginx = Nginx::limiting_with_a_page_of_200(ip, &hosts, 3);
    let s = settings(&over_the_limit(&hosts, ip, "", "2s", ""));
    let engine = engine(&s);
    let tasks: Vec<_> = urls_of(&hosts, nginx.port)
        .into_iter()
        .map(|u| {
            let engine = engine.clone();
            let mut job = picket::job::job_for_url(&u, "busy").expect("job");
            job.expect.body_contains = Some("Welcome".into());
            tokio::spawn(async move { engine.run(&job).await })
        })
        .collect();
    let mut reports = Vec::new();
    for t in tasks {
        reports.push(t.await.expect("check task"));
    }
    let said = "rate limit's page|200 block pages";
    let up = assert_never_down(&reports, said, "limit page of 200");
    let hits = nginx.hits();
    report_line(
        "nginx limit_req 3r/s, its page with 200, picket 10/s",
        &hits,
        0,
    );
    assert!(
        hits.all.len() > reports.len(),
        "no request was asked again: the limit never answered its page"
    );
    // Told to the limiter as a refusal, a storm of them holds the IP and each request
    // is asked again after the hold, as after a 429 storm: most get their page.
    assert!(up >= hosts.len() / 2, "only {up} of {} up", hosts.len());
}

/// The OWASP CRS's DoS protection, as operators turn it on in crs-setup.conf, blocks a
/// client that made two bursts by dropping its connections without an answer (rule
/// 912120's `drop`) for `tx.dos_block_timeout` (600 s in crs-setup's example): every
/// host of the IP closes at once, right after answering us, and goes on closing long
/// after one hold of ours. That is a ban of us, not the sites failing: none may be
/// `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modsecurity_dos_block_dropping_us_is_never_down() {
    let ip = "127.0.12.50";
    let hosts = names("crsdos", 12);
    let dos = Dos {
        threshold: 2,
        slice_s: 60,
        block_s: 30,
    };
    let apache = Apache::waf_dos(ip, &hosts, dos);
    let s = settings(&format!(
        "{}[probe]\nretry_delay = \"500ms\"\n[rate_limit]\nbackoff = \"2s\"\n\
         [[rate_limit.override]]\ncidr = \"{ip}/32\"\nrate = 10.0\nburst = 10\nmax_inflight = 2\n",
        static_dns(&hosts, ip),
    ));
    let engine = engine(&s);
    let urls: Vec<String> = hosts
        .iter()
        .map(|h| format!("http://{h}:{}/", apache.port))
        .collect();
    let reports = round(&engine, &urls).await;
    let errors = apache.errors();
    let dropped = errors
        .matches("Access denied with connection close")
        .count();
    report_line(
        "apache2 ModSecurity CRS DoS protection, 2 bursts of 2 in 60 s, block 30 s",
        &apache.hits(),
        dropped,
    );
    assert!(
        dropped > 0,
        "the defence never tripped: the test proves nothing"
    );
    assert_never_down(&reports, "closed without an answer", "CRS DoS block");
    assert!(
        reports
            .iter()
            .any(|r| r.detail.contains("outlasting our hold")),
        "no site was asked again while the block lasted: the test proves nothing"
    );
}

/// Hunt 98: the same CRS block, 15 s, lapses while our holds add up and comes back
/// with the first request it serves then (the burst counter outlives it). A question
/// to a neighbour that waited out a hold was answered in such a lapse, 12 and 17 s
/// after the refusals it was to judge, and a working site was `down` (3 of 13 first
/// checks of a fresh server): "crs7 … answered right then, as one did after crs10's
/// refusal before: … crs10's refusal is its own". A neighbour is asked right then or
/// not at all; no site may be `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_modsecurity_dos_block_lapsing_during_our_holds_is_never_down() {
    let ip = "127.0.12.107";
    let hosts = names("crslapse", 12);
    let dos = Dos {
        threshold: 2,
        slice_s: 60,
        block_s: 15,
    };
    let apache = Apache::waf_dos(ip, &hosts, dos);
    let s = settings(&format!(
        "{}[probe]\nretry_delay = \"500ms\"\n[rate_limit]\nbackoff = \"2s\"\n\
         [[rate_limit.override]]\ncidr = \"{ip}/32\"\nrate = 10.0\nburst = 10\nmax_inflight = 2\n",
        static_dns(&hosts, ip),
    ));
    let reports = round(&engine(&s), &urls_of(&hosts, apache.port)).await;
    let dropped = apache
        .errors()
        .matches("Access denied with connection close")
        .count();
    report_line(
        "apache2 ModSecurity CRS DoS protection, 2 bursts of 2 in 60 s, block 15 s",
        &apache.hits(),
        dropped,
    );
    assert!(
        dropped > 0,
        "the defence never tripped: the test proves nothing"
    );
    let said: Vec<String> = reports
        .iter()
        .map(|r| format!("{} {:?}/{}: {}", r.url, r.verdict, r.reason, r.detail))
        .collect();
    eprintln!("{said:#?}");
    assert!(
        reports.iter().all(|r| r.verdict != Verdict::Down),
        "a block of us is no site down: {said:#?}"
    );
}

/// fail2ban's `nginx-limit-req` jail, as operators run it beside nginx, bans the client
/// whose requests nginx refused, with an iptables rule that drops its connections: every
/// host of the IP then times out. That follows our tripping the limit; it is not the
/// sites failing, and none may be `down` for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail2ban_ban_dropping_us_after_a_tripped_limit_is_never_down() {
    banned_after_nginx("127.0.56.1", Block::Drop, None).await;
}

/// The same ban with fail2ban's default blocktype, REJECT: every connection is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail2ban_ban_rejecting_us_after_a_tripped_limit_is_never_down() {
    banned_after_nginx("127.0.56.2", Block::Reject, None).await;
}

/// The same bans of an HTTP proxy egress, which reports them (`ERR_CONNECT_FAIL 111`
/// and `110`, squid's connect timeout being 1 s here) instead of our seeing them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fail2ban_ban_of_our_proxy_after_a_tripped_limit_is_never_down() {
    banned_after_nginx("127.0.56.6", Block::Reject, Some("127.0.56.7")).await;
    banned_after_nginx("127.0.56.8", Block::Drop, Some("127.0.56.9")).await;
}

/// How long the fail2ban bans of these tests last. Operators' are longer (fail2ban's
/// default is 10 minutes), but a longer ban only holds the IP longer: its holds double
/// while the ban answers for it (`limit::standing`), so a round waited out a 120 s ban
/// in 4 + 8 + 16 + 32 + 64 s of holds. 15 s still outlasts the first hold of 4 s, so
/// sites are asked again into the ban.
const BAN_S: u32 = 15;

/// nginx at 3r/s refusing with 503 under an override of 10/s, and fail2ban banning on
/// the second refusal it reads, with `block`; the probes go through a squid started on
/// `proxy`, or straight. No site is `down`; those asked while the ban lasts are
/// `unknown/blocked`, named as a ban that follows the tripped limit.
async fn banned_after_nginx(ip: &str, block: Block, proxy: Option<&str>) {
    let (site, nginx) = strict_nginx(ip, 503, &format!("ban{}", ip.replace('.', "")));
    let fail2ban = Fail2ban::nginx_limit_req(
        &nginx.daemon.dir.join("error.log"),
        ip,
        nginx.port,
        block,
        2,
        BAN_S,
    );
    let squid = proxy.map(|at| Squid::start(at, false));
    // Through squid its own report comes first (its connect timeout is 1 s).
    let (timeout, egress) = match &squid {
        None => ("connect_timeout = \"1s\"\n", String::new()),
        Some(squid) => (
            "connect_timeout = \"3s\"\n",
            format!("[[egress]]\nname = \"squid\"\nproxy = \"{}\"\n", squid.url),
        ),
    };
    // The hold outlasts fail2ban's reaction (it polls the log each second), as the
    // default 15 s does: the refused requests are asked again into the ban.
    let at = (ip, nginx.port);
    let reports = round_over_the_limit(&site.hosts, at, timeout, "4s", &egress).await;
    let hits = nginx.hits();
    report_line(
        &format!("nginx limit_req 3r/s, fail2ban {block:?} on the 2nd refusal"),
        &hits,
        hits.with_status(503),
    );
    assert!(
        fail2ban.bans() > 0,
        "fail2ban never banned: the test proves nothing"
    );
    assert_never_down(&reports, ip, &format!("{block:?}"));
    // Held as the ban, or asked again after the hold once the ban was over: either
    // names the ban as following the server's refusal. Or turned away by the ban on one
    // attempt (its connection refused or not made: nginx itself is up throughout) and
    // answered on the next, the ban just over: under load the round can meet only the
    // ban's last moments (the CI of 91792c3: two sites so, none named it).
    let met_the_ban = |r: &&Report| {
        r.detail.contains("after it refused us with")
            || r.attempt_log
                .iter()
                .any(|a| matches!(a.reason, Reason::Connect | Reason::Timeout))
    };
    let banned = reports.iter().filter(met_the_ban).count();
    assert!(
        banned > 0,
        "no site was asked during the ban: the test proves nothing"
    );
}

/// The `http-get-dos` jail of fail2ban tutorials counts every request a client makes and
/// bans it at one a second sustained (300 in 300 s; here 12 in 12 s, the tutorials'
/// ratio). Checking a shared server's sites at the default limits must stay under it:
/// a ban shows nothing before it (no refusal, just every connection refused), so with
/// one egress the sites checked during it would be reported `down`, all at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_default_limits_stay_under_a_fail2ban_jail_counting_requests() {
    let ip = "127.0.57.9";
    let hosts = names("getdos", 20);
    let nginx = Nginx::some_failing(ip, &hosts, &[], 200);
    let fail2ban = Fail2ban::http_get_dos(
        &nginx.daemon.dir.join("combined.log"),
        (ip, nginx.port),
        12,
        12,
        120,
    );
    let s = settings(&static_dns(&hosts, ip));
    let engine = engine(&s);
    let urls: Vec<String> = hosts
        .iter()
        .map(|h| format!("http://{h}:{}/", nginx.port))
        .collect();
    let reports = round(&engine, &urls).await;
    let hits = nginx.hits();
    report_line("nginx with fail2ban http-get-dos 12 in 12 s", &hits, 0);
    assert_all_up(&reports, "fail2ban http-get-dos");
    assert_eq!(fail2ban.bans(), 0, "fail2ban banned us");
}

/// haproxy's stick-table rate limits, as its operators write them: over 3 requests a
/// second from one client, each `limit` turns it away in its own way, on every host of
/// the IP at once. Right after the IP answered us, that is a refusal of us: no site is
/// `down`, and those refused are asked again after the hold where the time allows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_rate_limits_turning_us_away_are_never_down() {
    for (ip, limit) in [
        ("127.0.56.3", Limit::Reject),
        ("127.0.56.4", Limit::ConnectionReject),
        ("127.0.56.5", Limit::SilentDrop),
        ("127.0.56.10", Limit::Tarpit),
    ] {
        let haproxy = Haproxy::rate_limited(ip, 3, limit);
        let hosts = names(&format!("hx{}", ip.replace('.', "")), 12);
        let timeout = "timeout = \"3s\"\n";
        let reports = round_over_the_limit(&hosts, (ip, haproxy.port), timeout, "2s", "").await;
        // Those held name the IP; a tarpit's 500 is haproxy's own page.
        let said = if matches!(limit, Limit::Tarpit) {
            "haproxy"
        } else {
            ip
        };
        let up = assert_never_down(&reports, said, &format!("{limit:?}"));
        let tripped = reports.iter().any(|r| {
            r.detail
                .contains(&format!("hosts of {ip} right after it answered us"))
                || r.detail.contains("haproxy")
        });
        assert!(
            tripped,
            "{limit:?}: the limit never tripped: the test proves nothing"
        );
        eprintln!("{limit:?}: {up} of {} up", hosts.len());
        if matches!(
            limit,
            Limit::Reject | Limit::ConnectionReject | Limit::Tarpit
        ) {
            // Asked again after the hold, when the limit lets requests through again: a
            // tarpit's 500 is a refusal by haproxy's own page, read before the limiter
            // is told. More up than the limit lets through at once shows the asking
            // again; how many more the 3 s allow depends on the machine's load (half
            // of 12 was asked before, and a loaded CI run had 5).
            assert!(
                up > 3,
                "{limit:?}: only {up} of {} up: none asked again after the hold",
                hosts.len()
            );
        }
    }
}

/// A limit still refusing an earlier burst from our address when a process starts (a
/// second `picket check` right after the first, another client on our egress, or a
/// worker whose standing of the IP is gone): its first requests to the IP are refused
/// on every host before any answer, so no refusal follows an answer and none was taken
/// for a refusal of us. Review AE: every host `down` with one attempt, "503 Service
/// Unavailable … after 3 ms" (haproxy's `deny_status 503` over a one-second rate),
/// "connection reset by the server" (`tcp-request connection reject`), nginx's 503;
/// curl from another address had 200 from each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_still_refusing_when_a_process_starts_is_never_down() {
    for (ip, limit) in [
        ("127.0.12.18", Some(Limit::Deny503)),
        ("127.0.12.19", Some(Limit::ConnectionReject)),
        ("127.0.12.20", None),
    ] {
        let prefix = format!("fresh{}", ip.replace('.', ""));
        let hosts = names(&prefix, 12);
        let (port, _server): (u16, Box<dyn std::any::Any>) = match limit {
            Some(limit) => {
                let haproxy = Haproxy::rate_limited(ip, 3, limit);
                (haproxy.port, Box::new(haproxy))
            }
            None => {
                let (_, nginx) = strict_nginx(ip, 503, &prefix);
                (nginx.port, Box::new(nginx))
            }
        };
        let what = format!("{limit:?} on {ip}");
        let s = settings(&over_the_limit(&hosts, ip, "attempts = 1\n", "2s", ""));
        let engine = engine(&s);
        let tripped = burst_from_here(ip, port, &hosts[0], 12).await;
        assert!(tripped > 0, "{what}: our own burst tripped nothing");
        let reports = round(&engine, &urls_of(&hosts, port)).await;
        let up = assert_never_down(&reports, ip, &what);
        eprintln!("{what}: {up} of {} up", hosts.len());
    }
}

/// With one attempt, a 503 to our first request to an IP that served us nothing lately
/// is confirmed once: a limit still counting an earlier burst (another process's, our
/// own last run's) refuses exactly so, and the other requests of ours that would show
/// it a storm may not have gone out yet (a busy machine: the full suite once had
/// `a_limit_still_refusing_when_a_process_starts_is_never_down` down, one attempt,
/// "503 Service Unavailable … after 6 ms"). A site failing alone on its IP is asked
/// twice, and is `down` then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_of_our_first_request_to_a_quiet_ip_is_confirmed_once() {
    let ip = "127.0.12.25";
    let hosts = names("alone503x", 1);
    let nginx = Nginx::some_failing(ip, &hosts, &hosts, 503);
    let s = settings(&format!(
        "{}[probe]\nretry_delay = \"500ms\"\nattempts = 1\n[rate_limit]\nbackoff = \"2s\"\n",
        static_dns(&hosts, ip),
    ));
    let engine = engine(&s);
    let reports = round(&engine, &urls_of(&hosts, nginx.port)).await;
    let r = &reports[0];
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "http_status"),
        "{}",
        r.detail
    );
    assert_eq!(r.attempt_log.len(), 2, "{:#?}", r.attempt_log);
}

/// A limit whose memory outlasts our hold: haproxy's `deny_status 503` over a
/// ten-second rate, tripped by our burst after it answered three hosts. After a hold
/// of 2 s it still refuses, and no host of the IP has answered since: the rule for a
/// shared server whose backend died made each 503 the site's. Review AE (finding 4)
/// and AF (finding 1): 9 of 12 working sites `down`, "503 Service Unavailable (expected
/// 2xx or 3xx) after 1 ms (confirmed by 2 attempts)"; curl from another address had 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_remembering_longer_than_our_hold_is_never_down() {
    let ip = "127.0.12.24";
    let hosts = names("tenwin", 12);
    let haproxy = Haproxy::rate_limited(ip, 3, Limit::Deny503Over10s);
    let s = settings(&over_the_limit(&hosts, ip, "attempts = 1\n", "2s", ""));
    let engine = engine(&s);
    let reports = round(&engine, &urls_of(&hosts, haproxy.port)).await;
    let up = assert_never_down(&reports, "503", "a ten-second limit");
    eprintln!("a ten-second limit: {up} of {} up", hosts.len());
}

/// The same ten-second limit answering its 503 with `Retry-After` (haproxy's `deny ...
/// hdr Retry-After`, as operators add so that polite clients come back later). A 503
/// asking a pause is what a site in maintenance answers too, and its own word confirmed
/// its `down` once the storm's hold was over. Review AF (finding 6): 4 of 12 working
/// sites `down` with `Retry-After: 10`, 1 of 12 with 120 ("it asks to be left alone for
/// 10 s … its own word confirms it"); curl from another address had 200. Here, before
/// the fix: "pausewin11 … Down/http_status: 503 Service Unavailable (expected 2xx or
/// 3xx) after 19 ms", asked again after the storm's hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_asking_a_short_pause_is_never_down() {
    a_limit_asking_a_pause("127.0.12.26", "pausewin", 10).await;
}

/// The same asking two minutes, longer than any probe waits: the hosts it refuses are
/// `unknown/blocked`, never `down`. Before the fix (about one run in three):
/// "pauselong11 … Down/http_status: 503 … after 47 ms; it asks to be left alone for
/// 120 s (Retry-After) …: its own word confirms it", refused amid our burst before the
/// burst's third 200 came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_asking_a_long_pause_is_never_down() {
    a_limit_asking_a_pause("127.0.12.27", "pauselong", 120).await;
}

/// haproxy at 3 requests per 10 s on `ip` refusing with a 503 asking `secs` s, 12 hosts
/// named from `prefix`, picket over the limit with one attempt: none `down`.
async fn a_limit_asking_a_pause(ip: &str, prefix: &str, secs: u32) {
    let hosts = names(prefix, 12);
    let haproxy = Haproxy::rate_limited(ip, 3, Limit::Deny503AskingPause(secs));
    let s = settings(&over_the_limit(&hosts, ip, "attempts = 1\n", "2s", ""));
    let reports = round(&engine(&s), &urls_of(&hosts, haproxy.port)).await;
    let what = format!("a limit asking {secs} s");
    let up = assert_never_down(&reports, "503|Retry-After", &what);
    eprintln!("{what}: {up} of {} up", hosts.len());
}

/// nginx's `limit_req` with a `burst` and no `nodelay`, as its documentation's first
/// example sets it: what comes faster than the rate waits in nginx's queue, each request
/// released half a second after the one before at 2r/s, and answered then. The wait is
/// the limit's, not the site's, and none of these sites is slow: each answers at once
/// when asked alone. Review AE: with `max_latency` 2 s, 6 of 12 `degraded/slow`, "200
/// OK, 216 bytes in 4000 ms (more than 2000 ms)", in both rounds, where curl from
/// another address had the page in 2 ms.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_in_a_delaying_limits_queue_is_not_the_sites() {
    let ip = "127.0.12.21";
    let (site, nginx) = delaying_nginx(ip, "queued");
    let probe = DELAYING_PROBE;
    let reports = round_over_the_limit(&site.hosts, (ip, nginx.port), probe, "2s", "").await;
    let delayed = reports.iter().filter(|r| r.verdict != Verdict::Up).count();
    for r in &reports {
        eprintln!(
            "a delaying limit: {} {:?}/{}: {}",
            r.url, r.verdict, r.reason, r.detail
        );
    }
    assert_eq!(
        delayed,
        0,
        "sites answering at once taken for slow:\n{}",
        each_line(&reports)
    );
}

/// The same queue filled by several workers at once: a slow answer asked again alone
/// must wait for every worker's requests to the IP, not only its own process's, or
/// its second request waits behind the others' in nginx's queue and reads slow again.
/// Shown first with four workers of three hosts each sharing the limiter (each worker
/// sees only its own requests in flight).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn time_in_a_delaying_limits_queue_filled_by_other_workers_is_not_the_sites() {
    let ip = "127.0.12.28";
    let (site, nginx) = delaying_nginx(ip, "queuedby4");
    let probe = DELAYING_PROBE;
    let prefix = unique("real");
    let s = settings_of_worker(&prefix, &over_the_limit(&site.hosts, ip, probe, "2s", ""));
    let urls = urls_of(&site.hosts, nginx.port);
    let workers = urls.chunks(3).map(|some| {
        let (engine, some) = (engine(&s), some.to_vec());
        async move { round(&engine, &some).await }
    });
    let reports: Vec<Report> = futures_util::future::join_all(workers)
        .await
        .into_iter()
        .flatten()
        .collect();
    let delayed = reports.iter().filter(|r| r.verdict != Verdict::Up).count();
    assert_eq!(
        delayed,
        0,
        "sites answering at once taken for slow:\n{}",
        each_line(&reports)
    );
}

/// Probe settings under which a delaying limit's queue makes an answer slow: a slot
/// half a second apart behind three others is past `max_latency`.
const DELAYING_PROBE: &str = "timeout = \"8s\"\nmax_latency = \"1500ms\"\n";

/// nginx on `ip` with 12 hosts named after `prefix` behind `limit_req` at 2r/s with a
/// `burst` of 12 and no `nodelay`: what comes too fast is answered later, not refused.
fn delaying_nginx(ip: &str, prefix: &str) -> (Site, Nginx) {
    let site = Site {
        ip: ip.into(),
        rate: 2,
        burst: 12,
        nodelay: false,
        conn: 16,
        status: 503,
        hosts: names(prefix, 12),
    };
    let nginx = Nginx::start(std::slice::from_ref(&site));
    (site, nginx)
}

/// Each report as "url verdict/reason: detail", one a line.
fn each_line(reports: &[Report]) -> String {
    reports
        .iter()
        .map(|r| format!("{} {:?}/{}: {}", r.url, r.verdict, r.reason, r.detail))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A whole shared server closing every connection without a word (nginx's `return 444`
/// on every host: a default server that catches sites whose configuration is gone) is
/// a server failing on every host from our first request. Held once, as a limit still
/// counting an earlier burst would be, it is each site's `down` after the hold: its
/// closes during the hold are that failure too, not a server refusing us that a ban
/// follows. Review AF: the closes during the first hold were taken for the server's
/// refusal, every close after it for "a block outlasting our hold", the hold doubled
/// each time, and `picket check` gave no verdict in 300 s ("3 unknown/blocked" with 3
/// hosts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_closing_every_connection_from_the_first_is_down_after_one_hold() {
    let ip = "127.0.12.22";
    let hosts = names("closeall", 12);
    let nginx = Nginx::some_failing(ip, &hosts, &hosts, 444);
    let checked = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        round_over_the_limit(&hosts, (ip, nginx.port), "", "2s", ""),
    )
    .await;
    let reports = checked.expect("no verdict within 60 s: the IP held again and again");
    let not_down: Vec<&Report> = reports
        .iter()
        .filter(|r| r.verdict != Verdict::Down)
        .collect();
    assert!(
        not_down.is_empty(),
        "sites closing every connection not down:\n{}",
        each_line(&reports)
    );
}

/// Most hosts of a shared server closing every connection without a word (nginx's
/// `return 444` for sites whose configuration is gone) beside two that work: a check
/// ends in a verdict, the two working sites are `up` and the closing ones never `up`.
/// Review AF: "no verdict in 150 s", each close after a hold read as a block outlasting
/// it, and the hold doubled each time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn most_hosts_closing_beside_two_working_ones_get_a_verdict() {
    let ip = "127.0.12.23";
    let hosts = names("mostclose", 12);
    let closing = &hosts[..10];
    let nginx = Nginx::some_failing(ip, &hosts, closing, 444);
    let checked = tokio::time::timeout(
        std::time::Duration::from_secs(60),
        round_over_the_limit(&hosts, (ip, nginx.port), "", "2s", ""),
    )
    .await;
    let reports = checked.expect("no verdict within 60 s: the IP held again and again");
    eprintln!("{}", each_line(&reports));
    for (h, r) in hosts.iter().zip(&reports) {
        if closing.contains(h) {
            assert_ne!(r.verdict, Verdict::Up, "{h}: {}", r.detail);
        } else {
            assert_eq!(r.verdict, Verdict::Up, "{h}: {}", r.detail);
        }
    }
}

/// `n` requests at once to `host` on `ip:port`, from this test, as another client on
/// our address would send them: how many were turned away (no answer, or not a 200).
async fn burst_from_here(ip: &str, port: u16, host: &str, n: usize) -> usize {
    // A connection per request, as another client's burst opens them: a connection
    // given back to the pool and taken again would count once for a connection rate.
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(0)
        .timeout(std::time::Duration::from_secs(2))
        .build()
        .expect("client");
    let asks = (0..n).map(|_| {
        client
            .get(format!("http://{ip}:{port}/"))
            .header("host", host)
            .send()
    });
    futures_util::future::join_all(asks)
        .await
        .into_iter()
        .filter(|r| r.as_ref().map_or(true, |r| r.status() != 200))
        .count()
}

/// haproxy's tarpit holding what came too fast for longer than a probe waits (30 s):
/// the connections stay open and nothing comes, as behind a backend that hangs. Asked
/// again after the hold, at half the rate, the limit lets the requests through: no
/// site is `down` (where a hanging backend's hosts are: `politeness::a_backend_hanging_
/// behind_hosts_of_a_shared_ip_is_each_sites_down`).
///
/// Half of 10 a second is still over haproxy's 3: the fourth request of a second after
/// the hold is held too. It went out right behind others of ours, so it is our pace
/// that is held, and the pace steps down. A second worker sharing the limiter, checking
/// each host once (`attempts = 1`: nothing confirms by luck), checks right after:
/// before, the host held at our pace was `down/timeout` "no answer within 5999 ms" in
/// that round every time, and in the first round in one run in four under load.
///
/// A site's time is its answer's, not the tarpit's: with `max_latency` under the 6 s
/// a held request used up, an answer asked again after the hold was `degraded/slow`,
/// "200 OK … in 6004 ms" for an answer of 1 ms (review AD).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_tarpit_holding_longer_than_a_probe_is_never_down() {
    let ip = "127.0.56.11";
    let haproxy = Haproxy::rate_limited(ip, 3, Limit::LongTarpit);
    let hosts = names("hxlongtarpit", 12);
    let prefix = unique("real");
    let urls = urls_of(&hosts, haproxy.port);
    let mut held = 0;
    for (round_of, probe) in [
        ("a long tarpit", "timeout = \"6s\"\nmax_latency = \"4s\"\n"),
        (
            "a long tarpit, right after",
            "timeout = \"6s\"\nmax_latency = \"4s\"\nattempts = 1\n",
        ),
    ] {
        let s = settings_of_worker(&prefix, &over_the_limit(&hosts, ip, probe, "2s", ""));
        let reports = round(&engine(&s), &urls).await;
        let up = assert_never_down(&reports, "held open", round_of);
        held += reports
            .iter()
            .filter(|r| {
                r.detail.contains("held open")
                    || r.attempt_log.iter().any(|a| a.detail.contains("held open"))
            })
            .count();
        eprintln!("{round_of}: {up} of {} up", hosts.len());
    }
    assert!(
        held > 0,
        "the tarpit never held a request: the test proves nothing"
    );
}

/// haproxy's "flag abusers" recipe (review AB): a client past the rate in 10 s is
/// flagged for as long as its entry lives, each of its requests keeping the flag, and
/// while flagged every request it makes is tarpitted (20 s here, longer than twice a
/// probe's time: review AC), then answered haproxy's 500. Every host of the IP is held open, right after
/// answering us, and goes on being held after our hold: a ban of us, where every site
/// but the first few was `down/timeout`, "confirmed by 2 attempts".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn haproxy_flagging_us_as_an_abuser_is_never_down() {
    let ip = "127.0.56.12";
    let haproxy = Haproxy::rate_limited(ip, 3, Limit::FlaggedTarpit);
    let hosts = names("hxflagged", 6);
    let reports =
        round_over_the_limit(&hosts, (ip, haproxy.port), "timeout = \"6s\"\n", "2s", "").await;
    let up = assert_never_down(&reports, "held open", "a flagged tarpit");
    eprintln!("a flagged tarpit: {up} of {} up", hosts.len());
    assert!(
        up < hosts.len(),
        "the flag never tripped: the test proves nothing"
    );
}

/// A SOCKS5 proxy that accepts connections and answers nothing (danted stopped with
/// SIGSTOP: the kernel still completes the handshake) looks, to a client that only
/// sees "not connected in time", like a site that never answers. The proxy is asked
/// for a greeting then: a hung proxy is the egress failing, and the same danted
/// running carries the same site's silence as the site's own `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_socks_proxy_is_the_egress_failing_not_the_site_timing_out() {
    let target = plain_target("127.0.62.1").await;
    let (hole, _held) = crate::support::blackhole("127.0.62.2").await;
    let dante = Dante::start("127.0.62.3", false);
    // The proxy by name, as operators write it: its name is looked up for the check.
    let named = dante.url.replace("127.0.62.3", "dante-proxy.test");
    let mut s = egress_settings(&[("dante", named.as_str())]);
    s.dns.static_hosts.insert(
        "dante-proxy.test".into(),
        vec!["127.0.62.3".parse().expect("ip")],
    );
    s.probe.attempts = 1;
    s.probe.connect_timeout = Duration::from_secs(1);
    let engine = engine(&s);
    let hung = a_proxy_hung_and_working(&engine, &target, &hole, &dante.daemon).await;
    assert!(
        hung.detail.contains("SOCKS5 proxy") && hung.detail.contains("greeting"),
        "the detail says the proxy never answered: {}",
        hung.detail
    );
}

/// Hunt M: the same for an HTTP proxy. squid stopped with SIGSTOP takes connections
/// and answers no CONNECT: every site was `down/timeout`, "no connection within 3000
/// ms (through egress squid1) (confirmed by 2 attempts)". The proxy is asked a question
/// it answers itself then; a hung proxy is the egress failing, and the same squid
/// running carries a silent site's silence as the site's own `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hung_http_proxy_is_the_egress_failing_not_the_site_timing_out() {
    let target = plain_target("127.0.62.4").await;
    let (hole, _held) = crate::support::blackhole("127.0.62.5").await;
    let squid = Squid::start("127.0.62.6", false);
    let mut s = egress_settings(&[("squid", squid.url.as_str())]);
    s.probe.attempts = 1;
    s.probe.connect_timeout = Duration::from_secs(1);
    s.probe.timeout = Duration::from_secs(3);
    let engine = engine(&s);
    a_proxy_hung_and_working(&engine, &target, &hole, &squid.daemon).await;
}

/// Through the proxy of `daemon` (its engine's only egress): `target` is up, the
/// blackholed `hole` is `down/timeout`, and with the proxy stopped (SIGSTOP) `target`
/// is the egress failing. That last report.
async fn a_proxy_hung_and_working(
    engine: &Arc<Engine>,
    target: &str,
    hole: &std::net::SocketAddr,
    daemon: &crate::support::real::Daemon,
) -> Report {
    let up = round(engine, &[target.to_string()]).await.remove(0);
    assert_eq!(up.verdict, Verdict::Up, "through the proxy: {}", up.detail);
    let silent = round(engine, &[format!("http://{hole}/")]).await.remove(0);
    assert_eq!(
        (silent.verdict, silent.reason.as_str()),
        (Verdict::Down, "timeout"),
        "a blackholed site through a working proxy: {}",
        silent.detail
    );
    daemon.freeze();
    let hung = round(engine, &[target.to_string()]).await.remove(0);
    daemon.thaw();
    assert_eq!(
        (hung.verdict, hung.reason.as_str()),
        (Verdict::Unknown, "egress_unavailable"),
        "a working site through a hung proxy: {}",
        hung.detail
    );
    hung
}

/// A page of `bytes` bytes or more: `title` at its top, `last` at its very end.
fn long_page(title: &str, bytes: usize, last: &str) -> String {
    let para = "<p>Minutes of the county board meeting: the board heard reports on roads, \
                parks and the library, and approved the budget for the coming year.</p>\n";
    let mut page = format!("<!doctype html><html><head><title>{title}</title></head><body>\n");
    while page.len() < bytes {
        page.push_str(para);
    }
    page.push_str(&format!("<p>{last}</p></body></html>\n"));
    page
}

/// A page nginx sends slowly (`limit_rate`) draws in a browser as it comes: the site is
/// reachable but slow, `degraded/slow`, when what arrived within the probe's time passes
/// the job's checks; when it does not (the expected text was still to come), the
/// deadline is why it is not up: `down/timeout`, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_sent_slowly_is_degraded_when_what_came_passes_and_down_when_not() {
    let ip = "127.0.75.1";
    let host = "slow.county.test".to_string();
    let pages = [
        (
            "/early.html",
            long_page("County office", 40_000, "Last updated"),
        ),
        (
            "/late.html",
            long_page("Town office", 40_000, "County office"),
        ),
    ];
    let nginx = Nginx::slow(ip, &host, ("8k", "4k"), &pages);
    let s = settings(&format!(
        "{}[probe]\nretry_delay = \"200ms\"\n\
         [[rate_limit.override]]\ncidr = \"{ip}/32\"\nrate = 10.0\nburst = 4\nmax_inflight = 4\n",
        static_dns(std::slice::from_ref(&host), ip)
    ));
    let engine = engine(&s);
    let check = |path: &str| {
        let mut job =
            picket::job::job_for_url(&format!("http://{host}:{}{path}", nginx.port), path)
                .expect("job");
        job.timeout = Some(Duration::from_secs(3));
        job.expect.body_contains = Some("County office".into());
        let engine = engine.clone();
        tokio::spawn(async move { engine.run(&job).await })
    };
    let (early, late) = (check("/early.html"), check("/late.html"));
    let (early, late) = (early.await.expect("early"), late.await.expect("late"));
    eprintln!(
        "early: {:?}/{}: {}",
        early.verdict, early.reason, early.detail
    );
    eprintln!("late: {:?}/{}: {}", late.verdict, late.reason, late.detail);
    assert_eq!(
        (early.verdict, early.reason.as_str()),
        (Verdict::Degraded, "slow"),
        "{}",
        early.detail
    );
    assert!(
        early.detail.contains("did not arrive in full"),
        "{}",
        early.detail
    );
    assert_eq!(
        (late.verdict, late.reason.as_str()),
        (Verdict::Down, "timeout"),
        "{}",
        late.detail
    );
    assert!(
        late.detail.contains("did not arrive in time"),
        "{}",
        late.detail
    );
}

/// Hunt O: Apache with HTTP/2 that asks for an optional client certificate on one path
/// resets a request for it with `HTTP_1_1_REQUIRED` (mod_http2 cannot renegotiate).
/// Browsers and curl ask again over HTTP/1.1 and get the page; picket said
/// `down/protocol` "endpoint requires HTTP/1.1", confirmed by 2 attempts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_reset_asking_for_http1_is_asked_again_over_http1() {
    let dir = tempfile::tempdir().expect("dir");
    let (pki, ca_file) = crate::support::farm::Pki::with_ca_file(dir.path());
    let host = "smartcard.county.test";
    let (cert, key) = pki.leaf_pem(host);
    let apache = Apache::tls_h2_client_cert_path("127.0.72.1", host, (&cert, &key), &ca_file);
    let s = settings(&format!(
        "[tls]\nextra_ca_file = \"{}\"\n{}",
        ca_file.display(),
        static_dns(&[host.to_string()], "127.0.72.1")
    ));
    let url = format!("https://{host}:{}/secure/", apache.port);
    let reports = round(&engine(&s), std::slice::from_ref(&url)).await;
    let r = &reports[0];
    assert_eq!(
        r.verdict,
        Verdict::Up,
        "{} {}: {}\n{}",
        r.reason,
        r.detail,
        r.url,
        apache.errors()
    );
    assert!(
        r.detail.contains("HTTP/1.1"),
        "the asking again is said: {}",
        r.detail
    );
}

/// Hunt O: a TLS front end with no site of the name refuses the handshake outright
/// (nginx `ssl_reject_handshake on` in its default server: a hosting company's box
/// whose virtual host was removed), with the `unrecognized_name` alert. Browsers show a
/// hard error and no page (ERR_SSL_UNRECOGNIZED_NAME_ALERT): the site is down, as an
/// https:// URL on a plain port is. picket said `degraded/tls` after one attempt, as
/// for a certificate a user may click through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_front_end_with_no_site_of_the_name_is_down() {
    let dir = crate::support::real::scratch("nginx-reject-handshake");
    let (pki, ca_file) = crate::support::farm::Pki::with_ca_file(&dir);
    let (ip, known, gone) = ("127.0.72.2", "kept.county.test", "removed.county.test");
    let (cert, key) = pki.leaf_pem(known);
    let cert = crate::support::real::write(&dir, "site.crt", &cert);
    let key = crate::support::real::write(&dir, "site.key", &key);
    crate::support::real::write(&dir, "www/index.html", &crate::support::real::page(known));
    let port = free_port();
    let servers = format!(
        "  server {{ listen {ip}:{port} ssl default_server; ssl_reject_handshake on; }}\n  \
         server {{ listen {ip}:{port} ssl; server_name {known}; root {d}/www; \
         ssl_certificate {c}; ssl_certificate_key {k}; }}\n",
        d = dir.display(),
        c = cert.display(),
        k = key.display()
    );
    let _nginx = Nginx::run("nginx (ssl_reject_handshake)", &dir, ip, port, &servers);
    let s = settings(&format!(
        "[tls]\nextra_ca_file = \"{}\"\n{}",
        ca_file.display(),
        static_dns(&[known.to_string(), gone.to_string()], ip)
    ));
    let urls = [known, gone].map(|h| format!("https://{h}:{port}/"));
    let reports = round(&engine(&s), &urls).await;
    assert_eq!(reports[0].verdict, Verdict::Up, "{}", reports[0].detail);
    let r = &reports[1];
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "tls"),
        "{}",
        r.detail
    );
    assert!(r.detail.contains("no site"), "{}", r.detail);
    assert_eq!(r.attempts, 2, "a down is confirmed: {}", r.detail);
}

/// reviewV: the HTTP/1.1 retry after `HTTP_1_1_REQUIRED` (1658e1d) is one request
/// counted anew, but a rustls HTTP/1.1 request that Apache answers by renegotiating
/// fails the handshake, and the OpenSSL request that follows goes under the same
/// permit (`ask_address`'s legacy retry, meant for handshakes that sent no request).
/// At one request at once and two a second, every request the server logged must
/// have waited its turn: each came 500 ms after the one before, by the server's clock
/// (400 ms allowed for the way there; one sent under the same permit came at once).
/// The probe's own queue time is no measure: its requests' own time counts towards
/// the spacing (a CI run: 946 ms queued for three requests 510 ms apart).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_v_every_request_to_a_renegotiating_path_takes_a_permit() {
    let dir = tempfile::tempdir().expect("dir");
    let (pki, ca_file) = crate::support::farm::Pki::with_ca_file(dir.path());
    let host = "smartcard-v.county.test";
    let (cert, key) = pki.leaf_pem(host);
    let ip = "127.0.180.21";
    let apache = Apache::tls_h2_client_cert_path(ip, host, (&cert, &key), &ca_file);
    let s = settings(&format!(
        "[tls]\nextra_ca_file = \"{}\"\n[rate_limit.per_ip]\nrate = 2.0\nburst = 1\nmax_inflight = 1\n{}",
        ca_file.display(),
        static_dns(&[host.to_string()], ip)
    ));
    let url = format!("https://{host}:{}/secure/", apache.port);
    let since = now_us();
    let reports = round(&engine(&s), std::slice::from_ref(&url)).await;
    let r = &reports[0];
    let hits = apache.hits().since(since).all;
    let queued = r.timing_ms.queue.unwrap_or(0);
    eprintln!(
        "{:?} {} {}\nhits {hits:?}\nqueued {queued}",
        r.verdict, r.reason, r.detail
    );
    assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
    let gaps: Vec<u64> = hits.windows(2).map(|w| (w[1].0 - w[0].0) / 1000).collect();
    assert!(
        hits.len() >= 2 && gaps.iter().all(|&ms| ms >= 400),
        "requests reached the server {gaps:?} ms apart ({hits:?}), under a limit of one \
         per 500 ms: {}",
        r.detail
    );
}
