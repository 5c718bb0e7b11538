//! One SOCKS5 connection: handshake, decision, dial, reply, relay. Every block is recorded before
//! the reply that announces it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use listeners::{
    relay_sockets, ClientKey, Connection, DialError, Dialer, Early, Interceptor, RelayMode,
    TunnelHandle, TunnelInfo,
};
use policy::{
    decide_with, is_approved, AskContext, Attempts, BlockReason, CredentialError, Decision,
    DecisionEvent, DecisionSink, Holder, PolicyEngine, Protocol, ProxyAuth, Request, Ruling,
    Target,
};
use tokio::{io::AsyncWriteExt, net::TcpStream};

use crate::{
    handshake::{greet, read_request, Command, HandshakeError},
    reply::{reply, Outcome},
    udp,
    wire::Address,
};

/// What a SOCKS5 server is configured with.
#[derive(Clone, Debug)]
pub struct SocksOptions {
    /// The proxy password clients must send (RFC 1929); `None` allows no-auth.
    pub token: Option<String>,
    /// Allow UDP ASSOCIATE.
    pub udp: bool,
    /// Time a client has to finish the handshake.
    pub handshake_timeout: Duration,
    /// Time a tunnel or a UDP association may stay silent.
    pub idle_timeout: Duration,
    /// Client connections served at once.
    pub max_connections: usize,
    /// How tunnel bytes are moved.
    pub relay: RelayMode,
}

/// The SOCKS5 proxy: what every connection shares.
#[derive(Debug)]
pub struct SocksProxy {
    pub(crate) engine: Arc<dyn PolicyEngine>,
    sink: Arc<dyn DecisionSink>,
    pub(crate) dialer: Dialer,
    pub(crate) options: SocksOptions,
    interceptor: Option<Arc<dyn Interceptor>>,
    /// Holds an `ask` until someone answers (SPEC §14); none: refused at once.
    pub(crate) holder: Option<Arc<dyn Holder>>,
    /// With bound attempts (SPEC §18) the credentials are checked against these, not the token.
    attempts: Option<Arc<Attempts>>,
}

/// One request's view: its policy snapshot, client and attempt.
#[derive(Clone, Debug)]
pub(crate) struct Scope {
    pub(crate) engine: Arc<dyn PolicyEngine>,
    pub(crate) client: SocketAddr,
    pub(crate) attempt: Option<String>,
}

impl Scope {
    /// Whom this request's DNS lookups count against (see `listeners::ClientKey`).
    pub(crate) fn client_key(&self) -> ClientKey {
        ClientKey::new(self.attempt.as_deref(), self.client.ip())
    }
}

impl SocksProxy {
    /// A proxy deciding with `engine`, recording to `sink`, dialing with `dialer`.
    pub fn new(
        engine: Arc<dyn PolicyEngine>,
        sink: Arc<dyn DecisionSink>,
        dialer: Dialer,
        options: SocksOptions,
    ) -> SocksProxy {
        let token = options.token.clone().filter(|t| !t.is_empty());
        SocksProxy {
            engine,
            sink,
            dialer,
            options: SocksOptions { token, ..options },
            interceptor: None,
            holder: None,
            attempts: None,
        }
    }

    /// Checks credentials against bound attempts (`auth.attempts = "bound"`) instead of the token.
    pub fn with_bound_attempts(mut self, attempts: Arc<Attempts>) -> SocksProxy {
        self.attempts = Some(attempts);
        self
    }

