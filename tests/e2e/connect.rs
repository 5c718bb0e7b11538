//! `leash connect` as ssh's ProxyCommand against a real sshd (SPEC §11, §12): `git clone` over ssh
//! under `leash exec` (its `GIT_SSH_COMMAND`), allowed and refused, and ssh with a ready file.
//! sshd and ssh are required: CI installs openssh-server and openssh-client.

use std::{
    fs::File,
    net::{TcpListener, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::mpsc,
    time::{Duration, Instant},
};

use tests::{leash_bin, stderr, stdout, BinaryProxy};

/// The bound on every process the tests run.
const WAIT: Duration = Duration::from_secs(60);
/// sshd re-executes itself, so it must be started by its absolute path.
const SSHD: &str = "/usr/sbin/sshd";

/// A real sshd on a loopback port of its own, with its host key, the client's key and both
/// configs in a temporary directory; killed on drop.
struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Sshd {
    fn start() -> Sshd {
        require_openssh();
        // Started as root, sshd refuses to run without its privilege-separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let dir = tempfile::tempdir().unwrap();
        let path = |name: &str| dir.path().join(name);
        keygen(&path("host_key"));
        keygen(&path("client_key"));
        std::fs::copy(path("client_key.pub"), path("authorized_keys")).unwrap();
        let port = free_port();
        std::fs::write(path("sshd_config"), sshd_config(dir.path(), port)).unwrap();
        std::fs::write(path("ssh_config"), ssh_config(dir.path())).unwrap();
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(path("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(path("sshd.log")).unwrap())
            .spawn()
            .expect("sshd starts");
        let mut sshd = Sshd { child, dir, port };
        sshd.wait_listening();
        sshd
    }

    /// Waits (bounded) until sshd accepts connections; panics with its log if it exited.
    fn wait_listening(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("sshd exited ({status}): {}", self.log());
            }
            assert!(
                Instant::now() < deadline,
                "sshd is not listening: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    /// The client config: the test's key, and no known_hosts to consult or change.
    fn ssh_config(&self) -> PathBuf {
        self.dir.path().join("ssh_config")
    }

    fn target(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fails (rather than skips) without OpenSSH, so CI cannot pass without running these tests.
fn require_openssh() {
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing: install openssh-server to run the `leash connect` tests"
    );
    for tool in ["ssh", "ssh-keygen"] {
        let found = Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|out| out.status.success());
        assert!(found, "{tool} is missing: install openssh-client");
    }
}

fn keygen(path: &Path) {
    let out = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "leash-test", "-f"])
        .arg(path)
        .output()
        .expect("ssh-keygen runs");
    assert!(out.status.success(), "ssh-keygen: {}", stderr(&out));
}

/// A port nothing listens on now (the listener is closed again before sshd binds it).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn sshd_config(dir: &Path, port: u16) -> String {
    format!(
        "ListenAddress 127.0.0.1:{port}\n\
         HostKey {dir}/host_key\n\
         AuthorizedKeysFile {dir}/authorized_keys\n\
         PidFile none\n\
         UsePAM no\n\
         StrictModes no\n\
         PermitRootLogin prohibit-password\n\
         PubkeyAuthentication yes\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         LogLevel VERBOSE\n",
        dir = dir.display()
    )
}

fn ssh_config(dir: &Path) -> String {
    format!(
        "Host *\n\
         \x20 IdentityFile {dir}/client_key\n\
         \x20 IdentitiesOnly yes\n\
         \x20 StrictHostKeyChecking no\n\
         \x20 UserKnownHostsFile /dev/null\n\
         \x20 BatchMode yes\n\
         \x20 LogLevel ERROR\n",
        dir = dir.display()
    )
}

/// The user the tests run as: sshd lets exactly this user in with the test's key.
fn user() -> String {
    let out = Command::new("id").arg("-un").output().expect("id runs");
    stdout(&out).trim().to_owned()
}

/// Runs `command` to its end; kills it and fails if it takes longer than `WAIT`.
fn run(command: &mut Command) -> Output {
    let child = command
        .env_remove("LEASH_CONFIG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{command:?}: {e}"));
    let pid = child.id().to_string();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || sender.send(child.wait_with_output()));
    match receiver.recv_timeout(WAIT) {
        Ok(output) => output.expect("output"),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("{command:?} did not finish within {WAIT:?}");
        }
    }
}

