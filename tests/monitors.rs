//! Monitors: each key's state across checks (`CONTRACT.md`, "Monitors"), on the real
//! RabbitMQ and Redis: separate histories per key, `max_age_s` per key, transitions on
//! the changes exchange and nothing else there, no change swallowed by a worker killed
//! at any step, state that outlives `verdict_ttl`, and results that keep flowing while
//! Redis is away.

use std::time::Duration;

use futures_util::StreamExt;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::FieldTable;
use picket::config::Settings;
use picket::job::Verdict;
use picket::state::{replays_change, step, Delivery, Record, RedisState, StateStore};
use serde_json::{json, Value};

use crate::support::ops::{get_ops, metric, wait_readyz};
use crate::support::picket::{base_toml, Client, Worker};
use crate::support::targets::FlippingSite as Site;
use crate::support::worker_process::WorkerProcess;
use crate::support::{libfaketime, unique, RedisServer};

fn toml(extra: &str) -> String {
    format!("{}\n[targets]\nallow_private = true\n{extra}", base_toml())
}

fn settings_of(text: &str) -> Settings {
    Settings::from_toml(text).unwrap_or_else(|e| panic!("settings: {e}\n{text}"))
}

/// A queue bound to the changes exchange with `#`, to see every transition.
async fn changes_queue(c: &Client, s: &Settings) -> String {
    let name = unique("changes");
    c.ch.queue_declare(
        name.as_str().into(),
        QueueDeclareOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("changes queue");
    bind_to_every_change(c, s, &name).await;
    name
}

/// Binds `queue` to the changes exchange with `#`.
async fn bind_to_every_change(c: &Client, s: &Settings, queue: &str) {
    c.ch.queue_bind(
        queue.into(),
        s.amqp.changes_exchange.as_str().into(),
        "#".into(),
        QueueBindOptions::default(),
        FieldTable::default(),
    )
    .await
    .expect("bind changes");
}

/// Routing keys and bodies of whatever arrives on `queue` within `within`.
async fn drain(c: &Client, queue: &str, within: Duration) -> Vec<(String, Value)> {
    let ch = c.conn.create_channel().await.expect("channel");
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            unique("c").as_str().into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("consume");
    let mut out = Vec::new();
    // One deadline for all: a stream that never pauses ends the loop too.
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Some(Ok(d))) = tokio::time::timeout_at(deadline, consumer.next()).await {
        d.acker.ack(BasicAckOptions::default()).await.expect("ack");
        let body = serde_json::from_slice(&d.data).expect("JSON");
        out.push((d.routing_key.as_str().to_string(), body));
    }
    let _ = ch.close(200, "done".into()).await;
    out
}

