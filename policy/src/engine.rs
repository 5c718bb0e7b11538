//! The boundary traits the proxies talk through (SPEC §1.6): a `PolicyEngine` decides, a
//! `DecisionSink` records. Both are object-safe and held as `Arc<dyn _>`.

use std::{
    fmt,
    future::Future,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
};

use crate::{
    ask::{AnswerEvent, Held, Hold, Holder, Ruling},
    decision::{Decision, Mode, Protocol, Request},
    explain::Explanation,
    host::Target,
    policy::Policy,
};

/// Decides requests. Implemented by `Policy`; `bin` wraps it for atomic hot-swap.
pub trait PolicyEngine: fmt::Debug + Send + Sync {
    /// The pre-DNS decision (SPEC §1.3).
    fn decide(&self, request: &Request<'_>) -> Decision;

    /// The decision once an `ask` was approved: every step but the allowlist (see `Decider`).
    fn decide_approved(&self, request: &Request<'_>, approval: Arc<str>) -> Decision;

    /// The post-DNS check of every resolved address (SPEC §1.4).
    fn vet(&self, target: &Target, addrs: &[IpAddr]) -> Decision;

    /// The decision with its trace (SPEC §1.5).
    fn explain(&self, request: &Request<'_>) -> Explanation;

    /// The mode in force.
    fn mode(&self) -> Mode;

    /// Whether an allowed tunnel to `target` is intercepted rather than relayed raw.
    fn inspects(&self, target: &Target) -> bool;

    /// The policy in force now, held for the rest of one request so that its decision and its
    /// post-DNS check see the same rules even if the policy is swapped in between.
    fn snapshot(&self) -> Arc<dyn PolicyEngine>;
}

impl PolicyEngine for Policy {
    fn decide(&self, request: &Request<'_>) -> Decision {
        Policy::decide(self, request)
    }

    fn decide_approved(&self, request: &Request<'_>, approval: Arc<str>) -> Decision {
        Policy::decide_approved(self, request, approval)
    }

    fn vet(&self, target: &Target, addrs: &[IpAddr]) -> Decision {
        Policy::vet(self, target, addrs)
    }

    fn explain(&self, request: &Request<'_>) -> Explanation {
        Policy::explain(self, request)
    }

    fn mode(&self) -> Mode {
        Policy::mode(self)
    }

    fn inspects(&self, target: &Target) -> bool {
        Policy::inspects(self, target)
    }

    fn snapshot(&self) -> Arc<dyn PolicyEngine> {
        Arc::new(self.clone())
    }
}

/// The schema version of every rendering of a `DecisionEvent`: the violation log line and the
/// block response body carry it as `v`, so both change together.
pub const SCHEMA_VERSION: u32 = 1;

/// The id a sink gives an event: the violation log's `seq`, the 403 body's `event`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId(pub u64);

/// One decision, with everything a log line or a 403 body says about it (SPEC §3, §7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DecisionEvent {
    /// Milliseconds the request was held waiting for an answer (SPEC §14), when it was.
    pub held_ms: Option<u64>,
    /// The decision (verdict, reason, rule, addresses).
    pub decision: Decision,
    /// The host as canonicalised, or as the client sent it (escaped by the writer) when invalid.
    pub host: String,
    /// The port, 0 when the target had none.
    pub port: u16,
    /// How the request arrived.
    pub protocol: Protocol,
    /// The method (`CONNECT` for tunnels and SOCKS5).
    pub method: String,
    /// The mode in force.
    pub mode: Mode,
    /// The attempt id from the proxy credentials, if any.
    pub attempt: Option<String>,
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// The request path without its query (HTTP and MITM only).
    pub path: Option<String>,
}

/// Records decisions. `record` returns once the event is handed to durable storage, so a caller
/// may answer the client only afterwards.
pub trait DecisionSink: fmt::Debug + Send + Sync {
    /// Records one event and returns its id.
    fn record(&self, event: &DecisionEvent) -> EventId;

    /// Whether allowed decisions should be recorded too (`log_allowed`); callers skip building
    /// events for allowed requests otherwise.
    fn wants_allowed(&self) -> bool {
        false
    }

    /// An allowed decision that is not recorded (so metrics still count it). Must be cheap.
    fn allowed(&self, protocol: Protocol) {
        let _ = protocol;
    }

    /// Records the outcome of a held ask (SPEC §14 "Log"); sinks that keep no file drop it.
    fn record_answer(&self, answer: &AnswerEvent) -> EventId {
        let _ = answer;
        EventId(0)
    }
}

/// Drops every event; ids still count up so responses stay distinct.
#[derive(Debug, Default)]
pub struct NoopSink {
    next: AtomicU64,
}

impl DecisionSink for NoopSink {
    fn record(&self, _: &DecisionEvent) -> EventId {
        EventId(self.next.fetch_add(1, Ordering::Relaxed) + 1)
    }
}

/// Keeps every event in memory, for tests and embedding.
#[derive(Debug, Default)]
pub struct MemorySink {
    events: Mutex<Vec<(EventId, DecisionEvent)>>,
}

impl MemorySink {
    /// A copy of the events recorded so far, oldest first.
    pub fn events(&self) -> Vec<(EventId, DecisionEvent)> {
        self.events.lock().expect("memory sink poisoned").clone()
    }
}

impl DecisionSink for MemorySink {
    fn record(&self, event: &DecisionEvent) -> EventId {
        let mut events = self.events.lock().expect("memory sink poisoned");
        let id = EventId(events.len() as u64 + 1);
        events.push((id, event.clone()));
        id
    }
}

/// What a `Decider` is asked about.
#[derive(Clone, Debug)]
pub struct AskContext<'a> {
    /// The request that no rule allows.
    pub request: &'a Request<'a>,
    /// Who made it.
    pub attempt: Option<&'a str>,
    /// The client's address.
    pub client: Option<SocketAddr>,
    /// The request path without its query (HTTP and MITM only).
    pub path: Option<&'a str>,
}

/// A `Decider`'s answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answer {
    /// Let it through (the rest of the policy still applies: deny rules, local, mode).
    Allow,
    /// Refuse it (`declined`).
    Deny,
    /// Keep the `ask`.
    Ask,
}

