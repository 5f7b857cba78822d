//! A network without sockets: scripted streams, listeners and datagram sockets behind the
//! [`Net`] trait, so the whole connection state machine (every phase, BIND and UDP included)
//! runs in unit tests and fuzz targets with no kernel involved.
//!
//! Each simulated socket shares its state with a handle the test keeps ([`Script`],
//! [`ListenerScript`], [`DatagramScript`]): the test supplies bytes, grants write room,
//! closes or resets, completes connects, queues inbound connections and datagrams, and reads
//! back what the state machine wrote. Readiness is not simulated: the driver hints it with
//! `Connection::on_ready`, as the event loop does from epoll's events.
//!
//! Single-threaded by design (`Rc<RefCell<..>>`): a simulated network lives on the thread
//! that drives it.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::time::Duration;

use crate::connect::Progress;
use crate::net::{Datagram, DatagramBind, EgressError, Listener, Net, Outbound, SocketId, Stream};

#[derive(Debug, Default)]
struct StreamState {
    incoming: VecDeque<u8>,
    /// Once `incoming` is drained, reads see EOF.
    closed: bool,
    reset: bool,
    reset_reported: bool,
    /// How many more bytes writes accept.
    room: usize,
    output: Vec<u8>,
    shut: bool,
    /// For an upstream: `None` while connecting, then connected or refused.
    connected: Option<bool>,
    /// Everything ever supplied (for conservation checks).
    supplied: u64,
    reads: usize,
    local: Option<SocketAddr>,
    keepalive: Option<Duration>,
}

/// The test's handle on one simulated stream.
#[derive(Debug, Clone, Default)]
pub struct Script(Rc<RefCell<StreamState>>);

impl Script {
    /// Whether both handles are on the same stream.
    pub fn same(&self, other: &Script) -> bool {
        Rc::ptr_eq(&self.0, &other.0)
    }

    /// A stream that uses this script.
    pub fn stream(&self) -> SimStream {
        SimStream(self.clone())
    }

    /// Bytes arrive from the peer.
    pub fn supply(&self, bytes: &[u8]) {
        let mut s = self.0.borrow_mut();
        s.incoming.extend(bytes);
        s.supplied += bytes.len() as u64;
    }

    /// The peer sends FIN (after what was supplied).
    pub fn close(&self) {
        self.0.borrow_mut().closed = true;
    }

    /// The peer resets: reads and writes fail from now on.
    pub fn reset(&self) {
        self.0.borrow_mut().reset = true;
    }

    /// Writes may take `n` more bytes.
    pub fn grant(&self, n: usize) {
        let mut s = self.0.borrow_mut();
        s.room = s.room.saturating_add(n);
    }

    /// Writes may take exactly `n` more bytes from now on.
    pub fn set_room(&self, n: usize) {
        self.0.borrow_mut().room = n;
    }

    /// A connect in progress completes (`true`) or is refused (`false`).
    pub fn finish_connect(&self, ok: bool) {
        let mut s = self.0.borrow_mut();
        if s.connected.is_none() {
            s.connected = Some(ok);
        }
    }

    pub fn is_connecting(&self) -> bool {
        self.0.borrow().connected.is_none()
    }

    pub fn set_local_addr(&self, addr: SocketAddr) {
        self.0.borrow_mut().local = Some(addr);
    }

    /// Everything written to the stream so far.
    pub fn written(&self) -> Vec<u8> {
        self.0.borrow().output.clone()
    }

    pub fn written_len(&self) -> u64 {
        self.0.borrow().output.len() as u64
    }

    /// Forget what was written (long fuzz runs keep only the count).
    pub fn discard_written(&self) -> u64 {
        let mut s = self.0.borrow_mut();
        let n = s.output.len() as u64;
        s.output.clear();
        n
    }

    pub fn supplied(&self) -> u64 {
        self.0.borrow().supplied
    }

