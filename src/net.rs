//! The I/O boundary: everything the connection state machine asks of the operating system.
//!
//! The state machine never names `mio`. It sees:
//!
//! * three socket traits, [`Stream`] (TCP), [`Listener`] (a BIND's listening socket) and
//!   [`Datagram`] (a UDP association's sockets);
//! * [`End`]: one socket plus the [`Readiness`] we were told about and have not used up;
//! * [`read()`] and [`write()`], which sort every outcome into a [`ReadOutcome`] or a
//!   [`WriteOutcome`] so the rules (`Interrupted` is retried, `WouldBlock` clears the flag,
//!   `Ok(0)` from a read is end-of-stream) live in one place;
//! * [`Net`]: the handle that opens sockets *already registered* with the event loop under
//!   a [`SocketId`]. The server implements it on `mio::Registry`; the [`crate::sim`] module
//!   implements it without any socket, so every phase (BIND and UDP included) can be driven
//!   by unit tests and fuzz targets.
//!
//! Non-guarantees: readiness is a hint. A flag may be set when the socket has nothing (a
//! spurious event, a socket replaced since), and the next I/O attempt is what tells.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream, UdpSocket};
use mio::{Interest, Registry};

use crate::connect::{self, Progress};
use crate::token::{self, Side};

/// The result of one read attempt on a nonblocking socket.
#[derive(Debug)]
pub enum ReadOutcome {
    /// This many bytes arrived (never 0).
    Data(usize),
    /// Nothing to read until the next readiness event.
    WouldBlock,
    /// The peer sent FIN.
    Eof,
    /// The connection is broken (reset, timeout, ...).
    Failed(io::Error),
}

/// The result of one write attempt on a nonblocking socket. (A write never sees EOF.)
#[derive(Debug)]
pub enum WriteOutcome {
    /// This many bytes were accepted (never 0).
    Wrote(usize),
    /// The send buffer is full until the next writable event.
    WouldBlock,
    /// The connection is broken (reset, broken pipe, ...).
    Failed(io::Error),
}

