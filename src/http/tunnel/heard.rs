//! What a proxy said before it was asked. Privoxy with no room for another client
//! answers "503 Too many open connections" as it accepts a connection, before reading
//! anything, and closes it: hyper takes bytes that come before its request is written
//! for a message nobody asked for, and the CONNECT fails "operation was canceled", the
//! proxy's words lost. The connection to the proxy keeps the first bytes the proxy
//! sends, so a CONNECT failing so is read as the answer it was.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The first bytes of the proxy's kept: an answer's head, and no more.
const KEPT: usize = 2048;

/// A connection to a proxy that keeps the first bytes it reads ([`FirstWords`]).
pub(super) struct Heard<I> {
    inner: I,
    first: Arc<Mutex<Vec<u8>>>,
    /// Whether [`KEPT`] bytes are kept: later reads pass straight through.
    full: bool,
}

/// The first bytes read from a proxy's connection ([`Heard`]).
pub(super) struct FirstWords(Arc<Mutex<Vec<u8>>>);

impl<I> Heard<I> {
    pub(super) fn new(inner: I) -> (Heard<I>, FirstWords) {
        let first = Arc::new(Mutex::new(Vec::new()));
        let heard = Heard {
            inner,
            first: first.clone(),
            full: false,
        };
        (heard, FirstWords(first))
    }
}

impl FirstWords {
    /// The head of the first answer the proxy sent, when its bytes hold a whole one.
    pub(super) fn answer(&self) -> Option<http::Response<()>> {
        let bytes = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut head = httparse::Response::new(&mut headers);
        if !matches!(head.parse(&bytes), Ok(httparse::Status::Complete(_))) {
            return None;
        }
        let status = http::StatusCode::from_u16(head.code?).ok()?;
        let mut answer = http::Response::builder().status(status);
        for h in head.headers.iter() {
            answer = answer.header(h.name, h.value);
        }
        let mut answer = answer.body(()).ok()?;
        // As hyper does: only a reason phrase other than the standard one is kept.
        let reason = head
            .reason
            .filter(|r| status.canonical_reason() != Some(*r));
        if let Some(reason) =
            reason.and_then(|r| hyper::ext::ReasonPhrase::try_from(r.as_bytes()).ok())
        {
            answer.extensions_mut().insert(reason);
        }
        Some(answer)
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Heard<I> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if !this.full && matches!(polled, Poll::Ready(Ok(()))) {
            let mut first = this.first.lock().unwrap_or_else(PoisonError::into_inner);
            let new = &buf.filled()[before..];
            let room = KEPT - first.len();
            first.extend_from_slice(&new[..new.len().min(room)]);
            this.full = first.len() >= KEPT;
        }
        polled
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Heard<I> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    /// Privoxy's words as it accepts a connection it has no room for, read in two
    /// pieces: the head comes back whole, its own reason phrase kept.
    #[tokio::test]
    async fn the_first_answer_a_proxy_sent_is_kept_with_its_reason_phrase() {
        let said: &[u8] = b"HTTP/1.1 503 Too many open connections\r\nContent-Type: text/plain\r\n\
            Connection: close\r\n\r\nMaximum number of open connections reached.\n";
        let (near, mut far) = tokio::io::duplex(64);
        let (mut heard, first) = Heard::new(near);
        let writing =
            tokio::spawn(async move { tokio::io::AsyncWriteExt::write_all(&mut far, said).await });
        let mut all = Vec::new();
        heard.read_to_end(&mut all).await.expect("read");
        writing.await.expect("joined").expect("written");
        let answer = first.answer().expect("a whole head");
        assert_eq!(answer.status(), 503);
        let reason = answer.extensions().get::<hyper::ext::ReasonPhrase>();
        assert_eq!(
            reason.map(|r| r.as_bytes()),
            Some(&b"Too many open connections"[..])
        );
        assert_eq!(answer.headers()["connection"], "close");
    }

    #[tokio::test]
    async fn half_a_head_or_a_standard_reason_is_no_more_than_it_says() {
        let (near, mut far) = tokio::io::duplex(256);
        let (mut heard, first) = Heard::new(near);
        tokio::io::AsyncWriteExt::write_all(&mut far, b"HTTP/1.1 503 Service Unavailable\r\n")
            .await
            .expect("written");
        let mut buf = [0u8; 256];
        let n = heard.read(&mut buf).await.expect("read");
        assert!(n > 0);
        assert!(first.answer().is_none(), "the head is not whole yet");
        tokio::io::AsyncWriteExt::write_all(&mut far, b"\r\n")
            .await
            .expect("written");
        let _ = heard.read(&mut buf).await.expect("read");
        let answer = first.answer().expect("whole now");
        assert!(answer
            .extensions()
            .get::<hyper::ext::ReasonPhrase>()
            .is_none());
    }
}
