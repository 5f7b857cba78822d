//! Deadlines for every connection, in one min-heap that sets the `poll` timeout.
//!
//! Each connection has exactly one deadline at a time: the end of its handshake, of its
//! connect, or of its idle period, depending on its phase. The heap is *lazily* cancelled:
//! moving a deadline later pushes nothing (the old entry fires early, sees the connection's
//! real deadline is later, and re-arms once), and moving it earlier pushes a new entry that
//! leaves the old one stale. A relay that moves bytes all day therefore costs one heap entry
//! per idle period, not one per read. Entries carry the connection's id so a fired
//! entry never touches a connection that reused the slab key.
//!
//! Beside the deadlines, a second heap holds **wake-ups**: "drive this connection at that
//! instant" (a rate-limited relay whose reserved grant falls due, `src/ratelimit.rs`). A
//! wake-up is not a deadline: it ends nothing, and the idle deadline stays where it is. Each
//! is pushed once per grant and simply drives the connection when due; one for a connection
//! that has gone (its id no longer at the key) is dropped.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::{Duration, Instant};

/// A connection's deadline bookkeeping, stored in the connection.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    /// When the current phase times out.
    pub at: Instant,
    /// The earliest heap entry still standing for this connection, if any.
    scheduled: Option<Instant>,
}

impl Deadline {
    pub fn new(at: Instant) -> Deadline {
        Deadline { at, scheduled: None }
    }
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Entry {
    at: Instant,
    key: usize,
    conn: u64,
}

/// The heap of pending deadlines, and the heap of wake-ups.
#[derive(Default)]
pub struct Timers {
    heap: BinaryHeap<Reverse<Entry>>,
    wakes: BinaryHeap<Reverse<Entry>>,
}

impl Timers {
    /// Set the connection's deadline to `at`, pushing a heap entry only when needed.
    pub fn set(&mut self, deadline: &mut Deadline, at: Instant, key: usize, conn: u64) {
        deadline.at = at;
        if deadline.scheduled.is_none_or(|scheduled| at < scheduled) {
            deadline.scheduled = Some(at);
            self.heap.push(Reverse(Entry { at, key, conn }));
        }
    }

    /// How long `poll` may sleep before the earliest entry is due.
    pub fn next_timeout(&self, now: Instant) -> Option<Duration> {
        self.next_deadline().map(|at| at.saturating_duration_since(now))
    }

    /// When the earliest entry (deadline or wake-up) is due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let deadline = self.heap.peek().map(|Reverse(entry)| entry.at);
        let wake = self.wakes.peek().map(|Reverse(entry)| entry.at);
        deadline.into_iter().chain(wake).min()
    }

    /// Drive connection `key` (id `conn`) at `at`, whatever its deadline.
    pub fn wake_at(&mut self, at: Instant, key: usize, conn: u64) {
        self.wakes.push(Reverse(Entry { at, key, conn }));
    }

    /// Pop one wake-up that is due at `now`: `(key, conn)`.
    pub fn pop_wake(&mut self, now: Instant) -> Option<(usize, u64)> {
        match self.wakes.peek() {
            Some(Reverse(entry)) if entry.at <= now => {
                let Reverse(entry) = self.wakes.pop()?;
                Some((entry.key, entry.conn))
            }
            _ => None,
        }
    }

    /// Pop one entry that is due at `now`: `(key, conn, entry_time)`.
    pub fn pop_due(&mut self, now: Instant) -> Option<(usize, u64, Instant)> {
        match self.heap.peek() {
            Some(Reverse(entry)) if entry.at <= now => {
                let Reverse(entry) = self.heap.pop()?;
                Some((entry.key, entry.conn, entry.at))
            }
            _ => None,
        }
    }

    /// Decide what a due entry means for the connection it names: `true` if the
    /// connection's deadline has really passed; otherwise re-arm for the real deadline.
    pub fn check(
        &mut self,
        deadline: &mut Deadline,
        entry_at: Instant,
        now: Instant,
        key: usize,
        conn: u64,
    ) -> bool {
        if deadline.scheduled != Some(entry_at) {
            return false; // stale: a newer, earlier entry stands for this connection
        }
        deadline.scheduled = None;
        if deadline.at <= now {
            return true;
        }
        let at = deadline.at;
        self.set(deadline, at, key, conn);
        false
    }

    /// Deadline entries (wake-ups apart).
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Wake-ups pending.
    pub fn wakes(&self) -> usize {
        self.wakes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn later_deadline_rearms_instead_of_pushing() {
        let start = Instant::now();
        let mut timers = Timers::default();
        let mut d = Deadline::new(start);
        timers.set(&mut d, start + Duration::from_secs(1), 3, 9);
        for i in 2..100 {
            timers.set(&mut d, start + Duration::from_secs(i), 3, 9);
        }
        assert_eq!(timers.len(), 1, "moving later pushes nothing");

        let now = start + Duration::from_secs(1);
        let (key, conn, at) = timers.pop_due(now).expect("due");
        assert_eq!((key, conn), (3, 9));
        assert!(!timers.check(&mut d, at, now, key, conn), "real deadline is later");
        assert_eq!(timers.next_timeout(now), Some(Duration::from_secs(98)));

        let now = start + Duration::from_secs(99);
        let (key, conn, at) = timers.pop_due(now).expect("due");
        assert!(timers.check(&mut d, at, now, key, conn));
    }

    #[test]
    fn earlier_deadline_leaves_the_old_entry_stale() {
        let start = Instant::now();
        let mut timers = Timers::default();
        let mut d = Deadline::new(start);
        timers.set(&mut d, start + Duration::from_secs(10), 1, 1);
        timers.set(&mut d, start + Duration::from_secs(2), 1, 1);
        assert_eq!(timers.len(), 2);
        let now = start + Duration::from_secs(2);
        let (k, g, at) = timers.pop_due(now).expect("due");
        assert!(timers.check(&mut d, at, now, k, g));
        let now = start + Duration::from_secs(10);
        let (k, g, at) = timers.pop_due(now).expect("due");
        assert!(!timers.check(&mut d, at, now, k, g), "old entry is stale");
        assert!(timers.pop_due(now).is_none());
    }

    #[test]
    fn wake_ups_are_apart_from_deadlines() {
        let start = Instant::now();
        let mut timers = Timers::default();
        let mut d = Deadline::new(start);
        timers.set(&mut d, start + Duration::from_secs(300), 4, 11);
        timers.wake_at(start + Duration::from_millis(3), 4, 11);
        assert_eq!(timers.next_deadline(), Some(start + Duration::from_millis(3)), "the earlier of the two");
        assert_eq!(timers.pop_wake(start), None);
        let now = start + Duration::from_millis(3);
        assert!(timers.pop_due(now).is_none(), "a wake-up is not a deadline");
        assert_eq!(timers.pop_wake(now), Some((4, 11)));
        assert_eq!(timers.next_deadline(), Some(start + Duration::from_secs(300)));
    }

    #[test]
    fn nothing_due_before_its_time() {
        let start = Instant::now();
        let mut timers = Timers::default();
        let mut d = Deadline::new(start);
        timers.set(&mut d, start + Duration::from_millis(50), 0, 0);
        assert!(timers.pop_due(start).is_none());
        assert_eq!(timers.next_timeout(start), Some(Duration::from_millis(50)));
    }
}
