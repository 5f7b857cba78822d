//! The PROXY protocol header (HAProxy's `proxy-protocol.txt`, versions 1 and 2): the few bytes
//! a load balancer sends before the client's own bytes to say whom the connection is from.
//!
//! ```text
//! v1  PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n         one text line, at most 107 bytes
//!     PROXY UNKNOWN[ anything]\r\n
//! v2  +-----------+---------+-----------+-----+------------------------------------+
//!     | signature | ver|cmd | fam|proto | len | addresses, then TLVs (len bytes)   |
//!     |    12     |    1    |     1     |  2  | 12 (IPv4), 36 (IPv6), 216 (UNIX).. |
//!     +-----------+---------+-----------+-----+------------------------------------+
//! ```
//!
//! [`parse_proxy_header`] follows the codec's contract (see [`Parse`]): Partial until the whole
//! header is in, then `Complete(header, consumed)` with `consumed` exactly the header's length,
//! so the SOCKS greeting that often shares its segment stays for the next parser. It answers
//! Invalid as soon as no continuation could be a valid header: on the first byte that is
//! neither `P` nor `\r`, on the first byte off either signature, on a v1 field that can no
//! longer become valid, and on a v2 version, command, family or length byte that is wrong.
//!
//! Where the spec leaves room, this parser decides:
//!
//! * **v1 `UNKNOWN`**: `PROXY UNKNOWN` ends the line or is followed by a space and anything
//!   (the spec: "the receiver must ignore anything presented before the CRLF"), except a lone
//!   CR or LF. Addresses are `None`, the command [`ProxyCommand::Proxy`].
//! * **v1 addresses**: TCP4 takes dotted-quad IPv4 without leading zeros; TCP6 takes what
//!   [`Ipv6Addr`]'s parser takes, which includes the `::ffff:a.b.c.d` form HAProxy itself
//!   emits for IPv4 clients of an IPv6 listener (the address is returned as sent, IPv4-mapped;
//!   the caller may canonicalize it). No zone index. The address must be of the named family.
//! * **v1 ports**: decimal 0..=65535, no sign, no leading zero (`0` itself is fine).
//! * **v2 LOCAL**: the family byte is ignored and the `len` bytes after the fixed part are
//!   skipped unread (the spec: "discard the protocol block including the family").
//! * **v2 PROXY**: a family nibble above 3 (AF_UNIX) or a transport nibble above 2 (DGRAM) is
//!   Invalid, as the spec requires. TCP over IPv4 and IPv6 give addresses. Every other valid
//!   combination falls back to "unspecified", as the spec asks of a receiver that does not
//!   implement it: addresses `None`, the connection then behaves as from the balancer. That is
//!   AF_UNSPEC or transport UNSPEC (the block is skipped unread), UDP over IPv4 or IPv6
//!   (socksloop's listeners are TCP; a DGRAM header there describes some other connection),
//!   and AF_UNIX (no IP address to act on).
//! * **v2 address block**: `len` below what the family needs (12, 36, 216) is Invalid. After
//!   the addresses come TLVs: they are not interpreted (no CRC32C check, which the spec only
//!   requires of a receiver that supports it) but must tile the rest of the block exactly, as
//!   HAProxy checks, so a mangled header is not taken for a valid one.
//! * **v2 length**: `len` above [`V2_MAX_BLOCK_LEN`] is Invalid as soon as the length field
//!   is in (see there why).

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use super::Parse;

/// The start of every v1 header.
pub const V1_SIGNATURE: &[u8; 6] = b"PROXY ";

/// The longest v1 line, CRLF included: the spec's worst case,
/// `PROXY UNKNOWN ffff:f...f:ffff ffff:f...f:ffff 65535 65535\r\n`. A line without its CRLF
/// in this many bytes is Invalid.
pub const V1_MAX_LEN: usize = 107;

/// The 12 bytes every v2 header starts with.
pub const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// The fixed part of a v2 header: signature, version and command, family and transport, len.
pub const V2_FIXED_LEN: usize = 16;

/// The largest v2 address block (the addresses, then TLVs) accepted: 216 bytes for the
/// largest address block the spec defines (two AF_UNIX paths of 108 bytes) plus 4 KiB of TLVs.
///
/// The length field allows 65 535 bytes, and every byte of the header must be buffered before
/// the connection's first SOCKS byte can be read. What balancers actually send is far smaller:
/// HAProxy's TLVs (ALPN, authority, a unique ID of at most 128 bytes, the SSL summary with
/// version, cipher, algorithms and client CN, netns) and the cloud balancers' single TLV (a
/// VPC endpoint or link ID) stay well under 1 KiB. 4 KiB is room to spare for those while
/// keeping the buffer a connection needs before it is even identified small and fixed.
pub const V2_MAX_BLOCK_LEN: usize = 216 + 4096;

/// The longest header [`parse_proxy_header`] can return as Complete (4328 bytes, a v2 header
/// with the largest block). A buffer this large never fills up before the parser decides.
pub const MAX_HEADER_LEN: usize = V2_FIXED_LEN + V2_MAX_BLOCK_LEN;

/// Which version of the protocol the header was written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyVersion {
    /// The text line.
    V1,
    /// The binary header.
    V2,
}

/// What the balancer says the connection is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyCommand {
    /// v2 LOCAL: the balancer opened the connection itself (a health check). Never carries
    /// addresses.
    Local,
    /// v2 PROXY, and every v1 header: the connection is relayed on behalf of a client.
    Proxy,
}

