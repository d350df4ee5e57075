//! The commands as a person uses them, run as the real `picket` binary against the
//! shared RabbitMQ: `results` that takes nothing from anyone (and `--drain` that acks
//! only what it wrote), `enqueue` streaming big inputs and saying where to resume,
//! `check` on a pseudo-terminal, `config show` naming each value's source.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use lapin::options::{BasicGetOptions, BasicPublishOptions};
use lapin::BasicProperties;
use picket::config::Settings;
use picket::job::{Report, Verdict};

use crate::support::picket::{base_toml, engine_from_toml, Client};
use crate::support::{serve, unique};

/// A test's configuration file (on the shared servers, names of its own) and settings.
struct Setup {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    settings: Settings,
}

fn setup(extra: &str) -> Setup {
    let base = base_toml().replacen(
        "[amqp]\n",
        &format!("[amqp]\nchanges_exchange = \"{}\"\n", unique("changes")),
        1,
    );
    let text = format!("{base}{extra}");
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
    let mut c = Command::new(env!("CARGO_BIN_EXE_picket"));
    c.args(args)
        .arg("--config")
        .arg(&cfg.path)
        .env_remove("PICKET_CONFIG")
        .env("NO_COLOR", "1");
    c
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
                let status = status.expect("wait");
                let mut out = String::new();
                if let Some(mut o) = child.stdout.take() {
                    use tokio::io::AsyncReadExt;
                    o.read_to_string(&mut out).await.expect("read");
                }
                assert!(status.success(), "picket results --follow failed: {out}");
                return out;
            }
            Err(_) if Instant::now() < deadline => continue,
            Err(_) => panic!("picket results --follow printed nothing matching in 20 s"),
        }
    }
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
