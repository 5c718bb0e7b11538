//! The compiled policy and the decision order of SPEC §1.3, the post-DNS `vet` of §1.4.

use std::{net::IpAddr, sync::Arc};

use crate::{
    config::{AllowLocalConfig, PolicyConfig},
    decision::{BlockReason, Decision, Mode, Protocol, Request, RequestShape},
    explain::{Explanation, NoTrace, Step, Trace},
    host::{Host, Target},
    local::{embedded_ipv4, is_local_ip, is_local_name},
    matcher::{HostKey, RuleSet},
    net::IpNet,
    rule::{Rule, RuleError, RuleErrorKind, RuleHost},
};

/// Methods limited mode lets through.
const READ_ONLY_METHODS: &[&str] = &["GET", "HEAD", "OPTIONS"];

/// Which local targets are opened (SPEC §1.4).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum AllowLocal {
    /// No local target (the default).
    #[default]
    None,
    /// Every local target.
    All,
    /// Only these IP, CIDR and `localhost` rules (with their ports).
    Only(Vec<Rule>),
}

/// The rule an `Allow` from [`Policy::vet`] names when no allow or `allow_local` rule matched the
/// target (it was approved by a `Decider`): the addresses passed, nothing more is claimed.
pub const VETTED: &str = "post-dns";

/// An immutable, compiled policy: what every request is decided against. Cloning is cheap (one
/// reference count), so a request can hold the policy it started with.
#[derive(Clone, Debug)]
pub struct Policy {
    inner: Arc<Compiled>,
}

#[derive(Debug)]
struct Compiled {
    allow: RuleSet,
    deny: RuleSet,
    allow_local: AllowLocal,
    local_exceptions: LocalExceptions,
    mode: Mode,
    tls_inspection: bool,
    /// Hosts whose tunnels are intercepted on every port (credential hosts, SPEC §17).
    inspect: RuleSet,
}

#[derive(Clone, Debug)]
enum LocalExceptions {
    None,
    All(Arc<str>),
    Only(RuleSet),
}

/// Builds a `Policy`; rules are compiled once, in `build`.
#[derive(Clone, Debug, Default)]
pub struct PolicyBuilder {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
    allow_local: AllowLocal,
    mode: Mode,
    tls_inspection: bool,
    inspect: Vec<Rule>,
}

/// A policy that could not be built: which key and which rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{key}`: {error}")]
pub struct PolicyError {
    key: String,
    // Part of the message (see `RuleError`), not a separate cause.
    error: RuleError,
}

impl PolicyError {
    /// The key path inside the `[policy]` table (`allow[2]`, `allow_local[0]`).
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The rule error.
    pub fn error(&self) -> &RuleError {
        &self.error
    }
}

