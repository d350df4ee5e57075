//! Every metric name picket exports, in one place, with the functions that record them.
//! Recording is a no-op until [`install`] sets the Prometheus recorder (the worker does;
//! `picket check` does not). Every histogram gets buckets (a summary cannot be added up
//! across workers), and [`render`] refreshes the process metrics before each scrape.

use std::time::Duration;

use metrics::{counter, gauge, histogram};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::job::{Reason, Verdict};
use crate::probe::Observation;

const JOBS_CONSUMED: &str = "picket_jobs_consumed_total";
const RESULTS: &str = "picket_results_total";
const DEAD_LETTERED: &str = "picket_dead_lettered_total";
const REQUEUED: &str = "picket_jobs_requeued_total";
const PROBE_SECONDS: &str = "picket_probe_duration_seconds";
const IN_FLIGHT: &str = "picket_jobs_in_flight";
const BROKER_UP: &str = "picket_broker_connected";
const BROKER_BLOCKED: &str = "picket_broker_blocked";
const REDIS_UP: &str = "picket_redis_connected";
const REDIS_EVICTS: &str = "picket_redis_evicts";
const REDIS_ERRORS: &str = "picket_redis_errors_total";
const RECONNECTS: &str = "picket_broker_reconnects_total";
const UNREADABLE: &str = "picket_unreadable_messages_total";
const FAILOVERS: &str = "picket_broker_failovers_total";
const BROKER_OUTAGE_SECONDS: &str = "picket_broker_outage_seconds";
const PUBLISH_FAILURES: &str = "picket_publish_failures_total";
const LIMITER_FALLBACK: &str = "picket_limiter_fallback";
const THROTTLE_WAITS: &str = "picket_throttle_waits_total";
const THROTTLE_WAIT_SECONDS: &str = "picket_throttle_wait_seconds";
const DEFERRALS: &str = "picket_jobs_deferred_total";
const BACK_EARLY: &str = "picket_jobs_back_early_total";
const TOO_BUSY: &str = "picket_jobs_too_busy_total";
const EGRESS_ATTEMPTS: &str = "picket_egress_attempts_total";
const EGRESS_RESTS: &str = "picket_egress_rests_total";
const EGRESS_SLOT_WAIT_SECONDS: &str = "picket_egress_slot_wait_seconds";
const EGRESS_BUSY: &str = "picket_egress_busy_total";
const EGRESS_FULL: &str = "picket_egress_full_total";
const EGRESS_ROOM: &str = "picket_egress_room";
const ACK_FRAMES: &str = "picket_ack_frames_total";
const STATE_CHANGES: &str = "picket_state_changes_total";
const STATE_UNAVAILABLE: &str = "picket_state_unavailable_total";
const STATE_REPLAYS: &str = "picket_state_replays_total";
const STATE_STALE: &str = "picket_state_stale_total";
const REDIS_DATA_LOST: &str = "picket_redis_data_lost_total";
const STEPS_UNSETTLED: &str = "picket_state_steps_unsettled_total";
const CHANGES_PUBLISHED: &str = "picket_changes_published_total";
const PHASE_SECONDS: &str = "picket_phase_duration_seconds";
const ISSUER_FETCHES: &str = "picket_issuer_fetches_total";
const HTTPS_UPGRADES: &str = "picket_https_upgrades_total";
const WITNESS_CHECKS: &str = "picket_witness_checks_total";
const HOST_FILES_READ: &str = "picket_host_files_read_total";
const CLOCK_OFFSET: &str = "picket_clock_offset_seconds";
const EVENT_LOOP_LAG: &str = "picket_event_loop_lag_seconds";
const BUILD_INFO: &str = "picket_build_info";

