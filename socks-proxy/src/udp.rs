//! UDP ASSOCIATE (SPEC §6, only with `socks.udp = true`): every datagram decided on its own,
//! datagrams from anyone but the associating client (or a remote it wrote to) dropped, the
//! association closed with its TCP control connection, after `limits.idle_timeout` without a
//! datagram, or when the accept loop evicts it to make room.
//!
//! Two kinds of socket: the client talks to one bound on the control connection's local address
//! (the listener's, usually loopback, so it is no more exposed than the listener), and remotes are
//! written to from one bound on the unspecified address of their family — a socket bound to
//! loopback cannot send to any other host.

use std::{
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    sync::Arc,
};

use indexmap::IndexMap;
use listeners::{Connection, TunnelInfo};
use policy::{is_approved, Decision, Protocol, Request, Target};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
    time::Instant,
};

use crate::{
    proxy::{Scope, SocksProxy},
    reply::{reply, Outcome},
    wire::{encode_addr, Address},
};

/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 64 * 1024;

/// Remotes one association remembers (only their answers are relayed). The least recently written
/// is forgotten first, so a flood of destinations costs a bounded amount of memory (a few hundred
/// bytes an entry) and answers from a forgotten remote are dropped like a stranger's.
pub(crate) const MAX_REMOTES: usize = 256;

pub(crate) async fn associate(
    proxy: &SocksProxy,
    scope: &Scope,
    mut control: TcpStream,
    requested: Address,
    connection: &Arc<Connection>,
) {
    let Ok(local) = control.local_addr() else {
        return;
    };
    let Ok(socket) = UdpSocket::bind((local.ip(), 0)).await else {
        let _ = control.write_all(&reply(&Outcome::Failed, None)).await;
        return;
    };
    if control
        .write_all(&reply(&Outcome::Granted, socket.local_addr().ok()))
        .await
        .is_err()
    {
        return;
    }
    let mut association = Association {
        proxy,
        scope,
        client_socket: socket,
        remotes: Remotes::default(),
        client: None,
        client_port: match requested {
            Address::Ip(addr) if addr.port() != 0 => Some(addr.port()),
            Address::Ip(_) | Address::Domain(..) => None,
        },
        contacted: Contacted::default(),
    };
    association.run(&mut control, connection).await;
}

/// Which socket a datagram is waiting on.
#[derive(Clone, Copy)]
enum Side {
    Client,
    Remote(Family),
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

struct Association<'a> {
    proxy: &'a SocksProxy,
    scope: &'a Scope,
    /// Where the client sends to and hears from.
    client_socket: UdpSocket,
    /// Where remotes are written to and answer, one per address family, bound on first use.
    remotes: Remotes,
    /// The client's UDP address, once known.
    client: Option<SocketAddr>,
    /// The port the client announced in its request, if any.
    client_port: Option<u16>,
    /// Remotes the client wrote to, with what they were decided as: the only ones whose answers
    /// are relayed back, and only while the policy in force still allows them.
    contacted: Contacted,
}

