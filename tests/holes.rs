//! Holes an adversarial read found (issue "Nothing lost, nothing leaked"), each shown
//! with the real servers: long ids, unroutable publishes, credentials on redirects, DNS
//! sinkholes, socks5h egresses, our own descriptor limit.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::support::dns::Mode;
use crate::support::picket::{check, engine_with, page, settings, Client, Worker};
use crate::support::serve;

/// A site on `ip` serving a page that is up.
async fn healthy_site(ip: &str) -> std::net::SocketAddr {
    serve(
        ip,
        Router::new().route("/", get(|| async { axum::response::Html(page("")) })),
    )
    .await
}

/// A listener on 127.0.0.1 that counts the connections it gets and answers none.
async fn counting_listener() -> (u16, Arc<AtomicUsize>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let port = l.local_addr().expect("addr").port();
    let n = Arc::new(AtomicUsize::new(0));
    let count = n.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = l.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            drop(stream);
        }
    });
    (port, n)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_resolving_only_to_0_0_0_0_is_a_dns_sinkhole_and_never_dialled() {
    let (port, connections) = counting_listener().await;
    // A nameserver's sinkhole (a filtering resolver's, a registrar's parking): the site's
    // DNS. The same line in our own `dns.static` or hosts file is our policy
    // (`resolving::a_name_our_own_hosts_file_sinks_is_refused_by_us_not_down`).
    let sinkhole = std::collections::HashMap::from([(
        "sinkhole.test".to_string(),
        vec!["0.0.0.0".parse().expect("an IP")],
    )]);
    let (ns, _) = crate::support::dns::serve("127.0.42.90", Mode::Answer(sinkhole)).await;
    let engine = engine_with(
        "attempts = 1",
        &format!("[dns]\ntimeout = \"1s\"\nnameservers = [\"{ns}\"]\n"),
    );
    let r = check(&engine, &format!("http://sinkhole.test:{port}/")).await;
    assert_eq!(
        (r.verdict.as_str(), r.reason.as_str()),
        ("down", "dns"),
        "{}",
        r.detail
    );
    assert!(r.detail.contains("0.0.0.0"), "{}", r.detail);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(
        connections.load(Ordering::SeqCst),
        0,
        "0.0.0.0 reaches this host on Linux"
    );
    // A literal 0.0.0.0 in the job is the job's mistake.
    let r = check(&engine, &format!("http://0.0.0.0:{port}/")).await;
    assert_eq!(r.verdict.as_str(), "invalid", "{}", r.detail);
}

