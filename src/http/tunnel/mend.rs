//! An answer's head read as browsers read it. hyper's parser (httparse) takes exactly
//! `HTTP/1.0` or `HTTP/1.1`, one space, three digits, a space, and header lines ended by
//! CR LF or LF. Chrome finds "http" in any case within the first bytes, skips spaces,
//! reads a `HTTP/1.2` as the newest version it knows and the digits of the code
//! whatever follows them (`200OK`), splits header lines on any run of CR and LF, takes
//! no length from a `Content-Length` that is not digits (`+207`: it reads to the close)
//! and no chunks from an HTTP/1.0 answer; curl reads most of these too. An old
//! appliance, a CGI script on Windows or a home-made server writing them works in every
//! browser, and picket said it was down. [`Mended`] hands hyper each head (a `1xx`'s
//! and the final one) rewritten to the form hyper reads, a chunked body's framing too
//! (`chunks`), and every byte of the body's data as it came.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::chunks::Rechunk;

/// The longest head looked at: Chrome's limit for a response head. A longer one is
/// handed on as it came, for hyper to refuse.
const MAX_HEAD: usize = 256 * 1024;

/// Where the head that opens `bytes` ends (just past its blank line: an LF, any CRs,
/// an LF), if it does.
fn head_end(bytes: &[u8]) -> Option<usize> {
    let mut from = 0;
    while let Some(lf) = memchr::memchr(b'\n', &bytes[from..]) {
        let next = from + lf + 1;
        let crs = bytes[next..].iter().take_while(|&&b| b == b'\r').count();
        if bytes.get(next + crs) == Some(&b'\n') {
            return Some(next + crs + 1);
        }
        from = next;
    }
    None
}

