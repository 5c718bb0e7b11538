//! The hints of `leash exec`'s summary, followed as a person would follow them: a real block, the
//! flags the summary prints for it, the same command again with those flags added, and the block
//! gone. Every reason whose hint carries a flag is covered here with local origins only: no test
//! touches the network (a name that resolves to a local address comes from /etc/hosts, read-only).
//!
//! What this file cannot do through the binary: a name that resolves to a *public* address, or to a
//! private one other than loopback (the binary takes no test resolver). `bin/src/hints/tests.rs`
//! covers those hints against the same flag parser and policy.

use std::{net::IpAddr, path::Path, process::Command};

use tests::{leash, leash_bin, stderr, stdout, Origin, TestCa};

/// One `leash exec` run: its output and the violation log it wrote (allowed decisions included).
struct Run {
    out: std::process::Output,
    lines: Vec<serde_json::Value>,
}

impl Run {
    /// `leash exec --config FILE --log LOG FLAGS -- COMMAND` in `dir`; `config` is the file's text.
    fn exec(dir: &Path, config: &str, flags: &[String], command: &[&str]) -> Run {
        let file = dir.join("leash.toml");
        std::fs::write(&file, config).unwrap();
        let log = dir.join("log.jsonl");
        let _ = std::fs::remove_file(&log);
        let out = Command::new(leash_bin())
            .current_dir(dir)
            .env_remove("LEASH_CONFIG")
            .args(["exec", "--config", file.to_str().unwrap()])
            .args(["--log", log.to_str().unwrap()])
            .args(flags)
            .arg("--")
            .args(command)
            .output()
            .expect("leash exec runs");
        let lines = std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("JSON line"))
            .collect();
        Run { out, lines }
    }

    /// The log lines for `host` refused with `reason`.
    fn blocks(&self, host: &str, reason: &str) -> Vec<&serde_json::Value> {
        self.lines
            .iter()
            .filter(|l| l["host"] == host && l["reason"] == reason)
            .collect()
    }

    fn allowed(&self, host: &str) -> bool {
        self.lines
            .iter()
            .any(|l| l["host"] == host && l["decision"] == "allow")
    }

    /// The entry of the summary for `subject` (`host:port`) and `reason`: its lines, the first one
    /// included.
    fn entry(&self, subject: &str, reason: &str) -> Vec<String> {
        let err = stderr(&self.out);
        let head = format!("  {subject}  {reason}  x");
        let mut lines = err.lines().skip_while(|l| !l.starts_with(&head));
        let first = lines
            .next()
            .unwrap_or_else(|| panic!("no summary entry {head:?}:\n{err}"));
        std::iter::once(first)
            .chain(lines.take_while(|l| l.starts_with("    ")))
            .map(str::to_owned)
            .collect()
    }

    /// The flags the summary's hint for `subject` and `reason` prints.
    fn hint(&self, subject: &str, reason: &str) -> Vec<String> {
        let entry = self.entry(subject, reason);
        let flags = entry
            .iter()
            .find_map(|l| l.trim_start().strip_prefix("to allow: "))
            .unwrap_or_else(|| panic!("no flags in the hint: {entry:#?}"));
        flags.split_whitespace().map(str::to_owned).collect()
    }
}

/// Runs `command` with `flags`, which leave `host` refused with `reason`; takes the summary's hint
/// and runs again with it added. Asserts that leash accepted the flags (the child ran and was
/// logged) and that the block is gone; returns the flags with the hint and the second run.
fn follow(
    dir: &Path,
    config: &str,
    flags: &[String],
    command: &[&str],
    (host, port, reason): (&str, u16, &str),
) -> (Vec<String>, Run) {
    let before = Run::exec(dir, config, flags, command);
    assert!(
        !before.blocks(host, reason).is_empty(),
        "{host} {reason} is not blocked: {:#?}\n{}",
        before.lines,
        stderr(&before.out)
    );
    let subject = match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    };
    let hint = before.hint(&subject, reason);
    let flags: Vec<String> = flags.iter().chain(&hint).cloned().collect();
    let after = Run::exec(dir, config, &flags, command);
    // Refused flags end leash before the command runs (exit 2): nothing would be logged.
    assert!(
        !after.lines.is_empty(),
        "leash refused {flags:?}: {}",
        stderr(&after.out)
    );
    assert!(
        after.blocks(host, reason).is_empty(),
        "{flags:?} still block {host} with {reason}: {:#?}",
        after.lines
    );
    (flags, after)
}

