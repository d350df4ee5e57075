//! What a page shows a person, told from its markup without patterns: how much text,
//! and whether anything is drawn without text (an image, a frame, what a script draws).
//! One pass over the text that stops as soon as the question is settled, so a real page
//! costs the reading of its first few hundred bytes; nothing is copied.

/// Elements that show something without text: what a script draws, images, frames,
/// plugins and form controls. `<noscript>` needs no place here: its content is read as
/// the page's own.
const DRAWING_TAGS: &[&[u8]] = &[
    b"script",
    b"img",
    b"image",
    b"picture",
    b"svg",
    b"canvas",
    b"video",
    b"audio",
    b"iframe",
    b"frame",
    b"frameset",
    b"object",
    b"embed",
    b"applet",
    b"input",
    b"form",
    b"button",
    b"select",
    b"textarea",
];

/// Elements whose content a browser never shows on the page (a script's is read as
/// drawing something, not as text).
const UNSHOWN_ELEMENTS: &[&[u8]] = &[b"script", b"style", b"title", b"template"];

/// What a page was seen to show, as far as it was read.
#[derive(Debug, Default)]
struct Shown {
    /// Characters of text a person reads.
    chars: usize,
    /// Whether something is drawn without text.
    drawn: bool,
    /// Whether a script written into the page's head was seen: it may draw the body
    /// of a whole page, but not of one cut off before its body closed.
    head_script: bool,
    /// Whether the reading is inside `<head>`.
    in_head: bool,
}

/// Whether a page shows a person nothing at all: no text outside tags, comments,
/// scripts, styles, the title and templates (white space, control characters, a
/// byte-order mark and `&nbsp;` are no text), and nothing drawn without text
/// ([`DRAWING_TAGS`], or a background image).
///
/// A hidden element draws nothing (`hidden`, `display: none`, `visibility: hidden`,
/// no width or height, a hidden input). A script written into the head of a page cut
/// off before its body closed drew nothing in it: PHP died after the head was sent
/// (WordPress's inline emoji script, hunt Z4), while an app's shell loads its script
/// (`src=`) or comes whole.
pub(crate) fn shows_nothing(text: &str) -> bool {
    let seen = read(text, |s| s.chars > 0 || s.drawn);
    seen.chars == 0 && !seen.drawn && (!seen.head_script || cut_off(text.as_bytes()))
}

/// Whether `text` is an HTML page that ends before its body does: it opens `<html>` or
/// `<body>`, and closes neither.
pub(crate) fn cut_off_page(text: &str) -> bool {
    let b = text.as_bytes();
    (find_ascii_ci(b, b"<body").is_some() || find_ascii_ci(b, b"<html").is_some()) && cut_off(b)
}

/// Whether a page ends before its body does: no `</body>` nor `</html>` in it, and
/// either a body opened or the head never closed. A page of a head alone, closed, is
/// whole (its script is the page: a redirect stub, an app shell), and so is one whose
/// head's script writes the page or sends the visitor on (`document.write`,
/// `location`), as the HTML standard lets a page leave its end tags out (review AB).
fn cut_off(b: &[u8]) -> bool {
    let found = |what: &[u8]| find_ascii_ci(b, what).is_some();
    if found(b"</body") || found(b"</html") {
        return false;
    }
    found(b"<body") || !(found(b"</head") || found(b"document.write") || found(b"location"))
}

/// Elements whose end tag HTML requires: a page that ends with one of them open was
/// cut off part way, where one that leaves out only the optional end tags (`</p>`,
/// `</li>`, `</body>`, `</html>`) may be whole.
const CONTAINERS: &[&[u8]] = &[
    b"div", b"ul", b"ol", b"table", b"section", b"article", b"main", b"nav", b"form", b"aside",
    b"header", b"footer",
];

