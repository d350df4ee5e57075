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

async fn redis_ok(pool: &RedisPool) -> bool {
    let ping = async {
        let mut c = pool.get().await.ok()?;
        redis::cmd("PING").query_async::<String>(&mut c).await.ok()
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(1), ping).await,
        Ok(Some(_))
    )
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
