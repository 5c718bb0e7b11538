//! `leash exec` with real programs as clients (SPEC §11, §12): curl over each proxy variable,
//! Python's urllib, and git, against local origins — allowed, and denied.

use std::{net::TcpListener, path::Path, process::Command};

use tests::{leash_bin, stderr, stdout, Origin, SeenRequest, TestCa};

/// `leash exec ARGS -- CMD…` in `dir`, with allowed decisions logged to `dir/log.jsonl`.
fn exec(dir: &Path, flags: &[&str], command: &[&str]) -> std::process::Output {
    let config = dir.join("leash.toml");
    std::fs::write(&config, "[log]\nlog_allowed = true\n").unwrap();
    let log = dir.join("log.jsonl");
    let _ = std::fs::remove_file(&log);
    Command::new(leash_bin())
        .current_dir(dir)
        .env_remove("LEASH_CONFIG")
        .args([
            "exec",
            "--config",
            config.to_str().unwrap(),
            "--log",
            log.to_str().unwrap(),
        ])
        .args(flags)
        .arg("--")
        .args(command)
        .output()
        .expect("leash exec runs")
}

fn log_lines(dir: &Path) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(dir.join("log.jsonl")).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

fn assert_clean(request: &SeenRequest) {
    for (name, value) in &request.headers {
        assert!(
            !name.starts_with("proxy-") && name != "via" && !name.starts_with("x-forwarded"),
            "{name} reached the origin"
        );
        assert!(
            !value.contains("exec-"),
            "the attempt id reached the origin in {name}"
        );
    }
}

/// Every logged line carries the same `exec-…` attempt id; returns the lines.
fn attempts_logged(dir: &Path) -> Vec<serde_json::Value> {
    let lines = log_lines(dir);
    assert!(!lines.is_empty(), "the run was logged");
    let attempt = lines[0]["attempt"]
        .as_str()
        .expect("an attempt id")
        .to_owned();
    assert!(attempt.starts_with("exec-"), "{attempt}");
    assert!(lines.iter().all(|l| l["attempt"] == attempt.as_str()));
    lines
}

const UNSET_HTTP_PROXIES: &[&str] = &[
    "env",
    "-u",
    "HTTP_PROXY",
    "-u",
    "http_proxy",
    "-u",
    "HTTPS_PROXY",
    "-u",
    "https_proxy",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_clients_reach_local_origins_through_every_proxy_variable() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("origin CA");
    let ca_file = dir.path().join("origin-ca.pem");
    ca.write_pem(&ca_file);
    let plain = Origin::http().await;
    let secure =
        Origin::https(ca.server_config(&["localhost"], &["127.0.0.1".parse().unwrap()])).await;
    let allow = [
        "--allow-local".to_owned(),
        format!("127.0.0.1:{}", plain.port()),
        "--allow-local".to_owned(),
        format!("127.0.0.1:{}", secure.port()),
    ];
    let allow: Vec<&str> = allow.iter().map(String::as_str).collect();
    let http_url = format!("http://127.0.0.1:{}/", plain.port());
    let https_url = format!("https://127.0.0.1:{}/", secure.port());
    let python_https = format!(
        "import ssl, urllib.request; ctx = ssl.create_default_context(cafile={:?}); print(urllib.request.urlopen({https_url:?}, context=ctx).read().decode())",
        ca_file.to_str().unwrap()
    );
    let python_http = format!(
        "import urllib.request; print(urllib.request.urlopen({http_url:?}).read().decode())"
    );
    let socks_curl: Vec<&str> = UNSET_HTTP_PROXIES
        .iter()
        .copied()
        .chain(["curl", "-sS", http_url.as_str()])
        .collect();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "curl over HTTP_PROXY",
            vec!["curl", "-sS", &http_url],
            "http",
        ),
        (
            "curl over HTTPS_PROXY",
            vec![
                "curl",
                "-sS",
                "--cacert",
                ca_file.to_str().unwrap(),
                &https_url,
            ],
            "connect",
        ),
        ("curl over ALL_PROXY", socks_curl, "socks5"),
        ("python urllib", vec!["python3", "-c", &python_http], "http"),
        (
            "python urllib https",
            vec!["python3", "-c", &python_https],
            "connect",
        ),
    ];
    for (name, command, protocol) in cases {
        let out = exec(dir.path(), &allow, &command);
        assert_eq!(out.status.code(), Some(0), "{name}: {}", stderr(&out));
        assert_eq!(stdout(&out).trim(), "hello from origin", "{name}");
        let lines = attempts_logged(dir.path());
        assert_eq!(lines.len(), 1, "{name}: {lines:?}");
        assert_eq!(
            (&lines[0]["decision"], &lines[0]["protocol"]),
            (&"allow".into(), &protocol.into()),
            "{name}"
        );
    }
    plain.seen.requests().iter().for_each(assert_clean);
    secure.seen.requests().iter().for_each(assert_clean);
    assert_eq!(plain.seen.requests().len(), 3);
    assert_eq!(secure.seen.requests().len(), 2);
}

