//! The accept loop every server shares: a bound listener, a connection limit that evicts idle
//! connections before it refuses anyone, a shutdown signal, and a bounded drain.

use std::{
    collections::HashMap,
    future::Future,
    io,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex, Weak,
    },
    time::{Duration, Instant},
};

use tokio::{
    io::AsyncWriteExt,
    net::TcpStream,
    sync::{watch, Notify},
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

/// How many connections, and what to tell the one that finds no room.
#[derive(Clone, Copy, Debug)]
pub struct AcceptLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Written to a connection refused for lack of room (all others busy), before it is closed.
    pub overflow_reply: &'static [u8],
}

/// One connection's standing with the accept loop: busy while it has work in flight, idle (and
/// evictable when the server is full) otherwise.
#[derive(Debug)]
pub struct Connection {
    id: u64,
    busy: AtomicUsize,
    /// Requests parked (long polls): the connection is idle but goes first when room is needed.
    parked: AtomicUsize,
    last_active_ms: AtomicU64,
    evict: Notify,
    tracker: Arc<Tracker>,
}

/// Marks its connection busy until dropped.
#[derive(Debug)]
pub struct Busy(Arc<Connection>);

/// Marks its connection parked until dropped: waiting for an event that may never come, so the
/// first one evicted (before any idle connection), whatever its age.
#[derive(Debug)]
pub struct Parked(Arc<Connection>);

impl Connection {
    /// Busy until the returned guard is dropped (a request in flight, a tunnel open).
    pub fn busy(self: &Arc<Self>) -> Busy {
        self.busy.fetch_add(1, Ordering::SeqCst);
        Busy(self.clone())
    }

    /// Marks activity now, for a connection that is idle between short bursts of work that hold
    /// no `Busy` guard (a SOCKS5 UDP association between datagrams): eviction picks the
    /// longest-idle connection.
    pub fn touch(&self) {
        self.last_active_ms
            .store(self.tracker.now_ms(), Ordering::SeqCst);
    }

    /// Parked until the returned guard is dropped (a long poll that can be answered at once, with
    /// nothing, when room is needed). A parked connection must not also be busy to be evicted.
    pub fn park(self: &Arc<Self>) -> Parked {
        self.parked.fetch_add(1, Ordering::SeqCst);
        Parked(self.clone())
    }

    /// Resolves when the server, full, chose this idle connection to make room.
    pub async fn evicted(&self) {
        self.evict.notified().await;
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.tracker
            .open
            .lock()
            .expect("tracker lock")
            .remove(&self.id);
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        self.0
            .last_active_ms
            .store(self.0.tracker.now_ms(), Ordering::SeqCst);
        self.0.busy.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The open connections. A connection counts until its handler and every `Busy` guard (a tunnel
/// outliving the HTTP exchange that opened it) are gone: it unregisters itself when dropped.
#[derive(Debug)]
struct Tracker {
    started: Instant,
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, Weak<Connection>>>,
}

impl Tracker {
    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn admit(self: &Arc<Self>) -> Arc<Connection> {
        let connection = Arc::new(Connection {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            busy: AtomicUsize::new(0),
            parked: AtomicUsize::new(0),
            last_active_ms: AtomicU64::new(self.now_ms()),
            evict: Notify::new(),
            tracker: self.clone(),
        });
        self.open
            .lock()
            .expect("tracker lock")
            .insert(connection.id, Arc::downgrade(&connection));
        connection
    }

    /// Asks a parked connection, else the longest-idle one, to close; false when every
    /// connection is busy.
    fn evict_one(&self) -> bool {
        let open = self.open.lock().expect("tracker lock");
        let idle = open
            .values()
            .filter_map(Weak::upgrade)
            .filter(|c| c.busy.load(Ordering::SeqCst) == 0)
            .min_by_key(|c| {
                let parked = c.parked.load(Ordering::SeqCst) > 0;
                (!parked, c.last_active_ms.load(Ordering::SeqCst))
            });
        match idle {
            Some(connection) => {
                // Marked busy so the next eviction picks another; a permit is kept for it.
                connection.busy.fetch_add(1, Ordering::SeqCst);
                connection.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Connections the kernel completes and queues before leash accepts them (capped by
/// `net.core.somaxconn`). The standard library listens with 128: a burst of fresh connections
/// larger than that (`connect_rate` with 512 clients, or an agent's parallel build) overflows the
/// queue, and each dropped SYN waits a full second for its retransmission.
#[cfg(target_os = "linux")]
const BACKLOG: i32 = 4096;

/// Listens again with [`BACKLOG`]: on Linux a second `listen(2)` on a listening socket only
/// changes its backlog. Elsewhere the standard library's 128 stays.
fn deepen_backlog(listener: &std::net::TcpListener) {
    #[cfg(target_os = "linux")]
    if let Err(error) = rustix::net::listen(listener, BACKLOG) {
        tracing::debug!(%error, "could not deepen the listen backlog");
    }
    #[cfg(not(target_os = "linux"))]
    let _ = listener;
}

/// Accepts on `listener` (bound earlier, see `ListenPlan::reserve`) until `shutdown` resolves,
/// running `handle` for each connection. At the connection limit the longest-idle connection is
/// evicted to make room; only when all are busy is the newcomer refused (with `overflow_reply`).
/// After shutdown it stops accepting, signals the handlers, and waits for them up to a bound.
pub async fn accept_loop<H, F>(
    listener: std::net::TcpListener,
    limits: AcceptLimits,
    shutdown: impl Future<Output = ()>,
    handle: H,
) -> io::Result<()>
where
    H: Fn(TcpStream, SocketAddr, Arc<Connection>, Stopping) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    // A listener handed in from elsewhere (`leash exec --isolate`) may still block.
    listener.set_nonblocking(true)?;
    deepen_backlog(&listener);
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let tracker = Arc::new(Tracker {
        started: Instant::now(),
        next_id: AtomicU64::new(0),
        open: Mutex::new(HashMap::new()),
    });
    let (stop, stopping) = watch::channel(false);
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let (mut stream, client) = tokio::select! {
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
        while connections.try_join_next().is_some() {}
        let full = tracker.open.lock().expect("tracker lock").len() >= limits.max_connections;
        if full && !tracker.evict_one() {
            let reply = limits.overflow_reply;
            tokio::spawn(async move {
                let _ = stream.write_all(reply).await;
                let _ = stream.shutdown().await;
            });
            continue;
        }
        let _ = stream.set_nodelay(true);
        let connection = tracker.admit();
        // Boxed: a connection's future is large, and tokio moves a task's future by value
        // several times as it spawns and finishes it; a box is moved once.
        connections.spawn(Box::pin(handle(
            stream,
            client,
            connection,
            Stopping(stopping.clone()),
        )));
    }
    drop(listener);
    let _ = stop.send(true);
    let _ = tokio::time::timeout(DRAIN, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    Ok(())
}
