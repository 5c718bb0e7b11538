//! The rule grammar (SPEC §1.1): one string per rule, parsed once at load.

use std::{fmt, net::IpAddr, str::FromStr, sync::Arc};

use crate::{
    host::{parse_port, split_host_port, Host},
    net::IpNet,
};

/// One allow or deny rule: a host pattern and an optional port range.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Rule {
    host: RuleHost,
    ports: Option<PortRange>,
}

/// What hosts a rule matches.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum RuleHost {
    /// `*`: every host.
    Any,
    /// `example.com`: exactly that name.
    Exact(Box<str>),
    /// `*.example.com`: strict subdomains, not the apex.
    Subdomains(Box<str>),
    /// `**.example.com`: the apex and all subdomains.
    ApexAndSubdomains(Box<str>),
    /// `1.2.3.4`, `[::1]`: that address.
    Ip(IpAddr),
    /// `10.0.0.0/8`, `[fd00::]/8`: that network.
    Net(IpNet),
}

/// An inclusive port range; a single port is `start == end`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// The range `start..=end`; `None` when empty or when it holds port 0.
    pub fn new(start: u16, end: u16) -> Option<PortRange> {
        (start >= 1 && start <= end).then_some(PortRange { start, end })
    }

    /// Whether `port` is in the range.
    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// Whether every port of `other` is in this range.
    pub fn covers(&self, other: &PortRange) -> bool {
        self.start <= other.start && other.end <= self.end
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.start == self.end {
            true => write!(f, "{}", self.start),
            false => write!(f, "{}-{}", self.start, self.end),
        }
    }
}

impl Rule {
    /// A rule from its parts.
    pub fn new(host: RuleHost, ports: Option<PortRange>) -> Rule {
        Rule { host, ports }
    }

    /// The host pattern.
    pub fn host(&self) -> &RuleHost {
        &self.host
    }

    /// The port range, `None` for every port.
    pub fn ports(&self) -> Option<PortRange> {
        self.ports
    }

    /// Whether the rule matches `host` on `port`: the naive one-rule check that the compiled
    /// matcher must agree with.
    pub fn matches(&self, host: &Host, port: u16) -> bool {
        self.ports_match(port) && self.host.matches(host)
    }

    /// Whether `port` is in the rule's ports.
    pub fn ports_match(&self, port: u16) -> bool {
        self.ports.is_none_or(|range| range.contains(port))
    }

    /// Whether every (host, port) this rule matches is also matched by `self`.
    pub fn covers(&self, other: &Rule) -> bool {
        let ports = match (self.ports, other.ports) {
            (None, _) => true,
            (Some(_), None) => false,
            (Some(mine), Some(theirs)) => mine.covers(&theirs),
        };
        ports && self.host.covers(&other.host)
    }

    /// The canonical spelling, shared by every decision that names this rule.
    pub(crate) fn shared_name(&self) -> Arc<str> {
        match (&self.host, self.ports) {
            // The common shapes without the formatter (it was a tenth of a start with many rules).
            (RuleHost::Exact(name), None) => Arc::from(&**name),
            (RuleHost::Subdomains(base), None) => Arc::from(format_prefixed("*.", base)),
            (RuleHost::ApexAndSubdomains(base), None) => Arc::from(format_prefixed("**.", base)),
            _ => self.to_string().into(),
        }
    }
}

impl RuleHost {
    fn matches(&self, host: &Host) -> bool {
        match (self, host) {
            (RuleHost::Any, _) => true,
            (RuleHost::Exact(rule), Host::Name(name)) => rule == name,
            (RuleHost::Subdomains(base), Host::Name(name)) => is_strict_subdomain(name, base),
            (RuleHost::ApexAndSubdomains(base), Host::Name(name)) => {
                **name == **base || is_strict_subdomain(name, base)
            }
            (RuleHost::Ip(rule), _) => host.ip() == Some(*rule),
            (RuleHost::Net(net), _) => host.ip().is_some_and(|ip| net.contains(ip)),
            (
                RuleHost::Exact(_) | RuleHost::Subdomains(_) | RuleHost::ApexAndSubdomains(_),
                Host::Ip(_) | Host::ScopedIp(_),
            ) => false,
        }
    }

