//! A tiny DNS server on loopback for resolver tests: it answers A and AAAA queries from
//! a fixed table, or fails queries with SERVFAIL or REFUSED, or never answers at all.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How the server behaves.
#[derive(Clone)]
pub enum Mode {
    /// A and AAAA records from the table (lower-case names without the final dot):
    /// a name's IPv4 addresses to A queries, its IPv6 ones to AAAA, an empty answer
    /// (NODATA) where it has none of the kind asked; other names get NXDOMAIN.
    Answer(HashMap<String, Vec<IpAddr>>),
    /// RCODE 2 for everything: a broken recursive resolver.
    Servfail,
    /// RCODE 2 for these names (lower-case, without the final dot), NXDOMAIN for the
    /// rest: a working resolver, and names whose own DNS is broken.
    ServfailFor(Vec<String>),
    /// RCODE 5 for everything: a resolver that does not serve us (its ACL).
    Refused,
    /// Reads queries and never replies.
    Silent,
    /// Never replies for these names (lower-case, without the final dot), NXDOMAIN for
    /// the rest: a working resolver whose way to a site's nameservers is lost.
    SilentFor(Vec<String>),
    /// The names of the table answered (from its cache), SERVFAIL for every other name
    /// and NXDOMAIN for the root: a recursive resolver cut off from every upstream
    /// server, which still answers what it holds (the root zone's servers among it).
    CutOff(HashMap<String, Vec<IpAddr>>),
    /// As the mode given, each reply this long after its query: a resolver farther
    /// away, or a split-horizon one that asks its own servers.
    Slow(std::time::Duration, Box<Mode>),
    /// RCODE 2 for these names and every name below them (lower-case, without the
    /// final dot), NXDOMAIN for the rest, the root included: a working resolver, and a
    /// zone whose own servers fail (a top-level domain's outage, a forwarded zone's
    /// server down).
    ServfailUnder(Vec<String>),
    /// A resolver of an isolated network that serves its own zones and reaches nothing
    /// else: the table's names answered, other names under `zones` NXDOMAIN, names
    /// under `broken` (a zone delegated to a server that is down) SERVFAIL, the root
    /// NXDOMAIN (from its hints), SERVFAIL for every other name.
    Isolated {
        table: HashMap<String, Vec<IpAddr>>,
        zones: Vec<String>,
        broken: Vec<String>,
    },
}

/// Whether `name` is `zone` or a name below it.
fn under(name: &str, zone: &str) -> bool {
    name == zone || name.ends_with(&format!(".{zone}"))
}

/// Starts a server on `ip` (UDP, free port); returns its address and a count of the
/// queries it received.
pub async fn serve(ip: &str, mode: Mode) -> (SocketAddr, Arc<AtomicUsize>) {
    let (addr, asked) = serve_counting(ip, mode).await;
    (addr, asked.all)
}

/// The queries a server received: all, and the AAAA ones among them.
#[derive(Clone, Default)]
pub struct Asked {
    pub all: Arc<AtomicUsize>,
    pub aaaa: Arc<AtomicUsize>,
}

impl Asked {
    /// (all, AAAA) so far.
    pub fn now(&self) -> (usize, usize) {
        (
            self.all.load(Ordering::SeqCst),
            self.aaaa.load(Ordering::SeqCst),
        )
    }
}

/// [`serve`], counting AAAA queries apart.
pub async fn serve_counting(ip: &str, mode: Mode) -> (SocketAddr, Asked) {
    serve_on(ip, 0, mode).await
}

/// [`serve_counting`] on `port` of `ip`: 53 for a nameserver named in a `resolv.conf`,
/// which has no way to give another port.
pub async fn serve_on(ip: &str, port: u16, mode: Mode) -> (SocketAddr, Asked) {
    let socket = tokio::net::UdpSocket::bind((ip, port))
        .await
        .unwrap_or_else(|e| panic!("bind the test DNS server on {ip}:{port}: {e}"));
    let addr = socket.local_addr().expect("DNS server address");
    let asked = Asked::default();
    let q = asked.clone();
    let socket = Arc::new(socket);
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            q.all.fetch_add(1, Ordering::SeqCst);
            if qtype(&buf[..n]) == Some(AAAA) {
                q.aaaa.fetch_add(1, Ordering::SeqCst);
            }
            let (delay, mode) = match &mode {
                Mode::Slow(delay, inner) => (*delay, &**inner),
                other => (std::time::Duration::ZERO, other),
            };
            if let Some(reply) = reply(&buf[..n], mode) {
                let socket = Arc::clone(&socket);
                tokio::spawn(async move {
                    tokio::time::sleep(delay).await;
                    let _ = socket.send_to(&reply, peer).await;
                });
            }
        }
    });
    (addr, asked)
}

