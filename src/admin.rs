//! The operations endpoint on `http.listen`: `/healthz` (the process answers),
//! `/readyz` (consuming, broker connected, Redis taking the worker's calls; and which
//! broker node) and `/metrics` (Prometheus text).

use std::sync::atomic::{AtomicBool, Ordering};
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
    /// Redis to check, if any.
    pub redis: Option<RedisCheck>,
    /// Renders `/metrics`.
    pub metrics: Option<PrometheusHandle>,
}

/// The Redis the worker keeps its limits and states in, and the key it checks it with.
#[derive(Clone)]
pub(crate) struct RedisCheck {
    pub pool: RedisPool,
    /// `{key_prefix}ready`, written by each check.
    pub key: String,
    /// Whether the warning that eviction cannot be read was logged (once a time it
    /// turns unknown).
    pub told_unknown: Arc<AtomicBool>,
    /// `{key_prefix}mark`: a mark written once, kept for good, and a count of the
    /// looks at it; the mark gone, or the count not above the last one this worker saw,
    /// means Redis lost its data or went back to an older copy
    /// ([`RedisCheck::lost_data`]).
    pub epoch_key: String,
    /// The mark and the count this worker last read: held across the look, so that
    /// two looks of this worker (a `/readyz` beside the periodic check) are compared in
    /// the order Redis counted them.
    pub epoch: Arc<tokio::sync::Mutex<Option<(String, i64)>>>,
}

/// Reads the mark, writing ARGV[1] when there is none, and counts this look: {the
/// mark, the looks counted so far by every worker}.
const EPOCH: &str = "local e = redis.call('HGET', KEYS[1], 'm') \
    if not e then redis.call('HSET', KEYS[1], 'm', ARGV[1]) e = ARGV[1] end \
    return {e, redis.call('HINCRBY', KEYS[1], 'n', 1)}";

/// Writes the check key through a script, as every limiter and state call does, and
/// asks what they ask besides of a key: `PEXPIRE`, `GET`, Redis's clock. An ACL refusing
/// one of those leaves the worker without state and limits as surely as one refusing
/// scripts, and a script Redis stops on a refused command keeps the writes it made
/// (hunt W: a change's step wrote the verdict, failed on `PEXPIRE`, and the change was
/// told by no result). `TIME` comes after the writes: a Redis before 5 refuses writes
/// after it in a script.
const CHECK: &str = "redis.call('SET', KEYS[1], '1', 'PX', 60000) \
    redis.call('PEXPIRE', KEYS[1], 60000) redis.call('GET', KEYS[1]) \
    redis.call('TIME') return 1";

impl RedisCheck {
    /// Whether Redis takes the worker's kind of call within a second, and why not: a
    /// script that writes. A PING alone answered for a Redis at its `maxmemory` (it
    /// refuses writes) and for a user whose ACL refuses scripts, while every call of
    /// the worker failed.
    async fn takes_calls(&self) -> Result<(), String> {
        // A connection Redis closed while it was idle (its `timeout`) fails at once and
        // is replaced: the check is asked again on the new one, not reported not ready.
        let check = async {
            match self.write_check().await {
                Err((_, true)) => self.write_check().await.map_err(|(e, _)| e),
                other => other.map_err(|(e, _)| e),
            }
        };
        let answer = match tokio::time::timeout(Duration::from_secs(1), check).await {
            Ok(r) => r,
            Err(_) => Err("no answer within 1s".into()),
        };
        if answer.is_ok() {
            self.eviction().await;
            self.lost_data().await;
        }
        answer
    }