    /// Supplied bytes not read yet.
    pub fn unread(&self) -> usize {
        self.0.borrow().incoming.len()
    }

    /// How many `read` calls were made.
    pub fn reads(&self) -> usize {
        self.0.borrow().reads
    }

    /// The keepalive idle time set on the stream, if any.
    pub fn keepalive(&self) -> Option<Duration> {
        self.0.borrow().keepalive
    }

    /// Whether the stream was half-closed (`shutdown_write`).
    pub fn is_shut(&self) -> bool {
        self.0.borrow().shut
    }
}

/// A simulated TCP stream.
#[derive(Debug)]
pub struct SimStream(Script);

impl SimStream {
    pub fn script(&self) -> Script {
        self.0.clone()
    }
}

impl Read for SimStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut s = self.0.0.borrow_mut();
        s.reads += 1;
        if s.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if s.incoming.is_empty() {
            return if s.closed { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(s.incoming.len());
        for (slot, byte) in buf.iter_mut().zip(s.incoming.drain(..n)) {
            *slot = byte;
        }
        Ok(n)
    }
}

impl Write for SimStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let mut s = self.0.0.borrow_mut();
        if s.reset || s.shut {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if s.room == 0 {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = buf.len().min(s.room);
        s.room -= n;
        s.output.extend_from_slice(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Splicing needs a descriptor; a simulated stream lends one that is always open (standard
/// input's) so the type checks, and simulated relays use the copy path.
#[cfg(target_os = "linux")]
impl std::os::fd::AsFd for SimStream {
    fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
        // SAFETY: descriptor 0 is never closed by this process while it runs, and a
        // simulated stream is never actually spliced.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(0) }
    }
}

impl Stream for SimStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.0.0.borrow_mut().shut = true;
        Ok(())
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.0.borrow().local.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 40000))))
    }

    fn take_error(&self) -> io::Result<Option<io::Error>> {
        let mut s = self.0.0.borrow_mut();
        if s.reset && !s.reset_reported {
            s.reset_reported = true;
            return Ok(Some(io::ErrorKind::ConnectionReset.into()));
        }
        Ok(None)
    }

    fn set_keepalive(&self, idle: Option<Duration>) -> io::Result<()> {
        self.0.0.borrow_mut().keepalive = idle;
        Ok(())
    }

    fn peek(&self, buf: &mut [u8]) -> io::Result<usize> {
        let s = self.0.0.borrow();
        if s.reset {
            return Err(io::ErrorKind::ConnectionReset.into());
        }
        if s.incoming.is_empty() {
            return if s.closed { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
        }
        let n = buf.len().min(s.incoming.len());
        for (slot, byte) in buf.iter_mut().zip(s.incoming.iter()) {
            *slot = *byte;
        }
        Ok(n)
    }

    fn connect_progress(&self) -> Progress {
        match self.0.0.borrow().connected {
            None => Progress::Pending,
            Some(true) => Progress::Connected,
            Some(false) => Progress::Failed(io::ErrorKind::ConnectionRefused.into()),
        }
    }
}

#[derive(Debug, Default)]
struct ListenerState {
    addr: Option<SocketAddr>,
    backlog: VecDeque<(Script, SocketAddr)>,
}

/// The test's handle on a simulated listener.
#[derive(Debug, Clone, Default)]
pub struct ListenerScript(Rc<RefCell<ListenerState>>);

impl ListenerScript {
    /// A peer connects from `from`; returns the script of the stream the listener will
    /// accept for it.
    pub fn connect_from(&self, from: SocketAddr) -> Script {
        let script = Script::default();
        script.finish_connect(true);
        self.0.borrow_mut().backlog.push_back((script.clone(), from));
        script
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.borrow().addr.unwrap_or(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
    }
}

/// A simulated listening socket.
#[derive(Debug)]
pub struct SimListener(ListenerScript);

impl Listener for SimListener {
    type Stream = SimStream;

