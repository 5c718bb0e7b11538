//! The admin API's listener: HTTP/1.1 on the shared accept loop, bearer-token checked.

use std::{convert::Infallible, future::Future, io, sync::Arc, time::Duration};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use listeners::{accept_loop, AcceptLimits, Tunnels};
use violations::ViolationLog;

use crate::{control::Control, routes::route};

/// At most this many admin connections at once: it serves one host application, not the world.
const MAX_CONNECTIONS: usize = 64;

/// The admin API's state.
#[derive(Debug)]
pub struct Admin {
    pub(crate) control: Arc<dyn Control>,
    pub(crate) log: Option<Arc<ViolationLog>>,
    pub(crate) tunnels: Arc<Tunnels>,
    pub(crate) token: Option<String>,
}

impl Admin {
    /// An admin API over `control`, reading events from `log` (none with a custom sink), tunnel
    /// counts from `tunnels`; `token`, when set, is required as `Authorization: Bearer TOKEN`.
    pub fn new(
        control: Arc<dyn Control>,
        log: Option<Arc<ViolationLog>>,
        tunnels: Arc<Tunnels>,
        token: Option<String>,
    ) -> Admin {
        Admin {
            control,
            log,
            tunnels,
            token: token.filter(|t| !t.is_empty()),
        }
    }
}

/// Serves `listener` (bound earlier, loopback unless explicitly allowed) until `shutdown` resolves.
pub async fn serve(
    listener: std::net::TcpListener,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limits = AcceptLimits {
        max_connections: MAX_CONNECTIONS,
        overflow_reply: b"",
    };
    accept_loop(
        listener,
        limits,
        shutdown,
        move |stream, _client, connection, mut stopping| {
            let admin = admin.clone();
            let local = stream.local_addr();
            async move {
                let Ok(local) = local else { return };
                // Long polls look idle; the admin API is never evicted to make room.
                let _busy = connection.busy();
                let service = service_fn(move |req| {
                    let admin = admin.clone();
                    async move { Ok::<_, Infallible>(route(&admin, req, local).await) }
                });
                let mut builder = http1::Builder::new();
                builder
                    .timer(TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(30));
                let connection = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(connection);
                tokio::select! {
                    _ = connection.as_mut() => {}
                    () = stopping.wait() => {
                        connection.as_mut().graceful_shutdown();
                        let _ = connection.await;
                    }
                }
            }
        },
    )
    .await
}
