//! The broker's side of the benchmark: its delivery ceiling (`b-in`), its
//! confirmed-publish ceiling (`b-out`), and the worker run's prefilled jobs
//! (`prefill`).

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

use anyhow::{anyhow, bail, Context, Result};
use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions, QueuePurgeOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{BasicProperties, Channel, Connection, ExchangeKind};
use picket::config::Settings;
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::collect::{cpu_since, own_cpu_seconds, print_client_cpu};
use crate::{deadline, load, per_second, JobShape, RunArgs};

/// Confirms awaited together when filling a queue.
pub(crate) const WINDOW: usize = 1000;
/// The queue `b-in` fills and drains.
pub(crate) const IN_QUEUE: &str = "picket.bench.in";
/// The exchange and queue `b-out` publishes to.
pub(crate) const OUT_NAME: &str = "picket.bench.out";
/// A result as the worker publishes it, for `b-out` when no `--payload` is given.
pub(crate) const SAMPLE_RESULT: &str = r#"{"job_id":"bench-1234567","url":"http://site123.bench.test:8080/page?n=1234567","verdict":"up","reason":"ok","detail":"200 OK, 16384 bytes in 3 ms","http":{"status":200,"body_bytes":16384,"final_url":"http://site123.bench.test:8080/page?n=1234567","redirects":0,"charset":"utf-8"},"timing_ms":{"total":3,"dns":0,"first_byte":2,"queue":0},"ip":"127.0.3.4","egress":"direct","attempts":1,"attempt_log":[{"egress":"direct","verdict":"up","reason":"ok","detail":"200 OK, 16384 bytes in 3 ms","ip":"127.0.3.4","total_ms":3}],"checked_at":"2026-01-01T00:00:00.000Z","cached":false,"previous_verdict":null,"changed":true,"worker":"bench-host-12345","meta":null}"#;

pub(crate) async fn connect(settings: &Settings, name: &str) -> Result<(Connection, Channel)> {
    let conn = picket::amqp::connect(&settings.amqp, name).await?;
    let ch = conn.create_channel().await?;
    ch.confirm_select(ConfirmSelectOptions::default()).await?;
    Ok((conn, ch))
}

pub(crate) fn persistent() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
}

pub(crate) fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Publishes `n` messages made by `body`, awaiting confirms in windows of [`WINDOW`].
pub(crate) async fn publish_all(
    ch: &Channel,
    queue: &str,
    n: usize,
    deadline: tokio::time::Instant,
    body: impl Fn(usize) -> Vec<u8>,
) -> Result<()> {
    let mut start = 0;
    while start < n {
        let end = (start + WINDOW).min(n);
        let mut pending = Vec::with_capacity(end - start);
        for i in start..end {
            let confirm = ch
                .basic_publish(
                    "".into(),
                    queue.into(),
                    BasicPublishOptions::default(),
                    &body(i),
                    persistent().with_message_id(format!("bench-{i}").as_str().into()),
                )
                .await?;
            pending.push(confirm);
        }
        for confirm in pending {
            let confirmation =
                tokio::time::timeout_at(deadline, confirm)
                    .await
                    .map_err(|_| {
                        anyhow!("publishing to {queue}: out of time after {start} messages")
                    })??;
            if confirmation.is_nack() {
                bail!("the broker refused a message for {queue} (nack)");
            }
        }
        start = end;
    }
    Ok(())
}

