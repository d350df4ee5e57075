//! A run of jobs through the real broker, seen from outside: target servers that count
//! their requests, publishing a batch of persistent jobs, a [`Collector`] that keeps
//! everything a queue gives (on one broker, or following a cluster's nodes), and waits
//! with a deadline. Used by the fault tests (`reliability`, `malformed`, `redelivery`,
//! `failover`).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use lapin::message::Delivery;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::support::picket::{page, Client};
use crate::support::{free_port, serve, unique, RabbitServer, RedisServer};

/// A target serving a page over `min_body_bytes` after `delay`, counting requests.
pub async fn target(ip: &str, delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let router = Router::new().route(
        "/",
        get(move || {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                axum::response::Html(page("<p>reliability</p>"))
            }
        }),
    );
    (serve(ip, router).await, hits)
}

/// A target like [`target`] whose answer to `/?n=I` takes 0–299 ms depending on I, so
/// that jobs taken in order finish out of order (what batched acks must get right).
pub async fn uneven_target(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let router = Router::new().route(
        "/",
        get(move |query: axum::extract::RawQuery| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let n: u64 = query
                    .0
                    .as_deref()
                    .and_then(|q| q.strip_prefix("n="))
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(n * 7919 % 300)).await;
                axum::response::Html(page("<p>reliability</p>"))
            }
        }),
    );
    (serve(ip, router).await, hits)
}

/// Persistent (delivery mode 2) with a message id: what a careful publisher sends, and
/// what survives a broker restart (transient messages in a durable classic queue do not).
pub fn persistent(id: &str) -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_message_id(id.into())
}

/// Publishes every message to `queue` with confirms, pipelined in windows.
pub async fn publish_all(ch: &Channel, queue: &str, msgs: &[(Vec<u8>, BasicProperties)]) {
    for window in msgs.chunks(250) {
        let mut pending = Vec::with_capacity(window.len());
        for (body, props) in window {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    body,
                    props.clone(),
                )
                .await
                .expect("publish");
            pending.push(confirm);
        }
        for c in pending {
            assert!(c.await.expect("confirm").is_ack(), "broker acked a publish");
        }
    }
}

/// `n` job messages `{prefix}{i}` for `url` (with `?n=i` so each job is its own URL).
pub fn jobs(prefix: &str, n: usize, url: &str) -> (Vec<String>, Vec<(Vec<u8>, BasicProperties)>) {
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}{i}")).collect();
    let msgs = ids
        .iter()
        .enumerate()
        .map(|(i, id)| {
            let body = json!({"id": id, "url": format!("{url}?n={i}")}).to_string();
            (body.into_bytes(), persistent(id))
        })
        .collect();
    (ids, msgs)
}

/// One message taken from a queue by a [`Collector`].
#[derive(Clone, Debug)]
pub struct Taken {
    /// When the collector took it.
    pub at: Instant,
    pub routing_key: String,
    pub message_id: Option<String>,
    pub reason: Option<String>,
    pub data: Vec<u8>,
    pub json: Option<Value>,
}

impl Taken {
    pub fn job_id(&self) -> Option<&str> {
        self.json.as_ref()?.get("job_id")?.as_str()
    }
    pub fn field(&self, key: &str) -> &str {
        self.json
            .as_ref()
            .and_then(|j| j.get(key))
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// Consumes a queue in the background (no-ack) and keeps everything it took.
pub struct Collector {
    pub got: Arc<Mutex<Vec<Taken>>>,
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Collector {
    pub async fn start(conn: &Connection, queue: &str) -> Collector {
        let ch = conn.create_channel().await.expect("collector channel");
        ch.basic_qos(1000, BasicQosOptions::default())
            .await
            .expect("qos");
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                unique("collect").as_str().into(),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("collector consumes");
        let got = Arc::new(Mutex::new(Vec::new()));
        let stop = CancellationToken::new();
        let (g, st) = (got.clone(), stop.clone());
        let task = tokio::spawn(async move {
            loop {
                let d = tokio::select! {
                    () = st.cancelled() => break,
                    d = consumer.next() => d,
                };
                let Some(Ok(d)) = d else { break };
                g.lock().expect("collector lock").push(Taken::from(d));
            }
            let _ = ch.close(200, "done".into()).await;
        });
        Collector { got, stop, task }
    }

    /// Consumes `queue` of a cluster whose nodes are `urls`, connecting to the next
    /// node when its node dies. Acks each message once taken: an ack lost with its node
    /// brings the message back, taken twice (the same bytes; see [`Taken::data`]).
    pub fn follow(urls: Vec<String>, queue: String) -> Collector {
        let got: Arc<Mutex<Vec<Taken>>> = Arc::default();
        let stop = CancellationToken::new();
        let (g, st) = (got.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let mut i = 0;
            while !st.is_cancelled() {
                let url = &urls[i % urls.len()];
                i += 1;
                if let Err(e) = follow_node(url, &queue, &g, &st).await {
                    eprintln!("collector: {e}; trying the next node");
                }
                tokio::select! {
                    () = st.cancelled() => break,
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                }
            }
        });
        Collector { got, stop, task }
    }

    /// Whether a result from `worker` was taken after `t`.
    pub fn has_result_after(&self, worker: &str, t: Instant) -> bool {
        let got = self.got.lock().expect("collector lock");
        got.iter().any(|g| g.field("worker") == worker && g.at > t)
    }

    pub fn len(&self) -> usize {
        self.got.lock().expect("collector lock").len()
    }

    /// Distinct `job_id`s among the results taken so far.
    pub fn distinct_ids(&self) -> usize {
        let got = self.got.lock().expect("collector lock");
        got.iter()
            .filter_map(Taken::job_id)
            .collect::<HashSet<_>>()
            .len()
    }

    /// Waits until nothing new arrived for `quiet`, then stops and returns everything.
    pub async fn finish(self, quiet: Duration) -> Vec<Taken> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let n = self.len();
            tokio::time::sleep(quiet).await;
            if self.len() == n || Instant::now() > deadline {
                break;
            }
        }
        self.stop.cancel();
        let _ = self.task.await;
        let got = self.got.lock().expect("collector lock");
        got.clone()
    }
}

