//! PHP sites as small hosts run them (PHP-FPM behind nginx, Debian's production
//! `php.ini`), judged by what a visitor sees. Found by hand (2026-12-04): a PHP site
//! whose database is gone prints the driver's error in place of the page, with status
//! 200, and picket called it `up`.

use picket::job::{Report, Verdict};

use crate::support::picket::{check, engine_with};
use crate::support::real::php::Php;

const HOST: &str = "php.county.test";

/// The home page of a working PHP site.
const HOME: &str = r#"<?php $year = date("Y"); ?><!DOCTYPE html><html><head><title>Village of Oakdale</title></head>
<body><h1>Village of Oakdale</h1><p>Board meetings, building permits, garbage collection and
water bills. Village hall is open 8 to 4. &copy; <?= $year ?></p></body></html>"#;

/// The database connection every PHP tutorial teaches, to a MySQL that is gone.
const DB_GONE: &str = r#"<?php
try { $db = new PDO("mysql:unix_socket=/nonexistent/mysqld.sock;dbname=county", "web", "pw"); }
catch (PDOException $e) { die("Connection failed: " . $e->getMessage()); }
?><!DOCTYPE html><html><head><title>Village of Oakdale</title></head><body><h1>Minutes</h1></body></html>"#;

/// A site switched to maintenance by hand, saying so in its status line.
const CLOSED: &str = r#"<?php header("HTTP/1.1 503 Down for maintenance"); header("Retry-After: 600"); ?>
<!DOCTYPE html><html><head><title>Village of Oakdale</title></head><body><h1>We will be back
soon</h1><p>The village site is being updated tonight.</p></body></html>"#;

fn verdict(r: &Report) -> (Verdict, &str) {
    (r.verdict, r.reason.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_php_site_is_judged_by_what_its_visitors_see() {
    let ip = "127.0.63.50";
    let mut php = Php::start(
        ip,
        HOST,
        &[
            ("index.php", HOME),
            ("minutes.php", DB_GONE),
            ("fatal.php", "<?php undefined_function(); ?>"),
            ("closed.php", CLOSED),
        ],
    );
    let e = engine_with(
        "",
        &format!("[dns]\nstatic = {{ \"{HOST}\" = \"{ip}\" }}\n"),
    );
    let port = php.nginx.port;
    let url = |path: &str| format!("http://{HOST}:{port}/{path}");

    let r = check(&e, &url("")).await;
    assert_eq!(verdict(&r), (Verdict::Up, "ok"), "{}", r.detail);
    // The server's own words in the status line are what the detail says (asked before
    // the IP has answered a burst, after which a 503 may be a limit refusing us).
    let r = check(&e, &url("closed.php")).await;
    assert_eq!(verdict(&r), (Verdict::Down, "http_status"), "{}", r.detail);
    assert!(
        r.detail.starts_with("503 Down for maintenance"),
        "{}",
        r.detail
    );
    // PHP's own words, status 200: not the site.
    let r = check(&e, &url("minutes.php")).await;
    assert_ne!(r.verdict, Verdict::Up, "{}", r.detail);
    assert_eq!(r.reason, "body_mismatch", "{}", r.detail);
    assert!(r.detail.contains("database error"), "{}", r.detail);
    // A fatal error with errors not shown: an empty 500.
    let r = check(&e, &url("fatal.php")).await;
    assert_eq!(verdict(&r), (Verdict::Down, "http_status"), "{}", r.detail);
    assert!(r.detail.contains("500"), "{}", r.detail);
    // The pool gone: nginx's 502.
    php.stop_pool();
    let r = check(&e, &url("")).await;
    assert_eq!(verdict(&r), (Verdict::Down, "http_status"), "{}", r.detail);
    assert!(r.detail.contains("502"), "{}", r.detail);
}

/// A page whose script is stopped part way by PHP's `max_execution_time` (a slow query,
/// a loop), its first part already sent: PHP-FPM ends the answer and nginx closes it
/// cleanly (FastCGI, like uwsgi, has no length of its own to fall short of), so the
/// half page arrives whole on the wire, status 200, ending where the script died, after
/// seconds of nothing. Hunt Z4 met the same behind nginx and uWSGI's `harakiri`: `up`.
/// Errors are not shown (Debian's production `php.ini`), so nothing names it but its
/// end.
const KILLED_PART_WAY: &str = r#"<?php set_time_limit(2); ?><!DOCTYPE html><html><head><title>Village of Oakdale</title></head>
<body><h1>Building permits</h1><ul>
<?php for ($i = 0; $i < 200; $i++) { echo "<li>Permit $i: a new porch, approved by the board.</li>\n"; }
flush(); while (true) { $x = sqrt(mt_rand()); } ?>
</ul><p>Village hall is open 8 to 4.</p></body></html>"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_php_page_stopped_part_way_is_not_up() {
    let ip = "127.0.63.51";
    let php = Php::start(
        ip,
        HOST,
        &[("index.php", HOME), ("permits.php", KILLED_PART_WAY)],
    );
    let e = engine_with(
        "attempts = 1",
        &format!("[dns]\nstatic = {{ \"{HOST}\" = \"{ip}\" }}\n"),
    );
    let port = php.nginx.port;
    let r = check(&e, &format!("http://{HOST}:{port}/permits.php")).await;
    assert_eq!(verdict(&r), (Verdict::Degraded, "protocol"), "{}", r.detail);
    assert!(r.detail.contains("cut off"), "{}", r.detail);
    // The same site's whole page is up.
    let r = check(&e, &format!("http://{HOST}:{port}/")).await;
    assert_eq!(verdict(&r), (Verdict::Up, "ok"), "{}", r.detail);
}
