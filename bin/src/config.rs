//! The configuration file (SPEC §10): one TOML document, unknown keys refused, every error naming
//! the file, the key path and what was expected.

use std::{
    fmt, io,
    net::SocketAddr,
    num::NonZeroUsize,
    path::{Path, PathBuf},
};

use listeners::RelayMode;
use policy::{Mode, Policy, PolicyBuilder, PolicyConfig, PolicyError};
use serde::{Deserialize, Serialize};
use serde_with::{serde_as, DisplayFromStr};

pub use self::credentials::{CredentialConfig, HeadersConfig};
use crate::{
    duration::{ConnectionCount, HeadSize, Timeout},
    upstream::UpstreamConfig,
};

/// The whole configuration file; every table and key is optional.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `full` or `limited`.
    pub mode: Mode,
    /// Allow, deny and `allow_local` rules.
    pub policy: PolicyConfig,
    /// Listener addresses.
    pub listen: ListenConfig,
    /// The SOCKS5 listener.
    pub socks: SocksConfig,
    /// TLS interception.
    pub mitm: MitmConfig,
    /// Proxy authentication.
    pub auth: AuthConfig,
    /// The admin API.
    pub admin: AdminConfig,
    /// The violation log.
    pub log: LogConfig,
    /// Limits and timeouts.
    pub limits: LimitsConfig,
    /// Name lookups.
    pub dns: DnsConfig,
    /// How tunnels move bytes.
    pub tunnel: TunnelConfig,
    /// Asking a person (SPEC §14).
    pub ask: AskConfig,
    /// The upstream (corporate) proxy (SPEC §16).
    pub upstream: UpstreamConfig,
    /// Credentials that never enter the sandbox (SPEC §17).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub credentials: Vec<CredentialConfig>,
    /// Header rules (SPEC §17).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<HeadersConfig>,
}

/// `[ask]` (SPEC §14): how long a held `ask` waits for an answer.
#[serde_as]
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AskConfig {
    /// How long a held request waits before it is refused as `ask`.
    #[serde_as(as = "DisplayFromStr")]
    pub hold: Timeout,
    /// The approvals file (`always` answers); default `leash-approvals.toml` beside the config
    /// file, else `approvals.toml` in leash's state directory.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub approvals: Option<PathBuf>,
    /// The decider socket (`unix:PATH` or `fd:N`), an approver outside leash; read at start only.
    #[serde_as(as = "Option<DisplayFromStr>")]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub decider: Option<crate::DeciderAddr>,
}

impl Default for AskConfig {
    fn default() -> Self {
        AskConfig {
            hold: Timeout::new(std::time::Duration::from_secs(60)).expect("a valid default"),
            approvals: None,
            decider: None,
        }
    }
}

/// `[tunnel]` (an addition to SPEC §10).
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TunnelConfig {
    /// `"splice"` (kernel to kernel on Linux; elsewhere the same as `"copy"`) or `"copy"`
    /// (through user space: the portable path, also a way around a kernel that refuses
    /// `splice(2)`).
    pub relay: RelayMode,
}

/// `[listen]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct ListenConfig {
    /// Bind `127.0.0.1:0` for every enabled listener; the addresses below are ignored.
    pub ephemeral: bool,
    /// The HTTP proxy address.
    pub http: SocketAddr,
    /// The SOCKS5 proxy address.
    pub socks: SocketAddr,
    /// The admin API address.
    pub admin: SocketAddr,
    /// Allow the proxies on a non-loopback address.
    pub dangerously_allow_non_loopback_proxy: bool,
    /// Allow the admin API on a non-loopback address.
    pub dangerously_allow_non_loopback_admin: bool,
}

impl Default for ListenConfig {
    fn default() -> Self {
        ListenConfig {
            ephemeral: false,
            http: SocketAddr::from(([127, 0, 0, 1], 3128)),
            socks: SocketAddr::from(([127, 0, 0, 1], 1080)),
            admin: SocketAddr::from(([127, 0, 0, 1], 9180)),
            dangerously_allow_non_loopback_proxy: false,
            dangerously_allow_non_loopback_admin: false,
        }
    }
}

/// `[socks]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct SocksConfig {
    /// Run the SOCKS5 listener.
    pub enabled: bool,
    /// Allow UDP ASSOCIATE.
    pub udp: bool,
}

impl Default for SocksConfig {
    fn default() -> Self {
        SocksConfig {
            enabled: true,
            udp: false,
        }
    }
}

