//! The adversarial corpus (`tests/corpus/targets.toml`) through every ingress path: the policy
//! crate alone, HTTP absolute-form, CONNECT, SOCKS5 by domain and by address. Every path must reach
//! the entry's outcome, and a block must name the canonical host.

use std::{
    collections::HashMap,
    net::{IpAddr, SocketAddr},
    sync::Arc,
};

use leash::Config;
use listeners::StaticResolver;
use policy::{AllowLocalConfig, Decision, Policy, Protocol, Request, Target};
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use serde::Deserialize;
use tests::{policy_config, raw_request, start_proxy, LoopbackNat, Origin, TestCa, TestProxy};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

#[derive(Debug, Deserialize)]
struct Corpus {
    case: Vec<Case>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Case {
    host: String,
    #[serde(default = "default_port")]
    port: u16,
    policy: String,
    expect: String,
    canonical: Option<String>,
    #[serde(default)]
    not_over: HashMap<String, String>,
}

fn default_port() -> u16 {
    80
}

fn corpus() -> Vec<Case> {
    let text = include_str!("../corpus/targets.toml");
    let corpus: Corpus = toml::from_str(text).expect("the corpus parses");
    assert!(
        corpus.case.len() >= 60,
        "the corpus has at least 60 entries"
    );
    corpus.case
}

const PUBLIC: &str = "93.184.216.34";

fn answers() -> Vec<(&'static str, Vec<IpAddr>)> {
    let ip = |s: &str| s.parse::<IpAddr>().unwrap();
    vec![
        ("public.apex.test", vec![ip(PUBLIC)]),
        ("loopback.apex.test", vec![ip("127.0.0.1")]),
        ("mixed.apex.test", vec![ip(PUBLIC), ip("10.0.0.1")]),
        ("metadata.apex.test", vec![ip("169.254.169.254")]),
        ("mapped.apex.test", vec![ip("::ffff:127.0.0.1")]),
        ("nat64.apex.test", vec![ip("64:ff9b::a9fe:a9fe")]),
        ("denied-ip.allowed.test", vec![ip("9.9.9.9")]),
    ]
}

/// The test resolver with every answer of the corpus.
fn test_resolver() -> StaticResolver {
    answers()
        .into_iter()
        .fold(StaticResolver::new(), |resolver, (name, addrs)| {
            resolver.answer(name, &addrs)
        })
}

/// A connector that maps the "public" answers onto `origin`, so nothing leaves the machine.
fn public_to(origin: SocketAddr) -> LoopbackNat {
    LoopbackNat::default()
        .map(PUBLIC.parse().unwrap(), origin)
        .map("8.8.8.8".parse().unwrap(), origin)
}

fn config(policy: &str) -> Config {
    match policy {
        "open" => policy_config(
            &["*"],
            &["evil.test", "**.evil.test", "9.9.9.9", "66.0.0.0/8"],
            &[],
        ),
        "names" => policy_config(
            &[
                "allowed.test",
                "**.apex.test",
                "ports.test:8000-8010",
                "8.8.8.8",
            ],
            &["**.evil.test"],
            &[],
        ),
        "local" => policy_config(&["*"], &[], &["127.0.0.1:8000".into(), "[::1]:8000".into()]),
        other => panic!("unknown corpus policy {other}"),
    }
}

/// The policy crate alone: canonicalise, decide, then vet the test resolver's answer.
fn policy_outcome(case: &Case) -> (String, Option<String>) {
    let config = config(&case.policy);
    let policy = Policy::from_config(&config.policy, config.mode).unwrap();
    let target = match Target::parse(&format!("{}:{}", case.host, case.port), None) {
        Ok(target) => target,
        Err(_) => return ("invalid_target".into(), None),
    };
    let host = Some(target.host().to_string());
    let decision = policy.decide(&Request::new(&target, "GET", Protocol::Http));
    let decision = match (decision.is_allowed(), target.host().ip()) {
        (false, _) => decision,
        (true, Some(ip)) => policy.vet(&target, &[ip]),
        (true, None) => match answers()
            .into_iter()
            .find(|(name, _)| Some(*name) == target.host().name())
        {
            Some((_, addrs)) => policy.vet(&target, &addrs),
            None => return ("dns_failed".into(), host),
        },
    };
    (outcome_of(&decision), host)
}

fn outcome_of(decision: &Decision) -> String {
    decision.reason().map_or("allow", |r| r.code()).to_owned()
}

#[test]
fn the_policy_crate_alone() {
    let failures: Vec<String> = corpus()
        .iter()
        .filter_map(|case| {
            let (outcome, host) = policy_outcome(case);
            let canonical_ok = case
                .canonical
                .as_ref()
                .is_none_or(|c| host.as_ref() == Some(c));
            (outcome != case.expect || !canonical_ok).then(|| {
                format!(
                    "{:?}: got {outcome} for {host:?}, want {}",
                    case.host, case.expect
                )
            })
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// One proxy per corpus policy, with the test resolver and a connector that maps the "public"
/// answers onto a loopback origin.
struct Proxies {
    by_policy: HashMap<&'static str, TestProxy>,
    _origin: Origin,
}

async fn proxies() -> Proxies {
    let origin = Origin::http().await;
    let mut by_policy = HashMap::new();
    for policy in ["open", "names", "local"] {
        let (resolver, nat) = (test_resolver(), public_to(origin.addr));
        let mut config = config(policy);
        config.auth.token = String::new();
        if let AllowLocalConfig::Rules(rules) = &config.policy.allow_local {
            assert!(
                rules
                    .iter()
                    .all(|r| !r.contains(&origin.port().to_string())),
                "the origin stays unreachable directly"
            );
        }
        by_policy.insert(
            policy,
            start_proxy(config, Arc::new(resolver), Some(Arc::new(nat))),
        );
    }
    Proxies {
        by_policy,
        _origin: origin,
    }
}

/// `host:port` as it goes in a request line or CONNECT.
fn authority(case: &Case) -> String {
    format!("{}:{}", case.host, case.port)
}

/// The outcome an HTTP answer stands for: `allow` (200), the JSON `reason`, or `malformed` (a 400
/// from hyper before any decision).
fn http_outcome(response: &str) -> String {
    let status = response.split(' ').nth(1).unwrap_or("none");
    if status == "200" {
        return "allow".into();
    }
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    match serde_json::from_str::<serde_json::Value>(body.lines().next().unwrap_or_default()) {
        Ok(json) => json["reason"].as_str().unwrap_or("no reason").to_owned(),
        Err(_) => format!("malformed ({status})"),
    }
}

/// The newest logged event after `seen`, and the new high-water mark.
fn newest_event(proxy: &TestProxy, seen: &mut u64) -> Option<serde_json::Value> {
    let events = proxy.running().events(*seen, 100);
    let last = events.last().cloned();
    if let Some(event) = &last {
        *seen = event["seq"].as_u64().unwrap();
    }
    last
}

/// Runs the corpus over one path and returns the mismatches.
async fn run_path(path: &str, proxies: &Proxies) -> Vec<String> {
    let mut failures = Vec::new();
    // Each proxy's newest event so far: what this path logs comes after it.
    let mut seen: HashMap<&str, u64> = HashMap::new();
    for (policy, proxy) in &proxies.by_policy {
        let latest = proxy
            .running()
            .events(0, usize::MAX)
            .last()
            .map_or(0, |e| e["seq"].as_u64().unwrap());
        seen.insert(policy, latest);
    }
    for case in corpus() {
        if case.not_over.contains_key(path) {
            continue;
        }
        let proxy = &proxies.by_policy[case.policy.as_str()];
        let seen = seen.entry(proxy_key(&case)).or_default();
        let outcome = match path {
            "http" => {
                let raw = format!(
                    "GET http://{}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                    authority(&case)
                );
                http_outcome(&raw_request(proxy.http, raw.as_bytes()).await)
            }
            "connect" => {
                let raw = format!(
                    "CONNECT {} HTTP/1.1\r\nConnection: close\r\n\r\n",
                    authority(&case)
                );
                http_outcome(&raw_request(proxy.http, raw.as_bytes()).await)
            }
            "socks_domain" => socks_outcome(proxy, &socks_domain_request(&case)).await,
            "socks_ip" => match socks_ip_request(&case) {
                Some(request) => socks_outcome(proxy, &request).await,
                None => continue,
            },
            _ => unreachable!(),
        };
        let event = newest_event(proxy, seen);
        if outcome != case.expect {
            failures.push(format!(
                "{:?} over {path}: got {outcome}, want {}",
                case.host, case.expect
            ));
            continue;
        }
        let blocked = !matches!(outcome.as_str(), "allow" | "dns_failed");
        if blocked {
            let Some(event) = event else {
                failures.push(format!(
                    "{:?} over {path}: blocked but not logged",
                    case.host
                ));
                continue;
            };
            let wrong_reason = event["reason"] != outcome.as_str();
            let wrong_host = case
                .canonical
                .as_ref()
                .is_some_and(|c| event["host"] != c.as_str());
            if wrong_reason || wrong_host {
                failures.push(format!("{:?} over {path}: logged {event}", case.host));
            }
        }
    }
    failures
}

fn proxy_key(case: &Case) -> &'static str {
    match case.policy.as_str() {
        "open" => "open",
        "names" => "names",
        _ => "local",
    }
}

/// No-auth greeting, then CONNECT with a domain (ATYP 3).
fn socks_domain_request(case: &Case) -> Vec<u8> {
    let host = case.host.as_bytes();
    let mut bytes = vec![5, 1, 0, 5, 1, 0, 3, host.len() as u8];
    bytes.extend_from_slice(host);
    bytes.extend_from_slice(&case.port.to_be_bytes());
    bytes
}

/// No-auth greeting, then CONNECT with an address (ATYP 1 or 4), for entries that are plain IP
/// literals.
fn socks_ip_request(case: &Case) -> Option<Vec<u8>> {
    let bare = case.host.trim_start_matches('[').trim_end_matches(']');
    let ip: IpAddr = bare.parse().ok()?;
    let mut bytes = vec![5, 1, 0, 5, 1, 0];
    match SocketAddr::new(ip, case.port) {
        SocketAddr::V4(v4) => {
            bytes.push(1);
            bytes.extend_from_slice(&v4.ip().octets());
        }
        SocketAddr::V6(v6) => {
            bytes.push(4);
            bytes.extend_from_slice(&v6.ip().octets());
        }
    }
    bytes.extend_from_slice(&case.port.to_be_bytes());
    Some(bytes)
}

async fn socks_outcome(proxy: &TestProxy, request: &[u8]) -> String {
    let reply = raw_request(proxy.socks.expect("SOCKS5 listener"), request)
        .await
        .into_bytes();
    match reply.get(3) {
        Some(0) => "allow".into(),
        Some(2) => {
            let events = proxy.running().events(0, 100_000);
            events.last().map_or("blocked, unlogged".into(), |e| {
                e["reason"].as_str().unwrap_or("?").to_owned()
            })
        }
        Some(4) => "dns_failed".into(),
        other => format!("socks reply {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_ingress_path_reaches_the_same_outcome() {
    let proxies = proxies().await;
    let mut failures = Vec::new();
    for path in ["http", "connect", "socks_domain", "socks_ip"] {
        failures.extend(run_path(path, &proxies).await);
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

/// The MITM path: each entry is the target of a `CONNECT host:443` to a proxy that intercepts; an
/// allowed tunnel is entered with TLS and the request inside is decided again. Entries with a port
/// of their own are not meaningful here (the path is port 443).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mitm_path_reaches_the_same_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = TestCa::new("corpus origin CA");
    let origin_ca_file = dir.path().join("origin-ca.pem");
    origin_ca.write_pem(&origin_ca_file);
    let origin = Origin::https(
        origin_ca.server_config(&["public.apex.test"], &["8.8.8.8".parse().unwrap()]),
    )
    .await;
    let mut failures = Vec::new();
    for policy in ["open", "names", "local"] {
        let (resolver, nat) = (test_resolver(), public_to(origin.addr));
        let mut config = config(policy);
        config.auth.token = String::new();
        config.mitm.enabled = true;
        config.mitm.ca_dir = Some(dir.path().join(policy));
        config.mitm.upstream_ca = vec![origin_ca_file.clone()];
        let proxy = start_proxy(config, Arc::new(resolver), Some(Arc::new(nat)));
        let client = tls_client(&dir.path().join(policy).join("ca.pem"));
        for case in corpus()
            .iter()
            .filter(|c| c.policy == policy && c.port == 80)
        {
            if case.not_over.contains_key("connect") {
                continue;
            }
            let outcome = mitm_outcome(&proxy, &client, &case.host).await;
            if outcome != case.expect {
                failures.push(format!(
                    "{:?} over mitm: got {outcome}, want {}",
                    case.host, case.expect
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

fn tls_client(leash_ca: &std::path::Path) -> TlsConnector {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(leash_ca).expect("the leash CA"))
        .unwrap();
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn mitm_outcome(proxy: &TestProxy, client: &TlsConnector, host: &str) -> String {
    let mut tcp = TcpStream::connect(proxy.http).await.unwrap();
    tcp.write_all(format!("CONNECT {host}:443 HTTP/1.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut head = vec![0u8; 4096];
    let n = tcp.read(&mut head).await.unwrap_or(0);
    let head = String::from_utf8_lossy(&head[..n]).into_owned();
    if !head.starts_with("HTTP/1.1 200") {
        return http_outcome(&head);
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let name = match bare.parse::<IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(host.to_owned()).expect("an allowed name is a server name"),
    };
    let Ok(mut tls) = client.connect(name, tcp).await else {
        return "tls handshake refused".into();
    };
    let request = format!("GET / HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    let _ = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        tls.read_to_end(&mut response),
    )
    .await;
    http_outcome(&String::from_utf8_lossy(&response))
}
