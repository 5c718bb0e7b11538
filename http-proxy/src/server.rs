//! The accept loop: serves a listener that was bound before (`listeners`), until `shutdown`
//! resolves; then stops accepting and lets open requests finish, for a bounded time.

use std::{convert::Infallible, future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpStream, sync::watch, sync::Semaphore, task::JoinSet};

use crate::{
    forward::UpstreamCache,
    framing::{FramingNotes, FramingWatch},
    proxy::HttpProxy,
};

/// How long open connections get to finish after shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Serves `listener` until `shutdown` resolves.
pub async fn serve(
    listener: std::net::TcpListener,
    proxy: Arc<HttpProxy>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let slots = Arc::new(Semaphore::new(proxy.limits.max_connections));
    let (stop, stopped) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors and the like: keep serving the connections we have.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::warn!(%client, "connection limit reached; closing");
            continue;
        };
        let (proxy, stopped) = (proxy.clone(), stopped.clone());
        connections.spawn(async move {
            serve_connection(stream, client, proxy, stopped).await;
            drop(slot);
        });
        while connections.try_join_next().is_some() {}
    }
    drop(listener);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}

async fn serve_connection(
    stream: TcpStream,
    client: SocketAddr,
    proxy: Arc<HttpProxy>,
    mut stopped: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let cache = Arc::new(UpstreamCache::default());
    let notes = Arc::new(FramingNotes::default());
    let stream = FramingWatch::new(stream, notes.clone());
    let service_proxy = proxy.clone();
    let service = service_fn(move |req| {
        let (proxy, cache) = (service_proxy.clone(), cache.clone());
        let ambiguous = notes.next_is_ambiguous();
        async move { Ok::<_, Infallible>(proxy.handle(req, client, cache, ambiguous).await) }
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
        _ = stopped.changed() => {
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        tracing::debug!(%client, %error, "client connection ended with an error");
    }
}
