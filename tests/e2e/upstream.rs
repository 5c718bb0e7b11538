//! The upstream (corporate) proxy (SPEC §16): leash behind a second, real leash acting as the
//! corporate proxy, with a token of its own and every allowed decision logged, so what went
//! through it can be counted at its log. The first leash's clients use the first leash's token;
//! the corporate leash accepts only its own.

use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use leash::{Config, ProxySetting, ResolveSetting};
use listeners::StaticResolver;
use policy::Mode;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_socks::tcp::Socks5Stream;

use tests::{curl, exchange, loopback, policy_config, start_proxy, Origin, TestCa, TestProxy};

/// The corporate proxy's own credentials (its username is the attempt id its log names).
const CORP_USER: &str = "corp";
const CORP_TOKEN: &str = "corp-secret";

/// A leash acting as the corporate proxy: it allows `names` (resolved to loopback) and the
/// origins' ports on loopback, wants its own token, and logs every allowed decision.
fn corporate(names: &[&str], origins: &[u16]) -> TestProxy {
    let local: Vec<String> = origins.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut config = policy_config(names, &[], &local);
    config.auth.token = CORP_TOKEN.into();
    config.log.log_allowed = true;
    let mut resolver = StaticResolver::new();
    for name in names {
        resolver = resolver.answer(name, &[loopback()]);
    }
    start_proxy(config, Arc::new(resolver), None)
}

/// `http://USER:PASSWORD@127.0.0.1:PORT` for the corporate proxy.
fn corp_url(corp: SocketAddr, password: &str) -> String {
    format!("http://{CORP_USER}:{password}@{corp}")
}

/// The first leash: allows `names` (token `tok`), sends everything through `upstream` but
/// `no_proxy`, and resolves with `resolver` (which records every lookup).
fn leash_behind(
    upstream: &str,
    names: &[&str],
    resolver: Arc<StaticResolver>,
    configure: impl FnOnce(&mut Config),
) -> TestProxy {
    let mut config = policy_config(names, &[], &[]);
    config.upstream.proxy = Some(upstream.parse::<ProxySetting>().expect("a proxy URL"));
    configure(&mut config);
    start_proxy(config, resolver, None)
}

/// The corporate proxy's allowed decisions for `protocol`, each `(host, port, attempt)`.
fn went_through(corp: &TestProxy, protocol: &str) -> Vec<(String, u64, String)> {
    corp.log_lines()
        .iter()
        .filter(|l| l["decision"] == "allow" && l["protocol"] == protocol)
        .map(|l| {
            let text = |key: &str| l[key].as_str().unwrap_or_default().to_owned();
            (
                text("host"),
                l["port"].as_u64().unwrap_or(0),
                text("attempt"),
            )
        })
        .collect()
}

/// `GET http://AUTHORITY/PATH` through the first leash, read with a raw client.
async fn get(proxy: &TestProxy, authority: &str, path: &str) -> tests::RawResponse {
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    let request = format!(
        "GET http://{authority}{path} HTTP/1.1\r\nHost: {authority}\r\n\
         Proxy-Authorization: Basic YTE6dG9r\r\nConnection: close\r\n\r\n"
    );
    exchange(&mut stream, request.as_bytes())
        .await
        .expect("an answer")
}

