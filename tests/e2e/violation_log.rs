//! The violation log under the two failures the issue found: a full disk (a small tmpfs the test
//! mounts, filled and freed while the real proxy answers blocks) and a SIGKILL of the real binary
//! right after blocks were answered.

use std::{
    collections::BTreeSet,
    fs::File,
    io::Write,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::Arc,
    time::{Duration, Instant},
};

use listeners::StaticResolver;
use serde_json::Value;
use tests::{leash_bin, policy_config, start_proxy_logging_into, BinaryProxy, TestProxy};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::admin::call;

/// A tmpfs mounted for one test, unmounted (lazily: the proxy may still hold its file) on drop.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a tmpfs of `size`; `None`, with a loud message, when not root.
    fn mount(test: &str, size: &str) -> Option<Tmpfs> {
        if !is_root() {
            eprintln!("SKIPPED {test}: mounting a tmpfs needs root (CI runs as root)");
            return None;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .status()
            .expect("mount runs");
        assert!(status.success(), "mount -t tmpfs failed");
        Some(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Fills every free page with a filler file. Pages already given to the log stay its own, so
    /// the log may still have the rest of its last page.
    fn fill(&self) {
        let mut filler = File::create(self.path().join("filler")).expect("filler");
        for _ in 0..100_000 {
            if let Err(error) = filler.write_all(&[b'x'; 4096]) {
                assert_eq!(error.raw_os_error(), Some(28), "ENOSPC: {error}");
                return;
            }
        }
        panic!("the tmpfs never filled");
    }

    fn free(&self) {
        std::fs::remove_file(self.path().join("filler")).expect("remove the filler");
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.dir.path())
            .status();
    }
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

/// `n` blocked requests on one kept-alive connection, each answered before the next is sent,
/// with a path of `path_len` bytes (the log line grows with it); returns each 403's event id.
async fn blocks(proxy: SocketAddr, n: usize, path_len: usize) -> Vec<u64> {
    let mut stream = TcpStream::connect(proxy).await.expect("connect");
    let path = "p".repeat(path_len);
    let mut ids = Vec::with_capacity(n);
    for i in 0..n {
        let request = format!(
            "GET http://blocked{i}.test/{path} HTTP/1.1\r\nHost: blocked{i}.test\r\n\
             Proxy-Authorization: Basic YTE6dG9r\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).await.expect("write");
        ids.push(read_block(&mut stream).await);
    }
    ids
}

/// Reads one `403` (head and body) and returns its `x-leash-event`.
async fn read_block(stream: &mut TcpStream) -> u64 {
    let mut buf = Vec::new();
    let mut byte = [0u8; 1];
    while !buf.ends_with(b"\r\n\r\n") {
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut byte)).await;
        assert_eq!(
            read.expect("a response within 10 s").expect("read"),
            1,
            "closed early"
        );
        buf.push(byte[0]);
    }
    let head = String::from_utf8(buf).expect("an ASCII head");
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    let header = |name: &str| {
        head.lines()
            .find_map(|l| {
                l.split_once(':')
                    .filter(|(n, _)| n.eq_ignore_ascii_case(name))
            })
            .map(|(_, v)| v.trim().parse::<u64>().expect("a number"))
            .unwrap_or_else(|| panic!("no {name}: {head}"))
    };
    let mut body = vec![0u8; header("content-length") as usize];
    stream.read_exact(&mut body).await.expect("the body");
    header("x-leash-event")
}

/// Every line of the log, parsed (a line that is not JSON fails the test, naming it).
fn log_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l:?}")))
        .collect()
}

/// The event `seq`s of the lines and the gap lines' ranges, checked to partition `1..=events` in
/// order (every event once: as its line or inside a gap). Returns the gaps `(first, last)`.
#[track_caller]
fn check_partition(lines: &[Value], events: u64) -> Vec<(u64, u64)> {
    let mut next = 1;
    let mut gaps = Vec::new();
    for line in lines {
        match line["kind"].as_str() {
            Some("gap") => {
                let (first, last) = (
                    line["first_seq"].as_u64().unwrap(),
                    line["last_seq"].as_u64().unwrap(),
                );
                assert_eq!(
                    first, next,
                    "the gap starts at the first missing event: {line}"
                );
                assert_eq!(line["lost"].as_u64(), Some(last - first + 1), "{line}");
                assert!(
                    line["reason"].as_str().is_some_and(|r| !r.is_empty()),
                    "{line}"
                );
                gaps.push((first, last));
                next = last + 1;
            }
            None => {
                assert_eq!(
                    line["seq"].as_u64(),
                    Some(next),
                    "lines in seq order, none missing"
                );
                next += 1;
            }
            Some(other) => panic!("unknown kind {other}: {line}"),
        }
    }
    assert_eq!(next, events + 1, "the file accounts for every event");
    gaps
}

