//! Domain names → socket addresses, off the event loop.
//!
//! `getaddrinfo` blocks (for seconds, when a DNS server is slow), so it never runs on the loop
//! thread. A small pool of threads takes [`Lookup`]s from a shared queue, resolves them, sends
//! an [`Answer`] back over a channel and wakes the loop through its `mio::Waker`.
//!
//! The pool starts empty and grows on demand: a thread is spawned only when a lookup is queued
//! while every existing thread is busy, up to `--resolver-threads`. A proxy that is only ever
//! asked for IP addresses (or not asked at all) never pays for resolver threads: each costs
//! about 13 KiB of resident memory (its stack and its malloc arena). Threads, once started,
//! stay until the loop ends, so a busy proxy pays the spawn (tens of microseconds) once.
//!
//! Answers carry the connection's slab key *and* its id: a connection may close while its
//! lookup is in flight and its key may be reused, so the loop drops answers whose id no
//! longer matches the connection at that key. Names that can never resolve (an empty label, a label over 63 bytes, a
//! name over 253 bytes) are rejected by [`check_name`] before any lookup, so no query leaves
//! the machine for them.

use std::cell::Cell;
use std::io;
use std::net::{IpAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread;

/// A name to resolve for a connection. (No port: the phases put the request's port on the
/// addresses, so a UDP association can share one answer between datagrams to any port.)
pub struct Lookup {
    pub key: usize,
    pub conn: u64,
    pub host: String,
}

/// The result of a [`Lookup`].
pub struct Answer {
    pub key: usize,
    pub conn: u64,
    /// The name asked for (a UDP association resolves many names at once).
    pub host: String,
    pub result: io::Result<Vec<IpAddr>>,
}

/// The loop's handle on the resolver threads.
pub struct Resolver {
    lookups: Sender<Lookup>,
    answers: Receiver<Answer>,
    /// `None` only for [`Resolver::detached`]: nobody serves its queue.
    pool: Option<Pool>,
    /// Only for [`Resolver::detached`]: keeps its queue open with nobody serving it.
    _unserved: Option<Receiver<Lookup>>,
}

/// What it takes to start one more resolver thread, and how many are needed.
///
/// The counters are `Cell`s because the loop holds the resolver by shared reference while a
/// connection submits; only the loop thread touches them.
struct Pool {
    queue: Arc<Mutex<Receiver<Lookup>>>,
    answer_tx: Sender<Answer>,
    waker: Arc<mio::Waker>,
    max_threads: usize,
    threads: Cell<usize>,
    /// Lookups submitted whose answer the loop has not taken yet.
    in_flight: Cell<usize>,
}

impl Resolver {
    /// A resolver that will start up to `max_threads` threads, as lookups need them, each
    /// waking `waker` after every answer. No thread starts here.
    pub fn new(max_threads: usize, waker: Arc<mio::Waker>) -> Resolver {
        let (lookup_tx, lookup_rx) = mpsc::channel::<Lookup>();
        let (answer_tx, answer_rx) = mpsc::channel::<Answer>();
        let pool = Pool {
            queue: Arc::new(Mutex::new(lookup_rx)),
            answer_tx,
            waker,
            max_threads: max_threads.max(1),
            threads: Cell::new(0),
            in_flight: Cell::new(0),
        };
        Resolver { lookups: lookup_tx, answers: answer_rx, pool: Some(pool), _unserved: None }
    }

    /// A resolver with no threads: lookups are accepted and never answered, and no DNS query
    /// is ever made. For drivers that deliver answers themselves (the `connection` fuzz target
    /// calls `Connection::on_resolved` with invented addresses).
    pub fn detached() -> Resolver {
        let (lookups, unserved) = mpsc::channel::<Lookup>();
        let (_, answers) = mpsc::channel::<Answer>();
        Resolver { lookups, answers, pool: None, _unserved: Some(unserved) }
    }

    /// How many resolver threads are running.
    #[cfg(test)]
    fn threads(&self) -> usize {
        self.pool.as_ref().map_or(0, |pool| pool.threads.get())
    }

    /// Queue a lookup; the answer arrives later through [`Resolver::try_answer`].
    pub fn submit(&self, lookup: Lookup) {
        // Cannot fail: this handle keeps the queue's receiving end alive (in the pool).
        if self.lookups.send(lookup).is_err() {
            log::error!("resolver queue is closed; lookups will time out");
            return;
        }
        if let Some(pool) = &self.pool {
            pool.in_flight.set(pool.in_flight.get() + 1);
            pool.grow_if_all_busy();
        }
    }

    /// An answer that has arrived, if any. Never blocks.
    pub fn try_answer(&self) -> Option<Answer> {
        let answer = self.answers.try_recv().ok()?;
        if let Some(pool) = &self.pool {
            pool.in_flight.set(pool.in_flight.get().saturating_sub(1));
        }
        Some(answer)
    }
}

impl Pool {
    /// Start one more thread when more lookups are outstanding than there are threads.
    fn grow_if_all_busy(&self) {
        let threads = self.threads.get();
        if self.in_flight.get() <= threads || threads >= self.max_threads {
            return;
        }
        let queue = Arc::clone(&self.queue);
        let answers = self.answer_tx.clone();
        let waker = Arc::clone(&self.waker);
        let spawned = thread::Builder::new()
            .name(format!("resolver-{threads}"))
            .spawn(move || resolve_until_closed(&queue, &answers, &waker));
        match spawned {
            Ok(_) => self.threads.set(threads + 1),
            // The queued lookup waits for a thread that already exists, or, if there is
            // none, for the connect timeout, which answers the client; the loop goes on.
            Err(e) => log::error!("cannot start a resolver thread ({threads} running): {e}"),
        }
    }
}

fn resolve_until_closed(queue: &Mutex<Receiver<Lookup>>, answers: &Sender<Answer>, waker: &mio::Waker) {
    loop {
        // Hold the lock only while taking a job, never while resolving.
        let next = match queue.lock() {
            Ok(queue) => queue.recv(),
            Err(_) => return,
        };
        let Ok(lookup) = next else {
            return; // the loop dropped its sender: shut down
        };
        // getaddrinfo wants a port; any will do, and only the addresses are kept.
        let result = (lookup.host.as_str(), 0).to_socket_addrs().map(|addrs| addrs.map(|a| a.ip()).collect());
        let answer = Answer { key: lookup.key, conn: lookup.conn, host: lookup.host, result };
        if answers.send(answer).is_err() {
            return;
        }
        let _ = waker.wake();
    }
}

/// What to do with a requested name before any lookup.
#[derive(Debug, PartialEq, Eq)]
pub enum NameCheck {
    /// The "name" is an IP literal: no lookup needed.
    Literal(IpAddr),
    /// A syntactically valid host name: look it up.
    Lookup,
    /// Can never resolve: answer "host unreachable" at once.
    Invalid,
}

/// Classify a requested host name (RFC 1035 §2.3.4 limits: labels ≤ 63, name ≤ 253).
pub fn check_name(host: &str) -> NameCheck {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return NameCheck::Literal(ip);
    }
    // Some clients send "[::1]" for IPv6 literals in the name field.
    if let Some(inner) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'))
        && let Ok(ip) = inner.parse::<IpAddr>()
    {
        return NameCheck::Literal(ip);
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    if valid { NameCheck::Lookup } else { NameCheck::Invalid }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(check_name("127.0.0.1"), NameCheck::Literal("127.0.0.1".parse().unwrap()));
        assert_eq!(check_name("[::1]"), NameCheck::Literal("::1".parse().unwrap()));
        assert_eq!(check_name("localhost"), NameCheck::Lookup);
        assert_eq!(check_name("example.com."), NameCheck::Lookup);
        assert_eq!(check_name("_srv.my-host.example"), NameCheck::Lookup);
        assert_eq!(check_name(""), NameCheck::Invalid);
        assert_eq!(check_name("a..b"), NameCheck::Invalid);
        assert_eq!(check_name(&"x".repeat(64)), NameCheck::Invalid);
        assert_eq!(check_name(&format!("{}.com", "x".repeat(63))), NameCheck::Lookup);
        assert_eq!(check_name(&["abc"; 70].join(".")), NameCheck::Invalid);
        assert_eq!(check_name("bad host"), NameCheck::Invalid);
    }

    #[test]
    fn resolves_localhost_off_thread() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let resolver = Resolver::new(1, waker);
        resolver.submit(Lookup { key: 4, conn: 2, host: "localhost".into() });
        let mut events = mio::Events::with_capacity(4);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let answer = loop {
            if let Some(answer) = resolver.try_answer() {
                break answer;
            }
            assert!(std::time::Instant::now() < deadline, "no answer in 10 s");
            poll.poll(&mut events, Some(std::time::Duration::from_millis(100))).unwrap();
        };
        assert_eq!((answer.key, answer.conn), (4, 2));
        let addrs = answer.result.expect("localhost resolves");
        assert!(!addrs.is_empty() && addrs.iter().all(IpAddr::is_loopback), "{addrs:?}");
    }

    /// Collect `n` answers, polling for at most 10 s.
    fn answers(resolver: &Resolver, poll: &mut mio::Poll, n: usize) -> Vec<Answer> {
        let mut events = mio::Events::with_capacity(4);
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        let mut got = Vec::new();
        while got.len() < n {
            while let Some(answer) = resolver.try_answer() {
                got.push(answer);
            }
            assert!(std::time::Instant::now() < deadline, "only {} of {n} answers in 10 s", got.len());
            poll.poll(&mut events, Some(std::time::Duration::from_millis(50))).unwrap();
        }
        got
    }

    #[test]
    fn threads_start_only_when_every_thread_is_busy() {
        let mut poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let resolver = Resolver::new(3, waker);
        assert_eq!(resolver.threads(), 0, "no thread before the first lookup");
        let lookup = |key| Lookup { key, conn: 0, host: "localhost".into() };

        resolver.submit(lookup(1));
        assert_eq!(resolver.threads(), 1);
        answers(&resolver, &mut poll, 1);
        // One lookup at a time never needs a second thread.
        resolver.submit(lookup(2));
        assert_eq!(resolver.threads(), 1);
        answers(&resolver, &mut poll, 1);

        // A burst grows the pool, but never past its limit.
        for key in 10..20 {
            resolver.submit(lookup(key));
        }
        assert_eq!(resolver.threads(), 3);
        let mut keys: Vec<usize> = answers(&resolver, &mut poll, 10).iter().map(|a| a.key).collect();
        keys.sort_unstable();
        assert_eq!(keys, (10..20).collect::<Vec<_>>());
    }
}
