//! Wiring of the worker and the engine: builds adapters from their own config sections
//! and hands them to the engine (the commands a person types are in `cli`). This is the edge, so errors here are `anyhow`.

use std::sync::Arc;

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Admin};
use crate::amqp::{self, BrokerState};
use crate::config::Settings;
use crate::dns::Resolver;
use crate::engine::{worker_name, Engine};
use crate::http::{HttpProber, Targets};
use crate::limit::Limiter;
use crate::probe::judge::JudgeSettings;
use crate::redis_pool::redis_pool;
use crate::state::{RedisState, StateStore};

/// Sets up logging to stderr (see [`crate::log`]).
pub(crate) fn init_logging(settings: &Settings, quiet: bool) {
    crate::log::init(&settings.log, &worker_name(settings), quiet);
}

/// The probe engine over `settings`, with the given cache and limiter: the worker's,
/// `picket check`'s, and the tests'.
///
/// # Errors
/// DNS, TLS or proxy settings that cannot be used.
pub fn engine(
    settings: &Settings,
    state: Arc<dyn StateStore>,
    limiter: Arc<dyn Limiter>,
) -> anyhow::Result<Engine> {
    let resolver = Resolver::new(&settings.dns)?;
    let prober = HttpProber::new(
        resolver,
        limiter,
        &settings.tls,
        &settings.egress,
        Targets {
            allow_private: settings.targets.allow_private,
            suspect_hold: settings.rate_limit.backoff,
        },
    )?;
    Ok(Engine::new(
        Arc::new(prober),
        state,
        &settings.probe,
        JudgeSettings::new(&settings.probe, &settings.tls),
        worker_name(settings),
    ))
}

/// Raises this process's file-descriptor limit to its hard limit (the soft one is often
/// 1024, which `probe.concurrency` probes and their lookups outgrow), and warns when even
/// the hard limit is below what `concurrency` probes need: past it, probes fail as our
/// own trouble (`unknown/local_resources`), never as the site's.
pub(crate) fn raise_file_limit(concurrency: usize) {
    // A probe holds a socket, and often a resolver socket and a proxy connection besides;
    // the rest is the broker, Redis, the listener and the runtime.
    let needed = concurrency as u64 * 3 + 256;
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(limit) if limit < needed => tracing::warn!(
            limit,
            needed,
            "the file-descriptor limit is below what probe.concurrency needs: raise the hard limit (ulimit -Hn, LimitNOFILE=) or lower probe.concurrency"
        ),
        Ok(limit) => tracing::debug!(limit, "file-descriptor limit"),
        Err(e) => tracing::warn!(error = %e, "cannot read or raise the file-descriptor limit"),
    }
}

/// Resolves when SIGTERM or SIGINT arrives.
pub(crate) async fn termination() {
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

/// Keeps SIGHUP from ending the worker. Its default action kills the process at once,
/// dropping every probe in flight, and it is what `systemctl reload`, logrotate's
/// `postrotate` and a closed terminal send. The configuration is read only at start, so
/// a hangup changes nothing: the worker says so and goes on.
fn survive_hangups() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::hangup()) {
            Ok(mut hangups) => {
                tokio::spawn(async move {
                    while hangups.recv().await.is_some() {
                        tracing::warn!("SIGHUP ignored: the configuration is read only at start; restart the worker (SIGTERM drains it) to apply a change");
                    }
                });
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot handle SIGHUP; a hangup will end the worker at once")
            }
        }
    }
}

/// `picket worker`: consumes until SIGTERM/SIGINT, then drains.
///
/// # Errors
/// Set-up failures (Redis URL, TLS files, the operations port taken).
pub(crate) async fn worker(settings: Settings) -> anyhow::Result<()> {
    survive_hangups();
    let shutdown = CancellationToken::new();
    let signal = shutdown.clone();
    tokio::spawn(async move {
        termination().await;
        tracing::info!("shutdown requested; draining");
        signal.cancel();
    });
    run_worker(settings, shutdown).await
}

