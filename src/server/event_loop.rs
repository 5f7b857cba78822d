//! The event loop: one `mio::Poll` driving a slab of connection state machines.
//!
//! One pass of the loop reads like a list:
//!
//! 1. `poll` until an event, or until the next deadline (zero when work is left over); after a
//!    reload, take the new settings and end the connections of revoked users;
//! 2. dispatch each event: accept on listeners; for a connection's socket, record the
//!    readiness and wake the connection (queue it for a turn, once);
//! 3. give turns from the run queue ([`super::schedule`]): connections woken by events first,
//!    then those whose last turn left work, round robin, each at most one turn, within the
//!    pass's budget; one whose turn leaves work waits for the next pass;
//! 4. fire due deadlines (connections', the DNS client's, scrapes', a user's expiry) and
//!    wake-ups (rate-limited relays whose grant is due);
//! 5. hand resolver answers and password verdicts to their connections;
//! 6. remove connections that closed during this pass;
//! 7. resume accepting if it was paused and there is room again;
//! 8. with `--metrics`, set this loop's gauges (open connections, the DNS client's counters).
//!
//! With `--metrics`, worker 0's loop also serves `GET /metrics` (`crate::metrics::endpoint`):
//! its listener and scrapes are sockets of this `Poll` like any other, and every drive of a
//! connection is bracketed by two [`connection::Tally`]s whose difference is counted.
//!
//! Removal waits until the end of the pass so a slab key is never reused while events for
//! its old connection may still be in the batch (mio#219). The loop owns everything shared
//! between connections (the registry, the resolver, the timers, the scratch buffer, the pipe
//! pool) and lends it to one connection at a time through a [`Ctx`].

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Registry, Waker};
use slab::Slab;

use super::accept::{self, Acceptor};
use super::schedule::RunQueue;
use super::{Control, Shared};
use crate::config::{Config, LogFormat, RelayMode};
use crate::connection::{self, Connection, Ctx, Lookups, Resolution, Step};
use crate::dns::{DnsClient, DnsConfig, Waiter};
use crate::limits;
use crate::logging::ACCESS_TARGET;
use crate::metrics::endpoint::Endpoint;
use crate::metrics::{LookupResult, WorkerMetrics};
use crate::net::Readiness;
use crate::resolver::Resolver;
use crate::settings::{Settings, SettingsStore};
use crate::timer::Timers;
use crate::token::{self, Side, Target};
use crate::usage::Usage;
use crate::users::{self, Revoked, Users};
use crate::verifier::Passwords;

/// While some user has an expiry ahead, the loop looks at the clock at least this often, so an
/// account that expires while connected is closed at most this late (and a wall clock set
/// forward is noticed this soon).
const EXPIRY_CHECK_EVERY: Duration = Duration::from_secs(1);

/// The in-loop DNS client as a connection's [`Lookups`]: its sockets need the registry.
struct InLoopNames<'a> {
    client: &'a mut DnsClient,
    registry: &'a Registry,
}

impl Lookups for InLoopNames<'_> {
    fn lookup(&mut self, host: &str, key: usize, conn: u64, now: std::time::Instant) {
        self.client.lookup(self.registry, host, Waiter { key, conn }, now);
    }
}

/// Size of the loop-owned read buffer every relay shares: 64 KiB, plus room to put a UDP
/// header in front of the largest datagram without copying it.
const SCRATCH_SIZE: usize = 64 * 1024 + connection::HEADER_ROOM;

