//! In-flight leases of the shared limiter: a lease is a member of an IP's `inflight`
//! sorted set, scored by its expiry. It is short (`lease`), renewed while its request
//! waits and runs, and removed when the request is done; a worker that dies stops
//! renewing, so its slots free themselves within one lease, however long the request
//! or the wait it had booked.
//!
//! Releases and renewals go through one background task each, in batches: a task and a
//! Redis write per request were a noticeable share of the worker's time under load. The
//! releasing task also tells Redis of each answer ([`scripts::ANSWERED`]), off the
//! request's path: every worker reads its standing with an IP from every worker's answers.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::{scripts, standing};
use crate::config::RedisSettings;
use crate::redis_pool::RedisPool;

/// The shortest lease: a renewal round of many IPs, or a worker short of CPU, may come
/// a few seconds late.
const MIN_LEASE: Duration = Duration::from_secs(10);

/// How long an in-flight lease lasts unrenewed, and so how long a dead worker's slot is
/// held. Renewed every third of it while its request waits or runs, it need not outlive
/// any request: four of `redis.timeout` (at least [`MIN_LEASE`]) leave room for two
/// renewals in a row that fail or come late.
pub(crate) fn lease_for(redis: &RedisSettings) -> Duration {
    (redis.timeout * 4).max(MIN_LEASE)
}

/// Live leases: inflight key → lease ids.
type Live = Mutex<HashMap<String, HashSet<String>>>;

/// Frees an in-flight lease when the request is done.
pub(super) struct Lease {
    releaser: Releaser,
    key: String,
    id: String,
}

impl Lease {
    /// A lease `id` in `key`, renewed from now on until dropped.
    pub(super) fn new(releaser: &Releaser, key: String, id: String) -> Lease {
        releaser
            .lock()
            .entry(key.clone())
            .or_default()
            .insert(id.clone());
        Lease {
            releaser: releaser.clone(),
            key,
            id,
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        {
            let mut live = self.releaser.lock();
            if let Some(ids) = live.get_mut(&self.key) {
                ids.remove(&self.id);
                if ids.is_empty() {
                    live.remove(&self.key);
                }
            }
        }
        // If the release is lost the lease still expires on its own.
        self.releaser
            .release(std::mem::take(&mut self.key), std::mem::take(&mut self.id));
    }
}

/// What the releasing task writes.
enum Note {
    /// A finished lease: its inflight key and id.
    Release(String, String),
    /// An answer from an IP: its standing key.
    Answer(String),
}

/// Hands finished leases to the releasing task and keeps the live ones renewed.
#[derive(Clone)]
pub(super) struct Releaser {
    tx: Option<tokio::sync::mpsc::UnboundedSender<Note>>,
    live: Arc<Live>,
}

impl Releaser {
    /// Starts the releasing and renewing tasks on the current Tokio runtime; without
    /// one, leases are left to expire.
    pub(super) fn start(pool: RedisPool, timeout: Duration, lease: Duration) -> Releaser {
        let live: Arc<Live> = Arc::default();
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return Releaser { tx: None, live };
        };
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Note>();
        runtime.spawn(release_batches(pool.clone(), timeout, lease, rx));
        runtime.spawn(renew(pool, timeout, lease, Arc::downgrade(&live)));
        Releaser { tx: Some(tx), live }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, HashSet<String>>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn release(&self, key: String, id: String) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Note::Release(key, id));
        }
    }

    /// Tells Redis, in the background, that the IP of `standing` (its standing key)
    /// answered.
    pub(super) fn answered(&self, standing: String) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(Note::Answer(standing));
        }
    }
}

/// How long a failed release waits before it is tried again.
const RETRY_RELEASE_AFTER: Duration = Duration::from_secs(1);

/// Removes released leases, whatever has gathered meanwhile in one round trip. Ends
/// when the limiter and every lease are gone.
///
/// A release that fails (Redis away, or failing over) is tried again, once a second,
/// until the lease would have expired anyway: after a failover the replica that took
/// over holds the leases of requests that finished while Redis was away, and each one
/// left there would keep an in-flight slot of its IP booked for the whole lease.
async fn release_batches(
    pool: RedisPool,
    timeout: Duration,
    lease: Duration,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<Note>,
) {
    let mut fresh = Vec::new();
    let told = redis::Script::new(scripts::ANSWERED);
    let mut pending: Vec<(String, String, tokio::time::Instant)> = Vec::new();
    loop {
        // With releases to retry, wait at most RETRY_RELEASE_AFTER for new ones.
        let got = if pending.is_empty() {
            rx.recv_many(&mut fresh, 512).await
        } else {
            tokio::time::timeout(RETRY_RELEASE_AFTER, rx.recv_many(&mut fresh, 512))
                .await
                .unwrap_or(1)
        };
        if got == 0 {
            break;
        }
        let now = tokio::time::Instant::now();
        pending.retain(|(_, _, expires)| *expires > now);
        let mut answers = HashSet::new();
        for note in fresh.drain(..) {
            match note {
                Note::Release(k, id) => pending.push((k, id, now + lease)),
                Note::Answer(standing) => {
                    answers.insert(standing);
                }
            }
        }
        if !answers.is_empty() {
            // Not tried again: an IP that answered once answers again.
            if let Ok(Err(e)) = tokio::time::timeout(timeout, tell(&pool, &told, &answers)).await {
                tracing::debug!(error = %e, "telling redis of answers failed");
            }
        }
        if pending.is_empty() {
            continue;
        }
        let batch: Vec<(String, String)> = pending
            .iter()
            .map(|(k, id, _)| (k.clone(), id.clone()))
            .collect();
        match tokio::time::timeout(timeout, release(&pool, &batch)).await {
            Ok(Ok(())) => pending.clear(),
            Ok(Err(e)) => {
                tracing::debug!(error = %e, leases = pending.len(), "lease release failed; trying again");
            }
            Err(_) => {
                tracing::debug!(
                    leases = pending.len(),
                    "lease release timed out; trying again"
                );
            }
        }
        if !pending.is_empty() {
            tokio::time::sleep(RETRY_RELEASE_AFTER).await;
        }
    }
}

