//! Our standing with one target IP: whether it is refusing *us*, and the holds that
//! follow.
//!
//! A defence that trips (mod_evasive's 403 storm, nginx `limit_req`'s 503s or 444s, a
//! 429, a firewall's resets or refused connections) refuses every host on the address at
//! once, right after it was answering us. One site failing does not look like that: its neighbours keep
//! answering. So a refusal counts as a refusal of us when [`STORM_HOSTS`] different
//! hosts of the IP refused within [`REFUSAL_WINDOW`] and the IP had answered us within
//! [`OK_WINDOW`] before, or when the IP is already backed off. Then the IP is held for
//! `backoff · 2^(level-1)` (capped at [`MAX_HOLD`]) and asked at `rate / 2^level` with no
//! burst and one request in flight afterwards (a connection limit may be what refused
//! us); a refusal after the hold raises the level, and answers without refusal for
//! [`DECAY_AFTER`] lower it by one.
//!
//! Closed connections and 503s count once: a crashed backend closes them just as
//! nginx's 444 refusal does, and a shared server whose backend died answers its front's
//! 503 on every host just as a tripped `limit_req` does, so after one hold they are the
//! site's failure again ([`AfterHold`]). Refused and timed-out connections count until
//! a hold as long as `rate_limit.drop_memory`: a firewall rejecting or dropping a
//! client's connections over their rate (iptables' `recent --update`) counts every one
//! it turns away, so only staying away that long ends its ban, and a server that
//! stopped listening, or a machine gone from the network, is judged then.
//! Closed connections and 503s count again once the IP answered after the hold:
//! nginx's limit refuses only what is still too fast. Refused, timed-out and
//! closed connections count again while a ban may follow the server's own refusal of us
//! ([`BAN_MEMORY`]): fail2ban reads the refusals in the server's log and bans the
//! address, mod_evasive runs its `DOSSystemCommand`, and ModSecurity's CRS drops the
//! connections of a client it blocked for `dos_block_timeout` (10 minutes).
//!
//! A host whose refusal was taken for one of us before, refusing again after a hold
//! while the IP answers its other hosts, does not step the hold up
//! ([`again_while_answering`]): broken sites beside working ones on a shared server
//! would otherwise halve the IP's rate check after check. Refusing so in
//! [`AGAIN_TIMES`] checks over at least [`AGAIN_OVER`], it is the site's failure: a
//! limit lets the same host through now and then, and a ban of us on that site alone
//! (ModSecurity's per-site rules, a CMS's lockout) ends within the hour.
//!
//! A `Retry-After` holds only the host that sent it; the IP is held when several of its
//! hosts say so at once. [`Standing`] is the in-memory form (the local limiter); the
//! shared limiter keeps the same fields in one Redis hash per IP (`limit/redis.rs`).

use std::time::Duration;

use tokio::time::Instant;

use super::Hold;

/// Refusals from different hosts within this window are one storm.
pub(crate) const REFUSAL_WINDOW: Duration = Duration::from_secs(10);
/// The IP answered us within this long before the refusals: they follow our requests.
pub(crate) const OK_WINDOW: Duration = Duration::from_secs(30);
/// Different hosts that must refuse before the IP is taken to refuse us.
pub(crate) const STORM_HOSTS: usize = 2;
/// The longest hold.
pub(crate) const MAX_HOLD: Duration = Duration::from_secs(600);
/// The highest back-off level (the rate is divided by 2^level).
pub(crate) const MAX_LEVEL: u32 = 6;
/// Answers without a refusal for this long lower the level by one.
pub(crate) const DECAY_AFTER: Duration = Duration::from_secs(60);
/// How long after a server's own refusal of us (a 403 storm, `limit_req`'s 503s or 444s)
/// connections it refuses or drops are taken for a firewall ban that followed, while the
/// IP has not answered since a hold ended: fail2ban's default `bantime` is 10 minutes,
/// and operators often raise it to an hour.
pub(crate) const BAN_MEMORY: Duration = Duration::from_secs(3600);
/// How long after the server's refusal of us a ban may still be on its way, by default
/// (`rate_limit.ban_reaction` in config/default.toml; the tests' standings use it):
/// fail2ban reads the server's log once a second (its polling backend) and then runs
/// its firewall action, seconds later on a busy host. An answer since the hold rules a
/// ban out only when it came this long after the refusal; one sooner (a hold shorter
/// than the reaction) may be followed by the ban all the same.
#[cfg(test)]
pub(crate) const BAN_REACTION: Duration = Duration::from_secs(10);
/// Checks, at least [`REFUSAL_WINDOW`] apart, in which a host refuses again after a hold
/// while the IP answers its other hosts ([`again_while_answering`]) before its refusals
/// are the site's failure (over [`AGAIN_OVER`] at least): a limit of ours refusing what
/// is still too fast lets the same host through now and then, a broken site never.
pub(crate) const AGAIN_TIMES: u32 = 3;
/// How long a host must go on refusing again, from the first time, before its refusals
/// are the site's failure. A ban of our address on some sites of a server alone refuses
/// the same hosts every time while their neighbours answer, just as broken sites do
/// (review AB: ModSecurity's per-site flood rule banning us for `expirevar=600`); such
/// bans last minutes (ModSecurity's examples 10, fail2ban's default 10, CMS lockouts 5
/// to 60), so one going on for the hour of [`BAN_MEMORY`] is taken for the site's.
pub(crate) const AGAIN_OVER: Duration = BAN_MEMORY;
/// Hosts remembered per IP (refusals and host holds each).
const MAX_HOSTS: usize = 32;

/// Weight of the newest latency in the smoothed one.
const PACE_ALPHA: f64 = 0.3;
/// The widest spacing latency pacing asks for.
pub(crate) const MAX_PACE: Duration = Duration::from_secs(30);
/// Smoothed latencies below this do not pace: a server answering within two seconds is
/// not struggling, and below it our own scheduling (a busy worker, a loaded machine)
/// would be taken for the server's slowness and throttle healthy hosts.
pub(crate) const PACE_ABOVE: Duration = Duration::from_secs(2);

/// The smoothed answer latency of one IP: the least spacing of requests to it.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct Pace {
    ewma_ms: f64,
}

impl Pace {
    /// One more latency (starting from zero, so one slow answer alone weighs little).
    pub(crate) fn observe(&mut self, latency: Duration) {
        let ms = latency.as_secs_f64() * 1000.0;
        self.ewma_ms = PACE_ALPHA * ms + (1.0 - PACE_ALPHA) * self.ewma_ms;
    }

    /// The least spacing of requests, in ms (0 while answers come within
    /// [`PACE_ABOVE`]).
    pub(crate) fn interval_ms(&self) -> f64 {
        if self.ewma_ms < PACE_ABOVE.as_secs_f64() * 1000.0 {
            return 0.0;
        }
        self.ewma_ms.min(MAX_PACE.as_secs_f64() * 1000.0)
    }
}

/// How an IP answered one request, as far as our standing goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An answer that is not a refusal.
    Fine,
    /// 403, 429, 503 or 999, or an error page naming a firewall or limit.
    Refused(u16),
    /// A 500 whose page names nothing (Apache's stock page): a site's own error, or a
    /// limit refusing us in the status mod_qos answers by default. One host's is its
    /// own; a storm of them is a refusal of us, as a 503 storm is.
    Errored(u16),
    /// The same asking for a pause (`Retry-After`): a site in maintenance says when to
    /// come back, where a limit still counting a burst (nginx's `limit_req`, haproxy's
    /// `deny`) says nothing. Read as [`Signal::Refused`] but for that.
    Paused(u16),
    /// The connection was reset before an answer.
    Reset,
    /// The connection was refused (TCP RST or ICMP port unreachable to our SYN): what a
    /// firewall ban (iptables `REJECT`, fail2ban) looks like, and also a server that
    /// stopped listening.
    ConnectionRefused,
    /// The connection was closed without an answer: nginx's 444, which many hardening
    /// guides make `limit_req_status`, and also a backend crashing behind a proxy.
    Closed,
    /// No connection in time (our SYN unanswered), after waiting this long: what a
    /// firewall ban that drops packets looks like (fail2ban's `blocktype = DROP`,
    /// mod_evasive's `iptables -j DROP`), and also a host gone from the network.
    TimedOut(Duration),
    /// Connected and asked, but no answer in time, after waiting this long: haproxy's
    /// `silent-drop` (the connection vanishes without a word to us), and also a server
    /// that hangs, where our wait was too short to tell the two apart ([`HeldOpen`]).
    ///
    /// [`HeldOpen`]: Signal::HeldOpen
    Unanswered(Duration),
    /// Connected and asked, no answer in time, after waiting this long, on a connection
    /// the server kept open all the while: its TCP keepalive answers came back
    /// (`http::client::KEPT_OPEN_AFTER`), where one dropped without a word (haproxy's
    /// `silent-drop`) answers the first keepalive probe with a reset. A server hanging
    /// (an application waiting on its database), or a limit holding what it refused
    /// (haproxy's `tarpit` set longer than we wait, nginx delaying what came too fast).
    HeldOpen(Duration),
    /// The same, for a request of a backed-off IP that went out right behind another of
    /// ours (`Permit::at_our_pace`): what a limit counting a client's requests per
    /// second holds when our pace is over it, where one asked alone trips none.
    HeldAtOurPace(Duration),
    /// A limit-like refusal after a hold (its [`Signal::code`]: a 503, a close, a reset)
    /// while a host of the same IP that served us lately, asked right then, was refused
    /// alike (`http::neighbour`): the IP still refuses us, whatever the site.
    NeighbourToo(u16),
}

impl Signal {
    /// The signal of an HTTP status (403, 429 and 503 are what defences answer; 999 is
    /// what LinkedIn-style sites answer automated clients).
    pub(crate) fn of_status(status: u16) -> Signal {
        match status {
            403 | 429 | 503 | 999 => Signal::Refused(status),
            _ => Signal::Fine,
        }
    }

    /// The signal of an error page whose status says nothing of us but whose words do:
    /// a firewall's or rate limit's own page (`probe::pages::firewall_block`), as
    /// haproxy's tarpit 500 or ModSecurity's 406 on LiteSpeed. `Fine` for anything else.
    pub(crate) fn of_block_page(status: u16, text: &str) -> Signal {
        let error = (400..=599).contains(&status);
        if error && crate::probe::pages::firewall_block(text).is_some() {
            Signal::Refused(status)
        } else if status == 500 {
            Signal::Errored(status)
        } else {
            Signal::of_status(status)
        }
    }

    /// The code that names it in words ([`describe`]): the status, 0 for a reset, 1 for
    /// a refused connection, 2 for one closed without an answer, 3 for one timed out.
    pub(crate) fn code(self) -> u16 {
        match self {
            Signal::Fine => 200,
            Signal::Refused(s) | Signal::Paused(s) | Signal::NeighbourToo(s) => s,
            Signal::Errored(s) => s,
            Signal::Reset => 0,
            Signal::ConnectionRefused => 1,
            Signal::Closed => 2,
            Signal::TimedOut(_) => 3,
            Signal::Unanswered(_) => 4,
            Signal::HeldOpen(_) | Signal::HeldAtOurPace(_) => 5,
        }
    }

    /// How long the request waited before this came: a refusal is of the moment the
    /// request was sent, and "right after it answered us" counts from then.
    pub(crate) fn waited(self) -> Duration {
        match self {
            Signal::TimedOut(d)
            | Signal::Unanswered(d)
            | Signal::HeldOpen(d)
            | Signal::HeldAtOurPace(d) => d,
            _ => Duration::ZERO,
        }
    }

