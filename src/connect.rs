//! Nonblocking outbound connects (what their failures mean to a SOCKS client is
//! `connection::policy::reply_for_error`).
//!
//! `start` returns as soon as the kernel has begun the TCP handshake (EINPROGRESS). The
//! loop then waits for the socket to become writable and calls [`progress`]: writability
//! alone does not mean success (a refused connect is also "writable"), so `SO_ERROR` is read
//! first, then `getpeername` tells a finished connect from a spurious wakeup.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;
use socket2::{Domain, Protocol, Socket, Type};

use crate::net::{EgressError, Outbound, apply_device_and_mark};

/// Begin connecting to `addr` without blocking, from a socket set up as `out` asks (source
/// address, device, mark: all before `connect`, so the SYN already carries them). A setup
/// failure is an [`EgressError`].
pub fn start(addr: SocketAddr, out: &Outbound) -> io::Result<TcpStream> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    // A proxy must not add latency: forward each small write as soon as it is read.
    socket.set_tcp_nodelay(true)?;
    apply_device_and_mark(&socket, out)?;
    if let Some(local) = out.from {
        bind_before_connect(&socket, local).map_err(|e| EgressError::wrap(format!("bind-out {local}"), e))?;
    }
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Bind the outbound socket's source address, leaving the port to `connect`.
///
/// Binding with port 0 would normally reserve a port at `bind` time, before the kernel
/// knows the destination, which exhausts ephemeral ports under load. On Linux
/// `IP_BIND_ADDRESS_NO_PORT` defers the choice to `connect`, where ports can be shared
/// across different destinations.
fn bind_before_connect(socket: &Socket, local: IpAddr) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::os::fd::AsRawFd;
        let on: libc::c_int = 1;
        // SAFETY: a plain setsockopt on a socket we own, with a correctly sized int option.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                (&on as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            log::debug!("IP_BIND_ADDRESS_NO_PORT: {}", io::Error::last_os_error());
        }
    }
    socket.bind(&SocketAddr::new(local, 0).into())
}

/// Where a pending connect stands.
#[derive(Debug)]
pub enum Progress {
    Connected,
    /// Spurious wakeup: still connecting.
    Pending,
    Failed(io::Error),
}

/// Check a connect after a readiness event on its socket.
pub fn progress(stream: &TcpStream) -> Progress {
    match stream.take_error() {
        Ok(Some(e)) | Err(e) => return Progress::Failed(e),
        Ok(None) => {}
    }
    match stream.peer_addr() {
        Ok(_) => Progress::Connected,
        Err(e) if e.kind() == io::ErrorKind::NotConnected => Progress::Pending,
        Err(e) => Progress::Failed(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_loopback_connect_is_reported() {
        // Bind then drop a listener to find a port nothing listens on.
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let mut poll = mio::Poll::new().unwrap();
        let mut stream = match start(addr, &Outbound::default()) {
            Ok(s) => s,
            Err(e) => {
                assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
                return;
            }
        };
        poll.registry().register(&mut stream, mio::Token(1), mio::Interest::WRITABLE).unwrap();
        let mut events = mio::Events::with_capacity(4);
        for _ in 0..50 {
            poll.poll(&mut events, Some(std::time::Duration::from_millis(100))).unwrap();
            match progress(&stream) {
                Progress::Pending => continue,
                Progress::Failed(e) => {
                    assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
                    return;
                }
                Progress::Connected => panic!("nothing listens on {addr}"),
            }
        }
        panic!("connect never finished");
    }
}
