//! Walls between us and the site: bot challenges, JavaScript cookie walls, and the
//! block pages of web application firewalls. Each is a refusal of the client, which a
//! person's browser passes or never meets, never the site failing.

use super::patterns::{finders, OnSuccess, CHALLENGE_MARKERS, FIREWALL_MARKERS};
use super::soft::title;
use super::visible::Unseen;
use super::SNIFF_BYTES;

/// The most characters of text a challenge page shows on a success: a few sentences
/// ("Checking your browser before accessing … DDoS protection by …").
const CHALLENGE_TEXT_CHARS: usize = 800;

/// The largest page, and the most characters it shows to read, taken for a JavaScript
/// cookie wall: a stub, as `probe::refresh` reads stubs.
const WALL_BYTES: usize = 2048;
const WALL_TEXT_CHARS: usize = 200;

/// What a cookie wall's script does to load the page again, matched lower-cased with
/// white space left out.
const SELF_NAVIGATION: &[&[u8]] = &[
    b"location.reload(",
    b"location.pathname",
    b"location.search",
    b"location.href=location.href",
    b"location=location.href",
    b"location.replace(location.href",
    b"location.assign(location.href",
    b"history.go(0)",
];

/// Markup a person clicks, besides links: a page with any is a page (a language
/// chooser that sets a cookie), not a wall that runs by itself.
const CLICKABLE: &[&[u8]] = &[b"<button", b"<form", b"onclick"];

/// How a cookie wall is named in a verdict's detail.
pub(crate) const COOKIE_WALL: &str =
    "a JavaScript cookie wall (a script that sets a cookie and loads the page again)";

/// Challenge markers that a site's own pages carry too, error pages among them: a
/// reCAPTCHA on a contact or login form, Cloudflare's bot-detection script in every
/// page it serves. On a page that says the site is unavailable they are no wall.
const WEAK_MARKERS: &[&str] = &["captcha", "challenge-platform"];

/// What a site's own outage page says, matched lower-cased where a person reads it: a
/// page that says this is the site failing, whatever form it carries. No wall's page
/// says it (a wall says to wait, or to prove one is human).
const UNAVAILABLE: &[&[u8]] = &[
    b"service unavailable",
    b"temporarily unavailable",
    b"currently unavailable",
    b"down for maintenance",
    b"under maintenance",
    b"scheduled maintenance",
    b"maintenance mode",
    "服务不可用".as_bytes(),
    "系统维护".as_bytes(),
    "维护中".as_bytes(),
];

/// What a rate limit's own page says, matched lower-cased where a person reads it: the
/// page a limit answers with a success (nginx's `error_page 429 =200 /busy.html`, an
/// application's "slow down" page), which says so in its few words.
const LIMIT_PHRASES: &[&[u8]] = &[
    b"too many requests",
    b"rate limit exceeded",
    b"request limit exceeded",
    b"being rate limited",
    b"you have been rate limited",
    // The same in the languages of the sites we watch (lower-cased as ASCII only: the
    // Cyrillic capital is written out).
    b"zu viele anfragen",
    "trop de requêtes".as_bytes(),
    b"trop de requetes",
    b"demasiadas solicitudes",
    b"demasiadas peticiones",
    "troppe richieste".as_bytes(),
    "слишком много запросов".as_bytes(),
    "Слишком много запросов".as_bytes(),
    "访问过于频繁".as_bytes(),
    "请求过于频繁".as_bytes(),
    "访问太频繁".as_bytes(),
    "請求過於頻繁".as_bytes(),
    "リクエストが多すぎ".as_bytes(),
    "요청이 너무 많".as_bytes(),
];

/// The phrase of a rate limit's own page ([`LIMIT_PHRASES`]) that a page with a success
/// status shows, if it is one: a stub with little to read (as a cookie wall, at most
/// [`WALL_TEXT_CHARS`] characters) that says so where a person reads it. A page with
/// more to read is the site's, whatever it says of limits.
pub(crate) fn limit_page(text: &str) -> Option<&'static str> {
    if text.len() > WALL_BYTES || crate::probe::shown::text_longer_than(text, WALL_TEXT_CHARS) {
        return None;
    }
    let lower = text.as_bytes().to_ascii_lowercase();
    let unseen = Unseen::of(&lower);
    LIMIT_PHRASES.iter().find_map(|phrase| {
        memchr::memmem::find_iter(&lower, phrase)
            .any(|at| !unseen.covers(at))
            .then(|| std::str::from_utf8(phrase).unwrap_or_default())
    })
}

