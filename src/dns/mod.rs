//! Name resolution for probes: `dns.static` answers first, then the configured
//! nameservers (or the system's), with a timeout. The engine resolves once, checks the
//! addresses against policy and the limiter, and then connects to exactly that address:
//! reqwest itself never resolves a target name.
//!
//! A name's A records are asked first and its AAAA records only when IPv4 gives no
//! address that answers, since the prober tries IPv4 first anyway ([`Resolver::lookup`]).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::OnceLock;
use std::time::Duration;

use hickory_resolver::lookup_ip::LookupIp;
use hickory_resolver::proto::rr::{Name as DnsName, RecordType};
use hickory_resolver::TokioResolver;

use crate::config::DnsSettings;

mod host_files;
mod servers;

use crate::reread::{Looks, Reread};
use host_files::{HOSTS, RESOLV_CONF};
use servers::Servers;

/// A lookup that found no usable address.
#[derive(Debug, Clone, thiserror::Error)]
pub enum DnsError {
    /// The name does not exist (or has no A/AAAA records).
    #[error("{host}: no such host (NXDOMAIN or no address records)")]
    NotFound {
        /// The name asked.
        host: String,
    },
    /// The nameservers did not answer in time.
    #[error("{host}: DNS lookup timed out after {ms} ms")]
    Timeout {
        /// The name asked.
        host: String,
        /// How long we waited.
        ms: u128,
    },
    /// This worker could not open a socket for the lookup (no file descriptors left).
    #[error("{host}: DNS lookup not made: this worker has no {message} left")]
    LocalResources {
        /// The name asked.
        host: String,
        /// What ran out.
        message: String,
    },
    /// Any other resolver failure (SERVFAIL, refused, network).
    #[error("{host}: DNS lookup failed: {message}")]
    Failed {
        /// The name asked.
        host: String,
        /// The resolver's words.
        message: String,
    },
    /// The resolver could not be set up.
    #[error("DNS resolver could not be configured: {0}")]
    Setup(String),
}

/// What [`Resolver::lookup`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Addresses {
    /// The addresses, in the resolver's order.
    pub(crate) ips: Vec<IpAddr>,
    /// The name's IPv6 addresses were not asked, as it had IPv4 ones.
    pub(crate) ipv6_unasked: bool,
    /// Given by this worker's own configuration (`dns.static`, the hosts file, an IP
    /// literal), not by a nameserver.
    pub(crate) own: bool,
}

/// The record type of one query.
#[derive(Debug, Clone, Copy)]
enum Family {
    /// A.
    V4,
    /// AAAA.
    V6,
}

/// A host as the resolver sees it.
enum Name {
    /// An IP literal, a `dns.static` entry or a name of the hosts file.
    Known(Vec<IpAddr>),
    /// A name for the nameservers, lower-cased, without its final dot.
    Ask(String),
}

/// Resolves target names; cheap to clone.
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

struct Inner {
    static_hosts: std::collections::BTreeMap<String, Vec<IpAddr>>,
    /// The system's hosts file (`/etc/hosts`).
    hosts: Reread<hickory_resolver::Hosts>,
    /// The nameservers: `dns.nameservers`, fixed, or the system's, from
    /// `/etc/resolv.conf`.
    servers: Nameservers,
    /// When the host files are next looked at.
    looks: Looks,
    timeout: Duration,
    lookups: tokio::sync::Semaphore,
    /// The top-level domains of the latest names found, newest last: a fresh name under
    /// one of them is answered by any resolver that reaches beyond its cache
    /// ([`Resolver::answers`]).
    found_under: std::sync::Mutex<Vec<String>>,
    /// What [`Resolver::answers`] asked lately, by zone.
    reached: std::sync::Mutex<std::collections::HashMap<String, Arc<Reach>>>,
}

/// The nameservers a resolver asks.
enum Nameservers {
    /// `dns.nameservers`.
    Configured(Arc<Servers>),
    /// The system's, read again when `/etc/resolv.conf` changes.
    System(Reread<Servers>),
}

/// How long an answer of [`Resolver::answers`] about one zone stands.
const REACH_FRESH: Duration = Duration::from_secs(5);

/// One question of whether our nameservers reach a zone, shared by every failed lookup
/// that asks it while it stands.
struct Reach {
    asked: std::time::Instant,
    answer: tokio::sync::OnceCell<bool>,
}

