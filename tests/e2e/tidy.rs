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
