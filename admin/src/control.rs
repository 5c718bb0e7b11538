//! What the admin API may change, as a small trait `bin` implements: the policy swaps stay in one
//! place (`bin`'s hot policy), whichever door a change comes through.

use std::{fmt, sync::Arc, time::Duration};

use listeners::{AnswerError, PendingItem};
use policy::{
    ApprovedBy, AskAnswer, AskScope, BindError, Mode, Policy, PolicyEngine, PolicyError, RuleError,
};
use serde::{Deserialize, Serialize};

/// One rule in force and where it comes from (`/patterns`' `sources`, SPEC §14): `config` (the
/// file and the command line's flags), `runtime` (`POST /rules`) or `approval:always`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RuleSource {
    /// The rule, canonical.
    pub rule: String,
    /// Where it comes from: `config`, `runtime`, `approval:always`, `approval:session`,
    /// `approval:attempt:ID` (an answer with scope `attempt`) or `attempt:ID` (the attempt's own
    /// allow rules, SPEC §18).
    pub source: String,
}

impl RuleSource {
    /// `rule` from `source`.
    pub fn new(rule: String, source: String) -> RuleSource {
        RuleSource { rule, source }
    }
}

/// The rules in force with their sources, per list.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct RuleSources {
    /// Allow rules.
    pub allow: Vec<RuleSource>,
    /// Deny rules.
    pub deny: Vec<RuleSource>,
}

/// Rules to add or remove at runtime (`POST`/`DELETE /rules`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleChange {
    /// Allow rules.
    pub allow: Vec<String>,
    /// Deny rules.
    pub deny: Vec<String>,
}

/// `POST /attempts` (SPEC §18): a bound attempt to create.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AttemptRequest {
    /// The attempt id; a fresh `attempt-…` id when absent.
    pub id: Option<String>,
    /// How long the attempt lives (`"10m"`); for ever (until `DELETE`) when absent.
    pub ttl: Option<String>,
    /// Allow rules for this attempt only, on top of the policy (they answer its asks; a deny,
    /// local protection and limited mode still apply).
    pub allow: Vec<String>,
}

/// Whether a `RuleChange` adds its rules or removes them (`POST` or `DELETE /rules`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RuleOp {
    /// Add to the runtime overlay (and stop removing them, if they were removed).
    Add,
    /// Remove from the overlay, or mask rules of the file or the flags.
    Remove,
}

/// Why a change through `Control` was refused; the policy in force stays as it was.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ControlError {
    /// The embedding application decides with an engine of its own, which leash cannot change.
    #[error("the policy engine belongs to the embedding application")]
    EmbeddersEngine,
    /// `reload` without a config file (leash runs on its embedded defaults).
    #[error("no config file to reload: leash runs on its embedded defaults")]
    NoConfigFile,
    /// The config file (or the command line's flags applied to it) did not load: the message of
    /// `bin`'s config error, which names the file, line and key (a type this crate cannot see).
    #[error("{0}")]
    Config(String),
    /// A rule of the change does not parse.
    #[error("{0}")]
    Rule(RuleError),
    /// The rules parse but do not make a policy.
    #[error("policy.{0}")]
    Policy(PolicyError),
    /// Bound attempts need `auth.attempts = "bound"`: otherwise a client names any attempt.
    #[error("auth.attempts is not \"bound\": attempts are free-form ids here")]
    AttemptsNotBound,
    /// The attempt cannot be bound as asked.
    #[error("{0}")]
    Bind(BindError),
    /// A field of `POST /attempts` is not usable (names the field).
    #[error("{0}")]
    AttemptRequest(String),
    /// No bound attempt has this id.
    #[error("no bound attempt {0}")]
    NoSuchAttempt(String),
    /// An `always` answer could not be saved to the approvals file (the message names the file).
    #[error("the approval was not saved: {0}")]
    Approvals(String),
    /// A pending item could not be answered as asked.
    #[error("{0}")]
    Answer(AnswerError),
}

/// The running instance, as the admin API sees it. Every change is an atomic policy swap.
pub trait Control: fmt::Debug + Send + Sync {
    /// The engine deciding requests now (a snapshot): what `/explain`, `/health` and `/mode`
    /// report on.
    fn engine(&self) -> Arc<dyn PolicyEngine>;

    /// leash's own policy in force, with its rules; `None` when the embedding application decides
    /// with an engine of its own, whose rules are not leash's to show or change.
    fn policy(&self) -> Option<Arc<Policy>>;

    /// The effective configuration, tokens redacted.
    fn config(&self) -> serde_json::Value;

    /// How long the instance has run.
    fn uptime(&self) -> Duration;

    /// Switches the mode; returns the mode in force, or why it cannot be switched.
    fn set_mode(&self, mode: Mode) -> Result<Mode, ControlError>;

    /// Re-reads the config file; on error the old policy stays, and the error names file and key.
    fn reload(&self) -> Result<(), ControlError>;

    /// Adds or removes rules; an invalid rule changes nothing.
    fn change_rules(&self, op: RuleOp, change: &RuleChange) -> Result<(), ControlError>;

    /// Binds a new attempt to a fresh secret; answers `{"id","token","http","socks","env"}`.
    fn bind_attempt(&self, request: &AttemptRequest) -> Result<serde_json::Value, ControlError>;

    /// Ends bound attempt `id`: its secret is refused from the next request on.
    fn end_attempt(&self, id: &str) -> Result<(), ControlError>;

    /// Answers pending item `id` (SPEC §14) for every approver alike: releases the requests
    /// waiting for it and, for `always`, appends the rule to the approvals file and adds it to the
    /// policy in force (an allow rule for `allow`, a deny rule for `deny`).
    fn answer(
        &self,
        id: u64,
        answer: AskAnswer,
        scope: AskScope,
        by: ApprovedBy,
    ) -> Result<PendingItem, ControlError>;

    /// The rules in force with their sources; `None` with an embedder's engine.
    fn rule_sources(&self) -> Option<RuleSources>;
}
