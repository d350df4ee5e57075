//! The network watch: what every attempt showed about our own way out, kept for a
//! couple of minutes, so that a wave (many sites silent at once while nothing answers) or
//! a cut (the same at one moment) is told from sites failing on their own.

use std::collections::{HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

/// Attempts the watch keeps, so a busy worker's bookkeeping stays small.
const MAX_EVENTS: usize = 2048;

/// How far back [`NetworkWatch`] looks for a wave of failures at least.
pub(crate) const WAVE_WINDOW: Duration = Duration::from_secs(10);

/// How far back it looks at most: back to where the job asking began, so that a wave of
/// attempts longer than [`WAVE_WINDOW`] (10 s connects, a confirmation after them)
/// still shows its first round to the jobs judged first.
pub(crate) const WAVE_LOOKBACK: Duration = Duration::from_secs(120);

/// Distinct target IPs failing silently within [`WAVE_WINDOW`] that make a wave.
pub(crate) const WAVE_IPS: usize = 20;

/// Distinct target IPs silent at one moment that make a cut (with almost nothing set
/// out then answered): fewer than a wave's, as they are counted over about a second.
pub(crate) const CUT_IPS: usize = 5;

/// The moment a cut is judged at: attempts set out within it.
pub(crate) const CUT_SPAN: Duration = Duration::from_secs(1);

/// Distinct target IPs unreached since the last answer (looked back [`WAVE_WINDOW`] at
/// most) that make a cut when none set out since has answered: the quiet end of a cut,
/// when a worker's last few jobs of a batch meet it one by one.
pub(crate) const STREAK_IPS: usize = 10;

/// Distinct target IPs that answered us within [`WAVE_WINDOW`] before a moment and
/// were unreached at it that make a cut of that moment count for a site unreached on
/// every attempt ([`NetworkWatch::fallen_cut`]).
pub(crate) const FALLEN_IPS: usize = 2;

/// What one attempt says about our own network.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An HTTP answer: packets go out and come back.
    Answered,
    /// Nothing came back at all (no connection in time, no route, the egress failed).
    Silent,
    /// Turned away at once (the connection refused): a dead site's word, or, from
    /// everywhere at one moment, a firewall on our way out turning everything away.
    Refused,
    /// Something came back (a reset, a DNS answer): no evidence either way.
    Other,
}

/// Which of its job's attempts an attempt was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Turn {
    /// The job's first: a site asked anew, as likely to answer as any.
    First,
    /// A confirmation, or the job asked again another way: it follows a failure, so
    /// dead sites' confirmations, set out together, fail together.
    Again,
}

/// Watches for a wave: many unrelated IPs failing silently at once while almost nothing
/// answers, which is our own network failing, not dozens of sites at the same moment;
/// and for a cut, the same at one moment (what set out then), which a way out lost in
/// the middle of a busy minute shows before any wave does.
#[derive(Debug, Default)]
pub(crate) struct NetworkWatch {
    events: Mutex<VecDeque<Event>>,
}

/// One attempt, as the watch keeps it.
#[derive(Debug, Clone, Copy)]
struct Event {
    set_out: Instant,
    ended: Instant,
    ip: Option<IpAddr>,
    signal: Signal,
    turn: Turn,
}

impl NetworkWatch {
    /// Records one attempt, its job's `turn`, which set out at `set_out` and ended `now`.
    pub(crate) fn record(
        &self,
        ip: Option<IpAddr>,
        (signal, turn): (Signal, Turn),
        set_out: Instant,
        now: Instant,
    ) {
        let mut events = self.events();
        let cutoff = now.checked_sub(WAVE_LOOKBACK).unwrap_or(now);
        while events.front().is_some_and(|e| e.ended < cutoff) {
            events.pop_front();
        }
        if events.len() >= MAX_EVENTS {
            events.pop_front();
        }
        events.push_back(Event {
            set_out,
            ended: now,
            ip,
            signal,
            turn,
        });
    }