/// `CONNECT AUTHORITY` through the first leash; on `200`, a GET over the tunnel.
async fn connect(proxy: &TestProxy, authority: &str) -> (tests::RawResponse, Option<String>) {
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    let request = format!(
        "CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\
         Proxy-Authorization: Basic YTE6dG9r\r\n\r\n"
    );
    let answer = exchange(&mut stream, request.as_bytes())
        .await
        .expect("an answer");
    if answer.status != 200 {
        return (answer, None);
    }
    let get = b"GET /tunnelled HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    stream.write_all(get).await.unwrap();
    let mut body = String::new();
    let read = stream.read_to_string(&mut body);
    tokio::time::timeout(std::time::Duration::from_secs(10), read)
        .await
        .expect("the tunnel answers")
        .unwrap();
    (answer, Some(body))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http_connect_and_socks5_go_through_the_upstream_with_its_credentials_only() {
    let origin = Origin::http().await;
    let corp = corporate(&["origin.test"], &[origin.port()]);
    let resolver = Arc::new(StaticResolver::new());
    let proxy = leash_behind(
        &corp_url(corp.http, CORP_TOKEN),
        &["origin.test"],
        resolver.clone(),
        |_| {},
    );
    let authority = format!("origin.test:{}", origin.port());

    let answer = get(&proxy, &authority, "/plain").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(String::from_utf8_lossy(&answer.body), "hello from origin");
    let expected = vec![(
        "origin.test".to_owned(),
        u64::from(origin.port()),
        CORP_USER.to_owned(),
    )];
    assert_eq!(
        went_through(&corp, "http"),
        expected,
        "absolute-form, leash's credentials"
    );

    let (answer, body) = connect(&proxy, &authority).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(body.unwrap().ends_with("hello from origin"));
    assert_eq!(
        went_through(&corp, "connect"),
        expected,
        "a CONNECT, leash's credentials"
    );

    let socks = proxy.socks.expect("a SOCKS5 listener");
    let target = ("origin.test", origin.port());
    let mut stream = Socks5Stream::connect_with_password(socks, target, "a1", "tok")
        .await
        .unwrap();
    stream
        .write_all(b"GET /socks HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut body = String::new();
    stream.read_to_string(&mut body).await.unwrap();
    assert!(body.ends_with("hello from origin"), "{body}");
    let connects = went_through(&corp, "connect");
    assert_eq!(
        connects.len(),
        2,
        "SOCKS5 is a CONNECT upstream too: {connects:?}"
    );

    // The client's credentials never left the first leash: the corporate proxy, which takes only
    // its own token, logged every decision under leash's user, and the origin saw no proxy
    // header at all.
    let lines = corp.log_lines();
    assert!(lines.iter().all(|l| l["attempt"] == CORP_USER), "{lines:?}");
    let seen = origin.seen.requests();
    let paths: Vec<&str> = seen.iter().map(|r| r.uri.as_str()).collect();
    assert_eq!(paths, ["/plain", "/tunnelled", "/socks"]);
    for request in &seen {
        assert!(
            request
                .headers
                .iter()
                .all(|(name, _)| !name.starts_with("proxy-")),
            "{request:?}"
        );
    }
    assert_eq!(
        resolver.calls(),
        Vec::<String>::new(),
        "the upstream resolves names"
    );

    let admin = proxy.admin_client();
    let (status, config) = crate::admin::call(&admin, "GET", "/config", None, None).await;
    assert_eq!(status, 200);
    let shown = format!("http://{CORP_USER}:<redacted>@{}", corp.http);
    assert_eq!(config["upstream"]["proxy"], shown.as_str());
    assert!(!config.to_string().contains(CORP_TOKEN), "{config}");
}

/// A limited-mode leash with MITM behind the corporate proxy: the intercepted request's origin
/// connection is a `CONNECT` through the upstream, re-encrypted and verified end to end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mitm_origin_connections_go_through_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = TestCa::new("origin CA");
    let origin_ca_file = dir.path().join("origin-ca.pem");
    origin_ca.write_pem(&origin_ca_file);
    let origin = Origin::https(origin_ca.server_config(&["secure.test"], &[])).await;
    let corp = corporate(&["secure.test"], &[origin.port()]);
    let ca_dir = dir.path().join("ca");
    let proxy = leash_behind(
        &corp_url(corp.http, CORP_TOKEN),
        &["secure.test"],
        Arc::new(StaticResolver::new()),
        |config| {
            config.mode = Mode::Limited;
            config.mitm.enabled = true;
            config.mitm.ca_dir = Some(ca_dir.clone());
            config.mitm.upstream_ca = vec![origin_ca_file];
        },
    );
    let leash_ca: PathBuf = ca_dir.join("ca.pem");
    let url = format!("https://secure.test:{}/inside", origin.port());
    let proxy_url = proxy.proxy_url("a1:tok");
    let args = [
        "-x",
        &proxy_url,
        "--cacert",
        leash_ca.to_str().unwrap(),
        "-w",
        "\n%{http_code}",
        &url,
    ];
    let out = curl(&args).await;
    assert_eq!(out.text(), "hello from origin\n200", "{}", out.stderr);
    let expected = vec![(
        "secure.test".to_owned(),
        u64::from(origin.port()),
        CORP_USER.to_owned(),
    )];
    assert_eq!(went_through(&corp, "connect"), expected);
    assert_eq!(origin.seen.requests().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_proxy_targets_are_dialled_directly() {
    let origin = Origin::http().await;
    let corp = corporate(&["origin.test", "direct.test"], &[origin.port()]);
    let resolver = Arc::new(StaticResolver::new().answer("direct.test", &[loopback()]));
    let local = format!("127.0.0.1:{}", origin.port());
    let proxy = leash_behind(
        &corp_url(corp.http, CORP_TOKEN),
        &["direct.test", "origin.test"],
        resolver.clone(),
        |config| {
            config.policy.allow_local = policy::AllowLocalConfig::Rules(vec![local]);
            config.upstream.no_proxy = vec![leash::NoProxyRule("**.direct.test".parse().unwrap())];
        },
    );
    let authority = format!("direct.test:{}", origin.port());
    assert_eq!(get(&proxy, &authority, "/direct").await.status, 200);
    let (answer, _) = connect(&proxy, &authority).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    assert!(corp.log_lines().is_empty(), "the upstream saw nothing");
    assert_eq!(origin.seen.requests().len(), 2);
    assert_eq!(
        resolver.calls(),
        ["direct.test", "direct.test"],
        "vetted as usual"
    );

    // Everything else still goes through it.
    let through = get(&proxy, &format!("origin.test:{}", origin.port()), "/").await;
    assert_eq!(through.status, 200, "{through:?}");
    assert_eq!(went_through(&corp, "http").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_upstream_password_is_upstream_proxy_auth() {
    let origin = Origin::http().await;
    let corp = corporate(&["origin.test"], &[origin.port()]);
    let proxy = leash_behind(
        &corp_url(corp.http, "wrong"),
        &["origin.test"],
        Arc::new(StaticResolver::new()),
        |_| {},
    );
    let authority = format!("origin.test:{}", origin.port());
    for answer in [
        get(&proxy, &authority, "/").await,
        connect(&proxy, &authority).await.0,
    ] {
        assert_eq!(answer.status, 502, "{answer:?}");
        assert_eq!(answer.json()["reason"], "upstream_proxy_auth", "{answer:?}");
        assert!(
            !format!("{answer:?}").contains("wrong"),
            "no password in the answer"
        );
        assert_eq!(
            answer.header("proxy-authenticate"),
            None,
            "not leash asking the client"
        );
    }
    let socks = proxy.socks.expect("a SOCKS5 listener");
    let refused =
        Socks5Stream::connect_with_password(socks, ("origin.test", origin.port()), "a1", "tok")
            .await;
    assert!(refused.is_err(), "SOCKS5 is refused too");
    assert_eq!(origin.seen.connections(), 0);
    let blocks = corp.log_lines();
    assert!(
        blocks.iter().all(|l| l["reason"] == "auth_failed"),
        "{blocks:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_upstream_is_upstream_proxy_failed_and_never_a_direct_dial() {
    let origin = Origin::http().await;
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_addr = dead.local_addr().unwrap();
    drop(dead);
    let resolver = Arc::new(StaticResolver::new().answer("origin.test", &[loopback()]));
    let local = format!("127.0.0.1:{}", origin.port());
    // Everything a direct dial would need is there: the name resolves, the origin is allowed.
    let proxy = leash_behind(
        &format!("http://{dead_addr}"),
        &["origin.test"],
        resolver.clone(),
        |config| config.policy.allow_local = policy::AllowLocalConfig::Rules(vec![local]),
    );
    let authority = format!("origin.test:{}", origin.port());
    for answer in [
        get(&proxy, &authority, "/").await,
        connect(&proxy, &authority).await.0,
    ] {
        assert_eq!(answer.status, 502, "{answer:?}");
        assert_eq!(
            answer.json()["reason"],
            "upstream_proxy_failed",
            "{answer:?}"
        );
    }
    let socks = proxy.socks.expect("a SOCKS5 listener");
    let refused =
        Socks5Stream::connect_with_password(socks, ("origin.test", origin.port()), "a1", "tok")
            .await;
    assert!(refused.is_err(), "SOCKS5 is refused too");
    assert_eq!(origin.seen.connections(), 0, "no direct connection");
    assert_eq!(
        resolver.calls(),
        Vec::<String>::new(),
        "nor a lookup for one"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_upstreams_refusal_is_upstream_proxy_refused() {
    let origin = Origin::http().await;
    let corp = corporate(&["origin.test"], &[origin.port()]);
    let proxy = leash_behind(
        &corp_url(corp.http, CORP_TOKEN),
        &["elsewhere.test"],
        Arc::new(StaticResolver::new()),
        |_| {},
    );
    let (answer, _) = connect(&proxy, "elsewhere.test:443").await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert_eq!(
        answer.json()["reason"],
        "upstream_proxy_refused",
        "{answer:?}"
    );
    let blocks = corp.log_lines();
    assert_eq!(blocks.len(), 1, "{blocks:?}");
    assert_eq!(blocks[0]["host"], "elsewhere.test");
}

/// `resolve = "local"`: leash resolves and vets, so a name that resolves to loopback is refused
/// before anything reaches the upstream, and an allowed one goes as its vetted address.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resolve_local_vets_the_name_and_sends_the_vetted_address() {
    let origin = Origin::http().await;
    let corp = corporate(&["origin.test"], &[origin.port()]);
    let resolver = Arc::new(
        StaticResolver::new()
            .answer("rebind.test", &[loopback()])
            .answer("origin.test", &[loopback()]),
    );
    let local = format!("127.0.0.1:{}", origin.port());
    let proxy = leash_behind(
        &corp_url(corp.http, CORP_TOKEN),
        &["rebind.test", "origin.test"],
        resolver.clone(),
        |config| {
            config.upstream.resolve = ResolveSetting::Local;
            config.policy.allow_local = policy::AllowLocalConfig::Rules(vec![local]);
        },
    );
    // Port 22 is not the allowed local port: a rebinding name must not reach the upstream's
    // loopback (sshd, say).
    for answer in [
        get(&proxy, "rebind.test:22", "/").await,
        connect(&proxy, "rebind.test:22").await.0,
    ] {
        assert_eq!(answer.status, 403, "{answer:?}");
        assert_eq!(answer.json()["reason"], "local_address", "{answer:?}");
    }
    assert!(corp.log_lines().is_empty(), "the upstream saw nothing");

    let authority = format!("origin.test:{}", origin.port());
    let answer = get(&proxy, &authority, "/by-address").await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let (answer, _) = connect(&proxy, &authority).await;
    assert_eq!(answer.status, 200, "{answer:?}");
    let expected = (
        "127.0.0.1".to_owned(),
        u64::from(origin.port()),
        CORP_USER.to_owned(),
    );
    assert_eq!(
        went_through(&corp, "connect"),
        vec![expected.clone(), expected]
    );
    let host = origin.seen.requests()[0]
        .headers
        .iter()
        .find(|(n, _)| n == "host")
        .cloned();
    assert_eq!(
        host.map(|(_, v)| v),
        Some(authority),
        "the origin still sees its name"
    );
}

/// The real binary reads `proxy = "env"` from its own environment at start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_takes_the_upstream_from_its_environment() {
    let origin = Origin::http().await;
    let corp = corporate(&["origin.test"], &[origin.port()]);
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("leash.toml");
    let text = "[upstream]\nproxy = \"env\"\n[policy]\nallow = [\"origin.test\"]\n[listen]\nephemeral = true\n[admin]\nenabled = false\n";
    std::fs::write(&config, text).unwrap();
    let mut command = std::process::Command::new(tests::leash_bin());
    command
        .current_dir(dir.path())
        .args(["proxy", "--config", config.to_str().unwrap()])
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env("HTTPS_PROXY", corp_url(corp.http, CORP_TOKEN));
    let leash = tests::BinaryProxy::start(command, std::time::Duration::from_secs(20));
    let url = format!("http://origin.test:{}/from-env", origin.port());
    let out = curl(&["-x", &leash.http(), "-w", "\n%{http_code}", &url]).await;
    assert_eq!(out.text(), "hello from origin\n200", "{}", out.stderr);
    assert_eq!(went_through(&corp, "http").len(), 1);
    leash.kill();
}
