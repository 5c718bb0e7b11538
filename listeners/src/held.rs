//! Held requests (SPEC §14): an `ask` that someone can answer waits here, merged with every other
//! ask for the same (attempt, host, port, protocol) into one pending item, until an answer, a
//! policy change, the client leaving, or `ask.hold`. Every approver answers through `Pending`:
//! admin long polls (`GET /pending`, `POST /pending/{id}`) and the embedder's `Decider` alike.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    pin::Pin,
    sync::{Arc, Mutex, MutexGuard},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use policy::{
    Answer, AnswerEvent, ApprovedBy, AskAnswer, AskContext, AskScope, Decider, Decision,
    DecisionEvent, DecisionSink, EventId, Held, Hold, Holder, PolicyEngine, Protocol, Request,
    RequestShape, Rule, Target, Verdict, APPROVED_BY,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

/// A poller counts as present this long after its last `GET /pending` ended (SPEC §14).
const POLLER_GRACE: Duration = Duration::from_secs(10);

/// The most pending items one client (its attempt, else its address) may have open: past it, an
/// ask is refused at once. A program must not bury a person's real question under junk ones, nor
/// hold the connection limit for `ask.hold`.
pub const MAX_ITEMS_PER_CLIENT: usize = 32;

/// The most pending items at once, whoever asks.
pub const MAX_ITEMS: usize = 1024;

/// The longest path an item keeps (what a person is shown; the program chose it).
const MAX_SHOWN_PATH: usize = 1024;

/// One pending item as `GET /pending` shows it (and `leash approve` reads it back).
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PendingItem {
    /// Its id, for `POST /pending/{id}`.
    pub id: u64,
    /// The canonical host.
    pub host: String,
    /// The port.
    pub port: u16,
    /// How the first request arrived.
    pub protocol: Protocol,
    /// The first request's method.
    pub method: String,
    /// The first request's path (HTTP and MITM only).
    pub path: Option<String>,
    /// The attempt id, if any.
    pub attempt: Option<String>,
    /// How many requests wait for this answer.
    pub waiting: usize,
    /// When it started waiting (seconds since the epoch).
    pub since: u64,
    /// The logged ask (its `seq`); the answer line names it.
    pub event: u64,
}

/// Why `Pending::answer` answered nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum AnswerError {
    /// No such item: answered already, withdrawn, or never there.
    #[error("no pending item with that id (answered, withdrawn or timed out)")]
    Gone,
    /// `attempt` needs bound attempts (SPEC §18): a free-form attempt id is a label any client can
    /// claim, so an approval for it would be an approval for everyone.
    #[error("scope attempt needs auth.attempts = \"bound\" and an ask made on a bound attempt")]
    AttemptNotBound,
}

/// A `session` or `attempt` answer that later asks of the same host and port get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RememberedAnswer {
    /// The canonical host.
    pub host: String,
    /// The port.
    pub port: u16,
    /// What they get.
    pub answer: AskAnswer,
}

/// What answers asks without asking anyone (`Pending::remembered`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Remembered {
    /// `session` answers, until leash exits.
    pub session: Vec<RememberedAnswer>,
    /// `attempt` answers, by attempt id, until the attempt ends.
    pub by_attempt: Vec<(String, RememberedAnswer)>,
    /// Bound attempts' own allow rules, by attempt id.
    pub attempt_rules: Vec<(String, Rule)>,
}

