//! DNS under attack (issue 14, item 4): one client's names whose DNS never answers must not keep
//! another client's good names from resolving, during the attack or after it; lookups are bounded
//! per client and in total, refused ones fail closed with the bound named, abandoned ones hold
//! nothing. The name server is a fake one (Python, written here) inside a network namespace the
//! test creates, reached over a veth pair (`tests/src/netns.rs`): it answers `*.good.test` and never
//! answers anything else. Needs root (CI is root); skips loudly otherwise.

use std::{
    collections::HashSet,
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine as _;
use tests::{leash_bin, skip_unless_root, BinaryProxy, NetNs, Origin};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    task::JoinHandle,
};

const READY_WAIT: Duration = Duration::from_secs(60);
/// Every exchange with leash is bounded by this.
const EXCHANGE_WAIT: Duration = Duration::from_secs(60);

/// A name server that answers what its answers file says (re-read on every query) and nothing
/// else, ever. Every query it receives is kept (`name type`).
const FAKE_DNS: &str = r#"
import json, socket, sys
listen, answers_path = sys.argv[1], sys.argv[2]
sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
sock.bind((listen, 53))
print("ready", flush=True)
def rule_for(name):
    answers = json.load(open(answers_path))
    if name in answers:
        return answers[name]
    for pattern, rule in answers.items():
        if pattern.startswith("*.") and name.endswith(pattern[1:]):
            return rule
    return None
while True:
    data, peer = sock.recvfrom(4096)
    i, labels = 12, []
    while i < len(data) and data[i] != 0:
        labels.append(data[i + 1:i + 1 + data[i]].decode("ascii", "replace"))
        i += 1 + data[i]
    if len(data) < 12 or i + 5 > len(data):
        continue
    name, qtype = ".".join(labels).lower(), int.from_bytes(data[i + 1:i + 3], "big")
    print(f"{name} {qtype}", flush=True)
    rule = rule_for(name)
    if rule is None:
        continue
    records, count = b"", 0
    if qtype == 1:
        records = (b"\xc0\x0c\x00\x01\x00\x01" + rule["ttl"].to_bytes(4, "big")
                   + b"\x00\x04" + socket.inet_aton(rule["a"]))
        count = 1
    header = data[:2] + b"\x81\x80\x00\x01" + count.to_bytes(2, "big") + b"\x00\x00\x00\x00"
    sock.sendto(header + data[12:i + 5] + records, peer)
"#;

/// The fake name server, running inside its own namespace; stopped on drop.
#[derive(Debug)]
struct FakeDns {
    child: Child,
    queries: Arc<Mutex<Vec<String>>>,
    answers: PathBuf,
    /// A `resolv.conf` naming it.
    resolv_conf: PathBuf,
    /// Kept for its drop, which removes the namespace once the server has stopped.
    _netns: NetNs,
}

impl FakeDns {
    fn start(netns: NetNs, dir: &Path, answers: serde_json::Value) -> FakeDns {
        let answers_path = dir.join("answers.json");
        std::fs::write(&answers_path, answers.to_string()).unwrap();
        let resolv_conf = dir.join("resolv.conf");
        // Long timeouts, so a C library resolver would hold its thread for tens of seconds.
        let text = format!(
            "nameserver {}\noptions timeout:10 attempts:2\n",
            netns.ns_addr()
        );
        std::fs::write(&resolv_conf, text).unwrap();
        let mut child = netns
            .std_command("python3")
            .args(["-c", FAKE_DNS, &netns.ns_addr().to_string()])
            .arg(&answers_path)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = BufReader::new(child.stdout.take().expect("piped"));
        let queries = Arc::new(Mutex::new(Vec::new()));
        let (ready, ready_rx) = std::sync::mpsc::channel();
        let seen = queries.clone();
        std::thread::spawn(move || {
            for line in stdout.lines().map_while(Result::ok) {
                match line.as_str() {
                    "ready" => drop(ready.send(())),
                    _ => seen.lock().unwrap().push(line),
                }
            }
        });
        let started = ready_rx.recv_timeout(Duration::from_secs(30));
        let dns = FakeDns {
            child,
            queries,
            answers: answers_path,
            resolv_conf,
            _netns: netns,
        };
        started.expect("the fake name server is listening");
        dns
    }

