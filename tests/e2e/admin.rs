//! The admin API end to end (SPEC §8): real HTTP requests to the admin listener, and the proxies
//! following every change it makes.

use std::{
    path::Path,
    sync::{
        atomic::{AtomicBool, AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use listeners::StaticResolver;
use serde_json::{json, Value};
use tests::{
    curl, loopback, policy_config, raw_request, start_proxy, start_proxy_from_file, AdminClient,
    Origin,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// One admin call with the client's token (or `token` instead, when given), a JSON content type
/// for changes: `(status, body)`; the body as JSON when it parses, else as a JSON string.
pub(crate) async fn call(
    admin: &AdminClient,
    method: &str,
    path: &str,
    body: Option<&str>,
    token: Option<&str>,
) -> (u16, Value) {
    let url = format!("http://{}{path}", admin.addr);
    let token = token.or(admin.token.as_deref());
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let mut args = vec!["-X", method, "-w", "\n%{http_code}", &url];
    if let Some(auth) = &auth {
        args.extend(["-H", auth]);
    }
    if method != "GET" {
        args.extend(["-H", "Content-Type: application/json"]);
    }
    if let Some(body) = body {
        args.extend(["--data-binary", body]);
    }
    let out = curl(&args).await.text();
    let (body, status) = out.rsplit_once('\n').expect("a status line");
    let value = serde_json::from_str(body).unwrap_or_else(|_| Value::from(body));
    (status.parse().expect("status"), value)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_endpoint_answers_its_shape_and_errors_are_json() {
    let mut config = policy_config(
        &["**.github.com"],
        &["gist.github.com"],
        &["127.0.0.1:8000".into()],
    );
    config.admin.token = "adm".into();
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let admin = proxy.admin_client();
    let t = Some("adm");

    let (status, health) = call(&admin, "GET", "/health", None, t).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&health["status"], &health["mode"]),
        (&json!("ok"), &json!("full"))
    );
    assert!(health["uptime_s"].is_u64());

    let (status, config) = call(&admin, "GET", "/config", None, t).await;
    assert_eq!(status, 200);
    assert_eq!(config["auth"]["token"], "<redacted>");
    assert_eq!(config["admin"]["token"], "<redacted>");
    assert_eq!(config["policy"]["allow"], json!(["**.github.com"]));

    let (_, patterns) = call(&admin, "GET", "/patterns", None, t).await;
    assert_eq!(
        patterns,
        json!({
            "allow": ["**.github.com"],
            "deny": ["gist.github.com"],
            "allow_local": ["127.0.0.1:8000"],
            "sources": {
                "allow": [{"rule": "**.github.com", "source": "config"}],
                "deny": [{"rule": "gist.github.com", "source": "config"}],
            },
        })
    );

    let (status, blocked) = call(&admin, "GET", "/blocked", None, t).await;
    assert_eq!((status, blocked), (200, json!({"events": [], "next": 0})));

    let (status, explain) = call(
        &admin,
        "GET",
        "/explain?host=api.github.com&port=443",
        None,
        t,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        (&explain["decision"], &explain["rule"]),
        (&json!("allow"), &json!("**.github.com"))
    );
    assert_eq!(explain["steps"].as_array().map(Vec::len), Some(5));
    let (_, explain) = call(
        &admin,
        "GET",
        "/explain?host=gist.github.com&protocol=http&method=POST",
        None,
        t,
    )
    .await;
    assert_eq!(
        (&explain["decision"], &explain["reason"]),
        (&json!("deny"), &json!("denylist"))
    );

    assert_eq!(
        call(&admin, "GET", "/mode", None, t).await,
        (200, json!({"mode": "full"}))
    );
    assert_eq!(
        call(&admin, "POST", "/mode", Some(r#"{"mode":"limited"}"#), t).await,
        (200, json!({"mode": "limited"}))
    );
    assert_eq!(
        call(&admin, "GET", "/mode", None, t).await,
        (200, json!({"mode": "limited"}))
    );
    assert_eq!(
        call(&admin, "POST", "/mode", Some(r#"{"mode":"full"}"#), t)
            .await
            .0,
        200
    );

    let (status, reload) = call(&admin, "POST", "/reload", None, t).await;
    assert_eq!(status, 400, "no config file to reload: {reload}");
    assert!(reload["error"].as_str().unwrap().contains("no config file"));

    let (status, metrics) = call(&admin, "GET", "/metrics", None, t).await;
    assert_eq!(status, 200);
    let metrics = metrics.as_str().unwrap().to_owned();
    // OpenMetrics text: a family's `# TYPE` names it without `_total`, its samples carry it.
    for (family, kind) in [
        ("leash_requests", "counter"),
        ("leash_decisions", "counter"),
        ("leash_tunnel_bytes", "counter"),
        ("leash_forwarded_bytes", "counter"),
        ("leash_open_tunnels", "gauge"),
        ("leash_log_errors", "counter"),
    ] {
        assert!(
            metrics.contains(&format!("# TYPE {family} {kind}\n")),
            "{family} missing:\n{metrics}"
        );
        assert!(metrics.contains(&format!("# HELP {family} ")), "{metrics}");
    }
    assert!(metrics.contains("leash_log_errors_total 0\n"), "{metrics}");
    assert!(metrics.ends_with("# EOF\n"), "{metrics}");

    // Errors.
    let (status, body) = call(&admin, "PUT", "/health", None, t).await;
    assert_eq!((status, body["error"].is_string()), (405, true));
    assert_eq!(call(&admin, "GET", "/nope", None, t).await.0, 404);
    let anonymous = AdminClient {
        token: None,
        ..admin.clone()
    };
    assert_eq!(call(&anonymous, "GET", "/health", None, None).await.0, 401);
    assert_eq!(
        call(&admin, "GET", "/health", None, Some("wrong")).await.0,
        401
    );
    let (status, body) = call(&admin, "POST", "/rules", Some("{not json"), t).await;
    assert_eq!((status, body["error"].is_string()), (400, true));
    assert_eq!(
        call(&admin, "POST", "/rules", Some(r#"{"alow":["x.test"]}"#), t)
            .await
            .0,
        400
    );
    let (status, body) = call(&admin, "POST", "/rules", Some(r#"{"allow":["*.com"]}"#), t).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("`*.com`"),
        "{body}"
    );
    assert_eq!(
        call(&admin, "POST", "/mode", Some(r#"{"mode":"fast"}"#), t)
            .await
            .0,
        400
    );
    let big = format!(r#"{{"allow":["{}"]}}"#, "a".repeat(70 * 1024));
    assert_eq!(call(&admin, "POST", "/rules", Some(&big), t).await.0, 413);
    assert_eq!(
        call(&admin, "GET", "/explain", None, t).await.0,
        400,
        "host is required"
    );
}

/// The value of one metric line (`name{labels} value`).
fn metric_value(metrics: &str, line_start: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(line_start)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in:\n{metrics}"))
}

/// A forwarded request's body and its response's body are counted, each way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_http_bodies_are_counted_in_metrics() {
    let origin = Origin::http().await;
    let resolver = Arc::new(StaticResolver::new().answer("echo.test", &[loopback()]));
    let proxy = start_proxy(
        policy_config(
            &["echo.test"],
            &[],
            &[format!("127.0.0.1:{}", origin.port())],
        ),
        resolver,
        None,
    );
    let admin = proxy.admin_client();
    let body = "e".repeat(3000);
    let url = format!("http://echo.test:{}/echo", origin.port());
    let out = curl(&[
        "-x",
        &proxy.proxy_url("a1:tok"),
        "--data-binary",
        &body,
        &url,
    ])
    .await;
    assert_eq!(out.text(), body, "{}", out.stderr);
    let (_, metrics) = call(&admin, "GET", "/metrics", None, None).await;
    let metrics = metrics.as_str().unwrap();
    let up = r#"leash_forwarded_bytes_total{direction="up"}"#;
    let down = r#"leash_forwarded_bytes_total{direction="down"}"#;
    assert_eq!(metric_value(metrics, up), 3000);
    assert_eq!(metric_value(metrics, down), 3000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_round_trip_opens_and_closes_a_host() {
    let origin = Origin::http().await;
    let resolver = Arc::new(StaticResolver::new().answer("new.test", &[loopback()]));
    let proxy = start_proxy(
        policy_config(&[], &[], &[format!("127.0.0.1:{}", origin.port())]),
        resolver,
        None,
    );
    let admin = proxy.admin_client();
    let url = format!("http://new.test:{}/", origin.port());
    let fetch = || {
        curl(&[
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-x",
            &proxy.proxy_url("a1:tok"),
            &url,
        ])
    };

    // A long poll returns the block with every field of the 403 body (SPEC §6), so a client
    // without the body (SOCKS5) can read the same. (That the poll wakes on the event rather than
    // on its timeout is `a_long_poll_parks_then_wakes_on_the_event_not_on_its_timeout`.)
    let poller = admin.clone();
    let poll =
        tokio::spawn(
            async move { call(&poller, "GET", "/blocked?since=0&wait=5", None, None).await },
        );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = curl(&["-s", "-x", &proxy.proxy_url("a1:tok"), &url]).await;
    let body: serde_json::Value = serde_json::from_str(&refused.text()).expect("a JSON 403 body");
    let (status, blocked) = poll.await.unwrap();
    assert_eq!(status, 200);
    let event = &blocked["events"][0];
    assert_eq!(
        (&event["decision"], &event["host"], &event["attempt"]),
        (&json!("ask"), &json!("new.test"), &json!("a1"))
    );
    for (field, value) in body.as_object().expect("an object") {
        assert_eq!(
            &event[field], value,
            "/blocked's `{field}` differs from the body's"
        );
    }
    assert_eq!(event["event"], event["seq"]);
    assert_eq!(blocked["next"], event["seq"]);

    let (status, _) = call(
        &admin,
        "POST",
        "/rules",
        Some(r#"{"allow":["new.test"]}"#),
        None,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(fetch().await.text(), "200", "approved");
    let (_, config) = call(&admin, "GET", "/config", None, None).await;
    assert_eq!(
        config["policy"]["allow"],
        json!(["new.test"]),
        "/config shows the rules in force"
    );
    let (status, patterns) = call(
        &admin,
        "DELETE",
        "/rules",
        Some(r#"{"allow":["NEW.test."]}"#),
        None,
    )
    .await;
    assert_eq!((status, &patterns["allow"]), (200, &json!([])));
    assert_eq!(fetch().await.text(), "403", "closed again");
    let (_, later) = call(
        &admin,
        "GET",
        &format!("/blocked?since={}&wait=1", blocked["next"]),
        None,
        None,
    )
    .await;
    assert_eq!(later["events"].as_array().map(Vec::len), Some(1));
}

fn write_atomically(path: &Path, text: &str) {
    let temp = path.with_extension("tmp");
    std::fs::write(&temp, text).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_under_load_never_mixes_two_policies() {
    let origin = Origin::http().await;
    let resolver = Arc::new(
        StaticResolver::new()
            .answer("alpha.test", &[loopback()])
            .answer("beta.test", &[loopback()]),
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leash.toml");
    let local = format!("allow_local = [\"127.0.0.1:{}\"]", origin.port());
    let policy_a = format!("[policy]\nallow = [\"alpha.test\"]\ndeny = [\"beta.test\"]\n{local}\n");
    let policy_b = format!("[policy]\nallow = [\"beta.test\"]\ndeny = [\"alpha.test\"]\n{local}\n");
    write_atomically(&file, &policy_a);
    let proxy = start_proxy_from_file(&file, resolver);
    let (admin, http, port) = (proxy.admin_client(), proxy.http, origin.port());

    let done = Arc::new(AtomicBool::new(false));
    let checked = Arc::new(AtomicUsize::new(0));
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (done, checked) = (done.clone(), checked.clone());
            tokio::spawn(async move {
                let host = if i % 2 == 0 { "alpha.test" } else { "beta.test" };
                while !done.load(Ordering::SeqCst) {
                    let raw = format!("GET http://{host}:{port}/ HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
                    let response = raw_request(http, raw.as_bytes()).await;
                    let allowed = response.starts_with("HTTP/1.1 200") && response.ends_with("hello from origin");
                    let denied = response.starts_with("HTTP/1.1 403")
                        && response.contains(&format!("\"reason\":\"denylist\",\"rule\":\"{host}\""));
                    // An allowed exchange still in flight when the next policy denies its host
                    // is cut: the connection closes before a whole response (never a whole one).
                    let cut = !response.ends_with("hello from origin")
                        && (response.is_empty() || response.starts_with("HTTP/1.1 200"));
                    assert!(allowed || denied || cut, "a response neither policy gives: {response}");
                    checked.fetch_add(1, Ordering::SeqCst);
                }
            })
        })
        .collect();
    for round in 0..100 {
        write_atomically(&file, if round % 2 == 0 { &policy_b } else { &policy_a });
        let (status, body) = call(&admin, "POST", "/reload", None, None).await;
        assert_eq!(status, 200, "{body}");
        let (_, patterns) = call(&admin, "GET", "/patterns", None, None).await;
        let a =
            patterns["allow"] == json!(["alpha.test"]) && patterns["deny"] == json!(["beta.test"]);
        let b =
            patterns["allow"] == json!(["beta.test"]) && patterns["deny"] == json!(["alpha.test"]);
        assert!(a || b, "patterns mix two policies: {patterns}");
    }
    done.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.expect("a client saw only whole policies");
    }
    assert!(checked.load(Ordering::SeqCst) >= 4, "the clients ran");

    // The last reload installed policy A (round 99 wrote A). A broken file keeps it.
    write_atomically(&file, "[policy]\nallow = [\"*.com\"]\n");
    let (status, body) = call(&admin, "POST", "/reload", None, None).await;
    assert_eq!(status, 400);
    assert!(
        body["error"].as_str().unwrap().contains("policy.allow[0]"),
        "{body}"
    );
    let raw = format!(
        "GET http://alpha.test:{port}/ HTTP/1.1\r\nHost: alpha.test\r\nConnection: close\r\n\r\n"
    );
    assert!(
        raw_request(http, raw.as_bytes())
            .await
            .starts_with("HTTP/1.1 200"),
        "the old policy keeps answering"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switching_to_limited_mode_closes_an_open_tunnel() {
    let origin = Origin::http().await;
    let resolver = Arc::new(StaticResolver::new().answer("tunnel.test", &[loopback()]));
    let proxy = start_proxy(
        policy_config(
            &["tunnel.test"],
            &[],
            &[format!("127.0.0.1:{}", origin.port())],
        ),
        resolver,
        None,
    );
    let mut client = TcpStream::connect(proxy.http).await.unwrap();
    let connect = format!(
        "CONNECT tunnel.test:{} HTTP/1.1\r\nProxy-Authorization: Basic YTE6dG9r\r\n\r\n",
        origin.port()
    );
    client.write_all(connect.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = client.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: tunnel.test\r\n\r\n")
        .await
        .unwrap();
    let n = client.read(&mut buf).await.unwrap();
    assert!(
        String::from_utf8_lossy(&buf[..n]).ends_with("hello from origin"),
        "the tunnel works"
    );

    let (status, _) = call(
        &proxy.admin_client(),
        "POST",
        "/mode",
        Some(r#"{"mode":"limited"}"#),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let closed = tokio::time::timeout(Duration::from_secs(5), client.read(&mut buf)).await;
    assert!(
        matches!(closed, Ok(Ok(0)) | Ok(Err(_))),
        "the tunnel is closed: {closed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_cannot_be_reached_through_the_proxy() {
    let mut config = policy_config(&["*"], &[], &[]);
    config.policy.allow_local = policy::AllowLocalConfig::Flag(true);
    let resolver = Arc::new(StaticResolver::new().answer("localhost", &[loopback()]));
    let proxy = start_proxy(config, resolver, None);
    let admin = proxy.admin.unwrap();
    for url in [
        format!("http://127.0.0.1:{}/mode", admin.port()),
        format!("http://localhost:{}/mode", admin.port()),
    ] {
        let out = curl(&["-i", "-x", &proxy.proxy_url("a1:tok"), &url])
            .await
            .text();
        assert!(out.starts_with("HTTP/1.1 403"), "{out}");
        assert!(out.contains("\"reason\":\"local_address\""), "{out}");
    }
    let socks = format!("socks5h://a1:tok@{}", proxy.socks.unwrap());
    let out = curl(&[
        "--proxy",
        &socks,
        &format!("http://127.0.0.1:{}/mode", admin.port()),
    ])
    .await;
    assert_eq!(out.code, Some(97), "SOCKS5 refuses it too: {}", out.stderr);
}

/// With the embedding application's own engine there is no policy here to switch: the mode change
/// is refused, through the handle and through the admin API alike, rather than answered as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_embedders_engine_refuses_a_mode_switch_instead_of_pretending() {
    let dir = tempfile::tempdir().unwrap();
    // The engine allows `x.test`; the configuration's own rules would not.
    let engine: Arc<dyn policy::PolicyEngine> =
        Arc::new(policy_config(&["x.test"], &[], &[]).policy().unwrap());
    let mut config = policy_config(&["config.test"], &[], &[]);
    config.listen.ephemeral = true;
    config.log.violations = dir.path().join("violations.jsonl");
    let running = leash::Leash::builder()
        .config(config)
        .policy_engine(engine)
        .build()
        .unwrap()
        .run();
    let refused = running.set_mode(policy::Mode::Limited);
    assert!(refused.is_err(), "{refused:?}");
    let admin = AdminClient {
        addr: running.addrs().admin.expect("an admin listener"),
        token: running
            .admin_token_file()
            .map(|f| leash::read_token_file(f).unwrap()),
    };
    let (status, body) = call(&admin, "POST", "/mode", Some(r#"{"mode":"limited"}"#), None).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("embedding application"),
        "{body}"
    );
    // Reads describe the engine that decides, or say they cannot.
    let (status, body) = call(&admin, "GET", "/patterns", None, None).await;
    assert_eq!(status, 400, "{body}");
    let (_, explain) = call(&admin, "GET", "/explain?host=x.test", None, None).await;
    assert_eq!(explain["decision"], "allow", "{explain}");
    let (_, config) = call(&admin, "GET", "/config", None, None).await;
    assert_eq!(config["policy_engine"], "embedding application", "{config}");
    running.shutdown().await;
}

/// The server has read every byte the client end `client` sent to `server`: in `/proc/net/tcp`
/// the client's send queue is empty (every byte acknowledged, so in the server's socket) and so
/// is the server's receive queue (taken out of it). This is how a test knows the admin API has
/// taken a request in, with nothing to observe but the socket.
fn server_read_everything(server: std::net::SocketAddr, client: std::net::SocketAddr) -> bool {
    let table = std::fs::read_to_string("/proc/net/tcp").expect("/proc/net/tcp (Linux)");
    let port = |addr: std::net::SocketAddr| format!(":{:04X}", addr.port());
    // `tx_queue:rx_queue` of the socket `from` → `to`, if it exists.
    let queues = |from, to| {
        table.lines().skip(1).find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let ours = fields[1].ends_with(&port(from)) && fields[2].ends_with(&port(to));
            ours.then(|| fields[4].to_owned())
        })
    };
    let sent = queues(client, server).is_some_and(|q| q.starts_with("00000000:"));
    let read = queues(server, client).is_some_and(|q| q.ends_with(":00000000"));
    sent && read
}

/// Sends a `/blocked` long poll on its own connection; returns the connection once the server
/// has read the request.
async fn park_long_poll(admin: &AdminClient, since: u64, wait: u64) -> TcpStream {
    let mut poll = TcpStream::connect(admin.addr).await.unwrap();
    let token = admin.token.as_deref().expect("a token");
    let request = format!(
        "GET /blocked?since={since}&wait={wait} HTTP/1.1\r\nHost: {}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n",
        admin.addr
    );
    poll.write_all(request.as_bytes()).await.unwrap();
    let client = poll.local_addr().unwrap();
    let taken_in = async {
        while !server_read_everything(admin.addr, client) {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(10), taken_in)
        .await
        .expect("the admin API reads the long poll's request");
    poll
}

/// The poll's answer if it comes within `bound`: the status and the JSON body (read to the close).
async fn answer_within(poll: &mut TcpStream, bound: Duration) -> Option<(u16, Value)> {
    let mut bytes = Vec::new();
    let read = tokio::time::timeout(bound, async {
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = poll.read(&mut buf).await {
            bytes.extend_from_slice(&buf[..n]);
        }
    });
    if read.await.is_err() && bytes.is_empty() {
        return None;
    }
    let text = String::from_utf8_lossy(&bytes);
    let (head, body) = text.split_once("\r\n\r\n").expect("a whole response");
    let status = head.split(' ').nth(1).and_then(|s| s.parse().ok());
    Some((
        status.expect("a status"),
        serde_json::from_str(body).expect("JSON"),
    ))
}

/// A long poll with no event yet parks — the server has read it and does not answer — and wakes
/// on the block that then happens, returning that event well before its wait runs out; with no
/// event it answers, empty, once its wait is over. (A poll that slept out its wait, or answered
/// at once, would fail here; finding an event that already existed proves neither.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_parks_then_wakes_on_the_event_not_on_its_timeout() {
    let mut config = policy_config(&[], &[], &[]);
    config.admin.token = "adm".into();
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let admin = proxy.admin_client();
    let block = |host: &str| {
        let url = format!("http://{host}/");
        curl(&["-s", "-x", &proxy.proxy_url("a1:tok"), &url])
    };
    let event_of = |text: String| -> u64 {
        let body: Value = serde_json::from_str(&text).expect("a JSON 403 body");
        body["event"].as_u64().expect("an event id")
    };
    let before = event_of(block("first.test").await.text());

    // Parked: the request is in, and no answer comes while nothing happens.
    let mut poll = park_long_poll(&admin, before, 60).await;
    let early = answer_within(&mut poll, Duration::from_millis(500)).await;
    assert_eq!(early, None, "the poll answered before any event");
    let event = event_of(block("second.test").await.text());
    assert!(event > before, "{event} after {before}");
    // Woken by the event: far sooner than the 60 s it would otherwise wait.
    let (status, page) = answer_within(&mut poll, Duration::from_secs(15))
        .await
        .expect("the block woke the poll");
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["events"].as_array().map(Vec::len), Some(1), "{page}");
    assert_eq!(
        (
            &page["events"][0]["seq"],
            &page["events"][0]["host"],
            &page["next"]
        ),
        (&json!(event), &json!("second.test"), &json!(event))
    );

    // Without an event the poll stays parked, then answers empty when its wait is over.
    let mut idle = park_long_poll(&admin, event, 2).await;
    let early = answer_within(&mut idle, Duration::from_millis(500)).await;
    assert_eq!(early, None, "the idle poll answered before its wait");
    let (status, page) = answer_within(&mut idle, Duration::from_secs(15))
        .await
        .expect("the idle poll answers when its wait is over");
    assert_eq!((status, page), (200, json!({"events": [], "next": event})));
}
