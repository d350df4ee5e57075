//! The redirect chain of one probe, with no I/O: where a redirect leads (or why it is
//! not followed), the cookies set along the way, and which of the job's headers may
//! still be sent.

use reqwest::header::{HeaderMap, LOCATION, SET_COOKIE};
use url::Url;

use super::fail;
use crate::probe::{FailureKind, Outcome};

/// Most cookies kept along one chain: enough for any cookie check, bounded all the same.
const MAX_COOKIES: usize = 50;

/// What to do after an answer that may be a redirect.
#[derive(Debug)]
pub(super) enum Next {
    /// Ask [`Chain::url`], the redirect's target.
    Follow,
    /// This answer is the final one.
    Final,
    /// The redirect cannot be followed.
    Fail(Outcome),
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
    /// URLs asked, each with the number of cookies it was asked with.
    seen: Vec<(Url, usize)>,
    /// The job's credentials go only to the origin it named, as browsers and curl do:
    /// once a redirect leaves it they are not sent again.
    credentials: bool,
}

impl Chain {
    /// A chain starting at the job's URL.
    pub(super) fn new(url: &Url) -> Chain {
        Chain {
            first: url.clone(),
            url: url.clone(),
            redirects: 0,
            cookies: CookieJar::default(),
            seen: vec![(url.clone(), 0)],
            credentials: true,
        }
    }

    /// Whether the job's header `name` is sent to [`Chain::url`].
    pub(super) fn sends(&self, name: &str) -> bool {
        self.credentials || !is_credential(name)
    }

    /// Reads a redirect answer (`status` with `headers`) from [`Chain::url`]: keeps its
    /// cookies and moves on to its `Location`, unless that is no http(s) URL, the chain
    /// runs in a loop, or it is longer than `max_redirects`. An answer without a
    /// `Location` is final. The caller asks only when the status is a redirection the
    /// job did not expect.
    pub(super) fn decide(&mut self, status: u16, headers: &HeaderMap, max_redirects: u32) -> Next {
        self.cookies.take(&self.url, headers);
        let Some(location) = headers.get(LOCATION) else {
            return Next::Final;
        };
        let Some(next) = location.to_str().ok().and_then(|l| self.url.join(l).ok()) else {
            return Next::Fail(fail(
                FailureKind::BadRedirect,
                format!("{status} with a Location that is not a URL"),
            ));
        };
        if next.scheme() != "http" && next.scheme() != "https" {
            return Next::Fail(fail(
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
        let visit = (next, self.cookies.len());
        if self.seen.contains(&visit) {
            return Next::Fail(fail(
                FailureKind::TooManyRedirects,
                format!(
                    "redirect loop: {} was already visited after {} hops",
                    visit.0, self.redirects
                ),
            ));
        }
        if self.redirects > max_redirects {
            return Next::Fail(fail(
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

/// The cookies of one probe's redirect chain, by host (no paths, no expiry: the chain
/// lasts seconds). `Domain` and `Path` are not read: a cookie goes back only to the
/// host that set it, on any path.
#[derive(Default)]
pub(super) struct CookieJar {
    cookies: Vec<(String, String, String)>,
}

impl CookieJar {
    /// Keeps the `Set-Cookie` name=value pairs of a response from `url`'s host.
    pub(super) fn take(&mut self, url: &Url, headers: &HeaderMap) {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        for value in headers.get_all(SET_COOKIE) {
            let Some(pair) = value.to_str().ok().and_then(|v| v.split(';').next()) else {
                continue;
            };
            let Some((name, val)) = pair.split_once('=') else {
                continue;
            };
            let (name, val) = (name.trim().to_string(), val.trim().to_string());
            self.cookies.retain(|(h, n, _)| !(h == &host && n == &name));
            if self.cookies.len() < MAX_COOKIES {
                self.cookies.push((host.clone(), name, val));
            }
        }
    }

    /// The `Cookie` header for a request to `url`, if any cookie applies.
    pub(super) fn header_for(&self, url: &Url) -> Option<String> {
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .filter(|(h, _, _)| *h == host)
            .map(|(_, n, v)| format!("{n}={v}"))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    fn len(&self) -> usize {
        self.cookies.len()
    }
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
            Next::Fail(Outcome::Failure(f)) => f,
            other => panic!("not a failure: {other:?}"),
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
            chain.cookies.header_for(&chain.url).as_deref(),
            Some("check=1")
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

    #[test]
    fn cookies_go_back_only_to_the_host_that_set_them_whatever_domain_and_path_say() {
        let mut jar = CookieJar::default();
        let from = u("https://WWW.example.com/a/b");
        jar.take(
            &from,
            &headers(&[
                ("set-cookie", "wide=1; Domain=example.com; Path=/"),
                ("set-cookie", "narrow=2; Path=/a"),
                ("set-cookie", "no value"),
            ]),
        );
        let sent = |jar: &CookieJar, url: &str| jar.header_for(&u(url));
        // Path is not read: the chain lasts seconds, and any path of the host gets them.
        assert_eq!(
            sent(&jar, "https://www.example.com/other").as_deref(),
            Some("wide=1; narrow=2")
        );
        // Domain is not read either: a cookie is the setting host's only.
        assert_eq!(sent(&jar, "https://example.com/"), None);
        assert_eq!(sent(&jar, "https://sub.www.example.com/"), None);
        assert_eq!(sent(&jar, "https://other.test/"), None);
        // A cookie set again replaces the old value.
        jar.take(&from, &headers(&[("set-cookie", "wide=3")]));
        assert_eq!(
            sent(&jar, "http://www.example.com/").as_deref(),
            Some("narrow=2; wide=3")
        );
    }

    #[test]
    fn the_jar_keeps_at_most_fifty_cookies() {
        let mut jar = CookieJar::default();
        let url = u("http://a.example/");
        for i in 0..60 {
            jar.take(&url, &headers(&[("set-cookie", &format!("c{i}=v"))]));
        }
        assert_eq!(jar.len(), MAX_COOKIES);
    }
}
