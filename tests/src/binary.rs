//! The real `leash` binary: built once per test run, run as a person would.

use std::{
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::OnceLock,
    time::Duration,
};

/// The workspace root.
pub fn workspace_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ sits in the workspace")
}

/// The `leash` binary, built once per test run with the same cargo that runs the tests.
pub fn leash_bin() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let status = cargo()
            .args(["build", "--quiet", "--package", "leash", "--bin", "leash"])
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building leash failed");
        target_dir()
            .join("debug")
            .join(format!("leash{}", std::env::consts::EXE_SUFFIX))
    })
}

/// Cargo's target directory (`CARGO_TARGET_DIR`, else `target/` in the workspace).
pub fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"))
}

/// A `cargo` command in the workspace root, without the variables `cargo test` sets for the test
/// binary (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, …). ring's build script reruns when those
/// change, so a build from inside a test rebuilt ring and everything above it (leash included),
/// and the next `cargo test` rebuilt them back: twice per run, on every run.
/// (xtask's `cargo_command` does the same for `cargo run`; the two crates share no code.)
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root());
    let set_by_cargo_test = |name: &str| {
        name.starts_with("CARGO_PKG_")
            || name.starts_with("CARGO_MANIFEST_")
            || name.starts_with("CARGO_CRATE_")
            || name.starts_with("CARGO_BIN_")
            || matches!(
                name,
                "CARGO_PRIMARY_PACKAGE" | "CARGO_TARGET_TMPDIR" | "OUT_DIR"
            )
    };
    for (name, _) in std::env::vars_os() {
        if set_by_cargo_test(&name.to_string_lossy()) {
            command.env_remove(name);
        }
    }
    command
}

/// Runs `leash ARGS` in `dir` with no config in the environment; returns its output.
pub fn leash(dir: &Path, args: &[&str]) -> Output {
    Command::new(leash_bin())
        .args(args)
        .current_dir(dir)
        .env_remove("LEASH_CONFIG")
        .output()
        .expect("leash runs")
}

/// Standard output as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Standard error as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `leash proxy` running as a child process; killed on drop if still running.
#[derive(Debug)]
pub struct BinaryProxy {
    child: Child,
    /// The parsed ready record.
    pub ready: serde_json::Value,
    /// What it writes to stderr, read as it comes: a pipe nobody reads fills (64 KiB) and then
    /// blocks leash mid-write (with `LEASH_LOG=trace` within one request).
    stderr: Option<std::thread::JoinHandle<Vec<u8>>>,
    /// Its state directory, unless the test chose one: leash keeps `always` answers there when
    /// no config file names a place, and a test must never read or write the user's.
    _state: Option<tempfile::TempDir>,
}

impl BinaryProxy {
    /// Starts `command` (a `leash proxy …` or `cargo xtask run-proxy …`) and waits (bounded) for
    /// the ready record, the first line it prints on stdout.
    pub fn start(mut command: Command, wait: Duration) -> BinaryProxy {
        let chosen = command.get_envs().any(|(name, _)| name == "XDG_STATE_HOME");
        let state = (!chosen).then(|| tempfile::tempdir().expect("a state directory"));
        if let Some(state) = &state {
            command.env("XDG_STATE_HOME", state.path());
        }
        let mut child = command
            .env_remove("LEASH_CONFIG")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("leash starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut stderr = child.stderr.take().expect("piped stderr");
        let stderr = std::thread::spawn(move || {
            let mut text = Vec::new();
            let _ = stderr.read_to_end(&mut text);
            text
        });
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = sender.send(line);
        });
        match receiver.recv_timeout(wait) {
            Ok(line) if !line.is_empty() => {
                let ready =
                    serde_json::from_str(&line).expect("the first stdout line is the ready record");
                BinaryProxy {
                    child,
                    ready,
                    stderr: Some(stderr),
                    _state: state,
                }
            }
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                let text = stderr.join().unwrap_or_default();
                panic!(
                    "no ready record within {wait:?}: {}",
                    String::from_utf8_lossy(&text)
                );
            }
        }
    }

    /// The HTTP proxy address from the ready record.
    pub fn http(&self) -> String {
        self.ready["http"]
            .as_str()
            .expect("an http address")
            .to_owned()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends SIGKILL at once (no chance to flush anything) and waits for the exit.
    pub fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
    }

    /// Sends SIGTERM and waits for the exit; returns the output.
    pub fn terminate(mut self) -> Output {
        let pid = self.child.id().to_string();
        let status = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("kill runs");
        assert!(status.success());
        let child = std::mem::replace(&mut self.child, Command::new("true").spawn().expect("true"));
        let mut output = child.wait_with_output().expect("leash exits");
        if let Some(stderr) = self.stderr.take() {
            output.stderr = stderr.join().unwrap_or_default();
        }
        output
    }
}

impl Drop for BinaryProxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
