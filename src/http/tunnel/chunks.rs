//! A chunked body's framing as browsers read it. hyper takes only CR LF after a chunk's
//! size, after its data and after each trailer line; Chrome's chunked decoder looks for
//! each line's LF and drops one CR before it, and curl skips the CR. An embedded
//! server's own chunking or a CGI gateway writing bare LFs works in every browser, and
//! picket said it was down. [`Rechunk`] rewrites each such line end as CR LF and hands
//! every byte of the chunks' data on as it came.
//!
//! Only line ends change: a size that is no hex number, or data longer than its size,
//! is handed on as it came, for hyper to refuse as browsers do.

/// The longest chunk-size or trailer line looked at; a longer one is handed on as it
/// came.
const MAX_LINE: usize = 16 * 1024;

/// Where the framing stands.
#[derive(Debug, PartialEq, Eq)]
enum At {
    /// In a line of this kind, gathered so far in `line`.
    Line(Line),
    /// In a chunk's data, with this many bytes of it still to come.
    Data(u64),
    /// Past the framing (its end, or what is not read as browsers read it): bytes go
    /// on as they come.
    Done,
}

#[derive(Debug, PartialEq, Eq, Clone, Copy)]
enum Line {
    /// A chunk's size, with any extensions.
    Size,
    /// The empty line after a chunk's data.
    DataEnd,
    /// A trailer line, or the empty line that ends the body.
    Trailer,
}

/// A chunked body's framing, rewritten as it passes (module docs).
#[derive(Debug)]
pub(super) struct Rechunk {
    at: At,
    line: Vec<u8>,
    /// The first line whose bare LF was made CR LF, as it came (its LF taken).
    mended: Option<String>,
}

impl Rechunk {
    pub(super) fn new() -> Rechunk {
        Rechunk {
            at: At::Line(Line::Size),
            line: Vec::new(),
            mended: None,
        }
    }

    /// Whether the framing is behind: what comes now goes on as it came.
    pub(super) fn done(&self) -> bool {
        self.at == At::Done
    }

    /// The first line whose bare LF was made CR LF, once one was.
    pub(super) fn mended(&self) -> Option<&str> {
        self.mended.as_deref()
    }

    /// Appends to `out` what of `input` hyper is to read.
    pub(super) fn feed(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        while !input.is_empty() {
            match self.at {
                At::Done => {
                    out.extend_from_slice(input);
                    return;
                }
                At::Data(left) => {
                    let n = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    out.extend_from_slice(&input[..n]);
                    input = &input[n..];
                    self.at = match left - n as u64 {
                        0 => At::Line(Line::DataEnd),
                        left => At::Data(left),
                    };
                }
                At::Line(kind) => match memchr::memchr(b'\n', input) {
                    None => {
                        self.line.extend_from_slice(input);
                        if self.line.len() > MAX_LINE {
                            self.give_up(out);
                        }
                        return;
                    }
                    Some(lf) => {
                        self.line.extend_from_slice(&input[..lf]);
                        input = &input[lf + 1..];
                        self.end_line(kind, out);
                    }
                },
            }
        }
    }

    /// At the server's close: a line begun and never ended goes on as it came.
    pub(super) fn finish(&mut self, out: &mut Vec<u8>) {
        if matches!(self.at, At::Line(_)) {
            self.give_up(out);
        }
    }

    /// A whole line of `kind` (in `self.line`, its LF taken) is handed on ended by CR LF,
    /// and the framing moves past it; a line that is not framing browsers read goes on
    /// as it came, and so does all that follows.
    fn end_line(&mut self, kind: Line, out: &mut Vec<u8>) {
        let came = std::mem::take(&mut self.line);
        let line = came.strip_suffix(b"\r").unwrap_or(&came);
        let next = match kind {
            Line::Size => match size(line) {
                Some(0) => Some(At::Line(Line::Trailer)),
                Some(n) => Some(At::Data(n)),
                None => None,
            },
            Line::DataEnd if line.is_empty() => Some(At::Line(Line::Size)),
            Line::DataEnd => None,
            Line::Trailer if line.is_empty() => Some(At::Done),
            Line::Trailer => Some(At::Line(Line::Trailer)),
        };
        let Some(next) = next else {
            out.extend_from_slice(&came);
            out.push(b'\n');
            self.at = At::Done;
            return;
        };
        if line.len() == came.len() && self.mended.is_none() {
            self.mended = Some(String::from_utf8_lossy(line).into_owned());
        }
        out.extend_from_slice(line);
        out.extend_from_slice(b"\r\n");
        self.at = next;
    }

