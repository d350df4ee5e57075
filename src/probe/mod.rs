//! The pure probe core: a [`Plan`] made from a job and the probe settings, the
//! [`Observation`] an adapter fills by actually asking the site, the judgement of that
//! observation into a verdict with a reason and a detail line ([`judge`], reading pages
//! with [`pages`]), and the combination of several attempts into one ([`combine`]).
//!
//! Nothing here does I/O, so every rule about what counts as `up` is tested directly.
//! A failing site is data (an [`Outcome::Failure`]), never an `Err`.

pub(crate) mod browser;
pub(crate) mod combine;
pub(crate) mod judge;
pub(crate) mod pages;
pub(crate) mod policy;
pub(crate) mod refresh;
pub(crate) mod shown;
pub(crate) mod text;

use std::net::IpAddr;
use std::time::Duration;

use url::Url;

use crate::config::ProbeSettings;
use crate::job::{Expect, Job, Method};

/// Everything one probe of a site needs, decided before any I/O.
#[derive(Debug, Clone)]
pub(crate) struct Plan {
    /// Where to start.
    pub url: Url,
    /// GET unless the job said HEAD.
    pub method: Method,
    /// The browser's headers, for plain HTTP and for HTTPS ([`Plan::headers`]).
    pub browser: std::sync::Arc<browser::Browser>,
    /// The job's own headers, which replace the browser's of the same name.
    pub job_headers: Vec<(String, String)>,
    /// Whole request, redirects and body included.
    pub timeout: Duration,
    /// Opening one connection.
    pub connect_timeout: Duration,
    /// Decoded body bytes read at most.
    pub max_body_bytes: usize,
    /// Smaller bodies are not `up`.
    pub min_body_bytes: usize,
    /// Redirect hops followed at most.
    pub max_redirects: u32,
    /// What the site must do.
    pub expect: Expect,
    /// Longest wait for a per-IP limit before the job is deferred; `None` = wait up to
    /// the timeout (no deferral possible, e.g. in `picket check`).
    pub max_wait: Option<Duration>,
    /// Where the job stands in its IP's line of deferred jobs (its first request only).
    pub line: Line,
    /// Each request is asked alone: once none of ours to its IP is in flight (a slow
    /// answer's confirmation, `Observation::beside_ours`).
    pub alone: bool,
}

/// The address browsers ask first for a plain-HTTP `url` (Chrome's HTTPS-Upgrades,
/// Firefox's HTTPS-First): the same over HTTPS, for a host name on the default port.
/// `None` where they do not upgrade: an IP address, a single-label name, a port of its
/// own, or HTTPS already.
pub(crate) fn over_https(url: &Url) -> Option<Url> {
    let upgradable = url.scheme() == "http"
        && url.port().is_none()
        && matches!(url.host(), Some(url::Host::Domain(h)) if h.contains('.'));
    if !upgradable {
        return None;
    }
    let mut https = url.clone();
    https.set_scheme("https").ok()?;
    Some(https)
}

/// Where a job stands in its IP's line of deferred jobs: jobs deferred for a busy IP are
/// given places one interval apart, and come back for them (docs/POLITENESS.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Line {
    /// Not in it: the job cannot be deferred (`picket check`), or the request is not the
    /// job's first (a confirmation, a redirect hop).
    #[default]
    Outside,
    /// A job that may be deferred and holds no place: while a line waits for the IP, its
    /// first request joins the end of it rather than take a slot a place was given for.
    Fresh,
    /// A job back for its place: its first request keeps the line going.
    Placed,
    /// The same, on its last deferral: if its IP is still busy it is answered, so it
    /// takes no new place (which would stay empty, the jobs after it waiting for it).
    Last,
}

