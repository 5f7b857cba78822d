//! The `Connecting` phase: Happy Eyeballs (RFC 8305) over the target's addresses.
//!
//! The addresses are ordered with the families interleaved, the preferred one first
//! (`policy::interleave_families`). The first attempt starts at once; the next one starts
//! when the *connection attempt delay* (`--connect-attempt-delay`, 250 ms) has passed without
//! a success, or at once when an attempt fails. Several attempts stay in flight, each an
//! [`Attempt`] with its own socket and upstream slot (so its own token: readiness goes to the
//! attempt it names). The first attempt that connects wins; dropping the phase closes the
//! others. One `--connect-timeout` bounds the whole phase.
//!
//! Timers: a connection has one deadline on the loop's heap. While connecting it is the
//! earlier of "start the next attempt" and "give up"; when it fires before the give-up time
//! it only starts the next attempt ([`Connecting::gave_up`] tells which).
//!
//! When every address has failed, or time is up, the reply comes from the most telling error
//! seen: a refusal beats an unreachable host, which beats a timeout (`policy::error_rank`).

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;

use crate::connect::Progress;
use crate::net::{EgressError, End, Net, Outbound, Readiness, Stream};
use crate::relay::{Direction, Outbox};
use crate::timer::Deadline;
use crate::token::{Side, UPSTREAM_SLOTS};
use crate::users::User;

use super::policy::{self, command_reply};
use super::relaying::Relay;
use super::request::{Carry, Known};
use super::{Ctx, Outcome, Phase, Resolution, Summary, reject};
use crate::protocol::Reply;

/// One connect in flight.
struct Attempt<S> {
    end: End<S>,
    addr: SocketAddr,
    /// Its upstream slot: events for this attempt carry `Side::Upstream(slot)`.
    slot: u8,
}

/// The addresses still to try, the attempts in flight, and what the request carries.
pub struct Connecting<S> {
    untried: VecDeque<SocketAddr>,
    /// The target's port (for addresses that arrive late).
    port: u16,
    /// Address families whose DNS answers are still to come: while any is, running out of
    /// addresses is not the end.
    awaiting: u8,
    /// Why addresses that arrived were unusable (egress rules, `--bind-out`'s family): the
    /// reply if no address was ever usable.
    unusable: Option<Reply>,
    attempts: Vec<Attempt<S>>,
    /// The most telling failure so far (the reply when every address has failed).
    best_error: Option<io::Error>,
    /// When the whole phase gives up: the connection's deadline on entry (`--connect-timeout`).
    gives_up_at: Option<Instant>,
    /// When the next attempt starts if none has connected by then.
    next_attempt_at: Option<Instant>,
    /// Where the search for the next attempt's slot starts.
    next_slot: u8,
    /// How every attempt's socket is set up (the connection's egress, resolved).
    outbound: Outbound,
    /// The user whose destination rules apply on top of the global ones (late addresses too).
    user: Option<Arc<User>>,
    carry: Carry,
}

/// Begin connecting: apply the egress rules to every address the connect could use (after
/// resolution, so a name cannot smuggle a denied address), then try the rest in Happy Eyeballs
/// order, each attempt from a socket set up as `outbound` says. More addresses may arrive
/// later (`known.awaiting` families).
pub fn begin<N: Net>(
    known: Known,
    carry: Carry,
    outbound: Outbound,
    ctx: &mut Ctx<'_, N>,
    summary: &mut Summary,
) -> Outcome<N> {
    let mut connecting = Connecting {
        untried: VecDeque::new(),
        port: known.port,
        awaiting: known.awaiting,
        unusable: None,
        attempts: Vec::new(),
        best_error: None,
        gives_up_at: known.gives_up_at,
        next_attempt_at: None,
        next_slot: 0,
        outbound,
        user: summary.user.clone(),
        carry,
    };
    connecting.add_addresses(known.ips, ctx);
    if connecting.untried.is_empty() && connecting.awaiting == 0 {
        let reply = connecting.unusable.unwrap_or(Reply::GeneralFailure);
        return reject(summary, connecting.take_outbox(), reply);
    }
    Outcome::Go(Phase::Connecting(Box::new(connecting)))
}

impl<S: Stream> Connecting<S> {
    pub fn buffered_bytes(&self) -> usize {
        self.carry.buffered_bytes()
    }

