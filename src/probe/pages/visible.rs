//! What a person reads on a page: where the page shows nothing (tags, comments,
//! scripts, styles, templates, hidden elements) and the text left, as the readers of
//! phrases and a job's keywords see it. One forward pass, bounded work per byte.

use std::ops::Range;

/// Elements whose edges part words besides the blocks a `<p>` ends at ([`P_CLOSERS`]):
/// "a<br>b" and "a</td><td>b" read "a b", where an inline element's edges part nothing
/// ("Spring<b>field</b>").
const ALSO_PARTING: &[&[u8]] = &[
    b"br", b"td", b"th", b"tr", b"caption", b"option", b"title", b"head", b"body", b"html",
];

/// Pushes `run` (text between unseen spans) without the declarations in it that a
/// browser shows nothing of: `<!DOCTYPE …>`, `<![CDATA[…]]>`'s brackets, `<?xml …?>`.
fn push_without_declarations(kept: &mut String, run: &str) {
    let mut rest = run;
    while let Some(lt) = rest.find("<!").into_iter().chain(rest.find("<?")).min() {
        kept.push_str(&rest[..lt]);
        rest = rest[lt..].find('>').map_or("", |gt| &rest[lt + gt + 1..]);
    }
    kept.push_str(rest);
}

/// The text a person reads on a page, as a job's keywords are meant (CONTRACT: "the
/// decoded text of the page"): what [`Unseen`] leaves (no tags, attributes, comments,
/// scripts, styles, templates or hidden elements; the title kept, the tab shows it),
/// character references decoded (`&amp;`, `&#27426;`, `&nbsp;`), white space collapsed
/// to single spaces, a block element's edge a space ([`P_CLOSERS`], [`ALSO_PARTING`]). A JSON body is
/// its own text.
pub(crate) fn visible_text(text: &str) -> String {
    let collapsed = |t: &str| t.split_whitespace().collect::<Vec<_>>().join(" ");
    if text.trim_start().starts_with(['{', '[']) {
        return collapsed(text);
    }
    let lower = text.as_bytes().to_ascii_lowercase();
    let unseen = Unseen::of(&lower);
    let mut kept = String::with_capacity(text.len());
    let mut at = 0;
    let whole = text.len()..text.len();
    for span in unseen.0.iter().chain(std::iter::once(&whole)) {
        // A tag's span starts after its `<`, which is no text either.
        let start = match span.start.checked_sub(1) {
            Some(lt) if lt >= at && lower[lt] == b'<' => lt,
            _ => span.start,
        };
        if let Some(run) = text.get(at..start.max(at)) {
            push_without_declarations(&mut kept, run);
        }
        let name = lower[span.start.min(lower.len())..]
            .iter()
            .skip_while(|c| **c == b'/')
            .take_while(|c| c.is_ascii_alphanumeric())
            .count();
        let from = span.start + usize::from(lower.get(span.start) == Some(&b'/'));
        let tag = &lower[from.min(lower.len())..(from + name).min(lower.len())];
        if P_CLOSERS.contains(&tag) || ALSO_PARTING.contains(&tag) {
            kept.push(' ');
        }
        at = at.max(span.end);
        while at < text.len() && !text.is_char_boundary(at) {
            at += 1;
        }
    }
    collapsed(&html_escape::decode_html_entities(&kept))
}

/// Elements whose words a person never reads on the page.
const UNREAD_ELEMENTS: &[&[u8]] = &[b"script", b"style", b"template", b"noscript"];

/// Elements whose content is text, not markup, and shown: a `<div hidden>` in a title
/// or a text box opens nothing.
const TEXT_ELEMENTS: &[&[u8]] = &[b"title", b"textarea"];

/// Elements with no content: hiding one hides no words (its attributes are unread
/// anyway).
const VOID_ELEMENTS: &[&[u8]] = &[
    b"area", b"base", b"br", b"col", b"embed", b"hr", b"img", b"input", b"keygen", b"link",
    b"meta", b"param", b"source", b"track", b"wbr",
];

