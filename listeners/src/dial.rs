//! The one outbound dialer (SPEC §1.4): resolve a name once, vet every address against the policy,
//! connect only to a vetted address. Every proxy path dials through here, so there is exactly one
//! copy of this security check.

use std::{
    collections::{HashMap, VecDeque},
    fmt,
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{Arc, Mutex},
    time::Duration,
};

use policy::{embedded_ipv4, is_local_ip, BlockReason, Decision, Host, PolicyEngine, Target};
use tokio::net::TcpStream;

use crate::{
    interfaces::interface_addresses,
    lookups::{ClientKey, LookupBound, LookupLimits, Lookups},
    tunnels::Tunnels,
    upstream::{UpstreamProxy, UpstreamResolve},
};

/// A boxed future, so the traits below stay object-safe.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Looks names up. The dialer calls it at most once per dial, and never for a denied name.
pub trait Resolver: fmt::Debug + Send + Sync {
    /// The addresses of `name` (a canonical DNS name).
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>>;
}

/// Opens TCP connections. The default connects directly; tests substitute one that records every
/// address it is asked to dial.
pub trait Connector: fmt::Debug + Send + Sync {
    /// A connection to `addr`, which the dialer has vetted.
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>>;
}

/// A resolver with fixed answers, for tests: each name has a queue of answers (the last one
/// repeats), and every call is logged.
#[derive(Debug, Default)]
pub struct StaticResolver {
    answers: Mutex<HashMap<String, VecDeque<Vec<IpAddr>>>>,
    calls: Mutex<Vec<String>>,
}

impl StaticResolver {
    /// An empty resolver: every name fails to resolve.
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    /// Queues one answer for `name`; queued answers are given in order, the last one repeats.
    pub fn answer(self, name: &str, addrs: &[IpAddr]) -> StaticResolver {
        let mut answers = self.answers.lock().expect("resolver lock");
        answers
            .entry(name.to_owned())
            .or_default()
            .push_back(addrs.to_vec());
        drop(answers);
        self
    }

    /// Every name looked up so far, in order.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().expect("resolver lock").clone()
    }
}

impl Resolver for StaticResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        self.calls
            .lock()
            .expect("resolver lock")
            .push(name.to_owned());
        let mut answers = self.answers.lock().expect("resolver lock");
        let answer = match answers.get_mut(name) {
            Some(queue) if queue.len() > 1 => queue.pop_front(),
            Some(queue) => queue.front().cloned(),
            None => None,
        };
        Box::pin(async move {
            answer.ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no such name"))
        })
    }
}

/// Plain TCP.
#[derive(Clone, Copy, Debug, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        Box::pin(async move {
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            Ok(stream)
        })
    }
}

/// A connection to a target: to a vetted address, or through the upstream proxy.
#[derive(Debug)]
pub struct Dialed {
    /// The connected stream: the target's bytes (through the upstream too, once its `CONNECT`
    /// was answered), or, for [`Via::Forward`], the upstream proxy's HTTP.
    pub stream: TcpStream,
    /// The target's vetted address, which a policy change re-vets; `None` when the upstream
    /// proxy resolved the name (leash never learns the address).
    pub peer: Option<SocketAddr>,
    /// How the stream reaches the target.
    pub via: Via,
}

/// How a dialled stream reaches its target (SPEC §16).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Via {
    /// Directly.
    Direct,
    /// Through a `CONNECT` tunnel of the upstream proxy at this address.
    Tunnel(SocketAddr),
    /// To the upstream proxy at `proxy`, which takes plain HTTP requests in absolute-form with
    /// this `Proxy-Authorization` (added by leash; a client's never goes upstream).
    Forward {
        /// The upstream's address.
        proxy: SocketAddr,
        /// `Basic …`, when the proxy URL has credentials.
        authorization: Option<Arc<str>>,
    },
}

/// What the caller will send: bytes of its own (a tunnel), or plain HTTP requests, which an
/// upstream proxy that resolves names takes in absolute-form.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Hop {
    Tunnel,
    Http,
}