/// `[mitm]`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct MitmConfig {
    /// Intercept TLS (needed for limited mode over HTTPS).
    pub enabled: bool,
    /// Where the CA lives; `None` means `$XDG_DATA_HOME/leash/ca` or `~/.local/share/leash/ca`.
    pub ca_dir: Option<PathBuf>,
    /// Extra CA files trusted for upstream TLS.
    pub upstream_ca: Vec<PathBuf>,
}

/// `[auth]`.
#[derive(Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// The proxy password required from clients; empty means none. Not accepted with bound
    /// attempts, where each attempt has a secret of its own.
    pub token: String,
    /// `free` (SPEC §2: any attempt id a client names) or `bound` (SPEC §18: the attempt is the
    /// one the client's secret is bound to, through `POST /attempts`).
    pub attempts: AttemptsMode,
}

/// `auth.attempts`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AttemptsMode {
    /// The username is the attempt id, whatever it is (the password is the proxy token, if set).
    #[default]
    Free,
    /// The password is a bound attempt's secret and names the attempt.
    Bound,
}

/// `[admin]`.
#[derive(Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    /// Run the admin API.
    pub enabled: bool,
    /// The bearer token required by the admin API: empty (the default) generates one at start
    /// into `token_file`; `"none"` turns authentication off (SPEC §19).
    pub token: String,
    /// Where a generated token is written (`0600`); default
    /// `$XDG_RUNTIME_DIR/leash/admin-PID.token`, else under the state directory.
    pub token_file: Option<PathBuf>,
}

impl Default for AdminConfig {
    fn default() -> Self {
        AdminConfig {
            enabled: true,
            token: String::new(),
            token_file: None,
        }
    }
}

/// Tokens never reach a log or a debug print.
macro_rules! redacted_debug {
    ($ty:ident { $($field:ident),* }) => {
        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                let redact = match self.token.as_str() {
                    "" | crate::admin_token::NO_ADMIN_TOKEN => self.token.as_str(),
                    _ => "<redacted>",
                };
                f.debug_struct(stringify!($ty))$(.field(stringify!($field), &self.$field))*.field("token", &redact).finish()
            }
        }
    };
}

redacted_debug!(AuthConfig { attempts });
redacted_debug!(AdminConfig {
    enabled,
    token_file
});

/// `[log]`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The violation log file (JSONL).
    pub violations: PathBuf,
    /// When to start a new file.
    pub rotate: Rotation,
    /// Also log allowed decisions.
    pub log_allowed: bool,
    /// How many events the in-memory ring keeps for the admin API.
    pub ring: usize,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            violations: PathBuf::from("leash-violations.jsonl"),
            rotate: Rotation::Never,
            log_allowed: false,
            ring: 1000,
        }
    }
}

/// Log rotation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Rotation {
    /// One file.
    #[default]
    Never,
    /// A file per hour.
    Hourly,
    /// A file per day.
    Daily,
}

/// `[limits]`: each value is checked when the file is read (see `duration.rs`), so a limit that
/// would refuse everything never reaches a running proxy.
#[serde_as]
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Upstream TCP connect timeout.
    #[serde_as(as = "DisplayFromStr")]
    pub connect_timeout: Timeout,
    /// DNS lookup timeout.
    #[serde_as(as = "DisplayFromStr")]
    pub dns_timeout: Timeout,
    /// Idle timeout of tunnels (no byte either way).
    #[serde_as(as = "DisplayFromStr")]
    pub idle_timeout: Timeout,
    /// Time a client has to send a request head, and to start the next one on a kept-alive
    /// connection (an addition to SPEC §10's keys).
    #[serde_as(as = "DisplayFromStr")]
    pub header_timeout: Timeout,
    /// Time an upstream has to answer a forwarded request (an addition to SPEC §10's keys).
    #[serde_as(as = "DisplayFromStr")]
    pub upstream_timeout: Timeout,
    /// The largest request head accepted (bytes).
    pub max_request_head: HeadSize,
    /// The most client connections served at once.
    pub max_connections: ConnectionCount,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        let secs = |s| Timeout::new(std::time::Duration::from_secs(s)).expect("a valid default");
        LimitsConfig {
            connect_timeout: secs(10),
            dns_timeout: secs(5),
            idle_timeout: secs(300),
            header_timeout: secs(30),
            upstream_timeout: secs(60),
            max_request_head: HeadSize::new(65536).expect("a valid default"),
            max_connections: ConnectionCount::new(4096).expect("a valid default"),
        }
    }
}

