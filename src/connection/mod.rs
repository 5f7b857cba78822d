//! One client's state machine, from accept to close.
//!
//! ```text
//!  accept ─▶ Handshake ──────────────────────────┬─ IP literal ──────────▶ Connecting ─▶ Relaying ─▶ closed
//!            (AwaitGreeting → [AwaitAuth] →     ├─ domain ─▶ Resolving ──▲              ▲
//!             AwaitRequest; or a SOCKS4 request) ├─ BIND ─▶ [Resolving] ─▶ BindWaiting ──┘
//!                                                └─ UDP ASSOCIATE ─▶ UdpAssociated ─▶ closed
//!  any refusal or failure with a reply ─▶ Rejecting (flush the reply, linger) ─▶ closed
//! ```
//!
//! **Each phase owns what is valid in it.** The client socket lives as long as the connection
//! and is held here; every other socket, buffer and piece of progress lives in its phase's
//! variant: the handshake buffer in [`Handshake`], the connect attempts in [`Connecting`], the
//! upstream and both relay directions in [`Relay`], the BIND listener in [`BindWaiting`], the
//! association's sockets in [`UdpAssociated`], the error reply in [`Rejecting`]. No handler
//! can see a socket its phase does not have.
//!
//! **Handlers return a transition.** Each phase's `drive` answers with an [`Outcome`]: wait,
//! come back soon, close with a [`CloseReason`], or go to a new phase that it built (moving
//! into it what carries over: queued reply bytes, early payload, the winning socket). One
//! function, [`Connection::set_phase`], applies every transition: it logs
//! `conn 7: Connecting -> Relaying` and sets the new phase's deadline.
//!
//! The event loop (`server`) feeds a connection readiness ([`Connection::on_ready`]),
//! resolver answers ([`Connection::on_resolved`]), the password verifier's verdicts
//! ([`Connection::on_verified`]) and deadlines ([`Connection::on_timeout`]),
//! then calls [`Connection::drive`], which runs phases until one has to wait, and says whether
//! to keep, revisit or close the connection. Everything a connection needs from the loop
//! arrives in a [`Ctx`]: the [`Net`] handle that opens registered sockets, the resolver, the
//! timers, the scratch buffer and pipe pool. The state machine never names mio, so the
//! [`crate::sim`] network can drive every phase without a socket.

mod bind;
mod close;
mod connecting;
mod handshake;
mod policy;
mod rejecting;
mod relaying;
mod report;
mod request;
mod tally;
mod udp;

#[cfg(test)]
mod tests;

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Config;
use crate::dns::{DnsError, Family};
use crate::net::{End, Net, Readiness, SocketId};
use crate::protocol::{Command, Reply, TargetAddr};
use crate::relay::{Movers, Outbox};
use crate::resolver::Resolver;
use crate::settings::Settings;
use crate::timer::{Deadline, Timers};
use crate::token::Side;
use crate::usage::{Held, Usage, UserUsage};
use crate::users::User;
use crate::verifier::{Passwords, Verdict};

use bind::BindWaiting;
pub use close::CloseReason;
use connecting::Connecting;
use handshake::Handshake;
pub use policy::{Dialect, reply_for_error};
use rejecting::Rejecting;
use relaying::Relay;
pub use report::Report;
use request::Resolving;
pub use tally::Tally;
use udp::UdpAssociated;
pub use udp::{HEADER_ROOM, UdpStats};

/// How long a rejected client gets to read its reply and close before we cut it off.
const LINGER: Duration = Duration::from_secs(2);

/// What the loop should do with a connection after driving it.
#[derive(Debug, PartialEq, Eq)]
pub enum Step {
    /// Nothing more to do until the next event, answer or deadline.
    Wait,
    /// Work is left (a quantum ran out): drive again in a later pass, without waiting for an
    /// event (`crate::server::schedule`).
    Again,
    /// The connection is finished; the loop logs it and removes it.
    Close(CloseReason),
}

/// What a phase handler decided.
enum Outcome<N: Net> {
    Wait,
    Again,
    /// Leave for this phase (built by the handler) and run it at once.
    Go(Phase<N>),
    Close(CloseReason),
}

/// Where a connection's names are looked up: the system resolver on helper threads
/// ([`Resolver`]) or the in-loop DNS client (`--nameserver`). Answers come back through the
/// loop as [`Connection::on_resolved`], tagged with the key and id given here.
pub trait Lookups {
    fn lookup(&mut self, host: &str, key: usize, conn: u64, now: Instant);
}