/// Publishes one job and returns its result.
async fn one(c: &Client, s: &Settings, job: Value) -> Value {
    c.job(s, job).await;
    c.results(s, 1, Duration::from_secs(30)).await.remove(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_monitors_of_one_url_keep_their_own_histories() {
    let site = Site::start("127.0.40.1").await;
    let s = settings_of(&toml(""));
    let c = Client::connect().await;
    c.declare(&s).await;
    let w = Worker::start(&s);
    let alpha = json!({"url": site.url, "expect": {"body_contains": "alpha"}});
    let omega = json!({"url": site.url, "expect": {"body_contains": "omega"}});
    for round in 1..=3u64 {
        let a = one(&c, &s, alpha.clone()).await;
        let o = one(&c, &s, omega.clone()).await;
        assert_eq!(
            (a["verdict"].as_str(), o["verdict"].as_str()),
            (Some("up"), Some("down"))
        );
        assert_ne!(a["key"], o["key"], "different expectations, different keys");
        assert_eq!(a["changed"], false, "round {round}: {a}");
        assert_eq!(o["changed"], false, "round {round}: {o}");
        assert_eq!(
            (a["streak"].as_u64(), o["streak"].as_u64()),
            (Some(round), Some(round))
        );
        if round > 1 {
            assert_eq!(a["previous_verdict"], "up");
            assert_eq!(o["previous_verdict"], "down");
        }
        assert!(a["since"].is_string() && o["since"].is_string());
    }
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_key_given_to_two_urls_is_one_history_and_max_age_keeps_to_its_key() {
    let up = Site::start("127.0.40.2").await;
    let down = Site::start("127.0.40.3").await;
    down.set_up(false);
    let s = settings_of(&toml(""));
    let c = Client::connect().await;
    c.declare(&s).await;
    let w = Worker::start(&s);
    let first = one(&c, &s, json!({"url": up.url, "key": "county-7"})).await;
    assert_eq!(
        (first["verdict"].as_str(), first["key"].as_str()),
        (Some("up"), Some("county-7"))
    );
    let second = one(&c, &s, json!({"url": down.url, "key": "county-7"})).await;
    assert_eq!(second["previous_verdict"], "up");
    assert_eq!(second["changed"], true);
    // A verdict of the same URL judged under other expectations is never served.
    let strict = json!({"url": up.url, "max_age_s": 600, "expect": {"body_contains": "omega"}});
    let r = one(&c, &s, strict).await;
    assert_eq!(
        (r["cached"].as_bool(), r["verdict"].as_str()),
        (Some(false), Some("down"))
    );
    // The same check again is served from its own key, but not to another URL under
    // the key ("a verdict for the same URL").
    let county = |url: &str| json!({"url": url, "key": "county-7", "max_age_s": 600});
    let again = one(&c, &s, county(&down.url)).await;
    let other = one(&c, &s, county(&up.url)).await;
    let served = |r: &Value| {
        (
            r["cached"].as_bool(),
            r["verdict"].as_str().map(String::from),
        )
    };
    assert_eq!(served(&again), (Some(true), Some("down".into())));
    assert_eq!(again["changed"], false, "a served verdict changes nothing");
    assert_eq!(served(&other), (Some(false), Some("up".into())));
    w.shutdown().await;
}

/// Hunt P: monitors sharing a key (or a key given that is another check's derived key)
/// but not their `expect` were served, under `max_age_s`, a verdict judged under another
/// job's `expect`: `up` for a site answering 503 to a job expecting 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_age_serves_no_verdict_judged_under_another_jobs_expect() {
    let site = Site::start("127.0.40.10").await;
    site.set_up(false);
    let s = settings_of(&toml(""));
    let c = Client::connect().await;
    c.declare(&s).await;
    let w = Worker::start(&s);
    let key = unique("county");
    let lenient = json!({"url": site.url, "key": key, "expect": {"status": [503]}});
    let a = one(&c, &s, lenient).await;
    assert_eq!(a["verdict"], "up", "{a}");
    let served = |r: &Value| {
        (
            r["cached"].as_bool(),
            r["verdict"].as_str().map(String::from),
        )
    };
    let default = json!({"url": site.url, "key": key, "max_age_s": 600});
    let b = one(&c, &s, default).await;
    assert_eq!(served(&b), (Some(false), Some("down".into())), "{b}");
    let body = json!({"url": site.url, "key": key, "max_age_s": 600,
                      "expect": {"status": [503], "body_contains": "omega"}});
    let r = one(&c, &s, body.clone()).await;
    assert_eq!(served(&r), (Some(false), Some("down".into())), "{r}");
    let r = one(&c, &s, body).await;
    assert_eq!(
        served(&r),
        (Some(true), Some("down".into())),
        "its own: {r}"
    );

    // A key given that is another check's derived key.
    let derived = one(
        &c,
        &s,
        json!({"url": site.url, "expect": {"status": [503]}}),
    )
    .await;
    assert_eq!(derived["verdict"], "up", "{derived}");
    let squatter = json!({"url": site.url, "key": derived["key"], "max_age_s": 600});
    let r = one(&c, &s, squatter).await;
    assert_eq!(served(&r), (Some(false), Some("down".into())), "{r}");
    w.shutdown().await;
}

/// A report kept by a worker of an earlier version has no fingerprint: which `expect`
/// judged it cannot be told, so it is served to no job (each checks instead).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_report_without_a_fingerprint_is_served_to_no_job() {
    let s = settings_of(&toml(""));
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let store = RedisState::new(pool, &s.redis);
    let key = unique("older");
    let first = Delivery {
        id: "j1",
        redelivered: false,
    };
    let up = report_of(&key, "j1", Verdict::Up);
    assert!(store.step(&up, Some("sha256:a"), first).await.is_some());
    let age = Duration::from_secs(600);
    assert!(
        store.fresh(&key, "sha256:a", age).await.is_some(),
        "its own"
    );
    assert!(
        store.fresh(&key, "sha256:b", age).await.is_none(),
        "another's"
    );

    let (_, report_key) = store.keys(&key);
    let mut conn = redis::Client::open(s.redis.url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let raw: String = redis::cmd("GET")
        .arg(&report_key)
        .query_async(&mut conn)
        .await
        .expect("the kept report");
    let mut kept: Value = serde_json::from_str(&raw).expect("kept JSON");
    assert_eq!(kept["fingerprint"], "sha256:a", "{kept}");
    kept.as_object_mut().expect("object").remove("fingerprint");
    let _: () = redis::cmd("SET")
        .arg(&report_key)
        .arg(kept.to_string())
        .arg("KEEPTTL")
        .query_async(&mut conn)
        .await
        .expect("set");
    assert!(store.fresh(&key, "sha256:a", age).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flipping_site_puts_exactly_its_transitions_on_the_changes_exchange() {
    let site = Site::start("127.0.40.4").await;
    let s = settings_of(&toml(""));
    let c = Client::connect().await;
    c.declare(&s).await;
    let changes = changes_queue(&c, &s).await;
    let w = Worker::start(&s);
    let job = json!({"url": site.url});
    let mut verdicts = Vec::new();
    for up in [true, true, false, false, true, true] {
        site.set_up(up);
        verdicts.push(one(&c, &s, job.clone()).await["verdict"].clone());
    }
    assert_eq!(
        verdicts,
        ["up", "up", "down", "down", "up", "up"].map(Value::from)
    );
    let got = drain(&c, &changes, Duration::from_secs(2)).await;
    let keys: Vec<&str> = got.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["up.down", "down.up"], "{got:?}");
    assert_eq!(got[0].1["verdict"], "down");
    assert_eq!(got[0].1["streak"], 1);
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_outlives_the_verdict_ttl() {
    let site = Site::start("127.0.40.5").await;
    let s = settings_of(&toml("").replace("[redis]\n", "[redis]\nverdict_ttl = \"2s\"\n"));
    assert_eq!(s.redis.verdict_ttl, Duration::from_secs(2));
    let c = Client::connect().await;
    c.declare(&s).await;
    let w = Worker::start(&s);
    let job = json!({"url": site.url});
    assert_eq!(one(&c, &s, job.clone()).await["verdict"], "up");
    tokio::time::sleep(Duration::from_secs(4)).await;
    site.set_up(false);
    let r = one(&c, &s, job).await;
    assert_eq!(
        (r["previous_verdict"].as_str(), r["changed"].as_bool()),
        (Some("up"), Some(true))
    );
    w.shutdown().await;
}

/// Kills a worker process at `point` of the job that changes the key's verdict, then
/// lets a new worker take the job again: the change is announced, and every result of
/// that job says the same previous verdict.
async fn no_change_is_lost_when_killed(point: &str, ip: &str) {
    let site = Site::start(ip).await;
    let text = toml("");
    let s = settings_of(&text);
    let c = Client::connect().await;
    c.declare(&s).await;
    let changes = changes_queue(&c, &s).await;
    let first = WorkerProcess::plain(&text);
    assert_eq!(
        one(&c, &s, json!({"url": site.url, "id": "before"})).await["verdict"],
        "up"
    );
    first.terminate().await;

    site.set_up(false);
    let hook = format!("{point}:the-change");
    let mut doomed = WorkerProcess::start(&text, &[("PICKET_TEST_CRASH", &hook)]);
    c.job(&s, json!({"url": site.url, "id": "the-change"}))
        .await;
    let status = doomed.exited(Duration::from_secs(30)).await;
    assert!(!status.success(), "the hook ended the worker: {status:?}");

    let next = WorkerProcess::plain(&text);
    // Killed after publishing, the job was answered once already and is answered again.
    let expected = if point == "after_publish" { 2 } else { 1 };
    let mut results = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while results
        .iter()
        .filter(|r: &&Value| r["job_id"] == "the-change")
        .count()
        < expected
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no result for the job"
        );
        results.extend(c.results(&s, 1, Duration::from_secs(30)).await);
    }
    next.terminate().await;
    // The worker has stopped: every result it published is on the queue by now.
    let rest = drain(&c, &s.amqp.results_queue, Duration::from_secs(1)).await;
    results.extend(rest.into_iter().map(|(_, body)| body));
    let ours: Vec<&Value> = results
        .iter()
        .filter(|r| r["job_id"] == "the-change")
        .collect();
    for r in &ours {
        assert_eq!(
            (r["verdict"].as_str(), r["previous_verdict"].as_str()),
            (Some("down"), Some("up")),
            "{r}"
        );
        assert_eq!(r["changed"], true, "{r}");
    }
    let announced = drain(&c, &changes, Duration::from_secs(2)).await;
    assert!(!announced.is_empty(), "the change up → down was swallowed");
    for (key, body) in &announced {
        assert_eq!(
            (key.as_str(), body["job_id"].as_str()),
            ("up.down", Some("the-change"))
        );
    }
    println!(
        "killed {point}: {} result(s), {} announcement(s) of the change",
        ours.len(),
        announced.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_state_and_publish_loses_no_change() {
    no_change_is_lost_when_killed("after_state", "127.0.40.6").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_between_publish_and_ack_loses_no_change() {
    no_change_is_lost_when_killed("after_publish", "127.0.40.7").await;
}

/// Hunt P. A job takes its key `up → down`, publishes it, and its worker dies before the
/// ack; another job of the key steps it without moving it, and the site comes back
/// before the broker hands the job out again. The redelivery, probed again, told
/// `down → up` under the same `job_id`: a second, different change for one job, which a
/// subscriber that drops a job's repeats drops. Every result of the job now tells its
/// first delivery's change, and the key's next job tells the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redelivery_after_another_job_stepped_tells_no_second_change() {
    let site = Site::start("127.0.40.11").await;
    let text = toml("");
    let s = settings_of(&text);
    let c = Client::connect().await;
    c.declare(&s).await;
    let changes = changes_queue(&c, &s).await;
    let key = unique("redelivered");
    let job = |id: &str| json!({"url": site.url, "id": id, "key": key});
    let first = WorkerProcess::plain(&text);
    assert_eq!(one(&c, &s, job("before")).await["verdict"], "up");
    first.terminate().await;

    site.set_up(false);
    let hook = [("PICKET_TEST_CRASH", "after_publish:the-change")];
    let mut doomed = WorkerProcess::start(&text, &hook);
    c.job(&s, job("the-change")).await;
    let status = doomed.exited(Duration::from_secs(30)).await;
    assert!(!status.success(), "the hook ended the worker: {status:?}");
    // Another worker's job of the key steps it, `down` after `down`, before the
    // redelivery; then the site comes back.
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let other = Delivery {
        id: "other",
        redelivered: false,
    };
    let stepped = RedisState::new(pool, &s.redis)
        .step(&report_of(&key, "other", Verdict::Down), None, other)
        .await;
    assert_eq!(stepped.map(|a| a.previous), Some(Some(Verdict::Down)));
    site.set_up(true);

    let next = WorkerProcess::plain(&text);
    let mut results = c.results(&s, 2, Duration::from_secs(30)).await;
    assert_eq!(one(&c, &s, job("after")).await["verdict"], "up");
    next.terminate().await;
    results.extend(
        drain(&c, &s.amqp.results_queue, Duration::from_secs(1))
            .await
            .into_iter()
            .map(|(_, b)| b),
    );
    for r in results.iter().filter(|r| r["job_id"] == "the-change") {
        assert_eq!(
            (
                r["verdict"].as_str(),
                r["previous_verdict"].as_str(),
                r["changed"].as_bool()
            ),
            (Some("down"), Some("up"), Some(true)),
            "every result of the job tells its first delivery's change: {r}"
        );
    }
    let announced: Vec<(String, String)> = drain(&c, &changes, Duration::from_secs(2))
        .await
        .into_iter()
        .map(|(k, b)| (k, b["job_id"].as_str().unwrap_or_default().to_string()))
        .collect();
    let told = |k: &str, id: &str| announced.contains(&(k.to_string(), id.to_string()));
    assert!(
        told("up.down", "the-change") && told("down.up", "after"),
        "the outage by its job, the recovery by the next: {announced:?}"
    );
    assert!(
        announced
            .iter()
            .all(|(k, id)| id != "the-change" || k == "up.down"),
        "one job, one change: {announced:?}"
    );
}

/// A publisher that sends the same job again and again, with no message id of its own:
/// every copy has the same delivery id. A copy handed out and handed back before it was
/// answered (a worker stopped with deliveries it had not started) was answered with the
/// previous copy's report: `up` from minutes ago while the site was down, and the change
/// up → down announced as down → up again. (The previous copy's answer is made two
/// minutes old in Redis: one given within a minute is taken for this copy's own, as a
/// redelivery after a crash would need.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_copy_of_a_repeated_job_handed_back_unanswered_is_checked_afresh() {
    let site = Site::start("127.0.40.20").await;
    let s = settings_of(&toml(""));
    let c = Client::connect().await;
    c.declare(&s).await;
    let job = json!({"url": site.url, "key": unique("repeated")});
    let worker = Worker::start(&s);
    site.set_up(false);
    assert_eq!(one(&c, &s, job.clone()).await["verdict"], "down");
    site.set_up(true);
    assert_eq!(one(&c, &s, job.clone()).await["verdict"], "up");
    worker.shutdown().await;
    two_minutes_ago(&s, job["key"].as_str().expect("key")).await;

    site.set_up(false);
    c.job(&s, job.clone()).await;
    // Handed out and back, unanswered: the broker marks it redelivered.
    let ch = c.conn.create_channel().await.expect("channel");
    let got = ch
        .basic_get(
            s.amqp.jobs_queue.as_str().into(),
            lapin::options::BasicGetOptions { no_ack: false },
        )
        .await
        .expect("basic.get");
    assert!(got.is_some(), "the copy was in the queue");
    ch.close(200, "handed back".into()).await.expect("close");
    let worker = Worker::start(&s);
    let r = c.results(&s, 1, Duration::from_secs(30)).await.remove(0);
    worker.shutdown().await;
    assert_eq!(
        (r["verdict"].as_str(), r["previous_verdict"].as_str()),
        (Some("down"), Some("up")),
        "{r}"
    );
    assert_eq!(r["changed"], true, "{r}");
}

/// Moves the times of `key`'s memo and kept report two minutes back, as if its last
/// answer had been given then.
async fn two_minutes_ago(s: &Settings, key: &str) {
    const BACK: u64 = 120_000;
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let (record_key, report_key) = RedisState::new(pool, &s.redis).keys(key);
    let client = redis::Client::open(s.redis.url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let raw: String = redis::cmd("GET")
        .arg(&record_key)
        .query_async(&mut conn)
        .await
        .expect("the record");
    let mut record: Value = serde_json::from_str(&raw).expect("record JSON");
    for entry in record["m"].as_array_mut().expect("memo") {
        entry[5] = json!(entry[5].as_u64().expect("when") - BACK);
    }
    let raw: String = redis::cmd("GET")
        .arg(&report_key)
        .query_async(&mut conn)
        .await
        .expect("the kept report");
    let mut kept: Value = serde_json::from_str(&raw).expect("kept JSON");
    kept["at"] = json!(kept["at"].as_u64().expect("at") - BACK);
    for (k, v) in [(&record_key, record), (&report_key, kept)] {
        let _: () = redis::cmd("SET")
            .arg(k)
            .arg(v.to_string())
            .arg("KEEPTTL")
            .query_async(&mut conn)
            .await
            .expect("set");
    }
    // The reports of its changes, kept for redeliveries (`{prefix}told:{H}`).
    let told_key = record_key.replacen("state:", "told:", 1);
    let told: Vec<(String, String)> = redis::cmd("HGETALL")
        .arg(&told_key)
        .query_async(&mut conn)
        .await
        .expect("the told reports");
    for (delivery, raw) in told {
        let mut kept: Value = serde_json::from_str(&raw).expect("told JSON");
        kept["at"] = json!(kept["at"].as_u64().expect("at") - BACK);
        let _: () = redis::cmd("HSET")
            .arg(&told_key)
            .arg(delivery)
            .arg(kept.to_string())
            .query_async(&mut conn)
            .await
            .expect("hset");
    }
}

/// A Redis of the test's own (to stop, or to fill), a site on `ip` that can go down, and
/// settings that use that Redis with a short timeout.
async fn on_a_private_redis(ip: &str) -> (RedisServer, Site, Settings) {
    let (redis, site, text) = private_redis_toml(ip).await;
    (redis, site, settings_of(&text))
}

/// A private Redis, a site on `ip`, and a configuration's text using them.
async fn private_redis_toml(ip: &str) -> (RedisServer, Site, String) {
    let redis = tokio::task::spawn_blocking(RedisServer::launch)
        .await
        .expect("join")
        .expect("private redis");
    let site = Site::start(ip).await;
    let text = toml("").replace(
        &format!("url = \"{}\"", crate::support::servers().redis_url),
        &format!("url = \"{}\"\ntimeout = \"500ms\"", redis.url()),
    );
    (redis, site, text)
}

/// Hunt T: Redis closing a connection that sat idle (its `timeout`, or a proxy's in
/// between, or `CLIENT KILL`) failed the worker's next call on it ("broken pipe")
/// instead of making a new connection: a `max_age_s` job was probed again instead of
/// served, `picket_redis_errors_total` rose, and the limiter fell back to its local
/// share after every quiet spell. A command sent on a connection already closed never
/// ran: it is sent again on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_redis_closed_while_idle_is_made_again_not_failed() {
    let (redis, site, text) = private_redis_toml("127.0.40.25").await;
    let _admin = closing_idle_clients(&redis).await;
    let s = settings_of(&text);
    let c = Client::connect().await;
    c.declare(&s).await;
    let w = WorkerProcess::plain(&text);
    let job = json!({"url": site.url, "max_age_s": 600});
    assert_eq!(one(&c, &s, job.clone()).await["cached"], false);
    for gap in 1..=2 {
        // Past Redis's timeout, within the worker's own health check (10 s).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let r = one(&c, &s, job.clone()).await;
        assert_eq!(r["cached"], true, "after quiet spell {gap}: {r}");
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let other = json!({"url": site.url, "key": format!("idle-{gap}")});
        assert_eq!(one(&c, &s, other).await["verdict"], "up");
    }
    let metrics = get_ops(s.http.listen, "/metrics")
        .await
        .expect("/metrics")
        .1;
    let errors: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("picket_redis_errors_total"))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .sum();
    let log = w.log_text();
    assert_eq!(errors, 0.0, "{}", w.log_tail(10));
    assert!(!log.contains("limiting locally"), "{}", w.log_tail(10));
    w.terminate().await;
}

/// Hunt T: with Redis gone, every job wrote two or three warnings of its own ("redis
/// state step failed; going on without the state", "... not answered ...", "redis get
/// failed ..."): 3,400 lines a second through a backlog, gigabytes an hour, and the
/// WARN level useless during the incident, where the limiter says the outage once.
/// The fault is said a few times; `picket_redis_errors_total` counts every call.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_outage_is_said_a_few_times_not_once_per_job() {
    let (redis, site, text) = private_redis_toml("127.0.40.24").await;
    let s = settings_of(&text);
    let c = Client::connect().await;
    c.declare(&s).await;
    let w = WorkerProcess::plain(&text);
    assert_eq!(one(&c, &s, json!({"url": site.url})).await["verdict"], "up");
    redis.stop();
    for n in 0..40 {
        let key = format!("outage-{n}");
        c.job(&s, json!({"url": site.url, "key": key, "max_age_s": 60}))
            .await;
    }
    let results = c.results(&s, 40, Duration::from_secs(90)).await;
    assert_eq!(results.len(), 40);
    let log = w.log_text();
    let said: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("redis"))
        .collect();
    assert!(
        said.len() <= 8,
        "{} warnings of Redis for 40 jobs:\n{}",
        said.len(),
        said.iter().take(12).copied().collect::<Vec<_>>().join("\n")
    );
    w.terminate().await;
}

