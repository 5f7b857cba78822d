//! A small blocking SOCKS5 client: greeting (no auth or RFC 1929), requests, replies, and the
//! ways a client ends a connection.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};

use super::*;

pub const NO_AUTH: u8 = 0x00;
pub const USER_PASS: u8 = 0x02;
pub const CMD_CONNECT: u8 = 0x01;
pub const CMD_BIND: u8 = 0x02;
pub const CMD_UDP_ASSOCIATE: u8 = 0x03;

pub const REP_OK: u8 = 0x00;
pub const REP_GENERAL_FAILURE: u8 = 0x01;
pub const REP_NOT_ALLOWED: u8 = 0x02;
pub const REP_HOST_UNREACHABLE: u8 = 0x04;
pub const REP_REFUSED: u8 = 0x05;
pub const REP_TTL_EXPIRED: u8 = 0x06;
pub const REP_CMD_NOT_SUPPORTED: u8 = 0x07;
pub const REP_ATYP_NOT_SUPPORTED: u8 = 0x08;

/// Where a request points.
#[derive(Clone, Debug)]
pub enum Dest {
    Ip(SocketAddr),
    Domain(String, u16),
}

impl From<SocketAddr> for Dest {
    fn from(addr: SocketAddr) -> Dest {
        Dest::Ip(addr)
    }
}

/// A parsed reply: `05 REP 00 ATYP BND.ADDR BND.PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u8,
    pub bound: Bound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Ip(SocketAddr),
    Domain(String, u16),
}

/// A TCP connection to `addr` with read and write timeouts set, so a hang fails.
pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

/// A TCP connection to `to` from a chosen local address (127.0.0.2 is another loopback host).
pub fn connect_from(local: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((local, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

pub fn greeting_bytes() -> Vec<u8> {
    vec![5, 1, NO_AUTH]
}

/// Send `05 01 00` and expect `05 00`.
pub fn greet(stream: &mut TcpStream) {
    stream.write_all(&greeting_bytes()).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).expect("method selection");
    assert_eq!(answer, [5, NO_AUTH], "method selection");
}

/// Greet offering username/password; expect the server to choose it.
pub fn greet_userpass(stream: &mut TcpStream) {
    stream.write_all(&[5, 1, USER_PASS]).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [5, USER_PASS], "server should pick username/password");
}

/// `01 ULEN USER PLEN PASS`: an RFC 1929 request.
pub fn auth_request_bytes(user: &str, pass: &str) -> Vec<u8> {
    let mut msg = vec![1, user.len() as u8];
    msg.extend_from_slice(user.as_bytes());
    msg.push(pass.len() as u8);
    msg.extend_from_slice(pass.as_bytes());
    msg
}

/// Send an RFC 1929 request; the status byte of the answer.
pub fn authenticate(stream: &mut TcpStream, user: &str, pass: &str) -> u8 {
    stream.write_all(&auth_request_bytes(user, pass)).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer[0], 1, "sub-negotiation version");
    answer[1]
}

/// Encode `05 CMD 00 ATYP ADDR PORT`.
pub fn request_bytes(cmd: u8, dest: &Dest) -> Vec<u8> {
    let mut out = vec![5, cmd, 0];
    match dest {
        Dest::Ip(SocketAddr::V4(a)) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Ip(SocketAddr::V6(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Domain(host, port) => {
            assert!(host.len() <= 255);
            out.push(3);
            out.push(host.len() as u8);
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(&port.to_be_bytes());
        }
    }
    out
}

/// Read one complete reply, however the variable-length BND.ADDR arrives.
pub fn read_reply(stream: &mut impl Read) -> io::Result<Reply> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head)?;
    if head[0] != 5 || head[2] != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad reply head {head:?}")));
    }
    let bound = match head[3] {
        1 => {
            let mut b = [0u8; 6];
            stream.read_exact(&mut b)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Bound::Ip(SocketAddr::new(ip.into(), u16::from_be_bytes([b[4], b[5]])))
        }
        4 => {
            let mut b = [0u8; 18];
            stream.read_exact(&mut b)?;
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).unwrap());
            Bound::Ip(SocketAddr::new(ip.into(), u16::from_be_bytes([b[16], b[17]])))
        }
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len)?;
            let mut b = vec![0u8; len[0] as usize + 2];
            stream.read_exact(&mut b)?;
            let port = u16::from_be_bytes([b[b.len() - 2], b[b.len() - 1]]);
            b.truncate(len[0] as usize);
            Bound::Domain(String::from_utf8_lossy(&b).into_owned(), port)
        }
        other => {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad reply ATYP {other}")));
        }
    };
    Ok(Reply { code: head[1], bound })
}

