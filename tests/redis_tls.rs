//! Redis over TLS (`rediss://`), as managed Redis services require: a real redis-server
//! serving TLS with a certificate from a test CA, trusted through `redis.ca_file`. The
//! state and the limiter work there, and a certificate the worker cannot verify is
//! refused, never used.

use std::time::Duration;

use picket::config::Settings;
use picket::job::Verdict;
use picket::state::{Delivery, RedisState, StateStore};

use crate::support::farm::Pki;
use crate::support::{unique, RedisServer};

/// A redis-server with TLS on a port of its own, its certificate for 127.0.0.1 signed by
/// a fresh test CA; and the CA's PEM file.
fn redis_over_tls(dir: &std::path::Path) -> (RedisServer, std::path::PathBuf) {
    let pki = Pki::new();
    let (cert, key) = pki.leaf_pem("127.0.0.1");
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write a PEM file");
        path
    };
    let ca = write("ca.pem", &pki.ca.pem());
    let (cert, key) = (write("redis.pem", &cert), write("redis.key", &key));
    let server = RedisServer::launch_tls(&cert, &key, &ca).expect("redis-server with TLS");
    (server, ca)
}

fn settings(url: &str, ca: Option<&std::path::Path>) -> Settings {
    let ca = ca.map_or(String::new(), |p| {
        format!("ca_file = \"{}\"\n", p.display())
    });
    let text = format!(
        "[redis]\nurl = \"{url}\"\n{ca}key_prefix = \"{}:\"\ntimeout = \"2s\"\n",
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
        let answer = tokio::time::timeout(Duration::from_secs(10), state.step(&report, delivery))
            .await
            .expect("a step within its timeout");
        previous.push(answer.and_then(|a| a.previous));
    }
    previous
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_is_kept_in_a_redis_over_tls_whose_ca_is_configured() {
    let dir = tempfile::tempdir().expect("temp dir");
    let (redis, ca) = redis_over_tls(dir.path());
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
    let (redis, _ca) = redis_over_tls(dir.path());
    let url = redis.tls_url().expect("a TLS port");
    // No CA configured: the system's trust store does not know the test CA.
    let kept = step_twice(&settings(&url, None)).await;
    assert_eq!(
        kept,
        vec![None, None],
        "no state through an unverified connection"
    );
}

#[test]
fn a_ca_file_for_a_redis_without_tls_is_a_configuration_error() {
    let dir = tempfile::tempdir().expect("temp dir");
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, "not used").expect("write");
    let text = format!(
        "[redis]\nurl = \"redis://127.0.0.1:6379/0\"\nca_file = \"{}\"\n",
        ca.display()
    );
    let e = Settings::from_toml(&text).expect_err("plain redis:// with a CA file");
    assert!(e.to_string().contains("redis.ca_file"), "{e}");
    assert!(e.to_string().contains("rediss://"), "{e}");
}
