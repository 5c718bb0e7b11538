//! The workloads of issue 9, each measured through leash and directly against the origin.

use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::{Duration, Instant},
};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::{client::conn::http1, header::HOST, Request};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
};

use crate::{origin, proc, websocket, Scale};

/// One line of the table.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    name: &'static str,
    unit: &'static str,
    value: f64,
    direct: Option<f64>,
    latency: Option<Latency>,
    cpu_us_per_op: Option<f64>,
    /// Further numbers of this row (a count, a fraction): the json's `extra`, the table's last
    /// column.
    extra: Vec<(&'static str, f64)>,
}

/// Per-operation latency in microseconds through leash, and directly where the row has a direct
/// side.
#[derive(Clone, Copy, Debug)]
struct Latency {
    p50: u64,
    p99: u64,
    direct: Option<(u64, u64)>,
}

impl Latency {
    /// The percentiles of `leashed` (and `direct`), if operations were timed one by one.
    fn of(leashed: &mut Sample, direct: Option<&mut Sample>) -> Option<Latency> {
        if leashed.latencies_us.is_empty() {
            return None;
        }
        Some(Latency {
            p50: leashed.percentile(0.5),
            p99: leashed.percentile(0.99),
            direct: direct.map(|d| (d.percentile(0.5), d.percentile(0.99))),
        })
    }

    /// p99 over p50: issue 18 wants at most 5 for every allow and deny workload.
    fn spread(&self) -> f64 {
        self.p99 as f64 / self.p50.max(1) as f64
    }
}

impl Row {
    /// A rate through leash beside the same load sent directly, with both sides' percentiles.
    fn compared(
        name: &'static str,
        unit: &'static str,
        leashed: &mut Sample,
        direct: &mut Sample,
    ) -> Row {
        let mut row = Row::leashed(name, unit, leashed);
        row.direct = Some(direct.rate());
        row.latency = Latency::of(leashed, Some(direct));
        row
    }

    /// Adds where the time went, when leash and the load generator each have a core: how busy
    /// both were through leash, the load generator's core time per operation through leash and
    /// directly, their quotient (the row's ratio when that core is the one that fills; that time
    /// itself depends on the proxy, which the load generator's core may have to wake), and how
    /// many inter-processor interrupts leash's core received per operation (rescheduling and
    /// function-call ones: the other core waking leash's sleeping thread sends one).
    fn with_cores(mut self, scale: Scale, leashed: &Sample, direct: &Sample) -> Row {
        let (Some(core), Some(other)) = (scale.leash_core, scale.loadgen_core) else {
            return self;
        };
        let (through_us, direct_us) = (
            leashed.cores.us_per_op(other, leashed.ops),
            direct.cores.us_per_op(other, direct.ops),
        );
        let bound = through_us
            .zip(direct_us)
            .and_then(|(t, d)| (t > 0.0).then(|| d / t));
        let numbers = [
            ("leash_core_busy", leashed.cores.busy(core)),
            ("loadgen_core_busy", leashed.cores.busy(other)),
            ("loadgen_core_us_per_op", through_us),
            ("direct_loadgen_core_us_per_op", direct_us),
            ("ratio_bound_by_loadgen_core", bound),
            (
                "ipis_to_leash_core_per_op",
                leashed.cores.ipis_per_op(core, leashed.ops),
            ),
        ];
        let known = numbers.into_iter().filter_map(|(k, v)| Some((k, v?)));
        self.extra.extend(known);
        self
    }

    /// A rate through leash with nothing direct to compare it with (a refusal).
    fn leashed(name: &'static str, unit: &'static str, sample: &mut Sample) -> Row {
        let mut row = Row::new(name, unit, sample.rate());
        row.cpu_us_per_op = sample.cpu_us_per_op();
        row.latency = Latency::of(sample, None);
        row
    }

    fn new(name: &'static str, unit: &'static str, value: f64) -> Row {
        Row {
            name,
            unit,
            value,
            direct: None,
            latency: None,
            cpu_us_per_op: None,
            extra: Vec::new(),
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        let latency = self.latency.map(|l| {
            let (d50, d99) = (l.direct.map(|d| d.0), l.direct.map(|d| d.1));
            serde_json::json!({"p50": l.p50, "p99": l.p99, "direct_p50": d50, "direct_p99": d99, "p99_over_p50": l.spread()})
        });
        let extra: serde_json::Map<String, serde_json::Value> = self
            .extra
            .iter()
            .map(|(k, v)| ((*k).to_owned(), serde_json::json!(v)))
            .collect();
        serde_json::json!({
            "name": self.name, "unit": self.unit, "value": self.value, "direct": self.direct,
            "ratio": self.direct.map(|d| self.value / d),
            "latency_us": latency,
            "leash_cpu_us_per_op": self.cpu_us_per_op,
            "extra": extra,
        })
    }
}

/// The table as text.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<21} {:>21} {:>10} {:>6} {:>13} {:>13} {:>7} {:>9}  {}\n",
        "workload",
        "leash",
        "direct",
        "ratio",
        "p50/p99 us",
        "direct p50/99",
        "p99/p50",
        "cpu us/op",
        "extra"
    );
    let or_dash = |v: Option<String>| v.unwrap_or_else(|| "-".to_owned());
    for row in rows {
        let direct = or_dash(row.direct.map(|d| format!("{d:.1}")));
        let ratio = or_dash(row.direct.map(|d| format!("{:.0}%", 100.0 * row.value / d)));
        let latency = or_dash(row.latency.map(|l| format!("{}/{}", l.p50, l.p99)));
        let direct_latency = or_dash(
            row.latency
                .and_then(|l| l.direct)
                .map(|(a, b)| format!("{a}/{b}")),
        );
        let spread = or_dash(row.latency.map(|l| format!("{:.1}", l.spread())));
        let cpu = or_dash(row.cpu_us_per_op.map(|c| format!("{c:.1}")));
        let extra: Vec<String> = row
            .extra
            .iter()
            .map(|(k, v)| format!("{k}={}", short(*v)))
            .collect();
        out += &format!(
            "{:<21} {:>10.1} {:<10} {:>10} {:>6} {:>13} {:>13} {:>7} {:>9}  {}\n",
            row.name,
            row.value,
            row.unit,
            direct,
            ratio,
            latency,
            direct_latency,
            spread,
            cpu,
            extra.join(" ")
        );
    }
    out
}