/// Whether `text` ends with an element of [`CONTAINERS`] open (opened more often than
/// closed; scripts', styles' and comments' words are no tags): the page was cut off
/// part way, not written without its optional end tags (review AB).
pub(crate) fn left_open(text: &str) -> bool {
    let b = text.as_bytes();
    let mut open = [0i64; CONTAINERS.len()];
    let mut i = 0;
    while let Some(at) = memchr::memchr(b'<', &b[i..]).map(|p| i + p) {
        if b[at..].starts_with(b"<!--") {
            i = comment_end(b, at);
            continue;
        }
        let Some(Tag { closing, name, end }) = tag_at(b, at) else {
            i = at + 1;
            continue;
        };
        let named = |n: &&[u8]| n.eq_ignore_ascii_case(name);
        i = if !closing && UNSHOWN_ELEMENTS.iter().any(named) {
            closing_tag(b, end, name)
        } else {
            end
        };
        if let Some(k) = CONTAINERS.iter().position(named) {
            let self_closed = b[at..end].ends_with(b"/>");
            open[k] += if closing { -1 } else { i64::from(!self_closed) };
        }
    }
    open.iter().any(|n| *n > 0)
}

/// Whether a page shows more than `limit` characters of text (scripts, styles, the
/// title and comments left out).
pub(crate) fn text_longer_than(text: &str, limit: usize) -> bool {
    read(text, |s| s.chars > limit).chars > limit
}

/// Reads what `text` shows until `settled` says enough was seen.
fn read(text: &str, settled: impl Fn(&Shown) -> bool) -> Shown {
    let b = text.as_bytes();
    let mut seen = Shown::default();
    let mut i = 0;
    while i < b.len() && !settled(&seen) {
        i = match b[i] {
            b'<' => match markup(b, i) {
                Markup::Text => {
                    seen.chars += 1;
                    i + 1
                }
                Markup::Hidden(end) => {
                    seen.in_head = in_head_after(&b[i..end], seen.in_head);
                    end
                }
                Markup::Drawing(end) => {
                    seen.drawn = true;
                    end
                }
                Markup::Script(end) if seen.in_head => {
                    seen.head_script = true;
                    end
                }
                Markup::Script(end) => {
                    seen.drawn = true;
                    end
                }
            },
            b'&' => {
                let (len, blank) = reference(&b[i..]);
                seen.chars += usize::from(!blank);
                i + len
            }
            c if c.is_ascii_whitespace() || c.is_ascii_control() => i + 1,
            c if c.is_ascii() => {
                seen.chars += 1;
                i + 1
            }
            _ => {
                let c = text[i..].chars().next().unwrap_or(' ');
                seen.chars += usize::from(!unseen(c));
                i + c.len_utf8()
            }
        };
    }
    seen
}

/// What a `<` opens.
enum Markup {
    /// Nothing: it is text (`<3`, `a < b`).
    Text,
    /// Markup that shows nothing, ending here: a comment, a tag, an unshown element.
    Hidden(usize),
    /// Markup that draws something, ending here.
    Drawing(usize),
    /// A script written into the page (no `src`), ending here: it draws, unless it is
    /// in the head of a page cut off before its body ([`shows_nothing`]).
    Script(usize),
}

/// Whether the reading is inside `<head>` after `tag`, a tag that shows nothing.
fn in_head_after(tag: &[u8], before: bool) -> bool {
    let named = |name: &[u8]| {
        tag.get(..name.len())
            .is_some_and(|t| t.eq_ignore_ascii_case(name))
            && tag
                .get(name.len())
                .is_some_and(|c| c.is_ascii_whitespace() || matches!(c, b'>' | b'/'))
    };
    if named(b"<head") {
        true
    } else if named(b"</head") || named(b"<body") {
        false
    } else {
        before
    }
}

