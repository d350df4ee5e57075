//! The worker's consumer: one session per broker connection (connect, declare, consume;
//! back off and reconnect when it breaks), a permit before each delivery, each delivery
//! handled in a task of its own (`delivery`), and the session's jobs stopped when it is
//! over.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicCancelOptions, BasicConsumeOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::{Channel, Connection};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::ack::Acks;
use super::delivery::{hand_back_on_stop, job, Session};
use super::publish::Publisher;
use super::reply::Replies;
use super::topology::declare;
use super::{
    backoff, close_connection, connection_name, short, AmqpError, BrokerState, Node, Nodes,
    CLOSE_WAIT,
};
use crate::config::AmqpSettings;
use crate::engine::Engine;
use crate::metric;

/// How the consumer runs.
#[derive(Debug, Clone)]
pub struct ConsumerOptions {
    /// Jobs handled at once (`probe.concurrency`).
    pub concurrency: usize,
    /// Time in-flight jobs get after shutdown (`worker.shutdown_grace`).
    pub grace: Duration,
    /// How long a per-IP limit may hold a job before it is deferred, and how far ahead.
    pub deferral: crate::worker::Deferral,
    /// This worker's name.
    pub worker_name: String,
}

/// Runs the worker's consumer until `shutdown` is cancelled, then drains.
///
/// Never returns early because the broker went away: it reconnects with [`backoff`].
pub async fn run_worker(
    settings: AmqpSettings,
    engine: Arc<Engine>,
    options: ConsumerOptions,
    state: Arc<BrokerState>,
    shutdown: CancellationToken,
) {
    let mut worker = Worker::new(settings, engine, options, state, shutdown);
    while !worker.shutdown.is_cancelled() {
        // No session: the pause after the failure was taken, or shutdown came.
        let Some((mut live, session)) = worker.open().await else {
            continue;
        };
        worker.consume(&mut live, &session).await;
        if worker.shutdown.is_cancelled() {
            worker.stop_taking(&mut live, &session).await;
            let ended = worker.release(session);
            worker.shut_down(live, ended.over).await;
            return;
        }
        let ended = worker.release(session);
        worker.end(live, ended).await;
    }
    worker.tracker.close();
    let _ = tokio::time::timeout(worker.grace, worker.tracker.wait()).await;
    worker.replies.close().await;
    worker.disconnected();
}

/// What a session leaves when it is over: the token that stops its unfinished jobs,
/// and whether it settled any (its publishes were confirmed).
struct Ended {
    over: CancellationToken,
    settled: Arc<std::sync::atomic::AtomicBool>,
}

/// How long a session must have lived to count as one that worked, even with no job.
const A_WHILE: Duration = Duration::from_secs(30);

/// Publishing channels per session at most: publishes run one per channel (see
/// [`Publisher`]), and a broker confirms a persistent message in a few milliseconds, so
/// this many keep up with thousands of jobs a second.
const PUBLISH_CHANNELS: usize = 64;

/// What the consumer keeps from one broker session to the next.
struct Worker {
    settings: AmqpSettings,
    /// Shared by every job, not cloned for each.
    shared_settings: Arc<AmqpSettings>,
    engine: Arc<Engine>,
    grace: Duration,
    deferral: crate::worker::Deferral,
    worker_name: String,
    state: Arc<BrokerState>,
    shutdown: CancellationToken,
    permits: Arc<Semaphore>,
    /// The permits there are (`probe.concurrency`).
    concurrency: usize,
    /// Replies to `reply_to`, over a connection of their own that outlives sessions.
    replies: Arc<Replies>,
    /// Results the broker refused for good, remembered across sessions.
    refusals: Arc<super::refusals::Refusals>,
    /// Publishing channels per session: no more than jobs can publish at once.
    publish_channels: usize,
    tracker: TaskTracker,
    delays: Box<dyn Iterator<Item = Duration> + Send + Sync>,
    first: bool,
    nodes: Nodes,
    /// When the last session broke: the time without a broker is counted from there.
    lost_at: Option<tokio::time::Instant>,
    /// When the current session began consuming.
    began: Option<tokio::time::Instant>,
}

/// One open broker session's connection, channels and consumer. Its fields drop in
/// this order, after the connection was closed.
struct Live {
    consumer: lapin::Consumer,
    consume: Channel,
    /// Held, not read: the publishing channels stay open until the session ends, even
    /// when its jobs (which hold clones) are done first.
    _publish: Publisher,
    conn: Connection,
}

