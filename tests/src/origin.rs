//! Real origin servers on loopback: plain HTTP and HTTPS (with a test CA), recording what reached
//! them so tests can prove what the proxy forwarded — and what it never let through.

use std::{
    convert::Infallible,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{
    body::Incoming,
    server::conn::{http1, http2},
    service::service_fn,
    Request, Response,
};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// One request as the origin saw it.
#[derive(Clone, Debug)]
pub struct SeenRequest {
    /// The method.
    pub method: String,
    /// The request-target (origin-form).
    pub uri: String,
    /// Every header, lowercase names, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The HTTP version it arrived with (`HTTP/1.1`, `HTTP/2.0`).
    pub version: String,
}

/// What reached an origin.
#[derive(Debug, Default)]
pub struct Seen {
    connections: AtomicUsize,
    requests: Mutex<Vec<SeenRequest>>,
}

impl Seen {
    /// TCP connections accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests served, oldest first.
    pub fn requests(&self) -> Vec<SeenRequest> {
        self.requests.lock().expect("seen lock").clone()
    }
}

/// A running origin.
#[derive(Debug)]
pub struct Origin {
    /// Where it listens (127.0.0.1, or ::1).
    pub addr: SocketAddr,
    /// What reached it.
    pub seen: Arc<Seen>,
}

/// The body `/big?n=N` serves: N deterministic bytes.
pub fn big_body(n: usize) -> Vec<u8> {
    (0..n).map(|i| (i % 251) as u8).collect()
}

impl Origin {
    /// A plain HTTP/1.1 origin on `127.0.0.1:0`.
    pub async fn http() -> Origin {
        Origin::start("127.0.0.1:0", None, None).await
    }

    /// A plain HTTP/1.1 origin on `bind`.
    pub async fn http_on(bind: &str) -> Origin {
        Origin::start(bind, None, None).await
    }

    /// An HTTPS origin on `127.0.0.1:0` with `tls` (a leaf from a `TestCa`).
    pub async fn https(tls: Arc<rustls::ServerConfig>) -> Origin {
        Origin::start("127.0.0.1:0", Some(TlsAcceptor::from(tls)), None).await
    }

    /// An HTTPS origin on `127.0.0.1:0` offering ALPN `h2` and `http/1.1`, serving either.
    pub async fn https_h2(tls: Arc<rustls::ServerConfig>) -> Origin {
        Origin::https_alpn(tls, &[b"h2", b"http/1.1"]).await
    }

    /// An HTTPS origin on `127.0.0.1:0` offering only ALPN `http/1.1`.
    pub async fn https_http1_only(tls: Arc<rustls::ServerConfig>) -> Origin {
        Origin::https_alpn(tls, &[b"http/1.1"]).await
    }

    async fn https_alpn(tls: Arc<rustls::ServerConfig>, alpn: &[&[u8]]) -> Origin {
        let mut tls = (*tls).clone();
        tls.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Origin::https(Arc::new(tls)).await
    }

    /// A static file server for `root` (a "dumb" git remote, for one), on `127.0.0.1:0`.
    pub async fn files(root: PathBuf) -> Origin {
        Origin::start("127.0.0.1:0", None, Some(Arc::new(root))).await
    }

    async fn start(bind: &str, tls: Option<TlsAcceptor>, root: Option<Arc<PathBuf>>) -> Origin {
        let listener = TcpListener::bind(bind).await.expect("origin binds");
        let addr = listener.local_addr().expect("origin address");
        let seen = Arc::new(Seen::default());
        let accept_seen = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accept_seen.connections.fetch_add(1, Ordering::SeqCst);
                let (seen, tls, root) = (accept_seen.clone(), tls.clone(), root.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            let Ok(stream) = tls.accept(stream).await else {
                                return;
                            };
                            match stream.get_ref().1.alpn_protocol() {
                                Some(b"h2") => serve_h2(TokioIo::new(stream), seen).await,
                                _ => serve(TokioIo::new(stream), seen, root).await,
                            }
                        }
                        None => serve(TokioIo::new(stream), seen, root).await,
                    }
                });
            }
        });
        Origin { addr, seen }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

async fn serve<I>(io: I, seen: Arc<Seen>, root: Option<Arc<PathBuf>>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| respond(req, seen.clone(), root.clone()));
    let _ = http1::Builder::new().serve_connection(io, service).await;
}

async fn serve_h2<I>(io: I, seen: Arc<Seen>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let service = service_fn(move |req| respond(req, seen.clone(), None));
    let _ = http2::Builder::new(TokioExecutor::new())
        .serve_connection(io, service)
        .await;
}

async fn respond(
    req: Request<Incoming>,
    seen: Arc<Seen>,
    root: Option<Arc<PathBuf>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let (parts, body) = req.into_parts();
    // A request whose body broke off never counts as received, as in any real application.
    let Ok(body) = body.collect().await.map(|b| b.to_bytes().to_vec()) else {
        return Ok(Response::new(Full::new(Bytes::from_static(
            b"incomplete request",
        ))));
    };
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    seen.requests.lock().expect("seen lock").push(SeenRequest {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        headers,
        body: body.clone(),
        version: format!("{:?}", parts.version),
    });
    if let Some(root) = root {
        return Ok(file_response(&root, parts.uri.path()));
    }
    let reply = match parts.uri.path() {
        "/big" => {
            let n = parts
                .uri
                .query()
                .and_then(|q| q.strip_prefix("n="))
                .and_then(|n| n.parse().ok())
                .unwrap_or(0);
            big_body(n)
        }
        "/echo" => body,
        _ => b"hello from origin".to_vec(),
    };
    let mut response = Response::new(Full::new(Bytes::from(reply)));
    if parts.uri.path() == "/ntlm" {
        // An origin starting connection-bound authentication.
        response
            .headers_mut()
            .insert("www-authenticate", "Negotiate, NTLM".parse().unwrap());
    }
    // `/close` answers and closes: the connection cannot be kept for another request.
    let connection = match parts.uri.path() {
        "/close" => "close, x-origin-hop",
        _ => "keep-alive, x-origin-hop",
    };
    response
        .headers_mut()
        .insert("connection", connection.parse().unwrap());
    response.headers_mut().insert(
        "x-origin-hop",
        "should not reach the client".parse().unwrap(),
    );
    Ok(response)
}

