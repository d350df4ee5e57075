//! The redirect chain of one probe, with no I/O: where a redirect leads (or why it is
//! not followed), the cookies set along the way, and which of the job's headers may
//! still be sent.

use reqwest::cookie::{CookieStore, Jar};
use reqwest::header::{HeaderMap, HeaderValue, LOCATION, SET_COOKIE, STRICT_TRANSPORT_SECURITY};
use url::Url;

use crate::probe::{Failure, FailureKind};

/// Most cookies (by host and name) kept along one chain: Chrome keeps 180 a domain.
/// Cookies, not `Set-Cookie` headers: a chain re-sets its session, load-balancer and
/// CSRF cookies on every hop, and a count of headers dropped the cookie a late check
/// set (hunt Q). The hops and each answer's header lines bound the work.
const MAX_COOKIES: usize = 180;

/// What to do after an answer that may be a redirect.
#[derive(Debug)]
pub(super) enum Next {
    /// Ask [`Chain::url`], the redirect's target.
    Follow,
    /// This answer is the final one.
    Final,
    /// The redirect cannot be followed.
    Fail(Failure),
}

/// Whether browsers follow an answer with `status` to its `Location`: the Fetch
/// standard's redirect statuses, 301, 302, 303, 307 and 308, as Chrome follows them.
/// Any other 3xx is a page: Chrome shows a 300's list of choices (Firefox alone follows
/// it), no browser follows a 305 (Use Proxy: a site naming a proxy for the browser is
/// an attack, Firefox bug 187996), and a 304 to a request that asked no question of a
/// cache has nothing to show.
pub(super) fn is_followed(status: u16) -> bool {
    matches!(status, 301 | 302 | 303 | 307 | 308)
}

/// A redirect that cannot be followed, and why.
fn failed(kind: FailureKind, detail: String) -> Failure {
    Failure { kind, detail }
}

/// One probe's walk from the job's URL through its redirects.
pub(super) struct Chain {
    /// The URL the job named: its origin alone gets the job's credentials.
    first: Url,
    /// The URL asked now.
    pub(super) url: Url,
    /// Redirects followed so far.
    pub(super) redirects: u32,
    /// Cookies set along the chain, sent on later hops as a browser would: many sites
    /// set a cookie and redirect to the same URL to check it.
    pub(super) cookies: CookieJar,
    /// URLs asked, each with the cookies it was asked with.
    seen: Vec<(Url, Option<HeaderValue>)>,
    /// The job's credentials go only to the origin it named, as browsers and curl do:
    /// once a redirect leaves it they are not sent again.
    credentials: bool,
    /// Whether a hop was already asked again over HTTPS ([`Chain::upgrade`]).
    upgraded: bool,
    /// Whether a page was already reloaded with the cookie it set ([`Chain::refresh`]).
    reloaded: bool,
    /// Hosts that sent Strict-Transport-Security over HTTPS along the chain, each with
    /// whether it covers their subdomains: browsers ask them only over HTTPS from then
    /// on (RFC 6797 8.3), whatever a redirect says.
    hsts: Vec<(String, bool)>,
    /// What the last redirect's move to HTTPS was, to be said in the verdict's detail.
    hsts_note: Option<String>,
}

impl Chain {
    /// A chain starting at the job's URL.
    pub(super) fn new(url: &Url) -> Chain {
        Chain {
            first: url.clone(),
            url: url.clone(),
            redirects: 0,
            cookies: CookieJar::default(),
            seen: vec![(url.clone(), None)],
            credentials: true,
            upgraded: false,
            reloaded: false,
            hsts: Vec::new(),
            hsts_note: None,
        }
    }

    /// The note on a redirect to plain HTTP that was asked over HTTPS, once.
    pub(super) fn take_hsts_note(&mut self) -> Option<String> {
        self.hsts_note.take()
    }

    /// Keeps the Strict-Transport-Security of an answer from [`Chain::url`]: only over
    /// HTTPS, to a host name (not an IP address), with a `max-age`; `max-age=0`
    /// forgets the host.
    fn keep_hsts(&mut self, headers: &HeaderMap) {
        let Some(value) = headers.get(STRICT_TRANSPORT_SECURITY) else {
            return;
        };
        let Some(url::Host::Domain(host)) = self.url.host() else {
            return;
        };
        if self.url.scheme() != "https" {
            return;
        }
        let Some((max_age, subdomains)) = sts_directives(value.as_bytes()) else {
            return;
        };
        let host = host.to_ascii_lowercase();
        self.hsts.retain(|(h, _)| *h != host);
        if max_age > 0 {
            self.hsts.push((host, subdomains));
        }
    }

