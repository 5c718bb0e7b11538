//! Kept-alive upstream connections, keyed by the vetted target. A client connection keeps the
//! upstream it used last ([`UpstreamCache`]: no lock shared with anyone, no churn under keep-alive
//! load); when it closes, that upstream moves to the shared [`UpstreamPool`] for the next client
//! connection. An agent runs one command per request (`curl`, `git`), each on a new client
//! connection; without the shared pool every one of them would pay for a new upstream connection,
//! and inside an intercepted tunnel for a new TLS handshake with the origin too.
//!
//! An origin that picked `h2` (ALPN) gets one connection that every client shares: its streams
//! are concurrent, so it is never taken out, only looked up ([`UpstreamPool::shared`]). The pool is
//! thus keyed by target, protocol and HTTP version: HTTP/1.1 connections on the shelves, HTTP/2
//! ones in the shared map.
//!
//! A pooled connection carries no client identity (proxy credentials never go upstream), and the
//! caller re-vets its address against the policy in force before every reuse.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{ready, Context, Poll},
    time::{Duration, Instant},
};

use bytes::Bytes;
use hyper::{
    body::{Body, Frame, Incoming, SizeHint},
    client::conn::{http1, http2, TrySendError},
    Request, Response,
};

use crate::{
    count::{Counted, UpstreamBody},
    response::BodyError,
};
use listeners::TunnelHandle;
use policy::{Decision, Protocol, Target};
use tokio::task::AbortHandle;

/// Idle connections kept per target: enough for a few parallel commands.
const IDLE_PER_TARGET: usize = 8;
/// Idle connections kept in all: a bound on what idle upstreams can cost (about 20 KB each).
const IDLE_IN_ALL: usize = 256;
/// An idle connection older than this is closed rather than reused: origins close idle
/// connections too (5 s is common), and the older one is, the likelier it races such a close.
const IDLE_FOR: Duration = Duration::from_secs(4);
/// A shared HTTP/2 connection nobody used for this long is let go (it closes once its last stream
/// ends): HTTP/2 origins announce their close (`GOAWAY`), so it may be kept longer than HTTP/1.1.
const SHARED_IDLE_FOR: Duration = Duration::from_secs(30);

/// Which connections can serve a request: the same target over the same protocol (plain HTTP, or
/// TLS to the origin for a request from inside an intercepted tunnel).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    pub(crate) target: Target,
    pub(crate) protocol: Protocol,
}

/// A connection to a vetted address (or through the upstream proxy), ready for a request.
#[derive(Debug)]
pub(crate) struct Upstream {
    /// The target's vetted address; `None` when the upstream proxy resolved the name.
    pub(crate) peer: Option<SocketAddr>,
    /// The connection is to the upstream proxy itself (SPEC §16): requests go in absolute-form,
    /// with this `Proxy-Authorization`.
    pub(crate) to_proxy: Option<ToProxy>,
    pub(crate) sender: Sender,
    /// The task driving the connection: aborting it drops the socket at once, mid-request too
    /// (dropping `sender` would let the request in flight finish).
    pub(crate) task: AbortHandle,
    /// When its last response ended (or it was opened).
    pub(crate) idle_since: Instant,
    /// It carries connection-bound origin authentication (NTLM, Negotiate): it may serve the
    /// client connection that authenticated it again, never another one.
    pub(crate) private: bool,
}

impl Upstream {
    pub(crate) fn new(
        peer: Option<SocketAddr>,
        to_proxy: Option<ToProxy>,
        sender: Sender,
        task: AbortHandle,
    ) -> Upstream {
        Upstream {
            peer,
            to_proxy,
            sender,
            task,
            idle_since: Instant::now(),
            private: false,
        }
    }

    /// Still worth a request: open, and not idle long enough to race the origin's own close.
    fn reusable(&self) -> bool {
        self.idle_since.elapsed() < IDLE_FOR && !self.sender.is_closed()
    }

