//! HTTP/2 inside an intercepted tunnel (SPEC §15): each stream is one request through the same
//! `inner` (and so `deliver`) as an HTTP/1.1 request, with HTTP/2's own checks (`refuse_h2`) and
//! limits, each set here explicitly. A tunnel with no stream open for `limits.header_timeout` is
//! closed, as an HTTP/1.1 connection waiting that long for its next head is.

use std::{
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::{Duration, Instant},
};

use http_body_util::BodyExt;
use hyper::{
    body::Incoming,
    header::{HeaderMap, HeaderName, CONNECTION, HOST, TE, TRANSFER_ENCODING, UPGRADE},
    server::conn::http2,
    service::service_fn,
    Request, Response,
};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use listeners::TunnelHandle;
use policy::{BlockReason, Decision, Target};
use tokio::io::{AsyncRead, AsyncWrite};

use super::{inner, subject, Tunnel, CLOSE_GRACE};
use crate::{
    pool::UpstreamCache,
    proxy::{HttpProxy, Scope},
    response::ProxyBody,
};

/// Most streams an HTTP/2 client may have open at once in one tunnel (RFC 9113 §5.1.2): a browser
/// opens about as many; more would only multiply what one connection can make leash dial.
const H2_MAX_STREAMS: u32 = 100;
/// Streams a client may reset before leash has accepted them, at once, before the connection is
/// closed with `ENHANCE_YOUR_CALM` (the "rapid reset" flood, CVE-2023-44487, RFC 9113 §10.5).
const H2_MAX_PENDING_RESETS: usize = 20;
/// Streams leash may reset for a client's protocol errors (malformed headers, connection-specific
/// fields) before the connection is closed: a client that keeps provoking resets is flooding.
const H2_MAX_ERROR_RESETS: usize = 100;

/// Serves HTTP/2 inside the tunnel: each stream is one request, decided on its own.
// A boxed `Send` future: proving the connection `Send` inside the caller's future trips a
// limitation of rustc's higher-ranked lifetime inference (rust-lang/rust#102211).
pub(super) fn serve_h2<S>(
    tunnel_: Tunnel,
    tls: S,
    tunnel: TunnelHandle,
) -> Pin<Box<dyn Future<Output = ()> + Send + 'static>>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    Box::pin(serve_h2_inner(tunnel_, tls, tunnel))
}

async fn serve_h2_inner<S>(tunnel_: Tunnel, tls: S, tunnel: TunnelHandle)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let limits = tunnel_.proxy.limits.clone();
    let cache = Arc::new(UpstreamCache::new(tunnel_.proxy.pool.clone()));
    let streams = Arc::new(Streams::new());
    let counted = streams.clone();
    let service = service_fn(move |req: Request<Incoming>| -> StreamFuture {
        let (t, cache) = (tunnel_.clone(), cache.clone());
        // Open until the stream's answer is dropped: written out, or reset by either side.
        let open = Open::new(counted.clone());
        Box::pin(async move {
            let Tunnel {
                proxy,
                scope,
                target,
                route,
            } = t;
            let response = inner(&proxy, scope, &target, req, &cache, &route, None).await;
            let response = response.map(|body| {
                body.map_frame(move |frame| {
                    let _open = &open;
                    frame
                })
                .boxed()
            });
            Ok(response)
        })
    });
    let mut builder = http2::Builder::new(TokioExecutor::new());
    // Every limit set here on purpose, not left to hyper's defaults (which may change): the head
    // limit of HTTP/1.1 bounds the decoded header list; the reset guards bound the rapid-reset
    // flood and streams reset for errors. Extended CONNECT (RFC 8441, WebSockets over HTTP/2) is
    // left off, so a client is told in SETTINGS that it cannot open one.
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(H2_MAX_STREAMS)
        .max_header_list_size(u32::try_from(limits.max_request_head).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(H2_MAX_PENDING_RESETS)
        .max_local_error_reset_streams(H2_MAX_ERROR_RESETS)
        .keep_alive_interval(None);
    let served = builder.serve_connection(TokioIo::new(tls), service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        () = tunnel.closed() => {}
        () = streams.idle_for(limits.header_timeout) => {}
    }
    // As for HTTP/1.1: the cut streams' `403`s are written, then the connection closes.
    served.as_mut().graceful_shutdown();
    let _ = tokio::time::timeout(CLOSE_GRACE, served).await;
}

/// One stream's answer, boxed with its `Send` bound named (see `serve_h2`).
type StreamFuture = Pin<Box<dyn Future<Output = Result<Response<ProxyBody>, Infallible>> + Send>>;

