//! The end-to-end load generator behind `cargo xtask bench` (issue 9): a local origin, a `leash
//! proxy` child with a realistic policy, and each workload measured through leash and directly
//! against the origin in the same run. It reports; it never passes or fails anything.
//!
//! `loadgen --leash PATH [--leash-core N] [--loadgen-core M] [--quick] [--out FILE]`: with
//! `--leash-core`, leash runs pinned to core N (spawned from a thread pinned there), apart from
//! this process and its origin, which the caller pinned to core M (`--loadgen-core` only says
//! which). `--only a,b` runs only the named workloads (startup and idle_rss always run). Row names
//! that carry a size (`rss_tunnel_10k`, `startup_100k_rules`, ...) are named after the size of the run, smaller in
//! `--quick`; `--only` takes either name.
//!
//! `loadgen --bare-relay [--forward ADDR]` is the bench's own child, the yardstick that stands in
//! for leash in `bare_connect_rate` and `bare_forward_rate` (`bare.rs`).

mod bare;
mod origin;
mod proc;
mod tls;
mod websocket;
mod workloads;

use std::{path::PathBuf, time::Duration};

use anyhow::{bail, Context};

/// How long and how much each workload runs.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Scale {
    /// `--quick`: a smoke run, whose sized rows are named after their smaller sizes.
    pub(crate) quick: bool,
    pub(crate) duration: Duration,
    pub(crate) bulk_bytes: usize,
    pub(crate) idle_connections: usize,
    /// Idle CONNECT tunnels held open at once by `rss_tunnel`.
    pub(crate) tunnels: usize,
    /// Policy rules in the large config of `startup_*_rules`.
    pub(crate) rules: usize,
    /// Our open-file limit (leash inherits it): `rss_tunnel` opens no more tunnels than it allows.
    pub(crate) file_limit: u64,
    /// The core leash is pinned to, if any.
    pub(crate) leash_core: Option<usize>,
    /// The one core this process and its origins run on, if `cargo xtask bench` pinned them.
    pub(crate) loadgen_core: Option<usize>,
    /// Only these workloads (comma-separated names), for profiling one at a time.
    pub(crate) only: Option<&'static str>,
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let value = |flag: &str| {
        args.iter()
            .position(|a| a == flag)
            .and_then(|i| args.get(i + 1))
            .cloned()
    };
    if args.first().map(String::as_str) == Some("--bare-relay") {
        let forward_to = match value("--forward") {
            Some(addr) => Some(addr.parse().context("--forward takes an address")?),
            None => None,
        };
        return bare::run(forward_to);
    }
    let Some(leash) = value("--leash").map(PathBuf::from) else {
        bail!("usage: loadgen --leash PATH [--leash-core N] [--loadgen-core M] [--quick] [--out FILE]")
    };
    let quick = args.iter().any(|a| a == "--quick");
    let out = value("--out")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/bench/results.json"));
    let core = |flag: &str| -> anyhow::Result<Option<usize>> {
        value(flag)
            .map(|core| {
                core.parse()
                    .with_context(|| format!("{flag} takes a core number"))
            })
            .transpose()
    };
    let (leash_core, loadgen_core) = (core("--leash-core")?, core("--loadgen-core")?);
    let only: Option<&'static str> = value("--only").map(|o| &*o.leak());
    let file_limit = proc::raise_file_limit();
    let scale = match quick {
        true => Scale {
            quick,
            duration: Duration::from_millis(300),
            bulk_bytes: 4 << 20,
            idle_connections: 500,
            tunnels: 500,
            rules: 10_000,
            file_limit,
            leash_core,
            loadgen_core,
            only,
        },
        false => Scale {
            quick,
            duration: Duration::from_secs(3),
            bulk_bytes: 100 << 20,
            idle_connections: 5000,
            tunnels: 10_000,
            rules: 100_000,
            file_limit,
            leash_core,
            loadgen_core,
            only,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("runtime")?;
    let rows = runtime.block_on(workloads::run_all(&leash, scale))?;
    print!("{}", workloads::table(&rows));
    if let Some(dir) = out.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let json = serde_json::json!({ "quick": quick, "leash_core": leash_core, "loadgen_cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1), "rows": rows.iter().map(workloads::Row::json).collect::<Vec<_>>() });
    std::fs::write(&out, serde_json::to_string_pretty(&json)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("written to {}", out.display());
    Ok(())
}
