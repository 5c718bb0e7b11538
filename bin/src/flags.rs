//! Command-line flags that add to or override the config file (SPEC §10).

use std::{path::PathBuf, sync::Arc};

use anyhow::{bail, Context};
use clap::Args;
use leash::{Config, ConfigOverlay};
use policy::{AllowLocalConfig, Mode, Rule};

/// Where the config comes from, and the policy flags layered on top of it.
#[derive(Clone, Debug, Args)]
pub(crate) struct PolicyFlags {
    /// Config file (else $LEASH_CONFIG, else ./leash.toml, else embedded defaults).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Add an allow rule (repeatable).
    #[arg(long = "allow", value_name = "RULE")]
    allow: Vec<String>,
    /// Add a deny rule (repeatable).
    #[arg(long = "deny", value_name = "RULE")]
    deny: Vec<String>,
    /// Open a local target (IP, CIDR or `localhost`, with optional port), or `all` (repeatable).
    #[arg(long = "allow-local", value_name = "RULE|all")]
    allow_local: Vec<String>,
    /// Override the mode.
    #[arg(long, value_name = "full|limited")]
    mode: Option<Mode>,
    /// Enable TLS interception.
    #[arg(long)]
    mitm: bool,
}

impl PolicyFlags {
    /// The config file (or the defaults) with these flags applied.
    pub(crate) fn load(&self) -> anyhow::Result<Config> {
        let mut config = match Config::locate(self.config.as_deref()) {
            Some(path) => Config::load(&path)?,
            None => Config::default(),
        };
        self.apply(&mut config)?;
        Ok(config)
    }

    /// The `--config` flag, if given.
    pub(crate) fn config_flag(&self) -> Option<&std::path::Path> {
        self.config.as_deref()
    }

    /// `config` (read by the caller from wherever it looks) with these flags applied.
    pub(crate) fn apply_to(&self, mut config: Config) -> anyhow::Result<Config> {
        self.apply(&mut config)?;
        Ok(config)
    }

    /// The config file in use, if any.
    pub(crate) fn file(&self) -> Option<PathBuf> {
        Config::locate(self.config.as_deref())
    }

    /// These flags, re-applied to the file on every reload.
    pub(crate) fn overlay(&self) -> ConfigOverlay {
        let flags = self.clone();
        Arc::new(move |config: &mut Config| flags.apply(config).map_err(|e| format!("{e:#}")))
    }

    fn apply(&self, config: &mut Config) -> anyhow::Result<()> {
        // Destructured, so that a new flag must say here whether it changes the policy.
        let PolicyFlags {
            config: _,
            allow,
            deny,
            allow_local,
            mode,
            mitm,
        } = self;
        let changes_nothing = allow.is_empty()
            && deny.is_empty()
            && allow_local.is_empty()
            && mode.is_none()
            && !mitm;
        if changes_nothing {
            // The config was checked when it was loaded; nothing here can make it fail.
            return Ok(());
        }
        check_rules("--allow", &self.allow)?;
        check_rules("--deny", &self.deny)?;
        config.policy.allow.extend(self.allow.iter().cloned());
        config.policy.deny.extend(self.deny.iter().cloned());
        for rule in &self.allow_local {
            add_allow_local(&mut config.policy.allow_local, rule)?;
        }
        if let Some(mode) = self.mode {
            config.mode = mode;
        }
        config.mitm.enabled |= self.mitm;
        // The flags may only have added valid rules, but `allow_local` rules are checked as a set.
        config
            .check_policy()
            .context("the policy given by the flags")?;
        Ok(())
    }
}

fn check_rules(flag: &str, rules: &[String]) -> anyhow::Result<()> {
    for rule in rules {
        rule.parse::<Rule>()
            .with_context(|| format!("{flag} {rule}"))?;
    }
    Ok(())
}

fn add_allow_local(current: &mut AllowLocalConfig, rule: &str) -> anyhow::Result<()> {
    if rule == "all" {
        *current = AllowLocalConfig::Flag(true);
        return Ok(());
    }
    check_rules("--allow-local", &[rule.to_owned()])?;
    match current {
        AllowLocalConfig::Flag(true) => {}
        AllowLocalConfig::Flag(false) => *current = AllowLocalConfig::Rules(vec![rule.to_owned()]),
        AllowLocalConfig::Rules(rules) => rules.push(rule.to_owned()),
    }
    Ok(())
}

/// The config file a command needs, or the error that says where leash looked.
pub(crate) fn require_file(path: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    match path {
        Some(path) => Ok(path),
        None => bail!("no config file: give one, set $LEASH_CONFIG, or create ./leash.toml"),
    }
}
