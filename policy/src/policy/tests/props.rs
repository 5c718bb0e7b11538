//! Property tests: the spec's invariants against a naive oracle.

use std::net::{IpAddr, Ipv4Addr};

use proptest::prelude::*;

use super::{decide_text, policy};
use crate::{matcher::RuleSet, AllowLocal, Host, Protocol, Rule, Target};

const LABELS: &[&str] = &["a", "b", "example", "test", "org", "x-1"];
const IPS: &[&str] = &[
    "8.8.8.8",
    "8.8.4.4",
    "1.1.1.1",
    "2606:4700::1111",
    "2001:4860::8888",
];
const PORTS: &[u16] = &[80, 443, 8000, 8005, 9000];

fn name() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(LABELS), 1..=4).prop_map(|labels| labels.join("."))
}

fn host() -> impl Strategy<Value = String> {
    prop_oneof![4 => name(), 1 => prop::sample::select(IPS).prop_map(|ip| match ip.contains(':') {
        true => format!("[{ip}]"),
        false => ip.to_owned(),
    })]
}

fn ports() -> impl Strategy<Value = String> {
    prop::sample::select(vec!["", ":443", ":80", ":8000-8010"]).prop_map(str::to_owned)
}

/// Random rule text; wildcard bases of one label are skipped (they are public-suffix errors).
fn rule() -> impl Strategy<Value = String> {
    let host = prop_oneof![
        3 => name(),
        2 => name().prop_filter("multi-label base", |n| n.contains('.')).prop_map(|n| format!("*.{n}")),
        2 => name().prop_filter("multi-label base", |n| n.contains('.')).prop_map(|n| format!("**.{n}")),
        1 => Just("*".to_owned()),
        1 => prop::sample::select(IPS).prop_map(|ip| format!("[{ip}]").replace("[8.8.8.8]", "8.8.8.8")),
        1 => prop::sample::select(vec!["8.8.0.0/16", "8.0.0.0/8", "1.1.1.0/24", "[2606:4700::]/32"]).prop_map(str::to_owned),
    ];
    (host, ports()).prop_map(|(host, ports)| format!("{host}{ports}"))
}

fn rules() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(rule(), 0..12).prop_map(|texts| {
        texts
            .into_iter()
            .filter(|t| t.parse::<Rule>().is_ok())
            .collect()
    })
}

fn target(host: &str, port: u16) -> Target {
    Target::new(Host::parse(host).unwrap(), port).unwrap()
}

fn to_refs(texts: &[String]) -> Vec<&str> {
    texts.iter().map(String::as_str).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn compiled_matcher_agrees_with_a_linear_scan(texts in rules(), host in host(), port in prop::sample::select(PORTS)) {
        let parsed: Vec<Rule> = texts.iter().map(|t| t.parse().unwrap()).collect();
        let set = RuleSet::new(parsed.clone());
        let target = target(&host, port);
        let linear = parsed.iter().any(|r| r.matches(target.host(), port));
        let compiled = set.find(target.host(), port);
        prop_assert_eq!(compiled.is_some(), linear, "rules {:?} host {}", texts, target);
        if let Some(id) = compiled {
            prop_assert!(set.rule(id).matches(target.host(), port));
        }
    }

    #[test]
    fn deny_always_wins(allow in rules(), deny in rules(), host in host(), port in prop::sample::select(PORTS)) {
        let p = policy(&to_refs(&allow), &to_refs(&deny), AllowLocal::All);
        let target = target(&host, port);
        let denied = deny.iter().any(|t| t.parse::<Rule>().unwrap().matches(target.host(), port));
        let text = decide_text(&p, &target.to_string(), "GET", Protocol::Http);
        prop_assert_eq!(text.starts_with("deny denylist"), denied, "{} under deny {:?}", text, deny);
    }

    #[test]
    fn an_empty_allowlist_allows_nothing(deny in rules(), host in host(), port in prop::sample::select(PORTS)) {
        let p = policy(&[], &to_refs(&deny), AllowLocal::None);
        let text = decide_text(&p, &format!("{}:{port}", target(&host, port).host()), "GET", Protocol::Http);
        prop_assert!(!text.starts_with("allow"), "{}", text);
    }

    #[test]
    fn case_and_one_trailing_dot_never_change_a_decision(
        allow in rules(), deny in rules(), name in name(), upper in prop::collection::vec(any::<bool>(), 40), dot in any::<bool>()
    ) {
        let p = policy(&to_refs(&allow), &to_refs(&deny), AllowLocal::None);
        let mut spelled: String = name.chars().zip(upper.iter().cycle())
            .map(|(c, &up)| if up { c.to_ascii_uppercase() } else { c })
            .collect();
        if dot {
            spelled.push('.');
        }
        let plain = decide_text(&p, &format!("{name}:443"), "GET", Protocol::Http);
        prop_assert_eq!(decide_text(&p, &format!("{spelled}:443"), "GET", Protocol::Http), plain);
    }

    #[test]
    fn every_spelling_of_a_local_address_is_local(ip in local_v4(), spelling in 0usize..8, parts in 1usize..=4) {
        let p = policy(&["*"], &[], AllowLocal::None);
        let host = spell(ip, spelling, parts);
        prop_assert_eq!(decide_text(&p, &format!("{host}:80"), "GET", Protocol::Http), "deny local_address", "{}", host);
    }
}

