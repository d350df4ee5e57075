//! The broker and Redis over TLS (`amqps://`, `rediss://`), as managed services and
//! careful operators require: a real RabbitMQ and a real redis-server serving TLS with
//! certificates from a test CA, trusted through `amqp.ca_file` and `redis.ca_file`.
//! Jobs, results and state go through them, and a certificate that cannot be verified
//! is refused, never used.

use std::time::{Duration, Instant};

use picket::config::Settings;
use picket::job::Verdict;
use picket::state::{Delivery, RedisState, StateStore};

use crate::support::farm::Pki;
use crate::support::picket::{base_toml, page, picket_command, run_with_stdin};
use crate::support::rabbitmq::{NodeSetup, RabbitServer, TlsFiles};
use crate::support::redis_server::SENTINEL_MASTER;
use crate::support::{serve, servers, unique, RedisCluster, RedisSentinels, RedisServer};
use testbed::tls::RedisTls;

/// A certificate for 127.0.0.1 signed by a fresh test CA, in PEM files in `dir`; and
/// picket's client certificate from the same CA, in `client.pem` and `client.key`.
fn certificate(dir: &std::path::Path, verify_clients: bool) -> TlsFiles {
    let pki = Pki::new();
    let (cert, key) = pki.leaf_pem("127.0.0.1");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a PEM file");
        path
    };
    let (client, client_key) = pki.client_pem("picket-worker");
    write("client.pem", &client);
    write("client.key", &client_key);
    TlsFiles {
        ca: write("ca.pem", &pki.ca.pem()),
        cert: write("server.pem", &cert),
        key: write("server.key", &key),
        verify_clients,
    }
}

/// The `client_cert_file` and `client_key_file` lines for the client certificate in `dir`.
fn client_identity(dir: &std::path::Path) -> String {
    format!(
        "client_cert_file = \"{}\"\nclient_key_file = \"{}\"\n",
        dir.join("client.pem").display(),
        dir.join("client.key").display()
    )
}

/// A redis-server with TLS on a port of its own (asking clients for a certificate when
/// `verify_clients`); and the CA's PEM file.
fn redis_over_tls(
    dir: &std::path::Path,
    verify_clients: bool,
) -> (RedisServer, std::path::PathBuf) {
    let f = certificate(dir, verify_clients);
    let server = if verify_clients {
        RedisServer::launch_mutual_tls(&f.cert, &f.key, &f.ca)
    } else {
        RedisServer::launch_tls(&f.cert, &f.key, &f.ca)
    };
    (server.expect("redis-server with TLS"), f.ca)
}

fn settings(url: &str, ca: Option<&std::path::Path>) -> Settings {
    settings_with(url, ca, "")
}

fn settings_with(url: &str, ca: Option<&std::path::Path>, more: &str) -> Settings {
    let ca = ca.map_or(String::new(), |p| {
        format!("ca_file = \"{}\"\n", p.display())
    });
    let text = format!(
        "[redis]\nurl = \"{url}\"\n{ca}{more}key_prefix = \"{}:\"\ntimeout = \"2s\"\n",
        unique("tls")
    );
    Settings::from_toml(&text).expect("settings")
}

async fn step_twice(s: &Settings) -> Vec<Option<Verdict>> {
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let state = RedisState::new(pool, &s.redis);
    let engine = crate::support::picket::engine_from_toml("");
    let job = picket::job::job_for_url("http://127.0.0.1:1/", "tls").expect("job");
    let mut previous = Vec::new();
    for n in 0..2 {
        let mut report = engine.run(&job).await;
        report.verdict = Verdict::Down;
        let id = format!("job-{n}");
        let delivery = Delivery {
            id: &id,
            redelivered: false,
        };
        let answer =
            tokio::time::timeout(Duration::from_secs(10), state.step(&report, None, delivery))
                .await
                .expect("a step within its timeout");
        previous.push(answer.and_then(|a| a.previous));
    }
    previous
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_kept_in_a_redis_over_tls_whose_ca_is_configured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (redis, ca) = redis_over_tls(dir.path(), false);
    let url = redis.tls_url().expect("a TLS port");
    let kept = step_twice(&settings(&url, Some(&ca))).await;
    assert_eq!(
        kept,
        vec![None, Some(Verdict::Down)],
        "the second check sees the first one's verdict, kept in Redis over TLS"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_certificate_that_cannot_be_verified_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (redis, _ca) = redis_over_tls(dir.path(), false);
    let url = redis.tls_url().expect("a TLS port");
    // No CA configured: the system's trust store does not know the test CA.
    let kept = step_twice(&settings(&url, None)).await;
    assert_eq!(
        kept,
        vec![None, None],
        "no state through an unverified connection"
    );
}

/// redis-server asks TLS clients for a certificate by default (`tls-auth-clients yes`):
/// picket shows its own from `redis.client_cert_file` and `redis.client_key_file`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_that_asks_for_a_client_certificate_gets_picket_s() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (redis, ca) = redis_over_tls(dir.path(), true);
    let url = redis.tls_url().expect("a TLS port");
    let identity = client_identity(dir.path());
    let kept = step_twice(&settings_with(&url, Some(&ca), &identity)).await;
    assert_eq!(
        kept,
        vec![None, Some(Verdict::Down)],
        "state kept through a connection that showed picket's certificate"
    );
    let without = settings(&url, Some(&ca));
    assert_eq!(
        step_twice(&without).await,
        vec![None, None],
        "no state without a certificate"
    );
    // What the worker logs says what to set.
    let pool = picket::redis_pool::redis_pool(&without.redis).expect("pool");
    let error = pool
        .get()
        .await
        .err()
        .expect("refused without a certificate");
    assert!(error.contains("redis.client_cert_file"), "{error}");
}

