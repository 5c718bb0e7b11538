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

/// What each side sent before the tunnel existed, read by a parser past the last head: it is
/// delivered first. The client's early bytes follow a `CONNECT` head or a WebSocket handshake;
/// the upstream's follow its `101` (a server that speaks first).
#[derive(Clone, Copy, Debug, Default)]
pub struct Early<'a> {
    /// From the client, for the upstream.
    pub up: &'a [u8],
    /// From the upstream, for the client.
    pub down: &'a [u8],
}

impl<'a> Early<'a> {
    /// Only the client sent early bytes.
    pub fn up(up: &'a [u8]) -> Early<'a> {
        Early { up, down: &[] }
    }
}

/// [`relay`] for two plain sockets, after the [`Early`] bytes.
pub async fn relay_sockets(
    client: TcpStream,
    early: Early<'_>,
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
    mut client: TcpStream,
    early: Early<'_>,
    mut upstream: TcpStream,
    idle: Duration,
    tunnel: TunnelHandle,
) {
    let activity = Arc::new(Activity::new());
    let up = Direction::new(&activity, &tunnel, true);
    let down = Direction::new(&activity, &tunnel, false);
    // The early bytes go first, inside the same bounds: a policy change or the idle timeout
    // ends the tunnel even while they wait for the other side to take them.
    let relayed = async {
        send_early(&mut client, early, &mut upstream, &up, &down).await?;
        crate::splice::relay(&client, &upstream, &up, &down).await
    };
    tokio::select! {
        _ = relayed => {}
        () = activity.idle_for(idle) => {}
        () = tunnel.closed() => {}
    }
}

async fn copy_sockets(
    mut client: TcpStream,
    early: Early<'_>,
    mut upstream: TcpStream,
    idle: Duration,
    tunnel: TunnelHandle,
) {
    let activity = Arc::new(Activity::new());
    let up = Direction::new(&activity, &tunnel, true);
    let down = Direction::new(&activity, &tunnel, false);
    // Bounded like the relay itself: a policy change or the idle timeout ends the tunnel even
    // while the early bytes wait for the other side to take them.
    let sent = tokio::select! {
        sent = send_early(&mut client, early, &mut upstream, &up, &down) => sent.is_ok(),
        () = tokio::time::sleep(idle) => false,
        () = tunnel.closed() => false,
    };
    if sent {
        relay(client, upstream, idle, tunnel).await;
    }
}

/// Writes each side's early bytes to the other, counting them.
async fn send_early(
    client: &mut TcpStream,
    early: Early<'_>,
    upstream: &mut TcpStream,
    up: &Direction,
    down: &Direction,
) -> std::io::Result<()> {
    upstream.write_all(early.up).await?;
    up.moved(early.up.len());
    client.write_all(early.down).await?;
    down.moved(early.down.len());
    Ok(())
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
