//! Keys' state in Redis: `{key_prefix}state:{H}` holds the record (JSON, kept for
//! `redis.state_ttl` after the last check) and `{key_prefix}report:{H}` the last report
//! with its answer (kept for `redis.verdict_ttl`), where `H` is a hash of the key, so
//! both share one hash slot of a Redis Cluster whatever characters the key has.
//!
//! One Lua script does the step of [`super::step`] atomically, in one round trip: two
//! workers finishing jobs of one key at once never both announce one transition.
//!
//! Every time kept here is Redis's (`TIME`), as the limiter's are: workers' clocks
//! differ (a container without NTP, a VM resumed), and one running ahead would
//! otherwise write a verdict "from the future" that others serve for `max_age_s` long
//! after it aged, and a `since` that has not come yet. So is the instant a result's
//! probing began, by which the key's steps are ordered (`super::stale`): the worker
//! sends how long ago that was, and the script dates it by its own clock, so that a
//! worker whose clock is behind does not see every result of its own taken as older
//! than the others', nor one ahead make theirs stale.

use std::time::Duration;

use futures_util::future::BoxFuture;
use serde::Deserialize;

use super::{
    fill, now_ms, replays, Answer, Delivery, StateStore, Stepped, MEMO_CHANGES, MEMO_JOBS,
    MEMO_MAX_AGE_MS, SHARED_RECALL_MS,
};
use crate::config::RedisSettings;
use crate::job::{Report, Verdict};
use crate::log::Rarely;
use crate::metric;
use crate::redis_pool::{RedisConn, RedisPool};

/// The key's verdict a memo entry's step left (`super::Memo::left`), in Lua; entries
/// written before e[8] existed: their own verdict, or the one they found. And whether
/// the entry tells a change (`super::Memo::tells_a_change`).
macro_rules! memo_lua {
    () => {
        r#"
local function left_of(e)
  if e[8] ~= nil then return e[8] end
  if e[2] == 'up' or e[2] == 'degraded' or e[2] == 'down' then return e[2] end
  return e[3]
end
local function tells_a_change(e) return e[3] ~= '' and e[3] ~= left_of(e) end
"#
    };
}

