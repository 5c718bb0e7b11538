//! `cargo xtask run-proxy [-- ARGS]`: builds and runs `leash proxy` with the development config
//! (`xtask/dev.toml`); ARGS are passed to `leash proxy`.

use std::os::unix::process::CommandExt;

use anyhow::Context;

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let root = crate::workspace_root()?;
    let config = root.join("xtask/dev.toml");
    let mut command = crate::cargo_command()?;
    command
        .args([
            "run",
            "--quiet",
            "--package",
            "leash",
            "--bin",
            "leash",
            "--",
            "proxy",
            "--config",
        ])
        .arg(&config)
        .args(args.iter().filter(|a| *a != "--"));
    // Become the proxy (cargo run execs leash in turn), so signals reach leash directly.
    let error = command.exec();
    Err(error).context("running cargo run -p leash")
}
