//! The commands as a person uses them, run as the real `picket` binary against the
//! shared RabbitMQ: `results` that takes nothing from anyone (and `--drain` that acks
//! only what it wrote), `enqueue` streaming big inputs and saying where to resume,
//! `check` on a pseudo-terminal, `config show` naming each value's source.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::BasicProperties;
use picket::config::Settings;
use picket::job::{Report, Verdict};

use crate::support::picket::{base_toml, engine_from_toml, picket_command, run_with_stdin, Client};
use crate::support::{free_port, serve, unique};

/// A test's configuration file (on the shared servers, names of its own) and settings.
struct Setup {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    settings: Settings,
}

fn setup(extra: &str) -> Setup {
    // base_toml names a changes exchange of the test's own.
    let text = format!("{}{extra}", base_toml());
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("picket.toml");
    std::fs::write(&path, &text).expect("write config");
    let settings = Settings::from_toml(&text).expect("settings");
    Setup {
        dir,
        path,
        settings,
    }
}

fn picket(args: &[&str], cfg: &Setup) -> Command {
    picket_command(args, &cfg.path)
}

/// A site on `ip` answering every path with a real page holding `body`.
async fn site(ip: &str, body: &str) -> std::net::SocketAddr {
    let page = crate::support::picket::page(body);
    let router = axum::Router::new().fallback(move || {
        let page = page.clone();
        async move { axum::response::Html(page) }
    });
    serve(ip, router).await
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A real result (from the engine: a refused target), with the verdict and URL given.
async fn report(verdict: Verdict, url: &str) -> Report {
    let engine = engine_from_toml("");
    let job = picket::job::job_for_url("http://127.0.0.1:1/", "results-test").expect("job");
    let mut r = engine.run(&job).await;
    r.verdict = verdict;
    r.url = url.to_string();
    r.job_id = unique("job");
    r
}

async fn publish_results(client: &Client, s: &Settings, reports: &[Report]) {
    client.declare(s).await;
    for r in reports {
        let c = client
            .ch
            .basic_publish(
                s.amqp.results_exchange.as_str().into(),
                r.verdict.as_str().into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(r).expect("json"),
                BasicProperties::default().with_delivery_mode(2),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(c.is_ack());
    }
}

/// Results a `picket results` run should have left alone.
async fn job_ids_on_queue(client: &Client, s: &Settings) -> Vec<(String, bool)> {
    let mut out = Vec::new();
    while let Some(m) = client
        .ch
        .basic_get(
            s.amqp.results_queue.as_str().into(),
            BasicGetOptions { no_ack: true },
        )
        .await
        .expect("get")
    {
        let r: Report = serde_json::from_slice(&m.delivery.data).expect("report");
        out.push((r.job_id, m.delivery.redelivered));
    }
    out
}

#[test]
fn a_refused_private_target_names_the_setting_that_allows_it() {
    let engine = engine_from_toml("");
    let job = picket::job::job_for_url("http://127.0.0.1:1/", "private").expect("job");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let r = rt.block_on(engine.run(&job));
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Invalid, "blocked_target")
    );
    assert!(
        r.detail.contains("targets.allow_private = true"),
        "the detail should say which setting allows it: {}",
        r.detail
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_drain_into_a_full_disk_acks_nothing_and_fails() {
    let cfg = setup("");
    let s = &cfg.settings;
    let client = Client::connect().await;
    let mut reports = Vec::new();
    for i in 0..3 {
        reports.push(report(Verdict::Up, &format!("http://a{i}.example/")).await);
    }
    publish_results(&client, s, &reports).await;
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .expect("/dev/full");
    let out = picket(&["results", "--drain"], &cfg)
        .stdout(full)
        .output()
        .expect("run picket results");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cannot write"),
        "{}",
        text(&out.stderr)
    );
    let left = job_ids_on_queue(&client, s).await;
    assert_eq!(
        left.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        reports.iter().map(|r| r.job_id.clone()).collect::<Vec<_>>(),
        "every result is still on the queue, in order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_leaves_the_queue_untouched_for_another_subscriber() {
    let cfg = setup("");
    let s = &cfg.settings;
    let client = Client::connect().await;
    let mut reports = Vec::new();
    for (i, v) in [Verdict::Up, Verdict::Down, Verdict::Up]
        .into_iter()
        .enumerate()
    {
        reports.push(report(v, &format!("http://site{i}.example/")).await);
    }
    publish_results(&client, s, &reports).await;
    let out = picket(&["results", "--json"], &cfg).output().expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let printed: Vec<String> = text(&out.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Report>(l)
                .expect("a result line")
                .job_id
        })
        .collect();
    let ids: Vec<String> = reports.iter().map(|r| r.job_id.clone()).collect();
    assert_eq!(printed, ids, "every waiting result printed, in order");
    // Filters and limits read without taking too.
    let out = picket(&["results", "--json", "--verdict", "down"], &cfg)
        .output()
        .expect("run");
    assert_eq!(
        text(&out.stdout).lines().count(),
        1,
        "{}",
        text(&out.stdout)
    );
    assert!(text(&out.stdout).contains(&ids[1]));
    let out = picket(&["results", "--json", "--limit", "2"], &cfg)
        .output()
        .expect("run");
    assert_eq!(text(&out.stdout).lines().count(), 2);
    // Another subscriber still gets all of them, in order, marked redelivered.
    let left = job_ids_on_queue(&client, s).await;
    assert_eq!(
        left.iter().map(|(id, _)| id.clone()).collect::<Vec<_>>(),
        ids
    );
    assert!(left.iter().all(|(_, redelivered)| *redelivered), "{left:?}");
}

/// Hunt U: with `amqp.queue_type = "quorum"` the results queue is a quorum queue, and a
/// peek there is no look: the results it handed back came after the others (qr3, qr4,
/// qr1, qr2) and each counted a delivery (a quorum queue's delivery limit, 20 by default
/// from RabbitMQ 4, drops them). COMMANDS said "picket declares its results queue
/// classic". The peek says what it does to such a queue, and how to read it instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_peek_on_a_quorum_queue_says_what_it_does_to_it() {
    let toml = base_toml().replacen("[amqp]\n", "[amqp]\nqueue_type = \"quorum\"\n", 1);
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("picket.toml");
    std::fs::write(&path, &toml).expect("write config");
    let settings = Settings::from_toml(&toml).expect("settings");
    let cfg = Setup {
        dir,
        path,
        settings,
    };
    let client = Client::connect().await;
    let reports = vec![
        report(Verdict::Up, "http://q1.example/").await,
        report(Verdict::Down, "http://q2.example/").await,
    ];
    publish_results(&client, &cfg.settings, &reports).await;
    let out = picket(&["results", "--json", "--limit", "1"], &cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 1);
    let said = text(&out.stderr);
    assert!(
        said.contains("quorum") && said.contains("--drain") && said.contains("--follow"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_drain_takes_what_it_printed() {
    let cfg = setup("");
    let s = &cfg.settings;
    let client = Client::connect().await;
    let mut reports = Vec::new();
    for i in 0..3 {
        reports.push(report(Verdict::Down, &format!("http://d{i}.example/")).await);
    }
    publish_results(&client, s, &reports).await;
    let out = picket(&["results", "--drain", "--limit", "2", "--json"], &cfg)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).lines().count(), 2);
    let left = job_ids_on_queue(&client, s).await;
    assert_eq!(left.len(), 1, "two taken, one left: {left:?}");
    assert_eq!(left[0].0, reports[2].job_id);
    let bad = picket(&["results", "--drain", "--verdict", "down"], &cfg)
        .output()
        .expect("run");
    assert_eq!(bad.status.code(), Some(2), "a drain does not filter");
}

/// Runs `picket results --follow ARGS --limit 1 --json` and publishes with `publish`
/// (again and again: the private queue exists only once picket bound it) until it exits.
async fn follow_one<F, Fut>(cfg: &Setup, args: &[&str], mut publish: F) -> String
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let mut all = vec!["results", "--follow", "--limit", "1", "--json"];
    all.extend_from_slice(args);
    let mut child = tokio::process::Command::from(picket(&all, cfg))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        publish().await;
        match tokio::time::timeout(Duration::from_millis(300), child.wait()).await {
            Ok(status) => {
                use tokio::io::AsyncReadExt;
                let status = status.expect("wait");
                let (mut out, mut err) = (String::new(), String::new());
                if let Some(mut o) = child.stdout.take() {
                    o.read_to_string(&mut out).await.expect("read");
                }
                if let Some(mut e) = child.stderr.take() {
                    e.read_to_string(&mut err).await.expect("read");
                }
                assert!(
                    status.success(),
                    "picket results --follow failed: {out}{err}"
                );
                assert!(
                    !err.contains("did not exist"),
                    "the exchange existed: {err}"
                );
                return out;
            }
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => panic!("picket results --follow printed nothing matching in 20 s"),
        }
    }
}

