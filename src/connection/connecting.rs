//! The `Connecting` phase: connect attempts to the target's addresses.
//!
//! Shaped for several attempts in flight at once: each [`Attempt`] owns its socket and its
//! own upstream slot (so its own token), readiness is routed to the attempt whose slot it
//! names, and the first attempt that completes wins; dropping the phase closes the others.
//! Today's policy starts the next address only when no attempt is in flight (one at a time,
//! in the resolver's order), under one `--connect-timeout` for the whole phase. When every
//! address has failed the reply comes from the last error.

use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;

use crate::connect::Progress;
use crate::net::{End, Net, Readiness, Stream};
use crate::relay::{Direction, Outbox};
use crate::token::{Side, UPSTREAM_SLOTS};

use super::policy::{self, command_reply};
use super::relaying::Relay;
use super::request::Carry;
use super::{Ctx, Outcome, Phase, Summary, reject};
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
    attempts: Vec<Attempt<S>>,
    /// The most recent failure (the reply when every address has failed).
    last_error: Option<io::Error>,
    /// The slot the next attempt gets (round robin, so a late event for a closed attempt is
    /// unlikely to land on a new one; and harmless if it does: readiness is a hint).
    next_slot: u8,
    carry: Carry,
}

/// Begin connecting: apply the egress rules to every address the connect could use (after
/// resolution, so a name cannot smuggle a denied address), then try the rest in order.
pub fn begin<N: Net>(
    addrs: Vec<SocketAddr>,
    carry: Carry,
    ctx: &mut Ctx<'_, N>,
    summary: &mut Summary,
) -> Outcome<N> {
    let before = addrs.len();
    let addrs = match policy::usable_destinations(addrs, &ctx.config.rules, ctx.config.bind_out) {
        Ok(addrs) => addrs,
        Err(reply) => {
            if reply == Reply::NotAllowedByRuleset {
                log::info!("conn {}: destination denied by rules", ctx.conn);
            }
            return reject(summary, carry.out, reply);
        }
    };
    if addrs.len() < before {
        log::debug!("conn {}: {} of {before} addresses not usable", ctx.conn, before - addrs.len());
    }
    Outcome::Go(Phase::Connecting(Box::new(Connecting {
        untried: addrs.into(),
        attempts: Vec::new(),
        last_error: None,
        next_slot: 0,
        carry,
    })))
}

impl<S: Stream> Connecting<S> {
    pub fn buffered_bytes(&self) -> usize {
        self.carry.buffered_bytes()
    }

    pub fn take_outbox(&mut self) -> Outbox {
        std::mem::take(&mut self.carry.out)
    }

    /// Readiness for upstream slot `slot`: the attempt that has it, if any is still open.
    pub fn on_ready(&mut self, slot: u8, news: Readiness) {
        if let Some(attempt) = self.attempts.iter_mut().find(|a| a.slot == slot) {
            attempt.end.ready.add(news);
        }
    }

    /// Check the attempts that were reported ready, start new ones, and relay through the
    /// first that connects.
    pub fn drive<N: Net<Stream = S>>(&mut self, ctx: &mut Ctx<'_, N>, summary: &mut Summary) -> Outcome<N> {
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
                    self.last_error = Some(e);
                }
            }
        }
        self.start_attempts(ctx);
        if self.attempts.is_empty() {
            let reply = self.last_error.as_ref().map_or(Reply::GeneralFailure, policy::reply_for_error);
            return reject(summary, self.take_outbox(), reply);
        }
        Outcome::Wait
    }

    /// Start the next untried address while no attempt is in flight; an address whose
    /// connect fails at once (no route, no descriptors) is skipped.
    fn start_attempts<N: Net<Stream = S>>(&mut self, ctx: &mut Ctx<'_, N>) {
        while self.attempts.is_empty() {
            let Some(addr) = self.untried.pop_front() else { return };
            let slot = self.next_slot;
            self.next_slot = (slot + 1) % UPSTREAM_SLOTS;
            match ctx.net.connect(addr, ctx.config.bind_out, ctx.socket_id(Side::Upstream(slot))) {
                Ok(socket) => {
                    log::debug!("conn {}: connecting to {addr}", ctx.conn);
                    self.attempts.push(Attempt { end: End::new(socket, Readiness::NONE), addr, slot });
                }
                Err(e) => self.last_error = Some(e),
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
        let mut upstream = winner.end;
        upstream.ready.writable = true;
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