impl Plan {
    /// Builds the plan for `job` under `settings`.
    pub(crate) fn new(job: &Job, settings: &ProbeSettings) -> Plan {
        let min_body_bytes = job
            .expect
            .min_body_bytes
            .map_or(settings.min_body_bytes, |m| {
                usize::try_from(m).unwrap_or(usize::MAX)
            });
        let mut expect = job.expect.clone();
        // A job's own limit wins; `probe.max_latency` stands in for the jobs that name none.
        expect.max_latency_ms = expect.max_latency_ms.or_else(|| {
            let ms = settings.max_latency?.as_millis();
            Some(u64::try_from(ms).unwrap_or(u64::MAX))
        });
        Plan {
            url: job.url.clone(),
            method: job.method,
            browser: browser_for(job, settings),
            job_headers: job.headers.clone(),
            timeout: job.timeout.unwrap_or(settings.timeout),
            connect_timeout: settings
                .connect_timeout
                .min(job.timeout.unwrap_or(settings.timeout)),
            max_body_bytes: settings.max_body_bytes,
            min_body_bytes,
            max_redirects: settings.max_redirects,
            expect,
            max_wait: None,
            line: Line::Outside,
            alone: false,
        }
    }

    /// Whether a 503 asking for `pause` (a maintenance page's `Retry-After`) confirms
    /// itself: the pause is longer than a confirmation may wait for it (the job's
    /// `max_wait` in a worker, beyond which it would be deferred; the probe's time
    /// otherwise). Its own word then confirms the `down` and nothing more is sent.
    pub(crate) fn confirmed_by_pause(&self, status: u16, pause: Duration) -> bool {
        status == 503 && pause > self.max_wait.unwrap_or(self.timeout)
    }

    /// The headers of a request over HTTPS (`secure`) or plain HTTP: the browser's, in
    /// its order, less those the job sets, then the job's own.
    pub(crate) fn headers(&self, secure: bool) -> impl Iterator<Item = (&str, &str)> {
        let browser = if secure {
            &self.browser.secure
        } else {
            &self.browser.plain
        };
        let set_by_job = |name: &str| {
            self.job_headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name))
        };
        browser
            .iter()
            .filter(move |(name, _)| !set_by_job(name))
            .chain(&self.job_headers)
            .map(|(name, value)| (name.as_str(), value.as_str()))
    }

    /// Whether the job sends credentials of its own: an `Authorization` header, or a
    /// user in its URL.
    pub(crate) fn sends_credentials(&self) -> bool {
        !self.url.username().is_empty()
            || self
                .job_headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case("authorization"))
    }
}

/// The browser `job` asks as: the configured one, or the one its own User-Agent names.
fn browser_for(job: &Job, settings: &ProbeSettings) -> std::sync::Arc<browser::Browser> {
    let own = job
        .headers
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case("user-agent"))
        .map(|(_, ua)| ua)
        .filter(|ua| **ua != settings.user_agent);
    match own {
        Some(ua) => std::sync::Arc::new(browser::Browser::new(
            ua,
            &settings.accept,
            &settings.accept_language,
        )),
        None => std::sync::Arc::clone(&settings.browser),
    }
}