/// `results --follow` on an exchange nobody had declared (a misspelt
/// `amqp.results_exchange`, or no worker run yet with this configuration) declared it
/// and waited in silence for results that would never come there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_follow_says_when_its_exchange_did_not_exist() {
    use tokio::io::AsyncBufReadExt;
    let cfg = setup("");
    let mut child = tokio::process::Command::from(picket(&["results", "--follow", "--json"], &cfg))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stderr = child.stderr.take().expect("stderr");
    let mut lines = tokio::io::BufReader::new(stderr).lines();
    let said = tokio::time::timeout(Duration::from_secs(15), lines.next_line())
        .await
        .expect("picket results --follow said nothing in 15 s")
        .expect("read")
        .unwrap_or_default();
    let exchange = &cfg.settings.amqp.results_exchange;
    assert!(
        said.contains("did not exist") && said.contains(exchange.as_str()),
        "{said}"
    );
    child.kill().await.expect("kill");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_follow_binds_by_verdict_and_takes_nothing_from_the_queue() {
    let cfg = setup("");
    let s = cfg.settings.clone();
    let client = Client::connect().await;
    client.declare(&s).await;
    let up = report(Verdict::Up, "http://up.example/").await;
    let down = report(Verdict::Down, "http://down.example/").await;
    let sent = std::sync::atomic::AtomicUsize::new(0);
    let (c, st, u, d, n) = (&client, &s, &up, &down, &sent);
    let out = follow_one(&cfg, &["--verdict", "down"], move || async move {
        n.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        publish_results(c, st, &[u.clone(), d.clone()]).await;
    })
    .await;
    let r: Report = serde_json::from_str(out.trim()).expect("one result");
    assert_eq!(r.verdict, Verdict::Down);
    let left = job_ids_on_queue(&client, &s).await;
    assert_eq!(
        left.len(),
        2 * sent.load(std::sync::atomic::Ordering::SeqCst),
        "the shared queue kept every result"
    );

    // --changes follows the changes exchange (routing key PREVIOUS.VERDICT).
    let changed = {
        let mut r = report(Verdict::Down, "http://changed.example/").await;
        r.changed = true;
        r.previous_verdict = Some(Verdict::Up);
        serde_json::to_vec(&r).expect("json")
    };
    client
        .ch
        .exchange_declare(
            s.amqp.changes_exchange.as_str().into(),
            lapin::ExchangeKind::Topic,
            lapin::options::ExchangeDeclareOptions {
                durable: true,
                ..Default::default()
            },
            Default::default(),
        )
        .await
        .expect("changes exchange");
    let changed = &changed;
    let out = follow_one(
        &cfg,
        &["--changes", "--verdict", "down"],
        move || async move {
            let c =
                c.ch.basic_publish(
                    st.amqp.changes_exchange.as_str().into(),
                    "up.down".into(),
                    BasicPublishOptions::default(),
                    changed,
                    BasicProperties::default(),
                )
                .await
                .expect("publish")
                .await
                .expect("confirm");
            assert!(c.is_ack());
        },
    )
    .await;
    assert!(out.contains("changed.example"), "{out}");
}

