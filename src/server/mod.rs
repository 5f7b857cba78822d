//! Running the server: binding the listeners, starting one event loop per worker thread,
//! and stopping them (at once, or by draining). The loop itself is [`event_loop`]; accepting
//! and its pacing are [`accept`].
//!
//! [`Server::start`] binds every listener first, so "address in use" is reported to the
//! caller before anything runs, then runs each worker's loop on its own thread. Workers
//! share nothing but the settings (users, rules; `src/settings.rs`), the connection counts
//! per client and per user (`src/usage.rs`), the password verifier (its threads, login cache
//! and throttle; `src/verifier/`) and the stop/drain flags ([`Control`]).

mod accept;
mod event_loop;
mod schedule;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::Waker;
use mio::net::TcpListener;

use crate::auth::AuthFileError;
use crate::config::Config;
use crate::listen;
use crate::metrics::{Registry, WorkerMetrics};
use crate::settings::{Reloaded, Reread, SettingsStore};
use crate::usage::Usage;
use event_loop::EventLoop;

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
    /// The `--metrics` address could not be listened on.
    Metrics {
        addr: SocketAddr,
        source: io::Error,
    },
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
            StartError::Metrics { addr, source } if source.kind() == io::ErrorKind::AddrInUse => {
                write!(f, "cannot serve metrics on {addr}: address already in use")
            }
            StartError::Metrics { addr, source } => write!(f, "cannot serve metrics on {addr}: {source}"),
        }
    }
}

impl std::error::Error for StartError {}

/// What the outside world asks of the loops; read by every worker once per pass.
#[derive(Default)]
pub(crate) struct Control {
    /// Stop now, closing every connection.
    pub(crate) stop: AtomicBool,
    /// Stop accepting, let connections finish for the grace period, then stop.
    pub(crate) drain: AtomicBool,
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

    pub(crate) fn wake_all(&self) {
        for waker in &self.wakers {
            let _ = waker.wake();
        }
    }
}

/// What a server starts with besides its [`Config`]: what the process was handed rather
/// than asked for on the command line (systemd's sockets and watchdog).
#[derive(Default)]
pub struct Launch {
    /// Listening sockets inherited from systemd (socket activation), served beside
    /// `config.listen`; nonblocking. With several workers each worker accepts from a
    /// duplicate of each: see [`Server::launch`].
    pub inherited: Vec<std::net::TcpListener>,
    /// Wake every loop at least this often, even when idle, so that its heartbeat shows it
    /// alive (the systemd watchdog). `None`: sleep until there is work.
    pub wake_every: Option<Duration>,
    /// Reads the configuration again on reload (the binary re-reads its command line and
    /// config file). `None`: a reload re-reads only the auth file of the starting `Config`.
    pub reread: Option<Reread>,
}

impl std::fmt::Debug for Launch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Launch")
            .field("inherited", &self.inherited)
            .field("wake_every", &self.wake_every)
            .field("reread", &self.reread.is_some())
            .finish()
    }
}

/// Each event loop's pass counter, bumped once per pass: proof that the loops go round (the
/// systemd watchdog reads it). A loop that has ended reads [`u64::MAX`].
#[derive(Clone, Debug)]
pub struct Heartbeats(Vec<Arc<AtomicU64>>);

impl Heartbeats {
    /// Every loop's counter now, in worker order.
    pub fn read(&self) -> Vec<u64> {
        self.0.iter().map(|beat| beat.load(Ordering::Relaxed)).collect()
    }
}

