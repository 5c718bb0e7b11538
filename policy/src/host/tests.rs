use std::net::IpAddr;

use super::*;

#[track_caller]
fn check(input: &str, expected: &str) {
    let host = Host::parse(input).unwrap_or_else(|e| panic!("{input:?} refused: {e}"));
    assert_eq!(host.to_string(), expected, "input {input:?}");
}

#[track_caller]
fn check_ip(input: &str, expected: &str) {
    let expected: IpAddr = expected.parse().unwrap();
    assert_eq!(
        Host::parse(input),
        Ok(Host::Ip(expected)),
        "input {input:?}"
    );
}

#[track_caller]
fn invalid(input: &str, expected: InvalidTarget) {
    assert_eq!(Host::parse(input), Err(expected), "input {input:?}");
}

#[test]
fn names_are_lowercased_and_lose_one_trailing_dot() {
    check("EXAMPLE.com.", "example.com");
    check("example.com", "example.com");
    check("Api.GitHub.COM", "api.github.com");
    check("under_score.test", "under_score.test");
    check("xn--bcher-kva.example", "xn--bcher-kva.example");
    check("a-b.c-d", "a-b.c-d");
    check("localhost", "localhost");
    check(
        &format!("{}.test", "a".repeat(63)),
        &format!("{}.test", "a".repeat(63)),
    );
}

#[test]
fn every_ipv4_spelling_becomes_dotted_quad() {
    check_ip("127.0.0.1", "127.0.0.1");
    check_ip("2130706433", "127.0.0.1");
    check_ip("0177.0.0.1", "127.0.0.1");
    check_ip("0x7f.1", "127.0.0.1");
    check_ip("0X7F.0.0.1", "127.0.0.1");
    check_ip("127.1", "127.0.0.1");
    check_ip("127.0.0.1.", "127.0.0.1");
    check_ip("0", "0.0.0.0");
    check_ip("0.0.0.0", "0.0.0.0");
    check_ip("0xa9fea9fe", "169.254.169.254");
    check_ip("169.254.169.254", "169.254.169.254");
}

#[test]
fn ipv6_brackets_and_mapped_forms() {
    check_ip("[::1]", "::1");
    check_ip("::1", "::1");
    check_ip("[::]", "::");
    check_ip("[::ffff:127.0.0.1]", "127.0.0.1");
    check_ip("[::ffff:7f00:1]", "127.0.0.1");
    check_ip("[64:ff9b::7f00:1]", "64:ff9b::7f00:1");
    check_ip("[2002:7f00:1::1]", "2002:7f00:1::1");
    check_ip("[2001:DB8::1]", "2001:db8::1");
}

#[test]
fn zone_ids_are_removed_and_scoped() {
    let scoped = |s: &str| Host::ScopedIp(s.parse().unwrap());
    assert_eq!(Host::parse("[fe80::1%25eth0]"), Ok(scoped("fe80::1")));
    assert_eq!(Host::parse("[fe80::1%eth0]"), Ok(scoped("fe80::1")));
    assert_eq!(Host::parse("fe80::1%lo"), Ok(scoped("fe80::1")));
    assert_eq!(
        Host::parse("[2606:4700::1%25eth0]"),
        Ok(scoped("2606:4700::1"))
    );
    invalid("[fe80::1%]", InvalidTarget::BadIpv6);
    invalid("[fe80::1%25]", InvalidTarget::BadIpv6);
    invalid("[fe80::1%25e th0]", InvalidTarget::BadIpv6);
}

#[test]
fn invalid_hosts_are_refused_never_fixed_up() {
    invalid("", InvalidTarget::Empty);
    invalid("a..b", InvalidTarget::EmptyLabel);
    invalid(".example.com", InvalidTarget::EmptyLabel);
    invalid("example.com..", InvalidTarget::EmptyLabel);
    invalid("exa mple.com", InvalidTarget::ForbiddenByte { byte: b' ' });
    invalid("%65vil.test", InvalidTarget::PercentEscape);
    invalid("ｅｖｉｌ.test", InvalidTarget::NonAscii);
    invalid("bücher.example", InvalidTarget::NonAscii);
    invalid(
        &format!("{}.test", "a".repeat(64)),
        InvalidTarget::LabelTooLong { len: 64 },
    );
    invalid(
        &["abcdefghi"; 26].join("."),
        InvalidTarget::NameTooLong { len: 259 },
    );
    invalid("evil\0.test", InvalidTarget::ForbiddenByte { byte: 0 });
    invalid(
        "evil.test\r\nX: y",
        InvalidTarget::ForbiddenByte { byte: b'\r' },
    );
    invalid(
        "allowed.test@evil.test",
        InvalidTarget::ForbiddenByte { byte: b'@' },
    );
    invalid(
        "allowed.test\\evil.test",
        InvalidTarget::ForbiddenByte { byte: b'\\' },
    );
    invalid("evil.test\t", InvalidTarget::ForbiddenByte { byte: b'\t' });
    invalid("a/b", InvalidTarget::ForbiddenByte { byte: b'/' });
    invalid("1.2.3.4.5", InvalidTarget::BadIpv4);
    invalid("1.2.3.09", InvalidTarget::BadIpv4);
    invalid("256.0.0.1", InvalidTarget::BadIpv4);
    invalid("example.123", InvalidTarget::BadIpv4);
    invalid("[::1", InvalidTarget::BadIpv6);
    invalid("[not-v6]", InvalidTarget::BadIpv6);
    invalid(":::", InvalidTarget::BadIpv6);
}

#[track_caller]
fn target(input: &str, default_port: Option<u16>, expected: Result<&str, InvalidTarget>) {
    let got = Target::parse(input, default_port).map(|t| t.to_string());
    assert_eq!(got, expected.map(str::to_owned), "input {input:?}");
}

#[test]
fn targets_with_ports() {
    target("example.com:443", None, Ok("example.com:443"));
    target("EXAMPLE.com.:80", None, Ok("example.com:80"));
    target("example.com", Some(443), Ok("example.com:443"));
    target("example.com", None, Err(InvalidTarget::MissingPort));
    target("[::1]:8000", None, Ok("[::1]:8000"));
    target("[::ffff:127.0.0.1]:80", None, Ok("127.0.0.1:80"));
    target("::1", Some(80), Ok("[::1]:80"));
    target("[::1]", Some(80), Ok("[::1]:80"));
    target("[fe80::1%25eth0]:80", None, Ok("[fe80::1]:80"));
    target("2130706433:80", None, Ok("127.0.0.1:80"));
    target("example.com:0", None, Err(InvalidTarget::BadPort));
    target("example.com:65536", None, Err(InvalidTarget::BadPort));
    target("example.com:-1", None, Err(InvalidTarget::BadPort));
    target("example.com:+80", None, Err(InvalidTarget::BadPort));
    target("example.com:", None, Err(InvalidTarget::BadPort));
    target("example.com:123456", None, Err(InvalidTarget::BadPort));
    target("[::1]x", None, Err(InvalidTarget::BadIpv6));
}