    /// Replaces the answers. The server re-reads the file on every query, so the new file is put
    /// in place whole (written beside it, then renamed over it): a query never reads half a file.
    fn set_answers(&self, answers: serde_json::Value) {
        let next = self.answers.with_extension("next");
        std::fs::write(&next, answers.to_string()).unwrap();
        std::fs::rename(&next, &self.answers).unwrap();
    }

    /// Every query seen so far (`name type`), for failure messages.
    fn log(&self) -> Vec<String> {
        self.queries.lock().unwrap().clone()
    }

    /// The distinct names queried so far that end with `suffix`.
    fn names(&self, suffix: &str) -> HashSet<String> {
        let queries = self.queries.lock().unwrap();
        queries
            .iter()
            .filter_map(|q| q.split(' ').next())
            .filter(|name| name.ends_with(suffix))
            .map(str::to_owned)
            .collect()
    }

    /// How many `A` queries for `name` arrived.
    fn a_queries(&self, name: &str) -> usize {
        let wanted = format!("{name} 1");
        self.queries
            .lock()
            .unwrap()
            .iter()
            .filter(|q| **q == wanted)
            .count()
    }

    /// How many `A` queries for `name` arrived, once at least `expected` have (waiting, bounded):
    /// the server's lines reach the log through a pipe and a thread, a moment after its answer
    /// has reached leash, so a count read at once can lag behind what leash asked.
    async fn a_queries_at_least(&self, name: &str, expected: usize) -> usize {
        let what = format!("{expected} A queries for {name}");
        self.until(&what, |dns| dns.a_queries(name) >= expected)
            .await;
        self.a_queries(name)
    }

    /// Waits (bounded) until `done` holds for the queries seen.
    async fn until(&self, what: &str, done: impl Fn(&FakeDns) -> bool) {
        for _ in 0..600 {
            if done(self) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the fake name server never saw {what}");
    }
}

impl Drop for FakeDns {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How leash is told where the fake name server is.
enum Pointed {
    /// `dns.resolv_conf` in its config, plus these `[dns]` lines.
    Config(String),
    /// The system's own `/etc/resolv.conf`, replaced inside a private mount namespace: what any
    /// leash reads, so this runs unchanged against a build that has no `[dns]` keys.
    SystemFile,
}

/// `leash proxy` using `dns`, allowing `*.good.test` and the attack names, with a proxy token and
/// `local` (one local target, as `ADDRESS:PORT`) opened by `allow_local`.
fn start_leash(dns: &FakeDns, dir: &Path, local: &str, pointed: Pointed) -> BinaryProxy {
    let config = dir.join("leash.toml");
    let mut text = format!(
        "[listen]\nephemeral = true\n[auth]\ntoken = \"tok\"\n[admin]\nenabled = false\n\
         [policy]\nallow = [\"**.good.test\", \"**.attack.test\"]\nallow_local = [\"{local}\"]\n\
         [limits]\ndns_timeout = \"10s\"\n[log]\nviolations = {:?}\n",
        dir.join("v.jsonl").display().to_string()
    );
    let command = match pointed {
        Pointed::Config(lines) => {
            let path = dns.resolv_conf.display().to_string();
            text.push_str(&format!("[dns]\nresolv_conf = {path:?}\n{lines}"));
            let mut command = Command::new(leash_bin());
            command.arg("proxy").arg("--config").arg(&config);
            command
        }
        Pointed::SystemFile => {
            let mut command = Command::new("unshare");
            command.args(["--mount", "--propagation", "private", "sh", "-c"]);
            command.arg(r#"mount --bind "$1" /etc/resolv.conf && exec "$2" proxy --config "$3""#);
            command
                .arg("sh")
                .arg(&dns.resolv_conf)
                .arg(leash_bin())
                .arg(&config);
            command
        }
    };
    std::fs::write(&config, text).unwrap();
    BinaryProxy::start(command, READY_WAIT)
}

fn socks_addr(proxy: &BinaryProxy) -> SocketAddr {
    proxy.ready["socks"]
        .as_str()
        .expect("a socks address")
        .parse()
        .unwrap()
}

fn basic(attempt: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("{attempt}:tok"))
}

/// Sends `head` and reads until leash closes or the head and a short body are in (bounded).
/// With `tunnel`, a `200` head is the whole answer (the tunnel stays open).
async fn exchange(proxy: SocketAddr, head: String, tunnel: bool) -> String {
    let talk = async {
        let mut stream = TcpStream::connect(proxy).await?;
        stream.write_all(head.as_bytes()).await?;
        let mut answer = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await?;
            answer.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&answer);
            let tunnel = text.starts_with("HTTP/1.1 200") && text.contains("\r\n\r\n") && tunnel;
            if n == 0 || text.ends_with('}') || tunnel {
                return Ok::<_, std::io::Error>(text.into_owned());
            }
        }
    };
    match tokio::time::timeout(EXCHANGE_WAIT, talk).await {
        Ok(Ok(text)) => text,
        Ok(Err(error)) => format!("io error: {error}"),
        Err(_) => "no answer in time".to_owned(),
    }
}

