//! Decisions counted by protocol, verdict and reason, for `/metrics`: atomics in a fixed table, so
//! counting takes no lock.

use std::sync::atomic::{AtomicU64, Ordering};

use policy::{BlockReason, Decision, Protocol, Verdict};

const REASONS: usize = BlockReason::CODES.len();
/// Slot 0 is `allow`; then one slot per reason for `deny`, then one per reason for `ask`.
const OUTCOMES: usize = 1 + 2 * REASONS;

/// Counters for every (protocol, verdict, reason) triple.
#[derive(Debug, Default)]
pub struct DecisionCounts {
    table: [[AtomicU64; OUTCOMES]; Protocol::ALL.len()],
}

/// One non-zero counter of [`DecisionCounts::snapshot`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DecisionCount {
    /// The protocol decided.
    pub protocol: Protocol,
    /// The verdict.
    pub verdict: Verdict,
    /// The reason code; `None` for `allow`.
    pub reason: Option<&'static str>,
    /// How many.
    pub count: u64,
}

impl DecisionCounts {
    pub(crate) fn count(&self, protocol: Protocol, decision: &Decision) {
        let slot = match decision {
            Decision::Allow { .. } => 0,
            Decision::Deny(reason) => 1 + reason.index(),
            Decision::Ask(reason) => 1 + REASONS + reason.index(),
        };
        self.table[protocol.index()][slot].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_allowed(&self, protocol: Protocol) {
        self.table[protocol.index()][0].fetch_add(1, Ordering::Relaxed);
    }

    /// Every non-zero counter.
    pub fn snapshot(&self) -> Vec<DecisionCount> {
        let mut rows = Vec::new();
        for protocol in Protocol::ALL {
            for (slot, counter) in self.table[protocol.index()].iter().enumerate() {
                let count = counter.load(Ordering::Relaxed);
                if count == 0 {
                    continue;
                }
                let (verdict, reason) = match slot {
                    0 => (Verdict::Allow, None),
                    s if s <= REASONS => (Verdict::Deny, Some(BlockReason::CODES[s - 1])),
                    s => (Verdict::Ask, Some(BlockReason::CODES[s - 1 - REASONS])),
                };
                rows.push(DecisionCount {
                    protocol,
                    verdict,
                    reason,
                    count,
                });
            }
        }
        rows
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_verdict_and_reason_has_its_own_counter() {
        let counts = DecisionCounts::default();
        let allow = Decision::Allow {
            rule: "x.test".into(),
        };
        counts.count(Protocol::Http, &allow);
        counts.count_allowed(Protocol::Http);
        counts.count(Protocol::Http, &Decision::Ask(BlockReason::AllowlistMiss));
        counts.count(Protocol::Socks5, &Decision::Deny(BlockReason::Declined));
        counts.count(
            Protocol::Socks5,
            &Decision::Deny(BlockReason::AllowlistMiss),
        );
        let rows = counts.snapshot();
        let row = |protocol, verdict, reason| DecisionCount {
            protocol,
            verdict,
            reason,
            count: 0,
        };
        let expected = [
            (row(Protocol::Http, Verdict::Allow, None), 2),
            (row(Protocol::Http, Verdict::Ask, Some("allowlist_miss")), 1),
            (
                row(Protocol::Socks5, Verdict::Deny, Some("allowlist_miss")),
                1,
            ),
            (row(Protocol::Socks5, Verdict::Deny, Some("declined")), 1),
        ];
        let got: Vec<_> = rows
            .iter()
            .map(|r| (DecisionCount { count: 0, ..*r }, r.count))
            .collect();
        assert_eq!(got, expected);
    }
}
