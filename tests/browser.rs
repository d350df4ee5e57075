//! picket asks for a page as the browser its User-Agent names asks for it. The installed
//! Chromium (Debian's package, installed by `scripts/deps`) opens the same page over
//! plain HTTP and over HTTPS, and the request heads it sends are compared with picket's
//! for a Chrome User-Agent of the same version: the same headers, in the same order,
//! with the same values. When Chromium changes what it sends, this fails, and the
//! defaults (`probe.accept` in `config/default.toml`, the lists of
//! `src/probe/browser.rs`) follow it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::farm::{server_config, Pki, Signer};
use crate::support::picket::{check, engine_with, page};
use crate::support::serve_raw;
use crate::support::targets::read_request_head;

const IP: &str = "127.0.9.32";
const NAME: &str = "site.browser.test";
/// What Chromium sends under `LANG=en_US.UTF-8`, given to picket as its setting.
const LANGUAGE: &str = "en-US,en;q=0.9";

/// The request heads a recording site was sent, in order.
type Heads = Arc<Mutex<Vec<String>>>;

/// Answers one request on `stream` with a page, noting its head.
async fn answer<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, heads: Heads) {
    let head = read_request_head(&mut stream).await;
    heads
        .lock()
        .expect("heads")
        .push(String::from_utf8_lossy(&head).into_owned());
    let body = page("");
    let response = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

/// A site on [`IP`] recording each request head: over TLS with a certificate for
/// [`NAME`] when `pki` is given.
async fn recording_site(pki: Option<&Pki>) -> (SocketAddr, Heads) {
    let heads = Heads::default();
    let noted = Arc::clone(&heads);
    let acceptor = pki
        .map(|pki| tokio_rustls::TlsAcceptor::from(server_config(pki, NAME, -1, 30, Signer::Ca)));
    let addr = serve_raw(IP, move |tcp: TcpStream| {
        let (heads, acceptor) = (Arc::clone(&noted), acceptor.clone());
        async move {
            match acceptor {
                None => answer(tcp, heads).await,
                Some(acceptor) => {
                    if let Ok(tls) = acceptor.accept(tcp).await {
                        answer(tls, heads).await;
                    }
                }
            }
        }
    })
    .await;
    (addr, heads)
}

/// The installed Chromium's major version, from `chromium --version`.
fn chromium_major() -> u32 {
    let out = std::process::Command::new("chromium")
        .arg("--version")
        .output()
        .expect("chromium is installed (scripts/deps installs Debian's package)");
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace()
        .find_map(|word| word.split('.').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no version in {text:?}"))
}

/// Has headless Chromium open `url`, [`NAME`] resolving to [`IP`].
async fn chromium_opens(url: &str) {
    let profile = tempfile::tempdir().expect("temp dir");
    let run = tokio::process::Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--ignore-certificate-errors",
            &format!("--host-resolver-rules=MAP {NAME} {IP}"),
            &format!("--user-data-dir={}", profile.path().display()),
            "--dump-dom",
            url,
        ])
        .env("LANG", "en_US.UTF-8")
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(90), run)
        .await
        .expect("chromium finished within 90 s")
        .expect("chromium ran");
    assert!(
        out.status.success(),
        "chromium {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The header lines of the first head for `/` (Chromium asks for `/favicon.ico` too).
fn page_request(heads: &Heads) -> Vec<(String, String)> {
    let heads = heads.lock().expect("heads");
    let head = heads
        .iter()
        .find(|h| h.starts_with("GET / "))
        .unwrap_or_else(|| panic!("no request for /: {heads:?}"));
    head.lines()
        .skip(1)
        .filter_map(|line| line.split_once(": "))
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// Chromium's head as a Chrome of the same version sends it: its User-Agent without
/// "Headless".
fn as_chrome(head: Vec<(String, String)>) -> Vec<(String, String)> {
    head.into_iter()
        .map(|(n, v)| {
            let v = v.replace("HeadlessChrome/", "Chrome/");
            (n, v)
        })
        .collect()
}

/// The brands of a `sec-ch-ua` list, sorted, without Chrome's own (a Chromium build
/// names only "Chromium" and the GREASE brand, in an order of its own for two).
fn brands_but_chrome(list: &str) -> Vec<String> {
    let mut brands: Vec<String> = list
        .split(", ")
        .filter(|b| !b.starts_with("\"Google Chrome\""))
        .map(str::to_string)
        .collect();
    brands.sort();
    brands
}

/// A head with its `sec-ch-ua` taken out as the Chromium build's brands.
fn comparable(head: Vec<(String, String)>) -> (Vec<(String, String)>, Vec<String>) {
    let mut brands = Vec::new();
    let head = head
        .into_iter()
        .map(|(n, v)| {
            // Over HTTP/1 reqwest writes every name in title case ("Sec-Ch-Ua"), where
            // Chrome writes the client hints' in lower case (docs/DESIGN.md): the one
            // difference known and kept.
            let n = if n.to_ascii_lowercase().starts_with("sec-ch-") {
                n.to_ascii_lowercase()
            } else {
                n
            };
            if n == "sec-ch-ua" {
                brands = brands_but_chrome(&v);
                (n, String::new())
            } else {
                (n, v)
            }
        })
        .collect();
    (head, brands)
}

/// Over plain HTTP and over HTTPS, picket's request for a page is the installed
/// Chromium's: each header in its place, each value the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picket_asks_for_a_page_as_the_installed_chromium_does() {
    let major = chromium_major();
    let dir = tempfile::tempdir().expect("temp dir");
    let (pki, ca) = Pki::with_ca_file(dir.path());
    // Chromium's own User-Agent on this platform, as a Chrome of its version writes it.
    let agent = format!(
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) \
         Chrome/{major}.0.0.0 Safari/537.36"
    );
    let engine = engine_with(
        &format!("attempts = 1\nuser_agent = \"{agent}\"\naccept_language = \"{LANGUAGE}\""),
        &format!(
            "[dns]\nstatic = {{ \"{NAME}\" = \"{IP}\" }}\n[tls]\nextra_ca_file = \"{}\"\n",
            ca.display()
        ),
    );
    for (scheme, pki) in [("http", None), ("https", Some(&pki))] {
        let (browser_site, browser_heads) = recording_site(pki).await;
        let (picket_site, picket_heads) = recording_site(pki).await;
        chromium_opens(&format!("{scheme}://{NAME}:{}/", browser_site.port())).await;
        let r = check(
            &engine,
            &format!("{scheme}://{NAME}:{}/", picket_site.port()),
        )
        .await;
        assert_eq!(r.verdict.as_str(), "up", "{scheme}: {}", r.detail);

        let browser = as_chrome(page_request(&browser_heads));
        let (mut browser, browser_brands) = comparable(browser);
        let (mut ours, our_brands) = comparable(page_request(&picket_heads));
        // The port differs (each has a site of its own); the place of `Host` counts
        // over plain HTTP. Over HTTPS the handshake chooses HTTP/2 (no `Host`, no
        // `Connection`) or HTTP/1.1 after the request is made, and hyper appends
        // `Host` last for the latter: the difference known and kept there
        // (docs/DESIGN.md).
        for head in [&mut browser, &mut ours] {
            for (n, v) in head.iter_mut() {
                if n.eq_ignore_ascii_case("host") {
                    v.clear();
                }
            }
            if scheme == "https" {
                head.retain(|(n, _)| {
                    !n.eq_ignore_ascii_case("host") && !n.eq_ignore_ascii_case("connection")
                });
            }
        }
        assert_eq!(
            ours, browser,
            "{scheme}: picket's head (left) against Chromium {major}'s (right)"
        );
        assert_eq!(our_brands, browser_brands, "{scheme}: sec-ch-ua brands");
    }
}
