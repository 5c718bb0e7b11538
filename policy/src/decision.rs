//! Decisions are values: a verdict with a typed reason, never prose. Each wire format (HTTP 403 body,
//! SOCKS reply, log line, CLI) renders them in one place of its own.

use std::{fmt, net::IpAddr, str::FromStr, sync::Arc};

use serde::{Deserialize, Serialize};

use crate::host::{InvalidTarget, Target};

/// What leash does with a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Allowed; names the allow rule (or `allow_local` rule) that matched.
    Allow {
        /// The canonical spelling of the matching rule.
        rule: Arc<str>,
    },
    /// Refused by a rule or a protection; asking a person would not help.
    Deny(BlockReason),
    /// Nothing allows it; a person could approve it.
    Ask(BlockReason),
}

/// The three verdicts, as written on the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Verdict {
    /// `allow`
    Allow,
    /// `deny`
    Deny,
    /// `ask`
    Ask,
}

/// Why a request was not allowed. Not `#[non_exhaustive]`: every crate of the workspace matches it
/// exhaustively, so a new reason makes the compiler list each place that must handle it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BlockReason {
    /// No allow rule matches (`ask`).
    AllowlistMiss,
    /// A deny rule matches.
    Denylist {
        /// The canonical spelling of the deny rule.
        rule: Arc<str>,
    },
    /// A local address or name that `allow_local` does not cover, or one of leash's own listeners.
    LocalAddress {
        /// The offending resolved addresses; empty for a local name refused before DNS.
        addrs: Vec<IpAddr>,
    },
    /// Limited mode: a method (or body, `Upgrade`, method override) that is not read-only.
    MethodNotAllowed {
        /// The method as the client sent it.
        method: String,
    },
    /// Limited mode: a protocol that cannot be inspected (SOCKS5 without MITM, UDP).
    ProtocolNotAllowed,
    /// Limited mode: `CONNECT` without MITM, so inner requests could not be checked.
    MitmRequired,
    /// The target is not a valid host and port.
    InvalidTarget(InvalidTarget),
    /// The proxy credentials did not carry the required token (not a policy decision).
    AuthFailed,
    /// The request was malformed (not a policy decision).
    InvalidRequest {
        /// What was wrong, for the log.
        detail: String,
    },
    /// A request inside a tunnel named another host than the tunnel (not a policy decision).
    HostMismatch,
    /// A `Decider` (a person, an application) refused an `ask`.
    Declined,
    /// A credential's placeholder (SPEC §17) in a request to a host the credential is not for.
    CredentialScope {
        /// The credential's name (never its placeholder or secret).
        credential: Arc<str>,
    },
}

impl BlockReason {
    /// Every reason code, in `index` order.
    pub const CODES: [&'static str; 12] = [
        "allowlist_miss",
        "denylist",
        "local_address",
        "method_not_allowed",
        "protocol_not_allowed",
        "mitm_required",
        "invalid_target",
        "auth_failed",
        "invalid_request",
        "host_mismatch",
        "declined",
        "credential_scope",
    ];

    /// The position of this reason's code in `CODES` (for counters kept in arrays).
    pub fn index(&self) -> usize {
        match self {
            BlockReason::AllowlistMiss => 0,
            BlockReason::Denylist { .. } => 1,
            BlockReason::LocalAddress { .. } => 2,
            BlockReason::MethodNotAllowed { .. } => 3,
            BlockReason::ProtocolNotAllowed => 4,
            BlockReason::MitmRequired => 5,
            BlockReason::InvalidTarget(_) => 6,
            BlockReason::AuthFailed => 7,
            BlockReason::InvalidRequest { .. } => 8,
            BlockReason::HostMismatch => 9,
            BlockReason::Declined => 10,
            BlockReason::CredentialScope { .. } => 11,
        }
    }

    /// The stable snake_case code of the reason (`allowlist_miss`, `denylist`, …).
    pub fn code(&self) -> &'static str {
        Self::CODES[self.index()]
    }
}

/// The reason a code names (`"denylist"` → `Denylist`), for readers of log lines and 403 bodies.
/// The details are left empty (no rule, no addresses, `InvalidTarget::Empty`): a line carries them
/// in fields of its own (`rule`, `addrs`, `method`, `detail`).
impl FromStr for BlockReason {
    type Err = String;

