//! HTTP/1.1 framing attacks (issue 8), against the listener and inside an intercepted tunnel: each
//! is answered 400 (or 431) and the connection closed; the origin never sees a complete request.

use std::{sync::Arc, time::Duration};

use listeners::StaticResolver;
use rustls::pki_types::{pem::PemObject, CertificateDer, ServerName};
use tests::{loopback, policy_config, start_proxy, LoopbackNat, Origin, TestCa};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::TcpStream,
};
use tokio_rustls::TlsConnector;

/// Requests no well-behaved client sends, for `host`, with what must come back.
fn attacks(host: &str) -> Vec<(&'static str, String, &'static [&'static str])> {
    let long_value = "a".repeat(70 * 1024);
    let bad = &["400"][..];
    vec![
        ("CL then TE", format!("POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"), bad),
        ("TE then CL", format!("POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n"), bad),
        ("duplicate CL", format!("POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!"), bad),
        ("equal duplicate CL", format!("POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"), bad),
        ("CL list", format!("POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5, 5\r\n\r\nhello"), bad),
        ("obs-fold", format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nX-Folded: a\r\n b\r\n\r\n"), bad),
        ("bare LF", format!("GET http://{host}/ HTTP/1.1\nHost: {host}\n\n"), bad),
        ("invalid chunk size", format!("POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n"), bad),
        ("CR in the URI", format!("GET http://{host}/a\rb HTTP/1.1\r\nHost: {host}\r\n\r\n"), bad),
        ("over-long header", format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nX-Big: {long_value}\r\n\r\n"), &["431"]),
        ("over-long request line", format!("GET http://{host}/{long_value} HTTP/1.1\r\nHost: {host}\r\n\r\n"), &["431", "414", "400"]),
    ]
}

/// Writes `request`, reads the answer; returns it and whether the server then closed.
async fn exchange<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    request: &[u8],
) -> (String, bool) {
    let _ = stream.write_all(request).await;
    let mut response = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    loop {
        match tokio::time::timeout(Duration::from_secs(2), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (String::from_utf8_lossy(&response).into_owned(), true)
            }
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&response).into_owned(), false),
        }
    }
}

#[track_caller]
fn check(what: &str, (response, closed): (String, bool), statuses: &[&str]) {
    let status = response.split(' ').nth(1).unwrap_or("none");
    assert!(statuses.contains(&status), "{what}: {response}");
    assert!(closed, "{what}: the connection stays open");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_attacks_on_the_listener_are_refused_and_closed() {
    let origin = Origin::http().await;
    let resolver = Arc::new(StaticResolver::new().answer("origin.test", &[loopback()]));
    let mut config = policy_config(
        &["origin.test"],
        &[],
        &[format!("127.0.0.1:{}", origin.port())],
    );
    config.auth.token = String::new();
    let proxy = start_proxy(config, resolver, None);
    let host = format!("origin.test:{}", origin.port());
    for (what, request, statuses) in attacks(&host) {
        let mut stream = TcpStream::connect(proxy.http).await.unwrap();
        check(
            what,
            exchange(&mut stream, request.as_bytes()).await,
            statuses,
        );
    }
    assert_eq!(
        origin.seen.requests().len(),
        0,
        "no complete request reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn framing_attacks_inside_an_intercepted_tunnel_are_refused_and_closed() {
    let dir = tempfile::tempdir().unwrap();
    let origin_ca = TestCa::new("origin CA");
    let origin_ca_file = dir.path().join("origin-ca.pem");
    origin_ca.write_pem(&origin_ca_file);
    let origin = Origin::https(origin_ca.server_config(&["secure.test"], &[])).await;
    // Full mode, so that a request with a body would be forwarded; port 443, so it is intercepted.
    // The public answer is mapped onto the loopback origin: nothing leaves the machine.
    let public: std::net::IpAddr = "93.184.216.34".parse().unwrap();
    let resolver = Arc::new(StaticResolver::new().answer("secure.test", &[public]));
    let nat = Arc::new(LoopbackNat::default().map(public, origin.addr));
    let mut config = policy_config(&["secure.test"], &[], &[]);
    config.auth.token = String::new();
    config.mitm.enabled = true;
    config.mitm.ca_dir = Some(dir.path().join("ca"));
    config.mitm.upstream_ca = vec![origin_ca_file];
    let proxy = start_proxy(config, resolver, Some(nat));
    let leash_ca = CertificateDer::from_pem_file(dir.path().join("ca/ca.pem")).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(leash_ca).unwrap();
    let client = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = TlsConnector::from(Arc::new(client));
    let host = "secure.test:443".to_owned();
    for (what, request, statuses) in attacks(&host) {
        let mut tcp = TcpStream::connect(proxy.http).await.unwrap();
        tcp.write_all(format!("CONNECT {host} HTTP/1.1\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let mut buf = [0u8; 1024];
        let n = tcp.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        let mut tls = connector
            .connect(ServerName::try_from("secure.test").unwrap(), tcp)
            .await
            .unwrap();
        // Inside the tunnel requests are origin-form.
        let request = request.replace(&format!("http://{host}"), "");
        check(what, exchange(&mut tls, request.as_bytes()).await, statuses);
    }
    assert_eq!(
        origin.seen.requests().len(),
        0,
        "no complete request reached the origin"
    );
}
