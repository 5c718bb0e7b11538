//! Decisions counted by protocol and outcome, for `/metrics`: atomics in a fixed table, so counting
//! takes no lock.

use std::sync::atomic::{AtomicU64, Ordering};

use policy::{BlockReason, Decision, Protocol, Verdict};

const OUTCOMES: usize = BlockReason::CODES.len() + 1;
const ALLOW: usize = BlockReason::CODES.len();

/// Counters for every (protocol, outcome) pair; the outcome is a reason code or `allow`.
#[derive(Debug, Default)]
pub struct DecisionCounts {
    table: [[AtomicU64; OUTCOMES]; Protocol::ALL.len()],
}

impl DecisionCounts {
    pub(crate) fn count(&self, protocol: Protocol, decision: &Decision) {
        let outcome = decision.reason().map_or(ALLOW, BlockReason::index);
        self.table[protocol.index()][outcome].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_allowed(&self, protocol: Protocol) {
        self.table[protocol.index()][ALLOW].fetch_add(1, Ordering::Relaxed);
    }

    /// Every non-zero counter: `(protocol, outcome, count)`, outcome `allow` or a reason code.
    pub fn snapshot(&self) -> Vec<(Protocol, &'static str, u64)> {
        let mut rows = Vec::new();
        for protocol in Protocol::ALL {
            for (outcome, counter) in self.table[protocol.index()].iter().enumerate() {
                let count = counter.load(Ordering::Relaxed);
                if count > 0 {
                    let name = BlockReason::CODES.get(outcome).copied().unwrap_or("allow");
                    rows.push((protocol, name, count));
                }
            }
        }
        rows
    }
}

/// The metric labels of a counted block: the verdict it had and its reason code
/// (`leash_decisions_total{decision, reason}`). Every reason is listed: a new one does not
/// compile until it says which verdict it is counted under.
pub fn reason_labels(reason: &BlockReason) -> (Verdict, &'static str) {
    let verdict = match reason {
        // Nothing allowed it: a person could (SPEC §1.3 step 5).
        BlockReason::AllowlistMiss => Verdict::Ask,
        BlockReason::Denylist { .. }
        | BlockReason::LocalAddress { .. }
        | BlockReason::MethodNotAllowed { .. }
        | BlockReason::ProtocolNotAllowed
        | BlockReason::MitmRequired
        | BlockReason::InvalidTarget(_)
        | BlockReason::AuthFailed
        | BlockReason::InvalidRequest { .. }
        | BlockReason::HostMismatch
        | BlockReason::Declined => Verdict::Deny,
    };
    (verdict, reason.code())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One row per reason: the labels its counter carries. The exhaustive match makes a new reason
    /// state its labels here.
    fn row(reason: &BlockReason) -> (&'static str, &'static str) {
        match reason {
            BlockReason::AllowlistMiss => ("ask", "allowlist_miss"),
            BlockReason::Denylist { .. } => ("deny", "denylist"),
            BlockReason::LocalAddress { .. } => ("deny", "local_address"),
            BlockReason::MethodNotAllowed { .. } => ("deny", "method_not_allowed"),
            BlockReason::ProtocolNotAllowed => ("deny", "protocol_not_allowed"),
            BlockReason::MitmRequired => ("deny", "mitm_required"),
            BlockReason::InvalidTarget(_) => ("deny", "invalid_target"),
            BlockReason::AuthFailed => ("deny", "auth_failed"),
            BlockReason::InvalidRequest { .. } => ("deny", "invalid_request"),
            BlockReason::HostMismatch => ("deny", "host_mismatch"),
            BlockReason::Declined => ("deny", "declined"),
        }
    }

    #[test]
    fn every_reason_has_its_metric_labels_and_counter() {
        let counts = DecisionCounts::default();
        for code in BlockReason::CODES {
            let reason: BlockReason = code.parse().expect("a code");
            let (verdict, label) = reason_labels(&reason);
            assert_eq!((verdict.as_str(), label), row(&reason), "{code}");
            counts.count(Protocol::Https, &Decision::Deny(reason));
        }
        let rows = counts.snapshot();
        let labels: Vec<&str> = rows.iter().map(|(_, outcome, _)| *outcome).collect();
        assert_eq!(labels, BlockReason::CODES, "one counter per reason");
        assert!(rows
            .iter()
            .all(|(p, _, n)| (*p, *n) == (Protocol::Https, 1)));
    }
}