/// The transition of `super::step`, in Lua. KEYS: record, report, the reports of the
/// changes the memo may recall (a hash by delivery id: `super::replays_change`). ARGV: delivery id,
/// verdict, "1" when it is a verdict on the site, the step's expiry (ms, Redis's clock:
/// a run at or after it writes nothing, see [`RedisState::step`]), state TTL (s), verdict TTL
/// (s), the report's JSON, memo size, "1" when redelivered, memo age (ms), shared memo
/// age (ms: `super::SHARED_RECALL_MS`), the step's nonce (the same when it is asked
/// again after a timeout: a run that finds it in the memo gives that run's answer), how
/// many changes the memo keeps beyond its size (`super::MEMO_CHANGES`), the fingerprint
/// of the job the report judged ("" for none: kept as null), how long ago the result's
/// probing began (ms, as the worker measured it when it sent the step; "" when unknown:
/// `Report::looked_ms`), which the script dates on Redis's clock.
/// Returns {previous verdict or "", streak, since (ms), Redis's time (ms), 1 when stale
/// (`super::stale`: the key's state, unmoved, nothing written) else 0}; streak 0: the
/// step came after its expiry and took none. The record is {v, s, n: the key's verdict,
/// its start and streak; l: when the newest observation that stepped it began
/// (`super::Record::looked`; absent in a record written before it, older than any);
/// o, os, ov: the run of `unknown` or `invalid` since it, its
/// start and which (`super::Record::other`; in a record written before `ov` existed, the
/// verdict of the step that reads it); m: the memo}. A memo entry is {delivery id, verdict,
/// previous, streak, since, when, shared, left, nonce} (`super::Memo`; entries written before
/// `shared` existed read as not shared, before `left` as their own site verdict or the
/// one they found). A step that tells a change keeps its report under its delivery id in
/// KEYS[3] for an hour (`super::MEMO_MAX_AGE_MS`), until the memo lets the change go.
const STEP: &str = concat!(
    memo_lua!(),
    r#"
local raw = redis.call('GET', KEYS[1])
local st = {v = '', s = 0, n = 0, o = 0, os = 0, m = {}}
if raw then st = cjson.decode(raw) end
-- Redis before 5 replicates scripts verbatim and would refuse writes after TIME.
if redis.replicate_commands then redis.replicate_commands() end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local job, v, site = ARGV[1], ARGV[2], ARGV[3] == '1'
local prev = st.v
local at = nil
for i, e in ipairs(st.m) do
  if e[1] == job then at = i; break end
end
local shared = false
-- This very step run before (a call that timed out and ran late): its answer.
if at and st.m[at][9] == ARGV[12] then
  local e = st.m[at]
  return {e[3], e[4], e[5], now, 0}
end
-- Past its expiry the worker may have given this step up, and told its result without
-- state: taken now, its change would be told by no result.
if now >= tonumber(ARGV[4]) then return {'', 0, 0, now, 0} end
-- Whether this is a recalled redelivery whose first delivery's change may be untold.
local carries = false
if at then
  local e = st.m[at]
  local age = now - e[6]
  if ARGV[9] == '1' and age <= tonumber(ARGV[10]) and (not e[7] or age <= tonumber(ARGV[11])) then
    -- Recalled while the key's verdict is the one that step left.
    if left_of(e) == st.v then
      if e[2] == v then return {e[3], e[4], e[5], now, 0} end
      carries = tells_a_change(e)
      -- A move off the verdict that step left is told as one (`super::previous_of`).
      if not site or v == st.v then prev = e[3] end
    end
  else
    shared = true
  end
  if e[7] then shared = true end
  table.remove(st.m, at)
end
-- An observation older than the key's latest moves nothing (`super::stale`).
local age = tonumber(ARGV[15])
local looked = age and now - age
if site and not carries and looked and st.l and st.v ~= '' and looked < st.l then
  return {st.v, st.n, st.s, now, 1}
end
local streak, since
if site then
  if st.v == v then st.n = st.n + 1 else st.n = 1; st.s = now end
  st.v = v; st.o = 0; st.ov = nil
  if looked and (st.l == nil or looked > st.l) then st.l = looked end
  streak, since = st.n, st.s
else
  -- A run per verdict that is none on the site (`Record::other`): 'ov' says whose. A
  -- record written before it had one run for unknown and invalid: taken as this
  -- verdict's, so that a key's long run (an invalid job) keeps its streak on upgrade.
  if st.o == 0 or (st.ov ~= nil and st.ov ~= v) then st.o = 0; st.os = now end
  st.o = st.o + 1; st.ov = v
  streak, since = st.o, st.os
end
table.insert(st.m, 1, {job, v, prev, streak, since, now, shared, st.v, ARGV[12]})
-- The latest ARGV[8] entries and the latest ARGV[13] changes (`super::prune`).
-- Its earlier step's change, if any, is this step's to tell now, and the changes the
-- memo lets go are told by no redelivery.
local kept, changes, gone = {}, 0, {}
if at then gone[1] = job end
for i, e in ipairs(st.m) do
  local change = tells_a_change(e)
  if change then changes = changes + 1 end
  if i <= tonumber(ARGV[8]) or (change and changes <= tonumber(ARGV[13])) then
    kept[#kept + 1] = e
  elseif change then
    gone[#gone + 1] = e[1]
  end
end
st.m = kept
-- The first write: Redis at its maxmemory refuses it (OOM), and so the whole step. A
-- delete first would have let every later write through (Redis lets a script that
-- wrote finish).
redis.call('SET', KEYS[1], cjson.encode(st), 'EX', ARGV[5])
if #gone > 0 then redis.call('HDEL', KEYS[3], unpack(gone)) end
local report = '{"at":' .. string.format('%d', now) .. ',"delivery":' .. cjson.encode(job)
  .. ',"prev":' .. cjson.encode(prev)
  .. ',"streak":' .. string.format('%d', streak) .. ',"since":' .. string.format('%d', since)
  .. ',"shared":' .. tostring(shared)
  .. ',"fingerprint":' .. (ARGV[14] == '' and 'null' or cjson.encode(ARGV[14]))
  .. ',"report":' .. ARGV[7] .. '}'
redis.call('SET', KEYS[2], report, 'EX', ARGV[6])
if site and prev ~= '' and prev ~= v then
  redis.call('HSET', KEYS[3], job, report)
  -- Reports of changes the memo no longer tells go (a worker of an older version lets
  -- its go without a word): the hash holds at most the memo's.
  local told = {}
  for _, e in ipairs(st.m) do
    if tells_a_change(e) then told[e[1]] = true end
  end
  for _, field in ipairs(redis.call('HKEYS', KEYS[3])) do
    if not told[field] then redis.call('HDEL', KEYS[3], field) end
  end
  redis.call('PEXPIRE', KEYS[3], ARGV[10])
end
return {prev, streak, since, now, 0}
"#
);

/// What a redelivery may get back (`super::StateStore::replay`), in Lua. KEYS: as
/// [`STEP`]'s. ARGV: the delivery id. Returns {the key's latest report, the report kept
/// for the delivery's change when its memo entry tells one and the key still has the
/// verdict it left (`super::replays_change`; whether it is young enough to be recalled
/// is told by the report's own time), when that entry's step was taken (ms: the report
/// is that step's only when kept then; a worker of an older version may have stepped
/// the id again and kept none), Redis's time (ms)}; either report may be nil.
const REPLAY: &str = concat!(
    memo_lua!(),
    r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local told, at = false, 0
local raw = redis.call('GET', KEYS[1])
if raw then
  local st = cjson.decode(raw)
  for _, e in ipairs(st.m) do
    if e[1] == ARGV[1] then
      if tells_a_change(e) and left_of(e) == st.v then
        told, at = redis.call('HGET', KEYS[3], ARGV[1]), e[6]
      end
      break
    end
  end
end
return {redis.call('GET', KEYS[2]), told, at, now}
"#
);

/// How long ago (ms) a result's probing began, as this worker's clock tells it now
/// (`""` when unknown): the script dates it on Redis's clock, as every time kept here,
/// so that the order of two workers' checks does not hang on their clocks agreeing.
fn age_of(looked_ms: Option<u64>) -> String {
    looked_ms.map_or_else(String::new, |t| now_ms().saturating_sub(t).to_string())
}

/// A name for one state step, unique among all workers' steps: this process, the
/// time and a count.
fn step_nonce() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static STEPS: AtomicU64 = AtomicU64::new(0);
    let n = STEPS.fetch_add(1, Ordering::Relaxed);
    format!("{:x}.{:x}.{n:x}", std::process::id(), now_ms())
}

/// How long a step that timed out is asked again, when Redis answered within this
/// before it: a stall (a busy script, a fork, an fsync) outlasts a few timeouts; past
/// this, Redis hangs, and waiting on it would stop the results too.
const STALL_LIMIT: Duration = Duration::from_secs(10);

/// How often each kind of failed Redis call is said in the log while it goes on (each
/// is counted in `picket_redis_errors_total`); `unsaid` says how many went unsaid.
const SAID_EVERY: Duration = Duration::from_secs(10);

/// How old Redis's time may be (as last read) to date a step's expiry from it: past
/// this it is read anew (`TIME`), so that clocks running at slightly different rates
/// (NTP slews them by up to 0.05 %) part by some 30 ms at most.
const CLOCK_MAX_AGE: Duration = Duration::from_secs(60);

/// The pause between asks of a stalled step that failed at once (no connection from
/// the pool, a BUSY error).
const STALL_PAUSE: Duration = Duration::from_millis(250);

/// Why a Redis call gave no answer.
enum Late {
    /// It failed: the command did not run.
    No,
    /// It timed out, or its connection dropped: the command may have run, or may yet.
    Maybe,
    /// A script failed on a command it called (one refused to picket's user, a write
    /// refused at `maxmemory`): Redis undoes none of the writes it made before.
    PartWay,
    /// The step ran after its expiry and took no step: no run of it ever will. With
    /// the time it ran at (the clock of the node holding its key).
    Expired(RedisClock),
    /// It ran on a primary the Sentinels are failing over (`RedisPool::settled`): the
    /// failover's resync may wipe it, or it may have reached the replica first.
    Unsettled,
}

/// How far a Redis call that failed ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ran {
    /// Not at all: refused, or never sent.
    No,
    /// No answer came: it may have run, or may yet.
    Maybe,
    /// A script that failed on a command it called: its earlier writes stay.
    PartWay,
}

