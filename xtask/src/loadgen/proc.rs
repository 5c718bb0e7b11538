//! What `/proc` says about the leash process (resident memory, CPU time) and about each core.

use std::collections::BTreeMap;

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
/// that sleeps on this one sends one). Read from `/proc/stat` and `/proc/interrupts`, by CPU
/// number; empty where those do not exist. Machine-wide: anything else running on a core counts.
#[derive(Clone, Debug, Default)]
pub(crate) struct Cores {
    each: BTreeMap<usize, CoreTime>,
}

#[derive(Clone, Copy, Debug, Default)]
struct CoreTime {
    /// Ticks spent in user, nice, system, irq and softirq (guest time is inside user and nice).
    busy: u64,
    /// Those and the idle and iowait ones; stolen ticks (the host ran someone else) are not time
    /// this core had.
    all: u64,
    /// `None` where `/proc/interrupts` has no `RES` or `CAL` line (not x86).
    ipis: Option<u64>,
}

impl Cores {
    pub(crate) fn now() -> Cores {
        let mut each = stat_ticks();
        add_ipis(&mut each);
        Cores { each }
    }

    /// What happened between `before` and `self`; a core missing from either, or whose counters
    /// went backwards, is left out.
    pub(crate) fn since(&self, before: &Cores) -> Cores {
        let mut each = BTreeMap::new();
        for (cpu, now) in &self.each {
            let Some(then) = before.each.get(cpu) else {
                continue;
            };
            let ipis = match (now.ipis, then.ipis) {
                (Some(a), Some(b)) => a.checked_sub(b),
                _ => None,
            };
            if let (Some(busy), Some(all)) = (
                now.busy.checked_sub(then.busy),
                now.all.checked_sub(then.all),
            ) {
                each.insert(*cpu, CoreTime { busy, all, ipis });
            }
        }
        Cores { each }
    }

    pub(crate) fn add(&mut self, other: &Cores) {
        for (cpu, time) in &other.each {
            let sum = self.each.entry(*cpu).or_insert(CoreTime {
                ipis: time.ipis.map(|_| 0),
                ..CoreTime::default()
            });
            sum.busy += time.busy;
            sum.all += time.all;
            sum.ipis = sum.ipis.zip(time.ipis).map(|(a, b)| a + b);
        }
    }

    /// How busy `core` was (0–1).
    pub(crate) fn busy(&self, core: usize) -> Option<f64> {
        let time = self.each.get(&core)?;
        (time.all > 0).then(|| time.busy as f64 / time.all as f64)
    }

    /// The busy time of `core` per operation, in microseconds.
    pub(crate) fn us_per_op(&self, core: usize, ops: u64) -> Option<f64> {
        let time = self.each.get(&core)?;
        (ops > 0).then(|| time.busy as f64 * 1e6 / (TICKS_PER_SECOND * ops as f64))
    }

    /// Inter-processor interrupts `core` received per operation.
    pub(crate) fn ipis_per_op(&self, core: usize, ops: u64) -> Option<f64> {
        let ipis = self.each.get(&core)?.ipis?;
        (ops > 0).then(|| ipis as f64 / ops as f64)
    }
}

/// Each core's ticks, from `/proc/stat`'s `cpuN` lines.
fn stat_ticks() -> BTreeMap<usize, CoreTime> {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let mut each = BTreeMap::new();
    for line in stat.lines() {
        let mut fields = line.split_whitespace();
        let Some(cpu) = fields
            .next()
            .and_then(|f| f.strip_prefix("cpu")?.parse().ok())
        else {
            continue;
        };
        let t: Vec<u64> = fields.filter_map(|f| f.parse().ok()).collect();
        let at = |i: usize| t.get(i).copied().unwrap_or(0);
        let busy = at(0) + at(1) + at(2) + at(5) + at(6);
        let time = CoreTime {
            busy,
            all: busy + at(3) + at(4),
            ipis: None,
        };
        each.insert(cpu, time);
    }
    each
}

/// Adds each core's `RES` and `CAL` counts from `/proc/interrupts`, whose columns are named
/// `CPUn` in its first line.
fn add_ipis(each: &mut BTreeMap<usize, CoreTime>) {
    let interrupts = std::fs::read_to_string("/proc/interrupts").unwrap_or_default();
    let mut lines = interrupts.lines();
    let columns: Vec<Option<usize>> = lines
        .next()
        .unwrap_or("")
        .split_whitespace()
        .map(|c| c.strip_prefix("CPU")?.parse().ok())
        .collect();
    for line in lines {
        let mut fields = line.split_whitespace();
        if !matches!(fields.next(), Some("RES:" | "CAL:")) {
            continue;
        }
        for (cpu, count) in columns.iter().zip(fields) {
            let (Some(cpu), Ok(count)) = (cpu, count.parse::<u64>()) else {
                continue;
            };
            if let Some(core) = each.get_mut(cpu) {
                core.ipis = Some(core.ipis.unwrap_or(0) + count);
            }
        }
    }
}

/// `/proc/stat`'s clock ticks per second (`USER_HZ`), 100 on every Linux architecture the
/// project runs on.
const TICKS_PER_SECOND: f64 = 100.0;
