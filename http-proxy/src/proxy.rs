//! The proxy's shared state and the entry point of every request: authenticate, then hand over to
//! `CONNECT` or absolute-form forwarding. Blocks are recorded here, before the answer is built.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use hyper::{body::Incoming, Method, Request, Response};
use listeners::{ClientKey, Connection, Dialer, RelayMode};
use mitm::Interception;
use policy::{
    decide_with, AskContext, Attempts, BlockReason, Decision, DecisionEvent, DecisionSink, Holder,
    PolicyEngine, Protocol, ProxyAuth, Request as PolicyRequest, Ruling,
};

use crate::{
    auth::{authenticate, AuthFailure},
    connect,
    credentials::Credentials,
    forward,
    framing::HeadRefusal,
    pool::{UpstreamCache, UpstreamPool},
    response::{auth_challenge, blocked_response, refused_head_response, ProxyBody},
};

/// Limits for client connections (SPEC §3).
#[derive(Clone, Debug)]
pub struct Limits {
    /// Time allowed to send a request head, and to start the next one on a kept-alive connection.
    pub header_timeout: Duration,
    /// Time a `CONNECT` tunnel may stay silent in both directions.
    pub idle_timeout: Duration,
    /// Time an upstream has to answer a forwarded request (its response head).
    pub upstream_timeout: Duration,
    /// The largest request head accepted (larger gets `431`); at least 8 KiB.
    pub max_request_head: usize,
    /// Client connections served at once; more are closed on accept.
    pub max_connections: usize,
    /// How tunnel bytes are moved.
    pub relay: RelayMode,
}

/// The HTTP proxy: what every connection shares.
#[derive(Debug)]
pub struct HttpProxy {
    pub(crate) engine: Arc<dyn PolicyEngine>,
    pub(crate) sink: Arc<dyn DecisionSink>,
    pub(crate) dialer: Dialer,
    pub(crate) token: Option<String>,
    /// With bound attempts (SPEC §18) the credentials are checked against these, not `token`.
    pub(crate) attempts: Option<Arc<Attempts>>,
    pub(crate) limits: Limits,
    pub(crate) mitm: Option<Arc<Interception>>,
    /// Kept-alive upstream connections, shared by every client connection.
    pub(crate) pool: Arc<UpstreamPool>,
    /// Holds an `ask` until someone answers (SPEC §14); none: refused at once.
    pub(crate) holder: Option<Arc<dyn Holder>>,
    /// Credential placeholders and header rules (SPEC §17).
    pub(crate) credentials: Arc<Credentials>,
}

/// What one request carries besides the request itself.
#[derive(Clone, Debug)]
pub(crate) struct Scope {
    /// The policy in force when the request arrived; the whole request uses it.
    pub(crate) engine: Arc<dyn PolicyEngine>,
    pub(crate) client: SocketAddr,
    pub(crate) attempt: Option<String>,
    /// The client connection (for tunnels, which keep it busy); none inside an intercepted tunnel.
    pub(crate) connection: Option<Arc<Connection>>,
}

impl Scope {
    /// Whom this request's DNS lookups count against (see `listeners::ClientKey`).
    pub(crate) fn client_key(&self) -> ClientKey {
        ClientKey::new(self.attempt.as_deref(), self.client.ip())
    }
}

/// What a block names, before it becomes a `DecisionEvent`.
#[derive(Debug)]
pub(crate) struct Subject<'a> {
    pub(crate) host: String,
    pub(crate) port: u16,
    pub(crate) protocol: Protocol,
    pub(crate) method: &'a str,
    pub(crate) path: Option<&'a str>,
}

impl HttpProxy {
    /// A proxy deciding with `engine`, recording to `sink`, dialing with `dialer`; `token`, when
    /// set, is the proxy password every request must carry.
    pub fn new(
        engine: Arc<dyn PolicyEngine>,
        sink: Arc<dyn DecisionSink>,
        dialer: Dialer,
        token: Option<String>,
        limits: Limits,
    ) -> HttpProxy {
        HttpProxy {
            engine,
            sink,
            dialer,
            token: token.filter(|t| !t.is_empty()),
            attempts: None,
            limits,
            mitm: None,
            pool: Arc::default(),
            holder: None,
            credentials: Arc::default(),
        }
    }

    /// Substitutes credentials, refuses their placeholders elsewhere, and applies header rules
    /// (SPEC §17) in every allowed request, plain or intercepted.
    pub fn with_credentials(mut self, credentials: Arc<Credentials>) -> HttpProxy {
        self.credentials = credentials;
        self
    }

    /// Checks credentials against bound attempts (`auth.attempts = "bound"`) instead of the token.
    pub fn with_bound_attempts(mut self, attempts: Arc<Attempts>) -> HttpProxy {
        self.attempts = Some(attempts);
        self
    }