fn git(dir: &Path, args: &[&str]) {
    let out = run(Command::new("git")
        .current_dir(dir)
        .args([
            "-c",
            "user.name=leash",
            "-c",
            "user.email=leash@example.test",
            "-c",
            "init.defaultBranch=main",
        ])
        .args(args));
    assert!(out.status.success(), "git {args:?}: {}", stderr(&out));
}

/// A bare repository at `dir/repo.git` holding one commit of `README`.
fn bare_repo(dir: &Path, readme: &str) -> PathBuf {
    let bare = dir.join("repo.git");
    git(dir, &["init", "-q", "--bare", bare.to_str().unwrap()]);
    let work = dir.join("work");
    git(dir, &["init", "-q", work.to_str().unwrap()]);
    std::fs::write(work.join("README"), readme).unwrap();
    git(&work, &["add", "README"]);
    git(&work, &["commit", "-q", "-m", "first"]);
    git(
        &work,
        &["push", "-q", bare.to_str().unwrap(), "HEAD:refs/heads/main"],
    );
    bare
}

/// `git clone URL DEST` under `leash exec FLAGS`, logging every decision to `dir/log.jsonl`.
///
/// ssh takes the test's key and host-key settings only from `-F`: it reads the user's config
/// from the passwd entry's home directory, never from `$HOME`, and `GIT_SSH_COMMAND` (which
/// leash exec sets) outranks `core.sshCommand`. So the child appends `-F CONFIG` to the
/// `GIT_SSH_COMMAND` leash gave it, as a user adding options of their own would; the
/// ProxyCommand given with `-o` still wins over any config file.
fn clone_under_exec(dir: &Path, flags: &[&str], ssh_config: &Path, url: &str) -> Output {
    let config = dir.join("leash.toml");
    std::fs::write(&config, "[log]\nlog_allowed = true\n").unwrap();
    let _ = std::fs::remove_file(dir.join("log.jsonl"));
    let _ = std::fs::remove_dir_all(dir.join("clone"));
    let script = r#"test -n "$GIT_SSH_COMMAND" || { echo "leash exec set no GIT_SSH_COMMAND" >&2; exit 99; }
GIT_SSH_COMMAND="$GIT_SSH_COMMAND -F $1" exec git clone -q "$2" "$3""#;
    run(Command::new(leash_bin())
        .current_dir(dir)
        .arg("exec")
        .arg("--config")
        .arg(&config)
        .arg("--log")
        .arg(dir.join("log.jsonl"))
        .args(flags)
        .args(["--", "sh", "-c", script, "sh"])
        .arg(ssh_config)
        .arg(url)
        .arg(dir.join("clone")))
}

fn log_lines(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect()
}

