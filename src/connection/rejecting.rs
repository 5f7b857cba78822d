//! The `Rejecting` phase: a lingering close after an error reply.
//!
//! After the reply is written the server shuts down its write side and reads (and discards)
//! until the client's FIN, for at most a couple of seconds (the phase's deadline). Closing a
//! socket with unread bytes in its receive buffer sends a reset, and a reset can make the
//! client's kernel discard the reply before the client reads it.

use crate::net::{End, Net, ReadOutcome, Stream};
use crate::relay::Outbox;

use super::{CloseReason, Outcome};

/// Reads per drive while lingering: a client that keeps sending cannot hold the loop.
const DISCARD_READS: usize = 16;

/// The reply still to deliver, and whether our FIN has gone.
#[derive(Debug)]
pub struct Rejecting {
    out: Outbox,
    shut: bool,
}

impl Rejecting {
    pub fn new(out: Outbox) -> Rejecting {
        Rejecting { out, shut: false }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.out.capacity()
    }

    /// Flush the reply, half-close, then read and discard until the client's FIN.
    pub fn drive<N: Net>(&mut self, client: &mut End<N::Stream>) -> Outcome<N> {
        if self.out.flush(client).is_err() {
            return Outcome::Close(CloseReason::ClientWriteFailed);
        }
        if self.out.has_pending() {
            return Outcome::Wait;
        }
        if !self.shut {
            self.shut = true;
            if client.socket.shutdown_write().is_err() {
                return Outcome::Close(CloseReason::Rejected);
            }
        }
        let mut discard = [0u8; 512];
        for _ in 0..DISCARD_READS {
            match client.read(&mut discard) {
                ReadOutcome::Data(_) => {}
                ReadOutcome::WouldBlock => return Outcome::Wait,
                ReadOutcome::Eof | ReadOutcome::Failed(_) => return Outcome::Close(CloseReason::Rejected),
            }
        }
        Outcome::Again
    }
}
