//! `violations` owns the unified violation log (SPEC §7): one JSONL line per blocked decision on any
//! path, handed to a writer that never drops lines, rotation, flush on shutdown, and the in-memory ring
//! that the admin API reads.
//!
//! It implements `DecisionSink` from `policy`; it knows nothing about the protocols that call it.
//!
//! This crate is filled by the HTTP proxy issue; it holds no code yet.