/// Whether a drawing element's tag hides it: `hidden`, a style with `display: none`
/// or `visibility: hidden`, a width or height of 0 (WordPress's duotone filters, an
/// icon sprite's `<svg>`), a hidden input.
fn hides(tag: &[u8]) -> bool {
    let value = |name| attribute(tag, name).and_then(|v| v);
    let style: Vec<u8> = value(b"style")
        .unwrap_or_default()
        .iter()
        .filter(|c| !c.is_ascii_whitespace())
        .map(u8::to_ascii_lowercase)
        .collect();
    let has = |needle: &[u8]| memchr::memmem::find(&style, needle).is_some();
    let is = |name, v: &[u8]| value(name).is_some_and(|x| x.eq_ignore_ascii_case(v));
    // An event handler of its own (`onload="this.style.display='block'"`, a splash
    // faded in) may show it: a script, which draws.
    let handled = attributes(tag).any(|(n, _)| n.len() > 2 && n[..2].eq_ignore_ascii_case(b"on"));
    !handled
        && (attribute(tag, b"hidden").is_some()
            || has(b"display:none")
            || has(b"visibility:hidden")
            || is(b"type", b"hidden")
            || is(b"width", b"0")
            || is(b"height", b"0"))
}

/// The attribute `name` (lower case) of a tag: `Some(None)` when it stands alone,
/// `Some(Some(value))` with its value, quotes taken off.
fn attribute<'t>(tag: &'t [u8], name: &[u8]) -> Option<Option<&'t [u8]>> {
    attributes(tag)
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, value)| value)
}

/// The attributes of a tag (`<name …>`) as HTML's tokenizer reads them, in order: a
/// name, and its value when it has one (quotes taken off). Words inside a quoted value
/// are part of it (`alt="the hidden valley"` has no `hidden`).
fn attributes(tag: &[u8]) -> impl Iterator<Item = (&[u8], Option<&[u8]>)> {
    let is_space = |c: &u8| c.is_ascii_whitespace();
    let run = |from: usize, go: &dyn Fn(&u8) -> bool| {
        from + tag
            .get(from..)
            .map_or(0, |t| t.iter().take_while(|c| go(c)).count())
    };
    let mut i = run(1, &|c| !is_space(c) && !matches!(c, b'>' | b'/'));
    std::iter::from_fn(move || {
        i = run(i, &|c| is_space(c) || *c == b'/');
        if tag.get(i).is_none_or(|c| *c == b'>') {
            return None;
        }
        let start = i;
        // A stray `=` where a name should be is read as the name's first character.
        i = run(i + 1, &|c| !is_space(c) && !matches!(c, b'=' | b'>' | b'/'));
        let name = &tag[start..i];
        let eq = run(i, &is_space);
        if tag.get(eq) != Some(&b'=') {
            return Some((name, None));
        }
        let at = run(eq + 1, &is_space);
        let value = match tag.get(at) {
            Some(q @ (b'"' | b'\'')) => {
                let from = at + 1;
                let len = memchr::memchr(*q, &tag[from..]).unwrap_or(tag.len() - from);
                i = (from + len + 1).min(tag.len());
                &tag[from..from + len]
            }
            _ => {
                i = run(at, &|c| !is_space(c) && *c != b'>');
                &tag[at..i]
            }
        };
        Some((name, Some(value)))
    })
}

/// Where the comment opened by the `<!--` at `b[at]` ends (just past it), as HTML's
/// tokenizer ends it: at once for `<!-->` and `<!--->` (the "abrupt closing of empty
/// comment" parse error), else at the first `-->` or `--!>` (the "incorrectly closed
/// comment" one); a comment never closed runs to the end. Each byte is looked at a
/// bounded number of times.
pub(crate) fn comment_end(b: &[u8], at: usize) -> usize {
    let from = at + 4;
    let body = &b[from.min(b.len())..];
    if body.starts_with(b">") {
        return from + 1;
    }
    if body.starts_with(b"->") {
        return from + 2;
    }
    let mut i = from;
    while let Some(p) = memchr::memmem::find(&b[i..], b"--").map(|p| i + p) {
        let after = &b[p + 2..];
        if after.starts_with(b">") {
            return p + 3;
        }
        if after.starts_with(b"!>") {
            return p + 4;
        }
        i = p + 1;
    }
    b.len()
}

