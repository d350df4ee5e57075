//! Our side failing is not their side failing: a nameserver that fails or stays silent
//! is passed over for the next one before a site is called down for DNS, nameservers
//! that answer nothing at all are our resolver failing, and a wave of unrelated sites
//! failing at once while nothing answers is our network: both `unknown`.
//!
//! Engine in process, as in `egress`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use picket::engine::Engine;
use picket::job::{Report, Verdict};

use crate::support::dns::{self, Mode};
use crate::support::picket::{check, check_job, engine_with, page};
use crate::support::{blackhole, serve};

fn engine(toml: &str) -> Engine {
    engine_with("attempts = 2\nconnect_timeout = \"2s\"", toml)
}

async fn site(ip: &str) -> std::net::SocketAddr {
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::response::Html(page("ours")) }),
    );
    serve(ip, router).await
}

/// Hunt R: split-horizon DNS, an internal resolver that knows the site (answering in
/// 30 ms) listed first and a public one that says NXDOMAIN at once second. glibc and
/// Chrome ask the first and move on only when it fails; hickory asked both at once and
/// took the first answer back, the NXDOMAIN: a confirmed `down/dns` for every internal
/// site that curl reached.
#[tokio::test]
async fn the_first_nameserver_answers_before_a_faster_second_one_says_no_such_name() {
    let web = site("127.0.7.41").await;
    let table = HashMap::from([(
        "intranet.corp.test".to_string(),
        vec!["127.0.7.41".parse().expect("ip")],
    )]);
    let slow = Mode::Slow(Duration::from_millis(30), Box::new(Mode::Answer(table)));
    let (internal, _) = dns::serve("127.0.7.42", slow).await;
    let (public, _) = dns::serve("127.0.7.43", Mode::Answer(HashMap::new())).await;
    let e = engine(&format!(
        "[dns]\ntimeout = \"1s\"\nnameservers = [\"{internal}\", \"{public}\"]\n"
    ));
    let url = format!("http://intranet.corp.test:{}/", web.port());
    for _ in 0..3 {
        let r = check(&e, &url).await;
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
    }
}

/// Hunt R: a lookup waiting for one of picket's own lookup slots (`dns.max_concurrent`)
/// when the job's time ran out was never asked: "DNS lookup ran out of time" was taken
/// for the site's DNS failing (our nameserver answers the root question), a confirmed
/// `down/dns` for 44 of 300 sites behind a resolver taking 2 s. It is our own queue:
/// never `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lookup_still_waiting_for_our_own_slot_is_never_the_sites_dns() {
    let web = site("127.0.7.44").await;
    let names: Vec<String> = (0..6).map(|n| format!("site{n}.slow.test")).collect();
    let table = names
        .iter()
        .map(|n| (n.clone(), vec!["127.0.7.44".parse().expect("ip")]))
        .collect();
    let slow = Mode::Slow(Duration::from_millis(1500), Box::new(Mode::Answer(table)));
    let (ns, _) = dns::serve("127.0.7.45", slow).await;
    let e = engine(&format!(
        "[dns]\ntimeout = \"3s\"\nmax_concurrent = 1\nnameservers = [\"{ns}\"]\n"
    ));
    let jobs = names.iter().map(|n| {
        let job =
            serde_json::json!({"url": format!("http://{n}:{}/", web.port()), "timeout_ms": 2500});
        check_job(&e, job)
    });
    let results = futures_util::future::join_all(jobs).await;
    let down: Vec<&str> = results
        .iter()
        .filter(|r| r.verdict == Verdict::Down)
        .map(|r| r.detail.as_str())
        .collect();
    assert!(
        down.is_empty(),
        "our own queue, told as the site's: {down:?}"
    );
    assert!(
        results.iter().any(|r| r.verdict == Verdict::Up),
        "the first lookups are answered"
    );
}

/// Hunt R, the worst: a recursive resolver that is up but cut off from every upstream
/// server still answers what it holds, the root zone's servers among it, so "do our
/// nameservers answer?" said yes, and every uncached site was a confirmed `down/dns`
/// (30 of 30 behind a real unbound whose authoritative servers were gone). With
/// canaries, the resolver is also asked a name that no cache holds, under a canary's
/// host: SERVFAIL there is our resolver failing.
#[tokio::test]
async fn a_resolver_cut_off_from_upstream_is_our_side_not_the_sites_dns() {
    let web = site("127.0.7.46").await;
    let table = HashMap::from([(
        "canary.test".to_string(),
        vec!["127.0.7.46".parse().expect("ip")],
    )]);
    let (ns, _) = dns::serve("127.0.7.47", Mode::CutOff(table)).await;
    let e = engine_with(
        &format!(
            "attempts = 2\nconnect_timeout = \"2s\"\ncanaries = [\"http://canary.test:{}/\"]",
            web.port()
        ),
        &format!("[dns]\ntimeout = \"1s\"\nnameservers = [\"{ns}\"]\n"),
    );
    let r = check(&e, &format!("http://elsewhere.test:{}/", web.port())).await;
    assert_eq!(r.verdict, Verdict::Unknown, "{}", r.detail);
}

/// The same cut-off resolver with no canaries configured (left open by hunt R): the
/// root, in its cache, was all that was asked, and every uncached site was a confirmed
/// `down/dns`. A fresh label under the failing name's top-level domain is asked
/// instead: the TLD's servers answer it (NXDOMAIN) through any resolver that reaches
/// beyond its cache, and a resolver whose own site's DNS is broken still does.
#[tokio::test]
async fn a_resolver_cut_off_from_upstream_is_our_side_even_without_canaries() {
    let web = site("127.0.7.50").await;
    let (cut, _) = dns::serve("127.0.7.51", Mode::CutOff(HashMap::new())).await;
    let e = engine(&format!(
        "[dns]\ntimeout = \"1s\"\nnameservers = [\"{cut}\"]\n"
    ));
    let r = check(&e, &format!("http://elsewhere.test:{}/", web.port())).await;
    assert_eq!(r.verdict, Verdict::Unknown, "{}", r.detail);

    // A resolver that reaches beyond its cache, and a site whose own DNS fails: still
    // the site's.
    let broken = Mode::ServfailFor(vec!["elsewhere.test".to_string()]);
    let (working, _) = dns::serve("127.0.7.52", broken).await;
    let e = engine(&format!(
        "[dns]\ntimeout = \"1s\"\nnameservers = [\"{working}\"]\n"
    ));
    let r = check(&e, &format!("http://elsewhere.test:{}/", web.port())).await;
    assert_eq!(r.verdict, Verdict::Down, "{}", r.detail);
}