/// Counts for `/metrics`.
#[derive(Clone, Debug, Default)]
pub struct PendingCounts {
    /// Requests held.
    pub held: u64,
    /// Requests that waited `ask.hold` and were refused.
    pub timed_out: u64,
    /// Answers given, by answer, scope and approver.
    pub answered: Vec<((AskAnswer, AskScope, ApprovedBy), u64)>,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
struct Key {
    attempt: Option<String>,
    host: String,
    port: u16,
    protocol: Protocol,
}

/// What a held request is decided again with after a policy change (the whole request, shape
/// included, so limited mode sees what it saw the first time).
#[derive(Debug)]
struct Asked {
    target: Target,
    method: String,
    protocol: Protocol,
    has_body: bool,
    upgrade: bool,
    overrides: Vec<String>,
}

#[derive(Debug)]
struct Item {
    key: Key,
    /// Whose item it is, for `MAX_ITEMS_PER_CLIENT`: the attempt, else the client's address.
    owner: String,
    asked: Asked,
    path: Option<String>,
    since: u64,
    started: Instant,
    event: EventId,
    waiting: usize,
    outcome: watch::Sender<Option<Hold>>,
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    items: BTreeMap<u64, Item>,
    /// `session` answers, by host and port, until leash exits.
    session: HashMap<(String, u16), AskAnswer>,
    /// `attempt` answers, by attempt, host and port, until the attempt ends or leash exits.
    by_attempt: HashMap<(String, String, u16), AskAnswer>,
    /// The allow rules a bound attempt was created with (SPEC §18), until it ends.
    attempt_rules: HashMap<String, Vec<Rule>>,
    pollers: usize,
    last_poll: Option<Instant>,
    counts: PendingCounts,
    answered: HashMap<(AskAnswer, AskScope, ApprovedBy), u64>,
}

/// The pending asks and everything that answers them.
#[derive(Debug)]
pub struct Pending {
    hold: Duration,
    decider: Option<Arc<dyn Decider>>,
    /// Where asks are logged when held, and their answers.
    sink: Arc<dyn DecisionSink>,
    /// The live policy (its mode goes into the logged ask).
    engine: Arc<dyn PolicyEngine>,
    state: Mutex<State>,
    /// Bumped on every change of the list, for long polls.
    changed: watch::Sender<u64>,
    /// Attempts are bound (`auth.attempts = "bound"`), so an attempt id is proof, not a label.
    bound_attempts: bool,
}

impl Pending {
    /// Holds asks up to `hold`; `decider`, the embedder's, is one approver among the others.
    /// Held asks and their answers are logged to `sink`; `engine` is the live policy.
    pub fn new(
        hold: Duration,
        decider: Option<Arc<dyn Decider>>,
        sink: Arc<dyn DecisionSink>,
        engine: Arc<dyn PolicyEngine>,
    ) -> Pending {
        Pending {
            hold,
            decider,
            sink,
            engine,
            state: Mutex::default(),
            changed: watch::Sender::new(0),
            bound_attempts: false,
        }
    }

    /// Attempt ids are bound to secrets, so the `attempt` scope can be answered.
    pub fn with_bound_attempts(mut self) -> Pending {
        self.bound_attempts = true;
        self
    }

    /// An attempt ended (`DELETE /attempts/{id}`): its held requests get `ended` at once (an
    /// answer given later must not release a request whose credentials no longer pass), and its
    /// answers and rules are forgotten.
    pub fn end_attempt(&self, attempt: &str, ended: &Decision) {
        let mut state = self.state();
        let ids: Vec<u64> = (state.items.iter())
            .filter(|(_, item)| item.key.attempt.as_deref() == Some(attempt))
            .map(|(id, _)| *id)
            .collect();
        for id in &ids {
            if let Some(item) = state.items.remove(id) {
                self.log_answer(&item, ended.verdict(), None, ApprovedBy::Policy);
                item.outcome
                    .send_replace(Some(Hold::Redecided(ended.clone())));
            }
        }
        drop(state);
        self.forget_attempt(attempt);
        if !ids.is_empty() {
            self.bump();
        }
    }

    /// Forgets the `attempt` answers and allow rules of an ended attempt (its id may be bound
    /// again later, by someone else).
    pub fn forget_attempt(&self, attempt: &str) {
        let mut state = self.state();
        state.by_attempt.retain(|(a, _, _), _| a != attempt);
        state.attempt_rules.remove(attempt);
    }

    /// A newly bound attempt: what an earlier attempt of the same id was answered is forgotten,
    /// and `allow` (its own allow rules, SPEC §18) approves its asks that they match. They
    /// answer an `ask` only, as an approval does: deny rules, local protection, limited mode
    /// and the post-DNS check still apply. Only with bound attempts (else an id is a label).
    pub fn bind_attempt(&self, attempt: &str, allow: Vec<Rule>) {
        self.forget_attempt(attempt);
        if self.bound_attempts && !allow.is_empty() {
            self.state().attempt_rules.insert(attempt.to_owned(), allow);
        }
    }

