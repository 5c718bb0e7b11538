//! Network namespaces for tests that need another host: a fresh namespace joined to this one by a
//! veth pair, so a test can run a real server "elsewhere" (inside it, via `ip netns exec`) and reach
//! it at a non-loopback address, without a packet leaving the machine. While the namespace lives,
//! this host also has a non-loopback address of its own: the veth's host end.
//!
//! - Needs root (CI is root): call [`skip_unless_root`] first; it says loudly why a test is skipped.
//! - Names are unique per process and per namespace (`leash-PID-N`; interfaces `lhPIDnN` on this
//!   side, `lnPIDnN` inside, at most 15 bytes as Linux requires).
//! - Addresses come from the documentation ranges (192.0.2.0/24, then 198.51.100.0/24, then
//!   203.0.113.0/24), one /30 per namespace: `.1` is this host's end, `.2` the namespace's. A /30 that
//!   overlaps any address or route this host already has is skipped (a machine whose own network
//!   is a documentation range keeps it), and the choice is made under a lock file, so parallel test
//!   processes never pick the same one.
//! - Everything is removed on drop; namespaces left by a process that died without dropping them
//!   are removed by the next process that creates one.
//! - The namespace has no default route: it can answer this host's end and nothing else.

use std::{
    fs::File,
    net::{IpAddr, Ipv4Addr},
    process::Command,
    sync::atomic::{AtomicUsize, Ordering},
};

/// Namespaces created by this process so far.
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The documentation /24s the /30s are cut from, in order of preference.
const RANGES: [[u8; 3]; 3] = [[192, 0, 2], [198, 51, 100], [203, 0, 113]];

/// True when `test` must be skipped because this process is not root, after saying so loudly.
pub fn skip_unless_root(test: &str) -> bool {
    if rustix::process::geteuid().is_root() {
        return false;
    }
    eprintln!(
        "\n!!!! SKIPPED {test}: it creates network namespaces and needs root (CI runs as root) !!!!\n"
    );
    true
}

/// A network namespace joined to this host by a veth pair; removed on drop.
#[derive(Debug)]
pub struct NetNs {
    name: String,
    host_if: String,
    slot: usize,
}

impl NetNs {
    /// A fresh namespace with its veth pair up. Panics (with what `ip` said) if it cannot be made.
    pub fn new() -> NetNs {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let _lock = lock();
        remove_stale();
        let slot = free_slot();
        let netns = NetNs {
            name: format!("leash-{pid}-{n}"),
            host_if: format!("lh{pid:x}n{n}"),
            slot,
        };
        let ns_if = format!("ln{pid:x}n{n}");
        ip(&["netns", "add", &netns.name]);
        // From here on, dropping `netns` removes whatever was made.
        ip(&["link", "add", &netns.host_if, "type", "veth"]
            .into_iter()
            .chain(["peer", "name", &ns_if, "netns", &netns.name])
            .collect::<Vec<_>>());
        let host = format!("{}/30", netns.host_addr());
        ip(&["addr", "add", &host, "dev", &netns.host_if]);
        ip(&["link", "set", &netns.host_if, "up"]);
        let inside = format!("{}/30", netns.ns_addr());
        ip(&["-n", &netns.name, "addr", "add", &inside, "dev", &ns_if]);
        ip(&["-n", &netns.name, "link", "set", &ns_if, "up"]);
        ip(&["-n", &netns.name, "link", "set", "lo", "up"]);
        netns
    }

    /// The namespace's name, for `ip netns exec` and `ip -n`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// This host's end of the veth pair (an address of this host while the namespace lives).
    pub fn host_addr(&self) -> Ipv4Addr {
        self.addr(1)
    }

    /// The namespace's end of the veth pair, where servers inside it listen.
    pub fn ns_addr(&self) -> Ipv4Addr {
        self.addr(2)
    }

    /// This host's veth interface.
    pub fn host_interface(&self) -> &str {
        &self.host_if
    }

