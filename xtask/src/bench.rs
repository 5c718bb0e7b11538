//! `cargo xtask bench`: the criterion benchmarks, optimised build. Extra arguments go to criterion
//! (a filter such as `compiled`, or `--measurement-time 5`).

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let mut cargo_args = vec!["bench", "--package", "policy", "--bench", "matcher", "--"];
    cargo_args.extend(args.iter().map(String::as_str));
    crate::cargo(&cargo_args)
}