    /// What cuts this exchange's upstream side when a policy change refuses it: the whole
    /// connection for HTTP/1.1; for HTTP/2 nothing more than dropping the exchange's futures and
    /// bodies, which resets its stream alone (the connection carries other clients' streams).
    pub(crate) fn cutter(&self) -> Option<AbortHandle> {
        match self.sender {
            Sender::Http1(_) => Some(self.task.clone()),
            Sender::Http2(_) => None,
        }
    }
}

/// The sending half of an upstream connection, by the HTTP version the origin picked (ALPN).
#[derive(Debug)]
pub(crate) enum Sender {
    Http1(http1::SendRequest<UpstreamBody>),
    Http2(http2::SendRequest<UpstreamBody>),
}

impl Sender {
    pub(crate) fn is_closed(&self) -> bool {
        match self {
            Sender::Http1(sender) => sender.is_closed(),
            Sender::Http2(sender) => sender.is_closed(),
        }
    }

    /// Ready for a request (an HTTP/1.1 connection is ready once the previous exchange ended).
    pub(crate) async fn ready(&mut self) -> hyper::Result<()> {
        match self {
            Sender::Http1(sender) => sender.ready().await,
            Sender::Http2(sender) => sender.ready().await,
        }
    }

    /// Sends `req`, which comes back whole if the connection closed before it went out.
    pub(crate) async fn try_send(
        &mut self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>> {
        match self {
            Sender::Http1(sender) => sender.try_send_request(req).await,
            Sender::Http2(sender) => sender.try_send_request(req).await,
        }
    }
}

/// How requests are sent over a connection to the upstream proxy itself.
#[derive(Clone, Debug)]
pub(crate) struct ToProxy {
    /// `Basic …` from the proxy URL, when it has credentials.
    pub(crate) authorization: Option<std::sync::Arc<str>>,
}

/// The pool. Its locks are held only to push, pop, look up or sweep, never across an await.
#[derive(Debug, Default)]
pub(crate) struct UpstreamPool {
    idle: Mutex<Shelves>,
    shared: Mutex<HashMap<PoolKey, Shared>>,
}

/// An HTTP/2 connection every request to its key may use at once.
#[derive(Debug)]
struct Shared {
    peer: Option<SocketAddr>,
    sender: http2::SendRequest<UpstreamBody>,
    task: AbortHandle,
    used: Instant,
}

impl Shared {
    fn live(&self) -> bool {
        self.used.elapsed() < SHARED_IDLE_FOR && !self.sender.is_closed()
    }
}

#[derive(Debug, Default)]
struct Shelves {
    by_key: HashMap<PoolKey, Vec<Upstream>>,
    count: usize,
}

impl Shelves {
    /// Drops every connection no longer worth a request, so dead ones never hold the places.
    fn sweep(&mut self) {
        self.by_key.retain(|_, shelf| {
            shelf.retain(Upstream::reusable);
            !shelf.is_empty()
        });
        self.count = self.by_key.values().map(Vec::len).sum();
    }
}

impl UpstreamPool {
    /// The shared HTTP/2 connection to `key`, if one is open: a handle on it for one request.
    pub(crate) fn shared(&self, key: &PoolKey) -> Option<Upstream> {
        let mut shared = self.shared.lock().expect("pool lock");
        let entry = shared.get_mut(key)?;
        if !entry.live() {
            shared.remove(key);
            return None;
        }
        entry.used = Instant::now();
        let sender = Sender::Http2(entry.sender.clone());
        Some(Upstream::new(entry.peer, None, sender, entry.task.clone()))
    }

