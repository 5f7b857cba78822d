//! The event loop: one `mio::Poll` driving a slab of connection state machines.
//!
//! [`Server::start`] binds the listeners (so "address in use" is reported to the caller
//! before anything runs), then runs a [`Worker`] on its own thread. One pass of the loop
//! reads like a list:
//!
//! 1. `poll` until an event, or until the next deadline (zero when work is left over);
//! 2. dispatch each event: accept on listeners, drive the connection a token names;
//! 3. drive connections that ran out of their fairness budget last time;
//! 4. fire due deadlines;
//! 5. hand resolver answers to their connections;
//! 6. remove connections that closed during this pass;
//! 7. resume accepting if it was paused and there is room again.
//!
//! Removal waits until the end of the pass so a slab key is never reused while events for
//! its old connection may still be in the batch.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Waker};
use slab::Slab;

use crate::auth::{AuthFileError, CredentialStore};
use crate::config::Config;
use crate::connection::{Connection, Ctx, Step};
use crate::limits;
use crate::listen;
use crate::resolver::Resolver;
use crate::timer::Timers;
use crate::token::{self, Side, Target};

/// Size of the loop-owned read buffer every relay shares: 64 KiB, plus room to put a UDP
/// header in front of the largest datagram without copying it.
const SCRATCH_SIZE: usize = 64 * 1024 + crate::udp_relay::HEADER_ROOM;
/// After EMFILE/ENFILE, try accepting again this soon even if nothing closes.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// At a full connection table accepting pauses and resumes with every close, possibly
/// thousands of times a second: say so at most this often, with a count.
const PAUSE_WARNING_EVERY: Duration = Duration::from_secs(10);

/// Why the server could not start. Shown to the operator as one line.
#[derive(Debug)]
pub enum StartError {
    Listen {
        addr: SocketAddr,
        source: io::Error,
    },
    /// A non-loopback listen address without authentication and without `--allow-open-proxy`.
    OpenProxy(SocketAddr),
    Auth(AuthFileError),
    Setup(io::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Listen { addr, source } if source.kind() == io::ErrorKind::AddrInUse => {
                write!(f, "cannot listen on {addr}: address already in use (is another proxy running?)")
            }
            StartError::Listen { addr, source } if source.kind() == io::ErrorKind::AddrNotAvailable => {
                write!(f, "cannot listen on {addr}: no local interface has that address")
            }
            StartError::Listen { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            StartError::OpenProxy(addr) => write!(
                f,
                "refusing to listen on {addr} without authentication: anyone who can reach it could \
                 use this proxy (an open proxy). Add --auth-file (or SOCKSLOOP_USER/SOCKSLOOP_PASS), \
                 restrict clients with --allow-client, and pass --allow-open-proxy if this is intended"
            ),
            StartError::Auth(e) => write!(f, "cannot load credentials: {e}"),
            StartError::Setup(e) => write!(f, "cannot start the event loop: {e}"),
        }
    }
}

impl std::error::Error for StartError {}

/// What the outside world asks of the loops; read by every worker once per pass.
#[derive(Default)]
struct Control {
    /// Stop now, closing every connection.
    stop: AtomicBool,
    /// Stop accepting, let connections finish for the grace period, then stop.
    drain: AtomicBool,
}

/// Stops a running server from any thread (a signal handler thread, a test).
#[derive(Clone)]
pub struct Stopper {
    control: Arc<Control>,
    wakers: Vec<Arc<Waker>>,
}

impl Stopper {
    /// Stop at once: every connection is closed.
    pub fn stop(&self) {
        self.control.stop.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    /// Graceful stop: close the listeners, let established connections finish for up to
    /// `Config::shutdown_grace`, then close the rest.
    pub fn drain(&self) {
        self.control.drain.store(true, Ordering::SeqCst);
        self.wake_all();
    }

    fn wake_all(&self) {
        for waker in &self.wakers {
            let _ = waker.wake();
        }
    }
}

/// A running server.
pub struct Server {
    local_addrs: Vec<SocketAddr>,
    credentials: Option<Arc<CredentialStore>>,
    stopper: Stopper,
    threads: Vec<JoinHandle<io::Result<()>>>,
}

impl Server {
    /// Bind every listen address and start the event loop(s), each on its own thread.
    ///
    /// With `workers > 1` every worker gets its own `SO_REUSEPORT` listener on each address
    /// and the kernel spreads new connections between them; workers share nothing but the
    /// credentials and the stop/drain flags.
    pub fn start(config: Config) -> Result<Server, StartError> {
        Server::start_with_exit_hook(config, || {})
    }