/// What the second host of a redirect saw of the job's credentials.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_credentials_never_follow_a_redirect_to_another_host() {
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let log = seen.clone();
    let other = serve(
        "127.0.42.2",
        Router::new().route(
            "/",
            get(move |headers: axum::http::HeaderMap| {
                let log = log.clone();
                async move {
                    for name in ["authorization", "cookie", "proxy-authorization"] {
                        if let Some(v) = headers.get(name) {
                            log.lock().expect("lock").push(format!("{name}: {v:?}"));
                        }
                    }
                    axum::response::Html(page("landed"))
                }
            }),
        ),
    )
    .await;
    let first_saw: Arc<Mutex<Option<String>>> = Arc::default();
    let first_log = first_saw.clone();
    let target = format!("http://{other}/");
    let first = serve(
        "127.0.42.1",
        Router::new().route(
            "/",
            get(move |headers: axum::http::HeaderMap| {
                let first_log = first_log.clone();
                let target = target.clone();
                async move {
                    *first_log.lock().expect("lock") = headers
                        .get("authorization")
                        .map(|v| v.to_str().unwrap_or_default().to_string());
                    axum::response::Redirect::temporary(&target)
                }
            }),
        ),
    )
    .await;
    let engine = engine_with("attempts = 1", "");
    let job = format!(
        r#"{{"url":"http://{first}/","headers":{{"Authorization":"Bearer s3cret","Cookie":"sid=1","Proxy-Authorization":"Basic eA=="}}}}"#
    );
    let job = match picket::job::decode(job.as_bytes(), "j", 65536).expect("job") {
        picket::job::Decoded::Job(j) => *j,
        picket::job::Decoded::Rejected(r) => panic!("{}", r.detail),
    };
    let r = engine.run(&job).await;
    assert_eq!(r.verdict.as_str(), "up", "{}", r.detail);
    assert_eq!(
        first_saw.lock().expect("lock").as_deref(),
        Some("Bearer s3cret"),
        "the origin the job named gets its credentials"
    );
    assert!(
        seen.lock().expect("lock").is_empty(),
        "another host got the job's credentials: {:?}",
        seen.lock().expect("lock")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_with_a_300_byte_id_and_a_long_worker_name_is_answered() {
    let site = healthy_site("127.0.42.3").await;
    let mut s = settings();
    s.targets.allow_private = true;
    s.worker.name = "w".repeat(300);
    let c = Client::connect().await;
    c.declare(&s).await;
    let w = Worker::start(&s);
    let id = "i".repeat(300);
    c.job(&s, json!({"id": id, "url": format!("http://{site}/")}))
        .await;
    let r = c.results(&s, 1, Duration::from_secs(30)).await.remove(0);
    assert_eq!(
        r["job_id"].as_str(),
        Some(id.as_str()),
        "the result keeps the full id"
    );
    assert_eq!(r["verdict"], "up");
    w.shutdown().await;
}

/// `picket check` of 200 healthy pages under a file-descriptor limit set by prlimit.
async fn check_under_nofile(limit: &str) -> Vec<serde_json::Value> {
    let site = healthy_site("127.0.42.4").await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("picket.toml");
    std::fs::write(
        &config,
        "[targets]\nallow_private = true\n[probe]\nconcurrency = 200\nattempts = 1\n\
         [rate_limit.per_ip]\nrate = 10000.0\nburst = 10000\nmax_inflight = 1000\n",
    )
    .expect("config");
    let urls: Vec<String> = (0..200).map(|i| format!("http://{site}/?n={i}")).collect();
    let out = tokio::process::Command::new("prlimit")
        .arg(format!("--nofile={limit}"))
        .arg(env!("CARGO_BIN_EXE_picket"))
        .args(["check", "--json", "--config"])
        .arg(&config)
        .args(&urls)
        .output()
        .await
        .expect("prlimit runs picket check (util-linux)");
    assert!(
        out.status.code().is_some_and(|c| c <= 1),
        "picket check under {limit}: {:?}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_is_our_failure_never_the_sites() {
    // A low soft limit is raised to the hard one at start: every page is up.
    let rs = check_under_nofile("64:1024").await;
    assert_eq!(rs.len(), 200);
    let not_up: Vec<&serde_json::Value> = rs.iter().filter(|r| r["verdict"] != "up").collect();
    assert!(
        not_up.is_empty(),
        "{} not up, first: {}",
        not_up.len(),
        not_up[0]
    );
    // A hard limit too low for probe.concurrency: what fails is ours, unknown, never down.
    let rs = check_under_nofile("48:48").await;
    assert_eq!(rs.len(), 200);
    let down: Vec<&serde_json::Value> = rs.iter().filter(|r| r["verdict"] == "down").collect();
    assert!(down.is_empty(), "{} down, first: {}", down.len(), down[0]);
    let ours = rs.iter().filter(|r| r["verdict"] == "unknown").count();
    assert!(ours > 0, "48 descriptors cannot hold 200 probes at once");
    println!("under 48 descriptors: {ours} of 200 unknown, the rest up");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jobs_of_a_broken_session_stop_and_free_their_slots() {
    use crate::support::picket::base_toml;
    use crate::support::worker_process::WorkerProcess;
    let rabbit = Arc::new(
        tokio::task::spawn_blocking(crate::support::RabbitServer::launch)
            .await
            .expect("join")
            .expect("private RabbitMQ"),
    );
    let connections = Arc::new(AtomicUsize::new(0));
    let seen = connections.clone();
    let silent = crate::support::serve_raw("127.0.42.5", move |stream| {
        seen.fetch_add(1, Ordering::SeqCst);
        crate::support::targets::raw::never_answer(stream)
    })
    .await;
    // Four slots, four jobs to a site that never answers within the 60 s timeout.
    let text = format!("{}\n[targets]\nallow_private = true\n", base_toml())
        .replace(&crate::support::servers().amqp_url, rabbit.url())
        .replace(
            "timeout = \"5s\"",
            "timeout = \"60s\"\nconcurrency = 4\nattempts = 1",
        )
        .replace("shutdown_grace = \"10s\"", "shutdown_grace = \"1s\"");
    let s = picket::config::Settings::from_toml(&text).expect("settings");
    assert_eq!(
        (s.probe.concurrency, s.amqp.url.as_str()),
        (4, rabbit.url())
    );
    let c = Client::connect_to(rabbit.url()).await;
    c.declare(&s).await;
    let worker = WorkerProcess::plain(&text);
    // Persistent, so they outlive the broker's restart.
    let persistent = lapin::BasicProperties::default().with_delivery_mode(2);
    for i in 0..4 {
        let job = json!({"id": format!("slow-{i}"), "url": format!("http://{silent}/")});
        c.publish(
            &s.amqp.jobs_queue,
            job.to_string().as_bytes(),
            persistent.clone(),
        )
        .await;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while connections.load(Ordering::SeqCst) < 4 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the four probes never started"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(c);
    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.restart())
        .await
        .expect("restart");
    // The broker hands the four jobs out again: the worker takes them at once, because
    // the old session's probes stopped and gave back their slots.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(25);
    while connections.load(Ordering::SeqCst) < 8 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the old session's probes still hold the slots ({} connections); log:\n{}",
            connections.load(Ordering::SeqCst),
            worker.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_delay_queue_deleted_under_a_running_worker_loses_no_deferred_job() {
    let site = healthy_site("127.0.42.6").await;
    let mut s = settings();
    s.targets.allow_private = true;
    // One request every 500 ms to the site, and no waiting for it: most jobs are deferred.
    s.rate_limit.per_ip.rate = 2.0;
    s.rate_limit.per_ip.burst = 1;
    s.rate_limit.max_wait = Duration::from_millis(50);
    let c = Client::connect().await;
    c.declare(&s).await;
    for bucket in picket::amqp::DELAY_BUCKETS {
        c.ch.queue_delete(
            picket::amqp::delay_queue_name(&s.amqp, bucket)
                .as_str()
                .into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .expect("delete a delay queue");
    }
    let w = Worker::start(&s);
    // The worker declared its topology when it started; the queue goes again under it.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    for bucket in picket::amqp::DELAY_BUCKETS {
        c.ch.queue_delete(
            picket::amqp::delay_queue_name(&s.amqp, bucket)
                .as_str()
                .into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .expect("delete a delay queue");
    }
    for i in 0..20 {
        c.job(
            &s,
            json!({"id": format!("busy-{i}"), "url": format!("http://{site}/?n={i}")}),
        )
        .await;
    }
    // At least once: a job whose ack died with a rebuilt session is answered again.
    let mut ids = std::collections::HashSet::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while ids.len() < 20 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "only {} of 20 busy jobs answered: {ids:?}",
            ids.len()
        );
        let r = c.results(&s, 1, Duration::from_secs(60)).await.remove(0);
        ids.insert(r["job_id"].as_str().unwrap_or_default().to_string());
    }
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_deferral_never_holds_back_a_short_one() {
    let s = settings();
    let c = Client::connect().await;
    c.declare(&s).await;
    let persistent = lapin::BasicProperties::default().with_delivery_mode(2);
    let long = picket::amqp::delay_queue_name(&s.amqp, 300);
    let short = picket::amqp::delay_queue_name(&s.amqp, 1);
    c.publish(
        &long,
        br#"{"url":"http://a.example/","id":"long"}"#,
        persistent.clone(),
    )
    .await;
    c.publish(
        &short,
        br#"{"url":"http://a.example/","id":"short"}"#,
        persistent,
    )
    .await;
    let back = c.take(&s.amqp.jobs_queue, 1, Duration::from_secs(5)).await;
    let body: serde_json::Value = serde_json::from_slice(&back[0].data).expect("json");
    assert_eq!(body["id"], "short", "the 1 s deferral came home first");
    assert_eq!(c.depth(&long).await, 1, "the 300 s one still waits");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_results_queue_never_dead_letters_a_job_of_a_quorum_queue() {
    let site = healthy_site("127.0.42.7").await;
    let mut s = settings();
    s.targets.allow_private = true;
    s.amqp.queue_type = picket::config::QueueType::Quorum;
    let c = Client::connect().await;
    // An operator capped the results queue at one message, refusing what does not fit,
    // and it is full.
    c.full_results_queue(&s).await;
    let w = Worker::start(&s);
    c.job(
        &s,
        json!({"id": "patient", "url": format!("http://{site}/")}),
    )
    .await;
    // Refused again and again for longer than x-delivery-limit (5) hand-backs would take.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(
        c.depth(&s.amqp.dead_letter_queue).await,
        0,
        "a healthy job was dead-lettered"
    );
    c.make_room_for_a_result(&s).await;
    let r = c.results(&s, 1, Duration::from_secs(30)).await.remove(0);
    assert_eq!(
        (r["job_id"].as_str(), r["verdict"].as_str()),
        (Some("patient"), Some("up"))
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_out_of_deferrals_is_answered_at_once_instead_of_holding_a_slot() {
    use lapin::types::{AMQPValue, FieldTable};
    let site = healthy_site("127.0.42.8").await;
    let mut s = settings();
    s.targets.allow_private = true;
    s.probe.timeout = Duration::from_secs(120);
    // One request a minute to the site: after the first, its IP is busy for a minute,
    // which a job may wait (within its timeout) but not after its last deferral.
    s.rate_limit.per_ip.rate = 1.0 / 60.0;
    s.rate_limit.per_ip.burst = 1;
    let c = Client::connect().await;
    c.declare(&s).await;
    let w = Worker::start(&s);
    c.job(&s, json!({"id": "first", "url": format!("http://{site}/")}))
        .await;
    let first = c.results(&s, 1, Duration::from_secs(30)).await.remove(0);
    assert_eq!(first["verdict"], "up");
    let mut headers = FieldTable::default();
    headers.insert(
        picket::amqp::DEFERRALS_HEADER.into(),
        AMQPValue::LongLongInt(picket::amqp::MAX_DEFERRALS),
    );
    let props = lapin::BasicProperties::default().with_headers(headers);
    let job = json!({"id": "last-chance", "url": format!("http://{site}/")});
    let asked = tokio::time::Instant::now();
    c.publish(&s.amqp.jobs_queue, job.to_string().as_bytes(), props)
        .await;
    let r = c.results(&s, 1, Duration::from_secs(60)).await.remove(0);
    assert_eq!(
        (r["verdict"].as_str(), r["reason"].as_str()),
        (Some("unknown"), Some("rate_limited")),
        "{r}"
    );
    assert!(
        asked.elapsed() < Duration::from_secs(10),
        "held a probe slot for {:?}",
        asked.elapsed()
    );
    w.shutdown().await;
}

/// Publishes `body` to `queue` over a raw AMQP 0-9-1 connection, with `message_id` set
/// to bytes that are not UTF-8: no client library lets one build such a message, but
/// the protocol carries bytes and the broker passes them on.
async fn publish_with_raw_message_id(amqp_port: u16, queue: &str, message_id: &[u8], body: &[u8]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    fn short(s: &[u8]) -> Vec<u8> {
        let mut v = vec![s.len() as u8];
        v.extend_from_slice(s);
        v
    }
    fn frame(kind: u8, channel: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![kind];
        f.extend_from_slice(&channel.to_be_bytes());
        f.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        f.extend_from_slice(payload);
        f.push(0xCE);
        f
    }
    fn method(class: u16, id: u16, args: &[u8]) -> Vec<u8> {
        let mut m = class.to_be_bytes().to_vec();
        m.extend_from_slice(&id.to_be_bytes());
        m.extend_from_slice(args);
        m
    }
    async fn read_frame(s: &mut tokio::net::TcpStream) -> (u8, Vec<u8>) {
        let mut head = [0u8; 7];
        s.read_exact(&mut head).await.expect("frame head");
        let size = u32::from_be_bytes([head[3], head[4], head[5], head[6]]) as usize;
        let mut payload = vec![0u8; size + 1];
        s.read_exact(&mut payload).await.expect("frame payload");
        payload.pop();
        (head[0], payload)
    }
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", amqp_port))
        .await
        .expect("connect to RabbitMQ");
    s.write_all(b"AMQP\x00\x00\x09\x01")
        .await
        .expect("protocol header");
    read_frame(&mut s).await; // connection.start
    let mut start_ok = 0u32.to_be_bytes().to_vec(); // no client properties
    start_ok.extend(short(b"PLAIN"));
    start_ok.extend_from_slice(&12u32.to_be_bytes());
    start_ok.extend_from_slice(b"\0guest\0guest");
    start_ok.extend(short(b"en_US"));
    s.write_all(&frame(1, 0, &method(10, 11, &start_ok)))
        .await
        .expect("start-ok");
    let (_, tune) = read_frame(&mut s).await;
    let mut tune_ok = tune[4..10].to_vec(); // channel-max and frame-max as offered
    tune_ok.extend_from_slice(&0u16.to_be_bytes()); // no heartbeats
    s.write_all(&frame(1, 0, &method(10, 31, &tune_ok)))
        .await
        .expect("tune-ok");
    let mut open = short(b"/");
    open.extend(short(b""));
    open.push(0);
    s.write_all(&frame(1, 0, &method(10, 40, &open)))
        .await
        .expect("open");
    read_frame(&mut s).await; // connection.open-ok
    s.write_all(&frame(1, 1, &method(20, 10, &short(b""))))
        .await
        .expect("channel.open");
    read_frame(&mut s).await; // channel.open-ok
    let mut publish = 0u16.to_be_bytes().to_vec();
    publish.extend(short(b""));
    publish.extend(short(queue.as_bytes()));
    publish.push(0);
    s.write_all(&frame(1, 1, &method(60, 40, &publish)))
        .await
        .expect("publish");
    let mut header = 60u16.to_be_bytes().to_vec();
    header.extend_from_slice(&0u16.to_be_bytes());
    header.extend_from_slice(&(body.len() as u64).to_be_bytes());
    header.extend_from_slice(&(0x1000u16 | 0x0080).to_be_bytes()); // delivery-mode, message-id
    header.push(2);
    header.extend(short(message_id));
    s.write_all(&frame(2, 1, &header))
        .await
        .expect("content header");
    s.write_all(&frame(3, 1, body)).await.expect("body");
    // channel.close, and wait for close-ok: the publish has been taken by then.
    let mut close = 200u16.to_be_bytes().to_vec();
    close.extend(short(b"bye"));
    close.extend_from_slice(&[0, 0, 0, 0]);
    s.write_all(&frame(1, 1, &method(20, 40, &close)))
        .await
        .expect("channel.close");
    read_frame(&mut s).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_lapin_cannot_parse_ends_in_the_dead_letter_queue_of_a_quorum_queue() {
    let site = healthy_site("127.0.42.9").await;
    let mut s = settings();
    s.targets.allow_private = true;
    s.amqp.queue_type = picket::config::QueueType::Quorum;
    let c = Client::connect().await;
    c.declare(&s).await;
    let port = url::Url::parse(&s.amqp.url)
        .expect("amqp url")
        .port()
        .expect("port");
    let job = json!({"id": "bad-bytes", "url": format!("http://{site}/")}).to_string();
    publish_with_raw_message_id(
        port,
        &s.amqp.jobs_queue,
        b"\xff\xfe-not-utf8",
        job.as_bytes(),
    )
    .await;
    // A quorum queue counts a message once its log has it: not always by close-ok.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while c.depth(&s.amqp.jobs_queue).await != 1 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the broker took the message"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let w = Worker::start(&s);
    // Each delivery closes the worker's connection; the quorum queue's delivery limit
    // ends the loop in the dead-letter queue.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while c.depth(&s.amqp.dead_letter_queue).await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the message never left the jobs queue"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // Said as what it is, with a counter to alert on: on a classic queue the message
    // would come back forever (OPERATIONS, "Not yet").
    let (_, metrics) = crate::support::ops::get_ops(w.ops, "/metrics")
        .await
        .expect("/metrics answers");
    let unreadable = crate::support::ops::metric(&metrics, "picket_unreadable_messages_total");
    assert!(
        unreadable.is_some_and(|n| n >= 1.0),
        "picket_unreadable_messages_total: {unreadable:?}"
    );
    // And the worker works on.
    c.job(&s, json!({"id": "after", "url": format!("http://{site}/")}))
        .await;
    let r = c.results(&s, 1, Duration::from_secs(60)).await.remove(0);
    assert_eq!(
        (r["job_id"].as_str(), r["verdict"].as_str()),
        (Some("after"), Some("up"))
    );
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_results_exchange_of_the_wrong_type_keeps_the_worker_unready_and_consuming_nothing() {
    let site = healthy_site("127.0.42.10").await;
    let mut s = settings();
    s.targets.allow_private = true;
    let c = Client::connect().await;
    // Someone declared the results exchange as a fanout: results routed by verdict
    // would go astray there.
    c.ch.exchange_declare(
        s.amqp.results_exchange.as_str().into(),
        lapin::ExchangeKind::Fanout,
        lapin::options::ExchangeDeclareOptions {
            durable: true,
            ..lapin::options::ExchangeDeclareOptions::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("fanout exchange");
    c.ch.queue_declare(
        s.amqp.jobs_queue.as_str().into(),
        lapin::options::QueueDeclareOptions {
            durable: true,
            ..lapin::options::QueueDeclareOptions::default()
        },
        lapin::types::FieldTable::default(),
    )
    .await
    .expect("jobs queue");
    c.job(&s, json!({"id": "waits", "url": format!("http://{site}/")}))
        .await;
    let w = Worker::start(&s);
    tokio::time::sleep(Duration::from_secs(4)).await;
    let ready = reqwest::get(format!("http://{}/readyz", w.ops))
        .await
        .expect("readyz answers");
    assert_eq!(ready.status().as_u16(), 503, "ready with a wrong exchange");
    assert_eq!(
        c.depth(&s.amqp.jobs_queue).await,
        1,
        "a job was taken and could be lost"
    );
    w.shutdown().await;
}

/// How an HTTP/2 test site answers each stream.
#[derive(Clone, Copy)]
enum H2Answer {
    /// `RST_STREAM(REFUSED_STREAM)`: the server did not process the request, so a
    /// client may send it again (RFC 9113 §8.7), which is what an uncounted retry does.
    Refuse,
    /// A page behind 64 header fields of 1000 bytes (64 KB, four times the 16 KB
    /// header list hyper accepts by default; HTTP/1 takes such answers).
    BigHeaders,
    /// A page announced with its `content-length`, of which only the first `n` bytes
    /// are sent before `RST_STREAM(NO_ERROR)`: Apache Traffic Server's answer when its
    /// origin closes part way through (hunt Z3).
    CutShort(usize),
}

/// An HTTP/2-only TLS site for `name` on `ip` (certificate from the farm's CA, written
/// to `ca_file`), answering as `answer` says; counts the streams it was asked.
async fn h2_site(
    ip: &str,
    name: &str,
    ca_file: &std::path::Path,
    answer: H2Answer,
) -> (u16, Arc<AtomicUsize>) {
    use crate::support::farm::{server_config, Pki, Signer};
    let pki = Pki::new();
    std::fs::write(ca_file, pki.ca.pem()).expect("write the CA file");
    let mut config = (*server_config(&pki, name, -1, 90, Signer::Ca)).clone();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let streams = Arc::new(AtomicUsize::new(0));
    let count = streams.clone();
    let addr = crate::support::serve_raw(ip, move |stream| {
        let (acceptor, count) = (acceptor.clone(), count.clone());
        async move {
            let Ok(tls) = acceptor.accept(stream).await else {
                return;
            };
            let Ok(mut conn) = h2::server::handshake(tls).await else {
                return;
            };
            while let Some(Ok((_request, mut respond))) = conn.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                match answer {
                    H2Answer::Refuse => respond.send_reset(h2::Reason::REFUSED_STREAM),
                    H2Answer::BigHeaders => {
                        let mut head = http::Response::builder()
                            .status(200)
                            .header("content-type", "text/html; charset=utf-8");
                        for i in 0..64 {
                            head = head.header(format!("x-filler-{i}"), "a".repeat(1000));
                        }
                        let head = head.body(()).expect("a response head");
                        if let Ok(mut body) = respond.send_response(head, false) {
                            let _ = body.send_data(bytes::Bytes::from(page("")), true);
                        }
                    }
                    H2Answer::CutShort(n) => {
                        let whole = page(&"<p>Timetable: platform 2, on time.</p>".repeat(120));
                        let head = http::Response::builder()
                            .status(200)
                            .header("content-type", "text/html; charset=utf-8")
                            .header("content-length", whole.len())
                            .body(())
                            .expect("a response head");
                        if let Ok(mut body) = respond.send_response(head, false) {
                            let whole = bytes::Bytes::from(whole);
                            let sent = whole.slice(..n.min(whole.len()));
                            let _ = body.send_data(sent, false);
                            // The reset follows once the client has read the answer, as
                            // ATS's does when its origin's close comes: the connection is
                            // driven by `accept` meanwhile.
                            tokio::spawn(async move {
                                tokio::time::sleep(Duration::from_millis(200)).await;
                                body.send_reset(h2::Reason::NO_ERROR);
                            });
                        }
                    }
                }
            }
        }
    })
    .await;
    (addr.port(), streams)
}

/// An engine that trusts the CA in `ca_file` and resolves `name` to `ip`.
fn engine_for(name: &str, ip: &str, ca_file: &std::path::Path) -> picket::engine::Engine {
    engine_with(
        "attempts = 2",
        &format!(
            "[dns]\nstatic = {{ \"{name}\" = \"{ip}\" }}\n[tls]\nextra_ca_file = \"{}\"\n",
            ca_file.display()
        ),
    )
}

/// One check of an HTTP/2-only site for `name` on `ip` answering as `answer` says: the
/// report, and how many streams the site was asked.
async fn check_h2_site(name: &str, ip: &str, answer: H2Answer) -> (picket::job::Report, usize) {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("ca.pem");
    let (port, streams) = h2_site(ip, name, &ca, answer).await;
    let r = check(
        &engine_for(name, ip, &ca),
        &format!("https://{name}:{port}/"),
    )
    .await;
    (r, streams.load(Ordering::SeqCst))
}

/// Every request that reaches an IP was counted by the limiter: the HTTP client never
/// sends one again on its own when an HTTP/2 server refuses a stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_http2_stream_is_never_sent_again_behind_the_limiters_back() {
    let (r, streams) = check_h2_site("refuses.test", "127.0.45.1", H2Answer::Refuse).await;
    assert_ne!(r.verdict.as_str(), "up", "{}", r.detail);
    assert_eq!(
        streams, r.attempts as usize,
        "one request per counted attempt ({}: {})",
        r.reason, r.detail
    );
}

/// An answer whose header list is larger than HTTP/2 clients take by default is read,
/// as HTTP/1 reads it: a CMS with a long Content-Security-Policy and many cookies is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_answer_with_64_kb_of_headers_is_up() {
    let (r, streams) = check_h2_site("big-headers.test", "127.0.45.2", H2Answer::BigHeaders).await;
    assert_eq!(
        (r.verdict.as_str(), r.reason.as_str()),
        ("up", "ok"),
        "{}",
        r.detail
    );
    assert_eq!(streams, 1);
}

/// lapin hands a `basic.return` to whichever confirm completes next on the channel, and
/// RabbitMQ acks several publishes at once (`multiple`): with publishes in flight side by
/// side, an unroutable one can come back confirmed (its job acked, the copy gone) while a
/// routed one is called unroutable. Every publish must learn its own fate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_publishes_each_learn_whether_they_were_routed() {
    let s = settings();
    let c = Client::connect().await;
    c.declare(&s).await;
    let broken = tokio_util::sync::CancellationToken::new();
    let publisher = picket::amqp::Publisher::open(&c.conn, 8, broken.clone())
        .await
        .expect("publishing channels");
    let missing = format!("{}.nowhere", s.amqp.jobs_queue);
    let mut wrong = Vec::new();
    for round in 0..20 {
        let publishes = (0..50).map(|i| {
            let publisher = publisher.clone();
            let to = if i % 2 == 0 {
                s.amqp.dead_letter_queue.clone()
            } else {
                missing.clone()
            };
            async move {
                let props = lapin::BasicProperties::default().with_delivery_mode(2);
                let r = picket::amqp::publish_confirmed(
                    &publisher,
                    ("", to.as_str()),
                    picket::amqp::Route::Mandatory,
                    b"{}",
                    props,
                )
                .await;
                (i, r)
            }
        });
        for (i, r) in futures_util::future::join_all(publishes).await {
            let returned = matches!(r, Err(picket::amqp::AmqpError::Unroutable { .. }));
            if returned != (i % 2 == 1) {
                wrong.push((round, i, returned));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "{} of 1000 publishes were told the wrong fate (round, index, told unroutable): {:?}",
        wrong.len(),
        &wrong[..wrong.len().min(10)]
    );
    assert!(!broken.is_cancelled(), "no publish was abandoned");
}

/// A site whose chain is incomplete names a `caIssuers` URL that is gone (404). The
/// answer would be the same at every attempt of every check, so the URL is fetched once
/// and its failure said again for a while: before, each attempt fetched it again (up to
/// 5 s each against a CA server that hangs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_issuer_url_that_failed_is_not_fetched_at_every_check() {
    use crate::support::farm::{serve_tls, server_config, Pki, Signer};
    let dir = tempfile::tempdir().expect("temp dir");
    let (pki, ca_file) = Pki::with_ca_file(dir.path());
    let asked = Arc::new(AtomicUsize::new(0));
    let count = asked.clone();
    let gone = Router::new().fallback(move || {
        let count = count.clone();
        async move {
            count.fetch_add(1, Ordering::SeqCst);
            axum::http::StatusCode::NOT_FOUND
        }
    });
    let ca = serve("127.0.0.49", gone).await;
    let name = "county-aia.test";
    let aia = format!("http://127.0.0.49:{}/gone.crt", ca.port());
    let config = server_config(&pki, name, -1, 90, Signer::IntermediateAt(aia));
    let site = serve_tls("127.0.0.50", config, &page("")).await;
    let engine = engine_for(name, "127.0.0.50", &ca_file);
    for round in 0..3 {
        let r = check(&engine, &format!("https://{name}:{}/", site.port())).await;
        assert_eq!(
            (r.verdict.as_str(), r.reason.as_str()),
            ("degraded", "tls"),
            "round {round}: {}",
            r.detail
        );
        assert!(r.detail.contains("404"), "round {round}: {}", r.detail);
    }
    assert_eq!(
        asked.load(Ordering::SeqCst),
        1,
        "the gone URL is fetched once, not at every check"
    );
}

/// The same, when port 80 answers but not with the site: a bare default server's 403, or
/// nginx's default page (the site's plain-HTTP virtual host gone), while HTTPS serves
/// it. Browsers ask over HTTPS first and show the site; picket said down/http_status and
/// degraded/body_mismatch. Where HTTPS shows no site either (its certificate names
/// another), the plain-HTTP answer stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_url_whose_port_80_answers_no_site_is_asked_over_https_as_browsers_do() {
    use crate::support::farm::{serve_tls_at, server_config, Pki, Signer};
    use crate::support::targets::{raw, serve_raw_at};
    let dir = tempfile::tempdir().expect("temp dir");
    let (pki, ca_file) = Pki::with_ca_file(dir.path());
    let answer = |status: &str, body: &str| {
        format!(
            "HTTP/1.1 {status}\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\
             Connection: close\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    };
    let forbidden = answer(
        "403 Forbidden",
        "<html><head><title>403 Forbidden</title></head><body><center><h1>403 Forbidden\
         </h1></center><hr><center>nginx</center></body></html>",
    );
    let default_page = answer(
        "200 OK",
        "<!DOCTYPE html><html><head><title>Welcome to nginx!</title></head><body><h1>\
         Welcome to nginx!</h1><p>If you see this page, the nginx web server is \
         successfully installed and working. Further configuration is required.</p>\
         </body></html>",
    );
    let broken = answer(
        "500 Internal Server Error",
        "<html><body><h1>Internal Server Error</h1><p>The server encountered an \
         internal error.</p></body></html>",
    );
    let cases = [
        ("county-80-forbidden.test", "127.0.58.11", forbidden, true),
        ("county-80-default.test", "127.0.58.12", default_page, true),
        ("county-80-broken.test", "127.0.58.13", broken, false),
    ];
    for (name, ip, port_80, https_serves_it) in cases {
        let at = |port: u16| format!("{ip}:{port}").parse().expect("address");
        serve_raw_at(at(80), raw::fixed(port_80)).await;
        let certified = if https_serves_it {
            name
        } else {
            "another-site.test"
        };
        let config = server_config(&pki, certified, -1, 90, Signer::Ca);
        serve_tls_at(at(443), config, &page("")).await;
        let r = check(&engine_for(name, ip, &ca_file), &format!("http://{name}/")).await;
        if https_serves_it {
            assert_eq!(
                (r.verdict.as_str(), r.reason.as_str()),
                ("up", "ok"),
                "{name}: {}",
                r.detail
            );
            let http = r.http.as_ref().expect("an answer");
            assert_eq!(http.final_url, format!("https://{name}/"));
            assert!(
                r.detail.contains(&format!("asked https://{name}/ instead")),
                "{name}: {}",
                r.detail
            );
        } else {
            assert_eq!(
                (r.verdict.as_str(), r.reason.as_str()),
                ("down", "http_status"),
                "{name}: {}",
                r.detail
            );
        }
    }
}

/// A site that closed its port 80 and serves only HTTPS, as hardened government sites
/// do. Browsers ask a plain-HTTP address over HTTPS first (Chrome's HTTPS-Upgrades,
/// Firefox's HTTPS-First) and show it; picket said down/connect. Where HTTPS fails too,
/// the plain-HTTP failure stands, with both in the detail; an address browsers do not
/// upgrade (an IP, a port of its own) is asked as given.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_url_whose_port_80_is_closed_is_asked_over_https_as_browsers_do() {
    let name = "county-https-only.test";
    let (_dir, ca_file) = https_only(name, "127.0.0.51").await;
    let engine = engine_for(name, "127.0.0.51", &ca_file);
    let r = check(&engine, &format!("http://{name}/")).await;
    assert_eq!(
        (r.verdict.as_str(), r.reason.as_str()),
        ("up", "ok"),
        "{}",
        r.detail
    );
    assert!(
        r.detail.contains(&format!("asked https://{name}/ instead")),
        "{}",
        r.detail
    );
    let http = r.http.as_ref().expect("an answer");
    assert_eq!(http.final_url, format!("https://{name}/"));
    // Nothing listens on either port: the site is down, for the plain-HTTP failure.
    let gone = "county-gone.test";
    let engine = engine_for(gone, "127.0.0.52", &ca_file);
    let r = check(&engine, &format!("http://{gone}/")).await;
    assert_eq!(
        (r.verdict.as_str(), r.reason.as_str()),
        ("down", "connect"),
        "{}",
        r.detail
    );
    assert!(
        r.detail.contains(&format!("https://{gone}/ failed too")),
        "{}",
        r.detail
    );
    // Browsers do not upgrade an IP address.
    let r = check(&engine, "http://127.0.0.51/").await;
    assert_eq!(r.verdict.as_str(), "down", "{}", r.detail);
}

/// Hunt J: a site whose port 80 accepts and never answers (a hung plain-HTTP virtual
/// host, a tarpit, a path that stalls after the handshake) while HTTPS serves it: a
/// browser asks HTTPS first and shows it. picket asked HTTPS only after port 80 had
/// spent the job's whole time, so HTTPS got none: `down/timeout` "confirmed", "https://…
/// failed too: no time left".
///
/// The time port 80 hung is no time a person waits (the browser asked HTTPS first):
/// the site's time is the HTTPS answer's. With `max_latency_ms` under the job's time,
/// the site was `degraded/slow`, "200 OK, 148 bytes in 1505 ms (more than 1000 ms)".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_url_whose_port_80_hangs_is_asked_over_https_with_time_of_its_own() {
    let name = "county-hung-80.test";
    let (_dir, ca_file) = https_only(name, "127.0.0.57").await;
    let hung = tokio::net::TcpListener::bind("127.0.0.57:80")
        .await
        .expect("port 80");
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = held.clone();
    tokio::spawn(async move {
        // Accepts and never reads nor answers; at most a few connections.
        for _ in 0..8 {
            let Ok((conn, _)) = hung.accept().await else {
                return;
            };
            keep.lock().expect("lock").push(conn);
        }
    });
    let engine = engine_for(name, "127.0.0.57", &ca_file);
    let job = json!({
        "url": format!("http://{name}/"),
        "timeout_ms": 1500,
        "expect": {"max_latency_ms": 1000},
    });
    let r = crate::support::picket::check_job(&engine, job).await;
    assert_eq!(
        (r.verdict.as_str(), r.reason.as_str()),
        ("up", "ok"),
        "{}",
        r.detail
    );
    assert!(
        !held.lock().expect("lock").is_empty(),
        "port 80 was asked first"
    );
    assert!(
        r.timing_ms.total < 1000,
        "the site's time is the HTTPS answer's: {:?}",
        r.timing_ms
    );
}

/// Hunt J: a TLS handshake that never finishes (a stalled TLS terminator, a port that
/// accepts and says nothing) was told as "no connection within N ms", though TCP was
/// up: an operator who then finds the port open has been misled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_handshake_that_stalls_is_told_as_such_not_as_no_connection() {
    let listener = tokio::net::TcpListener::bind("127.0.0.58:0")
        .await
        .expect("bind");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        // Accepts and never answers the ClientHello; at most a few connections.
        for _ in 0..8 {
            let Ok((conn, _)) = listener.accept().await else {
                return;
            };
            held.push(conn);
        }
    });
    let engine = engine_with(
        "attempts = 1\nconnect_timeout = \"700ms\"",
        "[dns]\nstatic = { \"stalls.test\" = \"127.0.0.58\" }\n",
    );
    let job = json!({"url": format!("https://stalls.test:{port}/"), "timeout_ms": 2000});
    let r = crate::support::picket::check_job(&engine, job).await;
    assert_eq!(r.reason.as_str(), "timeout", "{}", r.detail);
    assert!(r.detail.contains("TLS handshake"), "{}", r.detail);
    assert!(!r.detail.contains("no connection"), "{}", r.detail);
}

/// Hunt J: a timeout's detail named the job's whole time ("no answer within 2500 ms")
/// when the request that timed out had only what the hops before it left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_says_how_long_the_request_that_timed_out_had() {
    let router = Router::new()
        .route(
            "/",
            get(|| async {
                tokio::time::sleep(Duration::from_millis(1200)).await;
                axum::response::Redirect::temporary("/hang")
            }),
        )
        .route(
            "/hang",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                "late"
            }),
        );
    let addr = serve("127.0.0.59", router).await;
    let engine = engine_with(
        "attempts = 1",
        "[dns]\nstatic = { \"slow-hop.test\" = \"127.0.0.59\" }\n",
    );
    let url = format!("http://slow-hop.test:{}/", addr.port());
    let job = json!({"url": url, "timeout_ms": 2500});
    let r = crate::support::picket::check_job(&engine, job).await;
    assert_eq!(r.reason.as_str(), "timeout", "{}", r.detail);
    let within: u64 = r
        .detail
        .split("no answer within ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no time in the detail: {}", r.detail));
    assert!(
        within <= 1400,
        "the /hang request had about 1300 ms, not {within}: {}",
        r.detail
    );
}

