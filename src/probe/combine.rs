//! Combining attempts: several judgements of one job, in order, become its final word.
//! One good attempt wins; `down` needs enough failures that are evidence about the site.

use crate::job::{Reason, Verdict};
use crate::probe::judge::Judgement;

/// Combines the attempts' judgements (in order) into the final one and the index of the
/// attempt it comes from. `required` is how many failures make a `down` (`probe.attempts`).
///
/// One good attempt wins: a failure that another probe did not see is a blip, not an
/// outage. `down` needs `required` failing attempts that are evidence about the site:
/// an egress that failed says nothing about it, and once the site refused us as a bot
/// only an answer through another egress that shows the site failing (a bad status or
/// page) confirms it; a connection failure there may be the same ban. Short of that the
/// verdict is `unknown`, with the reason that kept us from knowing.
pub(crate) fn combine(judgements: &[Judgement], required: usize) -> Option<(usize, &Judgement)> {
    if judgements.is_empty() {
        return None;
    }
    if let Some(i) = judgements.iter().rposition(|j| !j.wants_confirmation()) {
        return Some((i, &judgements[i]));
    }
    if let Some(i) = confirmed_down(judgements, required) {
        return Some((i, &judgements[i]));
    }
    // The last that asked the site, if one did: one that asked nothing (a pause the
    // host asked for, met through another egress) would hide the answer that started it.
    let unknown = |reason: Option<Reason>| {
        let fits =
            |j: &Judgement| j.verdict == Verdict::Unknown && reason.is_none_or(|r| j.reason == r);
        (judgements.iter().rposition(|j| fits(j) && !j.unasked))
            .or_else(|| judgements.iter().rposition(fits))
    };
    if let Some(i) = unknown(Some(Reason::Blocked)).or_else(|| unknown(None)) {
        return Some((i, &judgements[i]));
    }
    // A down short of its confirmations is no verdict while an attempt got the page
    // (one whose body broke off): that one stands.
    let last = (judgements.iter().rposition(|j| j.verdict != Verdict::Down))
        .unwrap_or(judgements.len() - 1);
    Some((last, &judgements[last]))
}

/// Whether the judgements so far settle the verdict: a good attempt, or `required`
/// failures of one kind (a confirmed down, or after a bot wall, as much as can be
/// learned). Failures that disagree (one egress's proxy answering a bare 503, another's
/// unable to open a tunnel) may each be its own egress's, so while attempts remain
/// another is made; [`combine`] takes them for a down once none remain.
pub(crate) fn settled(judgements: &[Judgement], required: usize) -> bool {
    let downs = |reason: Reason| {
        judgements
            .iter()
            .filter(|j| j.verdict == Verdict::Down && j.reason == reason)
            .count()
    };
    judgements
        .iter()
        .any(|j| !j.wants_confirmation() || j.confirmed_by_site)
        || judgements
            .iter()
            .filter(|j| j.verdict == Verdict::Down)
            .any(|j| downs(j.reason) >= required.max(1))
}

/// The last of at least `required` failures that are evidence about the site.
fn confirmed_down(judgements: &[Judgement], required: usize) -> Option<usize> {
    let blocked = judgements.iter().any(|j| j.reason == Reason::Blocked);
    let evidence =
        |j: &&Judgement| j.verdict == Verdict::Down && (!blocked || site_answered_badly(j.reason));
    let count = judgements.iter().filter(evidence).count();
    if let Some(i) = judgements
        .iter()
        .rposition(|j| evidence(&j) && j.confirmed_by_site)
    {
        return Some(i);
    }
    if count >= required.max(1) {
        judgements.iter().rposition(|j| evidence(&j))
    } else {
        None
    }
}

/// The attempt whose word a confirmed `down` is told with, when the decisive one (at
/// `decisive`) could not reach the site (no connection, no answer, no name) after an
/// earlier attempt the site answered badly (a status, a page, broken HTTP, a server
/// that speaks no TLS where it should): that earlier one. The site is down either way;
/// what it answered is its own word, and the later failure may be our network's (a
/// way out cut with nothing else asked beside it to tell so).
pub(crate) fn sites_own_word(judgements: &[Judgement], decisive: usize) -> Option<usize> {
    let unreached = judgements
        .get(decisive)
        .is_some_and(|j| matches!(j.reason, Reason::Connect | Reason::Timeout | Reason::Dns));
    if !unreached || judgements[decisive].verdict != Verdict::Down {
        return None;
    }
    let answered = |j: &Judgement| {
        j.verdict == Verdict::Down
            && (site_answered_badly(j.reason) || matches!(j.reason, Reason::Protocol | Reason::Tls))
    };
    judgements[..decisive].iter().rposition(answered)
}

