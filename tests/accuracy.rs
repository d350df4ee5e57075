//! Accuracy against the hostile target farm (`support::farm`): every target goes through
//! the real binary, `picket check --config FILE --file JOBS`, in one run (the targets are
//! probed concurrently), and each result must carry the verdict and reason picket is
//! expected to give, plus the target's extra facts (redirects, truncation, attempts,
//! charset, ...). The table of results is printed for docs/ACCURACY.md:
//!
//! ```sh
//! cargo test --test integration accuracy -- --nocapture
//! ```
//!
//! A target whose truth (what a person with a browser would say) differs from what
//! picket says today is a known accuracy bug: the main test only reports it, and a test
//! of its own, ignored until the bug is fixed, asserts the truth
//! (`cargo test --test integration accuracy -- --ignored`).

use std::collections::BTreeMap;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::support::farm::{Farm, Target};
use crate::support::unique;

/// Targets on which picket is wrong today; each has an ignored test below.
const KNOWN_BUGS: &[&str] = &[];

/// Runs `picket check` on the named farm targets and returns each result by job id,
/// with the run's wall-clock time.
async fn check(farm: &Farm, names: &[&str]) -> (BTreeMap<String, Value>, Duration) {
    check_with(farm, names, "").await
}

/// [`check`] with `extra` added to the farm's configuration.
async fn check_with(
    farm: &Farm,
    names: &[&str],
    extra: &str,
) -> (BTreeMap<String, Value>, Duration) {
    let run = unique("accuracy");
    let config = farm.dir.path().join(format!("{run}.toml"));
    let jobs = farm.dir.path().join(format!("{run}.jobs"));
    let toml = farm.config_toml() + extra;
    std::fs::write(&config, &toml).expect("write the config");
    std::fs::write(&jobs, farm.jobs(names)).expect("write the jobs");

    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_picket"));
    cmd.arg("check")
        .arg("--config")
        .arg(&config)
        .arg("--file")
        .arg(&jobs)
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (key, _) in std::env::vars() {
        if key.starts_with("PICKET__") {
            cmd.env_remove(key);
        }
    }
    let started = Instant::now();
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        cmd.spawn().expect("start picket check").wait_with_output(),
    )
    .await
    .expect("picket check finishes within 120 s")
    .expect("picket check runs");
    let took = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0: all up, 1: some not up; 2 would be a usage or configuration error.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "picket check failed ({:?})\nconfig:\n{toml}\nstderr:\n{stderr}",
        out.status,
    );
    let mut results = BTreeMap::new();
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        let v: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("result line is not JSON ({e}): {line}"));
        let id = v["job_id"].as_str().expect("job_id").to_string();
        assert!(
            results.insert(id.clone(), v).is_none(),
            "two results for {id}"
        );
    }
    for name in names {
        assert!(
            results.contains_key(*name),
            "no result for {name}\nstdout:\n{stdout}\nstderr:\n{stderr}"
        );
    }
    (results, took)
}

fn cell(s: &str) -> String {
    s.replace('|', "\\|").replace('\n', " ")
}

fn got(r: &Value) -> (&str, &str, &str) {
    (
        r["verdict"].as_str().unwrap_or("?"),
        r["reason"].as_str().unwrap_or("?"),
        r["detail"].as_str().unwrap_or(""),
    )
}

/// One markdown table row.
fn row(t: &Target, r: &Value) -> String {
    let (verdict, reason, detail) = got(r);
    let expected = format!("{}/{}", t.picket.verdict, t.picket.reason);
    let expected = if t.is_known_bug() {
        format!("{expected} ✗ **bug**")
    } else {
        expected
    };
    format!(
        "| `{}` | {} — {} | {} | {verdict}/{reason} | {} |",
        t.name,
        t.truth.code(),
        cell(t.truth.says),
        expected,
        cell(detail)
    )
}

/// How far a result's facts may move from the single run's.
#[derive(Clone, Copy, PartialEq)]
enum Leeway {
    /// Every fact as `picket check` gives it alone.
    None,
    /// Through workers sharing the default limits a request may find its IP's slot
    /// taken or, on a loaded machine, a first attempt run out of time: asked again, a
    /// site may take more attempts than the single run needs, never fewer.
    MoreAttempts,
    /// A job checked again after a worker died met a site the dead worker had already
    /// asked (a server that resets only its first connection, one that asked us to wait):
    /// its verdict and reason stand, its attempts and detail may differ.
    Retaken,
}

/// Asserts that every result in `results` has the verdict, reason and facts one
/// process gives its target alone (within `leeway`); `how` says how they were got.
fn assert_judged_as_alone(farm: &Farm, results: &[Value], leeway: Leeway, how: &str) {
    let failures: Vec<String> = results
        .iter()
        .flat_map(|r| judged_otherwise(farm.target(r["job_id"].as_str().unwrap_or("?")), r, leeway))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} results judged otherwise {how}:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}