/// A config file's text: `top` keys, allowed decisions logged, then `tables`.
fn config(top: &str, tables: &str) -> String {
    format!("{top}\n[log]\nlog_allowed = true\n{tables}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_literals_and_localhost_get_an_allow_local_that_opens_them() {
    let dir = tempfile::tempdir().unwrap();
    let v4 = Origin::http().await;
    let v6 = Origin::http_on("[::1]:0").await;
    let cases = [
        (
            "127.0.0.1",
            v4.port(),
            format!("http://127.0.0.1:{}/", v4.port()),
        ),
        ("::1", v6.port(), format!("http://[::1]:{}/", v6.port())),
        (
            "localhost",
            v4.port(),
            format!("http://localhost:{}/", v4.port()),
        ),
    ];
    for (host, port, url) in cases {
        let command = ["curl", "-sSg", url.as_str()];
        let (flags, after) = follow(
            dir.path(),
            &config("", ""),
            &[],
            &command,
            (host, port, "local_address"),
        );
        assert!(after.allowed(host), "{flags:?}: {:#?}", after.lines);
        if host != "localhost" {
            assert_eq!(
                flags,
                [
                    "--allow-local".to_owned(),
                    format!("{}:{port}", bracket(host))
                ]
            );
            assert_eq!(stdout(&after.out).trim(), "hello from origin", "{flags:?}");
        }
    }
}

fn bracket(host: &str) -> String {
    match host.contains(':') {
        true => format!("[{host}]"),
        false => host.to_owned(),
    }
}

/// A name from /etc/hosts that is no local name but resolves to loopback only, as a name on the
/// network could resolve to a private address: `None` when this machine has none.
fn loopback_name_from_hosts() -> Option<(String, Vec<IpAddr>)> {
    use std::net::ToSocketAddrs;
    let hosts = std::fs::read_to_string("/etc/hosts").ok()?;
    let names = hosts
        .lines()
        .map(|l| l.split('#').next().unwrap_or_default())
        .flat_map(|l| {
            l.split_whitespace()
                .skip(1)
                .map(str::to_owned)
                .collect::<Vec<_>>()
        });
    names
        .filter(|n| {
            let lower = n.to_ascii_lowercase();
            !(lower == "localhost"
                || lower.ends_with(".localhost")
                || lower == "localhost.localdomain")
                && lower
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        })
        .find_map(|name| {
            let addrs: Vec<IpAddr> = (name.as_str(), 0)
                .to_socket_addrs()
                .ok()?
                .map(|a| a.ip())
                .collect();
            let loopback = !addrs.is_empty() && addrs.iter().all(|a| a.is_loopback());
            loopback.then(|| (name.to_ascii_lowercase(), addrs))
        })
}

/// allowlist_miss → `--allow NAME`; then the name resolves to a local address after DNS →
/// the addresses shown and `--allow-local ADDR:PORT`; then the origin answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_resolves_to_a_local_address_follows_its_hints_to_the_origin() {
    let Some((name, addrs)) = loopback_name_from_hosts() else {
        eprintln!("skipped: /etc/hosts names no loopback address under another name");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let origin = Origin::http_on(&format!("{}:0", bracket(&addrs[0].to_string()))).await;
    let port = origin.port();
    let url = format!("http://{name}:{port}/");
    let command = ["curl", "-sS", url.as_str()];
    let config = config("", "");
    let (flags, run) = follow(
        dir.path(),
        &config,
        &[],
        &command,
        (&name, port, "allowlist_miss"),
    );
    assert_eq!(flags, ["--allow".to_owned(), name.clone()]);
    let refused = run.blocks(&name, "local_address");
    assert!(!refused.is_empty(), "refused after DNS: {:#?}", run.lines);
    let entry = run
        .entry(&format!("{name}:{port}"), "local_address")
        .join("\n");
    assert!(entry.contains(&format!("{name} → ")), "{entry}");
    assert!(entry.contains("(not public)"), "{entry}");
    assert!(!entry.contains(&format!("--allow-local {name}")), "{entry}");
    let (flags, run) = follow(
        dir.path(),
        &config,
        &flags,
        &command,
        (&name, port, "local_address"),
    );
    assert!(
        flags.iter().all(|f| f.parse::<IpAddr>().is_err()),
        "allow_local names address and port: {flags:?}"
    );
    assert_eq!(stdout(&run.out).trim(), "hello from origin", "{flags:?}");
    assert!(run.lines.iter().all(|l| l["decision"] == "allow"));
}

/// The same hint without /etc/hosts: leash accepts `--allow-local ADDR:PORT` for a name and
/// refuses `--allow-local NAME:PORT` (exit 2), which is why the summary never prints the latter.
#[test]
fn an_allow_local_address_is_accepted_where_a_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let ok = leash(
        dir.path(),
        &[
            "check",
            "pypi.org",
            "--allow",
            "pypi.org",
            "--allow-local",
            "203.0.113.80:443",
        ],
    );
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    let refused = leash(
        dir.path(),
        &[
            "check",
            "pypi.org",
            "--allow",
            "pypi.org",
            "--allow-local",
            "pypi.org:443",
        ],
    );
    assert_eq!(refused.status.code(), Some(2), "{}", stdout(&refused));
}