#[tokio::test]
async fn results_filtered_by_verdict_keep_a_reason_code_from_a_newer_worker() {
    // Reason codes may be added (CONTRACT.md). During a rolling upgrade a newer worker's
    // `down` with a code this build does not know must still pass `--verdict down`, not
    // vanish from an operator's filtered view.
    let cfg = setup("");
    let s = cfg.settings.clone();
    let client = Client::connect().await;
    client.declare(&s).await;
    let mut newer =
        serde_json::to_value(report(Verdict::Down, "http://newer.example/").await).expect("json");
    newer["reason"] = "a_code_from_a_newer_worker".into();
    newer["a_field_from_a_newer_worker"] = serde_json::json!({"n": 1});
    let body = serde_json::to_vec(&newer).expect("json");
    let (c, st, b) = (&client, &s, &body);
    let out = follow_one(&cfg, &["--verdict", "down"], move || async move {
        let confirm =
            c.ch.basic_publish(
                st.amqp.results_exchange.as_str().into(),
                "down".into(),
                BasicPublishOptions::default(),
                b,
                BasicProperties::default(),
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(confirm.is_ack());
    })
    .await;
    let printed: serde_json::Value = serde_json::from_str(out.trim()).expect("one JSON line");
    assert_eq!(printed["reason"], "a_code_from_a_newer_worker", "{out}");
    assert_eq!(printed["url"], "http://newer.example/", "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_checks_each_line_and_says_where_to_resume() {
    let cfg = setup("");
    let s = &cfg.settings;
    let client = Client::connect().await;
    client.declare(s).await;
    let input = "# three sites\nhttp://a.example/\n\n{\"url\": \"http://b.example/\"}\nftp://c.example/\nhttp://d.example/\n";
    let out = run_with_stdin(picket(&["enqueue", "-"], &cfg), input);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("line 5:"), "the bad line is named: {err}");
    assert!(err.contains("2 jobs confirmed (through line 4)"), "{err}");
    assert!(err.contains("--from-line 5"), "{err}");
    assert_eq!(
        client.depth(&s.amqp.jobs_queue).await,
        2,
        "nothing from line 5 on"
    );

    let out = run_with_stdin(picket(&["enqueue", "--from-line", "6", "-"], &cfg), input);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(client.depth(&s.amqp.jobs_queue).await, 3);

    let out = run_with_stdin(
        picket(
            &[
                "enqueue",
                "--skip-invalid",
                "--expect-status",
                "200,301",
                "--meta",
                "team=web",
                "-",
            ],
            &cfg,
        ),
        input,
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("line 5: skipped"), "{err}");
    assert!(
        err.contains("3 jobs confirmed") && err.contains("1 invalid lines skipped"),
        "{err}"
    );
    client.purge(&s.amqp.jobs_queue).await;

    let out = run_with_stdin(
        picket(
            &[
                "enqueue",
                "--body-contains",
                "欢迎",
                "--timeout",
                "9s",
                "--meta",
                "team=web",
                "-",
            ],
            &cfg,
        ),
        "http://e.example/\n",
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let jobs = client
        .take(&s.amqp.jobs_queue, 1, Duration::from_secs(5))
        .await;
    let job: serde_json::Value = serde_json::from_slice(&jobs[0].data).expect("job json");
    assert_eq!(
        job,
        serde_json::json!({"url": "http://e.example/", "expect": {"body_contains": "欢迎"},
                           "timeout_ms": 9000, "meta": {"team": "web"}})
    );
}

/// Hunt U: `--max-age 1500ms` sent `max_age_s: 1`, a half second dropped without a word:
/// the job field counts whole seconds.
#[test]
fn enqueue_refuses_a_max_age_that_is_not_whole_seconds() {
    let cfg = setup("");
    let out = run_with_stdin(
        picket(&["enqueue", "--max-age", "1500ms", "-"], &cfg),
        "http://a.example/\n",
    );
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(err.contains("whole seconds"), "{err}");
}
#[test]
fn enqueue_of_nothing_does_not_dial_the_broker_and_a_dead_broker_is_named() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("dead.toml");
    let port = crate::support::free_port();
    std::fs::write(
        &path,
        format!("[amqp]\nurl = \"amqp://guest:secret@127.0.0.1:{port}/%2f\"\nconnect_timeout = \"2s\"\n"),
    )
    .expect("config");
    let cmd = |args: &[&str]| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_picket"));
        c.args(args)
            .arg("--config")
            .arg(&path)
            .env_remove("PICKET_CONFIG");
        c
    };
    let out = run_with_stdin(cmd(&["enqueue"]), "# nothing but a comment\n\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("nothing to enqueue"),
        "{}",
        text(&out.stderr)
    );
    // Resuming just past the last line leaves nothing to do; a line further on is a
    // mistake (hunt N: it exited 0 as if all were queued).
    let out = run_with_stdin(cmd(&["enqueue", "--from-line", "2"]), "http://a.example/\n");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = run_with_stdin(cmd(&["enqueue", "--from-line", "5"]), "http://a.example/\n");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("--from-line 5") && err.contains("1 line"),
        "{err}"
    );
    let out = run_with_stdin(cmd(&["enqueue"]), "http://a.example/\n");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")) && !err.contains("secret"),
        "{err}"
    );
    assert!(err.contains("hint:") && err.contains("amqp.url"), "{err}");
    assert!(
        err.contains("0 jobs confirmed") && err.contains("--from-line 1"),
        "{err}"
    );
}

