//! The redirects a browser makes by itself from a page that answered: a `Refresh`
//! header, a `<meta http-equiv="refresh">` in the page, or the script of a stub page
//! that is nothing but a redirect; and the page a frame stub shows ([`frame`]). Plain
//! text in, the URL a person soon lands on, or reads, out; no I/O.
//!
//! Only a refresh that names a URL and comes within [`MAX_WAIT_S`] is one: a page
//! reloading itself after a while is the page a person reads. One that reloads itself
//! at once (`0`, no URL) is read as a refresh to its own URL, which the chain follows
//! only when a cookie it set makes the visit another (`http::redirect`), and only when
//! nothing names a URL. What a browser with scripts on never runs is not read for any
//! of these: HTML comments (outside scripts), `<noscript>` and `<template>`. A script's
//! redirect is taken only from a stub (at most [`STUB_BYTES`], with at most
//! [`STUB_TEXT_CHARS`] characters to read): without a script engine a redirect cannot
//! be told from a menu's `onclick` on a real page, but a page with nothing to read
//! whose script sends the browser on is a redirect whatever the script's conditions,
//! since staying would show a person nothing.

/// The longest wait of a refresh taken for a redirect. "We have moved, you will be taken
/// to the new site in 5 seconds" is one; a page reloading every minute or more is not.
pub(crate) const MAX_WAIT_S: f64 = 30.0;

/// The largest page whose script's redirect is taken: a stub.
const STUB_BYTES: usize = 2048;

/// The most characters a stub shows to read (outside tags, scripts and styles), such as
/// "Loading…" or "页面跳转中".
const STUB_TEXT_CHARS: usize = 200;

/// Where the page sends the browser: the `Refresh` header first (browsers obey it before
/// reading the page), then the first `<meta http-equiv="refresh">` of `text`. The URL as
/// written, to be joined to the page's own.
pub(crate) fn target(header: Option<&str>, text: &str) -> Option<String> {
    let from_header = header.and_then(redirect_in);
    if let Some(url) = from_header.as_ref().filter(|u| !u.is_empty()) {
        return Some(url.clone());
    }
    // Most pages have no refresh soon enough and are no stub: they are not copied to be
    // read again.
    let soon = |text: &str| meta_refreshes(text).any(|c| redirect_in(&c).is_some());
    if text.len() > STUB_BYTES && !soon(text) {
        return from_header;
    }
    let text = shown(text);
    let metas: Vec<String> = meta_refreshes(&text)
        .filter_map(|c| redirect_in(&c))
        .collect();
    // A URL named anywhere before a reload of the page itself.
    let named = metas.iter().find(|u| !u.is_empty()).cloned();
    named
        .or_else(|| script_redirect(&text))
        .or(from_header)
        .or_else(|| metas.into_iter().next())
}

/// `text` without what a browser with scripts on never acts on or shows: HTML comments
/// (a refresh an old site's editor commented out), and the insides of `<noscript>` (the
/// redirect for browsers without scripts) and `<template>`. Scripts and styles are kept
/// as they are: inside them `<!--` is no comment (old pages wrap a whole redirect script
/// in one). Borrowed when there is nothing to leave out; one pass otherwise.
fn shown(text: &str) -> std::borrow::Cow<'_, str> {
    let inert = |t: &str| {
        t.contains("<!--")
            || find_ascii_ci(t, "<noscript").is_some()
            || find_ascii_ci(t, "<template").is_some()
    };
    if !inert(text) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(found) = next_construct(rest) {
        let upto = if found.kept { found.end } else { found.start };
        out.push_str(&rest[..upto]);
        rest = &rest[found.end..];
    }
    out.push_str(rest);
    std::borrow::Cow::Owned(out)
}

/// A stretch of a page that [`shown`] keeps whole or leaves out.
struct Construct {
    start: usize,
    end: usize,
    /// A script or a style: kept whole, its text is no markup.
    kept: bool,
}

