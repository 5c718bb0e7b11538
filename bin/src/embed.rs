//! The embedding API (SPEC §13): build (listeners reserved, addresses known), run, change the
//! policy while running, shut down. `leash proxy` is a thin shell around it.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::Arc,
};

use admin::{Admin, AttemptRequest, Control, ControlError, RuleChange, RuleOp};
use http_proxy::{HttpProxy, Limits, TlsInterceptor};
use listeners::{
    Connector, Dialer, DnsConfigError, DnsResolver, DnsSettings, ListenError, ListenPlan,
    LookupLimits, Pending, ReadyRecord, Reserved, Resolver,
};
use mitm::{Interception, MitmError};
use policy::{AllowLocal, Attempts, Decider, DecisionSink, Mode, PolicyEngine, PolicyError};
use socks_proxy::{SocksOptions, SocksProxy};
use tokio::{sync::watch, task::JoinHandle};
use violations::{LogOptions, ViolationLog, ViolationLogError};

use crate::{
    admin_token::AdminAuth,
    attempts::Issuer,
    child_env::{child_env, CaFiles, EnvSpec},
    config::{AttemptsMode, Rotation},
    decider_socket,
    hot::HotPolicy,
    hub::{ConfigOverlay, Hub, Live},
    BoundAttempt, Config,
};

/// Entry point of the embedding API.
#[derive(Debug)]
pub struct Leash;

impl Leash {
    /// A builder with the embedded default configuration.
    pub fn builder() -> LeashBuilder {
        LeashBuilder::default()
    }
}

/// Configures a leash instance; `build` reserves its listeners.
#[derive(Default)]
pub struct LeashBuilder {
    config: Config,
    config_file: Option<PathBuf>,
    overlay: Option<ConfigOverlay>,
    engine: Option<Arc<dyn PolicyEngine>>,
    sink: Option<Arc<dyn DecisionSink>>,
    resolver: Option<Arc<dyn Resolver>>,
    connector: Option<Arc<dyn Connector>>,
    decider: Option<Arc<dyn Decider>>,
}

impl std::fmt::Debug for LeashBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeashBuilder")
            .field("config", &self.config)
            .field("config_file", &self.config_file)
            .finish_non_exhaustive()
    }
}

/// The addresses leash serves on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Addrs {
    /// The HTTP proxy.
    pub http: Option<SocketAddr>,
    /// The SOCKS5 proxy (`None` with `socks.enabled = false` or `--no-socks`).
    pub socks: Option<SocketAddr>,
    /// The admin API (`None` with `admin.enabled = false`).
    pub admin: Option<SocketAddr>,
}