/// One `read`, sorted.
pub fn read(socket: &mut impl Read, buf: &mut [u8]) -> ReadOutcome {
    loop {
        return match socket.read(buf) {
            Ok(0) => ReadOutcome::Eof,
            Ok(n) => ReadOutcome::Data(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => ReadOutcome::WouldBlock,
            Err(e) => ReadOutcome::Failed(e),
        };
    }
}

/// One `write`, sorted.
pub fn write(socket: &mut impl Write, buf: &[u8]) -> WriteOutcome {
    loop {
        return match socket.write(buf) {
            // A zero-length write on a stream socket only happens for an empty `buf`.
            Ok(0) => WriteOutcome::Failed(io::ErrorKind::WriteZero.into()),
            Ok(n) => WriteOutcome::Wrote(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => WriteOutcome::WouldBlock,
            Err(e) => WriteOutcome::Failed(e),
        };
    }
}

/// Readiness we have been told about and not yet used up (edge-triggered bookkeeping).
///
/// An event *sets* a flag; `WouldBlock` *clears* it (and, in the relay on Linux, a read that
/// emptied the receive queue while `peer_closed` is unset: see [`crate::relay`]). That way a
/// socket we stopped reading because a buffer was full is still known to be readable later,
/// when no new edge will come.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The peer's FIN or an error has been reported. Sticky: after it, a short read no
    /// longer means "drained until the next edge" (there will be no next edge).
    pub peer_closed: bool,
}

impl Readiness {
    pub const BOTH: Readiness = Readiness { readable: true, writable: true, peer_closed: false };
    pub const READABLE: Readiness = Readiness { readable: true, writable: false, peer_closed: false };
    pub const WRITABLE: Readiness = Readiness { readable: false, writable: true, peer_closed: false };
    pub const NONE: Readiness = Readiness { readable: false, writable: false, peer_closed: false };

    /// What a mio event says. Errors and hang-ups count as both: they are found by doing I/O.
    pub fn of_event(event: &mio::event::Event) -> Readiness {
        let closed = event.is_read_closed() || event.is_error();
        Readiness {
            readable: event.is_readable() || closed,
            writable: event.is_writable() || event.is_write_closed() || event.is_error(),
            peer_closed: closed,
        }
    }

    /// Add newly reported readiness to what we already knew.
    pub fn add(&mut self, news: Readiness) {
        self.readable |= news.readable;
        self.writable |= news.writable;
        self.peer_closed |= news.peer_closed;
    }

    pub fn any(self) -> bool {
        self.readable || self.writable
    }
}

/// One socket and its readiness: what a phase owns for each socket valid in it.
#[derive(Debug)]
pub struct End<S> {
    pub socket: S,
    pub ready: Readiness,
}

impl<S> End<S> {
    pub fn new(socket: S, ready: Readiness) -> End<S> {
        End { socket, ready }
    }
}

impl<S: Read + Write> End<S> {
    /// Read if the socket is known readable; a `WouldBlock` clears the flag. Returns
    /// `WouldBlock` without a syscall when the flag is already clear.
    ///
    /// On Linux a short read (fewer bytes than asked for) clears the flag too: it emptied the
    /// receive queue, and every later arrival raises a new edge, so the next read could only
    /// say `WouldBlock` (the relay's short-read rule, `crate::relay`, for every phase: a
    /// handshake message read whole is not followed by a read for `EAGAIN`). Not once the
    /// peer's FIN or an error was reported (`peer_closed`): nothing raises an edge for those
    /// again.
    pub fn read(&mut self, buf: &mut [u8]) -> ReadOutcome {
        if !self.ready.readable {
            return ReadOutcome::WouldBlock;
        }
        let outcome = read(&mut self.socket, buf);
        match outcome {
            ReadOutcome::WouldBlock => self.ready.readable = false,
            ReadOutcome::Data(n) if n < buf.len() && cfg!(target_os = "linux") && !self.ready.peer_closed => {
                self.ready.readable = false;
            }
            _ => {}
        }
        outcome
    }

    /// Write if the socket is known writable; a `WouldBlock` clears the flag.
    pub fn write(&mut self, buf: &[u8]) -> WriteOutcome {
        if !self.ready.writable {
            return WriteOutcome::WouldBlock;
        }
        let outcome = write(&mut self.socket, buf);
        if matches!(outcome, WriteOutcome::WouldBlock) {
            self.ready.writable = false;
        }
        outcome
    }
}

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

/// A connected (or connecting) TCP stream.
pub trait Stream: Read + Write + SpliceFd {
    /// Half-close: send FIN, keep receiving.
    fn shutdown_write(&self) -> io::Result<()>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
    /// The pending socket error (`SO_ERROR`), cleared by reading it.
    fn take_error(&self) -> io::Result<Option<io::Error>>;
    /// Where a connect begun by [`Net::connect`] stands.
    fn connect_progress(&self) -> Progress;
    /// Turn TCP keepalive on (`Some(idle)`: probes after `idle` without traffic) or off.
    fn set_keepalive(&self, idle: Option<Duration>) -> io::Result<()>;
    /// Copy received bytes into `buf` without consuming them (`MSG_PEEK`).
    fn peek(&self, buf: &mut [u8]) -> io::Result<usize>;
}

/// A listening TCP socket (a BIND's).
pub trait Listener {
    type Stream: Stream;
    fn accept(&mut self) -> io::Result<(Self::Stream, SocketAddr)>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// A bound UDP socket (a UDP association's).
pub trait Datagram {
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)>;
    fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize>;
    fn local_addr(&self) -> io::Result<SocketAddr>;
}

/// Names one socket of one connection for the event loop: the connection's slab key and
/// which of its sockets (see [`crate::token`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SocketId {
    pub key: usize,
    pub side: Side,
}

