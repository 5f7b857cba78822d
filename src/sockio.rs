//! The one place that calls `read` and `write` on sockets, and sorts what happened.
//!
//! Every caller needs the same four answers, so the rules live here once:
//! `Interrupted` is retried, `WouldBlock` means "not ready, wait for the next edge",
//! `Ok(0)` from a read is end-of-stream, and any other error means the peer is gone or broken.

use std::io::{self, Read, Write};

/// The result of one read or write attempt on a nonblocking socket.
#[derive(Debug)]
pub enum Io {
    /// This many bytes moved (never 0).
    Done(usize),
    /// The socket is not ready; readiness flags should be cleared.
    WouldBlock,
    /// The peer sent FIN (reads only).
    Eof,
    /// The connection is broken (reset, broken pipe, timeout, ...).
    Failed(io::Error),
}

pub fn read(socket: &mut impl Read, buf: &mut [u8]) -> Io {
    loop {
        return match socket.read(buf) {
            Ok(0) => Io::Eof,
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) => Io::Failed(e),
        };
    }
}

pub fn write(socket: &mut impl Write, buf: &[u8]) -> Io {
    loop {
        return match socket.write(buf) {
            // A zero-length write on a stream socket only happens for an empty `buf`.
            Ok(0) => Io::Failed(io::Error::from(io::ErrorKind::WriteZero)),
            Ok(n) => Io::Done(n),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Io::WouldBlock,
            Err(e) => Io::Failed(e),
        };
    }
}

/// Readiness we have been told about and not yet used up (edge-triggered bookkeeping).
///
/// An event *sets* a flag; `WouldBlock` *clears* it (and, in the relay on Linux, a short read
/// while `peer_closed` is unset: see `relay::pump`). That way a socket we stopped reading
/// because a buffer was full is still known to be readable later, when no new edge will come.
#[derive(Debug, Default, Clone, Copy)]
pub struct Readiness {
    pub readable: bool,
    pub writable: bool,
    /// The peer's FIN or an error has been reported. Sticky: after it, a short read no
    /// longer means "drained until the next edge" (there will be no next edge).
    pub peer_closed: bool,
}

impl Readiness {
    pub const BOTH: Readiness = Readiness { readable: true, writable: true, peer_closed: false };
    pub const READABLE: Readiness = Readiness { readable: true, writable: false, peer_closed: false };
    pub const WRITABLE: Readiness = Readiness { readable: false, writable: true, peer_closed: false };

    /// Record an event. Errors and hang-ups count as both: they are found by doing I/O.
    pub fn record(&mut self, event: &mio::event::Event) {
        if event.is_read_closed() || event.is_error() {
            self.peer_closed = true;
        }
        if event.is_readable() || event.is_read_closed() || event.is_error() {
            self.readable = true;
        }
        if event.is_writable() || event.is_write_closed() || event.is_error() {
            self.writable = true;
        }
    }
}