impl Ran {
    fn of(e: &redis::RedisError) -> Ran {
        if e.is_timeout() || e.is_connection_dropped() {
            Ran::Maybe
        } else if raised_in_a_script(e) {
            Ran::PartWay
        } else {
            Ran::No
        }
    }
}

/// Whether `e` is a script's failure on a command it called: Redis names the script's
/// line (`@user_script:N`, in Redis 5 to 7), never so for a refusal of the script itself
/// (`EVALSHA` refused, a full Redis refusing a script at its start).
fn raised_in_a_script(e: &redis::RedisError) -> bool {
    e.to_string().contains("@user_script:")
}

/// Redis's time as last read: a time (ms) it had, and when its answer came here, later.
#[derive(Debug, Clone, Copy)]
struct RedisClock {
    ms: u64,
    seen: tokio::time::Instant,
}

impl RedisClock {
    /// A time Redis's clock has reached by `at` (it ran on while its answer came).
    fn at_least(&self, at: tokio::time::Instant) -> u64 {
        self.ms + millis(at.saturating_duration_since(self.seen))
    }
}

/// A duration in whole milliseconds (rounded down).
fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX / 2)
}

/// Says and counts a step answered by a primary the Sentinels are failing over.
fn unsettled() {
    metric::state_step_unsettled();
    static SAID: Rarely = Rarely::every(SAID_EVERY);
    if let Some(unsaid) = SAID.now() {
        tracing::warn!(
            unsaid,
            "redis state step answered by a primary the Sentinels are failing over; \
             asking it again of the new one"
        );
    }
}

