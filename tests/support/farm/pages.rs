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

// ---------------------------------------------------------------------------
// Bot walls that answer a success, or a status of their own: a refusal of us

/// Jiasule's (加速乐) cookie wall: the script builds the cookie piece by piece, then
/// loads the page again.
const JIASULE_WALL: &str = "<script>document.cookie=('_')+('_')+('j')+('s')+('l')+('_')+\
    ('c')+('l')+('e')+('a')+('r')+('a')+('n')+('c')+('e')+('_')+('s')+('=')+\
    (+!+[]+'6'+(2+5)+'4')+'.'+(3+4)+'|0|'+(+[]+'X')+'gZp'+';max-age=3600;path=/';\
    location.href=location.pathname+location.search</script>";

/// Cloudflare's own page when the site's server refuses it: a real outage.
const CLOUDFLARE_521: &str = "<!DOCTYPE html>\n<!--[if lt IE 7]> <html class=\"no-js ie6 oldie\" \
    lang=\"en-US\"> <![endif]-->\n<!--[if gt IE 8]><!--> <html class=\"no-js\" lang=\"en-US\"> \
    <!--<![endif]-->\n<head>\n<title>county.example | 521: Web server is down</title>\n\
    <meta charset=\"UTF-8\" />\n<meta name=\"robots\" content=\"noindex, nofollow\" />\n\
    <link rel=\"stylesheet\" id=\"cf_styles-css\" href=\"/cdn-cgi/styles/main.css\" />\n\
    </head>\n<body>\n<div id=\"cf-wrapper\">\n<div id=\"cf-error-details\" class=\"p-0\">\n\
    <header class=\"mx-auto pt-10\"><h1><span class=\"inline-block\">Web server is down</span>\n\
    <span class=\"code-label\">Error code 521</span></h1>\n<div>Visit <a \
    href=\"https://www.cloudflare.com/5xx-error-landing?utm_source=errorcode_521\" \
    target=\"_blank\" rel=\"noopener noreferrer\">cloudflare.com</a> for more information.</div>\n\
    <div class=\"mt-3\">2026-12-01 10:29:49 UTC</div></header>\n<div class=\"my-8\">\n\
    <div id=\"cf-browser-status\"><span class=\"md:block\">You</span><h3>Browser</h3>\
    <span class=\"leading-1.3 text-2xl text-green-success\">Working</span></div>\n\
    <div id=\"cf-cloudflare-status\"><h3>Cloudflare</h3><span>Working</span></div>\n\
    <div id=\"cf-host-status\" class=\"cf-error-source\"><h3>county.example</h3>\
    <span class=\"text-red-error\">Error</span></div>\n</div>\n<div class=\"w-240\">\n\
    <h2>What happened?</h2><p>The web server is not returning a connection. As a result, \
    the web page is not displaying.</p>\n<h2>What can I do?</h2><h3>If you are a visitor of \
    this website:</h3><p>Please try again in a few minutes.</p><h3>If you are the owner of \
    this website:</h3><p>Contact your hosting provider letting them know your web server is \
    not responding.</p>\n</div>\n<div class=\"cf-error-footer\"><p><span>Cloudflare Ray ID: \
    <strong>8e2f1a9b4c7d3e10</strong></span> &bull; <span id=\"cf-footer-item-ip\">Your IP: \
    <button type=\"button\" id=\"cf-footer-ip-reveal\">Click to reveal</button>\
    <span class=\"hidden\" id=\"cf-footer-ip\">192.0.2.7</span></span> &bull; \
    <span>Performance &amp; security by <a rel=\"noopener noreferrer\" \
    href=\"https://www.cloudflare.com/5xx-error-landing\">Cloudflare</a></span></p>\n\
    <script>(function(){function d(){var b=a.getElementById(\"cf-footer-item-ip\"),\
    c=a.getElementById(\"cf-footer-ip-reveal\");b&&\"classList\"in b&&(b.classList.remove(\
    \"hidden\"),c.addEventListener(\"click\",function(){c.classList.add(\"hidden\");\
    a.getElementById(\"cf-footer-ip\").classList.remove(\"hidden\")}))}var a=document;\
    document.addEventListener&&a.addEventListener(\"DOMContentLoaded\",d)})();</script>\n\
    </div></div></div>\n</body>\n</html>\n";

