//! The seam between a protocol that accepts a stream and the one that can look inside it: SOCKS5
//! hands an inspected port-443 stream to TLS interception without knowing HTTP or TLS.

use std::{fmt, net::SocketAddr};

use policy::Target;
use tokio::net::TcpStream;

use crate::{dial::BoxFuture, tunnels::TunnelHandle};

/// Takes over a client stream whose target the policy wants inspected.
pub trait Interceptor: fmt::Debug + Send + Sync {
    /// Serves `stream` (already answered "granted" by its protocol) until it ends or `tunnel` is
    /// closed by a policy change.
    fn intercept(
        &self,
        stream: TcpStream,
        target: Target,
        client: SocketAddr,
        attempt: Option<String>,
        tunnel: TunnelHandle,
    ) -> BoxFuture<'static, ()>;
}