    /// Whether it may be a refusal of us, given how the IP has answered lately (`pace`):
    /// requests timing out at an IP whose answers were already slow are a server
    /// struggling under its load, not one dropping us (haproxy's `silent-drop` and a
    /// firewall's DROP turn away a client the server was answering at once).
    pub(crate) fn may_refuse(self, pace: &Pace) -> bool {
        !matches!(
            self,
            Signal::TimedOut(_)
                | Signal::Unanswered(_)
                | Signal::HeldOpen(_)
                | Signal::HeldAtOurPace(_)
        ) || pace.interval_ms() == 0.0
    }

    /// The same, asking for a pause when it did (`Retry-After`).
    pub(crate) fn asking(self, pause: Option<Duration>) -> Signal {
        match (self, pause) {
            (Signal::Refused(status), Some(_)) => Signal::Paused(status),
            _ => self,
        }
    }

    /// Whether a limit still counting an earlier burst from our address answers it to
    /// every request of a client it never served: nginx's `limit_req` (503 by default,
    /// or its 444), haproxy's `deny_status 503`, `tcp-request connection reject` and
    /// `silent-drop` (a reset), mod_qos's per-client limits (500 by default). Refused and timed-out connections are what a server
    /// that is gone gives, and a request held or left unanswered what one that hangs
    /// gives: those are judged at once (`Standing::refused`).
    pub(crate) fn refuses_like_a_limit(self) -> bool {
        matches!(
            self,
            Signal::Refused(503)
                | Signal::Errored(_)
                | Signal::Closed
                | Signal::Reset
                | Signal::NeighbourToo(_)
        )
    }

    /// Whether a neighbour's answer may tell, after a hold, a limit remembering us from
    /// the site failing (`http::neighbour`): a limit's kind of refusal, and a 503 asking
    /// a pause, which a limit answers too when its operator added `Retry-After` (haproxy's
    /// `deny ... hdr Retry-After`) and which reads as a site in maintenance otherwise.
    pub(crate) fn a_neighbour_may_tell(self) -> bool {
        self.refuses_like_a_limit() || self == Signal::Paused(503)
    }

    /// Whether it came from a server that is there and turned us away (an answer, a
    /// reset or a close), not from a door shut before any server saw us.
    pub(crate) fn is_the_servers(self) -> bool {
        !matches!(self, Signal::ConnectionRefused | Signal::TimedOut(_))
    }
}

/// A refusal of us, recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// How long the IP is held from now.
    pub hold: Duration,
    /// The back-off level now.
    pub level: u32,
    /// One readable line naming what refused us.
    pub detail: String,
    /// The same told as what happened, for when the request is asked again after the
    /// hold: its answer then judges the site, so this claims nothing of the site (a dead
    /// backend's 503s on every host look like a limit's until they outlast a hold).
    pub asked_again: String,
}

impl Refusal {
    /// `seen` (what refused us) taken for a refusal of us, `why` in words; `ip` held for
    /// `hold` at back-off `level`.
    fn held(seen: String, why: &str, ip: &str, hold: Duration, level: u32) -> Refusal {
        let secs = hold.as_secs();
        Refusal {
            hold,
            level,
            detail: format!(
                "{seen}: {why}; {ip} is left alone for {secs} s (back-off level {level})"
            ),
            asked_again: format!(
                "first {seen}, taken for a refusal of us: {ip} was left alone for {secs} s \
                 (back-off level {level}), then asked again"
            ),
        }
    }
}

/// The hold for back-off `level` (1 = the first).
pub(crate) fn hold_for(base: Duration, level: u32) -> Duration {
    let doublings = level.saturating_sub(1).min(16);
    (base * 2u32.pow(doublings)).min(MAX_HOLD)
}

/// A signal's code ([`Signal::code`]) in words.
fn in_words(code: u16) -> Option<std::borrow::Cow<'static, str>> {
    Some(match code {
        403 => "403 Forbidden (a mod_evasive-style 403 storm)",
        503 => "503 Service Unavailable (a limit_req-style refusal)",
        500 => "500 Internal Server Error (a limit's refusal: mod_qos's by default, haproxy's tarpit)",
        429 => "429 Too Many Requests",
        999 => "999 Request Denied (a refusal of automated clients)",
        0 => "connection resets (a firewall-style ban, or haproxy's silent-drop met by our keepalive)",
        1 => "connections refused (a firewall-style ban, as fail2ban's REJECT)",
        2 => {
            "connections closed without an answer (nginx's 444 or haproxy's reject, a rate \
             limit's refusal)"
        }
        3 => {
            "connections timing out (a firewall-style ban dropping our packets, as fail2ban's DROP)"
        }
        4 => "requests left without an answer (haproxy's silent-drop, a rate limit's refusal)",
        5 => {
            "requests held open without an answer (haproxy's tarpit, a rate limit holding \
             what came too fast)"
        }
        // Any other status refuses us only by its page (`Signal::of_block_page`).
        100..=599 => {
            return Some(format!("{code} block pages (a firewall's or rate limit's own page)").into())
        }
        _ => return None,
    }
    .into())
}

/// What refused us (`code` as in [`Signal::code`]), from `hosts` hosts of `ip`: a storm
/// right after answers, or, from fewer hosts than a storm, a refusal going on after our
/// hold (the IP was backed off already).
pub(crate) fn describe(code: u16, hosts: usize, ip: &str, hold: Duration, level: u32) -> Refusal {
    let what = in_words(code).unwrap_or_else(|| format!("{code}").into());
    let (seen, why) = if hosts < STORM_HOSTS {
        (
            format!("{what} from {ip} again after our hold"),
            "it still refuses us, not the site failing",
        )
    } else {
        (
            format!("{what} from {hosts} hosts of {ip} right after it answered us"),
            "it refuses us, not the site failing",
        )
    };
    Refusal::held(seen, why, ip, hold, level)
}

/// What refused us (`code`), from `hosts` hosts of `ip` at once before it answered us:
/// held once, the first step, to tell a limit still counting an earlier burst from our
/// address (a second run right after the first, another client on our egress) from the
/// server failing on every host. Asked again after the hold, a limit with a short memory
/// lets us through; a server still failing then is judged so (`AfterHold`).
pub(crate) fn describe_unanswered(
    code: u16,
    hosts: usize,
    ip: &str,
    hold: Duration,
    level: u32,
) -> Refusal {
    let what = in_words(code).unwrap_or_else(|| format!("{code}").into());
    Refusal::held(
        format!("{what} from {hosts} hosts of {ip} at once, before it answered us"),
        "a limit still counting an earlier burst from our address, or the server failing \
         on every host, told apart after a hold",
        ip,
        hold,
        level,
    )
}

/// A refusal (`code`) from `host` again, after a hold, while the IP answers its other
/// hosts: not stepped up. A client-keyed defence refuses whichever host is asked, and
/// one still tripping refuses hosts that had not refused before (those step it up);
/// the same few hosts refusing check after check while their neighbours answer are as
/// likely those sites failing on their own (a deleted index's 403, a dead pool's 503),
/// and stepping up for them would halve the IP's rate again and again, starving every
/// neighbour. With one egress the two cannot be told apart at once, so the verdict
/// stays `unknown/blocked` and the IP is not held again; a host refusing so in
/// [`AGAIN_TIMES`] checks is the site failing (a limit still tripping refuses whichever
/// request comes too fast, not the same host every time), and its refusal no longer
/// counts (`Standing::refused`).
pub(crate) fn again_while_answering(code: u16, host: &str, ip: &str, level: u32) -> Refusal {
    let what = in_words(code).unwrap_or_else(|| format!("{code}").into());
    let detail = format!(
        "{what} again from {host}, which refused before the last hold, while {ip} answers \
         its other hosts: these sites may be failing on their own, or a limit refusing \
         what is still too fast; not held again (back-off level {level})"
    );
    Refusal {
        hold: Duration::ZERO,
        level,
        // Nothing is held, so nothing is asked again.
        asked_again: detail.clone(),
        detail,
    }
}

/// A refused, timed-out or closed connection, or a request held open (`code`), taken for
/// a ban that followed the server's own refusal of us (`by_code`), in words.
pub(crate) fn describe_ban(
    code: u16,
    by_code: u16,
    ip: &str,
    hold: Duration,
    level: u32,
) -> Refusal {
    let what = in_words(code).unwrap_or("connections failing".into());
    let by = in_words(by_code).unwrap_or("a refusal".into());
    if code == Signal::Closed.code() {
        let since = if in_words(code) == in_words(by_code) {
            "still, as since it began refusing us right after answering".to_string()
        } else {
            format!("since it refused us with {by}")
        };
        return Refusal::held(
            format!("{what} from {ip} {since}"),
            "a block outlasting our hold (ModSecurity CRS's DoS protection drops a blocked \
             client's connections for minutes), not the site failing",
            ip,
            hold,
            level,
        );
    }
    if code == Signal::HeldOpen(Duration::ZERO).code() {
        return Refusal::held(
            format!("{what} from {ip} after it refused us with {by}"),
            "a tarpit holding every request of a client it flagged (haproxy's stick-table \
             recipe, the flag kept by each request), not the site failing",
            ip,
            hold,
            level,
        );
    }
    Refusal::held(
        format!("{what} from {ip} after it refused us with {by}"),
        "a ban following the tripped defence (fail2ban reading the server's log, \
         mod_evasive's DOSSystemCommand), not the site failing",
        ip,
        hold,
        level,
    )
}

