use clap::Parser;
use policy::{Decision, Protocol, Request, Target};
use serde_json::json;

use super::*;
use crate::flags::PolicyFlags;

/// The policy `leash exec --config FILE FLAGS` runs with, `config` being the file's text, through
/// the same flag parser; `Err` when leash would refuse the flags (exit 2).
fn policy_with(config: &str, flags: &[String]) -> Result<Policy, String> {
    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        policy: PolicyFlags,
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leash.toml");
    std::fs::write(&file, config).unwrap();
    let args = ["leash", "--config", file.to_str().unwrap()]
        .into_iter()
        .map(str::to_owned)
        .chain(flags.iter().cloned());
    let cli = Cli::try_parse_from(args).map_err(|e| e.to_string())?;
    let config = cli.policy.load().map_err(|e| format!("{e:#}"))?;
    Ok(config.policy().expect("load checked the policy"))
}

/// The flags of the one hint in `text`, split as a shell would split them (they hold no spaces).
fn hint_flags(text: &str) -> Vec<String> {
    let lines: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix(FLAGS_PREFIX))
        .collect();
    assert!(lines.len() <= 1, "one hint per case: {text}");
    lines
        .first()
        .map(|l| l.split_whitespace().map(str::to_owned).collect())
        .unwrap_or_default()
}

/// The decision for the request a log line stands for: `decide`, then `vet` of the line's
/// addresses for a name that was refused after DNS.
fn decision(policy: &Policy, event: &Value) -> Decision {
    let host = event["host"].as_str().unwrap();
    let port = event["port"].as_u64().unwrap() as u16;
    let target = Target::new(Host::parse(host).unwrap(), port).unwrap();
    let protocol: Protocol = event["protocol"].as_str().unwrap().parse().unwrap();
    let method = event["method"].as_str().unwrap();
    let decision = policy.decide(&Request::new(&target, method, protocol));
    let addrs: Vec<IpAddr> = event["addrs"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| a.as_str().unwrap().parse().unwrap())
        .collect();
    match (
        decision.is_allowed(),
        target.host().name(),
        addrs.is_empty(),
    ) {
        (true, Some(_), false) => policy.vet(&target, &addrs),
        _ => decision,
    }
}

fn event(reason: &str, host: &str, port: u16, protocol: &str, method: &str) -> Value {
    json!({"decision": "deny", "reason": reason, "rule": null, "host": host, "port": port,
           "protocol": protocol, "method": method, "path": null, "mode": "full"})
}

/// For every reason a flag can lift: the block happens under the `base` config and flags, the
/// summary's hint names flags leash accepts, and with those flags added the same request is
/// allowed.
#[test]
fn every_hinted_flag_is_accepted_and_lifts_its_block() {
    let flags = |f: &[&str]| f.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let mut post_dns = event("local_address", "pypi.org", 443, "connect", "CONNECT");
    post_dns["addrs"] = json!(["203.0.113.80", "fd00::1"]);
    let mut upload = event("method_not_allowed", "upload.test", 80, "http", "POST");
    upload["path"] = json!("/upload");
    let limited = "mode = \"limited\"\n";
    let cases = [
        (
            "",
            flags(&[]),
            event("allowlist_miss", "x.test", 443, "connect", "CONNECT"),
        ),
        (
            "",
            flags(&[]),
            event("allowlist_miss", "8.8.8.8", 53, "socks5", "CONNECT"),
        ),
        (
            "",
            flags(&[]),
            event("allowlist_miss", "2001:4860::1", 443, "connect", "CONNECT"),
        ),
        (
            "",
            flags(&[]),
            event("local_address", "127.0.0.1", 8000, "http", "GET"),
        ),
        (
            "",
            flags(&[]),
            event("local_address", "::1", 8000, "http", "GET"),
        ),
        (
            "",
            flags(&[]),
            event("local_address", "10.1.2.3", 22, "socks5", "CONNECT"),
        ),
        (
            "",
            flags(&[]),
            event("local_address", "localhost", 3000, "http", "GET"),
        ),
        (
            "",
            flags(&[]),
            event("local_address", "app.localhost", 3000, "http", "GET"),
        ),
        ("", flags(&["--allow", "pypi.org"]), post_dns),
        (
            limited,
            flags(&["--allow", "x.test"]),
            event("mitm_required", "x.test", 443, "connect", "CONNECT"),
        ),
        (limited, flags(&["--allow", "upload.test"]), upload),
        (
            limited,
            flags(&["--allow", "x.test"]),
            event("protocol_not_allowed", "x.test", 443, "socks5", "CONNECT"),
        ),
        (
            limited,
            flags(&["--allow", "x.test"]),
            event("protocol_not_allowed", "x.test", 22, "socks5", "CONNECT"),
        ),
        (
            limited,
            flags(&["--allow", "x.test", "--mitm"]),
            event("protocol_not_allowed", "x.test", 22, "socks5", "CONNECT"),
        ),
        (
            limited,
            flags(&["--allow", "x.test"]),
            event("protocol_not_allowed", "x.test", 53, "socks5_udp", "UDP"),
        ),
    ];
    for (config, base, line) in cases {
        let before = decision(&policy_with(config, &base).unwrap(), &line);
        assert_eq!(
            before.reason().map(BlockReason::code),
            line["reason"].as_str(),
            "the case is a real block: {line}"
        );
        let text = summary("exec-1", std::slice::from_ref(&line));
        let hinted = hint_flags(&text);
        assert!(!hinted.is_empty(), "a flag lifts this block: {text}");
        let all: Vec<String> = base.iter().chain(&hinted).cloned().collect();
        let policy =
            policy_with(config, &all).unwrap_or_else(|e| panic!("leash refuses {all:?}: {e}"));
        let after = decision(&policy, &line);
        assert!(after.is_allowed(), "{all:?} still gives {after:?}:\n{text}");
    }
}

