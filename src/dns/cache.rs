//! The answer cache: pure, with time passed in.
//!
//! Keyed by (name, family). An answer is kept for its TTL and never longer: not past
//! `max_ttl` (the ceiling), not at all when its TTL is 0, and an entry found expired is removed
//! and reported as a miss. Negative answers (NXDOMAIN, NODATA) are kept for the negative TTL
//! the answer carried (RFC 2308: the SOA's minimum, capped by the SOA record's own TTL); an
//! answer without an SOA gives none, and is not kept.
//!
//! **Bounded in entries.** Positive and negative answers live in two LRU tables that share the
//! configured entry count: negative answers get a quarter of it, positive ones the rest, so a
//! flood of lookups for names that do not exist (random subdomains) can evict only other
//! negative entries, never a working name. When a table is full, inserting evicts its least
//! recently used entry. Each entry holds a name (at most 253 bytes, stored twice: in the map and
//! in the recency index) and at most [`MAX_ADDRS`] addresses, so one entry costs at most about
//! 1 KiB (2 × 253 bytes of name, 16 × 17 bytes of addresses, about 200 bytes of map and index
//! overhead; a typical entry, a short name with one or two addresses, about 250 bytes), and the
//! whole cache at most `entries` KiB: 4 MiB for the default 4 096 entries.

use std::collections::{BTreeMap, HashMap};
use std::net::IpAddr;
use std::time::{Duration, Instant};

use super::Family;

/// The most addresses kept (and handed out) per name and family. More are dropped: a client
/// tries addresses one after another, and the sixteenth is already seconds away.
pub const MAX_ADDRS: usize = 16;

/// What the cache remembers about a (name, family).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cached {
    /// The name has addresses of this family (at most [`MAX_ADDRS`]).
    Addrs(Vec<IpAddr>),
    /// The name exists but has no address of this family (NODATA).
    NoData,
    /// The name does not exist (NXDOMAIN).
    NxDomain,
}

impl Cached {
    fn is_negative(&self) -> bool {
        !matches!(self, Cached::Addrs(_))
    }
}

type Key = (Box<str>, Family);

#[derive(Debug)]
struct Slot {
    value: Cached,
    expires: Instant,
    /// Position in the recency index.
    stamp: u64,
}

/// One table, least recently used first out.
#[derive(Debug)]
struct Lru {
    capacity: usize,
    map: HashMap<Key, Slot>,
    /// stamp → key; the smallest stamp is the least recently used.
    order: BTreeMap<u64, Key>,
    next_stamp: u64,
}

impl Lru {
    fn new(capacity: usize) -> Lru {
        Lru { capacity, map: HashMap::new(), order: BTreeMap::new(), next_stamp: 0 }
    }

    fn stamp(&mut self) -> u64 {
        self.next_stamp += 1;
        self.next_stamp
    }

    fn get(&mut self, key: &Key, now: Instant) -> Option<Cached> {
        let expires = self.map.get(key)?.expires;
        if expires <= now {
            self.remove(key);
            return None;
        }
        let stamp = self.stamp();
        let slot = self.map.get_mut(key)?;
        self.order.remove(&slot.stamp);
        slot.stamp = stamp;
        self.order.insert(stamp, key.clone());
        Some(slot.value.clone())
    }

    fn insert(&mut self, key: Key, value: Cached, expires: Instant) {
        if self.capacity == 0 {
            return;
        }
        self.remove(&key);
        while self.map.len() >= self.capacity {
            let Some((_, oldest)) = self.order.pop_first() else { break };
            self.map.remove(&oldest);
        }
        let stamp = self.stamp();
        self.order.insert(stamp, key.clone());
        self.map.insert(key, Slot { value, expires, stamp });
    }

    fn remove(&mut self, key: &Key) {
        if let Some(slot) = self.map.remove(key) {
            self.order.remove(&slot.stamp);
        }
    }

