//! Review AA: holes in the sites' clock (`http::sites_clock`) and in the rereading of
//! `/etc/hosts` and `/etc/resolv.conf` (`dns::host_files`). Every test here fails
//! against the code it was written for; each says what an operator or a subscriber
//! would see. Loopback addresses 127.0.8.1 - 127.0.8.80 only.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime};

use axum::response::IntoResponse;
use picket::job::{Report, Verdict};

use crate::our_side::trusting_config;
use crate::resolving::{checking_mounted, write_config};
use crate::support::farm::{serve_tls, server_config, Pki, Signer};
use crate::support::picket::{check, engine_with, page, Checking};
use crate::support::serve;

const DAY: Duration = Duration::from_secs(86_400);

/// The `Date` a test site sends.
#[derive(Clone)]
enum Date {
    /// hyper's own: the true time.
    True,
    /// The true time less this much (a server whose clock is behind).
    Behind(Duration),
    /// This string, whatever the time (a device without a clock).
    Fixed(&'static str),
}

/// A site at `ip` answering `/` with a page, or with a redirect to `to`, its `Date` as
/// `date` says.
async fn dated_site(ip: &str, date: Date, to: Option<String>) -> SocketAddr {
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let (date, to) = (date.clone(), to.clone());
            async move {
                let mut resp = match to {
                    Some(url) => axum::response::Redirect::to(&url).into_response(),
                    None => axum::response::Html(page("dated")).into_response(),
                };
                let value = match date {
                    Date::True => None,
                    Date::Behind(d) => Some(httpdate::fmt_http_date(SystemTime::now() - d)),
                    Date::Fixed(s) => Some(s.to_string()),
                };
                if let Some(v) = value {
                    resp.headers_mut()
                        .insert(axum::http::header::DATE, v.parse().expect("a Date"));
                }
                resp
            }
        }),
    );
    serve(ip, router).await
}

fn verdict(r: &Report) -> (Verdict, &str) {
    (r.verdict, r.reason.as_str())
}

/// The sites' clock counts one vote per address, "so a few servers whose own clock is
/// wrong move nothing". But every hop of a redirect chain votes: ONE URL (one job of one
/// subscriber, or one broken site whose redirects cross its own addresses: a wildcard
/// name, an IPv6 /64 gives any number) whose six hops say the time is 30 days earlier
/// outvotes five honest sites. From then on, with this worker's clock right, a site whose
/// certificate truly expired yesterday (every browser refuses it) is reported
/// `unknown/local_clock` ("this worker's clock is 30 days ahead: set its time"): a real
/// outage hidden, and the operator sent to fix a clock that is right.
#[tokio::test]
async fn one_url_whose_redirects_cross_six_addresses_outvotes_five_sites_and_hides_an_expired_certificate(
) {
    let (e, url, _dir) = tls_site("expired.test", "127.0.8.1", (-30, -1)).await;
    let r = check(&e, &url).await;
    assert_eq!(verdict(&r), (Verdict::Degraded, "tls"), "{}", r.detail);

    for n in 2..=6 {
        let honest = dated_site(&format!("127.0.8.{n}"), Date::True, None).await;
        let r = check(&e, &format!("http://{honest}/")).await;
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
    }
    // One URL: a chain over six addresses, each 30 days behind the world.
    let mut next: Option<String> = None;
    for n in (7..=12).rev() {
        let hop = dated_site(&format!("127.0.8.{n}"), Date::Behind(30 * DAY), next).await;
        next = Some(format!("http://{hop}/"));
    }
    let r = check(&e, next.as_deref().expect("the chain")).await;
    assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);

    let r = check(&e, &url).await;
    assert_eq!(
        verdict(&r),
        (Verdict::Degraded, "tls"),
        "a certificate expired yesterday, our clock right, after one URL's redirects: {}",
        r.detail
    );
}

