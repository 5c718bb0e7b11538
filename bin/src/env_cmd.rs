//! `leash env`: the SPEC §12 variables for a running proxy, as shell lines or JSON.

use std::{net::SocketAddr, path::PathBuf};

use anyhow::{bail, Context};
use clap::{Args, ValueEnum};
use leash::{child_env, CaFiles, Config, EnvSpec};
use policy::AllowLocalConfig;

use crate::Exit;

#[derive(Debug, Args)]
pub(crate) struct EnvArgs {
    /// Read the addresses from a ready record (`leash proxy --ready-file`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["http", "socks"])]
    ready_file: Option<PathBuf>,
    /// The HTTP proxy address.
    #[arg(long, value_name = "ADDR")]
    http: Option<SocketAddr>,
    /// The SOCKS5 proxy address.
    #[arg(long, value_name = "ADDR")]
    socks: Option<SocketAddr>,
    /// The attempt id the child's requests carry.
    #[arg(long, default_value = "shell")]
    attempt: String,
    /// The proxy token (`auth.token`), if the proxy requires one.
    #[arg(long)]
    token: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "sh")]
    shell: Shell,
    /// Config file (for `allow_local` and MITM; else $LEASH_CONFIG, else ./leash.toml).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Shell {
    Sh,
    Fish,
    Json,
}

pub(crate) fn run(args: EnvArgs) -> Exit {
    match render(&args) {
        Ok(text) => {
            print!("{text}");
            Exit::Ok
        }
        Err(error) => {
            eprintln!("leash: {error:#}");
            Exit::Usage
        }
    }
}

fn render(args: &EnvArgs) -> anyhow::Result<String> {
    if !policy::is_attempt_id(&args.attempt) {
        bail!(
            "--attempt {:?}: an attempt id is 1-128 bytes of [A-Za-z0-9._:-]",
            args.attempt
        );
    }
    let (http, socks) = addresses(args)?;
    let config = match Config::locate(args.config.as_deref()) {
        Some(path) => Config::load(&path)?,
        None => Config::default(),
    };
    let ca = match config.mitm.enabled {
        true => Some(ca_files(&config)?),
        false => None,
    };
    let token = args
        .token
        .clone()
        .or_else(|| Some(config.auth.token.clone()).filter(|t| !t.is_empty()));
    // For `GIT_SSH_COMMAND`; without a path to this binary, ssh is simply not redirected.
    let leash_bin = std::env::current_exe().ok();
    let vars = child_env(&EnvSpec {
        http,
        socks,
        attempt: &args.attempt,
        token: token.as_deref(),
        allow_local_all: config.policy.allow_local == AllowLocalConfig::Flag(true),
        ca: ca.as_ref(),
        leash_bin: leash_bin.as_deref(),
    });
    Ok(match args.shell {
        Shell::Json => format!(
            "{}\n",
            serde_json::Value::Object(vars.into_iter().map(|(k, v)| (k, v.into())).collect())
        ),
        Shell::Sh => vars
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", quote(v)))
            .collect(),
        Shell::Fish => vars
            .iter()
            .map(|(k, v)| format!("set -gx {k} {}\n", quote(v)))
            .collect(),
    })
}

fn addresses(args: &EnvArgs) -> anyhow::Result<(SocketAddr, Option<SocketAddr>)> {
    if let Some(path) = &args.ready_file {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let ready: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a ready record", path.display()))?;
        let addr = |key: &str| {
            ready[key]
                .as_str()
                .map(str::parse::<SocketAddr>)
                .transpose()
        };
        let http = addr("http")?.context("the ready record has no HTTP address")?;
        return Ok((http, addr("socks")?));
    }
    match args.http {
        Some(http) => Ok((http, args.socks)),
        None => bail!("give --ready-file FILE, or --http ADDR (and --socks ADDR)"),
    }
}

fn ca_files(config: &Config) -> anyhow::Result<CaFiles> {
    let dir = config
        .mitm
        .ca_dir
        .clone()
        .unwrap_or_else(mitm::default_ca_dir);
    let ca = mitm::CertificateAuthority::load(&dir)?;
    Ok(CaFiles {
        bundle: mitm::write_bundle(&ca)?,
        ca: ca.dir().join(mitm::CA_CERT_FILE),
    })
}

/// Single quotes, with embedded quotes closed, escaped and reopened: safe for sh and fish.
fn quote(value: &str) -> String {
    format!("'{}'", value.replace('\'', "'\\''"))
}