    fn events(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        self.events
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A description of the wave going on at `now`, if there is one, for a job that
    /// began at `began`: what ended since then counts (at least [`WAVE_WINDOW`], at most
    /// [`WAVE_LOOKBACK`]).
    pub(crate) fn wave(&self, now: Instant, began: Instant) -> Option<String> {
        let window = now
            .saturating_duration_since(began)
            .clamp(WAVE_WINDOW, WAVE_LOOKBACK);
        let cutoff = now.checked_sub(window).unwrap_or(now);
        let tally = Tally::of(self.events().iter().filter(|e| e.ended >= cutoff));
        (tally.silent_ips >= WAVE_IPS && tally.nothing_came_back()).then(|| {
            format!(
                "{} unrelated sites went silent within {} s and {} of {} probes got an answer",
                tally.silent_ips,
                window.as_secs(),
                tally.answered,
                tally.total
            )
        })
    }

    /// A description of the cut at `moment`, if there was one: attempts to many IPs
    /// were silent then, and almost none set out then got an answer. A way out cut in
    /// the middle of a busy minute (an uplink lost, or a proxy's) shows no wave over a
    /// job's window, which holds the answers from before; at the moment a silent
    /// attempt set out, nothing came back from anywhere. Answers count by when they set
    /// out (one set out before the cut may end during it); silence by when it lasted.
    ///
    /// A way out that refuses every connection (a firewall's reset, a proxy's host
    /// turning the sites away) is the same cut, louder: refusals count with silence.
    pub(crate) fn cut(&self, moment: Instant) -> Option<String> {
        let events = self.events();
        if let Some(tally) = cut_tally(&events, moment) {
            return Some(format!(
                "while it was asked, {} unrelated sites {} and {} of {} probes set out then got an answer",
                tally.unreached(),
                tally.how(),
                tally.answered,
                tally.total
            ));
        }
        streak(&events, moment, Streak::Any)
    }

    /// The cut at `moment`, if there was one that sites which had answered us shortly
    /// before fell into: at least [`FALLEN_IPS`] of those unreached then had answered
    /// within [`WAVE_WINDOW`] before it. Dead sites' confirmations, set out together
    /// with nothing else, look like a cut too; sites that answered a moment before and
    /// go unreached together do not die at once, our way out does.
    ///
    /// So do sites asked anew: [`STREAK_IPS`] of them unreached on their jobs' first
    /// attempts since the last answer, and nothing answered since (a streak of new
    /// sites, which dead sites' confirmations never make). Refusals end at once, so
    /// those that came just before a confirmation's moment show only so.
    pub(crate) fn fallen_cut(&self, moment: Instant) -> Option<String> {
        let events = self.events();
        fallen(&events, moment).or_else(|| streak(&events, moment, Streak::New))
    }

    /// What the watch saw around `moment`, in words, for the debug line of an
    /// unreached site believed `down`: per quarter second from [`AROUND`] before to
    /// [`AROUND`] after, the attempts that set out then by how they ended (answered,
    /// silent, refused, other) and how many were their jobs' first attempts (`f`), and
    /// when the last answer before it had set out.
    pub(crate) fn around(&self, moment: Instant) -> String {
        let events = self.events();
        let from = moment.checked_sub(AROUND).unwrap_or(moment);
        let mut buckets = std::collections::BTreeMap::<i64, [usize; 5]>::new();
        for e in events.iter().filter(|e| e.set_out >= from) {
            let ms = signed_ms(e.set_out, moment);
            if ms >= AROUND.as_millis() as i64 {
                continue;
            }
            let counts = buckets.entry(ms.div_euclid(AROUND_STEP_MS)).or_default();
            let column = match e.signal {
                Signal::Answered => 0,
                Signal::Silent => 1,
                Signal::Refused => 2,
                Signal::Other => 3,
            };
            counts[column] += 1;
            if e.turn == Turn::First {
                counts[4] += 1;
            }
        }
        let mut said: Vec<String> = buckets
            .iter()
            .map(|(step, [a, s, r, o, f])| {
                format!("{:+}ms {a}a/{s}s/{r}r/{o}o/{f}f", step * AROUND_STEP_MS)
            })
            .collect();
        let last = events
            .iter()
            .filter(|e| e.signal == Signal::Answered && e.set_out <= moment)
            .map(|e| e.set_out)
            .max();
        said.push(match last {
            Some(t) => format!("last answer set out {}ms before", signed_ms(moment, t)),
            None => "no answer before".to_string(),
        });
        said.join(", ")
    }

    /// Whether an attempt set out within [`CUT_SPAN`] of `moment` has been answered.
    pub(crate) fn answered_at(&self, moment: Instant) -> bool {
        let answered = |e: &Event| e.signal == Signal::Answered && e.at(moment);
        self.events().iter().any(|&e| answered(&e))
    }
}

/// How far before and after a moment [`NetworkWatch::around`] tells of.
const AROUND: Duration = Duration::from_secs(2);

/// The steps [`NetworkWatch::around`] counts in, in milliseconds.
const AROUND_STEP_MS: i64 = 250;

/// `t` less `from`, in milliseconds, negative when `t` came first.
fn signed_ms(t: Instant, from: Instant) -> i64 {
    match t.checked_duration_since(from) {
        Some(after) => after.as_millis() as i64,
        None => -(from.saturating_duration_since(t).as_millis() as i64),
    }
}

/// What set out at `moment` and how it ended, when that is a cut: [`CUT_IPS`] unrelated
/// sites unreached and almost nothing answered.
fn cut_tally(events: &VecDeque<Event>, moment: Instant) -> Option<Tally> {
    let tally = Tally::of(events.iter().filter(|e| e.at(moment)));
    (tally.unreached() >= CUT_IPS && tally.nothing_came_back()).then_some(tally)
}

/// The cut at `moment` that sites which had answered shortly before fell into (see
/// [`NetworkWatch::fallen_cut`]).
fn fallen(events: &VecDeque<Event>, moment: Instant) -> Option<String> {
    let tally = cut_tally(events, moment)?;
    let back = moment.checked_sub(WAVE_WINDOW).unwrap_or(moment);
    let answered: HashSet<IpAddr> = events
        .iter()
        .filter(|e| e.signal == Signal::Answered && e.ended >= back && e.ended <= moment)
        .filter_map(|e| e.ip)
        .collect();
    let unreached = |e: &&Event| matches!(e.signal, Signal::Silent | Signal::Refused);
    let fallen: HashSet<IpAddr> = events
        .iter()
        .filter(|e| e.at(moment))
        .filter(unreached)
        .filter_map(|e| e.ip)
        .filter(|ip| answered.contains(ip))
        .collect();
    (fallen.len() >= FALLEN_IPS).then(|| {
            format!(
                "while it was asked, {} unrelated sites {}, {} of which had answered within {} s before, and {} of {} probes set out then got an answer",
                tally.unreached(),
                tally.how(),
                fallen.len(),
                WAVE_WINDOW.as_secs(),
                tally.answered,
                tally.total
            )
        })
}

/// The cut that `moment` fell in as a streak: nothing set out since the last answer
/// (at most [`WAVE_WINDOW`] before it) has answered, and [`STREAK_IPS`] unrelated sites
/// were unreached since. When a batch is nearly done, few attempts set out at any one
/// moment, and a cut met by the last of them shows only over the seconds before.
/// `which` attempts count ([`Streak`]).
fn streak(events: &VecDeque<Event>, moment: Instant, which: Streak) -> Option<String> {
    let until = moment + CUT_SPAN;
    let answers = events.iter().filter(|e| e.signal == Signal::Answered);
    let last = answers.map(|e| e.set_out).filter(|&t| t <= until).max();
    if last.is_some_and(|t| t >= moment) {
        return None;
    }
    let back = moment.checked_sub(WAVE_WINDOW).unwrap_or(moment);
    let since = last.map_or(back, |t| t.max(back));
    let tally = Tally::of(
        events
            .iter()
            .filter(|e| e.set_out > since && e.set_out <= until)
            .filter(|e| which == Streak::Any || e.turn == Turn::First),
    );
    (tally.unreached() >= STREAK_IPS).then(|| {
        format!(
            "since the last answer ({} ms before it was asked), {} unrelated sites{} {} and none answered",
            moment.saturating_duration_since(since).as_millis(),
            tally.unreached(),
            match which {
                Streak::Any => "",
                Streak::New => " asked anew",
            },
            tally.how()
        )
    })
}

/// Which attempts make a streak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Streak {
    /// Every attempt.
    Any,
    /// Only jobs' first attempts ([`Turn::First`]).
    New,
}