/// One state step as sent to Redis, each time it is asked.
struct Step<'a> {
    report: &'a Report,
    json: &'a str,
    /// The fingerprint of the job the report judged; "" for none.
    fingerprint: &'a str,
    /// The same for every ask of this step: a run finding it took the step already.
    nonce: String,
    /// When the step may no longer be taken (ms, Redis's clock).
    expiry: u64,
}

/// A kept report as the script writes it.
#[derive(Deserialize)]
struct Kept {
    at: u64,
    delivery: String,
    /// Its delivery id's answer is shared by several messages (`super::Memo::shared`).
    #[serde(default)]
    shared: bool,
    /// The fingerprint of the job it judged (`StateStore::take_step`); none in a report
    /// kept before it existed, or of a refused job: served to no job.
    #[serde(default)]
    fingerprint: Option<String>,
    prev: String,
    streak: u64,
    since: u64,
    report: Report,
}

impl Kept {
    fn filled(mut self) -> Report {
        let answer = Answer {
            previous: Verdict::parse(&self.prev),
            streak: self.streak,
            since_ms: self.since,
            stale: false,
        };
        fill(&mut self.report, Some(answer));
        self.report
    }
}

/// A key's record, last report and changes' reports in Redis ([`RedisState::step_keys`]).
type StepKeys = (String, String, String);

/// State shared by every worker through Redis.
pub struct RedisState {
    pool: RedisPool,
    prefix: String,
    state_ttl: Duration,
    verdict_ttl: Duration,
    timeout: Duration,
    script: redis::Script,
    replay_script: redis::Script,
    /// When Redis last answered a call (`tokio::time::Instant`, for [`STALL_LIMIT`]).
    answered: std::sync::Mutex<tokio::time::Instant>,
    /// Redis's time as last read, to date steps' expiries in Redis's own clock.
    clock: std::sync::Mutex<Option<RedisClock>>,
}

impl RedisState {
    /// State over `pool`, with the prefix, TTLs and timeout of `[redis]`.
    pub fn new(pool: RedisPool, settings: &RedisSettings) -> RedisState {
        RedisState {
            pool,
            prefix: settings.key_prefix.clone(),
            state_ttl: settings.state_ttl,
            verdict_ttl: settings.verdict_ttl,
            timeout: settings.timeout,
            script: redis::Script::new(STEP),
            replay_script: redis::Script::new(REPLAY),
            answered: std::sync::Mutex::new(tokio::time::Instant::now()),
            clock: std::sync::Mutex::new(None),
        }
    }

    /// Notes a time (ms) Redis just answered with.
    fn learn_clock(&self, ms: u64) {
        let seen = tokio::time::Instant::now();
        *self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(RedisClock { ms, seen });
    }

    /// A time (ms) Redis's clock has reached, and the instant it is for: from the last
    /// answer when recent, else from `TIME`; `None` when Redis does not answer.
    async fn redis_now(&self) -> Option<(u64, tokio::time::Instant)> {
        let last = *self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = tokio::time::Instant::now();
        if let Some(clock) = last.filter(|c| now.saturating_duration_since(c.seen) < CLOCK_MAX_AGE)
        {
            return Some((clock.at_least(now), now));
        }
        let (secs, micros): (u64, u64) = self
            .call("time", || async |c| redis::cmd("TIME").query_async(c).await)
            .await?;
        self.learn_clock(secs * 1000 + micros / 1000);
        let now = tokio::time::Instant::now();
        let clock = *self
            .clock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        clock.map(|c| (c.at_least(now), now))
    }

