//! Lines of the lists a person gives `check` and `enqueue`: one URL or job per line,
//! blank lines and `#` comments skipped, read as the person wrote them whatever tool
//! saved the file.

/// The text of an input line, or `None` for a blank line or a comment. Surrounding
/// white space (a CRLF's CR included) is not part of it, nor is a byte order mark:
/// Notepad, Excel's "CSV UTF-8" and PowerShell 5's `Out-File` start UTF-8 files with
/// one, and `cat` of such files puts one at the start of a line further on. U+FEFF is
/// not white space to `str::trim`, and a URL behind it is no URL.
pub(crate) fn text(line: &str) -> Option<&str> {
    let t = line.trim().trim_start_matches('\u{feff}').trim_start();
    (!t.is_empty() && !t.starts_with('#')).then_some(t)
}

#[cfg(test)]
mod tests {
    use super::text;

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
}