/// The worker with its shutdown given by the caller, its operations endpoint on
/// `http.listen`.
///
/// # Errors
/// The address cannot be listened on; set-up failures.
pub async fn run_worker(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ops = tokio::net::TcpListener::bind(settings.http.listen)
        .await
        .with_context(|| format!("http.listen {}: cannot listen", settings.http.listen))?;
    serve_worker(settings, ops, shutdown).await
}

/// Where the worker's Redis is, for its log lines, passwords redacted.
fn redis_label(r: &crate::config::RedisSettings) -> String {
    let redacted = |urls: &[String]| {
        urls.iter()
            .map(|u| crate::config::redact_url(u))
            .collect::<Vec<_>>()
            .join(",")
    };
    if !r.sentinels.is_empty() {
        format!(
            "sentinels {} (master {})",
            redacted(&r.sentinels),
            r.sentinel_master
        )
    } else if r.cluster {
        format!("cluster {}", redacted(&r.nodes))
    } else {
        crate::config::redact_url(&r.url)
    }
}

/// The `/readyz` check of Redis, watched (every few seconds, until `stop`) from now.
fn redis_check(
    settings: &crate::config::RedisSettings,
    pool: crate::redis_pool::RedisPool,
    stop: &CancellationToken,
) -> admin::RedisCheck {
    let check = admin::RedisCheck {
        pool,
        key: format!("{}ready", settings.key_prefix),
        told_unknown: Arc::default(),
        epoch_key: format!("{}mark", settings.key_prefix),
        epoch: Arc::default(),
    };
    let label = redis_label(settings);
    tokio::spawn(admin::watch_redis(check.clone(), label, stop.clone()));
    check
}

/// The worker with its operations endpoint served on `ops`, a listener the caller bound
/// (tests bind port 0 and read the address back, so no two workers race for a port).
///
/// # Errors
/// Set-up failures.
pub async fn serve_worker(
    settings: Settings,
    ops: tokio::net::TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let metrics = crate::metric::install().ok();
    crate::metric::egresses(settings.egress.iter().map(|e| e.name.as_str()));
    for key in &settings.ignored_keys {
        tracing::warn!(key = %key, "configuration key no longer used; remove it (docs/DESIGN.md)");
    }
    let pool = redis_pool(&settings.redis)?;
    let state: Arc<dyn StateStore> = Arc::new(RedisState::new(pool.clone(), &settings.redis));
    let name = worker_name(&settings);
    let lease = crate::limit::lease_for(&settings.redis);
    let limiter = crate::limit::redis::shared(
        pool.clone(),
        &settings.redis,
        &settings.rate_limit,
        lease,
        &name,
    );
    let engine = Arc::new(engine(&settings, state, limiter)?);
    let state = Arc::new(BrokerState::default());
    let listen = ops
        .local_addr()
        .map_or_else(|_| "?".into(), |a| a.to_string());
    let admin_stop = CancellationToken::new();
    let admin = Admin {
        broker: state.clone(),
        redis: Some(redis_check(&settings.redis, pool, &admin_stop)),
        metrics,
    };
    let admin_task = tokio::spawn(admin::serve(ops, admin, admin_stop.clone()));
    let handle = tokio::runtime::Handle::current();
    let runtime = match handle.runtime_flavor() {
        tokio::runtime::RuntimeFlavor::CurrentThread => "current_thread",
        _ => "multi_thread",
    };
    let runtime_threads = handle.metrics().num_workers();
    tracing::info!(name = %name, listen = %listen, concurrency = settings.probe.concurrency, runtime, runtime_threads, "picket worker starting");
    let options = amqp::ConsumerOptions {
        concurrency: settings.probe.concurrency,
        grace: settings.worker.shutdown_grace,
        deferral: crate::worker::Deferral {
            max_wait: settings.rate_limit.max_wait,
            max_defer: settings.rate_limit.max_defer,
        },
        worker_name: name,
    };
    amqp::run_worker(settings.amqp.clone(), engine, options, state, shutdown).await;
    admin_stop.cancel();
    let _ = admin_task.await;
    tracing::info!("picket worker stopped");
    Ok(())
}