/// The first comment, `<noscript>`, `<template>`, `<script>` or `<style>` element of
/// `text`, as byte offsets; an unclosed one runs to the end, as in browsers.
fn next_construct(text: &str) -> Option<Construct> {
    const ELEMENTS: [(&str, bool); 4] = [
        ("noscript", false),
        ("template", false),
        ("script", true),
        ("style", true),
    ];
    for at in memchr::memchr_iter(b'<', text.as_bytes()) {
        let after = &text[at + 1..];
        if after.starts_with("!--") {
            let end = crate::probe::shown::comment_end(text.as_bytes(), at);
            return Some(Construct {
                start: at,
                end,
                kept: false,
            });
        }
        for (name, kept) in ELEMENTS {
            // `get` cuts only at a character's boundary: the text after a `<` may be
            // in any script.
            let named = after
                .get(..name.len())
                .is_some_and(|n| n.eq_ignore_ascii_case(name));
            let whole = || {
                after[name.len()..]
                    .chars()
                    .next()
                    .is_none_or(|c| c.is_ascii_whitespace() || c == '>' || c == '/')
            };
            if named && whole() {
                let close = format!("</{name}");
                let end = find_ascii_ci(&text[at..], &close).map_or(text.len(), |e| {
                    let closing = at + e;
                    text[closing..]
                        .find('>')
                        .map_or(text.len(), |g| closing + g + 1)
                });
                return Some(Construct {
                    start: at,
                    end,
                    kept,
                });
            }
        }
    }
    None
}

/// The page a frame stub shows: a page with nothing to read but frames (a `<frameset>`,
/// or an `<iframe>` filling the page), as a registrar's "forwarding with masking" and
/// the home pages of many old sites are. A person reads the framed page, so that is the
/// page to judge: the frame named as the main one (`main…`, `…content…`), else the
/// first with a source. The URL as written, to be joined to the page's own.
pub(crate) fn frame(text: &str) -> Option<String> {
    if text.len() > STUB_BYTES {
        return None;
    }
    let text = &*shown(text);
    if visible_chars(text) > STUB_TEXT_CHARS {
        return None;
    }
    // An iframe is the page only when it fills it: a small page with a video or a map
    // in an iframe is a page of its own.
    let filling = |tag: &&str| tag.contains("100%");
    let frames: Vec<&str> = tags(text, "frame")
        .chain(tags(text, "iframe").filter(filling))
        .filter(|tag| attribute(tag, "src").is_some_and(|src| shows_a_page(&decoded(src))))
        .collect();
    let named_main = |tag: &&&str| {
        ["name", "id"].iter().any(|a| {
            attribute(tag, a).is_some_and(|n| {
                let n = n.to_ascii_lowercase();
                n.starts_with("main") || n.contains("content")
            })
        })
    };
    let chosen = frames.iter().find(named_main).or(frames.first())?;
    attribute(chosen, "src").map(|src| decoded(src).trim().to_string())
}

/// An attribute's value as a browser reads it: character references decoded
/// (`?id=1&amp;lang=en` is `?id=1&lang=en`, `&#47;` is `/`), as every template engine
/// writes them.
fn decoded(value: &str) -> String {
    html_escape::decode_html_entities(value).into_owned()
}

/// Whether a frame's source is a page to fetch (not empty, `about:blank` or a script).
fn shows_a_page(src: &str) -> bool {
    let src = src.trim().to_ascii_lowercase();
    !src.is_empty() && !src.starts_with("about:") && !src.starts_with("javascript:")
}

/// The insides of the `<name …>` tags of `text`, in order (`<frame …>` but not
/// `<frameset …>`); lazy, so a search that stops at the first match reads no further.
fn tags<'a>(text: &'a str, name: &str) -> impl Iterator<Item = &'a str> + 'a {
    let open = format!("<{name}");
    let mut from = 0;
    std::iter::from_fn(move || loop {
        let inside = from + find_ascii_ci(&text[from..], &open)? + open.len();
        let end = text[inside..].find('>').map_or(text.len(), |e| inside + e);
        from = end;
        let whole_name = text[inside..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_whitespace() || c == '/' || c == '>');
        if whole_name {
            return Some(&text[inside..end]);
        }
    })
}

/// Where a stub's script sends the browser: a string literal assigned to `location`
/// (`window.location.href = "/portal/"`) or given to `location.replace` or `.assign`,
/// in a `<script>` or in the page's `onload` (`<body onload="…">`, as old editors
/// wrote redirects).
fn script_redirect(text: &str) -> Option<String> {
    if text.len() > STUB_BYTES {
        return None;
    }
    let onload = ["body", "frameset"]
        .into_iter()
        .flat_map(|name| tags(text, name))
        .filter_map(|tag| attribute(tag, "onload"))
        .map(decoded);
    let scripts: Vec<String> = elements(text, "script")
        .into_iter()
        .map(str::to_string)
        .chain(onload)
        .collect();
    if scripts.is_empty() || visible_chars(text) > STUB_TEXT_CHARS {
        return None;
    }
    scripts.iter().find_map(|s| location_literal(s))
}

