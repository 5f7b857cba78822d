//! The `Relaying` phase: the upstream socket and both relay directions, pumped by the one
//! relay pump ([`crate::relay::pump`]) on the configured path (copy or splice).

use crate::net::{End, Net, Readiness, Stream};
use crate::relay::{self, Direction};
use crate::timer::Deadline;

use super::{CloseReason, Ctx, Outcome};

/// The quantum: bytes one relay may read per direction in one turn before it yields the loop
/// to the others (`crate::server::schedule`). A connection woken behind N busy relays waits
/// for at most N × 2 quanta of relaying.
pub const QUANTUM: usize = 64 * 1024;

/// A relay: the upstream (the CONNECT target, or the peer that connected to a BIND) and the
/// two directions between it and the client.
pub struct Relay<S> {
    upstream: End<S>,
    /// The upstream's slot: events for other upstream slots are stale (closed attempts).
    slot: u8,
    /// Client → upstream.
    up: Direction,
    /// Upstream → client.
    down: Direction,
    /// SOCKS reply bytes queued in `down` when relaying began: not payload.
    control: u32,
}

impl<S: Stream> Relay<S> {
    /// `up` and `down` may hold queued bytes (early payload, replies); `control` of `down`'s
    /// are SOCKS replies, not counted as relayed payload.
    pub fn new(upstream: End<S>, slot: u8, up: Direction, down: Direction, control: usize) -> Relay<S> {
        Relay { upstream, slot, up, down, control: control as u32 }
    }

    pub fn on_ready(&mut self, slot: u8, news: Readiness) {
        if slot == self.slot {
            self.upstream.ready.add(news);
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.up.buffered_capacity() + self.down.buffered_capacity()
    }

    /// Payload bytes delivered (up, down).
    pub fn payload_bytes(&self) -> (u64, u64) {
        (self.up.delivered, self.down.delivered.saturating_sub(u64::from(self.control)))
    }

    /// Pump both directions, client→upstream first, each within its budget.
    pub fn drive<N: Net<Stream = S>>(
        &mut self,
        client: &mut End<S>,
        deadline: &mut Deadline,
        ctx: &mut Ctx<'_, N>,
    ) -> Outcome<N> {
        let (mut budget_up, mut budget_down) = (QUANTUM, QUANTUM);
        let mut movers = ctx.movers();
        // The direction that finishes second ends the relay: its FIN goes with the close.
        self.up.last = self.down.is_done();
        let up = relay::pump(client, &mut self.upstream, &mut self.up, &mut budget_up, &mut movers);
        self.down.last = self.up.is_done();
        let down = relay::pump(&mut self.upstream, client, &mut self.down, &mut budget_down, &mut movers);
        let progress = match (up, down) {
            (Ok(a), Ok(b)) => a || b,
            (Err(e), _) | (_, Err(e)) => {
                log::debug!("conn {}: relay ended: {e}", ctx.conn);
                return Outcome::Close(CloseReason::of_relay_error(&e));
            }
        };
        if self.up.is_done() && self.down.is_done() {
            return Outcome::Close(CloseReason::Done);
        }
        if !progress && self.peer_reset_while_paused(client) {
            return Outcome::Close(CloseReason::Reset);
        }
        if progress {
            ctx.rearm(deadline, ctx.config.idle_timeout);
        }
        // Work is left only where the quantum ran out with the source still readable and
        // nothing waiting for the destination (then the destination's edge wakes us instead).
        let more_up = budget_up == 0 && client.ready.readable && !self.up.has_pending();
        let more_down = budget_down == 0 && self.upstream.ready.readable && !self.down.has_pending();
        if more_up || more_down { Outcome::Again } else { Outcome::Wait }
    }

    /// A source whose reads are paused by backpressure would not see its peer's reset until
    /// the other side drains or the idle timeout fires. A reset arrives as an error event,
    /// which sets the readable flag: ask the socket for its pending error.
    fn peer_reset_while_paused(&self, client: &End<S>) -> bool {
        let client_reset = self.up.has_pending()
            && client.ready.readable
            && matches!(client.socket.take_error(), Ok(Some(_)));
        let upstream_reset = self.down.has_pending()
            && self.upstream.ready.readable
            && matches!(self.upstream.socket.take_error(), Ok(Some(_)));
        client_reset || upstream_reset
    }
}
