use super::*;
use crate::{Protocol, Request, Target};

fn rules(texts: &[&str]) -> Vec<Rule> {
    texts.iter().map(|t| t.parse().unwrap()).collect()
}

fn policy(allow: &[&str], local: AllowLocal, mode: Mode, mitm: bool) -> Policy {
    rules(allow)
        .into_iter()
        .fold(Policy::builder(), |builder, rule| builder.allow(rule))
        .allow_local(local)
        .mode(mode)
        .tls_inspection(mitm)
        .build()
        .unwrap()
}

fn only(texts: &[&str]) -> AllowLocal {
    AllowLocal::Only(rules(texts))
}

#[track_caller]
fn check(allow: &[&str], local: AllowLocal, expected: &[String]) {
    let warnings: Vec<String> = lint(&policy(allow, local, Mode::Full, false))
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(warnings, expected, "allow {allow:?}");
}

fn uncovered(rule: &str) -> String {
    format!(
        "allow rule `{rule}` names local targets that allow_local does not cover: local protection refuses them whatever the allow list says (add them to allow_local)"
    )
}

#[test]
fn a_local_allow_rule_outside_the_allow_local_list_is_dead() {
    let local = || only(&["10.1.0.0/16", "192.168.1.5:8000", "localhost"]);
    check(
        &["10.0.0.0/8", "192.168.1.5", "[fd00::]/8", "github.com"],
        local(),
        &[
            uncovered("10.0.0.0/8"),
            uncovered("192.168.1.5"),
            uncovered("[fd00::]/8"),
        ],
    );
    // Covered by a list rule (with its ports), or by `localhost`'s names and addresses: no warning.
    check(
        &[
            "10.1.2.0/24",
            "192.168.1.5:8000",
            "localhost:3000",
            "*.app.localhost",
            "127.0.0.1",
            "[::1]:8080",
        ],
        local(),
        &[],
    );
    // A rule that also names public targets is not dead.
    check(&["0.0.0.0/0"], local(), &[]);
    check(&["100.0.0.0/6"], local(), &[]);
    check(&["10.0.0.0/8", "[fd00::]/8"], AllowLocal::All, &[]);
    // With allow_local = false the older warning says so.
    check(
        &["192.168.1.5"],
        AllowLocal::None,
        &[
            "allow rule `192.168.1.5` only names local targets, which allow_local = false refuses"
                .to_owned(),
        ],
    );
}

#[test]
fn limited_mode_without_mitm_is_a_warning() {
    let warnings = |mode, mitm| {
        lint(&policy(&["github.com"], AllowLocal::None, mode, mitm))
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(
        warnings(Mode::Limited, false),
        ["mode = \"limited\" without [mitm] enabled: every HTTPS CONNECT is refused with mitm_required and every SOCKS5 connection with protocol_not_allowed; only plain-HTTP GET, HEAD and OPTIONS get through"]
    );
    assert!(warnings(Mode::Limited, true).is_empty());
    assert!(warnings(Mode::Full, false).is_empty());
}

#[test]
fn the_warned_decisions_are_what_lint_says_and_lint_changes_none() {
    let cases = [
        (
            policy(&["10.0.0.0/8"], only(&["10.1.0.0/16"]), Mode::Full, false),
            "10.2.0.1:80",
            Protocol::Http,
            "local_address",
        ),
        (
            policy(&["github.com"], AllowLocal::None, Mode::Limited, false),
            "github.com:443",
            Protocol::Connect,
            "mitm_required",
        ),
        (
            policy(&["github.com"], AllowLocal::None, Mode::Limited, false),
            "github.com:443",
            Protocol::Socks5,
            "protocol_not_allowed",
        ),
    ];
    for (policy, target, protocol, reason) in cases {
        let target = Target::parse(target, None).unwrap();
        let request = Request::new(&target, "CONNECT", protocol);
        let before = policy.decide(&request);
        assert_eq!(before.reason().map(|r| r.code()), Some(reason), "{target}");
        assert!(!lint(&policy).is_empty());
        assert_eq!(policy.decide(&request), before, "lint changed a decision");
    }
}