/// Printers, cameras, UPS cards and routers without a battery-backed clock answer with a
/// `Date` in January 1970. A worker watching five of them (and three websites) takes
/// 1970 for the world's time: no Date before picket itself was built can be. Every
/// certificate's days are then counted from 1970: a site whose certificate expires in
/// three days (`tls.expiry_warn_days` = 14) is `up/ok`, where it was `degraded/tls`
/// "expires in 2 days" a moment before: the warning the operator set up never comes (a
/// false up), and an already expired one would be `unknown/local_clock`.
#[tokio::test]
async fn devices_answering_with_a_date_in_1970_silence_the_warning_of_a_certificate_about_to_expire(
) {
    let (e, url, _dir) = tls_site("soon.test", "127.0.8.13", (-60, 3)).await;
    let r = check(&e, &url).await;
    assert_eq!(verdict(&r), (Verdict::Degraded, "tls"), "{}", r.detail);

    for n in 14..=16 {
        let web = dated_site(&format!("127.0.8.{n}"), Date::True, None).await;
        let r = check(&e, &format!("http://{web}/")).await;
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
    }
    for n in 17..=21 {
        let device = dated_site(
            &format!("127.0.8.{n}"),
            Date::Fixed("Thu, 01 Jan 1970 00:07:12 GMT"),
            None,
        )
        .await;
        let r = check(&e, &format!("http://{device}/")).await;
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
    }

    let r = check(&e, &url).await;
    assert_eq!(
        verdict(&r),
        (Verdict::Degraded, "tls"),
        "a certificate expiring in 3 days, after five devices dated 1970: {}",
        r.detail
    );
}

/// `picket check --json --config <config> -` under libfaketime, its offset read from
/// `clock` (changed while it runs: a clock stepped), the monotonic clock left true.
fn checking_faked(config: &std::path::Path, clock: &std::path::Path) -> Checking {
    let mut picket = tokio::process::Command::new(env!("CARGO_BIN_EXE_picket"));
    picket
        .args(["check", "--json", "--config"])
        .arg(config)
        .arg("-")
        .env("LD_PRELOAD", crate::support::libfaketime())
        .env("FAKETIME_TIMESTAMP_FILE", clock)
        .env("FAKETIME_NO_CACHE", "1")
        .env("FAKETIME_DONT_FAKE_MONOTONIC", "1");
    Checking::start(picket)
}

/// The case hunt S was for: a VM restored from a snapshot, its clock days off, until NTP
/// (chrony's `makestep`, systemd-timesyncd) steps it right, seconds or minutes later.
/// The sites' clock keeps each answer as an offset from OUR clock at the time: once
/// ours is stepped, every stored offset is wrong by the step, and stays until the
/// addresses answer again (an address never asked again, forever). Here the worker is 3
/// days ahead, five sites answer, NTP steps the clock right; the next check of a site
/// whose certificate truly expired yesterday is `unknown/local_clock` ("this worker's
/// clock is 3days ahead": it no longer is), where a worker that never was wrong says
/// `degraded/tls`. Anchoring each answer to the monotonic clock (their time, plus the
/// time since, against our wall clock now) would follow the step at once.
#[tokio::test]
async fn a_clock_stepped_right_by_ntp_keeps_the_old_offset_and_hides_an_expired_certificate() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pki, ca_file) = Pki::with_ca_file(dir.path());
    let expired = server_config(&pki, "expired.test", -30, -1, Signer::Ca);
    let https = serve_tls("127.0.8.22", expired, &page("expired")).await;
    let config = trusting_config(dir.path(), &ca_file, ("expired.test", "127.0.8.22"), "");
    let clock = dir.path().join("faketime");
    std::fs::write(&clock, "+3d\n").expect("faketime");
    let mut checking = checking_faked(&config, &clock);
    for n in 23..=27 {
        let web = dated_site(&format!("127.0.8.{n}"), Date::True, None).await;
        let r = checking.check(&format!("http://{web}/")).await;
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
    }
    // NTP steps the clock right.
    std::fs::write(&clock, "+0\n").expect("faketime");
    tokio::time::sleep(Duration::from_millis(200)).await;

    let r = checking
        .check(&format!("https://expired.test:{}/", https.port()))
        .await;
    assert_eq!(
        verdict(&r),
        (Verdict::Degraded, "tls"),
        "a certificate expired yesterday, our clock right again: {}",
        r.detail
    );
}

