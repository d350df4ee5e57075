//! A stand-in page in place of the site: a block, parked, suspended, maintenance,
//! default or error page, told by its title, its top headings, or the few words a small
//! page shows. A phrase where no person reads it ([`super::visible`]) names nothing.

use super::patterns::{finders, SOFT_PATTERNS, TITLE_PATTERNS};
use super::visible::{visible_text, Unseen};

/// The title of a lower-cased page.
pub(super) fn title(lower: &[u8]) -> Option<&[u8]> {
    title_span(lower).map(|span| &lower[span])
}

/// Where the title of a lower-cased page is, white space around it left out: the same
/// bytes in the page as it came (lower-casing ASCII moves nothing).
fn title_span(lower: &[u8]) -> Option<std::ops::Range<usize>> {
    let start = memchr::memmem::find(lower, b"<title")?;
    let open_end = start + memchr::memchr(b'>', &lower[start..])? + 1;
    let close = open_end + memchr::memmem::find(&lower[open_end..], b"</title")?;
    let title = lower[open_end..close].trim_ascii_start();
    let from = close - title.len();
    Some(from..from + title.trim_ascii_end().len())
}

/// The most characters of a title quoted in a detail.
const QUOTED_TITLE_CHARS: usize = 80;

/// A title as a browser's tab shows it: character references undone, runs of white
/// space one space, cut at [`QUOTED_TITLE_CHARS`].
fn as_shown(title: &str) -> String {
    let decoded = html_escape::decode_html_entities(title);
    let mut shown: String = decoded.split_whitespace().collect::<Vec<_>>().join(" ");
    if let Some((cut, _)) = shown.char_indices().nth(QUOTED_TITLE_CHARS) {
        shown.truncate(cut);
        shown.push('…');
    }
    shown
}

/// The stand-in page a lower-cased title names, if any: (kind, phrase). Its character
/// references are undone first, as a browser's tab shows it (Tomcat 10 writes a
/// listing's slashes as `&#47;`, WordPress its `&rsaquo;`).
fn title_names(title: &[u8]) -> Option<(&'static str, &'static str)> {
    let title = html_escape::decode_html_entities(std::str::from_utf8(title).ok()?);
    let title = title.as_ref();
    let mut fitting = finders()
        .title
        .find_overlapping_iter(title)
        .filter(|m| {
            let fit = TITLE_PATTERNS[m.pattern().as_usize()].2;
            fit.fits(title, m.start(), m.end())
        })
        .map(|m| m.pattern().as_usize());
    // The first pattern in the table's order, as a leftmost-first search would take.
    let first = fitting.next()?;
    let pattern = fitting.fold(first, usize::min);
    let (kind, phrase, _) = TITLE_PATTERNS[pattern];
    Some((kind, phrase))
}

/// The soft failure a small page shows, if any: "block page (\"access denied\")".
pub(crate) fn soft_failure(text: &str) -> Option<String> {
    if is_php_source(text) {
        return Some(
            "PHP script itself, not the page it makes (the server's PHP handler is gone: \
             browsers download it or show its code)"
                .to_string(),
        );
    }
    let lower = text.as_bytes().to_ascii_lowercase();
    if let Some(span) = title_span(&lower) {
        if let Some((kind, _)) = title_names(&lower[span.clone()]) {
            let shown = as_shown(text.get(span).unwrap_or_default());
            return Some(format!("{kind} (titled {shown:?})"));
        }
    }
    // Words where no person reads them are not on the page: a login form's
    // `alert('Access denied')`, a comment, an image's `alt`, an error message kept
    // hidden until a script shows it. Where they are is worked out once, and only when
    // a phrase is found.
    let mut unseen = None;
    let mut short = None;
    let found = finders().soft.find_iter(&lower).find(|m| {
        let (kind, phrase) = SOFT_PATTERNS[m.pattern().as_usize()];
        let mut short = || {
            *short.get_or_insert_with(|| {
                !crate::probe::shown::text_longer_than(text, SOFT_TEXT_CHARS)
            })
        };
        let heading = || in_heading(&lower, m.start(), m.end());
        // A maintenance notice is a page's whole word; a long working page has such
        // sections ("Rides under maintenance"). "Coming soon" is a placeholder's
        // heading, and in a small page's text only a line ("more coming soon").
        // PHP's error markup is no site's own words wherever it stands; the same
        // error as text, or a starter page's greeting, only where a page says little else.
        let placed = match kind {
            "PHP error" if phrase.starts_with('<') => true,
            "PHP error" | "starter page" => short(),
            "maintenance page" => short(),
            "placeholder page" => short() && heading(),
            _ => short() || heading(),
        };
        placed
            && !unseen
                .get_or_insert_with(|| Unseen::of(&lower))
                .covers(m.start())
    })?;
    let (kind, phrase) = SOFT_PATTERNS[found.pattern().as_usize()];
    Some(format!("{kind} ({phrase:?})"))
}