    /// `next` over HTTPS when its host sent Strict-Transport-Security along the chain
    /// (port 80 becomes 443, any other port stays), as browsers rewrite it.
    fn over_https_if_hsts(&mut self, next: Url) -> Url {
        let Some(url::Host::Domain(host)) = next.host() else {
            return next;
        };
        let host = host.to_ascii_lowercase();
        let known = self.hsts.iter().any(|(h, subdomains)| {
            host == *h
                || (*subdomains
                    && host
                        .strip_suffix(h.as_str())
                        .is_some_and(|r| r.ends_with('.')))
        });
        if next.scheme() != "http" || !known {
            return next;
        }
        let mut https = next.clone();
        if https.set_scheme("https").is_err() {
            return next;
        }
        if https.port() == Some(80) {
            let _ = https.set_port(None);
        }
        self.hsts_note = Some(format!(
            "the redirect to {next} was asked as {https}: {host} sent Strict-Transport-Security, \
             and browsers ask it only over HTTPS"
        ));
        https
    }

    /// After the hop to [`Chain::url`] failed with `kind` before any answer, moves to the
    /// same URL over HTTPS and returns the URL that failed. Browsers ask a plain-HTTP
    /// address over HTTPS first (Chrome's HTTPS-Upgrades, Firefox's HTTPS-First, HSTS)
    /// and fall back to HTTP only when that fails, so a site that closed its port 80
    /// still shows. Only once a chain, and only where browsers upgrade: `http` on its
    /// default port, to a host name with a dot (not an IP address or an intranet name),
    /// after the connection failed (refused, reset, silent), not the name.
    pub(super) fn upgrade(&mut self, kind: FailureKind) -> Option<Url> {
        let failed_to_connect = matches!(
            kind,
            FailureKind::Connect | FailureKind::Reset | FailureKind::Timeout
        );
        if self.upgraded || !failed_to_connect {
            return None;
        }
        let https = crate::probe::over_https(&self.url)?;
        self.upgraded = true;
        Some(std::mem::replace(&mut self.url, https))
    }

    /// Whether the job's header `name` is sent to [`Chain::url`].
    pub(super) fn sends(&self, name: &str) -> bool {
        self.credentials || !is_credential(name)
    }

    /// Reads a redirect answer (`status` with `headers`) from [`Chain::url`]: keeps its
    /// cookies and moves on to its `Location`, unless that is no http(s) URL, the chain
    /// runs in a loop, or it is longer than `max_redirects`. An answer without a
    /// `Location` is final, and so is one whose `Location` is empty (PHP's `header()`
    /// given an empty URL): browsers follow the first non-empty one and otherwise show
    /// the page under it. The caller asks only when the status is a redirection the job
    /// did not expect.
    pub(super) fn decide(&mut self, status: u16, headers: &HeaderMap, max_redirects: u32) -> Next {
        self.cookies.take(&self.url, headers);
        self.keep_hsts(headers);
        let mut given = headers
            .get_all(LOCATION)
            .iter()
            .filter(|l| !l.as_bytes().trim_ascii().is_empty());
        let Some(location) = given.next() else {
            return Next::Final;
        };
        // Two that differ: Chrome refuses the answer (ERR_RESPONSE_HEADERS_MULTIPLE_LOCATION,
        // a defence against header injection), and Fetch's location URL fails to parse.
        if given.any(|other| other.as_bytes().trim_ascii() != location.as_bytes().trim_ascii()) {
            return Next::Fail(failed(
                FailureKind::BadRedirect,
                format!(
                    "{status} with two different Location headers: browsers refuse the redirect"
                ),
            ));
        }
        let Some(next) = self.url.join(&location_text(location.as_bytes())).ok() else {
            return Next::Fail(failed(
                FailureKind::BadRedirect,
                format!("{status} with a Location that is not a URL"),
            ));
        };
        self.go(status, next, max_redirects)
    }

    /// Reads a page that answered with `status` and refreshes to `target` by itself (a
    /// `Refresh` header or a `<meta http-equiv="refresh">`, see `probe::refresh`): a
    /// redirect as a browser makes it. A refresh to no http(s) URL, or to the page
    /// itself with nothing new to send, leaves the browser on the page: that answer is
    /// final.
    pub(super) fn refresh(&mut self, status: u16, target: &str, max_redirects: u32) -> Next {
        let next = match self.url.join(target) {
            Ok(next) if matches!(next.scheme(), "http" | "https") => next,
            _ => return Next::Final,
        };
        if next == self.url {
            // The page itself again is another visit only with a cookie the page just
            // set (a cookie check: "set it, reload, show the site"), and only once: a
            // page that sets a new cookie on every answer and reloads every few seconds
            // is the page a person reads.
            let cookies = self.cookies.header_for(&next);
            if self.reloaded || self.seen.contains(&(next.clone(), cookies)) {
                return Next::Final;
            }
            self.reloaded = true;
        }
        self.go(status, next, max_redirects)
    }

