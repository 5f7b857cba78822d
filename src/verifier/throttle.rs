//! Brute-force throttling: repeated login failures from one client address lock that address
//! out for a while, without touching other clients.
//!
//! The policy (`docs/security.md`, "Brute force"):
//!
//! - Clients are grouped by **address**: an IPv4 address, or an IPv6 /64 (what one subscriber
//!   usually gets, so hopping between addresses of one's own /64 does not help). IPv4-mapped
//!   IPv6 addresses count as IPv4.
//! - **[`THRESHOLD`] failures within [`WINDOW`]** lock the address out for [`FIRST_LOCKOUT`].
//!   While it is locked out, its logins are answered "failure" at once, without looking at the
//!   password (so no hash is verified for it); those refusals do not extend the lockout.
//! - After a lockout the address is **on probation** until [`FORGET`] has passed since its last
//!   failure: each further failure locks it again, for twice as long as the previous lockout,
//!   up to [`MAX_LOCKOUT`]; and it gets one verification in flight at a time.
//! - **Verifications in flight count.** Answers take milliseconds, so a client could send
//!   many guesses before its first failure is known. An address with failures in the window
//!   may have at most `THRESHOLD - failures` verifications in flight, any address at most
//!   [`MAX_IN_FLIGHT`]; a login beyond that is refused at once (not counted as a failure).
//! - A success does not clear the record: an attacker holding one valid account could
//!   otherwise reset its count between guesses at another.
//! - **Bounded memory**: at most [`MAX_ENTRIES`] addresses are tracked (about 100 bytes each).
//!   When the table is full, entries whose time has passed are swept (at most once a second);
//!   if it is still full, a new address is not tracked (and the table logs that, once a
//!   minute): so many attacking addresses are beyond what a per-address throttle can help.
//!
//! The table is pure: time comes in as an argument, so the tests move the clock instead of
//! sleeping. The verifier keeps one table for the whole process behind a mutex (workers share
//! it), locked only to look up or update one entry.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

/// Failures within [`WINDOW`] that start a lockout.
pub const THRESHOLD: usize = 5;
/// The span in which [`THRESHOLD`] failures start a lockout.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The first lockout; each further failure on probation doubles it.
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(60);
/// The longest lockout.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(15 * 60);
/// An address that was locked out is forgotten this long after its last failure.
pub const FORGET: Duration = Duration::from_secs(15 * 60);
/// Verifications one address may have in flight at once (with no failure on record).
pub const MAX_IN_FLIGHT: u32 = 32;
/// Addresses tracked at most.
pub const MAX_ENTRIES: usize = 16_384;

/// How clients are grouped: an IPv4 address, or the /64 of an IPv6 one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    V4([u8; 4]),
    V6Prefix([u8; 8]),
}

impl Source {
    pub fn of(ip: IpAddr) -> Source {
        match crate::acl::canonical(ip) {
            IpAddr::V4(v4) => Source::V4(v4.octets()),
            IpAddr::V6(v6) => {
                let mut prefix = [0; 8];
                prefix.copy_from_slice(&v6.octets()[..8]);
                Source::V6Prefix(prefix)
            }
        }
    }
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            Source::V4(octets) => write!(f, "{}", std::net::Ipv4Addr::from(octets)),
            Source::V6Prefix(prefix) => {
                let mut octets = [0; 16];
                octets[..8].copy_from_slice(&prefix);
                write!(f, "{}/64", std::net::Ipv6Addr::from(octets))
            }
        }
    }
}

/// Whether a login from an address may be checked now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Check it; [`Throttle::finish`] or [`Throttle::abort`] must follow.
    Go,
    /// Locked out for this much longer.
    LockedOut(Duration),
    /// Too many of its verifications are in flight already.
    TooMany,
}

/// A lockout that has just begun (logged once, by the caller).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lockout {
    pub source: Source,
    /// How many lockouts in a row this address has earned (1 for the first).
    pub strikes: u32,
    pub duration: Duration,
}

