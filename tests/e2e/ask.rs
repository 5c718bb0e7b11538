//! Asking a person (SPEC §14): an `ask` is held while an approver long-polls `/pending`, and the
//! answer, a timeout or a policy change ends the wait. Real curl, real loopback origins.

use std::{os::unix::fs::PermissionsExt, path::Path, time::Duration};

use leash::Config;
use serde_json::{json, Value};
use tests::{curl, policy_config, start_proxy, CurlOutput, OriginPair, TestProxy};

use crate::admin::call;

/// A proxy asking about everything (no allow rule; `allow_local` covers the origins' addresses),
/// holding asks up to `hold`.
async fn asking(dir: &std::path::Path, hold: &str) -> (TestProxy, OriginPair) {
    let origins = OriginPair::start(dir).await;
    let proxy = start_proxy(
        asking_config(&origins, hold, None),
        origins.resolver.clone(),
        None,
    );
    (proxy, origins)
}

/// `asking`, with bound attempts (SPEC §18).
async fn asking_bound(dir: &Path) -> (TestProxy, OriginPair) {
    let origins = OriginPair::start(dir).await;
    let mut config = asking_config(&origins, "30s", None);
    config.auth.attempts = leash::AttemptsMode::Bound;
    (start_proxy(config, origins.resolver.clone(), None), origins)
}

/// The config of `asking`, keeping `always` answers in `approvals` when given.
fn asking_config(origins: &OriginPair, hold: &str, approvals: Option<&Path>) -> Config {
    let mut config = policy_config(&[], &[], &origins.allow_local);
    let mut ask = json!({ "hold": hold });
    if let Some(approvals) = approvals {
        ask["approvals"] = json!(approvals);
    }
    config.ask = serde_json::from_value(ask).expect("an [ask] table");
    config
}

/// Long-polls `/pending` until an item has `waiting` requests (bounded: 20 polls of 1 s).
async fn pending_item(proxy: &TestProxy, waiting: u64) -> Value {
    let admin = proxy.admin_client();
    for _ in 0..20 {
        let (status, page) = call(&admin, "GET", "/pending?wait=1", None, None).await;
        assert_eq!(status, 200, "{page}");
        let items = page["pending"].as_array().cloned().unwrap_or_default();
        if let Some(item) = items.iter().find(|i| i["waiting"] == json!(waiting)) {
            return item.clone();
        }
    }
    panic!("no pending item with {waiting} waiting");
}

/// Makes the test client an approver (a `GET /pending` now counts for 10 s).
async fn become_approver(proxy: &TestProxy) {
    let (status, _) = call(&proxy.admin_client(), "GET", "/pending", None, None).await;
    assert_eq!(status, 200);
}

async fn answer(proxy: &TestProxy, id: &Value, answer: &str, scope: &str) -> (u16, Value) {
    let body = json!({ "answer": answer, "scope": scope }).to_string();
    let path = format!("/pending/{id}");
    call(&proxy.admin_client(), "POST", &path, Some(&body), None).await
}

fn spawn_curl(args: Vec<String>) -> tokio::task::JoinHandle<CurlOutput> {
    tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args).await
    })
}