/// `openssl s_server` on `ip` speaking only legacy TLS (TLS 1.2, one CBC suite) with
/// `cert` and `key` (written into `dir`): its port, and what stops it when dropped.
pub(crate) fn legacy_tls_server(
    ip: &str,
    dir: &std::path::Path,
    cert: &str,
    key: &str,
) -> (u16, LegacyServer) {
    let cert_file = dir.join("cert.pem");
    let key_file = dir.join("key.pem");
    std::fs::write(&cert_file, cert).expect("cert");
    std::fs::write(&key_file, key).expect("key");
    let port = std::net::TcpListener::bind((ip, 0))
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let server = std::process::Command::new("sh")
        .arg("-c")
        .arg(r#"openssl s_server -quiet -www -accept "$0" -cert "$1" -key "$2" -tls1_2 -cipher ECDHE-RSA-AES128-SHA </dev/null >/dev/null 2>&1 & pid=$!; read _; kill "$pid""#)
        .arg(format!("{ip}:{port}"))
        .arg(&cert_file)
        .arg(&key_file)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("openssl s_server");
    let t = std::time::Instant::now();
    while std::net::TcpStream::connect((ip, port)).is_err() {
        assert!(t.elapsed() < Duration::from_secs(10), "s_server listens");
        std::thread::sleep(Duration::from_millis(50));
    }
    (port, LegacyServer(server))
}

/// A running `openssl s_server`, stopped (its stdin closed) when dropped.
pub(crate) struct LegacyServer(std::process::Child);

impl Drop for LegacyServer {
    fn drop(&mut self) {
        drop(self.0.stdin.take());
        let _ = self.0.wait();
    }
}

/// A CA and an RSA certificate for `name` (valid from `from` to `to` days from now) for
/// `openssl s_server`: (CA PEM, certificate PEM, key PEM).
pub(crate) fn rsa_site(name: &str, from: i64, to: i64) -> (String, String, String) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs() as i64;
    let at = |days: i64| {
        rcgen::date_time_ymd(1970, 1, 1) + Duration::from_secs((now + days * 86_400) as u64)
    };
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca.distinguished_name
        .push(DnType::CommonName, "review AA CA");
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    ca.not_before = at(-10);
    ca.not_after = at(3650);
    let ca = ca.self_signed(&ca_key).expect("CA");
    let key = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).expect("RSA key");
    let mut leaf = CertificateParams::new(vec![name.to_string()]).expect("leaf params");
    leaf.distinguished_name.push(DnType::CommonName, name);
    leaf.not_before = at(from);
    leaf.not_after = at(to);
    let leaf = leaf.signed_by(&key, &ca, &ca_key).expect("leaf");
    (ca.pem(), leaf.pem(), key.serialize_pem())
}

/// The OpenSSL path was left out. A site that speaks only legacy TLS (TLS 1.2 with a
/// CBC suite: rustls fails, picket asks again over OpenSSL, as browsers would) is
/// checked by a worker three days behind, after five sites told it so. Its certificate
/// is valid by the sites' clock and, by ours, not valid for two more days: OpenSSL's
/// failure is no rustls `NotValidYetContext`, so it is never put down to our clock, and
/// the site is `down/tls` (`tls.on_error = "down"`): a false down, where a rustls site
/// in the same state is `unknown/local_clock`.
#[tokio::test]
async fn a_legacy_tls_site_valid_by_the_sites_clock_is_not_down_for_our_clock() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (ca, cert, key) = rsa_site("legacy.test", -1, 90);
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca).expect("CA");
    let (port, server) = legacy_tls_server("127.0.8.36", dir.path(), &cert, &key);
    let down = "on_error = \"down\"\n";
    let config = trusting_config(dir.path(), &ca_file, ("legacy.test", "127.0.8.36"), down);
    let clock = dir.path().join("faketime");
    std::fs::write(&clock, "-3d\n").expect("faketime");
    let mut checking = checking_faked(&config, &clock);
    for n in 31..=35 {
        let web = dated_site(&format!("127.0.8.{n}"), Date::True, None).await;
        let r = checking.check(&format!("http://{web}/")).await;
        assert_eq!(r.verdict, Verdict::Up, "{}", r.detail);
    }
    let r = checking
        .check(&format!("https://legacy.test:{port}/"))
        .await;
    drop(server);
    assert_eq!(
        verdict(&r),
        (Verdict::Unknown, "local_clock"),
        "a legacy-TLS site valid by the sites' clock, ours 3 days behind: {}",
        r.detail
    );
}

