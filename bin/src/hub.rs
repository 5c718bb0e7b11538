//! The one place the running policy changes (reload, mode switch, runtime rules), for the admin
//! API and the embedding API alike: rebuild, swap atomically, then close live tunnels the new
//! policy refuses (tightening reaches open tunnels, SPEC §4).

use std::{
    path::PathBuf,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use admin::{AttemptRequest, Control, ControlError, RuleChange, RuleOp, RuleSource, RuleSources};
use listeners::{Pending, PendingItem, Remembered, RememberedAnswer, Tunnels};
use policy::{AllowLocal, ApprovedBy, AskAnswer, AskScope, Mode, Policy, PolicyEngine, Rule};

use crate::{
    approvals::{Approvals, ApprovalsFile},
    attempts::Issuer,
    hot::HotPolicy,
    BoundAttempt, Config,
};

/// Re-applies the command line's flags to a freshly read config file.
pub type ConfigOverlay = Arc<dyn Fn(&mut Config) -> Result<(), String> + Send + Sync>;

/// The policy's sources and the live policy.
pub(crate) struct Hub {
    hot: Arc<HotPolicy>,
    tunnels: Arc<Tunnels>,
    path: Option<PathBuf>,
    overlay: Option<ConfigOverlay>,
    /// The embedder's own engine, when it decides instead of `hot`: then nothing here may change
    /// or describe its rules.
    embedders: Option<Arc<dyn PolicyEngine>>,
    started: Instant,
    state: Mutex<State>,
    /// Held requests, decided again on every swap.
    pub(crate) pending: Arc<Pending>,
    /// With `auth.attempts = "bound"`: what binds attempts (`None`: attempts are free-form).
    issuer: Option<Issuer>,
    /// Where `always` answers are kept (`ask.approvals`).
    approvals: ApprovalsFile,
}

/// Everything a rebuild starts from; one lock makes rebuild-and-swap atomic.
struct State {
    config: Config,
    mode: Option<Mode>,
    added: RuntimeRules,
    removed: RuntimeRules,
    /// The approvals file's rules: a source of their own, re-read on reload.
    approved: Approvals,
}

/// Rules added or removed at runtime, parsed once when they arrive: a rebuild never re-parses,
/// and equality is the canonical rule's (`X.test.` removes what `x.test` added).
#[derive(Clone, Default)]
struct RuntimeRules {
    allow: Vec<Rule>,
    deny: Vec<Rule>,
}

impl RuntimeRules {
    fn parse(change: &RuleChange) -> Result<RuntimeRules, ControlError> {
        let parse = |texts: &[String]| {
            texts
                .iter()
                .map(|text| text.parse::<Rule>().map_err(ControlError::Rule))
                .collect::<Result<Vec<_>, _>>()
        };
        Ok(RuntimeRules {
            allow: parse(&change.allow)?,
            deny: parse(&change.deny)?,
        })
    }

    fn extend(&mut self, rules: &RuntimeRules) {
        self.allow.extend(rules.allow.iter().cloned());
        self.deny.extend(rules.deny.iter().cloned());
    }

    fn forget(&mut self, rules: &RuntimeRules) {
        self.allow.retain(|r| !rules.allow.contains(r));
        self.deny.retain(|r| !rules.deny.contains(r));
    }
}

impl std::fmt::Debug for Hub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hub")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// What a swap reaches: the live policy, and what it re-checks (open tunnels, held asks).
pub(crate) struct Live {
    pub(crate) hot: Arc<HotPolicy>,
    pub(crate) tunnels: Arc<Tunnels>,
    pub(crate) pending: Arc<Pending>,
}

impl Hub {
    /// The rules the command line's flags add (the overlay applied to a config without rules).
    fn cli_rules(&self) -> RuntimeRules {
        let Some(overlay) = &self.overlay else {
            return RuntimeRules::default();
        };
        let mut bare = Config::default();
        bare.policy.allow.clear();
        bare.policy.deny.clear();
        if overlay(&mut bare).is_err() {
            return RuntimeRules::default();
        }
        let change = RuleChange {
            allow: bare.policy.allow,
            deny: bare.policy.deny,
        };
        RuntimeRules::parse(&change).unwrap_or_default()
    }

    /// An `always` answer for `host:port`: appends the rule to the approvals file and adds it
    /// to the policy in force (an allow rule for `allow`, a deny rule for `deny`).
    fn approve_always(&self, host: &str, port: u16, answer: AskAnswer) -> Result<(), ControlError> {
        if self.embedders.is_some() {
            return Err(ControlError::EmbeddersEngine);
        }
        let rule = approval_rule(host, port)?;
        // Under the hub lock: two answers append one after the other, never over each other.
        let mut state = self.state.lock().expect("hub lock");
        let approved = self
            .approvals
            .append(answer, rule)
            .map_err(|e| ControlError::Approvals(e.to_string()))?;
        let previous = std::mem::replace(&mut state.approved, approved);
        let result = self.install(&state);
        if result.is_err() {
            state.approved = previous;
        }
        result
    }

    /// The hub over `live`, with the approvals file's rules (read here) in force; a bad approvals
    /// file is an error naming its file and line, like the config's.
    pub(crate) fn new(
        live: Live,
        config: Config,
        path: Option<PathBuf>,
        overlay: Option<ConfigOverlay>,
        engine: Option<Arc<dyn PolicyEngine>>,
        issuer: Option<Issuer>,
    ) -> Result<Hub, crate::config::ConfigError> {
        let Live {
            hot,
            tunnels,
            pending,
        } = live;
        let approvals = ApprovalsFile::locate(config.ask.approvals.as_deref(), path.as_deref());
        // An embedder's engine has no rules of leash's to add approvals to.
        let approved = match engine {
            Some(_) => Approvals::default(),
            None => approvals.load()?,
        };
        let state = State {
            config,
            mode: None,
            added: RuntimeRules::default(),
            removed: RuntimeRules::default(),
            approved,
        };
        let hub = Hub {
            hot,
            tunnels,
            path,
            overlay,
            embedders: engine,
            started: Instant::now(),
            state: Mutex::new(state),
            pending,
            issuer,
            approvals,
        };
        hub.install_approved()?;
        Ok(hub)
    }

    /// Binds a new attempt (SPEC §18); `leash_bin` as in `Running::env_with`.
    pub(crate) fn bind_attempt_with(
        &self,
        request: &AttemptRequest,
        leash_bin: Option<&std::path::Path>,
    ) -> Result<BoundAttempt, ControlError> {
        let issuer = self.issuer.as_ref().ok_or(ControlError::AttemptsNotBound)?;
        let checked = crate::attempts::parse_request(request)?;
        // An embedder's engine says nothing about `allow_local`: no local exception then.
        let allow_local_all = self
            .policy()
            .is_some_and(|p| *p.allow_local() == AllowLocal::All);
        let bound = issuer.bind(checked.id, checked.ttl, allow_local_all, leash_bin)?;
        self.pending.bind_attempt(&bound.id, checked.allow);
        Ok(bound)
    }

    /// Puts the approvals read at start into the policy the config alone built.
    fn install_approved(&self) -> Result<(), crate::config::ConfigError> {
        let state = self.state.lock().expect("hub lock");
        if self.embedders.is_some() || state.approved == Approvals::default() {
            return Ok(());
        }
        // The approvals parsed as rules; a policy still refusing them names the file.
        self.install(&state)
            .map_err(|e| crate::config::ConfigError::Parse {
                path: self.approvals.path().to_owned(),
                line: None,
                key: "approvals".to_owned(),
                message: e.to_string(),
            })
    }

    /// Builds the policy from `state`, swaps it in, and closes what it refuses.
    fn install(&self, state: &State) -> Result<(), ControlError> {
        if self.embedders.is_some() {
            return Err(ControlError::EmbeddersEngine);
        }
        let policy = build(state)?;
        self.hot.swap(policy.clone());
        self.tunnels.close_refused(&policy);
        // Held requests the new policy decides (a deny rule added while they wait) answer now.
        self.pending.redecide(&policy);
        Ok(())
    }
}

fn build(state: &State) -> Result<Policy, ControlError> {
    let config = &state.config;
    // From the config's own builder, so that a rebuild keeps what a start has: the credential
    // hosts inspected on every port (SPEC §17).
    let mut builder = config.policy_builder().map_err(ControlError::Policy)?;
    for rule in &state.approved.allow {
        builder = builder.allow(rule.clone());
    }
    for rule in &state.approved.deny {
        builder = builder.deny(rule.clone());
    }
    for rule in &state.added.allow {
        builder = builder.allow(rule.clone());
    }
    for rule in &state.added.deny {
        builder = builder.deny(rule.clone());
    }
    for rule in &state.removed.allow {
        builder.remove_allow(rule);
    }
    for rule in &state.removed.deny {
        builder.remove_deny(rule);
    }
    builder
        .mode(state.mode.unwrap_or(config.mode))
        .build()
        .map_err(ControlError::Policy)
}

impl Control for Hub {
    fn engine(&self) -> Arc<dyn PolicyEngine> {
        match &self.embedders {
            Some(engine) => engine.snapshot(),
            None => self.hot.snapshot(),
        }
    }

    fn policy(&self) -> Option<Arc<Policy>> {
        self.embedders.is_none().then(|| self.hot.current())
    }

    fn config(&self) -> serde_json::Value {
        let state = self.state.lock().expect("hub lock");
        let mut value = serde_json::to_value(&state.config).expect("the config serialises");
        for section in ["auth", "admin"] {
            if let Some(token) = value.get_mut(section).and_then(|s| s.get_mut("token")) {
                if token.as_str().is_some_and(|t| !t.is_empty()) {
                    *token = serde_json::Value::from("<redacted>");
                }
            }
        }
        // The rules in force: the file's, the flags', and those added or removed at runtime. An
        // embedder's engine has rules of its own, which the file's `[policy]` does not describe.
        let names = |rules: &[Rule]| rules.iter().map(ToString::to_string).collect::<Vec<_>>();
        match self.policy() {
            Some(policy) => {
                value["policy"]["allow"] = serde_json::Value::from(names(policy.allow_rules()));
                value["policy"]["deny"] = serde_json::Value::from(names(policy.deny_rules()));
            }
            None => value["policy_engine"] = serde_json::Value::from("embedding application"),
        }
        value["mode"] = serde_json::to_value(self.engine().mode()).expect("mode");
        value
    }

    fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    fn set_mode(&self, mode: Mode) -> Result<Mode, ControlError> {
        let mut state = self.state.lock().expect("hub lock");
        let previous = state.mode.replace(mode);
        if let Err(error) = self.install(&state) {
            state.mode = previous;
            return Err(error);
        }
        Ok(self.hot.current().mode())
    }

    fn reload(&self) -> Result<(), ControlError> {
        let path = self.path.as_ref().ok_or(ControlError::NoConfigFile)?;
        let mut config = Config::load(path).map_err(|e| ControlError::Config(e.to_string()))?;
        if let Some(overlay) = &self.overlay {
            overlay(&mut config).map_err(ControlError::Config)?;
        }
        let approved = self
            .approvals
            .load()
            .map_err(|e| ControlError::Config(e.to_string()))?;
        let mut state = self.state.lock().expect("hub lock");
        // The running proxy substitutes with what it built at start (its placeholders are in
        // children's environments already): a reload must not leave the interception and the
        // substitution disagreeing.
        if config.credentials != state.config.credentials || config.headers != state.config.headers
        {
            let message =
                "`credentials` and `headers` are read at start: restart leash to change them";
            return Err(ControlError::Config(message.to_owned()));
        }
        let previous = std::mem::replace(&mut state.config, config);
        let previous_approved = std::mem::replace(&mut state.approved, approved);
        let previous_mode = state.mode.take();
        let result = self.install(&state);
        if result.is_err() {
            state.config = previous;
            state.approved = previous_approved;
            state.mode = previous_mode;
        }
        result
    }

    fn change_rules(&self, op: RuleOp, change: &RuleChange) -> Result<(), ControlError> {
        let change = RuntimeRules::parse(change)?;
        let mut guard = self.state.lock().expect("hub lock");
        let state = &mut *guard;
        let (added, removed) = (state.added.clone(), state.removed.clone());
        let (grow, shrink) = match op {
            RuleOp::Add => (&mut state.added, &mut state.removed),
            RuleOp::Remove => (&mut state.removed, &mut state.added),
        };
        grow.extend(&change);
        shrink.forget(&change);
        let result = self.install(state);
        if result.is_err() {
            (state.added, state.removed) = (added, removed);
        }
        result
    }

    fn bind_attempt(&self, request: &AttemptRequest) -> Result<serde_json::Value, ControlError> {
        let bound = self.bind_attempt_with(request, None)?;
        let issuer = self.issuer.as_ref().ok_or(ControlError::AttemptsNotBound)?;
        Ok(bound.to_json(&issuer.addrs))
    }

    fn end_attempt(&self, id: &str) -> Result<(), ControlError> {
        let issuer = self.issuer.as_ref().ok_or(ControlError::AttemptsNotBound)?;
        issuer.end(id)?;
        // Its credentials no longer pass, so what it has open is cut as a failed authentication.
        let ended = policy::Decision::Deny(policy::BlockReason::AuthFailed);
        self.tunnels.close_attempt(id, &ended);
        self.pending.end_attempt(id, &ended);
        Ok(())
    }

    fn answer(
        &self,
        id: u64,
        answer: AskAnswer,
        scope: AskScope,
        by: ApprovedBy,
    ) -> Result<PendingItem, ControlError> {
        let item = self
            .pending
            .answer(id, answer, scope, by)
            .map_err(ControlError::Answer)?;
        // `always` is kept after the item is answered: the rule's swap would otherwise re-decide
        // the item itself (`by: policy`) and this answer would find it gone.
        match scope {
            AskScope::Always => self.approve_always(&item.host, item.port, answer)?,
            AskScope::Once | AskScope::Attempt | AskScope::Session => {}
        }
        Ok(item)
    }

    fn rule_sources(&self) -> Option<RuleSources> {
        let policy = self.policy()?;
        let state = self.state.lock().expect("hub lock");
        let cli = self.cli_rules();
        let source = |rule: &Rule, approved: &[Rule], added: &[Rule], cli: &[Rule]| {
            let source = if approved.contains(rule) {
                "approval:always"
            } else if added.contains(rule) {
                "runtime"
            } else if cli.contains(rule) {
                "cli"
            } else {
                "config"
            };
            RuleSource::new(rule.to_string(), source.to_owned())
        };
        let (approved, added) = (&state.approved, &state.added);
        let mut sources = RuleSources {
            allow: (policy.allow_rules().iter())
                .map(|r| source(r, &approved.allow, &added.allow, &cli.allow))
                .collect(),
            deny: (policy.deny_rules().iter())
                .map(|r| source(r, &approved.deny, &added.deny, &cli.deny))
                .collect(),
        };
        drop(state);
        remembered_sources(&self.pending.remembered(), &mut sources);
        Some(sources)
    }
}

/// `session` and `attempt` answers and the attempts' own rules, as `/patterns` shows them (SPEC
/// §14): an answer as the rule `host:port` in the list of its answer.
fn remembered_sources(remembered: &Remembered, sources: &mut RuleSources) {
    let mut add = |answered: &RememberedAnswer, source: String| {
        let list = match answered.answer {
            AskAnswer::Allow => &mut sources.allow,
            AskAnswer::Deny => &mut sources.deny,
        };
        let rule = approval_rule(&answered.host, answered.port).map_or_else(
            |_| format!("{}:{}", answered.host, answered.port),
            |r| r.to_string(),
        );
        list.push(RuleSource::new(rule, source));
    };
    for answered in &remembered.session {
        add(answered, "approval:session".to_owned());
    }
    for (attempt, answered) in &remembered.by_attempt {
        add(answered, format!("approval:attempt:{attempt}"));
    }
    for (attempt, rule) in &remembered.attempt_rules {
        let source = format!("attempt:{attempt}");
        sources
            .allow
            .push(RuleSource::new(rule.to_string(), source));
    }
}

/// The rule an approval of `host:port` adds: that host (or IP) on that port only.
fn approval_rule(host: &str, port: u16) -> Result<Rule, ControlError> {
    let text = match host.contains(':') {
        true => format!("[{host}]:{port}"),
        false => format!("{host}:{port}"),
    };
    text.parse::<Rule>().map_err(ControlError::Rule)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A rebuilt policy (reload, mode switch, runtime rules, approvals) inspects the credential
    /// hosts on every port, as the policy built at start does; before, a rebuild dropped them, so
    /// a credential's placeholder on a port other than 443 went out unreplaced after a reload.
    #[test]
    fn a_rebuilt_policy_still_inspects_credential_hosts_on_every_port() {
        let config: Config = toml::from_str(
            "[policy]\nallow = [\"api.origin.test\", \"other.test\"]\n[mitm]\nenabled = true\n\
             [[credentials]]\nname = \"github\"\nhosts = [\"api.origin.test\"]\n\
             secret_file = \"/nonexistent\"\nenv = \"GITHUB_TOKEN\"\n",
        )
        .expect("the config parses");
        let state = State {
            config: config.clone(),
            mode: Some(Mode::Full),
            added: RuntimeRules::default(),
            removed: RuntimeRules::default(),
            approved: Approvals::default(),
        };
        let credential = policy::Target::parse("api.origin.test:8443", None).expect("a target");
        let other = policy::Target::parse("other.test:8443", None).expect("a target");
        let at_start = config.policy().expect("the policy builds");
        let rebuilt = build(&state).expect("the policy builds");
        assert!(at_start.inspects(&credential));
        assert!(rebuilt.inspects(&credential));
        // Full mode inspects port 443 only, credential hosts aside.
        assert!(!rebuilt.inspects(&other));
    }
}
