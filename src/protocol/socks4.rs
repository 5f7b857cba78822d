//! SOCKS4 (Ying-Da Lee, "SOCKS: A protocol for TCP proxy across firewalls") and its SOCKS4a
//! extension ("SOCKS 4A: A Simple Extension to SOCKS 4 Protocol"): the request and the reply.
//!
//! ```text
//! request  +----+----+---------+-------+------------+------+  SOCKS4a only: +-------------+------+
//!          | VN | CD | DSTPORT | DSTIP |   USERID   | NULL |                |  HOSTNAME   | NULL |
//!          | 1  | 1  |    2    |   4   |  variable  |  1   |                |  variable   |  1   |
//!          +----+----+---------+-------+------------+------+                +-------------+------+
//! reply    +----+----+---------+-------+
//!          | VN | CD | DSTPORT | DSTIP |
//!          | 1  | 1  |    2    |   4   |
//!          +----+----+---------+-------+
//! ```
//! VN is 4 in a request and 0 in a reply. A SOCKS4a client that cannot resolve the name itself
//! sets DSTIP to `0.0.0.x` with x nonzero and sends the name after the USERID's NUL.
//!
//! SOCKS4 has one failure answer, CD 91 (`5B`, "request rejected or failed"). Parsers here
//! report the *reason* in the shared [`Invalid::Reply`] vocabulary (so logs say why), and
//! [`Socks4Reply::for_reply`] turns any reason into the code to send.

use std::net::{Ipv4Addr, SocketAddrV4};

use super::{Invalid, Parse, Reply};

/// SOCKS protocol version 4, the first byte of every SOCKS4 request.
pub const VERSION: u8 = 0x04;

/// The version byte of a SOCKS4 reply: "VN is the version of the reply code and should be 0".
pub const REPLY_VERSION: u8 = 0x00;

/// Longest USERID and longest HOSTNAME accepted, in bytes, not counting the terminating NUL.
///
/// The protocol sets no bound: both fields simply run to a NUL. Without one, a client that
/// never sends the NUL could make the server buffer forever. 255 is the bound SOCKS5 already
/// has for the same data (RFC 1929 UNAME, RFC 1928 DOMAINNAME length byte) and the longest
/// DNS name (RFC 1035 §2.3.4), so no real client is turned away.
pub const MAX_FIELD_LEN: usize = 255;

/// The longest request [`parse_socks4_request`] can return as Complete: the 8 fixed bytes plus
/// a USERID and a HOSTNAME of [`MAX_FIELD_LEN`] bytes, each with its NUL (520 bytes). A
/// handshake buffer at least this large never fills up before the parser decides.
pub const MAX_REQUEST_LEN: usize = 8 + 2 * (MAX_FIELD_LEN + 1);

/// The two SOCKS4 commands (CD in a request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Socks4Command {
    Connect = 0x01,
    Bind = 0x02,
}

impl Socks4Command {
    fn from_byte(byte: u8) -> Option<Socks4Command> {
        match byte {
            0x01 => Some(Socks4Command::Connect),
            0x02 => Some(Socks4Command::Bind),
            _ => None,
        }
    }
}

/// Where the client wants to go: an IPv4 address (SOCKS4), or a name the proxy must resolve
/// (SOCKS4a). The port is in [`Socks4Request::port`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Socks4Target {
    Ip(Ipv4Addr),
    Domain(String),
}

/// A parsed SOCKS4 or SOCKS4a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Socks4Request<'a> {
    pub command: Socks4Command,
    pub port: u16,
    pub target: Socks4Target,
    /// The USERID as sent (without its NUL), borrowed from the input. Any bytes but NUL.
    pub user_id: &'a [u8],
}

