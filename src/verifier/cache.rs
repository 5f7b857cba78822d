//! Remembered logins: a user whose password was verified against their hash recently logs in
//! again without another verification, so a client that reconnects often (or a reconnect
//! storm after a restart of something upstream) costs a digest and a lookup, not
//! milliseconds of argon2 each.
//!
//! An entry is keyed by the user name and a **keyed digest of the password**
//! ([`Digester`]: BLAKE2b-256 keyed with 32 random bytes drawn when the process starts), so
//! the cache never holds a password, and its digests are useless outside this process (and
//! cannot be checked against guesses without the key, which is never written anywhere). Each
//! entry also holds a digest of the **PHC string** it was verified against: when a reload
//! changes the user's hash, the entry no longer matches and is dropped at the next lookup.
//!
//! Entries live for [`TTL`] from the verification (a hit does not extend them), and at most
//! [`MAX_ENTRIES`] are kept: when full, expired entries are dropped, then the oldest one. Only
//! successes are remembered; a wrong password is verified every time (and throttled,
//! `throttle.rs`).
//!
//! Pure: time comes in as an argument. The verifier keeps one cache for the whole process
//! behind a mutex (workers share it).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use blake2::Blake2bMac;
use blake2::digest::consts::U32;
use blake2::digest::{KeyInit, Mac};

/// How long a verified login is remembered.
pub const TTL: Duration = Duration::from_secs(15 * 60);
/// Logins remembered at most (each about 100 bytes plus the user name).
pub const MAX_ENTRIES: usize = 4096;

/// A keyed 32-byte digest.
pub type Digest = [u8; 32];

/// Keyed BLAKE2b-256 with a key of this process's own.
pub struct Digester {
    key: [u8; 32],
}

impl std::fmt::Debug for Digester {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Digester(..)")
    }
}

impl Digester {
    /// A digester with a fresh random key (`getrandom(2)`).
    pub fn random() -> std::io::Result<Digester> {
        let mut key = [0; 32];
        getrandom::fill(&mut key).map_err(std::io::Error::other)?;
        Ok(Digester { key })
    }

    /// The digest of `parts`, each prefixed with its length (so ("ab", "c") and ("a", "bc")
    /// differ).
    pub fn digest(&self, parts: &[&[u8]]) -> Digest {
        let mut mac = match <Blake2bMac<U32> as KeyInit>::new_from_slice(&self.key) {
            Ok(mac) => mac,
            // A 32-byte key is within BLAKE2b's 64: cannot happen.
            Err(_) => unreachable!("a 32-byte key is valid for BLAKE2b"),
        };
        for part in parts {
            Mac::update(&mut mac, &(part.len() as u64).to_le_bytes());
            Mac::update(&mut mac, part);
        }
        mac.finalize().into_bytes().into()
    }
}

#[derive(Debug, Clone)]
struct Entry {
    /// The digest of the PHC string the password was verified against.
    phc: Digest,
    verified_at: Instant,
}

/// Logins verified recently: (user name, password digest) → the hash it matched, and when.
#[derive(Debug)]
pub struct Cache {
    entries: HashMap<(Box<[u8]>, Digest), Entry>,
    max_entries: usize,
    ttl: Duration,
}

impl Default for Cache {
    fn default() -> Cache {
        Cache::new(MAX_ENTRIES, TTL)
    }
}

