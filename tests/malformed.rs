//! A barrage of malformed messages mixed with good jobs (issue 5): every one ends as the
//! contract says (an `invalid` result, a dead letter with its reason), the worker never
//! stops, and no good job is lost. Targets are our own servers on 127.0.0.2x.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::support::ops::get_ops;
use crate::support::picket::{settings, Client, Worker};
use crate::support::run::*;

// ---------------------------------------------------------------------------------------
// 3. A barrage of malformed messages mixed with good jobs
// ---------------------------------------------------------------------------------------

/// What must become of a message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fate {
    /// A good job: result `up`.
    Up,
    /// A JSON object that is a wrong job: result `invalid`.
    Invalid,
    /// Refused by the address policy: result `invalid` / `blocked_target`.
    Blocked,
    /// Not a job at all: dead-lettered.
    Dead,
}

struct Sent {
    id: String,
    fate: Fate,
}

/// Makes a message body from its id and the good target's URL.
type Make = Box<dyn Fn(&str, &str) -> Vec<u8>>;

fn obj(v: Value) -> Vec<u8> {
    v.to_string().into_bytes()
}

/// The kinds of message in the barrage, with what must become of each.
fn barrage(huge_len: usize) -> Vec<(&'static str, Fate, Make)> {
    vec![
        // Good jobs in several shapes.
        (
            "good-plain",
            Fate::Up,
            Box::new(move |id, g| obj(json!({"id": id, "url": g}))),
        ),
        (
            "good-id-from-message-id",
            Fate::Up,
            Box::new(move |_, g| obj(json!({"url": g}))),
        ),
        (
            "good-bom",
            Fate::Up,
            Box::new(move |id, g| {
                let mut b = "\u{feff}".as_bytes().to_vec();
                b.extend(obj(json!({"id": id, "url": g})));
                b
            }),
        ),
        (
            "good-everything",
            Fate::Up,
            Box::new(move |id, g| {
                obj(
                    json!({"id": id, "url": format!("  {}#frag  ", g), "method": "get",
                    "headers": {"Accept-Language": "zh-CN"}, "timeout_ms": 5000,
                    "expect": {"status": [200], "body_contains": "Welcome", "min_body_bytes": 64},
                    "meta": {"deep": [[[[[[{"k": "欢迎 🎉"}]]]]]], "n": null}}),
                )
            }),
        ),
        // Not a job at all: dead-lettered.
        (
            "not-json",
            Fate::Dead,
            Box::new(|id, _| format!("this is not json {id}").into_bytes()),
        ),
        ("empty-body", Fate::Dead, Box::new(|_, _| Vec::new())),
        (
            "truncated-json",
            Fate::Dead,
            Box::new(move |id, g| format!("{{\"id\":\"{id}\",\"url\":\"{}\"", g).into_bytes()),
        ),
        (
            "invalid-utf8",
            Fate::Dead,
            Box::new(|id, _| {
                let mut b = vec![0xff, 0xfe, b'{'];
                b.extend(id.as_bytes());
                b.extend([0xc3, 0x28, b'}']);
                b
            }),
        ),
        (
            "utf16",
            Fate::Dead,
            Box::new(move |id, g| {
                json!({"id": id, "url": g})
                    .to_string()
                    .encode_utf16()
                    .flat_map(u16::to_le_bytes)
                    .collect()
            }),
        ),
        ("array", Fate::Dead, Box::new(|_, _| b"[1, 2, 3]".to_vec())),
        ("null", Fate::Dead, Box::new(|_, _| b"null".to_vec())),
        ("number", Fate::Dead, Box::new(|_, _| b"42".to_vec())),
        ("string", Fate::Dead, Box::new(move |_, g| obj(json!(g)))),
        (
            "trailing-nuls",
            Fate::Dead,
            Box::new(move |id, g| {
                let mut b = obj(json!({"id": id, "url": g}));
                b.extend([0, 0, 0]);
                b
            }),
        ),
        (
            "huge",
            Fate::Dead,
            Box::new(move |id, g| obj(json!({"id": id, "url": g, "meta": "x".repeat(huge_len)}))),
        ),
        (
            "deep-array",
            Fate::Dead,
            Box::new(|_, _| "[".repeat(50_000).into_bytes()),
        ),
        (
            "deep-meta",
            Fate::Dead,
            Box::new(move |id, g| {
                format!(
                    "{{\"id\":\"{id}\",\"url\":\"{}\",\"meta\":{}{}}}",
                    g,
                    "[".repeat(5000),
                    "]".repeat(5000)
                )
                .into_bytes()
            }),
        ),
        // JSON objects that are wrong jobs: answered invalid.
        (
            "url-number",
            Fate::Invalid,
            Box::new(|id, _| obj(json!({"id": id, "url": 42}))),
        ),
        (
            "url-null",
            Fate::Invalid,
            Box::new(|id, _| obj(json!({"id": id, "url": null}))),
        ),
        (
            "url-array",
            Fate::Invalid,
            Box::new(move |id, g| obj(json!({"id": id, "url": [g]}))),
        ),
        (
            "no-url",
            Fate::Invalid,
            Box::new(|id, _| obj(json!({"id": id}))),
        ),
        (
            "empty-object",
            Fate::Invalid,
            Box::new(|_, _| b"{}".to_vec()),
        ),
        (
            "empty-url",
            Fate::Invalid,
            Box::new(|id, _| obj(json!({"id": id, "url": ""}))),
        ),
        (
            "timeout-string",
            Fate::Invalid,
            Box::new(move |id, g| obj(json!({"id": id, "url": g, "timeout_ms": "fast"}))),
        ),
        (
            "timeout-huge-float",
            Fate::Invalid,
            Box::new(move |id, g| obj(json!({"id": id, "url": g, "timeout_ms": 1e300}))),
        ),
        (
            "status-string",
            Fate::Invalid,
            Box::new(move |id, g| obj(json!({"id": id, "url": g, "expect": {"status": "200"}}))),
        ),
        (
            "unknown-field",
            Fate::Invalid,
            Box::new(move |id, g| obj(json!({"id": id, "url": g, "colour": "blue"}))),
        ),
        (
            "method-post",
            Fate::Invalid,
            Box::new(move |id, g| obj(json!({"id": id, "url": g, "method": "POST"}))),
        ),
        (
            "header-injection",
            Fate::Invalid,
            Box::new(move |id, g| {
                obj(json!({"id": id, "url": g, "headers": {"X-A": "a\r\nX-Injected: 1"}}))
            }),
        ),
        (
            "negative-max-age",
            Fate::Invalid,
            Box::new(move |id, g| obj(json!({"id": id, "url": g, "max_age_s": -1}))),
        ),
        (
            "url-10kb",
            Fate::Invalid,
            Box::new(|id, _| {
                obj(json!({"id": id, "url": format!("http://long.test/{}", "a".repeat(10_240))}))
            }),
        ),
        (
            "javascript",
            Fate::Invalid,
            Box::new(|id, _| obj(json!({"id": id, "url": "javascript:alert(1)"}))),
        ),
        (
            "file",
            Fate::Invalid,
            Box::new(|id, _| obj(json!({"id": id, "url": "file:///etc/passwd"}))),
        ),
        (
            "credentials",
            Fate::Invalid,
            Box::new(|id, _| obj(json!({"id": id, "url": "http://user:pw@creds.test/"}))),
        ),
        (
            "nul-in-host",
            Fate::Invalid,
            Box::new(|id, _| obj(json!({"id": id, "url": "http://nul\u{0}.test/"}))),
        ),
        (
            "space-in-host",
            Fate::Invalid,
            Box::new(|id, _| obj(json!({"id": id, "url": "http://exa mple.test/"}))),
        ),
        (
            "nested-garbage",
            Fate::Invalid,
            Box::new(|_, _| {
                obj(
                    json!({"id": {"deep": [1, {"x": null}]}, "url": {"href": [null, {"a": [[[]]]}]},
                    "expect": [[{}]], "meta": {"a": {"b": {"c": [true, false, null]}}}}),
                )
            }),
        ),
        // Never probe targets, whatever targets.allow_private says.
        (
            "unspecified",
            Fate::Blocked,
            Box::new(|id, _| obj(json!({"id": id, "url": "http://0.0.0.0/"}))),
        ),
        (
            "multicast",
            Fate::Blocked,
            Box::new(|id, _| obj(json!({"id": id, "url": "http://224.0.0.1/"}))),
        ),
        (
            "broadcast",
            Fate::Blocked,
            Box::new(|id, _| obj(json!({"id": id, "url": "http://255.255.255.255/"}))),
        ),
        (
            "ipv6-unspecified",
            Fate::Blocked,
            Box::new(|id, _| obj(json!({"id": id, "url": "http://[::]/"}))),
        ),
    ]
}

