//! Politeness against real Redis and RabbitMQ: the per-IP limit holds across worker
//! processes (sliding windows and in-flight), a target that bans bursts never bans us,
//! a busy IP does not starve the others, and deferred jobs come back exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::support::picket::{base_toml, page, Client, Worker};
use crate::support::real::nginx::Nginx;
use crate::support::{free_port, serve, unique};

/// A target that records when each request arrived and how many were in flight.
#[derive(Default)]
struct Recorder {
    arrivals: Mutex<Vec<Instant>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    banned: AtomicBool,
}

/// Serves a page on `ip`, holding each answer `hold`; with `ban_above`, a client that
/// sends more than that many requests within any second is banned (403 from then on).
async fn recording_target(
    ip: &str,
    hold: Duration,
    ban_above: Option<usize>,
) -> (u16, Arc<Recorder>) {
    let rec = Arc::new(Recorder::default());
    let r = rec.clone();
    let handler = move || {
        let r = r.clone();
        async move {
            let now = Instant::now();
            {
                let mut a = r.arrivals.lock().expect("lock");
                a.push(now);
                if let Some(limit) = ban_above {
                    let recent = a
                        .iter()
                        .filter(|t| now.duration_since(**t) < Duration::from_secs(1))
                        .count();
                    if recent > limit {
                        r.banned.store(true, Ordering::SeqCst);
                    }
                }
            }
            let n = r.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            r.max_in_flight.fetch_max(n, Ordering::SeqCst);
            tokio::time::sleep(hold).await;
            r.in_flight.fetch_sub(1, Ordering::SeqCst);
            if r.banned.load(Ordering::SeqCst) {
                return (
                    axum::http::StatusCode::FORBIDDEN,
                    axum::response::Html(page("banned")),
                );
            }
            (axum::http::StatusCode::OK, axum::response::Html(page("")))
        }
    };
    let router = Router::new()
        .route("/", get(handler.clone()))
        .fallback(get(handler));
    (serve(ip, router).await.port(), rec)
}

/// `[dns.static]` lines mapping `n` host names to `ip`.
fn hosts(prefix: &str, n: usize, ip: &str) -> (Vec<String>, String) {
    let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}.test")).collect();
    let mut toml = String::from("[dns.static]\n");
    for h in &names {
        toml.push_str(&format!("\"{h}\" = \"{ip}\"\n"));
    }
    (names, toml)
}

/// The most requests seen in any window of length `t` starting at an arrival.
fn max_in_window(arrivals: &[Instant], t: Duration) -> usize {
    let mut a = arrivals.to_vec();
    a.sort();
    (0..a.len())
        .map(|i| {
            a[i..]
                .iter()
                .take_while(|x| x.duration_since(a[i]) < t)
                .count()
        })
        .max()
        .unwrap_or(0)
}

/// Sets `[rate_limit.per_ip]` and other keys by replacing the test defaults.
fn with_limits(toml: &str, rate: f64, burst: u32, max_inflight: u32) -> String {
    toml.replace(
        "[rate_limit.per_ip]\nrate = 1000.0\nburst = 1000\nmax_inflight = 100\n",
        &format!(
            "[rate_limit.per_ip]\nrate = {rate}\nburst = {burst}\nmax_inflight = {max_inflight}\n"
        ),
    )
}

