//! Monitors' state across checks (`CONTRACT.md`, "Monitors"): for each key, its last
//! verdict on the site, when that verdict began and how many results in a row had it,
//! plus the last report (for `max_age_s`) and a memo of the last jobs' answers, so that a
//! job delivered again gets the same `previous_verdict` as its first delivery (and the
//! reports of its latest changes, so that a job tells one change however often it is
//! delivered).
//!
//! [`step`] is the transition, pure; [`MemoryState`] runs it in this process (for
//! `picket check` and tests) and [`RedisState`] runs the same rules as one Lua script.
//! Steps are ordered by when each result's check began probing, not by when it ended:
//! checks of one key overlap (a hanging site takes `attempts` timeouts), and one that
//! ends after a newer one is told but moves nothing ([`stale`]).
//! State is a help, never a dependency: when the store is away, results still flow with
//! `previous_verdict: null`, `changed: false`, `streak: 1`, and never a false change.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;

use crate::job::{Report, Verdict};

mod redis;

pub use self::redis::RedisState;

/// How many of a key's latest deliveries keep their answer for a redelivery.
pub(crate) const MEMO_JOBS: usize = 8;

/// How many of a key's latest changes keep their answer beyond [`MEMO_JOBS`]: a change
/// whose worker died before telling it comes back when the broker sees the connection
/// die, and a key checked often may take more than [`MEMO_JOBS`] steps meanwhile. Its
/// answer is the one that must not be lost; unchanged steps cannot push it out. Both
/// bounds together keep a record at most 16 entries (a few kB in Redis).
pub(crate) const MEMO_CHANGES: usize = 8;

/// How long a delivery's answer is kept for its redelivery. Brokers hand back an unacked
/// message at once (a killed worker's, a nack); the bound keeps a publisher that sends
/// the same message again and again from meeting an old answer after a crash.
pub(crate) const MEMO_MAX_AGE_MS: u64 = 3_600_000;

/// How long an answer under a delivery id shared by several messages
/// ([`Memo::shared`]) is recalled for a redelivery. A message whose worker died between
/// its step and its ack comes back at once (a dead connection is seen within a few
/// heartbeats, a handed-back copy within a second): it must get its own answer, or the
/// change it made is swallowed by a state that already has it. A later copy of a
/// publisher's repeated job (a minute or more after the one answered) must not.
pub(crate) const SHARED_RECALL_MS: u64 = 60_000;

/// Whether a memo entry given at `at_ms`, `shared` or not, is recalled at `now_ms`.
fn recallable(shared: bool, at_ms: u64, now_ms: u64) -> bool {
    let age = now_ms.saturating_sub(at_ms);
    age <= MEMO_MAX_AGE_MS && (!shared || age <= SHARED_RECALL_MS)
}

/// Which delivery of a message a result comes from.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    /// What tells this message from others: for broker messages the message id and a
    /// hash of body and timestamp, for `picket check` the job id.
    pub id: &'a str,
    /// Whether the broker handed this message out before: only then can its answer be
    /// in the memo (a publisher may well reuse a job id for every check of a site).
    pub redelivered: bool,
}
/// What a key's state says of one result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer {
    /// The key's verdict on the site before this result, if it had one.
    pub previous: Option<Verdict>,
    /// Results in a row with this verdict, this one included.
    pub streak: u64,
    /// When this run of the verdict began (ms since the epoch).
    pub since_ms: u64,
    /// The result looked at the site before the observation that last stepped the key
    /// ([`Record::looked`]): it moved nothing, and `previous`, `streak` and `since_ms`
    /// are the key's, unmoved. A check overtaken by a newer one that already told what
    /// it saw would otherwise step the key back and tell a change the site never made.
    pub stale: bool,
}

impl Answer {
    /// Whether a result with `verdict` changes the key's verdict.
    pub fn changed(&self, verdict: Verdict) -> bool {
        !self.stale && verdict.is_about_the_site() && self.previous.is_some_and(|p| p != verdict)
    }
}

/// The state of one key.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Record {
    /// The last verdict on the site, its start and its streak.
    verdict: Option<(Verdict, u64, u64)>,
    /// When the newest observation that stepped the key's verdict began
    /// ([`Report::looked_ms`], ms since the epoch; Redis's record dates it by Redis's
    /// clock); `None` in a record written before it was kept: older than any.
    looked: Option<u64>,
    /// The run of results that are no verdict on the site since it: which one
    /// (`unknown` or `invalid`, each a run of its own), its start and its streak.
    other: Option<(Verdict, u64, u64)>,
    /// The latest deliveries' answers and, older than those, the latest changes'
    /// ([`MEMO_CHANGES`]), newest first.
    memo: Vec<Memo>,
}

impl Record {
    /// The delivery ids whose answers the memo keeps, newest first.
    pub fn deliveries(&self) -> impl Iterator<Item = &str> {
        self.memo.iter().map(|m| m.delivery.as_str())
    }
}

/// One delivery's answer, kept for its redelivery.
#[derive(Debug, Clone, PartialEq)]
struct Memo {
    delivery: String,
    verdict: Verdict,
    answer: Answer,
    /// When it was given (ms since the epoch).
    at_ms: u64,
    /// Several messages were answered under this delivery id: a publisher that sends
    /// the same message again and again, with no id of its own. A redelivery cannot tell
    /// whose answer it was (an earlier copy's would be a stale verdict, a change told
    /// twice), so it is recalled only within [`SHARED_RECALL_MS`].
    shared: bool,
    /// The key's verdict on the site right after this step: its answer is recalled
    /// only while the key still has it.
    left: Option<Verdict>,
}

