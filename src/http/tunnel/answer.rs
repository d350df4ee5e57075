//! The request through an open tunnel and its answer: hyper's HTTP/1 or HTTP/2 client
//! with the name in `Host` or `:authority`, and the answer decoded (br, zstd) by the
//! decoder reqwest uses, bounded by the probe's deadline, as a `reqwest::Response`.

use std::error::Error as StdError;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::time::Instant;

use super::error::TunnelError;
use super::mend::{Mended, MendedChunks, MendedLine};
use super::Io;
use crate::http::head::MAX_HEADER_LIST_BYTES;
use crate::http::tls::SiteCertificate;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How the request's target is written.
pub(super) enum Form {
    /// HTTP/2 to the site: the name in `:authority`, from the absolute URI.
    H2,
    /// HTTP/1.1 to the site: origin form, the name in `Host`.
    Origin,
    /// HTTP/1.1 to the proxy, for it to forward: the absolute URI (by name), the name in
    /// `Host` too, and the proxy's credentials.
    Absolute(Option<HeaderValue>),
}

/// Sends `request` over `io` in `form` and returns the answer's head.
pub(super) async fn ask(
    io: Box<dyn Io>,
    form: Form,
    request: reqwest::Request,
    head_lines: usize,
) -> Result<http::Response<Incoming>, TunnelError> {
    let h2 = matches!(form, Form::H2);
    let built = head(form, &request)?;
    let answer = if h2 {
        over_h2(io, built).await
    } else {
        over_h1(io, built, head_lines).await
    };
    answer.map_err(TunnelError::Http)
}

/// The request's head as `form` writes it, with the job's headers.
fn head(
    form: Form,
    request: &reqwest::Request,
) -> Result<http::Request<Empty<Bytes>>, TunnelError> {
    let url = request.url();
    let h2 = matches!(form, Form::H2);
    let mut head = http::Request::builder().method(request.method().clone());
    match form {
        // HTTP/2 takes the name from the absolute URI (`:authority`), as browsers send it.
        Form::H2 => head = head.uri(url.as_str()),
        Form::Origin => head = head.uri(&url[url::Position::BeforePath..url::Position::AfterQuery]),
        Form::Absolute(auth) => {
            head = head.uri(&url[..url::Position::AfterQuery]);
            if let Some(auth) = auth {
                head = head.header(http::header::PROXY_AUTHORIZATION, auth);
            }
            // The proxy is our egress, not the site's: a copy from its cache (squid as
            // Debian ships it keeps one) is no sign of the site being up now.
            if !request.headers().contains_key(http::header::CACHE_CONTROL) {
                head = head.header(http::header::CACHE_CONTROL, "no-cache");
            }
            if !request.headers().contains_key(http::header::PRAGMA) {
                head = head.header(http::header::PRAGMA, "no-cache");
            }
        }
    }
    // HTTP/1.1 has the name in Host, first as browsers write it; HTTP/2 has neither
    // Host nor Connection.
    if !h2 {
        head = head.header(http::header::HOST, super::super::connect::host_header(url));
    }
    for (name, value) in request.headers() {
        let skipped = name == http::header::HOST || (h2 && name == http::header::CONNECTION);
        if !skipped {
            head = head.header(name, value);
        }
    }
    head.body(Empty::<Bytes>::new())
        .map_err(|e| TunnelError::Proxy(format!("the request for {url} could not be built: {e}")))
}

/// `built` asked over HTTP/2 on `io`.
async fn over_h2(
    io: Box<dyn Io>,
    built: http::Request<Empty<Bytes>>,
) -> hyper::Result<http::Response<Incoming>> {
    let (mut sender, conn) = hyper::client::conn::http2::Builder::new(TokioExecutor::new())
        .max_header_list_size(MAX_HEADER_LIST_BYTES)
        .handshake(TokioIo::new(io))
        .await?;
    // Ends once the answer and the sender are dropped (pooling is off here too).
    tokio::spawn(conn);
    sender.send_request(built).await
}

/// `built` asked over HTTP/1.1 on `io`, read as the direct clients read
/// (`http::client::builder`), and the status line as browsers read it (`mend`).
async fn over_h1(
    io: Box<dyn Io>,
    built: http::Request<Empty<Bytes>>,
    head_lines: usize,
) -> hyper::Result<http::Response<Incoming>> {
    let mended = Mended::new(io);
    let original = mended.original();
    let chunk_line = mended.chunk_line();
    let (mut sender, conn) = hyper::client::conn::http1::Builder::new()
        .title_case_headers(true)
        .max_headers(head_lines)
        .allow_spaces_after_header_name_in_responses(true)
        .allow_obsolete_multiline_headers_in_responses(true)
        .ignore_invalid_headers_in_responses(true)
        .handshake(TokioIo::new(mended))
        .await?;
    // Driven beside the probe while it reads the body; it ends when the body is read or
    // dropped, as the sender is gone by then.
    tokio::spawn(conn);
    let mut answer = sender.send_request(built).await?;
    if let Some(line) = original.get() {
        answer.extensions_mut().insert(MendedLine(line.clone()));
    }
    answer.extensions_mut().insert(MendedChunks(chunk_line));
    Ok(answer)
}

/// The answer as the rest of the prober expects it from reqwest: br and zstd decoded
/// (gzip and deflate are left to the prober, as on reqwest's path), the body bounded by the
/// probe's deadline, the certificate in the extensions.
pub(super) async fn answer_to_reqwest(
    answer: http::Response<Incoming>,
    certificate: Option<Vec<u8>>,
    deadline: Instant,
) -> reqwest::Response {
    let decoded = decode(answer).await;
    let (mut parts, body) = decoded.into_parts();
    if let Some(der) = certificate {
        parts.extensions.insert(SiteCertificate(der));
    }
    let body = Deadline {
        inner: Box::pin(body),
        sleep: Box::pin(tokio::time::sleep_until(deadline)),
    };
    reqwest::Response::from(http::Response::from_parts(parts, reqwest::Body::wrap(body)))
}

/// The decoder reqwest uses (tower-http's), driven through its `Service`: its body
/// type has no other public constructor.
async fn decode(
    answer: http::Response<Incoming>,
) -> http::Response<tower_http::decompression::DecompressionBody<Incoming>> {
    use tower_service::Service as _;
    let mut decoder = tower_http::decompression::Decompression::new(Given(Some(answer)))
        .no_deflate()
        .no_gzip()
        .no_br()
        .no_zstd();
    match decoder.call(http::Request::new(())).await {
        Ok(decoded) => decoded,
        Err(never) => match never {},
    }
}

/// A service that hands out the one answer it was given.
struct Given(Option<http::Response<Incoming>>);

impl tower_service::Service<http::Request<()>> for Given {
    type Response = http::Response<Incoming>;
    type Error = std::convert::Infallible;
    type Future = std::future::Ready<Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: http::Request<()>) -> Self::Future {
        match self.0.take() {
            Some(answer) => std::future::ready(Ok(answer)),
            // Called once, by `decode`.
            None => unreachable!("the answer was handed out already"),
        }
    }
}

/// A body that fails with `TimedOut` once the probe's deadline passed (reqwest's total
/// timeout does the same on its own path).
struct Deadline<B> {
    inner: Pin<Box<B>>,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        if self.sleep.as_mut().poll(cx).is_ready() {
            let late =
                std::io::Error::new(std::io::ErrorKind::TimedOut, "the body ran out of time");
            return Poll::Ready(Some(Err(Box::new(late))));
        }
        self.inner.as_mut().poll_frame(cx).map_err(Into::into)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