/// An HTTPS site for `name` on `ip`:443 only, its certificate from a test CA; the temp
/// dir that holds the CA (kept by the caller) and the CA's file.
async fn https_only(name: &str, ip: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    use crate::support::farm::{serve_tls_at, server_config, Pki, Signer};
    let dir = tempfile::tempdir().expect("temp dir");
    let (pki, ca_file) = Pki::with_ca_file(dir.path());
    let config = server_config(&pki, name, -1, 90, Signer::Ca);
    let addr = format!("{ip}:443").parse().expect("address");
    serve_tls_at(addr, config, &page("")).await;
    (dir, ca_file)
}

/// A job that sets its own `Accept-Encoding` changes what picket asks for, not what
/// browsers are shown: a server that compresses for everyone (gzip here, which every
/// browser asks for) still shows its page to people. Refused as "not asked for", the
/// job's own header made a working site a confirmed down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_asking_for_no_coding_is_not_refused_one_browsers_ask_for() {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(page("compressed for everyone").as_bytes())
        .expect("gzip");
    let packed = bytes::Bytes::from(gz.finish().expect("gzip"));
    let site = serve(
        "127.0.42.11",
        Router::new().route(
            "/",
            get(move || {
                let packed = packed.clone();
                async move {
                    (
                        [
                            ("content-type", "text/html; charset=utf-8"),
                            ("content-encoding", "gzip"),
                        ],
                        packed,
                    )
                }
            }),
        ),
    )
    .await;
    let engine = engine_with("attempts = 1", "");
    let job = format!(
        r#"{{"url":"http://{site}/","headers":{{"Accept-Encoding":"identity"}},"expect":{{"body_contains":"compressed for everyone"}}}}"#
    );
    let job = match picket::job::decode(job.as_bytes(), "j", 65536).expect("job") {
        picket::job::Decoded::Job(j) => *j,
        picket::job::Decoded::Rejected(r) => panic!("{}", r.detail),
    };
    let r = engine.run(&job).await;
    assert_eq!(r.verdict.as_str(), "up", "{}", r.detail);
}