/// Buckets of the probe and phase histograms: a loopback connect to a 60 s timeout.
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];
/// Buckets of our event loop's lag: a millisecond is a healthy loop, a quarter of the
/// shortest job timeout (25 ms) is where lag starts to turn timeouts into `unknown`.
const LAG_BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];
/// Buckets of the limit's waits: `rate_limit.max_wait` is 30 s by default.
const WAIT_BUCKETS: &[f64] = &[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
const IP_BACKOFFS: &str = "picket_ip_backoffs_total";
const PACED: &str = "picket_paced_requests_total";
const SLOTS_MISSED: &str = "picket_limiter_slots_missed_total";

/// Installs the Prometheus recorder (once per process) and returns the handle that
/// renders `/metrics`; later calls return the same handle.
///
/// # Errors
/// Another recorder was installed by someone else.
pub(crate) fn install() -> Result<PrometheusHandle, String> {
    static HANDLE: std::sync::OnceLock<Result<PrometheusHandle, String>> =
        std::sync::OnceLock::new();
    HANDLE.get_or_init(install_once).clone()
}

fn install_once() -> Result<PrometheusHandle, String> {
    let e = |e: metrics_exporter_prometheus::BuildError| e.to_string();
    // The default buckets cover a histogram added later without its own: none is ever
    // rendered as a summary.
    let handle = PrometheusBuilder::new()
        .set_buckets(LATENCY_BUCKETS)
        .map_err(e)?
        .set_buckets_for_metric(Matcher::Full(THROTTLE_WAIT_SECONDS.into()), WAIT_BUCKETS)
        .map_err(e)?
        .set_buckets_for_metric(Matcher::Full(EVENT_LOOP_LAG.into()), LAG_BUCKETS)
        .map_err(e)?
        .set_buckets_for_metric(
            Matcher::Full(BROKER_OUTAGE_SECONDS.to_string()),
            &[0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0],
        )
        .map_err(e)?
        .install_recorder()
        .map_err(e)?;
    describe();
    zero();
    process_collector().describe();
    gauge!(BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    Ok(handle)
}

/// Exports every counter (and the fallback gauge) at 0 from the start: an alert on
/// `increase(...)` or a dashboard's rate sees a series that exists before the first
/// failure, not one that appears with it.
fn zero() {
    for name in [
        JOBS_CONSUMED,
        DEAD_LETTERED,
        REQUEUED,
        RECONNECTS,
        UNREADABLE,
        PUBLISH_FAILURES,
        THROTTLE_WAITS,
        DEFERRALS,
        BACK_EARLY,
        ACK_FRAMES,
        FAILOVERS,
        IP_BACKOFFS,
        PACED,
        SLOTS_MISSED,
        STATE_UNAVAILABLE,
        STATE_REPLAYS,
        STATE_STALE,
        REDIS_DATA_LOST,
        STEPS_UNSETTLED,
        CHANGES_PUBLISHED,
    ] {
        counter!(name).increment(0);
    }
    // One series per verdict (with its commonest reason), so that a ratio of results
    // by verdict (the shipped `PicketUnknownShareRising`) has both its terms from the start.
    for (verdict, reason) in [
        (Verdict::Up, Reason::Ok),
        (Verdict::Degraded, Reason::Slow),
        (Verdict::Down, Reason::Connect),
        (Verdict::Unknown, Reason::Blocked),
        (Verdict::Invalid, Reason::InvalidJob),
    ] {
        counter!(RESULTS, "verdict" => verdict.as_str(), "reason" => reason.as_str(), "cached" => "false").increment(0);
    }
    let site = [Verdict::Up, Verdict::Degraded, Verdict::Down];
    for from in site {
        for to in site.into_iter().filter(|to| *to != from) {
            counter!(STATE_CHANGES, "from" => from.as_str(), "to" => to.as_str()).increment(0);
        }
    }
    for limit in BUSY_LIMITS {
        counter!(TOO_BUSY, "limit" => limit).increment(0);
    }
    for call in ["get", "set"] {
        counter!(REDIS_ERRORS, "call" => call).increment(0);
    }
    for outcome in ISSUER_OUTCOMES {
        counter!(ISSUER_FETCHES, "outcome" => outcome).increment(0);
    }
    for outcome in ["answered", "failed"] {
        counter!(HTTPS_UPGRADES, "outcome" => outcome).increment(0);
    }
    for said in WITNESS_SAID {
        counter!(WITNESS_CHECKS, "said" => said).increment(0);
    }
    for file in ["/etc/hosts", "/etc/resolv.conf", "tls roots"] {
        for outcome in ["read", "failed"] {
            counter!(HOST_FILES_READ, "file" => file, "outcome" => outcome).increment(0);
        }
    }
    // 0 until enough sites have told the time: no offset known.
    gauge!(CLOCK_OFFSET).set(0.0);
    gauge!(IN_FLIGHT).increment(0.0);
    gauge!(LIMITER_FALLBACK).set(0.0);
}

/// Exports the per-egress counters at 0 for each configured egress.
pub(crate) fn egresses<'a>(names: impl IntoIterator<Item = &'a str>) {
    for name in names {
        counter!(EGRESS_RESTS, "egress" => name.to_string()).increment(0);
        counter!(EGRESS_BUSY, "egress" => name.to_string()).increment(0);
        counter!(EGRESS_FULL, "egress" => name.to_string()).increment(0);
        for outcome in ["answered", "failed"] {
            counter!(EGRESS_ATTEMPTS, "egress" => name.to_string(), "outcome" => outcome)
                .increment(0);
        }
    }
}

fn process_collector() -> &'static metrics_process::Collector {
    static COLLECTOR: std::sync::OnceLock<metrics_process::Collector> = std::sync::OnceLock::new();
    COLLECTOR.get_or_init(metrics_process::Collector::default)
}

