//! Resource limits (issue 8): idle connections cannot crowd out a new client, overflow is answered
//! cleanly, a slowloris client is cut, an upstream that never answers is cut.

use std::{sync::Arc, time::Duration};

use listeners::StaticResolver;
use tests::{loopback, policy_config, raw_request, start_proxy, Origin};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};

/// Whether the server closed `stream` within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut buf = [0u8; 1024];
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_thousand_idle_connections_do_not_keep_a_new_client_out() {
    let proxy = start_proxy(
        policy_config(&[], &[], &[]),
        Arc::new(StaticResolver::new()),
        None,
    );
    let before = rss_kib();
    let mut idle = Vec::with_capacity(5000);
    for _ in 0..5000 {
        idle.push(TcpStream::connect(proxy.http).await.expect("connect"));
    }
    // A new client is still answered (an idle connection made room for it).
    let response = raw_request(proxy.http, b"GET http://new.test/ HTTP/1.1\r\nHost: new.test\r\nProxy-Authorization: Basic YTE6dG9r\r\nConnection: close\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 403"), "{response}");
    assert!(response.contains("\"decision\":\"ask\""), "{response}");
    // The oldest idle connection was the one evicted.
    assert!(
        closed_within(&mut idle[0], Duration::from_secs(5)).await,
        "the longest-idle connection was closed"
    );
    eprintln!(
        "RSS with 5 000 idle client connections: {} KiB (test process, was {} KiB)",
        rss_kib(),
        before
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overflow_with_every_connection_busy_is_a_clean_503() {
    let origin = Origin::http().await;
    let resolver = Arc::new(StaticResolver::new().answer("origin.test", &[loopback()]));
    let mut config = policy_config(
        &["origin.test"],
        &[],
        &[format!("127.0.0.1:{}", origin.port())],
    );
    config.limits.max_connections = leash::ConnectionCount::new(2).unwrap();
    let proxy = start_proxy(config, resolver, None);
    let mut tunnels = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(proxy.http).await.unwrap();
        let connect = format!(
            "CONNECT origin.test:{} HTTP/1.1\r\nProxy-Authorization: Basic YTE6dG9r\r\n\r\n",
            origin.port()
        );
        stream.write_all(connect.as_bytes()).await.unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).await.unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
        tunnels.push(stream);
    }
    let response = raw_request(proxy.http, b"GET http://origin.test/ HTTP/1.1\r\n\r\n").await;
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        response.contains("x-proxy-error: overloaded")
            && response.contains("\"reason\":\"overloaded\""),
        "{response}"
    );
    drop(tunnels);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_client_is_cut_at_the_header_timeout() {
    let mut config = policy_config(&["*"], &[], &[]);
    config.limits.header_timeout = "1s".parse().unwrap();
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let mut stream = TcpStream::connect(proxy.http).await.unwrap();
    let head = b"GET http://slow.test/ HTTP/1.1\r\nHost: slow.test\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\r\n\r\n";
    let mut cut = false;
    for byte in head {
        if stream.write_all(std::slice::from_ref(byte)).await.is_err() {
            cut = true;
            break;
        }
        if closed_within(&mut stream, Duration::from_millis(200)).await {
            cut = true;
            break;
        }
    }
    assert!(
        cut,
        "one byte every 200 ms never completes a head within the 1 s header timeout"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_never_answers_is_cut_with_504() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((stream, _)) = silent.accept().await {
            held.push(stream); // accepted, never answered
        }
    });
    let resolver = Arc::new(StaticResolver::new().answer("silent.test", &[loopback()]));
    let mut config = policy_config(&["silent.test"], &[], &[format!("127.0.0.1:{port}")]);
    config.limits.upstream_timeout = "300ms".parse().unwrap();
    let proxy = start_proxy(config, resolver, None);
    let raw = format!("GET http://silent.test:{port}/ HTTP/1.1\r\nHost: silent.test:{port}\r\nProxy-Authorization: Basic YTE6dG9r\r\nConnection: close\r\n\r\n");
    let response = raw_request(proxy.http, raw.as_bytes()).await;
    assert!(response.starts_with("HTTP/1.1 504"), "{response}");
    assert!(
        response.contains("\"reason\":\"upstream_timeout\""),
        "{response}"
    );
    held.abort();
}

/// After the `504` of an upstream timeout, the rest of a streaming request body must not go on to
/// the origin (an open write channel to it for as long as the client likes): the upstream
/// connection is closed at the timeout, while the client is still sending.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_timeout_closes_the_upstream_while_the_client_still_sends() {
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    // The origin reads whatever comes and never answers; it reports when its connection ends.
    let (ended_tx, mut ended) = tokio::sync::mpsc::channel::<usize>(1);
    let origin = tokio::spawn(async move {
        let (mut stream, _) = silent.accept().await.unwrap();
        let mut received = 0;
        let mut buf = [0u8; 4096];
        while let Ok(n @ 1..) = stream.read(&mut buf).await {
            received += n;
        }
        let _ = ended_tx.send(received).await;
    });
    let resolver = Arc::new(StaticResolver::new().answer("silent.test", &[loopback()]));
    let mut config = policy_config(&["silent.test"], &[], &[format!("127.0.0.1:{port}")]);
    config.limits.upstream_timeout = "300ms".parse().unwrap();
    let proxy = start_proxy(config, resolver, None);
    let mut client = TcpStream::connect(proxy.http).await.unwrap();
    let head = format!("POST http://silent.test:{port}/ HTTP/1.1\r\nHost: silent.test:{port}\r\nProxy-Authorization: Basic YTE6dG9r\r\nTransfer-Encoding: chunked\r\n\r\n");
    client.write_all(head.as_bytes()).await.unwrap();
    let chunk = format!("400\r\n{}\r\n", "x".repeat(0x400));
    let (mut read, mut write) = client.split();
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    // Feed a chunk every 100 ms (bounded) until the 504 arrives.
    for _ in 0..150 {
        write.write_all(chunk.as_bytes()).await.unwrap();
        if let Ok(Ok(n @ 1..)) =
            tokio::time::timeout(Duration::from_millis(100), read.read(&mut buf)).await
        {
            answer.extend_from_slice(&buf[..n]);
            break;
        }
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    assert!(text.starts_with("HTTP/1.1 504"), "{text}");
    // The client goes on sending (as long as leash takes it); the origin's connection must end
    // within a bounded time all the same, not stay a channel fed by the client.
    let keep_sending = async {
        for _ in 0..30 {
            if write.write_all(chunk.as_bytes()).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let ended = async { tokio::time::timeout(Duration::from_secs(3), ended.recv()).await };
    let ((), ended) = tokio::join!(keep_sending, ended);
    let received = ended
        .expect("the origin's connection ended within 3 s of the 504")
        .expect("the origin reported");
    assert!(received > 0, "the request reached the origin first");
    origin.await.unwrap();
}