/// An HTTP/2 answer that ends before the length it announced (Apache Traffic Server
/// resets the stream with `NO_ERROR` when its origin closes part way) is a page that
/// broke off, as the same answer over HTTP/1.1 is; curl says "transfer closed with 3550
/// bytes remaining". hyper ends a body at a `NO_ERROR` reset without a word, and picket
/// said `up/ok`, "200 OK, 1500 bytes" (hunt Z3). One ended after its whole length is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_answer_ending_before_its_announced_length_broke_off() {
    let (r, _) = check_h2_site("cut-short.test", "127.0.45.3", H2Answer::CutShort(1500)).await;
    assert_eq!(
        (r.verdict.as_str(), r.reason.as_str()),
        ("degraded", "protocol"),
        "{}",
        r.detail
    );
    assert!(r.detail.contains("1500"), "{}", r.detail);
    let (r, _) = check_h2_site("whole.test", "127.0.45.4", H2Answer::CutShort(usize::MAX)).await;
    assert_eq!(
        (r.verdict.as_str(), r.reason.as_str()),
        ("up", "ok"),
        "{}",
        r.detail
    );
}

/// A page whose body stops part way and never goes on (Tomcat's answer when a servlet
/// sets a `Content-Length` longer than it writes: every byte in the first millisecond,
/// then nothing): a browser shows the part that came and spins. picket said
/// `degraded/slow`, "the page comes slowly (a browser shows it as it comes)", though
/// nothing was coming (hunt Z3); it is the body not arriving in time that is wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_stops_part_way_is_no_slow_page() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let whole = page(&"<p>Departure: platform 2, on time.</p>".repeat(100));
    let head = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\n\r\n",
        whole.len()
    );
    let answer = Arc::new(format!("{head}{}", &whole[..1302]));
    let addr = crate::support::serve_raw("127.0.45.5", move |mut stream| {
        let answer = answer.clone();
        async move {
            let mut asked = [0u8; 4096];
            let _ = stream.read(&mut asked).await;
            let _ = stream.write_all(answer.as_bytes()).await;
            // Holds the connection open, owing the rest, for longer than any probe.
            tokio::time::sleep(Duration::from_secs(30)).await;
        }
    })
    .await;
    let e = engine_with("", "");
    let job = json!({"url": format!("http://{addr}/"), "timeout_ms": 2000});
    let r = crate::support::picket::check_job(&e, job).await;
    assert_eq!(
        (r.verdict.as_str(), r.reason.as_str()),
        ("degraded", "timeout"),
        "{}",
        r.detail
    );
    assert!(
        r.detail.contains("stopped after 1302 bytes"),
        "{}",
        r.detail
    );
}

