//! Proves the test support works before anything else relies on it: the
//! shared RabbitMQ and Redis accept real clients, a private Redis survives a
//! stop and start on the same port, and target servers answer on loopback
//! addresses other than 127.0.0.1.

use std::time::Duration;

use crate::support::{self, servers, unique, RedisServer};

async fn ping(url: &str) -> redis::RedisResult<String> {
    let client = redis::Client::open(url)?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    redis::cmd("PING").query_async(&mut conn).await
}

#[tokio::test]
async fn shared_redis_answers_ping() {
    let url = &servers().redis_url;
    assert_eq!(ping(url).await.expect("PING the shared redis"), "PONG");
}

#[tokio::test]
async fn shared_rabbitmq_accepts_a_connection_and_declares_a_queue() {
    let url = &servers().amqp_url;
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default())
        .await
        .expect("connect to the shared RabbitMQ");
    let channel = conn.create_channel().await.expect("open a channel");
    let name = unique("support-smoke");
    let queue = channel
        .queue_declare(
            name.as_str().into(),
            lapin::options::QueueDeclareOptions {
                auto_delete: true,
                ..Default::default()
            },
            lapin::types::FieldTable::default(),
        )
        .await
        .expect("declare a queue");
    assert_eq!(queue.name().as_str(), name);
    assert_eq!(queue.message_count(), 0);
    conn.close(200, "done".into())
        .await
        .expect("close the connection");
}

#[tokio::test]
async fn private_redis_stops_and_starts_on_the_same_port() {
    // A private server: stopping the shared one would break tests running
    // alongside this one.
    let redis = RedisServer::launch().expect("start a private redis-server");
    let url = redis.url().to_string();
    assert_eq!(ping(&url).await.expect("PING before stop"), "PONG");

    redis.stop();
    assert!(!redis.is_running());
    let refused = tokio::time::timeout(Duration::from_secs(10), ping(&url))
        .await
        .expect("a stopped redis must fail fast, not hang");
    assert!(
        refused.is_err(),
        "PING succeeded against a stopped redis-server"
    );

    redis.start();
    assert_eq!(ping(&url).await.expect("PING after start"), "PONG");
    assert_eq!(
        redis.url(),
        url,
        "the port must not change across a restart"
    );
}

#[tokio::test]
async fn targets_answer_on_other_loopback_addresses() {
    use axum::routing::get;

    let router = axum::Router::new().route("/", get(|| async { "hello from 127.0.0.2" }));
    let addr = support::serve("127.0.0.2", router).await;
    assert_eq!(addr.ip().to_string(), "127.0.0.2");
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("build an HTTP client");
    let body = client
        .get(format!("http://{addr}/"))
        .send()
        .await
        .expect("GET the axum target")
        .text()
        .await
        .expect("read the body");
    assert_eq!(body, "hello from 127.0.0.2");

    let reset = support::serve_raw("127.0.0.3", support::targets::raw::reset).await;
    let err = client
        .get(format!("http://{reset}/"))
        .send()
        .await
        .expect_err("a reset connection must be an error");
    assert!(!err.is_timeout(), "expected a reset, got a timeout: {err}");

    let silent = support::serve_raw("127.0.0.3", support::targets::raw::never_answer).await;
    let err = client
        .get(format!("http://{silent}/"))
        .timeout(Duration::from_millis(300))
        .send()
        .await
        .expect_err("a target that never answers must time out");
    assert!(err.is_timeout(), "expected a timeout, got: {err}");
}

#[tokio::test]
async fn private_rabbitmq_restarts_on_the_same_port_keeping_durable_messages() {
    use lapin::options::{
        BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions, QueueDeclareOptions,
    };
    use lapin::types::FieldTable;
    use lapin::BasicProperties;

    // Launching and restarting block for seconds; keep the runtime free.
    let rabbit = tokio::task::spawn_blocking(|| {
        crate::support::RabbitServer::launch().expect("start a private RabbitMQ node")
    })
    .await
    .expect("launch task");
    let url = rabbit.url().to_string();
    let queue = unique("support-smoke-durable");

    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("connect before restart");
    let channel = conn.create_channel().await.expect("open a channel");
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await
        .expect("enable publisher confirms");
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                durable: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .expect("declare a durable queue");
    channel
        .basic_publish(
            "".into(),
            queue.as_str().into(),
            BasicPublishOptions::default(),
            b"survives",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await
        .expect("publish")
        .await
        .expect("broker confirms the message");

    let rabbit = tokio::task::spawn_blocking(move || {
        rabbit.restart();
        rabbit
    })
    .await
    .expect("restart task");
    assert_eq!(
        rabbit.url(),
        url,
        "the port must not change across a restart"
    );

    let conn = lapin::Connection::connect(&url, lapin::ConnectionProperties::default())
        .await
        .expect("connect after restart");
    let channel = conn
        .create_channel()
        .await
        .expect("open a channel after restart");
    let message = channel
        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
        .await
        .expect("basic.get after restart")
        .expect("the persistent message survived the restart");
    assert_eq!(message.delivery.data, b"survives");
}

/// A server's processes outliving its master (nginx's workers finishing a request, a
/// child ignoring SIGTERM) are stopped with it: nginx workers left behind by earlier
/// runs still listened on the farm's addresses.
#[test]
fn a_daemon_stops_every_process_of_its_group_even_after_its_master_is_gone() {
    let dir = support::real::scratch("smoke-group");
    let needle = dir.display().to_string();
    let child_pid = dir.join("child.pid");
    let script = "(trap '' TERM; exec sleep 300) & echo $! > child.pid; sleep 301";
    let daemon = support::real::Daemon::start_until(
        "group smoke",
        "sh",
        &["-c".to_string(), script.to_string(), needle],
        &dir,
        || child_pid.exists(),
    );
    let pid: u32 = loop {
        // Written by the shell right after it started the child: wait for the number.
        if let Ok(Ok(pid)) = std::fs::read_to_string(&child_pid).map(|t| t.trim().parse()) {
            break pid;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(support::procs::pid_matches(pid, "sleep 300"));
    drop(daemon);
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(50));
        !support::procs::pid_matches(pid, "sleep 300")
    });
    assert!(gone, "the child {pid} ignoring SIGTERM outlived its daemon");
}