/// An HTTP answer, after redirects, with its body decoded to text.
#[derive(Debug, Clone, Default)]
pub struct Answer {
    /// Final status code.
    pub status: u16,
    /// The status line's own words, when the server wrote other than the standard ones
    /// (Varnish's "503 Backend fetch failed", a PHP site's "503 Down for maintenance").
    pub reason: Option<Box<str>>,
    /// Decoded (decompressed) body bytes read.
    pub body_bytes: usize,
    /// True when the body was longer than the plan allows and was cut.
    pub truncated: bool,
    /// Set when the connection ended the body before its announced end: why. The part
    /// that came is what was judged (a browser shows it too).
    pub broke_off: Option<String>,
    /// The probe's time ran out before the body's end, this long after its last byte
    /// came: the part that had come is what was judged (a browser shows a slow page as
    /// it comes, and one that stopped part way as far as it came).
    pub late: Option<Duration>,
    /// A body that ended on its own (its last chunk, the close): the longest time nothing
    /// came, from the head to the end. A page cut off after seconds of nothing is a
    /// script stopped part way. In milliseconds, as an answer is kept small.
    pub stalled_ms: u32,
    /// The body as text, whatever its charset.
    pub text: String,
    /// Charset used to decode it.
    pub charset: Option<&'static str>,
    /// URL of the final answer.
    pub final_url: String,
    /// Redirect hops followed.
    pub redirects: u32,
    /// The `Retry-After` header, if any.
    pub retry_after: Option<Box<str>>,
    /// The pause a 429's or 503's `Retry-After` asks for, read when the answer came
    /// (seconds, or an HTTP date), capped as the limiter caps it.
    pub pause_asked: Option<std::time::Duration>,
    /// The server certificate's days (https).
    pub tls_days: Option<CertDays>,
    /// How a browser takes the body instead of showing it as a page, when its headers
    /// say so: "downloads it (Content-Type: application/octet-stream)", "shows its code
    /// (Content-Type: text/plain)" ([`not_shown_as_a_page`]).
    pub not_shown: Option<Box<str>>,
    /// The login the answer asks for (`WWW-Authenticate`, on a 401), as a browser's
    /// prompt shows it.
    pub login: Option<Box<str>>,
}

/// A certificate in whole days: how many are left until it expires (negative once
/// expired; 0 with hours left), and how many it was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertDays {
    pub left: i32,
    pub lifetime: i32,
}

/// How a browser takes a web page (a `body` that opens as an HTML document) sent with
/// this `Content-Type` and `Content-Disposition` instead of showing it, if it does: an
/// `attachment` or an `octet-stream` (S3's default for an upload without a type) is
/// downloaded; `text/plain` is shown as text, its markup and all. `None` for a body
/// that is no HTML document (a file watched on purpose), any other type, or none
/// (browsers sniff then). And a body that is still gzip data, sent as text or with no
/// type ([`still_compressed`]): browsers show (or download) compressed bytes.
pub(crate) fn not_shown_as_a_page(
    content_type: Option<&str>,
    disposition: Option<&str>,
    body: &[u8],
) -> Option<Box<str>> {
    let attachment = disposition.is_some_and(|d| {
        d.split(';')
            .next()
            .is_some_and(|kind| kind.trim().eq_ignore_ascii_case("attachment"))
    });
    // A compressed file sent as an attachment is a download on purpose (a `.gz` of
    // data served as `text/csv`: review X).
    if !attachment && still_compressed(content_type, body) {
        return Some(
            "shows compressed bytes (the body is gzip data: compressed twice and \
             labelled once, or sent with no Content-Encoding)"
                .into(),
        );
    }
    if !opens_as_html(body) {
        return None;
    }
    if attachment {
        return Some("downloads it (Content-Disposition: attachment)".into());
    }
    let essence = essence(content_type?);
    match essence.as_str() {
        "application/octet-stream" | "binary/octet-stream" => {
            Some(format!("downloads it (Content-Type: {essence})").into())
        }
        "text/plain" => Some(format!("shows its code (Content-Type: {essence})").into()),
        _ => None,
    }
}

/// Whether a body, its `Content-Encoding` undone, is gzip data (its magic bytes and
/// deflate method) where a page is: sent as text, or with no type. A page compressed
/// twice and labelled once (PHP's `ob_gzhandler` under a server or proxy that
/// compresses again, the "garbled characters" failure), or compressed by an app whose
/// proxy dropped the header (hunt Q). A `.gz` file watched on purpose says so in its
/// type (`application/gzip`).
fn still_compressed(content_type: Option<&str>, body: &[u8]) -> bool {
    let textual = content_type.map(essence).is_none_or(|essence| {
        essence.is_empty() || essence.starts_with("text/") || essence == "application/xhtml+xml"
    });
    textual && body.starts_with(&[0x1f, 0x8b, 0x08])
}

/// A `Content-Type`'s type and subtype, lower-cased, without its parameters.
fn essence(content_type: &str) -> String {
    let essence = content_type.split(';').next().unwrap_or("");
    essence.trim().to_ascii_lowercase()
}