/// Start tags before which a browser closes an open `<p>`: a `<p hidden>` followed by a
/// `<div>` with no `</p>` between ends there, and what follows shows.
const P_CLOSERS: &[&[u8]] = &[
    b"address",
    b"article",
    b"aside",
    b"blockquote",
    b"center",
    b"details",
    b"dialog",
    b"dir",
    b"div",
    b"dl",
    b"dd",
    b"dt",
    b"fieldset",
    b"figcaption",
    b"figure",
    b"footer",
    b"form",
    b"h1",
    b"h2",
    b"h3",
    b"h4",
    b"h5",
    b"h6",
    b"header",
    b"hgroup",
    b"hr",
    b"li",
    b"listing",
    b"main",
    b"menu",
    b"nav",
    b"ol",
    b"p",
    b"plaintext",
    b"pre",
    b"search",
    b"section",
    b"summary",
    b"table",
    b"ul",
    b"xmp",
];

/// The most elements followed open inside a hidden one; deeper markup gives the hiding
/// up (its words count), which keeps the pass linear whatever the page.
const MAX_OPEN_IN_HIDDEN: usize = 256;

/// Whether a browser closes an open element `open` when a start tag `new` comes (the
/// end tags HTML lets a page leave out). Read wider than browsers do (they look at the
/// elements between too): a hidden element closed too early hides less, and its words
/// count.
fn implicitly_closes(new: &[u8], open: &[u8]) -> bool {
    let heading = |n: &[u8]| matches!(n, b"h1" | b"h2" | b"h3" | b"h4" | b"h5" | b"h6");
    match open {
        b"p" => P_CLOSERS.contains(&new),
        b"li" | b"a" | b"button" | b"optgroup" => new == open,
        b"dt" | b"dd" => matches!(new, b"dt" | b"dd"),
        b"option" => matches!(new, b"option" | b"optgroup"),
        b"td" | b"th" => matches!(new, b"td" | b"th" | b"tr" | b"tbody" | b"thead" | b"tfoot"),
        b"tr" => matches!(new, b"tr" | b"tbody" | b"thead" | b"tfoot"),
        b"tbody" | b"thead" | b"tfoot" => matches!(new, b"tbody" | b"thead" | b"tfoot"),
        b"rb" | b"rt" | b"rtc" | b"rp" => matches!(new, b"rb" | b"rt" | b"rtc" | b"rp"),
        _ => heading(open) && heading(new),
    }
}

/// Where in a lower-cased page a person reads nothing: sorted, disjoint byte ranges
/// of comments, tags (an attribute's value: an image's `alt`, a link's `title`),
/// scripts, styles and templates, and elements hidden by an inline style or the
/// `hidden` attribute. Made in one forward pass (each byte looked at a bounded number of
/// times), and only for a page where a phrase was found.
pub(super) struct Unseen(Vec<Range<usize>>);

impl Unseen {
    pub(super) fn of(lower: &[u8]) -> Unseen {
        let mut pass = Pass {
            lower,
            spans: Vec::new(),
            hidden: None,
        };
        let mut i = 0;
        while let Some(lt) = memchr::memchr(b'<', &lower[i..]).map(|p| i + p) {
            i = if lower[lt..].starts_with(b"<!--") {
                pass.comment(lt)
            } else if let Some(tag) = Tag::at(lower, lt) {
                pass.tag(lt, &tag)
            } else {
                // `a < b`, `<3`: text.
                lt + 1
            };
        }
        // A hidden element still open at the end, or given up (its end tag missing, or
        // lost in markup too broken to follow) hides nothing: its tags and comments
        // stay unseen, its words count. Taking it to the end of the page, as a browser
        // may, would let one stray `<span hidden>` hide the "Access denied" of a real
        // block page, making a broken site up; erring this way makes at worst a
        // working page with a broken hidden element degraded.
        Unseen(pass.spans)
    }

