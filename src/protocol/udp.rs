//! The header of every datagram relayed for a UDP ASSOCIATE (RFC 1928 §7).
//!
//! ```text
//! +----+------+------+----------+----------+----------+
//! |RSV | FRAG | ATYP | DST.ADDR | DST.PORT |   DATA   |
//! | 2  |  1   |  1   | Variable |    2     | Variable |
//! +----+------+------+----------+----------+----------+
//! ```
//! A datagram arrives whole or not at all, so there is no "partial" here: a header cut short
//! is an error ([`UdpHeaderError::Truncated`]) and the datagram is dropped, as every other
//! error drops it. RFC 1928 §7: a relay server that cannot relay a datagram drops it silently.

use std::fmt;
use std::net::SocketAddr;

use super::socks5::{encode_address, parse_address};
use super::{Invalid, Parse, Reply, TargetAddr};

/// A parsed UDP request header. The payload is `&datagram[header_len..]` (possibly empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UdpHeader {
    /// The fragment number, returned as sent. 0 is a standalone datagram; RFC 1928 §7 lets a
    /// server that does not reassemble drop any datagram whose FRAG is not 0, which is the
    /// caller's decision to make.
    pub frag: u8,
    /// Where to send the payload (client to server) or where it came from (server to client).
    pub target: TargetAddr,
    /// Length of the header: RSV, FRAG, ATYP, DST.ADDR and DST.PORT.
    pub header_len: usize,
}

/// Why a datagram does not start with a valid UDP request header. Each means "drop it".
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UdpHeaderError {
    /// The datagram ends before the header does.
    Truncated,
    /// RSV is not `X'0000'`. Unlike the TCP request's RSV (not checked, see
    /// [`parse_request`](super::parse_request)), this one is enforced: there is no reply to
    /// send on a UDP relay, and a datagram that does not start with two zero bytes is far more
    /// likely stray traffic to the relay port than a SOCKS client's header.
    BadReserved,
    /// ATYP is not 1, 3 or 4.
    AddressTypeNotSupported,
    /// DST.ADDR is a domain name that is not UTF-8, so it can never resolve.
    BadDomain,
}

impl fmt::Display for UdpHeaderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UdpHeaderError::Truncated => "truncated UDP request header",
            UdpHeaderError::BadReserved => "nonzero RSV in UDP request header",
            UdpHeaderError::AddressTypeNotSupported => "unknown ATYP in UDP request header",
            UdpHeaderError::BadDomain => "domain name in UDP request header is not UTF-8",
        })
    }
}

impl std::error::Error for UdpHeaderError {}

/// Parse `00 00 FRAG ATYP DST.ADDR DST.PORT` at the start of a datagram.
///
/// Fields are checked in wire order: a datagram too short to hold RSV and FRAG is
/// [`Truncated`](UdpHeaderError::Truncated) whatever its bytes, then RSV, then ATYP, then
/// the address's length, then a domain name's UTF-8. FRAG is not checked (see
/// [`UdpHeader::frag`]). The address is parsed by the same code as the TCP request's.
pub fn parse_udp_header(datagram: &[u8]) -> Result<UdpHeader, UdpHeaderError> {
    let Some(&[rsv_hi, rsv_lo, frag]) = datagram.get(..3) else {
        return Err(UdpHeaderError::Truncated);
    };
    if [rsv_hi, rsv_lo] != [0, 0] {
        return Err(UdpHeaderError::BadReserved);
    }
    match parse_address(datagram, 3) {
        Parse::Complete(target, header_len) => Ok(UdpHeader { frag, target, header_len }),
        Parse::Partial => Err(UdpHeaderError::Truncated),
        Parse::Invalid(Invalid::Reply(Reply::HostUnreachable)) => Err(UdpHeaderError::BadDomain),
        // parse_address has only one other answer: Reply::AddressTypeNotSupported.
        Parse::Invalid(_) => Err(UdpHeaderError::AddressTypeNotSupported),
    }
}

/// Append the header `00 00 00 ATYP ADDR PORT` (FRAG 0) for a datagram relayed back to the
/// client from `source`; the payload follows it.
pub fn encode_udp_header(source: SocketAddr, out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x00, 0x00, 0x00]);
    encode_address(Some(source), out);
}