impl Association<'_> {
    /// Relays until the control connection ends (any byte or its close), the association is idle
    /// for `idle_timeout`, or the accept loop evicts it. Between datagrams the connection counts
    /// as idle, so at the connection limit the longest-quiet association makes room.
    async fn run(&mut self, control: &mut TcpStream, connection: &Connection) {
        let idle = self.proxy.options.idle_timeout;
        let idle_timer = tokio::time::sleep(idle);
        tokio::pin!(idle_timer);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut control_byte = [0u8; 1];
        connection.touch();
        loop {
            let side = tokio::select! {
                _ = control.read(&mut control_byte) => return,
                () = connection.evicted() => return,
                () = &mut idle_timer => return,
                ready = self.client_socket.readable() => ready.map(|()| Side::Client),
                ready = readable(self.remotes.v4.as_ref()) => ready.map(|()| Side::Remote(Family::V4)),
                ready = readable(self.remotes.v6.as_ref()) => ready.map(|()| Side::Remote(Family::V6)),
            };
            let Ok(side) = side else { return };
            let socket = match side {
                Side::Client => &self.client_socket,
                Side::Remote(family) => match self.remotes.get(family) {
                    Some(socket) => socket,
                    None => continue,
                },
            };
            let (len, from) = match socket.try_recv_from(&mut buf) {
                Ok(received) => received,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(_) => return,
            };
            let handled = async {
                match side {
                    Side::Client => self.on_client_socket(&buf[..len], from).await,
                    Side::Remote(_) => self.on_remote_socket(&buf[..len], from).await,
                }
            };
            // A datagram held for an answer (SPEC §14) waits here: the client leaving, or an
            // eviction, ends the wait (and withdraws its pending item) like any other request's.
            let active = tokio::select! {
                active = handled => active,
                _ = control.read(&mut control_byte) => return,
                () = connection.evicted() => return,
            };
            // Only the client and the remotes it wrote to keep an association alive.
            if active {
                idle_timer.as_mut().reset(Instant::now() + idle);
                connection.touch();
            }
        }
    }

    /// A datagram on the client's socket; true if it came from the client.
    async fn on_client_socket(&mut self, bytes: &[u8], from: SocketAddr) -> bool {
        if Some(from) == self.client {
            self.outgoing(bytes).await;
            return true;
        }
        let from_client_host = from.ip() == self.scope.client.ip();
        let port_fits = self.client_port.is_none_or(|port| port == from.port());
        if self.client.is_none() && from_client_host && port_fits {
            self.client = Some(from);
            self.outgoing(bytes).await;
            return true;
        }
        // Anyone else: dropped.
        false
    }

    /// A datagram on a remote socket; relayed (and true) only from a remote the client wrote to,
    /// while the policy in force still allows it.
    async fn on_remote_socket(&mut self, bytes: &[u8], from: SocketAddr) -> bool {
        let Some(remote) = self.contacted.get(from) else {
            return false;
        };
        if remote
            .refusal(self.proxy.engine.snapshot().as_ref())
            .is_some()
        {
            // Refused since the client wrote to it: its answers stop here.
            self.contacted.forget(from);
            return false;
        }
        self.incoming(bytes, from).await;
        true
    }

    /// `RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA` from the client: decide, vet, send. The datagram
    /// counts as allowed (and is logged so with `log_allowed`) only once it was sent: a failed
    /// send is like a failed dial, not a block and not a delivery, so it is not logged.
    async fn outgoing(&mut self, bytes: &[u8]) {
        let Some((target, payload)) = self.parse(bytes) else {
            return;
        };
        // Every datagram is decided on its own, under the policy in force as it arrives: an
        // association can outlive any number of policy changes.
        let scope = &Scope {
            engine: self.proxy.engine.snapshot(),
            ..self.scope.clone()
        };
        let Some((decision, remote)) = self.vet(scope, target).await else {
            return;
        };
        let Some(destination) = remote.peer else {
            return;
        };
        let sent = match self.remotes.socket_for(destination).await {
            Ok(socket) => socket.send_to(payload, destination).await,
            Err(error) => Err(error),
        };
        if let Err(error) = sent {
            tracing::debug!(%destination, %error, "SOCKS5 UDP datagram not sent");
            return;
        }
        self.proxy
            .allowed(scope, decision, &remote.target, Protocol::Socks5Udp);
        self.contacted.wrote_to(destination, remote);
    }

    /// The target and payload of a client datagram; an invalid target is recorded as a block.
    fn parse<'b>(&self, bytes: &'b [u8]) -> Option<(Target, &'b [u8])> {
        // Fragments (FRAG != 0) are not reassembled: dropped, as RFC 1928 allows.
        let Some((&[0, 0, 0], rest)) = bytes.split_first_chunk::<3>() else {
            return None;
        };
        let Ok(Some((address, used))) = Address::parse(rest) else {
            return None;
        };
        match address.to_target() {
            Ok(target) => Some((target, &rest[used..])),
            Err(error) => {
                let (host, port) = (address.raw_host(), address.port());
                let decision = Decision::invalid_target(error);
                self.proxy
                    .record(self.scope, decision, host, port, Protocol::Socks5Udp);
                None
            }
        }
    }

    /// Decides `target` and vets its addresses through the shared dialer; a refusal is recorded.
    /// What is allowed comes back as the remote it will be written to.
    async fn vet(&self, scope: &Scope, target: Target) -> Option<(Decision, TunnelInfo)> {
        let request = Request::new(&target, "UDP", Protocol::Socks5Udp);
        let ruling = self.proxy.decide(scope, &request).await;
        if !ruling.decision.is_allowed() {
            self.proxy
                .record_held(scope, ruling, &target, Protocol::Socks5Udp);
            return None;
        }
        let decision = ruling.decision;
        let engine = scope.engine.as_ref();
        let addrs = match self
            .proxy
            .dialer
            .resolve_vetted(engine, &target, &scope.client_key())
            .await
        {
            Ok(addrs) => addrs,
            Err(listeners::DialError::Blocked(refusal)) => {
                self.proxy
                    .block(scope, refusal, &target, Protocol::Socks5Udp);
                return None;
            }
            Err(_) => return None,
        };
        let approved = is_approved(engine, self.proxy.holder.as_deref(), &request, &decision);
        let remote = TunnelInfo {
            approved,
            peer: Some(SocketAddr::new(addrs[0], target.port())),
            target,
            protocol: Protocol::Socks5Udp,
            inspected: false,
            attempt: scope.attempt.as_deref().map(Arc::from),
        };
        Some((decision, remote))
    }

    /// A remote's answer, wrapped with its address, back to the client.
    async fn incoming(&mut self, bytes: &[u8], from: SocketAddr) {
        let Some(client) = self.client else { return };
        let mut datagram = vec![0, 0, 0];
        encode_addr(from, &mut datagram);
        datagram.extend_from_slice(bytes);
        let _ = self.client_socket.send_to(&datagram, client).await;
    }
}