/// The bot-challenge marker a page shows, if any. A weak one ([`WEAK_MARKERS`]) counts
/// only on a page that does not say the site is unavailable.
pub(crate) fn challenge(text: &str) -> Option<&'static str> {
    let lower = text.as_bytes().to_ascii_lowercase();
    let mut weak = None;
    for m in finders().challenge.find_iter(&lower) {
        let marker = CHALLENGE_MARKERS[m.pattern().as_usize()].0;
        if !WEAK_MARKERS.contains(&marker) {
            return Some(marker);
        }
        weak = weak.or(Some(marker));
    }
    weak.filter(|_| !says_unavailable(&lower))
}

/// Whether a lower-cased page says, where a person reads it, that the site is
/// unavailable ([`UNAVAILABLE`]).
fn says_unavailable(lower: &[u8]) -> bool {
    let mut unseen = None;
    UNAVAILABLE.iter().any(|phrase| {
        memchr::memmem::find_iter(lower, phrase)
            .any(|at| !unseen.get_or_insert_with(|| Unseen::of(lower)).covers(at))
    })
}

/// The bot wall a page whose status is a success is, if it is one: a challenge page
/// that shows little text and a marker no working site's page has, or a JavaScript
/// cookie wall. Its description, for a verdict's detail. A page with much to read is
/// the site (it may well mention a captcha or DDoS protection), and is not copied.
pub(crate) fn wall_on_success(text: &str) -> Option<String> {
    if text.len() > SNIFF_BYTES || crate::probe::shown::text_longer_than(text, CHALLENGE_TEXT_CHARS)
    {
        return None;
    }
    let lower = text.as_bytes().to_ascii_lowercase();
    if let Some(marker) = sure_challenge(&lower) {
        return Some(format!("a bot challenge page ({marker:?})"));
    }
    cookie_wall_in(text, &lower).then(|| COOKIE_WALL.to_string())
}

/// The first challenge marker of a lower-cased page that is sure on a success.
fn sure_challenge(lower: &[u8]) -> Option<&'static str> {
    let title = title(lower).map(|t| {
        let start = t.as_ptr() as usize - lower.as_ptr() as usize;
        start..start + t.len()
    });
    finders().challenge.find_iter(lower).find_map(|m| {
        let (marker, on_success) = CHALLENGE_MARKERS[m.pattern().as_usize()];
        let sure = match on_success {
            OnSuccess::Sure => true,
            OnSuccess::InTitle => title.as_ref().is_some_and(|t| t.contains(&m.start())),
            OnSuccess::Nothing => false,
        };
        sure.then_some(marker)
    })
}

/// Whether a page is a JavaScript cookie wall: a stub with nothing to read or click
/// whose script sets a cookie and loads the page itself again (Jiasule's 521,
/// testcookie's 200). Browsers pass it at once; without a script engine it cannot be.
pub(crate) fn cookie_wall(text: &str) -> bool {
    text.len() <= WALL_BYTES && cookie_wall_in(text, &text.as_bytes().to_ascii_lowercase())
}

/// Whether a lower-cased page has a link or anything else to click ([`CLICKABLE`]).
fn clickable(lower: &[u8]) -> bool {
    let link = memchr::memmem::find_iter(lower, b"<a").any(|at| {
        lower
            .get(at + 2)
            .is_some_and(|c| c.is_ascii_whitespace() || *c == b'>')
    });
    link || CLICKABLE
        .iter()
        .any(|c| memchr::memmem::find(lower, c).is_some())
}

/// [`cookie_wall`] over the page and its lower-cased bytes.
fn cookie_wall_in(text: &str, lower: &[u8]) -> bool {
    if lower.len() > WALL_BYTES
        || memchr::memmem::find(lower, b"<script").is_none()
        || clickable(lower)
        || crate::probe::shown::text_longer_than(text, WALL_TEXT_CHARS)
    {
        return false;
    }
    // Spaces around `=` and `(` are the script writer's choice.
    let script: Vec<u8> = lower
        .iter()
        .copied()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let sets_cookie = memchr::memmem::find_iter(&script, b"document.cookie=")
        .any(|at| script.get(at + 16) != Some(&b'='));
    sets_cookie
        && SELF_NAVIGATION
            .iter()
            .any(|n| memchr::memmem::find(&script, n).is_some())
}

