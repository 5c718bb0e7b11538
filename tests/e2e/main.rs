//! leash's end-to-end tests: the real binary and real sockets, one integration test binary.

mod admin;
mod admin_limits;
mod after_connect;
mod bench;
mod cli;
mod connect;
mod control;
mod corpus;
mod dns;
mod exec;
mod framing;
mod head_rules;
mod hints;
mod http;
mod inflight;
mod limits;
mod mitm;
mod mitm_env;
mod own_listeners;
mod process;
mod reasons;
mod relay;
mod socks;
mod tidy;
mod udp;
mod violation_log;
