//! The dialer's route through an upstream proxy, against a scripted upstream on loopback: what it
//! is sent, how its answers map, and that the tunnel's first bytes survive the handshake.

use std::time::Duration;

use policy::{AllowLocal, Policy, RuleList};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::*;
use crate::{ClientKey, UpstreamProxy, UpstreamResolve};

/// An upstream that reads one request head, answers with `answer` in the given pieces, and
/// returns the head it read.
async fn scripted(
    answer: &'static [&'static [u8]],
) -> (SocketAddr, tokio::task::JoinHandle<String>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            stream.read_exact(&mut byte).await.unwrap();
            head.push(byte[0]);
        }
        for piece in answer {
            stream.write_all(piece).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        String::from_utf8(head).unwrap()
    });
    (addr, task)
}

fn dialer_through(upstream: SocketAddr, resolve: UpstreamResolve, own: &[SocketAddr]) -> Dialer {
    let proxy = UpstreamProxy::new(
        Host::Ip(upstream.ip()),
        upstream.port(),
        Some(("corp", "pw")),
        RuleList::default(),
        resolve,
    );
    Dialer::new(
        Arc::new(StaticResolver::new()),
        Duration::from_secs(5),
        Duration::from_secs(5),
    )
    .with_own_listeners(own)
    .with_upstream(Some(Arc::new(proxy)))
}

fn open() -> Policy {
    Policy::builder()
        .allow("*".parse().unwrap())
        .allow_local(AllowLocal::All)
        .build()
        .unwrap()
}

fn client() -> ClientKey {
    ClientKey::new(Some("a1"), "127.0.0.1".parse().unwrap())
}

#[tokio::test]
async fn a_connect_carries_the_name_and_leashs_credentials_and_keeps_the_first_tunnel_bytes() {
    for pieces in [
        &[b"HTTP/1.1 200 Connection established\r\n\r\nSSH-2.0-x\r\n".as_slice()][..],
        &[b"HTTP/1.1 200 OK\r\n\r".as_slice(), b"\nSSH-2.0-x\r\n"][..],
        &[
            b"HTTP/1.1 200 OK\r\nVia: x\r\n".as_slice(),
            b"\r\n",
            b"SSH-2.0-x\r\n",
        ][..],
    ] {
        let pieces: &'static [&'static [u8]] = Box::leak(pieces.to_vec().into_boxed_slice());
        let (upstream, head) = scripted(pieces).await;
        let dialer = dialer_through(upstream, UpstreamResolve::Upstream, &[]);
        let target = Target::parse("ssh.test:22", None).unwrap();
        let mut dialed = dialer.dial(&open(), &target, &client()).await.unwrap();
        assert_eq!(
            (dialed.peer, dialed.via.clone()),
            (None, Via::Tunnel(upstream))
        );
        let mut banner = [0u8; 11];
        dialed.stream.read_exact(&mut banner).await.unwrap();
        assert_eq!(
            &banner, b"SSH-2.0-x\r\n",
            "the origin's first bytes are the tunnel's"
        );
        assert_eq!(
            head.await.unwrap(),
            "CONNECT ssh.test:22 HTTP/1.1\r\nHost: ssh.test:22\r\n\
             Proxy-Authorization: Basic Y29ycDpwdw==\r\n\r\n"
        );
    }
}

#[tokio::test]
async fn the_upstreams_answers_map_to_their_failures() {
    let cases: [(&'static [&'static [u8]], &str); 4] = [
        (
            &[b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n"],
            "UpstreamProxyAuth",
        ),
        (
            &[b"HTTP/1.1 403 Forbidden\r\n\r\n"],
            "UpstreamProxyRefused(403)",
        ),
        (
            &[b"HTTP/1.1 502 Bad Gateway\r\n\r\n"],
            "UpstreamProxyRefused(502)",
        ),
        (&[b"SSH-2.0-not-a-proxy\r\n\r\n"], "UpstreamProxyFailed"),
    ];
    for (answer, expected) in cases {
        let (upstream, _head) = scripted(answer).await;
        let dialer = dialer_through(upstream, UpstreamResolve::Upstream, &[]);
        let target = Target::parse("x.test:443", None).unwrap();
        let error = dialer.dial(&open(), &target, &client()).await.unwrap_err();
        assert!(format!("{error:?}").starts_with(expected), "{error:?}");
    }
}

#[tokio::test]
async fn plain_http_goes_to_the_upstream_itself_unless_leash_resolves() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let dialer = dialer_through(upstream, UpstreamResolve::Upstream, &[]);
    let target = Target::parse("x.test:80", None).unwrap();
    let dialed = dialer.dial_http(&open(), &target, &client()).await.unwrap();
    let authorization = Some(Arc::from("Basic Y29ycDpwdw=="));
    assert_eq!(
        dialed.via,
        Via::Forward {
            proxy: upstream,
            authorization
        }
    );
}

#[tokio::test]
async fn leashs_own_listeners_are_refused_through_the_upstream_too() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let upstream = listener.local_addr().unwrap();
    let admin: SocketAddr = "127.0.0.1:9180".parse().unwrap();
    // An address target is vetted by leash whoever resolves names.
    let dialer = dialer_through(upstream, UpstreamResolve::Upstream, &[admin]);
    let target = Target::parse("127.0.0.1:9180", None).unwrap();
    let error = dialer.dial(&open(), &target, &client()).await.unwrap_err();
    assert!(matches!(error, DialError::Blocked(_)), "{error:?}");
    // An upstream that is leash itself would loop.
    let dialer = dialer_through(admin, UpstreamResolve::Upstream, &[admin]);
    let target = Target::parse("x.test:443", None).unwrap();
    let error = dialer.dial(&open(), &target, &client()).await.unwrap_err();
    assert!(
        matches!(error, DialError::UpstreamProxyFailed(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn udp_never_goes_around_the_upstream() {
    let dialer = dialer_through("127.0.0.1:1".parse().unwrap(), UpstreamResolve::Local, &[]);
    let target = Target::parse("1.1.1.1:53", None).unwrap();
    let error = dialer
        .resolve_vetted(&open(), &target, &client())
        .await
        .unwrap_err();
    assert!(
        matches!(error, DialError::UpstreamProxyFailed(_)),
        "{error:?}"
    );
}

#[tokio::test]
async fn with_local_resolution_a_no_proxy_network_is_matched_by_the_vetted_address() {
    let origin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = origin.local_addr().unwrap().port();
    let proxy = UpstreamProxy::new(
        Host::Ip("127.0.0.1".parse().unwrap()),
        1, // never dialled: the target is bypassed
        None,
        RuleList::new(["127.0.0.0/8".parse().unwrap()]),
        UpstreamResolve::Local,
    );
    let resolver = StaticResolver::new().answer("intra.test", &["127.0.0.1".parse().unwrap()]);
    let dialer = Dialer::new(
        Arc::new(resolver),
        Duration::from_secs(5),
        Duration::from_secs(5),
    )
    .with_upstream(Some(Arc::new(proxy)));
    let target = Target::parse(&format!("intra.test:{port}"), None).unwrap();
    let dialed = dialer.dial(&open(), &target, &client()).await.unwrap();
    assert_eq!(dialed.via, Via::Direct);
    assert_eq!(dialed.peer, Some(SocketAddr::from(([127, 0, 0, 1], port))));
}
