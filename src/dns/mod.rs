//! A DNS client that runs inside the event loop: nonblocking sockets, the loop's clock, no
//! threads.
//!
//! [`DnsClient::lookup`] asks for a name's IPv6 and IPv4 addresses at once and answers each
//! family on its own, as soon as it is known ([`DnsClient::pop_answer`]), so Happy Eyeballs can
//! start connecting on the first family in. The loop drives it with three calls: `on_ready`
//! when a DNS socket's token fires (`token::dns(index)`), `on_timer` when
//! [`DnsClient::next_deadline`] has passed (fold it into the `poll` timeout), and `pop_answer`
//! after either, to hand answers to their connections.
//!
//! # Where an answer comes from, in order
//!
//! 1. **An IP literal** is its own answer: no query.
//! 2. **The hosts file** (`hosts_path`, read once by [`DnsClient::new`]; [`hosts`]): a name it
//!    lists is answered from it alone, for both families (a family it has no address for gets an
//!    empty list), as the system resolver does with `files` before `dns`.
//! 3. **The cache** ([`cache`]): a positive or negative answer still within its TTL.
//! 4. **A query in flight** for the same name and family: the lookup joins it as one more
//!    waiter (coalescing: a hundred clients asking for one name cost one query per family).
//! 5. **A new query** ([`query`]), one per family, both sent at once.
//!
//! # Queries, tries and retries
//!
//! A query is one (name, family) and owns one socket at a time, registered under its slot's
//! token. A *try* asks one nameserver: a fresh UDP socket on a kernel-chosen (random) port,
//! connected to the server, with a fresh id from `getrandom`. A reply must come from that
//! server and carry that id and our exact question ([`wire`]); anything else is ignored and
//! counted ([`DnsStats::ignored`]), never taken as an answer and never an error, so a forged or
//! stray datagram can neither poison the cache nor end the query. A truncated reply (TC) turns
//! the try into TCP with the same server. The try ends with:
//!
//! * an answer (addresses, NODATA, NXDOMAIN): delivered to every waiter and cached;
//! * a failure (SERVFAIL, REFUSED, a refused port, garbage over TCP): the next try starts at
//!   once;
//! * silence for `server_timeout` (default 1 s): the next try starts.
//!
//! Tries go round the nameservers in order, `attempts` times (default 2), so a dead first
//! server costs one `server_timeout` before the second is asked. When every try has failed, the
//! waiters get the most telling failure: a server's refusal over a socket error over a timeout.
//! Each try's deadline is an entry in a small heap ([`DnsClient::next_deadline`]); entries of
//! tries that ended early stay until they fall due and are then skipped, as in
//! [`crate::timer`].
//!
//! # Memory
//!
//! At most [`MAX_DNS_SOCKETS`] queries are in flight (one socket
//! each; a lookup beyond that gets [`DnsError::Busy`] at once). The cache is bounded in entries
//! (`cache_entries`, about 1 KiB each at most: see [`cache`]), a TCP reply buffer is at most
//! 64 KiB and lives only while its try does, and one 4 KiB buffer serves every UDP read.
//!
//! # Not here (yet)
//!
//! Search domains and `ndots` (names are asked as given, fully qualified), DNSSEC, DNS cookies
//! and 0x20 case randomisation, reloading the hosts file.

pub mod cache;
pub mod hosts;
pub mod query;
pub mod wire;

#[cfg(test)]
mod tests;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use mio::Registry;
use slab::Slab;

use self::cache::{Cache, Cached, MAX_ADDRS};
use self::hosts::Hosts;
use self::query::{Query, Step};
use self::wire::{Question, Reply};
use crate::resolver::{NameCheck, check_name};
use crate::token::{self, MAX_DNS_SOCKETS};

/// How the client resolves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsConfig {
    /// Asked in this order; at least one.
    pub nameservers: Vec<SocketAddr>,
    /// The hosts file, read once at start; `None` for none.
    pub hosts_path: Option<PathBuf>,
    /// How long one server is given to answer one try before the next is asked.
    pub server_timeout: Duration,
    /// How many times the list of servers is gone through (at least once).
    pub attempts: usize,
    /// The most answers the cache holds (a quarter of them for negative answers); 0: no cache.
    pub cache_entries: usize,
    /// No answer is cached longer than this, whatever its TTL.
    pub max_ttl: Duration,
}

impl DnsConfig {
    /// Ask `nameservers`, with `/etc/hosts` first, 1 s per try, twice round the list,
    /// 4 096 cached answers for at most an hour.
    pub fn new(nameservers: Vec<SocketAddr>) -> DnsConfig {
        DnsConfig {
            nameservers,
            hosts_path: Some(PathBuf::from("/etc/hosts")),
            server_timeout: Duration::from_secs(1),
            attempts: 2,
            cache_entries: 4096,
            max_ttl: Duration::from_secs(3600),
        }
    }
}

