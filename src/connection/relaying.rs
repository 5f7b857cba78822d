//! The `Relaying` phase: the upstream socket and both relay directions, pumped by the one
//! relay pump ([`crate::relay::pump`]) on the configured path (copy or splice).
//!
//! A relay of a rate-limited user holds a [`Throttle`]: each direction's budget is then what
//! its user's bucket grants (a bounded slice), the bytes not read go back, and a direction
//! whose grant is reserved for later is not read (backpressure: the bytes wait in the kernel)
//! until the loop wakes the relay for it (`src/ratelimit.rs`).

use std::sync::Arc;

use crate::net::{End, Net, Readiness, Stream};
use crate::ratelimit::{Throttle, UserLimit, Way};
use crate::relay::{self, Direction};
use crate::timer::Deadline;

use super::{CloseReason, Ctx, Outcome};

/// The quantum: bytes one relay may read per direction in one turn before it yields the loop
/// to the others (`crate::server::schedule`). A connection woken behind N busy relays waits
/// for at most N × 2 quanta of relaying.
pub const QUANTUM: usize = 64 * 1024;

/// The largest grant a rate-limited direction takes from its user's bucket at once
/// (`src/ratelimit.rs` sizes grants at a 64th of a second of the rate, up to this).
const MAX_GRANT: usize = 1 << 20;

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
    /// The user's rate limit (`None`: unlimited, nothing to check).
    throttle: Option<Box<Throttle>>,
}

impl<S: Stream> Relay<S> {
    /// `up` and `down` may hold queued bytes (early payload, replies); `control` of `down`'s
    /// are SOCKS replies, not counted as relayed payload.
    pub fn new(upstream: End<S>, slot: u8, up: Direction, down: Direction, control: usize) -> Relay<S> {
        Relay { upstream, slot, up, down, control: control as u32, throttle: None }
    }

    /// Read each way only what `limit`, the user's buckets, grants.
    pub fn limit(&mut self, limit: &Arc<UserLimit>, now: std::time::Instant) {
        self.throttle = Some(Box::new(Throttle::new(Arc::clone(limit), now)));
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
        let now = ctx.now;
        // A rate-limited relay reads what its grant allows, at most one quantum per turn: the
        // grant (up to a 64th of a second of the rate) outlives the turn, the quantum is the
        // loop's fairness bound.
        let mut opened = (0, 0);
        if let Some(throttle) = self.throttle.as_deref_mut() {
            opened.0 = throttle.open(Way::Up, wants(client, &self.up), now, MAX_GRANT);
            opened.1 = throttle.open(Way::Down, wants(&self.upstream, &self.down), now, MAX_GRANT);
            (budget_up, budget_down) = (opened.0.min(QUANTUM), opened.1.min(QUANTUM));
        }
        let given = (budget_up, budget_down);
        let mut movers = ctx.movers();
        // The direction that finishes second ends the relay: its FIN goes with the close.
        self.up.last = self.down.is_done();
        let up = relay::pump(client, &mut self.upstream, &mut self.up, &mut budget_up, &mut movers);
        self.down.last = self.up.is_done();
        let down = relay::pump(&mut self.upstream, client, &mut self.down, &mut budget_down, &mut movers);
        if let Some(throttle) = self.throttle.as_deref_mut() {
            // What is left of the grant: what it opened less what this turn read.
            let left = (opened.0 - (given.0 - budget_up), opened.1 - (given.1 - budget_down));
            throttle.settle(Way::Up, opened.0, left.0, !self.up.eof);
            throttle.settle(Way::Down, opened.1, left.1, !self.down.eof);
        }
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
        let (more_up, more_down) = match self.throttle.as_deref_mut() {
            // Work is left only where the quantum ran out with the source still readable and
            // nothing waiting for the destination (then the destination's edge wakes us instead).
            None => (
                budget_up == 0 && client.ready.readable && !self.up.has_pending(),
                budget_down == 0 && self.upstream.ready.readable && !self.down.has_pending(),
            ),
            Some(throttle) => {
                // A direction that would read on takes its next grant now: come back at once
                // if it is there, else (reserved) the loop wakes the relay when it is due.
                let more_up = budget_up == 0
                    && wants(client, &self.up)
                    && throttle.open(Way::Up, true, now, MAX_GRANT) > 0;
                let more_down = budget_down == 0
                    && wants(&self.upstream, &self.down)
                    && throttle.open(Way::Down, true, now, MAX_GRANT) > 0;
                // A waiting direction is woken by the loop, not polled; the idle deadline is
                // kept beyond its wake-up (a throttled relay is not idle).
                for way in [Way::Up, Way::Down] {
                    if let Some(at) = throttle.wake(way, now) {
                        ctx.timers.wake_at(at, ctx.key, ctx.conn);
                        let idle_end = at + ctx.config.idle_timeout;
                        if deadline.at < idle_end {
                            ctx.rearm_at(deadline, idle_end);
                        }
                    }
                }
                (more_up, more_down)
            }
        };
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

/// Whether a limited direction would read now: its source is readable, nothing waits for its
/// destination, and it has not ended (otherwise no grant is taken).
fn wants<S: Stream>(src: &End<S>, dir: &Direction) -> bool {
    src.ready.readable && !dir.has_pending() && !dir.eof
}
