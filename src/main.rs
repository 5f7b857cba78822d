//! The `socksloop` binary: flags → config → logging → server, and errors → exit codes.
//!
//! Exit codes: 0 after a clean stop (SIGINT/SIGTERM), 1 when the server cannot start or the
//! loop fails, 2 for a bad command line.

use std::process::ExitCode;

use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use socksloop::auth::CredentialStore;
use socksloop::config::{self, Action};
use socksloop::{Server, Stopper, limits};
use std::sync::Arc;

fn main() -> ExitCode {
    let mut config = match config::parse_args(std::env::args_os().skip(1).collect()) {
        Ok(Action::Run(config)) => *config,
        Ok(Action::PrintHelp) => {
            print!("{}", config::HELP);
            return ExitCode::SUCCESS;
        }
        Ok(Action::PrintVersion) => {
            println!("socksloop {}", env!("CARGO_PKG_VERSION"));
            return ExitCode::SUCCESS;
        }
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
    if let Err(e) =
        simple_logger::SimpleLogger::new().with_level(config.log_level).with_utc_timestamps().init()
    {
        eprintln!("socksloop: error: cannot start logging: {e}");
        return ExitCode::FAILURE;
    }
    match limits::raise_nofile_limit() {
        Ok((old, new)) if old != new => log::info!("open-file limit raised from {old} to {new}"),
        Ok(_) => {}
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    // Install the handlers before anything else can fail or be signalled: a SIGHUP that
    // arrived before them would kill the process (its default action).
    let signals = match Signals::new([SIGINT, SIGTERM, SIGHUP]) {
        Ok(signals) => signals,
        Err(e) => {
            eprintln!("socksloop: error: cannot install signal handlers: {e}");
            return ExitCode::FAILURE;
        }
    };
    // This thread waits for signals; the loops run on threads of their own and, when the
    // last one ends (a stop, a finished drain, an error), they close the signal iterator so
    // this thread can collect their result. No thread sits idle only to wait for another.
    let signal_handle = signals.handle();
    let server = match Server::start_with_exit_hook(config, move || signal_handle.close()) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("socksloop: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in server.local_addrs() {
        log::info!("listening on {addr}");
    }
    handle_signals(signals, &server.stopper(), server.credential_store());
    match server.wait() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
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

/// SIGHUP reloads credentials. The first SIGINT/SIGTERM drains (no new clients, open ones
/// get the grace period); a second one stops at once. Returns after that second signal, or
/// when the loops have ended and closed `signals`.
fn handle_signals(mut signals: Signals, stopper: &Stopper, credentials: Option<Arc<CredentialStore>>) {
    let mut draining = false;
    for signal in signals.forever() {
        if signal != SIGHUP {
            if draining {
                log::info!("signal {signal} received again; stopping now");
                stopper.stop();
                return;
            }
            log::info!("signal {signal} received; draining (send it again to stop at once)");
            stopper.drain();
            draining = true;
            continue;
        }
        match &credentials {
            Some(store) => match store.reload() {
                Ok(users) => log::info!("SIGHUP: credentials reloaded ({users} users)"),
                Err(e) => log::error!("SIGHUP: keeping the old credentials: {e}"),
            },
            None => log::info!("SIGHUP: no auth file configured; nothing to reload"),
        }
    }
}
