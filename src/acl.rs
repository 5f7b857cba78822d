//! Access rules as plain data: who may connect, and where they may go.
//!
//! The event loop only asks two questions: [`Rules::client_allowed`] at accept (before a
//! byte is read) and [`Rules::destination_allowed`] for every address a CONNECT would use,
//! *after* name resolution, so a name that resolves to a denied address is denied too.
//!
//! Precedence for destinations, first match wins:
//! 1. `--deny-port` and `--deny-dest` always deny;
//! 2. an address inside an `--allow-dest` range is allowed (this is also how an operator
//!    opens one private service while `--block-private` is on);
//! 3. with `--block-private`, private, loopback, link-local and other special ranges deny;
//! 4. if any `--allow-dest` is given, everything else is denied; otherwise allowed.
//!
//! IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`) are judged as the IPv4 address they carry,
//! so a rule cannot be dodged by writing the same host another way.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::str::FromStr;

/// An address range such as `10.0.0.0/8` or `fd00::/8`. A bare address is a single host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    pub fn new(network: IpAddr, prefix: u8) -> Option<Cidr> {
        let max = if network.is_ipv4() { 32 } else { 128 };
        (prefix <= max).then_some(Cidr { network, prefix })
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, canonical(ip)) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => prefix_match(&net.octets(), &ip.octets(), self.prefix),
            (IpAddr::V6(net), IpAddr::V6(ip)) => prefix_match(&net.octets(), &ip.octets(), self.prefix),
            _ => false,
        }
    }
}

impl FromStr for Cidr {
    type Err = String;

    fn from_str(s: &str) -> Result<Cidr, String> {
        let (addr, prefix) = match s.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (s, None),
        };
        let network: IpAddr =
            addr.parse().map_err(|_| format!("'{s}' is not an IP address or CIDR range"))?;
        // A rule written with a mapped address means the IPv4 host.
        let network = canonical(network);
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|&p| p <= max)
                .ok_or_else(|| format!("'{s}': prefix length must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

fn prefix_match(net: &[u8], ip: &[u8], prefix: u8) -> bool {
    let full = usize::from(prefix / 8);
    let rest = prefix % 8;
    if net[..full] != ip[..full] {
        return false;
    }
    if rest == 0 {
        return true;
    }
    let mask = 0xFFu8 << (8 - rest);
    (net[full] & mask) == (ip[full] & mask)
}

/// `::ffff:a.b.c.d` → `a.b.c.d`; everything else unchanged.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        },
        v4 => v4,
    }
}

/// Addresses an exposed proxy should never reach on a client's behalf: this host, private
/// networks, link-local (including cloud metadata at 169.254.169.254), and special ranges.
pub fn is_private(ip: IpAddr) -> bool {
    match canonical(ip) {
        IpAddr::V4(v4) => is_private_v4(v4),
        IpAddr::V6(v6) => is_private_v6(v6),
    }
}

fn is_private_v4(ip: Ipv4Addr) -> bool {
    let [a, b, ..] = ip.octets();
    ip.is_unspecified()          // 0.0.0.0 reaches this host
        || a == 0                // 0.0.0.0/8 "this network"
        || ip.is_loopback()      // 127.0.0.0/8
        || ip.is_private()       // 10/8, 172.16/12, 192.168/16
        || ip.is_link_local()    // 169.254/16, cloud metadata
        || (a == 100 && (64..128).contains(&b)) // 100.64/10 carrier-grade NAT
        || (a == 192 && b == 0 && ip.octets()[2] == 0) // 192.0.0.0/24 IETF protocol assignments
        || (a == 198 && (b == 18 || b == 19)) // 198.18/15 benchmarking
        || ip.is_multicast()     // 224/4
        || a >= 240 // 240/4 reserved, and broadcast
}

fn is_private_v6(ip: Ipv6Addr) -> bool {
    let seg = ip.segments();
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) carry an IPv4 address that would be reached.
    if seg[0] == 0x64 && seg[1] == 0xff9b && seg[2..6] == [0, 0, 0, 0] {
        let o = ip.octets();
        return is_private_v4(Ipv4Addr::new(o[12], o[13], o[14], o[15]));
    }
    if seg[0] == 0x2002 {
        let o = ip.octets();
        return is_private_v4(Ipv4Addr::new(o[2], o[3], o[4], o[5]));
    }
    ip.is_unspecified()
        || ip.is_loopback()
        || (seg[0] & 0xffc0) == 0xfe80 // fe80::/10 link-local
        || (seg[0] & 0xfe00) == 0xfc00 // fc00::/7 unique local
        || (seg[0] & 0xffc0) == 0xfec0 // fec0::/10 deprecated site-local
        || ip.is_multicast()
        || seg[..6] == [0, 0, 0, 0, 0, 0] // ::/96 IPv4-compatible (deprecated)
}