/// Runs `command` (no arguments) on `redis` as its administrator would.
async fn admin_command(redis: &RedisServer, command: &str) {
    let mut admin = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let _: () = redis::cmd(command)
        .query_async(&mut admin)
        .await
        .unwrap_or_else(|e| panic!("{command}: {e}"));
}

/// `picket_redis_data_lost_total` of the worker at `ops`, after a `/readyz` (ready), which
/// looks at Redis's mark.
async fn data_lost_after_a_look(ops: std::net::SocketAddr) -> f64 {
    let (code, _) = get_ops(ops, "/readyz").await.expect("readyz");
    assert_eq!(code, 200);
    let (_, text) = get_ops(ops, "/metrics").await.expect("metrics");
    metric(&text, "picket_redis_data_lost_total").unwrap_or(0.0)
}

/// Hunt P: Redis losing its data while it answers (a restart without persistence, a
/// `FLUSHALL`, a failover to a replica that had not synced) swallowed the changes
/// pending then and started every key afresh, with no word: results went on saying
/// `previous_verdict: null`. The worker says so, once per loss: a warning and
/// `picket_redis_data_lost_total`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_losing_its_data_is_said_once() {
    let (redis, _site, s) = on_a_private_redis("127.0.40.12").await;
    let w = Worker::start(&s);
    wait_readyz(w.ops, 200, Duration::from_secs(20)).await;
    let lost = || data_lost_after_a_look(w.ops);
    assert_eq!(lost().await, 0.0, "nothing lost yet");
    admin_command(&redis, "FLUSHALL").await;
    assert_eq!(lost().await, 1.0, "the loss is said");
    assert_eq!(lost().await, 1.0, "once");
    w.shutdown().await;
}

/// Hunt W: a Redis that saves only snapshots (Debian's `redis.conf`: `save 3600 1 …`, no
/// AOF), restarted after a crash, loads its last snapshot: every key's state goes back
/// in time, and changes already told are told again. The epoch mark was in the
/// snapshot too, so nothing was said; Redis going back is a loss like the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_going_back_to_an_older_snapshot_is_said() {
    let (redis, _site, text) = private_redis_toml("127.0.40.13").await;
    // A process of its own: its metrics are no other test's.
    let w = WorkerProcess::plain(&text);
    let ops = settings_of(&text).http.listen;
    wait_readyz(ops, 200, Duration::from_secs(20)).await;
    let lost = || data_lost_after_a_look(ops);
    admin_command(&redis, "SAVE").await;
    // Checks after the snapshot, which it does not hold.
    for _ in 0..3 {
        assert_eq!(lost().await, 0.0, "nothing lost yet");
    }
    // A crash, and a restart that loads the snapshot.
    let redis = tokio::task::spawn_blocking(move || {
        redis.restart();
        redis
    })
    .await
    .expect("restarted");
    wait_readyz(ops, 200, Duration::from_secs(10)).await;
    assert_eq!(lost().await, 1.0, "the return to the snapshot is said");
    assert_eq!(lost().await, 1.0, "once");
    w.terminate().await;
    drop(redis);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn results_flow_without_state_while_redis_is_away_and_state_resumes() {
    let (redis, site, s) = on_a_private_redis("127.0.40.8").await;
    assert_eq!(s.redis.url, redis.url());
    let c = Client::connect().await;
    c.declare(&s).await;
    let w = Worker::start(&s);
    let job = json!({"url": site.url});
    assert_eq!(one(&c, &s, job.clone()).await["streak"], 1);
    assert_eq!(one(&c, &s, job.clone()).await["streak"], 2);
    redis.stop();
    site.set_up(false);
    for _ in 0..2 {
        let r = one(&c, &s, job.clone()).await;
        assert_eq!(r["verdict"], "down");
        assert!(r["previous_verdict"].is_null(), "{r}");
        assert_eq!(
            (r["changed"].as_bool(), r["streak"].as_u64()),
            (Some(false), Some(1))
        );
        assert!(r["since"].is_null());
    }
    redis.start();
    site.set_up(true);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let r = one(&c, &s, job.clone()).await;
        if !r["previous_verdict"].is_null() {
            // Redis came back empty: the key starts again, never with a false change.
            assert_eq!(r["changed"], false, "{r}");
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "state never resumed"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    w.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_out_of_memory_neither_stops_results_nor_swallows_a_change() {
    // Redis at its maxmemory with the default policy (noeviction) refuses every write
    // with an OOM error while reads and PING still work: the limiter's and the state's
    // scripts fail on each call. Results must keep coming, and the change that happened
    // meanwhile must be announced once Redis takes writes again (its state still holds
    // the verdict from before).
    let (redis, site, s) = on_a_private_redis("127.0.40.9").await;
    let c = Client::connect().await;
    c.declare(&s).await;
    let changes = changes_queue(&c, &s).await;
    let w = Worker::start(&s);
    let job = json!({"url": site.url});
    assert_eq!(one(&c, &s, job.clone()).await["verdict"], "up");
    let mut admin = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let set_max = |bytes: &'static str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .to_owned()
    };
    let _: () = set_max("1")
        .query_async(&mut admin)
        .await
        .expect("maxmemory 1");
    // It answers PING, but takes nothing the worker writes: as good as no Redis.
    let (code, body) = get_ops(w.ops, "/readyz").await.expect("readyz");
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("redis=false"), "{body}");
    site.set_up(false);
    let r = one(&c, &s, job.clone()).await;
    assert_eq!(r["verdict"], "down", "{r}");
    assert_eq!(r["changed"], false, "no state, no claim of a change: {r}");
    // Hunt W (E7): the key's kept `up` stayed while `down` could not be written, and a
    // `max_age_s` job was served it 3 s after this worker published `down`.
    let served = one(&c, &s, json!({"url": site.url, "max_age_s": 300})).await;
    assert_eq!(
        (served["verdict"].as_str(), served["cached"].as_bool()),
        (Some("down"), Some(false)),
        "a verdict older than one published is served: {served}"
    );
    let _: () = set_max("0")
        .query_async(&mut admin)
        .await
        .expect("maxmemory 0");
    let r = one(&c, &s, job.clone()).await;
    assert_eq!(
        (r["previous_verdict"].as_str(), r["changed"].as_bool()),
        (Some("up"), Some(true)),
        "the change made during the refusal is announced after it: {r}"
    );
    let seen = drain(&c, &changes, Duration::from_secs(2)).await;
    let keys: Vec<&str> = seen.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["up.down"], "{seen:?}");
    w.shutdown().await;
}

