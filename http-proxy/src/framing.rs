//! Every request head passes leash's head rules (`head.rs`) before hyper sees it. `Gated` sits
//! between the client's stream and hyper: it follows message boundaries (head, then a fixed or
//! chunked body), holds each head back until it is complete, checks it, and only then hands it to
//! hyper. A refused head never reaches hyper: hyper gets a stand-in head instead, and the request
//! handler, taking the note for it, answers with the JSON refusal and a log line (the same answer
//! as every other block) and closes. Without this, what hyper refuses while parsing would get
//! hyper's bare `400`, unlogged, and what it accepts silently (both `Content-Length` and
//! `Transfer-Encoding`) would not be seen at all.
//!
//! After a `CONNECT` head or a WebSocket handshake the gate holds what follows until the handler
//! says how it answered: a tunnel or a `101` (the bytes are the tunnel's, passed on untouched) or
//! anything else (the bytes are the next request, checked like the first). Body bytes pass
//! unchanged.

mod head;

use std::{
    collections::VecDeque,
    io,
    pin::Pin,
    sync::{Arc, Mutex},
    task::{Context, Poll, Waker},
};

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

pub(crate) use head::{HeadRefusal, HeadStatus};

/// Marks a request whose head was `OPTIONS http://host` (no path): forwarded as `OPTIONS *`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct OptionsAsterisk;

/// Marks a WebSocket handshake (`head::websocket_handshake`): the one request whose upgrade
/// headers are forwarded, and whose answer the gate waits for (`FramingNotes::answered`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct WebSocketHandshake;
use head::{Accepted, Framing};

/// What hyper gets instead of a refused head: a complete request it parses without complaint. The
/// handler never reads it; the note says what to answer, and the answer closes the connection.
const STAND_IN: &[u8] = b"GET / HTTP/1.1\r\nhost: refused.invalid\r\n\r\n";

/// The notes for one client connection, shared between the stream and the request handler.
#[derive(Debug)]
pub(crate) struct FramingNotes {
    tracker: Mutex<Tracker>,
}

impl FramingNotes {
    /// Notes for a connection whose heads may be `max_head` bytes long.
    pub(crate) fn new(max_head: usize) -> FramingNotes {
        FramingNotes {
            tracker: Mutex::new(Tracker::new(max_head)),
        }
    }

    /// Why the next request's head was refused, if it was (one note per head, in order); what
    /// hyper's reading of an accepted head lost goes into `req`'s extensions.
    pub(crate) fn take_note<B>(&self, req: &mut hyper::Request<B>) -> Option<HeadRefusal> {
        match self.lock().notes.pop_front()? {
            Ok(accepted) => {
                if accepted.options_asterisk {
                    req.extensions_mut().insert(OptionsAsterisk);
                }
                if accepted.framing == Framing::WebSocket {
                    req.extensions_mut().insert(WebSocketHandshake);
                }
                None
            }
            Err(refusal) => Some(refusal),
        }
    }