/// A count as an integer, a fraction with three decimals.
fn short(v: f64) -> String {
    match v.fract() == 0.0 {
        true => format!("{v:.0}"),
        false => format!("{v:.3}"),
    }
}

/// A running `leash proxy` child, pinned to its own core when the suite was given one.
struct Leash {
    child: Child,
    pid: u32,
    http: SocketAddr,
    socks: SocketAddr,
}

async fn start_leash(
    binary: &Path,
    config: &Path,
    core: Option<usize>,
) -> anyhow::Result<(Leash, Duration)> {
    let mut command = Command::new(binary);
    command
        .arg("proxy")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true);
    let (mut child, started) = spawn_on_core(command, core)?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?)
        .read_line(&mut line)
        .await?;
    let elapsed = started.elapsed();
    let ready: serde_json::Value = serde_json::from_str(&line).context("the ready record")?;
    let addr = |key: &str| -> anyhow::Result<SocketAddr> {
        Ok(ready[key].as_str().context("an address")?.parse()?)
    };
    let pid = ready["pid"].as_u64().context("pid")? as u32;
    Ok((
        Leash {
            pid,
            http: addr("http")?,
            socks: addr("socks")?,
            child,
        },
        elapsed,
    ))
}

/// Spawns `command` from a thread pinned to `core`: the child inherits that thread's affinity, so
/// leash runs on its own core from its first instruction, and the measured start is leash's
/// alone (through `taskset`, its exec added about 2 ms on this machine kind).
fn spawn_on_core(mut command: Command, core: Option<usize>) -> anyhow::Result<(Child, Instant)> {
    let runtime = tokio::runtime::Handle::current();
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let _entered = runtime.enter();
                if let Some(core) = core {
                    pin_to_core(core).context("pinning the spawning thread")?;
                }
                let started = Instant::now();
                Ok((command.spawn().context("starting leash")?, started))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the spawning thread panicked"))?
    })
}

/// Pins the calling thread to `core`. Only on Linux (where the bench's layout is defined); elsewhere
/// a no-op, and the bench runs unpinned, as it does on a one-core machine.
fn pin_to_core(core: usize) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        let mut cores = rustix::thread::CpuSet::new();
        cores.set(core);
        rustix::thread::sched_setaffinity(None, &cores)?;
    }
    #[cfg(not(target_os = "linux"))]
    let _ = core;
    Ok(())
}

/// The ordinary policy, in `dir/name`: 1000 `**.` allow rules, 100 deny rules, and the local
/// addresses `local` (the origin) allowed.
fn write_config(dir: &Path, name: &str, local: &[SocketAddr]) -> anyhow::Result<PathBuf> {
    let allow: Vec<String> = (0..1000)
        .map(|i| format!("\"**.svc{i}.bench-allow.test\""))
        .collect();
    let mut deny: Vec<String> = (0..99)
        .map(|i| format!("\"bad{i}.bench-deny.test\""))
        .collect();
    deny.push("\"denied.bench\"".into());
    write_policy(dir, name, local, &allow, &deny)
}

/// `write_config`'s file with `rules` allow rules, a third each exact, `*.` and `**.`, and a tenth
/// as many deny rules: the policy of a large organisation, for `startup_*_rules`.
fn write_large_config(dir: &Path, origin: SocketAddr, rules: usize) -> anyhow::Result<PathBuf> {
    let allow: Vec<String> = (0..rules)
        .map(|i| match i % 3 {
            0 => format!("\"host{i}.bench-rules.test\""),
            1 => format!("\"*.wild{i}.bench-rules.test\""),
            _ => format!("\"**.tree{i}.bench-rules.test\""),
        })
        .collect();
    let deny: Vec<String> = (0..rules / 10)
        .map(|i| format!("\"bad{i}.bench-rules.test\""))
        .collect();
    write_policy(dir, "bench-large.toml", &[origin], &allow, &deny)
}

/// A `leash proxy` config named `name` in `dir`: these allow and deny rules (quoted), the local
/// addresses `local` allowed, ephemeral ports, no admin.
fn write_policy(
    dir: &Path,
    name: &str,
    local: &[SocketAddr],
    allow: &[String],
    deny: &[String],
) -> anyhow::Result<PathBuf> {
    let local: Vec<String> = local.iter().map(|a| format!("\"{a}\"")).collect();
    let text = format!(
        "[policy]\nallow = [{}]\ndeny = [{}]\nallow_local = [{}]\n[listen]\nephemeral = true\n[admin]\nenabled = false\n[log]\nviolations = {:?}\n[limits]\nmax_connections = 20000\n",
        allow.join(", "),
        deny.join(", "),
        local.join(", "),
        dir.join("violations.jsonl").to_str().context("a UTF-8 path")?
    );
    let path = dir.join(name);
    std::fs::write(&path, text)?;
    Ok(path)
}

/// Which workloads run: all, or those `--only` names. A row named after its size answers to its
/// full-run name and to its `--quick` name.
#[derive(Clone, Copy)]
struct Wants(Option<&'static str>);

impl Wants {
    fn any(self, names: &[&str]) -> bool {
        self.0
            .is_none_or(|only| only.split(',').any(|n| names.contains(&n)))
    }

    fn one(self, name: &str) -> bool {
        self.any(&[name])
    }
}

/// The name of a row that has a size: `full` in the full run, `quick` in `--quick`.
fn sized(scale: Scale, full: &'static str, quick: &'static str) -> &'static str {
    match scale.quick {
        true => quick,
        false => full,
    }
}

