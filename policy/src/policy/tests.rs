use super::*;
use crate::{lint, LintWarning};

#[path = "tests/props.rs"]
mod props;

fn rules(texts: &[&str]) -> Vec<Rule> {
    texts.iter().map(|t| t.parse().unwrap()).collect()
}

pub(super) fn policy(allow: &[&str], deny: &[&str], local: AllowLocal) -> Policy {
    let mut builder = Policy::builder().allow_local(local);
    for rule in rules(allow) {
        builder = builder.allow(rule);
    }
    for rule in rules(deny) {
        builder = builder.deny(rule);
    }
    builder.build().unwrap()
}

/// `allow RULE`, `ask allowlist_miss`, `deny denylist RULE`, `deny local_address`, …
pub(super) fn render(decision: &Decision) -> String {
    let mut text = decision.verdict().as_str().to_owned();
    if let Some(reason) = decision.reason() {
        text = format!("{text} {}", reason.code());
    }
    if let Some(rule) = decision.rule() {
        text = format!("{text} {rule}");
    }
    text
}

pub(super) fn decide_text(
    policy: &Policy,
    target: &str,
    method: &str,
    protocol: Protocol,
) -> String {
    let decision = match Target::parse(target, Some(443)) {
        Ok(target) => policy.decide(&Request::new(&target, method, protocol)),
        Err(error) => Decision::invalid_target(error),
    };
    render(&decision)
}

#[track_caller]
fn check(policy: &Policy, target: &str, expected: &str) {
    assert_eq!(
        decide_text(policy, target, "GET", Protocol::Http),
        expected,
        "target {target}"
    );
}

#[test]
fn step_1_invalid_targets_are_denied() {
    let p = policy(&["*"], &[], AllowLocal::None);
    for target in [
        "a..b",
        "exa mple.com",
        "%65vil.test",
        "ｅｖｉｌ.test",
        "evil\0.test",
        "1.2.3.4.5",
    ] {
        check(&p, target, "deny invalid_target");
    }
    check(
        &p,
        &format!("{}.test", "a".repeat(64)),
        "deny invalid_target",
    );
    check(&p, "example.com:65536", "deny invalid_target");
}

#[test]
fn step_2_deny_always_wins() {
    let p = policy(
        &["**.example.com", "*", "127.0.0.1"],
        &["evil.example.com", "*.bad.test", "1.2.3.4", "127.0.0.1"],
        AllowLocal::All,
    );
    check(&p, "evil.example.com", "deny denylist evil.example.com");
    check(&p, "EVIL.example.com.", "deny denylist evil.example.com");
    check(&p, "a.bad.test", "deny denylist *.bad.test");
    check(&p, "bad.test", "allow *");
    check(&p, "1.2.3.4", "deny denylist 1.2.3.4");
    check(&p, "[::ffff:1.2.3.4]", "deny denylist 1.2.3.4");
    check(&p, "[64:ff9b::102:304]", "deny denylist 1.2.3.4");
    check(&p, "[2002:102:304::1]", "deny denylist 1.2.3.4");
    // Deny wins over allow_local too.
    check(&p, "127.0.0.1", "deny denylist 127.0.0.1");
    check(&p, "2130706433", "deny denylist 127.0.0.1");
    check(&p, "good.example.com", "allow **.example.com");
    // `*` in deny blocks everything.
    let p = policy(&["example.com"], &["*"], AllowLocal::None);
    check(&p, "example.com", "deny denylist *");
}

