//! The summary `leash exec` prints of what was blocked (SPEC §11): one entry per host, port, reason
//! and detail, each with a hint that works. A rule a hint prints (`--allow R`, `--allow-local R`)
//! is checked here against the policy crate first: it parses as the flag parses it, and lifts that
//! very block. The other flags are fixed (`--mitm`, `--mode full`); the unit tests run every hint
//! through the real flag parser and policy. Where no flag can lift a block (a deny rule, an
//! invalid target, …) the hint says so instead.
//!
//! The input is the violation log's lines as JSON, the same lines `/blocked` serves.

use std::{collections::BTreeMap, net::IpAddr};

use policy::{AllowLocal, BlockReason, Host, Policy, Protocol, Request, Rule, Target};
use serde_json::Value;

/// What the summary prints in front of a hint's flags; tests look for it.
pub(crate) const FLAGS_PREFIX: &str = "to allow: ";

/// A summary of every block in `events`, or nothing when there was none.
pub(crate) fn summary(attempt: &str, events: &[Value]) -> String {
    let mut groups: BTreeMap<Key, Group> = BTreeMap::new();
    let mut blocked = 0;
    for line in events.iter().filter(|e| e["decision"] != "allow") {
        blocked += 1;
        let event = Event::read(line);
        let group = groups.entry(event.key()).or_insert_with(|| Group {
            count: 0,
            paths: Vec::new(),
            event,
        });
        group.count += 1;
        if let Some(path) = line["path"].as_str() {
            if !group.paths.iter().any(|p| p == path) {
                group.paths.push(path.to_owned());
            }
        }
    }
    if blocked == 0 {
        return String::new();
    }
    let mut out = format!("leash: blocked {blocked} request(s) of attempt {attempt}:\n");
    for group in groups.values() {
        out += &group.render();
    }
    out
}

/// One blocked log line, its reason parsed back into the policy's type.
struct Event {
    /// The host as logged (already escaped by the log).
    host: String,
    port: u16,
    /// `None` for a code this build does not know (a newer log): printed without a hint.
    reason: Option<BlockReason>,
    code: String,
    protocol: Option<Protocol>,
}

/// Events with the same key share one entry of the summary.
#[derive(PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    host: String,
    port: u16,
    code: String,
    /// What else changes the hint: the deny rule, the addresses, the method, the protocol.
    detail: String,
}

struct Group {
    count: usize,
    /// The distinct paths, in the order first seen.
    paths: Vec<String>,
    event: Event,
}

/// What to tell the person about one entry.
struct Hint {
    /// A sentence, if one helps.
    note: Option<String>,
    /// Flags that lift the block.
    flags: Vec<String>,
}

impl Hint {
    fn none() -> Hint {
        Hint {
            note: None,
            flags: Vec::new(),
        }
    }

    fn flags(flags: Vec<String>) -> Hint {
        Hint { note: None, flags }
    }

    fn note(note: String) -> Hint {
        Hint {
            note: Some(note),
            flags: Vec::new(),
        }
    }

    fn with_flags(note: String, flags: &[&str]) -> Hint {
        Hint {
            note: Some(note),
            flags: flags.iter().map(|f| (*f).to_owned()).collect(),
        }
    }
}

impl Event {
    fn read(line: &Value) -> Event {
        let text = |key: &str| line[key].as_str().unwrap_or_default().to_owned();
        let code = text("reason");
        let reason = code.parse().ok().map(|reason| with_details(reason, line));
        Event {
            host: text("host"),
            port: line["port"]
                .as_u64()
                .and_then(|p| u16::try_from(p).ok())
                .unwrap_or(0),
            reason,
            code,
            protocol: line["protocol"].as_str().and_then(|p| p.parse().ok()),
        }
    }

    fn key(&self) -> Key {
        let detail = match &self.reason {
            Some(BlockReason::Denylist { rule }) => rule.to_string(),
            Some(BlockReason::LocalAddress { addrs }) => format!("{addrs:?}"),
            Some(BlockReason::MethodNotAllowed { method }) => method.clone(),
            Some(BlockReason::InvalidRequest { detail }) => detail.clone(),
            Some(BlockReason::ProtocolNotAllowed) => format!("{:?}", self.protocol),
            Some(BlockReason::CredentialScope { credential }) => credential.to_string(),
            Some(
                BlockReason::AllowlistMiss
                | BlockReason::MitmRequired
                | BlockReason::InvalidTarget(_)
                | BlockReason::AuthFailed
                | BlockReason::HostMismatch
                | BlockReason::Declined,
            )
            | None => String::new(),
        };
        Key {
            host: self.host.clone(),
            port: self.port,
            code: self.code.clone(),
            detail,
        }
    }