/// Parse `04 CD DSTPORT DSTIP USERID 00`, followed by `HOSTNAME 00` when DSTIP is `0.0.0.x`
/// with x nonzero (SOCKS4a).
///
/// Invalid answers, each as soon as the byte that decides it arrives:
/// * VN other than 4: [`Invalid::BadVersion`] (close silently, as for SOCKS5).
/// * CD other than 1 or 2: [`Reply::CommandNotSupported`].
/// * USERID longer than [`MAX_FIELD_LEN`] (no NUL among its first 256 bytes):
///   [`Reply::GeneralFailure`]. The protocol has no code for it; this reason means "the
///   server refuses to buffer more", and is answered like all the others, with CD 91.
/// * HOSTNAME longer than [`MAX_FIELD_LEN`]: [`Reply::HostUnreachable`] (no DNS name is that
///   long), and a HOSTNAME that is not UTF-8: [`Reply::HostUnreachable`] (it can never
///   resolve; the same rule as SOCKS5's DOMAINNAME).
///
/// Like SOCKS5's, an empty HOSTNAME is returned as it is and simply fails to resolve; DSTIP
/// `0.0.0.0` is not SOCKS4a (x must be nonzero) and is returned as [`Socks4Target::Ip`].
pub fn parse_socks4_request(input: &[u8]) -> Parse<Socks4Request<'_>> {
    let Some(&version) = input.first() else {
        return Parse::Partial;
    };
    if version != VERSION {
        return Parse::Invalid(Invalid::BadVersion(version));
    }
    let Some(&cd) = input.get(1) else {
        return Parse::Partial;
    };
    let Some(command) = Socks4Command::from_byte(cd) else {
        return Parse::Invalid(Invalid::Reply(Reply::CommandNotSupported));
    };
    let Some(&[port_hi, port_lo, a, b, c, d]) = input.get(2..8) else {
        return Parse::Partial;
    };
    let port = u16::from_be_bytes([port_hi, port_lo]);
    let (user_id, user_end) = match nul_terminated(input, 8) {
        Field::Found(field, end) => (field, end),
        Field::Partial => return Parse::Partial,
        Field::TooLong => return Parse::Invalid(Invalid::Reply(Reply::GeneralFailure)),
    };
    if [a, b, c] != [0, 0, 0] || d == 0 {
        let target = Socks4Target::Ip(Ipv4Addr::new(a, b, c, d));
        return Parse::Complete(Socks4Request { command, port, target, user_id }, user_end);
    }
    let (name, end) = match nul_terminated(input, user_end) {
        Field::Found(field, end) => (field, end),
        Field::Partial => return Parse::Partial,
        Field::TooLong => return Parse::Invalid(Invalid::Reply(Reply::HostUnreachable)),
    };
    match std::str::from_utf8(name) {
        Ok(name) => {
            let target = Socks4Target::Domain(name.to_owned());
            Parse::Complete(Socks4Request { command, port, target, user_id }, end)
        }
        Err(_) => Parse::Invalid(Invalid::Reply(Reply::HostUnreachable)),
    }
}

/// A NUL-terminated field: its bytes and the index just past its NUL, or why there is none.
enum Field<'a> {
    Found(&'a [u8], usize),
    Partial,
    TooLong,
}

/// Find the field starting at `start` and ending at the first NUL, looking at no more than
/// [`MAX_FIELD_LEN`] bytes and the NUL.
fn nul_terminated(input: &[u8], start: usize) -> Field<'_> {
    let window = input.get(start..).unwrap_or_default();
    let window = &window[..window.len().min(MAX_FIELD_LEN + 1)];
    match window.iter().position(|&byte| byte == 0) {
        Some(len) => Field::Found(&window[..len], start + len + 1),
        None if window.len() > MAX_FIELD_LEN => Field::TooLong,
        None => Field::Partial,
    }
}

/// Reply codes (CD in a reply). The SOCKS4 document numbers them in decimal: 90 to 93.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Socks4Reply {
    /// 90: request granted.
    Granted = 0x5A,
    /// 91: request rejected or failed.
    Rejected = 0x5B,
    /// 92: rejected because the server cannot connect to identd on the client.
    IdentdUnreachable = 0x5C,
    /// 93: rejected because the client program and identd report different user-ids.
    IdentdMismatch = 0x5D,
}

impl Socks4Reply {
    pub fn code(self) -> u8 {
        self as u8
    }

    /// The SOCKS4 answer for a SOCKS5 reply code: [`Reply::Succeeded`] is granted, every
    /// failure is 91, the only failure code that does not involve identd.
    pub fn for_reply(reply: Reply) -> Socks4Reply {
        match reply {
            Reply::Succeeded => Socks4Reply::Granted,
            _ => Socks4Reply::Rejected,
        }
    }
}

/// Encode a reply `00 CD DSTPORT DSTIP`.
///
/// For CONNECT the client ignores DSTPORT and DSTIP; for BIND they are the address the server
/// listens on (its IP may be `0.0.0.0`, which tells the client to use the server's own address).
/// A SOCKS4 reply can only carry IPv4.
pub fn encode_socks4_reply(reply: Socks4Reply, addr: SocketAddrV4) -> [u8; 8] {
    let [p0, p1] = addr.port().to_be_bytes();
    let [a, b, c, d] = addr.ip().octets();
    [REPLY_VERSION, reply.code(), p0, p1, a, b, c, d]
}

