//! The terminal prompt (SPEC §14) of `leash exec --ask` and `leash approve`: one question per
//! pending item, asked on the controlling terminal (`/dev/tty`), answered by one key.
//!
//! The terminal is opened on its own, never through the command's stdin/stdout, which stay the
//! command's: its output is never mixed with a prompt. What is shown of a request (host, method,
//! path, attempt) comes from the policed program, so every byte outside printable ASCII is
//! escaped: a path must not be able to move the cursor and rewrite the question.
//! Where the items come from and where the answers go is the `Approvals` trait: leash's own
//! `Approver` in `leash exec`, a running proxy's admin API in `leash approve`.

use std::{
    collections::BTreeSet,
    fs::File,
    io,
    os::fd::{AsFd, BorrowedFd},
    sync::{Arc, Mutex},
};

use anyhow::Context;
use leash::{AnswerError, ApprovedBy, AskAnswer, AskScope, ControlError, PendingItem};
use policy::Protocol;
use rustix::{
    fs::{Mode, OFlags},
    termios::{
        tcflush, tcgetattr, tcsetattr, LocalModes, OptionalActions, QueueSelector,
        SpecialCodeIndex, Termios,
    },
};
use tokio::net::unix::pipe;

/// The longest path shown; a longer one is cut (the person decides on the host anyway).
const MAX_PATH_SHOWN: usize = 120;

/// Where the prompt's items come from and where its answers go.
pub(crate) trait Approvals {
    /// The items pending now, oldest first: at once on the first call, then once the list may
    /// have changed (or a bounded while passed). Cancel-safe: it runs inside `select!`.
    async fn changed(&mut self) -> anyhow::Result<Vec<PendingItem>>;

    /// Answers item `id` as the terminal. `Err` only when the source itself is broken.
    async fn answer(
        &mut self,
        id: u64,
        answer: AskAnswer,
        scope: AskScope,
    ) -> anyhow::Result<Answered>;
}

/// What became of an answer.
#[derive(Debug)]
pub(crate) enum Answered {
    Done,
    /// Answered elsewhere, withdrawn or timed out before this answer.
    Gone,
    /// Refused (the message says why), e.g. an `always` that could not be saved.
    Refused(String),
}

/// The controlling terminal, opened apart from the command's stdin/stdout.
#[derive(Debug)]
pub(crate) struct Terminal(File);

impl Terminal {
    /// Opens `/dev/tty`; fails without a controlling terminal (`setsid`, a service, CI).
    pub(crate) fn open() -> anyhow::Result<Terminal> {
        // Its own open file: non-blocking here does not make the command's stdin non-blocking.
        let flags = OFlags::RDWR | OFlags::NOCTTY | OFlags::CLOEXEC | OFlags::NONBLOCK;
        let fd = rustix::fs::open("/dev/tty", flags, Mode::empty())
            .context("opening the controlling terminal /dev/tty")?;
        tcgetattr(&fd).context("/dev/tty is not a terminal")?;
        Ok(Terminal(File::from(fd)))
    }
}

/// Asks about every pending item of `approvals`, one after another, until the source fails or
/// the terminal goes away. Dropping the future restores the terminal's mode.
pub(crate) async fn run(terminal: Terminal, mut approvals: impl Approvals) -> anyhow::Result<()> {
    let tty = Tty::new(terminal.0).context("watching /dev/tty")?;
    // Items already asked about: a source's list may still show one just answered.
    let mut asked = BTreeSet::new();
    let mut items = approvals.changed().await?;
    loop {
        asked.retain(|id| items.iter().any(|i| i.id == *id));
        let Some(item) = items.iter().find(|i| !asked.contains(&i.id)).cloned() else {
            items = approvals.changed().await?;
            continue;
        };
        asked.insert(item.id);
        items = match ask(&tty, &mut approvals, &item).await? {
            Some(fresh) => fresh,
            None => approvals.changed().await?,
        };
    }
}

/// One question, until a valid key or until the item goes away; the list as it last came when
/// that is how the question ended (the next question must not wait for another change).
async fn ask(
    tty: &Tty,
    approvals: &mut impl Approvals,
    item: &PendingItem,
) -> anyhow::Result<Option<Vec<PendingItem>>> {
    let mut mode = tty.cbreak()?;
    let question = question(item);
    tty.say(&question).await?;
    let gone = format!("\nleash: {} {GONE}\n", place(item));
    let (note, fresh) = loop {
        tokio::select! {
            key = tty.key() => {
                let Some((answer, scope, said)) = choice(key?) else {
                    tty.say(&format!("\n{question}")).await?;
                    continue;
                };
                let note = match approvals.answer(item.id, answer, scope).await? {
                    Answered::Done => format!("{said}\n"),
                    Answered::Gone => gone,
                    Answered::Refused(why) => format!("\nleash: not answered: {}\n", printable(&why)),
                };
                break (note, None);
            }
            items = approvals.changed() => {
                let items = items?;
                if !items.iter().any(|i| i.id == item.id) {
                    break (gone, Some(items));
                }
            }
        }
    };
    tty.say(&note).await?;
    mode.line_open = false;
    Ok(fresh)
}