/// Peak resident memory (VmHWM, kB) of a child, read until it exits.
fn peak_rss_kb(child: &mut std::process::Child) -> u64 {
    let status = format!("/proc/{}/status", child.id());
    let mut peak = 0;
    loop {
        if let Ok(s) = std::fs::read_to_string(&status) {
            if let Some(kb) = s
                .lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|n| n.parse::<u64>().ok())
            {
                peak = peak.max(kb);
            }
        }
        if child.try_wait().expect("try_wait").is_some() {
            return peak;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn enqueue_file(cfg: &Setup, lines: usize) -> (u64, Duration, String) {
    let path = cfg.dir.path().join(format!("{lines}.txt"));
    let mut f = std::io::BufWriter::new(std::fs::File::create(&path).expect("input"));
    for i in 0..lines {
        writeln!(f, "https://site{i}.example.gov/path/to/page?query={i}").expect("write");
    }
    f.flush().expect("flush");
    drop(f);
    let started = Instant::now();
    let mut child = picket(&["enqueue", path.to_str().expect("path")], cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn");
    let peak = peak_rss_kb(&mut child);
    let out = child.wait_with_output().expect("output");
    let err = text(&out.stderr);
    assert!(out.status.success(), "{err}");
    (peak, started.elapsed(), err)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_streams_100000_lines_in_bounded_memory() {
    let cfg = setup("");
    let client = Client::connect().await;
    let (small, t_small, _) = enqueue_file(&cfg, 10_000);
    let (big, t_big, err) = enqueue_file(&cfg, 100_000);
    eprintln!(
        "enqueue peak RSS: 10,000 lines {small} kB in {t_small:?}; 100,000 lines {big} kB in {t_big:?}"
    );
    assert!(err.contains("100000 jobs confirmed"), "{err}");
    assert_eq!(client.depth(&cfg.settings.amqp.jobs_queue).await, 110_000);
    // Ten times the input, nearly the same memory: nothing grows with the line count.
    assert!(
        big < small + 8 * 1024,
        "peak RSS grew from {small} kB to {big} kB with 10x the lines"
    );
    client.purge(&cfg.settings.amqp.jobs_queue).await;
}

/// `picket enqueue -` with the configuration at `path`, reading the test's pipe.
fn enqueue_from_pipe(
    path: &std::path::Path,
) -> (tokio::process::Child, tokio::process::ChildStdin) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_picket"))
        .args(["enqueue", "--config", path.to_str().expect("path"), "-"])
        .env_remove("PICKET_CONFIG")
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn");
    let stdin = child.stdin.take().expect("stdin");
    (child, stdin)
}

/// Writes `more` after a fault, ends the input, and checks that `enqueue` failed and
/// says that the first `held` lines are on the queue and to resume after them; what it
/// said.
async fn stopped_at(
    child: tokio::process::Child,
    mut stdin: tokio::process::ChildStdin,
    more: &str,
    held: usize,
) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut child = child;
    // Its stderr is read meanwhile, so that a run that does not end says where it was.
    let said = Arc::new(Mutex::new(Vec::new()));
    let mut stderr = child.stderr.take().expect("stderr");
    let reader = {
        let said = Arc::clone(&said);
        tokio::spawn(async move {
            let mut buf = [0u8; 4096];
            while let Ok(n @ 1..) = stderr.read(&mut buf).await {
                said.lock()
                    .expect("stderr buffer")
                    .extend_from_slice(&buf[..n]);
            }
        })
    };
    let _ = stdin.write_all(more.as_bytes()).await;
    drop(stdin);
    // Generous: the machine may be busy starting clusters for other tests.
    let Ok(status) = tokio::time::timeout(Duration::from_secs(120), child.wait()).await else {
        let _ = child.kill().await;
        panic!(
            "enqueue did not end within 120 s after the fault; it said: {}",
            text(&said.lock().expect("stderr buffer"))
        );
    };
    let status = status.expect("status");
    let _ = reader.await;
    let err = text(&said.lock().expect("stderr buffer"));
    assert_eq!(status.code(), Some(1), "{err}");
    let count = format!("{held} jobs confirmed (through line {held})");
    assert!(err.contains(&count), "{err}");
    assert!(err.contains(&format!("--from-line {}", held + 1)), "{err}");
    err
}

/// A private RabbitMQ (a test may stop it or raise its alarms) and a config file for it.
async fn private_broker() -> (crate::support::RabbitServer, Setup) {
    let rabbit = tokio::task::spawn_blocking(crate::support::RabbitServer::launch)
        .await
        .expect("join")
        .expect("private RabbitMQ");
    let text = base_toml().replace(crate::support::servers().amqp_url.as_str(), rabbit.url());
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("picket.toml");
    std::fs::write(&path, &text).expect("config");
    let settings = Settings::from_toml(&text).expect("settings");
    (
        rabbit,
        Setup {
            dir,
            path,
            settings,
        },
    )
}

/// A `picket enqueue -` whose stderr is gathered as it comes.
struct Enqueue {
    child: tokio::process::Child,
    stdin: Option<tokio::process::ChildStdin>,
    said: std::sync::Arc<std::sync::Mutex<String>>,
    reading: tokio::task::JoinHandle<()>,
}

impl Enqueue {
    fn start(path: &std::path::Path) -> Enqueue {
        let (mut child, stdin) = enqueue_from_pipe(path);
        let said = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let mut stderr = child.stderr.take().expect("stderr");
        let into = said.clone();
        let reading = tokio::spawn(async move {
            use tokio::io::AsyncReadExt;
            let mut buf = [0u8; 4096];
            while let Ok(n) = stderr.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                into.lock()
                    .expect("lock")
                    .push_str(&String::from_utf8_lossy(&buf[..n]));
            }
        });
        Enqueue {
            child,
            stdin: Some(stdin),
            said,
            reading,
        }
    }

    /// Writes ten URL lines, numbered from `from`.
    async fn ten(&mut self, from: usize) {
        use tokio::io::AsyncWriteExt;
        let lines: String = (from..from + 10)
            .map(|i| format!("http://s{i}.example/\n"))
            .collect();
        let stdin = self.stdin.as_mut().expect("input still open");
        stdin.write_all(lines.as_bytes()).await.expect("lines");
    }

    fn said(&self) -> String {
        self.said.lock().expect("lock").clone()
    }

    async fn until_it_says(&self, what: &str) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while !self.said().contains(what) {
            assert!(
                Instant::now() < deadline,
                "enqueue never said {what:?}: {}",
                self.said()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Ctrl-C: SIGINT to the enqueue.
    fn interrupt(&self) {
        let pid = self.child.id().expect("pid").to_string();
        let sent = std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .expect("kill -INT");
        assert!(sent.success());
    }

    /// Waits for the end (within 30 s) and returns the exit status and all it said.
    async fn ended(mut self) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("enqueue did not end: {}", self.said()))
            .expect("status");
        (&mut self.reading).await.expect("stderr read");
        (status, self.said())
    }
}

/// Ctrl-C while `enqueue -` waits for more input from a pipe that is still open (a
/// producer not done yet) ends it with the count. tokio reads stdin on a blocking
/// thread whose read cannot be cancelled, and the runtime waited for that read when
/// the command returned: the count was printed, and the process hung until the pipe
/// closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_interrupted_while_its_input_stays_open_exits() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("picket.toml");
    std::fs::write(&path, base_toml()).expect("config");
    let mut e = Enqueue::start(&path);
    e.ten(0).await;
    // Published and confirmed by then, and reading on: the pipe stays open.
    tokio::time::sleep(Duration::from_secs(3)).await;
    e.interrupt();
    let (status, err) = e.ended().await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("10 jobs confirmed (through line 10)"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_says_when_a_broker_alarm_blocks_it_and_finishes_after() {
    // On a memory or disk alarm RabbitMQ stops reading from publishing connections: an
    // enqueue would hang without a word. It must say why it waits, then finish; and
    // Ctrl-C meanwhile must still end it with the count, though the broker reads nothing.
    let (rabbit, cfg) = private_broker().await;
    let (path, s) = (&cfg.path, &cfg.settings);
    let (mut waits, mut stops) = (Enqueue::start(path), Enqueue::start(path));
    waits.ten(0).await;
    stops.ten(0).await;
    let client = Client::connect_to(rabbit.url()).await;
    client.declare(s).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.depth(&s.amqp.jobs_queue).await < 20 {
        assert!(Instant::now() < deadline, "the first 20 jobs never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    rabbit
        .ctl(&["set_vm_memory_high_watermark", "absolute", "1"])
        .expect("raise the memory alarm");
    waits.ten(10).await;
    stops.ten(10).await;
    drop(waits.stdin.take());
    waits.until_it_says("blocks publishing").await;
    stops.until_it_says("blocks publishing").await;

    stops.interrupt();
    let (status, err) = stops.ended().await;
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(err.contains("10 jobs confirmed (through line 10)"), "{err}");
    assert!(err.contains("--from-line 11"), "{err}");

    rabbit
        .ctl(&["set_vm_memory_high_watermark", "0.4"])
        .expect("clear the memory alarm");
    let (status, err) = waits.ended().await;
    assert!(status.success(), "{err}");
    assert!(err.contains("20 jobs confirmed (through line 20)"), "{err}");
    assert!(err.contains("unblocked"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_prints_the_confirmed_count_when_the_broker_dies() {
    let (rabbit, cfg) = private_broker().await;
    let (path, s) = (&cfg.path, &cfg.settings);
    let (child, mut stdin) = enqueue_from_pipe(path);
    let batch: String = (0..3000)
        .map(|i| format!("http://s{i}.example/\n"))
        .collect();
    use tokio::io::AsyncWriteExt;
    stdin
        .write_all(batch.as_bytes())
        .await
        .expect("first lines");
    let client = Client::connect_to(rabbit.url()).await;
    client.declare(s).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.depth(&s.amqp.jobs_queue).await < 3000 {
        assert!(Instant::now() < deadline, "3000 jobs never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(client);
    let rabbit = std::sync::Arc::new(rabbit);
    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.stop())
        .await
        .expect("stop");
    // More input after the broker went away: the publish fails and picket says so.
    stopped_at(child, stdin, &batch, 3000).await;
    let r = rabbit.clone();
    tokio::task::spawn_blocking(move || r.start())
        .await
        .expect("start");
    let client = Client::connect_to(rabbit.url()).await;
    assert!(
        client.depth(&s.amqp.jobs_queue).await >= 3000,
        "every confirmed job survived the broker's stop"
    );
}

/// A jobs queue deleted while `enqueue` streams into it: the broker drops what reaches
/// no queue, so each publish is `mandatory`, and the run stops at the first job returned
/// and says to resume from it (not "all confirmed" over jobs that went nowhere).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_into_a_deleted_jobs_queue_stops_and_resumes_from_the_first_lost_job() {
    let cfg = setup("");
    let s = &cfg.settings;
    let (child, mut stdin) = enqueue_from_pipe(&cfg.path);
    let batch = |from: usize| -> String {
        (from..from + 2000)
            .map(|i| format!("http://s{i}.example/\n"))
            .collect()
    };
    use tokio::io::AsyncWriteExt;
    stdin
        .write_all(batch(0).as_bytes())
        .await
        .expect("first lines");
    let client = Client::connect().await;
    client.declare(s).await;
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let depth = client.depth(&s.amqp.jobs_queue).await;
        if depth >= 2000 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "2000 jobs never arrived (the queue holds {depth})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    client
        .ch
        .queue_delete(
            s.amqp.jobs_queue.as_str().into(),
            lapin::options::QueueDeleteOptions::default(),
        )
        .await
        .expect("delete the jobs queue");
    stopped_at(child, stdin, &batch(2000), 2000).await;
}

/// Hunt 96: a message the broker returns (its queue deleted, by an operator's clean-up)
/// was written whole to the log by lapin's own warning, its body as decimal bytes: a
/// job's `Authorization` and `Cookie` headers, which go to no one but their site, kept
/// by every log pipeline. picket says what was returned itself, without the message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_the_broker_returns_is_not_written_to_the_log() {
    use tokio::io::AsyncWriteExt;
    let cfg = setup("");
    let s = &cfg.settings;
    let (child, mut stdin) = enqueue_from_pipe(&cfg.path);
    let first = b"http://s0.example/\nhttp://s1.example/\n";
    stdin.write_all(first).await.expect("lines");
    let client = Client::connect().await;
    client.declare(s).await;
    let deadline = Instant::now() + Duration::from_secs(60);
    while client.depth(&s.amqp.jobs_queue).await < 2 {
        assert!(Instant::now() < deadline, "the first jobs never arrived");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let delete = lapin::options::QueueDeleteOptions::default();
    let queue = s.amqp.jobs_queue.as_str().into();
    client.ch.queue_delete(queue, delete).await.expect("delete");
    let secret = "Bearer SECRET-hunt96-token";
    let job = format!(
        "{{\"url\":\"http://s1.example/\",\"headers\":{{\"Authorization\":\"{secret}\"}}}}\n"
    );
    let said = stopped_at(child, stdin, &job, 2).await;
    let as_bytes: Vec<String> = secret.bytes().map(|b| b.to_string()).collect();
    for shown in [secret.to_string(), as_bytes.join(", ")] {
        assert!(!said.contains(&shown), "the log holds {shown:?}: {said}");
    }
}

/// Display column (terminal cells) where `needle` starts in `line`.
fn column_of(line: &str, needle: &str) -> Option<usize> {
    use unicode_width::UnicodeWidthStr;
    line.find(needle).map(|i| line[..i].width())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_a_terminal_prints_an_aligned_table_with_chinese_text() {
    let addr = site("127.0.0.1", "<p>县政府门户网站</p>").await;
    let cfg = setup("[targets]\nallow_private = true\n");
    let input = cfg.dir.path().join("sites.txt");
    std::fs::write(
        &input,
        format!(
            "http://{addr}/\n\
             http://{addr}/新闻/公告\n\
             {{\"url\": \"http://{addr}/\", \"expect\": {{\"body_contains\": \"欢迎光临\"}}}}\n"
        ),
    )
    .expect("input");
    let inner = format!(
        "stty cols 120 rows 40; exec '{}' check --config '{}' --file '{}'",
        env!("CARGO_BIN_EXE_picket"),
        cfg.path.display(),
        input.display()
    );
    let out = tokio::process::Command::new("script")
        .args(["-qec", &inner, "/dev/null"])
        .env("NO_COLOR", "1")
        .env_remove("PICKET_CONFIG")
        .stdin(Stdio::null())
        .output()
        .await
        .expect("script(1) from bsdutils runs picket on a pseudo-terminal");
    let screen = text(&out.stdout).replace('\r', "");
    assert_eq!(out.status.code(), Some(1), "one site is not up: {screen}");
    assert!(
        !screen.contains("\x1b[3"),
        "no colour with NO_COLOR: {screen:?}"
    );
    // The progress bar (on the same terminal) ends each of its frames with "erase line".
    let lines: Vec<&str> = screen
        .lines()
        .map(|l| l.rsplit("\x1b[2K").next().unwrap_or(l))
        .collect();
    let header = lines
        .iter()
        .find(|l| l.starts_with("VERDICT"))
        .unwrap_or_else(|| panic!("a table header: {screen}"));
    let url_col = column_of(header, "URL").expect("URL column");
    let detail_col = column_of(header, "DETAIL").expect("DETAIL column");
    let rows: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("up ") || l.starts_with("degraded") || l.starts_with("down"))
        .collect();
    assert_eq!(rows.len(), 3, "one row per input, in order: {screen}");
    assert!(
        rows[0].starts_with("up") && rows[2].contains("body_mismatch"),
        "{screen}"
    );
    assert!(
        screen.contains("/新闻/公告"),
        "the URL as written: {screen}"
    );
    assert!(screen.contains("欢迎光临"), "the Chinese detail: {screen}");
    for row in &rows {
        assert_eq!(
            column_of(row, "http://"),
            Some(url_col),
            "URL aligned in {row:?}\n{screen}"
        );
        let url_at = row.find("http://").expect("url");
        let gap = row[url_at..].find("  ").expect("a gap after the URL");
        let detail_at =
            url_at + gap + row[url_at + gap..].len() - row[url_at + gap..].trim_start().len();
        use unicode_width::UnicodeWidthStr;
        assert_eq!(
            row[..detail_at].width(),
            detail_col,
            "detail aligned in {row:?}\n{screen}"
        );
    }
    assert!(
        screen.contains("3 checked in") && screen.contains("2 up, 1 down"),
        "a summary line: {screen}"
    );
}

/// `picket check … | head -n 1`: the reader leaving is how a pipe ends: no error
/// message, but no exit 0 either, which would say every site was up, the unprobed too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_into_a_reader_that_leaves_ends_quietly_and_stops_probing() {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let seen = hits.clone();
    let page = crate::support::picket::page("<p>Town hall opening hours.</p>");
    let router = axum::Router::new().fallback(move || {
        let page = page.clone();
        seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        async move { axum::response::Html(page) }
    });
    let addr = serve("127.0.0.41", router).await;
    let cfg = setup("[targets]\nallow_private = true\n");
    let input = cfg.dir.path().join("sites.txt");
    let sites = 2000;
    let lines: String = (0..sites).map(|n| format!("http://{addr}/{n}\n")).collect();
    std::fs::write(&input, lines).expect("input");
    let input = input.to_str().expect("a UTF-8 temp path");
    let mut child = picket(&["check", "--file", input], &cfg)
        .env("PICKET__PROBE__CONCURRENCY", "2")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("picket check");
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut first = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut first).expect("a first line");
    drop(stdout);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("picket ends");
    let stderr = text(&out.stderr);
    assert!(first.contains("\"verdict\":\"up\""), "{first} {stderr}");
    assert!(
        !stderr.contains("picket:") && !stderr.to_lowercase().contains("broken pipe"),
        "no error for a reader that left: {stderr}"
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "not all checked, so not 'all up': {stderr}"
    );
    let probed = hits.load(std::sync::atomic::Ordering::SeqCst);
    assert!(
        probed < sites,
        "it stops probing: {probed} of {sites} probed"
    );
}

/// `tail -f sites.txt | picket check -`: a line is checked as soon as it is read, not
/// when the input ends, and the input is not all held in memory first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_answers_each_line_of_stdin_before_the_input_ends() {
    use std::io::{BufRead, Write};
    let addr = site("127.0.0.45", "<p>Parish council minutes.</p>").await;
    let cfg = setup("[targets]\nallow_private = true\n");
    let mut child = picket(&["check", "-"], &cfg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("picket check");
    let mut stdin = child.stdin.take().expect("stdin");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    for n in 0..2 {
        writeln!(stdin, "http://{addr}/{n}")
            .and_then(|()| stdin.flush())
            .expect("a line");
        let answer = rx.recv_timeout(Duration::from_secs(20));
        assert!(
            answer
                .as_deref()
                .is_ok_and(|a| a.contains("\"verdict\":\"up\"")),
            "line {n} answered while the input is still open: {answer:?}"
        );
    }
    drop(stdin);
    let out = tokio::task::spawn_blocking(move || child.wait_with_output())
        .await
        .expect("join")
        .expect("picket ends");
    reader.join().expect("reader");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("2 checked"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn the_manual_page_into_a_reader_that_left_ends_quietly() {
    let cfg = setup("");
    let mut child = picket(&["man"], &cfg)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("picket man");
    drop(child.stdout.take());
    let out = child.wait_with_output().expect("picket ends");
    let stderr = text(&out.stderr);
    assert!(
        stderr.is_empty(),
        "no error for a reader that left: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "not all written: {stderr}");
}

/// CONTRACT: "built-in defaults, then `config/default.toml` (or the `--config` file),
/// then environment variables". Without `--config`, a `config/default.toml` in the
/// working directory is that layer; before, it was never read (the built-in defaults
/// are its text as shipped, compiled in).
#[test]
fn config_default_toml_in_the_working_directory_is_read_without_config() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let dir = tmp.path();
    std::fs::create_dir_all(dir.join("config")).expect("config dir");
    std::fs::write(
        dir.join("config/default.toml"),
        "[probe]\nattempts = 3\n[worker]\nname = \"from-cwd-default\"\n",
    )
    .expect("write");
    let show = |extra: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_picket"))
            .args(["config", "show", "--json"])
            .args(extra)
            .current_dir(dir)
            .env_remove("PICKET_CONFIG")
            .output()
            .expect("run");
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).expect("json line"))
            .find(|r| r["key"] == "probe.attempts")
            .expect("probe.attempts")
    };
    let row = show(&[]);
    assert_eq!(row["value"], 3, "{row}");
    assert_eq!(row["source"], "file config/default.toml", "{row}");
    // --config names the file instead.
    let other = dir.join("other.toml");
    std::fs::write(&other, "[probe]\nretry_delay = \"1s\"\n").expect("write");
    let row = show(&["--config", other.to_str().expect("utf-8 path")]);
    assert_eq!(
        (row["value"].clone(), row["source"].clone()),
        (2.into(), "default".into())
    );
}

#[test]
fn config_show_names_each_values_source() {
    let cfg = setup("");
    let out = picket(&["config", "show", "--json"], &cfg)
        .env("PICKET__PROBE__ATTEMPTS", "3")
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let rows: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("json line"))
        .collect();
    let get = |k: &str| {
        rows.iter()
            .find(|r| r["key"] == k)
            .unwrap_or_else(|| panic!("{k} in {rows:?}"))
            .clone()
    };
    assert_eq!(get("probe.attempts")["value"], 3);
    assert_eq!(
        get("probe.attempts")["source"],
        "env PICKET__PROBE__ATTEMPTS"
    );
    assert_eq!(
        get("probe.timeout")["source"],
        format!("file {}", cfg.path.display())
    );
    assert_eq!(get("probe.max_redirects")["source"], "default");
    let url = get("amqp.url")["value"].as_str().expect("url").to_string();
    assert!(url.contains("***") && !url.contains("guest:guest"), "{url}");

    // PICKET_CONFIG names the file like --config.
    let out = Command::new(env!("CARGO_BIN_EXE_picket"))
        .args(["config", "check"])
        .env("PICKET_CONFIG", &cfg.path)
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains(&cfg.path.display().to_string()));
    // An empty PICKET_CONFIG is no file named, as an empty variable is for most tools
    // (hunt N: clap said "a value is required for '--config <FILE>'", never typed).
    let empty = tempfile::tempdir().expect("dir");
    let out = Command::new(env!("CARGO_BIN_EXE_picket"))
        .args(["config", "check"])
        .env("PICKET_CONFIG", "")
        .current_dir(empty.path())
        .output()
        .expect("run");
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));

    // An unknown key from the environment is reported as such, with what was meant.
    let out = picket(&["config", "check"], &cfg)
        .env("PICKET__PROBE__TIMOUT", "3s")
        .output()
        .expect("run");
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("environment variable PICKET__PROBE__TIMOUT")
            && err.contains("did you mean PICKET__PROBE__TIMEOUT?"),
        "{err}"
    );
}