#[test]
fn step_3_every_local_spelling_is_local() {
    let p = policy(&["*"], &[], AllowLocal::None);
    for target in [
        "localhost",
        "LOCALHOST.",
        "a.localhost",
        "localhost.localdomain",
        "metadata.google.internal",
        "127.0.0.1",
        "2130706433",
        "0177.0.0.1",
        "0x7f.1",
        "127.1",
        "[::ffff:127.0.0.1]",
        "[::ffff:7f00:1]",
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::1]",
        "[fe80::1%25eth0]",
        "0.0.0.0",
        "[::]",
        "[::1]",
        "169.254.169.254",
        "100.100.100.200",
        "168.63.129.16",
        "10.0.0.1",
        "192.168.1.1",
        "172.16.0.1",
        "100.64.0.1",
        "[fd00:ec2::254]",
        "[fc00::1]",
        "[2001:0:7f00:1::]",
        "[2001:db8::1]",
        "[ff02::1]",
        "224.0.0.1",
        "255.255.255.255",
    ] {
        check(&p, target, "deny local_address");
    }
    check(&p, "1.1.1.1", "allow *");
    check(&p, "[2606:4700::1111]", "allow *");
}

#[test]
fn step_3_allow_local_opens_exactly_what_it_names() {
    let only = |texts: &[&str]| AllowLocal::Only(rules(texts));
    let p = policy(&[], &[], only(&["127.0.0.1:8000"]));
    check(&p, "127.0.0.1:8000", "allow 127.0.0.1:8000");
    check(&p, "127.0.0.1:8001", "deny local_address");
    check(&p, "127.0.0.2:8000", "deny local_address");
    check(&p, "localhost:8000", "deny local_address");
    check(&p, "[::1]:8000", "deny local_address");
    check(&p, "10.0.0.1:8000", "deny local_address");
    check(&p, "example.com", "ask allowlist_miss");

    let p = policy(&[], &[], only(&["10.1.0.0/16", "localhost:3000-3999"]));
    check(&p, "10.1.2.3:22", "allow 10.1.0.0/16");
    check(&p, "10.2.0.1:22", "deny local_address");
    check(&p, "localhost:3000", "allow localhost:3000-3999");
    check(&p, "app.localhost:3001", "allow localhost:3000-3999");
    check(&p, "127.0.0.1:3999", "allow localhost:3000-3999");
    check(&p, "[::1]:3999", "allow localhost:3000-3999");
    check(&p, "localhost:4000", "deny local_address");
    check(&p, "metadata.google.internal:3000", "deny local_address");

    let p = policy(&[], &[], AllowLocal::All);
    check(&p, "127.0.0.1:5432", "allow allow_local");
    check(&p, "localhost", "allow allow_local");
    check(&p, "example.com", "ask allowlist_miss");
    // An allow rule for a local target names itself when it matches.
    let p = policy(&["localhost"], &[], AllowLocal::All);
    check(&p, "localhost", "allow localhost");
}

#[test]
fn step_4_allowlist() {
    let p = policy(&[], &[], AllowLocal::None);
    for target in ["example.com", "github.com", "1.1.1.1", "[2606:4700::1111]"] {
        check(&p, target, "ask allowlist_miss");
    }
    let p = policy(
        &[
            "example.com",
            "*.sub.test",
            "**.apex.test",
            "pypi.org:443",
            "8.8.8.0/24",
            "[2606:4700::]/32",
            "web.test:8000-8010",
        ],
        &[],
        AllowLocal::None,
    );
    check(&p, "example.com", "allow example.com");
    check(&p, "www.example.com", "ask allowlist_miss");
    check(&p, "sub.test", "ask allowlist_miss");
    check(&p, "a.sub.test", "allow *.sub.test");
    check(&p, "a.b.sub.test", "allow *.sub.test");
    check(&p, "apex.test", "allow **.apex.test");
    check(&p, "x.apex.test", "allow **.apex.test");
    check(&p, "pypi.org:443", "allow pypi.org:443");
    check(&p, "pypi.org:80", "ask allowlist_miss");
    check(&p, "8.8.8.8", "allow 8.8.8.0/24");
    check(&p, "8.8.9.8", "ask allowlist_miss");
    check(&p, "[2606:4700::1111]", "allow [2606:4700::]/32");
    check(&p, "web.test:8005", "allow web.test:8000-8010");
    check(&p, "web.test:8011", "ask allowlist_miss");
    // Raw IPs are not matched by name rules.
    check(&p, "93.184.216.34", "ask allowlist_miss");
    // The most specific rule names the decision.
    let p = policy(
        &["*", "**.example.com", "a.example.com"],
        &[],
        AllowLocal::None,
    );
    check(&p, "a.example.com", "allow a.example.com");
    check(&p, "b.example.com", "allow **.example.com");
    check(&p, "other.test", "allow *");
}