impl Worker {
    fn new(
        settings: AmqpSettings,
        engine: Arc<Engine>,
        options: ConsumerOptions,
        state: Arc<BrokerState>,
        shutdown: CancellationToken,
    ) -> Self {
        let ConsumerOptions {
            concurrency,
            grace,
            deferral,
            worker_name,
        } = options;
        let shared_settings = Arc::new(settings.clone());
        Worker {
            replies: Arc::new(Replies::new(shared_settings.clone(), &worker_name)),
            refusals: Arc::default(),
            shared_settings,
            nodes: Nodes::new(&settings),
            settings,
            engine,
            grace,
            deferral,
            worker_name,
            state,
            shutdown,
            permits: Arc::new(Semaphore::new(concurrency)),
            concurrency,
            publish_channels: concurrency.clamp(1, PUBLISH_CHANNELS),
            tracker: TaskTracker::new(),
            delays: Box::new(backoff()),
            first: true,
            lost_at: None,
            began: None,
        }
    }

    /// Jobs still running: each holds a probe permit. (The tracker counts the
    /// session's ack task too.)
    fn jobs_running(&self) -> usize {
        self.concurrency - self.permits.available_permits()
    }

    fn consumer_tag(&self) -> String {
        format!("picket-{}", self.worker_name)
    }