#[test]
fn a_name_refused_after_dns_shows_its_addresses_and_opens_them_not_the_name() {
    let mut line = event("local_address", "pypi.org", 443, "connect", "CONNECT");
    line["addrs"] = json!(["203.0.113.80"]);
    let text = summary("exec-1", &[line]);
    assert_eq!(
        text,
        "leash: blocked 1 request(s) of attempt exec-1:\n  pypi.org:443  local_address  x1\n    pypi.org → 203.0.113.80 (not public)\n    to allow: --allow-local 203.0.113.80:443\n"
    );
    assert!(
        policy_with("", &["--allow-local".into(), "pypi.org:443".into()]).is_err(),
        "leash refuses a name in allow_local, so the hint never names one"
    );
}

#[test]
fn the_summary_counts_by_host_and_reason_and_says_how_to_allow() {
    let mut events = vec![
        json!({"decision":"ask","host":"x.test","port":443,"reason":"allowlist_miss","rule":null}),
        json!({"decision":"ask","host":"x.test","port":443,"reason":"allowlist_miss","rule":null}),
        json!({"decision":"deny","host":"evil.test","port":80,"reason":"denylist","rule":"evil.test"}),
        json!({"decision":"deny","host":"127.0.0.1","port":8000,"reason":"local_address","rule":null,"addrs":["127.0.0.1"]}),
        json!({"decision":"deny","host":"::1","port":8000,"reason":"local_address","rule":null,"addrs":["::1"]}),
    ];
    for path in ["/upload", "/a", "/upload"] {
        events.push(
            json!({"decision":"deny","host":"x.test","port":80,"reason":"method_not_allowed",
                           "rule":null,"method":"POST","path":path,"protocol":"http"}),
        );
    }
    events.push(
        json!({"decision":"allow","host":"ok.test","port":443,"reason":null,"rule":"ok.test"}),
    );
    let text = summary("exec-1", &events);
    assert_eq!(
        text,
        "leash: blocked 8 request(s) of attempt exec-1:
  127.0.0.1:8000  local_address  x1
    to allow: --allow-local 127.0.0.1:8000
  [::1]:8000  local_address  x1
    to allow: --allow-local [::1]:8000
  evil.test:80  denylist  x1
    denied by rule `evil.test`: no flag loosens a deny rule; remove it from the config (or drop the --deny flag)
  x.test:80  method_not_allowed  x3
    POST /upload (and /a) is refused in limited mode (read-only: GET, HEAD, OPTIONS without a body)
    to allow: --mode full
  x.test:443  allowlist_miss  x2
    to allow: --allow x.test
"
    );
    assert_eq!(summary("exec-1", &[]), "");
    assert_eq!(summary("exec-1", &events[events.len() - 1..]), "");
}

/// One row per reason: the host its test line names and what its hint must say. The exhaustive
/// match makes a new reason state its hint here.
fn hint_row(reason: &BlockReason) -> (&'static str, &'static str) {
    match reason {
        BlockReason::AllowlistMiss => ("x.test", "to allow: --allow x.test"),
        BlockReason::Denylist { .. } => ("x.test", "no flag loosens a deny rule"),
        BlockReason::LocalAddress { .. } => (
            "metadata.google.internal",
            "is a local name that no allow_local rule can name",
        ),
        BlockReason::MethodNotAllowed { .. } => ("x.test", "to allow: --mode full"),
        BlockReason::ProtocolNotAllowed => ("x.test", "to allow: --mode full"),
        BlockReason::MitmRequired => ("x.test", "to allow: --mitm"),
        BlockReason::InvalidTarget(_) => (
            "a..b",
            "not a valid host and port: no rule or flag can allow it",
        ),
        BlockReason::AuthFailed => ("x.test", "wrong proxy credentials"),
        BlockReason::InvalidRequest { .. } => (
            "x.test",
            "malformed request (bad chunk): no flag changes this",
        ),
        BlockReason::HostMismatch => ("x.test", "named another host than the tunnel"),
        BlockReason::Declined => ("x.test", "was declined when asked"),
        BlockReason::CredentialScope { .. } => ("x.test", "which it is not for: no flag changes"),
    }
}

/// Every reason has a hint: a flag, or a sentence that names no flag leash would reject.
#[test]
fn every_reason_has_an_accurate_hint() {
    for code in BlockReason::CODES {
        let reason: BlockReason = code.parse().unwrap();
        let (host, expected) = hint_row(&reason);
        let mut line = event(code, host, 443, "connect", "CONNECT");
        line["detail"] = json!("bad chunk");
        let text = summary("exec-1", &[line]);
        assert!(text.contains(expected), "{code}: {text}");
        let hinted = hint_flags(&text);
        assert!(policy_with("", &hinted).is_ok(), "{code}: {hinted:?}");
    }
    // A reason this build does not know (a newer log) is listed without a hint.
    let text = summary(
        "exec-1",
        &[event("new_reason", "x.test", 443, "connect", "CONNECT")],
    );
    assert_eq!(
        text,
        "leash: blocked 1 request(s) of attempt exec-1:\n  x.test:443  new_reason  x1\n"
    );
}
