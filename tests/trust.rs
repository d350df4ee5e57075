//! The roots picket trusts, followed while it runs: `tls.extra_ca_file` and the system's
//! bundle (`SSL_CERT_FILE`, else what OpenSSL's layout names) are looked at every few
//! seconds and read again when they change. An operator who rotates the internal CA, or
//! adds one with `update-ca-certificates`, expects the next check to trust it, not a
//! `degraded/tls` (a `down` with `tls.on_error = "down"`) for every internal site until
//! each worker restarts. Loopback addresses 127.0.9.1 - 127.0.9.20 only.

use std::path::Path;
use std::time::{Duration, Instant};

use picket::job::{Report, Verdict};

use crate::our_side::trusting_config;
use crate::support::farm::{serve_tls, server_config, Pki, Signer};
use crate::support::picket::{page, Checking};

/// `picket check -` with `config`, and `env` added.
fn checking(config: &Path, env: &[(&str, &Path)]) -> Checking {
    let mut picket = tokio::process::Command::new(env!("CARGO_BIN_EXE_picket"));
    picket
        .args(["check", "--json", "--config"])
        .arg(config)
        .arg("-");
    for (k, v) in env {
        picket.env(k, v);
    }
    Checking::start(picket)
}

fn verdict(r: &Report) -> (Verdict, &str) {
    (r.verdict, r.reason.as_str())
}

/// Checks `url` once a second until it is `up`, for at most 10 s; the last result.
async fn until_up(checking: &mut Checking, url: &str) -> Report {
    let t = Instant::now();
    loop {
        let r = checking.check(url).await;
        if r.verdict == Verdict::Up || t.elapsed() > Duration::from_secs(10) {
            return r;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// A site `name` on `ip` whose certificate a new CA signed; that CA's PEM; the URL.
async fn site_of_a_new_ca(name: &str, ip: &str) -> (String, String) {
    let new = Pki::new();
    let https = serve_tls(
        ip,
        server_config(&new, name, -1, 90, Signer::Ca),
        &page(name),
    )
    .await;
    (new.ca.pem(), format!("https://{name}:{}/", https.port()))
}

#[tokio::test]
async fn a_ca_rotated_in_extra_ca_file_is_trusted_without_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_old, ca_file) = Pki::with_ca_file(dir.path());
    let (new_ca, url) = site_of_a_new_ca("intranet.test", "127.0.9.1").await;
    let config = trusting_config(dir.path(), &ca_file, ("intranet.test", "127.0.9.1"), "");
    let mut checking = checking(&config, &[]);
    let r = checking.check(&url).await;
    assert_eq!(verdict(&r), (Verdict::Degraded, "tls"), "{}", r.detail);
    std::fs::write(&ca_file, new_ca).expect("the new CA, written in place");
    let r = until_up(&mut checking, &url).await;
    assert_eq!(verdict(&r), (Verdict::Up, "ok"), "{}", r.detail);
    // A file caught emptied, or holding no certificate, leaves the roots as they were.
    std::fs::write(&ca_file, "").expect("emptied");
    tokio::time::sleep(Duration::from_secs(3)).await;
    let r = checking.check(&url).await;
    assert_eq!(verdict(&r), (Verdict::Up, "ok"), "{}", r.detail);
}

#[tokio::test]
async fn a_root_added_to_the_systems_bundle_is_trusted_without_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_old, bundle) = Pki::with_ca_file(dir.path());
    let (new_ca, url) = site_of_a_new_ca("internal.test", "127.0.9.2").await;
    let config = dir.path().join("check.toml");
    std::fs::write(
        &config,
        "[targets]\nallow_private = true\n[probe]\nattempts = 1\n\
         [dns]\nstatic = { \"internal.test\" = \"127.0.9.2\" }\n",
    )
    .expect("config");
    let mut checking = checking(&config, &[("SSL_CERT_FILE", &bundle)]);
    let r = checking.check(&url).await;
    assert_eq!(verdict(&r), (Verdict::Degraded, "tls"), "{}", r.detail);
    // As update-ca-certificates does: a new bundle moved over the old one.
    let next = dir.path().join("bundle.new");
    let old = std::fs::read_to_string(&bundle).expect("the bundle");
    std::fs::write(&next, format!("{old}{new_ca}")).expect("the new bundle");
    std::fs::rename(&next, &bundle).expect("moved over the old");
    let r = until_up(&mut checking, &url).await;
    assert_eq!(verdict(&r), (Verdict::Up, "ok"), "{}", r.detail);
}

/// The OpenSSL client (for servers speaking only legacy TLS) loads its roots when it is
/// built: it is built again too.
#[tokio::test]
async fn a_legacy_tls_site_of_a_rotated_ca_is_trusted_without_a_restart() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_old, ca_file) = Pki::with_ca_file(dir.path());
    let (new_ca, cert, key) = crate::review_aa::rsa_site("legacy.test", -1, 90);
    let (port, _server) = crate::review_aa::legacy_tls_server("127.0.9.3", dir.path(), &cert, &key);
    let config = trusting_config(dir.path(), &ca_file, ("legacy.test", "127.0.9.3"), "");
    let mut checking = checking(&config, &[]);
    let url = format!("https://legacy.test:{port}/");
    let r = checking.check(&url).await;
    assert_eq!(verdict(&r), (Verdict::Degraded, "tls"), "{}", r.detail);
    std::fs::write(&ca_file, new_ca).expect("the new CA, written in place");
    let r = until_up(&mut checking, &url).await;
    assert_eq!(verdict(&r), (Verdict::Up, "ok"), "{}", r.detail);
}
