//! `cargo xtask release`: the release build of `leash` that the README and the benchmarks use
//! (`target/release/leash`). `cargo xtask release --order`: regenerates `bin/startup.order`.
//!
//! On x86_64 Linux with glibc and rustc ≥ 1.90 (whose default linker there is lld), the binary is
//! linked differently from a plain `cargo build --release`, for memory at rest and start-up time
//! (issue 18; measured in README "Issue 18"):
//! - statically (a static PIE, still address-randomised): no shared libraries are mapped, found or
//!   relocated at start. glibc's own parts are then those of the build machine, fixed at build
//!   time, as any static binary's are.
//! - with the code a start runs gathered together (`bin/startup.order`, lld's
//!   `--symbol-ordering-file`): the kernel maps a whole page-cache folio on a fault, so start-up
//!   code spread over 9 MB of text kept about 5 MB of never-run code resident.
//!
//! The order names symbols; names that no longer exist are skipped, so a stale order costs memory,
//! never correctness (the bench's `idle_rss` row shows it). Elsewhere, a plain release build.
//! `cargo rustc` passes the flags to the final link only: `crt-static` in `RUSTFLAGS` would reach
//! the proc-macro crates too, which cannot be built with it.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context};

pub(crate) fn run(args: &[String]) -> anyhow::Result<()> {
    match args.first().map(String::as_str) {
        None => build(),
        Some("--order") => write_order(),
        Some(other) => bail!("release: unknown option `{other}` (only --order)"),
    }
}

/// Builds `target/release/leash`, linked as the module comment says where it can be.
pub(crate) fn build() -> anyhow::Result<()> {
    if !tuned_link()? {
        return crate::cargo(&["build", "--release", "--package", "leash", "--bin", "leash"]);
    }
    let order = order_by_content()?;
    let order_arg = format!(
        "link-arg=-Wl,--symbol-ordering-file={}",
        order.to_str().context("a UTF-8 workspace path")?
    );
    let tuned = crate::cargo(&[
        "rustc",
        "--release",
        "--package",
        "leash",
        "--bin",
        "leash",
        "--",
        "-C",
        "target-feature=+crt-static",
        "-C",
        &order_arg,
        "-C",
        "link-arg=-Wl,--no-warn-symbol-ordering",
    ]);
    match tuned {
        Ok(()) => {
            report_stale_order(&order);
            Ok(())
        }
        // A linker of the user's choosing (GNU ld, a configured mold) may not take the order
        // file, and a machine may lack glibc's static libraries: then the ordinary link.
        Err(error) => {
            eprintln!("xtask release: the static, ordered link failed ({error:#}); linking the ordinary way");
            crate::cargo(&["build", "--release", "--package", "leash", "--bin", "leash"])
        }
    }
}

/// Says so when many of the order's names are missing from the binary just linked (dependencies
/// or the toolchain moved on): nothing fails, but start-up code spreads out again and `idle_rss`
/// grows. Without `nm`, says nothing.
fn report_stale_order(order: &Path) {
    let root = match crate::workspace_root() {
        Ok(root) => root,
        Err(_) => return,
    };
    let (Ok(text), Ok(defined)) = (
        std::fs::read_to_string(order),
        nm(&root.join("target/release/leash")),
    ) else {
        return;
    };
    let (missing, total) = missing_from(&text, &functions(&defined));
    // Measured: 52 of 1 521 names gone (one small change to the dialer) took `idle_rss` from
    // 3.8 to 4.6 MB, so more than one in a hundred is worth saying.
    if missing * 100 > total {
        eprintln!(
            "xtask release: {missing} of the {total} functions in bin/startup.order are not in this \
             build; `cargo xtask release --order` records them again (idle memory grows meanwhile)"
        );
    }
}

/// How many of an order file's names are not among `defined`, and how many names it has.
fn missing_from(order: &str, defined: &BTreeSet<&str>) -> (usize, usize) {
    let names: Vec<&str> = order
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let missing = names.iter().filter(|name| !defined.contains(*name)).count();
    (missing, names.len())
}

/// `bin/startup.order`, copied to a path named after its content: cargo relinks when its flags
/// change, and knows nothing of the file they name.
fn order_by_content() -> anyhow::Result<PathBuf> {
    use std::hash::{Hash, Hasher};
    let root = crate::workspace_root()?;
    let text =
        std::fs::read(root.join("bin/startup.order")).context("reading bin/startup.order")?;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    text.hash(&mut hasher);
    let dir = root.join("target/startup-order");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("{:016x}.order", hasher.finish()));
    std::fs::write(&path, text)?;
    Ok(path)
}