/// A DROP rule in iptables for `ip:port`, removed when dropped: the packets of
/// connections already open go nowhere from then on, as when a firewall begins to drop
/// a client it banned.
struct Dropping {
    rule: String,
}

impl Dropping {
    fn start(ip: &str, port: u16) -> Dropping {
        let rule = format!("INPUT -d {ip} -p tcp --dport {port} -j DROP");
        let ok = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("iptables -w -I {rule}"))
            .status()
            .is_ok_and(|s| s.success());
        assert!(
            ok,
            "iptables could not add {rule} (run as root, iptables installed)"
        );
        Dropping { rule }
    }
}

impl Drop for Dropping {
    fn drop(&mut self) {
        let _ = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!("iptables -w -D {}", self.rule))
            .status();
    }
}

/// A server that took our request and then fell off the network (a firewall dropping
/// its packets): the request is not left waiting the probe's whole time as if the
/// server were thinking. TCP keepalive finds the connection dead in about 3 s, and the
/// detail says so ("went silent").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_whose_packets_stop_being_acknowledged_went_silent() {
    let router = Router::new().route(
        "/",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(30)).await;
            "late"
        }),
    );
    let addr = serve("127.0.77.20", router).await;
    let engine = engine_with(
        "attempts = 1",
        "[dns]\nstatic = { \"falls-off.test\" = \"127.0.77.20\" }\n",
    );
    let url = format!("http://falls-off.test:{}/", addr.port());
    let job = json!({"url": url, "timeout_ms": 12000});
    let checked =
        tokio::spawn(async move { crate::support::picket::check_job(&engine, job).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dropping = Dropping::start("127.0.77.20", addr.port());
    let r = checked.await.expect("the check");
    drop(dropping);
    assert_eq!(r.reason.as_str(), "timeout", "{}", r.detail);
    assert!(r.detail.contains("went silent"), "{}", r.detail);
}

/// Hunt Z4 (L1): with the probe's time no longer than its connect time, a server whose
/// SYNs go unanswered (a full listen queue here, a firewall's DROP in the hunt) ran the
/// whole probe out in the connect, and the detail said "no answer within 2999 ms" of a
/// request never sent. It is no connection, and tells the limiter so (a DROP ban is
/// not a request held open).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_that_never_connected_says_so_whatever_timer_ran_out() {
    let (hole, _held) = crate::support::blackhole("127.0.77.21").await;
    let engine = engine_with(
        "attempts = 1\nconnect_timeout = \"10s\"",
        "[dns]\nstatic = { \"no-syn-ack.test\" = \"127.0.77.21\" }\n",
    );
    let url = format!("http://no-syn-ack.test:{}/", hole.port());
    let job = json!({"url": url, "timeout_ms": 3000});
    let r = crate::support::picket::check_job(&engine, job).await;
    assert_eq!(r.reason.as_str(), "timeout", "{}", r.detail);
    assert!(r.detail.contains("no connection within"), "{}", r.detail);
}

