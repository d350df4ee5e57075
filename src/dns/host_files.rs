//! What the host's own files give the resolver, reread when they change: `/etc/hosts`,
//! and `/etc/resolv.conf` when picket uses the system's resolver. A worker runs for
//! weeks; an operator who pins a site to its new server in the hosts file, or a host
//! whose nameserver moves (a DHCP lease, a VPN), expects the next check to follow, as
//! glibc rereads `resolv.conf` when it changes and Go's resolver (blackbox_exporter,
//! Gatus) looks at both files every 5 s.
//!
//! Each is followed by a [`crate::reread::Reread`], looked at every
//! [`crate::reread::LOOK_EVERY`] by whichever lookup comes first.

/// The hosts file.
pub(super) const HOSTS: &str = "/etc/hosts";
/// The system resolver's configuration.
pub(super) const RESOLV_CONF: &str = "/etc/resolv.conf";

/// Reads the hosts file as glibc does, whatever bytes it holds: a line that is not
/// UTF-8 (a Latin-1 comment) is read with its odd bytes replaced, where hickory's own
/// reading refused the whole file and every pin was dropped (review AA).
///
/// # Errors
/// The file cannot be read.
pub(super) fn read_hosts() -> Result<hickory_resolver::Hosts, String> {
    let bytes = std::fs::read(HOSTS).map_err(|e| format!("{HOSTS}: {e}"))?;
    let text = String::from_utf8_lossy(&bytes);
    let mut hosts = hickory_resolver::Hosts::default();
    hosts
        .read_hosts_conf(text.as_bytes())
        .map_err(|e| format!("{HOSTS}: {e}"))?;
    Ok(hosts)
}