/// Whether a body opens as an HTML document does (a doctype or `<html>`, after white
/// space and a UTF-8 byte-order mark).
fn opens_as_html(body: &[u8]) -> bool {
    let body = body
        .strip_prefix(b"\xef\xbb\xbf")
        .unwrap_or(body)
        .trim_ascii_start();
    let opens = |p: &[u8]| {
        body.get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p))
    };
    opens(b"<!doctype html") || opens(b"<html")
}

/// What kind of failure stopped a probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureKind {
    /// The name does not resolve: the nameservers said it has no address (NXDOMAIN,
    /// no records), or it resolves only to a sinkhole.
    Dns,
    /// The name was not resolved, and the nameservers did not say it has no address:
    /// no answer in time (the resolver's, or the probe's deadline), an error code
    /// (SERVFAIL, REFUSED) or no way to reach them.
    /// The site's DNS failing, or our resolver.
    DnsFailed,
    /// The connection was refused: the host is there, nothing listens.
    Connect,
    /// No route to the host or its network: either the site's network is down or ours.
    Unreachable,
    /// The server reset the connection (TCP RST) before answering. Usually an outage;
    /// right after a burst of answers from the same IP, a ban (see
    /// [`Observation::recent_answers`]).
    Reset,
    /// The TLS handshake or the certificate failed.
    Tls,
    /// What came back to the TLS handshake was no TLS at all (plain HTTP on the port,
    /// another protocol), or a refusal of TLS for the name (no site of that name
    /// there): no browser gets a page, whatever the certificate policy.
    NoTls,
    /// Out of time.
    Timeout,
    /// More redirect hops than allowed, or a loop.
    TooManyRedirects,
    /// A redirect that cannot be followed (bad Location, other scheme).
    BadRedirect,
    /// The target resolved to an address policy refuses.
    BlockedTarget,
    /// The server broke the HTTP protocol or cut the body.
    Protocol,
    /// The egress (proxy) itself failed: nothing is known about the site.
    Egress,
    /// Our own per-IP limit allowed no request before the deadline.
    Throttled,
    /// The host asked us (a 429's `Retry-After`) to send it nothing for longer than the
    /// job may wait: not asked, as it asked.
    Paused,
    /// This worker ran out of its own resources (file descriptors, socket buffers): our
    /// failure, never the site's.
    LocalResources,
    /// The certificate's dates failed by our clock, which the sites' clocks say is off,
    /// and not by theirs: our failure, never the site's.
    LocalClock,
    /// The site's chain lacks an intermediate, and the server of the URL it names was
    /// not reached, the first time lately: that may be our network's moment, so whether
    /// a browser completes the chain is not known yet.
    IssuerUnreached,
}

/// A probe that did not end in an HTTP answer.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    /// What failed.
    pub kind: FailureKind,
    /// A readable account of it.
    pub detail: String,
}

/// How one probe ended.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The site answered.
    Answer(Answer),
    /// It did not.
    Failure(Failure),
}

impl Outcome {
    /// Whether this is the egress failing (nothing known about the site).
    pub(crate) fn is_egress_failure(&self) -> bool {
        matches!(self, Outcome::Failure(f) if f.kind == FailureKind::Egress)
    }

    /// The failure's account; empty for an answer.
    pub(crate) fn failure_detail(&self) -> &str {
        match self {
            Outcome::Failure(f) => &f.detail,
            Outcome::Answer(_) => "",
        }
    }
}

/// The longest pause a site's `Retry-After` is heeded for: a silly value must not
/// silence a site for days.
pub(crate) const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

