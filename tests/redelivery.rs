//! Defects of redelivery and refused publishes, each test written first (it failed on
//! the code of its day) and kept: a redelivered job without an id keeps its `job_id`, a
//! refused reply does not starve other jobs, a refused consume backs off.
//! Targets are our own servers on 127.0.0.2x.

use std::collections::{BTreeMap, HashSet};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use lapin::options::BasicConsumeOptions;
use lapin::types::FieldTable;
use lapin::BasicProperties;
use serde_json::json;

use crate::support::ops::{get_ops, metric};
use crate::support::picket::{
    base_toml, page, settings, workers_on_the_shared_broker, Client, Worker,
};
use crate::support::run::*;
use crate::support::worker_process::WorkerProcess;
use crate::support::{free_port, serve};

// ---------------------------------------------------------------------------------------
// Each test below was written against a defect and failed until it was fixed; the
// comments say what the defect was.
// ---------------------------------------------------------------------------------------

/// A job with neither `id` nor an AMQP `message_id` (every job `picket enqueue` made
/// from a bare URL then) got an id made up by whichever worker handled it, so after a
/// kill -9 the redelivered job's result carried a *different* `job_id` and subscribers
/// could not deduplicate. The contract says the result carries the same `job_id`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivered_job_without_id_keeps_its_job_id() {
    // Whether an ack is lost with the process is a matter of timing: try a few times.
    let mut twice = Vec::new();
    for ip in ["127.0.0.26", "127.0.0.28", "127.0.0.29", "127.0.0.30"] {
        twice = kill_mid_burst_without_ids(ip).await;
        eprintln!(
            "kill -9 mid-burst: {} URLs answered more than once",
            twice.len()
        );
        if !twice.is_empty() {
            break;
        }
    }
    assert!(
        !twice.is_empty(),
        "no redelivery happened; nothing to compare"
    );
    let differing: Vec<_> = twice
        .iter()
        .filter(|(_, ids)| ids.iter().any(|i| i != &ids[0]))
        .collect();
    assert!(
        differing.is_empty(),
        "{} of {} redelivered jobs got a different job_id, e.g. {:?}",
        differing.len(),
        twice.len(),
        differing.first()
    );
}

/// One kill -9 mid-burst of id-less jobs; returns the job ids of every URL answered
/// more than once.
async fn kill_mid_burst_without_ids(ip: &str) -> Vec<(String, Vec<String>)> {
    const JOBS: usize = 400;
    // The target holds every answer until the gate opens, so that 200 jobs finish at
    // once and the kill lands between results confirmed and acks sent.
    let (gate_tx, gate) = tokio::sync::watch::channel(false);
    let held = Arc::new(AtomicUsize::new(0));
    let h = held.clone();
    let router = Router::new().route(
        "/",
        get(move || {
            let (h, mut gate) = (h.clone(), gate.clone());
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                let _ = gate.wait_for(|open| *open).await;
                axum::response::Html(page("<p>gated</p>"))
            }
        }),
    );
    let addr = serve(ip, router).await;
    let (toml, s, client) = workers_on_the_shared_broker().await;
    // No "id" and no message_id: each job is told apart by its URL only.
    let msgs: Vec<(Vec<u8>, BasicProperties)> = (0..JOBS)
        .map(|i| {
            let body = json!({"url": format!("http://{addr}/?n={i}")});
            (
                body.to_string().into_bytes(),
                BasicProperties::default().with_delivery_mode(2),
            )
        })
        .collect();
    publish_all(&client.ch, &s.amqp.jobs_queue, &msgs).await;
    let results = Collector::start(&client.conn, &s.amqp.results_queue).await;
    let env = |n: usize| -> Vec<(&'static str, String)> {
        vec![
            ("PICKET__PROBE__CONCURRENCY", "200".into()),
            ("PICKET__RATE_LIMIT__PER_IP__RATE", "100000".into()),
            ("PICKET__RATE_LIMIT__PER_IP__BURST", "100000".into()),
            ("PICKET__RATE_LIMIT__PER_IP__MAX_INFLIGHT", "100000".into()),
            ("PICKET__WORKER__NAME", format!("noid-{n}")),
            ("PICKET__HTTP__LISTEN", format!("127.0.0.1:{}", free_port())),
        ]
    };
    let mut first = WorkerProcess::start(&toml, &env(0));
    wait_for(
        "200 probes held at the target",
        Duration::from_secs(30),
        || held.load(Ordering::SeqCst) >= 200,
    )
    .await;
    first.assert_running();
    gate_tx.send_replace(true);
    wait_for("the burst of results", Duration::from_secs(10), || {
        results.len() >= 20
    })
    .await;
    first.kill().await;
    let worker = WorkerProcess::start(&toml, &env(1));
    wait_for("every URL answered", Duration::from_secs(30), || {
        let got = results.got.lock().expect("lock");
        got.iter()
            .map(|r| r.field("url").to_string())
            .collect::<HashSet<_>>()
            .len()
            >= JOBS
    })
    .await;
    worker.terminate().await;
    let all = results.finish(Duration::from_millis(500)).await;
    let mut by_url: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for r in &all {
        by_url
            .entry(r.field("url").to_string())
            .or_default()
            .push(r.field("job_id").to_string());
    }
    by_url
        .into_iter()
        .filter(|(_, ids)| ids.len() > 1)
        .collect()
}