/// Why a dial did not produce a connection. Not `#[non_exhaustive]`: the protocol crates map it
/// exhaustively, so a new failure makes the compiler list each place that must answer it.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    /// The policy refused an address the name resolved to (or the address itself).
    #[error("blocked after DNS")]
    Blocked(Decision),
    /// The lookup failed or found nothing: fail closed.
    #[error("DNS lookup failed: {0}")]
    DnsFailed(String),
    /// The lookup did not answer in time; it was abandoned.
    #[error("DNS lookup timed out")]
    DnsTimeout,
    /// A bound on the lookups in flight refused this one: fail closed.
    #[error("DNS lookup refused: {0}")]
    DnsBusy(LookupBound),
    /// No vetted address accepted the connection.
    #[error("connect failed: {0}")]
    ConnectFailed(io::Error),
    /// No vetted address answered in time.
    #[error("connect timed out")]
    ConnectTimeout,
    /// The upstream proxy could not be reached, or its answer was not HTTP (SPEC §16: never a
    /// direct dial instead).
    #[error("the upstream proxy failed: {0}")]
    UpstreamProxyFailed(io::Error),
    /// The upstream proxy refused leash's credentials (its `407`).
    #[error("the upstream proxy refused leash's credentials (407)")]
    UpstreamProxyAuth,
    /// The upstream proxy refused the `CONNECT` (its `403`, or another non-2xx status).
    #[error("the upstream proxy refused the connection ({0})")]
    UpstreamProxyRefused(u16),
}

/// Resolves, vets and connects. Cheap to clone and share.
#[derive(Clone, Debug)]
pub struct Dialer {
    resolver: Arc<dyn Resolver>,
    connector: Arc<dyn Connector>,
    dns_timeout: Duration,
    connect_timeout: Duration,
    own_listeners: Arc<[SocketAddr]>,
    tunnels: Arc<Tunnels>,
    lookups: Arc<Lookups>,
    upstream: Option<Arc<UpstreamProxy>>,
}

impl Dialer {
    /// A dialer looking names up with `resolver` (a [`crate::DnsResolver`], or a
    /// [`StaticResolver`] in tests), connecting over plain TCP, with the default lookup bounds.
    pub fn new(
        resolver: Arc<dyn Resolver>,
        dns_timeout: Duration,
        connect_timeout: Duration,
    ) -> Dialer {
        Dialer {
            resolver,
            connector: Arc::new(TcpConnector),
            dns_timeout,
            connect_timeout,
            own_listeners: Arc::from([]),
            tunnels: Arc::default(),
            lookups: Arc::new(Lookups::new(LookupLimits::default())),
            upstream: None,
        }
    }

    /// Sends every connection but those to `no_proxy` targets through `upstream` (SPEC §16).
    pub fn with_upstream(mut self, upstream: Option<Arc<UpstreamProxy>>) -> Dialer {
        self.upstream = upstream;
        self
    }

    /// The upstream proxy, if one is configured.
    pub fn upstream(&self) -> Option<&Arc<UpstreamProxy>> {
        self.upstream.as_ref()
    }

    /// Bounds the lookups in flight (shared by this dialer's clones from here on).
    pub fn with_lookup_limits(mut self, limits: LookupLimits) -> Dialer {
        self.lookups = Arc::new(Lookups::new(limits));
        self
    }

    /// How many lookups are in flight now (an abandoned one is not).
    pub fn lookups_in_flight(&self) -> usize {
        self.lookups.in_flight()
    }

    /// The registry of tunnels opened over this dialer's connections (shared by its clones).
    pub fn tunnels(&self) -> &Arc<Tunnels> {
        &self.tunnels
    }

    /// The addresses leash listens on (as bound: `0.0.0.0:PORT` for every address). An address
    /// of this host on one of their ports is never dialled, whatever the policy says (even
    /// `allow_local = true`), so a sandboxed program cannot reach leash's own listeners — the admin
    /// API above all — through the proxy, by loopback or by any other address of the host.
    pub fn with_own_listeners(mut self, listeners: &[SocketAddr]) -> Dialer {
        self.own_listeners = Arc::from(listeners);
        self
    }

