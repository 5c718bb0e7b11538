//! The decider socket (SPEC §14): the real `leash proxy`, curl held on an `ask`, and a small
//! decider written here (a unix socket speaking the newline-delimited JSON) that answers allow,
//! deny, garbage, or goes away.

use std::{
    path::PathBuf,
    process::{Command, Output, Stdio},
    time::Duration,
};

use serde_json::{json, Value};
use tests::{curl, leash_bin, stderr, BinaryProxy, CurlOutput, Origin};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{
        unix::{OwnedReadHalf, OwnedWriteHalf},
        UnixListener, UnixStream,
    },
};

/// How long any one step may take before the test fails (the hold itself is 2 s).
const STEP: Duration = Duration::from_secs(20);

/// A directory with an origin (`origin.test` in a hosts file), a config asking about it, held up
/// to 2 s, and the paths the proxy and the decider use.
struct Setup {
    dir: tempfile::TempDir,
    origin: Origin,
    config: PathBuf,
    log: PathBuf,
    socket: PathBuf,
}

impl Setup {
    /// With `decider_in_config`, the config names the decider (`ask.decider`).
    async fn new(decider_in_config: bool) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        let socket = dir.path().join("decider.sock");
        let ask = match decider_in_config {
            true => format!("decider = \"unix:{}\"\n", socket.display()),
            false => String::new(),
        };
        let origin = Origin::http().await;
        let hosts = dir.path().join("hosts");
        std::fs::write(&hosts, "127.0.0.1 origin.test\n").unwrap();
        let config = dir.path().join("leash.toml");
        let text = format!(
            "[policy]\nallow_local = [\"127.0.0.1:{}\"]\n[dns]\nhosts = {:?}\n[ask]\nhold = \"2s\"\n{ask}",
            origin.port(),
            hosts.display().to_string(),
        );
        std::fs::write(&config, text).unwrap();
        Setup {
            log: dir.path().join("log.jsonl"),
            socket,
            dir,
            origin,
            config,
        }
    }

    /// `leash proxy` with this config and `extra` arguments.
    fn command(&self, extra: &[&str]) -> Command {
        let mut command = Command::new(leash_bin());
        command
            .current_dir(self.dir.path())
            .env("XDG_RUNTIME_DIR", self.dir.path())
            .args(["proxy", "--ephemeral", "--no-socks"])
            .args(["--config", self.config.to_str().unwrap()])
            .args(["--log", self.log.to_str().unwrap()])
            .args(extra);
        command
    }

    fn start(&self, extra: &[&str]) -> BinaryProxy {
        BinaryProxy::start(self.command(extra), STEP)
    }

    fn decider_flag(&self) -> String {
        format!("unix:{}", self.socket.display())
    }

    fn url(&self) -> String {
        format!("http://origin.test:{}/", self.origin.port())
    }

    fn log_lines(&self) -> Vec<Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    /// The answer line naming the ask logged as `event`.
    fn answer_line(&self, event: &Value) -> Value {
        self.log_lines()
            .into_iter()
            .find(|l| l["kind"] == "answer" && &l["event"] == event)
            .unwrap_or_else(|| panic!("no answer line for event {event}: {:?}", self.log_lines()))
    }
}

/// curl through `proxy` to the origin, in the background (held until answered).
fn spawn_curl(proxy: &BinaryProxy, url: &str) -> tokio::task::JoinHandle<CurlOutput> {
    let proxy = format!("http://a1:x@{}", proxy.http());
    let url = url.to_owned();
    tokio::spawn(async move { curl(&["-i", "-x", &proxy, &url]).await })
}

