//! Whether a write the primary answered will stay. An operator's `SENTINEL FAILOVER`
//! promotes the replica while the old primary goes on answering as one: for about a
//! second and a half (until the Sentinels name the new primary, and the watch leaves
//! the old one) every write it answers is wiped by its resync. A state step lost so
//! tells a key's change twice, or never tells a recovery.
//!
//! Only the Sentinel that runs a manual failover says so while it runs
//! (`failover_in_progress` in its `SENTINEL MASTER` flags, from before it promotes the
//! replica); the others learn of it when it is over. So a write is settled when a round
//! of asking *every* Sentinel, begun after the write was answered, finds them all
//! naming the primary that answered it, and none failing it over. A write answered just
//! before the failover began reaches the replica well before it is promoted (the
//! Sentinel promotes it a tick, about 100 ms, after it flags the failover), unless
//! replication lags by more than that.
//!
//! Rounds are shared: one runs at a time, at most every [`SPACING`], and answers every
//! write answered before it began. Which answers settle what is plain data
//! ([`Named::of`], [`Named::settles`]); [`Settle::settled`] is the one place that asks.

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

/// What one Sentinel says of the primary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Master {
    primary: Primary,
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
            failing_over: flags.split(',').any(|f| f == "failover_in_progress"),
        })
    }
}

/// What one round of the Sentinels said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Named {
    /// Every one that answered names this primary, and none is failing it over.
    Steady(Primary),
    /// One is failing the primary over, or they name different ones.
    Moving,
    /// None answered: no word either way.
    Unheard,
}

impl Named {
    /// The round whose Sentinels said `answers` (`None`: no answer).
    pub(super) fn of(answers: &[Option<Master>]) -> Named {
        let mut heard = answers.iter().flatten();
        let Some(first) = heard.next() else {
            return Named::Unheard;
        };
        let steady = |m: &Master| !m.failing_over && m.primary == first.primary;
        if steady(first) && heard.all(steady) {
            Named::Steady(first.primary.clone())
        } else {
            Named::Moving
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

    /// What Sentinel `i` says; `None` when it does not answer in time, or rests.
    async fn ask(&self, i: usize) -> Option<Master> {
        let mut link = self.links.get(i)?.lock().await;
        if link.resting.is_some_and(|until| Instant::now() < until) {
            return None;
        }
        let within = ANSWER_WITHIN.min(self.settings.timeout);
        let asked = tokio::time::timeout(within, self.master(i, &mut link.conn));
        match asked.await {
            Ok(Ok(master)) => {
                link.resting = None;
                master
            }
            Ok(Err(_)) | Err(_) => {
                *link = Link {
                    conn: None,
                    resting: Some(Instant::now() + REST),
                };
                None
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

    fn reply(ip: &str, port: u16, flags: &str) -> Vec<String> {
        [
            "name",
            "picket",
            "ip",
            ip,
            "port",
            &port.to_string(),
            "runid",
            "x",
        ]
        .into_iter()
        .chain(["flags", flags, "num-slaves", "1"])
        .map(str::to_string)
        .collect()
    }

    fn master(port: u16, flags: &str) -> Option<Master> {
        Master::of(&reply("127.0.0.1", port, flags))
    }

    #[test]
    fn a_reply_names_the_primary_and_whether_it_is_being_failed_over() {
        let steady = master(6379, "master").expect("a master");
        assert_eq!(steady.primary, ("127.0.0.1".to_string(), 6379));
        assert!(!steady.failing_over);
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
        // Over: some already name the new primary, or all do.
        assert!(!all(&[
            master(6380, "master"),
            master(6379, "master"),
            None
        ]));
        assert!(!all(&[master(6380, "master"), master(6380, "master")]));
        // None answering says nothing: the write is taken as before.
        assert!(all(&[None, None, None]));
        assert_eq!(Named::of(&[None, None]), Named::Unheard);
    }
}