    pub fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.carry.out)
    }

    /// Add addresses to try: those the egress rules (global and the user's) and the source
    /// address's family allow, interleaved by family with the ones still untried.
    fn add_addresses<N: Net>(&mut self, ips: Vec<IpAddr>, ctx: &Ctx<'_, N>) {
        let addrs: Vec<SocketAddr> = ips.into_iter().map(|ip| SocketAddr::new(ip, self.port)).collect();
        let before = addrs.len();
        let rules = &ctx.settings.rules;
        match policy::usable_destinations(addrs, rules, self.user.as_deref(), self.outbound.from) {
            Ok(usable) => {
                if usable.len() < before {
                    log::debug!(
                        "conn {}: {} of {before} addresses not usable",
                        ctx.conn,
                        before - usable.len()
                    );
                }
                let all = self.untried.drain(..).chain(usable).collect();
                self.untried = policy::interleave_families(all, ctx.config.prefer_family.v6_first()).into();
            }
            Err(reply) => {
                if reply == Reply::NotAllowedByRuleset {
                    log::info!("conn {}: destination denied by rules", ctx.conn);
                }
                self.unusable.get_or_insert(reply);
            }
        }
    }

    /// A family's DNS answer arrived after connecting began: its addresses join the untried.
    pub fn on_late_answer<N: Net>(&mut self, answer: Resolution, ctx: &Ctx<'_, N>) -> Outcome<N> {
        self.awaiting = self.awaiting.saturating_sub(1);
        if let Resolution::Family(_, Ok(ips)) = answer {
            self.add_addresses(ips, ctx);
        }
        // The loop drives the connection next: a new address starts at once if nothing is in
        // flight, and running out now ends the phase.
        Outcome::Wait
    }

    /// Readiness for upstream slot `slot`: the attempt that has it, if any is still open.
    pub fn on_ready(&mut self, slot: u8, news: Readiness) {
        if let Some(attempt) = self.attempts.iter_mut().find(|a| a.slot == slot) {
            attempt.end.ready.add(news);
        }
    }

    /// Whether the phase's time is up at `now` (otherwise a deadline that fired was the
    /// connection attempt delay).
    pub fn gave_up(&self, now: Instant) -> bool {
        self.gives_up_at.is_none_or(|at| now >= at)
    }

    /// The reply when time is up: the most telling error any attempt met, unless that says
    /// less than the timeout itself.
    pub fn reply_out_of_time(&self) -> Reply {
        match &self.best_error {
            Some(e) if policy::error_rank(e) > policy::error_rank(&io::ErrorKind::TimedOut.into()) => {
                policy::reply_for_error(e)
            }
            _ => Reply::TtlExpired,
        }
    }

    /// Check the attempts that were reported ready, start new ones when their time has come,
    /// and relay through the first that connects.
    pub fn drive<N: Net<Stream = S>>(
        &mut self,
        deadline: &mut Deadline,
        ctx: &mut Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Outcome<N> {
        let gives_up_at = *self.gives_up_at.get_or_insert(deadline.at);
        let mut failed = false;
        let mut i = 0;
        while i < self.attempts.len() {
            let attempt = &mut self.attempts[i];
            if !attempt.end.ready.any() {
                i += 1;
                continue;
            }
            match attempt.end.socket.connect_progress() {
                Progress::Pending => {
                    attempt.end.ready = Readiness::NONE;
                    i += 1;
                }
                Progress::Connected => {
                    let winner = self.attempts.swap_remove(i);
                    return self.relay_through(winner, ctx, summary);
                }
                Progress::Failed(e) => {
                    log::debug!("conn {}: connect to {} failed: {e}", ctx.conn, attempt.addr);
                    // Dropping the attempt closes its socket.
                    self.attempts.swap_remove(i);
                    self.note_failure(e);
                    failed = true;
                }
            }
        }
        let due = self.next_attempt_at.is_some_and(|at| ctx.now >= at);
        if (self.attempts.is_empty() || failed || due)
            && let Err(e) = self.start_next_attempt(ctx)
        {
            // Every attempt would fail the same way: the configuration is at fault, not the
            // target. Say what to fix, and fail now with a general failure.
            log::warn!("conn {}: outbound socket: {e}", ctx.conn);
            return reject(summary, self.take_outbox(), Reply::GeneralFailure);
        }
        if self.attempts.is_empty() && self.awaiting == 0 {
            let reply = match (&self.best_error, self.unusable) {
                (Some(e), _) => policy::reply_for_error(e),
                (None, Some(reply)) => reply,
                (None, None) => Reply::GeneralFailure,
            };
            return reject(summary, self.take_outbox(), reply);
        }
        // Nothing in flight while a family's answer is awaited: the timeout still bounds it.
        let wake_at = self.next_attempt_at.map_or(gives_up_at, |at| at.min(gives_up_at));
        ctx.rearm_at(deadline, wake_at);
        Outcome::Wait
    }

    fn note_failure(&mut self, error: io::Error) {
        let better = self
            .best_error
            .as_ref()
            .is_none_or(|best| policy::error_rank(&error) >= policy::error_rank(best));
        if better {
            self.best_error = Some(error);
        }
    }

    /// Start the next untried address (skipping those whose connect fails at once: no route,
    /// no descriptors), and schedule the one after it, unless every slot is busy. `Err`: the
    /// socket could not be set up as the egress asks ([`EgressError`]).
    fn start_next_attempt<N: Net<Stream = S>>(&mut self, ctx: &mut Ctx<'_, N>) -> Result<(), io::Error> {
        self.next_attempt_at = None;
        if self.attempts.len() >= usize::from(UPSTREAM_SLOTS) {
            return Ok(()); // the next attempt starts when one of these fails
        }
        while let Some(addr) = self.untried.pop_front() {
            let slot = self.free_slot();
            match ctx.net.connect(addr, &self.outbound, ctx.socket_id(Side::Upstream(slot))) {
                Ok(socket) => {
                    log::debug!("conn {}: connecting to {addr} (slot {slot})", ctx.conn);
                    self.attempts.push(Attempt { end: End::new(socket, Readiness::NONE), addr, slot });
                    if !self.untried.is_empty() && self.attempts.len() < usize::from(UPSTREAM_SLOTS) {
                        self.next_attempt_at = Some(ctx.now + ctx.config.connect_attempt_delay);
                    }
                    return Ok(());
                }
                Err(e) if EgressError::of(&e).is_some() => return Err(e),
                Err(e) => {
                    log::debug!("conn {}: connect to {addr} failed at once: {e}", ctx.conn);
                    self.note_failure(e);
                }
            }
        }
        Ok(())
    }

    /// A slot no attempt in flight uses, the next one round robin (so a late event for a
    /// closed attempt is unlikely to land on a new one; and harmless if it does: readiness is
    /// a hint).
    fn free_slot(&mut self) -> u8 {
        loop {
            let slot = self.next_slot;
            self.next_slot = (slot + 1) % UPSTREAM_SLOTS;
            if !self.attempts.iter().any(|a| a.slot == slot) {
                return slot;
            }
        }
    }

    /// The winner: reply with its local address (BND.ADDR) and start relaying; the replies
    /// still queued go first to the client, the early payload first to the target.
    fn relay_through<N: Net<Stream = S>>(
        &mut self,
        winner: Attempt<S>,
        ctx: &Ctx<'_, N>,
        summary: &mut Summary,
    ) -> Outcome<N> {
        log::debug!("conn {}: connected to {}", ctx.conn, winner.addr);
        let bound = winner.end.socket.local_addr().ok();
        let Carry { mut out, early } = std::mem::take(&mut self.carry);
        out.queue(&command_reply(summary.dialect, Reply::Succeeded, bound));
        summary.reply = Some(Reply::Succeeded);
        summary.upstream_connected = Some(ctx.now);
        summary.connected = Some(winner.addr);
        summary.local = bound;
        let mut upstream = winner.end;
        upstream.ready.writable = true;
        if let Err(e) = upstream.socket.set_keepalive(ctx.config.tcp_keepalive) {
            log::debug!("conn {}: TCP keepalive on the upstream: {e}", ctx.conn);
        }
        let control = out.pending();
        Outcome::Go(Phase::Relaying(Relay::new(
            upstream,
            winner.slot,
            Direction::with_queued(early),
            Direction::with_queued(out),
            control,
        )))
    }
}