/// Redis deployments restrict commands with ACLs. A user allowed PING but not scripts
/// (each limiter and state call is one), or not `TIME` (the state's and the limiter's
/// clock), leaves the worker on its fallback and without
/// state at every call: `/readyz` says Redis is not there, and why is logged; a Redis
/// that may evict keys under memory pressure (its policy not `noeviction`) drops
/// states and limits silently: `picket_redis_evicts` says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_refusing_scripts_is_not_ready_and_one_that_evicts_is_said() {
    let (redis, site, text) = private_redis_toml("127.0.40.21").await;
    let mut admin = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let acl = |rules: &[&str]| {
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg("picket")
            .arg("reset")
            .arg("on")
            .arg(">pw");
        for r in rules {
            cmd.arg(*r);
        }
        cmd
    };
    let _: () = acl(&["~*", "&*", "+@all", "-@scripting"])
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let user = redis.url().replacen("redis://", "redis://picket:pw@", 1);
    let text = text.replace(redis.url(), &user);
    let s = settings_of(&text);
    let c = Client::connect().await;
    c.declare(&s).await;
    // A process of its own: `picket_redis_evicts` is one gauge per process, and another
    // test's worker in this one set it to its own Redis's 0 (a CI run).
    let w = WorkerProcess::plain(&text);
    let ops = s.http.listen;
    assert_eq!(one(&c, &s, json!({"url": site.url})).await["verdict"], "up");
    let (code, body) = get_ops(ops, "/readyz").await.expect("readyz");
    assert_eq!(code, 503, "scripts refused: {body}");
    assert!(body.contains("redis=false"), "{body}");
    // Hunt W: with `TIME` refused every state step fails (its times are Redis's), and
    // with `PEXPIRE` refused a step telling a change wrote the key's verdict, then
    // failed on its last command (Redis undoes no script's writes) and the change went
    // untold; a script that only writes still ran, and the worker said it was ready.
    for refused in ["-time", "-pexpire"] {
        let _: () = acl(&["~*", "&*", "+@all", refused])
            .query_async(&mut admin)
            .await
            .expect("ACL SETUSER");
        let (code, body) = get_ops(ops, "/readyz").await.expect("readyz");
        assert_eq!(code, 503, "{refused}: {body}");
        assert!(body.contains("redis=false"), "{body}");
    }
    let _: () = acl(&["~*", "&*", "+@all"])
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let (code, body) = get_ops(ops, "/readyz").await.expect("readyz");
    assert_eq!(code, 200, "scripts allowed: {body}");

    let config = |name: &str, value: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg(name)
            .arg(value)
            .to_owned()
    };
    let evicts = || async move {
        let (_, text) = get_ops(ops, "/metrics").await.expect("metrics");
        metric(&text, "picket_redis_evicts")
    };
    assert_eq!(evicts().await, Some(0.0), "noeviction, no maxmemory");
    for (name, value) in [("maxmemory", "100mb"), ("maxmemory-policy", "allkeys-lru")] {
        let _: () = config(name, value)
            .query_async(&mut admin)
            .await
            .expect("CONFIG SET");
    }
    // Asked when /readyz is.
    let _ = get_ops(ops, "/readyz").await;
    assert_eq!(evicts().await, Some(1.0), "allkeys-lru at 100mb");
    // Hunt H: the ACL most guides give (`-@dangerous`) refuses INFO. Whether Redis may
    // evict is then unknown, and says so (-1), instead of the last reading or nothing.
    let _: () = acl(&["~*", "&*", "+@all", "-@dangerous"])
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    let (code, body) = get_ops(ops, "/readyz").await.expect("readyz");
    assert_eq!(code, 200, "-@dangerous leaves scripts: {body}");
    assert_eq!(evicts().await, Some(-1.0), "INFO refused: unknown");
    w.terminate().await;
}

/// A private Redis (500 ms timeout) whose key `key` took one step, `up` by `first`; the
/// store over it, and a connection of the test's own to make Redis late.
async fn a_stepped_key(
    ip: &str,
    key: &str,
    first: Delivery<'_>,
) -> (RedisServer, RedisState, redis::aio::MultiplexedConnection) {
    let (redis, _site, s) = on_a_private_redis(ip).await;
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let store = RedisState::new(pool, &s.redis);
    let stepped = store
        .step(&report_of(key, first.id, Verdict::Up), None, first)
        .await;
    assert!(stepped.is_some(), "redis answers");
    let admin = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    (redis, store, admin)
}

/// Keeps Redis busy for `micros` with a spinning script (as a slow command, a fork or
/// an fsync stall would), from 50 ms after this returns; the task ends with it.
async fn busy_for(
    mut admin: redis::aio::MultiplexedConnection,
    micros: u64,
) -> tokio::task::JoinHandle<()> {
    let busy = tokio::spawn(async move {
        let spin = format!(
            "local t = redis.call('TIME') local s = t[1] * 1e6 + t[2] \
             repeat t = redis.call('TIME') until t[1] * 1e6 + t[2] - s > {micros} return 1"
        );
        let _: redis::RedisResult<i64> = redis::cmd("EVAL")
            .arg(spin)
            .arg(0)
            .query_async(&mut admin)
            .await;
    });
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    busy
}

/// A Redis that is late, not away (a fork, an fsync, a stalled network), ran a step the
/// worker had given up on: the result said `changed: false, previous_verdict: null`
/// while the key's state took `up → down`, and that outage was never announced. The
/// step is asked again with the same nonce, which the late step's memo answers, so it
/// is neither lost nor counted twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_step_that_redis_answers_late_still_tells_its_change() {
    use picket::job::Verdict::{Down, Up};
    let new = |id| Delivery {
        id,
        redelivered: false,
    };
    let (_redis, store, admin) = a_stepped_key("127.0.59.70", "late", new("j1")).await;
    // Redis busy for 800 ms (a script spinning), longer than the step's timeout
    // (500 ms): the step waits in its socket and runs late, after picket gave up on it.
    let busy = busy_for(admin, 800_000).await;
    let late = store
        .step(&report_of("late", "j2", Down), None, new("j2"))
        .await;
    busy.await.expect("busy script");
    let answer = late.expect("an answer, late");
    assert_eq!(answer.previous, Some(Up));
    assert!(answer.changed(Down));
    let next = store
        .step(&report_of("late", "j3", Down), None, new("j3"))
        .await;
    let next = next.expect("an answer");
    assert_eq!(
        (next.previous, next.streak),
        (Some(Down), 2),
        "the late step and its retry are one step"
    );
}

/// A Redis stalled for several of its timeouts (a busy script, a long fork or fsync)
/// still runs the step sent before the stall: a single retry, which met the stall too
/// (or failed to get a connection from the pool meanwhile), gave the result up with
/// `previous_verdict: null` while the key went `up → down`, and the change was told
/// nowhere. The step is asked again, with the same nonce, until Redis answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_step_stalled_for_several_timeouts_still_tells_its_change() {
    use picket::job::Verdict::{Down, Up};
    let new = |id| Delivery {
        id,
        redelivered: false,
    };
    let (_redis, store, admin) = a_stepped_key("127.0.62.20", "stalled", new("j1")).await;
    // Busy for 3 s: six of the step's 500 ms timeouts.
    let busy = busy_for(admin, 3_000_000).await;
    let late = store
        .step(&report_of("stalled", "j2", Down), None, new("j2"))
        .await;
    busy.await.expect("busy script");
    let answer = late.expect("an answer, once Redis runs again");
    assert_eq!(answer.previous, Some(Up));
    assert!(answer.changed(Down));
}

/// The step asked again after a timeout was asked as a redelivery: where the first run
/// never reached Redis (here: writes paused, and the connection dropped with it), an
/// earlier message under the same delivery id (a publisher repeating a job) had its
/// answer recalled, `previous_verdict: null`, and this copy's `up → down` went untold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_asked_again_is_no_redelivery_of_an_earlier_copy() {
    use picket::job::Verdict::{Down, Up};
    let copy = Delivery {
        id: "m",
        redelivered: false,
    };
    let (_redis, store, mut admin) = a_stepped_key("127.0.59.78", "copies", copy).await;
    let _: () = redis::cmd("CLIENT")
        .arg("PAUSE")
        .arg(800)
        .arg("WRITE")
        .query_async(&mut admin)
        .await
        .expect("pause");
    let second = store
        .step(&report_of("copies", "m", Down), None, copy)
        .await;
    let second = second.expect("an answer, late");
    assert_eq!(second.previous, Some(Up));
    assert!(second.changed(Down));
}

/// Stops (SIGSTOP) a private Redis, as a fork or fsync stall, a paused VM or
/// `DEBUG SLEEP` would; dropping it lets Redis run again, even when the test fails.
struct Frozen(u32);

impl Frozen {
    fn new(redis: &RedisServer) -> Frozen {
        let pid = redis.pid().expect("redis runs");
        Frozen::signal(pid, "-STOP");
        Frozen(pid)
    }

    fn signal(pid: u32, signal: &str) {
        let sent = std::process::Command::new("kill")
            .args([signal, &pid.to_string()])
            .status();
        assert!(sent.is_ok_and(|s| s.success()), "kill {signal} {pid}");
    }
}

impl Drop for Frozen {
    fn drop(&mut self) {
        Frozen::signal(self.0, "-CONT");
    }
}