/// Certificates are renewed in place (cert-manager, Vault, a cron job): the next
/// connection to Redis shows the certificate the files hold then, without a restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_renewed_redis_client_certificate_is_used_at_the_next_connection() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (redis, ca) = redis_over_tls(dir.path(), true);
    let url = redis.tls_url().expect("a TLS port");
    let (cert, key) = (dir.path().join("client.pem"), dir.path().join("client.key"));
    let renewed = (
        std::fs::read(&cert).expect("cert"),
        std::fs::read(&key).expect("key"),
    );
    // Until the renewal, the files hold a certificate Redis does not trust.
    let (stale_cert, stale_key) = Pki::new().client_pem("picket-worker");
    std::fs::write(&cert, stale_cert).expect("write");
    std::fs::write(&key, stale_key).expect("write");
    let s = settings_with(&url, Some(&ca), &client_identity(dir.path()));
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    assert!(
        pool.get().await.is_err(),
        "a certificate Redis does not trust is refused"
    );

    std::fs::write(&cert, &renewed.0).expect("renew");
    std::fs::write(&key, &renewed.1).expect("renew");
    // Past the pool's pause after a failed connect.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let mut conn = pool.get().await.expect("the renewed certificate is shown");
    let pong: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("PING");
    assert_eq!(pong, "PONG");
}

/// Redis servers over mutual TLS with certificates from a fresh test CA in `dir`: they
/// show each other picket's client certificate; and the CA's PEM file.
fn redis_set_tls(dir: &std::path::Path) -> (RedisTls, std::path::PathBuf) {
    let served = certificate(dir, true);
    let ca = served.ca.clone();
    let tls = RedisTls {
        served,
        client_cert: dir.join("client.pem"),
        client_key: dir.join("client.key"),
    };
    (tls, ca)
}

/// A primary, its replica and three Sentinels over mutual TLS, their files in `dir`;
/// and the CA's PEM file.
async fn sentinels_over_tls(dir: &std::path::Path) -> (RedisSentinels, std::path::PathBuf) {
    let (tls, ca) = redis_set_tls(dir);
    let set = tokio::task::spawn_blocking(move || RedisSentinels::launch_tls(&tls))
        .await
        .expect("launcher")
        .expect("Sentinels over TLS");
    (set, ca)
}

/// The `[redis]` lines naming `urls` as the Sentinels.
fn sentinel_lines(urls: &[String], identity: &str) -> String {
    let urls: Vec<String> = urls.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "sentinels = [{}]\nsentinel_master = \"{SENTINEL_MASTER}\"\n{identity}",
        urls.join(", ")
    )
}

/// Sentinels and the servers they watch, all over TLS that asks for client
/// certificates: picket finds the primary through the Sentinels and keeps state on it
/// with `redis.ca_file` and its certificate, for both; and on the replica the Sentinels
/// promote when the primary dies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_kept_through_sentinels_over_mutual_tls_and_across_a_failover() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (set, ca) = sentinels_over_tls(dir.path()).await;
    let urls = set.sentinel_urls();
    assert!(urls.iter().all(|u| u.starts_with("rediss://")), "{urls:?}");
    // The primary's URL gives only its database and credentials.
    let primary = "rediss://127.0.0.1:1/0";
    let identity = client_identity(dir.path());
    let with = |identity: &str| settings_with(primary, Some(&ca), &sentinel_lines(&urls, identity));
    assert_eq!(
        step_twice(&with(&identity)).await,
        vec![None, Some(Verdict::Down)],
        "state kept on the primary the Sentinels named, both over TLS with picket's certificate"
    );
    assert_eq!(
        step_twice(&with("")).await,
        vec![None, None],
        "no state without a certificate"
    );

    let old = set.primary_port();
    let set = std::sync::Arc::new(set);
    let killer = set.clone();
    tokio::task::spawn_blocking(move || {
        killer.kill(old);
        let t = Instant::now();
        while killer.current_primary() != Some(killer.replica_port())
            || !killer
                .cli(killer.replica_port(), &["role"])
                .starts_with("master")
        {
            assert!(t.elapsed() < Duration::from_secs(30), "no failover in 30 s");
            std::thread::sleep(Duration::from_millis(100));
        }
    })
    .await
    .expect("failover");
    assert_eq!(
        step_twice(&with(&identity)).await,
        vec![None, Some(Verdict::Down)],
        "state kept on the promoted replica, reached over TLS with picket's certificate"
    );
}

