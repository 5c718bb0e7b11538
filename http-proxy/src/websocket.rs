//! WebSockets (SPEC §15): a handshake (`framing::WebSocketHandshake`) is decided and forwarded like
//! any `GET`, keeping `Upgrade: websocket` and `Connection: upgrade`, which every other request
//! loses as hop-by-hop. When the origin answers `101` for `websocket`, the client gets the `101`
//! and the exchange becomes a registered tunnel (`TunnelHandle::upgraded`): both sides are relayed
//! as bytes by `listeners`' relay (socket to socket, spliced, for `ws://` through the proxy;
//! copied for `wss://` inside an intercepted tunnel), until either side closes, the idle timeout,
//! or a policy change that refuses the handshake it began as (a deny rule, limited mode).

use hyper::{
    body::Incoming,
    header::{HeaderMap, HeaderValue, CONNECTION, UPGRADE},
    upgrade::{OnUpgrade, Upgraded},
    Response,
};
use hyper_util::rt::TokioIo;
use listeners::{relay, relay_sockets, Busy, Early, RelayMode, TunnelHandle};
use tokio::net::TcpStream;

use crate::{
    headers::strip_hop_by_hop,
    response::{full, ProxyBody},
    server::ClientStream,
};

/// Puts back the two upgrade headers `strip_hop_by_hop` removed, naming only `websocket`: any
/// other token the client listed (`h2c`) stays stripped.
pub(crate) fn keep_websocket_upgrade(headers: &mut HeaderMap) {
    headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
    headers.insert(UPGRADE, HeaderValue::from_static("websocket"));
}

/// Whether a `101` switches to the protocol the handshake asked for: `Upgrade` names
/// `websocket`, and nothing else (RFC 6455 §4.2.2; RFC 9110 §7.8 lets a server name only
/// protocols the client listed, and leash forwarded only `websocket`).
pub(crate) fn switches_to_websocket(headers: &HeaderMap) -> bool {
    let mut tokens = headers
        .get_all(UPGRADE)
        .iter()
        .flat_map(|v| v.as_bytes().split(|b| *b == b','))
        .map(<[u8]>::trim_ascii)
        .filter(|t| !t.is_empty());
    let websocket = |t: &[u8]| t.eq_ignore_ascii_case(b"websocket");
    tokens.next().is_some_and(websocket) && tokens.all(websocket)
}

/// What the relay needs once both sides have switched.
pub(crate) struct Switch {
    /// The exchange, now a tunnel.
    pub(crate) tunnel: TunnelHandle,
    /// The client's side of the upgrade (hyper's server fulfils it once the `101` is written).
    pub(crate) client: OnUpgrade,
    /// Keeps the client connection busy (never evicted as idle) while the WebSocket is open.
    pub(crate) busy: Option<Busy>,
    pub(crate) idle: std::time::Duration,
    pub(crate) mode: RelayMode,
}

/// The client's `101` for the origin's, and the relay started behind it.
pub(crate) fn switch(mut response: Response<Incoming>, switch: Switch) -> Response<ProxyBody> {
    let origin = hyper::upgrade::on(&mut response);
    let (mut parts, _) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    keep_websocket_upgrade(&mut parts.headers);
    switch.tunnel.upgraded();
    tokio::spawn(async move {
        let Switch {
            tunnel,
            client,
            busy,
            idle,
            mode,
        } = switch;
        let _busy = busy;
        // Both sides switch at once (the client's as soon as hyper has written the `101`), but
        // the wait is bounded all the same, and a policy change ends it.
        let switched = tokio::select! {
            both = async { tokio::try_join!(client, origin) } => both.ok(),
            () = tunnel.closed() => None,
            () = tokio::time::sleep(idle) => None,
        };
        match switched {
            Some((client, origin)) => relay_switched(client, origin, idle, mode, tunnel).await,
            None => tracing::debug!("a WebSocket ended before both sides switched"),
        }
    });
    Response::from_parts(parts, full(""))
}

/// Relays a WebSocket. Through the proxy's listener (`ws://`), both sides are, underneath, plain
/// sockets: taken back out of hyper they are relayed socket to socket (spliced on Linux), after
/// what each side's parser had read past the handshake. Inside an intercepted tunnel both sides
/// are TLS, and hyper's upgraded streams are copied.
async fn relay_switched(
    client: Upgraded,
    origin: Upgraded,
    idle: std::time::Duration,
    mode: RelayMode,
    tunnel: TunnelHandle,
) {
    let client = client.downcast::<TokioIo<ClientStream>>();
    let origin = origin.downcast::<TokioIo<TcpStream>>();
    match (client, origin) {
        (Ok(client), Ok(origin)) => {
            let (socket, released) = client.io.into_inner().into_parts();
            let up = [&client.read_buf[..], &released[..]].concat();
            let early = Early {
                up: &up,
                down: &origin.read_buf,
            };
            let origin_socket = origin.io.into_inner();
            relay_sockets(socket, early, origin_socket, idle, mode, tunnel).await;
        }
        (Err(client), Err(origin)) => {
            relay(TokioIo::new(client), TokioIo::new(origin), idle, tunnel).await
        }
        // A plain route has sockets on both sides and an intercepted one TLS on both: a mixed
        // pair is no route leash makes, and is closed rather than guessed at.
        (Ok(_), Err(_)) | (Err(_), Ok(_)) => {
            tracing::warn!("a WebSocket with one plain and one TLS side: closed")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_switch_to_websocket_answers_a_websocket_handshake() {
        let switches = |values: &[&'static str]| {
            let mut headers = HeaderMap::new();
            for value in values {
                headers.append(UPGRADE, HeaderValue::from_static(value));
            }
            switches_to_websocket(&headers)
        };
        assert!(switches(&["websocket"]));
        assert!(switches(&["WebSocket"]));
        assert!(!switches(&[]), "no Upgrade");
        assert!(!switches(&["h2c"]));
        assert!(!switches(&["websocket, h2c"]));
        assert!(!switches(&["websocket", "TLS/1.2"]));
    }
}