impl Memo {
    /// Whether its answer tells a change of the key's verdict: its previous verdict is
    /// not the one its step left (its own change, or its first delivery's, carried by a
    /// redelivery that said `unknown`).
    fn tells_a_change(&self) -> bool {
        self.answer.previous.is_some() && self.answer.previous != self.left
    }
}

/// Keeps the latest [`MEMO_JOBS`] entries of a memo, newest first, and, older than
/// those, the latest [`MEMO_CHANGES`] changes.
fn prune(memo: &mut Vec<Memo>) {
    let (mut n, mut changes) = (0, 0);
    memo.retain(|m| {
        n += 1;
        let change = m.tells_a_change();
        changes += usize::from(change);
        n <= MEMO_JOBS || (change && changes <= MEMO_CHANGES)
    });
}

/// Whether `id`'s answer in `record` is shared by several messages ([`Memo::shared`]).
fn shared(record: &Record, id: &str) -> bool {
    record.memo.iter().any(|m| m.delivery == id && m.shared)
}

/// One result's step of a key's state; a redelivered message whose first delivery took
/// its step gets the `previous_verdict` it got then, while the key's verdict is still
/// the one that step left ([`Memo::left`]). Once another job changed it (and told that change), the
/// redelivery is a step of its own: recalling its old change would announce one the
/// key's state contradicts. A redelivery that moves the key off the verdict its first
/// delivery left tells that move ([`previous_of`]). A verdict on the site whose probing
/// began (`looked_ms`) before the key's latest observation is [`stale`] and moves
/// nothing.
pub fn step(
    record: &mut Record,
    delivery: Delivery<'_>,
    verdict: Verdict,
    looked_ms: Option<u64>,
    now_ms: u64,
) -> Answer {
    let seen = record.memo.iter().position(|m| m.delivery == delivery.id);
    let own = seen.filter(|&i| {
        let m = &record.memo[i];
        delivery.redelivered && recallable(m.shared, m.at_ms, now_ms)
    });
    let current = record.verdict.map(|(v, _, _)| v);
    let recalled = own.filter(|&i| record.memo[i].left == current);
    let previous = match recalled {
        Some(i) if record.memo[i].verdict == verdict => return record.memo[i].answer,
        Some(i) => previous_of(&record.memo[i], verdict, current),
        None => current,
    };
    // A redelivery whose first delivery's change may be untold (its worker died) is
    // stepped as ever: taken as stale, that change would be told by no result.
    let carries_a_change = recalled.is_some_and(|i| record.memo[i].tells_a_change());
    if !carries_a_change && verdict.is_about_the_site() {
        if let Some(answer) = stale(record, looked_ms) {
            return answer;
        }
    }
    // An id answered before and not this message's own first answer: copies share it.
    let shared = seen.is_some_and(|i| own.is_none() || record.memo[i].shared);
    if let Some(i) = seen {
        record.memo.remove(i);
    }
    let (_, since_ms, streak) = if verdict.is_about_the_site() {
        record.other = None;
        record.looked = record.looked.max(looked_ms);
        *record
            .verdict
            .insert(extend(record.verdict, verdict, now_ms))
    } else {
        *record.other.insert(extend(record.other, verdict, now_ms))
    };
    let answer = Answer {
        previous,
        streak,
        since_ms,
        stale: false,
    };
    let memo = Memo {
        delivery: delivery.id.to_string(),
        verdict,
        answer,
        at_ms: now_ms,
        shared,
        left: record.verdict.map(|(v, _, _)| v),
    };
    record.memo.insert(0, memo);
    prune(&mut record.memo);
    answer
}

/// The answer to a verdict on the site whose observation began at `looked_ms`, when
/// that is before the key's latest ([`Record::looked`]): the key's state as it is. The
/// newer observation was stepped and told already; the older one is still a true
/// observation of its moment, published as such, but no change. It is not remembered:
/// it took no step for a redelivery to recall, nor a report for `max_age_s` to serve.
/// Equal times are no order: stepped as they come, as before.
fn stale(record: &Record, looked_ms: Option<u64>) -> Option<Answer> {
    let (current, since_ms, streak) = record.verdict?;
    (looked_ms? < record.looked?).then_some(Answer {
        previous: Some(current),
        streak,
        since_ms,
        stale: true,
    })
}

/// The previous verdict of a recalled redelivery (its key's verdict still `current`, the
/// one `memo`'s step left) whose verdict differs from the one it had then. When it moves
/// the key, the move is `current → verdict`: the jobs stepped since its first delivery
/// told `current` (else it would have been replayed), and giving it the first delivery's
/// previous verdict left that move told by no result. When it does not (`unknown`,
/// `invalid`, or the verdict the first delivery left after a middle `unknown` one), it
/// keeps the first delivery's previous verdict, and with it that delivery's change.
fn previous_of(memo: &Memo, verdict: Verdict, current: Option<Verdict>) -> Option<Verdict> {
    if verdict.is_about_the_site() && Some(verdict) != current {
        current
    } else {
        memo.answer.previous
    }
}

/// A run (a verdict, its start, its streak) after one more result, with `verdict`.
fn extend(run: Option<(Verdict, u64, u64)>, verdict: Verdict, now_ms: u64) -> (Verdict, u64, u64) {
    match run {
        Some((v, since, n)) if v == verdict => (verdict, since, n + 1),
        _ => (verdict, now_ms, 1),
    }
}

