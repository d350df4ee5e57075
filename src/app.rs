//! Wiring of the commands: builds adapters from their own config sections and hands
//! them to the engine. This is the edge, so errors here are `anyhow`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::amqp::{self, BrokerState};
use crate::cache::{MemoryCache, RedisCache, VerdictCache};
use crate::config::Settings;
use crate::dns::Resolver;
use crate::engine::{worker_name, Engine};
use crate::http::HttpProber;
use crate::job::{decode, job_for_url, Decoded, Report, Verdict};
use crate::limit::{Limiter, LocalLimiter};
use crate::redis_pool::redis_pool;
use std::time::Duration;

/// Sets up logging to stderr (see [`crate::log`]).
pub fn init_logging(settings: &Settings, quiet: bool) {
    crate::log::init(&settings.log, &worker_name(settings), quiet);
}

/// The probe engine over `settings`, with the given cache and limiter: the worker's,
/// `picket check`'s, and the tests'.
///
/// # Errors
/// DNS, TLS or proxy settings that cannot be used.
pub fn engine(
    settings: &Settings,
    cache: Arc<dyn VerdictCache>,
    limiter: Arc<dyn Limiter>,
) -> anyhow::Result<Engine> {
    let resolver = Resolver::new(&settings.dns)?;
    let prober = HttpProber::new(
        resolver,
        limiter,
        &settings.tls,
        &settings.egress,
        settings.targets.allow_private,
    )?;
    Ok(Engine::new(
        Arc::new(prober),
        cache,
        settings,
        worker_name(settings),
    ))
}

/// Resolves when SIGTERM or SIGINT arrives.
pub async fn termination() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// `picket worker`: consumes until SIGTERM/SIGINT, then drains.
///
/// # Errors
/// Set-up failures (Redis URL, TLS files, the operations port taken).
pub async fn worker(settings: Settings) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        termination().await;
        tracing::info!("shutdown requested; draining");
        signal.cancel();
    });
    run_worker(settings, shutdown).await
}

/// The worker with its shutdown given by the caller (tests pass their own).
///
/// # Errors
/// Set-up failures.
pub async fn run_worker(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let metrics = crate::metric::install().ok();
    crate::metric::egresses(settings.egress.iter().map(|e| e.name.as_str()));
    for key in &settings.ignored_keys {
        tracing::warn!(key = %key, "configuration key no longer used; remove it (docs/DESIGN.md)");
    }
    let pool = redis_pool(&settings.redis)?;
    let cache: Arc<dyn VerdictCache> = Arc::new(RedisCache::new(pool.clone(), &settings.redis));
    let name = worker_name(&settings);
    // A lease outlives any request (the timeout) with a margin for clock steps.
    let lease = settings.probe.timeout + Duration::from_secs(10);
    let limiter = crate::limit::redis::shared(
        pool.clone(),
        &settings.redis,
        &settings.rate_limit,
        lease,
        &name,
    );
    let engine = Arc::new(engine(&settings, cache, limiter)?);
    let state = Arc::new(BrokerState::default());
    let listener = tokio::net::TcpListener::bind(settings.http.listen)
        .await
        .with_context(|| format!("http.listen {}: cannot listen", settings.http.listen))?;
    let admin = Admin {
        broker: state.clone(),
        redis: Some(pool),
        metrics,
    };
    let admin_stop = CancellationToken::new();
    let admin_task = tokio::spawn(admin::serve(listener, admin, admin_stop.clone()));
    tracing::info!(name = %name, listen = %settings.http.listen, concurrency = settings.probe.concurrency, "picket worker starting");
    let options = amqp::ConsumerOptions {
        concurrency: settings.probe.concurrency,
        grace: settings.worker.shutdown_grace,
        max_wait: settings.rate_limit.max_wait,
        worker_name: name,
    };
    amqp::run_worker(settings.amqp.clone(), engine, options, state, shutdown).await;
    admin_stop.cancel();
    let _ = admin_task.await;
    tracing::info!("picket worker stopped");
    Ok(())
}

/// Reads the lines of a file, or of stdin for `-`, skipping blanks and `#` comments.
fn read_lines(source: &str) -> anyhow::Result<Vec<String>> {
    let reader: Box<dyn BufRead> = if source == "-" {
        Box::new(std::io::BufReader::new(std::io::stdin()))
    } else {
        let f = std::fs::File::open(Path::new(source))
            .with_context(|| format!("{source}: cannot open"))?;
        Box::new(std::io::BufReader::new(f))
    };
    let mut out = Vec::new();
    for line in reader.lines() {
        let line = line.with_context(|| format!("{source}: cannot read"))?;
        let t = line.trim();
        if !t.is_empty() && !t.starts_with('#') {
            out.push(t.to_string());
        }
    }
    Ok(out)
}