    /// Whether byte `at` of the page lies where a person reads nothing.
    pub(super) fn covers(&self, at: usize) -> bool {
        let next = self.0.partition_point(|r| r.end <= at);
        self.0.get(next).is_some_and(|r| r.start <= at)
    }
}

/// The unseen range of a tag from its `<` at `lt` to `end`: from just after the `<`,
/// which is where a phrase that is markup itself starts (PHP's `<b>fatal error</b>:`).
fn tag_span(lt: usize, end: usize) -> Range<usize> {
    lt + 1..end
}

/// The forward pass of [`Unseen::of`]: the unseen ranges so far, and the hidden element
/// being read through. Each method takes the markup at a `<` and says where the pass
/// goes on.
struct Pass<'a> {
    lower: &'a [u8],
    spans: Vec<Range<usize>>,
    hidden: Option<Hidden<'a>>,
}

impl<'a> Pass<'a> {
    /// A comment at `lt`, ended where a browser ends it: `<!-->` and `<!--->` are whole,
    /// empty comments, `--!>` closes one too; an unclosed comment hides the rest.
    fn comment(&mut self, lt: usize) -> usize {
        let end = crate::probe::shown::comment_end(self.lower, lt);
        self.spans.push(lt..end);
        end
    }

    /// A tag at `lt`.
    fn tag(&mut self, lt: usize, tag: &Tag<'a>) -> usize {
        self.spans.push(tag_span(lt, tag.end));
        if tag.closing {
            self.end_tag(tag);
            tag.end
        } else if UNREAD_ELEMENTS.contains(&tag.name) || TEXT_ELEMENTS.contains(&tag.name) {
            self.raw_text(tag)
        } else {
            self.start_tag(lt, tag);
            tag.end
        }
    }

    /// An end tag, closing what it closes inside the hidden element.
    fn end_tag(&mut self, tag: &Tag<'_>) {
        let Some(h) = self.hidden.as_mut() else {
            return;
        };
        match h.open.iter().rposition(|open| *open == tag.name) {
            // Its own end tag.
            Some(0) => {
                h.fold(&mut self.spans, tag.end, tag.end);
                self.hidden = None;
            }
            Some(at) => h.open.truncate(at),
            // The end tag of an element opened before it, or of none: its own end tag
            // is missing. A browser closes it at a parent's end tag but not at
            // `</body>`, after which it hides the rest of the page; as for one never
            // closed (`Unseen::of`), it hides nothing.
            None => self.hidden = None,
        }
    }

    /// A script, style or template (unread), or a title or textarea (text), read to its
    /// end tag with it: inside a hidden element that end tag closes nothing open there
    /// (which would end the hiding).
    fn raw_text(&mut self, tag: &Tag<'_>) -> usize {
        let lower = self.lower;
        let close = crate::probe::shown::closing_tag(lower, tag.end, tag.name);
        if UNREAD_ELEMENTS.contains(&tag.name) {
            self.spans.push(tag.end..close);
        }
        if close >= lower.len() {
            return close;
        }
        let end = crate::probe::shown::tag_gt(lower, close + 2).map_or(lower.len(), |gt| gt + 1);
        self.spans.push(tag_span(close, end));
        end
    }

