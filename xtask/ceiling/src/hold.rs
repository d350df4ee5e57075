//! `hold`: the in-flight run's slow HTTP server, which reads a request, waits,
//! then answers 200 with a small page.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;

pub(crate) struct HoldOptions {
    pub(crate) hold: Duration,
    pub(crate) lifetime: Duration,
    pub(crate) max_conns: usize,
    pub(crate) body_bytes: usize,
}

#[derive(Default)]
pub(crate) struct HoldStats {
    open: AtomicUsize,
    peak: AtomicUsize,
    served: AtomicUsize,
    refused: AtomicUsize,
}

/// A page with a title and enough text to be a real page to picket's judge.
pub(crate) fn held_page(bytes: usize) -> Vec<u8> {
    let mut page = String::from(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <title>Harbour Street Library: opening hours</title></head>\n<body>\
         <h1>Harbour Street Library</h1>\n",
    );
    let line = "<p>The reading room is open from nine to five on weekdays; \
                the archive answers letters within a week.</p>\n";
    while page.len() + line.len() + 16 < bytes {
        page.push_str(line);
    }
    page.push_str("</body></html>\n");
    page.into_bytes()
}

pub(crate) async fn serve_hold(ips: &[IpAddr], port: u16, opts: &HoldOptions) -> Result<()> {
    let page = Arc::new(held_page(opts.body_bytes));
    let permits = Arc::new(Semaphore::new(opts.max_conns));
    let stats = Arc::new(HoldStats::default());
    for ip in ips {
        if !ip.is_loopback() {
            bail!("hold: {ip} is not a loopback address");
        }
        let addr = SocketAddr::new(*ip, port);
        let socket = match ip {
            IpAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
            IpAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
        };
        socket.set_reuseaddr(true)?;
        socket
            .bind(addr)
            .with_context(|| format!("hold: cannot bind {addr}"))?;
        let listener = socket.listen(8192)?;
        let (page, permits, stats, hold) =
            (page.clone(), permits.clone(), stats.clone(), opts.hold);
        tokio::spawn(async move {
            loop {
                let stream = match listener.accept().await {
                    Ok((s, _)) => s,
                    Err(e) => {
                        // Out of descriptors: let connections finish, then go on.
                        eprintln!("hold: accept on {addr}: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let Ok(permit) = permits.clone().try_acquire_owned() else {
                    stats.refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                };
                let (page, stats) = (page.clone(), stats.clone());
                tokio::spawn(async move {
                    let open = stats.open.fetch_add(1, Ordering::Relaxed) + 1;
                    stats.peak.fetch_max(open, Ordering::Relaxed);
                    if answer_held(stream, &page, hold).await.is_ok() {
                        stats.served.fetch_add(1, Ordering::Relaxed);
                    }
                    stats.open.fetch_sub(1, Ordering::Relaxed);
                    drop(permit);
                });
            }
        });
    }
    println!("listening={}", ips.len());
    let report = |stats: &HoldStats| {
        eprintln!(
            "hold: open={} peak={} served={} refused={}",
            stats.open.load(Ordering::Relaxed),
            stats.peak.load(Ordering::Relaxed),
            stats.served.load(Ordering::Relaxed),
            stats.refused.load(Ordering::Relaxed)
        );
    };
    let end = tokio::time::Instant::now() + opts.lifetime;
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    loop {
        tokio::select! {
            () = tokio::time::sleep_until(end) => break,
            _ = term.recv() => break,
            _ = tokio::signal::ctrl_c() => break,
            _ = tick.tick() => report(&stats),
        }
    }
    report(&stats);
    Ok(())
}

/// Reads the request head (bounded), waits `hold`, answers 200 and closes.
pub(crate) async fn answer_held(
    mut stream: tokio::net::TcpStream,
    page: &[u8],
    hold: Duration,
) -> Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = [0u8; 2048];
    let read = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            if head.len() > 16 * 1024 {
                bail!("request head too large");
            }
            let got = stream.read(&mut buf).await?;
            if got == 0 {
                bail!("closed before the request head ended");
            }
            head.extend_from_slice(&buf[..got]);
        }
        Ok(())
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .map_err(|_| anyhow!("request head not read in 30 s"))??;
    tokio::time::sleep(hold).await;
    let header = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        page.len()
    );
    let write = async {
        stream.write_all(header.as_bytes()).await?;
        stream.write_all(page).await?;
        stream.shutdown().await
    };
    tokio::time::timeout(Duration::from_secs(30), write)
        .await
        .map_err(|_| anyhow!("answer not written in 30 s"))??;
    Ok(())
}