/// One event loop and everything it owns.
pub struct EventLoop {
    /// This loop's number, and how many there are (connection ids interleave by it).
    index: usize,
    count: usize,
    poll: Poll,
    waker: Arc<Waker>,
    acceptor: Acceptor,
    conns: Slab<Connection<Registry>>,
    /// Most connections this loop may hold (its share of the process's cap).
    max_connections: usize,
    /// Connections accepted so far (their ids derive from it).
    accepted: u64,
    timers: Timers,
    /// The system resolver on helper threads (without `--nameserver`).
    resolver: Resolver,
    /// The in-loop DNS client (with `--nameserver`).
    dns: Option<DnsClient>,
    /// Logins: this loop's side of the password verifier threads.
    passwords: Passwords,
    /// The relay's copy buffer, shared by every connection of this loop. Allocated when the
    /// first connection is driven: `calloc` zeroes (touches) it, and a proxy nobody has used
    /// yet should not carry those pages in its RSS.
    scratch: Box<[u8]>,
    /// Kernel pipes lent to relays on the splice path (`--relay splice` and `auto`).
    #[cfg(target_os = "linux")]
    pipes: Option<crate::relay::splice::PipePool>,
    config: Config,
    /// Where reloaded settings appear ([`SettingsStore::generation`] is checked every pass).
    settings_store: Arc<SettingsStore>,
    /// The settings this loop uses now, and the generation they are.
    settings: Arc<Settings>,
    settings_generation: u64,
    /// Connections per client and per user, shared by every loop.
    usage: Arc<Usage>,
    /// The earliest `expires` still ahead among the current users, and when the loop next
    /// looks at the clock for it (`None`: no user expires).
    next_expiry: Option<SystemTime>,
    expiry_check_at: Option<Instant>,
    /// Keys closed during this pass, removed at its end.
    closing: Vec<usize>,
    /// Connections woken (an event, or work left after their turn) waiting for a turn.
    run_queue: RunQueue,
    control: Arc<Control>,
    /// Set once draining has begun: when it must end.
    drain_deadline: Option<Instant>,
    now: Instant,
    /// Bumped every pass: the systemd watchdog's proof that this loop goes round.
    heartbeat: Arc<AtomicU64>,
    /// Wake at least this often even when idle (set when a watchdog is watching).
    wake_every: Option<Duration>,
    /// This loop's counters (`--metrics`); `None` skips every update.
    metrics: Option<Arc<WorkerMetrics>>,
    /// The `/metrics` endpoint (worker 0 with `--metrics`).
    endpoint: Option<Endpoint>,
}

impl EventLoop {
    pub fn new(
        config: Config,
        listeners: Vec<TcpListener>,
        shared: Shared,
        (index, count): (usize, usize),
    ) -> io::Result<EventLoop> {
        let poll = Poll::new()?;
        let acceptor = Acceptor::new(listeners, poll.registry(), config.tcp_keepalive)?;
        let waker = Arc::new(Waker::new(poll.registry(), token::WAKER)?);
        let resolver = Resolver::new(config.resolver_threads, Arc::clone(&waker));
        let passwords = Passwords::new(Arc::clone(&shared.verifier), Some(Arc::clone(&waker)));
        let dns = if config.in_loop_dns() {
            Some(DnsClient::new(DnsConfig::new(config.nameservers.clone()))?)
        } else {
            None
        };
        // The fd limit and --max-connections are per process: each loop gets its share.
        let nofile = limits::nofile_limit();
        let fd_cap = limits::connections_for_fd_limit(nofile);
        let total = config.max_connections.map_or(fd_cap, |n| n.min(fd_cap));
        let endpoint = match shared.endpoint {
            Some((listener, registry)) => Some(Endpoint::new(listener, registry, poll.registry())?),
            None => None,
        };
        #[cfg(target_os = "linux")]
        let pipes = (config.relay_mode != RelayMode::Copy)
            .then(|| crate::relay::splice::PipePool::new(nofile, config.workers));
        Ok(EventLoop {
            index,
            count,
            poll,
            waker,
            acceptor,
            conns: Slab::new(),
            max_connections: total.div_ceil(count).max(1),
            accepted: 0,
            timers: Timers::default(),
            resolver,
            dns,
            passwords,
            scratch: Box::default(),
            #[cfg(target_os = "linux")]
            pipes,
            config,
            settings: shared.settings.current(),
            settings_generation: shared.settings.generation(),
            settings_store: shared.settings,
            usage: shared.usage,
            next_expiry: None,
            expiry_check_at: None,
            closing: Vec::new(),
            run_queue: RunQueue::default(),
            control: shared.control,
            drain_deadline: None,
            now: Instant::now(),
            heartbeat: shared.heartbeat,
            wake_every: shared.wake_every,
            metrics: shared.metrics,
            endpoint,
        })
    }

