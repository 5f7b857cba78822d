//! The `/metrics` endpoint: a listener on worker 0's `Poll` and the scrapes in progress, all
//! nonblocking, on the loop's own thread (no runtime, no thread of its own).
//!
//! A scrape goes **reading → writing → draining → closed**:
//!
//! 1. *reading*: bytes are appended to a buffer of at most [`MAX_HEAD`] bytes and the pure
//!    parser ([`http::parse_request`]) runs again after each read, until the request head is
//!    complete or refused;
//! 2. *writing*: the whole response (status line, headers, the exposition rendered from every
//!    worker's counters at that moment) is written as the socket takes it; what it does not
//!    take waits for the next writable edge;
//! 3. *draining*: once everything is written the write side is shut down (FIN) and whatever
//!    the client still sends is read and discarded until its own FIN. Closing a socket with
//!    unread bytes would send a reset, and a reset can destroy the response before the client
//!    has read it (the same lingering close as a rejected SOCKS client's).
//!
//! **Bounds.** At most [`MAX_SCRAPES`] scrapes are open at once: a connection beyond that is
//! accepted and closed at once (Prometheus scrapes one target with one connection at a time,
//! so only a misbehaving client meets this). Each scrape has one deadline,
//! [`SCRAPE_TIMEOUT`] after its accept, for all three steps: a client that sends nothing,
//! sends its head a byte at a time, or never reads the response is closed then. The loop
//! folds [`Endpoint::next_deadline`] into its `poll` timeout. A drive reads at most
//! [`DRIVE_BUDGET`] bytes, so a client that floods the endpoint cannot hold the loop.
//!
//! Tokens: the listener is `token::metrics(0)`, scrape `key` of the slab is
//! `token::metrics(key + 1)`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Interest;
use mio::net::{TcpListener, TcpStream};
use slab::Slab;

use super::Registry;
use super::http::{self, MAX_HEAD, Route};
use crate::net::{End, ReadOutcome, Readiness, WriteOutcome};
use crate::protocol::Parse;
use crate::token;

/// The most scrapes open at once.
pub const MAX_SCRAPES: usize = 16;
/// How long a scrape may take from accept to close, everything included.
pub const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);
/// The most bytes one drive of a scrape reads (reading or draining).
pub const DRIVE_BUDGET: usize = 64 * 1024;

// Scrape keys are below MAX_SCRAPES and their tokens follow the listener's.
const _: () = assert!(MAX_SCRAPES < token::MAX_METRICS_SOCKETS);

/// Where a scrape stands.
enum State {
    /// The request head so far.
    Reading(Vec<u8>),
    /// The response, and how much of it the client has taken.
    Writing { out: Vec<u8>, sent: usize },
    /// Our FIN is sent: discard until the client's.
    Draining,
}

struct Scrape {
    end: End<TcpStream>,
    peer: SocketAddr,
    state: State,
    deadline: Instant,
}

/// What a drive decided.
#[derive(Debug, PartialEq, Eq)]
enum Next {
    Wait,
    Close,
}

/// The endpoint: its listener and the scrapes in progress.
pub struct Endpoint {
    listener: TcpListener,
    scrapes: Slab<Scrape>,
    registry: Arc<Registry>,
}

impl Endpoint {
    /// Serve `registry` on `listener` (bound and nonblocking), registered with `poll`.
    pub fn new(
        mut listener: TcpListener,
        registry: Arc<Registry>,
        poll: &mio::Registry,
    ) -> io::Result<Endpoint> {
        poll.register(&mut listener, token::metrics(0), Interest::READABLE)?;
        Ok(Endpoint { listener, scrapes: Slab::with_capacity(MAX_SCRAPES), registry })
    }

    /// An event for metrics socket `index` (`Target::Metrics(index)`).
    pub fn on_event(&mut self, index: usize, news: Readiness, poll: &mio::Registry, now: Instant) {
        if index == 0 {
            self.accept(poll, now);
            return;
        }
        let key = index - 1;
        let Some(scrape) = self.scrapes.get_mut(key) else { return }; // stale: closed already
        scrape.end.ready.add(news);
        self.drive(key);
    }