/// `[dns]` (an addition to SPEC §10): where names are looked up, and how many lookups may be in
/// flight. leash asks the name servers itself (hickory's resolver), never `getaddrinfo`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DnsConfig {
    /// The `resolv.conf` naming the name servers; absent means the system's (`/etc/resolv.conf`).
    /// Checked at load: it must be readable and name at least one `nameserver`.
    pub resolv_conf: Option<PathBuf>,
    /// The hosts file, consulted before DNS and re-read when it changes (a missing one is empty).
    pub hosts: PathBuf,
    /// The most lookups in flight at once, for all clients together.
    pub max_lookups: NonZeroUsize,
    /// The most lookups in flight at once for one client (its attempt id, else its address); at
    /// most `max_lookups`.
    pub max_lookups_per_client: NonZeroUsize,
}

impl Default for DnsConfig {
    fn default() -> Self {
        let limits = listeners::LookupLimits::default();
        let nonzero = |n| NonZeroUsize::new(n).expect("the default bounds are not zero");
        DnsConfig {
            resolv_conf: None,
            hosts: PathBuf::from("/etc/hosts"),
            max_lookups: nonzero(limits.total),
            max_lookups_per_client: nonzero(limits.per_client),
        }
    }
}

impl DnsConfig {
    /// What is wrong with `[dns]` beyond its types: the key and the message.
    fn check(&self) -> Result<(), (&'static str, String)> {
        if self.max_lookups_per_client > self.max_lookups {
            let message = format!(
                "must be at most `dns.max_lookups` ({}), got {}",
                self.max_lookups, self.max_lookups_per_client
            );
            return Err(("max_lookups_per_client", message));
        }
        if let Some(path) = &self.resolv_conf {
            listeners::check_resolv_conf(path).map_err(|error| {
                let message =
                    std::iter::successors(Some(&error as &dyn std::error::Error), |e| e.source())
                        .map(|e| e.to_string())
                        .collect::<Vec<_>>()
                        .join(": ");
                ("resolv_conf", message)
            })?;
        }
        Ok(())
    }
}

/// A configuration that could not be loaded. Every variant names the file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("{}: cannot read the config file: {error}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why (part of the message, so not chained as a separate cause).
        error: io::Error,
    },
    /// The file is not valid TOML or does not fit the schema.
    #[error("{}{}: key `{key}`: {message}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
    Parse {
        /// The file.
        path: PathBuf,
        /// The line, when known.
        line: Option<usize>,
        /// The key path (`policy.allow[2]`, `limits.dns_timeout`).
        key: String,
        /// What was wrong and what was expected.
        message: String,
    },
    /// A rule in `[policy]` is invalid.
    #[error("{}{}: key `policy.{}`: {}", path.display(), line.map(|l| format!(":{l}")).unwrap_or_default(), error.key(), error.error())]
    Policy {
        /// The file.
        path: PathBuf,
        /// The line of the rule, when known.
        line: Option<usize>,
        /// The rule error (part of the message).
        error: PolicyError,
    },
}

