//! IPv4 host parsing by the WHATWG URL rules, so that every spelling a browser, curl or the system
//! resolver would turn into an address (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`) is seen as that
//! address before any rule is matched.

use std::net::Ipv4Addr;

/// What a host string is, as far as IPv4 goes.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Ipv4Host {
    /// Not an IPv4 attempt: its last label is not a number, so it is a name.
    NotIpv4,
    /// A valid IPv4 address in any WHATWG spelling.
    Addr(Ipv4Addr),
    /// It ends in a number but is no valid address (`1.2.3.4.5`, `1.2.3.09`, `example.123`).
    Invalid,
}

/// Classifies `host` (lowercase, trailing dot already removed).
pub(crate) fn parse_ipv4_host(host: &str) -> Ipv4Host {
    if !ends_in_number(host) {
        return Ipv4Host::NotIpv4;
    }
    match parse_parts(host) {
        Some(addr) => Ipv4Host::Addr(addr),
        None => Ipv4Host::Invalid,
    }
}

/// The WHATWG "ends in a number" check: a host whose last label is numeric must be an IPv4 address.
fn ends_in_number(host: &str) -> bool {
    let last = host.rsplit('.').next().unwrap_or(host);
    if !last.is_empty() && last.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    parse_number(last).is_some()
}

fn parse_parts(host: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = host.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let numbers = parts
        .iter()
        .map(|p| parse_number(p))
        .collect::<Option<Vec<u64>>>()?;
    let (last, init) = numbers.split_last()?;
    if init.iter().any(|&n| n > 255) {
        return None;
    }
    // The last part fills every byte the earlier parts left open: `127.1` is 127.0.0.1.
    let open_bytes = 5 - numbers.len() as u32;
    if *last >= 256u64.pow(open_bytes) {
        return None;
    }
    let mut value = *last;
    for (i, n) in init.iter().enumerate() {
        value += n << (8 * (3 - i as u32));
    }
    Some(Ipv4Addr::from(value as u32))
}

/// One IPv4 part: `0x`/`0X` hex, a leading `0` octal, else decimal; an empty part is not a number.
fn parse_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) =
        if let Some(hex) = part.strip_prefix("0x").or_else(|| part.strip_prefix("0X")) {
            (hex, 16)
        } else if part.len() > 1 && part.starts_with('0') {
            (&part[1..], 8)
        } else {
            (part, 10)
        };
    if digits.is_empty() {
        return Some(0);
    }
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn check(input: &str, expected: Ipv4Host) {
        assert_eq!(parse_ipv4_host(input), expected, "input {input:?}");
    }

    fn v4(s: &str) -> Ipv4Host {
        Ipv4Host::Addr(s.parse().unwrap())
    }

    #[test]
    fn whatwg_spellings() {
        check("127.0.0.1", v4("127.0.0.1"));
        check("2130706433", v4("127.0.0.1"));
        check("0177.0.0.1", v4("127.0.0.1"));
        check("0x7f.1", v4("127.0.0.1"));
        check("0x7f000001", v4("127.0.0.1"));
        check("127.1", v4("127.0.0.1"));
        check("127.0.1", v4("127.0.0.1"));
        check("0", v4("0.0.0.0"));
        check("0x", v4("0.0.0.0"));
        check("0xA9FEA9FE", v4("169.254.169.254"));
        check("169.254.43518", v4("169.254.169.254"));
        check("255.255.255.255", v4("255.255.255.255"));
        check("4294967295", v4("255.255.255.255"));
    }

    #[test]
    fn numeric_but_invalid() {
        check("4294967296", Ipv4Host::Invalid);
        check("1.2.3.4.5", Ipv4Host::Invalid);
        check("1.2.3.09", Ipv4Host::Invalid);
        check("256.1.1.1", Ipv4Host::Invalid);
        check("1.2.3.256", Ipv4Host::Invalid);
        check("example.123", Ipv4Host::Invalid);
        check("1..2", Ipv4Host::Invalid);
        check("99999999999999999999999", Ipv4Host::Invalid);
    }

    #[test]
    fn names_are_not_ipv4() {
        check("example.com", Ipv4Host::NotIpv4);
        check("123.example", Ipv4Host::NotIpv4);
        check("0x7f.1g", Ipv4Host::NotIpv4);
        check("a0x1", Ipv4Host::NotIpv4);
    }
}
