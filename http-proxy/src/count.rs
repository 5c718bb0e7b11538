//! Forwarded HTTP bodies, counted for `/metrics` as their bytes pass (tunnels count their own).

use std::{
    pin::Pin,
    sync::Arc,
    task::{ready, Context, Poll},
};

use bytes::Bytes;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use listeners::Tunnels;

/// What goes upstream: the client's body, counted.
pub(crate) type UpstreamBody = Counted<Incoming>;

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
