//! The verdict cache: each URL's latest result, kept for `redis.verdict_ttl`, to answer
//! jobs with `max_age_s` and to fill `previous_verdict` / `changed`.
//!
//! The cache is a help, never a dependency: when Redis is slow or gone every call is a
//! miss (logged and counted), and probing goes on.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::config::RedisSettings;
use crate::job::{Report, Verdict};
use crate::metric;
use crate::redis_pool::{RedisConn, RedisPool};

/// Latest verdicts by URL.
pub trait VerdictCache: Send + Sync {
    /// The latest report for `url` if it is younger than `max_age`.
    fn fresh<'a>(&'a self, url: &'a str, max_age: Duration) -> BoxFuture<'a, Option<Report>>;
    /// Stores `report` as the latest for its URL and returns the verdict it replaces.
    fn record<'a>(&'a self, report: &'a Report) -> BoxFuture<'a, Option<Verdict>>;
}

#[derive(Serialize, Deserialize)]
struct Entry {
    at_ms: u64,
    report: Report,
}

/// [`Entry`] as written: the report borrowed, not cloned.
#[derive(Serialize)]
struct EntryRef<'a> {
    at_ms: u64,
    report: &'a Report,
}

/// [`Entry`] as read back by `record`: only the verdict is wanted, so the rest of the
/// report is skipped rather than built.
#[derive(Deserialize)]
struct PreviousEntry {
    report: PreviousReport,
}

#[derive(Deserialize)]
struct PreviousReport {
    verdict: Verdict,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn young_enough(entry: &Entry, max_age: Duration) -> bool {
    now_ms().saturating_sub(entry.at_ms) <= max_age.as_millis() as u64
}

/// A cache in this process (for `picket check` and tests).
#[derive(Default)]
pub struct MemoryCache {
    map: Mutex<HashMap<String, (u64, Report)>>,
}

impl VerdictCache for MemoryCache {
    fn fresh<'a>(&'a self, url: &'a str, max_age: Duration) -> BoxFuture<'a, Option<Report>> {
        Box::pin(async move {
            let map = self
                .map
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let (at_ms, report) = map.get(url)?;
            let entry = Entry {
                at_ms: *at_ms,
                report: report.clone(),
            };
            young_enough(&entry, max_age).then_some(entry.report)
        })
    }

    fn record<'a>(&'a self, report: &'a Report) -> BoxFuture<'a, Option<Verdict>> {
        Box::pin(async move {
            let mut map = self
                .map
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            map.insert(report.url.clone(), (now_ms(), report.clone()))
                .map(|(_, r)| r.verdict)
        })
    }
}

/// The shared cache in Redis: key `{key_prefix}verdict:{url}`, a JSON entry, with TTL.
pub struct RedisCache {
    pool: RedisPool,
    prefix: String,
    ttl: Duration,
    timeout: Duration,
}

impl RedisCache {
    /// A cache over `pool` with the key prefix and TTL of `[redis]`.
    pub fn new(pool: RedisPool, settings: &RedisSettings) -> RedisCache {
        RedisCache {
            pool,
            prefix: settings.key_prefix.clone(),
            ttl: settings.verdict_ttl,
            timeout: settings.timeout,
        }
    }

    /// The key a URL's verdict is kept under.
    pub fn key(&self, url: &str) -> String {
        format!("{}verdict:{url}", self.prefix)
    }

    async fn call<T, F>(&self, what: &'static str, f: F) -> Option<T>
    where
        F: AsyncFnOnce(&mut RedisConn) -> redis::RedisResult<T>,
    {
        let work = async {
            let mut conn = self.pool.get().await?;
            f(&mut conn).await.map_err(|e| e.to_string())
        };
        match tokio::time::timeout(self.timeout, work).await {
            Ok(Ok(v)) => {
                metric::redis_up(true);
                Some(v)
            }
            Ok(Err(e)) => {
                metric::redis_error(what);
                tracing::warn!(error = %e, "redis {what} failed; going on without the cache");
                None
            }
            Err(_) => {
                metric::redis_error(what);
                tracing::warn!("redis {what} timed out; going on without the cache");
                None
            }
        }
    }
}

impl VerdictCache for RedisCache {
    fn fresh<'a>(&'a self, url: &'a str, max_age: Duration) -> BoxFuture<'a, Option<Report>> {
        Box::pin(async move {
            let key = self.key(url);
            let raw: Option<String> = self
                .call("get", async |c| {
                    redis::cmd("GET").arg(&key).query_async(c).await
                })
                .await
                .flatten();
            let entry: Entry = serde_json::from_str(&raw?).ok()?;
            young_enough(&entry, max_age).then_some(entry.report)
        })
    }

    fn record<'a>(&'a self, report: &'a Report) -> BoxFuture<'a, Option<Verdict>> {
        Box::pin(async move {
            let key = self.key(&report.url);
            let value = serde_json::to_string(&EntryRef {
                at_ms: now_ms(),
                report,
            })
            .ok()?;
            let ttl = self.ttl.as_secs().max(1);
            // SET ... GET swaps in one round trip, so two workers never both see the
            // same previous verdict as theirs.
            let old: Option<String> = self
                .call("set", async |c| {
                    redis::cmd("SET")
                        .arg(&key)
                        .arg(&value)
                        .arg("EX")
                        .arg(ttl)
                        .arg("GET")
                        .query_async(c)
                        .await
                })
                .await
                .flatten();
            let old: PreviousEntry = serde_json::from_str(&old?).ok()?;
            Some(old.report.verdict)
        })
    }
}
