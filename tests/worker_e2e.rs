//! The worker end to end against real RabbitMQ and Redis and our own targets on
//! 127.0.0.0/8: results with every contract field, invalid jobs, dead-lettering,
//! the verdict cache, reply_to, policy refusals, the operations endpoint, and draining
//! on SIGTERM.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use lapin::types::{AMQPValue, FieldTable};
use lapin::BasicProperties;
use serde_json::json;

use crate::support::picket::{base_toml, page, settings, Client, Worker};
use crate::support::{serve, unique};

/// A target that counts requests and serves a page, a redirect, a 503 and a slow page.
async fn target(ip: &str) -> (SocketAddr, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let counted = move |body: String| {
        let h = h.clone();
        move || {
            let h = h.clone();
            let body = body.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                axum::response::Html(body)
            }
        }
    };
    let h2 = hits.clone();
    let router = Router::new()
        .route("/", get(counted(page(""))))
        .route("/new", get(counted(page("<p>moved here</p>"))))
        .route(
            "/old",
            get(|| async { axum::response::Redirect::permanent("/new") }),
        )
        .route(
            "/broken",
            get(|| async { (axum::http::StatusCode::SERVICE_UNAVAILABLE, page("")) }),
        )
        .route(
            "/slow",
            get(move || {
                let h = h2.clone();
                async move {
                    h.fetch_add(1, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(2500)).await;
                    axum::response::Html(page("slow"))
                }
            }),
        );
    (serve(ip, router).await, hits)
}