#[cfg(test)]
mod tests {
    use std::net::Ipv6Addr;

    use super::*;

    fn header(frag: u8, target: TargetAddr, header_len: usize) -> Result<UdpHeader, UdpHeaderError> {
        Ok(UdpHeader { frag, target, header_len })
    }

    /// Every proper prefix of a header is Truncated; the header alone parses with no payload,
    /// and with a payload appended the header is the same and the payload is what follows.
    fn assert_every_length(header_bytes: &[u8]) {
        for cut in 0..header_bytes.len() {
            assert_eq!(
                parse_udp_header(&header_bytes[..cut]),
                Err(UdpHeaderError::Truncated),
                "{cut} bytes of {header_bytes:02x?}"
            );
        }
        let parsed = parse_udp_header(header_bytes).expect("whole header");
        assert_eq!(parsed.header_len, header_bytes.len());
        let datagram = [header_bytes, b"\x00\x00payload"].concat();
        let with_payload = parse_udp_header(&datagram).expect("with payload");
        assert_eq!(with_payload, parsed);
        assert_eq!(&datagram[with_payload.header_len..], b"\x00\x00payload");
    }

    #[test]
    fn ipv4_fixture() {
        let datagram = [0, 0, 0, 1, 8, 8, 4, 4, 0, 53, 0xAB, 0xCD];
        let parsed = parse_udp_header(&datagram);
        assert_eq!(parsed, header(0, TargetAddr::Ip("8.8.4.4:53".parse().unwrap()), 10));
        assert_eq!(&datagram[10..], &[0xAB, 0xCD]);
    }

    #[test]
    fn ipv6_fixture() {
        let mut datagram = vec![0, 0, 0, 4];
        datagram.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
        datagram.extend_from_slice(&[0x1F, 0x90]);
        assert_eq!(parse_udp_header(&datagram), header(0, TargetAddr::Ip("[::1]:8080".parse().unwrap()), 22));
    }

    #[test]
    fn domain_fixture() {
        let mut datagram = vec![0, 0, 0, 3, 11];
        datagram.extend_from_slice(b"example.com");
        datagram.extend_from_slice(&[0, 123]);
        datagram.extend_from_slice(b"ntp");
        assert_eq!(parse_udp_header(&datagram), header(0, TargetAddr::Domain("example.com".into(), 123), 18));
    }

    #[test]
    fn nonzero_frag_is_returned_for_the_caller_to_drop() {
        for frag in [1, 0x7F, 0x80, 0xFF] {
            let datagram = [0, 0, frag, 1, 127, 0, 0, 1, 0, 7, b'x'];
            assert_eq!(
                parse_udp_header(&datagram),
                header(frag, TargetAddr::Ip("127.0.0.1:7".parse().unwrap()), 10)
            );
        }
    }

    #[test]
    fn truncated_at_every_length() {
        let mut v6 = vec![0, 0, 0, 4];
        v6.extend_from_slice(&[0xfe; 16]);
        v6.extend_from_slice(&[1, 2]);
        let mut longest = vec![0, 0, 0, 3, 255];
        longest.extend(std::iter::repeat_n(b'a', 255));
        longest.extend_from_slice(&[0, 80]);
        for bytes in [
            &[0, 0, 0, 1, 10, 0, 0, 1, 0, 80][..],
            &v6,
            &[0, 0, 5, 3, 1, b'x', 0, 1],
            &[0, 0, 0, 3, 0, 0, 1],
            &longest,
        ] {
            assert_every_length(bytes);
        }
    }

    #[test]
    fn zero_length_payload_is_fine() {
        let datagram = [0, 0, 0, 1, 10, 0, 0, 1, 0, 80];
        let parsed = parse_udp_header(&datagram).unwrap();
        assert_eq!(parsed.header_len, datagram.len());
        assert!(datagram[parsed.header_len..].is_empty());
    }