/// Greet, send a request, and read its reply.
pub fn socks_request(proxy: SocketAddr, cmd: u8, dest: &Dest) -> (TcpStream, Reply) {
    let mut stream = tcp_connect(proxy);
    greet(&mut stream);
    stream.write_all(&request_bytes(cmd, dest)).unwrap();
    let reply = read_reply(&mut stream).expect("reply");
    (stream, reply)
}

/// CONNECT through the proxy and insist on success.
pub fn socks_connect(proxy: SocketAddr, dest: impl Into<Dest>) -> (TcpStream, Reply) {
    let dest = dest.into();
    let (stream, reply) = socks_request(proxy, CMD_CONNECT, &dest);
    assert_eq!(reply.code, REP_OK, "CONNECT {dest:?} failed: {reply:?}");
    (stream, reply)
}

/// Read until EOF (or a reset, which also ends the stream); everything read.
pub fn read_to_close(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// Expect the server to close `stream` without sending anything more: the read must end in
/// EOF or a reset before the socket's read timeout.
pub fn expect_closed(stream: &mut TcpStream, what: &str) {
    match read_to_close(stream) {
        Ok(rest) => assert!(rest.is_empty(), "{what}: unexpected bytes before close: {rest:?}"),
        Err(e) => panic!("{what}: not closed: {e}"),
    }
}

/// Round-trip `msg` through an echo relay.
pub fn assert_echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

/// `msg` written on `from` arrives on `to` (the two ends of a relay).
pub fn assert_echo_between(from: &mut TcpStream, to: &mut TcpStream, msg: &[u8]) {
    from.write_all(msg).unwrap();
    let mut buf = vec![0u8; msg.len()];
    to.read_exact(&mut buf).unwrap();
    assert_eq!(buf, msg);
}

/// Wait up to `wait` for bytes without consuming them: `true` if nothing arrived, for
/// "not answered yet".
pub fn nothing_arrives(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 16];
    let silent = matches!(
        stream.peek(&mut buf),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
    );
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    silent
}

/// Write all of `bytes`, ignoring failures (the proxy may already have closed on us).
pub fn write_ignoring_errors(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}

/// How a test client (or target) goes away.
#[derive(Debug, Clone, Copy)]
pub enum Leave {
    /// close(): FIN.
    Close,
    /// SO_LINGER 0 then close(): RST.
    Reset,
}

pub const LEAVES: [Leave; 2] = [Leave::Close, Leave::Reset];

/// Close `stream` the way `how` says.
pub fn leave(stream: TcpStream, how: Leave) {
    if let Leave::Reset = how {
        SockRef::from(&stream).set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
    }
    drop(stream);
}

/// Greet offering username/password, log in, and send a CONNECT: `Ok((stream, reply code))`,
/// or `Err(auth status)` when the login was refused (the proxy then closes).
pub fn auth_connect(proxy: SocketAddr, user: &str, pass: &str, dest: &Dest) -> Result<(TcpStream, u8), u8> {
    let mut stream = tcp_connect(proxy);
    greet_userpass(&mut stream);
    let status = authenticate(&mut stream, user, pass);
    if status != 0 {
        expect_closed(&mut stream, "after failed auth");
        return Err(status);
    }
    stream.write_all(&request_bytes(CMD_CONNECT, dest)).unwrap();
    let reply = read_reply(&mut stream).unwrap();
    Ok((stream, reply.code))
}
