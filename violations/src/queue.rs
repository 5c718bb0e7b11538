//! Lines waiting for the file, in `seq` order. While the file takes them the queue holds only the
//! lines of callers waiting to write; while writes fail it holds up to a byte bound, and events
//! past the bound become a gap: a range of `seq` numbers written later as one line saying they
//! are lost, so every event is either in the file or inside a gap line.

use std::collections::VecDeque;

use crate::line::render_gap;

#[derive(Debug)]
enum Entry {
    /// Event `seq`'s rendered line, newline included.
    Line(u64, String),
    Gap(Gap),
}

/// Events that could not be kept: `first..=last`, all lost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gap {
    pub(crate) first: u64,
    pub(crate) last: u64,
    pub(crate) reason: String,
    /// Being written: events dropped now start a new gap instead of widening this one.
    sealed: bool,
}

impl Gap {
    pub(crate) fn lost(&self) -> u64 {
        self.last - self.first + 1
    }
}

/// What a write of the front of the queue took out of it.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct Taken {
    pub(crate) lines: u64,
    pub(crate) in_gaps: u64,
}

#[derive(Debug)]
pub(crate) struct Queue {
    entries: VecDeque<Entry>,
    /// Bytes of the queued lines.
    bytes: usize,
    /// Events queued (lines and the events inside gaps).
    events: u64,
    limit: usize,
}

impl Queue {
    pub(crate) fn new(limit: usize) -> Queue {
        Queue {
            entries: VecDeque::new(),
            bytes: 0,
            events: 0,
            limit,
        }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Events waiting (as lines or inside gaps).
    pub(crate) fn events(&self) -> u64 {
        self.events
    }

    /// Queues the line of event `seq`. With `failing` (writes fail) and the bound reached, the
    /// event joins a gap instead; otherwise the queue takes it, since only callers waiting for
    /// the file hold lines then.
    pub(crate) fn push(&mut self, seq: u64, line: String, failing: Option<&str>) {
        self.events += 1;
        let Some(reason) = failing.filter(|_| self.bytes + line.len() > self.limit) else {
            self.bytes += line.len();
            self.entries.push_back(Entry::Line(seq, line));
            return;
        };
        if let Some(Entry::Gap(gap)) = self.entries.back_mut() {
            if !gap.sealed && gap.last + 1 == seq {
                gap.last = seq;
                return;
            }
        }
        self.entries.push_back(Entry::Gap(Gap {
            first: seq,
            last: seq,
            reason: reason.to_owned(),
            sealed: false,
        }));
    }

    /// Renders every entry into `out`, pushing each entry's length onto `lengths`; gaps get `ts`
    /// and are sealed.
    pub(crate) fn render_into(&mut self, ts: &str, out: &mut Vec<u8>, lengths: &mut Vec<usize>) {
        for entry in &mut self.entries {
            let start = out.len();
            match entry {
                Entry::Line(_, line) => out.extend_from_slice(line.as_bytes()),
                Entry::Gap(gap) => {
                    gap.sealed = true;
                    out.extend_from_slice(render_gap(ts, gap).as_bytes());
                    out.push(b'\n');
                }
            }
            lengths.push(out.len() - start);
        }
    }

    /// Removes the first `count` entries (written to the file).
    pub(crate) fn take(&mut self, count: usize) -> Taken {
        let mut taken = Taken::default();
        for entry in self.entries.drain(..count) {
            match entry {
                Entry::Line(_, line) => {
                    self.bytes -= line.len();
                    taken.lines += 1;
                }
                Entry::Gap(gap) => taken.in_gaps += gap.lost(),
            }
        }
        self.events -= taken.lines + taken.in_gaps;
        taken
    }

    /// After a failed write: gaps may widen again, and neighbouring gaps become one.
    pub(crate) fn unseal(&mut self) {
        let mut merged: VecDeque<Entry> = VecDeque::with_capacity(self.entries.len());
        for entry in self.entries.drain(..) {
            match (merged.back_mut(), entry) {
                (Some(Entry::Gap(before)), Entry::Gap(gap)) if before.last + 1 == gap.first => {
                    before.last = gap.last;
                }
                (_, Entry::Gap(mut gap)) => {
                    gap.sealed = false;
                    merged.push_back(Entry::Gap(gap));
                }
                (_, entry) => merged.push_back(entry),
            }
        }
        self.entries = merged;
    }

    /// Empties the queue into one gap covering every event it held (they are consecutive: the
    /// queue holds every event not yet in the file). `None` if it was empty.
    pub(crate) fn drain_to_gap(&mut self, reason: &str) -> Option<Gap> {
        let first = match self.entries.front()? {
            Entry::Line(seq, _) => *seq,
            Entry::Gap(gap) => gap.first,
        };
        let gap = Gap {
            first,
            last: first + self.events - 1,
            reason: reason.to_owned(),
            sealed: true,
        };
        self.entries.clear();
        self.bytes = 0;
        self.events = 0;
        Some(gap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(seq: u64) -> String {
        format!("{{\"seq\":{seq}}}\n")
    }

    fn rendered(queue: &mut Queue) -> (String, Vec<usize>) {
        let (mut out, mut lengths) = (Vec::new(), Vec::new());
        queue.render_into("T", &mut out, &mut lengths);
        (String::from_utf8(out).unwrap(), lengths)
    }

    #[test]
    fn past_the_bound_while_failing_events_become_one_gap() {
        let mut queue = Queue::new(2 * line(1).len());
        for seq in 1..=5 {
            queue.push(seq, line(seq), Some("disk full"));
        }
        assert_eq!(queue.events(), 5);
        let (text, lengths) = rendered(&mut queue);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[..2], ["{\"seq\":1}", "{\"seq\":2}"]);
        let gap: serde_json::Value = serde_json::from_str(lines[2]).unwrap();
        assert_eq!(
            (
                &gap["kind"],
                &gap["first_seq"],
                &gap["last_seq"],
                &gap["lost"]
            ),
            (&"gap".into(), &3.into(), &5.into(), &3.into())
        );
        assert_eq!(lengths.len(), 3);
        // Sealed while written: a drop now starts another gap, merged back if the write fails.
        queue.push(6, line(6), Some("disk full"));
        queue.unseal();
        assert_eq!(rendered(&mut queue).1.len(), 3);
        assert_eq!(
            queue.take(3),
            Taken {
                lines: 2,
                in_gaps: 4
            }
        );
        assert!(queue.is_empty());
        assert_eq!(queue.events(), 0);
    }

    #[test]
    fn without_failures_the_queue_takes_everything() {
        let mut queue = Queue::new(1);
        for seq in 1..=3 {
            queue.push(seq, line(seq), None);
        }
        assert_eq!(
            queue.take(2),
            Taken {
                lines: 2,
                in_gaps: 0
            }
        );
        queue.push(4, line(4), Some("disk full"));
        let gap = queue.drain_to_gap("closing").unwrap();
        assert_eq!((gap.first, gap.last, gap.lost()), (3, 4, 2));
        assert!(queue.drain_to_gap("again").is_none());
    }
}