pub(super) async fn challenge_walls(b: &mut Builder) {
    // DDoS-Guard's free splash: 200, and the page comes only after its script ran.
    b.http(
        "challenge-200",
        Router::new().route(
            "/",
            any(|| async {
                html(
                    StatusCode::OK,
                    "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>DDoS-Guard</title>\
                     </head><body><div class=\"ddg\"><h1>Just a moment…</h1><p>Checking your \
                     browser before accessing county.example.</p><p>This process is automatic. \
                     Your browser will redirect to your requested content shortly.</p>\
                     <p>DDoS protection by DDoS-Guard</p></div><script \
                     src=\"/.well-known/ddos-guard/check?context=free_splash\"></script>\
                     </body></html>",
                )
            }),
        ),
        None,
        truth(
            "unknown",
            Some("blocked"),
            "200 with DDoS-Guard's \"Checking your browser\" page: browsers pass it at once, we cannot run it",
        ),
        said("unknown", "blocked"),
        vec![Fact::DetailContains("refuses us")],
    )
    .await;

    // testcookie-nginx-module: a 200 stub whose script sets the cookie and reloads;
    // with the cookie, the site behind it (here failing).
    b.http(
        "cookie-wall-200",
        Router::new().route(
            "/",
            any(|headers: HeaderMap| async move {
                if sends_cookie(&headers, "TCK=4f2a9c0b7e1d") {
                    return html(
                        StatusCode::SERVICE_UNAVAILABLE,
                        page("Unavailable", "Down."),
                    );
                }
                html(
                    StatusCode::OK,
                    "<html><head><meta charset=\"utf-8\"></head><body><script>\
                     document.cookie = \"TCK=4f2a9c0b7e1d; path=/\";\nlocation.reload();\
                     </script></body></html>",
                )
            }),
        ),
        None,
        truth(
            "unknown",
            Some("blocked"),
            "a 200 whose only content is a script that sets a cookie and reloads: we cannot run it",
        ),
        said("unknown", "blocked"),
        vec![Fact::DetailContains("cookie")],
    )
    .await;

    b.http(
        "jiasule-521",
        Router::new().route(
            "/",
            any(|| async {
                let mut r = html(
                    StatusCode::from_u16(521).expect("521 is a status code"),
                    JIASULE_WALL,
                );
                r.headers_mut().insert(
                    header::SET_COOKIE,
                    header::HeaderValue::from_static(
                        "__jsluid_s=0c1f6a9d2e7b; max-age=31536000; path=/; HttpOnly",
                    ),
                );
                r
            }),
        ),
        None,
        truth(
            "unknown",
            Some("blocked"),
            "Jiasule's (加速乐) 521 whose script sets a cookie and loads the page again: browsers pass it at once",
        ),
        said("unknown", "blocked"),
        vec![Fact::DetailContains("cookie")],
    )
    .await;

    let outages = [
        (
            "cloudflare-521",
            StatusCode::from_u16(521).expect("521 is a status code"),
            CLOUDFLARE_521,
            truth(
                "down",
                Some("http_status"),
                "Cloudflare's own 521 \"Web server is down\": the site's server refuses Cloudflare",
            ),
            said("down", "http_status"),
        ),
        (
            "captcha-login-200",
            StatusCode::OK,
            "<!DOCTYPE html><html><head><title>Sign in | County portal</title></head><body>\
             <form method=\"post\" action=\"/login\"><label>User <input name=\"u\"></label>\
             <label>Password <input name=\"p\" type=\"password\"></label><p>Type the \
             characters in the captcha image below.</p><img src=\"/captcha.png\" alt=\"\">\
             <input name=\"captcha\"><button>Sign in</button></form></body></html>",
            truth(
                "up",
                Some("ok"),
                "200 with a login page that asks for a captcha: the site works",
            ),
            said("up", "ok"),
        ),
        // A CMS's own maintenance page, served 503, with its contact form guarded by
        // reCAPTCHA: the outage, not a wall (the page says so, and no wall's marker is
        // on it).
        (
            "outage-503-recaptcha",
            StatusCode::SERVICE_UNAVAILABLE,
            "<!DOCTYPE html><html><head><title>Service temporarily unavailable | County \
             portal</title><script src=\"https://www.google.com/recaptcha/api.js\" async \
             defer></script></head><body><h1>Service temporarily unavailable</h1><p>The \
             county portal is down for maintenance. Please try again later.</p><form \
             method=\"post\" action=\"/contact\"><p>Urgent? Leave us a message.</p><textarea \
             name=\"m\"></textarea><div class=\"g-recaptcha\" data-sitekey=\"6Lc-farm\"></div>\
             <button>Send</button></form></body></html>",
            truth(
                "down",
                Some("http_status"),
                "503 maintenance page whose contact form carries a reCAPTCHA: the site is down",
            ),
            said("down", "http_status"),
        ),
    ];
    for (name, status, body, truth, said) in outages {
        b.http(
            name,
            Router::new().route("/", any(move || async move { html(status, body) })),
            None,
            truth,
            said,
            vec![],
        )
        .await;
    }
}

