//! `leash proxy` as a process: defaults, the ready record, signals, a complete log, and the
//! listener guarantees of SPEC §9.

use std::{collections::HashSet, net::TcpListener, process::Command, time::Duration};

use leash::{Config, Leash};
use tests::{cargo, curl, leash_bin, raw_request, BinaryProxy};

const READY_WAIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leash_proxy_with_no_arguments_blocks_everything_with_ask() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(leash_bin());
    command.arg("proxy").current_dir(dir.path());
    let proxy = BinaryProxy::start(command, READY_WAIT);
    assert_eq!(
        proxy.http(),
        "127.0.0.1:3128",
        "the embedded default address"
    );
    let out = curl(&["-i", "-x", "http://127.0.0.1:3128", "http://example.com/"]).await;
    let text = out.text();
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains("\"decision\":\"ask\""), "{text}");
    assert!(text.contains("\"reason\":\"allowlist_miss\""), "{text}");
    let output = proxy.terminate();
    assert!(output.status.success(), "SIGTERM exits 0: {output:?}");
    let log = std::fs::read_to_string(dir.path().join("leash-violations.jsonl"))
        .expect("the default log file");
    assert_eq!(log.lines().count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_blocks_are_all_logged_after_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("leash.toml");
    let log = dir.path().join("v.jsonl");
    std::fs::write(
        &config,
        format!(
            "[listen]\nephemeral = true\n[log]\nviolations = {:?}\n",
            log.to_str().unwrap()
        ),
    )
    .unwrap();
    let ready_file = dir.path().join("ready.json");
    let mut command = Command::new(leash_bin());
    command
        .arg("proxy")
        .arg("--config")
        .arg(&config)
        .arg("--ready-file")
        .arg(&ready_file);
    let proxy = BinaryProxy::start(command, READY_WAIT);
    let from_file: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&ready_file).unwrap()).unwrap();
    assert_eq!(
        from_file, proxy.ready,
        "the ready file holds the same record as stdout"
    );
    assert_eq!(proxy.ready["event"], "ready");
    let addr = proxy.http().parse().unwrap();
    let requests = (0..200).map(|i| {
        tokio::spawn(async move {
            let raw = format!("GET http://blocked{i}.test/ HTTP/1.1\r\nHost: blocked{i}.test\r\nConnection: close\r\n\r\n");
            raw_request(addr, raw.as_bytes()).await
        })
    });
    let responses = futures_join(requests.collect()).await;
    assert!(
        responses.iter().all(|r| r.starts_with("HTTP/1.1 403")),
        "every request was blocked"
    );
    let output = proxy.terminate();
    assert!(output.status.success(), "{output:?}");
    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON"))
        .collect();
    assert_eq!(lines.len(), 200);
    let seqs: HashSet<u64> = lines.iter().map(|l| l["seq"].as_u64().unwrap()).collect();
    assert_eq!(seqs.len(), 200, "distinct seq values");
    let hosts: HashSet<&str> = lines.iter().map(|l| l["host"].as_str().unwrap()).collect();
    assert_eq!(hosts.len(), 200, "one line per request");
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<String>>) -> Vec<String> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        out.push(handle.await.expect("request task"));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cargo_xtask_run_proxy_starts_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("dev.jsonl");
    let mut command = cargo();
    command
        .args(["xtask", "run-proxy", "--", "--ephemeral", "--log"])
        .arg(&log);
    let proxy = BinaryProxy::start(command, Duration::from_secs(300));
    let out = curl(&[
        "-i",
        "-x",
        &format!("http://{}", proxy.http()),
        "http://not-on-the-dev-list.test/",
    ])
    .await;
    assert!(out.text().starts_with("HTTP/1.1 403"), "{}", out.text());
    let output = proxy.terminate();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(std::fs::read_to_string(&log).unwrap().lines().count(), 1);
}

fn managed() -> Config {
    let mut config = Config::default();
    config.listen.ephemeral = true;
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_managed_proxies_hold_distinct_ports_from_build_to_run() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = managed();
    config.log.violations = dir.path().join("a.jsonl");
    let first = Leash::builder().config(config.clone()).build().unwrap();
    config.log.violations = dir.path().join("b.jsonl");
    let second = Leash::builder().config(config).build().unwrap();
    let (a, b) = (first.addrs().http.unwrap(), second.addrs().http.unwrap());
    assert_ne!(a, b);
    for addr in [a, b] {
        assert!(addr.ip().is_loopback());
        assert!(
            TcpListener::bind(addr).is_err(),
            "{addr} must stay bound between build and run"
        );
    }
    let (first, second) = (first.run(), second.run());
    for addr in [a, b] {
        let response = raw_request(
            addr,
            b"GET http://x.test/ HTTP/1.1\r\nHost: x.test\r\nConnection: close\r\n\r\n",
        )
        .await;
        assert!(
            response.starts_with("HTTP/1.1 403"),
            "the reserved socket is the one served: {response}"
        );
    }
    first.shutdown().await;
    second.shutdown().await;
}

#[test]
fn fixed_mode_with_a_taken_port_names_the_address() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let mut config = Config::default();
    config.listen.http = addr;
    let error = Leash::builder()
        .config(config)
        .build()
        .unwrap_err()
        .to_string();
    assert!(
        error.contains(&format!("cannot listen on {addr} (http)")),
        "{error}"
    );

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("leash.toml");
    std::fs::write(&file, format!("[listen]\nhttp = \"{addr}\"\n")).unwrap();
    let out = tests::leash(dir.path(), &["proxy", "--config", file.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        tests::stderr(&out).contains(&format!("cannot listen on {addr}")),
        "{}",
        tests::stderr(&out)
    );
}