/// What is wrong with `r` as target `t`'s result: its verdict and reason, then each of
/// its facts, within `leeway`.
fn judged_otherwise(t: &Target, r: &Value, leeway: Leeway) -> Vec<String> {
    use crate::support::farm::Fact;
    let mut wrong = Vec::new();
    let (verdict, reason, detail) = got(r);
    if (verdict, reason) != (t.picket.verdict, t.picket.reason) {
        wrong.push(format!(
            "{}: expected {}/{}, got {verdict}/{reason}: {detail}",
            t.name, t.picket.verdict, t.picket.reason
        ));
    }
    let attempts = r["attempts"].as_u64().unwrap_or(0);
    for fact in &t.facts {
        let allowed = match (leeway, fact) {
            (Leeway::None, _) => false,
            (_, Fact::Attempts(n)) => leeway == Leeway::Retaken || attempts >= *n,
            (Leeway::Retaken, Fact::FirstAttemptReason(_) | Fact::DetailContains(_)) => true,
            _ => false,
        };
        match fact.check(r) {
            Err(e) if !allowed => wrong.push(format!("{}: {e}", t.name)),
            _ => {}
        }
    }
    wrong
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_farm_target_gets_the_expected_verdict() {
    let farm = Farm::start().await;
    let names: Vec<&str> = farm.targets.iter().map(|t| t.name).collect();
    let (results, took) = check(&farm, &names).await;

    println!("| target | truth | picket is expected to say | said | detail |");
    println!("| --- | --- | --- | --- | --- |");
    let mut failures = Vec::new();
    let mut fixed = Vec::new();
    for t in &farm.targets {
        let r = &results[t.name];
        println!("{}", row(t, r));
        let (verdict, reason, _) = got(r);
        if t.is_known_bug() {
            // Reported, not asserted: its own ignored test asserts the truth.
            if t.truth.holds(verdict, reason) {
                fixed.push(t.name);
            }
            continue;
        }
        failures.extend(judged_otherwise(t, r, Leeway::None));
        // Every answer explains its time: connect always, the TLS handshake on https.
        if let Some(final_url) = r["http"]["final_url"].as_str() {
            let timing = &r["timing_ms"];
            let https = final_url.starts_with("https:");
            if timing["connect"].as_u64().is_none() || (https && timing["tls"].as_u64().is_none()) {
                failures.push(format!("{}: timing without connect/tls: {timing}", t.name));
            }
        }
    }
    println!(
        "\n{} targets, one `picket check` run: {:.1} s",
        farm.targets.len(),
        took.as_secs_f64()
    );
    for name in &fixed {
        println!("{name}: now tells the truth; un-ignore its test and update the farm");
    }

    let bugs: Vec<&str> = farm
        .targets
        .iter()
        .filter(|t| t.is_known_bug())
        .map(|t| t.name)
        .collect();
    assert_eq!(
        bugs, KNOWN_BUGS,
        "the farm's known bugs and the ignored tests below must match"
    );
    assert!(
        failures.is_empty(),
        "{} of {} targets judged unexpectedly:\n{}",
        failures.len(),
        farm.targets.len(),
        failures.join("\n")
    );
}

/// The farm checked by worker processes sharing the test broker and Redis, with the
/// *default* per-IP limits: the farm's probe, DNS, CA and policy, the tests' broker,
/// Redis and worker tables.
struct FarmWorkers {
    farm: Farm,
    toml: String,
    s: picket::config::Settings,
    client: crate::support::picket::Client,
    workers: Vec<crate::support::worker_process::WorkerProcess>,
    /// Each worker's ops listener (`/metrics`).
    ops: Vec<std::net::SocketAddr>,
}

impl FarmWorkers {
    async fn start(n: usize) -> FarmWorkers {
        FarmWorkers::start_with(n, |toml| toml).await
    }

    /// [`FarmWorkers::start`] with the workers' configuration as `edit` makes it of
    /// the tests' broker, Redis and worker tables and the farm's.
    async fn start_with(n: usize, edit: impl FnOnce(String) -> String) -> FarmWorkers {
        FarmWorkers::on(Farm::start().await, n, edit).await
    }

    /// [`FarmWorkers::start_with`] on a farm already started.
    async fn on(farm: Farm, n: usize, edit: impl FnOnce(String) -> String) -> FarmWorkers {
        use crate::support::picket::{base_toml, Client};
        let base = base_toml();
        let ours = base[..base.find("[probe]").expect("[probe]")].to_string()
            + &base[base.find("[worker]").expect("[worker]")..];
        let farm_toml = farm.config_toml();
        let limits = farm_toml.find("[rate_limit.per_ip]").expect("limits");
        let end = farm_toml.find("[targets]").expect("[targets]");
        let farm_part = format!("{}{}", &farm_toml[..limits], &farm_toml[end..]);
        let toml = edit(format!("{ours}\n{farm_part}\n"));
        let s = picket::config::Settings::from_toml(&toml).expect("settings");
        let client = Client::connect().await;
        client.declare(&s).await;
        let mut farm = FarmWorkers {
            farm,
            toml,
            s,
            client,
            workers: Vec::new(),
            ops: Vec::new(),
        };
        for _ in 0..n {
            farm.add_worker();
        }
        farm
    }

    /// The Redis calls that failed on the workers so far (`picket_redis_errors_total`).
    async fn redis_errors(&self) -> f64 {
        let mut failed = 0.0;
        for ops in &self.ops {
            let (_, text) = crate::support::ops::get_ops(*ops, "/metrics")
                .await
                .expect("metrics");
            failed += text
                .lines()
                .filter(|l| l.starts_with("picket_redis_errors_total{"))
                .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
                .sum::<f64>();
        }
        failed
    }

    /// Three workers on a new farm whose names they look up through a real resolver, a
    /// dnsmasq on `ip` (authoritative for the farm's zone from its hosts, every address
    /// of a name, TTL 0; other names NXDOMAIN), with no `dns.static`.
    async fn resolving_through_dnsmasq(
        ip: &str,
    ) -> (FarmWorkers, crate::support::real::dnsmasq::Dnsmasq) {
        use crate::support::real::dnsmasq::Dnsmasq;
        let farm = Farm::start().await;
        let dnsmasq = Dnsmasq::start(ip, crate::support::farm::DOMAIN, &farm.static_hosts, 0);
        let ours = farm.nameserver.to_string();
        let farm = FarmWorkers::on(farm, 3, |toml| {
            let no_static = &toml[..toml.find("[dns.static]").expect("[dns.static]")];
            no_static.replace(&ours, &dnsmasq.addr)
        })
        .await;
        assert!(farm.s.dns.static_hosts.is_empty(), "{}", farm.toml);
        (farm, dnsmasq)
    }

    /// Three workers on a new farm whose only egress is a squid on `ip`, resolving
    /// through a dnsmasq on `dns_ip` ([`squid_resolving_the_farm`]).
    async fn through_squid(
        dns_ip: &str,
        ip: &str,
    ) -> (
        FarmWorkers,
        (
            crate::support::real::dnsmasq::Dnsmasq,
            crate::support::real::squid::Squid,
        ),
    ) {
        let farm = Farm::start().await;
        let (dnsmasq, squid) = squid_resolving_the_farm(&farm, dns_ip, ip);
        let egress = format!("[[egress]]\nname = \"squid\"\nproxy = \"{}\"\n", squid.url);
        let farm = FarmWorkers::on(farm, 3, |toml| toml + &egress).await;
        (farm, (dnsmasq, squid))
    }

    /// Every worker stopped (SIGTERM), the farm kept for judging.
    async fn stop(self) -> Farm {
        for w in self.workers {
            w.terminate().await;
        }
        self.farm
    }

    /// Three workers on a new farm whose Redis is the one at `url`.
    async fn on_redis(url: &str) -> FarmWorkers {
        let shared = format!("url = \"{}\"", crate::support::servers().redis_url);
        let own = format!("url = \"{url}\"");
        FarmWorkers::start_with(3, |toml| toml.replace(&shared, &own)).await
    }

    /// The workers' debug lines of the network watch for job `id` (an unreached site
    /// believed down: what set out around its attempts), for a failure message.
    fn watch_lines(&self, id: &str) -> Vec<String> {
        let job = format!("\"job_id\":\"{id}\"");
        self.workers
            .iter()
            .flat_map(|w| {
                w.log_text()
                    .lines()
                    .filter(|l| l.contains("the network watch") && l.contains(&job))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    /// One more worker, `farm-wI`, with its own ops port.
    fn add_worker(&mut self) {
        let ops: std::net::SocketAddr = format!("127.0.0.1:{}", crate::support::free_port())
            .parse()
            .expect("an ops address");
        let own = self
            .toml
            .replace(&self.s.http.listen.to_string(), &ops.to_string());
        let name = format!("farm-w{}", self.workers.len());
        // Info: the start line is what a worker is waited for by; the network watch's
        // view of an unreached site believed down tells a judgement's edge
        // (`FarmWorkers::watch_lines`).
        let env = [
            ("PICKET__WORKER__NAME", name.as_str()),
            ("PICKET__LOG__LEVEL", "info,picket::engine::our_side=debug"),
        ];
        let worker = crate::support::worker_process::WorkerProcess::start(&own, &env);
        self.workers.push(worker);
        self.ops.push(ops);
    }

    /// Every target asked once, every result taken, the workers stopped: the farm and
    /// the results.
    async fn round(self) -> (Farm, Vec<Value>) {
        let names = self.names();
        self.publish(&names).await;
        let results = self
            .client
            .results(&self.s, names.len(), Duration::from_secs(240))
            .await;
        let FarmWorkers { farm, workers, .. } = self;
        for w in workers {
            w.terminate().await;
        }
        (farm, results)
    }

    /// Every target asked once through the workers' only egress, `egress`, the workers
    /// stopped: what was judged otherwise than one process judges it straight out, or
    /// asked of the proxy by name (every proxy here tunnels to every port).
    async fn judged_through(self, egress: &str) -> Vec<String> {
        let (farm, results) = self.round().await;
        let mut failures = Vec::new();
        for r in &results {
            let name = r["job_id"].as_str().unwrap_or("?");
            if r["egress"] != egress {
                failures.push(format!("{name}: through {}", r["egress"]));
            }
            failures.extend(judged_otherwise(farm.target(name), r, Leeway::MoreAttempts));
            if r.to_string().contains("asked by name") {
                failures.push(format!("{name}: asked by name: {r}"));
            }
        }
        failures
    }

    fn names(&self) -> Vec<&'static str> {
        self.farm.targets.iter().map(|t| t.name).collect()
    }

    /// Takes results into `results` until every target has one at least: a job a
    /// stopped or killed worker held comes back, and may be answered twice.
    async fn until_every_target_answered(&self, results: &mut Vec<Value>, within: Duration) {
        loop {
            let missing = self.farm.targets.len() - checks_per_target(results).len();
            if missing == 0 {
                return;
            }
            results.extend(self.client.results(&self.s, missing, within).await);
        }
    }

    /// The jobs of the targets `names`, each published to the jobs queue.
    async fn publish(&self, names: &[&str]) {
        for line in self.farm.jobs(names).lines() {
            let job: Value = serde_json::from_str(line).expect("a farm job");
            self.client.job(&self.s, job).await;
        }
    }
}

/// How many results each target (job id) got.
fn checks_per_target(results: &[Value]) -> BTreeMap<&str, usize> {
    let mut seen = BTreeMap::new();
    for r in results {
        *seen.entry(r["job_id"].as_str().unwrap_or("?")).or_insert(0) += 1;
    }
    seen
}

/// The whole farm through the contract as production runs it: three worker processes
/// sharing the broker and Redis, the default per-IP limits, jobs published to the jobs
/// queue and results read from the results exchange. Each target gets the verdict and
/// facts `picket check` is expected to give: workers sharing a limiter, deferring jobs
/// and keeping state give the same verdicts as one process does; and a second round
/// right after gives every site the verdict of the first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_three_workers_gets_the_expected_verdicts() {
    let farm = FarmWorkers::start(3).await;
    let names = farm.names();
    let round = || async {
        farm.publish(&names).await;
        farm.client
            .results(&farm.s, names.len(), Duration::from_secs(240))
            .await
    };
    let results = round().await;
    // A second check of every site, as a monitor makes: the same verdicts, whichever
    // worker takes each job and whatever it met on the first round.
    let again = round().await;
    let farm = farm.stop().await;
    let by_name: BTreeMap<&str, &Value> = results
        .iter()
        .map(|r| (r["job_id"].as_str().expect("job_id"), r))
        .collect();
    let mut failures = Vec::new();
    for r in &again {
        let name = r["job_id"].as_str().unwrap_or("?");
        let (verdict, reason, detail) = got(r);
        let first = by_name.get(name).map(|f| (got(f).0, got(f).1));
        if first != Some((verdict, reason)) {
            failures.push(format!(
                "{name}: {first:?} then {verdict}/{reason}: {detail}"
            ));
        }
    }
    for t in &farm.targets {
        let Some(r) = by_name.get(t.name) else {
            failures.push(format!("{}: no result", t.name));
            continue;
        };
        failures.extend(judged_otherwise(t, r, Leeway::MoreAttempts));
    }
    assert!(
        failures.is_empty(),
        "{} of {} targets judged otherwise through three workers:\n{}",
        failures.len(),
        farm.targets.len(),
        failures.join("\n")
    );
}

/// A worker killed (`kill -9`, as the OOM killer ends one) in the middle of the farm:
/// its unacknowledged jobs go back to the broker and the others, with a worker started
/// in its place, check them. Every target gets a result, and every result, a job
/// checked twice included, the verdict and facts the single run gives: what the dead
/// worker left behind (its leases on IPs' slots, its bookings) makes no site fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_one_of_which_is_killed_gets_the_expected_verdicts() {
    let mut farm = FarmWorkers::start(3).await;
    let names = farm.names();
    farm.publish(&names).await;
    let within = Duration::from_secs(240);
    let mut results = farm.client.results(&farm.s, names.len() / 4, within).await;
    let status = farm.workers[0].kill().await;
    farm.add_worker();
    // The rest, then one at a time until every target has one: a job the dead worker
    // published but did not ack is checked again.
    farm.until_every_target_answered(&mut results, within).await;
    let FarmWorkers { farm, workers, .. } = farm;
    for w in workers.into_iter().skip(1) {
        w.terminate().await;
    }
    let mut failures = Vec::new();
    for r in &results {
        let name = r["job_id"].as_str().unwrap_or("?");
        failures.extend(judged_otherwise(farm.target(name), r, Leeway::Retaken));
    }
    let twice = checks_per_target(&results)
        .values()
        .filter(|n| **n > 1)
        .count();
    println!(
        "killed: {status:?}; {} results, {twice} targets checked twice",
        results.len()
    );
    assert!(
        failures.is_empty(),
        "{} of {} results judged otherwise with a worker killed:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}

/// A rolling restart: one of three workers stopped (SIGTERM, as a deploy stops it) in
/// the middle of the farm and a new one started, on a quorum jobs queue (as a cluster's
/// operators declare it), where what the stopped worker held is handed back as acked
/// copies. Every target gets one result at least, each with the verdict, reason and
/// facts one process gives alone (attempts may be more).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_a_rolling_restart_gets_the_expected_verdicts() {
    let mut farm = FarmWorkers::start_with(3, |toml| {
        toml.replacen("[amqp]\n", "[amqp]\nqueue_type = \"quorum\"\n", 1)
    })
    .await;
    assert_eq!(
        farm.s.amqp.queue_type,
        picket::config::QueueType::Quorum,
        "a quorum jobs queue"
    );
    let names = farm.names();
    farm.publish(&names).await;
    let within = Duration::from_secs(240);
    let mut results = farm.client.results(&farm.s, names.len() / 4, within).await;
    farm.workers.remove(0).terminate().await;
    farm.add_worker();
    farm.until_every_target_answered(&mut results, within).await;
    let farm = farm.stop().await;
    println!("{} results for {} targets", results.len(), names.len());
    assert_judged_as_alone(
        &farm,
        &results,
        Leeway::MoreAttempts,
        "through a rolling restart",
    );
}

/// A Redis server of the test's own, to stop or pause.
async fn private_redis() -> crate::support::redis_server::RedisServer {
    tokio::task::spawn_blocking(crate::support::redis_server::RedisServer::launch)
        .await
        .expect("join")
        .expect("a private redis-server")
}

/// Redis, which every worker's limits, deferred jobs and state go through, stopped in the
/// middle of the farm and started again (a restart, a failover without Sentinel): the
/// workers carry on with their share of each limit and no state, then take Redis up
/// again. Every target gets the single run's verdict and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_whose_redis_restarts_gets_the_expected_verdicts() {
    let redis = std::sync::Arc::new(private_redis().await);
    let farm = FarmWorkers::on_redis(redis.url()).await;
    let names = farm.names();
    farm.publish(&names).await;
    let within = Duration::from_secs(240);
    let mut results = farm.client.results(&farm.s, names.len() / 4, within).await;
    let r = redis.clone();
    tokio::task::spawn_blocking(move || r.stop())
        .await
        .expect("stop");
    let stopped = Instant::now();
    // Away for a good part of the round (about 15 s), the jobs going on meanwhile.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let r = redis.clone();
    tokio::task::spawn_blocking(move || r.start())
        .await
        .expect("start");
    let away = stopped.elapsed();
    let rest = names.len() - results.len();
    results.extend(farm.client.results(&farm.s, rest, within).await);
    // The outage was met: Redis calls failed on the workers.
    let failed_calls = farm.redis_errors().await;
    let farm = farm.stop().await;
    println!("Redis away {away:?}; {failed_calls} Redis calls failed");
    assert!(
        failed_calls > 0.0,
        "no Redis call failed: the outage was not met"
    );
    assert_judged_as_alone(
        &farm,
        &results,
        Leeway::MoreAttempts,
        "through a Redis restart",
    );
}

/// Redis hangs for 8 s in the middle of the farm (SIGSTOP: its connections stay open
/// and carry nothing, as a host that hangs or a network that drops everything): the
/// workers go on with their share of each limit, and every target gets the single
/// run's verdict and reason. Redis is never a site's fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_whose_redis_hangs_gets_the_expected_verdicts() {
    let redis = private_redis().await;
    let farm = FarmWorkers::on_redis(redis.url()).await;
    let names = farm.names();
    farm.publish(&names).await;
    let within = Duration::from_secs(240);
    let mut results = farm.client.results(&farm.s, names.len() / 8, within).await;
    redis.freeze();
    // Several of `redis.timeout`s (2 s): calls time out, connections are made again
    // and hang too, state steps go unanswered.
    tokio::time::sleep(Duration::from_secs(12)).await;
    redis.thaw();
    let rest = names.len() - results.len();
    results.extend(farm.client.results(&farm.s, rest, within).await);
    let failed_calls = farm.redis_errors().await;
    let farm = farm.stop().await;
    assert!(
        failed_calls > 0.0,
        "no Redis call failed: the hang was not met"
    );
    // One result per job: a job handed back was not also answered the first time.
    let answered: std::collections::BTreeSet<&str> = results
        .iter()
        .filter_map(|r| r["job_id"].as_str())
        .collect();
    assert_eq!(
        answered.len(),
        names.len(),
        "jobs answered twice or not at all"
    );
    // A job whose state step went unanswered is handed back to tell its change, and
    // checked again: a site that asked us to wait is then not asked (`Retaken`).
    assert_judged_as_alone(&farm, &results, Leeway::Retaken, "with Redis hung");
}

