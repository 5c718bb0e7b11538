//! `policy` owns every network-policy decision leash makes (SPEC §1): the rule grammar, host
//! canonicalisation, the compiled matcher, the pre-DNS `decide`, the post-DNS `vet`, `explain` and
//! `lint`, and the boundary traits (`PolicyEngine`, `DecisionSink`) that the proxies talk through.
//!
//! It is pure: no async runtime, no sockets, no files, no clock. It knows nothing about HTTP, SOCKS5,
//! TLS or how decisions are logged; the protocol crates hand it plain data and get plain data back.
//!
//! ```
//! use policy::{BlockReason, Decision, Policy, Protocol, Request, Target};
//!
//! let policy = Policy::builder()
//!     .allow("**.github.com".parse()?)
//!     .deny("gist.github.com".parse()?)
//!     .build()?;
//! let target = Target::parse("api.github.com:443", None)?;
//! let decision = policy.decide(&Request::new(&target, "CONNECT", Protocol::Connect));
//! assert!(decision.is_allowed());
//!
//! // Every spelling of a local address is local, whatever the allow list says.
//! let target = Target::parse("0x7f.1:80", None)?;
//! let decision = policy.decide(&Request::new(&target, "GET", Protocol::Http));
//! assert!(matches!(decision, Decision::Deny(BlockReason::LocalAddress { .. })));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

/// `as_str`, `Display` and `FromStr` for a fieldless enum from one table of wire spellings.
macro_rules! str_enum {
    ($ty:ty { $($variant:ident = $text:literal),+ $(,)? }) => {
        impl $ty {
            /// The wire spelling.
            pub fn as_str(self) -> &'static str {
                match self { $(<$ty>::$variant => $text),+ }
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = String;

            fn from_str(s: &str) -> Result<Self, String> {
                match s {
                    $($text => Ok(<$ty>::$variant),)+
                    _ => Err(format!("expected one of: {}", [$($text),+].join(", "))),
                }
            }
        }
    };
}

mod ask;
mod attempts;
mod config;
mod credentials;
mod decision;
mod engine;
mod escape;
mod explain;
mod host;
mod ipv4;
mod lint;
mod local;
mod matcher;
mod net;
mod policy;
mod rule;
mod rule_list;
mod secret;

pub use crate::{
    ask::{AnswerEvent, ApprovedBy, AskAnswer, AskScope, Held, Hold, Holder, Ruling},
    attempts::{Attempts, BindError, MAX_BOUND_ATTEMPTS},
    config::{AllowLocalConfig, PolicyConfig},
    credentials::{
        check_credentials, check_proxy_credentials, is_attempt_id, CredentialError, ProxyAuth,
    },
    decision::{BlockReason, Decision, Mode, Protocol, Request, RequestShape, Verdict},
    engine::{
        decide_with, is_approved, Answer, AskContext, Decider, DecisionEvent, DecisionSink,
        EventId, MemorySink, NoopSink, PolicyEngine, APPROVED_BY, SCHEMA_VERSION,
    },
    escape::escape_untrusted,
    explain::{ExplainReport, Explanation, Step},
    host::{Host, InvalidTarget, Target},
    lint::{lint, LintWarning},
    local::{embedded_ipv4, is_local_ip, is_local_name},
    net::IpNet,
    policy::{AllowLocal, Policy, PolicyBuilder, PolicyError, VETTED},
    rule::{PortRange, Rule, RuleError, RuleHost},
    rule_list::RuleList,
    secret::{Credential, Secret, REDACTED},
};
