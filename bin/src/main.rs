//! The `leash` command line (SPEC §11). Each subcommand lives in its own module; this file only
//! parses arguments and maps outcomes to the stable exit codes.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod admin_call;
mod approve;
mod ca;
mod check;
mod config_check;
mod connect;
mod detach;
mod env_cmd;
mod exec;
mod flags;
mod hints;
#[cfg(target_os = "linux")]
mod isolate;
mod prompt;
mod proxy;

/// leash: a local network-policy proxy for sandboxed programs.
#[derive(Debug, Parser)]
#[command(name = "leash", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the proxies until SIGINT or SIGTERM.
    Proxy(proxy::ProxyArgs),
    /// Run a command with its network going through leash; print what was blocked.
    Exec(exec::ExecArgs),
    /// Print the proxy environment for a running leash.
    Env(env_cmd::EnvArgs),
    /// Answer a running proxy's asks on this terminal, one key per request.
    Approve(approve::ApproveArgs),
    /// Relay stdin/stdout to HOST:PORT through a running leash (for ssh's ProxyCommand).
    Connect(connect::ConnectArgs),
    /// Internal: the namespace helper of `leash exec --isolate`.
    #[cfg(target_os = "linux")]
    #[command(name = "__isolate", hide = true)]
    Isolate(isolate::HelperArgs),
    /// Internal: runs a command without a controlling terminal (`leash exec --ask`).
    #[command(name = "__detach", hide = true)]
    Detach(detach::DetachArgs),
    /// Decide a target offline with its trace (policy only, no network).
    Check(check::CheckArgs),
    /// Work with configuration files.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Manage the MITM certificate authority.
    Ca(ca::CaArgs),
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Parse and lint a config file; warnings go to stderr.
    Check(config_check::ConfigCheckArgs),
}

/// Exit codes are part of the CLI contract.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Exit {
    /// Allowed, or the command succeeded.
    Ok = 0,
    /// Blocked (`ask` or `deny`), or the checked file is invalid.
    Refused = 1,
    /// Usage or configuration error.
    Usage = 2,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_diagnostics();
    raise_file_limit();
    let exit = match cli.command {
        Command::Exec(args) => return exec::run(args),
        Command::Detach(args) => return detach::run(args),
        #[cfg(target_os = "linux")]
        Command::Isolate(args) => return isolate::helper(args),
        Command::Env(args) => env_cmd::run(args),
        Command::Proxy(args) => proxy::run(args),
        Command::Approve(args) => approve::run(args),
        Command::Connect(args) => connect::run(args),
        Command::Check(args) => check::run(args),
        Command::Config(ConfigCommand::Check(args)) => config_check::run(args),
        Command::Ca(args) => ca::run(args),
    };
    ExitCode::from(exit as u8)
}

/// A proxy holds two descriptors per connection: the soft limit (often 1024) is raised to the
/// hard one, so `limits.max_connections` is what limits connections.
fn raise_file_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let raised = Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        if let Err(error) = setrlimit(Resource::Nofile, raised) {
            tracing::debug!(%error, "could not raise the open-file limit");
        }
    }
}

/// Diagnostics (not the violation log) go to stderr, filtered by `LEASH_LOG` (default `warn`).
fn init_diagnostics() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("LEASH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
}