    fn len(&self) -> usize {
        self.map.len()
    }
}

/// The cache of answers, positive and negative.
#[derive(Debug)]
pub struct Cache {
    positive: Lru,
    negative: Lru,
    max_ttl: Duration,
}

impl Cache {
    /// A cache of at most `entries` entries (a quarter of them for negative answers), none
    /// kept longer than `max_ttl`. `entries == 0` turns caching off.
    pub fn new(entries: usize, max_ttl: Duration) -> Cache {
        let negative = entries / 4;
        Cache { positive: Lru::new(entries - negative), negative: Lru::new(negative), max_ttl }
    }

    /// What is known about `name` (normalised) for `family` at `now`, if it has not expired.
    pub fn get(&mut self, name: &str, family: Family, now: Instant) -> Option<Cached> {
        let key: Key = (name.into(), family);
        if let Some(hit) = self.positive.get(&key, now) {
            return Some(hit);
        }
        self.negative.get(&key, now)
    }

    /// Remember `value` for `ttl` seconds (capped at the ceiling; 0 keeps nothing). Addresses
    /// past [`MAX_ADDRS`] are dropped. A new answer replaces the old one in either table.
    pub fn insert(&mut self, name: &str, family: Family, value: Cached, ttl: u32, now: Instant) {
        let key: Key = (name.into(), family);
        self.positive.remove(&key);
        self.negative.remove(&key);
        let ttl = Duration::from_secs(u64::from(ttl)).min(self.max_ttl);
        if ttl.is_zero() {
            return;
        }
        let value = match value {
            Cached::Addrs(mut addrs) => {
                addrs.truncate(MAX_ADDRS);
                Cached::Addrs(addrs)
            }
            other => other,
        };
        let table = if value.is_negative() { &mut self.negative } else { &mut self.positive };
        table.insert(key, value, now + ttl);
    }

