//! `cargo xtask bench [--quick] [--only WORKLOAD,...] [--criterion [ARGS]]`.
//!
//! Without `--criterion`: the end-to-end suite of issue 9. A release build of `leash` and of the
//! load generator, then `loadgen` pinned to core 1 (it starts leash pinned to core 0),
//! printing the table and writing `target/bench/results.json`. `--quick` runs every workload
//! briefly (a smoke run, also exercised by the tests in debug builds).
//!
//! With `--criterion`: the micro benchmarks (policy matcher vs baselines, MITM handshake); the
//! remaining arguments go to criterion.

use std::process::Command;

use anyhow::{bail, Context};

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    if args.first().map(String::as_str) == Some("--criterion") {
        let mut cargo_args = vec!["bench", "--package", "policy", "--package", "mitm", "--"];
        cargo_args.extend(args[1..].iter().map(String::as_str));
        return crate::cargo(&cargo_args);
    }
    // leash as `cargo xtask release` builds it: the binary the README's numbers are for.
    crate::release::build()?;
    crate::cargo(&[
        "build",
        "--release",
        "--package",
        "xtask",
        "--bin",
        "loadgen",
    ])?;
    let root = crate::workspace_root()?;
    let release = root.join("target/release");
    // Decided here, before anything is pinned: inside a process pinned to one core the machine
    // looks like a one-core machine.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pin = cores >= 2 && std::path::Path::new("/usr/bin/taskset").exists();
    let mut command = match pin {
        true => {
            let mut c = Command::new("taskset");
            c.args(["-c", "1"]).arg(release.join("loadgen"));
            c.args(["--leash-core", "0", "--loadgen-core", "1"]);
            c
        }
        false => Command::new(release.join("loadgen")),
    };
    command
        .current_dir(&root)
        .arg("--leash")
        .arg(release.join("leash"))
        .arg("--out")
        .arg(root.join("target/bench/results.json"));
    // `--quick`, `--only a,b`: the load generator's own options.
    command.args(args);
    let status = command.status().context("running the load generator")?;
    if !status.success() {
        bail!("the load generator failed ({status})");
    }
    Ok(())
}
