//! The origin every workload talks to: 1 KiB for `/small`, `n` bytes for `/big?n=`, keep-alive.

use std::{convert::Infallible, net::SocketAddr};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Starts the origin on `127.0.0.1:0`; `big` is the largest body it will serve.
pub(crate) async fn start(big: usize) -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let small = Bytes::from(vec![b'x'; 1024]);
    let large = Bytes::from(vec![b'y'; big]);
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let (small, large) = (small.clone(), large.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let body = match req.uri().path() {
                        "/big" => {
                            let n = req
                                .uri()
                                .query()
                                .and_then(|q| q.strip_prefix("n="))
                                .and_then(|n| n.parse().ok())
                                .unwrap_or(0);
                            large.slice(..n.min(large.len()))
                        }
                        _ => small.clone(),
                    };
                    async move { Ok::<_, Infallible>(Response::new(Full::new(body))) }
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(addr)
}
