//! `leash ca init|path|show` (SPEC §5): the MITM CA that clients are told to trust.

use std::path::PathBuf;

use clap::{Args, Subcommand};
use leash::Config;
use mitm::{CertificateAuthority, CA_CERT_FILE};

use crate::Exit;

#[derive(Debug, Args)]
pub(crate) struct CaArgs {
    #[command(subcommand)]
    command: CaCommand,
    /// Config file (for `mitm.ca_dir`; else $LEASH_CONFIG, else ./leash.toml).
    #[arg(long, value_name = "FILE", global = true)]
    config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum CaCommand {
    /// Create the CA unless it exists; print where its certificate is.
    Init,
    /// Print the CA directory.
    Path,
    /// Print the CA certificate (PEM).
    Show,
}

pub(crate) fn run(args: CaArgs) -> Exit {
    let dir = match ca_dir(args.config) {
        Ok(dir) => dir,
        Err(error) => {
            eprintln!("leash: {error}");
            return Exit::Usage;
        }
    };
    let result = match args.command {
        CaCommand::Path => {
            println!("{}", dir.display());
            Ok(())
        }
        CaCommand::Init => CertificateAuthority::load_or_create(&dir)
            .map(|ca| println!("{}", ca.dir().join(CA_CERT_FILE).display())),
        CaCommand::Show => CertificateAuthority::load(&dir).map(|ca| print!("{}", ca.cert_pem())),
    };
    match result {
        Ok(()) => Exit::Ok,
        Err(error) => {
            eprintln!("leash: {error}");
            Exit::Refused
        }
    }
}

fn ca_dir(config: Option<PathBuf>) -> Result<PathBuf, leash::ConfigError> {
    let config = match Config::locate(config.as_deref()) {
        Some(path) => Config::load_without_secrets(&path)?,
        None => Config::default(),
    };
    Ok(config.mitm.ca_dir.unwrap_or_else(mitm::default_ca_dir))
}