    fn accept(&mut self) -> io::Result<(SimStream, SocketAddr)> {
        match self.0.0.borrow_mut().backlog.pop_front() {
            Some((script, from)) => Ok((script.stream(), from)),
            None => Err(io::ErrorKind::WouldBlock.into()),
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.addr())
    }
}

#[derive(Debug, Default)]
struct DatagramState {
    addr: Option<SocketAddr>,
    inbox: VecDeque<(Vec<u8>, SocketAddr)>,
    sent: Vec<(Vec<u8>, SocketAddr)>,
}

/// The test's handle on a simulated UDP socket.
#[derive(Debug, Clone, Default)]
pub struct DatagramScript(Rc<RefCell<DatagramState>>);

impl DatagramScript {
    /// A datagram arrives from `from`.
    pub fn deliver(&self, payload: &[u8], from: SocketAddr) {
        self.0.borrow_mut().inbox.push_back((payload.to_vec(), from));
    }

    /// Datagrams sent so far, oldest first, taken out.
    pub fn take_sent(&self) -> Vec<(Vec<u8>, SocketAddr)> {
        std::mem::take(&mut self.0.borrow_mut().sent)
    }

    pub fn addr(&self) -> SocketAddr {
        self.0.borrow().addr.unwrap_or(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }
}

/// A simulated UDP socket.
#[derive(Debug)]
pub struct SimDatagram(DatagramScript);

impl Datagram for SimDatagram {
    fn recv_from(&self, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        let Some((payload, from)) = self.0.0.borrow_mut().inbox.pop_front() else {
            return Err(io::ErrorKind::WouldBlock.into());
        };
        // Like a real UDP socket: a datagram longer than the buffer is truncated.
        let n = payload.len().min(buf.len());
        buf[..n].copy_from_slice(&payload[..n]);
        Ok((n, from))
    }

    fn send_to(&self, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        self.0.0.borrow_mut().sent.push((buf.to_vec(), to));
        Ok(buf.len())
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.0.addr())
    }
}

/// What happens to the next connect the state machine begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnectPlan {
    /// In progress until the test finishes it through the upstream's script (the default).
    Pending,
    /// Fails at once with this error kind (no route, no descriptors...).
    FailAtOnce(io::ErrorKind),
    /// The socket cannot be set up as its egress asks (as `SO_MARK` fails without
    /// `CAP_NET_ADMIN`): an [`EgressError`] with this errno.
    EgressFails(i32),
}

#[derive(Debug, Default)]
struct NetState {
    plans: VecDeque<ConnectPlan>,
    connects: Vec<(SocketAddr, SocketId, Script)>,
    /// How each socket opened toward a target was set up: connects (begun or failed at
    /// once) and target-facing datagram sockets, in order.
    outbounds: Vec<Outbound>,
    listeners: Vec<(SocketId, ListenerScript)>,
    datagrams: Vec<(SocketId, DatagramScript)>,
    adopted: Vec<SocketId>,
    next_port: u16,
}

/// The simulated network. Records every socket the state machine opens, with the
/// [`SocketId`] it registered it under.
#[derive(Debug, Default)]
pub struct SimNet(RefCell<NetState>);

impl SimNet {
    pub fn new() -> SimNet {
        SimNet::default()
    }

    /// Plan the outcome of the next connect (connects without a plan stay pending).
    pub fn plan_connect(&self, plan: ConnectPlan) {
        self.0.borrow_mut().plans.push_back(plan);
    }

    /// Every connect begun (and not failed at once): target, registration, script.
    pub fn connects(&self) -> Vec<(SocketAddr, SocketId, Script)> {
        self.0.borrow().connects.clone()
    }

    /// How every outbound socket (connects, target-facing datagram sockets) was set up.
    pub fn outbounds(&self) -> Vec<Outbound> {
        self.0.borrow().outbounds.clone()
    }