/// A key `down` twice; the site comes back, and Redis stalls (a fork, an fsync, a
/// paused VM) past the time the worker waits for the state step. The result goes out
/// without state (`previous_verdict: null`, `changed: false`), honest so far; but Redis,
/// once it ran again, ran the step it had been sent, and the key went `down → up` for
/// no result: the next one found `up` after `up`, and the site's recovery was never
/// announced. A step given up on must not change the key when it runs late.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_step_redis_runs_after_it_was_given_up_changes_nothing() {
    use picket::job::Verdict::{Down, Up};
    let new = |id| Delivery {
        id,
        redelivered: false,
    };
    let (redis, _site, s) = on_a_private_redis("127.0.78.10").await;
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let store = RedisState::new(pool, &s.redis);
    for id in ["j1", "j2"] {
        let down = store
            .step(&report_of("frozen", id, Down), None, new(id))
            .await;
        assert!(down.is_some(), "redis answers");
    }
    // Frozen for longer than the worker waits for a stalled step (10 s).
    let frozen = Frozen::new(&redis);
    let thaw = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(14)).await;
        drop(frozen);
    });
    let given_up = store
        .step(&report_of("frozen", "j3", Up), None, new("j3"))
        .await;
    thaw.await.expect("thawed");
    // What Redis was sent before it stopped, it runs now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let next = store
        .step(&report_of("frozen", "j4", Up), None, new("j4"))
        .await;
    let next = next.expect("an answer, redis runs again");
    let told = [given_up, Some(next)];
    let changes: Vec<_> = told.iter().flatten().filter(|a| a.changed(Up)).collect();
    assert_eq!(
        changes.iter().map(|a| a.previous).collect::<Vec<_>>(),
        [Some(Down)],
        "down → up told by exactly one result: j3 {given_up:?}, j4 {next:?}"
    );
    let after = store
        .step(&report_of("frozen", "j5", Up), None, new("j5"))
        .await;
    let after = after.expect("an answer");
    assert_eq!(after.previous, Some(Up), "the key is up");
}

/// The Lua script and the Rust transition agree, step by step, on a long mixed run of
/// verdicts, deliveries, redeliveries and messages sharing an id.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_script_and_the_pure_step_agree() {
    use picket::job::Verdict::{Degraded, Down, Invalid, Unknown, Up};
    let s = settings_of(&toml(""));
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let store = RedisState::new(pool, &s.redis);
    let mut record = Record::default();
    let verdicts = [
        Up, Up, Down, Unknown, Down, Invalid, Up, Degraded, Up, Unknown, Unknown, Down,
    ];
    let mut seed = 7u64;
    let mut used: Vec<String> = Vec::new();
    for i in 0..90usize {
        seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
        let verdict: Verdict = verdicts[(seed >> 33) as usize % verdicts.len()];
        // Every third step is a redelivery of one of the last few deliveries; now and
        // then a new message reuses an earlier one's id (a publisher repeating a job).
        let (id, redelivered) = if i % 3 == 2 {
            (used[i - 1 - (seed >> 40) as usize % 2].clone(), true)
        } else if i % 5 == 0 && i > 0 {
            (used[i - 5].clone(), false)
        } else {
            (format!("d{i}"), false)
        };
        used.push(id.clone());
        let delivery = Delivery {
            id: &id,
            redelivered,
        };
        let step_of = Step("the-key", delivery, verdict, None);
        agree(&store, &mut record, step_of, &format!("step {i}")).await;
    }
    // Runs a random walk seldom makes: a job delivered three times, the middle one
    // unknown; a redelivery after another job moved the key on; redeliveries that move
    // the key off the verdict their first delivery left; unknown and invalid, each a run.
    let runs: [&[(&str, bool, Verdict)]; 5] = [
        &[
            ("a", false, Up),
            ("b", false, Down),
            ("b", true, Unknown),
            ("b", true, Down),
        ],
        &[
            ("a", false, Up),
            ("b", false, Down),
            ("c", false, Up),
            ("b", true, Down),
            ("d", false, Up),
        ],
        &[
            ("a", false, Down),
            ("b", false, Up),
            ("c", false, Up),
            ("b", true, Down),
            ("d", false, Down),
        ],
        &[
            ("a", false, Up),
            ("b", false, Down),
            ("c", false, Down),
            ("b", true, Down),
            ("b", true, Up),
            ("b", true, Invalid),
            ("b", true, Up),
        ],
        &[
            ("a", false, Up),
            ("b", false, Unknown),
            ("c", false, Invalid),
            ("d", false, Invalid),
            ("e", false, Unknown),
            ("c", true, Invalid),
            ("f", false, Up),
        ],
    ];
    for (n, run) in runs.iter().enumerate() {
        let run = run.iter().map(|&(id, again, v)| (id.to_string(), again, v));
        agree_on_run(&store, &format!("fixed-{n}"), run).await;
    }
    agree_on_run(&store, "longer-than-the-memo", longer_than_the_memo()).await;
}

/// Steps of one key, a fresh one, through both: each must agree.
async fn agree_on_run(
    store: &RedisState,
    key: &str,
    run: impl IntoIterator<Item = (String, bool, Verdict)>,
) {
    let mut record = Record::default();
    for (i, (id, redelivered, verdict)) in run.into_iter().enumerate() {
        let step_of = Step(
            key,
            Delivery {
                id: &id,
                redelivered,
            },
            verdict,
            None,
        );
        agree(store, &mut record, step_of, &format!("{key}, step {i}")).await;
    }
}

/// A run longer than the memo's 8 latest deliveries: a change redelivered after 12
/// unchanged steps; then a key that flaps every third step, with ten changes (more than
/// the memo keeps beyond its latest deliveries), whose oldest change, a kept one and a
/// recent one come back.
fn longer_than_the_memo() -> Vec<(String, bool, Verdict)> {
    use picket::job::Verdict::{Down, Up};
    let mut run = vec![("a".to_string(), false, Up), ("b".to_string(), false, Down)];
    run.extend((0..12).map(|i| (format!("c{i}"), false, Down)));
    run.push(("b".to_string(), true, Down));
    let flap = |i: usize| if (i / 3).is_multiple_of(2) { Up } else { Down };
    run.extend((0..30).map(|i| (format!("d{i}"), false, flap(i))));
    for (id, verdict) in [("d0", Up), ("d9", Down), ("d6", Up), ("d27", Down)] {
        run.push((id.to_string(), true, verdict));
    }
    run
}

/// Hunt P. Two checks of one key overlap (a slow answer, a hang confirmed by a second
/// attempt, two workers): j2 began before the site went down and saw it up, j3 began
/// after and ended first, `up → down`. j2, ending last, stepped the key back (a false
/// `down.up` while the site was down) and the next check told `up.down` again. An
/// observation older than the one that last stepped the key is told with the key's
/// state and moves nothing, not even the report `max_age_s` serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_older_observation_finishing_last_moves_no_key() {
    use picket::job::Verdict::{Down, Up};
    let s = settings_of(&toml(""));
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let store = RedisState::new(pool, &s.redis);
    let key = unique("overtaken");
    let since_epoch = std::time::UNIX_EPOCH.elapsed().expect("clock");
    let t = u64::try_from(since_epoch.as_millis()).expect("ms") - 60_000;
    let answer = async |id: &str, verdict, looked: u64| {
        let report = picket::job::Report {
            looked_ms: Some(t + looked),
            ..report_of(&key, id, verdict)
        };
        let delivery = Delivery {
            id,
            redelivered: false,
        };
        let a = store
            .step(&report, Some("f"), delivery)
            .await
            .expect("redis answers");
        (a.previous, a.changed(verdict), a.streak, a.since_ms)
    };
    answer("j1", Up, 1000).await;
    let j3 = answer("j3", Down, 3000).await;
    assert_eq!((j3.0, j3.1, j3.2), (Some(Up), true, 1), "up → down");
    let j2 = answer("j2", Up, 2000).await;
    assert_eq!(j2, (Some(Down), false, 1, j3.3), "j2 looked before j3");
    let served = store.fresh(&key, "f", Duration::from_secs(600)).await;
    assert_eq!(
        served.map(|r| r.verdict),
        Some(Down),
        "j3's report, not j2's"
    );
    let j4 = answer("j4", Down, 4000).await;
    assert_eq!(j4, (Some(Down), false, 2, j3.3), "the outage is told once");
    // A record written before records kept when they looked: older than any result.
    let old = json!({"v": "down", "s": 1000, "n": 3, "o": 0, "os": 0, "m": []});
    let client = redis::Client::open(s.redis.url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let _: () = redis::cmd("SET")
        .arg(store.keys(&key).0)
        .arg(old.to_string())
        .query_async(&mut conn)
        .await
        .expect("set");
    let up = answer("j5", Up, 0).await;
    assert_eq!(
        (up.0, up.1, up.2),
        (Some(Down), true, 1),
        "the old record steps on"
    );
}

/// The Lua script and the pure step agree on results that end out of the order they
/// looked in: overtaken ones, an `unknown` older than the key's observation, a
/// redelivery carrying an untold change, a record whose key looked at nothing yet.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_script_and_the_pure_step_agree_on_overtaken_results() {
    use picket::job::Verdict::{Down, Unknown, Up};
    let s = settings_of(&toml(""));
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let store = RedisState::new(pool, &s.redis);
    // Seconds apart: the script dates each on Redis's clock from its age, to the ms.
    let run: [(&str, bool, Verdict, Option<u64>); 11] = [
        ("a", false, Up, None),
        ("b", false, Down, Some(20_000)),
        ("c", false, Up, Some(10_000)),
        ("d", false, Unknown, Some(5_000)),
        ("e", false, Up, Some(30_000)),
        ("f", false, Down, Some(40_000)),
        ("g", false, Down, Some(60_000)),
        ("f", true, Up, Some(50_000)),
        ("h", false, Up, Some(70_000)),
        ("i", false, Down, Some(65_000)),
        ("j", false, Down, None),
    ];
    let key = unique("overtaken-agree");
    let mut record = Record::default();
    for (i, (id, redelivered, verdict, looked)) in run.into_iter().enumerate() {
        let delivery = Delivery { id, redelivered };
        let step_of = Step(&key, delivery, verdict, looked);
        agree(&store, &mut record, step_of, &format!("step {i}")).await;
    }
}