#[derive(Debug, Clone)]
struct Entry {
    /// The latest failures, up to [`THRESHOLD`] of them, oldest first.
    recent: [Option<Instant>; THRESHOLD],
    /// Lockouts so far (0: never locked out; >0: on probation).
    strikes: u32,
    locked_until: Option<Instant>,
    last_failure: Option<Instant>,
    in_flight: u32,
}

impl Entry {
    fn new() -> Entry {
        Entry { recent: [None; THRESHOLD], strikes: 0, locked_until: None, last_failure: None, in_flight: 0 }
    }

    fn failures_within_window(&self, now: Instant) -> usize {
        self.recent.iter().flatten().filter(|&&at| now.saturating_duration_since(at) < WINDOW).count()
    }

    fn record_failure(&mut self, now: Instant) {
        self.recent.rotate_left(1);
        self.recent[THRESHOLD - 1] = Some(now);
        self.last_failure = Some(now);
    }

    /// Nothing left to remember at `now`: no verification in flight, and the last failure
    /// (or the end of the last lockout, if later) is [`WINDOW`] old, or [`FORGET`] old for an
    /// address that has been locked out.
    fn expired(&self, now: Instant) -> bool {
        let memory = if self.strikes > 0 { FORGET } else { WINDOW };
        let last = self.last_failure.max(self.locked_until);
        let stale = last.is_none_or(|at| now.saturating_duration_since(at) >= memory);
        self.in_flight == 0 && stale
    }
}

/// The failures of each client address, and its lockouts.
#[derive(Debug)]
pub struct Throttle {
    entries: HashMap<Source, Entry>,
    max_entries: usize,
    last_sweep: Option<Instant>,
    /// When "table full" was last logged.
    last_full_warning: Option<Instant>,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::with_capacity(MAX_ENTRIES)
    }
}

