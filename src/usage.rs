//! Who holds how many connections right now, over all workers: the counts behind
//! `--max-connections-per-client` and a user's `max-connections`, and the per-user numbers the
//! metrics show.
//!
//! # When a connection counts
//!
//! A connection takes its place when its **request** is complete ([`Usage::acquire`], from
//! `request::start`, for every command and both dialects) and gives it back when it is removed
//! from the loop ([`Held`]'s `Drop`), whatever ended it: a close, a rejection's linger, the
//! loop stopping. So:
//!
//! * the refusal is a reply to the request (SOCKS5 `02`, SOCKS4 `5B`), the answer the issue
//!   asks for, and a client that is refused still learns why;
//! * a connection still in its handshake does not count: it is bounded by
//!   `--handshake-timeout` and `--max-connections`, and the client it belongs to is known only
//!   after a PROXY protocol header (the client a load balancer names is the one counted);
//! * per user, "from the request" is also "from login" for every connection that does
//!   anything: the time between the two is one round trip.
//!
//! Counting always happens, cap or not, so a reload that sets a cap (or changes it) sees the
//! true counts at once; a cap applies to new requests only and never closes open connections.
//! Users are counted by name, so the counts outlive a reload that replaces the `User` values.
//!
//! # Cost and sharing
//!
//! Clients are one `HashMap<IpAddr, usize>` behind a mutex, taken once at the request and once
//! at removal for a few hash operations (an entry goes when its count drops to 0, so the table
//! holds only clients with open connections). Users are a map from name to an `Arc` of
//! atomics, looked up under a mutex once per request; the connection keeps the `Arc`, so the
//! release and the byte counts need no lock. Caps are checked and taken atomically (under the
//! clients' lock; with a compare-and-swap for users), so two workers cannot both take the
//! last place.

use std::collections::HashMap;
use std::fmt;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::users::User;

/// The shared counts (one per server, `Arc`'d into every loop).
#[derive(Debug, Default)]
pub struct Usage {
    clients: Mutex<HashMap<IpAddr, usize>>,
    users: Mutex<HashMap<String, Arc<UserUsage>>>,
}

/// One user's numbers, over all workers.
#[derive(Debug, Default)]
pub struct UserUsage {
    /// Connections holding a place now.
    open: AtomicUsize,
    /// Connections that took a place since the start.
    connections: AtomicU64,
    /// Relayed payload bytes (counted with `--metrics` only).
    bytes_up: AtomicU64,
    bytes_down: AtomicU64,
}

impl UserUsage {
    /// Add relayed payload bytes (up: to the target).
    pub fn add_bytes(&self, up: u64, down: u64) {
        if up > 0 {
            self.bytes_up.fetch_add(up, Ordering::Relaxed);
        }
        if down > 0 {
            self.bytes_down.fetch_add(down, Ordering::Relaxed);
        }
    }
}

/// What a user's numbers read as, for the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserNumbers {
    pub name: String,
    pub open: usize,
    pub connections: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
}

/// Why a request was refused a place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The client's IP address has `limit` connections open (`--max-connections-per-client`).
    Client { ip: IpAddr, limit: usize },
    /// The user has `limit` connections open (their `max-connections`).
    User { name: String, limit: usize },
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::Client { ip, limit } => {
                write!(f, "client {ip} already has {limit} connections (max-connections-per-client)")
            }
            Refusal::User { name, limit } => {
                write!(f, "user '{}' already has {limit} connections (max-connections)", name.escape_debug())
            }
        }
    }
}

/// A connection's place: given back when dropped.
#[derive(Debug)]
pub struct Held {
    usage: Arc<Usage>,
    client: Option<IpAddr>,
    user: Option<Arc<UserUsage>>,
}

