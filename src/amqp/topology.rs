//! The broker's topology: the queues and exchanges picket declares, with the arguments
//! that keep work safe (dead-lettering, delivery limits, delay buckets), and the refusal
//! of existing ones that would lose it.

use std::time::Duration;

use lapin::options::{ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::{Channel, Connection, ExchangeKind};

use super::{nodes, short, AmqpError};
use crate::config::{AmqpSettings, QueueType};

/// Deliveries of one message (quorum queues) before the broker dead-letters it.
pub const DELIVERY_LIMIT: i32 = 5;
/// The delivery limit of the quorum queues whose messages are never to be dropped for
/// being handed back: the dead-letter queue (an operator reads it with get and hand
/// back) and the results queue (`picket results` peeks, subscribers that requeue).
/// RabbitMQ 4.0 gives every quorum queue declared without a limit a limit of 20; its own
/// way to turn that off, `-1`, RabbitMQ 3.x takes for a limit its first return exceeds
/// (3.10 dropped a dead letter handed back once). A limit never reached works alike on
/// both.
pub const UNREACHED_DELIVERY_LIMIT: i32 = i32::MAX;
/// How long deferred jobs wait, in seconds: one delay queue each, `{delay_queue}.{N}s`,
/// with a queue-wide TTL. A queue expires messages only at its head, so per-message
/// TTLs in one queue would let a 300 s deferral hold back a 1 s one; with one TTL per
/// queue they leave in the order they came.
pub const DELAY_BUCKETS: [u64; 5] = [1, 5, 30, 120, 300];

/// The delay queue for a deferral of `wait`: the longest that waits no longer (the
/// shortest for anything shorter). A job comes back early rather than late, then waits
/// the rest in process (`rate_limit.max_wait`) or is deferred again: one that came back
/// late would leave its IP idle meanwhile (a 6.5 s wait once sat 30 s).
pub fn delay_bucket(wait: Duration) -> u64 {
    DELAY_BUCKETS
        .into_iter()
        .rev()
        .find(|&b| Duration::from_secs(b) <= wait)
        .unwrap_or(DELAY_BUCKETS[0])
}

/// The name of the delay queue of `bucket` seconds.
pub fn delay_queue_name(s: &AmqpSettings, bucket: u64) -> String {
    format!("{}.{bucket}s", s.delay_queue)
}

/// A queue of `amqp.queue_type`.
fn typed(settings: &AmqpSettings) -> FieldTable {
    let mut args = FieldTable::default();
    let kind = match settings.queue_type {
        QueueType::Classic => "classic",
        QueueType::Quorum => "quorum",
    };
    args.insert("x-queue-type".into(), AMQPValue::LongString(kind.into()));
    args
}

/// The dead-letter queue's arguments: its type, and for a quorum queue a delivery limit
/// never reached. With the jobs queue's delivery limit (and no dead-letter queue of its
/// own), the broker deleted a dead letter an operator had read five times, handing it
/// back each time as OPERATIONS says; RabbitMQ 4's default limit would after 20.
fn dead_letter_queue_args(settings: &AmqpSettings) -> FieldTable {
    let mut args = typed(settings);
    if settings.queue_type == QueueType::Quorum {
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(UNREACHED_DELIVERY_LIMIT),
        );
    }
    args
}

fn queue_args(settings: &AmqpSettings) -> FieldTable {
    let mut args = typed(settings);
    if settings.queue_type == QueueType::Quorum {
        // The broker counts deliveries of quorum queues: a message that keeps coming back
        // (its workers die on it) is dead-lettered after this many.
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(DELIVERY_LIMIT),
        );
    }
    args
}

/// The jobs queue's arguments: dead-lettering into the dead-letter queue, and for
/// quorum queues the delivery limit, at least once. The default, at most once, drops a
/// job dead-lettered while the dead-letter queue has no leader, which the one node
/// failure that hands a job back for the last time can also cause. At-least-once needs
/// `reject-publish` overflow (the queue has no length limit, so it never acts).
fn jobs_queue_args(s: &AmqpSettings) -> FieldTable {
    let mut args = queue_args(s);
    dead_letter_into(&mut args, &s.dead_letter_queue);
    if s.queue_type == QueueType::Quorum {
        let text = |v: &str| AMQPValue::LongString(v.into());
        args.insert("x-dead-letter-strategy".into(), text("at-least-once"));
        args.insert("x-overflow".into(), text("reject-publish"));
    }
    args
}

/// Makes a queue dead-letter (rejected or expired messages) into `queue`.
fn dead_letter_into(args: &mut FieldTable, queue: &str) {
    args.insert(
        "x-dead-letter-exchange".into(),
        AMQPValue::LongString("".into()),
    );
    args.insert(
        "x-dead-letter-routing-key".into(),
        AMQPValue::LongString(queue.into()),
    );
}