/// A worker with no route to an address, in its own routing table (hunt R left it
/// open: an IPv6-only site seen from a container without IPv6, an interface down):
/// `connect` fails at once with "network unreachable", which was told as a remote
/// router's "no route", a confirmed `down/connect`. Nothing left this machine: the
/// site was never asked, so it is our side, `unknown`; a name with another address
/// that did fail as the site's is still `down`, by that address. Run as the real
/// binary in a network namespace of its own (`unshare -n`, as root, as CI runs), with
/// only loopback and an `unreachable` route: no packet can leave it.
#[test]
fn no_route_in_our_own_routing_table_is_our_side_not_the_sites() {
    let reports = check_in_namespace(
        "ip route add unreachable 127.0.7.53/32 table local",
        "",
        "[dns.static]\n\"unrouted.test\" = \"127.0.7.53\"\n\
         \"mixed.test\" = \"127.0.7.54,127.0.7.53\"\n",
        &["http://unrouted.test:8080/", "http://mixed.test:8080/"],
    );
    let [unrouted, mixed] = reports.as_slice() else {
        panic!("two results expected from picket in a namespace: {reports:?}")
    };
    assert_eq!(unrouted.verdict, Verdict::Unknown, "{}", unrouted.detail);
    assert_eq!(
        (mixed.verdict, mixed.reason.as_str()),
        (Verdict::Down, "connect"),
        "{}",
        mixed.detail
    );
}

/// Hunt R: a short name inside a Kubernetes cluster (`grafana.monitoring`), which
/// resolv.conf's search list completes for curl and browsers, was asked only as written
/// and was a confirmed `down/dns`. A name not found as written is asked under each
/// `dns.search` domain in turn, as glibc does (the system's list when picket uses the
/// system's resolver).
#[tokio::test]
async fn a_short_name_is_found_under_a_search_domain() {
    let search = r#"["monitoring.svc.cluster.local", "svc.cluster.local"]"#;
    let (e, port) = grafana_in_a_cluster(["127.0.7.48", "127.0.7.49"], Mode::Answer, search).await;
    let r = check(&e, &format!("http://grafana.monitoring:{port}/")).await;
    assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
    let gone = check(&e, &format!("http://gone.monitoring:{port}/")).await;
    assert_eq!(gone.verdict, Verdict::Down, "{}", gone.detail);
}

/// A grafana served on `ips[0]`, known to a cluster's nameserver on `ips[1]` (answering
/// as `mode` says, from its table) as `grafana.monitoring.svc.cluster.local`, and an
/// engine asking it with `search` (a TOML list) as `dns.search`; and grafana's port.
async fn grafana_in_a_cluster(
    ips: [&str; 2],
    mode: fn(HashMap<String, Vec<std::net::IpAddr>>) -> Mode,
    search: &str,
) -> (Engine, u16) {
    let web = site(ips[0]).await;
    let table = HashMap::from([(
        "grafana.monitoring.svc.cluster.local".to_string(),
        vec![ips[0].parse().expect("ip")],
    )]);
    let (ns, _) = dns::serve(ips[1], mode(table)).await;
    let e = engine(&format!(
        "[dns]\ntimeout = \"1s\"\nnameservers = [\"{ns}\"]\nsearch = {search}\n"
    ));
    (e, web.port())
}

#[tokio::test]
async fn a_failing_or_silent_nameserver_is_passed_over_for_the_next() {
    let web = site("127.0.7.1").await;
    let table = HashMap::from([(
        "www.ours.test".to_string(),
        vec!["127.0.7.1".parse().expect("ip")],
    )]);
    let (good, good_queries) = dns::serve("127.0.7.2", Mode::Answer(table)).await;
    let (servfail, servfail_queries) = dns::serve("127.0.7.3", Mode::Servfail).await;
    let (silent, silent_queries) = dns::serve("127.0.7.4", Mode::Silent).await;
    let url = format!("http://www.ours.test:{}/", web.port());

    for (first, first_queries) in [(servfail, &servfail_queries), (silent, &silent_queries)] {
        let e = engine(&format!(
            "[dns]\ntimeout = \"1s\"\nnameservers = [\"{first}\", \"{good}\"]\n"
        ));
        let r = check(&e, &url).await;
        assert_eq!(
            r.verdict,
            Verdict::Up,
            "first nameserver {first}: {}",
            r.detail
        );
        assert!(
            first_queries.load(std::sync::atomic::Ordering::SeqCst) > 0,
            "{first} was never asked"
        );
    }
    assert!(good_queries.load(std::sync::atomic::Ordering::SeqCst) >= 2);

    // A nameserver that works but cannot resolve the site's name (its own DNS broken, a
    // lame delegation): dns, and said why.
    let (lame, _) = dns::serve(
        "127.0.7.5",
        Mode::ServfailFor(vec!["www.ours.test".to_string()]),
    )
    .await;
    let e = engine(&format!(
        "[dns]\ntimeout = \"1s\"\nnameservers = [\"{lame}\"]\n"
    ));
    let r = check(&e, &url).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "dns"),
        "{}",
        r.detail
    );
    assert!(r.detail.contains("www.ours.test"), "{}", r.detail);
}

/// Our nameservers answering nothing at all (a resolver that stopped, its port closed
/// or its host gone), or failing or refusing everything (its own upstream lost, an ACL
/// that leaves us out), are our side failing, not the site: `unknown`, never `down`,
/// even for one check alone with no canaries. A nameserver that works but fails the
/// site's name is believed (above): the site's DNS is broken.
#[tokio::test]
async fn nameservers_answering_nothing_are_our_side_never_a_sites_down() {
    let web = site("127.0.58.1").await;
    let (silent, silent_queries) = dns::serve("127.0.58.2", Mode::Silent).await;
    let closed = {
        let socket = std::net::UdpSocket::bind("127.0.58.3:0").expect("bind");
        socket.local_addr().expect("address")
    };
    let (servfail, _) = dns::serve("127.0.58.4", Mode::Servfail).await;
    let (refused, _) = dns::serve("127.0.58.5", Mode::Refused).await;
    let url = format!("http://www.ours.test:{}/", web.port());
    for ns in [silent, closed, servfail, refused] {
        let e = engine(&format!(
            "[dns]\ntimeout = \"1s\"\nnameservers = [\"{ns}\"]\n"
        ));
        let r = check(&e, &url).await;
        assert_our_nameservers_blamed(&r, ns);
    }
    assert!(silent_queries.load(std::sync::atomic::Ordering::SeqCst) > 0);
}