/// A metric's value from `/metrics`.
fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name}:\n{text}"))
        .parse()
        .expect("a number")
}

async fn metrics(proxy: &TestProxy) -> String {
    let (status, body) = call(&proxy.admin_client(), "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    body.as_str().expect("text").to_owned()
}

async fn health(proxy: &TestProxy) -> Value {
    let (status, body) = call(&proxy.admin_client(), "GET", "/health", None, None).await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Polls `/health` (bounded) until it is `ok` again after space came back.
async fn wait_healthy(proxy: &TestProxy) {
    let start = Instant::now();
    loop {
        if health(proxy).await["status"] == "ok" {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the log never recovered"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[track_caller]
fn assert_degraded(health: &Value) {
    assert_eq!(health["status"], "degraded", "{health}");
    let reason = health["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("No space left on device"), "{health}");
}

/// `events == written + in_gaps`, nothing queued or unrecorded, from `/metrics`.
#[track_caller]
fn assert_reconciled(metrics: &str, events: u64, in_gaps: u64) {
    assert_eq!(
        metric(metrics, "leash_log_events_total"),
        events,
        "{metrics}"
    );
    assert_eq!(
        metric(metrics, "leash_log_lines_written_total"),
        events - in_gaps
    );
    assert_eq!(metric(metrics, "leash_log_lines_in_gaps_total"), in_gaps);
    assert_eq!(metric(metrics, "leash_log_lines_queued"), 0);
    assert_eq!(metric(metrics, "leash_log_lines_unrecorded_total"), 0);
}

fn proxy_on(tmpfs: &Tmpfs) -> TestProxy {
    start_proxy_logging_into(
        policy_config(&[], &[], &[]),
        Arc::new(StaticResolver::default()),
        tmpfs.path(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_full_in_the_middle_of_a_line_leaves_whole_lines_and_writing_resumes() {
    let Some(tmpfs) = Tmpfs::mount("a_disk_full_in_the_middle_of_a_line…", "64k") else {
        return;
    };
    let proxy = proxy_on(&tmpfs);
    let mut answered = blocks(proxy.http, 3, 10).await;
    tmpfs.fill();
    // The rest of the log's last page takes a few lines; one is cut in the middle.
    answered.extend(blocks(proxy.http, 20, 300).await);
    assert_degraded(&health(&proxy).await);
    let during = metrics(&proxy).await;
    assert!(metric(&during, "leash_log_lines_queued") > 0, "{during}");
    assert!(metric(&during, "leash_log_errors_total") > 0, "{during}");
    log_lines(&proxy.log);

    tmpfs.free();
    wait_healthy(&proxy).await;
    answered.extend(blocks(proxy.http, 3, 10).await);
    assert_eq!(answered, (1..=26).collect::<Vec<u64>>());
    assert_reconciled(&metrics(&proxy).await, 26, 0);
    let lines = log_lines(&proxy.log);
    assert!(check_partition(&lines, 26).is_empty(), "nothing was lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_full_before_the_first_line_queues_then_records_one_gap() {
    let Some(tmpfs) = Tmpfs::mount("a_disk_full_before_the_first_line…", "2m") else {
        return;
    };
    let proxy = proxy_on(&tmpfs);
    tmpfs.fill();
    // Lines of ~4.4 KB: 150 of them are more than the queue holds (512 KiB).
    let mut answered = blocks(proxy.http, 150, 4000).await;
    assert_degraded(&health(&proxy).await);
    let during = metrics(&proxy).await;
    assert_eq!(metric(&during, "leash_log_lines_queued"), 150, "{during}");
    assert_eq!(
        std::fs::metadata(&proxy.log).unwrap().len(),
        0,
        "nothing torn left behind"
    );

    tmpfs.free();
    wait_healthy(&proxy).await;
    answered.extend(blocks(proxy.http, 2, 10).await);
    assert_eq!(answered, (1..=152).collect::<Vec<u64>>());
    let lines = log_lines(&proxy.log);
    let gaps = check_partition(&lines, 152);
    assert_eq!(gaps.len(), 1, "one gap line: {gaps:?}");
    let (first, last) = gaps[0];
    assert!(
        first > 100 && last == 150,
        "the events past the bound: {gaps:?}"
    );
    assert_reconciled(&metrics(&proxy).await, 152, last - first + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn space_that_never_returns_ends_in_a_final_gap_line_when_one_fits() {
    let Some(tmpfs) = Tmpfs::mount("space_that_never_returns…", "64k") else {
        return;
    };
    let proxy = proxy_on(&tmpfs);
    blocks(proxy.http, 2, 10).await;
    tmpfs.fill();
    // Each line is larger than what is left of the log's page; a gap line is not.
    blocks(proxy.http, 5, 4000).await;
    assert_degraded(&health(&proxy).await);
    let log = proxy.log.clone();
    proxy.stop().await;
    let lines = log_lines(&log);
    assert_eq!(check_partition(&lines, 7), [(3, 7)]);
}

#[test]
fn space_that_never_returns_and_no_room_for_a_gap_is_counted_at_exit() {
    let Some(tmpfs) = Tmpfs::mount("space_that_never_returns_and_no_room…", "64k") else {
        return;
    };
    let (proxy, log) = binary_proxy(tmpfs.path());
    tmpfs.fill();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let addr = proxy.http().parse().unwrap();
    assert_eq!(runtime.block_on(blocks(addr, 3, 10)), [1, 2, 3]);
    let output = proxy.terminate();
    assert!(output.status.success(), "{output:?}");
    let stderr = without_colours(&String::from_utf8_lossy(&output.stderr));
    assert!(
        stderr.contains("the violation log lost events") && stderr.contains("unrecorded=3"),
        "{stderr}"
    );
    assert_eq!(std::fs::read_to_string(log).unwrap(), "");
}

/// `text` without ANSI colour sequences (`ESC [ … m`).
fn without_colours(text: &str) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find('\x1b') {
        out.push_str(&rest[..start]);
        rest = rest[start..].split_once('m').map_or("", |(_, after)| after);
    }
    out + rest
}

/// `leash proxy` logging into `dir`, its config file beside the log; no proxy token.
fn binary_proxy(dir: &Path) -> (BinaryProxy, PathBuf) {
    let log = dir.join("v.jsonl");
    let config = dir.join("leash.toml");
    std::fs::write(
        &config,
        format!("[listen]\nephemeral = true\n[log]\nviolations = {log:?}\n"),
    )
    .unwrap();
    let mut command = Command::new(leash_bin());
    command.arg("proxy").arg("--config").arg(&config);
    (BinaryProxy::start(command, Duration::from_secs(60)), log)
}

/// Item 10: a block whose 403 was read is in the file, even if leash is killed the next instant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_answered_block_survives_a_sigkill_right_after_the_answer() {
    for round in 0..5 {
        let dir = tempfile::tempdir().unwrap();
        let (proxy, log) = binary_proxy(dir.path());
        let addr: SocketAddr = proxy.http().parse().unwrap();
        let socks: SocketAddr = proxy.ready["socks"].as_str().unwrap().parse().unwrap();
        let clients: Vec<_> = (0..4).map(|_| tokio::spawn(blocks(addr, 25, 50))).collect();
        // SOCKS5 refusals carry no event id: each must have its own line.
        let refused = socks_refusals(socks, 10).await;
        let mut answered = BTreeSet::new();
        for client in clients {
            answered.extend(client.await.unwrap());
        }
        proxy.kill();
        let lines = log_lines(&log);
        let logged: BTreeSet<u64> = lines.iter().filter_map(|l| l["seq"].as_u64()).collect();
        let missing: Vec<_> = answered.difference(&logged).collect();
        assert!(
            missing.is_empty(),
            "round {round}: answered, not logged: {missing:?}"
        );
        let socks_lines = lines.iter().filter(|l| l["protocol"] == "socks5").count();
        assert_eq!(
            socks_lines, refused,
            "round {round}: every SOCKS5 refusal logged"
        );
    }
}

/// `n` SOCKS5 `CONNECT`s to names no rule allows, each refused (`0x02`) before the next.
async fn socks_refusals(socks: SocketAddr, n: usize) -> usize {
    for i in 0..n {
        let mut stream = TcpStream::connect(socks).await.expect("connect");
        stream.write_all(&[5, 1, 0]).await.expect("greet");
        let mut choice = [0u8; 2];
        stream.read_exact(&mut choice).await.expect("method");
        assert_eq!(choice, [5, 0], "no authentication");
        let host = format!("refused{i}.test");
        let mut request = vec![5, 1, 0, 3, host.len() as u8];
        request.extend_from_slice(host.as_bytes());
        request.extend_from_slice(&443u16.to_be_bytes());
        stream.write_all(&request).await.expect("request");
        let mut reply = [0u8; 4];
        stream.read_exact(&mut reply).await.expect("reply");
        assert_eq!(reply[..2], [5, 2], "refused by the ruleset");
    }
    n
}