pub(crate) async fn run_all(binary: &Path, scale: Scale) -> anyhow::Result<Vec<Row>> {
    let origin = origin::start(scale.bulk_bytes).await?;
    let dir = std::env::temp_dir().join(format!("leash-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = write_config(&dir, "bench.toml", &[origin])?;
    let wants = Wants(scale.only);
    let before = host_speed(scale)?;
    let before_wake = cross_core_wake_us(scale)?;
    let (leash, mut rows) = startup(binary, &config, scale, ("startup", "idle_rss")).await?;
    shared_leash(&leash, origin, scale, wants, &mut rows).await?;
    drop(leash);
    own_leash(binary, &dir, origin, scale, wants, &mut rows).await?;
    if wants.one("exec_isolate") {
        rows.push(exec_isolate(binary, &config).await?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    let after = host_speed(scale)?;
    let mut row = Row::new(
        "host_loop",
        "ms",
        before.iter().chain(&after).copied().fold(0.0, f64::max),
    );
    row.extra = vec![
        ("core0_before", before[0]),
        ("core1_before", before[1]),
        ("core0_after", after[0]),
        ("core1_after", after[1]),
    ];
    rows.push(row);
    let after_wake = cross_core_wake_us(scale)?;
    let mut row = Row::new("host_wake", "us", before_wake.max(after_wake));
    row.extra = vec![("before", before_wake), ("after", after_wake)];
    rows.push(row);
    Ok(rows)
}

/// The median round trip, in µs, of a message between a thread on core 0 and one on core 1, each
/// asleep until the other wakes it: what every hop through leash costs in the bench's layout, and
/// what a busy host (where waking another virtual CPU traps to the hypervisor) makes slow while a
/// plain loop still runs at full speed.
fn cross_core_wake_us(scale: Scale) -> anyhow::Result<f64> {
    let trips = match scale.quick {
        true => 200,
        false => 5_000,
    };
    let pin = |core: usize| {
        let _ = pin_to_core(core);
    };
    let (to_echo, echo_in) = std::sync::mpsc::channel::<Instant>();
    let (echo_out, back) = std::sync::mpsc::channel::<Instant>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            pin(1);
            while let Ok(sent) = echo_in.recv() {
                if echo_out.send(sent).is_err() {
                    break;
                }
            }
        });
        let timer = scope.spawn(move || {
            pin(0);
            let mut trips_us = Vec::with_capacity(trips);
            for _ in 0..trips {
                to_echo.send(Instant::now()).ok()?;
                let sent = back.recv().ok()?;
                trips_us.push(sent.elapsed().as_secs_f64() * 1e6);
                // Long enough for the other side to fall asleep again.
                std::thread::sleep(Duration::from_micros(50));
            }
            trips_us.sort_by(f64::total_cmp);
            Some(trips_us[trips_us.len() / 2])
        });
        timer
            .join()
            .ok()
            .flatten()
            .context("the wake-up timing threads failed")
    })
}

/// Milliseconds a fixed loop takes on core 0 and on core 1: this project's machines share their
/// cores with other guests, and a run on a slowed host (every cost up, in both columns) is told
/// apart by this row, not by its numbers. About 210 ms on a quiet 2-core machine of this kind.
fn host_speed(scale: Scale) -> anyhow::Result<[f64; 2]> {
    let iterations: u64 = match scale.quick {
        true => 10_000_000,
        false => 100_000_000,
    };
    let on_core = |core: usize| -> anyhow::Result<f64> {
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    // Unpinnable (one core): the loop runs wherever it is.
                    let _ = pin_to_core(core);
                    let started = Instant::now();
                    let mut sum = 0u64;
                    for i in 0..iterations {
                        sum = std::hint::black_box(sum.wrapping_add(i));
                    }
                    std::hint::black_box(sum);
                    started.elapsed().as_secs_f64() * 1000.0
                })
                .join()
                .map_err(|_| anyhow::anyhow!("the timing thread panicked"))
        })
    };
    Ok([on_core(0)?, on_core(1)?])
}

/// Five starts of leash with `config` (the median exec→ready time is the first row) and the
/// resident memory of the last, idle (the second row); the last is left running.
async fn startup(
    binary: &Path,
    config: &Path,
    scale: Scale,
    (startup, idle_rss): (&'static str, &'static str),
) -> anyhow::Result<(Leash, Vec<Row>)> {
    // The median of 21 starts: one start varies by a millisecond or more on a shared machine.
    let mut startups = Vec::new();
    for _ in 0..20 {
        let (mut leash, took) = start_leash(binary, config, scale.leash_core).await?;
        startups.push(took);
        let _ = leash.child.kill().await;
    }
    let (leash, took) = start_leash(binary, config, scale.leash_core).await?;
    startups.push(took);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let rows = vec![
        Row::new(startup, "ms", median(startups).as_secs_f64() * 1000.0),
        Row::new(idle_rss, "MB", proc::rss_kib(leash.pid) as f64 / 1024.0),
    ];
    Ok((leash, rows))
}

/// The workloads that share one leash with the ordinary policy.
async fn shared_leash(
    leash: &Leash,
    origin: SocketAddr,
    scale: Scale,
    wants: Wants,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    if wants.any(&["http_abs", "deny_http"]) {
        rows.push(http_abs(leash, origin, scale).await?);
        rows.push(deny_http(leash, origin, scale, rows.last().and_then(|r| r.direct)).await?);
    }
    if wants.one("http_fresh") {
        rows.push(http_fresh(leash, origin, scale).await?);
    }
    if wants.one("connect_rate") {
        rows.push(rate("connect_rate", leash, 32, origin, scale, Via::Connect).await?);
    }
    if wants.one("connect_rate_512") {
        // Many more agents at once: does the tail stay within 5× the median?
        rows.push(rate("connect_rate_512", leash, 512, origin, scale, Via::Connect).await?);
    }
    if wants.one("socks_rate") {
        rows.push(rate("socks_rate", leash, 32, origin, scale, Via::Socks).await?);
    }
    if wants.one("deny_connect") {
        rows.push(deny_connect(leash, scale).await?);
    }
    if wants.one("connect_bulk") {
        rows.push(bulk("connect_bulk", leash, origin, scale, Via::Connect).await?);
    }
    if wants.one("socks_bulk") {
        rows.push(bulk("socks_bulk", leash, origin, scale, Via::Socks).await?);
    }
    if wants.one("ws_bulk") {
        // A WebSocket through the listener (absolute-form `ws://`) whose origin sends the bytes.
        let (proxy, n) = (leash.http, scale.bulk_bytes);
        let fetch = move |through: bool| websocket::download(through.then_some(proxy), origin, n);
        let (mut leashed, mut direct) = bulk_rounds(leash.pid, scale, fetch).await?;
        rows.push(Row::compared("ws_bulk", "MB/s", &mut leashed, &mut direct));
    }
    if wants.any(&["rss_5k", "rss_idle_n"]) {
        rows.push(rss_idle(leash, scale).await?);
    }
    Ok(())
}

