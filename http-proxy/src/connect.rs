//! `CONNECT host:port` (SPEC §3): decide, dial through the shared dialer, answer `200`, then relay
//! bytes (`listeners::relay`) until either side closes or the tunnel stays idle too long.

use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use listeners::{relay, DialError, TunnelInfo};
use policy::{Decision, Protocol, Request as PolicyRequest, Target};

use crate::{
    proxy::{HttpProxy, Scope, Subject},
    response::{full, upstream_error_response, ProxyBody, UpstreamError},
};

pub(crate) async fn handle(
    proxy: &HttpProxy,
    scope: &Scope,
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
            let subject = subject(authority, 0);
            return proxy.block(scope, Decision::invalid_target(error), &subject);
        }
    };
    let subject = subject(target.host().to_string(), target.port());
    let decision = scope
        .engine
        .decide(&PolicyRequest::new(&target, "CONNECT", Protocol::Connect));
    if !decision.is_allowed() {
        return proxy.block(scope, decision, &subject);
    }
    let dialed = match proxy.dialer.dial(scope.engine.as_ref(), &target).await {
        Ok(dialed) => dialed,
        Err(DialError::Blocked(decision)) => return proxy.block(scope, decision, &subject),
        Err(error) => {
            return upstream_error_response(
                &UpstreamError::Dial(error),
                &subject.host,
                subject.port,
            )
        }
    };
    proxy.record_allowed(scope, decision, &subject);
    let on_upgrade = hyper::upgrade::on(&mut req);
    let idle = proxy.limits.idle_timeout;
    let tunnel = proxy.dialer.tunnels().open(TunnelInfo {
        target,
        protocol: Protocol::Connect,
        peer: dialed.peer,
        inspected: false,
    });
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => relay(TokioIo::new(upgraded), dialed.stream, idle, tunnel).await,
            Err(error) => tracing::debug!(%error, "CONNECT upgrade failed"),
        }
    });
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