/// A lookup the probe's own deadline cut short (a job's `timeout_ms`, or
/// `probe.timeout`, shorter than the resolver's patience) is a lookup that failed, not a
/// site that took too long: asked about as any failed lookup is. Our nameservers
/// answering nothing make it ours (`unknown`); ones that answer everything else make it
/// the site's name (`down`, dns).
#[tokio::test]
async fn a_lookup_cut_short_by_the_probes_deadline_is_a_failed_lookup() {
    let closed = {
        let socket = std::net::UdpSocket::bind("127.0.64.1:0").expect("bind");
        socket.local_addr().expect("address")
    };
    let (silent, _) = dns::serve("127.0.64.2", Mode::Silent).await;
    let job = serde_json::json!({"url": "http://c1.example.gov/", "timeout_ms": 500});
    for ns in [closed, silent] {
        let e = engine(&format!(
            "[dns]\ntimeout = \"1s\"\nnameservers = [\"{ns}\"]\n"
        ));
        let r = check_job(&e, job.clone()).await;
        assert_our_nameservers_blamed(&r, ns);
    }
    let (lost, _) = dns::serve(
        "127.0.64.3",
        Mode::SilentFor(vec!["c1.example.gov".to_string()]),
    )
    .await;
    let e = engine(&format!(
        "[dns]\ntimeout = \"1s\"\nnameservers = [\"{lost}\"]\n"
    ));
    let r = check_job(&e, job).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "dns"),
        "{}",
        r.detail
    );
}

async fn check_all(e: &Arc<Engine>, urls: &[String]) -> Vec<Report> {
    let tasks: Vec<_> = urls
        .iter()
        .map(|u| {
            let (e, u) = (e.clone(), u.clone());
            tokio::spawn(async move { check(&e, &u).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.expect("a check task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_of_silent_sites_is_our_network_not_theirs() {
    let mut holes = Vec::new();
    for n in 1..=24 {
        holes.push(blackhole(&format!("127.0.8.{n}")).await);
    }
    let probe = tokio::time::timeout(
        std::time::Duration::from_millis(500),
        tokio::net::TcpStream::connect(holes[0].0),
    )
    .await;
    assert!(probe.is_err(), "the blackhole must swallow connects");
    let urls: Vec<String> = holes.iter().map(|(a, _)| format!("http://{a}/")).collect();
    let probe = "attempts = 1\nconnect_timeout = \"1s\"";

    // No canaries: a wave of silence is taken for our network. The first sites to fail
    // may be called down before the wave shows; once it shows, no more downs.
    let e = Arc::new(engine_with(probe, ""));
    let first = check_all(&e, &urls).await;
    assert!(first.iter().all(|r| r.verdict != Verdict::Up));
    let second = check_all(&e, &urls).await;
    for r in &second {
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Unknown, "egress_unavailable"),
            "{}",
            r.detail
        );
        assert!(
            r.detail.contains("unrelated sites went silent"),
            "{}",
            r.detail
        );
    }

    // With a canary that answers, the same silence is the sites' own: down.
    let canary = site("127.0.8.100").await;
    let e = Arc::new(engine_with(
        &format!("{probe}\ncanaries = [\"http://{canary}/\"]"),
        "",
    ));
    for r in check_all(&e, &urls).await {
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            (Verdict::Down, "timeout"),
            "{}",
            r.detail
        );
    }
    drop(holes);
}

/// `r` is our side's failure, naming our nameservers (here `ns`), never the site's.
fn assert_our_nameservers_blamed(r: &Report, ns: impl std::fmt::Display) {
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "egress_unavailable"),
        "nameserver {ns}: {}",
        r.detail
    );
    assert!(
        r.detail.contains("our nameservers answer no question"),
        "the detail names our resolver: {}",
        r.detail
    );
}

/// A worker short of CPU runs its own timers late: an attempt with a 100 ms timeout
/// against a page that answers at once ran for many times that and came back
/// `down/timeout`, "confirmed" by a second attempt just as late. The site had no fair
/// chance: that is our side failing, never a `down`.
///
/// Our event loop is made late for real here: the probe shares a single-threaded
/// runtime with a task that blocks its thread for 150 ms at a time (as a big page being
/// decoded does), while the site runs on a thread of its own and answers at once. Only
/// the verdict is asserted: `up` (had the probe slipped through) would be true as well.
#[test]
fn a_timeout_while_our_own_event_loop_ran_late_is_unknown_never_down() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("site runtime");
        rt.block_on(async {
            tx.send(site("127.0.79.1").await).expect("send");
            std::future::pending::<()>().await;
        });
    });
    let web = rx.recv().expect("the site's address");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("probe runtime");
    let r = rt.block_on(async {
        let e = engine("");
        let job = serde_json::json!({"url": format!("http://{web}/"), "timeout_ms": 100});
        // Bounded: long enough for both attempts to run while the thread is blocked.
        let stall = async {
            for _ in 0..20 {
                std::thread::sleep(std::time::Duration::from_millis(150));
                tokio::task::yield_now().await;
            }
        };
        tokio::join!(check_job(&e, job), stall).0
    });
    assert_ne!(r.verdict, Verdict::Down, "{}", r.detail);
    if r.verdict == Verdict::Unknown {
        assert_eq!(r.reason.as_str(), "local_resources", "{}", r.detail);
    }
}

// Review Y: where the two fixes of 946810b are wrong. Each test below failed when
// written; its commit message on branch review-y holds the output.

/// A top-level domain whose own servers fail (a TLD's DNSSEC rollover gone wrong, its
/// servers down) fails every name under it for every resolver in the world: the sites
/// under it are down for everyone. Without canaries the fresh name goes under that
/// same TLD, fails with it, and our resolver, which answers every other name, is
/// blamed: `unknown` for every site under a broken TLD, however long the outage.
///
/// Changed from review Y's test, which had the worker resolve nothing before: a fresh
/// name is now also asked under the top-level domains of names found lately (here an
/// `.org` site checked first, served by the test's own nameserver on loopback; not a
/// special-use TLD such as `.test`, which a resolver may serve itself, review Z), so a
/// worker that has found names elsewhere tells a
/// TLD's failure from its resolver's. One that has found none cannot, without
/// canaries: a fresh name under the root, which would tell, is answered from the
/// cache of a cut-off resolver that synthesises NXDOMAIN from the root's NSEC records
/// (unbound's and BIND's default), the very failure this check is for.
#[tokio::test]
async fn a_top_level_domain_whose_servers_fail_is_the_sites_dns_not_our_resolver() {
    let web = site("127.0.7.77").await;
    let resolver = Mode::Isolated {
        table: HashMap::from([(
            "www.ours.org".to_string(),
            vec!["127.0.7.77".parse().expect("ip")],
        )]),
        zones: vec!["org".to_string()],
        broken: vec!["broken".to_string()],
    };
    let (ns, _) = dns::serve("127.0.7.70", resolver).await;
    let e = engine(&format!(
        "[dns]\ntimeout = \"1s\"\nnameservers = [\"{ns}\"]\n"
    ));
    let found = check(&e, &format!("http://www.ours.org:{}/", web.port())).await;
    assert_eq!(found.verdict, Verdict::Up, "{}", found.detail);
    let r = check(&e, "http://www.county.broken:8080/").await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "dns"),
        "{}",
        r.detail
    );
}