/// `picket check`: probes each URL or job line with the same engine, no broker, no
/// Redis; prints one result per line. Returns whether every verdict was `up`.
///
/// # Errors
/// Set-up failures or unreadable input.
pub async fn check(
    settings: Settings,
    urls: Vec<String>,
    file: Option<String>,
) -> anyhow::Result<bool> {
    let mut inputs = Vec::new();
    for u in urls {
        if u == "-" {
            inputs.extend(read_lines("-")?);
        } else {
            inputs.push(u);
        }
    }
    if let Some(f) = file {
        inputs.extend(read_lines(&f)?);
    }
    if inputs.is_empty() {
        bail!("nothing to check: give URLs, --file FILE, or - for stdin");
    }
    let limiter: Arc<dyn Limiter> = Arc::new(LocalLimiter::new(&settings.rate_limit));
    let engine = Arc::new(engine(
        &settings,
        Arc::new(MemoryCache::default()),
        limiter,
    )?);
    let max = settings.amqp.max_message_bytes;
    let mut all_up = true;
    let mut results = futures_util::stream::iter(inputs.into_iter().enumerate())
        .map(|(i, line)| {
            let engine = engine.clone();
            async move {
                let id = format!("check-{}", i + 1);
                if line.starts_with('{') {
                    match decode(line.as_bytes(), &id, max) {
                        Ok(Decoded::Job(j)) => engine.run(&j).await,
                        Ok(Decoded::Rejected(r)) => engine.rejected(&r),
                        Err(e) => engine.rejected(&crate::job::Rejected {
                            id,
                            url: String::new(),
                            meta: None,
                            detail: e.0,
                        }),
                    }
                } else {
                    match job_for_url(&line, &id) {
                        Ok(j) => engine.run(&j).await,
                        Err(detail) => engine.rejected(&crate::job::Rejected {
                            id,
                            url: line,
                            meta: None,
                            detail,
                        }),
                    }
                }
            }
        })
        .buffer_unordered(settings.probe.concurrency);
    let mut out = std::io::stdout().lock();
    while let Some(report) = results.next().await {
        all_up &= report.verdict == Verdict::Up;
        let line = serde_json::to_string(&report).context("encoding a result")?;
        writeln!(out, "{line}").context("writing to stdout")?;
    }
    Ok(all_up)
}

/// Turns input lines into job payloads: JSON lines must be JSON objects, other lines
/// must be http(s) URLs.
///
/// # Errors
/// The first bad line, with its number; nothing is published then.
pub fn payloads(lines: &[String]) -> anyhow::Result<Vec<Vec<u8>>> {
    lines
        .iter()
        .enumerate()
        .map(|(i, line)| {
            if line.starts_with('{') {
                let v: serde_json::Value = serde_json::from_str(line)
                    .with_context(|| format!("line {}: not valid JSON", i + 1))?;
                if !v.is_object() {
                    bail!("line {}: a job must be a JSON object", i + 1);
                }
                Ok(line.as_bytes().to_vec())
            } else {
                crate::job::parse_target_url(line)
                    .map_err(|e| anyhow::anyhow!("line {}: {e}", i + 1))?;
                Ok(serde_json::to_vec(&serde_json::json!({ "url": line }))?)
            }
        })
        .collect()
}

/// `picket enqueue`: publishes the jobs of a file (or stdin) with confirms.
///
/// # Errors
/// Bad input lines (nothing published) or broker failures.
pub async fn enqueue(settings: Settings, source: Option<String>) -> anyhow::Result<usize> {
    let lines = read_lines(source.as_deref().unwrap_or("-"))?;
    let payloads = payloads(&lines)?;
    let n = amqp::enqueue(&settings.amqp, &payloads).await?;
    Ok(n)
}

fn table_row(r: &Report) -> String {
    let status = r
        .http
        .as_ref()
        .map_or("-".to_string(), |h| h.status.to_string());
    format!(
        "{:<9} {:<18} {:>4} {:>7} {:<40} {}",
        r.verdict.as_str(),
        r.reason,
        status,
        format!("{}ms", r.timing_ms.total),
        r.url.chars().take(40).collect::<String>(),
        r.detail
    )
}

/// `picket results`: prints results as JSON lines, or as a table on a terminal.
///
/// # Errors
/// Broker failures.
pub async fn results(settings: Settings, follow: bool, json: bool) -> anyhow::Result<usize> {
    let table = !json && std::io::stdout().is_terminal();
    let shutdown = CancellationToken::new();
    let stop = shutdown.clone();
    tokio::spawn(async move {
        termination().await;
        stop.cancel();
    });
    if table {
        println!(
            "{:<9} {:<18} {:>4} {:>7} {:<40} detail",
            "verdict", "reason", "http", "time", "url"
        );
    }
    let n = amqp::read_results(&settings.amqp, follow, shutdown, |bytes| {
        let mut out = std::io::stdout().lock();
        if table {
            match serde_json::from_slice::<Report>(bytes) {
                Ok(r) => {
                    let _ = writeln!(out, "{}", table_row(&r));
                }
                Err(_) => {
                    let _ = writeln!(out, "{}", String::from_utf8_lossy(bytes));
                }
            }
        } else {
            let _ = writeln!(out, "{}", String::from_utf8_lossy(bytes));
        }
        let _ = out.flush();
    })
    .await?;
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enqueue_input_is_checked_before_publishing() {
        let ok = payloads(&[
            "http://a.example/".into(),
            r#"{"url":"http://b.example/"}"#.into(),
        ])
        .expect("valid");
        assert_eq!(ok[0], br#"{"url":"http://a.example/"}"#.to_vec());
        let e = payloads(&["http://a.example/".into(), "ftp://x/".into()]).expect_err("bad");
        assert!(e.to_string().contains("line 2"), "{e}");
        let e = payloads(&["{not json".into()]).expect_err("bad");
        assert!(e.to_string().contains("line 1"), "{e}");
    }
}