    /// How a `CONNECT` or a WebSocket handshake was answered: with a tunnel or a `101` (what
    /// follows is relayed untouched) or not (what follows is the next request, and is checked).
    /// Only the handler of that request may say: while the gate waits, no later head reaches
    /// hyper, so no other request is being answered.
    pub(crate) fn answered(&self, tunnel: bool) {
        let mut tracker = self.lock();
        if tracker.phase != Phase::Answer {
            return;
        }
        let held = std::mem::take(&mut tracker.held);
        match tunnel {
            true => {
                tracker.phase = Phase::Raw;
                tracker.out.extend_from_slice(&held);
            }
            false => {
                tracker.phase = Phase::Head;
                tracker.feed(&held);
            }
        }
        if let Some(waker) = tracker.waker.take() {
            waker.wake();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Tracker> {
        self.tracker.lock().expect("framing lock")
    }
}

#[derive(Debug)]
struct Tracker {
    phase: Phase,
    max_head: usize,
    /// The head being read, held back from hyper until it is complete.
    head: Vec<u8>,
    /// Bytes released to hyper, not yet read by it.
    out: BytesMut,
    /// Bytes after a `CONNECT` head or a WebSocket handshake, until its answer.
    held: Vec<u8>,
    notes: VecDeque<Result<Accepted, HeadRefusal>>,
    /// The reader waiting for that answer.
    waker: Option<Waker>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum Phase {
    #[default]
    Head,
    Body(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkDataEnd(u8),
    Trailers(Vec<u8>),
    /// After a `CONNECT` head or a WebSocket handshake, until the handler says how it answered.
    Answer,
    /// A tunnel: bytes pass untouched.
    Raw,
    /// After a refused head or a body hyper will refuse: nothing more reaches hyper.
    Refused,
}

impl Tracker {
    fn new(max_head: usize) -> Tracker {
        Tracker {
            phase: Phase::Head,
            max_head,
            head: Vec::new(),
            out: BytesMut::new(),
            held: Vec::new(),
            notes: VecDeque::new(),
            waker: None,
        }
    }

    /// Whether reading must wait for an answer (`Phase::Answer`) (what was held is bound by the head
    /// limit: hyper reads nothing more until it answers, so this is only what came with the head).
    fn holding(&self) -> bool {
        self.phase == Phase::Answer && self.held.len() >= self.max_head
    }

    /// Whether `n` fresh bytes all pass to hyper unchanged (the common case of a body or a tunnel),
    /// so that they need not be copied through `out`.
    fn passes(&mut self, n: usize) -> bool {
        if !self.out.is_empty() {
            return false;
        }
        match self.phase {
            Phase::Raw => true,
            Phase::Body(ref mut left) | Phase::ChunkData(ref mut left) if *left > n as u64 => {
                *left -= n as u64;
                true
            }
            Phase::Body(_)
            | Phase::ChunkData(_)
            | Phase::Head
            | Phase::ChunkSize(_)
            | Phase::ChunkDataEnd(_)
            | Phase::Trailers(_)
            | Phase::Answer
            | Phase::Refused => false,
        }
    }

    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            let used = self.step(bytes);
            bytes = &bytes[used..];
        }
    }

    /// Consumes some of `bytes` in the current phase (at least one byte); returns how many.
    fn step(&mut self, bytes: &[u8]) -> usize {
        let (used, release) = match self.phase {
            Phase::Head => (self.head_bytes(bytes), false),
            Phase::Body(ref mut left) | Phase::ChunkData(ref mut left) => {
                let used = (*left).min(bytes.len() as u64);
                *left -= used;
                (used as usize, true)
            }
            Phase::ChunkSize(ref mut line) | Phase::Trailers(ref mut line) => {
                (line_bytes(line, bytes), true)
            }
            Phase::ChunkDataEnd(ref mut seen) => {
                *seen += 1;
                (1, true)
            }
            Phase::Answer => {
                self.held.extend_from_slice(bytes);
                (bytes.len(), false)
            }
            Phase::Raw => (bytes.len(), true),
            Phase::Refused => (bytes.len(), false),
        };
        let used = used.max(1);
        if release {
            self.out.extend_from_slice(&bytes[..used]);
        }
        self.advance();
        used
    }

    /// Moves on from a phase that is complete.
    fn advance(&mut self) {
        let max_head = self.max_head;
        self.phase = match std::mem::take(&mut self.phase) {
            Phase::Body(0) => Phase::Head,
            Phase::ChunkData(0) => Phase::ChunkDataEnd(0),
            Phase::ChunkDataEnd(2) => Phase::ChunkSize(Vec::new()),
            Phase::ChunkSize(line) if line.ends_with(b"\n") => match chunk_size(&line) {
                Some(0) => Phase::Trailers(Vec::new()),
                Some(size) => Phase::ChunkData(size),
                // hyper refuses the body at this line; nothing after it is a request.
                None => Phase::Refused,
            },
            Phase::Trailers(line) if line.ends_with(b"\n") => {
                match line.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    true => Phase::Head,
                    false => Phase::Trailers(Vec::new()),
                }
            }
            // A line hyper will refuse as too long: let hyper have it and refuse the body.
            Phase::ChunkSize(line) | Phase::Trailers(line) if line.len() > max_head => {
                Phase::Refused
            }
            phase => phase,
        };
    }

    fn head_bytes(&mut self, bytes: &[u8]) -> usize {
        // Empty lines before a request are skipped (RFC 9112 §2.2), and not passed on.
        if self.head.is_empty() && (bytes[0] == b'\r' || bytes[0] == b'\n') {
            return 1;
        }
        let start = self.head.len().saturating_sub(2);
        self.head.extend_from_slice(bytes);
        let Some(end) = find_head_end(&self.head[start..]).map(|e| e + start) else {
            if self.head.len() > self.max_head {
                // Over the limit already: refuse it now rather than wait for its end.
                let head = std::mem::take(&mut self.head);
                self.end_head(&head);
            }
            return bytes.len();
        };
        let consumed_before = self.head.len() - bytes.len();
        let mut head = std::mem::take(&mut self.head);
        head.truncate(end);
        self.end_head(&head);
        end - consumed_before
    }

    /// A complete head: checked, then passed on (or a stand-in for it), and the phase set.
    fn end_head(&mut self, head: &[u8]) {
        match head::check(head, self.max_head) {
            Ok(accepted) => {
                self.notes.push_back(Ok(accepted));
                self.out.extend_from_slice(head);
                self.phase = match accepted.framing {
                    Framing::Empty => Phase::Head,
                    Framing::Length(length) => Phase::Body(length),
                    Framing::Chunked => Phase::ChunkSize(Vec::new()),
                    Framing::Connect | Framing::WebSocket => Phase::Answer,
                };
            }
            Err(refusal) => {
                self.notes.push_back(Err(refusal));
                self.out.extend_from_slice(STAND_IN);
                self.phase = Phase::Refused;
            }
        }
    }
}

/// Appends to a line up to and including its `\n`; returns the bytes used.
fn line_bytes(line: &mut Vec<u8>, bytes: &[u8]) -> usize {
    let used = bytes
        .iter()
        .position(|b| *b == b'\n')
        .map_or(bytes.len(), |i| i + 1);
    line.extend_from_slice(&bytes[..used]);
    used
}

/// The end of a head: just past the empty line (`\r\n` or a bare `\n`) after a line ending.
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes.windows(3).position(|w| w == b"\n\r\n").map(|i| i + 3);
    let lf = bytes.windows(2).position(|w| w == b"\n\n").map(|i| i + 2);
    match (crlf, lf) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

fn chunk_size(line: &[u8]) -> Option<u64> {
    let text = std::str::from_utf8(line).ok()?;
    let size = text.trim_end().split(';').next()?.trim();
    u64::from_str_radix(size, 16).ok()
}

/// A client stream as hyper reads it: through the gate.
#[derive(Debug)]
pub(crate) struct Gated<S> {
    inner: S,
    notes: Arc<FramingNotes>,
}

impl<S> Gated<S> {
    pub(crate) fn new(inner: S, notes: Arc<FramingNotes>) -> Gated<S> {
        Gated { inner, notes }
    }

