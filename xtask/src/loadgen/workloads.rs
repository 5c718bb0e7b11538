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

use crate::{origin, proc, Scale};

/// One line of the table.
#[derive(Clone, Debug)]
pub(crate) struct Row {
    name: &'static str,
    unit: &'static str,
    value: f64,
    direct: Option<f64>,
    p50_p99_us: Option<(u64, u64, u64, u64)>,
    cpu_us_per_op: Option<f64>,
}

impl Row {
    fn new(name: &'static str, unit: &'static str, value: f64) -> Row {
        Row {
            name,
            unit,
            value,
            direct: None,
            p50_p99_us: None,
            cpu_us_per_op: None,
        }
    }

    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::json!({
            "name": self.name, "unit": self.unit, "value": self.value, "direct": self.direct,
            "ratio": self.direct.map(|d| self.value / d),
            "latency_us": self.p50_p99_us.map(|(p50, p99, d50, d99)| serde_json::json!({"p50": p50, "p99": p99, "direct_p50": d50, "direct_p99": d99})),
            "leash_cpu_us_per_op": self.cpu_us_per_op,
        })
    }
}

/// The table as text.
pub(crate) fn table(rows: &[Row]) -> String {
    let mut out = format!(
        "{:<14} {:>14} {:>14} {:>7} {:>22} {:>12}\n",
        "workload", "leash", "direct", "ratio", "p50/p99 us (direct)", "cpu us/op"
    );
    for row in rows {
        let direct = row.direct.map_or("-".to_owned(), |d| format!("{d:.1}"));
        let ratio = row
            .direct
            .map_or("-".to_owned(), |d| format!("{:.0}%", 100.0 * row.value / d));
        let latency = row
            .p50_p99_us
            .map_or("-".to_owned(), |(a, b, c, d)| format!("{a}/{b} ({c}/{d})"));
        let cpu = row
            .cpu_us_per_op
            .map_or("-".to_owned(), |c| format!("{c:.1}"));
        out += &format!(
            "{:<14} {:>10.1} {:<3} {:>14} {:>7} {:>22} {:>12}\n",
            row.name, row.value, row.unit, direct, ratio, latency, cpu
        );
    }
    out
}

/// A running `leash proxy` child, pinned to core 0 when there are two or more.
struct Leash {
    child: Child,
    pid: u32,
    http: SocketAddr,
    socks: SocketAddr,
}

