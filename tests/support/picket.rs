//! Running picket inside a test: settings with unique queue names and key prefixes on
//! the shared servers, an in-process worker with its own shutdown token, and a small
//! AMQP client to publish jobs and collect results.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions,
    QueueDeclareOptions, QueuePurgeOptions,
};
use lapin::types::FieldTable;
use lapin::{BasicProperties, Channel, Connection, ConnectionProperties};
use picket::config::Settings;
use tokio_util::sync::CancellationToken;

use super::{free_port, servers, unique};

/// A configuration file's text on the shared servers with names no other test uses.
/// It has no `[targets]` or `[dns]` section, so a test may append those.
pub fn base_toml() -> String {
    let s = servers();
    let id = unique("t");
    format!(
        r#"
[amqp]
url = "{amqp}"
jobs_queue = "{id}.jobs"
results_exchange = "{id}.results"
results_queue = "{id}.results"
changes_exchange = "{id}.changes"
dead_letter_queue = "{id}.dead"
delay_queue = "{id}.delay"
[redis]
url = "{redis}"
key_prefix = "{id}:"
[http]
listen = "127.0.0.1:{port}"
[probe]
retry_delay = "200ms"
timeout = "5s"
connect_timeout = "2s"
[rate_limit.per_ip]
rate = 1000.0
burst = 1000
max_inflight = 100
[worker]
name = "test-worker"
shutdown_grace = "10s"
"#,
        amqp = s.amqp_url,
        redis = s.redis_url,
        port = free_port(),
    )
}

/// Validated settings from [`base_toml`]; tests change fields directly.
pub fn settings() -> Settings {
    let toml = base_toml();
    Settings::from_toml(&toml).unwrap_or_else(|e| panic!("test settings: {e}\n{toml}"))
}

/// A worker running in this process, its operations endpoint on a port of its own.
pub struct Worker {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<anyhow::Result<()>>,
    /// Where `/healthz`, `/readyz` and `/metrics` answer (`http.listen` is not used).
    pub ops: std::net::SocketAddr,
}

impl Worker {
    pub fn start(settings: &Settings) -> Worker {
        let bound = std::net::TcpListener::bind("127.0.0.1:0").expect("an ops port");
        bound
            .set_nonblocking(true)
            .expect("non-blocking ops listener");
        let ops = bound.local_addr().expect("ops address");
        let stop = CancellationToken::new();
        let (settings, token) = (settings.clone(), stop.clone());
        let task = tokio::spawn(async move {
            let listener = tokio::net::TcpListener::from_std(bound)?;
            picket::app::serve_worker(settings, listener, token).await
        });
        Worker { stop, task, ops }
    }

    pub async fn shutdown(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(30), self.task)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task joins")
            .expect("worker returns Ok");
    }
}

/// What fills a [`Client::full_results_queue`].
pub const FILLER: &[u8] = b"{\"filler\":true}";

/// A test's own broker client.
pub struct Client {
    pub conn: Connection,
    pub ch: Channel,
}

