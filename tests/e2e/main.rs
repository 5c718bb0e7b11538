//! leash's end-to-end tests: the real binary and real sockets, one integration test binary.

mod admin;
mod after_connect;
mod bench;
mod cli;
mod connect;
mod control;
mod corpus;
mod exec;
mod framing;
mod head_rules;
mod hints;
mod http;
mod limits;
mod mitm;
mod mitm_env;
mod process;
mod socks;
mod tidy;
