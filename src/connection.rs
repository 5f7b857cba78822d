//! One client's state machine, from accept to close.
//!
//! ```text
//!  accept ─▶ AwaitGreeting ─▶ [AwaitAuth] ─▶ AwaitRequest ─┬─ IP literal ──────▶ Connecting ──▶ Relaying ─▶ closed
//!              │ (first byte 4: SOCKS4/4a request)         └─ domain ─▶ Resolving ─▲       ▲
//!              └──────────────────────────────────────────▶   BIND ─▶ BindWaiting ─────────┘
//!                                                               UDP ASSOCIATE ─▶ UdpAssociated ─▶ closed
//!  any handshake error, refusal or failed connect ─▶ Rejecting (flush reply, linger) ─▶ closed
//! ```
//!
//! A `Connection` owns its sockets and knows nothing of other connections. The event loop
//! (`server.rs`) feeds it readiness ([`Connection::record`]), resolver answers
//! ([`Connection::on_resolved`]) and deadlines ([`Connection::on_timeout`]), then calls
//! [`Connection::drive`], which runs the current phase until it has to wait, and says
//! whether to keep, revisit or close the connection. Everything the connection needs from
//! the loop (the registry, the resolver, the timers, the shared scratch buffer) arrives in a
//! [`Ctx`], so the loop stays the only owner of shared state.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use mio::{Interest, Registry};

use crate::auth::CredentialStore;
use crate::bind::{self, BindWait};
use crate::config::Config;
use crate::connect::{self, Progress};
use crate::protocol::socks4::{self, Socks4Command, Socks4Reply, Socks4Target};
use crate::protocol::{
    self, AuthStatus, Command, Invalid, Method, Parse, Reply, TargetAddr, encode_auth_status,
    encode_method_selection, encode_reply,
};
use crate::relay::{self, Pipe};
use crate::resolver::{self, Lookup, NameCheck, Resolver};
use crate::socket::Socket;
use crate::sockio::{self, Io, Readiness};
use crate::timer::{Deadline, Timers};
use crate::token::{self, Side};
use crate::udp_relay::{Handled, UdpAssociation};
#[cfg(target_os = "linux")]
use crate::{
    config::RelayMode,
    splice::{self, SplicePipes},
};

/// How many bytes one connection may read per direction per wakeup before yielding the loop
/// to others (fairness; 1 MiB keeps syscall overhead low and latency for others bounded).
const RELAY_BUDGET: usize = 1 << 20;
/// Handshake bytes are collected here: larger than the longest greeting (257), auth (513)
/// or request (262), so a complete message always fits, with room for coalesced early data.
const HANDSHAKE_BUF: usize = 1024;
/// How long a rejected client gets to read its reply and close before we cut it off.
const LINGER: Duration = Duration::from_secs(2);

/// What the loop should do with a connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing more to do until the next event, answer or deadline.
    Wait,
    /// Work is left (the fairness budget ran out): drive again soon, without waiting for an event.
    Again,
    /// The connection is finished; the reason goes into the log line.
    Close(&'static str),
}

/// What the loop lends a connection while driving it.
pub struct Ctx<'a> {
    pub registry: &'a Registry,
    pub resolver: &'a Resolver,
    pub timers: &'a mut Timers,
    /// Loop-owned buffer for relay reads, shared by all connections.
    pub scratch: &'a mut [u8],
    pub config: &'a Config,
    /// Present when username/password authentication is required.
    pub credentials: Option<&'a CredentialStore>,
    pub now: Instant,
    pub key: usize,
}

/// Bytes received during the handshake and not yet parsed.
struct Handshake {
    buf: [u8; HANDSHAKE_BUF],
    len: usize,
}

impl Handshake {
    fn new() -> Box<Handshake> {
        Box::new(Handshake { buf: [0; HANDSHAKE_BUF], len: 0 })
    }

    fn filled(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    /// Drop the first `n` bytes (a parsed message), keeping what follows it.
    fn consume(&mut self, n: usize) {
        self.buf.copy_within(n..self.len, 0);
        self.len -= n;
    }
}

/// The phases of a connection. Each variant holds only what that phase needs.
enum Phase {
    /// Waiting for `05 NMETHODS METHODS` (RFC 1928 §3).
    AwaitGreeting(Box<Handshake>),
    /// Username/password chosen; waiting for the RFC 1929 sub-negotiation.
    AwaitAuth(Box<Handshake>),
    /// Method chosen (and auth passed); waiting for `05 CMD 00 ATYP ADDR PORT` (RFC 1928 §4).
    AwaitRequest(Box<Handshake>),
    /// A domain name is with the resolver threads; the answer comes through the waker.
    Resolving { command: Command },
    /// Trying the target's addresses in order; `upstream` holds the attempt in flight.
    Connecting { addrs: Vec<SocketAddr>, next: usize, last_error: Option<io::Error> },
    /// BIND: first reply sent; listening for the one inbound connection.
    BindWaiting(Box<BindWait>),
    /// UDP ASSOCIATE: datagrams flow through the association's sockets until the TCP control
    /// connection closes.
    UdpAssociated(Box<UdpAssociation>),
    /// Both sockets up: bytes flow both ways through the two pipes.
    Relaying,
    /// An error reply (or `05 FF`) is queued: flush it, half-close, wait briefly for the
    /// client's FIN so the reply is not destroyed by a reset, then close.
    Rejecting,
    /// Finished; waiting for the loop to remove it after the current batch of events.
    Closed,
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::AwaitGreeting(_) => "AwaitGreeting",
            Phase::AwaitAuth(_) => "AwaitAuth",
            Phase::AwaitRequest(_) => "AwaitRequest",
            Phase::Resolving { .. } => "Resolving",
            Phase::BindWaiting(_) => "BindWaiting",
            Phase::UdpAssociated(_) => "UdpAssociated",
            Phase::Connecting { .. } => "Connecting",
            Phase::Relaying => "Relaying",
            Phase::Rejecting => "Rejecting",
            Phase::Closed => "Closed",
        }
    }
}

