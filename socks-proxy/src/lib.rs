//! `socks-proxy` owns leash's SOCKS5 server (SPEC §6): RFC 1928 negotiation, RFC 1929
//! username/password carrying the attempt id, `CONNECT` for every address type, UDP ASSOCIATE when
//! enabled, and the one mapping from an outcome to a SOCKS reply code.
//!
//! It asks a `PolicyEngine`, records every block to a `DecisionSink` before it replies, and dials
//! only through `listeners::Dialer`. It knows nothing about HTTP or TLS: a stream the policy wants
//! inspected is handed to a `listeners::Interceptor`.

mod handshake;
mod proxy;
mod reply;
mod server;
mod udp;
mod wire;

pub use crate::{
    proxy::{SocksOptions, SocksProxy},
    server::serve,
};