    /// Connects, declares and starts consuming. `None` after a failure (and the pause
    /// that follows it) or when shutdown came first.
    async fn open(&mut self) -> Option<(Live, Session)> {
        // Cancelled by a task whose publish failed: the channel may be gone, so the
        // session is rebuilt (and the topology declared again) rather than nacking
        // every job in a loop.
        let broken = CancellationToken::new();
        let opening = SessionOpening {
            settings: &self.settings,
            worker_name: &self.worker_name,
            publish_channels: self.publish_channels,
            broken: broken.clone(),
        };
        let session = tokio::select! {
            () = self.shutdown.cancelled() => return None,
            s = opening.open(&mut self.nodes) => s,
        };
        let (conn, publish, consume, node) = match session {
            Ok(s) => s,
            Err(failure) => {
                self.failed_to_open(failure).await;
                return None;
            }
        };
        let consumer = match consume
            .basic_consume(
                short(&self.settings.jobs_queue),
                short(&self.consumer_tag()),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
        {
            Ok(c) => c,
            Err(e) => {
                // E.g. another consumer holds the queue exclusively, or no permission:
                // retrying at once would only hammer the broker.
                close_connection(&conn, "cannot consume").await;
                let d = self.next_delay(30);
                tracing::warn!(error = %e, retry_in_ms = d.as_millis() as u64, "cannot consume; reconnecting");
                self.pause(d).await;
                return None;
            }
        };
        let session = self.started(&conn, &publish, &consume, node, broken);
        let live = Live {
            consumer,
            consume,
            _publish: publish,
            conn,
        };
        Some((live, session))
    }

    /// Says why a session could not be opened, and pauses before the next try.
    async fn failed_to_open(&mut self, failure: OpenFailure) {
        let d = self.next_delay(30);
        let retry_in_ms = d.as_millis() as u64;
        match failure {
            OpenFailure::Unreachable(e) if e.ended_in_tls() => {
                tracing::warn!(error = %e, retry_in_ms, hint = super::TLS_HINT, "broker unavailable");
            }
            OpenFailure::Unreachable(e) if e.hit_a_connection_limit() => {
                let hint = super::CONNECTION_LIMIT_HINT;
                tracing::warn!(error = %e, retry_in_ms, hint, "broker unavailable");
            }
            OpenFailure::Unreachable(e) => {
                tracing::warn!(error = %e, retry_in_ms, "broker unavailable");
            }
            OpenFailure::SetUp { node, error } => {
                tracing::warn!(node = %node, error = %error, retry_in_ms, "broker refused the session's set-up (channels, declarations or QoS); check the user's permissions and the queues' arguments");
            }
        }
        self.pause(d).await;
    }

    /// Counts and announces a session that is consuming, and builds what its jobs share.
    fn started(
        &mut self,
        conn: &Connection,
        publish: &Publisher,
        consume: &Channel,
        node: Node,
        broken: CancellationToken,
    ) -> Session {
        if !self.first {
            metric::reconnected();
        }
        if node.moved {
            metric::broker_failover();
        }
        if let Some(at) = self.lost_at.take() {
            metric::broker_unavailable(at.elapsed());
        }
        self.first = false;
        self.began = Some(tokio::time::Instant::now());
        self.state.connected.store(true, Ordering::SeqCst);
        self.state.consuming.store(true, Ordering::SeqCst);
        metric::broker_up(true);
        broker_blocked(&self.state, false);
        tracing::info!(queue = %self.settings.jobs_queue, node = %node.label, moved = node.moved, "consuming");
        self.state.set_node(node.label);
        let session = Session {
            engine: self.engine.clone(),
            publish: publish.clone(),
            replies: self.replies.clone(),
            refusals: self.refusals.clone(),
            settings: self.shared_settings.clone(),
            deferral: self.deferral,
            acks: Acks::start(consume.clone(), &self.tracker),
            broken,
            over: CancellationToken::new(),
            shutdown: self.shutdown.clone(),
            unreadable: Arc::default(),
            settled: Arc::default(),
            // 0: no limit was negotiated.
            frame_max: match conn.configuration().frame_max() {
                0 => usize::MAX,
                max => usize::try_from(max).unwrap_or(usize::MAX),
            },
        };
        // While every slot is taken the loop waits for a permit, not for the consumer:
        // the connection's own events tell it that the session is gone.
        watch_connection(
            conn,
            &self.settings.jobs_queue,
            self.state.clone(),
            &session,
        );
        session
    }

    /// Takes deliveries, each after a probe permit, into tasks of their own until
    /// shutdown, a broken session, or the consumer's end.
    async fn consume(&self, live: &mut Live, session: &Session) {
        loop {
            // Take the permit before pulling the next delivery: no job waits in memory
            // without a probe slot.
            let permit = tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = session.broken.cancelled() => break,
                p = self.permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
            };
            let delivery = tokio::select! {
                () = self.shutdown.cancelled() => break,
                () = session.broken.cancelled() => break,
                d = live.consumer.next() => d,
            };
            let delivery = match delivery {
                Some(Ok(d)) => d,
                // Often seen here before the connection's events say it.
                Some(Err(e)) if unreadable(&e) => {
                    tell_unreadable(&session.unreadable, &e, &self.settings.jobs_queue);
                    break;
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer failed; reconnecting");
                    break;
                }
                // The broker cancelled the consumer (`basic.cancel`): lapin ends its stream.
                None => {
                    tracing::warn!(
                        queue = %self.settings.jobs_queue,
                        "the broker cancelled our consumer of the jobs queue (the queue was \
                         deleted, or the node holding it went away); declaring it again and \
                         consuming anew"
                    );
                    break;
                }
            };
            metric::job_consumed();
            session.acks.delivered(delivery.delivery_tag);
            self.tracker.spawn(job(session.clone(), delivery, permit));
        }
    }

    /// Lets go of the session's shared handles and returns its `over` token. The ack
    /// task ends, after sending the last acks, once the jobs' handles are gone too:
    /// waiting for the tracker waits for it.
    fn release(&self, session: Session) -> Ended {
        let Session { over, settled, .. } = session;
        self.state.consuming.store(false, Ordering::SeqCst);
        Ended { over, settled }
    }

    /// Stops the flow of deliveries on shutdown, and hands back those the broker had
    /// already sent that no job took (prefetched), where a return would count against
    /// the queue's delivery limit ([`hand_back_on_stop`]).
    async fn stop_taking(&self, live: &mut Live, session: &Session) {
        let cancel = live
            .consume
            .basic_cancel(short(&self.consumer_tag()), BasicCancelOptions::default());
        let _ = tokio::time::timeout(CLOSE_WAIT, cancel).await;
        if self.settings.queue_type != crate::config::QueueType::Quorum {
            return;
        }
        // After the cancel the consumer yields what it holds, then ends.
        let mut held = Vec::new();
        let drain = async {
            while let Some(Ok(delivery)) = live.consumer.next().await {
                session.acks.delivered(delivery.delivery_tag);
                held.push(delivery);
            }
        };
        let _ = tokio::time::timeout(CLOSE_WAIT, drain).await;
        // Side by side, over the session's publishing channels: up to `prefetch` of
        // them, within the time a close is given.
        let back = futures_util::stream::iter(&held).for_each_concurrent(
            self.publish_channels,
            |d| async move {
                hand_back_on_stop(session, d).await;
            },
        );
        let _ = tokio::time::timeout(CLOSE_WAIT, back).await;
    }