fn results_by_id(rs: &[serde_json::Value]) -> HashMap<String, usize> {
    let mut m = HashMap::new();
    for r in rs {
        *m.entry(r["job_id"].as_str().unwrap_or_default().to_string())
            .or_insert(0) += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_worker_processes_keep_one_ip_within_rate_burst_and_inflight() {
    let (rate, burst, max_inflight) = (4.0, 2u32, 2u32);
    let (port, rec) = recording_target("127.0.0.8", Duration::from_millis(150), None).await;
    let (names, static_toml) = hosts("shared", 30, "127.0.0.8");
    let base = with_limits(&base_toml(), rate, burst, max_inflight);
    let toml = format!("{base}\n[targets]\nallow_private = true\n{static_toml}");
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut children = Vec::new();
    for i in 0..2 {
        // Each process needs its own operations port.
        let own = toml.replace(
            &s.http.listen.to_string(),
            &format!("127.0.0.1:{}", free_port()),
        );
        let path = dir.path().join(format!("w{i}.toml"));
        std::fs::write(&path, own).expect("write config");
        children.push(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_picket"))
                .args(["worker", "--config"])
                .arg(&path)
                .env("PICKET__WORKER__NAME", format!("limit-w{i}"))
                // A small prefetch so that both processes get jobs for the one IP.
                .env("PICKET__AMQP__PREFETCH", "8")
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("start worker"),
        );
    }
    let n = 60;
    for i in 0..n {
        let host = &names[i % names.len()];
        client
            .job(
                &s,
                json!({"id": format!("j{i}"), "url": format!("http://{host}:{port}/")}),
            )
            .await;
    }
    let rs = client.results(&s, n, Duration::from_secs(60)).await;
    for c in &mut children {
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &c.id().unwrap_or(0).to_string()])
            .status();
        let _ = tokio::time::timeout(Duration::from_secs(20), c.wait()).await;
    }
    assert!(rs.iter().all(|r| r["verdict"] == "up"), "{rs:?}");
    let workers: HashSet<&str> = rs.iter().filter_map(|r| r["worker"].as_str()).collect();
    assert_eq!(workers.len(), 2, "both processes took part: {workers:?}");
    let arrivals = rec.arrivals.lock().expect("lock").clone();
    assert_eq!(
        arrivals.len(),
        n,
        "one request per job (all were up at once)"
    );
    // Arrival times are taken at the target, after the network and the scheduler: allow
    // 50 ms of jitter on the window, never a whole extra request's worth of rate.
    for t in [0.5, 1.0, 2.0, 5.0] {
        let window = Duration::from_secs_f64(t);
        let seen = max_in_window(&arrivals, window);
        let bound = (f64::from(burst) + rate * (t + 0.05)).floor() as usize;
        eprintln!("window {t:>3} s: at most {seen} requests (bound {bound})");
        assert!(seen <= bound, "{seen} requests within {t} s, bound {bound}");
    }
    let peak = rec.max_in_flight.load(Ordering::SeqCst);
    assert!(
        peak <= max_inflight as usize,
        "{peak} in flight, cap {max_inflight}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_target_that_bans_bursts_never_bans_us() {
    // The target bans any client sending more than 4 requests within a second; at
    // 3.5/s with a burst of 1, at most 4 fit in any second, with 140 ms to spare.
    let (port, rec) = recording_target("127.0.0.9", Duration::from_millis(20), Some(4)).await;
    let (names, static_toml) = hosts("ban", 40, "127.0.0.9");
    let base = with_limits(&base_toml(), 3.5, 1, 4);
    let toml = format!("{base}\n[targets]\nallow_private = true\n{static_toml}");
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    let (w1, w2) = (Worker::start(&s), Worker::start(&s));
    let mut all = Vec::new();
    for round in 0..3 {
        for (i, host) in names.iter().enumerate() {
            client
                .job(
                    &s,
                    json!({"id": format!("r{round}-{i}"), "url": format!("http://{host}:{port}/")}),
                )
                .await;
        }
        all.extend(
            client
                .results(&s, names.len(), Duration::from_secs(60))
                .await,
        );
    }
    w1.shutdown().await;
    w2.shutdown().await;
    assert!(!rec.banned.load(Ordering::SeqCst), "the target banned us");
    assert_eq!(all.len(), 120);
    assert!(all.iter().all(|r| r["verdict"] == "up"), "{all:?}");
    assert!(results_by_id(&all).values().all(|&c| c == 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_over_max_wait_are_deferred_and_come_back_exactly_once() {
    let (port, _rec) = recording_target("127.0.0.10", Duration::from_millis(10), None).await;
    let (names, static_toml) = hosts("defer", 8, "127.0.0.10");
    let base = with_limits(&base_toml(), 2.0, 1, 4);
    let toml = format!("{base}\n[targets]\nallow_private = true\n{static_toml}").replace(
        "[worker]\n",
        "[rate_limit]\nmax_wait = \"300ms\"\n[worker]\n",
    );
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    assert_eq!(s.rate_limit.max_wait, Duration::from_millis(300));
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    for (i, host) in names.iter().enumerate() {
        client
            .job(
                &s,
                json!({"id": format!("d{i}"), "url": format!("http://{host}:{port}/")}),
            )
            .await;
    }
    // Watch the delay queues while the jobs are worked off: deferral must really happen.
    let delays: Vec<String> = picket::amqp::DELAY_BUCKETS
        .iter()
        .map(|b| picket::amqp::delay_queue_name(&s.amqp, *b))
        .collect();
    let watched = delays.clone();
    let watcher = {
        let c = Client::connect().await;
        tokio::spawn(async move {
            let mut seen = 0;
            for _ in 0..100 {
                let mut now = 0;
                for q in &watched {
                    now += c.depth(q).await;
                }
                seen = seen.max(now);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    let rs = client
        .results(&s, names.len(), Duration::from_secs(60))
        .await;
    let deferred_peak = watcher.await.expect("watcher");
    assert!(deferred_peak > 0, "no job went through the delay queue");
    assert!(rs.iter().all(|r| r["verdict"] == "up"), "{rs:?}");
    let by_id = results_by_id(&rs);
    assert_eq!(by_id.len(), names.len(), "every job answered: {by_id:?}");
    // No duplicate arrives later either.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        client.depth(&s.amqp.results_queue).await,
        0,
        "a job was answered twice"
    );
    worker.shutdown().await;
    assert_eq!(
        client.depth(&s.amqp.jobs_queue).await,
        0,
        "every job was acked"
    );
    for q in &delays {
        assert_eq!(client.depth(q).await, 0, "{q}");
    }
}

/// A redirect loop on an IP our limit asks slowly (2 s a request): each hop waited for
/// its slot, and each wait moved the probe's deadline on, so one attempt held its job
/// for up to (max_redirects + 1) × `rate_limit.max_wait` + the timeout (found by a hunt:
/// 105 s unacked where the documented bound was 18 s, and with RabbitMQ's
/// `consumer_timeout` set by that bound, the job handed back for ever). The hops of one
/// attempt share one `max_wait` of waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hops_of_a_redirect_chain_share_one_max_wait_for_the_limit() {
    let ip = "127.0.76.7";
    let (names, static_toml) = hosts("loop", 1, ip);
    let port = free_port();
    let nginx = Nginx::run(
        "nginx (redirect loop)",
        &crate::support::real::scratch("nginx-loop"),
        ip,
        port,
        &format!(
            "  server {{ listen {ip}:{port}; server_name {}; location / {{ return 302 $uri/x; }} }}\n",
            names[0]
        ),
    );
    let base = with_limits(&base_toml(), 0.5, 1, 1);
    let toml = format!("{base}\n[targets]\nallow_private = true\n{static_toml}");
    let mut s = picket::config::Settings::from_toml(&toml).expect("settings");
    s.rate_limit.max_wait = Duration::from_secs(3);
    s.probe.attempts = 1;
    s.probe.max_redirects = 10;
    s.probe.timeout = Duration::from_secs(10);
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    let url = format!("http://{}:{}/", names[0], nginx.port);
    client.job(&s, json!({"id": "loop", "url": url})).await;
    let rs = client.results(&s, 1, Duration::from_secs(60)).await;
    worker.shutdown().await;
    assert_eq!(rs.len(), 1, "{rs:?}");
    let queued = rs[0]["timing_ms"]["queue"].as_u64().unwrap_or(0);
    assert!(
        queued <= 3500,
        "the attempt waited {queued} ms for our limit, more than max_wait (3 s): {}",
        rs[0]
    );
    assert_ne!(rs[0]["verdict"], "up", "{}", rs[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_ip_does_not_starve_jobs_for_other_ips() {
    let (slow_port, _) = recording_target("127.0.0.11", Duration::from_millis(5), None).await;
    let mut others = Vec::new();
    for i in 1..=100u32 {
        let ip = format!("127.0.1.{i}");
        let (port, _) = recording_target(&ip, Duration::from_millis(5), None).await;
        others.push((ip, port));
    }
    let base = with_limits(&base_toml(), 1.0, 1, 4);
    let toml = format!("{base}\n[targets]\nallow_private = true\n")
        .replace("[worker]\n", "[rate_limit]\nmax_wait = \"5s\"\n[worker]\n");
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    for i in 0..300 {
        client
            .job(
                &s,
                json!({"id": format!("slow{i}"), "url": format!("http://127.0.0.11:{slow_port}/")}),
            )
            .await;
    }
    for (i, (ip, port)) in others.iter().enumerate() {
        client
            .job(
                &s,
                json!({"id": format!("fast{i}"), "url": format!("http://{ip}:{port}/")}),
            )
            .await;
    }
    let start = Instant::now();
    let worker = Worker::start(&s);
    // Collect until every fast job is in; slow ones trickle in at 1/s meanwhile.
    let ch = client.conn.create_channel().await.expect("channel");
    let mut consumer = ch
        .basic_consume(
            s.amqp.results_queue.as_str().into(),
            "starvation".into(),
            lapin::options::BasicConsumeOptions::default(),
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut fast_done = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while fast_done.len() < others.len() {
        use futures_util::StreamExt;
        let d = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .unwrap_or_else(|_| {
                panic!("only {} of 100 fast jobs finished in 60 s", fast_done.len())
            })
            .expect("stream")
            .expect("delivery");
        d.acker
            .ack(lapin::options::BasicAckOptions::default())
            .await
            .expect("ack");
        let r: serde_json::Value = serde_json::from_slice(&d.data).expect("json");
        crate::support::schema::assert_valid_result(&r);
        if r["job_id"]
            .as_str()
            .is_some_and(|id| id.starts_with("fast"))
        {
            assert_eq!(r["verdict"], "up", "{r}");
            fast_done.push(start.elapsed());
        }
    }
    fast_done.sort();
    let p50 = fast_done[49];
    let p95 = fast_done[94];
    eprintln!(
        "starvation: 100 jobs for 100 other IPs behind 300 for one IP at 1/s: p50 {} ms, p95 {} ms, last {} ms",
        p50.as_millis(),
        p95.as_millis(),
        fast_done[99].as_millis()
    );
    assert!(p95 < Duration::from_secs(15), "p95 {p95:?}");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_pauses_every_request_to_that_ip() {
    // The first request is told 429 Retry-After: 2; later ones get the page.
    let arrivals = Arc::new(Mutex::new(Vec::<Instant>::new()));
    let a = arrivals.clone();
    let router = Router::new().route(
        "/",
        get(move || {
            let a = a.clone();
            async move {
                let mut a = a.lock().expect("lock");
                a.push(Instant::now());
                if a.len() == 1 {
                    (
                        axum::http::StatusCode::TOO_MANY_REQUESTS,
                        [(axum::http::header::RETRY_AFTER, "2")],
                        axum::response::Html(page("slow down")),
                    )
                } else {
                    (
                        axum::http::StatusCode::OK,
                        [(axum::http::header::RETRY_AFTER, "0")],
                        axum::response::Html(page("")),
                    )
                }
            }
        }),
    );
    let port = serve("127.0.0.12", router).await.port();
    let base = with_limits(&base_toml(), 100.0, 10, 10);
    let toml = format!("{base}\n[targets]\nallow_private = true\n");
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    let url = format!("http://127.0.0.12:{port}/");
    client.job(&s, json!({"id": "first", "url": url})).await;
    let first = client.results(&s, 1, Duration::from_secs(30)).await;
    // One egress: being throttled is reported, not "confirmed" against the same IP.
    assert_eq!(first[0]["verdict"], "unknown", "{}", first[0]);
    assert_eq!(first[0]["reason"], "blocked", "{}", first[0]);
    assert_eq!(first[0]["attempts"], 1);
    client.job(&s, json!({"id": "second", "url": url})).await;
    let second = client.results(&s, 1, Duration::from_secs(30)).await;
    worker.shutdown().await;
    assert_eq!(second[0]["verdict"], "up", "{}", second[0]);
    let a = arrivals.lock().expect("lock").clone();
    assert_eq!(a.len(), 2);
    let gap = a[1].duration_since(a[0]);
    // Only the Retry-After hold explains a 2 s gap between the two jobs' requests.
    assert!(
        gap >= Duration::from_millis(1900),
        "second request after {gap:?}"
    );
    let queued = second[0]["timing_ms"]["queue"].as_u64().unwrap_or(0);
    assert!(queued >= 1500, "{}", second[0]);
}

/// Issue 11 item 12: connections refused by several hosts of one IP right after it
/// answered us (a fail2ban-style ban, `iptables -j REJECT`) hold the IP, and the refused
/// request is asked again after the hold; still refusing once a hold lasted as long as
/// a firewall may remember us (`rate_limit.drop_memory`, here as long as the first
/// hold: iptables' `recent` lengthens its ban with every connection it rejects, so a
/// shorter hold would be held again), it is judged as what it then is: a server that
/// stopped listening, down once confirmed. Before hunt Z3 the request was not asked
/// again within its check: of a crashed Tomcat's four hosts, one was `unknown/blocked`
/// "a firewall-style ban" beside its neighbours' `down/connect`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_refused_by_hosts_of_an_ip_hold_it_once() {
    let ip = "127.0.44.1";
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .expect("bind the target");
    let port = listener.local_addr().expect("target address").port();
    let stop = tokio_util::sync::CancellationToken::new();
    let router = Router::new().route("/", get(|| async { axum::response::Html(page("")) }));
    let shutdown = stop.clone().cancelled_owned();
    let served = tokio::spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(shutdown)
            .await
    });
    let (names, dns) = hosts("refuse", 2, ip);
    let e = crate::support::picket::engine_with(
        "attempts = 2\nconnect_timeout = \"2s\"",
        &format!("[rate_limit]\nbackoff = \"3s\"\ndrop_memory = \"3s\"\n{dns}"),
    );
    let urls: Vec<String> = names
        .iter()
        .map(|h| format!("http://{h}:{port}/"))
        .collect();
    let check = |i: usize| crate::support::picket::check(&e, &urls[i]);
    for i in 0..2 {
        assert_eq!(check(i).await.verdict.as_str(), "up");
    }
    // The server stops listening: every connection to the port is refused.
    stop.cancel();
    let _ = served.await;
    // One host refusing is that site: asked again and confirmed down.
    let first = check(0).await;
    assert_eq!(
        (first.verdict.as_str(), first.reason.as_str()),
        ("down", "connect"),
        "{}",
        first.detail
    );
    // A second host of the IP refusing too, right after answers: taken for a refusal
    // of us, the IP is held and the request asked again after the hold; the IP still
    // refuses, and that is the site's failure.
    let t0 = Instant::now();
    let second = check(1).await;
    let waited = t0.elapsed();
    eprintln!("after the refusal of us, the check took {waited:?}");
    assert!(waited >= Duration::from_millis(2800), "{waited:?}");
    assert_eq!(
        (second.verdict.as_str(), second.reason.as_str()),
        ("down", "connect"),
        "{}",
        second.detail
    );
    // The next check is the site's failure too, with nothing held.
    let third = check(0).await;
    assert_eq!(
        (third.verdict.as_str(), third.reason.as_str()),
        ("down", "connect"),
        "{}",
        third.detail
    );
}

/// `n` jobs for as many hosts on `ip`, all published at once to a worker at `rate`/s
/// with burst 1 and `rate_limit` lines added: every result, what the IP saw, and the
/// worker's metrics.
async fn crowd(ip: &str, n: usize, rate: f64, rate_limit: &str, within: Duration) -> Crowd {
    let (port, rec) = recording_target(ip, Duration::from_millis(5), None).await;
    let prefix = unique("crowd");
    let (names, static_toml) = hosts(&prefix, n, ip);
    let base = with_limits(&base_toml(), rate, 1, 100);
    let toml = format!("{base}\n[targets]\nallow_private = true\n{static_toml}").replace(
        "[worker]\n",
        &format!("[rate_limit]\n{rate_limit}[worker]\n"),
    );
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    for (i, host) in names.iter().enumerate() {
        let job = json!({"id": format!("{prefix}-{i}"), "url": format!("http://{host}:{port}/")});
        client.job(&s, job).await;
    }
    let rs = client.results(&s, n, within).await;
    let metrics = reqwest::get(format!("http://{}/metrics", worker.ops))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("metrics text");
    worker.shutdown().await;
    assert_eq!(results_by_id(&rs).len(), n, "every job answered");
    let mut arrivals = rec.arrivals.lock().expect("lock").clone();
    arrivals.sort();
    Crowd {
        results: rs,
        arrivals,
        metrics,
    }
}

/// What [`crowd`] saw.
struct Crowd {
    results: Vec<serde_json::Value>,
    /// When the IP saw each request, in order.
    arrivals: Vec<Instant>,
    /// The worker's `/metrics` after the last result (shared with the tests beside).
    metrics: String,
}

/// The request times in ms from the first, for a failure's message.
fn offsets(arrivals: &[Instant]) -> Vec<u128> {
    arrivals
        .iter()
        .map(|a| (*a - arrivals[0]).as_millis())
        .collect()
}

/// Jobs deferred for a busy IP come back while its slots are still being used up, not
/// long after: a deferral that waits longer than the IP needs leaves the IP idle while
/// its jobs sit in a delay queue (with these limits, the first 13 jobs fill the 6 s of
/// `max_wait`, and the rest once waited in the 30 s queue, the IP idle for 23 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deferred_jobs_come_back_before_their_ip_goes_idle() {
    let within = Duration::from_secs(90);
    let c = crowd("127.0.0.13", 24, 2.0, "max_wait = \"6s\"\n", within).await;
    let (rs, arrivals) = (c.results, c.arrivals);
    assert!(rs.iter().all(|r| r["verdict"] == "up"), "{rs:?}");
    let longest_idle = arrivals
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    // One request every 500 ms is the limit; a deferral comes back within its queue's
    // TTL (1 s or 5 s here), and waits in process for the rest.
    assert!(
        longest_idle < Duration::from_secs(5),
        "the IP sat idle for {longest_idle:?} while its jobs waited in a delay queue; requests at (ms): {:?}",
        offsets(&arrivals)
    );
}

/// A shared server with more sites than its rate gets through within `max_wait`: each
/// deferred job is told a place of its own in the IP's line, one interval after the one
/// before, and comes back then (through the shorter delay queues while it is early).
/// Before, every deferred job was told the IP's next free slot, so they all came back at
/// once, one or two of them got it, and the rest were deferred again, round after round,
/// until the twentieth deferral answered them `unknown/rate_limited`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_of_a_crowded_ip_line_up_instead_of_going_round_again() {
    let within = Duration::from_secs(120);
    let c = crowd("127.0.0.43", 120, 4.0, "max_wait = \"1s\"\n", within).await;
    let (rs, arrivals) = (c.results, c.arrivals);
    let not_up: Vec<_> = rs.iter().filter(|r| r["verdict"] != "up").collect();
    assert!(not_up.is_empty(), "{} not up: {not_up:?}", not_up.len());
    let at = offsets(&arrivals);
    // 4/s with a burst of 1: at most one more in a second when one request was late.
    assert!(
        max_in_window(&arrivals, Duration::from_millis(999)) <= 5,
        "{at:?}"
    );
    // The line keeps the IP busy: its jobs come back as its slots open, not in one
    // crowd after a queue's TTL with the IP idle meanwhile.
    let longest_idle = arrivals.windows(2).map(|w| w[1] - w[0]).max();
    assert!(
        longest_idle < Some(Duration::from_secs(2)),
        "the IP sat idle for {longest_idle:?}; requests at (ms): {at:?}"
    );
}

/// Jobs that arrive while an IP's line of deferred jobs waits join its end instead of
/// taking the slots the line's jobs come back for: a fresh job going ahead pushes every
/// job of the line back, and the last ones are deferred again, round after round, while
/// jobs that came later are answered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_arriving_while_a_line_waits_join_its_end() {
    let ip = "127.0.0.47";
    // The host of every request, in the order the IP saw them.
    let seen = Arc::new(Mutex::new(Vec::<String>::new()));
    let seen2 = seen.clone();
    let handler = move |headers: axum::http::HeaderMap| {
        let seen = seen2.clone();
        async move {
            let host = headers
                .get("host")
                .and_then(|h| h.to_str().ok())
                .and_then(|h| h.split(':').next())
                .unwrap_or_default()
                .to_string();
            seen.lock().expect("lock").push(host);
            axum::response::Html(page(""))
        }
    };
    let port = serve(ip, Router::new().fallback(get(handler))).await.port();
    let prefix = unique("line");
    let (names, static_toml) = hosts(&prefix, 36, ip);
    let base = with_limits(&base_toml(), 4.0, 1, 100);
    let toml = format!("{base}\n[targets]\nallow_private = true\n{static_toml}")
        .replace("[worker]\n", "[rate_limit]\nmax_wait = \"1s\"\n[worker]\n");
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    let job = |i: usize| json!({"id": format!("{prefix}-{i}"), "url": format!("http://{}:{port}/", names[i])});
    // 24 jobs at once: a second's worth go, the rest line up over the next 5 s.
    for i in 0..24 {
        client.job(&s, job(i)).await;
    }
    let t = Instant::now();
    while seen.lock().expect("lock").len() < 5 {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "the first jobs never came"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // 12 more while the line waits.
    for i in 24..36 {
        client.job(&s, job(i)).await;
    }
    let rs = client.results(&s, 36, Duration::from_secs(60)).await;
    worker.shutdown().await;
    assert!(rs.iter().all(|r| r["verdict"] == "up"), "{rs:?}");
    let order = seen.lock().expect("lock").clone();
    let index = |host: &String| names.iter().position(|n| n == host).unwrap_or(usize::MAX);
    let last_of_first = order.iter().rposition(|h| index(h) < 24);
    let later_ahead: Vec<&String> = order
        .iter()
        .take(last_of_first.unwrap_or(0))
        .filter(|h| index(h) >= 24)
        .collect();
    assert!(
        later_ahead.is_empty(),
        "{} jobs published later went ahead of the line: {later_ahead:?} in {order:?}",
        later_ahead.len()
    );
}

/// A job whose place in its IP's line would be further ahead than `rate_limit.max_defer`
/// is answered `unknown/rate_limited` at once, not deferred: the IP has more sites than
/// its rate can check in time, and the operator hears it now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_whose_place_is_beyond_max_defer_is_answered_at_once() {
    let limits = "max_wait = \"300ms\"\nmax_defer = \"2s\"\n";
    let c = crowd("127.0.0.44", 12, 2.0, limits, Duration::from_secs(30)).await;
    let rs = c.results;
    let up = rs.iter().filter(|r| r["verdict"] == "up").count();
    let too_far: Vec<_> = rs
        .iter()
        .filter(|r| r["verdict"] == "unknown" && r["reason"] == "rate_limited")
        .collect();
    // At 2/s one goes at once and four places fit within 2 s (a little more if the
    // first comes back while the others are still being published).
    assert!((5..=8).contains(&up), "{up} up: {rs:?}");
    assert_eq!(up + too_far.len(), rs.len(), "{rs:?}");
    assert!(
        too_far.iter().all(|r| r["detail"]
            .as_str()
            .is_some_and(|d| d.contains("rate_limit.max_defer"))),
        "{too_far:?}"
    );
    // Counted for an alert (process-wide: other tests here may add to it, never less).
    let counted = c
        .metrics
        .lines()
        .find(|l| l.starts_with("picket_jobs_too_busy_total{limit=\"max_defer\"}"))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(
        counted.is_some_and(|n| n >= too_far.len() as f64),
        "{counted:?} for {} answered: {}",
        too_far.len(),
        c.metrics
    );
    // The places 1.5 s and 2 s ahead come back from the 1 s delay queue 0.5 s and more
    // early (max_wait 300 ms) and are put back until then: counted apart.
    let early = c
        .metrics
        .lines()
        .find(|l| l.starts_with("picket_jobs_back_early_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok());
    assert!(early.is_some_and(|n| n >= 1.0), "{early:?}: {}", c.metrics);
}

/// A defence that bans a client for 2 s once it asks a fourth time within a second, and
/// keeps the ban while the client asks (mod_evasive's `DOSBlockingPeriod`), caught by
/// one host's request only, as mod_evasive's per-process counters can: that host's
/// confirmation, sent at `retry_delay`, would extend the ban and make a working site
/// `down`. It is held for `rate_limit.backoff` instead, and finds the ban over.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_host_refused_right_after_a_burst_is_asked_again_after_the_backoff() {
    let ip = "127.0.0.46";
    // Requests of the last second, and the end of the ban.
    let ban = Arc::new(Mutex::new((Vec::<Instant>::new(), None::<Instant>)));
    let seen = Arc::new(Mutex::new(Vec::<(String, Instant, u16)>::new()));
    let (ban2, seen2) = (ban.clone(), seen.clone());
    let addr = crate::support::serve_raw(ip, move |mut stream| {
        let (ban, seen) = (ban2.clone(), seen2.clone());
        async move {
            use tokio::io::AsyncWriteExt;
            let head = crate::support::targets::read_request_head(&mut stream).await;
            let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
            let host = head
                .lines()
                .find_map(|l| l.strip_prefix("host:"))
                .map(|h| h.trim().split(':').next().unwrap_or("").to_string())
                .unwrap_or_default();
            let now = Instant::now();
            let status = {
                let mut b = ban.lock().expect("lock");
                b.0.retain(|t| now.duration_since(*t) < Duration::from_secs(1));
                b.0.push(now);
                if b.1.is_some_and(|until| now < until) || b.0.len() > 3 {
                    b.1 = Some(now + Duration::from_secs(2));
                    403
                } else {
                    200
                }
            };
            seen.lock().expect("lock").push((host, now, status));
            let body = if status == 200 {
                page("")
            } else {
                "<html><body><h1>Forbidden</h1><p>You don't have permission to access this resource.</p></body></html>".to_string()
            };
            let reason = if status == 200 { "OK" } else { "Forbidden" };
            let response = format!(
                "HTTP/1.1 {status} {reason}\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        }
    })
    .await;
    let (names, static_toml) = hosts("ban", 4, ip);
    let engine = crate::support::picket::engine_from_toml(&format!(
        "[probe]\nretry_delay = \"500ms\"\ntimeout = \"5s\"\n[rate_limit]\nbackoff = \"3s\"\n\
         [rate_limit.per_ip]\nrate = 1000.0\nburst = 1000\nmax_inflight = 100\n\
         [targets]\nallow_private = true\n{static_toml}"
    ));
    let mut reports = Vec::new();
    for name in &names {
        let job = picket::job::job_for_url(&format!("http://{name}:{}/", addr.port()), name)
            .expect("job");
        reports.push(engine.run(&job).await);
    }
    let seen = seen.lock().expect("lock").clone();
    let last = &reports[3];
    assert_eq!(
        (last.verdict, last.reason.as_str()),
        (picket::job::Verdict::Up, "ok"),
        "{}; requests: {seen:?}",
        last.detail
    );
    let asked: Vec<Instant> = seen
        .iter()
        .filter(|(h, _, _)| h == &names[3])
        .map(|(_, t, _)| *t)
        .collect();
    assert_eq!(asked.len(), 2, "refused once, then asked again: {seen:?}");
    assert!(
        asked[1].duration_since(asked[0]) >= Duration::from_millis(2900),
        "asked again after the 3 s hold, not the 500 ms retry delay: {seen:?}"
    );
    assert!(reports[..3]
        .iter()
        .all(|r| r.verdict == picket::job::Verdict::Up));
}

/// A status line hyper cannot read is asked again, to be read as browsers read it
/// (`tunnel/mend`): a second request to the site's address, which the per-IP limit
/// counts like any other. At one request at once and two a second, the second waits
/// about half a second for its turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_status_line_asked_again_is_counted_by_the_per_ip_limit() {
    use crate::support::farm::Farm;
    use crate::support::picket::{check, engine_from_toml};
    let farm = Farm::start().await;
    let toml = farm
        .config_toml()
        .replace("rate = 1000.0\nburst = 1000\n", "rate = 2.0\nburst = 1\n");
    assert!(
        toml.contains("burst = 1\n"),
        "the farm's limits changed: {toml}"
    );
    let e = engine_from_toml(&toml);
    let r = check(&e, &farm.target("status-line-lower-case").url).await;
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (picket::job::Verdict::Up, "ok"),
        "{}",
        r.detail
    );
    let queued = r.timing_ms.queue.unwrap_or(0);
    assert!(
        queued >= 400,
        "the second request waited {queued} ms for the limit: {}",
        r.detail
    );
}

/// `hosts_on_ip` sites on `ip` asking a pause of ten minutes (`Retry-After: 600`) from
/// the nginx that `start` runs, and a worker to check them.
struct AskingAPause {
    names: Vec<String>,
    nginx: Nginx,
    s: picket::config::Settings,
    client: Client,
    worker: Worker,
}

type StartNginx = fn(&str, &[String], u32) -> Nginx;

async fn asking_a_pause(
    ip: &str,
    prefix: &str,
    hosts_on_ip: usize,
    start: StartNginx,
) -> AskingAPause {
    let (names, static_toml) = hosts(prefix, hosts_on_ip, ip);
    let nginx = start(ip, &names, 600);
    let base = with_limits(&base_toml(), 2.0, 2, 4);
    let toml = format!("{base}\n[targets]\nallow_private = true\n{static_toml}");
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    let worker = Worker::start(&s);
    AskingAPause {
        names,
        nginx,
        s,
        client,
        worker,
    }
}

/// A site in maintenance, as operators (and WordPress) switch it on: 503 with
/// `Retry-After: 600`. Its confirmation may not be asked before then, and a worker that
/// deferred the job to ask again later held the answer for ten minutes, only to be told
/// the same (and then again, deferral after deferral). The site's own word confirms the
/// `down`, at once, and nothing more is sent to it. The next checks of the site are new
/// jobs: held for the ten minutes, each waited in the delay queue and the site coming back
/// went unseen; each asks once, as a visitor would.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_site_in_maintenance_is_down_at_once_and_each_check_is_answered_in_time() {
    let AskingAPause {
        names,
        nginx,
        s,
        client,
        worker,
    } = asking_a_pause("127.0.57.5", "upkeep", 1, Nginx::maintenance).await;
    let url = format!("http://{}:{}/", names[0], nginx.port);
    // A monitored site is checked again and again; its Retry-After asks for ten minutes.
    let mut seen = Vec::new();
    for (check, maintenance) in [(1, true), (2, true), (3, false)] {
        if !maintenance {
            nginx.end_maintenance();
        }
        let id = format!("upkeep-{check}");
        client.job(&s, json!({"id": id, "url": url})).await;
        let rs = client.results(&s, 1, Duration::from_secs(20)).await;
        assert_eq!(rs.len(), 1, "check {check} answered within 20 s: {rs:?}");
        seen.push(rs[0].clone());
    }
    worker.shutdown().await;
    for r in &seen[..2] {
        assert_eq!(
            (
                r["verdict"].as_str(),
                r["reason"].as_str(),
                r["attempts"].as_u64()
            ),
            (Some("down"), Some("http_status"), Some(1)),
            "{r}"
        );
        let detail = r["detail"].as_str().unwrap_or_default();
        assert!(
            detail.contains("503") && detail.contains("600 s (Retry-After)"),
            "{detail}"
        );
    }
    assert_eq!(
        nginx.hits().with_status(503),
        2,
        "asked once a check: its own word confirms each down"
    );
    let back = &seen[2];
    assert_eq!(
        (
            back["verdict"].as_str(),
            back["changed"].as_bool(),
            back["previous_verdict"].as_str()
        ),
        (Some("up"), Some(true), Some("down")),
        "the check after the maintenance ended sees the site back: {back}"
    );
}

/// A whole shared server switched to maintenance (every virtual host's 503 with
/// `Retry-After: 600`): several hosts asking for a pause at once hold the IP, and the
/// next round of checks of every site on it waited in the delay queue for ten minutes.
/// Each check is answered in time, and each site asked once a check.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shared_server_in_maintenance_answers_every_round_of_checks_in_time() {
    let AskingAPause {
        names,
        nginx,
        s,
        client,
        worker,
    } = asking_a_pause("127.0.57.8", "county", 4, Nginx::maintenance).await;
    for round in 1..=2 {
        for (i, name) in names.iter().enumerate() {
            let url = format!("http://{name}:{}/", nginx.port);
            client
                .job(&s, json!({"id": format!("county-{round}-{i}"), "url": url}))
                .await;
        }
        let rs = client
            .results(&s, names.len(), Duration::from_secs(20))
            .await;
        for r in &rs {
            assert_eq!(
                (r["verdict"].as_str(), r["reason"].as_str()),
                (Some("down"), Some("http_status")),
                "round {round}: {r}"
            );
        }
    }
    worker.shutdown().await;
    assert_eq!(nginx.hits().with_status(503), 2 * names.len());
}

/// Checks every host of `names` (on `nginx`'s port) at once through one in-process
/// engine at 2 requests a second (burst 2, 2 in flight), as `picket check` does.
async fn check_all_at_once(
    names: &[String],
    nginx: &Nginx,
    static_toml: &str,
) -> Vec<picket::job::Report> {
    check_all_at_once_with(&polite_engine(static_toml), names, nginx).await
}

/// An in-process engine at 2 requests a second (burst 2, 2 in flight) to `static_toml`'s names.
fn polite_engine(static_toml: &str) -> picket::engine::Engine {
    crate::support::picket::engine_from_toml(&format!(
        "[probe]\nretry_delay = \"50ms\"\ntimeout = \"5s\"\n\
         [rate_limit.per_ip]\nrate = 2.0\nburst = 2\nmax_inflight = 2\n\
         [targets]\nallow_private = true\n{static_toml}"
    ))
}

/// Each report as one line, "url verdict/reason: detail", for an assertion's message.
pub(crate) fn each_said(reports: &[picket::job::Report]) -> Vec<String> {
    reports
        .iter()
        .map(|r| {
            format!(
                "{} {}/{}: {}",
                r.url,
                r.verdict.as_str(),
                r.reason,
                r.detail
            )
        })
        .collect()
}

/// Checks every host of `names` at once through `engine`.
async fn check_all_at_once_with(
    engine: &picket::engine::Engine,
    names: &[String],
    nginx: &Nginx,
) -> Vec<picket::job::Report> {
    let jobs: Vec<_> = names
        .iter()
        .map(|name| {
            picket::job::job_for_url(&format!("http://{name}:{}/", nginx.port), name).expect("job")
        })
        .collect();
    futures_util::future::join_all(jobs.iter().map(|job| engine.run(job))).await
}

/// A shared server's limit that refuses a client after a burst with a 503 asking for a
/// pause (`Retry-After: 30`, longer than a confirmation may wait): its neighbours refuse
/// at once too, so it refuses *us*. The first of them was taken for a site in
/// maintenance, whose own word confirms its `down` (found by a hunt: 7 of 12 sites
/// `down` on one IP), and the IP was held 15 s, not the 120 s asked.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_asking_a_pause_right_after_a_burst_refuses_us_and_no_site_is_down() {
    let ip = "127.0.76.5";
    let (names, static_toml) = hosts("paused-limit", 8, ip);
    // Two a minute after the burst: a 503 asks for 30 s.
    let nginx = Nginx::limiting_with_a_pause(ip, &names, 3, 2);
    let reports = check_all_at_once(&names, &nginx, &static_toml).await;
    let said = each_said(&reports);
    assert!(
        reports
            .iter()
            .filter(|r| r.verdict == picket::job::Verdict::Up)
            .count()
            >= 4,
        "the burst's four are up, and any asked once the pause ended: {said:#?}"
    );
    assert!(
        reports
            .iter()
            .all(|r| r.verdict != picket::job::Verdict::Down),
        "a limit refusing us is no site down: {said:#?}"
    );
    let refused = nginx.hits().with_status(503);
    assert!(
        refused <= 3,
        "the pause it asked for is kept: {refused} refused requests: {said:#?}"
    );
}

/// One site of a shared server in maintenance (503, `Retry-After: 600`) while its
/// neighbours answer: its own word confirms its `down`, even right after a burst of
/// answers from the IP, since the IP goes on answering the others; and nothing is held,
/// so its next check asks it again (the first version held it for the pause while it
/// waited for the IP's answers, and the next check was `unknown`, "not asked").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_site_in_maintenance_beside_working_neighbours_is_down_by_its_own_word() {
    let ip = "127.0.76.6";
    let (names, static_toml) = hosts("one-paused", 7, ip);
    let paused = vec![names[3].clone()];
    let nginx = Nginx::some_in_maintenance(ip, &names, &paused, 600);
    let engine = polite_engine(&static_toml);
    let mut reports = check_all_at_once_with(&engine, &names, &nginx).await;
    reports.extend(check_all_at_once_with(&engine, &paused, &nginx).await);
    for r in &reports {
        let expected = if r.url.contains(&paused[0]) {
            (picket::job::Verdict::Down, "http_status")
        } else {
            (picket::job::Verdict::Up, "ok")
        };
        assert_eq!(
            (r.verdict, r.reason.as_str()),
            expected,
            "{}: {}",
            r.url,
            r.detail
        );
    }
    assert_eq!(
        nginx.hits().with_status(503),
        2,
        "the paused site is asked once a check"
    );
}

/// A shared server whose PHP pools died (every vhost but two answers a bare 503, as
/// Apache's `proxy_fcgi` does for a pool that is gone) while one of its sites is in
/// maintenance (503, `Retry-After: 600`). The 503s from several hosts right after the IP
/// answered are first taken for a limit refusing us (the maintenance site's, asked
/// fourth, completes that storm); after one hold they are the sites' own failures.
/// Every failing site is `down`, and no `down` explains itself with "it refuses us, not
/// the site failing" (found by hunt Z1b: the maintenance site's detail said both "its
/// own word confirms it" and "it refuses us, not the site failing").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_pools_beside_a_site_in_maintenance_are_each_down_and_say_so_plainly() {
    let ip = "127.0.76.8";
    let (names, static_toml) = hosts("dead-pool", 8, ip);
    let paused = vec![names[3].clone()];
    let failing: Vec<String> = names[2..]
        .iter()
        .filter(|h| !paused.contains(h))
        .cloned()
        .collect();
    let nginx = Nginx::some_failing_some_paused(ip, &names, &failing, (&paused, 600));
    let engine = polite_engine(&static_toml);
    let reports = check_all_at_once_with(&engine, &names, &nginx).await;
    let said = each_said(&reports);
    for r in &reports {
        let broken = failing
            .iter()
            .chain(&paused)
            .any(|h| r.url.contains(h.as_str()));
        let expected = if broken {
            (picket::job::Verdict::Down, "http_status")
        } else {
            (picket::job::Verdict::Up, "ok")
        };
        assert_eq!((r.verdict, r.reason.as_str()), expected, "{said:#?}");
        assert!(
            !r.detail.contains("it refuses us"),
            "a down is not explained as a refusal of us: {said:#?}"
        );
    }
}

/// Hunt Z3 (A1-a): one application server behind several hosts of a shared IP hangs
/// (its workers all waiting on a database), while the IP answers its other hosts at
/// once. Each hanging site is `down/timeout`, as a visitor waiting for it finds. Before,
/// the first was `down` and the rest `unknown/blocked`, "requests left without an answer
/// (haproxy's silent-drop …): it refuses us": an answer held back on a connection the
/// server keeps open (TCP keepalive answered) is no silent-drop, which leaves nothing
/// behind to answer, and asked again after a hold it still hangs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_hanging_behind_hosts_of_a_shared_ip_is_each_sites_down() {
    let ip = "127.0.76.9";
    let backend = hung_backend("127.0.76.10").await;
    let (names, static_toml) = hosts("hung-backend", 5, ip);
    let hanging = names[2..].to_vec();
    let nginx = Nginx::some_hanging(ip, &names, &hanging, &backend.to_string());
    let engine = crate::support::picket::engine_from_toml(&format!(
        "[probe]\nretry_delay = \"50ms\"\ntimeout = \"6s\"\n\
         [rate_limit]\nbackoff = \"3s\"\n\
         [rate_limit.per_ip]\nrate = 2.0\nburst = 2\nmax_inflight = 4\n\
         [targets]\nallow_private = true\n{static_toml}"
    ));
    let reports = check_all_at_once_with(&engine, &names, &nginx).await;
    let said = each_said(&reports);
    for r in &reports {
        let expected = if hanging.iter().any(|h| r.url.contains(h.as_str())) {
            (picket::job::Verdict::Down, "timeout")
        } else {
            (picket::job::Verdict::Up, "ok")
        };
        assert_eq!((r.verdict, r.reason.as_str()), expected, "{said:#?}");
        assert!(!r.detail.contains("refuses us"), "{said:#?}");
    }
}