impl Cache {
    pub fn new(max_entries: usize, ttl: Duration) -> Cache {
        Cache { entries: HashMap::new(), max_entries: max_entries.max(1), ttl }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `user` logged in with the password of digest `password` against the hash of
    /// digest `phc` within the TTL. A stale or mismatched entry is dropped.
    pub fn hit(&mut self, user: &[u8], password: &Digest, phc: &Digest, now: Instant) -> bool {
        let key = (Box::from(user), *password);
        let Some(entry) = self.entries.get(&key) else { return false };
        if entry.phc == *phc && now.saturating_duration_since(entry.verified_at) < self.ttl {
            return true;
        }
        self.entries.remove(&key);
        false
    }

    /// Remember a successful verification at `now`.
    pub fn insert(&mut self, user: &[u8], password: Digest, phc: Digest, now: Instant) {
        let key = (Box::from(user), password);
        if !self.entries.contains_key(&key) && self.entries.len() >= self.max_entries {
            let ttl = self.ttl;
            self.entries.retain(|_, e| now.saturating_duration_since(e.verified_at) < ttl);
            if self.entries.len() >= self.max_entries {
                let oldest = self.entries.iter().min_by_key(|(_, e)| e.verified_at).map(|(k, _)| k.clone());
                if let Some(oldest) = oldest {
                    self.entries.remove(&oldest);
                }
            }
        }
        self.entries.insert(key, Entry { phc, verified_at: now });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_keyed_and_length_prefixed() {
        let a = Digester::random().unwrap();
        let b = Digester::random().unwrap();
        assert_eq!(a.digest(&[b"alice", b"pw"]), a.digest(&[b"alice", b"pw"]));
        assert_ne!(a.digest(&[b"alice", b"pw"]), b.digest(&[b"alice", b"pw"]), "another key");
        assert_ne!(a.digest(&[b"ab", b"c"]), a.digest(&[b"a", b"bc"]));
        assert!(!format!("{a:?}").contains(|c: char| c.is_ascii_digit()), "the key is not shown");
    }

    #[test]
    fn a_hit_needs_the_same_user_password_and_hash_within_the_ttl() {
        let d = Digester::random().unwrap();
        let mut cache = Cache::default();
        let now = Instant::now();
        let (pw, phc) = (d.digest(&[b"right"]), d.digest(&[b"$argon2id$one"]));
        cache.insert(b"alice", pw, phc, now);
        assert!(cache.hit(b"alice", &pw, &phc, now + Duration::from_secs(60)));
        assert!(!cache.hit(b"alice", &d.digest(&[b"wrong"]), &phc, now), "another password");
        assert!(!cache.hit(b"bob", &pw, &phc, now), "another user");
        // A changed hash (a reload) invalidates the entry, which goes.
        assert!(!cache.hit(b"alice", &pw, &d.digest(&[b"$argon2id$two"]), now));
        assert!(cache.is_empty());
        cache.insert(b"alice", pw, phc, now);
        assert!(cache.hit(b"alice", &pw, &phc, now + TTL - Duration::from_millis(1)));
        assert!(!cache.hit(b"alice", &pw, &phc, now + TTL), "expired");
        assert!(cache.is_empty());
    }

    #[test]
    fn size_is_bounded_expired_first_then_oldest() {
        let d = Digester::random().unwrap();
        let mut cache = Cache::new(3, Duration::from_secs(10));
        let now = Instant::now();
        let phc = d.digest(&[b"hash"]);
        let pw = |i: u8| d.digest(&[&[i]]);
        cache.insert(b"u", pw(1), phc, now);
        cache.insert(b"u", pw(2), phc, now + Duration::from_secs(1));
        cache.insert(b"u", pw(3), phc, now + Duration::from_secs(2));
        // Full, none expired: the oldest (1) makes room.
        cache.insert(b"u", pw(4), phc, now + Duration::from_secs(3));
        assert_eq!(cache.len(), 3);
        let t = now + Duration::from_secs(3);
        assert!(!cache.hit(b"u", &pw(1), &phc, t));
        assert!(cache.hit(b"u", &pw(2), &phc, t) && cache.hit(b"u", &pw(4), &phc, t));
        // Later, the expired ones all go at once.
        cache.insert(b"u", pw(5), phc, now + Duration::from_secs(12));
        assert_eq!(cache.len(), 2, "2 expired, 3 expired: 4 and 5 remain");
    }
}