impl Throttle {
    pub fn with_capacity(max_entries: usize) -> Throttle {
        Throttle { entries: HashMap::new(), max_entries, last_sweep: None, last_full_warning: None }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// May a login from `ip` be checked at `now`? On [`Admission::Go`] the login counts as in
    /// flight until [`Throttle::finish`] or [`Throttle::abort`].
    pub fn admit(&mut self, ip: IpAddr, now: Instant) -> Admission {
        let source = Source::of(ip);
        let Some(entry) = self.entry(source, now) else {
            return Admission::Go; // the table is full: this address is not tracked
        };
        if let Some(until) = entry.locked_until
            && until > now
        {
            return Admission::LockedOut(until - now);
        }
        let limit = if entry.strikes > 0 {
            1
        } else {
            let failures = entry.failures_within_window(now) as u32;
            if failures > 0 { THRESHOLD as u32 - failures.min(THRESHOLD as u32 - 1) } else { MAX_IN_FLIGHT }
        };
        if entry.in_flight >= limit {
            return Admission::TooMany;
        }
        entry.in_flight += 1;
        Admission::Go
    }

    /// A login admitted earlier was answered: `failed` if the password was wrong. Returns the
    /// lockout this failure starts, if it starts one.
    pub fn finish(&mut self, ip: IpAddr, failed: bool, now: Instant) -> Option<Lockout> {
        let source = Source::of(ip);
        if !failed {
            self.settle(source, now);
            return None;
        }
        let entry = self.entry(source, now)?;
        entry.in_flight = entry.in_flight.saturating_sub(1);
        if entry.locked_until.is_some_and(|until| until > now) {
            // Checked before the lockout began (in flight then): it does not extend it.
            entry.record_failure(now);
            return None;
        }
        entry.record_failure(now);
        let lock = entry.strikes > 0 || entry.failures_within_window(now) >= THRESHOLD;
        if !lock {
            return None;
        }
        entry.strikes = entry.strikes.saturating_add(1);
        let doublings = (entry.strikes - 1).min(16);
        let duration = FIRST_LOCKOUT.saturating_mul(1 << doublings).min(MAX_LOCKOUT);
        entry.locked_until = Some(now + duration);
        Some(Lockout { source, strikes: entry.strikes, duration })
    }

    /// A login admitted earlier ended without an answer about the password (the verifier was
    /// too busy, the hash was unusable): it is no longer in flight and is not a failure.
    pub fn abort(&mut self, ip: IpAddr, now: Instant) {
        self.settle(Source::of(ip), now);
    }

    /// One verification of `source` is no longer in flight; an entry left with nothing to
    /// remember goes (a client that only ever succeeds holds no entry between logins).
    fn settle(&mut self, source: Source, now: Instant) {
        if let Some(entry) = self.entries.get_mut(&source) {
            entry.in_flight = entry.in_flight.saturating_sub(1);
            if entry.expired(now) {
                self.entries.remove(&source);
            }
        }
    }

    /// The entry for `source`, made if need be; `None` when the table is full of live entries.
    fn entry(&mut self, source: Source, now: Instant) -> Option<&mut Entry> {
        if !self.entries.contains_key(&source) && self.entries.len() >= self.max_entries {
            self.sweep(now);
            if self.entries.len() >= self.max_entries {
                if self.last_full_warning.is_none_or(|at| now.saturating_duration_since(at) >= WINDOW) {
                    self.last_full_warning = Some(now);
                    log::warn!(
                        "login throttle: tracking {} client addresses already; new ones are not \
                         throttled until entries expire",
                        self.entries.len()
                    );
                }
                return None;
            }
        }
        let entry = self.entries.entry(source).or_insert_with(Entry::new);
        if entry.expired(now) {
            *entry = Entry::new(); // long ago: start afresh
        }
        Some(entry)
    }

    /// Drop the entries with nothing left to remember; at most once a second.
    fn sweep(&mut self, now: Instant) {
        if self.last_sweep.is_some_and(|at| now.saturating_duration_since(at) < Duration::from_secs(1)) {
            return;
        }
        self.last_sweep = Some(now);
        self.entries.retain(|_, entry| !entry.expired(now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 2));
    const B: IpAddr = IpAddr::V4(std::net::Ipv4Addr::new(127, 0, 0, 3));

    /// One complete failed login.
    fn fail(t: &mut Throttle, ip: IpAddr, now: Instant) -> Option<Lockout> {
        assert_eq!(t.admit(ip, now), Admission::Go);
        t.finish(ip, true, now)
    }

    #[test]
    fn five_failures_within_the_window_lock_out_that_address_only() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for i in 0..4 {
            assert_eq!(fail(&mut t, A, now + Duration::from_secs(i)), None);
        }
        let lockout = fail(&mut t, A, now + Duration::from_secs(10)).expect("the fifth failure locks out");
        assert_eq!((lockout.strikes, lockout.duration), (1, FIRST_LOCKOUT));
        assert_eq!(lockout.source.to_string(), "127.0.0.2");
        let later = now + Duration::from_secs(20);
        assert_eq!(t.admit(A, later), Admission::LockedOut(Duration::from_secs(50)));
        // Refusals during the lockout do not extend it.
        assert_eq!(t.admit(A, later), Admission::LockedOut(Duration::from_secs(50)));
        // Another address is untouched.
        assert_eq!(t.admit(B, later), Admission::Go);
        assert_eq!(t.finish(B, false, later), None);
        assert_eq!(t.len(), 1, "a client that only succeeds leaves no entry");
    }

    #[test]
    fn failures_spread_wider_than_the_window_do_not_lock_out() {
        let mut t = Throttle::default();
        let mut now = Instant::now();
        for _ in 0..20 {
            assert_eq!(fail(&mut t, A, now), None);
            now += Duration::from_secs(16); // four per minute at most
        }
        assert_eq!(t.admit(A, now), Admission::Go);
    }

    #[test]
    fn further_failures_after_a_lockout_double_it_up_to_the_cap() {
        let mut t = Throttle::default();
        let mut now = Instant::now();
        for _ in 0..5 {
            fail(&mut t, A, now);
        }
        let mut expected = FIRST_LOCKOUT;
        let mut durations = Vec::new();
        for _ in 0..8 {
            now += expected; // the lockout has just ended
            let lockout = fail(&mut t, A, now).expect("a failure on probation locks out again");
            durations.push(lockout.duration.as_secs());
            expected = lockout.duration;
        }
        assert_eq!(durations, [120, 240, 480, 900, 900, 900, 900, 900]);
    }

    #[test]
    fn success_on_probation_does_not_reset_and_the_address_is_forgotten_later() {
        let mut t = Throttle::default();
        let now = Instant::now();
        for _ in 0..5 {
            fail(&mut t, A, now);
        }
        let after = now + FIRST_LOCKOUT;
        assert_eq!(t.admit(A, after), Admission::Go);
        assert_eq!(t.finish(A, false, after), None);
        // Still on probation: the next failure locks out again, doubled.
        assert_eq!(fail(&mut t, A, after).map(|l| l.duration), Some(FIRST_LOCKOUT * 2));
        // Long after its last failure the address starts afresh.
        let much_later = after + FIRST_LOCKOUT * 2 + FORGET;
        assert_eq!(fail(&mut t, A, much_later - Duration::from_secs(1)).map(|l| l.strikes), Some(3));
        let much_later = much_later + FIRST_LOCKOUT * 4 + FORGET;
        assert_eq!(fail(&mut t, A, much_later), None);
    }

    #[test]
    fn in_flight_verifications_count_toward_the_threshold() {
        let mut t = Throttle::default();
        let now = Instant::now();
        // Without failures, up to MAX_IN_FLIGHT at once.
        for _ in 0..MAX_IN_FLIGHT {
            assert_eq!(t.admit(B, now), Admission::Go);
        }
        assert_eq!(t.admit(B, now), Admission::TooMany);
        // With two failures on record, three more may be in flight.
        fail(&mut t, A, now);
        fail(&mut t, A, now);
        for _ in 0..3 {
            assert_eq!(t.admit(A, now), Admission::Go);
        }
        assert_eq!(t.admit(A, now), Admission::TooMany);
        // Their failures lock it out; a refused extra attempt is no failure.
        assert_eq!(t.finish(A, true, now), None);
        assert_eq!(t.finish(A, true, now), None);
        assert!(t.finish(A, true, now).is_some(), "the fifth failure");
        assert!(matches!(t.admit(A, now), Admission::LockedOut(d) if d == FIRST_LOCKOUT));
        // Aborted attempts leave the count as it was.
        t.abort(B, now);
        assert_eq!(t.admit(B, now), Admission::Go);
    }

    #[test]
    fn ipv6_clients_are_grouped_by_64_and_mapped_ipv4_counts_as_ipv4() {
        let a1: IpAddr = "2001:db8:1:2::1".parse().unwrap();
        let a2: IpAddr = "2001:db8:1:2:ffff::9".parse().unwrap();
        let other: IpAddr = "2001:db8:1:3::1".parse().unwrap();
        assert_eq!(Source::of(a1), Source::of(a2));
        assert_ne!(Source::of(a1), Source::of(other));
        assert_eq!(Source::of(a1).to_string(), "2001:db8:1:2::/64");
        assert_eq!(Source::of("::ffff:127.0.0.2".parse().unwrap()), Source::of(A));
        let mut t = Throttle::default();
        let now = Instant::now();
        for _ in 0..5 {
            fail(&mut t, a1, now);
        }
        assert!(matches!(t.admit(a2, now), Admission::LockedOut(_)));
        assert_eq!(t.admit(other, now), Admission::Go);
    }

    #[test]
    fn memory_is_bounded_and_expired_entries_make_room() {
        let mut t = Throttle::with_capacity(4);
        let now = Instant::now();
        for i in 1..=4u8 {
            fail(&mut t, IpAddr::from([10, 0, 0, i]), now);
        }
        assert_eq!(t.len(), 4);
        // Full of live entries: a fifth address is not tracked (its logins go ahead).
        let fifth = IpAddr::from([10, 0, 0, 5]);
        assert_eq!(t.admit(fifth, now), Admission::Go);
        assert_eq!(t.finish(fifth, true, now), None);
        assert_eq!(t.len(), 4);
        // Once the others' window has passed, a sweep makes room.
        let later = now + WINDOW;
        assert_eq!(fail(&mut t, fifth, later), None);
        assert_eq!(t.len(), 1);
    }
}