/// An absolute-form GET of `http://name:port/` for `attempt`.
async fn get(proxy: SocketAddr, attempt: &str, name: &str, port: u16) -> String {
    let head = format!(
        "GET http://{name}:{port}/ HTTP/1.1\r\nHost: {name}:{port}\r\nProxy-Authorization: Basic {}\r\nConnection: close\r\n\r\n",
        basic(attempt)
    );
    exchange(proxy, head, false).await
}

/// A `CONNECT name:port` for `attempt`.
async fn connect(proxy: SocketAddr, attempt: &str, name: &str, port: u16) -> String {
    let head = format!(
        "CONNECT {name}:{port} HTTP/1.1\r\nHost: {name}:{port}\r\nProxy-Authorization: Basic {}\r\n\r\n",
        basic(attempt)
    );
    exchange(proxy, head, true).await
}

/// A SOCKS5 `CONNECT name:port` as `attempt`; the reply code, or `None` without a reply in time.
async fn socks(proxy: SocketAddr, attempt: &str, name: &str, port: u16) -> Option<u8> {
    let talk = async {
        let mut stream = TcpStream::connect(proxy).await?;
        stream.write_all(&[5, 1, 2]).await?;
        let mut choice = [0u8; 2];
        stream.read_exact(&mut choice).await?;
        let mut auth = vec![1, attempt.len() as u8];
        auth.extend_from_slice(attempt.as_bytes());
        auth.extend_from_slice(&[3, b't', b'o', b'k']);
        stream.write_all(&auth).await?;
        let mut status = [0u8; 2];
        stream.read_exact(&mut status).await?;
        let mut request = vec![5, 1, 0, 3, name.len() as u8];
        request.extend_from_slice(name.as_bytes());
        request.extend_from_slice(&port.to_be_bytes());
        stream.write_all(&request).await?;
        let mut reply = [0u8; 2];
        stream.read_exact(&mut reply).await?;
        Ok::<_, std::io::Error>(reply[1])
    };
    tokio::time::timeout(EXCHANGE_WAIT, talk).await.ok()?.ok()
}

/// The threads leash runs now.
fn threads(pid: u32) -> usize {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .map(|n| n.trim().parse().unwrap())
        .unwrap()
}

/// What one request of the flood got back.
#[derive(Debug)]
enum Answer {
    Http(String),
    Socks(Option<u8>),
}

/// 300 absolute-form GETs, 200 `CONNECT`s and 100 SOCKS5 `CONNECT`s at once, all from attempt
/// `a1`, each for a different never-answering name: more than the 512 threads of tokio's
/// blocking pool that `getaddrinfo` ran on.
fn flood(http: SocketAddr, socks_at: SocketAddr) -> Vec<JoinHandle<Answer>> {
    let mut tasks = Vec::new();
    for i in 0..300 {
        let name = format!("h{i}.attack.test");
        tasks.push(tokio::spawn(async move {
            Answer::Http(get(http, "a1", &name, 80).await)
        }));
    }
    for i in 0..200 {
        let name = format!("c{i}.attack.test");
        tasks.push(tokio::spawn(async move {
            Answer::Http(connect(http, "a1", &name, 443).await)
        }));
    }
    for i in 0..100 {
        let name = format!("s{i}.attack.test");
        tasks.push(tokio::spawn(async move {
            Answer::Socks(socks(socks_at, "a1", &name, 443).await)
        }));
    }
    tasks
}

