//! SOCKS5 UDP ASSOCIATE against real remotes: a UDP echo server in a network namespace (a host
//! that is not loopback), and the association's bounds — idle timeout, eviction at the connection
//! limit, and a bounded table of remotes whose answers are relayed.

use std::{
    net::{IpAddr, SocketAddr},
    process::Stdio,
    sync::Arc,
    time::Duration,
};

use leash::{ConnectionCount, Timeout};
use listeners::StaticResolver;
use tests::{policy_config, skip_unless_root, start_proxy, NetNs};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{TcpStream, UdpSocket},
    process::Child,
};

use crate::socks::{recv_within, udp_associate, udp_datagram, udp_echo};

/// A UDP echo server on port 7, written in Python so it is plainly not leash's code.
const ECHO: &str = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], 7))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(65535)
    s.sendto(data, peer)
"#;

/// The echo server running inside `netns`, on its end of the veth pair, port 7.
async fn echo_in(netns: &NetNs) -> (Child, SocketAddr) {
    let addr = netns.ns_addr();
    let mut child = netns
        .command("python3")
        .args(["-c", ECHO, &addr.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3 runs in the namespace");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(10), lines.next_line()).await;
    assert!(
        matches!(ready, Ok(Ok(Some(ref line))) if line == "ready"),
        "the echo server started: {ready:?}"
    );
    (child, SocketAddr::from((addr, 7)))
}

/// `RSV RSV FRAG ATYP=domain NAME PORT DATA`.
fn domain_datagram(name: &str, port: u16, payload: &[u8]) -> Vec<u8> {
    let mut datagram = vec![0, 0, 0, 3, name.len() as u8];
    datagram.extend_from_slice(name.as_bytes());
    datagram.extend_from_slice(&port.to_be_bytes());
    datagram.extend_from_slice(payload);
    datagram
}

/// The relay used to send from a socket bound to loopback, which cannot reach another host
/// (EINVAL), while logging the datagram as allowed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_reaches_a_host_in_a_network_namespace_and_hears_its_answer() {
    if skip_unless_root("udp_reaches_a_host_in_a_network_namespace_and_hears_its_answer") {
        return;
    }
    let netns = NetNs::new();
    let (_server, echo) = echo_in(&netns).await;
    let resolver = StaticResolver::new().answer("far.test", &[IpAddr::V4(netns.ns_addr())]);
    let mut config = policy_config(&["far.test"], &[], &[netns.ns_addr().to_string()]);
    config.socks.udp = true;
    config.log.log_allowed = true;
    let proxy = start_proxy(config, Arc::new(resolver), None);
    let (control, relay) = udp_associate(&proxy).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    client
        .send_to(&udp_datagram(echo, b"by address"), relay)
        .await
        .unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_secs(5)).await,
        Some(udp_datagram(echo, b"by address")),
        "the host in the namespace answered through the relay"
    );
    client
        .send_to(&domain_datagram("far.test", 7, b"by name"), relay)
        .await
        .unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_secs(5)).await,
        Some(udp_datagram(echo, b"by name")),
        "answers come back under the address they came from"
    );

    drop(control);
    let lines = proxy.stop().await;
    let hosts: Vec<_> = lines.iter().map(|l| (&l["host"], &l["protocol"])).collect();
    let ns = netns.ns_addr().to_string();
    assert_eq!(
        hosts,
        [
            (&ns.into(), &"socks5_udp".into()),
            (&"far.test".into(), &"socks5_udp".into())
        ],
        "one allowed line per delivered datagram: {lines:?}"
    );
}

/// A datagram the kernel refuses to send (a broadcast without `SO_BROADCAST`) was allowed by the
/// policy but never delivered: it is not logged as allowed (nor as a block), as a CONNECT whose dial
/// fails is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_datagram_that_cannot_be_sent_is_not_logged_as_allowed() {
    let (echo, _) = udp_echo().await;
    let broadcast = SocketAddr::from(([255, 255, 255, 255], 9));
    let local = [echo.to_string(), broadcast.to_string()];
    let mut config = policy_config(&[], &[], &local);
    config.socks.udp = true;
    config.log.log_allowed = true;
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let (control, relay) = udp_associate(&proxy).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(&udp_datagram(broadcast, b"everyone"), relay)
        .await
        .unwrap();
    // Datagrams are handled in order: once the echo answers, the broadcast was dealt with.
    client
        .send_to(&udp_datagram(echo, b"ping"), relay)
        .await
        .unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_secs(5)).await,
        Some(udp_datagram(echo, b"ping"))
    );
    drop(control);
    let lines = proxy.stop().await;
    assert_eq!(lines.len(), 1, "only the delivered datagram: {lines:?}");
    assert_eq!(lines[0]["port"], echo.port());
    assert_eq!(lines[0]["blocked"], false, "{lines:?}");
}

