//! What a connection needs from its two TCP streams, as a trait.
//!
//! The event loop uses mio's `TcpStream`. The trait exists so that the whole connection state
//! machine can also run without any socket: the `connection` fuzz target implements it for
//! scripted in-memory streams and drives a `Connection` with arbitrary bytes from both sides.

use std::io;
use std::net::{IpAddr, SocketAddr};

use mio::net::TcpStream;

use crate::connect::{self, Progress};
use crate::relay::Stream;

/// What the relay needs to `splice(2)` a stream: its descriptor, on Linux; nothing elsewhere.
#[cfg(target_os = "linux")]
pub trait SpliceFd: std::os::fd::AsFd {}
#[cfg(target_os = "linux")]
impl<T: std::os::fd::AsFd> SpliceFd for T {}
/// What the relay needs to `splice(2)` a stream: its descriptor, on Linux; nothing elsewhere.
#[cfg(not(target_os = "linux"))]
pub trait SpliceFd {}
#[cfg(not(target_os = "linux"))]
impl<T> SpliceFd for T {}

/// A TCP stream as seen by [`Connection`](crate::connection::Connection).
pub trait Socket: Stream + mio::event::Source + SpliceFd + Sized {
    /// Begin a nonblocking connect (the upstream of a CONNECT).
    fn connect(addr: SocketAddr, bind_out: Option<IpAddr>) -> io::Result<Self>;
    /// Where a connect begun by [`Socket::connect`] stands.
    fn connect_progress(&self) -> Progress;
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The pending socket error (`SO_ERROR`), cleared by reading it.
    fn take_error(&self) -> io::Result<Option<io::Error>>;
    /// Adopt a connection accepted by a BIND listener.
    fn from_accepted(stream: TcpStream) -> Self;
    /// Whether commands that open sockets of their own (BIND, UDP ASSOCIATE) can be served.
    fn supports_listeners() -> bool {
        true
    }
}

impl Socket for TcpStream {
    fn connect(addr: SocketAddr, bind_out: Option<IpAddr>) -> io::Result<Self> {
        connect::start(addr, bind_out)
    }

    fn connect_progress(&self) -> Progress {
        connect::progress(self)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self)
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        TcpStream::take_error(self)
    }

    fn from_accepted(stream: TcpStream) -> Self {
        // Like every relayed stream: forward small writes at once.
        let _ = stream.set_nodelay(true);
        stream
    }
}