// ---------------------------------------------------------------------------
// Soft-failure words where a person never reads them

pub(super) async fn hidden_phrases(b: &mut Builder) {
    b.http(
        "phrases-out-of-sight",
        Router::new().route(
            "/",
            any(|| async {
                html(
                    StatusCode::OK,
                    "<!DOCTYPE html><html><head><title>County office</title><style>\
                     .access-denied { color: red }</style></head><body>\
                     <!-- Access denied page: see /errors/403.html -->\
                     <template id=\"blocked\"><h1>Access denied</h1></template>\
                     <h1>County office</h1><img src=\"/lock.png\" alt=\"access denied icon\">\
                     <p>Opening hours, services and contact details of the county office.</p>\
                     </body></html>",
                )
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "a working page with \"access denied\" in a comment, a template, a style and an attribute, where no person reads it",
        ),
        said("up", "ok"),
        vec![],
    )
    .await;

    // A CMS's page keeps its error messages in the markup, hidden until a script shows
    // one: a person sees the page.
    b.static_page(
        "phrases-hidden",
        "<!DOCTYPE html><html><head><title>County office</title></head><body>\
                     <div id=\"login-error\" style=\"DISPLAY : None\"><div class=\"msg\">\
                     Access denied: wrong password.</div></div>\
                     <p hidden>Your account has been suspended.</p>\
                     <span style=\"color:red;visibility:hidden !important\">Request blocked\
                     </span><h1>County office</h1><br><img src=\"/map.png\" style=\"display:none\">\
                     <p>Opening hours, services and contact details of the county office.</p>\
                     </body></html>",
        truth(
            "up",
            Some("ok"),
            "a working page with \"access denied\", \"account suspended\" and \"request blocked\" in elements hidden by an inline style or the hidden attribute",
        ),
        said("up", "ok"),
    )
    .await;

    // A block page with hidden parts of its own: the words it shows still tell.
    b.static_page(
        "block-page-hidden-parts",
        "<!DOCTYPE html><html><head><title>403</title></head><body>\
                     <div style=\"display:none\">Tracking pixel holder</div>\
                     <div class=\"debug\"><span hidden>Debug: rule 942100 matched</div>\
                     <h1 aria-hidden=\"true\">Access denied</h1>\
                     <p>You do not have permission to view this page on this server. \
                     Contact the administrator if you believe this is a mistake.</p>\
                     </body></html>",
        truth(
            "not up",
            None,
            "200, but the page says \"Access denied\" (after an element hidden and left unclosed in its parent, in a heading hidden only from screen readers)",
        ),
        said("degraded", "body_mismatch"),
    )
    .await;
}