/// A site named `name` on `ip` over TLS, its certificate of a test CA valid from `days.0`
/// to `days.1` days from now; an engine that trusts the CA and finds `name` at `ip`; the
/// site's URL; the directory of the CA's file.
async fn tls_site(
    name: &str,
    ip: &str,
    days: (i64, i64),
) -> (picket::engine::Engine, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (pki, ca_file) = Pki::with_ca_file(dir.path());
    let config = server_config(&pki, name, days.0, days.1, Signer::Ca);
    let https = serve_tls(ip, config, &page(name)).await;
    let e = engine_with(
        "attempts = 1",
        &format!(
            "[tls]\nextra_ca_file = \"{}\"\n[dns]\nstatic = {{ \"{name}\" = \"{ip}\" }}\n",
            ca_file.display()
        ),
    );
    (e, format!("https://{name}:{}/", https.port()), dir)
}

/// A site at `ip` that can be shut down (its port then refuses).
async fn stoppable_site(ip: &str) -> (SocketAddr, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .expect("bind the site");
    let addr = listener.local_addr().expect("its address");
    let router = axum::Router::new().route(
        "/",
        axum::routing::get(|| async { axum::response::Html(page("old")) }),
    );
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    (addr, task)
}

/// A pin REMOVED from /etc/hosts is still followed. picket reads the hosts file again,
/// but every hickory resolver it builds (the pool, each nameserver alone) keeps its own
/// copy of /etc/hosts, read when it was built (`use_hosts_file` is left at `Auto`), and
/// a name picket's fresh copy no longer has is asked of that pool, which answers from
/// the stale copy without asking DNS. An operator pinned a site to a temporary server
/// during a migration, then deletes the pin and shuts that server down: the worker
/// keeps connecting to it and reports a confirmed `down/connect` for a site that is up
/// at the address its DNS gives, until a restart (forever with `dns.nameservers` set,
/// or until resolv.conf happens to change).
#[tokio::test]
async fn a_pin_removed_from_etc_hosts_is_still_followed_from_hickorys_own_copy() {
    let (old, old_site) = stoppable_site("127.0.8.42").await;
    let new = {
        // The site at its DNS address listens on the same port as the old server did.
        let listener = tokio::net::TcpListener::bind(("127.0.8.43", old.port()))
            .await
            .expect("bind the site at its DNS address");
        let router = axum::Router::new().route(
            "/",
            axum::routing::get(|| async { axum::response::Html(page("new")) }),
        );
        tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        SocketAddr::from(([127, 0, 8, 43], old.port()))
    };
    let table = std::collections::HashMap::from([("moved.test".to_string(), vec![new.ip()])]);
    let (ns, _) =
        crate::support::dns::serve("127.0.8.53", crate::support::dns::Mode::Answer(table)).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 localhost\n127.0.8.42 moved.test\n").expect("hosts");
    let config = write_config(dir.path(), &format!("nameservers = [\"{ns}\"]\n"));
    let mut checking = checking_mounted(&[(&hosts, "/etc/hosts")], &config);
    let url = format!("http://moved.test:{}/", old.port());
    let r = checking.check(&url).await;
    assert_eq!(
        (r.verdict, r.ip.as_deref()),
        (Verdict::Up, Some("127.0.8.42")),
        "{}",
        r.detail
    );

    // The migration is over: the pin goes, the temporary server too.
    std::fs::write(&hosts, "127.0.0.1 localhost\n").expect("hosts");
    old_site.abort();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = checking.check(&url).await;
    assert_eq!(
        (r.verdict, r.reason.as_str(), r.ip.as_deref()),
        (Verdict::Up, "ok", Some("127.0.8.43")),
        "the pin removed, DNS says 127.0.8.43: {}",
        r.detail
    );
}

