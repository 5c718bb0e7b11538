//! Open tunnels (`CONNECT`, SOCKS5) and their traffic: counted for metrics, and closable when a
//! policy change would now refuse them (tightening reaches live tunnels, SPEC §4). The bytes of
//! forwarded HTTP bodies are counted here too, so `/metrics` has one place to read traffic from.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use policy::{BlockReason, Decision, Mode, PolicyEngine, Protocol, Request, Target, APPROVED_BY};
use tokio::sync::Notify;

/// What a tunnel was opened for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TunnelInfo {
    /// The target as decided.
    pub target: Target,
    /// `connect` or `socks5`.
    pub protocol: Protocol,
    /// The address it is connected to; `None` for an intercepted tunnel, which dials per request.
    pub peer: Option<SocketAddr>,
    /// Whether leash sees inside it (MITM); a raw tunnel cannot be checked request by request.
    pub inspected: bool,
    /// Whether it stands on a `Decider`'s approval rather than an allow rule: a policy change then
    /// re-checks it with every step but the allowlist, as the approval was.
    pub approved: bool,
}

impl TunnelInfo {
    /// Why `engine` (a policy now in force) refuses this tunnel, if it does. An approved tunnel is
    /// re-checked as it was approved (every step but the allowlist); its connected address is
    /// re-vetted; in limited mode a raw tunnel is refused, since its requests cannot be checked.
    pub fn refusal(&self, engine: &dyn PolicyEngine) -> Option<Decision> {
        if engine.mode() == Mode::Limited && !self.inspected {
            return Some(Decision::Deny(BlockReason::MitmRequired));
        }
        let request = Request::new(&self.target, "CONNECT", self.protocol);
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

/// The registry of open tunnels and their byte counts.
#[derive(Debug, Default)]
pub struct Tunnels {
    next_id: AtomicU64,
    open: Mutex<HashMap<u64, (TunnelInfo, Arc<Notify>)>>,
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
    forwarded_up: AtomicU64,
    forwarded_down: AtomicU64,
}

/// One open tunnel; dropping it removes it from the registry.
#[derive(Debug)]
pub struct TunnelHandle {
    id: u64,
    tunnels: Arc<Tunnels>,
    close: Arc<Notify>,
}

impl Tunnels {
    /// Registers a tunnel.
    pub fn open(self: &Arc<Self>, info: TunnelInfo) -> TunnelHandle {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let close = Arc::new(Notify::new());
        self.open
            .lock()
            .expect("tunnels lock")
            .insert(id, (info, close.clone()));
        TunnelHandle {
            id,
            tunnels: self.clone(),
            close,
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
        let checked = info.clone();
        let handle = self.open(info);
        match checked.refusal(live.snapshot().as_ref()) {
            None => Ok(handle),
            Some(refusal) => Err(refusal),
        }
    }

    /// Closes every open tunnel for which `refuse` says so; returns how many.
    pub fn close_where(&self, refuse: impl Fn(&TunnelInfo) -> bool) -> usize {
        let open = self.open.lock().expect("tunnels lock");
        let mut closed = 0;
        for (info, close) in open.values() {
            if refuse(info) {
                // `notify_one` stores a permit, so a relay that is not waiting yet still sees it.
                close.notify_one();
                closed += 1;
            }
        }
        closed
    }

    /// Tunnels open now.
    pub fn open_count(&self) -> usize {
        self.open.lock().expect("tunnels lock").len()
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
    /// Resolves when a policy change closes this tunnel.
    pub async fn closed(&self) {
        self.close.notified().await;
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
