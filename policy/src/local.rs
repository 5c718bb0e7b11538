//! Local ("non-public") addresses and names (SPEC §1.4): the targets that are refused unless
//! `allow_local` covers them, before DNS for literals and after DNS for every resolved address.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::net::{mask_v4, mask_v6, IpNet};

/// Non-public IPv4 networks, plus the cloud metadata addresses.
const LOCAL_V4: &[(u32, u8)] = &[
    (0x0000_0000, 8), // 0.0.0.0/8 "this network"; 0.0.0.0 reaches local listeners on Linux
    (0x0a00_0000, 8), // 10/8
    (0x6440_0000, 10), // 100.64/10 CGNAT
    (0x7f00_0000, 8), // 127/8
    (0xa9fe_0000, 16), // 169.254/16 link-local and the 169.254.169.254 metadata service
    (0xac10_0000, 12), // 172.16/12
    (0xc000_0000, 24), // 192.0.0/24
    (0xc000_0200, 24), // 192.0.2/24 TEST-NET-1
    (0xc0a8_0000, 16), // 192.168/16
    (0xc612_0000, 15), // 198.18/15 benchmarking
    (0xc633_6400, 24), // 198.51.100/24 TEST-NET-2
    (0xcb00_7100, 24), // 203.0.113/24 TEST-NET-3
    (0xe000_0000, 4), // 224/4 multicast
    (0xf000_0000, 4), // 240/4 reserved, and 255.255.255.255
    (0x6464_64c8, 32), // 100.100.100.200 Alibaba metadata
    (0xa83f_8110, 32), // 168.63.129.16 Azure wire server
];

/// Non-public IPv6 networks; embedded-IPv4 forms are handled by `embedded_ipv4`.
const LOCAL_V6: &[(u128, u8)] = &[
    (0, 128),                           // ::
    (1, 128),                           // ::1
    (0xfc00 << 112, 7),                 // fc00::/7 unique local
    (0xfe80 << 112, 10),                // fe80::/10 link-local
    (0xfec0 << 112, 10),                // fec0::/10 site-local
    (0xff00 << 112, 8),                 // ff00::/8 multicast
    (0x2001_0db8 << 96, 32),            // 2001:db8::/32 documentation
    ((0xfd00_0ec2 << 96) | 0x254, 128), // fd00:ec2::254 AWS metadata
];

/// Names that always mean "this machine" or a metadata service, whatever DNS says.
const LOCAL_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "metadata.google.internal",
];

/// Whether `ip` is a local address, classifying IPv4 embedded in IPv6 by its IPv4.
pub fn is_local_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => is_local_v4(v4),
        IpAddr::V6(v6) => is_local_v6(v6),
    }
}

/// Whether `name` (canonical) is a local name: `localhost`, `*.localhost`, `localhost.localdomain`,
/// `metadata.google.internal`.
pub fn is_local_name(name: &str) -> bool {
    LOCAL_NAMES.contains(&name) || name.ends_with(".localhost")
}

/// Whether every address of `net` is local: some local range holds the whole network.
pub(crate) fn is_local_net(net: &IpNet) -> bool {
    match net.addr() {
        IpAddr::V4(v4) => LOCAL_V4
            .iter()
            .any(|&(base, prefix)| prefix <= net.prefix() && mask_v4(v4.into(), prefix) == base),
        IpAddr::V6(v6) => LOCAL_V6
            .iter()
            .any(|&(base, prefix)| prefix <= net.prefix() && mask_v6(v6.into(), prefix) == base),
    }
}

fn is_local_v4(ip: Ipv4Addr) -> bool {
    let bits = u32::from(ip);
    LOCAL_V4
        .iter()
        .any(|&(net, prefix)| mask_v4(bits, prefix) == net)
}

fn is_local_v6(ip: Ipv6Addr) -> bool {
    let bits = u128::from(ip);
    LOCAL_V6
        .iter()
        .any(|&(net, prefix)| mask_v6(bits, prefix) == net)
        || embedded_ipv4(ip).into_iter().flatten().any(is_local_v4)
}

