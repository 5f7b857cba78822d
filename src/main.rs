//! The `socksloop` binary: flags → config → logging → server, and errors → exit codes.
//!
//! Exit codes: 0 after a clean stop (SIGINT/SIGTERM), 1 when the server cannot start or the
//! loop fails, 2 for a bad command line.

use std::process::ExitCode;

use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::Signals;
use socksloop::config::{self, Action};
use socksloop::{Server, limits};

fn main() -> ExitCode {
    let config = match config::parse_args(std::env::args_os().skip(1).collect()) {
        Ok(Action::Run(config)) => config,
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
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("socksloop: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    for addr in server.local_addrs() {
        log::info!("listening on {addr}");
    }
    // Signals arrive on a thread of their own; the loop only sees a stop flag and a wake-up.
    let stopper = server.stopper();
    match Signals::new([SIGINT, SIGTERM]) {
        Ok(mut signals) => {
            std::thread::spawn(move || {
                if let Some(signal) = signals.forever().next() {
                    log::info!("signal {signal} received; shutting down");
                    stopper.stop();
                }
            });
        }
        Err(e) => log::warn!("cannot install signal handlers: {e}"),
    }
    match server.wait() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            log::error!("event loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