#[test]
fn completions_and_the_manual_page() {
    let run = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_picket"))
            .args(args)
            .env("PICKET__PROBE__TIMEOUT", "not a duration")
            .output()
            .expect("run");
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        text(&out.stdout)
    };
    // They need no valid configuration.
    let bash = run(&["completions", "bash"]);
    assert!(
        bash.contains("enqueue") && bash.contains("--from-line"),
        "{bash}"
    );
    let man = run(&["man"]);
    assert!(
        man.contains(".TH picket") && man.contains("Exit codes"),
        "{man}"
    );
}

/// A URL list as Windows tools save it: UTF-8 with a byte order mark (Notepad, Excel's
/// "CSV UTF-8", PowerShell 7's `Out-File -Encoding utf8BOM`) or UTF-16 with one (Windows
/// PowerShell 5's `>` and `Out-File`, Notepad's "Unicode"), CRLF line ends, or the lone
/// CR of Excel for Mac's "CSV (Macintosh)". `check` and `enqueue` read the URLs written:
/// before, the first URL had U+FEFF in front of it, a UTF-16 file was "not valid UTF-8",
/// and CR-ended lines were one line, `http://a/\rhttp://b/`, which the URL parser reads
/// as `http://a/http://b/`: a page nobody asked for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_list_saved_by_windows_tools_is_read_as_written() {
    let addr = site("127.0.0.55", "<p>Parish council minutes.</p>").await;
    let cfg = setup("[targets]\nallow_private = true\n");
    let s = &cfg.settings;
    let client = Client::connect().await;
    client.declare(s).await;
    let urls = [format!("http://{addr}/a"), format!("http://{addr}/b")];
    let quoted = urls.clone().map(|u| format!("{u:?}"));
    let list = format!("\u{feff}{}\r\n# the second\r\n{}\r\n", urls[0], urls[1]);
    let utf16: Vec<u8> = list.encode_utf16().flat_map(u16::to_le_bytes).collect();
    let mac = format!("{}\r# the second\r{}\r", urls[0], urls[1]).into_bytes();
    for (encoding, bytes) in [
        ("UTF-8", list.clone().into_bytes()),
        ("UTF-16LE", utf16),
        ("CR-ended", mac),
    ] {
        let input = cfg.dir.path().join(format!("sites-{encoding}.txt"));
        std::fs::write(&input, bytes).expect("input");
        let path = input.to_str().expect("path");

        let out = tokio::process::Command::from(picket(&["check", "--file", path], &cfg))
            .output()
            .await
            .expect("picket check");
        let said = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_eq!(out.status.code(), Some(0), "{encoding}: both up: {said}");
        let checked: Vec<String> = text(&out.stdout)
            .lines()
            .map(|l| {
                serde_json::from_str::<serde_json::Value>(l).expect("a result")["url"].to_string()
            })
            .collect();
        assert_eq!(checked, quoted, "{encoding}: {said}");

        let out = tokio::process::Command::from(picket(&["enqueue", path], &cfg))
            .output()
            .await
            .expect("picket enqueue");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{encoding}: {}",
            text(&out.stderr)
        );
        let jobs = client
            .take(&s.amqp.jobs_queue, 2, Duration::from_secs(5))
            .await;
        let queued: Vec<String> = jobs
            .iter()
            .map(|j| {
                serde_json::from_slice::<serde_json::Value>(&j.data).expect("job")["url"]
                    .to_string()
            })
            .collect();
        assert_eq!(queued, quoted, "{encoding}");
    }
}