    /// Says (a warning, `picket_redis_data_lost_total`) when Redis lost picket's keys
    /// since this worker last looked: the mark it read is gone (a restart without
    /// persistence, a `FLUSHALL`, a failover to a replica that had not synced), or the
    /// count of looks went back (a restart that loaded an older snapshot: hunt W).
    /// Every key's state started afresh or went back (`previous_verdict` null or old),
    /// changes are told by no result or told again, and the per-IP limits started
    /// again: nothing else says so (hunt P). In a Redis Cluster, the mark is on one
    /// node: only its loss is seen.
    async fn lost_data(&self) {
        let fresh = format!("{:x}-{:x}", std::process::id(), crate::state::now_ms());
        let mut seen = self.epoch.lock().await;
        let read = async {
            let mut c = self.pool.get().await.ok()?;
            let counted = redis::Script::new(EPOCH)
                .key(&self.epoch_key)
                .arg(&fresh)
                .invoke_async::<(String, i64)>(&mut c)
                .await
                .ok()?;
            // A look a failover's resync wipes would be the higher count the next look,
            // on the new primary, is held against: it is not kept.
            let at = tokio::time::Instant::now();
            self.pool.settled(c.primary(), at).await.then_some(counted)
        };
        let Ok(Some(now)) = tokio::time::timeout(Duration::from_secs(1), read).await else {
            return;
        };
        match seen.as_ref() {
            Some(before) if before.0 != now.0 => {
                crate::metric::redis_data_lost();
                tracing::warn!(
                    epoch_before = %before.0,
                    epoch_now = %now.0,
                    "Redis lost picket's keys (a restart without persistence, a FLUSHALL, a failover to a replica that had not synced, or an eviction under maxmemory where picket_redis_evicts is 1): every key's state starts afresh (previous_verdict null), changes pending then are told by no result, and the per-IP limits start again; keep Redis with appendonly yes, or Sentinel with a replica"
                );
            }
            Some(before) if now.1 <= before.1 => {
                crate::metric::redis_data_lost();
                tracing::warn!(
                    looks_before = before.1,
                    looks_now = now.1,
                    "Redis went back to an older copy of picket's keys (a restart that loaded an older snapshot, RDB without appendonly): every key's state went back to that time, changes since are told again or by no result, and the per-IP limits went back; keep Redis with appendonly yes, or Sentinel with a replica"
                );
            }
            _ => {}
        }
        *seen = Some(now);
    }

    /// One write of the check key; on failure, why, and whether the connection dropped.
    async fn write_check(&self) -> Result<(), (String, bool)> {
        let mut c = self.pool.get().await.map_err(|e| (e, false))?;
        redis::Script::new(CHECK)
            .key(&self.key)
            .invoke_async::<i64>(&mut c)
            .await
            .map(drop)
            .map_err(|e| (e.to_string(), e.is_connection_dropped() || e.is_io_error()))
    }

    /// Sets `picket_redis_evicts` from what Redis says of its memory: whether it may
    /// drop keys when full (a `maxmemory` with a policy other than `noeviction`), which
    /// loses states and limits silently. A cluster answers for each primary (redis-rs
    /// sends `INFO` to all of them and maps each node to its answer): one that may evict
    /// is enough. A Redis that refuses `INFO` (an ACL with `-@dangerous`, as most
    /// guides give) makes it unknown: -1, and a warning once; one that does not answer
    /// leaves it as it was (`/readyz` says that).
    async fn eviction(&self) {
        let info = async {
            let mut c = self.pool.get().await.ok()?;
            Some(
                redis::cmd("INFO")
                    .arg("memory")
                    .query_async::<redis::Value>(&mut c)
                    .await,
            )
        };
        let answer = match tokio::time::timeout(Duration::from_secs(1), info).await {
            Ok(Some(answer)) => answer,
            _ => return,
        };
        match answer.as_ref().map(evicts_in) {
            Ok(Some(evicts)) => {
                crate::metric::redis_evicts(Some(evicts));
                self.told_unknown.store(false, Ordering::Relaxed);
            }
            // Refused (an ACL's NOPERM, or INFO renamed away): Redis answered, and will
            // not say. Other error replies (LOADING, BUSY) are passing states.
            Err(e) if refuses_info(e) => {
                crate::metric::redis_evicts(None);
                if !self.told_unknown.swap(true, Ordering::Relaxed) {
                    tracing::warn!(
                        error = %e,
                        "Redis refuses INFO: whether it may evict states and limits when full is unknown (allow +info to the user, or check its maxmemory-policy is noeviction)"
                    );
                }
            }
            _ => {}
        }
    }
}