/// The streams open on one HTTP/2 tunnel, and since when none has been.
#[derive(Debug)]
struct Streams {
    open: AtomicUsize,
    idle_since: Mutex<Instant>,
}

impl Streams {
    fn new() -> Streams {
        Streams {
            open: AtomicUsize::new(0),
            idle_since: Mutex::new(Instant::now()),
        }
    }

    /// Returns once no stream has been open for `limit`.
    async fn idle_for(&self, limit: Duration) {
        loop {
            let since = *self.idle_since.lock().expect("streams lock");
            let wait = match self.open.load(Ordering::Acquire) {
                0 => limit.saturating_sub(since.elapsed()),
                _ => limit,
            };
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait).await;
        }
    }
}

/// One open stream, counted in its tunnel's `Streams` until dropped.
struct Open(Arc<Streams>);

impl Open {
    fn new(streams: Arc<Streams>) -> Open {
        streams.open.fetch_add(1, Ordering::AcqRel);
        Open(streams)
    }
}

impl Drop for Open {
    fn drop(&mut self) {
        // The idle clock starts again from the last stream's end.
        *self.0.idle_since.lock().expect("streams lock") = Instant::now();
        self.0.open.fetch_sub(1, Ordering::AcqRel);
    }
}

/// What HTTP/2 adds to the checks of a request (RFC 9113 §8.2.2, §8.3.1): no connection-specific
/// field (hyper's HTTP/2 server already resets such a stream as malformed; this keeps the rule
/// leash's own), and `Host`, when sent beside `:authority`, naming the tunnel's host too.
pub(super) fn refuse_h2(
    proxy: &HttpProxy,
    scope: &Scope,
    target: &Target,
    req: &Request<Incoming>,
) -> Option<Response<ProxyBody>> {
    let (method, path) = (req.method().as_str(), Some(req.uri().path()));
    if let Some(field) = connection_specific(req.headers()) {
        let reason = BlockReason::InvalidRequest {
            detail: format!("connection-specific header field in HTTP/2: {field}"),
        };
        let subject = subject(target.host().to_string(), target.port(), method, path);
        return Some(proxy.block(scope, Decision::Deny(reason), &subject));
    }
    let host = req.headers().get(HOST)?;
    let named = host
        .to_str()
        .ok()
        .and_then(|h| Target::parse(h, Some(443)).ok());
    if named.as_ref() == Some(target) {
        return None;
    }
    let named = String::from_utf8_lossy(host.as_bytes()).into_owned();
    let subject = subject(named, target.port(), method, path);
    Some(proxy.block(scope, Decision::Deny(BlockReason::HostMismatch), &subject))
}

/// The first connection-specific field in an HTTP/2 request (RFC 9113 §8.2.2), if any.
fn connection_specific(headers: &HeaderMap) -> Option<&'static str> {
    static KEEP_ALIVE: HeaderName = HeaderName::from_static("keep-alive");
    static PROXY_CONNECTION: HeaderName = HeaderName::from_static("proxy-connection");
    let named = [
        &CONNECTION,
        &KEEP_ALIVE,
        &PROXY_CONNECTION,
        &TRANSFER_ENCODING,
        &UPGRADE,
    ];
    if let Some(name) = named.into_iter().find(|n| headers.contains_key(*n)) {
        return Some(name.as_str());
    }
    let te_other = headers.get_all(TE).iter().any(|v| v != "trailers");
    te_other.then_some("te")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(fields: &[(&'static str, &'static str)], expected: Option<&str>) {
        let mut headers = HeaderMap::new();
        for (name, value) in fields {
            headers.append(*name, value.parse().unwrap());
        }
        assert_eq!(connection_specific(&headers), expected, "{fields:?}");
    }

    #[test]
    fn connection_specific_fields_are_found_in_h2_requests() {
        check(&[], None);
        check(&[("accept", "*/*"), ("te", "trailers")], None);
        check(&[("connection", "keep-alive")], Some("connection"));
        check(&[("keep-alive", "timeout=5")], Some("keep-alive"));
        check(&[("proxy-connection", "close")], Some("proxy-connection"));
        check(
            &[("transfer-encoding", "chunked")],
            Some("transfer-encoding"),
        );
        check(&[("upgrade", "websocket")], Some("upgrade"));
        check(&[("te", "gzip")], Some("te"));
        // A second `te` after an allowed one is still refused.
        check(&[("te", "trailers"), ("te", "gzip")], Some("te"));
    }
}