/// Hunt Z4 (F7): two sites of a shared nginx answer its plain 403 (an index deleted, a
/// file's permissions lost) among healthy neighbours, check after check. The first
/// sight is a storm of 403s right after answers (held once, `unknown`); after the hold
/// the same two refuse again while their neighbours answer, which holds nothing again.
/// They stay `unknown/blocked` for the
/// hour a ban of our address on those sites alone might last (review AB: a per-site
/// ModSecurity ban looks the same), and are the sites' failure after it
/// (`limit::standing::tests::a_broken_pair_checked_a_minute_apart_is_the_sites_after_the_hour_and_holds_once`,
/// `limiter::a_broken_pair_checked_minutes_apart_is_the_sites_after_the_hour_for_every_worker`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_sites_beside_answering_neighbours_are_never_up_nor_hold_the_ip_again() {
    let ip = "127.0.76.11";
    let (names, static_toml) = hosts("forbidden-pair", 5, ip);
    let broken = names[3..].to_vec();
    let nginx = Nginx::some_failing(ip, &names, &broken, 403);
    let engine = crate::support::picket::engine_from_toml(&format!(
        "[probe]\nretry_delay = \"50ms\"\ntimeout = \"5s\"\n\
         [rate_limit]\nbackoff = \"2s\"\n\
         [rate_limit.per_ip]\nrate = 4.0\nburst = 4\nmax_inflight = 4\n\
         [targets]\nallow_private = true\n{static_toml}"
    ));
    let url = |h: &String| format!("http://{h}:{}/", nginx.port);
    for round in 0..4 {
        // The neighbours first, then the two broken sites at once.
        for h in &names[..3] {
            let r = crate::support::picket::check(&engine, &url(h)).await;
            assert_eq!(r.verdict.as_str(), "up", "round {round}: {}", r.detail);
        }
        let jobs: Vec<_> = broken
            .iter()
            .map(|h| picket::job::job_for_url(&url(h), h).expect("job"))
            .collect();
        let reports = futures_util::future::join_all(jobs.iter().map(|j| engine.run(j))).await;
        let said = each_said(&reports);
        eprintln!("round {round}: {said:#?}");
        for r in &reports {
            assert_eq!(
                (r.verdict.as_str(), r.reason.as_str()),
                ("unknown", "blocked"),
                "round {round}: {said:#?}"
            );
            if round > 0 {
                assert!(
                    r.detail.contains("not held again"),
                    "round {round}: {said:#?}"
                );
            }
        }
        if round < 3 {
            // The next check, a refusal window later.
            tokio::time::sleep(Duration::from_millis(10_200)).await;
        }
    }
}

