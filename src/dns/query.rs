//! One query in flight: a (name, family), its waiters, and the one socket of its current try.
//!
//! A try is one question to one nameserver: over UDP first, on a fresh socket bound to port 0
//! (so the kernel picks a random source port) and connected to the server (so the kernel drops
//! datagrams from anyone else and reports an ICMP port-unreachable as `ECONNREFUSED`), with a
//! fresh random id. A truncated UDP reply turns the try into a TCP exchange with the same
//! server: a nonblocking connect, the query behind a 2-byte length, the reply read back the
//! same way. Everything here is nonblocking; the socket is registered under the query's slot
//! token (`token::dns`), and each socket replaces the last under the same token.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Registry};

use super::wire::{self, Question, Reply};
use super::{DnsError, Family, Waiter};
use crate::connect::{self, Progress};

/// Datagrams read from one socket per readiness event or timer pass before the loop gets a
/// turn (a flood of stray datagrams must not hold the loop).
pub const UDP_BUDGET: usize = 16;

/// The largest DNS message over TCP (its length prefix is 16 bits).
const TCP_MAX: usize = 2 + u16::MAX as usize;

/// The socket of the current try.
#[derive(Debug)]
pub enum Transport {
    Udp(UdpSocket),
    Tcp(Tcp),
}

/// A query over TCP: connecting, then writing the length-prefixed query, then reading.
#[derive(Debug)]
pub struct Tcp {
    stream: TcpStream,
    connected: bool,
    /// The length-prefixed query and how much of it the kernel has taken.
    out: Vec<u8>,
    written: usize,
    /// The length prefix and reply read so far (never more than they announce).
    input: Vec<u8>,
}

/// What a socket had for its query.
#[derive(Debug)]
pub enum Step {
    /// Nothing more until the next readiness event.
    Wait,
    /// Datagrams may be left, but this pass's budget is spent.
    Budget,
    /// The reply to this try.
    Reply(Reply),
    /// This try failed; the next server may do better.
    Failed(DnsError),
}

/// A query in flight.
#[derive(Debug)]
pub struct Query {
    /// The normalised name (as the cache and the in-flight table know it).
    pub name: String,
    pub question: Question,
    pub waiters: Vec<Waiter>,
    /// Tries started so far (the current one asks nameserver `(tries - 1) % n`).
    pub tries: usize,
    /// The server of the current try, and the id it was asked with.
    pub server: SocketAddr,
    pub id: u16,
    pub transport: Option<Transport>,
    /// Names the current try's timer entry: a fired entry with another serial is stale.
    pub serial: u64,
    /// The most telling failure so far, reported if every try fails.
    pub error: DnsError,
}

impl Query {
    pub fn new(name: String, question: Question, waiter: Waiter) -> Query {
        Query {
            name,
            question,
            waiters: vec![waiter],
            tries: 0,
            server: SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)),
            id: 0,
            transport: None,
            serial: 0,
            error: DnsError::Timeout,
        }
    }

    pub fn family(&self) -> Family {
        self.question.family()
    }

    /// Close the current try's socket, if any.
    pub fn close(&mut self, registry: &Registry) {
        match self.transport.take() {
            Some(Transport::Udp(mut socket)) => {
                let _ = registry.deregister(&mut socket);
            }
            Some(Transport::Tcp(mut tcp)) => {
                let _ = registry.deregister(&mut tcp.stream);
            }
            None => {}
        }
    }

    /// Start a try over UDP: fresh socket, fresh id, one datagram to `server`.
    pub fn send_udp(&mut self, registry: &Registry, token: mio::Token, server: SocketAddr) -> io::Result<()> {
        self.close(registry);
        self.server = server;
        self.id = random_id()?;
        let bytes = wire::build_query(self.id, &self.question).map_err(io::Error::other)?;
        let mut socket = UdpSocket::bind(SocketAddr::new(unspecified(server.ip()), 0))?;
        socket.connect(server)?;
        registry.register(&mut socket, token, Interest::READABLE)?;
        let sent = socket.send(&bytes);
        self.transport = Some(Transport::Udp(socket));
        match sent? {
            n if n == bytes.len() => Ok(()),
            _ => Err(io::ErrorKind::WriteZero.into()),
        }
    }

    /// Turn the current try into a TCP exchange with the same server (fresh id).
    pub fn send_tcp(&mut self, registry: &Registry, token: mio::Token) -> io::Result<()> {
        self.close(registry);
        self.id = random_id()?;
        let bytes = wire::build_query(self.id, &self.question).map_err(io::Error::other)?;
        let len = u16::try_from(bytes.len()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        let mut out = Vec::with_capacity(2 + bytes.len());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&bytes);
        let mut stream = connect::start(self.server, &crate::net::Outbound::default())?;
        registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
        self.transport =
            Some(Transport::Tcp(Tcp { stream, connected: false, out, written: 0, input: Vec::new() }));
        Ok(())
    }

    /// Do what the current socket allows: read datagrams (UDP) or move the exchange on (TCP).
    /// `ignored` counts datagrams that were not the reply.
    pub fn drive(&mut self, buf: &mut [u8], ignored: &mut u64) -> Step {
        match &mut self.transport {
            Some(Transport::Udp(socket)) => {
                read_udp(socket, self.server, self.id, &self.question, buf, ignored)
            }
            Some(Transport::Tcp(tcp)) => drive_tcp(tcp, self.id, &self.question, buf, ignored),
            None => Step::Wait,
        }
    }
}