async fn start_leash(binary: &Path, config: &Path) -> anyhow::Result<(Leash, Duration)> {
    let pinned = std::thread::available_parallelism().map_or(1, |n| n.get()) >= 2
        && Path::new("/usr/bin/taskset").exists();
    let mut command = match pinned {
        true => {
            let mut c = Command::new("taskset");
            c.args(["-c", "0"]).arg(binary);
            c
        }
        false => Command::new(binary),
    };
    let started = Instant::now();
    let mut child = command
        .arg("proxy")
        .arg("--config")
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
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

fn write_config(dir: &Path, origin: SocketAddr) -> anyhow::Result<PathBuf> {
    let allow: Vec<String> = (0..1000)
        .map(|i| format!("\"**.svc{i}.bench-allow.test\""))
        .collect();
    let mut deny: Vec<String> = (0..99)
        .map(|i| format!("\"bad{i}.bench-deny.test\""))
        .collect();
    deny.push("\"denied.bench\"".into());
    let text = format!(
        "[policy]\nallow = [{}]\ndeny = [{}]\nallow_local = [\"{origin}\"]\n[listen]\nephemeral = true\n[admin]\nenabled = false\n[log]\nviolations = {:?}\n[limits]\nmax_connections = 20000\n",
        allow.join(", "),
        deny.join(", "),
        dir.join("violations.jsonl").to_str().context("a UTF-8 path")?
    );
    let path = dir.join("bench.toml");
    std::fs::write(&path, text)?;
    Ok(path)
}

pub(crate) async fn run_all(binary: &Path, scale: Scale) -> anyhow::Result<Vec<Row>> {
    let origin = origin::start(scale.bulk_bytes).await?;
    let dir = std::env::temp_dir().join(format!("leash-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let config = write_config(&dir, origin)?;
    let mut startups = Vec::new();
    for _ in 0..4 {
        let (mut leash, took) = start_leash(binary, &config).await?;
        startups.push(took);
        let _ = leash.child.kill().await;
    }
    startups.sort();
    let (leash, took) = start_leash(binary, &config).await?;
    startups.push(took);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut rows = vec![
        Row::new(
            "startup",
            "ms",
            startups[startups.len() / 2].as_secs_f64() * 1000.0,
        ),
        Row::new("idle_rss", "MB", proc::rss_kib(leash.pid) as f64 / 1024.0),
    ];
    rows.push(http_abs(&leash, origin, scale).await?);
    rows.push(deny_http(&leash, origin, scale, rows.last().and_then(|r| r.direct)).await?);
    rows.push(rate("connect_rate", &leash, origin, scale, Via::Connect).await?);
    rows.push(rate("socks_rate", &leash, origin, scale, Via::Socks).await?);
    rows.push(deny_connect(&leash, scale).await?);
    rows.push(bulk("connect_bulk", &leash, origin, scale, Via::Connect).await?);
    rows.push(bulk("socks_bulk", &leash, origin, scale, Via::Socks).await?);
    rows.push(rss_idle(&leash, scale).await?);
    drop(leash);
    rows.push(mitm_rate(binary, &dir, scale).await?);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(rows)
}

/// Limited mode with MITM: a new connection, CONNECT, TLS with leash's leaf (warm cache), one GET
/// inside, per operation; directly: a new TLS connection to the origin and the same GET.
async fn mitm_rate(binary: &Path, dir: &Path, scale: Scale) -> anyhow::Result<Row> {
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
    let (leash, _) = start_leash(binary, &config).await?;
    let through_client = Arc::new(crate::tls::client(&ca_dir.join("ca.pem"))?);
    let direct_client = Arc::new(crate::tls::client(&origin_ca)?);
    let proxy = leash.http;
    let through = drive(16, scale.duration, Some(leash.pid), move |_| {
        let client = through_client.clone();
        async move {
            let op = move || -> OpFuture {
                let client = client.clone();
                Box::pin(async move {
                    let mut stream = TcpStream::connect(proxy).await?;
                    stream
                        .write_all(format!("CONNECT {origin} HTTP/1.1\r\n\r\n").as_bytes())
                        .await?;
                    read_head(&mut stream).await?;
                    crate::tls::get(&client, stream, origin).await
                })
            };
            anyhow::Ok(OpLoop::Fresh(Box::new(op)))
        }
    })
    .await?;
    let direct = drive(16, scale.duration, None, move |_| {
        let client = direct_client.clone();
        async move {
            let op = move || -> OpFuture {
                let client = client.clone();
                Box::pin(async move {
                    crate::tls::get(&client, TcpStream::connect(origin).await?, origin).await
                })
            };
            anyhow::Ok(OpLoop::Fresh(Box::new(op)))
        }
    })
    .await?;
    let mut row = Row::new("mitm_rate", "op/s", through.0);
    row.direct = Some(direct.0);
    row.cpu_us_per_op = through.2;
    Ok(row)
}

/// Runs `op` on `concurrency` tasks until `duration` is over; returns ops/s, latencies and CPU.
async fn drive<F, Fut>(
    concurrency: usize,
    duration: Duration,
    leash_pid: Option<u32>,
    op: F,
) -> anyhow::Result<(f64, Vec<u64>, Option<f64>)>
where
    F: Fn(usize) -> Fut + Send + Sync + Clone + 'static,
    Fut: std::future::Future<Output = anyhow::Result<OpLoop>> + Send,
{
    let ticks_before = leash_pid.map(proc::cpu_ticks);
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
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await??);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let ops = count.load(Ordering::Relaxed) as f64;
    let cpu = leash_pid.map(|pid| {
        (proc::cpu_ticks(pid) - ticks_before.unwrap_or(0)) as f64 * 10_000.0 / ops.max(1.0)
    });
    latencies.sort_unstable();
    Ok((ops / elapsed, latencies, cpu))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1)))
        .copied()
        .unwrap_or(0)
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
    let through = drive(64, scale.duration, Some(leash.pid), move |_| {
        let uri = uri.clone();
        async move { keep_alive(proxy, &uri).await }
    })
    .await?;
    let direct = drive(64, scale.duration, None, move |_| async move {
        keep_alive(origin, "/small").await
    })
    .await?;
    let mut row = Row::new("http_abs", "r/s", through.0);
    row.direct = Some(direct.0);
    row.p50_p99_us = Some((
        percentile(&through.1, 0.5),
        percentile(&through.1, 0.99),
        percentile(&direct.1, 0.5),
        percentile(&direct.1, 0.99),
    ));
    row.cpu_us_per_op = through.2;
    Ok(row)
}

