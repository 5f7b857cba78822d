//! Per-user rate limits (`rate-limit`): a token bucket per user and direction, shared by every
//! worker, and the per-relay [`Throttle`] that reads only what the bucket grants.
//!
//! **The bucket** ([`TokenBucket`]) holds up to [`burst`] bytes and refills at `rate` bytes per
//! second. It is one atomic "virtual time" `v`, in nanoseconds (the generic cell rate
//! algorithm): the bucket holds `min(burst, (now - v) × rate)` tokens, and charging `n` bytes
//! moves `v` forward by `n / rate`. A grant is one compare-and-swap on that word, uncontended
//! unless two workers charge the same user at the same instant; no lock, no thread, no timer
//! of its own: time is whatever `now` the caller passes (the loop's clock, or a test's).
//!
//! **Grants are bounded slices.** A relay direction asks for one [`quantum`] (a 64th of a
//! second at the rate, between 4 KiB and 1 MiB) per drive, so one flow cannot empty the bucket
//! while the others wait: each drive of each flow takes at most a quantum, and a flow that
//! wants more comes back in the next pass like any flow whose fairness budget ran out. Why a
//! 64th of a second and not a fixed 64 KiB: a starved flow's share is one quantum per its
//! turn, and its turn is its wait in the queue plus how late its loop wakes it. A loop busy
//! with a fast unlimited relay wakes late by a few milliseconds; against 3 ms turns (64 KiB at
//! 20 MiB/s) that skewed shares between workers by up to 5:1 (measured), against 16 ms turns
//! the four flows of `tests/it/ratelimit.rs` share within a few percent. It also bounds the
//! wake-ups: about 64 a second per user and direction, however many flows share the limit.
//!
//! **An empty bucket is a reservation, not a refusal.** When fewer than an eighth of a quantum
//! is left, [`TokenBucket::grant`] charges the whole quantum anyway (`v` runs ahead of `now`:
//! debt) and answers *when* it may be read: the instant the debt is paid. Each starved flow so
//! gets its own later slot, in the order they asked, so they take turns (fair) and each
//! wake-up moves a quantum; a "take what is there, else come back at `ready_at`" bucket would
//! wake every starved flow at the same instant for one of them to win. A grant, or the part of
//! it not read (the source ran dry, the destination blocked, the relay closed), goes back
//! with [`TokenBucket::refund`], so what is charged is what was read. One exception: what a
//! short read leaves of a grant stays with the flow for its source's next bytes, for the time
//! four grants take at the rate ([`Throttle::settle`]); a source read slowly often has less
//! than a quantum queued (its receive window stays small), and a flow that gave the rest back
//! would get less per turn than its neighbours (measured: shares from 4.0 to 6.8 MiB/s of
//! four flows at 20 MiB/s, 5.0 each with the rest kept).
//!
//! **Burst**: a tenth of a second of the rate, at least 64 KiB (at most a second's worth for
//! rates below 64 KiB/s). It lets an idle user start at once, absorbs the loop's wake-up
//! jitter (a loop late by less than the burst loses nothing: the tokens wait for it), and over
//! a window of `T` seconds lets through at most `rate × T + burst` bytes (plus what flows
//! kept of grants charged before the window: at most a sixteenth of a second's worth).
//!
//! **Reload** ([`RateLimits::carry_over`]): buckets are keyed by user name and survive a
//! reload. A changed `rate-limit` applies at once, to the user's open connections too (they
//! share the bucket: a user has one total, not one per generation of the settings); a limit
//! removed makes the bucket unlimited, so open connections stop being throttled; a limit given
//! to a user who had none applies to their new connections (an unlimited relay holds no
//! bucket and costs nothing).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use crate::users::Users;

const NANOS_PER_SEC: u128 = 1_000_000_000;

/// Bucket time starts this far after the bucket's epoch: a new bucket's virtual time 0 is then
/// more than any burst (at most a second) in the past, so it starts full, and a `now` taken a
/// little before the bucket was made cannot underflow.
const CLOCK_OFFSET: u64 = 1 << 32; // about 4.3 s

