//! Open tunnels (`CONNECT`, SOCKS5) and forwarded HTTP exchanges in flight, with their traffic:
//! counted for metrics, and cut when a policy change would now refuse them (tightening reaches
//! live connections, SPEC §4). Both kinds sit in one registry and are re-checked by one function
//! (`TunnelInfo::refusal_of`), so a policy swap has one close pass. The bytes of forwarded HTTP
//! bodies are counted here too, so `/metrics` has one place to read traffic from.

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex, OnceLock,
    },
};

use policy::{
    BlockReason, Decision, Mode, PolicyEngine, Protocol, Request, RequestShape, Target, APPROVED_BY,
};
use tokio::sync::Notify;

/// What a tunnel was opened for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelInfo {
    /// The target as decided.
    pub target: Target,
    /// `connect` or `socks5` (`http` or `https` for the route of a forwarded exchange).
    pub protocol: Protocol,
    /// The address it is connected to; `None` for an intercepted tunnel, which dials per request.
    pub peer: Option<SocketAddr>,
    /// Whether leash sees inside it (MITM); a raw tunnel cannot be checked request by request.
    pub inspected: bool,
    /// Whether it stands on a `Decider`'s approval rather than an allow rule: a policy change then
    /// re-checks it with every step but the allowlist, as the approval was.
    pub approved: bool,
    /// The attempt it runs on, so ending a bound attempt (SPEC §18) can close it.
    pub attempt: Option<Arc<str>>,
}

impl TunnelInfo {
    /// Why `engine` (a policy now in force) refuses this tunnel, if it does. An approved tunnel is
    /// re-checked as it was approved (every step but the allowlist); its connected address is
    /// re-vetted; in limited mode a raw tunnel is refused, since its requests cannot be checked.
    pub fn refusal(&self, engine: &dyn PolicyEngine) -> Option<Decision> {
        self.refusal_of(engine, "CONNECT", RequestShape::default())
    }

    /// The one re-check of a live connection, for a tunnel (`CONNECT`) and for a forwarded
    /// exchange (its own method and shape, so limited mode refuses a write still in flight).
    fn refusal_of(
        &self,
        engine: &dyn PolicyEngine,
        method: &str,
        shape: RequestShape<'_>,
    ) -> Option<Decision> {
        if engine.mode() == Mode::Limited && !self.inspected {
            return Some(Decision::Deny(BlockReason::MitmRequired));
        }
        let request = Request {
            target: &self.target,
            method,
            protocol: self.protocol,
            shape,
        };
        let decision = match self.approved {
            true => engine.decide_approved(&request, Arc::from(APPROVED_BY)),
            false => engine.decide(&request),
        };
        if !decision.is_allowed() {
            return Some(decision);
        }
        // An intercepted tunnel has no upstream of its own: each request inside is decided anew.
        let vetted = self.peer.map(|peer| engine.vet(&self.target, &[peer.ip()]));
        vetted.filter(|decision| !decision.is_allowed())
    }
}

/// A forwarded HTTP exchange in flight (absolute-form, or a request inside an intercepted
/// tunnel), from before its request is sent until its response body ends: the request as it was
/// decided, so a policy change decides it again exactly.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExchangeInfo {
    /// The target, `http` or `https`, the upstream connection's address, and whether a `Decider`
    /// approved it; `inspected` is true (leash sees the request).
    pub route: TunnelInfo,
    /// The method as the client sent it.
    pub method: String,
    /// The request carries a body.
    pub has_body: bool,
    /// The request asks for an `Upgrade`.
    pub upgrade: bool,
    /// Every method-override header value (see `RequestShape::method_overrides`).
    pub method_overrides: Vec<String>,
}

impl ExchangeInfo {
    /// Why `engine` refuses this exchange now, if it does: the same re-check as a tunnel's, with
    /// the request's method and shape (limited mode refuses a request body still streaming).
    pub fn refusal(&self, engine: &dyn PolicyEngine) -> Option<Decision> {
        let overrides: Vec<&str> = self.method_overrides.iter().map(String::as_str).collect();
        let shape = RequestShape {
            has_body: self.has_body,
            upgrade: self.upgrade,
            method_overrides: &overrides,
        };
        self.route.refusal_of(engine, &self.method, shape)
    }
}

