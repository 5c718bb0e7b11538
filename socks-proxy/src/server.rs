//! Serving SOCKS5 connections on the shared accept loop of `listeners`.

use std::{future::Future, io, sync::Arc};

use listeners::{accept_loop, AcceptLimits};

use crate::proxy::SocksProxy;

/// Serves `listener` (bound earlier, see `listeners::ListenPlan`) until `shutdown` resolves.
/// Open tunnels are left to finish within the accept loop's drain bound.
pub async fn serve(
    listener: std::net::TcpListener,
    proxy: Arc<SocksProxy>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    // SOCKS5 has nothing to say before the greeting: a refused connection is just closed.
    let limits = AcceptLimits {
        max_connections: proxy.options.max_connections,
        overflow_reply: b"",
    };
    accept_loop(
        listener,
        limits,
        shutdown,
        move |stream, client, connection, _stopping| {
            proxy.clone().handle(stream, client, connection)
        },
    )
    .await
}