    /// What answers asks without asking anyone: `session` and `attempt` answers and the
    /// attempts' allow rules, for `/patterns`' sources.
    pub fn remembered(&self) -> Remembered {
        let state = self.state();
        let answer = |host: &str, port: u16, answer: &AskAnswer| RememberedAnswer {
            host: host.to_owned(),
            port,
            answer: *answer,
        };
        let mut remembered = Remembered {
            session: (state.session.iter())
                .map(|((host, port), a)| answer(host, *port, a))
                .collect(),
            by_attempt: (state.by_attempt.iter())
                .map(|((attempt, host, port), a)| (attempt.clone(), answer(host, *port, a)))
                .collect(),
            attempt_rules: (state.attempt_rules.iter())
                .flat_map(|(attempt, rules)| rules.iter().map(|r| (attempt.clone(), r.clone())))
                .collect(),
        };
        // Maps iterate in no order; `/patterns` is read by people and compared by tests.
        remembered.session.sort_by_key(|a| (a.host.clone(), a.port));
        (remembered.by_attempt).sort_by_key(|(id, a)| (id.clone(), a.host.clone(), a.port));
        remembered
            .attempt_rules
            .sort_by_key(|(attempt, rule)| (attempt.clone(), rule.to_string()));
        remembered
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn bump(&self) {
        self.changed.send_modify(|version| *version += 1);
    }

    /// The items waiting now, oldest first.
    pub fn list(&self) -> Vec<PendingItem> {
        let state = self.state();
        state
            .items
            .iter()
            .map(|(id, item)| item.view(*id))
            .collect()
    }

    /// Changes of the list, for long polls.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// A `GET /pending` begins: an approver is present until `PollGuard` drops, and
    /// `POLLER_GRACE` after.
    pub fn poll(self: &Arc<Self>) -> PollGuard {
        self.state().pollers += 1;
        PollGuard(self.clone())
    }

    /// Counts for `/metrics`.
    pub fn counts(&self) -> PendingCounts {
        let state = self.state();
        let mut counts = state.counts.clone();
        counts.answered = state.answered.iter().map(|(k, v)| (*k, *v)).collect();
        counts
    }

    /// Answers item `id`: releases every request waiting for it, and for `session` remembers the
    /// answer for later asks of the same host and port.
    pub fn answer(
        &self,
        id: u64,
        answer: AskAnswer,
        scope: AskScope,
        by: ApprovedBy,
    ) -> Result<PendingItem, AnswerError> {
        match scope {
            // `always` releases like `once` here; the caller keeps the rule (the admin API
            // through `Control::approve_always`: the approvals file and the policy).
            AskScope::Once | AskScope::Session | AskScope::Always | AskScope::Attempt => {}
        }
        let mut state = self.state();
        let item = state.items.get(&id).ok_or(AnswerError::Gone)?;
        let attempt = match (scope, &item.key.attempt, self.bound_attempts) {
            (AskScope::Attempt, Some(attempt), true) => Some(attempt.clone()),
            (AskScope::Attempt, _, _) => return Err(AnswerError::AttemptNotBound),
            (AskScope::Once | AskScope::Session | AskScope::Always, _, _) => None,
        };
        let item = state.items.remove(&id).ok_or(AnswerError::Gone)?;
        let view = item.view(id);
        let place = (item.key.host.clone(), item.key.port);
        match (scope, attempt) {
            (AskScope::Session, _) => {
                state.session.insert(place, answer);
            }
            (AskScope::Attempt, Some(attempt)) => {
                state.by_attempt.insert((attempt, place.0, place.1), answer);
            }
            (AskScope::Once | AskScope::Always | AskScope::Attempt, _) => {}
        }
        *state.answered.entry((answer, scope, by)).or_default() += 1;
        drop(state);
        let (hold, verdict) = match answer {
            AskAnswer::Allow => (Hold::Approved, Verdict::Allow),
            AskAnswer::Deny => (Hold::Declined, Verdict::Deny),
        };
        self.log_answer(&item, verdict, Some(scope), by);
        item.outcome.send_replace(Some(hold));
        self.bump();
        Ok(view)
    }

    /// A policy change: every held request that the new policy no longer asks about is answered
    /// with the new decision at once (a deny rule added while it waits refuses it).
    pub fn redecide(&self, engine: &dyn PolicyEngine) {
        let mut state = self.state();
        let decided: Vec<(u64, Decision)> = state
            .items
            .iter()
            .filter_map(|(id, item)| {
                let decision = item.asked.decide(engine);
                (!matches!(decision, Decision::Ask(_))).then_some((*id, decision))
            })
            .collect();
        if decided.is_empty() {
            return;
        }
        for (id, decision) in decided {
            if let Some(item) = state.items.remove(&id) {
                self.log_answer(&item, decision.verdict(), None, ApprovedBy::Policy);
                item.outcome.send_replace(Some(Hold::Redecided(decision)));
            }
        }
        drop(state);
        self.bump();
    }

    /// The answer line (SPEC §14 "Log"), naming the logged ask.
    fn log_answer(&self, item: &Item, answer: Verdict, scope: Option<AskScope>, by: ApprovedBy) {
        self.sink.record_answer(&AnswerEvent {
            event: item.event,
            answer,
            scope,
            by,
            held_ms: millis(item.started.elapsed()),
        });
    }

    /// Logs the ask an item is opened for: its `seq` is what the answer line names.
    fn log_ask(&self, ask: &AskContext<'_>) -> EventId {
        let request = ask.request;
        self.sink.record(&DecisionEvent {
            decision: self.engine.decide(request),
            host: request.target.host().to_string(),
            port: request.target.port(),
            protocol: request.protocol,
            method: request.method.to_owned(),
            mode: self.engine.mode(),
            attempt: ask.attempt.map(str::to_owned),
            client: ask.client,
            path: ask.path.map(str::to_owned),
            held_ms: None,
        })
    }

    fn poller_present(&self) -> bool {
        poller_present(&self.state())
    }

    /// No person can answer: the embedder's `Decider`, if any, answers directly and nothing is
    /// held or listed (an `ask` from it, or no decider at all, is refused at once as before
    /// holding existed).
    async fn ask_decider_alone(&self, ask: &AskContext<'_>) -> Hold {
        let Some(decider) = self.decider.as_deref() else {
            return Hold::Unanswered;
        };
        let context = ask.clone();
        let (answer, hold) = match decider.decide(context).await {
            Answer::Allow => (AskAnswer::Allow, Hold::Approved),
            Answer::Deny => (AskAnswer::Deny, Hold::Declined),
            Answer::Ask => return Hold::Unanswered,
        };
        let key = (answer, AskScope::Once, ApprovedBy::Decider);
        *self.state().answered.entry(key).or_default() += 1;
        hold
    }

    /// Joins (or opens) the item for `ask`; `None` when nobody could answer it.
    fn join(&self, ask: &AskContext<'_>) -> Result<Waiter<'_>, Option<Hold>> {
        let key = Key::of(ask);
        let mut state = self.state();
        let for_attempt = key
            .attempt
            .as_ref()
            .filter(|_| self.bound_attempts)
            .and_then(|a| {
                state
                    .by_attempt
                    .get(&(a.clone(), key.host.clone(), key.port))
            });
        // A person's answers first (theirs for this attempt, then for the session), then the
        // attempt's own allow rules: a person's `deny` stands against them.
        let by_rule = || {
            let rules = key.attempt.as_ref().filter(|_| self.bound_attempts);
            let rules = rules.and_then(|a| state.attempt_rules.get(a))?;
            let host = ask.request.target.host();
            (rules.iter().any(|rule| rule.matches(host, key.port))).then_some(&AskAnswer::Allow)
        };
        let remembered = for_attempt
            .or_else(|| state.session.get(&(key.host.clone(), key.port)))
            .or_else(by_rule);
        match remembered {
            Some(AskAnswer::Allow) => return Err(Some(Hold::Approved)),
            Some(AskAnswer::Deny) => return Err(Some(Hold::Declined)),
            None => {}
        }
        if !poller_present(&state) {
            return Err(None);
        }
        let found = state.items.iter().any(|(_, item)| item.key == key);
        let owner = owner_of(ask);
        if !found && over_bounds(&state, &owner) {
            // Refused at once, as with nobody to ask (never the embedder's decider either: the
            // bound is what this client may make anyone look at).
            return Err(Some(Hold::Unanswered));
        }
        state.counts.held += 1;
        let found = state.items.iter_mut().find(|(_, item)| item.key == key);
        let (id, outcome, first) = match found {
            Some((id, item)) => {
                item.waiting += 1;
                (*id, item.outcome.subscribe(), false)
            }
            None => {
                state.next_id += 1;
                let id = state.next_id;
                let event = self.log_ask(ask);
                let (outcome, receiver) = watch::channel(None);
                let item = Item {
                    key,
                    owner,
                    asked: Asked::of(ask.request),
                    path: ask.path.map(shown_path),
                    since: SystemTime::now()
                        .duration_since(UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs()),
                    started: Instant::now(),
                    event,
                    waiting: 1,
                    outcome,
                };
                state.items.insert(id, item);
                (id, receiver, true)
            }
        };
        drop(state);
        self.bump();
        Ok(Waiter {
            pending: self,
            id,
            outcome,
            first,
            timed_out: false,
        })
    }

    async fn wait(&self, ask: AskContext<'_>) -> Held {
        let mut waiter = match self.join(&ask) {
            Ok(waiter) => waiter,
            Err(Some(remembered)) => return unheld(remembered),
            Err(None) => return unheld(self.ask_decider_alone(&ask).await),
        };
        let started = Instant::now();
        let answered = async {
            let decided = waiter.outcome.wait_for(Option::is_some).await;
            decided.ok().and_then(|hold| hold.clone())
        };
        let decider = self.ask_decider(&ask, waiter.id, waiter.first);
        let hold = tokio::select! {
            hold = answered => hold,
            // The embedder's decider kept the `ask` and nobody else can answer: as before holding.
            () = decider => return Held { hold: Hold::Unanswered, held_ms: None },
            () = tokio::time::sleep(self.hold) => None,
        };
        let held_ms = Some(millis(started.elapsed()));
        let hold = match hold {
            // Approved while it waited: decided on the policy in force now, not the snapshot its
            // request took before the wait (limited mode or a deny rule may have come meanwhile).
            Some(Hold::Approved) => Hold::Redecided(
                (self.engine.snapshot()).decide_approved(ask.request, Arc::from(APPROVED_BY)),
            ),
            Some(hold) => hold,
            None => {
                self.state().counts.timed_out += 1;
                waiter.timed_out = true;
                Hold::Unanswered
            }
        };
        drop(waiter);
        Held { hold, held_ms }
    }

    /// The embedder's `Decider` as one approver of a held item, asked once per item (by its first
    /// request), racing the people polling `/pending`; its answer answers the item. An `ask` from
    /// it leaves the item to them. Pends forever otherwise (the other branches decide).
    async fn ask_decider(&self, ask: &AskContext<'_>, id: u64, first: bool) {
        let Some(decider) = self.decider.as_deref().filter(|_| first) else {
            return std::future::pending().await;
        };
        let context = ask.clone();
        let answer = match decider.decide(context).await {
            Answer::Allow => AskAnswer::Allow,
            Answer::Deny => AskAnswer::Deny,
            Answer::Ask if self.poller_present() => return std::future::pending().await,
            // The people polling went away meanwhile: refused now, as with nobody to ask.
            Answer::Ask => return,
        };
        // Gone already (answered by someone else): that answer is on its way to the waiter.
        let _ = self.answer(id, answer, AskScope::Once, ApprovedBy::Decider);
        std::future::pending().await
    }
}

impl Holder for Pending {
    fn hold<'a>(&'a self, ask: AskContext<'a>) -> Pin<Box<dyn Future<Output = Held> + Send + 'a>> {
        Box::pin(self.wait(ask))
    }
}

/// One request waiting for an item; leaving (answered, timed out, or the client gone) takes it
/// off the count, and the last one leaving withdraws the item.
struct Waiter<'a> {
    pending: &'a Pending,
    id: u64,
    outcome: watch::Receiver<Option<Hold>>,
    first: bool,
    /// It waited `ask.hold` for nothing: if it is the last, the item ends as a timeout.
    timed_out: bool,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        let mut state = self.pending.state();
        let Some(item) = state.items.get_mut(&self.id) else {
            return;
        };
        item.waiting -= 1;
        let withdrawn = match item.waiting {
            0 => state.items.remove(&self.id),
            _ => None,
        };
        drop(state);
        if let Some(item) = withdrawn.filter(|_| self.timed_out) {
            let pending = self.pending;
            pending.log_answer(&item, Verdict::Ask, None, ApprovedBy::Timeout);
        }
        self.pending.bump();
    }
}

/// A `GET /pending` in progress (see `Pending::poll`).
#[derive(Debug)]
pub struct PollGuard(Arc<Pending>);

impl Drop for PollGuard {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.pollers -= 1;
        state.last_poll = Some(Instant::now());
    }
}