/// The answer to "does our resolver reach beyond its cache?" is kept for
/// `RESOLVER_FRESH` (5 s) whatever the TLD it was asked under: a failed lookup under a
/// failing TLD makes the next sites' failed lookups, under any other TLD, `unknown`
/// too, though a fresh name under their own TLD is answered at once.
#[tokio::test]
async fn one_top_level_domains_failure_is_not_our_resolvers_for_another() {
    let broken = Mode::ServfailUnder(vec!["broken".to_string(), "www.ours.test".to_string()]);
    let (ns, _) = dns::serve("127.0.7.71", broken).await;
    let config = format!("[dns]\ntimeout = \"1s\"\nnameservers = [\"{ns}\"]\n");
    // Alone, a `.test` site whose own DNS fails is the site's: our resolver answers a
    // fresh name under `.test`.
    let alone = check(&engine(&config), "http://www.ours.test:8080/").await;
    assert_eq!(alone.verdict, Verdict::Down, "{}", alone.detail);
    // The same, checked just after a site under a failing TLD.
    let e = engine(&config);
    let _ = check(&e, "http://www.county.broken:8080/").await;
    let r = check(&e, "http://www.ours.test:8080/").await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "dns"),
        "after a site under a failing TLD: {}",
        r.detail
    );
}

/// An isolated network's resolver (the usual internal naming: a zone under the
/// company's registered domain, `corp.test` here) serves its own zones and reaches no
/// outside server, by design. A zone of it delegated to a server that is down
/// (`dept.corp.test`) fails for every user of that network: its sites are down. The
/// fresh name goes under the outside TLD (`picket-….test.`), which this resolver never
/// reaches, so every such site is `unknown`, always. A fresh name under the failing
/// name's parent zones (`corp.test`) would be answered.
#[tokio::test]
async fn a_broken_zone_behind_an_isolated_networks_resolver_is_the_sites_dns() {
    let web = site("127.0.7.72").await;
    let isolated = Mode::Isolated {
        table: HashMap::from([(
            "intranet.corp.test".to_string(),
            vec!["127.0.7.72".parse().expect("ip")],
        )]),
        zones: vec!["corp.test".to_string()],
        broken: vec!["dept.corp.test".to_string()],
    };
    let (ns, _) = dns::serve("127.0.7.73", isolated).await;
    let e = engine(&format!(
        "[dns]\ntimeout = \"1s\"\nnameservers = [\"{ns}\"]\n"
    ));
    let up = check(&e, &format!("http://intranet.corp.test:{}/", web.port())).await;
    assert_eq!(up.verdict, Verdict::Up, "{}", up.detail);
    let r = check(&e, &format!("http://app.dept.corp.test:{}/", web.port())).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "dns"),
        "{}",
        r.detail
    );
}

/// A short name inside a cluster whose resolver reaches nothing outside it (a locked-down
/// Kubernetes cluster: CoreDNS serves `cluster.local`, its forwarding to the outside is
/// blocked). As written, `grafana.monitoring` goes to the outside and fails (SERVFAIL),
/// and the search list is walked only after NXDOMAIN, so it is never completed; the
/// fresh name under `.monitoring` fails the same, and the running grafana is `unknown`
/// (before 946810b, `down/dns`). glibc walks the search list after SERVFAIL too (and,
/// with Kubernetes' `ndots:5`, before the name as written): curl in the same pod
/// reaches it.
#[tokio::test]
async fn a_short_name_is_completed_even_when_the_outside_fails_it_as_written() {
    let search = r#"["svc.cluster.local"]"#;
    let (e, port) = grafana_in_a_cluster(["127.0.7.74", "127.0.7.75"], Mode::CutOff, search).await;
    let r = check(&e, &format!("http://grafana.monitoring:{port}/")).await;
    assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
}