/// Whether any of `checks` comes out true (all run together).
async fn any(checks: impl IntoIterator<Item = impl std::future::Future<Output = bool>>) -> bool {
    futures_util::future::join_all(checks)
        .await
        .into_iter()
        .any(|yes| yes)
}

/// Top-level domains no root delegates (RFC 6761, RFC 6762, RFC 8375, ICANN's
/// `.internal`) and the private ones routers and office resolvers serve themselves.
const SERVED_LOCALLY: [&str; 14] = [
    "test",
    "example",
    "invalid",
    "localhost",
    "local",
    "arpa",
    "internal",
    "lan",
    "home",
    "corp",
    "intranet",
    "private",
    "localdomain",
    "onion",
];

/// How many top-level domains of names found are kept for [`Resolver::answers`].
const FOUND_UNDER: usize = 4;

/// How many of a failed name's parent domains [`Resolver::answers`] asks under.
const PARENTS_ASKED: usize = 4;

impl Resolver {
    /// Builds the resolver from `[dns]`.
    ///
    /// # Errors
    /// The system configuration could not be read (and no nameservers were given).
    pub(crate) fn new(settings: &DnsSettings) -> Result<Resolver, DnsError> {
        let servers = if settings.nameservers.is_empty() {
            let first = || Servers::new(settings, Some(&servers::system_conf(true)?));
            let settings = settings.clone();
            let read = Box::new(move || {
                let conf = servers::system_conf(false).map_err(|e| e.to_string())?;
                Servers::new(&settings, Some(&conf)).map_err(|e| e.to_string())
            });
            Nameservers::System(Reread::file(RESOLV_CONF, first, read)?)
        } else {
            Nameservers::Configured(Arc::new(Servers::new(settings, None)?))
        };
        // None at start is an empty one; one gone later leaves the last reading.
        let first = || Ok::<_, DnsError>(host_files::read_hosts().unwrap_or_default());
        let hosts = Reread::file(HOSTS, first, Box::new(host_files::read_hosts))?;
        Ok(Resolver {
            inner: Arc::new(Inner {
                static_hosts: settings.static_hosts.clone(),
                hosts,
                servers,
                looks: Looks::new(),
                timeout: settings.timeout,
                lookups: tokio::sync::Semaphore::new(settings.max_concurrent),
                found_under: std::sync::Mutex::new(Vec::new()),
                reached: std::sync::Mutex::new(std::collections::HashMap::new()),
            }),
        })
    }

    /// The nameservers as they are now.
    fn servers(&self) -> Arc<Servers> {
        match &self.inner.servers {
            Nameservers::Configured(servers) => Arc::clone(servers),
            Nameservers::System(servers) => servers.get(),
        }
    }

    /// Reads `/etc/hosts` and `/etc/resolv.conf` again if they changed, every
    /// [`crate::reread::LOOK_EVERY`]. New nameservers are asked anew whether they reach
    /// beyond their cache.
    fn look_at_host_files(&self) {
        if !self.inner.looks.due() {
            return;
        }
        self.inner.hosts.look();
        if let Nameservers::System(servers) = &self.inner.servers {
            if servers.look() {
                if let Ok(mut reached) = self.inner.reached.lock() {
                    reached.clear();
                }
            }
        }
    }

    /// Whether any of our nameservers works, now: asked for the root zone's nameservers,
    /// which every recursive resolver holds (so no query leaves it), each nameserver
    /// alone when there are several. Silence, a closed port or no route, and SERVFAIL or
    /// REFUSED to that question, say that our resolver is what fails: it could resolve
    /// no name at all. NXDOMAIN or an empty answer is an answer (a server that serves
    /// only its own zones says so).
    ///
    /// A recursive resolver cut off from every upstream server still answers what it
    /// holds, the root zone among it (hunt R: every uncached site was `down/dns` behind
    /// an unbound whose upstream was gone). So it is also asked names no cache holds, a
    /// fresh label under each of [`Resolver::beyond`]: an answer to any, NXDOMAIN
    /// included, says it reaches the servers, and that `failed` failing is its own.
    ///
    /// Each zone's answer (the root's too) stands for [`REACH_FRESH`], shared by every
    /// failed lookup that asks meanwhile, whatever its name: a wave of failures under
    /// many domains asks each zone once, at once, and no zone's answer stands for
    /// another's (review Z).
    pub(crate) async fn answers(&self, failed: &str, canaries: &[String]) -> bool {
        self.look_at_host_files();
        let limit = self.inner.timeout * 3;
        let root = self.reaches("", || async {
            let servers = self.servers();
            let each = servers.health.iter().map(|one| answers_root(one, limit));
            any(each).await
        });
        if !root.await {
            return false;
        }
        let zones = self.beyond(failed, canaries);
        if zones.is_empty() {
            return true;
        }
        let servers = &self.servers();
        let each = zones.iter().map(|zone| {
            self.reaches(zone, move || async move {
                let fresh = format!("picket-{}.{zone}.", fresh_label());
                let Ok(name) = DnsName::from_ascii(&fresh) else {
                    return false;
                };
                let each = servers
                    .health
                    .iter()
                    .map(|one| answers_name(one, name.clone(), limit));
                any(each).await
            })
        });
        any(each).await
    }

