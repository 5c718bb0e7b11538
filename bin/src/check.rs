//! `leash check HOST[:PORT]`: an offline decision with its trace (SPEC §11), from the policy crate
//! alone: no DNS, no sockets.

use clap::Args;
use policy::{ExplainReport, Explanation, Mode, Protocol, Request, Step, Target};
use serde::Serialize;

use crate::{flags::PolicyFlags, Exit};

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The target: HOST, HOST:PORT or [V6]:PORT. The port defaults to 80 for http, else 443.
    target: String,
    /// The method (default: CONNECT for connect and socks5, GET for http and https).
    #[arg(long)]
    method: Option<String>,
    /// How the request arrives: http, connect, https, socks5 or socks5_udp.
    #[arg(long, default_value = "connect")]
    protocol: Protocol,
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    policy: PolicyFlags,
}

pub(crate) fn run(args: CheckArgs) -> Exit {
    let config = match args.policy.load() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("leash: {error:#}");
            return Exit::Usage;
        }
    };
    let policy = config
        .policy()
        .expect("PolicyFlags::load checked the policy");
    let method = args
        .method
        .clone()
        .unwrap_or_else(|| default_method(args.protocol).to_owned());
    let default_port = if args.protocol == Protocol::Http {
        80
    } else {
        443
    };
    let (explanation, name) = match Target::parse(&args.target, Some(default_port)) {
        Ok(target) => (
            policy.explain(&Request::new(&target, &method, args.protocol)),
            target.host().name().map(str::to_owned),
        ),
        Err(error) => (Explanation::invalid_target(error), None),
    };
    let report = Report {
        target: &args.target,
        name: name.as_deref(),
        method: &method,
        protocol: args.protocol,
        mode: policy.mode(),
        explanation: &explanation,
    };
    match args.json {
        true => println!("{}", report.json()),
        false => print!("{}", report.text()),
    }
    match explanation.decision.is_allowed() {
        true => Exit::Ok,
        false => Exit::Refused,
    }
}

fn default_method(protocol: Protocol) -> &'static str {
    match protocol {
        Protocol::Http | Protocol::Https => "GET",
        Protocol::Connect | Protocol::Socks5 | Protocol::Socks5Udp => "CONNECT",
    }
}

struct Report<'a> {
    target: &'a str,
    /// The canonical name, when the target is a name (not an IP literal).
    name: Option<&'a str>,
    method: &'a str,
    protocol: Protocol,
    mode: Mode,
    explanation: &'a Explanation,
}

/// `--json`: the explanation, and whether the proxy would check the addresses after DNS.
#[derive(Serialize)]
struct CheckJson<'a> {
    #[serde(flatten)]
    report: ExplainReport<'a>,
    post_dns_check: bool,
}

impl Report<'_> {
    /// The name an allowed target resolves to: the proxy then vets every address (SPEC §1.4), which
    /// an offline check cannot, so a name allowed here may still be refused as `local_address`.
    fn post_dns_name(&self) -> Option<&str> {
        self.name.filter(|_| self.explanation.decision.is_allowed())
    }

    fn json(&self) -> String {
        let report = ExplainReport {
            decision: &self.explanation.decision,
            target: self.target,
            method: self.method,
            protocol: self.protocol,
            mode: self.mode,
            steps: &self.explanation.steps,
        };
        let json = CheckJson {
            report,
            post_dns_check: self.post_dns_name().is_some(),
        };
        serde_json::to_string(&json).expect("plain data serialises")
    }

    fn text(&self) -> String {
        let decision = &self.explanation.decision;
        let mut out = format!("{} {}", decision.verdict().as_str(), self.target);
        match (decision.reason(), decision.rule()) {
            (Some(reason), Some(rule)) => out += &format!(" ({}: `{rule}`)", reason.code()),
            (Some(reason), None) => out += &format!(" ({})", reason.code()),
            (None, Some(rule)) => out += &format!(" (rule `{rule}`)"),
            (None, None) => {}
        }
        out += &format!(
            "\n  {} {} in {} mode\n",
            self.protocol, self.method, self.mode
        );
        for (number, step) in self.explanation.steps.iter().enumerate() {
            out += &format!("  {}. {}\n", number + 1, step_text(step));
        }
        if let Some(name) = self.post_dns_name() {
            out += &format!(
                "note: {name} is a name: after DNS every address it resolves to is checked too (a local address is refused unless allow_local covers it, and so is an address a deny rule names)\n"
            );
        }
        out
    }
}

fn step_text(step: &Step) -> String {
    let rule = |rule: &Option<std::sync::Arc<str>>| match rule {
        Some(rule) => format!("matched `{rule}`"),
        None => "no match".to_owned(),
    };
    match step {
        Step::Target { target } => format!("target: {target}"),
        Step::InvalidTarget { error } => format!("target: invalid ({error})"),
        Step::Denylist { rule: r } => format!("deny list: {}", rule(r)),
        Step::Local { local: false, .. } => "local: not a local address".to_owned(),
        Step::Local {
            allowed_by: Some(by),
            ..
        } => format!("local: opened by allow_local `{by}`"),
        Step::Local { .. } => "local: refused (allow_local does not cover it)".to_owned(),
        Step::Allowlist { rule: r } => format!("allow list: {}", rule(r)),
        Step::Mode {
            mode,
            method,
            protocol,
            allowed,
        } => {
            let verdict = if *allowed { "allowed" } else { "refused" };
            format!("mode {mode}: {protocol} {method} {verdict}")
        }
        other => format!("{other:?}"),
    }
}
