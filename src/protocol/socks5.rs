//! SOCKS5 (RFC 1928): the greeting, the method selection, the request and the reply.
//!
//! ```text
//! greeting  +----+----------+----------+      request +----+-----+-------+------+----------+----------+
//!           |VER | NMETHODS | METHODS  |              |VER | CMD |  RSV  | ATYP | DST.ADDR | DST.PORT |
//!           | 1  |    1     | 1 to 255 |              | 1  |  1  | X'00' |  1   | Variable |    2     |
//!           +----+----------+----------+              +----+-----+-------+------+----------+----------+
//! ```
//! The reply has the request's shape with REP in place of CMD and BND.* in place of DST.*.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::{Invalid, Parse};

/// SOCKS protocol version 5, the first byte of every SOCKS5 message.
pub const VERSION: u8 = 0x05;

/// Authentication method codes (RFC 1928 §3).
pub struct Method;

impl Method {
    pub const NO_AUTH: u8 = 0x00;
    pub const GSSAPI: u8 = 0x01;
    pub const USERNAME_PASSWORD: u8 = 0x02;
    pub const NO_ACCEPTABLE: u8 = 0xFF;
}

/// The client's opening message: which authentication methods it can do.
#[derive(Debug, PartialEq, Eq)]
pub struct Greeting<'a> {
    /// Method codes in the client's order of preference, borrowed from the input.
    pub methods: &'a [u8],
}

impl Greeting<'_> {
    pub fn offers(&self, method: u8) -> bool {
        self.methods.contains(&method)
    }
}

/// Parse a greeting: `05 NMETHODS METHODS...`.
///
/// NMETHODS = 0 is accepted as a greeting that offers nothing, so the caller answers it
/// with `05 FF` like any other greeting without an acceptable method.
pub fn parse_greeting(input: &[u8]) -> Parse<Greeting<'_>> {
    let Some(&version) = input.first() else {
        return Parse::Partial;
    };
    if version != VERSION {
        return Parse::Invalid(Invalid::BadVersion(version));
    }
    let Some(&count) = input.get(1) else {
        return Parse::Partial;
    };
    let end = 2 + usize::from(count);
    match input.get(2..end) {
        Some(methods) => Parse::Complete(Greeting { methods }, end),
        None => Parse::Partial,
    }
}

/// The server's answer to a greeting: `05 METHOD`.
pub fn encode_method_selection(method: u8) -> [u8; 2] {
    [VERSION, method]
}

/// The three SOCKS5 commands (RFC 1928 §4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    Connect = 0x01,
    Bind = 0x02,
    UdpAssociate = 0x03,
}

impl Command {
    pub const ALL: [Command; 3] = [Command::Connect, Command::Bind, Command::UdpAssociate];

    /// The command a CMD byte names, if any.
    pub fn from_byte(byte: u8) -> Option<Command> {
        match byte {
            0x01 => Some(Command::Connect),
            0x02 => Some(Command::Bind),
            0x03 => Some(Command::UdpAssociate),
            _ => None,
        }
    }

    /// The command's name in structured output (the JSON access log): `connect`, `bind`,
    /// `udp_associate`.
    pub fn name(self) -> &'static str {
        match self {
            Command::Connect => "connect",
            Command::Bind => "bind",
            Command::UdpAssociate => "udp_associate",
        }
    }
}

/// Address types (ATYP, RFC 1928 §5).
pub struct AddrType;

impl AddrType {
    pub const IPV4: u8 = 0x01;
    pub const DOMAIN_NAME: u8 = 0x03;
    pub const IPV6: u8 = 0x04;
}

/// Where the client wants to go: an IP address, or a name the proxy must resolve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetAddr {
    Ip(SocketAddr),
    Domain(String, u16),
}

impl TargetAddr {
    pub fn port(&self) -> u16 {
        match self {
            TargetAddr::Ip(addr) => addr.port(),
            TargetAddr::Domain(_, port) => *port,
        }
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(addr) => write!(f, "{addr}"),
            TargetAddr::Domain(host, port) => write!(f, "{host}:{port}"),
        }
    }
}

/// A parsed request: a command and its destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub target: TargetAddr,
}