    /// Offers a new HTTP/2 connection to every later request to `key` (it replaces an older one,
    /// which closes once its streams end). When the map is full of live connections it serves
    /// only the request that opened it.
    pub(crate) fn share(&self, key: &PoolKey, upstream: &Upstream) {
        let Sender::Http2(sender) = &upstream.sender else {
            return;
        };
        let mut shared = self.shared.lock().expect("pool lock");
        if shared.len() >= IDLE_IN_ALL {
            shared.retain(|_, entry| entry.live());
        }
        if shared.len() >= IDLE_IN_ALL && !shared.contains_key(key) {
            return;
        }
        let entry = Shared {
            peer: upstream.peer,
            sender: sender.clone(),
            task: upstream.task.clone(),
            used: Instant::now(),
        };
        shared.insert(key.clone(), entry);
    }

    /// The most recently used live connection for `key`, if any.
    pub(crate) fn take(&self, key: &PoolKey) -> Option<Upstream> {
        let mut shelves = self.idle.lock().expect("pool lock");
        let shelf = shelves.by_key.get_mut(key)?;
        let mut found = None;
        let mut removed = 0;
        while let Some(upstream) = shelf.pop() {
            removed += 1;
            if upstream.reusable() {
                found = Some(upstream);
                break;
            }
        }
        if shelf.is_empty() {
            shelves.by_key.remove(key);
        }
        shelves.count -= removed;
        found
    }

    /// Keeps `upstream` for the next request to `key`, unless it is private, closed or stale, or
    /// the pool is full of live connections (then the oldest of the target's goes first).
    pub(crate) fn put(&self, key: PoolKey, upstream: Upstream) {
        // An HTTP/2 handle is one request's: its connection stays in the shared map.
        let http2 = matches!(upstream.sender, Sender::Http2(_));
        if http2 || upstream.private || !upstream.reusable() {
            return;
        }
        let mut shelves = self.idle.lock().expect("pool lock");
        let target_len = |s: &Shelves| s.by_key.get(&key).map_or(0, Vec::len);
        if shelves.count >= IDLE_IN_ALL || target_len(&shelves) >= IDLE_PER_TARGET {
            shelves.sweep();
        }
        if target_len(&shelves) >= IDLE_PER_TARGET {
            // The target's oldest makes room: a newer connection is likelier still open.
            let shelf = shelves.by_key.get_mut(&key).expect("a full shelf");
            shelf.remove(0);
            shelf.push(upstream);
            return;
        }
        if shelves.count >= IDLE_IN_ALL {
            return;
        }
        shelves.by_key.entry(key).or_default().push(upstream);
        shelves.count += 1;
    }
}

/// The upstream connection one client connection used last, kept for its next request.
#[derive(Debug)]
pub(crate) struct UpstreamCache {
    slot: Mutex<Option<(PoolKey, Upstream)>>,
    pool: Arc<UpstreamPool>,
}

impl UpstreamCache {
    pub(crate) fn new(pool: Arc<UpstreamPool>) -> UpstreamCache {
        UpstreamCache {
            slot: Mutex::new(None),
            pool,
        }
    }

    /// The shared pool (for HTTP/2 connections, which no client connection keeps to itself).
    pub(crate) fn pool(&self) -> &UpstreamPool {
        &self.pool
    }

    /// This connection's own upstream if it goes to `key`; else one from the shared pool.
    pub(crate) fn take(&self, key: &PoolKey) -> Option<Upstream> {
        let kept = self.slot.lock().expect("cache lock").take();
        match kept {
            Some((kept_key, upstream)) if &kept_key == key && upstream.reusable() => Some(upstream),
            // Its own, stale: closed here rather than tried.
            Some((kept_key, _)) if &kept_key == key => self.pool.take(key),
            Some((kept_key, upstream)) => {
                self.pool.put(kept_key, upstream);
                self.pool.take(key)
            }
            None => self.pool.take(key),
        }
    }

