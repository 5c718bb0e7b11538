//! `listeners` owns every socket leash opens (SPEC §9, §1.4): the inbound listeners, reserved up
//! front and carried bound into the servers (no bind-drop-rebind window), the ready record, and the
//! one outbound dialer that resolves a name once, vets every address with the policy and connects
//! only to a vetted address — for HTTP, CONNECT, SOCKS5 and MITM alike. Names are looked up by
//! hickory's asynchronous resolver (`dns.rs`: leash reads `resolv.conf` and the hosts file
//! itself), with the lookups in flight bounded per client and in total (`lookups.rs`).
//!
//! It knows addresses and sockets, not protocols: it never parses HTTP or SOCKS.

mod accept;
mod dial;
mod dns;
mod held;
mod intercept;
mod interfaces;
mod lookups;
mod observe;
mod ready;
mod relay;
mod reserve;
#[cfg(target_os = "linux")]
mod splice;
mod tunnels;
mod upstream;

pub use crate::{
    accept::{accept_loop, AcceptLimits, Busy, Connection, Parked, Stopping},
    dial::{
        BoxFuture, Connector, DialError, Dialed, Dialer, Resolver, StaticResolver, TcpConnector,
        Via,
    },
    dns::{check_resolv_conf, DnsConfigError, DnsResolver, DnsSettings, MAX_CACHE_TTL},
    held::{
        AnswerError, Pending, PendingCounts, PendingItem, PollGuard, Remembered, RememberedAnswer,
        MAX_ITEMS, MAX_ITEMS_PER_CLIENT,
    },
    intercept::Interceptor,
    lookups::{ClientKey, LookupBound, LookupLimits},
    observe::{Observed, ReadObserver},
    ready::ReadyRecord,
    relay::{relay, relay_sockets, Early, RelayMode},
    reserve::{ListenError, ListenPlan, Reserved},
    tunnels::{ExchangeInfo, TunnelHandle, TunnelInfo, Tunnels},
    upstream::{UpstreamProxy, UpstreamResolve},
};
