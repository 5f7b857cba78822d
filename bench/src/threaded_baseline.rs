//! A classic thread-per-connection SOCKS5 proxy on `std::net`: the design of this project's
//! seed, kept as the baseline socksloop is measured against.
//!
//! Per client: read the greeting, answer `05 00`, read the request, dial the target with a
//! blocking connect, answer, then two threads copy bytes, one per direction. Unlike the seed
//! it parses messages properly (exact lengths, every address type, error replies), so it is a
//! fair baseline; it keeps the seed's architecture, with its costs: two threads (stacks,
//! scheduler work) per relay, and one thread start per accepted client.
//!
//! Run it alone: `cargo run --release --bin threaded_baseline -- 127.0.0.1:1081`.
//! The relay bench calls [`serve`] in-process (through [`servers::threaded`]).
//!
//! [`servers::threaded`]: crate::servers::threaded

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream, ToSocketAddrs};
use std::thread;
use std::time::Duration;

/// Per-direction copy buffer: the size socksloop's loop reads with, so neither side wins
/// throughput by buffer size alone.
const COPY_BUF: usize = 64 * 1024;
/// A client that stalls mid-handshake must not hold its thread forever.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Accept forever, one thread per client.
pub fn serve(listener: TcpListener) -> io::Result<()> {
    loop {
        let (client, _) = match listener.accept() {
            Ok(accepted) => accepted,
            // Out of descriptors or a client that gave up: this client only, keep serving.
            Err(e) => {
                eprintln!("threaded_baseline: accept: {e}");
                thread::sleep(Duration::from_millis(10));
                continue;
            }
        };
        if let Err(e) = thread::Builder::new().spawn(move || handle(client)) {
            eprintln!("threaded_baseline: cannot start a thread: {e}");
        }
    }
}

fn handle(mut client: TcpStream) {
    let upstream = match handshake(&mut client) {
        Ok(upstream) => upstream,
        Err(_) => return, // the error reply, if any, was sent; dropping closes
    };
    relay(client, upstream);
}

/// Greeting, request, connect, reply. Returns the connected upstream.
fn handshake(client: &mut TcpStream) -> io::Result<TcpStream> {
    client.set_nodelay(true)?;
    client.set_read_timeout(Some(HANDSHAKE_TIMEOUT))?;
    let mut head = [0u8; 2];
    client.read_exact(&mut head)?;
    if head[0] != 0x05 {
        return Err(invalid("not SOCKS5"));
    }
    let mut methods = [0u8; 255];
    let methods = &mut methods[..usize::from(head[1])];
    client.read_exact(methods)?;
    if !methods.contains(&0x00) {
        client.write_all(&[0x05, 0xFF])?;
        return Err(invalid("no acceptable method"));
    }
    client.write_all(&[0x05, 0x00])?;

    let mut request = [0u8; 4];
    client.read_exact(&mut request)?;
    if request[0] != 0x05 {
        return Err(invalid("bad request version"));
    }
    let target = match read_address(client, request[3]) {
        Ok(target) => target,
        Err(e) => {
            let _ = reply(client, 0x08, None);
            return Err(e);
        }
    };
    if request[1] != 0x01 {
        reply(client, 0x07, None)?; // only CONNECT
        return Err(invalid("command not supported"));
    }
    let upstream = match connect(&target) {
        Ok(upstream) => upstream,
        Err(e) => {
            let code = match e.kind() {
                io::ErrorKind::ConnectionRefused => 0x05,
                io::ErrorKind::HostUnreachable => 0x04,
                io::ErrorKind::NetworkUnreachable => 0x03,
                io::ErrorKind::TimedOut => 0x06,
                _ => 0x01,
            };
            reply(client, code, None)?;
            return Err(e);
        }
    };
    upstream.set_nodelay(true)?;
    reply(client, 0x00, upstream.local_addr().ok())?;
    client.set_read_timeout(None)?;
    Ok(upstream)
}

/// `ATYP` already read; read the address and port, resolving a name (blocking, like the seed).
fn read_address(client: &mut TcpStream, atyp: u8) -> io::Result<Vec<SocketAddr>> {
    let ip = match atyp {
        0x01 => {
            let mut b = [0u8; 4];
            client.read_exact(&mut b)?;
            IpAddr::V4(Ipv4Addr::from(b))
        }
        0x04 => {
            let mut b = [0u8; 16];
            client.read_exact(&mut b)?;
            IpAddr::V6(Ipv6Addr::from(b))
        }
        0x03 => {
            let mut len = [0u8; 1];
            client.read_exact(&mut len)?;
            let mut name = vec![0u8; usize::from(len[0])];
            client.read_exact(&mut name)?;
            let port = read_port(client)?;
            let name = String::from_utf8(name).map_err(|_| invalid("name is not UTF-8"))?;
            return Ok((name.as_str(), port).to_socket_addrs()?.collect());
        }
        _ => return Err(invalid("address type not supported")),
    };
    Ok(vec![SocketAddr::new(ip, read_port(client)?)])
}

fn read_port(client: &mut TcpStream) -> io::Result<u16> {
    let mut b = [0u8; 2];
    client.read_exact(&mut b)?;
    Ok(u16::from_be_bytes(b))
}

/// Try each address in turn with a blocking connect.
fn connect(addrs: &[SocketAddr]) -> io::Result<TcpStream> {
    let mut last = io::Error::new(io::ErrorKind::HostUnreachable, "name has no addresses");
    for addr in addrs {
        match TcpStream::connect_timeout(addr, HANDSHAKE_TIMEOUT) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn reply(client: &mut TcpStream, code: u8, bound: Option<SocketAddr>) -> io::Result<()> {
    let bound = bound.unwrap_or(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
    let mut out = Vec::with_capacity(22);
    out.extend_from_slice(&[0x05, code, 0x00]);
    match bound.ip() {
        IpAddr::V4(ip) => {
            out.push(0x01);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(0x04);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&bound.port().to_be_bytes());
    client.write_all(&out)
}

/// Two copy threads (this one and one more), each half-closing its destination at EOF.
fn relay(client: TcpStream, upstream: TcpStream) {
    let (Ok(client_rx), Ok(upstream_tx)) = (client.try_clone(), upstream.try_clone()) else { return };
    let up = thread::Builder::new().spawn(move || copy(client_rx, upstream_tx));
    copy(upstream, client);
    if let Ok(up) = up {
        let _ = up.join();
    }
}

fn copy(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = vec![0u8; COPY_BUF];
    loop {
        match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    // The destination is gone: stop the source too, so the other thread ends.
                    let _ = from.shutdown(Shutdown::Both);
                    return;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(_) => {
                let _ = to.shutdown(Shutdown::Both);
                return;
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
}

fn invalid(message: &'static str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}