    #[test]
    fn errors() {
        assert_eq!(parse_udp_header(&[]), Err(UdpHeaderError::Truncated));
        assert_eq!(parse_udp_header(&[1, 0]), Err(UdpHeaderError::Truncated));
        assert_eq!(parse_udp_header(&[0, 1, 0, 1, 1, 2, 3, 4, 0, 1]), Err(UdpHeaderError::BadReserved));
        assert_eq!(parse_udp_header(&[0x80, 0, 0]), Err(UdpHeaderError::BadReserved));
        assert_eq!(parse_udp_header(&[0, 0, 0, 2, 1, 2, 3, 4]), Err(UdpHeaderError::AddressTypeNotSupported));
        assert_eq!(parse_udp_header(&[0, 0, 0, 0]), Err(UdpHeaderError::AddressTypeNotSupported));
        assert_eq!(parse_udp_header(&[0, 0, 0, 3, 2, 0xC3, 0x28, 0, 53]), Err(UdpHeaderError::BadDomain));
    }

    #[test]
    fn encoder_round_trips() {
        for source in ["203.0.113.9:5353", "[2001:db8::1]:443", "0.0.0.0:0"] {
            let source: SocketAddr = source.parse().unwrap();
            let mut out = b"keep".to_vec();
            encode_udp_header(source, &mut out);
            out.extend_from_slice(b"data");
            let parsed = parse_udp_header(&out[4..]).unwrap();
            assert_eq!(
                parsed,
                UdpHeader { frag: 0, target: TargetAddr::Ip(source), header_len: out.len() - 8 }
            );
            assert_eq!(&out[..4], b"keep");
        }
        let mut out = Vec::new();
        encode_udp_header("10.1.2.3:4660".parse().unwrap(), &mut out);
        assert_eq!(out, [0, 0, 0, 1, 10, 1, 2, 3, 0x12, 0x34]);
    }
}

/// Bounded random inputs through every parser of the codec (greeting, auth, request, SOCKS4,
/// UDP header, PROXY header): no panic, `consumed <= len`, and the same contract the fuzz targets check, on
/// a fixed seed so a failure reproduces. The fuzz targets in `fuzz/` explore far more; this
/// keeps the guarantee in the ordinary `cargo test`.
#[cfg(test)]
mod random_inputs {
    use super::*;
    use crate::protocol::proxy::V2_SIGNATURE;
    use crate::protocol::{
        parse_auth_request, parse_greeting, parse_proxy_header, parse_request, socks4::parse_socks4_request,
    };

