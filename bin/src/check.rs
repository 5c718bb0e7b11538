//! `leash check HOST[:PORT]`: an offline decision with its trace (SPEC §11), from the policy crate
//! alone: no DNS, no sockets.

use clap::Args;
use policy::{ExplainReport, Explanation, Mode, Protocol, Request, Step, Target};

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
    let explanation = match Target::parse(&args.target, Some(default_port)) {
        Ok(target) => policy.explain(&Request::new(&target, &method, args.protocol)),
        Err(error) => Explanation::invalid_target(error),
    };
    let report = Report {
        target: &args.target,
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
    method: &'a str,
    protocol: Protocol,
    mode: Mode,
    explanation: &'a Explanation,
}

impl Report<'_> {
    fn json(&self) -> String {
        let report = ExplainReport {
            decision: &self.explanation.decision,
            target: self.target,
            method: self.method,
            protocol: self.protocol,
            mode: self.mode,
            steps: &self.explanation.steps,
        };
        serde_json::to_string(&report).expect("plain data serialises")
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