/// Runs `picket check --json` on `urls`, as the real binary, in a network namespace of
/// its own (`unshare -n`, as root, as CI runs) with only loopback, after `setup` (shell
/// commands that change its routes, rules or firewall); `wrap` goes before the binary
/// (a command that runs it). Returns its results.
fn check_in_namespace(setup: &str, wrap: &str, config: &str, urls: &[&str]) -> Vec<Report> {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("check.toml");
    let config = format!(
        "[targets]\nallow_private = true\n[probe]\nattempts = 2\nretry_delay = \"100ms\"\n\
         connect_timeout = \"2s\"\n{config}"
    );
    std::fs::write(&path, config).expect("config");
    let script = format!(
        "ip link set lo up && {setup} && exec {wrap} {} check --json --config {} {}",
        env!("CARGO_BIN_EXE_picket"),
        path.display(),
        urls.join(" ")
    );
    let out = std::process::Command::new("unshare")
        .args(["-n", "sh", "-c", &script])
        .env_remove("PICKET_CONFIG")
        .output()
        .expect("unshare (util-linux) runs picket in a network namespace of its own");
    let reports: Vec<Report> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect();
    assert_eq!(
        reports.len(),
        urls.len(),
        "one result per URL from picket in a namespace; stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    reports
}

/// Our own routing table can refuse a destination without an `unreachable` route: a
/// `prohibit` route (connect fails at once with EACCES, "Permission denied") or a
/// `blackhole` one (EINVAL, "Invalid argument"), as VPN kill switches and container
/// network policies install. Nothing left this machine, as with `unreachable`, but
/// only HostUnreachable/NetworkUnreachable are asked about (`no_route_here`), and the
/// UDP route lookup's own EACCES/EINVAL would not count either: a confirmed
/// `down/connect`.
#[test]
fn prohibit_and_blackhole_routes_of_our_own_are_our_side() {
    let reports = check_in_namespace(
        "ip route add prohibit 127.0.7.60/32 table local && \
         ip route add blackhole 127.0.7.61/32 table local",
        "",
        "[dns.static]\n\"prohibited.test\" = \"127.0.7.60\"\n\"blackholed.test\" = \"127.0.7.61\"\n",
        &["http://prohibited.test:8080/", "http://blackholed.test:8080/"],
    );
    let told: Vec<String> = reports
        .iter()
        .filter(|r| r.verdict != Verdict::Unknown)
        .map(|r| format!("{} {}: {}", r.verdict.as_str(), r.url, r.detail))
        .collect();
    assert!(
        told.is_empty(),
        "our own routes, told as the sites': {told:#?}"
    );
}
/// Every local port taken (a busy worker's TIME_WAITs to one address, a small
/// `ip_local_port_range`): connect fails with EADDRNOTAVAIL, "Cannot assign requested
/// address", which is our resources, not the site's. It is classified as a connection
/// failure: a site that is up, serving, is a confirmed `down/connect`. Here a server on
/// 127.0.7.64 answers, and a helper holds the namespace's two local ports.
#[test]
fn no_local_port_left_is_our_resources_not_the_sites() {
    const HOLD: &str = r#"
import http.server, socket, subprocess, sys, threading
class Page(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = b"<html><body>" + b"up " * 100 + b"</body></html>"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
server = http.server.ThreadingHTTPServer(("127.0.7.64", 8080), Page)
threading.Thread(target=server.serve_forever, daemon=True).start()
held = []
while True:
    s = socket.socket()
    try:
        s.connect(("127.0.7.64", 8080))
        held.append(s)
    except OSError:
        break
sys.exit(subprocess.run(sys.argv[1:]).returncode)
"#;
    let dir = tempfile::tempdir().expect("temp dir");
    let hold = dir.path().join("hold.py");
    std::fs::write(&hold, HOLD).expect("helper");
    let reports = check_in_namespace(
        "sysctl -q -w net.ipv4.ip_local_port_range='40000 40001'",
        &format!("python3 {}", hold.display()),
        "",
        &["http://127.0.7.64:8080/"],
    );
    assert_ne!(reports[0].verdict, Verdict::Down, "{}", reports[0].detail);
}

/// A name whose first address failed as the site's (refused) and whose last one has no
/// route here is `down` by the first (946810b): but the result's `ip`, and every
/// attempt's, names the last address, which was never asked. A subscriber (and the
/// per-IP bookkeeping keyed by the observation's address) is told the wrong address.
#[test]
fn the_ip_of_a_down_is_the_address_that_failed_not_one_never_asked() {
    let reports = check_in_namespace(
        "ip route add unreachable 127.0.7.66/32 table local",
        "",
        "[dns.static]\n\"mixed.test\" = \"127.0.7.65,127.0.7.66\"\n",
        &["http://mixed.test:8080/"],
    );
    let r = &reports[0];
    assert_eq!(r.verdict, Verdict::Down, "{}", r.detail);
    assert_eq!(r.ip.as_deref(), Some("127.0.7.65"), "{}", r.detail);
}

/// The other half of the search list's blind spot: a resolver cut off from upstream
/// still holds the root's "no such TLD" for `.monitoring` (negative cache, RFC 8020,
/// aggressive NSEC), so `grafana.monitoring` as written is NXDOMAIN; completed under
/// the search domain it is SERVFAIL (cut off), but a failure there is dropped
/// (`lookup_noting` keeps only a success) and the NXDOMAIN as written stands: a
/// confirmed `down/dns` "no such name", never asked about as a failed lookup, though
/// our resolver fails every name beyond its cache.
#[tokio::test]
async fn a_search_domain_lookup_our_resolver_fails_is_not_no_such_name() {
    let cut_off_holding_the_root = Mode::Isolated {
        table: HashMap::new(),
        zones: vec!["monitoring".to_string()],
        broken: Vec::new(),
    };
    let (ns, _) = dns::serve("127.0.7.76", cut_off_holding_the_root).await;
    let e = engine(&format!(
        "[dns]\ntimeout = \"1s\"\nnameservers = [\"{ns}\"]\nsearch = [\"svc.cluster.local\"]\n"
    ));
    let r = check(&e, "http://grafana.monitoring:3000/").await;
    assert_eq!(r.verdict, Verdict::Unknown, "{}", r.detail);
}

/// Review Z: the TLDs of names found lately (a79babd) count as proof that our resolver
/// reaches beyond its cache, but a TLD our own resolver serves itself proves nothing of
/// the sort. An office's or home's resolver (dnsmasq `local=/lan/`, OpenWrt, pfSense)
/// answers every name under `.lan` from its own table, NXDOMAIN included, with its way
/// out cut. Once the worker has found one LAN device (`printer.lan`), every outside
/// site whose lookup our cut-off resolver fails is a confirmed `down/dns`: the fresh
/// name under `.lan` is answered at once. Alone (nothing found) the same site is
/// `unknown`, as it must be.
#[tokio::test]
async fn a_tld_our_own_resolver_serves_says_nothing_of_the_outside() {
    let printer = site("127.0.7.100").await;
    let lan_only = Mode::Isolated {
        table: HashMap::from([(
            "printer.lan".to_string(),
            vec!["127.0.7.100".parse().expect("ip")],
        )]),
        zones: vec!["lan".to_string()],
        broken: Vec::new(),
    };
    let (ns, _) = dns::serve("127.0.7.101", lan_only).await;
    let config = format!("[dns]\ntimeout = \"1s\"\nnameservers = [\"{ns}\"]\n");
    let alone = check(&engine(&config), "http://www.county.test:8080/").await;
    assert_eq!(alone.verdict, Verdict::Unknown, "alone: {}", alone.detail);
    let e = engine(&config);
    let found = check(&e, &format!("http://printer.lan:{}/", printer.port())).await;
    assert_eq!(found.verdict, Verdict::Up, "{}", found.detail);
    let r = check(&e, "http://www.county.test:8080/").await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "egress_unavailable"),
        "after printer.lan was found: {}",
        r.detail
    );
}

/// Behind an isolated resolver that serves `corp.test` (its zone `dept.corp.test`
/// delegated to a server that is down) and reaches nothing else: `second`'s result
/// alone, then `first`'s and `second`'s on one engine, `second` checked just after.
async fn alone_then_after(ns_ip: &str, first: &str, second: &str) -> [Report; 3] {
    let isolated = Mode::Isolated {
        table: HashMap::new(),
        zones: vec!["corp.test".to_string()],
        broken: vec!["dept.corp.test".to_string()],
    };
    let (ns, _) = dns::serve(ns_ip, isolated).await;
    let config = format!("[dns]\ntimeout = \"1s\"\nnameservers = [\"{ns}\"]\n");
    let alone = check(&engine(&config), second).await;
    let e = engine(&config);
    let first = check(&e, first).await;
    let after = check(&e, second).await;
    [alone, first, after]
}