impl Key {
    fn of(ask: &AskContext<'_>) -> Key {
        Key {
            attempt: ask.attempt.map(str::to_owned),
            host: ask.request.target.host().to_string(),
            port: ask.request.target.port(),
            protocol: ask.request.protocol,
        }
    }
}

impl Asked {
    fn of(request: &Request<'_>) -> Asked {
        Asked {
            target: request.target.clone(),
            method: request.method.to_owned(),
            protocol: request.protocol,
            has_body: request.shape.has_body,
            upgrade: request.shape.upgrade,
            overrides: request
                .shape
                .method_overrides
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
        }
    }

    fn decide(&self, engine: &dyn PolicyEngine) -> Decision {
        let overrides: Vec<&str> = self.overrides.iter().map(String::as_str).collect();
        engine.decide(&Request {
            target: &self.target,
            method: &self.method,
            protocol: self.protocol,
            shape: RequestShape {
                has_body: self.has_body,
                upgrade: self.upgrade,
                method_overrides: &overrides,
            },
        })
    }
}

impl Item {
    fn view(&self, id: u64) -> PendingItem {
        PendingItem {
            id,
            host: self.key.host.clone(),
            port: self.key.port,
            protocol: self.key.protocol,
            method: self.asked.method.clone(),
            path: self.path.clone(),
            attempt: self.key.attempt.clone(),
            waiting: self.waiting,
            since: self.since,
            event: self.event.0,
        }
    }
}

