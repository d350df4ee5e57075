//! Target servers for picket to probe, on our own loopback addresses: a real
//! HTTP server for any axum router, and a raw TCP server for targets that
//! misbehave below HTTP (never answer, trickle, reset), plus a few such
//! handlers ready to use, and [`FlippingSite`], a page a test turns up or down.
//!
//! Linux routes all of 127.0.0.0/8 to `lo`, so `127.0.0.2`, `127.0.0.3`, ...
//! can be bound without setup; a test that needs "different sites" or
//! "different IPs" for the per-IP limits uses different addresses.
//! Servers run on the calling test's runtime and end with it.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::picket::page;

async fn bind(ip: &str) -> TcpListener {
    let addr: IpAddr = ip
        .parse()
        .unwrap_or_else(|e| panic!("serve: {ip:?} is not an IP address: {e}"));
    TcpListener::bind((addr, 0))
        .await
        .unwrap_or_else(|e| panic!("serve: cannot bind {addr}:0: {e}"))
}

/// Serves `router` over HTTP/1.1 on `ip` and a free port, and returns the
/// address, e.g. `format!("http://{addr}/")`.
pub async fn serve(ip: &str, router: axum::Router) -> SocketAddr {
    let listener = bind(ip).await;
    let addr = listener
        .local_addr()
        .expect("local address of the target listener");
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, router).await {
            eprintln!("target server on {addr} stopped: {e}");
        }
    });
    addr
}

/// Accepts TCP connections on `ip` and a free port and runs `handler` on
/// each one in its own task; returns the address.
pub async fn serve_raw<F, Fut>(ip: &str, handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    accept(bind(ip).await, handler)
}

/// As [`serve_raw`] on a given address (a well-known port, say).
pub async fn serve_raw_at<F, Fut>(addr: SocketAddr, handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind(addr)
        .await
        .unwrap_or_else(|e| panic!("serve: cannot bind {addr}: {e}"));
    accept(listener, handler)
}

/// Hands each connection `listener` accepts to `handler`, in a task of its own.
fn accept<F, Fut>(listener: TcpListener, handler: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let addr = listener
        .local_addr()
        .expect("local address of the target listener");
    let handler = Arc::new(handler);
    tokio::spawn(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    tokio::spawn(handler(stream));
                }
                Err(e) => {
                    // Running out of file descriptors is the usual cause;
                    // back off instead of spinning.
                    eprintln!("target server on {addr}: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    });
    addr
}

/// A site that is up (a page saying "alpha") until told to fail (503).
pub struct FlippingSite {
    /// `http://IP:PORT/`
    pub url: String,
    up: Arc<AtomicBool>,
}

impl FlippingSite {
    /// Starts the site, up, on `ip` and a free port.
    pub async fn start(ip: &str) -> FlippingSite {
        let up = Arc::new(AtomicBool::new(true));
        let flag = up.clone();
        let router = Router::new().route(
            "/",
            get(move || {
                let up = flag.load(Ordering::SeqCst);
                async move {
                    let status = if up {
                        axum::http::StatusCode::OK
                    } else {
                        axum::http::StatusCode::SERVICE_UNAVAILABLE
                    };
                    (status, axum::response::Html(page("<p>alpha</p>")))
                }
            }),
        );
        let addr = serve(ip, router).await;
        FlippingSite {
            url: format!("http://{addr}/"),
            up,
        }
    }

    /// Up (200) or failing (503) from the next request on.
    pub fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::SeqCst);
    }
}

/// Reads an HTTP request head (up to the blank line, at most 64 KiB) so a
/// raw handler answers after the request, as a real server would. Any stream
/// (TLS included). Returns what was read; empty if the peer closed first.
pub async fn read_request_head<S: tokio::io::AsyncRead + Unpin>(stream: &mut S) -> Vec<u8> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 64 * 1024 {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    head
}

/// Raw handlers for misbehaving targets, to pass to [`serve_raw`].
pub mod raw {
    use super::*;