/// The Prometheus text of `/metrics`, with the process metrics (CPU, memory, file
/// descriptors, threads) read just now.
pub(crate) fn render(handle: &PrometheusHandle) -> String {
    process_collector().collect();
    handle.render()
}

/// Long and left whole: pure data, one description per metric, easier to check as one list.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram};
    describe_counter!(JOBS_CONSUMED, "Job messages taken from the jobs queue");
    describe_counter!(
        RESULTS,
        "Results published (confirmed by the broker), by verdict, reason and whether cached"
    );
    describe_counter!(
        DEAD_LETTERED,
        "Messages that were not jobs, moved to the dead-letter queue"
    );
    describe_counter!(
        REQUEUED,
        "Deliveries handed back to the broker (result not confirmed, or a first handler failure)"
    );
    describe_histogram!(PROBE_SECONDS, "Duration of one probe attempt");
    describe_histogram!(
        EVENT_LOOP_LAG,
        "How late the worker's own event loop woke a 20 ms timer: high when the worker is short of CPU"
    );
    describe_histogram!(
        PHASE_SECONDS,
        "Duration of one phase of a probe attempt: dns, connect (TCP, and a proxy's handshake), tls, first_byte (request sent to response headers)"
    );
    describe_gauge!(
        BUILD_INFO,
        "Always 1; the label version is picket's version"
    );
    describe_gauge!(IN_FLIGHT, "Jobs being handled right now");
    describe_gauge!(BROKER_UP, "1 while the worker is connected to RabbitMQ");
    describe_gauge!(
        BROKER_BLOCKED,
        "1 while RabbitMQ blocks this worker's publishing (a memory or disk alarm): results wait"
    );
    describe_gauge!(REDIS_UP, "1 while the last Redis call succeeded");
    describe_gauge!(
        REDIS_EVICTS,
        "1 while Redis may evict keys when full (maxmemory with a policy other than noeviction): states and limits are lost silently"
    );
    describe_counter!(REDIS_ERRORS, "Redis calls that failed or timed out");
    describe_counter!(
        STEPS_UNSETTLED,
        "State steps answered by a Redis primary the Sentinels were failing over (a failover's resync may wipe them): asked again of the new primary"
    );
    describe_counter!(
        REDIS_DATA_LOST,
        "Times this worker found Redis had lost picket's keys (a restart without persistence, a FLUSHALL, a failover to a replica that had not synced): states started afresh, changes pending then were told by no result"
    );
    describe_counter!(RECONNECTS, "Connections to RabbitMQ re-established");
    describe_counter!(
        UNREADABLE,
        "Connections ended by a delivered message whose AMQP frames the client cannot read"
    );
    describe_counter!(
        FAILOVERS,
        "Sessions opened on another RabbitMQ node than the previous one (amqp.urls)"
    );
    describe_histogram!(
        BROKER_OUTAGE_SECONDS,
        "Time without consuming from a lost broker session to the next one (sum = total time without a broker)"
    );
    describe_counter!(PUBLISH_FAILURES, "Results whose publish was not confirmed");
    describe_gauge!(
        LIMITER_FALLBACK,
        "1 while the per-IP limit is kept locally because Redis is unavailable"
    );
    describe_counter!(THROTTLE_WAITS, "Requests that waited for their IP's limit");
    describe_histogram!(
        THROTTLE_WAIT_SECONDS,
        "Time a request waited for its IP's limit"
    );
    describe_counter!(
        IP_BACKOFFS,
        "Refusals of us (403/429/503 storms, resets) recognised; their IP was held and slowed"
    );
    describe_counter!(
        PACED,
        "Requests spaced further than their IP's rate because its answers were slow"
    );
    describe_counter!(
        SLOTS_MISSED,
        "Requests that woke too late on their IP's slot to send on it (the process was stopped or starved of CPU) and booked again"
    );
    describe_counter!(
        DEFERRALS,
        "Jobs put back on the broker because their IP was busy"
    );
    describe_counter!(
        BACK_EARLY,
        "Jobs back from a delay queue long before their place in their IP's line, put back until then (not deferrals)"
    );
    describe_counter!(
        TOO_BUSY,
        "Jobs answered unknown/rate_limited unprobed, by the limit they met: max_defer (their IP has more sites than its rate checks in time) or max_deferrals"
    );
    describe_counter!(
        EGRESS_ATTEMPTS,
        "Probe attempts by egress and outcome (answered, failed): an egress failing while others answer is sick"
    );
    describe_counter!(
        ACK_FRAMES,
        "Ack frames sent to RabbitMQ: fewer than jobs consumed when one ack settles a run of finished jobs"
    );
    describe_histogram!(
        EGRESS_SLOT_WAIT_SECONDS,
        "Time a request waited for one of its egress's connections (egress.max_connections, or the room its proxy taught)"
    );
    describe_counter!(
        EGRESS_BUSY,
        "Requests not sent: every connection their egress may hold stayed busy for rate_limit.max_wait"
    );
    describe_gauge!(
        EGRESS_ROOM,
        "Requests sent through the egress at once at most, as its proxy taught by saying it had no room (absent until it did)"
    );
    describe_counter!(
        EGRESS_FULL,
        "Times the egress's proxy said it had no room for another client (a 503 \"Too many open connections\")"
    );
    describe_counter!(
        EGRESS_RESTS,
        "Times an egress was rested (avoided for probe.egress_rest) after failing for many sites while others answered"
    );
    describe_counter!(
        STATE_CHANGES,
        "Results that changed their key's verdict, by previous (from) and new (to) verdict"
    );
    describe_counter!(
        STATE_UNAVAILABLE,
        "Results sent without their key's state (Redis unavailable): no previous verdict, no change"
    );
    describe_counter!(
        STATE_REPLAYS,
        "Redelivered jobs answered with the result they had already produced"
    );
    describe_counter!(
        STATE_STALE,
        "Results whose check began before the one that last stepped their key (overlapping checks, the newer one ended first): published, but their key did not move"
    );
    describe_counter!(
        ISSUER_FETCHES,
        "Missing intermediates sought at a caIssuers URL (incomplete chains), by outcome: fetched, failed (the URL's own failure, remembered for 5 min), remembered (that failure said again, no fetch), skipped (ours: no time or no permit left, or the egress's proxy failing)"
    );
    describe_counter!(
        HTTPS_UPGRADES,
        "Plain-HTTP hops that failed before any answer and were asked over HTTPS instead, as browsers ask them, by outcome: answered, failed"
    );
    describe_counter!(
        WITNESS_CHECKS,
        "Sites that answered lately through an egress, asked again before a site no connection reached was believed down (no canaries configured), by what they said: reached (the down stands), unreached (our way out: unknown), nothing"
    );
    describe_gauge!(
        CLOCK_OFFSET,
        "The sites' clock minus this worker's (s): the median of the Date (plus Age) of the latest answers of 31 addresses, once 5 answered; beyond 300 s either way, certificates are judged by the sites' clock"
    );
    describe_counter!(
        HOST_FILES_READ,
        "/etc/hosts, /etc/resolv.conf and the TLS roots (tls roots) read again after they changed, by file and outcome: read, or failed (unreadable, no nameserver named, no certificate: what the files said before stands)"
    );
    describe_counter!(
        CHANGES_PUBLISHED,
        "Changes published to the changes exchange and confirmed"
    );
}

