//! `cargo xtask fuzz [CASES]`: the proptest-driven fuzz properties (host canonicalisation, rule
//! parsing, the SOCKS5 handshake, the config loader) with a large case budget (default 100 000
//! each). `cargo test` runs the same properties with a small budget as a smoke run.

use anyhow::{bail, Context};

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let cases = args.first().map_or("100000", String::as_str);
    let status = crate::cargo_command()?
        .env("LEASH_FUZZ_CASES", cases)
        .args([
            "test",
            "--package",
            "policy",
            "--package",
            "socks-proxy",
            "--package",
            "leash",
            "--lib",
            "fuzz",
        ])
        .status()
        .context("running cargo test")?;
    if !status.success() {
        bail!("a fuzz property failed ({status})");
    }
    Ok(())
}
