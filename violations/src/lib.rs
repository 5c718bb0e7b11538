//! `violations` owns the unified violation log (SPEC §7): one JSONL line per blocked decision on any
//! path, written to the file before the caller answers the client, only whole lines, a bounded
//! queue and an explicit gap line when the disk is full, rotation, and the in-memory ring the
//! admin API reads.
//!
//! It implements `DecisionSink` from `policy`; it knows nothing about the protocols that call it.

mod counts;
mod file;
mod line;
mod log;
mod queue;
mod ring;
mod time;

pub use crate::{
    counts::{DecisionCount, DecisionCounts},
    log::{LogHealth, LogOptions, LogStats, Rotation, ViolationLog, ViolationLogError},
    ring::RingPage,
};
