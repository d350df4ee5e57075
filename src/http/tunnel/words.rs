//! What a proxy that marks its own pages with no header says about them. squid names
//! its error (`X-Squid-Error`) and RFC 9209 proxies say `Proxy-Status`; tinyproxy,
//! Privoxy and Apache's mod_proxy say it only in their status line's reason phrase, or
//! by serving the same page they serve for a host that does not exist. Read here, a
//! proxy's own failure is told from the site's, which a bare status cannot do: "502
//! Unable to connect to upstream proxy" is the egress's parent gone, not the site.

use http::StatusCode;

/// What a proxy's own reason phrase says happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Words {
    /// It could not connect to the address (tinyproxy's "Unable to connect", Privoxy's
    /// "Connect failed"). tinyproxy says the same when its own lookup of a name fails.
    NoConnection,
    /// Its connection to the address timed out (Privoxy's "Connection timeout").
    NoConnectionInTime,
    /// Its own way out failed: the parent proxy it forwards to (tinyproxy's "Unable to
    /// connect to upstream proxy", Privoxy's "Forwarding failure").
    ParentDown,
    /// Its own lookup of the name failed (Privoxy's "No such domain"): picket's found it.
    NoSuchDomain,
    /// Its rules refused the request ("Request blocked by Privoxy", tinyproxy's "Access
    /// violation" for a port it does not tunnel to, and "Filtered").
    Rules,
    /// It serves as many clients as it takes (Privoxy's "Too many open connections" past
    /// `max-client-connections`): the next is turned away, whatever its site.
    Full,
}

impl Words {
    /// The words of a reason phrase, if they are a proxy's own.
    pub(super) fn of(reason: &str) -> Option<Words> {
        let r = reason.trim().to_ascii_lowercase();
        let words = if r.contains("upstream proxy") || r == "forwarding failure" {
            Words::ParentDown
        } else if r == "no such domain" {
            Words::NoSuchDomain
        } else if r.contains("blocked by privoxy") || r == "access violation" || r == "filtered" {
            Words::Rules
        } else if r == "unable to connect" || r == "connect failed" {
            Words::NoConnection
        } else if r == "connection timeout" {
            Words::NoConnectionInTime
        } else if r.contains("too many") && r.contains("connections") {
            Words::Full
        } else {
            return None;
        };
        Some(words)
    }
}

/// How a proxy's own page for a host that does not exist looks (its answer to
/// `picket-egress-check.invalid`), so the same page for a site's name is known for
/// the proxy's, whatever its words: Apache's "500 Proxy Error", tinyproxy's "500 Unable
/// to connect".
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct OwnPage {
    pub(super) status: StatusCode,
    pub(super) reason: Option<String>,
    pub(super) server: Option<String>,
}

impl OwnPage {
    /// The page of `answer`, if it is an error page (a proxy's answer to a host that does
    /// not exist; a web server's page is none).
    pub(super) fn of<B>(answer: &http::Response<B>) -> Option<OwnPage> {
        let status = answer.status();
        (status.is_client_error() || status.is_server_error()).then(|| OwnPage::read(answer))
    }

    /// The status, reason phrase and `Server` of any answer.
    pub(super) fn read<B>(answer: &http::Response<B>) -> OwnPage {
        OwnPage {
            status: answer.status(),
            reason: reason_phrase(answer),
            server: header(answer, "server"),
        }
    }
}

/// The reason phrase of `answer` when it is not the standard one (hyper keeps only
/// those).
fn reason_phrase<B>(answer: &http::Response<B>) -> Option<String> {
    answer
        .extensions()
        .get::<hyper::ext::ReasonPhrase>()
        .map(|r| String::from_utf8_lossy(r.as_bytes()).into_owned())
}

/// A header of `answer` as text.
pub(super) fn header<B>(answer: &http::Response<B>, name: &str) -> Option<String> {
    answer
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_reason_phrases_of_tinyproxy_and_privoxy_are_read() {
        let cases = [
            (
                "Unable to connect to upstream proxy",
                Some(Words::ParentDown),
            ),
            ("Forwarding failure", Some(Words::ParentDown)),
            ("No such domain", Some(Words::NoSuchDomain)),
            ("Request blocked by Privoxy", Some(Words::Rules)),
            ("Access violation", Some(Words::Rules)),
            ("Unable to connect", Some(Words::NoConnection)),
            ("Connect failed", Some(Words::NoConnection)),
            ("Connection timeout", Some(Words::NoConnectionInTime)),
            ("Too many open connections", Some(Words::Full)),
            ("Too Many Connections", Some(Words::Full)),
            ("Service Unavailable", None),
            ("Proxy Error", None),
            ("Access Denied", None),
        ];
        for (reason, words) in cases {
            assert_eq!(Words::of(reason), words, "{reason}");
        }
    }

    #[test]
    fn only_an_error_page_is_a_proxys_own_page_for_no_such_host() {
        let page = |status: u16| {
            let answer = http::Response::builder()
                .status(status)
                .header("Server", "Apache/2.4.71 (Debian)")
                .body(())
                .expect("answer");
            OwnPage::of(&answer)
        };
        assert!(page(200).is_none());
        assert!(page(302).is_none());
        let own = page(500).expect("an error page");
        assert_eq!(own.server.as_deref(), Some("Apache/2.4.71 (Debian)"));
        assert_ne!(Some(own), page(503));
    }
}
