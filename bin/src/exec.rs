//! `leash exec [flags] -- CMD ARGS…` (SPEC §11, §19): leash in-process on managed listeners with a
//! random token and a fresh attempt id, CMD in the SPEC §12 environment, signals forwarded, CMD's
//! exit status passed on (128+signal when it was killed), and a summary of what was blocked.
//!
//! The command is the adversary here: it gets no admin API unless `--admin` (and then never the
//! token), and no say in the configuration (never `./leash.toml`, which it could have written).

use std::{
    os::unix::process::ExitStatusExt,
    path::PathBuf,
    process::{ExitCode, ExitStatus},
};

use anyhow::{bail, Context};
use clap::Args;
use leash::{Config, Leash, Listener};
use rustix::process::{kill_process, Pid, Signal};
use tokio::signal::unix::{signal, SignalKind};

use crate::{
    flags::PolicyFlags,
    prompt::{self, InProcess, Opened, Terminal},
};

/// The variable `--admin` takes the admin API's token from; never passed on to the command.
const ADMIN_TOKEN_VAR: &str = "LEASH_ADMIN_TOKEN";

#[derive(Debug, Args)]
pub(crate) struct ExecArgs {
    #[command(flatten)]
    policy: PolicyFlags,
    /// Keep the violation log in this file (else it lives in a temporary directory).
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Print neither the config line nor the summary of what was blocked.
    #[arg(long)]
    quiet: bool,
    /// Do not run the SOCKS5 listener (`ALL_PROXY` then names the HTTP proxy).
    #[arg(long)]
    no_socks: bool,
    /// Run the admin API, with the bearer token from $LEASH_ADMIN_TOKEN (which the command
    /// does not get; a token from a file is refused, since the command could read the file).
    #[arg(long)]
    admin: bool,
    /// Run the command in its own user and network namespaces (Linux) whose only way out is
    /// leash: programs that ignore the proxy variables reach nothing.
    #[arg(long)]
    isolate: bool,
    /// Ask on this terminal (`/dev/tty`, not the command's stdin/stdout) about each request the
    /// policy asks about, while the request waits; refused when there is no terminal.
    #[arg(long)]
    ask: bool,
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

/// Where `leash exec` reads its configuration: `--config`, `$LEASH_CONFIG`, or the user's own
/// file — never the working directory, which the command may control.
fn locate_config(flag: Option<&std::path::Path>) -> Option<(PathBuf, &'static str)> {
    if let Some(path) = flag {
        return Some((path.to_owned(), "--config"));
    }
    if let Some(path) = std::env::var_os("LEASH_CONFIG").filter(|p| !p.is_empty()) {
        return Some((PathBuf::from(path), "$LEASH_CONFIG"));
    }
    let var = |name: &str| {
        std::env::var_os(name)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let user = var("XDG_CONFIG_HOME")
        .or_else(|| var("HOME").map(|home| home.join(".config")))?
        .join("leash/leash.toml");
    user.is_file().then_some((user, "the user's config"))
}

fn load_config(args: &ExecArgs) -> anyhow::Result<Config> {
    let located = locate_config(args.policy.config_flag());
    if !args.quiet {
        match &located {
            Some((path, source)) => eprintln!("leash: config {} ({source})", path.display()),
            None => eprintln!("leash: no config file; embedded defaults"),
        }
    }
    let mut config = match &located {
        Some((path, _)) => Config::load(path)?,
        None => Config::default(),
    };
    // `always` answers live beside the config file exec used (SPEC §14), and a relative
    // `ask.approvals` is taken from there, as for `leash proxy` with that file — never from the
    // working directory, which the command may control. Without a file: the state directory.
    if let Some((path, _)) = &located {
        let dir = path.parent().unwrap_or(std::path::Path::new("."));
        config.ask.approvals = Some(match config.ask.approvals.take() {
            Some(file) => dir.join(file),
            None => dir.join("leash-approvals.toml"),
        });
    }
    args.policy.apply_to(config)
}

fn exec(args: ExecArgs) -> anyhow::Result<u8> {
    // Same-user processes (the command among them) may not read this one's memory or
    // `/proc/PID/environ`, where the admin and proxy tokens live.
    #[cfg(target_os = "linux")]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .context("making leash's memory private")?;
    let mut config = load_config(&args)?;
    // Before anything runs: without a terminal to ask on, `--ask` would hold requests for nobody.
    let terminal = match args.ask {
        true => Some(Terminal::open().context("--ask asks on the terminal, and there is none")?),
        false => None,
    };
    let scratch = tempfile::tempdir().context("creating a temporary directory")?;
    config.listen.ephemeral = true;
    config.socks.enabled &= !args.no_socks;
    // The command's attempt is bound (SPEC §18): its id cannot be forged by anything else that
    // reaches the proxy, and the command cannot claim another attempt's id.
    config.auth.attempts = leash::AttemptsMode::Bound;
    config.auth.token = leash::random_hex(16)?;
    config.admin.enabled = args.admin;
    if args.admin {
        config.admin.token = admin_token()?;
    }
    config.log.violations = args
        .log
        .clone()
        .unwrap_or_else(|| scratch.path().join("violations.jsonl"));
    let attempt = format!("exec-{}", leash::random_hex(4)?);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut running = Leash::builder().config(config).build()?.run();
        if let (Some(admin), false) = (running.addrs().admin, args.quiet) {
            eprintln!("leash: admin API on http://{admin} (bearer token: ${ADMIN_TOKEN_VAR})");
        }
        let leash_bin = std::env::current_exe().ok();
        let request = leash::AttemptRequest {
            id: Some(attempt.clone()),
            ..Default::default()
        };
        let env = running
            .bind_attempt(&request, leash_bin.as_deref())
            .context("binding the command's attempt")?
            .env;
        let mut opened = Opened::default();
        let prompt = terminal.map(|terminal| {
            let approvals = InProcess::new(running.approver());
            opened = approvals.opened();
            tokio::spawn(async move {
                if let Err(error) = prompt::run(terminal, approvals).await {
                    eprintln!("leash: no more questions on the terminal: {error:#}");
                }
            })
        });
        let command = detached_with(args.ask, leash_bin.as_deref(), &args.command)?;
        let child = match args.isolate {
            true => spawn_isolated(&mut running, scratch.path(), &command, env).await?,
            false => spawn(&command, env)?,
        };
        let status = match child {
            Ok(mut child) => exit_code(wait_forwarding_signals(&mut child).await?),
            Err(code) => code,
        };
        if let Some(prompt) = prompt {
            // Ends the question shown, if any, which puts the terminal's mode back.
            prompt.abort();
            let _ = prompt.await;
        }
        let mut events = running.events(0, usize::MAX);
        // An item's opening line is not a block: its requests' ends are logged one by one.
        let opened = opened.lock().unwrap_or_else(|p| p.into_inner()).clone();
        events.retain(|e| e["seq"].as_u64().is_none_or(|seq| !opened.contains(&seq)));
        running.shutdown().await;
        if !args.quiet {
            eprint!("{}", crate::hints::summary(&attempt, &events));
        }
        Ok(status)
    })
}