    /// Hands on the line gathered as it came, and everything after it.
    fn give_up(&mut self, out: &mut Vec<u8>) {
        out.append(&mut self.line);
        self.at = At::Done;
    }
}

/// A chunk-size line's size: its leading hex digits, when there are some and they fit.
fn size(line: &[u8]) -> Option<u64> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 15 {
        return None;
    }
    u64::from_str_radix(std::str::from_utf8(&line[..digits]).ok()?, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `body` fed in pieces of `step` bytes, as hyper would read it.
    fn rechunked(body: &str, step: usize) -> String {
        mended(body, step).0
    }

    /// [`rechunked`], and the first line whose bare LF was mended.
    fn mended(body: &str, step: usize) -> (String, Option<String>) {
        let mut r = Rechunk::new();
        let mut out = Vec::new();
        for piece in body.as_bytes().chunks(step) {
            r.feed(piece, &mut out);
        }
        r.finish(&mut out);
        let mended = r.mended().map(str::to_string);
        (String::from_utf8(out).expect("ascii"), mended)
    }

    #[test]
    fn line_ends_browsers_forgive_are_written_as_hyper_reads_them() {
        let whole = "5\r\nhello\r\n6;x=1\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n";
        for step in [1, 2, 3, 7, 100] {
            for came in [
                "5\nhello\n6;x=1\n world\n0\nX-Trailer: 1\n\n",
                "5\r\nhello\n6;x=1\n world\r\n0\r\nX-Trailer: 1\r\n\n",
            ] {
                assert_eq!(rechunked(came, step), whole, "{came:?} by {step}");
            }
            assert_eq!(mended(whole, step), (whole.to_string(), None));
        }
        let first = |came: &str| mended(came, 3).1;
        assert_eq!(first("5\r\nhello\n0\r\n\r\n").as_deref(), Some(""));
        assert_eq!(first("a;x=1\nhelloworld\r\n").as_deref(), Some("a;x=1"));
        assert_eq!(first("zz\nhello"), None, "handed on as it came");
    }

    /// Data is never read as a line: a chunk holding LFs goes on as it came.
    #[test]
    fn data_with_line_ends_in_it_goes_on_as_it_came() {
        let came = "6\n\n\r\n\n\r\n\n0\n\n";
        assert_eq!(rechunked(came, 1), "6\r\n\n\r\n\n\r\n\r\n0\r\n\r\n");
    }

    /// What is not framing browsers read is left for hyper to refuse: a size that is no
    /// number, data longer than its size, a line that never ends; and what follows the
    /// body's end is not touched.
    #[test]
    fn what_browsers_refuse_goes_on_as_it_came() {
        for came in [
            "zz\nhello\n0\n\n",
            "3\nhello\n0\n\n",
            "5\nhello\n0\n\nHTTP/1.1 200 OK\n",
            "5\nhel",
            "12345",
        ] {
            let out = rechunked(came, 2);
            let kept_from = match came {
                "zz\nhello\n0\n\n" => "hello\n0\n\n",
                "3\nhello\n0\n\n" => "lo\n0\n\n",
                "5\nhello\n0\n\nHTTP/1.1 200 OK\n" => "HTTP/1.1 200 OK\n",
                "5\nhel" => "hel",
                _ => "12345",
            };
            assert!(out.ends_with(kept_from), "{came:?} became {out:?}");
        }
        let long = format!("{}\n", "1".repeat(MAX_LINE + 10));
        assert_eq!(rechunked(&long, 4096), long, "a line too long to look at");
    }
}
