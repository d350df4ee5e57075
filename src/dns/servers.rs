//! The nameservers a [`Resolver`](super::Resolver) asks, built from `[dns]`, or from the
//! host's `/etc/resolv.conf` when `dns.nameservers` is empty: the pool, each nameserver
//! alone, the cacheless ones of the question of our side, and the search list.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::Name as DnsName;
use hickory_resolver::{ResolverBuilder, TokioResolver};

use super::DnsError;
use crate::config::DnsSettings;

/// What `/etc/resolv.conf` says, as hickory reads it.
pub(super) type SystemConf = (ResolverConfig, ResolverOpts);

/// Where the system's resolver configuration is.
const RESOLV_CONF: &str = super::host_files::RESOLV_CONF;

/// Reads `/etc/resolv.conf`. At start, one that names no nameserver, or none at all, means
/// the local one (127.0.0.1), as glibc, and curl and everything else built on it, take
/// it (hunt S: a minimal container's stopped every command). Read again after a change (`at_start`
/// false), it is refused, and the nameservers it named before stand: a file caught
/// between its truncation and its writing names none.
///
/// # Errors
/// The file cannot be read, or names no nameserver after the start.
pub(super) fn system_conf(at_start: bool) -> Result<SystemConf, DnsError> {
    let setup = |e: &dyn std::fmt::Display| DnsError::Setup(format!("{RESOLV_CONF}: {e}"));
    let mut text = match std::fs::read(RESOLV_CONF) {
        Ok(text) => text,
        // No file at all (a dangling systemd-resolved link) is no nameserver named, for
        // glibc as well (review AA).
        Err(e) if at_start && e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(setup(&e)),
    };
    if at_start && !names_a_nameserver(&text) {
        text.extend_from_slice(b"\nnameserver 127.0.0.1\n");
    }
    hickory_resolver::system_conf::parse_resolv_conf(text).map_err(|e| setup(&e))
}

/// Whether a `resolv.conf` has a `nameserver` line.
fn names_a_nameserver(text: &[u8]) -> bool {
    String::from_utf8_lossy(text)
        .lines()
        .any(|line| line.split_whitespace().next() == Some("nameserver"))
}

/// The resolvers of one set of nameservers.
pub(super) struct Servers {
    /// All of them together, with a cache.
    pub(super) pool: TokioResolver,
    /// The same nameservers with no cache, each alone when there are several, for
    /// [`Resolver::answers`](super::Resolver::answers).
    pub(super) health: Vec<TokioResolver>,
    /// Each nameserver alone, when there are several.
    pub(super) each: Vec<TokioResolver>,
    /// Domains a name not found as written is asked under (`dns.search`, or the
    /// system's search list when picket uses the system's resolver).
    pub(super) search: Vec<String>,
}

impl Servers {
    /// The nameservers of `settings`, or of `system` (resolv.conf) when it names none.
    ///
    /// # Errors
    /// A resolver could not be built.
    pub(super) fn new(
        settings: &DnsSettings,
        system: Option<&SystemConf>,
    ) -> Result<Servers, DnsError> {
        let (config, opts) = match system {
            Some((config, opts)) if settings.nameservers.is_empty() => {
                (config.clone(), opts.clone())
            }
            _ => (configured(settings), ResolverOpts::default()),
        };
        let servers = config.name_servers().to_vec();
        let build = |config: ResolverConfig, cache_size: u64| {
            let mut builder =
                TokioResolver::builder_with_config(config, TokioRuntimeProvider::default());
            *builder.options_mut() = opts.clone();
            finish(builder, settings, cache_size)
        };
        let pool = build(config.clone(), 4096)?;
        // One resolver per nameserver, asked in turn when the pool's answer was a
        // failure: the pool takes a SERVFAIL as final, and one broken resolver must not
        // make a site "down" for DNS.
        let alone = |cache_size: u64| {
            servers
                .iter()
                .map(|server| {
                    build(
                        ResolverConfig::from_parts(None, vec![], vec![server.clone()]),
                        cache_size,
                    )
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let several = servers.len() > 1;
        let each = if several { alone(4096)? } else { Vec::new() };
        // Without a cache: they are asked whether they answer now.
        let health = if several {
            alone(0)?
        } else {
            vec![build(config.clone(), 0)?]
        };
        Ok(Servers {
            pool,
            health,
            each,
            search: search_list(settings, &config),
        })
    }
}

/// `dns.nameservers` as hickory's configuration, UDP and TCP on each one's port.
fn configured(settings: &DnsSettings) -> ResolverConfig {
    let servers: Vec<NameServerConfig> = settings
        .nameservers
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    ResolverConfig::from_parts(None, vec![], servers)
}

/// Our timeout and attempts, and a cache of `cache_size` answers.
fn finish(
    mut builder: ResolverBuilder<TokioRuntimeProvider>,
    settings: &DnsSettings,
    cache_size: u64,
) -> Result<TokioResolver, DnsError> {
    let opts = builder.options_mut();
    opts.timeout = settings.timeout;
    opts.attempts = 2;
    opts.cache_size = cache_size;
    // The hosts file is picket's to read (`Resolver::in_hosts_file`), and to read again
    // when it changes: a copy hickory read when it was built answered a pin the file
    // no longer has (review AA).
    opts.use_hosts_file = hickory_resolver::config::ResolveHosts::Never;
    builder.build().map_err(|e| DnsError::Setup(e.to_string()))
}

/// `dns.search`, or, when it is empty and picket uses the system's resolver, the system's
/// search list (`config`'s, from resolv.conf), each lower case without its final dot.
fn search_list(settings: &DnsSettings, config: &ResolverConfig) -> Vec<String> {
    if !settings.search.is_empty() || !settings.nameservers.is_empty() {
        return settings.search.clone();
    }
    let domain = |n: &DnsName| n.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    config.search().iter().map(domain).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nameserver_line_counts_and_a_comment_or_another_word_does_not() {
        assert!(names_a_nameserver(
            b"search lan\n  nameserver\t127.0.0.53\n"
        ));
        assert!(!names_a_nameserver(
            b"# nameserver 127.0.0.53\nsearch lan\n"
        ));
        assert!(!names_a_nameserver(b"nameservers 127.0.0.53\n"));
        assert!(!names_a_nameserver(b""));
    }
}
