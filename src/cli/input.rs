//! Lines of the lists a person gives `check` and `enqueue`: one URL or job per line,
//! blank lines and `#` comments skipped, read as the person wrote them whatever tool
//! saved the file: UTF-8 with or without a byte order mark, CRLF or LF line ends, and
//! the UTF-16 that Windows PowerShell 5's `>` and `Out-File` write by default.

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