/// Two ways out, as production rotates them: straight out, and a real SOCKS5 proxy
/// (dante). Jobs go out through either, a `down` is confirmed through the other, and
/// every target still gets the verdict and reason one process gives alone over one
/// egress (its attempts and the detail of a confirmation may differ).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_with_two_egresses_gets_the_expected_verdicts() {
    use crate::support::real::dante::Dante;
    let dante = Dante::start("127.0.12.29", false);
    let egresses = format!(
        "[[egress]]\nname = \"direct\"\n\n[[egress]]\nname = \"dante\"\nproxy = \"{}\"\n",
        dante.url
    );
    let farm = FarmWorkers::start_with(3, |toml| toml + &egresses).await;
    let (farm, results) = farm.round().await;
    let mut failures = Vec::new();
    let mut through = BTreeMap::new();
    for r in &results {
        let name = r["job_id"].as_str().unwrap_or("?");
        *through.entry(r["egress"].to_string()).or_insert(0) += 1;
        failures.extend(judged_otherwise(farm.target(name), r, Leeway::MoreAttempts));
    }
    println!("results by egress: {through:?}");
    assert!(
        failures.is_empty(),
        "{} of {} results judged otherwise through two egresses:\n{}",
        failures.len(),
        results.len(),
        failures.join("\n")
    );
}

