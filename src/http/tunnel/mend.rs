//! A status line read as browsers read it. hyper's parser (httparse) takes exactly
//! `HTTP/1.0` or `HTTP/1.1`, one space, three digits; Chrome finds "http" in any case,
//! skips any number of spaces, and reads a `HTTP/1.2` as the newest version it knows,
//! and curl reads the first two as well. An old appliance or a home-made server that
//! writes `http/1.1 200 OK` or `HTTP/1.1  200 OK` works in every browser, and picket
//! said it was down. [`Mended`] hands hyper the answer with its first line rewritten to
//! the form hyper reads, and every byte after it as it came: the headers and the body
//! are still hyper's to parse.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The longest first line looked at; a longer one is handed on as it is.
const MAX_LINE: usize = 1024;

/// The status line as hyper reads it, when `line` (the first line, with its end) is
/// one browsers read and hyper does not; `None` to leave it as it came.
pub(super) fn status_line(line: &[u8]) -> Option<Vec<u8>> {
    let (name, rest) = line.split_at_checked(5)?;
    if !name.eq_ignore_ascii_case(b"http/") {
        return None;
    }
    let digits = |s: &[u8]| s.iter().take_while(|b| b.is_ascii_digit()).count();
    let major_len = digits(rest);
    let (major, rest) = rest.split_at(major_len);
    let rest = rest.strip_prefix(b".")?;
    let minor_len = digits(rest);
    let (minor, rest) = rest.split_at(minor_len);
    // HTTP/1.x only: another major version is another protocol, not a misspelling.
    if major != b"1" || minor.is_empty() {
        return None;
    }
    let after = rest.iter().take_while(|&&b| b == b' ').count();
    if after == 0 {
        return None;
    }
    let version: &[u8] = if minor.iter().all(|&d| d == b'0') {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    };
    let mended = [version, &rest[after..]].concat();
    (mended != line).then_some(mended)
}

/// Marks an answer whose status line was mended, with the line as it came.
#[derive(Debug, Clone)]
pub(in crate::http) struct MendedLine(pub String);

/// A stream whose first line, when it is a status line browsers forgive, is handed on
/// mended ([`status_line`]); writes and every later byte pass through.
pub(super) struct Mended<I> {
    inner: I,
    state: State,
    /// The first line as it came, once it was mended.
    original: Arc<OnceLock<String>>,
}

enum State {
    /// Gathering the first line.
    Head(Vec<u8>),
    /// Handing on what was gathered (mended or not), from `at`.
    Drain(Vec<u8>, usize),
    Pass,
}

impl<I> Mended<I> {
    pub(super) fn new(inner: I) -> Mended<I> {
        Mended {
            inner,
            state: State::Head(Vec::new()),
            original: Arc::default(),
        }
    }

