//! `explain`: the decision plus the trace of the steps that made it (SPEC §1.5).

use std::sync::Arc;

use serde::{ser::SerializeMap, Serialize, Serializer};

use crate::{
    decision::{Decision, Mode, Protocol},
    host::InvalidTarget,
};

/// A decision with the steps that led to it, in the order SPEC §1.3 takes them.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Explanation {
    /// The decision itself.
    pub decision: Decision,
    /// Every step taken, up to the one that decided.
    pub steps: Vec<Step>,
}

/// One step of the decision order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(tag = "step", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Step {
    /// Step 1: the canonical target (`host:port`).
    Target {
        /// The canonical spelling.
        target: String,
    },
    /// Step 1: the target was refused.
    InvalidTarget {
        /// Why.
        #[serde(serialize_with = "display")]
        error: InvalidTarget,
    },
    /// Step 2: the deny rule that matched, if any.
    Denylist {
        /// The matching deny rule.
        rule: Option<Arc<str>>,
    },
    /// Step 3: local protection.
    Local {
        /// The target is a local address or name.
        local: bool,
        /// The `allow_local` rule that covers it.
        allowed_by: Option<Arc<str>>,
    },
    /// Step 4: the allow rule that matched, if any.
    Allowlist {
        /// The matching allow rule.
        rule: Option<Arc<str>>,
    },
    /// Step 5: the mode check.
    Mode {
        /// The mode in force.
        mode: Mode,
        /// The method checked.
        method: String,
        /// The protocol checked.
        protocol: Protocol,
        /// Whether the mode lets it through.
        allowed: bool,
    },
}

/// An explanation as JSON for people's tools (`leash check --json`, the admin API's `/explain`):
/// the decision's fields, then what was asked and the steps.
#[derive(Debug, Serialize)]
pub struct ExplainReport<'a> {
    /// `decision`, `reason`, `rule` (and `addrs`).
    #[serde(flatten)]
    pub decision: &'a Decision,
    /// The target as it was asked about.
    pub target: &'a str,
    /// The method checked.
    pub method: &'a str,
    /// The protocol checked.
    pub protocol: Protocol,
    /// The mode in force.
    pub mode: Mode,
    /// The trace.
    pub steps: &'a [Step],
}

impl Explanation {
    /// The explanation when the target itself is invalid (decision step 1).
    pub fn invalid_target(error: InvalidTarget) -> Explanation {
        Explanation {
            decision: Decision::invalid_target(error.clone()),
            steps: vec![Step::InvalidTarget { error }],
        }
    }
}

fn display<S: Serializer>(
    value: &impl std::fmt::Display,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    serializer.collect_str(value)
}

/// Collects steps for `explain`; `decide` passes `NoTrace`, which compiles to nothing.
pub(crate) trait Trace {
    fn step(&mut self, step: impl FnOnce() -> Step);
}

pub(crate) struct NoTrace;

impl Trace for NoTrace {
    #[inline(always)]
    fn step(&mut self, _: impl FnOnce() -> Step) {}
}

impl Trace for Vec<Step> {
    fn step(&mut self, step: impl FnOnce() -> Step) {
        self.push(step());
    }
}

/// A decision as plain JSON data: `{"decision":"deny","reason":"denylist","rule":"x","addrs":[…]}`.
impl Serialize for Decision {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("decision", &self.verdict())?;
        map.serialize_entry("reason", &self.reason().map(|r| r.code()))?;
        map.serialize_entry("rule", &self.rule())?;
        if let Some(crate::BlockReason::LocalAddress { addrs }) = self.reason() {
            map.serialize_entry("addrs", addrs)?;
        }
        map.end()
    }
}
