//! Names through a real nameserver, asked as the probe uses them: IPv4 is tried first,
//! so the A answer comes first and AAAA is asked only when IPv4 gives no address that
//! answers (no A record, or every IPv4 address refused). Half the queries of asking
//! both at once, with the same fallback to IPv6.
//!
//! Engine in process, the test nameserver of `support::dns`.

use std::collections::HashMap;
use std::net::IpAddr;

use picket::job::{Report, Verdict};

use crate::support::dns::{self, Asked, Mode};
use crate::support::picket::{check, engine_with, page, Checking};
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

/// Probes `name` on the port of a site served on `site_ip`, through a test nameserver
/// on `ns_ip` that gives `name` the addresses `ips`: the report, and the queries asked.
async fn probe(name: &str, ips: &[&str], site_ip: &str, ns_ip: &str) -> (Report, Asked) {
    ipv6_loopback();
    let web = site(site_ip).await;
    let (ns, asked) = dns::serve_counting(ns_ip, Mode::Answer(table(name, ips))).await;
    let r = check(&engine(ns), &format!("http://{name}:{}/", web.port())).await;
    (r, asked)
}

fn assert_up_from(r: &Report, ip: &str) {
    let got = (r.verdict, r.reason.as_str(), r.ip.as_deref());
    assert_eq!(got, (Verdict::Up, "ok", Some(ip)), "{}", r.detail);
}

#[tokio::test]
async fn a_name_that_answers_over_ipv4_costs_one_query() {
    let ips = ["127.0.7.21", "::1"];
    let (r, asked) = probe("www.four.test", &ips, "127.0.7.21", "127.0.7.22").await;
    assert_up_from(&r, "127.0.7.21");
    assert_eq!(asked.now(), (1, 0), "one A query, no AAAA: (all, AAAA)");
}

/// Host names with an underscore inside a label (`my_dept.example.gov`) break the rules
/// for host names but not DNS's, and browsers and curl resolve them (getaddrinfo asks).
/// picket refused them before asking: `down/dns`, "Label contains invalid characters".
#[tokio::test]
async fn a_name_with_an_underscore_in_a_label_is_asked_and_found() {
    let (r, asked) = probe(
        "my_dept.five.test",
        &["127.0.7.29"],
        "127.0.7.29",
        "127.0.7.30",
    )
    .await;
    assert_up_from(&r, "127.0.7.29");
    assert_eq!(asked.now(), (1, 0), "one A query");
}

#[tokio::test]
async fn ipv6_is_asked_when_no_ipv4_address_answers() {
    // Nothing listens on 127.0.7.23 at the site's port: the IPv4 address refuses.
    let ips = ["127.0.7.23", "::1"];
    let (r, asked) = probe("www.dual.test", &ips, "::1", "127.0.7.24").await;
    assert_up_from(&r, "::1");
    assert!(
        r.detail.contains("127.0.7.23"),
        "the refused address is named: {}",
        r.detail
    );
    assert_eq!(asked.now(), (2, 1), "A, then AAAA once IPv4 had failed");
}

#[tokio::test]
async fn an_ipv6_only_name_is_found() {
    let (r, asked) = probe("www.six.test", &["::1"], "::1", "127.0.7.25").await;
    assert_up_from(&r, "::1");
    assert_eq!(asked.now(), (2, 1), "A (no data), then AAAA");
}

