//! The violation log: a `DecisionSink` that numbers events, writes each line to the file before
//! `record` returns, and keeps the newest in a ring.
//!
//! Writing happens on the caller's thread (a `write(2)` into the page cache, which survives a
//! crash of the process; only `fsync` would survive power loss, at a cost per block that a proxy
//! cannot pay). Callers that arrive while a write is in progress queue their lines, and the next
//! writer writes them all at once. When writes fail (a full disk) the queue keeps lines up to a
//! bound, `health` says why, a retry thread writes them when space returns, and events past the
//! bound become one gap line.

use std::{
    path::PathBuf,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread::JoinHandle,
    time::{Duration, SystemTime},
};

use policy::{AnswerEvent, DecisionEvent, DecisionSink, EventId};
use tokio::sync::watch;

use crate::{
    counts::DecisionCounts,
    file::{Failed, LogFile},
    line::{render, render_answer, render_gap},
    queue::{Queue, Taken},
    ring::{Ring, RingPage},
    time::rfc3339_millis,
};

/// Bytes of lines held in memory while the file cannot be written; events past it become a gap.
const QUEUE_BYTES: usize = 512 * 1024;
/// How often the file is tried again while writes fail.
const RETRY: Duration = Duration::from_millis(200);

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
    error: std::io::Error,
}

/// Whether the log file is taking lines.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LogHealth {
    /// Every line so far is in the file.
    Ok,
    /// Writes fail: lines wait in memory (and past a bound are lost, recorded as a gap).
    Degraded {
        /// The last write error.
        reason: String,
    },
}

/// Where every event went. `events == written + in_gaps + queued + unrecorded` at all times.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Events numbered (`seq` of the newest).
    pub events: u64,
    /// Event lines in the file.
    pub written: u64,
    /// Events lost but named by a gap line in the file.
    pub in_gaps: u64,
    /// Events waiting in memory for the file (as lines, or inside a gap not written yet).
    pub queued: u64,
    /// Events lost with no gap line either: at close on a full disk, or recorded after close.
    pub unrecorded: u64,
    /// Failed write attempts.
    pub errors: u64,
}

/// The unified violation log. While the file takes lines, `record` returns only after its line
/// was written to the file (`write(2)`), so a block answered afterwards survives a kill of the
/// process; while writes fail, it returns with the line queued and `health` degraded.
#[derive(Debug)]
pub struct ViolationLog {
    shared: Arc<Shared>,
    retry: Mutex<Option<JoinHandle<()>>>,
    log_allowed: bool,
    latest: watch::Sender<u64>,
    counts: DecisionCounts,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Held by the one thread writing; lock order: `file`, then `state`.
    file: Mutex<Writer>,
    /// Wakes the retry thread: writes started failing, or the log closed.
    wake: Condvar,
}

#[derive(Debug)]
struct State {
    seq: u64,
    ring: Ring,
    queue: Queue,
    /// Why the last write failed; `None` while writes succeed.
    failing: Option<String>,
    closed: bool,
    stats: LogStats,
}

#[derive(Debug)]
struct Writer {
    /// `None` once closed.
    file: Option<LogFile>,
    batch: Vec<u8>,
    lengths: Vec<usize>,
}

impl ViolationLog {
    /// Opens (creates or appends to) the log.
    pub fn open(options: &LogOptions) -> Result<ViolationLog, ViolationLogError> {
        ViolationLog::open_bounded(options, QUEUE_BYTES)
    }

    fn open_bounded(
        options: &LogOptions,
        queue_bytes: usize,
    ) -> Result<ViolationLog, ViolationLogError> {
        let error = |error| ViolationLogError {
            path: options.path.clone(),
            error,
        };
        let file_name = options
            .path
            .file_name()
            .ok_or_else(|| error(std::io::Error::other("not a file name")))?;
        let dir = match options.path.parent() {
            Some(dir) if !dir.as_os_str().is_empty() => dir.to_owned(),
            _ => PathBuf::from("."),
        };
        let file = LogFile::open(
            dir,
            file_name.to_string_lossy().into_owned(),
            options.rotation,
        )
        .map_err(error)?;
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                seq: 0,
                ring: Ring::new(options.ring),
                queue: Queue::new(queue_bytes),
                failing: None,
                closed: false,
                stats: LogStats::default(),
            }),
            file: Mutex::new(Writer {
                file: Some(file),
                batch: Vec::new(),
                lengths: Vec::new(),
            }),
            wake: Condvar::new(),
        });
        let retry = {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("leash-log-retry".into())
                .spawn(move || shared.retry_loop())
                .map_err(error)?
        };
        Ok(ViolationLog {
            shared,
            retry: Mutex::new(Some(retry)),
            log_allowed: options.log_allowed,
            latest: watch::channel(0).0,
            counts: DecisionCounts::default(),
        })
    }

    /// Up to `limit` events newer than `since`, from the ring (non-destructive).
    pub fn page(&self, since: u64, limit: usize) -> RingPage {
        self.shared.state().ring.page(since, limit)
    }

    /// The newest blocked event's `seq`, updated on every block (for long polls).
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.latest.subscribe()
    }

    /// Every decision seen, by protocol and outcome.
    pub fn counts(&self) -> &DecisionCounts {
        &self.counts
    }

    /// Where every event went.
    pub fn stats(&self) -> LogStats {
        let state = self.shared.state();
        LogStats {
            queued: state.queue.events(),
            ..state.stats
        }
    }

    /// Whether the file takes lines now.
    pub fn health(&self) -> LogHealth {
        match &self.shared.state().failing {
            None => LogHealth::Ok,
            Some(reason) => LogHealth::Degraded {
                reason: format!("cannot write the violation log: {reason}"),
            },
        }
    }

    /// Writes every queued line (one last try) and closes the file. Lines that still cannot be
    /// written become one gap line if that fits, else they count as `unrecorded`. Later events
    /// still reach the ring and count as `unrecorded`.
    pub fn close(&self) {
        self.shared.state().closed = true;
        self.shared.wake.notify_all();
        if let Some(retry) = self.retry.lock().expect("log lock").take() {
            let _ = retry.join();
        }
        let mut writer = self.shared.file.lock().expect("log lock");
        self.shared.write_queued(&mut writer);
        let mut state = self.shared.state();
        let reason = state.failing.clone().unwrap_or_default();
        if let Some(gap) = state.queue.drain_to_gap(&reason) {
            drop(state);
            let ts = rfc3339_millis(SystemTime::now());
            let line = render_gap(&ts, &gap) + "\n";
            let written = writer
                .file
                .as_mut()
                .map(|file| file.append(line.as_bytes()));
            let mut state = self.shared.state();
            match written {
                Some(Ok(())) => state.stats.in_gaps += gap.lost(),
                Some(Err(_)) | None => state.stats.unrecorded += gap.lost(),
            }
        }
        writer.file = None;
    }
}

