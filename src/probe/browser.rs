//! The headers a browser sends with a page it was asked to open, derived once from the
//! configured User-Agent. Bot managers in front of many sites compare them with the
//! User-Agent: a request calling itself Chrome without Chrome's client hints and fetch
//! metadata is taken for a script and refused, so picket sends what that browser sends.
//!
//! Over plain HTTP a browser sends fewer: client hints and fetch metadata only go to
//! secure origins, and Chrome asks for `br` and `zstd` only over TLS. So there are two
//! lists, [`Browser::plain`] and [`Browser::secure`], each in the browser's own order.

/// The browser family a User-Agent names, as far as its headers differ.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Family {
    /// Chrome, Edge and other Chromium browsers: client hints, fetch metadata.
    Chromium {
        /// The brand it reports ("Google Chrome", "Microsoft Edge").
        brand: &'static str,
        /// Its major version, as in the User-Agent.
        major: u32,
        /// The platform, as `Sec-CH-UA-Platform` names it ("Windows").
        platform: &'static str,
        /// A phone's browser.
        mobile: bool,
    },
    /// Firefox and Safari: fetch metadata, no client hints.
    Other,
    /// Not a browser's User-Agent (an operator's own): no browser-only headers.
    None,
}

/// The request headers of a page's navigation, per transport.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Browser {
    /// Over plain HTTP.
    pub(crate) plain: Vec<(String, String)>,
    /// Over HTTPS.
    pub(crate) secure: Vec<(String, String)>,
}

impl Browser {
    /// The headers for `user_agent`, with `accept` and `accept_language` (none when
    /// empty) as configured.
    pub(crate) fn new(user_agent: &str, accept: &str, accept_language: &str) -> Browser {
        let family = family(user_agent);
        let header = |name: &str, value: &str| (name.to_string(), value.to_string());
        let list = |secure: bool| {
            let mut h = Vec::with_capacity(13);
            if secure {
                h.extend(client_hints(&family));
            }
            h.push(header("Upgrade-Insecure-Requests", "1"));
            h.push(header("User-Agent", user_agent));
            h.push(header("Accept", accept));
            if secure && family != Family::None {
                h.push(header("Sec-Fetch-Site", "none"));
                h.push(header("Sec-Fetch-Mode", "navigate"));
                h.push(header("Sec-Fetch-User", "?1"));
                h.push(header("Sec-Fetch-Dest", "document"));
            }
            // Chrome and Firefox ask for br and zstd over TLS only.
            let codings = if secure {
                "gzip, deflate, br, zstd"
            } else {
                "gzip, deflate"
            };
            h.push(header("Accept-Encoding", codings));
            if !accept_language.is_empty() {
                h.push(header("Accept-Language", accept_language));
            }
            h
        };
        Browser {
            plain: list(false),
            secure: list(true),
        }
    }
}

/// The family of `ua`, read as browsers write theirs.
fn family(ua: &str) -> Family {
    if !ua.starts_with("Mozilla/5.0") {
        return Family::None;
    }
    let major = |token: &str| {
        ua.split(token)
            .nth(1)?
            .split(|c: char| !c.is_ascii_digit())
            .next()?
            .parse::<u32>()
            .ok()
    };
    // Edge names Chrome too, and Chrome names Safari: the most specific token first.
    // Chrome on iOS (CriOS) is WebKit, and sends no client hints.
    let chromium = match (major("Edg/"), major("Chrome/")) {
        (Some(edge), _) => Some(("Microsoft Edge", edge)),
        (None, Some(chrome)) => Some(("Google Chrome", chrome)),
        (None, None) => None,
    };
    match chromium {
        Some((brand, major)) => Family::Chromium {
            brand,
            major,
            platform: platform(ua),
            mobile: ua.contains("Mobile"),
        },
        None if ua.contains("Firefox/") || ua.contains("Safari/") => Family::Other,
        None => Family::None,
    }
}

/// The platform as `Sec-CH-UA-Platform` names it.
fn platform(ua: &str) -> &'static str {
    if ua.contains("Windows") {
        "Windows"
    } else if ua.contains("Android") {
        "Android"
    } else if ua.contains("CrOS") {
        "Chrome OS"
    } else if ua.contains("Macintosh") {
        "macOS"
    } else if ua.contains("Linux") {
        "Linux"
    } else {
        "Unknown"
    }
}

/// The low-entropy client hints a Chromium browser sends unasked on every HTTPS request.
fn client_hints(family: &Family) -> Vec<(String, String)> {
    let Family::Chromium {
        brand,
        major,
        platform,
        mobile,
    } = family
    else {
        return Vec::new();
    };
    vec![
        ("sec-ch-ua".to_string(), brands(brand, *major)),
        (
            "sec-ch-ua-mobile".to_string(),
            if *mobile { "?1" } else { "?0" }.to_string(),
        ),
        ("sec-ch-ua-platform".to_string(), format!("\"{platform}\"")),
    ]
}

