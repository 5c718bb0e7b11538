//! The HTTP proxy end to end (SPEC §2, §3, §7): curl and raw TCP through a real leash to real
//! loopback origins.

use std::{net::IpAddr, sync::Arc};

use listeners::StaticResolver;
use policy::{Answer, AskContext, Decider};
use tests::{
    big_body, curl, loopback, policy_config, raw_request, start_proxy, start_proxy_from_file,
    start_proxy_with_decider, LoopbackNat, Origin, OriginPair,
};

const TEN_MB: usize = 10 * 1024 * 1024;

/// Splits `curl -i` output into status, headers (lowercase names) and body.
fn split_response(text: &str) -> (u16, Vec<(String, String)>, String) {
    let (head, body) = text.split_once("\r\n\r\n").expect("a response head");
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .expect("status");
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    (status, headers, body.to_owned())
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_fetches_http_and_https_byte_for_byte_without_proxy_headers() {
    let dir = tempfile::tempdir().unwrap();
    let OriginPair {
        plain,
        secure,
        ca_pem,
        resolver,
        allow_local: local,
    } = OriginPair::start(dir.path()).await;
    let proxy = start_proxy(
        policy_config(&["origin.test", "secure.test"], &[], &local),
        resolver,
        None,
    );
    let proxy_url = proxy.proxy_url("a1:tok");

    let url = format!("http://origin.test:{}/big?n={TEN_MB}", plain.port());
    let out = curl(&[
        "-x",
        &proxy_url,
        "-H",
        "Connection: x-custom",
        "-H",
        "X-Custom: secret",
        "-H",
        "Keep-Alive: timeout=5",
        "-H",
        "X-Forwarded-For: 6.6.6.6",
        "-H",
        "Via: 1.1 evil",
        "-H",
        "Forwarded: for=6.6.6.6",
        "-H",
        "Host: evil.test",
        &url,
    ])
    .await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout == big_body(TEN_MB),
        "the 10 MB body arrived intact ({} bytes)",
        out.stdout.len()
    );
    let seen = plain
        .seen
        .requests()
        .pop()
        .expect("the origin saw the request");
    assert_eq!(seen.uri, format!("/big?n={TEN_MB}"), "origin-form upstream");
    let names: Vec<&str> = seen.headers.iter().map(|(k, _)| k.as_str()).collect();
    for forbidden in [
        "proxy-authorization",
        "proxy-connection",
        "x-custom",
        "keep-alive",
        "x-forwarded-for",
        "via",
        "forwarded",
    ] {
        assert!(
            !names.contains(&forbidden),
            "{forbidden} reached the origin: {names:?}"
        );
    }
    assert!(
        !seen
            .headers
            .iter()
            .any(|(_, v)| v.contains("a1") || v.contains("tok")),
        "{:?}",
        seen.headers
    );
    let host = seen
        .headers
        .iter()
        .find(|(k, _)| k == "host")
        .map(|(_, v)| v.clone());
    assert_eq!(
        host,
        Some(format!("origin.test:{}", plain.port())),
        "Host is rewritten to the URI authority"
    );

    let out = curl(&[
        "-x",
        &proxy_url,
        "-i",
        &format!("http://origin.test:{}/", plain.port()),
    ])
    .await;
    let (status, headers, body) = split_response(&out.text());
    assert_eq!((status, body.as_str()), (200, "hello from origin"));
    assert_eq!(
        header(&headers, "x-origin-hop"),
        None,
        "hop-by-hop response headers are stripped"
    );

    let url = format!("https://secure.test:{}/big?n={TEN_MB}", secure.port());
    let out = curl(&["-x", &proxy_url, "--cacert", ca_pem.to_str().unwrap(), &url]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert!(
        out.stdout == big_body(TEN_MB),
        "the 10 MB body arrived intact over CONNECT"
    );
    let seen = secure
        .seen
        .requests()
        .pop()
        .expect("the TLS origin saw the request");
    assert!(!seen.headers.iter().any(|(k, _)| k.starts_with("proxy-")));

    assert!(proxy.stop().await.is_empty(), "nothing was blocked");
}

/// One row per block shape (several per common reason; every reason is in `reasons.rs`): the URL
/// (or raw request), and what the 403 must say.
struct BlockCase {
    request: Request,
    status: u16,
    decision: &'static str,
    reason: &'static str,
    code: &'static str,
    rule: Option<&'static str>,
    host: &'static str,
    protocol: &'static str,
}

enum Request {
    Curl(Vec<String>),
    Raw(String),
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn common_block_shapes_answer_the_spec_403_and_are_logged() {
    let origin = Origin::http().await;
    let port = origin.port();
    let resolver = Arc::new(
        StaticResolver::new()
            .answer("inside.allowed.test", &[loopback()])
            .answer("a.allowed.test", &[loopback()]),
    );
    let local = [format!("127.0.0.1:{port}")];
    let proxy = start_proxy(
        policy_config(&["**.allowed.test"], &["evil.test"], &local),
        resolver.clone(),
        None,
    );
    let url = proxy.proxy_url("a1:tok");
    let auth = "Proxy-Authorization: Basic YTE6dG9r\r\n";
    let curl_args = |args: &[&str]| Request::Curl(args.iter().map(|a| a.to_string()).collect());
    let cases = vec![
        BlockCase { request: curl_args(&["http://unknown.test/"]), status: 403, decision: "ask", reason: "allowlist_miss", code: "blocked-by-allowlist", rule: None, host: "unknown.test", protocol: "http" },
        BlockCase { request: curl_args(&["-H", "Host: a.allowed.test", "http://evil.test/"]), status: 403, decision: "deny", reason: "denylist", code: "blocked-by-denylist", rule: Some("evil.test"), host: "evil.test", protocol: "http" },
        BlockCase { request: curl_args(&["http://127.0.0.1:9/"]), status: 403, decision: "deny", reason: "local_address", code: "blocked-by-local-address", rule: None, host: "127.0.0.1", protocol: "http" },
        BlockCase { request: curl_args(&["http://inside.allowed.test:9/"]), status: 403, decision: "deny", reason: "local_address", code: "blocked-by-local-address", rule: None, host: "inside.allowed.test", protocol: "http" },
        BlockCase { request: Request::Raw(format!("GET http://a..b/ HTTP/1.1\r\nHost: a..b\r\n{auth}Connection: close\r\n\r\n")), status: 403, decision: "deny", reason: "invalid_target", code: "invalid-target", rule: None, host: "a..b", protocol: "http" },
        BlockCase { request: Request::Raw(format!("GET http://a.allowed.test:65536/ HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")), status: 403, decision: "deny", reason: "invalid_target", code: "invalid-target", rule: None, host: "a.allowed.test:65536", protocol: "http" },
        BlockCase { request: Request::Raw(format!("CONNECT evil.test:443 HTTP/1.1\r\nHost: evil.test:443\r\n{auth}Connection: close\r\n\r\n")), status: 403, decision: "deny", reason: "denylist", code: "blocked-by-denylist", rule: Some("evil.test"), host: "evil.test", protocol: "connect" },
        BlockCase { request: Request::Raw(format!("CONNECT 0x7f.1:9 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")), status: 403, decision: "deny", reason: "local_address", code: "blocked-by-local-address", rule: None, host: "127.0.0.1", protocol: "connect" },
        BlockCase { request: Request::Raw(format!("CONNECT nowhere.test:443 HTTP/1.1\r\nHost: x\r\n{auth}Connection: close\r\n\r\n")), status: 403, decision: "ask", reason: "allowlist_miss", code: "blocked-by-allowlist", rule: None, host: "nowhere.test", protocol: "connect" },
    ];
    let mut events = Vec::new();
    for case in &cases {
        let text = match &case.request {
            Request::Curl(args) => {
                let mut all = vec!["-i".to_owned(), "-x".to_owned(), url.clone()];
                all.extend(args.iter().cloned());
                let refs: Vec<&str> = all.iter().map(String::as_str).collect();
                curl(&refs).await.text()
            }
            Request::Raw(raw) => raw_request(proxy.http, raw.as_bytes()).await,
        };
        let (status, headers, body) = split_response(&text);
        let what = format!("{} {}: {text}", case.reason, case.host);
        assert_eq!(status, case.status, "{what}");
        assert_eq!(
            header(&headers, "content-type"),
            Some("application/json"),
            "{what}"
        );
        assert_eq!(header(&headers, "x-proxy-error"), Some(case.code), "{what}");
        assert_eq!(
            header(&headers, "x-leash-decision"),
            Some(case.decision),
            "{what}"
        );
        let body_json = body.lines().next().unwrap_or_default();
        let body: serde_json::Value =
            serde_json::from_str(body_json).unwrap_or_else(|e| panic!("{what}: {e}"));
        assert_eq!(
            header(&headers, "x-leash-event"),
            Some(body["event"].to_string().as_str()),
            "{what}"
        );
        assert_eq!(body["blocked"], true, "{what}");
        assert_eq!(body["decision"], case.decision, "{what}");
        assert_eq!(body["reason"], case.reason, "{what}");
        assert_eq!(body["rule"], serde_json::json!(case.rule), "{what}");
        assert_eq!(body["host"], case.host, "{what}");
        assert_eq!(body["protocol"], case.protocol, "{what}");
        assert_eq!(body["mode"], "full", "{what}");
        assert_eq!(body["attempt"], "a1", "{what}");
        assert!(
            body["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{what}"
        );
        events.push(body["event"].as_u64().expect("event id"));
    }
    let calls = resolver.calls();
    assert_eq!(
        calls,
        ["inside.allowed.test"],
        "denied and unlisted names are never resolved"
    );
    assert_eq!(origin.seen.connections(), 0, "nothing reached the origin");
    let lines = proxy.stop().await;
    assert_eq!(lines.len(), cases.len(), "one log line per block");
    for (line, (case, event)) in lines.iter().zip(cases.iter().zip(&events)) {
        assert_eq!(line["seq"], *event, "the log's seq is the 403's event id");
        assert_eq!(line["reason"], case.reason);
        assert_eq!(line["attempt"], "a1");
        assert_eq!(line["v"], 1);
    }
    let after_dns = &lines[3];
    assert_eq!(
        after_dns["addrs"],
        serde_json::json!(["127.0.0.1"]),
        "local_address after DNS names the addresses"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_token_is_challenged_and_a_wrong_one_refused_and_logged() {
    let resolver = Arc::new(StaticResolver::new());
    let proxy = start_proxy(policy_config(&["*"], &[], &[]), resolver, None);
    let cases = [
        (proxy.proxy_url("a1:wrong"), "auth-failed"),
        (proxy.proxy_url("a1"), "auth-failed"),
        (format!("http://{}", proxy.http), "auth-required"),
    ];
    for (url, code) in &cases {
        let out = curl(&["-i", "-x", url, "http://example.test/"]).await;
        let (status, headers, _) = split_response(&out.text());
        assert_eq!(status, 407, "{url}");
        assert_eq!(
            header(&headers, "proxy-authenticate"),
            Some("Basic realm=\"leash\"")
        );
        assert_eq!(header(&headers, "x-proxy-error"), Some(*code), "{url}");
    }
    let lines = proxy.stop().await;
    assert_eq!(lines.len(), 2);
    assert!(lines.iter().all(|l| l["reason"] == "auth_failed"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dns_rebinding_cannot_make_leash_dial_loopback() {
    let public_origin = Origin::http().await;
    let forbidden = Origin::http().await;
    let public: IpAddr = "93.184.216.34".parse().unwrap();
    let resolver = Arc::new(
        StaticResolver::new()
            .answer("rebind.test", &[public])
            .answer("rebind.test", &[loopback()]),
    );
    let nat = Arc::new(LoopbackNat::default().map(public, public_origin.addr));
    let proxy = start_proxy(
        policy_config(&["rebind.test"], &[], &[]),
        resolver.clone(),
        Some(nat.clone()),
    );
    // `/close`: the origin closes each connection, so no request can reuse a pooled one and
    // every request looks the name up again, which is what a rebinding attack needs.
    let url = format!("http://rebind.test:{}/close", forbidden.port());
    let first = curl(&["-x", &proxy.proxy_url("a1:tok"), &url]).await;
    assert_eq!(
        first.text(),
        "hello from origin",
        "the first answer is public and allowed"
    );
    for _ in 0..3 {
        let again = curl(&["-i", "-x", &proxy.proxy_url("a1:tok"), &url]).await;
        let (status, headers, _) = split_response(&again.text());
        assert_eq!(status, 403);
        assert_eq!(
            header(&headers, "x-proxy-error"),
            Some("blocked-by-local-address")
        );
    }
    assert_eq!(
        resolver.calls().len(),
        4,
        "one lookup per request, none twice"
    );
    assert!(
        nat.dialled().iter().all(|a| a.ip() == public),
        "dialled {:?}",
        nat.dialled()
    );
    assert_eq!(
        forbidden.seen.connections(),
        0,
        "the loopback origin was never reached"
    );
    assert_eq!(public_origin.seen.requests().len(), 1);
    let lines = proxy.stop().await;
    assert_eq!(lines.len(), 3);
    assert!(lines
        .iter()
        .all(|l| l["reason"] == "local_address" && l["addrs"] == serde_json::json!(["127.0.0.1"])));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_alive_client_reuses_its_vetted_upstream_connection() {
    let origin = Origin::http().await;
    let resolver = Arc::new(StaticResolver::new().answer("origin.test", &[loopback()]));
    let local = [format!("127.0.0.1:{}", origin.port())];
    let proxy = start_proxy(
        policy_config(&["origin.test"], &[], &local),
        resolver.clone(),
        None,
    );
    let url = format!("http://origin.test:{}/", origin.port());
    let out = curl(&["-x", &proxy.proxy_url("a1:tok"), &url, &url, &url]).await;
    assert_eq!(out.text(), "hello from origin".repeat(3), "{}", out.stderr);
    assert_eq!(origin.seen.requests().len(), 3);
    assert_eq!(
        origin.seen.connections(),
        1,
        "one upstream connection served all three requests"
    );
    assert_eq!(resolver.calls().len(), 1, "and the name was resolved once");
}

/// Separate client connections (one `curl` per command, as an agent runs them) share one kept-alive
/// upstream connection; a policy change that no longer allows its address stops the reuse, and the
/// request is refused with the reason, never sent over the old connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_connections_share_pooled_upstreams_until_the_policy_refuses_them() {
    let origin = Origin::http().await;
    let resolver = Arc::new(StaticResolver::new().answer("origin.test", &[loopback()]));
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leash.toml");
    let opened = format!(
        "[policy]\nallow = [\"origin.test\"]\nallow_local = [\"127.0.0.1:{}\"]\n",
        origin.port()
    );
    std::fs::write(&file, opened).unwrap();
    let proxy = start_proxy_from_file(&file, resolver.clone());
    let url = format!("http://origin.test:{}/", origin.port());
    for _ in 0..3 {
        let out = curl(&["-x", &proxy.proxy_url("a1:tok"), &url]).await;
        assert_eq!(out.text(), "hello from origin", "{}", out.stderr);
    }
    assert_eq!(origin.seen.requests().len(), 3);
    assert_eq!(
        origin.seen.connections(),
        1,
        "three client connections, one upstream connection"
    );
    assert_eq!(resolver.calls().len(), 1, "and one lookup");

    std::fs::write(&file, "[policy]\nallow = [\"origin.test\"]\n").unwrap();
    proxy.running().reload().expect("the tighter policy loads");
    let out = curl(&["-s", "-i", "-x", &proxy.proxy_url("a1:tok"), &url]).await;
    let (status, _, body) = split_response(&out.text());
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(r#""reason":"local_address""#), "{body}");
    assert_eq!(
        origin.seen.requests().len(),
        3,
        "nothing more reached the origin"
    );
    assert_eq!(origin.seen.connections(), 1);
}

/// Approves `approved.test` and declines `declined.test` when asked; records every question.
#[derive(Debug, Default)]
struct ApproveByName {
    asked: std::sync::Mutex<Vec<String>>,
}

impl Decider for ApproveByName {
    fn decide<'a>(
        &'a self,
        ask: AskContext<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + 'a>> {
        let host = ask.request.target.host().to_string();
        let answer = match host.as_str() {
            "approved.test" => Answer::Allow,
            "declined.test" => Answer::Deny,
            _ => Answer::Ask,
        };
        self.asked.lock().unwrap().push(host);
        Box::pin(async move { answer })
    }
}

/// A `Decider`'s approval carries a request no rule allows all the way to its vetted address,
/// over HTTP and SOCKS5 alike; a declined one is `declined`; a deny rule is never even asked about.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decider_approval_reaches_the_origin_and_deny_still_wins() {
    // The names resolve to a public address (no `allow_local` can vouch for them), which the
    // test connector maps to the loopback origin.
    let origin = Origin::http().await;
    let public: IpAddr = "93.184.216.34".parse().unwrap();
    let resolver = Arc::new(
        StaticResolver::new()
            .answer("approved.test", &[public])
            .answer("declined.test", &[public])
            .answer("denied.test", &[public]),
    );
    let nat = Arc::new(LoopbackNat::default().map(public, origin.addr));
    let decider = Arc::new(ApproveByName::default());
    let proxy = start_proxy_with_decider(
        policy_config(&[], &["denied.test"], &[]),
        resolver,
        Some(nat),
        decider.clone(),
    );
    let socks = format!(
        "socks5h://a1:tok@{}",
        proxy.socks.expect("a SOCKS5 listener")
    );
    let url = |host: &str| format!("http://{host}:{}/", origin.port());
    for via in [proxy.proxy_url("a1:tok"), socks] {
        let approved = curl(&["-s", "-x", &via, &url("approved.test")]).await;
        assert_eq!(
            approved.text(),
            "hello from origin",
            "{via}: {}",
            approved.stderr
        );
    }
    let declined = curl(&[
        "-s",
        "-i",
        "-x",
        &proxy.proxy_url("a1:tok"),
        &url("declined.test"),
    ])
    .await;
    let (status, _, body) = split_response(&declined.text());
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(r#""reason":"declined""#), "{body}");
    let denied = curl(&[
        "-s",
        "-i",
        "-x",
        &proxy.proxy_url("a1:tok"),
        &url("denied.test"),
    ])
    .await;
    let (status, _, body) = split_response(&denied.text());
    assert_eq!(status, 403, "{body}");
    assert!(body.contains(r#""reason":"denylist""#), "{body}");
    assert_eq!(origin.seen.requests().len(), 2, "the two approved requests");
    let asked = decider.asked.lock().unwrap().clone();
    assert_eq!(asked, ["approved.test", "approved.test", "declined.test"]);
}

/// Holds every question until the test lets it go, then approves.
#[derive(Debug, Default)]
struct SlowApproval {
    asked: tokio::sync::Notify,
    release: tokio::sync::Notify,
}

impl Decider for SlowApproval {
    fn decide<'a>(
        &'a self,
        _ask: AskContext<'a>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Answer> + Send + 'a>> {
        Box::pin(async move {
            self.asked.notify_one();
            self.release.notified().await;
            Answer::Allow
        })
    }
}

/// A deny rule added while a person is still deciding reaches the tunnel that approval opens: it
/// is refused when registered, not relayed because the policy pass ran before it existed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_policy_change_during_an_approval_reaches_the_tunnel() {
    let origin = Origin::http().await;
    let public: IpAddr = "93.184.216.34".parse().unwrap();
    let resolver = Arc::new(StaticResolver::new().answer("slow.test", &[public]));
    let nat = Arc::new(LoopbackNat::default().map(public, origin.addr));
    let decider = Arc::new(SlowApproval::default());
    let mut config = policy_config(&[], &[], &[]);
    config.auth.token = String::new();
    let proxy = start_proxy_with_decider(config, resolver, Some(nat), decider.clone());
    let http = proxy.http;
    let request = format!("CONNECT slow.test:{} HTTP/1.1\r\n\r\n", origin.port());
    let connect = tokio::spawn(async move { raw_request(http, request.as_bytes()).await });
    decider.asked.notified().await;
    let deny = leash::RuleChange {
        allow: Vec::new(),
        deny: vec!["slow.test".into()],
    };
    proxy
        .running()
        .change_rules(leash::RuleOp::Add, &deny)
        .unwrap();
    decider.release.notify_one();
    let response = connect.await.unwrap();
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(response.contains(r#""reason":"denylist""#), "{response}");
}

/// A connection that began connection-bound authentication (NTLM, Negotiate) serves no other
/// client connection: the next one gets a connection of its own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_bound_authentication_is_never_shared() {
    let origin = Origin::http().await;
    let resolver = Arc::new(StaticResolver::new().answer("origin.test", &[loopback()]));
    let local = [format!("127.0.0.1:{}", origin.port())];
    let proxy = start_proxy(policy_config(&["origin.test"], &[], &local), resolver, None);
    let (plain, ntlm) = (
        format!("http://origin.test:{}/", origin.port()),
        format!("http://origin.test:{}/ntlm", origin.port()),
    );
    for url in [&plain, &ntlm, &ntlm, &plain] {
        let out = curl(&["-x", &proxy.proxy_url("a1:tok"), url]).await;
        assert_eq!(out.text(), "hello from origin", "{}", out.stderr);
    }
    // 1: `/`, then `/ntlm` on it (now private, closed with its client); 2: the next `/ntlm`
    // (private too); 3: the last `/`.
    assert_eq!(origin.seen.connections(), 3);
}