impl ViolationLog {
    /// Numbers, stamps and queues one line built by `line`; `ring` also keeps it for `/blocked`.
    /// One lock does it all, so `seq` and `ts` rise together and the queue is in `seq` order.
    fn push_line(&self, line: impl FnOnce(u64, &str) -> String, ring: bool) -> EventId {
        let mut state = self.shared.state();
        let ts = rfc3339_millis(SystemTime::now());
        state.seq += 1;
        state.stats.events += 1;
        let seq = state.seq;
        let line = line(seq, &ts);
        let write = match state.closed {
            true => {
                state.stats.unrecorded += 1;
                false
            }
            false => {
                let failing = state.failing.clone();
                state
                    .queue
                    .push(seq, format!("{line}\n"), failing.as_deref());
                failing.is_none()
            }
        };
        if ring {
            state.ring.push(seq, line);
        }
        drop(state);
        if write {
            self.shared.write_if_healthy();
        }
        if ring {
            self.latest.send_replace(seq);
        }
        EventId(seq)
    }
}

impl DecisionSink for ViolationLog {
    fn record(&self, event: &DecisionEvent) -> EventId {
        self.counts.count(event.protocol, &event.decision);
        // The ring serves `/blocked`: allowed decisions (`log_allowed`) go to the file only.
        let blocked = !event.decision.is_allowed();
        self.push_line(|seq, ts| render(seq, ts, event), blocked)
    }

    /// Answer lines go to the file only: `/blocked` serves blocks.
    fn record_answer(&self, answer: &AnswerEvent) -> EventId {
        self.push_line(|seq, ts| render_answer(seq, ts, answer), false)
    }

    fn wants_allowed(&self) -> bool {
        self.log_allowed
    }

    fn allowed(&self, protocol: policy::Protocol) {
        self.counts.count_allowed(protocol);
    }
}

impl Drop for ViolationLog {
    fn drop(&mut self) {
        self.close();
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().expect("log lock")
    }

    /// Writes the queue unless writes are failing (then the retry thread owns the file, and a
    /// caller never waits for a disk that is full). When this returns, the caller's line is in
    /// the file: written by this call or by the one that held the lock before.
    fn write_if_healthy(&self) {
        let mut writer = self.file.lock().expect("log lock");
        if self.state().failing.is_none() {
            self.write_queued(&mut writer);
        }
    }

    /// Writes everything queued, in batches, until the queue is empty or a write fails.
    fn write_queued(&self, writer: &mut Writer) {
        let Writer {
            file: Some(file),
            batch,
            lengths,
        } = writer
        else {
            return;
        };
        loop {
            batch.clear();
            lengths.clear();
            let ts = rfc3339_millis(SystemTime::now());
            {
                let mut state = self.state();
                if state.queue.is_empty() {
                    state.failing = None;
                    return;
                }
                state.queue.render_into(&ts, batch, lengths);
            }
            let result = file.append(batch);
            let mut state = self.state();
            match result {
                Ok(()) => {
                    let taken = state.queue.take(lengths.len());
                    state.account(taken);
                }
                Err(Failed { whole, error }) => {
                    let count = whole_entries(lengths, whole);
                    let taken = state.queue.take(count);
                    state.account(taken);
                    state.queue.unseal();
                    state.stats.errors += 1;
                    state.failing = Some(error.to_string());
                    self.wake.notify_all();
                    return;
                }
            }
        }
    }

    /// While writes fail, tries the file every `RETRY`; otherwise sleeps until woken.
    fn retry_loop(&self) {
        let mut state = self.state();
        loop {
            if state.closed {
                return;
            }
            if state.failing.is_none() {
                state = self.wake.wait(state).expect("log lock");
                continue;
            }
            let (guard, wait) = self.wake.wait_timeout(state, RETRY).expect("log lock");
            state = guard;
            if wait.timed_out() && !state.closed {
                drop(state);
                self.write_queued(&mut self.file.lock().expect("log lock"));
                state = self.state();
            }
        }
    }
}

impl State {
    fn account(&mut self, taken: Taken) {
        self.stats.written += taken.lines;
        self.stats.in_gaps += taken.in_gaps;
    }
}

/// How many entries of a batch with these `lengths` make up its first `bytes` bytes.
fn whole_entries(lengths: &[usize], bytes: usize) -> usize {
    let mut total = 0;
    lengths
        .iter()
        .take_while(|len| {
            total += **len;
            total <= bytes
        })
        .count()
}

#[cfg(test)]
mod tests;
