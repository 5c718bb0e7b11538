//! The resolver leash dials with: hickory's asynchronous stub resolver, reading `resolv.conf` and
//! the hosts file itself. A lookup is a future holding one UDP socket per query, not a thread:
//! abandoning it (the dialer's timeout drops it) closes its sockets, so a name whose DNS never
//! answers costs nothing once abandoned, and cannot fill a thread pool the way `getaddrinfo` on
//! tokio's blocking pool did.
//!
//! Caching is hickory's own (`DnsLru`): an answer is kept until `now + min(TTL of its records)`,
//! capped at [`MAX_CACHE_TTL`], with no minimum (`positive_min_ttl` and `negative_min_ttl` are
//! zero), so nothing is kept longer than its records' TTL. A cached answer goes back through the
//! dialer's `vet` on every use like a fresh one: the cache never weakens the rebinding defence.

use std::{
    fs, io,
    net::IpAddr,
    path::{Path, PathBuf},
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime},
};

use arc_swap::ArcSwap;
use hickory_resolver::{
    config::{LookupIpStrategy, ResolveHosts, ResolverConfig, ResolverOpts},
    name_server::TokioConnectionProvider,
    proto::{op::Query, rr::RecordType},
    system_conf::parse_resolv_conf,
    Hosts, Name, ResolveError, TokioResolver,
};

use crate::dial::{BoxFuture, Resolver};

/// The longest any answer is cached, whatever its TTL says.
pub const MAX_CACHE_TTL: Duration = Duration::from_secs(3600);

const SYSTEM_RESOLV_CONF: &str = "/etc/resolv.conf";

/// How many answers the cache holds.
const CACHE_SIZE: usize = 4096;

/// How often the hosts file's metadata is looked at: a change is seen within this time.
const HOSTS_CHECK_INTERVAL: Duration = Duration::from_secs(1);

/// Where the resolver's configuration comes from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DnsSettings {
    /// The `resolv.conf` naming the name servers (and `search`, `ndots`, `timeout`, `attempts`);
    /// `None` is the system's, `/etc/resolv.conf`, or if that does not exist, a name server on
    /// `127.0.0.1`, as the C library does.
    pub resolv_conf: Option<PathBuf>,
    /// The hosts file, consulted before DNS and re-read when it changes.
    pub hosts: PathBuf,
    /// The longest one query may wait for an answer (the dialer bounds the whole lookup).
    pub timeout: Duration,
}

impl DnsSettings {
    /// The system's files: `/etc/resolv.conf` and `/etc/hosts`.
    pub fn system(timeout: Duration) -> DnsSettings {
        DnsSettings {
            resolv_conf: None,
            hosts: PathBuf::from("/etc/hosts"),
            timeout,
        }
    }
}

/// A resolver configuration that could not be read.
#[derive(Debug, thiserror::Error)]
pub enum DnsConfigError {
    /// The file could not be read.
    #[error("cannot read {}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: io::Error,
    },
    /// The file is not a `resolv.conf`, or names no name server.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

/// Checks that `path` is a readable `resolv.conf` naming at least one name server.
pub fn check_resolv_conf(path: &Path) -> Result<(), DnsConfigError> {
    read_resolv_conf(path).map(drop)
}

/// hickory's resolver, behind a hosts file that is re-read when it changes.
#[derive(Debug)]
pub struct DnsResolver {
    resolver: TokioResolver,
    hosts: HostsFile,
}

impl DnsResolver {
    /// A resolver configured from `settings`. A missing or unreadable hosts file is an empty one.
    pub fn new(settings: &DnsSettings) -> Result<DnsResolver, DnsConfigError> {
        let (config, mut options) = match &settings.resolv_conf {
            Some(path) => read_resolv_conf(path)?,
            None => system_conf()?,
        };
        tune(&mut options, settings.timeout);
        let resolver =
            TokioResolver::builder_with_config(config, TokioConnectionProvider::default())
                .with_options(options)
                .build();
        Ok(DnsResolver {
            resolver,
            hosts: HostsFile::new(settings.hosts.clone()),
        })
    }
}

impl Resolver for DnsResolver {
    fn resolve<'a>(&'a self, name: &'a str) -> BoxFuture<'a, io::Result<Vec<IpAddr>>> {
        // A name the hosts file knows is answered from it alone, as the C library's `files`
        // source does: no query leaves for it (hickory would still ask DNS for the other family).
        if let Some(addrs) = self.hosts.lookup(name) {
            return Box::pin(std::future::ready(Ok(addrs)));
        }
        Box::pin(async move {
            let answer = self.resolver.lookup_ip(name).await.map_err(lookup_error)?;
            Ok(answer.iter().collect())
        })
    }
}