#[tokio::test]
async fn a_name_with_no_address_of_either_kind_is_down_for_dns() {
    let (r, asked) = probe("www.none.test", &[], "127.0.7.26", "127.0.7.27").await;
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

#[tokio::test]
async fn a_nameserver_that_never_answers_a_is_not_asked_for_aaaa_too() {
    // Asking AAAA after the A query timed out would double the wait for a silent
    // nameserver (both used to go out at once) for an answer that will not come.
    let (ns, asked) = dns::serve_counting("127.0.7.28", Mode::Silent).await;
    let r = check(&engine(ns), "http://www.silent.test/").await;
    assert_ne!(r.verdict, Verdict::Up, "{}", r.detail);
    let (all, aaaa) = asked.now();
    assert!(all > 0, "the nameserver was asked");
    assert_eq!(aaaa, 0, "no AAAA after the A query timed out: {}", r.detail);
    assert!(
        r.detail.contains("DNS lookup timed out after"),
        "the lookup's own timeout ended it, not the probe's deadline: {}",
        r.detail
    );
}

/// Hunt S: a name pinned in `/etc/hosts` to one address family (an operator watching
/// one origin server behind a CDN's name) was asked of DNS for the other: hickory's
/// hosts file answers only the record type asked. The pinned address refused, DNS's
/// IPv6 address answered, and the result was `up`, the CDN's health, where glibc's
/// `files` source answers for the name alone and curl failed. Run as the real binary
/// in a mount namespace of its own (`unshare -m`, as root, as CI runs), whose
/// `/etc/hosts` is a file of the test's.
#[tokio::test]
async fn a_name_pinned_in_etc_hosts_is_asked_of_no_nameserver() {
    ipv6_loopback();
    let web = site("::1").await;
    let table = table("pinned.test", &["127.0.7.31", "::1"]);
    let (ns, asked) = dns::serve_counting("127.0.7.32", Mode::Answer(table)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n::1 localhost\n# nothing listens here\n127.0.7.33 pinned.test\n",
    )
    .expect("hosts");
    let config = dir.path().join("check.toml");
    std::fs::write(
        &config,
        format!(
            "[targets]\nallow_private = true\n[probe]\nattempts = 1\n\
             [dns]\ntimeout = \"1s\"\nnameservers = [\"{ns}\"]\n"
        ),
    )
    .expect("config");
    let script = format!(
        "mount --bind {} /etc/hosts && exec {} check --json --config {} http://pinned.test:{}/",
        hosts.display(),
        env!("CARGO_BIN_EXE_picket"),
        config.display(),
        web.port()
    );
    let out = tokio::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .env_remove("PICKET_CONFIG")
        .output()
        .await
        .expect("unshare (util-linux) runs picket in a mount namespace of its own");
    let r: Report = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "no result ({e}); stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    let got = (r.verdict, r.reason.as_str(), r.ip.as_deref());
    assert_eq!(
        got,
        (Verdict::Down, "connect", Some("127.0.7.33")),
        "{}",
        r.detail
    );
    assert_eq!(asked.now(), (0, 0), "no nameserver asked: (all, AAAA)");
}

/// `picket check --json --config <config> -` in a mount namespace of its own, each
/// (file, onto) of `mounts` bind-mounted first (`/etc/hosts`, `/etc/resolv.conf`).
pub(crate) fn checking_mounted(
    mounts: &[(&std::path::Path, &str)],
    config: &std::path::Path,
) -> Checking {
    let binds: Vec<String> = mounts
        .iter()
        .map(|(file, onto)| format!("mount --bind {} {onto} && ", file.display()))
        .collect();
    let script = format!(
        "{}exec {} check --json --config {} -",
        binds.concat(),
        env!("CARGO_BIN_EXE_picket"),
        config.display(),
    );
    let mut unshare = tokio::process::Command::new("unshare");
    unshare.args(["-m", "sh", "-c", &script]);
    Checking::start(unshare)
}

/// How long after an edit of `/etc/hosts` or `/etc/resolv.conf` the tests below ask
/// again: the worker looks at both files every 2 s, as Go's resolver (blackbox_exporter,
/// Gatus) looks every 5 s and glibc at each lookup.
const AFTER_AN_EDIT: std::time::Duration = std::time::Duration::from_millis(2500);

/// A config whose `[dns]` is `dns` (short timeouts), private targets allowed.
pub(crate) fn write_config(dir: &std::path::Path, dns: &str) -> std::path::PathBuf {
    let config = dir.join("check.toml");
    std::fs::write(
        &config,
        format!(
            "[targets]\nallow_private = true\n[probe]\nattempts = 1\nconnect_timeout = \"2s\"\n\
             [dns]\ntimeout = \"1s\"\n{dns}"
        ),
    )
    .expect("config");
    config
}

/// Session of 2026-12-02 (hunt S left it): `/etc/hosts` was read once, at start. An
/// operator who pins a site to its new server in `/etc/hosts` (or Kubernetes's
/// `hostAliases`, Docker's `--add-host` on a restart of the sidecar) expects the next
/// check to go there, as curl's and every Go monitor's do; a worker running for weeks
/// kept asking the old address until restarted. The file is rewritten in place (the
/// bind mount holds its inode, as Docker's and Kubernetes's do).
#[tokio::test]
async fn an_edit_of_etc_hosts_is_followed_without_a_restart() {
    let web = site("127.0.7.34").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let hosts = dir.path().join("hosts");
    let pinned = |ip: &str| format!("127.0.0.1 localhost\n::1 localhost\n{ip} edited.test\n");
    std::fs::write(&hosts, pinned("127.0.7.34")).expect("hosts");
    let config = write_config(dir.path(), "");
    let mut checking = checking_mounted(&[(&hosts, "/etc/hosts")], &config);
    let url = format!("http://edited.test:{}/", web.port());
    assert_up_from(&checking.check(&url).await, "127.0.7.34");

    // Moved to a server where nothing listens yet.
    edited_then_asked(
        &mut checking,
        &hosts,
        pinned("127.0.7.35"),
        &url,
        "127.0.7.35",
    )
    .await;
}

/// The same for `/etc/resolv.conf`: a worker using the system's resolver kept asking
/// the nameserver of its start after the host's was changed (a DHCP lease, a VPN, a
/// resolver moved), where glibc rereads the file when it changes. Nameservers named
/// there listen on port 53, which a `resolv.conf` cannot change.
#[tokio::test]
async fn an_edit_of_resolv_conf_is_followed_without_a_restart() {
    let web = site("127.0.7.37").await;
    let (old_ns, _) = dns::serve_on(
        "127.0.7.36",
        53,
        Mode::Answer(table("moved.test", &["127.0.7.37"])),
    )
    .await;
    let (new_ns, asked) = dns::serve_on(
        "127.0.7.38",
        53,
        Mode::Answer(table("moved.test", &["127.0.7.39"])),
    )
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let resolv = dir.path().join("resolv.conf");
    let naming = |ns: std::net::SocketAddr| format!("nameserver {}\n", ns.ip());
    std::fs::write(&resolv, naming(old_ns)).expect("resolv.conf");
    let config = write_config(dir.path(), "");
    let mut checking = checking_mounted(&[(&resolv, "/etc/resolv.conf")], &config);
    let url = format!("http://moved.test:{}/", web.port());
    assert_up_from(&checking.check(&url).await, "127.0.7.37");

    edited_then_asked(&mut checking, &resolv, naming(new_ns), &url, "127.0.7.39").await;
    assert!(asked.now().0 >= 1, "the new nameserver asked");
}

/// Rewrites `file` in place with `text`, waits for picket to look at it, and checks
/// `url` again: it must now be asked at `ip`, where nothing listens.
async fn edited_then_asked(
    checking: &mut Checking,
    file: &std::path::Path,
    text: String,
    url: &str,
    ip: &str,
) {
    std::fs::write(file, text).expect("rewritten in place");
    tokio::time::sleep(AFTER_AN_EDIT).await;
    let r = checking.check(url).await;
    let got = (r.verdict, r.reason.as_str(), r.ip.as_deref());
    assert_eq!(got, (Verdict::Down, "connect", Some(ip)), "{}", r.detail);
}

/// Hunt S: a `resolv.conf` that names no nameserver (a minimal container's, or one
/// emptied by a network manager) stopped every command at start, even for sites of
/// `dns.static`, with "no nameservers found in config". glibc then asks 127.0.0.1, as
/// does curl and everything built on it; picket does the same, and a site it is told
/// the address of is checked.
#[tokio::test]
async fn a_resolv_conf_naming_no_nameserver_means_the_local_one_as_for_glibc() {
    let web = site("127.0.7.40").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let resolv = dir.path().join("resolv.conf");
    std::fs::write(
        &resolv,
        "# emptied by the network manager\nsearch example.test\n",
    )
    .expect("resolv.conf");
    let config = write_config(
        dir.path(),
        "static = { \"pinned.test\" = \"127.0.7.40\" }\n",
    );
    let mut checking = checking_mounted(&[(&resolv, "/etc/resolv.conf")], &config);
    let url = format!("http://pinned.test:{}/", web.port());
    assert_up_from(&checking.check(&url).await, "127.0.7.40");
}

/// Hunt S: an ad-blocking hosts file on the worker's own host (`0.0.0.0 tracker.example`,
/// as Pi-hole's and StevenBlack's lists write) that names a monitored site made it
/// `down/dns` "resolves only to 0.0.0.0 (a DNS sinkhole): no visitor can reach it": a
/// confirmed outage that was this worker's own configuration, where every visitor
/// reaches the site. A sinkhole of our own hosts file (or `dns.static`) is our policy
/// refusing the target, not the site's DNS.
#[tokio::test]
async fn a_name_our_own_hosts_file_sinks_is_refused_by_us_not_down() {
    let dir = tempfile::tempdir().expect("temp dir");
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n0.0.0.0 sunk.test\n").expect("hosts");
    let config = write_config(dir.path(), "");
    let mut checking = checking_mounted(&[(&hosts, "/etc/hosts")], &config);
    let r = checking.check("http://sunk.test/").await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Invalid, "blocked_target"),
        "{}",
        r.detail
    );
}
