//! The `socksloop` binary: flags → config → logging → server, and errors → exit codes.
//!
//! Exit codes: 0 after a clean stop (SIGINT/SIGTERM), 1 when the server cannot start or the
//! loop fails, 2 for a bad command line.
//!
//! Under systemd it also takes the sockets of a socket unit and tells systemd how it is
//! doing (`socksloop::systemd`).

mod hash_password;

use std::ffi::OsString;
use std::process::ExitCode;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use socksloop::config::{self, Action};
use socksloop::systemd::{self, Notifier, Watchdog, message};
use socksloop::{Launch, Reloader, Server, Stopper, limits};
use std::sync::Arc;

fn main() -> ExitCode {
    let code = run();
    // Lines still queued for the log-writer thread would be lost at exit: wait for them (a
    // bounded wait, in case the output is blocked).
    log::logger().flush();
    code
}

fn run() -> ExitCode {
    // SAFETY: this is the first thing the process does, and no thread exists yet (logging,
    // the signal handlers, the loops and their resolver threads all start below), so nothing
    // can read the environment while systemd's variables are removed from it.
    let from_systemd = unsafe { systemd::Environment::take() };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let reread_args = args.clone();
    let mut config = match config::parse_args(args) {
        Ok(Action::Run(config)) => *config,
        Ok(Action::PrintHelp) => {
            print!("{}", config::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Action::PrintVersion) => {
            println!("socksloop {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
        Ok(Action::HashPassword) => return hash_password::run(),
        Err(e) => {
            eprintln!("socksloop: error: {e}");
            return ExitCode::from(2);
        }
    };
    match env_user() {
        Ok(user) => config.auth.env_user = user,
        Err(e) => {
            eprintln!("socksloop: error: {e}");
            return ExitCode::from(2);
        }
    }
    if let Err(e) = socksloop::logging::init(config.log_level) {
        eprintln!("socksloop: error: cannot start logging: {e}");
        return ExitCode::FAILURE;
    }
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    match limits::raise_nofile_limit() {
        Ok((old, new)) if old != new => log::info!("open-file limit raised from {old} to {new}"),
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    let pid = std::process::id();
    let inherited = match inherited_listeners(&from_systemd, pid) {
        Ok(inherited) => inherited,
        Err(e) => {
            return fail(format_args!("socket activation: {e}"));
        }
    };
    if !inherited.is_empty() && !config.listen_given {
        // The socket unit says where to listen: it replaces the default address.
        config.listen.clear();
    }
    let notifier = from_systemd.notify_socket.as_deref().and_then(|value| match Notifier::new(value) {
        Ok(notifier) => Some(Arc::new(notifier)),
        Err(e) => {
            log::warn!("not notifying systemd: {e}");
            None
        }
    });
    let watchdog_period = match from_systemd.watchdog(pid) {
        // Without a notify socket there is nobody to ping.
        Ok(period) => period.filter(|_| notifier.is_some()),
        Err(e) => {
            log::warn!("not pinging the systemd watchdog: {e}");
            None
        }
    };
    // Install the handlers before anything else can fail or be signalled: a SIGHUP that
    // arrived before them would kill the process (its default action).
    let signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            return fail(format_args!("cannot install signal handlers: {e}"));
        }
    };
    // This thread waits for signals; the loops run on threads of their own and, when the
    // last one ends (a stop, a finished drain, an error), they close the signal iterator so
    // this thread can collect their result. No thread sits idle only to wait for another.
    let signal_handle = signals.handle();
    // With a watchdog each loop wakes every quarter period and the pings go out every half,
    // so a healthy loop has gone round about twice between pings.
    let activated = !inherited.is_empty();
    let reread = Box::new(move || reread_config(&reread_args, activated));
    let launch =
        Launch { inherited, wake_every: watchdog_period.map(|period| period / 4), reread: Some(reread) };
    let server = match Server::launch(config, launch, move || signal_handle.close()) {
        Ok(server) => server,
        Err(e) => return fail(e),
    };
    for addr in server.local_addrs() {
        log::info!("listening on {addr}");
    }
    if let Some(addr) = server.metrics_addr() {
        log::info!("metrics on {addr} (GET /metrics)");
    }
    let notify = Notify { notifier: notifier.clone(), pid, status: message::listening(server.local_addrs()) };
    notify.ready();
    let watchdog = match (notifier, watchdog_period) {
        (Some(notifier), Some(period)) => {
            let alive = systemd::loops_went_round(server.heartbeats());
            log::info!(
                "systemd watchdog: {:.1} s; pinging every {:.1} s",
                period.as_secs_f64(),
                period.as_secs_f64() / 2.0
            );
            Watchdog::spawn(notifier, period, alive)
                .map_err(|e| log::warn!("not pinging the systemd watchdog: cannot start its thread: {e}"))
                .ok()
        }
        _ => None,
    };
    handle_signals(signals, &server.stopper(), server.reloader(), &notify);
    let result = server.wait();
    drop(watchdog);
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit with code 1 after `error`, written directly to stderr once the log lines before it
/// are out (they go through the log-writer thread).
fn fail(error: impl std::fmt::Display) -> ExitCode {
    log::logger().flush();
    eprintln!("socksloop: error: {error}");
    ExitCode::FAILURE
}

/// A single user from `SOCKSLOOP_USER` and `SOCKSLOOP_PASS` (both or neither).
fn env_user() -> Result<Option<(String, String)>, String> {
    let user = std::env::var("SOCKSLOOP_USER").ok().filter(|u| !u.is_empty());
    let pass = std::env::var("SOCKSLOOP_PASS").ok();
    match (user, pass) {
        (Some(user), Some(pass)) => Ok(Some((user, pass))),
        (None, None) => Ok(None),
        (Some(_), None) => Err("SOCKSLOOP_USER is set but SOCKSLOOP_PASS is not".into()),
        (None, Some(_)) => Err("SOCKSLOOP_PASS is set but SOCKSLOOP_USER is not".into()),
    }
}

/// Take the listening sockets systemd passed (socket activation), if it passed any to us.
fn inherited_listeners(
    from_systemd: &systemd::Environment,
    pid: u32,
) -> Result<Vec<std::net::TcpListener>, systemd::ActivationError> {
    let fds = from_systemd.listen_fds(pid)?;
    // SAFETY: `listen_fds` found these descriptors passed to this very process (LISTEN_PID),
    // nothing in the process has opened or claimed them, and this is the one call that
    // takes them.
    let activated = unsafe { systemd::adopt(&fds) }?;
    Ok(activated
        .into_iter()
        .map(|socket| {
            log::info!(
                "socket activation: using inherited socket {}, a TCP listener on {}",
                socket.fd,
                socket.addr
            );
            socket.listener
        })
        .collect())
}

/// What the signal loop tells systemd, if it is listening (`NOTIFY_SOCKET`).
struct Notify {
    notifier: Option<Arc<Notifier>>,
    pid: u32,
    /// `STATUS=` while running: the addresses listened on.
    status: String,
}

impl Notify {
    fn send(&self, message: &str) {
        if let Some(notifier) = &self.notifier {
            notifier.send(message);
        }
    }

    fn ready(&self) {
        self.send(&message::ready(self.pid, &self.status));
    }
}

/// The configuration as a reload sees it: the same command line, the config file it names read
/// again, the environment user, and the listeners cleared as at start under socket activation.
fn reread_config(args: &[OsString], activated: bool) -> Result<config::Config, String> {
    let mut config = match config::parse_args(args.to_vec()) {
        Ok(Action::Run(config)) => *config,
        Ok(_) => return Err("the command line no longer asks to run".into()),
        Err(e) => return Err(e.0),
    };
    config.auth.env_user = env_user()?;
    for warning in &config.warnings {
        log::warn!("{warning}");
    }
    if activated && !config.listen_given {
        config.listen.clear();
    }
    Ok(config)
}

/// SIGHUP reloads users and rules (between `RELOADING=1` and `READY=1`). The first SIGINT/SIGTERM
/// drains (`STOPPING=1`; no new clients, open ones get the grace period); a second one stops
/// at once. Returns after that second signal, or when the loops have ended and closed
/// `signals`.
fn handle_signals(mut signals: Signals, stopper: &Stopper, reloader: Reloader, notify: &Notify) {
    let mut draining = false;
    for signal in signals.forever() {
        if signal != SIGHUP {
            if draining {
                log::info!("signal {signal} received again; stopping now");
                stopper.stop();
                return;
            }
            log::info!("signal {signal} received; draining (send it again to stop at once)");
            notify.send(&message::stopping());
            stopper.drain();
            draining = true;
            continue;
        }
        // While draining, systemd is stopping the service: a READY=1 would contradict it.
        if !draining {
            notify.send(&message::reloading(systemd::monotonic_usec()));
        }
        match reloader.reload() {
            Ok(reloaded) => {
                log::info!("SIGHUP: settings reloaded ({} users)", reloaded.users);
                if reloaded.listeners_ignored {
                    log::warn!("SIGHUP: listener changes are not applied by a reload; restart to apply them");
                }
            }
            Err(e) => log::error!("SIGHUP: keeping the old settings: {e}"),
        }
        if !draining {
            notify.ready();
        }
    }
}