impl Held {
    /// The user's numbers, if the connection is a user's.
    pub fn user(&self) -> Option<&UserUsage> {
        self.user.as_deref()
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(user) = &self.user {
            user.open.fetch_sub(1, Ordering::AcqRel);
        }
        if let Some(ip) = self.client {
            let mut clients = lock(&self.usage.clients);
            if let Some(count) = clients.get_mut(&ip) {
                *count -= 1;
                if *count == 0 {
                    clients.remove(&ip);
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic while holding these locks leaves consistent counts (each change is one store).
    mutex.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Usage {
    /// Take a place for a connection from `client` (at most `client_cap` each) of `user` (at
    /// most their `max-connections`), or say which cap is full.
    pub fn acquire(
        self: &Arc<Self>,
        client: IpAddr,
        client_cap: Option<usize>,
        user: Option<&User>,
    ) -> Result<Held, Refusal> {
        let client = crate::acl::canonical(client);
        let mut held = Held { usage: Arc::clone(self), client: None, user: None };
        if let Some(user) = user {
            let numbers = {
                let mut users = lock(&self.users);
                match users.get(&user.name) {
                    Some(numbers) => Arc::clone(numbers),
                    None => Arc::clone(users.entry(user.name.clone()).or_default()),
                }
            };
            let cap = user.max_connections.unwrap_or(usize::MAX);
            if numbers
                .open
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| (n < cap).then_some(n + 1))
                .is_err()
            {
                return Err(Refusal::User { name: user.name.clone(), limit: cap });
            }
            numbers.connections.fetch_add(1, Ordering::Relaxed);
            held.user = Some(numbers);
        }
        {
            let mut clients = lock(&self.clients);
            let count = clients.entry(client).or_insert(0);
            if client_cap.is_some_and(|cap| *count >= cap) {
                if *count == 0 {
                    clients.remove(&client); // a cap of 0 cannot be configured; stay tidy anyway
                }
                // Dropping `held` gives the user's place back.
                return Err(Refusal::Client { ip: client, limit: client_cap.unwrap_or_default() });
            }
            *count += 1;
        }
        held.client = Some(client);
        Ok(held)
    }

    /// Connections `client` holds now.
    pub fn client_connections(&self, client: IpAddr) -> usize {
        lock(&self.clients).get(&crate::acl::canonical(client)).copied().unwrap_or(0)
    }

    /// Clients with connections open now.
    pub fn clients(&self) -> usize {
        lock(&self.clients).len()
    }

    /// Every user seen since the start, by name.
    pub fn users(&self) -> Vec<UserNumbers> {
        let users = lock(&self.users);
        let mut numbers: Vec<UserNumbers> = users
            .iter()
            .map(|(name, u)| UserNumbers {
                name: name.clone(),
                open: u.open.load(Ordering::Acquire),
                connections: u.connections.load(Ordering::Relaxed),
                bytes_up: u.bytes_up.load(Ordering::Relaxed),
                bytes_down: u.bytes_down.load(Ordering::Relaxed),
            })
            .collect();
        drop(users);
        numbers.sort_by(|a, b| a.name.cmp(&b.name));
        numbers
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn client_cap_refuses_the_extra_connection_and_counts_come_back() {
        let usage = Arc::new(Usage::default());
        let a = usage.acquire(ip("192.0.2.1"), Some(2), None).unwrap();
        let b = usage.acquire(ip("::ffff:192.0.2.1"), Some(2), None).unwrap();
        assert_eq!(
            usage.acquire(ip("192.0.2.1"), Some(2), None).unwrap_err(),
            Refusal::Client { ip: ip("192.0.2.1"), limit: 2 },
            "a mapped address is the same client"
        );
        assert!(usage.acquire(ip("192.0.2.2"), Some(2), None).is_ok(), "another client is not limited");
        assert_eq!(usage.client_connections(ip("192.0.2.1")), 2);
        drop(a);
        let c = usage.acquire(ip("192.0.2.1"), Some(2), None).unwrap();
        drop((b, c));
        assert_eq!(usage.client_connections(ip("192.0.2.1")), 0);
        assert_eq!(usage.clients(), 0, "entries go with their last connection");
    }

    #[test]
    fn user_cap_counts_by_name_across_user_values() {
        let usage = Arc::new(Usage::default());
        let mut alice = User::plain("alice", b"one");
        alice.max_connections = Some(1);
        let first = usage.acquire(ip("192.0.2.1"), None, Some(&alice)).unwrap();
        // A reload gives a new `User` value with the same name (and a new password): same count.
        let mut reloaded = User::plain("alice", b"two");
        reloaded.max_connections = Some(1);
        let refused = usage.acquire(ip("192.0.2.9"), None, Some(&reloaded)).unwrap_err();
        assert_eq!(refused, Refusal::User { name: "alice".into(), limit: 1 });
        assert_eq!(usage.client_connections(ip("192.0.2.9")), 0, "a refused user takes no client place");
        first.user().unwrap().add_bytes(10, 20);
        drop(first);
        let again = usage.acquire(ip("192.0.2.1"), None, Some(&reloaded)).unwrap();
        let numbers = usage.users();
        assert_eq!(
            numbers,
            vec![UserNumbers { name: "alice".into(), open: 1, connections: 2, bytes_up: 10, bytes_down: 20 }]
        );
        drop(again);
        assert_eq!(usage.users()[0].open, 0);
    }

    #[test]
    fn a_full_client_gives_the_users_place_back() {
        let usage = Arc::new(Usage::default());
        let mut bob = User::plain("bob", b"pw");
        bob.max_connections = Some(5);
        let held = usage.acquire(ip("192.0.2.1"), Some(1), Some(&bob)).unwrap();
        assert!(matches!(usage.acquire(ip("192.0.2.1"), Some(1), Some(&bob)), Err(Refusal::Client { .. })));
        assert_eq!(usage.users()[0].open, 1, "only the held connection counts");
        drop(held);
        assert_eq!(usage.users()[0].open, 0);
    }

    #[test]
    fn concurrent_takers_never_exceed_the_cap() {
        let usage = Arc::new(Usage::default());
        let mut carol = User::plain("carol", b"pw");
        carol.max_connections = Some(8);
        let carol = Arc::new(carol);
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (usage, carol) = (Arc::clone(&usage), Arc::clone(&carol));
                std::thread::spawn(move || {
                    let mut kept = Vec::new();
                    for i in 0..1000 {
                        if let Ok(held) =
                            usage.acquire(ip(&format!("10.0.{t}.{}", i % 50)), None, Some(&carol))
                        {
                            kept.push(held);
                        }
                        if kept.len() > 1 {
                            kept.remove(0);
                        }
                        assert!(usage.users()[0].open <= 8);
                    }
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        assert_eq!(usage.users()[0].open, 0);
        assert_eq!(usage.clients(), 0);
    }
}