/// Everything seen during one probe attempt.
#[derive(Debug, Clone)]
pub(crate) struct Observation {
    /// Egress used.
    pub egress: String,
    /// Address of the last hop reached (or tried).
    pub ip: Option<IpAddr>,
    /// How it ended.
    pub outcome: Outcome,
    /// Name resolution of the first hop.
    pub dns: Option<Duration>,
    /// The name whose lookup failed, when one did (the first hop's, a redirect's, or
    /// one completed under a search domain): where our own resolver is asked whether
    /// the failure is its own.
    pub unresolved: Option<String>,
    /// Opening the connection of the last hop: TCP, and through a proxy the proxy's
    /// handshake too.
    pub connect: Option<Duration>,
    /// The TLS handshake of the last hop (https).
    pub tls: Option<Duration>,
    /// Connection ready to response headers received, last hop: the server's own time.
    pub first_byte: Option<Duration>,
    /// When the request to the last address tried went out, from the attempt's start:
    /// where a silent attempt's silence began. A redirect's next hop, a second
    /// address, or the page asked again after an intermediate's fetch set out well
    /// after the attempt did, and a cut of our way out met then shows at this moment,
    /// not the attempt's. `None`: when the attempt set out.
    pub last_asked: Option<Duration>,
    /// Waiting for the per-IP limit, all hops.
    pub queued: Duration,
    /// Asking an egress about itself (whether a proxy refusing a tunnel is a proxy at
    /// all), all hops: our own question, not the site's time.
    pub checking: Duration,
    /// Requests nobody would have waited for, asked again another way: one a defence
    /// turned away from us (refused, or held open by a tarpit) and asked again after
    /// its hold, and a plain-HTTP one that failed where HTTPS then answered (browsers
    /// ask HTTPS first). Not the site's time as people see it.
    pub set_aside: Duration,
    /// The whole attempt.
    pub total: Duration,
    /// How late our own timers and wake-ups ran, at worst, while this attempt ran: our
    /// event loop's lag (a worker short of CPU), which the site's time does not include.
    pub lag: Duration,
    /// Things worth telling that did not decide the verdict (e.g. a broken IPv6 path).
    pub notes: Vec<String>,
    /// On a failure: how many answers the same IP gave us just before it (through this
    /// egress). A reset right after a burst of answers is a ban, not an outage.
    pub recent_answers: u32,
    /// The attempt failed amid other requests of ours to its IP (within the last 10
    /// s), as a defence refusing them answers (a refusal status or page, a reset, a
    /// close, a refused connection, a request held open), and the limiter did not (yet)
    /// take it for a refusal of us: the first host of a storm is judged before a second
    /// host's refusal makes it one. Also a limit's kind of refusal (a 503, a close, a
    /// reset) when nothing from the IP served us in those 10 s: a limit still counting an earlier burst refuses our first request, before
    /// the others that would show it a storm go out. Such a `down` is confirmed once
    /// whatever `probe.attempts`.
    pub amid_our_requests: bool,
    /// A request of the attempt went out while others of ours to its IP were in flight:
    /// a limit queueing what comes too fast (nginx's `limit_req` with a `burst` and no
    /// `nodelay`) answers it late, and its time does not tell that wait from the site's.
    /// A slow answer so is asked again alone before it is `degraded/slow`.
    pub beside_ours: bool,
    /// Set when the limiter took this attempt's refusal (403/429/503, a reset or a
    /// refused connection) for a refusal of *us* (several hosts of the IP right after
    /// it answered us): what refused us, in words.
    pub refusal: Option<String>,
}

impl Observation {
    /// The attempt's time on the site: the whole attempt less our own waiting for the
    /// per-IP limit, our own questions to the egress, and the requests set aside for
    /// the one that was answered.
    pub(crate) fn sites_time(&self) -> Duration {
        self.total
            .saturating_sub(self.queued + self.checking + self.set_aside)
    }

    /// An observation through `egress` that has seen nothing yet.
    pub(crate) fn new(egress: &str) -> Observation {
        Observation {
            egress: egress.to_string(),
            ip: None,
            outcome: Outcome::Failure(Failure {
                kind: FailureKind::Connect,
                detail: String::new(),
            }),
            dns: None,
            unresolved: None,
            connect: None,
            tls: None,
            first_byte: None,
            last_asked: None,
            queued: Duration::ZERO,
            checking: Duration::ZERO,
            set_aside: Duration::ZERO,
            total: Duration::ZERO,
            lag: Duration::ZERO,
            notes: Vec::new(),
            recent_answers: 0,
            amid_our_requests: false,
            beside_ours: false,
            refusal: None,
        }
    }
}