fn read_udp(
    socket: &UdpSocket,
    server: SocketAddr,
    id: u16,
    question: &Question,
    buf: &mut [u8],
    ignored: &mut u64,
) -> Step {
    for _ in 0..UDP_BUDGET {
        match socket.recv_from(buf) {
            Ok((n, from)) => {
                // The socket is connected, so the kernel drops other sources already; this
                // check stays in case it ever is not.
                if from != server {
                    *ignored += 1;
                    continue;
                }
                match wire::parse_reply(&buf[..n], id, question) {
                    Ok(reply) => return Step::Reply(reply),
                    Err(_) => *ignored += 1,
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            // ECONNREFUSED (nothing listens there) and the like: this server will not answer.
            Err(e) => return Step::Failed(DnsError::Io(e.kind())),
        }
    }
    Step::Budget
}

fn drive_tcp(tcp: &mut Tcp, id: u16, question: &Question, buf: &mut [u8], ignored: &mut u64) -> Step {
    if !tcp.connected {
        match connect::progress(&tcp.stream) {
            Progress::Connected => tcp.connected = true,
            Progress::Pending => return Step::Wait,
            Progress::Failed(e) => return Step::Failed(DnsError::Io(e.kind())),
        }
    }
    while tcp.written < tcp.out.len() {
        match tcp.stream.write(&tcp.out[tcp.written..]) {
            Ok(0) => return Step::Failed(DnsError::Io(io::ErrorKind::WriteZero)),
            Ok(n) => tcp.written += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Step::Failed(DnsError::Io(e.kind())),
        }
    }
    loop {
        // Read only what the length prefix announces, never more.
        let want = match tcp.input.get(..2) {
            Some(&[hi, lo]) => 2 + usize::from(u16::from_be_bytes([hi, lo])),
            _ => 2,
        };
        debug_assert!(want <= TCP_MAX);
        if tcp.input.len() >= 2 && tcp.input.len() == want {
            return match wire::parse_reply(&tcp.input[2..], id, question) {
                Ok(reply) => Step::Reply(reply),
                Err(_) => {
                    // The server itself sent something else than the reply: no use waiting.
                    *ignored += 1;
                    Step::Failed(DnsError::ServerFailure)
                }
            };
        }
        let room = (want - tcp.input.len()).min(buf.len());
        match tcp.stream.read(&mut buf[..room]) {
            Ok(0) => return Step::Failed(DnsError::Io(io::ErrorKind::UnexpectedEof)),
            Ok(n) => tcp.input.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Step::Wait,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Step::Failed(DnsError::Io(e.kind())),
        }
    }
}

fn unspecified(like: IpAddr) -> IpAddr {
    match like {
        IpAddr::V4(_) => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(Ipv6Addr::UNSPECIFIED),
    }
}

/// A query id from the operating system's random source (`getrandom(2)` on Linux): an
/// off-path attacker must guess it (and the source port) to slip in a forged reply.
fn random_id() -> io::Result<u16> {
    let mut id = [0u8; 2];
    getrandom::fill(&mut id).map_err(io::Error::other)?;
    Ok(u16::from_ne_bytes(id))
}