    /// xorshift64* (Vigna): tiny, fast and deterministic; quality is plenty for this.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }
    }

    /// Complete: consumed within the input, and re-parsing exactly the consumed bytes gives
    /// the same message. Partial: dropping the last byte stays Partial. Returns which outcome
    /// it was (0 Partial, 1 Complete, 2 Invalid) so the test can show it reached all three.
    fn check<'a, T: PartialEq + std::fmt::Debug, E: PartialEq + std::fmt::Debug>(
        input: &'a [u8],
        parse: impl Fn(&'a [u8]) -> Parse<T, E>,
    ) -> usize {
        match parse(input) {
            Parse::Partial => {
                if let Some((_, shorter)) = input.split_last() {
                    assert_eq!(parse(shorter), Parse::Partial, "{input:02x?}");
                }
                0
            }
            Parse::Complete(msg, used) => {
                assert!(used <= input.len(), "{input:02x?}");
                assert_eq!(parse(&input[..used]), Parse::Complete(msg, used), "{input:02x?}");
                1
            }
            Parse::Invalid(_) => 2,
        }
    }

    /// The UDP header's version of [`check`]: Truncated plays the part of Partial.
    fn check_udp(datagram: &[u8]) -> usize {
        match parse_udp_header(datagram) {
            Err(UdpHeaderError::Truncated) => {
                if let Some((_, shorter)) = datagram.split_last() {
                    assert_eq!(parse_udp_header(shorter), Err(UdpHeaderError::Truncated));
                }
                0
            }
            Ok(parsed) => {
                assert!(parsed.header_len <= datagram.len(), "{datagram:02x?}");
                assert_eq!(parse_udp_header(&datagram[..parsed.header_len]), Ok(parsed), "{datagram:02x?}");
                1
            }
            Err(_) => 2,
        }
    }

    /// A PROXY header candidate from random bytes: noise alone stops at the first byte, so
    /// most get the start of a v1 line or of a v2 header, a small v2 length, a CRLF.
    fn proxy_input(input: &[u8], steer: u64, out: &mut Vec<u8>) {
        out.clear();
        let prefix: &[u8] = match (steer >> 20) % 6 {
            0 => b"",
            1 => b"PROXY ",
            2 => b"PROXY UNKNOWN ",
            3 => b"PROXY TCP4 ",
            4 => &[0x20, 0x00], // LOCAL
            _ => &[0x21, 0x11], // PROXY, TCP over IPv4
        };
        if prefix.first().is_some_and(|&b| b & 0xF0 == 0x20) {
            out.extend_from_slice(V2_SIGNATURE);
            out.extend_from_slice(prefix);
            // 0..=47 bytes of block: 12 of them the addresses when PROXY.
            let len = if prefix[1] == 0 { (steer >> 24) % 48 } else { 12 + (steer >> 24) % 36 };
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.extend_from_slice(prefix);
        }
        out.extend_from_slice(input);
        if prefix.starts_with(b"PROXY TCP4") {
            // Mostly the characters of a TCP4 line, so its fields are reached.
            for byte in out.iter_mut().skip(prefix.len()) {
                *byte = b"0123456789.  1"[usize::from(*byte) % 14];
            }
        }
        if steer & 0x1000 != 0 && out.len() > 1 {
            let at = (steer >> 32) as usize % (out.len() - 1);
            out[at..at + 2].copy_from_slice(b"\r\n");
        }
    }

    #[test]
    fn random_inputs_never_break_the_contract() {
        let mut rng = XorShift(0x5EED_50C5_100F_0001);
        let mut input = Vec::with_capacity(600);
        let mut datagram = Vec::with_capacity(602);
        let mut proxy = Vec::with_capacity(600 + 16 + 14);
        // seen[parser][outcome]: greeting, auth, request, SOCKS4, UDP, PROXY.
        let mut seen = [[0u32; 3]; 6];
        for _ in 0..200_000u32 {
            input.clear();
            let len = (rng.next() % 600) as usize;
            for _ in 0..len {
                input.push(rng.next() as u8);
            }
            // Pure noise nearly always stops at the version byte, so steer most inputs deeper:
            // a right version byte, small CMD/ATYP/length bytes, a SOCKS4a DSTIP, a NUL-free
            // run (SOCKS4's too-long fields).
            let steer = rng.next();
            if let Some(first) = input.first_mut() {
                *first = [5, 1, 4, 0, *first][(steer % 5) as usize];
            }
            if steer & 0x100 != 0 {
                for byte in input.iter_mut().skip(1).take(4) {
                    *byte %= 5;
                }
            }
            if steer & 0x200 != 0 {
                for byte in input.iter_mut().skip(4).take(3) {
                    *byte = 0;
                }
            }
            if steer & 0x400 != 0 && input.len() > 8 {
                let from = 8 + (steer >> 16) as usize % (input.len() - 8);
                for byte in &mut input[from..] {
                    *byte |= 1;
                }
            }
            seen[0][check(&input, parse_greeting)] += 1;
            seen[1][check(&input, parse_auth_request)] += 1;
            seen[2][check(&input, parse_request)] += 1;
            seen[3][check(&input, parse_socks4_request)] += 1;
            // UDP headers start with RSV = 0: most datagrams get one to reach the address.
            datagram.clear();
            if steer & 0x800 != 0 {
                datagram.extend_from_slice(&[0, 0]);
            }
            datagram.extend_from_slice(&input);
            seen[4][check_udp(&datagram)] += 1;
            proxy_input(&input, steer, &mut proxy);
            seen[5][check(&proxy, parse_proxy_header)] += 1;
        }
        for (parser, outcomes) in ["greeting", "auth", "request", "socks4", "udp", "proxy"].iter().zip(seen) {
            assert!(
                outcomes.iter().all(|&n| n >= 100),
                "{parser}: {outcomes:?} (partial, complete, invalid)"
            );
        }
    }
}