/// A head as hyper reads it, when `head` (up to its blank line) is one browsers read
/// and hyper may not: its lines split on runs of CR and LF and ended by CR LF, its
/// status line mended ([`status_line`]), a `Content-Length` that is no number dropped,
/// and an HTTP/1.0 answer's `Transfer-Encoding` dropped. With the status code and the
/// first line that changed, as it came; `None` when the head is not an HTTP/1 answer's.
pub(super) fn head(head: &[u8]) -> Option<Mend> {
    let mut lines = head
        .split(|&b| b == b'\r' || b == b'\n')
        .filter(|l| !l.is_empty());
    let first = lines.next()?;
    let (status, code) = status_line(first)?;
    let http10 = status.starts_with(b"HTTP/1.0 ");
    let mut changed = (status != first).then_some(first);
    let mut out = status;
    out.extend_from_slice(b"\r\n");
    let lines: Vec<&[u8]> = lines.collect();
    let lengths = lengths_agree(&lines);
    let chunked = !http10 && chunked(&lines);
    for line in lines {
        if dropped(line, http10, lengths) {
            changed = changed.or(Some(line));
            continue;
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b"\r\n");
    let changed = match changed {
        Some(line) => Some(line),
        // The same lines, ended otherwise: the first whose end was not CR LF.
        None if out != head => head
            .split(|&b| b == b'\n')
            .find(|l| l.strip_suffix(b"\r").is_none_or(|l| l.contains(&b'\r')))
            .map(|l| l.strip_suffix(b"\r").unwrap_or(l)),
        None => None,
    };
    Some(Mend {
        head: out,
        code,
        chunked,
        changed: changed.map(|l| String::from_utf8_lossy(l).trim().to_string()),
    })
}

/// A head as [`head`] mended it.
pub(super) struct Mend {
    pub(super) head: Vec<u8>,
    /// Its status code.
    pub(super) code: u16,
    /// Its body comes in chunks (an HTTP/1.1 answer whose last transfer coding is
    /// `chunked`).
    pub(super) chunked: bool,
    /// The first line it changed, as it came; `None` when it is as it came.
    pub(super) changed: Option<String>,
}

/// A header line's name and value, trimmed, when it has a colon.
fn field(line: &[u8]) -> Option<(&[u8], &[u8])> {
    let colon = memchr::memchr(b':', line)?;
    Some((line[..colon].trim_ascii(), line[colon + 1..].trim_ascii()))
}

/// Whether the last transfer coding the head names is `chunked`, as hyper decides.
fn chunked(lines: &[&[u8]]) -> bool {
    lines
        .iter()
        .filter_map(|l| field(l))
        .rfind(|(name, _)| name.eq_ignore_ascii_case(b"transfer-encoding"))
        .and_then(|(_, value)| value.split(|&b| b == b',').next_back())
        .is_some_and(|coding| coding.trim_ascii().eq_ignore_ascii_case(b"chunked"))
}

/// Whether the head's `Content-Length` values (each line's, each of a list's) are all
/// the same text, or there are none. Chrome refuses an answer whose lengths differ
/// (ERR_RESPONSE_HEADERS_MULTIPLE_CONTENT_LENGTH), whatever they are (review X).
fn lengths_agree(lines: &[&[u8]]) -> bool {
    let mut values = lines
        .iter()
        .filter_map(|l| field(l))
        .filter(|(name, _)| name.eq_ignore_ascii_case(b"content-length"))
        .flat_map(|(_, value)| value.split(|&b| b == b','))
        .map(<[u8]>::trim_ascii);
    let first = values.next();
    values.all(|v| Some(v) == first)
}

/// Whether a header line goes: a `Content-Length` that is no number Chrome reads
/// (`+207`, one past 2^63: it reads an int64), which Chrome takes as no length at all, when every length says the same (one
/// that differs from another is refused, and left for hyper to refuse); a
/// `Transfer-Encoding` in an HTTP/1.0 answer, which Chrome does not decode.
fn dropped(line: &[u8], http10: bool, lengths_agree: bool) -> bool {
    let Some((name, value)) = field(line) else {
        return false;
    };
    if name.eq_ignore_ascii_case(b"content-length") {
        let number = |v: &[u8]| {
            let v = v.trim_ascii();
            v.iter().all(u8::is_ascii_digit)
                && std::str::from_utf8(v).is_ok_and(|v| v.parse::<i64>().is_ok())
        };
        return lengths_agree && !value.split(|&b| b == b',').all(number);
    }
    http10 && name.eq_ignore_ascii_case(b"transfer-encoding")
}

/// The status line as hyper reads it (no line end), and its code, when `line` (no
/// line end) is one browsers read: "http" in any case after at most 4 bytes of white
/// space, version 1.x, one or more spaces, three digits, then the reason (a space put
/// before it when none was, control bytes made spaces). `None` for what is no HTTP/1
/// status line.
pub(super) fn status_line(line: &[u8]) -> Option<(Vec<u8>, u16)> {
    let lead = line
        .iter()
        .take(4)
        .take_while(|b| b.is_ascii_whitespace())
        .count();
    let (name, rest) = line[lead..].split_at_checked(5)?;
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
    let rest = &rest[after..];
    if after == 0 || digits(rest) != 3 {
        return None;
    }
    let (code, reason) = rest.split_at(3);
    let code_n = std::str::from_utf8(code).ok()?.parse().ok()?;
    let version: &[u8] = if minor.iter().all(|&d| d == b'0') {
        b"HTTP/1.0 "
    } else {
        b"HTTP/1.1 "
    };
    let space: &[u8] = if reason.is_empty() || reason.starts_with(b" ") {
        b""
    } else {
        b" "
    };
    // Browsers never read the reason: a control byte there (hyper refuses one) is a
    // space (hunt U).
    let reason: Vec<u8> = reason
        .iter()
        .map(|&b| {
            if b.is_ascii_control() && b != b'\t' {
                b' '
            } else {
                b
            }
        })
        .collect();
    Some(([version, code, space, &reason].concat(), code_n))
}

/// Marks an answer whose head was mended, with the first line that changed as it came.
#[derive(Debug, Clone)]
pub(in crate::http) struct MendedLine(pub String);

/// Of an answer read through [`Mended`]: the first line of its chunks whose bare LF was
/// made CR LF, once its body was read that far.
#[derive(Debug, Clone)]
pub(in crate::http) struct MendedChunks(pub Arc<OnceLock<String>>);

/// A stream whose heads, when browsers read them, are handed on as hyper reads them
/// ([`head`]), and so is a chunked body's framing ([`Rechunk`]); writes and every byte
/// of the body's data pass through.
pub(super) struct Mended<I> {
    inner: I,
    state: State,
    /// The first line that changed, as it came, once one did.
    original: Arc<OnceLock<String>>,
    /// The first chunk line whose bare LF was mended, once one was.
    chunk_line: Arc<OnceLock<String>>,
}

enum State {
    /// Gathering a head.
    Head(Vec<u8>),
    /// Handing on what was gathered (mended or not), from `at`, then what comes next.
    Drain(Vec<u8>, usize, Next),
    /// Reading a chunked body's framing.
    Chunks(Rechunk),
    Pass,
}

/// What follows a head handed on.
enum Next {
    /// Another head, after a `1xx`'s: with what came of it already.
    Head(Vec<u8>),
    /// The body, as it comes.
    Body,
    /// A chunked body, its framing read as browsers read it.
    Chunks(Rechunk),
}

impl<I> Mended<I> {
    pub(super) fn new(inner: I) -> Mended<I> {
        Mended {
            inner,
            state: State::Head(Vec::new()),
            original: Arc::default(),
            chunk_line: Arc::default(),
        }
    }

    /// Where the first chunk line whose bare LF was mended is kept, once one was.
    pub(super) fn chunk_line(&self) -> Arc<OnceLock<String>> {
        self.chunk_line.clone()
    }

    /// Where the first line that changed is kept as it came, once one did (before
    /// hyper has the final head).
    pub(super) fn original(&self) -> Arc<OnceLock<String>> {
        self.original.clone()
    }

    /// What to hand on of `gathered`, whose head ends at `end` if it was read whole,
    /// and what follows.
    fn mend(&self, mut gathered: Vec<u8>, end: Option<usize>) -> (Vec<u8>, Next) {
        let Some(end) = end else {
            return (gathered, Next::Body);
        };
        let rest = gathered.split_off(end);
        let Some(mend) = head(&gathered) else {
            gathered.extend_from_slice(&rest);
            return (gathered, Next::Body);
        };
        if let Some(line) = mend.changed {
            let _ = self.original.set(line);
            gathered = mend.head;
        }
        // Another head follows an informational one (101 switches protocols: none).
        if (100..200).contains(&mend.code) && mend.code != 101 {
            return (gathered, Next::Head(rest));
        }
        if mend.chunked {
            let mut chunks = Rechunk::new();
            chunks.feed(&rest, &mut gathered);
            note(&self.chunk_line, &chunks);
            return (gathered, Next::Chunks(chunks));
        }
        gathered.extend_from_slice(&rest);
        (gathered, Next::Body)
    }
}

/// Keeps in `kept` the first chunk line `chunks` mended, once it did.
fn note(kept: &OnceLock<String>, chunks: &Rechunk) {
    if kept.get().is_none() {
        if let Some(line) = chunks.mended() {
            let _ = kept.set(line.to_string());
        }
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
                State::Drain(bytes, at, next) => {
                    if *at == bytes.len() {
                        this.state = match std::mem::replace(next, Next::Body) {
                            Next::Head(start) => State::Head(start),
                            Next::Chunks(chunks) => State::Chunks(chunks),
                            Next::Body => State::Pass,
                        };
                        continue;
                    }
                    let n = (bytes.len() - *at).min(buf.remaining());
                    buf.put_slice(&bytes[*at..*at + n]);
                    *at += n;
                    return Poll::Ready(Ok(()));
                }
                State::Chunks(chunks) => {
                    let mut came = [0u8; 8192];
                    let mut read = ReadBuf::new(&mut came);
                    std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                    let closed = read.filled().is_empty();
                    let mut out = Vec::with_capacity(read.filled().len() + 16);
                    if closed {
                        chunks.finish(&mut out);
                    } else {
                        chunks.feed(read.filled(), &mut out);
                    }
                    note(&this.chunk_line, chunks);
                    if closed && out.is_empty() {
                        // The server closed: hyper sees the end as it is.
                        this.state = State::Pass;
                        return Poll::Ready(Ok(()));
                    }
                    let next = if closed || chunks.done() {
                        Next::Body
                    } else {
                        Next::Chunks(std::mem::replace(chunks, Rechunk::new()))
                    };
                    this.state = State::Drain(out, 0, next);
                }
                State::Head(gathered) => {
                    let end = head_end(gathered);
                    let mut ended = end.is_some() || gathered.len() >= MAX_HEAD;
                    if !ended {
                        let mut chunk = [0u8; 4096];
                        let room = (MAX_HEAD - gathered.len()).min(chunk.len());
                        let mut read = ReadBuf::new(&mut chunk[..room]);
                        std::task::ready!(Pin::new(&mut this.inner).poll_read(cx, &mut read))?;
                        gathered.extend_from_slice(read.filled());
                        // The server closed: what came is handed on as it came.
                        ended = read.filled().is_empty();
                    }
                    if !ended {
                        continue;
                    }
                    let gathered = std::mem::take(gathered);
                    if gathered.is_empty() {
                        // The server closed before a byte: hyper sees the end as it is.
                        this.state = State::Pass;
                        return Poll::Ready(Ok(()));
                    }
                    let (bytes, next) = this.mend(gathered, end);
                    this.state = State::Drain(bytes, 0, next);
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

    /// The status line (with its end) as mended, with a CR LF end, when it changed.
    fn mended(line: &str) -> Option<String> {
        let m = head(format!("{line}\r\n").as_bytes())?;
        m.changed?;
        let text = String::from_utf8(m.head).expect("ascii");
        Some(format!("{}\r\n", text.lines().next().unwrap_or_default()))
    }

    #[test]
    fn status_lines_browsers_forgive_are_written_as_hyper_reads_them() {
        for (came, read) in [
            ("http/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\n"),
            ("Http/1.0 200 OK\r\n", "HTTP/1.0 200 OK\r\n"),
            ("HTTP/1.1  200 OK\r\n", "HTTP/1.1 200 OK\r\n"),
            ("HTTP/1.2 200 OK\r\n", "HTTP/1.1 200 OK\r\n"),
            ("HTTP/1.00 404 Not Found\n", "HTTP/1.0 404 Not Found\r\n"),
            // Hunt Q: no space before the reason, a space before the line.
            ("HTTP/1.1 200OK\r\n", "HTTP/1.1 200 OK\r\n"),
            (" HTTP/1.1 200 OK\r\n", "HTTP/1.1 200 OK\r\n"),
            // Hunt U: control bytes in the reason, which browsers never read (a false
            // confirmed down/protocol before).
            ("HTTP/1.1 200 OK\x01\r\n", "HTTP/1.1 200 OK \r\n"),
            ("HTTP/1.1 200 \x1b[31mOK\r\n", "HTTP/1.1 200  [31mOK\r\n"),
        ] {
            assert_eq!(mended(came).as_deref(), Some(read), "{came:?}");
        }
        // What hyper reads already, and what is not HTTP/1 at all, stay as they came.
        for kept in [
            "HTTP/1.1 200 OK\r\n",
            "HTTP/1.0 200\r\n",
            "HTTP/2.0 200 OK\r\n",
            "HTTP/1.1\t200 OK\r\n",
            "HTTP/1. 200 OK\r\n",
            "HTTP/1.1 20 OK\r\n",
            "<html>hello</html>\n",
            "ICY 200 OK\r\n",
            "",
        ] {
            assert_eq!(mended(kept), None, "{kept:?}");
        }
    }

    /// Hunt Q: header lines as Chrome splits them (on runs of CR and LF), a length that
    /// is no number taken as none, an HTTP/1.0 answer's chunked taken as none; folded
    /// lines and what hyper reads already stay.
    #[test]
    fn header_lines_browsers_forgive_are_written_as_hyper_reads_them() {
        let read = |came: &str| -> (String, Option<String>) {
            let m = head(came.as_bytes()).expect("a head");
            (String::from_utf8(m.head).expect("ascii"), m.changed)
        };
        let (head, changed) = read("HTTP/1.1 200 OK\r\nA: 1\r\r\nB: 2\r\r\n\r\n");
        assert_eq!(head, "HTTP/1.1 200 OK\r\nA: 1\r\nB: 2\r\n\r\n");
        assert_eq!(changed.as_deref(), Some("A: 1"));
        let (head, _) = read("HTTP/1.1 200 OK\r\nX-A: 1\rX-B: 2\r\n\r\n");
        assert_eq!(head, "HTTP/1.1 200 OK\r\nX-A: 1\r\nX-B: 2\r\n\r\n");
        let (head, changed) = read("HTTP/1.1 200 OK\r\nContent-Length: +207\r\nA: 1\r\n\r\n");
        assert_eq!(head, "HTTP/1.1 200 OK\r\nA: 1\r\n\r\n");
        assert_eq!(changed.as_deref(), Some("Content-Length: +207"));
        let (head, _) = read("HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n");
        assert_eq!(head, "HTTP/1.0 200 OK\r\n\r\n");
        for kept in [
            "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 2, 2\r\nA: 1\r\n folded\r\n\r\n",
        ] {
            assert_eq!(read(kept), (kept.to_string(), None), "{kept:?}");
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
    async fn each_head_is_mended_however_it_arrives_and_no_body() {
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
        // Hunt Q: the final head after a `100 Continue` too.
        let answer: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nhttp/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        let want: &[u8] =
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";
        assert_eq!(through(&[answer]).await, want);
        let bytes: Vec<&[u8]> = answer.chunks(3).collect();
        assert_eq!(through(&bytes).await, want);
    }

    /// A chunked body's line ends are written as hyper reads them, however the bytes
    /// arrive (the first chunk with the head); a body that is not chunked, or chunked
    /// in an HTTP/1.0 answer (which Chrome reads to the close), goes on as it came.
    #[tokio::test]
    async fn a_chunked_bodys_bare_lfs_are_mended_and_no_other_body() {
        let answer: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\nok\n0\n\n";
        let want: &[u8] =
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n";
        assert_eq!(through(&[answer]).await, want);
        let bytes: Vec<&[u8]> = answer.chunks(5).collect();
        assert_eq!(through(&bytes).await, want);
        for kept in [
            b"HTTP/1.1 200 OK\r\nContent-Length: 7\r\n\r\n2\nok\n0\n\n".as_slice(),
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n2\nok\n0\n\n",
        ] {
            assert_eq!(through(&[kept]).await, kept);
        }
        let http10 = through(&[b"HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\nok\n"]);
        assert_eq!(http10.await, b"HTTP/1.0 200 OK\r\n\r\n2\nok\n");
    }
}
