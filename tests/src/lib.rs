//! Support for leash's end-to-end tests: locating (building) the real `leash` binary and running
//! it the way a person would. The tests themselves are the one integration binary in `e2e/`.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    sync::OnceLock,
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
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| workspace_root().join("target"));
        target
            .join("debug")
            .join(format!("leash{}", std::env::consts::EXE_SUFFIX))
    })
}

/// A `cargo` command in the workspace root.
pub fn cargo() -> Command {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root());
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