/// The farm's names looked up as production looks them up, through a real resolver
/// (dnsmasq, authoritative for the farm's zone from its hosts, every address of a name,
/// TTL 0), not `dns.static`: every target gets the same verdict and reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_resolving_through_dnsmasq_gets_the_expected_verdicts() {
    let (farm, _dnsmasq) = FarmWorkers::resolving_through_dnsmasq("127.0.12.52").await;
    let (farm, results) = farm.round().await;
    assert_judged_as_alone(&farm, &results, Leeway::None, "resolving through dnsmasq");
}

/// An HTTP proxy as the only way out (a real squid, its CONNECT tunnels to the counted
/// address): every target gets the verdict and reason one process gives straight out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_with_squid_as_the_only_egress_gets_the_expected_verdicts() {
    let (farm, _squid) = FarmWorkers::through_squid("127.0.12.51", "127.0.12.49").await;
    let failures = farm.judged_through("squid").await;
    assert!(
        failures.is_empty(),
        "{} results judged otherwise through squid:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A squid on `ip` whose own lookups go to a dnsmasq on `dns_ip` port 53 that knows the
/// farm's names (any other NXDOMAIN), as production's squid asks the network's resolver.
fn squid_resolving_the_farm(
    farm: &Farm,
    dns_ip: &str,
    ip: &str,
) -> (
    crate::support::real::dnsmasq::Dnsmasq,
    crate::support::real::squid::Squid,
) {
    use crate::support::farm::DOMAIN;
    use crate::support::real::{dnsmasq::Dnsmasq, squid::Squid};
    let dnsmasq = Dnsmasq::on_port(dns_ip, 53, DOMAIN, &farm.static_hosts, 60);
    (dnsmasq, Squid::resolving_through(ip, dns_ip))
}

/// An HTTPS proxy as the only way out (haproxy taking TLS before a squid, as a load
/// balancer before a company's proxies): TLS to the proxy, and the site's own TLS, or
/// OpenSSL's for a legacy server, inside it. Every target gets the verdict and reason
/// one process gives straight out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_with_an_https_proxy_as_the_only_egress_gets_the_expected_verdicts(
) {
    use crate::support::farm::Pki;
    use crate::support::real::haproxy::Haproxy;
    let farm = Farm::start().await;
    let (_dnsmasq, squid) = squid_resolving_the_farm(&farm, "127.0.12.57", "127.0.12.58");
    let (pki, proxy_ca) = Pki::with_ca_file(farm.dir.path());
    let name = "proxy.egress.test";
    let (cert, key) = pki.leaf_pem(name);
    let pem = farm.dir.path().join("proxy.pem");
    std::fs::write(&pem, format!("{cert}{key}")).expect("write the proxy's pem");
    let squid_at = squid.url.trim_start_matches("http://");
    let front = Haproxy::tls_front("127.0.12.59", squid_at, &pem.display().to_string());
    // The farm's CA and the proxy's in one file.
    let both = farm.dir.path().join("farm-and-proxy-ca.pem");
    let cas = std::fs::read_to_string(&farm.ca_file).expect("farm CA")
        + &std::fs::read_to_string(&proxy_ca).expect("proxy CA");
    std::fs::write(&both, cas).expect("write both CAs");
    let farm_ca = farm.ca_file.display().to_string();
    let egress = format!(
        "\"{name}\" = \"127.0.12.59\"\n[[egress]]\nname = \"https-proxy\"\nproxy = \"https://{name}:{}\"\n",
        front.port
    );
    let farm = FarmWorkers::on(farm, 3, |toml| {
        toml.replace(&farm_ca, &both.display().to_string()) + &egress
    })
    .await;
    let failures = farm.judged_through("https-proxy").await;
    assert!(
        failures.is_empty(),
        "{} results judged otherwise through an HTTPS proxy:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The only egress, a squid, hangs for 8 s mid-round (SIGSTOP: the kernel still takes
/// connections, nothing answers them), then runs again with what queued meanwhile. A
/// site asked through it meanwhile is the egress failing (`unknown/egress_unavailable`),
/// never down; every other gets the verdict and reason one process gives straight out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_whose_only_proxy_hangs_gets_the_expected_verdicts() {
    let (farm, (_dnsmasq, squid)) = FarmWorkers::through_squid("127.0.12.62", "127.0.12.63").await;
    through_a_server_that_hangs(farm, &squid.daemon, &["egress_unavailable"], (4, 8)).await;
}

/// The same with a SOCKS5 proxy (dante) as the only egress.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_whose_only_socks_proxy_hangs_gets_the_expected_verdicts() {
    use crate::support::real::dante::Dante;
    let dante = Dante::start("127.0.12.64", false);
    let egress = format!("[[egress]]\nname = \"dante\"\nproxy = \"{}\"\n", dante.url);
    let farm = FarmWorkers::start_with(3, |toml| toml + &egress).await;
    through_a_server_that_hangs(farm, &dante.daemon, &["egress_unavailable"], (4, 8)).await;
}

/// The only egress, a SOCKS5 proxy (dante), loses its way out for 8 s mid-round: it
/// still greets and takes every CONNECT, but its connections to the sites hang (their
/// SYNs dropped), as when a proxy's host loses its uplink. One such CONNECT looks like
/// a blackholed site; every site at once through it is the egress failing, never down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_whose_only_socks_proxy_loses_its_way_out_gets_the_expected_verdicts(
) {
    through_dante_whose_way_out_is_cut("127.0.12.60", "127.0.12.61", Cut::Dropping).await;
}

