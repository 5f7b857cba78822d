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
    /// Register each listener under its token, and give it the options every accepted client
    /// socket needs (see [`client_socket_options`]).
    pub fn new(
        mut listeners: Vec<TcpListener>,
        registry: &Registry,
        keepalive: Option<Duration>,
    ) -> io::Result<Acceptor> {
        for (i, listener) in listeners.iter_mut().enumerate() {
            if INHERITED_FROM_LISTENER {
                client_socket_options(socket2::SockRef::from(&*listener), keepalive);
            }
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

/// Linux gives an accepted socket the listener's TCP_NODELAY and keepalive settings, so they
/// are set once on the listener instead of with five `setsockopt` calls per client. Elsewhere
/// each accepted socket gets them (`EventLoop::admit`).
pub const INHERITED_FROM_LISTENER: bool = cfg!(target_os = "linux");

/// What every client socket carries: no Nagle delay (a proxy must not add latency) and TCP
/// keepalive (`--tcp-keepalive`). Failures are logged, not fatal: the proxy still works.
pub fn client_socket_options(socket: socket2::SockRef<'_>, keepalive: Option<Duration>) {
    if let Err(e) = socket.set_tcp_nodelay(true) {
        log::debug!("TCP_NODELAY: {e}");
    }
    if let Err(e) = crate::net::set_keepalive(socket, keepalive) {
        log::debug!("TCP keepalive: {e}");
    }
}

fn is_out_of_resources(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The syscall saving rests on the kernel copying the listener's options to every socket
    /// it accepts: check that it does, here.
    #[test]
    #[cfg(target_os = "linux")]
    fn accepted_sockets_inherit_nodelay_and_keepalive_from_the_listener() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        client_socket_options(socket2::SockRef::from(&listener), Some(Duration::from_secs(45)));
        let _client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        let accepted = socket2::SockRef::from(&accepted);
        assert!(accepted.tcp_nodelay().unwrap(), "TCP_NODELAY inherited");
        assert!(accepted.keepalive().unwrap(), "SO_KEEPALIVE inherited");
        assert_eq!(accepted.tcp_keepalive_time().unwrap(), Duration::from_secs(45));
        assert_eq!(accepted.tcp_keepalive_interval().unwrap(), crate::net::KEEPALIVE_INTERVAL);
        assert_eq!(accepted.tcp_keepalive_retries().unwrap(), crate::net::KEEPALIVE_PROBES);
    }
}