    /// The newest upstream's script.
    pub fn last_upstream(&self) -> Option<Script> {
        self.0.borrow().connects.last().map(|(_, _, script)| script.clone())
    }

    pub fn listeners(&self) -> Vec<(SocketId, ListenerScript)> {
        self.0.borrow().listeners.clone()
    }

    pub fn datagrams(&self) -> Vec<(SocketId, DatagramScript)> {
        self.0.borrow().datagrams.clone()
    }

    pub fn adopted(&self) -> Vec<SocketId> {
        self.0.borrow().adopted.clone()
    }

    fn port(&self) -> u16 {
        let mut s = self.0.borrow_mut();
        s.next_port = s.next_port.wrapping_add(1);
        40_000 + s.next_port % 20_000
    }
}

impl Net for SimNet {
    type Stream = SimStream;
    type Listener = SimListener;
    type Datagram = SimDatagram;

    fn connect(&self, addr: SocketAddr, out: &Outbound, id: SocketId) -> io::Result<SimStream> {
        let plan = self.0.borrow_mut().plans.pop_front().unwrap_or(ConnectPlan::Pending);
        self.0.borrow_mut().outbounds.push(out.clone());
        match plan {
            ConnectPlan::Pending => {}
            ConnectPlan::FailAtOnce(kind) => return Err(kind.into()),
            ConnectPlan::EgressFails(errno) => {
                return Err(EgressError::wrap("SO_MARK 1".into(), io::Error::from_raw_os_error(errno)));
            }
        }
        let script = Script::default();
        let local_ip = out.from.unwrap_or(match addr {
            SocketAddr::V4(_) => IpAddr::V4(Ipv4Addr::LOCALHOST),
            SocketAddr::V6(_) => IpAddr::V6(Ipv6Addr::LOCALHOST),
        });
        script.set_local_addr(SocketAddr::new(local_ip, self.port()));
        self.0.borrow_mut().connects.push((addr, id, script.clone()));
        Ok(script.stream())
    }

    fn listen(&self, addr: SocketAddr, id: SocketId) -> io::Result<SimListener> {
        let script = ListenerScript::default();
        let port = if addr.port() == 0 { self.port() } else { addr.port() };
        script.0.borrow_mut().addr = Some(SocketAddr::new(addr.ip(), port));
        self.0.borrow_mut().listeners.push((id, script.clone()));
        Ok(SimListener(script))
    }

    fn bind_datagram(&self, at: DatagramBind, out: &Outbound, id: SocketId) -> io::Result<SimDatagram> {
        if *out != Outbound::default() {
            self.0.borrow_mut().outbounds.push(out.clone());
        }
        if let DatagramBind::At(addr) = at
            && addr.port() != 0
            && self.0.borrow().datagrams.iter().any(|(_, d)| d.addr() == addr)
        {
            return Err(io::ErrorKind::AddrInUse.into()); // a simulated port stays taken
        }
        let script = DatagramScript::default();
        let addr = match at {
            DatagramBind::At(addr) => addr,
            DatagramBind::DualStack => SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)),
        };
        let port = if addr.port() == 0 { self.port() } else { addr.port() };
        script.0.borrow_mut().addr = Some(SocketAddr::new(addr.ip(), port));
        self.0.borrow_mut().datagrams.push((id, script.clone()));
        Ok(SimDatagram(script))
    }

    fn adopt(&self, _stream: &mut SimStream, id: SocketId) -> io::Result<()> {
        self.0.borrow_mut().adopted.push(id);
        Ok(())
    }

    fn outbound_ip_for(&self, target: IpAddr) -> Option<IpAddr> {
        match target {
            IpAddr::V4(v4) if v4.is_unspecified() => None,
            IpAddr::V6(v6) if v6.is_unspecified() => None,
            IpAddr::V4(_) => Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            IpAddr::V6(_) => Some(IpAddr::V6(Ipv6Addr::LOCALHOST)),
        }
    }
}