/// Ten slow jobs to a target on `ip` and one job `odd` with `props` (a reply that goes
/// wrong), run by a worker named `name` for `run`: how many results `odd` got, and how
/// many of the slow jobs were answered. `reply_to` makes the properties from the test's
/// client (which may declare a queue for it).
async fn slow_jobs_beside_one_with(
    ip: &str,
    name: &str,
    run: Duration,
    props: impl AsyncFnOnce(&Client) -> BasicProperties,
) -> (usize, usize) {
    let (addr, hits) = target(ip, Duration::from_millis(1500)).await;
    let mut s = settings();
    s.targets.allow_private = true;
    s.worker.name = name.into();
    let client = Client::connect().await;
    client.declare(&s).await;
    let props = props(&client).await;
    let results = Collector::start(&client.conn, &s.amqp.results_queue).await;
    let worker = Worker::start(&s);
    let (slow_ids, msgs) = jobs("slow", 10, &format!("http://{ip}:{}/", addr.port()));
    publish_all(&client.ch, &s.amqp.jobs_queue, &msgs).await;
    client
        .publish(
            &s.amqp.jobs_queue,
            br#"{"id": "odd", "url": "ftp://odd.test/"}"#,
            props,
        )
        .await;
    tokio::time::sleep(run).await;
    let all = results.finish(Duration::from_millis(500)).await;
    let odd = all.iter().filter(|r| r.job_id() == Some("odd")).count();
    let slow = all
        .iter()
        .filter(|r| {
            r.job_id()
                .is_some_and(|id| slow_ids.iter().any(|s| s == id))
        })
        .count();
    eprintln!(
        "{run:?}: {odd} results for the odd job, {slow} of 10 slow jobs answered, \
         {} requests to the slow target",
        hits.load(Ordering::SeqCst)
    );
    worker.shutdown().await;
    (odd, slow)
}

/// The defect: one job whose `reply_to` queue refuses publishes got its result
/// confirmed on the results exchange and its reply nacked, so the job was nacked back
/// and the whole session torn down, every ~0.3 s, for ever; every other job in flight
/// lost its channel, and jobs slower than a session's life were never answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_reply_does_not_starve_other_jobs() {
    let refusing = async |client: &Client| {
        let full = client.refusing_queue().await;
        BasicProperties::default().with_reply_to(full.as_str().into())
    };
    let run = Duration::from_secs(12);
    let (poison, slow) =
        slow_jobs_beside_one_with("127.0.0.27", "reply-refused", run, refusing).await;
    assert_eq!(slow, 10, "every other job is answered");
    assert!(
        poison <= 2,
        "the poison job's result was published {poison} times"
    );
}