/// Which protocol the client speaks, so replies take its format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dialect {
    Socks5,
    Socks4,
}

/// A client connection and, once connected, its upstream.
///
/// Generic over the stream type so the state machine can run without sockets (the fuzz
/// target); the event loop uses mio's `TcpStream`.
pub struct Connection<S: Socket = mio::net::TcpStream> {
    /// Unique per worker; tells a reused slab key from the connection that had it before.
    pub generation: u64,
    pub deadline: Deadline,
    client: S,
    client_addr: SocketAddr,
    client_ready: Readiness,
    upstream: Option<S>,
    upstream_ready: Readiness,
    /// Readiness of the auxiliary socket (a BIND listener or UDP client-side socket).
    aux_ready: Readiness,
    dialect: Dialect,
    phase: Phase,
    to_upstream: Pipe,
    to_client: Pipe,
    /// `--relay splice`: the kernel pipe each direction has borrowed while bytes wait in it.
    #[cfg(target_os = "linux")]
    splice: SplicePipes,
    started: Instant,
    target: Option<TargetAddr>,
    reply: Option<Reply>,
    /// Bytes of SOCKS replies queued to the client (not counted as relayed payload).
    control_bytes: u8,
}

impl<S: Socket> Connection<S> {
    /// A freshly accepted client. Both readiness flags start set: the greeting has often
    /// arrived with the connection, and a failed optimistic read costs one syscall.
    pub fn new(client: S, client_addr: SocketAddr, generation: u64, now: Instant) -> Connection<S> {
        Connection {
            generation,
            deadline: Deadline::new(now),
            client,
            client_addr,
            client_ready: Readiness::BOTH,
            upstream: None,
            upstream_ready: Readiness::default(),
            aux_ready: Readiness::default(),
            dialect: Dialect::Socks5,
            phase: Phase::AwaitGreeting(Handshake::new()),
            to_upstream: Pipe::default(),
            to_client: Pipe::default(),
            #[cfg(target_os = "linux")]
            splice: SplicePipes::default(),
            started: now,
            target: None,
            reply: None,
            control_bytes: 0,
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Enter `Closed`: later events in this batch are ignored until the loop removes it.
    pub fn mark_closed(&mut self) {
        if !self.is_closed() {
            self.set_phase(Phase::Closed);
        }
    }

    /// Mark one of this connection's sockets ready without a mio event (for drivers that run
    /// the state machine without sockets, such as the fuzz target).
    pub fn hint_ready(&mut self, side: Side, ready: Readiness) {
        let flags = match side {
            Side::Client => &mut self.client_ready,
            Side::Upstream => &mut self.upstream_ready,
            Side::Aux => &mut self.aux_ready,
        };
        flags.readable |= ready.readable;
        flags.writable |= ready.writable;
        flags.peer_closed |= ready.peer_closed;
    }

    /// Heap bytes the relay pipes hold right now (for bounds checks in tests and fuzzing).
    pub fn buffered_bytes(&self) -> usize {
        self.to_upstream.buffered_capacity() + self.to_client.buffered_capacity()
    }

    /// Record a readiness event for one of this connection's sockets.
    pub fn record(&mut self, side: Side, event: &mio::event::Event) {
        // An event for a socket that is gone (a failed connect attempt) only sets a flag
        // that the next I/O attempt clears: readiness is a hint, never a promise.
        match side {
            Side::Client => self.client_ready.record(event),
            Side::Upstream => self.upstream_ready.record(event),
            Side::Aux => self.aux_ready.record(event),
        }
    }

    /// Run the current phase until it must wait for something.
    pub fn drive(&mut self, ctx: &mut Ctx<'_>) -> Step {
        // Each pass either changes phase or returns; more passes than phases means a bug.
        for _ in 0..16 {
            let step = match self.phase {
                Phase::AwaitGreeting(_) => self.on_greeting_bytes(ctx),
                Phase::AwaitAuth(_) => self.on_auth_bytes(ctx),
                Phase::AwaitRequest(_) => self.on_request_bytes(ctx),
                // Client bytes that arrive now are early payload for the upstream: leave them.
                Phase::Resolving { .. } => Pass::Wait,
                Phase::BindWaiting(_) => self.on_bind_progress(ctx),
                Phase::UdpAssociated(_) => self.on_udp_activity(ctx),
                Phase::Connecting { .. } => self.on_connect_progress(ctx),
                Phase::Relaying => self.relay(ctx),
                Phase::Rejecting => self.linger(),
                Phase::Closed => return Step::Close("closed"),
            };
            match step {
                Pass::Next => continue,
                Pass::Wait => return Step::Wait,
                Pass::Again => return Step::Again,
                // The loop logs the finished connection, then marks it closed.
                Pass::Close(reason) => return Step::Close(reason),
            }
        }
        log::error!("conn {}: drive did not settle in {}; closing", self.generation, self.phase.name());
        Step::Close("internal error")
    }

    /// The resolver answered a lookup for this connection.
    pub fn on_resolved(&mut self, ctx: &mut Ctx<'_>, host: &str, result: io::Result<Vec<SocketAddr>>) {
        let command = match &mut self.phase {
            Phase::Resolving { command } => *command,
            Phase::UdpAssociated(udp) => return udp.on_resolved(host, result, &ctx.config.rules),
            _ => return,
        };
        match result {
            Ok(addrs) if !addrs.is_empty() && command == Command::Bind => {
                self.begin_bind(ctx, addrs.iter().map(SocketAddr::ip).collect(), addrs[0].ip())
            }
            Ok(addrs) if !addrs.is_empty() => self.begin_connecting(ctx, addrs),
            Ok(_) => self.reject(ctx, Reply::HostUnreachable),
            Err(e) => {
                log::debug!("conn {}: lookup failed: {e}", self.generation);
                self.reject(ctx, Reply::HostUnreachable);
            }
        }
    }

    /// The current phase's deadline has passed.
    pub fn on_timeout(&mut self, ctx: &mut Ctx<'_>) -> Step {
        match self.phase {
            Phase::AwaitGreeting(_) | Phase::AwaitAuth(_) | Phase::AwaitRequest(_) => {
                Step::Close("handshake timeout")
            }
            Phase::Resolving { .. } | Phase::Connecting { .. } | Phase::BindWaiting(_) => {
                log::debug!("conn {}: {} timed out", self.generation, self.phase.name());
                self.reject(ctx, Reply::TtlExpired);
                self.drive(ctx)
            }
            Phase::UdpAssociated(_) => Step::Close("UDP idle timeout"),
            Phase::Relaying => Step::Close("idle timeout"),
            Phase::Rejecting => Step::Close("rejected"),
            Phase::Closed => Step::Close("closed"),
        }
    }

    /// The one log line written for every finished connection.
    pub fn log_finish(&self, reason: &str, now: Instant) {
        // Formatting costs even when the line is filtered out: skip it at --log-level warn.
        if !log::log_enabled!(log::Level::Info) {
            return;
        }
        let target = self.target.as_ref().map_or_else(|| "-".to_string(), ToString::to_string);
        let reply = self.reply.map_or_else(|| "-".to_string(), |r| r.to_string());
        let down = self.to_client.delivered.saturating_sub(u64::from(self.control_bytes));
        if let Phase::UdpAssociated(udp) = &self.phase {
            let s = udp.stats;
            log::info!(
                "conn {}: UDP datagrams to targets {} to client {}; dropped: fragmented {} foreign {} denied {} other {}",
                self.generation,
                s.to_targets,
                s.to_client,
                s.dropped_fragmented,
                s.dropped_foreign,
                s.dropped_denied,
                s.dropped_other
            );
        }
        log::info!(
            "conn {}: {} -> {} reply {} up {} B down {} B in {:.3} s ({})",
            self.generation,
            self.client_addr,
            target,
            reply,
            self.to_upstream.delivered,
            down,
            now.saturating_duration_since(self.started).as_secs_f64(),
            reason
        );
    }

    fn set_phase(&mut self, next: Phase) {
        log::debug!("conn {}: {} -> {}", self.generation, self.phase.name(), next.name());
        self.phase = next;
    }

    fn set_deadline(&mut self, ctx: &mut Ctx<'_>, after: Duration) {
        ctx.timers.set(&mut self.deadline, ctx.now + after, ctx.key, self.generation);
    }

    fn queue_to_client(&mut self, bytes: &[u8]) {
        self.to_client.queue(bytes);
        self.control_bytes = self.control_bytes.saturating_add(bytes.len() as u8);
    }

    /// Queue a failure reply (in the client's dialect) and close after it is delivered.
    fn reject(&mut self, ctx: &mut Ctx<'_>, reply: Reply) {
        self.reply = Some(reply);
        let bytes = self.command_reply(reply, None);
        self.reject_with(ctx, &bytes);
    }

    /// A reply to a command, in the client's dialect, naming `bound` (the server-side address).
    fn command_reply(&self, reply: Reply, bound: Option<SocketAddr>) -> Vec<u8> {
        match self.dialect {
            Dialect::Socks5 => {
                let mut bytes = Vec::with_capacity(22);
                encode_reply(reply, bound, &mut bytes);
                bytes
            }
            Dialect::Socks4 => {
                // SOCKS4 replies carry only IPv4; anything else is sent as 0.0.0.0.
                let v4 = match bound {
                    Some(SocketAddr::V4(v4)) => v4,
                    _ => std::net::SocketAddrV4::new(std::net::Ipv4Addr::UNSPECIFIED, 0),
                };
                socks4::encode_socks4_reply(Socks4Reply::for_reply(reply), v4).to_vec()
            }
        }
    }

    /// Queue a successful reply and record it.
    fn reply_success(&mut self, bound: Option<SocketAddr>) {
        let bytes = self.command_reply(Reply::Succeeded, bound);
        self.queue_to_client(&bytes);
        self.reply = Some(Reply::Succeeded);
    }

    /// Queue raw bytes (a reply in whatever format the phase speaks) and close after them.
    fn reject_with(&mut self, ctx: &mut Ctx<'_>, bytes: &[u8]) {
        self.queue_to_client(bytes);
        self.upstream = None; // drop (and close) any connect attempt
        self.set_deadline(ctx, LINGER.min(ctx.config.handshake_timeout));
        self.set_phase(Phase::Rejecting);
    }

    /// Read more handshake bytes. `Next` when some arrived (parse again), `Wait` on
    /// WouldBlock, `Close` on EOF, error, or a buffer full of an unparseable message.
    fn read_handshake(&mut self) -> Pass {
        let (Phase::AwaitGreeting(hs) | Phase::AwaitAuth(hs) | Phase::AwaitRequest(hs)) = &mut self.phase
        else {
            return Pass::Next;
        };
        if hs.len == hs.buf.len() {
            return Pass::Close("handshake message too long");
        }
        if !self.client_ready.readable {
            return Pass::Wait;
        }
        match sockio::read(&mut self.client, &mut hs.buf[hs.len..]) {
            Io::Done(n) => {
                hs.len += n;
                Pass::Next
            }
            Io::WouldBlock => {
                self.client_ready.readable = false;
                Pass::Wait
            }
            Io::Eof => Pass::Close("client closed during handshake"),
            Io::Failed(_) => Pass::Close("client error during handshake"),
        }
    }

    fn flush_to_client(&mut self) -> Result<(), Pass> {
        self.to_client
            .flush(&mut self.client, &mut self.client_ready)
            .map(|_| ())
            .map_err(|_| Pass::Close("client error during handshake"))
    }

    fn on_greeting_bytes(&mut self, ctx: &mut Ctx<'_>) -> Pass {
        let Phase::AwaitGreeting(hs) = &mut self.phase else { return Pass::Next };
        // The first byte picks the protocol: 5 is SOCKS5's greeting, 4 a SOCKS4 request.
        if hs.filled().first() == Some(&socks4::VERSION) {
            return self.on_socks4_bytes(ctx);
        }
        let (chosen, used) = match protocol::parse_greeting(hs.filled()) {
            Parse::Partial => return self.read_handshake(),
            Parse::Invalid(Invalid::BadVersion(v)) => {
                log::debug!("conn {}: version byte {v:#04x} is not SOCKS5", self.generation);
                return Pass::Close("not SOCKS5");
            }
            Parse::Invalid(Invalid::Reply(_)) => return Pass::Close("bad greeting"),
            Parse::Complete(greeting, used) => {
                // With credentials configured, only username/password will do (RFC 1929);
                // without, only "no authentication".
                let wanted =
                    if ctx.credentials.is_some() { Method::USERNAME_PASSWORD } else { Method::NO_AUTH };
                (greeting.offers(wanted).then_some(wanted), used)
            }
        };
        hs.consume(used);
        let Some(method) = chosen else {
            self.reject_with(ctx, &encode_method_selection(Method::NO_ACCEPTABLE));
            return Pass::Next;
        };
        self.queue_to_client(&encode_method_selection(method));
        if let Err(close) = self.flush_to_client() {
            return close;
        }
        if let Phase::AwaitGreeting(hs) = std::mem::replace(&mut self.phase, Phase::Closed) {
            self.phase =
                if method == Method::NO_AUTH { Phase::AwaitRequest(hs) } else { Phase::AwaitAuth(hs) };
            log::debug!("conn {}: AwaitGreeting -> {}", self.generation, self.phase.name());
        }
        Pass::Next
    }

    fn on_auth_bytes(&mut self, ctx: &mut Ctx<'_>) -> Pass {
        let Phase::AwaitAuth(hs) = &mut self.phase else { return Pass::Next };
        let (accepted, used) = match protocol::parse_auth_request(hs.filled()) {
            Parse::Partial => return self.read_handshake(),
            Parse::Invalid(_) => return Pass::Close("bad auth version"),
            Parse::Complete(request, used) => {
                let accepted =
                    ctx.credentials.is_some_and(|c| c.current().verify(request.username, request.password));
                if !accepted {
                    // The user name helps operators; the password is never logged.
                    log::info!(
                        "conn {}: authentication failed for user '{}' from {}",
                        self.generation,
                        String::from_utf8_lossy(request.username).escape_debug(),
                        self.client_addr
                    );
                }
                (accepted, used)
            }
        };
        hs.consume(used);
        if !accepted {
            self.reject_with(ctx, &encode_auth_status(AuthStatus::Failure));
            return Pass::Next;
        }
        self.queue_to_client(&encode_auth_status(AuthStatus::Success));
        if let Err(close) = self.flush_to_client() {
            return close;
        }
        if let Phase::AwaitAuth(hs) = std::mem::replace(&mut self.phase, Phase::Closed) {
            log::debug!("conn {}: AwaitAuth -> AwaitRequest", self.generation);
            self.phase = Phase::AwaitRequest(hs);
        }
        Pass::Next
    }

    fn on_request_bytes(&mut self, ctx: &mut Ctx<'_>) -> Pass {
        let Phase::AwaitRequest(hs) = &mut self.phase else { return Pass::Next };
        let request = match protocol::parse_request(hs.filled()) {
            Parse::Partial => return self.read_handshake(),
            Parse::Invalid(Invalid::BadVersion(_)) => return Pass::Close("bad request version"),
            Parse::Invalid(Invalid::Reply(reply)) => {
                self.reject(ctx, reply);
                return Pass::Next;
            }
            Parse::Complete(request, used) => {
                // Whatever follows the request is early payload for the target: keep it.
                self.to_upstream.queue(&hs.filled()[used..]);
                request
            }
        };
        self.start_command(ctx, request.command, request.target);
        Pass::Next
    }

    /// A SOCKS4 or SOCKS4a request (`04 CD PORT IP USERID 00 [HOST 00]`).
    fn on_socks4_bytes(&mut self, ctx: &mut Ctx<'_>) -> Pass {
        let Phase::AwaitGreeting(hs) = &mut self.phase else { return Pass::Next };
        self.dialect = Dialect::Socks4;
        let (command, target) = match socks4::parse_socks4_request(hs.filled()) {
            Parse::Partial => return self.read_handshake(),
            Parse::Invalid(Invalid::BadVersion(_)) => return Pass::Close("bad SOCKS4 request"),
            Parse::Invalid(Invalid::Reply(reply)) => {
                self.reject(ctx, reply);
                return Pass::Next;
            }
            Parse::Complete(request, used) => {
                let command = match request.command {
                    Socks4Command::Connect => Command::Connect,
                    Socks4Command::Bind => Command::Bind,
                };
                let target = match request.target {
                    Socks4Target::Ip(ip) => TargetAddr::Ip(SocketAddr::new(ip.into(), request.port)),
                    Socks4Target::Domain(host) => TargetAddr::Domain(host, request.port),
                };
                self.to_upstream.queue(&hs.filled()[used..]);
                (command, target)
            }
        };
        let refusal = if !ctx.config.socks4 {
            Some("SOCKS4 is disabled (--no-socks4)")
        } else if ctx.credentials.is_some() && !ctx.config.socks4_without_auth {
            Some("SOCKS4 has no passwords and authentication is required")
        } else {
            None
        };
        if let Some(why) = refusal {
            log::info!("conn {}: refused SOCKS4 client {}: {why}", self.generation, self.client_addr);
            self.target = Some(target);
            self.reject(ctx, Reply::NotAllowedByRuleset);
            return Pass::Next;
        }
        self.start_command(ctx, command, target);
        Pass::Next
    }

    /// Begin carrying out a parsed request, whichever dialect it came in.
    fn start_command(&mut self, ctx: &mut Ctx<'_>, command: Command, target: TargetAddr) {
        log::debug!("conn {}: {:?} {}", self.generation, command, target);
        self.target = Some(target.clone());
        self.set_deadline(ctx, ctx.config.connect_timeout);
        if command != Command::Connect && !S::supports_listeners() {
            return self.reject(ctx, Reply::CommandNotSupported);
        }
        if command == Command::UdpAssociate {
            return self.begin_udp(ctx, target);
        }
        match target {
            TargetAddr::Ip(addr) if command == Command::Bind => {
                self.begin_bind(ctx, vec![addr.ip()], addr.ip())
            }
            TargetAddr::Ip(addr) => self.begin_connecting(ctx, vec![addr]),
            TargetAddr::Domain(host, port) => match resolver::check_name(&host) {
                NameCheck::Literal(ip) if command == Command::Bind => self.begin_bind(ctx, vec![ip], ip),
                NameCheck::Literal(ip) => self.begin_connecting(ctx, vec![SocketAddr::new(ip, port)]),
                NameCheck::Invalid => self.reject(ctx, Reply::HostUnreachable),
                NameCheck::Lookup => {
                    ctx.resolver.submit(Lookup { key: ctx.key, generation: self.generation, host, port });
                    self.set_phase(Phase::Resolving { command });
                }
            },
        }
    }

    /// BIND: listen for the expected peer and send the first reply with the listening address.
    fn begin_bind(&mut self, ctx: &mut Ctx<'_>, expected: Vec<IpAddr>, toward: IpAddr) {
        // Listen where the peer can reach us: the outbound address, else the route toward
        // the expected peer, else the address the client reached us on.
        let local_ip = ctx
            .config
            .bind_out
            .or_else(|| bind::outbound_ip_for(toward))
            .or_else(|| self.client.local_addr().ok().map(|a| a.ip()));
        let opened = local_ip
            .ok_or_else(|| io::Error::other("no local address"))
            .and_then(|ip| BindWait::open(ip, expected, ctx.registry, ctx.key));
        let wait = match opened {
            Ok(wait) => wait,
            Err(e) => {
                log::warn!("conn {}: cannot listen for BIND: {e}", self.generation);
                return self.reject(ctx, Reply::GeneralFailure);
            }
        };
        let first = self.command_reply(Reply::Succeeded, wait.local_addr().ok());
        self.queue_to_client(&first);
        self.aux_ready = Readiness::default();
        self.set_phase(Phase::BindWaiting(Box::new(wait)));
    }

    fn on_bind_progress(&mut self, ctx: &mut Ctx<'_>) -> Pass {
        if let Err(close) = self.flush_to_client() {
            return close;
        }
        let Phase::BindWaiting(wait) = &mut self.phase else { return Pass::Next };
        if !self.aux_ready.readable {
            return Pass::Wait;
        }
        let (mut stream, peer) = match wait.accept_expected() {
            Ok(Some((stream, peer))) => (S::from_accepted(stream), peer),
            Ok(None) => {
                self.aux_ready.readable = false;
                return Pass::Wait;
            }
            Err(e) => {
                log::debug!("conn {}: BIND accept failed: {e}", self.generation);
                self.reject(ctx, Reply::GeneralFailure);
                return Pass::Next;
            }
        };
        let token = token::conn(ctx.key, Side::Upstream);
        if let Err(e) = ctx.registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
            log::warn!("conn {}: cannot register BIND peer: {e}", self.generation);
            self.reject(ctx, Reply::GeneralFailure);
            return Pass::Next;
        }
        log::debug!("conn {}: BIND peer {peer} connected", self.generation);
        // The second reply names the peer (RFC 1928 §4); then the listener is closed.
        self.upstream = Some(stream);
        self.upstream_ready = Readiness::BOTH;
        self.reply_success(Some(peer));
        self.set_deadline(ctx, ctx.config.idle_timeout);
        self.set_phase(Phase::Relaying);
        Pass::Next
    }

    /// UDP ASSOCIATE: open this association's own sockets and reply with the relay address.
    fn begin_udp(&mut self, ctx: &mut Ctx<'_>, target: TargetAddr) {
        // DST.PORT (if not 0) is the port the client will send from; its IP is always the
        // TCP peer's (a DST.ADDR from behind NAT would be wrong, and trusting it would let a
        // client aim the relay at someone else).
        let client_port = Some(target.port()).filter(|&p| p != 0);
        let local = match self.client.local_addr() {
            Ok(local) => local,
            Err(e) => {
                log::warn!("conn {}: {e}", self.generation);
                return self.reject(ctx, Reply::GeneralFailure);
            }
        };
        let opened =
            UdpAssociation::open(local.ip(), self.client_addr.ip(), client_port, ctx.config.bind_out)
                .and_then(|mut udp| udp.register(ctx.registry, ctx.key).map(|()| udp));
        let udp = match opened {
            Ok(udp) => udp,
            Err(e) => {
                log::warn!("conn {}: cannot open UDP relay: {e}", self.generation);
                return self.reject(ctx, Reply::GeneralFailure);
            }
        };
        let mut advertised = udp.relay_addr().ok();
        if let (Some(addr), Some(ip)) = (advertised.as_mut(), ctx.config.udp_advertise) {
            addr.set_ip(ip);
        }
        self.reply_success(advertised);
        self.aux_ready = Readiness::BOTH;
        self.upstream_ready = Readiness::BOTH;
        self.set_deadline(ctx, ctx.config.idle_timeout);
        self.set_phase(Phase::UdpAssociated(Box::new(udp)));
    }

    /// UdpAssociated: relay datagrams both ways; the TCP connection only signals the end.
    fn on_udp_activity(&mut self, ctx: &mut Ctx<'_>) -> Pass {
        if let Err(close) = self.flush_to_client() {
            return close;
        }
        // RFC 1928 §7: the association ends when its TCP connection does. Anything the
        // client sends on it is meaningless and discarded.
        let mut discard = [0u8; 256];
        while self.client_ready.readable {
            match sockio::read(&mut self.client, &mut discard) {
                Io::Done(_) => {}
                Io::WouldBlock => self.client_ready.readable = false,
                Io::Eof => return Pass::Close("UDP association ended by client"),
                Io::Failed(_) => return Pass::Close("UDP control connection failed"),
            }
        }
        let Phase::UdpAssociated(udp) = &mut self.phase else { return Pass::Next };
        let mut more = false;
        let mut active = false;
        if self.aux_ready.readable {
            active = true;
            let id = (ctx.key, self.generation);
            match udp.from_client(ctx.scratch, &ctx.config.rules, ctx.resolver, id) {
                Handled::Done => self.aux_ready.readable = false,
                Handled::More => more = true,
            }
        }
        if self.upstream_ready.readable {
            active = true;
            match udp.from_targets(ctx.scratch) {
                Handled::Done => self.upstream_ready.readable = false,
                Handled::More => more = true,
            }
        }
        if active {
            self.set_deadline(ctx, ctx.config.idle_timeout);
        }
        if more { Pass::Again } else { Pass::Wait }
    }

    /// Apply the egress rules to every address the connect could use (after resolution,
    /// so a name cannot smuggle a denied address), then start trying the rest in order.
    fn begin_connecting(&mut self, ctx: &mut Ctx<'_>, mut addrs: Vec<SocketAddr>) {
        let rules = &ctx.config.rules;
        if rules.restricts_destinations() {
            let before = addrs.len();
            addrs.retain(|&addr| rules.destination_allowed(addr));
            if addrs.is_empty() {
                log::info!("conn {}: destination denied by rules", self.generation);
                return self.reject(ctx, Reply::NotAllowedByRuleset);
            }
            if addrs.len() < before {
                log::debug!(
                    "conn {}: {} of {before} addresses denied by rules",
                    self.generation,
                    before - addrs.len()
                );
            }
        }
        if let Some(local) = ctx.config.bind_out {
            // An IPv4 source cannot reach an IPv6 target, and the reverse.
            addrs.retain(|addr| addr.is_ipv4() == local.is_ipv4());
            if addrs.is_empty() {
                return self.reject(ctx, Reply::AddressTypeNotSupported);
            }
        }
        self.set_phase(Phase::Connecting { addrs, next: 0, last_error: None });
    }

    /// Start the next address's connect if none is in flight, or check the one that is.
    fn on_connect_progress(&mut self, ctx: &mut Ctx<'_>) -> Pass {
        if let Some(upstream) = &self.upstream {
            if !self.upstream_ready.writable && !self.upstream_ready.readable {
                return Pass::Wait;
            }
            match upstream.connect_progress() {
                Progress::Pending => {
                    self.upstream_ready = Readiness::default();
                    return Pass::Wait;
                }
                Progress::Connected => return self.on_connected(ctx),
                Progress::Failed(e) => {
                    log::debug!("conn {}: connect failed: {e}", self.generation);
                    self.upstream = None;
                    if let Phase::Connecting { last_error, .. } = &mut self.phase {
                        *last_error = Some(e);
                    }
                }
            }
        }
        self.connect_next(ctx)
    }

    /// Begin connecting to the next untried address; reject when none is left.
    fn connect_next(&mut self, ctx: &mut Ctx<'_>) -> Pass {
        let Phase::Connecting { addrs, next, last_error } = &mut self.phase else { return Pass::Next };
        while let Some(&addr) = addrs.get(*next) {
            *next += 1;
            let attempt = S::connect(addr, ctx.config.bind_out).and_then(|mut stream| {
                let token = token::conn(ctx.key, Side::Upstream);
                ctx.registry.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)?;
                Ok(stream)
            });
            match attempt {
                Ok(stream) => {
                    log::debug!("conn {}: connecting to {addr}", self.generation);
                    self.upstream = Some(stream);
                    self.upstream_ready = Readiness::default();
                    return Pass::Wait;
                }
                Err(e) => *last_error = Some(e),
            }
        }
        let reply = last_error.as_ref().map_or(Reply::GeneralFailure, connect::reply_for_error);
        self.reject(ctx, reply);
        Pass::Next
    }

