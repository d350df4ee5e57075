//! Turning a body's bytes into text whatever its charset, so that keyword checks work
//! on GBK, GB18030, Big5 or Shift_JIS pages as they do on UTF-8 ones.
//!
//! The charset comes from, in order: a byte-order mark, the `Content-Type` header, a
//! `<meta>` tag in the first bytes of the page, then UTF-8 (lossy). GBK and GB2312 are
//! decoded as GB18030, their superset, as browsers do.

use encoding_rs::{Encoding, UTF_8};

/// How far into a page a `<meta charset>` is looked for (the HTML spec says 1024 bytes;
/// real pages put it later, so look further).
const META_SCAN_BYTES: usize = 4096;

/// Decodes `body`, returning the text and the name of the charset used.
pub(crate) fn decode(body: &[u8], content_type: Option<&str>) -> (String, &'static str) {
    if let Some((enc, bom_len)) = Encoding::for_bom(body) {
        let (text, _) = enc.decode_without_bom_handling(&body[bom_len..]);
        return (text.into_owned(), enc.name());
    }
    let enc = content_type
        .and_then(charset_from_content_type)
        .or_else(|| charset_from_meta(&body[..body.len().min(META_SCAN_BYTES)]))
        .unwrap_or_else(|| guess(body));
    let (text, _) = enc.decode_without_bom_handling(body);
    (text.into_owned(), enc.name())
}

/// [`decode`] for a body that is not needed afterwards: a UTF-8 page, the common case,
/// becomes the text without being copied.
pub(crate) fn decode_owned(body: Vec<u8>, content_type: Option<&str>) -> (String, &'static str) {
    if Encoding::for_bom(&body).is_some() {
        return decode(&body, content_type);
    }
    let declared = content_type
        .and_then(charset_from_content_type)
        .or_else(|| charset_from_meta(&body[..body.len().min(META_SCAN_BYTES)]));
    if declared.is_some_and(|e| e != UTF_8) {
        return decode(&body, content_type);
    }
    match String::from_utf8(body) {
        Ok(text) => (text, UTF_8.name()),
        Err(e) => decode(e.as_bytes(), content_type),
    }
}

/// Nothing declared a charset: UTF-8 when the bytes are UTF-8, else what a browser's
/// detector would guess (many GBK sites declare nothing).
fn guess(body: &[u8]) -> &'static Encoding {
    if std::str::from_utf8(body).is_ok() {
        return UTF_8;
    }
    let mut detector = chardetng::EncodingDetector::new();
    detector.feed(body, true);
    let enc = detector.guess(None, true);
    if enc == encoding_rs::GBK {
        encoding_rs::GB18030
    } else {
        enc
    }
}

fn label_to_encoding(label: &str) -> Option<&'static Encoding> {
    let label = label.trim().trim_matches(|c| c == '"' || c == '\'');
    let enc = Encoding::for_label(label.as_bytes())?;
    // encoding_rs already decodes GBK with the GB18030 decoder; say so in the report.
    if enc == encoding_rs::GBK {
        return Some(encoding_rs::GB18030);
    }
    Some(enc)
}

fn charset_from_content_type(ct: &str) -> Option<&'static Encoding> {
    ct.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        if k.trim().eq_ignore_ascii_case("charset") {
            label_to_encoding(v)
        } else {
            None
        }
    })
}

/// The charset the first `<meta>` naming one declares, as the HTML standard's prescan
/// reads it (Chrome's and Firefox's): a `<meta>` inside a comment is no declaration (a
/// site moved to UTF-8 keeps its old GB2312 line commented out), and one naming UTF-16
/// is read as UTF-8 (a `<meta>` was readable, so the bytes are ASCII-compatible: MS
/// Office's "Unicode" pages re-saved as UTF-8), `x-user-defined` as windows-1252.
fn charset_from_meta(head: &[u8]) -> Option<&'static Encoding> {
    let declared = declared_in_meta(head)?;
    Some(if declared == encoding_rs::X_USER_DEFINED {
        encoding_rs::WINDOWS_1252
    } else if declared == encoding_rs::UTF_16LE || declared == encoding_rs::UTF_16BE {
        UTF_8
    } else {
        // The "replacement" encoding (ISO-2022-KR, HZ-GB-2312) stays: browsers show
        // such a page as one U+FFFD (review X).
        declared
    })
}