    /// Moves on to `next`, unless it is no http(s) URL, the chain runs in a loop, or it
    /// is longer than `max_redirects`.
    fn go(&mut self, status: u16, next: Url, max_redirects: u32) -> Next {
        let next = self.over_https_if_hsts(next);
        if next.scheme() != "http" && next.scheme() != "https" {
            return Next::Fail(failed(
                FailureKind::BadRedirect,
                format!(
                    "{status} redirect to unsupported scheme {:?}",
                    next.scheme()
                ),
            ));
        }
        self.redirects += 1;
        // The same URL again is a loop only if nothing changed: a new cookie makes the
        // next visit a different request.
        let cookies = self.cookies.header_for(&next);
        let visit = (next, cookies);
        if self.seen.contains(&visit) {
            return Next::Fail(failed(
                FailureKind::TooManyRedirects,
                format!(
                    "redirect loop: {} was already visited after {} hops",
                    visit.0, self.redirects
                ),
            ));
        }
        if self.redirects > max_redirects {
            return Next::Fail(failed(
                FailureKind::TooManyRedirects,
                format!("more than {max_redirects} redirects (last to {})", visit.0),
            ));
        }
        self.credentials &= same_origin(&self.first, &visit.0);
        self.url = visit.0.clone();
        self.seen.push(visit);
        Next::Follow
    }
}

/// The `max-age` (seconds) and `includeSubDomains` of a Strict-Transport-Security
/// value; `None` for a value browsers ignore (RFC 6797 6.1, 8.1): no `max-age`, a
/// directive given twice, a `max-age` that is not digits (plain or in balanced
/// quotes), an `includeSubDomains` with a value. Other directives are passed over.
fn sts_directives(value: &[u8]) -> Option<(u64, bool)> {
    let text = std::str::from_utf8(value).ok()?;
    let mut max_age = None;
    let mut subdomains = false;
    let mut seen: Vec<String> = Vec::new();
    for directive in text.split(';').map(str::trim).filter(|d| !d.is_empty()) {
        let (name, arg) = match directive.split_once('=') {
            Some((n, a)) => (n.trim(), Some(a.trim())),
            None => (directive, None),
        };
        let name = name.to_ascii_lowercase();
        if seen.contains(&name) {
            return None;
        }
        seen.push(name.clone());
        match (name.as_str(), arg) {
            ("max-age", Some(arg)) => max_age = Some(delta_seconds(arg)?),
            ("max-age", None) | ("includesubdomains", Some(_)) => return None,
            ("includesubdomains", None) => subdomains = true,
            _ => {}
        }
    }
    Some((max_age?, subdomains))
}