fn local_v4() -> impl Strategy<Value = Ipv4Addr> {
    let nets: Vec<(u32, u8)> = vec![
        (0x0000_0000, 8),
        (0x0a00_0000, 8),
        (0x6440_0000, 10),
        (0x7f00_0000, 8),
        (0xa9fe_0000, 16),
        (0xac10_0000, 12),
        (0xc0a8_0000, 16),
        (0xc612_0000, 15),
        (0xe000_0000, 4),
        (0xf000_0000, 4),
    ];
    (prop::sample::select(nets), any::<u32>())
        .prop_map(|((base, prefix), noise)| Ipv4Addr::from(base | (noise >> prefix)))
}

/// One of the spellings a client might use: dotted in decimal, octal or hex, with 1–4 parts,
/// or an IPv6 form that carries the address.
fn spell(ip: Ipv4Addr, spelling: usize, parts: usize) -> String {
    let bits = u32::from(ip);
    let o = ip.octets();
    let number = |n: u32| match spelling % 3 {
        0 => n.to_string(),
        1 => format!("0{n:o}"),
        _ => format!("0x{n:x}"),
    };
    match spelling {
        0..=2 => {
            let head: Vec<String> = o[..parts - 1]
                .iter()
                .map(|&b| number(u32::from(b)))
                .collect();
            // The last part holds every byte the earlier parts leave open.
            let tail = bits & (u32::MAX >> (8 * (parts - 1)));
            let mut all = head;
            all.push(number(tail));
            all.join(".")
        }
        3 => format!("[::ffff:{ip}]"),
        4 => format!("[::ffff:{:x}:{:x}]", bits >> 16, bits & 0xffff),
        5 => format!("[64:ff9b::{:x}:{:x}]", bits >> 16, bits & 0xffff),
        6 => format!("[2002:{:x}:{:x}::1]", bits >> 16, bits & 0xffff),
        _ => IpAddr::V4(ip).to_string(),
    }
}

/// The case budget of the fuzz properties: a smoke run in `cargo test`, more with
/// `LEASH_FUZZ_CASES` (what `cargo xtask fuzz` sets).
pub(crate) fn fuzz_config() -> ProptestConfig {
    let cases = std::env::var("LEASH_FUZZ_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(512);
    ProptestConfig::with_cases(cases)
}

proptest! {
    #![proptest_config(fuzz_config())]

    #[test]
    fn fuzz_host_canonicalisation_never_panics(input in any::<String>(), bytes in prop::collection::vec(any::<u8>(), 0..80)) {
        let _ = Host::parse(&input);
        let _ = Target::parse(&input, Some(80));
        let lossy = String::from_utf8_lossy(&bytes);
        let _ = Target::parse(&lossy, None);
    }

    #[test]
    fn fuzz_canonical_hosts_are_fixed_points(input in "[a-zA-Z0-9.:%\\[\\]_x-]{0,70}") {
        if let Ok(host @ (Host::Name(_) | Host::Ip(_))) = Host::parse(&input) {
            prop_assert_eq!(Host::parse(&host.to_string()), Ok(host));
        }
    }

    #[test]
    fn fuzz_rule_parsing_never_panics_and_round_trips(input in any::<String>(), shaped in "[*a-z0-9.:/\\[\\]-]{0,40}") {
        for text in [&input, &shaped] {
            if let Ok(rule) = text.parse::<Rule>() {
                let again: Result<Rule, _> = rule.to_string().parse();
                prop_assert_eq!(again, Ok(rule), "{:?}", text);
            }
        }
    }
}