    fn covers(&self, other: &RuleHost) -> bool {
        use RuleHost::*;
        match (self, other) {
            (Any, _) => true,
            (Exact(a), Exact(b)) => a == b,
            (Subdomains(a), Exact(b) | ApexAndSubdomains(b)) => is_strict_subdomain(b, a),
            (Subdomains(a), Subdomains(b)) => a == b || is_strict_subdomain(b, a),
            (ApexAndSubdomains(a), Exact(b) | Subdomains(b) | ApexAndSubdomains(b)) => {
                a == b || is_strict_subdomain(b, a)
            }
            (Ip(a), Ip(b)) => a == b,
            (Net(net), Ip(ip)) => net.contains(*ip),
            (Net(a), Net(b)) => a.covers(b),
            (Exact(_), Any | Subdomains(_) | ApexAndSubdomains(_) | Ip(_) | Net(_))
            | (Subdomains(_), Any | Ip(_) | Net(_))
            | (ApexAndSubdomains(_), Any | Ip(_) | Net(_))
            | (Ip(_), Any | Exact(_) | Subdomains(_) | ApexAndSubdomains(_) | Net(_))
            | (Net(_), Any | Exact(_) | Subdomains(_) | ApexAndSubdomains(_)) => false,
        }
    }
}

fn format_prefixed(prefix: &str, base: &str) -> String {
    let mut name = String::with_capacity(prefix.len() + base.len());
    name.push_str(prefix);
    name.push_str(base);
    name
}

/// `a.b.example.com` is a strict subdomain of `example.com`; `example.com` and `badexample.com` are not.
pub(crate) fn is_strict_subdomain(name: &str, base: &str) -> bool {
    name.len() > base.len() + 1
        && name.ends_with(base)
        && name.as_bytes()[name.len() - base.len() - 1] == b'.'
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bracket_v6 = self.ports.is_some();
        match &self.host {
            RuleHost::Any => f.write_str("*")?,
            RuleHost::Exact(name) => f.write_str(name)?,
            RuleHost::Subdomains(base) => write!(f, "*.{base}")?,
            RuleHost::ApexAndSubdomains(base) => write!(f, "**.{base}")?,
            RuleHost::Ip(IpAddr::V6(v6)) if bracket_v6 => write!(f, "[{v6}]")?,
            RuleHost::Ip(ip) => write!(f, "{ip}")?,
            RuleHost::Net(net) => write!(f, "{net}")?,
        }
        match self.ports {
            Some(ports) => write!(f, ":{ports}"),
            None => Ok(()),
        }
    }
}

impl FromStr for Rule {
    type Err = RuleError;

    fn from_str(input: &str) -> Result<Rule, RuleError> {
        parse_rule(input).map_err(|reason| RuleError {
            rule: input.to_owned(),
            reason,
        })
    }
}

fn parse_rule(input: &str) -> Result<Rule, RuleErrorKind> {
    if input.is_empty() {
        return Err(RuleErrorKind::Empty);
    }
    if let Some(host) = url_host(input) {
        return Err(RuleErrorKind::Url(host));
    }
    let (host, ports) = split_rule(input)?;
    let ports = ports.map(parse_port_range).transpose()?;
    Ok(Rule::new(parse_rule_host(host)?, ports))
}

