//! A stream wrapper that shows every byte read to an observer and changes nothing: the relay uses
//! it to notice activity and count bytes.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Sees the bytes a stream reads, in order.
pub trait ReadObserver: Send + Sync {
    /// Called with each chunk as it is read (never empty).
    fn observe(&self, bytes: &[u8]);
}

/// `inner`, with every read also shown to `observer`.
#[derive(Debug)]
pub struct Observed<S, O: ?Sized> {
    inner: S,
    observer: Arc<O>,
}

impl<S, O: ?Sized> Observed<S, O> {
    /// Wraps `inner`.
    pub fn new(inner: S, observer: Arc<O>) -> Observed<S, O> {
        Observed { inner, observer }
    }

    /// The stream, no longer observed.
    pub fn into_inner(self) -> S {
        self.inner
    }
}

impl<S: AsyncRead + Unpin, O: ReadObserver + ?Sized> AsyncRead for Observed<S, O> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        let new = &buf.filled()[before..];
        if !new.is_empty() {
            self.observer.observe(new);
        }
        poll
    }
}

impl<S: AsyncWrite + Unpin, O: ?Sized> AsyncWrite for Observed<S, O> {
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