/// Ack frames sent for one batch of finished jobs.
pub(crate) fn acks_sent(frames: usize) {
    counter!(ACK_FRAMES).increment(frames as u64);
}

/// A delivery was taken from the jobs queue.
pub(crate) fn job_consumed() {
    counter!(JOBS_CONSUMED).increment(1);
}

/// A result was published: the broker confirmed it (a refused one reached no subscriber).
pub(crate) fn result(verdict: Verdict, reason: Reason, cached: bool) {
    counter!(RESULTS, "verdict" => verdict.as_str(), "reason" => reason.as_str(), "cached" => if cached { "true" } else { "false" }).increment(1);
}

/// A message was dead-lettered.
pub(crate) fn dead_lettered() {
    counter!(DEAD_LETTERED).increment(1);
}

/// A delivery was handed back to the broker.
pub(crate) fn requeued() {
    counter!(REQUEUED).increment(1);
}

/// One probe attempt was made: its whole duration and each phase that it reached.
pub(crate) fn probe_observed(obs: &Observation) {
    histogram!(PROBE_SECONDS).record(obs.total.as_secs_f64());
    let phases = [
        ("dns", obs.dns),
        ("connect", obs.connect),
        ("tls", obs.tls),
        ("first_byte", obs.first_byte),
    ];
    for (phase, took) in phases {
        if let Some(d) = took {
            histogram!(PHASE_SECONDS, "phase" => phase).record(d.as_secs_f64());
        }
    }
}

