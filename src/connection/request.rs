//! Carrying out a parsed request, whichever dialect it came in: pick the phase that serves
//! the command, and the `Resolving` phase for commands whose target is a domain name.

use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::dns::Family;
use crate::net::{End, Net, Stream};
use crate::protocol::{Command, Reply, TargetAddr};
use crate::relay::Outbox;
use crate::resolver::{self, NameCheck};
use crate::timer::Deadline;

use super::policy;
use super::{Ctx, Outcome, Phase, Resolution, Summary, bind, connecting, reject, udp};

/// What a request carries from phase to phase until relaying begins: replies queued for the
/// client and not yet written, and early payload the client sent behind its request.
#[derive(Debug, Default)]
pub struct Carry {
    pub out: Outbox,
    pub early: Outbox,
}

impl Carry {
    pub fn buffered_bytes(&self) -> usize {
        self.out.capacity() + self.early.capacity()
    }
}

/// RFC 8305 §3: when the A answer comes first, wait this long for AAAA before connecting.
pub const RESOLUTION_DELAY: Duration = Duration::from_millis(50);

/// Begin carrying out `command` toward `target`.
pub fn start<N: Net>(
    command: Command,
    target: TargetAddr,
    carry: Carry,
    client: &End<N::Stream>,
    ctx: &mut Ctx<'_, N>,
    summary: &mut Summary,
) -> Outcome<N> {
    log::debug!("conn {}: {:?} {}", ctx.conn, command, target);
    summary.requested.get_or_insert(ctx.now);
    summary.target = Some(target.clone());
    summary.command = Some(command);
    // The connection counts for its client and its user from here on (`src/usage.rs`).
    let client_cap = ctx.settings.max_connections_per_client;
    match ctx.usage.acquire(summary.client_addr.ip(), client_cap, summary.user.as_deref()) {
        Ok(held) => summary.held = Some(Box::new(held)),
        Err(refusal) => {
            log::info!("conn {}: refused: {refusal}", ctx.conn);
            return reject(summary, carry.out, Reply::NotAllowedByRuleset);
        }
    }
    if command == Command::UdpAssociate {
        return udp::begin(target.port(), carry.out, client, ctx, summary);
    }
    let (ip, port) = match target {
        TargetAddr::Ip(addr) => (addr.ip(), addr.port()),
        TargetAddr::Domain(host, port) => match resolver::check_name(&host) {
            NameCheck::Literal(ip) => (ip, port),
            NameCheck::Invalid => return reject(summary, carry.out, Reply::HostUnreachable),
            NameCheck::Lookup => {
                ctx.names.lookup(&host, ctx.key, ctx.conn, ctx.now);
                return Outcome::Go(Phase::Resolving(Resolving::new(command, port, carry)));
            }
        },
    };
    serve(command, Known { ips: vec![ip], port, awaiting: 0, gives_up_at: None }, carry, client, ctx, summary)
}

/// The target's addresses known so far.
pub struct Known {
    pub ips: Vec<IpAddr>,
    pub port: u16,
    /// Address families whose answers are still to come (and may add addresses).
    pub awaiting: u8,
    /// When the connect timeout ends, if the connection's deadline no longer says (it was
    /// moved to the resolution delay); `None`: the deadline says.
    pub gives_up_at: Option<Instant>,
}

/// The target's addresses are known: connect to them, or (BIND) listen for one of them.
fn serve<N: Net>(
    command: Command,
    known: Known,
    carry: Carry,
    client: &End<N::Stream>,
    ctx: &mut Ctx<'_, N>,
    summary: &mut Summary,
) -> Outcome<N> {
    let egress = policy::egress(ctx.settings, summary.user.as_deref());
    let incoming = || client.socket.local_addr().ok().map(|a| a.ip());
    if command == Command::Bind {
        // Listen where the peer can reach us: toward the first address it may come from.
        let toward = known.ips[0];
        let local = incoming().map(crate::acl::canonical);
        let from = policy::outbound(&egress, || local).from;
        return bind::begin(known.ips, toward, from, local, carry, ctx, summary);
    }
    let outbound = policy::outbound(&egress, incoming);
    connecting::begin(known, carry, outbound, ctx, summary)
}

/// One address family's answer, as far as it has come.
#[derive(Debug, Default)]
enum FamilyAnswer {
    #[default]
    Pending,
    /// Addresses (possibly none: the name has no address of this family).
    Got(Vec<IpAddr>),
    /// The lookup failed (logged when it came).
    Failed,
}

