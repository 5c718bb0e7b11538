//! Reserving listeners: managed mode binds `127.0.0.1:0`, fixed mode binds what is configured;
//! either way the bound socket itself is handed to the server later.

use std::{
    io,
    net::{Ipv4Addr, SocketAddr, TcpListener},
};

/// Which listeners to bind and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ListenPlan {
    /// Bind `127.0.0.1:0` for every enabled listener; the addresses below are ignored.
    pub ephemeral: bool,
    /// The HTTP proxy.
    pub http: Option<SocketAddr>,
    /// The SOCKS5 proxy.
    pub socks: Option<SocketAddr>,
    /// The admin API.
    pub admin: Option<SocketAddr>,
    /// Allow the proxies on a non-loopback address.
    pub allow_non_loopback_proxy: bool,
    /// Allow the admin API on a non-loopback address.
    pub allow_non_loopback_admin: bool,
}

/// Bound, listening sockets, not yet served. Dropping them closes the ports.
#[derive(Debug)]
pub struct Reserved {
    /// The HTTP proxy listener.
    pub http: Option<TcpListener>,
    /// The SOCKS5 listener.
    pub socks: Option<TcpListener>,
    /// The admin API listener.
    pub admin: Option<TcpListener>,
}

/// A listener that could not be reserved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ListenError {
    /// Binding failed (the port is taken, or the address is not ours).
    #[error("cannot listen on {addr} ({role}): {error}")]
    Bind {
        /// Which listener.
        role: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why (part of the message).
        error: io::Error,
    },
    /// A non-loopback address without the `dangerously_…` flag.
    #[error("refusing to listen on non-loopback {addr} ({role}); set {flag} = true to allow it")]
    NonLoopback {
        /// Which listener.
        role: &'static str,
        /// The address.
        addr: SocketAddr,
        /// The config key that would allow it.
        flag: &'static str,
    },
}

impl ListenPlan {
    /// Binds every enabled listener now. Nothing is dropped and re-bound later: the returned
    /// sockets are the ones the servers accept on.
    pub fn reserve(&self) -> Result<Reserved, ListenError> {
        let proxy_flag = "listen.dangerously_allow_non_loopback_proxy";
        let admin_flag = "listen.dangerously_allow_non_loopback_admin";
        Ok(Reserved {
            http: self.bind("http", self.http, self.allow_non_loopback_proxy, proxy_flag)?,
            socks: self.bind(
                "socks",
                self.socks,
                self.allow_non_loopback_proxy,
                proxy_flag,
            )?,
            admin: self.bind(
                "admin",
                self.admin,
                self.allow_non_loopback_admin,
                admin_flag,
            )?,
        })
    }

    fn bind(
        &self,
        role: &'static str,
        addr: Option<SocketAddr>,
        non_loopback_allowed: bool,
        flag: &'static str,
    ) -> Result<Option<TcpListener>, ListenError> {
        let Some(configured) = addr else {
            return Ok(None);
        };
        let addr = match self.ephemeral {
            true => SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            false => configured,
        };
        if !addr.ip().is_loopback() && !non_loopback_allowed {
            return Err(ListenError::NonLoopback { role, addr, flag });
        }
        let listener =
            TcpListener::bind(addr).map_err(|error| ListenError::Bind { role, addr, error })?;
        // tokio needs non-blocking sockets; doing it here keeps `Reserved` ready to serve.
        listener
            .set_nonblocking(true)
            .map_err(|error| ListenError::Bind { role, addr, error })?;
        Ok(Some(listener))
    }
}

impl Reserved {
    /// The bound address of a listener.
    pub fn addr(listener: &Option<TcpListener>) -> Option<SocketAddr> {
        listener.as_ref().and_then(|l| l.local_addr().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(ephemeral: bool, http: &str) -> ListenPlan {
        ListenPlan {
            ephemeral,
            http: Some(http.parse().unwrap()),
            socks: None,
            admin: Some("127.0.0.1:0".parse().unwrap()),
            allow_non_loopback_proxy: false,
            allow_non_loopback_admin: false,
        }
    }

    #[test]
    fn managed_mode_holds_distinct_ports_until_served() {
        let first = plan(true, "127.0.0.1:3128").reserve().unwrap();
        let second = plan(true, "127.0.0.1:3128").reserve().unwrap();
        let ports = [&first.http, &first.admin, &second.http, &second.admin]
            .map(|l| Reserved::addr(l).unwrap());
        for (i, a) in ports.iter().enumerate() {
            assert_eq!(a.ip(), Ipv4Addr::LOCALHOST);
            assert_ne!(a.port(), 3128, "ephemeral ignores the configured port");
            for b in &ports[i + 1..] {
                assert_ne!(a, b);
            }
            // The port is held: nobody else can bind it between build and run.
            assert!(TcpListener::bind(a).is_err(), "{a} was free again");
        }
        assert!(first.socks.is_none(), "disabled listeners are not bound");
    }

    #[test]
    fn fixed_mode_names_a_taken_address() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let error = plan(false, &addr.to_string())
            .reserve()
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with(&format!("cannot listen on {addr} (http)")),
            "{error}"
        );
    }

    #[test]
    fn non_loopback_needs_the_flag() {
        let error = plan(false, "0.0.0.0:0").reserve().unwrap_err().to_string();
        assert!(
            error.contains("listen.dangerously_allow_non_loopback_proxy"),
            "{error}"
        );
        let mut allowed = plan(false, "0.0.0.0:0");
        allowed.allow_non_loopback_proxy = true;
        assert!(allowed.reserve().is_ok());
    }
}
