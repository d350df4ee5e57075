//! A TCP relay between clients and a server that can fall silent, as a network path
//! does when it drops packets without a reset (a partition, a switch gone, the server's
//! host frozen or powered off): from then on no byte passes in either direction, and
//! new connections are taken but never served. The server behind it stays real; only
//! the path is ours.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinSet;

/// A running relay; it stops when dropped.
pub struct Relay {
    /// Where clients connect.
    pub addr: SocketAddr,
    silent: Arc<AtomicBool>,
    _task: tokio::task::JoinHandle<()>,
}

impl Relay {
    /// Relays 127.0.0.1:(free port) to `server`.
    pub async fn start(server: SocketAddr) -> Relay {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("relay port");
        let addr = listener.local_addr().expect("relay address");
        let silent = Arc::new(AtomicBool::new(false));
        let flag = silent.clone();
        let task = tokio::spawn(async move {
            let mut links = JoinSet::new();
            while let Ok((client, _)) = listener.accept().await {
                links.spawn(link(client, server, flag.clone()));
            }
        });
        Relay {
            addr,
            silent,
            _task: task,
        }
    }

    /// From now on nothing passes, and nothing is closed.
    pub fn fall_silent(&self) {
        self.silent.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self._task.abort();
    }
}

/// One client's connection: relayed while the path speaks, held open and mute after.
async fn link(client: TcpStream, server: SocketAddr, silent: Arc<AtomicBool>) {
    if silent.load(Ordering::SeqCst) {
        let _held = client;
        return std::future::pending().await;
    }
    let Ok(upstream) = TcpStream::connect(server).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (ur, uw) = upstream.into_split();
    tokio::join!(pass(cr, uw, silent.clone()), pass(ur, cw, silent));
}

/// Copies `from` to `to` until either closes; once the path is silent, what arrives is
/// kept back and the connection is held.
async fn pass(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    silent: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if silent.load(Ordering::SeqCst) {
            let _held = (from, to);
            return std::future::pending().await;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