/// The same with an HTTP proxy (squid, resolving through dnsmasq) as the only egress:
/// squid reports each CONNECT's connect timing out (`ERR_CONNECT_FAIL 110`, after its
/// `connect_timeout` of 1 s), as it would for a blackholed site.
///
/// Ignored from 2026-12-06 afternoon to evening as a known accuracy bug at the cut's
/// edge, about one run in eight under load: a site whose first attempt's last
/// connection set out as the cut began (`second-address` after its first address,
/// `tls-incomplete-chain-aia` after its intermediate's fetch) was `down/timeout`
/// "confirmed", the first attempt's moment holding the batch's answers
/// (`OurSide::cut_for` now asks the retry's moment too, `NetworkWatch::fallen_cut`);
/// and a quiet worker's last pages that lacked the job's words, their retries silent
/// with nothing beside them, were `down/timeout` (told now in the site's own words,
/// `combine::sites_own_word`).
///
/// Ignored again: with those fixes it passed every local run (9 of 9, beside two and
/// three other farm runs) but failed one CI check of two, `hsts-then-plain-http`
/// `down/timeout` (its first attempt `down/tls`, now the site's own word too).
///
/// Back in CI from 2026-12-06 night: its failures, printed with the workers' network
/// watch, were nearly all sites whose last request (a redirect's next hop, a cookie or
/// meta-refresh hop, a second address) set out into the cut well after the attempt
/// set out beside answers; a silent attempt is now judged where its last request went
/// out (`Observation::last_asked`). 12 of 12 runs beside the SOCKS one and two busy
/// loops passed, against 7 of 12 before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_whose_only_http_proxy_loses_its_way_out_gets_the_expected_verdicts(
) {
    through_squid_whose_way_out_is_cut(
        ["127.0.12.68", "127.0.12.69", "127.0.12.70"],
        Cut::Dropping,
    )
    .await;
}

/// The only egress, a SOCKS5 proxy (dante), has its way out refused for 8 s mid-round:
/// its host turns away every connection it opens (a reset), so each CONNECT fails at
/// once with "connection refused", as a dead site's does. One such refusal is a dead
/// site; every site at once through it is the egress failing, never down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_whose_only_socks_proxy_is_refused_its_way_out_gets_the_expected_verdicts(
) {
    through_dante_whose_way_out_is_cut("127.0.12.71", "127.0.12.72", Cut::Refusing).await;
}

/// The same with an HTTP proxy (squid, resolving through dnsmasq): squid answers each
/// CONNECT and each request with its error page for a refused connection
/// (`ERR_CONNECT_FAIL 111`), as it would for a dead site.
///
/// Ignored for a few hours of 2026-12-06 as a known accuracy bug: in one CI check of
/// three, two blank pages answered before the cut and refused at their retries were
/// `down/connect` "confirmed" instead of their own `down/body_too_small`. A `down` the
/// site answered is now told in its own words when a retry did not reach it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_whose_only_http_proxy_is_refused_its_way_out_gets_the_expected_verdicts(
) {
    through_squid_whose_way_out_is_cut(
        ["127.0.12.73", "127.0.12.74", "127.0.12.75"],
        Cut::Refusing,
    )
    .await;
}

/// Every target through workers whose only egress is a dante on `ip`, which connects to
/// the sites from `from`, its way out cut (`how`) for 8 s once a quarter of the
/// results are in: those asked meanwhile `unknown`, the rest as one process judges them.
async fn through_dante_whose_way_out_is_cut(ip: &str, from: &str, how: Cut) {
    use crate::support::real::dante::Dante;
    let dante = Dante::start_from(ip, from, false);
    let egress = format!("[[egress]]\nname = \"dante\"\nproxy = \"{}\"\n", dante.url);
    let farm = FarmWorkers::start_with(3, |toml| toml + &egress).await;
    through_a_server_that_hangs(farm, &CutWayOut::new(from, how), &ISSUER_CUT_TOO, (4, 8)).await;
}

/// What a cut of the way out may leave `unknown` besides the egress: an intermediate's
/// fetch that ran out of the probe's time (`rate_limited`: our limits and clock), or
/// whose host was not reached (`tls`: the chain not known), never the chain's failure.
const ISSUER_CUT_TOO: [&str; 3] = ["egress_unavailable", "rate_limited", "tls"];

/// The same through a squid on `ip`, resolving through a dnsmasq on `dns_ip` that knows
/// the farm's names, and connecting to the sites from `from`.
async fn through_squid_whose_way_out_is_cut([ip, dns_ip, from]: [&str; 3], how: Cut) {
    use crate::support::farm::DOMAIN;
    use crate::support::real::{dnsmasq::Dnsmasq, squid::Squid};
    let farm = Farm::start().await;
    let dnsmasq = Dnsmasq::on_port(dns_ip, 53, DOMAIN, &farm.static_hosts, 60);
    let squid = Squid::resolving_through_from(ip, dns_ip, Some(from));
    let egress = format!("[[egress]]\nname = \"squid\"\nproxy = \"{}\"\n", squid.url);
    let farm = FarmWorkers::on(farm, 3, |toml| toml + &egress).await;
    through_a_server_that_hangs(farm, &CutWayOut::new(from, how), &ISSUER_CUT_TOO, (4, 8)).await;
    drop(dnsmasq);
}

/// Something the workers depend on, failing (`begin`) and mended (`end`).
trait Fault: Sync {
    fn begin(&self);
    fn end(&self);
}

/// A server paused (SIGSTOP) and run again.
impl Fault for crate::support::real::Daemon {
    fn begin(&self) {
        self.freeze();
    }
    fn end(&self) {
        self.thaw();
    }
}

/// A proxy's way out to the sites cut and mended.
struct CutWayOut<'a> {
    from: &'a str,
    how: Cut,
    cut: std::sync::Mutex<Option<crate::support::real::way_out::WayOutCut>>,
}

/// How a proxy's way out is cut.
#[derive(Clone, Copy)]
enum Cut {
    /// New connections hang (their SYNs dropped).
    Dropping,
    /// New connections are refused (a reset).
    Refusing,
}

impl CutWayOut<'_> {
    fn new(from: &str, how: Cut) -> CutWayOut<'_> {
        CutWayOut {
            from,
            how,
            cut: std::sync::Mutex::new(None),
        }
    }
}

impl Fault for CutWayOut<'_> {
    fn begin(&self) {
        use crate::support::real::way_out::WayOutCut;
        let cut = match self.how {
            Cut::Dropping => WayOutCut::from(self.from),
            Cut::Refusing => WayOutCut::refusing(self.from),
        };
        *self.cut.lock().expect("cut") = Some(cut);
    }
    fn end(&self) {
        drop(self.cut.lock().expect("cut").take());
    }
}

/// The farm's names looked up through a real resolver (dnsmasq, as the dnsmasq run)
/// that hangs for 20 s from before the jobs go out (both attempts of most jobs within
/// it): a name looked up meanwhile is our side failing, never the site's `down/dns`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_whose_resolver_hangs_gets_the_expected_verdicts() {
    let (farm, dnsmasq) = FarmWorkers::resolving_through_dnsmasq("127.0.12.65").await;
    // Our resolver failing, for a lookup that ran out of time and for one that found
    // every slot held by those (not `dns.max_concurrent`'s `local_resources`).
    let ours = ["egress_unavailable"];
    through_a_server_that_hangs(farm, &dnsmasq.daemon, &ours, (0, 20)).await;
}

