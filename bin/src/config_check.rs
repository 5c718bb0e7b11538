//! `leash config check [FILE]`: parse and lint (SPEC §11). Exit 0 when valid (warnings on stderr),
//! 1 when invalid.

use std::path::PathBuf;

use clap::Args;
use leash::Config;

use crate::{flags, Exit};

#[derive(Debug, Args)]
pub(crate) struct ConfigCheckArgs {
    /// The file (else $LEASH_CONFIG, else ./leash.toml).
    file: Option<PathBuf>,
}

pub(crate) fn run(args: ConfigCheckArgs) -> Exit {
    let path = match flags::require_file(Config::locate(args.file.as_deref())) {
        Ok(path) => path,
        Err(error) => {
            eprintln!("leash: {error}");
            return Exit::Refused;
        }
    };
    let config = match Config::load(&path) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("leash: {error}");
            return Exit::Refused;
        }
    };
    let policy = config.policy().expect("Config::load checked the policy");
    let warnings = policy::lint(&policy);
    for warning in &warnings {
        eprintln!("warning: {}: {warning}", path.display());
    }
    println!(
        "{}: ok ({} allow rules, {} deny rules, {} warnings)",
        path.display(),
        policy.allow_rules().len(),
        policy.deny_rules().len(),
        warnings.len()
    );
    Exit::Ok
}