/// Jobs in flight changed by `delta`.
pub(crate) fn in_flight(delta: f64) {
    gauge!(IN_FLIGHT).increment(delta);
}

/// The broker connection is up or down.
pub(crate) fn broker_up(up: bool) {
    gauge!(BROKER_UP).set(if up { 1.0 } else { 0.0 });
}

/// The last Redis call worked or not.
pub(crate) fn redis_up(up: bool) {
    gauge!(REDIS_UP).set(if up { 1.0 } else { 0.0 });
}

/// Whether Redis may evict keys when full: 1 or 0, -1 when it cannot be read.
pub(crate) fn redis_evicts(evicts: Option<bool>) {
    gauge!(REDIS_EVICTS).set(match evicts {
        Some(true) => 1.0,
        Some(false) => 0.0,
        None => -1.0,
    });
}

/// A state step was answered by a primary the Sentinels are failing over.
pub(crate) fn state_step_unsettled() {
    counter!(STEPS_UNSETTLED).increment(1);
}

/// Redis lost picket's keys since this worker last looked.
pub(crate) fn redis_data_lost() {
    counter!(REDIS_DATA_LOST).increment(1);
}

/// A Redis call failed.
pub(crate) fn redis_error(what: &'static str) {
    redis_up(false);
    counter!(REDIS_ERRORS, "call" => what).increment(1);
}

/// The broker blocks (or no longer blocks) publishing.
pub(crate) fn broker_blocked(blocked: bool) {
    gauge!(BROKER_BLOCKED).set(if blocked { 1.0 } else { 0.0 });
}

/// The broker connection was made again after a loss.
pub(crate) fn reconnected() {
    counter!(RECONNECTS).increment(1);
}

/// The connection ended on a delivered message the AMQP client cannot read.
pub(crate) fn unreadable_message() {
    counter!(UNREADABLE).increment(1);
}

/// A session was opened on another broker node than the previous one.
pub(crate) fn broker_failover() {
    counter!(FAILOVERS).increment(1);
}

