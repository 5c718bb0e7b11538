//! The admin API's listener: HTTP/1.1 on the shared accept loop, bearer-token checked.

use std::{convert::Infallible, future::Future, io, sync::Arc, time::Duration};

use hyper::{server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use listeners::{accept_loop, AcceptLimits, Busy, Connection, Parked, Pending, Stopping, Tunnels};
use tokio::{
    net::TcpStream,
    sync::{watch, Semaphore},
};
use violations::ViolationLog;

use crate::{control::Control, routes::route};

/// At most this many admin connections at once: it serves one host application, not the world.
const MAX_CONNECTIONS: usize = 64;
/// At most this many long polls parked at once, well under `MAX_CONNECTIONS`: the next one is
/// answered `429` at once, so waiting clients can never hold every connection.
pub(crate) const MAX_PARKED: usize = 16;
/// How long a client has to send a request head.
const HEADER_TIMEOUT: Duration = Duration::from_secs(30);

/// The admin API's state.
#[derive(Debug)]
pub struct Admin {
    pub(crate) control: Arc<dyn Control>,
    pub(crate) log: Option<Arc<ViolationLog>>,
    pub(crate) tunnels: Arc<Tunnels>,
    pub(crate) token: Option<String>,
    /// Places for parked long polls (`MAX_PARKED`).
    pub(crate) parking: Semaphore,
    /// Held asks (SPEC §14); none: `/pending` is always empty.
    pub(crate) pending: Option<Arc<Pending>>,
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
            parking: Semaphore::new(MAX_PARKED),
            pending: None,
        }
    }

    /// Serves `GET /pending` and `POST /pending/{id}` from `pending`.
    pub fn with_pending(mut self, pending: Arc<Pending>) -> Admin {
        self.pending = Some(pending);
        self
    }
}

/// What a client gets when every admin connection is busy: a clean `503`, then the close.
const OVERFLOW: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\ncontent-length: 53\r\n\r\n{\"error\":\"every admin connection is busy; try again\"}";

/// Serves `listener` (bound earlier, loopback unless explicitly allowed) until `shutdown` resolves.
/// A connection is busy only while a request is being answered; an idle one, or one whose long
/// poll is parked, is evicted when a newcomer needs its place.
pub async fn serve(
    listener: std::net::TcpListener,
    admin: Arc<Admin>,
    shutdown: impl Future<Output = ()>,
) -> io::Result<()> {
    let limits = AcceptLimits {
        max_connections: MAX_CONNECTIONS,
        overflow_reply: OVERFLOW,
    };
    accept_loop(
        listener,
        limits,
        shutdown,
        move |stream, _client, connection, stopping| {
            serve_connection(stream, admin.clone(), connection, stopping)
        },
    )
    .await
}

async fn serve_connection(
    stream: TcpStream,
    admin: Arc<Admin>,
    connection: Arc<Connection>,
    mut stopping: Stopping,
) {
    let Ok(local) = stream.local_addr() else {
        return;
    };
    // Tells parked long polls to answer now: the connection was evicted or leash is stopping.
    let (close, closing) = watch::channel(false);
    let service_connection = connection.clone();
    let service = service_fn(move |req| {
        let admin = admin.clone();
        let exchange = Exchange {
            busy: Some(service_connection.busy()),
            connection: service_connection.clone(),
            closing: closing.clone(),
        };
        async move { Ok::<_, Infallible>(route(&admin, req, local, exchange).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_TIMEOUT);
    let served = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(served);
    tokio::select! {
        _ = served.as_mut() => return,
        () = stopping.wait() => {}
        () = connection.evicted() => {}
    }
    let _ = close.send(true);
    served.as_mut().graceful_shutdown();
    let _ = served.await;
}

/// One request's hold on its connection: busy while it is answered, parked while a long poll
/// waits, and told when it must answer at once.
#[derive(Debug)]
pub(crate) struct Exchange {
    busy: Option<Busy>,
    connection: Arc<Connection>,
    closing: watch::Receiver<bool>,
}

impl Exchange {
    /// Parks a long poll: the connection stops counting as busy and is the first evicted.
    pub(crate) fn park(&mut self) -> Parked {
        let parked = self.connection.park();
        self.busy = None;
        parked
    }

    /// Resolves when the connection is closing (evicted, or leash stopping).
    pub(crate) async fn closing(&mut self) {
        let _ = self.closing.wait_for(|closing| *closing).await;
    }
}
