use super::*;
use crate::Target;

#[track_caller]
fn parses(input: &str, canonical: &str) {
    let rule: Rule = input.parse().unwrap_or_else(|e| panic!("{input:?}: {e}"));
    assert_eq!(rule.to_string(), canonical, "input {input:?}");
}

#[track_caller]
fn rejected(input: &str, message: &str) {
    let error = input.parse::<Rule>().expect_err(input).to_string();
    assert!(
        error.contains(&format!("`{input}`")),
        "{error:?} does not name the rule"
    );
    assert!(
        error.contains(message),
        "{error:?} does not say {message:?}"
    );
}

#[test]
fn every_rule_form_parses_to_its_canonical_spelling() {
    parses("example.com", "example.com");
    parses("EXAMPLE.com.", "example.com");
    parses("*.example.com", "*.example.com");
    parses("**.example.com", "**.example.com");
    parses("*", "*");
    parses("1.2.3.4", "1.2.3.4");
    parses("::1", "::1");
    parses("[::1]", "::1");
    parses("10.0.0.0/8", "10.0.0.0/8");
    parses("10.1.2.3/8", "10.0.0.0/8");
    parses("[fd00::]/8", "[fd00::]/8");
    parses("github.com:443", "github.com:443");
    parses("[::1]:8000", "[::1]:8000");
    parses("example.com:8000-8010", "example.com:8000-8010");
    parses("*:443", "*:443");
    parses("**.example.com:443", "**.example.com:443");
    parses("10.0.0.0/8:22", "10.0.0.0/8:22");
    parses("[fd00::]/8:443", "[fd00::]/8:443");
    parses("2130706433", "127.0.0.1");
    parses("[::ffff:1.2.3.4]", "1.2.3.4");
    parses("bücher.example", "xn--bcher-kva.example");
    parses("*.ｅｘａｍｐｌｅ.com", "*.example.com");
    parses("github.io", "github.io");
    parses("*.example.co.uk", "*.example.co.uk");
}

#[test]
fn bad_rules_are_load_errors_naming_the_rule() {
    rejected("", "empty rule");
    rejected("*.com", "public suffix `com`");
    rejected("**.com", "public suffix `com`");
    rejected("*.co.uk", "public suffix `co.uk`");
    rejected("**.com.au", "public suffix `com.au`");
    rejected("a*.b.com", "whole leading label");
    rejected("*example.com", "whole leading label");
    rejected("*.*.example.com", "whole leading label");
    rejected("example.*", "whole leading label");
    rejected("*.1.2.3.4", "not IP addresses");
    rejected("example.com:0", "bad port `0`");
    rejected("example.com:65536", "bad port");
    rejected("example.com:90-80", "bad port `90-80`");
    rejected("example.com:http", "bad port");
    rejected("exa mple.com", "forbidden byte");
    rejected("a..b", "empty label");
    rejected("10.0.0.0/33", "not a CIDR network");
    rejected("10.0.0.0/", "not a CIDR network");
    rejected("[fd00::]/129", "not a CIDR network");
    rejected("[fe80::1%25eth0]", "zone ids");
    rejected("[::1", "unclosed");
    rejected("[::1]x", "unexpected");
}

#[track_caller]
fn check(rule: &str, target: &str, expected: bool) {
    let rule: Rule = rule.parse().unwrap();
    let target = Target::parse(target, Some(443)).unwrap();
    assert_eq!(
        rule.matches(target.host(), target.port()),
        expected,
        "{rule} vs {target}"
    );
}

#[test]
fn what_each_form_matches() {
    check("example.com", "example.com", true);
    check("example.com", "a.example.com", false);
    check("*.example.com", "example.com", false);
    check("*.example.com", "a.example.com", true);
    check("*.example.com", "a.b.example.com", true);
    check("*.example.com", "badexample.com", false);
    check("**.example.com", "example.com", true);
    check("**.example.com", "a.b.example.com", true);
    check("**.example.com", "xexample.com", false);
    check("*", "anything.test", true);
    check("*", "1.2.3.4", true);
    check("1.2.3.4", "1.2.3.4", true);
    check("1.2.3.4", "[::ffff:1.2.3.4]", true);
    check("1.2.3.4", "1.2.3.5", false);
    check("10.0.0.0/8", "10.200.0.1", true);
    check("10.0.0.0/8", "11.0.0.1", false);
    check("[fd00::]/8", "[fd12::1]", true);
    check("[fd00::]/8", "[fe80::1]", false);
    check("::1", "[::1]", true);
    check("example.com:443", "example.com:443", true);
    check("example.com:443", "example.com:80", false);
    check("example.com:8000-8010", "example.com:8005", true);
    check("example.com:8000-8010", "example.com:8011", false);
    check("[::1]:8000", "[::1]:8000", true);
    check("[::1]:8000", "[::1]:8001", false);
    check("example.com", "1.2.3.4", false);
}

#[test]
fn coverage_between_rules() {
    let covers = |a: &str, b: &str| a.parse::<Rule>().unwrap().covers(&b.parse().unwrap());
    assert!(covers("**.example.com", "example.com"));
    assert!(covers("**.example.com", "*.a.example.com"));
    assert!(covers("*.example.com", "a.example.com"));
    assert!(!covers("*.example.com", "example.com"));
    assert!(!covers("*.example.com", "**.example.com"));
    assert!(covers("*.example.com", "**.a.example.com"));
    assert!(covers("*", "example.com:443"));
    assert!(covers("example.com", "example.com:443"));
    assert!(!covers("example.com:443", "example.com"));
    assert!(covers("example.com:1-1000", "example.com:443"));
    assert!(covers("10.0.0.0/8", "10.1.0.0/16"));
    assert!(covers("10.0.0.0/8", "10.1.2.3"));
    assert!(!covers("10.1.0.0/16", "10.0.0.0/8"));
    assert!(!covers("example.com", "*.example.com"));
}

#[test]
fn a_url_is_refused_with_the_host_it_should_have_been() {
    for (input, host) in [
        ("https://pypi.org/x", "pypi.org"),
        ("http://a.b", "a.b"),
        ("https://PyPI.org/simple/", "pypi.org"),
        ("pypi.org/simple", "pypi.org"),
        ("*.example.com/x", "*.example.com"),
        ("https://pypi.org:8443/simple", "pypi.org:8443"),
        ("http://[::1]:8000/x", "[::1]:8000"),
        ("https://user@pypi.org/", "pypi.org"),
        ("https://user:secret@pypi.org:443/x?y=1", "pypi.org:443"),
        ("git@github.com", "github.com"),
        ("https://pypi.org?q=1", "pypi.org"),
    ] {
        rejected(input, &format!("rules are hosts, not URLs: use `{host}`"));
        host.parse::<Rule>()
            .unwrap_or_else(|e| panic!("the advice for {input} is no rule: {e}"));
    }
    // No valid host inside: the error says so without advising another invalid rule.
    rejected(
        "https://",
        "rules are hosts, not URLs: write the host alone",
    );
    rejected(
        "file:///etc/hosts",
        "rules are hosts, not URLs: write the host alone",
    );
    rejected(
        "https://*.com/",
        "rules are hosts, not URLs: write the host alone",
    );
    // A `/` after an address is a CIDR prefix, never a path.
    parses("10.0.0.0/8", "10.0.0.0/8");
    parses("fd00::/8", "[fd00::]/8");
    rejected("10.0.0.0/x", "not a CIDR network");
    rejected("10.0.0/8", "not a CIDR network");
    rejected("0x7f.0.0.1/8", "not a CIDR network");
    rejected("[fd00::]/x", "not a CIDR network");
}
