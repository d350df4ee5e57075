//! Lines of the lists a person gives `check` and `enqueue`: one URL or job per line,
//! blank lines and `#` comments skipped, read as the person wrote them whatever tool
//! saved the file: UTF-8 with or without a byte order mark, LF, CRLF or lone CR line
//! ends (Excel for Mac's "CSV (Macintosh)"), and the UTF-16 that Windows PowerShell 5's
//! `>` and `Out-File` write by default.

use std::io::{BufRead, BufReader, Cursor, Read};

use encoding_rs::Encoding;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

/// The text of an input line, or `None` for a blank line or a comment. Surrounding
/// white space (a CRLF's CR included) is not part of it, nor is a byte order mark:
/// Notepad, Excel's "CSV UTF-8" and PowerShell's `Out-File -Encoding utf8` (5) or
/// `utf8BOM` (7) start UTF-8 files with one, and `cat` of such files puts one at the
/// start of a line further on. U+FEFF is
/// not white space to `str::trim`, and a URL behind it is no URL.
pub(crate) fn text(line: &str) -> Option<&str> {
    let t = line.trim().trim_start_matches('\u{feff}').trim_start();
    (!t.is_empty() && !t.starts_with('#')).then_some(t)
}

/// Whether `line` is a `#` comment, whatever its bytes (a comment in Latin-1 is still a
/// comment, not a line that is no UTF-8).
pub(crate) fn is_comment(line: &[u8]) -> bool {
    let start = line.strip_prefix(b"\xef\xbb\xbf").unwrap_or(line);
    start.trim_ascii_start().starts_with(b"#")
}

/// Where the lines of an input end: at an LF, a CRLF or a lone CR. Read as one line, two
/// CR-ended URLs `http://a/\rhttp://b/` are `http://a/http://b/` to the URL parser (it
/// drops a CR): a page nobody asked for.
#[derive(Debug, Default)]
pub(crate) struct LineEnds {
    /// The last line ended with a CR: an LF first thing is the rest of that line's end
    /// (waiting for the next byte instead would hold a line typed into a pipe).
    after_cr: bool,
}

/// The part of a buffer that belongs to the line being read.
struct Piece {
    /// An LF finishing the previous line's CRLF.
    skip: usize,
    /// The line's bytes after `skip`, its end included when it has one.
    len: usize,
    /// Whether the line's end is among them.
    ended: bool,
}

impl LineEnds {
    fn piece(&mut self, available: &[u8]) -> Piece {
        let skip =
            usize::from(std::mem::take(&mut self.after_cr) && available.first() == Some(&b'\n'));
        let rest = &available[skip..];
        match memchr::memchr2(b'\n', b'\r', rest) {
            // A CRLF whose LF is here is read whole: left behind, the LF would make a
            // pipe's reader think more was ready and wait for the next line.
            Some(i) if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') => Piece {
                skip,
                len: i + 2,
                ended: true,
            },
            Some(i) => {
                // A CR at the buffer's end: its LF, if any, comes with the next read.
                self.after_cr = rest[i] == b'\r';
                Piece {
                    skip,
                    len: i + 1,
                    ended: true,
                }
            }
            None => Piece {
                skip,
                len: rest.len(),
                ended: false,
            },
        }
    }

    /// Appends the next line of `reader` to `line`, its end included, keeping at most
    /// `cap` bytes of it: returns the bytes the line had (0 at the input's end) and
    /// whether it was kept whole. The rest of a longer line is read past, so an input
    /// without line ends is never held in memory.
    pub(crate) fn read(
        &mut self,
        reader: &mut impl BufRead,
        line: &mut Vec<u8>,
        cap: usize,
    ) -> std::io::Result<(usize, bool)> {
        let mut n = 0;
        loop {
            let (used, done) = self.take(reader.fill_buf()?, line, cap, &mut n);
            reader.consume(used);
            if done {
                return Ok((n, n <= cap));
            }
        }
    }

    /// [`LineEnds::read`], for an asynchronous reader.
    pub(crate) async fn read_async(
        &mut self,
        reader: &mut (impl AsyncBufRead + Unpin + ?Sized),
        line: &mut Vec<u8>,
        cap: usize,
    ) -> std::io::Result<(usize, bool)> {
        let mut n = 0;
        loop {
            let (used, done) = self.take(reader.fill_buf().await?, line, cap, &mut n);
            reader.consume(used);
            if done {
                return Ok((n, n <= cap));
            }
        }
    }

    /// Takes what of `available` (the reader's buffer; empty at the input's end) belongs
    /// to the line, `n` bytes so far: the bytes used, and whether the line is done.
    fn take(
        &mut self,
        available: &[u8],
        line: &mut Vec<u8>,
        cap: usize,
        n: &mut usize,
    ) -> (usize, bool) {
        if available.is_empty() {
            return (0, true);
        }
        let p = self.piece(available);
        let bytes = &available[p.skip..p.skip + p.len];
        line.extend_from_slice(&bytes[..bytes.len().min(cap.saturating_sub(*n))]);
        *n += p.len;
        (p.skip + p.len, p.ended)
    }

    /// The line ends in `buffer`, the next part of an input (for a count of its lines).
    pub(crate) fn count(&mut self, mut buffer: &[u8]) -> u64 {
        let mut ends = 0;
        while !buffer.is_empty() {
            let p = self.piece(buffer);
            ends += u64::from(p.ended);
            buffer = &buffer[p.skip + p.len..];
        }
        ends
    }
}

/// The UTF-16 encoding whose byte order mark `head` starts with, if any.
fn utf16(head: &[u8]) -> Option<&'static Encoding> {
    Encoding::for_bom(head)
        .map(|(encoding, _)| encoding)
        .filter(|e| *e != encoding_rs::UTF_8)
}

