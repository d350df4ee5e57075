//! Our own small proxies on loopback, to be picket's egresses in tests: a SOCKS5 proxy
//! (no authentication, CONNECT only) and an HTTP proxy (CONNECT tunnels and
//! absolute-form requests). Each connects out *from its own source address*, so a
//! target can tell which egress a request came through, and logs where it connected.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use super::targets::{read_request_head, serve_raw};

/// What a proxy did.
#[derive(Default)]
pub struct ProxyLog {
    /// Every destination it was asked for, as given ("ip:port" or "host:port").
    pub asked: Mutex<Vec<String>>,
}

impl ProxyLog {
    pub fn asked(&self) -> Vec<String> {
        self.asked.lock().expect("proxy log").clone()
    }
}

/// Connects to `to` from `source` (port chosen by the system).
async fn connect_from(source: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = match to {
        SocketAddr::V4(_) => TcpSocket::new_v4()?,
        SocketAddr::V6(_) => TcpSocket::new_v6()?,
    };
    socket.bind(SocketAddr::new(source, 0))?;
    socket.connect(to).await
}

/// Serves a proxy on `ip`: `session` handles each client, connecting out from `source`
/// and looking names up in `hosts`.
async fn serve_proxy<F, Fut>(
    ip: &str,
    source: &str,
    hosts: HashMap<String, IpAddr>,
    session: F,
) -> (SocketAddr, Arc<ProxyLog>)
where
    F: Fn(TcpStream, IpAddr, Arc<HashMap<String, IpAddr>>, Arc<ProxyLog>) -> Fut
        + Send
        + Sync
        + 'static,
    Fut: std::future::Future<Output = std::io::Result<()>> + Send + 'static,
{
    let log = Arc::new(ProxyLog::default());
    let source: IpAddr = source.parse().expect("source address");
    let hosts = Arc::new(hosts);
    let l = log.clone();
    let addr = serve_raw(ip, move |stream| {
        let session = session(stream, source, hosts.clone(), l.clone());
        async move {
            let _ = session.await;
        }
    })
    .await;
    (addr, log)
}

/// A SOCKS5 proxy on `ip` that connects out from `source`. Names (address type 3) are
/// looked up in `hosts` only.
pub async fn socks5(
    ip: &str,
    source: &str,
    hosts: HashMap<String, IpAddr>,
) -> (SocketAddr, Arc<ProxyLog>) {
    serve_proxy(ip, source, hosts, |stream, source, hosts, log| async move {
        socks5_session(stream, source, &hosts, &log).await
    })
    .await
}

async fn socks5_session(
    mut client: TcpStream,
    source: IpAddr,
    hosts: &HashMap<String, IpAddr>,
    log: &ProxyLog,
) -> std::io::Result<()> {
    let mut head = [0u8; 2];
    client.read_exact(&mut head).await?;
    let mut methods = vec![0u8; usize::from(head[1])];
    client.read_exact(&mut methods).await?;
    if head[0] != 5 || !methods.contains(&0) {
        client.write_all(&[5, 0xff]).await?;
        return Ok(());
    }
    client.write_all(&[5, 0]).await?;
    let mut req = [0u8; 4];
    client.read_exact(&mut req).await?;
    let host: String = match req[3] {
        1 => {
            let mut a = [0u8; 4];
            client.read_exact(&mut a).await?;
            IpAddr::from(a).to_string()
        }
        4 => {
            let mut a = [0u8; 16];
            client.read_exact(&mut a).await?;
            IpAddr::from(a).to_string()
        }
        3 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len).await?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name).await?;
            String::from_utf8_lossy(&name).into_owned()
        }
        _ => return Ok(()),
    };
    let mut port = [0u8; 2];
    client.read_exact(&mut port).await?;
    let port = u16::from_be_bytes(port);
    log.asked
        .lock()
        .expect("proxy log")
        .push(format!("{host}:{port}"));
    let reply = |code: u8| [5, code, 0, 1, 0, 0, 0, 0, 0, 0];
    let ip = match host
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hosts.get(&host).copied())
    {
        Some(ip) => ip,
        None => return client.write_all(&reply(4)).await,
    };
    if req[1] != 1 {
        return client.write_all(&reply(7)).await;
    }
    match connect_from(source, SocketAddr::new(ip, port)).await {
        Ok(mut upstream) => {
            client.write_all(&reply(0)).await?;
            tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
        }
        Err(e) => {
            let code = match e.kind() {
                std::io::ErrorKind::ConnectionRefused => 5,
                _ => 1,
            };
            client.write_all(&reply(code)).await?;
        }
    }
    Ok(())
}

/// An HTTP proxy on `ip` that connects out from `source`: CONNECT tunnels, and
/// absolute-form requests forwarded in origin form. Names are looked up in `hosts`.
pub async fn http(
    ip: &str,
    source: &str,
    hosts: HashMap<String, IpAddr>,
) -> (SocketAddr, Arc<ProxyLog>) {
    serve_proxy(ip, source, hosts, |stream, source, hosts, log| async move {
        http_session(stream, source, &hosts, &log).await
    })
    .await
}

async fn http_session(
    mut client: TcpStream,
    source: IpAddr,
    hosts: &HashMap<String, IpAddr>,
    log: &ProxyLog,
) -> std::io::Result<()> {
    let head = read_request_head(&mut client).await;
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut words = text.split_whitespace();
    let (method, target) = (words.next().unwrap_or(""), words.next().unwrap_or(""));
    let (authority, rest) = if method == "CONNECT" {
        (target.to_string(), None)
    } else if let Some(after) = target.strip_prefix("http://") {
        let (auth, path) = after.split_at(after.find('/').unwrap_or(after.len()));
        let path = if path.is_empty() { "/" } else { path };
        // The same request in origin form, for the server.
        let line_end = text.find("\r\n").unwrap_or(text.len());
        let forwarded = format!("{method} {path} HTTP/1.1{}", &text[line_end..]);
        (auth.to_string(), Some(forwarded))
    } else {
        return client
            .write_all(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")
            .await;
    };
    log.asked.lock().expect("proxy log").push(authority.clone());
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) => (h.to_string(), p.parse::<u16>().unwrap_or(80)),
        None => (authority.clone(), 80),
    };
    let ip = host
        .trim_matches(['[', ']'])
        .parse::<IpAddr>()
        .ok()
        .or_else(|| hosts.get(&host).copied());
    let upstream = match ip {
        Some(ip) => connect_from(source, SocketAddr::new(ip, port)).await,
        None => Err(std::io::Error::other("unknown host")),
    };
    let mut upstream = match upstream {
        Ok(u) => u,
        Err(_) => {
            return client
                .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
                .await
        }
    };
    match rest {
        None => {
            client
                .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
                .await?
        }
        Some(request) => upstream.write_all(request.as_bytes()).await?,
    }
    tokio::io::copy_bidirectional(&mut client, &mut upstream).await?;
    Ok(())
}
