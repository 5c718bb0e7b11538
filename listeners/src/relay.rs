//! Relaying bytes between a client and an upstream connection, for every tunnelling path
//! (`CONNECT`, SOCKS5): both directions until one side closes, or until no byte has moved for the
//! idle timeout. Two plain sockets go through [`relay_sockets`], which on Linux moves the bytes
//! kernel to kernel (`splice(2)`, see `splice.rs`) unless told to copy ([`RelayMode`]); anything
//! else is copied through user space.

use std::{
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::{AsyncRead, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};

use crate::{
    observe::{Observed, ReadObserver},
    tunnels::{TunnelHandle, Tunnels},
};

/// Bytes moved per read and write in each direction: large buffers mean few system calls per
/// megabyte, which is what bulk transfers through a tunnel cost.
const RELAY_BUFFER: usize = 64 * 1024;

/// Copies both ways until one side closes, until no byte has moved for `idle`, or until a policy
/// change closes the tunnel (`tunnel`). Bytes are counted in the tunnel registry.
pub async fn relay<C, U>(client: C, upstream: U, idle: Duration, tunnel: TunnelHandle)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity::new());
    let up = Arc::new(Direction::new(&activity, &tunnel, true));
    let down = Arc::new(Direction::new(&activity, &tunnel, false));
    let mut client = Observed::new(client, up);
    let mut upstream = Observed::new(upstream, down);
    // Whichever ends first ends the tunnel; an I/O error is just its end (a reset, a broken pipe).
    tokio::select! {
        _ = tokio::io::copy_bidirectional_with_sizes(&mut client, &mut upstream, RELAY_BUFFER, RELAY_BUFFER) => {}
        () = activity.idle_for(idle) => {}
        () = tunnel.closed() => {}
    }
}

/// How [`relay_sockets`] moves a tunnel's bytes (`tunnel.relay` in the config).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum RelayMode {
    /// Kernel to kernel with `splice(2)` once a direction carries bulk (`splice.rs`); where
    /// there is no `splice(2)` (not Linux), the same as `Copy`.
    #[default]
    Splice,
    /// Through user-space buffers: the portable path, selectable on Linux so that CI runs every
    /// tunnel test through it too.
    Copy,
}

/// [`relay`] for two plain sockets. `early` is what the client sent before the tunnel existed
/// (bytes a parser had already buffered past the `CONNECT` head); it goes upstream first.
pub async fn relay_sockets(
    client: TcpStream,
    early: &[u8],
    upstream: TcpStream,
    idle: Duration,
    mode: RelayMode,
    tunnel: TunnelHandle,
) {
    match mode {
        #[cfg(target_os = "linux")]
        RelayMode::Splice => splice_sockets(client, early, upstream, idle, tunnel).await,
        #[cfg(not(target_os = "linux"))]
        RelayMode::Splice => copy_sockets(client, early, upstream, idle, tunnel).await,
        RelayMode::Copy => copy_sockets(client, early, upstream, idle, tunnel).await,
    }
}

#[cfg(target_os = "linux")]
async fn splice_sockets(
    client: TcpStream,
    early: &[u8],
    mut upstream: TcpStream,
    idle: Duration,
    tunnel: TunnelHandle,
) {
    let activity = Arc::new(Activity::new());
    let up = Direction::new(&activity, &tunnel, true);
    let down = Direction::new(&activity, &tunnel, false);
    // The early bytes go first, inside the same bounds: a policy change or the idle timeout
    // ends the tunnel even while they wait for the upstream to take them.
    let relayed = async {
        upstream.write_all(early).await?;
        up.moved(early.len());
        crate::splice::relay(&client, &upstream, &up, &down).await
    };
    tokio::select! {
        _ = relayed => {}
        () = activity.idle_for(idle) => {}
        () = tunnel.closed() => {}
    }
}

async fn copy_sockets(
    client: TcpStream,
    early: &[u8],
    mut upstream: TcpStream,
    idle: Duration,
    tunnel: TunnelHandle,
) {
    // Bounded like the relay itself: a policy change or the idle timeout ends the tunnel even
    // while the early bytes wait for the upstream to take them.
    let sent = tokio::select! {
        sent = upstream.write_all(early) => sent.is_ok(),
        () = tokio::time::sleep(idle) => false,
        () = tunnel.closed() => false,
    };
    if sent {
        tunnel.tunnels().count(true, early.len());
        relay(client, upstream, idle, tunnel).await;
    }
}

/// One direction of a tunnel: every byte read is activity, and counted.
pub(crate) struct Direction {
    activity: Arc<Activity>,
    tunnels: Arc<Tunnels>,
    up: bool,
}

impl Direction {
    fn new(activity: &Arc<Activity>, tunnel: &TunnelHandle, up: bool) -> Direction {
        Direction {
            activity: activity.clone(),
            tunnels: tunnel.tunnels().clone(),
            up,
        }
    }
}

impl Direction {
    /// `n` bytes moved this way.
    pub(crate) fn moved(&self, n: usize) {
        self.activity.touch();
        self.tunnels.count(self.up, n);
    }
}

impl ReadObserver for Direction {
    fn observe(&self, bytes: &[u8]) {
        self.moved(bytes.len());
    }
}

/// When bytes last moved, as milliseconds since the tunnel opened.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

#[cfg(test)]
mod tests;