    /// An address leash's policy counts as public (not local), unique to this namespace: from
    /// 192.88.99.0/24, the deprecated 6to4 relay anycast prefix (RFC 7526), which nothing routes
    /// to any more. Give it to this host with [`NetNs::add_host_address`] to test what happens
    /// when this host has a public address.
    pub fn spare_public_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(192, 88, 99, 1 + self.slot as u8)
    }

    /// Adds `addr` (a single address, /32 or /128) to this host's end of the veth; it goes away
    /// with the namespace.
    pub fn add_host_address(&self, addr: IpAddr) {
        let prefix = match addr {
            IpAddr::V4(_) => format!("{addr}/32"),
            IpAddr::V6(_) => format!("{addr}/128"),
        };
        ip(&["addr", "add", &prefix, "dev", &self.host_if]);
    }

    /// `program` run inside the namespace (`ip netns exec NAME program`), killed when dropped.
    pub fn command(&self, program: &str) -> tokio::process::Command {
        let mut command = tokio::process::Command::new("ip");
        command
            .args(["netns", "exec", &self.name, program])
            .kill_on_drop(true);
        command
    }

    /// `program` inside the namespace, as a blocking `std` command (for a child read from a plain
    /// thread); unlike [`NetNs::command`] the caller kills it.
    pub fn std_command(&self, program: &str) -> Command {
        let mut command = Command::new("ip");
        command.args(["netns", "exec", &self.name, program]);
        command
    }

    fn addr(&self, host: u8) -> Ipv4Addr {
        let [a, b, c] = RANGES[self.slot / 64];
        Ipv4Addr::new(a, b, c, (self.slot % 64) as u8 * 4 + host)
    }
}

impl Default for NetNs {
    fn default() -> Self {
        NetNs::new()
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end, and with it the pair.
        let _ = quiet_ip(&["netns", "del", &self.name]);
        let _ = quiet_ip(&["link", "del", &self.host_if]);
    }
}

/// Runs `ip ARGS`, panicking with its diagnostics if it fails.
fn ip(args: &[&str]) {
    if let Err(error) = quiet_ip(args) {
        panic!("ip {}: {error}", args.join(" "));
    }
}

fn quiet_ip(args: &[&str]) -> Result<String, String> {
    let output = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip (install iproute2): {e}"))?;
    match output.status.success() {
        true => Ok(String::from_utf8_lossy(&output.stdout).into_owned()),
        false => Err(String::from_utf8_lossy(&output.stderr).into_owned()),
    }
}

/// Holds the machine-wide lock under which a /30 is chosen and assigned.
fn lock() -> File {
    let path = std::env::temp_dir().join("leash-tests-netns.lock");
    let file = File::create(&path).expect("the netns lock file");
    rustix::fs::flock(&file, rustix::fs::FlockOperation::LockExclusive).expect("the netns lock");
    file
}

/// Removes namespaces of ours whose process is gone.
fn remove_stale() {
    let list = quiet_ip(&["netns", "list"]).unwrap_or_default();
    for name in list.lines().filter_map(|l| l.split_whitespace().next()) {
        let Some(pid) = name
            .strip_prefix("leash-")
            .and_then(|rest| rest.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = quiet_ip(&["netns", "del", name]);
        }
    }
}

/// The first /30 (as a slot number) that overlaps no address or route of this host.
fn free_slot() -> usize {
    let taken = taken_prefixes();
    (0..RANGES.len() * 64)
        .find(|&slot| {
            let [a, b, c] = RANGES[slot / 64];
            let net = u32::from(Ipv4Addr::new(a, b, c, (slot % 64) as u8 * 4));
            let spare = u32::from(Ipv4Addr::new(192, 88, 99, 1 + slot as u8));
            !taken.iter().any(|&(base, len)| {
                overlaps((net, 30), (base, len)) || overlaps((spare, 32), (base, len))
            })
        })
        .expect("a free /30 in the documentation ranges")
}

/// Every IPv4 prefix this host has an address in or a route to (the default route aside).
fn taken_prefixes() -> Vec<(u32, u8)> {
    let addrs = quiet_ip(&["-4", "-o", "addr", "show"]).expect("ip addr show");
    let routes = quiet_ip(&["-4", "route", "show", "table", "all"]).expect("ip route show");
    let from_addrs = addrs
        .lines()
        .filter_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1));
    let from_routes = routes.lines().filter_map(|l| {
        let mut words = l.split_whitespace();
        let first = words.next()?;
        // Local, broadcast and other typed routes name the type first.
        match first.parse::<Ipv4Addr>().is_ok() || first.contains('/') {
            true => Some(first),
            false => words.next(),
        }
    });
    from_addrs
        .map(|a| a.split('/').next().unwrap_or(a)) // an address is taken as itself, /32
        .chain(from_routes)
        .filter_map(parse_prefix)
        .filter(|&(_, len)| len > 0)
        .collect()
}

fn parse_prefix(text: &str) -> Option<(u32, u8)> {
    let (addr, len) = text.split_once('/').unwrap_or((text, "32"));
    Some((u32::from(addr.parse::<Ipv4Addr>().ok()?), len.parse().ok()?))
}

fn overlaps((a, a_len): (u32, u8), (b, b_len): (u32, u8)) -> bool {
    let len = a_len.min(b_len);
    let mask = u32::MAX.checked_shl(32 - u32::from(len)).unwrap_or(0);
    a & mask == b & mask
}
