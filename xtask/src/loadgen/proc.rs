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

/// What each core did over a span: busy and total clock ticks, and the inter-processor
/// interrupts it received (`RES`chedule and `CAL`l-function ones; another core waking a thread
/// that sleeps on this one sends one). Read from `/proc/stat` and `/proc/interrupts`; empty where
/// those do not exist.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cores {
    /// Per core: (busy ticks, all ticks but stolen ones, inter-processor interrupts received).
    pub(crate) each: Vec<(u64, u64, u64)>,
}

impl Cores {
    pub(crate) fn now() -> Cores {
        let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
        let mut each: Vec<(u64, u64, u64)> = stat
            .lines()
            .filter(|l| l.starts_with("cpu") && !l.starts_with("cpu "))
            .map(|line| {
                let ticks: Vec<u64> = line
                    .split_whitespace()
                    .skip(1)
                    .filter_map(|t| t.parse().ok())
                    .collect();
                // user nice system idle iowait irq softirq steal: idle and iowait are not busy,
                // and steal is time the host gave to someone else.
                let all: u64 = ticks.iter().take(8).sum();
                let idle = ticks.get(3).copied().unwrap_or(0) + ticks.get(4).copied().unwrap_or(0);
                let steal = ticks.get(7).copied().unwrap_or(0);
                (all - idle - steal, all - steal, 0)
            })
            .collect();
        let interrupts = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
        for line in interrupts.lines() {
            let mut fields = line.split_whitespace();
            if !matches!(fields.next(), Some("RES:" | "CAL:")) {
                continue;
            }
            for (core, count) in each.iter_mut().zip(fields) {
                core.2 += count.parse::<u64>().unwrap_or(0);
            }
        }
        Cores { each }
    }

    /// What happened between `before` and `self`.
    pub(crate) fn since(&self, before: &Cores) -> Cores {
        let each = self
            .each
            .iter()
            .zip(&before.each)
            .map(|(a, b)| (a.0 - b.0, a.1 - b.1, a.2 - b.2))
            .collect();
        Cores { each }
    }

    pub(crate) fn add(&mut self, other: &Cores) {
        if self.each.is_empty() {
            self.each = vec![(0, 0, 0); other.each.len()];
        }
        for (a, b) in self.each.iter_mut().zip(&other.each) {
            *a = (a.0 + b.0, a.1 + b.1, a.2 + b.2);
        }
    }

    /// How busy `core` was (0–1).
    pub(crate) fn busy(&self, core: usize) -> Option<f64> {
        let (busy, all, _) = *self.each.get(core)?;
        (all > 0).then(|| busy as f64 / all as f64)
    }

    /// The busy time of `core` per operation, in microseconds (a clock tick is 10 ms).
    pub(crate) fn us_per_op(&self, core: usize, ops: u64) -> Option<f64> {
        let (busy, _, _) = *self.each.get(core)?;
        Some(busy as f64 * 10_000.0 / ops.max(1) as f64)
    }

    /// Inter-processor interrupts `core` received per operation.
    pub(crate) fn ipis_per_op(&self, core: usize, ops: u64) -> Option<f64> {
        let (_, _, ipis) = *self.each.get(core)?;
        Some(ipis as f64 / ops.max(1) as f64)
    }
}
