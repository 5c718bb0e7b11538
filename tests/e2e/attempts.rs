//! Bound attempts (SPEC §18) with real clients: `POST /attempts` hands out an id and a secret, and
//! under `auth.attempts = "bound"` only a live attempt's secret gets through, over HTTP and
//! `socks5h://` alike, named by the attempt it is bound to; `DELETE` and expiry end it.

use std::{path::Path, process::Command, sync::Arc, time::Duration};

use leash::AttemptsMode;
use listeners::StaticResolver;
use serde_json::{json, Value};
use tests::{
    curl, leash_bin, policy_config, raw_request, start_proxy, stderr, stdout, AdminClient,
    BinaryProxy, Origin, TestProxy,
};

/// `(status, JSON body)` of one admin request.
async fn admin(
    client: &AdminClient,
    method: &str,
    path: &str,
    body: Option<Value>,
) -> (u16, Value) {
    let host = client.addr.to_string();
    let auth = client
        .token
        .as_ref()
        .map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let body = body.map_or(String::new(), |b| b.to_string());
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let response = raw_request(client.addr, request.as_bytes()).await;
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

/// A proxy in bound mode that may reach `origin` (allowed requests logged too).
fn bound_proxy(origin: &Origin, mode: AttemptsMode) -> TestProxy {
    let mut config = policy_config(&[], &[], &[format!("127.0.0.1:{}", origin.port())]);
    config.auth.attempts = mode;
    config.log.log_allowed = true;
    start_proxy(config, Arc::new(StaticResolver::new()), None)
}

/// What curl gets through `proxy` from `url`: its exit code and body.
async fn fetch(proxy: &str, url: &str) -> (Option<i32>, String) {
    let out = curl(&["-x", proxy, url]).await;
    (out.code, out.text())
}

/// The HTTP status curl saw through `proxy` (`407` when the proxy refused the credentials).
async fn status(proxy: &str, url: &str) -> String {
    curl(&["-o", "/dev/null", "-w", "%{http_code}", "-x", proxy, url])
        .await
        .text()
}

const BODY: &str = "hello from origin";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_bound_attempts_secret_gets_through_and_names_the_attempt() {
    let origin = Origin::http().await;
    let url = format!("http://127.0.0.1:{}/", origin.port());
    let proxy = bound_proxy(&origin, AttemptsMode::Bound);
    let client = proxy.admin_client();
    let socks = proxy.socks.expect("a SOCKS5 listener");

    // Made-up attempts, the global proxy token, no credentials: 407 / SOCKS5 auth failure.
    for forged in [
        "made-up:tok",
        "made-up:0123456789abcdef0123456789abcdef",
        "step-7:tok",
    ] {
        assert_eq!(
            status(&proxy.proxy_url(forged), &url).await,
            "407",
            "{forged}"
        );
        let (code, body) = fetch(&format!("socks5h://{forged}@{socks}"), &url).await;
        assert!(
            code != Some(0) && body.is_empty(),
            "{forged}: {code:?} {body}"
        );
    }
    assert_eq!(status(&format!("http://{}", proxy.http), &url).await, "407");
    assert!(
        origin.seen.requests().is_empty(),
        "nothing forged reached the origin"
    );

    let (code, a) = admin(&client, "POST", "/attempts", Some(json!({"id": "step-7"}))).await;
    assert_eq!(code, 200, "{a}");
    let secret = a["token"].as_str().expect("a secret").to_owned();
    assert!(secret.len() >= 32, "{secret}");
    assert_eq!(a["id"], "step-7");
    assert_eq!(a["http"], proxy.proxy_url(&format!("step-7:{secret}")));
    assert_eq!(a["socks"], format!("socks5h://step-7:{secret}@{socks}"));
    assert_eq!(a["env"]["HTTP_PROXY"], a["http"]);
    assert_eq!(a["env"]["ALL_PROXY"], a["socks"]);
    let (code, taken) = admin(&client, "POST", "/attempts", Some(json!({"id": "step-7"}))).await;
    assert_eq!(code, 409, "an id stays with its holder: {taken}");
    let (code, b) = admin(&client, "POST", "/attempts", Some(json!({"id": "step-8"}))).await;
    assert_eq!(code, 200, "{b}");

    let (http, socks_url) = (a["http"].as_str().unwrap(), a["socks"].as_str().unwrap());
    assert_eq!(fetch(http, &url).await, (Some(0), BODY.to_owned()));
    assert_eq!(fetch(socks_url, &url).await, (Some(0), BODY.to_owned()));
    // A's secret under B's name is A's request (the secret is the proof, the name is not).
    let as_b = proxy.proxy_url(&format!("step-8:{secret}"));
    assert_eq!(fetch(&as_b, &url).await, (Some(0), BODY.to_owned()));
    let as_b = format!("socks5h://step-8:{secret}@{socks}");
    assert_eq!(fetch(&as_b, &url).await, (Some(0), BODY.to_owned()));

    // Ended: its secret is refused from the next request on.
    let (code, ended) = admin(&client, "DELETE", "/attempts/step-7", None).await;
    assert_eq!((code, &ended["ended"]), (200, &json!("step-7")));
    assert_eq!(status(http, &url).await, "407");
    let (code, _) = fetch(socks_url, &url).await;
    assert_ne!(code, Some(0), "SOCKS5 refuses an ended attempt");
    let (code, _) = admin(&client, "DELETE", "/attempts/step-7", None).await;
    assert_eq!(code, 404);
    // B lives on.
    assert_eq!(
        fetch(b["http"].as_str().unwrap(), &url).await,
        (Some(0), BODY.to_owned())
    );

    let lines = proxy.stop().await;
    let attempts: Vec<&str> = lines
        .iter()
        .filter(|l| l["decision"] == "allow")
        .map(|l| l["attempt"].as_str().unwrap_or("null"))
        .collect();
    assert_eq!(attempts, ["step-7", "step-7", "step-7", "step-7", "step-8"]);
    let refused = lines
        .iter()
        .filter(|l| l["reason"] == "auth_failed")
        .count();
    // 3 forged over HTTP, 3 over SOCKS5, the ended one over each (the bare request is a challenge).
    assert_eq!(refused, 8, "{lines:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_attempt_gets_407_and_bad_requests_are_refused() {
    let origin = Origin::http().await;
    let url = format!("http://127.0.0.1:{}/", origin.port());
    let proxy = bound_proxy(&origin, AttemptsMode::Bound);
    let client = proxy.admin_client();
    let (code, brief) = admin(&client, "POST", "/attempts", Some(json!({"ttl": "1s"}))).await;
    assert_eq!(code, 200, "{brief}");
    assert!(
        brief["id"].as_str().unwrap().starts_with("attempt-"),
        "{brief}"
    );
    let http = brief["http"].as_str().unwrap();
    assert_eq!(fetch(http, &url).await, (Some(0), BODY.to_owned()));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(status(http, &url).await, "407", "expired");
    let (code, _) = fetch(brief["socks"].as_str().unwrap(), &url).await;
    assert_ne!(code, Some(0), "SOCKS5 refuses an expired attempt");

    for body in [
        json!({"ttl": "soon"}),
        json!({"ttl": "0s"}),
        json!({"id": "bad id"}),
        json!({"allow": ["a..b"]}),
        json!({"allow": "example.com"}),
        json!({"secret": "mine"}),
    ] {
        let (code, answer) = admin(&client, "POST", "/attempts", Some(body.clone())).await;
        assert_eq!(code, 400, "{body}: {answer}");
        assert!(answer["error"].is_string(), "{answer}");
    }
    let lines = proxy.stop().await;
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["reason"] == "auth_failed")
            .count(),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn free_mode_keeps_free_form_attempt_ids_and_binds_nothing() {
    let origin = Origin::http().await;
    let url = format!("http://127.0.0.1:{}/", origin.port());
    let proxy = bound_proxy(&origin, AttemptsMode::Free);
    let (code, answer) = admin(&proxy.admin_client(), "POST", "/attempts", Some(json!({}))).await;
    assert_eq!(code, 409, "{answer}");
    let any = proxy.proxy_url("anything-goes:tok");
    assert_eq!(fetch(&any, &url).await, (Some(0), BODY.to_owned()));
    let lines = proxy.stop().await;
    assert_eq!(lines[0]["attempt"], "anything-goes");
}

/// `leash exec` binds its command's attempt: the command's own proxy variables get through; from
/// inside the command, a made-up secret gets 407 and its own secret under another name is still
/// its own attempt (the log names the bound `exec-…` id, never the claimed one).
#[test]
fn leash_exec_runs_its_command_on_a_bound_attempt() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let origin = runtime.block_on(Origin::http());
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/", origin.port());
    let script = format!(
        "made_up=$(printf %s \"$HTTP_PROXY\" | sed 's#//[^@]*@#//exec-forged:0123456789abcdef0123456789abcdef@#'); \
         renamed=$(printf %s \"$HTTP_PROXY\" | sed 's#//[^:]*:#//exec-forged:#'); \
         curl -sS -o /dev/null -w '%{{http_code}}\\n' -x \"$made_up\" {url}; \
         curl -sS -x \"$renamed\" {url}; echo; curl -sS {url}"
    );
    let out = exec(dir.path(), &origin, &["sh", "-c", &script]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("407\n{BODY}\n{BODY}"));
    let text = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let allowed: Vec<&str> = lines
        .iter()
        .filter(|l| l["decision"] == "allow")
        .map(|l| l["attempt"].as_str().unwrap())
        .collect();
    assert_eq!(allowed.len(), 2, "{lines:?}");
    assert!(
        allowed
            .iter()
            .all(|a| a.starts_with("exec-") && *a != "exec-forged"),
        "{allowed:?}"
    );
    assert_eq!(allowed[0], allowed[1]);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l["reason"] == "auth_failed")
            .count(),
        1
    );
    assert_eq!(origin.seen.requests().len(), 2);
}