/// The resolver's options: leash's timeout, both address families (as `getaddrinfo` gives), a
/// cache that keeps nothing past its TTL, and the hosts file read by [`HostsFile`] instead.
fn tune(options: &mut ResolverOpts, timeout: Duration) {
    options.timeout = options.timeout.min(timeout);
    options.ip_strategy = LookupIpStrategy::Ipv4AndIpv6;
    options.cache_size = CACHE_SIZE;
    options.positive_min_ttl = Some(Duration::ZERO);
    options.negative_min_ttl = Some(Duration::ZERO);
    options.positive_max_ttl = Some(MAX_CACHE_TTL);
    options.negative_max_ttl = Some(MAX_CACHE_TTL);
    options.use_hosts_file = ResolveHosts::Never;
}

/// The system's `resolv.conf`; without one, the C library's default name server.
fn system_conf() -> Result<(ResolverConfig, ResolverOpts), DnsConfigError> {
    match read_resolv_conf(Path::new(SYSTEM_RESOLV_CONF)) {
        Err(DnsConfigError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            tracing::warn!("no {SYSTEM_RESOLV_CONF}: asking the name server on 127.0.0.1");
            let (config, options) =
                parse_resolv_conf("nameserver 127.0.0.1\n").expect("a one-line resolv.conf parses");
            Ok((config, options))
        }
        other => other,
    }
}

fn read_resolv_conf(path: &Path) -> Result<(ResolverConfig, ResolverOpts), DnsConfigError> {
    let text = fs::read(path).map_err(|source| DnsConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let invalid = |message: String| DnsConfigError::Invalid {
        path: path.to_owned(),
        message,
    };
    let (config, options) = parse_resolv_conf(&text).map_err(|e| invalid(e.to_string()))?;
    if config.name_servers().is_empty() {
        return Err(invalid("no `nameserver` line".to_owned()));
    }
    Ok((config, options))
}

fn lookup_error(error: ResolveError) -> io::Error {
    match error.is_no_records_found() {
        true => io::Error::new(io::ErrorKind::NotFound, "no such name"),
        false => io::Error::other(error),
    }
}

/// The hosts file, as last read, and what it looked like then.
#[derive(Debug)]
struct HostsFile {
    path: PathBuf,
    hosts: ArcSwap<Hosts>,
    seen: Mutex<Seen>,
}

#[derive(Debug)]
struct Seen {
    stamp: Option<Stamp>,
    checked: Instant,
}

/// What tells one version of the file from the next without reading it.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

impl HostsFile {
    fn new(path: PathBuf) -> HostsFile {
        let stamp = stamp(&path);
        let hosts = read_hosts(&path);
        HostsFile {
            path,
            hosts: ArcSwap::from_pointee(hosts),
            seen: Mutex::new(Seen {
                stamp,
                checked: Instant::now(),
            }),
        }
    }

    /// The addresses the file gives `name` (both families), if it names it.
    fn lookup(&self, name: &str) -> Option<Vec<IpAddr>> {
        self.refresh();
        let name = Name::from_str(name).ok()?;
        let hosts = self.hosts.load();
        let addrs: Vec<IpAddr> = [RecordType::A, RecordType::AAAA]
            .into_iter()
            .filter_map(|family| hosts.lookup_static_host(&Query::query(name.clone(), family)))
            .flat_map(|lookup| {
                lookup
                    .iter()
                    .filter_map(|data| data.ip_addr())
                    .collect::<Vec<_>>()
            })
            .collect();
        (!addrs.is_empty()).then_some(addrs)
    }

    /// Reads the file again if it changed since it was last seen; looks at most once a second.
    fn refresh(&self) {
        let mut seen = self.seen.lock().expect("hosts lock");
        if seen.checked.elapsed() < HOSTS_CHECK_INTERVAL {
            return;
        }
        seen.checked = Instant::now();
        let now = stamp(&self.path);
        if now != seen.stamp {
            seen.stamp = now;
            self.hosts.store(Arc::new(read_hosts(&self.path)));
        }
    }
}

/// The file's entries (none if it cannot be read: DNS still answers).
fn read_hosts(path: &Path) -> Hosts {
    let mut hosts = Hosts::default();
    match fs::File::open(path).and_then(|file| hosts.read_hosts_conf(file)) {
        Ok(()) => hosts,
        Err(error) => {
            tracing::debug!(path = %path.display(), %error, "hosts file not read");
            Hosts::default()
        }
    }
}

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = fs::metadata(path).ok()?;
    Some(Stamp {
        modified: meta.modified().ok(),
        len: meta.len(),
    })
}

#[cfg(test)]
mod tests;
