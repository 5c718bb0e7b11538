//! The decider socket (SPEC §14): an outside program that answers asks over a unix socket, one
//! JSON object a line. leash sends `hello`, then one `ask` per pending item (not per request:
//! items merge concurrent requests) and `withdrawn` when an item it was told about ends without
//! its answer; the decider answers `{"id","answer","scope"}` through the same
//! `Control::answer` as every approver. It counts as a present approver while connected.
//!
//! The decider is another program, so what it sends is untrusted input: a line that is not an
//! answer (bad JSON, an unknown id, longer than `MAX_LINE`) answers nothing and is warned about
//! once per connection; the item keeps waiting and times out as `ask`. Requests never wait on
//! the socket: a decider that stops reading is disconnected once `MAX_QUEUED` bytes wait for it
//! or nothing could be written for `WRITE_STALL`.

use std::{
    collections::BTreeSet,
    fmt, io,
    path::PathBuf,
    str::FromStr,
    sync::Arc,
    time::{Duration, Instant},
};

use admin::ControlError;
use listeners::{AnswerError, PendingItem};
use policy::{ApprovedBy, AskAnswer, AskScope, Protocol};
use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::UnixStream,
    sync::watch,
};

use crate::{hub::Hub, Approver};

/// The protocol version, sent in every line leash writes.
const VERSION: u8 = 1;
/// The longest line read from a decider; a longer one is skipped to its end.
const MAX_LINE: usize = 64 * 1024;
/// The most bytes waiting to be written to a decider before it counts as not reading.
const MAX_QUEUED: usize = 1024 * 1024;
/// How long waiting bytes may go unwritten before the decider counts as not reading.
const WRITE_STALL: Duration = Duration::from_secs(10);
/// A unix connect answers at once unless the decider's backlog is full; past this it is retried.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The first wait before connecting again, doubled up to `MAX_RETRY` while it fails.
const FIRST_RETRY: Duration = Duration::from_millis(100);
const MAX_RETRY: Duration = Duration::from_secs(2);
/// A connection that lasted this long was a working decider: retrying starts quick and loud again.
const STEADY: Duration = Duration::from_secs(5);

/// Where the decider is (`--decider`, `ask.decider`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeciderAddr {
    /// `unix:PATH`: leash connects to a socket the decider listens on, and reconnects.
    Unix(PathBuf),
    /// `fd:N`: a connected unix socket leash inherited as descriptor N; gone for good once closed.
    Fd(i32),
}

/// A decider address that does not parse.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("expected `unix:PATH` or `fd:N` (N a descriptor number), got `{0}`")]
pub struct DeciderAddrError(String);

impl FromStr for DeciderAddr {
    type Err = DeciderAddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bad = || DeciderAddrError(text.to_owned());
        match text.split_once(':') {
            Some(("unix", path)) if !path.is_empty() => Ok(DeciderAddr::Unix(PathBuf::from(path))),
            Some(("fd", n)) => n
                .parse()
                .ok()
                .filter(|n| *n >= 0)
                .map(DeciderAddr::Fd)
                .ok_or_else(bad),
            _ => Err(bad()),
        }
    }
}

impl fmt::Display for DeciderAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DeciderAddr::Unix(path) => write!(f, "unix:{}", path.display()),
            DeciderAddr::Fd(n) => write!(f, "fd:{n}"),
        }
    }
}

/// A decider ready to be served: `fd:N` is taken when leash is built, so a bad descriptor stops
/// the start instead of failing later.
#[derive(Debug)]
pub(crate) enum Endpoint {
    Unix(PathBuf),
    Fd(i32, std::os::unix::net::UnixStream),
}

impl Endpoint {
    pub(crate) fn open(addr: &DeciderAddr) -> io::Result<Endpoint> {
        match addr {
            DeciderAddr::Unix(path) => Ok(Endpoint::Unix(path.clone())),
            DeciderAddr::Fd(n) => Ok(Endpoint::Fd(*n, take_fd(*n)?)),
        }
    }
}

