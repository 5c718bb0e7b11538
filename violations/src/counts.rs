//! Decisions counted by protocol and outcome, for `/metrics`: atomics in a fixed table, so counting
//! takes no lock.

use std::sync::atomic::{AtomicU64, Ordering};

use policy::{BlockReason, Decision, Protocol};

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