    /// How a handshake's credentials are checked, judged now.
    fn proxy_auth(&self) -> ProxyAuth<'_> {
        ProxyAuth::now(self.attempts.as_deref(), self.options.token.as_deref())
    }

    /// Holds every `ask` in `holder` until an approver answers (it can never loosen a `deny`).
    pub fn with_holder(mut self, holder: Arc<dyn Holder>) -> SocksProxy {
        self.holder = Some(holder);
        self
    }

    /// The policy's decision, held for an answer on an `ask`.
    pub(crate) async fn decide(&self, scope: &Scope, request: &Request<'_>) -> Ruling {
        let ask = AskContext {
            request,
            attempt: scope.attempt.as_deref(),
            client: Some(scope.client),
            path: None,
        };
        decide_with(scope.engine.as_ref(), self.holder.as_deref(), ask).await
    }

    /// Where inspected streams go (TLS interception).
    pub fn with_interceptor(mut self, interceptor: Arc<dyn Interceptor>) -> SocksProxy {
        self.interceptor = Some(interceptor);
        self
    }

    pub(crate) async fn handle(
        self: Arc<Self>,
        mut stream: TcpStream,
        client: SocketAddr,
        connection: Arc<Connection>,
    ) {
        let mut scope = Scope {
            engine: self.engine.snapshot(),
            client,
            attempt: None,
        };
        let handshake = async {
            let authenticated = greet(&mut stream)
                .await?
                .negotiate(&mut stream, self.proxy_auth())
                .await?;
            scope.attempt = authenticated.attempt;
            read_request(&mut stream).await
        };
        // A connection still shaking hands is idle: the accept loop may evict it to make room.
        let outcome = tokio::select! {
            outcome = tokio::time::timeout(self.options.handshake_timeout, handshake) => outcome,
            () = connection.evicted() => return,
        };
        let requested = match outcome {
            Ok(Ok(requested)) => requested,
            Ok(Err(error)) => return self.handshake_failed(&scope, &mut stream, error).await,
            Err(_) => return,
        };
        // The policy in force when the request arrived, not when the connection did: a handshake
        // may take a while, and a policy change in between must reach this request.
        scope.engine = self.engine.snapshot();
        match requested.command {
            Command::Connect => {
                let _busy = connection.busy();
                self.connect(&scope, stream, requested.address).await
            }
            // An association is idle between datagrams (it marks its own activity), so the
            // accept loop can evict it like an idle keep-alive connection.
            Command::UdpAssociate if self.options.udp => {
                udp::associate(&self, &scope, stream, requested.address, &connection).await
            }
            Command::Bind | Command::UdpAssociate | Command::Unknown => {
                let _ = stream
                    .write_all(&reply(&Outcome::CommandNotSupported, None))
                    .await;
            }
        }
    }

    async fn handshake_failed(&self, scope: &Scope, stream: &mut TcpStream, error: HandshakeError) {
        let reason = match error {
            HandshakeError::NotSocks5 { first } => BlockReason::InvalidRequest {
                detail: format!("not SOCKS5 (first byte 0x{first:02x}; SOCKS4/4a and other protocols are refused)"),
            },
            HandshakeError::NoAcceptableMethod | HandshakeError::Credentials(CredentialError::BadToken) => BlockReason::AuthFailed,
            HandshakeError::Credentials(_) => BlockReason::InvalidRequest {
                detail: "malformed username (attempt id)".to_owned(),
            },
            HandshakeError::Malformed(detail) => BlockReason::InvalidRequest { detail: detail.to_owned() },
            HandshakeError::AddressType => {
                let _ = stream.write_all(&reply(&Outcome::AddressTypeNotSupported, None)).await;
                return;
            }
            HandshakeError::Io => return,
        };
        self.record(
            scope,
            Decision::Deny(reason),
            String::new(),
            0,
            Protocol::Socks5,
        );
    }

    async fn connect(&self, scope: &Scope, mut stream: TcpStream, address: Address) {
        let target = match address.to_target() {
            Ok(target) => target,
            Err(error) => {
                let refused = reply(
                    &Outcome::Blocked(&BlockReason::InvalidTarget(error.clone())),
                    None,
                );
                self.record(
                    scope,
                    Decision::invalid_target(error),
                    address.raw_host(),
                    address.port(),
                    Protocol::Socks5,
                );
                let _ = stream.write_all(&refused).await;
                return;
            }
        };
        let request = Request::new(&target, "CONNECT", Protocol::Socks5);
        // A client that goes away while its request is held stops waiting (SPEC §14).
        let ruling = tokio::select! {
            ruling = self.decide(scope, &request) => ruling,
            () = closed(&stream) => return,
        };
        if !ruling.decision.is_allowed() {
            let refused = reply(&Outcome::refused(&ruling.decision), None);
            self.record_held(scope, ruling, &target, Protocol::Socks5);
            let _ = stream.write_all(&refused).await;
            return;
        }
        let decision = ruling.decision;
        let approved = is_approved(
            scope.engine.as_ref(),
            self.holder.as_deref(),
            &request,
            &decision,
        );
        if scope.engine.inspects(&target) {
            return self
                .intercept(scope, stream, (decision, approved), target)
                .await;
        }
        let (upstream, peer) = match self
            .dialer
            .dial(scope.engine.as_ref(), &target, &scope.client_key())
            .await
        {
            Ok(dialed) => (dialed.stream, dialed.peer),
            Err(error) => {
                if let DialError::Blocked(decision) = &error {
                    self.block(scope, decision.clone(), &target, Protocol::Socks5);
                }
                let _ = stream.write_all(&reply(&Outcome::Dial(&error), None)).await;
                return;
            }
        };
        let info = TunnelInfo {
            // The vetted address, which is what a policy change re-vets (none when the upstream
            // proxy resolved the name).
            peer,
            target: target.clone(),
            protocol: Protocol::Socks5,
            inspected: false,
            approved,
            attempt: scope.attempt.as_deref().map(Arc::from),
        };
        let Some(tunnel) = self.open_tunnel(scope, &mut stream, info, &target).await else {
            return;
        };
        self.allowed(scope, decision, &target, Protocol::Socks5);
        let bound = upstream.local_addr().ok();
        if stream
            .write_all(&reply(&Outcome::Granted, bound))
            .await
            .is_ok()
        {
            let (idle, mode) = (self.options.idle_timeout, self.options.relay);
            relay_sockets(stream, Early::default(), upstream, idle, mode, tunnel).await;
        }
    }

    /// Hands an inspected stream (limited mode, or port 443, with MITM on) to TLS interception,
    /// exactly as a `CONNECT` would be; without an interceptor it is refused, never relayed blind.
    async fn intercept(
        &self,
        scope: &Scope,
        mut stream: TcpStream,
        (decision, approved): (Decision, bool),
        target: Target,
    ) {
        let Some(interceptor) = &self.interceptor else {
            let reason = BlockReason::MitmRequired;
            let refused = reply(&Outcome::Blocked(&reason), None);
            self.block(scope, Decision::Deny(reason), &target, Protocol::Socks5);
            let _ = stream.write_all(&refused).await;
            return;
        };
        let info = TunnelInfo {
            target: target.clone(),
            protocol: Protocol::Socks5,
            peer: None,
            inspected: true,
            approved,
            attempt: scope.attempt.as_deref().map(Arc::from),
        };
        let Some(tunnel) = self.open_tunnel(scope, &mut stream, info, &target).await else {
            return;
        };
        self.allowed(scope, decision, &target, Protocol::Socks5);
        if stream
            .write_all(&reply(&Outcome::Granted, None))
            .await
            .is_ok()
        {
            let attempt = scope.attempt.clone();
            interceptor
                .intercept(stream, target, scope.client, attempt, tunnel)
                .await;
        }
    }

    /// Registers the tunnel, re-checked against the policy in force (a change while this request
    /// was decided or dialled still reaches it); a refusal is a block like any other.
    async fn open_tunnel(
        &self,
        scope: &Scope,
        stream: &mut TcpStream,
        info: TunnelInfo,
        target: &Target,
    ) -> Option<TunnelHandle> {
        match self
            .dialer
            .tunnels()
            .open_checked(info, self.engine.as_ref())
        {
            Ok(tunnel) => Some(tunnel),
            Err(refusal) => {
                let refused = reply(&Outcome::refused(&refusal), None);
                self.block(scope, refusal, target, Protocol::Socks5);
                let _ = stream.write_all(&refused).await;
                None
            }
        }
    }

    /// Records a block of a canonical target.
    pub(crate) fn block(
        &self,
        scope: &Scope,
        decision: Decision,
        target: &Target,
        protocol: Protocol,
    ) {
        self.record(
            scope,
            decision,
            target.host().to_string(),
            target.port(),
            protocol,
        );
    }

    /// Records an allowed decision when the sink wants those too; counts it either way.
    pub(crate) fn allowed(
        &self,
        scope: &Scope,
        decision: Decision,
        target: &Target,
        protocol: Protocol,
    ) {
        match self.sink.wants_allowed() {
            true => self.block(scope, decision, target, protocol),
            false => self.sink.allowed(protocol),
        }
    }

    /// Records a block that may have been held (its `held_ms` goes into the log line).
    pub(crate) fn record_held(
        &self,
        scope: &Scope,
        ruling: Ruling,
        target: &Target,
        protocol: Protocol,
    ) {
        let host = target.host().to_string();
        self.record_event(scope, ruling, host, target.port(), protocol);
    }

    pub(crate) fn record(
        &self,
        scope: &Scope,
        decision: Decision,
        host: String,
        port: u16,
        protocol: Protocol,
    ) {
        let ruling = Ruling {
            decision,
            held_ms: None,
        };
        self.record_event(scope, ruling, host, port, protocol);
    }

    fn record_event(
        &self,
        scope: &Scope,
        ruling: Ruling,
        host: String,
        port: u16,
        protocol: Protocol,
    ) {
        let method = match protocol {
            Protocol::Socks5Udp => "UDP",
            Protocol::Socks5 | Protocol::Connect | Protocol::Http | Protocol::Https => "CONNECT",
        };
        self.sink.record(&DecisionEvent {
            decision: ruling.decision,
            held_ms: ruling.held_ms,
            host,
            port,
            protocol,
            method: method.to_owned(),
            mode: scope.engine.mode(),
            attempt: scope.attempt.clone(),
            client: Some(scope.client),
            path: None,
        });
    }
}

/// Resolves when the client closed its end (a SOCKS5 client sends nothing while it waits for the
/// reply); bytes sent early are left for the relay, and then this never resolves.
async fn closed(stream: &TcpStream) {
    let mut probe = [0u8; 1];
    match stream.peek(&mut probe).await {
        Ok(0) | Err(_) => {}
        Ok(_) => std::future::pending().await,
    }
}