#[track_caller]
fn mode_check(
    policy: &Policy,
    method: &str,
    protocol: Protocol,
    shape: RequestShape<'_>,
    port: u16,
    expected: &str,
) {
    let target = Target::parse("example.com", Some(port)).unwrap();
    let request = Request {
        target: &target,
        method,
        protocol,
        shape,
    };
    assert_eq!(
        render(&policy.decide(&request)),
        expected,
        "{method} {protocol} {shape:?}"
    );
}

#[test]
fn step_5_limited_mode() {
    let limited = |mitm: bool| {
        let rule = "example.com".parse().unwrap();
        Policy::builder()
            .allow(rule)
            .mode(Mode::Limited)
            .tls_inspection(mitm)
            .build()
            .unwrap()
    };
    let plain = RequestShape::default();
    let p = limited(false);
    for method in ["GET", "HEAD", "OPTIONS"] {
        mode_check(&p, method, Protocol::Http, plain, 80, "allow example.com");
        mode_check(&p, method, Protocol::Https, plain, 443, "allow example.com");
    }
    for method in ["POST", "PUT", "DELETE", "PATCH", "get", "TRACE"] {
        mode_check(
            &p,
            method,
            Protocol::Http,
            plain,
            80,
            "deny method_not_allowed",
        );
    }
    let body = RequestShape {
        has_body: true,
        ..plain
    };
    mode_check(
        &p,
        "GET",
        Protocol::Http,
        body,
        80,
        "deny method_not_allowed",
    );
    let upgrade = RequestShape {
        upgrade: true,
        ..plain
    };
    mode_check(
        &p,
        "GET",
        Protocol::Https,
        upgrade,
        443,
        "deny method_not_allowed",
    );
    let delete = RequestShape {
        method_overrides: &["DELETE"],
        ..plain
    };
    mode_check(
        &p,
        "GET",
        Protocol::Http,
        delete,
        80,
        "deny method_not_allowed",
    );
    let head = RequestShape {
        method_overrides: &[" head"],
        ..plain
    };
    mode_check(&p, "GET", Protocol::Http, head, 80, "allow example.com");
    // A safe override first does not hide an unsafe one after it.
    let hidden = RequestShape {
        method_overrides: &["GET", "DELETE"],
        ..plain
    };
    mode_check(
        &p,
        "GET",
        Protocol::Http,
        hidden,
        80,
        "deny method_not_allowed",
    );
    mode_check(
        &p,
        "CONNECT",
        Protocol::Connect,
        plain,
        443,
        "deny mitm_required",
    );
    mode_check(
        &p,
        "CONNECT",
        Protocol::Socks5,
        plain,
        443,
        "deny protocol_not_allowed",
    );
    let p = limited(true);
    mode_check(
        &p,
        "CONNECT",
        Protocol::Connect,
        plain,
        443,
        "allow example.com",
    );
    mode_check(
        &p,
        "CONNECT",
        Protocol::Socks5,
        plain,
        443,
        "allow example.com",
    );
    mode_check(
        &p,
        "CONNECT",
        Protocol::Socks5,
        plain,
        22,
        "deny protocol_not_allowed",
    );
    mode_check(
        &p,
        "CONNECT",
        Protocol::Socks5Udp,
        plain,
        443,
        "deny protocol_not_allowed",
    );
    // Full mode lets every method through.
    let p = policy(&["example.com"], &[], AllowLocal::None);
    mode_check(&p, "DELETE", Protocol::Http, body, 80, "allow example.com");
    mode_check(
        &p,
        "CONNECT",
        Protocol::Socks5,
        plain,
        22,
        "allow example.com",
    );
}