const GONE: &str = "was answered elsewhere, withdrawn or timed out";

/// A key's answer and scope, and what is written after the question. `d` denies `once`: the
/// person sees every request here, so the next one is asked again rather than refused unseen.
fn choice(key: u8) -> Option<(AskAnswer, AskScope, &'static str)> {
    match key.to_ascii_lowercase() {
        b'o' => Some((AskAnswer::Allow, AskScope::Once, "allowed once")),
        b's' => Some((
            AskAnswer::Allow,
            AskScope::Session,
            "allowed for this session",
        )),
        b'a' => Some((AskAnswer::Allow, AskScope::Always, "allowed always")),
        b'd' => Some((AskAnswer::Deny, AskScope::Once, "denied")),
        _ => None,
    }
}

/// `leash: allow HOST:PORT (HOW, attempt A)? [o]nce [s]ession [a]lways [d]eny > `.
fn question(item: &PendingItem) -> String {
    let how = match item.protocol {
        Protocol::Http | Protocol::Https => match &item.path {
            Some(path) => format!("{} {}", printable(&item.method), shorten(path)),
            None => printable(&item.method),
        },
        Protocol::Connect => "CONNECT".to_owned(),
        Protocol::Socks5 => "SOCKS5".to_owned(),
        Protocol::Socks5Udp => "SOCKS5 UDP".to_owned(),
    };
    let attempt = item
        .attempt
        .as_deref()
        .map_or(String::new(), |a| format!(", attempt {}", printable(a)));
    format!(
        "leash: allow {} ({how}{attempt})? [o]nce [s]ession [a]lways [d]eny > ",
        place(item)
    )
}

/// `host:port`, brackets around an IPv6 address.
fn place(item: &PendingItem) -> String {
    let host = printable(&item.host);
    match host.contains(':') {
        true => format!("[{host}]:{}", item.port),
        false => format!("{host}:{}", item.port),
    }
}

fn shorten(path: &str) -> String {
    match path.char_indices().nth(MAX_PATH_SHOWN) {
        Some((cut, _)) => format!("{}...", printable(&path[..cut])),
        None => printable(path),
    }
}

/// `text` with everything but printable ASCII escaped (`\u{1b}`, `\n`, `\u{e9}`): nothing the
/// policed program chose reaches the terminal as a control sequence.
fn printable(text: &str) -> String {
    text.chars()
        .map(|c| match c.is_ascii_graphic() || c == ' ' {
            true => c.to_string(),
            false => c.escape_default().to_string(),
        })
        .collect()
}

/// The terminal, read and written through the runtime. tokio's pipe ends are its safe way to
/// drive any non-blocking descriptor it owns (a terminal included); `AsyncFd` needs `unsafe`.
struct Tty {
    keys: pipe::Receiver,
    screen: pipe::Sender,
    /// For the terminal's mode.
    modes: File,
}

impl Tty {
    fn new(terminal: File) -> io::Result<Tty> {
        Ok(Tty {
            keys: pipe::Receiver::from_file_unchecked(terminal.try_clone()?)?,
            screen: pipe::Sender::from_file_unchecked(terminal.try_clone()?)?,
            modes: terminal,
        })
    }

    fn fd(&self) -> BorrowedFd<'_> {
        self.modes.as_fd()
    }

    /// Keys arrive one by one, unechoed, until the guard drops. Signals (Ctrl-C) stay on. Keys
    /// typed before the question showed are dropped: they were meant for the command, and an `a`
    /// typed into it must not become an `always`.
    fn cbreak(&self) -> io::Result<Cbreak<'_>> {
        let saved = tcgetattr(self.fd())?;
        let mut keys = saved.clone();
        keys.local_modes
            .remove(LocalModes::ICANON | LocalModes::ECHO);
        keys.special_codes[SpecialCodeIndex::VMIN] = 1;
        keys.special_codes[SpecialCodeIndex::VTIME] = 0;
        tcsetattr(self.fd(), OptionalActions::Now, &keys)?;
        let guard = Cbreak {
            fd: self.fd(),
            saved,
            line_open: true,
        };
        tcflush(self.fd(), QueueSelector::IFlush)?;
        Ok(guard)
    }

    /// The next key (the first byte of what arrives; the rest of a burst is dropped).
    /// Cancel-safe: nothing is read until the terminal has input.
    async fn key(&self) -> io::Result<u8> {
        let mut buf = [0u8; 64];
        loop {
            self.keys.readable().await?;
            match self.keys.try_read(&mut buf) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(_) => return Ok(buf[0]),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error),
            }
        }
    }

    async fn say(&self, text: &str) -> anyhow::Result<()> {
        let mut rest = text.as_bytes();
        while !rest.is_empty() {
            self.screen.writable().await?;
            match self.screen.try_write(rest) {
                Ok(written) => rest = &rest[written..],
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Err(error).context("writing to /dev/tty"),
            }
        }
        Ok(())
    }
}