    /// Whether Redis answered within [`STALL_LIMIT`]: a stall, not a hang.
    fn stalled_briefly(&self) -> bool {
        let answered = *self
            .answered
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        answered.elapsed() < STALL_LIMIT
    }

    /// The Redis keys of a key's record and of its last report.
    pub fn keys(&self, key: &str) -> (String, String) {
        let (state, report, _) = self.step_keys(key);
        (state, report)
    }

    /// The Redis keys a step writes: the key's record, its last report and the reports
    /// of its changes a redelivery may get back ([`STEP`]). One hash slot: a cluster
    /// runs the script on one node.
    fn step_keys(&self, key: &str) -> StepKeys {
        let h = crate::key::short_hash(key);
        (
            format!("{}state:{{{h}}}", self.prefix),
            format!("{}report:{{{h}}}", self.prefix),
            format!("{}told:{{{h}}}", self.prefix),
        )
    }

    /// A read (`f`) of Redis: asked again once on a new connection when the first was
    /// found closed at once (Redis's `timeout`, or a proxy's between, closed it while
    /// it sat idle: hunt T), and only then said and counted as failed.
    async fn call<T, F, G>(&self, what: &'static str, read: G) -> Option<T>
    where
        G: Fn() -> F,
        F: AsyncFnOnce(&mut RedisConn) -> redis::RedisResult<T>,
    {
        let asked = tokio::time::Instant::now();
        match self.try_once(read()).await {
            Ok(v) => Some(v),
            Err((_, Ran::Maybe)) if asked.elapsed() < self.timeout / 4 => {
                self.attempt(what, read()).await.ok()
            }
            Err(failed) => {
                self.failed(what, failed);
                None
            }
        }
    }

    /// [`RedisState::call`] once, telling a timeout (the command may have run) from a
    /// failure, each said and counted.
    async fn attempt<T, F>(&self, what: &'static str, f: F) -> Result<T, Late>
    where
        F: AsyncFnOnce(&mut RedisConn) -> redis::RedisResult<T>,
    {
        self.try_once(f)
            .await
            .map_err(|failed| self.failed(what, failed))
    }

    /// `f` on the shared connection within `redis.timeout`; a failure's words, and
    /// whether the command may have run (no answer in time, or the connection dropped
    /// with it on it).
    async fn try_once<T, F>(&self, f: F) -> Result<T, (String, Ran)>
    where
        F: AsyncFnOnce(&mut RedisConn) -> redis::RedisResult<T>,
    {
        // No connection (none in time, or none at all): the command was never sent.
        let outcome = match tokio::time::timeout(self.timeout, self.pool.get()).await {
            Ok(Ok(mut conn)) => {
                // The connection's own response timeout (`redis.timeout`) usually ends
                // it. A connection that dropped with the command on it may have run it.
                let sent = async { f(&mut conn).await.map_err(|e| (e.to_string(), Ran::of(&e))) };
                tokio::time::timeout(self.timeout, sent)
                    .await
                    .unwrap_or_else(|_| Err(("timed out".to_string(), Ran::Maybe)))
            }
            Ok(Err(e)) => Err((e, Ran::No)),
            Err(_) => Err(("no connection within redis.timeout".to_string(), Ran::No)),
        };
        if outcome.is_ok() {
            metric::redis_up(true);
            *self
                .answered
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = tokio::time::Instant::now();
        }
        outcome
    }

    /// Says and counts a failed call `what`: at most every [`SAID_EVERY`] in the log.
    fn failed(&self, what: &'static str, (e, ran): (String, Ran)) -> Late {
        metric::redis_error(what);
        static FAILED: Rarely = Rarely::every(SAID_EVERY);
        static PART_WAY: Rarely = Rarely::every(SAID_EVERY);
        static UNANSWERED: Rarely = Rarely::every(SAID_EVERY);
        let (said, words, late) = match ran {
            Ran::No => (&FAILED, "failed; going on without the state", Late::No),
            Ran::PartWay => (
                &PART_WAY,
                "failed on a command its script called; what it wrote before stays",
                Late::PartWay,
            ),
            Ran::Maybe => (
                &UNANSWERED,
                "got no answer (timed out or connection dropped); it may have run",
                Late::Maybe,
            ),
        };
        if let Some(unsaid) = said.now() {
            tracing::warn!(error = %e, unsaid, "redis {what} {words}");
        }
        late
    }

    /// One run of `step`.
    async fn run_step(
        &self,
        keys: &StepKeys,
        step: &Step<'_>,
        delivery: Delivery<'_>,
    ) -> Result<Answer, Late> {
        let Step {
            report,
            json,
            fingerprint,
            ref nonce,
            expiry,
        } = *step;
        let site = if report.verdict.is_about_the_site() {
            "1"
        } else {
            "0"
        };
        let mut on = None;
        let ran: (String, u64, u64, u64, u8) = self
            .attempt("state step", async |c| {
                on = c.primary().cloned();
                let mut inv = self.script.key(&keys.0);
                inv.key(&keys.1)
                    .key(&keys.2)
                    .arg(delivery.id)
                    .arg(report.verdict.as_str())
                    .arg(site)
                    .arg(expiry)
                    .arg(self.state_ttl.as_secs().max(1))
                    .arg(self.verdict_ttl.as_secs().max(1))
                    .arg(json)
                    .arg(MEMO_JOBS)
                    .arg(if delivery.redelivered { "1" } else { "0" })
                    .arg(MEMO_MAX_AGE_MS)
                    .arg(SHARED_RECALL_MS)
                    .arg(nonce)
                    .arg(MEMO_CHANGES)
                    .arg(fingerprint)
                    .arg(age_of(report.looked_ms));
                inv.invoke_async(c).await
            })
            .await?;
        let (prev, streak, since, redis_ms, stale) = ran;
        self.learn_clock(redis_ms);
        if !self
            .pool
            .settled(on.as_ref(), tokio::time::Instant::now())
            .await
        {
            unsettled();
            return Err(Late::Unsettled);
        }
        if streak == 0 {
            let seen = tokio::time::Instant::now();
            return Err(Late::Expired(RedisClock { ms: redis_ms, seen }));
        }
        Ok(Answer {
            previous: Verdict::parse(&prev),
            streak,
            since_ms: since,
            stale: stale == 1,
        })
    }

    /// Runs a step until Redis answers it, or until `deadline`, when its expiry has
    /// passed in Redis's clock too: a step given up on can never run. With whether a
    /// run of it may have taken the step though no answer came (one of its asks got no
    /// answer, and none said it expired).
    async fn step_until(
        &self,
        keys: &StepKeys,
        mut step: Step<'_>,
        delivery: Delivery<'_>,
        deadline: tokio::time::Instant,
    ) -> (Result<Answer, Late>, bool) {
        let mut ran = self.run_step(keys, &step, delivery).await;
        if matches!(ran, Err(Late::PartWay)) {
            // Failed part-way (hunt W: `PEXPIRE` refused after the record was written):
            // asked again with the same nonce, a run that wrote the record finds its
            // own answer, which the script looks for before it writes anything. One
            // that fails again wrote nothing, nor will it.
            ran = self.run_step(keys, &step, delivery).await;
            if matches!(ran, Err(Late::PartWay)) {
                return (Err(Late::No), false);
            }
        }
        if matches!(ran, Err(Late::No)) {
            return (ran, false);
        }
        // Unsettled: a run took it, which a failover may wipe. Asked again with the same
        // nonce once the Sentinels name the new primary, a run there that finds it (it
        // reached the replica) gives its answer, and one that does not takes it anew.
        let mut maybe = matches!(ran, Err(Late::Maybe | Late::Unsettled));
        let mut dated_again = false;
        // A late Redis may have run the step all the same, or may yet (it runs what was
        // sent before a stall): asked again with the same nonce until Redis answers,
        // whichever run comes second finds the first's answer.
        while let Err(late) = &ran {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break;
            }
            match late {
                Late::No | Late::PartWay | Late::Unsettled => {
                    tokio::time::sleep(STALL_PAUSE.min(deadline - now)).await;
                }
                Late::Maybe => {}
                // Dated by another node's clock, ahead of this one's (a Redis Cluster,
                // a failover): taken by no run, so taken anew, dated by the time this
                // node answered with. Once: a second is no skew.
                Late::Expired(_) if dated_again => break,
                Late::Expired(clock) => {
                    dated_again = true;
                    // The earlier runs found it expired: none of them took it.
                    maybe = false;
                    step.nonce = step_nonce();
                    step.expiry = clock.at_least(now) + millis(deadline - now);
                }
            }
            ran = self.run_step(keys, &step, delivery).await;
            maybe |= matches!(ran, Err(Late::Maybe | Late::Unsettled));
        }
        let expired = matches!(ran, Err(Late::Expired(_)));
        (ran, maybe && !expired)
    }

    /// Deletes the key's kept report after a step that did not run: this result's
    /// verdict was not written, and the older one must not be served for `max_age_s`
    /// after it (hunt W: a Redis at `maxmemory` refuses the step's writes, never a
    /// `DEL`). Another worker's newer report, deleted too, costs a probe, never a
    /// wrong verdict.
    async fn forget_report(&self, report_key: &str) {
        let _: Option<()> = self
            .call("forget", || {
                async |c| redis::cmd("DEL").arg(report_key).query_async(c).await
            })
            .await;
    }

    /// The key's kept report, and Redis's clock (ms) when it was read.
    async fn kept(&self, key: &str) -> Option<(Kept, u64)> {
        let (_, report_key) = self.keys(key);
        let (raw, (secs, micros)): (Option<String>, (u64, u64)) = self
            .call("get", || {
                async |c| {
                    redis::pipe()
                        .cmd("GET")
                        .arg(&report_key)
                        .cmd("TIME")
                        .query_async(c)
                        .await
                }
            })
            .await?;
        self.learn_clock(secs * 1000 + micros / 1000);
        let kept = serde_json::from_str(&raw?).ok()?;
        Some((kept, secs * 1000 + micros / 1000))
    }
}

impl StateStore for RedisState {
    fn fresh<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a str,
        max_age: Duration,
    ) -> BoxFuture<'a, Option<Report>> {
        Box::pin(async move {
            let (kept, now) = self.kept(key).await?;
            let age = now.saturating_sub(kept.at);
            super::servable(kept.fingerprint.as_deref(), fingerprint, age, max_age)
                .then(|| kept.filled())
        })
    }

    fn replay<'a>(&'a self, key: &'a str, delivery: &'a str) -> BoxFuture<'a, Option<Report>> {
        Box::pin(async move {
            let keys = self.step_keys(key);
            let (latest, told, at, now): (Option<String>, Option<String>, u64, u64) = self
                .call("replay", || {
                    async |c| {
                        let mut inv = self.replay_script.key(&keys.0);
                        inv.key(&keys.1).key(&keys.2).arg(delivery);
                        inv.invoke_async(c).await
                    }
                })
                .await?;
            self.learn_clock(now);
            let parse = |raw: Option<String>| serde_json::from_str::<Kept>(&raw?).ok();
            let told = parse(told).filter(|k| k.at == at);
            [parse(latest), told]
                .into_iter()
                .flatten()
                .find(|k| replays(&k.delivery, k.shared, k.at, delivery, now))
                .map(Kept::filled)
        })
    }

    fn take_step<'a>(
        &'a self,
        report: &'a Report,
        fingerprint: Option<&'a str>,
        delivery: Delivery<'a>,
    ) -> BoxFuture<'a, Stepped> {
        Box::pin(async move {
            let Some(key) = report.key.as_deref() else {
                return Stepped::Not;
            };
            let keys = self.step_keys(key);
            let Ok(json) = serde_json::to_string(report) else {
                return Stepped::Not;
            };
            // Waited for up to STALL_LIMIT while Redis answered lately; one that hangs
            // for good is asked once more.
            let wait = if self.stalled_briefly() {
                STALL_LIMIT
            } else {
                self.timeout * 2
            };
            // The step expires when the worker gives it up, in Redis's clock (workers'
            // clocks differ): a run of it that Redis makes later, when it wakes from a
            // stall, writes nothing, and the key's change is told by its next result.
            let Some((redis_now, at)) = self.redis_now().await else {
                static NO_TIME: Rarely = Rarely::every(SAID_EVERY);
                if let Some(unsaid) = NO_TIME.now() {
                    tracing::warn!(
                        unsaid,
                        "redis has no time for the state step; going on without the state"
                    );
                }
                return Stepped::Not;
            };
            let step = Step {
                report,
                json: &json,
                fingerprint: fingerprint.unwrap_or_default(),
                nonce: step_nonce(),
                expiry: redis_now + millis(wait),
            };
            let (ran, maybe) = self.step_until(&keys, step, delivery, at + wait).await;
            let Ok(answer) = ran else {
                static NOT_ANSWERED: Rarely = Rarely::every(SAID_EVERY);
                if let Some(unsaid) = NOT_ANSWERED.now() {
                    tracing::warn!(
                        may_have_run = maybe,
                        unsaid,
                        "redis state step not answered; going on without the state"
                    );
                }
                if maybe {
                    return Stepped::Unsure;
                }
                self.forget_report(&keys.1).await;
                return Stepped::Not;
            };
            Stepped::Answer(answer)
        })
    }
}

