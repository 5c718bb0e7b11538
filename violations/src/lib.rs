//! `violations` owns the unified violation log (SPEC §7): one JSONL line per blocked decision on any
//! path, handed to a writer that never drops lines before the caller answers the client, rotation,
//! flush on shutdown, and the in-memory ring the admin API reads.
//!
//! It implements `DecisionSink` from `policy`; it knows nothing about the protocols that call it.

mod counts;
mod line;
mod log;
mod ring;
mod time;

pub use crate::{
    counts::{reason_labels, DecisionCounts},
    log::{LogOptions, Rotation, ViolationLog, ViolationLogError},
    ring::RingPage,
};