    /// How this request's credentials are checked, judged now.
    fn proxy_auth(&self) -> ProxyAuth<'_> {
        ProxyAuth::now(self.attempts.as_deref(), self.token.as_deref())
    }

    /// Holds every `ask` in `holder` until an approver answers (it can never loosen a `deny`).
    pub fn with_holder(mut self, holder: Arc<dyn Holder>) -> HttpProxy {
        self.holder = Some(holder);
        self
    }

    /// The policy's decision, held for an answer on an `ask`; `path` (without its query) is what
    /// a person deciding sees of an HTTP request.
    pub(crate) async fn decide(
        &self,
        scope: &Scope,
        request: &PolicyRequest<'_>,
        path: Option<&str>,
    ) -> Ruling {
        let ask = AskContext {
            request,
            attempt: scope.attempt.as_deref(),
            client: Some(scope.client),
            path,
        };
        decide_with(scope.engine.as_ref(), self.holder.as_deref(), ask).await
    }

    /// Intercepts TLS where the policy wants inspection (SPEC §5).
    pub fn with_interception(mut self, mitm: Arc<Interception>) -> HttpProxy {
        self.mitm = Some(mitm);
        self
    }

    pub(crate) async fn handle(
        self: Arc<Self>,
        req: Request<Incoming>,
        client: SocketAddr,
        cache: Arc<UpstreamCache>,
        refused_head: Option<HeadRefusal>,
        connection: Arc<Connection>,
    ) -> Response<ProxyBody> {
        let engine = self.engine.snapshot();
        if let Some(refusal) = refused_head {
            // A head that broke the rules carries no credentials anyone read: refused as it is.
            let scope = Scope {
                engine,
                client,
                attempt: None,
                connection: None,
            };
            let protocol = match refusal.method == "CONNECT" {
                true => Protocol::Connect,
                false => Protocol::Http,
            };
            return self.refuse_head(&scope, &refusal, protocol);
        }
        let attempt = match authenticate(req.headers(), self.proxy_auth()) {
            Ok(attempt) => attempt,
            Err(failure) => return self.refuse_credentials(failure, engine, client, &req),
        };
        let scope = Scope {
            engine,
            client,
            attempt,
            connection: Some(connection),
        };
        match *req.method() == Method::CONNECT {
            true => connect::handle(&self, scope, req).await,
            false => forward::handle(&self, &scope, req, &cache).await,
        }
    }

    /// A head the gate refused (`framing.rs`): logged as `invalid_request`, answered `400` (or
    /// `431`, `414`, `505`) and closed, outside a tunnel or inside an intercepted one.
    pub(crate) fn refuse_head(
        &self,
        scope: &Scope,
        refusal: &HeadRefusal,
        protocol: Protocol,
    ) -> Response<ProxyBody> {
        let subject = Subject {
            host: String::new(),
            port: 0,
            protocol,
            method: &refusal.method,
            path: Some(&refusal.target),
        };
        let reason = BlockReason::InvalidRequest {
            detail: refusal.detail.clone(),
        };
        let event = self.event(scope, Decision::Deny(reason), &subject);
        let id = self.sink.record(&event);
        refused_head_response(&event, id, refusal.status)
    }

    fn refuse_credentials(
        &self,
        failure: AuthFailure,
        engine: Arc<dyn PolicyEngine>,
        client: SocketAddr,
        req: &Request<Incoming>,
    ) -> Response<ProxyBody> {
        let reason = match failure {
            AuthFailure::Missing => return auth_challenge(),
            AuthFailure::BadToken => BlockReason::AuthFailed,
            AuthFailure::Malformed => BlockReason::InvalidRequest {
                detail: "malformed Proxy-Authorization or attempt id".to_owned(),
            },
        };
        let scope = Scope {
            engine,
            client,
            attempt: None,
            connection: None,
        };
        let authority = req
            .uri()
            .authority()
            .map(|a| a.as_str().to_owned())
            .unwrap_or_default();
        let protocol = match *req.method() == Method::CONNECT {
            true => Protocol::Connect,
            false => Protocol::Http,
        };
        let subject = Subject {
            host: authority,
            port: 0,
            protocol,
            method: req.method().as_str(),
            path: None,
        };
        self.block(&scope, Decision::Deny(reason), &subject)
    }

    /// Records a block, then answers it: the log line exists before the client hears anything.
    pub(crate) fn block(
        &self,
        scope: &Scope,
        decision: Decision,
        subject: &Subject<'_>,
    ) -> Response<ProxyBody> {
        self.block_held(
            scope,
            Ruling {
                decision,
                held_ms: None,
            },
            subject,
        )
    }

    /// `block` for a decision that may have been held (its `held_ms` goes into the log line and
    /// the body).
    pub(crate) fn block_held(
        &self,
        scope: &Scope,
        ruling: Ruling,
        subject: &Subject<'_>,
    ) -> Response<ProxyBody> {
        let mut event = self.event(scope, ruling.decision, subject);
        event.held_ms = ruling.held_ms;
        let id = self.sink.record(&event);
        blocked_response(&event, id)
    }

    /// Records an allowed decision when the sink wants those too; counts it either way.
    /// `subject` is only built when the sink keeps allowed decisions: allowed requests are the
    /// hot path.
    pub(crate) fn record_allowed<'s>(
        &self,
        scope: &Scope,
        decision: Decision,
        protocol: Protocol,
        subject: impl FnOnce() -> Subject<'s>,
    ) {
        match self.sink.wants_allowed() {
            true => {
                self.sink.record(&self.event(scope, decision, &subject()));
            }
            false => self.sink.allowed(protocol),
        }
    }

    fn event(&self, scope: &Scope, decision: Decision, subject: &Subject<'_>) -> DecisionEvent {
        DecisionEvent {
            decision,
            host: subject.host.clone(),
            port: subject.port,
            protocol: subject.protocol,
            method: subject.method.to_owned(),
            mode: scope.engine.mode(),
            attempt: scope.attempt.clone(),
            client: Some(scope.client),
            path: subject.path.map(str::to_owned),
            held_ms: None,
        }
    }
}