impl From<Delivery> for Taken {
    fn from(d: Delivery) -> Taken {
        let reason =
            d.properties
                .headers()
                .as_ref()
                .and_then(|h| match h.inner().get("x-picket-reason") {
                    Some(AMQPValue::LongString(s)) => Some(s.to_string()),
                    _ => None,
                });
        Taken {
            at: Instant::now(),
            routing_key: d.routing_key.to_string(),
            message_id: d.properties.message_id().as_ref().map(|m| m.to_string()),
            reason,
            json: serde_json::from_slice(&d.data).ok(),
            data: d.data,
        }
    }
}

/// Takes `queue` from the node at `url` until `stop` or the node fails.
async fn follow_node(
    url: &str,
    queue: &str,
    got: &Mutex<Vec<Taken>>,
    stop: &CancellationToken,
) -> Result<(), String> {
    let conn = Connection::connect(url, ConnectionProperties::default())
        .await
        .map_err(|e| e.to_string())?;
    let ch = conn.create_channel().await.map_err(|e| e.to_string())?;
    ch.basic_qos(500, BasicQosOptions::default())
        .await
        .map_err(|e| e.to_string())?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            unique("collect").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let d = tokio::select! {
            () = stop.cancelled() => break,
            d = consumer.next() => d,
        };
        let d = match d {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e.to_string()),
            None => return Err("consumer ended".into()),
        };
        let acker = d.acker.clone();
        got.lock().expect("collector lock").push(Taken::from(d));
        let _ = acker.ack(BasicAckOptions::default()).await;
    }
    let _ = conn.close(200, "done".into()).await;
    Ok(())
}

/// Polls `cond` every 50 ms until it holds; panics with `what` after `within`.
pub async fn wait_for(what: &str, within: Duration, mut cond: impl FnMut() -> bool) -> Duration {
    let t = Instant::now();
    while !cond() {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    t.elapsed()
}

/// Starts a private server on a blocking thread (RabbitMQ takes seconds to boot).
pub async fn private_rabbit() -> Arc<RabbitServer> {
    Arc::new(
        tokio::task::spawn_blocking(RabbitServer::launch)
            .await
            .expect("join")
            .expect("private RabbitMQ starts"),
    )
}

pub async fn private_redis() -> Arc<RedisServer> {
    Arc::new(
        tokio::task::spawn_blocking(RedisServer::launch)
            .await
            .expect("join")
            .expect("private redis-server starts"),
    )
}

/// Counts results per job id and lists ids seen more than once.
pub fn tally(results: &[Taken]) -> (BTreeMap<String, Vec<String>>, Vec<String>) {
    let mut by_id: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in results {
        let id = r.job_id().unwrap_or("<no job_id>").to_string();
        by_id
            .entry(id)
            .or_default()
            .push(r.field("worker").to_string());
    }
    let dups = by_id
        .iter()
        .filter(|(_, w)| w.len() > 1)
        .map(|(id, w)| format!("{id} x{} (workers {w:?})", w.len()))
        .collect();
    (by_id, dups)
}
