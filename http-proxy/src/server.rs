//! Serving one client connection with hyper, on the shared accept loop of `listeners`.

use std::{
    convert::Infallible,
    future::Future,
    io,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, LazyLock},
    task::{Context, Poll},
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::{
    body::{Body, Frame, SizeHint},
    server::conn::http1,
    service::service_fn,
    Method,
};
use hyper_util::rt::{TokioIo, TokioTimer};
use listeners::{accept_loop, AcceptLimits, Busy, Connection, Stopping};
use tokio::net::TcpStream;

use crate::{
    framing::{FramingNotes, Gated, WebSocketHandshake},
    pool::UpstreamCache,
    proxy::HttpProxy,
    response::{BodyError, ProxyBody},
};

/// What a client gets when every connection slot is busy: a clean `503`, then the close.
static OVERFLOW: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let body = r#"{"v":1,"blocked":false,"reason":"overloaded","message":"leash is at limits.max_connections and every connection is busy"}"#;
    let head = "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nx-proxy-error: overloaded\r\nconnection: close\r\n";
    format!("{head}content-length: {}\r\n\r\n{body}", body.len()).into_bytes()
});

/// A client connection as hyper sees it: the socket, behind the head gate.
pub(crate) type ClientStream = Gated<TcpStream>;

/// Serves `listener` (bound earlier, see `listeners::ListenPlan`) until `shutdown` resolves.
pub async fn serve(
    listener: std::net::TcpListener,
    proxy: Arc<HttpProxy>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limits = AcceptLimits {
        max_connections: proxy.limits.max_connections,
        overflow_reply: OVERFLOW.as_slice(),
    };
    accept_loop(
        listener,
        limits,
        shutdown,
        move |stream, client, connection, stopping| {
            serve_connection(stream, client, proxy.clone(), connection, stopping)
        },
    )
    .await
}

async fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    proxy: Arc<HttpProxy>,
    connection: Arc<Connection>,
    mut stopping: Stopping,
) {
    let cache = Arc::new(UpstreamCache::new(proxy.pool.clone()));
    let notes = Arc::new(FramingNotes::new(proxy.limits.max_request_head));
    let stream: ClientStream = Gated::new(stream, notes.clone());
    let (service_proxy, service_connection) = (proxy.clone(), connection.clone());
    let service = service_fn(move |mut req: hyper::Request<_>| {
        let (proxy, cache, notes) = (service_proxy.clone(), cache.clone(), notes.clone());
        let refusal = notes.take_note(&mut req);
        // Busy from the request until its response body has been sent.
        let busy = service_connection.busy();
        let connection = service_connection.clone();
        let connect = *req.method() == Method::CONNECT;
        let handshake = req.extensions().get::<WebSocketHandshake>().is_some();
        async move {
            let response = proxy.handle(req, client, cache, refusal, connection).await;
            // The gate holds what follows these two until it knows whether a tunnel follows.
            match (connect, handshake) {
                (true, _) => notes.answered(response.status().is_success()),
                (false, true) => notes.answered(switched(&response)),
                (false, false) => {}
            }
            Ok::<_, Infallible>(response.map(|body| Guarded { body, _busy: busy }.boxed()))
        }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(proxy.limits.header_timeout)
        .max_buf_size(proxy.limits.max_request_head.max(8192));
    let served = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(served);
    let result = tokio::select! {
        result = served.as_mut() => result,
        () = stopping.wait() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
        () = connection.evicted() => {
            served.as_mut().graceful_shutdown();
            served.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%client, %error, "client connection ended with an error");
    }
}

/// Whether a WebSocket handshake was answered with the origin's `101` (leash never makes one).
pub(crate) fn switched<B>(response: &hyper::Response<B>) -> bool {
    response.status() == hyper::StatusCode::SWITCHING_PROTOCOLS
}

/// A response body that keeps its connection marked busy until it has been sent.
struct Guarded {
    body: ProxyBody,
    _busy: Busy,
}

impl Body for Guarded {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