/// A record a worker wrote before each of `unknown` and `invalid` had a run of its own
/// (no `ov`), and before memo entries kept `left` and a nonce, steps on after an upgrade:
/// its memo is recalled, its run of results that are no verdict goes on as the run of
/// the next such result, and the key's verdict, start and streak are kept.
#[tokio::test]
async fn a_record_written_before_unknown_and_invalid_had_runs_of_their_own_steps_on() {
    use picket::job::Verdict::{Invalid, Unknown, Up};
    let s = settings_of(&toml(""));
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let store = RedisState::new(pool, &s.redis);
    let (mut conn, now) = redis_and_its_time(&s).await;
    // Up since 1000 (3 in a row: j1 told down → up), then 2 unknown since `now - 1000`.
    let old = json!({"v": "up", "s": 1000, "n": 3, "o": 2, "os": now - 1000, "m": [
        ["u2", "unknown", "up", 2, now - 1000, now - 500, false],
        ["u1", "unknown", "up", 1, now - 1000, now - 1000, false],
        ["j1", "up", "down", 3, 1000, now - 2000, false],
    ]});
    let key = unique("old-record");
    let _: () = redis::cmd("SET")
        .arg(store.keys(&key).0)
        .arg(old.to_string())
        .arg("EX")
        .arg(600)
        .query_async(&mut conn)
        .await
        .expect("set");
    let answer = async |id: &str, redelivered, verdict| {
        let report = report_of(&key, id, verdict);
        let a = store
            .step(&report, None, Delivery { id, redelivered })
            .await;
        let a = a.expect("redis answers");
        (a.previous, a.streak, a.since_ms)
    };
    let j1 = answer("j1", true, Up).await;
    assert_eq!(
        j1,
        (Some(Verdict::Down), 3, 1000),
        "j1's first answer, recalled"
    );
    let unknown = answer("k1", false, Unknown).await;
    assert_eq!(unknown, (Some(Up), 3, now - 1000), "the old run goes on");
    let invalid = answer("k2", false, Invalid).await;
    assert_eq!((invalid.0, invalid.1), (Some(Up), 1), "a run of its own");
    assert!(invalid.2 >= now, "since the invalid result: {invalid:?}");
    let up = answer("k3", false, Up).await;
    assert_eq!(up, (Some(Up), 4, 1000), "the key's verdict kept");
}

/// A step of a key: the key, the delivery, its verdict, when its probing began.
struct Step<'a>(&'a str, Delivery<'a>, Verdict, Option<u64>);

/// Takes `s` through the Lua script and through the pure step, which must agree.
async fn agree(store: &RedisState, record: &mut Record, s: Step<'_>, label: &str) {
    let Step(key, delivery, verdict, looked_ms) = s;
    let report = picket::job::Report {
        looked_ms,
        ..report_of(key, delivery.id, verdict)
    };
    let from_redis = store
        .step(&report, None, delivery)
        .await
        .expect("redis answers");
    let now = from_redis.since_ms.max(1);
    let pure = step(record, delivery, verdict, looked_ms, now);
    assert_eq!(
        (from_redis.previous, from_redis.streak, from_redis.since_ms),
        (pure.previous, pure.streak, pure.since_ms),
        "{label}: {} {verdict:?}",
        delivery.id
    );
    // And on which redeliveries get a report back: the key's latest (the memo's newest
    // entry: the last step that wrote), and those of changes the key still stands on.
    let ids: Vec<String> = record.deliveries().map(String::from).collect();
    for id in &ids {
        let expected = *id == ids[0] || replays_change(record, id, now);
        assert_eq!(
            store.replay(key, id).await.is_some(),
            expected,
            "{label}: a redelivery of {id} after {} {verdict:?}",
            delivery.id
        );
    }
}

fn report_of(key: &str, id: &str, verdict: Verdict) -> picket::job::Report {
    serde_json::from_value(json!({
        "job_id": id, "url": "http://a.example/", "verdict": verdict, "reason": "ok",
        "detail": "d", "http": null, "timing_ms": {"total": 1}, "ip": null, "egress": null,
        "attempts": 1, "checked_at": "2026-11-29T00:00:00Z", "cached": false, "key": key,
        "previous_verdict": null, "changed": false, "streak": 1, "since": null, "worker": "t"
    }))
    .expect("report")
}

/// The age of an RFC 3339 time as this process's clock tells it (negative: ahead).
fn age_s(field: &Value) -> f64 {
    let at = field.as_str().unwrap_or_else(|| panic!("a time: {field}"));
    let at = humantime::parse_rfc3339(at).unwrap_or_else(|e| panic!("{at}: {e}"));
    match std::time::SystemTime::now().duration_since(at) {
        Ok(d) => d.as_secs_f64(),
        Err(e) => -e.duration().as_secs_f64(),
    }
}

/// Workers' clocks differ (a container without NTP, a VM resumed), and the state they
/// share must not: a worker whose clock ran two hours ahead wrote its verdict "two hours
/// from now", so another worker served it for `max_age_s` long after the site went down,
/// and the key's `since` was in the future. The state's times are Redis's (`TIME`), as
/// the limiter's are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_clock_runs_ahead_stales_no_verdict_and_moves_no_since() {
    let site = Site::start("127.0.62.10").await;
    let text = toml("");
    let s = settings_of(&text);
    let c = Client::connect().await;
    c.declare(&s).await;
    let key = unique("clock");
    let ahead = WorkerProcess::start(
        &text,
        &[
            ("LD_PRELOAD", libfaketime().into_os_string()),
            ("FAKETIME", "+2h".into()),
            ("FAKETIME_DONT_FAKE_MONOTONIC", "1".into()),
        ],
    );
    let first = one(&c, &s, json!({"url": site.url, "key": key})).await;
    ahead.terminate().await;
    assert_eq!(first["verdict"], "up", "{first}");
    assert!(
        age_s(&first["checked_at"]) < -3000.0,
        "the worker's clock runs ahead: {first}"
    );
    assert!(
        age_s(&first["since"]).abs() < 60.0,
        "since is the shared clock's, not the worker's: {first}"
    );

    site.set_up(false);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let w = WorkerProcess::plain(&text);
    let r = one(&c, &s, json!({"url": site.url, "key": key, "max_age_s": 2})).await;
    w.terminate().await;
    assert_eq!(
        (r["cached"].as_bool(), r["verdict"].as_str()),
        (Some(false), Some("down")),
        "a verdict older than max_age_s was served: {r}"
    );
    assert_eq!(
        (r["previous_verdict"].as_str(), r["changed"].as_bool()),
        (Some("up"), Some(true)),
        "{r}"
    );
    assert!(age_s(&r["since"]).abs() < 60.0, "{r}");
}

/// Review D. A relay on 127.0.73.x that passes a Redis connection until `cut` is set,
/// then drops the next answer from Redis with the connection (a connection reset after
/// the command ran: a network blip, a proxy or a primary going away).
async fn cutting_relay(
    listen: &str,
    server: std::net::SocketAddr,
    cut: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<()> {
    use std::sync::atomic::Ordering;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .expect("relay port");
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let cut = cut.clone();
            tokio::spawn(async move {
                let Ok(upstream) = tokio::net::TcpStream::connect(server).await else {
                    return;
                };
                let (mut cr, mut cw) = client.into_split();
                let (mut ur, mut uw) = upstream.into_split();
                let up = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut cr, &mut uw).await;
                });
                let mut buf = vec![0u8; 65536];
                loop {
                    let n = match ur.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    if cut.swap(false, Ordering::SeqCst) {
                        break;
                    }
                    if cw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
                up.abort();
            });
        }
    })
}

/// Review D. A step whose script ran in Redis but whose answer was lost with its
/// connection (not a timeout: `RedisState::attempt` calls that `Late::No`, "the command
/// did not run") is not asked again: the result goes out with `previous_verdict: null`,
/// `changed: false`, while the key's state took `up → down`; the next job finds `down`
/// after `down`, and the outage is announced by no result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_d_a_step_whose_answer_is_lost_with_its_connection_still_tells_its_change() {
    use picket::job::Verdict::{Down, Up};
    use std::sync::atomic::{AtomicBool, Ordering};
    let redis = tokio::task::spawn_blocking(RedisServer::launch)
        .await
        .expect("join")
        .expect("private redis");
    let server: std::net::SocketAddr = format!("127.0.0.1:{}", redis.port()).parse().expect("addr");
    let cut = std::sync::Arc::new(AtomicBool::new(false));
    let relay = cutting_relay("127.0.73.10:44110", server, cut.clone()).await;
    let text = toml("").replace(
        &format!("url = \"{}\"", crate::support::servers().redis_url),
        "url = \"redis://127.0.73.10:44110/0\"\ntimeout = \"500ms\"",
    );
    let s = settings_of(&text);
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let store = RedisState::new(pool, &s.redis);
    let new = |id| Delivery {
        id,
        redelivered: false,
    };
    let first = store
        .step(&report_of("cut", "j1", Up), None, new("j1"))
        .await;
    assert!(first.is_some(), "redis answers");
    cut.store(true, Ordering::SeqCst);
    let second = store
        .step(&report_of("cut", "j2", Down), None, new("j2"))
        .await;
    let third = store
        .step(&report_of("cut", "j3", Down), None, new("j3"))
        .await;
    relay.abort();
    let third = third.expect("an answer once reconnected");
    assert!(
        second.is_some_and(|a| a.changed(Down)) || third.changed(Down),
        "up → down was stepped in Redis but told by no result: j2 {second:?}, j3 {third:?}"
    );
}