/// Resolves when `socket` has a datagram; never without a socket.
async fn readable(socket: Option<&UdpSocket>) -> io::Result<()> {
    match socket {
        Some(socket) => socket.readable().await,
        None => std::future::pending().await,
    }
}

/// The sockets remotes are written to from, bound to the unspecified address of their family so
/// the kernel picks the route (and source address) for each destination.
#[derive(Default)]
struct Remotes {
    v4: Option<UdpSocket>,
    v6: Option<UdpSocket>,
}

impl Remotes {
    fn get(&self, family: Family) -> Option<&UdpSocket> {
        match family {
            Family::V4 => self.v4.as_ref(),
            Family::V6 => self.v6.as_ref(),
        }
    }

    /// The socket that writes to `destination`, bound on first use.
    async fn socket_for(&mut self, destination: SocketAddr) -> io::Result<&UdpSocket> {
        let (slot, unspecified) = match destination {
            SocketAddr::V4(_) => (&mut self.v4, IpAddr::from(Ipv4Addr::UNSPECIFIED)),
            SocketAddr::V6(_) => (&mut self.v6, IpAddr::from(Ipv6Addr::UNSPECIFIED)),
        };
        let socket = match slot.take() {
            Some(socket) => socket,
            None => UdpSocket::bind((unspecified, 0)).await?,
        };
        Ok(slot.insert(socket))
    }
}

/// The remotes an association wrote to, at most `MAX_REMOTES`, in the order they were last written
/// to (the first is forgotten first).
#[derive(Default)]
struct Contacted(IndexMap<SocketAddr, TunnelInfo>);

impl Contacted {
    fn get(&self, remote: SocketAddr) -> Option<&TunnelInfo> {
        self.0.get(&remote)
    }

    fn wrote_to(&mut self, remote: SocketAddr, info: TunnelInfo) {
        let (index, _) = self.0.insert_full(remote, info);
        let last = self.0.len() - 1;
        self.0.move_index(index, last);
        if self.0.len() > MAX_REMOTES {
            self.0.shift_remove_index(0);
        }
    }

    fn forget(&mut self, remote: SocketAddr) {
        self.0.shift_remove(&remote);
    }
}