/// A `picket check` configuration in `dir` for our own servers on loopback, one attempt
/// a probe (a closed port is `down` at once).
fn one_attempt_config(dir: &std::path::Path) -> std::path::PathBuf {
    let config = dir.join("check.toml");
    std::fs::write(
        &config,
        "[targets]\nallow_private = true\n[probe]\nattempts = 1\n",
    )
    .expect("config");
    config
}

/// A closed standard error (`picket enqueue … 2>&1 | head -1`, a full disk) made every
/// command panic on its first message: exit 101 instead of the contract's code, and an
/// `enqueue` stopped half-way with part of its input published.
#[test]
fn a_closed_standard_error_changes_no_exit_code() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = one_attempt_config(dir.path());
    let run = |args: &[&str], config: &std::path::Path, env: &[(&str, &str)]| {
        let (reader, writer) = std::io::pipe().expect("a pipe");
        drop(reader);
        picket_command(args, config)
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .stderr(writer)
            .status()
            .expect("picket ran")
            .code()
    };
    let missing = dir.path().join("missing.toml");
    let closed_port = ["check", "http://127.0.59.61:1/"];
    assert_eq!(run(&closed_port, &missing, &[]), Some(2));
    // A closed port: not up, and the summary goes to the closed standard error.
    assert_eq!(run(&closed_port, &config, &[]), Some(1));
    // A log line too (here the warning of a variable that is no setting).
    let stray = [("PICKET_PROBE__TIMEOUT", "1s")];
    assert_eq!(run(&closed_port, &config, &stray), Some(1));
}