    /// `host:port`, IPv6 in brackets; `-` for a request that named no target.
    fn subject(&self) -> String {
        match (self.host.as_str(), self.host.contains(':')) {
            ("", _) => "-".to_owned(),
            (host, true) => format!("[{host}]:{}", self.port),
            (host, false) => format!("{host}:{}", self.port),
        }
    }

    /// The target as the policy sees it, when the line names a valid one.
    fn target(&self) -> Option<Target> {
        Target::new(Host::parse(&self.host).ok()?, self.port).ok()
    }
}

/// The reason with the details its log line carries in fields of their own.
fn with_details(reason: BlockReason, line: &Value) -> BlockReason {
    let text = |key: &str| line[key].as_str().unwrap_or_default().to_owned();
    match reason {
        BlockReason::Denylist { .. } => BlockReason::Denylist {
            rule: text("rule").into(),
        },
        BlockReason::LocalAddress { .. } => BlockReason::LocalAddress {
            addrs: line["addrs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|a| a.as_str()?.parse().ok())
                .collect(),
        },
        BlockReason::MethodNotAllowed { .. } => BlockReason::MethodNotAllowed {
            method: text("method"),
        },
        BlockReason::InvalidRequest { .. } => BlockReason::InvalidRequest {
            detail: text("detail"),
        },
        BlockReason::CredentialScope { .. } => BlockReason::CredentialScope {
            credential: text("detail").into(),
        },
        reason @ (BlockReason::AllowlistMiss
        | BlockReason::ProtocolNotAllowed
        | BlockReason::MitmRequired
        | BlockReason::InvalidTarget(_)
        | BlockReason::AuthFailed
        | BlockReason::HostMismatch
        | BlockReason::Declined) => reason,
    }
}

impl Group {
    fn render(&self) -> String {
        let event = &self.event;
        let mut out = format!("  {}  {}  x{}\n", event.subject(), event.code, self.count);
        let hint = match &event.reason {
            Some(reason) => hint(event, reason, &self.paths),
            None => Hint::none(),
        };
        if let Some(note) = hint.note {
            out += &format!("    {note}\n");
        }
        if !hint.flags.is_empty() {
            out += &format!("    {FLAGS_PREFIX}{}\n", hint.flags.join(" "));
        }
        out
    }
}

/// The hint for one reason. Every reason is listed: a new one does not compile until it has a hint.
fn hint(event: &Event, reason: &BlockReason, paths: &[String]) -> Hint {
    let host = &event.host;
    match reason {
        BlockReason::AllowlistMiss => match allow_flag(event) {
            Some(rule) => Hint::flags(vec!["--allow".to_owned(), rule]),
            None => Hint::note(format!("{host} is not on the allowlist")),
        },
        BlockReason::Denylist { rule } => Hint::note(format!(
            "denied by rule `{rule}`: no flag loosens a deny rule; remove it from the config (or drop the --deny flag)"
        )),
        BlockReason::LocalAddress { addrs } => local_hint(event, addrs),
        BlockReason::MethodNotAllowed { method } => Hint::with_flags(
            format!(
                "{} is refused in limited mode (read-only: GET, HEAD, OPTIONS without a body)",
                method_and_paths(method, paths)
            ),
            &["--mode", "full"],
        ),
        BlockReason::ProtocolNotAllowed => protocol_hint(event),
        BlockReason::MitmRequired => Hint::with_flags(
            "limited mode checks HTTPS requests only with TLS interception".to_owned(),
            &["--mitm"],
        ),
        BlockReason::InvalidTarget(_) => {
            Hint::note("not a valid host and port: no rule or flag can allow it".to_owned())
        }
        BlockReason::AuthFailed => Hint::note(
            "wrong proxy credentials: the client did not use the proxy URL leash exec gave it (HTTP_PROXY, ALL_PROXY); no flag changes this".to_owned(),
        ),
        BlockReason::InvalidRequest { detail } => Hint::note(format!(
            "malformed request ({detail}): no flag changes this"
        )),
        BlockReason::HostMismatch => Hint::note(
            "a request inside the TLS tunnel named another host than the tunnel: no flag changes this".to_owned(),
        ),
        BlockReason::Declined => Hint::note(format!("{host} was declined when asked")),
        BlockReason::CredentialScope { credential } => Hint::note(format!(
            "the placeholder of credential `{credential}` was sent to {host}, which it is not for: no flag changes this (the credential's `hosts` name where it may go)"
        )),
    }
}

/// `POST /upload`, `POST /a (and /b)`, `POST /a (and 2 other paths)`, or the method alone.
fn method_and_paths(method: &str, paths: &[String]) -> String {
    match paths {
        [] => method.to_owned(),
        [path] => format!("{method} {path}"),
        [path, other] => format!("{method} {path} (and {other})"),
        [path, rest @ ..] => format!("{method} {path} (and {} other paths)", rest.len()),
    }
}

/// `--allow HOST` (IPv6 in brackets), when that rule parses and matches the target.
fn allow_flag(event: &Event) -> Option<String> {
    let target = event.target()?;
    let text = match target.host() {
        Host::Ip(IpAddr::V6(v6)) => format!("[{v6}]"),
        host => host.to_string(),
    };
    let rule: Rule = text.parse().ok()?;
    rule.matches(target.host(), target.port()).then_some(text)
}

/// A local literal or name gets `--allow-local` for itself; a name that resolved to local
/// addresses gets them shown, and one `--allow-local ADDR:PORT` per address (allow_local takes
/// addresses, never names other than `localhost`).
fn local_hint(event: &Event, addrs: &[IpAddr]) -> Hint {
    let Some(target) = event.target() else {
        return Hint::none();
    };
    let port = target.port();
    if target.host().name().is_some() && !addrs.is_empty() {
        let shown: Vec<String> = addrs.iter().map(ToString::to_string).collect();
        let note = format!("{} → {} (not public)", event.host, shown.join(", "));
        let rules: Vec<String> = addrs.iter().map(|ip| addr_port(*ip, port)).collect();
        return match opens_local(&rules, &target, addrs) {
            true => Hint {
                note: Some(note),
                flags: allow_local_flags(&rules),
            },
            false => Hint::note(note),
        };
    }
    let rule = match target.host() {
        Host::Name(_) => format!("localhost:{port}"),
        Host::Ip(ip) => addr_port(*ip, port),
        Host::ScopedIp(v6) => addr_port(IpAddr::V6(*v6), port),
    };
    let rules = [rule];
    match opens_local(&rules, &target, &[]) {
        true => Hint::flags(allow_local_flags(&rules)),
        false => Hint::note(format!(
            "{} is a local name that no allow_local rule can name; only --allow-local all opens it, and every other local address with it",
            event.host
        )),
    }
}

fn addr_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(v4) => format!("{v4}:{port}"),
        IpAddr::V6(v6) => format!("[{v6}]:{port}"),
    }
}