/// The terminal's mode before the question, put back on drop (answer, cancel, panic).
struct Cbreak<'a> {
    fd: BorrowedFd<'a>,
    saved: Termios,
    /// The question's line is not ended yet: a cancelled question ends it, so what is written
    /// next (the summary, the shell's prompt) starts on a line of its own.
    line_open: bool,
}

impl Drop for Cbreak<'_> {
    fn drop(&mut self) {
        let _ = tcsetattr(self.fd, OptionalActions::Now, &self.saved);
        if self.line_open {
            let _ = rustix::io::write(self.fd, b"\n");
        }
    }
}

/// The approver inside `leash exec`: the proxy's own pending list.
#[derive(Debug)]
pub(crate) struct InProcess {
    approver: leash::Approver,
    started: bool,
    opened: Opened,
}

/// The logged asks (their `seq`) that opened the pending items seen here. Each held request's
/// own end is logged apart (declined or timed out as a block, approved not at all), so these
/// lines are not blocks of their own.
pub(crate) type Opened = Arc<Mutex<BTreeSet<u64>>>;

impl InProcess {
    pub(crate) fn new(approver: leash::Approver) -> InProcess {
        InProcess {
            approver,
            started: false,
            opened: Opened::default(),
        }
    }

    /// The asks that opened the items seen, as they grow.
    pub(crate) fn opened(&self) -> Opened {
        self.opened.clone()
    }
}

impl Approvals for InProcess {
    async fn changed(&mut self) -> anyhow::Result<Vec<PendingItem>> {
        if std::mem::replace(&mut self.started, true) {
            self.approver.changed().await;
        }
        let items = self.approver.pending();
        let mut opened = self.opened.lock().unwrap_or_else(|p| p.into_inner());
        opened.extend(items.iter().map(|i| i.event));
        Ok(items)
    }

    async fn answer(
        &mut self,
        id: u64,
        answer: AskAnswer,
        scope: AskScope,
    ) -> anyhow::Result<Answered> {
        Ok(
            match self
                .approver
                .answer(id, answer, scope, ApprovedBy::Terminal)
            {
                Ok(_) => Answered::Done,
                Err(ControlError::Answer(AnswerError::Gone)) => Answered::Gone,
                Err(refused) => Answered::Refused(refused.to_string()),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(protocol: Protocol, host: &str, method: &str, path: Option<&str>) -> PendingItem {
        PendingItem {
            id: 1,
            host: host.to_owned(),
            port: 443,
            protocol,
            method: method.to_owned(),
            path: path.map(str::to_owned),
            attempt: Some("exec-1f2e".to_owned()),
            waiting: 1,
            since: 0,
            event: 1,
        }
    }

    #[test]
    fn the_question_names_the_request() {
        let asked = |protocol, host, method, path| question(&item(protocol, host, method, path));
        assert_eq!(
            asked(Protocol::Connect, "api.example.com", "CONNECT", None),
            "leash: allow api.example.com:443 (CONNECT, attempt exec-1f2e)? \
             [o]nce [s]ession [a]lways [d]eny > "
        );
        assert!(asked(Protocol::Https, "a.test", "POST", Some("/v1/x?y=1"))
            .starts_with("leash: allow a.test:443 (POST /v1/x?y=1, attempt exec-1f2e)?"));
        assert!(asked(Protocol::Socks5, "::1", "CONNECT", None)
            .starts_with("leash: allow [::1]:443 (SOCKS5, "));
    }

    #[test]
    fn nothing_the_program_chose_reaches_the_terminal_as_a_control_sequence() {
        let path = "/\x1b[2K\r\u{9b}leash: allow good.test? \x07\n\u{e9}";
        let shown = question(&item(Protocol::Http, "a.test", "GET\x1b", Some(path)));
        assert!(
            shown.bytes().all(|b| b == b' ' || b.is_ascii_graphic()),
            "{shown:?}"
        );
        assert!(
            shown.contains(r"GET\u{1b} /\u{1b}[2K\r\u{9b}leash"),
            "{shown}"
        );
        let long = format!("/{}", "x".repeat(1000));
        let shown = question(&item(Protocol::Http, "a.test", "GET", Some(&long)));
        assert!(shown.len() < 300 && shown.contains("x..."), "{shown}");
    }

    #[test]
    fn keys_answer_and_anything_else_asks_again() {
        let answered = |key| choice(key).map(|(a, s, _)| (a, s));
        assert_eq!(answered(b'o'), Some((AskAnswer::Allow, AskScope::Once)));
        assert_eq!(answered(b'S'), Some((AskAnswer::Allow, AskScope::Session)));
        assert_eq!(answered(b'a'), Some((AskAnswer::Allow, AskScope::Always)));
        assert_eq!(answered(b'd'), Some((AskAnswer::Deny, AskScope::Once)));
        for other in [b'x', b'\r', b'\n', b' ', 0x1b, 0x03, b'y'] {
            assert_eq!(answered(other), None, "{other}");
        }
    }
}