/// `Resolving`: the command waits for the target's addresses; what it carries waits with it.
///
/// With the resolver threads every address comes at once. With the in-loop DNS client the
/// IPv6 and IPv4 answers come apart, and Happy Eyeballs starts on the first (RFC 8305 §3):
/// AAAA first → connect at once (A joins the attempts when it comes); A first → wait at most
/// [`RESOLUTION_DELAY`] for AAAA, then connect with A (AAAA may still join). BIND waits for
/// both, since any of the addresses may be the peer.
#[derive(Debug)]
pub struct Resolving {
    command: Command,
    port: u16,
    carry: Carry,
    v6: FamilyAnswer,
    v4: FamilyAnswer,
    /// When the connect timeout ends (the connection's deadline on entry).
    gives_up_at: Option<Instant>,
    /// Set while IPv4 addresses wait the resolution delay for IPv6.
    delay_until: Option<Instant>,
}

impl Resolving {
    fn new(command: Command, port: u16, carry: Carry) -> Resolving {
        Resolving {
            command,
            port,
            carry,
            v6: FamilyAnswer::Pending,
            v4: FamilyAnswer::Pending,
            gives_up_at: None,
            delay_until: None,
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.carry.buffered_bytes()
    }

    /// The queued replies (for an error reply that must follow them).
    pub fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.carry.out)
    }

    /// Whether the connect timeout has passed at `now` (otherwise a deadline that fired was
    /// the resolution delay).
    pub fn gave_up(&self, now: Instant) -> bool {
        self.delay_until.is_none() || self.gives_up_at.is_none_or(|at| now >= at)
    }

    /// An answer arrived: serve the command with it, wait for the other family, or reply 04
    /// when the name has no address at all.
    pub fn on_answer<N: Net>(
        &mut self,
        answer: Resolution,
        client: &End<N::Stream>,
        deadline: &mut Deadline,
        ctx: &mut Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Outcome<N> {
        let gives_up_at = *self.gives_up_at.get_or_insert(deadline.at);
        match answer {
            Resolution::All(Ok(ips)) => {
                let (v6, v4): (Vec<IpAddr>, Vec<IpAddr>) = ips.into_iter().partition(IpAddr::is_ipv6);
                // The resolver's order is kept within each family; the first family first.
                self.v6 = FamilyAnswer::Got(v6);
                self.v4 = FamilyAnswer::Got(v4);
            }
            Resolution::All(Err(e)) => {
                log::debug!("conn {}: lookup failed: {e}", ctx.conn);
                self.v6 = FamilyAnswer::Failed;
                self.v4 = FamilyAnswer::Failed;
            }
            Resolution::Family(family, result) => {
                if let Err(e) = &result {
                    log::debug!("conn {}: {family:?} lookup failed: {e}", ctx.conn);
                }
                let slot = if family == Family::V6 { &mut self.v6 } else { &mut self.v4 };
                *slot = match result {
                    Ok(ips) => FamilyAnswer::Got(ips),
                    Err(_) => FamilyAnswer::Failed,
                };
            }
        }
        let v6_pending = matches!(self.v6, FamilyAnswer::Pending);
        let v4_pending = matches!(self.v4, FamilyAnswer::Pending);
        let has = |answer: &FamilyAnswer| matches!(answer, FamilyAnswer::Got(ips) if !ips.is_empty());
        if self.command == Command::Bind && (v6_pending || v4_pending) {
            return Outcome::Wait;
        }
        if has(&self.v6) {
            return self.serve_now(client, ctx, summary);
        }
        if has(&self.v4) && v6_pending {
            // A came first: give AAAA a moment (RFC 8305 §3).
            let until = ctx.now + RESOLUTION_DELAY;
            self.delay_until = Some(until);
            ctx.rearm_at(deadline, until.min(gives_up_at));
            return Outcome::Wait;
        }
        if has(&self.v4) {
            return self.serve_now(client, ctx, summary);
        }
        if v6_pending || v4_pending {
            return Outcome::Wait;
        }
        // Both families answered, with no address: the name cannot be reached.
        reject(summary, self.take_outbox(), Reply::HostUnreachable)
    }

    /// The resolution delay ended without an AAAA answer: connect with the A answer.
    pub fn on_resolution_delay<N: Net>(
        &mut self,
        client: &End<N::Stream>,
        ctx: &mut Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Outcome<N> {
        self.delay_until = None;
        self.serve_now(client, ctx, summary)
    }

    /// Serve with every address known now; families still pending join later.
    fn serve_now<N: Net>(
        &mut self,
        client: &End<N::Stream>,
        ctx: &mut Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Outcome<N> {
        let mut ips = Vec::new();
        let mut awaiting = 0;
        for answer in [&mut self.v6, &mut self.v4] {
            match std::mem::take(answer) {
                FamilyAnswer::Got(got) => ips.extend(got),
                FamilyAnswer::Pending => awaiting += 1,
                FamilyAnswer::Failed => {}
            }
        }
        let carry = std::mem::take(&mut self.carry);
        let known = Known { ips, port: self.port, awaiting, gives_up_at: self.gives_up_at };
        serve(self.command, known, carry, client, ctx, summary)
    }
}
