//! The approvals page (SPEC §14) in a real headless Chromium, driven over the DevTools protocol:
//! open, it makes the page a present approver, shows a held `curl` request, and its buttons answer
//! it; what the policed program chose (a path) stays text; with a token it does nothing until the
//! token is typed in. One browser per test.

use std::{net::SocketAddr, process::Command, time::Duration};

use serde_json::{json, Value};
use tests::{
    curl, leash_bin, policy_config, raw_request, start_proxy, BinaryProxy, Browser, CurlOutput,
    Origin, OriginPair,
};

/// The page's long poll answered: it is live, and a present approver.
const LIVE: &str = "document.getElementById('status')?.className === 'ok'";
/// The page's list of pending asks.
const ITEMS: &str = "#pending li.item";

/// `true` once the page lists a pending ask for `place` (`host:port`).
fn shows_item(place: &str) -> String {
    let place = serde_json::to_string(place).unwrap();
    format!(
        "[...document.querySelectorAll('{ITEMS} .target')].some(e => e.textContent === {place})"
    )
}

fn no_items() -> String {
    format!("document.querySelectorAll('{ITEMS}').length === 0")
}

fn spawn_curl(args: Vec<String>) -> tokio::task::JoinHandle<CurlOutput> {
    tokio::spawn(async move {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        curl(&args).await
    })
}

/// Asserts `png` is a PNG of some size, and says where it is.
fn assert_png(file: &std::path::Path, png: &[u8]) {
    assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "{}", file.display());
    assert!(
        png.len() > 4096,
        "{} is {} bytes",
        file.display(),
        png.len()
    );
    eprintln!("page screenshot: {}", file.display());
}

/// A raw `GET` to the admin API, with the bearer token when given.
async fn admin_get(admin: SocketAddr, path: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let request =
        format!("GET {path} HTTP/1.1\r\nHost: {admin}\r\n{auth}Connection: close\r\n\r\n");
    raw_request(admin, request.as_bytes()).await
}