/// Where keys' state is kept.
pub trait StateStore: Send + Sync {
    /// The latest report of `key`, when it was judged as a job of `fingerprint` is
    /// ([`crate::job::Job::fingerprint`]: jobs sharing a key may ask different things)
    /// and is younger than `max_age` (and than `redis.verdict_ttl`), with its state
    /// fields as they were.
    fn fresh<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a str,
        max_age: Duration,
    ) -> BoxFuture<'a, Option<Report>>;
    /// The report a redelivered message's first delivery produced for `key`, when it
    /// is the latest kept, or when it told a change the key still stands on
    /// ([`replays_change`]).
    fn replay<'a>(&'a self, key: &'a str, delivery: &'a str) -> BoxFuture<'a, Option<Report>>;
    /// The step of the report's key with this result, atomic per key, and what came of
    /// it. The report is kept with the `fingerprint` of the job it judged, `None` for a
    /// refused job (its report is never served).
    fn take_step<'a>(
        &'a self,
        report: &'a Report,
        fingerprint: Option<&'a str>,
        delivery: Delivery<'a>,
    ) -> BoxFuture<'a, Stepped>;

    /// The key's answer to the step of the report's key ([`Self::take_step`]); `None`
    /// when the store is unavailable or the report has no key.
    fn step<'a>(
        &'a self,
        report: &'a Report,
        fingerprint: Option<&'a str>,
        delivery: Delivery<'a>,
    ) -> BoxFuture<'a, Option<Answer>> {
        Box::pin(async move { self.take_step(report, fingerprint, delivery).await.answer() })
    }
}

/// What a state step came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stepped {
    /// The key's answer.
    Answer(Answer),
    /// No step: the report has no key, or the store is unavailable (it did not run).
    Not,
    /// No answer, but the store may have taken the step all the same (its connection
    /// dropped with the step on it, or it timed out, and it stayed away longer than the
    /// step was asked again): the key may have changed with no result telling it.
    Unsure,
}

impl Stepped {
    /// The key's answer, if it gave one.
    pub fn answer(self) -> Option<Answer> {
        match self {
            Stepped::Answer(a) => Some(a),
            Stepped::Not | Stepped::Unsure => None,
        }
    }
}

/// Fills a report's state fields from the key's answer (or from its absence).
pub(crate) fn fill(report: &mut Report, answer: Option<Answer>) {
    match answer {
        Some(a) => {
            report.previous_verdict = a.previous;
            report.changed = a.changed(report.verdict);
            report.streak = a.streak;
            report.since = Some(crate::job::rfc3339_of_ms(a.since_ms));
        }
        None => {
            report.previous_verdict = None;
            report.changed = false;
            report.streak = 1;
            report.since = None;
        }
    }
}

/// Milliseconds since the Unix epoch.
/// Whether a report kept `age_ms` ago for a job of fingerprint `kept` may be served
/// to a job of `fingerprint` allowing `max_age`: only to a job judged the same way, and
/// only while young enough (both stores, one rule).
pub(crate) fn servable(
    kept: Option<&str>,
    fingerprint: &str,
    age_ms: u64,
    max_age: Duration,
) -> bool {
    kept == Some(fingerprint) && u128::from(age_ms) <= max_age.as_millis()
}

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// A report kept for `max_age_s` and redeliveries, with the answer its step gave.
#[derive(Debug, Clone)]
struct Kept {
    at_ms: u64,
    delivery: String,
    /// Its delivery id's answer is shared by several messages ([`Memo::shared`]).
    shared: bool,
    answer: Answer,
    report: Report,
    /// The fingerprint of the job it judged ([`StateStore::take_step`]).
    fingerprint: Option<String>,
}

/// Whether a redelivery of `delivery` gets the kept report again: the one its first
/// delivery produced (`kept_for`, at `at_ms`), when it is as recent as a memo entry must
/// be to be recalled ([`recallable`]) at `now_ms`.
pub(crate) fn replays(
    kept_for: &str,
    shared: bool,
    at_ms: u64,
    delivery: &str,
    now_ms: u64,
) -> bool {
    kept_for == delivery && recallable(shared, at_ms, now_ms)
}

/// Whether a redelivery of `delivery` gets back its first delivery's report, kept
/// apart from the key's latest ([`StateStore::replay`]): that step told a change (a
/// verdict on the site; an `unknown` redelivery carrying one has no report of it), its
/// answer is still recalled ([`recallable`]) and the key still has the verdict it left.
/// The first report is the change subscribers were told (or were to be, had its worker
/// lived); probed again, the redelivery could tell a second, different change under the
/// same job id, which a subscriber dropping a job's repeats drops (hunt P). A move of
/// the site since is told by the key's next job. Once the key moved on, replaying the
/// old change would leave subscribers with a verdict the key no longer has: the
/// redelivery is checked again and stepped ([`step`]).
pub fn replays_change(record: &Record, delivery: &str, now_ms: u64) -> bool {
    change_replayed(record, delivery, now_ms).is_some()
}

/// When the step whose report [`replays_change`] gives back was taken (ms): a report
/// kept for `delivery` is that step's only when taken then. An earlier step of the
/// same id (a worker of an older version stepped it again and kept no report) is
/// another story, never told for this one (review W).
fn change_replayed(record: &Record, delivery: &str, now_ms: u64) -> Option<u64> {
    let current = record.verdict.map(|(v, _, _)| v);
    let m = record.memo.iter().find(|m| m.delivery == delivery)?;
    (told_a_change(m, now_ms) && m.left == current).then_some(m.at_ms)
}

