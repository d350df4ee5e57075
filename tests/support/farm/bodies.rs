//! Bodies: compressed (gzip, deflate, br, raw deflate), and far too large.

use super::*;

// ---------------------------------------------------------------------------
// Bodies: compressed (gzip, deflate, br, raw deflate), and far too large

pub(super) fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("gzip");
    e.finish().expect("gzip")
}

pub(super) fn zlib(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("zlib");
    e.finish().expect("zlib")
}

pub(super) fn raw_deflate(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).expect("deflate");
    e.finish().expect("deflate")
}

pub(super) fn br(data: &[u8]) -> Vec<u8> {
    let mut w = brotli::CompressorWriter::new(Vec::new(), 4096, 5, 22);
    w.write_all(data).expect("brotli");
    w.into_inner()
}

fn zstd_(data: &[u8]) -> Vec<u8> {
    zstd::encode_all(data, 3).expect("zstd")
}

pub(super) async fn bodies(b: &mut Builder) {
    let text = page(
        "County office",
        "欢迎光临 — this page travels compressed. The county office publishes its opening hours.",
    );
    struct Encoded {
        name: &'static str,
        encoding: &'static str,
        compress: fn(&[u8]) -> Vec<u8>,
        truth: Truth,
        said: Said,
    }
    let up = |says| truth("up", Some("ok"), says);
    let cases = [
        Encoded {
            name: "gzip",
            encoding: "gzip",
            compress: gzip,
            truth: up("gzip-encoded page containing 欢迎光临"),
            said: said("up", "ok"),
        },
        Encoded {
            name: "deflate",
            encoding: "deflate",
            compress: zlib,
            truth: up("deflate-encoded (zlib-wrapped, as RFC 9110 says) page containing 欢迎光临"),
            said: said("up", "ok"),
        },
        // Old IIS and some embedded servers send raw deflate; Chrome and Firefox accept
        // it. reqwest's deflate decoder (tower-http's ZlibDecoder) only takes the zlib
        // wrapper.
        Encoded {
            name: "deflate-raw",
            encoding: "deflate",
            compress: raw_deflate,
            truth: up(
                "\"deflate\" sent as a raw deflate stream without the zlib wrapper; browsers decode it",
            ),
            said: said("up", "ok"),
        },
        // Content codings are case-insensitive (RFC 9110 8.4.1), and "x-gzip" is gzip's
        // old name, in the `AddEncoding x-gzip .gz .tgz` line of Apache's mime.conf (shipped
        // commented out in Debian, enabled by sites that serve .gz files): Chrome and Firefox
        // decode both.
        Encoded {
            name: "x-gzip",
            encoding: "x-gzip",
            compress: gzip,
            truth: up("gzip-encoded page labelled \"x-gzip\", gzip's old name; browsers decode it"),
            said: said("up", "ok"),
        },
        Encoded {
            name: "gzip-capitals",
            encoding: "GZIP",
            compress: gzip,
            truth: up("gzip-encoded page labelled \"GZIP\": codings are case-insensitive"),
            said: said("up", "ok"),
        },
        // A list of codings is applied in the order given, so decoded in reverse (RFC
        // 9110 8.4): a page compressed twice (PHP's zlib.output_compression under Apache's
        // mod_deflate, which adds its coding to the list) or by two layers that each
        // chose their own. Chrome and Firefox decode the whole list.
        Encoded {
            name: "gzip-gzip",
            encoding: "gzip, gzip",
            compress: |d| gzip(&gzip(d)),
            truth: up("page gzip-compressed twice, labelled \"gzip, gzip\"; browsers decode both"),
            said: said("up", "ok"),
        },
        Encoded {
            name: "deflate-gzip",
            encoding: "deflate, gzip",
            compress: |d| gzip(&zlib(d)),
            truth: up("page deflated, then gzipped, labelled \"deflate, gzip\"; browsers decode both"),
            said: said("up", "ok"),
        },
        // Hunt Q: Chrome does not check gzip's 8-byte trailer (CRC and size).
        Encoded {
            name: "gzip-without-trailer",
            encoding: "gzip",
            compress: |d| {
                let whole = gzip(d);
                whole[..whole.len() - 8].to_vec()
            },
            truth: up("gzip-encoded page whose 8-byte trailer is missing: Chrome does not check it"),
            said: said("up", "ok"),
        },
        // Over plain HTTP browsers ask for gzip and deflate only. Chrome refuses a body
        // in a coding it did not ask for (ERR_CONTENT_DECODING_FAILED) and Firefox shows
        // its compressed bytes: a server sending br or zstd to everyone over HTTP (a
        // CDN's cached copy, a static `.br` served with its label) shows no page.
        Encoded {
            name: "brotli-unasked",
            encoding: "br",
            compress: br,
            truth: truth(
                "down",
                Some("protocol"),
                "br-encoded page over plain HTTP, where browsers do not ask for br: Chrome refuses it, Firefox shows its bytes",
            ),
            said: said("down", "protocol"),
        },
        Encoded {
            name: "zstd-unasked",
            encoding: "zstd",
            compress: zstd_,
            truth: truth(
                "down",
                Some("protocol"),
                "zstd-encoded page over plain HTTP, where browsers do not ask for zstd: Chrome refuses it, Firefox shows its bytes",
            ),
            said: said("down", "protocol"),
        },
    ];
    for Encoded {
        name,
        encoding,
        compress,
        truth: truth_,
        said: said_,
    } in cases
    {
        let body = Bytes::from(compress(text.as_bytes()));
        let router = encoded(body, encoding);
        // A page that is shown has its charset; one refused has none.
        let facts = if truth_.verdict == "up" {
            vec![Fact::Charset("UTF-8")]
        } else {
            vec![]
        };
        b.http(
            name,
            router,
            Some(json!({"body_contains": "欢迎光临"})),
            truth_,
            said_,
            facts,
        )
        .await;
    }

    // Hunt Q: the classic "garbled characters" failure, PHP's ob_gzhandler under a layer
    // that compresses again and labels it once: browsers undo one gzip and show the
    // other's bytes. A job without a keyword was told `up`.
    b.http(
        "gzip-twice-labelled-once",
        encoded(Bytes::from(gzip(&gzip(text.as_bytes()))), "gzip"),
        None,
        truth(
            "not up",
            None,
            "page gzip-compressed twice, labelled \"gzip\" once: browsers show compressed bytes",
        ),
        said("degraded", "body_mismatch"),
        vec![],
    )
    .await;

    // Review X: the same page gzip-compressed twice, labelled "gzip" twice on two
    // header lines (two layers that each compress and each add their line). Several
    // Content-Encoding lines make one list (RFC 9110 5.3): Chrome and Firefox decode
    // both, as they do "gzip, gzip" on one line, and show the page. reqwest undoes the
    // first and drops both lines (body.rs: "a known gap"), so the judge gets gzip
    // data, which 8d98d6f's `still_compressed` calls a page browsers show as compressed
    // bytes: a false degraded/body_mismatch (before 8d98d6f: up).
    let twice = Bytes::from(gzip(&gzip(text.as_bytes())));
    b.http(
        "review-x-gzip-twice-labelled-on-two-lines",
        Router::new().route(
            "/",
            any(move || {
                let twice = twice.clone();
                async move {
                    let mut headers = HeaderMap::new();
                    headers.insert(header::CONTENT_TYPE, axum::http::HeaderValue::from_static(HTML_UTF8));
                    headers.append(header::CONTENT_ENCODING, axum::http::HeaderValue::from_static("gzip"));
                    headers.append(header::CONTENT_ENCODING, axum::http::HeaderValue::from_static("gzip"));
                    (headers, twice).into_response()
                }
            }),
        ),
        None,
        truth(
            "up",
            Some("ok"),
            "page gzip-compressed twice, labelled \"gzip\" on two Content-Encoding lines: browsers decode both",
        ),
        said("up", "ok"),
        vec![],
    )
    .await;

    // A page labelled compressed that is not (a cache that stored the page decoded and
    // kept the header, a PHP script that set the header itself): Chrome shows
    // ERR_CONTENT_DECODING_FAILED and Firefox "Content Encoding Error", nothing of the
    // page. The same whichever decoder picket uses: reqwest's for `gzip`, its own for
    // the other names.
    for (name, encoding, says) in [
        (
            "gzip-undecodable",
            "gzip",
            "a plain page labelled \"gzip\": the browser shows a content encoding error",
        ),
        (
            "x-gzip-undecodable",
            "x-gzip",
            "a plain page labelled \"x-gzip\": the browser shows a content encoding error",
        ),
    ] {
        let body = Bytes::from(text.clone());
        let router = encoded(body, encoding);
        b.http(
            name,
            router,
            None,
            truth("down", Some("protocol"), says),
            said("down", "protocol"),
            vec![
                Fact::Attempts(2),
                Fact::DetailContains("could not be decoded"),
            ],
        )
        .await;
    }

    // 5 MB of page; picket reads 2 MB (probe.max_body_bytes) and stops.
    let mut huge = String::from("<!doctype html><html><head><title>Archive</title></head><body>");
    let line = "<p>Minutes of the county council meeting, item by item, with all annexes.</p>\n";
    while huge.len() < 5 * 1024 * 1024 {
        huge.push_str(line);
    }
    huge.push_str("</body></html>");
    let huge = Bytes::from(huge);
    b.http(
        "huge-body",
        Router::new().route("/", any(move || async move { html(StatusCode::OK, huge) })),
        None,
        truth("up", Some("ok"), "a 5 MB page; the first 2 MB are plenty"),
        said("up", "ok"),
        vec![Fact::Truncated(true), Fact::BodyBytes(2 * 1024 * 1024)],
    )
    .await;
}

/// A site answering every path with `body` as UTF-8 HTML labelled `Content-Encoding:
/// encoding`.
fn encoded(body: Bytes, encoding: &'static str) -> Router {
    Router::new().route(
        "/",
        any(move || async move {
            (
                [
                    (header::CONTENT_TYPE, HTML_UTF8),
                    (header::CONTENT_ENCODING, encoding),
                ],
                body,
            )
                .into_response()
        }),
    )
}
