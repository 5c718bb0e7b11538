//! The addresses of this host's network interfaces, which the dialer compares with a target on
//! one of leash's own ports: a listener on `0.0.0.0` or `::` answers on every one of them, not
//! only on the local ranges the policy knows.

use std::net::IpAddr;

/// Every address of every interface now, `None` if they cannot be read (the caller fails closed).
#[cfg(unix)]
pub(crate) fn interface_addresses() -> Option<Vec<IpAddr>> {
    let interfaces = nix::ifaddrs::getifaddrs().ok()?;
    let addrs = interfaces
        .filter_map(|interface| interface.address)
        .filter_map(|addr| {
            let v4 = addr.as_sockaddr_in().map(|a| IpAddr::V4(a.ip()));
            v4.or_else(|| addr.as_sockaddr_in6().map(|a| IpAddr::V6(a.ip())))
        })
        .map(|ip| ip.to_canonical())
        .collect();
    Some(addrs)
}

/// Without `getifaddrs(3)` the interfaces are unknown: every address counts as this host's.
#[cfg(not(unix))]
pub(crate) fn interface_addresses() -> Option<Vec<IpAddr>> {
    None
}
