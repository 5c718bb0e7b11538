//! Serving one client connection with hyper, on the shared accept loop of `listeners`.

use std::{convert::Infallible, future::Future, io, net::SocketAddr, sync::Arc};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use listeners::{accept_loop, Observed, Stopping};
use tokio::net::TcpStream;

use crate::{forward::UpstreamCache, framing::FramingNotes, proxy::HttpProxy};

/// Serves `listener` (bound earlier, see `listeners::ListenPlan`) until `shutdown` resolves.
pub async fn serve(
    listener: std::net::TcpListener,
    proxy: Arc<HttpProxy>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let max = proxy.limits.max_connections;
    accept_loop(listener, max, shutdown, move |stream, client, stopping| {
        serve_connection(stream, client, proxy.clone(), stopping)
    })
    .await
}

async fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    proxy: Arc<HttpProxy>,
    mut stopping: Stopping,
) {
    let cache = Arc::new(UpstreamCache::default());
    let notes = Arc::new(FramingNotes::default());
    let stream = Observed::new(stream, notes.clone());
    let service_proxy = proxy.clone();
    let service = service_fn(move |req| {
        let (proxy, cache) = (service_proxy.clone(), cache.clone());
        let problem = notes.next_problem();
        async move { Ok::<_, Infallible>(proxy.handle(req, client, cache, problem).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(proxy.limits.header_timeout)
        .max_buf_size(proxy.limits.max_request_head.max(8192));
    let connection = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = stopping.wait() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%client, %error, "client connection ended with an error");
    }
}
