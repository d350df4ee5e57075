//! Redirect games: a chain, a loop, a cookie check, a Location in raw UTF-8, and the
//! redirects browsers make from a page (`<meta http-equiv=refresh>`, `Refresh`, a stub's
//! script).

use super::*;

// ---------------------------------------------------------------------------
// Redirects: a chain, a loop, and a cookie check

pub(super) async fn redirects(b: &mut Builder) {
    fn to(status: StatusCode, location: String) -> Response {
        (status, [(header::LOCATION, location)], "").into_response()
    }
    let last = page("County office", "Three hops later.");
    b.http(
        "redirect-chain",
        Router::new()
            .route(
                "/",
                any(|| async { to(StatusCode::MOVED_PERMANENTLY, "/two".into()) }),
            )
            .route(
                "/two",
                any(|headers: HeaderMap| async move {
                    // An absolute Location this time, built from the Host header.
                    let host = headers
                        .get(header::HOST)
                        .and_then(|h| h.to_str().ok())
                        .unwrap_or("")
                        .to_string();
                    to(StatusCode::FOUND, format!("http://{host}/three"))
                }),
            )
            .route(
                "/three",
                any(|| async { to(StatusCode::TEMPORARY_REDIRECT, "four".into()) }),
            )
            .route(
                "/four",
                any(move || async move { html(StatusCode::OK, last) }),
            ),
        None,
        truth("up", Some("ok"), "301, 302, 307, then the page"),
        said("up", "ok"),
        vec![Fact::Redirects(3), Fact::DetailContains("200 OK")],
    )
    .await;

    // Raw UTF-8 in the Location (a Chinese path as many servers send it, unescaped):
    // browsers escape it and follow.
    let landing = page("县政府", "欢迎光临。");
    b.http(
        "redirect-utf8-location",
        two_pages(
            || {
                let raw = header::HeaderValue::from_bytes("/欢迎/".as_bytes())
                    .expect("bytes past ASCII are allowed in a header value");
                (StatusCode::FOUND, [(header::LOCATION, raw)], "").into_response()
            },
            "/%E6%AC%A2%E8%BF%8E/",
            move || html(StatusCode::OK, landing.clone()),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "302 to a Location with an unescaped UTF-8 path (/欢迎/): browsers escape it and show the page",
        ),
        said("up", "ok"),
        vec![Fact::Redirects(1)],
    )
    .await;

    // A registrar's "forwarding with masking", and the home page of many an old site: a
    // frameset with nothing to read, whose frame shows the site. A person sees the
    // framed page, and the job's keyword is there.
    let framed = page(
        "County office",
        "欢迎光临 — the county office, shown in a frame.",
    );
    b.http(
        "frameset-masking",
        two_pages(
            || {
                let frameset = "<html><head><title>County office</title></head>\
                    <frameset rows=\"100%,*\" border=\"0\">\
                    <frame src=\"/site/index.html\" name=\"mainwindow\" frameborder=\"0\">\
                    <frame src=\"about:blank\" frameborder=\"0\">\
                    </frameset><noframes>County office</noframes></html>";
                html(StatusCode::OK, frameset)
            },
            "/site/index.html",
            move || html(StatusCode::OK, framed.clone()),
        ),
        Some(json!({"body_contains": "欢迎光临"})),
        truth(
            "up",
            Some("ok"),
            "a frameset (a registrar's masked forwarding) whose frame shows the page with 欢迎光临",
        ),
        said("up", "ok"),
        vec![Fact::DetailContains("200 OK")],
    )
    .await;

    // Redirects a browser makes by itself from a page that answered 200: a stub whose
    // only content is a <meta http-equiv="refresh"> (shorter than min_body_bytes), a
    // `Refresh` header, a whole page refreshing at once to a page that is gone, a page
    // that only reloads itself every five minutes, and the index page of many an old
    // site: nothing but a script sending browsers to the real site, which is failing.
    let portal = page("County portal", "Services and news.");
    let works = move || html(StatusCode::OK, portal.clone());
    b.http(
        "meta-refresh-stub",
        two_pages(
            || {
                let stub = "<meta http-equiv=\"Refresh\" content=\"0; URL='/portal/'\">";
                html(StatusCode::OK, stub)
            },
            "/portal/",
            works.clone(),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "a 60-byte page that is only a <meta http-equiv=refresh> to the portal, which works",
        ),
        said("up", "ok"),
        vec![Fact::Redirects(1), Fact::DetailContains("200 OK")],
    )
    .await;

    b.http(
        "refresh-header",
        two_pages(
            || (StatusCode::OK, [(header::REFRESH, "0;url=/portal/")], "").into_response(),
            "/portal/",
            works,
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "an empty 200 whose Refresh header sends browsers to the portal, which works",
        ),
        said("up", "ok"),
        vec![Fact::Redirects(1)],
    )
    .await;

    let moved = format!(
        "<html><head><meta http-equiv=\"refresh\" content=\"1;url=/new-site/\"></head>{}</html>",
        page("We have moved", "You will be taken to our new site.")
    );
    b.http(
        "meta-refresh-to-missing",
        two_pages(
            move || html(StatusCode::OK, moved.clone()),
            "/new-site/",
            || html(StatusCode::NOT_FOUND, page("Not Found", "No such page.")),
        ),
        None,
        truth(
            "down",
            Some("http_status"),
            "\"we have moved\", refreshing after 1 s to a page that is 404: people land on Not Found",
        ),
        said("down", "http_status"),
        vec![Fact::Redirects(1)],
    )
    .await;

    let ticker = format!(
        "<html><head><meta http-equiv=\"refresh\" content=\"300\"></head>{}</html>",
        page("Road conditions", "Updated every five minutes.")
    );
    b.http(
        "meta-refresh-reload",
        Router::new().route(
            "/",
            any(move || async move { html(StatusCode::OK, ticker) }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "a page that reloads itself every 5 minutes: not a redirect",
        ),
        said("up", "ok"),
        vec![Fact::Redirects(0)],
    )
    .await;

    // What a browser with scripts on never acts on: a refresh an editor commented out,
    // and the refresh for browsers without scripts, each to a page that fails.
    let gone = || {
        html(
            StatusCode::INTERNAL_SERVER_ERROR,
            page("Error", "Old site."),
        )
    };
    for (name, inert, what) in [
        (
            "meta-refresh-commented",
            "<!-- moved back: <meta http-equiv=\"refresh\" content=\"0;url=/old/\"> -->",
            "a working page with a refresh commented out (to a page that answers 500)",
        ),
        (
            "meta-refresh-noscript",
            "<noscript><meta http-equiv=\"refresh\" content=\"0; URL=/old/\"></noscript>",
            "a working page whose <noscript> refresh (to a page that answers 500) only browsers without scripts follow",
        ),
    ] {
        let body = page("County office", "Welcome.").replace("<title>", &format!("{inert}<title>"));
        b.http(
            name,
            two_pages(move || html(StatusCode::OK, body.clone()), "/old/", gone),
            None,
            truth("up", Some("ok"), what),
            said("up", "ok"),
            vec![Fact::Redirects(0)],
        )
        .await;
    }

    // A template engine writes `&` in an attribute as `&amp;`; browsers decode it.
    let portal = page("County portal", "Services and news.");
    b.http(
        "meta-refresh-entities",
        Router::new()
            .route(
                "/",
                any(|| async {
                    let stub = "<meta http-equiv=\"refresh\" content=\"0;url=/portal/?id=1&amp;lang=en\">";
                    html(StatusCode::OK, stub)
                }),
            )
            .route(
                "/portal/",
                any(move |uri: axum::http::Uri| async move {
                    if uri.query() == Some("id=1&lang=en") {
                        html(StatusCode::OK, portal)
                    } else {
                        html(StatusCode::NOT_FOUND, page("Not Found", "No such page."))
                    }
                }),
            ),
        None,
        truth(
            "up",
            Some("ok"),
            "a stub refreshing to /portal/?id=1&amp;lang=en, which is ?id=1&lang=en to a browser and works",
        ),
        said("up", "ok"),
        vec![Fact::Redirects(1)],
    )
    .await;

    // A cookie check by refresh: the page sets a cookie and reloads itself; with the
    // cookie the site answers, here with its outage.
    b.http(
        "cookie-refresh-to-self",
        Router::new().route(
            "/",
            any(|headers: HeaderMap| async move {
                if sends_cookie(&headers, "checked=1") {
                    return html(
                        StatusCode::SERVICE_UNAVAILABLE,
                        page("Unavailable", "Down."),
                    );
                }
                let stub = "<html><head><meta http-equiv=\"refresh\" content=\"0;url=/\"></head>\
                            <body></body></html>";
                let mut r = html(StatusCode::OK, stub);
                r.headers_mut().insert(
                    header::SET_COOKIE,
                    header::HeaderValue::from_static("checked=1; Path=/"),
                );
                r
            }),
        ),
        None,
        truth(
            "down",
            Some("http_status"),
            "a 200 that sets a cookie and reloads itself; with the cookie the site answers 503",
        ),
        said("down", "http_status"),
        vec![Fact::Redirects(1)],
    )
    .await;

    b.http(
        "script-redirect-stub",
        two_pages(
            || {
                let stub = "<html><head><script type=\"text/javascript\">\
                            window.location.href = \"/portal/index.jsp\";</script></head>\
                            <body></body></html>";
                html(StatusCode::OK, stub)
            },
            "/portal/index.jsp",
            || {
                let failed = page("500 Internal Server Error", "The portal failed.");
                html(StatusCode::INTERNAL_SERVER_ERROR, failed)
            },
        ),
        None,
        truth(
            "down",
            Some("http_status"),
            "an index page that is only a script sending browsers to the portal, which answers 500",
        ),
        said("down", "http_status"),
        vec![Fact::Redirects(1)],
    )
    .await;

    // The same stub as old pages write it: the script wrapped in `<!-- … //-->`, which
    // inside a script is no comment.
    b.http(
        "script-redirect-wrapped",
        two_pages(
            || {
                let stub = "<html><head><script language=\"javascript\"><!--\n\
                            window.location.href = \"/portal/index.jsp\";\n//--></script>\
                            </head><body></body></html>";
                html(StatusCode::OK, stub)
            },
            "/portal/index.jsp",
            || {
                let failed = page("500 Internal Server Error", "The portal failed.");
                html(StatusCode::INTERNAL_SERVER_ERROR, failed)
            },
        ),
        None,
        truth(
            "down",
            Some("http_status"),
            "an index page whose script, wrapped in <!-- //--> as old pages do, sends browsers to a portal that answers 500",
        ),
        said("down", "http_status"),
        vec![Fact::Redirects(1)],
    )
    .await;

    b.http(
        "redirect-loop",
        Router::new()
            .route("/", any(|| async { to(StatusCode::FOUND, "/b".into()) }))
            .route("/b", any(|| async { to(StatusCode::FOUND, "/".into()) })),
        None,
        truth(
            "down",
            Some("too_many_redirects"),
            "/ → /b → /: ERR_TOO_MANY_REDIRECTS",
        ),
        said("down", "too_many_redirects"),
        vec![],
    )
    .await;

    let p = page("County office", "Cookies are on.");
    b.http(
        "cookie-redirect",
        Router::new().route(
            "/",
            any(move |headers: HeaderMap| async move {
                if sends_cookie(&headers, "visited=1") {
                    html(StatusCode::OK, p)
                } else {
                    (
                        StatusCode::FOUND,
                        [
                            (header::LOCATION, "/"),
                            (header::SET_COOKIE, "visited=1; Path=/"),
                        ],
                        "",
                    )
                        .into_response()
                }
            }),
        ),
        None,
        // Browsers keep the cookie and get the page on the second request; picket keeps
        // no cookies and sees the same URL again.
        truth(
            "up",
            Some("ok"),
            "sets a cookie and redirects to itself; with the cookie, the page (a common load-balancer check)",
        ),
        said("up", "ok"),
        vec![],
    )
    .await;

    // Hunt Q: a big site's chain re-sets its session, load-balancer and CSRF cookies on
    // every hop, and the last hop sets the cookie its check wants: browsers count
    // cookies (Chrome keeps 180 a domain), not Set-Cookie headers.
    let p = page("University", "Welcome, visitor.");
    let hop = |n: usize| {
        move || async move {
            let mut headers = HeaderMap::new();
            let next = if n < 7 {
                format!("/hop{}", n + 1)
            } else {
                "/home".into()
            };
            headers.insert(header::LOCATION, next.parse().expect("location"));
            for name in [
                "PHPSESSID",
                "BIGipServerpool",
                "XSRF-TOKEN",
                "lang",
                "visited",
                "_ga",
                "AWSALB",
                "AWSALBCORS",
            ] {
                let cookie = format!("{name}=v{n}; Path=/").parse().expect("cookie");
                headers.append(header::SET_COOKIE, cookie);
            }
            if n == 7 {
                let check = "auth_check=passed; Path=/".parse().expect("cookie");
                headers.append(header::SET_COOKIE, check);
            }
            (StatusCode::FOUND, headers, "").into_response()
        }
    };
    let mut chain = Router::new().route("/", any(hop(1)));
    for n in 2..=7 {
        chain = chain.route(&format!("/hop{n}"), any(hop(n)));
    }
    let chain = chain.route(
        "/home",
        any(move |headers: HeaderMap| async move {
            if sends_cookie(&headers, "auth_check=passed") {
                html(StatusCode::OK, p)
            } else {
                (StatusCode::FOUND, [(header::LOCATION, "/")], "").into_response()
            }
        }),
    );
    b.http(
        "cookie-chain-late-check",
        chain,
        None,
        truth(
            "up",
            Some("ok"),
            "seven redirects, each re-setting 8 cookies; the last sets the cookie the page checks for",
        ),
        said("up", "ok"),
        vec![],
    )
    .await;

    // The same check beside a cookie whose value is raw UTF-8, as Chinese sites set a
    // city or a name: browsers keep and send both.
    let p = page("County office", "Cookies are on.");
    b.http(
        "cookie-utf8",
        Router::new().route(
            "/",
            any(move |headers: HeaderMap| async move {
                if sends_cookie(&headers, "lb=1") {
                    return html(StatusCode::OK, p);
                }
                let utf8 = header::HeaderValue::from_bytes("city=北京; Path=/".as_bytes())
                    .expect("a header value of UTF-8 bytes");
                let mut r = (StatusCode::FOUND, [(header::LOCATION, "/")], "").into_response();
                r.headers_mut().append(header::SET_COOKIE, utf8);
                r.headers_mut()
                    .append(header::SET_COOKIE, header::HeaderValue::from_static("lb=1; Path=/"));
                r
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "a cookie check beside a cookie with a raw UTF-8 value (city=北京): browsers keep both and get the page",
        ),
        said("up", "ok"),
        vec![],
    )
    .await;

    // A cookie check with a cookie that has no name (`Set-Cookie: chk1`, as old load
    // balancers and hand-written checks set it): RFC 6265bis and Chrome keep it as a
    // cookie whose name is empty and send back its value alone (`Cookie: chk1`).
    let p = page("County office", "Welcome to the county.");
    b.http(
        "cookie-nameless",
        Router::new().route(
            "/",
            any(move |headers: HeaderMap| async move {
                let sent_back = headers.get_all(header::COOKIE).iter().any(|v| {
                    v.as_bytes()
                        .split(|&b| b == b';')
                        .any(|pair| pair.trim_ascii() == b"chk1")
                });
                if sent_back {
                    return html(StatusCode::OK, p);
                }
                let set = [(header::SET_COOKIE, "chk1; Path=/")];
                (StatusCode::FOUND, [(header::LOCATION, "/")], set, "").into_response()
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "a cookie check whose cookie has no name (Set-Cookie: chk1): browsers send it back as Cookie: chk1 and get the page",
        ),
        said("up", "ok"),
        vec![],
    )
    .await;

    // PHP's `header("Location: " . $url)` with an empty `$url`: a 302 whose Location is
    // empty, over the page. Browsers follow only a non-empty Location, and show the page.
    let p = page("County office", "Welcome to the county.");
    b.http(
        "empty-location",
        Router::new().route(
            "/",
            any(move || async move {
                let mut r = html(StatusCode::FOUND, p);
                r.headers_mut()
                    .insert(header::LOCATION, header::HeaderValue::from_static(""));
                r
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "a 302 with an empty Location over the whole page (PHP's header() given an empty URL): browsers show the page",
        ),
        said("up", "ok"),
        vec![],
    )
    .await;

    // 300 and 305 are no redirect statuses (the Fetch standard: 301, 302, 303, 307, 308).
    // Chrome shows a 300's page, its list of choices ("Users probably want to see 300
    // (multiple choice) pages"); Firefox follows its Location, Chrome's share being the
    // larger. No browser follows a 305 (Firefox stopped in 2003, bug 187996: a site
    // naming a proxy for the browser to use is an attack): it shows the 305's body.
    let choices = "<!DOCTYPE html><html><head><title>300 Multiple Choices</title></head><body>\
        <h1>Multiple Choices</h1><p>Available variants:</p><ul>\
        <li><a href=\"/index.html.en\">index.html.en</a>, type text/html, language en</li>\
        <li><a href=\"/index.html.fr\">index.html.fr</a>, type text/html, language fr</li>\
        </ul></body></html>";
    b.http(
        "status-300-choices",
        two_pages(
            move || {
                let mut r = html(StatusCode::MULTIPLE_CHOICES, choices);
                r.headers_mut().insert(
                    header::LOCATION,
                    header::HeaderValue::from_static("/index.html.de"),
                );
                r
            },
            "/index.html.de",
            || html(StatusCode::INTERNAL_SERVER_ERROR, "<h1>500</h1>"),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "300 with the list of variants (mod_negotiation's page) and a Location that answers 500: Chrome shows the list",
        ),
        said("up", "ok"),
        vec![Fact::Redirects(0)],
    )
    .await;
    b.http(
        "status-305-use-proxy",
        two_pages(
            || {
                let mut r = html(StatusCode::USE_PROXY, "");
                r.headers_mut().insert(
                    header::LOCATION,
                    header::HeaderValue::from_static("/via-proxy"),
                );
                r
            },
            "/via-proxy",
            || html(StatusCode::OK, page("County office", "Welcome to the county.")),
        ),
        None,
        truth(
            "down",
            Some("body_too_small"),
            "an empty 305 Use Proxy naming a working page: no browser follows a 305, the page is blank",
        ),
        said("down", "body_too_small"),
        vec![Fact::Redirects(0)],
    )
    .await;
}

/// Whether a request's `Cookie` headers carry `pair` (read as bytes: a cookie's value
/// may be raw UTF-8).
pub(super) fn sends_cookie(headers: &HeaderMap, pair: &str) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .any(|v| String::from_utf8_lossy(v.as_bytes()).contains(pair))
}

/// A site whose `/` answers `first` and whose `next` answers `then`: the two pages of a
/// redirect.
fn two_pages<F, G>(first: F, next: &'static str, then: G) -> Router
where
    F: Fn() -> Response + Clone + Send + Sync + 'static,
    G: Fn() -> Response + Clone + Send + Sync + 'static,
{
    Router::new()
        .route(
            "/",
            any(move || {
                let first = first.clone();
                async move { first() }
            }),
        )
        .route(
            next,
            any(move || {
                let then = then.clone();
                async move { then() }
            }),
        )
}
