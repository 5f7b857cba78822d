//! What travels over a benchmark connection: the SOCKS5 client handshake (to any server),
//! then the small header that tells the target what to do.
//!
//! Header, right after the tunnel is up (or right after connecting with `--direct`):
//!
//! ```text
//! MODE(1) SEED(8, little-endian) LEN(8, little-endian)
//! ```
//!
//! * `E` echo: everything after the header comes back.
//! * `U` upload: the target checks every byte against [`Pattern`](crate::pattern) `SEED`.
//! * `D` download: the target sends `LEN` pattern bytes (`u64::MAX`: until the client's FIN).
//! * `B` both at once.
//! * `H` hold: the target answers one byte `k` (the relay reaches it), then stays idle.
//!
//! In every mode the target, once it has read the client's FIN, stops generating, flushes,
//! sends its own FIN and closes; so a client that half-closes and reads to EOF knows every
//! byte it sent was received, without a status message mixed into the data.

use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

pub const HEADER_LEN: usize = 17;
/// The byte a held connection's target answers with.
pub const HOLD_ACK: u8 = b'k';

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Echo,
    Upload,
    Download,
    Both,
    Hold,
}

impl Mode {
    fn byte(self) -> u8 {
        match self {
            Mode::Echo => b'E',
            Mode::Upload => b'U',
            Mode::Download => b'D',
            Mode::Both => b'B',
            Mode::Hold => b'H',
        }
    }

    fn from_byte(b: u8) -> Option<Mode> {
        Some(match b {
            b'E' => Mode::Echo,
            b'U' => Mode::Upload,
            b'D' => Mode::Download,
            b'B' => Mode::Both,
            b'H' => Mode::Hold,
            _ => return None,
        })
    }

    pub fn uploads(self) -> bool {
        matches!(self, Mode::Upload | Mode::Both)
    }

    pub fn downloads(self) -> bool {
        matches!(self, Mode::Download | Mode::Both)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    pub mode: Mode,
    pub seed: u64,
    /// Bytes the target sends in download modes; `u64::MAX` = until the client's FIN.
    pub len: u64,
}

impl Header {
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = [0u8; HEADER_LEN];
        out[0] = self.mode.byte();
        out[1..9].copy_from_slice(&self.seed.to_le_bytes());
        out[9..17].copy_from_slice(&self.len.to_le_bytes());
        out
    }

    /// `None` for an unknown mode: the target closes such a connection.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Option<Header> {
        let mode = Mode::from_byte(bytes[0])?;
        let mut word = [0u8; 8];
        word.copy_from_slice(&bytes[1..9]);
        let seed = u64::from_le_bytes(word);
        word.copy_from_slice(&bytes[9..17]);
        Some(Header { mode, seed, len: u64::from_le_bytes(word) })
    }
}

/// RFC 1929 credentials a route logs in with (`--user`, `--password`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Login {
    pub user: &'static str,
    pub password: &'static str,
}