async fn deny_http(
    leash: &Leash,
    _origin: SocketAddr,
    scale: Scale,
    direct_http: Option<f64>,
) -> anyhow::Result<Row> {
    let proxy = leash.http;
    let (rate, _, cpu) = drive(64, scale.duration, Some(leash.pid), move |_| async move {
        keep_alive(proxy, "http://denied.bench/").await
    })
    .await?;
    let mut row = Row::new("deny_http", "r/s", rate);
    row.direct = direct_http;
    row.cpu_us_per_op = cpu;
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

/// Reads a response head and insists on `200`.
async fn read_head(stream: &mut TcpStream) -> anyhow::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        anyhow::ensure!(stream.read(&mut byte).await? == 1, "closed during the head");
        head.push(byte[0]);
    }
    anyhow::ensure!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    Ok(())
}

/// One `GET path` with `Connection: close`; returns the bytes read.
async fn get_close(stream: &mut TcpStream, path: &str) -> anyhow::Result<usize> {
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await?;
    let mut sink = vec![0u8; 256 * 1024];
    let mut total = 0;
    loop {
        match stream.read(&mut sink).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

async fn rate(
    name: &'static str,
    leash: &Leash,
    origin: SocketAddr,
    scale: Scale,
    via: Via,
) -> anyhow::Result<Row> {
    let proxy = leash.http;
    let socks = leash.socks;
    let through = drive(32, scale.duration, Some(leash.pid), move |_| async move {
        let op = move || -> OpFuture {
            Box::pin(async move {
                let to = match via {
                    Via::Connect => proxy,
                    Via::Socks => socks,
                };
                let mut stream = open(via, to, origin).await?;
                get_close(&mut stream, "/small").await.map(|_| ())
            })
        };
        anyhow::Ok(OpLoop::Fresh(Box::new(op)))
    })
    .await?;
    let direct = drive(32, scale.duration, None, move |_| async move {
        let op = move || -> OpFuture {
            Box::pin(async move {
                let mut stream = TcpStream::connect(origin).await?;
                get_close(&mut stream, "/small").await.map(|_| ())
            })
        };
        anyhow::Ok(OpLoop::Fresh(Box::new(op)))
    })
    .await?;
    let mut row = Row::new(name, "op/s", through.0);
    row.direct = Some(direct.0);
    row.cpu_us_per_op = through.2;
    Ok(row)
}

async fn deny_connect(leash: &Leash, scale: Scale) -> anyhow::Result<Row> {
    let proxy = leash.http;
    let (rate, _, cpu) = drive(32, scale.duration, Some(leash.pid), move |_| async move {
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
    let mut row = Row::new("deny_connect", "op/s", rate);
    row.cpu_us_per_op = cpu;
    Ok(row)
}

/// Four concurrent downloads of `scale.bulk_bytes`: MB/s through leash and directly.
async fn bulk(
    name: &'static str,
    leash: &Leash,
    origin: SocketAddr,
    scale: Scale,
    via: Via,
) -> anyhow::Result<Row> {
    let path = format!("/big?n={}", scale.bulk_bytes);
    let to = match via {
        Via::Connect => leash.http,
        Via::Socks => leash.socks,
    };
    let ticks = proc::cpu_ticks(leash.pid);
    let through = download(4, &path, Some((via, to)), origin).await?;
    let cpu_ms = (proc::cpu_ticks(leash.pid) - ticks) as f64 * 10.0;
    let direct = download(4, &path, None, origin).await?;
    let mut row = Row::new(name, "MB/s", through);
    row.direct = Some(direct);
    // CPU per MiB relayed, in microseconds.
    row.cpu_us_per_op = Some(cpu_ms * 1000.0 / (4.0 * scale.bulk_bytes as f64 / (1 << 20) as f64));
    Ok(row)
}

async fn download(
    concurrency: usize,
    path: &str,
    via: Option<(Via, SocketAddr)>,
    origin: SocketAddr,
) -> anyhow::Result<f64> {
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let path = path.to_owned();
        tasks.push(tokio::spawn(async move {
            let mut stream = match via {
                Some((via, to)) => open(via, to, origin).await?,
                None => TcpStream::connect(origin).await?,
            };
            get_close(&mut stream, &path).await
        }));
    }
    let mut bytes = 0;
    for task in tasks {
        bytes += task.await??;
    }
    Ok(bytes as f64 / (1 << 20) as f64 / started.elapsed().as_secs_f64())
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