    /// The stream, and what the gate had released that hyper had not read yet.
    pub(crate) fn into_parts(self) -> (S, Bytes) {
        let rest = std::mem::take(&mut self.notes.lock().out);
        (self.inner, rest.freeze())
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gated<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        loop {
            {
                let mut tracker = self.notes.lock();
                if !tracker.out.is_empty() {
                    let n = tracker.out.len().min(buf.remaining());
                    buf.put_slice(&tracker.out.split_to(n));
                    return Poll::Ready(Ok(()));
                }
                if tracker.holding() {
                    tracker.waker = Some(cx.waker().clone());
                    return Poll::Pending;
                }
            }
            let before = buf.filled().len();
            std::task::ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
            let fresh = buf.filled().len() - before;
            let mut tracker = self.notes.lock();
            if fresh == 0 {
                // The client stopped sending. After a refused head hyper must not see the end:
                // it would drop the connection (no half-close) before the refusal is written.
                // The refusal closes the connection itself.
                return match tracker.phase {
                    Phase::Refused => Poll::Pending,
                    Phase::Head
                    | Phase::Body(_)
                    | Phase::ChunkSize(_)
                    | Phase::ChunkData(_)
                    | Phase::ChunkDataEnd(_)
                    | Phase::Trailers(_)
                    | Phase::Answer
                    | Phase::Raw => Poll::Ready(Ok(())),
                };
            }
            if tracker.passes(fresh) {
                return Poll::Ready(Ok(()));
            }
            // Taken back, and handed over below as far as the gate releases them.
            tracker.feed(&buf.filled()[before..]);
            buf.set_filled(before);
            if tracker.phase == Phase::Answer {
                tracker.waker = Some(cx.waker().clone());
            }
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gated<S> {
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

#[cfg(test)]
mod tests;
