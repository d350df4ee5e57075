//! Egress health: which ways out to the internet are working right now.
//!
//! An egress (a proxy, or the direct route) that fails for many distinct target IPs
//! while another egress reaches sites is *rested*: probes stop going through it for a
//! while, so its failures stop costing attempts and confirmations go through an egress
//! that works. One egress alone is never rested (there is nothing better to use; the
//! canaries tell when our whole network is down). The bookkeeping is plain data with
//! the clock passed in, so every rule is tested without sleeping.
//!
//! [`watch`] keeps what every attempt showed about our own way out as a whole.

use std::collections::VecDeque;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

mod watch;

pub(crate) use watch::{NetworkWatch, Signal, Turn, CUT_SPAN};

/// When an egress is rested, and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthSettings {
    /// Distinct target IPs failing through one egress within [`WINDOW`] that rest it
    /// (0: never rest an egress).
    pub fail_targets: usize,
    /// How long a rested egress is left alone.
    pub rest: Duration,
}

/// How far back failures and successes are remembered.
pub(crate) const WINDOW: Duration = Duration::from_secs(60);

/// Events kept per egress, so a busy worker's bookkeeping stays small.
const MAX_EVENTS: usize = 512;

/// What one attempt through an egress says about the egress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Health {
    /// An HTTP answer came back: the way out works, whatever the site said.
    Works,
    /// No answer (refused, reset, timeout, TLS, proxy failure).
    Failed,
    /// Nothing about the egress (DNS is ours, a refused target was never asked).
    Silent,
}

#[derive(Debug, Default)]
struct Track {
    /// (when, target IP, worked)
    events: VecDeque<(Instant, Option<IpAddr>, bool)>,
    resting_until: Option<Instant>,
}

impl Track {
    fn forget_before(&mut self, cutoff: Instant) {
        while self.events.front().is_some_and(|(at, _, _)| *at < cutoff) {
            self.events.pop_front();
        }
    }

    fn resting(&self, now: Instant) -> bool {
        self.resting_until.is_some_and(|until| now < until)
    }
}

/// The health of every egress of one worker.
#[derive(Debug)]
pub(crate) struct EgressHealth {
    settings: HealthSettings,
    tracks: Mutex<Vec<Track>>,
}

impl EgressHealth {
    /// Health bookkeeping for `count` egresses, all usable.
    pub(crate) fn new(count: usize, settings: HealthSettings) -> EgressHealth {
        EgressHealth {
            settings,
            tracks: Mutex::new((0..count.max(1)).map(|_| Track::default()).collect()),
        }
    }

    fn tracks(&self) -> std::sync::MutexGuard<'_, Vec<Track>> {
        // The data stays consistent even if a holder panicked: every update is one push
        // or one assignment.
        self.tracks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records an attempt through egress `egress` to `target`. Returns true when this
    /// attempt put the egress to rest.
    pub(crate) fn record(
        &self,
        egress: usize,
        target: Option<IpAddr>,
        health: Health,
        now: Instant,
    ) -> bool {
        if health == Health::Silent {
            return false;
        }
        let mut tracks = self.tracks();
        let n = tracks.len();
        let cutoff = now.checked_sub(WINDOW).unwrap_or(now);
        for t in tracks.iter_mut() {
            t.forget_before(cutoff);
        }
        let track = &mut tracks[egress % n];
        if track.events.len() >= MAX_EVENTS {
            track.events.pop_front();
        }
        track
            .events
            .push_back((now, target, health == Health::Works));
        if health == Health::Works {
            return false;
        }
        self.rest_if_sick(&mut tracks, egress % n, now)
    }

    /// Rests egress `egress` when it fails for many sites while another works.
    fn rest_if_sick(&self, tracks: &mut [Track], egress: usize, now: Instant) -> bool {
        let n = tracks.len();
        let track = &tracks[egress];
        if n < 2 || self.settings.fail_targets == 0 || track.resting(now) {
            return false;
        }
        let mut failing: Vec<IpAddr> = Vec::new();
        let mut worked = 0usize;
        for (_, ip, ok) in &track.events {
            match (ok, ip) {
                (true, _) => worked += 1,
                (false, Some(ip)) if !failing.contains(ip) => failing.push(*ip),
                _ => {}
            }
        }
        let failed = track.events.len() - worked;
        // Mostly failing, for many different sites: not one bad site, a bad way out.
        let sick = failing.len() >= self.settings.fail_targets && failed >= 4 * worked;
        let others_work = tracks
            .iter()
            .enumerate()
            .any(|(i, t)| i != egress && !t.resting(now) && t.events.iter().any(|(_, _, ok)| *ok));
        if sick && others_work {
            let track = &mut tracks[egress];
            track.resting_until = Some(now + self.settings.rest);
            // It starts afresh after its rest: old failures would rest it again at once.
            track.events.clear();
            return true;
        }
        false
    }

