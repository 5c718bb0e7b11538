//! `leash proxy`: run the proxies until SIGINT or SIGTERM, then stop accepting, drain, flush the
//! log and exit 0 (SPEC §11).

use std::{io::Write, path::PathBuf, sync::Arc};

use anyhow::Context;
use clap::Args;
use leash::{Config, ConfigOverlay, DeciderAddr, Leash};

use crate::{flags::PolicyFlags, Exit};

#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    #[command(flatten)]
    policy: PolicyFlags,
    /// Bind 127.0.0.1:0 for every listener (managed mode).
    #[arg(long)]
    ephemeral: bool,
    /// Do not run the SOCKS5 listener.
    #[arg(long)]
    no_socks: bool,
    /// The violation log file.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// Require this proxy password from clients.
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// Also write the ready record to this file (atomically).
    #[arg(long, value_name = "FILE")]
    ready_file: Option<PathBuf>,
    /// A decider program that answers asks (SPEC §14): `unix:PATH` (leash connects to it, and
    /// reconnects) or `fd:N` (an inherited, connected unix socket). Overrides `ask.decider`.
    #[arg(long, value_name = "unix:PATH|fd:N")]
    decider: Option<DeciderAddr>,
}

pub(crate) fn run(args: ProxyArgs) -> Exit {
    match serve(args) {
        Ok(()) => Exit::Ok,
        Err(error) => {
            eprintln!("leash: {error:#}");
            Exit::Usage
        }
    }
}

/// The flags that override the file beside the policy flags; re-applied on every reload, so
/// `/config` keeps showing what is in force.
#[derive(Clone, Debug)]
struct Overrides {
    ephemeral: bool,
    no_socks: bool,
    log: Option<PathBuf>,
    token: Option<String>,
    decider: Option<DeciderAddr>,
}

impl Overrides {
    fn apply(&self, config: &mut Config) {
        config.listen.ephemeral |= self.ephemeral;
        config.socks.enabled &= !self.no_socks;
        if let Some(log) = &self.log {
            config.log.violations = log.clone();
        }
        if let Some(token) = &self.token {
            config.auth.token = token.clone();
        }
        if let Some(decider) = &self.decider {
            config.ask.decider = Some(decider.clone());
        }
    }
}

fn serve(args: ProxyArgs) -> anyhow::Result<()> {
    let overrides = Overrides {
        ephemeral: args.ephemeral,
        no_socks: args.no_socks,
        log: args.log.clone(),
        token: args.token.clone(),
        decider: args.decider.clone(),
    };
    let mut config = args.policy.load()?;
    overrides.apply(&mut config);
    let flags = args.policy.overlay();
    let overlay: ConfigOverlay = Arc::new(move |config: &mut Config| {
        flags(config)?;
        overrides.apply(config);
        Ok(())
    });
    let runtime = runtime().context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut builder = Leash::builder().config(config).reload_overlay(overlay);
        if let Some(file) = args.policy.file() {
            builder = builder.config_file(file);
        }
        let built = builder.build()?;
        let ready = built.ready_record();
        if let Some(path) = &args.ready_file {
            ready
                .write_file(path)
                .with_context(|| format!("writing the ready file {}", path.display()))?;
        }
        let running = built.run();
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "{}", ready.to_line())?;
        stdout.flush()?;
        drop(stdout);
        wait_for_signal().await?;
        tracing::info!("shutting down");
        running.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    tokio::select! {
        _ = terminate.recv() => {}
        _ = interrupt.recv() => {}
    }
    Ok(())
}

/// A runtime sized to the cores leash may run on (its CPU affinity): one worker thread per core,
/// and on a single core a current-thread runtime, which skips the work-stealing machinery that
/// only costs there.
fn runtime() -> std::io::Result<tokio::runtime::Runtime> {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut builder = match cores {
        1 => tokio::runtime::Builder::new_current_thread(),
        _ => tokio::runtime::Builder::new_multi_thread(),
    };
    builder.enable_all().thread_name("leash").build()
}