/// The largest grant: a flow reads at most this much per drive while limited (the relay's
/// fairness budget per drive is the same).
pub const MAX_QUANTUM: u64 = 1 << 20;
/// The smallest grant (for rates below 256 KiB/s), unless the burst is smaller still.
pub const MIN_QUANTUM: u64 = 4 << 10;

/// How many bytes a bucket of `rate` bytes per second holds when full: a tenth of a second,
/// at least 64 KiB, at most one second.
pub fn burst(rate: u64) -> u64 {
    (rate / 10).max(rate.min(64 << 10))
}

/// How many bytes one drive of a limited flow asks for: a 64th of a second at the rate,
/// within [`MIN_QUANTUM`]..=[`MAX_QUANTUM`], never more than the burst.
pub fn quantum(rate: u64) -> u64 {
    (rate / 64).clamp(MIN_QUANTUM, MAX_QUANTUM).min(burst(rate))
}

/// `bytes` at `rate`, in nanoseconds, rounded up (charges never round in the user's favour).
fn nanos_for(bytes: u64, rate: u64) -> u64 {
    let ns = (u128::from(bytes) * NANOS_PER_SEC).div_ceil(u128::from(rate));
    u64::try_from(ns).unwrap_or(u64::MAX / 2)
}

/// Bytes that accrue at `rate` in `ns` nanoseconds, rounded down.
fn bytes_in(ns: u64, rate: u64) -> u64 {
    u64::try_from(u128::from(ns) * u128::from(rate) / NANOS_PER_SEC).unwrap_or(u64::MAX)
}

/// Bytes a flow may read, and from when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grant {
    pub bytes: u64,
    /// `now` when the tokens were there; later when they are reserved (the bucket was empty).
    pub at: Instant,
}

/// One direction of one user's limit, shared by every connection of the user on every worker.
/// Aligned to a cache line so the two directions (often charged by different workers) do not
/// share one.
#[derive(Debug)]
#[repr(align(64))]
pub struct TokenBucket {
    /// Bytes per second; 0: unlimited (the limit was removed by a reload).
    rate: AtomicU64,
    /// The virtual time, in nanoseconds of this bucket's clock: the bucket holds
    /// `min(burst, (clock(now) - virt) × rate)` tokens (none while `virt` is ahead: debt).
    virt: AtomicU64,
    epoch: Instant,
}

impl TokenBucket {
    /// A full bucket of `rate` bytes per second (0: unlimited).
    pub fn new(rate: u64, now: Instant) -> TokenBucket {
        TokenBucket { rate: AtomicU64::new(rate), virt: AtomicU64::new(0), epoch: now }
    }

    /// Bytes per second; 0 when unlimited.
    pub fn rate(&self) -> u64 {
        self.rate.load(Relaxed)
    }

    /// Change the rate (a reload): debt and saved tokens keep their length in time.
    pub fn set_rate(&self, rate: u64) {
        self.rate.store(rate, Relaxed);
    }

    fn clock(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.epoch).as_nanos();
        u64::try_from(since).unwrap_or(u64::MAX / 2) + CLOCK_OFFSET
    }

    /// Tokens in the bucket at `now` (0 while in debt).
    pub fn available(&self, now: Instant) -> u64 {
        let rate = self.rate();
        if rate == 0 {
            return u64::MAX;
        }
        let t = self.clock(now);
        let base = self.virt.load(Relaxed).max(t.saturating_sub(nanos_for(burst(rate), rate)));
        bytes_in(t.saturating_sub(base), rate)
    }

    /// Charge up to `want` bytes. With at least `want` tokens: all of it, now. With fewer but at
    /// least an eighth of `want`: what is there, now. Otherwise `want` is reserved: charged now
    /// (the bucket goes into debt) and readable at the returned instant, when the debt is paid.
    /// Unlimited: `want`, now, and nothing is charged.
    pub fn grant(&self, want: u64, now: Instant) -> Grant {
        let rate = self.rate();
        if rate == 0 || want == 0 {
            return Grant { bytes: want, at: now };
        }
        let t = self.clock(now);
        let floor = t.saturating_sub(nanos_for(burst(rate), rate));
        let mut virt = self.virt.load(Relaxed);
        loop {
            let base = virt.max(floor);
            let tokens = bytes_in(t.saturating_sub(base), rate);
            let bytes = if tokens >= want.div_ceil(8) { tokens.min(want) } else { want };
            let next = base.saturating_add(nanos_for(bytes, rate));
            match self.virt.compare_exchange_weak(virt, next, Relaxed, Relaxed) {
                Ok(_) => {
                    let at = if bytes <= tokens {
                        now
                    } else {
                        now + Duration::from_nanos(next.saturating_sub(t))
                    };
                    return Grant { bytes, at };
                }
                Err(current) => virt = current,
            }
        }
    }

    /// Give back `bytes` charged and not read.
    pub fn refund(&self, bytes: u64) {
        let rate = self.rate();
        if rate == 0 || bytes == 0 {
            return;
        }
        // Rounded down: a refund never returns more than the charge took.
        let ns = u64::try_from(u128::from(bytes) * NANOS_PER_SEC / u128::from(rate)).unwrap_or(0);
        let _ = self.virt.fetch_update(Relaxed, Relaxed, |virt| Some(virt.saturating_sub(ns)));
    }
}