/// Whether an error reply to `INFO` is a refusal of it for good: NOPERM (an ACL), or
/// an unknown command (renamed by `rename-command`).
fn refuses_info(e: &redis::RedisError) -> bool {
    e.code() == Some("NOPERM")
        || (e.code() == Some("ERR")
            && e.to_string()
                .to_ascii_lowercase()
                .contains("unknown command"))
}

/// Whether an `INFO memory` answer says Redis may evict keys: one node's text, or a
/// cluster's map of node to text (any node that may evict says so; a node that
/// failed says nothing); `None` when no node says.
fn evicts_in(answer: &redis::Value) -> Option<bool> {
    match answer {
        redis::Value::Map(nodes) => nodes
            .iter()
            .filter_map(|(_, node)| evicts_in(node))
            .reduce(|a, b| a || b),
        text => evicts(&redis::from_redis_value_ref::<String>(text).ok()?),
    }
}

/// Whether an `INFO memory` answer says Redis may evict keys; `None` when it does not
/// say.
fn evicts(info: &str) -> Option<bool> {
    let field = |name: &str| {
        info.lines()
            .find_map(|l| l.trim().strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let max: u64 = field("maxmemory")?.parse().ok()?;
    let policy = field("maxmemory_policy")?;
    Some(max > 0 && policy != "noeviction")
}

/// How often [`watch_redis`] asks.
const REDIS_WATCH_EVERY: Duration = Duration::from_secs(10);

/// Asks Redis every [`REDIS_WATCH_EVERY`] until `shutdown`: `picket_redis_connected` is
/// there from the start, and Redis going away (or coming back) is logged when it
/// happens, jobs or none. An idle worker whose Redis was away said nothing of it, and
/// the gauge (set only by calls) was missing, so its alert had nothing to fire on.
pub(crate) async fn watch_redis(redis: RedisCheck, label: String, shutdown: CancellationToken) {
    let mut was_up = None;
    loop {
        let now = redis.takes_calls().await;
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
        Some(r) => r.takes_calls().await.is_ok(),
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

/// How many connections the endpoint holds at once, and how long one may stay silent.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Guard {
    pub connections: usize,
    pub idle: Duration,
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
    serve_guarded(listener, admin, shutdown, GUARD).await
}

/// The endpoint's guard: a scraper needs one connection for milliseconds.
const GUARD: Guard = Guard {
    connections: 64,
    idle: Duration::from_secs(10),
};

/// [`serve`], with the given guard: whatever connects to the endpoint (a scraper, a
/// health check, anything on the network it listens on) never holds more than
/// `guard.connections` of the worker's file descriptors, which its probes need.
async fn serve_guarded(
    listener: tokio::net::TcpListener,
    admin: Admin,
    shutdown: CancellationToken,
    guard: Guard,
) -> std::io::Result<()> {
    let listener = Guarded {
        listener,
        slots: Arc::new(tokio::sync::Semaphore::new(guard.connections)),
        idle: guard.idle,
        open: Arc::default(),
        next: 0,
    };
    axum::serve(listener, router(admin))
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// The endpoint's listener: it holds at most as many connections as it has slots, a
/// new one closing the oldest when every slot is taken, and a connection silent for
/// `idle` is closed. A scraper's or a health check's connection lasts milliseconds, so
/// whatever holds connections open (a flood reopening them as they are closed) loses
/// its own first, and `/healthz` still answers (hunt U).
struct Guarded {
    listener: tokio::net::TcpListener,
    slots: Arc<tokio::sync::Semaphore>,
    idle: Duration,
    /// The open connections, oldest first, each with what closes it.
    open: Arc<std::sync::Mutex<std::collections::VecDeque<(u64, CancellationToken)>>>,
    next: u64,
}

impl Guarded {
    /// A slot for a new connection, closing the oldest open ones until one is free.
    async fn slot(&self) -> tokio::sync::OwnedSemaphorePermit {
        loop {
            if let Ok(slot) = self.slots.clone().try_acquire_owned() {
                return slot;
            }
            let oldest = self
                .open
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .pop_front();
            if let Some((_, close)) = oldest {
                close.cancel();
            }
            // The semaphore is never closed: only the wait can end this.
            let freed = self.slots.clone().acquire_owned();
            if let Ok(Ok(slot)) = tokio::time::timeout(Duration::from_millis(100), freed).await {
                return slot;
            }
        }
    }
}

impl axum::serve::Listener for Guarded {
    type Io = Conn;
    type Addr = std::net::SocketAddr;

    async fn accept(&mut self) -> (Conn, std::net::SocketAddr) {
        let (stream, addr) = axum::serve::Listener::accept(&mut self.listener).await;
        let slot = self.slot().await;
        let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
        stream.set_read_timeout(Some(self.idle));
        stream.set_write_timeout(Some(self.idle));
        let close = CancellationToken::new();
        self.next += 1;
        let id = self.next;
        self.open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back((id, close.clone()));
        let conn = Conn {
            stream: Box::pin(stream),
            closed: Box::pin(close.cancelled_owned()),
            ended: false,
            _held: Held {
                id,
                open: self.open.clone(),
                _slot: slot,
            },
        };
        (conn, addr)
    }

    fn local_addr(&self) -> std::io::Result<std::net::SocketAddr> {
        self.listener.local_addr()
    }
}

/// One connection of the endpoint, holding its slot until it closes.
struct Conn {
    stream: std::pin::Pin<Box<tokio_io_timeout::TimeoutStream<tokio::net::TcpStream>>>,
    /// Ready when a newer connection needs the slot: reading then ends.
    closed: std::pin::Pin<Box<tokio_util::sync::WaitForCancellationFutureOwned>>,
    ended: bool,
    _held: Held,
}

/// A connection's slot and its place among the open ones, both given back on drop.
struct Held {
    id: u64,
    open: Arc<std::sync::Mutex<std::collections::VecDeque<(u64, CancellationToken)>>>,
    _slot: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        open.retain(|(id, _)| *id != self.id);
    }
}

impl tokio::io::AsyncRead for Conn {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        // Closed for a newer connection: read as the peer's end (hyper then closes it).
        if this.ended || std::future::Future::poll(this.closed.as_mut(), cx).is_ready() {
            this.ended = true;
            return std::task::Poll::Ready(Ok(()));
        }
        this.stream.as_mut().poll_read(cx, buf)
    }
}

impl tokio::io::AsyncWrite for Conn {
    fn poll_write(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        self.get_mut().stream.as_mut().poll_write(cx, buf)
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.get_mut().stream.as_mut().poll_flush(cx)
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        self.get_mut().stream.as_mut().poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The endpoint with 4 slots, closing a connection silent for `idle`: its address,
    /// and what stops it.
    async fn guarded(idle: Duration) -> (std::net::SocketAddr, CancellationToken) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let admin = Admin {
            broker: Arc::new(BrokerState::default()),
            redis: None,
            metrics: None,
        };
        let stop = CancellationToken::new();
        let guard = Guard {
            connections: 4,
            idle,
        };
        tokio::spawn(serve_guarded(listener, admin, stop.clone(), guard));
        (addr, stop)
    }

    /// The answer to `GET /healthz` on a new connection to `addr`, within `within`.
    async fn healthz(addr: std::net::SocketAddr, within: Duration) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut probe = tokio::net::TcpStream::connect(addr).await.expect("connect");
        probe
            .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            .await
            .expect("write");
        let mut answer = String::new();
        tokio::time::timeout(within, probe.read_to_string(&mut answer))
            .await
            .expect("answered in time")
            .expect("read");
        answer
    }

    /// Hunt N: connections to the endpoint that send nothing were held for ever, and
    /// 20,000 of them took every file descriptor the worker had: every job was then
    /// `unknown/local_resources`, and `/healthz` stopped answering. The endpoint holds
    /// a few connections at once and closes a silent one.
    #[tokio::test]
    async fn silent_connections_are_closed_and_cannot_take_every_descriptor() {
        use tokio::io::AsyncReadExt;
        let (addr, stop) = guarded(Duration::from_millis(300)).await;
        let mut silent = Vec::new();
        for _ in 0..6 {
            silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        // The first ones are closed after their silence (the others wait their turn).
        let mut buf = [0u8; 16];
        let closed = tokio::time::timeout(Duration::from_secs(3), silent[0].read(&mut buf)).await;
        assert!(
            matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
            "a silent connection is closed: {closed:?}"
        );
        drop(silent);
        let answer = healthz(addr, Duration::from_secs(3)).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        stop.cancel();
    }

    /// Hunt U: 70 silent connections, opened again as the endpoint closed them after
    /// their 10 s, kept `/healthz` from answering (9 of 10 polls failed over 30 s with
    /// Kubernetes' 1 s timeout): the shipped liveness probe would restart a worker that
    /// works. A new connection now closes the oldest when every slot is taken.
    #[tokio::test]
    async fn silent_connections_holding_every_slot_leave_healthz_answering() {
        let (addr, stop) = guarded(Duration::from_secs(30)).await;
        let mut silent = Vec::new();
        for _ in 0..8 {
            silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        for _ in 0..3 {
            // Within a liveness probe's second.
            let answer = healthz(addr, Duration::from_secs(1)).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
            // The flood comes again.
            silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
        }
        stop.cancel();
    }

    #[test]
    fn eviction_is_read_from_info_memory() {
        let info = |max: &str, policy: &str| {
            format!("# Memory\r\nused_memory:1024\r\nmaxmemory:{max}\r\nmaxmemory_human:0B\r\nmaxmemory_policy:{policy}\r\n")
        };
        assert_eq!(
            evicts(&info("0", "allkeys-lru")),
            Some(false),
            "no maxmemory"
        );
        assert_eq!(evicts(&info("104857600", "noeviction")), Some(false));
        assert_eq!(evicts(&info("104857600", "allkeys-lru")), Some(true));
        assert_eq!(evicts(&info("104857600", "volatile-ttl")), Some(true));
        assert_eq!(evicts("# Memory\r\nused_memory:1\r\n"), None);
    }

    /// On a Redis Cluster, redis-rs sends `INFO` to every primary and answers with a
    /// map of node to text (its `Special` response policy): read as one string it
    /// failed, and `picket_redis_evicts` was never set for any cluster.
    #[test]
    fn eviction_is_read_from_each_node_of_a_cluster() {
        use redis::Value;
        let info = |policy: &str| {
            Value::BulkString(
                format!("# Memory\r\nmaxmemory:104857600\r\nmaxmemory_policy:{policy}\r\n")
                    .into_bytes(),
            )
        };
        let node = |n: u16| Value::BulkString(format!("127.0.0.1:{n}").into_bytes());
        let cluster = |policies: &[&str]| {
            Value::Map(
                policies
                    .iter()
                    .zip(7000..)
                    .map(|(p, n)| (node(n), info(p)))
                    .collect(),
            )
        };
        assert_eq!(
            evicts_in(&cluster(&["noeviction", "noeviction"])),
            Some(false)
        );
        assert_eq!(
            evicts_in(&cluster(&["noeviction", "allkeys-lru"])),
            Some(true)
        );
        assert_eq!(
            evicts_in(&info("volatile-lru")),
            Some(true),
            "a single Redis"
        );
        let failed = Value::Map(vec![(node(7000), Value::SimpleString("not text".into()))]);
        assert_eq!(evicts_in(&failed), None, "no node says");
    }
}