/// One live connection the policy can reach: a tunnel, a forwarded exchange, or an exchange the
/// origin switched to another protocol (a WebSocket after its `101`): a tunnel now, re-checked as
/// the handshake it began as, so limited mode refuses it as an upgrade and a deny rule as any
/// request to its host.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Live {
    Tunnel(TunnelInfo),
    Exchange(ExchangeInfo),
    Upgraded(ExchangeInfo),
}

impl Live {
    fn refusal(&self, engine: &dyn PolicyEngine) -> Option<Decision> {
        match self {
            Live::Tunnel(tunnel) => tunnel.refusal(engine),
            Live::Exchange(exchange) | Live::Upgraded(exchange) => exchange.refusal(engine),
        }
    }

    fn attempt(&self) -> Option<&str> {
        match self {
            Live::Tunnel(tunnel) => tunnel.attempt.as_deref(),
            Live::Exchange(exchange) | Live::Upgraded(exchange) => {
                exchange.route.attempt.as_deref()
            }
        }
    }
}

/// A registered connection's cut: the refusal that closed it, set once, and the wake-up for
/// everyone waiting on it (a relay; an exchange's request and its response body).
#[derive(Debug, Default)]
struct Cut {
    why: OnceLock<Decision>,
    notify: Notify,
}

impl Cut {
    /// Cuts with `why`; false if it was cut already.
    fn cut(&self, why: Decision) -> bool {
        let first = self.why.set(why).is_ok();
        if first {
            self.notify.notify_waiters();
        }
        first
    }

    /// Resolves once cut, with the refusal; sticky, and for any number of waiters.
    async fn wait(&self) -> Decision {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a cut between the two still wakes this waiter.
            notified.as_mut().enable();
            if let Some(why) = self.why.get() {
                return why.clone();
            }
            notified.await;
        }
    }
}

/// The registry of open tunnels and exchanges in flight, and the byte counts.
#[derive(Debug, Default)]
pub struct Tunnels {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, (Live, Arc<Cut>)>>,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    forwarded_up: AtomicU64,
    forwarded_down: AtomicU64,
}

/// One registered tunnel or exchange; dropping it removes it from the registry.
#[derive(Debug)]
pub struct TunnelHandle {
    id: u64,
    tunnels: Arc<Tunnels>,
    cut: Arc<Cut>,
}

impl Tunnels {
    /// Registers a tunnel.
    pub fn open(self: &Arc<Self>, info: TunnelInfo) -> TunnelHandle {
        self.register(Live::Tunnel(info))
    }