#[track_caller]
fn vet_check(policy: &Policy, target: &str, addrs: &[&str], expected: &str) {
    let target = Target::parse(target, Some(443)).unwrap();
    let addrs: Vec<IpAddr> = addrs.iter().map(|a| a.parse().unwrap()).collect();
    assert_eq!(
        render(&policy.vet(&target, &addrs)),
        expected,
        "{target} -> {addrs:?}"
    );
}

#[test]
fn vet_checks_every_resolved_address() {
    let p = policy(
        &["**.example.com"],
        &["9.9.9.9", "66.0.0.0/8"],
        AllowLocal::None,
    );
    vet_check(
        &p,
        "a.example.com",
        &["93.184.216.34"],
        "allow **.example.com",
    );
    vet_check(
        &p,
        "a.example.com",
        &["93.184.216.34", "2606:2800::1"],
        "allow **.example.com",
    );
    vet_check(
        &p,
        "a.example.com",
        &["93.184.216.34", "127.0.0.1"],
        "deny local_address",
    );
    vet_check(&p, "a.example.com", &["10.0.0.7"], "deny local_address");
    vet_check(
        &p,
        "a.example.com",
        &["::ffff:169.254.169.254"],
        "deny local_address",
    );
    vet_check(
        &p,
        "a.example.com",
        &["64:ff9b::a9fe:a9fe"],
        "deny local_address",
    );
    vet_check(&p, "a.example.com", &["9.9.9.9"], "deny denylist 9.9.9.9");
    vet_check(
        &p,
        "a.example.com",
        &["66.1.2.3"],
        "deny denylist 66.0.0.0/8",
    );
    vet_check(&p, "a.example.com", &[], "deny local_address");
    // A name no rule allows (a `Decider` approved it) passes on its addresses alone.
    vet_check(&p, "approved.test", &["93.184.216.34"], "allow post-dns");
    vet_check(&p, "approved.test", &["127.0.0.1"], "deny local_address");
    vet_check(&p, "approved.test", &["9.9.9.9"], "deny denylist 9.9.9.9");
    let target = Target::parse("a.example.com", Some(443)).unwrap();
    let addrs: Vec<IpAddr> = vec![
        "8.8.8.8".parse().unwrap(),
        "127.0.0.1".parse().unwrap(),
        "10.0.0.1".parse().unwrap(),
    ];
    let expected = vec![addrs[1], addrs[2]];
    assert_eq!(
        p.vet(&target, &addrs),
        Decision::Deny(BlockReason::LocalAddress { addrs: expected })
    );

    let p = policy(
        &["dev.test"],
        &[],
        AllowLocal::Only(rules(&["127.0.0.1:8000"])),
    );
    vet_check(&p, "dev.test:8000", &["127.0.0.1"], "allow dev.test");
    vet_check(&p, "dev.test:8001", &["127.0.0.1"], "deny local_address");
    vet_check(&p, "dev.test:8000", &["127.0.0.2"], "deny local_address");
}

#[test]
fn explain_traces_each_step() {
    let p = policy(&["**.github.com"], &["gist.github.com"], AllowLocal::None);
    let target = Target::parse("api.github.com:443", None).unwrap();
    let explanation = p.explain(&Request::new(&target, "CONNECT", Protocol::Connect));
    assert_eq!(render(&explanation.decision), "allow **.github.com");
    let steps: Vec<String> = explanation.steps.iter().map(|s| format!("{s:?}")).collect();
    assert_eq!(steps.len(), 5, "{steps:#?}");
    assert!(steps[0].contains("api.github.com:443"));
    assert!(steps[1].contains("Denylist { rule: None }"));
    assert!(steps[2].contains("local: false"));
    assert!(steps[3].contains("**.github.com"));
    assert!(steps[4].contains("allowed: true"));

    let target = Target::parse("gist.github.com:443", None).unwrap();
    let explanation = p.explain(&Request::new(&target, "CONNECT", Protocol::Connect));
    assert_eq!(explanation.steps.len(), 2, "stops at the deny step");
    assert_eq!(
        explanation.decision,
        p.decide(&Request::new(&target, "CONNECT", Protocol::Connect))
    );
}