/// Whether an OS error number says this process ran out of its own resources: EMFILE,
/// ENFILE (file descriptors), EADDRNOTAVAIL (no local port left for the address, or a
/// source address gone) or ENOBUFS (socket buffers) on Linux.
pub(crate) fn local_resource_errno(errno: i32) -> bool {
    matches!(errno, 23 | 24 | 99 | 105)
}

/// The same, read from an error message (resolvers keep only the words).
pub(crate) fn local_resource_words(message: &str) -> bool {
    [
        "Too many open files",
        "No buffer space available",
        "Cannot assign requested address",
    ]
    .iter()
    .any(|w| message.contains(w))
        || [
            "os error 23)",
            "os error 24)",
            "os error 99)",
            "os error 105)",
        ]
        .iter()
        .any(|w| message.contains(w))
}

#[cfg(test)]
mod tests {
    use super::browser::tests::get;
    use super::*;
    use crate::config::Settings;
    use crate::job::job_for_url;

    fn headers(job_headers: &[(&str, &str)], secure: bool) -> Vec<(String, String)> {
        let s = Settings::from_toml("").expect("defaults");
        let mut job = job_for_url("https://site.example/", "t").expect("job");
        job.headers = job_headers
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect();
        let plan = Plan::new(&job, &s.probe);
        plan.headers(secure)
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_jobs_headers_replace_the_browsers_of_the_same_name() {
        let h = headers(&[("accept-language", "zh-CN")], true);
        assert_eq!(get(&h, "Accept-Language"), Some("zh-CN"));
        assert_eq!(
            h.iter()
                .filter(|(n, _)| n.eq_ignore_ascii_case("accept-language"))
                .count(),
            1
        );
        assert!(get(&h, "sec-ch-ua").is_some_and(|v| v.contains("Chrome")));
        assert_eq!(get(&headers(&[], false), "sec-ch-ua"), None);
    }

    /// A job asking as another browser gets that browser's headers, not Chrome's hints
    /// beside a Firefox User-Agent, which bot managers take for a script.
    #[test]
    fn a_jobs_own_user_agent_brings_its_own_browsers_headers() {
        let firefox = "Mozilla/5.0 (X11; Linux x86_64; rv:133.0) Gecko/20100101 Firefox/133.0";
        let h = headers(&[("User-Agent", firefox)], true);
        assert_eq!(get(&h, "User-Agent"), Some(firefox));
        assert_eq!(get(&h, "sec-ch-ua"), None);
        assert_eq!(get(&h, "Sec-Fetch-Mode"), Some("navigate"));
        let script = headers(&[("user-agent", "curl/8.5.0")], true);
        assert_eq!(get(&script, "Sec-Fetch-Mode"), None);
    }

    #[test]
    fn only_a_503_asking_longer_than_a_confirmation_may_wait_confirms_itself() {
        let s = Settings::from_toml("").expect("defaults");
        let job = job_for_url("https://site.example/", "t").expect("job");
        let mut plan = Plan::new(&job, &s.probe);
        plan.timeout = Duration::from_secs(10);
        let secs = Duration::from_secs;
        // `picket check`: the probe's time is what a confirmation may wait.
        assert!(plan.confirmed_by_pause(503, secs(11)));
        assert!(!plan.confirmed_by_pause(503, secs(10)));
        assert!(
            !plan.confirmed_by_pause(429, secs(600)),
            "a 429 throttles us"
        );
        // A worker: the job's max_wait, beyond which it would be deferred.
        plan.max_wait = Some(secs(30));
        assert!(!plan.confirmed_by_pause(503, secs(20)));
        assert!(plan.confirmed_by_pause(503, secs(31)));
    }
}
