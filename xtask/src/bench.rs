//! `cargo xtask bench`: the criterion benchmarks, optimised build — the policy matcher against its
//! baselines, and the MITM handshake with a cached and an uncached leaf. Extra arguments go to
//! criterion (a filter such as `compiled`, or `--measurement-time 5`).

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut cargo_args = vec!["bench", "--package", "policy", "--package", "mitm", "--"];
    cargo_args.extend(args.iter().map(String::as_str));
    crate::cargo(&cargo_args)
}
