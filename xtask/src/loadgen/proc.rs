//! What `/proc` says about the leash process: resident memory and CPU time.

/// The resident set of `pid` in KiB.
pub(crate) fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// User plus system CPU time of `pid`, in clock ticks (1/100 s on Linux).
pub(crate) fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name start at field 3 (the state); utime and stime
    // are fields 14 and 15.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    field(11) + field(12)
}

/// Open file descriptors of `pid`: how `rss_tunnel` sees leash let its tunnels go.
pub(crate) fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |dir| dir.count())
}

/// Descriptors `rss_tunnel` asks for: 10 000 tunnels are two sockets each here (client and held
/// end) and up to six in leash (two sockets, two splice pipes), which leash inherits from us.
const WANTED_FILES: u64 = 1 << 17;

/// As many open files as the hard limit allows, and more when we may raise the hard limit too
/// (as root): thousands of idle connections and tunnels need them. Returns the soft limit.
pub(crate) fn raise_file_limit() -> u64 {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let limit = getrlimit(Resource::Nofile);
    let set = |current, maximum| setrlimit(Resource::Nofile, Rlimit { current, maximum });
    let hard_enough = limit.maximum.is_none_or(|hard| hard >= WANTED_FILES);
    if hard_enough || set(Some(WANTED_FILES), Some(WANTED_FILES)).is_err() {
        let _ = set(limit.maximum, limit.maximum);
    }
    getrlimit(Resource::Nofile).current.unwrap_or(u64::MAX)
}