/// A parsed PROXY protocol header.
///
/// `source` and `destination` are both `Some` or both `None`. `None` (v2 LOCAL, v1 UNKNOWN,
/// and the v2 families and transports this parser does not implement) means the header says
/// nothing usable about the client: the connection then behaves as from the balancer itself,
/// with the real socket's addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ProxyHeader {
    pub version: ProxyVersion,
    pub command: ProxyCommand,
    /// The client's address and port as the balancer saw them.
    pub source: Option<SocketAddr>,
    /// The address and port the client connected to (the balancer's listener).
    pub destination: Option<SocketAddr>,
}

/// Why bytes can never become a PROXY protocol header. Each means: close the connection
/// without answering (the spec: "abort the connection").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProxyError {
    /// The first bytes match neither `PROXY ` nor the v2 signature.
    NotProxy,
    /// v1: no CRLF in the first [`V1_MAX_LEN`] bytes.
    V1TooLong,
    /// v1: a CR not followed by LF, or an LF not preceded by CR.
    V1BadLineEnd,
    /// v1: the protocol is not `TCP4`, `TCP6` or `UNKNOWN`.
    V1BadProtocol,
    /// v1: not exactly one space between fields, or not exactly four fields after the protocol.
    V1Syntax,
    /// v1: an address that is not one of the named family in its canonical text form.
    V1BadAddress,
    /// v1: a port that is not decimal 0..=65535 without leading zeros.
    V1BadPort,
    /// v2: the version nibble (high half of the 13th byte) is not 2.
    V2BadVersion(u8),
    /// v2: the command nibble (low half of the 13th byte) is neither LOCAL (0) nor PROXY (1).
    V2BadCommand(u8),
    /// v2 PROXY: the family and transport byte has a family above AF_UNIX (3) or a transport
    /// above DGRAM (2).
    V2BadFamily(u8),
    /// v2: the length field is above [`V2_MAX_BLOCK_LEN`].
    V2TooLong(u16),
    /// v2 PROXY: the length field is too short for the addresses of the family byte.
    V2AddressTooShort { family: u8, len: u16 },
    /// v2 PROXY: the bytes after the addresses are not a sequence of whole TLVs.
    V2BadTlv,
}

impl fmt::Display for ProxyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ProxyError::NotProxy => f.write_str("not a PROXY protocol header"),
            ProxyError::V1TooLong => write!(f, "PROXY v1 line without CRLF in {V1_MAX_LEN} bytes"),
            ProxyError::V1BadLineEnd => f.write_str("PROXY v1 line with a lone CR or LF"),
            ProxyError::V1BadProtocol => f.write_str("PROXY v1 protocol is not TCP4, TCP6 or UNKNOWN"),
            ProxyError::V1Syntax => {
                f.write_str("PROXY v1 line without four fields separated by single spaces")
            }
            ProxyError::V1BadAddress => f.write_str("PROXY v1 address invalid for its family"),
            ProxyError::V1BadPort => f.write_str("PROXY v1 port invalid"),
            ProxyError::V2BadVersion(v) => write!(f, "PROXY v2 header with version {v}"),
            ProxyError::V2BadCommand(c) => write!(f, "PROXY v2 header with command {c}"),
            ProxyError::V2BadFamily(fam) => write!(f, "PROXY v2 header with family byte {fam:#04x}"),
            ProxyError::V2TooLong(len) => {
                write!(
                    f,
                    "PROXY v2 header with {len} bytes of addresses and TLVs (at most {V2_MAX_BLOCK_LEN})"
                )
            }
            ProxyError::V2AddressTooShort { family, len } => {
                write!(f, "PROXY v2 header with family byte {family:#04x} and only {len} address bytes")
            }
            ProxyError::V2BadTlv => f.write_str("PROXY v2 header with a TLV overrunning the header"),
        }
    }
}

impl std::error::Error for ProxyError {}

/// Parse a PROXY protocol v1 or v2 header at the start of a connection's bytes.
///
/// The version is told by the first byte (`P` for v1, CR for v2); any other first byte is
/// [`ProxyError::NotProxy`] at once. See the module documentation for what is accepted.
pub fn parse_proxy_header(input: &[u8]) -> Parse<ProxyHeader, ProxyError> {
    let parsed = match input.first() {
        None => Ok(None),
        Some(b'P') => parse_v1(input),
        Some(b'\r') => parse_v2(input),
        Some(_) => Err(ProxyError::NotProxy),
    };
    match parsed {
        Ok(None) => Parse::Partial,
        Ok(Some((header, used))) => Parse::Complete(header, used),
        Err(why) => Parse::Invalid(why),
    }
}

/// `Ok(None)` is Partial, `Ok(Some((header, consumed)))` Complete.
type Step = Result<Option<(ProxyHeader, usize)>, ProxyError>;

/// True if `input` is a prefix of `signature` or starts with it.
fn matches_signature(input: &[u8], signature: &[u8]) -> bool {
    let n = input.len().min(signature.len());
    input[..n] == signature[..n]
}

