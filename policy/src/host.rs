//! Host canonicalisation (SPEC §1.2): the one function every ingress path uses to turn what a client
//! sent into the host that rules are matched against and that the dialer connects to.

use std::{
    fmt,
    net::{IpAddr, Ipv6Addr},
};

use crate::ipv4::{parse_ipv4_host, Ipv4Host};

const MAX_NAME_LEN: usize = 253;
const MAX_LABEL_LEN: usize = 63;

/// A canonical host: a validated lowercase DNS name or an IP address.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Host {
    /// A lowercase ASCII DNS name without a trailing dot.
    Name(Box<str>),
    /// An IP address; an IPv4-mapped IPv6 address is stored as its IPv4 address.
    Ip(IpAddr),
    /// An IPv6 address that carried a zone id (`fe80::1%25eth0`): the zone is dropped and the address
    /// is always treated as link-local.
    ScopedIp(Ipv6Addr),
}

impl Host {
    /// Canonicalises a host as a client sent it (SPEC §1.2). Never "fixes up" bad input.
    pub fn parse(input: &str) -> Result<Host, InvalidTarget> {
        if input.is_empty() {
            return Err(InvalidTarget::Empty);
        }
        if let Some(inner) = input.strip_prefix('[') {
            let inner = inner.strip_suffix(']').ok_or(InvalidTarget::BadIpv6)?;
            return parse_ipv6(inner);
        }
        if input.contains(':') {
            let addr = input.split('%').next().unwrap_or(input);
            if addr
                .bytes()
                .all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
            {
                return parse_ipv6(input);
            }
            // Not IPv6-shaped: report the byte that makes it no name either.
            check_bytes(input)?;
        }
        parse_name_or_ipv4(input)
    }

    /// The IP address, for IP hosts.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Name(_) => None,
            Host::Ip(ip) => Some(*ip),
            Host::ScopedIp(ip) => Some(IpAddr::V6(*ip)),
        }
    }

    /// The DNS name, for name hosts.
    pub fn name(&self) -> Option<&str> {
        match self {
            Host::Name(name) => Some(name),
            Host::Ip(_) | Host::ScopedIp(_) => None,
        }
    }
}

impl fmt::Display for Host {
    /// Names and IPv4 as they are; IPv6 without brackets (a `Target` adds them before a port).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Host::Name(name) => f.write_str(name),
            Host::Ip(ip) => write!(f, "{ip}"),
            Host::ScopedIp(ip) => write!(f, "{ip}"),
        }
    }
}

fn parse_ipv6(input: &str) -> Result<Host, InvalidTarget> {
    let (addr, zone) = match input.split_once('%') {
        Some((addr, zone)) => (addr, Some(zone.strip_prefix("25").unwrap_or(zone))),
        None => (input, None),
    };
    let ip: Ipv6Addr = addr.parse().map_err(|_| InvalidTarget::BadIpv6)?;
    match zone {
        Some(zone) if !is_zone_id(zone) => Err(InvalidTarget::BadIpv6),
        Some(_) => Ok(Host::ScopedIp(ip)),
        None => Ok(Host::Ip(ip.to_canonical())),
    }
}

