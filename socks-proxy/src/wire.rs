//! RFC 1928 / RFC 1929 wire constants (one table) and the address encoding shared by requests,
//! replies and UDP datagrams.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use policy::{escape_untrusted, Host, InvalidTarget, Target};

pub(crate) const VERSION: u8 = 0x05;
pub(crate) const AUTH_VERSION: u8 = 0x01;

pub(crate) const METHOD_NO_AUTH: u8 = 0x00;
pub(crate) const METHOD_USER_PASS: u8 = 0x02;
pub(crate) const METHOD_NONE_ACCEPTABLE: u8 = 0xff;

pub(crate) const AUTH_SUCCESS: u8 = 0x00;
pub(crate) const AUTH_FAILURE: u8 = 0x01;

pub(crate) const CMD_CONNECT: u8 = 0x01;
pub(crate) const CMD_BIND: u8 = 0x02;
pub(crate) const CMD_UDP_ASSOCIATE: u8 = 0x03;

pub(crate) const ATYP_IPV4: u8 = 0x01;
pub(crate) const ATYP_DOMAIN: u8 = 0x03;
pub(crate) const ATYP_IPV6: u8 = 0x04;

pub(crate) const REPLY_SUCCEEDED: u8 = 0x00;
pub(crate) const REPLY_GENERAL_FAILURE: u8 = 0x01;
pub(crate) const REPLY_NOT_ALLOWED: u8 = 0x02;
pub(crate) const REPLY_HOST_UNREACHABLE: u8 = 0x04;
pub(crate) const REPLY_CONNECTION_REFUSED: u8 = 0x05;
pub(crate) const REPLY_TTL_EXPIRED: u8 = 0x06;
pub(crate) const REPLY_COMMAND_NOT_SUPPORTED: u8 = 0x07;
pub(crate) const REPLY_ADDRESS_TYPE_NOT_SUPPORTED: u8 = 0x08;

/// A destination as a client sent it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Address {
    Ip(SocketAddr),
    Domain(Vec<u8>, u16),
}

impl Address {
    /// Parses `ATYP ADDR PORT` from the start of `bytes`; returns the address and bytes used.
    /// `Err(atyp)` for an unknown address type, `Ok(None)` when `bytes` is too short.
    pub(crate) fn parse(bytes: &[u8]) -> Result<Option<(Address, usize)>, u8> {
        let Some((&atyp, rest)) = bytes.split_first() else {
            return Ok(None);
        };
        let (len, host) = match atyp {
            ATYP_IPV4 => (4, 0),
            ATYP_IPV6 => (16, 0),
            ATYP_DOMAIN => match rest.first() {
                Some(&n) => (usize::from(n), 1),
                None => return Ok(None),
            },
            other => return Err(other),
        };
        let Some(addr) = rest.get(host..host + len + 2) else {
            return Ok(None);
        };
        let port = u16::from_be_bytes([addr[len], addr[len + 1]]);
        let address = match atyp {
            ATYP_IPV4 => Address::Ip(SocketAddr::new(
                Ipv4Addr::from(<[u8; 4]>::try_from(&addr[..4]).expect("4")).into(),
                port,
            )),
            ATYP_IPV6 => Address::Ip(SocketAddr::new(
                Ipv6Addr::from(<[u8; 16]>::try_from(&addr[..16]).expect("16")).into(),
                port,
            )),
            _ => Address::Domain(addr[..len].to_vec(), port),
        };
        Ok(Some((address, 1 + host + len + 2)))
    }

    /// The canonical target, through the same canonicalisation HTTP uses (SPEC §1.2).
    pub(crate) fn to_target(&self) -> Result<Target, InvalidTarget> {
        match self {
            Address::Ip(addr) => Target::new(Host::Ip(addr.ip().to_canonical()), addr.port()),
            Address::Domain(bytes, port) => {
                let name = std::str::from_utf8(bytes).map_err(|_| InvalidTarget::NonAscii)?;
                Target::new(Host::parse(name)?, *port)
            }
        }
    }

    /// The host as the client sent it, safe to echo (for blocks of invalid targets).
    pub(crate) fn raw_host(&self) -> String {
        match self {
            Address::Ip(addr) => addr.ip().to_string(),
            Address::Domain(bytes, _) => {
                escape_untrusted(&String::from_utf8_lossy(bytes)).into_owned()
            }
        }
    }

    pub(crate) fn port(&self) -> u16 {
        match self {
            Address::Ip(addr) => addr.port(),
            Address::Domain(_, port) => *port,
        }
    }
}

/// Appends `ATYP ADDR PORT` for `addr`.
pub(crate) fn encode_addr(addr: SocketAddr, out: &mut Vec<u8>) {
    match addr.ip() {
        IpAddr::V4(v4) => {
            out.push(ATYP_IPV4);
            out.extend_from_slice(&v4.octets());
        }
        IpAddr::V6(v6) => {
            out.push(ATYP_IPV6);
            out.extend_from_slice(&v6.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_round_trip() {
        for text in ["1.2.3.4:80", "[::1]:8080"] {
            let addr: SocketAddr = text.parse().unwrap();
            let mut bytes = Vec::new();
            encode_addr(addr, &mut bytes);
            assert_eq!(
                Address::parse(&bytes),
                Ok(Some((Address::Ip(addr), bytes.len())))
            );
        }
        let domain = [ATYP_DOMAIN, 3, b'a', b'.', b'b', 0, 80, 0xff];
        assert_eq!(
            Address::parse(&domain),
            Ok(Some((Address::Domain(b"a.b".to_vec(), 80), 7)))
        );
        assert_eq!(Address::parse(&domain[..5]), Ok(None));
        assert_eq!(Address::parse(&[0x09, 1, 2]), Err(0x09));
    }

    #[test]
    fn domains_are_canonicalised_like_http() {
        let target = |name: &[u8]| {
            Address::Domain(name.to_vec(), 443)
                .to_target()
                .map(|t| t.to_string())
        };
        assert_eq!(target(b"EXAMPLE.com."), Ok("example.com:443".to_owned()));
        assert_eq!(target(b"0x7f.1"), Ok("127.0.0.1:443".to_owned()));
        assert!(target(b"evil\0.test").is_err());
        assert!(target(b"evil.test\r\n").is_err());
        assert_eq!(
            target(b"[::ffff:127.0.0.1]"),
            Ok("127.0.0.1:443".to_owned())
        );
        assert!(target(b"127.0.0.1:80").is_err());
        assert!(target(&[0xff, 0xfe]).is_err());
        assert_eq!(
            Address::Domain(b"x.test".to_vec(), 0).to_target(),
            Err(InvalidTarget::BadPort)
        );
    }
}