/// Declares the whole topology (idempotent; the same arguments every time so a
/// restart never fails on a mismatch), on a channel of its own that is closed after.
///
/// A queue or exchange that already exists with other arguments (upstream declared the
/// jobs queue as a plain durable queue, a subscriber capped the results queue) is used
/// as it is, with a warning: refusing to start over it would stop all probing, and
/// picket does its own dead-lettering by publishing.
///
/// # Errors
/// The broker refused a declaration for another reason (e.g. no permission).
pub async fn declare(conn: &Connection, s: &AmqpSettings) -> Result<(), AmqpError> {
    let mut ch = conn.create_channel().await?;
    declare_queue(
        conn,
        &mut ch,
        &s.dead_letter_queue,
        dead_letter_queue_args(s),
    )
    .await?;
    declare_queue(conn, &mut ch, &s.jobs_queue, jobs_queue_args(s)).await?;
    // Deferred jobs expire out of the delay queue (per-message TTL) back into the jobs
    // queue. Classic, unless the queues are replicated (see `nodes::delay_queue_args`).
    let mut delay_args = nodes::delay_queue_args(s.queue_type);
    dead_letter_into(&mut delay_args, &s.jobs_queue);
    // `delay_queue` itself takes no new deferrals (those go to the buckets) but is
    // declared so that what it still holds comes home.
    declare_delay_queue(&ch, s, &s.delay_queue, delay_args).await?;
    for bucket in DELAY_BUCKETS {
        let mut args = nodes::delay_queue_args(s.queue_type);
        dead_letter_into(&mut args, &s.jobs_queue);
        let ttl = i64::try_from(bucket * 1000).unwrap_or(i64::MAX);
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(ttl));
        declare_delay_queue(&ch, s, &delay_queue_name(s, bucket), args).await?;
    }
    declare_topic(&ch, &s.results_exchange, "amqp.results_exchange").await?;
    declare_topic(&ch, &s.changes_exchange, "amqp.changes_exchange").await?;
    declare_queue(
        conn,
        &mut ch,
        &s.results_queue,
        nodes::results_queue_args(s.queue_type),
    )
    .await?;
    ch.queue_bind(
        short(&s.results_queue),
        short(&s.results_exchange),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await?;
    let _ = ch.close(200, "topology declared".into()).await;
    Ok(())
}

/// A durable queue's declaration.
fn durable() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares a delay queue. One that does not dead-letter into the jobs queue would lose
/// every deferred job: refused rather than used.
async fn declare_delay_queue(
    ch: &Channel,
    s: &AmqpSettings,
    name: &str,
    args: FieldTable,
) -> Result<(), AmqpError> {
    match ch.queue_declare(short(name), durable(), args).await {
        Ok(_) => Ok(()),
        Err(e) if precondition_failed(&e) => Err(AmqpError::Topology(format!(
            "the delay queue {name:?} exists with other arguments than picket's (it must dead-letter into {:?}): deferred jobs would be lost there; delete it or set amqp.delay_queue to another name",
            s.jobs_queue
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Declares a durable topic exchange; one that exists as another type is refused: its
/// routing would not be what subscribers bind for.
pub(crate) async fn declare_topic(
    ch: &Channel,
    name: &str,
    setting: &str,
) -> Result<(), AmqpError> {
    let topic = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    match ch
        .exchange_declare(short(name), ExchangeKind::Topic, topic, FieldTable::default())
        .await
    {
        Ok(()) => Ok(()),
        Err(e) if precondition_failed(&e) => Err(AmqpError::Topology(format!(
            "the exchange {name:?} ({setting}) exists, but not as a durable topic exchange: results routed by verdict would go astray there; delete it or set {setting} to another name ({e})"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Declares a durable queue with `args`; if it exists with others, checks that it is
/// there (on a new channel: the refusal closed `ch`) and uses it as it is.
async fn declare_queue(
    conn: &Connection,
    ch: &mut Channel,
    name: &str,
    args: FieldTable,
) -> Result<(), AmqpError> {
    match ch.queue_declare(short(name), durable(), args).await {
        Ok(_) => Ok(()),
        Err(e) if precondition_failed(&e) => {
            tracing::warn!(queue = %name, error = %e,
                "the queue exists with other arguments than picket's; using it as it is (broker-side dead-lettering and delivery limits set by picket do not apply to it)");
            *ch = conn.create_channel().await?;
            ch.queue_declare(
                short(name),
                QueueDeclareOptions {
                    passive: true,
                    ..QueueDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await?;
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// The broker's 406: the thing exists with other arguments.
fn precondition_failed(e: &lapin::Error) -> bool {
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    matches!(e.kind(), lapin::ErrorKind::ProtocolError(p)
        if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A node failure that hands a job back for the fifth time, taking the dead-letter
    /// queue's leader with it, dropped the job (at-most-once dead-lettering: the egress
    /// broker hunt lost 9 of 9 so on a 3-node cluster). The jobs queue dead-letters at least
    /// once; the dead-letter queue's delivery limit is never reached (`worker_e2e` reads
    /// a dead letter more times than RabbitMQ 4's default limit and finds it still
    /// there).
    #[test]
    fn quorum_jobs_dead_letter_at_least_once_into_a_queue_without_a_limit() {
        let mut s = crate::config::Settings::from_toml("")
            .expect("defaults")
            .amqp;
        s.queue_type = QueueType::Quorum;
        let text = |v: &str| AMQPValue::LongString(v.into());
        let jobs = jobs_queue_args(&s);
        let jobs = jobs.inner();
        assert_eq!(
            jobs.get("x-dead-letter-strategy"),
            Some(&text("at-least-once"))
        );
        assert_eq!(jobs.get("x-overflow"), Some(&text("reject-publish")));
        assert!(jobs.contains_key("x-delivery-limit"));
        let dead = dead_letter_queue_args(&s);
        assert_eq!(
            dead.inner().get("x-delivery-limit"),
            Some(&AMQPValue::LongInt(i32::MAX))
        );
        assert_eq!(dead.inner().get("x-queue-type"), Some(&text("quorum")));
    }

    #[test]
    fn a_deferral_waits_in_the_longest_queue_that_is_not_too_long() {
        let s = |secs: f64| delay_bucket(Duration::from_secs_f64(secs));
        assert_eq!((s(0.0), s(0.3), s(1.0), s(1.2), s(4.9)), (1, 1, 1, 1, 1));
        assert_eq!((s(5.0), s(6.5), s(29.0), s(31.0)), (5, 5, 5, 30));
        assert_eq!(
            (s(119.0), s(299.0), s(300.0), s(3600.0)),
            (30, 120, 300, 300)
        );
    }
}