    pub fn index(&self) -> usize {
        self.index
    }

    /// Wakes this loop from another thread (stop, drain).
    pub fn waker(&self) -> Arc<Waker> {
        Arc::clone(&self.waker)
    }

    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        log::debug!("event loop {} running; at most {} connections", self.index, self.max_connections);
        self.schedule_expiry_check(SystemTime::now());
        while !self.control.stop.load(Ordering::SeqCst) {
            if self.control.drain.load(Ordering::SeqCst) && self.drain_deadline.is_none() {
                self.begin_drain();
            }
            if let Some(deadline) = self.drain_deadline
                && (self.conns.is_empty() || Instant::now() >= deadline)
            {
                break;
            }
            if let Err(e) = self.poll.poll(&mut events, self.poll_timeout()) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            self.now = Instant::now();
            self.heartbeat.fetch_add(1, Ordering::Relaxed);
            self.take_reloaded_settings();
            for event in events.iter() {
                self.dispatch(event);
            }
            self.give_turns();
            self.fire_timers();
            self.fire_wakes();
            self.check_expiries();
            self.fire_dns_timers();
            self.fire_scrape_timers();
            self.deliver_answers();
            let freed = self.remove_closed();
            self.resume_accepting(freed);
            self.update_metrics();
        }
        if !self.conns.is_empty() {
            log::info!("stopping; closing {} connections", self.conns.len());
        }
        Ok(())
    }

    /// After a reload (SIGHUP), use the new settings from this pass on, and end (now, in this
    /// pass) the connections of users the new settings revoke: removed, expired, or with a new
    /// password ([`users::revocation`]). Other changes apply to new connections only.
    fn take_reloaded_settings(&mut self) {
        let generation = self.settings_store.generation();
        if generation == self.settings_generation {
            return;
        }
        self.settings_generation = generation;
        self.settings = self.settings_store.current();
        log::debug!("event loop {}: settings reloaded (generation {generation})", self.index);
        let now = SystemTime::now();
        self.end_revoked(now);
        self.schedule_expiry_check(now);
    }

    /// A user's expiry may have come: end their connections, and look again later.
    fn check_expiries(&mut self) {
        if self.expiry_check_at.is_none_or(|at| self.now < at) {
            return;
        }
        let now = SystemTime::now();
        if self.next_expiry.is_some_and(|at| now >= at) {
            self.end_revoked(now);
        }
        self.schedule_expiry_check(now);
    }

    /// When to look at the clock next: at the earliest expiry ahead, but at least every
    /// [`EXPIRY_CHECK_EVERY`] (the wall clock may be set meanwhile); never when no user
    /// expires.
    fn schedule_expiry_check(&mut self, now: SystemTime) {
        self.next_expiry = next_expiry(&self.settings.users, now);
        self.expiry_check_at = self.next_expiry.map(|at| {
            let left = at.duration_since(now).unwrap_or_default();
            Instant::now() + left.min(EXPIRY_CHECK_EVERY)
        });
    }

    /// Close every open connection whose user the current settings revoke at `now`, each with a
    /// typed reason and its access-log line; one log line per user says how many and why.
    fn end_revoked(&mut self, now: SystemTime) {
        if !self.settings.auth_required() {
            return;
        }
        let users = &self.settings.users;
        let revoked: Vec<(usize, String, Revoked)> = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.is_closed())
            .filter_map(|(key, conn)| {
                let user = conn.user()?;
                users::revocation(user, users, now).map(|why| (key, user.name.clone(), why))
            })
            .collect();
        let mut ended: BTreeMap<(String, Revoked), usize> = BTreeMap::new();
        for (key, name, why) in revoked {
            self.with_conn(key, |_, _| Step::Close(connection::CloseReason::of_revocation(why)));
            *ended.entry((name, why)).or_default() += 1;
        }
        for ((name, why), count) in ended {
            log::info!(
                "user '{}' revoked ({}): closed {count} open connection{}",
                name.escape_debug(),
                why.as_str(),
                if count == 1 { "" } else { "s" }
            );
        }
    }

    /// Close the listeners (new clients are refused by the kernel from now on) and give the
    /// open connections the grace period to finish.
    fn begin_drain(&mut self) {
        self.acceptor.close();
        let grace = self.config.shutdown_grace;
        self.drain_deadline = Some(Instant::now() + grace);
        if !self.conns.is_empty() {
            log::info!(
                "draining: {} connections have up to {:.1} s to finish",
                self.conns.len(),
                grace.as_secs_f64()
            );
        }
    }

    /// Sleep until the next deadline (or the watchdog's wake-up), not at all if work is left
    /// over.
    fn poll_timeout(&self) -> Option<Duration> {
        if self.run_queue.has_work() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        let dns = self.dns.as_ref().and_then(DnsClient::next_deadline);
        let wake = self.wake_every.map(|every| now + every);
        let scrapes = self.endpoint.as_ref().and_then(Endpoint::next_deadline);
        [
            self.timers.next_deadline(),
            self.acceptor.retry_at(),
            self.drain_deadline,
            dns,
            wake,
            scrapes,
            self.expiry_check_at,
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    fn dispatch(&mut self, event: &mio::event::Event) {
        match token::decode(event.token()) {
            Target::Waker => {} // answers and the stop flag are checked every pass
            Target::Listener(_) => self.accept(),
            Target::Dns(index) => {
                // Its answers are handed out with the resolver's, after the events.
                if let Some(dns) = self.dns.as_mut() {
                    dns.on_ready(self.poll.registry(), index, self.now);
                }
            }
            Target::Metrics(index) => {
                if let Some(endpoint) = self.endpoint.as_mut() {
                    endpoint.on_event(index, Readiness::of_event(event), self.poll.registry(), self.now);
                }
            }
            Target::Conn(key, side) => {
                // Every event is a hint: the connection may be gone or closing already. It is
                // driven in its turn, after every event of this batch is recorded: once, even
                // if several of its sockets are in the batch.
                if let Some(conn) = self.conns.get_mut(key)
                    && !conn.is_closed()
                {
                    conn.on_ready(side, Readiness::of_event(event));
                    self.run_queue.wake(key, conn.id);
                }
            }
        }
    }

    /// Run `f` on connection `key` with a context borrowed from the loop, then act on the step.
    /// Returns the payload bytes this drive delivered (what a turn is charged).
    fn with_conn(
        &mut self,
        key: usize,
        f: impl FnOnce(&mut Connection<Registry>, &mut Ctx<'_, Registry>) -> Step,
    ) -> u64 {
        let EventLoop {
            poll,
            conns,
            timers,
            resolver,
            dns,
            passwords,
            scratch,
            config,
            settings,
            usage,
            now,
            metrics,
            run_queue,
            ..
        } = self;
        let Some(conn) = conns.get_mut(key) else { return 0 };
        if conn.is_closed() {
            return 0;
        }
        if scratch.is_empty() {
            *scratch = vec![0; SCRATCH_SIZE].into_boxed_slice();
        }
        let mut in_loop;
        let names: &mut dyn Lookups = match dns {
            Some(client) => {
                in_loop = InLoopNames { client, registry: poll.registry() };
                &mut in_loop
            }
            None => resolver,
        };
        let mut ctx = Ctx {
            net: poll.registry(),
            names,
            passwords,
            timers,
            scratch,
            #[cfg(target_os = "linux")]
            pipes: self.pipes.as_mut(),
            config,
            settings,
            usage,
            now: *now,
            key,
            conn: conn.id,
        };
        // What this drive did is the difference between two tallies: the bytes it relayed
        // are charged to the pass's budget, and with --metrics all of it is counted.
        let before = conn.tally();
        let step = f(conn, &mut ctx);
        let after = conn.tally();
        if let Some(metrics) = metrics.as_deref() {
            metrics.on_progress(&before, &after);
            if let Some(user) = conn.user_usage() {
                user.add_bytes(
                    after.bytes_up.saturating_sub(before.bytes_up),
                    after.bytes_down.saturating_sub(before.bytes_down),
                );
            }
        }
        let moved = (after.bytes_up - before.bytes_up) + (after.bytes_down - before.bytes_down);
        match step {
            Step::Wait => {}
            Step::Again => run_queue.requeue(key, conn.id),
            Step::Close(reason) => {
                // Formatting costs even when the line is filtered out: skip it at warn. The
                // logger only formats and queues: a blocked output cannot stall the loop.
                let log = log::log_enabled!(target: ACCESS_TARGET, log::Level::Info);
                if log || metrics.is_some() {
                    let report = conn.report(reason, *now);
                    if let Some(metrics) = metrics.as_deref() {
                        metrics.on_close(report.command, report.reply, report.reason);
                    }
                    if log {
                        match config.log_format {
                            LogFormat::Text => log::info!("{report}"),
                            LogFormat::Json => {
                                log::info!(target: ACCESS_TARGET, "{}", report.json(SystemTime::now()));
                            }
                        }
                    }
                }
                conn.mark_closed();
                self.closing.push(key);
            }
        }
        moved
    }

    fn drive(&mut self, key: usize) -> u64 {
        self.with_conn(key, |conn, ctx| conn.drive(ctx))
    }

    /// Step 3 of a pass: drive the queued connections in order, each at most once, until the
    /// pass has given every turn it may or spent its byte budget. What is left keeps its
    /// place, and the loop polls (without sleeping) before the next pass.
    fn give_turns(&mut self) {
        self.run_queue.begin_pass();
        while let Some((key, id)) = self.run_queue.next_turn() {
            if self.conns.get(key).is_some_and(|conn| conn.id == id) {
                let moved = self.drive(key);
                self.run_queue.charge(moved);
            }
        }
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        while let Some((key, id, entry_at)) = self.timers.pop_due(now) {
            let expired = match self.conns.get_mut(key) {
                Some(conn) if conn.id == id => self.timers.check(&mut conn.deadline, entry_at, now, key, id),
                _ => false, // the connection is gone; its stale entry is simply dropped
            };
            if expired {
                self.with_conn(key, |conn, ctx| conn.on_timeout(ctx));
            }
        }
    }

    /// Queue the connections whose wake-up is due (rate-limited relays whose grant is due) for
    /// a turn, like a readiness event: the run queue gives it in the next pass (the poll does
    /// not sleep while it has work), so no connection gets two turns in one pass.
    fn fire_wakes(&mut self) {
        while let Some((key, id)) = self.timers.pop_wake(self.now) {
            if self.conns.get(key).is_some_and(|conn| conn.id == id) {
                self.run_queue.wake(key, id);
            }
        }
    }

    /// Close the scrapes whose time is up.
    fn fire_scrape_timers(&mut self) {
        if let Some(endpoint) = self.endpoint.as_mut()
            && endpoint.next_deadline().is_some_and(|at| at <= self.now)
        {
            endpoint.on_timer(self.now);
        }
    }

    /// The in-loop DNS client's retries and timeouts that are due.
    fn fire_dns_timers(&mut self) {
        if let Some(dns) = self.dns.as_mut()
            && dns.next_deadline().is_some_and(|at| at <= self.now)
        {
            dns.on_timer(self.poll.registry(), self.now);
        }
    }

    /// Hand the resolver threads' and the DNS client's answers, and the password verifier's
    /// verdicts, to their connections.
    fn deliver_answers(&mut self) {
        while let Some(answer) = self.resolver.try_answer() {
            if let Some(metrics) = &self.metrics {
                metrics.on_lookup(if answer.result.is_ok() { LookupResult::Ok } else { LookupResult::Error });
            }
            self.deliver(answer.key, answer.conn, &answer.host, Resolution::All(answer.result));
        }
        while let Some(answer) = self.dns.as_mut().and_then(DnsClient::pop_answer) {
            if let Some(metrics) = &self.metrics {
                metrics.on_lookup(LookupResult::of_dns(&answer.result));
            }
            let Waiter { key, conn } = answer.waiter;
            self.deliver(key, conn, &answer.name, Resolution::Family(answer.family, answer.result));
        }
        while let Some((waiter, verdict)) = self.passwords.next_verdict(self.now) {
            match self.conns.get(waiter.key) {
                Some(conn) if conn.id == waiter.conn => {}
                _ => continue, // the connection closed while its password was verified
            }
            self.with_conn(waiter.key, |conn, ctx| {
                conn.on_verified(ctx, verdict);
                conn.drive(ctx)
            });
        }
    }

    fn deliver(&mut self, key: usize, id: u64, host: &str, answer: Resolution) {
        match self.conns.get(key) {
            Some(conn) if conn.id == id => {}
            _ => return, // a late answer for a connection that is gone
        }
        self.with_conn(key, |conn, ctx| {
            conn.on_resolved(ctx, host, answer);
            conn.drive(ctx)
        });
    }

    /// Accept until the backlogs are empty, the cap is reached, or descriptors run out.
    fn accept(&mut self) {
        loop {
            let full = self.conns.len() >= self.max_connections;
            let Some((stream, addr)) = self.acceptor.next(full, self.now) else { return };
            self.admit(stream, addr);
        }
    }

    fn admit(&mut self, mut stream: TcpStream, addr: SocketAddr) {
        // A listed load balancer is let in; the client its PROXY header names is checked.
        let from_balancer = self.config.proxy_protocol.iter().any(|balancer| balancer.contains(addr.ip()));
        if !from_balancer && !self.settings.rules.client_allowed(addr.ip()) {
            // Closed before a byte is read or written: a denied client learns nothing.
            log::debug!("client {addr} denied by --allow-client rules");
            if let Some(metrics) = &self.metrics {
                metrics.on_deny();
            }
            return;
        }
        if !accept::INHERITED_FROM_LISTENER {
            accept::client_socket_options(socket2::SockRef::from(&stream), self.config.tcp_keepalive);
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = token::conn(key, Side::Client);
        if let Err(e) =
            self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("cannot register client {addr}: {e}");
            return;
        }
        // Ids interleave across loops (loop i of n hands out i+1, i+1+n, ...), so log lines
        // from different loops never share an id.
        let id = self.accepted * self.count as u64 + self.index as u64 + 1;
        self.accepted += 1;
        let mut conn = Connection::new(stream, addr, id, self.now);
        if from_balancer {
            conn.expect_proxy_header();
        }
        self.timers.set(&mut conn.deadline, self.now + self.config.handshake_timeout, key, id);
        log::debug!("conn {id}: accepted from {addr}");
        entry.insert(conn);
        if let Some(metrics) = &self.metrics {
            metrics.on_accept();
        }
        // The greeting often arrives with the connection: try it now instead of a poll later.
        self.drive(key);
    }

    /// `freed`: connections were removed in this pass.
    fn resume_accepting(&mut self, freed: bool) {
        let full = self.conns.len() >= self.max_connections;
        if self.acceptor.should_resume(full, freed, self.now) {
            self.accept();
        }
    }

    /// The gauges, once per pass: the connections still open and the DNS client's counters.
    fn update_metrics(&self) {
        if let Some(metrics) = &self.metrics {
            // Closed connections not removed yet (closed by a resumed accept) are not open.
            metrics.set_active(self.conns.len() - self.closing.len());
            if let Some(dns) = &self.dns {
                metrics.publish_dns(&dns.stats());
            }
        }
    }

    /// Returns whether anything was removed.
    fn remove_closed(&mut self) -> bool {
        let freed = !self.closing.is_empty();
        for key in self.closing.drain(..) {
            // Dropping the connection closes its sockets, which also removes them from epoll.
            self.conns.try_remove(key);
        }
        freed
    }
}

/// The earliest `expires` after `now` among `users`.
fn next_expiry(users: &Users, now: SystemTime) -> Option<SystemTime> {
    users.iter().filter_map(|user| user.expires).filter(|&at| at > now).min()
}