impl Lookups for Resolver {
    fn lookup(&mut self, host: &str, key: usize, conn: u64, _now: Instant) {
        self.submit(crate::resolver::Lookup { key, conn, host: host.to_owned() });
    }
}

/// An answer to a lookup.
#[derive(Debug)]
pub enum Resolution {
    /// The system resolver's: every address at once.
    All(io::Result<Vec<IpAddr>>),
    /// The in-loop client's: one family, as soon as it is known (AAAA and A are asked
    /// together and answered apart, so Happy Eyeballs can start on the first in).
    Family(Family, Result<Vec<IpAddr>, DnsError>),
}

/// What the loop lends a connection while driving it.
pub struct Ctx<'a, N: Net> {
    /// Opens sockets registered with the loop (mio's `Registry`, or the simulated network).
    pub net: &'a N,
    /// Looks names up (resolver threads, or the in-loop DNS client).
    pub names: &'a mut dyn Lookups,
    /// Decides logins: plaintext at once, hashes on the verifier threads (`src/verifier/`).
    pub passwords: &'a mut Passwords,
    pub timers: &'a mut Timers,
    /// Loop-owned buffer for relay reads and datagrams, shared by all connections.
    pub scratch: &'a mut [u8],
    /// The loop's kernel pipes, present on the splice path (`--relay splice` and `auto`).
    #[cfg(target_os = "linux")]
    pub pipes: Option<&'a mut crate::relay::splice::PipePool>,
    pub config: &'a Config,
    /// Users, rules and egress as of this pass (replaced whole by a reload).
    pub settings: &'a Settings,
    /// Connections per client and per user, over all workers (the caps).
    pub usage: &'a Arc<Usage>,
    pub now: Instant,
    /// The connection's slab key (its sockets' tokens derive from it).
    pub key: usize,
    /// The connection's id (log lines; timers and lookups carry it too).
    pub conn: u64,
}

impl<N: Net> Ctx<'_, N> {
    /// How the loop names this connection's socket on `side`.
    fn socket_id(&self, side: Side) -> SocketId {
        SocketId { key: self.key, side }
    }

    /// Move `deadline` to `after` from now.
    fn rearm(&mut self, deadline: &mut Deadline, after: Duration) {
        self.rearm_at(deadline, self.now + after);
    }

    /// Move `deadline` to `at`.
    fn rearm_at(&mut self, deadline: &mut Deadline, at: Instant) {
        self.timers.set(deadline, at, self.key, self.conn);
    }

    /// The relay's tools for one pump.
    fn movers(&mut self) -> Movers<'_> {
        Movers {
            scratch: self.scratch,
            #[cfg(target_os = "linux")]
            pipes: self.pipes.as_deref_mut(),
            #[cfg(target_os = "linux")]
            adaptive: self.config.relay_mode == crate::config::RelayMode::Auto,
        }
    }
}

/// What the connection's [`Report`] will tell, filled in as it goes.
#[derive(Debug)]
struct Summary {
    client_addr: SocketAddr,
    dialect: Dialect,
    /// The user this client logged in as (RFC 1929); their settings apply to it.
    user: Option<Arc<User>>,
    /// The connection's place in the per-client and per-user counts, taken at the request and
    /// given back when the connection is dropped (boxed: most of a relay's life it is cold).
    held: Option<Box<Held>>,
    command: Option<Command>,
    target: Option<TargetAddr>,
    reply: Option<Reply>,
    /// The address actually connected to (CONNECT's winner, BIND's peer).
    connected: Option<SocketAddr>,
    /// Our side of the outbound socket (the egress address).
    local: Option<SocketAddr>,
    started: Instant,
    /// When the request was complete (parsed; the handshake's end), if it was.
    requested: Option<Instant>,
    /// When a CONNECT's upstream connected, if it did.
    upstream_connected: Option<Instant>,
    /// The RFC 1929 sub-negotiation failed (wrong user or password).
    auth_failed: bool,
}