/// How `signal`, from a backed-off IP whose hold is over, is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum AfterHold {
    /// More of the refusal of us (403/429/999, a firewall's page): a server that is
    /// there, and a status or page that says it refuses. mod_evasive's block outlasts a
    /// hold when its `DOSBlockingPeriod` is longer, and each request lengthens it.
    Refusal,
    /// Resets: more of the refusal of us from an IP that ever answered us; from one that
    /// never did, the site's own failure once a hold is over. Held once for resets on
    /// every host before any answer (a limit still counting an earlier burst from our
    /// address: haproxy's `tcp-request connection reject`), a server that resets every
    /// connection of its own (a broken TLS front) does so still after the hold, and
    /// taking that for a ban would keep it `unknown` for as long as it is broken.
    RefusalOnceAnswered,
    /// Connections timing out or refused: the site's own failure once a hold lasted
    /// [`Backoff::drop_memory`] (or the level is back to 0), or on one host alone once
    /// the IP answered since the hold (the door open again), unless a ban may follow
    /// the server's refusal of us ([`BAN_MEMORY`]) and the IP has not answered since
    /// the hold ended.
    ///
    /// A firewall turning away a client over its rate of new connections (iptables'
    /// `recent --update --seconds 60 --hitcount 20`, the tutorials' flood defence, and
    /// `hashlimit`) counts each connection it drops or rejects as one more, so its ban
    /// ends only once we stay away its whole window: asked again after one hold, it is
    /// lengthened, not over (review AG: 9 of 30 hosts `down/timeout` under `DROP`, 11
    /// of 11 refused hosts `down/connect` under `REJECT`). Its `REJECT` reaches us as a
    /// refused connection, exactly as a server that stopped listening refuses (an ICMP
    /// port-unreachable and a reset are both `ECONNREFUSED`; only the socket's error
    /// queue tells them apart, which reqwest's connector gives no way to read), and
    /// the machine gone from the network is silent as a `DROP` is. So either, on every
    /// host right after answers, is held until we stayed away for the window: a
    /// shared server that crashed as we asked it is `unknown` for the holds before
    /// it is `down`, rather than a ban of us being its sites `down`. When the server
    /// itself refused us shortly before, the shut door is what fail2ban and
    /// mod_evasive's `DOSSystemCommand` do next: a server that was there refusing our
    /// requests does not vanish on its own.
    TurnedAwayWhileRemembered,
    /// The site's own failure, unless the IP answered since the hold ended: nginx's 444
    /// or 503 refusal lets the first request after a hold through (its bucket drained)
    /// and refuses again only what is still too fast, while a shared server whose
    /// backend (PHP-FPM, an application server) died answers its front's 503 to every
    /// request, the first after a pause too.
    SitesUnlessAnswered,
    /// Connections closed without an answer: the site's own failure only when neither
    /// the IP answered since the hold ended (nginx's 444, as above) nor a ban may follow
    /// the server's refusal of us ([`BAN_MEMORY`]). ModSecurity's CRS blocks a client
    /// that made two bursts by dropping its connections (rule 912120's `drop`) for
    /// `dos_block_timeout`, 10 minutes in crs-setup's example, and haproxy's `reject`
    /// on a stick table's ban flag lasts as long as its entry: a server that was
    /// answering us does not start closing every connection on every host of its own
    /// right after our requests, and one that does (a crashed backend) is judged so
    /// once the ban's memory is over.
    SitesUnlessAnsweredOrBanned,
    /// Requests held open without an answer ([`Signal::HeldOpen`]): the site's own
    /// failure, whether or not its neighbours answer, unless the server itself refused
    /// us in words ([`AfterHold::follows`]: a status or page naming us) within
    /// [`BAN_MEMORY`] and the IP has not answered since the hold. A limit that holds
    /// what it refuses (haproxy's `tarpit`, nginx's delaying `limit_req`) holds only
    /// what comes too fast, and after a hold we ask at half the rate, one request at a
    /// time; a backend that hangs behind several hosts of a shared server holds them
    /// still, while the server answers its other hosts at once (hunt Z3). But a tarpit
    /// that flagged us (haproxy's stick-table "flag abusers" recipe: each of our
    /// requests keeps the flag) holds every request of ours, each until its tarpit
    /// ends in haproxy's 500, which the request asked again after a hold waits for
    /// (`http::connect`): once that page refused us, what it holds next is more of it.
    SitesUnlessRefused,
    /// A request held open that went out right behind others of ours
    /// ([`Signal::HeldAtOurPace`]): a limit counting a client's requests per second
    /// (haproxy's `http_req_rate(1s)` tarpit) that our pace after the hold is still
    /// over, as an override's 10 a second halved is over haproxy's 3. A refusal of us,
    /// stepped up even from a host that refused before: it is the pace that is held,
    /// whichever host comes at it. A backend hanging holds a request asked alone too,
    /// and once the pace is slower than one a second every request is asked alone.
    AtOurPace,
    /// A limit-like refusal that a neighbour which served us lately met too, right then
    /// ([`Signal::NeighbourToo`]): a limit whose memory outlasts our hold (haproxy's
    /// `http_req_rate(10s)`, nginx's r/m) refuses every host of ours, where a site
    /// failing beside working neighbours fails alone. A refusal of us, held again, until
    /// the holds add up to [`Backoff::memory`]: a shared server whose backend died
    /// answers every host alike for as long as it is dead, and is failing then. So is a
    /// 500 after a hold: mod_qos's per-client limits answer it to every host for as
    /// long as their window remembers us (haproxy's tarpit too, in its page), and so
    /// does a shared server whose database is gone.
    WhileRemembered,
}

impl AfterHold {
    /// How `signal` is read after a hold.
    pub(crate) fn of(signal: Signal) -> AfterHold {
        match signal {
            Signal::ConnectionRefused | Signal::TimedOut(_) => AfterHold::TurnedAwayWhileRemembered,
            Signal::Closed => AfterHold::SitesUnlessAnsweredOrBanned,
            Signal::Unanswered(_) | Signal::Refused(503) | Signal::Paused(503) => {
                AfterHold::SitesUnlessAnswered
            }
            Signal::HeldOpen(_) => AfterHold::SitesUnlessRefused,
            Signal::HeldAtOurPace(_) => AfterHold::AtOurPace,
            Signal::Reset => AfterHold::RefusalOnceAnswered,
            Signal::NeighbourToo(_) | Signal::Errored(_) => AfterHold::WhileRemembered,
            Signal::Fine | Signal::Refused(_) | Signal::Paused(_) => AfterHold::Refusal,
        }
    }

    /// Whether it is the site's, given what is known since the hold ([`Since`]).
    pub(crate) fn is_the_sites(self, since: Since) -> bool {
        let Since {
            answered,
            banned,
            ever,
            outlasted,
            outwaited,
            alone,
        } = since;
        match self {
            AfterHold::Refusal | AfterHold::AtOurPace => false,
            AfterHold::WhileRemembered => outlasted,
            AfterHold::RefusalOnceAnswered => !ever,
            AfterHold::TurnedAwayWhileRemembered => !banned && (outwaited || (answered && alone)),
            AfterHold::SitesUnlessAnswered => !answered,
            AfterHold::SitesUnlessAnsweredOrBanned => !answered && !banned,
            AfterHold::SitesUnlessRefused => !banned,
        }
    }

    /// Whether a ban following the server's refusal of us may make it.
    pub(crate) fn may_be_a_ban(self) -> bool {
        matches!(
            self,
            AfterHold::TurnedAwayWhileRemembered
                | AfterHold::SitesUnlessAnsweredOrBanned
                | AfterHold::SitesUnlessRefused
        )
    }

    /// Whether it may follow the server's refusal of us that had code `by`
    /// ([`Signal::code`]): requests held open follow only a status or page that names
    /// us (403, 429, 999, a firewall's or tarpit's page). A backend hanging behind
    /// several hosts holds their requests in a storm of its own (hunt Z3), and a
    /// server whose backends are saturated answers 503 to some requests (haproxy's
    /// `timeout queue`, Varnish's "Backend fetch failed") while it holds the others.
    pub(crate) fn follows(self, by: u16) -> bool {
        self != AfterHold::SitesUnlessRefused || ((100..=599).contains(&by) && by != 503)
    }

    /// Its code for the `REFUSE` script.
    pub(crate) fn code(self) -> u8 {
        match self {
            AfterHold::Refusal => 0,
            AfterHold::SitesUnlessAnswered => 2,
            AfterHold::SitesUnlessAnsweredOrBanned => 3,
            AfterHold::SitesUnlessRefused => 4,
            AfterHold::AtOurPace => 5,
            AfterHold::RefusalOnceAnswered => 6,
            AfterHold::WhileRemembered => 7,
            AfterHold::TurnedAwayWhileRemembered => 8,
        }
    }
}

/// Whether a hold that lasted `until` is over at `now` with no answer since `last_ok`.
pub(crate) fn quiet_after(until: Option<Instant>, last_ok: Option<Instant>, now: Instant) -> bool {
    until.is_some_and(|u| now >= u && last_ok.is_none_or(|ok| ok < u))
}

/// What is known of an IP since its hold, to read a refusal after it ([`AfterHold`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Since {
    /// The IP answered since the hold ended.
    pub(crate) answered: bool,
    /// A ban may follow the server's refusal of us.
    pub(crate) banned: bool,
    /// The IP ever answered us.
    pub(crate) ever: bool,
    /// The holds so far add up to [`Backoff::memory`]: no limit remembers that long.
    pub(crate) outlasted: bool,
    /// The last hold lasted [`Backoff::drop_memory`], or the level is back to 0: a
    /// firewall dropping our connections, each knock lengthening its ban, forgot us.
    pub(crate) outwaited: bool,
    /// No other host of the IP refused since the hold ended (within
    /// [`REFUSAL_WINDOW`]): one host's failure while the IP answers is its own, as
    /// before any hold.
    pub(crate) alone: bool,
}

/// How an IP that refused us is held (`[rate_limit]`'s `backoff` and `limit_memory`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Backoff {
    /// The first hold; doubled at each level.
    pub(crate) base: Duration,
    /// How long a limit may remember our requests ([`AfterHold::WhileRemembered`]).
    pub(crate) memory: Duration,
    /// How long a firewall dropping or rejecting our connections may remember them
    /// ([`AfterHold::TurnedAwayWhileRemembered`]).
    pub(crate) drop_memory: Duration,
    /// How long after the server's refusal a firewall's ban may still come
    /// (`rate_limit.ban_reaction`, 10 s by default).
    pub(crate) ban_reaction: Duration,
}

impl Backoff {
    /// The holds `[rate_limit]` sets.
    pub(crate) fn of(settings: &crate::config::RateLimitSettings) -> Backoff {
        Backoff {
            base: settings.backoff,
            memory: settings.limit_memory,
            drop_memory: settings.drop_memory,
            ban_reaction: settings.ban_reaction,
        }
    }

    /// Whether holds at levels 1 to `level` add up to [`Backoff::memory`].
    pub(crate) fn outlasted(&self, level: u32) -> bool {
        let held: Duration = (1..=level).map(|l| hold_for(self.base, l)).sum();
        held >= self.memory
    }

    /// Whether the hold at `level` lasts [`Backoff::drop_memory`] (none at level 0).
    pub(crate) fn outwaited(&self, level: u32) -> bool {
        level == 0 || hold_for(self.base, level) >= self.drop_memory
    }
}

/// The standing with one IP, in memory.
#[derive(Debug, Default)]
pub(crate) struct Standing {
    last_ok: Option<Instant>,
    /// (host, when) of recent refusals.
    refusals: Vec<(String, Instant)>,
    level: u32,
    /// The end of the IP's current hold.
    until: Option<Instant>,
    /// The last refusal, or the last step down.
    last: Option<Instant>,
    /// (host, until, how) of the holds on single hosts.
    host_holds: Vec<(String, Instant, Hold)>,
    /// The end of the IP's pause while several of its hosts are held: the earliest end
    /// of their holds when the last of them began (the Redis script `HOLD`'s `pause`).
    paused_until: Option<Instant>,
    /// When the server itself last refused us, and how ([`Signal::code`]).
    server_refused: Option<(Instant, u16)>,
    /// (host, when) of the refusals taken for a refusal of us, to know a host that
    /// refuses again ([`again_while_answering`]).
    counted: Vec<(String, Instant)>,
    /// The hosts refusing again while the IP answered.
    again: Vec<Again>,
    /// When the IP's storm began before any answer ([`describe_unanswered`]), and its
    /// code when the server's own ([`Signal::is_the_servers`]), while no answer came
    /// since: its refusals, during the hold too, are no server refusing us that a ban
    /// may follow (a server closing every connection of its own is failing).
    quiet_since: Option<(Instant, Option<u16>)>,
}

/// A host refusing again after a hold while its IP answers ([`again_while_answering`]).
#[derive(Debug)]
struct Again {
    host: String,
    /// The first such refusal, and the last.
    first: Instant,
    last: Instant,
    /// Checks, at least [`REFUSAL_WINDOW`] apart.
    times: u32,
}

impl Again {
    /// Whether it refused so in [`AGAIN_TIMES`] checks over [`AGAIN_OVER`]: the site
    /// failing.
    fn failing(&self) -> bool {
        self.times >= AGAIN_TIMES && self.last.duration_since(self.first) >= AGAIN_OVER
    }
}

impl Standing {
    /// Whether a hold on a host or on the IP runs at `now`: forgetting the standing
    /// would lose it.
    pub(crate) fn holds(&self, now: Instant) -> bool {
        self.held(now)
            || self.ip_paused(now)
            || self.host_holds.iter().any(|(_, until, _)| *until > now)
    }

    /// The back-off level (0: none).
    pub(crate) fn level(&self) -> u32 {
        self.level
    }

    /// Whether the IP's last hold is over and it answered nothing since.
    pub(crate) fn quiet_after_hold(&self, now: Instant) -> bool {
        quiet_after(self.until, self.last_ok, now)
    }