/// Whether a memo entry's step told a change (a verdict on the site) still recalled.
fn told_a_change(m: &Memo, now_ms: u64) -> bool {
    m.verdict.is_about_the_site() && m.tells_a_change() && recallable(m.shared, m.at_ms, now_ms)
}

impl Kept {
    fn filled(&self) -> Report {
        let mut r = self.report.clone();
        fill(&mut r, Some(self.answer));
        r
    }
}

/// State in this process, for at most [`MemoryState::MAX_KEYS`] keys: `picket check`
/// over a file of a million URLs holds the latest keys' state, not a million reports.
pub struct MemoryState {
    keys: Mutex<Keys>,
    verdict_ttl: Duration,
}

/// The keys' state, and the keys in the order they came, oldest first.
#[derive(Default)]
struct Keys {
    /// Boxed: a kept report is large, and inline it made every growth of the table
    /// move (and fault in) megabytes: 7 % of `picket check`'s CPU (docs/BENCHMARKS.md).
    state: HashMap<String, Box<KeyState>>,
    order: std::collections::VecDeque<String>,
}

/// One key's state in this process.
#[derive(Default)]
struct KeyState {
    record: Record,
    /// Its latest report.
    kept: Option<Kept>,
    /// The reports of the changes its memo recalls: replayed while the key stands on
    /// the verdict they left ([`replays_change`]), kept while it moves and comes back.
    told: Vec<Kept>,
}

impl KeyState {
    /// Keeps `kept`, the report of a step that gave `answer`, as the latest and, when it
    /// tells a change, for its redelivery; lets go of the changes no longer recalled.
    fn keep(&mut self, kept: Kept, verdict: Verdict) {
        self.told.retain(|t| t.delivery != kept.delivery);
        if kept.answer.changed(verdict) {
            self.told.push(kept.clone());
        }
        let (memo, now) = (&self.record.memo, kept.at_ms);
        self.told.retain(|t| {
            memo.iter()
                .any(|m| m.delivery == t.delivery && m.at_ms == t.at_ms && told_a_change(m, now))
        });
        self.kept = Some(kept);
    }
}

impl Keys {
    fn get(&self, key: &str) -> Option<&KeyState> {
        self.state.get(key).map(|b| &**b)
    }

    /// The state of `key`, made (and the oldest key let go, when full) if new.
    fn entry(&mut self, key: &str) -> &mut KeyState {
        if !self.state.contains_key(key) {
            if self.state.len() >= MemoryState::MAX_KEYS {
                if let Some(oldest) = self.order.pop_front() {
                    self.state.remove(&oldest);
                }
            }
            self.order.push_back(key.to_string());
        }
        self.state.entry(key.to_string()).or_default()
    }
}

impl MemoryState {
    /// Keys held at most. A key seen again after this many others starts afresh
    /// (`previous_verdict: null`, never a false change).
    pub(crate) const MAX_KEYS: usize = 8192;

    /// A store whose reports may be served for `max_age_s` for at most `verdict_ttl`.
    pub(crate) fn new(verdict_ttl: Duration) -> MemoryState {
        MemoryState {
            keys: Mutex::new(Keys::default()),
            verdict_ttl,
        }
    }

    fn kept(&self, key: &str) -> Option<Kept> {
        let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
        let kept = keys.get(key)?.kept.clone()?;
        let age = now_ms().saturating_sub(kept.at_ms);
        (u128::from(age) <= self.verdict_ttl.as_millis()).then_some(kept)
    }
}

impl Default for MemoryState {
    fn default() -> MemoryState {
        MemoryState::new(Duration::from_secs(3600))
    }
}

