//! The broker side of the operator's commands.
//!
//! - `enqueue`: [`JobPublisher`] publishes jobs with confirms in bounded windows and
//!   knows, at any moment, how many of them (and up to which input line) the broker
//!   confirmed, so an interrupted run can say where to resume.
//! - `results`: [`peek`] reads the shared results queue *without taking anything from
//!   it* (`basic.get` without ack, then one `basic.nack` with `requeue` for all of
//!   them); [`follow`] reads new results through a private, exclusive, auto-delete queue
//!   bound to the results (or changes) exchange, so other subscribers lose nothing;
//!   [`drain`] explicitly consumes the results queue and acks only what was written.
//!
//! What peeking does to the queue (checked by the integration tests on a classic
//! queue): every message stays, in its place and order, but the broker marks each one
//! `redelivered`, so the next consumer sees `redelivered = true` on results nobody
//! else took. On a quorum queue with a delivery limit each peek also counts as a
//! delivery of the messages it read.

use std::collections::VecDeque;
use std::io;

use futures_util::StreamExt;
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions, BasicPublishOptions,
    BasicQosOptions, ConfirmSelectOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::types::{AMQPValue, FieldTable};
use lapin::PublisherConfirm;
use lapin::{BasicProperties, Channel, Connection};
use tokio_util::sync::CancellationToken;

use super::topology::declare_topic;
use super::{close_connection, connect, declare, AmqpError};
use crate::config::AmqpSettings;

/// Publishes not yet confirmed at most, per window: enough to keep the broker busy,
/// small enough that an interrupted run has little in doubt.
pub(crate) const CONFIRM_WINDOW: usize = 1024;

/// Unacknowledged results a `--follow` or `--drain` reader takes at a time.
const READ_PREFETCH: u16 = 64;

/// A failure of a results reader: the broker, or writing what was read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ReadError {
    /// The broker refused or went away.
    #[error(transparent)]
    Broker(#[from] AmqpError),
    /// The output could not be written (closed pipe, full disk); nothing that was not
    /// written was acknowledged.
    #[error("cannot write a result: {0}")]
    Write(#[source] io::Error),
}

impl From<lapin::Error> for ReadError {
    fn from(e: lapin::Error) -> Self {
        ReadError::Broker(AmqpError::Protocol(e))
    }
}

/// What the reader's `write` callback did with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Written {
    /// Printed (counts towards `--limit`).
    Printed,
    /// Filtered out (not printed, not counted).
    Skipped,
}

/// Told when the broker blocks publishing (`Some(reason)`: a memory or disk alarm) and
/// when it lets it go on (`None`). The broker then stops reading from the connection, so
/// a publisher waiting for confirms would otherwise hang without a word.
pub(crate) type BlockedNotice = Box<dyn Fn(Option<&str>) + Send + Sync>;

/// Publishes jobs to the jobs queue with confirms, a window at a time.
pub(crate) struct JobPublisher {
    conn: Connection,
    /// Ends with the publisher: passes the connection's blocked events to the notice.
    watch: tokio::task::JoinHandle<()>,
    ch: Channel,
    queue: String,
    /// Input line of each publish still waiting for its confirm, oldest first.
    pending: VecDeque<(u64, PublisherConfirm)>,
    /// What the broker holds, by input line.
    tally: Tally,
}

impl JobPublisher {
    /// Connects, declares the topology (so the jobs queue exists and nothing published
    /// is routed nowhere) and turns on publisher confirms.
    ///
    /// # Errors
    /// The broker cannot be reached or refused the declarations.
    pub(crate) async fn open(
        settings: &AmqpSettings,
        on_blocked: BlockedNotice,
    ) -> Result<JobPublisher, AmqpError> {
        let conn = connect(settings, &super::nodes::connection_name("enqueue", None)).await?;
        let watch = tokio::spawn(tell_blocked(conn.events_listener(), on_blocked));
        declare(&conn, settings).await?;
        let ch = conn.create_channel().await?;
        ch.confirm_select(ConfirmSelectOptions::default()).await?;
        Ok(JobPublisher {
            conn,
            watch,
            ch,
            queue: settings.jobs_queue.clone(),
            pending: VecDeque::with_capacity(CONFIRM_WINDOW),
            tally: Tally::default(),
        })
    }