    /// Whether our nameservers reach `zone` ("" for the root), by the answer asked in
    /// the last [`REACH_FRESH`], or by `ask`ing now: one question per zone at a time.
    async fn reaches<F, Fut>(&self, zone: &str, ask: F) -> bool
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let reach = {
            let Ok(mut reached) = self.inner.reached.lock() else {
                return ask().await;
            };
            reached.retain(|_, r| r.asked.elapsed() < REACH_FRESH);
            let fresh = || {
                Arc::new(Reach {
                    asked: std::time::Instant::now(),
                    answer: tokio::sync::OnceCell::new(),
                })
            };
            Arc::clone(reached.entry(zone.to_string()).or_insert_with(fresh))
        };
        *reach.answer.get_or_init(ask).await
    }

    /// Where our nameservers are asked a name no cache holds, after `failed` failed:
    /// the canaries' hosts; `failed`'s parent domains up to its top-level domain (a
    /// site whose own nameservers fail sits below them, and an isolated network's
    /// resolver answers its own zones: review Y); and the top-level domains of names
    /// found lately (a TLD whose own servers fail is no failure of ours).
    fn beyond(&self, failed: &str, canaries: &[String]) -> Vec<String> {
        // A canary our nameservers are not asked about (an IP, `dns.static`, the hosts
        // file) says nothing of them.
        let mut zones: Vec<String> = canaries
            .iter()
            .filter_map(|host| match self.name(host) {
                Name::Ask(lower) => Some(lower),
                Name::Known(_) => None,
            })
            .collect();
        let failed = failed.trim_end_matches('.').to_ascii_lowercase();
        // From the top-level domain down: the zones nearest the root are the ones
        // whose servers are least likely the site's.
        let parents: Vec<String> = failed
            .match_indices('.')
            .map(|(dot, _)| failed[dot + 1..].to_string())
            .collect();
        zones.extend(parents.into_iter().rev().take(PARENTS_ASKED));
        if let Ok(found) = self.inner.found_under.lock() {
            zones.extend(found.iter().cloned());
        }
        zones.sort();
        zones.dedup();
        zones.retain(|zone| !zone.is_empty() && DnsName::from_ascii(zone).is_ok());
        zones
    }

    /// Notes that a name under `host`'s top-level domain was found: not one of the
    /// special-use or private TLDs a resolver serves itself (dnsmasq's `local=/lan/`,
    /// a router's `.home`), whose fresh names it answers with its way out cut (review Z).
    fn found(&self, host: &str) {
        let tld = host.rsplit('.').next().unwrap_or(host);
        if SERVED_LOCALLY.contains(&tld) || !host.contains('.') {
            return;
        }
        let Ok(mut found) = self.inner.found_under.lock() else {
            return;
        };
        if found.iter().any(|known| known == tld) {
            return;
        }
        if found.len() == FOUND_UNDER {
            found.remove(0);
        }
        found.push(tld.to_string());
    }

    /// The addresses of `host` a probe tries first (an IP literal answers itself).
    ///
    /// The prober connects over IPv4 first and to IPv6 only when no IPv4 address
    /// answers (`http::connect`), so a name's A records are asked first and its AAAA
    /// records only when there are no A records or the A lookup failed (not when it
    /// timed out: that nameserver would not answer AAAA either); otherwise
    /// [`Addresses::ipv6_unasked`] says that [`Resolver::lookup_ipv6`] is still to ask.
    /// Half the queries of asking both every time (docs/BENCHMARKS.md).
    ///
    /// # Errors
    /// See [`DnsError`]; a missing name is data for the judge, not a worker fault.
    pub(crate) async fn lookup(&self, host: &str) -> Result<Addresses, DnsError> {
        self.lookup_noting(host, &OnceLock::new()).await
    }

    /// [`Resolver::lookup`], noting in `asked` when the lookup got one of picket's own
    /// lookup slots (`dns.max_concurrent`): a lookup the caller's deadline cuts short
    /// while it waited for one, or soon after, was held up by picket, and says nothing
    /// of the site's DNS (hunt R).
    ///
    /// # Errors
    /// See [`DnsError`].
    pub(crate) async fn lookup_noting(
        &self,
        host: &str,
        asked: &OnceLock<tokio::time::Instant>,
    ) -> Result<Addresses, DnsError> {
        let name = match self.name(host) {
            Name::Known(ips) => {
                return Ok(Addresses {
                    ips,
                    ipv6_unasked: false,
                    own: true,
                })
            }
            Name::Ask(lower) => lower,
        };
        // Closed never: the semaphore lives as long as the resolver.
        let _slot = self.inner.lookups.acquire().await.ok();
        let _ = asked.set(tokio::time::Instant::now());
        let mut failure = match self.lookup_name(&name).await {
            Ok(found) => {
                self.found(&name);
                return Ok(found);
            }
            Err(e @ (DnsError::NotFound { .. } | DnsError::Failed { .. })) => e,
            Err(e) => return Err(e),
        };
        // Not found as written, or failed (SERVFAIL): under each search domain in turn,
        // as glibc and browsers complete a short name (hunt R: `grafana.monitoring` in a
        // Kubernetes pod, whose outside lookup may fail where the cluster's answers).
        for domain in &self.servers().search {
            let completed = format!("{name}.{domain}");
            match self.lookup_name(&completed).await {
                Ok(found) => {
                    self.found(&completed);
                    // Its IPv6 addresses are the completed name's: not asked later.
                    return Ok(Addresses {
                        ipv6_unasked: false,
                        ..found
                    });
                }
                // A failure is no "no such name" (glibc's TRY_AGAIN): whether it is our
                // resolver's is asked of the name that failed (review Y).
                Err(e @ DnsError::Failed { .. })
                    if matches!(failure, DnsError::NotFound { .. }) =>
                {
                    failure = e;
                }
                Err(_) => {}
            }
        }
        Err(failure)
    }

    /// The addresses of `name` (lower case, no final dot), as [`Resolver::lookup`]
    /// finds them, its lookup slot held.
    async fn lookup_name(&self, name: &str) -> Result<Addresses, DnsError> {
        let ipv4 = match self.ask_each(name, Family::V4).await {
            Ok(ips) => {
                return Ok(Addresses {
                    ips,
                    ipv6_unasked: true,
                    own: false,
                })
            }
            // A nameserver that did not answer A will not answer AAAA either: asking
            // would double the wait (both used to go out at once) and let the probe's
            // own deadline, not the lookup's, end it.
            Err(e @ (DnsError::Timeout { .. } | DnsError::LocalResources { .. })) => return Err(e),
            Err(e) => e,
        };
        match self.ask_each(name, Family::V6).await {
            Ok(ips) => Ok(Addresses {
                ips,
                ipv6_unasked: false,
                own: false,
            }),
            // Neither: an A lookup that failed (timeout, SERVFAIL) says why; an A
            // lookup that found nothing lets the AAAA lookup's answer speak.
            Err(ipv6) => Err(match ipv4 {
                DnsError::NotFound { .. } => ipv6,
                other => other,
            }),
        }
    }

    /// The IPv6 addresses of `host`, for when [`Resolver::lookup`] left them unasked.
    ///
    /// # Errors
    /// See [`DnsError`].
    pub(crate) async fn lookup_ipv6(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        match self.name(host) {
            Name::Known(ips) => Ok(ips.into_iter().filter(IpAddr::is_ipv6).collect()),
            Name::Ask(lower) => {
                let _slot = self.inner.lookups.acquire().await.ok();
                self.ask_each(&lower, Family::V6).await
            }
        }
    }

    /// Every address of `host`, both families.
    ///
    /// # Errors
    /// See [`DnsError`].
    pub(crate) async fn lookup_all(&self, host: &str) -> Result<Vec<IpAddr>, DnsError> {
        let mut found = self.lookup(host).await?;
        if found.ipv6_unasked {
            found
                .ips
                .extend(self.lookup_ipv6(host).await.unwrap_or_default());
        }
        Ok(found.ips)
    }

    /// An IP literal or a `dns.static` name answers itself; anything else is asked,
    /// lower-cased and without its final dot.
    fn name(&self, host: &str) -> Name {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        if let Ok(ip) = bare.parse::<IpAddr>() {
            return Name::Known(vec![ip]);
        }
        let lower = host.trim_end_matches('.').to_ascii_lowercase();
        self.look_at_host_files();
        if let Some(ips) = self.inner.static_hosts.get(&lower) {
            return Name::Known(ips.clone());
        }
        match self.in_hosts_file(&lower) {
            Some(ips) => Name::Known(ips),
            None => Name::Ask(lower),
        }
    }

    /// The addresses the hosts file gives `lower`, of both families, if it lists it.
    /// A name listed there is answered from it alone, as glibc's `files` source does
    /// (hickory's answers only the record type asked and asks DNS for the other: an
    /// IPv4 pin's AAAA came from DNS, hunt S).
    fn in_hosts_file(&self, lower: &str) -> Option<Vec<IpAddr>> {
        use hickory_resolver::proto::op::Query;
        let name = DnsName::from_ascii(format!("{lower}.")).ok()?;
        let hosts = self.inner.hosts.get();
        let ips: Vec<IpAddr> = [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|kind| hosts.lookup_static_host(&Query::query(name.clone(), kind)))
            .flat_map(|lookup| {
                let ips: Vec<IpAddr> = lookup
                    .answers()
                    .iter()
                    .filter_map(|record| record.data.ip_addr())
                    .collect();
                ips
            })
            .collect();
        (!ips.is_empty()).then_some(ips)
    }

    /// One family of `lower` through the nameservers together, then each alone when
    /// that failed.
    async fn ask_each(&self, lower: &str, family: Family) -> Result<Vec<IpAddr>, DnsError> {
        let servers = self.servers();
        let first = self.ask(&servers.pool, lower, family).await;
        if let (Err(DnsError::NotFound { .. }), Some(primary)) = (&first, servers.each.first()) {
            // The pool asks two nameservers at once and takes the first answer back: a
            // public resolver's quick NXDOMAIN beat the internal one listed first that
            // knows a split-horizon name (hunt R). glibc and Chrome take the first
            // nameserver's word, the next only when it fails: so does a "no such name".
            return match self.ask(primary, lower, family).await {
                Ok(ips) => Ok(ips),
                Err(_) => first,
            };
        }
        let Err(DnsError::Timeout { .. } | DnsError::Failed { .. }) = &first else {
            return first;
        };
        for (n, one) in servers.each.iter().enumerate() {
            match self.ask(one, lower, family).await {
                Ok(ips) => {
                    tracing::debug!(host = %lower, nameserver = n, "answered by a later nameserver after: {}", first.as_ref().err().map(ToString::to_string).unwrap_or_default());
                    return Ok(ips);
                }
                Err(e @ DnsError::NotFound { .. }) => return Err(e),
                Err(_) => {}
            }
        }
        first
    }

    /// One lookup through `resolver`, sorted into a [`DnsError`].
    async fn ask(
        &self,
        resolver: &TokioResolver,
        lower: &str,
        family: Family,
    ) -> Result<Vec<IpAddr>, DnsError> {
        // Two resolver attempts plus slack: the resolver's own timeout applies per try.
        let limit = self.inner.timeout * 3;
        let fqdn = format!("{lower}.");
        let host = lower.to_string();
        // Read as ASCII, label by label: hickory's reading of a `&str` applies IDNA's
        // host-name rules and refuses an `_` inside a label (`my_dept.example.gov`)
        // before asking, where browsers and curl ask and find the site. The URL parser
        // has already turned a Unicode name into its ASCII (punycode) form.
        let name = if fqdn.is_ascii() {
            DnsName::from_ascii(&fqdn)
        } else {
            DnsName::from_utf8(&fqdn)
        };
        let query = async {
            let name = name?;
            match family {
                Family::V4 => resolver.ipv4_lookup(name).await,
                Family::V6 => resolver.ipv6_lookup(name).await,
            }
        };
        match tokio::time::timeout(limit, query).await {
            Err(_) => Err(DnsError::Timeout {
                host,
                ms: limit.as_millis(),
            }),
            Ok(Ok(found)) => {
                let ips: Vec<IpAddr> = LookupIp::from(found).iter().collect();
                if ips.is_empty() {
                    Err(DnsError::NotFound { host })
                } else {
                    Ok(ips)
                }
            }
            Ok(Err(e)) if e.is_nx_domain() || e.is_no_records_found() => {
                Err(DnsError::NotFound { host })
            }
            Ok(Err(e)) => {
                let message = e.to_string();
                if crate::probe::local_resource_words(&message) {
                    Err(DnsError::LocalResources {
                        host,
                        message: "file descriptors or socket buffers".into(),
                    })
                } else if message.contains("timed out") || message.contains("timeout") {
                    Err(DnsError::Timeout {
                        host,
                        ms: self.inner.timeout.as_millis(),
                    })
                } else {
                    Err(DnsError::Failed { host, message })
                }
            }
        }
    }
}