fn declared_in_meta(head: &[u8]) -> Option<&'static Encoding> {
    // Meta tags are ASCII: search the bytes, lower-cased, whatever the charset.
    let lower = head.to_ascii_lowercase();
    let mut from = 0;
    while let Some(pos) = memchr::memmem::find(&lower[from..], b"<meta") {
        let start = from + pos;
        // A comment opening before the `<meta>`: the scan goes on after its `-->` (the
        // prescan's: the first `>` after the `<!` with `--` just before it, so `<!-->`
        // is one too).
        if let Some(open) = memchr::memmem::find(&lower[from..start], b"<!--") {
            let dashes = from + open + b"<!".len();
            from = dashes + memchr::memmem::find(&lower[dashes..], b"-->")? + b"-->".len();
            continue;
        }
        let end = memchr::memchr(b'>', &lower[start..]).map_or(lower.len(), |e| start + e);
        let tag = &lower[start..end];
        if let Some(i) = memchr::memmem::find(tag, b"charset") {
            let rest = tag[i + b"charset".len()..].trim_ascii_start();
            if let Some(rest) = rest.strip_prefix(b"=") {
                let rest = rest.trim_ascii_start();
                let rest = rest
                    .iter()
                    .position(|b| !matches!(b, b'"' | b'\''))
                    .map_or(&rest[rest.len()..], |p| &rest[p..]);
                let len = rest
                    .iter()
                    .position(|b| matches!(b, b'"' | b'\'' | b' ' | b';' | b'/' | b'>'))
                    .unwrap_or(rest.len());
                if let Some(enc) = std::str::from_utf8(&rest[..len])
                    .ok()
                    .and_then(label_to_encoding)
                {
                    return Some(enc);
                }
            }
        }
        from = end;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gbk(s: &str) -> Vec<u8> {
        encoding_rs::GBK.encode(s).0.into_owned()
    }

    #[test]
    fn header_charset_wins_over_utf8() {
        let (t, cs) = decode(&gbk("欢迎光临"), Some("text/html; charset=GBK"));
        assert_eq!(t, "欢迎光临");
        assert_eq!(cs, "gb18030");
    }

    /// Hunt Q. A site moved from GB2312 to UTF-8 keeps the old `<meta>` in a comment;
    /// the HTML standard's prescan (Chrome's, Firefox's) skips comments and reads the
    /// real one. picket took the commented one: the page read as GB18030 lost its
    /// keyword, a false `down`.
    #[test]
    fn hunt_q_a_meta_in_a_comment_is_not_read() {
        let page = "<html><head><!--<meta http-equiv=\"Content-Type\" content=\"text/html; charset=gb2312\" />--><meta charset=\"utf-8\"><title>县</title></head><body>欢迎访问</body></html>";
        let (text, charset) = decode(page.as_bytes(), Some("text/html"));
        assert_eq!(charset, "UTF-8");
        assert!(text.contains("欢迎访问"), "{text}");
        let mut gbk_page =
            b"<head><!-- <meta charset=\"utf-8\"> --><meta charset=\"gbk\"></head>".to_vec();
        gbk_page.extend(gbk("欢迎访问"));
        let (text, _) = decode(&gbk_page, Some("text/html"));
        assert!(text.contains("欢迎访问"), "{text}");
        // `<!-->` is a whole (empty) comment: the `<meta>` after it counts.
        let mut after_empty = b"<head><!--><meta charset=\"gbk\"></head>".to_vec();
        after_empty.extend(gbk("欢迎访问"));
        assert_eq!(decode(&after_empty, None).1, "gb18030");
    }

    /// Hunt Q. A `<meta>` can be read only in bytes that are ASCII-compatible, so the
    /// HTML standard reads one naming UTF-16 as UTF-8 (and `x-user-defined` as
    /// windows-1252): MS Office's "Unicode" web pages re-saved as UTF-8 say
    /// `charset=unicode`. picket decoded the page as UTF-16LE: keywords lost (a false
    /// `down`) and block pages unseen (a false `up`).
    #[test]
    fn hunt_q_a_meta_naming_utf16_is_read_as_utf8() {
        for label in ["utf-16", "unicode", "utf-16be"] {
            let page = format!(
                "<html><head><meta charset=\"{label}\"></head><body>欢迎访问</body></html>"
            );
            let (text, charset) = decode(page.as_bytes(), Some("text/html"));
            assert_eq!(charset, "UTF-8", "{label}");
            assert!(text.contains("欢迎访问"), "{label}: {text}");
        }
        let page = b"<meta charset=\"x-user-defined\"><p>caf\xe9</p>";
        let (text, charset) = decode(page, None);
        assert_eq!(
            (charset, text.contains("café")),
            ("windows-1252", true),
            "{text}"
        );
    }

    /// Review X. The HTML standard's prescan turns only a UTF-16 label into UTF-8 (and
    /// `x-user-defined` into windows-1252); a `<meta>` naming an encoding the standard
    /// maps to `replacement` (`iso-2022-kr`, `hz-gb-2312`, `iso-2022-cn`, `csiso2022kr`)
    /// stays `replacement`, and browsers decode the whole document as one U+FFFD (the
    /// standard's guard against those encodings' XSS): a blank page. a89bf04 maps the
    /// declared encoding through `output_encoding()`, which turns `replacement` into
    /// UTF-8 as well: the page is read as its bytes say, a keyword is found, and a page
    /// browsers show blank is `up`. Before a89bf04 it was decoded as `replacement`.
    #[test]
    fn review_x_a_meta_naming_a_replacement_encoding_stays_replacement() {
        for label in ["iso-2022-kr", "hz-gb-2312"] {
            let page = format!(
                "<html><head><meta charset=\"{label}\"></head><body>Welcome to the county office</body></html>"
            );
            let (text, charset) = decode(page.as_bytes(), Some("text/html"));
            assert_eq!(
                (text.as_str(), charset),
                ("\u{FFFD}", "replacement"),
                "{label}"
            );
            let (text, charset) = decode_owned(page.into_bytes(), Some("text/html"));
            assert_eq!(
                (text.as_str(), charset),
                ("\u{FFFD}", "replacement"),
                "{label}"
            );
        }
    }

    #[test]
    fn meta_charset_is_found() {
        let mut body = b"<html><head><meta charset=\"gb2312\"></head><body>".to_vec();
        body.extend(gbk("访问被拒绝"));
        assert!(decode(&body, Some("text/html")).0.contains("访问被拒绝"));
        let mut body =
            b"<meta http-equiv=\"Content-Type\" content=\"text/html; charset=big5\">".to_vec();
        body.extend(encoding_rs::BIG5.encode("歡迎").0.into_owned());
        let (t, cs) = decode(&body, None);
        assert!(t.contains("歡迎"));
        assert_eq!(cs, "Big5");
    }

    #[test]
    fn bom_wins() {
        let mut body = vec![0xEF, 0xBB, 0xBF];
        body.extend("欢迎".as_bytes());
        assert_eq!(
            decode(&body, Some("text/html; charset=iso-8859-1")).0,
            "欢迎"
        );
        let utf16: Vec<u8> = [0xFF, 0xFE, 0x22, 0x6B].to_vec(); // BOM + "欢" (U+6B22) LE
        assert_eq!(decode(&utf16, None).0, "欢");
    }

    #[test]
    fn undeclared_text_is_utf8_when_it_is_else_guessed() {
        let (t, cs) = decode("hello wörld".as_bytes(), None);
        assert_eq!((t.as_str(), cs), ("hello wörld", "UTF-8"));
        // Not UTF-8, nothing declared: a browser would read Latin bytes as windows-1252.
        let (t, cs) = decode(b"hello \xe9t\xe9 world", None);
        assert_eq!(cs, "windows-1252");
        assert_eq!(t, "hello été world");
    }

    #[test]
    fn undeclared_gbk_is_detected() {
        let body =
            gbk("<html><body>欢迎访问本县人民政府网站，这里发布政务信息和办事指南。</body></html>");
        let (t, cs) = decode(&body, Some("text/html"));
        assert!(t.contains("欢迎"), "{t}");
        assert_eq!(cs, "gb18030");
    }

    #[test]
    fn the_owned_decoder_agrees_with_the_borrowing_one() {
        let mut meta_gbk = b"<meta charset=\"gbk\">".to_vec();
        meta_gbk.extend(gbk("欢迎"));
        let mut bom = vec![0xEF, 0xBB, 0xBF];
        bom.extend("欢迎".as_bytes());
        let cases: Vec<(Vec<u8>, Option<&str>)> = vec![
            ("plain <b>UTF-8</b> wörld".into(), None),
            ("declared UTF-8".into(), Some("text/html; charset=utf-8")),
            (
                b"bad \xff UTF-8 declared".to_vec(),
                Some("text/html; charset=utf-8"),
            ),
            (b"hello \xe9t\xe9".to_vec(), None),
            (gbk("欢迎光临本站"), Some("text/html; charset=GBK")),
            (
                gbk("<html><body>欢迎访问本县人民政府网站</body></html>"),
                None,
            ),
            (meta_gbk, Some("text/html")),
            (bom, Some("text/html; charset=iso-8859-1")),
            (vec![0xFF, 0xFE, 0x22, 0x6B], None),
            (Vec::new(), None),
        ];
        for (body, ct) in cases {
            assert_eq!(
                decode_owned(body.clone(), ct),
                decode(&body, ct),
                "{body:?} {ct:?}"
            );
        }
    }

    #[test]
    fn gb18030_four_byte_sequences_decode() {
        let s = "𠀀欢迎"; // outside the BMP, four bytes in GB18030
        let bytes = encoding_rs::GB18030.encode(s).0.into_owned();
        assert_eq!(decode(&bytes, Some("text/html; charset=gb18030")).0, s);
    }
}