impl StateStore for MemoryState {
    fn fresh<'a>(
        &'a self,
        key: &'a str,
        fingerprint: &'a str,
        max_age: Duration,
    ) -> BoxFuture<'a, Option<Report>> {
        Box::pin(async move {
            let kept = self.kept(key)?;
            let age = now_ms().saturating_sub(kept.at_ms);
            servable(kept.fingerprint.as_deref(), fingerprint, age, max_age).then(|| kept.filled())
        })
    }

    fn replay<'a>(&'a self, key: &'a str, delivery: &'a str) -> BoxFuture<'a, Option<Report>> {
        Box::pin(async move {
            let now = now_ms();
            if let Some(kept) = self.kept(key) {
                if replays(&kept.delivery, kept.shared, kept.at_ms, delivery, now) {
                    return Some(kept.filled());
                }
            }
            let keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            let state = keys.get(key)?;
            let at = change_replayed(&state.record, delivery, now)?;
            let told = state
                .told
                .iter()
                .find(|t| t.delivery == delivery && t.at_ms == at);
            told.map(Kept::filled)
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
            let mut keys = self.keys.lock().unwrap_or_else(|e| e.into_inner());
            let state = keys.entry(key);
            let at_ms = now_ms();
            let answer = step(
                &mut state.record,
                delivery,
                report.verdict,
                report.looked_ms,
                at_ms,
            );
            if answer.stale {
                return Stepped::Answer(answer);
            }
            let kept = Kept {
                at_ms,
                delivery: delivery.id.to_string(),
                shared: shared(&state.record, delivery.id),
                answer,
                report: report.clone(),
                fingerprint: fingerprint.map(String::from),
            };
            state.keep(kept, report.verdict);
            Stepped::Answer(answer)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Verdict::{Down, Unknown, Up};

    fn new(id: &str) -> Delivery<'_> {
        Delivery {
            id,
            redelivered: false,
        }
    }

    fn again(id: &str) -> Delivery<'_> {
        Delivery {
            id,
            redelivered: true,
        }
    }

    /// The step of a result whose probing began when it is stepped (results stepped in
    /// the order they looked): the tests written before results carried that instant.
    fn step(r: &mut Record, delivery: Delivery<'_>, verdict: Verdict, now_ms: u64) -> Answer {
        super::step(r, delivery, verdict, Some(now_ms), now_ms)
    }

    #[test]
    fn a_key_counts_its_streak_and_notes_a_change() {
        let mut r = Record::default();
        let a = step(&mut r, new("j1"), Up, 1000);
        assert_eq!((a.previous, a.streak, a.since_ms), (None, 1, 1000));
        assert!(
            !a.changed(Up),
            "the first result has nothing to change from"
        );
        let a = step(&mut r, new("j2"), Up, 2000);
        assert_eq!((a.previous, a.streak, a.since_ms), (Some(Up), 2, 1000));
        let a = step(&mut r, new("j3"), Down, 3000);
        assert_eq!((a.previous, a.streak, a.since_ms), (Some(Up), 1, 3000));
        assert!(a.changed(Down));
    }

    #[test]
    fn unknown_is_reported_but_neither_breaks_a_streak_nor_changes() {
        let mut r = Record::default();
        step(&mut r, new("j1"), Down, 1000);
        let a = step(&mut r, new("j2"), Unknown, 2000);
        assert_eq!((a.previous, a.streak, a.since_ms), (Some(Down), 1, 2000));
        assert!(!a.changed(Unknown));
        let a = step(&mut r, new("j3"), Unknown, 2500);
        assert_eq!((a.streak, a.since_ms), (2, 2000));
        let a = step(&mut r, new("j4"), Down, 3000);
        assert_eq!((a.previous, a.streak, a.since_ms), (Some(Down), 2, 1000));
        assert!(!a.changed(Down));
    }

    #[test]
    fn a_redelivered_job_gets_the_answer_of_its_first_delivery() {
        let mut r = Record::default();
        step(&mut r, new("j1"), Up, 1000);
        let first = step(&mut r, new("j2"), Down, 2000);
        assert!(first.changed(Down));
        // Another job of the key ran before j2 came back: j2 still announces up → down.
        step(&mut r, new("j3"), Down, 2500);
        assert_eq!(step(&mut r, again("j2"), Down, 3000), first);
        // The site came back between the deliveries, after j3 told `down`: the key
        // moves down → up, and this result tells it.
        let back = step(&mut r, again("j2"), Up, 3500);
        assert_eq!(back.previous, Some(Down));
        assert!(back.changed(Up));
    }

    /// A redelivery's first answer is recalled only while the key's verdict is the one
    /// that delivery left. After another job changed it (and told that change),
    /// recalling `up → down` announced a change against a state that says up, and the
    /// key stayed up while the site was down: subscribers kept "down" for good.
    #[test]
    fn a_redelivery_after_the_key_moved_on_is_a_step_of_its_own() {
        use Verdict::Degraded;
        let mut r = Record::default();
        step(&mut r, new("j1"), Up, 1000);
        step(&mut r, new("j2"), Down, 2000); // up → down, never published
        step(&mut r, new("j3"), Up, 3000); // down → up, told
        let a = step(&mut r, again("j2"), Down, 4000);
        assert_eq!((a.previous, a.streak, a.since_ms), (Some(Up), 1, 4000));
        let next = step(&mut r, new("j4"), Up, 5000);
        assert_eq!(next.previous, Some(Down), "the key follows the site");
        assert!(next.changed(Up));

        let mut r = Record::default();
        step(&mut r, new("j1"), Up, 1000);
        step(&mut r, new("j2"), Down, 2000);
        step(&mut r, new("j3"), Degraded, 3000); // down → degraded, told
        let a = step(&mut r, again("j2"), Degraded, 4000);
        assert_eq!((a.previous, a.streak), (Some(Degraded), 2));
        assert!(!a.changed(Degraded), "the key's verdict did not change");
    }

    /// A job redelivered twice: its first step took `up → down` and was never told, its
    /// second delivery was `unknown` (recalled: the key still down) and not told either.
    /// The key's verdict after that second step is still down, but it was read as `up`
    /// (the previous verdict the recall carried), so the third delivery was a step of
    /// its own, `down` after `down`, and the change was never told.
    #[test]
    fn a_change_survives_two_redeliveries_the_middle_one_unknown() {
        let mut r = Record::default();
        step(&mut r, new("j1"), Up, 1000);
        step(&mut r, new("j2"), Down, 2000);
        let middle = step(&mut r, again("j2"), Unknown, 3000);
        assert_eq!(middle.previous, Some(Up));
        let last = step(&mut r, again("j2"), Down, 4000);
        assert_eq!(last.previous, Some(Up));
        assert!(last.changed(Down), "up → down is told at last");
    }

    #[test]
    fn a_job_id_used_again_for_a_new_check_is_a_new_step() {
        let mut r = Record::default();
        step(&mut r, new("site-42"), Up, 1000);
        let a = step(&mut r, new("site-42"), Down, 2000);
        assert_eq!(a.previous, Some(Up));
        let b = step(&mut r, new("site-42"), Down, 3000);
        assert_eq!((b.previous, b.streak), (Some(Down), 2));
        assert_eq!(r.memo.len(), 1, "one memo entry per delivery id");
    }

    #[test]
    fn an_old_answer_is_not_recalled() {
        let mut r = Record::default();
        step(&mut r, new("j1"), Up, 1000);
        step(&mut r, new("j2"), Down, 2000);
        let late = step(&mut r, again("j2"), Down, 2000 + MEMO_MAX_AGE_MS + 1);
        assert_eq!((late.previous, late.streak), (Some(Down), 2));
    }

    #[test]
    fn two_jobs_at_once_do_not_both_announce_one_transition() {
        let mut r = Record::default();
        step(&mut r, new("j1"), Up, 1000);
        let a = step(&mut r, new("j2"), Down, 2000);
        let b = step(&mut r, new("j3"), Down, 2000);
        assert!(a.changed(Down) && !b.changed(Down));
    }

    fn report(key: &str, verdict: Verdict) -> Report {
        Report::sample(key, verdict)
    }

    /// Job `id`'s report on key "k".
    fn of(id: &str, verdict: Verdict) -> Report {
        Report {
            job_id: id.into(),
            ..report("k", verdict)
        }
    }

    /// `picket check` over a million URLs must not keep a million reports.
    #[tokio::test]
    async fn the_memory_store_keeps_a_bounded_number_of_keys_the_latest() {
        let store = MemoryState::default();
        let keys = MemoryState::MAX_KEYS + 500;
        for n in 0..keys {
            let r = report(&format!("site-{n}"), Up);
            store.step(&r, None, new(&format!("j{n}"))).await;
        }
        let held = store.keys.lock().expect("lock").state.len();
        assert!(held <= MemoryState::MAX_KEYS, "{held} keys held");
        let latest = report(&format!("site-{}", keys - 1), Down);
        let a = store
            .step(&latest, None, new("again"))
            .await
            .expect("an answer");
        assert_eq!(a.previous, Some(Up), "the latest keys keep their state");
        let oldest = report("site-0", Down);
        let a = store
            .step(&oldest, None, new("again"))
            .await
            .expect("an answer");
        assert_eq!(a.previous, None, "the oldest were let go");
    }

    /// A publisher that sends the same message again and again (no message id, the same
    /// body) gives each copy the same delivery id: a copy handed out, not answered, and
    /// handed out again later than a redelivery comes never gets an earlier copy's
    /// answer (a false `up`, a change swallowed).
    #[test]
    fn a_delivery_id_shared_by_copies_is_not_recalled_once_a_minute_old() {
        let mut r = Record::default();
        step(&mut r, new("m"), Down, 1000);
        let second = step(&mut r, new("m"), Up, 2000);
        assert_eq!(second.previous, Some(Down));
        let later = 2000 + SHARED_RECALL_MS + 1;
        let third = step(&mut r, again("m"), Down, later);
        assert_eq!(third.previous, Some(Up), "the key's verdict before it");
        assert!(third.changed(Down), "the change up → down is told");
    }

    /// But a copy whose step was taken and whose worker died before it was acked comes
    /// back at once: it gets its own answer, and the change it made is told again, not
    /// swallowed by a state that already has it.
    #[test]
    fn a_shared_ids_redelivery_right_after_its_step_gets_its_answer() {
        let mut r = Record::default();
        step(&mut r, new("m"), Up, 1000);
        let second = step(&mut r, new("m"), Down, 600_000);
        assert_eq!(second.previous, Some(Up));
        let again = step(&mut r, again("m"), Down, 610_000);
        assert_eq!(
            again.previous,
            Some(Up),
            "its first delivery's previous verdict"
        );
        assert!(again.changed(Down));
    }

    #[tokio::test]
    async fn a_delivery_id_shared_by_copies_replays_only_a_fresh_answer() {
        let store = MemoryState::default();
        store.step(&report("k", Down), None, new("m")).await;
        assert!(
            store.replay("k", "m").await.is_some(),
            "one copy: its answer"
        );
        store.step(&report("k", Up), None, new("m")).await;
        assert!(
            store.replay("k", "m").await.is_some(),
            "a redelivery right after the step: its answer"
        );
        // The last answer was given a minute ago: its report, memo entry and change.
        if let Some(entry) = store.keys.lock().expect("lock").state.get_mut("k") {
            let kept = entry.kept.iter_mut().chain(entry.told.iter_mut());
            kept.for_each(|k| k.at_ms -= SHARED_RECALL_MS + 1);
            entry.record.memo[0].at_ms -= SHARED_RECALL_MS + 1;
        }
        assert!(
            store.replay("k", "m").await.is_none(),
            "two copies answered, the last a minute ago: whose answer is unknown"
        );
    }

    #[test]
    fn the_memo_keeps_the_latest_deliveries_only() {
        let mut r = Record::default();
        for i in 0..20 {
            step(&mut r, new(&format!("j{i}")), Up, 1000 + i);
        }
        assert_eq!(r.memo.len(), MEMO_JOBS);
        assert_eq!(r.memo[0].delivery, "j19");
    }

    /// Changes outlive runs of unchanged steps, but are bounded too: a key keeps its
    /// [`MEMO_JOBS`] latest deliveries and its [`MEMO_CHANGES`] latest changes, no more.
    #[test]
    fn the_memo_keeps_the_latest_changes_and_no_more() {
        let mut r = Record::default();
        // Up for 10 steps, down for 10, ...: a change at j10, j20, ..., j90.
        for i in 0..100u64 {
            let verdict = if (i / 10).is_multiple_of(2) { Up } else { Down };
            step(&mut r, new(&format!("j{i}")), verdict, 1000 + i);
        }
        assert_eq!(r.memo.len(), MEMO_JOBS + MEMO_CHANGES);
        assert_eq!(r.memo[0].delivery, "j99");
        let older: Vec<&str> = r.memo[MEMO_JOBS..]
            .iter()
            .map(|m| m.delivery.as_str())
            .collect();
        assert_eq!(
            older,
            ["j90", "j80", "j70", "j60", "j50", "j40", "j30", "j20"]
        );
    }

    /// The first delivery of j2 took the key `down → up` and that change was published
    /// (the worker died between publish and ack). Another job, j3, saw `up` and was told
    /// `up` (previous `up`). j2 comes back after j3 (so it is not replayed), is probed
    /// again and the site is down again: the key moves `up → down`, and j2 tells it.
    /// Before, its step recalled the first delivery's `previous_verdict` (`down`), said
    /// `changed: false`, and the changes exchange's last word on the key stayed
    /// `down.up` while the site was down.
    #[test]
    fn a_redelivery_that_moves_the_key_back_tells_that_change() {
        let mut r = Record::default();
        step(&mut r, new("j1"), Down, 1000);
        let first = step(&mut r, new("j2"), Up, 2000);
        assert!(first.changed(Up), "down → up, published; the ack was lost");
        let j3 = step(&mut r, new("j3"), Up, 3000);
        assert_eq!(
            (j3.previous, j3.changed(Up)),
            (Some(Up), false),
            "j3 told: up"
        );
        let again = step(&mut r, again("j2"), Down, 4000);
        let next = step(&mut r, new("j4"), Down, 5000);
        assert_eq!(r.verdict.map(|(v, _, _)| v), Some(Down), "the key is down");
        assert!(
            again.changed(Down) || next.changed(Down),
            "the key went up → down (after j3 was told up) and no result announced it: \
             redelivery {again:?}, next {next:?}"
        );
    }

    /// A job whose step took `up → down` and whose worker died before it published
    /// comes back after more than `MEMO_JOBS` other jobs of the key stepped (a key
    /// checked often; the redelivery waits for the broker to see the connection die):
    /// it gets its first answer and tells `up → down`. Before, its memo entry was gone,
    /// it was stepped as new (`down` after `down`), and the change was told by no result.
    #[test]
    fn a_change_survives_more_than_memo_jobs_steps_before_its_redelivery() {
        let mut r = Record::default();
        step(&mut r, new("j1"), Up, 1000);
        let first = step(&mut r, new("j2"), Down, 2000);
        assert!(first.changed(Down), "up → down; never published (killed)");
        for i in 0..2 * MEMO_JOBS {
            let a = step(&mut r, new(&format!("k{i}")), Down, 3000 + i as u64);
            assert!(!a.changed(Down));
        }
        let again = step(&mut r, again("j2"), Down, 20_000);
        assert!(
            again.changed(Down),
            "j2's up → down is told by no result: {again:?}"
        );
    }

    /// Hunt P. A check that looked at the site before a newer check of the key, and
    /// finished after it (a slow answer, a hang confirmed by a second attempt), stepped
    /// the key back: a false `down.up` while the site was down, then `up.down` told a
    /// second time by the next check. Its result is told, but the key does not move.
    #[test]
    fn an_observation_older_than_the_keys_is_told_but_moves_nothing() {
        let mut r = Record::default();
        super::step(&mut r, new("j1"), Up, Some(1000), 1000);
        let j3 = super::step(&mut r, new("j3"), Down, Some(3000), 3500);
        assert!(j3.changed(Down), "up → down, the site went down");
        // j2 began at 2000, before j3, and saw the site still up; it ends last.
        let j2 = super::step(&mut r, new("j2"), Up, Some(2000), 4000);
        assert_eq!(
            (j2.previous, j2.changed(Up), j2.streak, j2.since_ms),
            (Some(Down), false, 1, 3500),
            "an older observation is told with the key's state, unmoved: {j2:?}"
        );
        let j4 = super::step(&mut r, new("j4"), Down, Some(4500), 5000);
        assert_eq!(
            (j4.previous, j4.changed(Down), j4.streak, j4.since_ms),
            (Some(Down), false, 2, 3500),
            "the outage is told once: {j4:?}"
        );
    }

    /// A record written before records kept when their verdict was looked at steps on:
    /// it is older than any observation. `unknown` and `invalid` are no verdict on the
    /// site and step as they did, however old their observation.
    #[test]
    fn a_record_without_a_look_time_and_results_that_are_no_verdict_step_as_before() {
        let mut r = Record::default();
        super::step(&mut r, new("j1"), Up, None, 1000);
        let a = super::step(&mut r, new("j2"), Down, Some(5), 2000);
        assert_eq!((a.previous, a.streak), (Some(Up), 1));
        assert!(a.changed(Down));
        let u = super::step(&mut r, new("j3"), Unknown, Some(1), 3000);
        assert_eq!((u.previous, u.streak, u.since_ms), (Some(Down), 1, 3000));
        let d = super::step(&mut r, new("j4"), Down, Some(6), 4000);
        assert_eq!((d.previous, d.streak, d.since_ms), (Some(Down), 2, 2000));
    }

    /// A redelivery whose first delivery took `up → down` and never told it (its worker
    /// died) carries that change: older than another job's observation or not, it is
    /// stepped as before, or no result would ever tell the outage.
    #[test]
    fn a_redelivery_carrying_an_untold_change_is_never_stale() {
        let mut r = Record::default();
        super::step(&mut r, new("j1"), Up, Some(1000), 1000);
        super::step(&mut r, new("j2"), Down, Some(2000), 2000); // never told
        super::step(&mut r, new("j5"), Down, Some(5000), 5000); // down after down
        let again = super::step(&mut r, again("j2"), Down, Some(4000), 6000);
        assert_eq!((again.previous, again.changed(Down)), (Some(Up), true));
    }

    /// `max_age_s` serves the key's latest report: not an older observation's that
    /// finished later.
    #[tokio::test]
    async fn an_older_observation_is_not_served_for_max_age() {
        let store = MemoryState::default();
        let looked = |verdict, at| Report {
            looked_ms: Some(at),
            ..report("k", verdict)
        };
        store
            .step(&looked(Down, now_ms()), Some("f"), new("j3"))
            .await;
        let a = store
            .step(&looked(Up, now_ms() - 60_000), Some("f"), new("j2"))
            .await;
        assert_eq!(
            a.map(|a| (a.previous, a.changed(Up))),
            Some((Some(Down), false))
        );
        let served = store.fresh("k", "f", Duration::from_secs(600)).await;
        assert_eq!(
            served.map(|r| r.verdict),
            Some(Down),
            "the newer observation's"
        );
    }

    /// Hunt P. j2 took the key `up → down`, published it, and its worker died before
    /// the ack; j3 stepped the key without moving it (its report is now the latest),
    /// and the site came back. j2's redelivery, probed again, told `down → up` under
    /// j2's id: a second, different change for one job, which a subscriber that drops
    /// repeats of a job drops (CONTRACT: a redelivery gets its first delivery's
    /// `previous_verdict` and `changed`). While the key still has the verdict j2 left,
    /// j2 gets its first report back, whole; the move is told by the key's next job.
    #[tokio::test]
    async fn a_redelivered_change_gets_its_first_report_back_after_another_job_stepped() {
        let store = MemoryState::default();
        store.step(&of("j1", Up), None, new("j1")).await;
        store.step(&of("j2", Down), None, new("j2")).await;
        store.step(&of("j3", Down), None, new("j3")).await;
        let again = (store.replay("k", "j2").await)
            .map(|r| (r.job_id, r.verdict, r.previous_verdict, r.changed));
        assert_eq!(
            again,
            Some(("j2".to_string(), Down, Some(Up), true)),
            "j2's first report, whole"
        );
        assert!(
            store.replay("k", "j3").await.is_some(),
            "the latest report, as ever"
        );
        assert!(
            store.replay("k", "j1").await.is_none(),
            "j1 told no change: it is checked again"
        );
        // Once the key moved on (j4 told `down → up`), replaying j2's `up → down` would
        // leave subscribers with a verdict the key no longer has.
        store.step(&of("j4", Up), None, new("j4")).await;
        assert!(store.replay("k", "j2").await.is_none());
    }

    /// Review W. j2 took the key `up → down` and told it (its worker died before the
    /// ack); j3 told `down → up`, j4 told `up → down`: the key is down again, the verdict
    /// j2's step left, and j2's memo entry is still recalled. The rule
    /// ([`replays_change`]) says j2's redelivery gets its first report back, and the
    /// Redis store gives it (its `told` hash keeps j2's report until the memo lets the
    /// change go). The memory store let j2's report go at j3's step (`KeyState::keep`
    /// keeps only the changes replayable *at that moment*) and, asked at j4, has none:
    /// j2 is probed again, and a site back up by then makes j2 tell `down → up` under the
    /// job id that told `up → down` (hunt P, in the memory store only).
    #[tokio::test]
    async fn review_w_the_memory_store_replays_a_change_the_key_came_back_to() {
        let store = MemoryState::default();
        store.step(&of("j1", Up), None, new("j1")).await;
        store.step(&of("j2", Down), None, new("j2")).await;
        store.step(&of("j3", Up), None, new("j3")).await;
        store.step(&of("j4", Down), None, new("j4")).await;
        let record = store
            .keys
            .lock()
            .expect("lock")
            .get("k")
            .expect("k")
            .record
            .clone();
        assert!(
            replays_change(&record, "j2", now_ms()),
            "the rule both stores are to follow: j2 gets its first report back"
        );
        let again = (store.replay("k", "j2").await)
            .map(|r| (r.job_id, r.verdict, r.previous_verdict, r.changed));
        assert_eq!(
            again,
            Some(("j2".to_string(), Down, Some(Up), true)),
            "j2's first report, as replays_change (and the Redis store) say"
        );
    }

    /// `unknown` and `invalid` have a run each (CONTRACT: "how many results in a row ...
    /// this key has had this verdict"). Before, they shared one: an `invalid` right after
    /// an `unknown` said `streak: 2` and the `unknown`'s `since`.
    #[test]
    fn invalid_after_unknown_is_a_streak_of_one() {
        use Verdict::Invalid;
        let mut r = Record::default();
        step(&mut r, new("j1"), Up, 1000);
        step(&mut r, new("j2"), Unknown, 2000);
        let a = step(&mut r, new("j3"), Invalid, 3000);
        assert_eq!((a.streak, a.since_ms), (1, 3000), "{a:?}");
    }
}
