//! Fetching a missing intermediate from the URL a certificate names, as browsers do: a
//! plain GET through the probe's egress, to an address the policy allows, counted by
//! the per-IP limit like any request, within the probe's time; redirects followed (the
//! statuses browsers follow, `redirect::is_followed`). A URL that failed on its own is
//! remembered and not asked again for a while (`failed`).

use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::time::Instant;
use url::Url;

use super::failed::Unreached;
use super::formats::parse_certificates;
use super::{ca_issuers, MissingIssuer};
use crate::http::connect::pick_addresses;
use crate::http::failure::{root_cause, tls_problem};
use crate::http::pin::Hop;
use crate::http::socks_watch::watched;
use crate::http::tunnel::SendError;
use crate::http::{HttpProber, Probe};
use crate::limit::{Grant, Request};
use crate::probe::policy;

/// `caIssuers` answers fetched for one chain at most: an intermediate, and the one above.
const MAX_FETCHES: usize = 3;

/// Longest time one fetch may take (within the probe's own time).
const FETCH_TIME: Duration = Duration::from_secs(5);

/// How close to the end of a fetch's time a failure may come and still be taken for
/// that time running out (timers fire a little late, never early).
const TIME_UP_MARGIN: Duration = Duration::from_millis(50);

/// Largest answer read: an intermediate is 1–2 KB, a government CA's bundle 10–30 KB.
const MAX_CERT_BYTES: usize = 64 * 1024;

/// Redirects followed from a `caIssuers` URL (a CA that moved its files).
const MAX_MOVES: usize = 3;

/// Why a fetch failed: the URL's own failure (an error answer, no certificate, a host
/// that is refused or does not answer in full time twice, `failed::CONFIRM_AFTER`
/// apart), remembered; or its host not reached once, which may be our network's
/// moment and is not remembered as its failure yet; or a moment of ours (the
/// probe's time running out under a request, the egress's proxy), which is not; or, not
/// asked at all, the per-IP limit of the URL's host allowing no request in the probe's
/// time, or no time left to ask, which are not either and leave the chain unknown.
enum Failure {
    Url(String),
    /// Its host refused, did not answer in the fetch's full time, had no address, or
    /// broke its answer off.
    Unreached(String),
    Ours(String),
    /// The egress's proxy failed, not the URL.
    Egress(String),
    /// Why, and about how long until the limit has a slot.
    Limited(String, Duration),
    /// Not asked: the probe's time was over before the request could go.
    NoTime(String),
}

impl Failure {
    fn why(&self) -> &str {
        match self {
            Failure::Url(why) | Failure::Ours(why) | Failure::NoTime(why) => why,
            Failure::Unreached(why) => why,
            Failure::Egress(why) => why,
            Failure::Limited(why, _) => why,
        }
    }
}

/// Why a chain could not be completed.
pub(in crate::http) enum Incomplete {
    /// No URL it names served the missing issuer, as a browser would find too (or the
    /// fetched issuer leaves the certificate failing), in words.
    Site(String),
    /// Our per-IP limit allowed no fetch of a URL it names in the probe's time: that
    /// URL may have completed it, so nothing is known of the site's chain. About how
    /// long until the limit has a slot for it.
    Limited(String, Duration),
    /// The probe's time was over before a URL it names could be asked (earlier
    /// fetches, or our limit, took it), or under its request: nothing is known of the
    /// site's chain either.
    NoTime(String),
    /// The egress's proxy failed under a fetch: nothing is known of the chain.
    Egress(String),
    /// A URL it names was not reached, for the first time lately: our network's moment
    /// or the CA's server, not known yet, so neither is the chain.
    Unreached(String),
}