    /// Publishes the job of input line `line`, first waiting for the oldest confirm
    /// when the window is full.
    ///
    /// # Errors
    /// The broker refused (nack), returned a job (the jobs queue is gone: it drops what
    /// reaches no queue, so each job is `mandatory`), or the connection failed; what
    /// was confirmed before stays counted.
    pub(crate) async fn publish(
        &mut self,
        line: u64,
        payload: &[u8],
        message_id: &str,
    ) -> Result<(), AmqpError> {
        while self.pending.len() >= CONFIRM_WINDOW {
            self.settle_oldest().await?;
        }
        if self.tally.returned.is_some() {
            return self.finish().await;
        }
        let mut headers = FieldTable::default();
        headers.insert(LINE_HEADER.into(), AMQPValue::LongLongInt(line_value(line)));
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_content_type("application/json".into())
            .with_message_id(message_id.into())
            .with_headers(headers);
        let options = BasicPublishOptions {
            mandatory: true,
            ..BasicPublishOptions::default()
        };
        let confirm = self
            .ch
            .basic_publish(
                "".into(),
                self.queue.as_str().into(),
                options,
                payload,
                props,
            )
            .await?;
        self.pending.push_back((line, confirm));
        Ok(())
    }

    /// Waits for every outstanding confirm.
    ///
    /// # Errors
    /// As [`JobPublisher::publish`].
    pub(crate) async fn finish(&mut self) -> Result<(), AmqpError> {
        while !self.pending.is_empty() {
            self.settle_oldest().await?;
        }
        if self.tally.returned.is_some() {
            return Err(AmqpError::Unroutable {
                exchange: String::new(),
                routing_key: self.queue.clone(),
            });
        }
        Ok(())
    }

    async fn settle_oldest(&mut self) -> Result<(), AmqpError> {
        let Some((line, confirm)) = self.pending.pop_front() else {
            return Ok(());
        };
        let confirmation = confirm.await?;
        if confirmation.is_nack() {
            return Err(AmqpError::Nacked {
                exchange: String::new(),
                routing_key: self.queue.clone(),
            });
        }
        self.tally.settled(line);
        if let Some(returned) = confirmation.take_message() {
            // Not necessarily this line's: lapin hands a return to the next confirm to
            // complete. The job itself says which line it was.
            let of = returned_line(&returned.properties).unwrap_or(line);
            self.tally.returned(of);
        }
        Ok(())
    }

    /// Jobs the broker holds, all of them before any that is in doubt.
    pub(crate) fn confirmed(&self) -> u64 {
        self.tally.held().0
    }

    /// The input line of the last job the broker holds (with all before it).
    pub(crate) fn last_confirmed_line(&self) -> Option<u64> {
        self.tally.held().1
    }

    /// Closes the connection (after [`JobPublisher::finish`], nothing is in doubt). A
    /// broker that blocks us reads nothing, not even the close, so the wait is bounded:
    /// the process ends anyway, and the broker drops the connection with it.
    pub(crate) async fn close(self) {
        // The watch ends when `self` drops, after the close.
        close_connection(&self.conn, "enqueue done").await;
    }
}

impl Drop for JobPublisher {
    fn drop(&mut self) {
        self.watch.abort();
    }
}

/// Passes the connection's blocked and unblocked events to `notice` until they end.
async fn tell_blocked(
    events: impl futures_util::Stream<Item = lapin::Event>,
    notice: BlockedNotice,
) {
    futures_util::pin_mut!(events);
    while let Some(event) = events.next().await {
        match event {
            lapin::Event::ConnectionBlocked(reason) => notice(Some(&reason)),
            lapin::Event::ConnectionUnblocked => notice(None),
            _ => {}
        }
    }
}

