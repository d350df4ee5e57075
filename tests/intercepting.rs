//! A corporate egress that intercepts TLS (squid with `ssl_bump`) takes every tunnel for
//! TLS. picket asks for plain http through a tunnel to the counted address, so such a
//! proxy closed every plain-http request without an answer: every plain-http site was
//! a confirmed `down/connect` (hunt Z2). Browsers send plain http to a proxy in absolute
//! form, which such a proxy forwards.

use picket::job::Verdict;

use crate::proxy_pin::{assert_up_at, engine, Vhosts, NAME};
use crate::proxy_words::assert_egress_failed;
use crate::support::dns;
use crate::support::free_port;
use crate::support::real::squid::Squid;
use crate::support::real::write;
use crate::support::real::Loose;

/// A nameserver on port 53 of `ip` that answers every name NXDOMAIN at once, as a
/// company's resolver does for `.invalid`; its address.
async fn resolver(ip: &str) -> String {
    let (addr, _) = dns::serve_on(ip, 53, dns::Mode::Answer(Default::default())).await;
    addr.ip().to_string()
}

/// A CA of the egress's own (certificate and key in one PEM file), as squid takes it:
/// its dir and its path.
fn bump_ca() -> (Loose, String) {
    let key = rcgen::KeyPair::generate().expect("key");
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("CA");
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.distinguished_name.push(
        rcgen::DnType::CommonName,
        "picket test corporate interception CA",
    );
    let cert = params.self_signed(&key).expect("CA certificate");
    let dir = Loose::new("bump-ca");
    let pem = format!("{}{}", cert.pem(), key.serialize_pem());
    let path = write(&dir.0, "bump.pem", &pem).display().to_string();
    (dir, path)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_intercepting_proxy_is_asked_for_plain_http_by_name() {
    let site_ip = "127.0.63.30";
    let site = Vhosts::start(site_ip, &[NAME]);
    let (_ca_dir, ca) = bump_ca();
    let squid = Squid::bumping(
        "127.0.63.31",
        &[(NAME, site_ip)],
        (&ca, &site.ca_file),
        &resolver("127.0.63.34").await,
    );
    let e = engine(&squid.url, &site.ca_file, true, &[(NAME, site_ip)]);
    let url = format!("http://{NAME}:{}/", site.http);
    for _ in 0..2 {
        let r = check(&e, &url).await;
        assert_up_at(&r, site_ip, &url);
        assert!(r.detail.contains("by name"), "{}", r.detail);
    }
    // What the proxy reports of a site that refuses is still the site's.
    let closed = format!("http://{NAME}:{}/", free_port());
    let r = check(&e, &closed).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "connect"),
        "{closed}: {}",
        r.detail
    );
    let log = squid.daemon.read("access.log");
    assert_eq!(log.matches(&format!("GET {url}")).count(), 2, "{log}");
}

/// Through a TLS-intercepting egress every https site shows the egress's certificate:
/// with its CA untrusted, every site was `degraded/tls` ("not signed by a trusted
/// authority"), a site's own certificate unseen. That is the egress failing; with its CA
/// in `tls.extra_ca_file`, sites are up through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_intercepting_proxy_whose_ca_is_not_trusted_is_the_egress_failing() {
    let site_ip = "127.0.63.32";
    let site = Vhosts::start(site_ip, &[NAME]);
    let (_ca_dir, ca) = bump_ca();
    let squid = Squid::bumping(
        "127.0.63.33",
        &[(NAME, site_ip)],
        (&ca, &site.ca_file),
        &resolver("127.0.63.35").await,
    );
    let url = format!("https://{NAME}:{}/", site.https);
    let e = engine(&squid.url, &site.ca_file, true, &[(NAME, site_ip)]);
    let r = check(&e, &url).await;
    assert_egress_failed(&r, &url, "intercepts TLS");
    assert!(
        r.detail.contains("picket test corporate interception CA"),
        "{}",
        r.detail
    );
    // Its CA trusted beside the sites' own: the site is up through it.
    let both = format!(
        "{}{}",
        std::fs::read_to_string(&site.ca_file).expect("site CA"),
        std::fs::read_to_string(&ca).expect("bump CA")
    );
    let trusted_dir = Loose::new("bump-trust");
    let trusted = write(&trusted_dir.0, "both.pem", &both);
    let e = engine(
        &squid.url,
        &trusted.display().to_string(),
        true,
        &[(NAME, site_ip)],
    );
    let r = check(&e, &url).await;
    assert_up_at(&r, site_ip, &url);
}

async fn check(e: &picket::engine::Engine, url: &str) -> picket::job::Report {
    crate::support::picket::check(e, url).await
}

/// A company's egress that blocks sites by name over TLS (squid peeks at the
/// ClientHello's server name and `ssl_bump terminate`s the listed sites, splicing the
/// rest) answers the CONNECT `200`, then closes the tunnel in the handshake: the egress
/// refusing, not the site failing (hunt Z2, finding 5). The sites it lets through are
/// judged as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxy_closing_a_tunnel_it_answered_is_the_egress_failing() {
    let site_ip = "127.0.63.36";
    let blocked = "blocked.pin.test";
    let site = Vhosts::start(site_ip, &[NAME, blocked]);
    let (_ca_dir, ca) = bump_ca();
    let hosts = [(NAME, site_ip), (blocked, site_ip)];
    let squid = Squid::terminating(
        "127.0.63.37",
        &hosts,
        (&ca, &site.ca_file),
        &resolver("127.0.63.38").await,
        blocked,
    );
    let e = engine(&squid.url, &site.ca_file, true, &hosts);
    let url = format!("https://{NAME}:{}/", site.https);
    assert_up_at(&check(&e, &url).await, site_ip, &url);
    let url = format!("https://{blocked}:{}/", site.https);
    let r = check(&e, &url).await;
    assert_egress_failed(&r, &url, "closed");
}