/// `Sec-CH-UA` as Chromium writes it for `major`: its brand, "Chromium" and a GREASE
/// brand, in an order and with characters that Chromium derives from the major version
/// (`GenerateBrandVersionList` in Chromium's `user_agent_utils.cc`), so that the list
/// is the same as the real browser's of that version.
fn brands(brand: &str, major: u32) -> String {
    const GREASE_CHARS: [char; 11] = [' ', '(', ':', '-', '.', '/', ')', ';', '=', '?', '_'];
    const GREASE_VERSIONS: [&str; 3] = ["8", "99", "24"];
    const ORDERS: [[usize; 3]; 6] = [
        [0, 1, 2],
        [0, 2, 1],
        [1, 0, 2],
        [1, 2, 0],
        [2, 0, 1],
        [2, 1, 0],
    ];
    let seed = major as usize;
    let grease = format!(
        "\"Not{}A{}Brand\";v=\"{}\"",
        GREASE_CHARS[seed % 11],
        GREASE_CHARS[(seed + 1) % 11],
        GREASE_VERSIONS[seed % 3]
    );
    let chromium = format!("\"Chromium\";v=\"{major}\"");
    let named = format!("\"{brand}\";v=\"{major}\"");
    let order = ORDERS[seed % 6];
    let mut list = [String::new(), String::new(), String::new()];
    list[order[0]] = grease;
    list[order[1]] = chromium;
    list[order[2]] = named;
    list.join(", ")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    const CHROME_156: &str = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/156.0.0.0 Safari/537.36";
    const ACCEPT: &str = "text/html,*/*;q=0.8";

    /// The value of header `name` in `list`, whatever its case (for the tests of the
    /// plan's headers too).
    pub(crate) fn get<'a>(list: &'a [(String, String)], name: &str) -> Option<&'a str> {
        list.iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn brand_lists_are_those_of_the_real_browsers() {
        // As Chrome 120, 124, 130 and 131 send them; 156's GREASE brand as Chromium 156
        // sends it (tests/browser.rs compares with the installed Chromium).
        assert_eq!(
            brands("Google Chrome", 120),
            r#""Not_A Brand";v="8", "Chromium";v="120", "Google Chrome";v="120""#
        );
        assert_eq!(
            brands("Google Chrome", 124),
            r#""Chromium";v="124", "Google Chrome";v="124", "Not-A.Brand";v="99""#
        );
        assert_eq!(
            brands("Google Chrome", 130),
            r#""Chromium";v="130", "Google Chrome";v="130", "Not?A_Brand";v="99""#
        );
        assert_eq!(
            brands("Google Chrome", 131),
            r#""Google Chrome";v="131", "Chromium";v="131", "Not_A Brand";v="24""#
        );
        assert_eq!(
            brands("Google Chrome", 156),
            r#""Not:A-Brand";v="8", "Chromium";v="156", "Google Chrome";v="156""#
        );
    }

    #[test]
    fn chrome_over_https_sends_its_hints_and_fetch_metadata_in_its_order() {
        let b = Browser::new(CHROME_156, ACCEPT, "en-US,en;q=0.9");
        let names: Vec<&str> = b.secure.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "sec-ch-ua",
                "sec-ch-ua-mobile",
                "sec-ch-ua-platform",
                "Upgrade-Insecure-Requests",
                "User-Agent",
                "Accept",
                "Sec-Fetch-Site",
                "Sec-Fetch-Mode",
                "Sec-Fetch-User",
                "Sec-Fetch-Dest",
                "Accept-Encoding",
                "Accept-Language",
            ]
        );
        assert_eq!(get(&b.secure, "sec-ch-ua-mobile"), Some("?0"));
        assert_eq!(get(&b.secure, "sec-ch-ua-platform"), Some("\"Windows\""));
        assert_eq!(get(&b.secure, "Sec-Fetch-Site"), Some("none"));
        assert_eq!(
            get(&b.secure, "Accept-Encoding"),
            Some("gzip, deflate, br, zstd")
        );
    }

    #[test]
    fn over_plain_http_no_hints_no_fetch_metadata_and_no_br() {
        let b = Browser::new(CHROME_156, ACCEPT, "");
        let names: Vec<&str> = b.plain.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "Upgrade-Insecure-Requests",
                "User-Agent",
                "Accept",
                "Accept-Encoding"
            ]
        );
        assert_eq!(get(&b.plain, "Accept-Encoding"), Some("gzip, deflate"));
    }

    #[test]
    fn edge_android_firefox_and_an_operators_own_agent() {
        let edge = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36 Edg/131.0.0.0";
        let b = Browser::new(edge, ACCEPT, "");
        let hint = get(&b.secure, "sec-ch-ua").unwrap_or_default();
        assert!(hint.contains(r#""Microsoft Edge";v="131""#), "{hint}");

        let android = "Mozilla/5.0 (Linux; Android 10; K) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Mobile Safari/537.36";
        let b = Browser::new(android, ACCEPT, "");
        assert_eq!(get(&b.secure, "sec-ch-ua-mobile"), Some("?1"));
        assert_eq!(get(&b.secure, "sec-ch-ua-platform"), Some("\"Android\""));

        let firefox =
            "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:133.0) Gecko/20100101 Firefox/133.0";
        let b = Browser::new(firefox, ACCEPT, "");
        assert_eq!(get(&b.secure, "sec-ch-ua"), None);
        assert_eq!(get(&b.secure, "Sec-Fetch-Mode"), Some("navigate"));

        let own = "picket-monitor/1.0 (+https://ops.example/)";
        let b = Browser::new(own, ACCEPT, "");
        assert_eq!(get(&b.secure, "sec-ch-ua"), None);
        assert_eq!(get(&b.secure, "Sec-Fetch-Mode"), None);
        assert_eq!(get(&b.secure, "User-Agent"), Some(own));
    }
}
