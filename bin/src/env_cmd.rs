//! `leash env`: the SPEC §12 variables for a running proxy, as shell lines or JSON.
//!
//! With `--ready-file`, the ready record says whether the proxy intercepts TLS and with which CA;
//! the trust files are written here, from this process's environment, since that is the one the
//! printed variables replace (its `SSL_CERT_FILE`, `NODE_EXTRA_CA_CERTS` and wgetrc are kept).

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
};

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
    /// The attempt id the child's requests carry (default `shell`; with `--bind`, a fresh id).
    #[arg(long)]
    attempt: Option<String>,
    /// Ask the running proxy (`--ready-file`, through its admin API) for a bound attempt (SPEC
    /// §18): the variables then carry that attempt's id and its own secret.
    #[arg(long, requires = "ready_file", conflicts_with = "token")]
    bind: bool,
    /// The proxy token (`auth.token`), if the proxy requires one.
    #[arg(long)]
    token: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value = "sh")]
    shell: Shell,
    /// Config file (for `allow_local`, the token, and MITM when no ready record says; else
    /// $LEASH_CONFIG, else ./leash.toml).
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
    if let Some(attempt) = args
        .attempt
        .as_deref()
        .filter(|a| !policy::is_attempt_id(a))
    {
        bail!("--attempt {attempt:?}: an attempt id is 1-128 bytes of [A-Za-z0-9._:-]");
    }
    let proxy = proxy(args)?;
    let config = match Config::locate(args.config.as_deref()) {
        Some(path) => Config::load_without_secrets(&path)?,
        None => Config::default(),
    };
    let ca = match proxy.mitm {
        Some(Mitm::On { ca_cert }) => Some(ca_files_from_record(&ca_cert)?),
        Some(Mitm::Off) => None,
        None if config.mitm.enabled => Some(ca_files(&config)?),
        None => None,
    };
    let (attempt, token) = match (&proxy.admin, args.bind) {
        (Some(admin), true) => bind_attempt(admin, args.attempt.as_deref())?,
        (None, true) => bail!("--bind: the ready record names no admin API to ask"),
        (_, false) => (
            args.attempt.clone().unwrap_or_else(|| "shell".to_owned()),
            args.token
                .clone()
                .or_else(|| Some(config.auth.token.clone()).filter(|t| !t.is_empty())),
        ),
    };
    // For `GIT_SSH_COMMAND`; without a path to this binary, ssh is simply not redirected.
    let leash_bin = std::env::current_exe().ok();
    let vars = child_env(&EnvSpec {
        http: proxy.http,
        socks: proxy.socks,
        attempt: &attempt,
        token: token.as_deref(),
        allow_local_all: config.policy.allow_local == AllowLocalConfig::Flag(true),
        ca: ca.as_ref(),
        leash_bin: leash_bin.as_deref(),
        placeholders: &proxy.placeholders,
    });
    Ok(match args.shell {
        Shell::Json => format!(
            "{}\n",
            serde_json::Value::Object(vars.into_iter().map(|(k, v)| (k, v.into())).collect())
        ),
        Shell::Sh => vars
            .iter()
            .map(|(k, v)| format!("export {k}={}\n", leash::shell_quote(v)))
            .collect(),
        Shell::Fish => vars
            .iter()
            .map(|(k, v)| format!("set -gx {k} {}\n", leash::shell_quote(v)))
            .collect(),
    })
}

/// The running proxy, as the ready record or the flags describe it.
#[derive(Debug)]
pub(crate) struct Proxy {
    http: SocketAddr,
    socks: Option<SocketAddr>,
    /// What the ready record says about TLS interception; `None` when nothing does.
    mitm: Option<Mitm>,
    /// The admin API and its token file, as the ready record names them.
    pub(crate) admin: Option<(SocketAddr, Option<PathBuf>)>,
    /// Credential variables and their placeholders, as the ready record names them.
    placeholders: Vec<(String, String)>,
}

#[derive(Debug)]
enum Mitm {
    Off,
    On { ca_cert: PathBuf },
}

fn proxy(args: &EnvArgs) -> anyhow::Result<Proxy> {
    match (&args.ready_file, args.http) {
        (Some(path), _) => read_ready(path),
        (None, Some(http)) => Ok(Proxy {
            http,
            socks: args.socks,
            mitm: None,
            admin: None,
            placeholders: Vec::new(),
        }),
        (None, None) => bail!("give --ready-file FILE, or --http ADDR (and --socks ADDR)"),
    }
}

