//! Structural rules of the workspace that a compiler cannot check.

use tests::cargo;

/// `policy` is pure (STYLE.md 4): no async runtime, no HTTP stack, no TLS, no sockets crate among
/// its normal dependencies.
#[test]
fn policy_has_no_runtime_or_io_dependencies() {
    let out = cargo()
        .args([
            "tree",
            "--package",
            "policy",
            "--edges",
            "normal",
            "--prefix",
            "none",
            "--format",
            "{p}",
        ])
        .output()
        .expect("cargo tree runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        tree.contains("policy v"),
        "the tree lists policy itself:\n{tree}"
    );
    let forbidden = [
        "tokio",
        "hyper",
        "rustls",
        "mio",
        "socket2",
        "async-std",
        "futures",
        "reqwest",
        "tracing-appender",
    ];
    for line in tree.lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        assert!(
            !forbidden.contains(&name),
            "policy depends on {name}:\n{tree}"
        );
    }
}

/// CI runs "exactly the test command the README gives": the last line of `.ci/run` must appear,
/// verbatim, in the README.
#[test]
fn ci_runs_the_readme_test_command() {
    let root = tests::workspace_root();
    let ci = std::fs::read_to_string(root.join(".ci/run")).expect(".ci/run");
    let readme = std::fs::read_to_string(root.join("README.md")).expect("README.md");
    let command = ci
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .expect("a command");
    assert!(command.starts_with("cargo "), "{command}");
    assert!(
        readme.lines().any(|l| l.trim() == command),
        "README.md lacks `{command}`"
    );
}

/// Every platform-specific piece of code and its portable twin. A `cfg(target_os …)` or `cfg(unix)` that is not
/// listed here fails this test: say what runs elsewhere, and how CI exercises it, first.
const PLATFORM_SPECIFIC: &[(&str, usize, &str)] = &[
    (
        "xtask/src/loadgen/workloads.rs",
        2,
        "pinning bench threads to a core; twin: unpinned, as on a one-core machine",
    ),
    (
        "xtask/src/release.rs",
        1,
        "the static, start-up-ordered link on x86_64 Linux; twin: a plain cargo build --release",
    ),
    (
        "listeners/src/accept.rs",
        3,
        "listen(2) again with a 4096 backlog; twin: the standard library's 128 elsewhere",
    ),
    (
        "listeners/src/relay.rs",
        3,
        "splice(2) relay; twin: RelayMode::Copy, run by the relay unit tests and e2e::relay",
    ),
    (
        "listeners/src/lib.rs",
        1,
        "the splice module itself; twin as above",
    ),
    (
        "listeners/Cargo.toml",
        2,
        "rustix pipes for splice (twin as above); nix getifaddrs on unix",
    ),
    (
        "listeners/src/interfaces.rs",
        2,
        "getifaddrs; elsewhere an own port is refused on every address (fails closed)",
    ),
    (
        "bin/src/exec.rs",
        3,
        "--isolate (namespaces) and non-dumpable: elsewhere --isolate refuses to run, loudly",
    ),
    (
        "bin/src/embed.rs",
        1,
        "a leash holding credentials is non-dumpable (PR_SET_DUMPABLE); elsewhere not (README: Credentials)",
    ),
    (
        "bin/src/main.rs",
        3,
        "the hidden __isolate helper behind --isolate",
    ),
    (
        "bin/src/decider_socket.rs",
        2,
        "--decider fd:N takes the descriptor by pidfd_getfd(2); elsewhere fd:N is refused at start and unix:PATH works",
    ),
    (
        "bin/Cargo.toml",
        1,
        "nix for unshare(2)/mount(2) behind --isolate",
    ),
];

#[test]
fn linux_only_code_is_listed_with_its_portable_twin() {
    let root = tests::workspace_root();
    let mut found: Vec<(String, usize)> = Vec::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("a readable directory") {
            let path = entry.expect("an entry").path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if path.is_dir() {
                if !name.starts_with('.') && name != "target" {
                    pending.push(path);
                }
                continue;
            }
            if !(name.ends_with(".rs") || name == "Cargo.toml") {
                continue;
            }
            let text = std::fs::read_to_string(&path).expect("a readable file");
            let count = ["target_os", "cfg(unix)", "cfg(not(unix))", "cfg(windows)"]
                .iter()
                .map(|needle| text.matches(needle).count())
                .sum::<usize>();
            let relative = path.strip_prefix(root).expect("inside the workspace");
            let relative = relative.to_string_lossy().into_owned();
            // This file names the attribute in its own text.
            if count > 0 && relative != "tests/e2e/tidy.rs" {
                found.push((relative, count));
            }
        }
    }
    found.sort();
    let mut listed: Vec<(String, usize)> = PLATFORM_SPECIFIC
        .iter()
        .map(|(path, count, _)| ((*path).to_owned(), *count))
        .collect();
    listed.sort();
    assert_eq!(
        found, listed,
        "platform-specific code changed: list it with its portable twin"
    );
}

/// ARCHITECTURE.md stays true about files: every path it names in backticks (`bin/src/hub.rs`,
/// `tests/e2e/`, or `relay.rs` under a crate's heading) exists.
#[test]
fn every_path_architecture_names_exists() {
    let root = tests::workspace_root();
    let text = std::fs::read_to_string(root.join("ARCHITECTURE.md")).expect("ARCHITECTURE.md");
    let mut krate = String::new();
    let mut missing = Vec::new();
    let mut checked = 0;
    for line in text.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            krate = heading.trim_matches('`').to_owned();
            if krate.starts_with("bin") {
                krate = "bin".to_owned();
            }
        }
        for token in line.split('`').skip(1).step_by(2) {
            let looks_like_path = token.ends_with(".rs")
                || token.ends_with(".toml")
                || token.ends_with(".md")
                || (token.ends_with('/') && !token.contains(' '));
            if !looks_like_path
                || token.contains(' ')
                || token.contains('*')
                || token.contains("://")
            {
                continue;
            }
            checked += 1;
            let candidates = [
                root.join(token),
                root.join(&krate).join(token),
                root.join(&krate).join("src").join(token),
            ];
            if !candidates.iter().any(|c| c.exists()) {
                missing.push(format!("{token} (under `{krate}`)"));
            }
        }
    }
    assert!(
        checked > 40,
        "only {checked} paths found: is the parser still right?"
    );
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md names missing paths: {missing:#?}"
    );
}