    /// [`Server::start`], and call `on_exit` once the last event loop has ended (after a
    /// stop, a drain, an error or a panic). The binary uses it to end its signal loop, so no
    /// thread of its own has to sit waiting for the loops.
    pub fn start_with_exit_hook(
        config: Config,
        on_exit: impl Fn() + Send + Sync + 'static,
    ) -> Result<Server, StartError> {
        if !config.auth.is_configured()
            && !config.allow_open_proxy
            && let Some(&open) = config.listen.iter().find(|a| !a.ip().is_loopback())
        {
            return Err(StartError::OpenProxy(open));
        }
        let credentials = if config.auth.is_configured() {
            Some(Arc::new(CredentialStore::open(config.auth.clone()).map_err(StartError::Auth)?))
        } else {
            None
        };
        let workers = config.workers.max(1);
        let reuse_port = workers > 1;
        let mut local_addrs: Vec<SocketAddr> = Vec::with_capacity(config.listen.len());
        let mut listener_sets = Vec::with_capacity(workers);
        for index in 0..workers {
            let mut listeners = Vec::with_capacity(config.listen.len());
            for (i, &asked) in config.listen.iter().enumerate() {
                // Later workers bind the port the first one got (it matters when 0 was asked).
                let addr = local_addrs.get(i).copied().unwrap_or(asked);
                let listener =
                    listen::bind(addr, reuse_port).map_err(|source| StartError::Listen { addr, source })?;
                if index == 0 {
                    local_addrs.push(listener.local_addr().map_err(StartError::Setup)?);
                }
                listeners.push(listener);
            }
            listener_sets.push(listeners);
        }
        let control = Arc::new(Control::default());
        let mut loops = Vec::with_capacity(workers);
        for (index, listeners) in listener_sets.into_iter().enumerate() {
            let shared = Shared { credentials: credentials.clone(), control: Arc::clone(&control) };
            let worker = Worker::new(config.clone(), listeners, shared, (index, workers))
                .map_err(StartError::Setup)?;
            loops.push(worker);
        }
        let stopper = Stopper { control, wakers: loops.iter().map(|w| Arc::clone(&w.waker)).collect() };
        let mut threads = Vec::with_capacity(workers);
        let exit_notice = Arc::new(LastExitNotice { on_exit: Box::new(on_exit) });
        for worker in loops {
            let name = format!("socksloop-loop-{}", worker.index);
            let notice = Arc::clone(&exit_notice);
            let run = move || {
                let result = worker.run();
                drop(notice); // the last loop to let go of it calls on_exit
                result
            };
            match thread::Builder::new().name(name).spawn(run) {
                Ok(thread) => threads.push(thread),
                Err(e) => {
                    stopper.stop();
                    return Err(StartError::Setup(e));
                }
            }
        }
        Ok(Server { local_addrs, credentials, stopper, threads })
    }

    /// Re-read the credentials (SIGHUP). On error the old ones stay in force.
    /// Established connections are not touched. Returns the number of users.
    pub fn reload_credentials(&self) -> Result<usize, AuthFileError> {
        match &self.credentials {
            Some(store) => store.reload(),
            None => Ok(0),
        }
    }

    /// A handle for reloading from another thread (the signal thread).
    pub fn credential_store(&self) -> Option<Arc<CredentialStore>> {
        self.credentials.clone()
    }

    /// The addresses actually bound (with the real port when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    pub fn stopper(&self) -> Stopper {
        self.stopper.clone()
    }

    /// Ask the loops to stop at once; [`Server::wait`] returns once they have.
    pub fn stop(&self) {
        self.stopper.stop();
    }

    /// Ask the loops to drain: stop accepting, let connections finish within the grace period.
    pub fn drain(&self) {
        self.stopper.drain();
    }

    /// Wait for the event loop to finish; its error, if it failed.
    pub fn wait(mut self) -> io::Result<()> {
        self.join()
    }

    fn join(&mut self) -> io::Result<()> {
        let mut result = Ok(());
        for thread in self.threads.drain(..) {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => result = Err(e),
                Err(_) => result = Err(io::Error::other("event loop thread panicked")),
            }
        }
        result
    }
}

impl Drop for Server {
    /// Dropping a server stops it, so tests never leak loops.
    fn drop(&mut self) {
        self.stop();
        let _ = self.join();
    }
}

/// What the workers share: only read-mostly things behind `Arc`s.
struct Shared {
    credentials: Option<Arc<CredentialStore>>,
    control: Arc<Control>,
}

/// Calls its hook when the last clone is dropped, that is when the last event loop thread
/// ends: `Drop` runs on a normal return and while unwinding from a panic alike.
struct LastExitNotice {
    on_exit: Box<dyn Fn() + Send + Sync>,
}

impl Drop for LastExitNotice {
    fn drop(&mut self) {
        (self.on_exit)();
    }
}