    /// Ends the last session on shutdown (its flow stopped): let in-flight jobs finish
    /// within the grace period, then stop them (each handed back or left to the close)
    /// and close: whatever is still unacked goes back to the queue.
    async fn shut_down(&self, live: Live, over: CancellationToken) {
        self.tracker.close();
        if tokio::time::timeout(self.grace, self.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = self.jobs_running(),
                "shutdown grace over; unfinished jobs go back to the queue"
            );
        }
        over.cancel();
        // The stopped jobs' hand-backs, and the acks they send, before the close.
        let _ = tokio::time::timeout(CLOSE_WAIT, self.tracker.wait()).await;
        self.replies.close().await;
        close_connection(&live.conn, "picket worker shutting down").await;
        self.disconnected();
    }

    /// `/readyz` and the gauges without a session. Not blocked either: a new session
    /// is told again by the broker if its alarm still holds.
    fn disconnected(&self) {
        self.state.connected.store(false, Ordering::SeqCst);
        metric::broker_up(false);
        broker_blocked(&self.state, false);
    }

    /// Ends a session that broke (shutdown not asked), then pauses before the next:
    /// the backoff starts again only after a session that worked (it settled a job, or
    /// lived [`A_WHILE`]); one that opens and breaks on every result (the user may not
    /// publish to the results exchange, a policy refuses it) is rebuilt ever more slowly,
    /// not twice a second for ever.
    async fn end(&mut self, live: Live, ended: Ended) {
        let Ended { over, settled } = ended;
        let lived = self.began.take().map_or(Duration::ZERO, |t| t.elapsed());
        if settled.load(Ordering::SeqCst) || lived >= A_WHILE {
            self.delays = Box::new(backoff());
        }
        self.disconnected();
        self.lost_at = Some(tokio::time::Instant::now());
        // Jobs in flight may still publish and ack on a channel that works: give them
        // the grace period before the connection goes. On a dead connection (its node
        // died) they cannot, and the broker hands their deliveries to others: move to the
        // next node at once instead of idling through the grace period.
        if live.conn.status().connected() {
            self.tracker.close();
            let _ = tokio::time::timeout(self.grace, self.tracker.wait()).await;
            self.tracker.reopen();
        }
        // What is still running cannot be acked on this session: the broker hands those
        // jobs out again, so they stop here rather than probe on and hold their slots.
        over.cancel();
        close_connection(&live.conn, "reconnecting").await;
        // A broken session is rebuilt after a pause, not in a hot loop.
        let d = self.next_delay(1);
        self.pause(d).await;
    }

    /// The next backoff step (`fallback_secs` once the iterator is spent, which it never is).
    fn next_delay(&mut self, fallback_secs: u64) -> Duration {
        self.delays
            .next()
            .unwrap_or(Duration::from_secs(fallback_secs))
    }

    /// Sleeps for `d`, or less when shutdown comes.
    async fn pause(&self, d: Duration) {
        tokio::select! {
            () = self.shutdown.cancelled() => {}
            () = tokio::time::sleep(d) => {}
        }
    }
}

/// What a new session is opened with.
struct SessionOpening<'a> {
    settings: &'a AmqpSettings,
    worker_name: &'a str,
    publish_channels: usize,
    broken: CancellationToken,
}

/// Why a session could not be opened: the operator's next step differs.
enum OpenFailure {
    /// No node took the connection (down, unreachable, wrong credentials).
    Unreachable(AmqpError),
    /// A node took it but refused what the session needs: channels, the topology's
    /// declarations (permissions, a queue declared with other arguments) or QoS.
    SetUp {
        /// The node, password redacted.
        node: String,
        error: AmqpError,
    },
}