    fn on_connected(&mut self, ctx: &mut Ctx<'_>) -> Pass {
        let bound = self.upstream.as_ref().and_then(|s| s.local_addr().ok());
        self.reply_success(bound);
        self.upstream_ready.writable = true;
        self.set_deadline(ctx, ctx.config.idle_timeout);
        self.set_phase(Phase::Relaying);
        Pass::Next
    }

    fn relay(&mut self, ctx: &mut Ctx<'_>) -> Pass {
        let (mut budget_up, mut budget_down) = (RELAY_BUDGET, RELAY_BUDGET);
        let Some((up, down)) = self.pump_both(ctx, &mut budget_up, &mut budget_down) else {
            return Pass::Close("no upstream");
        };
        let progress = match (up, down) {
            (Ok(a), Ok(b)) => a || b,
            (Err(e), _) | (_, Err(e)) => {
                log::debug!("conn {}: relay ended: {e}", self.generation);
                return Pass::Close(match e.kind() {
                    io::ErrorKind::ConnectionReset => "reset",
                    io::ErrorKind::BrokenPipe => "broken pipe",
                    _ => "relay error",
                });
            }
        };
        if self.to_upstream.is_done() && self.to_client.is_done() {
            return Pass::Close("done");
        }
        // A source whose reads are paused by backpressure would not see its peer's reset
        // until the other side drains or the idle timeout fires. A reset arrives as an error
        // event, which sets the readable flag: ask the socket for its pending error.
        if !progress {
            let client_reset = self.waiting_for_upstream()
                && self.client_ready.readable
                && matches!(self.client.take_error(), Ok(Some(_)));
            let upstream_reset = self.waiting_for_client()
                && self.upstream_ready.readable
                && self.upstream.as_ref().is_some_and(|u| matches!(u.take_error(), Ok(Some(_))));
            if client_reset || upstream_reset {
                return Pass::Close("reset");
            }
        }
        if progress {
            self.set_deadline(ctx, ctx.config.idle_timeout);
        }
        let more_up = budget_up == 0 && self.client_ready.readable;
        let more_down = budget_down == 0 && self.upstream_ready.readable;
        if more_up || more_down { Pass::Again } else { Pass::Wait }
    }