fn allow_local_flags(rules: &[String]) -> Vec<String> {
    rules
        .iter()
        .flat_map(|rule| ["--allow-local".to_owned(), rule.clone()])
        .collect()
}

/// Whether `allow_local` rules `rules` are accepted (as `--allow-local` checks them) and lift the
/// local-address block of `target`: before DNS when `addrs` is empty, else after it.
fn opens_local(rules: &[String], target: &Target, addrs: &[IpAddr]) -> bool {
    let Ok(rules) = rules.iter().map(|r| r.parse::<Rule>()).collect() else {
        return false;
    };
    let Ok(policy) = Policy::builder()
        .allow_local(AllowLocal::Only(rules))
        .build()
    else {
        return false;
    };
    match addrs.is_empty() {
        true => policy
            .decide(&Request::new(target, "GET", Protocol::Http))
            .is_allowed(),
        false => policy.vet(target, addrs).is_allowed(),
    }
}

/// Limited mode admits SOCKS5 only to port 443 with TLS interception, and never UDP.
fn protocol_hint(event: &Event) -> Hint {
    let port = event.port;
    match event.protocol {
        Some(Protocol::Socks5) if port == 443 => Hint::with_flags(
            "limited mode admits SOCKS5 to port 443 only with TLS interception".to_owned(),
            &["--mitm"],
        ),
        Some(Protocol::Socks5Udp) => Hint::with_flags(
            "limited mode cannot check UDP".to_owned(),
            &["--mode", "full"],
        ),
        Some(
            protocol @ (Protocol::Socks5 | Protocol::Http | Protocol::Connect | Protocol::Https),
        ) => Hint::with_flags(
            format!("limited mode cannot check {protocol} to port {port}"),
            &["--mode", "full"],
        ),
        None => Hint::with_flags(
            "limited mode cannot check this protocol".to_owned(),
            &["--mode", "full"],
        ),
    }
}

#[cfg(test)]
mod tests;
