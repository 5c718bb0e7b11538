//! Raw HTTP/1.1 over any stream, for heads no well-behaved client sends: one response read by its
//! framing (so a kept-alive connection can carry the next request), and the two places such
//! requests go — the listener, and the inside of an intercepted tunnel (`Intercepting`).

use std::{net::IpAddr, path::PathBuf, sync::Arc, time::Duration};

use listeners::StaticResolver;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{client::TlsStream, TlsConnector};

use crate::{policy_config, start_proxy, LoopbackNat, Origin, TestCa, TestProxy};

/// Every wait for the proxy is bounded by this.
const WAIT: Duration = Duration::from_secs(5);

/// One response: status, head (lowercase header names) and body.
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// The head as text, status line included.
    pub head: String,
    /// The body (by `Content-Length`; to the close otherwise).
    pub body: Vec<u8>,
}

impl std::fmt::Debug for RawResponse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}", self.head, String::from_utf8_lossy(&self.body))
    }
}

impl RawResponse {
    /// The first value of header `name` (lowercase), if present.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }

    /// The body as JSON (panics naming the response if it is not).
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {self:?}"))
    }
}

/// Writes `request` and reads one response; `None` if the connection closed (or stayed silent for
/// five seconds) before a whole head came.
pub async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> Option<RawResponse> {
    let _ = stream.write_all(request).await;
    read_response(stream).await
}

/// Reads one response from `stream`, and not a byte more (a pipelined answer stays to be read).
pub async fn read_response<S: AsyncRead + Unpin>(stream: &mut S) -> Option<RawResponse> {
    let mut response = read_head(stream).await?;
    match response
        .header("content-length")
        .and_then(|v| v.parse::<usize>().ok())
    {
        Some(length) => {
            response.body = vec![0; length];
            let read = tokio::time::timeout(WAIT, stream.read_exact(&mut response.body)).await;
            if !matches!(read, Ok(Ok(_))) {
                return None;
            }
        }
        // No length: the body runs to the close.
        None => while read_some(stream, &mut response.body).await {},
    }
    Some(response)
}

/// Reads one response head, byte by byte so that nothing after it is taken: for answers whose
/// body's end a reader cannot see, like a `CONNECT`'s `200`, and for pipelined answers.
pub async fn read_head<S: AsyncRead + Unpin>(stream: &mut S) -> Option<RawResponse> {
    let mut bytes = Vec::new();
    while !bytes.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(WAIT, stream.read(&mut byte)).await {
            Ok(Ok(1)) => bytes.push(byte[0]),
            _ => return None,
        }
    }
    let head = String::from_utf8_lossy(&bytes).into_owned();
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some(RawResponse {
        status,
        head,
        body: Vec::new(),
    })
}

/// Whether the other side closed: the next read ends (EOF or reset) within five seconds.
pub async fn closed<S: AsyncRead + Unpin>(stream: &mut S) -> bool {
    let mut rest = Vec::new();
    loop {
        match tokio::time::timeout(WAIT, stream.read_buf(&mut rest)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) if rest.len() < 1 << 20 => continue,
            Ok(Ok(_)) | Err(_) => return false,
        }
    }
}

async fn read_some<S: AsyncRead + Unpin>(stream: &mut S, into: &mut Vec<u8>) -> bool {
    matches!(
        tokio::time::timeout(WAIT, stream.read_buf(into)).await,
        Ok(Ok(1..))
    )
}

/// A full-mode leash with MITM on (no token), intercepting `secure.test:443`, which it resolves to
/// a public address that the connector maps onto a loopback origin: nothing leaves the machine.
#[derive(Debug)]
pub struct Intercepting {
    /// The proxy.
    pub proxy: TestProxy,
    client: Arc<rustls::ClientConfig>,
    dir: tempfile::TempDir,
}

impl Intercepting {
    /// leash intercepting `secure.test:443`, whose origin is `origin` (an HTTPS origin with a leaf
    /// from `origin_ca`), plus `plain` as `origin.test` over plain HTTP on the listener.
    pub async fn start(origin: std::net::SocketAddr, origin_ca: &TestCa, plain: &Origin) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let origin_ca_file = dir.path().join("origin-ca.pem");
        origin_ca.write_pem(&origin_ca_file);
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let resolver = StaticResolver::new()
            .answer("secure.test", &[public])
            .answer("origin.test", &[crate::loopback()]);
        let nat = Arc::new(LoopbackNat::default().map(public, origin));
        let allow_local = [format!("127.0.0.1:{}", plain.port())];
        let mut config = policy_config(&["secure.test", "origin.test"], &[], &allow_local);
        config.auth.token = String::new();
        config.mitm.enabled = true;
        config.mitm.ca_dir = Some(dir.path().join("ca"));
        config.mitm.upstream_ca = vec![origin_ca_file];
        let proxy = start_proxy(config, Arc::new(resolver), Some(nat));
        let client = leash_trusting_client(dir.path().join("ca/ca.pem"));
        Intercepting { proxy, client, dir }
    }

    /// leash's CA certificate (PEM), for clients that trust it.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca/ca.pem")
    }

    /// A fresh intercepted tunnel to `secure.test:443`, TLS done.
    pub async fn tunnel(&self) -> TlsStream<TcpStream> {
        let mut tcp = TcpStream::connect(self.proxy.http).await.unwrap();
        let connect = "CONNECT secure.test:443 HTTP/1.1\r\nHost: secure.test:443\r\n\r\n";
        tcp.write_all(connect.as_bytes()).await.unwrap();
        let answer = read_head(&mut tcp).await;
        assert_eq!(
            answer.map(|a| a.status),
            Some(200),
            "the CONNECT is accepted"
        );
        let name = ServerName::try_from("secure.test").unwrap();
        let connector = TlsConnector::from(self.client.clone());
        connector.connect(name, tcp).await.unwrap()
    }
}

fn leash_trusting_client(ca: PathBuf) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    roots
        .add(CertificateDer::from_pem_file(ca).unwrap())
        .unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    Arc::new(client)
}

/// The log line of event `id`, from a stopped proxy's lines.
pub fn log_line(lines: &[serde_json::Value], id: u64) -> Option<&serde_json::Value> {
    lines.iter().find(|l| l["seq"].as_u64() == Some(id))
}