/// Consuming resumed `d` after the previous session was lost.
pub(crate) fn broker_unavailable(d: Duration) {
    histogram!(BROKER_OUTAGE_SECONDS).record(d.as_secs_f64());
}

/// A result publish was not confirmed.
pub(crate) fn publish_failed() {
    counter!(PUBLISH_FAILURES).increment(1);
}

/// The limiter switched to (or back from) its local fallback.
pub(crate) fn limiter_fallback(on: bool) {
    gauge!(LIMITER_FALLBACK).set(if on { 1.0 } else { 0.0 });
}

/// A request waited `d` for its IP's limit.
pub(crate) fn throttle_wait(d: Duration) {
    if !d.is_zero() {
        counter!(THROTTLE_WAITS).increment(1);
        histogram!(THROTTLE_WAIT_SECONDS).record(d.as_secs_f64());
    }
}

/// A refusal of us was recognised and its IP held (a back-off step or its storm).
pub(crate) fn ip_backoff() {
    counter!(IP_BACKOFFS).increment(1);
}

/// A request was spaced further than its rate because its IP answers slowly.
pub(crate) fn paced() {
    counter!(PACED).increment(1);
}

/// A request woke too late on its IP's slot and booked again.
pub(crate) fn slot_missed() {
    counter!(SLOTS_MISSED).increment(1);
}

/// A job was deferred to the delay queue.
pub(crate) fn deferred() {
    counter!(DEFERRALS).increment(1);
}

/// A job came back from a delay queue more than `max_wait` before its place and was put
/// back: many of them mean the delay queues' steps are coarse for the IPs' lines.
pub(crate) fn back_early() {
    counter!(BACK_EARLY).increment(1);
}

/// The limits that answer a job unprobed: its place in its IP's line was beyond
/// `rate_limit.max_defer`, or it was deferred as often as it may be.
const BUSY_LIMITS: [&str; 2] = ["max_defer", "max_deferrals"];

/// A job was answered `unknown/rate_limited` without a probe (`max_defer` true: its
/// place in its IP's line was too far; false: it was deferred too often).
pub(crate) fn too_busy(max_defer: bool) {
    let limit = BUSY_LIMITS[usize::from(!max_defer)];
    counter!(TOO_BUSY, "limit" => limit).increment(1);
}

/// What seeking a missing intermediate at a `caIssuers` URL came to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum IssuerFetch {
    Fetched,
    Failed,
    Remembered,
    Skipped,
    /// Its host not reached, not yet for long enough to be the URL's failure.
    Unreached,
}

const ISSUER_OUTCOMES: [&str; 5] = ["fetched", "failed", "remembered", "skipped", "unreached"];

/// A missing intermediate was sought at a `caIssuers` URL.
pub(crate) fn issuer_fetch(outcome: IssuerFetch) {
    counter!(ISSUER_FETCHES, "outcome" => ISSUER_OUTCOMES[outcome as usize]).increment(1);
}

/// A plain-HTTP hop asked over HTTPS instead got an answer or not: many answers mean
/// jobs name `http://` sites that now live on HTTPS only.
pub(crate) fn https_upgrade(answered: bool) {
    let outcome = if answered { "answered" } else { "failed" };
    counter!(HTTPS_UPGRADES, "outcome" => outcome).increment(1);
}

/// What a check of witnesses said ([`WITNESS_SAID`]).
const WITNESS_SAID: [&str; 3] = ["reached", "unreached", "nothing"];

/// Witnesses were asked about a site no connection reached (`engine::our_side::witness`):
/// `said` is one of [`WITNESS_SAID`].
pub(crate) fn witness_check(said: &'static str) {
    counter!(WITNESS_CHECKS, "said" => said).increment(1);
}

/// A host file (`/etc/hosts`, `/etc/resolv.conf`) that changed was read again, or
/// could not be (its last reading stands).
pub(crate) fn host_file_read(file: &'static str, read: bool) {
    let outcome = if read { "read" } else { "failed" };
    counter!(HOST_FILES_READ, "file" => file, "outcome" => outcome).increment(1);
}