/// Whether `resolver` answers the root zone's NS question within `limit` (see
/// [`Resolver::answers`]).
async fn answers_root(resolver: &TokioResolver, limit: Duration) -> bool {
    answers_name_of(resolver, DnsName::root(), RecordType::NS, limit).await
}

/// Whether `resolver` answers an A question for `name` within `limit`, with anything
/// but a failure (see [`Resolver::answers`]).
async fn answers_name(resolver: &TokioResolver, name: DnsName, limit: Duration) -> bool {
    answers_name_of(resolver, name, RecordType::A, limit).await
}

impl DnsError {
    /// The name whose lookup failed, if a name was asked.
    pub(crate) fn host(&self) -> Option<&str> {
        match self {
            DnsError::NotFound { host }
            | DnsError::Timeout { host, .. }
            | DnsError::LocalResources { host, .. }
            | DnsError::Failed { host, .. } => Some(host),
            DnsError::Setup(_) => None,
        }
    }
}

/// A label no resolver holds: this process, the time and a count.
fn fresh_label() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static ASKED: AtomicU64 = AtomicU64::new(0);
    let n = ASKED.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("{:x}{nanos:x}{n:x}", std::process::id())
}

async fn answers_name_of(
    resolver: &TokioResolver,
    name: DnsName,
    kind: RecordType,
    limit: Duration,
) -> bool {
    let query = resolver.lookup(name, kind);
    match tokio::time::timeout(limit, query).await {
        Ok(Ok(_)) => true,
        Ok(Err(e)) if e.is_nx_domain() || e.is_no_records_found() => true,
        Ok(Err(e)) => {
            tracing::debug!("a nameserver did not answer the question of our side: {e}");
            false
        }
        Err(_) => false,
    }
}

