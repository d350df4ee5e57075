//! The operations endpoint on `http.listen`: `/healthz` (the process answers),
//! `/readyz` (consuming, broker connected, Redis answering; and which broker node) and `/metrics`
//! (Prometheus text).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::amqp::BrokerState;
use crate::redis_pool::RedisPool;

/// What the endpoint reads.
#[derive(Clone)]
pub(crate) struct Admin {
    /// Broker flags kept by the consumer loop.
    pub broker: Arc<BrokerState>,
    /// Redis pool to ping, if any.
    pub redis: Option<RedisPool>,
    /// Renders `/metrics`.
    pub metrics: Option<PrometheusHandle>,
}

/// Whether Redis answers a PING within a second, and why not.
async fn redis_ping(pool: &RedisPool) -> Result<(), String> {
    let ping = async {
        let mut c = pool.get().await?;
        redis::cmd("PING")
            .query_async::<String>(&mut c)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    };
    match tokio::time::timeout(Duration::from_secs(1), ping).await {
        Ok(r) => r,
        Err(_) => Err("no answer within 1s".into()),
    }
}

async fn redis_ok(pool: &RedisPool) -> bool {
    redis_ping(pool).await.is_ok()
}

/// How often [`watch_redis`] asks.
const REDIS_WATCH_EVERY: Duration = Duration::from_secs(10);

/// Asks Redis every [`REDIS_WATCH_EVERY`] until `shutdown`: `picket_redis_connected` is
/// there from the start, and Redis going away (or coming back) is logged when it
/// happens, jobs or none. An idle worker whose Redis was away said nothing of it, and
/// the gauge (set only by calls) was missing, so its alert had nothing to fire on.
pub(crate) async fn watch_redis(pool: RedisPool, label: String, shutdown: CancellationToken) {
    let mut was_up = None;
    loop {
        let now = redis_ping(&pool).await;
        crate::metric::redis_up(now.is_ok());
        match (&now, was_up) {
            (Err(e), None | Some(true)) => {
                tracing::warn!(redis = %label, error = %e, "redis unavailable: results go on without state, the limiter on its local fallback");
            }
            (Ok(()), Some(false)) => tracing::info!(redis = %label, "redis answers again"),
            _ => {}
        }
        was_up = Some(now.is_ok());
        tokio::select! {
            () = shutdown.cancelled() => return,
            () = tokio::time::sleep(REDIS_WATCH_EVERY) => {}
        }
    }
}

async fn readyz(State(a): State<Admin>) -> (StatusCode, String) {
    let consuming = a.broker.consuming.load(Ordering::SeqCst);
    let broker = a.broker.connected.load(Ordering::SeqCst);
    let redis = match &a.redis {
        Some(p) => redis_ok(p).await,
        None => true,
    };
    crate::metric::redis_up(redis);
    // The node of the current (or, while reconnecting, the last) broker session: on a
    // cluster, which node this worker depends on.
    let node = a.broker.node().unwrap_or_else(|| "none".to_string());
    // Still ready while blocked: the worker consumes, and its results go out once the
    // broker's alarm lifts; taking it out of service would change nothing.
    let blocked = a.broker.blocked.load(Ordering::SeqCst);
    let body = format!(
        "consuming={consuming} broker={broker} redis={redis} node={node} blocked={blocked}\n"
    );
    let code = if consuming && broker && redis {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, body)
}

async fn metrics(State(a): State<Admin>) -> String {
    a.metrics
        .as_ref()
        .map(crate::metric::render)
        .unwrap_or_default()
}

/// The router, for serving or testing.
pub(crate) fn router(admin: Admin) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(admin)
}

/// Serves the endpoint on `listener` until `shutdown`.
///
/// # Errors
/// The server failed.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    admin: Admin,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router(admin))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}