    /// Entries held now (expired ones included until they are looked at or evicted).
    pub fn len(&self) -> usize {
        self.positive.len() + self.negative.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn addrs(list: &[&str]) -> Cached {
        Cached::Addrs(list.iter().map(|s| ip(s)).collect())
    }

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn answers_live_for_their_ttl_and_not_a_moment_longer() {
        let t0 = Instant::now();
        let mut cache = Cache::new(16, HOUR);
        cache.insert("a.example", Family::V4, addrs(&["192.0.2.1"]), 30, t0);
        assert_eq!(cache.get("a.example", Family::V4, t0), Some(addrs(&["192.0.2.1"])));
        assert_eq!(cache.get("a.example", Family::V6, t0), None, "families are separate");
        assert_eq!(cache.get("b.example", Family::V4, t0), None);
        let just_before = t0 + Duration::from_secs(30) - Duration::from_millis(1);
        assert!(cache.get("a.example", Family::V4, just_before).is_some());
        assert_eq!(cache.get("a.example", Family::V4, t0 + Duration::from_secs(30)), None, "expired");
        assert_eq!(cache.len(), 0, "an expired entry found is removed");
    }

    #[test]
    fn ttl_zero_is_not_kept_and_the_ceiling_caps_long_ttls() {
        let t0 = Instant::now();
        let mut cache = Cache::new(16, Duration::from_secs(60));
        cache.insert("zero.example", Family::V4, addrs(&["192.0.2.1"]), 0, t0);
        assert_eq!(cache.get("zero.example", Family::V4, t0), None);
        cache.insert("long.example", Family::V4, addrs(&["192.0.2.2"]), u32::MAX, t0);
        assert!(cache.get("long.example", Family::V4, t0 + Duration::from_secs(59)).is_some());
        assert_eq!(cache.get("long.example", Family::V4, t0 + Duration::from_secs(60)), None, "ceiling");
        cache.insert("neg.example", Family::V6, Cached::NxDomain, 86_400, t0);
        assert_eq!(cache.get("neg.example", Family::V6, t0 + Duration::from_secs(60)), None, "ceiling");
    }

    #[test]
    fn negative_answers_are_cached_for_their_own_ttl() {
        let t0 = Instant::now();
        let mut cache = Cache::new(16, HOUR);
        cache.insert("nx.example", Family::V4, Cached::NxDomain, 5, t0);
        cache.insert("v4only.example", Family::V6, Cached::NoData, 10, t0);
        assert_eq!(cache.get("nx.example", Family::V4, t0 + Duration::from_secs(4)), Some(Cached::NxDomain));
        assert_eq!(cache.get("nx.example", Family::V4, t0 + Duration::from_secs(5)), None);
        assert_eq!(
            cache.get("v4only.example", Family::V6, t0 + Duration::from_secs(9)),
            Some(Cached::NoData)
        );
        // A positive answer replaces a negative one (and the other way round).
        cache.insert("v4only.example", Family::V6, addrs(&["2001:db8::1"]), 10, t0);
        assert_eq!(cache.get("v4only.example", Family::V6, t0), Some(addrs(&["2001:db8::1"])));
        cache.insert("v4only.example", Family::V6, Cached::NoData, 10, t0);
        assert_eq!(cache.get("v4only.example", Family::V6, t0), Some(Cached::NoData));
        assert_eq!(cache.len(), 1, "nx.example went when it was found expired; one entry per key");
    }

    #[test]
    fn bounded_in_entries_least_recently_used_out() {
        let t0 = Instant::now();
        let mut cache = Cache::new(8, HOUR); // 6 positive, 2 negative
        for i in 0..6 {
            cache.insert(&format!("n{i}.example"), Family::V4, addrs(&["192.0.2.1"]), 60, t0);
        }
        assert!(cache.get("n0.example", Family::V4, t0).is_some(), "n0 is now the most recent");
        cache.insert("n6.example", Family::V4, addrs(&["192.0.2.1"]), 60, t0);
        assert_eq!(cache.get("n1.example", Family::V4, t0), None, "the least recently used went");
        assert!(cache.get("n0.example", Family::V4, t0).is_some());
        assert!(cache.get("n6.example", Family::V4, t0).is_some());
        assert_eq!(cache.len(), 6);

        // A flood of negative answers evicts only negative answers.
        for i in 0..1000 {
            cache.insert(&format!("nx{i}.example"), Family::V4, Cached::NxDomain, 60, t0);
        }
        assert_eq!(cache.len(), 8, "6 positive + 2 negative, never more");
        assert!(cache.get("n0.example", Family::V4, t0).is_some());
        assert_eq!(cache.get("nx999.example", Family::V4, t0), Some(Cached::NxDomain));
        assert_eq!(cache.get("nx0.example", Family::V4, t0), None);

        // So does a flood of positive answers: never more than the bound.
        for i in 0..1000 {
            cache.insert(&format!("p{i}.example"), Family::V6, addrs(&["2001:db8::1"]), 60, t0);
        }
        assert_eq!(cache.len(), 8);
    }

    #[test]
    fn addresses_are_capped_and_zero_entries_caches_nothing() {
        let t0 = Instant::now();
        let mut cache = Cache::new(4, HOUR);
        let many: Vec<IpAddr> = (0..40u8).map(|i| IpAddr::from([192, 0, 2, i])).collect();
        cache.insert("many.example", Family::V4, Cached::Addrs(many.clone()), 60, t0);
        assert_eq!(
            cache.get("many.example", Family::V4, t0),
            Some(Cached::Addrs(many[..MAX_ADDRS].to_vec()))
        );

        let mut off = Cache::new(0, HOUR);
        off.insert("a.example", Family::V4, addrs(&["192.0.2.1"]), 60, t0);
        off.insert("b.example", Family::V4, Cached::NxDomain, 60, t0);
        assert_eq!(off.len(), 0);
        assert_eq!(off.get("a.example", Family::V4, t0), None);
    }
}