/// An application server on `ip` that takes connections and never answers; the
/// connections are held for as long as the test runs.
async fn hung_backend(ip: &str) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind((ip, 0))
        .await
        .expect("bind the backend");
    let addr = listener.local_addr().expect("backend address");
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((conn, _)) = listener.accept().await {
            held.push(conn);
        }
    });
    addr
}

/// `picket check` of two pages of a host on `ip` that answers 429 with
/// `Retry-After: retry_after`: both are `unknown/blocked`, the host is asked once, and
/// the command ends within `within`. Returns how long it took.
async fn check_two_pages_of_a_pausing_host(
    ip: &str,
    name: &str,
    retry_after: u32,
    within: Duration,
) -> Duration {
    let (names, static_toml) = hosts(name, 1, ip);
    let nginx = Nginx::throttling(ip, &names, retry_after);
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("check.toml");
    let toml = format!("[probe]\ntimeout = \"5s\"\n[targets]\nallow_private = true\n{static_toml}");
    std::fs::write(&config, toml).expect("config");
    let first = format!("http://{}:{}/", names[0], nginx.port);
    // The second page's request comes after the first's 429 (at the default rate).
    let second = format!("{first}news");
    let cmd = crate::support::picket::picket_command(&["check", &first, &second], &config);
    let started = Instant::now();
    let run = tokio::process::Command::from(cmd)
        .kill_on_drop(true)
        .stdout(std::process::Stdio::piped())
        .output();
    let out = tokio::time::timeout(within, run)
        .await
        .unwrap_or_else(|_| {
            panic!("picket check ends within {within:?}, not after the site's pause")
        })
        .expect("picket check ran");
    let took = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 2, "{text}");
    for line in text.lines() {
        let r: serde_json::Value = serde_json::from_str(line).expect("a result line");
        assert_eq!(
            (r["verdict"].as_str(), r["reason"].as_str()),
            (Some("unknown"), Some("blocked")),
            "{r}"
        );
    }
    assert_eq!(
        nginx.hits().with_status(429),
        1,
        "the paused host asked once"
    );
    took
}