impl SessionOpening<'_> {
    /// Connects to a node and sets up the session's channels and topology.
    async fn open(
        self,
        nodes: &mut Nodes,
    ) -> Result<(Connection, Publisher, Channel, Node), OpenFailure> {
        let name = connection_name("worker", Some(self.worker_name));
        let (conn, node) = nodes
            .connect(self.settings, &name)
            .await
            .map_err(OpenFailure::Unreachable)?;
        match self.channels(&conn).await {
            Ok((publish, consume)) => Ok((conn, publish, consume, node)),
            Err(error) => {
                // A node that takes the connection but cannot serve the topology (e.g. it
                // is still joining its cluster): let it go; the next attempt tries
                // another node.
                close_connection(&conn, "session set-up failed").await;
                Err(OpenFailure::SetUp {
                    node: node.label,
                    error,
                })
            }
        }
    }

    /// The session's publishing channels (confirm mode) and consuming channel (QoS),
    /// with the topology declared.
    async fn channels(&self, conn: &Connection) -> Result<(Publisher, Channel), AmqpError> {
        let channels = self.publish_channels.min(publishing_room(conn));
        let publish = Publisher::open(conn, channels, self.broken.clone()).await?;
        declare(conn, self.settings).await?;
        let consume = conn.create_channel().await?;
        consume
            .basic_qos(self.settings.prefetch, BasicQosOptions::default())
            .await?;
        Ok((publish, consume))
    }
}

/// Publishing channels the connection has room for: what it negotiated (`channel_max`,
/// 0 for no limit; a broker or proxy may allow only a few) less the consuming channel
/// and the topology's, which may need a second one after a refused declaration.
fn publishing_room(conn: &Connection) -> usize {
    match conn.configuration().channel_max() {
        0 => usize::MAX,
        max => usize::from(max).saturating_sub(3).max(1),
    }
}

/// Whether the connection ended on frames the client could not read: a delivered
/// message's properties (the broker's own frames are always readable).
fn unreadable(e: &lapin::Error) -> bool {
    matches!(e.kind(), lapin::ErrorKind::ParsingError(_))
}

/// Cancels `broken` when the connection reports an error (the broker closed it, its
/// node died), and tells when the broker blocks and unblocks its publishing; ends with
/// the session.
fn watch_connection(
    conn: &Connection,
    jobs_queue: &str,
    state: Arc<BrokerState>,
    session: &Session,
) {
    let events = conn.events_listener();
    let jobs_queue = jobs_queue.to_string();
    let (broken, over) = (session.broken.clone(), session.over.clone());
    let told = session.unreadable.clone();
    tokio::spawn(async move {
        futures_util::pin_mut!(events);
        loop {
            tokio::select! {
                () = over.cancelled() => break,
                event = events.next() => match event {
                    Some(lapin::Event::Error(e)) if unreadable(&e) => {
                        tell_unreadable(&told, &e, &jobs_queue);
                        broken.cancel();
                        break;
                    }
                    Some(lapin::Event::Error(e)) => {
                        tracing::warn!(error = %e, "broker connection failed; ending the session");
                        broken.cancel();
                        break;
                    }
                    Some(lapin::Event::ConnectionBlocked(reason)) => {
                        tracing::warn!(reason = %reason, "the broker blocks publishing (a memory or disk alarm): results wait for their confirms, jobs stay unacked, nothing is lost; it goes on when the alarm clears");
                        broker_blocked(&state, true);
                    }
                    Some(lapin::Event::ConnectionUnblocked) => {
                        tracing::info!("the broker unblocked publishing");
                        broker_blocked(&state, false);
                    }
                    Some(_) => {}
                    None => {
                        broken.cancel();
                        break;
                    }
                },
            }
        }
    });
}

/// Says, once per session (`told`), that the connection ended on a delivered message
/// the client cannot read, with a count to alert on.
fn tell_unreadable(told: &std::sync::atomic::AtomicBool, e: &lapin::Error, jobs_queue: &str) {
    if told.swap(true, Ordering::SeqCst) {
        return;
    }
    metric::unreadable_message();
    tracing::error!(error = %e, queue = %jobs_queue, "a message delivered from the jobs queue has AMQP properties the client cannot read (bytes that are not UTF-8 in a short string such as message_id), which ends the connection and requeues the jobs in flight; it is handed to the next worker and, on a classic queue, comes back forever: remove it (see OPERATIONS, \"Not yet\")");
}

/// Whether the broker blocks publishing, for `/readyz` and the gauge together.
fn broker_blocked(state: &BrokerState, blocked: bool) {
    state.blocked.store(blocked, Ordering::SeqCst);
    metric::broker_blocked(blocked);
}