/// The defect: a job whose `reply_to` is a direct reply-to name of a node the broker
/// does not know (the requester's node left the cluster) got its result confirmed, and
/// then the reply made RabbitMQ close the worker's whole connection (INTERNAL_ERROR):
/// the job could not be acked, came back, and did the same, every ~0.6 s for ever, with
/// a duplicate result each time and every other job in flight cut off. A reply is the
/// requester's: it goes over a connection of its own, and the job is acked once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_that_closes_its_connection_answers_the_job_once() {
    // A process on node `reply@27796420`, which is not in this broker's cluster.
    let gone = async |_: &Client| {
        let name = "amq.rabbitmq.reply-to.g1h2AA5yZXBseUAyNzc5NjQyMAAAC1oAAAAAYL7TFQ==.5/F5mXJKXXnR8wNm1q2gGw==";
        BasicProperties::default()
            .with_reply_to(name.into())
            .with_correlation_id("c".into())
    };
    let run = Duration::from_secs(8);
    let (orphan, slow) = slow_jobs_beside_one_with("127.0.59.30", "reply-gone", run, gone).await;
    assert_eq!(slow, 10, "every other job is answered");
    assert_eq!(orphan, 1, "the job is answered once, not again and again");
}

/// The defect: when the jobs queue could not be consumed (here another consumer holds
/// it exclusively; in production also a user without read permission), the worker
/// reconnected at once, with no backoff: about 25 connections a second, two log lines
/// each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_consume_backs_off() {
    let toml = format!("{}\n[log]\nformat = \"json\"\n", base_toml());
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    let ch = client.conn.create_channel().await.expect("channel");
    let _holder = ch
        .basic_consume(
            s.amqp.jobs_queue.as_str().into(),
            "holder".into(),
            BasicConsumeOptions {
                exclusive: true,
                ..BasicConsumeOptions::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("exclusive consume");
    let mut worker = WorkerProcess::plain(&toml);
    tokio::time::sleep(Duration::from_secs(5)).await;
    worker.assert_running();
    let (_, text) = get_ops(s.http.listen, "/metrics").await.expect("metrics");
    let reconnects = metric(&text, "picket_broker_reconnects_total").unwrap_or(0.0);
    let (code, _) = get_ops(s.http.listen, "/readyz").await.expect("readyz");
    eprintln!("5 s of a refused consume: {reconnects} reconnects, /readyz {code}");
    worker.terminate().await;
    assert_eq!(code, 503);
    assert!(
        reconnects <= 5.0,
        "{reconnects} reconnects in 5 s: no backoff"
    );
}

/// Hunt W: on a quorum jobs queue every delivery that goes back counts toward picket's
/// `x-delivery-limit` (5), a graceful stop's too. Jobs a worker had only prefetched, and
/// those still running when its grace ran out, went back by the channel's close at each
/// SIGTERM, so a backlog that lived through six rollouts or scale-downs was dead-lettered
/// unanswered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn graceful_stops_never_use_up_a_quorum_queues_delivery_limit() {
    // Slower than the grace: the jobs in flight at each stop are unfinished too.
    let router = Router::new().route(
        "/",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(4)).await;
            axum::response::Html(page("<p>slow</p>"))
        }),
    );
    let addr = serve("127.0.9.33", router).await;
    let toml = format!(
        "{}\n[targets]\nallow_private = true\n",
        base_toml().replacen("[amqp]\n", "[amqp]\nqueue_type = \"quorum\"\n", 1)
    );
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    for i in 0..6 {
        let url = format!("http://{addr}/?n={i}");
        client
            .job(&s, json!({"id": format!("slow-{i}"), "url": url}))
            .await;
    }
    // Two jobs in flight, four only prefetched; a grace shorter than a job.
    let env = [
        ("PICKET__PROBE__CONCURRENCY", "2"),
        ("PICKET__AMQP__PREFETCH", "6"),
        ("PICKET__WORKER__SHUTDOWN_GRACE", "1s"),
    ];
    for _ in 0..6 {
        let worker = WorkerProcess::start(&toml, &env);
        tokio::time::sleep(Duration::from_secs(3)).await;
        worker.terminate().await;
    }
    assert_eq!(
        client.depth(&s.amqp.dead_letter_queue).await,
        0,
        "jobs were dead-lettered by graceful stops"
    );
    let worker = Worker::start(&s);
    let mut answered = HashSet::new();
    for r in client.results(&s, 6, Duration::from_secs(60)).await {
        answered.insert(r["job_id"].as_str().unwrap_or_default().to_string());
    }
    worker.shutdown().await;
    assert_eq!(answered.len(), 6, "answered: {answered:?}");
}

