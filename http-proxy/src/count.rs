//! Forwarded HTTP bodies, counted for `/metrics` as their bytes pass (tunnels count their own);
//! and the client's half of a request body that a policy change cut, drained so the client hears
//! the `403`.

use std::{
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc,
    },
    task::{ready, Context, Poll},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, SizeHint};
use listeners::Tunnels;

use crate::{credentials::ScannedBody, pool::Cut, response::BodyError};

/// How long, and how much, of a cut request body is still read from the client and thrown away.
const DRAIN_FOR: Duration = Duration::from_secs(2);
const DRAIN_AT_MOST: usize = 1 << 20;

/// What goes upstream: the client's body, counted. When the exchange is cut (`cut` set before
/// the upstream connection is aborted, which drops this), the rest of the client's body is read
/// and discarded for a bounded while: a client still writing to a socket that closed on it gets a
/// reset and may never read the `403` waiting for it.
#[derive(Debug)]
pub(crate) struct UpstreamBody {
    body: Option<Counted<ScannedBody>>,
    cut: Arc<AtomicBool>,
}

impl UpstreamBody {
    pub(crate) fn new(body: Counted<ScannedBody>, cut: Arc<AtomicBool>) -> UpstreamBody {
        UpstreamBody {
            body: Some(body),
            cut,
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        // Over HTTP/2 the connection is not aborted on a cut (other streams share it): the body
        // then fails, so its stream is reset and the origin never sees a complete request.
        if self.cut.load(Ordering::Acquire) {
            return Poll::Ready(Some(Err(Box::new(Cut("cut")))));
        }
        match self.body.as_mut() {
            Some(body) => Pin::new(body)
                .poll_frame(cx)
                .map(|f| f.map(|f| f.map_err(|e| -> BodyError { Box::new(e) }))),
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.body.as_ref().is_none_or(Body::is_end_stream)
    }

    fn size_hint(&self) -> SizeHint {
        self.body.as_ref().map(Body::size_hint).unwrap_or_default()
    }
}

impl Drop for UpstreamBody {
    fn drop(&mut self) {
        let Some(counted) = self.body.take() else {
            return;
        };
        if !self.cut.load(Ordering::Acquire) || counted.is_end_stream() {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(drain(counted.body));
        }
    }
}

async fn drain(mut body: ScannedBody) {
    let discard = async {
        let mut read = 0;
        while let Some(Ok(frame)) = body.frame().await {
            read += frame.data_ref().map_or(0, Bytes::len);
            if read > DRAIN_AT_MOST {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(DRAIN_FOR, discard).await;
}

/// `body`, with every data byte counted as forwarded `up` (from the client) or down.
#[derive(Debug)]
pub(crate) struct Counted<B> {
    body: B,
    tunnels: Arc<Tunnels>,
    up: bool,
}

impl<B> Counted<B> {
    pub(crate) fn new(body: B, tunnels: &Arc<Tunnels>, up: bool) -> Counted<B> {
        Counted {
            body,
            tunnels: tunnels.clone(),
            up,
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Counted<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let frame = ready!(Pin::new(&mut self.body).poll_frame(cx));
        if let Some(data) = frame.as_ref().and_then(|f| f.as_ref().ok()?.data_ref()) {
            self.tunnels.count_forwarded(self.up, data.len());
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