    /// Takes back the latest answer through `egress` from `target`: another egress's
    /// good answer, in the same job, contradicted it (a proxy answering its own bare 503
    /// for every site). It counts as a failure from now on. Returns true when this put
    /// the egress to rest.
    pub(crate) fn contradict(&self, egress: usize, target: Option<IpAddr>, now: Instant) -> bool {
        // Without its target, the answer cannot be told from another job's.
        if target.is_none() {
            return false;
        }
        let mut tracks = self.tracks();
        let n = tracks.len();
        let track = &mut tracks[egress % n];
        track.forget_before(now.checked_sub(WINDOW).unwrap_or(now));
        let Some(event) = track
            .events
            .iter_mut()
            .rev()
            .find(|(_, ip, ok)| *ok && *ip == target)
        else {
            return false;
        };
        event.2 = false;
        self.rest_if_sick(&mut tracks, egress % n, now)
    }

    /// Whether an egress other than `egress` is there and not resting at `now`.
    pub(crate) fn another_open(&self, egress: usize, now: Instant) -> bool {
        let tracks = self.tracks();
        let n = tracks.len();
        (0..n).any(|i| i != egress % n && !tracks[i].resting(now))
    }

    /// Whether egress `egress` is resting at `now`.
    #[cfg(test)]
    pub(crate) fn resting(&self, egress: usize, now: Instant) -> bool {
        let tracks = self.tracks();
        let n = tracks.len();
        tracks[egress % n].resting(now)
    }