/// How one outbound socket is set up before it connects (a TCP upstream) or sends (a UDP
/// association's target-facing socket): a connection's egress (`--bind-out`,
/// `--bind-interface`, `--fwmark`, or its user's), resolved for that connection (`incoming`
/// already replaced by the address the client reached).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Outbound {
    /// Bind to this source address (the port is left to `connect`).
    pub from: Option<IpAddr>,
    /// `SO_BINDTODEVICE`: leave through this interface only.
    pub interface: Option<String>,
    /// `SO_MARK`: the firewall mark for policy routing and nftables.
    pub fwmark: Option<u32>,
}

/// An outbound socket could not be set up as its egress asks (`SO_MARK` without
/// `CAP_NET_ADMIN`, an interface that does not exist, a `--bind-out` address the host does not
/// have): the operator's configuration, not the target, is at fault, so the request fails at
/// once with a general failure and the log says what to fix. Carried inside an `io::Error`
/// ([`EgressError::of`] finds it).
#[derive(Debug)]
pub struct EgressError {
    /// What was asked: `SO_MARK 7`, `SO_BINDTODEVICE eth9`, `bind-out 192.0.2.1`.
    pub what: String,
    pub source: io::Error,
}

impl EgressError {
    /// Wrap `source`, the failure to apply `what`, in an `io::Error`.
    pub fn wrap(what: String, source: io::Error) -> io::Error {
        io::Error::other(EgressError { what, source })
    }

    /// The egress failure inside `error`, if that is what it is.
    pub fn of(error: &io::Error) -> Option<&EgressError> {
        error.get_ref().and_then(|inner| inner.downcast_ref::<EgressError>())
    }
}

impl std::fmt::Display for EgressError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "cannot set {}: {}", self.what, self.source)?;
        let hint = match (self.what.split(' ').next(), self.source.raw_os_error()) {
            (Some("SO_MARK"), Some(libc::EPERM)) => " (needs CAP_NET_ADMIN, or CAP_NET_RAW on Linux 5.17+)",
            (Some("SO_BINDTODEVICE"), Some(libc::EPERM)) => " (needs CAP_NET_RAW)",
            (Some("SO_BINDTODEVICE"), Some(libc::ENODEV)) => " (no such interface)",
            (Some("bind-out"), Some(libc::EADDRNOTAVAIL)) => " (no interface of this host has it)",
            _ => "",
        };
        f.write_str(hint)
    }
}

impl std::error::Error for EgressError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.source)
    }
}

/// Give `socket` the device and mark of `out` (not its address: binding differs for TCP,
/// which leaves the port to `connect`, and UDP). Errors are [`EgressError`]s.
pub fn apply_device_and_mark(socket: &socket2::Socket, out: &Outbound) -> io::Result<()> {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        if let Some(interface) = &out.interface {
            socket
                .bind_device(Some(interface.as_bytes()))
                .map_err(|e| EgressError::wrap(format!("SO_BINDTODEVICE {interface}"), e))?;
        }
        if let Some(mark) = out.fwmark {
            socket.set_mark(mark).map_err(|e| EgressError::wrap(format!("SO_MARK {mark}"), e))?;
        }
        Ok(())
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        let _ = socket;
        match (&out.interface, out.fwmark) {
            (None, None) => Ok(()),
            (Some(interface), _) => Err(EgressError::wrap(
                format!("SO_BINDTODEVICE {interface}"),
                io::ErrorKind::Unsupported.into(),
            )),
            (None, Some(mark)) => {
                Err(EgressError::wrap(format!("SO_MARK {mark}"), io::ErrorKind::Unsupported.into()))
            }
        }
    }
}

/// Where a datagram socket binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DatagramBind {
    /// This address (port 0: any port).
    At(SocketAddr),
    /// Any address, IPv6 and IPv4 alike (one dual-stack socket), or IPv4 where there is no IPv6.
    DualStack,
}