#[test]
fn git_clones_over_ssh_through_leash_exec_only_when_the_policy_allows() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let bare = bare_repo(dir.path(), "cloned over ssh through leash\n");
    let url = format!("ssh://{}@{}{}", user(), sshd.target(), bare.display());
    let target = sshd.target();

    let out = clone_under_exec(
        dir.path(),
        &["--allow-local", &target],
        &sshd.ssh_config(),
        &url,
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}\nsshd: {}",
        stderr(&out),
        sshd.log()
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("clone/README")).unwrap(),
        "cloned over ssh through leash\n"
    );
    let lines = log_lines(&dir.path().join("log.jsonl"));
    assert!(
        lines.iter().any(|l| l["decision"] == "allow"
            && l["protocol"] == "socks5"
            && l["port"] == sshd.port),
        "the clone went through leash's SOCKS5 listener: {lines:?}"
    );

    // Without the allow, the policy refuses the sshd, so the clone fails, and says why.
    let out = clone_under_exec(dir.path(), &[], &sshd.ssh_config(), &url);
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "the clone must fail: {err}");
    assert!(
        err.contains(&format!(
            "leash: connect {target} refused: connection not allowed by ruleset"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{target}  local_address")),
        "the blocked summary names the target: {err}"
    );
    let lines = log_lines(&dir.path().join("log.jsonl"));
    assert!(
        lines.iter().any(|l| l["decision"] != "allow"
            && l["protocol"] == "socks5"
            && l["reason"] == "local_address"
            && l["host"] == "127.0.0.1"
            && l["port"] == sshd.port),
        "{lines:?}"
    );
    assert!(!dir.path().join("clone/README").exists());
}

#[test]
fn ssh_reaches_sshd_through_leash_connect_with_a_ready_file() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready.json");
    let log = dir.path().join("log.jsonl");
    let mut command = Command::new(leash_bin());
    command
        .current_dir(dir.path())
        .args(["proxy", "--ephemeral", "--allow-local", &sshd.target()])
        .arg("--log")
        .arg(&log)
        .arg("--ready-file")
        .arg(&ready);
    let proxy = BinaryProxy::start(command, WAIT);
    let connect = |host: &str, port: &str| {
        run(Command::new(leash_bin())
            .arg("connect")
            .arg("--ready-file")
            .arg(&ready)
            .args([host, port]))
    };

    let proxy_command = format!(
        "ProxyCommand={} connect --ready-file {} %h %p",
        leash_bin().display(),
        ready.display()
    );
    let out = run(Command::new("ssh")
        .arg("-F")
        .arg(sshd.ssh_config())
        .args(["-o", &proxy_command, "-p", &sshd.port.to_string()])
        .arg(format!("{}@127.0.0.1", user()))
        .args(["echo", "hello"]));
    assert_eq!(
        (out.status.code(), stdout(&out).as_str()),
        (Some(0), "hello\n"),
        "{}\nsshd: {}",
        stderr(&out),
        sshd.log()
    );

    // Refused: a local port the allow does not name, and a name no rule allows.
    for (host, port) in [("127.0.0.1", "9"), ("example.com", "22")] {
        let out = connect(host, port);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{host}:{port}: {err}");
        assert_eq!(
            err.trim_end(),
            format!(
                "leash: connect {host}:{port} refused: connection not allowed by ruleset \
                 (see leash's violation log / blocked summary for the reason)"
            )
        );
        assert!(stdout(&out).is_empty());
    }
    let output = proxy.terminate();
    assert!(output.status.success(), "{}", stderr(&output));
    let lines = log_lines(&log);
    for (host, reason) in [
        ("127.0.0.1", "local_address"),
        ("example.com", "allowlist_miss"),
    ] {
        assert!(
            lines.iter().any(|l| l["host"] == host
                && l["reason"] == reason
                && l["protocol"] == "socks5"
                && l["attempt"] == "connect"),
            "{host}: {lines:?}"
        );
    }
}

/// `leash connect example.com 22` with `ALL_PROXY` = `all_proxy` (unset when `None`) and `args`:
/// exit 2 and `message` on stderr, the token never.
#[track_caller]
fn usage_error(all_proxy: Option<&str>, args: &[&str], message: &str) {
    let mut command = Command::new(leash_bin());
    command.env_remove("ALL_PROXY").env_remove("all_proxy");
    if let Some(url) = all_proxy {
        command.env("ALL_PROXY", url);
    }
    let out = run(command
        .arg("connect")
        .args(args)
        .args(["example.com", "22"]));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{message}: {err}");
    assert!(err.contains(message), "{message}: {err}");
    assert!(!err.contains("secret"), "the token leaked: {err}");
}

#[test]
fn connect_without_a_socks_address_is_a_usage_error() {
    usage_error(None, &[], "ALL_PROXY is not set");
    let http = "http://a1:secret@127.0.0.1:1";
    usage_error(Some(http), &[], "a http:// URL, not socks5h://");
    let dir = tempfile::tempdir().unwrap();
    let no_socks = dir.path().join("ready.json");
    std::fs::write(
        &no_socks,
        r#"{"event":"ready","pid":1,"http":"127.0.0.1:1","socks":null,"admin":null}"#,
    )
    .unwrap();
    let args = ["--ready-file", no_socks.to_str().unwrap()];
    usage_error(None, &args, "has no SOCKS5 address");
}
