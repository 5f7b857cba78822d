//! Fairness inside one loop: which connections are driven in a pass, in what order, and how
//! much work one pass may do ([`RunQueue`]). The policy and its bounds are written down in
//! `docs/architecture.md`, "Fairness: how one pass is bounded":
//!
//! * A connection is **woken** by an event for one of its sockets, and **requeued** when its
//!   turn ended with work left (a relay spent its quantum while a source was still
//!   readable). A connection is in the queue at most once: waking one already queued changes
//!   nothing, however many events it gets.
//! * Woken connections wait in the **fresh** queue, requeued ones in the **busy** queue, each
//!   first in, first out. A connection that uses up its quantum is busy from then on until a
//!   turn ends without leftover work; one that only ever needs a little (a ping, an SSH
//!   keystroke, a handshake) is always fresh.
//! * A pass gives **turns**: fresh ones first, until they have spent half of the pass's
//!   budget ([`PASS_BUDGET`]), then busy ones until the whole budget is spent, then fresh
//!   ones again if budget is left. A turn is charged the payload bytes it delivered plus a
//!   fixed [`TURN_COST`], and reads at most one quantum per relay direction
//!   (`connection::relaying::QUANTUM`). Only connections queued when the pass's turns began
//!   get one, so **no connection is driven twice in one pass** by its turn: one requeued
//!   during its own turn waits for the next pass.
//! * What is left keeps its place, and the loop **polls again** (without sleeping) before the
//!   next pass, so new readiness is seen after every bounded pass.
//!
//! So a newly woken connection waits for the rest of the pass in progress and then at most
//! for the fresh connections woken before it; neither kind starves the other, since each gets
//! at least half of every pass's budget while the other has work.
//!
//! Entries carry the connection's id: a connection that closed while queued leaves a stale
//! entry, which is skipped, so it can never give a turn to a newer connection that reused
//! the slab key.

use std::collections::VecDeque;

/// What one pass may spend on turns before the loop polls again, in bytes relayed (checked
/// before each turn, so the last turn can go over it by what that one turn moves).
pub const PASS_BUDGET: usize = 256 * 1024;
/// What every turn is charged besides the payload it delivered: its fixed cost (a few
/// syscalls, a handshake's parsing) counted as this much relaying. It bounds the turns of
/// one pass to `PASS_BUDGET / TURN_COST` (64) even when none of them relays a byte.
pub const TURN_COST: usize = 4 * 1024;

/// The loop's run queue: connections waiting for a turn.
#[derive(Debug, Default)]
pub struct RunQueue {
    /// (slab key, connection id) woken by events, oldest first. Both queues may hold stale
    /// entries (the connection closed, or the key was reused): [`RunQueue::next_turn`] skips
    /// them.
    fresh: VecDeque<(usize, u64)>,
    /// (slab key, connection id) whose last turn left work, oldest first.
    busy: VecDeque<(usize, u64)>,
    /// For each slab key, the id of the connection queued under it (0: none; ids start at
    /// 1). One entry per key ever used, so the check is an index, not a search.
    queued: Vec<u64>,
    /// Turns this pass may still give from each queue (their lengths when the turns began).
    fresh_turns: usize,
    busy_turns: usize,
    /// What this pass's turns have been charged so far.
    spent: usize,
}

impl RunQueue {
    /// An event for connection `id` at `key`: queue it for a turn (as fresh), unless it is
    /// queued already.
    pub fn wake(&mut self, key: usize, id: u64) {
        if self.mark(key, id) {
            self.fresh.push_back((key, id));
        }
    }

    /// Connection `id`'s turn (or a drive for a deadline or an answer) left work: queue it
    /// as busy, unless it is queued already.
    pub fn requeue(&mut self, key: usize, id: u64) {
        if self.mark(key, id) {
            self.busy.push_back((key, id));
        }
    }