fn parse_v1(input: &[u8]) -> Step {
    if !matches_signature(input, V1_SIGNATURE) {
        return Err(ProxyError::NotProxy);
    }
    let Some(window) = input.get(V1_SIGNATURE.len()..input.len().min(V1_MAX_LEN)) else {
        return Ok(None);
    };
    let Some(i) = window.iter().position(|&b| b == b'\r' || b == b'\n') else {
        // No line end yet: fail early if the fields so far cannot start a valid line.
        check_v1_fields(window, false)?;
        return if input.len() >= V1_MAX_LEN { Err(ProxyError::V1TooLong) } else { Ok(None) };
    };
    let fields = &window[..i];
    let cr = V1_SIGNATURE.len() + i;
    let end = cr + 2;
    if input[cr] == b'\n' {
        return Err(ProxyError::V1BadLineEnd);
    }
    match input.get(cr + 1) {
        Some(b'\n') | None => {}
        Some(_) => return Err(ProxyError::V1BadLineEnd),
    }
    // A CR is in: the only valid continuation is LF, which ends the line with these fields.
    let line = check_v1_fields(fields, true)?;
    if end > V1_MAX_LEN {
        return Err(ProxyError::V1TooLong);
    }
    if input.len() < end {
        return Ok(None);
    }
    let (source, destination) = match line {
        V1Line::Tcp(source, destination) => (Some(source), Some(destination)),
        V1Line::Unknown => (None, None),
        // check_v1_fields answers Viable only for a line that is not complete.
        V1Line::Viable => return Err(ProxyError::V1Syntax),
    };
    let header = ProxyHeader { version: ProxyVersion::V1, command: ProxyCommand::Proxy, source, destination };
    Ok(Some((header, end)))
}

/// What the text after `PROXY ` says so far.
enum V1Line {
    /// Not complete, but some continuation can still be valid.
    Viable,
    /// A complete `UNKNOWN` line.
    Unknown,
    /// A complete TCP4 or TCP6 line.
    Tcp(SocketAddr, SocketAddr),
}

#[derive(Clone, Copy)]
enum Family {
    V4,
    V6,
}

/// Check the fields between `PROXY ` and the CRLF. With `complete` false, the text may still
/// grow: its last field is checked as the start of a field, and a missing field is no error.
fn check_v1_fields(text: &[u8], complete: bool) -> Result<V1Line, ProxyError> {
    let mut fields = text.split(|&b| b == b' ').peekable();
    let protocol = fields.next().unwrap_or_default();
    if !complete && fields.peek().is_none() {
        // The protocol itself may still be arriving.
        let known = [&b"TCP4"[..], b"TCP6", b"UNKNOWN"];
        return if known.iter().any(|p| p.starts_with(protocol)) {
            Ok(V1Line::Viable)
        } else {
            Err(ProxyError::V1BadProtocol)
        };
    }
    let family = match protocol {
        b"TCP4" => Family::V4,
        b"TCP6" => Family::V6,
        // The rest of an UNKNOWN line is ignored, whatever it is.
        b"UNKNOWN" => return Ok(if complete { V1Line::Unknown } else { V1Line::Viable }),
        _ => return Err(ProxyError::V1BadProtocol),
    };
    let mut ips = [None; 2];
    let mut ports = [None; 2];
    let mut index = 0;
    while let Some(field) = fields.next() {
        let growing = !complete && fields.peek().is_none();
        if index >= 4 {
            return Err(ProxyError::V1Syntax);
        }
        if field.is_empty() {
            return if growing { Ok(V1Line::Viable) } else { Err(ProxyError::V1Syntax) };
        }
        if index < 2 {
            if growing {
                if !ip_prefix_viable(family, field) {
                    return Err(ProxyError::V1BadAddress);
                }
            } else {
                ips[index] = Some(parse_ip(family, field).ok_or(ProxyError::V1BadAddress)?);
            }
        } else {
            // Every digit-only prefix of a valid port is a valid port (no leading zeros), so
            // the complete check is also the right check of a port still arriving.
            ports[index - 2] = Some(parse_port(field).ok_or(ProxyError::V1BadPort)?);
        }
        index += 1;
    }
    if !complete {
        return Ok(V1Line::Viable);
    }
    match (ips, ports) {
        ([Some(src), Some(dst)], [Some(sport), Some(dport)]) => {
            Ok(V1Line::Tcp(SocketAddr::new(src, sport), SocketAddr::new(dst, dport)))
        }
        _ => Err(ProxyError::V1Syntax),
    }
}

fn parse_ip(family: Family, text: &[u8]) -> Option<IpAddr> {
    let text = std::str::from_utf8(text).ok()?;
    match family {
        // Ipv4Addr's parser takes exactly four decimal octets and rejects leading zeros.
        Family::V4 => text.parse::<Ipv4Addr>().ok().map(IpAddr::V4),
        Family::V6 => text.parse::<Ipv6Addr>().ok().map(IpAddr::V6),
    }
}

/// Can `text` still grow into an address of `family`? Exact for IPv4; for IPv6 only the
/// characters and the length (45: `ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255`) are
/// checked, and the full parse waits for the end of the field.
fn ip_prefix_viable(family: Family, text: &[u8]) -> bool {
    match family {
        Family::V4 => {
            let mut octets = text.split(|&b| b == b'.').peekable();
            let mut count = 0;
            while let Some(octet) = octets.next() {
                count += 1;
                let last = octets.peek().is_none();
                // Like ports, every prefix of a valid octet is a valid octet, or empty.
                let ok = (last && octet.is_empty()) || parse_decimal(octet, 3).is_some_and(|n| n <= 255);
                if count > 4 || !ok {
                    return false;
                }
            }
            true
        }
        Family::V6 => {
            text.len() <= 45 && text.iter().all(|&b| b.is_ascii_hexdigit() || b == b':' || b == b'.')
        }
    }
}

fn parse_port(text: &[u8]) -> Option<u16> {
    parse_decimal(text, 5).and_then(|n| u16::try_from(n).ok())
}

/// 1 to `max_digits` ASCII digits, no leading zero unless the number is 0.
fn parse_decimal(text: &[u8], max_digits: usize) -> Option<u32> {
    if text.is_empty() || text.len() > max_digits || (text.len() > 1 && text[0] == b'0') {
        return None;
    }
    text.iter().try_fold(0u32, |n, &b| b.is_ascii_digit().then(|| n * 10 + u32::from(b - b'0')))
}

