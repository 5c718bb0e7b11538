//! What the admin API may change, as a small trait `bin` implements: the policy swaps stay in one
//! place (`bin`'s hot policy), whichever door a change comes through.

use std::{fmt, sync::Arc, time::Duration};

use policy::{Mode, Policy, PolicyEngine};
use serde::Deserialize;

/// Rules to add or remove at runtime (`POST`/`DELETE /rules`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuleChange {
    /// Allow rules.
    pub allow: Vec<String>,
    /// Deny rules.
    pub deny: Vec<String>,
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
    fn set_mode(&self, mode: Mode) -> Result<Mode, String>;

    /// Re-reads the config file; on error the old policy stays, and the error names file and key.
    fn reload(&self) -> Result<(), String>;

    /// Adds (`add = true`) or removes rules; an invalid rule changes nothing.
    fn change_rules(&self, change: &RuleChange, add: bool) -> Result<(), String>;
}
