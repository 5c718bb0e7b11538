//! UDP ASSOCIATE (SPEC §6, only with `socks.udp = true`): a relay socket per association, every
//! datagram decided on its own, datagrams from anyone but the associating client (or a remote it
//! wrote to) dropped, the association closed with its TCP control connection.

use std::{collections::HashMap, net::SocketAddr};

use listeners::TunnelInfo;
use policy::{is_approved, Decision, Protocol, Request};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};

use crate::{
    proxy::{Scope, SocksProxy},
    reply::{reply, Outcome},
    wire::{encode_addr, Address},
};

/// The largest datagram relayed.
const MAX_DATAGRAM: usize = 64 * 1024;

pub(crate) async fn associate(
    proxy: &SocksProxy,
    scope: &Scope,
    mut control: TcpStream,
    requested: Address,
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
        socket,
        client: None,
        client_port: match requested {
            Address::Ip(addr) if addr.port() != 0 => Some(addr.port()),
            Address::Ip(_) | Address::Domain(..) => None,
        },
        contacted: HashMap::new(),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut control_byte = [0u8; 1];
    loop {
        tokio::select! {
            // Any byte or the end of the control connection ends the association.
            _ = control.read(&mut control_byte) => break,
            received = association.socket.recv_from(&mut buf) => match received {
                Ok((len, from)) => association.datagram(&buf[..len], from).await,
                Err(_) => break,
            },
        }
    }
}

struct Association<'a> {
    proxy: &'a SocksProxy,
    scope: &'a Scope,
    socket: UdpSocket,
    /// The client's UDP address, once known.
    client: Option<SocketAddr>,
    /// The port the client announced in its request, if any.
    client_port: Option<u16>,
    /// Remotes the client wrote to, with what they were decided as: the only ones whose answers
    /// are relayed back, and only while the policy in force still allows them.
    contacted: HashMap<SocketAddr, TunnelInfo>,
}

impl Association<'_> {
    async fn datagram(&mut self, bytes: &[u8], from: SocketAddr) {
        if Some(from) == self.client {
            return self.outgoing(bytes).await;
        }
        if let Some(remote) = self.contacted.get(&from) {
            if remote
                .refusal(self.proxy.engine.snapshot().as_ref())
                .is_some()
            {
                // Refused since the client wrote to it: its answers stop here.
                self.contacted.remove(&from);
                return;
            }
            return self.incoming(bytes, from).await;
        }
        let from_client_host = from.ip() == self.scope.client.ip();
        let port_fits = self.client_port.is_none_or(|port| port == from.port());
        if self.client.is_none() && from_client_host && port_fits {
            self.client = Some(from);
            self.outgoing(bytes).await;
        }
        // Anyone else: dropped.
    }

    /// `RSV RSV FRAG ATYP DST.ADDR DST.PORT DATA` from the client: decide, vet, send.
    async fn outgoing(&mut self, bytes: &[u8]) {
        // Fragments (FRAG != 0) are not reassembled: dropped, as RFC 1928 allows.
        let Some((&[0, 0, 0], rest)) = bytes.split_first_chunk::<3>() else {
            return;
        };
        let Ok(Some((address, used))) = Address::parse(rest) else {
            return;
        };
        let payload = &rest[used..];
        let target = match address.to_target() {
            Ok(target) => target,
            Err(error) => {
                let (host, port) = (address.raw_host(), address.port());
                self.proxy.record(
                    self.scope,
                    Decision::invalid_target(error),
                    host,
                    port,
                    Protocol::Socks5Udp,
                );
                return;
            }
        };
        // Every datagram is decided on its own, under the policy in force as it arrives: an
        // association can outlive any number of policy changes.
        let scope = &Scope {
            engine: self.proxy.engine.snapshot(),
            ..self.scope.clone()
        };
        let request = Request::new(&target, "UDP", Protocol::Socks5Udp);
        let decision = self.proxy.decide(scope, &request).await;
        if !decision.is_allowed() {
            return self
                .proxy
                .block(scope, decision, &target, Protocol::Socks5Udp);
        }
        let engine = scope.engine.as_ref();
        let addrs = match self.proxy.dialer.resolve_vetted(engine, &target).await {
            Ok(addrs) => addrs,
            Err(listeners::DialError::Blocked(decision)) => {
                return self
                    .proxy
                    .block(scope, decision, &target, Protocol::Socks5Udp)
            }
            Err(_) => return,
        };
        let approved = is_approved(
            scope.engine.as_ref(),
            self.proxy.decider.as_deref(),
            &request,
            &decision,
        );
        self.proxy
            .allowed(scope, decision, &target, Protocol::Socks5Udp);
        let destination = SocketAddr::new(addrs[0], target.port());
        let remote = TunnelInfo {
            approved,
            target,
            protocol: Protocol::Socks5Udp,
            peer: Some(destination),
            inspected: false,
        };
        self.contacted.insert(destination, remote);
        let _ = self.socket.send_to(payload, destination).await;
    }

    /// A remote's answer, wrapped with its address, back to the client.
    async fn incoming(&mut self, bytes: &[u8], from: SocketAddr) {
        let Some(client) = self.client else { return };
        let mut datagram = vec![0, 0, 0];
        encode_addr(from, &mut datagram);
        datagram.extend_from_slice(bytes);
        let _ = self.socket.send_to(&datagram, client).await;
    }
}