/// Opens sockets registered with the event loop. Every socket the state machine owns comes
/// from here (or from a [`Listener`] it got here, adopted with [`Net::adopt`]), so the loop
/// and the state machine agree on which token names which socket.
pub trait Net {
    type Stream: Stream;
    type Listener: Listener<Stream = Self::Stream>;
    type Datagram: Datagram;

    /// Begin a nonblocking connect to `addr` from a socket set up as `out` asks, registered
    /// as `id`. A setup failure is an [`EgressError`].
    fn connect(&self, addr: SocketAddr, out: &Outbound, id: SocketId) -> io::Result<Self::Stream>;
    /// Listen on `addr` (port 0: an ephemeral port), registered as `id`.
    fn listen(&self, addr: SocketAddr, id: SocketId) -> io::Result<Self::Listener>;
    /// Bind a UDP socket, registered as `id` (for reading only: sends that would block drop),
    /// with `out`'s device and mark (its address is `at`'s business). A setup failure is an
    /// [`EgressError`].
    fn bind_datagram(&self, at: DatagramBind, out: &Outbound, id: SocketId) -> io::Result<Self::Datagram>;
    /// Register a stream accepted from a [`Listener`] as `id`.
    fn adopt(&self, stream: &mut Self::Stream, id: SocketId) -> io::Result<()>;
    /// The local address the kernel would use to reach `target` (where a BIND listens).
    fn outbound_ip_for(&self, target: IpAddr) -> Option<IpAddr>;
}

fn token_of(id: SocketId) -> mio::Token {
    token::conn(id.key, id.side)
}

impl Stream for TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpStream::local_addr(self)
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        TcpStream::take_error(self)
    }

    fn connect_progress(&self) -> Progress {
        connect::progress(self)
    }

    fn set_keepalive(&self, idle: Option<Duration>) -> io::Result<()> {
        set_keepalive(socket2::SockRef::from(self), idle)
    }

    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        TcpStream::peek(self, buf)
    }
}

/// Between keepalive probes once they start, and how many go unanswered before the peer is
/// declared dead: a dead peer is found about a minute after probing starts.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
pub const KEEPALIVE_PROBES: u32 = 6;

/// TCP keepalive on a socket (`--tcp-keepalive`): NAT middleboxes drop idle flows silently,
/// and a peer that vanished would otherwise hold the relay until the idle timeout.
pub fn set_keepalive(socket: socket2::SockRef<'_>, idle: Option<Duration>) -> io::Result<()> {
    match idle {
        Some(idle) => {
            let params = socket2::TcpKeepalive::new().with_time(idle).with_interval(KEEPALIVE_INTERVAL);
            #[cfg(any(
                target_os = "linux",
                target_os = "android",
                target_os = "freebsd",
                target_os = "macos"
            ))]
            let params = params.with_retries(KEEPALIVE_PROBES);
            socket.set_tcp_keepalive(&params)
        }
        None => socket.set_keepalive(false),
    }
}

impl Listener for TcpListener {
    type Stream = TcpStream;

    fn accept(&mut self) -> io::Result<(TcpStream, SocketAddr)> {
        TcpListener::accept(self)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        TcpListener::local_addr(self)
    }
}

impl Datagram for UdpSocket {
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        UdpSocket::recv_from(self, buf)
    }

    fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        UdpSocket::send_to(self, buf, to)
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        UdpSocket::local_addr(self)
    }
}

/// The real network: mio's sockets, registered with the loop's `Poll`.
impl Net for Registry {
    type Stream = TcpStream;
    type Listener = TcpListener;
    type Datagram = UdpSocket;

    fn connect(&self, addr: SocketAddr, out: &Outbound, id: SocketId) -> io::Result<TcpStream> {
        let mut stream = connect::start(addr, out)?;
        self.register(&mut stream, token_of(id), Interest::READABLE | Interest::WRITABLE)?;
        Ok(stream)
    }

