//! Support for leash's end-to-end tests: the real `leash` binary and in-process instances, real
//! origin servers (HTTP and HTTPS with a CA made at test time), and real clients (curl, raw TCP).
//! The tests themselves are the one integration binary in `e2e/`.

mod binary;
mod browser;
mod certs;
mod clients;
mod netns;
mod origin;
mod raw;
mod running;

pub use crate::{
    binary::{cargo, leash, leash_bin, stderr, stdout, target_dir, workspace_root, BinaryProxy},
    browser::{chromium_binary, Browser},
    certs::TestCa,
    clients::{curl, raw_request, CurlOutput},
    netns::{skip_unless_root, NetNs},
    origin::{big_body, Origin, OriginPair, Seen, SeenRequest, WsOrigin},
    raw::{closed, exchange, log_line, read_head, read_response, Intercepting, RawResponse},
    running::{
        loopback, policy_config, start_proxy, start_proxy_from_file, start_proxy_logging_into,
        start_proxy_on_configured_listeners, start_proxy_with_decider, AdminClient, LoopbackNat,
        TestProxy,
    },
};