/// The sites' clock minus ours, in ms (`http::sites_clock`).
pub(crate) fn clock_offset(ms: i64) {
    gauge!(CLOCK_OFFSET).set(ms as f64 / 1000.0);
}

/// One probe attempt through `egress` got an HTTP answer or not.
pub(crate) fn egress_attempt(egress: &str, answered: bool) {
    let outcome = if answered { "answered" } else { "failed" };
    counter!(EGRESS_ATTEMPTS, "egress" => egress.to_string(), "outcome" => outcome).increment(1);
}

/// A request through `egress` waited `d` for one of its capped connections.
pub(crate) fn egress_slot_wait(egress: &str, d: Duration) {
    histogram!(EGRESS_SLOT_WAIT_SECONDS, "egress" => egress.to_string()).record(d.as_secs_f64());
}

/// A request through `egress` was not sent: none of its capped connections came free.
pub(crate) fn egress_busy(egress: &str) {
    counter!(EGRESS_BUSY, "egress" => egress.to_string()).increment(1);
}

/// The proxy of `egress` said it had no room for another client.
pub(crate) fn egress_full(egress: &str) {
    counter!(EGRESS_FULL, "egress" => egress.to_string()).increment(1);
}

/// The most requests sent through `egress` at once now, as its proxy taught (or grown
/// back to its cap).
pub(crate) fn egress_room(egress: &str, room: usize) {
    gauge!(EGRESS_ROOM, "egress" => egress.to_string()).set(room as f64);
}

/// `egress` was put to rest after failing for many sites while others answered.
pub(crate) fn egress_rested(egress: &str) {
    counter!(EGRESS_RESTS, "egress" => egress.to_string()).increment(1);
}

/// A result changed its key's verdict from `from` to `to` (flapping shows here).
pub(crate) fn state_changed(from: Verdict, to: Verdict) {
    counter!(STATE_CHANGES, "from" => from.as_str(), "to" => to.as_str()).increment(1);
}

/// A key's state could not be read or written (Redis away): the result went out with
/// no previous verdict and no change.
pub(crate) fn state_unavailable() {
    counter!(STATE_UNAVAILABLE).increment(1);
}

/// A redelivered job was answered with the result it had already produced.
pub(crate) fn state_replayed() {
    counter!(STATE_REPLAYS).increment(1);
}

/// A result looked at its site before the observation that last stepped its key: it
/// moved nothing.
pub(crate) fn state_stale() {
    counter!(STATE_STALE).increment(1);
}

/// A change was published to the changes exchange and confirmed.
pub(crate) fn change_published() {
    counter!(CHANGES_PUBLISHED).increment(1);
}

/// How late our event loop woke a timer that asked for a short sleep (sampled by the
/// prober's lag watch): a worker short of CPU.
pub(crate) fn event_loop_lag(late: Duration) {
    histogram!(EVENT_LOOP_LAG).record(late.as_secs_f64());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// OPERATIONS: "every counter is exported at 0 from the start, so `increase()`
    /// alerts work before the first failure". Every `*_total` name of this file must be
    /// in `/metrics` before anything happened, the shipped alerts' results series too.
    #[test]
    fn every_counter_is_exported_at_zero_from_the_start() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            zero();
            egresses(["direct"]);
        });
        let text = handle.render();
        let names: Vec<&str> = include_str!("metric.rs")
            .lines()
            .filter(|l| l.starts_with("const ") && l.ends_with("_total\";"))
            .filter_map(|l| l.split('"').nth(1))
            .collect();
        assert!(names.len() > 20, "the counters' names: {names:?}");
        let missing: Vec<&&str> = names
            .iter()
            .filter(|n| !text.lines().any(|l| l.starts_with(**n)))
            .collect();
        assert!(missing.is_empty(), "not exported at 0: {missing:?}");
        for verdict in ["up", "degraded", "down", "unknown", "invalid"] {
            let series = format!("verdict=\"{verdict}\"");
            assert!(
                text.lines().any(|l| l.starts_with(RESULTS)
                    && l.contains(&series)
                    && l.contains("cached=\"false\"")),
                "no {RESULTS} series for {verdict}"
            );
        }
    }
}
