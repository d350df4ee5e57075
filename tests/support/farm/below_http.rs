//! Failures below HTTP: refused, silent, trickling, empty reply, a first connection
//! reset, and the like.

use super::*;

// ---------------------------------------------------------------------------
// Failures below HTTP: refused, silent, trickling, empty reply, first connection reset,
// idle keep-alive connections closed early

pub(super) async fn failures(b: &mut Builder) {
    let addr = b.refusing();
    b.add(
        "connection-refused",
        "http",
        addr,
        "/",
        None,
        truth(
            "down",
            Some("connect"),
            "nothing listens on the port: ERR_CONNECTION_REFUSED",
        ),
        said("down", "connect"),
        vec![Fact::Attempts(2)],
    );

    b.raw(
        "never-answers",
        raw::never_answer,
        truth(
            "down",
            Some("timeout"),
            "accepts the connection and never says a word",
        ),
        said("down", "timeout"),
        vec![Fact::Attempts(2)],
    )
    .await;

    let body = page("County office", "Served one byte a second.");
    let response = raw_response("200 OK", &[("Content-Type", HTML_UTF8)], body.as_bytes());
    b.raw(
        "trickle",
        raw::trickle(response, 1, Duration::from_secs(1)),
        truth(
            "down",
            Some("timeout"),
            "one byte a second: the page would take minutes",
        ),
        said("down", "timeout"),
        vec![Fact::Attempts(2)],
    )
    .await;

    b.raw(
        "empty-reply",
        raw::close_without_answer,
        truth(
            "down",
            None,
            "closes the connection without a byte: ERR_EMPTY_RESPONSE",
        ),
        said("down", "connect"),
        vec![Fact::Attempts(2)],
    )
    .await;

    // The page whole, but the server closes before the length it announced (a PHP
    // plugin's stale Content-Length, a proxy that recompressed): browsers show it.
    let body = page("County office", "Opening hours and services.");
    let mut short = raw_response("200 OK", &[("Content-Type", HTML_UTF8)], body.as_bytes());
    let announced = format!("Content-Length: {}", body.len());
    let lying = format!("Content-Length: {}", body.len() + 4096);
    short = String::from_utf8(short)
        .expect("ASCII head")
        .replacen(&announced, &lying, 1)
        .into_bytes();
    b.raw(
        "short-body",
        raw::fixed(short),
        truth(
            "degraded",
            Some("protocol"),
            "the whole page, but the connection closes 4 KB short of the length announced: browsers show the page",
        ),
        said("degraded", "protocol"),
        vec![Fact::Attempts(2), Fact::DetailContains("broke off")],
    )
    .await;

    // The same whole page, but the server keeps the connection open instead of closing
    // it (PHP still working after its output, keep-alive with a stale length): browsers
    // show the page and go on loading.
    let body = page("County office", "Opening hours and services.");
    let held = raw_response("200 OK", &[("Content-Type", HTML_UTF8)], body.as_bytes());
    let held = String::from_utf8(held)
        .expect("ASCII head")
        .replacen(
            &format!("Content-Length: {}", body.len()),
            &format!("Content-Length: {}", body.len() + 4096),
            1,
        )
        .into_bytes();
    let whole = held.len();
    b.raw(
        "whole-page-held-open",
        raw::trickle(held, whole, Duration::from_secs(60)),
        truth(
            "degraded",
            Some("protocol"),
            "the whole page, to its </html>, then the connection held open 4 KB short of the length announced: browsers show the page, still loading",
        ),
        said("degraded", "protocol"),
        vec![Fact::DetailContains("</html>")],
    )
    .await;

    // Header lines browsers read and a strict parser refuses: a space before the colon,
    // a folded continuation line, a line without a colon (old CGI scripts, appliances).
    let body = page("County office", "Council meeting minutes.");
    let mut sloppy = b"HTTP/1.1 200 OK\r\nContent-Type : text/html; charset=utf-8\r\n\
        X-Powered-By: an old\r\n  appliance\r\nthis line has no colon\r\n"
        .to_vec();
    sloppy.extend_from_slice(format!("Content-Length: {}\r\n\r\n{body}", body.len()).as_bytes());
    b.raw(
        "sloppy-headers",
        raw::fixed(sloppy),
        truth(
            "up",
            Some("ok"),
            "a page whose header lines break the grammar in ways browsers forgive",
        ),
        said("up", "ok"),
        vec![Fact::Attempts(1)],
    )
    .await;

    // Heads hyper's parser refuses and browsers read. Status lines: a lower-case version
    // (an old appliance's own server), two spaces before the code, a version HTTP/1
    // never had; Chrome finds "http" in any case, skips spaces and reads HTTP/1.2 as the
    // newest version it knows; curl reads the first two. And (hunt Q) line ends Chrome
    // splits header lines on (a CGI script on Windows writing `\r\n` in text mode, a
    // lone CR), a status line with no space before its reason or a space before it, a
    // lower-case status line after a `100 Continue`, a `Content-Length` with a sign
    // (Chrome takes no length and reads to the close), an HTTP/1.0 answer saying
    // `chunked` (Chrome decodes chunks only from HTTP/1.1 on, and reads to the close),
    // and more header lines than hyper takes by default.
    let body = page("County office", "Served by an old appliance.");
    let whole = raw_response(
        "200 OK",
        &[("Content-Type", HTML_UTF8), ("Connection", "close")],
        body.as_bytes(),
    );
    let replace = |from: &str, to: &str| -> Vec<u8> {
        let text = String::from_utf8(whole.clone()).expect("ASCII head");
        assert!(text.contains(from), "{from:?}");
        text.replacen(from, to, 1).into_bytes()
    };
    let chunked = {
        let head = "HTTP/1.0 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut r = format!("{head}{:x}\r\n", body.len()).into_bytes();
        r.extend_from_slice(body.as_bytes());
        r.extend_from_slice(b"\r\n0\r\n\r\n");
        r
    };
    // Chunks whose lines end in a bare LF (an embedded server's own chunking, a CGI
    // gateway on Windows): Chrome's chunked decoder finds each line's LF and drops a CR
    // before it, curl's skips the CR; hyper takes only CR LF. Every line so, or only
    // the ends of the chunks' data, after half the page came.
    let half = body.len() / 2;
    let chunks = |size_end: &str, data_end: &str| -> Vec<u8> {
        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\n\
                    Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        let mut r = head.as_bytes().to_vec();
        for part in [&body[..half], &body[half..]] {
            r.extend_from_slice(format!("{:x}{size_end}{part}{data_end}", part.len()).as_bytes());
        }
        r.extend_from_slice(format!("0{size_end}{size_end}").as_bytes());
        r
    };
    for (name, answer, how) in [
        (
            "status-line-lower-case",
            replace("HTTP/1.1 200 OK", "http/1.1 200 OK"),
            "writes its status line in lower case (\"http/1.1 200 OK\")",
        ),
        (
            "status-line-two-spaces",
            replace("HTTP/1.1 200 OK", "HTTP/1.1  200 OK"),
            "puts two spaces before the status code",
        ),
        (
            "status-line-http-1-2",
            replace("HTTP/1.1 200 OK", "HTTP/1.2 200 OK"),
            "says its version is HTTP/1.2",
        ),
        (
            "header-lines-end-cr-cr-lf",
            replace("\r\nConnection: close\r\n", "\r\r\nConnection: close\r\r\n"),
            "ends its header lines with CR CR LF",
        ),
        (
            "header-line-lone-cr",
            replace("\r\nConnection: close", "\r\nX-A: 1\rConnection: close"),
            "parts two header lines with a lone CR",
        ),
        (
            "status-line-no-space-before-reason",
            replace("HTTP/1.1 200 OK", "HTTP/1.1 200OK"),
            "writes \"HTTP/1.1 200OK\"",
        ),
        (
            "status-line-after-a-space",
            replace("HTTP/1.1 200 OK", " HTTP/1.1 200 OK"),
            "sends a space before its status line",
        ),
        (
            "lower-case-status-line-after-100",
            replace(
                "HTTP/1.1 200 OK",
                "HTTP/1.1 100 Continue\r\n\r\nhttp/1.1 200 OK",
            ),
            "sends 100 Continue, then a lower-case status line",
        ),
        (
            "content-length-with-a-sign",
            replace("Content-Length: ", "Content-Length: +"),
            "says Content-Length: +N and closes after the page",
        ),
        (
            "http-1-0-saying-chunked",
            chunked,
            "answers HTTP/1.0 with Transfer-Encoding: chunked and closes",
        ),
        (
            "six-hundred-header-lines",
            {
                let lines: String = (0..600)
                    .map(|n| format!("X-Trace-{n}: hop {n} of a long chain\r\n"))
                    .collect();
                replace(
                    "Connection: close\r\n",
                    &format!("{lines}Connection: close\r\n"),
                )
            },
            "sends 600 header lines (about 24 KB): Chrome limits a head by size, 256 KB",
        ),
        (
            "chunk-lines-ended-by-lf",
            chunks("\n", "\n"),
            "ends every line of its chunks with a bare LF: Chrome and curl read it",
        ),
        (
            "chunk-data-ended-by-lf",
            chunks("\r\n", "\n"),
            "ends its chunks' data with a bare LF, after half the page: Chrome and curl read it",
        ),
    ] {
        b.raw(
            name,
            raw::fixed(answer),
            truth("up", Some("ok"), how),
            said("up", "ok"),
            vec![Fact::Attempts(1)],
        )
        .await;
    }

    // Hunt Q left it: `Transfer-Encoding: identity` (a coding RFC 2616 had and RFC 7230
    // dropped) beside a true `Content-Length`, on a connection kept alive. hyper follows
    // RFC 9112 (a transfer coding that is not chunked: read to the close) and waited
    // out the whole timeout; Chrome decodes chunks only when `chunked` is named and
    // otherwise takes the length, so the page shows at once.
    b.raw(
        "transfer-encoding-identity-kept-alive",
        raw::kept_open(replace(
            "Connection: close\r\n",
            "Transfer-Encoding: identity\r\n",
        )),
        truth(
            "up",
            Some("ok"),
            "says Transfer-Encoding: identity beside its true Content-Length and keeps the connection open",
        ),
        said("up", "ok"),
        vec![Fact::Attempts(1)],
    )
    .await;

    // Review X: Content-Lengths the mend route reads otherwise than browsers.
    // `18446744073709551615` is (size_t)-1, written by a server that does not know its
    // length: Chrome's StringToInt64 fails on it (no length, read to the close) and
    // curl says "Overflow Content-Length" and reads to the close; hyper refuses it
    // (bigger than its longest body) and `mend` keeps it, as it is all digits.
    // `Content-Length: abc` beside a true one is two differing Content-Lengths: Chrome
    // fails with ERR_RESPONSE_HEADERS_MULTIPLE_CONTENT_LENGTH, Firefox with
    // NS_ERROR_CORRUPTED_CONTENT, curl with "Invalid Content-Length" (a response
    // smuggling guard); `mend` drops the one that is no number and hyper reads the other.
    {
        let announced = format!("Content-Length: {}", body.len());
        b.raw(
            "review-x-content-length-all-ones",
            raw::fixed(replace(&announced, "Content-Length: 18446744073709551615")),
            truth(
                "up",
                Some("ok"),
                "says Content-Length: 18446744073709551615 ((size_t)-1) and closes after the page: Chrome and curl read to the close",
            ),
            said("up", "ok"),
            vec![Fact::Attempts(1)],
        )
        .await;
        b.raw(
            "review-x-content-length-twice-one-no-number",
            raw::fixed(replace(&announced, &format!("Content-Length: abc\r\n{announced}"))),
            truth(
                "down",
                Some("protocol"),
                "two differing Content-Lengths (abc and N): ERR_RESPONSE_HEADERS_MULTIPLE_CONTENT_LENGTH, curl: Invalid Content-Length",
            ),
            said("down", "protocol"),
            vec![Fact::Attempts(2)],
        )
        .await;
    }

    // An old embedded server (a county's appliance, an ISAPI filter) that looks for its
    // header names as browsers and curl write them: "Host:", not "host:".
    let body = page("County office", "Served by an old appliance.");
    let ok = Arc::new(raw_response(
        "200 OK",
        &[("Content-Type", HTML_UTF8), ("Connection", "close")],
        body.as_bytes(),
    ));
    let bad = Arc::new(raw_response(
        "400 Bad Request",
        &[("Content-Type", HTML_UTF8), ("Connection", "close")],
        b"<html><body><h1>400 Bad Request</h1>HTTP/1.1 request without a Host header.</body></html>",
    ));
    b.raw(
        "header-case-sensitive",
        move |mut stream: TcpStream| {
            let (ok, bad) = (Arc::clone(&ok), Arc::clone(&bad));
            async move {
                let head = crate::support::targets::read_request_head(&mut stream).await;
                let has_host = head.windows(8).any(|w| w == b"\r\nHost: ");
                let _ = stream.write_all(if has_host { &ok } else { &bad }).await;
                let _ = stream.shutdown().await;
            }
        },
        truth(
            "up",
            Some("ok"),
            "reads header names case-sensitively, as browsers and curl write them (\"Host:\")",
        ),
        said("up", "ok"),
        vec![Fact::Attempts(1)],
    )
    .await;

    let body = page("County office", "Second time lucky.");
    let ok = Arc::new(raw_response(
        "200 OK",
        &[("Content-Type", HTML_UTF8), ("Connection", "close")],
        body.as_bytes(),
    ));
    let connections = Arc::new(AtomicUsize::new(0));
    b.raw(
        "reset-first-connection",
        move |mut stream: TcpStream| {
            let ok = Arc::clone(&ok);
            let n = connections.fetch_add(1, Ordering::SeqCst);
            async move {
                if n == 0 {
                    raw::reset(stream).await;
                } else {
                    let _ = crate::support::targets::read_request_head(&mut stream).await;
                    let _ = stream.write_all(&ok).await;
                    let _ = stream.shutdown().await;
                }
            }
        },
        truth(
            "up",
            Some("ok"),
            "resets the first connection, then answers: a reload works",
        ),
        said("up", "ok"),
        vec![Fact::Attempts(2), Fact::FirstAttemptReason("connect")],
    )
    .await;

    let home = Arc::new(page("County office", "Keep-alive, briefly.").into_bytes());
    b.raw(
        "keepalive-closer",
        move |mut stream: TcpStream| {
            let home = Arc::clone(&home);
            async move {
                loop {
                    let head = crate::support::targets::read_request_head(&mut stream).await;
                    if head.is_empty() {
                        return;
                    }
                    // Promises a minute of keep-alive, closes after 50 ms idle.
                    let keep = [
                        ("Content-Type", HTML_UTF8),
                        ("Connection", "keep-alive"),
                        ("Keep-Alive", "timeout=60, max=100"),
                    ];
                    let response = if request_path(&head) == "/" {
                        let mut h = keep.to_vec();
                        h.push(("Location", "/home"));
                        raw_response("302 Found", &h, b"")
                    } else {
                        raw_response("200 OK", &keep, &home)
                    };
                    if stream.write_all(&response).await.is_err() {
                        return;
                    }
                    let idle =
                        tokio::time::timeout(Duration::from_millis(50), stream.readable()).await;
                    if idle.is_err() {
                        let _ = stream.shutdown().await;
                        return;
                    }
                }
            }
        },
        truth(
            "up",
            Some("ok"),
            "promises keep-alive but closes idle connections after 50 ms; a fresh connection works",
        ),
        said("up", "ok"),
        vec![Fact::Redirects(1)],
    )
    .await;
}