#[test]
fn lint_warnings() {
    let warnings = |allow: &[&str], deny: &[&str], local: AllowLocal| -> Vec<String> {
        lint(&policy(allow, deny, local))
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        warnings(
            &["github.com", "**.example.com"],
            &["evil.test"],
            AllowLocal::None
        ),
        Vec::<String>::new()
    );
    assert_eq!(
        warnings(&[], &["*"], AllowLocal::None),
        ["`*` in deny blocks every request"]
    );
    assert_eq!(
        warnings(
            &["a.example.com", "**.example.com", "example.com:443"],
            &[],
            AllowLocal::None
        ),
        [
            "allow rule `a.example.com` is already covered by `**.example.com`",
            "allow rule `example.com:443` is already covered by `**.example.com`",
        ]
    );
    assert_eq!(
        warnings(
            &["x.evil.test", "ok.test"],
            &["**.evil.test"],
            AllowLocal::None
        ),
        ["allow rule `x.evil.test` can never match: deny rule `**.evil.test` covers it"]
    );
    assert_eq!(
        warnings(
            &["localhost", "127.0.0.1", "10.0.0.0/8", "github.com"],
            &[],
            AllowLocal::None
        ),
        [
            "allow rule `localhost` only names local targets, which allow_local = false refuses",
            "allow rule `127.0.0.1` only names local targets, which allow_local = false refuses",
            "allow rule `10.0.0.0/8` only names local targets, which allow_local = false refuses",
        ]
    );
    assert!(warnings(&["localhost"], &[], AllowLocal::All).is_empty());
    assert_eq!(
        warnings(&["*", "github.com"], &[], AllowLocal::None),
        ["`*` in allow makes every other allow rule redundant"]
    );
    assert_eq!(
        warnings(&[], &["10.0.0.0/8", "10.1.0.0/16"], AllowLocal::None),
        ["deny rule `10.1.0.0/16` is already covered by `10.0.0.0/8`"]
    );
    // Duplicates are merged at load, so they are not reported as shadowing.
    assert!(warnings(&["github.com", "GITHUB.com."], &[], AllowLocal::None).is_empty());
}

#[test]
fn lint_never_changes_a_decision() {
    let p = policy(
        &["a.example.com", "**.example.com"],
        &["x.example.com"],
        AllowLocal::None,
    );
    let before = decide_text(&p, "a.example.com", "GET", Protocol::Http);
    assert!(!lint(&p).is_empty());
    assert_eq!(
        decide_text(&p, "a.example.com", "GET", Protocol::Http),
        before
    );
    assert!(matches!(lint(&p)[0], LintWarning::Shadowed { .. }));
}

#[test]
fn config_errors_name_the_key() {
    let config = PolicyConfig {
        allow: vec!["github.com".into(), "*.com".into()],
        ..PolicyConfig::default()
    };
    let error = Policy::from_config(&config, Mode::Full).unwrap_err();
    assert_eq!(error.key(), "allow[1]");
    assert_eq!(
        error.to_string(),
        "`allow[1]`: invalid rule `*.com`: a wildcard may not cover the public suffix `com`"
    );
    let config = PolicyConfig {
        allow_local: AllowLocalConfig::Rules(vec!["127.0.0.1".into(), "example.com".into()]),
        ..PolicyConfig::default()
    };
    let error = Policy::from_config(&config, Mode::Full).unwrap_err();
    assert_eq!(error.key(), "allow_local[1]");
    assert!(error
        .to_string()
        .contains("only IP addresses, CIDR networks and `localhost`"));
    // `check` (what a config load runs) refuses what `build` refuses, with the same error.
    let builder = PolicyBuilder::from_config(&config).unwrap();
    assert_eq!(builder.check().unwrap_err(), error);
    let good = PolicyConfig {
        allow_local: AllowLocalConfig::Rules(vec!["127.0.0.1".into(), "localhost:8080".into()]),
        ..PolicyConfig::default()
    };
    let builder = PolicyBuilder::from_config(&good).unwrap();
    assert_eq!(builder.check(), Ok(()));
    assert!(builder.build().is_ok());
}