    fn register(self: &Arc<Self>, live: Live) -> TunnelHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let cut = Arc::new(Cut::default());
        self.open
            .lock()
            .expect("tunnels lock")
            .insert(id, (live, cut.clone()));
        TunnelHandle {
            id,
            tunnels: self.clone(),
            cut,
        }
    }

    /// Registers a tunnel, then checks it against the policy in force *after* registering: a policy
    /// swap either happened before (this check sees it) or will close it (it is registered), so
    /// no tunnel slips between a swap and the pass that closes what the swap refuses. `live` is
    /// the engine that follows swaps, not a snapshot taken earlier.
    pub fn open_checked(
        self: &Arc<Self>,
        info: TunnelInfo,
        live: &dyn PolicyEngine,
    ) -> Result<TunnelHandle, Decision> {
        self.register_checked(Live::Tunnel(info), live)
    }

    /// Registers a forwarded exchange before its request goes upstream, checked like a tunnel
    /// (`open_checked`): from then on a tightening policy cuts it.
    pub fn open_exchange_checked(
        self: &Arc<Self>,
        info: ExchangeInfo,
        live: &dyn PolicyEngine,
    ) -> Result<TunnelHandle, Decision> {
        self.register_checked(Live::Exchange(info), live)
    }

    fn register_checked(
        self: &Arc<Self>,
        live: Live,
        engine: &dyn PolicyEngine,
    ) -> Result<TunnelHandle, Decision> {
        let checked = live.clone();
        let handle = self.register(live);
        match checked.refusal(engine.snapshot().as_ref()) {
            None => Ok(handle),
            Some(refusal) => Err(refusal),
        }
    }

    /// Cuts every registered tunnel and exchange that `engine` (the policy just swapped in)
    /// refuses, each with its refusal; returns how many were cut by this pass.
    pub fn close_refused(&self, engine: &dyn PolicyEngine) -> usize {
        // The refusals are decided outside the lock: a long pass must not stall registrations.
        let live: Vec<(Live, Arc<Cut>)> = {
            let open = self.open.lock().expect("tunnels lock");
            open.values().cloned().collect()
        };
        let mut closed = 0;
        for (live, cut) in live {
            if let Some(refusal) = live.refusal(engine) {
                closed += usize::from(cut.cut(refusal));
            }
        }
        closed
    }

    /// Cuts every tunnel and exchange running on `attempt` (an ended bound attempt, SPEC §18),
    /// each with `refusal`; returns how many.
    pub fn close_attempt(&self, attempt: &str, refusal: &Decision) -> usize {
        let open = self.open.lock().expect("tunnels lock");
        open.values()
            .filter(|(live, _)| live.attempt() == Some(attempt))
            .map(|(_, cut)| usize::from(cut.cut(refusal.clone())))
            .sum()
    }

    /// Tunnels open now, upgraded exchanges included (exchanges in flight are not tunnels).
    pub fn open_count(&self) -> usize {
        let open = self.open.lock().expect("tunnels lock");
        open.values()
            .filter(|(live, _)| matches!(live, Live::Tunnel(_) | Live::Upgraded(_)))
            .count()
    }

    /// Forwarded exchanges in flight now.
    pub fn exchange_count(&self) -> usize {
        let open = self.open.lock().expect("tunnels lock");
        open.values()
            .filter(|(live, _)| matches!(live, Live::Exchange(_)))
            .count()
    }

    /// Bytes relayed from clients to upstreams.
    pub fn bytes_up(&self) -> u64 {
        self.bytes_up.load(Ordering::Relaxed)
    }

    /// Bytes relayed from upstreams to clients.
    pub fn bytes_down(&self) -> u64 {
        self.bytes_down.load(Ordering::Relaxed)
    }

    /// HTTP body bytes forwarded from clients to upstreams (absolute-form and intercepted).
    pub fn forwarded_up(&self) -> u64 {
        self.forwarded_up.load(Ordering::Relaxed)
    }

    /// HTTP body bytes forwarded from upstreams to clients.
    pub fn forwarded_down(&self) -> u64 {
        self.forwarded_down.load(Ordering::Relaxed)
    }

    /// Counts `bytes` of a forwarded HTTP body, `up` from the client.
    pub fn count_forwarded(&self, up: bool, bytes: usize) {
        let counter = if up {
            &self.forwarded_up
        } else {
            &self.forwarded_down
        };
        counter.fetch_add(bytes as u64, Ordering::Relaxed);
    }

    pub(crate) fn count(&self, up: bool, bytes: usize) {
        let counter = if up { &self.bytes_up } else { &self.bytes_down };
        counter.fetch_add(bytes as u64, Ordering::Relaxed);
    }
}

impl TunnelHandle {
    /// Resolves when a policy change closes this tunnel or cuts this exchange.
    pub async fn closed(&self) {
        self.cut.wait().await;
    }

    /// Whether a policy change has cut this.
    pub fn is_cut(&self) -> bool {
        self.cut.why.get().is_some()
    }

    /// Resolves with the refusal when a policy change cuts this; owns what it waits on, so a
    /// body can keep it beside the handle.
    pub fn cut(&self) -> impl Future<Output = Decision> + Send + Sync + 'static {
        let cut = self.cut.clone();
        async move { cut.wait().await }
    }

    /// The exchange's origin switched protocols (`101`): from now on it is a tunnel, counted
    /// and re-checked as one, under the same cut (a cut that came first still stands).
    pub fn upgraded(&self) {
        let mut open = self.tunnels.open.lock().expect("tunnels lock");
        let Some((live, _)) = open.get_mut(&self.id) else {
            return;
        };
        let upgraded = match live {
            Live::Exchange(exchange) => Live::Upgraded(exchange.clone()),
            Live::Tunnel(_) | Live::Upgraded(_) => return,
        };
        *live = upgraded;
    }

    pub(crate) fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }
}

impl Drop for TunnelHandle {
    fn drop(&mut self) {
        self.tunnels
            .open
            .lock()
            .expect("tunnels lock")
            .remove(&self.id);
    }
}

#[cfg(test)]
mod tests;