/// The workloads that start a leash of their own (another config, or a fresh process).
async fn own_leash(
    binary: &Path,
    dir: &Path,
    origin: SocketAddr,
    scale: Scale,
    wants: Wants,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    let tunnels = sized(scale, "rss_tunnel_10k", "rss_tunnel_500");
    if wants.any(&["rss_tunnel_10k", "rss_tunnel_500"]) {
        rows.push(rss_tunnels(binary, dir, origin, tunnels, scale).await?);
    }
    let large = (
        sized(scale, "startup_100k_rules", "startup_10k_rules"),
        sized(scale, "idle_rss_100k_rules", "idle_rss_10k_rules"),
    );
    if wants.any(&[
        "startup_100k_rules",
        "idle_rss_100k_rules",
        large.0,
        large.1,
    ]) {
        let config = write_large_config(dir, origin, scale.rules)?;
        let (_leash, large_rows) = startup(binary, &config, scale, large).await?;
        rows.extend(large_rows);
    }
    if wants.one("mitm_rate") {
        rows.push(mitm_rate(binary, dir, scale, false).await?);
    }
    if wants.one("mitm_resume_rate") {
        rows.push(mitm_rate(binary, dir, scale, true).await?);
    }
    if wants.one("upstream_connect_rate") {
        rows.push(upstream_connect_rate(binary, dir, origin, scale).await?);
    }
    if wants.one("bare_connect_rate") {
        rows.push(bare_connect_rate(origin, scale).await?);
    }
    if wants.one("bare_forward_rate") {
        rows.push(bare_forward_rate(origin, scale).await?);
    }
    Ok(())
}

/// `connect_rate` through the bare relay (`bare.rs`) in leash's place, on leash's core: what the
/// layout allows a `CONNECT` proxy that does nothing else.
async fn bare_connect_rate(origin: SocketAddr, scale: Scale) -> anyhow::Result<Row> {
    let relay = bare_relay(None, scale).await?;
    rate("bare_connect_rate", &relay, 32, origin, scale, Via::Connect).await
}

/// `connect_rate`'s direct operation (a new connection, one `GET /small`) through the bare relay
/// as a plain forwarder to the origin, on leash's core, beside the same directly: what the layout
/// costs a connection whose ends are on two cores, before any proxy protocol.
async fn bare_forward_rate(origin: SocketAddr, scale: Scale) -> anyhow::Result<Row> {
    let forwarder = bare_relay(Some(origin), scale).await?;
    let to = forwarder.http;
    let through = move |_| async move { anyhow::Ok(direct_fresh_get(to)) };
    let direct = move |_| async move { anyhow::Ok(direct_fresh_get(origin)) };
    let (mut forwarded, mut direct) =
        side_by_side(32, scale, forwarder.pid, through, direct).await?;
    let row = Row::compared("bare_forward_rate", "op/s", &mut forwarded, &mut direct);
    Ok(row.with_cores(scale, &forwarded, &direct))
}

/// The bare relay (`bare.rs`) started on leash's core, standing in for leash: a `CONNECT` relay,
/// or with `forward_to` a plain forwarder. `rate` uses only the stand-in's `http` and `pid`.
async fn bare_relay(forward_to: Option<SocketAddr>, scale: Scale) -> anyhow::Result<Leash> {
    let mut command = Command::new(std::env::current_exe()?);
    command
        .arg("--bare-relay")
        .stdout(Stdio::piped())
        .kill_on_drop(true);
    if let Some(target) = forward_to {
        command.arg("--forward").arg(target.to_string());
    }
    let (mut child, _) = spawn_on_core(command, scale.leash_core)?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().context("stdout")?)
        .read_line(&mut line)
        .await?;
    let addr: SocketAddr = line.trim().parse().context("the bare relay's address")?;
    Ok(Leash {
        pid: child.id().context("the bare relay's pid")?,
        http: addr,
        socks: addr,
        child,
    })
}

