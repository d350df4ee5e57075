//! The client examples under `examples/` (Python with aio-pika, Node with amqplib), run
//! as a person runs them, against the test broker with a real picket worker in between:
//! the publisher's jobs get results, a site that goes down makes the subscriber print
//! `up.down`, and bad input or a missing queue gets a clear error and sends nothing.
//!
//! Their dependencies are installed at test time, pinned: the Python ones into a venv
//! under this target dir (`CARGO_TARGET_TMPDIR`, kept between runs while
//! `requirements.txt` is unchanged), the Node ones with `npm ci` in `examples/node/`
//! (kept while `package-lock.json` is unchanged). An install that fails fails the test.

use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use picket::config::Settings;
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use crate::support::picket::{base_toml, Client, Worker};
use crate::support::targets::FlippingSite;
use crate::support::{servers, unique};

/// Marks a finished install; its content is the hash of the lock file it installed.
const STAMP: &str = ".picket-installed";
const DEPS_HINT: &str = "scripts/deps installs python3-venv, nodejs and npm";

#[derive(Clone, Copy, Debug)]
enum Lang {
    Python,
    Node,
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

/// FNV-1a: a stable hash of a lock file, to name and check the cached install.
fn fnv(bytes: &[u8]) -> String {
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("{hash:016x}")
}

/// Runs an install step, failing with its output and the way to fix it.
fn run(cmd: &mut std::process::Command, what: &str) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("{what}: cannot run it: {e} ({DEPS_HINT})"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(format!(
        "{what} failed ({}): {}{} ({DEPS_HINT})",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    ))
}

/// The venv's python with `requirements.txt` installed: built beside the final
/// place and renamed into it, so a half-made venv is never taken for a cached one.
fn python_venv() -> Result<PathBuf, String> {
    let reqs = examples_dir().join("python/requirements.txt");
    let text = std::fs::read(&reqs).map_err(|e| format!("{}: {e}", reqs.display()))?;
    let cache = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = cache.join(format!("examples-venv-{}", fnv(&text)));
    if dir.join(STAMP).exists() {
        return Ok(dir.join("bin/python"));
    }
    let partial = cache.join(unique("examples-venv-partial"));
    if let Err(e) = build_venv(&partial, &reqs, &fnv(&text)) {
        let _ = std::fs::remove_dir_all(&partial);
        return Err(e);
    }
    if let Err(e) = std::fs::rename(&partial, &dir) {
        // Another test process finished the same venv first: use that one.
        let _ = std::fs::remove_dir_all(&partial);
        if !dir.join(STAMP).exists() {
            return Err(format!("cannot move the venv to {}: {e}", dir.display()));
        }
    }
    Ok(dir.join("bin/python"))
}

/// A venv in `dir` with `reqs` installed, stamped with `hash` when complete.
fn build_venv(dir: &Path, reqs: &Path, hash: &str) -> Result<(), String> {
    run(
        std::process::Command::new("python3")
            .args(["-m", "venv"])
            .arg(dir),
        "python3 -m venv",
    )?;
    run(
        std::process::Command::new(dir.join("bin/python"))
            .args(["-m", "pip", "install", "--disable-pip-version-check"])
            .args(["--no-input", "--quiet", "-r"])
            .arg(reqs),
        "pip install -r examples/python/requirements.txt",
    )?;
    std::fs::write(dir.join(STAMP), hash).map_err(|e| e.to_string())
}

/// `npm ci` in `examples/node/`, unless its `node_modules` came from this lock file.
fn node_modules() -> Result<(), String> {
    let dir = examples_dir().join("node");
    let lock = std::fs::read(dir.join("package-lock.json")).map_err(|e| e.to_string())?;
    let stamp = dir.join("node_modules").join(STAMP);
    if std::fs::read_to_string(&stamp).is_ok_and(|s| s == fnv(&lock)) {
        return Ok(());
    }
    run(
        std::process::Command::new("npm")
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir),
        "npm ci in examples/node",
    )?;
    std::fs::write(&stamp, fnv(&lock)).map_err(|e| e.to_string())
}

impl Lang {
    /// Installs this language's dependencies, once per test binary, and returns the
    /// interpreter to run the examples with; every test of the language gets the same
    /// answer, an install failure included.
    async fn install(self) -> Result<PathBuf, String> {
        static PYTHON: OnceLock<Result<PathBuf, String>> = OnceLock::new();
        static NODE: OnceLock<Result<(), String>> = OnceLock::new();
        tokio::task::spawn_blocking(move || match self {
            Lang::Python => PYTHON.get_or_init(python_venv).clone(),
            Lang::Node => NODE
                .get_or_init(node_modules)
                .clone()
                .map(|()| "node".into()),
        })
        .await
        .expect("install task")
    }

