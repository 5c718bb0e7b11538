//! `cargo xtask tidy`: the checks CI applies besides the tests, runnable on their own.

pub(crate) fn run() -> anyhow::Result<()> {
    crate::cargo(&["fmt", "--all", "--check"])?;
    crate::cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    // The purity rule for `policy` lives in the integration tests, so CI runs it too.
    crate::cargo(&["test", "--package", "tests", "--test", "e2e", "tidy::"])
}
