//! Review U: failing tests for the commits after a668c9e.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use picket::job::Verdict;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::picket::{check, check_job, engine_with, page};
use crate::support::targets::read_request_head;
use crate::support::{free_port, serve_raw};

/// A site that takes connections and reads the request, and never answers.
async fn silent_site(ip: &str) -> SocketAddr {
    serve_raw(ip, |mut stream: TcpStream| async move {
        let _ = read_request_head(&mut stream).await;
        tokio::time::sleep(Duration::from_secs(30)).await;
        drop(stream);
    })
    .await
}

/// An HTTP proxy that tunnels CONNECT at once; any other request (a path, as the
/// egress check `Proxy::silence` asks) gets `other`: `Some(delay)` answers 400 after
/// `delay`, `None` closes the connection without a word (as CONNECT-only proxies do).
async fn connect_proxy(ip: &str, other: Option<Duration>) -> SocketAddr {
    serve_raw(ip, move |mut client: TcpStream| async move {
        let head = read_request_head(&mut client).await;
        let text = String::from_utf8_lossy(&head).into_owned();
        let mut words = text.split_whitespace();
        let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
        if method == "CONNECT" {
            let Ok(addr) = target.parse::<SocketAddr>() else { return };
            let Ok(mut up) = TcpStream::connect(addr).await else {
                let _ = client
                    .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                    .await;
                return;
            };
            let _ = client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await;
            let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
            return;
        }
        match other {
            Some(delay) => {
                tokio::time::sleep(delay).await;
                let _ = client
                    .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    .await;
            }
            None => {
                let mut rest = [0u8; 64];
                let _ = tokio::time::timeout(Duration::from_millis(10), client.read(&mut rest)).await;
            }
        }
    })
    .await
}

/// A silent site on `site_ip` checked through a [`connect_proxy`] on `proxy_ip` that
/// answers other requests after `other_ms` (or closes them), with a 1 s job.
async fn a_silent_site_through(
    site_ip: &str,
    proxy_ip: &str,
    other_ms: Option<u64>,
) -> picket::job::Report {
    let site = silent_site(site_ip).await;
    let proxy = connect_proxy(proxy_ip, other_ms.map(Duration::from_millis)).await;
    let job = serde_json::json!({"url": format!("http://{site}/"), "timeout_ms": 1000});
    check_job(&through(proxy), job).await
}

fn through(proxy: SocketAddr) -> picket::engine::Engine {
    engine_with(
        "attempts = 1\nconnect_timeout = \"1s\"",
        &format!("[[egress]]\nname = \"web\"\nproxy = \"http://{proxy}\"\n"),
    )
}

/// When the tunnel's answer is late at the probe's deadline, the proxy is asked a
/// request of its own (`http/tunnel/late.rs`, once `proxy_silence` in http/connect.rs);
/// its time is past the deadline, and counted as our timers' lag a healthy proxy that
/// answers it in 350 ms turned a silent site's `down/timeout` into
/// `unknown/local_resources` ("this worker is short of CPU"). The question's time is
/// the probe's (`PhaseClock::checked`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_u_a_silent_site_through_a_healthy_proxy_is_down_not_our_cpu() {
    let r = a_silent_site_through("127.0.170.1", "127.0.170.2", Some(350)).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "timeout"),
        "a silent site through a healthy proxy: {}",
        r.detail
    );
}

/// http/tunnel/open.rs:90 `Proxy::silence` takes a proxy that closes a request it does
/// not serve (a path, not CONNECT) without a word for a failing egress; such a proxy
/// tunnels every CONNECT fine, and each silent site through it becomes
/// `unknown/egress_unavailable`, never `down`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_u_a_connect_only_proxy_that_closes_a_path_request_is_no_failing_egress() {
    let r = a_silent_site_through("127.0.170.3", "127.0.170.4", None).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Down, "timeout"),
        "a silent site through a working CONNECT-only proxy: {}",
        r.detail
    );
}

/// engine.rs:406 `slow_on_one_way_out`: with the other egress resting, `pick` hands
/// back the same egress, and a slow answer is asked again through it until the whole
/// budget (2 x attempts) is spent: four slow requests where one told all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_u_a_slow_answer_is_not_asked_again_through_the_same_egress() {
    let dead = free_port();
    let e = engine_with(
        "attempts = 2\nconnect_timeout = \"2s\"\negress_fail_targets = 3",
        &format!(
            "[[egress]]\nname = \"dead\"\nproxy = \"socks5://127.0.0.1:{dead}\"\n\
             [[egress]]\nname = \"direct\"\n"
        ),
    );
    let mut sites = Vec::new();
    for n in 0..8 {
        let addr = serve_raw(&format!("127.0.170.{}", 10 + n), |mut s: TcpStream| async move {
            let _ = read_request_head(&mut s).await;
            let body = page("ok");
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        })
        .await;
        sites.push(addr);
    }
    let mut failed = std::collections::HashSet::new();
    'rounds: for round in 0..16 {
        for site in &sites {
            if failed.len() >= 3 {
                break 'rounds;
            }
            let r = check(&e, &format!("http://{site}/{round}")).await;
            if r.attempt_log.iter().any(|a| a.egress == "dead") {
                failed.insert(*site);
            }
        }
    }
    assert_eq!(failed.len(), 3, "the dead proxy rested");

    let asked = Arc::new(AtomicUsize::new(0));
    let a = asked.clone();
    let slow = serve_raw("127.0.170.30", move |mut s: TcpStream| {
        let a = a.clone();
        async move {
            let _ = read_request_head(&mut s).await;
            a.fetch_add(1, Ordering::SeqCst);
            tokio::time::sleep(Duration::from_millis(300)).await;
            let body = page("slow");
            let _ = s
                .write_all(
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    )
                    .as_bytes(),
                )
                .await;
        }
    })
    .await;
    let r = check_job(
        &e,
        serde_json::json!({"url": format!("http://{slow}/"), "expect": {"max_latency_ms": 100}}),
    )
    .await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Degraded, "slow"),
        "{}",
        r.detail
    );
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "asked again through the same egress: {:?}",
        r.attempt_log
            .iter()
            .map(|a| (a.egress.as_str(), a.reason.as_str()))
            .collect::<Vec<_>>()
    );
}
