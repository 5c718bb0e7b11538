//! SOCKS5 end to end (SPEC §2, §6): curl `socks5h://`, tokio-socks and raw bytes through a real
//! leash to real loopback origins, under the same policy and log as HTTP.

use std::{
    net::{IpAddr, SocketAddr},
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc,
    },
    time::Duration,
};

use listeners::StaticResolver;
use tests::{
    big_body, curl, loopback, policy_config, raw_request, start_proxy, Origin, OriginPair,
    TestProxy,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpStream, UdpSocket},
};
use tokio_socks::tcp::Socks5Stream;

fn socks_url(proxy: &TestProxy, credentials: &str) -> String {
    format!(
        "socks5h://{credentials}@{}",
        proxy.socks.expect("a SOCKS listener")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn curl_socks5h_fetches_http_and_https_and_is_refused_by_ruleset() {
    let dir = tempfile::tempdir().unwrap();
    let OriginPair {
        plain,
        secure,
        ca_pem,
        resolver,
        allow_local: local,
    } = OriginPair::start(dir.path()).await;
    let proxy = start_proxy(
        policy_config(&["origin.test", "secure.test"], &[], &local),
        resolver.clone(),
        None,
    );
    let url = socks_url(&proxy, "a1:tok");

    let out = curl(&[
        "--proxy",
        &url,
        &format!("http://origin.test:{}/", plain.port()),
    ])
    .await;
    assert_eq!(out.text(), "hello from origin", "{}", out.stderr);
    let https = format!("https://secure.test:{}/big?n=1000000", secure.port());
    let out = curl(&[
        "--proxy",
        &url,
        "--cacert",
        ca_pem.to_str().unwrap(),
        &https,
    ])
    .await;
    assert!(out.stdout == big_body(1_000_000), "{}", out.stderr);

    let out = curl(&["--proxy", &url, "http://blocked.test/"]).await;
    assert_eq!(out.code, Some(97), "curl's SOCKS failure: {}", out.stderr);
    let said_ruleset = out.stderr.contains("not allowed by ruleset") || out.stderr.contains("(2)");
    assert!(
        said_ruleset,
        "reply 0x02 (connection not allowed by ruleset): {}",
        out.stderr
    );
    assert!(
        !resolver.calls().contains(&"blocked.test".to_owned()),
        "a blocked name is not resolved"
    );
    let lines = proxy.stop().await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["protocol"], "socks5");
    assert_eq!(lines[0]["reason"], "allowlist_miss");
    assert_eq!(lines[0]["attempt"], "a1");
    assert_eq!(lines[0]["host"], "blocked.test");
    assert_eq!(lines[0]["port"], 80);
}

async fn get_over(mut stream: Socks5Stream<TcpStream>) -> String {
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokio_socks_covers_every_address_type_and_the_token() {
    let v4 = Origin::http().await;
    let v6 = Origin::http_on("[::1]:0").await;
    let resolver = Arc::new(StaticResolver::new().answer("origin.test", &[loopback()]));
    let local = [
        format!("127.0.0.1:{}", v4.port()),
        format!("[::1]:{}", v6.port()),
    ];
    let allow = ["origin.test", "127.0.0.1", "::1"];
    let proxy = start_proxy(policy_config(&allow, &[], &local), resolver, None);
    let socks = proxy.socks.unwrap();

    let ipv4 = Socks5Stream::connect_with_password(socks, (loopback(), v4.port()), "a1", "tok")
        .await
        .unwrap();
    assert!(get_over(ipv4).await.ends_with("hello from origin"));
    let ipv6: IpAddr = "::1".parse().unwrap();
    let ipv6 = Socks5Stream::connect_with_password(socks, (ipv6, v6.port()), "a1", "tok")
        .await
        .unwrap();
    assert!(get_over(ipv6).await.ends_with("hello from origin"));
    let domain =
        Socks5Stream::connect_with_password(socks, ("origin.test", v4.port()), "a1", "tok")
            .await
            .unwrap();
    assert!(get_over(domain).await.ends_with("hello from origin"));
    assert_eq!(v4.seen.requests().len(), 2);
    assert_eq!(v6.seen.requests().len(), 1);

    let wrong =
        Socks5Stream::connect_with_password(socks, (loopback(), v4.port()), "a1", "wrong").await;
    assert!(wrong.is_err(), "a wrong token is refused");
    let no_auth = Socks5Stream::connect(socks, (loopback(), v4.port())).await;
    assert!(
        no_auth.is_err(),
        "no-auth is refused when a token is required"
    );
    let lines = proxy.stop().await;
    let reasons: Vec<&str> = lines
        .iter()
        .map(|l| l["reason"].as_str().unwrap())
        .collect();
    assert_eq!(reasons, ["auth_failed", "auth_failed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bind_socks4_and_garbage_are_refused() {
    let proxy = start_proxy(
        policy_config(&["*"], &[], &[]),
        Arc::new(StaticResolver::new()),
        None,
    );
    let socks = proxy.socks.unwrap();
    // no-auth is not offered with a token; user/pass "a1"/"tok", then BIND 1.2.3.4:80.
    let bind = [
        &[5u8, 1, 2][..],
        &[1, 2, b'a', b'1', 3, b't', b'o', b'k'],
        &[5, 2, 0, 1, 1, 2, 3, 4, 0, 80],
    ]
    .concat();
    let response = raw_bytes(socks, &bind).await;
    assert_eq!(
        response,
        [&[5u8, 2][..], &[1, 0], &[5, 7, 0, 1, 0, 0, 0, 0, 0, 0]].concat(),
        "BIND gets 0x07"
    );
    let socks4 = [4u8, 1, 0, 80, 127, 0, 0, 1, b'u', 0];
    assert!(
        raw_bytes(socks, &socks4).await.is_empty(),
        "SOCKS4 is closed without a reply"
    );
    assert!(
        raw_bytes(socks, b"GET / HTTP/1.1\r\n\r\n").await.is_empty(),
        "garbage is closed"
    );
    let lines = proxy.stop().await;
    assert_eq!(lines.len(), 2);
    assert!(
        lines
            .iter()
            .all(|l| l["reason"] == "invalid_request" && l["protocol"] == "socks5"),
        "{lines:?}"
    );
}

async fn raw_bytes(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    raw_request(addr, bytes).await.into_bytes()
}

/// One spelling, and what each path must make of it. HTTP carries it in a `CONNECT` line, SOCKS5 as
/// a domain (ATYP 3); where HTTP cannot even carry it (a NUL or CR/LF in the request line), hyper
/// answers 400 before any decision, and the entry says so.
struct Spelling {
    host: &'static str,
    reason: &'static str,
    canonical: &'static str,
    http_unparseable: bool,
}

const SPELLINGS: &[Spelling] = &[
    Spelling {
        host: "evil\0.test",
        reason: "invalid_target",
        canonical: "",
        http_unparseable: true,
    },
    Spelling {
        host: "evil.test\r\nX: y",
        reason: "invalid_target",
        canonical: "",
        http_unparseable: true,
    },
    Spelling {
        host: "EVIL.test.",
        reason: "denylist",
        canonical: "evil.test",
        http_unparseable: false,
    },
    Spelling {
        host: "Unlisted.TEST.",
        reason: "allowlist_miss",
        canonical: "unlisted.test",
        http_unparseable: false,
    },
    Spelling {
        host: "a..b",
        reason: "invalid_target",
        canonical: "",
        http_unparseable: false,
    },
    Spelling {
        host: "%65vil.test",
        reason: "invalid_target",
        canonical: "",
        http_unparseable: true,
    },
    Spelling {
        host: "127.0.0.1",
        reason: "local_address",
        canonical: "127.0.0.1",
        http_unparseable: false,
    },
    Spelling {
        host: "2130706433",
        reason: "local_address",
        canonical: "127.0.0.1",
        http_unparseable: false,
    },
    Spelling {
        host: "0177.0.0.1",
        reason: "local_address",
        canonical: "127.0.0.1",
        http_unparseable: false,
    },
    Spelling {
        host: "0x7f.1",
        reason: "local_address",
        canonical: "127.0.0.1",
        http_unparseable: false,
    },
    Spelling {
        host: "127.1",
        reason: "local_address",
        canonical: "127.0.0.1",
        http_unparseable: false,
    },
    Spelling {
        host: "[::ffff:127.0.0.1]",
        reason: "local_address",
        canonical: "127.0.0.1",
        http_unparseable: false,
    },
    Spelling {
        host: "[::ffff:7f00:1]",
        reason: "local_address",
        canonical: "127.0.0.1",
        http_unparseable: false,
    },
    Spelling {
        host: "[64:ff9b::7f00:1]",
        reason: "local_address",
        canonical: "64:ff9b::7f00:1",
        http_unparseable: false,
    },
    Spelling {
        host: "[fe80::1%25eth0]",
        reason: "local_address",
        canonical: "fe80::1",
        http_unparseable: false,
    },
    Spelling {
        host: "0.0.0.0",
        reason: "local_address",
        canonical: "0.0.0.0",
        http_unparseable: false,
    },
    Spelling {
        host: "[::]",
        reason: "local_address",
        canonical: "::",
        http_unparseable: false,
    },
    Spelling {
        host: "169.254.169.254",
        reason: "local_address",
        canonical: "169.254.169.254",
        http_unparseable: false,
    },
    Spelling {
        host: "100.100.100.200",
        reason: "local_address",
        canonical: "100.100.100.200",
        http_unparseable: false,
    },
    Spelling {
        host: "localhost",
        reason: "local_address",
        canonical: "localhost",
        http_unparseable: false,
    },
];

async fn socks_domain_connect(socks: SocketAddr, host: &[u8]) -> Vec<u8> {
    let mut bytes = vec![
        5u8,
        1,
        2,
        1,
        2,
        b'a',
        b'1',
        3,
        b't',
        b'o',
        b'k',
        5,
        1,
        0,
        3,
        host.len() as u8,
    ];
    bytes.extend_from_slice(host);
    bytes.extend_from_slice(&443u16.to_be_bytes());
    raw_bytes(socks, &bytes).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_spellings_get_the_same_decision_over_http_and_socks() {
    let proxy = start_proxy(
        policy_config(&["**.allowed.test"], &["evil.test"], &[]),
        Arc::new(StaticResolver::new()),
        None,
    );
    let socks = proxy.socks.unwrap();
    let mut expected_lines = Vec::new();
    for spelling in SPELLINGS {
        let reply = socks_domain_connect(socks, spelling.host.as_bytes()).await;
        assert_eq!(
            reply.get(5),
            Some(&2),
            "{:?}: SOCKS reply 0x02, got {reply:?}",
            spelling.host
        );
        expected_lines.push(("socks5", spelling));
        let raw = format!("CONNECT {}:443 HTTP/1.1\r\nProxy-Authorization: Basic YTE6dG9r\r\nConnection: close\r\n\r\n", spelling.host);
        let response = raw_request(proxy.http, raw.as_bytes()).await;
        match spelling.http_unparseable {
            // Refused by the head rules (JSON 400 and a log line, before credentials are read).
            true => {
                assert!(
                    response.starts_with("HTTP/1.1 400"),
                    "{:?}: {response}",
                    spelling.host
                );
                expected_lines.push(("invalid head", spelling));
            }
            false => {
                assert!(
                    response.starts_with("HTTP/1.1 403"),
                    "{:?}: {response}",
                    spelling.host
                );
                assert!(
                    response.contains(&format!("\"reason\":\"{}\"", spelling.reason)),
                    "{:?}: {response}",
                    spelling.host
                );
                expected_lines.push(("connect", spelling));
            }
        }
    }
    let lines = proxy.stop().await;
    assert_eq!(lines.len(), expected_lines.len());
    for (line, (protocol, spelling)) in lines.iter().zip(&expected_lines) {
        let what = format!("{:?} over {protocol}: {line}", spelling.host);
        if *protocol == "invalid head" {
            assert_eq!(line["protocol"], "connect", "{what}");
            assert_eq!(line["reason"], "invalid_request", "{what}");
            continue;
        }
        assert_eq!(line["protocol"], *protocol, "{what}");
        assert_eq!(line["reason"], spelling.reason, "{what}");
        if !spelling.canonical.is_empty() {
            assert_eq!(line["host"], spelling.canonical, "{what}");
        }
        assert_eq!(line["attempt"], "a1", "{what}");
    }
}

/// A UDP echo server that counts what it received.
pub(crate) async fn udp_echo() -> (SocketAddr, Arc<AtomicUsize>) {
    let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = socket.local_addr().unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let count = received.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = socket.recv_from(&mut buf).await {
            count.fetch_add(1, Ordering::SeqCst);
            let _ = socket.send_to(&buf[..n], from).await;
        }
    });
    (addr, received)
}

pub(crate) fn udp_datagram(target: SocketAddr, payload: &[u8]) -> Vec<u8> {
    let SocketAddr::V4(v4) = target else {
        panic!("IPv4 only here")
    };
    let mut datagram = vec![0, 0, 0, 1];
    datagram.extend_from_slice(&v4.ip().octets());
    datagram.extend_from_slice(&v4.port().to_be_bytes());
    datagram.extend_from_slice(payload);
    datagram
}

/// A UDP ASSOCIATE as attempt `a1` with token `tok`: the control connection (the association
/// lives while it is open) and the relay's UDP address.
pub(crate) async fn udp_associate(proxy: &TestProxy) -> (TcpStream, SocketAddr) {
    let mut control = TcpStream::connect(proxy.socks.unwrap()).await.unwrap();
    control
        .write_all(&[
            5, 1, 2, 1, 2, b'a', b'1', 3, b't', b'o', b'k', 5, 3, 0, 1, 0, 0, 0, 0, 0, 0,
        ])
        .await
        .unwrap();
    let mut reply = [0u8; 2 + 2 + 10];
    control.read_exact(&mut reply).await.unwrap();
    assert_eq!(
        &reply[..6],
        &[5, 2, 1, 0, 5, 0],
        "auth ok, associate granted"
    );
    let relay = SocketAddr::from((
        [reply[8], reply[9], reply[10], reply[11]],
        u16::from_be_bytes([reply[12], reply[13]]),
    ));
    (control, relay)
}

pub(crate) async fn recv_within(socket: &UdpSocket, wait: Duration) -> Option<Vec<u8>> {
    let mut buf = [0u8; 2048];
    match tokio::time::timeout(wait, socket.recv_from(&mut buf)).await {
        Ok(Ok((n, _))) => Some(buf[..n].to_vec()),
        _ => None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_associate_relays_allowed_datagrams_only_from_the_client() {
    let (echo, received) = udp_echo().await;
    let mut config = policy_config(&["127.0.0.1"], &[], &[echo.to_string()]);
    config.socks.udp = true;
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let (control, relay) = udp_associate(&proxy).await;

    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(&udp_datagram(echo, b"ping"), relay)
        .await
        .unwrap();
    let answer = recv_within(&client, Duration::from_secs(5))
        .await
        .expect("the echo comes back");
    assert_eq!(
        answer,
        udp_datagram(echo, b"ping"),
        "wrapped with the remote's address"
    );

    let denied = SocketAddr::from(([127, 0, 0, 1], 9));
    client
        .send_to(&udp_datagram(denied, b"nope"), relay)
        .await
        .unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_millis(300)).await,
        None,
        "a denied datagram is dropped"
    );

    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger
        .send_to(&udp_datagram(echo, b"sneak"), relay)
        .await
        .unwrap();
    assert_eq!(
        recv_within(&stranger, Duration::from_millis(300)).await,
        None
    );
    assert_eq!(
        received.load(Ordering::SeqCst),
        1,
        "the stranger's datagram never reached the echo server"
    );

    // A policy change reaches the association at once: its next datagram is decided anew.
    let deny = leash::RuleChange {
        allow: Vec::new(),
        deny: vec!["127.0.0.1".into()],
    };
    proxy
        .running()
        .change_rules(leash::RuleOp::Add, &deny)
        .unwrap();
    client
        .send_to(&udp_datagram(echo, b"again"), relay)
        .await
        .unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_millis(300)).await,
        None,
        "denied since the change"
    );
    assert_eq!(received.load(Ordering::SeqCst), 1);

    drop(control);
    let lines = proxy.stop().await;
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert_eq!(lines[0]["protocol"], "socks5_udp");
    assert_eq!(lines[0]["reason"], "local_address");
    assert_eq!(lines[0]["port"], 9);
    assert_eq!(lines[0]["attempt"], "a1");
    assert_eq!(
        (&lines[1]["reason"], &lines[1]["rule"]),
        (&"denylist".into(), &"127.0.0.1".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_megabytes_arrive_intact_through_socks5() {
    const HUNDRED_MB: usize = 100 * 1024 * 1024;
    let origin = Origin::http().await;
    let resolver = Arc::new(StaticResolver::new().answer("bulk.test", &[loopback()]));
    let proxy = start_proxy(
        policy_config(
            &["bulk.test"],
            &[],
            &[format!("127.0.0.1:{}", origin.port())],
        ),
        resolver,
        None,
    );
    let url = format!("http://bulk.test:{}/big?n={HUNDRED_MB}", origin.port());
    let out = curl(&["--proxy", &socks_url(&proxy, "a1:tok"), &url]).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    assert_eq!(out.stdout.len(), HUNDRED_MB);
    assert!(out.stdout == big_body(HUNDRED_MB), "the bytes match");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_refuses_socks5_without_interception() {
    let origin = Origin::http().await;
    let mut config = policy_config(
        &["127.0.0.1"],
        &[],
        &[format!("127.0.0.1:{}", origin.port())],
    );
    config.mode = policy::Mode::Limited;
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let refused = Socks5Stream::connect_with_password(
        proxy.socks.unwrap(),
        (loopback(), origin.port()),
        "a1",
        "tok",
    )
    .await;
    assert!(
        refused.is_err(),
        "SOCKS5 cannot be inspected in limited mode"
    );
    assert_eq!(origin.seen.connections(), 0);
    let lines = proxy.stop().await;
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["reason"], "protocol_not_allowed");
    assert_eq!(lines[0]["mode"], "limited");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hostile_text_never_reaches_the_log_unescaped() {
    let proxy = start_proxy(
        policy_config(&["*"], &[], &[]),
        Arc::new(StaticResolver::new()),
        None,
    );
    let socks = proxy.socks.unwrap();
    let hostile = [
        "a\r\nb.test",
        "evil\u{202e}txt.test",
        "zero\u{200b}width.test",
        "bell\u{7}.test",
        "nul\0.test",
    ];
    for host in hostile {
        let reply = socks_domain_connect(socks, host.as_bytes()).await;
        assert_eq!(reply.get(5), Some(&2), "{host:?} is refused");
    }
    // Every line parses (JSON forbids raw control characters) and no line was split.
    let lines = proxy.stop().await;
    assert_eq!(lines.len(), hostile.len());
    for line in &lines {
        let host = line["host"].as_str().unwrap();
        for bad in ['\r', '\n', '\u{202e}', '\u{200b}', '\u{7}', '\0'] {
            assert!(!host.contains(bad), "{bad:?} reached the log: {line}");
        }
    }
    assert!(
        lines[1]["host"].as_str().unwrap().contains("\\u{202e}"),
        "escaped visibly: {}",
        lines[1]
    );
}

/// A remote the client wrote to may answer, until the policy refuses it: from then on its
/// datagrams are dropped at the relay, not passed back to the client.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_answers_stop_once_the_policy_refuses_their_sender() {
    let remote = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let remote_addr = remote.local_addr().unwrap();
    let mut config = policy_config(&["127.0.0.1"], &[], &[remote_addr.to_string()]);
    config.socks.udp = true;
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let (control, relay) = udp_associate(&proxy).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(&udp_datagram(remote_addr, b"hello"), relay)
        .await
        .unwrap();
    let mut buf = [0u8; 2048];
    let (_, relay_out) = tokio::time::timeout(Duration::from_secs(5), remote.recv_from(&mut buf))
        .await
        .expect("the datagram arrives")
        .unwrap();
    remote.send_to(b"answer", relay_out).await.unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_secs(5)).await,
        Some(udp_datagram(remote_addr, b"answer")),
        "an allowed remote's answer comes back"
    );

    let deny = leash::RuleChange {
        allow: Vec::new(),
        deny: vec!["127.0.0.1".into()],
    };
    proxy
        .running()
        .change_rules(leash::RuleOp::Add, &deny)
        .unwrap();
    remote.send_to(b"late answer", relay_out).await.unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_millis(500)).await,
        None,
        "refused since: dropped"
    );
    drop(control);
}
