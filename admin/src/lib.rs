//! `admin` owns leash's loopback admin API (SPEC §8): health, effective config, patterns, blocked
//! events (with long polls), explain, mode switch, reload, runtime rules and Prometheus metrics.
//!
//! It reads the violation ring and the tunnel registry, and changes the policy only through the
//! `Control` trait that `bin` implements; it never proxies traffic and never reads files.

mod control;
mod guard;
mod metrics;
mod routes;
mod server;

pub use crate::{
    control::{AttemptRequest, Control, ControlError, RuleChange, RuleOp, RuleSource, RuleSources},
    server::{serve, Admin},
};