/// `picket check` waits for our own per-IP limit as long as a list needs, but not for a
/// site's own pause longer than a probe may take: the second page of a host that asked
/// for a minute (429, `Retry-After: 60`) waited the minute out, and the command with it.
/// It is answered at once, with nothing sent, as a worker answers a pause longer than
/// its `max_wait`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picket_check_answers_a_pause_longer_than_a_probe_at_once() {
    let took =
        check_two_pages_of_a_pausing_host("127.0.57.13", "minute", 60, Duration::from_secs(45))
            .await;
    assert!(took < Duration::from_secs(20), "{took:?}");
}

/// The same in a worker, through the shared limiter: jobs of a host that booked their
/// slots before its 429 came (one every two seconds here) were each sent when their
/// slot came, pause or not. Each is now answered at once, with nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_asked_while_jobs_wait_for_their_slots_is_heeded_by_the_worker() {
    let ip = "127.0.57.12";
    let (names, static_toml) = hosts("booked", 1, ip);
    let nginx = Nginx::throttling(ip, &names, 600);
    let base = with_limits(&base_toml(), 0.5, 1, 4);
    let toml = format!("{base}\n[targets]\nallow_private = true\n{static_toml}");
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    let url = format!("http://{}:{}/", names[0], nginx.port);
    for n in 0..3 {
        let page = format!("{url}page{n}");
        client
            .job(&s, json!({"id": format!("booked-{n}"), "url": page}))
            .await;
    }
    let worker = Worker::start(&s);
    let rs = client.results(&s, 3, Duration::from_secs(30)).await;
    worker.shutdown().await;
    assert_eq!(rs.len(), 3, "{rs:?}");
    for r in &rs {
        assert_eq!(
            (r["verdict"].as_str(), r["reason"].as_str()),
            (Some("unknown"), Some("blocked")),
            "{r}"
        );
    }
    assert_eq!(
        nginx.hits().with_status(429),
        1,
        "the paused host asked once"
    );
}