/// Reasons that come from an HTTP answer the site gave: proof that the site itself is
/// failing even when another egress was refused as a bot.
fn site_answered_badly(reason: Reason) -> bool {
    matches!(
        reason,
        Reason::HttpStatus | Reason::BodyTooSmall | Reason::BodyMismatch | Reason::TooManyRedirects
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_down_the_site_answered_is_told_by_its_answer_before_a_later_failure_to_reach_it() {
        let status = Judgement::new(Verdict::Down, Reason::HttpStatus, "503");
        let broken = Judgement::new(Verdict::Down, Reason::Protocol, "two lengths");
        let silent = Judgement::new(Verdict::Down, Reason::Timeout, "no connection");
        let refused = Judgement::new(Verdict::Down, Reason::Connect, "refused");
        assert_eq!(
            sites_own_word(&[status.clone(), silent.clone()], 1),
            Some(0)
        );
        assert_eq!(
            sites_own_word(&[broken.clone(), refused.clone()], 1),
            Some(0)
        );
        // A server that speaks no TLS where it should (an HSTS site's plain port).
        let no_tls = Judgement::new(Verdict::Down, Reason::Tls, "plain HTTP on 443");
        assert_eq!(sites_own_word(&[no_tls, silent.clone()], 1), Some(0));
        assert_eq!(
            sites_own_word(&[status.clone(), broken.clone(), silent.clone()], 2),
            Some(1)
        );
        // Unreached first, answered after: the answer is the decisive one already.
        assert_eq!(sites_own_word(&[silent.clone(), status.clone()], 1), None);
        // Unreached on every attempt, or an answer that was not a down: nothing to tell.
        assert_eq!(sites_own_word(&[silent.clone(), refused], 1), None);
        let slow = Judgement::new(Verdict::Degraded, Reason::Slow, "9 s");
        assert_eq!(sites_own_word(&[slow, silent], 1), None);
    }

    #[test]
    fn an_attempt_that_asked_nothing_does_not_hide_the_answer_before_it() {
        let refused = Judgement::new(Verdict::Unknown, Reason::Blocked, "429, Retry-After 120");
        let mut paused = Judgement::new(Verdict::Unknown, Reason::Blocked, "not asked");
        paused.unasked = true;
        let egress = Judgement::new(Verdict::Unknown, Reason::EgressUnavailable, "proxy");
        assert_eq!(
            combine(&[refused.clone(), paused.clone()], 2).map(|x| x.0),
            Some(0)
        );
        assert_eq!(
            combine(&[paused.clone(), refused.clone()], 2).map(|x| x.0),
            Some(1)
        );
        // Only unasked attempts: the last of them, as before.
        assert_eq!(
            combine(&[paused.clone(), paused.clone()], 2).map(|x| x.0),
            Some(1)
        );
        assert_eq!(combine(&[egress, paused], 2).map(|x| x.0), Some(1));
    }

    /// The farm through squid, its way out cut: attempt 1 got the page (its body then
    /// held open), attempt 2 found no connection through the proxy. One silent attempt
    /// is no confirmed down; the site answered.
    #[test]
    fn one_down_after_an_answer_that_broke_off_is_no_confirmed_down() {
        let cut = Judgement::new(Verdict::Degraded, Reason::Protocol, "held open");
        let silent = Judgement::new(Verdict::Down, Reason::Timeout, "no connection");
        assert!(!settled(&[cut.clone(), silent.clone()], 2));
        assert_eq!(
            combine(&[cut.clone(), silent.clone()], 2).map(|x| (x.0, x.1.verdict)),
            Some((0, Verdict::Degraded))
        );
        assert_eq!(
            combine(&[silent.clone(), cut], 2).map(|x| (x.0, x.1.verdict)),
            Some((1, Verdict::Degraded))
        );
        // Two downs confirm, whatever their reasons.
        let status = Judgement::new(Verdict::Down, Reason::HttpStatus, "503");
        assert_eq!(
            combine(&[status, silent], 2).map(|x| (x.0, x.1.reason)),
            Some((1, Reason::Timeout))
        );
    }

    #[test]
    fn a_body_that_broke_off_once_is_a_blip_and_twice_is_degraded() {
        let cut = Judgement::new(Verdict::Degraded, Reason::Protocol, "broke off");
        let up = Judgement::new(Verdict::Up, Reason::Ok, "b");
        assert!(!settled(std::slice::from_ref(&cut), 2), "asked again");
        assert_eq!(
            combine(&[cut.clone(), up], 2).map(|x| x.1.verdict),
            Some(Verdict::Up)
        );
        assert!(!settled(&[cut.clone(), cut.clone()], 2));
        assert_eq!(
            combine(&[cut.clone(), cut], 2).map(|x| (x.1.verdict, x.1.reason)),
            Some((Verdict::Degraded, Reason::Protocol))
        );
    }

    #[test]
    fn combine_needs_consistent_failure_for_down() {
        let down = Judgement::new(Verdict::Down, Reason::Connect, "a");
        let up = Judgement::new(Verdict::Up, Reason::Ok, "b");
        let blocked = Judgement::new(Verdict::Unknown, Reason::Blocked, "c");
        assert_eq!(
            combine(&[down.clone(), up.clone()], 2).map(|x| x.0),
            Some(1)
        );
        assert_eq!(
            combine(&[up.clone(), down.clone()], 2).map(|x| x.0),
            Some(0)
        );
        assert_eq!(
            combine(&[down.clone(), down.clone()], 2).map(|x| x.1.verdict),
            Some(Verdict::Down)
        );
        assert_eq!(
            combine(&[down.clone(), blocked], 2).map(|x| x.1.verdict),
            Some(Verdict::Unknown)
        );
        // One failure is not confirmed when two are required.
        assert_eq!(
            combine(std::slice::from_ref(&down), 2).map(|x| x.1.verdict),
            Some(Verdict::Down)
        );
        assert!(!settled(std::slice::from_ref(&down), 2));
        assert!(settled(std::slice::from_ref(&down), 1));
        assert!(settled(&[down.clone(), down], 2));
        assert!(combine(&[], 2).is_none());
    }

    /// Hunt M: an egress whose proxy answers its own bare 503 and another whose proxy
    /// cannot open a tunnel are two failures, but not the same one: each may be its own
    /// egress's. They confirmed a `down` while the direct egress, never asked, saw the
    /// site fine. Failures that disagree leave the verdict open while attempts remain.
    #[test]
    fn failures_that_disagree_do_not_settle_a_down() {
        let status = Judgement::new(Verdict::Down, Reason::HttpStatus, "503 via a");
        let tunnel = Judgement::new(Verdict::Down, Reason::Connect, "no tunnel via b");
        let up = Judgement::new(Verdict::Up, Reason::Ok, "direct");
        assert!(!settled(&[status.clone(), tunnel.clone()], 2));
        assert!(settled(
            &[status.clone(), tunnel.clone(), tunnel.clone()],
            2
        ));
        assert_eq!(
            combine(&[status.clone(), tunnel.clone(), up], 2).map(|x| x.1.verdict),
            Some(Verdict::Up)
        );
        // With no attempt left, they are a down all the same.
        assert_eq!(
            combine(&[status, tunnel], 2).map(|x| x.1.verdict),
            Some(Verdict::Down)
        );
    }

    #[test]
    fn a_failed_egress_is_no_evidence_about_the_site() {
        let down = Judgement::new(Verdict::Down, Reason::Connect, "refused");
        let egress = Judgement::new(Verdict::Unknown, Reason::EgressUnavailable, "proxy");
        let seen = [down.clone(), egress.clone()];
        assert!(!settled(&seen, 2));
        let (_, j) = combine(&seen, 2).expect("some");
        assert_eq!(
            (j.verdict, j.reason),
            (Verdict::Unknown, Reason::EgressUnavailable)
        );
        // A third attempt through a working egress confirms it.
        let seen = [down.clone(), egress, down];
        assert!(settled(&seen, 2));
        assert_eq!(combine(&seen, 2).map(|x| x.1.verdict), Some(Verdict::Down));
    }

    #[test]
    fn blocked_is_confirmed_only_by_a_bad_answer_through_another_egress() {
        let blocked = Judgement::new(Verdict::Unknown, Reason::Blocked, "429");
        let refused = Judgement::new(Verdict::Down, Reason::Connect, "refused");
        let error = Judgement::new(Verdict::Down, Reason::HttpStatus, "500");
        let up = Judgement::new(Verdict::Up, Reason::Ok, "200");
        // The server answered us (429) on one path: a refused connection on the other
        // may be the same ban.
        let verdict = |seen: &[Judgement]| combine(seen, 2).map(|(_, j)| (j.verdict, j.reason));
        assert_eq!(
            verdict(&[blocked.clone(), refused.clone(), refused]),
            Some((Verdict::Unknown, Reason::Blocked))
        );
        assert_eq!(
            verdict(&[blocked.clone(), error.clone(), error]),
            Some((Verdict::Down, Reason::HttpStatus))
        );
        assert_eq!(verdict(&[blocked, up]), Some((Verdict::Up, Reason::Ok)));
    }
}
