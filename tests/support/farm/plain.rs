//! Plain HTTP sites of the farm: healthy, slow, picky, empty, tiny, block pages, statuses.

use super::*;

// ---------------------------------------------------------------------------
// Plain HTTP sites: healthy, slow, picky, empty, tiny, block pages, statuses

pub(super) async fn plain_http(b: &mut Builder) {
    let healthy = page("County office", "Welcome.");
    b.http(
        "healthy",
        Router::new().route(
            "/",
            any(move || async move { html(StatusCode::OK, healthy) }),
        ),
        None,
        truth("up", Some("ok"), "an ordinary page"),
        said("up", "ok"),
        vec![Fact::Attempts(1), Fact::Redirects(0)],
    )
    .await;

    let slow = page("County office", "This one thinks for a while.");
    b.http(
        "slow-first-byte",
        Router::new().route(
            "/",
            any(move || async move {
                tokio::time::sleep(Duration::from_millis(1500)).await;
                html(StatusCode::OK, slow)
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "the page comes after 1.5 s, well within any patience (timeout 5 s)",
        ),
        said("up", "ok"),
        vec![Fact::TotalAtLeastMs(1500), Fact::Attempts(1)],
    )
    .await;

    let p = page("County office", "GET works; HEAD does not.");
    b.http(
        "head-405",
        Router::new().route(
            "/",
            any(move |method: Method| async move {
                if method == Method::GET {
                    html(StatusCode::OK, p)
                } else {
                    (StatusCode::METHOD_NOT_ALLOWED, [(header::ALLOW, "GET")], "").into_response()
                }
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "HEAD answers 405, but browsers GET and the page is fine",
        ),
        said("up", "ok"),
        vec![],
    )
    .await;

    let p = page("County office", "Only for browsers.");
    b.http(
        "browsers-only",
        Router::new().route(
            "/",
            any(move |headers: HeaderMap| async move {
                let get = |h: header::HeaderName| {
                    headers
                        .get(h)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_string()
                };
                let ua = get(header::USER_AGENT);
                let browser = ua.starts_with("Mozilla/5.0")
                    && ["Chrome/", "Firefox/", "Safari/"].iter().any(|b| ua.contains(b))
                    && get(header::ACCEPT).contains("text/html")
                    && !get(header::ACCEPT_LANGUAGE).is_empty();
                if browser {
                    html(StatusCode::OK, p)
                } else {
                    html(
                        StatusCode::FORBIDDEN,
                        "<html><body><h1>403 Forbidden</h1>Robots are not welcome here.</body></html>",
                    )
                }
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "403 to clients without a browser's User-Agent, Accept and Accept-Language; browsers get the page",
        ),
        said("up", "ok"),
        vec![],
    )
    .await;

    b.http(
        "empty-200",
        Router::new().route("/", any(|| async { html(StatusCode::OK, "") })),
        None,
        truth("down", None, "a blank page"),
        said("down", "body_too_small"),
        vec![Fact::BodyBytes(0), Fact::Attempts(2)],
    )
    .await;

    b.http(
        "tiny-200",
        Router::new().route("/", any(|| async { html(StatusCode::OK, "ok") })),
        None,
        truth(
            "down",
            None,
            "a page that says just \"ok\": a stub or a health check, not the site",
        ),
        said("down", "body_too_small"),
        vec![Fact::BodyBytes(2)],
    )
    .await;

    b.http(
        "no-content-204",
        Router::new().route("/", any(|| async { StatusCode::NO_CONTENT })),
        None,
        truth(
            "down",
            None,
            "204 No Content for a page: a browser shows nothing (a job that lists 204 in expect.status accepts it)",
        ),
        said("down", "body_too_small"),
        vec![Fact::BodyBytes(0)],
    )
    .await;

    let cookie_storm = page("Portal", "Welcome.");
    b.http(
        "many-headers",
        Router::new().route(
            "/",
            any(move || async move {
                // 150 header lines (hyper stops at 100 by default); browsers take them.
                let mut headers = HeaderMap::new();
                for i in 0..150 {
                    headers.append(
                        header::SET_COOKIE,
                        format!("tracker{i}=1; Path=/")
                            .parse()
                            .expect("cookie header"),
                    );
                }
                (headers, html(StatusCode::OK, cookie_storm)).into_response()
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "a page sent with 150 header lines (a cookie storm)",
        ),
        said("up", "ok"),
        vec![Fact::Attempts(1)],
    )
    .await;

    let denied = "<html><head><title>Access Denied</title></head><body><h1>Access Denied</h1>\
                  You don't have permission to access \"http://www.example.gov/\" on this server.\
                  <p>Reference #18.5c2e3b17.1732456789.1a2b3c4d</p></body></html>";
    b.http(
        "block-page",
        Router::new().route(
            "/",
            any(move || async move { html(StatusCode::OK, denied) }),
        ),
        Some(json!({"body_not_contains": "Access Denied"})),
        truth(
            "down",
            Some("body_mismatch"),
            "200, but the page is \"Access Denied\" (the job forbids that text)",
        ),
        said("down", "body_mismatch"),
        vec![],
    )
    .await;

    let denied_zh = "<html><head><meta charset=\"utf-8\"><title>访问被拒绝</title></head><body>\
                     <h1>访问被拒绝</h1><p>您的请求已被网站防火墙拦截，如有疑问请联系网站管理员。</p>\
                     </body></html>";
    b.http(
        "block-page-zh",
        Router::new().route(
            "/",
            any(move || async move { html(StatusCode::OK, denied_zh) }),
        ),
        Some(json!({"body_not_contains": "访问被拒绝"})),
        truth(
            "down",
            Some("body_mismatch"),
            "200, but the page is \"访问被拒绝\" (the job forbids that text)",
        ),
        said("down", "body_mismatch"),
        vec![Fact::Charset("UTF-8")],
    )
    .await;

    b.http(
        "block-page-no-expect",
        Router::new().route(
            "/",
            any(move || async move { html(StatusCode::OK, denied) }),
        ),
        None,
        truth(
            "not up",
            None,
            "200, but the page is \"Access Denied\"; the job sets no expectation",
        ),
        said("degraded", "body_mismatch"),
        vec![],
    )
    .await;

    let challenge = "<!DOCTYPE html><html><head><title>Just a moment...</title></head><body>\
                     <div>Checking your browser before accessing the site.</div>\
                     <script src=\"/cdn-cgi/challenge-platform/h/g/orchestrate/chl_page/v1\"></script>\
                     </body></html>";
    b.http(
        "bot-challenge",
        Router::new().route(
            "/",
            any(move || async move { html(StatusCode::FORBIDDEN, challenge) }),
        ),
        None,
        truth(
            "unknown",
            Some("blocked"),
            "403 JavaScript challenge: people pass it and see the site, a probe cannot tell",
        ),
        said("unknown", "blocked"),
        vec![],
    )
    .await;

    // Pages a server shows in place of the site, with a 200: a person sees at once that
    // the site is not there.
    let listing = "<!DOCTYPE HTML PUBLIC \"-//W3C//DTD HTML 3.2 Final//EN\">\n<html>\n <head>\n  \
        <title>Index of /</title>\n </head>\n <body>\n<h1>Index of /</h1>\n  <table>\n   \
        <tr><th valign=\"top\"><img src=\"/icons/blank.gif\" alt=\"[ICO]\"></th><th><a href=\"?C=N;O=D\">Name</a></th>\
        <th><a href=\"?C=M;O=A\">Last modified</a></th><th><a href=\"?C=S;O=A\">Size</a></th></tr>\n   \
        <tr><td valign=\"top\"><img src=\"/icons/folder.gif\" alt=\"[DIR]\"></td><td><a href=\"backup/\">backup/</a></td>\
        <td align=\"right\">2026-10-02 09:14  </td><td align=\"right\">  - </td></tr>\n  </table>\n\
        <address>Apache/2.4.62 (Debian) Server at www.example.gov Port 80</address>\n</body></html>\n";
    let maintenance = "<!doctype html><html><head><meta charset=\"utf-8\"><title>网站维护中</title></head>\
        <body><div class=\"notice\"><h1>系统维护中</h1><p>为了给您提供更好的服务，本站正在进行系统升级维护，\
        请稍后再访问。给您带来的不便，敬请谅解。</p></div></body></html>";
    let tengine = "<!DOCTYPE html>\n<html>\n<head>\n<title>Welcome to tengine!</title>\n</head>\n<body>\n\
        <h1>Welcome to tengine!</h1>\n<p>If you see this page, the tengine web server is successfully installed and \
        working. Further configuration is required.</p>\n</body>\n</html>\n";
    // PHP with display_errors on (shared hosting keeps it so) answers a fatal error
    // with 200: the site's header, then the error where the page should be.
    let php_fatal = "<!DOCTYPE html><html><head><meta charset=\"utf-8\"><title>Harlan County Clerk</title>\
        </head><body><div id=\"header\"><h1>Harlan County Clerk</h1><ul class=\"nav\"><li>Home</li>\
        <li>Records</li><li>Elections</li></ul></div><br />\n<b>Fatal error</b>:  Uncaught Error: Call to \
        undefined function mysql_connect() in /var/www/html/includes/db.php:14\nStack trace:\n#0 \
        /var/www/html/index.php(3): require_once()\n#1 {main}\n  thrown in <b>/var/www/html/includes/db.php\
        </b> on line <b>14</b><br />\n";
    let stand_ins: [(&'static str, &'static str, &'static str); 4] = [
        (
            "directory-listing",
            listing,
            "200 with the server's list of files (\"Index of /\"): the site's home page is gone",
        ),
        (
            "maintenance-page",
            maintenance,
            "200 with \"网站维护中\" (site under maintenance) in place of the site",
        ),
        (
            "default-tengine",
            tengine,
            "200 with tengine's (Alibaba's nginx) default page: the site is not set up",
        ),
        (
            "php-fatal-error",
            php_fatal,
            "200 with PHP's fatal error where the page should be (display_errors on)",
        ),
    ];
    for (name, page, says) in stand_ins {
        b.http(
            name,
            Router::new().route("/", any(move || async move { html(StatusCode::OK, page) })),
            None,
            truth("not up", None, says),
            said("degraded", "body_mismatch"),
            vec![],
        )
        .await;
    }

    // PHP's handler lost (a PHP version changed under an .htaccess naming the old one):
    // Apache sends the script itself, which browsers download or show as code.
    let source =
        "<?php\n/** Front to the WordPress application. */\ndefine('WP_USE_THEMES', true);\n\
        require __DIR__ . '/wp-blog-header.php';\n";
    for (name, kind, says) in [
        (
            "php-source",
            "application/x-httpd-php",
            "200 with the PHP script itself as application/x-httpd-php: the server's PHP \
             handler is gone; browsers download the file",
        ),
        (
            "php-source-text",
            "text/plain",
            "200 with the PHP script itself as text/plain: the server's PHP handler is \
             gone; browsers show the code",
        ),
    ] {
        b.http(
            name,
            Router::new().route(
                "/",
                any(move || async move {
                    (StatusCode::OK, [(header::CONTENT_TYPE, kind)], source).into_response()
                }),
            ),
            None,
            truth("not up", None, says),
            said("degraded", "body_mismatch"),
            vec![],
        )
        .await;
    }

    // A whole page a browser does not show as one: S3 serves an upload without a type
    // as binary/octet-stream (downloaded), a misconfigured server sends HTML as
    // text/plain (its code shown), or as an attachment.
    let whole = super::page(
        "Springfield County",
        "Opening hours, permits and council minutes.",
    );
    for (name, kind, disposition, says) in [
        (
            "octet-stream-html",
            "binary/octet-stream",
            "inline",
            "200 with the home page as binary/octet-stream (S3's type for an upload without              one): browsers download it",
        ),
        (
            "text-plain-html",
            "text/plain; charset=utf-8",
            "inline",
            "200 with the home page as text/plain: browsers show its code",
        ),
        (
            "attachment-html",
            "text/html; charset=utf-8",
            "attachment; filename=\"index.html\"",
            "200 with the home page as an attachment: browsers download it",
        ),
    ] {
        let whole = whole.clone();
        b.http(
            name,
            Router::new().route(
                "/",
                any(move || {
                    let whole = whole.clone();
                    async move {
                        (
                            StatusCode::OK,
                            [
                                (header::CONTENT_TYPE, kind),
                                (header::CONTENT_DISPOSITION, disposition),
                            ],
                            whole,
                        )
                            .into_response()
                    }
                }),
            ),
            None,
            truth("not up", None, says),
            said("degraded", "body_mismatch"),
            vec![],
        )
        .await;
    }

    // A "soft 404": the home page sends the visitor to the site's error page, which
    // answers 200 (IIS custom errors in redirect mode, many CMSs).
    let missing = "<!DOCTYPE html><html><head><title>404 Not Found</title></head><body>\
        <h1>Not Found</h1><p>The requested URL was not found on this server. Please check the \
        address or return to the home page.</p></body></html>";
    b.http(
        "soft-404",
        Router::new()
            .route(
                "/",
                any(|| async {
                    (StatusCode::FOUND, [(header::LOCATION, "/errors/404.html")]).into_response()
                }),
            )
            .route(
                "/errors/404.html",
                any(move || async move { html(StatusCode::OK, missing) }),
            ),
        None,
        truth(
            "not up",
            None,
            "the home page redirects to an error page saying \"404 Not Found\", answered 200",
        ),
        said("degraded", "body_mismatch"),
        vec![Fact::Redirects(1)],
    )
    .await;

    // Web application firewalls' block pages: the firewall refused this client (its
    // address's reputation, a rule that took it for a bot), not the site its visitors.
    let firewalls: [(&'static str, StatusCode, &'static str, &'static str); 4] = [
        (
            "waf-akamai",
            StatusCode::FORBIDDEN,
            "<HTML><HEAD>\n<TITLE>Access Denied</TITLE>\n</HEAD><BODY>\n<H1>Access Denied</H1>\n \n\
             You don't have permission to access \"http&#58;&#47;&#47;www&#46;example&#46;gov&#47;\" on this server.<P>\n\
             Reference&#32;&#35;18&#46;6f2e1402&#46;1764500000&#46;3a9c1d2\n\
             <P>https&#58;&#47;&#47;errors&#46;edgesuite&#46;net&#47;18&#46;6f2e1402&#46;1764500000&#46;3a9c1d2</P>\n\
             </BODY>\n</HTML>\n",
            "Akamai's 403 \"Access Denied … Reference #18.…\": its edge refused this client",
        ),
        (
            "waf-imperva",
            StatusCode::FORBIDDEN,
            "<html style=\"height:100%\"><head><META NAME=\"ROBOTS\" CONTENT=\"NOINDEX, NOFOLLOW\">\
             </head><body style=\"margin:0px;height:100%\"><iframe id=\"main-iframe\" \
             src=\"/_Incapsula_Resource?CWUDNSAI=24&xinfo=8-1234567-0%200NNN\" frameborder=0 \
             width=\"100%\" height=\"100%\">Request unsuccessful. Incapsula incident ID: \
             877000190123456789-123456789012345678</iframe></body></html>",
            "Imperva's 403 \"Request unsuccessful. Incapsula incident ID\": its edge refused this client",
        ),
        (
            "waf-alibaba",
            StatusCode::METHOD_NOT_ALLOWED,
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>405</title></head><body>\
             <div class=\"content\"><h2>很抱歉，由于您访问的URL有可能对网站造成安全威胁，您的访问被阻断。</h2>\
             <p>您的请求ID是: 0b8f3a2c17645000001234567e</p></div></body></html>",
            "Alibaba Cloud WAF's 405 \"您的访问被阻断\" (your access is blocked): its firewall refused this client",
        ),
        (
            // What shared hosts running LiteSpeed (or Apache with cPanel's rules)
            // answer when their ModSecurity rules take a request for an attack.
            "waf-modsecurity-406",
            StatusCode::NOT_ACCEPTABLE,
            "<!DOCTYPE HTML PUBLIC \"-//IETF//DTD HTML 2.0//EN\">\n<html><head>\n\
             <title>406 Not Acceptable</title>\n</head><body>\n<h1>Not Acceptable!</h1><p>An \
             appropriate representation of the requested resource could not be found on this \
             server. This error was generated by Mod_Security.</p></body></html>\n",
            "a shared host's 406 \"Not Acceptable! … This error was generated by Mod_Security\": its ModSecurity rules refused this client",
        ),
    ];
    for (name, status, page, says) in firewalls {
        b.http(
            name,
            Router::new().route("/", any(move || async move { html(status, page) })),
            None,
            truth("unknown", Some("blocked"), says),
            said("unknown", "blocked"),
            vec![],
        )
        .await;
    }

    b.http(
        "status-503",
        Router::new().route(
            "/",
            any(|| async {
                html(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "<html><head><title>503 Service Unavailable</title></head><body><h1>Service \
                     Unavailable</h1>The server is temporarily unable to service your request \
                     due to maintenance downtime.</body></html>",
                )
            }),
        ),
        None,
        truth("down", Some("http_status"), "503 Service Unavailable"),
        said("down", "http_status"),
        vec![Fact::Attempts(2)],
    )
    .await;

    // WordPress's maintenance mode (`wp_maintenance`): 503 with Retry-After 600. The
    // site's own word confirms it: no confirmation may be asked for ten minutes.
    b.http(
        "maintenance-503-retry-after",
        Router::new().route(
            "/",
            any(|| async {
                (
                    StatusCode::SERVICE_UNAVAILABLE,
                    [
                        (header::CONTENT_TYPE, HTML_UTF8),
                        (header::RETRY_AFTER, "600"),
                    ],
                    "<!DOCTYPE html><html><head><title>Maintenance</title></head><body>\
                     <p>Briefly unavailable for scheduled maintenance. Check back in a \
                     minute.</p></body></html>",
                )
                    .into_response()
            }),
        ),
        None,
        truth(
            "down",
            Some("http_status"),
            "maintenance mode: 503 with Retry-After 600",
        ),
        said("down", "http_status"),
        vec![
            Fact::Attempts(1),
            Fact::DetailContains("600 s (Retry-After)"),
        ],
    )
    .await;

    b.http(
        "status-429",
        Router::new().route(
            "/",
            any(|| async {
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::CONTENT_TYPE, HTML_UTF8), (header::RETRY_AFTER, "120")],
                    "<html><body><h1>Too Many Requests</h1>Slow down and retry in two minutes.</body></html>",
                )
                    .into_response()
            }),
        ),
        None,
        truth(
            "unknown",
            Some("blocked"),
            "429 with Retry-After: the site works, it is throttling us",
        ),
        said("unknown", "blocked"),
        vec![Fact::DetailContains("Retry-After 120")],
    )
    .await;

    // LinkedIn's answer to automated clients: people see the page, scripts get 999.
    b.http(
        "status-999",
        Router::new().route(
            "/",
            any(|| async {
                (
                    StatusCode::from_u16(999).expect("999 is a status code"),
                    [(header::CONTENT_TYPE, HTML_UTF8)],
                    "<html><head><script>window.location.href=\"/authwall\";</script></head><body>Request denied</body></html>",
                )
                    .into_response()
            }),
        ),
        None,
        truth(
            "unknown",
            Some("blocked"),
            "999 (LinkedIn-style \"Request denied\"): the site refuses automated clients, people see it",
        ),
        said("unknown", "blocked"),
        vec![Fact::DetailContains("999")],
    )
    .await;
}
