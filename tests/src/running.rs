//! In-process leash instances for tests that need a test resolver or connector, built through the
//! same embedding API `leash proxy` uses.

use std::{
    collections::HashMap,
    io,
    net::{IpAddr, SocketAddr},
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
};

use leash::{Config, ConfigOverlay, Leash, Running};
use listeners::{BoxFuture, Connector, StaticResolver};
use policy::{AllowLocalConfig, Decider};
use tokio::net::TcpStream;

/// A running in-process leash with its own temp dir and log.
#[derive(Debug)]
pub struct TestProxy {
    running: Option<Running>,
    /// The HTTP proxy address.
    pub http: SocketAddr,
    /// The SOCKS5 proxy address (when enabled).
    pub socks: Option<SocketAddr>,
    /// The admin API address (when enabled).
    pub admin: Option<SocketAddr>,
    /// The admin API's bearer token: configured, or read from the file leash generated it into.
    pub admin_token: Option<String>,
    /// The violation log file.
    pub log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts leash with `config` on managed listeners, logging into a temp dir, resolving with
/// `resolver`, connecting through `connector` (plain TCP when `None`).
pub fn start_proxy(
    config: Config,
    resolver: Arc<StaticResolver>,
    connector: Option<Arc<dyn Connector>>,
) -> TestProxy {
    start(config, None, resolver, connector, None, None)
}

/// Like `start_proxy`, with the violation log in `log_dir` (a small filesystem a test fills).
pub fn start_proxy_logging_into(
    config: Config,
    resolver: Arc<StaticResolver>,
    log_dir: &Path,
) -> TestProxy {
    start(config, None, resolver, None, None, Some(log_dir.to_owned()))
}

/// Like `start_proxy`, but on the listen addresses of `config` (give them port 0; a non-loopback
/// one needs its `dangerously_…` flag) instead of managed `127.0.0.1:0` listeners.
pub fn start_proxy_on_configured_listeners(
    config: Config,
    resolver: Arc<StaticResolver>,
) -> TestProxy {
    let overlay: ConfigOverlay = Arc::new(|config: &mut Config| {
        config.listen.ephemeral = false;
        Ok(())
    });
    let extras = Extras {
        listeners: Some(overlay),
        ..Extras::default()
    };
    start_with(config, None, resolver, None, None, extras)
}

/// Like `start_proxy`, with `decider` consulted for every `ask`.
pub fn start_proxy_with_decider(
    config: Config,
    resolver: Arc<StaticResolver>,
    connector: Option<Arc<dyn Connector>>,
    decider: Arc<dyn Decider>,
) -> TestProxy {
    start(config, None, resolver, connector, Some(decider), None)
}

/// Like `start_proxy`, from a config file that the admin API's `/reload` re-reads.
pub fn start_proxy_from_file(file: &Path, resolver: Arc<StaticResolver>) -> TestProxy {
    let config = Config::load(file).expect("the test config loads");
    start(config, Some(file.to_owned()), resolver, None, None, None)
}

/// Managed listeners (unless `listeners` says otherwise), a log in `log_dir` and an admin token
/// file in `dir`, on every reload too.
fn test_overlay(dir: PathBuf, log_dir: PathBuf, listeners: Option<ConfigOverlay>) -> ConfigOverlay {
    Arc::new(move |config: &mut Config| {
        config.listen.ephemeral = true;
        if let Some(listeners) = &listeners {
            listeners(config)?;
        }
        config.log.violations = log_dir.join("violations.jsonl");
        config
            .admin
            .token_file
            .get_or_insert_with(|| dir.join("admin.token"));
        // Never the user's own approvals (the state directory's default): a test's are its own.
        config
            .ask
            .approvals
            .get_or_insert_with(|| dir.join("approvals.toml"));
        Ok(())
    })
}

fn start(
    config: Config,
    file: Option<PathBuf>,
    resolver: Arc<StaticResolver>,
    connector: Option<Arc<dyn Connector>>,
    decider: Option<Arc<dyn Decider>>,
    log_dir: Option<PathBuf>,
) -> TestProxy {
    let extras = Extras {
        log_dir,
        listeners: None,
    };
    start_with(config, file, resolver, connector, decider, extras)
}

/// What a few tests change besides the config.
#[derive(Default)]
struct Extras {
    /// Where the violation log goes (default: the instance's temp dir).
    log_dir: Option<PathBuf>,
    /// Listener settings instead of managed ones.
    listeners: Option<ConfigOverlay>,
}

fn start_with(
    mut config: Config,
    file: Option<PathBuf>,
    resolver: Arc<StaticResolver>,
    connector: Option<Arc<dyn Connector>>,
    decider: Option<Arc<dyn Decider>>,
    extras: Extras,
) -> TestProxy {
    let dir = tempfile::tempdir().expect("temp dir");
    let log_dir = extras.log_dir.unwrap_or_else(|| dir.path().to_owned());
    let log = log_dir.join("violations.jsonl");
    let overlay = test_overlay(dir.path().to_owned(), log_dir, extras.listeners);
    overlay(&mut config).expect("overlay");
    let configured_token = config.admin.token.clone();
    let mut builder = Leash::builder()
        .config(config)
        .resolver(resolver)
        .reload_overlay(overlay);
    if let Some(file) = file {
        builder = builder.config_file(file);
    }
    if let Some(connector) = connector {
        builder = builder.connector(connector);
    }
    if let Some(decider) = decider {
        builder = builder.decider(decider);
    }
    let built = builder.build().expect("leash builds");
    let http = built.addrs().http.expect("an HTTP listener");
    let socks = built.addrs().socks;
    let admin = built.addrs().admin;
    let admin_token = match built.admin_token_file() {
        Some(file) => Some(leash::read_token_file(file).expect("the admin token file")),
        None => Some(configured_token).filter(|t| !t.is_empty() && t != leash::NO_ADMIN_TOKEN),
    };
    TestProxy {
        running: Some(built.run()),
        http,
        socks,
        admin,
        admin_token,
        log,
        _dir: dir,
    }
}

/// Where the admin API listens and the bearer token it wants.
#[derive(Clone, Debug)]
pub struct AdminClient {
    /// The admin listener.
    pub addr: SocketAddr,
    /// The bearer token, if the admin API requires one.
    pub token: Option<String>,
}

impl TestProxy {
    /// The admin API with its token.
    pub fn admin_client(&self) -> AdminClient {
        AdminClient {
            addr: self.admin.expect("an admin listener"),
            token: self.admin_token.clone(),
        }
    }