    /// Record that `id` is queued under `key`; `false` if it already was.
    fn mark(&mut self, key: usize, id: u64) -> bool {
        if self.queued.len() <= key {
            self.queued.resize(key + 1, 0);
        }
        if self.queued[key] == id {
            return false;
        }
        self.queued[key] = id;
        true
    }

    /// Whether any connection waits for a turn (then the loop must not sleep in `poll`).
    pub fn has_work(&self) -> bool {
        !self.fresh.is_empty() || !self.busy.is_empty()
    }

    /// Start the turns of one pass: every connection queued now may get one, while
    /// [`PASS_BUDGET`] lasts.
    pub fn begin_pass(&mut self) {
        self.fresh_turns = self.fresh.len();
        self.busy_turns = self.busy.len();
        self.spent = 0;
    }

    /// The next connection to drive in this pass, taken out of the queue (requeue it if its
    /// turn leaves work), or `None` when the pass has given every turn it may or spent its
    /// budget.
    pub fn next_turn(&mut self) -> Option<(usize, u64)> {
        while self.spent < PASS_BUDGET {
            // Fresh first, until they have had half the budget while busy ones wait.
            let fresh_first = self.fresh_turns > 0 && (self.spent < PASS_BUDGET / 2 || self.busy_turns == 0);
            let entry = if fresh_first {
                self.fresh_turns -= 1;
                self.fresh.pop_front()
            } else if self.busy_turns > 0 {
                self.busy_turns -= 1;
                self.busy.pop_front()
            } else {
                return None;
            };
            let Some((key, id)) = entry else { continue };
            if self.queued.get(key) == Some(&id) {
                self.queued[key] = 0;
                return Some((key, id));
            }
            // Stale: that connection closed while queued (its key may be someone else's now).
        }
        None
    }