/// An operator's `SENTINEL FAILOVER` of Sentinels over mutual TLS: every state step
/// answered is on the new primary (each Sentinel is asked, over TLS, whether it is
/// failing the primary over: none heard, the steps of those seconds would be lost).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_step_answered_during_a_manual_failover_over_tls_is_kept() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (set, ca) = sentinels_over_tls(dir.path()).await;
    let lines = sentinel_lines(&set.sentinel_urls(), &client_identity(dir.path()));
    let s = settings_with("rediss://127.0.0.1:1/0", Some(&ca), &lines);
    crate::failover::steps_through_a_manual_failover(std::sync::Arc::new(set), &s).await;
}

/// A Redis Cluster whose nodes serve TLS only to clients with a certificate: picket
/// finds every node from one seed and keeps state on the one owning its keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_kept_in_a_redis_cluster_over_mutual_tls() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (tls, ca) = redis_set_tls(dir.path());
    let cluster = tokio::task::spawn_blocking(move || RedisCluster::launch_tls(3, &tls))
        .await
        .expect("launcher")
        .expect("a Redis Cluster over TLS");
    let seed = cluster.urls().remove(0);
    let lines = |identity: &str| format!("cluster = true\nnodes = [{seed:?}]\n{identity}");
    let identity = client_identity(dir.path());
    assert_eq!(
        step_twice(&settings_with(&seed, Some(&ca), &lines(&identity))).await,
        vec![None, Some(Verdict::Down)],
        "state kept in the cluster over TLS with picket's certificate"
    );
    assert_eq!(
        step_twice(&settings_with(&seed, Some(&ca), &lines(""))).await,
        vec![None, None],
        "no state without a certificate"
    );
}

#[test]
fn a_ca_file_beside_a_plain_sentinel_or_cluster_node_is_a_configuration_error() {
    for (what, lines) in [
        (
            "a plain Sentinel",
            "url = \"rediss://127.0.0.1:6380/0\"\nsentinels = [\"rediss://127.0.0.1:26379\", \"redis://127.0.0.1:26380\"]\nsentinel_master = \"m\"\n",
        ),
        (
            "a plain cluster node",
            "cluster = true\nnodes = [\"rediss://127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]\n",
        ),
    ] {
        let e = refused(what, |ca| {
            format!("[redis]\n{lines}ca_file = \"{}\"\n", ca.display())
        });
        assert!(e.contains("redis.ca_file") && e.contains("redis://"), "{what}: {e}");
    }
}

/// The configuration error of `text`, given the path of a PEM file that exists.
fn refused(what: &str, text: impl Fn(&std::path::Path) -> String) -> String {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("some.pem");
    std::fs::write(&file, "not used").expect("write");
    Settings::from_toml(&text(&file))
        .map(|_| ())
        .expect_err(what)
        .to_string()
}

#[test]
fn a_client_certificate_needs_its_key_and_tls() {
    let e = refused("a certificate without its key", |cert| {
        format!(
            "[amqp]\nurl = \"amqps://127.0.0.1:5671/%2f\"\nclient_cert_file = \"{}\"\n",
            cert.display()
        )
    });
    assert!(e.contains("amqp.client_key_file"), "{e}");
    let e = refused("a client certificate over plain redis://", |pem| {
        format!(
            "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\nclient_cert_file = \"{0}\"\nclient_key_file = \"{0}\"\n",
            pem.display()
        )
    });
    assert!(e.contains("rediss://"), "{e}");
}

#[test]
fn a_ca_file_for_a_redis_without_tls_is_a_configuration_error() {
    let e = refused("plain redis:// with a CA file", |ca| {
        format!(
            "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\nca_file = \"{}\"\n",
            ca.display()
        )
    });
    assert!(e.contains("redis.ca_file"), "{e}");
    assert!(e.contains("rediss://"), "{e}");
}

