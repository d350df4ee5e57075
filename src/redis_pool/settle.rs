//! Whether a write the primary answered will stay. An operator's `SENTINEL FAILOVER`
//! promotes the replica while the old primary goes on answering as one: for about a
//! second and a half (until the Sentinels name the new primary, and the watch leaves
//! the old one) every write it answers is wiped by its resync. A state step lost so
//! tells a key's change twice, or never tells a recovery.
//!
//! Only the Sentinel that runs a manual failover says so while it runs
//! (`failover_in_progress` in its `SENTINEL MASTER` flags, from before it promotes the
//! replica); the others learn of it when it is over, the leader first naming the new
//! primary under a newer configuration epoch. So a write is settled when a round of
//! asking *every* Sentinel, begun after the write was answered, finds none failing the
//! primary over and the newest epoch heard naming the primary that answered it (a
//! Sentinel left behind by a partition, naming an older primary under an older epoch,
//! holds nothing up). A write answered just
//! before the failover began reaches the replica well before it is promoted (the
//! Sentinel promotes it a tick, about 100 ms, after it flags the failover), unless
//! replication lags by more than that.
//!
//! Rounds are shared: one runs at a time, at most every [`SPACING`], and answers every
//! write answered before it began. Which answers settle what is plain data
//! ([`Named::of`], [`Named::settles`]); [`Settle::named_since`] is the one place that asks.

use std::time::Duration;

use redis::aio::MultiplexedConnection;
use tokio::time::Instant;

use super::connect::{certificates_now, connection_config, one_sentinel_client, Primary};
use crate::config::RedisSettings;

/// Rounds begin at least this far apart: a worker's steps wait this long at most for
/// the next, and each Sentinel is asked no more than 40 times a second by a worker.
const SPACING: Duration = Duration::from_millis(25);

/// How long a Sentinel is given to answer a round: they answer in a millisecond, and
/// every step waiting on the round waits for the slowest.
const ANSWER_WITHIN: Duration = Duration::from_millis(500);

/// A Sentinel that did not answer is left out of the rounds this long: a Sentinel whose
/// host froze would otherwise hold every step for [`ANSWER_WITHIN`].
const REST: Duration = Duration::from_secs(5);

/// How long a Sentinel's last answer stands for it while it does not answer: the
/// Sentinel running a failover, busy or cut off after it flagged it, still holds up the
/// steps on the primary it fails over (a model check saw one such failover let two
/// steps through of 69), until another names the new primary under a newer epoch.
const REMEMBERED: Duration = Duration::from_secs(30);

/// What one Sentinel says of the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Master {
    primary: Primary,
    /// The configuration epoch it names the primary under: a failover raises it.
    epoch: u64,
    /// It is failing the primary over now (`failover_in_progress`).
    failing_over: bool,
}

impl Master {
    /// The reply to `SENTINEL MASTER name`: field names and values, one after another.
    pub(super) fn of(fields: &[String]) -> Option<Master> {
        let field = |name: &str| {
            fields
                .chunks_exact(2)
                .find(|pair| pair[0] == name)
                .map(|pair| pair[1].as_str())
        };
        let port = field("port")?.parse().ok()?;
        let flags = field("flags").unwrap_or_default();
        Some(Master {
            primary: (field("ip")?.to_string(), port),
            epoch: field("config-epoch")
                .and_then(|e| e.parse().ok())
                .unwrap_or(0),
            failing_over: flags.split(',').any(|f| f == "failover_in_progress"),
        })
    }
}

/// What one round of the Sentinels said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Named {
    /// None that answered is failing the primary over, and those of the newest epoch
    /// name this one.
    Steady(Primary),
    /// One is failing the primary over, or those of the newest epoch name different
    /// ones.
    Moving,
    /// None answered: no word either way.
    Unheard,
}

impl Named {
    /// The round whose Sentinels said `answers` (`None`: no answer).
    pub(super) fn of(answers: &[Option<Master>]) -> Named {
        let heard = || answers.iter().flatten();
        let Some(newest) = heard().map(|m| m.epoch).max() else {
            return Named::Unheard;
        };
        // A failover flagged under an older epoch than the newest heard is over.
        if heard().any(|m| m.failing_over && m.epoch == newest) {
            return Named::Moving;
        }
        let mut named = heard().filter(|m| m.epoch == newest).map(|m| &m.primary);
        match named.next() {
            Some(first) if named.all(|p| p == first) => Named::Steady(first.clone()),
            _ => Named::Moving,
        }
    }