/// Header of an enqueued job: its input line, so that a job the broker returns names
/// its line whichever confirm it came with.
pub(crate) const LINE_HEADER: &str = "x-picket-line";

fn line_value(line: u64) -> i64 {
    i64::try_from(line).unwrap_or(i64::MAX)
}

fn returned_line(props: &BasicProperties) -> Option<u64> {
    match props.headers().as_ref()?.inner().get(LINE_HEADER)? {
        AMQPValue::LongLongInt(n) => u64::try_from(*n).ok(),
        _ => None,
    }
}

/// Which input lines the broker holds. Confirms are settled oldest first, so the lines
/// held are a prefix of the input, up to the first line the broker returned. A return
/// can come with a later line's confirm, after its own line was counted: the lines
/// settled lately are remembered with the count before each (two windows: a return
/// comes with a confirm that was pending beside its own).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    confirmed: u64,
    last_line: Option<u64>,
    /// (line, jobs held before it, the line before it), newest last.
    recent: VecDeque<(u64, u64, Option<u64>)>,
    /// The first input line the broker returned.
    returned: Option<u64>,
}

impl Tally {
    /// `line`'s confirm arrived.
    pub(crate) fn settled(&mut self, line: u64) {
        if self.recent.len() >= 2 * CONFIRM_WINDOW {
            self.recent.pop_front();
        }
        self.recent
            .push_back((line, self.confirmed, self.last_line));
        self.confirmed += 1;
        self.last_line = Some(line);
    }

    /// The broker returned the job of `line`: it is not on the queue.
    pub(crate) fn returned(&mut self, line: u64) {
        self.returned = Some(self.returned.map_or(line, |r| r.min(line)));
    }

    /// Jobs held and the last line among them: those before the first returned line.
    pub(crate) fn held(&self) -> (u64, Option<u64>) {
        let before = self
            .returned
            .and_then(|r| self.recent.iter().find(|(line, _, _)| *line == r));
        match before {
            Some(&(_, count, last)) => (count, last),
            // Not settled yet: every settled line came before it.
            None => (self.confirmed, self.last_line),
        }
    }
}

/// How many messages the results queue holds now (ready, not counting unacked ones).
async fn ready_count(ch: &Channel, queue: &str) -> Result<u32, AmqpError> {
    let q = ch
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(q.message_count())
}

/// Reads up to `limit` results from the results queue without removing any: each is
/// fetched unacknowledged, handed to `write`, and at the end (or on any error) all of
/// them are handed back to the queue with one `nack` (`multiple`, `requeue`).
///
/// Only what was in the queue when it started is read, so a busy queue cannot keep it
/// going for ever. Returns how many were printed.
///
/// # Errors
/// The broker failed, or `write` did (its error is returned after the hand-back).
pub(crate) async fn peek(
    settings: &AmqpSettings,
    limit: Option<u64>,
    mut write: impl FnMut(&[u8]) -> io::Result<Written>,
) -> Result<u64, ReadError> {
    let conn = connect(settings, &super::nodes::connection_name("results", None)).await?;
    let ch = conn.create_channel().await?;
    let outcome = async {
        let ready = ready_count(&ch, &settings.results_queue).await?;
        let mut printed = 0u64;
        let mut last_tag = None;
        let mut result = Ok(());
        for _ in 0..ready {
            if limit.is_some_and(|l| printed >= l) {
                break;
            }
            let Some(m) = get_unacked(&ch, &settings.results_queue).await? else {
                break;
            };
            last_tag = Some(m.delivery.delivery_tag);
            match write(&m.delivery.data) {
                Ok(Written::Printed) => printed += 1,
                Ok(Written::Skipped) => {}
                Err(e) => {
                    result = Err(ReadError::Write(e));
                    break;
                }
            }
        }
        if let Some(tag) = last_tag {
            ch.basic_nack(
                tag,
                BasicNackOptions {
                    multiple: true,
                    requeue: true,
                },
            )
            .await?;
        }
        result.map(|()| printed)
    }
    .await;
    // Closing the channel would hand back anything still unacknowledged too (for
    // instance when the nack above failed): the queue keeps every message either way.
    let _ = ch.close(200, "peek done".into()).await;
    close_connection(&conn, "peek done").await;
    outcome
}

