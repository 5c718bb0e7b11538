//! `admin` owns leash's loopback admin API (SPEC §8): health, effective config, patterns, blocked
//! events (with long polls), explain, mode switch, reload, runtime rules, Prometheus metrics,
//! held asks and their answers, and the approvals page a person answers them on (SPEC §14).
//!
//! It reads the violation ring and the tunnel registry, and changes the policy only through the
//! `Control` trait that `bin` implements; it never proxies traffic and never reads files.

mod control;
mod guard;
mod metrics;
mod page;
mod routes;
mod server;

pub use crate::{
    control::{AttemptRequest, Control, ControlError, RuleChange, RuleOp, RuleSource, RuleSources},
    server::{serve, Admin},
};