    /// Whether a write `on` answered stays. With no Sentinel answering, nothing tells:
    /// it is taken as settled, as every write was before rounds were asked.
    pub(super) fn settles(&self, on: &Primary) -> bool {
        match self {
            Named::Steady(p) => p == on,
            Named::Moving => false,
            Named::Unheard => true,
        }
    }
}

/// One round: when it began, and what it found.
struct Round {
    began: Instant,
    named: Named,
}

/// A connection to one Sentinel, kept open; made again after it fails.
#[derive(Default)]
struct Link {
    conn: Option<MultiplexedConnection>,
    /// Left out of the rounds until then: it did not answer the last time.
    resting: Option<Instant>,
    /// Its last answer, and when it came.
    last: Option<(Master, Instant)>,
}

impl Link {
    /// What it stands for at `now`, when it does not answer: its last answer while that
    /// is younger than [`REMEMBERED`].
    fn remembered(&self, now: Instant) -> Option<Master> {
        let (master, at) = self.last.as_ref()?;
        (now.saturating_duration_since(*at) < REMEMBERED).then(|| master.clone())
    }

    /// It did not answer at `now`: its connection goes, and it rests.
    fn failed(&mut self, now: Instant) {
        (self.conn, self.resting) = (None, Some(now + REST));
        static SAID: crate::log::Rarely = crate::log::Rarely::every(Duration::from_secs(10));
        if let Some(unsaid) = SAID.now() {
            tracing::warn!(
                unsaid,
                "a Redis Sentinel did not answer whether the primary is being failed over; \
                 its last answer stands for it, and it is asked again in 5 s"
            );
        }
    }
}

/// The Sentinels, asked in rounds.
pub(super) struct Settle {
    settings: RedisSettings,
    /// Each Sentinel's link.
    links: Vec<tokio::sync::Mutex<Link>>,
    /// The last round; held while one runs, so that waiting writes share the next.
    last: tokio::sync::Mutex<Option<Round>>,
}

impl Settle {
    /// Rounds of the Sentinels of `settings`; `None` without Sentinels.
    pub(super) fn new(settings: &RedisSettings) -> Option<Settle> {
        (!settings.sentinels.is_empty() && !settings.cluster).then(|| Settle {
            settings: settings.clone(),
            links: settings
                .sentinels
                .iter()
                .map(|_| tokio::sync::Mutex::new(Link::default()))
                .collect(),
            last: tokio::sync::Mutex::new(None),
        })
    }

    /// What a round begun after `since` found.
    pub(super) async fn named_since(&self, since: Instant) -> Named {
        let mut last = self.last.lock().await;
        if let Some(round) = last.as_ref().filter(|r| r.began >= since) {
            return round.named.clone();
        }
        if let Some(round) = last.as_ref() {
            tokio::time::sleep_until(round.began + SPACING).await;
        }
        let began = Instant::now();
        let asked = (0..self.links.len()).map(|i| self.ask(i));
        let answers = futures_util::future::join_all(asked).await;
        let named = Named::of(&answers);
        *last = Some(Round {
            began,
            named: named.clone(),
        });
        named
    }

    /// What Sentinel `i` says; when it does not answer in time, or rests, what it last
    /// said ([`Link::remembered`]).
    async fn ask(&self, i: usize) -> Option<Master> {
        let mut link = self.links.get(i)?.lock().await;
        if link.resting.is_some_and(|until| Instant::now() < until) {
            return link.remembered(Instant::now());
        }
        let within = ANSWER_WITHIN.min(self.settings.timeout);
        let asked = tokio::time::timeout(within, self.master(i, &mut link.conn));
        match asked.await {
            Ok(Ok(master)) => {
                link.resting = None;
                link.last = master.clone().map(|m| (m, Instant::now()));
                master
            }
            Ok(Err(_)) | Err(_) => {
                link.failed(Instant::now());
                link.remembered(Instant::now())
            }
        }
    }