    fn put(&self, key: PoolKey, upstream: Upstream) {
        if matches!(upstream.sender, Sender::Http2(_)) {
            return; // Shared already; this handle was one request's.
        }
        let replaced = self
            .slot
            .lock()
            .expect("cache lock")
            .replace((key, upstream));
        if let Some((key, upstream)) = replaced {
            self.pool.put(key, upstream);
        }
    }
}

impl Drop for UpstreamCache {
    /// The client connection is gone (and every body it was sending): its upstream is free for
    /// anyone.
    fn drop(&mut self) {
        let kept = self.slot.get_mut().map(Option::take).unwrap_or_default();
        if let Some((key, upstream)) = kept {
            self.pool.put(key, upstream);
        }
    }
}

/// A response body that gives its upstream connection back once the body has been read to its
/// end; a body abandoned or failed half-way takes its connection with it. Until the end, its
/// exchange stays registered, and a policy change that cuts it aborts the upstream connection
/// and breaks the body off (the client connection closes: the response had started).
pub(crate) struct Returning {
    body: Counted<Incoming>,
    back: Option<(Arc<UpstreamCache>, PoolKey, Upstream)>,
    exchange: Option<Watched>,
}

/// The registration of the exchange a body belongs to, and its cut.
struct Watched {
    handle: TunnelHandle,
    cut: Pin<Box<dyn Future<Output = Decision> + Send + Sync>>,
    /// The connection to abort on a cut (HTTP/1.1; see `Upstream::cutter`).
    task: Option<AbortHandle>,
}

impl std::fmt::Debug for Returning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Returning")
            .field("body", &self.body)
            .finish_non_exhaustive()
    }
}

/// The error a cut response body ends with.
#[derive(Debug, thiserror::Error)]
#[error("a policy change cut the exchange: {0}")]
pub(crate) struct Cut(pub(crate) &'static str);

impl Returning {
    pub(crate) fn new(
        body: Counted<Incoming>,
        cache: Arc<UpstreamCache>,
        key: PoolKey,
        upstream: Upstream,
        exchange: TunnelHandle,
    ) -> Returning {
        let watched = Watched {
            cut: Box::pin(exchange.cut()),
            handle: exchange,
            task: upstream.cutter(),
        };
        Returning {
            body,
            back: Some((cache, key, upstream)),
            exchange: Some(watched),
        }
    }

    fn give_back(&mut self) {
        // The exchange is over: it leaves the registry before its connection is reused, unless
        // a policy change cut it before anyone polled the cut.
        if let Some(watched) = self.exchange.take() {
            if watched.handle.is_cut() {
                if let Some(task) = &watched.task {
                    task.abort();
                }
                self.back = None;
            }
        }
        if let Some((cache, key, mut upstream)) = self.back.take() {
            upstream.idle_since = Instant::now();
            cache.put(key, upstream);
        }
    }

    /// The cut's refusal, if a policy change cut the exchange; the upstream is then aborted and
    /// never given back.
    fn poll_cut(&mut self, cx: &mut Context<'_>) -> Option<Decision> {
        let watched = self.exchange.as_mut()?;
        let Poll::Ready(refusal) = watched.cut.as_mut().poll(cx) else {
            return None;
        };
        if let Some(task) = &watched.task {
            task.abort();
        }
        self.back = None;
        self.exchange = None;
        Some(refusal)
    }
}

impl Body for Returning {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        if let Some(refusal) = self.poll_cut(cx) {
            let code = refusal
                .reason()
                .map_or("allowed", policy::BlockReason::code);
            return Poll::Ready(Some(Err(Box::new(Cut(code)))));
        }
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        match &frame {
            None => self.give_back(),
            Some(Err(_)) => {
                self.back = None;
                self.exchange = None;
            }
            Some(Ok(_)) => {}
        }
        Poll::Ready(frame.map(|f| f.map_err(BodyError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Returning {
    /// A body the server never polled because it knew it was empty (`HEAD`, `204`, `304`, a zero
    /// length) still ended cleanly.
    fn drop(&mut self) {
        if self.body.is_end_stream() {
            self.give_back();
        }
    }
}