/// What the `<` at `b[at]` opens, and where it ends.
fn markup(b: &[u8], at: usize) -> Markup {
    if b[at..].starts_with(b"<!--") {
        return Markup::Hidden(comment_end(b, at));
    }
    let Some(Tag { closing, name, end }) = tag_at(b, at) else {
        return Markup::Text;
    };
    let is = |list: &[&[u8]]| list.iter().any(|n| n.eq_ignore_ascii_case(name));
    if closing {
        return Markup::Hidden(end);
    }
    let tag = &b[at..end];
    let drawing = is(DRAWING_TAGS) || has_background_image(tag);
    if !is(UNSHOWN_ELEMENTS) {
        return match drawing {
            // What a hidden SVG holds is hidden with it; one closed by its own tag
            // (`<svg …/>`, as the HTML parser reads foreign elements) holds nothing.
            true if hides(tag) && name.eq_ignore_ascii_case(b"svg") && !tag.ends_with(b"/>") => {
                Markup::Hidden(closing_tag(b, end, name))
            }
            true if hides(tag) => Markup::Hidden(end),
            true => Markup::Drawing(end),
            false => Markup::Hidden(end),
        };
    }
    // A script draws and a style's background image shows; a title's or a template's
    // words do not.
    let close = closing_tag(b, end, name);
    if name.eq_ignore_ascii_case(b"script") && attribute(tag, b"src").is_none() {
        Markup::Script(close)
    } else if drawing || has_background_image(&b[end..close]) {
        Markup::Drawing(close)
    } else {
        Markup::Hidden(close)
    }
}

/// A tag: whether it closes an element, its name, and where it ends (just past its
/// `>`, or the page's end).
struct Tag<'b> {
    closing: bool,
    name: &'b [u8],
    end: usize,
}

/// The tag the `<` at `b[at]` opens; `None` when that `<` is text ([`opens_markup`]).
fn tag_at(b: &[u8], at: usize) -> Option<Tag<'_>> {
    let rest = &b[at..];
    let closing = rest.get(1) == Some(&b'/');
    if !opens_markup(rest, closing) {
        return None;
    }
    let name_at = at + 1 + usize::from(closing);
    let name_len = b[name_at..]
        .iter()
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'-')
        .count();
    Some(Tag {
        closing,
        name: &b[name_at..name_at + name_len],
        end: tag_gt(b, name_at).map_or(b.len(), |gt| gt + 1),
    })
}

/// Whether the `<` that `rest` opens with starts markup. A `<` before anything but a
/// letter (`<3`, `a < b`) is text, as browsers read it; `<!DOCTYPE` and `<?xml` are
/// markup. A PHP script sent as it is (`<?php`) is text, for `pages::soft_failure` to
/// name.
fn opens_markup(rest: &[u8], closing: bool) -> bool {
    match rest.get(1 + usize::from(closing)) {
        Some(c) if c.is_ascii_alphabetic() => true,
        Some(b'!') => !closing,
        Some(b'?') => rest
            .get(..5)
            .is_some_and(|w| w.eq_ignore_ascii_case(b"<?xml")),
        _ => false,
    }
}

/// Where the `>` that ends the tag whose name starts at `from` is, as HTML's tokenizer
/// reads it: a `>` inside an attribute's quoted value (`title="Home > News"`) ends
/// nothing; a quote never closed is no quote (rather than the rest of the page a tag).
/// `None` when the tag is never closed.
pub(crate) fn tag_gt(b: &[u8], from: usize) -> Option<usize> {
    let mut i = from;
    let mut after_equals = false;
    while i < b.len() {
        match b[i] {
            b'>' => return Some(i),
            // A quote never closed takes nothing with it: the first `>` ends the tag.
            q @ (b'"' | b'\'') if after_equals => {
                if let Some(e) = memchr::memchr(q, &b[i + 1..]) {
                    i += 1 + e;
                }
                after_equals = false;
            }
            b'=' => after_equals = true,
            c if c.is_ascii_whitespace() => {}
            _ => after_equals = false,
        }
        i += 1;
    }
    None
}

