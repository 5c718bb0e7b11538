//! `cargo xtask fuzz [CASES]`: the proptest-driven fuzz properties (host canonicalisation, rule
//! parsing, the SOCKS5 handshake, the config loader) with a large case budget (default 100 000
//! each). `cargo test` runs the same properties with a small budget as a smoke run.

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    let cases = args.first().map_or("100000", String::as_str);
    std::env::set_var("LEASH_FUZZ_CASES", cases);
    crate::cargo(&[
        "test",
        "--release",
        "--package",
        "policy",
        "--package",
        "socks-proxy",
        "--package",
        "leash",
        "--lib",
        "fuzz",
    ])
}
