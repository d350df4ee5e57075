//! A tiny DNS server on loopback for resolver tests: it answers A queries from a fixed
//! table, or fails every query with SERVFAIL, or never answers at all.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// How the server behaves.
#[derive(Clone)]
pub enum Mode {
    /// A records from the table (lower-case names without the final dot); other names
    /// get NXDOMAIN, other query types an empty answer.
    Answer(HashMap<String, Ipv4Addr>),
    /// RCODE 2 for everything: a broken recursive resolver.
    Servfail,
    /// Reads queries and never replies.
    Silent,
}

/// Starts a server on `ip` (UDP, free port); returns its address and a count of the
/// queries it received.
pub async fn serve(ip: &str, mode: Mode) -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = tokio::net::UdpSocket::bind((ip, 0))
        .await
        .expect("bind the test DNS server");
    let addr = socket.local_addr().expect("DNS server address");
    let queries = Arc::new(AtomicUsize::new(0));
    let q = queries.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, peer)) = socket.recv_from(&mut buf).await else {
                continue;
            };
            q.fetch_add(1, Ordering::SeqCst);
            if let Some(reply) = reply(&buf[..n], &mode) {
                let _ = socket.send_to(&reply, peer).await;
            }
        }
    });
    (addr, queries)
}

/// The reply to one query, by `mode`.
fn reply(q: &[u8], mode: &Mode) -> Option<Vec<u8>> {
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
    let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
    let name = labels.join(".");
    let (rcode, answer) = match mode {
        Mode::Silent => return None,
        Mode::Servfail => (2, None),
        Mode::Answer(table) => match table.get(&name) {
            None => (3, None),
            Some(ip) if qtype == 1 => (0, Some(*ip)),
            Some(_) => (0, None),
        },
    };
    let mut r = Vec::with_capacity(end + 16);
    r.extend_from_slice(&q[..2]);
    // QR, the query's opcode and RD; then RA and the RCODE.
    r.push(0x80 | (q[2] & 0x79));
    r.push(0x80 | rcode);
    r.extend_from_slice(&[0, 1, 0, u8::from(answer.is_some()), 0, 0, 0, 0]);
    r.extend_from_slice(&q[12..end]);
    if let Some(ip) = answer {
        // The question's name by pointer, A, IN, TTL 60 s, four bytes of address.
        r.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
        r.extend_from_slice(&ip.octets());
    }
    Some(r)
}