/// The three ways in: absolute-form HTTP, CONNECT to the HTTPS origin, `socks5h://`.
fn three_ways(proxy: &TestProxy, origins: &OriginPair) -> Vec<(String, Vec<String>)> {
    let plain = format!("http://origin.test:{}/", origins.plain.port());
    let secure = format!("https://secure.test:{}/", origins.secure.port());
    let socks = format!(
        "socks5h://a1:tok@{}",
        proxy.socks.expect("a SOCKS5 listener")
    );
    let ca = origins.ca_pem.to_str().unwrap().to_owned();
    let http = proxy.proxy_url("a1:tok");
    vec![
        (
            "http".into(),
            vec!["-i".into(), "-x".into(), http.clone(), plain.clone()],
        ),
        (
            "connect".into(),
            vec!["-x".into(), http, "--cacert".into(), ca, secure],
        ),
        ("socks5".into(), vec!["-x".into(), socks, plain]),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_ask_answered_allow_reaches_the_origin_on_every_path() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking(dir.path(), "30s").await;
    become_approver(&proxy).await;
    for (way, args) in three_ways(&proxy, &origins) {
        let held = spawn_curl(args);
        let item = pending_item(&proxy, 1).await;
        let (status, _) = answer(&proxy, &item["id"], "allow", "once").await;
        assert_eq!(status, 200, "{way}");
        let out = held.await.unwrap();
        assert!(
            out.text().ends_with("hello from origin"),
            "{way}: {} {}",
            out.text(),
            out.stderr
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_ask_answered_deny_gets_the_structured_403() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking(dir.path(), "30s").await;
    become_approver(&proxy).await;
    let url = format!("http://origin.test:{}/", origins.plain.port());
    let held = spawn_curl(vec![
        "-i".into(),
        "-x".into(),
        proxy.proxy_url("a1:tok"),
        url,
    ]);
    let item = pending_item(&proxy, 1).await;
    assert_eq!(item["host"], "origin.test");
    assert_eq!(item["protocol"], "http");
    let (status, _) = answer(&proxy, &item["id"], "deny", "once").await;
    assert_eq!(status, 200);
    let text = held.await.unwrap().text();
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains(r#""reason":"declined""#), "{text}");
    assert!(text.contains(r#""held_ms":"#), "{text}");
    let (status, _) = answer(&proxy, &item["id"], "allow", "once").await;
    assert_eq!(status, 404, "answered already");
    // The ask was logged when held; the answer is one more line naming it.
    let lines = proxy.log_lines();
    let held = lines
        .iter()
        .find(|l| l["seq"] == item["event"])
        .expect("the held ask's line");
    assert_eq!(
        (&held["decision"], &held["host"]),
        (&json!("ask"), &json!("origin.test"))
    );
    let answer = lines
        .iter()
        .find(|l| l["kind"] == "answer")
        .expect("an answer line");
    assert_eq!(
        (
            &answer["event"],
            &answer["answer"],
            &answer["scope"],
            &answer["by"]
        ),
        (
            &item["event"],
            &json!("deny"),
            &json!("once"),
            &json!("api")
        )
    );
    assert!(answer["held_ms"].is_u64(), "{answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_answers_then_403_with_held_ms_and_no_approver_refuses_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking(dir.path(), "1s").await;
    let url = format!("http://origin.test:{}/", origins.plain.port());
    let args = || {
        vec![
            "-i".into(),
            "-x".into(),
            proxy.proxy_url("a1:tok"),
            url.clone(),
        ]
    };
    // Nobody has polled: refused at once, never held.
    let text = spawn_curl(args()).await.unwrap().text();
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains(r#""reason":"allowlist_miss""#), "{text}");
    assert!(!text.contains("held_ms"), "{text}");
    become_approver(&proxy).await;
    let text = spawn_curl(args()).await.unwrap().text();
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains(r#""decision":"ask""#), "{text}");
    assert!(text.contains(r#""held_ms":"#), "{text}");
    let lines = proxy.log_lines();
    assert!(
        lines
            .iter()
            .any(|l| l["held_ms"].is_u64() && l["blocked"] == true),
        "{lines:?}"
    );
    let timeout = lines
        .iter()
        .find(|l| l["kind"] == "answer")
        .expect("an answer line");
    assert_eq!(
        (&timeout["answer"], &timeout["by"]),
        (&json!("ask"), &json!("timeout"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_asks_are_one_item_and_one_answer_releases_all() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking(dir.path(), "30s").await;
    become_approver(&proxy).await;
    let url = format!("http://origin.test:{}/", origins.plain.port());
    let held: Vec<_> = (0..50)
        .map(|_| spawn_curl(vec!["-x".into(), proxy.proxy_url("a1:tok"), url.clone()]))
        .collect();
    let item = pending_item(&proxy, 50).await;
    let (_, page) = call(&proxy.admin_client(), "GET", "/pending", None, None).await;
    assert_eq!(page["pending"].as_array().map(Vec::len), Some(1), "{page}");
    let (status, _) = answer(&proxy, &item["id"], "allow", "once").await;
    assert_eq!(status, 200);
    for curl in held {
        assert_eq!(curl.await.unwrap().text(), "hello from origin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn once_allows_only_the_waiting_requests_and_session_allows_later_ones() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking(dir.path(), "2s").await;
    become_approver(&proxy).await;
    let url = format!("http://origin.test:{}/", origins.plain.port());
    let args = || {
        vec![
            "-i".into(),
            "-x".into(),
            proxy.proxy_url("a1:tok"),
            url.clone(),
        ]
    };
    let held = spawn_curl(args());
    let item = pending_item(&proxy, 1).await;
    answer(&proxy, &item["id"], "allow", "once").await;
    assert!(held.await.unwrap().text().ends_with("hello from origin"));
    // `once`: the next request is asked about again (nobody answers: the hold times out).
    let text = spawn_curl(args()).await.unwrap().text();
    assert!(text.contains(r#""held_ms":"#), "{text}");
    let held = spawn_curl(args());
    let item = pending_item(&proxy, 1).await;
    let (status, _) = answer(&proxy, &item["id"], "allow", "session").await;
    assert_eq!(status, 200);
    assert!(held.await.unwrap().text().ends_with("hello from origin"));
    // `session`: later requests pass without being held.
    let text = spawn_curl(args()).await.unwrap().text();
    assert!(text.ends_with("hello from origin"), "{text}");
    let (_, page) = call(&proxy.admin_client(), "GET", "/pending", None, None).await;
    assert_eq!(page["pending"], json!([]));
    let metrics = curl(&[
        "-s",
        &format!("http://{}/metrics", proxy.admin_client().addr),
        "-H",
        &format!(
            "Authorization: Bearer {}",
            proxy.admin_client().token.unwrap_or_default()
        ),
    ])
    .await
    .text();
    assert!(
        metrics.contains(r#"leash_answered_total{answer="allow",scope="session",by="api"} 1"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("leash_held_timed_out_total 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_rule_added_while_held_answers_with_the_deny_block_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking(dir.path(), "30s").await;
    become_approver(&proxy).await;
    let url = format!("http://origin.test:{}/", origins.plain.port());
    let held = spawn_curl(vec![
        "-i".into(),
        "-x".into(),
        proxy.proxy_url("a1:tok"),
        url,
    ]);
    pending_item(&proxy, 1).await;
    let body = json!({ "deny": ["origin.test"] }).to_string();
    let (status, _) = call(&proxy.admin_client(), "POST", "/rules", Some(&body), None).await;
    assert_eq!(status, 200);
    let text = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("answered well before ask.hold")
        .unwrap()
        .text();
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains(r#""reason":"denylist""#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_attempt_scope_needs_bound_attempts_and_a_refusal_leaves_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking(dir.path(), "30s").await;
    become_approver(&proxy).await;
    let url = format!("http://origin.test:{}/", origins.plain.port());
    let held = spawn_curl(vec!["-x".into(), proxy.proxy_url("a1:tok"), url]);
    let item = pending_item(&proxy, 1).await;
    let (status, body) = answer(&proxy, &item["id"], "allow", "attempt").await;
    assert_eq!(status, 400, "{body}");
    let (status, _) = answer(&proxy, &item["id"], "allow", "once").await;
    assert_eq!(status, 200);
    assert_eq!(held.await.unwrap().text(), "hello from origin");
}

/// A held curl, as a process the test can kill.
fn held_process(args: &[String]) -> tokio::process::Child {
    tokio::process::Command::new("curl")
        .args(["-sS", "--max-time", "30"])
        .args(args)
        .env_remove("http_proxy")
        .env_remove("all_proxy")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("curl runs")
}

/// Long-polls `/pending` until no item is left (bounded: 20 polls of 1 s).
async fn no_item_left(proxy: &TestProxy) {
    let admin = proxy.admin_client();
    for _ in 0..20 {
        let (_, page) = call(&admin, "GET", "/pending?since=1000000&wait=1", None, None).await;
        if page["pending"] == json!([]) {
            return;
        }
    }
    panic!("the pending item was never withdrawn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_client_stops_waiting_and_the_last_one_withdraws_the_item() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking(dir.path(), "30s").await;
    become_approver(&proxy).await;
    for (way, args) in three_ways(&proxy, &origins) {
        let mut first = held_process(&args);
        let mut second = held_process(&args);
        pending_item(&proxy, 2).await;
        first.kill().await.unwrap();
        let item = pending_item(&proxy, 1).await;
        second.kill().await.unwrap();
        no_item_left(&proxy).await;
        let (status, _) = answer(&proxy, &item["id"], "allow", "once").await;
        assert_eq!(status, 404, "{way}: withdrawn");
    }
}

/// `GET /patterns`' `sources`: the source of `rule` in list `list`, if it is in force.
async fn source_of(proxy: &TestProxy, list: &str, rule: &str) -> Option<String> {
    let (status, patterns) = call(&proxy.admin_client(), "GET", "/patterns", None, None).await;
    assert_eq!(status, 200, "{patterns}");
    let sources = patterns["sources"][list]
        .as_array()
        .cloned()
        .unwrap_or_default();
    sources
        .iter()
        .find(|s| s["rule"] == json!(rule))
        .map(|s| s["source"].as_str().unwrap_or_default().to_owned())
}

/// One curl through the HTTP proxy, bounded well below `ask.hold` (30 s): a request that is
/// held instead of decided by a rule fails this bound.
async fn curl_now(proxy: &TestProxy, url: &str) -> String {
    let args = vec![
        "-i".into(),
        "-x".into(),
        proxy.proxy_url("a1:tok"),
        url.to_owned(),
    ];
    tokio::time::timeout(Duration::from_secs(10), spawn_curl(args))
        .await
        .expect("decided by a rule, not held")
        .unwrap()
        .text()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_is_kept_in_the_approvals_file_and_read_back_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let origins = OriginPair::start(dir.path()).await;
    let file = dir.path().join("approvals.toml");
    let config = asking_config(&origins, "30s", Some(&file));
    let proxy = start_proxy(config.clone(), origins.resolver.clone(), None);
    become_approver(&proxy).await;
    let url = format!("http://origin.test:{}/", origins.plain.port());
    let held = spawn_curl(vec!["-x".into(), proxy.proxy_url("a1:tok"), url.clone()]);
    let item = pending_item(&proxy, 1).await;
    let (status, body) = answer(&proxy, &item["id"], "allow", "always").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(held.await.unwrap().text(), "hello from origin");
    // A later request passes on the rule, with an approver present and nothing pending.
    assert!(curl_now(&proxy, &url).await.ends_with("hello from origin"));
    let (_, page) = call(&proxy.admin_client(), "GET", "/pending", None, None).await;
    assert_eq!(page["pending"], json!([]));
    let rule = format!("origin.test:{}", origins.plain.port());
    let source = source_of(&proxy, "allow", &rule).await;
    assert_eq!(source.as_deref(), Some("approval:always"));
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&format!("\"{rule}\"")), "{text}");
    let mode = std::fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    drop(proxy);
    // A new leash on the same file: no approver at all, yet the request passes.
    let proxy = start_proxy(config, origins.resolver.clone(), None);
    assert!(curl_now(&proxy, &url).await.ends_with("hello from origin"));
    let source = source_of(&proxy, "allow", &rule).await;
    assert_eq!(source.as_deref(), Some("approval:always"));
    // Other hosts are still asked about (no approver now: refused at once).
    let other = format!("http://other.test:{}/", origins.plain.port());
    let text = curl_now(&proxy, &other).await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_answered_always_refuses_later_requests_and_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let origins = OriginPair::start(dir.path()).await;
    let file = dir.path().join("approvals.toml");
    let config = asking_config(&origins, "30s", Some(&file));
    let proxy = start_proxy(config.clone(), origins.resolver.clone(), None);
    become_approver(&proxy).await;
    let url = format!("http://origin.test:{}/", origins.plain.port());
    let held = spawn_curl(vec![
        "-i".into(),
        "-x".into(),
        proxy.proxy_url("a1:tok"),
        url.clone(),
    ]);
    let item = pending_item(&proxy, 1).await;
    let (status, body) = answer(&proxy, &item["id"], "deny", "always").await;
    assert_eq!(status, 200, "{body}");
    let text = held.await.unwrap().text();
    assert!(text.contains(r#""reason":"declined""#), "{text}");
    // Later: the deny rule refuses at once, though an approver is present.
    let text = curl_now(&proxy, &url).await;
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains(r#""reason":"denylist""#), "{text}");
    let rule = format!("origin.test:{}", origins.plain.port());
    let source = source_of(&proxy, "deny", &rule).await;
    assert_eq!(source.as_deref(), Some("approval:always"));
    drop(proxy);
    let proxy = start_proxy(config, origins.resolver.clone(), None);
    let text = curl_now(&proxy, &url).await;
    assert!(text.contains(r#""reason":"denylist""#), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_rule_in_the_approvals_file_fails_the_start_naming_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let origins = OriginPair::start(dir.path()).await;
    let file = dir.path().join("approvals.toml");
    std::fs::write(&file, "allow = [\n  \"a.test\",\n  \"*.com\",\n]\n").unwrap();
    let mut config = asking_config(&origins, "30s", Some(&file));
    config.listen.ephemeral = true;
    config.log.violations = dir.path().join("violations.jsonl");
    config.admin.enabled = false;
    let error = leash::Leash::builder()
        .config(config)
        .resolver(origins.resolver.clone())
        .build()
        .expect_err("a bad approvals file")
        .to_string();
    let named = format!("{}:3: key `allow[1]`", file.display());
    assert!(error.starts_with(&named), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reload_reads_the_approvals_file_again_and_keeps_the_old_policy_on_a_bad_rule() {
    let dir = tempfile::tempdir().unwrap();
    let origins = OriginPair::start(dir.path()).await;
    let approvals = dir.path().join("approvals.toml");
    let config_file = dir.path().join("leash.toml");
    let local = serde_json::to_string(&origins.allow_local).unwrap();
    let toml = format!(
        "[policy]\nallow_local = {local}\n[ask]\napprovals = {}\n",
        serde_json::to_string(&approvals).unwrap()
    );
    std::fs::write(&config_file, toml).unwrap();
    let proxy = tests::start_proxy_from_file(&config_file, origins.resolver.clone());
    let url = format!("http://origin.test:{}/", origins.plain.port());
    // No approver, no rule: refused at once.
    assert!(curl_now(&proxy, &url).await.starts_with("HTTP/1.1 403"));
    let rule = format!("origin.test:{}", origins.plain.port());
    std::fs::write(&approvals, format!("allow = [\"{rule}\"]\n")).unwrap();
    let (status, body) = call(&proxy.admin_client(), "POST", "/reload", None, None).await;
    assert_eq!(status, 200, "{body}");
    assert!(curl_now(&proxy, &url).await.ends_with("hello from origin"));
    let source = source_of(&proxy, "allow", &rule).await;
    assert_eq!(source.as_deref(), Some("approval:always"));
    // A bad hand edit: the reload names file and line, and the old policy stays.
    std::fs::write(
        &approvals,
        format!("allow = [\n  \"{rule}\",\n  \"a..b\",\n]\n"),
    )
    .unwrap();
    let (status, body) = call(&proxy.admin_client(), "POST", "/reload", None, None).await;
    assert_eq!(status, 400, "{body}");
    let named = format!("{}:3: key `allow[1]`", approvals.display());
    assert!(
        body["error"].as_str().unwrap().starts_with(&named),
        "{body}"
    );
    assert!(curl_now(&proxy, &url).await.ends_with("hello from origin"));
}

/// With bound attempts, `attempt` answers for that attempt only: attempt A's next request to the
/// host passes without asking, attempt B's is still held; ending A forgets its answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_answer_allows_that_attempt_only() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking_bound(dir.path()).await;
    let admin = proxy.admin_client();
    let mut urls = Vec::new();
    for id in ["a", "b"] {
        let body = json!({ "id": id }).to_string();
        let (status, bound) = call(&admin, "POST", "/attempts", Some(&body), None).await;
        assert_eq!(status, 200, "{bound}");
        urls.push(bound["http"].as_str().expect("a proxy URL").to_owned());
    }
    let url = format!("http://origin.test:{}/", origins.plain.port());
    become_approver(&proxy).await;
    let held = spawn_curl(vec!["-x".into(), urls[0].clone(), url.clone()]);
    let item = pending_item(&proxy, 1).await;
    assert_eq!(item["attempt"], "a", "{item}");
    let (status, body) = answer(&proxy, &item["id"], "allow", "attempt").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(held.await.unwrap().text(), "hello from origin");

    // A again: allowed without an item.
    let again = curl(&["-x", &urls[0], &url]).await;
    assert_eq!(again.text(), "hello from origin");
    // B: held as before.
    become_approver(&proxy).await;
    let other = spawn_curl(vec!["-x".into(), urls[1].clone(), url.clone()]);
    let item = pending_item(&proxy, 1).await;
    assert_eq!(item["attempt"], "b", "{item}");
    let (status, _) = answer(&proxy, &item["id"], "deny", "once").await;
    assert_eq!(status, 200);
    assert!(other.await.unwrap().text().contains("declined"));

    // Ending A forgets its answer: bound again under the same id, it is asked again.
    let (status, _) = call(&admin, "DELETE", "/attempts/a", None, None).await;
    assert_eq!(status, 200);
    let body = json!({ "id": "a" }).to_string();
    let (status, rebound) = call(&admin, "POST", "/attempts", Some(&body), None).await;
    assert_eq!(status, 200, "{rebound}");
    become_approver(&proxy).await;
    let asked = spawn_curl(vec![
        "-x".into(),
        rebound["http"].as_str().unwrap().to_owned(),
        url,
    ]);
    let item = pending_item(&proxy, 1).await;
    assert_eq!(item["attempt"], "a", "{item}");
    let (status, _) = answer(&proxy, &item["id"], "allow", "once").await;
    assert_eq!(status, 200);
    assert_eq!(asked.await.unwrap().text(), "hello from origin");
}

/// Binds attempt `id` with `allow` rules; its proxy URL.
async fn bind(proxy: &TestProxy, id: &str, allow: &[&str]) -> String {
    let body = json!({ "id": id, "allow": allow }).to_string();
    let (status, bound) = call(
        &proxy.admin_client(),
        "POST",
        "/attempts",
        Some(&body),
        None,
    )
    .await;
    assert_eq!(status, 200, "{bound}");
    bound["http"].as_str().expect("a proxy URL").to_owned()
}

/// An attempt's own allow rules (SPEC §18) answer its asks and nobody else's, show in `/patterns`
/// as `attempt:ID`, and never loosen a deny rule or limited mode; a bad rule is refused naming it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempts_own_allow_rules_apply_to_that_attempt_only() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking_bound(dir.path()).await;
    let admin = proxy.admin_client();
    let a = bind(&proxy, "a", &["origin.test"]).await;
    let b = bind(&proxy, "b", &[]).await;
    let url = format!("http://origin.test:{}/", origins.plain.port());

    // No approver is present: A passes on its rule, B is refused at once (not held).
    let passed = curl(&["-x", &a, &url]).await;
    assert_eq!(passed.text(), "hello from origin");
    let refused = curl(&["-i", "-x", &b, &url]).await.text();
    assert!(refused.contains("blocked-by-allowlist"), "{refused}");
    assert_eq!(
        source_of(&proxy, "allow", "origin.test").await.as_deref(),
        Some("attempt:a")
    );

    // Limited mode still refuses A's POST; a deny rule still refuses everything of A's.
    let mode = json!({ "mode": "limited" }).to_string();
    let (status, _) = call(&admin, "POST", "/mode", Some(&mode), None).await;
    assert_eq!(status, 200);
    let post = curl(&["-i", "-x", &a, "-d", "x", &url]).await.text();
    assert!(post.contains("method_not_allowed"), "{post}");
    let full = json!({ "mode": "full" }).to_string();
    let (status, _) = call(&admin, "POST", "/mode", Some(&full), None).await;
    assert_eq!(status, 200);
    let deny = json!({ "deny": ["origin.test"] }).to_string();
    let (status, _) = call(&admin, "POST", "/rules", Some(&deny), None).await;
    assert_eq!(status, 200);
    let denied = curl(&["-i", "-x", &a, &url]).await.text();
    assert!(denied.contains("blocked-by-denylist"), "{denied}");

    // A rule that does not parse is refused, naming its place; nothing is bound.
    let body = json!({ "id": "c", "allow": ["fine.test", "a..b"] }).to_string();
    let (status, refusal) = call(&admin, "POST", "/attempts", Some(&body), None).await;
    assert_eq!(status, 400, "{refusal}");
    assert!(refusal.to_string().contains("allow[1]"), "{refusal}");
    let body = json!({ "id": "c" }).to_string();
    let (status, _) = call(&admin, "POST", "/attempts", Some(&body), None).await;
    assert_eq!(status, 200, "c was not bound by the refused request");
}

/// A pending item names the request's path (without its query), and the logged ask names the
/// client and the path like every other log line; `session` and `attempt` answers show in
/// `/patterns` with their sources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_ask_names_its_path_and_client_and_answers_show_their_sources() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking_bound(dir.path()).await;
    let a = bind(&proxy, "a", &[]).await;
    let url = format!(
        "http://origin.test:{}/some/path?q=secret",
        origins.plain.port()
    );
    become_approver(&proxy).await;
    let held = spawn_curl(vec!["-x".into(), a.clone(), url.clone()]);
    let item = pending_item(&proxy, 1).await;
    assert_eq!(item["path"], "/some/path", "{item}");
    let (status, _) = answer(&proxy, &item["id"], "allow", "attempt").await;
    assert_eq!(status, 200);
    assert_eq!(held.await.unwrap().text(), "hello from origin");
    let ask = proxy
        .log_lines()
        .into_iter()
        .find(|line| line["seq"] == item["event"])
        .expect("the ask is logged");
    assert_eq!(ask["path"], "/some/path", "{ask}");
    let client = ask["client"].as_str().unwrap_or_default();
    assert!(client.starts_with("127.0.0.1:"), "{ask}");
    let rule = format!("origin.test:{}", origins.plain.port());
    assert_eq!(
        source_of(&proxy, "allow", &rule).await.as_deref(),
        Some("approval:attempt:a")
    );

    become_approver(&proxy).await;
    let other = format!("http://other.test:{}/", origins.plain.port());
    let held = spawn_curl(vec!["-x".into(), a, other]);
    let item = pending_item(&proxy, 1).await;
    let (status, _) = answer(&proxy, &item["id"], "deny", "session").await;
    assert_eq!(status, 200);
    assert!(held.await.unwrap().text().contains("declined"));
    let rule = format!("other.test:{}", origins.plain.port());
    assert_eq!(
        source_of(&proxy, "deny", &rule).await.as_deref(),
        Some("approval:session")
    );
}

/// A long poll of `/pending` that already has every item wakes when an item goes (answered
/// elsewhere), not only when a newer one comes: an approver never offers buttons for a gone item
/// for longer than it takes to hear of it. (The poll waits up to 20 s; the bound here is 10 s.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_poll_of_pending_wakes_when_an_item_goes() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking(dir.path(), "30s").await;
    become_approver(&proxy).await;
    let url = format!("http://origin.test:{}/", origins.plain.port());
    let held = spawn_curl(vec!["-x".into(), proxy.proxy_url("a1:tok"), url]);
    let item = pending_item(&proxy, 1).await;
    let admin = proxy.admin_client();
    let path = format!("/pending?since={}&wait=20", item["id"]);
    let poll = tokio::spawn(async move { call(&admin, "GET", &path, None, None).await });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (status, _) = answer(&proxy, &item["id"], "allow", "once").await;
    assert_eq!(status, 200);
    let (status, page) = tokio::time::timeout(Duration::from_secs(10), poll)
        .await
        .expect("the poll woke when the item went")
        .unwrap();
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["pending"], json!([]), "{page}");
    assert_eq!(held.await.unwrap().text(), "hello from origin");
}

/// Ending an attempt answers its held requests at once with `auth_failed` (its credentials no
/// longer pass), and the item is gone: a later answer cannot release them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_an_attempt_refuses_its_held_requests() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking_bound(dir.path()).await;
    let a = bind(&proxy, "a", &[]).await;
    become_approver(&proxy).await;
    let url = format!("http://origin.test:{}/", origins.plain.port());
    let held = spawn_curl(vec!["-i".into(), "-x".into(), a, url]);
    let item = pending_item(&proxy, 1).await;
    let (status, _) = call(&proxy.admin_client(), "DELETE", "/attempts/a", None, None).await;
    assert_eq!(status, 200);
    let refused = tokio::time::timeout(Duration::from_secs(10), held)
        .await
        .expect("answered at once, not after ask.hold")
        .unwrap()
        .text();
    assert!(refused.contains("auth_failed"), "{refused}");
    let (status, _) = answer(&proxy, &item["id"], "allow", "once").await;
    assert_eq!(status, 404, "the ended attempt's item is gone");
}

/// One client may keep at most `MAX_ITEMS_PER_CLIENT` items open: past it, its asks are refused
/// at once (no `held_ms`), and another client's ask is still held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_client_cannot_open_more_than_its_share_of_pending_items() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking(dir.path(), "30s").await;
    become_approver(&proxy).await;
    let port = origins.plain.port();
    let flood: Vec<_> = (0..listeners::MAX_ITEMS_PER_CLIENT)
        .map(|i| {
            let url = format!("http://h{i}.test:{port}/");
            spawn_curl(vec!["-x".into(), proxy.proxy_url("flood:tok"), url])
        })
        .collect();
    let last = listeners::MAX_ITEMS_PER_CLIENT as u64;
    let admin = proxy.admin_client();
    let mut open = 0;
    for _ in 0..40 {
        let (_, page) = call(&admin, "GET", "/pending?wait=1", None, None).await;
        open = page["pending"].as_array().map_or(0, Vec::len) as u64;
        if open == last {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(open, last, "every flood request is held");
    let url = format!("http://one-more.test:{port}/");
    let refused = curl(&["-i", "-x", &proxy.proxy_url("flood:tok"), &url])
        .await
        .text();
    assert!(refused.contains("allowlist_miss"), "{refused}");
    assert!(!refused.contains("held_ms"), "refused at once: {refused}");
    let url = format!("http://origin.test:{port}/");
    let other = spawn_curl(vec!["-x".into(), proxy.proxy_url("other:tok"), url]);
    let mut found = None;
    for _ in 0..40 {
        let (_, page) = call(&admin, "GET", "/pending?wait=1", None, None).await;
        let items = page["pending"].as_array().cloned().unwrap_or_default();
        found = items.into_iter().find(|i| i["attempt"] == "other");
        if found.is_some() {
            break;
        }
    }
    let item = found.expect("another client's ask is held");
    let (status, _) = answer(&proxy, &item["id"], "allow", "once").await;
    assert_eq!(status, 200);
    assert_eq!(other.await.unwrap().text(), "hello from origin");
    for held in flood {
        held.abort();
    }
}

/// Over `CONNECT` and `socks5h://` too: a held ask answered `deny` is the `declined` block, and
/// one nobody answers is the `ask` block after `ask.hold`, each logged with `held_ms` (the
/// client of a tunnel cannot read a body: the log is where it learns why).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deny_and_timeout_end_held_tunnels_as_blocks_with_held_ms() {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, origins) = asking(dir.path(), "2s").await;
    let tunnels: Vec<_> = three_ways(&proxy, &origins)
        .into_iter()
        .filter(|(way, _)| way != "http")
        .collect();
    for (way, args) in &tunnels {
        become_approver(&proxy).await;
        let held = spawn_curl(args.clone());
        let item = pending_item(&proxy, 1).await;
        let (status, _) = answer(&proxy, &item["id"], "deny", "once").await;
        assert_eq!(status, 200, "{way}");
        let out = held.await.unwrap();
        assert_ne!(out.code, Some(0), "{way}: refused");
        assert!(!out.text().contains("hello from origin"), "{way}");
        // Nobody answers this one: the ask stands after `ask.hold`.
        become_approver(&proxy).await;
        let out = spawn_curl(args.clone()).await.unwrap();
        assert_ne!(out.code, Some(0), "{way}: refused after the hold");
    }
    let lines = proxy.log_lines();
    for protocol in ["connect", "socks5"] {
        let blocks: Vec<_> = lines
            .iter()
            .filter(|l| l["protocol"] == protocol && l["blocked"] == true && l["held_ms"].is_u64())
            .map(|l| l["reason"].as_str().unwrap_or_default().to_owned())
            .collect();
        assert_eq!(
            blocks,
            ["declined", "allowlist_miss"],
            "{protocol}: {lines:?}"
        );
    }
}
