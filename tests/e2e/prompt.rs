//! The terminal prompt (SPEC §14), driven in real `tmux` (send-keys, capture-pane): `leash exec
//! --ask` asks on the terminal while the command keeps its stdout, `leash approve` answers a
//! running `leash proxy` from a second terminal, and without a terminal `--ask` is refused.
//! The origin is reached by a name (`origin.test`, from a hosts file) so the policy asks about it.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tests::{curl, leash_bin, stderr, BinaryProxy, Origin};

const BODY: &str = "hello from origin";
/// How long anything on the screen or on disk is waited for (polled every 100 ms).
const WAIT: Duration = Duration::from_secs(30);

/// A tmux server of its own (own socket), killed on drop, running one script in a fixed-size pane.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn start(dir: &Path, script: &str) -> Tmux {
        let file = dir.join("pane.sh");
        std::fs::write(&file, script).unwrap();
        let tmux = Tmux {
            socket: dir.join("tmux.sock"),
        };
        let status = tmux
            .command()
            .args(["new-session", "-d", "-x", "200", "-y", "50", "bash"])
            .arg(&file)
            .status()
            .expect("tmux runs (install tmux; .ci/run does)");
        assert!(status.success(), "tmux new-session");
        tmux
    }

    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command
            .arg("-S")
            .arg(&self.socket)
            .env("TERM", "xterm")
            .env_remove("TMUX")
            .stdin(Stdio::null());
        command
    }

    /// The pane's text, wrapped lines joined.
    fn screen(&self) -> String {
        let out = self
            .command()
            .args(["capture-pane", "-p", "-J"])
            .output()
            .expect("tmux capture-pane");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Waits (bounded) until `text` shows `times` times; the screen then.
    async fn wait_for(&self, text: &str, times: usize) -> String {
        for _ in 0..WAIT.as_millis() / 100 {
            let screen = self.screen();
            if screen.matches(text).count() >= times {
                return screen;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("{text:?} not shown {times} time(s):\n{}", self.screen());
    }

    /// Types Ctrl-C (the terminal sends SIGINT to its foreground processes).
    fn ctrl_c(&self) {
        let status = self.command().args(["send-keys", "C-c"]).status().unwrap();
        assert!(status.success(), "tmux send-keys");
    }

    /// Types `keys` (literally, no Enter).
    fn keys(&self, keys: &str) {
        let status = self
            .command()
            .args(["send-keys", "-l", keys])
            .status()
            .unwrap();
        assert!(status.success(), "tmux send-keys");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.command().arg("kill-server").status();
    }
}

/// Waits (bounded) until `path` holds a line; its text.
async fn file_text(path: &Path, tmux: &Tmux) -> String {
    for _ in 0..WAIT.as_millis() / 100 {
        if let Ok(text) = std::fs::read_to_string(path) {
            if text.ends_with('\n') {
                return text;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{} not written:\n{}", path.display(), tmux.screen());
}

/// A config asking about `origin.test` (a name from `dir/hosts`; its address is opened by
/// `allow_local`, so only the allowlist is missing), plus `extra` lines.
fn asking_config(dir: &Path, origin: &Origin, extra: &str) -> PathBuf {
    let hosts = dir.join("hosts");
    std::fs::write(&hosts, "127.0.0.1 origin.test other.test\n").unwrap();
    let config = dir.join("leash.toml");
    let text = format!(
        "[policy]\nallow_local = [\"127.0.0.1:{}\"]\n\n[dns]\nhosts = {:?}\n\n[ask]\nhold = \"60s\"\n{extra}",
        origin.port(),
        hosts.display().to_string()
    );
    std::fs::write(&config, text).unwrap();
    config
}

fn log_lines(path: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

/// The answer lines of a log, as (answer, scope, by).
fn answers(log: &Path) -> Vec<(String, String, String)> {
    let field = |line: &Value, key: &str| line[key].as_str().unwrap_or_default().to_owned();
    log_lines(log)
        .iter()
        .filter(|l| l["kind"] == "answer")
        .map(|l| (field(l, "answer"), field(l, "scope"), field(l, "by")))
        .collect()
}

fn answer(answer: &str, scope: &str) -> (String, String, String) {
    (answer.into(), scope.into(), "terminal".into())
}

/// The pane's script: `leash exec --ask … -- CMD` with CMD's stdout in `dir/out`, the exit
/// status in `dir/status`, the terminal's mode before and after in `dir/stty-*`, then the pane
/// stays for capture.
fn exec_script(dir: &Path, config: &Path, command: &str) -> String {
    let leash = format!(
        "env -u LEASH_CONFIG {:?} exec --ask --config {config:?} --log log.jsonl -- {command} > out",
        leash_bin()
    );
    script(dir, &leash)
}

/// `command` in `dir`, between two `stty -g`, its status written last.
fn script(dir: &Path, command: &str) -> String {
    format!(
        "cd {dir:?} && stty -g > stty-before\n{command}\nstatus=$?\nstty -g > stty-after\n\
         echo \"exit=$status\" > status\necho -- done\nsleep 600\n"
    )
}

/// Waits for the script's status; asserts the terminal's mode is what it was before leash ran
/// and that what came after starts on a line of its own.
async fn finished(dir: &Path, tmux: &Tmux) -> String {
    let status = file_text(&dir.join("status"), tmux).await;
    let screen = tmux.wait_for("-- done", 1).await;
    assert!(screen.lines().any(|l| l == "-- done"), "{screen}");
    let mode = |name: &str| std::fs::read_to_string(dir.join(name)).unwrap();
    assert_eq!(
        mode("stty-before"),
        mode("stty-after"),
        "the terminal's mode was not put back:\n{}",
        tmux.screen()
    );
    status
}

fn curl_cmd(origin: &Origin) -> String {
    format!(
        "curl -sS --max-time 60 -w '\\n%{{http_code}}\\n' http://origin.test:{}/",
        origin.port()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_ask_prompts_on_the_terminal_and_o_lets_the_request_through() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let config = asking_config(dir.path(), &origin, "");
    let tmux = Tmux::start(
        dir.path(),
        &exec_script(dir.path(), &config, &curl_cmd(&origin)),
    );
    let question = format!(
        "leash: allow origin.test:{} (GET /, attempt exec-",
        origin.port()
    );
    let screen = tmux.wait_for(&question, 1).await;
    assert!(
        screen.contains(")? [o]nce [s]ession [a]lways [d]eny >"),
        "{screen}"
    );
    // Any other key asks again; Enter is not needed.
    tmux.keys("x");
    tmux.wait_for(&question, 2).await;
    tmux.keys("o");
    let status = finished(dir.path(), &tmux).await;
    assert_eq!(status, "exit=0\n", "{}", tmux.screen());
    // The command's own output is intact: the body and nothing of the prompt.
    let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
    assert_eq!(out, format!("{BODY}\n200\n"));
    let screen = tmux.screen();
    assert!(screen.contains("allowed once"), "{screen}");
    // Held and let through is not blocked: the summary says nothing.
    assert!(!screen.contains("leash: blocked"), "{screen}");
    assert_eq!(
        answers(&dir.path().join("log.jsonl")),
        [answer("allow", "once")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d_gives_the_deny_block_once_and_the_next_request_is_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let config = asking_config(dir.path(), &origin, "");
    let twice = format!("sh -c \"{0}; {0}\"", curl_cmd(&origin).replace('"', "\\\""));
    let tmux = Tmux::start(dir.path(), &exec_script(dir.path(), &config, &twice));
    let question = format!(
        "leash: allow origin.test:{} (GET /, attempt exec-",
        origin.port()
    );
    tmux.wait_for(&question, 1).await;
    tmux.keys("d");
    // `d` denies once: the second request is a new question, not refused unseen.
    tmux.wait_for(&question, 2).await;
    tmux.keys("o");
    let status = finished(dir.path(), &tmux).await;
    assert_eq!(status, "exit=0\n", "{}", tmux.screen());
    let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
    let (denied, allowed) = out.split_once("403\n").expect("a 403 first");
    assert!(denied.contains(r#""reason":"declined""#), "{out}");
    assert!(denied.contains(r#""held_ms":"#), "{out}");
    assert_eq!(allowed, format!("{BODY}\n200\n"));
    let screen = tmux.screen();
    assert!(screen.contains("denied"), "{screen}");
    assert!(
        screen.contains("leash: blocked 1 request(s) of attempt exec-"),
        "{screen}"
    );
    assert_eq!(
        answers(&dir.path().join("log.jsonl")),
        [answer("deny", "once"), answer("allow", "once")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn questions_wait_their_turn_and_a_withdrawn_one_makes_way_for_the_next() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let config = asking_config(dir.path(), &origin, "");
    let port = origin.port();
    // The first request gives up after 3 s while its question shows; the second waits its turn.
    let both = format!(
        "sh -c 'curl -s --max-time 3 http://origin.test:{port}/ & sleep 1; \
         curl -sS --max-time 60 http://other.test:{port}/; wait'"
    );
    let tmux = Tmux::start(dir.path(), &exec_script(dir.path(), &config, &both));
    let first = format!("leash: allow origin.test:{port} (GET /, attempt exec-");
    let second = format!("leash: allow other.test:{port} (GET /, attempt exec-");
    tmux.wait_for(&first, 1).await;
    let gone = format!("origin.test:{port} was answered elsewhere");
    tmux.wait_for(&gone, 1).await;
    // One question at a time: the second shows only once the first has gone.
    let screen = tmux.wait_for(&second, 1).await;
    assert!(screen.find(&gone) < screen.find(&second), "{screen}");
    tmux.keys("o");
    let status = finished(dir.path(), &tmux).await;
    assert_eq!(status, "exit=0\n", "{}", tmux.screen());
    let out = std::fs::read_to_string(dir.path().join("out")).unwrap();
    assert_eq!(out, BODY);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_at_the_question_ends_the_command_and_puts_the_terminal_back() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let config = asking_config(dir.path(), &origin, "");
    let tmux = Tmux::start(
        dir.path(),
        &exec_script(dir.path(), &config, &curl_cmd(&origin)),
    );
    let question = format!(
        "leash: allow origin.test:{} (GET /, attempt exec-",
        origin.port()
    );
    tmux.wait_for(&question, 1).await;
    tmux.ctrl_c();
    // curl was interrupted (128 + SIGINT), as it would be without leash.
    assert_eq!(finished(dir.path(), &tmux).await, "exit=130\n");
    assert_eq!(answers(&dir.path().join("log.jsonl")), []);
}

/// `leash proxy` with its admin API (token in `dir/admin.token`), its ready record in
/// `dir/ready.json`.
fn admin_proxy(dir: &Path, origin: &Origin) -> BinaryProxy {
    let token_file = dir.join("admin.token").display().to_string();
    let extra = format!("\n[admin]\nenabled = true\ntoken_file = {token_file:?}\n");
    let config = asking_config(dir, origin, &extra);
    let mut command = Command::new(leash_bin());
    command
        .current_dir(dir)
        .args(["proxy", "--ephemeral", "--config"]);
    command
        .arg(&config)
        .arg("--ready-file")
        .arg(dir.join("ready.json"));
    command.arg("--log").arg(dir.join("log.jsonl"));
    BinaryProxy::start(command, WAIT)
}

/// A curl the test can kill.
fn held_curl(proxy_url: &str, url: &str) -> std::process::Child {
    Command::new("curl")
        .args(["-sS", "--max-time", "60", "-x", proxy_url, url])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("curl runs")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_answers_a_running_proxy_from_a_second_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let proxy = admin_proxy(dir.path(), &origin);
    let approve = format!("{:?} approve --ready-file ready.json", leash_bin());
    let tmux = Tmux::start(dir.path(), &script(dir.path(), &approve));
    tmux.wait_for(
        "leash: answering the asks of the proxy at http://127.0.0.1:",
        1,
    )
    .await;
    let proxy_url = format!("http://{}", proxy.http());
    let url = format!("http://origin.test:{}/", origin.port());
    let question = format!("leash: allow origin.test:{} (GET /)?", origin.port());

    // A request withdrawn while its question shows: the question goes, with a note.
    let mut gone = held_curl(&proxy_url, &url);
    tmux.wait_for(&question, 1).await;
    gone.kill().unwrap();
    let _ = gone.wait();
    tmux.wait_for("was answered elsewhere, withdrawn or timed out", 1)
        .await;

    let held = tokio::spawn(curl(&["-x", &proxy_url, &url]));
    tmux.wait_for(&question, 2).await;
    tmux.keys("o");
    let out = tokio::time::timeout(WAIT, held).await.unwrap().unwrap();
    assert_eq!(
        (out.code, out.text()),
        (Some(0), BODY.to_owned()),
        "{}",
        out.stderr
    );
    assert!(tmux.screen().contains("allowed once"), "{}", tmux.screen());

    // Ctrl-C while a question shows: approve ends and the terminal's mode is put back.
    let mut left = held_curl(&proxy_url, &url);
    tmux.wait_for(&question, 3).await;
    tmux.ctrl_c();
    assert_eq!(finished(dir.path(), &tmux).await, "exit=0\n");
    left.kill().unwrap();
    let _ = left.wait();
    drop(proxy);
    assert_eq!(
        answers(&dir.path().join("log.jsonl")),
        [answer("allow", "once")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approve_says_when_the_proxy_is_not_running() {
    let dir = tempfile::tempdir().unwrap();
    // A port nothing listens on any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let ready = dir.path().join("ready.json");
    let record = format!("{{\"http\":\"127.0.0.1:{port}\",\"admin\":\"127.0.0.1:{port}\"}}");
    std::fs::write(&ready, record).unwrap();
    let script = format!(
        "cd {:?} && {:?} approve --ready-file {ready:?}\necho \"exit=$?\" > status\nsleep 600\n",
        dir.path(),
        leash_bin()
    );
    let tmux = Tmux::start(dir.path(), &script);
    let status = file_text(&dir.path().join("status"), &tmux).await;
    assert_eq!(status, "exit=2\n");
    let screen = tmux.screen();
    assert!(screen.contains("(is the proxy running?)"), "{screen}");
}

/// Runs `leash ARGS` in a new session (no controlling terminal), stdin null.
fn without_terminal(dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new("setsid")
        .arg("--wait")
        .arg(leash_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("LEASH_CONFIG")
        .stdin(Stdio::null())
        .output()
        .expect("setsid runs")
}

#[test]
fn ask_without_a_terminal_is_refused_before_the_command_runs() {
    let dir = tempfile::tempdir().unwrap();
    let ran = dir.path().join("ran");
    let out = without_terminal(
        dir.path(),
        &["exec", "--ask", "--", "touch", ran.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("--ask asks on the terminal, and there is none"),
        "{}",
        stderr(&out)
    );
    assert!(!ran.exists(), "the command ran");
}

#[test]
fn approve_refuses_clearly_without_a_proxy_an_admin_api_or_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let approve = |dir: &Path| {
        let out = without_terminal(dir, &["approve", "--ready-file", ready.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
        stderr(&out)
    };
    assert!(approve(dir.path()).contains("reading"), "no ready record");
    std::fs::write(&ready, r#"{"http":"127.0.0.1:1"}"#).unwrap();
    assert!(approve(dir.path()).contains("names no admin API"));
    let record =
        r#"{"http":"127.0.0.1:1","admin":"127.0.0.1:1","admin_token_file":"/nonexistent/t"}"#;
    std::fs::write(&ready, record).unwrap();
    assert!(approve(dir.path()).contains("reading the admin token file"));
    std::fs::write(&ready, r#"{"http":"127.0.0.1:1","admin":"127.0.0.1:1"}"#).unwrap();
    assert!(approve(dir.path()).contains("asks on a terminal, and has none"));
}

/// What the command under `--ask` tries: its request is held, and while the question shows it
/// pushes `a` ("always") into the terminal's input queue (`ioctl(TIOCSTI)`) through its stdin and
/// through `/dev/tty`, every half second for six seconds; it prints what each try came to.
const INJECTOR: &str = r#"
import fcntl, os, sys, termios, threading, time, urllib.request
def fetch():
    try:
        print("fetched:", urllib.request.urlopen(sys.argv[1], timeout=60).read().decode(), flush=True)
    except Exception as e:
        print("fetch failed:", e, flush=True)
t = threading.Thread(target=fetch)
t.start()
results = set()
for _ in range(12):
    time.sleep(0.5)
    for name in ("stdin", "tty"):
        try:
            fd = 0 if name == "stdin" else os.open("/dev/tty", os.O_RDWR)
            fcntl.ioctl(fd, termios.TIOCSTI, b"a")
            results.add(name + ":injected")
        except OSError as e:
            results.add(name + ":" + str(e.strerror))
print("tiocsti:", sorted(results), flush=True)
t.join()
"#;

/// The command cannot answer its own question by typing into the terminal leash asks on: it
/// runs without a controlling terminal (`leash __detach`), so `TIOCSTI` is refused, the question
/// stays until the person answers, and the person's `d` is the answer. As root the command runs
/// as nobody (root may push keys into any terminal; an agent should never run as root).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_cannot_type_an_answer_into_the_terminal() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let config = asking_config(dir.path(), &origin, "");
    let script = dir.path().join("inject.py");
    std::fs::write(&script, INJECTOR).unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let python = match std::path::Path::new("/usr/bin/python3").exists() {
        true => "/usr/bin/python3",
        false => "python3",
    };
    let as_user = match rustix::process::geteuid().is_root() {
        true => "setpriv --reuid=65534 --regid=65534 --clear-groups ",
        false => "",
    };
    let url = format!("http://origin.test:{}/", origin.port());
    let command = format!("{as_user}{python} {script:?} {url}");
    let tmux = Tmux::start(dir.path(), &exec_script(dir.path(), &config, &command));
    let question = format!(
        "leash: allow origin.test:{} (GET /, attempt exec-",
        origin.port()
    );
    tmux.wait_for(&question, 1).await;
    // The injector's six seconds of tries end; the question is still waiting for the person.
    let out = dir.path().join("out");
    let mut tried = String::new();
    for _ in 0..WAIT.as_millis() / 100 {
        tried = std::fs::read_to_string(&out).unwrap_or_default();
        if tried.contains("tiocsti:") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(tried.contains("tiocsti:"), "{tried}\n{}", tmux.screen());
    assert!(!tried.contains("injected"), "{tried}");
    assert_eq!(
        answers(&dir.path().join("log.jsonl")),
        [],
        "{}",
        tmux.screen()
    );
    tmux.keys("d");
    let status = finished(dir.path(), &tmux).await;
    assert_eq!(status, "exit=0\n", "{}", tmux.screen());
    assert_eq!(
        answers(&dir.path().join("log.jsonl")),
        [answer("deny", "once")]
    );
    let out = std::fs::read_to_string(&out).unwrap();
    assert!(out.contains("fetch failed"), "{out}");
}

/// `a` keeps the answer in the approvals file beside the config `leash exec` used (SPEC §14),
/// never in the user's state directory or the working directory.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn always_is_kept_beside_the_config_exec_used() {
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http().await;
    let config = asking_config(dir.path(), &origin, "");
    let state = dir.path().join("state");
    let script = exec_script(dir.path(), &config, &curl_cmd(&origin)).replace(
        "env -u LEASH_CONFIG",
        &format!("env -u LEASH_CONFIG XDG_STATE_HOME={state:?}"),
    );
    let tmux = Tmux::start(dir.path(), &script);
    let question = format!(
        "leash: allow origin.test:{} (GET /, attempt exec-",
        origin.port()
    );
    tmux.wait_for(&question, 1).await;
    tmux.keys("a");
    let status = finished(dir.path(), &tmux).await;
    assert_eq!(status, "exit=0\n", "{}", tmux.screen());
    let kept = std::fs::read_to_string(dir.path().join("leash-approvals.toml")).unwrap();
    assert!(
        kept.contains(&format!("\"origin.test:{}\"", origin.port())),
        "{kept}"
    );
    assert!(
        !state.join("leash/approvals.toml").exists(),
        "not in the state directory"
    );
}