/// Review Z: `resolver_ok` kept its answer for 5 s per top-level domain, but the
/// question it asked depends on the failed name's parent domains (a79babd): a fresh
/// name under `corp.test` answered for `app.dept.corp.test` says nothing of
/// `www.county.test`, for which our isolated resolver (reaching nothing outside
/// `corp.test`, as a company's internal resolver whose forwarder is cut) answers no
/// fresh name. Alone that site is `unknown`; checked within 5 s of a broken zone of
/// ours it was a confirmed `down/dns`.
#[tokio::test]
async fn a_zone_of_ours_that_answers_speaks_for_no_other_name_under_its_tld() {
    let [alone, broken, r] = alone_then_after(
        "127.0.7.102",
        "http://app.dept.corp.test:8080/",
        "http://www.county.test:8080/",
    )
    .await;
    assert_eq!(alone.verdict, Verdict::Unknown, "alone: {}", alone.detail);
    let dns = (Verdict::Down, "dns");
    assert_eq!(
        (broken.verdict, broken.reason.as_str()),
        dns,
        "{}",
        broken.detail
    );
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "egress_unavailable"),
        "just after app.dept.corp.test: {}",
        r.detail
    );
}

/// Review Z: the same cache the other way round: a site outside our isolated
/// resolver's zones fails (`unknown`, rightly), and for 5 s a broken zone of ours
/// under the same TLD (review Y's `dept.corp.test`, down for every user) was `unknown`
/// too, though alone it is `down/dns`.
#[tokio::test]
async fn an_outside_failure_speaks_for_no_zone_of_ours_under_its_tld() {
    let [alone, outside, r] = alone_then_after(
        "127.0.7.103",
        "http://www.county.test:8080/",
        "http://app.dept.corp.test:8080/",
    )
    .await;
    assert_eq!(alone.verdict, Verdict::Down, "alone: {}", alone.detail);
    assert_eq!(outside.verdict, Verdict::Unknown, "{}", outside.detail);
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "dns"),
        "just after www.county.test: {}",
        r.detail
    );
}

/// Review Z: `resolver_ok` holds one async mutex over the whole map while it asks
/// (a79babd keys the answer by TLD but kept one lock), so a wave of failed lookups
/// under several TLDs, our resolver silent, is asked one TLD after another: each waits
/// `3 × dns.timeout` for the root question (15 s at the default 5 s) behind every
/// other. The root question does not depend on the TLD, yet is asked again for each.
/// Six sites under six TLDs: the last verdict comes five checks after the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wave_of_failed_lookups_under_several_tlds_is_not_asked_one_tld_at_a_time() {
    let (silent, _) = dns::serve("127.0.7.104", Mode::Silent).await;
    let e = Arc::new(engine(&format!(
        "[dns]\ntimeout = \"1s\"\nmax_concurrent = 64\nnameservers = [\"{silent}\"]\n"
    )));
    let started = std::time::Instant::now();
    let alone = check(&e, "http://www.alone.test:8080/").await;
    let one = started.elapsed();
    assert_eq!(alone.verdict, Verdict::Unknown, "{}", alone.detail);
    let e = Arc::new(engine(&format!(
        "[dns]\ntimeout = \"1s\"\nmax_concurrent = 64\nnameservers = [\"{silent}\"]\n"
    )));
    let urls: Vec<String> = ["com", "org", "net", "de", "uk", "io"]
        .iter()
        .map(|tld| format!("http://www.county.{tld}:8080/"))
        .collect();
    let started = std::time::Instant::now();
    let reports = check_all(&e, &urls).await;
    let all = started.elapsed();
    assert!(
        reports.iter().all(|r| r.verdict == Verdict::Unknown),
        "{:#?}",
        reports.iter().map(|r| &r.detail).collect::<Vec<_>>()
    );
    assert!(
        all < one + Duration::from_secs(3),
        "one failed lookup took {one:?}; six under six TLDs at once took {all:?}"
    );
}

/// Review Z: `not_sent_from_here` (a79babd) takes EACCES from a connect for our own
/// `prohibit` route, "a remote router's ICMP is told as unreachable, never as these".
/// Not over IPv6: Linux turns an ICMPv6 "administratively prohibited" (the site's
/// firewall rejecting the port, firewalld's default `reject`, or a router's ACL) into
/// EACCES too (`icmpv6_err_convert`: ADM_PROHIBITED, POLICY_FAIL and REJECT_ROUTE are
/// all EACCES). The site refuses every visitor (Chrome: ERR_ACCESS_DENIED, curl:
/// "Permission denied"), yet picket says nothing left this worker: `unknown`. Here the
/// site's own INPUT rule rejects the port on ::1; our way out is untouched.
#[test]
fn a_sites_firewall_rejecting_over_ipv6_is_the_sites_down_not_our_route() {
    let reports = check_in_namespace(
        "ip6tables -A INPUT -p tcp --dport 8080 -j REJECT --reject-with icmp6-adm-prohibited",
        "",
        "",
        &["http://[::1]:8080/"],
    );
    let r = &reports[0];
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "connect"),
        "{}",
        r.detail
    );
}

/// Hunt S: a worker whose clock is days off (a VM restored from a snapshot, a host
/// without NTP, an RTC reset) finds every certificate "not valid yet" or "expired": every
/// HTTPS site `degraded/tls`, or a confirmed `down` with `tls.on_error = "down"`, where
/// every browser with a true clock shows the site. The sites say what time it is: the
/// `Date` of their answers. Run as the real binary under libfaketime three days behind,
/// after five answers from other sites.
#[tokio::test]
async fn a_certificate_valid_by_the_sites_clocks_is_our_clock_failing_not_the_site() {
    use crate::support::farm::{server_config, Pki, Signer};
    let dir = tempfile::tempdir().expect("temp dir");
    let (pki, ca_file) = Pki::with_ca_file(dir.path());
    let tls = server_config(&pki, "clock.test", -1, 365, Signer::Ca);
    let https = crate::support::farm::serve_tls("127.0.7.146", tls, &page("secure")).await;
    let mut others = Vec::new();
    for n in 141..=145 {
        others.push(site(&format!("127.0.7.{n}")).await);
    }
    let config = trusting_config(dir.path(), &ca_file, ("clock.test", "127.0.7.146"), "");
    let mut picket = tokio::process::Command::new(env!("CARGO_BIN_EXE_picket"));
    picket
        .args(["check", "--json", "--config"])
        .arg(&config)
        .arg("-")
        .env("LD_PRELOAD", crate::support::libfaketime())
        .env("FAKETIME", "-3d")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    let mut checking = crate::support::picket::Checking::start(picket);
    for other in &others {
        let r = checking.check(&format!("http://{other}/")).await;
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
    }
    let r = checking
        .check(&format!("https://clock.test:{}/", https.port()))
        .await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "local_clock"),
        "{}",
        r.detail
    );
    assert!(
        r.detail
            .contains("this worker's clock, which is 3days behind"),
        "{}",
        r.detail
    );
}