/// An optional hook that may turn an `ask` into `allow` or `deny` — for example by asking a person.
/// It is consulted only for `ask`: it can never loosen a `deny`.
pub trait Decider: fmt::Debug + Send + Sync {
    /// The answer for one request that no rule allows.
    fn decide<'a>(
        &'a self,
        ask: AskContext<'a>,
    ) -> Pin<Box<dyn Future<Output = Answer> + Send + 'a>>;
}

/// The rule an allow approved by a `Decider` names.
pub const APPROVED_BY: &str = "decider";

/// Whether an allowed `decision` for `request` stands on an approval, not on a rule (the engine
/// alone would not allow it). Tunnels remember it for later policy changes. Without a holder
/// nothing is ever approved, and the engine is not asked twice.
pub fn is_approved(
    engine: &dyn PolicyEngine,
    holder: Option<&dyn Holder>,
    request: &Request<'_>,
    decision: &Decision,
) -> bool {
    holder.is_some() && decision.is_allowed() && !engine.decide(request).is_allowed()
}

/// `engine.decide`, then holding an `ask` until someone answers: the one place both are
/// combined, for every protocol. An approval goes through `decide_approved`, which keeps every
/// step but the allowlist.
pub async fn decide_with(
    engine: &dyn PolicyEngine,
    holder: Option<&dyn Holder>,
    ask: AskContext<'_>,
) -> Ruling {
    let request = ask.request;
    let decision = engine.decide(request);
    let (Decision::Ask(_), Some(holder)) = (&decision, holder) else {
        return Ruling {
            decision,
            held_ms: None,
        };
    };
    let Held { hold, held_ms } = holder.hold(ask).await;
    let decision = match hold {
        Hold::Approved => engine.decide_approved(request, Arc::from(APPROVED_BY)),
        Hold::Declined => Decision::Deny(crate::BlockReason::Declined),
        Hold::Unanswered => decision,
        Hold::Redecided(decision) => decision,
    };
    Ruling { decision, held_ms }
}