/// `leash exec -- true` with `--isolate` (user and network namespaces, loopback up, listeners
/// handed over) beside the same without it: the start-up cost of isolation, median of 9 each,
/// alternating. Not pinned: `exec` runs the command and leash together, as a person would.
async fn exec_isolate(binary: &Path, config: &Path) -> anyhow::Result<Row> {
    let (binary, config) = (binary.to_owned(), config.to_owned());
    let run = move |isolate: bool| -> anyhow::Result<Duration> {
        let mut command = std::process::Command::new(&binary);
        command.args(["exec", "--quiet", "--config"]).arg(&config);
        if isolate {
            command.arg("--isolate");
        }
        let started = Instant::now();
        let status = command.args(["--", "true"]).status()?;
        anyhow::ensure!(status.success(), "leash exec failed: {status}");
        Ok(started.elapsed())
    };
    let (plain, isolated) = tokio::task::spawn_blocking(move || {
        let (mut plain, mut isolated) = (Vec::new(), Vec::new());
        for _ in 0..9 {
            plain.push(run(false)?);
            isolated.push(run(true)?);
        }
        anyhow::Ok((median(plain), median(isolated)))
    })
    .await??;
    let mut row = Row::new("exec_isolate", "ms", isolated.as_secs_f64() * 1000.0);
    row.direct = Some(plain.as_secs_f64() * 1000.0);
    Ok(row)
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

/// Limited mode with MITM: a new connection, CONNECT, TLS with leash's leaf (warm cache), one GET
/// inside, per operation; directly: a new TLS connection to the origin and the same GET. With
/// `resume` (`mitm_resume_rate`) each side's client keeps one session store for all its
/// connections, and the row records the fraction of handshakes that resumed on each side: whether
/// leash's leaves let a client resume is what it finds out, not what it assumes.
async fn mitm_rate(binary: &Path, dir: &Path, scale: Scale, resume: bool) -> anyhow::Result<Row> {
    let origin_ca = dir.join("origin-ca.pem");
    let origin = crate::tls::origin(&origin_ca).await?;
    let ca_dir = dir.join("mitm-ca");
    let text = format!(
        "mode = \"limited\"\n[policy]\nallow_local = [\"{origin}\"]\n[mitm]\nenabled = true\nca_dir = {:?}\nupstream_ca = [{:?}]\n[listen]\nephemeral = true\n[admin]\nenabled = false\n[log]\nviolations = {:?}\n",
        ca_dir.to_str().context("a UTF-8 path")?,
        origin_ca.to_str().context("a UTF-8 path")?,
        dir.join("mitm-violations.jsonl").to_str().context("a UTF-8 path")?
    );
    let config = dir.join("mitm.toml");
    std::fs::write(&config, text)?;
    let (leash, _) = start_leash(binary, &config, scale.leash_core).await?;
    let (through_tally, direct_tally) = (Arc::new(Tally::default()), Arc::new(Tally::default()));
    let through_client = crate::tls::client(&ca_dir.join("ca.pem"), resume)?;
    let through = tls_gets(
        through_client,
        Some(leash.http),
        origin,
        through_tally.clone(),
    );
    let direct_client = crate::tls::client(&origin_ca, resume)?;
    let direct = tls_gets(direct_client, None, origin, direct_tally.clone());
    let (mut leashed, mut direct) = side_by_side(16, scale, leash.pid, through, direct).await?;
    let name = if resume {
        "mitm_resume_rate"
    } else {
        "mitm_rate"
    };
    let mut row = Row::compared(name, "op/s", &mut leashed, &mut direct);
    if resume {
        row.extra = vec![
            ("resumed", through_tally.fraction()),
            ("direct_resumed", direct_tally.fraction()),
        ];
    }
    Ok(row)
}

/// Handshakes made, and how many of them resumed a session.
#[derive(Default)]
struct Tally {
    resumed: AtomicU64,
    all: AtomicU64,
}

impl Tally {
    fn count(&self, resumed: bool) {
        self.resumed
            .fetch_add(u64::from(resumed), Ordering::Relaxed);
        self.all.fetch_add(1, Ordering::Relaxed);
    }

    fn fraction(&self) -> f64 {
        let all = self.all.load(Ordering::Relaxed).max(1);
        self.resumed.load(Ordering::Relaxed) as f64 / all as f64
    }
}

/// The operation of `mitm_rate`: a fresh TCP connection (to `proxy` and `CONNECT` through it, or
/// straight to the origin), TLS with `client`, one GET; each handshake tallied.
fn tls_gets(
    client: tokio_rustls::TlsConnector,
    proxy: Option<SocketAddr>,
    origin: SocketAddr,
    tally: Arc<Tally>,
) -> impl Fn(usize) -> std::future::Ready<anyhow::Result<OpLoop>> + Send + Sync + Clone + 'static {
    move |_| {
        let (client, tally) = (client.clone(), tally.clone());
        let op = move || -> OpFuture {
            let (client, tally) = (client.clone(), tally.clone());
            Box::pin(async move {
                let stream = match proxy {
                    Some(proxy) => {
                        let mut stream = TcpStream::connect(proxy).await?;
                        let connect = format!("CONNECT {origin} HTTP/1.1\r\n\r\n");
                        stream.write_all(connect.as_bytes()).await?;
                        read_head(&mut stream).await?;
                        stream
                    }
                    None => TcpStream::connect(origin).await?,
                };
                tally.count(crate::tls::get(&client, stream, origin).await?);
                Ok(())
            })
        };
        std::future::ready(anyhow::Ok(OpLoop::Fresh(Box::new(op))))
    }
}

/// `connect_rate` behind an upstream proxy (SPEC §16): leash → a second `leash proxy` acting as
/// the corporate proxy (its own token, which the first presents) → origin, a fresh `CONNECT` and
/// one GET per operation; directly: the same GET on a fresh connection. Both leashes share
/// leash's core, so the row is the whole cost of the extra hop on the leash side of the machine.
async fn upstream_connect_rate(
    binary: &Path,
    dir: &Path,
    origin: SocketAddr,
    scale: Scale,
) -> anyhow::Result<Row> {
    let log = |name: &str| -> anyhow::Result<String> {
        Ok(format!(
            "{:?}",
            dir.join(name).to_str().context("a UTF-8 path")?
        ))
    };
    let common =
        "[listen]\nephemeral = true\n[admin]\nenabled = false\n[limits]\nmax_connections = 20000\n";
    let corp_text = format!(
        "[policy]\nallow_local = [\"{origin}\"]\n[auth]\ntoken = \"corp\"\n{common}[log]\nviolations = {}\n",
        log("corp-violations.jsonl")?
    );
    let corp_config = dir.join("corp.toml");
    std::fs::write(&corp_config, corp_text)?;
    let (corp, _) = start_leash(binary, &corp_config, scale.leash_core).await?;
    // `resolve` does not matter for an address target: leash vets it either way.
    let text = format!(
        "[policy]\nallow_local = [\"{origin}\"]\n[upstream]\nproxy = \"http://bench:corp@{}\"\n{common}[log]\nviolations = {}\n",
        corp.http,
        log("upstream-violations.jsonl")?
    );
    let config = dir.join("upstream.toml");
    std::fs::write(&config, text)?;
    let (leash, _) = start_leash(binary, &config, scale.leash_core).await?;
    let row = rate(
        "upstream_connect_rate",
        &leash,
        32,
        origin,
        scale,
        Via::Connect,
    )
    .await;
    drop((leash, corp));
    row
}

/// What one workload measured: operations, time, latencies, and leash's CPU time.
#[derive(Debug, Default)]
struct Sample {
    ops: u64,
    secs: f64,
    latencies_us: Vec<u64>,
    leash_ticks: Option<u64>,
    /// What each core of the machine did meanwhile.
    cores: proc::Cores,
}

impl Sample {
    fn merge(&mut self, other: Sample) {
        self.ops += other.ops;
        self.secs += other.secs;
        self.latencies_us.extend(other.latencies_us);
        self.leash_ticks = match (self.leash_ticks, other.leash_ticks) {
            (None, None) => None,
            (a, b) => Some(a.unwrap_or(0) + b.unwrap_or(0)),
        };
        self.cores.add(&other.cores);
    }

    fn rate(&self) -> f64 {
        self.ops as f64 / self.secs.max(f64::EPSILON)
    }

    /// Leash's CPU time per operation, in microseconds (a clock tick is 10 ms).
    fn cpu_us_per_op(&self) -> Option<f64> {
        self.leash_ticks
            .map(|ticks| ticks as f64 * 10_000.0 / (self.ops as f64).max(1.0))
    }

    fn percentile(&mut self, p: f64) -> u64 {
        self.latencies_us.sort_unstable();
        let last = self.latencies_us.len().saturating_sub(1);
        let at = ((self.latencies_us.len() as f64 * p) as usize).min(last);
        self.latencies_us.get(at).copied().unwrap_or(0)
    }
}

