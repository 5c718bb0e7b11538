//! hyper resolves a request that carries both `Content-Length` and `Transfer-Encoding` silently
//! (chunked wins, the length header is dropped), so the request handler cannot see that shape.
//! leash refuses it (SPEC §3: a smuggling shape gets 400 and close). `FramingNotes` reads the same
//! bytes hyper reads (as a `ReadObserver`), follows message boundaries (head, then a fixed or chunked
//! body), and notes for each request head whether it had both headers or a bare-LF line ending
//! (which hyper also accepts); the handler takes one note per request.
//!
//! The watch never changes a byte. If it loses track (a `CONNECT` tunnel, something it cannot
//! parse) it stops noting, and hyper's own framing still applies.

use std::{collections::VecDeque, sync::Mutex};

use listeners::ReadObserver;

/// Heads longer than this are hyper's to refuse; the watch gives up on them.
const MAX_HEAD: usize = 256 * 1024;

/// The notes for one client connection, shared between the stream and the request handler.
#[derive(Debug, Default)]
pub(crate) struct FramingNotes {
    tracker: Mutex<Tracker>,
}

impl FramingNotes {
    /// What is wrong with the next request's head (in order), if anything hyper lets through.
    pub(crate) fn next_problem(&self) -> Option<&'static str> {
        let mut tracker = self.tracker.lock().expect("framing lock");
        tracker.notes.pop_front().flatten()
    }
}

#[derive(Debug, Default)]
struct Tracker {
    phase: Phase,
    head: Vec<u8>,
    notes: VecDeque<Option<&'static str>>,
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
    /// Lost track, or a tunnel: note nothing more.
    Done,
}

impl Tracker {
    fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() && self.phase != Phase::Done {
            let used = self.step(bytes);
            bytes = &bytes[used..];
        }
    }

    /// Consumes some of `bytes` in the current phase (at least one byte); returns how many.
    fn step(&mut self, bytes: &[u8]) -> usize {
        let used = match self.phase {
            Phase::Head => self.head_bytes(bytes),
            Phase::Body(ref mut left) | Phase::ChunkData(ref mut left) => {
                let used = (*left).min(bytes.len() as u64);
                *left -= used;
                used as usize
            }
            Phase::ChunkSize(ref mut line) | Phase::Trailers(ref mut line) => {
                line_bytes(line, bytes)
            }
            Phase::ChunkDataEnd(ref mut seen) => {
                *seen += 1;
                1
            }
            Phase::Done => bytes.len(),
        };
        self.advance();
        used.max(1)
    }

    /// Moves on from a phase that is complete.
    fn advance(&mut self) {
        self.phase = match std::mem::take(&mut self.phase) {
            Phase::Body(0) => Phase::Head,
            Phase::ChunkData(0) => Phase::ChunkDataEnd(0),
            Phase::ChunkDataEnd(2) => Phase::ChunkSize(Vec::new()),
            Phase::ChunkSize(line) if line.ends_with(b"\n") => match chunk_size(&line) {
                Some(0) => Phase::Trailers(Vec::new()),
                Some(size) => Phase::ChunkData(size),
                None => Phase::Done,
            },
            Phase::Trailers(line) if line.ends_with(b"\n") => {
                match line.iter().all(|b| *b == b'\r' || *b == b'\n') {
                    true => Phase::Head,
                    false => Phase::Trailers(Vec::new()),
                }
            }
            phase => phase,
        };
    }

    fn head_bytes(&mut self, bytes: &[u8]) -> usize {
        // A leading empty line before a request is allowed and skipped (RFC 9112 §2.2).
        if self.head.is_empty() && (bytes[0] == b'\r' || bytes[0] == b'\n') {
            return 1;
        }
        let start = self.head.len().saturating_sub(3);
        self.head.extend_from_slice(bytes);
        let Some(end) = find_head_end(&self.head[start..]).map(|e| e + start) else {
            if self.head.len() > MAX_HEAD {
                self.phase = Phase::Done;
            }
            return bytes.len();
        };
        let consumed_before = self.head.len() - bytes.len();
        let head = std::mem::take(&mut self.head);
        self.begin_body(&head[..end]);
        end - consumed_before
    }

    fn begin_body(&mut self, head: &[u8]) {
        let text = String::from_utf8_lossy(head);
        let mut lines = text.split('\n').map(|l| l.trim_end_matches('\r'));
        let method = lines
            .next()
            .and_then(|l| l.split(' ').next())
            .unwrap_or_default()
            .to_owned();
        let (mut length, mut chunked, mut has_length, mut has_te) = (None, false, false, false);
        // hyper merges equal duplicates (`5` twice, or `5, 5`) without a word; SPEC §3 refuses
        // every duplicate length, equal or not.
        let mut duplicate_length = false;
        for line in lines {
            let Some((name, value)) = line.split_once(':') else {
                continue;
            };
            let name = name.trim().to_ascii_lowercase();
            if name == "content-length" {
                duplicate_length |= has_length || value.contains(',');
                has_length = true;
                length = value.trim().parse::<u64>().ok();
            } else if name == "transfer-encoding" {
                has_te = true;
                chunked = value.to_ascii_lowercase().trim_end().ends_with("chunked");
            }
        }
        let bare_lf = head
            .iter()
            .enumerate()
            .any(|(i, b)| *b == b'\n' && (i == 0 || head[i - 1] != b'\r'));
        let problem = match (has_length && has_te, duplicate_length, bare_lf) {
            (true, _, _) => Some("both Content-Length and Transfer-Encoding (a smuggling shape)"),
            (false, true, _) => Some("more than one Content-Length (a smuggling shape)"),
            (false, false, true) => Some("a bare LF line ending in the request head"),
            (false, false, false) => None,
        };
        self.notes.push_back(problem);
        self.phase = match (method.as_str(), has_te, length) {
            ("CONNECT", _, _) => Phase::Done,
            (_, true, _) if chunked => Phase::ChunkSize(Vec::new()),
            (_, true, _) => Phase::Done,
            (_, false, Some(0) | None) if !has_length => Phase::Head,
            (_, false, Some(0)) => Phase::Head,
            (_, false, Some(length)) => Phase::Body(length),
            (_, false, None) => Phase::Done,
        };
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

/// The end of a head: just past `\r\n\r\n` (or `\n\n`).
fn find_head_end(bytes: &[u8]) -> Option<usize> {
    let crlf = bytes
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4);
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

impl ReadObserver for FramingNotes {
    fn observe(&self, bytes: &[u8]) {
        self.tracker.lock().expect("framing lock").feed(bytes);
    }
}

#[cfg(test)]
mod tests;