/// Review AC: port 80 of a shared IP answers some hosts and holds the requests of two
/// others open (a backend hanging behind a proxy); nothing listens on 443. The held hosts are asked over HTTPS, as
/// browsers ask first, and both are refused right after the IP answered: a storm,
/// held once and asked again. The request asked again after the hold was taken for the
/// HTTPS upgrade having answered, so the plain-HTTP failure it stood for was dropped,
/// and the attempt ended as "…:443: connection refused", `down/connect`, where the site
/// is port 80 hanging.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_after_the_https_upgrade_keeps_the_plain_http_failure_it_stood_for() {
    let ip = "127.0.99.30";
    let port80 = tokio::net::TcpListener::bind(format!("{ip}:80"))
        .await
        .expect("port 80");
    tokio::spawn(hold_some_hosts(port80, &["held1", "held2"]));
    let names = ["ok1", "ok2", "held1", "held2"].map(|h| format!("{h}.upgrade.test"));
    let statics: Vec<String> = names
        .iter()
        .map(|n| format!("\"{n}\" = \"{ip}\""))
        .collect();
    let engine = crate::support::picket::engine_from_toml(&format!(
        "[probe]\nretry_delay = \"50ms\"\ntimeout = \"6s\"\n\
         [rate_limit]\nbackoff = \"1s\"\n\
         [rate_limit.per_ip]\nrate = 20.0\nburst = 4\nmax_inflight = 4\n\
         [targets]\nallow_private = true\n[dns]\nstatic = {{ {} }}\n",
        statics.join(", ")
    ));
    let jobs: Vec<_> = names
        .iter()
        .map(|n| picket::job::job_for_url(&format!("http://{n}/"), n).expect("job"))
        .collect();
    let reports = futures_util::future::join_all(jobs.iter().map(|j| engine.run(j))).await;
    for r in reports.iter().filter(|r| r.url.contains("held")) {
        let said: Vec<_> = r
            .attempt_log
            .iter()
            .map(|a| (&a.reason, &a.detail))
            .collect();
        assert!(
            r.attempt_log.iter().all(|a| !a.detail.contains(":443)")),
            "{}: {} {}; attempts {said:#?}",
            r.url,
            r.verdict.as_str(),
            r.detail
        );
    }
}

/// Port 80 of the test above: a page for every host but those named in `held`, whose
/// requests are held open for 10 s and then answered 504; at most a few dozen
/// connections.
async fn hold_some_hosts(listener: tokio::net::TcpListener, held: &'static [&'static str]) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut kept = Vec::new();
    for _ in 0..64 {
        let Ok((mut conn, _)) = listener.accept().await else {
            return;
        };
        let mut head = vec![0u8; 4096];
        let n = conn.read(&mut head).await.unwrap_or(0);
        let head = String::from_utf8_lossy(&head[..n]).to_ascii_lowercase();
        if held.iter().any(|h| head.contains(&format!("host: {h}."))) {
            // A proxy's 504 after its backend hung 10 s, longer than a probe waits.
            kept.push(tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(10)).await;
                let gone = "HTTP/1.1 504 Gateway Time-out\r\ncontent-length: 0\r\n\r\n";
                let _ = conn.write_all(gone.as_bytes()).await;
            }));
            continue;
        }
        let body = "<!doctype html><html><head><title>County office</title></head><body>\
                    <h1>County office</h1><p>Opening hours, forms and services.</p></body></html>";
        let answer = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: {}\r\n\
             connection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = conn.write_all(answer.as_bytes()).await;
    }
}