/// A config for one attempt that trusts `ca_file` (with `tls` more of `[tls]`) and finds
/// `site.0` at `site.1`, private targets allowed, written in `dir`.
pub(crate) fn trusting_config(
    dir: &std::path::Path,
    ca_file: &std::path::Path,
    (name, ip): (&str, &str),
    tls: &str,
) -> std::path::PathBuf {
    let config = dir.join("check.toml");
    std::fs::write(
        &config,
        format!(
            "[targets]\nallow_private = true\n[probe]\nattempts = 1\n\
             [tls]\n{tls}extra_ca_file = \"{}\"\n[dns]\nstatic = {{ \"{name}\" = \"{ip}\" }}\n",
            ca_file.display()
        ),
    )
    .expect("config");
    config
}

/// Redis hanging (here stopped with SIGSTOP: connections taken, nothing answered) as a
/// site's request times out: the attempt then tells its failure to the shared limiter,
/// whose call waits out `redis.timeout`. That wait, past the probe's deadline, was
/// taken for our event loop running late ("our own timers ran up to 1493 ms late (this
/// worker is short of CPU)") and a dead site was `unknown/local_resources` (the farm
/// through workers whose Redis hangs, in 2 of 3 CI runs). Our own adapters' wait is no
/// lag: the site had its whole time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_hanging_as_a_request_times_out_is_not_our_event_loop_running_late() {
    let redis = tokio::task::spawn_blocking(crate::support::redis_server::RedisServer::launch)
        .await
        .expect("join")
        .expect("a private redis-server");
    let web = crate::support::targets::serve_raw(
        "127.0.79.2",
        crate::support::targets::raw::never_answer,
    )
    .await;
    let text = format!(
        "[redis]\nurl = \"{}\"\nkey_prefix = \"{}:\"\n[probe]\nretry_delay = \"50ms\"\n\
         [targets]\nallow_private = true\n",
        redis.url(),
        crate::support::unique("hang")
    );
    let s = picket::config::Settings::from_toml(&text).expect("settings");
    let e = crate::support::picket::engine_on_redis(&s);
    let job = serde_json::json!({"url": format!("http://{web}/"), "timeout_ms": 1500});
    let hang = async {
        // The first request is out (its permit taken) and waiting for its answer.
        tokio::time::sleep(Duration::from_millis(700)).await;
        redis.freeze();
    };
    let (r, ()) = tokio::join!(check_job(&e, job), hang);
    redis.thaw();
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "timeout"),
        "{}\n{:#?}",
        r.detail,
        r.attempt_log
    );
}

/// A quiet worker (one check at a time, no canaries) whose only egress's way out begins
/// refusing: the next site, up all along, is refused at both attempts with nothing else
/// asked around them, so the network watch has no cut to tell, and it was a confirmed
/// `down/connect`. A site that answered through the same egress a moment before is
/// asked again: refused too, the way out is ours, `unknown`. With the way out working,
/// a site where nothing listens is still `down`, and the site is `up` once it is mended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_workers_way_out_refusing_is_never_a_sites_down() {
    use crate::support::real::way_out::WayOutCut;
    let ips = [
        "127.0.12.91",
        "127.0.12.92",
        "127.0.12.93",
        "127.0.12.94",
        "127.0.12.95",
    ];
    a_quiet_worker_whose_way_out_is_cut(ips, WayOutCut::refusing).await;
}

/// The same with the way out dropping what the proxy sends (silence, not refusals).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_workers_way_out_going_silent_is_never_a_sites_down() {
    use crate::support::real::way_out::WayOutCut;
    let ips = [
        "127.0.12.96",
        "127.0.12.97",
        "127.0.12.98",
        "127.0.12.99",
        "127.0.12.100",
    ];
    a_quiet_worker_whose_way_out_is_cut(ips, WayOutCut::from).await;
}

/// A quiet worker going out directly, whose own way out begins resetting every
/// connection once it is up (a middlebox of ours): the next site, up all along, is
/// reset at both attempts, as a site whose server resets us, and the network watch
/// counts no reset as a cut. A site that answered a moment before is reset too: ours,
/// `unknown`. A site that resets alone, the witness answering, is still `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_workers_way_out_resetting_every_connection_is_never_a_sites_down() {
    use crate::support::real::way_out::WayOutCut;
    let e = engine("");
    let answered = site("127.0.160.2").await;
    let next = site("127.0.160.3").await;
    expect(&e, &format!("http://{answered}/"), (Verdict::Up, "ok")).await;
    {
        let _alone = WayOutCut::resetting_to("127.0.160.4");
        let resets = site("127.0.160.4").await;
        expect(&e, &format!("http://{resets}/"), (Verdict::Down, "connect")).await;
    }
    {
        let _cut = WayOutCut::resetting_to("127.0.160.0/24");
        let r = check(&e, &format!("http://{next}/")).await;
        assert_witnessed_ours(&r);
    }
    expect(&e, &format!("http://{next}/"), (Verdict::Up, "ok")).await;
}

/// A quiet worker's way out refused for a moment: the next site's two attempts were
/// refused, and the cut was over when a site that answered a moment before was asked
/// again as a witness. It answered, and the site was a confirmed `down/connect`, up all
/// along. The witness shows the way out works now, not that it worked then. So it is
/// asked between the attempts: the cut refuses it too, and the retry, after the cut,
/// answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quiet_workers_way_out_refusing_for_a_moment_is_no_sites_down() {
    use crate::support::real::dante::Dante;
    use crate::support::real::way_out::WayOutCut;
    let (proxy, from) = ("127.0.12.101", "127.0.12.104");
    let dante = Dante::start_from(proxy, from, false);
    let answered = site("127.0.12.102").await;
    let next = site("127.0.12.103").await;
    let e = engine(&format!(
        "[[egress]]\nname = \"dante\"\nproxy = \"{}\"\n",
        dante.url
    ));
    expect(&e, &format!("http://{answered}/"), (Verdict::Up, "ok")).await;
    let _moment = WayOutCut::refusing_first(from, 2);
    let r = check(&e, &format!("http://{next}/")).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Up, "ok"),
        "{}\n{:#?}",
        r.detail,
        r.attempt_log
    );
    let refused = r.attempt_log.iter().filter(|a| a.verdict == Verdict::Down);
    assert_eq!(refused.count(), 1, "{:#?}", r.attempt_log);
}