/// What one GET of a `caIssuers` URL gave.
enum Fetched {
    /// One certificate, or a bundle's.
    Certificates(Vec<CertificateDer<'static>>),
    /// A redirect to this URL.
    Moved(Url),
}

impl HttpProber {
    /// Fetches what `host`'s chain lacks, following `caIssuers` URLs (up to
    /// [`MAX_FETCHES`] of them), until the chain is complete (`Ok`: the site is to be
    /// asked again) or it cannot be (why, in words).
    pub(in crate::http) async fn complete_chain(
        &self,
        probe: &Probe<'_>,
        host: &str,
        missing: &MissingIssuer,
    ) -> Result<(), Incomplete> {
        let mut urls: VecDeque<String> = missing.urls.iter().cloned().collect();
        let mut seen: HashSet<String> = urls.iter().cloned().collect();
        let mut fetched: Vec<CertificateDer<'static>> = Vec::new();
        // The URLs that served them: what they are kept for.
        let mut served: Vec<String> = Vec::new();
        let mut fetches = 0;
        let mut why = String::from("no caIssuers URL could be fetched");
        let mut limited = None;
        let mut no_time = None;
        let mut egress = None;
        let mut unreached = None;
        while let Some(url) = urls.pop_front() {
            if fetches == MAX_FETCHES {
                break;
            }
            fetches += 1;
            let certs = match self.fetch_remembering(probe, &url).await {
                Ok(certs) => certs,
                Err(Failure::Limited(e, wait)) => {
                    limited = Some((format!("{url}: {e}"), wait));
                    continue;
                }
                // Our time running out under the request is ours as much.
                Err(Failure::NoTime(e) | Failure::Ours(e)) => {
                    no_time = Some(format!("{url}: {e}"));
                    continue;
                }
                Err(Failure::Egress(e)) => {
                    egress = Some(format!("{url}: {e}"));
                    continue;
                }
                Err(Failure::Unreached(e)) => {
                    unreached = Some(format!("{url}: {e}"));
                    continue;
                }
                Err(e) => {
                    why = format!("{url}: {}", e.why());
                    continue;
                }
            };
            for cert in &certs {
                let named = ca_issuers(cert).into_iter();
                urls.extend(named.filter(|u| seen.insert(u.clone())));
            }
            fetched.extend(certs);
            served.push(url.clone());
            match self.issuers.complete(missing, host, (&fetched, &served)) {
                Ok(true) => return Ok(()),
                Ok(false) => why = format!("{url} does not serve the missing issuer"),
                Err(e) => {
                    return Err(Incomplete::Site(format!(
                        "with its chain complete, the certificate {}",
                        tls_problem(&e)
                    )))
                }
            }
        }
        // What leaves the chain not known, the most our own first.
        let not_known = egress
            .map(Incomplete::Egress)
            .or(limited.map(|(why, wait)| Incomplete::Limited(why, wait)))
            .or(no_time.map(Incomplete::NoTime))
            .or(unreached.map(Incomplete::Unreached));
        // Another probe may have fetched the issuer while ours was refused.
        if not_known.is_some() && self.issuers.kept_complete(missing, host) {
            return Ok(());
        }
        Err(not_known.unwrap_or(Incomplete::Site(why)))
    }

    /// The certificates at `url`, or why not: a failure of the URL's own is remembered
    /// for a while and said again instead of fetching.
    async fn fetch_remembering(
        &self,
        probe: &Probe<'_>,
        url: &str,
    ) -> Result<Vec<CertificateDer<'static>>, Failure> {
        use crate::metric::{issuer_fetch, IssuerFetch};
        if let Some(then) = self.issuers.failed.lately(url, Instant::now()) {
            issuer_fetch(IssuerFetch::Remembered);
            return Err(Failure::Url(then));
        }
        let fetched = match self.fetch_issuer(probe, url).await {
            Err(Failure::Unreached(why)) => Err(self.unreached(url, why)),
            other => other,
        };
        match &fetched {
            Ok(_) => {
                issuer_fetch(IssuerFetch::Fetched);
                self.issuers.failed.forget_unreached(url);
            }
            Err(Failure::Url(why)) => {
                // Once per URL and FAILED_FOR: the failure is then remembered.
                tracing::info!(
                    url,
                    why = why.as_str(),
                    "a caIssuers URL failed; sites naming it keep an incomplete chain"
                );
                issuer_fetch(IssuerFetch::Failed);
                self.issuers.failed.failed(url, why, Instant::now());
            }
            Err(Failure::Unreached(_)) => issuer_fetch(IssuerFetch::Unreached),
            Err(
                Failure::Ours(_) | Failure::Limited(..) | Failure::NoTime(_) | Failure::Egress(_),
            ) => issuer_fetch(IssuerFetch::Skipped),
        }
        fetched
    }

