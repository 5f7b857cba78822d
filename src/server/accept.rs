//! Accepting clients, and pacing it: one [`Acceptor`] owns a loop's listeners and knows
//! when accepting must pause (connection cap, out of descriptors) and when to resume.
//!
//! Listeners are edge-triggered: after a readable event the backlog is drained until
//! `WouldBlock`. A pause leaves clients in the backlog, and no new edge will report them, so
//! resuming always accepts at once instead of waiting for an event.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry};

use crate::token;

/// After EMFILE/ENFILE, try accepting again this soon even if nothing closes.
const ACCEPT_RETRY: Duration = Duration::from_millis(100);
/// At a full connection table accepting pauses and resumes with every close, possibly
/// thousands of times a second: say so at most this often, with a count.
const PAUSE_WARNING_EVERY: Duration = Duration::from_secs(10);

/// One loop's listeners and its accept pacing.
pub struct Acceptor {
    listeners: Vec<TcpListener>,
    /// The listener being drained (accepting goes through them in turn).
    cursor: usize,
    /// Accepting stopped (connection cap, or out of file descriptors).
    paused: bool,
    /// When to retry accepting after running out of file descriptors.
    retry_at: Option<Instant>,
    /// When a pause was last logged, and how many pauses went unlogged since.
    warned_at: Option<Instant>,
    unlogged: u64,
}

impl Acceptor {
    /// Register each listener under its token.
    pub fn new(mut listeners: Vec<TcpListener>, registry: &Registry) -> io::Result<Acceptor> {
        for (i, listener) in listeners.iter_mut().enumerate() {
            registry.register(listener, token::listener(i), Interest::READABLE)?;
        }
        Ok(Acceptor { listeners, cursor: 0, paused: false, retry_at: None, warned_at: None, unlogged: 0 })
    }

    /// The next client waiting in a backlog, or `None` when every backlog is empty or
    /// accepting pauses. `full`: the connection table has no room for one more.
    pub fn next(&mut self, full: bool, now: Instant) -> Option<(TcpStream, SocketAddr)> {
        if self.paused {
            return None;
        }
        while let Some(listener) = self.listeners.get(self.cursor) {
            if full {
                self.pause(format_args!("connection limit reached"), now);
                return None;
            }
            match listener.accept() {
                Ok(accepted) => return Some(accepted),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.cursor += 1,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if is_out_of_resources(&e) => {
                    self.pause(format_args!("accept: {e}"), now);
                    self.retry_at = Some(now + ACCEPT_RETRY);
                    return None;
                }
                // ECONNABORTED and friends concern one client only.
                Err(e) => log::debug!("accept: {e}"),
            }
        }
        self.cursor = 0;
        None
    }

    /// Whether accepting should resume now: it is paused, there is room, and (after running
    /// out of descriptors) something closed or the retry time came. Un-pauses if so; the
    /// caller then accepts at once, since edge-triggered listeners will not report clients
    /// already waiting.
    pub fn should_resume(&mut self, full: bool, freed: bool, now: Instant) -> bool {
        if !self.paused || full {
            return false;
        }
        if let Some(at) = self.retry_at
            && !freed
            && now < at
        {
            return false;
        }
        self.paused = false;
        self.retry_at = None;
        true
    }

    /// When accepting should be retried although nothing happened (out of descriptors).
    pub fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Close the listeners for good (drain): the kernel refuses new clients from now on.
    pub fn close(&mut self) {
        self.listeners.clear();
        self.paused = true;
        self.retry_at = None;
    }

    /// Stop accepting until a connection closes; warn, but not more than once per
    /// [`PAUSE_WARNING_EVERY`].
    fn pause(&mut self, why: std::fmt::Arguments<'_>, now: Instant) {
        self.paused = true;
        let quiet = self.warned_at.is_some_and(|at| now.duration_since(at) < PAUSE_WARNING_EVERY);
        if quiet {
            self.unlogged += 1;
            log::debug!("{why}; accepting paused");
            return;
        }
        match std::mem::take(&mut self.unlogged) {
            0 => log::warn!("{why}; accepting paused until a connection closes"),
            n => log::warn!("{why}; accepting paused until a connection closes ({n} more pauses not logged)"),
        }
        self.warned_at = Some(now);
    }
}

fn is_out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}