/// How a v2 address block is laid out, from the command and the family and transport byte.
enum Layout {
    /// LOCAL, or AF_UNSPEC / transport UNSPEC: nothing in the block is read.
    Skip,
    /// TCP over IPv4 (`0x11`): 12 bytes of addresses, then TLVs.
    Tcp4,
    /// TCP over IPv6 (`0x21`): 36 bytes of addresses, then TLVs.
    Tcp6,
    /// UDP over IPv4 or IPv6, or AF_UNIX: this many bytes of addresses not used, then TLVs.
    Unused(usize),
}

impl Layout {
    fn address_len(&self) -> usize {
        match self {
            Layout::Skip => 0,
            Layout::Tcp4 => 12,
            Layout::Tcp6 => 36,
            Layout::Unused(len) => *len,
        }
    }
}

fn parse_v2(input: &[u8]) -> Step {
    if !matches_signature(input, V2_SIGNATURE) {
        return Err(ProxyError::NotProxy);
    }
    let Some(&version_command) = input.get(12) else {
        return Ok(None);
    };
    if version_command >> 4 != 2 {
        return Err(ProxyError::V2BadVersion(version_command >> 4));
    }
    let command = match version_command & 0x0F {
        0 => ProxyCommand::Local,
        1 => ProxyCommand::Proxy,
        other => return Err(ProxyError::V2BadCommand(other)),
    };
    let Some(&family) = input.get(13) else {
        return Ok(None);
    };
    let layout = match command {
        ProxyCommand::Local => Layout::Skip,
        ProxyCommand::Proxy => match (family >> 4, family & 0x0F) {
            (af, transport) if af > 3 || transport > 2 => return Err(ProxyError::V2BadFamily(family)),
            (0, _) | (_, 0) => Layout::Skip,
            (1, 1) => Layout::Tcp4,
            (2, 1) => Layout::Tcp6,
            (1, _) => Layout::Unused(12),
            (2, _) => Layout::Unused(36),
            _ => Layout::Unused(216),
        },
    };
    let Some(&[len_hi, len_lo]) = input.get(14..16) else {
        return Ok(None);
    };
    let len = u16::from_be_bytes([len_hi, len_lo]);
    if usize::from(len) > V2_MAX_BLOCK_LEN {
        return Err(ProxyError::V2TooLong(len));
    }
    if usize::from(len) < layout.address_len() {
        return Err(ProxyError::V2AddressTooShort { family, len });
    }
    let end = V2_FIXED_LEN + usize::from(len);
    let Some(block) = input.get(V2_FIXED_LEN..end) else {
        return Ok(None);
    };
    if !matches!(layout, Layout::Skip) {
        check_tlvs(&block[layout.address_len()..])?;
    }
    let (source, destination) = match layout {
        Layout::Tcp4 => {
            let ip =
                |at: usize| IpAddr::V4(Ipv4Addr::new(block[at], block[at + 1], block[at + 2], block[at + 3]));
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            (Some(SocketAddr::new(ip(0), port(8))), Some(SocketAddr::new(ip(4), port(10))))
        }
        Layout::Tcp6 => {
            let ip = |at: usize| {
                let mut octets = [0u8; 16];
                octets.copy_from_slice(&block[at..at + 16]);
                IpAddr::V6(Ipv6Addr::from(octets))
            };
            let port = |at: usize| u16::from_be_bytes([block[at], block[at + 1]]);
            (Some(SocketAddr::new(ip(0), port(32))), Some(SocketAddr::new(ip(16), port(34))))
        }
        Layout::Skip | Layout::Unused(_) => (None, None),
    };
    Ok(Some((ProxyHeader { version: ProxyVersion::V2, command, source, destination }, end)))
}

