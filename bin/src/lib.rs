//! `leash` (crate of the `leash` binary) composes the protocol crates into a running proxy and owns
//! everything that touches the user's machine outside the proxies themselves: the configuration
//! file, the command line, and the embedding API of SPEC §13 (`Leash::builder()`).
//!
//! **Invariant:** only this crate reads configuration files; the library crates receive plain data.

mod admin_token;
mod approvals;
mod approver;
mod attempts;
mod child_env;
mod config;
mod decider_socket;
mod duration;
mod embed;
mod hot;
mod hub;
mod upstream;

pub use crate::{
    admin_token::{foreign_writer, random_hex, read_token_file, ForeignWriter, NO_ADMIN_TOKEN},
    approver::Approver,
    attempts::BoundAttempt,
    child_env::{child_env, shell_quote, CaFiles, EnvSpec},
    config::{
        AdminConfig, AttemptsMode, AuthConfig, Config, ConfigError, CredentialConfig,
        HeadersConfig, LimitsConfig, ListenConfig, LogConfig, MitmConfig, Rotation, SocksConfig,
        TunnelConfig,
    },
    decider_socket::{DeciderAddr, DeciderAddrError},
    duration::{Bounded, ConnectionCount, HeadSize, Timeout},
    embed::{Addrs, BuildError, Built, Leash, LeashBuilder, Listener, Running},
    hot::HotPolicy,
    hub::ConfigOverlay,
    upstream::{
        NoProxyRule, ProxySetting, ProxyUrl, ResolveSetting, UpstreamConfig, PROXY_VARIABLES,
    },
};
/// What `Running::change_rules` adds or removes, whether it adds or removes them, and why a change
/// was refused.
pub use admin::{AttemptRequest, ControlError, RuleChange, RuleOp};
/// What an `Approver` sees and answers.
pub use listeners::{AnswerError, PendingItem};
pub use policy::{ApprovedBy, AskAnswer, AskScope};

/// The README's Rust examples, compiled and run as doc tests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../../README.md")]
pub struct ReadmeDoctests;