/// The insides of every `<name …>…</name>` element of `text`.
fn elements<'a>(text: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}"), format!("</{name}"));
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(start) = find_ascii_ci(&text[from..], &open).map(|i| from + i) {
        let Some(body) = text[start..].find('>').map(|e| start + e + 1) else {
            break;
        };
        let end = find_ascii_ci(&text[body..], &close).map_or(text.len(), |e| body + e);
        found.push(&text[body..end]);
        from = end;
    }
    found
}

/// How many characters a person reads on the page: outside tags, scripts and styles,
/// white space left out.
fn visible_chars(text: &str) -> usize {
    let mut hidden: Vec<(usize, usize)> = Vec::new();
    for name in ["script", "style"] {
        for inner in elements(text, name) {
            let start = inner.as_ptr() as usize - text.as_ptr() as usize;
            hidden.push((start, start + inner.len()));
        }
    }
    let mut in_tag = false;
    text.char_indices()
        .filter(|(i, c)| {
            if hidden.iter().any(|&(a, b)| (a..b).contains(i)) {
                return false;
            }
            match c {
                '<' => in_tag = true,
                '>' if in_tag => {
                    in_tag = false;
                    return false;
                }
                _ => {}
            }
            !in_tag && !c.is_whitespace()
        })
        .count()
}

/// The URL a script gives to `location`: `location = "…"`, `location.href = '…'`
/// (after `window.`, `top.`, `self.` or `document.`, or none), `location.replace("…")`
/// or `location.assign("…")`. A literal only: a computed URL is not followed.
fn location_literal(script: &str) -> Option<String> {
    let mut from = 0;
    while let Some(at) = script[from..].find("location").map(|i| from + i) {
        from = at + "location".len();
        // `location` itself, not the end of a longer name (`mylocation`).
        let alone = script[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == '$'));
        if !alone {
            continue;
        }
        let rest = script[from..].trim_start();
        // Setting the path keeps the rest of the URL, and the path begins with `/`.
        let (rest, path) = match rest.strip_prefix(".pathname") {
            Some(after) => (after.trim_start(), true),
            None => (
                rest.strip_prefix(".href").map_or(rest, str::trim_start),
                false,
            ),
        };
        let value = if let Some(v) = rest.strip_prefix('=') {
            if v.starts_with('=') {
                continue; // a comparison
            }
            v.trim_start()
        } else if let Some(v) = rest
            .strip_prefix(".replace(")
            .or_else(|| rest.strip_prefix(".assign("))
            .filter(|_| !path)
        {
            v.trim_start()
        } else {
            continue;
        };
        let Some(quote @ ('"' | '\'')) = value.chars().next() else {
            continue;
        };
        if let Some(url) = value[1..]
            .split(quote)
            .next()
            .filter(|u| !u.trim().is_empty())
        {
            let url = url.trim();
            // A path that opens with `//` stays on the page's host, which joined as a
            // URL it would not: not followed.
            if path && url.starts_with("//") {
                continue;
            }
            return Some(match path && !url.starts_with('/') {
                true => format!("/{url}"),
                false => url.to_string(),
            });
        }
    }
    None
}

/// The URL of a refresh's `content` ("5; url=/new/"), when it comes soon enough; the
/// grammar of the HTML standard's "shared declarative refresh steps". A refresh at once
/// naming no URL reloads the page itself: `""`, which joins to the page's own URL (a
/// page reloading itself after a while is read as it is).
fn redirect_in(content: &str) -> Option<String> {
    let rest = content.trim_start();
    let digits = rest
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(rest.len());
    let wait: f64 = rest[..digits].parse().ok()?;
    if wait > MAX_WAIT_S {
        return None;
    }
    let rest = rest[digits..].trim_start();
    let rest = rest.strip_prefix([';', ',']).unwrap_or(rest).trim_start();
    let rest = match rest.get(..3) {
        Some(word) if word.eq_ignore_ascii_case("url") => {
            let after = rest[3..].trim_start();
            after.strip_prefix('=').map_or(rest, str::trim_start)
        }
        _ => rest,
    };
    let url = match rest.chars().next() {
        Some(quote @ ('"' | '\'')) => rest[1..].split(quote).next().unwrap_or(""),
        _ => rest,
    };
    let url = url.trim();
    (!url.is_empty() || wait == 0.0).then(|| url.to_string())
}