/// A user's limit: one bucket each way.
#[derive(Debug)]
pub struct UserLimit {
    /// Client → target.
    pub up: TokenBucket,
    /// Target → client.
    pub down: TokenBucket,
}

impl UserLimit {
    pub fn new(rate: u64, now: Instant) -> UserLimit {
        UserLimit { up: TokenBucket::new(rate, now), down: TokenBucket::new(rate, now) }
    }

    fn set_rate(&self, rate: u64) {
        self.up.set_rate(rate);
        self.down.set_rate(rate);
    }
}

/// The limited users' buckets by name; part of the [`crate::settings::Settings`] every worker
/// shares, carried from one reload to the next.
#[derive(Debug, Clone, Default)]
pub struct RateLimits {
    by_name: HashMap<String, Arc<UserLimit>>,
}

impl RateLimits {
    /// The buckets for `users`: a user limited here keeps their bucket, at the new rate (open
    /// connections follow at once); a user limited here whose limit is gone gets an unlimited
    /// bucket (their open connections stop being throttled) and no entry; a newly limited user
    /// gets a full bucket. Users absent from `users` are left as they are (their connections
    /// are revoked). A `rate-limit` of 0 means no limit.
    pub fn carry_over(&self, users: &Users, now: Instant) -> RateLimits {
        let mut by_name = HashMap::new();
        for user in users.iter() {
            let rate = user.rate_limit.unwrap_or(0);
            match (self.by_name.get(&user.name), rate) {
                (Some(old), 0) => old.set_rate(0),
                (Some(old), rate) => {
                    old.set_rate(rate);
                    by_name.insert(user.name.clone(), Arc::clone(old));
                }
                (None, 0) => {}
                (None, rate) => {
                    by_name.insert(user.name.clone(), Arc::new(UserLimit::new(rate, now)));
                }
            }
        }
        RateLimits { by_name }
    }

    /// The buckets of `name`, if that user is limited.
    pub fn get(&self, name: &str) -> Option<&Arc<UserLimit>> {
        self.by_name.get(name)
    }

    pub fn len(&self) -> usize {
        self.by_name.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }
}

/// Which way through a relay.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Way {
    /// Client → target.
    Up,
    /// Target → client.
    Down,
}

/// One direction's hold on its bucket: the bytes granted and not yet read.
#[derive(Debug)]
struct Gate {
    held: u64,
    /// From when `held` may be read.
    at: Instant,
    /// Until when: what is left then goes back to the bucket.
    until: Instant,
    /// A wake-up for `at` has been asked for.
    wake_asked: bool,
}

/// A limited relay's two gates and its user's buckets. The relay asks [`Throttle::open`] for
/// each direction's budget before its pumps and reports what they read with
/// [`Throttle::settle`]; a direction waiting for a reserved grant asks the loop to wake it
/// ([`Throttle::wake`]). Dropping it (the relay closed) gives back what it held.
#[derive(Debug)]
pub struct Throttle {
    limit: Arc<UserLimit>,
    up: Gate,
    down: Gate,
}

impl Throttle {
    pub fn new(limit: Arc<UserLimit>, now: Instant) -> Throttle {
        let gate = || Gate { held: 0, at: now, until: now, wake_asked: false };
        Throttle { limit, up: gate(), down: gate() }
    }