/// Tells Redis that the IPs of these standing keys answered, all at once.
async fn tell(
    pool: &RedisPool,
    script: &redis::Script,
    standings: &HashSet<String>,
) -> Result<(), String> {
    let calls = standings.iter().map(|key| async move {
        let mut c = pool.get().await?;
        let mut inv = script.key(key);
        inv.arg(standing::OK_WINDOW.as_millis() as u64);
        inv.invoke_async::<i64>(&mut c)
            .await
            .map_err(|e| e.to_string())
    });
    futures_util::future::join_all(calls)
        .await
        .into_iter()
        .find_map(Result::err)
        .map_or(Ok(()), Err)
}

async fn release(pool: &RedisPool, batch: &[(String, String)]) -> Result<(), String> {
    if pool.is_cluster() {
        // Leases of different IPs live in different slots: one command each, all in
        // flight at once on the multiplexed connection.
        let calls = batch.iter().map(|(key, id)| async move {
            let mut c = pool.get().await?;
            redis::cmd("ZREM")
                .arg(key)
                .arg(id)
                .query_async::<i64>(&mut c)
                .await
                .map_err(|e| e.to_string())
        });
        return futures_util::future::join_all(calls)
            .await
            .into_iter()
            .find_map(Result::err)
            .map_or(Ok(()), Err);
    }
    let mut conn = pool.get().await?;
    let mut pipe = redis::pipe();
    for (key, id) in batch {
        pipe.cmd("ZREM").arg(key).arg(id).ignore();
    }
    pipe.query_async::<()>(&mut conn)
        .await
        .map_err(|e| e.to_string())
}

/// Every third of a lease, renews every live lease (one script call per IP, all at once
/// on the multiplexed connection: one after another, a round over many IPs at a distant
/// Redis's round trip could outlast the lease). Ends when the limiter and every lease
/// are gone.
async fn renew(pool: RedisPool, timeout: Duration, lease: Duration, live: Weak<Live>) {
    let script = redis::Script::new(scripts::RENEW);
    let every = (lease / 3).max(Duration::from_millis(100));
    loop {
        tokio::time::sleep(every).await;
        let Some(keys) = live_keys(&live) else { return };
        let renewals = keys.iter().map(|key| {
            let renewal = Renewal {
                pool: &pool,
                script: &script,
                lease,
                live: &live,
            };
            renewal.of(key, timeout)
        });
        futures_util::future::join_all(renewals).await;
    }
}

/// What renewing one IP's leases needs.
struct Renewal<'a> {
    pool: &'a RedisPool,
    script: &'a redis::Script,
    lease: Duration,
    live: &'a Weak<Live>,
}

impl Renewal<'_> {
    /// Renews the live leases in `key`, within `timeout`.
    async fn of(self, key: &str, timeout: Duration) {
        // The key's leases are read just before its call: one released since a snapshot
        // of them all would be put back (then released again).
        let Some(ids) = live_ids(self.live, key) else {
            return;
        };
        let call = async {
            let mut conn = self.pool.get().await?;
            let mut inv = self.script.key(key);
            inv.arg(self.lease.as_millis() as u64);
            for id in &ids {
                inv.arg(id);
            }
            inv.invoke_async::<Vec<String>>(&mut conn)
                .await
                .map_err(|e| e.to_string())
        };
        match tokio::time::timeout(timeout, call).await {
            Ok(Ok(back)) if !back.is_empty() => {
                release_ended(self.pool, timeout, key, back, self.live).await;
            }
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "lease renewal failed; it is tried again");
            }
            _ => {}
        }
    }
}

/// The keys with live leases; `None` once the limiter and every lease are gone.
fn live_keys(live: &Weak<Live>) -> Option<Vec<String>> {
    let live = live.upgrade()?;
    let keys = live
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .keys()
        .cloned()
        .collect();
    Some(keys)
}

/// The live leases in `key`, if any.
fn live_ids(live: &Weak<Live>, key: &str) -> Option<Vec<String>> {
    let live = live.upgrade()?;
    let live = live
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    Some(live.get(key)?.iter().cloned().collect())
}

/// Of the leases just put back in `key`, releases at once those whose request ended
/// since its key's leases were read for the renewal (its release may have reached
/// Redis first).
async fn release_ended(
    pool: &RedisPool,
    timeout: Duration,
    key: &str,
    back: Vec<String>,
    live: &Weak<Live>,
) {
    let Some(live) = live.upgrade() else { return };
    let (running, ended): (Vec<String>, Vec<String>) = {
        let live = live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ids = live.get(key);
        back.into_iter()
            .partition(|id| ids.is_some_and(|ids| ids.contains(id)))
    };
    // A lease released after its key's leases were read is no loss: only leases still
    // running tell that Redis lost them.
    if !running.is_empty() {
        tracing::warn!(
            key,
            leases = running.len(),
            "redis lost the in-flight leases of requests still running; put back"
        );
    }
    if !ended.is_empty() {
        let ended: Vec<(String, String)> =
            ended.into_iter().map(|id| (key.to_string(), id)).collect();
        if let Ok(Err(e)) = tokio::time::timeout(timeout, release(pool, &ended)).await {
            // The lease then expires on its own, one lease from now at most.
            tracing::debug!(error = %e, "release of a lease put back failed");
        }
    }
}