fn exec(dir: &Path, origin: &Origin, command: &[&str]) -> std::process::Output {
    let config = dir.join("leash.toml");
    std::fs::write(&config, "[log]\nlog_allowed = true\n").unwrap();
    Command::new(leash_bin())
        .current_dir(dir)
        .env_remove("LEASH_CONFIG")
        .args([
            "exec",
            "--quiet",
            "--config",
            config.to_str().unwrap(),
            "--log",
        ])
        .arg(dir.join("log.jsonl"))
        .args([
            "--allow-local",
            &format!("127.0.0.1:{}", origin.port()),
            "--",
        ])
        .args(command)
        .output()
        .expect("leash exec runs")
}

/// `leash env --bind` asks a running `leash proxy` (through its ready record and admin token
/// file) for a bound attempt: the printed variables get curl through, named by that attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leash_env_bind_asks_a_running_proxy_for_a_bound_attempt() {
    let origin = Origin::http().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("leash.toml");
    std::fs::write(
        &config,
        "[auth]\nattempts = \"bound\"\n[log]\nlog_allowed = true\n",
    )
    .unwrap();
    let ready = dir.path().join("ready.json");
    let log = dir.path().join("log.jsonl");
    let mut command = Command::new(leash_bin());
    command
        .current_dir(dir.path())
        .env("XDG_RUNTIME_DIR", dir.path())
        .args(["proxy", "--ephemeral", "--config", config.to_str().unwrap()])
        .args(["--allow-local", &format!("127.0.0.1:{}", origin.port())])
        .args([
            "--ready-file",
            ready.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ]);
    let proxy = BinaryProxy::start(command, Duration::from_secs(30));
    let env = |attempt: Option<&str>| {
        let mut command = Command::new(leash_bin());
        command.args([
            "env",
            "--ready-file",
            ready.to_str().unwrap(),
            "--bind",
            "--shell",
            "json",
        ]);
        if let Some(attempt) = attempt {
            command.args(["--attempt", attempt]);
        }
        command
            .env_remove("LEASH_CONFIG")
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = env(Some("shell-1"));
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let vars: Value = serde_json::from_str(&stdout(&out)).unwrap();
    let http = vars["HTTP_PROXY"].as_str().unwrap();
    assert!(http.starts_with("http://shell-1:"), "{http}");
    let url = format!("http://127.0.0.1:{}/", origin.port());
    assert_eq!(fetch(http, &url).await, (Some(0), BODY.to_owned()));
    assert_eq!(
        fetch(vars["ALL_PROXY"].as_str().unwrap(), &url).await,
        (Some(0), BODY.to_owned())
    );
    // The id is taken now: a clear refusal, not a second secret for it.
    let taken = env(Some("shell-1"));
    assert_eq!(taken.status.code(), Some(2));
    assert!(
        stderr(&taken).contains("already bound"),
        "{}",
        stderr(&taken)
    );
    // Without --attempt: a fresh id.
    let fresh: Value = serde_json::from_str(&stdout(&env(None))).unwrap();
    assert!(
        fresh["HTTP_PROXY"]
            .as_str()
            .unwrap()
            .starts_with("http://attempt-"),
        "{fresh}"
    );
    let output = proxy.terminate();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let text = std::fs::read_to_string(&log).unwrap();
    let attempts: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap()["attempt"].clone())
        .collect();
    assert_eq!(attempts, [json!("shell-1"), json!("shell-1")]);
}