/// Who is waiting for a lookup: a connection's slab key and id (the id tells a reused key
/// from its previous occupant, as everywhere in the loop).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Waiter {
    pub key: usize,
    pub conn: u64,
}

/// An address family: which query (AAAA or A) an answer is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Family {
    V4,
    V6,
}

impl Family {
    pub fn of(ip: IpAddr) -> Family {
        match ip {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }
}

/// Why a lookup gave no addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DnsError {
    /// The name does not exist (NXDOMAIN).
    NxDomain,
    /// No server answered in time.
    Timeout,
    /// Servers answered, but none with an answer (SERVFAIL, REFUSED, nonsense over TCP).
    ServerFailure,
    /// The socket for a try could not be opened or used (every try).
    Io(io::ErrorKind),
    /// Not a name that could ever resolve; nothing was asked.
    InvalidName,
    /// Too many queries in flight; nothing was asked.
    Busy,
}

impl DnsError {
    /// How telling a failure is: when every try failed, the most telling one is reported.
    fn rank(self) -> u8 {
        match self {
            DnsError::Timeout => 0,
            DnsError::Io(_) => 1,
            _ => 2,
        }
    }

    fn or_more_telling(self, other: DnsError) -> DnsError {
        if other.rank() > self.rank() { other } else { self }
    }
}

impl fmt::Display for DnsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DnsError::NxDomain => f.write_str("no such name"),
            DnsError::Timeout => f.write_str("no nameserver answered"),
            DnsError::ServerFailure => f.write_str("the nameservers failed to answer"),
            DnsError::Io(kind) => write!(f, "cannot reach the nameservers: {kind}"),
            DnsError::InvalidName => f.write_str("not a valid host name"),
            DnsError::Busy => f.write_str("too many DNS queries in flight"),
        }
    }
}

/// One family's answer for one waiter. `Ok` with an empty list: the name exists but has no
/// address of this family (NODATA, or a hosts-file name without one).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsAnswer {
    pub waiter: Waiter,
    /// The name asked for, normalized as the cache keys it (lower case, no trailing dot); as
    /// given for an IP literal or an invalid name. A UDP association asks for many names.
    pub name: String,
    pub family: Family,
    pub result: Result<Vec<IpAddr>, DnsError>,
}

/// Counters for metrics. A lookup counts twice, once per family: each family is a *hit*
/// (answered at once: an IP literal, the hosts file, the cache, positive or negative) or a
/// *miss* (it waits for a query, its own or one it joined), except for an invalid name, which
/// is only an error; each answer that is an error is counted once under its error.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DnsStats {
    pub hits: u64,
    pub misses: u64,
    /// Misses that joined a query already in flight.
    pub coalesced: u64,
    pub nxdomain: u64,
    pub timeouts: u64,
    /// Every other error: server failures, socket errors, invalid names, busy.
    pub errors: u64,
    /// Queries sent, over UDP and TCP alike.
    pub queries_sent: u64,
    /// Truncated UDP replies asked again over TCP.
    pub tcp_retries: u64,
    /// Datagrams (or TCP replies) that did not match their query: wrong id, question or
    /// source, or not a DNS reply at all.
    pub ignored: u64,
    /// Queries in flight now.
    pub in_flight: usize,
    /// Cache entries now.
    pub cached: usize,
}

/// The size of the one buffer UDP replies are read into (larger than the EDNS size we offer;
/// a longer datagram is cut and then ignored as malformed).
const UDP_BUF: usize = 4096;

/// The DNS client. See the module docs.
pub struct DnsClient {
    config: DnsConfig,
    hosts: Hosts,
    cache: Cache,
    /// Queries in flight; the key is the slot, `token::dns(key)` its socket's token.
    queries: Slab<Query>,
    in_flight: HashMap<(String, Family), usize>,
    /// Try deadlines: (when, slot, serial); lazily cancelled.
    deadlines: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    next_serial: u64,
    /// Slots whose socket may still hold datagrams (their read budget ran out), and since when.
    unread: Vec<usize>,
    unread_since: Option<Instant>,
    answers: VecDeque<DnsAnswer>,
    stats: DnsStats,
    buf: Box<[u8]>,
}

