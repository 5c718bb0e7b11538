//! Bounds on the DNS lookups in flight, per client and in total, so that one client's names whose
//! DNS never answers cannot leave the resolver to nobody else. A lookup holds a [`LookupPermit`]
//! from before it starts until it answers or is abandoned at the dialer's timeout; at a bound the
//! dial is refused at once (fail closed), never queued behind the lookups that hold it.

use std::{
    collections::HashMap,
    fmt,
    net::IpAddr,
    sync::{Arc, Mutex},
};

/// Whom a dial is for: the attempt id the client gave, else its address. Attempt ids are labels a
/// client chooses, so the per-client bound separates clients that name themselves (each agent
/// that leash starts has its own); the total bound is what holds against one that does not.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// The attempt id from the proxy credentials.
    Attempt(Arc<str>),
    /// The client's address, when it gave no attempt id.
    Peer(IpAddr),
}

impl ClientKey {
    /// The key of a client with `attempt` (if it gave one) connecting from `peer`.
    pub fn new(attempt: Option<&str>, peer: IpAddr) -> ClientKey {
        match attempt {
            Some(attempt) => ClientKey::Attempt(Arc::from(attempt)),
            None => ClientKey::Peer(peer),
        }
    }
}

impl fmt::Display for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientKey::Attempt(attempt) => write!(f, "attempt {attempt:?}"),
            ClientKey::Peer(ip) => write!(f, "client {ip}"),
        }
    }
}

/// How many lookups may be in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LookupLimits {
    /// In all.
    pub total: usize,
    /// For one client.
    pub per_client: usize,
}

impl Default for LookupLimits {
    fn default() -> Self {
        LookupLimits {
            total: 256,
            per_client: 32,
        }
    }
}

/// Which bound refused a lookup, and its size.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LookupBound {
    /// The client already has this many lookups in flight.
    #[error("this client has {0} DNS lookups in flight (dns.max_lookups_per_client)")]
    PerClient(usize),
    /// leash already has this many lookups in flight.
    #[error("{0} DNS lookups are in flight (dns.max_lookups)")]
    Total(usize),
}

/// The lookups in flight, counted per client.
#[derive(Debug, Default)]
pub(crate) struct Lookups {
    limits: LookupLimits,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    total: usize,
    /// Only clients with a lookup in flight: at most `limits.total` entries.
    clients: HashMap<ClientKey, Client>,
    /// Whether the total bound's refusals have been logged since it was last free.
    total_logged: bool,
}

#[derive(Debug, Default)]
struct Client {
    in_flight: usize,
    /// Whether this client's refusals have been logged since it last had none in flight.
    logged: bool,
}

impl Lookups {
    pub(crate) fn new(limits: LookupLimits) -> Lookups {
        Lookups {
            limits,
            state: Mutex::default(),
        }
    }

    /// A permit for one lookup by `client`, or the bound that refuses it (logged once per
    /// episode, so a flood cannot flood the log too).
    pub(crate) fn acquire(
        self: &Arc<Self>,
        client: &ClientKey,
    ) -> Result<LookupPermit, LookupBound> {
        let mut state = self.state.lock().expect("lookups lock");
        let state = &mut *state;
        let in_flight = state.clients.get(client).map_or(0, |c| c.in_flight);
        if in_flight >= self.limits.per_client {
            let entry = state
                .clients
                .get_mut(client)
                .expect("a client with lookups");
            if !std::mem::replace(&mut entry.logged, true) {
                tracing::warn!(%client, bound = self.limits.per_client, "DNS lookups refused: the client's bound is reached");
            }
            return Err(LookupBound::PerClient(self.limits.per_client));
        }
        if state.total >= self.limits.total {
            if !std::mem::replace(&mut state.total_logged, true) {
                tracing::warn!(%client, bound = self.limits.total, "DNS lookups refused: the total bound is reached");
            }
            return Err(LookupBound::Total(self.limits.total));
        }
        state.total += 1;
        state.clients.entry(client.clone()).or_default().in_flight += 1;
        Ok(LookupPermit {
            lookups: self.clone(),
            client: client.clone(),
        })
    }

    /// How many lookups are in flight now.
    pub(crate) fn in_flight(&self) -> usize {
        self.state.lock().expect("lookups lock").total
    }

    fn release(&self, client: &ClientKey) {
        let mut state = self.state.lock().expect("lookups lock");
        state.total -= 1;
        // Logged again only once the bound is well clear, not each time one place frees.
        if state.total <= self.limits.total / 2 {
            state.total_logged = false;
        }
        if let Some(entry) = state.clients.get_mut(client) {
            entry.in_flight -= 1;
            if entry.in_flight == 0 {
                state.clients.remove(client);
            }
        }
    }
}

/// One lookup in flight; dropping it (answered or abandoned) frees its place.
#[derive(Debug)]
pub(crate) struct LookupPermit {
    lookups: Arc<Lookups>,
    client: ClientKey,
}

impl Drop for LookupPermit {
    fn drop(&mut self) {
        self.lookups.release(&self.client);
    }
}
