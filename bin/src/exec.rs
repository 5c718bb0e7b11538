//! `leash exec [flags] -- CMD ARGS…` (SPEC §11): leash in-process on managed listeners with a random
//! token and a fresh attempt id, CMD in the SPEC §12 environment, signals forwarded, CMD's exit
//! status passed on (128+signal when it was killed), and a summary of what was blocked.

use std::{
    collections::BTreeMap,
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::{ExitCode, ExitStatus},
};

use anyhow::Context;
use clap::Args;
use leash::Leash;
use rustix::process::{kill_process, Pid, Signal};
use serde_json::Value;
use tokio::signal::unix::{signal, SignalKind};

use crate::flags::PolicyFlags;

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    policy: PolicyFlags,
    /// Keep the violation log in this file (else it lives in a temporary directory).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Print no summary of what was blocked.
    #[arg(long)]
    quiet: bool,
    /// Do not run the SOCKS5 listener (`ALL_PROXY` then names the HTTP proxy).
    #[arg(long)]
    no_socks: bool,
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) fn run(args: ExecArgs) -> ExitCode {
    match exec(args) {
        Ok(code) => ExitCode::from(code),
        Err(error) => {
            eprintln!("leash: {error:#}");
            ExitCode::from(2)
        }
    }
}

fn exec(args: ExecArgs) -> anyhow::Result<u8> {
    let mut config = args.policy.load()?;
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    config.listen.ephemeral = true;
    config.socks.enabled &= !args.no_socks;
    config.auth.token = random_hex(16)?;
    config.log.violations = args
        .log
        .clone()
        .unwrap_or_else(|| scratch.path().join("violations.jsonl"));
    let attempt = format!("exec-{}", random_hex(4)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let running = Leash::builder().config(config).build()?.run();
        let env = running.env(&attempt);
        let mut child = tokio::process::Command::new(&args.command[0])
            .args(&args.command[1..])
            .envs(env)
            .spawn()
            .with_context(|| format!("cannot run {}", args.command[0]))?;
        let status = wait_forwarding_signals(&mut child).await?;
        let events = running.events(0, usize::MAX);
        running.shutdown().await;
        if !args.quiet {
            eprint!("{}", summary(&attempt, &events));
        }
        Ok(exit_code(status))
    })
}

/// Waits for the child; SIGINT and SIGTERM sent to leash go on to the child, which decides.
async fn wait_forwarding_signals(child: &mut tokio::process::Child) -> anyhow::Result<ExitStatus> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let pid = child.id().and_then(|id| Pid::from_raw(id as i32));
    loop {
        let forwarded = tokio::select! {
            status = child.wait() => return Ok(status?),
            _ = interrupt.recv() => Signal::INT,
            _ = terminate.recv() => Signal::TERM,
        };
        if let Some(pid) = pid {
            let _ = kill_process(pid, forwarded);
        }
    }
}

/// The child's code, or 128 + the signal that killed it (as shells report it).
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => code as u8,
        (None, Some(signal)) => (128 + signal) as u8,
        (None, None) => 1,
    }
}

/// One line per blocked host and reason, with the flag that would allow it where one would.
fn summary(attempt: &str, events: &[Value]) -> String {
    let blocked: Vec<&Value> = events.iter().filter(|e| e["decision"] != "allow").collect();
    if blocked.is_empty() {
        return String::new();
    }
    let mut counts: BTreeMap<(String, u64, String, String), usize> = BTreeMap::new();
    for event in &blocked {
        let text = |key: &str| event[key].as_str().unwrap_or_default().to_owned();
        let key = (
            text("host"),
            event["port"].as_u64().unwrap_or(0),
            text("reason"),
            text("rule"),
        );
        *counts.entry(key).or_default() += 1;
    }
    let mut out = format!(
        "leash: blocked {} request(s) of attempt {attempt}:\n",
        blocked.len()
    );
    for ((host, port, reason, rule), count) in counts {
        let hint = match reason.as_str() {
            "allowlist_miss" => format!("  (allow with --allow {host})"),
            "local_address" => format!("  (allow with --allow-local {host}:{port})"),
            "denylist" => format!("  (denied by rule `{rule}`)"),
            _ => String::new(),
        };
        out += &format!("  {host}:{port}  {reason}  x{count}{hint}\n");
    }
    out
}

/// `n` random bytes as hex, from the kernel.
fn random_hex(n: usize) -> anyhow::Result<String> {
    use std::io::Read;
    let mut bytes = vec![0u8; n];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut bytes))
        .context("reading /dev/urandom")?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn the_summary_counts_by_host_and_reason_and_says_how_to_allow() {
        let events = [
            json!({"decision":"ask","host":"x.test","port":443,"reason":"allowlist_miss","rule":null}),
            json!({"decision":"ask","host":"x.test","port":443,"reason":"allowlist_miss","rule":null}),
            json!({"decision":"deny","host":"evil.test","port":80,"reason":"denylist","rule":"evil.test"}),
            json!({"decision":"deny","host":"127.0.0.1","port":8000,"reason":"local_address","rule":null}),
        ];
        let text = summary("exec-1", &events);
        assert!(
            text.starts_with("leash: blocked 4 request(s) of attempt exec-1:\n"),
            "{text}"
        );
        assert!(
            text.contains("x.test:443  allowlist_miss  x2  (allow with --allow x.test)"),
            "{text}"
        );
        assert!(
            text.contains("evil.test:80  denylist  x1  (denied by rule `evil.test`)"),
            "{text}"
        );
        assert!(
            text.contains(
                "127.0.0.1:8000  local_address  x1  (allow with --allow-local 127.0.0.1:8000)"
            ),
            "{text}"
        );
        assert_eq!(summary("exec-1", &[]), "");
    }

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }
}