fn private_settings(host: &str, ip: &str) -> picket::config::Settings {
    let mut s = settings();
    s.targets.allow_private = true;
    s.dns
        .static_hosts
        .insert(host.into(), vec![ip.parse().expect("ip")]);
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_in_gives_a_result_out_with_every_contract_field() {
    let (addr, _) = target("127.0.0.2").await;
    let s = private_settings("county.test", "127.0.0.2");
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    let url = format!("http://county.test:{}/", addr.port());
    client
        .job(&s, json!({"id": "a1b2", "url": url, "expect": {"body_contains": "Welcome", "status": [200]},
                        "meta": {"anything": "echoed back unchanged"}}))
        .await;
    let deliveries = client
        .take(&s.amqp.results_queue, 1, Duration::from_secs(20))
        .await;
    assert_eq!(
        deliveries[0].routing_key.as_str(),
        "up",
        "routing key is the verdict"
    );
    let r: serde_json::Value = serde_json::from_slice(&deliveries[0].data).expect("json");
    assert_eq!(r["job_id"], "a1b2");
    assert_eq!(r["url"], url);
    assert_eq!(r["verdict"], "up", "{r}");
    assert_eq!(r["reason"], "ok");
    assert!(
        r["detail"].as_str().expect("detail").starts_with("200 OK"),
        "{r}"
    );
    assert_eq!(r["http"]["status"], 200);
    assert_eq!(r["http"]["body_bytes"], page("").len());
    assert_eq!(r["http"]["final_url"], url);
    assert_eq!(r["http"]["redirects"], 0);
    assert!(r["timing_ms"]["total"].is_u64());
    assert_eq!(r["ip"], "127.0.0.2");
    assert_eq!(r["egress"], "direct");
    assert_eq!(r["attempts"], 1);
    let at = r["checked_at"].as_str().expect("checked_at");
    assert!(humantime::parse_rfc3339(at).is_ok(), "{at}");
    assert_eq!(r["cached"], false);
    assert!(r["previous_verdict"].is_null());
    assert_eq!(r["changed"], false);
    assert_eq!(r["worker"], "test-worker");
    assert_eq!(r["meta"], json!({"anything": "echoed back unchanged"}));

    // A redirect is followed and reported; a 503 is down after every attempt.
    client
        .job(
            &s,
            json!({"id": "r", "url": format!("http://county.test:{}/old", addr.port())}),
        )
        .await;
    client
        .job(
            &s,
            json!({"id": "b", "url": format!("http://county.test:{}/broken", addr.port())}),
        )
        .await;
    let mut rs = client.results(&s, 2, Duration::from_secs(20)).await;
    rs.sort_by_key(|r| r["job_id"].as_str().map(str::to_string));
    assert_eq!(rs[0]["job_id"], "b");
    assert_eq!(
        (rs[0]["verdict"].as_str(), rs[0]["reason"].as_str()),
        (Some("down"), Some("http_status"))
    );
    assert_eq!(rs[0]["attempts"], 2);
    assert_eq!(rs[0]["attempt_log"].as_array().map(Vec::len), Some(2));
    assert_eq!(rs[1]["verdict"], "up");
    assert_eq!(rs[1]["http"]["redirects"], 1);
    assert_eq!(
        rs[1]["http"]["final_url"],
        format!("http://county.test:{}/new", addr.port())
    );

    worker.shutdown().await;
    assert_eq!(
        client.depth(&s.amqp.jobs_queue).await,
        0,
        "every job was acked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_job_gets_an_invalid_result_and_garbage_is_dead_lettered() {
    let s = settings();
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    client
        .job(
            &s,
            json!({"id": "bad-scheme", "url": "ftp://files.example/", "meta": {"k": 1}}),
        )
        .await;
    client.job(&s, json!({"id": "bad-type", "url": 42})).await;
    client
        .publish(
            &s.amqp.jobs_queue,
            b"\xff\xfe not even utf-8",
            BasicProperties::default(),
        )
        .await;
    client
        .publish(&s.amqp.jobs_queue, b"[1, 2, 3]", BasicProperties::default())
        .await;
    let huge = vec![b'{'; s.amqp.max_message_bytes + 1];
    client
        .publish(&s.amqp.jobs_queue, &huge, BasicProperties::default())
        .await;

    let deliveries = client
        .take(&s.amqp.results_queue, 2, Duration::from_secs(20))
        .await;
    for d in &deliveries {
        assert_eq!(d.routing_key.as_str(), "invalid");
        let r: serde_json::Value = serde_json::from_slice(&d.data).expect("json");
        crate::support::schema::assert_valid_result(&r);
        assert_eq!(r["verdict"], "invalid");
        assert_eq!(r["reason"], "invalid_job");
        if r["job_id"] == "bad-scheme" {
            assert!(
                r["detail"].as_str().expect("detail").contains("scheme"),
                "{r}"
            );
            assert_eq!(r["meta"], json!({"k": 1}));
        } else {
            assert_eq!(r["job_id"], "bad-type");
        }
    }
    let dead = client
        .take(&s.amqp.dead_letter_queue, 3, Duration::from_secs(20))
        .await;
    let mut reasons = Vec::new();
    for d in &dead {
        let headers = d.properties.headers().clone().expect("headers");
        let reason = match headers.inner().get("x-picket-reason") {
            Some(AMQPValue::LongString(s)) => s.to_string(),
            other => panic!("reason header missing: {other:?}"),
        };
        reasons.push(reason);
    }
    reasons.sort();
    assert!(
        reasons.iter().any(|r| r.contains("not UTF-8")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("not an object")),
        "{reasons:?}"
    );
    assert!(
        reasons.iter().any(|r| r.contains("larger than")),
        "{reasons:?}"
    );
    assert!(
        dead.iter().any(|d| d.data == b"[1, 2, 3]"),
        "payload kept unchanged"
    );

    // The worker is still there for good jobs.
    client
        .job(&s, json!({"id": "after", "url": "http://127.0.0.1:9/"}))
        .await;
    let r = client.results(&s, 1, Duration::from_secs(20)).await;
    assert_eq!(r[0]["job_id"], "after");
    worker.shutdown().await;
    assert_eq!(
        client.depth(&s.amqp.jobs_queue).await,
        0,
        "every job was acked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_is_served_from_redis_and_previous_verdict_is_filled() {
    let (addr, hits) = target("127.0.0.3").await;
    let s = private_settings("cache.test", "127.0.0.3");
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    let url = format!("http://cache.test:{}/", addr.port());
    client.job(&s, json!({"id": "one", "url": url})).await;
    let first = client.results(&s, 1, Duration::from_secs(20)).await;
    assert_eq!(first[0]["cached"], false);
    assert_eq!(hits.load(Ordering::SeqCst), 1);

    client
        .job(
            &s,
            json!({"id": "two", "url": url, "max_age_s": 60, "meta": {"n": 2}}),
        )
        .await;
    let second = client.results(&s, 1, Duration::from_secs(20)).await;
    assert_eq!(second[0]["cached"], true, "{}", second[0]);
    assert_eq!(second[0]["job_id"], "two");
    assert_eq!(second[0]["meta"], json!({"n": 2}));
    assert_eq!(second[0]["verdict"], "up");
    assert_eq!(hits.load(Ordering::SeqCst), 1, "served without probing");

    client.job(&s, json!({"id": "three", "url": url})).await;
    let third = client.results(&s, 1, Duration::from_secs(20)).await;
    assert_eq!(third[0]["cached"], false);
    assert_eq!(third[0]["previous_verdict"], "up");
    assert_eq!(third[0]["changed"], false);
    assert_eq!(hits.load(Ordering::SeqCst), 2);

    // The report really is in Redis under the configured prefix, for verdict_ttl, and
    // the key's state for state_ttl.
    let redis =
        redis::Client::open(crate::support::servers().redis_url.as_str()).expect("redis url");
    let c = redis
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let (record, report) = crate::support::picket::state_keys(&s, &url);
    assert!(report.starts_with(&s.redis.key_prefix), "{report}");
    let ttl = |key: String| {
        let mut c = c.clone();
        async move {
            redis::cmd("TTL")
                .arg(&key)
                .query_async::<i64>(&mut c)
                .await
                .expect("ttl")
        }
    };
    let (report_ttl, record_ttl) = (ttl(report).await, ttl(record).await);
    assert!(report_ttl > 3000 && report_ttl <= 3600, "ttl {report_ttl}");
    assert!(record_ttl > 7 * 86_400 - 100, "ttl {record_ttl}");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reply_to_gets_the_result_with_the_correlation_id() {
    let (addr, _) = target("127.0.0.4").await;
    let s = private_settings("reply.test", "127.0.0.4");
    let client = Client::connect().await;
    client.declare(&s).await;
    let reply = client.reply_queue().await;
    let worker = Worker::start(&s);
    let body = json!({"url": format!("http://reply.test:{}/", addr.port())}).to_string();
    let props = BasicProperties::default()
        .with_reply_to(reply.as_str().into())
        .with_correlation_id("corr-42".into())
        .with_message_id("msg-7".into());
    client
        .publish(&s.amqp.jobs_queue, body.as_bytes(), props)
        .await;
    let replies = client.take(&reply, 1, Duration::from_secs(20)).await;
    assert_eq!(
        replies[0]
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str()),
        Some("corr-42")
    );
    let r: serde_json::Value = serde_json::from_slice(&replies[0].data).expect("json");
    assert_eq!(
        r["job_id"], "msg-7",
        "the AMQP message_id stands in for a missing id"
    );
    assert_eq!(r["verdict"], "up");
    let published = client.results(&s, 1, Duration::from_secs(10)).await;
    assert_eq!(
        published[0]["job_id"], "msg-7",
        "the result exchange gets it too"
    );
    worker.shutdown().await;
}

/// Hunt U: a reply to a queue that does not exist (the requester gone, a typo) was
/// dropped by the broker without a word, though OPERATIONS says "a reply the broker does
/// not take is logged and counted".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reply_to_a_missing_queue_is_said() {
    let text = base_toml();
    let s = picket::config::Settings::from_toml(&text).expect("settings");
    let worker = crate::support::worker_process::WorkerProcess::plain(&text);
    let client = Client::connect().await;
    client.declare(&s).await;
    let gone = unique("no-such-reply-queue");
    let props = BasicProperties::default().with_reply_to(gone.as_str().into());
    let body = json!({"id": "to-nowhere", "url": "ftp://files.example/"}).to_string();
    client
        .publish(&s.amqp.jobs_queue, body.as_bytes(), props)
        .await;
    client.results(&s, 1, Duration::from_secs(20)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !worker.log_text().contains("reply not delivered") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no word of the lost reply:\n{}",
            worker.log_text()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(worker.log_text().contains(&gone), "{}", worker.log_text());
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn direct_reply_to_gets_the_result() {
    // RabbitMQ's direct reply-to, the usual RPC pattern of AMQP clients: the requester
    // consumes the pseudo-queue amq.rabbitmq.reply-to (no ack) and names it in reply_to;
    // the broker gives the job a reply_to of that channel's own.
    let (addr, _) = target("127.0.0.40").await;
    let s = private_settings("direct-reply.test", "127.0.0.40");
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    let rpc = client.conn.create_channel().await.expect("channel");
    let mut replies = rpc
        .basic_consume(
            "amq.rabbitmq.reply-to".into(),
            "rpc".into(),
            lapin::options::BasicConsumeOptions {
                no_ack: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("consume amq.rabbitmq.reply-to");
    let body = json!({"id": "rpc-1", "url": format!("http://direct-reply.test:{}/", addr.port())})
        .to_string();
    rpc.basic_publish(
        "".into(),
        s.amqp.jobs_queue.as_str().into(),
        lapin::options::BasicPublishOptions::default(),
        body.as_bytes(),
        BasicProperties::default()
            .with_reply_to("amq.rabbitmq.reply-to".into())
            .with_correlation_id("corr-rpc".into()),
    )
    .await
    .expect("publish the job");
    let reply = tokio::time::timeout(
        Duration::from_secs(20),
        futures_util::StreamExt::next(&mut replies),
    )
    .await
    .expect("a reply within 20 s")
    .expect("consumer open")
    .expect("delivery");
    assert_eq!(
        reply
            .properties
            .correlation_id()
            .as_ref()
            .map(|c| c.as_str()),
        Some("corr-rpc")
    );
    let r: serde_json::Value = serde_json::from_slice(&reply.data).expect("json");
    assert_eq!(
        (r["job_id"].as_str(), r["verdict"].as_str()),
        (Some("rpc-1"), Some("up")),
        "{r}"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_and_metadata_targets_are_refused_without_a_request() {
    let (addr, hits) = target("127.0.0.5").await;
    let mut s = settings();
    s.dns.static_hosts.insert(
        "intranet.test".into(),
        vec!["127.0.0.5".parse().expect("ip")],
    );
    s.dns.static_hosts.insert(
        "sneaky.test".into(),
        vec!["::ffff:127.0.0.5".parse().expect("ip")],
    );
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    let urls = [
        format!("http://intranet.test:{}/", addr.port()),
        format!("http://sneaky.test:{}/", addr.port()),
        format!("http://127.0.0.5:{}/", addr.port()),
        "http://169.254.169.254/latest/meta-data/".to_string(),
        "http://[::1]:9/".to_string(),
        "http://10.0.0.1/".to_string(),
    ];
    for (i, u) in urls.iter().enumerate() {
        client
            .job(&s, json!({"id": format!("p{i}"), "url": u}))
            .await;
    }
    let rs = client
        .results(&s, urls.len(), Duration::from_secs(20))
        .await;
    for r in &rs {
        assert_eq!(r["verdict"], "invalid", "{r}");
        assert_eq!(r["reason"], "blocked_target", "{r}");
        assert!(
            r["detail"]
                .as_str()
                .expect("detail")
                .contains("refused by policy"),
            "{r}"
        );
    }
    assert_eq!(
        hits.load(Ordering::SeqCst),
        0,
        "no request reached a refused target"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_endpoint_reports_health_readiness_and_metrics() {
    let s = settings();
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    let base = format!("http://{}", worker.ops);
    let http = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = http.get(format!("{base}/readyz")).send().await {
            if r.status() == 200 {
                ready = true;
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "/readyz turns 200 once consuming");
    let health = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(health.status(), 200);
    client.job(&s, json!({"url": "ftp://x/"})).await;
    client.job(&s, json!({"url": "http://127.0.0.1:9/"})).await;
    client.results(&s, 2, Duration::from_secs(20)).await;
    let text = http
        .get(format!("{base}/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(text.contains("picket_jobs_consumed_total"), "{text}");
    assert!(text.contains("picket_results_total{"), "{text}");
    assert!(text.contains("verdict=\"invalid\""), "{text}");
    assert!(text.contains("picket_broker_connected 1"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("picket_egress_attempts_total{")
                && l.contains("egress=\"direct\"")
                && l.contains("outcome=\"failed\"")),
        "{text}"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_jobs_and_exits_zero() {
    let log = sigterm_drains("127.0.0.6", &[]).await;
    assert!(log.contains("runtime=\"multi_thread\""), "{log}");
    // Text logs to a pipe (a file, journald, `docker logs`) carry no colour codes.
    assert!(!log.contains('\u{1b}'), "{log:?}");
}

/// `worker.threads = 1` runs the worker on one thread, no pool: its jobs still run at
/// once (all six held at the target together), and SIGTERM drains them the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_on_one_thread_runs_its_jobs_at_once_and_drains_on_sigterm() {
    let log = sigterm_drains("127.0.0.48", &[("PICKET__WORKER__THREADS", "1")]).await;
    assert!(
        log.contains("runtime=\"current_thread\" runtime_threads=1"),
        "{log}"
    );
}

/// Starts `picket worker` (with `env`) on six slow jobs for a target on `ip`, sends it
/// SIGTERM once all six are in flight, and checks that it answers them and exits 0.
/// Returns what it logged.
async fn sigterm_drains(ip: &str, env: &[(&str, &str)]) -> String {
    let (addr, hits) = target(ip).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let toml = format!(
        "{}\n[targets]\nallow_private = true\n[log]\nformat = \"text\"\n",
        base_toml()
    );
    let path = dir.path().join("picket.toml");
    std::fs::write(&path, &toml).expect("write config");
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    let n = 6;
    for i in 0..n {
        client
            .job(&s, json!({"id": format!("slow{i}"), "url": format!("http://{ip}:{}/slow", addr.port())}))
            .await;
    }
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_picket"))
        .arg("worker")
        .arg("--config")
        .arg(&path)
        .envs(env.iter().copied())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("start picket worker");
    // Wait until every job is in flight at the target, then ask the worker to stop.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while hits.load(Ordering::SeqCst) < n {
        assert!(
            tokio::time::Instant::now() < deadline,
            "jobs never reached the target"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let pid = child.id().expect("pid");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let out = tokio::time::timeout(Duration::from_secs(30), child.wait_with_output())
        .await
        .expect("worker exits within 30 s")
        .expect("wait");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "exit status {:?}: {log}", out.status);
    let rs = client.results(&s, n, Duration::from_secs(5)).await;
    assert!(rs.iter().all(|r| r["verdict"] == "up"), "{rs:?}");
    assert_eq!(
        client.depth(&s.amqp.jobs_queue).await,
        0,
        "nothing left unacked or queued"
    );
    assert_eq!(hits.load(Ordering::SeqCst), n, "no job was probed twice");
    log
}

#[test]
fn check_command_exit_codes() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let addr = rt.block_on(async { target("127.0.0.7").await.0 });
    let bin = env!("CARGO_BIN_EXE_picket");
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut c = std::process::Command::new(bin);
        c.args(args)
            .env("PICKET__TARGETS__ALLOW_PRIVATE", "true")
            .env("PICKET__PROBE__RETRY_DELAY", "100ms");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().expect("run picket")
    };
    let up = format!("http://127.0.0.7:{}/", addr.port());
    let down = format!("http://127.0.0.7:{}/broken", addr.port());
    let o = run(&["check", &up], &[]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let line: serde_json::Value = serde_json::from_slice(&o.stdout).expect("one JSON line");
    assert_eq!(line["verdict"], "up");
    let o = run(&["check", &up, &down], &[]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().count(), 2);
    let o = run(&["check", &up], &[("PICKET__PROBE__TIMEOUT", "soon")]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("probe.timeout"));
    let o = run(&["check"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&["frobnicate"], &[]);
    assert_eq!(o.status.code(), Some(2));
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bad.toml");
    std::fs::write(&cfg, "[probe]\nunknown_key = 1\n").expect("write");
    let o = run(
        &["check", "--config", cfg.to_str().expect("path"), &up],
        &[],
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("unknown_key"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_publish_hands_the_job_back_and_it_is_answered_later() {
    let s = settings();
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    // Wait until the worker consumes, then pull the results exchange from under it:
    // its next publish fails (404 closes the publishing channel).
    client
        .job(&s, json!({"id": "warm-up", "url": "ftp://x/"}))
        .await;
    client.results(&s, 1, Duration::from_secs(20)).await;
    client
        .ch
        .exchange_delete(
            s.amqp.results_exchange.as_str().into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .expect("delete exchange");
    client
        .job(&s, json!({"id": "survivor", "url": "ftp://y/"}))
        .await;
    // The job is nacked back, the session is rebuilt and the topology declared again,
    // and the redelivered job is answered.
    let r = client.results(&s, 1, Duration::from_secs(30)).await;
    assert_eq!(r[0]["job_id"], "survivor");
    worker.shutdown().await;
    assert_eq!(
        client.depth(&s.amqp.jobs_queue).await,
        0,
        "every job was acked"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_queues_work_and_dead_letter_a_message_that_keeps_coming_back() {
    let mut s = settings();
    s.amqp.queue_type = picket::config::QueueType::Quorum;
    let client = Client::connect().await;
    client.declare(&s).await;
    // Declaring twice with the same settings must not fail (restarts re-declare).
    client.declare(&s).await;

    // A message that is handed back more than the delivery limit is dead-lettered by
    // the broker (as when every worker that takes it dies).
    client
        .publish(
            &s.amqp.jobs_queue,
            b"{\"url\":\"http://x.test/\"}",
            BasicProperties::default(),
        )
        .await;
    let ch = client.conn.create_channel().await.expect("channel");
    let hand_back = |queue: String| {
        let ch = ch.clone();
        async move {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            let m = loop {
                if let Some(m) = ch
                    .basic_get(
                        queue.as_str().into(),
                        lapin::options::BasicGetOptions::default(),
                    )
                    .await
                    .expect("get")
                {
                    break m;
                }
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the message did not come back to {queue}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            m.delivery
                .acker
                .nack(lapin::options::BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await
                .expect("nack");
        }
    };
    for _ in 0..=picket::amqp::DELIVERY_LIMIT {
        hand_back(s.amqp.jobs_queue.clone()).await;
    }
    // An operator reads the dead letters as OPERATIONS says (get, then hand back):
    // the dead-letter queue had the jobs queue's delivery limit and no dead-letter
    // queue of its own, so the broker deleted a dead letter read five times. RabbitMQ
    // 4 gives a quorum queue declared without a limit one of 20; `-1`, its way to turn
    // it off, made RabbitMQ 3.10 drop the dead letter at its first return.
    // So is a result looked at that often (`picket results` peeks, a subscriber that
    // hands back what it cannot handle yet).
    client
        .publish(&s.amqp.results_queue, b"{}", BasicProperties::default())
        .await;
    const MORE_THAN_RABBITMQ_4S_DEFAULT: usize = 25;
    for (queue, body) in [
        (
            &s.amqp.dead_letter_queue,
            &b"{\"url\":\"http://x.test/\"}"[..],
        ),
        (&s.amqp.results_queue, b"{}"),
    ] {
        for _ in 0..MORE_THAN_RABBITMQ_4S_DEFAULT {
            hand_back(queue.clone()).await;
        }
        let kept = client.take(queue, 1, Duration::from_secs(10)).await;
        assert_eq!(kept[0].data, body, "{queue}");
    }

    // And a worker runs on quorum queues like on classic ones.
    let worker = Worker::start(&s);
    client.job(&s, json!({"id": "q1", "url": "ftp://x/"})).await;
    let r = client.results(&s, 1, Duration::from_secs(20)).await;
    assert_eq!(r[0]["job_id"], "q1");
    worker.shutdown().await;
}

#[test]
fn a_site_reachable_over_one_address_family_is_up_and_the_broken_one_is_told() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    // The site answers on [::1] only; its IPv4 address refuses connections.
    let port = rt.block_on(async {
        let listener = tokio::net::TcpListener::bind("[::1]:0")
            .await
            .expect("bind [::1] (IPv6 loopback)");
        let port = listener.local_addr().expect("addr").port();
        let router = Router::new().route("/", get(|| async { axum::response::Html(page("")) }));
        tokio::spawn(async move { axum::serve(listener, router).await });
        port
    });
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("dual.toml");
    std::fs::write(
        &cfg,
        "[targets]\nallow_private = true\n[dns.static]\n\"dual.test\" = \"127.0.0.14, ::1\"\n",
    )
    .expect("write config");
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_picket"))
        .args(["check", "--config"])
        .arg(&cfg)
        .arg(format!("http://dual.test:{port}/"))
        .output()
        .expect("run picket check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let r: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout} {}", String::from_utf8_lossy(&out.stderr)));
    assert_eq!(r["verdict"], "up", "{r}");
    assert_eq!(r["ip"], "::1");
    let detail = r["detail"].as_str().expect("detail");
    assert!(
        detail.contains("127.0.0.14") && detail.contains("refused"),
        "{detail}"
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn when_the_canaries_fail_too_an_unreachable_site_is_unknown_not_down() {
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let (alive, _) = rt.block_on(target("127.0.0.15"));
    let dir = tempfile::tempdir().expect("tempdir");
    let run = |canary: String| {
        let cfg = dir.path().join("canary.toml");
        std::fs::write(
            &cfg,
            format!(
                "[targets]\nallow_private = true\n[probe]\nretry_delay = \"100ms\"\ncanaries = [\"{canary}\"]\n"
            ),
        )
        .expect("write config");
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_picket"))
            .args(["check", "--config"])
            .arg(&cfg)
            // Nothing listens on port 9 of these addresses: connection refused.
            .arg("http://127.0.0.16:9/")
            .output()
            .expect("run picket check");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).expect("one JSON result")
    };
    let r = run("http://127.0.0.17:9/".into());
    assert_eq!(
        (r["verdict"].as_str(), r["reason"].as_str()),
        (Some("unknown"), Some("egress_unavailable")),
        "{r}"
    );
    assert!(
        r["detail"].as_str().expect("detail").contains("canary"),
        "{r}"
    );
    let r = run(format!("http://127.0.0.15:{}/", alive.port()));
    assert_eq!(
        (r["verdict"].as_str(), r["reason"].as_str()),
        (Some("down"), Some("connect")),
        "{r}"
    );
}

/// A dead letter is a copy of the job the worker publishes: it carried the job's own
/// `expiration` (the dead-letter queue dropped it when that ran out: the message was
/// lost) and its `user_id`, which RabbitMQ checks against the publishing connection's
/// user (a worker connecting as its own user was refused the copy, channel closed, and
/// the job handed back again and again). Neither is the copy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_letter_is_kept_whatever_the_jobs_expiration_and_user_id() {
    let servers = crate::support::servers();
    let user = unique("picket-worker");
    servers
        .rabbit
        .ctl(&["add_user", &user, "pw"])
        .expect("add the user");
    servers
        .rabbit
        .ctl(&["set_permissions", "-p", "/", &user, ".*", ".*", ".*"])
        .expect("its permissions");
    let mut s = settings();
    s.amqp.url = format!("amqp://{user}:pw@127.0.0.1:{}/%2f", servers.rabbit.port());
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    let props = BasicProperties::default()
        .with_expiration("2000".into())
        .with_user_id("guest".into());
    client
        .publish(&s.amqp.jobs_queue, b"not json, expiring", props)
        .await;
    // Past the job's expiration: a dead letter that kept it would be gone by now.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let dead = client
        .take(&s.amqp.dead_letter_queue, 1, Duration::from_secs(10))
        .await;
    worker.shutdown().await;
    let _ = servers.rabbit.ctl(&["delete_user", &user]);
    assert_eq!(dead[0].data, b"not json, expiring");
    let headers = dead[0].properties.headers().clone().expect("headers");
    assert!(headers.inner().contains_key("x-picket-reason"));
}

#[tokio::test]
async fn a_broker_that_refuses_the_topology_is_not_logged_as_unavailable() {
    // The broker takes the connection but refuses the declarations (the user may not
    // configure anything): the operator must read a refused set-up naming the node and
    // the refusal, not "broker unavailable", which sends them to the network instead.
    let s = crate::support::servers();
    let user = unique("cannot-configure");
    s.rabbit
        .ctl(&["add_user", &user, "pw"])
        .expect("add the user");
    s.rabbit
        .ctl(&["set_permissions", "-p", "/", &user, "^$", ".*", ".*"])
        .expect("its permissions");
    let url = format!("amqp://{user}:pw@127.0.0.1:{}/%2f", s.rabbit.port());
    let toml = base_toml().replace(
        &format!("url = \"{}\"", s.amqp_url),
        &format!("url = \"{url}\""),
    );
    assert!(
        toml.contains(&user),
        "the config uses the new user:\n{toml}"
    );
    let worker = crate::support::worker_process::WorkerProcess::plain(&toml);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !worker.log_text().contains("retry_in_ms") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no failure logged:\n{}",
            worker.log_tail(40)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = worker.log_text();
    worker.terminate().await;
    let _ = s.rabbit.ctl(&["delete_user", &user]);
    assert!(
        !log.contains("broker unavailable"),
        "a refusal called unavailable:\n{log}"
    );
    assert!(log.contains("broker refused the session's set-up"), "{log}");
    // Said once, by picket: not also as an ERROR of lapin's, which an operator's alert
    // on error lines would page for at every retry of a refusal picket handles.
    let lapin_errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("lapin") && l.contains("ERROR"))
        .collect();
    assert!(
        lapin_errors.is_empty(),
        "lapin's own error lines:\n{}",
        lapin_errors.join("\n")
    );
    assert!(
        log.contains("ACCESS_REFUSED") || log.contains("access to"),
        "the refusal named:\n{log}"
    );
    assert!(
        log.contains(&format!("{user}:***@127.0.0.1")),
        "the node named, redacted:\n{log}"
    );
}

#[tokio::test]
async fn a_hangup_neither_stops_the_worker_nor_loses_its_jobs() {
    // SIGHUP is what `systemctl reload`, logrotate's postrotate and a closed terminal
    // send; by default it ends a process at once, dropping every probe in flight. The
    // worker reads its configuration only at start, so it says so and goes on.
    let site = serve(
        "127.0.0.18",
        Router::new().route("/", get(|| async { axum::response::Html(page("hup")) })),
    )
    .await;
    let toml = format!("{}\n[targets]\nallow_private = true\n", base_toml());
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    let mut worker = crate::support::worker_process::WorkerProcess::plain(&toml);
    worker.signal("HUP").await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    worker.assert_running();
    client
        .job(
            &s,
            json!({"id": "after-hup", "url": format!("http://{site}/")}),
        )
        .await;
    let results = client.results(&s, 1, Duration::from_secs(30)).await;
    assert_eq!(results[0]["job_id"], "after-hup");
    assert_eq!(results[0]["verdict"], "up", "{}", results[0]);
    assert!(
        worker.log_text().contains("SIGHUP"),
        "the hangup is acknowledged in the log:\n{}",
        worker.log_tail(20)
    );
    worker.terminate().await;
}

#[test]
fn passwords_never_reach_the_logs() {
    // A worker that cannot reach its broker logs the failure, with the URL redacted.
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("secret.toml");
    std::fs::write(
        &cfg,
        format!(
            "[amqp]\nurl = \"amqp://picket:hunter2-amqp@127.0.0.1:9/%2f\"\nconnect_timeout = \"1s\"\n\
             [redis]\nurl = \"redis://:hunter2-redis@127.0.0.1:9/0\"\n\
             [http]\nlisten = \"127.0.0.1:{}\"\n[log]\nformat = \"json\"\nlevel = \"debug\"\n",
            crate::support::free_port()
        ),
    )
    .expect("write config");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_picket"))
        .args(["worker", "--config"])
        .arg(&cfg)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("start worker");
    std::thread::sleep(Duration::from_secs(3));
    let pid = child.id().to_string();
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status();
    let out = child.wait_with_output().expect("wait");
    let logs = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}\n{logs}", out.status);
    assert!(
        logs.contains("broker unavailable"),
        "the failure is logged:\n{logs}"
    );
    assert!(
        logs.contains("picket:***@127.0.0.1:9"),
        "with the URL redacted:\n{logs}"
    );
    assert!(!logs.contains("hunter2"), "a password was printed:\n{logs}");
}

/// Upstream often declares the jobs queue itself, as a plain durable queue, before any
/// worker ran, and operators cap queues. picket's own arguments then differ: the worker
/// must still declare the rest, consume, publish and dead-letter.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_queue_declared_by_upstream_with_other_arguments_is_consumed() {
    let (addr, _) = target("127.0.0.9").await;
    let s = private_settings("upstream.test", "127.0.0.9");
    let client = Client::connect().await;
    client
        .ch
        .queue_declare(
            s.amqp.jobs_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..lapin::options::QueueDeclareOptions::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("upstream declares the jobs queue without arguments");
    // And a subscriber capped the dead-letter queue before picket ever ran.
    let mut capped = lapin::types::FieldTable::default();
    capped.insert("x-max-length".into(), AMQPValue::LongInt(1000));
    client
        .ch
        .queue_declare(
            s.amqp.dead_letter_queue.as_str().into(),
            lapin::options::QueueDeclareOptions {
                durable: true,
                ..lapin::options::QueueDeclareOptions::default()
            },
            capped,
        )
        .await
        .expect("a capped dead-letter queue");
    let url = format!("http://upstream.test:{}/", addr.port());
    // Published before any worker started, as upstream would.
    client.job(&s, json!({"id": "early", "url": url})).await;
    let worker = Worker::start(&s);
    // Nothing else declared the rest of picket's topology: wait for the worker to.
    let t = std::time::Instant::now();
    loop {
        let ch = client.conn.create_channel().await.expect("channel");
        let passive = lapin::options::QueueDeclareOptions {
            passive: true,
            ..lapin::options::QueueDeclareOptions::default()
        };
        if ch
            .queue_declare(
                s.amqp.results_queue.as_str().into(),
                passive,
                lapin::types::FieldTable::default(),
            )
            .await
            .is_ok()
        {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_secs(15),
            "the worker never declared its results queue next to the upstream's jobs queue"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client.job(&s, json!({"id": "later", "url": url})).await;
    let mut rs = client.results(&s, 2, Duration::from_secs(20)).await;
    rs.sort_by_key(|r| r["job_id"].as_str().map(str::to_string));
    assert_eq!(rs[0]["job_id"], "early");
    assert_eq!(rs[1]["job_id"], "later");
    assert!(rs.iter().all(|r| r["verdict"] == "up"), "{rs:?}");
    // Garbage is still dead-lettered: picket copies it to the dead-letter queue itself.
    client
        .publish(&s.amqp.jobs_queue, b"not json", BasicProperties::default())
        .await;
    let dead = client
        .take(&s.amqp.dead_letter_queue, 1, Duration::from_secs(20))
        .await;
    assert_eq!(dead[0].data, b"not json");
    worker.shutdown().await;
}

/// A broker (or proxy) that allows few channels per connection: the worker fits its
/// publishing channels into what the connection negotiated, instead of failing to open
/// its session and never consuming.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_with_few_channels_still_consumes_and_answers() {
    let (addr, _) = target("127.0.77.7").await;
    let mut s = private_settings("few-channels.test", "127.0.77.7");
    let sep = if s.amqp.url.contains('?') { '&' } else { '?' };
    s.amqp.url = format!("{}{sep}channel_max=8", s.amqp.url);
    let c = Client::connect().await;
    c.declare(&s).await;
    let w = Worker::start(&s);
    for i in 0..20 {
        let url = format!("http://few-channels.test:{}/?n={i}", addr.port());
        c.job(&s, json!({"id": format!("few-{i}"), "url": url}))
            .await;
    }
    let results = c.results(&s, 20, Duration::from_secs(60)).await;
    w.shutdown().await;
    assert!(results.iter().all(|r| r["verdict"] == "up"), "{results:?}");
}

/// One worker process over the farm's DNS, CA and policy, with the base's probe and
/// limit settings and `extra` (TOML tables) before the farm's.
struct FarmWorker {
    farm: crate::support::farm::Farm,
    s: picket::config::Settings,
    worker: crate::support::worker_process::WorkerProcess,
    client: Client,
}

impl FarmWorker {
    async fn start(extra: impl FnOnce(&crate::support::farm::Farm) -> String) -> FarmWorker {
        FarmWorker::start_with(extra, &[]).await
    }

    /// The same, with `env` set for the worker as well (settings the farm's tables
    /// already name: `PICKET__PROBE__TIMEOUT`).
    async fn start_with(
        extra: impl FnOnce(&crate::support::farm::Farm) -> String,
        env: &[(&str, &str)],
    ) -> FarmWorker {
        let farm = crate::support::farm::Farm::start().await;
        let farm_toml = farm.config_toml();
        let farm_part = &farm_toml[farm_toml.find("[targets]").expect("a [targets] table")..];
        let toml = format!("{}\n{}{farm_part}", base_toml(), extra(&farm));
        let s = picket::config::Settings::from_toml(&toml).expect("settings");
        let mut env = env.to_vec();
        if !env.iter().any(|(k, _)| *k == "PICKET__LOG__LEVEL") {
            env.push(("PICKET__LOG__LEVEL", "info"));
        }
        let worker = crate::support::worker_process::WorkerProcess::start(&toml, &env);
        crate::support::ops::wait_readyz(s.http.listen, 200, Duration::from_secs(30)).await;
        let client = Client::connect().await;
        client.declare(&s).await;
        FarmWorker {
            farm,
            s,
            worker,
            client,
        }
    }

    /// Checks the farm target `name` alone: its "verdict/reason".
    async fn check(&self, name: &str) -> String {
        let url = self.farm.target(name).url.clone();
        self.client.job(&self.s, json!({ "url": url })).await;
        let rs = self
            .client
            .results(&self.s, 1, Duration::from_secs(30))
            .await;
        format!("{}/{}", rs[0]["verdict"], rs[0]["reason"]).replace('"', "")
    }
}

/// An unreached site believed `down` with no canaries to ask is written at debug level
/// with what the network watch saw around its attempts (by quarter second, how what set
/// out then ended), the job's span beside it: the edge of a cut that the watch did not
/// tell is read there, in a fault run's failure or an operator's log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_site_believed_down_is_logged_with_the_network_watch_at_debug() {
    let level = [("PICKET__LOG__LEVEL", "info,picket::engine::our_side=debug")];
    let w = FarmWorker::start_with(|_| String::new(), &level).await;
    assert_eq!(w.check("connection-refused").await, "down/connect");
    let log = w.worker.log_text();
    let line = log
        .lines()
        .find(|l| l.contains("the network watch around its attempts"))
        .unwrap_or_else(|| panic!("no line of the network watch in:\n{log}"));
    let line: serde_json::Value = serde_json::from_str(line).expect("a JSON line");
    assert_eq!(line["decisive"], "Refused", "{line}");
    assert!(line["retried_after_ms"].as_u64().is_some(), "{line}");
    let seen = line["watch_decisive"].as_str().unwrap_or_default();
    // The confirmation, no first attempt of its job.
    assert!(seen.contains("0a/0s/1r/0o/0f"), "{line}");
    assert!(line["span"]["url"].as_str().is_some(), "{line}");
    let worker = w.worker;
    worker.terminate().await;
}

/// Missing intermediates sought at `caIssuers` URLs show in `/metrics` by outcome, and a
/// URL that fails is logged once (its failure is then remembered): an operator sees what
/// completing chains costs and which CA's server fails the sites that name it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issuer_fetches_are_counted_and_a_failing_issuer_url_is_logged_once() {
    use crate::support::ops::{get_ops, outcome_count};
    let w = FarmWorker::start(|_| String::new()).await;
    // One at a time: two probes of one site may each fetch before either remembers.
    assert_eq!(w.check("tls-incomplete-chain-aia").await, "up/ok");
    assert_eq!(
        w.check("tls-incomplete-chain-aia-gone").await,
        "degraded/tls"
    );
    assert_eq!(
        w.check("tls-incomplete-chain-aia-gone").await,
        "degraded/tls"
    );
    let FarmWorker { s, worker, .. } = w;
    let (_, text) = get_ops(s.http.listen, "/metrics").await.expect("metrics");
    let fetches = |outcome: &str| outcome_count(&text, "picket_issuer_fetches_total", outcome);
    assert_eq!(fetches("fetched"), 1.0, "{text}");
    assert_eq!(fetches("failed"), 1.0, "{text}");
    assert!(fetches("remembered") >= 1.0, "{text}");
    assert_eq!(fetches("skipped"), 0.0, "{text}");
    let log = worker.log_text();
    assert_eq!(log.matches("a caIssuers URL failed").count(), 1, "{log}");
    assert!(log.contains("gone.crt") && log.contains("404"), "{log}");
    worker.terminate().await;
}

/// A CA's server refused us once, as in the moment our own network turns away from it,
/// with the site itself reached: that is not yet the URL's failure. At production's
/// probe time (the fetch had its full five seconds) it was taken for the URL's own and
/// remembered for five minutes: the site was `degraded/tls` at once, and again after
/// the CA's server took connections again. Now the site is `unknown` until the failure
/// repeats, and the next check after the refusals completes the chain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_url_refused_once_is_not_remembered_as_its_failure() {
    use crate::support::real::way_out::WayOutCut;
    let w = FarmWorker::start_with(|_| String::new(), &[("PICKET__PROBE__TIMEOUT", "30s")]).await;
    {
        let _cut = WayOutCut::refusing_to(&w.farm.ca_ip(), w.farm.ca_port);
        assert_eq!(w.check("tls-incomplete-chain-aia").await, "unknown/tls");
    }
    assert_eq!(w.check("tls-incomplete-chain-aia").await, "up/ok");
    let worker = w.worker;
    worker.terminate().await;
}

/// A fetch refused at once is the CA's server not reached, whatever time the probe had
/// left: with the farm's 5 s probe time a fetch never has its full 5 s, and before, any
/// failure of it was taken for our time running out (`unknown/rate_limited`, "not
/// fetched in the probe's time") though the refusal came with seconds to spare.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_url_refused_at_once_with_less_than_its_full_time_is_not_reached() {
    use crate::support::real::way_out::WayOutCut;
    let w = FarmWorker::start(|_| String::new()).await;
    {
        let _cut = WayOutCut::refusing_to(&w.farm.ca_ip(), w.farm.ca_port);
        assert_eq!(w.check("tls-incomplete-chain-aia").await, "unknown/tls");
    }
    assert_eq!(w.check("tls-incomplete-chain-aia").await, "up/ok");
    let worker = w.worker;
    worker.terminate().await;
}

/// A CA's server that keeps refusing is the URL's failure once that repeats twenty
/// seconds (`issuers::failed::CONFIRM_AFTER`) after the first time: the site is then
/// `degraded/tls`, said with both failures, and the failure is remembered and counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_url_refused_again_later_is_its_failure() {
    use crate::support::ops::{get_ops, outcome_count};
    use crate::support::real::way_out::WayOutCut;
    let w = FarmWorker::start_with(|_| String::new(), &[("PICKET__PROBE__TIMEOUT", "30s")]).await;
    let _cut = WayOutCut::refusing_to(&w.farm.ca_ip(), w.farm.ca_port);
    assert_eq!(w.check("tls-incomplete-chain-aia").await, "unknown/tls");
    tokio::time::sleep(Duration::from_secs(21)).await;
    let url = w.farm.target("tls-incomplete-chain-aia").url.clone();
    w.client.job(&w.s, json!({ "url": url })).await;
    let rs = w.client.results(&w.s, 1, Duration::from_secs(30)).await;
    assert_eq!(
        (&rs[0]["verdict"], &rs[0]["reason"]),
        (&json!("degraded"), &json!("tls"))
    );
    let detail = rs[0]["detail"].as_str().unwrap_or_default();
    assert!(detail.contains("s before too"), "{detail}");
    assert_eq!(w.check("tls-incomplete-chain-aia").await, "degraded/tls");
    let (_, text) = get_ops(w.s.http.listen, "/metrics").await.expect("metrics");
    let fetches = |outcome: &str| outcome_count(&text, "picket_issuer_fetches_total", outcome);
    assert_eq!(fetches("failed"), 1.0, "{text}");
    assert!(fetches("unreached") >= 1.0, "{text}");
    assert!(fetches("remembered") >= 1.0, "{text}");
    let worker = w.worker;
    worker.terminate().await;
}

/// An intermediate fetched for one site completes only the chains that name the URL it
/// came from: a site whose leaf names no `caIssuers` URL stays `degraded/tls` after
/// another site's fetch brought its issuer in, as on a worker that fetched nothing.
/// Before, its verdict depended on what the worker that took the job had fetched for
/// other sites: `degraded/tls` on one worker, `up/ok` on another, check after check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetched_intermediate_completes_only_chains_naming_its_url() {
    let w = FarmWorker::start(|_| String::new()).await;
    assert_eq!(w.check("tls-incomplete-chain").await, "degraded/tls");
    assert_eq!(w.check("tls-incomplete-chain-aia").await, "up/ok");
    assert_eq!(
        w.check("tls-incomplete-chain").await,
        "degraded/tls",
        "an intermediate fetched for another site completed a chain naming no URL"
    );
    let worker = w.worker;
    worker.terminate().await;
}

/// Sites whose chains lack the same CA's intermediate, checked at once by a worker
/// whose limit of the CA's IP allows one fetch in five seconds: a fetch the limit
/// allows no time for defers the job, as a request to the site itself would, and it
/// comes back to find the issuer; each site is `up/ok` in the end, none answered
/// `unknown/rate_limited` while a deferral could still wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_issuer_fetch_finds_no_slot_is_deferred_and_completes_later() {
    let w = FarmWorker::start(|farm| {
        format!(
            "[[rate_limit.override]]\ncidr = \"{}/32\"\nrate = 0.2\nburst = 1\nmax_inflight = 1\n",
            farm.ca_ip()
        )
    })
    .await;
    let FarmWorker {
        farm,
        s,
        worker,
        client,
    } = w;
    let names = [
        "tls-incomplete-chain-aia",
        "tls-incomplete-chain-aia-moved",
        "tls-incomplete-chain-aia-p7c",
    ];
    for name in names {
        let url = farm.target(name).url.clone();
        client.job(&s, json!({ "id": name, "url": url })).await;
    }
    let rs = client
        .results(&s, names.len(), Duration::from_secs(90))
        .await;
    worker.terminate().await;
    assert_all_up(&rs);
}

/// Every result in `rs` is up; else each is told.
fn assert_all_up(rs: &[serde_json::Value]) {
    let said: Vec<String> = rs
        .iter()
        .map(|r| {
            format!(
                "{} {}/{}: {}",
                r["job_id"], r["verdict"], r["reason"], r["detail"]
            )
        })
        .collect();
    assert!(
        rs.iter().all(|r| r["verdict"] == "up"),
        "{}",
        said.join("\n")
    );
}

/// Four checks at once of a site answering in 1.5 s, through an egress that holds one
/// connection at a time (`max_connections = 1`), by a worker that waits a second at most
/// for our own limits: those that found no free connection in that second were
/// `unknown/egress_unavailable`, "stayed busy", though the site was up and only our
/// own room was short. They are deferred, as for a busy IP, and come back to find it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_egress_has_no_free_connection_is_deferred_and_completes_later() {
    let w = FarmWorker::start(|_| {
        "[rate_limit]\nmax_wait = \"1s\"\n[[egress]]\nname = \"direct\"\nmax_connections = 1\n"
            .to_string()
    })
    .await;
    let url = w.farm.target("slow-first-byte").url.clone();
    for n in 0..4 {
        let job = json!({ "id": format!("slow-{n}"), "url": format!("{url}?n={n}") });
        w.client.job(&w.s, job).await;
    }
    let rs = w.client.results(&w.s, 4, Duration::from_secs(90)).await;
    assert_all_up(&rs);
    let worker = w.worker;
    worker.terminate().await;
}

/// Plain-HTTP hops asked over HTTPS instead (a site that closed its port 80) show in
/// `/metrics` by outcome: many `answered` mean jobs name `http://` sites that now live
/// on HTTPS only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_upgrades_are_counted_by_outcome() {
    use crate::support::farm::{serve_tls_at, server_config, Pki, Signer};
    use crate::support::ops::{get_ops, outcome_count, wait_readyz};
    let dir = tempfile::tempdir().expect("temp dir");
    let (pki, ca_file) = Pki::with_ca_file(dir.path());
    let (moved, gone) = ("county-moved.test", "county-closed.test");
    let config = server_config(&pki, moved, -1, 90, Signer::Ca);
    let addr = "127.0.0.53:443".parse().expect("address");
    serve_tls_at(addr, config, &page("")).await;
    let toml = format!(
        "{}\n[targets]\nallow_private = true\n[tls]\nextra_ca_file = \"{}\"\n\
         [dns.static]\n\"{moved}\" = \"127.0.0.53\"\n\"{gone}\" = \"127.0.0.54\"\n",
        base_toml(),
        ca_file.display()
    );
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let worker = crate::support::worker_process::WorkerProcess::start::<&str>(&toml, &[]);
    wait_readyz(s.http.listen, 200, Duration::from_secs(30)).await;
    let client = Client::connect().await;
    client.declare(&s).await;
    for host in [moved, gone] {
        client
            .job(&s, json!({"url": format!("http://{host}/")}))
            .await;
    }
    let rs = client.results(&s, 2, Duration::from_secs(30)).await;
    let mut said: Vec<String> = rs
        .iter()
        .map(|r| format!("{} {}", r["url"], r["verdict"]).replace('"', ""))
        .collect();
    said.sort();
    assert_eq!(
        said,
        [
            format!("http://{gone}/ down"),
            format!("http://{moved}/ up")
        ],
        "{rs:?}"
    );
    let (_, text) = get_ops(s.http.listen, "/metrics").await.expect("metrics");
    let upgrades = |outcome: &str| outcome_count(&text, "picket_https_upgrades_total", outcome);
    assert_eq!(upgrades("answered"), 1.0, "{text}");
    // The closed site is asked twice (attempts = 2), each time over HTTPS too.
    assert_eq!(upgrades("failed"), 2.0, "{text}");
    worker.terminate().await;
}

/// A session that opens and then breaks on every result (the worker's user may not
/// write to the results exchange: an operator's permissions, a policy) was rebuilt at
/// once each time: the backoff started again with every session that opened, so the
/// worker opened two sessions a second for ever, each consuming and handing back its
/// jobs. The backoff starts again only once a session settled a job or lived a while.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_that_break_on_every_result_are_rebuilt_ever_more_slowly() {
    let servers = crate::support::servers();
    let user = unique("no-results");
    // The results exchange named apart from the results queue, so that only
    // publishing to it is refused.
    let text: String = base_toml()
        .lines()
        .map(|l| match l.strip_prefix("results_exchange = \"") {
            Some(name) => format!("results_exchange = \"x-{name}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    let s = picket::config::Settings::from_toml(&text).expect("settings");
    servers
        .rabbit
        .ctl(&["add_user", &user, "pw"])
        .expect("add the user");
    let write = format!("^(?!{}$).*", s.amqp.results_exchange.replace('.', "\\."));
    servers
        .rabbit
        .ctl(&["set_permissions", "-p", "/", &user, ".*", &write, ".*"])
        .expect("its permissions");
    let url = format!("amqp://{user}:pw@127.0.0.1:{}/%2f", servers.rabbit.port());
    let toml = text.replace(
        &format!("url = \"{}\"", servers.amqp_url),
        &format!("url = \"{url}\""),
    );
    let (addr, _) = {
        let router = Router::new().route("/", get(|| async { page("results refused") }));
        (serve("127.0.62.30", router).await, ())
    };
    let client = Client::connect().await;
    client.declare(&s).await;
    for i in 0..3 {
        client
            .job(
                &s,
                json!({"id": format!("r{i}"), "url": format!("http://{addr}/")}),
            )
            .await;
    }
    let worker = crate::support::worker_process::WorkerProcess::plain(&format!(
        "{toml}\n[targets]\nallow_private = true\n"
    ));
    tokio::time::sleep(Duration::from_secs(8)).await;
    let log = worker.log_text();
    worker.terminate().await;
    let _ = servers.rabbit.ctl(&["delete_user", &user]);
    let sessions = log
        .lines()
        .filter(|l| l.contains("\"consuming\"") || l.contains(" consuming"))
        .count();
    let refused = log
        .lines()
        .filter(|l| l.contains("result not confirmed"))
        .count();
    assert!(refused > 0, "the results were refused:\n{log}");
    assert!(
        sessions <= 6,
        "{sessions} sessions in 8 s, each breaking on its results"
    );
}

/// Hunt P: a subscriber's full queue (x-overflow reject-publish) makes the broker nack
/// the publish, and the log said only "RabbitMQ did not confirm the publish (nack)":
/// not which exchange refused it (the result's or its change's), nor why.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_publish_names_where_it_went_and_why() {
    let text = base_toml();
    let s = picket::config::Settings::from_toml(&text).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    let full = client.refusing_queue().await;
    client
        .ch
        .queue_bind(
            full.as_str().into(),
            s.amqp.results_exchange.as_str().into(),
            "#".into(),
            lapin::options::QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bound to the results");
    let addr = serve(
        "127.0.62.31",
        Router::new().route("/", get(|| async { page("full") })),
    )
    .await;
    let toml = format!("{text}\n[targets]\nallow_private = true\n");
    let worker = crate::support::worker_process::WorkerProcess::plain(&toml);
    client
        .job(
            &s,
            json!({"id": "refused", "url": format!("http://{addr}/")}),
        )
        .await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let line = loop {
        let log = worker.log_text();
        if let Some(l) = log.lines().find(|l| l.contains("result not confirmed")) {
            break l.to_string();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no refusal logged:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    worker.terminate().await;
    assert!(line.contains(&s.amqp.results_exchange), "{line}");
    assert!(line.contains("reject-publish"), "{line}");
}

/// Hunt I: a message that is no job, with headers near the broker's frame size (131 KB
/// by default), was dead-lettered as a copy with `x-picket-reason` added: the copy's
/// header frame outgrew `frame_max`, the broker closed the whole connection
/// (`FRAME_ERROR … frame_too_large`), and the message, redelivered first to every new
/// session, kept every worker from consuming anything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_whose_headers_fill_a_frame_is_dead_lettered_and_the_worker_goes_on() {
    let s = settings();
    let client = Client::connect().await;
    client.declare(&s).await;
    let mut headers = FieldTable::default();
    headers.insert(
        "x-big".into(),
        AMQPValue::LongString(vec![b'h'; 131_000].into()),
    );
    client
        .publish(
            &s.amqp.jobs_queue,
            b"garbage with big headers",
            BasicProperties::default().with_headers(headers),
        )
        .await;
    let worker = Worker::start(&s);
    client
        .job(&s, json!({"id": "after-big", "url": "http://127.0.0.1:9/"}))
        .await;
    let r = client.results(&s, 1, Duration::from_secs(20)).await;
    assert_eq!(r[0]["job_id"], "after-big");
    let dead = client
        .take(&s.amqp.dead_letter_queue, 1, Duration::from_secs(10))
        .await;
    assert_eq!(dead[0].data, b"garbage with big headers");
    let kept = dead[0].properties.headers().clone().expect("headers");
    assert!(kept.inner().contains_key("x-big"), "its headers are kept");
    worker.shutdown().await;
}

/// A broker user of its own whose topic permission on the results exchange leaves out
/// `down` (the broker refuses every down result for good): its name and URL.
fn user_refused_downs(s: &picket::config::Settings) -> (String, String) {
    let servers = crate::support::servers();
    let user = unique("picket-no-down");
    let ctl = |args: &[&str]| servers.rabbit.ctl(args).expect("rabbitmqctl");
    ctl(&["add_user", &user, "pw"]);
    ctl(&["set_permissions", "-p", "/", &user, ".*", ".*", ".*"]);
    ctl(&[
        "set_topic_permissions",
        "-p",
        "/",
        &user,
        &s.amqp.results_exchange,
        "^(up|degraded|unknown|invalid)$",
        ".*",
    ]);
    let url = format!("amqp://{user}:pw@127.0.0.1:{}/%2f", servers.rabbit.port());
    (user, url)
}

/// Hunt I: a result the broker refuses for good (a topic permission that leaves out a
/// verdict's routing key, a `max_message_size` below the result's size) closed the
/// publishing channel; the job was handed back and came again, first, to every new
/// session: for ever, the worker rebuilding its session each time. Such a job is
/// dead-lettered, with the broker's words, and the worker goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_broker_refuses_for_good_dead_letters_its_job() {
    let servers = crate::support::servers();
    let mut s = settings();
    s.targets.allow_private = true;
    let (user, url) = user_refused_downs(&s);
    s.amqp.url = url;
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    client
        .job(
            &s,
            json!({"id": "refused-down", "url": "http://127.0.0.1:9/"}),
        )
        .await;
    // A result the broker takes: the refusal is the message's, not the worker's.
    client
        .job(&s, json!({"id": "taken", "url": "ftp://files.example/"}))
        .await;
    let dead = client
        .take(&s.amqp.dead_letter_queue, 1, Duration::from_secs(30))
        .await;
    client
        .job(&s, json!({"id": "after", "url": "ftp://files.example/"}))
        .await;
    let r = client.results(&s, 2, Duration::from_secs(20)).await;
    worker.shutdown().await;
    let _ = servers.rabbit.ctl(&["delete_user", &user]);
    let ids: Vec<&str> = r.iter().filter_map(|r| r["job_id"].as_str()).collect();
    assert_eq!(ids, ["taken", "after"]);
    let job: serde_json::Value = serde_json::from_slice(&dead[0].data).expect("the job");
    assert_eq!(job["id"], "refused-down");
    let headers = dead[0].properties.headers().clone().expect("headers");
    let reason = match headers.inner().get("x-picket-reason") {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        other => panic!("reason header missing: {other:?}"),
    };
    assert!(reason.contains("ACCESS_REFUSED"), "{reason}");
}

/// Hunt T: a result the broker refused for good was counted in `picket_results_total`
/// as if it had gone out: the metric showed a `down` that no subscriber ever got (its
/// job was dead-lettered instead). A result is counted once the broker confirmed it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_the_broker_refused_is_not_counted_as_a_result() {
    let servers = crate::support::servers();
    let text = format!("{}\n[targets]\nallow_private = true\n", base_toml());
    let s = picket::config::Settings::from_toml(&text).expect("settings");
    let (user, own) = user_refused_downs(&s);
    let worker = crate::support::worker_process::WorkerProcess::plain(
        &text.replace(&servers.amqp_url, &own),
    );
    let client = Client::connect().await;
    client.declare(&s).await;
    let job = json!({"id": "refused-down", "url": "http://127.0.0.1:9/"});
    client.job(&s, job).await;
    client
        .take(&s.amqp.dead_letter_queue, 1, Duration::from_secs(30))
        .await;
    client
        .job(&s, json!({"id": "taken", "url": "ftp://files.example/"}))
        .await;
    client.results(&s, 1, Duration::from_secs(20)).await;
    let (_, metrics) = crate::support::ops::get_ops(s.http.listen, "/metrics")
        .await
        .expect("/metrics answers");
    worker.terminate().await;
    let _ = servers.rabbit.ctl(&["delete_user", &user]);
    let counted = |verdict: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("picket_results_total{"))
            .filter(|l| l.contains(&format!("verdict=\"{verdict}\"")))
            .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
            .sum()
    };
    assert_eq!(counted("invalid"), 1.0, "{metrics}");
    assert_eq!(counted("down"), 0.0, "{metrics}");
}

/// Review S (e24abad): only a dead letter's header frame is measured against
/// `frame_max`; the other copies of a job add headers too (a deferral adds
/// `x-picket-deferrals`, `x-picket-not-before` and `x-picket-most-left`, 85 bytes; a
/// hand-back `x-picket-retry-of`). A real job whose headers fit a frame with less room
/// than that, sent to an IP that is busy, is deferred by a copy that outgrows the frame:
/// the broker closes the whole connection (FRAME_ERROR), the job comes back first to
/// the next session, is deferred again, and so on for as long as its IP stays busy (a
/// shared host asked all day: for ever), every other job of each session cut off with
/// it. (Reviewed as "its copy waits in a delay queue"; with no room for the copy's
/// headers it is answered at once instead, as a job out of deferrals is.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_s_a_job_whose_headers_nearly_fill_a_frame_is_deferred_without_closing_the_connection(
) {
    let site = serve(
        "127.0.123.45",
        Router::new().route("/", get(|| async { axum::response::Html(page("")) })),
    )
    .await;
    let mut s = settings();
    s.targets.allow_private = true;
    // One request a minute to the site: after the first, a job for it is deferred.
    s.rate_limit.per_ip.rate = 1.0 / 60.0;
    s.rate_limit.per_ip.burst = 1;
    s.rate_limit.max_wait = Duration::from_millis(300);
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    client
        .job(&s, json!({"id": "first", "url": format!("http://{site}/")}))
        .await;
    let first = client.results(&s, 1, Duration::from_secs(20)).await;
    assert_eq!(first[0]["verdict"], "up", "{}", first[0]);
    // RabbitMQ's default frame_max is 131072: this header frame is 131022 bytes (22
    // fixed, table 4, name 6, type 1, length 4, delivery mode 1, and the string), 50
    // bytes short of it, as the broker took it from its publisher.
    let mut headers = FieldTable::default();
    headers.insert(
        "x-big".into(),
        AMQPValue::LongString(vec![b'h'; 131_072 - 50 - 38].into()),
    );
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_headers(headers);
    let job = json!({"id": "big", "url": format!("http://{site}/")});
    client
        .publish(&s.amqp.jobs_queue, job.to_string().as_bytes(), props)
        .await;
    // Its copy could not carry a deferral's headers: it is answered now, as a job out
    // of deferrals is, and the session goes on.
    let big = client.results(&s, 1, Duration::from_secs(20)).await;
    assert_eq!(big[0]["job_id"], "big");
    assert_eq!(
        (big[0]["verdict"].as_str(), big[0]["reason"].as_str()),
        (Some("unknown"), Some("rate_limited")),
        "{}",
        big[0]
    );
    client
        .job(&s, json!({"id": "after", "url": "ftp://files.example/"}))
        .await;
    let after = client.results(&s, 1, Duration::from_secs(20)).await;
    worker.shutdown().await;
    assert_eq!(after[0]["job_id"], "after");
}

/// Review S (e24abad): the dead letter that "keeps the message's own properties" is
/// `republished(props)`, which adds `delivery_mode = 2` (one byte) to a message that
/// had none. A message that is no job, whose header frame is exactly the broker's
/// `frame_max` (131072 by default) and has no delivery mode, is copied into a frame of
/// 131073 bytes. RabbitMQ takes it (it lets clients overshoot frame_max by 8 bytes)
/// and hands it on as it is, so the dead letter is a frame larger than `frame_max`:
/// a lapin consumer of the dead-letter queue (picket's own client, an operator's tool)
/// has its connection ended on it, the message as it came was readable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_s_garbage_whose_headers_exactly_fill_a_frame_is_dead_lettered() {
    let s = settings();
    let client = Client::connect().await;
    client.declare(&s).await;
    // 22 fixed, table 4, name 1 + 5, type 1, length 4 and the string: 131072 bytes.
    let mut headers = FieldTable::default();
    headers.insert(
        "x-big".into(),
        AMQPValue::LongString(vec![b'h'; 131_072 - 37].into()),
    );
    client
        .publish(
            &s.amqp.jobs_queue,
            b"garbage filling a frame",
            BasicProperties::default().with_headers(headers),
        )
        .await;
    let worker = Worker::start(&s);
    let dead = client
        .take(&s.amqp.dead_letter_queue, 1, Duration::from_secs(15))
        .await;
    worker.shutdown().await;
    assert_eq!(dead[0].data, b"garbage filling a frame");
}
