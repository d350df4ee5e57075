//! The contract read by a stranger (hunt U, 2026-12-02): what `../shared/CONTRACT.md`
//! and the docs promise, tried from outside, where picket did otherwise. Each test
//! failed first. Loopback addresses 127.0.9.21 - 127.0.9.60 only.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use picket::job::{Report, Verdict};
use serde_json::json;

use crate::support::picket::{check_job, engine_with, page};
use crate::support::serve;

fn verdict(r: &Report) -> (Verdict, &str) {
    (r.verdict, r.reason.as_str())
}

/// A site whose `/` answers an empty 301 to `/index.html` (a page saying 欢迎), and
/// whose `/old` answers a 301 with nginx's little page to `/broken`, which is a 500.
async fn moved_site(ip: &str) -> std::net::SocketAddr {
    let moved = |to: &'static str, body: &'static str| {
        move || async move {
            (
                StatusCode::MOVED_PERMANENTLY,
                [(axum::http::header::LOCATION, to)],
                body,
            )
                .into_response()
        }
    };
    let router = Router::new()
        .route("/", get(moved("/index.html", "")))
        .route(
            "/index.html",
            get(|| async {
                let services = "<p>Permits, taxes, records and meetings of the county.</p>";
                Html(page(&format!("<p>欢迎访问本站</p>{}", services.repeat(12))))
            }),
        )
        .route(
            "/old",
            get(moved(
                "/broken",
                "<html><head><title>301 Moved Permanently</title></head><body><center><h1>301 Moved Permanently</h1></center><hr><center>nginx</center></body></html>",
            )),
        )
        .route(
            "/broken",
            get(|| async { (StatusCode::INTERNAL_SERVER_ERROR, Html(page("error"))) }),
        );
    serve(ip, router).await
}

/// The contract's own example job, `"status": [200, 301]` beside a result that followed
/// one redirect to a 200: picket stopped at a listed 301 and judged the redirect's empty
/// body, a confirmed `down/body_too_small` (and an `up.down` change) for a site every
/// browser shows. Redirects are followed, as blackbox_exporter, Gatus and Uptime Kuma
/// follow them, and the statuses are those of the page a browser lands on.
#[tokio::test]
async fn the_contracts_example_job_follows_a_listed_301_to_the_page() {
    let site = moved_site("127.0.9.21").await;
    let e = engine_with("", "");
    let job = json!({
        "url": format!("http://{site}/"),
        "expect": {"status": [200, 301], "min_body_bytes": 512, "body_contains": "欢迎"},
    });
    let r = check_job(&e, job).await;
    assert_eq!(verdict(&r), (Verdict::Up, "ok"), "{}", r.detail);
    let http = r.http.as_ref().expect("http");
    assert_eq!((http.status, http.redirects), (200, 1), "{}", r.detail);
}

/// The other side of the same stop: a listed 301 whose target is a 500 was `up`.
#[tokio::test]
async fn a_listed_301_to_a_server_error_is_down() {
    let site = moved_site("127.0.9.22").await;
    let e = engine_with("", "");
    let job = json!({"url": format!("http://{site}/old"), "expect": {"status": [200, 301]}});
    let r = check_job(&e, job).await;
    assert_eq!(verdict(&r), (Verdict::Down, "http_status"), "{}", r.detail);
}

/// A status line whose reason holds a control byte (`200 OK\x01`, a colour code): curl
/// and browsers read the 200 and show the page; picket's second reading copied the
/// reason as it came, hyper refused it again, and a working site was a confirmed
/// `down/protocol` saying the code was invalid.
#[tokio::test]
async fn a_control_byte_in_the_reason_phrase_is_not_a_broken_site() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    for (n, line) in ["HTTP/1.1 200 OK\x01", "HTTP/1.1 200 \x1b[31mOK"]
        .into_iter()
        .enumerate()
    {
        let body = page("<p>Opening hours</p>");
        let answer = format!(
            "{line}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let site =
            crate::support::targets::serve_raw(&format!("127.0.9.{}", 23 + n), move |mut s| {
                let answer = answer.clone();
                async move {
                    let mut buf = [0u8; 4096];
                    let _ = s.read(&mut buf).await;
                    let _ = s.write_all(answer.as_bytes()).await;
                    let _ = s.shutdown().await;
                }
            })
            .await;
        let e = engine_with("", "");
        let r = check_job(&e, json!({"url": format!("http://{site}/")})).await;
        assert_eq!(verdict(&r), (Verdict::Up, "ok"), "{line:?}: {}", r.detail);
    }
}

/// The self-signed certificate `openssl req -x509` makes (marked a CA) was told as
/// `certificate is not valid: Other(OtherError(CaUsedAsEndEntity))`, a debug string,
/// where the contract's detail is one readable line and a plain self-signed one says so.
#[tokio::test]
async fn a_self_signed_certificate_marked_a_ca_is_said_in_words() {
    use crate::support::farm::{serve_tls, server_config, Pki, Signer};
    let pki = Pki::new();
    let config = server_config(&pki, "selfsigned.test", -1, 90, Signer::SelfSignedCa);
    let https = serve_tls("127.0.9.25", config, &page("self-signed")).await;
    let e = engine_with(
        "attempts = 1",
        "[dns]\nstatic = { \"selfsigned.test\" = \"127.0.9.25\" }\n",
    );
    let url = format!("https://selfsigned.test:{}/", https.port());
    let r = check_job(&e, json!({ "url": url })).await;
    assert_eq!(verdict(&r), (Verdict::Degraded, "tls"), "{}", r.detail);
    assert!(r.detail.contains("self-signed"), "{}", r.detail);
    assert!(!r.detail.contains("Other("), "{}", r.detail);
}

/// `picket check` echoed a refused URL's password in its result (`"url":
/// "http://user:s3cret@…"`), where the worker masks it (`http://***:***@…`): results go
/// to files, terminals and tickets.
#[test]
fn picket_check_masks_the_password_of_a_refused_url() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("check.toml");
    std::fs::write(&config, "[targets]\nallow_private = true\n").expect("config");
    for how in ["argument", "stdin"] {
        let url = "http://user:s3cret@127.0.9.26:9/x";
        let out = if how == "argument" {
            crate::support::picket::picket_command(&["check", "--json", url], &config)
                .output()
                .expect("picket check")
        } else {
            let cmd = crate::support::picket::picket_command(&["check", "--json", "-"], &config);
            crate::support::picket::run_with_stdin(cmd, &format!("{url}\n"))
        };
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(printed.contains("\"invalid\""), "{how}: {printed}");
        assert!(!printed.contains("s3cret"), "{how}: {printed}");
    }
}

/// A job whose URL is the address `0.0.0.0` itself was refused as "sunk to 0.0.0.0 by
/// this worker's own /etc/hosts or dns.static": no such line exists; the address is
/// refused by policy.
#[tokio::test]
async fn the_unspecified_address_written_in_a_url_is_refused_for_what_it_is() {
    let e = engine_with("", "");
    for url in ["http://0.0.0.0:9/", "http://[::]:9/"] {
        let r = check_job(&e, json!({ "url": url })).await;
        assert_eq!(
            verdict(&r),
            (Verdict::Invalid, "blocked_target"),
            "{url}: {}",
            r.detail
        );
        assert!(!r.detail.contains("/etc/hosts"), "{url}: {}", r.detail);
    }
}