/// A result refused for about a day (a queue bound to the exchange that nobody reads
/// any more, left full) was tried every 30 s for ever, and every change after it joined
/// it. It is dead-lettered with its reason, its tries set back to none, so a replay
/// once the queue has room tries it afresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_refused_for_a_day_is_dead_lettered_not_tried_for_ever() {
    use lapin::types::AMQPValue;
    let s = settings();
    let c = Client::connect().await;
    c.full_results_queue(&s).await;
    let w = Worker::start(&s);
    // As a worker hands it back after its 3000th refusal (a day is about 2886).
    let mut headers = FieldTable::default();
    headers.insert(
        "x-picket-pending".into(),
        AMQPValue::LongString("result".into()),
    );
    headers.insert(
        "x-picket-pending-tries".into(),
        AMQPValue::LongLongInt(3000),
    );
    let body = br#"{"job_id":"a-day-late","verdict":"up","reason":"ok","changed":false}"#;
    let props = BasicProperties::default().with_headers(headers);
    c.publish(&s.amqp.jobs_queue, body, props).await;
    let dead = c
        .take(&s.amqp.dead_letter_queue, 1, Duration::from_secs(20))
        .await;
    w.shutdown().await;
    assert_eq!(dead[0].data, body.to_vec());
    let headers = dead[0].properties.headers().clone().unwrap_or_default();
    let text = |name: &str| match headers.inner().get(name) {
        Some(AMQPValue::LongString(v)) => v.to_string(),
        other => format!("{other:?}"),
    };
    assert!(
        text("x-picket-reason").contains("refused"),
        "{:?}",
        text("x-picket-reason")
    );
    assert_eq!(
        headers.inner().get("x-picket-pending-tries"),
        Some(&AMQPValue::LongLongInt(0))
    );
    assert_eq!(text("x-picket-pending"), "result");
}

/// Hunt W (D11), and any full results queue: a result the broker refused (`reject-publish`)
/// handed the whole job back every ~2 s for as long as the queue stayed full (for ever,
/// for a result bigger than a queue's `max-length-bytes`). Its redelivery was answered
/// from the key's kept report, but with Redis away it was probed again: the site asked
/// every ~2 s, for every job in flight. The result is retried alone: the site is asked
/// once, and its one result arrives when the queue has room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_results_queue_asks_the_site_once() {
    let hits = Arc::new(AtomicUsize::new(0));
    let counted = hits.clone();
    let router = Router::new().route(
        "/",
        get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { axum::response::Html(page("asked")) }
        }),
    );
    let addr = serve("127.0.9.36", router).await;
    let mut s = settings();
    s.targets.allow_private = true;
    // Redis away: no kept report to answer a redelivery from.
    s.redis.url = format!("redis://127.0.0.1:{}/", free_port());
    let c = Client::connect().await;
    c.full_results_queue(&s).await;
    let w = Worker::start(&s);
    c.job(&s, json!({"id": "once", "url": format!("http://{addr}/")}))
        .await;
    tokio::time::sleep(Duration::from_secs(10)).await;
    let asked = hits.load(Ordering::SeqCst);
    assert_eq!(
        asked, 1,
        "the site was asked {asked} times while its result waited"
    );
    c.make_room_for_a_result(&s).await;
    let r = c.results(&s, 1, Duration::from_secs(40)).await.remove(0);
    assert_eq!(
        (r["job_id"].as_str(), r["verdict"].as_str()),
        (Some("once"), Some("up"))
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    w.shutdown().await;
    assert_eq!(
        c.depth(&s.amqp.results_queue).await,
        0,
        "one result, not more"
    );
}