    /// Where the first line as it came is kept once it was mended (it is, if at all,
    /// before hyper has the answer's head).
    pub(super) fn original(&self) -> Arc<OnceLock<String>> {
        self.original.clone()
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Mended<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        loop {
            match &mut this.state {
                State::Pass => return Pin::new(&mut this.inner).poll_read(cx, buf),
                State::Drain(bytes, at) => {
                    let n = (bytes.len() - *at).min(buf.remaining());
                    buf.put_slice(&bytes[*at..*at + n]);
                    *at += n;
                    if *at == bytes.len() {
                        this.state = State::Pass;
                    }
                    return Poll::Ready(Ok(()));
                }
                State::Head(head) => {
                    let mut chunk = [0u8; MAX_LINE];
                    let room = MAX_LINE - head.len();
                    let mut read = ReadBuf::new(&mut chunk[..room]);
                    std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                    let got = read.filled();
                    head.extend_from_slice(got);
                    let end = head.iter().position(|&b| b == b'\n');
                    if end.is_none() && !got.is_empty() && head.len() < MAX_LINE {
                        continue;
                    }
                    let mut head = std::mem::take(head);
                    if let Some(end) = end {
                        if let Some(line) = status_line(&head[..=end]) {
                            let came = String::from_utf8_lossy(&head[..=end]);
                            let _ = this.original.set(came.trim_end().to_string());
                            head.splice(..=end, line);
                        }
                    }
                    if head.is_empty() {
                        // The server closed before a byte: hyper sees the end as it is.
                        this.state = State::Pass;
                        return Poll::Ready(Ok(()));
                    }
                    this.state = State::Drain(head, 0);
                }
            }
        }
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Mended<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt;

    fn mended(line: &str) -> Option<String> {
        status_line(line.as_bytes()).map(|l| String::from_utf8(l).expect("ascii"))
    }

    #[test]
    fn status_lines_browsers_forgive_are_written_as_hyper_reads_them() {
        assert_eq!(
            mended("http/1.1 200 OK\r\n").as_deref(),
            Some("HTTP/1.1 200 OK\r\n")
        );
        assert_eq!(
            mended("Http/1.0 200 OK\r\n").as_deref(),
            Some("HTTP/1.0 200 OK\r\n")
        );
        assert_eq!(
            mended("HTTP/1.1  200 OK\r\n").as_deref(),
            Some("HTTP/1.1 200 OK\r\n")
        );
        assert_eq!(
            mended("HTTP/1.2 200 OK\r\n").as_deref(),
            Some("HTTP/1.1 200 OK\r\n")
        );
        assert_eq!(
            mended("HTTP/1.00 404 Not Found\n").as_deref(),
            Some("HTTP/1.0 404 Not Found\n")
        );
        // What hyper reads already, and what is not HTTP/1 at all, stay as they came.
        for kept in [
            "HTTP/1.1 200 OK\r\n",
            "HTTP/1.0 200\r\n",
            "HTTP/2.0 200 OK\r\n",
            "HTTP/1.1\t200 OK\r\n",
            "HTTP/1. 200 OK\r\n",
            "<html>hello</html>\n",
            "ICY 200 OK\r\n",
            "",
        ] {
            assert_eq!(mended(kept), None, "{kept:?}");
        }
    }

    /// A server's answer arriving in the chunks given.
    struct Chunks(std::collections::VecDeque<Vec<u8>>);

    impl AsyncRead for Chunks {
        fn poll_read(
            mut self: Pin<&mut Self>,
            _: &mut Context<'_>,
            buf: &mut ReadBuf<'_>,
        ) -> Poll<io::Result<()>> {
            if let Some(mut c) = self.0.pop_front() {
                let n = c.len().min(buf.remaining());
                buf.put_slice(&c[..n]);
                if n < c.len() {
                    self.0.push_front(c.split_off(n));
                }
            }
            Poll::Ready(Ok(()))
        }
    }

    async fn through(chunks: &[&[u8]]) -> Vec<u8> {
        let server = Chunks(chunks.iter().map(|c| c.to_vec()).collect());
        let mut out = Vec::new();
        Mended::new(server)
            .read_to_end(&mut out)
            .await
            .expect("read");
        out
    }

    #[tokio::test]
    async fn only_the_first_line_is_mended_however_it_arrives() {
        let answer: &[u8] = b"http/1.1  200 OK\r\nContent-Length: 2\r\n\r\nhttp/1.1  ok";
        let want: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhttp/1.1  ok";
        assert_eq!(through(&[answer]).await, want);
        // A byte at a time, as a slow server sends it.
        let bytes: Vec<&[u8]> = answer.chunks(1).collect();
        assert_eq!(through(&bytes).await, want);
        // A first line that never ends within the limit passes as it came.
        let long = [b"http/1.1 200 ".as_slice(), &[b'x'; 2000]].concat();
        assert_eq!(through(&[&long]).await, long);
        assert_eq!(through(&[]).await, b"");
    }
}