    /// `url`'s host not reached (`why`): the URL's failure when that repeats
    /// `failed::CONFIRM_AFTER` after the first time, else not yet.
    fn unreached(&self, url: &str, why: String) -> Failure {
        match self.issuers.failed.unreached(url, Instant::now()) {
            Unreached::Once(ago) if ago.is_zero() => Failure::Unreached(format!(
                "{why}; the first time lately, which may be our network's moment"
            )),
            Unreached::Once(ago) => Failure::Unreached(format!(
                "{why}, as {} s before: not yet long enough apart to tell our network's \
                 moment from the CA's server",
                ago.as_secs()
            )),
            Unreached::Again(ago) => {
                Failure::Url(format!("{why}, and {} s before too", ago.as_secs()))
            }
        }
    }

    /// The certificates at `url`, following up to [`MAX_MOVES`] redirects as browsers'
    /// certificate fetchers do (each hop screened and counted like the first).
    async fn fetch_issuer(
        &self,
        probe: &Probe<'_>,
        url: &str,
    ) -> Result<Vec<CertificateDer<'static>>, Failure> {
        let named = Url::parse(url).map_err(|e| Failure::Url(format!("not a URL ({e})")))?;
        // Where it led lately is asked at once (see `moved`).
        let mut url = self
            .issuers
            .moved
            .lately(&named, Instant::now())
            .unwrap_or(named);
        for _ in 0..=MAX_MOVES {
            match self.fetch_once(probe, &url).await? {
                Fetched::Certificates(certs) => return Ok(certs),
                Fetched::Moved(to) => {
                    self.issuers.moved.moved(&url, &to, Instant::now());
                    url = to;
                }
            }
        }
        Err(Failure::Url(format!("more than {MAX_MOVES} redirects")))
    }

    /// What one GET of `url` gave: the certificate, or where it moved.
    async fn fetch_once(&self, probe: &Probe<'_>, url: &Url) -> Result<Fetched, Failure> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(Failure::Url(format!("{url} is not an http URL")));
        }
        let host = url.host_str().ok_or(Failure::Url("no host".into()))?;
        let port = url.port_or_known_default().unwrap_or(80);
        let left = probe.deadline.saturating_duration_since(Instant::now());
        let time = left.min(FETCH_TIME);
        if time.is_zero() {
            return Err(Failure::NoTime("no time left in the probe".into()));
        }
        let deadline = Instant::now() + time;
        // Within the fetch's full time a host that does not answer is not reached;
        // within what the probe had left, a failure as that time ran out may be only
        // our time running out. One that came before (a refusal at once, an answer
        // broken off) is the host not reached whatever time was left.
        let transport = |why: String| {
            let ran_out = Instant::now() + TIME_UP_MARGIN >= deadline;
            if left < FETCH_TIME && ran_out {
                Failure::Ours(why)
            } else {
                Failure::Unreached(why)
            }
        };
        let ip = self
            .issuer_address(host, deadline)
            .await
            .map_err(|e| match e {
                Address::Refused(why) => Failure::Url(why),
                Address::NotFound(why) => transport(why),
            })?;
        let request = Request {
            ip,
            host,
            egress: &probe.egress.name,
            max_wait: time,
            max_pause: time,
            line: crate::limit::Line::Outside,
            alone: None,
        };
        let permit = match self.limiter.acquire(request).await {
            Grant::Go(permit) => permit,
            Grant::Defer(wait) | Grant::Paused(wait) => {
                return Err(Failure::Limited(
                    format!("the per-IP limit of {ip} allows no request now"),
                    wait,
                ))
            }
        };
        let time = deadline.saturating_duration_since(Instant::now());
        if time.is_zero() {
            return Err(Failure::NoTime(format!(
                "the per-IP limit of {ip} had a slot only when the probe's time was over"
            )));
        }
        let addr = SocketAddr::new(ip, port);
        let hop = Hop::new(host, addr, time, probe.egress.route);
        let req = probe.egress.client.get(url.clone()).timeout(time);
        let sent = match &probe.egress.tunnel {
            Some(t) => t.send(req, addr, time, &hop).await,
            None => watched(hop.scope(req.send()), probe, &hop, time).await,
        };
        let resp = sent.map_err(|e| match (e.proxy_failure(), e) {
            (Some(why), _) => Failure::Egress(why),
            (None, SendError::Client(e)) => transport(root_cause(&e)),
            (None, SendError::Tunnel(e)) => transport(e.to_string()),
        })?;
        let fetched = read_answer(resp, url).await.map_err(|e| match e {
            Answer::Broke(why) => transport(why),
            Answer::Wrong(why) => Failure::Url(why),
        });
        drop(permit);
        fetched
    }

    /// The address a `caIssuers` host may be asked at: the name a certificate gave is
    /// the site's word, so it is screened by the address policy like a redirect.
    async fn issuer_address(&self, host: &str, deadline: Instant) -> Result<IpAddr, Address> {
        let found = tokio::time::timeout_at(deadline, Box::pin(self.resolver.lookup(host)))
            .await
            .map_err(|_| Address::NotFound("DNS lookup ran out of time".into()))?
            .map_err(|e| Address::NotFound(e.to_string()))?;
        if let Some(ip) = pick_addresses(&found.ips, self.allow_private).first() {
            return Ok(*ip);
        }
        let first = found
            .ips
            .first()
            .ok_or(Address::NotFound("no address".into()))?;
        Err(Address::Refused(format!(
            "{host} resolves to {first}, which is {}; refused by policy",
            policy::refusal(*first, self.allow_private).unwrap_or("refused")
        )))
    }
}

