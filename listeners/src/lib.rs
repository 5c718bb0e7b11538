//! `listeners` owns how leash gets its sockets (SPEC §9): managed mode binds `127.0.0.1:0` for every
//! enabled listener up front and carries the bound socket itself into the server; fixed mode binds the
//! configured addresses and fails naming the address. It also writes the ready record.
//!
//! It knows addresses and sockets, not protocols.
//!
//! This crate is filled by the HTTP proxy issue; it holds no code yet.