/// `picket check` of two pages of a host that answers 429 with `Retry-After: 600`: the
/// second request had booked its slot (1.25 s after the first, at the default rate)
/// before the 429 came, and was sent when the slot came, pause or not: the host was
/// asked twice. A hold that begins while a request waits for its slot now stands: the
/// second page is answered at once, with nothing sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_asked_while_a_request_waits_for_its_slot_is_heeded_by_picket_check() {
    let took =
        check_two_pages_of_a_pausing_host("127.0.57.11", "paused", 600, Duration::from_secs(60))
            .await;
    assert!(took < Duration::from_secs(30), "took {took:?}");
}

/// A site throttling us (429 with `Retry-After: 600`) is `unknown/blocked`, and a check
/// of it while the pause it asked for lasts is answered at once, with nothing sent: the
/// job used to be deferred through the delay queue for the ten minutes, and every check
/// in between piled up behind it, to be told the same 429 when the pause ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_of_a_site_throttling_us_is_answered_at_once_and_sends_nothing() {
    let AskingAPause {
        names,
        nginx,
        s,
        client,
        worker,
    } = asking_a_pause("127.0.57.10", "throttled", 1, Nginx::throttling).await;
    let url = format!("http://{}:{}/", names[0], nginx.port);
    let mut seen = Vec::new();
    for check in 1..=2 {
        client
            .job(&s, json!({"id": format!("throttled-{check}"), "url": url}))
            .await;
        let rs = client.results(&s, 1, Duration::from_secs(20)).await;
        assert_eq!(rs.len(), 1, "check {check} answered within 20 s: {rs:?}");
        seen.push(rs[0].clone());
    }
    worker.shutdown().await;
    for r in &seen {
        assert_eq!(
            (r["verdict"].as_str(), r["reason"].as_str()),
            (Some("unknown"), Some("blocked")),
            "{r}"
        );
    }
    let detail = seen[1]["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("Retry-After") && detail.contains("not asked"),
        "{detail}"
    );
    assert_eq!(
        nginx.hits().with_status(429),
        1,
        "asked once: the second check waits for the pause it asked for"
    );
}