/// Why leash could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// A listener could not be reserved.
    #[error("{0}")]
    Listen(ListenError),
    /// The policy is invalid.
    #[error("policy: {0}")]
    Policy(PolicyError),
    /// The violation log could not be opened.
    #[error("{0}")]
    Log(ViolationLogError),
    /// TLS interception could not be set up (the CA, its key, the upstream roots).
    #[error("mitm: {0}")]
    Mitm(MitmError),
    /// `auth.token` cannot be matched by any client.
    #[error("auth.token: {0}")]
    Token(&'static str),
    /// The admin API's generated token could not be written to its file.
    #[error("admin.token_file: {0}")]
    AdminToken(std::io::Error),
    /// The resolver's configuration (`dns.resolv_conf`) could not be read.
    #[error("dns")]
    Dns(#[source] DnsConfigError),
    /// The approvals file (`ask.approvals`) could not be read, or holds a bad rule (names the
    /// file and line).
    #[error("{0}")]
    Approvals(crate::config::ConfigError),
    /// `ask.decider = "fd:N"` names no unix stream socket of this process.
    #[error("ask.decider {addr}")]
    Decider {
        /// The address as given.
        addr: crate::DeciderAddr,
        /// Why it cannot be used.
        #[source]
        error: std::io::Error,
    },
    /// `upstream.proxy = "env"` found no usable proxy variable (the message never holds a
    /// password).
    #[error("{0}")]
    Upstream(String),
    /// A credential's secret could not be read, or a header rule is invalid (the message never
    /// holds a secret).
    #[error("{0}")]
    Credentials(String),
}

impl LeashBuilder {
    /// Uses `config` (the file's contents, with CLI flags applied).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// The file `reload` re-reads (the config given to `config` came from it).
    pub fn config_file(mut self, path: PathBuf) -> Self {
        self.config_file = Some(path);
        self
    }

    /// Applied to the file's contents on every reload (the command line's flags).
    pub fn reload_overlay(mut self, overlay: ConfigOverlay) -> Self {
        self.overlay = Some(overlay);
        self
    }

    /// Decides with `engine` instead of the configured policy (the admin API then cannot change it).
    pub fn policy_engine(mut self, engine: Arc<dyn PolicyEngine>) -> Self {
        self.engine = Some(engine);
        self
    }

    /// Records decisions to `sink` instead of the configured violation log.
    pub fn decision_sink(mut self, sink: Arc<dyn DecisionSink>) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Resolves names with `resolver` instead of the system resolver.
    pub fn resolver(mut self, resolver: Arc<dyn Resolver>) -> Self {
        self.resolver = Some(resolver);
        self
    }

    /// Consults `decider` for every `ask`; it may turn it into `allow` or `deny`, never loosen a
    /// `deny` (deny rules, local protection and limited mode still apply to what it allows).
    pub fn decider(mut self, decider: Arc<dyn Decider>) -> Self {
        self.decider = Some(decider);
        self
    }

    /// Opens upstream connections with `connector` instead of plain TCP.
    pub fn connector(mut self, connector: Arc<dyn Connector>) -> Self {
        self.connector = Some(connector);
        self
    }

    /// Reserves the listeners (their addresses are final from here on) and assembles the proxies.
    pub fn build(self) -> Result<Built, BuildError> {
        let config = self.config;
        crate::config::check_token(&config.auth.token).map_err(BuildError::Token)?;
        let reserved = listen_plan(&config).reserve().map_err(BuildError::Listen)?;
        let addrs = Addrs {
            http: Reserved::addr(&reserved.http),
            socks: Reserved::addr(&reserved.socks),
            admin: Reserved::addr(&reserved.admin),
        };
        let hot = Arc::new(HotPolicy::new(config.policy().map_err(BuildError::Policy)?));
        let embedders_engine = self.engine.clone();
        let engine = self.engine.unwrap_or_else(|| hot.clone());
        let (sink, log) = match self.sink {
            Some(sink) => (sink, None),
            None => {
                let log =
                    Arc::new(ViolationLog::open(&log_options(&config)).map_err(BuildError::Log)?);
                (log.clone() as Arc<dyn DecisionSink>, Some(log))
            }
        };
        let own_listeners: Vec<SocketAddr> = [addrs.http, addrs.socks, addrs.admin]
            .into_iter()
            .flatten()
            .collect();
        let resolver = match self.resolver {
            Some(resolver) => resolver,
            None => dns_resolver(&config)?,
        };
        let timeouts = &config.limits;
        let mut dialer = Dialer::new(
            resolver,
            timeouts.dns_timeout.get(),
            timeouts.connect_timeout.get(),
        )
        .with_own_listeners(&own_listeners)
        .with_lookup_limits(LookupLimits {
            total: config.dns.max_lookups.get(),
            per_client: config.dns.max_lookups_per_client.get(),
        });
        if let Some(connector) = self.connector {
            dialer = dialer.with_connector(connector);
        }
        let upstream = config
            .upstream
            .build(|name| std::env::var(name).ok())
            .map_err(BuildError::Upstream)?;
        dialer = dialer.with_upstream(upstream);
        let tunnels = dialer.tunnels().clone();
        // The one place every `ask` waits; the embedder's decider is one of its approvers.
        let pending = Pending::new(
            config.ask.hold.get(),
            self.decider,
            sink.clone(),
            engine.clone(),
        );
        let pending = Arc::new(match config.auth.attempts {
            AttemptsMode::Bound => pending.with_bound_attempts(),
            AttemptsMode::Free => pending,
        });
        let interception = interception(&config)?;
        let ca_files = interception.as_ref().map(ca_files_for).transpose()?;
        let attempts = (config.auth.attempts == AttemptsMode::Bound).then(Arc::<Attempts>::default);
        // Fresh placeholders for this process; the secrets are read now, and only by leash.
        let (credentials, placeholders) = config
            .credentials(|| crate::random_hex(16).expect("the system's random source"))
            .map_err(BuildError::Credentials)?;
        if !config.credentials.is_empty() {
            keep_secrets_private().map_err(BuildError::Credentials)?;
        }
        let issuer = attempts.clone().map(|attempts| Issuer {
            attempts,
            addrs,
            ca: ca_files.clone(),
            placeholders: placeholders.clone(),
        });
        let live = Live {
            hot,
            tunnels: tunnels.clone(),
            pending: pending.clone(),
        };
        let hub = Arc::new(
            Hub::new(
                live,
                config.clone(),
                self.config_file,
                self.overlay,
                embedders_engine,
                issuer,
            )
            .map_err(BuildError::Approvals)?,
        );
        let decider = config
            .ask
            .decider
            .as_ref()
            .map(|addr| {
                let error = |error| BuildError::Decider {
                    addr: addr.clone(),
                    error,
                };
                decider_socket::Endpoint::open(addr).map_err(error)
            })
            .transpose()?;
        let admin_auth = match config.admin.enabled {
            true => AdminAuth::resolve(&config.admin.token, config.admin.token_file.as_deref())
                .map_err(BuildError::AdminToken)?,
            false => AdminAuth::Off,
        };
        let admin = Arc::new(
            Admin::new(
                hub.clone(),
                log.clone(),
                tunnels,
                admin_auth.token().map(str::to_owned),
            )
            .with_pending(pending.clone()),
        );
        let token = Some(config.auth.token.clone()).filter(|t| !t.is_empty());
        let mut proxy = HttpProxy::new(
            engine.clone(),
            sink.clone(),
            dialer.clone(),
            token,
            limits(&config),
        );
        let mut socks = SocksProxy::new(engine, sink, dialer, socks_options(&config));
        proxy = proxy.with_holder(pending.clone());
        socks = socks.with_holder(pending);
        if let Some(attempts) = attempts {
            proxy = proxy.with_bound_attempts(attempts.clone());
            socks = socks.with_bound_attempts(attempts);
        }
        if let Some(interception) = interception {
            proxy = proxy.with_interception(Arc::new(interception));
        }
        proxy = proxy.with_credentials(Arc::new(credentials));
        let proxy = Arc::new(proxy);
        if proxy_intercepts(&config) {
            socks = socks.with_interceptor(Arc::new(TlsInterceptor::new(proxy.clone())));
        }
        let socks = Arc::new(socks);
        let env = EnvBase {
            token: Some(config.auth.token.clone()).filter(|t| !t.is_empty()),
            ca: ca_files,
            placeholders,
        };
        Ok(Built {
            reserved,
            addrs,
            admin_auth,
            env,
            proxy,
            socks,
            admin,
            hub,
            log,
            decider,
        })
    }
}

/// A process holding secrets is made non-dumpable: its `/proc/PID/environ` (where a
/// `secret_env` value still is: the kernel keeps the environment leash started with) and memory
/// are then closed to processes of the same user, such as the child `leash exec` runs, and no
/// core file is written. Elsewhere than Linux there is nothing to do here.
fn keep_secrets_private() -> Result<(), String> {
    #[cfg(target_os = "linux")]
    rustix::process::set_dumpable_behavior(rustix::process::DumpableBehavior::NotDumpable)
        .map_err(|e| format!("credentials: cannot make the process non-dumpable: {e}"))?;
    Ok(())
}

/// The CA and upstream roots when `mitm.enabled`; an unsafe CA key stops the start.
fn interception(config: &Config) -> Result<Option<Interception>, BuildError> {
    if !proxy_intercepts(config) {
        return Ok(None);
    }
    let ca_dir = config
        .mitm
        .ca_dir
        .clone()
        .unwrap_or_else(mitm::default_ca_dir);
    let interception =
        Interception::new(&ca_dir, &config.mitm.upstream_ca).map_err(BuildError::Mitm)?;
    let ca = interception.leaves.ca();
    // Once, when the CA is new: the person must learn where it is and how clients come to trust it.
    if ca.created() {
        eprintln!(
            "leash: created the MITM CA at {}; programs trust it through `leash env` or `leash exec` \
             (SSL_CERT_FILE and the like). Do not add it to the system's trust store: its key is \
             readable by every program of this user",
            ca.cert_path().display()
        );
    }
    Ok(Some(interception))
}

/// The files children trust (SPEC §12): the bundle (system roots, the leash CA, the user's CAs),
/// the CA alone, Node's extra CAs and a wgetrc.
fn ca_files_for(interception: &Interception) -> Result<CaFiles, BuildError> {
    let ca = interception.leaves.ca();
    CaFiles::write(&ca.cert_path(), ca.cert_pem()).map_err(BuildError::Mitm)
}

fn proxy_intercepts(config: &Config) -> bool {
    config.mitm.enabled
}

fn listen_plan(config: &Config) -> ListenPlan {
    ListenPlan {
        ephemeral: config.listen.ephemeral,
        http: Some(config.listen.http),
        socks: config.socks.enabled.then_some(config.listen.socks),
        admin: config.admin.enabled.then_some(config.listen.admin),
        allow_non_loopback_proxy: config.listen.dangerously_allow_non_loopback_proxy,
        allow_non_loopback_admin: config.listen.dangerously_allow_non_loopback_admin,
    }
}

fn log_options(config: &Config) -> LogOptions {
    LogOptions {
        path: config.log.violations.clone(),
        rotation: match config.log.rotate {
            Rotation::Never => violations::Rotation::Never,
            Rotation::Hourly => violations::Rotation::Hourly,
            Rotation::Daily => violations::Rotation::Daily,
        },
        log_allowed: config.log.log_allowed,
        ring: config.log.ring,
    }
}

fn socks_options(config: &Config) -> SocksOptions {
    SocksOptions {
        token: Some(config.auth.token.clone()).filter(|t| !t.is_empty()),
        udp: config.socks.udp,
        handshake_timeout: config.limits.header_timeout.get(),
        idle_timeout: config.limits.idle_timeout.get(),
        max_connections: config.limits.max_connections.get(),
        relay: config.tunnel.relay,
    }
}

fn limits(config: &Config) -> Limits {
    Limits {
        header_timeout: config.limits.header_timeout.get(),
        idle_timeout: config.limits.idle_timeout.get(),
        upstream_timeout: config.limits.upstream_timeout.get(),
        max_request_head: config.limits.max_request_head.get(),
        max_connections: config.limits.max_connections.get(),
        relay: config.tunnel.relay,
    }
}

/// What a child's environment needs besides addresses and the attempt id.
#[derive(Clone, Debug)]
struct EnvBase {
    token: Option<String>,
    ca: Option<CaFiles>,
    /// Each credential's variable and placeholder (SPEC §17), never its secret.
    placeholders: Vec<(String, String)>,
}

/// A built instance: listeners bound, nothing served yet.
#[derive(Debug)]
pub struct Built {
    reserved: Reserved,
    addrs: Addrs,
    admin_auth: AdminAuth,
    env: EnvBase,
    proxy: Arc<HttpProxy>,
    socks: Arc<SocksProxy>,
    admin: Arc<Admin>,
    hub: Arc<Hub>,
    log: Option<Arc<ViolationLog>>,
    decider: Option<decider_socket::Endpoint>,
}

impl Built {
    /// The reserved addresses.
    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// The file holding the admin API's generated token (`None` when the token is configured,
    /// authentication is off, or there is no admin API).
    pub fn admin_token_file(&self) -> Option<&Path> {
        self.admin_auth.file()
    }

    /// The ready record for these addresses: it names the admin token's file, never the token.
    pub fn ready_record(&self) -> ReadyRecord {
        let mut record = ReadyRecord::new(self.addrs.http, self.addrs.socks, self.addrs.admin);
        record.admin_token_file = self.admin_auth.file().map(Path::to_owned);
        record.mitm = self.env.ca.is_some();
        record.ca_bundle = self.env.ca.as_ref().map(|ca| ca.bundle.clone());
        record.ca_cert = self.env.ca.as_ref().map(|ca| ca.ca.clone());
        record.placeholders = self.env.placeholders.iter().cloned().collect();
        record
    }

    /// Starts serving on the reserved listeners. Call inside a tokio runtime.
    pub fn run(self) -> Running {
        let (stop, stopped) = watch::channel(false);
        let mut running = Running {
            addrs: self.addrs,
            admin_auth: self.admin_auth,
            env: self.env,
            stop,
            stopped,
            tasks: Vec::new(),
            proxy: self.proxy,
            socks: self.socks,
            hub: self.hub,
            log: self.log,
        };
        if let Some(listener) = self.reserved.http {
            running.serve(Listener::Http, listener);
        }
        if let Some(listener) = self.reserved.socks {
            running.serve(Listener::Socks, listener);
        }
        if let Some(listener) = self.reserved.admin {
            let shutdown = running.shutdown_signal();
            let admin = admin::serve(listener, self.admin.clone(), shutdown);
            running.tasks.push(tokio::spawn(admin));
        }
        if let Some(endpoint) = self.decider {
            let decider =
                decider_socket::serve(endpoint, running.hub.clone(), running.stopped.clone());
            running.tasks.push(tokio::spawn(decider));
        }
        running
    }
}

/// Which proxy a listener serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Listener {
    /// The HTTP proxy.
    Http,
    /// The SOCKS5 proxy.
    Socks,
}

