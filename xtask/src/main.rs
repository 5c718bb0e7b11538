//! leash's development automation (`cargo xtask <command>`, aliased in `.cargo/config.toml`).
//! One module per command; each runs cargo the way CI and the README do.

use std::process::{Command, ExitCode};

use anyhow::{bail, Context};

mod bench;
mod fuzz;
mod release;
mod run_proxy;
mod tidy;

const USAGE: &str = "usage: cargo xtask <command>

commands:
  run-proxy [-- ARGS]  build and run `leash proxy` with xtask/dev.toml (ARGS go to leash proxy)
  release [--order]    the release build of leash (static, start-up code together where it can be;
                       xtask/src/release.rs); --order regenerates bin/startup.order first
  bench [--quick]      the end-to-end benchmark suite (release build), table + target/bench/results.json
  bench --criterion [ARGS]  the micro benchmarks (policy matcher, MITM handshake)
  fuzz [CASES]         run the fuzz properties with CASES cases each (default 100000)
  tidy                 check workspace rules: formatting, clippy, policy purity";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("run-proxy") => run_proxy::run(&args[1..]),
        Some("bench") => bench::run(&args[1..]),
        Some("release") => release::run(&args[1..]),
        Some("fuzz") => fuzz::run(&args[1..]),
        Some("tidy") => tidy::run(),
        Some("-h" | "--help") | None => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => Err(anyhow::anyhow!("unknown command `{other}`\n\n{USAGE}")),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("xtask: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// The workspace root (the parent of `xtask/`).
fn workspace_root() -> anyhow::Result<std::path::PathBuf> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?;
    Ok(root.to_owned())
}

/// A `cargo` command in the workspace root, without the variables `cargo run` set for xtask
/// itself (`CARGO_PKG_NAME`, `CARGO_MANIFEST_DIR`, …): build scripts such as ring's rerun when
/// those change, so a nested build seeing xtask's values rebuilt ring and everything above it,
/// and the next ordinary build rebuilt them back.
/// (`tests::cargo` does the same for `cargo test`; the two crates share no code.)
fn cargo_command() -> anyhow::Result<Command> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    command.current_dir(workspace_root()?);
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy();
        let per_package = [
            "CARGO_PKG_",
            "CARGO_MANIFEST_",
            "CARGO_CRATE_",
            "CARGO_BIN_",
        ];
        if per_package.iter().any(|p| name.starts_with(p))
            || ["CARGO_PRIMARY_PACKAGE", "CARGO_TARGET_TMPDIR", "OUT_DIR"].contains(&&*name)
        {
            command.env_remove(&*name);
        }
    }
    Ok(command)
}

/// Runs `cargo ARGS` in the workspace root and fails unless it succeeds.
fn cargo(args: &[&str]) -> anyhow::Result<()> {
    let status = cargo_command()?
        .args(args)
        .status()
        .with_context(|| format!("running cargo {}", args.join(" ")))?;
    if !status.success() {
        bail!("cargo {} failed ({status})", args.join(" "));
    }
    Ok(())
}