/// The most characters of text a page may show for a soft-failure phrase anywhere in it
/// to name the page: a block, parked or suspended page says little besides, and a
/// working page that names one by the way (a news headline "网站暂停访问的公告", a link
/// "if your account has been suspended", a host's "web application firewall included")
/// says much more. Past it, only a phrase in the title or a top heading names the page.
const SOFT_TEXT_CHARS: usize = 1000;

/// Characters a heading may hold besides a soft-failure phrase to be about it: "This
/// site has been suspended", "Sorry, access denied." are; "Access denied errors plague
/// cloud migrations", a news headline, is not.
const HEADING_SLACK: usize = 12;

/// The most bytes of a heading read to weigh a phrase in it ([`in_heading`]): its text is
/// the phrase and [`HEADING_SLACK`] characters more, with room for markup around them.
const MAX_HEADING_BYTES: usize = 1024;

/// Whether the phrase at `at..end` of a lower-cased page is what its title, an `<h1>` or
/// an `<h2>` says: the heading holds it and little else ([`HEADING_SLACK`]).
fn in_heading(lower: &[u8], at: usize, end: usize) -> bool {
    [&b"title"[..], b"h1", b"h2"].iter().any(|name| {
        let open = [b"<", *name].concat();
        let close = [b"</", *name].concat();
        let before = &lower[..at];
        let Some(start) = memchr::memmem::rfind(before, &open) else {
            return false;
        };
        let named = before
            .get(start + open.len())
            .is_some_and(|c| c.is_ascii_whitespace() || *c == b'>');
        if !named || memchr::memmem::find(&before[start..], &close).is_some() {
            return false;
        }
        let Some(gt) = crate::probe::shown::tag_gt(lower, start + 1).filter(|gt| *gt < at) else {
            return false;
        };
        // A heading about the phrase is short: one that runs on (its end tag mistyped,
        // or missing) is not read, so no phrase costs more than this.
        let limit = (end + MAX_HEADING_BYTES).min(lower.len());
        let Some(closed) = memchr::memmem::find(&lower[end..limit], &close).map(|c| end + c) else {
            return false;
        };
        if closed - gt > MAX_HEADING_BYTES {
            return false;
        }
        let words = visible_text(&String::from_utf8_lossy(&lower[gt + 1..closed]));
        let phrase = String::from_utf8_lossy(&lower[at..end]);
        let about = |part: &str, slack: usize| {
            part.contains(&*phrase) && part.chars().count() <= phrase.chars().count() + slack
        };
        if about(&words, HEADING_SLACK) {
            return true;
        }
        // A title's part beside the site's name: nearly the phrase alone, and a phrase
        // that says what became of the site, not the name of a product.
        *name == b"title"
            && !NAMES_A_THING.contains(&&*phrase)
            && title_parts(&words).any(|part| about(part, TITLE_PART_SLACK))
    })
}

/// Characters a title's part may hold besides the phrase: "This Account Has Been
/// Suspended"; not "Web Application Firewall explained".
const TITLE_PART_SLACK: usize = 6;

/// Phrases that name a thing as often as a state: a part of a title that is one is a
/// page about it ("Web Application Firewall | Example Hosting").
const NAMES_A_THING: &[&str] = &["web application firewall"];

/// How titles part a page's own words from the site's name: "Access Denied | Example
/// University", "Example County - Account Suspended".
const TITLE_PARTINGS: &[&str] = &[" | ", " - ", " – ", " — ", " :: ", " · ", " » ", " « "];

/// The parts of a title, each trimmed: the whole title when nothing parts it.
fn title_parts(title: &str) -> impl Iterator<Item = &str> {
    let mut parts = vec![title];
    for parting in TITLE_PARTINGS {
        parts = parts.iter().flat_map(|p| p.split(parting)).collect();
    }
    parts.into_iter().map(str::trim)
}

