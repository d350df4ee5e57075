//! A worker's operations listener seen from outside: `/readyz`, `/metrics`, and
//! reading one metric out of Prometheus text.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(3))
        .build()
        .expect("http client")
}

/// Status and body of `GET http://{listen}{path}`, or `None` if nothing answers.
pub async fn get_ops(listen: SocketAddr, path: &str) -> Option<(u16, String)> {
    let r = http()
        .get(format!("http://{listen}{path}"))
        .send()
        .await
        .ok()?;
    let code = r.status().as_u16();
    Some((code, r.text().await.unwrap_or_default()))
}

/// Polls `/readyz` until it answers `code`; returns how long that took.
pub async fn wait_readyz(listen: SocketAddr, code: u16, within: Duration) -> Duration {
    let t = Instant::now();
    loop {
        let got = get_ops(listen, "/readyz").await;
        if got.as_ref().is_some_and(|(c, _)| *c == code) {
            return t.elapsed();
        }
        assert!(
            t.elapsed() < within,
            "/readyz on {listen} did not answer {code} within {within:?}; last: {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The value of an unlabelled metric in Prometheus text.
pub fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let mut parts = l.split_whitespace();
        (parts.next() == Some(name)).then(|| parts.next()?.parse().ok())?
    })
}

/// The value of the series of counter `name` with label `outcome` in Prometheus `text`
/// (panics, showing the text, when the series is missing).
pub fn outcome_count(text: &str, name: &str, outcome: &str) -> f64 {
    metric(text, &format!("{name}{{outcome=\"{outcome}\"}}"))
        .unwrap_or_else(|| panic!("no {name} series for outcome {outcome} in {text}"))
}
