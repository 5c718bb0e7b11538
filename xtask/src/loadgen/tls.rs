//! TLS for the `mitm_rate` workload: an HTTPS origin with a CA of its own (made here, with rcgen),
//! and clients that trust either that CA (direct) or leash's (through interception), resuming
//! sessions or not. The origin keeps rustls' defaults: it issues TLS 1.3 tickets (stateful, 256
//! sessions), so a resuming client resumes with it directly.

use std::{convert::Infallible, net::SocketAddr, path::Path, sync::Arc};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::Full;
use hyper::{server::conn::http1, service::service_fn, Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, SanType};
use rustls::{
    pki_types::{pem::PemObject, CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName},
    HandshakeKind,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::{TlsAcceptor, TlsConnector};

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Starts an HTTPS origin for `127.0.0.1` answering 1 KiB; writes its CA to `ca_file`.
pub(crate) async fn origin(ca_file: &Path) -> anyhow::Result<SocketAddr> {
    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "loadgen origin CA");
    let ca = ca.self_signed(&ca_key)?;
    std::fs::write(ca_file, ca.pem())?;
    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(Vec::<String>::new())?;
    leaf.subject_alt_names
        .push(SanType::IpAddress([127, 0, 0, 1].into()));
    let leaf = leaf.signed_by(&key, &ca, &ca_key)?;
    let config = rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(
            vec![leaf.der().clone()],
            PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        )?;
    let acceptor = TlsAcceptor::from(Arc::new(config));
    let listener = crate::origin::listener()?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                // Keep-alive as real origins are: a client's `Connection: close` still closes.
                let service = service_fn(|_req: Request<hyper::body::Incoming>| async {
                    Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(vec![b'z'; 1024]))))
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

/// A client trusting the CA in `ca_file`. Without `resume`, every connection is a full handshake,
/// as a new client's would be; with it, the connections share one session store (rustls' default,
/// 256 servers), so each can resume with a ticket an earlier one received, as a long-lived client
/// (one process making many requests) does.
pub(crate) fn client(ca_file: &Path, resume: bool) -> anyhow::Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(
        CertificateDer::from_pem_file(ca_file).with_context(|| format!("{}", ca_file.display()))?,
    )?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.resumption = match resume {
        true => rustls::client::Resumption::in_memory_sessions(256),
        false => rustls::client::Resumption::disabled(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}

/// One GET over TLS on `stream` (already at the origin, or a tunnel to it); reads to the end.
/// Returns whether the handshake resumed a session.
pub(crate) async fn get(
    client: &TlsConnector,
    stream: TcpStream,
    origin: SocketAddr,
) -> anyhow::Result<bool> {
    // As curl and git do: without it the request after the handshake can wait on the peer's
    // delayed ACK (a 40 ms tail that is the client's, not leash's).
    stream.set_nodelay(true)?;
    let name = ServerName::IpAddress(origin.ip().into());
    let mut tls = client.connect(name, stream).await?;
    let resumed = tls.get_ref().1.handshake_kind() == Some(HandshakeKind::Resumed);
    let request = format!("GET /small HTTP/1.1\r\nHost: {origin}\r\nConnection: close\r\n\r\n");
    tls.write_all(request.as_bytes()).await?;
    let mut response = Vec::new();
    let _ = tls.read_to_end(&mut response).await;
    anyhow::ensure!(
        response.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&response[..response.len().min(200)])
    );
    Ok(resumed)
}