/// How the tool reaches the target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Straight to the target: the physical limit of this machine's loopback.
    Direct,
    /// Through the SOCKS5 server at this address.
    Proxy(SocketAddr),
    /// Through the SOCKS5 server at this address, naming the target by this host name (ATYP
    /// 3: the proxy resolves it, so its resolver is measured too).
    ProxyByName(SocketAddr, &'static str),
    /// Through the SOCKS5 server at this address, logging in with username/password (RFC
    /// 1929) first; naming the target by the host name if one is given.
    ProxyAs(SocketAddr, Option<&'static str>, Login),
}

/// Connect to `target` along `route` with blocking sockets and `timeout` on every step.
///
/// Returns the stream, ready for the header, and the handshake time: from the start of the
/// TCP connect until the SOCKS success reply has been read (for `Direct`, until connected).
pub fn open(route: Route, target: SocketAddr, timeout: Duration) -> io::Result<(TcpStream, Duration)> {
    let start = Instant::now();
    let first_hop = match route {
        Route::Direct => target,
        Route::Proxy(proxy) | Route::ProxyByName(proxy, _) | Route::ProxyAs(proxy, ..) => proxy,
    };
    let mut stream = TcpStream::connect_timeout(&first_hop, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    // Every SOCKS server under test sets TCP_NODELAY on its side; so do we, so small
    // messages (handshakes, the 64-byte echo) are never held back by Nagle.
    stream.set_nodelay(true)?;
    match route {
        Route::Direct => {}
        Route::Proxy(_) => socks5_connect(&mut stream, target, None)?,
        Route::ProxyByName(_, name) => socks5_connect(&mut stream, target, Some(name))?,
        Route::ProxyAs(_, name, login) => socks5_connect_as(&mut stream, target, name, Some(login))?,
    }
    Ok((stream, start.elapsed()))
}

/// The client half of a no-auth SOCKS5 CONNECT, one message at a time like most clients
/// (no pipelining, so servers that read one message per `read` are measured fairly).
/// With `name`, the request names the target by it (and `target`'s port) instead of its IP.
pub fn socks5_connect(stream: &mut TcpStream, target: SocketAddr, name: Option<&str>) -> io::Result<()> {
    socks5_connect_as(stream, target, name, None)
}

/// [`socks5_connect`], offering only username/password (RFC 1929) and logging in with `login`
/// when it is given.
pub fn socks5_connect_as(
    stream: &mut TcpStream,
    target: SocketAddr,
    name: Option<&str>,
    login: Option<Login>,
) -> io::Result<()> {
    let method = if login.is_some() { 0x02 } else { 0x00 };
    stream.write_all(&[0x05, 0x01, method])?;
    let mut choice = [0u8; 2];
    stream.read_exact(&mut choice)?;
    if choice != [0x05, method] {
        return Err(protocol_error(format!("proxy chose method {choice:02x?}, not {method:#04x}")));
    }
    if let Some(Login { user, password }) = login {
        let too_long = || protocol_error("user name and password are limited to 255 bytes".into());
        let mut message = vec![0x01, u8::try_from(user.len()).map_err(|_| too_long())?];
        message.extend_from_slice(user.as_bytes());
        message.push(u8::try_from(password.len()).map_err(|_| too_long())?);
        message.extend_from_slice(password.as_bytes());
        stream.write_all(&message)?;
        let mut status = [0u8; 2];
        stream.read_exact(&mut status)?;
        if status != [0x01, 0x00] {
            return Err(protocol_error(format!("login as '{user}' refused ({status:02x?})")));
        }
    }
    let mut request = Vec::with_capacity(22);
    request.extend_from_slice(&[0x05, 0x01, 0x00]);
    match (name, target.ip()) {
        (Some(name), _) => {
            request.push(0x03);
            request.push(u8::try_from(name.len()).map_err(|_| protocol_error("name over 255 bytes".into()))?);
            request.extend_from_slice(name.as_bytes());
        }
        (None, IpAddr::V4(ip)) => {
            request.push(0x01);
            request.extend_from_slice(&ip.octets());
        }
        (None, IpAddr::V6(ip)) => {
            request.push(0x04);
            request.extend_from_slice(&ip.octets());
        }
    }
    request.extend_from_slice(&target.port().to_be_bytes());
    stream.write_all(&request)?;
    let mut head = [0u8; 4];
    stream.read_exact(&mut head)?;
    if head[0] != 0x05 {
        return Err(protocol_error(format!("reply version {:#04x}", head[0])));
    }
    if head[1] != 0x00 {
        return Err(protocol_error(format!("proxy replied {:#04x} to CONNECT", head[1])));
    }
    // The bound address is variable length; read exactly it so no payload is eaten.
    let rest = match head[3] {
        0x01 => 4 + 2,
        0x04 => 16 + 2,
        0x03 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len)?;
            usize::from(len[0]) + 2
        }
        other => return Err(protocol_error(format!("reply address type {other:#04x}"))),
    };
    let mut bound = [0u8; 257];
    stream.read_exact(&mut bound[..rest])
}

fn protocol_error(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trip() {
        for mode in [Mode::Echo, Mode::Upload, Mode::Download, Mode::Both, Mode::Hold] {
            let h = Header { mode, seed: 0x0102_0304_0506_0708, len: u64::MAX - 3 };
            assert_eq!(Header::decode(&h.encode()), Some(h));
        }
        assert_eq!(Header::decode(&[b'?'; HEADER_LEN]), None);
    }
}