/// reqwest's resolver for the only names it may still look up itself: proxy hosts.
/// Target names are answered with the counted address by `http::pin` first, so they
/// never reach it.
#[derive(Clone)]
pub(crate) struct ProxyNameResolver(pub Resolver);

impl reqwest::dns::Resolve for ProxyNameResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let resolver = self.0.clone();
        let host = name.as_str().to_string();
        Box::pin(async move {
            let ips = resolver.lookup_all(&host).await?;
            let addrs: reqwest::dns::Addrs =
                Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolver() -> Resolver {
        let settings = DnsSettings {
            nameservers: vec![SocketAddr::from(([127, 0, 0, 1], 9))],
            static_hosts: [(
                "static.test".to_string(),
                vec![IpAddr::from([127, 0, 0, 1])],
            )]
            .into_iter()
            .collect(),
            timeout: Duration::from_secs(1),
            max_concurrent: 1,
            search: Vec::new(),
        };
        Resolver::new(&settings).expect("resolver")
    }

    /// Review Y: beyond the cache, our nameservers are asked under the failed name's
    /// parent domains from its TLD down (at most four), the canaries' hosts (not an IP
    /// or a `dns.static` name, which are never asked), and the TLDs of names found
    /// lately (at most four, the newest kept).
    #[test]
    fn our_nameservers_are_asked_under_the_failed_names_parents_canaries_and_tlds_found() {
        let r = resolver();
        let canaries = [
            "Canary.Example.".to_string(),
            "192.0.2.1".into(),
            "static.test".into(),
        ];
        assert_eq!(
            r.beyond("www.a.b.county.gov.", &canaries),
            [
                "a.b.county.gov",
                "b.county.gov",
                "canary.example",
                "county.gov",
                "gov"
            ]
        );
        for found in ["x.org", "y.net", "z.org", "w.io", "v.de", "u.uk"] {
            r.found(found);
        }
        assert_eq!(
            r.beyond("intranet", &[]),
            ["de", "io", "net", "uk"],
            "a single label has no parent; the four newest TLDs found"
        );
    }
}