/// Reads the control connection until leash closes it; false if it is still open after `wait`.
async fn closed_within(control: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, control.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_association_is_closed_after_the_idle_timeout() {
    let (echo, _) = udp_echo().await;
    let mut config = policy_config(&[], &[], &[echo.to_string()]);
    config.socks.udp = true;
    config.limits.idle_timeout = Timeout::new(Duration::from_secs(1)).unwrap();
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let (mut control, relay) = udp_associate(&proxy).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(&udp_datagram(echo, b"ping"), relay)
        .await
        .unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_secs(5)).await,
        Some(udp_datagram(echo, b"ping")),
        "the association works while it is used"
    );
    assert!(
        closed_within(&mut control, Duration::from_secs(20)).await,
        "the idle association was closed"
    );
    client
        .send_to(&udp_datagram(echo, b"too late"), relay)
        .await
        .unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_millis(500)).await,
        None,
        "its relay is gone"
    );
}

/// An association is idle between datagrams: at the connection limit it makes room for a
/// newcomer, as an idle keep-alive connection would, instead of the newcomer being refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_association_is_evicted_at_the_connection_limit() {
    let (echo, _) = udp_echo().await;
    let mut config = policy_config(&[], &[], &[echo.to_string()]);
    config.socks.udp = true;
    config.limits.max_connections = ConnectionCount::new(1).unwrap();
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let (mut control, relay) = udp_associate(&proxy).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client
        .send_to(&udp_datagram(echo, b"ping"), relay)
        .await
        .unwrap();
    assert!(recv_within(&client, Duration::from_secs(5)).await.is_some());

    let mut newcomer = TcpStream::connect(proxy.socks.unwrap()).await.unwrap();
    newcomer.write_all(&[5, 1, 2]).await.unwrap();
    let mut method = [0u8; 2];
    let answered =
        tokio::time::timeout(Duration::from_secs(5), newcomer.read_exact(&mut method)).await;
    assert!(
        matches!(answered, Ok(Ok(_))),
        "the newcomer is served: {answered:?}"
    );
    assert_eq!(method, [5, 2], "asked for username/password");
    assert!(
        closed_within(&mut control, Duration::from_secs(5)).await,
        "the association made room"
    );
}

/// A flood of destinations cannot grow an association without bound: past `MAX_REMOTES` (256)
/// the remote written to least recently is forgotten, and its answers are dropped like a
/// stranger's until the client writes to it again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_association_forgets_its_oldest_remote_past_the_bound() {
    const MAX_REMOTES: usize = 256;
    let (echo, _) = udp_echo().await;
    // Every 127.x.y.z:PORT lands here: one socket stands for many remotes, and nothing of anyone
    // else's receives the flood.
    let sink = UdpSocket::bind("0.0.0.0:0").await.unwrap();
    let sink_port = sink.local_addr().unwrap().port();
    let remote = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let remote_addr = remote.local_addr().unwrap();
    let mut config = policy_config(&[], &[], &["localhost".to_owned()]);
    config.socks.udp = true;
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let (control, relay) = udp_associate(&proxy).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();

    client
        .send_to(&udp_datagram(remote_addr, b"hello"), relay)
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let (_, relay_out) = tokio::time::timeout(Duration::from_secs(5), remote.recv_from(&mut buf))
        .await
        .expect("the datagram arrives")
        .unwrap();
    remote.send_to(b"first", relay_out).await.unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_secs(5)).await,
        Some(udp_datagram(remote_addr, b"first")),
        "a remote the client wrote to may answer"
    );

    let stranger = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    stranger.send_to(b"sneak", relay_out).await.unwrap();
    flood(&client, relay, &echo, sink_port, MAX_REMOTES).await;
    remote.send_to(b"forgotten", relay_out).await.unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_millis(500)).await,
        None,
        "neither a stranger nor a forgotten remote is heard"
    );

    client
        .send_to(&udp_datagram(remote_addr, b"again"), relay)
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(5), remote.recv_from(&mut buf))
        .await
        .expect("the datagram arrives")
        .unwrap();
    remote.send_to(b"remembered", relay_out).await.unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_secs(5)).await,
        Some(udp_datagram(remote_addr, b"remembered")),
        "written to again, it is heard again"
    );
    drop(control);
}