/// The decider's end of one connection.
struct Decider {
    lines: tokio::io::Lines<BufReader<OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Decider {
    async fn accept(listener: &UnixListener) -> Decider {
        let (stream, _) = tokio::time::timeout(STEP, listener.accept())
            .await
            .expect("leash connects to the decider")
            .unwrap();
        Decider::on(stream)
    }

    fn on(stream: UnixStream) -> Decider {
        let (reader, writer) = stream.into_split();
        Decider {
            lines: BufReader::new(reader).lines(),
            writer,
        }
    }

    /// The next line leash sent, as JSON.
    async fn next(&mut self) -> Value {
        let line = tokio::time::timeout(STEP, self.lines.next_line())
            .await
            .expect("a line from leash in time")
            .unwrap()
            .expect("leash keeps the connection open");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    async fn hello(&mut self) {
        let hello = self.next().await;
        assert_eq!(hello, json!({ "v": 1, "type": "hello" }));
    }

    /// The next line, which must be an ask about the origin from attempt a1.
    async fn ask(&mut self, setup: &Setup) -> Value {
        let ask = self.next().await;
        assert_eq!(ask["type"], "ask", "{ask}");
        assert_eq!(ask["v"], 1, "{ask}");
        assert_eq!(
            (
                &ask["host"],
                &ask["port"],
                &ask["protocol"],
                &ask["method"],
                &ask["attempt"]
            ),
            (
                &json!("origin.test"),
                &json!(setup.origin.port()),
                &json!("http"),
                &json!("GET"),
                &json!("a1")
            ),
            "{ask}"
        );
        assert!(ask["id"].is_u64() && ask["event"].is_u64(), "{ask}");
        ask
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    async fn answer(&mut self, id: &Value, answer: &str, scope: Option<&str>) {
        let mut reply = json!({ "id": id, "answer": answer });
        if let Some(scope) = scope {
            reply["scope"] = json!(scope);
        }
        self.send(format!("{reply}\n").as_bytes()).await;
    }
}

fn assert_reached(out: &CurlOutput) {
    let text = out.text();
    assert_eq!(out.code, Some(0), "{text} {}", out.stderr);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.ends_with("hello from origin"), "{text}");
}

/// The ask 403 after `ask.hold`, nobody having answered.
fn assert_timed_out(out: &CurlOutput) {
    let text = out.text();
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains(r#""decision":"ask""#), "{text}");
    assert!(text.contains(r#""held_ms":"#), "{text}");
}

fn warnings(output: &Output, needle: &str) -> usize {
    stderr(output)
        .lines()
        .filter(|l| l.contains(needle))
        .count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decider_answers_allow_and_deny_as_by_decider() {
    let setup = Setup::new(false).await;
    let listener = UnixListener::bind(&setup.socket).unwrap();
    let proxy = setup.start(&["--decider", &setup.decider_flag()]);
    let mut decider = Decider::accept(&listener).await;
    decider.hello().await;

    let held = spawn_curl(&proxy, &setup.url());
    let ask = decider.ask(&setup).await;
    decider.answer(&ask["id"], "allow", None).await;
    assert_reached(&held.await.unwrap());
    let line = setup.answer_line(&ask["event"]);
    assert_eq!(
        (&line["answer"], &line["scope"], &line["by"]),
        (&json!("allow"), &json!("once"), &json!("decider")),
        "{line}"
    );

    // `once` allowed those requests only: the next one is asked about again, and denied.
    let held = spawn_curl(&proxy, &setup.url());
    let ask = decider.ask(&setup).await;
    decider.answer(&ask["id"], "deny", Some("once")).await;
    let text = held.await.unwrap().text();
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(text.contains(r#""reason":"declined""#), "{text}");
    let line = setup.answer_line(&ask["event"]);
    assert_eq!(
        (&line["answer"], &line["by"]),
        (&json!("deny"), &json!("decider")),
        "{line}"
    );

    // `session` reaches later requests: the one after it is never asked about.
    let held = spawn_curl(&proxy, &setup.url());
    let ask = decider.ask(&setup).await;
    decider.answer(&ask["id"], "allow", Some("session")).await;
    assert_reached(&held.await.unwrap());
    assert_reached(&spawn_curl(&proxy, &setup.url()).await.unwrap());
    // No `withdrawn` for the items it answered itself.
    let output = proxy.terminate();
    assert_eq!(
        warnings(&output, "decider socket sent"),
        0,
        "{}",
        stderr(&output)
    );
    let rest = tokio::time::timeout(STEP, decider.lines.next_line())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        rest, None,
        "nothing more was sent before leash closed the connection"
    );
}

/// Garbage answers nothing: the held request ends as the ask 403 after `ask.hold`, the decider is
/// warned about once, and the same connection's next good answer works. The decider is named by
/// the config file here (`ask.decider`) rather than the flag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answers_nothing_is_warned_once_and_the_proxy_keeps_serving() {
    let setup = Setup::new(true).await;
    let listener = UnixListener::bind(&setup.socket).unwrap();
    let proxy = setup.start(&[]);
    let mut decider = Decider::accept(&listener).await;
    decider.hello().await;

    let held = spawn_curl(&proxy, &setup.url());
    let ask = decider.ask(&setup).await;
    let id = ask["id"].as_u64().unwrap();
    let mut oversize = vec![b'{'; 100 * 1024];
    oversize.push(b'\n');
    decider.send(b"not json at all\n").await;
    decider.send(&oversize).await;
    decider
        .send(format!("{{\"id\":{},\"answer\":\"allow\"}}\n", id + 1000).as_bytes())
        .await;
    decider
        .send(format!("{{\"id\":{id},\"answer\":\"maybe\"}}\n").as_bytes())
        .await;
    decider
        .send(format!("{{\"id\":{id},\"answer\":\"allow\",\"scope\":\"forever\"}}\n").as_bytes())
        .await;
    decider.send(b"{\"answer\":\"allow\"}\n\n").await;
    // An `attempt` answer without bound attempts cannot apply: it answers nothing either.
    decider
        .send(format!("{{\"id\":{id},\"answer\":\"allow\",\"scope\":\"attempt\"}}\n").as_bytes())
        .await;
    let out = held.await.unwrap();
    assert_timed_out(&out);
    let line = setup.answer_line(&ask["event"]);
    assert_eq!(
        (&line["answer"], &line["by"]),
        (&json!("ask"), &json!("timeout")),
        "{line}"
    );
    // The item ended without the decider's answer: it is told so.
    assert_eq!(
        decider.next().await,
        json!({ "v": 1, "type": "withdrawn", "id": id })
    );
    // An answer for it now comes too late and does nothing bad.
    decider.answer(&ask["id"], "allow", None).await;

    // The same connection still answers.
    let held = spawn_curl(&proxy, &setup.url());
    let ask = decider.ask(&setup).await;
    decider.answer(&ask["id"], "allow", None).await;
    assert_reached(&held.await.unwrap());
    let output = proxy.terminate();
    assert_eq!(
        warnings(&output, "decider socket sent"),
        1,
        "{}",
        stderr(&output)
    );
    assert_eq!(
        warnings(&output, "not an answer"),
        1,
        "the first bad line is named: {}",
        stderr(&output)
    );
}

/// A decider that goes away mid-hold answers nothing: the request ends as the ask 403 after
/// `ask.hold`. leash connects again, and a new decider on the same path answers the next ask.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decider_that_disconnects_answers_nothing_and_a_new_one_is_reconnected() {
    let setup = Setup::new(false).await;
    let listener = UnixListener::bind(&setup.socket).unwrap();
    let proxy = setup.start(&["--decider", &setup.decider_flag()]);
    let mut decider = Decider::accept(&listener).await;
    decider.hello().await;
    let held = spawn_curl(&proxy, &setup.url());
    let ask = decider.ask(&setup).await;
    drop(decider);
    drop(listener);
    std::fs::remove_file(&setup.socket).unwrap();
    assert_timed_out(&held.await.unwrap());
    let line = setup.answer_line(&ask["event"]);
    assert_eq!(line["by"], "timeout", "{line}");

    let listener = UnixListener::bind(&setup.socket).unwrap();
    let mut decider = Decider::accept(&listener).await;
    decider.hello().await;
    let held = spawn_curl(&proxy, &setup.url());
    let ask = decider.ask(&setup).await;
    decider.answer(&ask["id"], "allow", None).await;
    assert_reached(&held.await.unwrap());
    assert_eq!(setup.answer_line(&ask["event"])["by"], "decider");
    let output = proxy.terminate();
    assert_eq!(
        warnings(&output, "closed by the decider"),
        1,
        "{}",
        stderr(&output)
    );
}

/// A decider that never reads does not slow anything down: while leash's lines to it pile up,
/// every held request still ends (answered by nobody, after `ask.hold`), and leash drops the
/// connection once nothing could be written for a while, then connects again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decider_that_does_not_read_is_dropped_and_nothing_waits_for_it() {
    let setup = Setup::new(false).await;
    let listener = UnixListener::bind(&setup.socket).unwrap();
    let proxy = setup.start(&["--decider", &setup.decider_flag()]);
    let (mut deaf, _) = tokio::time::timeout(STEP, listener.accept())
        .await
        .unwrap()
        .unwrap();
    // Distinct long hosts and attempt ids make as many items, and more ask lines than a unix
    // socket buffers (about 120 KiB of them here), so leash's writes stop while nobody reads.
    let addr: std::net::SocketAddr = proxy.http().parse().unwrap();
    let requests: Vec<_> = (0..600)
        .map(|i| tokio::spawn(held_request(addr, i)))
        .collect();
    let mut held = 0;
    for request in requests {
        let response = request.await.unwrap();
        assert!(response.starts_with("HTTP/1.1 403"), "{response}");
        // Held, then refused; or, on a machine so loaded that the request came after leash
        // dropped the deaf decider and its grace ran out, refused at once: never left waiting.
        held += usize::from(response.contains(r#""held_ms":"#));
    }
    assert!(held > 0, "no request was held for the decider");
    // leash gives up on it and connects again (reading now would let its writes go on).
    let (again, _) = tokio::time::timeout(Duration::from_secs(60), listener.accept())
        .await
        .expect("leash drops the deaf decider and connects again")
        .unwrap();
    let mut written = Vec::new();
    let read = tokio::time::timeout(STEP, deaf.read_to_end(&mut written));
    read.await.expect("the dropped connection ends").unwrap();
    assert!(written.starts_with(b"{\"v\":1,\"type\":\"hello\"}\n"));
    // What the socket buffered, then nothing: far from the 600 asks and 600 withdrawals.
    let asks = String::from_utf8_lossy(&written)
        .matches(r#""type":"ask""#)
        .count();
    assert!(
        (1..600).contains(&asks),
        "{asks} asks in {} bytes",
        written.len()
    );
    // The new connection is served as usual.
    let mut decider = Decider::on(again);
    decider.hello().await;
    let held = spawn_curl(&proxy, &setup.url());
    let ask = decider.ask(&setup).await;
    decider.answer(&ask["id"], "allow", None).await;
    assert_reached(&held.await.unwrap());
    let output = proxy.terminate();
    assert_eq!(warnings(&output, "did not read"), 1, "{}", stderr(&output));
}

/// One request for host `i` from attempt `i`, each name as long as the rules allow.
async fn held_request(addr: std::net::SocketAddr, i: usize) -> String {
    use base64::Engine;
    let host = format!("h{i}-{}.{}.test", "a".repeat(55), "b".repeat(60));
    let attempt = format!("{i}-{}", "c".repeat(120));
    let credentials = base64::engine::general_purpose::STANDARD.encode(format!("{attempt}:x"));
    let request = format!(
        "GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Basic {credentials}\r\nConnection: close\r\n\r\n"
    );
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(STEP * 2, stream.read_to_end(&mut response))
        .await
        .expect("every held request ends")
        .unwrap();
    String::from_utf8_lossy(&response).into_owned()
}

/// A decider socket nobody listens on is no approver: asks are refused at once, as with nobody
/// to ask, and the proxy serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_nobody_listening_asks_are_refused_at_once() {
    let setup = Setup::new(false).await;
    let proxy = setup.start(&["--decider", &setup.decider_flag()]);
    for _ in 0..2 {
        let text = spawn_curl(&proxy, &setup.url()).await.unwrap().text();
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        assert!(text.contains(r#""reason":"allowlist_miss""#), "{text}");
        assert!(!text.contains("held_ms"), "never held: {text}");
    }
    assert!(setup.log_lines().iter().all(|l| l["kind"] != "answer"));
    // A socket file with nobody behind it (a decider that died) is the same.
    drop(UnixListener::bind(&setup.socket).unwrap());
    let text = spawn_curl(&proxy, &setup.url()).await.unwrap().text();
    assert!(
        !text.contains("held_ms") && text.starts_with("HTTP/1.1 403"),
        "{text}"
    );
    let output = proxy.terminate();
    assert_eq!(
        warnings(&output, "cannot connect"),
        1,
        "warned once: {}",
        stderr(&output)
    );
}

/// `--decider fd:3`: a connected socket leash inherits answers like `unix:`; when the decider
/// closes it, it is gone for good (logged) and the proxy serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inherited_descriptor_is_a_decider_until_it_closes() {
    let setup = Setup::new(false).await;
    let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
    // The shell moves the socket from stdin to descriptor 3, then becomes leash.
    let mut command = Command::new("bash");
    command
        .args(["-c", r#"exec "$0" "$@" 3<&0 0</dev/null"#])
        .arg(leash_bin())
        .args(setup.command(&["--decider", "fd:3"]).get_args())
        .current_dir(setup.dir.path())
        .env("XDG_RUNTIME_DIR", setup.dir.path())
        .stdin(Stdio::from(std::os::fd::OwnedFd::from(theirs)));
    let proxy = BinaryProxy::start(command, STEP);
    ours.set_nonblocking(true).unwrap();
    let mut decider = Decider::on(UnixStream::from_std(ours).unwrap());
    decider.hello().await;
    let held = spawn_curl(&proxy, &setup.url());
    let ask = decider.ask(&setup).await;
    decider.answer(&ask["id"], "allow", None).await;
    assert_reached(&held.await.unwrap());
    assert_eq!(setup.answer_line(&ask["event"])["by"], "decider");
    drop(decider);
    // No decider any more: asks end as `ask` (at once, or after the hold while the decider's
    // presence lingers), and allowed traffic is unaffected.
    let text = spawn_curl(&proxy, &setup.url()).await.unwrap().text();
    assert!(
        text.starts_with("HTTP/1.1 403") && text.contains(r#""decision":"ask""#),
        "{text}"
    );
    let output = proxy.terminate();
    assert_eq!(
        warnings(&output, "no decider from now on"),
        1,
        "{}",
        stderr(&output)
    );
}

/// A decider address that cannot work stops the start with a clear error: a descriptor that is
/// not a socket, or one that is not open, and an address of neither form.
#[test]
fn a_bad_decider_address_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let run = |decider: &str| {
        // `timeout`: a leash that started anyway is stopped, and fails the checks below.
        let out = Command::new("timeout")
            .arg("20")
            .arg(leash_bin())
            .current_dir(dir.path())
            .env("XDG_RUNTIME_DIR", dir.path())
            .env_remove("LEASH_CONFIG")
            .args(["proxy", "--ephemeral", "--decider", decider])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (out.status.code(), stderr(&out))
    };
    let (code, err) = run("fd:0");
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("ask.decider fd:0: not a unix stream socket"),
        "{err}"
    );
    let (code, err) = run("fd:4000");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("ask.decider fd:4000"), "{err}");
    let (code, err) = run("/tmp/d.sock");
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("expected `unix:PATH` or `fd:N`"), "{err}");
}

/// A decider socket bound by another user (anyone can bind a path in a shared directory while the
/// real decider is down) is refused: leash does not converse with it, asks are refused at once as
/// with no decider, and the refusal is warned about. Needs root (to run the impostor as nobody).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decider_socket_of_another_user_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    if tests::skip_unless_root("decider::a_decider_socket_of_another_user_is_refused") {
        return;
    }
    let setup = Setup::new(false).await;
    let shared = setup.dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    for (dir, mode) in [(setup.dir.path(), 0o755), (shared.as_path(), 0o777)] {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let socket = shared.join("decider.sock");
    let impostor = "import socket, os, sys, time\n\
        s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); os.chmod(sys.argv[1], 0o777)\n\
        s.listen(8); print('ready', flush=True); s.settimeout(30)\n\
        conns = []\n\
        while True:\n    c, _ = s.accept(); conns.append(c)\n";
    // A Python nobody can run (a per-user install under /root is out of its reach).
    let Some(python) = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        eprintln!(
            "SKIPPED decider::a_decider_socket_of_another_user_is_refused: no system python3"
        );
        return;
    };
    let mut nobody = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            python,
            "-c",
        ])
        .arg(impostor)
        .arg(&socket)
        .stdout(Stdio::piped())
        .spawn()
        .expect("setpriv runs python3 as nobody");
    let mut ready = String::new();
    let stdout = nobody.stdout.take().unwrap();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready).unwrap();
    assert_eq!(ready.trim(), "ready");
    let flag = format!("unix:{}", socket.display());
    let proxy = setup.start(&["--decider", &flag]);
    for _ in 0..2 {
        let text = spawn_curl(&proxy, &setup.url()).await.unwrap().text();
        assert!(text.starts_with("HTTP/1.1 403"), "{text}");
        assert!(
            !text.contains("held_ms"),
            "never held for the impostor: {text}"
        );
    }
    let output = proxy.terminate();
    let _ = nobody.kill();
    let _ = nobody.wait();
    assert_eq!(
        warnings(&output, "runs as another user"),
        1,
        "{}",
        stderr(&output)
    );
}