/// A duplicate of this process's descriptor `n`, checked to be a unix stream socket. Rust has no
/// safe way to own a descriptor named by its number, and leash forbids `unsafe`: `pidfd_getfd(2)`
/// on our own process makes the duplicate in the kernel and hands it back as an `OwnedFd`.
/// Descriptor `n` itself stays open (unused) until exit; closing the duplicate shuts the socket
/// down for both, so the decider still sees leash leave.
#[cfg(target_os = "linux")]
fn take_fd(n: i32) -> io::Result<std::os::unix::net::UnixStream> {
    use rustix::{
        net::{sockopt, AddressFamily, SocketType},
        process::{getpid, pidfd_getfd, pidfd_open, PidfdFlags, PidfdGetfdFlags},
    };
    let taken = pidfd_open(getpid(), PidfdFlags::empty())
        .and_then(|me| pidfd_getfd(&me, n, PidfdGetfdFlags::empty()));
    let fd = match taken {
        Ok(fd) => fd,
        Err(rustix::io::Errno::BADF) => {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not an open descriptor",
            ))
        }
        Err(error) => {
            let error = io::Error::from(error);
            let message = format!("cannot take the descriptor (pidfd_getfd): {error}");
            return Err(io::Error::new(error.kind(), message));
        }
    };
    let unix_stream = sockopt::socket_domain(&fd).is_ok_and(|d| d == AddressFamily::UNIX)
        && sockopt::socket_type(&fd).is_ok_and(|t| t == SocketType::STREAM);
    match unix_stream {
        true => Ok(fd.into()),
        false => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a unix stream socket",
        )),
    }
}

/// Elsewhere `fd:N` is refused at start (`unix:PATH` works everywhere).
#[cfg(not(target_os = "linux"))]
fn take_fd(_n: i32) -> io::Result<std::os::unix::net::UnixStream> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "fd:N needs Linux (pidfd_getfd); use unix:PATH",
    ))
}

/// Serves the decider until `stop`: `unix:` reconnects with a bounded backoff whenever it is
/// gone, `fd:` ends when its socket closes.
pub(crate) async fn serve(
    endpoint: Endpoint,
    hub: Arc<Hub>,
    stop: watch::Receiver<bool>,
) -> io::Result<()> {
    match endpoint {
        Endpoint::Fd(n, stream) => {
            let name = format!("fd:{n}");
            let stream = stream
                .set_nonblocking(true)
                .and_then(|()| UnixStream::from_std(stream));
            let end = match stream {
                Ok(stream) => converse(stream, &hub, stop).await,
                Err(error) => End::Closed(Some(error)),
            };
            if let Some(why) = end.why() {
                tracing::warn!(decider = %name, "decider socket {why}; no decider from now on");
            }
        }
        Endpoint::Unix(path) => reconnect(path, &hub, stop).await,
    }
    Ok(())
}

