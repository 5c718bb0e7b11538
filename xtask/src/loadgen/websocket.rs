//! `ws_bulk`: bulk bytes through a WebSocket. The client writes the handshake by hand (absolute-form
//! `ws://` through leash's listener, origin-form directly) and reads the origin's binary frames to
//! the end; the origin (`origin.rs`, `/ws?n=`) sends `n` bytes of them after its `101`. Both sides
//! are raw, like the other workloads' clients, so what is measured is leash's relay.

use std::net::SocketAddr;

use anyhow::Context;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

/// One WebSocket carrying `n` bytes of frames from `origin`, through leash's listener at `proxy`
/// (or directly); returns the bytes read after the `101`.
pub(crate) async fn download(
    proxy: Option<SocketAddr>,
    origin: SocketAddr,
    n: usize,
) -> anyhow::Result<usize> {
    let (to, target) = match proxy {
        Some(proxy) => (proxy, format!("ws://{origin}/ws?n={n}")),
        None => (origin, format!("/ws?n={n}")),
    };
    let mut stream = TcpStream::connect(to).await?;
    stream.set_nodelay(true)?;
    let head = format!(
        "GET {target} HTTP/1.1\r\nHost: {origin}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut buffer = vec![0u8; 256 * 1024];
    let mut total = switched(&mut stream, &mut buffer).await?;
    loop {
        match stream.read(&mut buffer).await? {
            0 => return Ok(total),
            n => total += n,
        }
    }
}

/// Reads the `101` head; returns how many frame bytes came with it.
async fn switched(stream: &mut TcpStream, buffer: &mut [u8]) -> anyhow::Result<usize> {
    let mut head = Vec::new();
    loop {
        let n = stream.read(buffer).await?;
        anyhow::ensure!(n > 0, "closed during the head");
        head.extend_from_slice(&buffer[..n]);
        if let Some(end) = head.windows(4).position(|w| w == b"\r\n\r\n") {
            let status = head.get(..12).context("a status line")?;
            anyhow::ensure!(
                status == b"HTTP/1.1 101",
                "{}",
                String::from_utf8_lossy(&head[..end])
            );
            return Ok(head.len() - end - 4);
        }
        anyhow::ensure!(head.len() < 8192, "no end of head");
    }
}
