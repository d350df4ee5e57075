//! Pages in GBK, GB18030 and Big5, with the charset declared in the header, only in a
//! `<meta>`, or nowhere.

use super::*;

// ---------------------------------------------------------------------------
// Charsets: GBK, GB18030 and Big5 pages, declared in the header, only in a <meta>,
// by a UTF-8 byte-order mark, or not at all

pub(super) struct CharsetCase {
    name_yes: &'static str,
    name_no: &'static str,
    encoding: &'static encoding_rs::Encoding,
    /// `Content-Type` sent.
    content_type: &'static str,
    /// Put in the <head>.
    meta: &'static str,
    traditional: bool,
    bom: bool,
    /// http.charset picket reports.
    reported: &'static str,
    /// Truth and expectation with the keyword present.
    yes: (Truth, Said),
}

pub(super) fn charset_page(case: &CharsetCase, with_keyword: bool) -> Vec<u8> {
    let (title, main) = match (case.traditional, with_keyword) {
        (false, true) => (
            "县政府门户网站",
            "<h1>欢迎访问县政府门户网站</h1><p>办事指南、政务公开、便民服务、互动交流。</p>",
        ),
        (false, false) => (
            "县政府门户网站",
            "<h1>系统升级维护中</h1><p>本站正在进行系统升级，请稍后再试。给您带来不便，敬请谅解。</p>",
        ),
        (true, true) => (
            "縣政府入口網站",
            "<h1>歡迎光臨縣政府入口網站</h1><p>便民服務、政府資訊公開、線上申辦。</p>",
        ),
        (true, false) => (
            "縣政府入口網站",
            "<h1>系統維護中</h1><p>本網站正在進行系統升級，請稍後再試。造成不便，敬請見諒。</p>",
        ),
    };
    // GB18030 pages carry a character outside GBK and the BMP (four bytes in GB18030).
    let extra = if case.encoding == encoding_rs::GB18030 {
        "<p>吉祥如意 𠮷</p>"
    } else {
        ""
    };
    let text = format!(
        "<!DOCTYPE html><html><head>{}<title>{title}</title></head><body>{main}{extra}</body></html>",
        case.meta
    );
    let mut bytes = Vec::new();
    if case.bom {
        bytes.extend_from_slice(&[0xEF, 0xBB, 0xBF]);
    }
    let (encoded, _, unmappable) = case.encoding.encode(&text);
    assert!(!unmappable, "{}: page not encodable", case.name_yes);
    bytes.extend_from_slice(&encoded);
    bytes
}