/// Targets refused with `allow_private = false` (sent to the strict worker only).
fn refused(bait_port: u16) -> Vec<(&'static str, String)> {
    vec![
        (
            "metadata",
            "http://169.254.169.254/latest/meta-data/".into(),
        ),
        ("metadata-alibaba", "http://100.100.100.200/".into()),
        ("metadata-by-name", "http://metadata.test/".into()),
        ("ipv6-loopback", "http://[::1]/".into()),
        ("rfc1918", "http://10.0.0.1/".into()),
        ("loopback-bait", format!("http://127.0.0.23:{bait_port}/")),
        ("bait-by-name", format!("http://bait.test:{bait_port}/")),
        (
            "mapped-bait",
            format!("http://[::ffff:127.0.0.23]:{bait_port}/"),
        ),
        ("decimal-ip", format!("http://2130706433:{bait_port}/")),
        ("hex-ip", format!("http://0x7f.1:{bait_port}/")),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_barrage_of_malformed_messages_never_stops_the_worker() {
    const ROUNDS: usize = 8;
    let started = Instant::now();
    let (good, good_hits) = target("127.0.0.22", Duration::ZERO).await;
    let (bait, bait_hits) = target("127.0.0.23", Duration::ZERO).await;
    let good_url = format!("http://good.test:{}/", good.port());

    // Two workers, because our good targets live on loopback: `open` allows private
    // targets and gets the good jobs; `strict` does not and gets the refused targets.
    // Both get the same malformed messages.
    let mut open = settings();
    open.targets.allow_private = true;
    open.dns
        .static_hosts
        .insert("good.test".into(), vec!["127.0.0.22".parse().expect("ip")]);
    let mut strict = settings();
    strict.targets.allow_private = false;
    strict.dns.static_hosts.insert(
        "metadata.test".into(),
        vec!["169.254.169.254".parse().expect("ip")],
    );
    strict
        .dns
        .static_hosts
        .insert("bait.test".into(), vec!["127.0.0.23".parse().expect("ip")]);
    // Unresolvable names never reach DNS in these messages; keep a lookup short anyway.
    strict.dns.timeout = Duration::from_secs(1);
    open.dns.timeout = Duration::from_secs(1);

    let client = Client::connect().await;
    client.declare(&open).await;
    client.declare(&strict).await;
    let w_open = Worker::start(&open);
    let w_strict = Worker::start(&strict);

    let huge_len = open.amqp.max_message_bytes + 1000;
    let mut sent_open: Vec<Sent> = Vec::new();
    let mut sent_strict: Vec<Sent> = Vec::new();
    let mut msgs_open = Vec::new();
    let mut msgs_strict = Vec::new();
    for round in 0..ROUNDS {
        for (name, fate, make) in barrage(huge_len) {
            let id = format!("{name}-{round}");
            if fate == Fate::Up {
                msgs_open.push((make(&id, &good_url), persistent(&id)));
                sent_open.push(Sent { id, fate });
                continue;
            }
            for (who, msgs, sent) in [
                ("o", &mut msgs_open, &mut sent_open),
                ("s", &mut msgs_strict, &mut sent_strict),
            ] {
                let id = format!("{who}-{id}");
                msgs.push((make(&id, &good_url), persistent(&id)));
                sent.push(Sent { id, fate });
            }
        }
        for (name, url) in refused(bait.port()) {
            let id = format!("s-{name}-{round}");
            let body = json!({"id": id, "url": url}).to_string().into_bytes();
            msgs_strict.push((body, persistent(&id)));
            sent_strict.push(Sent {
                id,
                fate: Fate::Blocked,
            });
        }
    }
    let results_open = Collector::start(&client.conn, &open.amqp.results_queue).await;
    let dead_open = Collector::start(&client.conn, &open.amqp.dead_letter_queue).await;
    let results_strict = Collector::start(&client.conn, &strict.amqp.results_queue).await;
    let dead_strict = Collector::start(&client.conn, &strict.amqp.dead_letter_queue).await;
    publish_all(&client.ch, &open.amqp.jobs_queue, &msgs_open).await;
    publish_all(&client.ch, &strict.amqp.jobs_queue, &msgs_strict).await;
    let (n_open, n_strict) = (sent_open.len(), sent_strict.len());
    wait_for(
        "every message accounted for",
        Duration::from_secs(60),
        || {
            results_open.len() + dead_open.len() >= n_open
                && results_strict.len() + dead_strict.len() >= n_strict
        },
    )
    .await;
    let quiet = Duration::from_millis(500);
    let (ro, do_, rs, ds) = (
        results_open.finish(quiet).await,
        dead_open.finish(quiet).await,
        results_strict.finish(quiet).await,
        dead_strict.finish(quiet).await,
    );

    let mut problems = Vec::new();
    for (who, sent, results, dead) in [
        ("open", &sent_open, &ro, &do_),
        ("strict", &sent_strict, &rs, &ds),
    ] {
        let by_result: HashMap<&str, &Taken> = results
            .iter()
            .filter_map(|r| Some((r.job_id()?, r)))
            .collect();
        let by_dead: HashMap<&str, &Taken> = dead
            .iter()
            .filter_map(|d| Some((d.message_id.as_deref()?, d)))
            .collect();
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for m in sent {
            let outcome = match (by_result.get(m.id.as_str()), by_dead.get(m.id.as_str())) {
                (Some(r), None) => format!("{}/{}", r.field("verdict"), r.field("reason")),
                (None, Some(_)) => "dead-lettered".to_string(),
                (None, None) => "LOST".to_string(),
                (Some(_), Some(_)) => "BOTH answered and dead-lettered".to_string(),
            };
            let fine = match m.fate {
                Fate::Up => outcome == "up/ok",
                Fate::Invalid => outcome == "invalid/invalid_job",
                Fate::Blocked => outcome == "invalid/blocked_target",
                Fate::Dead => outcome == "dead-lettered",
            };
            if !fine {
                let r = by_result.get(m.id.as_str()).map_or(String::new(), |r| {
                    String::from_utf8_lossy(&r.data).chars().take(400).collect()
                });
                problems.push(format!("{who} {} ({:?}): {outcome} {r}", m.id, m.fate));
            }
            *counts
                .entry(match outcome.as_str() {
                    "dead-lettered" => "dead-lettered",
                    o if o.starts_with("up/") => "up",
                    o if o.starts_with("invalid/") => "invalid",
                    _ => "other",
                })
                .or_default() += 1;
        }
        for r in results.iter() {
            if r.routing_key != r.field("verdict") {
                problems.push(format!(
                    "{who}: routing key {} for {:?}",
                    r.routing_key,
                    r.job_id()
                ));
            }
        }
        // Every dead letter says why.
        for d in dead.iter() {
            if d.reason.as_deref().unwrap_or("").is_empty() {
                problems.push(format!("{who}: dead letter without x-picket-reason"));
            }
        }
        let want_up = sent.iter().filter(|m| m.fate == Fate::Up).count();
        let want_dead = sent.iter().filter(|m| m.fate == Fate::Dead).count();
        eprintln!(
            "barrage {who}: sent {} ({want_up} good, {} bad); results {} (up {}, invalid {}), \
             dead-lettered {} (expected {want_dead}); outcomes {counts:?}",
            sent.len(),
            sent.len() - want_up,
            results.len(),
            results
                .iter()
                .filter(|r| r.field("verdict") == "up")
                .count(),
            results
                .iter()
                .filter(|r| r.field("verdict") == "invalid")
                .count(),
            dead.len(),
        );
        if results.len() + dead.len() != sent.len() {
            problems.push(format!(
                "{who}: {} results + {} dead letters for {} messages sent",
                results.len(),
                dead.len(),
                sent.len()
            ));
        }
    }
    assert!(
        problems.is_empty(),
        "{} problems:\n{}",
        problems.len(),
        problems.join("\n")
    );
    assert_eq!(
        bait_hits.load(Ordering::SeqCst),
        0,
        "no request reached a refused target"
    );
    assert!(good_hits.load(Ordering::SeqCst) >= ROUNDS * 4);

    // Both workers are still up, ready, and answer a job sent last.
    for (s, w) in [(&open, &w_open), (&strict, &w_strict)] {
        assert!(!w.task.is_finished(), "worker still running");
        let health = get_ops(w.ops, "/healthz").await;
        assert_eq!(health.map(|h| h.0), Some(200));
        let ready = get_ops(w.ops, "/readyz").await;
        assert_eq!(ready.map(|h| h.0), Some(200));
        assert_eq!(client.depth(&s.amqp.jobs_queue).await, 0);
    }
    client
        .job(&open, json!({"id": "last", "url": good_url}))
        .await;
    let r = client.results(&open, 1, Duration::from_secs(20)).await;
    assert_eq!(r[0]["job_id"], "last");
    assert_eq!(r[0]["verdict"], "up");
    eprintln!("barrage done in {:?}", started.elapsed());
    w_open.shutdown().await;
    w_strict.shutdown().await;
}
