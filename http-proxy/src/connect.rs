//! `CONNECT host:port` (SPEC §3, §5): decide; then either intercept (when the policy inspects this
//! target: answer `200`, terminate TLS, decide every request inside), or dial through the shared
//! dialer, answer `200` and relay bytes (`listeners::relay`) until either side closes, the tunnel
//! idles out, or a policy change closes it.

use std::sync::Arc;

use hyper::{
    body::Incoming,
    upgrade::{OnUpgrade, Upgraded},
    Request, Response, StatusCode,
};
use hyper_util::rt::TokioIo;
use listeners::{
    relay, relay_sockets, DialError, Dialed, Early, RelayMode, TunnelHandle, TunnelInfo,
};
use policy::{is_approved, BlockReason, Decision, Protocol, Request as PolicyRequest, Target};

use crate::{
    intercept::intercept,
    proxy::{HttpProxy, Scope, Subject},
    response::{full, upstream_error_response, ProxyBody, UpstreamError},
};

pub(crate) async fn handle(
    proxy: &Arc<HttpProxy>,
    scope: Scope,
    mut req: Request<Incoming>,
) -> Response<ProxyBody> {
    // The raw request-target, never `Uri`'s reading of it: `Uri` turns bad ports into "no port".
    let authority = req
        .uri()
        .authority()
        .map(|a| a.as_str().to_owned())
        .unwrap_or_default();
    let target = match Target::parse(&authority, None) {
        Ok(target) => target,
        Err(error) => {
            return proxy.block(
                &scope,
                Decision::invalid_target(error),
                &subject(authority.clone(), crate::response::port_of(&authority)),
            )
        }
    };
    let subject = subject(target.host().to_string(), target.port());
    let request = PolicyRequest::new(&target, "CONNECT", Protocol::Connect);
    let ruling = proxy.decide(&scope, &request, None).await;
    if !ruling.decision.is_allowed() {
        return proxy.block_held(&scope, ruling, &subject);
    }
    let decision = ruling.decision;
    let approved = is_approved(
        scope.engine.as_ref(),
        proxy.holder.as_deref(),
        &request,
        &decision,
    );
    let on_upgrade = hyper::upgrade::on(&mut req);
    if scope.engine.inspects(&target) {
        return match proxy.mitm.is_some() {
            true => intercepted(proxy, scope, (decision, approved), target, on_upgrade),
            // The policy wants to see inside, and nothing here can: refuse rather than relay blind.
            false => proxy.block(&scope, Decision::Deny(BlockReason::MitmRequired), &subject),
        };
    }
    let dialed = match proxy
        .dialer
        .dial(scope.engine.as_ref(), &target, &scope.client_key())
        .await
    {
        Ok(dialed) => dialed,
        Err(DialError::Blocked(decision)) => return proxy.block(&scope, decision, &subject),
        Err(error) => {
            return upstream_error_response(
                &UpstreamError::Dial(error),
                &subject.host,
                subject.port,
            )
        }
    };
    let info = TunnelInfo {
        target,
        protocol: Protocol::Connect,
        peer: dialed.peer,
        inspected: false,
        approved,
        attempt: scope.attempt.as_deref().map(Arc::from),
    };
    // A policy change while this request was decided or dialled still reaches it.
    let tunnel = match proxy
        .dialer
        .tunnels()
        .open_checked(info, proxy.engine.as_ref())
    {
        Ok(tunnel) => tunnel,
        Err(refusal) => return proxy.block(&scope, refusal, &subject),
    };
    proxy.record_allowed(&scope, decision, Protocol::Connect, || subject);
    let (idle, mode) = (proxy.limits.idle_timeout, proxy.limits.relay);
    // An open tunnel keeps its client connection busy: it is never evicted as idle.
    let busy = scope.connection.as_ref().map(|c| c.busy());
    // Boxed: the relay's future is large, and tokio moves a task's future by value several times
    // as it spawns and finishes it (a tenth of a `CONNECT`'s user-space instructions were those
    // copies, under callgrind); a box is moved once.
    tokio::spawn(Box::pin(async move {
        let _busy = busy;
        match on_upgrade.await {
            Ok(upgraded) => relay_upgraded(upgraded, dialed, idle, mode, tunnel).await,
            Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
        }
    }));
    ok()
}

/// Relays a tunnel. The upgraded connection is, underneath, the client's socket: taken back out
/// of hyper it can be relayed socket to socket (in the kernel, on Linux).
async fn relay_upgraded(
    upgraded: Upgraded,
    dialed: Dialed,
    idle: std::time::Duration,
    mode: RelayMode,
    tunnel: TunnelHandle,
) {
    match upgraded.downcast::<TokioIo<crate::server::ClientStream>>() {
        Ok(parts) => {
            // What hyper had buffered, then what the gate had released and hyper not yet read.
            let (client, released) = parts.io.into_inner().into_parts();
            let early = [&parts.read_buf[..], &released[..]].concat();
            relay_sockets(client, Early::up(&early), dialed.stream, idle, mode, tunnel).await;
        }
        Err(upgraded) => relay(TokioIo::new(upgraded), dialed.stream, idle, tunnel).await,
    }
}

/// Answers `200` and hands the upgraded stream to TLS interception.
fn intercepted(
    proxy: &Arc<HttpProxy>,
    scope: Scope,
    (decision, approved): (Decision, bool),
    target: Target,
    on_upgrade: OnUpgrade,
) -> Response<ProxyBody> {
    let named = || subject(target.host().to_string(), target.port());
    let info = TunnelInfo {
        target: target.clone(),
        protocol: Protocol::Connect,
        peer: None,
        inspected: true,
        approved,
        attempt: scope.attempt.as_deref().map(Arc::from),
    };
    let tunnel = match proxy
        .dialer
        .tunnels()
        .open_checked(info, proxy.engine.as_ref())
    {
        Ok(tunnel) => tunnel,
        Err(refusal) => return proxy.block(&scope, refusal, &named()),
    };
    proxy.record_allowed(&scope, decision, Protocol::Connect, named);
    let proxy = proxy.clone();
    let busy = scope.connection.as_ref().map(|c| c.busy());
    tokio::spawn(async move {
        let _busy = busy;
        if let Ok(upgraded) = on_upgrade.await {
            intercept(proxy, scope, target, TokioIo::new(upgraded), tunnel).await;
        }
    });
    ok()
}

fn ok() -> Response<ProxyBody> {
    let mut response = Response::new(full(""));
    *response.status_mut() = StatusCode::OK;
    response
}

fn subject<'a>(host: String, port: u16) -> Subject<'a> {
    Subject {
        host,
        port,
        protocol: Protocol::Connect,
        method: "CONNECT",
        path: None,
    }
}
