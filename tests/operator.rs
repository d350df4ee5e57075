//! The operator's kit (issue 17): what `/metrics` exports (histograms with buckets,
//! build and process metrics, per-phase latencies), and that the artefacts shipped for
//! operators (dashboard, alert rules, manifests, schemas, examples) agree with the
//! worker they describe.
//!
//! Targets are our own servers on 127.0.17.x; every load is a handful of jobs.

use std::path::Path;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use serde_json::json;

use crate::support::ops::{get_ops, wait_readyz};
use crate::support::picket::{base_toml, page, Client};
use crate::support::serve;
use crate::support::worker_process::WorkerProcess;

// ---------------------------------------------------------------------------------------
// A worker process that has done some work, and its /metrics
// ---------------------------------------------------------------------------------------

/// What a worker process wrote: its `/metrics` after a few jobs (three to one target at
/// 2 requests/s with a burst of 1, so two of them wait for the limit; one refused job;
/// one refused connection), and its log lines.
struct Exercised {
    metrics: String,
    log: String,
    results: Vec<serde_json::Value>,
}

async fn exercised_worker(ip: &str, name: &str) -> Exercised {
    let router = Router::new().route("/", get(|| async { axum::response::Html(page("ok")) }));
    let addr = serve(ip, router).await;
    let toml = format!(
        "{}\n[targets]\nallow_private = true\n[log]\nformat = \"json\"\n",
        base_toml()
    );
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let worker = WorkerProcess::start(
        &toml,
        &[
            ("PICKET__WORKER__NAME", name.to_string()),
            ("PICKET__RATE_LIMIT__PER_IP__RATE", "2".into()),
            ("PICKET__RATE_LIMIT__PER_IP__BURST", "1".into()),
            ("PICKET__PROBE__ATTEMPTS", "1".into()),
        ],
    );
    wait_readyz(s.http.listen, 200, Duration::from_secs(30)).await;
    let client = Client::connect().await;
    for i in 0..3 {
        client
            .job(&s, json!({"url": format!("http://{addr}/?n={i}")}))
            .await;
    }
    client.job(&s, json!({"url": "ftp://x/"})).await;
    client
        .job(&s, json!({"url": "http://127.0.17.250:9/"}))
        .await;
    let results = client.results(&s, 5, Duration::from_secs(30)).await;
    let (_, metrics) = get_ops(s.http.listen, "/metrics")
        .await
        .expect("metrics answer");
    let log = worker.log_text();
    worker.terminate().await;
    Exercised {
        metrics,
        log,
        results,
    }
}

/// Metric families in Prometheus text, by `# TYPE` line: (name, type).
fn families(text: &str) -> Vec<(String, String)> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut parts = l.split_whitespace();
            Some((parts.next()?.to_string(), parts.next()?.to_string()))
        })
        .collect()
}

// ---------------------------------------------------------------------------------------
// 4. Metrics and logs
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_are_histograms_with_buckets_build_info_and_process_metrics() {
    let run = exercised_worker("127.0.17.1", "metrics-worker").await;
    let text = &run.metrics;
    let fams = families(text);
    let summaries: Vec<_> = fams.iter().filter(|(_, t)| t == "summary").collect();
    assert!(
        summaries.is_empty(),
        "summaries cannot be aggregated across workers: {summaries:?}\n{text}"
    );
    for name in [
        "picket_probe_duration_seconds",
        "picket_throttle_wait_seconds",
        "picket_phase_duration_seconds",
    ] {
        assert!(
            fams.iter().any(|(n, t)| n == name && t == "histogram"),
            "{name} is a histogram: {text}"
        );
        let buckets = text
            .lines()
            .filter(|l| l.starts_with(&format!("{name}_bucket{{")))
            .count();
        assert!(buckets >= 5, "{name} has its _bucket lines: {text}");
    }
    for phase in ["dns", "connect", "first_byte"] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("picket_phase_duration_seconds_count{")
                    && l.contains(&format!("phase=\"{phase}\""))),
            "phase {phase} recorded: {text}"
        );
    }
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        text.lines().any(|l| l.starts_with("picket_build_info{")
            && l.contains(&format!("version=\"{version}\""))
            && l.ends_with(" 1")),
        "picket_build_info{{version=\"{version}\"}} 1: {text}"
    );
    for name in [
        "process_cpu_seconds_total",
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(name)),
            "process metric {name}: {text}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_log_lines_carry_message_and_worker_at_the_top_level() {
    let run = exercised_worker("127.0.17.2", "log-worker").await;
    let lines: Vec<serde_json::Value> = run
        .log
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: not JSON: {l}")))
        .collect();
    assert!(!lines.is_empty(), "the worker logged something");
    for line in &lines {
        assert!(
            line["message"].is_string(),
            "message at the top level: {line}"
        );
        assert_eq!(
            line["worker"], "log-worker",
            "worker at the top level: {line}"
        );
        assert!(line["level"].is_string(), "{line}");
    }
    assert_eq!(run.results.len(), 5);
}