/// Whose an ask is, for the per-client bound: its attempt, else its client's address.
fn owner_of(ask: &AskContext<'_>) -> String {
    match (ask.attempt, ask.client) {
        (Some(attempt), _) => format!("attempt:{attempt}"),
        (None, Some(client)) => format!("peer:{}", client.ip()),
        (None, None) => String::new(),
    }
}

/// Whether one more item for `owner` would pass `MAX_ITEMS_PER_CLIENT` or `MAX_ITEMS`.
fn over_bounds(state: &State, owner: &str) -> bool {
    let owned = state.items.values().filter(|i| i.owner == owner).count();
    state.items.len() >= MAX_ITEMS || owned >= MAX_ITEMS_PER_CLIENT
}

/// The path as an item keeps it: at most `MAX_SHOWN_PATH` bytes (cut at a character), marked.
fn shown_path(path: &str) -> String {
    if path.len() <= MAX_SHOWN_PATH {
        return path.to_owned();
    }
    let mut end = MAX_SHOWN_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end])
}

/// A person is there to answer: a `GET /pending` in progress or recent (SPEC §14).
fn poller_present(state: &State) -> bool {
    let recent = state
        .last_poll
        .is_some_and(|at| at.elapsed() <= POLLER_GRACE);
    state.pollers > 0 || recent
}

fn unheld(hold: Hold) -> Held {
    Held {
        hold,
        held_ms: None,
    }
}

fn millis(elapsed: Duration) -> u64 {
    elapsed.as_millis().try_into().unwrap_or(u64::MAX)
}