/// A serving instance.
#[derive(Debug)]
pub struct Running {
    addrs: Addrs,
    /// Kept while serving: a generated token's file is removed when this is dropped.
    admin_auth: AdminAuth,
    env: EnvBase,
    stop: watch::Sender<bool>,
    stopped: watch::Receiver<bool>,
    tasks: Vec<JoinHandle<std::io::Result<()>>>,
    proxy: Arc<HttpProxy>,
    socks: Arc<SocksProxy>,
    hub: Arc<Hub>,
    log: Option<Arc<ViolationLog>>,
}

impl Running {
    /// The addresses served on.
    pub fn addrs(&self) -> Addrs {
        self.addrs
    }

    /// The file holding the admin API's generated token, as in `Built::admin_token_file`.
    pub fn admin_token_file(&self) -> Option<&Path> {
        self.admin_auth.file()
    }

    /// Serves one more bound listener as `kind` until shutdown, with the same policy, log and
    /// limits (`leash exec --isolate` hands in listeners bound inside the command's namespace).
    pub fn serve(&mut self, kind: Listener, listener: std::net::TcpListener) {
        let shutdown = self.shutdown_signal();
        let task = match kind {
            Listener::Http => {
                tokio::spawn(http_proxy::serve(listener, self.proxy.clone(), shutdown))
            }
            Listener::Socks => {
                tokio::spawn(socks_proxy::serve(listener, self.socks.clone(), shutdown))
            }
        };
        self.tasks.push(task);
    }