/// Connects to `path` again and again (a decider may restart) until `stop`. Warns once per
/// outage; while a decider keeps failing, the waits grow to `MAX_RETRY`.
async fn reconnect(path: PathBuf, hub: &Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let name = format!("unix:{}", path.display());
    let mut retry = FIRST_RETRY;
    let mut quiet = false;
    loop {
        let connect = tokio::time::timeout(CONNECT_TIMEOUT, UnixStream::connect(&path));
        let connected = tokio::select! {
            connected = connect => connected,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        match connected {
            Ok(Ok(stream)) if !same_user(&stream) => complain(
                &mut quiet,
                &name,
                "refused: the process listening there runs as another user (a decider answers \
                 for the person running leash; anyone could bind a socket in a shared directory)",
            ),
            Ok(Ok(stream)) => {
                tracing::info!(decider = %name, "decider connected");
                let since = Instant::now();
                let end = converse(stream, hub, stop.clone()).await;
                let Some(why) = end.why() else { return };
                if since.elapsed() >= STEADY {
                    (retry, quiet) = (FIRST_RETRY, false);
                }
                complain(
                    &mut quiet,
                    &name,
                    &format!("decider socket {why}; reconnecting"),
                );
            }
            Ok(Err(error)) => complain(&mut quiet, &name, &format!("cannot connect: {error}")),
            Err(_) => complain(&mut quiet, &name, "cannot connect: timed out"),
        }
        tokio::select! {
            () = tokio::time::sleep(retry) => {}
            _ = stop.wait_for(|stop| *stop) => return,
        }
        retry = (retry * 2).min(MAX_RETRY);
    }
}

/// Whether the process listening on `stream` runs as leash's own user (or root, who can be
/// anyone anyway): only such a decider may answer for the person running leash.
fn same_user(stream: &UnixStream) -> bool {
    let ours = rustix::process::geteuid().as_raw();
    stream
        .peer_cred()
        .is_ok_and(|peer| peer.uid() == ours || peer.uid() == 0)
}

/// The first trouble of an outage is a warning; the rest, until a steady connection, debug.
fn complain(quiet: &mut bool, name: &str, what: &str) {
    match std::mem::replace(quiet, true) {
        false => tracing::warn!(decider = %name, "{what} (further trouble logged at debug)"),
        true => tracing::debug!(decider = %name, "{what}"),
    }
}

/// How a connection ended.
#[derive(Debug)]
enum End {
    /// The decider closed it, or reading or writing failed.
    Closed(Option<io::Error>),
    /// The decider did not read what leash wrote.
    NotReading,
    /// leash is stopping.
    Stopped,
}

impl End {
    /// What to log; `None` when leash is stopping.
    fn why(&self) -> Option<String> {
        match self {
            End::Closed(None) => Some("closed by the decider".to_owned()),
            End::Closed(Some(error)) => Some(format!("failed: {error}")),
            End::NotReading => Some(format!(
                "dropped: the decider did not read for {WRITE_STALL:?} (or {MAX_QUEUED} bytes waited)"
            )),
            End::Stopped => None,
        }
    }
}

/// One connection: present as an approver while it lasts.
async fn converse(mut stream: UnixStream, hub: &Arc<Hub>, mut stop: watch::Receiver<bool>) -> End {
    let mut session = Session::new(Approver::new(hub.clone()));
    let (mut reader, mut writer) = stream.split();
    let mut lines = Lines::default();
    let mut chunk = [0u8; 8192];
    let mut stall = tokio::time::Instant::now() + WRITE_STALL;
    loop {
        if session.out.is_empty() {
            stall = tokio::time::Instant::now() + WRITE_STALL;
        } else if session.out.len() > MAX_QUEUED {
            return End::NotReading;
        }
        tokio::select! {
            read = reader.read(&mut chunk) => match read {
                Ok(0) => return End::Closed(None),
                Ok(n) => lines.push(&chunk[..n], |line| session.on_line(line)),
                Err(error) => return End::Closed(Some(error)),
            },
            () = session.approver.changed() => session.sync(),
            written = writer.write(&session.out), if !session.out.is_empty() => match written {
                Ok(0) => return End::Closed(None),
                Ok(n) => {
                    session.out.drain(..n);
                    stall = tokio::time::Instant::now() + WRITE_STALL;
                }
                Err(error) => return End::Closed(Some(error)),
            },
            () = tokio::time::sleep_until(stall), if !session.out.is_empty() => return End::NotReading,
            _ = stop.wait_for(|stop| *stop) => return End::Stopped,
        }
    }
}

/// What one connection knows: the items it was told about, what waits to be written, whether
/// it has been warned about already.
struct Session {
    approver: Approver,
    /// Items told and not yet answered by this decider nor withdrawn.
    told: BTreeSet<u64>,
    /// The newest item ever told: an answer for an older one that is gone came late, not wrong.
    newest_told: u64,
    out: Vec<u8>,
    warned: bool,
}

impl Session {
    fn new(approver: Approver) -> Session {
        let mut session = Session {
            approver,
            told: BTreeSet::new(),
            newest_told: 0,
            out: Vec::new(),
            warned: false,
        };
        session.send(Message::Hello);
        session.sync();
        session
    }

    fn send(&mut self, message: Message<'_>) {
        let line = Outgoing {
            v: VERSION,
            message,
        };
        // Plain strings and numbers: serialising cannot fail.
        let _ = serde_json::to_writer(&mut self.out, &line);
        self.out.push(b'\n');
    }

    /// Tells the decider about new items and the ones that ended without its answer.
    fn sync(&mut self) {
        let items = self.approver.pending();
        let now: BTreeSet<u64> = items.iter().map(|item| item.id).collect();
        let ended: Vec<u64> = self.told.difference(&now).copied().collect();
        for id in ended {
            self.told.remove(&id);
            self.send(Message::Withdrawn { id });
        }
        // Ids only grow: an item newer than every one told is new.
        let newest = self.newest_told;
        for item in items.iter().filter(|item| item.id > newest) {
            self.told.insert(item.id);
            self.newest_told = item.id;
            self.send(Message::Ask(item.into()));
        }
    }

    fn on_line(&mut self, line: Line) {
        let reply = match line {
            Line::Text(text) if text.iter().all(u8::is_ascii_whitespace) => return,
            Line::Text(text) => serde_json::from_slice::<Reply>(&text),
            Line::Oversize => return self.warn(&format!("a line longer than {MAX_LINE} bytes")),
        };
        match reply {
            Ok(reply) => self.on_reply(reply),
            Err(error) => self.warn(&format!("a line that is not an answer ({error})")),
        }
    }

    fn on_reply(&mut self, reply: Reply) {
        let answer = match reply.answer {
            ReplyAnswer::Allow => AskAnswer::Allow,
            ReplyAnswer::Deny => AskAnswer::Deny,
            // Left to the other approvers, or to `ask.hold`.
            ReplyAnswer::Ask => return,
        };
        if reply.id > self.newest_told {
            return self.warn(&format!("an answer for item {}, never asked", reply.id));
        }
        let scope = reply.scope.unwrap_or(AskScope::Once);
        match self
            .approver
            .answer(reply.id, answer, scope, ApprovedBy::Decider)
        {
            Ok(_) => {
                self.told.remove(&reply.id);
            }
            Err(error) => self.on_refused(reply.id, error),
        }
    }

    fn on_refused(&mut self, id: u64, error: ControlError) {
        match error {
            // Answered, withdrawn or timed out meanwhile: the decider was late, not wrong.
            ControlError::Answer(AnswerError::Gone) => {
                tracing::debug!(id, "decider answered an item that is gone");
            }
            ControlError::Answer(AnswerError::AttemptNotBound) => {
                self.warn(&format!("an answer for item {id}: {error}"));
            }
            // The item was answered; keeping an `always` answer failed (names the file).
            ControlError::Approvals(_) => tracing::warn!(id, "decider answer: {error}"),
            ControlError::EmbeddersEngine
            | ControlError::NoConfigFile
            | ControlError::Config(_)
            | ControlError::Rule(_)
            | ControlError::Policy(_)
            | ControlError::AttemptsNotBound
            | ControlError::Bind(_)
            | ControlError::AttemptRequest(_)
            | ControlError::NoSuchAttempt(_) => tracing::warn!(id, "decider answer: {error}"),
        }
    }

    /// A line that answers nothing: warned about once per connection, then at debug.
    fn warn(&mut self, what: &str) {
        match std::mem::replace(&mut self.warned, true) {
            false => tracing::warn!(
                "decider socket sent {what}; it answers nothing (further bad lines logged at debug)"
            ),
            true => tracing::debug!("decider socket sent {what}"),
        }
    }
}

/// One line leash writes: the version first, then what it says.
#[derive(Debug, Serialize)]
struct Outgoing<'a> {
    v: u8,
    #[serde(flatten)]
    message: Message<'a>,
}