impl Client {
    /// A new queue that refuses every publish (`x-max-length` 0 and `x-overflow =
    /// reject-publish`), as a full queue of a subscriber or of RPC replies does: the
    /// broker nacks what would go there.
    pub async fn refusing_queue(&self) -> String {
        let name = unique("full");
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), lapin::types::AMQPValue::LongInt(0));
        args.insert(
            "x-overflow".into(),
            lapin::types::AMQPValue::LongString("reject-publish".into()),
        );
        self.ch
            .queue_declare(name.as_str().into(), QueueDeclareOptions::default(), args)
            .await
            .expect("declare a refusing queue");
        name
    }

    /// Declares `s`'s topology with its results queue full: capped at one message that
    /// is already there ([`FILLER`]), refusing the rest (`x-max-length` 1, `x-overflow =
    /// reject-publish`), as an operator's length policy does.
    pub async fn full_results_queue(&self, s: &Settings) {
        self.capped_results_queue(s).await;
        self.declare(s).await;
        self.publish(&s.amqp.results_queue, FILLER, BasicProperties::default())
            .await;
    }

    /// Takes the [`FILLER`] out of a [`Client::full_results_queue`]: room for one result.
    pub async fn make_room_for_a_result(&self, s: &Settings) {
        let taken = self
            .take(&s.amqp.results_queue, 1, Duration::from_secs(5))
            .await;
        assert_eq!(taken[0].data, FILLER.to_vec());
    }

    async fn capped_results_queue(&self, s: &Settings) {
        let mut args = FieldTable::default();
        args.insert("x-max-length".into(), lapin::types::AMQPValue::LongInt(1));
        args.insert(
            "x-overflow".into(),
            lapin::types::AMQPValue::LongString("reject-publish".into()),
        );
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        self.ch
            .queue_declare(s.amqp.results_queue.as_str().into(), durable, args)
            .await
            .expect("capped results queue");
    }

    pub async fn connect() -> Client {
        Client::connect_to(&servers().amqp_url).await
    }

    /// A client of the broker at `url` (e.g. a test's private `RabbitServer`).
    pub async fn connect_to(url: &str) -> Client {
        let conn = Connection::connect(url, ConnectionProperties::default())
            .await
            .expect("test client connects to RabbitMQ");
        let ch = conn.create_channel().await.expect("channel");
        ch.confirm_select(ConfirmSelectOptions::default())
            .await
            .expect("confirm mode");
        Client { conn, ch }
    }

    /// Declares the topology the worker will use (so publishes before it starts land).
    pub async fn declare(&self, s: &Settings) {
        picket::amqp::declare(&self.conn, &s.amqp)
            .await
            .expect("declare topology");
    }

    pub async fn publish(&self, queue: &str, body: &[u8], props: BasicProperties) {
        let c = self
            .ch
            .basic_publish(
                "".into(),
                queue.into(),
                BasicPublishOptions::default(),
                body,
                props,
            )
            .await
            .expect("publish")
            .await
            .expect("confirm");
        assert!(c.is_ack(), "broker acked the test publish");
    }

    pub async fn job(&self, s: &Settings, json: serde_json::Value) {
        self.publish(
            &s.amqp.jobs_queue,
            json.to_string().as_bytes(),
            BasicProperties::default(),
        )
        .await;
    }

    /// Declares a private queue for replies.
    pub async fn reply_queue(&self) -> String {
        let name = unique("reply");
        self.ch
            .queue_declare(
                name.as_str().into(),
                QueueDeclareOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("reply queue");
        name
    }

    /// Takes `n` messages from `queue` (acking them), failing after `within`.
    pub async fn take(
        &self,
        queue: &str,
        n: usize,
        within: Duration,
    ) -> Vec<lapin::message::Delivery> {
        let ch = self.conn.create_channel().await.expect("channel");
        let mut consumer = ch
            .basic_consume(
                queue.into(),
                unique("c").as_str().into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .expect("consume");
        let mut out = Vec::new();
        let deadline = tokio::time::Instant::now() + within;
        while out.len() < n {
            match tokio::time::timeout_at(deadline, consumer.next()).await {
                Ok(Some(Ok(d))) => {
                    d.acker.ack(BasicAckOptions::default()).await.expect("ack");
                    out.push(d);
                }
                Ok(other) => panic!("consumer of {queue} ended: {other:?}"),
                Err(_) => panic!(
                    "only {} of {n} messages arrived on {queue} within {within:?}",
                    out.len()
                ),
            }
        }
        let _ = ch.close(200, "done".into()).await;
        out
    }

    /// Results as JSON, `n` of them.
    pub async fn results(
        &self,
        s: &Settings,
        n: usize,
        within: Duration,
    ) -> Vec<serde_json::Value> {
        self.take(&s.amqp.results_queue, n, within)
            .await
            .iter()
            .map(|d| {
                let result = serde_json::from_slice(&d.data).expect("result is JSON");
                super::schema::assert_valid_result(&result);
                result
            })
            .collect()
    }

    /// Messages ready in `queue` (passive declare); unacknowledged ones are not counted,
    /// so "all acked" is checked after the worker's connection closed (unacked messages
    /// are back in the ready count by then).
    pub async fn depth(&self, queue: &str) -> u32 {
        let ch = self.conn.create_channel().await.expect("channel");
        let q = ch
            .queue_declare(
                queue.into(),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .expect("passive declare");
        let _ = ch.close(200, "done".into()).await;
        q.message_count()
    }

    pub async fn purge(&self, queue: &str) {
        let _ = self
            .ch
            .queue_purge(queue.into(), QueuePurgeOptions::default())
            .await;
    }
}

/// A page comfortably over `min_body_bytes`.
pub fn page(extra: &str) -> String {
    format!(
        "<html><head><title>County office</title></head><body><p>Welcome to the county office. \
         Opening hours and services are listed below.</p>{extra}</body></html>"
    )
}

/// The probe engine in this process, with in-memory state and a local limiter: for
/// tests of probing itself, no broker. `probe` lines go into `[probe]` (after short
/// test timeouts), `toml` after the other sections; private targets are allowed and the
/// per-IP limits are out of the way.
pub fn engine_with(probe: &str, toml: &str) -> picket::engine::Engine {
    let text = format!(
        r#"
[probe]
retry_delay = "50ms"
timeout = "5s"
{probe}
[rate_limit.per_ip]
rate = 1000.0
burst = 1000
max_inflight = 100
[targets]
allow_private = true
{toml}
"#
    );
    engine_from_toml(&text)
}

/// The engine a worker runs over `s`, in process: the Redis limiter shared as between
/// workers (its leases outlast the probe's time), the state in memory.
pub fn engine_on_redis(s: &Settings) -> std::sync::Arc<picket::engine::Engine> {
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("redis pool");
    let limiter = picket::limit::redis::shared(
        pool,
        &s.redis,
        &s.rate_limit,
        s.probe.timeout + std::time::Duration::from_secs(10),
        "in-process",
    );
    let state = std::sync::Arc::new(picket::state::MemoryState::default());
    std::sync::Arc::new(picket::app::engine(s, state, limiter).expect("engine"))
}

/// The in-process engine of [`engine_with`] over a whole configuration.
pub fn engine_from_toml(text: &str) -> picket::engine::Engine {
    let s = Settings::from_toml(text).unwrap_or_else(|e| panic!("settings: {e}\n{text}"));
    picket::app::engine(
        &s,
        std::sync::Arc::new(picket::state::MemoryState::default()),
        std::sync::Arc::new(picket::limit::local::LocalLimiter::new(&s.rate_limit)),
    )
    .expect("engine")
}

/// Runs one URL through `engine`.
pub async fn check(engine: &picket::engine::Engine, url: &str) -> picket::job::Report {
    let job = picket::job::job_for_url(url, "in-process").expect("a job for the URL");
    run_valid(engine, &job).await
}

/// Runs `job` through `engine`; its result must hold to the result schema.
async fn run_valid(engine: &picket::engine::Engine, job: &picket::job::Job) -> picket::job::Report {
    let report = engine.run(job).await;
    super::schema::assert_valid_result(&serde_json::to_value(&report).expect("report is JSON"));
    report
}

/// Runs one job, given as its JSON, through `engine`.
pub async fn check_job(
    engine: &picket::engine::Engine,
    job: serde_json::Value,
) -> picket::job::Report {
    let bytes = serde_json::to_vec(&job).expect("job JSON");
    let job = match picket::job::decode(&bytes, "in-process", 1 << 20) {
        Ok(picket::job::Decoded::Job(job)) => job,
        other => panic!("not a valid job: {job}: {:?}", other.err()),
    };
    run_valid(engine, &job).await
}

/// The Redis keys (record, last report) of the state of a plain check of `url`.
pub fn state_keys(s: &Settings, url: &str) -> (String, String) {
    let job = picket::job::job_for_url(url, "k").expect("a job for the URL");
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    picket::state::RedisState::new(pool, &s.redis).keys(&job.key)
}

/// The real `picket` binary with `args` and `--config config`, no `PICKET_CONFIG`
/// from the environment, and no colour.
pub fn picket_command(args: &[&str], config: &std::path::Path) -> std::process::Command {
    let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_picket"));
    c.args(args)
        .arg("--config")
        .arg(config)
        .env_remove("PICKET_CONFIG")
        .env("NO_COLOR", "1");
    c
}

/// Runs `cmd` with `input` on its standard input and gathers what it printed.
pub fn run_with_stdin(mut cmd: std::process::Command, input: &str) -> std::process::Output {
    use std::io::Write;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn picket");
    child
        .stdin
        .take()
        .expect("stdin")
        .write_all(input.as_bytes())
        .expect("write stdin");
    child.wait_with_output().expect("picket exits")
}

/// `picket check -` (the real binary, or `sh` wrapping it) with URLs written one at a
/// time, each result read back before the next: for what a process learns between
/// checks (files it rereads, clocks it compares).
pub struct Checking {
    _child: tokio::process::Child,
    urls: tokio::process::ChildStdin,
    results: tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStdout>>,
}

impl Checking {
    /// Starts `cmd`, which runs `picket check --json ... -`.
    pub fn start(mut cmd: tokio::process::Command) -> Checking {
        let mut child = cmd
            .env_remove("PICKET_CONFIG")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .expect("picket check starts");
        let urls = child.stdin.take().expect("picket's stdin");
        let out = child.stdout.take().expect("picket's stdout");
        let results = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(out));
        Checking {
            _child: child,
            urls,
            results,
        }
    }

    /// The result of checking `url`.
    pub async fn check(&mut self, url: &str) -> picket::job::Report {
        use tokio::io::AsyncWriteExt;
        let line = format!("{url}\n");
        self.urls
            .write_all(line.as_bytes())
            .await
            .expect("a URL to picket");
        self.urls.flush().await.expect("a URL to picket");
        let next = tokio::time::timeout(Duration::from_secs(20), self.results.next_line());
        let line = next
            .await
            .expect("a result within 20 s")
            .expect("picket's output")
            .expect("a result before picket's output ends");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("a result ({e}): {line}"))
    }
}

/// The config of worker processes that may probe loopback and log JSON, its settings,
/// and a client of the shared broker with the topology declared.
pub async fn workers_on_the_shared_broker() -> (String, picket::config::Settings, Client) {
    let toml = format!(
        "{}\n[targets]\nallow_private = true\n[log]\nformat = \"json\"\n",
        base_toml()
    );
    let s = picket::config::Settings::from_toml(&toml).expect("settings");
    let client = Client::connect().await;
    client.declare(&s).await;
    (toml, s, client)
}