/// Parse a request: `05 CMD 00 ATYP DST.ADDR DST.PORT`.
///
/// An unknown CMD is answered with [`Reply::CommandNotSupported`] and an unknown ATYP with
/// [`Reply::AddressTypeNotSupported`] (RFC 1928 §6) as soon as the offending byte arrives:
/// after an unknown ATYP the message length is unknowable, so there is nothing to wait for.
/// RSV is not checked: RFC 1928 calls it reserved, and rejecting a client that sets it would
/// buy nothing. A domain name that is not UTF-8 can never resolve: [`Reply::HostUnreachable`].
pub fn parse_request(input: &[u8]) -> Parse<Request> {
    let Some(&version) = input.first() else {
        return Parse::Partial;
    };
    if version != VERSION {
        return Parse::Invalid(Invalid::BadVersion(version));
    }
    let Some(&cmd) = input.get(1) else {
        return Parse::Partial;
    };
    let Some(command) = Command::from_byte(cmd) else {
        return Parse::Invalid(Invalid::Reply(Reply::CommandNotSupported));
    };
    // input[2] is RSV.
    match parse_address(input, 3) {
        Parse::Partial => Parse::Partial,
        Parse::Invalid(why) => Parse::Invalid(why),
        Parse::Complete(target, end) => Parse::Complete(Request { command, target }, end),
    }
}

/// Parse `ATYP ADDR PORT` starting at `start`; the returned length counts from 0, not `start`.
///
/// Shared by the request and the UDP request header (RFC 1928 §7), which embed the same field.
pub(crate) fn parse_address(input: &[u8], start: usize) -> Parse<TargetAddr> {
    let Some(&atyp) = input.get(start) else {
        return Parse::Partial;
    };
    let addr_start = start + 1;
    let (addr_len, addr_start) = match atyp {
        AddrType::IPV4 => (4, addr_start),
        AddrType::IPV6 => (16, addr_start),
        AddrType::DOMAIN_NAME => match input.get(addr_start) {
            Some(&len) => (usize::from(len), addr_start + 1),
            None => return Parse::Partial,
        },
        _ => return Parse::Invalid(Invalid::Reply(Reply::AddressTypeNotSupported)),
    };
    let port_start = addr_start + addr_len;
    let end = port_start + 2;
    let (Some(addr), Some(port)) = (input.get(addr_start..port_start), input.get(port_start..end)) else {
        return Parse::Partial;
    };
    let port = u16::from_be_bytes([port[0], port[1]]);
    let target = match atyp {
        AddrType::IPV4 => {
            let octets: [u8; 4] = [addr[0], addr[1], addr[2], addr[3]];
            TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(octets)), port))
        }
        AddrType::IPV6 => {
            let mut octets = [0u8; 16];
            octets.copy_from_slice(addr);
            TargetAddr::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(octets)), port))
        }
        _ => match std::str::from_utf8(addr) {
            Ok(name) => TargetAddr::Domain(name.to_owned(), port),
            Err(_) => return Parse::Invalid(Invalid::Reply(Reply::HostUnreachable)),
        },
    };
    Parse::Complete(target, end)
}

/// Reply codes (REP, RFC 1928 §6).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reply {
    Succeeded = 0x00,
    GeneralFailure = 0x01,
    NotAllowedByRuleset = 0x02,
    NetworkUnreachable = 0x03,
    HostUnreachable = 0x04,
    ConnectionRefused = 0x05,
    TtlExpired = 0x06,
    CommandNotSupported = 0x07,
    AddressTypeNotSupported = 0x08,
}

impl Reply {
    pub const ALL: [Reply; 9] = [
        Reply::Succeeded,
        Reply::GeneralFailure,
        Reply::NotAllowedByRuleset,
        Reply::NetworkUnreachable,
        Reply::HostUnreachable,
        Reply::ConnectionRefused,
        Reply::TtlExpired,
        Reply::CommandNotSupported,
        Reply::AddressTypeNotSupported,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    /// RFC 1928's name for the reply, in snake_case, for structured output (the JSON access
    /// log; metric labels): `succeeded`, `general_failure`, `not_allowed`, ...
    pub fn name(self) -> &'static str {
        match self {
            Reply::Succeeded => "succeeded",
            Reply::GeneralFailure => "general_failure",
            Reply::NotAllowedByRuleset => "not_allowed",
            Reply::NetworkUnreachable => "network_unreachable",
            Reply::HostUnreachable => "host_unreachable",
            Reply::ConnectionRefused => "connection_refused",
            Reply::TtlExpired => "ttl_expired",
            Reply::CommandNotSupported => "command_not_supported",
            Reply::AddressTypeNotSupported => "address_type_not_supported",
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Reply::Succeeded => "succeeded",
            Reply::GeneralFailure => "general failure",
            Reply::NotAllowedByRuleset => "not allowed by ruleset",
            Reply::NetworkUnreachable => "network unreachable",
            Reply::HostUnreachable => "host unreachable",
            Reply::ConnectionRefused => "connection refused",
            Reply::TtlExpired => "TTL expired",
            Reply::CommandNotSupported => "command not supported",
            Reply::AddressTypeNotSupported => "address type not supported",
        };
        write!(f, "{:02} {text}", self.code())
    }
}