    /// Pump both directions, client→upstream first, on the configured relay path: `splice`
    /// (Linux; a direction that cannot borrow a pipe copies instead) or `copy`. `None`
    /// without an upstream socket.
    fn pump_both(
        &mut self,
        ctx: &mut Ctx<'_>,
        budget_up: &mut usize,
        budget_down: &mut usize,
    ) -> Option<(io::Result<bool>, io::Result<bool>)> {
        let upstream = self.upstream.as_mut()?;
        #[cfg(target_os = "linux")]
        if ctx.config.relay_mode == RelayMode::Splice {
            let workers = ctx.config.workers;
            let up = splice::pump(
                &mut self.client,
                &mut self.client_ready,
                upstream,
                &mut self.upstream_ready,
                &mut self.to_upstream,
                &mut self.splice.to_upstream,
                ctx.scratch,
                budget_up,
                workers,
            );
            let down = splice::pump(
                upstream,
                &mut self.upstream_ready,
                &mut self.client,
                &mut self.client_ready,
                &mut self.to_client,
                &mut self.splice.to_client,
                ctx.scratch,
                budget_down,
                workers,
            );
            return Some((up, down));
        }
        // Elsewhere `--relay splice` is refused by the flag parser; a Config built in code copies.
        let up = relay::pump(
            &mut self.client,
            &mut self.client_ready,
            upstream,
            &mut self.upstream_ready,
            &mut self.to_upstream,
            ctx.scratch,
            budget_up,
        );
        let down = relay::pump(
            upstream,
            &mut self.upstream_ready,
            &mut self.client,
            &mut self.client_ready,
            &mut self.to_client,
            ctx.scratch,
            budget_down,
        );
        Some((up, down))
    }

