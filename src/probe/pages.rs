//! Reading a page for what a person would see at once: a block page, a parked domain, a
//! suspended account, a default server page, or a bot challenge. Plain text in, a
//! description out; the built-in patterns are compiled once and searched in one pass.

use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, MatchKind};

/// Pages up to this size are read as text and checked for soft failures; block, parked
/// and default pages are small, real pages that mention "access denied" are not.
pub(crate) const SNIFF_BYTES: usize = 64 * 1024;

/// Markers of bot walls and challenge pages (matched lower-cased).
const CHALLENGE_MARKERS: &[&str] = &[
    "cf-chl",
    "challenge-platform",
    "just a moment...",
    "attention required! | cloudflare",
    "checking your browser",
    "ddos protection by",
    "captcha",
    "请完成安全验证",
    "人机验证",
];

/// Built-in soft-failure patterns: (kind, phrase) matched lower-cased in small pages.
const SOFT_PATTERNS: &[(&str, &str)] = &[
    ("block page", "access denied"),
    ("block page", "访问被拒绝"),
    ("block page", "您的访问被阻断"),
    ("block page", "request blocked"),
    ("block page", "the requested url was rejected"),
    ("block page", "web application firewall"),
    ("parked domain", "this domain is for sale"),
    ("parked domain", "domain is parked"),
    ("parked domain", "buy this domain"),
    ("parked domain", "域名出售"),
    ("suspended account", "account has been suspended"),
    ("suspended account", "account suspended"),
    ("suspended account", "website is suspended"),
    ("suspended account", "网站已暂停"),
    ("suspended account", "网站暂停访问"),
];

/// Default-server pages, matched in the page title only.
const DEFAULT_TITLES: &[&str] = &[
    "welcome to nginx!",
    "apache2 debian default page",
    "apache2 ubuntu default page",
    "test page for the apache",
    "iis windows server",
    "welcome to centos",
    "test page for the nginx",
];

/// The patterns above, compiled once. A page is ASCII-lower-cased once (a fast byte
/// pass) and then searched for all patterns in one go, which the SIMD prefilter of a
/// case-sensitive search makes several times faster than a case-insensitive automaton.
/// The patterns are ASCII or CJK, which has no case, so nothing is lost.
struct Finders {
    soft: AhoCorasick,
    challenge: AhoCorasick,
}

fn finders() -> &'static Finders {
    static FINDERS: OnceLock<Finders> = OnceLock::new();
    FINDERS.get_or_init(|| {
        let build = |patterns: &[&str]| {
            AhoCorasick::builder()
                .match_kind(MatchKind::LeftmostFirst)
                .build(patterns)
                // The patterns are constants: a failure here is a bug caught by every test.
                .expect("built-in page patterns compile")
        };
        let soft: Vec<&str> = SOFT_PATTERNS.iter().map(|(_, p)| *p).collect();
        Finders {
            soft: build(&soft),
            challenge: build(CHALLENGE_MARKERS),
        }
    })
}

/// The title of a lower-cased page.
fn title(lower: &[u8]) -> Option<&[u8]> {
    let start = memchr::memmem::find(lower, b"<title")?;
    let open_end = start + memchr::memchr(b'>', &lower[start..])? + 1;
    let close = open_end + memchr::memmem::find(&lower[open_end..], b"</title")?;
    Some(lower[open_end..close].trim_ascii())
}

/// The soft failure a small page shows, if any: "block page (\"access denied\")".
pub(crate) fn soft_failure(text: &str) -> Option<String> {
    let lower = text.as_bytes().to_ascii_lowercase();
    if let Some(t) = title(&lower) {
        if let Some(d) = DEFAULT_TITLES
            .iter()
            .find(|d| memchr::memmem::find(t, d.as_bytes()).is_some())
        {
            return Some(format!("default server page ({d:?} in the title)"));
        }
    }
    let found = finders().soft.find(&lower)?;
    let (kind, phrase) = SOFT_PATTERNS[found.pattern().as_usize()];
    Some(format!("{kind} ({phrase:?})"))
}

/// The bot-challenge marker a page shows, if any.
pub(crate) fn challenge(text: &str) -> Option<&'static str> {
    let lower = text.as_bytes().to_ascii_lowercase();
    let found = finders().challenge.find(&lower)?;
    Some(CHALLENGE_MARKERS[found.pattern().as_usize()])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn soft_failures_are_named_by_kind_and_phrase() {
        assert_eq!(
            soft_failure("<html><body>ACCESS DENIED</body></html>").as_deref(),
            Some("block page (\"access denied\")")
        );
        assert_eq!(
            soft_failure("<body>这个 域名出售</body>").as_deref(),
            Some("parked domain (\"域名出售\")")
        );
        assert_eq!(
            soft_failure("<head><TITLE> Welcome to nginx! </TITLE></head>").as_deref(),
            Some("default server page (\"welcome to nginx!\" in the title)")
        );
        assert_eq!(
            soft_failure("<html><body>Opening hours</body></html>"),
            None
        );
    }

    #[test]
    fn a_default_page_is_told_by_its_title_only() {
        // The phrase in the body is a page about nginx, not nginx's own page.
        assert_eq!(
            soft_failure("<title>Blog</title><p>welcome to nginx!</p>"),
            None
        );
        assert_eq!(title(b"<title>x</title>"), Some(&b"x"[..]));
        assert_eq!(title(b"<title>unclosed"), None);
    }

    #[test]
    fn challenges_are_found_whatever_the_case() {
        assert_eq!(
            challenge("<TITLE>Just a moment...</TITLE>"),
            Some("just a moment...")
        );
        assert_eq!(challenge("<p>请完成安全验证</p>"), Some("请完成安全验证"));
        assert_eq!(challenge("<p>Forbidden</p>"), None);
    }
}