    /// The command that runs this language's `script` (`publish` or `subscribe`).
    async fn command(self, script: &str) -> Command {
        let interpreter = self
            .install()
            .await
            .unwrap_or_else(|e| panic!("installing the {self:?} example's dependencies: {e}"));
        let file = match self {
            Lang::Python => format!("python/{script}.py"),
            Lang::Node => format!("node/{script}.js"),
        };
        let mut cmd = Command::new(interpreter);
        cmd.arg(examples_dir().join(file));
        // The examples read the worker's own variables; the test passes arguments.
        cmd.env_remove("PICKET__AMQP__URL")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        cmd
    }
}

/// Runs the publisher with `args` (and `stdin`), within 60 s.
async fn publish(lang: Lang, args: &[&str], stdin: &str) -> Output {
    let mut cmd = lang.command("publish").await;
    cmd.arg("--amqp-url")
        .arg(&servers().amqp_url)
        .args(args)
        .stdin(Stdio::piped());
    let mut child = cmd.spawn().expect("start the publisher");
    let mut input = child.stdin.take().expect("publisher stdin");
    input.write_all(stdin.as_bytes()).await.expect("stdin");
    drop(input);
    timeout(60, child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("the {lang:?} publisher did not finish within 60 s"))
        .expect("publisher output")
}

/// The job ids a successful publisher printed (`ID<TAB>URL` lines).
fn published(lang: Lang, out: &Output) -> Vec<String> {
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "the {lang:?} publisher failed ({}): {stdout}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
        .lines()
        .map(|l| l.split('\t').next().unwrap_or_default().to_string())
        .collect()
}

/// A running subscriber example; what it says on stderr is collected all along, so
/// it never writes into a closed pipe and a failure can show it.
struct Subscriber {
    lang: Lang,
    child: Child,
    stderr: tokio::task::JoinHandle<String>,
}

impl Subscriber {
    /// Starts the subscriber on `exchange` with `args`, and waits until it is bound.
    async fn start(lang: Lang, exchange: &str, args: &[&str]) -> Subscriber {
        let mut cmd = lang.command("subscribe").await;
        cmd.args(["--amqp-url", &servers().amqp_url, "--exchange", exchange])
            .args(args);
        let mut child = cmd.spawn().expect("start the subscriber");
        let mut lines = BufReader::new(child.stderr.take().expect("stderr")).lines();
        let (bound, listening) = tokio::sync::oneshot::channel();
        let stderr = tokio::spawn(async move {
            let (mut said, mut bound) = (String::new(), Some(bound));
            while let Ok(Some(line)) = lines.next_line().await {
                if line.contains("listening on") {
                    bound.take().map(|b| b.send(()));
                }
                said.push_str(&line);
                said.push('\n');
            }
            said
        });
        let mut s = Subscriber {
            lang,
            child,
            stderr,
        };
        if !matches!(timeout(30, listening).await, Ok(Ok(()))) {
            let _ = s.child.start_kill();
            let (status, _, said) = s.finish().await;
            panic!("the {lang:?} subscriber never bound ({status}): {said}");
        }
        s
    }

    /// Waits (30 s at most) for the subscriber to exit: its status, stdout and stderr.
    async fn finish(mut self) -> (std::process::ExitStatus, String, String) {
        let lang = self.lang;
        let status = timeout(30, self.child.wait())
            .await
            .unwrap_or_else(|_| panic!("the {lang:?} subscriber did not exit within 30 s"))
            .expect("subscriber status");
        let mut stdout = String::new();
        if let Some(mut out) = self.child.stdout.take() {
            out.read_to_string(&mut stdout).await.expect("stdout");
        }
        let said = self.stderr.await.unwrap_or_default();
        (status, stdout, said)
    }
}

/// `future` with a limit of `secs` seconds.
async fn timeout<F: std::future::Future>(
    secs: u64,
    future: F,
) -> Result<F::Output, tokio::time::error::Elapsed> {
    tokio::time::timeout(Duration::from_secs(secs), future).await
}

fn settings() -> Settings {
    let text = format!("{}\n[targets]\nallow_private = true\n", base_toml());
    Settings::from_toml(&text).unwrap_or_else(|e| panic!("settings: {e}\n{text}"))
}