/// The IPv4 addresses an IPv6 address carries (SPEC §1.2 step 3): mapped, compatible, SIIT
/// translated, NAT64 (`64:ff9b::/96`, `64:ff9b:1::/48`), 6to4, and both Teredo fields.
pub fn embedded_ipv4(ip: Ipv6Addr) -> [Option<Ipv4Addr>; 2] {
    let bits = u128::from(ip);
    let low32 = Ipv4Addr::from(bits as u32);
    let seg = ip.segments();
    match seg {
        [0, 0, 0, 0, 0, 0xffff, _, _] => [Some(low32), None], // ::ffff:a.b.c.d mapped
        [0, 0, 0, 0, 0xffff, 0, _, _] => [Some(low32), None], // ::ffff:0:a.b.c.d translated
        [0, 0, 0, 0, 0, 0, _, _] => [Some(low32), None],      // ::a.b.c.d compatible
        [0x64, 0xff9b, 0, 0, 0, 0, _, _] => [Some(low32), None],
        [0x64, 0xff9b, 1, ..] => [Some(nat64_48(bits)), None],
        [0x2002, ..] => [Some(Ipv4Addr::from((bits >> 80) as u32)), None],
        [0x2001, 0, ..] => {
            let server = Ipv4Addr::from((bits >> 64) as u32);
            let client = Ipv4Addr::from(!(bits as u32));
            [Some(server), Some(client)]
        }
        _ => [None, None],
    }
}

/// RFC 6052 with a /48 prefix: the IPv4 address straddles the reserved `u` octet (bits 64–71).
fn nat64_48(bits: u128) -> Ipv4Addr {
    let high = ((bits >> 64) & 0xffff) as u32; // bits 48–63: first two bytes
    let low = ((bits >> 40) & 0xffff) as u32; // bits 72–87: last two bytes
    Ipv4Addr::from((high << 16) | low)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[track_caller]
    fn local(ip: &str, expected: bool) {
        let ip: IpAddr = ip.parse().unwrap();
        assert_eq!(is_local_ip(ip), expected, "{ip}");
    }

    #[test]
    fn ipv4_ranges() {
        for ip in [
            "0.0.0.0",
            "10.1.2.3",
            "100.64.0.1",
            "100.127.255.255",
            "127.0.0.1",
            "127.255.0.9",
            "169.254.169.254",
            "172.16.0.1",
            "172.31.255.255",
            "192.0.0.8",
            "192.0.2.1",
            "192.168.1.1",
            "198.18.0.1",
            "198.19.255.255",
            "198.51.100.7",
            "203.0.113.9",
            "224.0.0.1",
            "239.255.255.250",
            "240.0.0.1",
            "255.255.255.255",
            "100.100.100.200",
            "168.63.129.16",
        ] {
            local(ip, true);
        }
        for ip in [
            "1.1.1.1",
            "8.8.8.8",
            "100.63.255.255",
            "100.128.0.0",
            "172.15.255.255",
            "172.32.0.0",
            "192.0.1.1",
            "198.20.0.0",
            "100.128.0.1",
            "168.63.129.17",
            "223.255.255.255",
        ] {
            local(ip, false);
        }
    }

    #[test]
    fn ipv6_ranges_and_embedded_ipv4() {
        for ip in [
            "::",
            "::1",
            "fc00::1",
            "fd12::1",
            "fe80::1",
            "febf::1",
            "fec0::1",
            "ff02::1",
            "2001:db8::1",
            "fd00:ec2::254",
            "::ffff:127.0.0.1",
            "::ffff:7f00:1",
            "::127.0.0.1",
            "::ffff:0:10.0.0.1",
            "64:ff9b::7f00:1",
            "64:ff9b::a9fe:a9fe",
            "2002:7f00:1::1",
            "2002:a9fe:a9fe::",
            "2001:0:7f00:1::",
            "2001:0:0808:0808:0:0:80ff:fffe",
            "64:ff9b:1:7f00:0:100::",
        ] {
            local(ip, true);
        }
        for ip in [
            "2606:4700::1111",
            "2001:4860:4860::8888",
            "::ffff:8.8.8.8",
            "64:ff9b::808:808",
            "2002:808:808::1",
            "2001:0:808:808:0:0:f7f7:f7f7",
            "64:ff9b:1:808:8:800::",
        ] {
            local(ip, false);
        }
    }

    #[test]
    fn local_names() {
        for name in [
            "localhost",
            "a.localhost",
            "localhost.localdomain",
            "metadata.google.internal",
        ] {
            assert!(is_local_name(name), "{name}");
        }
        for name in ["localhost.example", "notlocalhost", "google.internal"] {
            assert!(!is_local_name(name), "{name}");
        }
    }
}