/// Every target through `farm`'s workers, a server they depend on (`server`: their
/// only egress's proxy, their resolver) paused for `secs` once one result in `after`
/// is in (0: from before the jobs go out): those asked meanwhile `unknown` for one of
/// the reasons `ours`, the rest as one process judges them straight out.
async fn through_a_server_that_hangs(
    farm: FarmWorkers,
    server: &dyn Fault,
    ours: &[&str],
    (after, secs): (usize, u64),
) {
    let names = farm.names();
    let within = Duration::from_secs(240);
    if after == 0 {
        server.begin();
    }
    farm.publish(&names).await;
    let mut results = match after {
        0 => Vec::new(),
        _ => {
            farm.client
                .results(&farm.s, names.len() / after, within)
                .await
        }
    };
    if after > 0 {
        server.begin();
    }
    tokio::time::sleep(Duration::from_secs(secs)).await;
    server.end();
    let rest = names.len() - results.len();
    results.extend(farm.client.results(&farm.s, rest, within).await);
    let (mut failures, mut wrong_results) = (Vec::new(), 0);
    let mut ours_failing = 0;
    for r in &results {
        let name = r["job_id"].as_str().unwrap_or("?");
        let said = (r["verdict"].as_str(), r["reason"].as_str());
        if said.0 == Some("unknown") && said.1.is_some_and(|r| ours.contains(&r)) {
            ours_failing += 1;
            continue;
        }
        let wrong = judged_otherwise(farm.farm.target(name), r, Leeway::MoreAttempts);
        if !wrong.is_empty() {
            wrong_results += 1;
            failures.extend(wrong);
            failures.extend(farm.watch_lines(name));
        }
    }
    farm.stop().await;
    println!("{ours_failing} results unknown for {ours:?}");
    assert!(
        failures.is_empty(),
        "{wrong_results} results judged otherwise with a server that hung:\n{}",
        failures.join("\n")
    );
    assert!(
        ours_failing > 0,
        "no site was asked while the server hung: the test proves nothing"
    );
}

/// tinyproxy as the only way out (every port open to CONNECT, as it ships without
/// `ConnectPort` lines): every target gets the verdict and reason one process gives
/// straight out. It takes 50 clients at once and leaves the next unaccepted: the three
/// workers are sent no more than 15 each (`max_connections`), leaving room for their
/// questions to it. Without the cap the farm filled it, and in a CI run of stop 69
/// three slow sites' tunnels waited past their time: `unknown`, "it held the request up".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_with_tinyproxy_as_the_only_egress_gets_the_expected_verdicts() {
    use crate::support::real::tinyproxy::Tinyproxy;
    let tinyproxy = Tinyproxy::start("127.0.12.53", "MaxClients 50");
    let egress = format!(
        "[[egress]]\nname = \"tinyproxy\"\nproxy = \"{}\"\nmax_connections = 15\n",
        tinyproxy.url
    );
    let farm = FarmWorkers::start_with(3, |toml| toml + &egress).await;
    let failures = farm.judged_through("tinyproxy").await;
    assert!(
        failures.is_empty(),
        "{} results judged otherwise through tinyproxy:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// Privoxy (a filtering proxy, its actions blocking nothing) as the only way out:
/// every target gets the verdict and reason one process gives straight out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_farm_through_workers_with_privoxy_as_the_only_egress_gets_the_expected_verdicts() {
    use crate::support::real::privoxy::Privoxy;
    // Room for every tunnel the three workers open at once (its default is 128).
    let privoxy = Privoxy::start("127.0.12.54", "max-client-connections 1024", &[]);
    let egress = format!(
        "[[egress]]\nname = \"privoxy\"\nproxy = \"{}\"\n",
        privoxy.url
    );
    let farm = FarmWorkers::start_with(3, |toml| toml + &egress).await;
    let failures = farm.judged_through("privoxy").await;
    assert!(
        failures.is_empty(),
        "{} results judged otherwise through privoxy:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// A head of 600 lines (24 KB) through an HTTP-proxy egress (a real squid, its CONNECT
/// tunnel): read as browsers read it, which limit a head by its size, as on the direct
/// route, never `down/protocol` "message head is too large".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_head_through_an_http_proxy_is_read_as_browsers_read_it() {
    use crate::support::real::squid::Squid;
    let squid = Squid::start("127.0.12.48", false);
    let farm = Farm::start().await;
    let extra = format!(
        "\n[[egress]]\nname = \"squid\"\nproxy = \"{}\"\n",
        squid.url
    );
    let name = "six-hundred-header-lines";
    let (results, _) = check_with(&farm, &[name], &extra).await;
    let r = &results[name];
    assert_eq!(r["egress"], "squid", "{r:#}");
    let wrong = judged_otherwise(farm.target(name), r, Leeway::None);
    assert!(wrong.is_empty(), "{wrong:?}");
}

/// Sites whose chains lack the same CA's intermediate are probed at once (a worker's
/// first minutes): the fetches of the CA's URLs are counted by its IP's limit like any
/// request, and one the limit allows no time for is ours, not the site's. Here the
/// CA's IP allows one request a hundred seconds: the sites whose fetch it refused are
/// `unknown/rate_limited`, never `degraded/tls` for a chain a browser completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_issuer_fetch_our_limit_refused_is_not_the_sites_failure() {
    let farm = Farm::start().await;
    let ca = farm.ca_ip();
    let extra = format!(
        "[[rate_limit.override]]\ncidr = \"{ca}/32\"\nrate = 0.01\nburst = 1\nmax_inflight = 1\n"
    );
    let names = [
        "tls-incomplete-chain-aia",
        "tls-incomplete-chain-aia-moved",
        "tls-incomplete-chain-aia-p7c",
        "tls-incomplete-chain-aia-gone",
    ];
    let (results, _) = check_with(&farm, &names, &extra).await;
    let mut refused = 0;
    let mut wrong = Vec::new();
    for name in names {
        let r = &results[name];
        let (verdict, reason, detail) = got(r);
        let t = farm.target(name);
        if (verdict, reason) == ("unknown", "rate_limited") {
            refused += 1;
        } else if (verdict, reason) != (t.picket.verdict, t.picket.reason) {
            wrong.push(format!("{name}: {verdict}/{reason}: {detail}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        refused > 0,
        "the limit refused no fetch: the test proves nothing"
    );
}

/// Runs one target alone and asserts the truth about it.
async fn tells_the_truth(name: &str) {
    all_tell_the_truth(&[name]).await;
}

/// [`tells_the_truth`] for several targets of one farm, in one run.
async fn all_tell_the_truth(names: &[&str]) {
    let farm = Farm::start().await;
    let (results, _) = check(&farm, names).await;
    let wrong: Vec<String> = names
        .iter()
        .filter_map(|name| {
            let t = farm.target(name);
            let (verdict, reason, detail) = got(&results[*name]);
            (!t.truth.holds(verdict, reason)).then(|| {
                format!(
                    "{name}: the truth is {} ({}), picket said {verdict}/{reason}: {detail}",
                    t.truth.code(),
                    t.truth.says
                )
            })
        })
        .collect();
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_gbk_page_without_declared_charset_is_up() {
    tells_the_truth("gbk-undeclared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_cookie_check_redirect_is_up() {
    tells_the_truth("cookie-redirect").await;
}

/// A cookie whose value is raw UTF-8 made the whole `Cookie` header unreadable as text,
/// so none was sent and the cookie check beside it looped: down/too_many_redirects.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_cookie_with_a_utf8_value_is_sent_with_the_others() {
    tells_the_truth("cookie-utf8").await;
}

/// A whole page whose connection then stays open (a stale length on a kept-alive
/// connection, PHP working on after its output) was down/timeout once the probe's time
/// ran out, though browsers show the page.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_whole_page_on_a_connection_held_open_is_shown() {
    tells_the_truth("whole-page-held-open").await;
}

/// A 302 with an empty Location was followed to the same URL: down/too_many_redirects,
/// where browsers, following only a non-empty Location, show the page under it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_an_empty_location_is_no_redirect() {
    tells_the_truth("empty-location").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_raw_deflate_body_is_up() {
    tells_the_truth("deflate-raw").await;
}

/// reqwest decodes only the exact lower-case names "gzip" and "br": a page labelled
/// "x-gzip" or "GZIP" was judged as its compressed bytes, so `body_contains` failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_gzip_under_its_old_name_or_in_capitals_is_up() {
    tells_the_truth("x-gzip").await;
    tells_the_truth("gzip-capitals").await;
    tells_the_truth("brotli-capitals").await;
}

/// Over plain HTTP browsers ask for gzip and deflate only: a page sent in br or zstd
/// anyway is no page to them (Chromium 156: ERR_CONTENT_DECODING_FAILED; Firefox 153:
/// its compressed bytes). picket decoded it and said up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_coding_browsers_did_not_ask_for_shows_no_page() {
    all_tell_the_truth(&["brotli-unasked", "zstd-unasked"]).await;
    // Asked for over HTTPS, the same codings are the page.
    all_tell_the_truth(&["brotli", "brotli-capitals", "zstd"]).await;
}

/// A page compressed twice says so with a list of codings (`gzip, gzip`, `deflate, gzip`),
/// which browsers decode in reverse order: picket judged the compressed bytes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_page_compressed_twice_is_up() {
    all_tell_the_truth(&["gzip-gzip", "deflate-gzip"]).await;
}