/// x86_64 Linux with glibc, and a rustc whose default linker there is lld (1.90 and later).
fn tuned_link() -> anyhow::Result<bool> {
    if !cfg!(all(
        target_arch = "x86_64",
        target_os = "linux",
        target_env = "gnu"
    )) {
        return Ok(false);
    }
    let rustc = std::env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(rustc)
        .arg("--version")
        .output()
        .context("running rustc --version")?;
    let text = String::from_utf8_lossy(&out.stdout);
    let minor = rustc_minor(&text)
        .with_context(|| format!("reading rustc's version from `{}`", text.trim()))?;
    Ok(minor >= 90)
}

/// `95` of `rustc 1.95.0 (59807616e 2026-04-14)`.
fn rustc_minor(version: &str) -> Option<u32> {
    version
        .split_whitespace()
        .nth(1)?
        .split('.')
        .nth(1)?
        .parse()
        .ok()
}

/// Rebuilds, records which functions three starts run (valgrind's callgrind), and writes them to
/// `bin/startup.order`.
fn write_order() -> anyhow::Result<()> {
    build()?;
    let root = crate::workspace_root()?;
    let leash = root.join("target/release/leash");
    let work = root.join("target/startup-order/record");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let config = write_rules_config(&work)?;
    let mut ran = BTreeSet::new();
    // The embedded defaults (admin and SOCKS on), and a policy of many rules both unpinned and on
    // one core (where leash runs a current-thread runtime: other code).
    let starts: [(&str, Vec<String>, bool); 3] = [
        ("defaults", vec!["--ephemeral".into()], false),
        ("rules", vec!["--config".into(), path_arg(&config)?], false),
        (
            "rules-one-core",
            vec!["--config".into(), path_arg(&config)?],
            true,
        ),
    ];
    for (name, args, one_core) in &starts {
        let out = work.join(format!("callgrind.{name}"));
        record_start(&leash, args, *one_core, &work, &out)?;
        ran.extend(functions_run(&out)?);
    }
    let defined = nm(&leash)?;
    let symbols = functions(&defined);
    let ifuncs: BTreeSet<&str> = defined
        .iter()
        .filter(|(kind, _)| *kind == 'i')
        .map(|(_, name)| name.as_str())
        .collect();
    let mut order: Vec<&str> = ran
        .iter()
        .map(String::as_str)
        .filter(|name| symbols.contains(name))
        .collect();
    // Chosen at run time on the machine that runs leash, not valgrind's idea of the CPU: every
    // IFUNC resolver (each runs at start) and glibc's string functions for current CPUs.
    let cpu_specific = ["_evex", "_avx2", "_avx512", "_erms"];
    let extra = symbols.iter().filter(|name| {
        !ran.contains(**name)
            && (ifuncs.contains(**name) || cpu_specific.iter().any(|s| name.contains(s)))
    });
    order.extend(extra);
    let mut text = String::from(
        "# Generated by `cargo xtask release --order`: the functions a start of leash runs, linked\n\
         # together (xtask/src/release.rs says why). Regenerate after dependency or toolchain updates.\n",
    );
    for name in &order {
        text.push_str(name);
        text.push('\n');
    }
    std::fs::write(root.join("bin/startup.order"), text)?;
    println!(
        "bin/startup.order: {} functions; rebuilding with it",
        order.len()
    );
    build()
}