/// Why a `caIssuers` host has no address to ask.
enum Address {
    /// Its name gave none (or not in time).
    NotFound(String),
    /// Its address is one the policy refuses.
    Refused(String),
}

/// Why an answer gave no certificate.
enum Answer {
    /// It broke off.
    Broke(String),
    /// It was an error, too big, or not a certificate.
    Wrong(String),
}

/// The certificate in `resp`, or where it moved.
async fn read_answer(resp: reqwest::Response, url: &Url) -> Result<Fetched, Answer> {
    let status = resp.status();
    // As for a page: a browser's certificate fetcher is its ordinary network stack,
    // which follows only these; any other 3xx is an answer, and not a certificate.
    if crate::http::redirect::is_followed(status.as_u16()) {
        let to = resp
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|l| l.to_str().ok())
            .and_then(|l| url.join(l).ok())
            .ok_or_else(|| {
                Answer::Wrong(format!("answered {status} without a Location to follow"))
            })?;
        return Ok(Fetched::Moved(to));
    }
    if !status.is_success() {
        return Err(Answer::Wrong(format!("answered {status}")));
    }
    let body = crate::http::body::read(resp, MAX_CERT_BYTES, status.as_u16())
        .await
        .result
        .map_err(|_| Answer::Broke("the answer broke off".into()))?;
    if body.truncated {
        return Err(Answer::Wrong(format!("more than {MAX_CERT_BYTES} bytes")));
    }
    let certs = parse_certificates(&body.bytes);
    if certs.is_empty() {
        return Err(Answer::Wrong(
            "not a certificate (DER, PKCS#7 or PEM)".into(),
        ));
    }
    Ok(Fetched::Certificates(certs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer of `status` with a `Location` and a body that is no certificate.
    fn answer(status: u16) -> reqwest::Response {
        let answer = http::Response::builder()
            .status(status)
            .header("location", "/new/intermediate.crt")
            .body("<html><body>Moved, or a list of choices</body></html>")
            .expect("a valid answer");
        reqwest::Response::from(answer)
    }

    #[tokio::test]
    async fn only_the_redirects_browsers_follow_are_followed() {
        let url = Url::parse("http://ca.test/old/intermediate.crt").expect("a URL");
        for status in [301, 302, 303, 307, 308] {
            match read_answer(answer(status), &url).await {
                Ok(Fetched::Moved(to)) => {
                    assert_eq!(to.as_str(), "http://ca.test/new/intermediate.crt");
                }
                _ => panic!("{status} is a redirect to follow"),
            }
        }
        // A 300's list of choices, a 305's proxy and a 304 are no redirect to a
        // browser's certificate fetcher either: the answer is an error.
        for status in [300, 304, 305, 306, 399] {
            match read_answer(answer(status), &url).await {
                Err(Answer::Wrong(why)) => assert!(why.starts_with("answered 3"), "{why}"),
                Ok(Fetched::Moved(to)) => panic!("{status} was followed to {to}"),
                _ => panic!("{status}: neither followed nor an error answer"),
            }
        }
    }
}