/// Ending an attempt closes what it has open: a `CONNECT` tunnel and a SOCKS5 tunnel on the ended
/// attempt close, one on another attempt stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_an_attempt_closes_its_open_tunnels() {
    use base64::Engine as _;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    let origin = Origin::http().await;
    let proxy = bound_proxy(&origin, AttemptsMode::Bound);
    let client = proxy.admin_client();
    let mut secrets = Vec::new();
    for id in ["ends", "stays"] {
        let (code, bound) = admin(&client, "POST", "/attempts", Some(json!({ "id": id }))).await;
        assert_eq!(code, 200, "{bound}");
        secrets.push(bound["token"].as_str().expect("a secret").to_owned());
    }
    let target = format!("127.0.0.1:{}", origin.port());
    let connect = |id: &str, secret: &str| {
        let basic = base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"));
        format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic {basic}\r\n\r\n")
    };
    let mut open = Vec::new();
    for (id, secret) in [("ends", &secrets[0]), ("stays", &secrets[1])] {
        let mut stream = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
        stream
            .write_all(connect(id, secret).as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 256];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("an answer")
            .unwrap();
        let answer = String::from_utf8_lossy(&buf[..n]).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{id}: {answer}");
        open.push(stream);
    }
    let socks = proxy.socks.expect("a SOCKS5 listener");
    let socks_tunnel = tokio_socks::tcp::Socks5Stream::connect_with_password(
        socks,
        target.as_str(),
        "ends",
        &secrets[0],
    )
    .await
    .expect("the SOCKS5 tunnel opens");

    let (code, ended) = admin(&client, "DELETE", "/attempts/ends", None).await;
    assert_eq!(code, 200, "{ended}");
    let closed = |mut stream: tokio::net::TcpStream| async move {
        let mut buf = [0u8; 64];
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await;
        matches!(read, Ok(Ok(0) | Err(_)))
    };
    let stays = open.pop().unwrap();
    let ends = open.pop().unwrap();
    assert!(
        closed(ends).await,
        "the ended attempt's CONNECT tunnel closed"
    );
    assert!(
        closed(socks_tunnel.into_inner()).await,
        "the ended attempt's SOCKS5 tunnel closed"
    );
    // The other attempt's tunnel still carries a request.
    let mut stays = stays;
    stays
        .write_all(
            format!("GET / HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), stays.read_to_string(&mut answer))
        .await
        .expect("an answer")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