/// A policy with every rule shape, so a start parses and compiles each kind.
fn write_rules_config(dir: &Path) -> anyhow::Result<PathBuf> {
    let rules: Vec<String> = (0..30)
        .map(|i| match i % 5 {
            0 => format!("\"host{i}.order.test\""),
            1 => format!("\"*.wild{i}.order.test\""),
            2 => format!("\"**.tree{i}.order.test:443\""),
            3 => format!("\"10.{i}.0.0/16\""),
            _ => format!("\"192.0.2.{i}:8000-8100\""),
        })
        .collect();
    // The tables a deployed config sets besides the policy: each is its own deserializer.
    let text = format!(
        "mode = \"full\"\n[policy]\nallow = [{}]\ndeny = [\"bad.order.test\"]\n\
         allow_local = [\"127.0.0.1\"]\n[listen]\nephemeral = true\n[admin]\nenabled = false\n\
         [log]\nviolations = {:?}\n[limits]\nmax_connections = 20000\n\
         connect_timeout = \"10s\"\n[dns]\nmax_lookups = 64\n",
        rules.join(", "),
        path_arg(&dir.join("violations.jsonl"))?
    );
    let path = dir.join("rules.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

fn path_arg(path: &Path) -> anyhow::Result<String> {
    Ok(path.to_str().context("a UTF-8 path")?.to_owned())
}

/// One start of `leash proxy ARGS` under callgrind, until its ready record and a moment of rest,
/// then SIGTERM (callgrind writes `out` as leash exits).
fn record_start(
    leash: &Path,
    args: &[String],
    one_core: bool,
    home: &Path,
    out: &Path,
) -> anyhow::Result<()> {
    let mut command = match one_core {
        true => {
            let mut c = Command::new("taskset");
            c.args(["-c", "0", "valgrind"]);
            c
        }
        false => Command::new("valgrind"),
    };
    let ready = home.join("ready.json");
    let _ = std::fs::remove_file(&ready);
    let mut child = command
        .args(["--tool=callgrind", "--demangle=no", "--dump-instr=no"])
        .arg(format!("--callgrind-out-file={}", path_arg(out)?))
        .arg(leash)
        .arg("proxy")
        .args(args)
        .arg("--ready-file")
        .arg(&ready)
        // Never the user's state directory: the admin token and log go here.
        .env("HOME", home)
        .env("XDG_STATE_HOME", home)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("running valgrind (Debian's valgrind package)")?;
    let deadline = Instant::now() + Duration::from_secs(60);
    while !ready.exists() {
        if Instant::now() > deadline || child.try_wait()?.is_some() {
            let _ = child.kill();
            bail!(
                "leash under callgrind did not become ready ({})",
                args.join(" ")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let pid = i32::try_from(child.id())
        .ok()
        .and_then(rustix::process::Pid::from_raw)
        .context("valgrind's process id")?;
    rustix::process::kill_process(pid, rustix::process::Signal::TERM)
        .context("stopping leash under callgrind")?;
    child.wait()?;
    Ok(())
}

/// The (mangled) names of the functions a callgrind profile saw run.
fn functions_run(profile: &Path) -> anyhow::Result<BTreeSet<String>> {
    let text = std::fs::read_to_string(profile)
        .with_context(|| format!("reading {}", profile.display()))?;
    Ok(callgrind_functions(&text))
}

fn callgrind_functions(text: &str) -> BTreeSet<String> {
    // `fn=(12) name` names function 12 the first time; later lines give only `fn=(12)`.
    text.lines()
        .filter_map(|line| {
            line.strip_prefix("fn=")
                .or_else(|| line.strip_prefix("cfn="))
        })
        .filter_map(|rest| {
            rest.split_once(") ")
                .map(|(_, name)| name.trim().to_owned())
        })
        .collect()
}

/// The defined functions among `nm`'s symbols: code (`t`, `T`), weak (`w`, `W`) and IFUNC (`i`).
fn functions(defined: &[(char, String)]) -> BTreeSet<&str> {
    defined
        .iter()
        .filter(|(kind, _)| matches!(kind, 't' | 'T' | 'w' | 'W' | 'i'))
        .map(|(_, name)| name.as_str())
        .collect()
}

fn nm(binary: &Path) -> anyhow::Result<Vec<(char, String)>> {
    let out = Command::new("nm")
        .arg("--defined-only")
        .arg(binary)
        .output()
        .context("running nm (binutils)")?;
    if !out.status.success() {
        bail!("nm {} failed", binary.display());
    }
    let text = String::from_utf8(out.stdout).context("nm's output")?;
    Ok(text
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (_addr, kind, name) = (fields.next()?, fields.next()?, fields.next()?);
            Some((kind.chars().next()?, name.to_owned()))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_profile_names_each_function_once_whether_it_ran_or_was_called() {
        let profile = "events: Ir\nfn=(1) main\n3 10\ncfn=(2) _ZN5leash4main17h0123E\ncalls=1 0\n\
                       fn=(2)\n5 7\ncfn=(3) memcpy\nfn=(1)\nob=(1) /bin/leash\n";
        let names: Vec<String> = callgrind_functions(profile).into_iter().collect();
        assert_eq!(names, ["_ZN5leash4main17h0123E", "main", "memcpy"]);
    }

    #[test]
    fn an_order_counts_the_names_a_build_no_longer_has() {
        let order = "# comment\nmain\n_ZN5leash3old17hdeadE\n\nmemcpy\n";
        let defined: BTreeSet<&str> = ["main", "memcpy", "_ZN5leash3new17hbeefE"].into();
        assert_eq!(missing_from(order, &defined), (1, 3));
        assert_eq!(missing_from("# only a comment\n", &defined), (0, 0));
    }

    #[test]
    fn the_minor_version_is_read_from_rustc() {
        assert_eq!(rustc_minor("rustc 1.95.0 (59807616e 2026-04-14)"), Some(95));
        assert_eq!(
            rustc_minor("rustc 1.89.0-nightly (abc 2025-06-01)"),
            Some(89)
        );
        assert_eq!(rustc_minor("something else"), None);
    }
}