    /// When the earliest scrape runs out of time.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.scrapes.iter().map(|(_, scrape)| scrape.deadline).min()
    }

    /// Close the scrapes whose time is up.
    pub fn on_timer(&mut self, now: Instant) {
        self.scrapes.retain(|_, scrape| {
            let alive = scrape.deadline > now;
            if !alive {
                log::debug!("metrics: scrape from {} timed out", scrape.peer);
            }
            alive
        });
    }

    /// Accept every waiting client (the listener is edge-triggered: until `WouldBlock`).
    fn accept(&mut self, poll: &mio::Registry, now: Instant) {
        loop {
            let (mut stream, peer) = match self.listener.accept() {
                Ok(accepted) => accepted,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Out of descriptors, or one client's trouble: the next event retries.
                    log::debug!("metrics: accept: {e}");
                    return;
                }
            };
            if self.scrapes.len() >= MAX_SCRAPES {
                log::debug!("metrics: {MAX_SCRAPES} scrapes open; closing the one from {peer}");
                continue; // dropped: closed
            }
            let entry = self.scrapes.vacant_entry();
            let key = entry.key();
            let token = token::metrics(key + 1);
            if let Err(e) = poll.register(&mut stream, token, Interest::READABLE | Interest::WRITABLE) {
                log::debug!("metrics: cannot register the scrape from {peer}: {e}");
                continue;
            }
            log::debug!("metrics: scrape from {peer}");
            entry.insert(Scrape {
                // The request often arrives with the connection: read at once.
                end: End::new(stream, Readiness::BOTH),
                peer,
                state: State::Reading(Vec::new()),
                deadline: now + SCRAPE_TIMEOUT,
            });
            self.drive(key);
        }
    }

    fn drive(&mut self, key: usize) {
        let Some(scrape) = self.scrapes.get_mut(key) else { return };
        if scrape.drive(&self.registry) == Next::Close {
            self.scrapes.remove(key); // dropping the stream closes it and leaves epoll
        }
    }
}