#[cfg(test)]
mod tests {
    use super::*;

    type Outcome = Option<Result<usize, Invalid>>;

    fn outcome(parsed: Parse<Socks4Request<'_>>) -> Outcome {
        match parsed {
            Parse::Partial => None,
            Parse::Complete(_, used) => Some(Ok(used)),
            Parse::Invalid(why) => Some(Err(why)),
        }
    }

    /// Every proper prefix is Partial, the whole is Complete using all of it, and trailing
    /// bytes are kept.
    fn assert_every_split(bytes: &[u8]) {
        for cut in 0..bytes.len() {
            assert_eq!(outcome(parse_socks4_request(&bytes[..cut])), None, "prefix of {cut} bytes");
        }
        assert_eq!(outcome(parse_socks4_request(bytes)), Some(Ok(bytes.len())));
        let mut with_tail = bytes.to_vec();
        with_tail.extend_from_slice(b"GET / HTTP/1.0\r\n\0\0");
        assert_eq!(outcome(parse_socks4_request(&with_tail)), Some(Ok(bytes.len())), "tail kept");
    }

    fn request<'a>(
        command: Socks4Command,
        port: u16,
        target: Socks4Target,
        user_id: &'a [u8],
    ) -> Socks4Request<'a> {
        Socks4Request { command, port, target, user_id }
    }

    #[test]
    fn socks4_fixtures() {
        // The SOCKS4 document's own shape: CONNECT 66.102.7.99:80 as user "Fred".
        let bytes = [4, 1, 0, 80, 66, 102, 7, 99, b'F', b'r', b'e', b'd', 0];
        assert_eq!(
            parse_socks4_request(&bytes),
            Parse::Complete(
                request(Socks4Command::Connect, 80, Socks4Target::Ip(Ipv4Addr::new(66, 102, 7, 99)), b"Fred"),
                13
            )
        );
        assert_eq!(
            parse_socks4_request(&[4, 2, 0x1F, 0x90, 10, 0, 0, 1, 0]),
            Parse::Complete(
                request(Socks4Command::Bind, 8080, Socks4Target::Ip(Ipv4Addr::new(10, 0, 0, 1)), b""),
                9
            )
        );
        // DSTIP 0.0.0.0 is not SOCKS4a: x must be nonzero.
        assert_eq!(
            parse_socks4_request(&[4, 1, 0, 1, 0, 0, 0, 0, 0]),
            Parse::Complete(
                request(Socks4Command::Connect, 1, Socks4Target::Ip(Ipv4Addr::UNSPECIFIED), b""),
                9
            )
        );
        // 0.0.1.1 is not SOCKS4a either: only the last octet may be nonzero.
        assert_eq!(
            parse_socks4_request(&[4, 1, 0, 1, 0, 0, 1, 1, 0, b'x', 0]),
            Parse::Complete(
                request(Socks4Command::Connect, 1, Socks4Target::Ip(Ipv4Addr::new(0, 0, 1, 1)), b""),
                9
            )
        );
        assert_eq!(parse_socks4_request(&[]), Parse::Partial);
    }

    #[test]
    fn socks4a_fixtures() {
        let mut bytes = vec![4, 1, 0x01, 0xBB, 0, 0, 0, 1];
        bytes.extend_from_slice(b"alice\0example.com\0");
        assert_eq!(
            parse_socks4_request(&bytes),
            Parse::Complete(
                request(Socks4Command::Connect, 443, Socks4Target::Domain("example.com".into()), b"alice"),
                bytes.len()
            )
        );
        // Empty USERID and an empty HOSTNAME (which then fails to resolve, as in SOCKS5).
        assert_eq!(
            parse_socks4_request(&[4, 2, 0, 21, 0, 0, 0, 255, 0, 0]),
            Parse::Complete(request(Socks4Command::Bind, 21, Socks4Target::Domain(String::new()), b""), 10)
        );
    }

    #[test]
    fn every_split_point() {
        let mut socks4a = vec![4, 1, 0, 80, 0, 0, 0, 7];
        socks4a.extend_from_slice(b"user\0host.example\0");
        let mut longest = vec![4, 1, 0, 80, 0, 0, 0, 1];
        longest.extend(std::iter::repeat_n(b'u', MAX_FIELD_LEN));
        longest.push(0);
        longest.extend(std::iter::repeat_n(b'h', MAX_FIELD_LEN));
        longest.push(0);
        assert_eq!(longest.len(), MAX_REQUEST_LEN);
        for bytes in
            [&[4, 1, 0, 80, 1, 2, 3, 4, 0][..], &[4, 2, 0, 80, 1, 2, 3, 4, b'i', b'd', 0], &socks4a, &longest]
        {
            assert_every_split(bytes);
        }
    }

    #[test]
    fn user_id_may_hold_any_byte_but_nul() {
        let mut bytes = vec![4, 1, 0, 80, 1, 2, 3, 4];
        bytes.extend(1..=255u8);
        bytes.push(0);
        match parse_socks4_request(&bytes) {
            Parse::Complete(req, used) => {
                assert_eq!(used, bytes.len());
                assert_eq!(req.user_id, &bytes[8..bytes.len() - 1]);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn too_long_user_id_is_invalid_without_waiting_for_a_nul() {
        let mut bytes = vec![4, 1, 0, 80, 1, 2, 3, 4];
        bytes.extend(std::iter::repeat_n(b'u', MAX_FIELD_LEN));
        assert_eq!(parse_socks4_request(&bytes), Parse::Partial, "255 bytes may still end in a NUL");
        bytes.push(b'u');
        assert_eq!(parse_socks4_request(&bytes), Parse::Invalid(Invalid::Reply(Reply::GeneralFailure)));
        // A NUL further on does not help: the parser never looks past the bound.
        bytes.extend_from_slice(&[b'u', 0]);
        assert_eq!(parse_socks4_request(&bytes), Parse::Invalid(Invalid::Reply(Reply::GeneralFailure)));
        // The same for an endless stream, at the bound.
        let endless = [&[4, 1, 0, 80, 1, 2, 3, 4][..], &[b'x'; 10_000]].concat();
        assert_eq!(parse_socks4_request(&endless), Parse::Invalid(Invalid::Reply(Reply::GeneralFailure)));
    }

    #[test]
    fn too_long_hostname_is_invalid() {
        let mut bytes = vec![4, 1, 0, 80, 0, 0, 0, 1, b'u', 0];
        bytes.extend(std::iter::repeat_n(b'h', MAX_FIELD_LEN));
        assert_eq!(parse_socks4_request(&bytes), Parse::Partial);
        bytes.push(b'h');
        assert_eq!(parse_socks4_request(&bytes), Parse::Invalid(Invalid::Reply(Reply::HostUnreachable)));
        bytes.push(0);
        assert_eq!(parse_socks4_request(&bytes), Parse::Invalid(Invalid::Reply(Reply::HostUnreachable)));
    }

    #[test]
    fn non_utf8_hostname_is_invalid_once_complete() {
        let bytes = [4, 1, 0, 80, 0, 0, 0, 1, 0, 0xff, 0xfe, 0];
        for cut in 0..bytes.len() {
            assert_eq!(parse_socks4_request(&bytes[..cut]), Parse::Partial, "cut {cut}");
        }
        assert_eq!(parse_socks4_request(&bytes), Parse::Invalid(Invalid::Reply(Reply::HostUnreachable)));
    }

    #[test]
    fn header_errors() {
        assert_eq!(parse_socks4_request(&[5, 1, 0]), Parse::Invalid(Invalid::BadVersion(5)));
        assert_eq!(parse_socks4_request(&[4]), Parse::Partial);
        for cd in [0, 3, 0x5A, 0xff] {
            assert_eq!(
                parse_socks4_request(&[4, cd]),
                Parse::Invalid(Invalid::Reply(Reply::CommandNotSupported)),
                "CD {cd}"
            );
        }
    }

    #[test]
    fn reply_bytes() {
        let addr = SocketAddrV4::new(Ipv4Addr::new(192, 168, 1, 2), 0x1234);
        assert_eq!(encode_socks4_reply(Socks4Reply::Granted, addr), [0, 0x5A, 0x12, 0x34, 192, 168, 1, 2]);
        let none = SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0);
        assert_eq!(encode_socks4_reply(Socks4Reply::Rejected, none), [0, 91, 0, 0, 0, 0, 0, 0]);
        assert_eq!(Socks4Reply::IdentdUnreachable.code(), 92);
        assert_eq!(Socks4Reply::IdentdMismatch.code(), 93);
    }

    #[test]
    fn every_socks5_reason_maps_to_one_socks4_code() {
        for reply in Reply::ALL {
            let expected =
                if reply == Reply::Succeeded { Socks4Reply::Granted } else { Socks4Reply::Rejected };
            assert_eq!(Socks4Reply::for_reply(reply), expected, "{reply}");
        }
    }
}