/// One event loop and everything it owns.
struct Worker {
    /// This worker's number, and how many there are (connection ids interleave by it).
    index: usize,
    count: usize,
    poll: Poll,
    waker: Arc<Waker>,
    listeners: Vec<TcpListener>,
    conns: Slab<Connection>,
    timers: Timers,
    resolver: Resolver,
    /// The relay's copy buffer, shared by every connection of this loop. Allocated when the
    /// first connection is driven: `calloc` zeroes (touches) it, and a proxy nobody has used
    /// yet should not carry those pages in its RSS.
    scratch: Box<[u8]>,
    config: Config,
    credentials: Option<Arc<CredentialStore>>,
    max_connections: usize,
    next_generation: u64,
    /// Keys closed during this pass, removed at its end.
    closing: Vec<usize>,
    /// Keys whose fairness budget ran out: drive again without waiting for an event.
    ready_again: Vec<usize>,
    /// Accepting stopped (connection cap, or out of file descriptors).
    accept_paused: bool,
    /// When to retry accepting after running out of file descriptors.
    accept_retry_at: Option<Instant>,
    /// When a pause was last logged, and how many pauses went unlogged since.
    pause_warned_at: Option<Instant>,
    pauses_unlogged: u64,
    control: Arc<Control>,
    /// Set once draining has begun: when it must end.
    drain_deadline: Option<Instant>,
    now: Instant,
}

impl Worker {
    fn new(
        config: Config,
        mut listeners: Vec<TcpListener>,
        shared: Shared,
        (index, count): (usize, usize),
    ) -> io::Result<Worker> {
        let poll = Poll::new()?;
        for (i, listener) in listeners.iter_mut().enumerate() {
            poll.registry().register(listener, token::listener(i), Interest::READABLE)?;
        }
        let waker = Arc::new(Waker::new(poll.registry(), token::WAKER)?);
        let resolver = Resolver::start(config.resolver_threads, Arc::clone(&waker));
        // The fd limit and --max-connections are per process: each worker gets its share.
        let fd_cap = limits::connections_for_fd_limit(limits::nofile_limit());
        let total = config.max_connections.map_or(fd_cap, |n| n.min(fd_cap));
        let max_connections = total.div_ceil(count).max(1);
        Ok(Worker {
            index,
            count,
            poll,
            waker,
            listeners,
            conns: Slab::new(),
            timers: Timers::default(),
            resolver,
            scratch: Box::default(),
            config,
            credentials: shared.credentials,
            max_connections,
            next_generation: 0,
            closing: Vec::new(),
            ready_again: Vec::new(),
            accept_paused: false,
            accept_retry_at: None,
            pause_warned_at: None,
            pauses_unlogged: 0,
            control: shared.control,
            drain_deadline: None,
            now: Instant::now(),
        })
    }

    fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        log::debug!("event loop {} running; at most {} connections", self.index, self.max_connections);
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
            for event in events.iter() {
                self.dispatch(event);
            }
            self.drive_ready_again();
            self.fire_timers();
            self.deliver_answers();
            let freed = self.remove_closed();
            self.resume_accepting(freed);
        }
        if !self.conns.is_empty() {
            log::info!("stopping; closing {} connections", self.conns.len());
        }
        Ok(())
    }

    /// Close the listeners (new clients are refused by the kernel from now on) and give the
    /// open connections the grace period to finish.
    fn begin_drain(&mut self) {
        self.listeners.clear();
        self.accept_paused = true;
        self.accept_retry_at = None;
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

    /// Sleep until the next deadline, not at all if work is left over.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.ready_again.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = Instant::now();
        [self.timers.next_deadline(), self.accept_retry_at, self.drain_deadline]
            .into_iter()
            .flatten()
            .min()
            .map(|at| at.saturating_duration_since(now))
    }

    fn dispatch(&mut self, event: &mio::event::Event) {
        match token::decode(event.token()) {
            Target::Waker => {} // answers and the stop flag are checked every pass
            Target::Listener(_) => self.accept(),
            Target::Conn(key, side) => {
                // Every event is a hint: the connection may be gone or closing already.
                match self.conns.get_mut(key) {
                    Some(conn) if !conn.is_closed() => conn.record(side, event),
                    _ => return,
                }
                self.drive(key);
            }
        }
    }

    /// Run `f` on connection `key` with a context borrowed from the loop, then act on the step.
    fn with_conn(&mut self, key: usize, f: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> Step) {
        let Worker { poll, conns, timers, resolver, scratch, config, credentials, now, .. } = self;
        let Some(conn) = conns.get_mut(key) else { return };
        if conn.is_closed() {
            return;
        }
        if scratch.is_empty() {
            *scratch = vec![0; SCRATCH_SIZE].into_boxed_slice();
        }
        let mut ctx = Ctx {
            registry: poll.registry(),
            resolver,
            timers,
            scratch,
            config,
            credentials: credentials.as_deref(),
            now: *now,
            key,
        };
        match f(conn, &mut ctx) {
            Step::Wait => {}
            Step::Again => self.ready_again.push(key),
            Step::Close(reason) => {
                conn.log_finish(reason, *now);
                conn.mark_closed();
                self.closing.push(key);
            }
        }
    }

    fn drive(&mut self, key: usize) {
        self.with_conn(key, |conn, ctx| conn.drive(ctx));
    }

    fn drive_ready_again(&mut self) {
        for key in std::mem::take(&mut self.ready_again) {
            self.drive(key);
        }
    }

    fn fire_timers(&mut self) {
        let now = self.now;
        while let Some((key, generation, entry_at)) = self.timers.pop_due(now) {
            let expired = match self.conns.get_mut(key) {
                Some(conn) if conn.generation == generation => {
                    self.timers.check(&mut conn.deadline, entry_at, now, key, generation)
                }
                _ => false, // the connection is gone; its stale entry is simply dropped
            };
            if expired {
                self.with_conn(key, |conn, ctx| conn.on_timeout(ctx));
            }
        }
    }

    fn deliver_answers(&mut self) {
        while let Some(answer) = self.resolver.try_answer() {
            let key = answer.key;
            match self.conns.get(key) {
                Some(conn) if conn.generation == answer.generation => {}
                _ => continue, // late answer for a connection that is gone
            }
            self.with_conn(key, |conn, ctx| {
                conn.on_resolved(ctx, &answer.host, answer.result);
                conn.drive(ctx)
            });
        }
    }

    /// Accept until the backlog is empty, the cap is reached, or descriptors run out.
    fn accept(&mut self) {
        if self.accept_paused {
            return;
        }
        for index in 0..self.listeners.len() {
            loop {
                if self.conns.len() >= self.max_connections {
                    let max = self.max_connections;
                    self.pause_accepting(format_args!("connection limit ({max}) reached"));
                    return;
                }
                match self.listeners[index].accept() {
                    Ok((stream, addr)) => self.admit(stream, addr),
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) if is_out_of_resources(&e) => {
                        self.pause_accepting(format_args!("accept: {e}"));
                        self.accept_retry_at = Some(self.now + ACCEPT_RETRY);
                        return;
                    }
                    // ECONNABORTED and friends concern one client only.
                    Err(e) => log::debug!("accept: {e}"),
                }
            }
        }
    }

    fn admit(&mut self, mut stream: mio::net::TcpStream, addr: SocketAddr) {
        if !self.config.rules.client_allowed(addr.ip()) {
            // Closed before a byte is read or written: a denied client learns nothing.
            log::debug!("client {addr} denied by --allow-client rules");
            return;
        }
        let _ = stream.set_nodelay(true);
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let token = token::conn(key, Side::Client);
        if let Err(e) =
            self.poll.registry().register(&mut stream, token, Interest::READABLE | Interest::WRITABLE)
        {
            log::warn!("cannot register client {addr}: {e}");
            return;
        }
        // Ids interleave across workers (worker i of n hands out i+1, i+1+n, ...), so log
        // lines from different workers never share an id.
        self.next_generation += 1;
        let id = (self.next_generation - 1) * self.count as u64 + self.index as u64 + 1;
        let mut conn = Connection::new(stream, addr, id, self.now);
        self.timers.set(&mut conn.deadline, self.now + self.config.handshake_timeout, key, conn.generation);
        log::debug!("conn {}: accepted from {addr}", conn.generation);
        entry.insert(conn);
        // The greeting often arrives with the connection: try it now instead of a poll later.
        self.drive(key);
    }

    /// Stop accepting until a connection closes; warn, but not more than once per
    /// [`PAUSE_WARNING_EVERY`].
    fn pause_accepting(&mut self, why: std::fmt::Arguments<'_>) {
        self.accept_paused = true;
        let quiet = self.pause_warned_at.is_some_and(|at| self.now.duration_since(at) < PAUSE_WARNING_EVERY);
        if quiet {
            self.pauses_unlogged += 1;
            log::debug!("{why}; accepting paused");
            return;
        }
        match std::mem::take(&mut self.pauses_unlogged) {
            0 => log::warn!("{why}; accepting paused until a connection closes"),
            n => log::warn!("{why}; accepting paused until a connection closes ({n} more pauses not logged)"),
        }
        self.pause_warned_at = Some(self.now);
    }

    /// `freed`: connections were removed in this pass.
    fn resume_accepting(&mut self, freed: bool) {
        if !self.accept_paused || self.conns.len() >= self.max_connections {
            return;
        }
        // Out of descriptors: retry when something closed, or when the retry time comes.
        if let Some(at) = self.accept_retry_at
            && !freed
            && self.now < at
        {
            return;
        }
        self.accept_paused = false;
        self.accept_retry_at = None;
        // Edge-triggered listeners will not report clients already waiting in the backlog.
        self.accept();
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

fn is_out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
