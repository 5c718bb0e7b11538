//! The origin every workload talks to: 1 KiB for `/small`, `n` bytes for `/big?n=`, keep-alive;
//! and `/ws?n=`, a WebSocket handshake answered `101`, then `n` bytes of binary frames and the
//! close. Beside it, `holder`: a listener that keeps what it accepts open and idle.

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{
    header::{CONNECTION, UPGRADE},
    server::conn::http1,
    service::service_fn,
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpSocket},
};

/// A listener on `127.0.0.1:0` with a deep accept queue. `bind` asks for 128 (std's and mio's
/// choice): 512 clients connecting at once overflow that, and each dropped connect waits a second
/// for its SYN to be sent again. An origin of ours must not be what the tail measures.
pub(crate) fn listener() -> anyhow::Result<TcpListener> {
    let socket = TcpSocket::new_v4()?;
    socket.set_reuseaddr(true)?;
    socket.bind(([127, 0, 0, 1], 0).into())?;
    Ok(socket.listen(4096)?)
}

/// Starts the origin on `127.0.0.1:0`; `big` is the largest body it will serve.
pub(crate) async fn start(big: usize) -> anyhow::Result<SocketAddr> {
    let listener = listener()?;
    let addr = listener.local_addr()?;
    let small = Bytes::from(vec![b'x'; 1024]);
    let large = Bytes::from(vec![b'y'; big]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (small, large) = (small.clone(), large.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let response = match req.uri().path() {
                        "/big" => Response::new(Full::new(large.slice(..n(&req).min(large.len())))),
                        "/ws" => websocket(req, large.clone()),
                        _ => Response::new(Full::new(small.clone())),
                    };
                    async move { Ok::<_, Infallible>(response) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    });
    Ok(addr)
}

/// Starts a listener on `127.0.0.1:0` that holds each accepted connection, idle, until its peer
/// closes it: the far end of `rss_tunnel`'s tunnels (an HTTP server could time an idle
/// connection out, or answer bytes it never gets).
pub(crate) async fn holder() -> anyhow::Result<SocketAddr> {
    let listener = listener()?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut byte = [0u8; 1];
                // Nothing is ever sent: the read ends at the close (or a reset).
                let _ = stream.read(&mut byte).await;
            });
        }
    });
    Ok(addr)
}

/// `n` from the query `n=N`.
fn n<B>(req: &Request<B>) -> usize {
    req.uri()
        .query()
        .and_then(|q| q.strip_prefix("n="))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Frames this large: a bulk sender's size (the frame header is 10 bytes of 64 KiB).
const FRAME: usize = 64 * 1024;

/// The `101`, and behind it `n` bytes of unmasked binary frames, a close frame and the end. The
/// accept key is the one for the key the bench client always sends (RFC 6455 §1.3's example).
fn websocket(mut req: Request<hyper::body::Incoming>, payload: Bytes) -> Response<Full<Bytes>> {
    let n = n(&req).min(payload.len());
    let upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let Ok(upgraded) = upgrade.await else {
            return;
        };
        let mut io = TokioIo::new(upgraded);
        for chunk in payload.slice(..n).chunks(FRAME) {
            let mut header = vec![0x82, 127];
            header.extend_from_slice(&(chunk.len() as u64).to_be_bytes());
            if io.write_all(&header).await.is_err() || io.write_all(chunk).await.is_err() {
                return;
            }
        }
        let _ = io.write_all(&[0x88, 0]).await;
        let _ = io.shutdown().await;
    });
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let headers = response.headers_mut();
    headers.insert(CONNECTION, "upgrade".parse().expect("a header value"));
    headers.insert(UPGRADE, "websocket".parse().expect("a header value"));
    headers.insert(
        "sec-websocket-accept",
        "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
            .parse()
            .expect("a header value"),
    );
    response
}