/// Who may connect and where they may go. Empty rules allow everything.
#[derive(Debug, Clone, Default)]
pub struct Rules {
    /// If non-empty, only clients inside one of these ranges are served.
    pub allow_clients: Vec<Cidr>,
    pub allow_dest: Vec<Cidr>,
    pub deny_dest: Vec<Cidr>,
    pub deny_ports: Vec<u16>,
    pub block_private: bool,
}

impl Rules {
    pub fn client_allowed(&self, ip: IpAddr) -> bool {
        self.allow_clients.is_empty() || self.allow_clients.iter().any(|c| c.contains(ip))
    }

    pub fn destination_allowed(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip();
        if self.deny_ports.contains(&addr.port()) || self.deny_dest.iter().any(|c| c.contains(ip)) {
            return false;
        }
        if self.allow_dest.iter().any(|c| c.contains(ip)) {
            return true;
        }
        if self.block_private && is_private(ip) {
            return false;
        }
        self.allow_dest.is_empty()
    }

    /// Whether any destination rule is set (so the loop can skip the checks).
    pub fn restricts_destinations(&self) -> bool {
        !self.allow_dest.is_empty()
            || !self.deny_dest.is_empty()
            || !self.deny_ports.is_empty()
            || self.block_private
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cidr_parsing_and_matching() {
        let c: Cidr = "10.0.0.0/8".parse().unwrap();
        assert!(c.contains(ip("10.255.1.2")));
        assert!(!c.contains(ip("11.0.0.1")));
        assert!(c.contains(ip("::ffff:10.1.2.3")), "mapped form is the same host");
        let c: Cidr = "192.168.1.128/25".parse().unwrap();
        assert!(c.contains(ip("192.168.1.200")) && !c.contains(ip("192.168.1.100")));
        let c: Cidr = "fd00::/8".parse().unwrap();
        assert!(c.contains(ip("fd12::1")) && !c.contains(ip("fe80::1")));
        let host: Cidr = "127.0.0.1".parse().unwrap();
        assert_eq!(host.to_string(), "127.0.0.1/32");
        assert!(!host.contains(ip("127.0.0.2")));
        let all: Cidr = "0.0.0.0/0".parse().unwrap();
        assert!(all.contains(ip("8.8.8.8")) && !all.contains(ip("::1")));
        for bad in ["10.0.0.0/33", "::/129", "nonsense", "10.0.0.0/x", ""] {
            assert!(bad.parse::<Cidr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn private_ranges() {
        for private in [
            "127.0.0.1",
            "10.1.1.1",
            "172.16.0.1",
            "172.31.255.255",
            "192.168.0.1",
            "169.254.169.254",
            "0.0.0.0",
            "100.64.0.1",
            "::1",
            "::",
            "fe80::1",
            "fd00::1",
            "::ffff:127.0.0.1",
            "::ffff:169.254.169.254",
            "64:ff9b::a00:1",
            "2002:c0a8:0101::1",
            "224.0.0.1",
            "255.255.255.255",
        ] {
            assert!(is_private(ip(private)), "{private} should be private");
        }
        for public in ["8.8.8.8", "172.32.0.1", "1.1.1.1", "2606:4700::1111", "64:ff9b::808:808"] {
            assert!(!is_private(ip(public)), "{public} should be public");
        }
    }

    #[test]
    fn destination_precedence() {
        let rules = Rules {
            allow_dest: vec!["10.1.2.3/32".parse().unwrap()],
            deny_dest: vec!["10.1.2.0/24".parse().unwrap()],
            deny_ports: vec![25],
            block_private: true,
            ..Rules::default()
        };
        assert!(!rules.destination_allowed(sa("10.1.2.3:80")), "deny beats allow");
        let rules = Rules {
            allow_dest: vec!["10.1.2.3/32".parse().unwrap()],
            deny_ports: vec![25],
            block_private: true,
            ..Rules::default()
        };
        assert!(rules.destination_allowed(sa("10.1.2.3:80")), "allow opens a private host");
        assert!(!rules.destination_allowed(sa("10.1.2.3:25")), "port deny always wins");
        assert!(!rules.destination_allowed(sa("8.8.8.8:80")), "allow list excludes the rest");

        let rules = Rules { block_private: true, ..Rules::default() };
        assert!(rules.destination_allowed(sa("8.8.8.8:443")));
        assert!(!rules.destination_allowed(sa("127.0.0.1:80")));
        assert!(!rules.destination_allowed(sa("[::ffff:192.168.1.1]:80")));
        assert!(Rules::default().destination_allowed(sa("127.0.0.1:80")));
    }

    #[test]
    fn client_rules() {
        let rules = Rules { allow_clients: vec!["127.0.0.0/8".parse().unwrap()], ..Rules::default() };
        assert!(rules.client_allowed(ip("127.0.0.5")));
        assert!(rules.client_allowed(ip("::ffff:127.0.0.5")));
        assert!(!rules.client_allowed(ip("::1")));
        assert!(Rules::default().client_allowed(ip("203.0.113.9")));
    }
}