/// The firewall whose block page this is, and the marker that tells, if any.
pub(crate) fn firewall_block(text: &str) -> Option<(&'static str, &'static str)> {
    let lower = text.as_bytes().to_ascii_lowercase();
    let found = finders().firewall.find(&lower)?;
    Some(FIREWALL_MARKERS[found.pattern().as_usize()])
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Hunt G: firewalls' and Cloudflare's refusals of the client were `down/http_status`.
    #[test]
    fn more_firewalls_refusing_us_are_named() {
        for (page, who) in [
            ("<p>Access denied by Imunify360 bot-protection. IPs used for automation should be whitelisted</p>", "Imunify360"),
            ("<title>Access denied | www.example.gov used Cloudflare to restrict access</title><div id=\"cf-error-details\">Error 1020</div>", "Cloudflare"),
            ("<p>The owner of this website (www.example.gov) has banned your IP address (192.0.2.1).</p><p>Cloudflare Ray ID</p>", "Cloudflare"),
            ("<title>Pardon Our Interruption</title><p>something about your browser made us think you were a bot</p>", "Imperva"),
        ] {
            assert_eq!(firewall_block(page).map(|(w, _)| w), Some(who), "{page}");
        }
        // Cloudflare's page for an origin that is down names no refusal of us.
        let origin_down = "<title>example.gov | 521: Web server is down</title><div id=\"cf-error-details\">Error 521</div>";
        assert_eq!(firewall_block(origin_down), None);
    }

    #[test]
    fn on_a_success_only_what_no_working_page_says_is_a_challenge() {
        assert_eq!(
            sure_challenge(b"<title>just a moment...</title><p>x</p>"),
            Some("just a moment...")
        );
        assert_eq!(sure_challenge(b"<p>just a moment...</p>"), None);
        assert_eq!(
            sure_challenge(
                b"<script src=/cdn-cgi/challenge-platform/x></script><p>checking your browser</p>"
            ),
            Some("checking your browser")
        );
        assert_eq!(sure_challenge(b"<p>enter the captcha</p>"), None);
        // Hunt G: Anubis's and Sucuri's walls answered 200 were up.
        assert_eq!(
            sure_challenge(b"<title>making sure you&#39;re not a bot!</title><script src=/.within.website/x/cmd/anubis/main.mjs></script>"),
            Some("making sure you&#39;re not a bot")
        );
        assert!(sure_challenge(b"<html><title>you are being redirected...</title><script>var s='x',S='y';document.cookie='sucuri_cloudproxy_js='+s+S;location.reload();</script></html>").is_some());
        // A page with much to read is the site, whatever it mentions.
        let article = format!(
            "<title>Just a moment...</title><p>{}</p>",
            "Our county offers DDoS protection by default. ".repeat(40)
        );
        assert_eq!(wall_on_success(&article), None);
    }

    #[test]
    fn a_cookie_wall_is_a_stub_whose_script_sets_a_cookie_and_loads_itself() {
        for wall in [
            "<script>document.cookie = 'a=1; path=/'; location.reload();</script>",
            "<script>document.cookie=('_')+('_');location.href=location.pathname+location.search</script>",
            "<script>document.cookie='a=1';window.location.href = location.href;</script>",
        ] {
            assert!(cookie_wall(wall), "{wall}");
        }
        for page in [
            // Reads the cookie, sets none.
            "<script>if (document.cookie == '') { location.reload(); }</script>",
            // Sets one and stays.
            "<script>document.cookie='seen=1';</script><p>Welcome</p>",
            // Sets one when a person clicks.
            "<a href=# onclick=\"document.cookie='l=en';location.reload()\">English</a>",
            // A page with much to read.
            &format!(
                "<p>{}</p><script>document.cookie='a=1';location.reload();</script>",
                "Opening hours of the county office. ".repeat(10)
            ),
        ] {
            assert!(!cookie_wall(page), "{page}");
        }
    }

    #[test]
    fn a_captcha_on_a_page_saying_the_site_is_unavailable_is_no_challenge() {
        let outage = "<title>Service Temporarily Unavailable</title><h1>Down for \
            maintenance</h1><form><div class=\"g-recaptcha\"></div></form>";
        assert_eq!(challenge(outage), None);
        // Cloudflare's script on the site's own 503 page is no wall either.
        let proxied = "<h1>Service Unavailable</h1><script \
            src=\"/cdn-cgi/challenge-platform/scripts/jsd/main.js\"></script>";
        assert_eq!(challenge(proxied), None);
        // A captcha wall says nothing of the kind.
        let wall = "<h1>Please verify you are a human</h1><div class=\"g-recaptcha\"></div>";
        assert_eq!(challenge(wall), Some("captcha"));
        // "Unavailable" only where nobody reads it changes nothing.
        let hidden = "<!-- service unavailable --><div class=\"g-recaptcha\"></div>";
        assert_eq!(challenge(hidden), Some("captcha"));
        // A strong marker is a wall whatever the page says, wherever it comes.
        let cloudflare = "<p>Service unavailable? captcha</p><div id=cf-chl-widget></div>";
        assert_eq!(challenge(cloudflare), Some("cf-chl"));
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
