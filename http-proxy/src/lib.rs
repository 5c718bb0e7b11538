//! `http-proxy` owns leash's HTTP/1.1 forward proxy (SPEC §2, §3): absolute-form forwarding, `CONNECT`
//! tunnels, proxy authentication carrying the attempt id, header hygiene and the one mapping from a
//! policy decision to a `403` JSON response.
//!
//! It asks a `PolicyEngine` (crate `policy`) for every request and hands every block to a
//! `DecisionSink`; it dials only through the shared outbound dialer. It knows nothing about SOCKS5,
//! configuration files or how the log is written.
//!
//! This crate is filled by the HTTP proxy issue; it holds no code yet.