/// Whether `text` is a PHP script rather than a page: it opens with `<?php`, which no
/// page does (a page showing PHP code escapes it, and a page's own PHP never leaves the
/// server). What Apache sends when the handler an `.htaccess` names is gone, as after
/// a change of PHP version on shared hosting.
fn is_php_source(text: &str) -> bool {
    let start = text.trim_start_matches('\u{feff}').trim_start().as_bytes();
    start.len() >= 5 && start[..5].eq_ignore_ascii_case(b"<?php")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::probe::pages::SNIFF_BYTES;

    #[test]
    fn a_php_script_sent_as_it_is_is_no_page() {
        let script = "\u{feff}\n<?PHP\nrequire __DIR__ . '/wp-blog-header.php';\n";
        assert!(soft_failure(script).is_some_and(|w| w.starts_with("PHP script itself")));
        // A page that shows PHP code escapes it; one mentioning the tag is a page.
        assert_eq!(
            soft_failure("<html><pre>&lt;?php echo 1; ?&gt;</pre></html>"),
            None
        );
        assert_eq!(soft_failure("<p>Begin every file with <?php</p>"), None);
    }

    /// Hunt G: ordinary working pages that name a failure by the way were called
    /// degraded (any page up to 64 KB), and stand-in pages the patterns missed were up.
    /// Hunt L: pages servers and CMSes show in place of the site, answered 200, were
    /// `up/ok`: IIS 7 and 8's welcome pages, an IIS directory listing, Debian lighttpd's
    /// placeholder, the "We'll be back soon!" maintenance template behind a rewrite,
    /// Joomla's offline page, WordPress's maintenance notice, "Under Construction" and
    /// "Coming Soon" pages.
    #[test]
    fn the_stand_in_pages_of_servers_and_cmses_name_themselves() {
        let style = "<style>body { color:#000000; background-color:#B3B3B3; }</style>";
        let pages = [
            format!("<html><head><title>IIS7</title>{style}</head><body><a href=\"http://go.microsoft.com/fwlink/?linkid=66138\"><img src=\"welcome.png\" alt=\"IIS7\"></a></body></html>"),
            format!("<html><head><title>Microsoft Internet Information Services 8</title>{style}</head><body><img src=\"welcome.png\" alt=\"IIS\"></body></html>"),
            "<html><head><title>iisdir.l.test - /</title></head><body><H1>iisdir.l.test - /</H1><hr><pre> 3/14/2023  9:12 AM  &lt;dir&gt; <A HREF=\"/aspnet_client/\">aspnet_client</A><br></pre><hr></body></html>".to_string(),
            format!("<html><head><title>Welcome page</title></head><body><div id=\"header\"><h1> Placeholder page </h1> The owner of this web site has not put up any web pages yet. Please come back later.</div><ul>{}</ul></body></html>", "<li>Configuration files can be found in /etc/lighttpd. Please read the README file.</li>".repeat(12)),
            "<!doctype html><title>Lake County - Site Maintenance</title><article><h1>We&rsquo;ll be back soon!</h1><p>Sorry for the inconvenience but we&rsquo;re performing some maintenance at the moment.</p></article>".to_string(),
            "<!doctype html><title>Maintenance</title><article><h1>We&rsquo;ll be back soon!</h1><p>Sorry for the inconvenience but we&rsquo;re performing some maintenance at the moment.</p></article>".to_string(),
            "<html><head><title>Lake County Clerk</title></head><body><h1>Lake County Clerk</h1><p>This site is down for maintenance.<br />Please check back again soon.</p><form><label>Username</label><input name=\"username\"></form></body></html>".to_string(),
            "<html><head><title>Maintenance</title></head><body><p>Briefly unavailable for scheduled maintenance. Check back in a minute.</p></body></html>".to_string(),
            "<html><head><title>Under Construction</title></head><body><h2>This site is under construction</h2><p>Please check back soon.</p></body></html>".to_string(),
            "<html><head><title>Coming Soon</title></head><body><h1>Coming Soon</h1><p>Our new website is on its way. Stay tuned!</p></body></html>".to_string(),
        ];
        for page in &pages {
            assert!(soft_failure(page).is_some(), "{page}");
        }
        // Working pages that say these words by the way.
        let long = "<p>County news, opening hours, permits, council minutes.</p>".repeat(25);
        for page in [
            format!("<title>Coming soon: the new library - Lake County</title>{long}"),
            format!("<title>Lake County</title><h2>Road maintenance schedule</h2>{long}<p>The payments portal will be down for maintenance on Saturday.</p>"),
            format!("<title>Lake County / Parks</title>{long}"),
            format!("<title>Microsoft Internet Information Services training - County IT</title>{long}"),
        ] {
            assert_eq!(soft_failure(&page), None, "{page}");
        }
    }

    #[test]
    fn a_phrase_names_a_page_only_where_the_page_is_about_it() {
        let long = "<p>County news, opening hours, permits, council minutes.</p>".repeat(25);
        for by_the_way in [
            "<li><a href=/n/1>关于12月6日网站暂停访问的公告</a></li>",
            "<li><a href=/faq>What to do if your account has been suspended</a></li>",
            "<h3>Access denied errors plague cloud migrations</h3>",
            "<p>Every plan: SSL, backups, web application firewall included.</p>",
            "<p>Register a name, or buy this domain from its owner.</p>",
        ] {
            let page = format!("<title>Home</title><body>{long}{by_the_way}{long}</body>");
            assert_eq!(soft_failure(&page), None, "{by_the_way}");
        }
        // The same words as what a page is about: its title, a top heading, or a page
        // that says little else.
        let heading = format!("<body><h1>Account Suspended</h1>{long}</body>");
        assert!(soft_failure(&heading).is_some());
        for stand_in in [
            "<title>系統維護中</title><p>請稍後再來</p>",
            "<title>メンテナンス中</title><p>ただいまメンテナンス中です</p>",
            "<title>Scheduled Maintenance</title><h1>We'll be back soon!</h1>",
            "<title>503 Service Unavailable</title><h1>Service Unavailable</h1>",
            "<title>Database Error</title><h1>Error establishing a database connection</h1>",
            "<body><h1>This site has been suspended</h1><p>Contact your host.</p></body>",
            "<body><p>This site has been archived or suspended.</p></body>",
            "<body><h1>This domain has expired</h1><p>Renew it now.</p></body>",
            "<body><h1>This domain may be for sale!</h1></body>",
        ] {
            assert!(soft_failure(stand_in).is_some(), "{stand_in}");
        }
        // A PHP error shows wherever it is.
        let php = format!("<body>{long}<b>Fatal error</b>: Uncaught Error</body>");
        assert!(soft_failure(&php).is_some());
    }

    /// Review L: the page of the very headline docs/ACCURACY.md lists as fixed
    /// ("Access denied errors plague…"), a news article of ordinary size, is still a
    /// "block page": the phrase anywhere in its title or its `<h1>` names the page,
    /// where TITLE_PATTERNS ask an error to open the title (an article about one does not).
    #[test]
    fn review_l_an_article_about_a_failure_is_no_failure_page() {
        let long = "<p>County news, opening hours, permits, council minutes.</p>".repeat(25);
        for page in [
            format!("<title>Access denied errors plague cloud migrations | Tech Weekly</title><body><h1>Access denied errors plague cloud migrations</h1>{long}</body>"),
            format!("<title>Tech Weekly</title><body><h2>What to do if your account has been suspended</h2>{long}</body>"),
        ] {
            assert_eq!(soft_failure(&page), None, "{page}");
        }
    }

    /// A block or suspended page of a big site keeps the site's name in its title
    /// ("Access Denied | Example University", and pages of nav and footer around its
    /// message): the phrase is a whole part of the title, parted from the site's name as
    /// titles part them, where an article's title holds it in a longer part.
    #[test]
    fn a_title_naming_the_failure_beside_the_sites_name_names_the_page() {
        let long = "<p>County news, opening hours, permits, council minutes.</p>".repeat(25);
        for title in [
            "Access Denied | Example University",
            "Example County Government - Account Suspended",
            "Account Suspended — Example Hosting",
            "Example Water District :: Access Denied",
            "网站维护中 - 某某县人民政府",
        ] {
            let page = format!("<title>{title}</title><body>{long}</body>");
            assert!(soft_failure(&page).is_some(), "{title}");
        }
        for title in [
            "Access denied errors plague cloud migrations | Tech Weekly",
            "What to do when access denied shows - Help Center",
            "Example University | News",
        ] {
            let page = format!("<title>{title}</title><body>{long}</body>");
            assert_eq!(soft_failure(&page), None, "{title}");
        }
    }

    /// Review R: a part of a title is weighed alone, so an ordinary page whose title
    /// holds the phrase in a part beside others is a "block page": Cloudflare's own
    /// article ("What is a WAF? | Web Application Firewall explained | Cloudflare")
    /// and a host's product page, whose `<h1>`s are no block page's, were up before
    /// 4f79ce1 (the whole title ran past HEADING_SLACK) and are degraded now.
    #[test]
    fn review_r_a_working_page_with_the_phrase_in_a_part_of_its_title_is_no_block_page() {
        let long = "<p>Protect applications and APIs from attacks at the edge of the network.</p>"
            .repeat(20);
        for (title, h1) in [
            (
                "What is a WAF? | Web Application Firewall explained | Cloudflare",
                "What is a web application firewall (WAF)?",
            ),
            (
                "Web Application Firewall | Example Hosting",
                "Stop attacks before they reach your site",
            ),
        ] {
            let page = format!("<title>{title}</title><body><h1>{h1}</h1>{long}</body>");
            assert_eq!(soft_failure(&page), None, "{title}");
        }
    }

    /// Review M: `in_heading` read the whole heading for every phrase found past an
    /// open `<h1>`/`<h2>`: a 64 KB page whose heading is closed only at its end (`<h2>Log
    /// </h3>`, a typo) listing a phrase 1500 times cost 1500 readings of up to 64 KB
    /// (7.2 s against 0.13 s in a debug build). A heading running past
    /// [`MAX_HEADING_BYTES`] is not read: no phrase costs more than that.
    #[test]
    fn review_m_a_heading_that_runs_on_is_not_read() {
        let rows = "<li>12:00 GET /admin access denied</li>".repeat(1500);
        let page =
            format!("<title>Audit log</title><body><h2>Log</h3><ul>{rows}</ul><h2>End</h2></body>");
        assert!(page.len() <= SNIFF_BYTES);
        assert_eq!(soft_failure(&page), None);
        let lower = page.as_bytes().to_ascii_lowercase();
        let at = memchr::memmem::find(&lower, b"access denied").expect("a phrase");
        assert!(
            !in_heading(&lower, at, at + 13),
            "a heading of 60 KB is read"
        );
        let short = b"<h1>sorry, access denied</h1>";
        assert!(in_heading(short, 11, 24));
    }

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
            Some("default server page (titled \"Welcome to nginx!\")")
        );
        assert_eq!(
            soft_failure("<html><body>Opening hours</body></html>"),
            None
        );
    }

    /// Hunt Z3: the detail quoted the pattern that matched ("directory listing for")
    /// where the operator wants what the page says, as a browser's tab shows it.
    #[test]
    fn a_title_naming_a_stand_in_is_quoted_as_a_browser_shows_it() {
        let tomcat = "<html><head><title>Directory Listing For [&#47;reports&#47;]</title></head>\
                      <body><h1>Directory Listing For [&#47;reports&#47;]</h1></body></html>";
        assert_eq!(
            soft_failure(tomcat).as_deref(),
            Some("directory listing (titled \"Directory Listing For [/reports/]\")")
        );
        // Runs of white space are one space, and a long title is cut.
        let long = format!("<title>Index of /{}\n\n  x</title>", "a".repeat(200));
        let said = soft_failure(&long).expect("a listing");
        assert!(
            said.starts_with("directory listing (titled \"Index of /aaa"),
            "{said}"
        );
        assert!(said.ends_with("…\")"), "{said}");
        assert!(said.chars().count() < 140, "{said}");
    }

    #[test]
    fn listings_and_maintenance_notices_are_told_by_their_titles() {
        assert_eq!(
            soft_failure("<title>Index of /</title><h1>Index of /</h1>").as_deref(),
            Some("directory listing (titled \"Index of /\")")
        );
        assert_eq!(
            soft_failure("<title>网站维护中</title><p>请稍后访问</p>").as_deref(),
            Some("maintenance page (titled \"网站维护中\")")
        );
        assert_eq!(
            soft_failure("<title>Site Under Maintenance</title>").as_deref(),
            Some("maintenance page (titled \"Site Under Maintenance\")")
        );
        assert_eq!(
            soft_failure("<h1>Clerk</h1><br />\n<b>Fatal error</b>:  Uncaught Error").as_deref(),
            Some("PHP error (\"<b>fatal error</b>:\")")
        );
        // A page about PHP errors shows the markup escaped.
        assert_eq!(
            soft_failure("<p>PHP prints &lt;b&gt;Fatal error&lt;/b&gt;: when</p>"),
            None
        );
        assert_eq!(
            soft_failure("<title>404 Not Found</title><h1>Not Found</h1>").as_deref(),
            Some("error page (titled \"404 Not Found\")")
        );
        // A county's road maintenance department is a site, not a notice.
        assert_eq!(
            soft_failure("<title>Road Maintenance | County</title><p>Potholes</p>"),
            None
        );
    }

    #[test]
    fn a_title_phrase_names_a_notice_only_where_it_says_so() {
        let named = |t: &str| soft_failure(&format!("<title>{t}</title><p>x</p>"));
        for notice in [
            "网站维护中",
            "XX县人民政府网站维护中",
            "系统维护",
            "系统升级公告",
            "系统维护中，请稍后访问",
            "Site Maintenance",
            "Page Not Found - County of Example",
            "页面不存在_XX网",
        ] {
            assert!(named(notice).is_some(), "{notice} names a stand-in page");
        }
        for site in [
            "XX市电梯维护中心",
            "网站建设_网站维护_网站优化-华信科技",
            "智慧校园系统升级改造项目公示",
            "关于系统维护工作的通知 - XX县人民政府",
            "Green Lawn Care & Site Maintenance Services",
            "How to fix a 404 Not Found error - Tech Blog",
        ] {
            assert_eq!(named(site), None, "{site} is a site's own title");
        }
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
    /// reviewT: the phrases hunt L added (patterns.rs:115-118, "under construction",
    /// "under maintenance", "down for maintenance") are soft phrases, and a soft phrase
    /// in a short `<h2>` (HEADING_SLACK, 12 characters more) names the page whatever
    /// its length: a home builder's page with its "Under Construction" section, a theme
    /// park's "Rides under maintenance" list, a transit agency's "Lifts under
    /// maintenance", each a long working page, is called a placeholder / maintenance
    /// page (degraded, or down with soft_failures = "down"). The title pattern
    /// ("maintenance", Fit::Alone, patterns.rs:233) likewise names a resident portal's
    /// working maintenance-request page, titled "Maintenance".
    #[test]
    fn review_t_working_pages_with_a_section_on_construction_or_maintenance_are_no_stand_in() {
        let long =
            "<p>Floor plans, prices, open house hours and directions for each home.</p>".repeat(20);
        let pages = [
            format!("<title>New Homes in Austin | Acme Homes</title><h1>Our communities</h1>{long}<h2>Under Construction</h2><ul><li>12 Oak St, ready in May</li></ul><h2>Move-in Ready</h2>{long}"),
            format!("<title>Park Status | Funland</title><h1>Today at Funland</h1>{long}<h2>Rides under maintenance</h2><ul><li>Log Flume</li></ul>"),
            format!("<title>Accessibility | Metro</title><h1>Elevators and escalators</h1>{long}<h2>Lifts down for maintenance</h2><ul><li>Central station, exit B</li></ul>"),
            format!("<title>Maintenance</title><h1>Submit a maintenance request</h1><form><label>Unit</label><input name=unit><label>Describe the problem</label><textarea name=d></textarea></form>{long}"),
        ];
        let named: Vec<String> = pages
            .iter()
            .filter_map(|p| soft_failure(p).map(|why| format!("{why}: {}", &p[..60])))
            .collect();
        assert!(
            named.is_empty(),
            "working pages named stand-ins: {named:#?}"
        );
    }

    /// Found by hand against PHP-FPM 8.2 behind nginx and Django 5.2 (2026-12-04): a PHP
    /// site whose database is gone prints the driver's error where the page should be,
    /// with status 200 (the `die("Connection failed: " …)` every PHP tutorial teaches),
    /// and a new Django project serves its rocket page. Each was `up`. The database
    /// errors are small pages; a mysqli "Access denied for user" was named a block page.
    #[test]
    fn a_database_error_or_an_unfinished_install_in_place_of_the_page_names_itself() {
        let named = |page: &str| soft_failure(page).unwrap_or_else(|| panic!("{page}"));
        for page in [
            "Connection failed: SQLSTATE[HY000] [2002] No such file or directory",
            "Connection failed: No such file or directory",
            "Connection failed: Connection refused",
            "<html><head><title>Oakdale</title></head><body><p>Error connecting to database: No such file or directory</p></body></html>",
            "Could not connect to database. Please try again later.",
            "<p>Unable to connect to the database server.</p>",
            "<b>Database connection failed</b>",
            "Can't connect to local MySQL server through socket '/run/mysqld/mysqld.sock' (2)",
            "Unknown database 'county'",
            "Warning: mysqli_connect(): php_network_getaddresses: getaddrinfo for db failed: Name or service not known",
            "could not connect to server: Connection refused\n\tIs the server running on host \"localhost\" (127.0.0.1) and accepting\n\tTCP/IP connections on port 5432?",
        ] {
            assert!(named(page).starts_with("database error"), "{page}: {}", named(page));
        }
        assert!(named(
            "Connection failed: Access denied for user 'web'@'localhost' (using password: YES)"
        )
        .starts_with("database error"));
        for page in [
            "<!doctype html><html lang=\"en-us\"><head><title>The install worked successfully! Congratulations!</title></head><body><h1>The install worked successfully! Congratulations!</h1></body></html>",
            "<!DOCTYPE html><html><head><title>WordPress &rsaquo; Setup Configuration File</title></head><body><p>There doesn't seem to be a <code>wp-config.php</code> file.</p></body></html>",
            "<!DOCTYPE html><html><head><title>WordPress &rsaquo; Installation</title></head><body><h1>Welcome</h1></body></html>",
            "<!DOCTYPE html><html><head><title>WordPress &rsaquo; Error</title></head><body><p>There has been a critical error on this website.</p></body></html>",
        ] {
            assert!(soft_failure(page).is_some(), "{page}");
        }
        // A working page that tells of a past outage, or a help page about the error.
        let long = "<p>County news, opening hours, permits, council minutes.</p>".repeat(25);
        for page in [
            format!("<title>Lake County</title>{long}<p>On Monday the permit portal showed 'Could not connect to database' for an hour.</p>"),
            format!("<title>Fixing SQLSTATE[HY000] [2002] in PHP</title>{long}"),
        ] {
            assert_eq!(soft_failure(&page), None, "{page}");
        }
    }

    /// Hunts Z1a and Z1b (2026-12-04), against real PHP-FPM, Python's, Twisted's and
    /// Express's servers and Debian's Tomcat: pages that stand in for the site, each
    /// judged `up`.
    #[test]
    fn hunt_z1_pages_standing_in_for_the_site_name_themselves() {
        let warning = "\u{feff}<br />\n<b>Warning</b>:  Cannot modify header information - headers already sent by (output started at /var/www/html/index.php:1) in <b>/var/www/html/index.php</b> on line <b>3</b><br />\n";
        let tomcat = format!(
            "<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<html><head>\n    <title>Apache Tomcat</title>\n</head>\n<body>\n<h1>It works !</h1>\n<p>If you're seeing this page via a web browser, it means you've setup Tomcat successfully. Congratulations!</p>{}</body></html>",
            "<p>This is the default Tomcat home page. It can be found on the local filesystem at: <code>/var/lib/tomcat10/webapps/ROOT/index.html</code></p>".repeat(8)
        );
        let header = "<!DOCTYPE html><html><head><title>Pine County</title></head><body><h1>Pine County</h1><ul><li>Home</li><li>Permits</li></ul>";
        let pages = [
            warning.to_string(),
            "\nWarning: Cannot modify header information - headers already sent by (output started at /srv/www/index.php:1) in /srv/www/index.php on line 3\n".to_string(),
            "\nFatal error: Uncaught Error: Call to undefined function undefined_function_call() in /srv/www/fatal.php:1\nStack trace:\n#0 {main}\n  thrown in /srv/www/fatal.php on line 1\n".to_string(),
            "\nParse error: syntax error, unexpected token \"echo\", expecting \"]\" in /srv/www/parse.php on line 4\n".to_string(),
            "<!DOCTYPE HTML><html><head><title>Directory listing for /</title></head><body><h1>Directory listing for /</h1><hr><ul><li><a href=\"minutes.txt\">minutes.txt</a></li></ul><hr></body></html>".to_string(),
            "<!DOCTYPE html><html><head><title>listing directory /</title></head><body><div id=\"wrapper\"><h1><a href=\"/\">~</a> / </h1><ul id=\"files\"><li><a href=\"/minutes.txt\">minutes.txt</a></li></ul></div></body></html>".to_string(),
            "<html><head><title>Directory Listing For [/]</title></head><body><h1>Directory Listing For [/]</h1></body></html>".to_string(),
            "<html><head><title>Directory: /</title></head><body><h1>Directory: /</h1></body></html>".to_string(),
            "<!DOCTYPE html><html><head><title>Express</title><link rel=\"stylesheet\" href=\"/stylesheets/style.css\"></head><body><h1>Express</h1><p>Welcome to Express</p></body></html>".to_string(),
            tomcat,
            format!("{header}Connection failed: Too many connections</body></html>"),
            format!("{header}MySQL server has gone away</body></html>"),
            format!("{header}Lost connection to MySQL server during query</body></html>"),
        ];
        let missed: Vec<&String> = pages.iter().filter(|p| soft_failure(p).is_none()).collect();
        assert!(missed.is_empty(), "not named: {missed:#?}");
        // A working page with PHP's warnings above it, or a page about them, is the site.
        let long = "<p>County news, opening hours, permits, council minutes.</p>".repeat(25);
        for page in [
            format!("<br />\n<b>Warning</b>:  Cannot modify header information - headers already sent in <b>/srv/www/index.php</b> on line <b>3</b><br />\n<title>Pine County</title>{long}"),
            format!("<title>Fixing \"Cannot modify header information\" in PHP</title>{long}<pre>Warning: Cannot modify header information - headers already sent</pre>"),
            format!("<title>Express Shipping Co.</title><h1>Welcome to Express Shipping</h1>{long}"),
        ] {
            assert_eq!(soft_failure(&page), None, "{page}");
        }
    }

    /// Hunt Z3's stand-ins, each `up` before: Tomcat 10's directory listing, whose
    /// title writes its slashes as `&#47;`, the page a fresh `apt install jetty9`
    /// serves, and Varnish's error page answered 200. Titles are read with their character references undone, as a browser's
    /// tab shows them.
    #[test]
    fn hunt_z3_pages_standing_in_for_the_site_name_themselves() {
        let tomcat_listing = "<!doctype html>\n<html lang=\"en\">\n<head>\n<title>Directory Listing For [&#47;reports&#47;]</title>\n<style>body {font-family:Tahoma,Arial,sans-serif;}</style>\n</head>\n<body>\n<h1>Directory Listing For [&#47;reports&#47;]</h1>\n<hr class=\"line\">\n<table width=\"100%\"><tbody><tr><td><a href=\"/files/reports/q1.txt\"><tt>q1.txt</tt></a></td></tr></tbody></table>\n<hr class=\"line\">\n<h3>Apache Tomcat/10.1.60 (Debian)</h3>\n</body>\n</html>\n";
        let jetty = "<HTML>\n  <HEAD>\n    <TITLE>Welcome to Jetty 9 on Debian</TITLE>\n  </HEAD>\n<BODY>\n<h1>Welcome to Jetty 9 on Debian</h1>\n<P align=\"justify\">\n<b>Jetty</b> is a 100% Java HTTP Server and Servlet Container.  This means\nthat you do not need to configure and run a seperate web server (like Apache)\nin order to use java, servlets and JSPs to generate dynamic content.</P>\n</BODY>\n</HTML>\n";
        // Varnish's own error page, delivered with 200 by a custom `vcl_backend_error`.
        let guru = "<!DOCTYPE html>\n<html>\n  <head>\n    <title>503 Backend fetch failed</title>\n  </head>\n  <body>\n    <h1>Error 503 Backend fetch failed</h1>\n    <p>Backend fetch failed</p>\n    <h3>Guru Meditation:</h3>\n    <p>XID: 3</p>\n    <hr>\n    <p>Varnish cache server</p>\n  </body>\n</html>\n";
        each_named(&[
            (tomcat_listing, "directory listing"),
            (jetty, "default server page"),
            (guru, "error page"),
        ]);
        let long = "<p>Fresh fish, chips and the harbour view.</p>".repeat(25);
        let pier = format!("<title>Welcome to Jetty Road Fish Bar</title>{long}");
        assert_eq!(soft_failure(&pier), None, "a site of its own named Jetty");
    }

    /// Each page is named as the kind given.
    fn each_named(pages: &[(&str, &str)]) {
        for (page, named) in pages {
            let said = soft_failure(page);
            assert!(
                said.as_deref().is_some_and(|s| s.starts_with(named)),
                "{said:?}: {page}"
            );
        }
    }

    /// Hunt Z4's stand-ins from Debian's own packages, each `up` before: MediaWiki with
    /// its `LocalSettings.php` lost, nginx's own 50x page served with 200 by
    /// `error_page … = /50x.html`, DokuWiki's setup error when its data directory's
    /// permissions are lost, and Roundcube's internal error when its database is away.
    #[test]
    fn hunt_z4_pages_standing_in_for_the_site_name_themselves() {
        let mediawiki = "<!DOCTYPE html>\n<html><head><meta charset=\"UTF-8\" /><title>MediaWiki 1.39.17</title>\n<style media=\"screen\">body { color: #000; }</style></head><body>\n<img src=\"/resources/assets/mediawiki.png\" alt=\"The MediaWiki logo\" />\n<h1>MediaWiki 1.39.17</h1>\n<div class=\"errorbox\">\n<p>LocalSettings.php not found.</p>\n<p>Please <a href=\"/mw-config/index.php\">set up the wiki</a> first.</p>\n</div>\n</body>\n</html>\n";
        let nginx_50x = "<!DOCTYPE html>\n<html>\n<head>\n<title>Error</title>\n</head>\n<body>\n<h1>An error occurred.</h1>\n<p>Sorry, the page you are looking for is currently unavailable.<br/>\nPlease try again later.</p>\n<p>If you are the system administrator of this resource then you should check\nthe error log for details.</p>\n<p><em>Faithfully yours, nginx.</em></p>\n</body>\n</html>\n";
        let dokuwiki = "<!DOCTYPE html><html><head><title>DokuWiki Setup Error</title></head>\n<body style=\"font-family: Arial, sans-serif\">\n<div style=\"width:60%; margin: auto; background-color: #fcc;\">\n<h1 style=\"font-size: 120%\">DokuWiki Setup Error</h1>\n<p>The datadir ('pages') at /var/lib/dokuwiki/data/pages is not found, isn't accessible or writable. You should check your config and permission settings. Or maybe you want to <a href=\"install.php\">run the installer</a>?</p>\n</div>\n</body>\n</html>\n";
        let roundcube = "<!DOCTYPE html>\n<html><head><title>Internal Error</title></head><body>\n<div class=\"boxerror\"><h1>Oops... something went wrong!</h1>\n<p>An internal error has occurred. Your request cannot be processed at this time.</p>\n<p class=\"admin\">For administrators: Please check the application and/or server error logs for more information.</p></div>\n</body></html>";
        each_named(&[
            (mediawiki, "unfinished install"),
            (nginx_50x, "error page"),
            (dokuwiki, "error page"),
            (roundcube, "error page"),
        ]);
        // Pages about these errors, and a site's own titles, are the site.
        let long = "<p>Minutes of the council meeting, agendas and forms.</p>".repeat(25);
        for page in [
            format!("<title>Internal Error Reporting Policy</title>{long}"),
            format!("<title>County wiki</title><h1>Help: LocalSettings.php not found after an upgrade</h1>{long}"),
        ] {
            assert_eq!(soft_failure(&page), None, "{page}");
        }
    }

    /// Review AB: a short status page telling of an incident in the words of the error
    /// ("An internal error has occurred"), and a small login page keeping its error
    /// message hidden by a class until a script shows it (Bootstrap's `d-none`), are the
    /// site itself, working: `up` before hunt Z4's phrases, `degraded/body_mismatch`
    /// ("error page") since.
    #[test]
    fn review_ab_a_working_page_naming_an_internal_error_is_no_stand_in() {
        let status = "<!doctype html><html><head><title>County services status</title></head><body>\
            <h1>All systems operational</h1><ul><li>Permits: operational</li><li>Payments: operational</li></ul>\
            <h2>Past incidents</h2><p>3 May, 09:12: Payments showed \"An internal error has occurred\" \
            to some residents for twenty minutes. Resolved.</p></body></html>";
        let login = "<!doctype html><html><head><title>Sign in - County portal</title>\
            <link rel=stylesheet href=/css/bootstrap.min.css></head><body><main class=container>\
            <h1>Sign in</h1><form method=post action=/login><input name=user placeholder=Username>\
            <input name=pass type=password placeholder=Password><button>Sign in</button></form>\
            <div id=failed class=\"alert alert-danger d-none\">An internal error has occurred. \
            Please try again.</div></main><script src=/js/login.js></script></body></html>";
        for page in [status, login] {
            assert_eq!(soft_failure(page), None, "{page}");
        }
    }
}