/// One result for a job the example published.
async fn result_of(c: &Client, s: &Settings, ids: &[String]) -> Value {
    assert_eq!(ids.len(), 1, "one job published: {ids:?}");
    let result = c.results(s, 1, Duration::from_secs(30)).await.remove(0);
    assert_eq!(result["job_id"], ids[0].as_str(), "{result}");
    result
}

/// A site checked up, then down: the jobs come from the example's publisher (a URL
/// argument, then a JSON job on stdin), the change reaches its subscriber.
async fn round_trip(lang: Lang, ip: &str) {
    let site = FlippingSite::start(ip).await;
    let s = settings();
    let c = Client::connect().await;
    c.declare(&s).await;
    let worker = Worker::start(&s);
    let subscriber =
        Subscriber::start(lang, &s.amqp.changes_exchange, &["--count", "1", "*.*"]).await;
    let queue = s.amqp.jobs_queue.as_str();

    let ids = published(
        lang,
        &publish(lang, &["--queue", queue, &site.url], "").await,
    );
    let up = result_of(&c, &s, &ids).await;
    assert_eq!(
        (up["verdict"].as_str(), up["url"].as_str()),
        (Some("up"), Some(site.url.as_str()))
    );

    site.set_up(false);
    let job = json!({"url": site.url, "meta": {"example": format!("{lang:?}")}});
    let out = publish(lang, &["--queue", queue], &format!("# a comment\n{job}\n")).await;
    let down = result_of(&c, &s, &published(lang, &out)).await;
    assert_eq!(
        (
            down["verdict"].as_str(),
            down["previous_verdict"].as_str(),
            down["changed"].as_bool()
        ),
        (Some("down"), Some("up"), Some(true)),
        "{down}"
    );
    assert_eq!(down["meta"], job["meta"], "meta comes back unchanged");

    let (status, text, said) = subscriber.finish().await;
    assert!(
        status.success(),
        "{lang:?} subscriber: {status}: {text}{said}"
    );
    let line = text.lines().next().unwrap_or_default();
    let fields: Vec<&str> = line.split("  ").collect();
    assert_eq!(
        fields.get(1..3),
        Some(&["up.down", site.url.as_str()][..]),
        "{text}"
    );
    assert!(
        line.contains("http_status: 503"),
        "the reason and detail: {text}"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_examples_publish_jobs_and_print_a_site_going_down() {
    round_trip(Lang::Python, "127.0.43.1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_examples_publish_jobs_and_print_a_site_going_down() {
    round_trip(Lang::Node, "127.0.43.2").await;
}

/// A bad line sends nothing (exit 2, naming the line); a queue that does not exist is
/// an error (exit 1), never a job silently dropped by the broker.
async fn publisher_says_what_is_wrong(lang: Lang) {
    let s = settings();
    let c = Client::connect().await;
    c.declare(&s).await;
    let queue = s.amqp.jobs_queue.as_str();
    let input = "http://127.0.43.3/\nftp://127.0.43.3/file\n";
    let out = publish(lang, &["--queue", queue], input).await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{lang:?}: {stderr}");
    assert!(
        stderr.contains("line 2") && stderr.contains("ftp://"),
        "{lang:?}: {stderr}"
    );
    assert_eq!(c.depth(queue).await, 0, "nothing sent when a line is bad");

    let missing = unique("no-such-queue");
    let out = publish(lang, &["--queue", &missing, "http://127.0.43.3/"], "").await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{lang:?}: {stderr}");
    assert!(
        stderr.contains(&missing) && stderr.contains("does not exist"),
        "{lang:?}: {stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_publisher_says_what_is_wrong() {
    publisher_says_what_is_wrong(Lang::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_publisher_says_what_is_wrong() {
    publisher_says_what_is_wrong(Lang::Node).await;
}

/// SIGTERM ends a subscriber cleanly (exit 0): the way a supervisor stops it.
async fn subscriber_stops_on_sigterm(lang: Lang) {
    let exchange = unique("changes");
    let subscriber = Subscriber::start(lang, &exchange, &[]).await;
    let pid = subscriber.child.id().expect("subscriber pid");
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(kill.success(), "kill -TERM {pid}");
    let (status, stdout, said) = subscriber.finish().await;
    assert_eq!(status.code(), Some(0), "{lang:?}: {stdout}{said}");
    assert_eq!(stdout, "", "no change was published");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_python_subscriber_stops_on_sigterm() {
    subscriber_stops_on_sigterm(Lang::Python).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_subscriber_stops_on_sigterm() {
    subscriber_stops_on_sigterm(Lang::Node).await;
}