    /// Charge the last turn to the pass's budget: the payload bytes it delivered and
    /// [`TURN_COST`].
    pub fn charge(&mut self, bytes: u64) {
        let bytes = usize::try_from(bytes).unwrap_or(usize::MAX);
        self.spent = self.spent.saturating_add(bytes).saturating_add(TURN_COST);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The turns one pass gives, each charged `cost(key)` bytes; `again(key)` requeues it.
    fn pass(q: &mut RunQueue, cost: impl Fn(usize) -> u64, again: impl Fn(usize) -> bool) -> Vec<usize> {
        let mut turns = Vec::new();
        q.begin_pass();
        while let Some((key, id)) = q.next_turn() {
            turns.push(key);
            q.charge(cost(key));
            if again(key) {
                q.requeue(key, id);
            }
        }
        turns
    }

    /// Connection ids in these tests: key + 100.
    fn id(key: usize) -> u64 {
        key as u64 + 100
    }

    #[test]
    fn a_connection_is_queued_once_however_often_it_is_woken() {
        let mut q = RunQueue::default();
        for _ in 0..5 {
            q.wake(3, id(3));
            q.wake(1, id(1));
            q.requeue(3, id(3));
        }
        assert_eq!(pass(&mut q, |_| 0, |_| false), [3, 1]);
        assert!(!q.has_work());
    }

    #[test]
    fn one_turn_per_pass_and_round_robin_over_those_with_work_left() {
        let mut q = RunQueue::default();
        for key in 0..3 {
            q.wake(key, id(key));
        }
        // Every turn leaves work: each is requeued during its own turn, and waits for the
        // next pass instead of being driven twice in this one.
        assert_eq!(pass(&mut q, |_| 1000, |_| true), [0, 1, 2]);
        assert_eq!(pass(&mut q, |_| 1000, |_| true), [0, 1, 2]);
        // An event for a connection already queued does not move it.
        q.wake(2, id(2));
        assert_eq!(pass(&mut q, |_| 1000, |key| key != 1), [0, 1, 2]);
        assert_eq!(pass(&mut q, |_| 1000, |_| false), [0, 2]);
        assert!(!q.has_work());
    }

    #[test]
    fn a_fresh_connection_goes_before_busy_ones() {
        let quantum = 64 * 1024;
        let bulk = |_| quantum;
        // Eight bulk relays with work left: a pass has room for four 64 KiB turns (with their
        // fixed cost, the fourth overshoots the 256 KiB budget).
        let mut q = RunQueue::default();
        for key in 0..8 {
            q.requeue(key, id(key));
        }
        assert_eq!(pass(&mut q, bulk, |_| true), [0, 1, 2, 3]);
        // A ping arrives: it is served first in the next pass, ahead of the bulk relays.
        q.wake(9, id(9));
        assert_eq!(pass(&mut q, |key| if key == 9 { 64 } else { quantum }, |key| key != 9), [9, 4, 5, 6, 7]);
        assert_eq!(pass(&mut q, bulk, |_| true), [0, 1, 2, 3]);
    }

    #[test]
    fn neither_kind_starves_the_other() {
        let quantum = 64 * 1024;
        // Busy relays in the queue, and a flood of fresh connections that each relay a
        // quantum and are done: busy ones still get half of every pass.
        let mut q = RunQueue::default();
        for key in 0..4 {
            q.requeue(key, id(key));
        }
        let mut served = Vec::new();
        for round in 0..4 {
            for key in 0..10 {
                q.wake(1000 + round * 10 + key, id(1000 + round * 10 + key));
            }
            let turns = pass(&mut q, |_| quantum, |key| key < 1000);
            assert!(turns.iter().filter(|&&key| key >= 1000).count() >= 1, "fresh turns in {turns:?}");
            served.extend(turns.into_iter().filter(|&key| key < 1000));
        }
        for key in 0..4 {
            assert!(served.contains(&key), "busy {key} got a turn in 4 passes: {served:?}");
        }
        // And busy relays that always have work cannot keep a fresh connection waiting
        // for more than the pass in progress.
        let mut q = RunQueue::default();
        for key in 0..100 {
            q.requeue(key, id(key));
        }
        pass(&mut q, |_| quantum, |_| true);
        q.wake(500, id(500));
        assert_eq!(pass(&mut q, |_| quantum, |_| true)[0], 500);
    }

    #[test]
    fn the_budget_bounds_a_pass_and_the_rest_keeps_its_place() {
        let mut q = RunQueue::default();
        for key in 0..1000 {
            q.wake(key, id(key));
        }
        // Turns that relay nothing (handshakes) cost their fixed cost: 64 per pass.
        let turns = pass(&mut q, |_| 0, |_| false);
        assert_eq!(turns, (0..PASS_BUDGET / TURN_COST).collect::<Vec<_>>());
        assert_eq!(pass(&mut q, |_| 0, |_| false), (64..128).collect::<Vec<_>>(), "then the next 64");
        // One turn may overshoot; the next turn is not given.
        let mut q = RunQueue::default();
        q.requeue(1, id(1));
        q.requeue(2, id(2));
        assert_eq!(pass(&mut q, |_| 1 << 20, |_| true), [1]);
        assert_eq!(pass(&mut q, |_| 1 << 20, |_| true), [2]);
    }

    #[test]
    fn a_stale_entry_never_gives_a_turn_to_the_key_s_next_connection() {
        let mut q = RunQueue::default();
        q.wake(4, 40);
        q.wake(5, 50);
        // Connection 40 closes while queued; key 4 is reused by connection 41, woken later.
        q.wake(4, 41);
        assert_eq!(pass(&mut q, |_| 0, |_| false), [5, 4]);
        let mut q = RunQueue::default();
        q.requeue(4, 40);
        q.wake(4, 41);
        q.begin_pass();
        assert_eq!(q.next_turn(), Some((4, 41)), "only the live connection gets the turn");
        assert_eq!(q.next_turn(), None);
        assert!(!q.has_work());
    }
}