/// A plain page labelled `x-gzip` was judged as an empty body, down/body_too_small "0
/// bytes": nothing of it decodes, a content encoding error to a browser, as the same
/// page labelled `gzip` is down/protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_body_that_does_not_decode_is_down_protocol() {
    all_tell_the_truth(&["gzip-undecodable", "x-gzip-undecodable"]).await;
}

/// A 300 was followed to its Location (a 500 here), where Chrome shows the 300's list of
/// choices; an empty 305 to a working page, which no browser follows, was up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_300_and_305_are_no_redirects() {
    all_tell_the_truth(&["status-300-choices", "status-305-use-proxy"]).await;
}

/// A bot manager that refuses a Chrome User-Agent without the client hints, fetch
/// metadata and codings Chrome sends on every HTTPS navigation: picket sent none of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_bot_manager_checking_chromes_https_headers_lets_picket_in() {
    tells_the_truth("bot-manager").await;
}

/// Chrome and Firefox ask for zstd over HTTPS and CDNs serve it to them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_zstd_encoded_page_is_up() {
    tells_the_truth("zstd").await;
}

/// A web application firewall's block page is the firewall refusing us, as a bot
/// challenge is: it was judged down/http_status, confirmed, a false alarm.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_firewalls_block_page_is_unknown_blocked() {
    tells_the_truth("waf-akamai").await;
    tells_the_truth("waf-imperva").await;
    tells_the_truth("waf-alibaba").await;
    tells_the_truth("waf-modsecurity-406").await;
}

/// A directory listing, a maintenance notice, a web server's default page or an error
/// page in place of the site, answered 200: it was judged up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_page_standing_in_for_the_site_is_not_up() {
    tells_the_truth("directory-listing").await;
    tells_the_truth("maintenance-page").await;
    tells_the_truth("default-tengine").await;
    tells_the_truth("soft-404").await;
    tells_the_truth("php-fatal-error").await;
    tells_the_truth("php-source").await;
    tells_the_truth("php-source-text").await;
    tells_the_truth("octet-stream-html").await;
    tells_the_truth("text-plain-html").await;
    tells_the_truth("attachment-html").await;
}

/// hyper writes HTTP/1 header names in lower case ("host:"); browsers and curl write
/// "Host:", and some old servers read only that: picket was answered 400.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_server_reading_header_names_case_sensitively_is_up() {
    tells_the_truth("header-case-sensitive").await;
}

/// hyper reads only the strict status line; a lower-case version, two spaces before the
/// code or an HTTP/1.2 (which Chrome reads, and curl the first two) was down/protocol.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_status_line_browsers_forgive_is_up() {
    tells_the_truth("status-line-lower-case").await;
    tells_the_truth("status-line-two-spaces").await;
    tells_the_truth("status-line-http-1-2").await;
}

/// A frameset stub (a registrar's masked forwarding) was judged by its own empty text,
/// so the job's keyword, shown to people in the frame, was not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_frameset_is_judged_by_the_page_in_its_frame() {
    tells_the_truth("frameset-masking").await;
}

/// rustls speaks no CBC cipher suite, so a server that allows only those failed the
/// handshake and was `degraded/tls` where Chrome shows the page; such a handshake is
/// now asked again over OpenSSL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_legacy_cbc_tls_is_up() {
    tells_the_truth("tls-legacy-cbc").await;
}

/// Found by an adversarial hunt (URLs and keys, 2026-12-01): degraded/tls, "received
/// corrupt message of type InvalidContentType", as if a certificate were at fault.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_an_https_url_on_a_plain_http_port_is_down_tls() {
    tells_the_truth("https-to-a-plain-port").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_self_signed_certificate_is_degraded_tls() {
    tells_the_truth("tls-self-signed").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_expired_certificate_is_degraded_tls() {
    tells_the_truth("tls-expired").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_wrong_name_certificate_is_degraded_tls() {
    tells_the_truth("tls-wrong-name").await;
}

/// LinkedIn-style sites answer scripts 999 while people see the page: picket said
/// down/http_status, crying wolf.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_999_refusal_of_scripts_is_unknown_blocked() {
    tells_the_truth("status-999").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_incomplete_chain_is_degraded_tls() {
    tells_the_truth("tls-incomplete-chain").await;
}

/// A site that sends its certificate without the intermediate, but whose certificate
/// names where the intermediate is (AIA `caIssuers`), is shown by browsers: they fetch
/// it. picket said degraded/tls, as curl does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_incomplete_chain_naming_its_issuer_is_up() {
    tells_the_truth("tls-incomplete-chain-aia").await;
}

/// The URL the certificate names redirects (a CA that moved its files): browsers follow
/// it. picket said degraded/tls ("answered 301 Moved Permanently").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_incomplete_chain_naming_a_moved_issuer_is_up() {
    tells_the_truth("tls-incomplete-chain-aia-moved").await;
}

/// The URL the certificate names serves a certs-only PKCS#7 bundle (`.p7c`), as US
/// federal and other government CAs do: browsers read it. picket said degraded/tls ("not
/// a certificate").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_incomplete_chain_naming_a_pkcs7_bundle_is_up() {
    tells_the_truth("tls-incomplete-chain-aia-p7c").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_incomplete_chain_naming_a_missing_issuer_is_degraded_tls() {
    tells_the_truth("tls-incomplete-chain-aia-gone").await;
}

/// A 200 above min_body_bytes on which a person sees nothing (white space, an empty
/// document, a WordPress white screen, a byte-order mark, NUL bytes) was up/ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_blank_page_is_not_up() {
    all_tell_the_truth(&[
        "blank-whitespace",
        "blank-empty-html",
        "blank-white-screen",
        "blank-bom-crlf",
        "blank-nul-bytes",
        "spa-shell",
        "image-only",
    ])
    .await;
}

/// A bot wall that answers 200 (DDoS-Guard's "Checking your browser", a testcookie
/// stub that sets a cookie and reloads) was up/ok, and Jiasule's 521 cookie wall
/// down/http_status: all refuse us, and browsers pass them at once. Cloudflare's own
/// 521 and a login page asking for a captcha stay what they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_bot_wall_on_any_status_is_unknown_blocked() {
    all_tell_the_truth(&[
        "challenge-200",
        "cookie-wall-200",
        "jiasule-521",
        "cloudflare-521",
        "captcha-login-200",
    ])
    .await;
}