    /// Accepts and then says nothing, ever: a connect succeeds, the request
    /// times out. Holds the socket until the client gives up.
    pub async fn never_answer(mut stream: TcpStream) {
        let mut buf = [0u8; 4096];
        while let Ok(n) = stream.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    }

    /// Closes the connection with a TCP reset as soon as the request
    /// arrives ("connection reset by peer").
    pub async fn reset(mut stream: TcpStream) {
        let _ = read_request_head(&mut stream).await;
        // Zero linger turns close() into a RST instead of a FIN.
        let _ = stream.set_zero_linger();
        drop(stream);
    }

    /// Closes the connection cleanly without a byte of response (an empty
    /// reply, as a crashing backend behind a proxy gives).
    pub async fn close_without_answer(mut stream: TcpStream) {
        let _ = read_request_head(&mut stream).await;
        let _ = stream.shutdown().await;
    }

    /// Answers every request with `response` (a whole raw HTTP response,
    /// headers included) `chunk` bytes at a time, pausing `every` between
    /// chunks: a server that is up but slower than any sane timeout.
    pub fn trickle(
        response: impl Into<Vec<u8>>,
        chunk: usize,
        every: Duration,
    ) -> impl Fn(TcpStream) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
    {
        let response: Arc<Vec<u8>> = Arc::new(response.into());
        let chunk = chunk.max(1);
        move |mut stream: TcpStream| {
            let response = Arc::clone(&response);
            Box::pin(async move {
                let _ = read_request_head(&mut stream).await;
                for piece in response.chunks(chunk) {
                    if stream.write_all(piece).await.is_err() {
                        return;
                    }
                    let _ = stream.flush().await;
                    tokio::time::sleep(every).await;
                }
                let _ = stream.shutdown().await;
            })
        }
    }

    /// Answers the first request with `response` verbatim and keeps the connection
    /// open, as a keep-alive server does, until the client closes it.
    pub fn kept_open(
        response: impl Into<Vec<u8>>,
    ) -> impl Fn(TcpStream) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
    {
        answering(response.into(), true)
    }

    /// Answers every request with `response` verbatim and closes: for bytes
    /// no HTTP library would produce (bad status lines, lying
    /// Content-Length, odd encodings).
    pub fn fixed(
        response: impl Into<Vec<u8>>,
    ) -> impl Fn(TcpStream) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
    {
        answering(response.into(), false)
    }

    /// Answers a request with `response`, then closes, or keeps the connection until
    /// the client closes it.
    fn answering(
        response: Vec<u8>,
        keep_open: bool,
    ) -> impl Fn(TcpStream) -> std::pin::Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync + 'static
    {
        let response = Arc::new(response);
        move |mut stream: TcpStream| {
            let response = Arc::clone(&response);
            Box::pin(async move {
                let _ = read_request_head(&mut stream).await;
                let _ = stream.write_all(&response).await;
                if keep_open {
                    never_answer(stream).await;
                } else {
                    let _ = stream.shutdown().await;
                }
            })
        }
    }
}

/// A listener on `ip` whose accept queue is full and never drained: the kernel drops
/// further SYNs, so a connect hangs until it times out, as to a blackholed site.
pub async fn blackhole(ip: &str) -> (std::net::SocketAddr, Vec<tokio::net::TcpStream>) {
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind((ip.parse::<std::net::Ipv4Addr>().expect("ip"), 0).into())
        .expect("bind");
    let listener = socket.listen(1).expect("listen");
    let addr = listener.local_addr().expect("addr");
    let mut held = Vec::new();
    for _ in 0..4 {
        let connect = tokio::net::TcpStream::connect(addr);
        if let Ok(Ok(s)) =
            tokio::time::timeout(std::time::Duration::from_millis(200), connect).await
        {
            held.push(s);
        }
    }
    // The listener must live on (not accepting) for the queue to stay full.
    std::mem::forget(listener);
    (addr, held)
}