/// A rule written as a URL (`https://pypi.org/simple`, `pypi.org/simple`, `user@pypi.org`): `Some`,
/// holding the rule it should have been (`pypi.org`, with the port if one was given) when that part
/// is a valid rule. A `/` after an IP-shaped host is a CIDR prefix, not a path.
fn url_host(input: &str) -> Option<Option<String>> {
    // A byte search, not `split_once("://")`: its substring searcher costs more to set up than
    // a rule is long, once per rule at every start.
    let scheme_end = input.as_bytes().windows(3).position(|w| w == b"://");
    let rest = match scheme_end {
        Some(end) => &input[end + 3..],
        None if input.contains('@') => input,
        None => {
            let (before, _path) = input.split_once('/')?;
            if is_ip_shaped(before) {
                return None;
            }
            input
        }
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    // `host_port` holds no `/` and no `@`, so this parse is not a URL again.
    Some(parse_rule(host_port).ok().map(|rule| rule.to_string()))
}

/// `10.0.0.0`, `0x7f.1`, `fd00::`, `[fd00::]`, `10.0.0`: what may stand before a CIDR's `/`,
/// even when it is no valid address (the CIDR error then says so).
fn is_ip_shaped(host: &str) -> bool {
    let v4 = host.bytes().all(|b| b.is_ascii_digit() || b == b'.');
    let v6 = host.contains(':')
        && host
            .bytes()
            .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
    let ip = matches!(Host::parse(host), Ok(Host::Ip(_) | Host::ScopedIp(_)));
    host.starts_with('[') || v4 || v6 || ip
}

/// Splits `HOST[:PORTS]`, where a CIDR's `/len` belongs to the host (`[fd00::]/8:443`).
fn split_rule(input: &str) -> Result<(&str, Option<&str>), RuleErrorKind> {
    if input.starts_with('[') {
        let end = input
            .find(']')
            .ok_or(RuleErrorKind::BadHost("unclosed `[`".into()))?;
        let rest = &input[end + 1..];
        let (prefix, ports) = match rest.split_once(':') {
            Some((prefix, ports)) => (prefix, Some(ports)),
            None => (rest, None),
        };
        if !(prefix.is_empty() || prefix.starts_with('/')) {
            return Err(RuleErrorKind::BadHost(format!(
                "unexpected `{rest}` after `]`"
            )));
        }
        return Ok((&input[..end + 1 + prefix.len()], ports));
    }
    split_host_port(input).map_err(|e| RuleErrorKind::BadHost(e.to_string()))
}

fn parse_port_range(ports: &str) -> Result<PortRange, RuleErrorKind> {
    let bad = || RuleErrorKind::BadPorts(ports.to_owned());
    let (start, end) = ports.split_once('-').unwrap_or((ports, ports));
    let start = parse_port(start).map_err(|_| bad())?;
    let end = parse_port(end).map_err(|_| bad())?;
    PortRange::new(start, end).ok_or_else(bad)
}

fn parse_rule_host(host: &str) -> Result<RuleHost, RuleErrorKind> {
    if host == "*" {
        return Ok(RuleHost::Any);
    }
    if host.contains('/') {
        return parse_net(host).map(RuleHost::Net);
    }
    if let Some(base) = host.strip_prefix("**.") {
        return wildcard_base(base).map(RuleHost::ApexAndSubdomains);
    }
    if let Some(base) = host.strip_prefix("*.") {
        return wildcard_base(base).map(RuleHost::Subdomains);
    }
    if host.contains('*') {
        return Err(RuleErrorKind::BadWildcard);
    }
    match canonical_host(host)? {
        Host::Name(name) => Ok(RuleHost::Exact(name)),
        Host::Ip(ip) => Ok(RuleHost::Ip(ip)),
        Host::ScopedIp(_) => Err(RuleErrorKind::BadHost(
            "zone ids are not allowed in rules".into(),
        )),
    }
}

/// Rules may be written in Unicode; they are matched in punycode, as clients send names.
fn canonical_host(host: &str) -> Result<Host, RuleErrorKind> {
    let punycode;
    let ascii = match host.is_ascii() {
        true => host,
        false => {
            punycode = idna::domain_to_ascii(host)
                .map_err(|_| RuleErrorKind::BadHost("not a valid internationalised name".into()))?;
            punycode.as_str()
        }
    };
    Host::parse(ascii).map_err(|e| RuleErrorKind::BadHost(e.to_string()))
}

fn wildcard_base(base: &str) -> Result<Box<str>, RuleErrorKind> {
    if base.contains('*') {
        return Err(RuleErrorKind::BadWildcard);
    }
    let name = match canonical_host(base)? {
        Host::Name(name) => name,
        Host::Ip(_) | Host::ScopedIp(_) => return Err(RuleErrorKind::WildcardOnIp),
    };
    if is_public_suffix(&name) {
        return Err(RuleErrorKind::PublicSuffix(name.into()));
    }
    Ok(name)
}

fn parse_net(host: &str) -> Result<IpNet, RuleErrorKind> {
    let (addr, prefix) = host.split_once('/').expect("caller checked for `/`");
    let bad = || RuleErrorKind::BadHost(format!("`{host}` is not a CIDR network"));
    let addr = addr
        .strip_prefix('[')
        .and_then(|a| a.strip_suffix(']'))
        .unwrap_or(addr);
    let addr: IpAddr = addr.parse().map_err(|_| bad())?;
    if prefix.is_empty() || prefix.len() > 3 || !prefix.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let prefix: u8 = prefix.parse().map_err(|_| bad())?;
    IpNet::new(addr, prefix).ok_or_else(bad)
}

/// Second-level labels that registries sell names under (`co.uk`, `com.au`, `ne.jp`, …). A wildcard
/// on `LABEL.CC` with one of these under a two-letter country code is a public-suffix wildcard.
/// A heuristic, not the Public Suffix List: it catches the common cases without a 200 KB table.
const REGISTRY_SECOND_LEVEL: &[&str] = &[
    "ac", "co", "com", "edu", "gen", "go", "gob", "gov", "gv", "info", "ltd", "me", "mil", "ne",
    "net", "nhs", "nic", "nom", "or", "org", "plc", "sch",
];

fn is_public_suffix(name: &str) -> bool {
    let mut labels = name.rsplit('.');
    let tld = labels.next().unwrap_or_default();
    match (labels.next(), labels.next()) {
        (None, _) => true,
        (Some(second), None) => tld.len() == 2 && REGISTRY_SECOND_LEVEL.contains(&second),
        _ => false,
    }
}

/// A rule that could not be parsed, naming it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("invalid rule `{rule}`: {reason}")]
pub struct RuleError {
    rule: String,
    // Part of the message, not a separate cause: printing a chain must not say it twice.
    reason: RuleErrorKind,
}

impl RuleError {
    /// The rule as it was written.
    pub fn rule(&self) -> &str {
        &self.rule
    }

    pub(crate) fn new(rule: &str, reason: RuleErrorKind) -> RuleError {
        RuleError {
            rule: rule.to_owned(),
            reason,
        }
    }
}

/// What is wrong with a rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub(crate) enum RuleErrorKind {
    #[error("empty rule")]
    Empty,
    #[error("{0}")]
    BadHost(String),
    #[error("bad port `{0}` (expected PORT or PORT-PORT within 1-65535)")]
    BadPorts(String),
    #[error(
        "`*` is only allowed as a whole leading label (`*.example.com`, `**.example.com`) or alone"
    )]
    BadWildcard,
    #[error("wildcards apply to names, not IP addresses (use a CIDR network)")]
    WildcardOnIp,
    #[error("a wildcard may not cover the public suffix `{0}`")]
    PublicSuffix(String),
    #[error("allow_local takes only IP addresses, CIDR networks and `localhost`")]
    NotLocalRule,
    /// The rule the URL should have been, when its host part is one.
    #[error("rules are hosts, not URLs: {}", url_advice(.0))]
    Url(Option<String>),
}

fn url_advice(host: &Option<String>) -> String {
    match host {
        Some(host) => format!("use `{host}`"),
        None => "write the host alone (`example.com`, `example.com:443`)".to_owned(),
    }
}

#[cfg(test)]
mod tests;