fn body_json(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_held_request_and_allow_once_and_deny_answer_it() {
    let dir = tempfile::tempdir().unwrap();
    let origins = OriginPair::start(dir.path()).await;
    let mut config = policy_config(&[], &["evil.test"], &origins.allow_local);
    config.admin.token = "none".into();
    config.ask = serde_json::from_value(json!({ "hold": "30s" })).unwrap();
    let proxy = start_proxy(config, origins.resolver.clone(), None);
    let admin = proxy.admin.expect("an admin listener");
    let mut page = Browser::open(&format!("http://{admin}/")).await;
    page.wait_for(LIVE, "the page polls /pending").await;
    let http = proxy.proxy_url("a1:tok");
    let url = format!("http://origin.test:{}/", origins.plain.port());
    let place = format!("origin.test:{}", origins.plain.port());

    // The page alone is the approver: the request is held, shown, and let through once.
    let held = spawn_curl(vec!["-x".into(), http.clone(), url.clone()]);
    page.wait_for(&shows_item(&place), "the held request is shown")
        .await;
    let (file, png) = page.screenshot("approvals-page").await;
    assert_png(&file, &png);
    page.click(&format!("{ITEMS} button.once")).await;
    let out = held.await.unwrap();
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.text(), "hello from origin");
    page.wait_for(&no_items(), "the answered item leaves the list")
        .await;

    // `once` did not allow the next one; Deny refuses it and every later ask for the place.
    let held = spawn_curl(vec!["-i".into(), "-x".into(), http.clone(), url.clone()]);
    page.wait_for(&shows_item(&place), "the next request is held again")
        .await;
    page.click(&format!("{ITEMS} button.deny")).await;
    let text = held.await.unwrap().text();
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains(r#""reason":"declined""#), "{text}");
    let next = curl(&["-i", "-x", &http, &url]).await.text();
    assert!(next.starts_with("HTTP/1.1 403"), "{next}");
    assert!(next.contains(r#""reason":"declined""#), "{next}");
    assert!(
        !next.contains("held_ms"),
        "refused at once, not held: {next}"
    );
    let pending = body_json(&admin_get(admin, "/pending", None).await);
    assert_eq!(pending["pending"], json!([]), "nothing asks again");

    // Through CONNECT to the HTTPS origin: allowed for the session, so the next one is not held.
    let secure = format!("https://secure.test:{}/", origins.secure.port());
    let ca = origins.ca_pem.to_str().unwrap().to_owned();
    let args = vec![
        "-x".into(),
        http.clone(),
        "--cacert".into(),
        ca.clone(),
        secure.clone(),
    ];
    let held = spawn_curl(args);
    let place = format!("secure.test:{}", origins.secure.port());
    page.wait_for(&shows_item(&place), "the CONNECT is held")
        .await;
    page.click(&format!("{ITEMS} button.session")).await;
    assert_eq!(held.await.unwrap().text(), "hello from origin");
    let next = curl(&["-x", &http, "--cacert", &ca, &secure]).await;
    assert_eq!(
        (next.code, next.text()),
        (Some(0), "hello from origin".into())
    );

    let answers: Vec<Value> = (proxy.log_lines().into_iter())
        .filter(|l| l["kind"] == "answer")
        .map(|l| json!([l["answer"], l["scope"], l["by"]]))
        .collect();
    assert_eq!(
        answers,
        [
            json!(["allow", "once", "page"]),
            json!(["deny", "session", "page"]),
            json!(["allow", "session", "page"]),
        ]
    );
    page.close().await;
}

/// What a policed program can put into a path, aimed at a page that would render it as markup.
const PAYLOADS: [&str; 3] = [
    "/<img/src=x/onerror=window.pwned=1>",
    "/<script>window.pwned=2</script>",
    "/</td><svg/onload=window.pwned=3>",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paths_a_program_chose_are_shown_as_text_and_never_run() {
    let mut config = policy_config(&[], &["evil.test"], &[]);
    config.admin.token = "none".into();
    let proxy = start_proxy(
        config,
        std::sync::Arc::new(listeners::StaticResolver::new()),
        None,
    );
    let admin = proxy.admin.expect("an admin listener");
    for path in PAYLOADS {
        let request = format!("GET http://evil.test{path} HTTP/1.1\r\nHost: evil.test\r\n\r\n");
        // Refused as an invalid request-target (`<` is no URI character), and logged with it.
        let response = raw_request(proxy.http, request.as_bytes()).await;
        assert!(response.starts_with("HTTP/1.1 400"), "{path}: {response}");
    }
    let mut page = Browser::open(&format!("http://{admin}/")).await;
    for path in PAYLOADS {
        let quoted = serde_json::to_string(path).unwrap();
        let shown = format!(
            "[...document.querySelectorAll('#blocked td.path')].some(e => e.textContent.endsWith({quoted}))"
        );
        page.wait_for(&shown, path).await;
    }
    let markup = page
        .eval("document.querySelectorAll('main img, main script, main svg').length")
        .await;
    assert_eq!(markup, json!(0), "no element was made from a path");
    assert_eq!(page.eval("window.pwned === undefined").await, json!(true));
    page.close().await;
}

/// `leash proxy` (the real binary) with `admin.token` set, asking about `origin.test` (named
/// `origin`'s address by a hosts file) and holding asks.
fn binary_with_token(dir: &std::path::Path, origin: &Origin, token: &str) -> BinaryProxy {
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 origin.test\n").unwrap();
    let config = dir.join("leash.toml");
    std::fs::write(
        &config,
        format!(
            "[listen]\nephemeral = true\n[log]\nviolations = {:?}\n[dns]\nhosts = {:?}\n\
             [policy]\nallow_local = [\"127.0.0.1:{}\"]\n[ask]\nhold = \"30s\"\n\
             [admin]\ntoken = {token:?}\n",
            dir.join("log.jsonl").to_str().unwrap(),
            hosts.to_str().unwrap(),
            origin.port()
        ),
    )
    .unwrap();
    let mut command = Command::new(leash_bin());
    command.arg("proxy").arg("--config").arg(&config);
    BinaryProxy::start(command, Duration::from_secs(30))
}

/// Long-polls `/pending` with the token until it lists an item (bounded); returns it.
async fn pending_item(admin: SocketAddr, token: &str) -> Value {
    for _ in 0..20 {
        let page = body_json(&admin_get(admin, "/pending?wait=1", Some(token)).await);
        if let Some(item) = page["pending"].get(0) {
            return item.clone();
        }
    }
    panic!("no pending item");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_page_answers_only_after_it_is_typed_in() {
    const TOKEN: &str = "page-test-token-5d1f";
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let proxy = binary_with_token(dir.path(), &origin, TOKEN);
    let admin: SocketAddr = proxy.ready["admin"].as_str().unwrap().parse().unwrap();
    let ui = proxy.ready["ui"]
        .as_str()
        .expect("the ready record names the page");
    assert_eq!(ui, format!("http://{admin}/"));

    // The page holds no secret and is served without the token; its data is not.
    let served = admin_get(admin, "/", None).await;
    assert!(served.starts_with("HTTP/1.1 200"), "{served}");
    let head = served
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    assert!(
        head.contains("content-type: text/html; charset=utf-8"),
        "{head}"
    );
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    assert!(!head.contains("access-control-"), "{head}");
    assert!(!served.contains(TOKEN));
    let refused = admin_get(admin, "/pending", None).await;
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");

    let mut page = Browser::open(ui).await;
    page.wait_for(
        "document.getElementById('login')?.hidden === false",
        "the page asks for the token",
    )
    .await;
    // A request held for another approver (this test's poll): the page cannot see or answer it.
    admin_get(admin, "/pending", Some(TOKEN)).await;
    let url = format!("http://origin.test:{}/", origin.port());
    let http = format!("http://{}", proxy.http());
    let held = spawn_curl(vec!["-x".into(), http, url]);
    let item = pending_item(admin, TOKEN).await;
    page.type_into("#token", "not-the-token").await;
    page.click("#sign-in").await;
    page.wait_for(
        "document.getElementById('login-message')?.textContent === 'That token was refused.'",
        "a wrong token brings the prompt back",
    )
    .await;
    assert_eq!(page.eval(&no_items()).await, json!(true));
    let (file, png) = page.screenshot("approvals-page-token").await;
    assert_png(&file, &png);
    assert_eq!(
        pending_item(admin, TOKEN).await["id"],
        item["id"],
        "still waiting"
    );
    assert!(!held.is_finished());

    // With the token: live, the item shown, answered.
    page.type_into("#token", TOKEN).await;
    page.click("#sign-in").await;
    page.wait_for(LIVE, "the page goes live with the token")
        .await;
    let place = format!("origin.test:{}", origin.port());
    page.wait_for(&shows_item(&place), "the held request is shown")
        .await;
    page.click(&format!("{ITEMS} button.once")).await;
    let out = held.await.unwrap();
    assert_eq!(
        (out.code, out.text()),
        (Some(0), "hello from origin".into())
    );

    // The token is kept for the tab: a reload goes live without asking again.
    let kept = page
        .eval("sessionStorage.getItem('leash.admin.token')")
        .await;
    assert_eq!(kept, json!(TOKEN));
    page.eval("window.before_reload = true").await;
    page.call("Page.reload", json!({})).await;
    page.wait_for(
        &format!("!window.before_reload && ({LIVE}) && document.getElementById('login').hidden"),
        "the reloaded page is live without the prompt",
    )
    .await;
    page.close().await;
    let output = proxy.terminate();
    assert!(output.status.success(), "{output:?}");
}