/// The phases of a connection. Each variant holds exactly what that phase needs; the rare
/// and large ones are boxed so an idle relay stays small.
enum Phase<N: Net> {
    /// Reading the greeting, the RFC 1929 sub-negotiation and the request (or a SOCKS4 request).
    Handshake(Box<Handshake>),
    /// A domain name is with the resolver threads; the answer comes through the waker.
    Resolving(Resolving),
    /// Connect attempts to the target's addresses.
    Connecting(Box<Connecting<N::Stream>>),
    /// BIND: first reply sent; listening for the one inbound connection.
    BindWaiting(Box<BindWaiting<N::Listener>>),
    /// UDP ASSOCIATE: datagrams flow through the association's sockets until the TCP control
    /// connection closes.
    UdpAssociated(Box<UdpAssociated<N::Datagram>>),
    /// Both sockets up: bytes flow both ways.
    Relaying(Relay<N::Stream>),
    /// An error reply (or `05 FF`, `01 01`) is queued: flush it, half-close, wait briefly for
    /// the client's FIN so the reply is not destroyed by a reset, then close.
    Rejecting(Rejecting),
    /// Finished; waiting for the loop to remove it after the current batch of events.
    Closed,
}

impl<N: Net> Phase<N> {
    fn name(&self) -> &'static str {
        match self {
            Phase::Handshake(handshake) => handshake.stage_name(),
            Phase::Resolving(_) => "Resolving",
            Phase::Connecting(_) => "Connecting",
            Phase::BindWaiting(_) => "BindWaiting",
            Phase::UdpAssociated(_) => "UdpAssociated",
            Phase::Relaying(_) => "Relaying",
            Phase::Rejecting(_) => "Rejecting",
            Phase::Closed => "Closed",
        }
    }

    /// The deadline a transition from `self` to `next` sets, if it sets one.
    fn deadline_for(&self, next: &Phase<N>, config: &Config) -> Option<Duration> {
        match (self, next) {
            (_, Phase::Relaying(_) | Phase::UdpAssociated(_)) => Some(config.idle_timeout),
            (_, Phase::Rejecting(_)) => Some(LINGER.min(config.handshake_timeout)),
            // The connect timeout covers resolving, connecting and BIND's wait as a whole: it
            // starts when the request is parsed.
            (Phase::Handshake(_), Phase::Resolving(_) | Phase::Connecting(_) | Phase::BindWaiting(_)) => {
                Some(config.connect_timeout)
            }
            _ => None,
        }
    }
}

/// Queue a failure reply in the client's dialect behind `out` and reject with it.
fn reject<N: Net>(summary: &mut Summary, out: Outbox, reply: Reply) -> Outcome<N> {
    summary.reply = Some(reply);
    reject_with(out, &policy::command_reply(summary.dialect, reply, None))
}

/// Queue raw bytes (a reply in whatever format the phase speaks) behind `out` and go to
/// `Rejecting`; any other socket of the old phase is dropped (closed) with it.
fn reject_with<N: Net>(mut out: Outbox, bytes: &[u8]) -> Outcome<N> {
    out.queue(bytes);
    Outcome::Go(Phase::Rejecting(Rejecting::new(out)))
}

/// A client connection and everything it opened since.
///
/// Generic over the network it runs on: mio's `Registry` in the server, the simulated
/// network ([`crate::sim::SimNet`]) in unit tests and fuzz targets.
pub struct Connection<N: Net> {
    /// Unique per process and never reused: log lines name the connection by it, and timer
    /// entries and resolver answers carry it so they never touch a newer connection that
    /// reused the slab key.
    pub id: u64,
    pub deadline: Deadline,
    client: End<N::Stream>,
    phase: Phase<N>,
    summary: Summary,
}

impl<N: Net> Connection<N> {
    /// A freshly accepted client. Both readiness flags start set: the greeting has often
    /// arrived with the connection, and a failed optimistic read costs one syscall.
    pub fn new(client: N::Stream, client_addr: SocketAddr, id: u64, now: Instant) -> Connection<N> {
        Connection {
            id,
            deadline: Deadline::new(now),
            client: End::new(client, Readiness::BOTH),
            phase: Phase::Handshake(Handshake::new()),
            summary: Summary {
                client_addr,
                dialect: Dialect::Socks5,
                user: None,
                held: None,
                command: None,
                target: None,
                reply: None,
                connected: None,
                local: None,
                started: now,
                requested: None,
                upstream_connected: None,
                auth_failed: false,
            },
        }
    }

    /// The client is a listed load balancer (`--proxy-protocol`): its connection must begin
    /// with a PROXY header, which names the real client.
    pub fn expect_proxy_header(&mut self) {
        if let Phase::Handshake(handshake) = &mut self.phase {
            handshake.expect_proxy_header();
        }
    }

    pub fn is_closed(&self) -> bool {
        matches!(self.phase, Phase::Closed)
    }

    /// Enter `Closed`, dropping (closing) every socket but the client's: later events in this
    /// batch are ignored until the loop removes the connection.
    pub fn mark_closed(&mut self) {
        if !self.is_closed() {
            log::debug!("conn {}: {} -> Closed", self.id, self.phase.name());
            self.phase = Phase::Closed;
        }
    }

