use std::net::SocketAddr;

use policy::{Protocol, Target};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
};

use super::*;
use crate::tunnels::{TunnelInfo, Tunnels};

/// A connected pair of loopback sockets.
async fn pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let connect = TcpStream::connect(listener.local_addr().unwrap());
    let (outer, accepted) = tokio::join!(connect, listener.accept());
    (outer.unwrap(), accepted.unwrap().0)
}

/// Bytes that tell their own position apart, so a dropped or reordered chunk shows.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed) ^ (i >> 13) as u8)
        .collect()
}

/// Writes `bytes`, half-closes, and reads until the other side half-closes.
async fn exchange(mut stream: TcpStream, bytes: Vec<u8>) -> Vec<u8> {
    let (mut read, mut write) = stream.split();
    let send = async {
        write.write_all(&bytes).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let mut received = Vec::new();
    let receive = read.read_to_end(&mut received);
    let ((), read) = tokio::join!(send, receive);
    read.unwrap();
    received
}

fn tunnel(tunnels: &Arc<Tunnels>) -> TunnelHandle {
    tunnels.open(TunnelInfo {
        target: Target::parse("origin.test:443", None).unwrap(),
        protocol: Protocol::Connect,
        peer: Some(SocketAddr::from(([127, 0, 0, 1], 443))),
        inspected: false,
        approved: false,
        attempt: None,
    })
}

/// The relay between two socket pairs' inner ends, on its own task, with no early bytes.
fn spawn_relay(
    client_side: TcpStream,
    upstream_side: TcpStream,
    mode: RelayMode,
    tunnels: &Arc<Tunnels>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(relay_sockets(
        client_side,
        Early::default(),
        upstream_side,
        Duration::from_secs(30),
        mode,
        tunnel(tunnels),
    ))
}

/// Both directions at once, past the size where a direction switches from copying to splicing,
/// with early bytes first (each side's: a client's after `CONNECT`, a server's after `101`) and
/// half-closes passed through: every byte arrives, in order, and is counted once.
async fn sockets_relay_both_ways_losslessly_with_early_bytes_and_half_close(mode: RelayMode) {
    let (client, client_side) = pair().await;
    let (upstream_side, origin) = pair().await;
    let tunnels = Arc::new(Tunnels::default());
    let handle = tunnel(&tunnels);
    let relayed = tokio::spawn(async move {
        relay_sockets(
            client_side,
            Early {
                up: b"early",
                down: b"server first",
            },
            upstream_side,
            Duration::from_secs(30),
            mode,
            handle,
        )
        .await
    });
    let (up, down) = (pattern(3 << 20, 7), pattern((5 << 20) + 123, 11));
    let (at_origin, at_client) =
        tokio::join!(exchange(origin, down.clone()), exchange(client, up.clone()));
    relayed.await.unwrap();
    let mut expected_up = b"early".to_vec();
    expected_up.extend_from_slice(&up);
    assert!(at_origin == expected_up, "upstream bytes differ");
    let mut expected_down = b"server first".to_vec();
    expected_down.extend_from_slice(&down);
    assert!(at_client == expected_down, "downstream bytes differ");
    assert_eq!(tunnels.bytes_up(), expected_up.len() as u64);
    assert_eq!(tunnels.bytes_down(), expected_down.len() as u64);
    assert_eq!(tunnels.open_count(), 0, "the tunnel is closed");
}

/// A short exchange stays below the splice threshold and still ends cleanly.
async fn a_short_exchange_ends_when_both_sides_close(mode: RelayMode) {
    let (client, client_side) = pair().await;
    let (upstream_side, origin) = pair().await;
    let tunnels = Arc::new(Tunnels::default());
    let relayed = spawn_relay(client_side, upstream_side, mode, &tunnels);
    let (at_origin, at_client) = tokio::join!(
        exchange(origin, b"pong".to_vec()),
        exchange(client, b"ping".to_vec())
    );
    relayed.await.unwrap();
    assert_eq!(
        (at_origin.as_slice(), at_client.as_slice()),
        (&b"ping"[..], &b"pong"[..])
    );
}

/// An answer whose end is already there when the relay first reads (a server that answered and
/// closed before the relay started): the client gets every byte and then the end, counted once.
/// A relay that lost the half-close would leave the client waiting: the timeout bounds that.
async fn an_answer_and_its_end_that_arrive_together_are_passed_on_whole(mode: RelayMode) {
    let (client, client_side) = pair().await;
    let (upstream_side, mut origin) = pair().await;
    let answer = pattern(3000, 5);
    origin.write_all(&answer).await.unwrap();
    origin.shutdown().await.unwrap();
    let tunnels = Arc::new(Tunnels::default());
    let at_client = relay_to_the_end(client, client_side, upstream_side, mode, &tunnels).await;
    assert!(at_client == answer, "the answer differs");
    let mut at_origin = Vec::new();
    origin.read_to_end(&mut at_origin).await.unwrap();
    assert!(at_origin.is_empty());
    assert_eq!(tunnels.bytes_down(), answer.len() as u64);
}

/// Relays between two pairs' inner ends until the client has read to the end, then ends the
/// client's side and waits for the relay to finish; returns what the client read.
async fn relay_to_the_end(
    mut client: TcpStream,
    client_side: TcpStream,
    upstream_side: TcpStream,
    mode: RelayMode,
    tunnels: &Arc<Tunnels>,
) -> Vec<u8> {
    let relayed = spawn_relay(client_side, upstream_side, mode, tunnels);
    let mut at_client = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_end(&mut at_client))
        .await
        .expect("the bytes and the end arrived")
        .unwrap();
    client.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), relayed)
        .await
        .expect("the relay ended")
        .unwrap();
    at_client
}