/// One line of a `--file` that is not UTF-8 ended the whole run ("cannot read: stream
/// did not contain valid UTF-8", exit 1, the lines after it never checked), and a line
/// without end was read whole into memory. Each is now that line's `invalid` result.
#[test]
fn a_bad_line_in_a_list_is_its_own_invalid_result_and_the_rest_is_checked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = one_attempt_config(dir.path());
    let list = dir.path().join("list.txt");
    let mut bytes = b"http://127.0.59.62:1/first\n\xff\xfe bad bytes\n".to_vec();
    // A comment in Latin-1 is a comment all the same.
    bytes.extend(b"  # Liste f\xfcr die Stadt\n");
    // One byte over the limit, and its line end.
    bytes.extend(vec![b'a'; 65_537]);
    bytes.extend(b"\nhttp://127.0.59.62:1/last\n");
    std::fs::write(&list, bytes).expect("list");
    let out = picket_command(
        &["check", "--json", "--file", list.to_str().expect("path")],
        &config,
    )
    .output()
    .expect("picket ran");
    let text = String::from_utf8_lossy(&out.stdout);
    let results: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(results.len(), 4, "{text}");
    assert_eq!(results[0]["reason"], "connect", "{}", results[0]);
    assert_eq!(results[1]["verdict"], "invalid", "{}", results[1]);
    assert!(results[1]["detail"]
        .as_str()
        .expect("detail")
        .contains("UTF-8"));
    assert_eq!(results[2]["verdict"], "invalid", "{}", results[2]);
    assert!(results[2]["detail"]
        .as_str()
        .expect("detail")
        .contains("longer"));
    assert_eq!(
        results[3]["url"], "http://127.0.59.62:1/last",
        "{}",
        results[3]
    );
}

