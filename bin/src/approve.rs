//! `leash approve --ready-file F` (SPEC §14): the terminal prompt of `leash exec --ask`, in a second
//! terminal, for a running `leash proxy`. It finds the admin API and its token through the ready
//! record (as `leash env --bind` does), long-polls `GET /pending`, which makes it a present
//! approver, and answers `POST /pending/{id}` with `"by":"terminal"`.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::{bail, Context};
use clap::Args;
use leash::{AskAnswer, AskScope, PendingItem};
use serde_json::{json, Value};
use tokio::{
    signal::unix::{signal, SignalKind},
    task::JoinHandle,
};

use crate::{
    admin_call,
    prompt::{self, Answered, Approvals, Terminal},
    Exit,
};

/// How long one poll waits with nothing pending (under `admin_call`'s timeout, and well inside
/// the 10 s a poller counts as present after its poll).
const IDLE_WAIT: u64 = 8;
/// How long one poll waits while items are pending: how soon an item answered elsewhere is seen
/// (a long poll only returns early for a new item).
const BUSY_WAIT: u64 = 2;
/// The token variable, for a proxy whose token is configured rather than generated in a file.
const ADMIN_TOKEN_VAR: &str = "LEASH_ADMIN_TOKEN";

#[derive(Debug, Args)]
pub(crate) struct ApproveArgs {
    /// The running proxy's ready record (`leash proxy --ready-file`), which names its admin API
    /// and the admin token file (else the token is taken from $LEASH_ADMIN_TOKEN).
    #[arg(long, value_name = "FILE")]
    ready_file: PathBuf,
}

pub(crate) fn run(args: ApproveArgs) -> Exit {
    match approve(args) {
        Ok(()) => Exit::Ok,
        Err(error) => {
            eprintln!("leash: {error:#}");
            Exit::Usage
        }
    }
}

fn approve(args: ApproveArgs) -> anyhow::Result<()> {
    let proxy = crate::env_cmd::read_ready(&args.ready_file)?;
    let Some((admin, token_file)) = proxy.admin else {
        bail!(
            "the ready record {} names no admin API: run the proxy with [admin] enabled = true",
            args.ready_file.display()
        );
    };
    let token = match admin_call::read_token(token_file.as_deref())? {
        Some(token) => Some(token),
        None => std::env::var(ADMIN_TOKEN_VAR)
            .ok()
            .filter(|t| !t.is_empty()),
    };
    let terminal = Terminal::open().context("leash approve asks on a terminal, and has none")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let mut approvals = OverHttp::new(admin, token);
        // The first poll says whether the proxy is there, before anything is shown.
        let first = approvals.changed().await?;
        eprintln!("leash: answering the asks of the proxy at http://{admin} (Ctrl-C to stop)");
        approvals.first = Some(first);
        until_signal(prompt::run(terminal, approvals)).await
    })
}

/// Runs `prompt` until it fails or a signal arrives; dropping it puts the terminal's mode back.
async fn until_signal(
    prompt: impl std::future::Future<Output = anyhow::Result<()>>,
) -> anyhow::Result<()> {
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    let mut hangup = signal(SignalKind::hangup())?;
    tokio::select! {
        result = prompt => result,
        _ = interrupt.recv() => Ok(()),
        _ = terminate.recv() => Ok(()),
        _ = hangup.recv() => Ok(()),
    }
}

/// A running proxy's pending items, through its admin API.
#[derive(Debug)]
struct OverHttp {
    admin: SocketAddr,
    token: Option<String>,
    /// The newest item id seen (`since` of the next poll).
    next: u64,
    /// The next poll returns at once (after an answer, the list is news).
    now: bool,
    busy: bool,
    /// A poll in flight, kept when `changed` is cancelled so the next call picks it up.
    poll: Option<JoinHandle<anyhow::Result<(u16, Value)>>>,
    /// The list the first poll saw, handed out by the first `changed`.
    first: Option<Vec<PendingItem>>,
}

impl OverHttp {
    fn new(admin: SocketAddr, token: Option<String>) -> OverHttp {
        OverHttp {
            admin,
            token,
            next: 0,
            now: true,
            busy: false,
            poll: None,
            first: None,
        }
    }

    fn start_poll(&mut self) -> JoinHandle<anyhow::Result<(u16, Value)>> {
        let wait = match (self.now, self.busy) {
            (true, _) => 0,
            (false, true) => BUSY_WAIT,
            (false, false) => IDLE_WAIT,
        };
        self.now = false;
        let path = format!("/pending?since={}&wait={wait}", self.next);
        let (admin, token) = (self.admin, self.token.clone());
        tokio::task::spawn_blocking(move || admin_call::get(admin, &path, token.as_deref()))
    }

    /// The items of one `GET /pending` answer; `None` for a `429` (too many long polls: retry).
    fn items(&mut self, status: u16, mut page: Value) -> anyhow::Result<Option<Vec<PendingItem>>> {
        match status {
            200 => {}
            429 => return Ok(None),
            401 => bail!("the admin API refused the token (the ready record's token file, else ${ADMIN_TOKEN_VAR})"),
            _ => bail!("GET /pending answered {status}: {}", error_of(&page)),
        }
        let items: Vec<PendingItem> = serde_json::from_value(page["pending"].take())
            .context("the admin API's pending list")?;
        self.next = page["next"].as_u64().unwrap_or(self.next);
        self.busy = !items.is_empty();
        Ok(Some(items))
    }
}

fn error_of(answer: &Value) -> &str {
    answer["error"].as_str().unwrap_or("no error message")
}

impl Approvals for OverHttp {
    async fn changed(&mut self) -> anyhow::Result<Vec<PendingItem>> {
        if let Some(first) = self.first.take() {
            return Ok(first);
        }
        loop {
            if self.poll.is_none() {
                self.poll = Some(self.start_poll());
            }
            let Some(poll) = self.poll.as_mut() else {
                continue;
            };
            let polled = poll.await;
            self.poll = None;
            let (status, page) = polled.context("the poll's thread")?.with_context(|| {
                format!(
                    "polling the admin API at http://{} (is the proxy running?)",
                    self.admin
                )
            })?;
            match self.items(status, page)? {
                Some(items) => return Ok(items),
                None => tokio::time::sleep(Duration::from_secs(1)).await,
            }
        }
    }

    async fn answer(
        &mut self,
        id: u64,
        answer: AskAnswer,
        scope: AskScope,
    ) -> anyhow::Result<Answered> {
        self.now = true;
        let body = json!({ "answer": answer, "scope": scope, "by": "terminal" }).to_string();
        let (admin, token) = (self.admin, self.token.clone());
        let path = format!("/pending/{id}");
        let (status, reply) = tokio::task::spawn_blocking(move || {
            admin_call::post(admin, &path, token.as_deref(), &body)
        })
        .await
        .context("the answer's thread")?
        .with_context(|| format!("answering through the admin API at http://{admin}"))?;
        Ok(match status {
            200 => Answered::Done,
            404 => Answered::Gone,
            _ => Answered::Refused(format!("{status}: {}", error_of(&reply))),
        })
    }
}