// ---------------------------------------------------------------------------------------
// 3. Dashboard and alert rules query only what /metrics exports
// ---------------------------------------------------------------------------------------

fn repo_file(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Every `picket_*` and `process_*` metric name in `text`, histogram series folded
/// into their family (`x_bucket` → `x`).
fn queried_metrics(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let bytes = text.as_bytes();
    let is_name = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_';
    let mut i = 0;
    while i < bytes.len() {
        let start_ok = i == 0 || !is_name(bytes[i - 1]);
        let rest = &text[i..];
        if start_ok && (rest.starts_with("picket_") || rest.starts_with("process_")) {
            let len = rest.bytes().take_while(|b| is_name(*b)).count();
            let name = &rest[..len];
            let family = ["_bucket", "_count", "_sum"]
                .iter()
                .find_map(|s| name.strip_suffix(s))
                .unwrap_or(name);
            out.insert(family.to_string());
            i += len;
        } else {
            i += 1;
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_and_alert_rules_query_only_metrics_the_worker_exports() {
    let run = exercised_worker("127.0.17.3", "dashboard-worker").await;
    let exported: std::collections::BTreeSet<String> =
        families(&run.metrics).into_iter().map(|(n, _)| n).collect();
    let dashboard = repo_file("deploy/grafana/picket-dashboard.json");
    let dash: serde_json::Value = serde_json::from_str(&dashboard).expect("dashboard is JSON");
    let exprs: Vec<String> = dash["panels"]
        .as_array()
        .expect("panels")
        .iter()
        .flat_map(|p| p["targets"].as_array().cloned().unwrap_or_default())
        .filter_map(|t| t["expr"].as_str().map(str::to_string))
        .collect();
    assert!(exprs.len() >= 10, "the dashboard has its queries");
    let rules = repo_file("deploy/prometheus/picket-alerts.yaml");
    for (what, text) in [("dashboard", exprs.join("\n")), ("alert rules", rules)] {
        let queried = queried_metrics(&text);
        assert!(
            queried.len() >= 5,
            "{what} query picket metrics: {queried:?}"
        );
        let missing: Vec<_> = queried.difference(&exported).collect();
        assert!(
            missing.is_empty(),
            "{what} query metrics that /metrics does not export: {missing:?}\nexported: {exported:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// 2. Kubernetes manifests
// ---------------------------------------------------------------------------------------

fn manifests() -> Vec<serde_json::Value> {
    use serde::Deserialize;
    let text = repo_file("deploy/kubernetes/picket.yaml");
    serde_norway::Deserializer::from_str(&text)
        .map(|doc| serde_json::Value::deserialize(doc).expect("manifest is YAML"))
        .collect()
}

fn kind<'a>(docs: &'a [serde_json::Value], kind: &str) -> &'a serde_json::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("a {kind} in deploy/kubernetes/picket.yaml"))
}

fn secs(v: &serde_json::Value) -> u64 {
    let text = v.as_str().expect("a duration string");
    humantime::parse_duration(text).expect("duration").as_secs()
}

#[test]
fn kubernetes_manifests_keep_their_invariants() {
    let docs = manifests();
    let deploy = kind(&docs, "Deployment");
    let pod = &deploy["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    let env = |name: &str| -> serde_json::Value {
        c["env"]
            .as_array()
            .expect("env")
            .iter()
            .find(|e| e["name"] == name)
            .map(|e| e["value"].clone())
            .unwrap_or_else(|| panic!("env {name}"))
    };
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(c["resources"]["requests"]["cpu"].is_string(), "{c}");
    assert!(c["resources"]["limits"]["memory"].is_string(), "{c}");
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("grace");
    let drain = secs(&env("PICKET__WORKER__SHUTDOWN_GRACE"));
    assert!(
        grace >= drain + 10,
        "termination grace {grace}s above the drain {drain}s"
    );
    assert_eq!(env("PICKET__HTTP__LISTEN"), "0.0.0.0:9464");
    let labels = &deploy["spec"]["template"]["metadata"]["labels"];
    for k in ["PodDisruptionBudget", "Service", "ServiceMonitor"] {
        let d = kind(&docs, k);
        let sel = if k == "Service" {
            &d["spec"]["selector"]
        } else {
            &d["spec"]["selector"]["matchLabels"]
        };
        assert_eq!(sel, labels, "{k} selects the worker pods");
    }
    assert_eq!(
        kind(&docs, "ServiceMonitor")["spec"]["endpoints"][0]["path"],
        "/metrics"
    );
    let scaled = kind(&docs, "ScaledObject");
    let trigger = &scaled["spec"]["triggers"][0];
    assert_eq!(trigger["type"], "rabbitmq");
    assert_eq!(trigger["metadata"]["queueName"], "picket.jobs");
    assert_eq!(trigger["metadata"]["mode"], "QueueLength");
    assert_eq!(
        trigger["metadata"]["value"],
        env("PICKET__PROBE__CONCURRENCY"),
        "queue length per replica = probe.concurrency"
    );
    assert_eq!(
        scaled["spec"]["scaleTargetRef"]["name"],
        deploy["metadata"]["name"]
    );
}

/// A worker whose Redis is away at start, with no jobs coming, said nothing of it: no log
/// line, and `picket_redis_connected` missing from `/metrics` until something called
/// `/readyz` or a job ran, so the shipped alert on it had nothing to fire on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_redis_is_away_says_so_while_idle() {
    let redis = crate::support::servers().redis_url.clone();
    // Port 1 on loopback: nothing listens there.
    let toml = format!("{}\n[log]\nformat = \"json\"\n", base_toml()).replace(
        &format!("url = \"{redis}\""),
        "url = \"redis://127.0.0.1:1/0\"",
    );
    assert!(toml.contains("127.0.0.1:1/0"), "{toml}");
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let worker = WorkerProcess::plain(&toml);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let gauge = loop {
        if let Some((_, text)) = get_ops(s.http.listen, "/metrics").await {
            let line = text
                .lines()
                .find(|l| l.starts_with("picket_redis_connected"))
                .map(str::to_string);
            if let Some(l) = line.filter(|_| worker.log_text().contains("redis")) {
                break l;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "nothing said of Redis in 15 s:\n{}",
            worker.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let log = worker.log_text();
    worker.terminate().await;
    assert!(gauge.ends_with(" 0"), "{gauge}");
    assert!(
        log.lines()
            .any(|l| l.contains("WARN") && l.contains("redis") && l.contains("127.0.0.1:1")),
        "{log}"
    );
}

/// Hunt 96: a user's connection limit (`set_user_limits … max-connections`) set to the
/// number of workers lets one worker's second connection, its replies', keep another
/// worker out; the broker's words (`user connection limit (2) is reached`) do not say
/// that each worker opens two. The worker says so, and what to set.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_refused_for_a_connection_limit_says_each_worker_opens_two() {
    let rabbit = tokio::task::spawn_blocking(crate::support::RabbitServer::launch)
        .await
        .expect("join")
        .expect("private RabbitMQ");
    rabbit
        .ctl(&["set_user_limits", "guest", r#"{"max-connections": 0}"#])
        .expect("a limit");
    let toml = base_toml().replace(&crate::support::servers().amqp_url, rabbit.url());
    let worker = WorkerProcess::plain(&toml);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !worker.log_text().contains("connection limit") {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no word of the limit in 30 s:\n{}",
            worker.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = worker.log_text();
    worker.terminate().await;
    let refused = log
        .lines()
        .find(|l| l.contains("connection limit"))
        .unwrap_or_default();
    assert!(
        refused.contains("two connections") && refused.contains("set_user_limits"),
        "{refused}"
    );
}

/// Hunt 96: an operator deleting the jobs queue under a running worker (a clean-up, a
/// queue moved to quorum by hand) has the broker cancel the worker's consumer. The
/// worker said only "consumer ended; reconnecting": nothing named the queue or what
/// ended it. It says the broker cancelled its consumer of that queue, and why that
/// happens, and consumes again from the queue it declares anew.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_jobs_queue_deleted_under_a_worker_is_named_and_consumed_again() {
    let site = serve(
        "127.0.12.106",
        Router::new().route(
            "/",
            get(|| async { axum::response::Html(page("<p>deleted queue</p>")) }),
        ),
    )
    .await;
    let toml = format!("{}\n[targets]\nallow_private = true\n", base_toml());
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let c = Client::connect().await;
    c.declare(&s).await;
    let worker = WorkerProcess::plain(&toml);
    let consuming = |w: &WorkerProcess| w.log_text().matches("\"consuming\"").count();
    wait_for_log(&worker, "consuming once", |w| consuming(w) >= 1).await;
    c.ch.queue_delete(
        s.amqp.jobs_queue.as_str().into(),
        lapin::options::QueueDeleteOptions::default(),
    )
    .await
    .expect("delete the jobs queue");
    wait_for_log(&worker, "consuming again", |w| consuming(w) >= 2).await;
    let log = worker.log_text();
    let ended = log
        .lines()
        .find(|l| l.contains("cancelled"))
        .unwrap_or_else(|| panic!("no word of the cancel:\n{log}"));
    assert!(
        ended.contains(&s.amqp.jobs_queue) && ended.contains("deleted"),
        "{ended}"
    );
    c.job(&s, json!({"url": format!("http://{site}/")})).await;
    let r = c.results(&s, 1, Duration::from_secs(30)).await.remove(0);
    assert_eq!(r["verdict"], "up", "{r}");
    worker.terminate().await;
}

/// Waits up to 30 s for `done` to hold of `worker`'s log.
async fn wait_for_log(worker: &WorkerProcess, what: &str, done: impl Fn(&WorkerProcess) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !done(worker) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not in 30 s:\n{}",
            worker.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
