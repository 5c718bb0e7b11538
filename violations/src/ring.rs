//! The in-memory ring of recent blocked events that the admin API pages through
//! (`/blocked?since=`).

use std::collections::VecDeque;

/// The last `capacity` log lines, with their `seq`.
#[derive(Debug)]
pub(crate) struct Ring {
    capacity: usize,
    lines: VecDeque<(u64, String)>,
}

/// One page of events newer than `since`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RingPage {
    /// The events, oldest first, each one JSON object (the log line).
    pub events: Vec<String>,
    /// The `since` to ask with next: the last event's `seq`, or the `since` given.
    pub next: u64,
}

impl Ring {
    pub(crate) fn new(capacity: usize) -> Ring {
        Ring {
            capacity,
            lines: VecDeque::with_capacity(capacity.min(4096)),
        }
    }

    pub(crate) fn push(&mut self, seq: u64, line: String) {
        if self.capacity == 0 {
            return;
        }
        if self.lines.len() == self.capacity {
            self.lines.pop_front();
        }
        self.lines.push_back((seq, line));
    }

    /// Up to `limit` events with `seq > since`, without removing them.
    pub(crate) fn page(&self, since: u64, limit: usize) -> RingPage {
        let start = self.lines.partition_point(|(seq, _)| *seq <= since);
        let events: Vec<(u64, String)> = self.lines.range(start..).take(limit).cloned().collect();
        let next = events.last().map_or(since, |(seq, _)| *seq);
        RingPage {
            events: events.into_iter().map(|(_, line)| line).collect(),
            next,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_are_non_destructive_and_bounded() {
        let mut ring = Ring::new(3);
        for seq in 1..=5 {
            ring.push(seq, format!("{{\"seq\":{seq}}}"));
        }
        let page = ring.page(0, 10);
        assert_eq!(page.events, ["{\"seq\":3}", "{\"seq\":4}", "{\"seq\":5}"]);
        assert_eq!(page.next, 5);
        assert_eq!(ring.page(3, 1).events, ["{\"seq\":4}"]);
        assert_eq!(
            ring.page(5, 10),
            RingPage {
                events: vec![],
                next: 5
            }
        );
        assert_eq!(ring.page(0, 10).events.len(), 3, "reading does not drain");
    }
}