/// A 503 maintenance page with a reCAPTCHA on its contact form was taken for a bot wall,
/// unknown/blocked, hiding the outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_captcha_on_an_outage_page_is_no_wall() {
    all_tell_the_truth(&["outage-503-recaptcha", "bot-challenge"]).await;
}

/// "Access denied" in a comment, a template, a style or an attribute of a working page
/// made it degraded/body_mismatch, though no person reads it there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_words_out_of_sight_are_not_a_soft_failure() {
    tells_the_truth("phrases-out-of-sight").await;
}

/// "Access denied" in an element hidden by an inline `display:none` or
/// `visibility:hidden`, or by the `hidden` attribute, made a working page
/// degraded/body_mismatch, though no person sees it; a block page with hidden parts of
/// its own stays what it is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_words_in_hidden_elements_are_not_a_soft_failure() {
    all_tell_the_truth(&["phrases-hidden", "block-page-hidden-parts"]).await;
}

/// Hunt O: a page over TLS whose end is the connection's close, closed without TLS's
/// close_notify (old and embedded servers), was degraded/protocol "the body broke off";
/// browsers and curl show it whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_page_closed_without_close_notify_is_up() {
    tells_the_truth("tls-close-without-close-notify").await;
}

/// Hunt Q: a <meta> in a comment decided the charset, a <meta> naming UTF-16 decoded
/// UTF-8 bytes as UTF-16LE (both lost the keyword: false downs), a chain re-setting its
/// cookies on every hop dropped the late check's cookie (a false redirect loop), and a
/// page gzip-compressed twice and labelled once, garbage in a browser, was up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_hunt_q_charsets_cookies_and_double_gzip() {
    all_tell_the_truth(&[
        "utf8-meta-commented-gb2312",
        "utf8-meta-says-unicode",
        "cookie-chain-late-check",
        "gzip-twice-labelled-once",
        "zstd-capitals",
        "gzip-without-trailer",
    ])
    .await;
}

/// Hunt Q: heads hyper refuses and browsers read were confirmed `down/protocol`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_hunt_q_heads_browsers_read() {
    all_tell_the_truth(&[
        "header-lines-end-cr-cr-lf",
        "header-line-lone-cr",
        "status-line-no-space-before-reason",
        "status-line-after-a-space",
        "lower-case-status-line-after-100",
        "content-length-with-a-sign",
        "http-1-0-saying-chunked",
        "six-hundred-header-lines",
    ])
    .await;
}

/// Review X: `mend` drops a `Content-Length` that is not digits, as Chrome takes no
/// length from it, but keeps one that is digits and too big, which Chrome takes as no
/// length just the same: `18446744073709551615` ((size_t)-1, a server that does not know
/// its length) fails Chrome's StringToInt64 (no length: read to the close) and curl
/// says "Overflow Content-Length" and reads to the close. hyper refuses it ("message
/// head is too large"), the mend route keeps it and hyper refuses it again: a false
/// `down/protocol`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_x_a_content_length_too_big_for_a_number_is_read_to_the_close() {
    all_tell_the_truth(&["review-x-content-length-all-ones"]).await;
}

/// Review X: since 8cd8035 any head parse error is asked again through `mend`, which
/// drops a `Content-Length` that is no number and keeps the others. `Content-Length:
/// abc` beside a true `Content-Length: N` is two differing lengths, which Chrome refuses
/// (ERR_RESPONSE_HEADERS_MULTIPLE_CONTENT_LENGTH, its response-smuggling guard), as do
/// Firefox (NS_ERROR_CORRUPTED_CONTENT) and curl ("Invalid Content-Length"); before
/// 8cd8035 picket said `down/protocol` too. Now `mend` drops `abc`, hyper reads N
/// bytes, and picket says `up`: a false `up` no browser shows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_x_two_differing_content_lengths_are_no_page() {
    all_tell_the_truth(&["review-x-content-length-twice-one-no-number"]).await;
}

/// Review X: a page gzip-compressed twice and labelled `gzip` on two Content-Encoding
/// lines is shown by Chrome and Firefox (one list, both undone). reqwest undoes one
/// layer and drops both lines (a known gap in `http/body.rs`), and 8d98d6f's
/// `still_compressed` now takes the gzip data left for a page browsers show as
/// compressed bytes: degraded/body_mismatch, where before 8d98d6f it was up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_x_gzip_twice_labelled_on_two_lines_is_up() {
    all_tell_the_truth(&["review-x-gzip-twice-labelled-on-two-lines"]).await;
}

/// Hunt O: an HTTPS page that sent Strict-Transport-Security and redirected to plain
/// HTTP was followed over plain HTTP, `up`; browsers ask that host only over HTTPS.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_redirect_to_plain_http_after_hsts_is_asked_over_https() {
    tells_the_truth("hsts-then-plain-http").await;
}

/// Chunks whose lines end in a bare LF, which Chrome and curl read: hyper refused them,
/// and the page was down/protocol ("Invalid chunk size line"), or judged on the half
/// that came before the first bare LF.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_chunks_ended_by_a_bare_lf_are_read_as_browsers_read_them() {
    all_tell_the_truth(&["chunk-lines-ended-by-lf", "chunk-data-ended-by-lf"]).await;
}

/// A cookie check whose cookie has no name (`Set-Cookie: chk1`) looped: the cookie store
/// refuses a cookie without a name, where Chrome keeps it and sends `Cookie: chk1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn truth_a_cookie_without_a_name_is_sent_back() {
    tells_the_truth("cookie-nameless").await;
}

/// `tls.expiry_by_lifetime` (hunt Z1a: Caddy's 12-hour certificates, Let's Encrypt's
/// 6-day ones, were degraded on every check): a short-lived certificate renewed on
/// schedule is up, and a long one near its end is still degraded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_lived_certificate_is_judged_by_its_life_when_asked() {
    let farm = Farm::start().await;
    let toml = farm
        .config_toml()
        .replace("[tls]\n", "[tls]\nexpiry_by_lifetime = true\n");
    let e = crate::support::picket::engine_from_toml(&toml);
    for (name, verdict, reason) in [
        ("tls-short-lived", "up", "ok"),
        ("tls-expiring-soon", "degraded", "tls"),
    ] {
        let r = crate::support::picket::check(&e, &farm.target(name).url).await;
        assert_eq!(
            (r.verdict.as_str(), r.reason.as_str()),
            (verdict, reason),
            "{name}: {}",
            r.detail
        );
        assert!(r.tls_days_left.is_some(), "{name}");
    }
}

/// `probe.max_latency`: a limit for the jobs that name none (a fleet of thousands of
/// sites is not given a `max_latency_ms` each, and a site taking 25 s to answer was `up`
/// with nothing said). The farm's page after 1.5 s is `degraded/slow` under a 1 s limit,
/// a job's own `max_latency_ms` wins over it, and a quick page stays `up`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_default_latency_limit_makes_slow_sites_degraded_when_set() {
    let farm = Farm::start().await;
    let toml = farm
        .config_toml()
        .replace("[probe]\n", "[probe]\nmax_latency = \"1s\"\n");
    let e = crate::support::picket::engine_from_toml(&toml);
    let slow = farm.target("slow-first-byte").url.clone();
    let judged = [
        (
            crate::support::picket::check(&e, &slow).await,
            ("degraded", "slow"),
        ),
        (
            crate::support::picket::check(&e, &farm.target("healthy").url).await,
            ("up", "ok"),
        ),
        (
            crate::support::picket::check_job(
                &e,
                serde_json::json!({"url": slow, "expect": {"max_latency_ms": 3000}}),
            )
            .await,
            ("up", "ok"),
        ),
    ];
    for (r, expected) in judged {
        assert_eq!(
            (r.verdict.as_str(), r.reason.as_str()),
            expected,
            "{}: {}",
            r.url,
            r.detail
        );
    }
}