impl PolicyBuilder {
    /// A builder holding the rules of a `[policy]` table; errors name the key (`allow[2]`).
    pub fn from_config(config: &PolicyConfig) -> Result<PolicyBuilder, PolicyError> {
        let mut builder = Policy::builder();
        for (index, text) in config.allow.iter().enumerate() {
            builder = builder.allow(parse_at("allow", index, text)?);
        }
        for (index, text) in config.deny.iter().enumerate() {
            builder = builder.deny(parse_at("deny", index, text)?);
        }
        let allow_local = match &config.allow_local {
            AllowLocalConfig::Flag(false) => AllowLocal::None,
            AllowLocalConfig::Flag(true) => AllowLocal::All,
            AllowLocalConfig::Rules(rules) => AllowLocal::Only(
                rules
                    .iter()
                    .enumerate()
                    .map(|(index, text)| parse_at("allow_local", index, text))
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(builder.allow_local(allow_local))
    }

    /// Adds an allow rule.
    pub fn allow(mut self, rule: Rule) -> Self {
        self.allow.push(rule);
        self
    }

    /// Adds a deny rule.
    pub fn deny(mut self, rule: Rule) -> Self {
        self.deny.push(rule);
        self
    }

    /// Removes an allow rule (every spelling that parses to it); true when one was there.
    pub fn remove_allow(&mut self, rule: &Rule) -> bool {
        let before = self.allow.len();
        self.allow.retain(|r| r != rule);
        self.allow.len() != before
    }

    /// Removes a deny rule; true when one was there.
    pub fn remove_deny(&mut self, rule: &Rule) -> bool {
        let before = self.deny.len();
        self.deny.retain(|r| r != rule);
        self.deny.len() != before
    }

    /// Sets which local targets are opened.
    pub fn allow_local(mut self, allow_local: AllowLocal) -> Self {
        self.allow_local = allow_local;
        self
    }

    /// Sets the mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// Whether TLS interception (MITM) is on, which lets limited mode admit `CONNECT`.
    pub fn tls_inspection(mut self, on: bool) -> Self {
        self.tls_inspection = on;
        self
    }

    /// Hosts whose tunnels are intercepted whatever their port and mode, when interception is
    /// on: the hosts of credentials (SPEC §17), whose requests leash must see to substitute.
    pub fn always_inspect(mut self, rules: impl IntoIterator<Item = Rule>) -> Self {
        self.inspect.extend(rules);
        self
    }

    /// Whether `build` would succeed, without compiling the rule sets: what a config check needs
    /// (a start compiles once, not once per check).
    pub fn check(&self) -> Result<(), PolicyError> {
        self.local_exceptions().map(drop)
    }

    /// Compiles the policy. Fails when an `allow_local` rule is not an IP, CIDR or `localhost` rule.
    pub fn build(self) -> Result<Policy, PolicyError> {
        let local_exceptions = self.local_exceptions()?;
        let compiled = Compiled {
            allow: RuleSet::new(self.allow),
            deny: RuleSet::new(self.deny),
            allow_local: self.allow_local,
            local_exceptions,
            mode: self.mode,
            tls_inspection: self.tls_inspection,
            inspect: RuleSet::new(self.inspect),
        };
        Ok(Policy {
            inner: Arc::new(compiled),
        })
    }

    /// `allow_local`, compiled: the only part of `build` that can fail.
    fn local_exceptions(&self) -> Result<LocalExceptions, PolicyError> {
        Ok(match &self.allow_local {
            AllowLocal::None => LocalExceptions::None,
            AllowLocal::All => LocalExceptions::All("allow_local".into()),
            AllowLocal::Only(rules) => LocalExceptions::Only(compile_local_rules(rules)?),
        })
    }
}

/// `allow_local` rules, with `localhost` standing for the loopback names and addresses.
fn compile_local_rules(rules: &[Rule]) -> Result<RuleSet, PolicyError> {
    let mut expanded = Vec::new();
    for (index, rule) in rules.iter().enumerate() {
        let name = rule.shared_name();
        match rule.host() {
            RuleHost::Ip(_) | RuleHost::Net(_) => expanded.push((rule.clone(), name)),
            RuleHost::Exact(host) if &**host == "localhost" => {
                for host in loopback_hosts() {
                    expanded.push((Rule::new(host, rule.ports()), name.clone()));
                }
            }
            RuleHost::Any
            | RuleHost::Exact(_)
            | RuleHost::Subdomains(_)
            | RuleHost::ApexAndSubdomains(_) => {
                return Err(PolicyError {
                    key: format!("allow_local[{index}]"),
                    error: RuleError::new(&rule.to_string(), RuleErrorKind::NotLocalRule),
                })
            }
        }
    }
    Ok(RuleSet::with_names(expanded))
}

fn loopback_hosts() -> [RuleHost; 5] {
    [
        RuleHost::ApexAndSubdomains("localhost".into()),
        RuleHost::Exact("localhost.localdomain".into()),
        RuleHost::Net(IpNet::new([127, 0, 0, 0].into(), 8).expect("valid")),
        RuleHost::Ip(std::net::Ipv6Addr::LOCALHOST.into()),
        RuleHost::Ip([0, 0, 0, 0].into()),
    ]
}

impl Policy {
    /// A builder for an empty policy (which asks for everything).
    pub fn builder() -> PolicyBuilder {
        PolicyBuilder::default()
    }

    /// A builder holding this policy's rules and settings, to derive a changed policy.
    pub fn to_builder(&self) -> PolicyBuilder {
        PolicyBuilder {
            allow: self.inner.allow.rules().to_vec(),
            deny: self.inner.deny.rules().to_vec(),
            allow_local: self.inner.allow_local.clone(),
            mode: self.inner.mode,
            tls_inspection: self.inner.tls_inspection,
            inspect: self.inner.inspect.rules().to_vec(),
        }
    }

    /// The policy of a `[policy]` table and a mode; errors name the key (`allow[2]`).
    pub fn from_config(config: &PolicyConfig, mode: Mode) -> Result<Policy, PolicyError> {
        PolicyBuilder::from_config(config)?.mode(mode).build()
    }

    /// The allow rules, duplicates merged.
    pub fn allow_rules(&self) -> &[Rule] {
        self.inner.allow.rules()
    }

    /// The deny rules, duplicates merged.
    pub fn deny_rules(&self) -> &[Rule] {
        self.inner.deny.rules()
    }

    /// Which local targets are opened.
    pub fn allow_local(&self) -> &AllowLocal {
        &self.inner.allow_local
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.inner.mode
    }

    /// Whether TLS interception is on.
    pub fn tls_inspection(&self) -> bool {
        self.inner.tls_inspection
    }

    /// Whether an allowed tunnel to `target` is intercepted (MITM) rather than relayed raw: with
    /// interception on, always in limited mode (its requests must be checked), and for port 443
    /// in full mode (other ports may carry anything, and are relayed), and for the hosts named
    /// by `always_inspect` (credential hosts) on every port.
    pub fn inspects(&self, target: &Target) -> bool {
        let always = || {
            self.inner
                .inspect
                .find_key(&HostKey::new(target.host()), target.port())
                .is_some()
        };
        self.inner.tls_inspection
            && (self.inner.mode == Mode::Limited || target.port() == 443 || always())
    }

    pub(crate) fn allow_set(&self) -> &RuleSet {
        &self.inner.allow
    }

    pub(crate) fn deny_set(&self) -> &RuleSet {
        &self.inner.deny
    }

    /// The compiled `allow_local` rules (`localhost` expanded), when `allow_local` is a list.
    pub(crate) fn local_rule_set(&self) -> Option<&RuleSet> {
        match &self.inner.local_exceptions {
            LocalExceptions::Only(rules) => Some(rules),
            LocalExceptions::None | LocalExceptions::All(_) => None,
        }
    }

    /// Decides a request before any DNS lookup (SPEC §1.3).
    pub fn decide(&self, request: &Request<'_>) -> Decision {
        self.evaluate(request, &mut NoTrace, None)
    }

    /// The decision for a request that an `ask` was approved for (by a `Decider`): every step but
    /// the allowlist still applies, so deny rules, local protection and limited mode hold.
    pub fn decide_approved(&self, request: &Request<'_>, approval: Arc<str>) -> Decision {
        self.evaluate(request, &mut NoTrace, Some(approval))
    }

    /// `decide` with the trace of every step (SPEC §1.5).
    pub fn explain(&self, request: &Request<'_>) -> Explanation {
        let mut steps = Vec::new();
        let decision = self.evaluate(request, &mut steps, None);
        Explanation { decision, steps }
    }

    fn evaluate(
        &self,
        request: &Request<'_>,
        trace: &mut impl Trace,
        approval: Option<Arc<str>>,
    ) -> Decision {
        let target = request.target;
        let (host, port) = (target.host(), target.port());
        trace.step(|| Step::Target {
            target: target.to_string(),
        });
        let key = HostKey::new(host);
        let denied_by = self.deny_match(&key, port);
        trace.step(|| Step::Denylist {
            rule: denied_by.clone(),
        });
        if let Some(rule) = denied_by {
            return Decision::Deny(BlockReason::Denylist { rule });
        }
        let local = self.local_check(host, &key, port);
        trace.step(|| local.step());
        if local.refused() {
            return Decision::Deny(BlockReason::LocalAddress {
                addrs: host.ip().into_iter().collect(),
            });
        }
        let allowed_by = self
            .inner
            .allow
            .find_key(&key, port)
            .map(|id| self.inner.allow.name(id).clone());
        let allowed_by = allowed_by.or(local.allowed_by).or(approval);
        trace.step(|| Step::Allowlist {
            rule: allowed_by.clone(),
        });
        let Some(rule) = allowed_by else {
            return Decision::Ask(BlockReason::AllowlistMiss);
        };
        let mode = self.check_mode(request);
        trace.step(|| Step::Mode {
            mode: self.inner.mode,
            method: request.method.to_owned(),
            protocol: request.protocol,
            allowed: mode.is_ok(),
        });
        match mode {
            Ok(()) => Decision::Allow { rule },
            Err(reason) => Decision::Deny(reason),
        }
    }

    /// Vets the addresses a name resolved to (SPEC §1.4): a deny rule on any address, or any local
    /// address `allow_local` does not cover, refuses the whole target. The target itself was
    /// allowed before (by `decide`, or by a `Decider`'s approval), so the allowlist is not asked
    /// again: an approved name has no allow rule, and must still reach its vetted addresses. The
    /// `Allow` names the allow rule matching the target, else the `allow_local` rule that covered
    /// an address, else [`VETTED`].
    pub fn vet(&self, target: &Target, addrs: &[IpAddr]) -> Decision {
        if addrs.is_empty() {
            // Nothing to dial is never "allowed"; the dialer reports `dns_failed` before this.
            return Decision::Deny(BlockReason::LocalAddress { addrs: Vec::new() });
        }
        let port = target.port();
        let mut local_addrs = Vec::new();
        let mut local_rule = None;
        for addr in addrs.iter().map(|a| a.to_canonical()) {
            let host = Host::Ip(addr);
            let key = HostKey::Ip(addr);
            if let Some(rule) = self.deny_match(&key, port) {
                return Decision::Deny(BlockReason::Denylist { rule });
            }
            let local = self.local_check(&host, &key, port);
            if local.refused() {
                local_addrs.push(addr);
            }
            local_rule = local_rule.or(local.allowed_by);
        }
        if !local_addrs.is_empty() {
            return Decision::Deny(BlockReason::LocalAddress { addrs: local_addrs });
        }
        let key = HostKey::new(target.host());
        let allowed_by = self
            .inner
            .allow
            .find_key(&key, port)
            .map(|id| self.inner.allow.name(id).clone());
        let rule = allowed_by
            .or(local_rule)
            .or_else(|| self.local_check(target.host(), &key, port).allowed_by)
            .unwrap_or_else(|| Arc::from(VETTED));
        Decision::Allow { rule }
    }

    /// The deny rule matching the host, or for an IPv6 address the IPv4 address it carries.
    fn deny_match(&self, key: &HostKey<'_>, port: u16) -> Option<Arc<str>> {
        if self.inner.deny.is_empty() {
            return None;
        }
        let found = self.inner.deny.find_key(key, port).or_else(|| {
            let HostKey::Ip(IpAddr::V6(v6)) = key else {
                return None;
            };
            embedded_ipv4(*v6)
                .into_iter()
                .flatten()
                .find_map(|v4| self.inner.deny.find_ip(IpAddr::V4(v4), port))
        });
        found.map(|id| self.inner.deny.name(id).clone())
    }

    fn local_check(&self, host: &Host, key: &HostKey<'_>, port: u16) -> LocalCheck {
        let local = match host {
            Host::Name(name) => is_local_name(name),
            Host::Ip(ip) => is_local_ip(*ip),
            Host::ScopedIp(_) => true,
        };
        let allowed_by = match (&self.inner.local_exceptions, local) {
            (_, false) => None,
            (LocalExceptions::None, true) => None,
            (LocalExceptions::All(name), true) => Some(name.clone()),
            (LocalExceptions::Only(rules), true) => {
                rules.find_key(key, port).map(|id| rules.name(id).clone())
            }
        };
        LocalCheck { local, allowed_by }
    }

    fn check_mode(&self, request: &Request<'_>) -> Result<(), BlockReason> {
        if self.inner.mode == Mode::Full {
            return Ok(());
        }
        match request.protocol {
            Protocol::Connect if self.inner.tls_inspection => Ok(()),
            Protocol::Connect => Err(BlockReason::MitmRequired),
            Protocol::Socks5 if self.inner.tls_inspection && request.target.port() == 443 => Ok(()),
            Protocol::Socks5 | Protocol::Socks5Udp => Err(BlockReason::ProtocolNotAllowed),
            Protocol::Http | Protocol::Https if is_read_only(request.method, &request.shape) => {
                Ok(())
            }
            Protocol::Http | Protocol::Https => Err(BlockReason::MethodNotAllowed {
                method: request.method.to_owned(),
            }),
        }
    }
}

/// GET, HEAD or OPTIONS with no body, no `Upgrade` and no override naming another method.
fn is_read_only(method: &str, shape: &RequestShape<'_>) -> bool {
    let safe_override = shape
        .method_overrides
        .iter()
        .all(|m| READ_ONLY_METHODS.contains(&m.trim().to_ascii_uppercase().as_str()));
    READ_ONLY_METHODS.contains(&method) && !shape.has_body && !shape.upgrade && safe_override
}

struct LocalCheck {
    local: bool,
    allowed_by: Option<Arc<str>>,
}

impl LocalCheck {
    fn refused(&self) -> bool {
        self.local && self.allowed_by.is_none()
    }

    fn step(&self) -> Step {
        Step::Local {
            local: self.local,
            allowed_by: self.allowed_by.clone(),
        }
    }
}

fn parse_at(list: &str, index: usize, text: &str) -> Result<Rule, PolicyError> {
    text.parse().map_err(|error| PolicyError {
        key: format!("{list}[{index}]"),
        error,
    })
}

#[cfg(test)]
mod tests;