/// `bytes` (UTF-16 with its byte order mark) as UTF-8, the mark left out; a unit that
/// is no character becomes U+FFFD, so that line is reported as a bad job, not the file.
fn transcoded(encoding: &'static Encoding, bytes: &[u8]) -> Vec<u8> {
    let (text, _, _) = encoding.decode(bytes);
    text.into_owned().into_bytes()
}

/// `reader` as UTF-8: a UTF-16 input is read whole and transcoded (a list of URLs,
/// small beside the memory of the run); any other is read as it comes.
pub(crate) fn utf8(
    mut reader: BufReader<Box<dyn Read + Send>>,
) -> std::io::Result<BufReader<Box<dyn Read + Send>>> {
    let Some(encoding) = utf16(reader.fill_buf()?) else {
        return Ok(reader);
    };
    let mut all = Vec::new();
    reader.read_to_end(&mut all)?;
    Ok(BufReader::new(Box::new(Cursor::new(transcoded(
        encoding, &all,
    )))))
}

/// [`utf8`], for an asynchronous reader.
pub(crate) async fn utf8_async(
    mut reader: Box<dyn AsyncBufRead + Unpin + Send>,
) -> std::io::Result<Box<dyn AsyncBufRead + Unpin + Send>> {
    let Some(encoding) = utf16(reader.fill_buf().await?) else {
        return Ok(reader);
    };
    let mut all = Vec::new();
    reader.read_to_end(&mut all).await?;
    Ok(Box::new(Cursor::new(transcoded(encoding, &all))))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every line and how it was kept, read through a buffer of `size` bytes (a CRLF
    /// split between two reads is still one line end).
    fn lines(input: &[u8], size: usize, cap: usize) -> Vec<(String, bool)> {
        let mut reader = BufReader::with_capacity(size, input);
        let mut ends = LineEnds::default();
        let mut all = Vec::new();
        loop {
            let mut line = Vec::new();
            match ends.read(&mut reader, &mut line, cap).expect("read") {
                (0, _) => return all,
                (_, whole) => all.push((String::from_utf8(line).expect("utf-8"), whole)),
            }
        }
    }

    #[test]
    fn lines_end_at_lf_crlf_or_a_lone_cr() {
        let input = b"a\nb\r\nc\rd\r\re";
        for size in 1..=input.len() {
            let got = lines(input, size, 100);
            let got: Vec<&str> = got.iter().map(|(l, _)| l.as_str()).collect();
            // A CRLF's LF is the line's, unless a read ended between the two; either
            // way it starts no line of its own.
            let got: Vec<&str> = got
                .iter()
                .map(|l| l.trim_end_matches(['\r', '\n']))
                .collect();
            assert_eq!(got, ["a", "b", "c", "d", "", "e"], "buffer {size}");
        }
        assert_eq!(LineEnds::default().count(input), 5);
        let mut split = LineEnds::default();
        assert_eq!(split.count(b"a\r") + split.count(b"\nb\n"), 2);
    }

    /// A CRLF line from a pipe was held back until the next line came: its LF stayed in
    /// the buffer, so `check` did not see that nothing more was ready and waited.
    #[test]
    fn a_crlf_line_leaves_nothing_of_its_end_behind() {
        let mut reader = BufReader::new(&b"a\r\nb"[..]);
        let mut ends = LineEnds::default();
        let mut line = Vec::new();
        ends.read(&mut reader, &mut line, 100).expect("read");
        assert_eq!(reader.buffer(), b"b");
    }

    #[test]
    fn a_long_line_is_kept_to_the_cap_and_read_past() {
        let got = lines(b"0123456789\r\nab\n", 4, 6);
        assert_eq!(
            got,
            [("012345".to_string(), false), ("ab\n".to_string(), true)]
        );
    }

    #[test]
    fn a_line_is_read_as_written_whatever_saved_it() {
        assert_eq!(text("http://a.test/\n"), Some("http://a.test/"));
        assert_eq!(text("\u{feff}http://a.test/\r\n"), Some("http://a.test/"));
        assert_eq!(
            text("  {\"url\": \"http://a.test/\"}\r\n"),
            Some("{\"url\": \"http://a.test/\"}")
        );
        assert_eq!(text("\u{feff}# sites of the county\r\n"), None);
        assert_eq!(text("\u{feff}\r\n"), None);
        assert_eq!(text("\t\r\n"), None);
        // Only at the start: inside a URL it is the URL's own (and invalid there).
        assert_eq!(
            text("http://a.test/\u{feff}x"),
            Some("http://a.test/\u{feff}x")
        );
    }

    #[test]
    fn a_utf16_list_is_read_as_utf8_and_utf8_as_it_comes() {
        let list = "\u{feff}http://县.test/\r\nhttp://b.test/\r\n";
        for bytes in [
            list.encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<u8>>(),
            list.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        ] {
            let mut out = String::new();
            utf8(BufReader::new(Box::new(Cursor::new(bytes))))
                .expect("read")
                .read_to_string(&mut out)
                .expect("UTF-8");
            assert_eq!(out, "http://县.test/\r\nhttp://b.test/\r\n");
        }
        let mut out = String::new();
        utf8(BufReader::new(Box::new(Cursor::new(
            list.as_bytes().to_vec(),
        ))))
        .expect("read")
        .read_to_string(&mut out)
        .expect("UTF-8");
        assert_eq!(
            out, list,
            "UTF-8 passes as it came (its mark is `text`'s to drop)"
        );
    }
}