    /// Bytes for the upstream wait (in user space or a kernel pipe): client reads are paused.
    fn waiting_for_upstream(&self) -> bool {
        #[cfg(target_os = "linux")]
        if self.splice.to_upstream.has_pending() {
            return true;
        }
        self.to_upstream.has_pending()
    }

    /// Bytes for the client wait (in user space or a kernel pipe): upstream reads are paused.
    fn waiting_for_client(&self) -> bool {
        #[cfg(target_os = "linux")]
        if self.splice.to_client.has_pending() {
            return true;
        }
        self.to_client.has_pending()
    }

    /// Rejecting: flush the reply, half-close, then read and discard until the client's FIN.
    /// Closing while unread client bytes sit in our receive buffer would send a reset, and a
    /// reset can make the client's kernel discard the reply before the client reads it.
    fn linger(&mut self) -> Pass {
        if let Err(close) = self.flush_to_client() {
            return close;
        }
        if self.to_client.has_pending() {
            return Pass::Wait;
        }
        if !self.to_client.shut {
            self.to_client.shut = true;
            if self.client.shutdown_write().is_err() {
                return Pass::Close("rejected");
            }
        }
        let mut discard = [0u8; 512];
        // Bounded, so a client that keeps sending cannot hold the loop; the deadline ends it.
        for _ in 0..16 {
            if !self.client_ready.readable {
                return Pass::Wait;
            }
            match sockio::read(&mut self.client, &mut discard) {
                Io::Done(_) => {}
                Io::WouldBlock => self.client_ready.readable = false,
                Io::Eof | Io::Failed(_) => return Pass::Close("rejected"),
            }
        }
        Pass::Again
    }
}

/// The result of one pass of [`Connection::drive`].
enum Pass {
    /// The phase changed or has more to do right away: run again.
    Next,
    Wait,
    Again,
    Close(&'static str),
}