impl Config {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Config::parse(&text, path)
    }

    /// `load` for a command that never runs the proxy (`leash env`, `leash ca`): credentials are
    /// checked, but their secrets are not read (a sandboxed shell does not have them).
    pub fn load_without_secrets(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_owned(),
            error,
        })?;
        Config::parse_with(&text, path, Secrets::Skip)
    }

    /// Parses `text`, naming `path` in errors; rules are checked too, so a loaded config always
    /// builds a policy, and each credential's secret is read (and dropped), so a missing one
    /// stops the start.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        Config::parse_with(text, path, Secrets::Read)
    }

    fn parse_with(text: &str, path: &Path, secrets: Secrets) -> Result<Config, ConfigError> {
        let deserializer = toml::Deserializer::new(text);
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            let key = error.path().to_string();
            let inner = error.into_inner();
            let line = rule_line::no_proxy_line(text, &key);
            ConfigError::Parse {
                path: path.to_owned(),
                line: line.or_else(|| inner.span().map(|span| line_of(text, span.start))),
                key,
                message: inner.message().to_owned(),
            }
        })?;
        config.check_policy().map_err(|error| ConfigError::Policy {
            path: path.to_owned(),
            line: rule_line::rule_line(text, error.key()),
            error,
        })?;
        if let Err((key, message)) = config.dns.check() {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                line: key_line(text, "dns", key),
                key: format!("dns.{key}"),
                message,
            });
        }
        config.check_credentials(text, path, secrets)?;
        if let Err(message) = check_token(&config.auth.token) {
            return Err(ConfigError::Parse {
                path: path.to_owned(),
                line: None,
                key: "auth.token".to_owned(),
                message: message.to_owned(),
            });
        }
        Ok(config)
    }

    /// The compiled policy of `[policy]`, `mode` and whether MITM is on; credential hosts are
    /// intercepted on every port.
    pub fn policy(&self) -> Result<Policy, PolicyError> {
        self.policy_builder()?.build()
    }

    /// Whether `policy` would succeed: every rule parsed and checked, nothing compiled (a start
    /// checks the config twice and compiles it once).
    pub fn check_policy(&self) -> Result<(), PolicyError> {
        self.policy_builder()?.check()
    }

    /// The builder `policy` compiles: `[policy]`, the mode, MITM and the credential hosts. Every
    /// policy leash builds from a config starts here (the admin API's rebuilds too).
    pub(crate) fn policy_builder(&self) -> Result<PolicyBuilder, PolicyError> {
        Ok(PolicyBuilder::from_config(&self.policy)?
            .mode(self.mode)
            .tls_inspection(self.mitm.enabled)
            .always_inspect(credentials::credential_hosts(&self.credentials)))
    }

    /// `[[credentials]]` and `[[headers]]`, checked (secrets read and dropped again).
    fn check_credentials(
        &self,
        text: &str,
        path: &Path,
        secrets: Secrets,
    ) -> Result<(), ConfigError> {
        let error = |table: &str, index: usize, (key, message): (String, String)| {
            let line = array_key_line(
                text,
                table,
                index,
                key.split(['[', '.']).next().unwrap_or(""),
            );
            let key = match key.is_empty() {
                true => format!("{table}[{index}]"),
                false => format!("{table}[{index}].{key}"),
            };
            ConfigError::Parse {
                path: path.to_owned(),
                line,
                key,
                message,
            }
        };
        credentials::check_credentials(&self.credentials, self.mitm.enabled, secrets)
            .map_err(|(index, e)| error("credentials", index, e))?;
        for (index, headers) in self.headers.iter().enumerate() {
            headers.rule().map_err(|e| error("headers", index, e))?;
        }
        Ok(())
    }

    /// The credentials (secrets read now, placeholders from `random`) and header rules the
    /// proxy applies.
    pub fn credentials(
        &self,
        random: impl FnMut() -> String,
    ) -> Result<(http_proxy::Credentials, Vec<(String, String)>), String> {
        let built = credentials::build_credentials(&self.credentials, random)
            .map_err(|(index, (key, message))| format!("credentials[{index}].{key}: {message}"))?;
        let rules = (self.headers.iter().enumerate())
            .map(|(index, h)| {
                h.rule()
                    .map_err(|(key, message)| format!("headers[{index}].{key}: {message}"))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let variables = built
            .iter()
            .map(|c| (c.variable.clone(), c.placeholder.clone()))
            .collect();
        Ok((http_proxy::Credentials::new(built, rules), variables))
    }

    /// Where the config comes from: `--config`, else `$LEASH_CONFIG`, else `./leash.toml` if it
    /// exists; `None` means the embedded defaults.
    pub fn locate(flag: Option<&Path>) -> Option<PathBuf> {
        if let Some(path) = flag {
            return Some(path.to_owned());
        }
        if let Some(path) = std::env::var_os("LEASH_CONFIG").filter(|p| !p.is_empty()) {
            return Some(PathBuf::from(path));
        }
        let local = PathBuf::from("leash.toml");
        local.is_file().then_some(local)
    }
}

/// Whether loading reads credentials' secrets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Secrets {
    Read,
    Skip,
}

/// The line of `key` inside `[table]`, found by its text (the TOML parser keeps no spans once a
/// value is deserialised).
fn key_line(text: &str, table: &str, key: &str) -> Option<usize> {
    let header = format!("[{table}]");
    let mut in_table = false;
    for (index, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            in_table = line == header;
        } else if in_table && line.split('=').next().map(str::trim) == Some(key) {
            return Some(index + 1);
        }
    }
    None
}

/// The line of `key` in the `index`-th `[[table]]`, else of that table's header.
fn array_key_line(text: &str, table: &str, index: usize, key: &str) -> Option<usize> {
    let header = format!("[[{table}]]");
    let (mut seen, mut header_line) = (0usize, None);
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('[') {
            if header_line.is_some() {
                break;
            }
            if line == header {
                seen += 1;
                if seen == index + 1 {
                    header_line = Some(number + 1);
                }
            }
        } else if header_line.is_some()
            && !key.is_empty()
            && line.split('=').next().map(str::trim) == Some(key)
        {
            return Some(number + 1);
        }
    }
    header_line
}

pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Whether `token` can be a proxy token: credentials split at the last `:` (attempt ids may hold
/// colons), so a token with one could never be matched and every client would be refused.
pub(crate) fn check_token(token: &str) -> Result<(), &'static str> {
    match token.contains(':') {
        true => {
            Err("a proxy token cannot contain `:` (it separates the attempt id from the token)")
        }
        false => Ok(()),
    }
}

mod credentials;
mod rule_line;

#[cfg(test)]
mod tests;
