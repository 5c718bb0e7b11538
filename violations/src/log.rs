//! The violation log: a `DecisionSink` that numbers events, writes them as JSONL through a
//! lossless background writer, and keeps the newest in a ring.

use std::{
    io::{self, Write},
    path::PathBuf,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc, Mutex,
    },
    time::SystemTime,
};

use policy::{DecisionEvent, DecisionSink, EventId};
use tokio::sync::watch;
use tracing_appender::{
    non_blocking::{NonBlocking, NonBlockingBuilder, WorkerGuard},
    rolling::{self, RollingFileAppender},
};

use crate::{
    counts::DecisionCounts,
    line::render,
    ring::{Ring, RingPage},
    time::rfc3339_millis,
};

/// Lines the background writer may hold before `record` waits for it (never drops). The queue is
/// allocated up front, so it is kept small: idle memory matters more than burst headroom.
const QUEUE_LINES: usize = 4096;

/// When to start a new file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Rotation {
    /// One file, appended to.
    #[default]
    Never,
    /// `FILE.YYYY-MM-DD-HH`.
    Hourly,
    /// `FILE.YYYY-MM-DD`.
    Daily,
}

/// Where and how to log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogOptions {
    /// The log file (with rotation, the prefix of the dated files).
    pub path: PathBuf,
    /// Rotation.
    pub rotation: Rotation,
    /// Also log allowed decisions.
    pub log_allowed: bool,
    /// Events kept in memory for the admin API.
    pub ring: usize,
}

/// The log could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot open the violation log {}: {error}", path.display())]
pub struct ViolationLogError {
    path: PathBuf,
    error: String,
}

/// The unified violation log. `record` returns once the line is queued for the file (the queue
/// never drops: when full, `record` waits), so callers answer the client only after that.
#[derive(Debug)]
pub struct ViolationLog {
    state: Mutex<State>,
    log_allowed: bool,
    write_errors: Arc<AtomicU64>,
    guard: Mutex<Option<WorkerGuard>>,
    latest: watch::Sender<u64>,
    counts: DecisionCounts,
}

#[derive(Debug)]
struct State {
    seq: u64,
    writer: NonBlocking,
    ring: Ring,
}

impl ViolationLog {
    /// Opens (creates or appends to) the log.
    pub fn open(options: &LogOptions) -> Result<ViolationLog, ViolationLogError> {
        let error = |error: String| ViolationLogError {
            path: options.path.clone(),
            error,
        };
        let file_name = options
            .path
            .file_name()
            .ok_or_else(|| error("not a file name".into()))?;
        let dir = match options.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let rotation = match options.rotation {
            Rotation::Never => rolling::Rotation::NEVER,
            Rotation::Hourly => rolling::Rotation::HOURLY,
            Rotation::Daily => rolling::Rotation::DAILY,
        };
        let appender = RollingFileAppender::builder()
            .rotation(rotation)
            .filename_prefix(file_name.to_string_lossy())
            .build(dir)
            .map_err(|e| error(e.to_string()))?;
        let write_errors = Arc::new(AtomicU64::new(0));
        let counting = CountingWriter {
            inner: appender,
            errors: write_errors.clone(),
        };
        let (writer, guard) = NonBlockingBuilder::default()
            .lossy(false)
            .buffered_lines_limit(QUEUE_LINES)
            .thread_name("leash-violations")
            .finish(counting);
        Ok(ViolationLog {
            state: Mutex::new(State {
                seq: 0,
                writer,
                ring: Ring::new(options.ring),
            }),
            log_allowed: options.log_allowed,
            write_errors,
            guard: Mutex::new(Some(guard)),
            latest: watch::channel(0).0,
            counts: DecisionCounts::default(),
        })
    }

    /// Up to `limit` events newer than `since`, from the ring (non-destructive).
    pub fn page(&self, since: u64, limit: usize) -> RingPage {
        self.state.lock().expect("log lock").ring.page(since, limit)
    }

    /// The newest blocked event's `seq`, updated on every block (for long polls).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Every decision seen, by protocol and outcome.
    pub fn counts(&self) -> &DecisionCounts {
        &self.counts
    }

    /// Lines that could not be written.
    pub fn log_errors(&self) -> u64 {
        self.write_errors.load(Ordering::Relaxed)
    }

    /// Flushes every queued line to the file and stops the writer; later events still reach the
    /// ring and are counted as log errors.
    pub fn close(&self) {
        let guard = self.guard.lock().expect("log lock").take();
        drop(guard);
    }
}

impl DecisionSink for ViolationLog {
    fn record(&self, event: &DecisionEvent) -> EventId {
        self.counts.count(event.protocol, &event.decision);
        // One lock numbers, stamps, writes and rings the line, so `seq` and `ts` rise together.
        let mut state = self.state.lock().expect("log lock");
        let ts = rfc3339_millis(SystemTime::now());
        state.seq += 1;
        let seq = state.seq;
        let line = render(seq, &ts, event);
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        if state.writer.write_all(&bytes).is_err() {
            self.write_errors.fetch_add(1, Ordering::Relaxed);
        }
        // The ring serves `/blocked`: allowed decisions (`log_allowed`) go to the file only.
        let blocked = !event.decision.is_allowed();
        if blocked {
            state.ring.push(seq, line);
        }
        drop(state);
        if blocked {
            self.latest.send_replace(seq);
        }
        EventId(seq)
    }

    fn wants_allowed(&self) -> bool {
        self.log_allowed
    }

    fn allowed(&self, protocol: policy::Protocol) {
        self.counts.count_allowed(protocol);
    }
}

/// Counts the lines the background writer failed to write (the proxy keeps refusing meanwhile).
struct CountingWriter<W> {
    inner: W,
    errors: Arc<AtomicU64>,
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf).inspect_err(|_| {
            self.errors.fetch_add(1, Ordering::Relaxed);
        })
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        self.inner.write_all(buf).inspect_err(|_| {
            self.errors.fetch_add(1, Ordering::Relaxed);
        })
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests;