impl Event {
    /// Whether it tells how the way out was at `moment`: an answer set out within
    /// [`CUT_SPAN`] of it, other ends that lasted through part of it.
    fn at(&self, moment: Instant) -> bool {
        let until = moment + CUT_SPAN;
        match self.signal {
            Signal::Answered => self.set_out >= moment && self.set_out <= until,
            _ => self.set_out <= until && self.ended >= moment,
        }
    }
}

/// Attempts within a window, by what they showed.
struct Tally {
    /// Distinct target IPs that went silent.
    silent_ips: usize,
    /// Distinct target IPs that refused and never went silent.
    refused_ips: usize,
    /// Attempts answered.
    answered: usize,
    /// Every attempt.
    total: usize,
}

impl Tally {
    fn of<'a>(events: impl Iterator<Item = &'a Event>) -> Tally {
        let (mut silent, mut refused) = (HashSet::new(), HashSet::new());
        let (mut answered, mut total) = (0usize, 0usize);
        for e in events {
            total += 1;
            match (e.signal, e.ip) {
                (Signal::Answered, _) => answered += 1,
                (Signal::Silent, Some(ip)) => {
                    silent.insert(ip);
                }
                (Signal::Refused, Some(ip)) => {
                    refused.insert(ip);
                }
                _ => {}
            }
        }
        Tally {
            silent_ips: silent.len(),
            refused_ips: refused.difference(&silent).count(),
            answered,
            total,
        }
    }

    /// Distinct target IPs that went silent or refused.
    fn unreached(&self) -> usize {
        self.silent_ips + self.refused_ips
    }

    /// How they failed, in words.
    fn how(&self) -> &'static str {
        match (self.silent_ips, self.refused_ips) {
            (_, 0) => "went silent",
            (0, _) => "refused it",
            _ => "went silent or refused it",
        }
    }

    /// Under a tenth of the attempts got an answer.
    fn nothing_came_back(&self) -> bool {
        self.answered * 10 < self.total
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, n]))
    }

    #[test]
    fn a_wave_of_silent_failures_with_no_answers_is_our_network() {
        let w = NetworkWatch::default();
        let t0 = Instant::now();
        for n in 0..(WAVE_IPS as u8 - 1) {
            w.record(ip(n), (Signal::Silent, Turn::First), t0, t0);
        }
        assert!(w.wave(t0, t0).is_none(), "one short of a wave");
        w.record(ip(200), (Signal::Silent, Turn::First), t0, t0);
        assert!(w.wave(t0, t0).is_some());
        // Over after the window, for a job that began after the wave ended.
        let later = t0 + WAVE_WINDOW + Duration::from_secs(1);
        assert!(w.wave(later, t0 + Duration::from_secs(1)).is_none());
        // A job that began with it still sees it, up to the lookback.
        assert!(w.wave(later, t0).is_some());
        let much_later = t0 + WAVE_LOOKBACK + Duration::from_secs(1);
        assert!(w.wave(much_later, t0).is_none());
    }

    #[test]
    fn silence_from_everywhere_when_an_attempt_set_out_is_a_cut() {
        let w = NetworkWatch::default();
        let t0 = Instant::now();
        let secs = Duration::from_secs;
        // A busy minute's answers, then the way out is cut at t0 + 4 s: what set out
        // from then goes silent 2 s later, and one request set out before ends during.
        for n in 0..100u8 {
            w.record(ip(n), (Signal::Answered, Turn::First), t0, t0 + secs(1));
        }
        let cut = t0 + secs(4);
        for n in 0..CUT_IPS as u8 {
            w.record(
                ip(100 + n),
                (Signal::Silent, Turn::First),
                cut,
                cut + secs(2),
            );
        }
        w.record(
            ip(99),
            (Signal::Answered, Turn::First),
            t0 + secs(3),
            cut + secs(1),
        );
        assert!(
            w.wave(cut + secs(2), cut).is_none(),
            "the job's window holds the answers"
        );
        assert!(w.cut(cut).is_some());
        assert!(
            w.cut(cut + secs(1)).is_some(),
            "silent through that moment too"
        );
        assert!(w.cut(t0).is_none(), "before the cut, answers");
        // The way out back: what sets out now answers, and the cut's moments stay cut.
        for n in 0..CUT_IPS as u8 {
            w.record(
                ip(150 + n),
                (Signal::Answered, Turn::First),
                cut + secs(3),
                cut + secs(3),
            );
        }
        assert!(w.cut(cut + secs(3)).is_none());
        assert!(w.cut(cut).is_some());
    }

    #[test]
    fn refusals_from_everywhere_at_one_moment_are_a_cut_too() {
        let w = NetworkWatch::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        for n in 0..20u8 {
            w.record(ip(n), (Signal::Answered, Turn::First), t0, t0 + ms(50));
        }
        // A firewall on the way out turns every connection away from t0 + 2 s.
        let cut = t0 + ms(2000);
        for n in 0..(CUT_IPS as u8 - 1) {
            w.record(
                ip(100 + n),
                (Signal::Refused, Turn::First),
                cut,
                cut + ms(5),
            );
        }
        assert!(w.cut(cut).is_none(), "one short of a cut");
        w.record(ip(110), (Signal::Silent, Turn::First), cut, cut + ms(900));
        let said = w.cut(cut).expect("a cut");
        assert!(said.contains("went silent or refused it"), "{said}");
        // A dead site's refusal among answers is no cut.
        for n in 0..CUT_IPS as u8 {
            w.record(ip(150 + n), (Signal::Refused, Turn::First), t0, t0 + ms(5));
        }
        assert!(w.cut(t0).is_none());
    }

    #[test]
    fn a_cut_that_sites_which_had_just_answered_fell_into_is_told_from_dead_sites() {
        let w = NetworkWatch::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        for n in 0..20u8 {
            w.record(ip(n), (Signal::Answered, Turn::First), t0, t0 + ms(50));
        }
        // Dead sites' confirmations, set out together with nothing else.
        let confirmed = t0 + ms(2000);
        for n in 0..8u8 {
            w.record(
                ip(100 + n),
                (Signal::Silent, Turn::Again),
                confirmed,
                confirmed + ms(1000),
            );
        }
        assert!(
            w.cut(confirmed).is_some(),
            "alone at their moment, as a cut"
        );
        assert!(
            w.fallen_cut(confirmed).is_none(),
            "none of them had answered"
        );
        // One site that had answered goes silent with them: not yet a cut.
        w.record(
            ip(1),
            (Signal::Silent, Turn::First),
            confirmed,
            confirmed + ms(1000),
        );
        assert!(w.fallen_cut(confirmed).is_none(), "one short");
        w.record(
            ip(2),
            (Signal::Refused, Turn::First),
            confirmed,
            confirmed + ms(5),
        );
        let said = w.fallen_cut(confirmed).expect("a cut sites fell into");
        assert!(said.contains("2 of which had answered"), "{said}");
        // Answers set out then, beside them, are no cut at all.
        for n in 3..20u8 {
            w.record(
                ip(n),
                (Signal::Answered, Turn::First),
                confirmed,
                confirmed + ms(50),
            );
        }
        assert!(w.fallen_cut(confirmed).is_none());
    }

    /// The CI failure of 2026-12-07 (stop 70), from the worker's own debug line: a site
    /// refused through the only proxy just as its way out began refusing, while the
    /// batch beside it answered, and refused again at its confirmation 1.2 s later,
    /// right after 54 new jobs' first attempts were all refused and nothing answered
    /// since. None of those had answered before (each site is asked once), so no site
    /// "fell" into the cut, and the confirmation was believed: `down/connect`.
    #[test]
    fn a_cut_new_sites_met_just_before_a_confirmation_is_its_cut() {
        let (w, moment) = refused_before_a_confirmation(Turn::First);
        let said = w.fallen_cut(moment).expect("new sites all refused: a cut");
        assert!(said.contains("56 unrelated sites asked anew"), "{said}");
        // The same refusals as dead sites' confirmations are no cut: they fail together.
        let (w, moment) = refused_before_a_confirmation(Turn::Again);
        assert!(w.fallen_cut(moment).is_none());
        // Nor with an answer set out since.
        let (w, moment) = refused_before_a_confirmation(Turn::First);
        let set_out = moment - Duration::from_millis(20);
        w.record(ip(240), (Signal::Answered, Turn::First), set_out, moment);
        assert!(w.fallen_cut(moment).is_none());
    }

    /// The picture of that CI failure, the 54 refused in their jobs' `turn`; and the
    /// confirmation's moment.
    fn refused_before_a_confirmation(turn: Turn) -> (NetworkWatch, Instant) {
        let w = NetworkWatch::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let first = |signal| (signal, Turn::First);
        for n in 0..110u8 {
            w.record(ip(n), first(Signal::Answered), t0, t0 + ms(40));
        }
        // The site's first attempt meets the cut's edge; one more goes silent.
        w.record(ip(200), first(Signal::Refused), t0 + ms(213), t0 + ms(220));
        w.record(ip(199), first(Signal::Silent), t0 + ms(963), t0 + ms(2963));
        // 54 more, all refused within a quarter second.
        for k in 0..54u8 {
            let set_out = t0 + ms(1110 + 4 * u64::from(k));
            w.record(
                ip(110 + k),
                (Signal::Refused, turn),
                set_out,
                set_out + ms(5),
            );
        }
        // The confirmation, refused: its moment a round trip before the refusal.
        let again = (Signal::Refused, Turn::Again);
        w.record(ip(200), again, t0 + ms(1453), t0 + ms(1458));
        (w, t0 + ms(1358))
    }

    /// The debug line's view: attempts by the quarter second they set out in, around
    /// the moment and no further, and the last answer before it.
    #[test]
    fn around_a_moment_the_watch_tells_what_set_out_by_quarter_second() {
        let w = NetworkWatch::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let moment = t0 + ms(5000);
        assert_eq!(w.around(moment), "no answer before");
        w.record(ip(1), (Signal::Answered, Turn::First), t0, t0 + ms(50));
        for n in 0..3u8 {
            w.record(
                ip(n),
                (Signal::Answered, Turn::First),
                moment - ms(600),
                moment - ms(550),
            );
        }
        w.record(
            ip(7),
            (Signal::Silent, Turn::First),
            moment + ms(100),
            moment + ms(1100),
        );
        w.record(
            ip(8),
            (Signal::Refused, Turn::Again),
            moment + ms(200),
            moment + ms(210),
        );
        w.record(
            ip(9),
            (Signal::Other, Turn::Again),
            moment + ms(300),
            moment + ms(310),
        );
        w.record(
            ip(9),
            (Signal::Answered, Turn::First),
            moment + ms(2500),
            moment + ms(2550),
        );
        assert_eq!(
            w.around(moment),
            "-750ms 3a/0s/0r/0o/3f, +0ms 0a/1s/1r/0o/1f, +250ms 0a/0s/0r/1o/0f, \
             last answer set out 600ms before"
        );
    }

    #[test]
    fn unreached_sites_since_the_last_answer_with_none_answered_are_a_cut() {
        let w = NetworkWatch::default();
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        for n in 0..50u8 {
            w.record(ip(n), (Signal::Answered, Turn::First), t0, t0 + ms(50));
        }
        // The way out refuses from t0 + 1 s; the batch's jobs meet it one by one, a
        // few hundred ms apart, too few at any one moment for a cut there.
        let at = |k: u8| t0 + ms(1000 + 400 * u64::from(k));
        for k in 0..(STREAK_IPS as u8 - 1) {
            w.record(
                ip(100 + k),
                (Signal::Refused, Turn::First),
                at(k),
                at(k) + ms(5),
            );
        }
        let last = at(STREAK_IPS as u8 - 1);
        assert!(w.cut(last).is_none(), "one short of a streak");
        w.record(ip(120), (Signal::Refused, Turn::First), last, last + ms(5));
        let said = w.cut(last).expect("a streak");
        assert!(said.contains("since the last answer"), "{said}");
        // An answer set out at that moment, or after the streak began, breaks it.
        w.record(
            ip(121),
            (Signal::Answered, Turn::First),
            last,
            last + ms(30),
        );
        assert!(w.cut(last).is_none());
        // Unreached sites spread over more than the look back are no streak either.
        let quiet = NetworkWatch::default();
        let slow = |k: u8| t0 + ms(1200 * u64::from(k));
        for k in 0..STREAK_IPS as u8 {
            quiet.record(
                ip(k),
                (Signal::Refused, Turn::First),
                slow(k),
                slow(k) + ms(5),
            );
        }
        assert!(quiet.cut(slow(STREAK_IPS as u8 - 1)).is_none());
    }

    #[test]
    fn one_ip_short_or_answers_at_that_moment_are_no_cut() {
        let w = NetworkWatch::default();
        let t0 = Instant::now();
        let later = t0 + Duration::from_secs(2);
        for n in 0..(CUT_IPS as u8 - 1) {
            w.record(ip(n), (Signal::Silent, Turn::First), t0, later);
        }
        assert!(w.cut(t0).is_none(), "one short of a cut");
        w.record(ip(100), (Signal::Silent, Turn::First), t0, later);
        assert!(w.cut(t0).is_some());
        // A blackholed site among working ones: they answer what set out beside it.
        for n in 0..CUT_IPS as u8 {
            w.record(ip(150 + n), (Signal::Answered, Turn::First), t0, t0);
        }
        assert!(w.cut(t0).is_none(), "half of them answered");
    }

    #[test]
    fn failures_among_answers_or_from_one_site_are_no_wave() {
        let t0 = Instant::now();
        let w = NetworkWatch::default();
        for n in 0..40u8 {
            w.record(ip(n), (Signal::Silent, Turn::First), t0, t0);
            w.record(ip(100 + n), (Signal::Answered, Turn::First), t0, t0);
        }
        assert!(
            w.wave(t0, t0).is_none(),
            "half the probes answer: sites, not us"
        );
        let w = NetworkWatch::default();
        for _ in 0..100 {
            w.record(ip(1), (Signal::Silent, Turn::First), t0, t0);
        }
        assert!(w.wave(t0, t0).is_none(), "one site, however often");
        let w = NetworkWatch::default();
        for n in 0..40u8 {
            w.record(ip(n), (Signal::Other, Turn::First), t0, t0);
        }
        assert!(
            w.wave(t0, t0).is_none(),
            "refusals reach us: our network works"
        );
    }
}