#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Message<'a> {
    Hello,
    Ask(Ask<'a>),
    /// An item told about ended without this decider's answer.
    Withdrawn {
        id: u64,
    },
}

/// A pending item as the decider sees it (`waiting` changes, so it is not sent).
#[derive(Debug, Serialize)]
struct Ask<'a> {
    id: u64,
    host: &'a str,
    port: u16,
    protocol: Protocol,
    method: &'a str,
    path: Option<&'a str>,
    attempt: Option<&'a str>,
    since: u64,
    event: u64,
}

impl<'a> From<&'a PendingItem> for Ask<'a> {
    fn from(item: &'a PendingItem) -> Ask<'a> {
        Ask {
            id: item.id,
            host: &item.host,
            port: item.port,
            protocol: item.protocol,
            method: &item.method,
            path: item.path.as_deref(),
            attempt: item.attempt.as_deref(),
            since: item.since,
            event: item.event,
        }
    }
}

/// A decider's answer line; other fields (such as `v`) are ignored.
#[derive(Debug, Deserialize)]
struct Reply {
    id: u64,
    answer: ReplyAnswer,
    #[serde(default)]
    scope: Option<AskScope>,
}

#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(rename_all = "lowercase")]
enum ReplyAnswer {
    Allow,
    Deny,
    Ask,
}

/// One line read from the decider.
#[derive(Debug, PartialEq, Eq)]
enum Line {
    Text(Vec<u8>),
    /// Longer than `MAX_LINE`: skipped to its newline, reported once.
    Oversize,
}

/// Splits what the decider sends into lines of at most `MAX_LINE` bytes.
#[derive(Debug, Default)]
struct Lines {
    partial: Vec<u8>,
    skipping: bool,
}

impl Lines {
    fn push(&mut self, bytes: &[u8], mut each: impl FnMut(Line)) {
        for piece in bytes.split_inclusive(|b| *b == b'\n') {
            let (body, ends) = match piece.strip_suffix(b"\n") {
                Some(body) => (body, true),
                None => (piece, false),
            };
            if !self.skipping && self.partial.len() + body.len() > MAX_LINE {
                self.partial.clear();
                self.skipping = true;
                each(Line::Oversize);
            } else if !self.skipping {
                self.partial.extend_from_slice(body);
            }
            // A line ends: it is handed on unless it was being skipped.
            if ends && !std::mem::replace(&mut self.skipping, false) {
                each(Line::Text(std::mem::take(&mut self.partial)));
            }
        }
    }
}

#[cfg(test)]
mod tests;
