//! H_reqwest: the HTTP step done by a bare reqwest client, the crate the worker's probe
//! is built on. Beside wrk's figure it splits the worker's HTTP cost into what reqwest
//! and hyper cost at the least (one client, no pool, a new connection per request, the
//! body read whole) and what picket adds on top.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::collect::{cpu_since, own_cpu_seconds, print_client_cpu};
use crate::per_second;

/// What `h-reqwest` asks for: `conns` requests at once for `secs` seconds.
pub(crate) struct HttpOptions {
    pub url: String,
    pub conns: usize,
    pub secs: u64,
}

/// Runs the loop and prints `rate`, `requests`, `errors` and the client's CPU.
pub(crate) async fn h_reqwest(opts: &HttpOptions) -> Result<()> {
    let url = url::Url::parse(&opts.url).context("--url")?;
    if !url
        .host_str()
        .and_then(|h| h.parse::<std::net::IpAddr>().ok())
        .is_some_and(|ip| ip.is_loopback())
    {
        bail!("--url must name a loopback address, not {url}");
    }
    // As the worker's plain-HTTP client: no pool (a new connection per request), no
    // proxy from the environment, HTTP/1.1.
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .no_proxy()
        .http1_only()
        .timeout(Duration::from_secs(10))
        .build()?;
    let done = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(opts.secs);
    let cpu_start = own_cpu_seconds();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(opts.conns);
    for _ in 0..opts.conns {
        let (client, url, done, errors) =
            (client.clone(), url.clone(), done.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < until {
                let read = async { client.get(url.clone()).send().await?.bytes().await };
                match read.await {
                    Ok(_) => done.fetch_add(1, Ordering::Relaxed),
                    Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                };
            }
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = cpu_since(cpu_start);
    let n = done.load(Ordering::Relaxed);
    println!("requests={n}");
    println!("errors={}", errors.load(Ordering::Relaxed));
    println!("rate={:.0}", per_second(n, elapsed));
    print_client_cpu(cpu, n);
    Ok(())
}
