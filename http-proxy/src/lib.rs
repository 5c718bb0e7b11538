//! `http-proxy` owns leash's HTTP/1.1 forward proxy (SPEC §2, §3): absolute-form forwarding,
//! `CONNECT` tunnels, WebSockets (SPEC §15), proxy authentication carrying the attempt id, header hygiene, and the one
//! mapping from a decision or an upstream failure to an HTTP response.
//!
//! It asks a `PolicyEngine` for every request, hands every block to a `DecisionSink` before it
//! answers, and dials only through the shared `listeners::Dialer`. It knows nothing about SOCKS5,
//! configuration files or how the log is written.

mod auth;
mod connect;
mod count;
mod credentials;
mod forward;
mod framing;
mod headers;
mod intercept;
mod pool;
mod proxy;
mod response;
mod server;
mod websocket;

pub use crate::{
    credentials::{Credentials, HeaderRule, HeaderRuleError, HeaderRuleSpec},
    intercept::TlsInterceptor,
    proxy::{HttpProxy, Limits},
    server::serve,
};
