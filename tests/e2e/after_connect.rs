//! Framing around `CONNECT` (issue 14, item 6): the head checks keep going after a refused
//! `CONNECT` on a kept-alive connection, a `CONNECT` inside an intercepted tunnel is refused
//! whatever it names, a `CONNECT` names its target in authority-form only, and an origin's `101`
//! that nobody asked for never reaches the client.

use std::{
    net::SocketAddr,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use listeners::StaticResolver;
use tests::{
    closed, exchange, log_line, loopback, policy_config, read_response, start_proxy, Intercepting,
    Origin, TestCa,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_rustls::TlsAcceptor;

/// A request a kept-alive connection must still refuse after a refused `CONNECT`.
fn smuggles(host: &str) -> Vec<(&'static str, String)> {
    vec![
        ("CL then TE", format!("POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")),
        ("duplicate CL", format!("POST http://{host}/ HTTP/1.1\r\nHost: {host}\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello")),
        ("bare LF", format!("GET http://{host}/ HTTP/1.1\nHost: {host}\n\n")),
        ("obs-fold", format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nX: a\r\n b\r\n\r\n")),
    ]
}

/// `CONNECT`s leash refuses without closing: not allowed, an invalid target, a local address.
fn refused_connects() -> Vec<&'static str> {
    vec![
        "CONNECT denied.test:443 HTTP/1.1\r\nHost: denied.test:443\r\n\r\n",
        "CONNECT bad_host!:443 HTTP/1.1\r\nHost: bad_host!:443\r\n\r\n",
        "CONNECT 127.0.0.1:1 HTTP/1.1\r\nHost: 127.0.0.1:1\r\n\r\n",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smuggling_checks_hold_after_a_refused_connect() {
    let origin = Origin::http().await;
    let resolver = Arc::new(StaticResolver::new().answer("origin.test", &[loopback()]));
    let allow_local = [format!("127.0.0.1:{}", origin.port())];
    let mut config = policy_config(&["origin.test"], &[], &allow_local);
    config.auth.token = String::new();
    let proxy = start_proxy(config, resolver, None);
    let host = format!("origin.test:{}", origin.port());
    let mut events = Vec::new();
    for connect in refused_connects() {
        for (what, smuggle) in smuggles(&host) {
            for pipelined in [false, true] {
                let what = format!("{connect:?} then {what} (pipelined: {pipelined})");
                let mut tcp = TcpStream::connect(proxy.http).await.unwrap();
                let first = match pipelined {
                    true => exchange(&mut tcp, format!("{connect}{smuggle}").as_bytes()).await,
                    false => exchange(&mut tcp, connect.as_bytes()).await,
                };
                let first = first.unwrap_or_else(|| panic!("{what}: no answer to the CONNECT"));
                assert_eq!(first.status, 403, "{what}: {first:?}");
                let second = match pipelined {
                    true => read_response(&mut tcp).await,
                    false => exchange(&mut tcp, smuggle.as_bytes()).await,
                };
                let second = second.unwrap_or_else(|| panic!("{what}: no answer"));
                assert_eq!(second.status, 400, "{what}: {second:?}");
                assert_eq!(second.json()["reason"], "invalid_request", "{what}");
                events.push((what, second.json()["event"].as_u64().unwrap()));
            }
        }
    }
    assert_eq!(
        origin.seen.requests().len(),
        0,
        "nothing reached the origin"
    );
    // The connection stays useful after a refused CONNECT: a good request is forwarded as sent.
    let mut tcp = TcpStream::connect(proxy.http).await.unwrap();
    let connect = refused_connects()[0];
    let get = format!("GET http://{host}/after HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let both = exchange(&mut tcp, format!("{connect}{get}").as_bytes()).await;
    assert_eq!(both.map(|r| r.status), Some(403));
    assert_eq!(read_response(&mut tcp).await.map(|r| r.status), Some(200));
    let seen = origin.seen.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].uri.as_str()),
        ("GET", "/after")
    );
    let lines = proxy.stop().await;
    for (what, event) in events {
        let line = log_line(&lines, event).unwrap_or_else(|| panic!("{what}: no log line"));
        assert_eq!(line["reason"], "invalid_request", "{what}: {line}");
    }
}

/// `CONNECT` requests sent inside an intercepted tunnel to `secure.test:443`.
fn inner_connects() -> Vec<&'static str> {
    vec![
        "CONNECT secure.test:443 HTTP/1.1\r\nHost: secure.test:443\r\n\r\n",
        "CONNECT SECURE.TEST:443 HTTP/1.1\r\nHost: secure.test\r\n\r\n",
        "CONNECT secure.test:443 HTTP/1.0\r\n\r\n",
        "CONNECT secure.test.:443 HTTP/1.1\r\nHost: secure.test:443\r\n\r\n",
        "CONNECT other.test:443 HTTP/1.1\r\nHost: other.test:443\r\n\r\n",
        "CONNECT secure.test:443 HTTP/1.1\r\nHost: secure.test:443\r\n\r\nPOST /p HTTP/1.1\r\nHost: secure.test\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "CONNECT secure.test:443 HTTP/1.1\r\nHost: secure.test:443\r\n\r\nGET /after HTTP/1.1\r\nHost: secure.test\r\n\r\n",
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_inside_an_intercepted_tunnel_is_refused() {
    let ca = TestCa::new("origin CA");
    let plain = Origin::http().await;
    let secure = Origin::https(ca.server_config(&["secure.test"], &[])).await;
    let leash = Intercepting::start(secure.addr, &ca, &plain).await;
    let mut events = Vec::new();
    for connect in inner_connects() {
        let mut tls = leash.tunnel().await;
        let answer = exchange(&mut tls, connect.as_bytes()).await;
        let answer = answer.unwrap_or_else(|| panic!("{connect:?}: no answer"));
        assert_eq!(answer.status, 400, "{connect:?}: {answer:?}");
        assert_eq!(answer.json()["reason"], "invalid_request", "{connect:?}");
        assert!(closed(&mut tls).await, "{connect:?}: the tunnel stays open");
        events.push((connect, answer.json()["event"].as_u64().unwrap()));
    }
    let seen = secure.seen.requests();
    assert!(seen.is_empty(), "the origin got {seen:?}");
    let lines = leash.proxy.stop().await;
    for (connect, event) in events {
        let line = log_line(&lines, event).unwrap_or_else(|| panic!("{connect:?}: no log line"));
        let detail = line["detail"].as_str().unwrap_or_default();
        assert!(detail.contains("CONNECT inside"), "{connect:?}: {line}");
        assert_eq!(line["protocol"], "https", "{connect:?}: {line}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_takes_authority_form_only() {
    let origin = Origin::http().await;
    let resolver = Arc::new(StaticResolver::new().answer("origin.test", &[loopback()]));
    let allow_local = [format!("127.0.0.1:{}", origin.port())];
    let mut config = policy_config(&["origin.test"], &[], &allow_local);
    config.auth.token = String::new();
    let proxy = start_proxy(config, resolver, None);
    let port = origin.port();
    for target in [
        format!("http://origin.test:{port}/"),
        format!("http://origin.test:{port}"),
        format!("https://origin.test:{port}"),
        format!("//origin.test:{port}"),
        format!("origin.test:{port}/"),
    ] {
        let mut tcp = TcpStream::connect(proxy.http).await.unwrap();
        let head = format!("CONNECT {target} HTTP/1.1\r\nHost: origin.test:{port}\r\n\r\n");
        let answer = exchange(&mut tcp, head.as_bytes()).await;
        let answer = answer.unwrap_or_else(|| panic!("{target}: no answer"));
        assert_eq!(answer.status, 400, "{target}: {answer:?}");
        assert_eq!(answer.json()["reason"], "invalid_request", "{target}");
    }
    assert_eq!(origin.seen.connections(), 0, "no tunnel was dialled");
    // The authority-form itself still works.
    let mut tcp = TcpStream::connect(proxy.http).await.unwrap();
    let head = format!("CONNECT origin.test:{port} HTTP/1.1\r\nHost: origin.test:{port}\r\n\r\n");
    tcp.write_all(head.as_bytes()).await.unwrap();
    let answer = tests::read_head(&mut tcp).await.map(|a| a.status);
    assert_eq!(answer, Some(200));
}

/// An origin that answers every request `101 Switching Protocols` and then speaks something else.
async fn switching_origin(tls: Option<TlsAcceptor>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(AtomicUsize::new(0));
    let counted = heads.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (tls, counted) = (tls.clone(), counted.clone());
            tokio::spawn(async move {
                match tls {
                    Some(tls) => {
                        if let Ok(stream) = tls.accept(tcp).await {
                            switch(stream, &counted).await;
                        }
                    }
                    None => switch(tcp, &counted).await,
                }
            });
        }
    });
    (addr, heads)
}

async fn switch<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, heads: &AtomicUsize) {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        if !matches!(stream.read(&mut byte).await, Ok(1)) {
            return;
        }
        head.push(byte[0]);
    }
    heads.fetch_add(1, Ordering::SeqCst);
    let reply = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nSECRET-AFTER-101";
    let _ = stream.write_all(reply.as_bytes()).await;
    let _ = stream.flush().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
}

