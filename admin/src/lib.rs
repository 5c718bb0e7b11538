//! `admin` owns leash's loopback admin API (SPEC §8): health, effective config, patterns, blocked
//! events, explain, mode switch, reload, runtime rules and Prometheus metrics.
//!
//! It reads the violation ring and swaps policies through small traits; it never proxies traffic.
//!
//! This crate is filled by the admin API issue; it holds no code yet.