    fn listen(&self, addr: SocketAddr, id: SocketId) -> io::Result<TcpListener> {
        let mut listener = crate::listen::bind(addr, false)?;
        self.register(&mut listener, token_of(id), Interest::READABLE)?;
        Ok(listener)
    }

    fn bind_datagram(&self, at: DatagramBind, out: &Outbound, id: SocketId) -> io::Result<UdpSocket> {
        let mut socket = match at {
            DatagramBind::At(addr) if out.interface.is_none() && out.fwmark.is_none() => {
                UdpSocket::bind(addr)?
            }
            DatagramBind::At(addr) => bind_datagram_at(addr, out)?,
            DatagramBind::DualStack => bind_dual_stack(out)?,
        };
        self.register(&mut socket, token_of(id), Interest::READABLE)?;
        Ok(socket)
    }

    fn adopt(&self, stream: &mut TcpStream, id: SocketId) -> io::Result<()> {
        // Like every relayed stream: forward small writes at once. (Keepalive is the
        // phase's choice: it sets it on the streams it keeps.)
        let _ = stream.set_nodelay(true);
        self.register(stream, token_of(id), Interest::READABLE | Interest::WRITABLE)
    }

    fn outbound_ip_for(&self, target: IpAddr) -> Option<IpAddr> {
        outbound_ip_for(target)
    }
}

/// A UDP socket with `out`'s device and mark, bound to `addr`.
fn bind_datagram_at(addr: SocketAddr, out: &Outbound) -> io::Result<UdpSocket> {
    let socket =
        socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::DGRAM.nonblocking(), None)?;
    apply_device_and_mark(&socket, out)?;
    socket.bind(&addr.into())?;
    Ok(UdpSocket::from_std(socket.into()))
}

/// An IPv6 socket that also speaks IPv4 (through mapped addresses), or IPv4 alone where
/// the host has no IPv6; with `out`'s device and mark.
fn bind_dual_stack(out: &Outbound) -> io::Result<UdpSocket> {
    let socket = socket2::Socket::new(socket2::Domain::IPV6, socket2::Type::DGRAM.nonblocking(), None);
    match socket {
        Ok(socket) => {
            socket.set_only_v6(false)?;
            apply_device_and_mark(&socket, out)?;
            socket.bind(&SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0).into())?;
            Ok(UdpSocket::from_std(socket.into()))
        }
        Err(_) => bind_datagram_at(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0), out),
    }
}

/// The local address the kernel would use to reach `target`: connecting a UDP socket only
/// consults the routing table (no packet is sent), so this is cheap and never blocks.
pub fn outbound_ip_for(target: IpAddr) -> Option<IpAddr> {
    if target.is_unspecified() {
        return None;
    }
    let any: SocketAddr = match target {
        IpAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        IpAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let probe = std::net::UdpSocket::bind(any).ok()?;
    probe.connect(SocketAddr::new(target, 9)).ok()?;
    probe.local_addr().ok().map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outbound_ip_for_loopback_is_loopback() {
        assert_eq!(outbound_ip_for("127.0.0.1".parse().unwrap()), Some("127.0.0.1".parse().unwrap()));
        assert_eq!(outbound_ip_for("0.0.0.0".parse().unwrap()), None);
    }

    #[test]
    fn end_clears_flags_only_on_would_block() {
        let mut end = End::new(io::Cursor::new(Vec::<u8>::new()), Readiness::BOTH);
        let mut buf = [0u8; 4];
        assert!(matches!(end.read(&mut buf), ReadOutcome::Eof));
        assert!(end.ready.readable, "EOF is not WouldBlock: the flag stays");
        end.ready.readable = false;
        assert!(matches!(end.read(&mut buf), ReadOutcome::WouldBlock), "no syscall when not readable");
        assert!(matches!(end.write(b"ab"), WriteOutcome::Wrote(2)));
    }
}