    fn from_str(code: &str) -> Result<BlockReason, String> {
        Ok(match code {
            "allowlist_miss" => BlockReason::AllowlistMiss,
            "denylist" => BlockReason::Denylist { rule: "".into() },
            "local_address" => BlockReason::LocalAddress { addrs: Vec::new() },
            "method_not_allowed" => BlockReason::MethodNotAllowed {
                method: String::new(),
            },
            "protocol_not_allowed" => BlockReason::ProtocolNotAllowed,
            "mitm_required" => BlockReason::MitmRequired,
            "invalid_target" => BlockReason::InvalidTarget(InvalidTarget::Empty),
            "auth_failed" => BlockReason::AuthFailed,
            "invalid_request" => BlockReason::InvalidRequest {
                detail: String::new(),
            },
            "host_mismatch" => BlockReason::HostMismatch,
            "declined" => BlockReason::Declined,
            "credential_scope" => BlockReason::CredentialScope {
                credential: "".into(),
            },
            _ => {
                return Err(format!(
                    "unknown reason `{code}` (expected one of: {})",
                    BlockReason::CODES.join(", ")
                ))
            }
        })
    }
}

impl Decision {
    /// The refusal of a target that failed canonicalisation (decision step 1).
    pub fn invalid_target(error: InvalidTarget) -> Decision {
        Decision::Deny(BlockReason::InvalidTarget(error))
    }

    /// The verdict alone.
    pub fn verdict(&self) -> Verdict {
        match self {
            Decision::Allow { .. } => Verdict::Allow,
            Decision::Deny(_) => Verdict::Deny,
            Decision::Ask(_) => Verdict::Ask,
        }
    }

    /// Whether the request may go ahead.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow { .. })
    }

    /// The block reason, for `deny` and `ask`.
    pub fn reason(&self) -> Option<&BlockReason> {
        match self {
            Decision::Allow { .. } => None,
            Decision::Deny(reason) | Decision::Ask(reason) => Some(reason),
        }
    }

    /// The rule the decision names: the allow rule, or the deny rule; `None` otherwise.
    pub fn rule(&self) -> Option<&Arc<str>> {
        match self {
            Decision::Allow { rule } | Decision::Deny(BlockReason::Denylist { rule }) => Some(rule),
            Decision::Deny(
                BlockReason::AllowlistMiss
                | BlockReason::LocalAddress { .. }
                | BlockReason::MethodNotAllowed { .. }
                | BlockReason::ProtocolNotAllowed
                | BlockReason::MitmRequired
                | BlockReason::InvalidTarget(_)
                | BlockReason::AuthFailed
                | BlockReason::InvalidRequest { .. }
                | BlockReason::HostMismatch
                | BlockReason::Declined
                | BlockReason::CredentialScope { .. },
            )
            | Decision::Ask(_) => None,
        }
    }

    /// The sentence a person reads about a block (the `message` of the 403 body, of the log line
    /// and of `/blocked`); `None` for an allow. `host` and `method` as they will be printed,
    /// already escaped. Callers branch on `reason`, never on this text.
    pub fn message(&self, host: &str, method: &str) -> Option<String> {
        let reason = self.reason()?;
        Some(match reason {
            BlockReason::AllowlistMiss => format!("{host} is not on the allowlist"),
            BlockReason::Denylist { rule } => format!("{host} is denied by the rule `{rule}`"),
            BlockReason::LocalAddress { addrs }
                if addrs.is_empty() || host.parse::<IpAddr>().is_ok() =>
            {
                format!("{host} is a local address; allow_local does not cover it")
            }
            BlockReason::LocalAddress { addrs } => {
                let list: Vec<String> = addrs.iter().map(ToString::to_string).collect();
                format!(
                    "{host} resolves to local addresses ({}); allow_local does not cover them",
                    list.join(", ")
                )
            }
            BlockReason::MethodNotAllowed { .. } => {
                format!("{method} is not allowed in limited mode (read-only: GET, HEAD, OPTIONS without body, upgrade or method override)")
            }
            BlockReason::ProtocolNotAllowed => {
                "this protocol cannot be inspected in limited mode".to_owned()
            }
            BlockReason::MitmRequired => {
                "CONNECT needs TLS interception (mitm) in limited mode".to_owned()
            }
            BlockReason::InvalidTarget(error) => format!("invalid target: {error}"),
            BlockReason::AuthFailed => {
                "proxy authentication failed: wrong or missing token".to_owned()
            }
            BlockReason::InvalidRequest { detail } => {
                format!("invalid request: {}", crate::escape_untrusted(detail))
            }
            BlockReason::HostMismatch => {
                "the request names another host than its tunnel".to_owned()
            }
            BlockReason::Declined => format!("{host} was declined when asked"),
            BlockReason::CredentialScope { credential } => format!(
                "the placeholder of the credential `{credential}` may be sent only to its own hosts, not {host}"
            ),
        })
    }
}

impl Verdict {
    /// `allow`, `deny` or `ask`.
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
            Verdict::Ask => "ask",
        }
    }
}

