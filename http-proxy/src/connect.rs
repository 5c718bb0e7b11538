//! `CONNECT host:port` (SPEC §3): decide, dial through the shared dialer, answer `200`, then relay
//! bytes until either side closes or the tunnel stays idle too long.

use std::{
    io,
    pin::Pin,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    task::{Context, Poll},
    time::{Duration, Instant},
};

use hyper::{body::Incoming, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use listeners::DialError;
use policy::{Decision, Protocol, Request as PolicyRequest, Target};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

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
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => relay(TokioIo::new(upgraded), dialed.stream, idle).await,
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

/// Copies both ways until one side closes, or until no byte has moved for `idle`.
async fn relay<C, U>(client: C, upstream: U, idle: Duration)
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let activity = Arc::new(Activity::new());
    let mut client = Tracked::new(client, activity.clone());
    let mut upstream = Tracked::new(upstream, activity.clone());
    let result = tokio::select! {
        result = tokio::io::copy_bidirectional(&mut client, &mut upstream) => result.map(|_| ()),
        _ = activity.idle_for(idle) => Ok(()),
    };
    if let Err(error) = result {
        tracing::debug!(%error, "tunnel closed with an error");
    }
}

/// When bytes last moved, as milliseconds since the tunnel opened.
#[derive(Debug)]
struct Activity {
    opened: Instant,
    last_ms: AtomicU64,
}

impl Activity {
    fn new() -> Activity {
        Activity {
            opened: Instant::now(),
            last_ms: AtomicU64::new(0),
        }
    }

    fn touch(&self) {
        let now = self.opened.elapsed().as_millis() as u64;
        self.last_ms.store(now, Ordering::Relaxed);
    }

    /// Resolves once nothing has moved for `idle`.
    async fn idle_for(&self, idle: Duration) {
        loop {
            let last = self.opened + Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
            let deadline = last + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline.into()).await;
        }
    }
}

/// A stream that reports every read that returned data.
struct Tracked<S> {
    inner: S,
    activity: Arc<Activity>,
}

impl<S> Tracked<S> {
    fn new(inner: S, activity: Arc<Activity>) -> Tracked<S> {
        Tracked { inner, activity }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Tracked<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if buf.filled().len() > before {
            self.activity.touch();
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Tracked<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}