/// The `content` of every `<meta http-equiv="refresh">` in `text`, in order.
fn meta_refreshes(text: &str) -> impl Iterator<Item = String> + '_ {
    tags(text, "meta").filter_map(|tag| {
        attribute(tag, "http-equiv")
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("refresh"))
            .then(|| attribute(tag, "content"))
            .flatten()
            .map(decoded)
    })
}

/// Where `needle` (ASCII, not empty) first occurs in `hay`, whatever its case. Every
/// page up to `SNIFF_BYTES` is searched for `<meta`, so its first byte is found with
/// memchr's vector search, not byte by byte.
fn find_ascii_ci(hay: &str, needle: &str) -> Option<usize> {
    let (h, n) = (hay.as_bytes(), needle.as_bytes());
    let first = *n.first()?;
    memchr::memchr2_iter(first.to_ascii_lowercase(), first.to_ascii_uppercase(), h).find(|&i| {
        h.get(i..i + n.len())
            .is_some_and(|w| w.eq_ignore_ascii_case(n))
    })
}

/// The value of attribute `name` in the inside of a tag: quoted with `"` or `'`, or
/// unquoted up to white space.
fn attribute<'a>(tag: &'a str, name: &str) -> Option<&'a str> {
    let mut from = 0;
    while let Some(at) = find_ascii_ci(&tag[from..], name).map(|i| from + i) {
        from = at + name.len();
        // A whole attribute name: not the end of another one (`data-content`).
        let starts_word = tag[..at]
            .chars()
            .next_back()
            .is_none_or(|c| c.is_ascii_whitespace() || c == '"' || c == '\'' || c == '/');
        let rest = tag[from..].trim_start();
        let (true, Some(value)) = (starts_word, rest.strip_prefix('=')) else {
            continue;
        };
        let value = value.trim_start();
        return Some(match value.chars().next() {
            Some(quote @ ('"' | '\'')) => value[1..].split(quote).next().unwrap_or(""),
            _ => value
                .split(|c: char| c.is_ascii_whitespace())
                .next()
                .unwrap_or(""),
        });
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hunt G: a small page in Chinese (or French) with a comment, `<noscript>` or
    /// `<template>` panicked: the name's length was cut from the text after a `<`
    /// whatever character stood there ("start byte index 8 is not a char boundary"),
    /// and the job had no result at all (`picket check` exited 101; the worker
    /// dead-lettered it after two tries).
    #[test]
    fn text_after_a_tag_in_any_script_never_breaks_the_reading() {
        for page in [
            "<html><head><title>欢迎访问</title><!-- x --></head><body><p>本站正常运行</p></body></html>",
            "<p>Café résumé</p><!-- c --><p>à bientôt</p>",
            "<title>智慧政务服务平台</title><noscript><strong>We're sorry</strong></noscript><div id=\"app\"></div><p>政务</p>",
            "<template><p>é</p></template><p>日本語のページ</p><style>p{}</style>",
            "<p>短</p><s<script>x</script>",
        ] {
            assert_eq!(target(None, page), None, "{page}");
        }
    }

    #[test]
    fn a_refresh_that_names_a_url_soon_is_a_redirect_in_every_common_spelling() {
        for (content, url) in [
            ("0; url=/portal/", "/portal/"),
            ("0;URL='/portal/'", "/portal/"),
            ("5, url = \"http://new.example/\"", "http://new.example/"),
            ("0;/portal/index.jsp", "/portal/index.jsp"),
            ("1.5; url=next.html", "next.html"),
        ] {
            assert_eq!(redirect_in(content).as_deref(), Some(url), "{content}");
        }
        for reload in ["300", "600; url=/same", "", "soon; url=/x", "5", "2; url="] {
            assert_eq!(redirect_in(reload), None, "{reload:?}");
        }
        // A refresh at once that names no URL reloads the page itself.
        for itself in ["0", "0; url=", "0;"] {
            assert_eq!(redirect_in(itself).as_deref(), Some(""), "{itself:?}");
        }
    }

    #[test]
    fn what_a_browser_with_scripts_never_runs_sends_it_nowhere() {
        let page = |inert: &str| {
            format!(
                "<html><head>{inert}<title>County</title></head><body><h1>County office</h1>                 <p>{}</p></body></html>",
                "Opening hours, services and contacts. ".repeat(80)
            )
        };
        for inert in [
            "<!-- <meta http-equiv=\"refresh\" content=\"0;url=/old/\"> -->",
            "<!--[if lt IE 9]><meta http-equiv=\"refresh\" content=\"0;url=/ie/\"><![endif]-->",
            "<NOSCRIPT><meta http-equiv=\"refresh\" content=\"0; URL=/nojs\"></NOSCRIPT>",
            "<template><meta http-equiv=\"refresh\" content=\"0;url=/t/\"></template>",
        ] {
            assert_eq!(target(None, &page(inert)), None, "{inert}");
        }
        // After a closed comment, the page's own refresh still counts.
        let both = page("<!-- old --><meta http-equiv=\"refresh\" content=\"0;url=/new/\">");
        assert_eq!(target(None, &both).as_deref(), Some("/new/"));
        // A stub's script in a comment is no redirect either.
        let stub = "<html><!-- <script>location.href='/old/'</script> --></html>";
        assert_eq!(target(None, stub), None);
        // Inside a script `<!--` is no comment: old pages wrap their redirect in one.
        let wrapped = "<script language=\"javascript\"><!--\nwindow.location.href=\"/portal/\";\n//--></script>";
        assert_eq!(target(None, wrapped).as_deref(), Some("/portal/"));
        let styled = "<style><!-- p { color: red } --></style><!-- <meta http-equiv=\"refresh\" content=\"0;url=/x/\"> -->";
        assert_eq!(target(None, styled), None);
    }

    /// `<!-->`, `<!--->` and a comment closed by `--!>` end where a browser ends them:
    /// the refresh after them is followed (a stub was judged as the page it is not).
    #[test]
    fn a_refresh_after_an_abruptly_closed_comment_counts() {
        for opener in ["<!-->", "<!--->", "<!-- stub --!>"] {
            let stub = format!("{opener}<meta http-equiv=\"refresh\" content=\"0;url=/new/\">");
            assert_eq!(target(None, &stub).as_deref(), Some("/new/"), "{stub}");
        }
    }

    #[test]
    fn a_url_named_anywhere_comes_before_a_reload_of_the_page_itself() {
        let page = "<meta http-equiv=\"refresh\" content=\"0;url=/portal/\">";
        assert_eq!(target(Some("0"), page).as_deref(), Some("/portal/"));
        assert_eq!(target(Some("0"), "<p>hi</p>").as_deref(), Some(""));
        assert_eq!(
            target(None, "<meta http-equiv=\"refresh\" content=\"0\">").as_deref(),
            Some("")
        );
    }

    #[test]
    fn character_references_in_a_refresh_and_a_frame_are_decoded() {
        let meta = "<meta http-equiv=\"refresh\" content=\"0;url=/p/?id=1&amp;lang=en\">";
        assert_eq!(target(None, meta).as_deref(), Some("/p/?id=1&lang=en"));
        let numeric = "<meta http-equiv=\"refresh\" content=\"0;url=&#47;ok&#x2F;\">";
        assert_eq!(target(None, numeric).as_deref(), Some("/ok/"));
        let frames = "<frameset><frame src=\"/main?a=1&amp;b=2\" name=\"main\"></frameset>";
        assert_eq!(frame(frames).as_deref(), Some("/main?a=1&b=2"));
    }

    #[test]
    fn a_stub_whose_script_sends_the_browser_on_is_a_redirect_and_a_real_page_is_not() {
        for (page, url) in [
            (
                "<html><script>window.location.href = \"/portal/index.jsp\";</script></html>",
                "/portal/index.jsp",
            ),
            (
                "<script type='text/javascript'>top.location='http://new.example/'</script>",
                "http://new.example/",
            ),
            (
                "<html><body>页面跳转中……<script>location.replace('/zh/');</script></body></html>",
                "/zh/",
            ),
            (
                "<script>\nif (location.href == '/x') {}\nlocation.assign( \"/y\" );</script>",
                "/y",
            ),
        ] {
            assert_eq!(target(None, page).as_deref(), Some(url), "{page}");
        }
        let menu = format!(
            "<html><body><h1>County office</h1><p>{}</p><script>function go() {{ \
             location.href = '/search'; }}</script></body></html>",
            "Opening hours, services and contacts of the county office. ".repeat(5)
        );
        for page in [
            menu.as_str(),
            "<script>var mylocation = '/no/'; location = someUrl;</script>",
            "<p>location = '/not-a-script/'</p>",
        ] {
            assert_eq!(target(None, page), None, "{page}");
        }
    }

    /// Hunt L: a stub whose redirect is in `<body onload="…">` (no `<script>` element) or
    /// sets `location.pathname` was read as a page showing nothing: a confirmed
    /// `down/body_too_small` for a site a browser lands on at once.
    #[test]
    fn a_stub_sending_the_browser_on_from_onload_or_by_its_path_is_a_redirect() {
        for (page, url) in [
            (
                "<html><head><title>Riverside County</title></head>\
                 <body onload=\"document.location.replace('/good/')\"></body></html>",
                "/good/",
            ),
            (
                "<html><body onLoad=\"window.location.href='good/'\"><p>Please wait...</p></body></html>",
                "good/",
            ),
            (
                "<body onload='location.href=&quot;/portal/&quot;'>",
                "/portal/",
            ),
            (
                "<html><script>window.location.pathname = \"/good/\";</script></html>",
                "/good/",
            ),
            ("<script>location.pathname='good/'</script>", "/good/"),
        ] {
            assert_eq!(target(None, page).as_deref(), Some(url), "{page}");
        }
        // Review T: a path opening with `//` is no other host's URL.
        let page = "<script>location.pathname = '//other.example/x';</script>";
        assert_eq!(target(None, page), None, "{page}");
        let page = "<body onload=\"location='/a/'\">";
        assert_eq!(target(None, page).as_deref(), Some("/a/"), "{page}");
        // A real page's onload (a menu, a map) is no redirect.
        let real = format!(
            "<html><body onload=\"location.href='/search'\"><h1>County office</h1><p>{}</p></body></html>",
            "Opening hours, services and contacts of the county office. ".repeat(5)
        );
        assert_eq!(target(None, &real), None);
    }

    #[test]
    fn a_frame_stub_shows_its_main_frame_and_a_real_page_shows_itself() {
        let masking = r#"<html><head><title>County</title></head><frameset rows="100%,*">
            <frame src="http://real.example/" name="mainwindow"><frame src="about:blank">
            </frameset><noframes>County office</noframes></html>"#;
        assert_eq!(frame(masking).as_deref(), Some("http://real.example/"));
        let layout = r#"<FRAMESET cols="200,*"><FRAME SRC="menu.html" NAME="nav">
            <FRAME SRC="home.html" NAME="mainFrame"></FRAMESET>"#;
        assert_eq!(frame(layout).as_deref(), Some("home.html"));
        let filled = r#"<body style="margin:0"><iframe src='/portal/' width="100%"
            height="100%"></iframe></body>"#;
        assert_eq!(frame(filled).as_deref(), Some("/portal/"));
        let article = format!(
            "<html><body><h1>County office</h1><p>{}</p><iframe src=\"/map\"></iframe></body></html>",
            "Opening hours, services and contacts of the county office. ".repeat(5)
        );
        for page in [
            article.as_str(),
            "<frameset><frame src=\"about:blank\"></frameset>",
            "<p>Our office</p><iframe src=\"https://video.example/embed/1\" width=\"560\" height=\"315\"></iframe>",
            "<html><body>nothing framed</body></html>",
        ] {
            assert_eq!(frame(page), None, "{page}");
        }
    }

    #[test]
    fn the_header_speaks_first_then_the_first_meta_refresh_of_the_page() {
        let page = r#"<html><head><META content="0; url=/from-meta/" HTTP-EQUIV=Refresh>
            <meta http-equiv="refresh" content="0; url=/second/"></head></html>"#;
        assert_eq!(target(None, page).as_deref(), Some("/from-meta/"));
        assert_eq!(
            target(Some("0;url=/from-header/"), page).as_deref(),
            Some("/from-header/")
        );
        // Other meta tags, and attributes that only end in the names, are not it.
        let other = r#"<meta name="description" content="0; url=/no/">
            <meta data-http-equiv="refresh" content="0; url=/no/">"#;
        assert_eq!(target(None, other), None);
        // A page that reloads itself every five minutes stays the page.
        assert_eq!(
            target(None, r#"<meta http-equiv="refresh" content="300">"#),
            None
        );
    }
}