    /// An answer that is not a refusal: remembered, and the level decays.
    pub(crate) fn fine(&mut self, now: Instant) {
        self.last_ok = Some(now);
        // An answer during the hold of a storm before any answer: one burst's answers
        // came back after its refusals (nginx refuses what came too fast at once, and
        // answers the rest when the site has), so the server refused us right among
        // its answers, as if they had come first, and a ban may follow that refusal.
        if let Some((at, Some(code))) = self.quiet_since.take() {
            if self.until.is_some_and(|u| now < u) {
                self.server_refused = Some((at, code));
            }
        }
        if self.level > 0
            && self
                .last
                .is_none_or(|t| now.duration_since(t) >= DECAY_AFTER)
        {
            self.level -= 1;
            self.last = Some(now);
        }
    }

    /// A refusal from `host`; `Some` when it is taken for a refusal of us, and then the
    /// IP must be held for `hold` (unless a hold is still running: one storm, one step).
    ///
    /// Refused connections count once, and connections closed without an answer until
    /// the IP answers after a hold: then they are the site's failure again
    /// ([`AfterHold`]).
    pub(crate) fn refused(
        &mut self,
        host: &str,
        signal: Signal,
        ip: &str,
        backoff: &Backoff,
        now: Instant,
    ) -> Option<Refusal> {
        let hold_over = self.until.is_none_or(|u| now >= u);
        let answered = self.last_ok.zip(self.until).is_some_and(|(ok, u)| ok >= u);
        // A site that refused again in AGAIN_TIMES checks over AGAIN_OVER is failing: its refusals tell
        // nothing of us, not even first after a hold, and make no storm with others'.
        if hold_over && self.still_failing(host, now) {
            return None;
        }
        let hosts = self.note_refusal(host, now);
        let asked = now.checked_sub(signal.waited()).unwrap_or(now);
        let after_ok = self
            .last_ok
            .is_some_and(|t| asked.saturating_duration_since(t) < OK_WINDOW);
        // Refusing again after a hold while the IP answers, at whatever level the
        // answers since have stepped it down to (a minute of them: level 0); what our
        // pace after a hold brought is the pace's, whichever host it was.
        let after_hold = AfterHold::of(signal);
        let paced = after_hold == AfterHold::AtOurPace && self.level > 0;
        // The server's own refusals during the hold are the storm itself.
        let ban_after = self
            .ban_after(signal, (answered, backoff.ban_reaction), now)
            .filter(|_| hold_over || !signal.is_the_servers());
        // A ban shuts out every host of the IP, not this one again.
        let again = hold_over
            && answered
            && !paced
            && ban_after.is_none()
            && self.counted_before(host, now);
        // A storm before any answer lately: a limit still counting an earlier burst
        // from our address refuses every host at once, and so does a server failing
        // on every host; one hold tells them apart (`describe_unanswered`).
        let storm = hosts >= STORM_HOSTS && (after_ok || signal.refuses_like_a_limit());
        if self.level == 0 && !again && !storm {
            return None;
        }
        let unanswered = self.level == 0 && !again && !after_ok;
        if unanswered {
            let code = signal.is_the_servers().then_some(signal.code());
            self.quiet_since = Some((now, code));
        }
        if hold_over
            && (self.level > 0 || again)
            && after_hold.is_the_sites(Since {
                answered,
                banned: ban_after.is_some(),
                ever: self.last_ok.is_some(),
                outlasted: backoff.outlasted(self.level),
                outwaited: backoff.outwaited(self.level),
                alone: self.hosts_since_the_hold() < STORM_HOSTS,
            })
        {
            if signal.is_the_servers() {
                // Its refusals before the hold were that failure too (a dead backend's
                // 503s): no ban follows them.
                self.server_refused = None;
            }
            return None;
        }
        if again {
            if self.refused_again(host, now) {
                // Failing from now on: no storm counts it.
                self.refusals.retain(|(h, _)| h != host);
                return None;
            }
            return Some(again_while_answering(signal.code(), host, ip, self.level));
        }
        // A ban going on is no new refusal: its memory runs from the refusal it follows,
        // so a server closing every connection for good is judged so in the end. Nor is
        // a storm before any answer, nor any refusal of its while no answer came since
        // (`quiet_since`): a server failing on every host gives them too, and what
        // follows must not read as a ban (review AF: nginx's 444 on every host).
        let refused_by_the_server =
            signal.is_the_servers() && ban_after.is_none() && self.quiet_since.is_none();
        let hold = self.storm(refused_by_the_server.then_some(signal), backoff.base, now);
        Some(match ban_after {
            Some(by) => describe_ban(signal.code(), by, ip, hold, self.level),
            None if unanswered => describe_unanswered(signal.code(), hosts, ip, hold, self.level),
            None => describe(signal.code(), hosts, ip, hold, self.level),
        })
    }

    /// A refusal of us: its hosts counted, the IP held a step longer unless a hold runs
    /// (one storm, one step), and the server's own refusal (`by_the_server`) kept for a
    /// ban that may follow. Returns what is left of the hold.
    fn storm(&mut self, by_the_server: Option<Signal>, base: Duration, now: Instant) -> Duration {
        self.count_the_storm(now);
        if self.until.is_none_or(|u| now >= u) {
            self.level = (self.level + 1).min(MAX_LEVEL);
            self.until = Some(now + hold_for(base, self.level));
        }
        self.last = Some(now);
        if let Some(signal) = by_the_server {
            self.server_refused = Some((now, signal.code()));
        }
        self.until
            .map_or(Duration::ZERO, |u| u.saturating_duration_since(now))
    }

    /// Remembers that `host` refused at `now`; returns how many hosts refused within
    /// [`REFUSAL_WINDOW`], this one included.
    fn note_refusal(&mut self, host: &str, now: Instant) -> usize {
        self.refusals
            .retain(|(h, t)| h != host && now.duration_since(*t) < REFUSAL_WINDOW);
        if self.refusals.len() >= MAX_HOSTS {
            self.refusals.remove(0);
        }
        self.refusals.push((host.to_string(), now));
        self.refusals.len()
    }

    /// How many hosts refused since the IP's hold ended (within [`REFUSAL_WINDOW`]).
    fn hosts_since_the_hold(&self) -> usize {
        let since = |t: &Instant| self.until.is_none_or(|u| *t >= u);
        self.refusals.iter().filter(|(_, t)| since(t)).count()
    }

    /// The server's own refusal of us (its status) that a refused or dropped connection
    /// (`signal`) may be a ban following, while the IP has not `answered` since the hold
    /// but within `reaction` ([`Backoff::ban_reaction`]) of the refusal.
    fn ban_after(
        &self,
        signal: Signal,
        (answered, reaction): (bool, Duration),
        now: Instant,
    ) -> Option<u16> {
        let after_hold = AfterHold::of(signal);
        // Only a firewall's ban comes late: a block of the server's own (CRS's drop, a
        // tarpit's flag) shuts us out from the refusal on.
        let before_the_ban = |t: Instant| {
            matches!(after_hold, AfterHold::TurnedAwayWhileRemembered)
                && self
                    .last_ok
                    .is_none_or(|ok| ok.saturating_duration_since(t) < reaction)
        };
        self.server_refused
            .filter(|(_, by)| after_hold.may_be_a_ban() && after_hold.follows(*by))
            .filter(|(t, _)| now.duration_since(*t) < BAN_MEMORY)
            .filter(|(t, _)| !answered || before_the_ban(*t))
            .map(|(_, by)| by)
    }

    /// Whether `host`'s refusal was taken for one of us, or it refused again since,
    /// within [`BAN_MEMORY`].
    fn counted_before(&self, host: &str, now: Instant) -> bool {
        let recent = |t: &Instant| now.duration_since(*t) < BAN_MEMORY;
        self.counted.iter().any(|(h, t)| h == host && recent(t))
            || self.again.iter().any(|a| a.host == host && recent(&a.last))
    }

    /// `host` refused again after a hold while the IP answered, in one more check
    /// unless within [`REFUSAL_WINDOW`] of the last (the same check's confirming
    /// attempt): whether it is failing now ([`Again::failing`]).
    fn refused_again(&mut self, host: &str, now: Instant) -> bool {
        self.again
            .retain(|a| now.duration_since(a.last) < BAN_MEMORY);
        if let Some(a) = self.again.iter_mut().find(|a| a.host == host) {
            if now.duration_since(a.last) >= REFUSAL_WINDOW {
                a.last = now;
                a.times += 1;
            }
            return a.failing();
        }
        if self.again.len() >= MAX_HOSTS {
            self.again.remove(0);
        }
        self.again.push(Again {
            host: host.to_string(),
            first: now,
            last: now,
            times: 1,
        });
        false
    }

    /// `host` answered (after [`Self::fine`]): a site that refused again, or was known
    /// failing, is mended, and its next refusal is read afresh. Nothing to do, and no
    /// string compared, while no host refused again.
    pub(crate) fn answered_by(&mut self, host: &str) {
        if !self.again.is_empty() {
            self.again.retain(|a| !a.host.eq_ignore_ascii_case(host));
            self.counted.retain(|(h, _)| !h.eq_ignore_ascii_case(host));
        }
    }

    /// Whether `host` is known failing ([`Again::failing`], its last refusal within
    /// [`BAN_MEMORY`]): then this refusal keeps it so.
    fn still_failing(&mut self, host: &str, now: Instant) -> bool {
        let failing = self
            .again
            .iter_mut()
            .find(|a| a.host == host && a.failing() && now.duration_since(a.last) < BAN_MEMORY);
        failing.map(|a| a.last = now).is_some()
    }

    /// Every host of the storm refused us, the newest and those before it.
    fn count_the_storm(&mut self, now: Instant) {
        let storm: Vec<String> = self.refusals.iter().map(|(h, _)| h.clone()).collect();
        for h in storm {
            self.counted.retain(|(c, _)| *c != h);
            if self.counted.len() >= MAX_HOSTS {
                self.counted.remove(0);
            }
            self.counted.push((h, now));
        }
    }

    /// `host` is held (`hold`, from `now`). Returns when the whole IP is to be held:
    /// when several hosts asked for a pause at once, until the earliest release. Holds of
    /// ours pause no IP: several hosts refusing us is [`Self`]'s refusal of us already.
    pub(crate) fn hold_host(&mut self, host: &str, hold: Hold, now: Instant) -> Option<Instant> {
        self.host_holds.retain(|(h, u, _)| h != host && *u > now);
        if self.host_holds.len() >= MAX_HOSTS {
            self.host_holds.remove(0);
        }
        self.host_holds
            .push((host.to_string(), now + hold.pause(), hold));
        let asked = self
            .host_holds
            .iter()
            .filter(|(_, _, h)| matches!(h, Hold::Asked(_)));
        if asked.clone().count() < STORM_HOSTS {
            return None;
        }
        self.paused_until = asked.map(|(_, u, _)| *u).min();
        self.paused_until
    }

    /// Whether the IP is in a back-off hold at `now`.
    pub(crate) fn held(&self, now: Instant) -> bool {
        self.until.is_some_and(|u| u > now)
    }

    /// Whether the IP is paused at `now` because several of its hosts are held
    /// ([`Self::hold_host`]).
    pub(crate) fn ip_paused(&self, now: Instant) -> bool {
        self.ip_pause_left(now).is_some()
    }

    /// What is left at `now` of the IP's pause while several of its hosts are held.
    pub(crate) fn ip_pause_left(&self, now: Instant) -> Option<Duration> {
        self.paused_until.filter(|u| *u > now).map(|u| u - now)
    }