/// Where the first `</name` at or after `from` starts; the end of `b` when there is none
/// (an unclosed element runs to the end, as in browsers).
pub(crate) fn closing_tag(b: &[u8], from: usize, name: &[u8]) -> usize {
    memchr::memmem::find_iter(&b[from..], b"</")
        .map(|e| from + e)
        .find(|&at| {
            b.get(at + 2..at + 2 + name.len())
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
        .unwrap_or(b.len())
}

/// Whether a tag or a style sets an image: `url(` in CSS, or an old `background=`.
/// `url(#…)` names a filter, mask or gradient of the page's own SVGs (WordPress's
/// duotone styles), not an image.
fn has_background_image(css_or_tag: &[u8]) -> bool {
    let mut at = 0;
    while let Some(p) = find_ascii_ci(&css_or_tag[at..], b"url(") {
        at += p + 4;
        let target = css_or_tag[at..]
            .iter()
            .find(|c| !c.is_ascii_whitespace() && !matches!(c, b'"' | b'\''));
        if !matches!(target, Some(b'#' | b')') | None) {
            return true;
        }
    }
    find_ascii_ci(css_or_tag, b"background=").is_some()
}

/// The character reference at the start of `b` (`&amp;`, `&#160;`; a bare `&` is one
/// character): its length, and whether it shows no text (a non-breaking space).
fn reference(b: &[u8]) -> (usize, bool) {
    let name = b[1..]
        .iter()
        .take(10)
        .take_while(|c| c.is_ascii_alphanumeric() || **c == b'#')
        .count();
    if name == 0 || b.get(1 + name) != Some(&b';') {
        return (1, false);
    }
    let whole = &b[..name + 2];
    let blank = [&b"&nbsp;"[..], b"&#160;", b"&#xa0;"]
        .iter()
        .any(|e| e.eq_ignore_ascii_case(whole));
    (whole.len(), blank)
}

/// Whether a character past ASCII draws nothing: white space (a non-breaking one
/// included), a control or format character (a byte-order mark, a zero-width space).
fn unseen(c: char) -> bool {
    c.is_whitespace()
        || c.is_control()
        || matches!(c, '\u{feff}' | '\u{200b}'..='\u{200d}' | '\u{2060}')
}

/// Where `needle` (ASCII, lower case) first occurs in `hay`, whatever its case.
fn find_ascii_ci(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len())
        .position(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `<!-->` and `<!--->` are whole, empty comments to a browser, and `--!>` closes a
    /// comment too: the page after them shows. A working page starting with one was
    /// judged blank (`down/body_too_small`): the comment was taken to run to the next
    /// `-->`, or the end of the page.
    #[test]
    fn a_page_after_an_abruptly_closed_comment_shows() {
        for opener in ["<!-->", "<!--->", "<!-- build 42 --!>"] {
            let page = format!("{opener}<html><body><h1>County office</h1></body></html>");
            assert!(!shows_nothing(&page), "{page}");
        }
    }

    #[test]
    fn a_page_with_no_text_and_nothing_drawn_shows_nothing() {
        for blank in [
            " \n\t\r ",
            "\u{feff}\r\n\r\n",
            "\0\0\0\0",
            "<!DOCTYPE html><html><head><title>County</title></head><body></body></html>",
            "<html><!-- <p>old</p> --><style>p{color:red}</style><body>&nbsp; &#160;</body></html>",
            "<html><head><meta charset=utf-8><link rel=stylesheet href=/a.css><title>",
            "<?xml version=\"1.0\"?><!DOCTYPE html><html><body>\u{3000}</body></html>",
        ] {
            assert!(shows_nothing(blank), "{blank:?}");
        }
        for shown in [
            "<html><body>County office</body></html>",
            "<body>&copy;</body>",
            "<body>\u{00a0}欢迎</body>",
            "<body><div id=app></div><script src=/app.js></script></body>",
            "<body><IMG src=/logo.png></body>",
            "<body><svg viewBox='0 0 1 1'></svg></body>",
            "<body><canvas></canvas></body>",
            "<body><video src=/v.mp4></video></body>",
            "<frameset><frame src=/main></frameset>",
            "<body><iframe src=/portal></iframe></body>",
            "<body><object data=/x.swf></object></body>",
            "<body><embed src=/x.swf></body>",
            "<body><form><input name=q></form></body>",
            "<body><noscript>Turn on JavaScript</noscript></body>",
            "<body style=\"background:url(/splash.jpg)\"></body>",
            "<?php\nrequire __DIR__ . '/wp-blog-header.php';\n",
            "<p>I <3 the county</p>",
        ] {
            assert!(!shows_nothing(shown), "{shown:?}");
        }
    }

    /// Hunt Z4: WordPress 6.1 died of a plugin's memory right after `<body>`, its
    /// header sent: the head (its inline emoji script, its title) and the block theme's
    /// duotone filters, hidden SVGs of no size, then nothing. Chromium shows a blank
    /// page, and it was `up`: every SVG was taken for a drawing, and so was the head's
    /// script. A hidden element draws nothing, and a script written in the head of a
    /// page cut off before its body closed drew nothing in it.
    #[test]
    fn a_white_screen_after_hidden_drawings_and_a_head_script_shows_nothing() {
        let head = "<!doctype html><html lang=en-US><head><meta charset=UTF-8>\
                    <title>County Site</title><script>window.settings = {\"a\": 1};\
                    !function(d){var c=d.createElement('canvas');}(document);</script>\
                    <style>body{margin:0}</style></head>";
        let filters = "<svg xmlns=\"http://www.w3.org/2000/svg\" viewBox=\"0 0 0 0\" width=\"0\" \
                       height=\"0\" focusable=\"false\" role=\"none\" style=\"visibility: hidden; \
                       position: absolute; left: -9999px; overflow: hidden;\"><defs><filter \
                       id=\"duotone\"><feColorMatrix type=\"matrix\" values=\"1 0 0 0 0\"/>\
                       </filter></defs></svg>";
        let white_screen = format!("{head}\n<body class=\"home blog\">\n{filters}{filters}");
        assert!(shows_nothing(&white_screen), "{white_screen}");
        for hidden in [
            "<svg style=\"display:none\"><symbol id=i><path d=\"M0 0h24\"/></symbol></svg>",
            "<svg hidden><image href=/a.png /></svg>",
            "<input type=\"hidden\" name=\"nonce\" value=\"1\">",
            "<img src=/pixel.gif width=0 height=0>",
            "<iframe src=/tag style=\"display: none; visibility: hidden\"></iframe>",
            "<style>.duo img { filter: url('#wp-duotone-grayscale'); }</style>",
        ] {
            let page = format!("<html><head><title>T</title></head><body>{hidden}</body></html>");
            assert!(shows_nothing(&page), "{page}");
        }
        for shown in [
            // The same page whole: its head's script may draw its body.
            format!("{head}<body></body></html>"),
            // An app's shell, its script loaded from the head, its end tags left out.
            "<html><head><script type=module src=/assets/index.js></script></head><body><div id=app>"
                .to_string(),
            // A sprite's icon in use, and a hidden SVG's visible neighbour.
            "<body><svg style=\"display:none\"><symbol id=i/></svg><svg width=24 height=24><use href=#i /></svg>"
                .to_string(),
            "<body><svg class=\"visually-hidden-icon\" width=\"20\"><path d=\"M0\"/></svg>".to_string(),
            "<body><svg stroke-width=\"0\" width=\"20\" data-hidden=\"no\"></svg>".to_string(),
            "<body><img src=/map.png width=\"0.5in\" height=40>".to_string(),
            // Words inside another attribute's value are no attribute of their own.
            "<body><img alt=\"the hidden valley\" src=/valley.jpg></body>".to_string(),
            "<body><img title='width=0' src=/a.png></body>".to_string(),
            format!("{head}<body>{filters}<script src=/app.js></script>"),
        ] {
            assert!(!shows_nothing(&shown), "{shown}");
        }
    }

    /// Review AB: an SVG with nothing in it is often closed by its own tag (`<svg …/>`,
    /// as XHTML, JSX-style and Facelets templates write an empty element, and as the
    /// HTML parser honours it for SVG: the element ends there). A hidden one was read to
    /// the next `</svg` (or the end of the page), so the page's text after it was
    /// skipped: a working page judged blank, `down/body_too_small`. Chromium shows the
    /// heading and the text.
    #[test]
    fn review_ab_a_self_closed_hidden_svg_hides_nothing_after_it() {
        for page in [
            "<!DOCTYPE html><html><head><title>County office</title></head><body>\
             <svg xmlns=\"http://www.w3.org/2000/svg\" style=\"display: none;\"/>\
             <h1>County office</h1><p>Opening hours: 8 to 4.</p></body></html>",
            // The text between a hidden empty SVG and a visible logo further on.
            "<body><svg width=\"0\" height=\"0\" style=\"position:absolute\"/><h1>Permits</h1>\
             <p>Apply online.</p><svg class=logo viewBox='0 0 10 10'><circle r=\"4\"/></svg></body>",
        ] {
            assert!(!shows_nothing(page), "{page}");
        }
    }

    /// Review AB: a page whose head's script is the page, written as the HTML standard
    /// lets a page be written (`</body>` and `</html>` left out), is not a page cut off:
    /// a script sending the visitor on (`location.replace`), or writing the page
    /// (`document.write`). Chromium follows the one and shows the other; both were `up`
    /// before the head's script was read as drawing nothing in a page without end tags,
    /// and are blank (`down/body_too_small`) now.
    #[test]
    fn review_ab_a_page_made_by_its_heads_script_without_end_tags_shows() {
        for page in [
            "<!doctype html><html><head><meta charset=utf-8><title>Webmail</title>\
             <script>location.replace('/owa/' + location.search)</script></head>",
            "<html><head><title>Status</title>\
             <script>document.write('<h1>All systems operational</h1>')</script>",
        ] {
            assert!(!shows_nothing(page), "{page}");
        }
    }

    /// Review AB: an element hidden by its tag may be shown by its own event handler,
    /// a script: a splash image faded in once loaded. Chromium shows the image; the page
    /// was `up` before hidden drawings drew nothing.
    #[test]
    fn review_ab_a_drawing_shown_by_its_own_handler_draws() {
        let page = "<!doctype html><html><head><title>Coming back</title></head><body>\
                    <img src=/splash.jpg alt=\"\" style=\"display:none\" \
                    onload=\"this.style.display='block'\"></body></html>";
        assert!(!shows_nothing(page), "{page}");
    }

    /// Review AB: a page left without its optional end tags is whole; one ending with a
    /// list, a table or a `div` open was cut off part way.
    #[test]
    fn a_page_is_left_open_only_by_an_element_whose_end_tag_is_required() {
        let whole = "<!doctype html><html lang=en><title>Road works</title><body>\
                     <h1>Road works</h1><p>Main Street: Monday<p>Mill Lane: Thursday\
                     <ul><li>one<li>two</ul><div/><!-- <div> --><script>x='<div>'</script>";
        assert!(!left_open(whole));
        for cut in [
            "<html><body><h1>Permits</h1><ul><li>Permit 1</li><li>Permit 2</li>",
            "<html><body><div class=page><div class=main><p>Half of it</div>",
            "<html><body><TABLE><tr><td>1</td></tr>",
        ] {
            assert!(left_open(cut), "{cut}");
        }
    }

    #[test]
    fn text_is_counted_outside_scripts_styles_titles_and_comments() {
        let page = "<title>Just a moment</title><style>p{}</style><!-- note -->\
                    <script>var a = 'many words here';</script><p>Wait &amp; see</p>"; // 8 characters
        assert!(text_longer_than(page, 7));
        assert!(!text_longer_than(page, 8));
    }
}
