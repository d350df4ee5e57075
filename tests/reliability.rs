//! Reliability under faults (issue 5): a worker process killed with SIGKILL mid-run, a
//! broker restart and a Redis outage under a running worker, and the operations
//! endpoint during a broker outage. Malformed messages are in `malformed`, redelivery
//! and refused publishes in `redelivery`.
//!
//! Every target is our own server on 127.0.0.20..=127.0.0.30; every load is bounded in
//! count and time. Tests that stop a server use a private one (`RabbitServer::launch`,
//! `RedisServer::launch`) so the other tests of this binary keep their shared servers.

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::free_port;
use crate::support::ops::{get_ops, metric, wait_readyz};
use crate::support::picket::{base_toml, settings, workers_on_the_shared_broker, Client, Worker};
use crate::support::run::*;
use crate::support::worker_process::WorkerProcess;

// ---------------------------------------------------------------------------------------
// 1. kill -9 a worker process mid-run
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_run_then_a_new_worker_loses_no_job() {
    const JOBS: usize = 2000;
    const KILL_AFTER: usize = 500;
    let started = Instant::now();
    // Answers take 0-299 ms: jobs finish out of order, and a batched ack that settled a
    // job still being probed would lose it here.
    let (addr, hits) = uneven_target("127.0.0.20").await;
    let (toml, s, client) = workers_on_the_shared_broker().await;
    let (ids, msgs) = jobs("k", JOBS, &format!("http://127.0.0.20:{}/", addr.port()));
    publish_all(&client.ch, &s.amqp.jobs_queue, &msgs).await;
    let results = Collector::start(&client.conn, &s.amqp.results_queue).await;

    // Limits high enough not to matter: this is about the broker, not politeness.
    let env = |name: &str| -> Vec<(&'static str, String)> {
        vec![
            ("PICKET__PROBE__CONCURRENCY", "200".into()),
            ("PICKET__RATE_LIMIT__PER_IP__RATE", "100000".into()),
            ("PICKET__RATE_LIMIT__PER_IP__BURST", "100000".into()),
            ("PICKET__RATE_LIMIT__PER_IP__MAX_INFLIGHT", "100000".into()),
            ("PICKET__WORKER__NAME", name.into()),
            ("PICKET__HTTP__LISTEN", format!("127.0.0.1:{}", free_port())),
        ]
    };
    let mut first = WorkerProcess::start(&toml, &env("kill-a"));
    let t = Instant::now();
    while results.len() < KILL_AFTER {
        first.assert_running();
        assert!(
            t.elapsed() < Duration::from_secs(30),
            "only {} results in 30 s; log:\n{}",
            results.len(),
            first.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let status = first.kill().await;
    let at_kill = (results.len(), hits.load(Ordering::SeqCst));
    assert!(!status.success(), "killed, not exited: {status:?}");
    eprintln!(
        "kill -9 after {:?}: {} results out, {} requests had reached the target \
         (about {} probes in flight)",
        t.elapsed(),
        at_kill.0,
        at_kill.1,
        at_kill.1.saturating_sub(at_kill.0)
    );

    let second_env = env("kill-b");
    let second_ops: SocketAddr = second_env
        .iter()
        .find(|(k, _)| *k == "PICKET__HTTP__LISTEN")
        .and_then(|(_, v)| v.parse().ok())
        .expect("the second worker's listen address");
    let mut second = WorkerProcess::start(&toml, &second_env);
    let t2 = Instant::now();
    let within = (t2, Duration::from_secs(40));
    until_answered(&results, JOBS, &mut second, within, "the restart").await;
    let rest = t2.elapsed();
    let metrics = get_ops(second_ops, "/metrics")
        .await
        .map(|(_, body)| body)
        .unwrap_or_default();
    second.terminate().await;
    let all = results.finish(Duration::from_millis(1000)).await;

    let (by_id, dups) = tally(&all);
    let missing: Vec<&String> = ids.iter().filter(|id| !by_id.contains_key(*id)).collect();
    let not_up: Vec<&Taken> = all.iter().filter(|r| r.field("verdict") != "up").collect();
    let extra = all.len() - by_id.len();
    eprintln!(
        "kill -9: {JOBS} jobs, {} results, {} distinct ids, {} duplicate results on {} ids, \
         {} requests to the target; second worker finished the rest in {rest:?}; total {:?}",
        all.len(),
        by_id.len(),
        extra,
        dups.len(),
        hits.load(Ordering::SeqCst),
        started.elapsed()
    );
    for d in &dups {
        eprintln!("  duplicate: {d}");
    }
    assert!(missing.is_empty(), "lost jobs: {missing:?}");
    assert_eq!(by_id.len(), JOBS, "no result for an id we never sent");
    assert!(
        not_up.is_empty(),
        "{} results not up, e.g. {:?}",
        not_up.len(),
        not_up
            .first()
            .map(|t| String::from_utf8_lossy(&t.data).into_owned())
    );
    // Only deliveries unacked when the worker died can be answered twice.
    assert!(
        extra <= usize::from(s.amqp.prefetch),
        "{extra} duplicates is more than the prefetch window ({})",
        s.amqp.prefetch
    );
    assert_eq!(
        client.depth(&s.amqp.jobs_queue).await,
        0,
        "jobs queue empty"
    );
    assert_eq!(client.depth(&s.amqp.dead_letter_queue).await, 0);
    // Acks were batched: runs of finished jobs went out as one `multiple` ack.
    let consumed = metric(&metrics, "picket_jobs_consumed_total").unwrap_or(0.0);
    let frames = metric(&metrics, "picket_ack_frames_total").unwrap_or(0.0);
    eprintln!("second worker: {consumed} jobs consumed, {frames} ack frames");
    assert!(
        consumed > 0.0,
        "no picket_jobs_consumed_total in:\n{metrics}"
    );
    assert!(
        frames > 0.0 && frames < consumed,
        "{frames} ack frames for {consumed} jobs: not batched"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "took {:?}",
        started.elapsed()
    );
}

// ---------------------------------------------------------------------------------------
// 2. A broker restart and a Redis outage under a running worker
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_restart_and_redis_outage_mid_run_lose_no_job() {
    let started = Instant::now();
    let rabbit = private_rabbit().await;
    let redis = private_redis().await;
    let (addr, hits) = target("127.0.0.21", Duration::from_millis(200)).await;
    let url = format!("http://127.0.0.21:{}/", addr.port());
    let mut s = settings();
    s.amqp.url = rabbit.url().into();
    s.redis.url = redis.url().into();
    s.targets.allow_private = true;
    s.probe.concurrency = 50;
    s.worker.name = "restart-worker".into();
    let client = Client::connect_to(rabbit.url()).await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    let listen = worker.ops;
    wait_readyz(listen, 200, Duration::from_secs(30)).await;
    let mut all_ids = Vec::new();

    // Phase A: a backlog, and the broker restarted while it is being worked on.
    let (ids, msgs) = jobs("a", 400, &url);
    all_ids.extend(ids);
    publish_all(&client.ch, &s.amqp.jobs_queue, &msgs).await;
    wait_for("phase A under way", Duration::from_secs(30), || {
        hits.load(Ordering::SeqCst) >= 100
    })
    .await;
    let _ = client.conn.close(200, "broker restart".into()).await;
    drop(client);
    let hits_before_restart = hits.load(Ordering::SeqCst);
    let t = Instant::now();
    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.restart())
        .await
        .expect("restart");
    let restart_took = t.elapsed();
    let recovered = wait_readyz(listen, 200, Duration::from_secs(60)).await;
    eprintln!(
        "broker restart took {restart_took:?} ({hits_before_restart} requests before it); \
         worker consuming again {recovered:?} after the broker was back"
    );
    assert!(!worker.task.is_finished(), "worker still running");

    // Phase B: new jobs after the restart, with a new client.
    let client = Client::connect_to(rabbit.url()).await;
    let (ids, msgs) = jobs("b", 200, &url);
    all_ids.extend(ids);
    let t = Instant::now();
    publish_all(&client.ch, &s.amqp.jobs_queue, &msgs).await;
    let h = hits.load(Ordering::SeqCst);
    wait_for("probing resumes", Duration::from_secs(30), || {
        hits.load(Ordering::SeqCst) >= h + 50
    })
    .await;
    eprintln!("first 50 probes after the restart within {:?}", t.elapsed());

    // Phase C: Redis gone for ~10 s while jobs keep coming.
    let r = redis.clone();
    tokio::task::spawn_blocking(move || r.stop())
        .await
        .expect("redis stop");
    let redis_down = Instant::now();
    let (ids, msgs) = jobs("c", 200, &url);
    all_ids.extend(ids);
    publish_all(&client.ch, &s.amqp.jobs_queue, &msgs).await;
    let h = hits.load(Ordering::SeqCst);
    let mut saw_unready = false;
    while redis_down.elapsed() < Duration::from_secs(10) {
        if let Some((code, body)) = get_ops(listen, "/readyz").await {
            if code == 503 && body.contains("redis=false") {
                saw_unready = true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let probed_while_down = hits.load(Ordering::SeqCst) - h;
    eprintln!(
        "{probed_while_down} probes while Redis was down; /readyz said redis=false: {saw_unready}"
    );
    assert!(
        probed_while_down >= 100,
        "the worker carries on without Redis (only {probed_while_down} probes in 10 s)"
    );
    assert!(saw_unready, "/readyz reports Redis missing");
    let r = redis.clone();
    tokio::task::spawn_blocking(move || r.start())
        .await
        .expect("redis start");

    // Phase D: after Redis is back.
    let (ids, msgs) = jobs("d", 100, &url);
    all_ids.extend(ids);
    publish_all(&client.ch, &s.amqp.jobs_queue, &msgs).await;
    let redis_back = wait_readyz(listen, 200, Duration::from_secs(30)).await;
    eprintln!("/readyz 200 again {redis_back:?} after Redis came back");

    // Every job answered (results are persistent, so those from before the restart are
    // still queued).
    let results = Collector::start(&client.conn, &s.amqp.results_queue).await;
    wait_for("every job answered", Duration::from_secs(60), || {
        results.distinct_ids() >= all_ids.len()
    })
    .await;
    let all = results.finish(Duration::from_millis(1000)).await;
    let (by_id, dups) = tally(&all);
    let missing: Vec<&String> = all_ids
        .iter()
        .filter(|id| !by_id.contains_key(*id))
        .collect();
    let not_up: Vec<String> = all
        .iter()
        .filter(|r| r.field("verdict") != "up")
        .map(|r| String::from_utf8_lossy(&r.data).into_owned())
        .collect();
    eprintln!(
        "restart/outage: {} jobs, {} results, {} ids answered twice or more, total {:?}",
        all_ids.len(),
        all.len(),
        dups.len(),
        started.elapsed()
    );
    for d in &dups {
        eprintln!("  duplicate: {d}");
    }
    assert!(missing.is_empty(), "lost jobs: {missing:?}");
    assert_eq!(by_id.len(), all_ids.len());
    assert!(not_up.is_empty(), "results not up: {not_up:?}");
    assert_eq!(client.depth(&s.amqp.jobs_queue).await, 0);
    assert_eq!(client.depth(&s.amqp.dead_letter_queue).await, 0);

    // The cache works again after the outage: phase D's verdicts are in the new Redis.
    let mut c = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let (_, key) = crate::support::picket::state_keys(&s, &format!("{url}?n=99"));
    let exists: i64 = redis::cmd("EXISTS")
        .arg(&key)
        .query_async(&mut c)
        .await
        .expect("exists");
    assert_eq!(exists, 1, "{key} written after Redis came back");

    assert!(!worker.task.is_finished(), "worker still running");
    worker.shutdown().await;
}

// ---------------------------------------------------------------------------------------
// 4. /readyz and /metrics during a broker outage
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_and_metrics_follow_a_broker_outage() {
    // A worker process of its own: the metrics registry is per process, and in-process
    // workers of other tests would move the same gauges.
    let started = Instant::now();
    let rabbit = private_rabbit().await;
    let (addr, _) = target("127.0.0.24", Duration::ZERO).await;
    let toml = format!(
        "{}\n[targets]\nallow_private = true\n[log]\nformat = \"json\"\n",
        base_toml()
    );
    let mut s = picket::config::Settings::from_toml(&toml).expect("settings");
    s.amqp.url = rabbit.url().into();
    let listen = s.http.listen;
    let mut worker = WorkerProcess::start(
        &toml,
        &[
            ("PICKET__AMQP__URL", rabbit.url().to_string()),
            ("PICKET__WORKER__NAME", "outage-worker".into()),
        ],
    );
    wait_readyz(listen, 200, Duration::from_secs(30)).await;
    let (_, text) = get_ops(listen, "/metrics").await.expect("metrics");
    assert_eq!(
        metric(&text, "picket_broker_connected"),
        Some(1.0),
        "{text}"
    );
    assert!(
        metric(&text, "picket_broker_reconnects_total").unwrap_or(0.0) == 0.0,
        "{text}"
    );

    // Broker down.
    let stopping = Instant::now();
    let r = rabbit.clone();
    let stop = tokio::task::spawn_blocking(move || r.stop());
    let unready = wait_readyz(listen, 503, Duration::from_secs(15)).await;
    stop.await.expect("stop");
    let stop_took = stopping.elapsed();
    worker.assert_running();
    let (_, text) = get_ops(listen, "/metrics")
        .await
        .expect("metrics while down");
    assert_eq!(
        metric(&text, "picket_broker_connected"),
        Some(0.0),
        "while the broker is down: {text}"
    );
    let (code, body) = get_ops(listen, "/readyz").await.expect("readyz");
    assert_eq!(code, 503);
    assert!(body.contains("broker=false"), "{body}");
    let (code, _) = get_ops(listen, "/healthz").await.expect("healthz");
    assert_eq!(code, 200, "the process itself is healthy");
    eprintln!("broker stop: /readyz 503 after {unready:?} (the stop took {stop_took:?})");

    // A few seconds down, then back.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (code, _) = get_ops(listen, "/readyz").await.expect("readyz");
    assert_eq!(code, 503, "still unready while the broker is down");
    let r = rabbit.clone();
    let t = Instant::now();
    tokio::task::spawn_blocking(move || r.start())
        .await
        .expect("start");
    let start_took = t.elapsed();
    let back = wait_readyz(listen, 200, Duration::from_secs(45)).await;
    eprintln!("broker start took {start_took:?}; /readyz 200 again {back:?} after that");
    let (_, text) = get_ops(listen, "/metrics").await.expect("metrics");
    assert_eq!(
        metric(&text, "picket_broker_connected"),
        Some(1.0),
        "{text}"
    );
    let reconnects = metric(&text, "picket_broker_reconnects_total").unwrap_or(0.0);
    assert!(reconnects >= 1.0, "reconnects {reconnects}: {text}");

    // And it really consumes again.
    let client = Client::connect_to(rabbit.url()).await;
    client
        .job(
            &s,
            json!({"id": "after-outage", "url": format!("http://127.0.0.24:{}/", addr.port())}),
        )
        .await;
    let r = client.results(&s, 1, Duration::from_secs(20)).await;
    assert_eq!(r[0]["job_id"], "after-outage");
    assert_eq!(r[0]["verdict"], "up", "{}", r[0]);
    worker.assert_running();
    worker.terminate().await;
    eprintln!("broker outage test done in {:?}", started.elapsed());
}

/// A worker process on a private broker, one job whose probe (2 s at `ip`) is running
/// when a memory alarm is raised (one byte allowed), so that its result is published
/// into the alarm.
struct InAnAlarm {
    rabbit: std::sync::Arc<crate::support::RabbitServer>,
    worker: WorkerProcess,
    settings: picket::config::Settings,
    toml: String,
    job_id: &'static str,
}

impl InAnAlarm {
    async fn start(ip: &str, job_id: &'static str, grace: &str) -> InAnAlarm {
        let rabbit = private_rabbit().await;
        let (addr, hits) = target(ip, Duration::from_secs(2)).await;
        let toml = format!(
            "{}\n[targets]\nallow_private = true\n[log]\nformat = \"json\"\n",
            base_toml()
        )
        .replace(
            "shutdown_grace = \"10s\"",
            &format!("shutdown_grace = \"{grace}\""),
        );
        let mut settings = picket::config::Settings::from_toml(&toml).expect("settings");
        settings.amqp.url = rabbit.url().into();
        let worker = WorkerProcess::start(&toml, &[("PICKET__AMQP__URL", rabbit.url())]);
        wait_readyz(settings.http.listen, 200, Duration::from_secs(30)).await;
        let client = Client::connect_to(rabbit.url()).await;
        client.declare(&settings).await;
        client
            .job(
                &settings,
                json!({"id": job_id, "url": format!("http://{ip}:{}/", addr.port())}),
            )
            .await;
        let deadline = Instant::now() + Duration::from_secs(15);
        while hits.load(Ordering::SeqCst) == 0 {
            assert!(Instant::now() < deadline, "the probe never started");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        rabbit
            .ctl(&["set_vm_memory_high_watermark", "absolute", "1"])
            .expect("raise the memory alarm");
        InAnAlarm {
            rabbit,
            worker,
            settings,
            toml,
            job_id,
        }
    }

    fn listen(&self) -> SocketAddr {
        self.settings.http.listen
    }

    fn clear(&self) {
        self.rabbit
            .ctl(&["set_vm_memory_high_watermark", "0.4"])
            .expect("clear the memory alarm");
    }

    /// The job's result, read through a connection of its own (the one that published
    /// the job is blocked too).
    async fn answered(&self) {
        let reader = Client::connect_to(self.rabbit.url()).await;
        let r = reader
            .results(&self.settings, 1, Duration::from_secs(30))
            .await;
        assert_eq!(r[0]["job_id"], self.job_id);
        assert_eq!(r[0]["verdict"], "up", "{}", r[0]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_resource_alarm_is_reported_and_its_results_wait_for_it() {
    // On a memory or disk alarm RabbitMQ blocks every connection that publishes: the
    // results of jobs in flight wait for their confirms. An operator must see why nothing
    // comes out (the log, /metrics and /readyz say the broker blocks us), nothing may be
    // lost, and the worker goes on by itself once the alarm clears.
    let mut alarm = InAnAlarm::start("127.0.0.19", "in-the-alarm", "10s").await;
    let listen = alarm.listen();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, text) = get_ops(listen, "/metrics").await.expect("metrics");
        if metric(&text, "picket_broker_blocked") == Some(1.0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "picket_broker_blocked never 1 during the alarm: {:?}\n{}",
            metric(&text, "picket_broker_blocked"),
            alarm.worker.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (code, body) = get_ops(listen, "/readyz").await.expect("readyz");
    assert!(body.contains("blocked=true"), "{code} {body}");
    assert!(
        alarm
            .worker
            .log_text()
            .contains("the broker blocks publishing"),
        "{}",
        alarm.worker.log_tail(20)
    );
    alarm.worker.assert_running();

    alarm.clear();
    alarm.answered().await;
    let (_, text) = get_ops(listen, "/metrics").await.expect("metrics");
    assert_eq!(metric(&text, "picket_broker_blocked"), Some(0.0), "{text}");
    let (_, body) = get_ops(listen, "/readyz").await.expect("readyz");
    assert!(body.contains("blocked=false"), "{body}");
    alarm.worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_a_broker_alarm_exits_cleanly_and_loses_no_job() {
    // A blocked connection is not read by the broker at all, not even its close: a
    // worker told to stop must still end within its grace period, and the job whose
    // result never got out must be answered once the alarm clears.
    let mut alarm = InAnAlarm::start("127.0.0.20", "stopped-in-the-alarm", "2s").await;
    let deadline = Instant::now() + Duration::from_secs(20);
    while !alarm
        .worker
        .log_text()
        .contains("the broker blocks publishing")
    {
        assert!(
            Instant::now() < deadline,
            "the worker never saw the alarm:\n{}",
            alarm.worker.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stopping = Instant::now();
    let pid = alarm.worker.pid().to_string();
    let sent = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill -TERM");
    assert!(sent.success());
    let status = alarm.worker.exited(Duration::from_secs(15)).await;
    assert!(
        status.success(),
        "{status:?}\n{}",
        alarm.worker.log_tail(20)
    );
    eprintln!("stopped in the alarm after {:?}", stopping.elapsed());
    // The log names the jobs left unfinished: here the one whose result is blocked
    // (hunt N: the session's ack task was counted as a job).
    let log = alarm.worker.log_text();
    let over = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|l| {
            l["message"]
                .as_str()
                .is_some_and(|m| m.starts_with("shutdown grace over"))
        })
        .unwrap_or_else(|| {
            panic!(
                "no 'shutdown grace over' line:\n{}",
                alarm.worker.log_tail(20)
            )
        });
    assert_eq!(over["left"], 1, "{over}");

    alarm.clear();
    let next = WorkerProcess::start(&alarm.toml, &[("PICKET__AMQP__URL", alarm.rabbit.url())]);
    alarm.answered().await;
    next.terminate().await;
}

// ---------------------------------------------------------------------------------------
// 5. The path to the worker's broker node falls silent
// ---------------------------------------------------------------------------------------

/// A node whose host freezes or loses power, or a partition between the worker and it,
/// sends no reset: the worker's connection just stops carrying anything. The worker must
/// tell that from a quiet broker by the AMQP heartbeat and move to another node, instead
/// of waiting for TCP to give up (many minutes) or for the broker's own heartbeat.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_broker_falls_silent_moves_to_another_node() {
    use crate::support::relay::Relay;
    let (addr, hits) = target("127.0.0.25", Duration::ZERO).await;
    let url = format!("http://127.0.0.25:{}/", addr.port());
    let mut s = settings();
    let direct = s.amqp.url.clone();
    let broker: SocketAddr = format!("127.0.0.1:{}", crate::support::servers().rabbit.port())
        .parse()
        .expect("broker address");
    // The same node on two paths: the worker takes one (its own order), and that path
    // falls silent.
    let paths = [Relay::start(broker).await, Relay::start(broker).await];
    s.amqp.urls = paths
        .iter()
        .map(|r| direct.replace(&broker.to_string(), &r.addr.to_string()))
        .collect();
    s.amqp.heartbeat = Duration::from_secs(2);
    s.targets.allow_private = true;
    s.worker.name = "silent-broker".into();
    let client = Client::connect_to(&direct).await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    wait_readyz(worker.ops, 200, Duration::from_secs(30)).await;
    let (_, msgs) = jobs("before", 20, &url);
    publish_all(&client.ch, &s.amqp.jobs_queue, &msgs).await;
    wait_for("jobs before", Duration::from_secs(30), || {
        hits.load(Ordering::SeqCst) >= 20
    })
    .await;
    let ready = get_ops(worker.ops, "/readyz").await.unwrap_or_default().1;
    let on = |r: &Relay, ready: &str| ready.contains(&format!(":{}/", r.addr.port()));
    let used = paths
        .iter()
        .position(|r| on(r, &ready))
        .unwrap_or_else(|| panic!("the worker is on neither path: {ready}"));

    paths[used].fall_silent();
    let silent = Instant::now();
    let (_, msgs) = jobs("after", 20, &url);
    publish_all(&client.ch, &s.amqp.jobs_queue, &msgs).await;
    wait_for(
        "jobs after the path fell silent",
        Duration::from_secs(30),
        || hits.load(Ordering::SeqCst) >= 40,
    )
    .await;
    let ready = get_ops(worker.ops, "/readyz").await.unwrap_or_default().1;
    eprintln!(
        "path fell silent: the worker probing again after {:?}; {ready}",
        silent.elapsed()
    );
    assert!(on(&paths[1 - used], &ready), "{ready}");
    assert!(
        silent.elapsed() < Duration::from_secs(15),
        "the worker took {:?} to leave a silent node (heartbeat 2 s)",
        silent.elapsed()
    );
    worker.stop.cancel();
    let _ = worker.task.await;
}

// ---------------------------------------------------------------------------------------
// A killed worker's in-flight slots
// ---------------------------------------------------------------------------------------

/// A worker killed (`kill -9`) while a slow site keeps its request holds that IP's
/// in-flight slot only for a short lease: the survivors ask the IP again within
/// seconds, not once the dead request could have run its whole `probe.timeout` (30 s
/// here) and more. Its neighbours on the IP are not kept waiting for a dead worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_slot_at_an_ip_is_free_again_within_seconds() {
    use crate::support::picket::page;
    use crate::support::targets::{read_request_head, serve_raw};
    use std::sync::atomic::AtomicUsize;
    use std::sync::Arc;
    use tokio::io::AsyncWriteExt;
    let ip = "127.0.12.66";
    let seen = Arc::new(AtomicUsize::new(0));
    let asked = seen.clone();
    // The first request is kept 60 s without an answer; every later one answered.
    let addr = serve_raw(ip, move |mut stream| {
        let asked = asked.clone();
        async move {
            let _ = read_request_head(&mut stream).await;
            if asked.fetch_add(1, Ordering::SeqCst) == 0 {
                tokio::time::sleep(Duration::from_secs(60)).await;
                return;
            }
            let body = page("a county office");
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all((head + &body).as_bytes()).await;
        }
    })
    .await;
    let (toml, s, client) = workers_on_the_shared_broker().await;
    let results = Collector::start(&client.conn, &s.amqp.results_queue).await;
    let env = |name: &str| -> Vec<(&'static str, String)> {
        vec![
            ("PICKET__PROBE__TIMEOUT", "30s".into()),
            ("PICKET__RATE_LIMIT__PER_IP__MAX_INFLIGHT", "1".into()),
            ("PICKET__WORKER__NAME", name.into()),
            ("PICKET__HTTP__LISTEN", format!("127.0.0.1:{}", free_port())),
        ]
    };
    let (_, first) = jobs("slot-held-", 1, &format!("http://{addr}/first"));
    let mut dying = WorkerProcess::start(&toml, &env("slot-a"));
    publish_all(&client.ch, &s.amqp.jobs_queue, &first).await;
    let t = Instant::now();
    while seen.load(Ordering::SeqCst) == 0 {
        dying.assert_running();
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the site was never asked"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = dying.kill().await;
    let killed = Instant::now();
    let mut survivor = WorkerProcess::start(&toml, &env("slot-b"));
    let (_, second) = jobs("slot-next-", 1, &format!("http://{addr}/second"));
    publish_all(&client.ch, &s.amqp.jobs_queue, &second).await;
    // Both jobs (the dead worker's, redelivered, and a new one) answered by the site.
    let within = (killed, Duration::from_secs(60));
    until_answered(&results, 2, &mut survivor, within, "the kill").await;
    let took = killed.elapsed();
    eprintln!("both jobs answered {took:?} after the kill");
    survivor.terminate().await;
    let all = results.finish(Duration::from_millis(500)).await;
    for r in &all {
        assert_eq!(r.field("verdict"), "up", "{:?}", r.json);
    }
    assert!(
        took < Duration::from_secs(20),
        "the IP was asked again only {took:?} after its worker died: its slot was held \
         as if the dead request were still running"
    );
}

/// Waits until `results` holds `n` distinct job ids, `worker` running meanwhile;
/// panics with its log when it ends, or `within.1` after `within.0` (`after` that).
async fn until_answered(
    results: &Collector,
    n: usize,
    worker: &mut WorkerProcess,
    within: (Instant, Duration),
    after: &str,
) {
    while results.distinct_ids() < n {
        worker.assert_running();
        assert!(
            within.0.elapsed() < within.1,
            "only {} of {n} job ids answered {:?} after {after}; log:\n{}",
            results.distinct_ids(),
            within.1,
            worker.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
