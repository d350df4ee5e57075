//! Addresses: a dual-stack name whose IPv4 address refuses, and a name with a dead
//! address beside a live one.

use super::*;

// ---------------------------------------------------------------------------
// Dual stack: the IPv4 address refuses, the IPv6 one answers

pub(super) async fn dual_stack(b: &mut Builder) {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("farm: no IPv6 loopback here; target dual-stack left out");
        return;
    }
    refused_then_answered(
        b,
        "dual-stack",
        "::1",
        "Reachable over IPv6.",
        "IPv4 address refuses, IPv6 address answers: browsers fall back (Happy Eyeballs)",
    )
    .await;
}

/// Two IPv4 addresses for one name, the first refusing: a load-balanced site with one
/// backend down. Browsers try the next address on a failed connect.
pub(super) async fn second_address(b: &mut Builder) {
    let live = b.ip();
    refused_then_answered(
        b,
        "second-address",
        &live,
        "Served by the second address.",
        "two A records, the first refuses (one backend down): browsers try the next address",
    )
    .await;
}

/// Target `name` whose host name resolves to a farm IPv4 address that refuses, then to
/// `live`, which serves the page on the same port: up/ok, from `live`, and the detail
/// says which address failed.
pub(super) async fn refused_then_answered(
    b: &mut Builder,
    name: &'static str,
    live: &str,
    text: &'static str,
    truth_words: &'static str,
) {
    let p = page("County office", text);
    let served = serve(
        live,
        Router::new().route("/", any(move || async move { html(StatusCode::OK, p) })),
    )
    .await;
    let dead = b.refusing_on(served.port()).ip();
    let host = b.host(name, &format!("{dead}, {live}"));
    b.targets.push(Target {
        name,
        url: format!("http://{host}:{}/", served.port()),
        expect: None,
        truth: truth("up", Some("ok"), truth_words),
        picket: said("up", "ok"),
        facts: vec![
            Fact::Ip(live.to_string()),
            Fact::DetailContains("answered instead"),
            Fact::Attempts(1),
        ],
    });
}
