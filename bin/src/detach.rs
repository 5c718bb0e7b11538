//! `leash __detach -- CMD ARGS…` (hidden): runs CMD in a session of its own, without a
//! controlling terminal. `leash exec --ask` starts its command this way because the person's
//! answers come from that terminal: a command sharing it could push keys into its input queue
//! (`ioctl(TIOCSTI)`, allowed on one's own controlling terminal) and answer its own questions.
//! Without a controlling terminal that ioctl is refused (to anyone without `CAP_SYS_ADMIN`); the
//! command keeps its stdin/stdout/stderr, which may still be the terminal.

use std::{os::unix::process::CommandExt, process::ExitCode};

use clap::Args;

/// The hidden subcommand's name.
pub(crate) const HELPER: &str = "__detach";

#[derive(Debug, Args)]
pub(crate) struct DetachArgs {
    /// The command and its arguments.
    #[arg(trailing_var_arg = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

pub(crate) fn run(args: DetachArgs) -> ExitCode {
    if let Err(error) = rustix::process::setsid() {
        eprintln!("leash: cannot leave the terminal's session: {error}");
        return ExitCode::from(126);
    }
    let error = std::process::Command::new(&args.command[0])
        .args(&args.command[1..])
        .exec();
    crate::exec::cannot_run(&args.command[0], &error)
}