    /// The client's address: the peer's, or the one a load balancer's PROXY header named.
    pub fn client_addr(&self) -> SocketAddr {
        self.summary.client_addr
    }

    /// The user this connection logged in as, if it did.
    pub fn user(&self) -> Option<&Arc<User>> {
        self.summary.user.as_ref()
    }

    /// The per-user numbers this connection adds to, once its request took a place.
    pub fn user_usage(&self) -> Option<&UserUsage> {
        self.summary.held.as_deref().and_then(Held::user)
    }

    /// The phase's name (logs, tests).
    pub fn phase_name(&self) -> &'static str {
        self.phase.name()
    }

    /// Heap bytes the connection's queues hold right now (for bounds checks in tests and
    /// fuzzing).
    pub fn buffered_bytes(&self) -> usize {
        match &self.phase {
            Phase::Handshake(handshake) => handshake.buffered_bytes(),
            Phase::Relaying(relay) => relay.buffered_bytes(),
            Phase::Resolving(resolving) => resolving.buffered_bytes(),
            Phase::Connecting(connecting) => connecting.buffered_bytes(),
            Phase::BindWaiting(bind) => bind.buffered_bytes(),
            Phase::UdpAssociated(udp) => udp.buffered_bytes(),
            Phase::Rejecting(rejecting) => rejecting.buffered_bytes(),
            Phase::Closed => 0,
        }
    }

    /// Record readiness reported for one of this connection's sockets. Readiness for a socket
    /// the current phase does not have (an attempt closed since, a listener already gone) is
    /// stale and dropped: every event is a hint.
    pub fn on_ready(&mut self, side: Side, news: Readiness) {
        match (side, &mut self.phase) {
            (Side::Client, _) => self.client.ready.add(news),
            (Side::Upstream(slot), Phase::Connecting(connecting)) => connecting.on_ready(slot, news),
            (Side::Upstream(slot), Phase::Relaying(relay)) => relay.on_ready(slot, news),
            (Side::Upstream(_), Phase::UdpAssociated(udp)) => udp.on_upstream_ready(news),
            (Side::Aux, Phase::UdpAssociated(udp)) => udp.on_client_side_ready(news),
            (Side::Aux, Phase::BindWaiting(bind)) => bind.on_ready(news),
            _ => {}
        }
    }

    /// Run the current phase, and the phases it leads to, until one must wait.
    pub fn drive(&mut self, ctx: &mut Ctx<'_, N>) -> Step {
        // Each pass either changes phase or returns; more passes than phases means a bug.
        for _ in 0..16 {
            let outcome = match &mut self.phase {
                Phase::Handshake(handshake) => handshake.drive(&mut self.client, ctx, &mut self.summary),
                // Client bytes that arrive now are early payload for the upstream: leave them.
                Phase::Resolving(_) => Outcome::Wait,
                Phase::Connecting(connecting) => connecting.drive(&mut self.deadline, ctx, &mut self.summary),
                Phase::BindWaiting(bind) => bind.drive(&mut self.client, ctx, &mut self.summary),
                Phase::UdpAssociated(udp) => udp.drive(&mut self.client, &mut self.deadline, ctx),
                Phase::Relaying(relay) => relay.drive(&mut self.client, &mut self.deadline, ctx),
                Phase::Rejecting(rejecting) => rejecting.drive(&mut self.client),
                Phase::Closed => Outcome::Wait,
            };
            match outcome {
                Outcome::Go(next) => self.set_phase(next, ctx),
                Outcome::Wait => return Step::Wait,
                Outcome::Again => return Step::Again,
                Outcome::Close(reason) => return Step::Close(reason),
            }
        }
        log::error!("conn {}: drive did not settle in {}; closing", self.id, self.phase.name());
        Step::Close(CloseReason::Stuck)
    }

    /// An answer to a lookup this connection asked for (`host` as asked, or normalized by
    /// the in-loop client). The loop drives the connection after it.
    pub fn on_resolved(&mut self, ctx: &mut Ctx<'_, N>, host: &str, answer: Resolution) {
        let outcome = match &mut self.phase {
            Phase::Resolving(resolving) => {
                resolving.on_answer(answer, &self.client, &mut self.deadline, ctx, &mut self.summary)
            }
            Phase::Connecting(connecting) => connecting.on_late_answer(answer, ctx),
            Phase::UdpAssociated(udp) => {
                udp.on_resolved(host, answer, &ctx.settings.rules);
                return;
            }
            _ => return, // a late answer (the connect timed out meanwhile)
        };
        if let Outcome::Go(next) = outcome {
            self.set_phase(next, ctx);
        }
    }

    /// The verifier's verdict on this connection's login. The loop drives the connection
    /// after it.
    pub fn on_verified(&mut self, ctx: &mut Ctx<'_, N>, verdict: Verdict) {
        let Phase::Handshake(handshake) = &mut self.phase else {
            return; // not waiting for one
        };
        if let Outcome::Go(next) =
            handshake.on_verdict(verdict, &mut self.client, ctx.conn, &mut self.summary)
        {
            self.set_phase(next, ctx);
        }
    }

    /// The current phase's deadline has passed.
    pub fn on_timeout(&mut self, ctx: &mut Ctx<'_, N>) -> Step {
        let outcome = match &mut self.phase {
            Phase::Handshake(_) => Outcome::Close(CloseReason::HandshakeTimeout),
            // The connection attempt delay, not the connect timeout: start the next attempt.
            Phase::Connecting(connecting) if !connecting.gave_up(ctx.now) => return self.drive(ctx),
            Phase::Connecting(connecting) => {
                log::debug!("conn {}: Connecting timed out", self.id);
                let reply = connecting.reply_out_of_time();
                reject(&mut self.summary, connecting.take_outbox(), reply)
            }
            // The resolution delay, not the connect timeout: connect with what has arrived.
            Phase::Resolving(resolving) if !resolving.gave_up(ctx.now) => {
                match resolving.on_resolution_delay(&self.client, ctx, &mut self.summary) {
                    Outcome::Go(next) => {
                        self.set_phase(next, ctx);
                        return self.drive(ctx);
                    }
                    _ => return Step::Wait,
                }
            }
            Phase::Resolving(_) | Phase::BindWaiting(_) => {
                log::debug!("conn {}: {} timed out", self.id, self.phase.name());
                let out = match &mut self.phase {
                    Phase::Resolving(resolving) => resolving.take_outbox(),
                    Phase::BindWaiting(bind) => bind.take_outbox(),
                    _ => Outbox::default(),
                };
                reject(&mut self.summary, out, Reply::TtlExpired)
            }
            Phase::UdpAssociated(_) => Outcome::Close(CloseReason::UdpIdleTimeout),
            Phase::Relaying(_) => Outcome::Close(CloseReason::IdleTimeout),
            Phase::Rejecting(_) => Outcome::Close(CloseReason::Rejected),
            Phase::Closed => Outcome::Wait,
        };
        match outcome {
            Outcome::Go(next) => {
                self.set_phase(next, ctx);
                self.drive(ctx)
            }
            Outcome::Close(reason) => Step::Close(reason),
            Outcome::Wait | Outcome::Again => Step::Wait,
        }
    }

    /// Apply a transition: the one place a phase changes (and is logged), and where each
    /// phase's deadline is set on entry.
    fn set_phase(&mut self, mut next: Phase<N>, ctx: &mut Ctx<'_, N>) {
        log::debug!("conn {}: {} -> {}", self.id, self.phase.name(), next.name());
        if let Some(after) = self.phase.deadline_for(&next, ctx.config) {
            ctx.rearm(&mut self.deadline, after);
        }
        // A rate-limited user's relay reads only what their buckets grant.
        if let Phase::Relaying(relay) = &mut next
            && let Some(user) = &self.summary.user
            && let Some(limit) = ctx.settings.rate_limits.get(&user.name)
        {
            relay.limit(limit, ctx.now);
        }
        self.phase = next;
    }

    /// What this connection did, for the access log and the metrics, as it closes.
    pub fn report(&self, reason: CloseReason, now: Instant) -> Report<'_> {
        let s = &self.summary;
        let (bytes_up, bytes_down) = match &self.phase {
            Phase::Relaying(relay) => relay.payload_bytes(),
            _ => (0, 0),
        };
        let udp = match &self.phase {
            Phase::UdpAssociated(udp) => Some(udp.stats()),
            _ => None,
        };
        Report {
            id: self.id,
            client: s.client_addr,
            user: s.user.as_deref().map(|u| u.name.as_str()),
            command: s.command,
            target: s.target.as_ref(),
            connected: s.connected,
            local: s.local,
            reply: s.reply,
            bytes_up,
            bytes_down,
            udp,
            duration: now.saturating_duration_since(s.started),
            reason,
        }
    }
}
