//! The control plane is closed to the programs leash polices (SPEC §19): the admin API wants a
//! token by default, refuses what a web page can send (checked with raw requests and with a real
//! headless Chromium), and `leash exec` gives its command no way to it and no say in the config.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::Arc,
    time::Duration,
};

use listeners::StaticResolver;
use serde_json::{json, Value};
use tests::{
    chromium_binary, leash_bin, policy_config, raw_request, start_proxy, stderr, stdout,
    BinaryProxy, Origin,
};

/// `(status, response text)` of one raw request.
async fn status_of(addr: std::net::SocketAddr, request: &str) -> (u16, String) {
    let response = raw_request(addr, request.as_bytes()).await;
    let status = response
        .get(9..12)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, response)
}

fn get(host: &str, path: &str, token: Option<&str>) -> String {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{auth}Connection: close\r\n\r\n")
}

fn post(host: &str, path: &str, headers: &str, body: &str) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nHost: {host}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

fn body_json(response: &str) -> Value {
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or(Value::Null)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_wants_a_generated_token_that_only_a_private_file_holds() {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(leash_bin());
    command
        .current_dir(dir.path())
        .env("XDG_RUNTIME_DIR", dir.path())
        .args(["proxy", "--ephemeral", "--log"])
        .arg(dir.path().join("log.jsonl"));
    let proxy = BinaryProxy::start(command, Duration::from_secs(30));
    let file = PathBuf::from(
        proxy.ready["admin_token_file"]
            .as_str()
            .expect("the ready record names the token file"),
    );
    assert!(
        file.starts_with(dir.path().join("leash")),
        "{}",
        file.display()
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&file), 0o600);
    assert_eq!(mode(file.parent().unwrap()), 0o700);
    let token = leash::read_token_file(&file).unwrap();
    assert!(token.len() >= 32, "{token}");
    assert!(!proxy.ready.to_string().contains(&token));

    let admin: std::net::SocketAddr = proxy.ready["admin"].as_str().unwrap().parse().unwrap();
    let host = admin.to_string();
    assert_eq!(status_of(admin, &get(&host, "/health", None)).await.0, 401);
    let wrong = get(&host, "/health", Some("0123"));
    assert_eq!(status_of(admin, &wrong).await.0, 401);
    let change = post(
        &host,
        "/rules",
        "Content-Type: application/json\r\n",
        r#"{"allow":["*"]}"#,
    );
    assert_eq!(status_of(admin, &change).await.0, 401);
    let (status, patterns) = status_of(admin, &get(&host, "/patterns", Some(&token))).await;
    assert_eq!(status, 200, "{patterns}");
    assert_eq!(body_json(&patterns)["allow"], json!([]), "{patterns}");

    let output = proxy.terminate();
    assert!(!file.exists(), "the token file is removed at exit");
    assert!(!stdout(&output).contains(&token) && !stderr(&output).contains(&token));
}