/// Which exchange `follow` listens to, with which binding keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Binding {
    /// The exchange (`amqp.results_exchange`, or the changes exchange).
    pub exchange: String,
    /// Binding patterns (`#`, `down`, `*.down`, ...).
    pub keys: Vec<String>,
}

/// Prints new results until `shutdown` (or `limit` printed) through a private queue:
/// server-named, exclusive and auto-delete, bound to `binding`. It takes nothing from
/// the shared results queue; what arrives while nobody follows is not shown.
/// `declared` is told when the exchange did not exist and `follow` declared it.
///
/// # Errors
/// The broker failed, or `write` did.
pub(crate) async fn follow(
    settings: &AmqpSettings,
    binding: &Binding,
    limit: Option<u64>,
    shutdown: CancellationToken,
    declared: impl FnOnce(&str),
    write: impl FnMut(&[u8]) -> io::Result<Written>,
) -> Result<u64, ReadError> {
    let conn = connect(
        settings,
        &super::nodes::connection_name("results --follow", None),
    )
    .await?;
    let existed = exchange_exists(&conn, &binding.exchange).await;
    let ch = conn.create_channel().await?;
    // The exchange may not exist yet (no worker ran, or the changes exchange is new):
    // declaring it as picket does is harmless and lets the bind succeed. But a name
    // nobody declared may be a misspelt one, where nothing will ever come: said.
    let setting = if binding.exchange == settings.changes_exchange {
        "amqp.changes_exchange"
    } else {
        "amqp.results_exchange"
    };
    declare_topic(&ch, &binding.exchange, setting).await?;
    if !existed {
        declared(setting);
    }
    let queue = ch
        .queue_declare(
            "".into(),
            QueueDeclareOptions {
                exclusive: true,
                auto_delete: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    for key in &binding.keys {
        ch.queue_bind(
            queue.name().clone(),
            binding.exchange.as_str().into(),
            key.as_str().into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    }
    let outcome = consume(&ch, queue.name().as_str(), limit, shutdown, write).await;
    close_connection(&conn, "follow done").await;
    outcome
}

/// Whether the exchange `name` exists, asked on a channel of its own (the broker closes
/// a channel that asks for one it does not have). An answer other than "not found"
/// counts as yes: the declaration that follows reports it.
async fn exchange_exists(conn: &Connection, name: &str) -> bool {
    use lapin::options::ExchangeDeclareOptions;
    use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
    let Ok(ch) = conn.create_channel().await else {
        return true;
    };
    let passive = ExchangeDeclareOptions {
        passive: true,
        ..ExchangeDeclareOptions::default()
    };
    let asked = ch
        .exchange_declare(
            super::short(name),
            lapin::ExchangeKind::Topic,
            passive,
            FieldTable::default(),
        )
        .await;
    match asked {
        Ok(()) => {
            let _ = ch.close(200, "asked".into()).await;
            true
        }
        Err(e) => !matches!(e.kind(), lapin::ErrorKind::ProtocolError(p)
            if matches!(p.kind(), AMQPErrorKind::Soft(AMQPSoftError::NOTFOUND))),
    }
}

/// Consumes the shared results queue, acking each result only after `write` took it;
/// a write error hands that result (and every unacked one) back. Without `follow` it
/// stops when the queue is empty.
///
/// # Errors
/// The broker failed, or `write` did.
pub(crate) async fn drain(
    settings: &AmqpSettings,
    follow: bool,
    limit: Option<u64>,
    shutdown: CancellationToken,
    mut write: impl FnMut(&[u8]) -> io::Result<Written>,
) -> Result<u64, ReadError> {
    let conn = connect(
        settings,
        &super::nodes::connection_name("results --drain", None),
    )
    .await?;
    let ch = conn.create_channel().await?;
    ready_count(&ch, &settings.results_queue).await?;
    let outcome = if follow {
        consume(&ch, &settings.results_queue, limit, shutdown, write).await
    } else {
        async {
            let mut printed = 0u64;
            while limit.is_none_or(|l| printed < l) && !shutdown.is_cancelled() {
                let Some(m) = get_unacked(&ch, &settings.results_queue).await? else {
                    break;
                };
                settle(&m.delivery, write(&m.delivery.data), &mut printed).await?;
            }
            Ok(printed)
        }
        .await
    };
    close_connection(&conn, "drain done").await;
    outcome
}

/// The next message of `queue`, if any, left unacknowledged for the caller to settle.
async fn get_unacked(
    ch: &Channel,
    queue: &str,
) -> Result<Option<lapin::message::BasicGetMessage>, lapin::Error> {
    ch.basic_get(queue.into(), BasicGetOptions { no_ack: false })
        .await
}

/// Consumes `queue` (acking after each write) until `shutdown`, `limit`, or the end.
async fn consume(
    ch: &Channel,
    queue: &str,
    limit: Option<u64>,
    shutdown: CancellationToken,
    mut write: impl FnMut(&[u8]) -> io::Result<Written>,
) -> Result<u64, ReadError> {
    ch.basic_qos(READ_PREFETCH, BasicQosOptions::default())
        .await?;
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "picket-results".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let mut printed = 0u64;
    while limit.is_none_or(|l| printed < l) {
        let next = tokio::select! {
            () = shutdown.cancelled() => break,
            d = consumer.next() => d,
        };
        match next {
            Some(Ok(d)) => settle(&d, write(&d.data), &mut printed).await?,
            Some(Err(e)) => return Err(e.into()),
            None => break,
        }
    }
    Ok(printed)
}

/// Acks a delivery that was written (or filtered out); hands it back when writing failed.
async fn settle(
    d: &lapin::message::Delivery,
    written: io::Result<Written>,
    printed: &mut u64,
) -> Result<(), ReadError> {
    match written {
        Ok(w) => {
            d.acker.ack(BasicAckOptions::default()).await?;
            if w == Written::Printed {
                *printed += 1;
            }
            Ok(())
        }
        Err(e) => {
            let _ = d
                .acker
                .nack(BasicNackOptions {
                    multiple: false,
                    requeue: true,
                })
                .await;
            Err(ReadError::Write(e))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settled(lines: &[u64]) -> Tally {
        let mut t = Tally::default();
        for &l in lines {
            t.settled(l);
        }
        t
    }

    #[test]
    fn without_returns_every_settled_line_is_held() {
        assert_eq!(settled(&[1, 2, 4]).held(), (3, Some(4)));
        assert_eq!(Tally::default().held(), (0, None));
    }

    #[test]
    fn a_return_that_came_with_a_later_confirm_takes_back_its_line_and_all_after() {
        let mut t = settled(&[1, 2, 3, 5, 6]);
        t.returned(5);
        assert_eq!(t.held(), (3, Some(3)), "lines 1-3 held; resume at 5");
        t.returned(6);
        assert_eq!(t.held(), (3, Some(3)), "the first returned line decides");
        t.returned(2);
        assert_eq!(t.held(), (1, Some(1)));
    }

    #[test]
    fn a_returned_line_not_settled_yet_leaves_the_settled_ones_held() {
        let mut t = settled(&[1, 2]);
        t.returned(4);
        assert_eq!(t.held(), (2, Some(2)));
    }
}
