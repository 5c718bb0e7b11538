//! The accept loop every server shares: a bound listener, a connection limit, a shutdown signal,
//! and a bounded drain.

use std::{future::Future, io, net::SocketAddr, sync::Arc, time::Duration};

use tokio::{
    net::TcpStream,
    sync::{watch, Semaphore},
    task::JoinSet,
};

/// How long open connections get to finish after shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Tells a connection handler that the server is shutting down.
#[derive(Clone, Debug)]
pub struct Stopping(watch::Receiver<bool>);

impl Stopping {
    /// Resolves once shutdown has begun.
    pub async fn wait(&mut self) {
        let _ = self.0.wait_for(|stopping| *stopping).await;
    }
}

/// Accepts on `listener` (bound earlier, see `ListenPlan::reserve`) until `shutdown` resolves,
/// running `handle` for each connection, at most `max_connections` at once (more are closed on
/// accept). Then stops accepting, signals the handlers, and waits for them up to a bound.
pub async fn accept_loop<H, F>(
    listener: std::net::TcpListener,
    max_connections: usize,
    shutdown: impl Future<Output = ()>,
    handle: H,
) -> io::Result<()>
where
    H: Fn(TcpStream, SocketAddr, Stopping) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(_) => {
                    // Out of file descriptors and the like: keep serving what is open.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let connection = handle(stream, client, Stopping(stopping.clone()));
        connections.spawn(async move {
            connection.await;
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