/// A `max-age` value: digits, bare or in one pair of quotes.
fn delta_seconds(arg: &str) -> Option<u64> {
    let digits = match arg.strip_prefix('"') {
        Some(rest) => rest.strip_suffix('"')?,
        None => arg,
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // A number too long for u64 is a very long time.
    Some(digits.parse().unwrap_or(u64::MAX))
}

/// The cookies of one probe's redirect chain, kept as a browser keeps them (RFC 6265:
/// `Domain`, `Path`, `Secure`, `Max-Age` and `Expires`), by reqwest's cookie store.
/// No public suffix list: a cookie a site scopes to a whole suffix (`Domain=gov`)
/// reaches only the hosts that same site redirects the probe to, for seconds.
#[derive(Default)]
pub(super) struct CookieJar {
    jar: Jar,
    /// The cookies set so far, by host and name: the chain keeps at most
    /// [`MAX_COOKIES`], and a cookie set again is no new one.
    taken: std::collections::HashSet<(String, Vec<u8>)>,
}

impl CookieJar {
    /// Keeps the cookies a response from `url` sets.
    pub(super) fn take(&mut self, url: &Url, headers: &HeaderMap) {
        if !headers.contains_key(SET_COOKIE) {
            return;
        }
        let host = url.host_str().unwrap_or_default();
        let values: Vec<HeaderValue> = headers
            .get_all(SET_COOKIE)
            .iter()
            .map(|v| named(v).unwrap_or_else(|| v.clone()))
            .filter(|v| {
                let name = cookie_name(v.as_bytes());
                let known = self.taken.contains(&(host.to_string(), name.to_vec()));
                known
                    || (self.taken.len() < MAX_COOKIES
                        && self.taken.insert((host.to_string(), name.to_vec())))
            })
            .collect();
        self.jar.set_cookies(&mut values.iter(), url);
    }

    /// The `Cookie` header for a request to `url`, if any cookie applies: as bytes, since
    /// a cookie's value may be raw UTF-8 (a city's name), which browsers keep and send.
    /// A cookie without a name goes as its value alone, as browsers send it.
    pub(super) fn header_for(&self, url: &Url) -> Option<HeaderValue> {
        let header = self.jar.cookies(url)?;
        let kept_as = format!("{NAMELESS}=");
        let bytes = header.as_bytes();
        if !bytes
            .windows(kept_as.len())
            .any(|w| w == kept_as.as_bytes())
        {
            return Some(header);
        }
        let pairs: Vec<&[u8]> = bytes
            .split(|&b| b == b';')
            .map(|pair| {
                let pair = pair.trim_ascii();
                pair.strip_prefix(kept_as.as_bytes()).unwrap_or(pair)
            })
            .collect();
        HeaderValue::from_bytes(&pairs.join(&b"; "[..])).ok()
    }
}

/// The name a cookie without one is kept under. RFC 6265bis and Chrome keep
/// `Set-Cookie: chk1` as a cookie whose name is empty and send `Cookie: chk1`; reqwest's
/// store refuses an empty name, and a cookie check setting one looped.
const NAMELESS: &str = "picket-nameless";

/// A `Set-Cookie` value without a name (no `=` in its first pair, which is not empty)
/// as the store keeps it: named [`NAMELESS`]. `None` for any other.
fn named(value: &HeaderValue) -> Option<HeaderValue> {
    let bytes = value.as_bytes();
    let end = bytes.iter().position(|&b| b == b';').unwrap_or(bytes.len());
    let pair = bytes[..end].trim_ascii();
    if pair.is_empty() || pair.contains(&b'=') {
        return None;
    }
    let kept = [NAMELESS.as_bytes(), b"=", pair, &bytes[end..]].concat();
    HeaderValue::from_bytes(&kept).ok()
}

/// A `Set-Cookie` value's cookie name: the bytes before its first `=` (before its
/// first `;`), trimmed.
fn cookie_name(value: &[u8]) -> &[u8] {
    let pair = value.split(|&b| b == b';').next().unwrap_or_default();
    pair.split(|&b| b == b'=')
        .next()
        .unwrap_or_default()
        .trim_ascii()
}

/// Whether two URLs have one origin (scheme, host and port): a redirect from https to
/// http is another origin, so credentials never travel in clear text after TLS.
fn same_origin(a: &Url, b: &Url) -> bool {
    a.scheme() == b.scheme()
        && a.host_str() == b.host_str()
        && a.port_or_known_default() == b.port_or_known_default()
}

/// Request headers that carry a user's credentials.
fn is_credential(name: &str) -> bool {
    ["authorization", "cookie", "proxy-authorization"]
        .iter()
        .any(|c| name.eq_ignore_ascii_case(c))
}
/// A `Location` as browsers read it: UTF-8 when it is (the URL parser then escapes the
/// path and turns a non-ASCII host into punycode), otherwise each byte past ASCII
/// escaped as it is (a GBK or Latin-1 path from an old server).
fn location_text(bytes: &[u8]) -> std::borrow::Cow<'_, str> {
    match std::str::from_utf8(bytes) {
        Ok(text) => text.into(),
        // Every byte past ASCII is escaped; of ASCII only the controls no header holds.
        Err(_) => percent_encoding::percent_encode(bytes, percent_encoding::CONTROLS)
            .to_string()
            .into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_stay_with_the_origin_the_job_named() {
        let u = |s: &str| Url::parse(s).expect("url");
        let first = u("https://a.example/login");
        assert!(same_origin(&first, &u("https://a.example:443/next")));
        assert!(!same_origin(&first, &u("https://b.example/")));
        assert!(
            !same_origin(&first, &u("http://a.example/")),
            "https → http"
        );
        assert!(!same_origin(&first, &u("https://a.example:8443/")));
        for name in ["Authorization", "cookie", "PROXY-AUTHORIZATION"] {
            assert!(is_credential(name), "{name}");
        }
        assert!(!is_credential("Accept-Language"));
    }

    fn u(s: &str) -> Url {
        Url::parse(s).expect("url")
    }

    fn headers(list: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in list {
            h.append(
                reqwest::header::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                value.parse().expect("value"),
            );
        }
        h
    }

    fn redirect(chain: &mut Chain, location: &str) -> Next {
        chain.decide(302, &headers(&[("location", location)]), 10)
    }

    fn failure(next: Next) -> crate::probe::Failure {
        match next {
            Next::Fail(f) => f,
            other => panic!("not a failure: {other:?}"),
        }
    }

    #[test]
    fn a_plain_http_hop_that_could_not_connect_is_upgraded_once_where_browsers_upgrade() {
        let mut chain = Chain::new(&u("http://county.example.gov/news?p=1"));
        assert_eq!(chain.upgrade(FailureKind::Dns), None, "the name failed");
        assert_eq!(
            chain.upgrade(FailureKind::Connect),
            Some(u("http://county.example.gov/news?p=1"))
        );
        assert_eq!(chain.url, u("https://county.example.gov/news?p=1"));
        assert_eq!(chain.redirects, 0, "an upgrade is no redirect");
        assert_eq!(chain.upgrade(FailureKind::Connect), None, "once");
        for kind in [FailureKind::Reset, FailureKind::Timeout] {
            let mut chain = Chain::new(&u("http://county.example.gov/"));
            assert!(chain.upgrade(kind).is_some(), "{kind:?}");
        }
        for asked in [
            "http://county.example.gov:8080/",
            "http://192.0.2.7/",
            "http://intranet/",
            "https://county.example.gov/",
        ] {
            let mut chain = Chain::new(&u(asked));
            assert_eq!(chain.upgrade(FailureKind::Connect), None, "{asked}");
        }
        let mut chain = Chain::new(&u("http://county.example.gov/"));
        assert_eq!(chain.upgrade(FailureKind::Protocol), None, "it answered");
    }

    /// Hunt O: an HTTPS page that sends Strict-Transport-Security and redirects to
    /// plain HTTP. A browser asks that host only over HTTPS from then on (RFC 6797 8.3):
    /// the redirect back to itself is a loop (ERR_TOO_MANY_REDIRECTS), one to a plain
    /// port is TLS to a port that does not speak it. picket followed http:// as given.
    #[test]
    fn a_host_that_sent_hsts_is_asked_only_over_https_on_the_rest_of_the_chain() {
        let hsts = |value: &str, location: &str| {
            headers(&[("strict-transport-security", value), ("location", location)])
        };
        let mut chain = Chain::new(&u("https://county.example.gov/"));
        let next = chain.decide(
            301,
            &hsts("max-age=31536000", "http://county.example.gov/"),
            10,
        );
        let f = failure(next);
        assert_eq!(f.kind, FailureKind::TooManyRedirects, "{}", f.detail);
        assert!(chain
            .take_hsts_note()
            .is_some_and(|n| n.contains("Strict-Transport-Security")));

        let mut chain = Chain::new(&u("https://county.example.gov:8443/"));
        let next = chain.decide(
            302,
            &hsts("max-age=600", "http://county.example.gov:8080/a"),
            10,
        );
        assert!(matches!(next, Next::Follow), "{next:?}");
        assert_eq!(chain.url, u("https://county.example.gov:8080/a"));
        // Port 80 becomes 443; a subdomain only with includeSubDomains.
        let mut chain = Chain::new(&u("https://county.example.gov/"));
        chain.decide(
            302,
            &hsts(
                "max-age=600; includeSubDomains",
                "http://county.example.gov:80/x",
            ),
            10,
        );
        assert_eq!(chain.url, u("https://county.example.gov/x"));
        redirect(&mut chain, "http://www.county.example.gov/");
        assert_eq!(chain.url, u("https://www.county.example.gov/"));
        let mut chain = Chain::new(&u("https://county.example.gov/"));
        chain.decide(
            302,
            &hsts("max-age=600", "http://www.county.example.gov/"),
            10,
        );
        assert_eq!(
            chain.url,
            u("http://www.county.example.gov/"),
            "no includeSubDomains"
        );

        // Not over plain HTTP, not with max-age=0, not without max-age, not to an IP.
        for (first, value, location) in [
            (
                "http://county.example.gov/",
                "max-age=600",
                "http://county.example.gov/a",
            ),
            (
                "https://county.example.gov/",
                "max-age=0",
                "http://county.example.gov/a",
            ),
            (
                "https://county.example.gov/",
                "includeSubDomains",
                "http://county.example.gov/a",
            ),
            ("https://192.0.2.7/", "max-age=600", "http://192.0.2.7/a"),
        ] {
            let mut chain = Chain::new(&u(first));
            chain.decide(302, &hsts(value, location), 10);
            assert_eq!(chain.url, u(location), "{first} {value}");
            assert!(chain.take_hsts_note().is_none());
        }
    }

    #[test]
    fn a_relative_location_is_taken_from_the_url_asked() {
        let mut chain = Chain::new(&u("https://a.example/dir/page?q=1"));
        assert!(matches!(redirect(&mut chain, "next"), Next::Follow));
        assert_eq!(chain.url, u("https://a.example/dir/next"));
        assert!(matches!(redirect(&mut chain, "/root"), Next::Follow));
        assert_eq!(chain.url, u("https://a.example/root"));
        assert!(matches!(
            redirect(&mut chain, "//b.example/x"),
            Next::Follow
        ));
        assert_eq!(chain.url, u("https://b.example/x"));
        assert_eq!(chain.redirects, 3);
    }

    #[test]
    fn a_location_in_raw_utf8_or_legacy_bytes_is_followed_as_browsers_follow_it() {
        let raw = |bytes: &[u8]| {
            let mut h = HeaderMap::new();
            h.insert(
                LOCATION,
                reqwest::header::HeaderValue::from_bytes(bytes).expect("obs-text is allowed"),
            );
            h
        };
        let mut chain = Chain::new(&u("http://a.example/"));
        let utf8 = "/欢迎/index.html".as_bytes();
        assert!(matches!(chain.decide(302, &raw(utf8), 10), Next::Follow));
        assert_eq!(
            chain.url,
            u("http://a.example/%E6%AC%A2%E8%BF%8E/index.html")
        );
        // GBK bytes are no UTF-8: each is escaped as it is, as browsers do.
        let gbk = b"/\xbb\xb6\xd3\xad/index.html";
        assert!(matches!(chain.decide(302, &raw(gbk), 10), Next::Follow));
        assert_eq!(chain.url, u("http://a.example/%BB%B6%D3%AD/index.html"));
        let idn = "http://例え.jp/".as_bytes();
        assert!(matches!(chain.decide(302, &raw(idn), 10), Next::Follow));
        assert_eq!(chain.url, u("http://xn--r8jz45g.jp/"));
    }

    #[test]
    fn a_refresh_elsewhere_is_followed_and_one_to_the_page_itself_is_not() {
        let mut chain = Chain::new(&u("http://a.example/dir/"));
        assert!(matches!(chain.refresh(200, "./", 10), Next::Final));
        assert!(matches!(
            chain.refresh(200, "javascript:go()", 10),
            Next::Final
        ));
        assert_eq!(chain.redirects, 0);
        assert!(matches!(chain.refresh(200, "/portal/", 10), Next::Follow));
        assert_eq!(chain.url, u("http://a.example/portal/"));
        assert_eq!(chain.redirects, 1);
        // Back where it began, with nothing changed: a loop, as browsers find it.
        let back = chain.refresh(200, "/dir/", 10);
        assert_eq!(failure(back).kind, FailureKind::TooManyRedirects);
    }

    #[test]
    fn a_page_reloading_itself_with_a_cookie_it_set_is_asked_again_once() {
        let mut chain = Chain::new(&u("http://a.example/"));
        // Nothing new to send: the page stays.
        assert!(matches!(chain.refresh(200, "", 10), Next::Final));
        let url = chain.url.clone();
        chain
            .cookies
            .take(&url, &headers(&[("set-cookie", "checked=1; Path=/")]));
        assert!(matches!(chain.refresh(200, "", 10), Next::Follow));
        assert_eq!((chain.url.clone(), chain.redirects), (url.clone(), 1));
        // A cookie rotated on every answer would reload for ever: once is enough.
        chain
            .cookies
            .take(&url, &headers(&[("set-cookie", "checked=2; Path=/")]));
        assert!(matches!(chain.refresh(200, "", 10), Next::Final));
    }

    #[test]
    fn only_the_statuses_browsers_follow_are_redirects() {
        for status in [301, 302, 303, 307, 308] {
            assert!(is_followed(status), "{status}");
        }
        for status in [200, 300, 304, 305, 306, 399, 404] {
            assert!(!is_followed(status), "{status}");
        }
    }

    #[test]
    fn an_answer_without_location_is_final() {
        let mut chain = Chain::new(&u("http://a.example/"));
        assert!(matches!(
            chain.decide(302, &HeaderMap::new(), 10),
            Next::Final
        ));
        assert_eq!(chain.redirects, 0);
    }

    #[test]
    fn a_location_that_is_no_http_url_is_a_bad_redirect() {
        let mut chain = Chain::new(&u("http://a.example/"));
        let f = failure(redirect(&mut chain, "http://[::1"));
        assert_eq!(f.kind, FailureKind::BadRedirect);
        assert!(f.detail.contains("not a URL"), "{}", f.detail);
        let f = failure(redirect(&mut chain, "ftp://a.example/file"));
        assert_eq!(f.kind, FailureKind::BadRedirect);
        assert!(f.detail.contains("\"ftp\""), "{}", f.detail);
    }

    #[test]
    fn a_url_visited_again_with_nothing_changed_is_a_loop() {
        let mut chain = Chain::new(&u("http://a.example/"));
        assert!(matches!(redirect(&mut chain, "/b"), Next::Follow));
        let f = failure(redirect(&mut chain, "/"));
        assert_eq!(f.kind, FailureKind::TooManyRedirects);
        assert!(f.detail.contains("redirect loop"), "{}", f.detail);
    }

    #[test]
    fn a_cookie_check_redirecting_to_the_same_url_is_not_a_loop() {
        let mut chain = Chain::new(&u("http://a.example/"));
        let set = headers(&[("location", "/"), ("set-cookie", "check=1; Path=/")]);
        assert!(matches!(chain.decide(302, &set, 10), Next::Follow));
        assert_eq!(chain.url, u("http://a.example/"));
        assert_eq!(
            chain.cookies.header_for(&chain.url),
            Some(HeaderValue::from_static("check=1"))
        );
        // The same cookie again changes nothing: now it is a loop.
        let f = failure(chain.decide(302, &set, 10));
        assert_eq!(f.kind, FailureKind::TooManyRedirects);
    }

    #[test]
    fn more_redirects_than_the_plan_allows_fail() {
        let mut chain = Chain::new(&u("http://a.example/0"));
        let to = |n: u32| headers(&[("location", &format!("/{n}"))]);
        assert!(matches!(chain.decide(301, &to(1), 2), Next::Follow));
        assert!(matches!(chain.decide(301, &to(2), 2), Next::Follow));
        let f = failure(chain.decide(301, &to(3), 2));
        assert_eq!(f.kind, FailureKind::TooManyRedirects);
        assert!(f.detail.contains("more than 2 redirects"), "{}", f.detail);
        assert!(f.detail.contains("http://a.example/3"), "{}", f.detail);
    }

    #[test]
    fn credentials_are_dropped_once_a_redirect_leaves_the_origin_for_good() {
        let mut chain = Chain::new(&u("https://a.example/login"));
        assert!(chain.sends("Authorization"));
        assert!(matches!(redirect(&mut chain, "/home"), Next::Follow));
        assert!(chain.sends("Authorization"), "same origin");
        assert!(matches!(
            redirect(&mut chain, "http://a.example/home"),
            Next::Follow
        ));
        assert!(!chain.sends("Authorization"), "https → http");
        assert!(!chain.sends("Cookie"));
        assert!(chain.sends("Accept-Language"), "other headers still go");
        assert!(matches!(
            redirect(&mut chain, "https://a.example/again"),
            Next::Follow
        ));
        assert!(
            !chain.sends("authorization"),
            "not sent again on the way back"
        );
    }

    /// The `Cookie` header `jar` sends to `url`, its pairs sorted (RFC 6265 leaves the
    /// order of equally long paths to the user agent).
    fn sent(jar: &CookieJar, url: &str) -> Option<String> {
        let header = jar.header_for(&u(url))?;
        let header = String::from_utf8_lossy(header.as_bytes()).into_owned();
        let mut pairs: Vec<&str> = header.split("; ").collect();
        pairs.sort_unstable();
        Some(pairs.join("; "))
    }

    /// A cookie without a name is kept under [`NAMELESS`], and one set after it
    /// replaces it, as browsers key it by its (empty) name; others are kept as they came.
    #[test]
    fn a_cookie_without_a_name_is_kept_as_browsers_keep_it() {
        let v = |s: &str| HeaderValue::from_str(s).expect("a header value");
        assert_eq!(
            named(&v("chk1; Path=/")),
            Some(v("picket-nameless=chk1; Path=/"))
        );
        for kept in ["a=b; Path=/", "=x", " ; Path=/", ""] {
            assert_eq!(named(&v(kept)), None, "{kept:?}");
        }
        let mut jar = CookieJar::default();
        let url = u("https://example.com/");
        jar.take(&url, &headers(&[("set-cookie", "chk1; Path=/")]));
        jar.take(&url, &headers(&[("set-cookie", "chk2; Path=/")]));
        assert_eq!(sent(&jar, "https://example.com/x").as_deref(), Some("chk2"));
    }

    #[test]
    fn a_cookie_goes_where_its_domain_and_path_say_as_in_a_browser() {
        let mut jar = CookieJar::default();
        jar.take(
            &u("https://WWW.example.com/a/b"),
            &headers(&[
                ("set-cookie", "wide=1; Domain=example.com; Path=/"),
                ("set-cookie", "narrow=2; Path=/a"),
                ("set-cookie", "here=3"),
                ("set-cookie", "no value"),
            ]),
        );
        // `Domain` widens a cookie to the domain and its subdomains.
        assert_eq!(
            sent(&jar, "https://example.com/").as_deref(),
            Some("wide=1")
        );
        assert_eq!(
            sent(&jar, "https://sub.example.com/x").as_deref(),
            Some("wide=1")
        );
        // Without it, the setting host only; `Path` narrows it, and with no `Path`
        // the default is the directory of the URL that set it (`/a`). A cookie without
        // a name goes as its value alone.
        assert_eq!(
            sent(&jar, "https://www.example.com/a/c").as_deref(),
            Some("here=3; narrow=2; no value; wide=1")
        );
        assert_eq!(
            sent(&jar, "https://www.example.com/other").as_deref(),
            Some("wide=1")
        );
        assert_eq!(
            sent(&jar, "https://www.example.com/ab").as_deref(),
            Some("wide=1")
        );
        assert_eq!(sent(&jar, "https://other.test/"), None);
        assert_eq!(sent(&jar, "https://badexample.com/"), None);
    }

    #[test]
    fn a_cookie_for_another_domain_a_secure_one_over_http_and_an_expired_one_are_not_sent() {
        let mut jar = CookieJar::default();
        let from = u("https://www.example.com/");
        jar.take(
            &from,
            &headers(&[
                ("set-cookie", "foreign=1; Domain=other.test"),
                ("set-cookie", "secure=2; Secure"),
                ("set-cookie", "gone=3"),
            ]),
        );
        jar.take(&from, &headers(&[("set-cookie", "gone=; Max-Age=0")]));
        assert_eq!(sent(&jar, "https://other.test/"), None);
        assert_eq!(
            sent(&jar, "https://www.example.com/").as_deref(),
            Some("secure=2")
        );
        assert_eq!(sent(&jar, "http://www.example.com/"), None);
        // A cookie set again replaces the old value.
        jar.take(&from, &headers(&[("set-cookie", "secure=4; Secure")]));
        assert_eq!(
            sent(&jar, "https://www.example.com/").as_deref(),
            Some("secure=4")
        );
    }

    #[test]
    fn two_different_locations_are_refused_and_the_same_one_twice_is_followed() {
        let mut chain = Chain::new(&u("http://a.example/"));
        let mut two = headers(&[("location", "/one")]);
        two.append(LOCATION, HeaderValue::from_static("http://b.example/two"));
        match chain.decide(302, &two, 10) {
            Next::Fail(f) => assert!(
                f.kind == FailureKind::BadRedirect
                    && f.detail.contains("two different Location headers"),
                "{f:?}"
            ),
            _ => panic!("two different Locations were followed"),
        }
        let mut same = headers(&[("location", "/next")]);
        same.append(LOCATION, HeaderValue::from_static("/next"));
        assert!(matches!(chain.decide(302, &same, 10), Next::Follow));
    }

    #[test]
    fn an_empty_location_is_no_redirect_and_the_first_non_empty_one_is() {
        let mut chain = Chain::new(&u("http://a.example/"));
        let empty = headers(&[("location", "")]);
        assert!(matches!(chain.decide(302, &empty, 10), Next::Final));
        let mut two = headers(&[("location", " ")]);
        two.append(LOCATION, HeaderValue::from_static("/next"));
        assert!(matches!(chain.decide(302, &two, 10), Next::Follow));
        assert_eq!(chain.url, u("http://a.example/next"));
    }

    #[test]
    fn a_cookie_with_a_utf8_value_is_sent_with_the_others() {
        let mut jar = CookieJar::default();
        let url = u("http://a.example/");
        let mut set = HeaderMap::new();
        let utf8 = HeaderValue::from_bytes("city=北京; Path=/".as_bytes()).expect("obs-text");
        set.append(SET_COOKIE, utf8);
        set.append(SET_COOKIE, HeaderValue::from_static("lb=1; Path=/"));
        jar.take(&url, &set);
        assert_eq!(
            sent(&jar, "http://a.example/").as_deref(),
            Some("city=北京; lb=1")
        );
    }

    /// Hunt Q. A big site's chain (http → https → www → /en/ → a sign-on check) re-sets
    /// its session, load-balancer and CSRF cookies on every hop: 8 cookies a hop made
    /// the 50 `Set-Cookie` headers the jar counted by the sixth hop, and the cookie the
    /// seventh set for its check was dropped: the check sent the browser round again, a
    /// false `down/too_many_redirects`. Browsers count cookies, not headers (Chrome
    /// keeps 180 a domain).
    #[test]
    fn hunt_q_a_chain_re_setting_its_cookies_keeps_a_late_one() {
        let mut jar = CookieJar::default();
        let url = u("http://a.example/");
        let every_hop: Vec<(&str, String)> = (0..8)
            .map(|i| ("set-cookie", format!("session{i}=v; Path=/")))
            .collect();
        for _ in 0..7 {
            let list: Vec<(&str, &str)> = every_hop.iter().map(|(n, v)| (*n, v.as_str())).collect();
            jar.take(&url, &headers(&list));
        }
        jar.take(
            &url,
            &headers(&[("set-cookie", "auth_check=passed; Path=/")]),
        );
        let sent = sent(&jar, "http://a.example/").unwrap_or_default();
        assert!(sent.contains("auth_check=passed"), "{sent}");
    }

    #[test]
    fn the_jar_keeps_at_most_max_cookies() {
        let mut jar = CookieJar::default();
        let url = u("http://a.example/");
        for i in 0..MAX_COOKIES + 10 {
            jar.take(&url, &headers(&[("set-cookie", &format!("c{i}=v"))]));
        }
        let header = jar.header_for(&url).expect("cookies");
        let header = header.to_str().expect("ASCII cookies");
        assert_eq!(header.split("; ").count(), MAX_COOKIES);
    }

    /// reviewV: RFC 6797 6.1 says every directive appears at most once and 8.1 that a
    /// UA ignores a Strict-Transport-Security value that does not conform (Chrome's
    /// ParseHSTSHeader refuses these too). `sts_directives` (2e340e6) takes the last of
    /// two `max-age`s, an unbalanced quote and a signed number, so picket asks over
    /// HTTPS a host browsers keep asking over plain HTTP (there a port that speaks no
    /// TLS, or a redirect loop, is a false `down`).
    #[test]
    fn review_v_a_non_conforming_sts_value_is_ignored() {
        for value in [
            "max-age=0; max-age=600",
            "max-age=600; max-age=600",
            "max-age=600; includeSubDomains; includeSubDomains",
            "max-age=\"600",
            "max-age=600\"",
            "max-age=+600",
        ] {
            assert_eq!(sts_directives(value.as_bytes()), None, "{value}");
            let mut chain = Chain::new(&u("https://county.example.gov/"));
            chain.decide(
                302,
                &headers(&[
                    ("strict-transport-security", value),
                    ("location", "http://county.example.gov:8080/a"),
                ]),
                10,
            );
            assert_eq!(chain.url, u("http://county.example.gov:8080/a"), "{value}");
        }
    }
}