/// Stops `child` (SIGSTOP) once `rec` has seen `after` requests, for `stall`, then lets
/// it go on (SIGCONT): a paused VM, a container throttled by its CPU quota, a host
/// swapping. Waits until `rec` has seen `n` requests in all.
async fn stall_after(
    child: &tokio::process::Child,
    rec: &Recorder,
    (after, n): (usize, usize),
    stall: Duration,
) {
    let pid = child.id().expect("a running process").to_string();
    let seen = || rec.arrivals.lock().expect("lock").len();
    let t = Instant::now();
    while seen() < after {
        assert!(t.elapsed() < Duration::from_secs(30), "{} requests", seen());
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let signal = |s: &str| {
        let ok = std::process::Command::new("kill")
            .args([s, &pid])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill {s} {pid}");
    };
    signal("-STOP");
    tokio::time::sleep(stall).await;
    signal("-CONT");
    while seen() < n {
        assert!(t.elapsed() < Duration::from_secs(60), "{} of {n}", seen());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Asserts that `rec`'s arrivals kept to `burst + rate·T` (50 ms of jitter allowed).
fn assert_no_burst_after_the_stall(rec: &Recorder, rate: f64, burst: u32) {
    let arrivals = rec.arrivals.lock().expect("lock").clone();
    for t in [1.0, 2.0] {
        let seen = max_in_window(&arrivals, Duration::from_secs_f64(t));
        let bound = (f64::from(burst) + rate * (t + 0.05)).floor() as usize;
        eprintln!("window {t} s: at most {seen} requests (bound {bound})");
        assert!(seen <= bound, "{seen} requests within {t} s, bound {bound}");
    }
}

/// A worker process stopped for 1.5 s while its requests to one IP slept on their
/// booked slots: when it went on, every slot that had passed meanwhile was sent at
/// once, beside the slots that came next, a burst the IP's limit never allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_stopped_while_its_requests_wait_for_their_slots_sends_no_burst_when_it_goes_on() {
    let (rate, burst, n) = (4.0, 2u32, 32);
    let ip = "127.0.9.27";
    let (port, rec) = recording_target(ip, Duration::from_millis(20), None).await;
    let (names, static_toml) = hosts("stalled", 1, ip);
    let base = with_limits(&base_toml(), rate, burst, 4);
    let toml = format!("{base}\n[targets]\nallow_private = true\n{static_toml}");
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    for i in 0..n {
        let url = format!("http://{}:{port}/?n={i}", names[0]);
        client
            .job(&s, json!({"id": format!("stalled-{i}"), "url": url}))
            .await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("worker.toml");
    std::fs::write(&path, &toml).expect("write config");
    let mut worker =
        tokio::process::Command::from(crate::support::picket::picket_command(&["worker"], &path))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start worker");
    stall_after(&worker, &rec, (6, n), Duration::from_millis(1500)).await;
    let rs = client.results(&s, n, Duration::from_secs(30)).await;
    let metrics = crate::support::ops::get_ops(s.http.listen, "/metrics").await;
    let _ = worker.start_kill();
    let _ = worker.wait().await;
    assert_eq!(rs.len(), n, "every job answered");
    assert!(rs.iter().all(|r| r["verdict"] == "up"), "{rs:?}");
    assert_no_burst_after_the_stall(&rec, rate, burst);
    let (_, text) = metrics.expect("the worker's /metrics");
    let missed = crate::support::ops::metric(&text, "picket_limiter_slots_missed_total");
    assert!(missed.is_some_and(|m| m >= 1.0), "slots missed: {missed:?}");
}

/// The same in `picket check`, whose limiter is its own (in memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn picket_check_stopped_while_its_requests_wait_for_their_slots_sends_no_burst_when_it_goes_on(
) {
    let (rate, burst, n) = (4.0, 2u32, 32);
    let ip = "127.0.9.28";
    let (port, rec) = recording_target(ip, Duration::from_millis(20), None).await;
    let (names, static_toml) = hosts("stalled", 1, ip);
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("check.toml");
    let toml = format!(
        "[probe]\ntimeout = \"5s\"\n[rate_limit.per_ip]\nrate = {rate}\nburst = {burst}\n\
         max_inflight = 4\n[targets]\nallow_private = true\n{static_toml}"
    );
    std::fs::write(&config, toml).expect("config");
    let urls: Vec<String> = (0..n)
        .map(|i| format!("http://{}:{port}/?n={i}", names[0]))
        .collect();
    let mut args = vec!["check"];
    args.extend(urls.iter().map(String::as_str));
    let mut check =
        tokio::process::Command::from(crate::support::picket::picket_command(&args, &config))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start picket check");
    stall_after(&check, &rec, (6, n), Duration::from_millis(1500)).await;
    let status = tokio::time::timeout(Duration::from_secs(30), check.wait())
        .await
        .expect("picket check ends")
        .expect("picket check ran");
    assert!(status.success(), "{status}");
    assert_no_burst_after_the_stall(&rec, rate, burst);
}

/// A deferred job's `timing_ms.queue` said only what its last run waited for its IP
/// (at most `max_wait`), though it had waited its turn in a delay queue too: 4 jobs of
/// one IP at 1/s, `max_wait` 300 ms, the last answered 3 s after the first. It counts
/// from the job's first deferral now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deferred_jobs_queue_time_counts_its_time_in_the_delay_queue() {
    let (port, _rec) = recording_target("127.0.9.29", Duration::from_millis(10), None).await;
    let (names, static_toml) = hosts("queued", 4, "127.0.9.29");
    let base = with_limits(&base_toml(), 1.0, 1, 4);
    let toml = format!("{base}\n[targets]\nallow_private = true\n{static_toml}").replace(
        "[worker]\n",
        "[rate_limit]\nmax_wait = \"300ms\"\n[worker]\n",
    );
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    let published = Instant::now();
    for (i, host) in names.iter().enumerate() {
        let url = format!("http://{host}:{port}/");
        client
            .job(&s, json!({"id": format!("q{i}"), "url": url}))
            .await;
    }
    let worker = Worker::start(&s);
    let rs = client
        .results(&s, names.len(), Duration::from_secs(30))
        .await;
    let lived = published.elapsed().as_millis() as u64;
    worker.shutdown().await;
    assert!(rs.iter().all(|r| r["verdict"] == "up"), "{rs:?}");
    let queued: Vec<u64> = rs
        .iter()
        .map(|r| r["timing_ms"]["queue"].as_u64().unwrap_or(0))
        .collect();
    eprintln!("timing_ms.queue: {queued:?} (all answered within {lived} ms)");
    let most = queued.iter().max().copied().unwrap_or(0);
    assert!(most >= 1500, "the last job waited its turn: {queued:?}");
    assert!(
        most <= lived,
        "no job waited longer than it lived: {queued:?}"
    );
}

/// A worker frozen (SIGSTOP) past its broker heartbeat while it probes, as a paused VM
/// is, and then let go on beside a second worker that took its jobs over: every job
/// is answered, none of a working site is called down, and the frozen worker's
/// answers, late by the freeze, tell no change of state.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_frozen_past_its_heartbeat_loses_no_job_and_calls_no_site_down() {
    let n = 30;
    let ip = "127.0.9.30";
    let (port, rec) = recording_target(ip, Duration::from_millis(400), None).await;
    let (names, static_toml) = hosts("frozen", n, ip);
    let toml = format!(
        "{}\n[targets]\nallow_private = true\n{static_toml}",
        base_toml()
    )
    .replace("[amqp]\n", "[amqp]\nheartbeat = \"2s\"\nprefetch = 30\n");
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    for (i, host) in names.iter().enumerate() {
        let url = format!("http://{host}:{port}/");
        client
            .job(&s, json!({"id": format!("f{i}"), "url": url}))
            .await;
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("worker.toml");
    std::fs::write(&path, &toml).expect("write config");
    let mut frozen =
        tokio::process::Command::from(crate::support::picket::picket_command(&["worker"], &path))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("start worker");
    let pid = frozen.id().expect("pid").to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status();
        assert!(ok.expect("kill").success(), "kill {sig} {pid}");
    };
    let t = Instant::now();
    while rec.arrivals.lock().expect("lock").len() < 3 {
        assert!(t.elapsed() < Duration::from_secs(20), "the worker probes");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal("-STOP");
    let mut other = s.clone();
    other.worker.name = "thawed-other".into();
    other.http.listen = format!("127.0.0.1:{}", crate::support::free_port())
        .parse()
        .expect("listen");
    let second = Worker::start(&other);
    tokio::time::sleep(Duration::from_secs(10)).await;
    signal("-CONT");
    let mut all = Vec::new();
    let mut ids = HashSet::new();
    while ids.len() < n {
        assert!(
            t.elapsed() < Duration::from_secs(90),
            "{} of {n}",
            ids.len()
        );
        for r in client.results(&s, 1, Duration::from_secs(60)).await {
            ids.insert(r["job_id"].as_str().unwrap_or_default().to_string());
            all.push(r);
        }
    }
    // The frozen worker's late answers, if any, come within a few seconds.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let left = client.depth(&s.amqp.results_queue).await as usize;
    all.extend(client.results(&s, left, Duration::from_secs(10)).await);
    second.shutdown().await;
    signal("-TERM");
    let _ = tokio::time::timeout(Duration::from_secs(20), frozen.wait()).await;
    for r in &all {
        eprintln!(
            "{} {} {}/{} changed={} {}",
            r["worker"], r["job_id"], r["verdict"], r["reason"], r["changed"], r["detail"]
        );
    }
    assert!(
        all.iter().all(|r| r["verdict"] != "down"),
        "a site called down"
    );
    assert!(
        all.iter().all(|r| r["changed"] != true),
        "a change told by late answers"
    );
    assert_eq!(client.depth(&s.amqp.jobs_queue).await, 0, "every job acked");
}