    fn parts(&mut self, way: Way) -> (&TokenBucket, &mut Gate) {
        match way {
            Way::Up => (&self.limit.up, &mut self.up),
            Way::Down => (&self.limit.down, &mut self.down),
        }
    }

    /// The budget for `way` in this drive, at most `max`: what is left of the current grant,
    /// or a new one. `wants`: the source has bytes to read and nothing waits for the
    /// destination (else no new grant is taken). 0 while a reserved grant is not due yet.
    pub fn open(&mut self, way: Way, wants: bool, now: Instant, max: usize) -> usize {
        let (bucket, gate) = self.parts(way);
        if gate.held > 0 && gate.at <= now && now >= gate.until {
            bucket.refund(gate.held);
            gate.held = 0;
        }
        if gate.held == 0 {
            if !wants {
                return 0;
            }
            let rate = bucket.rate();
            let max = max as u64;
            let want = if rate == 0 { max } else { quantum(rate).min(max) };
            let grant = bucket.grant(want, now);
            let keep = if rate == 0 {
                Duration::ZERO
            } else {
                Duration::from_nanos(nanos_for(want, rate).saturating_mul(4))
            };
            *gate = Gate { held: grant.bytes, at: grant.at, until: grant.at + keep, wake_asked: false };
        }
        if gate.at > now { 0 } else { gate.held as usize }
    }

    /// After the pump: `opened` is what [`Throttle::open`] allowed, `left` what the pump did
    /// not read of it. `more`: the source may have more (it has not ended); then the rest of
    /// the grant is kept for its next bytes, for the time four grants take at the rate, and
    /// goes back to the bucket after that (or at once, without `more`).
    ///
    /// Why keep it: a source that is read slowly often has less than a quantum queued (its
    /// receive window stays small), and a flow that gave back what a short read left would
    /// get less per turn than its neighbours: shares would follow TCP's window, not the turns.
    pub fn settle(&mut self, way: Way, opened: usize, left: usize, more: bool) {
        if opened == 0 {
            return;
        }
        let (bucket, gate) = self.parts(way);
        gate.held = left as u64;
        if !more {
            bucket.refund(gate.held);
            gate.held = 0;
        }
    }

    /// When the loop must wake this relay for `way`'s reserved grant: once per grant, `None`
    /// when nothing is reserved or the wake-up was asked for already.
    pub fn wake(&mut self, way: Way, now: Instant) -> Option<Instant> {
        let (_, gate) = self.parts(way);
        if gate.held > 0 && gate.at > now && !gate.wake_asked {
            gate.wake_asked = true;
            return Some(gate.at);
        }
        None
    }

    /// `way` waits for a reserved grant (its source is not read until then).
    pub fn waiting(&self, way: Way, now: Instant) -> bool {
        let gate = match way {
            Way::Up => &self.up,
            Way::Down => &self.down,
        };
        gate.held > 0 && gate.at > now
    }
}