/// Hunt F. A relay on 127.0.73.x that passes a Redis connection until a command holding
/// `marker` goes through it; it then drops that command's answer with the connection,
/// and refuses every connection for `blackout` (a network partition, a primary gone
/// away and back), then passes them again.
async fn partitioning_relay(
    listen: &str,
    server: std::net::SocketAddr,
    marker: &'static [u8],
    blackout: Duration,
) -> tokio::task::JoinHandle<()> {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::time::Instant;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .expect("relay port");
    let until: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let dark = |until: &Mutex<Option<Instant>>| {
        until
            .lock()
            .expect("lock")
            .is_some_and(|u| Instant::now() < u)
    };
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            if dark(&until) {
                continue;
            }
            let until = until.clone();
            tokio::spawn(async move {
                let Ok(upstream) = tokio::net::TcpStream::connect(server).await else {
                    return;
                };
                let (mut cr, mut uw) = {
                    let (cr, cw) = client.into_split();
                    let (ur, uw) = upstream.into_split();
                    let marked = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let (flag, until2) = (marked.clone(), until.clone());
                    // Answers: the marked command's is dropped, and the partition begins.
                    tokio::spawn(async move {
                        let (mut ur, mut cw) = (ur, cw);
                        let mut buf = vec![0u8; 65536];
                        while let Ok(n) = ur.read(&mut buf).await {
                            if n == 0 || dark(&until2) {
                                break;
                            }
                            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                                *until2.lock().expect("lock") = Some(Instant::now() + blackout);
                                break;
                            }
                            if cw.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                    let _ = &marked;
                    (cr, (uw, marked))
                };
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = cr.read(&mut buf).await {
                    if n == 0 || dark(&until) {
                        break;
                    }
                    if buf[..n].windows(marker.len()).any(|w| w == marker) {
                        uw.1.store(true, std::sync::atomic::Ordering::SeqCst);
                    }
                    if uw.0.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
        }
    })
}

/// Hunt F. A state step Redis ran whose answer was lost with its connection, Redis then
/// unreachable for longer than the worker asks a step again (`STALL_LIMIT`, 10 s): the
/// result went out without state (`changed: false`) while the key took `up → down`, and
/// the next result found `down` after `down`: the outage was told by no result, and
/// the changes exchange never heard it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_ran_while_redis_went_away_for_longer_than_its_asks_still_tells_its_change() {
    let redis = tokio::task::spawn_blocking(RedisServer::launch)
        .await
        .expect("join")
        .expect("private redis");
    let server: std::net::SocketAddr = format!("127.0.0.1:{}", redis.port()).parse().expect("addr");
    let relay = partitioning_relay(
        "127.0.73.11:44111",
        server,
        b"partition-me",
        Duration::from_secs(13),
    )
    .await;
    let text = toml("").replace(
        &format!("url = \"{}\"", crate::support::servers().redis_url),
        "url = \"redis://127.0.73.11:44111/0\"\ntimeout = \"500ms\"",
    );
    let s = settings_of(&text);
    let site = Site::start("127.0.73.12").await;
    let c = Client::connect().await;
    c.declare(&s).await;
    let changes = changes_queue(&c, &s).await;
    let w = Worker::start(&s);
    let first = one(&c, &s, json!({"url": site.url, "id": "before"})).await;
    assert_eq!(first["verdict"], "up", "{first}");
    site.set_up(false);
    let lost = one(&c, &s, json!({"url": site.url, "id": "partition-me"})).await;
    let next = one(&c, &s, json!({"url": site.url, "id": "after"})).await;
    let told = drain(&c, &changes, Duration::from_secs(2)).await;
    relay.abort();
    w.shutdown().await;
    assert!(
        told.iter().any(|(route, _)| route == "up.down"),
        "up → down was stepped in Redis but told by no result: {lost}\n{next}\nchanges: {told:?}"
    );
}

/// Hunt H: Redis's `timeout` (operators set it to close idle clients) closed the shared
/// connection while the worker was idle; a state step whose first call was the clock
/// reading (`TIME`, asked when the clock known is a minute old or none yet) failed at
/// once on the closed connection and was given up: the result went out without state.
/// A read found on a closed connection is asked again on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_redis_closed_while_idle_costs_no_state_step() {
    let (redis, _site, s) = on_a_private_redis("127.0.40.22").await;
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let mut conn = pool.get().await.expect("a connection");
    let _: String = redis::cmd("PING")
        .query_async(&mut conn)
        .await
        .expect("PING");
    drop(conn);
    let admin = closing_idle_clients(&redis).await;
    // Redis looks for idle clients about ten times a second; past 1 s ours is closed.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let store = RedisState::new(pool, &s.redis);
    let first = Delivery {
        id: "d1",
        redelivered: false,
    };
    let stepped = store
        .step(&report_of("idle", "d1", Verdict::Up), None, first)
        .await;
    assert!(stepped.is_some(), "the step was given up");
    drop(admin);
}

/// Hunt H: with Redis's `timeout` below the pause between two looks, `/readyz` said
/// `redis=false` on every other poll: the check found the idle connection Redis had
/// closed, and failed on it, instead of asking on a new one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readiness_does_not_flap_when_redis_closes_idle_connections() {
    let (redis, _site, s) = on_a_private_redis("127.0.40.23").await;
    let w = Worker::start(&s);
    let ready = tokio::time::Instant::now() + Duration::from_secs(30);
    while get_ops(w.ops, "/readyz").await.map(|(code, _)| code) != Some(200) {
        assert!(tokio::time::Instant::now() < ready, "never ready");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _admin = closing_idle_clients(&redis).await;
    for _ in 0..3 {
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let (code, body) = get_ops(w.ops, "/readyz").await.expect("readyz");
        assert_eq!(code, 200, "after an idle pause: {body}");
    }
    w.shutdown().await;
}

/// Sets Redis's `timeout` to 1 s (it closes clients idle that long), on a connection of
/// the test's own, kept by the caller.
async fn closing_idle_clients(redis: &RedisServer) -> redis::aio::MultiplexedConnection {
    let mut admin = redis::Client::open(redis.url())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("admin");
    let _: () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("timeout")
        .arg("1")
        .query_async(&mut admin)
        .await
        .expect("CONFIG SET timeout");
    admin
}

/// The step script of the version before `{prefix}told:{H}` (commit bc991f9): what a
/// worker not yet upgraded runs during a rolling upgrade. KEYS: record, report; ARGV as
/// the current script's.
const REVIEW_W_OLD_STEP: &str = include_str!("review_w_old_step.lua");

/// Review W. A rolling upgrade: new workers beside old ones, which run the step script
/// before `told:{H}` existed. A new worker steps d `up → down` (told[d] = that report),
/// publishes it and dies before the ack; j3 steps the key (`down` after `down`). The
/// redelivery of d goes to an old worker: the old replay sees j3's report as the latest,
/// probes again, the site is back, and the old script steps d `down → up` (its memo
/// entry for d now: verdict up, previous down, left up), without touching told[d]. j4
/// steps the key `up`. d comes back once more (the old worker is stopped by the upgrade
/// itself before its ack) to a new worker: the REPLAY script sees d's memo entry tell a
/// change the key still stands on (left up == key up) and serves told[d], the report of
/// a *different* step of d: verdict `down`, `previous_verdict: up`, `changed: true`,
/// while the key and the site are up. A false `up → down` is announced, and subscribers
/// keep `down` until the site next changes. (The told report is not tied to the memo
/// entry it is served for: neither its time nor its verdict is compared with the entry.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn review_w_a_told_report_is_not_served_for_a_later_step_an_old_worker_took() {
    use picket::job::Verdict::{Down, Up};
    let s = settings_of(&toml(""));
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let store = RedisState::new(pool, &s.redis);
    let key = unique("rolling-upgrade");
    let new = |id| Delivery {
        id,
        redelivered: false,
    };
    let answer = async |id: &str, delivery, verdict| {
        store
            .step(&report_of(&key, id, verdict), None, delivery)
            .await
            .expect("redis answers")
    };
    answer("j1", new("j1"), Up).await;
    let first = answer("d", new("d"), Down).await;
    assert!(first.changed(Down), "d: up → down, published; the ack lost");
    answer("j3", new("j3"), Down).await;

    // The redelivery of d, probed again by an old worker: the site is back.
    let old = old_step(&s, &store, &key, ("d", true), Up).await;
    assert_eq!(old, "down", "the old worker's d: down → up, as it did");
    answer("j4", new("j4"), Up).await;

    let replayed = store
        .replay(&key, "d")
        .await
        .map(|r| (r.verdict, r.previous_verdict, r.changed));
    assert!(
        replayed.is_none() || replayed == Some((Up, Some(Down), true)),
        "the key is up, d's latest step was down → up; yet its redelivery is served \
         {replayed:?}: its first step's report, a false up → down"
    );
}

/// A connection to the tests' Redis, and its time (ms).
async fn redis_and_its_time(s: &Settings) -> (redis::aio::MultiplexedConnection, u64) {
    let client = redis::Client::open(s.redis.url.as_str()).expect("client");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let (secs, micros): (u64, u64) = redis::cmd("TIME")
        .query_async(&mut conn)
        .await
        .expect("time");
    (conn, secs * 1000 + micros / 1000)
}

/// Takes a step of `key` with the step script of the version before `told:{H}`, as a
/// worker not yet upgraded does (of `id` with `verdict`, redelivered or not); its
/// previous verdict.
async fn old_step(
    s: &Settings,
    store: &RedisState,
    key: &str,
    (id, redelivered): (&str, bool),
    verdict: Verdict,
) -> String {
    let (mut conn, now) = redis_and_its_time(s).await;
    let (record_key, report_key) = store.keys(key);
    let json = serde_json::to_string(&report_of(key, id, verdict)).expect("json");
    let old: (String, u64, u64, u64, u8) = redis::Script::new(REVIEW_W_OLD_STEP)
        .key(&record_key)
        .key(&report_key)
        .arg(id)
        .arg(verdict.as_str())
        .arg("1")
        .arg(now + 10_000)
        .arg(600)
        .arg(600)
        .arg(&json)
        .arg(8)
        .arg(if redelivered { "1" } else { "0" })
        .arg(3_600_000)
        .arg(60_000)
        .arg(format!("old-worker-{id}-{now}"))
        .arg(8)
        .arg("")
        .arg("")
        .invoke_async(&mut conn)
        .await
        .expect("the old script runs");
    old.0
}