/// An answer followed by a reset (a server closing with input it did not read, or dropping its
/// socket with linger 0), both there when the relay first reads: the answer must still reach
/// the client. A relay that read on before writing would meet the reset first and lose the
/// answer (a tried change did, and failed this test).
async fn an_answer_before_a_reset_still_reaches_the_client(mode: RelayMode) {
    let (mut client, client_side) = pair().await;
    let (upstream_side, origin) = pair().await;
    let answer = pattern(2000, 9);
    let mut origin = origin;
    origin.write_all(&answer).await.unwrap();
    rustix::net::sockopt::set_socket_linger(&origin, Some(Duration::ZERO)).unwrap();
    drop(origin);
    let tunnels = Arc::new(Tunnels::default());
    let relayed = spawn_relay(client_side, upstream_side, mode, &tunnels);
    let mut at_client = Vec::new();
    let mut chunk = [0u8; 4096];
    let read_all = async {
        // Until the end or a reset: what matters is what arrived before it.
        while let Ok(n @ 1..) = client.read(&mut chunk).await {
            at_client.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read_all)
        .await
        .expect("the relay ended the client's side");
    assert!(
        at_client == answer,
        "{} of {} bytes arrived",
        at_client.len(),
        answer.len()
    );
    tokio::time::timeout(Duration::from_secs(10), relayed)
        .await
        .expect("the relay ended")
        .unwrap();
}

/// Bytes on both sides of an urgent mark (where a read stops), all there before the relay
/// starts, are sent in order without the urgent byte and counted once.
async fn bytes_around_an_urgent_mark_are_sent_and_counted_once(mode: RelayMode) {
    use rustix::net::{send, SendFlags};

    let (client, client_side) = pair().await;
    let (upstream_side, mut origin) = pair().await;
    origin.write_all(b"abc").await.unwrap();
    send(&origin, b"!", SendFlags::OOB).unwrap();
    origin.write_all(b"def").await.unwrap();
    origin.shutdown().await.unwrap();
    let tunnels = Arc::new(Tunnels::default());
    let at_client = relay_to_the_end(client, client_side, upstream_side, mode, &tunnels).await;
    assert_eq!(at_client, b"abcdef");
    assert_eq!(tunnels.bytes_down(), 6);
}

/// No byte moving for the idle timeout ends the tunnel even though neither side closed.
async fn an_idle_tunnel_is_closed(mode: RelayMode) {
    let (_client, client_side) = pair().await;
    let (upstream_side, _origin) = pair().await;
    let tunnels = Arc::new(Tunnels::default());
    let handle = tunnel(&tunnels);
    let relayed = relay_sockets(
        client_side,
        Early::default(),
        upstream_side,
        Duration::from_millis(200),
        mode,
        handle,
    );
    tokio::time::timeout(Duration::from_secs(10), relayed)
        .await
        .expect("the idle timeout ended the relay");
    assert_eq!(tunnels.open_count(), 0);
}

/// Urgent (out-of-band) data in the middle of a bulk transfer: splice stops at its mark, and the
/// relay must read past it rather than wait forever (a plain read passes the mark). The urgent byte itself leaves the stream,
/// as it does for any reader without `SO_OOBINLINE`.
async fn urgent_data_in_a_bulk_direction_does_not_stall_it(mode: RelayMode) {
    use rustix::net::{send, SendFlags};

    let (mut client, client_side) = pair().await;
    let (upstream_side, mut origin) = pair().await;
    let tunnels = Arc::new(Tunnels::default());
    let relayed = tokio::spawn(relay_sockets(
        client_side,
        Early::default(),
        upstream_side,
        Duration::from_secs(30),
        mode,
        tunnel(&tunnels),
    ));
    let (first, second) = (pattern(1 << 20, 3), pattern(1 << 20, 5));
    let sender = {
        let (first, second) = (first.clone(), second.clone());
        async move {
            client.write_all(&first).await.unwrap();
            client.writable().await.unwrap();
            send(&client, b"!", SendFlags::OOB).unwrap();
            client.write_all(&second).await.unwrap();
            client.shutdown().await.unwrap();
            client
        }
    };
    let mut received = Vec::new();
    let receive = tokio::time::timeout(Duration::from_secs(20), origin.read_to_end(&mut received));
    let (_client, read) = tokio::join!(sender, receive);
    read.expect("the transfer finished").unwrap();
    let mut expected = first;
    expected.extend_from_slice(&second);
    assert!(received == expected, "{} bytes arrived", received.len());
    drop(origin);
    relayed.abort();
}

/// Every relay test runs through both relays: `Copy` is what every platform without `splice(2)`
/// runs, so CI exercises it on Linux too.
macro_rules! through_both_relays {
    ($($test:ident),* $(,)?) => {
        mod splice {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::RelayMode::Splice).await
            })*
        }
        mod copy {
            $(#[tokio::test]
            async fn $test() {
                super::$test(super::RelayMode::Copy).await
            })*
        }
    };
}

through_both_relays!(
    sockets_relay_both_ways_losslessly_with_early_bytes_and_half_close,
    a_short_exchange_ends_when_both_sides_close,
    an_answer_and_its_end_that_arrive_together_are_passed_on_whole,
    an_answer_before_a_reset_still_reaches_the_client,
    bytes_around_an_urgent_mark_are_sent_and_counted_once,
    an_idle_tunnel_is_closed,
    urgent_data_in_a_bulk_direction_does_not_stall_it
);