impl Drop for Throttle {
    fn drop(&mut self) {
        self.limit.up.refund(self.up.held);
        self.limit.down.refund(self.down.held);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::User;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn burst_and_quantum_follow_the_rate() {
        assert_eq!(burst(20 << 20), 2 << 20);
        assert_eq!(quantum(20 << 20), 320 << 10);
        assert_eq!(quantum(1 << 30), 1 << 20);
        assert_eq!((burst(100 << 10), quantum(100 << 10)), (64 << 10, 4 << 10));
        assert_eq!((burst(1000), quantum(1000)), (1000, 1000), "below 4 KiB/s: one second's worth");
        assert_eq!(burst(1), 1);
    }

    #[test]
    fn a_new_bucket_is_full_and_refills_with_time() {
        let t0 = Instant::now();
        let rate = 1 << 20;
        let bucket = TokenBucket::new(rate, t0);
        assert_eq!(bucket.available(t0), burst(rate));
        assert_eq!(bucket.grant(burst(rate), t0), Grant { bytes: burst(rate), at: t0 });
        assert_eq!(bucket.available(t0), 0);
        // 10 ms at 1 MiB/s.
        let t1 = t0 + 10 * MS;
        assert_eq!(bucket.available(t1), (1 << 20) / 100);
        // Never beyond the burst, however long it rests.
        assert_eq!(bucket.available(t0 + Duration::from_secs(60)), burst(rate));
    }

    #[test]
    fn an_empty_bucket_reserves_in_turn() {
        let t0 = Instant::now();
        let rate = 64 << 10; // 64 KiB/s: burst 64 KiB, quantum 4 KiB
        let bucket = TokenBucket::new(rate, t0);
        assert_eq!(bucket.grant(64 << 10, t0).at, t0);
        // Three flows ask while it is empty: each gets the whole quantum, one after another,
        // 1/16 s apart.
        let slots: Vec<Instant> = (0..3).map(|_| bucket.grant(4 << 10, t0).at).collect();
        let sixteenth = Duration::from_nanos(1_000_000_000 / 16);
        assert_eq!(slots, vec![t0 + sixteenth, t0 + 2 * sixteenth, t0 + 3 * sixteenth]);
        assert_eq!(bucket.available(t0 + 3 * sixteenth), 0, "all of it was reserved");
    }

    #[test]
    fn a_partial_grant_when_some_tokens_are_there() {
        let t0 = Instant::now();
        let rate = 1 << 20; // 1 MiB/s
        let bucket = TokenBucket::new(rate, t0);
        bucket.grant(burst(rate), t0);
        let t1 = t0 + 2 * MS; // about 2 KiB back
        let tokens = bucket.available(t1);
        assert_eq!(bucket.grant(16 << 10, t1), Grant { bytes: tokens, at: t1 }, "an eighth or more: now");
        let t2 = t1 + MS / 2; // about 0.5 KiB: less than an eighth of 16 KiB
        let grant = bucket.grant(16 << 10, t2);
        assert_eq!(grant.bytes, 16 << 10);
        assert!(grant.at > t2 + 14 * MS && grant.at < t2 + 16 * MS, "{:?}", grant.at - t2);
    }

    #[test]
    fn refunds_give_back_what_was_not_read() {
        let t0 = Instant::now();
        let rate = 1 << 20;
        let bucket = TokenBucket::new(rate, t0);
        bucket.grant(burst(rate), t0);
        bucket.refund(1000);
        // Rounding (charges up, refunds down) may lose a byte, never gain one.
        assert!((999..=1000).contains(&bucket.available(t0)));
        // A refund cannot fill the bucket beyond its burst.
        bucket.refund(10 << 20);
        assert_eq!(bucket.available(t0), burst(rate));
    }

    #[test]
    fn the_rate_holds_over_many_grants() {
        // Four flows take quanta as the clock advances in uneven steps; over ten seconds the
        // total is rate × 10 s plus at most the burst.
        let t0 = Instant::now();
        let rate = 20 << 20;
        let bucket = TokenBucket::new(rate, t0);
        let mut due = [t0; 4];
        let mut total = 0u64;
        let mut now = t0;
        let end = t0 + Duration::from_secs(10);
        let mut step = 0u64;
        while now < end {
            for slot in &mut due {
                if *slot <= now {
                    let grant = bucket.grant(quantum(rate), now);
                    total += grant.bytes;
                    *slot = grant.at.max(now);
                }
            }
            step += 1;
            now += Duration::from_micros(300 + (step * 7919) % 2000);
        }
        let max = rate * 10 + burst(rate) + 4 * quantum(rate);
        assert!(total <= max && total >= rate * 10 - 4 * quantum(rate), "{total} vs {}", rate * 10);
    }

    #[test]
    fn unlimited_grants_everything_and_charges_nothing() {
        let t0 = Instant::now();
        let bucket = TokenBucket::new(0, t0);
        assert_eq!(bucket.grant(1 << 30, t0), Grant { bytes: 1 << 30, at: t0 });
        bucket.refund(5);
        assert_eq!(bucket.available(t0), u64::MAX);
    }

    #[test]
    fn throttle_opens_waits_and_gives_back() {
        let t0 = Instant::now();
        let rate = 64 << 10; // quantum 4 KiB, burst 64 KiB
        let limit = Arc::new(UserLimit::new(rate, t0));
        let mut throttle = Throttle::new(Arc::clone(&limit), t0);
        // Nothing to read: no grant taken.
        assert_eq!(throttle.open(Way::Down, false, t0, 1 << 20), 0);
        assert_eq!(limit.down.available(t0), 64 << 10);
        // A quantum per drive. What a short read left is kept for the source's next bytes,
        // without touching the bucket again, for the time of four grants (1/4 s here).
        assert_eq!(throttle.open(Way::Down, true, t0, 1 << 20), 4 << 10);
        throttle.settle(Way::Down, 4 << 10, 1 << 10, true);
        assert_eq!(limit.down.available(t0), 60 << 10);
        assert_eq!(throttle.open(Way::Down, true, t0 + MS, 1 << 20), 1 << 10, "the rest of the grant");
        throttle.settle(Way::Down, 1 << 10, 1 << 10, true);
        let stale = t0 + Duration::from_millis(250);
        assert_eq!(throttle.open(Way::Down, false, stale, 1 << 20), 0, "expired: given back");
        assert_eq!(limit.down.available(stale), 64 << 10);
        assert_eq!(limit.up.available(t0), 64 << 10, "the other direction is untouched");
        // Once the source has ended, the rest goes back at once.
        assert_eq!(throttle.open(Way::Down, true, stale, 1 << 20), 4 << 10);
        throttle.settle(Way::Down, 4 << 10, 1 << 10, false);
        assert!(limit.down.available(stale) >= (61 << 10) - 1);
        // Empty the bucket: the next drive reserves and waits, and asks for one wake-up.
        let t0 = stale;
        limit.down.grant(limit.down.available(t0), t0);
        assert_eq!(throttle.open(Way::Down, true, t0, 1 << 20), 0);
        assert!(throttle.waiting(Way::Down, t0));
        let at = throttle.wake(Way::Down, t0).expect("a wake-up");
        assert_eq!(at, t0 + Duration::from_nanos(1_000_000_000 / 16));
        assert_eq!(throttle.wake(Way::Down, t0), None, "asked once");
        assert_eq!(throttle.open(Way::Down, true, t0 + MS, 1 << 20), 0, "not due yet");
        // Due: the reserved quantum is readable, whether or not the source still has bytes.
        assert_eq!(throttle.open(Way::Down, false, at, 1 << 20), 4 << 10);
        throttle.settle(Way::Down, 4 << 10, 0, true);
        assert!(!throttle.waiting(Way::Down, at));
        // A relay that closes while waiting gives its reservation back.
        assert_eq!(throttle.open(Way::Down, true, at, 1 << 20), 0);
        let later = at + Duration::from_secs(1);
        let before = limit.down.available(later);
        drop(throttle);
        assert_eq!(limit.down.available(later), (before + (4 << 10)).min(64 << 10));
    }

    #[test]
    fn carry_over_keeps_buckets_by_name_and_applies_changes() {
        let t0 = Instant::now();
        let limited = |name: &str, rate: Option<u64>| User { rate_limit: rate, ..User::plain(name, b"pw") };
        let mut users = Users::default();
        users.add(limited("alice", Some(1000))).unwrap();
        users.add(limited("bob", Some(2000))).unwrap();
        users.add(limited("carol", None)).unwrap();
        let first = RateLimits::default().carry_over(&users, t0);
        assert_eq!(first.len(), 2);
        assert!(first.get("carol").is_none());
        let (alice, bob) = (Arc::clone(first.get("alice").unwrap()), Arc::clone(first.get("bob").unwrap()));

        let mut next = Users::default();
        next.add(limited("alice", Some(5000))).unwrap();
        next.add(limited("bob", None)).unwrap();
        next.add(limited("carol", Some(3000))).unwrap();
        let second = first.carry_over(&next, t0);
        assert!(Arc::ptr_eq(second.get("alice").unwrap(), &alice), "same bucket");
        assert_eq!(alice.up.rate(), 5000, "changed at once");
        assert!(second.get("bob").is_none());
        assert_eq!((bob.up.rate(), bob.down.rate()), (0, 0), "open connections unlimited");
        assert_eq!(second.get("carol").unwrap().down.rate(), 3000);
    }
}