/// `PICKET_PROBE__TIMEOUT=1s` (one underscore) was dropped without a word, and
/// `config check` said "no environment variables": the operator believed it was set.
#[test]
fn an_environment_variable_that_is_no_setting_is_told() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("check.toml");
    std::fs::write(&config, "").expect("config");
    for args in [&["config", "check"][..], &["check", "http://[::1"][..]] {
        let out = picket_command(args, &config)
            .env("PICKET_PROBE__TIMEOUT", "1s")
            .output()
            .expect("picket ran");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("PICKET_PROBE__TIMEOUT") && err.contains("PICKET__"),
            "{args:?}: {err}"
        );
    }
}

/// Hunt S: `HTTPS_PROXY` and its kin, which curl follows, were dropped without a word:
/// on a host that reaches the web only through that proxy, every site was a confirmed
/// `down` while curl reached them. picket keeps going direct (a probe goes to the
/// address its limiter counted, through the egresses configured), and says so.
#[test]
fn proxy_variables_picket_does_not_follow_are_told() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = one_attempt_config(dir.path());
    let out = picket_command(&["check", "http://127.0.0.1:9/"], &config)
        .env("https_proxy", "http://127.0.0.1:3128")
        .output()
        .expect("picket ran");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("https_proxy set, but picket reads no proxy from the environment"),
        "{err}"
    );
}

/// A wrong password was hinted at as a broker not running ("is RabbitMQ running and
/// reachable there?"), sending the operator to the network instead of the credentials.
#[test]
fn a_refused_login_is_hinted_at_the_credentials() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("wrong.toml");
    let port = crate::support::servers().rabbit.port();
    std::fs::write(
        &path,
        format!(
            "[amqp]\nurl = \"amqp://guest:wrong@127.0.0.1:{port}/%2f\"\nconnect_timeout = \"5s\"\n"
        ),
    )
    .expect("config");
    let out = run_with_stdin(picket_command(&["enqueue"], &path), "http://a.example/\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("is RabbitMQ running"), "{err}");
    assert!(err.contains("password"), "{err}");
    assert!(
        !err.contains("wrong"),
        "the password is never printed: {err}"
    );
}

/// Hunt N: a virtual host that does not exist was hinted at as a missing grant
/// ("grant it with rabbitmqctl set_permissions"), which cannot be done for a vhost that
/// is not there: a typo in the URL's last part, or `/` written as `/` not `%2f`.
#[test]
fn a_missing_virtual_host_is_hinted_at_as_missing() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("vhost.toml");
    let port = crate::support::servers().rabbit.port();
    std::fs::write(
        &path,
        format!(
            "[amqp]\nurl = \"amqp://guest:guest@127.0.0.1:{port}/no-such-vhost\"\nconnect_timeout = \"5s\"\n"
        ),
    )
    .expect("config");
    let out = run_with_stdin(picket_command(&["enqueue"], &path), "http://a.example/\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no-such-vhost"), "{err}");
    assert!(
        err.contains("does not exist") && err.contains("list_vhosts"),
        "{err}"
    );
    assert!(!err.contains("set_permissions"), "{err}");
}

/// Hunt N: `check --file DIR` opened the directory (Linux lets one), failed reading it
/// and exited 1, a runtime failure; input that cannot be read is a usage error (2), as
/// a missing file is. `enqueue` the same.
#[test]
fn a_directory_given_as_the_input_file_is_a_usage_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let d = dir.path().to_str().expect("utf-8 path");
    for args in [vec!["check", "--file", d], vec!["enqueue", d]] {
        let out = Command::new(env!("CARGO_BIN_EXE_picket"))
            .args(&args)
            .env_remove("PICKET_CONFIG")
            .output()
            .expect("run picket");
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains("is a directory"), "{args:?}: {err}");
    }
}

/// Hunt T: with `amqp.prefetch` far above `probe.concurrency` (concurrency 16 beside the
/// default prefetch of 256), deliveries wait in the worker behind the jobs running, and
/// RabbitMQ's `consumer_timeout` counts that wait: a backlog of slow sites passed the
/// broker's 30 minutes and the channel was closed under the worker, its jobs answered
/// twice. Nothing said so. The worker now warns at start.
#[test]
fn a_prefetch_far_above_the_concurrency_is_warned_of_at_start() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = dir.path().join("worker.toml");
    let nobody = free_port();
    std::fs::write(
        &config,
        format!(
            "[amqp]\nurl = \"amqp://guest:guest@127.0.0.1:{nobody}/%2f\"\nprefetch = 256\n\
             [probe]\nconcurrency = 16\n[http]\nlisten = \"127.0.0.1:{}\"\n",
            free_port()
        ),
    )
    .expect("config");
    let worker = picket_command(&["worker"], &config)
        .stderr(Stdio::piped())
        .spawn()
        .expect("picket worker");
    std::thread::sleep(Duration::from_millis(1500));
    let _ = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status();
    let out = worker.wait_with_output().expect("worker exits");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("amqp.prefetch (256) is more than four times probe.concurrency (16)"),
        "{err}"
    );
}

/// `picket check` of two lines of one key, the first slower than the second: the state
/// stepped in the order the checks finished, so the second line was told it had no
/// previous check and the first was told of the second's. It steps in input order, as
/// COMMANDS says ("from its first check").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_steps_one_keys_state_in_input_order_whichever_check_ends_first() {
    let router = axum::Router::new()
        .route(
            "/slow",
            axum::routing::get(|| async {
                tokio::time::sleep(Duration::from_millis(800)).await;
                (axum::http::StatusCode::NOT_FOUND, "gone")
            }),
        )
        .fallback(|| async { axum::response::Html(crate::support::picket::page("")) });
    let addr = serve("127.0.9.31", router).await;
    let cfg = setup("[targets]\nallow_private = true\n");
    let input = format!(
        "{{\"url\": \"http://{addr}/slow\", \"key\": \"one\"}}\n\
         {{\"url\": \"http://{addr}/fast\", \"key\": \"one\"}}\n"
    );
    let out = run_with_stdin(picket(&["check", "--json", "-"], &cfg), &input);
    let lines: Vec<serde_json::Value> = text(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a result line"))
        .collect();
    assert_eq!(lines.len(), 2, "{}", text(&out.stderr));
    let seen = |r: &serde_json::Value| {
        (
            r["verdict"].clone(),
            r["previous_verdict"].clone(),
            r["changed"].clone(),
        )
    };
    assert_eq!(
        (seen(&lines[0]), seen(&lines[1])),
        (
            (
                serde_json::json!("down"),
                serde_json::Value::Null,
                serde_json::json!(false)
            ),
            (
                serde_json::json!("up"),
                serde_json::json!("down"),
                serde_json::json!(true)
            )
        ),
        "{lines:?}"
    );
}
