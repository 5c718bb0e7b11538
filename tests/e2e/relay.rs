//! The portable relay (`tunnel.relay = "copy"`), the path of every platform without `splice(2)`,
//! run on Linux too: bulk in both tunnelling protocols, early bytes, and a tunnel closed by a
//! policy change.

use std::{sync::Arc, time::Duration};

use listeners::{RelayMode, StaticResolver};
use tests::{big_body, curl, loopback, policy_config, start_proxy, Origin};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const BULK: usize = 24 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_relay_carries_connect_and_socks5_tunnels_intact() {
    let origin = Origin::http().await;
    let resolver = Arc::new(StaticResolver::new().answer("bulk.test", &[loopback()]));
    let mut config = policy_config(
        &["bulk.test"],
        &[],
        &[format!("127.0.0.1:{}", origin.port())],
    );
    config.tunnel.relay = RelayMode::Copy;
    let proxy = start_proxy(config, resolver, None);
    let url = format!("http://bulk.test:{}/big?n={BULK}", origin.port());
    let http = format!("http://a1:tok@{}", proxy.http);
    let socks = format!(
        "socks5h://a1:tok@{}",
        proxy.socks.expect("a SOCKS listener")
    );
    for args in [
        vec!["--proxytunnel", "--proxy", &http, &url],
        vec!["--proxy", &socks, &url],
    ] {
        let out = curl(&args).await;
        assert_eq!(out.code, Some(0), "{args:?}: {}", out.stderr);
        assert_eq!(out.stdout.len(), BULK, "{args:?}");
        assert!(out.stdout == big_body(BULK), "{args:?}: the bytes match");
    }
    // Both tunnels' bytes were counted on the way down (the origin's answers).
    let admin = proxy.admin_client();
    let auth = format!("Authorization: Bearer {}", admin.token.unwrap_or_default());
    let metrics = curl(&["-H", &auth, &format!("http://{}/metrics", admin.addr)]).await;
    let down = String::from_utf8_lossy(&metrics.stdout)
        .lines()
        .find_map(|l| {
            l.strip_prefix("leash_tunnel_bytes_total{direction=\"down\"} ")?
                .parse::<usize>()
                .ok()
        })
        .expect("a down byte count");
    assert!(down > 2 * BULK, "{down} bytes counted down");
}

/// Bytes sent right behind the `CONNECT` head (a client that does not wait for `200`) go first,
/// and the tunnel still closes when a policy change refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_copy_relay_sends_early_bytes_first_and_closes_on_tightening() {
    let origin = Origin::http().await;
    let mut config = policy_config(
        &["127.0.0.1"],
        &[],
        &[format!("127.0.0.1:{}", origin.port())],
    );
    config.tunnel.relay = RelayMode::Copy;
    let proxy = start_proxy(config, Arc::new(StaticResolver::new()), None);
    let mut client = tokio::net::TcpStream::connect(proxy.http).await.unwrap();
    let target = format!("127.0.0.1:{}", origin.port());
    let head = format!(
        "CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Basic YTE6dG9r\r\n\r\nGET /echo HTTP/1.1\r\nHost: {target}\r\n\r\n"
    );
    client.write_all(head.as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    let needle = b"HTTP/1.1 200";
    for _ in 0..100 {
        let n = tokio::time::timeout(Duration::from_secs(10), client.read(&mut buf))
            .await
            .expect("an answer within 10 s")
            .unwrap();
        assert!(n > 0, "closed early: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
        if seen.windows(needle.len()).filter(|w| *w == needle).count() >= 2 {
            break;
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert_eq!(
        text.matches("HTTP/1.1 200").count(),
        2,
        "tunnel and origin answered: {text}"
    );

    // Limited mode refuses every raw tunnel.
    let switched = proxy.running().set_mode(policy::Mode::Limited);
    assert!(switched.is_ok(), "{switched:?}");
    let closed = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match client.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "the tightened tunnel was closed");
}
