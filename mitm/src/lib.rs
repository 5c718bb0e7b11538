//! `mitm` owns TLS interception (SPEC §5): the local CA (created with rcgen, stored with strict file
//! permissions), per-host leaf certificates with an LRU cache, and the upstream rustls client
//! configuration (platform roots plus `mitm.upstream_ca`).
//!
//! It knows TLS, not HTTP policy: the HTTP proxy decides every inner request.
//!
//! This crate is filled by the MITM issue; it holds no code yet.