const A: u16 = 1;
const AAAA: u16 = 28;

/// The type asked by query `q`, and where its question ends.
fn question(q: &[u8]) -> Option<(Vec<String>, u16, usize)> {
    if q.len() < 12 || q[4..6] != [0, 1] {
        return None;
    }
    let mut labels = Vec::new();
    let mut i = 12;
    loop {
        let len = usize::from(*q.get(i)?);
        if len == 0 {
            break;
        }
        if len & 0xC0 != 0 {
            return None;
        }
        labels.push(String::from_utf8_lossy(q.get(i + 1..i + 1 + len)?).to_ascii_lowercase());
        i += 1 + len;
    }
    let end = i + 1 + 4; // the root label, QTYPE, QCLASS
    if end > q.len() {
        return None;
    }
    Some((labels, u16::from_be_bytes([q[i + 1], q[i + 2]]), end))
}

fn qtype(q: &[u8]) -> Option<u16> {
    question(q).map(|(_, t, _)| t)
}

/// The reply to one query, by `mode`.
fn reply(q: &[u8], mode: &Mode) -> Option<Vec<u8>> {
    let (labels, qtype, end) = question(q)?;
    let name = labels.join(".");
    let (rcode, answers): (u8, Vec<IpAddr>) = match mode {
        Mode::Silent => return None,
        Mode::SilentFor(lost) if lost.contains(&name) => return None,
        Mode::SilentFor(_) => (3, Vec::new()),
        Mode::Servfail => (2, Vec::new()),
        Mode::ServfailFor(broken) if broken.contains(&name) => (2, Vec::new()),
        Mode::ServfailFor(_) => (3, Vec::new()),
        Mode::Refused => (5, Vec::new()),
        Mode::CutOff(table) if !table.contains_key(&name) && !name.is_empty() => (2, Vec::new()),
        Mode::CutOff(table) => return reply(q, &Mode::Answer(table.clone())),
        Mode::Slow(_, inner) => return reply(q, inner),
        Mode::ServfailUnder(broken) if broken.iter().any(|z| under(&name, z)) => (2, Vec::new()),
        Mode::ServfailUnder(_) => (3, Vec::new()),
        Mode::Isolated { broken, .. } if broken.iter().any(|z| under(&name, z)) => (2, Vec::new()),
        Mode::Isolated { table, zones, .. }
            if name.is_empty() || zones.iter().any(|z| under(&name, z)) =>
        {
            return reply(q, &Mode::Answer(table.clone()))
        }
        Mode::Isolated { .. } => (2, Vec::new()),
        Mode::Answer(table) => match table.get(&name) {
            None => (3, Vec::new()),
            Some(ips) => {
                let kind = |ip: &&IpAddr| match qtype {
                    A => ip.is_ipv4(),
                    AAAA => ip.is_ipv6(),
                    _ => false,
                };
                (0, ips.iter().filter(kind).copied().collect())
            }
        },
    };
    let count = u8::try_from(answers.len()).ok()?;
    let mut r = Vec::with_capacity(end + 28 * answers.len());
    r.extend_from_slice(&q[..2]);
    // QR, the query's opcode and RD; then RA and the RCODE.
    r.push(0x80 | (q[2] & 0x79));
    r.push(0x80 | rcode);
    r.extend_from_slice(&[0, 1, 0, count, 0, 0, 0, 0]);
    r.extend_from_slice(&q[12..end]);
    for ip in answers {
        // The question's name by pointer, the type, IN, TTL 60 s, the address.
        let (kind, bytes): (u16, Vec<u8>) = match ip {
            IpAddr::V4(v4) => (A, v4.octets().to_vec()),
            IpAddr::V6(v6) => (AAAA, v6.octets().to_vec()),
        };
        r.extend_from_slice(&[0xC0, 0x0C]);
        r.extend_from_slice(&kind.to_be_bytes());
        r.extend_from_slice(&[0, 1, 0, 0, 0, 60, 0, bytes.len() as u8]);
        r.extend_from_slice(&bytes);
    }
    Some(r)
}