/// A running server.
pub struct Server {
    local_addrs: Vec<SocketAddr>,
    /// Where `/metrics` is served (`--metrics`), with the real port.
    metrics_addr: Option<SocketAddr>,
    settings: Arc<SettingsStore>,
    stopper: Stopper,
    heartbeats: Heartbeats,
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
        Server::launch(config, Launch::default(), on_exit)
    }

    /// [`Server::start_with_exit_hook`] with what the process inherited ([`Launch`]).
    ///
    /// An inherited socket cannot be bound again per worker with `SO_REUSEPORT`: it is one
    /// socket with one accept queue. Every worker gets a duplicate descriptor of it
    /// (`try_clone`, the same socket) and the original is closed. Each loop registers its descriptor with its own epoll,
    /// a new client wakes every loop, and whichever accepts first serves it; the others find
    /// the queue empty (`WouldBlock`). That costs a wasted wakeup per worker per burst of
    /// clients, small at a few workers, and keeps every worker serving the activated address.
    pub fn launch(
        config: Config,
        launch: Launch,
        on_exit: impl Fn() + Send + Sync + 'static,
    ) -> Result<Server, StartError> {
        let mut inherited = Vec::with_capacity(launch.inherited.len());
        for listener in launch.inherited {
            let addr = listener.local_addr().map_err(StartError::Setup)?;
            inherited.push((addr, listener));
        }
        if !config.auth.is_configured()
            && config.users.is_empty()
            && !config.allow_open_proxy
            && let Some(open) =
                config.listen.iter().chain(inherited.iter().map(|(a, _)| a)).find(|a| !a.ip().is_loopback())
        {
            return Err(StartError::OpenProxy(*open));
        }
        let settings = match launch.reread {
            Some(reread) => SettingsStore::open(&config, reread),
            None => SettingsStore::of(&config),
        };
        let settings = Arc::new(settings.map_err(StartError::Auth)?);
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
            for (addr, listener) in &inherited {
                // A duplicate descriptor of the same socket (close-on-exec, nonblocking like it).
                let listener =
                    listener.try_clone().map_err(|source| StartError::Listen { addr: *addr, source })?;
                listeners.push(TcpListener::from_std(listener));
            }
            listener_sets.push(listeners);
        }
        local_addrs.extend(inherited.iter().map(|(addr, _)| *addr));
        // The originals close here; each worker holds its own descriptor of the same socket.
        drop(inherited);
        // Connections per client and per user, over every worker (the caps, per-user metrics).
        let usage = Arc::new(Usage::default());
        // Metrics: every worker writes its own counters; worker 0 serves them all.
        let registry = config
            .metrics
            .map(|_| Arc::new(Registry::new(workers, config.in_loop_dns()).with_usage(Arc::clone(&usage))));
        let mut metrics_listener = match config.metrics {
            Some(addr) => {
                let listener =
                    listen::bind(addr, false).map_err(|source| StartError::Metrics { addr, source })?;
                Some(listener)
            }
            None => None,
        };
        let metrics_addr = match &metrics_listener {
            Some(listener) => Some(listener.local_addr().map_err(StartError::Setup)?),
            None => None,
        };
        let control = Arc::new(Control::default());
        // One verifier for the process: its threads, cache and login throttle serve every loop.
        let verifier =
            Arc::new(crate::verifier::Verifier::new(config.verifier_threads).map_err(StartError::Setup)?);
        let heartbeats = Heartbeats((0..workers).map(|_| Arc::new(AtomicU64::new(0))).collect());
        let mut loops = Vec::with_capacity(workers);
        for (index, listeners) in listener_sets.into_iter().enumerate() {
            let shared = Shared {
                settings: Arc::clone(&settings),
                verifier: Arc::clone(&verifier),
                usage: Arc::clone(&usage),
                control: Arc::clone(&control),
                heartbeat: Arc::clone(&heartbeats.0[index]),
                wake_every: launch.wake_every,
                metrics: registry.as_ref().map(|registry| registry.worker(index)),
                endpoint: match (index, &registry) {
                    (0, Some(registry)) => metrics_listener.take().map(|l| (l, Arc::clone(registry))),
                    _ => None,
                },
            };
            let worker = EventLoop::new(config.clone(), listeners, shared, (index, workers))
                .map_err(StartError::Setup)?;
            loops.push(worker);
        }
        let stopper = Stopper { control, wakers: loops.iter().map(EventLoop::waker).collect() };
        let mut threads = Vec::with_capacity(workers);
        let exit_notice = Arc::new(LastExitNotice { on_exit: Box::new(on_exit) });
        for worker in loops {
            let name = format!("socksloop-loop-{}", worker.index());
            let notice = Arc::clone(&exit_notice);
            let heartbeat = Arc::clone(&heartbeats.0[worker.index()]);
            let run = move || {
                let result = worker.run();
                // A finished loop has nothing left to prove to the watchdog.
                heartbeat.store(u64::MAX, Ordering::Relaxed);
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
        Ok(Server { local_addrs, metrics_addr, settings, stopper, heartbeats, threads })
    }

    /// Re-read users and rules (SIGHUP). On error the old ones stay in force; on success the
    /// loops take the new settings on their next pass and end revoked users' connections.
    pub fn reload(&self) -> Result<Reloaded, String> {
        self.reloader().reload()
    }

    /// A handle for reloading from another thread (the signal thread).
    pub fn reloader(&self) -> Reloader {
        Reloader { settings: Arc::clone(&self.settings), stopper: self.stopper.clone() }
    }

    /// The addresses actually bound (with the real port when 0 was asked for).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local_addrs
    }

    /// Where `GET /metrics` is served (`--metrics`), with the real port when 0 was asked for.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// The loops' pass counters (for the systemd watchdog).
    pub fn heartbeats(&self) -> Heartbeats {
        self.heartbeats.clone()
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

impl std::fmt::Debug for Stopper {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stopper({} loops)", self.wakers.len())
    }
}

/// Reloads the settings and wakes every loop so each takes them on its next pass.
#[derive(Clone, Debug)]
pub struct Reloader {
    settings: Arc<SettingsStore>,
    stopper: Stopper,
}

impl Reloader {
    pub fn reload(&self) -> Result<Reloaded, String> {
        let reloaded = self.settings.reload()?;
        self.stopper.wake_all();
        Ok(reloaded)
    }
}

/// What the workers share: only read-mostly things behind `Arc`s.
pub(crate) struct Shared {
    pub(crate) settings: Arc<SettingsStore>,
    /// The password verifier threads, the login cache and the brute-force throttle.
    pub(crate) verifier: Arc<crate::verifier::Verifier>,
    /// Connections per client and per user, over all workers.
    pub(crate) usage: Arc<Usage>,
    pub(crate) control: Arc<Control>,
    /// This loop's pass counter ([`Heartbeats`]).
    pub(crate) heartbeat: Arc<AtomicU64>,
    /// [`Launch::wake_every`].
    pub(crate) wake_every: Option<Duration>,
    /// This worker's counters (`--metrics`).
    pub(crate) metrics: Option<Arc<WorkerMetrics>>,
    /// Worker 0 with `--metrics`: the endpoint's listener and every worker's counters.
    pub(crate) endpoint: Option<(TcpListener, Arc<Registry>)>,
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