/// A file under `root`, or 404; paths with `..` never leave `root`.
fn file_response(root: &Path, path: &str) -> Response<Full<Bytes>> {
    let relative = path.trim_start_matches('/');
    let inside = !relative.split('/').any(|part| part == "..");
    match std::fs::read(root.join(relative)).ok().filter(|_| inside) {
        Some(bytes) => Response::new(Full::new(Bytes::from(bytes))),
        None => {
            let mut response = Response::new(Full::new(Bytes::from_static(b"not found")));
            *response.status_mut() = hyper::StatusCode::NOT_FOUND;
            response
        }
    }
}

/// The usual pair of origins: `origin.test` over plain HTTP and `secure.test` over HTTPS (with a
/// CA of its own, written to a file for clients), a resolver naming both `127.0.0.1`, and the
/// `allow_local` rules that open exactly their two ports.
#[derive(Debug)]
pub struct OriginPair {
    /// `origin.test`, plain HTTP.
    pub plain: Origin,
    /// `secure.test`, HTTPS.
    pub secure: Origin,
    /// The PEM file of `secure.test`'s CA.
    pub ca_pem: PathBuf,
    /// Resolves both names to `127.0.0.1`.
    pub resolver: Arc<listeners::StaticResolver>,
    /// `127.0.0.1:PLAIN` and `127.0.0.1:SECURE`.
    pub allow_local: Vec<String>,
}

impl OriginPair {
    /// Starts both origins; the CA file goes into `dir`.
    pub async fn start(dir: &Path) -> OriginPair {
        let ca = crate::TestCa::new("leash test origin CA");
        let ca_pem = dir.join("origin-ca.pem");
        ca.write_pem(&ca_pem);
        let plain = Origin::http().await;
        let secure = Origin::https(ca.server_config(&["secure.test"], &[])).await;
        let loopback = crate::loopback();
        let resolver = listeners::StaticResolver::new()
            .answer("origin.test", &[loopback])
            .answer("secure.test", &[loopback]);
        let allow_local = vec![
            format!("127.0.0.1:{}", plain.port()),
            format!("127.0.0.1:{}", secure.port()),
        ];
        OriginPair {
            plain,
            secure,
            ca_pem,
            resolver: Arc::new(resolver),
            allow_local,
        }
    }
}

/// A WebSocket echo origin (RFC 6455, by tokio-tungstenite), plain (`ws://`) or over TLS
/// (`wss://`): every text and binary message comes back as it was sent, and each handshake is
/// recorded in `seen` (method, target and headers as they reached the origin).
#[derive(Debug)]
pub struct WsOrigin {
    /// Where it listens (127.0.0.1).
    pub addr: SocketAddr,
    /// The handshakes that reached it (and the TCP connections).
    pub seen: Arc<Seen>,
}

impl WsOrigin {
    /// A `ws://` echo origin on `127.0.0.1:0`.
    pub async fn plain() -> WsOrigin {
        WsOrigin::start(None).await
    }

    /// A `wss://` echo origin on `127.0.0.1:0` with `tls` (a leaf from a `TestCa`).
    pub async fn tls(tls: Arc<rustls::ServerConfig>) -> WsOrigin {
        WsOrigin::start(Some(TlsAcceptor::from(tls))).await
    }

    async fn start(tls: Option<TlsAcceptor>) -> WsOrigin {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("origin binds");
        let addr = listener.local_addr().expect("origin address");
        let seen = Arc::new(Seen::default());
        let accept_seen = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accept_seen.connections.fetch_add(1, Ordering::SeqCst);
                let (seen, tls) = (accept_seen.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(stream).await {
                                echo(stream, seen).await;
                            }
                        }
                        None => echo(stream, seen).await,
                    }
                });
            }
        });
        WsOrigin { addr, seen }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Accepts one WebSocket on `stream` and echoes its messages until it closes.
// The recording callback's type (and its large error, a whole HTTP response) is tungstenite's.
#[allow(clippy::result_large_err)]
async fn echo<S>(stream: S, seen: Arc<Seen>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    use futures_util::{SinkExt, StreamExt};
    use tokio_tungstenite::tungstenite::{
        handshake::server::{Request as Handshake, Response as Accepted},
        Message,
    };
    let record = |request: &Handshake, response: Accepted| {
        let headers = request
            .headers()
            .iter()
            .map(|(k, v)| (k.as_str().to_owned(), v.to_str().unwrap_or("").to_owned()))
            .collect();
        seen.requests.lock().expect("seen lock").push(SeenRequest {
            method: request.method().to_string(),
            uri: request.uri().to_string(),
            headers,
            body: Vec::new(),
            version: format!("{:?}", request.version()),
        });
        Ok(response)
    };
    let Ok(mut socket) = tokio_tungstenite::accept_hdr_async(stream, record).await else {
        return;
    };
    while let Some(Ok(message)) = socket.next().await {
        let echoed = match message {
            Message::Text(_) | Message::Binary(_) => socket.send(message).await,
            Message::Close(_) => break,
            Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => Ok(()),
        };
        if echoed.is_err() {
            break;
        }
    }
}