    /// A start tag at `lt`: it may close elements open inside the hidden one (the end
    /// tags HTML lets a page leave out), open one inside it, or begin a hidden element.
    fn start_tag(&mut self, lt: usize, tag: &Tag<'a>) {
        let looks = Looks::of(tag.attributes);
        let empty = VOID_ELEMENTS.contains(&tag.name) || tag.self_closing;
        if let Some(h) = self.hidden.as_mut() {
            h.revealed |= h.by_visibility && looks.reveals;
            match h
                .open
                .iter()
                .position(|open| implicitly_closes(tag.name, open))
            {
                Some(0) => {
                    h.fold(&mut self.spans, lt, tag.end);
                    self.hidden = None;
                }
                Some(at) => h.open.truncate(at),
                None => {}
            }
        }
        match self.hidden.as_mut() {
            Some(h) if !empty => {
                if h.open.len() == MAX_OPEN_IN_HIDDEN {
                    // Markup this deep is no message kept for later: give up.
                    self.hidden = None;
                } else {
                    h.open.push(tag.name);
                }
            }
            Some(_) => {}
            // `<body style="display:none">` is how a page hides itself until its script
            // has run, then shows: what it says is read.
            None if !empty && !matches!(tag.name, b"html" | b"body") => {
                self.hidden = looks.hides.map(|by_visibility| Hidden {
                    start: lt,
                    before: self.spans.len() - 1,
                    open: vec![tag.name],
                    by_visibility,
                    revealed: false,
                });
            }
            None => {}
        }
    }
}

/// A hidden element being read through, until its end.
struct Hidden<'a> {
    /// Where its start tag begins.
    start: usize,
    /// How many unseen ranges came before its start tag: those from there on are
    /// folded into one when it ends.
    before: usize,
    /// The elements open inside it, itself first.
    open: Vec<&'a [u8]>,
    /// Hidden by `visibility`, which a descendant can set back to `visible`.
    by_visibility: bool,
    /// A descendant set `visibility: visible`: it shows, so nothing is folded.
    revealed: bool,
}

impl Hidden<'_> {
    /// Marks the element unseen from its start tag to `end` (where it ends, before or
    /// after the tag at `end..tag_end`).
    fn fold(&self, spans: &mut Vec<Range<usize>>, end: usize, tag_end: usize) {
        if self.revealed {
            return;
        }
        spans.truncate(self.before);
        spans.push(self.start..end);
        if end < tag_end {
            spans.push(tag_span(end, tag_end));
        }
    }
}

/// A tag of a lower-cased page.
struct Tag<'a> {
    closing: bool,
    name: &'a [u8],
    /// What follows the name, up to the `>`.
    attributes: &'a [u8],
    /// Ends in `/>`: an SVG element with no content. HTML elements ignore the `/`, but
    /// taking it at its word hides less.
    self_closing: bool,
    /// Just past its `>`, or the end of the page.
    end: usize,
}