#[track_caller]
fn check_502(what: &str, answer: Option<tests::RawResponse>) {
    let answer = answer.unwrap_or_else(|| panic!("{what}: no answer"));
    assert_eq!(answer.status, 502, "{what}: {answer:?}");
    assert_eq!(
        answer.header("x-proxy-error"),
        Some("upstream-error"),
        "{what}"
    );
    assert_eq!(answer.json()["reason"], "bad_upstream_response", "{what}");
    assert!(
        !format!("{answer:?}").contains("SECRET"),
        "{what}: {answer:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unrequested_101_is_never_relayed() {
    let ca = TestCa::new("origin CA");
    let (plain, plain_heads) = switching_origin(None).await;
    let tls = TlsAcceptor::from(ca.server_config(&["secure.test"], &[]));
    let (secure, secure_heads) = switching_origin(Some(tls)).await;
    // `Intercepting` also opens `origin.test` on the listener; this test does not use it.
    let unused = Origin::http().await;
    let leash = Intercepting::start(secure, &ca, &unused).await;
    let resolver = Arc::new(StaticResolver::new().answer("switch.test", &[loopback()]));
    let allow_local = [format!("127.0.0.1:{}", plain.port())];
    let mut config = policy_config(&["switch.test"], &[], &allow_local);
    config.auth.token = String::new();
    let proxy = start_proxy(config, resolver, None);
    let host = format!("switch.test:{}", plain.port());
    for (what, head) in [
        ("a GET", format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\n\r\n")),
        // h2c is stripped (only a WebSocket handshake keeps its upgrade, see e2e::websocket), so
        // a `101` to it was asked for by no one.
        ("a GET asking for h2c", format!("GET http://{host}/ HTTP/1.1\r\nHost: {host}\r\nUpgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n")),
        ("an HTTP/1.0 GET", format!("GET http://{host}/ HTTP/1.0\r\n\r\n")),
    ] {
        let mut tcp = TcpStream::connect(proxy.http).await.unwrap();
        check_502(what, exchange(&mut tcp, head.as_bytes()).await);
    }
    assert_eq!(
        plain_heads.load(Ordering::SeqCst),
        3,
        "each request reached the origin"
    );
    for (what, head) in [
        (
            "an intercepted GET",
            "GET / HTTP/1.1\r\nHost: secure.test\r\n\r\n",
        ),
        (
            "an intercepted GET asking for h2c",
            "GET / HTTP/1.1\r\nHost: secure.test\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n",
        ),
    ] {
        let mut tls = leash.tunnel().await;
        check_502(what, exchange(&mut tls, head.as_bytes()).await);
    }
    assert_eq!(secure_heads.load(Ordering::SeqCst), 2);
}