/// Review W's suspicion: a worker of an older version steps a delivery whose change a
/// new worker kept the report of, and lets that report go without a word (it knows no
/// `told:{H}`); each later change refreshed the hash's expiry, so on a key that changes
/// at least hourly such reports stayed for good. A new worker's change now sweeps the
/// reports of changes the memo no longer tells.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_an_older_worker_let_go_are_swept_by_the_next_change() {
    use picket::job::Verdict::{Down, Up};
    let s = settings_of(&toml(""));
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let store = RedisState::new(pool, &s.redis);
    let key = unique("sweep");
    let step = async |id: &str, verdict| {
        let report = report_of(&key, id, verdict);
        let delivery = Delivery {
            id,
            redelivered: false,
        };
        store
            .step(&report, None, delivery)
            .await
            .expect("an answer")
    };
    step("j1", Up).await;
    assert!(step("d", Down).await.changed(Down));
    // An old worker steps d again (a publisher reusing the id), down after down.
    assert_eq!(old_step(&s, &store, &key, ("d", false), Down).await, "down");
    let told_key = store.keys(&key).0.replacen("state:", "told:", 1);
    let mut conn = redis::Client::open(s.redis.url.as_str())
        .expect("client")
        .get_multiplexed_async_connection()
        .await
        .expect("redis");
    let fields = async |conn: &mut redis::aio::MultiplexedConnection| -> Vec<String> {
        let mut f: Vec<String> = redis::cmd("HKEYS")
            .arg(&told_key)
            .query_async(conn)
            .await
            .expect("hkeys");
        f.sort();
        f
    };
    assert_eq!(fields(&mut conn).await, ["d"], "left by the old worker");
    assert!(step("j2", Up).await.changed(Up));
    assert_eq!(
        fields(&mut conn).await,
        ["j2"],
        "d's report swept, j2's kept"
    );
}

/// Hunt W: a Redis stall while the shared limiter booked a request was charged to the
/// job's own time. With `timeout_ms` 1000 and Redis stopped past `redis.timeout`, a site
/// answering at once was never asked: `unknown/local_resources`, blamed on a CPU short
/// of time (and with a slow site and one attempt, `down/timeout`). The limiter's time,
/// its round trip as much as its waiting, is ours, not the site's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_stall_in_the_limiter_is_not_taken_from_the_sites_time() {
    use std::sync::Arc;
    let (redis, site, mut s) = on_a_private_redis("127.0.78.11").await;
    s.redis.timeout = Duration::from_millis(1500);
    s.probe.attempts = 1;
    let pool = picket::redis_pool::redis_pool(&s.redis).expect("pool");
    let limiter = picket::limit::redis::RedisLimiter::new(
        pool,
        &s.redis,
        &s.rate_limit,
        Duration::from_secs(30),
        "stalled",
    );
    let state = Arc::new(picket::state::MemoryState::default());
    let engine = picket::app::engine(&s, state, Arc::new(limiter)).expect("engine");
    let job = json!({"url": site.url, "timeout_ms": 1000});
    let r = crate::support::picket::check_job(&engine, job.clone()).await;
    assert_eq!(r.verdict, Verdict::Up, "Redis running: {}", r.detail);
    let frozen = Frozen::new(&redis);
    let r = crate::support::picket::check_job(&engine, job).await;
    drop(frozen);
    assert_eq!(
        (r.verdict, r.reason.as_str()),
        (Verdict::Up, "ok"),
        "Redis stalled: {}",
        r.detail
    );
}

/// Hunt W (D9): an alerting subscriber's full queue on the changes exchange (RabbitMQ's
/// `reject-publish`) refuses the change, after the result was confirmed. The whole job
/// was handed back, probed again, and its result published again every ~2 s for as long
/// as the queue stayed full (50 copies in 20 s for 5 jobs). Only the change is retried:
/// the result is published once, and the change arrives, once, when the queue has room.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_alerting_queue_delays_the_change_and_repeats_no_result() {
    let site = Site::start("127.0.9.34").await;
    let s = settings_of(&toml(""));
    let c = Client::connect().await;
    c.declare(&s).await;
    let w = Worker::start(&s);
    let first = one(&c, &s, json!({"url": site.url, "id": "before"})).await;
    assert_eq!(first["verdict"], "up");
    let full = c.refusing_queue().await;
    bind_to_every_change(&c, &s, &full).await;
    site.set_up(false);
    let r = one(&c, &s, json!({"url": site.url, "id": "the-change"})).await;
    assert_eq!(
        (r["verdict"].as_str(), r["changed"].as_bool()),
        (Some("down"), Some(true))
    );
    let again = drain(&c, &s.amqp.results_queue, Duration::from_secs(8)).await;
    assert!(
        again.is_empty(),
        "the job was probed and its result published again {} times while the alerting \
         queue was full",
        again.len()
    );
    let changes = changes_queue(&c, &s).await;
    c.ch.queue_delete(full.as_str().into(), Default::default())
        .await
        .expect("the alerting queue is gone");
    let got = drain(&c, &changes, Duration::from_secs(15)).await;
    let told: Vec<(&str, &Value)> = got
        .iter()
        .map(|(k, v)| (k.as_str(), &v["job_id"]))
        .collect();
    // RabbitMQ puts a message in every bound queue with room even when another
    // refuses it: a retry that came between this queue's binding and the full queue's
    // deletion (a few ms) left a copy here too. Once more than that is a repeat.
    assert!(
        matches!(told.len(), 1 | 2) && told.iter().all(|t| *t == ("up.down", &json!("the-change"))),
        "{got:?}"
    );
    assert!(
        got.iter().all(|(_, v)| *v == r),
        "the change is the result that was published"
    );
    w.shutdown().await;
}

/// Hunt W (W-5): Redis undoes none of a script's writes. With `PEXPIRE` refused to
/// picket's user, a step telling a change wrote the key's new verdict, then failed on
/// its last command; the worker took the failure as a step that never ran and answered
/// without state (`previous_verdict: null`), and the next step found the new verdict
/// already there: the change was told by no result. A script that fails part-way may
/// have written: it is asked again at once with the same nonce, and a run that wrote
/// finds its own answer. One failing before any write (`GET` refused) is answered
/// without state at once, not handed back for minutes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_step_that_fails_after_its_first_write_still_tells_its_change() {
    let (redis, site, mut s) = on_a_private_redis("127.0.9.35").await;
    let mut admin = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let refuse = |rule: &str| {
        let mut cmd = redis::cmd("ACL");
        cmd.arg(
            "SETUSER picket reset on >pw ~* &* +@all"
                .split(' ')
                .collect::<Vec<_>>(),
        )
        .arg(rule);
        cmd
    };
    let _: () = refuse("-pexpire")
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    s.redis.url = redis.url().replacen("redis://", "redis://picket:pw@", 1);
    let c = Client::connect().await;
    c.declare(&s).await;
    let changes = changes_queue(&c, &s).await;
    let w = Worker::start(&s);
    let job = json!({"url": site.url, "key": "w5"});
    assert_eq!(one(&c, &s, job.clone()).await["verdict"], "up");
    site.set_up(false);
    let down = one(&c, &s, job.clone()).await;
    assert_eq!(
        (down["previous_verdict"].as_str(), down["changed"].as_bool()),
        (Some("up"), Some(true)),
        "{down}"
    );
    let told = drain(&c, &changes, Duration::from_secs(3)).await;
    let keys: Vec<&str> = told.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(keys, ["up.down"], "{told:?}");

    let _: () = refuse("-get")
        .query_async(&mut admin)
        .await
        .expect("ACL SETUSER");
    site.set_up(true);
    let without = one(&c, &s, job).await;
    assert_eq!(
        (
            without["verdict"].as_str(),
            without["previous_verdict"].as_str()
        ),
        (Some("up"), None),
        "{without}"
    );
    w.shutdown().await;
}

/// Hunt 96: Redis at its maxmemory (noeviction) refuses a script whose first write could
/// grow its memory (the limiter's REFUSE, ANSWERED, RENEW, ALIVE) and takes one that
/// writes something else first (BOOK prunes the leases before it books: Redis lets a
/// script go on once it wrote). A booking that answered was taken for Redis back: with a
/// site refusing us, the log said "shared rate limiter unavailable" and "is back" in
/// turn at every request, and `picket_limiter_fallback` with them, so an alert on the
/// gauge lasting 5 minutes never fired. Back is what the check for it says: a script
/// whose first write is refused at maxmemory (ALIVE).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redis_out_of_memory_keeps_the_limiter_on_its_fallback_without_flapping() {
    let (redis, site, text) = private_redis_toml("127.0.40.26").await;
    let s = settings_of(&text);
    let c = Client::connect().await;
    c.declare(&s).await;
    let worker = WorkerProcess::plain(&text);
    assert_eq!(one(&c, &s, json!({"url": site.url})).await["verdict"], "up");
    let mut admin = redis::Client::open(redis.url())
        .expect("redis url")
        .get_multiplexed_async_connection()
        .await
        .expect("redis connection");
    let maxmemory = |bytes: &str| {
        redis::cmd("CONFIG")
            .arg("SET")
            .arg("maxmemory")
            .arg(bytes)
            .to_owned()
    };
    let _: () = maxmemory("1")
        .query_async(&mut admin)
        .await
        .expect("maxmemory 1");
    // Each 503 is told to the limiter (REFUSE, refused), and each attempt books, the
    // first of each job after the fallback's rest of 250 ms.
    site.set_up(false);
    for _ in 0..8 {
        let r = one(&c, &s, json!({"url": site.url})).await;
        assert_eq!(r["verdict"], "down", "{r}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    let log = worker.log_text();
    let said = |what: &str| log.lines().filter(|l| l.contains(what)).count();
    let (fell, back) = (
        said("rate limiter unavailable"),
        said("rate limiter is back"),
    );
    assert_eq!(
        (fell, back),
        (1, 0),
        "on its fallback once, while Redis refused writes:\n{}",
        worker.log_tail(40)
    );
    let _: () = maxmemory("0")
        .query_async(&mut admin)
        .await
        .expect("maxmemory 0");
    site.set_up(true);
    assert_eq!(one(&c, &s, json!({"url": site.url})).await["verdict"], "up");
    let log = worker.log_text();
    assert!(
        log.contains("rate limiter is back"),
        "{}",
        worker.log_tail(20)
    );
    worker.terminate().await;
}