/// A RabbitMQ node that also serves AMQP over TLS, and a configuration whose broker URL
/// is that TLS listener (`ca_file` in `[amqp]` when given).
async fn broker_over_tls(
    dir: &std::path::Path,
    ca_file: bool,
) -> (RabbitServer, std::path::PathBuf) {
    broker_over_tls_with(dir, ca_file, false).await
}

/// [`broker_over_tls`], the broker asking clients for a certificate when
/// `verify_clients`.
async fn broker_over_tls_with(
    dir: &std::path::Path,
    ca_file: bool,
    verify_clients: bool,
) -> (RabbitServer, std::path::PathBuf) {
    let files = certificate(dir, verify_clients);
    let setup = NodeSetup {
        tls: Some(files.clone()),
        ..NodeSetup::default()
    };
    let rabbit = tokio::task::spawn_blocking(move || RabbitServer::launch_with(&setup))
        .await
        .expect("join")
        .expect("RabbitMQ with a TLS listener");
    let amqps = rabbit.amqps_url().expect("a TLS listener");
    let ca = if ca_file {
        format!("ca_file = \"{}\"\n", files.ca.display())
    } else {
        String::new()
    };
    let text = base_toml()
        .replace(servers().amqp_url.as_str(), &amqps)
        .replace("[amqp]\n", &format!("[amqp]\n{ca}"))
        + "[targets]\nallow_private = true\n";
    let path = dir.join("picket.toml");
    std::fs::write(&path, text).expect("config");
    (rabbit, path)
}

fn enqueue(config: &std::path::Path, line: &str) -> std::process::Output {
    run_with_stdin(picket_command(&["enqueue", "-"], config), line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_and_results_go_through_a_broker_over_tls_whose_ca_is_configured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_rabbit, config) = broker_over_tls(dir.path(), true).await;
    let router = axum::Router::new().fallback(|| async { axum::response::Html(page("Over TLS.")) });
    let site = serve("127.0.0.42", router).await;
    let sent = enqueue(&config, &format!("http://{site}/\n"));
    let said = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(sent.status.code(), Some(0), "enqueue over amqps: {said}");
    let text = std::fs::read_to_string(&config).expect("config");
    let worker = crate::support::worker_process::WorkerProcess::plain(&text);
    let start = Instant::now();
    let result = loop {
        let out = picket_command(&["results", "--drain", "--limit", "1", "--json"], &config)
            .output()
            .expect("picket results");
        let printed = String::from_utf8_lossy(&out.stdout).into_owned();
        if !printed.trim().is_empty() {
            break printed;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no result over amqps within 60 s; the worker said:\n{}",
            worker.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert!(result.contains("\"verdict\":\"up\""), "{result}");
    worker.terminate().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_certificate_that_cannot_be_verified_is_refused_and_named() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_rabbit, config) = broker_over_tls(dir.path(), false).await;
    let sent = enqueue(&config, "http://127.0.0.42:1/\n");
    let said = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(sent.status.code(), Some(1), "{said}");
    assert!(
        said.to_lowercase().contains("certificate"),
        "the reason is named: {said}"
    );
}

/// A broker that asks clients for a certificate (`ssl_options.verify = verify_peer`,
/// `fail_if_no_peer_cert = true`) is reached with `amqp.client_cert_file` and
/// `amqp.client_key_file`, and refuses picket without them. Under TLS 1.3 it refuses
/// only after the handshake, and picket often sees no more than a reset: its hint then
/// names the client certificate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_asks_for_a_client_certificate_gets_picket_s() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (_rabbit, config) = broker_over_tls_with(dir.path(), true, true).await;
    let without = enqueue(&config, "http://127.0.0.42:1/\n");
    let said = String::from_utf8_lossy(&without.stderr).into_owned();
    assert_eq!(
        without.status.code(),
        Some(1),
        "refused without a certificate: {said}"
    );
    assert!(
        said.contains("amqp.client_cert_file"),
        "the client certificate is named: {said}"
    );
    let text = std::fs::read_to_string(&config).expect("config");
    // A worker says so too, in its log line for each attempt.
    let worker = crate::support::worker_process::WorkerProcess::plain(&text);
    let start = Instant::now();
    while !worker.log_text().contains("broker unavailable") {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no failed attempt logged:\n{}",
            worker.log_tail(20)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = worker.log_text();
    worker.terminate().await;
    assert!(log.contains("amqp.client_cert_file"), "{log}");
    let with = text.replace(
        "[amqp]\n",
        &format!("[amqp]\n{}", client_identity(dir.path())),
    );
    std::fs::write(&config, with).expect("config with the client certificate");
    let sent = enqueue(&config, "http://127.0.0.42:1/\n");
    let said = String::from_utf8_lossy(&sent.stderr).into_owned();
    assert_eq!(
        sent.status.code(),
        Some(0),
        "enqueue with picket's certificate: {said}"
    );
}
