//! `socks-proxy` owns leash's SOCKS5 server (SPEC §6): RFC 1928 negotiation, RFC 1929
//! username/password carrying the attempt id, `CONNECT` for every address type and the one mapping
//! from a decision to a SOCKS reply code.
//!
//! It asks a `PolicyEngine` and records to a `DecisionSink`; it knows nothing about HTTP or MITM
//! beyond handing a port-443 stream to the interception seam in limited mode.
//!
//! This crate is filled by the SOCKS5 issue; it holds no code yet.