/// What a web page can make a browser send to a loopback port, and DNS rebinding's `Host`, each
/// with the status that refuses it. The admin token is off here: these checks alone must hold.
fn browser_shapes(host: &str) -> Vec<(&'static str, String, u16)> {
    let rules = r#"{"allow":["*"]}"#;
    let json = "Content-Type: application/json\r\n";
    vec![
        (
            "text/plain POST (no preflight)",
            post(host, "/rules", "Content-Type: text/plain\r\n", rules),
            415,
        ),
        (
            "text/plain with charset",
            post(
                host,
                "/rules",
                "Content-Type: text/plain;charset=UTF-8\r\n",
                rules,
            ),
            415,
        ),
        (
            "form urlencoded",
            post(
                host,
                "/mode",
                "Content-Type: application/x-www-form-urlencoded\r\n",
                "mode=full",
            ),
            415,
        ),
        (
            "form text/plain carrying JSON",
            post(
                host,
                "/rules",
                "Content-Type: text/plain\r\n",
                "{\"allow\":[\"*\"],\"x\":\"=\"}",
            ),
            415,
        ),
        (
            "multipart",
            post(
                host,
                "/rules",
                "Content-Type: multipart/form-data; boundary=b\r\n",
                "--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\n{}\r\n--b--\r\n",
            ),
            415,
        ),
        (
            "no content type",
            post(host, "/rules", "", rules),
            415,
        ),
        (
            "reload as text",
            post(host, "/reload", "Content-Type: text/plain\r\n", ""),
            415,
        ),
        (
            "DELETE without JSON",
            format!("DELETE /rules HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"),
            415,
        ),
        (
            "null origin",
            post(host, "/rules", &format!("{json}Origin: null\r\n"), rules),
            403,
        ),
        (
            "foreign origin",
            post(host, "/rules", &format!("{json}Origin: http://evil.example\r\n"), rules),
            403,
        ),
        (
            "same host, other port origin",
            post(host, "/rules", &format!("{json}Origin: http://127.0.0.1:1\r\n"), rules),
            403,
        ),
        (
            "cross-site fetch metadata",
            post(host, "/mode", &format!("{json}Sec-Fetch-Site: cross-site\r\n"), r#"{"mode":"full"}"#),
            403,
        ),
        (
            "rebinding host",
            post("evil.example", "/rules", json, rules),
            421,
        ),
        (
            "rebinding host with our port",
            post(&format!("evil.example:{}", host.rsplit(':').next().unwrap()), "/rules", json, rules),
            421,
        ),
        (
            "trailing dot",
            post(&format!("localhost.:{}", host.rsplit(':').next().unwrap()), "/rules", json, rules),
            421,
        ),
        (
            "decimal loopback",
            post(&format!("2130706433:{}", host.rsplit(':').next().unwrap()), "/rules", json, rules),
            421,
        ),
        (
            "wrong port",
            post("127.0.0.1:1", "/rules", json, rules),
            421,
        ),
        (
            "rebinding read",
            get("attacker.example", "/patterns", None),
            421,
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn what_a_web_page_can_send_changes_nothing() {
    let mut config = policy_config(&["keep.test"], &[], &[]);
    config.admin.token = "none".into();
    config.mode = policy::Mode::Limited;
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let admin = proxy.admin.unwrap();
    let host = admin.to_string();
    for (shape, request, expected) in browser_shapes(&host) {
        let (status, response) = status_of(admin, &request).await;
        assert_eq!(status, expected, "{shape}: {response}");
        assert!(
            !response.to_ascii_lowercase().contains("access-control-"),
            "{shape}: no CORS headers: {response}"
        );
    }
    let preflight = format!(
        "OPTIONS /rules HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\nAccess-Control-Request-Method: POST\r\nConnection: close\r\n\r\n"
    );
    let (status, response) = status_of(admin, &preflight).await;
    assert_eq!(status, 405, "{response}");
    assert!(!response.to_ascii_lowercase().contains("access-control-"));

    let (_, patterns) = status_of(admin, &get(&host, "/patterns", None)).await;
    assert_eq!(body_json(&patterns)["allow"], json!(["keep.test"]));
    let (_, mode) = status_of(admin, &get(&host, "/mode", None)).await;
    assert_eq!(body_json(&mode)["mode"], "limited");

    // The control: the same change, as leash's own clients send it, goes through.
    for host in [host.clone(), format!("localhost:{}", admin.port())] {
        let ok = post(
            &host,
            "/rules",
            "Content-Type: application/json\r\n",
            r#"{"allow":["added.test"]}"#,
        );
        let (status, response) = status_of(admin, &ok).await;
        assert_eq!(status, 200, "{host}: {response}");
    }
}

/// Debian's Chromium, headless, as root: `--no-sandbox`, and no background networking (this
/// machine has no network besides loopback).
fn chromium(profile: &Path, url: &str) -> Output {
    Command::new(chromium_binary())
        .args([
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            "--dump-dom",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(url)
        .output()
        .expect("chromium runs")
}

/// Every way a page tries the admin API without a preflight that leash could refuse, then a
/// beacon to its own origin that proves the script ran to the end.
fn attack_page(admin: u16) -> String {
    let base = format!("http://127.0.0.1:{admin}");
    format!(
        r#"<!doctype html><html><body>
<iframe name="sink1"></iframe><iframe name="sink2"></iframe>
<form id="f1" target="sink1" method="POST" action="{base}/rules" enctype="text/plain"><input name='{{"allow":["form.evil.test"],"x":"' value='"}}'></form>
<form id="f2" target="sink2" method="POST" action="{base}/mode"><input name="mode" value="full"></form>
<script>
const tries = [
  fetch("{base}/rules", {{mode: "no-cors", method: "POST", body: '{{"allow":["fetch.evil.test"]}}'}}),
  fetch("{base}/mode", {{mode: "no-cors", method: "POST", body: '{{"mode":"full"}}'}}),
  fetch("{base}/rules", {{mode: "no-cors", method: "POST", headers: {{"Content-Type": "text/plain"}}, body: '{{"allow":["plain.evil.test"]}}'}}),
  fetch("{base}/rules", {{method: "POST", headers: {{"Content-Type": "application/json"}}, body: '{{"allow":["cors.evil.test"]}}'}}),
  fetch("http://localhost:{admin}/rules", {{mode: "no-cors", method: "POST", body: '{{"allow":["localhost.evil.test"]}}'}}),
];
navigator.sendBeacon("{base}/rules", new Blob(['{{"allow":["beacon.evil.test"]}}'], {{type: "text/plain"}}));
document.getElementById("f1").submit();
document.getElementById("f2").submit();
Promise.allSettled(tries).then(() => setTimeout(() => {{
  fetch("/done").finally(() => {{ document.body.setAttribute("data-done", "yes"); }});
}}, 500));
</script></body></html>"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_in_a_real_browser_cannot_change_the_policy() {
    let mut config = policy_config(&["keep.test"], &[], &[]);
    config.admin.token = "none".into();
    config.mode = policy::Mode::Limited;
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let admin = proxy.admin.unwrap();
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("attack.html"), attack_page(admin.port())).unwrap();
    let origin = Origin::files(site.path().to_owned()).await;
    let profile = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}/attack.html", origin.port());
    let output = tokio::task::spawn_blocking({
        let profile = profile.path().to_owned();
        move || chromium(&profile, &url)
    })
    .await
    .unwrap();
    let dom = stdout(&output);
    assert!(
        origin.seen.requests().iter().any(|r| r.uri == "/done"),
        "the page's script ran to the end: {dom}\n{}",
        stderr(&output)
    );
    let host = admin.to_string();
    let (_, patterns) = status_of(admin, &get(&host, "/patterns", None)).await;
    assert_eq!(
        body_json(&patterns)["allow"],
        json!(["keep.test"]),
        "{patterns}"
    );
    let (_, mode) = status_of(admin, &get(&host, "/mode", None)).await;
    assert_eq!(body_json(&mode)["mode"], "limited");
}

/// Run by `leash exec` as the command: finds every TCP port leash (its parent) listens on, tries
/// the admin API's changes on each without a token, and searches its environment and the files
/// it can read for `TOKEN`. Prints one JSON object.
const PROBE: &str = r#"
import json, os, socket, sys
secret = sys.stdin.readline().strip()
parent = os.getppid()
found = []
def search(path):
    try:
        with open(path, "rb") as f:
            if secret.encode() in f.read(1 << 20):
                found.append(path)
    except OSError:
        pass
for key, value in os.environ.items():
    if secret in value:
        found.append("env:" + key)
roots = [os.getcwd(), os.environ.get("HOME", ""), os.environ.get("XDG_RUNTIME_DIR", ""),
         os.environ.get("TMPDIR", "/tmp")]
for root in filter(None, roots):
    for dirpath, _, files in os.walk(root):
        if dirpath.count(os.sep) - root.count(os.sep) > 4:
            continue
        for name in files[:200]:
            search(os.path.join(dirpath, name))
for name in ("environ", "cmdline"):
    search(f"/proc/{parent}/{name}")
inodes = set()
try:
    for fd in os.listdir(f"/proc/{parent}/fd"):
        link = os.readlink(f"/proc/{parent}/fd/{fd}")
        if link.startswith("socket:["):
            inodes.add(link[8:-1])
    fds_readable = True
except OSError:
    fds_readable = False
ports = set()
for table in ("/proc/net/tcp", "/proc/net/tcp6"):
    try:
        lines = open(table).read().splitlines()[1:]
    except OSError:
        continue
    for line in lines:
        f = line.split()
        if f[3] == "0A" and f[9] in inodes:
            ports.add(int(f[1].rsplit(":", 1)[1], 16))
answers = {}
for port in sorted(ports):
    got = []
    for method, path, body in (("GET", "/health", ""), ("POST", "/rules", '{"allow":["*"]}'),
                               ("POST", "/mode", '{"mode":"full"}')):
        try:
            s = socket.create_connection(("127.0.0.1", port), timeout=3)
            s.sendall((f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                       f"Connection: close\r\n\r\n{body}").encode())
            got.append(s.recv(64).decode(errors="replace").split("\r\n")[0])
            s.close()
        except OSError as e:
            got.append("error: " + type(e).__name__)
    answers[str(port)] = got
print(json.dumps({"fds_readable": fds_readable, "answers": answers, "found": found}))
"#;

/// `leash exec FLAGS -- python3 PROBE` in `dir` (also HOME and the config home), with
/// `LEASH_ADMIN_TOKEN=SECRET`; the probe learns what to look for on its stdin. Returns the
/// probe's report and leash's output.
fn probe_exec(dir: &Path, flags: &[&str], secret: &str) -> (Value, Output) {
    use std::io::Write;
    let mut child = Command::new(leash_bin())
        .current_dir(dir)
        .env_remove("LEASH_CONFIG")
        .env("HOME", dir)
        .env("XDG_CONFIG_HOME", dir.join("config"))
        .env("XDG_RUNTIME_DIR", dir)
        .env("TMPDIR", dir)
        .env("LEASH_ADMIN_TOKEN", secret)
        .arg("exec")
        .args(flags)
        .args(["--", "python3", "-c", PROBE])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("leash exec runs");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(format!("{secret}\n").as_bytes()).unwrap();
    drop(stdin);
    let output = child.wait_with_output().unwrap();
    let report = serde_json::from_str(stdout(&output).trim()).unwrap_or_else(|e| {
        panic!(
            "the probe reports ({e}): {}\n{}",
            stdout(&output),
            stderr(&output)
        )
    });
    (report, output)
}

/// Whether the tests run as root (as CI does): the owner of this process's `/proc` entry.
fn is_root() -> bool {
    std::fs::metadata("/proc/self")
        .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
        .unwrap_or(false)
}

#[test]
fn the_command_under_exec_has_no_way_to_the_admin_api_and_no_token() {
    let dir = tempfile::tempdir().unwrap();
    // A config the command could have written where it runs: exec must not read it.
    std::fs::write(
        dir.path().join("leash.toml"),
        "[policy]\nallow = [\"*\"]\nallow_local = true\n[admin]\ntoken = \"none\"\n",
    )
    .unwrap();
    let secret = format!("adm-{}", leash::random_hex(16).unwrap());
    for (flags, admin_runs) in [
        (&[][..], false),
        (&["--admin"][..], true),
        (&["--admin", "--isolate"][..], true),
    ] {
        let (report, output) = probe_exec(dir.path(), flags, &secret);
        let context = format!("{flags:?}: {report}\n{}", stderr(&output));
        assert!(
            stderr(&output).contains("leash: no config file; embedded defaults"),
            "{context}"
        );
        if !is_root() {
            eprintln!(
                "SKIPPED part of {flags:?}: listing leash's sockets needs root (CI runs as root)"
            );
        } else if !flags.contains(&"--isolate") {
            // As root the probe can read leash's descriptors: it finds every listener.
            assert_eq!(report["fds_readable"], true, "{context}");
            let answers = report["answers"].as_object().unwrap();
            assert_eq!(answers.len(), if admin_runs { 3 } else { 2 }, "{context}");
            for (port, got) in answers {
                for answer in got.as_array().unwrap() {
                    let line = answer.as_str().unwrap();
                    assert!(
                        !line.starts_with("HTTP/1.1 2"),
                        "port {port} took a change: {context}"
                    );
                }
            }
            if admin_runs {
                assert!(
                    answers
                        .values()
                        .any(|got| got[1] == "HTTP/1.1 401 Unauthorized"),
                    "the admin API wants its token: {context}"
                );
            }
        }
        let found = report["found"].as_array().unwrap();
        let readable_as_root = |place: &str| place.starts_with("/proc/") && is_root();
        let leaked: Vec<_> = found
            .iter()
            .filter_map(Value::as_str)
            .filter(|place| flags.contains(&"--isolate") || !readable_as_root(place))
            .collect();
        assert!(
            leaked.is_empty(),
            "the token is readable at {leaked:?}: {context}"
        );
    }
}

#[test]
fn exec_reads_the_users_config_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let user = dir.path().join("config/leash");
    std::fs::create_dir_all(&user).unwrap();
    std::fs::write(
        user.join("leash.toml"),
        "[policy]\nallow = [\"user.test\"]\n",
    )
    .unwrap();
    std::fs::write(
        dir.path().join("leash.toml"),
        "[policy]\nallow = [\"cwd.test\"]\n",
    )
    .unwrap();
    let run = |extra: &[(&str, &Path)]| {
        let mut command = Command::new(leash_bin());
        command
            .current_dir(dir.path())
            .env_remove("LEASH_CONFIG")
            .env("HOME", dir.path())
            .env("XDG_CONFIG_HOME", dir.path().join("config"));
        for (name, value) in extra {
            command.env(name, value);
        }
        command
            .args(["exec", "--", "true"])
            .output()
            .expect("leash exec runs")
    };
    let output = run(&[]);
    let expected = format!(
        "leash: config {} (the user's config)",
        user.join("leash.toml").display()
    );
    assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
    let named = dir.path().join("named.toml");
    std::fs::write(&named, "mode = \"full\"\n").unwrap();
    let output = run(&[("LEASH_CONFIG", &named)]);
    let expected = format!("leash: config {} ($LEASH_CONFIG)", named.display());
    assert!(stderr(&output).contains(&expected), "{}", stderr(&output));
}

#[test]
fn admin_without_a_token_is_refused_by_exec() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(leash_bin())
        .current_dir(dir.path())
        .env_remove("LEASH_CONFIG")
        .env_remove("LEASH_ADMIN_TOKEN")
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .args(["exec", "--admin", "--", "true"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("LEASH_ADMIN_TOKEN"),
        "{}",
        stderr(&output)
    );
}

/// What the command under `leash exec [--isolate]` reaches: a raw socket to the origin (as a
/// program that ignores the proxy variables would open), Node's fetch when Node is here, and
/// curl through the proxy; then a request leash blocks, and exit status 7.
const REACH: &str = r#"
port=$1
python3 -c "
import socket, sys
try:
    socket.create_connection(('127.0.0.1', $port), timeout=3).close(); print('raw:connected')
except OSError as e:
    print('raw:refused', e)
"
if command -v node >/dev/null; then
  node -e "fetch('http://127.0.0.1:$port/').then(() => console.log('node:connected'), e => console.log('node:refused', e.cause && e.cause.code))"
fi
echo "curl:$(curl -s http://127.0.0.1:$port/)"
curl -s -o /dev/null http://blocked.test/
exit 7
"#;

fn reach(flags: &[&str], port: u16) -> Output {
    let dir = tempfile::tempdir().unwrap();
    Command::new(leash_bin())
        .current_dir(dir.path())
        .env_remove("LEASH_CONFIG")
        .env("HOME", dir.path())
        .env("XDG_CONFIG_HOME", dir.path())
        .arg("exec")
        .args(flags)
        .args(["--allow-local", &format!("127.0.0.1:{port}")])
        .args(["--", "sh", "-c", REACH, "reach", &port.to_string()])
        .output()
        .expect("leash exec runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolate_leaves_the_command_no_way_out_but_leash() {
    let origin = Origin::http().await;
    let port = origin.port();
    // Without isolation a program that ignores the proxy variables goes around leash.
    let output = tokio::task::spawn_blocking(move || reach(&[], port))
        .await
        .unwrap();
    assert!(
        stdout(&output).contains("raw:connected"),
        "{}",
        stdout(&output)
    );

    let output = tokio::task::spawn_blocking(move || reach(&["--isolate"], port))
        .await
        .unwrap();
    let (out, err) = (stdout(&output), stderr(&output));
    assert!(out.contains("raw:refused"), "{out}\n{err}");
    assert!(!out.contains("node:connected"), "{out}");
    assert!(out.contains("curl:hello from origin"), "{out}\n{err}");
    assert_eq!(output.status.code(), Some(7), "{err}");
    assert!(
        err.contains("blocked.test:80  allowlist_miss  x1"),
        "the summary still appears: {err}"
    );
}

#[test]
fn isolate_passes_on_signals_and_missing_commands_like_a_shell() {
    let run = |command: &[&str]| {
        Command::new(leash_bin())
            .env_remove("LEASH_CONFIG")
            .args(["exec", "--quiet", "--isolate", "--"])
            .args(command)
            .output()
            .expect("leash exec runs")
    };
    assert_eq!(run(&["sh", "-c", "kill -TERM $$"]).status.code(), Some(143));
    assert_eq!(run(&["no-such-command-here"]).status.code(), Some(127));
    let dir = tempfile::tempdir().unwrap();
    let not_runnable = dir.path().join("data.txt");
    std::fs::write(&not_runnable, "not a program\n").unwrap();
    std::fs::set_permissions(&not_runnable, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert_eq!(
        run(&[not_runnable.to_str().unwrap()]).status.code(),
        Some(126)
    );
}

/// Unix sockets in the file system ignore network namespaces (the user's D-Bus could start a
/// program outside): `--isolate` hides `/run`, where they live, from the command.
#[test]
fn isolate_hides_the_unix_sockets_under_run() {
    if !is_root() {
        eprintln!("SKIPPED: a socket under /run needs root (CI runs as root)");
        return;
    }
    let path = PathBuf::from(format!(
        "/run/leash-test-{}.sock",
        leash::random_hex(8).unwrap()
    ));
    let listener = std::os::unix::net::UnixListener::bind(&path).unwrap();
    listener.set_nonblocking(true).unwrap();
    let connect = format!(
        "import socket; s = socket.socket(socket.AF_UNIX); s.settimeout(3); s.connect({:?}); print('unix:connected')",
        path.display().to_string()
    );
    let run = |isolate: bool| {
        let mut command = Command::new(leash_bin());
        command.env_remove("LEASH_CONFIG").args(["exec", "--quiet"]);
        if isolate {
            command.arg("--isolate");
        }
        command
            .args(["--", "python3", "-c", &connect])
            .output()
            .expect("leash exec runs")
    };
    let reached = run(false);
    let hidden = run(true);
    let _ = std::fs::remove_file(&path);
    assert!(
        stdout(&reached).contains("unix:connected"),
        "{}",
        stderr(&reached)
    );
    assert!(
        !stdout(&hidden).contains("unix:connected"),
        "{}",
        stdout(&hidden)
    );
    assert!(
        stderr(&hidden).contains("FileNotFoundError"),
        "{}",
        stderr(&hidden)
    );
}

/// `/patterns` names where each rule comes from: the config file (`config`) or the command line's
/// flags (`cli`), as SPEC §14 lists the sources.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn patterns_tell_rules_of_the_file_from_rules_of_the_flags() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("leash.toml");
    std::fs::write(
        &config,
        "[policy]\nallow = [\"file.test\"]\ndeny = [\"bad-file.test\"]\n",
    )
    .unwrap();
    let mut command = Command::new(leash_bin());
    command
        .current_dir(dir.path())
        .env("XDG_RUNTIME_DIR", dir.path())
        .args([
            "proxy",
            "--ephemeral",
            "--allow",
            "cli.test",
            "--deny",
            "bad-cli.test",
        ])
        .arg("--config")
        .arg(&config)
        .arg("--log")
        .arg(dir.path().join("log.jsonl"));
    let proxy = BinaryProxy::start(command, Duration::from_secs(30));
    let file = PathBuf::from(proxy.ready["admin_token_file"].as_str().unwrap());
    let token = leash::read_token_file(&file).unwrap();
    let admin: std::net::SocketAddr = proxy.ready["admin"].as_str().unwrap().parse().unwrap();
    let (status, response) =
        status_of(admin, &get(&admin.to_string(), "/patterns", Some(&token))).await;
    assert_eq!(status, 200, "{response}");
    let sources = body_json(&response)["sources"].clone();
    let source = |list: &str, rule: &str| {
        let rules = sources[list].as_array().cloned().unwrap_or_default();
        let found = rules.into_iter().find(|r| r["rule"] == rule);
        found.map(|r| r["source"].as_str().unwrap_or_default().to_owned())
    };
    assert_eq!(
        source("allow", "file.test").as_deref(),
        Some("config"),
        "{sources}"
    );
    assert_eq!(
        source("allow", "cli.test").as_deref(),
        Some("cli"),
        "{sources}"
    );
    assert_eq!(
        source("deny", "bad-file.test").as_deref(),
        Some("config"),
        "{sources}"
    );
    assert_eq!(
        source("deny", "bad-cli.test").as_deref(),
        Some("cli"),
        "{sources}"
    );
}