impl DnsClient {
    /// A client for `config`; reads the hosts file now (a missing file is an empty one).
    pub fn new(config: DnsConfig) -> io::Result<DnsClient> {
        if config.nameservers.is_empty() {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "no nameserver"));
        }
        let hosts = match &config.hosts_path {
            None => Hosts::default(),
            Some(path) => match std::fs::read(path) {
                Ok(bytes) => Hosts::parse(&String::from_utf8_lossy(&bytes)),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Hosts::default(),
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
            },
        };
        Ok(DnsClient {
            cache: Cache::new(config.cache_entries, config.max_ttl),
            config,
            hosts,
            queries: Slab::new(),
            in_flight: HashMap::new(),
            deadlines: BinaryHeap::new(),
            next_serial: 0,
            unread: Vec::new(),
            unread_since: None,
            answers: VecDeque::new(),
            stats: DnsStats::default(),
            buf: vec![0; UDP_BUF].into_boxed_slice(),
        })
    }

    /// Start (or join) the lookups of `name` for both families; answers known now (an IP
    /// literal, the hosts file, the cache) are queued at once, the IPv6 one first.
    pub fn lookup(&mut self, registry: &Registry, name: &str, waiter: Waiter, now: Instant) {
        match check_name(name) {
            NameCheck::Literal(ip) => {
                for family in [Family::V6, Family::V4] {
                    self.stats.hits += 1;
                    let addrs = if Family::of(ip) == family { vec![ip] } else { Vec::new() };
                    self.deliver(waiter, name, family, Ok(addrs));
                }
                return;
            }
            NameCheck::Invalid => {
                for family in [Family::V6, Family::V4] {
                    self.deliver(waiter, name, family, Err(DnsError::InvalidName));
                }
                return;
            }
            NameCheck::Lookup => {}
        }
        let name = hosts::normalize(name);
        if self.hosts.contains(&name) {
            for family in [Family::V6, Family::V4] {
                self.stats.hits += 1;
                let addrs = self.hosts.lookup(&name, family);
                self.deliver(waiter, &name, family, Ok(addrs));
            }
            return;
        }
        for family in [Family::V6, Family::V4] {
            if let Some(cached) = self.cache.get(&name, family, now) {
                self.stats.hits += 1;
                let result = match cached {
                    Cached::Addrs(addrs) => Ok(addrs),
                    Cached::NoData => Ok(Vec::new()),
                    Cached::NxDomain => Err(DnsError::NxDomain),
                };
                self.deliver(waiter, &name, family, result);
                continue;
            }
            self.stats.misses += 1;
            match self.in_flight.get(&(name.clone(), family)) {
                Some(&slot) => {
                    self.stats.coalesced += 1;
                    self.queries[slot].waiters.push(waiter);
                }
                None => self.start(registry, name.clone(), family, waiter, now),
            }
        }
    }

    /// A DNS socket's token fired (`token::dns_index` gave `index`). Events are hints: a stale
    /// one (its query is gone, or has moved on to another socket) does nothing.
    pub fn on_ready(&mut self, registry: &Registry, index: usize, now: Instant) {
        self.drive(registry, index, now);
    }

    /// Time has passed: time out the tries whose deadline is due (the next try starts), and
    /// go on reading sockets whose read budget ran out.
    pub fn on_timer(&mut self, registry: &Registry, now: Instant) {
        self.unread_since = None;
        for slot in std::mem::take(&mut self.unread) {
            self.drive(registry, slot, now);
        }
        while let Some(&Reverse((at, slot, serial))) = self.deadlines.peek() {
            if at > now {
                break;
            }
            self.deadlines.pop();
            if self.queries.get(slot).is_some_and(|query| query.serial == serial) {
                self.next_try(registry, slot, now);
            }
        }
    }

    /// When [`on_timer`](Self::on_timer) has work: a try's deadline, or at once (a time already
    /// past) when a socket has datagrams left to read. May be early (a stale deadline), never
    /// late.
    pub fn next_deadline(&self) -> Option<Instant> {
        let deadline = self.deadlines.peek().map(|Reverse((at, _, _))| *at);
        match (deadline, self.unread_since) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The next answer ready for its waiter.
    pub fn pop_answer(&mut self) -> Option<DnsAnswer> {
        self.answers.pop_front()
    }

    /// The waiter's connection closed: forget it, and drop its answers not yet popped. Its
    /// queries go on (others may wait for them, and their answers fill the cache). Costs a
    /// look at every query in flight.
    pub fn forget(&mut self, waiter: Waiter) {
        for (_, query) in self.queries.iter_mut() {
            query.waiters.retain(|w| *w != waiter);
        }
        self.answers.retain(|answer| answer.waiter != waiter);
    }

    pub fn stats(&self) -> DnsStats {
        DnsStats { in_flight: self.queries.len(), cached: self.cache.len(), ..self.stats }
    }

    /// Start a query for (`name`, `family`) with its first waiter.
    fn start(&mut self, registry: &Registry, name: String, family: Family, waiter: Waiter, now: Instant) {
        if self.queries.len() >= MAX_DNS_SOCKETS {
            self.deliver(waiter, &name, family, Err(DnsError::Busy));
            return;
        }
        let Ok(question) = Question::new(&name, family) else {
            self.deliver(waiter, &name, family, Err(DnsError::InvalidName));
            return;
        };
        let slot = self.queries.insert(Query::new(name.clone(), question, waiter));
        self.in_flight.insert((name, family), slot);
        self.next_try(registry, slot, now);
    }

    /// Start the query's next try, or end it with its most telling failure if none is left.
    fn next_try(&mut self, registry: &Registry, slot: usize, now: Instant) {
        let count = self.config.nameservers.len();
        let tries = self.config.attempts.max(1) * count;
        let token = token::dns(slot);
        loop {
            let query = &mut self.queries[slot];
            if query.tries >= tries {
                let error = query.error;
                self.finish(registry, slot, Err(error));
                return;
            }
            let server = self.config.nameservers[query.tries % count];
            query.tries += 1;
            match query.send_udp(registry, token, server) {
                Ok(()) => {
                    self.stats.queries_sent += 1;
                    self.arm(slot, now);
                    return;
                }
                Err(e) => {
                    log::debug!("dns: cannot ask {server} for {}: {e}", query.name);
                    query.error = query.error.or_more_telling(DnsError::Io(e.kind()));
                }
            }
        }
    }

    /// Give the query's current try `server_timeout` from `now`.
    fn arm(&mut self, slot: usize, now: Instant) {
        self.next_serial += 1;
        let serial = self.next_serial;
        self.queries[slot].serial = serial;
        self.deadlines.push(Reverse((now + self.config.server_timeout, slot, serial)));
    }

    /// Let the query at `slot` use its socket, and act on what it found.
    fn drive(&mut self, registry: &Registry, slot: usize, now: Instant) {
        let Some(query) = self.queries.get_mut(slot) else { return };
        match query.drive(&mut self.buf, &mut self.stats.ignored) {
            Step::Wait => {}
            Step::Budget => {
                if !self.unread.contains(&slot) {
                    self.unread.push(slot);
                }
                self.unread_since.get_or_insert(now);
            }
            Step::Failed(error) => {
                query.error = query.error.or_more_telling(error);
                self.next_try(registry, slot, now);
            }
            Step::Reply(reply) => self.on_reply(registry, slot, reply, now),
        }
    }

    fn on_reply(&mut self, registry: &Registry, slot: usize, reply: Reply, now: Instant) {
        let query = &mut self.queries[slot];
        let (name, family) = (query.name.clone(), query.family());
        match reply {
            Reply::Truncated if matches!(query.transport, Some(query::Transport::Udp(_))) => {
                match query.send_tcp(registry, token::dns(slot)) {
                    Ok(()) => {
                        self.stats.tcp_retries += 1;
                        self.stats.queries_sent += 1;
                        self.arm(slot, now);
                    }
                    Err(e) => {
                        query.error = query.error.or_more_telling(DnsError::Io(e.kind()));
                        self.next_try(registry, slot, now);
                    }
                }
            }
            // Truncated over TCP makes no sense: that server cannot help.
            Reply::Truncated | Reply::Failed { .. } => {
                query.error = query.error.or_more_telling(DnsError::ServerFailure);
                self.next_try(registry, slot, now);
            }
            Reply::Addrs { mut addrs, ttl } => {
                addrs.truncate(MAX_ADDRS);
                self.cache.insert(&name, family, Cached::Addrs(addrs.clone()), ttl, now);
                self.finish(registry, slot, Ok(addrs));
            }
            Reply::NoData { negative_ttl } => {
                if let Some(ttl) = negative_ttl {
                    self.cache.insert(&name, family, Cached::NoData, ttl, now);
                }
                self.finish(registry, slot, Ok(Vec::new()));
            }
            Reply::NxDomain { negative_ttl } => {
                if let Some(ttl) = negative_ttl {
                    self.cache.insert(&name, family, Cached::NxDomain, ttl, now);
                }
                self.finish(registry, slot, Err(DnsError::NxDomain));
            }
        }
    }

    /// End the query at `slot`: close its socket and answer every waiter.
    fn finish(&mut self, registry: &Registry, slot: usize, result: Result<Vec<IpAddr>, DnsError>) {
        let mut query = self.queries.remove(slot);
        query.close(registry);
        let family = query.family();
        let name = std::mem::take(&mut query.name);
        for &waiter in &query.waiters {
            self.deliver(waiter, &name, family, result.clone());
        }
        self.in_flight.remove(&(name, family));
    }

    fn deliver(&mut self, waiter: Waiter, name: &str, family: Family, result: Result<Vec<IpAddr>, DnsError>) {
        match &result {
            Ok(_) => {}
            Err(DnsError::NxDomain) => self.stats.nxdomain += 1,
            Err(DnsError::Timeout) => self.stats.timeouts += 1,
            Err(_) => self.stats.errors += 1,
        }
        self.answers.push_back(DnsAnswer { waiter, name: name.to_owned(), family, result });
    }
}
