//! Fetching a missing intermediate from the URL a certificate names, as browsers do: a
//! plain GET through the probe's egress, to an address the policy allows, counted by
//! the per-IP limit like any request, within the probe's time; redirects followed.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use rustls::pki_types::CertificateDer;
use tokio::time::Instant;
use url::Url;

use super::{ca_issuers, parse_certificate, MissingIssuer};
use crate::http::connect::pick_addresses;
use crate::http::failure::{root_cause, tls_problem};
use crate::http::pin::Hop;
use crate::http::tunnel::SendError;
use crate::http::{HttpProber, Probe};
use crate::limit::{Grant, Request};
use crate::probe::policy;

/// Certificates fetched for one chain at most: an intermediate, and the one above it.
const MAX_FETCHES: usize = 3;

/// Longest time one fetch may take (within the probe's own time).
const FETCH_TIME: Duration = Duration::from_secs(5);

/// Largest answer read: an intermediate is 1–2 KB.
const MAX_CERT_BYTES: usize = 64 * 1024;

/// Redirects followed from a `caIssuers` URL (a CA that moved its files).
const MAX_MOVES: usize = 3;

/// What one GET of a `caIssuers` URL gave.
enum Fetched {
    Certificate(CertificateDer<'static>),
    /// A redirect to this URL.
    Moved(Url),
}

impl HttpProber {
    /// Fetches what `host`'s chain lacks, following `caIssuers` URLs up to
    /// [`MAX_FETCHES`] certificates, until the chain is complete (`Ok`: the site is to
    /// be asked again) or it cannot be (why, in words).
    pub(in crate::http) async fn complete_chain(
        &self,
        probe: &Probe<'_>,
        host: &str,
        missing: &MissingIssuer,
    ) -> Result<(), String> {
        let mut urls: VecDeque<String> = missing.urls.iter().cloned().collect();
        let mut fetched: Vec<CertificateDer<'static>> = Vec::new();
        let mut why = String::from("no caIssuers URL could be fetched");
        while let Some(url) = urls.pop_front() {
            if fetched.len() == MAX_FETCHES {
                break;
            }
            let cert = match self.fetch_issuer(probe, &url).await {
                Ok(cert) => cert,
                Err(e) => {
                    why = format!("{url}: {e}");
                    continue;
                }
            };
            urls.extend(ca_issuers(&cert));
            fetched.push(cert);
            match self.issuers.complete(missing, host, &fetched) {
                Ok(true) => return Ok(()),
                Ok(false) => why = format!("{url} does not serve the missing issuer"),
                Err(e) => {
                    return Err(format!(
                        "with its chain complete, the certificate {}",
                        tls_problem(&e)
                    ))
                }
            }
        }
        Err(why)
    }

    /// One certificate from `url`, following up to [`MAX_MOVES`] redirects as browsers'
    /// certificate fetchers do (each hop screened and counted like the first).
    async fn fetch_issuer(
        &self,
        probe: &Probe<'_>,
        url: &str,
    ) -> Result<CertificateDer<'static>, String> {
        let mut url = Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
        for _ in 0..=MAX_MOVES {
            match self.fetch_once(probe, &url).await? {
                Fetched::Certificate(cert) => return Ok(cert),
                Fetched::Moved(to) => url = to,
            }
        }
        Err(format!("more than {MAX_MOVES} redirects"))
    }

    /// What one GET of `url` gave: the certificate, or where it moved.
    async fn fetch_once(&self, probe: &Probe<'_>, url: &Url) -> Result<Fetched, String> {
        if !matches!(url.scheme(), "http" | "https") {
            return Err(format!("{url} is not an http URL"));
        }
        let host = url.host_str().ok_or("no host")?.to_string();
        let port = url.port_or_known_default().unwrap_or(80);
        let left = probe.deadline.saturating_duration_since(Instant::now());
        let time = left.min(FETCH_TIME);
        if time.is_zero() {
            return Err("no time left".into());
        }
        let deadline = Instant::now() + time;
        let ip = self.issuer_address(&host, deadline).await?;
        let request = Request {
            ip,
            host: &host,
            egress: &probe.egress.name,
            max_wait: time,
            line: crate::limit::Line::Outside,
        };
        let Grant::Go(permit) = self.limiter.acquire(request).await else {
            return Err(format!("the per-IP limit of {ip} allows no request now"));
        };
        let time = deadline.saturating_duration_since(Instant::now());
        let addr = SocketAddr::new(ip, port);
        let hop = Hop::new(&host, addr, time, probe.egress.route);
        let req = probe.egress.client.get(url.clone()).timeout(time);
        let sent = match &probe.egress.tunnel {
            Some(t) => t.send(req, addr, time, &hop).await,
            None => hop.scope(req.send()).await.map_err(SendError::from),
        };
        let resp = sent.map_err(|e| match e {
            SendError::Client(e) => root_cause(&e),
            SendError::Tunnel(e) => e.to_string(),
        })?;
        let status = resp.status();
        if status.is_redirection() {
            let to = resp
                .headers()
                .get(reqwest::header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| url.join(l).ok())
                .ok_or_else(|| format!("answered {status} without a Location to follow"))?;
            return Ok(Fetched::Moved(to));
        }
        if !status.is_success() {
            return Err(format!("answered {status}"));
        }
        let body = crate::http::body::read(resp, MAX_CERT_BYTES, status.as_u16())
            .await
            .map_err(|_| "the answer broke off".to_string())?;
        drop(permit);
        if body.truncated {
            return Err(format!("more than {MAX_CERT_BYTES} bytes"));
        }
        parse_certificate(&body.bytes)
            .map(Fetched::Certificate)
            .ok_or_else(|| {
                "not a certificate (DER or PEM; a PKCS#7 bundle is not read)".to_string()
            })
    }

    /// The address a `caIssuers` host may be asked at: the name a certificate gave is
    /// the site's word, so it is screened by the address policy like a redirect.
    async fn issuer_address(&self, host: &str, deadline: Instant) -> Result<IpAddr, String> {
        let found = tokio::time::timeout_at(deadline, Box::pin(self.resolver.lookup(host)))
            .await
            .map_err(|_| "DNS lookup ran out of time".to_string())?
            .map_err(|e| e.to_string())?;
        if let Some(ip) = pick_addresses(&found.ips, self.allow_private).first() {
            return Ok(*ip);
        }
        let first = found.ips.first().ok_or("no address")?;
        Err(format!(
            "{host} resolves to {first}, which is {}; refused by policy",
            policy::refusal(*first, self.allow_private).unwrap_or("refused")
        ))
    }
}