pub(crate) async fn b_in(run: &RunArgs, shape: &JobShape) -> Result<()> {
    let settings = load(&run.config)?;
    let deadline = deadline(run);
    let (conn, ch) = connect(&settings, "picket bench b-in").await?;
    let mut args = FieldTable::default();
    args.insert(
        "x-queue-type".into(),
        AMQPValue::LongString("classic".into()),
    );
    ch.queue_declare(IN_QUEUE.into(), durable(), args).await?;
    ch.queue_purge(IN_QUEUE.into(), QueuePurgeOptions::default())
        .await?;
    let n = run.jobs;
    let size = shape.job(n / 2).len();
    publish_all(&ch, IN_QUEUE, n, deadline, |i| shape.job(i)).await?;

    let consume = conn.create_channel().await?;
    consume
        .basic_qos(settings.amqp.prefetch, BasicQosOptions::default())
        .await?;
    let mut consumer = consume
        .basic_consume(
            IN_QUEUE.into(),
            "picket-bench-in".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    // Acked from their own tasks, as the worker does.
    let tracker = TaskTracker::new();
    let failed = Arc::new(AtomicUsize::new(0));
    let mut first = None;
    let mut cpu_first = None;
    let mut last = Instant::now();
    for got in 0..n {
        let next = tokio::time::timeout_at(deadline, consumer.next())
            .await
            .map_err(|_| anyhow!("b-in: {got} of {n} delivered before the timeout"))?;
        let delivery = match next {
            Some(Ok(d)) => d,
            Some(Err(e)) => return Err(e.into()),
            None => bail!("b-in: the consumer ended after {got} of {n}"),
        };
        last = Instant::now();
        if first.is_none() {
            first = Some(last);
            cpu_first = own_cpu_seconds();
        }
        let failed = failed.clone();
        tracker.spawn(async move {
            if delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .is_err()
            {
                failed.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
    tracker.close();
    tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .map_err(|_| anyhow!("b-in: acks still pending at the timeout"))?;
    let cpu = cpu_since(cpu_first);
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
    let _ = ch
        .queue_delete(IN_QUEUE.into(), QueueDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    println!("messages={n}");
    println!("message_bytes={size}");
    println!("secs={secs:.3}");
    println!("rate={:.0}", per_second(n.saturating_sub(1), secs));
    println!("ack_failures={}", failed.load(Ordering::Relaxed));
    print_client_cpu(cpu, n);
    Ok(())
}

pub(crate) async fn b_out(run: &RunArgs, payload: Option<&Path>, inflight: usize) -> Result<()> {
    let settings = load(&run.config)?;
    let deadline = deadline(run);
    let payload = match payload {
        Some(p) => std::fs::read(p).with_context(|| format!("{}: cannot read", p.display()))?,
        None => SAMPLE_RESULT.as_bytes().to_vec(),
    };
    let payload = Arc::new(payload);
    let (conn, ch) = connect(&settings, "picket bench b-out").await?;
    ch.exchange_declare(
        OUT_NAME.into(),
        ExchangeKind::Topic,
        ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        },
        FieldTable::default(),
    )
    .await?;
    ch.queue_declare(OUT_NAME.into(), durable(), FieldTable::default())
        .await?;
    ch.queue_purge(OUT_NAME.into(), QueuePurgeOptions::default())
        .await?;
    ch.queue_bind(
        OUT_NAME.into(),
        OUT_NAME.into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;

    let n = run.jobs;
    let permits = Arc::new(Semaphore::new(inflight.max(1)));
    let tracker = TaskTracker::new();
    let failed = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let cpu_start = own_cpu_seconds();
    for i in 0..n {
        let permit = tokio::time::timeout_at(deadline, permits.clone().acquire_owned())
            .await
            .map_err(|_| anyhow!("b-out: {i} of {n} published before the timeout"))??;
        let ch = ch.clone();
        let payload = payload.clone();
        let failed = failed.clone();
        tracker.spawn(async move {
            // The broker's own rate: confirms pipelined on one channel (the worker lends
            // each publish a channel of its own, which this ceiling does not grant it).
            let props = persistent().with_message_id(format!("bench-{i}").as_str().into());
            let options = BasicPublishOptions::default();
            let publish = ch.basic_publish(OUT_NAME.into(), "up".into(), options, &payload, props);
            let confirmed = match publish.await {
                Ok(confirm) => confirm.await.is_ok_and(|c| c.is_ack()),
                Err(_) => false,
            };
            if !confirmed {
                failed.fetch_add(1, Ordering::Relaxed);
            }
            drop(permit);
        });
    }
    tracker.close();
    tokio::time::timeout_at(deadline, tracker.wait())
        .await
        .map_err(|_| anyhow!("b-out: confirms still pending at the timeout"))?;
    let cpu = cpu_since(cpu_start);
    let secs = start.elapsed().as_secs_f64();
    let _ = ch
        .queue_delete(OUT_NAME.into(), QueueDeleteOptions::default())
        .await;
    let _ = ch
        .exchange_delete(OUT_NAME.into(), ExchangeDeleteOptions::default())
        .await;
    let _ = conn.close(200, "done".into()).await;
    let failed = failed.load(Ordering::Relaxed);
    println!("messages={n}");
    println!("message_bytes={}", payload.len());
    println!("inflight={inflight}");
    println!("secs={secs:.3}");
    println!("rate={:.0}", per_second(n - failed, secs));
    println!("unconfirmed={failed}");
    print_client_cpu(cpu, n);
    Ok(())
}

pub(crate) async fn prefill(run: &RunArgs, shape: &JobShape) -> Result<()> {
    let settings = load(&run.config)?;
    let deadline = deadline(run);
    let (conn, ch) = connect(&settings, "picket bench prefill").await?;
    picket::amqp::declare(&conn, &settings.amqp).await?;
    let a = &settings.amqp;
    for q in [&a.jobs_queue, &a.results_queue] {
        ch.queue_purge(q.as_str().into(), QueuePurgeOptions::default())
            .await?;
    }
    let start = Instant::now();
    publish_all(&ch, &a.jobs_queue, run.jobs, deadline, |i| shape.job(i)).await?;
    let secs = start.elapsed().as_secs_f64();
    let _ = conn.close(200, "done".into()).await;
    println!("messages={}", run.jobs);
    println!("message_bytes={}", shape.job(run.jobs / 2).len());
    println!("secs={secs:.3}");
    Ok(())
}
