//! Serving SOCKS5 connections on the shared accept loop of `listeners`.

use std::{future::Future, io, sync::Arc};

use listeners::accept_loop;

use crate::proxy::SocksProxy;

/// Serves `listener` (bound earlier, see `listeners::ListenPlan`) until `shutdown` resolves.
/// Open tunnels are left to finish within the accept loop's drain bound.
pub async fn serve(
    listener: std::net::TcpListener,
    proxy: Arc<SocksProxy>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let max = proxy.options.max_connections;
    accept_loop(listener, max, shutdown, move |stream, client, _stopping| {
        proxy.clone().handle(stream, client)
    })
    .await
}