#[cfg(test)]
mod review_k_tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::AsyncReadExt;

    /// Review K. `attempt` times the pool's `get` (making the shared connection, or
    /// waiting behind the call making it) together with the command, and calls a timeout
    /// of either `Late::Maybe`. A step that timed out while its connection was still being
    /// made was never sent, so it cannot have run: yet `take_step` says `Unsure`, and the
    /// worker hands the job back (1 s and more, a probe again) for nothing. Here Redis
    /// answered a moment ago (its clock is known), then its address accepts connections
    /// and answers nothing (a Redis that froze, a proxy in front of a failover): the step
    /// is never written, and every concurrent step waiting on the pool is Unsure too.
    #[tokio::test]
    async fn review_k_a_step_never_sent_for_want_of_a_connection_is_not_unsure() {
        let listener = tokio::net::TcpListener::bind("127.0.90.1:56101")
            .await
            .expect("bind");
        let heard = Arc::new(Mutex::new(Vec::<u8>::new()));
        let h = heard.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let h = h.clone();
                tokio::spawn(async move {
                    let mut buf = [0u8; 4096];
                    while let Ok(n) = s.read(&mut buf).await {
                        if n == 0 {
                            break;
                        }
                        h.lock().unwrap().extend_from_slice(&buf[..n]);
                    }
                });
            }
        });
        let s = crate::config::Settings::from_toml(
            "[redis]\nurl = \"redis://127.0.90.1:56101/\"\ntimeout = \"300ms\"\n",
        )
        .expect("cfg");
        let pool = crate::redis_pool::redis_pool(&s.redis).expect("pool");
        // The call's own timeout ends before the pool's connection attempt does: the
        // outcome of the race between the two equal `redis.timeout`s that a loaded
        // worker sees (the same test with one setting failed so under a build, and
        // passes on an idle machine), and always the case for a call that waited
        // behind another's connection attempt (`RedisPool::make`'s lock).
        let mut short = s.redis.clone();
        short.timeout = std::time::Duration::from_millis(100);
        let state = RedisState::new(pool, &short);
        state.learn_clock(now_ms());
        let report = Report::sample("k", Verdict::Down);
        let delivery = Delivery {
            id: "d",
            redelivered: false,
        };
        let stepped = state.take_step(&report, None, delivery).await;
        let heard = String::from_utf8_lossy(&heard.lock().unwrap()).to_string();
        assert!(
            !heard.to_ascii_uppercase().contains("EVAL"),
            "the step was written after all: {heard:?}"
        );
        assert_eq!(
            stepped,
            Stepped::Not,
            "a step never written to Redis was reported Unsure (may have run); Redis \
             heard {} bytes, no EVAL (only connection handshakes)",
            heard.len()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(words: &str) -> redis::RedisError {
        let kind = redis::ErrorKind::Client;
        redis::RedisError::from((kind, "server error", words.to_string()))
    }

    /// Redis 7.0's words, as hunt W saw them; a refusal of `EVALSHA` itself names no line.
    #[test]
    fn only_a_command_a_script_called_is_a_failure_part_way() {
        let in_script = "The user executing the script can't run this command or \
                         subcommand script: 2629f7c8, on @user_script:109.";
        assert_eq!(Ran::of(&refused(in_script)), Ran::PartWay);
        let redis6 = "Error running script (call to f_2629f7c8): @user_script:109: \
                      @user_script: 109: -OOM command not allowed";
        assert_eq!(Ran::of(&refused(redis6)), Ran::PartWay);
        let the_script = "User picket has no permissions to run the 'evalsha' command";
        assert_eq!(Ran::of(&refused(the_script)), Ran::No);
    }
}