fn git(dir: &Path, args: &[&str]) {
    let out = Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=leash",
            "-c",
            "user.email=leash@example.test",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args)
        .env_remove("HTTP_PROXY")
        .env_remove("http_proxy")
        .output()
        .expect("git runs");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn git_clones_over_the_dumb_http_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let served = dir.path().join("served");
    std::fs::create_dir(&served).unwrap();
    git(&served, &["init", "--bare", "repo.git"]);
    let work = dir.path().join("work");
    git(dir.path(), &["init", work.to_str().unwrap()]);
    std::fs::write(work.join("README"), "cloned through leash\n").unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["commit", "-m", "first"]);
    git(
        &work,
        &[
            "push",
            served.join("repo.git").to_str().unwrap(),
            "HEAD:refs/heads/main",
        ],
    );
    git(
        &served.join("repo.git"),
        &["symbolic-ref", "HEAD", "refs/heads/main"],
    );
    git(&served.join("repo.git"), &["update-server-info"]);
    let origin = Origin::files(served).await;
    let url = format!("http://127.0.0.1:{}/repo.git", origin.port());
    let clone = dir.path().join("clone");
    let allow_local = format!("127.0.0.1:{}", origin.port());
    let out = exec(
        dir.path(),
        &["--allow-local", &allow_local],
        &["git", "clone", "-q", &url, clone.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert_eq!(
        std::fs::read_to_string(clone.join("README")).unwrap(),
        "cloned through leash\n"
    );
    assert!(origin
        .seen
        .requests()
        .iter()
        .any(|r| r.uri.contains("info/refs")));
    origin.seen.requests().iter().for_each(assert_clean);
    let lines = attempts_logged(dir.path());
    assert!(lines
        .iter()
        .all(|l| l["decision"] == "allow" && l["protocol"] == "http"));
}

#[test]
fn denied_hosts_fail_every_client_and_are_summarised() {
    let dir = tempfile::tempdir().unwrap();
    let deny = ["--deny", "denied.test"];
    let http_url = "http://denied.test/";
    let python = format!("import urllib.request; urllib.request.urlopen({http_url:?})");
    let socks_curl: Vec<&str> = UNSET_HTTP_PROXIES
        .iter()
        .copied()
        .chain(["curl", "-sSf", http_url])
        .collect();
    let cases: Vec<(&str, Vec<&str>, &str)> = vec![
        (
            "curl over HTTP_PROXY",
            vec!["curl", "-sSf", http_url],
            "http",
        ),
        (
            "curl over HTTPS_PROXY",
            vec!["curl", "-sSf", "https://denied.test/"],
            "connect",
        ),
        ("curl over ALL_PROXY", socks_curl, "socks5"),
        ("python urllib", vec!["python3", "-c", &python], "http"),
        (
            "git",
            vec!["git", "clone", "-q", "http://denied.test/repo.git", "clone"],
            "http",
        ),
    ];
    for (name, command, protocol) in cases {
        let out = exec(dir.path(), &deny, &command);
        assert_ne!(out.status.code(), Some(0), "{name} must fail");
        let err = stderr(&out);
        assert!(err.contains("leash: blocked"), "{name}: {err}");
        assert!(
            err.contains("denied.test:") && err.contains("denylist"),
            "{name}: {err}"
        );
        let lines = attempts_logged(dir.path());
        assert!(
            lines
                .iter()
                .all(|l| l["reason"] == "denylist" && l["host"] == "denied.test"),
            "{name}: {lines:?}"
        );
        assert!(
            lines.iter().all(|l| l["protocol"] == protocol),
            "{name}: {lines:?}"
        );
        let summarised: usize = err
            .lines()
            .filter(|l| l.contains("denied.test:"))
            .filter_map(|l| {
                l.split(" x")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse::<usize>()
                    .ok()
            })
            .sum();
        assert_eq!(
            summarised,
            lines.len(),
            "{name}: one log entry per blocked request, all counted: {err}"
        );
    }
}

#[test]
fn exit_statuses_pass_through_and_no_listener_is_left_behind() {
    let dir = tempfile::tempdir().unwrap();
    let out = exec(dir.path(), &["--quiet"], &["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    let out = exec(dir.path(), &[], &["sh", "-c", "kill -TERM $$"]);
    assert_eq!(out.status.code(), Some(143));
    let out = exec(
        dir.path(),
        &[],
        &[
            "sh",
            "-c",
            "echo $HTTP_PROXY; echo $ALL_PROXY; echo \"[$NO_PROXY]\"",
        ],
    );
    let text = stdout(&out);
    let mut lines = text.lines();
    let port = |url: &str| url.rsplit(':').next().unwrap().parse::<u16>().unwrap();
    let (http, socks) = (lines.next().unwrap(), lines.next().unwrap());
    assert!(
        http.starts_with("http://exec-") && socks.starts_with("socks5h://exec-"),
        "{text}"
    );
    assert_eq!(lines.next(), Some("[]"), "NO_PROXY is empty");
    for port in [port(http), port(socks)] {
        assert!(
            TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is free after exec"
        );
    }
    // `--no-socks`: no SOCKS5 listener, and ALL_PROXY names the HTTP proxy (SPEC §12).
    let out = exec(
        dir.path(),
        &["--no-socks"],
        &["sh", "-c", "echo $HTTP_PROXY; echo $ALL_PROXY"],
    );
    let text = stdout(&out);
    let mut lines = text.lines();
    let (http, all) = (lines.next().unwrap(), lines.next().unwrap());
    assert!(http.starts_with("http://exec-"), "{text}");
    assert_eq!(all, http, "{text}");
}
