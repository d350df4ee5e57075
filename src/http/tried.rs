//! The addresses of one target tried before one answered, or none did, and whether a
//! failed connection ever left this machine. Our own host can fail a connection
//! before any packet is sent: no route in our table for the address (an IPv6-only site
//! seen from a container without IPv6, an interface down), a `prohibit` or `blackhole`
//! route, our own firewall dropping it. Such an address was never asked and says
//! nothing of the site; only when every address failed that way is nothing known
//! (`unknown`, as an egress failing).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::fail;
use super::tunnel::SendError;
use crate::probe::{FailureKind, Outcome};

/// What an address this worker could not send to said (nothing: it was never asked).
const NOT_SENT: &str = "no route from this worker";

/// Errors of a TCP `connect` that only our own host gives: EPERM (our firewall dropped
/// the SYN), ENETDOWN (our interface is down).
const OURS_ALONE: [i32; 2] = [1, 100];

/// Errors of a TCP `connect` our routing table gives (EACCES: a `prohibit` route;
/// EINVAL: a `blackhole` one), but not it alone: an ICMPv6 "administratively
/// prohibited" from the site's firewall is EACCES too (firewalld's default reject,
/// review Z), and a link-local address without a scope is EINVAL. Ours only when the
/// route lookup fails too.
const OURS_IF_UNROUTED: [i32; 2] = [13, 22];

/// EAFNOSUPPORT: a kernel without that address family at all.
const NO_FAMILY: i32 = 97;

/// Whether the failed direct connection to `ip` never left this machine: an error only
/// our own host gives, or one a remote host may give too ("unreachable", EACCES,
/// EINVAL) while our own routing table has no way there. A UDP socket's `connect` looks the route up
/// and sends nothing.
pub(super) fn not_sent_from_here(e: &SendError, outcome: &Outcome, ip: IpAddr) -> bool {
    let errno = e.os_error();
    if errno.is_some_and(|n| OURS_ALONE.contains(&n) || n == NO_FAMILY) {
        return true;
    }
    let unreachable = matches!(outcome, Outcome::Failure(f) if f.kind == FailureKind::Unreachable);
    (unreachable || errno.is_some_and(|n| OURS_IF_UNROUTED.contains(&n))) && !routed_here(ip)
}

/// Whether our routing table has a route to `ip`.
fn routed_here(ip: IpAddr) -> bool {
    use std::io::ErrorKind as K;
    let any: SocketAddr = match ip {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    match std::net::UdpSocket::bind(any) {
        Ok(socket) => match socket.connect(SocketAddr::new(ip, 9)) {
            Ok(()) => true,
            Err(e) => {
                !matches!(e.kind(), K::NetworkUnreachable | K::HostUnreachable)
                    && !e
                        .raw_os_error()
                        .is_some_and(|n| OURS_IF_UNROUTED.contains(&n))
            }
        },
        Err(e) => e.raw_os_error() != Some(NO_FAMILY),
    }
}

/// The addresses of one target that failed, in the order tried.
#[derive(Default)]
pub(super) struct Tried {
    failed: Vec<(IpAddr, String)>,
    /// The last of them whose failure was the site's: it stands when a later address
    /// was never asked.
    site_failure: Option<(IpAddr, Outcome)>,
}

/// How the last address tried ended.
pub(super) enum Last {
    /// It failed as the site's.
    Failed(Outcome),
    /// Our own host failed it before anything was sent.
    NotSent(IpAddr),
}

impl Tried {
    /// Notes that `ip` failed, and how.
    pub(super) fn push(&mut self, ip: IpAddr, last: Last) {
        match last {
            Last::Failed(outcome) => {
                self.failed.push((ip, outcome.failure_detail().to_string()));
                self.site_failure = Some((ip, outcome));
            }
            Last::NotSent(_) => self.failed.push((ip, NOT_SENT.to_string())),
        }
    }

    /// Whether no address failed before.
    pub(super) fn is_empty(&self) -> bool {
        self.failed.is_empty()
    }

    /// The addresses that failed, as a list for a note.
    pub(super) fn list(&self) -> String {
        let failed: Vec<String> = self
            .failed
            .iter()
            .map(|(ip, what)| format!("{ip} ({what})"))
            .collect();
        failed.join(", ")
    }

    /// How a target none of whose addresses answered failed, the address that failure
    /// is of when it is not the last tried, and a note of the others tried: the last
    /// address's failure, or, when it was never sent, the last failure that was the
    /// site's. When no address was sent to, nothing is known about the site (`unknown`,
    /// as any egress failing).
    pub(super) fn gave_up(
        mut self,
        host: &str,
        last: Last,
    ) -> (Outcome, Option<IpAddr>, Option<String>) {
        let (outcome, ip) = match (last, self.site_failure.take()) {
            (Last::Failed(outcome), _) => (outcome, None),
            (Last::NotSent(ip), Some((site_ip, site))) => {
                self.failed.retain(|(tried, _)| *tried != site_ip);
                self.failed.push((ip, NOT_SENT.to_string()));
                (site, Some(site_ip))
            }
            (Last::NotSent(ip), None) => {
                let ips: Vec<String> = self
                    .failed
                    .drain(..)
                    .map(|(ip, _)| ip.to_string())
                    .chain([ip.to_string()])
                    .collect();
                let outcome = fail(
                    FailureKind::Egress,
                    format!(
                        "{host}: not asked: this worker has no route to {} (its own routing \
                         table or firewall), so nothing left it",
                        ips.join(", ")
                    ),
                );
                (outcome, None)
            }
        };
        let note = (!self.is_empty()).then(|| format!("also tried: {}", self.list()));
        (outcome, ip, note)
    }
}