fn is_zone_id(zone: &str) -> bool {
    !zone.is_empty()
        && zone
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

fn parse_name_or_ipv4(input: &str) -> Result<Host, InvalidTarget> {
    let has_upper = check_bytes(input)?;
    // Lowercased into a copy only when there is something to lower: rules and most clients
    // already send lowercase, and this runs for every request and every rule at start.
    let lower;
    let input = match has_upper {
        true => {
            lower = input.to_ascii_lowercase();
            lower.as_str()
        }
        false => input,
    };
    let name = input.strip_suffix('.').unwrap_or(input);
    match parse_ipv4_host(name) {
        Ipv4Host::Addr(v4) => return Ok(Host::Ip(IpAddr::V4(v4))),
        Ipv4Host::Invalid => return Err(InvalidTarget::BadIpv4),
        Ipv4Host::NotIpv4 => {}
    }
    check_labels(name)?;
    Ok(Host::Name(name.into()))
}

/// Rejects the bytes no DNS name may hold, with the most telling error for each (non-ASCII, then
/// a percent-escape, then the first other forbidden byte), in one pass. `Ok(true)`: some byte is
/// uppercase.
fn check_bytes(input: &str) -> Result<bool, InvalidTarget> {
    let (mut non_ascii, mut percent, mut forbidden, mut upper) = (false, false, None, false);
    for byte in input.bytes() {
        match byte {
            b'a'..=b'z' | b'0'..=b'9' | b'.' | b'-' | b'_' => {}
            b'A'..=b'Z' => upper = true,
            0x80.. => non_ascii = true,
            b'%' => percent = true,
            _ => {
                forbidden.get_or_insert(byte);
            }
        }
    }
    match (non_ascii, percent, forbidden) {
        (true, _, _) => Err(InvalidTarget::NonAscii),
        (false, true, _) => Err(InvalidTarget::PercentEscape),
        (false, false, Some(byte)) => Err(InvalidTarget::ForbiddenByte { byte }),
        (false, false, None) => Ok(upper),
    }
}

fn check_labels(name: &str) -> Result<(), InvalidTarget> {
    if name.len() > MAX_NAME_LEN {
        return Err(InvalidTarget::NameTooLong { len: name.len() });
    }
    // Label by label, by bytes: `split` costs more than the check on names this short.
    let mut label_len = 0;
    for &byte in name.as_bytes().iter().chain(std::iter::once(&b'.')) {
        match byte {
            b'.' if label_len == 0 => return Err(InvalidTarget::EmptyLabel),
            b'.' if label_len > MAX_LABEL_LEN => {
                return Err(InvalidTarget::LabelTooLong { len: label_len })
            }
            b'.' => label_len = 0,
            _ => label_len += 1,
        }
    }
    Ok(())
}

/// Why a host or target was refused (`invalid_target`).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidTarget {
    /// Nothing was given.
    #[error("empty host")]
    Empty,
    /// `a..b`, a leading dot or two trailing dots.
    #[error("empty label in host name")]
    EmptyLabel,
    /// A label over 63 bytes.
    #[error("label of {len} bytes (at most 63)")]
    LabelTooLong {
        /// The label's length.
        len: usize,
    },
    /// A name over 253 bytes.
    #[error("host name of {len} bytes (at most 253)")]
    NameTooLong {
        /// The name's length.
        len: usize,
    },
    /// Non-ASCII input: clients send punycode.
    #[error("non-ASCII host name (clients send punycode)")]
    NonAscii,
    /// `%65vil.test`: percent-escapes are never decoded.
    #[error("percent-escape in host name")]
    PercentEscape,
    /// A byte no DNS name may hold (`@`, `\`, whitespace, control, NUL, …).
    #[error("forbidden byte 0x{byte:02x} in host name")]
    ForbiddenByte {
        /// The first forbidden byte.
        byte: u8,
    },
    /// The host ends in a number but is no valid IPv4 address.
    #[error("malformed IPv4 address")]
    BadIpv4,
    /// Brackets or colons that do not hold a valid IPv6 address (and zone id).
    #[error("malformed IPv6 address")]
    BadIpv6,
    /// A port that is not a number in 1–65535.
    #[error("invalid port (expected 1-65535)")]
    BadPort,
    /// A target without a port where one is required.
    #[error("missing port")]
    MissingPort,
}

/// A canonical target: host and port. Valid by construction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Target {
    host: Host,
    port: u16,
}

impl Target {
    /// A target from a canonical host; port 0 is refused.
    pub fn new(host: Host, port: u16) -> Result<Target, InvalidTarget> {
        if port == 0 {
            return Err(InvalidTarget::BadPort);
        }
        Ok(Target { host, port })
    }

    /// Parses `HOST`, `HOST:PORT`, `[V6]:PORT` or a bare IPv6 address; `default_port` is used when
    /// no port is given (and `None` makes the port required).
    pub fn parse(input: &str, default_port: Option<u16>) -> Result<Target, InvalidTarget> {
        let (host, port) = split_host_port(input)?;
        let port = match port {
            Some(port) => parse_port(port)?,
            None => default_port.ok_or(InvalidTarget::MissingPort)?,
        };
        Target::new(Host::parse(host)?, port)
    }

    /// The canonical host.
    pub fn host(&self) -> &Host {
        &self.host
    }

    /// The port (1–65535).
    pub fn port(&self) -> u16 {
        self.port
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.host {
            Host::Ip(IpAddr::V6(ip)) | Host::ScopedIp(ip) => write!(f, "[{ip}]:{}", self.port),
            host => write!(f, "{host}:{}", self.port),
        }
    }
}

/// Splits an authority-like string into host and optional port, keeping IPv6 brackets on the host.
pub(crate) fn split_host_port(input: &str) -> Result<(&str, Option<&str>), InvalidTarget> {
    if input.starts_with('[') {
        let end = input.find(']').ok_or(InvalidTarget::BadIpv6)?;
        let (host, rest) = input.split_at(end + 1);
        return match rest {
            "" => Ok((host, None)),
            _ => match rest.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(InvalidTarget::BadIpv6),
            },
        };
    }
    if input.matches(':').count() > 1 {
        return Ok((input, None));
    }
    Ok(match input.split_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (input, None),
    })
}

/// A port: 1–5 ASCII digits, 1–65535. No sign, no fallback to a default.
pub(crate) fn parse_port(input: &str) -> Result<u16, InvalidTarget> {
    if input.is_empty() || input.len() > 5 || !input.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidTarget::BadPort);
    }
    match input.parse::<u32>() {
        Ok(port @ 1..=65535) => Ok(port as u16),
        _ => Err(InvalidTarget::BadPort),
    }
}

#[cfg(test)]
mod tests;