impl Scrape {
    /// Go as far as the socket lets us.
    fn drive(&mut self, registry: &Registry) -> Next {
        let mut chunk = [0u8; 4096];
        let mut budget = DRIVE_BUDGET;
        loop {
            match &mut self.state {
                State::Reading(head) => {
                    // Never more than the parser can look at: it refuses the head at MAX_HEAD.
                    let room = (MAX_HEAD - head.len()).min(chunk.len());
                    match self.end.read(&mut chunk[..room]) {
                        ReadOutcome::Data(n) => {
                            // At most MAX_HEAD bytes are read here, far below the budget.
                            head.extend_from_slice(&chunk[..n]);
                            let route = match http::parse_request(head) {
                                Parse::Partial => continue,
                                Parse::Complete(request, _) => http::route(Ok(&request)),
                                Parse::Invalid(why) => {
                                    log::debug!("metrics: bad request from {}: {why:?}", self.peer);
                                    http::route(Err(why))
                                }
                            };
                            let body = match route {
                                Route::Metrics { .. } => registry.render(),
                                _ => String::new(),
                            };
                            self.state =
                                State::Writing { out: http::response(route, body.as_bytes()), sent: 0 };
                        }
                        ReadOutcome::WouldBlock => return Next::Wait,
                        // A client that ends before its head is complete gets nothing.
                        ReadOutcome::Eof | ReadOutcome::Failed(_) => return Next::Close,
                    }
                }
                State::Writing { out, sent } => match self.end.write(&out[*sent..]) {
                    WriteOutcome::Wrote(n) => {
                        *sent += n;
                        if *sent == out.len() {
                            if self.end.socket.shutdown(std::net::Shutdown::Write).is_err() {
                                return Next::Close;
                            }
                            self.state = State::Draining;
                        }
                    }
                    WriteOutcome::WouldBlock => return Next::Wait,
                    WriteOutcome::Failed(_) => return Next::Close,
                },
                State::Draining => match self.end.read(&mut chunk) {
                    ReadOutcome::Data(n) => {
                        budget = budget.saturating_sub(n);
                        if budget == 0 {
                            return Next::Wait;
                        }
                    }
                    ReadOutcome::WouldBlock => return Next::Wait,
                    ReadOutcome::Eof | ReadOutcome::Failed(_) => return Next::Close,
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Target;
    use std::io::{Read, Write};

    /// An endpoint on loopback, driven by hand on a clock the test sets.
    struct Rig {
        poll: mio::Poll,
        events: mio::Events,
        endpoint: Endpoint,
        addr: SocketAddr,
    }

    impl Rig {
        fn new() -> Rig {
            let poll = mio::Poll::new().unwrap();
            let listener = crate::listen::bind("127.0.0.1:0".parse().unwrap(), false).unwrap();
            let addr = listener.local_addr().unwrap();
            let endpoint =
                Endpoint::new(listener, Arc::new(Registry::new(1, false)), poll.registry()).unwrap();
            Rig { poll, events: mio::Events::with_capacity(64), endpoint, addr }
        }

        /// Poll (at most 50 ms) and hand the events to the endpoint, as the loop does.
        fn pass(&mut self, now: Instant) {
            self.poll.poll(&mut self.events, Some(Duration::from_millis(50))).unwrap();
            for event in self.events.iter() {
                if let Target::Metrics(index) = token::decode(event.token()) {
                    self.endpoint.on_event(index, Readiness::of_event(event), self.poll.registry(), now);
                }
            }
        }

        /// Pass until `done` holds (at most 200 passes).
        fn pass_until(&mut self, now: Instant, done: impl Fn(&Endpoint) -> bool) {
            for _ in 0..200 {
                if done(&self.endpoint) {
                    return;
                }
                self.pass(now);
            }
            panic!("the endpoint did not get there");
        }

        fn client(&self) -> std::net::TcpStream {
            let stream = std::net::TcpStream::connect(self.addr).unwrap();
            stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            stream
        }
    }

    #[test]
    fn a_silent_scraper_is_closed_at_its_deadline_and_not_before() {
        let mut rig = Rig::new();
        let start = Instant::now();
        let mut silent = rig.client();
        rig.pass_until(start, |e| e.scrapes.len() == 1);
        assert_eq!(rig.endpoint.next_deadline(), Some(start + SCRAPE_TIMEOUT));
        rig.endpoint.on_timer(start + SCRAPE_TIMEOUT - Duration::from_millis(1));
        assert_eq!(rig.endpoint.scrapes.len(), 1, "not before its deadline");
        rig.endpoint.on_timer(start + SCRAPE_TIMEOUT);
        assert_eq!(rig.endpoint.scrapes.len(), 0);
        assert_eq!(rig.endpoint.next_deadline(), None);
        let mut buf = [0u8; 16];
        assert_eq!(silent.read(&mut buf).unwrap(), 0, "closed without an answer");
    }

    #[test]
    fn a_scrape_is_answered_then_closed_after_the_clients_fin() {
        let mut rig = Rig::new();
        let now = Instant::now();
        let mut client = rig.client();
        client.write_all(b"GET /metrics HTTP/1.1\r\n\r\n").unwrap();
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        // Read until our FIN (the response is complete), driving the endpoint meanwhile.
        client.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        loop {
            rig.pass(now);
            match client.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => response.extend_from_slice(&buf[..n]),
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
                Err(e) => panic!("{e}"),
            }
        }
        let text = String::from_utf8(response).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n") && text.contains("socksloop_connections_active 0\n"));
        // The endpoint waits for the client's FIN before it lets go of the socket.
        assert_eq!(rig.endpoint.scrapes.len(), 1, "draining until the client's FIN");
        drop(client);
        rig.pass_until(now, |e| e.scrapes.is_empty());
    }

    #[test]
    fn beyond_the_cap_a_client_is_closed_at_once() {
        let mut rig = Rig::new();
        let now = Instant::now();
        let held: Vec<_> = (0..MAX_SCRAPES).map(|_| rig.client()).collect();
        rig.pass_until(now, |e| e.scrapes.len() == MAX_SCRAPES);
        let mut extra = rig.client();
        rig.pass(now);
        let mut buf = [0u8; 16];
        let closed = match extra.read(&mut buf) {
            Ok(n) => n == 0,
            Err(e) => e.kind() == io::ErrorKind::ConnectionReset,
        };
        assert!(closed, "closed at once");
        assert_eq!(rig.endpoint.scrapes.len(), MAX_SCRAPES);
        drop(held);
        rig.pass_until(now, |e| e.scrapes.is_empty());
    }
}
