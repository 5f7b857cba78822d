//! Listening sockets, set up the way a server needs them.

use std::io;
use std::net::SocketAddr;

use mio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// Pending connections the kernel may queue for us (capped by `net.core.somaxconn`, 4096 by
/// default since Linux 5.4). A burst of clients larger than this gets SYNs dropped and retried
/// a second later, so it should exceed any burst the loop cannot accept at once.
const BACKLOG: i32 = 4096;

/// Bind a nonblocking listener.
///
/// * `SO_REUSEADDR`: a restarted proxy can bind while old connections sit in TIME_WAIT.
/// * `IPV6_V6ONLY` on IPv6 addresses: `[::]:1080` and `0.0.0.0:1080` can both be listened on,
///   and an IPv6 listener never silently accepts IPv4 clients as mapped addresses.
/// * `SO_REUSEPORT` (when `reuse_port`): several workers each bind their own listener on the
///   same port and the kernel spreads connections between them.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(TcpListener::from_std(socket.into()))
}