/// The policy mode (SPEC §4).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Every method, every protocol the rules allow.
    #[default]
    Full,
    /// Read-only: GET, HEAD, OPTIONS, and only where leash can see them.
    Limited,
}

/// How a request reached leash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// An absolute-form plain HTTP request.
    Http,
    /// An HTTP `CONNECT` tunnel.
    Connect,
    /// A request inside an intercepted (MITM) TLS tunnel.
    Https,
    /// A SOCKS5 `CONNECT`.
    Socks5,
    /// A SOCKS5 UDP datagram.
    Socks5Udp,
}

str_enum!(Mode { Full = "full", Limited = "limited" });
impl Protocol {
    /// Every protocol, in `index` order.
    pub const ALL: [Protocol; 5] = [
        Protocol::Http,
        Protocol::Connect,
        Protocol::Https,
        Protocol::Socks5,
        Protocol::Socks5Udp,
    ];

    /// The position in `ALL` (for counters kept in arrays).
    pub fn index(self) -> usize {
        self as usize
    }
}

str_enum!(Protocol {
    Http = "http",
    Connect = "connect",
    Https = "https",
    Socks5 = "socks5",
    Socks5Udp = "socks5_udp",
});

/// One request to decide: plain data handed over by a protocol crate.
#[derive(Clone, Copy, Debug)]
pub struct Request<'a> {
    /// The canonical target.
    pub target: &'a Target,
    /// The method (`CONNECT` for tunnels and SOCKS5).
    pub method: &'a str,
    /// How the request arrived.
    pub protocol: Protocol,
    /// What else limited mode looks at.
    pub shape: RequestShape<'a>,
}

/// The parts of an HTTP request, besides its method, that can make it write (SPEC §4).
#[derive(Clone, Copy, Debug, Default)]
pub struct RequestShape<'a> {
    /// The request carries a body.
    pub has_body: bool,
    /// The request asks for an `Upgrade` (WebSocket, h2c).
    pub upgrade: bool,
    /// Every value of every `X-HTTP-Method-Override`, `X-HTTP-Method` and `X-Method-Override`
    /// header: one naming anything but a read-only method makes the request a write, wherever it
    /// stands among them (a server may honour any of them).
    pub method_overrides: &'a [&'a str],
}

impl<'a> Request<'a> {
    /// A request with no body, upgrade or override.
    pub fn new(target: &'a Target, method: &'a str, protocol: Protocol) -> Request<'a> {
        Request {
            target,
            method,
            protocol,
            shape: RequestShape::default(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per reason: its code (the log's `reason`, the metrics' `reason` label, the 403
    /// body's `reason`). The exhaustive match makes a new reason state its code here.
    fn code_row(reason: &BlockReason) -> &'static str {
        match reason {
            BlockReason::AllowlistMiss => "allowlist_miss",
            BlockReason::Denylist { .. } => "denylist",
            BlockReason::LocalAddress { .. } => "local_address",
            BlockReason::MethodNotAllowed { .. } => "method_not_allowed",
            BlockReason::ProtocolNotAllowed => "protocol_not_allowed",
            BlockReason::MitmRequired => "mitm_required",
            BlockReason::InvalidTarget(_) => "invalid_target",
            BlockReason::AuthFailed => "auth_failed",
            BlockReason::InvalidRequest { .. } => "invalid_request",
            BlockReason::HostMismatch => "host_mismatch",
            BlockReason::Declined => "declined",
            BlockReason::CredentialScope { .. } => "credential_scope",
        }
    }

    #[test]
    fn every_reason_has_its_code_and_index() {
        for (index, code) in BlockReason::CODES.iter().enumerate() {
            let reason: BlockReason = code.parse().unwrap();
            assert_eq!((reason.code(), reason.index()), (code_row(&reason), index));
        }
    }

    #[test]
    fn only_allow_and_deny_rules_name_a_rule() {
        let rule: Arc<str> = "x.test".into();
        assert_eq!(Decision::Allow { rule: rule.clone() }.rule(), Some(&rule));
        for code in BlockReason::CODES {
            let reason: BlockReason = code.parse().unwrap();
            let named = matches!(reason, BlockReason::Denylist { .. });
            assert_eq!(
                Decision::Deny(reason.clone()).rule().is_some(),
                named,
                "{code}"
            );
            assert_eq!(Decision::Ask(reason).rule(), None, "{code}");
        }
    }

    #[test]
    fn every_reason_code_parses_back_to_its_reason() {
        for code in BlockReason::CODES {
            let reason: BlockReason = code.parse().unwrap();
            assert_eq!(reason.code(), code);
        }
        let error = "allowlist-miss".parse::<BlockReason>().unwrap_err();
        assert!(error.contains("unknown reason `allowlist-miss`"), "{error}");
    }
}