/// The admin API's token for `--admin`: from `$LEASH_ADMIN_TOKEN` only. A generated one would have
/// to be written somewhere, and the config file (like any file of the user's) is readable by the
/// command; the variable is withheld from it, and leash's memory is not dumpable.
fn admin_token() -> anyhow::Result<String> {
    match std::env::var(ADMIN_TOKEN_VAR)
        .ok()
        .filter(|t| !t.is_empty())
    {
        Some(token) if token == leash::NO_ADMIN_TOKEN => {
            bail!("--admin never runs without a token: the command could change the policy")
        }
        Some(token) => Ok(token),
        None => bail!(
            "--admin needs a token in ${ADMIN_TOKEN_VAR}: a token in a file (the config \
             included) could be read by the command"
        ),
    }
}

/// The command as started: with `--ask`, through `leash __detach`, so it has no controlling
/// terminal and cannot type answers into the one leash asks on (see `detach.rs`).
fn detached_with(
    ask: bool,
    leash_bin: Option<&std::path::Path>,
    command: &[String],
) -> anyhow::Result<Vec<String>> {
    if !ask {
        return Ok(command.to_vec());
    }
    let Some(leash) = leash_bin.and_then(|p| p.to_str()) else {
        bail!("--ask needs leash's own path to start the command off the terminal");
    };
    let helper = [leash, crate::detach::HELPER, "--"].map(str::to_owned);
    Ok(helper.into_iter().chain(command.iter().cloned()).collect())
}

/// The command, or the shell's exit code when it cannot run (127 not found, 126 not runnable).
type Started = Result<tokio::process::Child, u8>;

fn spawn(command: &[String], env: Vec<(String, String)>) -> anyhow::Result<Started> {
    let spawned = tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .env_remove(ADMIN_TOKEN_VAR)
        .envs(env)
        .spawn();
    Ok(spawned.map_err(|error| cannot_run_code(&command[0], &error)))
}

#[cfg(target_os = "linux")]
async fn spawn_isolated(
    running: &mut leash::Running,
    scratch: &std::path::Path,
    command: &[String],
    env: Vec<(String, String)>,
) -> anyhow::Result<Started> {
    let addrs = running.addrs();
    let bridged: Vec<(Listener, u16)> =
        [(Listener::Http, addrs.http), (Listener::Socks, addrs.socks)]
            .into_iter()
            .filter_map(|(kind, addr)| addr.map(|a| (kind, a.port())))
            .collect();
    let ports: Vec<u16> = bridged.iter().map(|(_, port)| *port).collect();
    let mut handover =
        crate::isolate::spawn(scratch, command, env, &ports, ADMIN_TOKEN_VAR).await?;
    for ((kind, _), listener) in bridged.into_iter().zip(handover.listeners.drain(..)) {
        running.serve(kind, listener);
    }
    Ok(Ok(handover.release()?))
}

#[cfg(not(target_os = "linux"))]
async fn spawn_isolated(
    _: &mut leash::Running,
    _: &std::path::Path,
    _: &[String],
    _: Vec<(String, String)>,
) -> anyhow::Result<Started> {
    bail!("--isolate needs Linux (user and network namespaces)")
}

/// Says why `program` cannot run; the exit code a shell would give.
fn cannot_run_code(program: &str, error: &std::io::Error) -> u8 {
    eprintln!("leash: cannot run {program}: {error}");
    match error.kind() {
        std::io::ErrorKind::NotFound => 127,
        _ => 126,
    }
}

/// `cannot_run_code` for a process that ends right after.
pub(crate) fn cannot_run(program: &str, error: &std::io::Error) -> ExitCode {
    ExitCode::from(cannot_run_code(program, error))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_follow_the_shell() {
        assert_eq!(exit_code(ExitStatus::from_raw(7 << 8)), 7);
        assert_eq!(exit_code(ExitStatus::from_raw(15)), 143);
    }
}