/// The hosts file's reading never fails: hickory's `Hosts::from_system` refuses a file
/// with a byte that is not UTF-8 anywhere (a comment saved in Latin-1, "# Zürich
/// office"), and `unwrap_or_default` makes that an EMPTY hosts file, taken as a good
/// reading ("read again: it changed"). The change promises that "a changed file that
/// cannot be read leaves the last reading in place"; glibc (curl, browsers) reads the
/// file byte by byte and still finds every pin. Here an operator adds such a comment
/// and keeps the pin, and the host's DHCP lease then adds a second nameserver to
/// resolv.conf (the nameservers are rebuilt, and with them hickory's own copy of the
/// hosts file, which was hiding the loss): the pinned site, which DNS does not know, is
/// a confirmed `down/dns`.
#[tokio::test]
async fn a_latin1_comment_added_to_etc_hosts_drops_every_pin_and_the_site_is_down() {
    use crate::support::dns::{serve_on, Mode};
    let (_first, _) = serve_on("127.0.8.53", 53, Mode::Answer(Default::default())).await;
    let (_second, _) = serve_on("127.0.8.54", 53, Mode::Answer(Default::default())).await;
    let web = dated_site("127.0.8.41", Date::True, None).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let hosts = dir.path().join("hosts");
    let resolv = dir.path().join("resolv.conf");
    let pinned = b"127.0.0.1 localhost\n127.0.8.41 pinned.test\n".to_vec();
    std::fs::write(&hosts, &pinned).expect("hosts");
    std::fs::write(&resolv, "nameserver 127.0.8.53\n").expect("resolv.conf");
    let config = write_config(dir.path(), "");
    let mut checking = checking_mounted(
        &[(&hosts, "/etc/hosts"), (&resolv, "/etc/resolv.conf")],
        &config,
    );
    let url = format!("http://pinned.test:{}/", web.port());
    let r = checking.check(&url).await;
    assert_eq!(verdict(&r), (Verdict::Up, "ok"), "{}", r.detail);

    // The pin stays; a comment in Latin-1 is added ("Zürich", ü = 0xFC).
    let mut edited = pinned.clone();
    edited.extend_from_slice(b"# Z\xfcrich office\n");
    std::fs::write(&hosts, &edited).expect("hosts");
    std::fs::write(&resolv, "nameserver 127.0.8.53\nnameserver 127.0.8.54\n").expect("resolv.conf");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let r = checking.check(&url).await;
    assert_eq!(
        (r.verdict, r.reason.as_str(), r.ip.as_deref()),
        (Verdict::Up, "ok", Some("127.0.8.41")),
        "the pin still in /etc/hosts: {}",
        r.detail
    );
}

/// Hunt S made a resolv.conf naming no nameserver mean 127.0.0.1, as glibc does, so a
/// minimal container could run `picket check` on a `dns.static` site. glibc says the
/// same of a resolv.conf that is not there at all (resolv.conf(5): "If this file does
/// not exist, only the name server on the local machine will be queried"), and the
/// common way it is not there is a dangling symlink: `/etc/resolv.conf ->
/// /run/systemd/resolve/stub-resolv.conf` in a container or chroot where
/// systemd-resolved does not run, or early at boot. picket still refuses to start:
/// "DNS resolver could not be configured: /etc/resolv.conf: No such file or directory",
/// and nothing is checked, not even a site no name is asked for.
#[test]
fn a_resolv_conf_that_is_a_dangling_symlink_at_start_stops_picket_check() {
    let dir = tempfile::tempdir().expect("temp dir");
    let etc = dir.path().join("etc");
    let status = std::process::Command::new("cp")
        .args(["-a", "/etc/."])
        .arg(&etc)
        .status()
        .expect("cp");
    assert!(status.success(), "a copy of /etc");
    let copied = etc.join("resolv.conf");
    std::fs::remove_file(&copied).expect("the copy's resolv.conf");
    std::os::unix::fs::symlink(dir.path().join("run/stub-resolv.conf"), &copied)
        .expect("a dangling symlink");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let web = rt.block_on(dated_site("127.0.8.45", Date::True, None));
    let config = dir.path().join("check.toml");
    std::fs::write(
        &config,
        "[targets]\nallow_private = true\n[probe]\nattempts = 1\n\
         [dns]\nstatic = { \"static.test\" = \"127.0.8.45\" }\n",
    )
    .expect("config");
    let script = format!(
        "mount --bind {} /etc && exec {} check --json --config {} http://static.test:{}/",
        etc.display(),
        env!("CARGO_BIN_EXE_picket"),
        config.display(),
        web.port()
    );
    let out = std::process::Command::new("unshare")
        .args(["-m", "sh", "-c", &script])
        .output()
        .expect("unshare");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let report: Option<Report> = stdout
        .lines()
        .find_map(|line| serde_json::from_str(line).ok());
    let got = report
        .as_ref()
        .map(|r| (r.verdict, r.reason.as_str().to_string()));
    assert_eq!(
        got,
        Some((Verdict::Up, "ok".to_string())),
        "a dns.static site, /etc/resolv.conf a dangling symlink: exit {:?}\nstdout: {stdout}\nstderr: {stderr}",
        out.status.code()
    );
    drop(rt);
}