/// Checks `url` through `e`: its verdict and reason must be `want`.
async fn expect(e: &Engine, url: &str, want: (Verdict, &str)) {
    let r = check(e, url).await;
    assert_eq!((r.verdict, r.reason.as_str()), want, "{url}: {}", r.detail);
}

/// `r` is our way out's failure, as a witness showed it.
fn assert_witnessed_ours(r: &Report) {
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "egress_unavailable"),
        "{}\n{:#?}",
        r.detail,
        r.attempt_log
    );
    assert!(r.detail.contains("now either"), "{}", r.detail);
}

/// One check at a time through a dante on `ips[0]` connecting out from `ips[3]`: a
/// site on `ips[1]` answers, nothing listens on `ips[4]` (`down`), then with the way
/// out cut (`cut`) a site on `ips[2]` is `unknown`; once it is mended, `ips[4]` is
/// `down` at once and `ips[2]` `up`.
async fn a_quiet_worker_whose_way_out_is_cut(
    [proxy, answered, next, from, nobody]: [&str; 5],
    cut: fn(&str) -> crate::support::real::way_out::WayOutCut,
) {
    use crate::support::real::dante::Dante;
    let dante = Dante::start_from(proxy, from, false);
    let e = engine(&format!(
        "[[egress]]\nname = \"dante\"\nproxy = \"{}\"\n",
        dante.url
    ));
    let answered = site(answered).await;
    let next = site(next).await;
    let port = crate::support::free_port();
    expect(&e, &format!("http://{answered}/"), (Verdict::Up, "ok")).await;
    expect(
        &e,
        &format!("http://{nobody}:{port}/"),
        (Verdict::Down, "connect"),
    )
    .await;
    {
        let _cut = cut(from);
        let r = check(&e, &format!("http://{next}/")).await;
        assert_witnessed_ours(&r);
    }
    // Mended, a dead site is its own failure at once: the witness is asked anew.
    expect(
        &e,
        &format!("http://{nobody}:{port}/"),
        (Verdict::Down, "connect"),
    )
    .await;
    expect(&e, &format!("http://{next}/"), (Verdict::Up, "ok")).await;
}

/// Our way out dropping every large packet (a path MTU black hole of ours: a tunnel
/// whose "fragmentation needed" never comes back) lets every connection come up and no
/// page back. No canaries: a quiet worker's next healthy site, and a batch of them,
/// HTTPS too, were each a confirmed `down/timeout` ("no answer within 4999 ms
/// (confirmed by 2 attempts)"). Sites that answered lately through the same way out
/// hang too: ours, `unknown`. Mended, a site that takes the connection and never
/// answers is `down` (the witness answers; the site, asked once more, hangs again).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_way_out_dropping_large_packets_is_never_a_sites_down() {
    use crate::support::farm::{serve_tls, server_config, Pki, Signer};
    use crate::support::real::way_out::WayOutCut;
    let dir = tempfile::tempdir().expect("temp dir");
    let (pki, ca_file) = Pki::with_ca_file(dir.path());
    let tls = server_config(&pki, "big.test", -1, 365, Signer::Ca);
    let big = page(&"w".repeat(20_000));
    let https = serve_tls("127.0.161.2", tls, &big).await;
    let e = engine(&format!(
        "[dns]\nstatic = {{ \"big.test\" = \"127.0.161.2\" }}\n[tls]\nextra_ca_file = \"{}\"\n",
        ca_file.display()
    ));
    let mut sites = Vec::new();
    for n in 3..=10 {
        sites.push(big_site(&format!("127.0.161.{n}"), &big).await);
    }
    let hangs = crate::support::targets::serve_raw(
        "127.0.161.11",
        crate::support::targets::raw::never_answer,
    )
    .await;
    for s in &sites[..3] {
        expect(&e, &format!("http://{s}/"), (Verdict::Up, "ok")).await;
    }
    {
        let _cut = WayOutCut::dropping_large_from("127.0.161.0/24");
        assert_witnessed_ours(&check(&e, &format!("http://{}/", sites[3])).await);
        let urls = sites[4..]
            .iter()
            .map(|s| format!("http://{s}/"))
            .chain([format!("https://big.test:{}/", https.port())]);
        let batch = futures_util::future::join_all(urls.map(|u| {
            let e = &e;
            async move { check(e, &u).await }
        }));
        for r in batch.await {
            assert_witnessed_ours(&r);
        }
    }
    expect(&e, &format!("http://{hangs}/"), (Verdict::Down, "timeout")).await;
    expect(&e, &format!("http://{}/", sites[3]), (Verdict::Up, "ok")).await;
}

/// The same with a canary: a dead site's `down` asked it a moment before (it
/// answered), and a canary answer stands 30 s for a refusal. A hang is no refusal: a
/// way out of ours may let connections up and no page back since, so the canary is
/// asked again, hangs too, and the healthy site is ours, `unknown`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_way_out_dropping_large_packets_is_never_a_sites_down_with_canaries() {
    use crate::support::real::way_out::WayOutCut;
    let big = page(&"w".repeat(20_000));
    let canary = big_site("127.0.162.20", &big).await;
    let healthy = big_site("127.0.162.21", &big).await;
    let e = engine_with(
        &format!("attempts = 2\nconnect_timeout = \"2s\"\ncanaries = [\"http://{canary}/\"]"),
        "",
    );
    let port = crate::support::free_port();
    let nobody = format!("http://127.0.162.22:{port}/");
    expect(&e, &nobody, (Verdict::Down, "connect")).await;
    let _cut = WayOutCut::dropping_large_from("127.0.162.0/24");
    let r = check(&e, &format!("http://{healthy}/")).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Unknown, "egress_unavailable"),
        "{}",
        r.detail
    );
    assert!(r.detail.contains("every canary failed too"), "{}", r.detail);
}

/// A site serving `body` on `ip`.
async fn big_site(ip: &str, body: &str) -> std::net::SocketAddr {
    let body = body.to_string();
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let body = body.clone();
            async move { axum::response::Html(body) }
        }),
    );
    serve(ip, router).await
}