    /// Uses another resolver.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolver>) -> Dialer {
        self.resolver = resolver;
        self
    }

    /// Uses another connector.
    pub fn with_connector(mut self, connector: Arc<dyn Connector>) -> Dialer {
        self.connector = connector;
        self
    }

    /// Resolves `target` once (a lookup counted against `client`'s bound), vets every address
    /// with `engine`, and connects to the first vetted address that answers; with an upstream
    /// proxy, `CONNECT`s through it instead (see `dial_upstream`). The caller has already had
    /// `engine.decide` allow the target. The stream carries the target's bytes.
    pub async fn dial(
        &self,
        engine: &dyn PolicyEngine,
        target: &Target,
        client: &ClientKey,
    ) -> Result<Dialed, DialError> {
        self.dial_for(engine, target, client, Hop::Tunnel).await
    }

    /// `dial` for plain HTTP requests: through an upstream proxy that resolves names, the stream
    /// is the upstream's own HTTP ([`Via::Forward`]: requests go in absolute-form, SPEC §16).
    pub async fn dial_http(
        &self,
        engine: &dyn PolicyEngine,
        target: &Target,
        client: &ClientKey,
    ) -> Result<Dialed, DialError> {
        self.dial_for(engine, target, client, Hop::Http).await
    }

    async fn dial_for(
        &self,
        engine: &dyn PolicyEngine,
        target: &Target,
        client: &ClientKey,
        hop: Hop,
    ) -> Result<Dialed, DialError> {
        match self.upstream.as_ref().filter(|u| !u.bypassed(target)) {
            Some(upstream) => {
                self.dial_upstream(upstream, engine, target, client, hop)
                    .await
            }
            None => {
                let addrs = self.vetted(engine, target, client).await?;
                self.connect_vetted(&addrs, target.port()).await
            }
        }
    }

    /// Through the upstream proxy. A name goes as it is when the upstream resolves names (leash
    /// does no lookup); otherwise (an address, or `resolve = "local"`) the target is vetted here
    /// first, as for a direct dial, and the vetted address is sent. The upstream's own address
    /// is not vetted: it is configuration, not a target.
    async fn dial_upstream(
        &self,
        upstream: &UpstreamProxy,
        engine: &dyn PolicyEngine,
        target: &Target,
        client: &ClientKey,
        hop: Hop,
    ) -> Result<Dialed, DialError> {
        let peer = match (upstream.resolve(), target.host()) {
            (UpstreamResolve::Upstream, Host::Name(_)) => None,
            _ => {
                let addrs = self.vetted(engine, target, client).await?;
                if addrs
                    .iter()
                    .any(|&ip| upstream.bypassed_ip(ip, target.port()))
                {
                    return self.connect_vetted(&addrs, target.port()).await;
                }
                Some(SocketAddr::new(addrs[0], target.port()))
            }
        };
        let forward = hop == Hop::Http && upstream.resolve() == UpstreamResolve::Upstream;
        let proxy_addrs = self.proxy_addresses(upstream, client).await?;
        let through = async {
            let (mut stream, proxy) = self
                .connect_any(&proxy_addrs, upstream.target().port())
                .await
                .map_err(DialError::UpstreamProxyFailed)?;
            if forward {
                let authorization = upstream.authorization().cloned();
                let via = Via::Forward {
                    proxy,
                    authorization,
                };
                return Ok(Dialed { stream, peer, via });
            }
            let authority = peer.map_or_else(|| target.to_string(), |peer| peer.to_string());
            upstream.connect(&mut stream, &authority).await?;
            let via = Via::Tunnel(proxy);
            Ok(Dialed { stream, peer, via })
        };
        tokio::time::timeout(self.connect_timeout, through)
            .await
            .map_err(|_| upstream_failed(io::ErrorKind::TimedOut, "no answer in time"))?
    }

    /// The upstream proxy's addresses (looked up when it is named): exempt from the local check,
    /// but never one of leash's own listeners, which would send leash's traffic back to itself.
    async fn proxy_addresses(
        &self,
        upstream: &UpstreamProxy,
        client: &ClientKey,
    ) -> Result<Vec<IpAddr>, DialError> {
        let proxy = upstream.target();
        let addrs = self
            .addresses(proxy.host(), client)
            .await
            .map_err(|error| upstream_failed(io::ErrorKind::NotFound, &error.to_string()))?;
        self.refuse_own_listeners(&addrs, proxy.port())
            .map_err(|_| upstream_failed(io::ErrorKind::InvalidInput, "it is leash itself"))?;
        Ok(addrs)
    }

    /// Connects to the first vetted address that answers, within the connect timeout.
    async fn connect_vetted(&self, addrs: &[IpAddr], port: u16) -> Result<Dialed, DialError> {
        let connect = self.connect_any(addrs, port);
        let (stream, peer) = tokio::time::timeout(self.connect_timeout, connect)
            .await
            .map_err(|_| DialError::ConnectTimeout)?
            .map_err(DialError::ConnectFailed)?;
        Ok(Dialed {
            stream,
            peer: Some(peer),
            via: Via::Direct,
        })
    }

    /// Resolves `target` once and vets every address, without connecting: what `dial` does before
    /// it connects, and what a UDP relay does before it sends.
    async fn vetted(
        &self,
        engine: &dyn PolicyEngine,
        target: &Target,
        client: &ClientKey,
    ) -> Result<Vec<IpAddr>, DialError> {
        let addrs = self.addresses(target.host(), client).await?;
        let decision = engine.vet(target, &addrs);
        if !decision.is_allowed() {
            return Err(DialError::Blocked(decision));
        }
        self.refuse_own_listeners(&addrs, target.port())?;
        Ok(addrs)
    }

    /// The vetted addresses of `target`, for a UDP datagram. A datagram cannot go through an HTTP
    /// upstream proxy: with one configured, only `no_proxy` targets are sent (directly), and
    /// nothing else is ever sent directly instead.
    pub async fn resolve_vetted(
        &self,
        engine: &dyn PolicyEngine,
        target: &Target,
        client: &ClientKey,
    ) -> Result<Vec<IpAddr>, DialError> {
        if self.upstream.as_ref().is_some_and(|u| !u.bypassed(target)) {
            let why = "UDP cannot go through an HTTP upstream proxy";
            return Err(upstream_failed(io::ErrorKind::Unsupported, why));
        }
        self.vetted(engine, target, client).await
    }

    /// Re-checks an address already connected to (a reused upstream connection) against the policy
    /// in force now, without a new lookup.
    pub fn revet(&self, engine: &dyn PolicyEngine, target: &Target, peer: SocketAddr) -> Decision {
        engine.vet(target, &[peer.ip()])
    }

    /// Refuses every address of this host on a port leash listens on: any local address (which
    /// covers loopback and `0.0.0.0`), a listener's own bound address, and the address of any
    /// interface as it is now (interfaces come and go, so they are read at each such dial, and only
    /// then: other ports never pay for it). If the interfaces cannot be read, every address on
    /// that port is refused.
    fn refuse_own_listeners(&self, addrs: &[IpAddr], port: u16) -> Result<(), DialError> {
        if !self.own_listeners.iter().any(|l| l.port() == port) {
            return Ok(());
        }
        let interfaces = interface_addresses();
        let is_host = |ip: IpAddr| {
            self.own_listeners.iter().any(|l| l.ip() == ip)
                || interfaces.as_ref().is_none_or(|host| host.contains(&ip))
        };
        // An IPv6 address carrying one of the host's IPv4 addresses (NAT64, 6to4, Teredo) may be
        // translated back to it on the way, as deny rules see through IPv6 too.
        let carries_host = |ip: IpAddr| match ip {
            IpAddr::V4(_) => false,
            IpAddr::V6(v6) => embedded_ipv4(v6)
                .into_iter()
                .flatten()
                .any(|v4| is_host(v4.into())),
        };
        let own: Vec<IpAddr> = addrs
            .iter()
            .copied()
            .filter(|&ip| is_local_ip(ip) || is_host(ip) || carries_host(ip))
            .collect();
        match own.is_empty() {
            true => Ok(()),
            false => Err(DialError::Blocked(Decision::Deny(
                BlockReason::LocalAddress { addrs: own },
            ))),
        }
    }

    /// Looks `host` up once, holding one of `client`'s lookup places until it answers or is
    /// abandoned at `dns_timeout` (dropping the lookup drops whatever it held).
    async fn addresses(&self, host: &Host, client: &ClientKey) -> Result<Vec<IpAddr>, DialError> {
        let name = match host {
            Host::Name(name) => name,
            Host::Ip(_) | Host::ScopedIp(_) => return Ok(host.ip().into_iter().collect()),
        };
        let _permit = self.lookups.acquire(client).map_err(DialError::DnsBusy)?;
        let lookup = self.resolver.resolve(name);
        let addrs = tokio::time::timeout(self.dns_timeout, lookup)
            .await
            .map_err(|_| {
                tracing::debug!(%client, name = &**name, "DNS lookup abandoned at its timeout");
                DialError::DnsTimeout
            })?
            .map_err(|e| DialError::DnsFailed(e.to_string()))?;
        match addrs.is_empty() {
            true => Err(DialError::DnsFailed("no addresses".to_owned())),
            false => Ok(addrs.into_iter().map(|a| a.to_canonical()).collect()),
        }
    }

    async fn connect_any(
        &self,
        addrs: &[IpAddr],
        port: u16,
    ) -> io::Result<(TcpStream, SocketAddr)> {
        // The error is made only when every address failed: an `io::Error` with a message is an
        // allocation, and the first address usually answers.
        let mut last_error = None;
        for &ip in addrs {
            let peer = SocketAddr::new(ip, port);
            match self.connector.connect(peer).await {
                Ok(stream) => return Ok((stream, peer)),
                Err(error) => last_error = Some(error),
            }
        }
        Err(last_error.unwrap_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no address")))
    }
}

fn upstream_failed(kind: io::ErrorKind, why: &str) -> DialError {
    DialError::UpstreamProxyFailed(io::Error::new(kind, why.to_owned()))
}

#[cfg(test)]
mod tests;

#[cfg(test)]
mod upstream_tests;