    /// `http://ATTEMPT:TOKEN@ADDR` for curl's `-x`.
    pub fn proxy_url(&self, credentials: &str) -> String {
        format!("http://{credentials}@{}", self.http)
    }

    /// The running instance, for the embedding API's calls.
    pub fn running(&self) -> &Running {
        self.running.as_ref().expect("running")
    }

    /// Stops the proxy and flushes the log; returns the log's lines as JSON.
    pub async fn stop(mut self) -> Vec<serde_json::Value> {
        if let Some(running) = self.running.take() {
            running.shutdown().await;
        }
        self.log_lines()
    }

    /// The log lines written so far.
    pub fn log_lines(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| serde_json::from_str(l).expect("every log line is JSON"))
            .collect()
    }
}

/// A connector for tests: "public" addresses are mapped to loopback origins (so no packet ever
/// leaves the machine), every address asked for is recorded, and anything else non-loopback fails.
#[derive(Debug, Default)]
pub struct LoopbackNat {
    map: HashMap<IpAddr, SocketAddr>,
    dialled: Mutex<Vec<SocketAddr>>,
}

impl LoopbackNat {
    /// Maps connections to `public` (any port) onto `origin`.
    pub fn map(mut self, public: IpAddr, origin: SocketAddr) -> LoopbackNat {
        self.map.insert(public, origin);
        self
    }

    /// Every address the dialer asked for.
    pub fn dialled(&self) -> Vec<SocketAddr> {
        self.dialled.lock().expect("nat lock").clone()
    }
}

impl Connector for LoopbackNat {
    fn connect(&self, addr: SocketAddr) -> BoxFuture<'_, io::Result<TcpStream>> {
        self.dialled.lock().expect("nat lock").push(addr);
        let destination = match self.map.get(&addr.ip()) {
            Some(origin) => Some(*origin),
            None if addr.ip().is_loopback() => Some(addr),
            None => None,
        };
        Box::pin(async move {
            match destination {
                Some(destination) => TcpStream::connect(destination).await,
                None => Err(io::Error::new(
                    io::ErrorKind::PermissionDenied,
                    "tests never leave the machine",
                )),
            }
        })
    }
}

/// A config with these rules, `allow_local` exceptions and the proxy token `tok`.
pub fn policy_config(allow: &[&str], deny: &[&str], allow_local: &[String]) -> Config {
    let mut config = Config::default();
    config.policy.allow = allow.iter().map(|s| s.to_string()).collect();
    config.policy.deny = deny.iter().map(|s| s.to_string()).collect();
    config.policy.allow_local = AllowLocalConfig::Rules(allow_local.to_vec());
    config.auth.token = "tok".into();
    config
}

/// `127.0.0.1`, where every test origin listens.
pub fn loopback() -> IpAddr {
    IpAddr::from([127, 0, 0, 1])
}
