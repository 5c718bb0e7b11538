//! Asking a person (SPEC §14), as plain data: what an answer says, how far it reaches, who gave it,
//! and what holding a request came to. The holding itself (waiting, merging, timing out) lives in
//! `listeners::held`; this crate only names the values every crate passes around.

use std::{fmt, future::Future, pin::Pin, str::FromStr};

use serde::{Deserialize, Serialize};

use crate::{
    decision::{Decision, Verdict},
    engine::{AskContext, EventId},
};

/// A person's (or a program's) answer to an `ask`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AskAnswer {
    /// Let it through (the rest of the policy still applies).
    Allow,
    /// Refuse it (`declined`).
    Deny,
}

/// How far an answer reaches beyond the requests waiting for it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AskScope {
    /// The waiting requests only.
    Once,
    /// Later requests of the same attempt.
    Attempt,
    /// Later requests until leash exits.
    Session,
    /// Later requests, written to the approvals file.
    Always,
}

/// Who answered (the `by` of the answer line, SPEC §14 "Log").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ApprovedBy {
    /// The approvals page.
    Page,
    /// `POST /pending/{id}`.
    Api,
    /// A decider (socket or the embedder's `Decider`).
    Decider,
    /// The terminal prompt.
    Terminal,
    /// Nobody answered within `ask.hold`.
    Timeout,
    /// A policy change decided it.
    Policy,
}

str_enum!(AskAnswer { Allow = "allow", Deny = "deny" });
str_enum!(AskScope {
    Once = "once",
    Attempt = "attempt",
    Session = "session",
    Always = "always",
});
str_enum!(ApprovedBy {
    Page = "page",
    Api = "api",
    Decider = "decider",
    Terminal = "terminal",
    Timeout = "timeout",
    Policy = "policy",
});

/// What holding an `ask` came to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Hold {
    /// Nobody could answer, or nobody did in time: the `ask` stands.
    Unanswered,
    /// Approved: the request is decided again with the allowlist step skipped.
    Approved,
    /// Refused by whoever answered (`declined`).
    Declined,
    /// A policy change decided it while it was held: this decision, from the new policy.
    Redecided(Decision),
}

/// A `Hold` and how long the request waited (`None` when it was never held).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Held {
    /// What it came to.
    pub hold: Hold,
    /// Milliseconds the request waited, when it waited.
    pub held_ms: Option<u64>,
}

/// Holds an `ask` until someone answers it (`listeners::Held` is the one implementation; every
/// approver, the embedder's `Decider` included, answers through it).
pub trait Holder: fmt::Debug + Send + Sync {
    /// Waits for an answer to one request that no rule allows.
    fn hold<'a>(&'a self, ask: AskContext<'a>) -> Pin<Box<dyn Future<Output = Held> + Send + 'a>>;
}

/// A decision and how long it was held for (`held_ms` goes into the block and the log line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ruling {
    /// The decision.
    pub decision: Decision,
    /// Milliseconds held, when the request was held.
    pub held_ms: Option<u64>,
}

/// The outcome of a held ask, one more log line (SPEC §14 "Log").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnswerEvent {
    /// The logged ask it answers.
    pub event: EventId,
    /// `allow` or `deny`; `ask` when nobody answered in time.
    pub answer: Verdict,
    /// How far it reaches; none for a timeout or a policy change.
    pub scope: Option<AskScope>,
    /// Who answered.
    pub by: ApprovedBy,
    /// Milliseconds from the ask being held to the answer.
    pub held_ms: u64,
}