impl<'a> Tag<'a> {
    /// The tag the `<` at `lt` opens, if it opens one (a letter, or `/` and a letter,
    /// follows). It ends at the first `>`, quoted or not: a quote left open must not
    /// take the rest of the page into the tag.
    fn at(lower: &'a [u8], lt: usize) -> Option<Tag<'a>> {
        let closing = lower.get(lt + 1) == Some(&b'/');
        let name_at = lt + 1 + usize::from(closing);
        if !lower.get(name_at)?.is_ascii_alphabetic() {
            return None;
        }
        let name_len = lower[name_at..]
            .iter()
            .take_while(|c| !c.is_ascii_whitespace() && !matches!(c, b'/' | b'>'))
            .count();
        let gt = crate::probe::shown::tag_gt(lower, name_at).unwrap_or(lower.len());
        let attributes = &lower[name_at + name_len..gt];
        Some(Tag {
            closing,
            name: &lower[name_at..name_at + name_len],
            attributes,
            self_closing: attributes.trim_ascii_end().ends_with(b"/"),
            end: (gt + 1).min(lower.len()),
        })
    }
}

/// What a start tag's own attributes do to what it holds.
#[derive(Debug, Default, PartialEq, Eq)]
struct Looks {
    /// Hidden: `Some(true)` by `visibility`, which a descendant can undo, `Some(false)`
    /// by `display: none` or the `hidden` attribute, which none can.
    hides: Option<bool>,
    /// `visibility: visible`, which shows it inside an element hidden by `visibility`.
    reveals: bool,
}

impl Looks {
    /// Read from a lower-cased tag's attributes: the `hidden` attribute (any value:
    /// `until-found` too is unseen until searched for) and an inline `style`'s
    /// `display` and `visibility`, the last declaration of each winning. `aria-hidden`
    /// hides from screen readers only: it changes nothing here. A class that a style
    /// sheet hides is not known, and counts as shown.
    fn of(attributes: &[u8]) -> Looks {
        let mut hidden = false;
        let mut style: Option<&[u8]> = None;
        each_attribute(attributes, |name, value| match name {
            b"hidden" => hidden = true,
            // A repeated attribute is ignored by browsers.
            b"style" => style = style.or(Some(value)),
            _ => {}
        });
        let (mut display, mut visibility) = (None, None);
        for declaration in style.unwrap_or_default().split(|c| *c == b';') {
            let Some(colon) = memchr::memchr(b':', declaration) else {
                continue;
            };
            let value = declaration[colon + 1..].trim_ascii();
            let value = value
                .strip_suffix(b"!important")
                .map_or(value, <[u8]>::trim_ascii);
            match declaration[..colon].trim_ascii() {
                b"display" => display = Some(value),
                b"visibility" => visibility = Some(value),
                _ => {}
            }
        }
        // The `hidden` attribute is the browser's own `display: none`, which an inline
        // `display` overrides.
        let hides = if display.map_or(hidden, |d| d == b"none") {
            Some(false)
        } else if matches!(visibility, Some(b"hidden" | b"collapse")) {
            Some(true)
        } else {
            None
        };
        Looks {
            hides,
            reveals: visibility == Some(b"visible"),
        }
    }
}

/// Calls `f` with each attribute's name and value (empty when it has none) of a tag's
/// `attributes`, read as browsers read them: a value quoted with `"` or `'`, or up to
/// white space.
fn each_attribute<'a>(mut rest: &'a [u8], mut f: impl FnMut(&'a [u8], &'a [u8])) {
    loop {
        let gap = rest
            .iter()
            .take_while(|c| c.is_ascii_whitespace() || **c == b'/')
            .count();
        rest = &rest[gap..];
        if rest.is_empty() {
            return;
        }
        // A name may begin with `=`; it takes at least one byte, so the loop ends.
        let name_len = 1 + rest[1..]
            .iter()
            .take_while(|c| !c.is_ascii_whitespace() && !matches!(c, b'/' | b'='))
            .count();
        let name = &rest[..name_len];
        rest = rest[name_len..].trim_ascii_start();
        let mut value: &[u8] = b"";
        if let Some(after) = rest.strip_prefix(b"=") {
            let after = after.trim_ascii_start();
            match after.first() {
                Some(&quote @ (b'"' | b'\'')) => {
                    let len = memchr::memchr(quote, &after[1..]).unwrap_or(after.len() - 1);
                    value = &after[1..1 + len];
                    rest = after.get(len + 2..).unwrap_or_default();
                }
                _ => {
                    let len = after
                        .iter()
                        .take_while(|c| !c.is_ascii_whitespace())
                        .count();
                    value = &after[..len];
                    rest = &after[len..];
                }
            }
        }
        f(name, value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::pages::{challenge, soft_failure};

    #[test]
    fn words_in_a_script_are_not_on_the_page() {
        let login = "<html><body><form>Name <input name=u></form><script>\
            if (bad) { alert('Access denied: wrong password'); }</script></body></html>";
        assert_eq!(soft_failure(login), None);
        // After the script, the page's own words count again.
        let blocked = "<script>var a = 1;</script><h1>Access Denied</h1>";
        assert!(soft_failure(blocked).is_some());
    }

    #[test]
    fn words_where_a_person_never_reads_them_are_not_on_the_page() {
        for page in [
            "<html><!-- TODO: show 'Access denied' to banned users --><p>Welcome</p></html>",
            "<template id=err><h1>Access denied</h1></template><p>Welcome</p>",
            "<style>.access-denied, /* access denied */ p{}</style><p>Welcome</p>",
            "<p>Welcome <img src=lock.png alt=\"access denied icon\"></p>",
            "<a title='Account suspended? Read more' href=/help>Help</a>",
        ] {
            assert_eq!(soft_failure(page), None, "{page}");
        }
        // After a comment, a template or a tag, the page's own words count again.
        for page in [
            "<!-- header --><h1>Access Denied</h1>",
            "<template>x</template><h1>Access Denied</h1>",
            "<img alt=\"logo\"> Access Denied",
            "<!-- a > b --> Access Denied",
        ] {
            assert!(soft_failure(page).is_some(), "{page}");
        }
    }

    #[test]
    fn words_in_an_element_hidden_from_the_reader_are_not_on_the_page() {
        for page in [
            "<div style=\"display:none\">Access denied</div><p>Welcome</p>",
            "<DIV STYLE='color: red; Display : NONE !important'>access denied</DIV><p>Hi</p>",
            "<p hidden>Access denied</p><p>Welcome</p>",
            "<p hidden=until-found>Access denied</p><p>Welcome</p>",
            "<span style=\"visibility: hidden\">Access denied</span> Welcome",
            "<td style=display:none>Access denied</td><td>Welcome</td>",
            // Its own nested elements of the same name, void elements and tags left
            // open inside it end with it.
            "<div hidden><div>a</div><br><img src=x><div><p>Access denied</div></div>Hi",
            // An element hidden inside a hidden one.
            "<section hidden><div style=display:none>x</div>Access denied</section>Hi",
        ] {
            assert_eq!(soft_failure(page), None, "{page}");
        }
        assert_eq!(
            challenge("<div hidden>Service unavailable</div><div class=g-recaptcha></div>"),
            Some("captcha")
        );
    }

    #[test]
    fn words_a_browser_shows_beside_hidden_elements_count() {
        for page in [
            // After the hidden element, and in one hidden from screen readers only.
            "<div hidden>note</div><h1>Access denied</h1>",
            "<div style=\"display:none\"><div>x</div></div>Access denied",
            "<h1 aria-hidden=\"true\">Access denied</h1>",
            // Styles that do not hide, or that the attribute yields to.
            "<div style=\"display:block\">Access denied</div>",
            "<div style=\"display:none; display:flex\">Access denied</div>",
            "<div hidden style=\"display:block\">Access denied</div>",
            "<div data-hidden=1 class=hidden title=\"display:none\">Access denied</div>",
            "<div style=\"visibility:hidden\"><p style=\"visibility:visible\">Access denied</p></div>",
            // Void and self-closing elements hold nothing.
            "<img hidden><br style=display:none>Access denied",
            "<svg><g style=\"display:none\"/><text>x</text></svg>Access denied</g>",
            // A page hides itself until its script runs, then shows.
            "<body style=\"display:none\"><h1>Access denied</h1></body>",
            // Closed where a browser closes it: a `<p>` before a `<div>`, an
            // `<li>` before the next, an element before its parent's end tag.
            "<p hidden>note<div>Access denied</div></p>",
            "<ul><li hidden>note<li>Access denied</li></li></ul>",
            "<div><span hidden>note</div><h1>Access denied</h1></span>",
            // Never closed: it hides nothing, rather than the rest of the page.
            "<span hidden>note <h1>Access denied</h1></body></html>",
            "<span hidden>note <h1>Access denied</h1><p>Contact us</p>",
            "<div hidden><div>x</div><h1>Access denied</h1>",
            // A quote left open in a tag does not take the page with it.
            "<div title=\"x>Access denied</div>",
        ] {
            assert!(soft_failure(page).is_some(), "{page}");
        }
        let outage = "<div hidden>x</div><h1>Service unavailable</h1><div class=g-recaptcha>";
        assert_eq!(challenge(outage), None);
    }

    #[test]
    fn an_abruptly_closed_empty_comment_hides_nothing_after_it() {
        // HTML's tokenizer ends a comment at once on `<!-->` and `<!--->` (the
        // "abrupt closing of empty comment" parse error): a browser shows what
        // follows. The one-pass scan looks for `-->` after the four bytes of `<!--`,
        // so it reads the rest of the page (to the next `-->`, or the end) as a
        // comment, and a real block page is up. The backward search it replaced
        // (`out_of_sight`) found the `-->` inside `<!-->` and read on.
        for opener in ["<!-->", "<!--->"] {
            let page = format!(
                "<html><head>{opener}<title>Error</title></head><body>\
                 <h1>Access Denied</h1><p>You don't have permission to access this \
                 server.</p></body></html>"
            );
            assert_eq!(
                soft_failure(&page).as_deref(),
                Some("block page (\"access denied\")"),
                "{opener}"
            );
        }
        // An outage page saying so after an empty comment says so: its captcha is
        // no wall.
        let outage = "<!---><h1>Service Unavailable</h1><div class=g-recaptcha></div>";
        assert_eq!(challenge(outage), None);
    }

    #[test]
    fn a_comment_closed_by_dash_dash_bang_hides_nothing_after_it() {
        // `--!>` ends a comment in HTML's tokenizer too (the "incorrectly closed
        // comment" parse error): a browser shows what follows.
        let page = "<html><head><!-- build 42 --!><title>Error</title></head><body>\
                    <h1>Access Denied</h1><p>You don't have permission to access this \
                    server.</p></body></html>";
        assert_eq!(
            soft_failure(page).as_deref(),
            Some("block page (\"access denied\")")
        );
    }

    #[test]
    fn where_a_person_reads_nothing_is_found_in_one_pass() {
        let unseen = |page: &str| Unseen::of(page.as_bytes()).0;
        assert_eq!(unseen("a<!--b-->c<i>d</i>"), vec![1..9, 11..13, 15..18]);
        assert_eq!(unseen("<p hidden>x<b>y</b></p>z"), vec![0..23]);
        assert_eq!(unseen("<p hidden>x<div>y"), vec![0..11, 12..16]);
        assert_eq!(unseen("<script>x</script>y"), vec![1..8, 8..9, 10..18]);
        // Deep markup in a hidden element gives the hiding up, its tags stay unseen.
        let deep = format!("<div hidden>{}x", "<i>".repeat(MAX_OPEN_IN_HIDDEN + 10));
        let spans = unseen(&deep);
        assert_eq!(spans.len(), MAX_OPEN_IN_HIDDEN + 11);
        // A big page of hidden elements and phrases is read once.
        let page = format!(
            "{}<h1>Access denied</h1>",
            "<div style=display:none><span>access denied</span><!-- access denied --></div>"
                .repeat(1000)
        );
        assert_eq!(
            soft_failure(&page).as_deref(),
            Some("block page (\"access denied\")")
        );
    }

    #[test]
    fn attributes_are_read_as_browsers_read_them() {
        let mut seen = Vec::new();
        each_attribute(b" a=1 b = \"x y\" c='>' d e= f/ g=\"open", |n, v| {
            seen.push((n.to_vec(), v.to_vec()));
        });
        let seen: Vec<(&[u8], &[u8])> = seen
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        assert_eq!(
            seen,
            vec![
                (&b"a"[..], &b"1"[..]),
                (b"b", b"x y"),
                (b"c", b">"),
                (b"d", b""),
                (b"e", b"f/"),
                (b"g", b"open"),
            ]
        );
        assert_eq!(
            Looks::of(b" style=\"visibility:collapse\"").hides,
            Some(true)
        );
        assert_eq!(
            Looks::of(b" style=\"display:none!important\"").hides,
            Some(false)
        );
        assert_eq!(Looks::of(b" aria-hidden=true").hides, None);
    }

    #[test]
    fn a_doctype_or_an_xml_declaration_is_no_text() {
        let page = "<?xml version=\"1.0\"?><!DOCTYPE html PUBLIC \"-//W3C//DTD XHTML 1.0//EN\"><html><body><p>Hi there</p></body></html>";
        assert_eq!(visible_text(page), "Hi there");
    }
}