pub(super) async fn charsets(b: &mut Builder) {
    use encoding_rs::{BIG5, GB18030, GBK, UTF_8};
    let ok = |says| (truth("up", Some("ok"), says), said("up", "ok"));
    let cases = [
        CharsetCase {
            name_yes: "gbk-header",
            name_no: "gbk-header-no-keyword",
            encoding: GBK,
            content_type: "text/html; charset=GBK",
            meta: "",
            traditional: false,
            bom: false,
            reported: "gb18030",
            yes: ok("GBK page, charset in Content-Type, shows 欢迎"),
        },
        CharsetCase {
            name_yes: "gbk-meta",
            name_no: "gbk-meta-no-keyword",
            encoding: GBK,
            content_type: "text/html",
            meta: "<meta charset=\"gb2312\">",
            traditional: false,
            bom: false,
            reported: "gb18030",
            yes: ok("GBK page, charset only in <meta charset=gb2312>, shows 欢迎"),
        },
        CharsetCase {
            name_yes: "gb18030-header",
            name_no: "gb18030-header-no-keyword",
            encoding: GB18030,
            content_type: "text/html; charset=GB18030",
            meta: "",
            traditional: false,
            bom: false,
            reported: "gb18030",
            yes: ok(
                "GB18030 page (with a four-byte character), charset in Content-Type, shows 欢迎",
            ),
        },
        CharsetCase {
            name_yes: "gb18030-meta",
            name_no: "gb18030-meta-no-keyword",
            encoding: GB18030,
            content_type: "text/html",
            meta: "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=gb18030\">",
            traditional: false,
            bom: false,
            reported: "gb18030",
            yes: ok("GB18030 page, charset only in <meta http-equiv>, shows 欢迎"),
        },
        CharsetCase {
            name_yes: "big5-header",
            name_no: "big5-header-no-keyword",
            encoding: BIG5,
            content_type: "text/html; charset=big5",
            meta: "",
            traditional: true,
            bom: false,
            reported: "Big5",
            yes: ok("Big5 page, charset in Content-Type, shows 歡迎"),
        },
        CharsetCase {
            name_yes: "big5-meta",
            name_no: "big5-meta-no-keyword",
            encoding: BIG5,
            content_type: "text/html",
            meta: "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=big5\">",
            traditional: true,
            bom: false,
            reported: "Big5",
            yes: ok("Big5 page, charset only in <meta http-equiv>, shows 歡迎"),
        },
        CharsetCase {
            name_yes: "utf8-bom",
            name_no: "utf8-bom-no-keyword",
            encoding: UTF_8,
            // The header lies; the byte-order mark wins, in browsers as in the spec.
            content_type: "text/html; charset=GBK",
            meta: "",
            traditional: false,
            bom: true,
            reported: "UTF-8",
            yes: ok("UTF-8 page with a byte-order mark, header wrongly says GBK; shows 欢迎"),
        },
        CharsetCase {
            name_yes: "gbk-undeclared",
            name_no: "gbk-undeclared-no-keyword",
            encoding: GBK,
            content_type: "text/html",
            meta: "",
            traditional: false,
            bom: false,
            reported: "gb18030",
            // Browsers guess GBK from the bytes (Chrome's detector, Firefox's chardetng)
            // and show 欢迎; so does picket (chardetng when nothing declares a charset).
            yes: (
                truth(
                    "up",
                    Some("ok"),
                    "GBK page with no charset anywhere: browsers detect GBK and show 欢迎",
                ),
                said("up", "ok"),
            ),
        },
        // Hunt Q: a site moved from GB2312 to UTF-8 keeps its old <meta> in a comment;
        // browsers' prescan skips comments and reads the real one.
        CharsetCase {
            name_yes: "utf8-meta-commented-gb2312",
            name_no: "utf8-meta-commented-gb2312-no-keyword",
            encoding: UTF_8,
            content_type: "text/html",
            meta: "<!--<meta http-equiv=\"Content-Type\" content=\"text/html; charset=gb2312\" />--><meta charset=\"utf-8\">",
            traditional: false,
            bom: false,
            reported: "UTF-8",
            yes: ok("UTF-8 page whose old GB2312 <meta> is commented out: browsers read the real <meta> and show 欢迎"),
        },
        // Hunt Q: MS Office's "Unicode" web page re-saved as UTF-8 still says
        // charset=unicode; a <meta> naming UTF-16 is read as UTF-8 (HTML standard).
        CharsetCase {
            name_yes: "utf8-meta-says-unicode",
            name_no: "utf8-meta-says-unicode-no-keyword",
            encoding: UTF_8,
            content_type: "text/html",
            meta: "<meta http-equiv=\"Content-Type\" content=\"text/html; charset=unicode\">",
            traditional: false,
            bom: false,
            reported: "UTF-8",
            yes: ok("UTF-8 page whose <meta> says charset=unicode: browsers read a <meta> naming UTF-16 as UTF-8 and show 欢迎"),
        },
    ];
    for case in cases {
        let keyword = if case.traditional { "歡迎" } else { "欢迎" };
        for with_keyword in [true, false] {
            let body = Bytes::from(charset_page(&case, with_keyword));
            let ct = case.content_type;
            let router = Router::new().route(
                "/",
                any(move || async move { ([(header::CONTENT_TYPE, ct)], body).into_response() }),
            );
            let (name, truth_, said_) = if with_keyword {
                (case.name_yes, case.yes.0, case.yes.1)
            } else {
                (
                    case.name_no,
                    truth(
                        "down",
                        Some("body_mismatch"),
                        if case.traditional {
                            "the same site's maintenance page: no 歡迎"
                        } else {
                            "the same site's maintenance page: no 欢迎"
                        },
                    ),
                    said("down", "body_mismatch"),
                )
            };
            b.http(
                name,
                router,
                Some(json!({"body_contains": keyword})),
                truth_,
                said_,
                vec![Fact::Charset(case.reported)],
            )
            .await;
        }
    }
}
