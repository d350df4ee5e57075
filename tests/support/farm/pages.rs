//! What a page shows a person: blank pages that answer 200, and the pages that must
//! stay up beside them because something on them shows (a script's app, an image).

use super::*;

// ---------------------------------------------------------------------------
// Blank pages: a 200 above min_body_bytes on which a person sees nothing

pub(super) async fn blank_pages(b: &mut Builder) {
    // A WordPress white screen: PHP died (display_errors off) after the theme's head.
    let white_screen = "<!DOCTYPE html>\n<html lang=\"en-US\">\n<head>\n<meta charset=\"UTF-8\">\n\
        <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
        <link rel=\"profile\" href=\"https://gmpg.org/xfn/11\">\n\
        <title>County Library &#8211; Opening hours</title>\n";
    let nothing: [(&'static str, Vec<u8>, &'static str); 5] = [
        (
            "blank-whitespace",
            " \r\n\t".repeat(140).into_bytes(),
            "200 with 560 bytes of white space: the browser shows a blank page",
        ),
        (
            "blank-empty-html",
            b"<!DOCTYPE html>\n<html>\n<head><title></title></head>\n<body>\n</body>\n</html>\n"
                .to_vec(),
            "200 with an empty document (no title, an empty body): a blank page",
        ),
        (
            "blank-white-screen",
            white_screen.as_bytes().to_vec(),
            "200 with a WordPress white screen: the head and its title, then nothing",
        ),
        (
            "blank-bom-crlf",
            [&b"\xef\xbb\xbf"[..], &b"\r\n".repeat(60)].concat(),
            "200 with a UTF-8 byte-order mark and line ends: a blank page",
        ),
        (
            "blank-nul-bytes",
            vec![0u8; 4096],
            "200 with 4 KB of NUL bytes: a blank page",
        ),
    ];
    for (name, body, says) in nothing {
        b.http(
            name,
            Router::new().route(
                "/",
                any(move || {
                    let body = body.clone();
                    async move { html(StatusCode::OK, body) }
                }),
            ),
            None,
            truth("down", Some("body_too_small"), says),
            said("down", "body_too_small"),
            vec![Fact::DetailContains("shows nothing")],
        )
        .await;
    }

    // Pages with no text that still show something: an app its script draws, an image.
    let something = [
        (
            "spa-shell",
            "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title></title></head><body>\
             <div id=\"root\"></div><script src=\"/static/js/main.4f2a.js\"></script></body></html>",
            "200 with an empty shell whose script draws the app: browsers show it",
        ),
        (
            "image-only",
            "<!DOCTYPE html><html><head><title></title></head><body>\
             <img src=\"/coming-soon.jpg\" width=\"100%\"></body></html>",
            "200 with a page that is one image (a \"coming soon\" picture): browsers show it",
        ),
    ];
    for (name, page, says) in something {
        b.http(
            name,
            Router::new().route("/", any(move || async move { html(StatusCode::OK, page) })),
            None,
            truth("up", Some("ok"), says),
            said("up", "ok"),
            vec![],
        )
        .await;
    }
}
