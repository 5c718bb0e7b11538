//! `loadgen --bare-relay`: the least a `CONNECT` proxy can do, as the yardstick of the
//! `bare_connect_rate` row. It reads a request head, connects to the target it names, answers
//! `200` and copies bytes both ways until both sides are done: no policy, no authentication, no
//! log, no limits, on one thread. What it reaches against direct in the bench's layout is what the
//! layout allows a proxy, not a target for leash to beat (leash does all that this skips).
//! Listens on 127.0.0.1 only and prints its address on the first line of stdout.
//!
//! `loadgen --bare-relay --forward ADDR` is less still, the yardstick of `bare_forward_rate`: a
//! plain TCP forwarder that connects every client to ADDR and copies, with no head and no `200`.
//! What the load generator's core pays through it, against direct, is what a connection costs when
//! its two ends live on different cores, with no protocol at all.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// The longest head it reads.
const MAX_HEAD: usize = 8192;

pub(crate) fn run(forward_to: Option<SocketAddr>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()?;
    runtime.block_on(async {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        println!("{}", listener.local_addr()?);
        loop {
            let (client, _) = listener.accept().await?;
            tokio::spawn(async move {
                let _ = match forward_to {
                    Some(target) => forward(client, target).await,
                    None => relay(client).await,
                };
            });
        }
    })
}

async fn relay(mut client: TcpStream) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    let mut head = Vec::with_capacity(512);
    let mut chunk = [0u8; 1024];
    while !head.ends_with(b"\r\n\r\n") {
        let n = client.read(&mut chunk).await?;
        anyhow::ensure!(n > 0 && head.len() + n <= MAX_HEAD, "no whole head");
        head.extend_from_slice(&chunk[..n]);
    }
    let text = std::str::from_utf8(&head)?;
    let target: SocketAddr = text
        .strip_prefix("CONNECT ")
        .and_then(|rest| rest.split(' ').next())
        .context("a CONNECT head")?
        .parse()?;
    connect_and_copy(
        client,
        target,
        b"HTTP/1.1 200 Connection established\r\n\r\n",
    )
    .await
}

async fn forward(client: TcpStream, target: SocketAddr) -> anyhow::Result<()> {
    client.set_nodelay(true)?;
    connect_and_copy(client, target, b"").await
}

/// Connects to `target`, sends the client `answer` (if any), and copies both ways until both
/// sides are done.
async fn connect_and_copy(
    mut client: TcpStream,
    target: SocketAddr,
    answer: &[u8],
) -> anyhow::Result<()> {
    let mut origin = TcpStream::connect(target).await?;
    origin.set_nodelay(true)?;
    client.write_all(answer).await?;
    tokio::io::copy_bidirectional(&mut client, &mut origin).await?;
    Ok(())
}