/// Writes to `count` distinct remotes (`127.0.1.0+i` on `port`), in batches each confirmed by an
/// echo round trip so no datagram is lost to a full socket buffer.
async fn flood(client: &UdpSocket, relay: SocketAddr, echo: &SocketAddr, port: u16, count: usize) {
    for batch in (0..count).collect::<Vec<_>>().chunks(32) {
        for &i in batch {
            let ip = std::net::Ipv4Addr::from(u32::from_be_bytes([127, 0, 1, 0]) + i as u32);
            let remote = SocketAddr::from((ip, port));
            client
                .send_to(&udp_datagram(remote, b"x"), relay)
                .await
                .unwrap();
        }
        client
            .send_to(&udp_datagram(*echo, b"sync"), relay)
            .await
            .unwrap();
        let answer = recv_within(client, Duration::from_secs(5)).await;
        assert_eq!(answer, Some(udp_datagram(*echo, b"sync")), "batch relayed");
    }
}

/// An IPv6 remote is written to from the IPv6 socket (the client's socket is IPv4 here, as its
/// control connection is).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn udp_reaches_an_ipv6_remote_from_an_ipv4_client() {
    let Ok(remote) = UdpSocket::bind("[::1]:0").await else {
        eprintln!(
            "\n!!!! SKIPPED udp_reaches_an_ipv6_remote_from_an_ipv4_client: no ::1 here !!!!\n"
        );
        return;
    };
    let remote_addr = remote.local_addr().unwrap();
    let mut config = policy_config(&[], &[], &[remote_addr.to_string()]);
    config.socks.udp = true;
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let (control, relay) = udp_associate(&proxy).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut header = vec![0, 0, 0, 4];
    header.extend_from_slice(&std::net::Ipv6Addr::LOCALHOST.octets());
    header.extend_from_slice(&remote_addr.port().to_be_bytes());
    client
        .send_to(&[&header[..], b"v6"].concat(), relay)
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let (n, relay_out) = tokio::time::timeout(Duration::from_secs(5), remote.recv_from(&mut buf))
        .await
        .expect("the datagram reaches ::1")
        .unwrap();
    assert_eq!(&buf[..n], b"v6");
    remote.send_to(b"back", relay_out).await.unwrap();
    assert_eq!(
        recv_within(&client, Duration::from_secs(5)).await,
        Some([&header[..], b"back"].concat()),
        "the answer comes back wrapped with its IPv6 address"
    );
    drop(control);
}

/// The pending items `/pending` lists now (after a short long poll).
async fn pending_now(proxy: &tests::TestProxy) -> Vec<serde_json::Value> {
    let admin = proxy.admin_client();
    let (status, page) = crate::admin::call(&admin, "GET", "/pending?wait=1", None, None).await;
    assert_eq!(status, 200, "{page}");
    page["pending"].as_array().cloned().unwrap_or_default()
}

/// A datagram to a target nobody allowed is held while someone can answer (SPEC §14): the
/// client closing its control connection ends the wait and withdraws the item; answered
/// `allow`, the datagram goes out and its echo comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_held_datagram_is_withdrawn_when_the_client_leaves_and_sent_when_allowed() {
    let (echo, _) = udp_echo().await;
    let mut config = policy_config(&[], &[], &[echo.to_string()]);
    config.socks.udp = true;
    config.ask = serde_json::from_value(serde_json::json!({ "hold": "30s" })).unwrap();
    let resolver = StaticResolver::new().answer("origin.test", &[echo.ip()]);
    let proxy = start_proxy(config, Arc::new(resolver), None);
    let datagram = domain_datagram("origin.test", echo.port(), b"ping");
    assert!(pending_now(&proxy).await.is_empty());

    let (control, relay) = udp_associate(&proxy).await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&datagram, relay).await.unwrap();
    let mut items = Vec::new();
    for _ in 0..20 {
        items = pending_now(&proxy).await;
        if !items.is_empty() {
            break;
        }
    }
    assert_eq!(items.len(), 1, "the datagram is held");
    assert_eq!(items[0]["protocol"], "socks5_udp", "{items:?}");
    drop(control);
    let mut gone = false;
    for _ in 0..20 {
        gone = pending_now(&proxy).await.is_empty();
        if gone {
            break;
        }
    }
    assert!(gone, "the client left: its item is withdrawn");

    let (_control, relay) = udp_associate(&proxy).await;
    client.send_to(&datagram, relay).await.unwrap();
    let mut item = None;
    for _ in 0..20 {
        item = pending_now(&proxy).await.into_iter().next();
        if item.is_some() {
            break;
        }
    }
    let item = item.expect("held again");
    let body = serde_json::json!({ "answer": "allow", "scope": "once" }).to_string();
    let path = format!("/pending/{}", item["id"]);
    let admin = proxy.admin_client();
    let (status, _) = crate::admin::call(&admin, "POST", &path, Some(&body), None).await;
    assert_eq!(status, 200);
    let echoed = recv_within(&client, Duration::from_secs(10)).await;
    assert_eq!(echoed, Some(udp_datagram(echo, b"ping")));
}