    /// `SENTINEL MASTER` of Sentinel `i`, on `conn` (made when there is none).
    async fn master(
        &self,
        i: usize,
        conn: &mut Option<MultiplexedConnection>,
    ) -> redis::RedisResult<Option<Master>> {
        let settings = &self.settings;
        if conn.is_none() {
            let url = settings.sentinels.get(i).map_or("", String::as_str);
            let client = one_sentinel_client(url, certificates_now(settings)?)?;
            let made = client
                .get_multiplexed_async_connection_with_config(&connection_config(settings))
                .await?;
            *conn = Some(made);
        }
        let Some(c) = conn.as_mut() else {
            return Ok(None);
        };
        let fields: Vec<String> = redis::cmd("SENTINEL")
            .arg("MASTER")
            .arg(&settings.sentinel_master)
            .query_async(c)
            .await?;
        Ok(Master::of(&fields))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(ip: &str, port: u16, flags: &str, epoch: u64) -> Vec<String> {
        let (port, epoch) = (port.to_string(), epoch.to_string());
        let pairs = [
            ("name", "picket"),
            ("ip", ip),
            ("port", &port),
            ("flags", flags),
        ];
        pairs
            .into_iter()
            .chain([("config-epoch", epoch.as_str()), ("num-slaves", "1")])
            .flat_map(|(k, v)| [k.to_string(), v.to_string()])
            .collect()
    }

    fn master(port: u16, flags: &str) -> Option<Master> {
        at_epoch(port, flags, 0)
    }

    fn at_epoch(port: u16, flags: &str, epoch: u64) -> Option<Master> {
        Master::of(&reply("127.0.0.1", port, flags, epoch))
    }

    #[test]
    fn a_sentinel_that_does_not_answer_stands_by_its_last_answer_for_a_while() {
        let now = Instant::now();
        let flagged = master(6379, "master,failover_in_progress");
        let link = |at| Link {
            conn: None,
            resting: Some(now + REST),
            last: flagged.clone().map(|m| (m, at)),
        };
        assert_eq!(link(now).remembered(now + REST), flagged);
        let long_ago = now
            .checked_sub(REMEMBERED)
            .expect("an instant that long ago");
        assert_eq!(link(long_ago).remembered(now), None);
        // Its remembered flag holds the steps up as its answer did.
        let on = ("127.0.0.1".to_string(), 6379);
        let round = [link(now).remembered(now), master(6379, "master"), None];
        assert!(!Named::of(&round).settles(&on));
    }

    #[test]
    fn a_reply_names_the_primary_and_whether_it_is_being_failed_over() {
        let steady = master(6379, "master").expect("a master");
        assert_eq!(steady.primary, ("127.0.0.1".to_string(), 6379));
        assert!(!steady.failing_over);
        assert_eq!(at_epoch(6379, "master", 7).map(|m| m.epoch), Some(7));
        let moving = master(6379, "master,failover_in_progress,force_failover");
        assert!(moving.expect("a master").failing_over);
        assert_eq!(Master::of(&["ip".into(), "127.0.0.1".into()]), None);
    }

    #[test]
    fn a_write_settles_only_when_every_sentinel_heard_names_its_primary_steadily() {
        let on = ("127.0.0.1".to_string(), 6379);
        let all = |answers: &[Option<Master>]| Named::of(answers).settles(&on);
        assert!(all(&[master(6379, "master"), master(6379, "master"), None]));
        // Only the Sentinel running a manual failover knows of it until it is over.
        let leader = master(6379, "master,failover_in_progress,force_failover");
        assert!(!all(&[
            master(6379, "master"),
            leader,
            master(6379, "master")
        ]));
        // Over: the leader names the new primary under a newer epoch, then all do.
        let new = || at_epoch(6380, "master", 1);
        assert!(!all(&[new(), master(6379, "master"), None]));
        assert!(!all(&[new(), new()]));
        // The leader's flag, remembered, is over once another names the new primary.
        let flagged = master(6379, "master,failover_in_progress");
        assert!(Named::of(&[flagged, new(), None]).settles(&("127.0.0.1".to_string(), 6380)));
        // A Sentinel left behind names the old primary under the old epoch: no word.
        let on_new = ("127.0.0.1".to_string(), 6380);
        assert!(Named::of(&[new(), master(6379, "master"), new()]).settles(&on_new));
        // Two of the newest epoch that disagree: no steady word.
        assert!(!all(&[
            at_epoch(6380, "master", 1),
            at_epoch(6379, "master", 1)
        ]));
        // None answering says nothing: the write is taken as before.
        assert!(all(&[None, None, None]));
        assert_eq!(Named::of(&[None, None]), Named::Unheard);
    }
}