/// `CONNECT`s to `name` until one is not a `200` (bounded: no new try after twenty seconds); the
/// last answer.
async fn until_refused(http: SocketAddr, name: &str, port: u16) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let answer = connect(http, "a1", name, port).await;
        if !answer.starts_with("HTTP/1.1 200") || Instant::now() >= deadline {
            return answer;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

#[track_caller]
fn assert_ok(answer: &str, context: &str) {
    assert!(answer.starts_with("HTTP/1.1 200"), "{context}: {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_clients_never_answering_names_do_not_starve_the_others() {
    let test = "dns::one_clients_never_answering_names_do_not_starve_the_others";
    if skip_unless_root(test) {
        return;
    }
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let good = serde_json::json!({"*.good.test": {"a": "127.0.0.1", "ttl": 0}});
    let dns = FakeDns::start(netns, dir.path(), good);
    let origin = Origin::http().await;
    let port = origin.addr.port();
    let proxy = start_leash(
        &dns,
        dir.path(),
        &format!("127.0.0.1:{port}"),
        Pointed::SystemFile,
    );
    let http: SocketAddr = proxy.http().parse().unwrap();
    let socks_at = socks_addr(&proxy);
    assert_ok(
        &get(http, "a2", "g0.good.test", port).await,
        "before the attack",
    );

    let attack = flood(http, socks_at);
    dns.until("the attack's lookups", |d| {
        d.names(".attack.test").len() >= 32
    })
    .await;
    // During the attack, fresh names (TTL 0: nothing cached) for other clients, on every path.
    let during = threads(proxy.pid());
    eprintln!("leash ran {during} threads with the attack's lookups in flight");
    assert_ok(
        &get(http, "a2", "g1.good.test", port).await,
        "GET during the attack",
    );
    assert_ok(
        &connect(http, "a3", "g2.good.test", port).await,
        "CONNECT during the attack",
    );
    assert_eq!(
        socks(socks_at, "a4", "g3.good.test", port).await,
        Some(0),
        "SOCKS5 during"
    );
    let held = attack.iter().filter(|task| !task.is_finished()).count();
    assert!(
        held > 0,
        "the good names resolved while the attack's lookups were held"
    );
    assert!(
        during < 64,
        "a lookup is not a thread: leash ran {during} threads during the attack"
    );

    let mut refused = 0;
    for task in attack {
        match task.await.unwrap() {
            Answer::Http(text) => {
                assert!(text.starts_with("HTTP/1.1 502"), "fails closed: {text}");
                assert!(text.contains("\"reason\":\"dns_failed\""), "{text}");
                refused += usize::from(text.contains("dns.max_lookups_per_client"));
            }
            Answer::Socks(code) => assert_eq!(code, Some(4), "SOCKS5: host unreachable"),
        }
    }
    let queried = dns.names(".attack.test").len();
    assert!(
        queried <= 32,
        "one client's lookups reached the name server {queried} times at once"
    );
    assert!(
        refused >= 500 - 32,
        "the per-client bound refused {refused} of 500 HTTP lookups"
    );

    // Right after: every client resolves again, the attacker too (abandoned lookups hold nothing).
    assert_ok(
        &get(http, "a2", "g4.good.test", port).await,
        "GET right after the attack",
    );
    assert_ok(
        &get(http, "a1", "g5.good.test", port).await,
        "the attacker's own place is free",
    );
    let output = proxy.terminate();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("DNS lookups refused: the client's bound is reached"),
        "{stderr}"
    );
    assert!(
        stderr.contains("attempt \\\"a1\\\"") || stderr.contains("attempt \"a1\""),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bounds_refuse_per_client_and_in_total_and_free_at_the_timeout() {
    let test = "dns::bounds_refuse_per_client_and_in_total_and_free_at_the_timeout";
    if skip_unless_root(test) {
        return;
    }
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let good = serde_json::json!({"*.good.test": {"a": "127.0.0.1", "ttl": 0}});
    let dns = FakeDns::start(netns, dir.path(), good);
    let origin = Origin::http().await;
    let port = origin.addr.port();
    let lines = "max_lookups = 3\nmax_lookups_per_client = 2\n".to_owned();
    let proxy = start_leash(
        &dns,
        dir.path(),
        &format!("127.0.0.1:{port}"),
        Pointed::Config(lines),
    );
    let http: SocketAddr = proxy.http().parse().unwrap();
    let socks_at = socks_addr(&proxy);

    let mut held = vec![
        tokio::spawn(get(http, "a1", "n1.attack.test", 80)),
        tokio::spawn(connect(http, "a1", "n2.attack.test", 443)),
    ];
    dns.until("a1's two lookups", |d| d.names(".attack.test").len() == 2)
        .await;
    let refused = get(http, "a1", "g1.good.test", port).await;
    assert!(refused.starts_with("HTTP/1.1 502"), "{refused}");
    assert!(refused.contains("\"reason\":\"dns_failed\""), "{refused}");
    assert!(
        refused.contains("this client has 2 DNS lookups in flight (dns.max_lookups_per_client)"),
        "{refused}"
    );
    assert_eq!(
        socks(socks_at, "a1", "g2.good.test", port).await,
        Some(4),
        "SOCKS5 refused too"
    );
    assert_ok(
        &get(http, "a2", "g3.good.test", port).await,
        "another client",
    );

    held.push(tokio::spawn(get(http, "a2", "n3.attack.test", 80)));
    dns.until("a2's lookup", |d| d.names(".attack.test").len() == 3)
        .await;
    let full = connect(http, "a3", "g4.good.test", port).await;
    assert!(
        full.contains("3 DNS lookups are in flight (dns.max_lookups)"),
        "{full}"
    );

    for task in held {
        let text = task.await.unwrap();
        assert!(
            text.contains("DNS lookup timed out"),
            "abandoned at dns_timeout: {text}"
        );
    }
    assert_ok(
        &get(http, "a1", "g5.good.test", port).await,
        "a1 after its lookups were abandoned",
    );
    assert_ok(&connect(http, "a3", "g6.good.test", port).await, "a3 after");
    let output = proxy.terminate();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("the total bound is reached"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_are_cached_no_longer_than_their_ttl_vetted_on_every_use_and_hosts_reread() {
    let test =
        "dns::answers_are_cached_no_longer_than_their_ttl_vetted_on_every_use_and_hosts_reread";
    if skip_unless_root(test) {
        return;
    }
    let netns = NetNs::new();
    let dir = tempfile::tempdir().unwrap();
    let answers = serde_json::json!({
        "zero.good.test": {"a": "127.0.0.1", "ttl": 0},
        "long.good.test": {"a": "127.0.0.1", "ttl": 300},
        "rebind.good.test": {"a": "127.0.0.1", "ttl": 1},
    });
    let dns = FakeDns::start(netns, dir.path(), answers);
    let origin = Origin::http().await;
    let port = origin.addr.port();
    let hosts = dir.path().join("hosts");
    std::fs::write(&hosts, "127.0.0.1 file.good.test\n").unwrap();
    let lines = format!("hosts = {:?}\n", hosts.display().to_string());
    let proxy = start_leash(
        &dns,
        dir.path(),
        &format!("127.0.0.1:{port}"),
        Pointed::Config(lines),
    );
    let http: SocketAddr = proxy.http().parse().unwrap();

    // CONNECT dials every time (a forwarded GET may reuse a kept connection without a lookup).
    for _ in 0..2 {
        assert_ok(&connect(http, "a1", "zero.good.test", port).await, "TTL 0");
        assert_ok(
            &connect(http, "a1", "long.good.test", port).await,
            "TTL 300",
        );
    }
    assert_eq!(
        dns.a_queries_at_least("zero.good.test", 2).await,
        2,
        "a TTL of 0 is never served from cache"
    );
    assert_eq!(dns.a_queries("long.good.test"), 1, "a TTL of 300 s is");
    // A changed answer is not seen while the old one's TTL runs.
    dns.set_answers(serde_json::json!({"long.good.test": {"a": "127.0.0.2", "ttl": 300}}));
    assert_ok(
        &connect(http, "a1", "long.good.test", port).await,
        "cached, still 127.0.0.1",
    );
    assert_eq!(dns.a_queries("long.good.test"), 1);

    assert_ok(
        &connect(http, "a1", "file.good.test", port).await,
        "from the hosts file",
    );
    assert_eq!(
        dns.a_queries("file.good.test"),
        0,
        "the hosts file answers before DNS"
    );
    std::fs::write(&hosts, "127.0.0.2 file.good.test\n").unwrap();
    let answer = until_refused(http, "file.good.test", port).await;
    // The new address is vetted like any answer: outside `allow_local`, refused.
    assert!(
        answer.starts_with("HTTP/1.1 403"),
        "the changed file is read: {answer}"
    );
    assert!(answer.contains("\"reason\":\"local_address\""), "{answer}");
    assert!(answer.contains("127.0.0.2"), "{answer}");
    drop(proxy);
}

/// A cached answer is vetted again on every use, so a rebinding name gets nothing from the cache
/// (issue 18): `rebind.good.test` first answers the namespace's address (allowed, with its port,
/// by `allow_local`), then, once that answer's TTL has run out, `127.0.0.1`. Within the TTL the
/// cache serves the first answer (one query); the first use after it is refused as a local
/// address, naming loopback, and never dialled. The TTL is long enough (8 s) that a loaded CI
/// host cannot let it run out between the first use and the second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_answer_that_turns_into_loopback_is_refused_on_its_next_use() {
    let test = "dns::a_cached_answer_that_turns_into_loopback_is_refused_on_its_next_use";
    const TTL: u64 = 8;
    if skip_unless_root(test) {
        return;
    }
    let netns = NetNs::new();
    let (ns, port) = (netns.ns_addr(), 8443);
    // A TCP server inside the namespace that accepts and holds every connection.
    let holder = format!(
        "import socket\ns = socket.socket()\ns.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
         s.bind(('{ns}', {port}))\ns.listen(64)\nprint('ready', flush=True)\nheld = []\n\
         while True:\n    held.append(s.accept())\n"
    );
    let mut server = netns
        .std_command("python3")
        .args(["-c", &holder])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs");
    let mut ready = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready");
    let dir = tempfile::tempdir().unwrap();
    let answers = serde_json::json!({"rebind.good.test": {"a": ns.to_string(), "ttl": TTL}});
    let dns = FakeDns::start(netns, dir.path(), answers);
    let local = format!("{ns}:{port}");
    let proxy = start_leash(&dns, dir.path(), &local, Pointed::Config(String::new()));
    let http: SocketAddr = proxy.http().parse().unwrap();

    let started = Instant::now();
    assert_ok(
        &connect(http, "a1", "rebind.good.test", port).await,
        "first",
    );
    dns.set_answers(serde_json::json!({"rebind.good.test": {"a": "127.0.0.1", "ttl": 300}}));
    let cached = connect(http, "a1", "rebind.good.test", port).await;
    let (elapsed, log) = (started.elapsed(), dns.log());
    assert_ok(
        &cached,
        &format!("the cached answer, {elapsed:?} into its TTL; queries {log:?}"),
    );
    assert_eq!(
        dns.a_queries("rebind.good.test"),
        1,
        "served from cache; queries {log:?}"
    );
    let answer = until_refused(http, "rebind.good.test", port).await;
    let log = dns.log();
    assert!(
        answer.starts_with("HTTP/1.1 403"),
        "{answer}; queries {log:?}"
    );
    assert!(answer.contains("\"reason\":\"local_address\""), "{answer}");
    assert!(answer.contains("127.0.0.1"), "{answer}");
    assert_eq!(
        dns.a_queries_at_least("rebind.good.test", 2).await,
        2,
        "asked again once the TTL ran out; queries {:?}",
        dns.log()
    );
    let _ = server.kill();
    let _ = server.wait();
    drop(proxy);
}
