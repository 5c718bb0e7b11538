//! WebSockets through leash (SPEC §15): real clients (tokio-tungstenite; Python's `websockets`
//! when installed) against real echo origins. `ws://` goes through the proxy's listener as an
//! absolute-form handshake (written by hand: client libraries tunnel `ws://` with `CONNECT`,
//! which a test below covers too) and `wss://` through `CONNECT` + MITM. After the `101` the
//! WebSocket is a tunnel: counted, idle-bounded, and closed when the policy turns against it.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use base64::Engine;
use futures_util::{SinkExt, StreamExt};
use leash::Timeout;
use listeners::{RelayMode, StaticResolver};
use policy::Mode;
use serde_json::json;
use tests::{
    big_body, loopback, policy_config, read_head, read_response, start_proxy, Intercepting, Origin,
    RawResponse, TestCa, TestProxy, WsOrigin,
};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use tokio_tungstenite::{
    tungstenite::{handshake::derive_accept_key, protocol::Role, Message},
    WebSocketStream,
};

use crate::admin::call;

/// Every wait in this module is bounded by this.
const WAIT: Duration = Duration::from_secs(10);

/// The handshake key of every hand-written handshake (RFC 6455 §1.3's example).
const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

/// A leash allowing `ws.test` (127.0.0.1; the echo origin's port opened by `allow_local`).
struct Plain {
    proxy: TestProxy,
    origin: WsOrigin,
}

async fn plain(mode: Mode, deny: &[&str], relay: RelayMode) -> Plain {
    let origin = WsOrigin::plain().await;
    let resolver = Arc::new(StaticResolver::new().answer("ws.test", &[loopback()]));
    let allow_local = [format!("127.0.0.1:{}", origin.port())];
    let mut config = policy_config(&["ws.test"], deny, &allow_local);
    config.mode = mode;
    config.tunnel.relay = relay;
    let proxy = start_proxy(config, resolver, None);
    Plain { proxy, origin }
}

impl Plain {
    /// `ws://ws.test:PORT/echo` (or with another scheme).
    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://ws.test:{}/echo", self.origin.port())
    }
}

/// An absolute-form WebSocket handshake for `url` through the proxy at `proxy`: the answer's head
/// (and body, unless it is a `101`) and the connection, ready for frames after a `101`.
async fn handshake(proxy: SocketAddr, url: &str, extra: &str) -> (RawResponse, TcpStream) {
    let mut tcp = TcpStream::connect(proxy).await.unwrap();
    let host = url.split('/').nth(2).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode("a1:tok");
    let head = format!(
        "GET {url} HTTP/1.1\r\nHost: {host}\r\nProxy-Authorization: Basic {auth}\r\n\
         Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: {KEY}\r\n{extra}\r\n"
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    let mut answer = read_head(&mut tcp)
        .await
        .expect("an answer to the handshake");
    if answer.status != 101 {
        let length = answer.header("content-length").map(str::to_owned);
        let length: usize = length.and_then(|l| l.parse().ok()).unwrap_or(0);
        answer.body = vec![0; length];
        let read = tokio::time::timeout(WAIT, tcp.read_exact(&mut answer.body)).await;
        read.unwrap().unwrap();
    }
    (answer, tcp)
}

/// A WebSocket client over a connection whose handshake succeeded.
async fn client<S: AsyncRead + AsyncWrite + Unpin>(stream: S) -> WebSocketStream<S> {
    WebSocketStream::from_raw_socket(stream, Role::Client, None).await
}

/// A `101` that completes the hand-written handshake.
#[track_caller]
fn assert_switched(answer: &RawResponse) {
    assert_eq!(answer.status, 101, "{answer:?}");
    let accept = derive_accept_key(KEY.as_bytes());
    assert_eq!(answer.header("sec-websocket-accept"), Some(accept.as_str()));
    assert_eq!(
        answer.header("upgrade").map(str::to_ascii_lowercase),
        Some("websocket".to_owned())
    );
}

/// Text, binary and 1 MiB messages (each way: sent, and echoed back by the origin).
async fn echo_messages<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) {
    let messages = [
        Message::text("hello through leash"),
        Message::binary(vec![0u8, 1, 2, 0xff, 0x80]),
        Message::binary(big_body(1 << 20)),
        Message::text("é".repeat(1 << 19)),
    ];
    for message in messages {
        ws.send(message.clone()).await.unwrap();
        let echoed = tokio::time::timeout(WAIT, ws.next()).await;
        let echoed = echoed.expect("an echo in time").expect("open").unwrap();
        assert!(
            echoed == message,
            "the echo differs ({} bytes)",
            message.len()
        );
    }
}