/// Append a reply `05 REP 00 ATYP BND.ADDR BND.PORT` to `out`.
///
/// `bound` is the address the server used (the upstream socket's local address for CONNECT).
/// Failure replies have no meaningful address; `None` encodes `0.0.0.0:0`, which every client
/// we know of accepts.
pub fn encode_reply(reply: Reply, bound: Option<SocketAddr>, out: &mut Vec<u8>) {
    out.extend_from_slice(&[VERSION, reply.code(), 0x00]);
    encode_address(bound, out);
}

/// Append `ATYP ADDR PORT` for an IP socket address (`None` = 0.0.0.0:0).
pub(crate) fn encode_address(addr: Option<SocketAddr>, out: &mut Vec<u8>) {
    let addr = addr.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(AddrType::IPV4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(AddrType::IPV6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A parse result without its message: `None` = Partial, `Some(Ok(n))` = Complete using
    /// n bytes, `Some(Err(_))` = Invalid.
    type Outcome = Option<Result<usize, Invalid>>;

    fn outcome<T>(parsed: Parse<T>) -> Outcome {
        match parsed {
            Parse::Partial => None,
            Parse::Complete(_, used) => Some(Ok(used)),
            Parse::Invalid(why) => Some(Err(why)),
        }
    }

    /// Every proper prefix of `bytes` must be Partial, and the whole must be Complete using
    /// exactly `bytes.len()`; the same with trailing bytes appended (kept, not eaten).
    pub(crate) fn assert_every_split(bytes: &[u8], parse: impl Fn(&[u8]) -> Outcome) {
        for cut in 0..bytes.len() {
            assert_eq!(parse(&bytes[..cut]), None, "prefix of {cut} bytes of {bytes:02x?}");
        }
        assert_eq!(parse(bytes), Some(Ok(bytes.len())));
        let mut with_tail = bytes.to_vec();
        with_tail.extend_from_slice(b"early payload");
        assert_eq!(parse(&with_tail), Some(Ok(bytes.len())), "trailing bytes must be kept");
    }

    #[test]
    fn greeting_fixtures() {
        assert_eq!(parse_greeting(&[5, 1, 0]), Parse::Complete(Greeting { methods: &[0] }, 3));
        assert_eq!(parse_greeting(&[5, 2, 0, 2]), Parse::Complete(Greeting { methods: &[0, 2] }, 4));
        assert_eq!(parse_greeting(&[5, 0]), Parse::Complete(Greeting { methods: &[] }, 2));
        assert_eq!(parse_greeting(&[4, 1, 0]), Parse::Invalid(Invalid::BadVersion(4)));
        assert_eq!(parse_greeting(&[]), Parse::Partial);
    }

    #[test]
    fn greeting_every_split_point() {
        let mut max = vec![5, 255];
        max.extend(0..=254u8);
        for bytes in [&[5, 1, 0][..], &[5, 3, 0, 1, 2], &max] {
            assert_every_split(bytes, |b| outcome(parse_greeting(b)));
        }
    }

    #[test]
    fn greeting_offers() {
        let Parse::Complete(greeting, _) = parse_greeting(&[5, 2, 1, 2]) else { panic!("complete") };
        assert!(greeting.offers(Method::USERNAME_PASSWORD));
        assert!(!greeting.offers(Method::NO_AUTH));
    }

    #[test]
    fn request_fixtures() {
        assert_eq!(
            parse_request(&[5, 1, 0, 1, 127, 0, 0, 1, 0x1F, 0x90]),
            Parse::Complete(
                Request {
                    command: Command::Connect,
                    target: TargetAddr::Ip("127.0.0.1:8080".parse().unwrap())
                },
                10
            )
        );
        let mut v6 = vec![5, 2, 0, 4];
        v6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        v6.extend_from_slice(&[0, 80]);
        assert_eq!(
            parse_request(&v6),
            Parse::Complete(
                Request { command: Command::Bind, target: TargetAddr::Ip("[::1]:80".parse().unwrap()) },
                22
            )
        );
        let mut name = vec![5, 3, 0, 3, 9];
        name.extend_from_slice(b"localhost");
        name.extend_from_slice(&[0x01, 0xBB]);
        assert_eq!(
            parse_request(&name),
            Parse::Complete(
                Request {
                    command: Command::UdpAssociate,
                    target: TargetAddr::Domain("localhost".into(), 443)
                },
                16
            )
        );
    }

    #[test]
    fn request_every_split_point() {
        let mut v6 = vec![5, 1, 0, 4];
        v6.extend_from_slice(&[0xfe; 16]);
        v6.extend_from_slice(&[1, 2]);
        let mut longest = vec![5, 1, 0, 3, 255];
        longest.extend(std::iter::repeat_n(b'a', 255));
        longest.extend_from_slice(&[0, 80]);
        for bytes in [&[5, 1, 0, 1, 10, 0, 0, 1, 0, 80][..], &v6, &[5, 1, 0, 3, 1, b'x', 0, 1], &longest] {
            assert_every_split(bytes, |b| outcome(parse_request(b)));
        }
    }

    #[test]
    fn request_errors() {
        assert_eq!(parse_request(&[4, 1, 0, 1]), Parse::Invalid(Invalid::BadVersion(4)));
        assert_eq!(parse_request(&[5, 9, 0, 1]), Parse::Invalid(Invalid::Reply(Reply::CommandNotSupported)));
        assert_eq!(
            parse_request(&[5, 1, 0, 2]),
            Parse::Invalid(Invalid::Reply(Reply::AddressTypeNotSupported))
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 2, 0xff, 0xfe, 0, 80]),
            Parse::Invalid(Invalid::Reply(Reply::HostUnreachable))
        );
        assert_eq!(
            parse_request(&[5, 1, 0, 3, 0, 0, 80]),
            Parse::Complete(
                Request { command: Command::Connect, target: TargetAddr::Domain(String::new(), 80) },
                7
            )
        );
    }

    #[test]
    fn every_reply_code_encodes() {
        for (expected_code, reply) in Reply::ALL.into_iter().enumerate() {
            let mut out = Vec::new();
            encode_reply(reply, None, &mut out);
            assert_eq!(out, [5, expected_code as u8, 0, 1, 0, 0, 0, 0, 0, 0]);
        }
    }

    #[test]
    fn reply_and_command_names() {
        let names: Vec<(u8, &str)> = Reply::ALL.iter().map(|r| (r.code(), r.name())).collect();
        assert_eq!(
            names,
            [
                (0, "succeeded"),
                (1, "general_failure"),
                (2, "not_allowed"),
                (3, "network_unreachable"),
                (4, "host_unreachable"),
                (5, "connection_refused"),
                (6, "ttl_expired"),
                (7, "command_not_supported"),
                (8, "address_type_not_supported"),
            ]
        );
        for (byte, name) in [(1, "connect"), (2, "bind"), (3, "udp_associate")] {
            assert_eq!(Command::from_byte(byte).map(Command::name), Some(name));
        }
    }

    #[test]
    fn labels_are_distinct_snake_case() {
        let replies: Vec<&str> = Reply::ALL.iter().map(|r| r.name()).collect();
        let commands: Vec<&str> = Command::ALL.iter().map(|c| c.name()).collect();
        for labels in [&replies, &commands] {
            for (i, label) in labels.iter().enumerate() {
                assert!(!labels[..i].contains(label), "{label} twice");
                assert!(label.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{label}");
            }
        }
        assert_eq!(replies[2], "not_allowed");
        for command in Command::ALL {
            assert_eq!(Command::from_byte(command as u8), Some(command));
        }
    }

    #[test]
    fn reply_carries_bound_address() {
        let mut out = Vec::new();
        encode_reply(Reply::Succeeded, Some("10.1.2.3:4660".parse().unwrap()), &mut out);
        assert_eq!(out, [5, 0, 0, 1, 10, 1, 2, 3, 0x12, 0x34]);
        out.clear();
        encode_reply(Reply::Succeeded, Some("[::1]:1".parse().unwrap()), &mut out);
        assert_eq!(out.len(), 22);
        assert_eq!(&out[..4], &[5, 0, 0, 4]);
        assert_eq!(&out[4..20], &Ipv6Addr::LOCALHOST.octets());
        assert_eq!(&out[20..], &[0, 1]);
    }

    #[test]
    fn method_selection() {
        assert_eq!(encode_method_selection(Method::NO_ACCEPTABLE), [5, 0xFF]);
    }
}