/// Rounds taken through leash and directly, alternating.
const ROUNDS: u32 = 3;

/// The same load through leash and directly, in alternating rounds: drift over the run (sockets
/// piling up in TIME_WAIT, the machine's own noise) then falls on both sides alike.
async fn side_by_side<F, Fut, G, Gut>(
    concurrency: usize,
    scale: Scale,
    leash_pid: u32,
    through: F,
    direct: G,
) -> anyhow::Result<(Sample, Sample)>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<OpLoop>> + Send,
    G: Fn(usize) -> Gut + Send + Sync + Clone + 'static,
    Gut: std::future::Future<Output = anyhow::Result<OpLoop>> + Send,
{
    let each = scale.duration / ROUNDS;
    let (mut leashed, mut direct_sample) = (Sample::default(), Sample::default());
    for _ in 0..ROUNDS {
        leashed.merge(drive(concurrency, each, Some(leash_pid), through.clone()).await?);
        direct_sample.merge(drive(concurrency, each, None, direct.clone()).await?);
    }
    Ok((leashed, direct_sample))
}

/// Runs `op` on `concurrency` tasks until `duration` is over.
async fn drive<F, Fut>(
    concurrency: usize,
    duration: Duration,
    leash_pid: Option<u32>,
    op: F,
) -> anyhow::Result<Sample>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<OpLoop>> + Send,
{
    let ticks_before = leash_pid.map(proc::cpu_ticks);
    let cores_before = proc::Cores::now();
    let deadline = Instant::now() + duration;
    let count = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for worker in 0..concurrency {
        let (op, count) = (op.clone(), count.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut looped = op(worker).await?;
            while Instant::now() < deadline {
                let at = Instant::now();
                looped.once().await?;
                latencies.push(at.elapsed().as_micros() as u64);
                count.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies_us = Vec::new();
    for task in tasks {
        latencies_us.extend(task.await??);
    }
    Ok(Sample {
        ops: count.load(Ordering::Relaxed),
        secs: started.elapsed().as_secs_f64(),
        latencies_us,
        leash_ticks: leash_pid.map(|pid| proc::cpu_ticks(pid) - ticks_before.unwrap_or(0)),
        cores: proc::Cores::now().since(&cores_before),
    })
}

/// One operation in flight.
pub(crate) type OpFuture =
    std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>> + Send>>;

/// What one worker repeats.
pub(crate) enum OpLoop {
    /// A kept-alive HTTP/1.1 connection sending the same request.
    KeepAlive(http1::SendRequest<Empty<Bytes>>, hyper::Uri),
    /// A fresh connection per operation.
    Fresh(Box<dyn Fn() -> OpFuture + Send + Sync>),
}

impl OpLoop {
    async fn once(&mut self) -> anyhow::Result<()> {
        match self {
            OpLoop::KeepAlive(sender, uri) => {
                sender.ready().await?;
                let request = Request::get(uri.clone())
                    .header(HOST, "bench")
                    .body(Empty::new())?;
                let response = sender.send_request(request).await?;
                response.into_body().collect().await?;
                Ok(())
            }
            OpLoop::Fresh(op) => op().await,
        }
    }
}

async fn keep_alive(to: SocketAddr, uri: &str) -> anyhow::Result<OpLoop> {
    let stream = TcpStream::connect(to).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(OpLoop::KeepAlive(sender, uri.parse()?))
}

async fn http_abs(leash: &Leash, origin: SocketAddr, scale: Scale) -> anyhow::Result<Row> {
    let (proxy, uri) = (leash.http, format!("http://{origin}/small"));
    let through = move |_| {
        let uri = uri.clone();
        async move { keep_alive(proxy, &uri).await }
    };
    let direct = move |_| async move { keep_alive(origin, "/small").await };
    let (mut leashed, mut direct) = side_by_side(64, scale, leash.pid, through, direct).await?;
    Ok(Row::compared("http_abs", "r/s", &mut leashed, &mut direct))
}

/// A new client connection per absolute-form request, as an agent running one `curl` per command
/// makes them (32 concurrent); directly, a new connection to the origin per request.
async fn http_fresh(leash: &Leash, origin: SocketAddr, scale: Scale) -> anyhow::Result<Row> {
    let proxy = leash.http;
    let uri = format!("http://{origin}/small");
    let through = move |_| {
        let uri = uri.clone();
        async move {
            let op = move || -> OpFuture {
                let uri = uri.clone();
                Box::pin(async move {
                    let mut stream = TcpStream::connect(proxy).await?;
                    get_close(&mut stream, &uri, SMALL_SINK).await.map(|_| ())
                })
            };
            anyhow::Ok(OpLoop::Fresh(Box::new(op)))
        }
    };
    let direct = move |_| async move { anyhow::Ok(direct_fresh_get(origin)) };
    let (mut leashed, mut direct) = side_by_side(32, scale, leash.pid, through, direct).await?;
    let row = Row::compared("http_fresh", "r/s", &mut leashed, &mut direct);
    Ok(row.with_cores(scale, &leashed, &direct))
}

/// A new connection to the origin and one `GET /small` per operation: the direct side of the
/// fresh-connection workloads.
fn direct_fresh_get(origin: SocketAddr) -> OpLoop {
    let op = move || -> OpFuture {
        Box::pin(async move {
            let mut stream = TcpStream::connect(origin).await?;
            get_close(&mut stream, "/small", SMALL_SINK)
                .await
                .map(|_| ())
        })
    };
    OpLoop::Fresh(Box::new(op))
}

async fn deny_http(
    leash: &Leash,
    _origin: SocketAddr,
    scale: Scale,
    direct_http: Option<f64>,
) -> anyhow::Result<Row> {
    let proxy = leash.http;
    let mut sample = drive(64, scale.duration, Some(leash.pid), move |_| async move {
        keep_alive(proxy, "http://denied.bench/").await
    })
    .await?;
    // The direct rate is http_abs's (what an allowed request costs); there is no direct refusal.
    let mut row = Row::leashed("deny_http", "r/s", &mut sample);
    row.direct = direct_http;
    Ok(row)
}

#[derive(Clone, Copy)]
enum Via {
    Connect,
    Socks,
}

/// A connection to `origin`, through leash by `via`, ready for bytes.
async fn open(via: Via, leash: SocketAddr, origin: SocketAddr) -> anyhow::Result<TcpStream> {
    let mut stream = TcpStream::connect(leash).await?;
    stream.set_nodelay(true)?;
    match via {
        Via::Connect => {
            stream
                .write_all(format!("CONNECT {origin} HTTP/1.1\r\n\r\n").as_bytes())
                .await?;
            read_head(&mut stream).await?;
        }
        Via::Socks => {
            let std::net::IpAddr::V4(ip) = origin.ip() else {
                anyhow::bail!("IPv4 origin")
            };
            let mut hello = vec![5, 1, 0, 5, 1, 0, 1];
            hello.extend_from_slice(&ip.octets());
            hello.extend_from_slice(&origin.port().to_be_bytes());
            stream.write_all(&hello).await?;
            let mut reply = [0u8; 12];
            stream.read_exact(&mut reply).await?;
            anyhow::ensure!(reply[3] == 0, "SOCKS5 refused: {reply:?}");
        }
    }
    Ok(stream)
}

/// Reads a response head and insists on `200`. Reads in chunks, as real clients do: a proxy
/// sends nothing after its `CONNECT` answer until the client speaks, so the head is all there is.
async fn read_head(stream: &mut TcpStream) -> anyhow::Result<()> {
    let mut head = Vec::new();
    let mut chunk = [0u8; 512];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        anyhow::ensure!(n > 0, "closed during the head");
        head.extend_from_slice(&chunk[..n]);
        anyhow::ensure!(head.len() < 8192, "no end of head");
    }
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    Ok(())
}

/// What `get_close` reads into for a small answer. A zeroed 256 KiB per operation cost the load
/// generator's core more than the rest of a fresh-connection operation's client side (perf: page
/// faults and memset, and more of them on the side through leash, where the heap's top moved more).
const SMALL_SINK: usize = 8 * 1024;
/// What `get_close` reads into for a bulk download: few reads per MiB.
const BULK_SINK: usize = 256 * 1024;

/// One `GET path` with `Connection: close`, read into a buffer of `sink` bytes; returns the bytes
/// read. Fails unless the answer is a `200`: a refusal, or a relay that closes at once, must not
/// count as a fast operation.
async fn get_close(stream: &mut TcpStream, path: &str, sink: usize) -> anyhow::Result<usize> {
    const OK: &[u8] = b"HTTP/1.1 200";
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut sink = vec![0u8; sink.max(OK.len())];
    // The answer's first bytes, kept across reads (a read may return fewer).
    let mut status = [0u8; OK.len()];
    let mut total = 0;
    loop {
        match stream.read(&mut sink).await? {
            0 => {
                let seen = &status[..total.min(OK.len())];
                anyhow::ensure!(seen == OK, "not a 200: {:?}", String::from_utf8_lossy(seen));
                return Ok(total);
            }
            n => {
                if total < OK.len() {
                    let wanted = (OK.len() - total).min(n);
                    status[total..total + wanted].copy_from_slice(&sink[..wanted]);
                }
                total += n;
            }
        }
    }
}

/// A new connection through leash by `via`, then one `GET /small` per operation, on `concurrency`
/// tasks; directly, a new connection to the origin and the same GET.
async fn rate(
    name: &'static str,
    leash: &Leash,
    concurrency: usize,
    origin: SocketAddr,
    scale: Scale,
    via: Via,
) -> anyhow::Result<Row> {
    let proxy = leash.http;
    let socks = leash.socks;
    let through = move |_| async move {
        let op = move || -> OpFuture {
            Box::pin(async move {
                let to = match via {
                    Via::Connect => proxy,
                    Via::Socks => socks,
                };
                let mut stream = open(via, to, origin).await?;
                get_close(&mut stream, "/small", SMALL_SINK)
                    .await
                    .map(|_| ())
            })
        };
        anyhow::Ok(OpLoop::Fresh(Box::new(op)))
    };
    let direct = move |_| async move { anyhow::Ok(direct_fresh_get(origin)) };
    let (mut leashed, mut direct) =
        side_by_side(concurrency, scale, leash.pid, through, direct).await?;
    let row = Row::compared(name, "op/s", &mut leashed, &mut direct);
    Ok(row.with_cores(scale, &leashed, &direct))
}

async fn deny_connect(leash: &Leash, scale: Scale) -> anyhow::Result<Row> {
    let proxy = leash.http;
    let mut sample = drive(32, scale.duration, Some(leash.pid), move |_| async move {
        let op = move || -> OpFuture {
            Box::pin(async move {
                let mut stream = TcpStream::connect(proxy).await?;
                stream
                    .write_all(b"CONNECT denied.bench:443 HTTP/1.1\r\nConnection: close\r\n\r\n")
                    .await?;
                let mut response = Vec::new();
                stream.read_to_end(&mut response).await?;
                anyhow::ensure!(response.starts_with(b"HTTP/1.1 403"), "not refused");
                Ok(())
            })
        };
        anyhow::Ok(OpLoop::Fresh(Box::new(op)))
    })
    .await?;
    Ok(Row::leashed("deny_connect", "op/s", &mut sample))
}

/// Four concurrent downloads of `scale.bulk_bytes`, repeated for `scale.duration`: MiB/s through
/// leash and directly, and leash's CPU time per MiB.
async fn bulk(
    name: &'static str,
    leash: &Leash,
    origin: SocketAddr,
    scale: Scale,
    via: Via,
) -> anyhow::Result<Row> {
    let to = match via {
        Via::Connect => leash.http,
        Via::Socks => leash.socks,
    };
    let path = format!("/big?n={}", scale.bulk_bytes);
    let fetch = move |through: bool| {
        let path = path.clone();
        async move {
            let mut stream = match through {
                true => open(via, to, origin).await?,
                false => TcpStream::connect(origin).await?,
            };
            get_close(&mut stream, &path, BULK_SINK).await
        }
    };
    let (mut leashed, mut direct) = bulk_rounds(leash.pid, scale, fetch).await?;
    Ok(Row::compared(name, "MB/s", &mut leashed, &mut direct))
}

/// `fetch(true)` (through leash) and `fetch(false)` (directly) in alternating rounds, as
/// `side_by_side` does; here the operation is a mebibyte, and leash's CPU time is measured
/// around each of its rounds.
async fn bulk_rounds<F, Fut>(
    leash_pid: u32,
    scale: Scale,
    fetch: F,
) -> anyhow::Result<(Sample, Sample)>
where
    F: Fn(bool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send + 'static,
{
    let (mut leashed, mut direct) = (Sample::default(), Sample::default());
    let each = scale.duration / ROUNDS;
    for _ in 0..ROUNDS {
        let ticks = proc::cpu_ticks(leash_pid);
        let mut round = downloads(each, || fetch(true)).await?;
        round.leash_ticks = Some(proc::cpu_ticks(leash_pid) - ticks);
        leashed.merge(round);
        direct.merge(downloads(each, || fetch(false)).await?);
    }
    Ok((leashed, direct))
}

/// Rounds of four concurrent `fetch`es (each returning the bytes it read) for `duration` (one
/// round at least); one operation of the sample is one MiB.
async fn downloads<F, Fut>(duration: Duration, fetch: F) -> anyhow::Result<Sample>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<usize>> + Send + 'static,
{
    let started = Instant::now();
    let mut bytes = 0;
    while bytes == 0 || started.elapsed() < duration {
        let tasks: Vec<_> = (0..4).map(|_| tokio::spawn(fetch())).collect();
        for task in tasks {
            bytes += task.await??;
        }
    }
    Ok(Sample {
        ops: (bytes >> 20) as u64,
        secs: started.elapsed().as_secs_f64(),
        ..Sample::default()
    })
}

/// Resident memory with `scale.idle_connections` idle client connections open.
async fn rss_idle(leash: &Leash, scale: Scale) -> anyhow::Result<Row> {
    let mut idle = Vec::with_capacity(scale.idle_connections);
    for _ in 0..scale.idle_connections {
        idle.push(TcpStream::connect(leash.http).await?);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let name = if scale.idle_connections >= 5000 {
        "rss_5k"
    } else {
        "rss_idle_n"
    };
    let row = Row::new(name, "MB", proc::rss_kib(leash.pid) as f64 / 1024.0);
    drop(idle);
    Ok(row)
}

/// Resident memory per idle CONNECT tunnel. A fresh leash (memory freed by earlier workloads
/// would hide the growth) with the ordinary policy and the holder allowed; `scale.tunnels`
/// tunnels to `origin::holder`, each past its `200` (fewer if the open-file limit is low:
/// `tunnels` says how many); the growth of leash's RSS over their count. Then all close, and we wait for leash to close its ends too, so
/// nothing of them is left for what runs next.
async fn rss_tunnels(
    binary: &Path,
    dir: &Path,
    origin: SocketAddr,
    name: &'static str,
    scale: Scale,
) -> anyhow::Result<Row> {
    let holder = origin::holder().await?;
    let config = write_config(dir, "tunnels.toml", &[origin, holder])?;
    let (leash, _) = start_leash(binary, &config, scale.leash_core).await?;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (rss_before, fds_before) = (proc::rss_kib(leash.pid), proc::open_fds(leash.pid));
    let tunnels = fitting_tunnels(&leash, holder, scale).await?;
    let n = tunnels.len();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (rss_open, fds_open) = (proc::rss_kib(leash.pid), proc::open_fds(leash.pid));
    drop(tunnels);
    let drained = drained(leash.pid, fds_before).await;
    let grew = rss_open.saturating_sub(rss_before);
    let mut row = Row::new(name, "KiB/tunnel", grew as f64 / n as f64);
    row.extra = vec![
        ("tunnels", n as f64),
        ("grew_mb", grew as f64 / 1024.0),
        (
            "fds_per_tunnel",
            fds_open.saturating_sub(fds_before) as f64 / n as f64,
        ),
        ("closed_rss_mb", proc::rss_kib(leash.pid) as f64 / 1024.0),
    ];
    match drained {
        Some(took) => row.extra.push(("drained_ms", took.as_millis() as f64)),
        None => row
            .extra
            .push(("left_open_fds", proc::open_fds(leash.pid) as f64)),
    }
    Ok(row)
}

/// Up to `scale.tunnels` tunnels through `leash` to `holder`: as many as fit in the open-file
/// limit (ours, which leash inherits), going by the descriptors leash takes for a first few.
/// We hold two per tunnel (ours and the held end); leash two sockets and perhaps splice pipes.
async fn fitting_tunnels(
    leash: &Leash,
    holder: SocketAddr,
    scale: Scale,
) -> anyhow::Result<Vec<TcpStream>> {
    const PROBE: usize = 64;
    let fds_before = proc::open_fds(leash.pid);
    let mut tunnels = open_tunnels(leash.http, holder, PROBE).await?;
    let taken = proc::open_fds(leash.pid).saturating_sub(fds_before);
    let each = taken.div_ceil(PROBE).max(2) as u64;
    let fit = (scale.file_limit.saturating_sub(1000) / each) as usize;
    let n = scale.tunnels.min(fit).max(PROBE);
    tunnels.extend(open_tunnels(leash.http, holder, n - PROBE).await?);
    Ok(tunnels)
}

/// `n` CONNECT tunnels through `proxy` to `to`, each answered `200`, opened 64 at a time: a burst
/// of 10 000 connects would overflow leash's listen backlog and measure SYN retries instead.
async fn open_tunnels(
    proxy: SocketAddr,
    to: SocketAddr,
    n: usize,
) -> anyhow::Result<Vec<TcpStream>> {
    const AT_ONCE: usize = 64;
    let mut openers = Vec::new();
    for i in 0..AT_ONCE {
        let count = n / AT_ONCE + usize::from(i < n % AT_ONCE);
        openers.push(tokio::spawn(async move {
            let mut opened = Vec::with_capacity(count);
            for _ in 0..count {
                opened.push(open(Via::Connect, proxy, to).await?);
            }
            anyhow::Ok(opened)
        }));
    }
    let mut tunnels = Vec::with_capacity(n);
    for opener in openers {
        tunnels.extend(opener.await??);
    }
    Ok(tunnels)
}

/// How long until leash `pid` is back to at most `fds` open descriptors (a couple more allowed:
/// a log file, an accept in flight), or `None` after ten seconds.
async fn drained(pid: u32, fds: usize) -> Option<Duration> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(10) {
        if proc::open_fds(pid) <= fds + 2 {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}