    /// The hold on `host` at `now`, with what is left of it.
    pub(crate) fn host_held(&self, host: &str, now: Instant) -> Option<Hold> {
        self.host_holds
            .iter()
            .find(|(h, u, _)| h == host && *u > now)
            .map(|(_, u, hold)| hold.with_pause(*u - now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: Duration = Duration::from_secs(15);
    const BACKOFF: Backoff = Backoff {
        base: BASE,
        memory: Duration::from_secs(30),
        drop_memory: Duration::from_secs(60),
        ban_reaction: BAN_REACTION,
    };

    /// The standing after the IP answered at `now` and then `a.test` and `b.test`
    /// refused with `signal`: a storm, held once (level 1).
    fn stormed(signal: Signal, now: Instant) -> Standing {
        let mut s = Standing::default();
        s.fine(now);
        let _ = s.refused("a.test", signal, "192.0.2.1", &BACKOFF, now);
        let r = s.refused("b.test", signal, "192.0.2.1", &BACKOFF, now);
        assert_eq!(r.map(|r| r.level), Some(1), "{signal:?}");
        s
    }

    #[tokio::test(start_paused = true)]
    async fn one_host_refusing_is_that_site_not_us() {
        let mut s = Standing::default();
        let now = Instant::now();
        s.fine(now);
        assert_eq!(
            s.refused("a.test", Signal::Refused(503), "192.0.2.1", &BACKOFF, now),
            None
        );
        // The same host again is still one host.
        assert_eq!(
            s.refused("a.test", Signal::Refused(503), "192.0.2.1", &BACKOFF, now),
            None
        );
    }

    /// mod_qos answers a client over its limits 500 by default: one host's 500 is its
    /// own, a storm of them right after the IP answered us is a refusal of us, named.
    #[tokio::test(start_paused = true)]
    async fn a_500_storm_right_after_answers_is_a_refusal_of_us() {
        let mut s = Standing::default();
        let now = Instant::now();
        s.fine(now);
        let refused = Signal::of_block_page(500, "<h1>Internal Server Error</h1>");
        assert!(s
            .refused("a.test", refused, "192.0.2.1", &BACKOFF, now)
            .is_none());
        let r = s
            .refused("b.test", refused, "192.0.2.1", &BACKOFF, now)
            .expect("a storm");
        assert!(
            r.detail.contains("500 Internal Server Error (a limit"),
            "{}",
            r.detail
        );
        assert!(refused.refuses_like_a_limit() && refused.a_neighbour_may_tell());
    }

    #[tokio::test(start_paused = true)]
    async fn hosts_refusing_right_after_answers_are_a_refusal_of_us() {
        let mut s = Standing::default();
        let now = Instant::now();
        s.fine(now);
        assert!(s
            .refused("a.test", Signal::Refused(403), "192.0.2.1", &BACKOFF, now)
            .is_none());
        let r = s
            .refused("b.test", Signal::Refused(403), "192.0.2.1", &BACKOFF, now)
            .expect("a storm");
        assert_eq!((r.hold, r.level), (BASE, 1));
        assert!(r.detail.contains("mod_evasive"), "{}", r.detail);
        // More refusals during the hold are the same storm: no second doubling.
        let r = s.refused(
            "c.test",
            Signal::Refused(403),
            "192.0.2.1",
            &BACKOFF,
            now + Duration::from_secs(5),
        );
        assert_eq!(r.map(|r| r.level), Some(1));
        // A refusal after the hold doubles it; answers for a minute undo one step.
        let later = now + Duration::from_secs(16);
        let r = s
            .refused("a.test", Signal::Refused(403), "192.0.2.1", &BACKOFF, later)
            .expect("still refused");
        assert_eq!((r.hold, r.level), (BASE * 2, 2));
        s.fine(later + DECAY_AFTER);
        assert_eq!(s.level(), 1);
    }

    #[test]
    fn a_999_is_a_refusal_of_us_named_as_one() {
        assert_eq!(Signal::of_status(999), Signal::Refused(999));
        assert_eq!(Signal::of_status(404), Signal::Fine);
        let d = describe(999, 2, "192.0.2.1", BASE, 1).detail;
        assert!(
            d.contains("999 Request Denied") && d.contains("refuses us"),
            "{d}"
        );
    }

    /// Once the request is asked again after the hold its answer judges the site, so a
    /// refusal told in that answer's detail claims nothing of the site (hunt Z1b: a
    /// maintenance site's `down` said "it refuses us, not the site failing").
    #[test]
    fn a_refusal_asked_again_is_told_as_what_happened() {
        let ip = "192.0.2.1";
        let told = [
            describe(503, 2, ip, BASE, 1),
            describe_ban(Signal::ConnectionRefused.code(), 403, ip, BASE, 2),
            describe_ban(Signal::Closed.code(), Signal::Closed.code(), ip, BASE, 1),
        ];
        for r in told {
            assert!(r.detail.contains("not the site failing"), "{}", r.detail);
            assert!(
                !r.asked_again.contains("not the site")
                    && r.asked_again.contains("taken for a refusal of us")
                    && r.asked_again.contains(" s (back-off level ")
                    && r.asked_again.ends_with("then asked again"),
                "{}",
                r.asked_again
            );
        }
    }

    #[test]
    fn an_error_page_refuses_us_by_its_words_not_its_status() {
        let tarpit = "<html><body><h1>500 Internal Server Error</h1>\nAn internal server \
                      error occurred.\n</body></html>";
        assert_eq!(Signal::of_block_page(500, tarpit), Signal::Refused(500));
        let modsec = "Not Acceptable! An appropriate representation of the requested \
                      resource could not be found on this server. This error was generated \
                      by Mod_Security.";
        assert_eq!(Signal::of_block_page(406, modsec), Signal::Refused(406));
        // A site's own error page is no refusal of us; a 500 or 503 may be one whatever
        // it says (mod_qos answers Apache's stock 500), judged by whether it storms.
        assert_eq!(Signal::of_block_page(502, "Database error"), Signal::Fine);
        assert_eq!(
            Signal::of_block_page(500, "Database error"),
            Signal::Errored(500)
        );
        assert_eq!(
            Signal::of_block_page(503, "back soon"),
            Signal::Refused(503)
        );
        let d = describe(406, 3, "192.0.2.1", BASE, 1).detail;
        assert!(
            d.contains("406 block pages") && d.contains("refuses us"),
            "{d}"
        );
    }

    /// A limit still counting an earlier burst from our address refuses every host of
    /// the IP before any answer (review AE: a second run right after the first), and
    /// so does haproxy with a dead backend: the IP is held once, and what it answers
    /// after the hold tells them apart. No ban is taken to follow such a storm.
    #[tokio::test(start_paused = true)]
    async fn refusals_without_earlier_answers_hold_once_then_are_the_sites() {
        for signal in [Signal::Refused(503), Signal::Closed, Signal::Reset] {
            let mut s = Standing::default();
            let now = Instant::now();
            let ip = "192.0.2.1";
            assert!(s.refused("a.test", signal, ip, &BACKOFF, now).is_none());
            let r = s
                .refused("b.test", signal, ip, &BACKOFF, now)
                .expect("a storm before any answer is held once");
            assert_eq!((r.hold, r.level), (BASE, 1), "{signal:?}");
            assert!(
                r.detail.contains("at once, before it answered us")
                    && r.detail.contains("or the server failing"),
                "{}",
                r.detail
            );
            // More of the same during the hold: the same storm, and still no server
            // refusing us that a ban follows (review AF: nginx's 444 on every host).
            let during = now + Duration::from_secs(1);
            let r = s.refused("d.test", signal, ip, &BACKOFF, during);
            assert_eq!(r.map(|r| r.level), Some(1), "{signal:?} during the hold");
            // Still failing after the hold, never having answered: the sites' own, and
            // what follows is read as theirs too (no ban after a storm like this).
            let after = now + BASE;
            for (host, next) in [("a.test", signal), ("c.test", Signal::Closed)] {
                assert!(
                    s.refused(host, next, ip, &BACKOFF, after).is_none(),
                    "{signal:?} then {next:?} after the hold"
                );
            }
        }
    }

    /// Resets after the hold are a refusal of us from an IP that ever answered us, even
    /// long ago: a limit refusing what is still too fast.
    #[tokio::test(start_paused = true)]
    async fn resets_after_the_hold_are_ours_once_the_ip_ever_answered() {
        let mut s = Standing::default();
        let t0 = Instant::now();
        s.fine(t0);
        let now = t0 + OK_WINDOW * 2;
        let ip = "192.0.2.1";
        assert!(s
            .refused("a.test", Signal::Reset, ip, &BACKOFF, now)
            .is_none());
        assert!(s
            .refused("b.test", Signal::Reset, ip, &BACKOFF, now)
            .is_some());
        let again = s.refused("c.test", Signal::Reset, ip, &BACKOFF, now + BASE);
        assert_eq!(again.map(|r| r.level), Some(2));
    }

    #[tokio::test(start_paused = true)]
    async fn connections_refused_or_closed_by_hosts_right_after_answers_hold_the_ip_once() {
        // fail2ban (iptables REJECT) bans our address: every host of the IP refuses
        // connections right after it answered us. nginx's `limit_req_status 444`
        // closes them without an answer. A refused connection is held again after the
        // hold while a firewall may remember us (`rate_limit.drop_memory`, zero here:
        // `connections_turned_away_after_holds_…` below has the rest).
        let forgets = Backoff {
            drop_memory: Duration::ZERO,
            ..BACKOFF
        };
        for (refused, said) in [
            (Signal::ConnectionRefused, "connections refused"),
            (
                Signal::Unanswered(BASE),
                "without an answer (haproxy's silent-drop",
            ),
        ] {
            let mut s = Standing::default();
            let now = Instant::now();
            s.fine(now);
            assert!(s
                .refused("a.test", refused, "192.0.2.1", &forgets, now)
                .is_none());
            let r = s
                .refused(
                    "b.test",
                    refused,
                    "192.0.2.1",
                    &forgets,
                    now + Duration::from_secs(1),
                )
                .expect("a refusal of us");
            assert_eq!((r.hold, r.level), (BASE, 1));
            assert!(r.detail.contains(said), "{}", r.detail);
            // During the hold: the same storm.
            let during = s.refused("c.test", refused, "192.0.2.1", &forgets, now + BASE);
            assert_eq!(during.map(|r| r.level), Some(1));
            // Still so after the hold: neither a ban nor nginx's limit is lengthened by
            // what it refused, so asking again cost nothing, and a server that stopped
            // listening (or a crashed backend) looks exactly like this: the site's
            // failure (down once confirmed), not a second step.
            let after = now + BASE + Duration::from_secs(2);
            assert_eq!(
                s.refused("a.test", refused, "192.0.2.1", &forgets, after),
                None
            );
            assert_eq!(
                s.refused("b.test", refused, "192.0.2.1", &forgets, after),
                None
            );
            assert_eq!(s.level(), 1);
            // A 403 storm after the hold is a refusal of us as ever.
            let r = s.refused("a.test", Signal::Refused(403), "192.0.2.1", &forgets, after);
            assert_eq!(r.map(|r| r.level), Some(2));
        }
    }

    /// iptables' `recent --update --seconds 60 -j DROP` drops every connection of a
    /// client over its rate, and counts each one dropped: asked again after a hold, the
    /// ban is lengthened. Connections timing out after a hold are held again, a step
    /// longer each time, until a hold lasted `rate_limit.drop_memory` (60 s here: the
    /// third); then the machine is gone, the site's failure.
    #[tokio::test(start_paused = true)]
    async fn connections_turned_away_after_holds_are_a_ban_of_us_until_a_hold_outwaits_it() {
        // iptables' `recent` ban DROPs (timing out) or REJECTs (refused) every new
        // connection, each one lengthening it; a server that stopped listening refuses
        // them too, and a machine gone from the network is silent.
        for dropped in [
            Signal::TimedOut(Duration::from_secs(10)),
            Signal::ConnectionRefused,
        ] {
            turned_away_after_holds(dropped);
        }
    }

    fn turned_away_after_holds(dropped: Signal) {
        let ip = "192.0.2.1";
        let mut s = Standing::default();
        let now = Instant::now() + Duration::from_secs(10);
        s.fine(now - Duration::from_secs(10));
        assert!(s.refused("a.test", dropped, ip, &BACKOFF, now).is_none());
        let r = s
            .refused("b.test", dropped, ip, &BACKOFF, now)
            .expect("a storm of us");
        assert_eq!((r.hold, r.level), (BASE, 1));
        let mut t = now;
        for (level, hold) in [(2, BASE * 2), (3, BASE * 4)] {
            t += hold_for(BASE, level - 1) + Duration::from_secs(1);
            let r = s.refused("a.test", dropped, ip, &BACKOFF, t);
            let r = r.expect("dropped still, after a hold shorter than the drop's memory");
            assert_eq!((r.level, r.hold), (level, hold), "{}", r.detail);
        }
        // The 60 s hold outwaited it: still silent, the machine is gone.
        t += BASE * 4 + Duration::from_secs(1);
        assert_eq!(s.refused("a.test", dropped, ip, &BACKOFF, t), None);
        assert_eq!(s.refused("b.test", dropped, ip, &BACKOFF, t), None);
        assert_eq!(s.level(), 3);
        // With no drop memory, as before: the site's after one hold.
        let forgets = Backoff {
            drop_memory: Duration::ZERO,
            ..BACKOFF
        };
        let mut s = Standing::default();
        s.fine(now - Duration::from_secs(10));
        assert!(s.refused("a.test", dropped, ip, &forgets, now).is_none());
        assert!(s.refused("b.test", dropped, ip, &forgets, now).is_some());
        let after = now + BASE + Duration::from_secs(1);
        assert_eq!(s.refused("a.test", dropped, ip, &forgets, after), None);
    }

    /// haproxy's `http_req_rate(10s)` remembers our burst past a short hold: after it, a
    /// 503 with nothing answered since is the site's, as a dead backend's would be, but
    /// a neighbour refused alike right then makes it a refusal of us, held again, until
    /// the holds add up to the limit's memory (`rate_limit.limit_memory`: 30 s here, a
    /// hold of 15 s then 30 s): after that, the neighbour or not, it is the site's.
    #[tokio::test(start_paused = true)]
    async fn a_neighbour_refused_alike_holds_again_until_the_holds_outlast_a_limits_memory() {
        let (ip, refused) = ("192.0.2.1", Signal::Refused(503));
        let mut s = Standing::default();
        let now = Instant::now();
        s.fine(now);
        let _ = s.refused("a.test", refused, ip, &BACKOFF, now);
        let first = s.refused("b.test", refused, ip, &BACKOFF, now);
        assert_eq!(first.map(|r| r.level), Some(1));
        let after = now + BASE + Duration::from_secs(1);
        assert_eq!(s.refused("a.test", refused, ip, &BACKOFF, after), None);
        let alike = Signal::NeighbourToo(503);
        let again = s.refused("a.test", alike, ip, &BACKOFF, after);
        let again = again.expect("a neighbour refused alike: a refusal of us");
        assert_eq!((again.level, again.hold), (2, BASE * 2));
        assert!(again.detail.contains("503"), "{}", again.detail);
        // 15 s and 30 s held: more than the limit remembers.
        let later = after + BASE * 2 + Duration::from_secs(1);
        assert_eq!(s.refused("a.test", refused, ip, &BACKOFF, later), None);
        assert_eq!(s.refused("a.test", alike, ip, &BACKOFF, later), None);
        assert_eq!(s.level(), 2);
        // A limit remembering nothing past our holds: the first hold outlasts it.
        let forgets = Backoff {
            base: BASE,
            memory: Duration::ZERO,
            drop_memory: Duration::ZERO,
            ban_reaction: BAN_REACTION,
        };
        let mut s = Standing::default();
        s.fine(now);
        let _ = s.refused("a.test", refused, ip, &forgets, now);
        assert!(s.refused("b.test", refused, ip, &forgets, now).is_some());
        assert_eq!(s.refused("a.test", alike, ip, &forgets, after), None);
    }

    /// Two hosts of an IP closing connections without an answer right after it answered
    /// us: a refusal of us, the IP held (level 1).
    fn closed_storm() -> (Standing, Instant) {
        let mut s = Standing::default();
        let now = Instant::now();
        s.fine(now);
        let _ = s.refused("a.test", Signal::Closed, "192.0.2.1", &BACKOFF, now);
        let r = s.refused("b.test", Signal::Closed, "192.0.2.1", &BACKOFF, now);
        assert_eq!(r.map(|r| r.level), Some(1));
        (s, now)
    }

    /// ModSecurity's CRS DoS protection drops a blocked client's connections for
    /// `dos_block_timeout` (10 minutes in crs-setup's example): every host closes at
    /// once right after answering us, and goes on closing after our hold. Before, that
    /// was read after one hold as the sites' failure (`down/connect`).
    #[tokio::test(start_paused = true)]
    async fn connections_closed_after_the_hold_without_an_answer_are_a_block_until_it_answers() {
        let closed = Signal::Closed;
        let (mut s, now) = closed_storm();
        let during = s.refused("c.test", closed, "192.0.2.1", &BACKOFF, now + BASE / 2);
        let during = during.expect("the storm").detail;
        assert!(!during.contains("outlasting"), "{during}");
        // Closed still after each hold, no answer: the block, and the holds grow.
        let mut t = now;
        for level in 2..=4 {
            t += hold_for(BASE, level - 1) + Duration::from_secs(1);
            let r = s
                .refused("a.test", closed, "192.0.2.1", &BACKOFF, t)
                .expect("the block going on");
            assert_eq!((r.level, r.hold), (level, hold_for(BASE, level)));
            assert!(
                r.detail.contains("outlasting our hold") && r.detail.contains("still"),
                "{}",
                r.detail
            );
        }
        // The block ends: the IP answers after a hold; then a host closing alone again
        // while the IP answers, the first time, is a refusal again (nginx's 444).
        t += hold_for(BASE, 4) + Duration::from_secs(1);
        s.fine(t);
        let r = s.refused(
            "d.test",
            closed,
            "192.0.2.1",
            &BACKOFF,
            t + Duration::from_secs(1),
        );
        assert!(r.is_some_and(|r| !r.detail.contains("outlasting")));
    }

    /// A server closing every connection for good is judged so once the block's memory
    /// is over: the ban going on does not renew it.
    #[tokio::test(start_paused = true)]
    async fn connections_closed_for_an_hour_are_the_sites_at_last() {
        let closed = Signal::Closed;
        let (mut s, now) = closed_storm();
        let mut t = now;
        while t.duration_since(now) < BAN_MEMORY - MAX_HOLD {
            t += MAX_HOLD;
            assert!(s
                .refused("a.test", closed, "192.0.2.1", &BACKOFF, t)
                .is_some());
        }
        let late = now + BAN_MEMORY + Duration::from_secs(1);
        assert_eq!(
            s.refused("a.test", closed, "192.0.2.1", &BACKOFF, late),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn connections_shut_after_the_servers_refusal_are_a_ban_until_it_answers() {
        // nginx refused us with 503s; fail2ban read them and bans our address.
        for (shut, said) in [
            (Signal::ConnectionRefused, "connections refused"),
            (Signal::TimedOut(BASE), "connections timing out"),
        ] {
            let mut s = Standing::default();
            let now = Instant::now();
            s.fine(now);
            let _ = s.refused("a.test", Signal::Refused(503), "192.0.2.1", &BACKOFF, now);
            let r = s.refused("b.test", Signal::Refused(503), "192.0.2.1", &BACKOFF, now);
            assert_eq!(r.map(|r| r.level), Some(1));
            let after = now + BASE + Duration::from_secs(1);
            let r = s
                .refused("a.test", shut, "192.0.2.1", &BACKOFF, after)
                .expect("the ban that follows");
            assert_eq!((r.level, r.hold), (2, BASE * 2));
            assert!(
                r.detail.contains(said)
                    && r.detail.contains("ban following")
                    && r.detail.contains("503 Service Unavailable"),
                "{}",
                r.detail
            );
            // The IP answers after that hold: the ban is over, and a shut door now is the
            // site's failure.
            let lifted = after + BASE * 2 + Duration::from_secs(1);
            s.fine(lifted);
            assert_eq!(
                s.refused("b.test", shut, "192.0.2.1", &BACKOFF, lifted),
                None
            );
        }
    }

    /// A 2 s back-off whose bans may come `reaction` after the server's refusal.
    fn reacting_in(reaction: Duration) -> Backoff {
        Backoff {
            base: Duration::from_secs(2),
            memory: Duration::from_secs(30),
            drop_memory: Duration::from_secs(60),
            ban_reaction: reaction,
        }
    }

    /// The standing after the IP answered at `now` and two hosts refused with 503s
    /// (nginx's `limit_req`): held once.
    fn held_by_503s(backoff: &Backoff, now: Instant) -> Standing {
        let mut s = Standing::default();
        s.fine(now);
        let _ = s.refused("a.test", Signal::Refused(503), "192.0.2.1", backoff, now);
        let r = s.refused("b.test", Signal::Refused(503), "192.0.2.1", backoff, now);
        assert_eq!(r.map(|r| r.level), Some(1));
        s
    }

    #[tokio::test(start_paused = true)]
    async fn a_ban_may_follow_an_answer_that_came_right_after_the_servers_refusal() {
        // nginx refused us with 503s, and our hold (2 s) ended before fail2ban, reading
        // its log each second on a busy machine, banned us: the first request after the
        // hold was answered, the next ones were shut out (CI: `down/timeout`).
        let backoff = reacting_in(BAN_REACTION);
        let ip = "192.0.2.1";
        for shut in [
            Signal::ConnectionRefused,
            Signal::TimedOut(Duration::from_secs(1)),
        ] {
            let now = Instant::now();
            let mut s = held_by_503s(&backoff, now);
            let after = now + Duration::from_millis(2100);
            s.fine(after);
            let r = s
                .refused("c.test", shut, ip, &backoff, after + Duration::from_secs(2))
                .expect("the ban that came after the answer");
            assert!(r.detail.contains("ban following"), "{}", r.detail);
            // Answered again well after the server's refusal: no ban followed it, and a
            // shut door is the site's failure.
            let lifted = now + Duration::from_secs(20);
            s.fine(lifted);
            assert_eq!(s.refused("d.test", shut, ip, &backoff, lifted), None);
        }
    }

    /// One burst's answers come back in any order: nginx's 503s for what came too fast
    /// may reach us before the answers to what it let through. Read either way, the
    /// server refused us right among its answers, and the door it shuts after our hold
    /// is a ban that followed (CI of 2a1e24b: `down/timeout` through squid).
    #[tokio::test(start_paused = true)]
    async fn a_ban_follows_a_burst_whose_answers_came_after_its_refusals() {
        let backoff = reacting_in(BAN_REACTION);
        let ip = "192.0.2.1";
        for shut in [
            Signal::ConnectionRefused,
            Signal::TimedOut(Duration::from_secs(1)),
        ] {
            for answer_first in [true, false] {
                let now = Instant::now();
                let mut s = Standing::default();
                if answer_first {
                    s.fine(now);
                }
                let _ = s.refused("a.test", Signal::Refused(503), ip, &backoff, now);
                let held = s.refused("b.test", Signal::Refused(503), ip, &backoff, now);
                assert_eq!(
                    held.map(|r| r.level),
                    Some(1),
                    "answer first: {answer_first}"
                );
                if !answer_first {
                    s.fine(now + Duration::from_millis(50));
                }
                let after = now + Duration::from_millis(3100);
                let r = s.refused("c.test", shut, ip, &backoff, after);
                let read = r.map(|r| r.detail).unwrap_or_default();
                assert!(
                    read.contains("ban following"),
                    "{shut:?}, answer first: {answer_first}: {read:?}"
                );
            }
        }
    }

    /// `rate_limit.ban_reaction` sets how late a ban may follow the server's refusal:
    /// a fail2ban that needs 30 s still shuts the door after an answer 20 s after the
    /// refusal, and with zero any answer since the hold rules a ban out.
    #[tokio::test(start_paused = true)]
    async fn how_late_a_ban_may_follow_the_servers_refusal_is_a_setting() {
        let ip = "192.0.2.1";
        let shut = Signal::ConnectionRefused;
        let answered_at = |reaction: u64, secs: u64| {
            let backoff = reacting_in(Duration::from_secs(reaction));
            let now = Instant::now();
            let mut s = held_by_503s(&backoff, now);
            let answer = now + Duration::from_secs(secs);
            s.fine(answer);
            s.refused(
                "c.test",
                shut,
                ip,
                &backoff,
                answer + Duration::from_secs(1),
            )
        };
        let slow = answered_at(30, 20).expect("a ban 30 s may take, after an answer at 20 s");
        assert!(slow.detail.contains("ban following"), "{}", slow.detail);
        assert_eq!(answered_at(0, 3), None, "zero: any answer since the hold");
        assert_eq!(answered_at(10, 20), None, "the default, as before");
    }

    #[tokio::test(start_paused = true)]
    async fn right_after_an_answer_counts_from_when_a_request_left_unanswered_was_sent() {
        // haproxy's silent-drop: the requests of two hosts, sent 5 s after the IP
        // answered, are told unanswered 30 s later.
        let mut s = Standing::default();
        let now = Instant::now();
        s.fine(now);
        let told = now + Duration::from_secs(35);
        let dropped = Signal::Unanswered(Duration::from_secs(30));
        assert!(s
            .refused("a.test", dropped, "192.0.2.1", &BACKOFF, told)
            .is_none());
        let r = s.refused("b.test", dropped, "192.0.2.1", &BACKOFF, told);
        assert_eq!(r.map(|r| r.level), Some(1));
        // Sent 31 s after the answer: not right after it.
        let mut s = Standing::default();
        s.fine(now);
        let late = Signal::Unanswered(Duration::from_secs(4));
        let _ = s.refused("a.test", late, "192.0.2.1", &BACKOFF, told);
        assert_eq!(s.refused("b.test", late, "192.0.2.1", &BACKOFF, told), None);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_held_open_after_a_hold_are_the_sites_though_its_neighbours_answer() {
        // haproxy's tarpit holds what came too fast, or a backend hangs behind hosts of a
        // shared server: the same storm at first.
        let held = Signal::HeldOpen(Duration::from_secs(6));
        let mut s = Standing::default();
        let now = Instant::now();
        s.fine(now);
        let _ = s.refused("a.test", held, "192.0.2.1", &BACKOFF, now);
        let r = s
            .refused("b.test", held, "192.0.2.1", &BACKOFF, now)
            .expect("a storm");
        assert!(r.detail.contains("held open"), "{}", r.detail);
        assert!(
            r.asked_again.contains("then asked again"),
            "{}",
            r.asked_again
        );
        // After the hold the IP answers its other hosts, and a.test is held open again:
        // a tarpit lets the first request after a hold through, a hung backend does not.
        let after = now + BASE + Duration::from_secs(1);
        s.fine(after);
        assert_eq!(
            s.refused("a.test", held, "192.0.2.1", &BACKOFF, after),
            None
        );
        assert_eq!(s.level(), 1, "not stepped up");
    }

    #[tokio::test(start_paused = true)]
    async fn requests_held_open_at_our_pace_after_a_hold_step_the_pace_down() {
        // haproxy's tarpit past 3 requests a second, our 10 a second halved after the
        // hold: the fourth of a second, right behind others of ours, is held again.
        let (held, paced) = (
            Signal::HeldOpen(Duration::from_secs(6)),
            Signal::HeldAtOurPace(Duration::from_secs(6)),
        );
        let mut s = Standing::default();
        let now = Instant::now();
        s.fine(now);
        let _ = s.refused("a.test", held, "192.0.2.1", &BACKOFF, now);
        assert!(s
            .refused("b.test", held, "192.0.2.1", &BACKOFF, now)
            .is_some());
        let after = now + BASE + Duration::from_secs(1);
        s.fine(after);
        // Even a host of the storm: it is the pace that is held, whichever host it was.
        let r = s
            .refused("a.test", paced, "192.0.2.1", &BACKOFF, after)
            .expect("our pace refused");
        assert_eq!((r.level, s.level()), (2, 2), "{}", r.detail);
        assert!(
            r.detail.contains("held open") && r.detail.contains("again after our hold"),
            "{}",
            r.detail
        );
        // Before any hold, one host held at our full pace is no storm.
        let mut fresh = Standing::default();
        fresh.fine(now);
        assert_eq!(
            fresh.refused("a.test", paced, "192.0.2.1", &BACKOFF, now),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn requests_held_open_after_a_tarpits_500_are_its_flag_on_us_until_the_ip_answers() {
        let held = Signal::HeldOpen(Duration::from_secs(6));
        let tarpit_500 = Signal::Refused(500);
        let ip = "192.0.2.1";
        let now = Instant::now();
        // A storm of requests held open, then the request asked again after the hold is
        // held again with nothing answered since: a server hanging on every host is
        // failing, and its storm is no refusal of us in words.
        let mut hung = Standing::default();
        hung.fine(now);
        let _ = hung.refused("a.test", held, ip, &BACKOFF, now);
        assert!(
            hung.refused("b.test", held, ip, &BACKOFF, now).is_some(),
            "a storm"
        );
        let after = now + BASE + Duration::from_secs(7);
        assert_eq!(hung.refused("a.test", held, ip, &BACKOFF, after), None);
        // haproxy's flag on us: the request asked again after the hold is held until
        // the tarpit's 500, a refusal of us in its page; what it holds next is more of it.
        let mut flagged = Standing::default();
        flagged.fine(now);
        let _ = flagged.refused("a.test", held, ip, &BACKOFF, now);
        let _ = flagged.refused("b.test", held, ip, &BACKOFF, now);
        let r = flagged.refused("a.test", tarpit_500, ip, &BACKOFF, after);
        assert_eq!(r.map(|r| r.level), Some(2), "the 500 steps the hold up");
        let later = after + hold_for(BASE, 2) + Duration::from_secs(7);
        let r = flagged
            .refused("c.test", held, ip, &BACKOFF, later)
            .expect("held open after the tarpit's 500 refused us");
        assert!(r.detail.contains("flagged"), "{}", r.detail);
        assert!(
            r.asked_again.contains("then asked again"),
            "{}",
            r.asked_again
        );
        assert_eq!(r.level, 3);
        // An answer since the hold ends it: what is held open then is the site's.
        let answered = later + hold_for(BASE, 3) + Duration::from_secs(1);
        flagged.fine(answered);
        let r = flagged.refused(
            "d.test",
            held,
            ip,
            &BACKOFF,
            answered + Duration::from_secs(6),
        );
        assert_eq!(r, None);
    }

    #[tokio::test(start_paused = true)]
    async fn requests_held_open_after_503s_and_a_hold_are_a_saturated_servers() {
        // haproxy in front of saturated backends: some requests wait out `timeout
        // queue` and get its 503, the rest are held past our wait; after the hold,
        // still held with nothing answered, it is the site failing, not a ban of us.
        let held = Signal::HeldOpen(Duration::from_secs(6));
        let ip = "192.0.2.1";
        let now = Instant::now();
        let mut s = Standing::default();
        s.fine(now);
        let _ = s.refused("a.test", Signal::Refused(503), ip, &BACKOFF, now);
        assert!(s
            .refused("b.test", Signal::Refused(503), ip, &BACKOFF, now)
            .is_some());
        let after = now + BASE + Duration::from_secs(7);
        assert_eq!(s.refused("c.test", held, ip, &BACKOFF, after), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ban_is_not_assumed_an_hour_after_the_servers_refusal() {
        let mut s = Standing::default();
        let now = Instant::now();
        s.fine(now);
        let _ = s.refused("a.test", Signal::Refused(403), "192.0.2.1", &BACKOFF, now);
        let _ = s.refused("b.test", Signal::Refused(403), "192.0.2.1", &BACKOFF, now);
        let mut t = now;
        // Still refused and dropped, no answer: the levels climb while the ban may last.
        while t.duration_since(now) < BAN_MEMORY - MAX_HOLD {
            t += MAX_HOLD;
            assert!(s
                .refused("a.test", Signal::TimedOut(BASE), "192.0.2.1", &BACKOFF, t)
                .is_some());
        }
        // An hour on, a server that still drops everything is judged as what it is.
        let late = now + BAN_MEMORY + Duration::from_secs(1);
        assert_eq!(
            s.refused(
                "a.test",
                Signal::TimedOut(BASE),
                "192.0.2.1",
                &BACKOFF,
                late
            ),
            None
        );
    }

    #[tokio::test(start_paused = true)]
    async fn connections_closed_after_an_answer_that_followed_the_hold_are_refusals_again() {
        // nginx's 444: the first request after the hold gets through (its bucket
        // drained), the next ones at a rate still too fast are closed again.
        let closed = Signal::Closed;
        let (mut s, now) = closed_storm();
        let after = now + BASE + Duration::from_millis(100);
        s.fine(after);
        let r = s.refused(
            "c.test",
            closed,
            "192.0.2.1",
            &BACKOFF,
            after + Duration::from_millis(300),
        );
        assert_eq!(
            r.map(|r| (r.level, r.hold)),
            Some((2, BASE * 2)),
            "a second step: the rate halves again"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_503_storm_going_on_after_the_hold_without_an_answer_is_the_sites() {
        // A shared server's backend (PHP-FPM, an application server) dies: every host
        // answers the front's 503 at once, right after it answered us, as a tripped
        // limit_req does. Held once; but the first requests after the hold still get
        // 503, which no limit does: the sites are failing.
        let refused = Signal::Refused(503);
        let mut s = Standing::default();
        let now = Instant::now();
        s.fine(now);
        let _ = s.refused("a.test", refused, "192.0.2.1", &BACKOFF, now);
        let r = s.refused("b.test", refused, "192.0.2.1", &BACKOFF, now);
        assert_eq!(r.map(|r| r.level), Some(1));
        let after = now + BASE + Duration::from_millis(100);
        assert_eq!(
            s.refused("a.test", refused, "192.0.2.1", &BACKOFF, after),
            None
        );
        assert_eq!(
            s.refused("c.test", refused, "192.0.2.1", &BACKOFF, after),
            None
        );
        // Those 503s were the outage, not the server refusing us: its restart refusing
        // connections is no ban that follows a refusal (with no firewall's memory to
        // outwait, `rate_limit.drop_memory` zero, it is the site's at once).
        let restart = Signal::ConnectionRefused;
        let forgets = Backoff {
            drop_memory: Duration::ZERO,
            ..BACKOFF
        };
        assert_eq!(
            s.refused("a.test", restart, "192.0.2.1", &forgets, after),
            None
        );
        // limit_req lets the first request after the hold through; the next ones, still
        // too fast, are a refusal of us again.
        let mut s = Standing::default();
        s.fine(now);
        let _ = s.refused("a.test", refused, "192.0.2.1", &BACKOFF, now);
        let _ = s.refused("b.test", refused, "192.0.2.1", &BACKOFF, now);
        s.fine(after);
        let r = s.refused("c.test", refused, "192.0.2.1", &BACKOFF, after);
        assert_eq!(r.map(|r| r.level), Some(2));
        // A 403 or 429 storm says so by its status: mod_evasive's block outlasts a
        // hold, and every request meanwhile lengthens it.
        for status in [403, 429] {
            let mut s = stormed(Signal::Refused(status), now);
            let r = s.refused(
                "a.test",
                Signal::Refused(status),
                "192.0.2.1",
                &BACKOFF,
                after,
            );
            assert_eq!(r.map(|r| r.level), Some(2), "{status}");
        }
    }

    /// `a.test` refusing (`r`) check after check, a minute apart, the IP answering its
    /// other hosts, from a storm at `t0` until it is known failing: the time it is.
    fn until_known_failing(s: &mut Standing, r: Signal, t0: Instant) -> Instant {
        let mut t = t0;
        loop {
            t += Duration::from_secs(60);
            s.fine(t);
            match s.refused("a.test", r, "192.0.2.1", &BACKOFF, t) {
                None => return t,
                Some(said) => assert!(said.hold.is_zero(), "{}", said.detail),
            }
            assert!(t < t0 + AGAIN_OVER * 2, "never known failing");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_host_refusing_again_for_minutes_while_the_ip_answers_may_be_a_ban_of_us() {
        // Review AB: ModSecurity's per-site flood rule bans our address from two sites
        // of a shared Apache for ten minutes, tripped by our own requests; the third
        // site answers. A ban refuses the same hosts every time, as broken sites do:
        // taken for the sites' failure in the third check, it was `down` for the ban's
        // ten minutes. Checks 10 s apart, each with its confirming attempt, for 15
        // minutes: refusals of us, never held again.
        let r = Signal::Refused(403);
        let t0 = Instant::now();
        let mut s = stormed(r, t0);
        let mut t = t0 + BASE + Duration::from_millis(100);
        while t < t0 + Duration::from_secs(15 * 60) {
            s.fine(t);
            for host in ["a.test", "b.test"] {
                for at in [t + Duration::from_millis(50), t + Duration::from_secs(2)] {
                    let said = s.refused(host, r, "192.0.2.1", &BACKOFF, at);
                    assert!(
                        said.is_some_and(|r| r.hold.is_zero()),
                        "{host} at {:?}",
                        at - t0
                    );
                }
            }
            assert!(
                !s.held(t + Duration::from_secs(3)),
                "held again at {:?}",
                t - t0
            );
            t += REFUSAL_WINDOW;
        }
        assert!(s.level() <= 1, "never stepped up");
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_pair_checked_a_minute_apart_is_the_sites_after_the_hour_and_holds_once() {
        // Hunt Z4: two sites of a shared nginx answering its plain 403 beside healthy
        // ones. Sites are checked a minute or more apart: by the next check the
        // neighbours' answers have stepped the IP's level back to 0, and the pair was a
        // fresh storm (held again, `unknown` again) or, one refusing alone, `down` at
        // once: verdicts flapping check after check. Now `unknown` and never held again
        // for the hour a ban of us might last (AGAIN_OVER), then the sites' failure.
        let r = Signal::Refused(403);
        let t0 = Instant::now();
        let mut s = stormed(r, t0);
        let first = t0 + Duration::from_secs(60);
        for check in 1..=70u64 {
            let t = t0 + Duration::from_secs(60 * check);
            s.fine(t);
            let a = s.refused(
                "a.test",
                r,
                "192.0.2.1",
                &BACKOFF,
                t + Duration::from_secs(1),
            );
            let b = s.refused(
                "b.test",
                r,
                "192.0.2.1",
                &BACKOFF,
                t + Duration::from_secs(3),
            );
            for (host, said) in [("a", a), ("b", b)] {
                if t < first + AGAIN_OVER {
                    let said = said.unwrap_or_else(|| panic!("check {check}, {host}: unknown"));
                    assert!(
                        said.hold.is_zero(),
                        "check {check}, {host}: {}",
                        said.detail
                    );
                } else {
                    assert_eq!(said, None, "check {check}, {host}: the site's");
                }
            }
            assert!(!s.held(t + Duration::from_secs(4)), "check {check}: held");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_site_known_failing_asked_first_after_a_hold_neither_steps_it_up_nor_storms() {
        // Hunt Z4: a broken host asked first after a hold, nothing answered since, stepped
        // the hold up as a block still going on, and a healthy neighbour waited 108 s.
        // Once known failing, its refusal is its own, and only another host's refusal
        // tells that the block goes on.
        let r = Signal::Refused(403);
        let t0 = Instant::now();
        let mut s = stormed(r, t0);
        let t = until_known_failing(&mut s, r, t0);
        assert_eq!(s.refused("a.test", r, "192.0.2.1", &BACKOFF, t), None);
        // A limit trips for real: two other hosts refuse right after answers, and the
        // failing site's refusals just before make no storm with the first.
        s.fine(t);
        assert_eq!(s.refused("c.test", r, "192.0.2.1", &BACKOFF, t), None);
        let level = s
            .refused("d.test", r, "192.0.2.1", &BACKOFF, t)
            .expect("a storm")
            .level;
        let after = t + hold_for(BASE, level) + Duration::from_millis(100);
        assert_eq!(s.refused("a.test", r, "192.0.2.1", &BACKOFF, after), None);
        assert_eq!(s.level(), level, "a failing site steps nothing up");
        assert!(!s.held(after));
        let still = s
            .refused("c.test", r, "192.0.2.1", &BACKOFF, after)
            .expect("the block goes on");
        assert_eq!(still.level, level + 1);
        assert!(
            still.detail.contains("again after our hold"),
            "{}",
            still.detail
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_site_known_failing_that_answers_again_is_failing_no_more() {
        // Known failing, then mended: should a limit trip on us within the hour and
        // refuse it among others, its refusal is the limit's, not a `down`.
        let r = Signal::Refused(403);
        let t0 = Instant::now();
        let mut s = stormed(r, t0);
        let mut t = until_known_failing(&mut s, r, t0);
        t += Duration::from_secs(60);
        s.fine(t);
        s.answered_by("A.test");
        let _ = s.refused("c.test", r, "192.0.2.1", &BACKOFF, t);
        let storm = s.refused("a.test", r, "192.0.2.1", &BACKOFF, t);
        assert!(
            storm.as_ref().is_some_and(|r| !r.hold.is_zero()),
            "a mended site refusing beside another is a storm again: {storm:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_same_hosts_refusing_again_while_the_ip_answers_do_not_step_the_hold_up() {
        // Two sites of a shared server broken (a deleted index's 403, a dead pool's 503),
        // checked among working neighbours: a storm at first sight, held once. After the
        // hold the neighbours answer and the same two refuse again, check after check:
        // stepping up for them would halve the IP's rate again and again and starve
        // every neighbour, for no limit of ours.
        for status in [403, 503] {
            let r = Signal::Refused(status);
            let mut s = Standing::default();
            let t0 = Instant::now();
            s.fine(t0);
            let _ = s.refused("a.test", r, "192.0.2.1", &BACKOFF, t0);
            let first = s.refused("b.test", r, "192.0.2.1", &BACKOFF, t0);
            assert_eq!(first.map(|r| r.level), Some(1), "{status}");
            let t1 = t0 + BASE + Duration::from_millis(100);
            s.fine(t1);
            let again = s
                .refused(
                    "a.test",
                    r,
                    "192.0.2.1",
                    &BACKOFF,
                    t1 + Duration::from_millis(50),
                )
                .expect("still a refusal for the verdict");
            assert_eq!(
                (again.level, again.hold),
                (1, Duration::ZERO),
                "{status}: {}",
                again.detail
            );
            assert!(again.detail.contains("not held again"), "{}", again.detail);
            // A host that had not refused steps it up: the limit still trips.
            let fresh = s.refused(
                "c.test",
                r,
                "192.0.2.1",
                &BACKOFF,
                t1 + Duration::from_millis(90),
            );
            assert_eq!(fresh.map(|r| r.level), Some(2), "{status}");
        }
        // With nothing answered since the hold, the same host steps it up: a block (or
        // a limit) still refusing everything.
        let r = Signal::Refused(403);
        let mut s = Standing::default();
        let t0 = Instant::now();
        s.fine(t0);
        let _ = s.refused("a.test", r, "192.0.2.1", &BACKOFF, t0);
        let _ = s.refused("b.test", r, "192.0.2.1", &BACKOFF, t0);
        let t1 = t0 + BASE + Duration::from_millis(100);
        let again = s.refused("a.test", r, "192.0.2.1", &BACKOFF, t1);
        assert_eq!(again.map(|r| r.level), Some(2));
    }

    /// What a server gone or hanging gives, a refusal by its words, and a whole server
    /// in maintenance asking for a pause (`Retry-After`), from every host before any
    /// answer: the sites' own at once.
    #[tokio::test(start_paused = true)]
    async fn connections_refused_without_earlier_answers_are_the_sites_own() {
        let wait = Duration::from_secs(6);
        for signal in [
            Signal::ConnectionRefused,
            Signal::TimedOut(wait),
            Signal::Unanswered(wait),
            Signal::HeldOpen(wait),
            Signal::Refused(403),
            Signal::Paused(503),
        ] {
            let mut s = Standing::default();
            let now = Instant::now();
            for host in ["a.test", "b.test", "c.test"] {
                assert!(
                    s.refused(host, signal, "192.0.2.1", &BACKOFF, now)
                        .is_none(),
                    "{signal:?}"
                );
            }
        }
    }

    #[test]
    fn timeouts_at_an_ip_that_was_answering_slowly_are_not_a_refusal() {
        let mut slow = Pace::default();
        for _ in 0..20 {
            slow.observe(Duration::from_secs(5));
        }
        let fast = Pace::default();
        for timeout in [Signal::TimedOut(BASE), Signal::Unanswered(BASE)] {
            assert!(timeout.may_refuse(&fast));
            assert!(
                !timeout.may_refuse(&slow),
                "{timeout:?}: a struggling server"
            );
        }
        assert!(Signal::Refused(503).may_refuse(&slow));
        assert!(Signal::Closed.may_refuse(&slow));
    }

    #[test]
    fn pace_follows_latency_smoothly() {
        let mut p = Pace::default();
        p.observe(Duration::from_secs(4));
        // One slow answer weighs little: 1.2 s smoothed, below the floor.
        assert_eq!(p.interval_ms(), 0.0);
        for _ in 0..20 {
            p.observe(Duration::from_secs(4));
        }
        assert!(p.interval_ms() > 3990.0, "{}", p.interval_ms());
        for _ in 0..20 {
            p.observe(Duration::from_millis(10));
        }
        assert_eq!(p.interval_ms(), 0.0);
    }

    /// The IP's pause runs to the earliest end of the holds that made it, as the Redis
    /// script `HOLD` keeps it (field `pause`): a later host's hold does not lengthen it.
    #[test]
    fn an_ip_pause_ends_with_the_earliest_hold_that_made_it() {
        let t0 = Instant::now();
        let mut s = Standing::default();
        let asked = |secs| Hold::Asked(Duration::from_secs(secs));
        assert_eq!(s.hold_host("a", asked(3), t0), None);
        assert_eq!(
            s.hold_host("b", asked(100), t0),
            Some(t0 + Duration::from_secs(3))
        );
        let t1 = t0 + Duration::from_secs(1);
        s.hold_host("c", asked(100), t1);
        assert!(s.ip_paused(t0 + Duration::from_millis(2900)));
        assert!(
            !s.ip_paused(t0 + Duration::from_millis(3100)),
            "b and c hold only themselves"
        );
    }

    #[test]
    fn holds_double_up_to_ten_minutes() {
        assert_eq!(hold_for(BASE, 1), BASE);
        assert_eq!(hold_for(BASE, 3), BASE * 4);
        assert_eq!(hold_for(BASE, 9), MAX_HOLD);
    }
}