/// The running proxy a ready record (`leash proxy --ready-file`) describes.
pub(crate) fn read_ready(path: &Path) -> anyhow::Result<Proxy> {
    trusted_record(path)?;
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
    let file = |key: &str| ready[key].as_str().map(PathBuf::from);
    let mitm = match ready["mitm"].as_bool() {
        Some(true) => {
            // `ca_cert` names the CA; a record without it still has the bundle beside the CA.
            let beside_bundle = file("ca_bundle").map(|b| b.with_file_name(mitm::CA_CERT_FILE));
            let ca_cert = file("ca_cert")
                .or(beside_bundle)
                .context("the ready record says MITM is on but names no CA")?;
            Some(Mitm::On { ca_cert })
        }
        Some(false) => Some(Mitm::Off),
        None => None,
    };
    Ok(Proxy {
        http,
        socks: addr("socks")?,
        mitm,
        admin: addr("admin")?.map(|admin| (admin, file("admin_token_file"))),
        // Credential placeholders (SPEC §17): the running leash made them, so only its record
        // knows them.
        placeholders: ready["placeholders"]
            .as_object()
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
            .collect(),
    })
}

/// `POST /attempts` on the running proxy's admin API: the bound attempt's id and secret.
fn bind_attempt(
    (admin, token_file): &(SocketAddr, Option<PathBuf>),
    id: Option<&str>,
) -> anyhow::Result<(String, Option<String>)> {
    let token = crate::admin_call::read_token(token_file.as_deref())?;
    let body = serde_json::json!({ "id": id }).to_string();
    let (status, answer) = crate::admin_call::post(*admin, "/attempts", token.as_deref(), &body)
        .with_context(|| format!("asking the admin API on {admin} for a bound attempt"))?;
    if status != 200 {
        let error = answer["error"].as_str().unwrap_or("no error message");
        bail!("the admin API refused a bound attempt ({status}): {error}");
    }
    let field = |key: &str| answer[key].as_str().map(str::to_owned);
    let id = field("id").context("the admin API's answer has no attempt id")?;
    Ok((id, field("token")))
}

/// The trust files for the CA a ready record names (its certificate is all that is read).
fn ca_files_from_record(ca_cert: &Path) -> anyhow::Result<CaFiles> {
    let pem = std::fs::read_to_string(ca_cert).with_context(|| {
        format!(
            "reading the MITM CA the ready record names ({})",
            ca_cert.display()
        )
    })?;
    Ok(CaFiles::write(ca_cert, &pem)?)
}

/// The trust files for the CA of the config file (its key is checked as a proxy would).
fn ca_files(config: &Config) -> anyhow::Result<CaFiles> {
    let dir = config
        .mitm
        .ca_dir
        .clone()
        .unwrap_or_else(mitm::default_ca_dir);
    let ca = mitm::CertificateAuthority::load(&dir)?;
    Ok(CaFiles::write(&ca.cert_path(), ca.cert_pem())?)
}

/// A ready record names where the admin token goes and which token file to read: one that
/// another user could have written (another owner, or writable by group or others) could send
/// the token to that user's listener, so it is refused.
fn trusted_record(path: &Path) -> anyhow::Result<()> {
    let meta = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    match leash::foreign_writer(&meta) {
        None => Ok(()),
        Some(leash::ForeignWriter::Owner(owner)) => bail!(
            "{} belongs to uid {owner}, not to you: its addresses cannot be trusted with the admin token",
            path.display(),
        ),
        Some(leash::ForeignWriter::GroupOrOthers(_)) => bail!(
            "{} is writable by group or others: its addresses cannot be trusted with the admin \
             token (chmod go-w {})",
            path.display(),
            path.display()
        ),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A ready record anyone else could have written is refused before its addresses are used;
    /// one only its owner can write is read.
    #[test]
    fn a_ready_record_others_could_write_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ready.json");
        std::fs::write(&path, r#"{"http":"127.0.0.1:3128","admin":"127.0.0.1:9"}"#).unwrap();
        for mode in [0o666, 0o646, 0o664] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let error = read_ready(&path)
                .expect_err("writable by others")
                .to_string();
            assert!(error.contains("writable by group or others"), "{error}");
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(read_ready(&path).is_ok());
    }
}