    /// The egress to use next: from `preferred` on, the first one not in `excluded` and
    /// not resting; when all those left are resting, the first one not excluded (a rest
    /// is advice, and a probe must go somewhere). `None` when every egress is excluded.
    pub(crate) fn pick(&self, preferred: usize, excluded: &[usize], now: Instant) -> Option<usize> {
        let tracks = self.tracks();
        let n = tracks.len();
        let order = (0..n).map(|k| (preferred + k) % n);
        let open: Vec<usize> = order.filter(|i| !excluded.contains(i)).collect();
        open.iter()
            .copied()
            .find(|&i| !tracks[i].resting(now))
            .or_else(|| open.first().copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SETTINGS: HealthSettings = HealthSettings {
        fail_targets: 3,
        rest: Duration::from_secs(60),
    };

    fn ip(n: u8) -> Option<IpAddr> {
        Some(IpAddr::from([192, 0, 2, n]))
    }

    #[test]
    fn an_egress_failing_for_many_targets_while_another_works_is_rested() {
        let h = EgressHealth::new(2, SETTINGS);
        let t0 = Instant::now();
        assert!(!h.record(1, ip(9), Health::Works, t0));
        assert!(!h.record(0, ip(1), Health::Failed, t0));
        assert!(!h.record(0, ip(2), Health::Failed, t0));
        assert!(!h.resting(0, t0));
        assert!(h.record(0, ip(3), Health::Failed, t0));
        assert!(h.resting(0, t0));
        assert_eq!(h.pick(0, &[], t0), Some(1));
        // Back after its rest.
        let later = t0 + SETTINGS.rest + Duration::from_millis(1);
        assert!(!h.resting(0, later));
        assert_eq!(h.pick(0, &[], later), Some(0));
    }

    /// Hunt M: a forward proxy whose upstream is dead answers every site with its own
    /// bare 503. Each answer said the egress works, so it was never rested, though for
    /// every site another egress got the page a moment later. An answer that another
    /// egress's good answer contradicted, in the same job, is its egress failing.
    #[test]
    fn an_egress_whose_answers_other_egresses_contradict_is_rested() {
        let h = EgressHealth::new(3, SETTINGS);
        let t0 = Instant::now();
        for n in 1..=3 {
            assert!(!h.record(1, ip(n), Health::Works, t0), "its bare 503");
            assert!(!h.record(0, ip(n), Health::Works, t0), "the page, direct");
            let rested = h.contradict(1, ip(n), t0);
            assert_eq!(rested, n == 3, "contradicted for {n} sites");
        }
        assert!(h.resting(1, t0));
        assert!(!h.resting(0, t0));
        // A site that flaps once is no sick egress.
        let h = EgressHealth::new(2, SETTINGS);
        for n in 1..=20 {
            h.record(1, ip(n), Health::Works, t0);
        }
        assert!(!h.contradict(1, ip(5), t0));
        assert!(!h.resting(1, t0));
        // Review T: an answer with no target (a proxy chose the address) is nobody's.
        let h = EgressHealth::new(2, SETTINGS);
        h.record(0, ip(1), Health::Works, t0);
        h.record(1, None, Health::Works, t0);
        assert!(!h.contradict(1, None, t0));
        assert_eq!(h.tracks()[1].events.back().map(|e| e.2), Some(true));
    }

    #[test]
    fn one_failing_site_does_not_rest_an_egress() {
        let h = EgressHealth::new(2, SETTINGS);
        let t0 = Instant::now();
        h.record(1, ip(9), Health::Works, t0);
        for _ in 0..20 {
            assert!(!h.record(0, ip(1), Health::Failed, t0));
        }
        assert!(!h.resting(0, t0));
    }

    #[test]
    fn nothing_is_rested_when_no_other_egress_works() {
        // Every way out failing is our network, not one egress: the canaries say so.
        let h = EgressHealth::new(2, SETTINGS);
        let t0 = Instant::now();
        for n in 0..10 {
            assert!(!h.record(0, ip(n), Health::Failed, t0));
            assert!(!h.record(1, ip(n), Health::Failed, t0));
        }
        let alone = EgressHealth::new(1, SETTINGS);
        for n in 0..10 {
            assert!(!alone.record(0, ip(n), Health::Failed, t0));
        }
    }

    #[test]
    fn an_egress_that_mostly_works_is_not_rested() {
        let h = EgressHealth::new(2, SETTINGS);
        let t0 = Instant::now();
        h.record(1, ip(9), Health::Works, t0);
        for n in 0..3 {
            for _ in 0..2 {
                h.record(0, ip(100 + n), Health::Works, t0);
            }
            assert!(!h.record(0, ip(n), Health::Failed, t0));
        }
        assert!(!h.resting(0, t0));
    }

    #[test]
    fn old_failures_are_forgotten() {
        let h = EgressHealth::new(2, SETTINGS);
        let t0 = Instant::now();
        h.record(0, ip(1), Health::Failed, t0);
        h.record(0, ip(2), Health::Failed, t0);
        let later = t0 + WINDOW + Duration::from_secs(1);
        h.record(1, ip(9), Health::Works, later);
        assert!(!h.record(0, ip(3), Health::Failed, later));
        assert!(!h.resting(0, later));
    }

    #[test]
    fn pick_rotates_skips_exclusions_and_falls_back_when_all_rest() {
        let h = EgressHealth::new(3, SETTINGS);
        let t0 = Instant::now();
        assert_eq!(h.pick(1, &[], t0), Some(1));
        assert_eq!(h.pick(1, &[1], t0), Some(2));
        assert_eq!(h.pick(2, &[2, 0], t0), Some(1));
        assert_eq!(h.pick(0, &[0, 1, 2], t0), None);
        h.record(2, ip(9), Health::Works, t0);
        for n in 0..3 {
            h.record(0, ip(n), Health::Failed, t0);
        }
        assert!(h.resting(0, t0));
        assert_eq!(h.pick(0, &[], t0), Some(1));
        // Only the resting one left: it is used all the same.
        assert_eq!(h.pick(0, &[1, 2], t0), Some(0));
    }

    #[test]
    fn silence_changes_nothing() {
        let h = EgressHealth::new(2, SETTINGS);
        let t0 = Instant::now();
        h.record(1, ip(9), Health::Works, t0);
        for n in 0..10 {
            assert!(!h.record(0, ip(n), Health::Silent, t0));
        }
        assert!(!h.resting(0, t0));
    }
}