/// Whether the WebSocket ends (a close, an error or the end) within `WAIT`, reading at most a
/// few frames that were already on their way.
async fn ends<S: AsyncRead + AsyncWrite + Unpin>(ws: &mut WebSocketStream<S>) -> bool {
    for _ in 0..16 {
        match tokio::time::timeout(WAIT, ws.next()).await {
            Err(_) => return false,
            Ok(None | Some(Err(_)) | Some(Ok(Message::Close(_)))) => return true,
            Ok(Some(Ok(_))) => continue,
        }
    }
    false
}

async fn metrics(proxy: &TestProxy) -> String {
    let (status, body) = call(&proxy.admin_client(), "GET", "/metrics", None, None).await;
    assert_eq!(status, 200);
    body.as_str().expect("text").to_owned()
}

/// The sum of a metric's samples (every label set).
fn metric(text: &str, name: &str) -> u64 {
    let samples = text.lines().filter_map(|line| {
        let rest = line.strip_prefix(name)?;
        let value = rest.rsplit(' ').next()?;
        (rest.starts_with(' ') || rest.starts_with('{')).then(|| value.parse::<u64>().ok())?
    });
    samples.sum()
}

/// Polls `/metrics` (bounded) until `name` reads `value`.
async fn metric_becomes(proxy: &TestProxy, name: &str, value: u64) -> bool {
    for _ in 0..100 {
        if metric(&metrics(proxy).await, name) == value {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ws_through_the_proxy_listener_relays_text_binary_and_a_mebibyte_both_ways() {
    for relay in [RelayMode::Splice, RelayMode::Copy] {
        let setup = plain(Mode::Full, &[], relay).await;
        for scheme in ["ws", "http"] {
            let (answer, tcp) = handshake(setup.proxy.http, &setup.url(scheme), "").await;
            assert_switched(&answer);
            let mut ws = client(tcp).await;
            echo_messages(&mut ws).await;
            let text = metrics(&setup.proxy).await;
            assert_eq!(metric(&text, "leash_open_tunnels"), 1, "{relay:?}: {text}");
            ws.close(None).await.unwrap();
            assert!(ends(&mut ws).await, "the close is answered");
            // The origin closed its side; the relay ends when the client closes its own.
            drop(ws);
            let closed = metric_becomes(&setup.proxy, "leash_open_tunnels", 0).await;
            assert!(
                closed,
                "{relay:?}: the tunnel is gone once the WebSocket closed"
            );
        }
        let text = metrics(&setup.proxy).await;
        let up = metric(&text, "leash_tunnel_bytes_total{direction=\"up\"}");
        assert!(
            up > 2 * (2 << 20),
            "every frame is counted as tunnel bytes: {text}"
        );
        // The origin saw the handshake with its upgrade headers, and no proxy credentials.
        let seen = setup.origin.seen.requests();
        assert_eq!(seen.len(), 2);
        for request in seen {
            let header = |name: &str| {
                let found = request.headers.iter().find(|(k, _)| k == name);
                found.map(|(_, v)| v.to_ascii_lowercase())
            };
            assert_eq!(request.uri, "/echo");
            assert_eq!(header("upgrade").as_deref(), Some("websocket"));
            assert_eq!(header("connection").as_deref(), Some("upgrade"));
            assert_eq!(
                header("sec-websocket-key").as_deref(),
                Some(&*KEY.to_lowercase())
            );
            assert_eq!(header("proxy-authorization"), None);
        }
    }
}

/// `wss://secure.test` inside an intercepted tunnel, to a TLS echo origin.
struct Secure {
    leash: Intercepting,
    origin: WsOrigin,
    _plain: Origin,
}

async fn secure() -> Secure {
    let ca = TestCa::new("ws origin CA");
    let origin = WsOrigin::tls(ca.server_config(&["secure.test"], &[])).await;
    let plain = Origin::http().await;
    let leash = Intercepting::start(origin.addr, &ca, &plain).await;
    Secure {
        leash,
        origin,
        _plain: plain,
    }
}

impl Secure {
    /// A WebSocket to `wss://secure.test/echo` through `CONNECT` + MITM, by tokio-tungstenite.
    async fn connect(
        &self,
    ) -> Result<
        WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>,
        tokio_tungstenite::tungstenite::Error,
    > {
        let tunnel = self.leash.tunnel().await;
        let connected = tokio_tungstenite::client_async("wss://secure.test/echo", tunnel);
        let connected = tokio::time::timeout(WAIT, connected)
            .await
            .expect("in time");
        connected.map(|(ws, _)| ws)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wss_through_connect_and_mitm_relays_text_binary_and_a_mebibyte_both_ways() {
    let setup = secure().await;
    let mut ws = setup.connect().await.expect("the handshake succeeds");
    echo_messages(&mut ws).await;
    let text = metrics(&setup.leash.proxy).await;
    assert_eq!(metric(&text, "leash_open_tunnels"), 1, "{text}");
    ws.close(None).await.unwrap();
    assert!(ends(&mut ws).await);
    let seen = setup.origin.seen.requests();
    assert_eq!(seen.len(), 1, "the origin saw one handshake");
    let upgrade = seen[0].headers.iter().find(|(k, _)| k == "upgrade");
    assert_eq!(upgrade.map(|(_, v)| v.as_str()), Some("websocket"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_denied_websocket_host_gets_the_403_json() {
    let setup = plain(Mode::Full, &["ws.test"], RelayMode::Splice).await;
    for scheme in ["ws", "http"] {
        let (answer, _) = handshake(setup.proxy.http, &setup.url(scheme), "").await;
        assert_eq!(answer.status, 403, "{answer:?}");
        assert_eq!(answer.header("x-proxy-error"), Some("blocked-by-denylist"));
        let body = answer.json();
        assert_eq!(body["reason"], "denylist", "{body}");
        assert_eq!(body["method"], "GET", "{body}");
    }
    assert_eq!(
        setup.origin.seen.connections(),
        0,
        "nothing reached the origin"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deny_rule_added_while_a_websocket_is_open_closes_it() {
    let plain = plain(Mode::Full, &[], RelayMode::Splice).await;
    let (answer, tcp) = handshake(plain.proxy.http, &plain.url("ws"), "").await;
    assert_switched(&answer);
    let mut ws = client(tcp).await;
    echo_messages(&mut ws).await;
    let deny = json!({ "deny": ["ws.test"] }).to_string();
    let admin = plain.proxy.admin_client();
    assert_eq!(
        call(&admin, "POST", "/rules", Some(&deny), None).await.0,
        200
    );
    assert!(ends(&mut ws).await, "ws:// is closed by the deny rule");
    assert!(metric_becomes(&plain.proxy, "leash_open_tunnels", 0).await);

    let secure = secure().await;
    let mut wss = secure.connect().await.unwrap();
    echo_messages(&mut wss).await;
    let deny = json!({ "deny": ["secure.test"] }).to_string();
    let admin = secure.leash.proxy.admin_client();
    assert_eq!(
        call(&admin, "POST", "/rules", Some(&deny), None).await.0,
        200
    );
    assert!(ends(&mut wss).await, "wss:// is closed by the deny rule");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limited_mode_refuses_the_handshake_and_closes_open_websockets() {
    let setup = plain(Mode::Full, &[], RelayMode::Splice).await;
    let (answer, tcp) = handshake(setup.proxy.http, &setup.url("ws"), "").await;
    assert_switched(&answer);
    let mut ws = client(tcp).await;
    let limited = json!({ "mode": "limited" }).to_string();
    let admin = setup.proxy.admin_client();
    assert_eq!(
        call(&admin, "POST", "/mode", Some(&limited), None).await.0,
        200
    );
    assert!(
        ends(&mut ws).await,
        "limited mode closes the open WebSocket"
    );
    let (answer, _) = handshake(setup.proxy.http, &setup.url("ws"), "").await;
    assert_eq!(answer.status, 403, "{answer:?}");
    assert_eq!(answer.json()["reason"], "method_not_allowed");
    assert_eq!(
        answer.header("x-proxy-error"),
        Some("blocked-by-method-policy")
    );

    // Inside an intercepted tunnel too.
    let secure = secure().await;
    let mut wss = secure.connect().await.unwrap();
    let admin = secure.leash.proxy.admin_client();
    assert_eq!(
        call(&admin, "POST", "/mode", Some(&limited), None).await.0,
        200
    );
    assert!(ends(&mut wss).await, "limited mode closes the open wss://");
    match secure.connect().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 403);
            let body = response.body().as_deref().unwrap_or_default();
            let body: serde_json::Value = serde_json::from_slice(body).unwrap();
            assert_eq!(body["reason"], "method_not_allowed", "{body}");
        }
        other => panic!("limited mode let a wss:// handshake through: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_websocket_is_closed_after_the_idle_timeout() {
    let origin = WsOrigin::plain().await;
    let resolver = Arc::new(StaticResolver::new().answer("ws.test", &[loopback()]));
    let allow_local = [format!("127.0.0.1:{}", origin.port())];
    let mut config = policy_config(&["ws.test"], &[], &allow_local);
    config.limits.idle_timeout = Timeout::new(Duration::from_secs(1)).unwrap();
    let proxy = start_proxy(config, resolver, None);
    let url = format!("ws://ws.test:{}/echo", origin.port());
    let (answer, tcp) = handshake(proxy.http, &url, "").await;
    assert_switched(&answer);
    let mut ws = client(tcp).await;
    assert!(ends(&mut ws).await, "a silent WebSocket is closed");
}

/// An origin that answers every request with `answer`, then `then` (bytes after the head), and
/// records the heads it got.
async fn raw_origin(answer: impl Fn(&str) -> Vec<u8> + Send + 'static) -> (SocketAddr, RawSeen) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = RawSeen::default();
    let heads = seen.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let Some(head) = read_request_head(&mut stream).await else {
                continue;
            };
            let _ = stream.write_all(&answer(&head)).await;
            heads.0.lock().unwrap().push(head);
            // Held open until the client goes.
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(WAIT, stream.read_to_end(&mut rest)).await;
        }
    });
    (addr, seen)
}

#[derive(Clone, Default)]
struct RawSeen(Arc<std::sync::Mutex<Vec<String>>>);

async fn read_request_head(stream: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut byte = [0u8; 1];
        match tokio::time::timeout(WAIT, stream.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => return None,
        }
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

fn raw_proxy(origin: SocketAddr) -> TestProxy {
    let resolver = Arc::new(StaticResolver::new().answer("raw.test", &[loopback()]));
    let allow_local = [format!("127.0.0.1:{}", origin.port())];
    start_proxy(
        policy_config(&["raw.test"], &[], &allow_local),
        resolver,
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_101_nobody_asked_for_or_for_another_protocol_is_a_502() {
    let switch = |_: &str| {
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: websocket\r\n\r\n"
            .to_vec()
    };
    let (origin, seen) = raw_origin(switch).await;
    let proxy = raw_proxy(origin);
    let url = format!("http://raw.test:{}/", origin.port());
    // A plain GET, and one asking for h2c (another token: stripped, so not asked for either).
    for extra in ["", "Connection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n"] {
        let mut tcp = TcpStream::connect(proxy.http).await.unwrap();
        let auth = base64::engine::general_purpose::STANDARD.encode("a1:tok");
        let head = format!(
            "GET {url} HTTP/1.1\r\nHost: raw.test\r\nProxy-Authorization: Basic {auth}\r\n{extra}\r\n"
        );
        tcp.write_all(head.as_bytes()).await.unwrap();
        let answer = read_response(&mut tcp).await.expect("an answer");
        assert_eq!(answer.status, 502, "{answer:?}");
        assert_eq!(answer.json()["reason"], "bad_upstream_response");
    }
    let heads = seen.0.lock().unwrap().clone();
    assert_eq!(heads.len(), 2);
    for head in heads {
        let head = head.to_ascii_lowercase();
        assert!(
            !head.contains("upgrade"),
            "no upgrade header went upstream:\n{head}"
        );
        assert!(!head.contains("http2-settings"), "{head}");
    }

    // A WebSocket handshake answered with a `101` to h2c.
    let h2c = |_: &str| {
        b"HTTP/1.1 101 Switching Protocols\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n".to_vec()
    };
    let (origin, _) = raw_origin(h2c).await;
    let proxy = raw_proxy(origin);
    let url = format!("ws://raw.test:{}/", origin.port());
    let (answer, _) = handshake(proxy.http, &url, "").await;
    assert_eq!(answer.status, 502, "{answer:?}");
    assert_eq!(answer.json()["reason"], "bad_upstream_response");
}

/// An origin that speaks first: its first frame comes in the same write as its `101`, so the
/// proxy's HTTP client has read it with the head; it still reaches the client, first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_origin_that_speaks_first_is_heard() {
    let greet = |head: &str| {
        let key = head
            .lines()
            .find_map(|l| l.strip_prefix("sec-websocket-key: "))
            .or_else(|| {
                head.lines()
                    .find_map(|l| l.strip_prefix("Sec-WebSocket-Key: "))
            })
            .unwrap_or_default();
        let accept = derive_accept_key(key.trim().as_bytes());
        let mut bytes = format!(
            "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Accept: {accept}\r\n\r\n"
        )
        .into_bytes();
        bytes.extend_from_slice(b"\x81\x05hello"); // One unmasked text frame.
        bytes
    };
    let (origin, _) = raw_origin(greet).await;
    let proxy = raw_proxy(origin);
    let url = format!("ws://raw.test:{}/", origin.port());
    let (answer, tcp) = handshake(proxy.http, &url, "").await;
    assert_switched(&answer);
    let mut ws = client(tcp).await;
    let first = tokio::time::timeout(WAIT, ws.next()).await.unwrap();
    assert_eq!(first.unwrap().unwrap(), Message::text("hello"));
}

/// Python's `websockets` (installed by `.ci/run`) through `HTTP_PROXY`-style proxy settings: it
/// tunnels `ws://` and `wss://` alike with `CONNECT`; `wss://secure.test` is intercepted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_websockets_through_the_proxy() {
    let probe = std::process::Command::new("python3")
        .args(["-c", "import websockets.asyncio.client"])
        .status();
    if !probe.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED websocket::python_websockets_through_the_proxy: Python's websockets (>= 14) is not installed (.ci/run installs it)");
        return;
    }
    let plain = plain(Mode::Full, &[], RelayMode::Splice).await;
    let proxy = plain.proxy.proxy_url("a1:tok");
    python_echo(&plain.url("ws"), &proxy, None).await;
    let secure = secure().await;
    let proxy = secure.leash.proxy.proxy_url("a1:x");
    let ca = secure.leash.ca_file();
    python_echo("wss://secure.test/echo", &proxy, Some(&ca)).await;
    assert_eq!(secure.origin.seen.requests().len(), 1);
}

const PYTHON_ECHO: &str = r#"
import asyncio, ssl, sys
from websockets.asyncio.client import connect

async def main(url, proxy, ca):
    context = ssl.create_default_context(cafile=ca) if ca else None
    async with connect(url, proxy=proxy, ssl=context, max_size=None, open_timeout=10) as ws:
        for message in ["hello", bytes([0, 1, 255]), bytes(range(256)) * 4096, "é" * (1 << 19)]:
            await ws.send(message)
            echoed = await asyncio.wait_for(ws.recv(), 10)
            assert echoed == message, f"echo differs ({len(message)})"
    print("echoed")

asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3] or None))
"#;

async fn python_echo(url: &str, proxy: &str, ca: Option<&std::path::Path>) {
    let ca = ca
        .map(|c| c.to_str().unwrap().to_owned())
        .unwrap_or_default();
    let run = tokio::process::Command::new("python3")
        .args(["-c", PYTHON_ECHO, url, proxy, &ca])
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(Duration::from_secs(60), run)
        .await
        .expect("python in time")
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(
        out.status.success() && stdout.contains("echoed"),
        "{url}: {stdout}{stderr}"
    );
}
