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
    let mut warnings: Vec<String> = policy::lint(&policy)
        .iter()
        .map(ToString::to_string)
        .collect();
    warnings.extend(config_warnings(&config));
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

/// Warnings about the configuration beyond the policy's rules.
fn config_warnings(config: &Config) -> Vec<String> {
    let mut warnings = Vec::new();
    if config.admin.enabled && config.admin.token == leash::NO_ADMIN_TOKEN {
        warnings.push(
            "admin.token = \"none\": the admin API takes changes without a token, so any program \
             that can reach its port can rewrite the policy"
                .to_owned(),
        );
    }
    warnings
}