/// TLVs (`type`, 2-byte big-endian length, value) must cover `tlvs` exactly.
fn check_tlvs(mut tlvs: &[u8]) -> Result<(), ProxyError> {
    while !tlvs.is_empty() {
        let Some(&[_, len_hi, len_lo]) = tlvs.get(..3) else {
            return Err(ProxyError::V2BadTlv);
        };
        let end = 3 + usize::from(u16::from_be_bytes([len_hi, len_lo]));
        tlvs = tlvs.get(end..).ok_or(ProxyError::V2BadTlv)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Greeting, parse_greeting};

    /// A parse result without its header: `None` = Partial, `Some(Ok(n))` = Complete using
    /// n bytes, `Some(Err(_))` = Invalid.
    type Outcome = Option<Result<usize, ProxyError>>;

    fn outcome(input: &[u8]) -> Outcome {
        match parse_proxy_header(input) {
            Parse::Partial => None,
            Parse::Complete(_, used) => Some(Ok(used)),
            Parse::Invalid(why) => Some(Err(why)),
        }
    }

    fn complete(input: &[u8]) -> (ProxyHeader, usize) {
        match parse_proxy_header(input) {
            Parse::Complete(header, used) => (header, used),
            other => panic!("{other:?} for {input:02x?}"),
        }
    }

    fn proxied(version: ProxyVersion, source: &str, destination: &str) -> ProxyHeader {
        ProxyHeader {
            version,
            command: ProxyCommand::Proxy,
            source: Some(source.parse().unwrap()),
            destination: Some(destination.parse().unwrap()),
        }
    }

    fn unspecified(version: ProxyVersion, command: ProxyCommand) -> ProxyHeader {
        ProxyHeader { version, command, source: None, destination: None }
    }

    /// A v2 header: the signature, the two command and family bytes, the length, the block.
    fn v2(version_command: u8, family: u8, block: &[u8]) -> Vec<u8> {
        let mut out = V2_SIGNATURE.to_vec();
        out.extend_from_slice(&[version_command, family]);
        out.extend_from_slice(&u16::try_from(block.len()).unwrap().to_be_bytes());
        out.extend_from_slice(block);
        out
    }

    /// A TLV: type, 2-byte length, value.
    fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
        let mut out = vec![kind];
        out.extend_from_slice(&u16::try_from(value.len()).unwrap().to_be_bytes());
        out.extend_from_slice(value);
        out
    }

    const V1_TCP4: &[u8] = b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\r\n";
    const V1_TCP6: &[u8] = b"PROXY TCP6 2001:db8::1 2001:db8::11 56324 443\r\n";
    const V1_UNKNOWN: &[u8] = b"PROXY UNKNOWN\r\n";
    /// The spec's longest lines: TCP6 with every field at its widest (104 bytes), and the
    /// worst case, UNKNOWN followed by the same (107 bytes).
    const V1_TCP6_MAX: &[u8] = b"PROXY TCP6 ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
        ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";
    const V1_UNKNOWN_MAX: &[u8] = b"PROXY UNKNOWN ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff \
        ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff 65535 65535\r\n";

    /// PROXY, TCP over IPv4, 192.168.0.1:56324 -> 192.168.0.11:443, written out byte by byte.
    const V2_TCP4: &[u8] = &[
        0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, // signature
        0x21, 0x11, 0x00, 0x0C, // v2 PROXY, AF_INET STREAM, 12 bytes
        192, 168, 0, 1, 192, 168, 0, 11, 0xDC, 0x04, 0x01, 0xBB,
    ];
    /// LOCAL, AF_UNSPEC, no block: what HAProxy sends for a health check with send-proxy-v2.
    const V2_LOCAL: &[u8] =
        &[0x0D, 0x0A, 0x0D, 0x0A, 0x00, 0x0D, 0x0A, 0x51, 0x55, 0x49, 0x54, 0x0A, 0x20, 0x00, 0x00, 0x00];

    fn v2_tcp6() -> Vec<u8> {
        let mut block = Vec::new();
        block.extend_from_slice(&"2001:db8::1".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&"2001:db8::11".parse::<Ipv6Addr>().unwrap().octets());
        block.extend_from_slice(&[0xDC, 0x04, 0x01, 0xBB]);
        v2(0x21, 0x21, &block)
    }

    /// V2_TCP4's addresses followed by ALPN, AUTHORITY, an empty NOOP and a custom TLV.
    fn v2_tcp4_tlvs() -> Vec<u8> {
        let mut block = V2_TCP4[16..].to_vec();
        block.extend(tlv(0x01, b"h2"));
        block.extend(tlv(0x02, b"example.com"));
        block.extend(tlv(0x04, b""));
        block.extend(tlv(0xEA, b"vpce-0123456789abcdef0"));
        v2(0x21, 0x11, &block)
    }

    /// Every proper prefix is Partial, the whole is Complete using exactly its length, and
    /// bytes after it (a SOCKS5 greeting, or a payload) are left unconsumed.
    fn assert_every_split(bytes: &[u8]) {
        for cut in 0..bytes.len() {
            assert_eq!(outcome(&bytes[..cut]), None, "prefix of {cut} bytes of {bytes:02x?}");
        }
        assert_eq!(outcome(bytes), Some(Ok(bytes.len())), "{bytes:02x?}");
        for tail in [&[5, 1, 0][..], b"GET / HTTP/1.1\r\n\r\n", b"\r\n", &[0xFF; 300]] {
            let mut with_tail = bytes.to_vec();
            with_tail.extend_from_slice(tail);
            assert_eq!(outcome(&with_tail), Some(Ok(bytes.len())), "trailing bytes must be kept");
        }
    }

    #[test]
    fn v1_spec_example_tcp4_before_http() {
        let mut input = V1_TCP4.to_vec();
        input.extend_from_slice(b"GET / HTTP/1.1\r\nHost: 192.168.0.11\r\n\r\n");
        assert_eq!(
            parse_proxy_header(&input),
            Parse::Complete(proxied(ProxyVersion::V1, "192.168.0.1:56324", "192.168.0.11:443"), 47)
        );
        assert_eq!(&input[47..51], b"GET ");
    }

    #[test]
    fn v1_fixtures() {
        assert_eq!(
            complete(V1_TCP6),
            (proxied(ProxyVersion::V1, "[2001:db8::1]:56324", "[2001:db8::11]:443"), V1_TCP6.len())
        );
        assert_eq!(complete(V1_UNKNOWN), (unspecified(ProxyVersion::V1, ProxyCommand::Proxy), 15));
        // UNKNOWN ignores the rest of the line, whatever it is.
        for line in [&b"PROXY UNKNOWN \r\n"[..], b"PROXY UNKNOWN 1.2.3.4 garbage \xff\0 !\r\n"] {
            assert_eq!(complete(line), (unspecified(ProxyVersion::V1, ProxyCommand::Proxy), line.len()));
        }
        // The widest TCP4 line is the spec's 56 bytes; ports 0 and 65535.
        let widest = b"PROXY TCP4 255.255.255.255 255.255.255.255 65535 0\r\n";
        assert_eq!(
            complete(widest),
            (proxied(ProxyVersion::V1, "255.255.255.255:65535", "255.255.255.255:0"), widest.len())
        );
        // IPv4-mapped IPv6, as HAProxy writes an IPv4 client of an IPv6 listener; kept as sent.
        let mapped = b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1 2\r\n";
        assert_eq!(
            complete(mapped),
            (proxied(ProxyVersion::V1, "[::ffff:192.0.2.1]:1", "[::ffff:192.0.2.2]:2"), mapped.len())
        );
        // Upper case hex, and groups with their leading zeros written out.
        let upper = b"PROXY TCP6 FE80:0000::0001 ::1 10 20\r\n";
        assert_eq!(complete(upper), (proxied(ProxyVersion::V1, "[fe80::1]:10", "[::1]:20"), upper.len()));
    }

    #[test]
    fn v1_maximum_length() {
        assert_eq!(V1_TCP6_MAX.len(), 104);
        assert_eq!(V1_UNKNOWN_MAX.len(), V1_MAX_LEN);
        assert_eq!(
            complete(V1_TCP6_MAX),
            (
                proxied(
                    ProxyVersion::V1,
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535",
                    "[ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff]:65535"
                ),
                104
            )
        );
        assert_eq!(complete(V1_UNKNOWN_MAX), (unspecified(ProxyVersion::V1, ProxyCommand::Proxy), 107));
        // One byte more and the CRLF ends past byte 107: Invalid as soon as byte 107 is in.
        let mut too_long = b"PROXY UNKNOWN 0".to_vec();
        too_long.extend_from_slice(&V1_UNKNOWN_MAX[14..]);
        assert_eq!(too_long.len(), 108);
        assert_eq!(outcome(&too_long[..106]), None);
        assert_eq!(outcome(&too_long[..107]), Some(Err(ProxyError::V1TooLong)));
        assert_eq!(outcome(&too_long), Some(Err(ProxyError::V1TooLong)));
        // No CRLF at all within 107 bytes.
        let mut endless = b"PROXY UNKNOWN ".to_vec();
        endless.resize(200, b'a');
        assert_eq!(outcome(&endless[..106]), None);
        assert_eq!(outcome(&endless[..107]), Some(Err(ProxyError::V1TooLong)));
        assert_eq!(outcome(&endless), Some(Err(ProxyError::V1TooLong)));
    }

    #[test]
    fn v2_fixtures() {
        assert_eq!(
            complete(V2_TCP4),
            (proxied(ProxyVersion::V2, "192.168.0.1:56324", "192.168.0.11:443"), 28)
        );
        let tcp6 = v2_tcp6();
        assert_eq!(tcp6.len(), 16 + 36);
        assert_eq!(
            complete(&tcp6),
            (proxied(ProxyVersion::V2, "[2001:db8::1]:56324", "[2001:db8::11]:443"), 52)
        );
        assert_eq!(complete(V2_LOCAL), (unspecified(ProxyVersion::V2, ProxyCommand::Local), 16));
        let tlvs = v2_tcp4_tlvs();
        assert_eq!(
            complete(&tlvs),
            (proxied(ProxyVersion::V2, "192.168.0.1:56324", "192.168.0.11:443"), tlvs.len())
        );
    }

    #[test]
    fn v2_local_ignores_family_and_block() {
        // The spec: "must not assume zero is presented for LOCAL connections"; the family is
        // ignored (even one PROXY would reject) and the block skipped unread.
        for (family, block) in [(0x11, &V2_TCP4[16..]), (0xFF, &[1, 2, 3][..]), (0x21, &[][..])] {
            let header = v2(0x20, family, block);
            assert_eq!(
                complete(&header),
                (unspecified(ProxyVersion::V2, ProxyCommand::Local), 16 + block.len())
            );
            assert_every_split(&header);
        }
    }

    #[test]
    fn v2_unsupported_families_fall_back_to_unspecified() {
        let none = unspecified(ProxyVersion::V2, ProxyCommand::Proxy);
        let unix = [b'/'; 216];
        let cases: [(u8, &[u8]); 9] = [
            (0x00, &[]),                                                // AF_UNSPEC, UNSPEC
            (0x00, &[9, 9, 9]),       // ... with bytes to ignore (not read as TLVs)
            (0x10, &V2_TCP4[16..20]), // AF_INET, transport UNSPEC: nothing to parse
            (0x01, &[]),              // AF_UNSPEC, STREAM
            (0x12, &V2_TCP4[16..]),   // UDP over IPv4
            (0x22, &v2_tcp6()[16..]), // UDP over IPv6
            (0x31, &unix),            // UNIX stream
            (0x32, &unix),            // UNIX datagram
            (0x12, &[&V2_TCP4[16..], &tlv(0x04, b"pad")[..]].concat()), // UDP4 with a TLV
        ];
        for (family, block) in cases {
            let header = v2(0x21, family, block);
            assert_eq!(complete(&header), (none, header.len()), "family {family:#04x}");
            assert_every_split(&header);
        }
    }

    #[test]
    fn v2_largest_block() {
        // LOCAL skips any block up to the maximum...
        let local = v2(0x20, 0x00, &vec![0xAB; V2_MAX_BLOCK_LEN]);
        assert_eq!(local.len(), MAX_HEADER_LEN);
        assert_eq!(outcome(&local), Some(Ok(MAX_HEADER_LEN)));
        // ...and TCP over IPv4 with one TLV filling it is accepted too.
        let mut block = V2_TCP4[16..].to_vec();
        block.extend(tlv(0xE0, &vec![0xCD; V2_MAX_BLOCK_LEN - 12 - 3]));
        let proxy = v2(0x21, 0x11, &block);
        assert_eq!(
            complete(&proxy),
            (proxied(ProxyVersion::V2, "192.168.0.1:56324", "192.168.0.11:443"), 4328)
        );
        assert_every_split(&proxy);
    }

    #[test]
    fn every_split_point() {
        for bytes in [V1_TCP4, V1_TCP6, V1_UNKNOWN, V1_TCP6_MAX, V1_UNKNOWN_MAX, V2_TCP4, V2_LOCAL] {
            assert_every_split(bytes);
        }
        assert_every_split(&v2_tcp6());
        assert_every_split(&v2_tcp4_tlvs());
    }

    #[test]
    fn proxy_header_then_socks_greeting_in_one_segment() {
        for header in [V1_TCP4, V2_TCP4] {
            let mut segment = header.to_vec();
            segment.extend_from_slice(&[5, 1, 0]);
            let (_, used) = complete(&segment);
            assert_eq!(&segment[used..], &[5, 1, 0]);
            assert_eq!(parse_greeting(&segment[used..]), Parse::Complete(Greeting { methods: &[0] }, 3));
        }
    }

    #[test]
    fn signature_prefixes_are_partial_and_anything_else_is_rejected_at_once() {
        for prefix in
            [&b""[..], b"P", b"PROX", b"PROXY", b"PROXY ", b"\r", b"\r\n\r\n\0", &V2_SIGNATURE[..11]]
        {
            assert_eq!(outcome(prefix), None, "{prefix:02x?}");
        }
        let not_proxy: [&[u8]; 10] = [
            &[5],                // a SOCKS5 greeting
            &[4, 1],             // SOCKS4
            b"G",                // HTTP
            &[0x16, 0x03, 0x01], // TLS
            b"PROXZ",
            b"PROXY\r\n",
            b"proxy tcp4",
            b"\n",
            b"\r\n\r\n\0\r\nQUIX",
            b"\r\n\r\n\x01",
        ];
        for input in not_proxy {
            assert_eq!(outcome(input), Some(Err(ProxyError::NotProxy)), "{input:02x?}");
        }
    }

    #[test]
    fn invalid_inputs() {
        let tcp4_block = &V2_TCP4[16..];
        let cases: Vec<(Vec<u8>, ProxyError)> = vec![
            // v2: version, command, family.
            ([&V2_SIGNATURE[..], &[0x11]].concat(), ProxyError::V2BadVersion(1)),
            ([&V2_SIGNATURE[..], &[0x31, 0x11, 0, 12]].concat(), ProxyError::V2BadVersion(3)),
            ([&V2_SIGNATURE[..], &[0x01]].concat(), ProxyError::V2BadVersion(0)),
            ([&V2_SIGNATURE[..], &[0x22]].concat(), ProxyError::V2BadCommand(2)),
            ([&V2_SIGNATURE[..], &[0x2F]].concat(), ProxyError::V2BadCommand(15)),
            ([&V2_SIGNATURE[..], &[0x21, 0x41]].concat(), ProxyError::V2BadFamily(0x41)),
            ([&V2_SIGNATURE[..], &[0x21, 0x13]].concat(), ProxyError::V2BadFamily(0x13)),
            ([&V2_SIGNATURE[..], &[0x21, 0xF0]].concat(), ProxyError::V2BadFamily(0xF0)),
            // v2: the length field.
            (v2(0x21, 0x11, &tcp4_block[..11]), ProxyError::V2AddressTooShort { family: 0x11, len: 11 }),
            (v2(0x21, 0x21, tcp4_block), ProxyError::V2AddressTooShort { family: 0x21, len: 12 }),
            (v2(0x21, 0x22, &[0; 35]), ProxyError::V2AddressTooShort { family: 0x22, len: 35 }),
            (v2(0x21, 0x31, &[0; 215]), ProxyError::V2AddressTooShort { family: 0x31, len: 215 }),
            ([&V2_SIGNATURE[..], &[0x21, 0x11, 0x10, 0xD9]].concat(), ProxyError::V2TooLong(4313)),
            ([&V2_SIGNATURE[..], &[0x20, 0x00, 0xFF, 0xFF]].concat(), ProxyError::V2TooLong(65535)),
            // v2: TLVs that do not tile the rest of the block.
            (v2(0x21, 0x11, &[tcp4_block, &[0x01]].concat()), ProxyError::V2BadTlv),
            (v2(0x21, 0x11, &[tcp4_block, &[0x01, 0x00]].concat()), ProxyError::V2BadTlv),
            (v2(0x21, 0x11, &[tcp4_block, &[0x01, 0x00, 0x05, b'h', b'2']].concat()), ProxyError::V2BadTlv),
            (v2(0x21, 0x11, &[tcp4_block, &tlv(0x04, b"")[..], &[0xEA]].concat()), ProxyError::V2BadTlv),
            (v2(0x21, 0x31, &[0; 217]), ProxyError::V2BadTlv),
            // v1: line ends.
            (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\n".to_vec(), ProxyError::V1BadLineEnd),
            (b"PROXY TCP4 192.168.0.1 192.168.0.11 56324 443\rX".to_vec(), ProxyError::V1BadLineEnd),
            (b"PROXY UNKNOWN a\nb\r\n".to_vec(), ProxyError::V1BadLineEnd),
            (b"PROXY UNKNOWN a\rb\r\n".to_vec(), ProxyError::V1BadLineEnd),
            // v1: protocol.
            (b"PROXY \r\n".to_vec(), ProxyError::V1BadProtocol),
            (b"PROXY TCP5 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1BadProtocol),
            (b"PROXY tcp4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1BadProtocol),
            (b"PROXY UNKNOWNX\r\n".to_vec(), ProxyError::V1BadProtocol),
            (b"PROXY  TCP4 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1BadProtocol),
            (b"PROXY TCP4\r\n".to_vec(), ProxyError::V1Syntax),
            // v1: fields and spaces.
            (b"PROXY TCP4  1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 \r\n".to_vec(), ProxyError::V1Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r\n".to_vec(), ProxyError::V1Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 3\r\n".to_vec(), ProxyError::V1Syntax),
            (b"PROXY TCP4 1.2.3.4\t5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            // v1: addresses.
            (b"PROXY TCP4 ::1 ::1 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP6 1.2.3.4 5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP4 01.2.3.4 5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP4 1.2.3.4 5.6.7.08 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP4 256.2.3.4 5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP4 1.2.3 5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP4 1.2.3.4.5 5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP4 1..3.4 5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP4 0x7f.0.0.1 5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP4 localhost 5.6.7.8 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP6 fe80::1%eth0 ::1 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP6 [::1] ::1 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP6 1:2:3:4:5:6:7:8:9 ::1 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP6 1::2::3 ::1 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            (b"PROXY TCP6 12345:: ::1 1 2\r\n".to_vec(), ProxyError::V1BadAddress),
            // v1: ports.
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536 2\r\n".to_vec(), ProxyError::V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 080\r\n".to_vec(), ProxyError::V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 00 2\r\n".to_vec(), ProxyError::V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 -1 2\r\n".to_vec(), ProxyError::V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 +1 2\r\n".to_vec(), ProxyError::V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1a 2\r\n".to_vec(), ProxyError::V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 123456\r\n".to_vec(), ProxyError::V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 99999\r\n".to_vec(), ProxyError::V1BadPort),
        ];
        for (input, expected) in cases {
            assert_eq!(outcome(&input), Some(Err(expected)), "{:?}", String::from_utf8_lossy(&input));
        }
    }

    #[test]
    fn v1_fails_before_the_line_ends() {
        // Each of these can no longer become a header: no need to wait for 107 bytes.
        let cases: [(&[u8], ProxyError); 9] = [
            (b"PROXY X", ProxyError::V1BadProtocol),
            (b"PROXY TCP4 1.2.3.4x", ProxyError::V1BadAddress),
            (b"PROXY TCP4 1.2.3.256", ProxyError::V1BadAddress),
            (b"PROXY TCP4 ::", ProxyError::V1BadAddress),
            (b"PROXY TCP6 fe80::g", ProxyError::V1BadAddress),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 65536", ProxyError::V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 00", ProxyError::V1BadPort),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2 ", ProxyError::V1Syntax),
            (b"PROXY TCP4 1.2.3.4 5.6.7.8 1\r", ProxyError::V1Syntax),
        ];
        for (input, expected) in cases {
            assert_eq!(outcome(input), Some(Err(expected)), "{:?}", String::from_utf8_lossy(input));
        }
        // ...while these still can.
        for input in [&b"PROXY TCP4 1.2.3.4 5.6.7.8 0"[..], b"PROXY TCP4 1.2.3.4 5.6.7.8 1 2\r", b"PROXY UNK"]
        {
            assert_eq!(outcome(input), None, "{:?}", String::from_utf8_lossy(input));
        }
    }

    /// The codec's contract on one input: Complete uses at most the input and re-parses the
    /// same from exactly the bytes it used, with every shorter prefix Partial; Partial stays
    /// Partial one byte shorter.
    fn check_contract(input: &[u8]) {
        match parse_proxy_header(input) {
            Parse::Complete(header, used) => {
                assert!(used <= input.len(), "{input:02x?}");
                assert_eq!(parse_proxy_header(&input[..used]), Parse::Complete(header, used), "{input:02x?}");
                for cut in 0..used {
                    assert_eq!(outcome(&input[..cut]), None, "prefix {cut} of {input:02x?}");
                }
            }
            Parse::Partial => {
                if let Some((_, shorter)) = input.split_last() {
                    assert_eq!(outcome(shorter), None, "{input:02x?}");
                }
            }
            Parse::Invalid(_) => {}
        }
    }

    #[test]
    fn every_one_byte_change_of_the_fixtures_keeps_the_contract() {
        let fixtures = [
            V1_TCP4.to_vec(),
            V1_TCP6.to_vec(),
            V1_UNKNOWN.to_vec(),
            V1_TCP6_MAX.to_vec(),
            V1_UNKNOWN_MAX.to_vec(),
            b"PROXY TCP6 ::ffff:192.0.2.1 ::ffff:192.0.2.2 1 2\r\n".to_vec(),
            V2_TCP4.to_vec(),
            V2_LOCAL.to_vec(),
            v2_tcp6(),
            v2_tcp4_tlvs(),
        ];
        let mut seen = [0u32; 3];
        for fixture in fixtures {
            let mut input = fixture.clone();
            input.extend_from_slice(&[5, 1, 0]);
            for at in 0..input.len() {
                let original = input[at];
                for byte in [
                    0,
                    b' ',
                    b'\r',
                    b'\n',
                    b'0',
                    b'9',
                    b'.',
                    b':',
                    b'f',
                    b'P',
                    0xFF,
                    original ^ 1,
                    original.wrapping_add(1),
                ] {
                    input[at] = byte;
                    for len in [input.len(), at + 1, fixture.len()] {
                        check_contract(&input[..len.min(input.len())]);
                        seen[match outcome(&input[..len.min(input.len())]) {
                            None => 0,
                            Some(Ok(_)) => 1,
                            Some(Err(_)) => 2,
                        }] += 1;
                    }
                }
                input[at] = original;
            }
        }
        assert!(seen.iter().all(|&n| n > 100), "{seen:?} (partial, complete, invalid)");
    }

    #[test]
    fn errors_display() {
        assert_eq!(
            ProxyError::V2TooLong(5000).to_string(),
            "PROXY v2 header with 5000 bytes of addresses and TLVs (at most 4312)"
        );
        assert_eq!(ProxyError::NotProxy.to_string(), "not a PROXY protocol header");
    }
}