/// allowlist_miss without DNS: in limited mode a CONNECT to an allowed name stops at the mode
/// step (`mitm_required`) before any lookup, so the allowlist hint is followed offline.
#[test]
fn an_allowlist_miss_gets_an_allow_that_passes_the_allowlist() {
    let dir = tempfile::tempdir().unwrap();
    let config = config("mode = \"limited\"", "");
    let command = ["curl", "-sS", "https://hints.invalid/"];
    let (flags, run) = follow(
        dir.path(),
        &config,
        &[],
        &command,
        ("hints.invalid", 443, "allowlist_miss"),
    );
    assert_eq!(flags, ["--allow", "hints.invalid"]);
    assert_eq!(run.blocks("hints.invalid", "mitm_required").len(), 1);
}

/// Limited mode: `mitm_required` → `--mitm`; `method_not_allowed` → `--mode full`;
/// `protocol_not_allowed` → `--mode full` for SOCKS5 to another port, `--mitm` for port 443.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_blocks_get_the_flag_that_lifts_them() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("origin CA");
    let ca_file = dir.path().join("origin-ca.pem");
    ca.write_pem(&ca_file);
    let plain = Origin::http().await;
    let secure =
        Origin::https(ca.server_config(&["localhost"], &["127.0.0.1".parse().unwrap()])).await;
    let mitm = format!(
        "[mitm]\nca_dir = {:?}\nupstream_ca = [{:?}]\n",
        dir.path().join("ca").to_str().unwrap(),
        ca_file.to_str().unwrap()
    );
    let config = config("mode = \"limited\"", &mitm);
    let open = |port: u16| vec!["--allow-local".to_owned(), format!("127.0.0.1:{port}")];

    let https_url = format!("https://127.0.0.1:{}/", secure.port());
    let (flags, run) = follow(
        dir.path(),
        &config,
        &open(secure.port()),
        &["curl", "-sS", &https_url],
        ("127.0.0.1", secure.port(), "mitm_required"),
    );
    assert_eq!(flags.last().map(String::as_str), Some("--mitm"));
    assert_eq!(
        stdout(&run.out).trim(),
        "hello from origin",
        "{}",
        stderr(&run.out)
    );

    let upload = format!("http://127.0.0.1:{}/upload", plain.port());
    let (flags, run) = follow(
        dir.path(),
        &config,
        &open(plain.port()),
        &["curl", "-sS", "-X", "POST", "-d", "x", &upload],
        ("127.0.0.1", plain.port(), "method_not_allowed"),
    );
    assert_eq!(flags[flags.len() - 2..], ["--mode", "full"]);
    assert_eq!(stdout(&run.out).trim(), "hello from origin");
    let entry = Run::exec(
        dir.path(),
        &config,
        &open(plain.port()),
        &["curl", "-sS", "-d", "x", &upload],
    )
    .entry(&format!("127.0.0.1:{}", plain.port()), "method_not_allowed")
    .join("\n");
    assert!(
        entry.contains("POST /upload is refused in limited mode"),
        "{entry}"
    );

    let http_url = format!("http://127.0.0.1:{}/", plain.port());
    let socks = |url: &str| -> Vec<String> {
        [
            "env",
            "-u",
            "HTTP_PROXY",
            "-u",
            "http_proxy",
            "-u",
            "HTTPS_PROXY",
            "-u",
            "https_proxy",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .chain(["curl".to_owned(), "-sS".to_owned(), url.to_owned()])
        .collect()
    };
    let command = socks(&http_url);
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let (flags, run) = follow(
        dir.path(),
        &config,
        &open(plain.port()),
        &command,
        ("127.0.0.1", plain.port(), "protocol_not_allowed"),
    );
    assert_eq!(flags[flags.len() - 2..], ["--mode", "full"]);
    assert_eq!(stdout(&run.out).trim(), "hello from origin");

    // Port 443: nothing needs to listen there, the decision is made (and logged) before any dial.
    let command = socks("https://127.0.0.1/");
    let command: Vec<&str> = command.iter().map(String::as_str).collect();
    let (flags, run) = follow(
        dir.path(),
        &config,
        &open(443),
        &command,
        ("127.0.0.1", 443, "protocol_not_allowed"),
    );
    assert_eq!(flags.last().map(String::as_str), Some("--mitm"));
    assert!(
        run.lines
            .iter()
            .any(|l| l["protocol"] == "socks5" && l["decision"] == "allow"),
        "{:#?}",
        run.lines
    );
}

/// A deny rule gets no flag: the hint says that none loosens it.
#[test]
fn a_deny_rule_gets_no_flag() {
    let dir = tempfile::tempdir().unwrap();
    let run = Run::exec(
        dir.path(),
        &config("", ""),
        &["--deny".to_owned(), "denied.test".to_owned()],
        &["curl", "-sS", "http://denied.test/"],
    );
    let entry = run.entry("denied.test:80", "denylist").join("\n");
    assert!(
        entry.contains("denied by rule `denied.test`: no flag loosens a deny rule"),
        "{entry}"
    );
    assert!(!entry.contains("to allow:"), "{entry}");
}