    fn shutdown_signal(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut stopped = self.stopped.clone();
        async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }
    }

    /// The environment for a child whose requests carry `attempt` (SPEC §12).
    pub fn env(&self, attempt: &str) -> Vec<(String, String)> {
        self.env_with(attempt, None)
    }

    /// `env`, plus what needs the `leash` binary at `leash_bin` (`GIT_SSH_COMMAND` through
    /// `leash connect`); an embedder's own binary is not one, so `env` leaves it out.
    pub fn env_with(&self, attempt: &str, leash_bin: Option<&Path>) -> Vec<(String, String)> {
        let Some(http) = self.addrs.http else {
            return Vec::new();
        };
        let spec = EnvSpec {
            http,
            socks: self.addrs.socks,
            attempt,
            token: self.env.token.as_deref(),
            // An embedder's engine says nothing about `allow_local`: no local exception then.
            allow_local_all: self
                .hub
                .policy()
                .is_some_and(|p| *p.allow_local() == AllowLocal::All),
            ca: self.env.ca.as_ref(),
            leash_bin,
            placeholders: &self.env.placeholders,
        };
        child_env(&spec)
    }

    /// Binds a new attempt with a fresh secret (SPEC §18; needs `auth.attempts = "bound"`): its
    /// `env` is `env_with`'s for that attempt, its id and secret in every proxy URL.
    pub fn bind_attempt(
        &self,
        request: &AttemptRequest,
        leash_bin: Option<&Path>,
    ) -> Result<BoundAttempt, ControlError> {
        self.hub.bind_attempt_with(request, leash_bin)
    }

    /// An approver in this process (SPEC §14): while it lives, asks are held for it to answer.
    pub fn approver(&self) -> crate::Approver {
        crate::Approver::new(self.hub.clone())
    }

    /// Ends a bound attempt: its secret is refused from the next request on.
    pub fn end_attempt(&self, id: &str) -> Result<(), ControlError> {
        self.hub.end_attempt(id)
    }

    /// Up to `limit` logged events newer than `since`, each a log line as JSON (empty with a
    /// custom sink).
    pub fn events(&self, since: u64, limit: usize) -> Vec<serde_json::Value> {
        let Some(log) = &self.log else {
            return Vec::new();
        };
        log.page(since, limit)
            .events
            .iter()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }

    /// Switches the mode for new requests, closing open tunnels the new mode refuses. With an
    /// embedder's own `PolicyEngine` there is nothing here to switch: an error says so.
    pub fn set_mode(&self, mode: Mode) -> Result<Mode, ControlError> {
        self.hub.set_mode(mode)
    }

    /// Re-reads the config file; on error the running policy stays as it was.
    pub fn reload(&self) -> Result<(), ControlError> {
        self.hub.reload()
    }

    /// Adds or removes runtime rules; an invalid rule changes nothing.
    pub fn change_rules(&self, op: RuleOp, change: &RuleChange) -> Result<(), ControlError> {
        self.hub.change_rules(op, change)
    }

    /// Stops accepting, lets open requests finish (bounded), and flushes the violation log.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for task in self.tasks {
            match task.await {
                Ok(Ok(())) => {}
                Ok(Err(error)) => tracing::warn!(%error, "server ended with an error"),
                Err(error) => tracing::warn!(%error, "server task failed"),
            }
        }
        if let Some(log) = self.log {
            log.close();
            let stats = log.stats();
            if stats.in_gaps + stats.unrecorded > 0 {
                tracing::warn!(
                    events = stats.events,
                    written = stats.written,
                    in_gaps = stats.in_gaps,
                    unrecorded = stats.unrecorded,
                    "the violation log lost events (in_gaps: named by gap lines in the file; unrecorded: not)"
                );
            }
        }
        drop(self.admin_auth);
    }
}

/// hickory's resolver, configured by `[dns]`, its queries bounded by `limits.dns_timeout`.
fn dns_resolver(config: &Config) -> Result<Arc<dyn Resolver>, BuildError> {
    let settings = DnsSettings {
        resolv_conf: config.dns.resolv_conf.clone(),
        hosts: config.dns.hosts.clone(),
        timeout: config.limits.dns_timeout.get(),
    };
    let resolver = DnsResolver::new(&settings).map_err(BuildError::Dns)?;
    Ok(Arc::new(resolver))
}
