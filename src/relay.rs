//! Moving bytes one way between two nonblocking sockets: a [`Pipe`] and its [`pump`].
//!
//! A relay is two pipes, client→upstream and upstream→client. Each pump call:
//!
//! 1. flushes the pipe's pending bytes (what the destination refused last time);
//! 2. if the source has ended and nothing is pending, shuts the destination down for
//!    writing (TCP half-close) exactly once;
//! 3. otherwise reads the source into the loop's shared scratch buffer and writes it straight
//!    through, keeping only the part the destination refused.
//!
//! Backpressure falls out of step 1: while bytes are pending the source is not read, so a
//! slow reader on one side stops reads from the other, and the kernel's receive window
//! pushes back on the sender. Memory per pipe is bounded by the scratch size, and an idle
//! pipe holds no heap memory at all (`pending` is freed when it drains).

use std::io::{self, Read, Write};
use std::net::Shutdown;

use crate::sockio::{self, Io, Readiness};

/// A stream that can be half-closed. Implemented for mio's `TcpStream`; tests and fuzz
/// targets implement it for in-memory streams.
pub trait Stream: Read + Write {
    fn shutdown_write(&self) -> io::Result<()>;
}

impl Stream for mio::net::TcpStream {
    fn shutdown_write(&self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }
}

/// One direction of a relay.
#[derive(Debug, Default)]
pub struct Pipe {
    /// Bytes read from the source that the destination has not accepted yet.
    pending: Vec<u8>,
    /// How much of `pending` is already written.
    sent: usize,
    /// The source has sent FIN.
    pub eof: bool,
    /// We have shut the destination down for writing (after `eof` and a full flush).
    pub shut: bool,
    /// Bytes delivered to the destination.
    pub delivered: u64,
}

impl Pipe {
    /// Queue bytes for the destination ahead of anything read later (a SOCKS reply, or
    /// payload the client sent before the upstream connection was up).
    pub fn queue(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
    }

    pub fn has_pending(&self) -> bool {
        self.sent < self.pending.len()
    }

    /// Both halves of this direction are finished: FIN received, flushed, FIN sent.
    pub fn is_done(&self) -> bool {
        self.shut
    }

    /// Heap bytes this pipe holds right now (for memory accounting and tests).
    pub fn buffered_capacity(&self) -> usize {
        self.pending.capacity()
    }

    /// The source has ended and everything is delivered: shut the destination down for
    /// writing (TCP half-close), once. Returns whether this call did it.
    pub fn half_close_once(&mut self, dst: &impl Stream) -> io::Result<bool> {
        if self.shut {
            return Ok(false);
        }
        self.shut = true;
        match dst.shutdown_write() {
            // The destination may already be fully gone; the other direction will notice.
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(true),
        }
    }

    /// Write pending bytes until they are gone or the destination would block.
    /// Returns whether anything was written.
    pub fn flush(&mut self, dst: &mut impl Write, dst_ready: &mut Readiness) -> io::Result<bool> {
        let mut moved = false;
        while self.has_pending() {
            if !dst_ready.writable {
                return Ok(moved);
            }
            match sockio::write(dst, &self.pending[self.sent..]) {
                Io::Done(n) => {
                    self.sent += n;
                    self.delivered += n as u64;
                    moved = true;
                }
                Io::WouldBlock => dst_ready.writable = false,
                Io::Eof => unreachable!("writes never report Eof"),
                Io::Failed(e) => return Err(e),
            }
        }
        // Drained: give the memory back so an idle pipe costs nothing.
        if self.sent > 0 {
            self.pending = Vec::new();
            self.sent = 0;
        }
        Ok(moved)
    }
}

/// Move bytes from `src` to `dst` until one of them would block, the source ends, or
/// `budget` bytes have been read (fairness between connections on one loop).
///
/// Returns whether any progress was made. An error means this relay is broken (reset, broken
/// pipe); the caller closes both sides.
pub fn pump<S: Stream, D: Stream>(
    src: &mut S,
    src_ready: &mut Readiness,
    dst: &mut D,
    dst_ready: &mut Readiness,
    pipe: &mut Pipe,
    scratch: &mut [u8],
    budget: &mut usize,
) -> io::Result<bool> {
    let mut progress = false;
    loop {
        progress |= pipe.flush(dst, dst_ready)?;
        if pipe.has_pending() {
            return Ok(progress); // backpressure: do not read what we cannot pass on
        }
        if pipe.eof {
            return Ok(pipe.half_close_once(dst)? || progress);
        }
        if !src_ready.readable || *budget == 0 {
            return Ok(progress);
        }
        let want = scratch.len().min(*budget);
        let n = match sockio::read(src, &mut scratch[..want]) {
            Io::Done(n) => {
                // A short read emptied the receive queue. On Linux every later arrival raises
                // a new edge, so the read that would only answer WouldBlock is skipped (nginx
                // does the same), saving a syscall per chunk. Not when the peer's FIN or an
                // error was already reported: nothing will raise an edge for those again.
                if cfg!(target_os = "linux") && n < want && !src_ready.peer_closed {
                    src_ready.readable = false;
                }
                n
            }
            Io::WouldBlock => {
                src_ready.readable = false;
                return Ok(progress);
            }
            Io::Eof => {
                pipe.eof = true;
                progress = true;
                continue;
            }
            Io::Failed(e) => return Err(e),
        };
        progress = true;
        *budget -= n;
        // Write straight through from scratch; copy only what the destination refused.
        let mut written = 0;
        while written < n && dst_ready.writable {
            match sockio::write(dst, &scratch[written..n]) {
                Io::Done(m) => written += m,
                Io::WouldBlock => dst_ready.writable = false,
                Io::Eof => unreachable!("writes never report Eof"),
                Io::Failed(e) => return Err(e),
            }
        }
        pipe.delivered += written as u64;
        if written < n {
            pipe.queue(&scratch[written..n]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    /// An in-memory stream: reads come from `input` in chunks of at most `read_chunk`
    /// (then WouldBlock, or EOF if `input_closed`); writes accept up to `write_room` bytes.
    #[derive(Default)]
    struct Fake {
        input: Vec<u8>,
        read_chunk: usize,
        input_closed: bool,
        output: Vec<u8>,
        write_room: usize,
        shut: Cell<bool>,
    }

    impl Read for Fake {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.input.is_empty() {
                return if self.input_closed { Ok(0) } else { Err(io::ErrorKind::WouldBlock.into()) };
            }
            let n = buf.len().min(self.read_chunk).min(self.input.len());
            buf[..n].copy_from_slice(&self.input[..n]);
            self.input.drain(..n);
            Ok(n)
        }
    }

    impl Write for Fake {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.write_room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.write_room);
            self.output.extend_from_slice(&buf[..n]);
            self.write_room -= n;
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Stream for Fake {
        fn shutdown_write(&self) -> io::Result<()> {
            self.shut.set(true);
            Ok(())
        }
    }

    fn ready() -> Readiness {
        Readiness::BOTH
    }

    #[test]
    fn slow_destination_applies_backpressure_and_loses_nothing() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let mut src = Fake { input: data.clone(), read_chunk: 4096, ..Default::default() };
        let mut dst = Fake { write_room: 1000, ..Default::default() };
        let (mut sr, mut dr) = (ready(), ready());
        let mut pipe = Pipe::default();
        let mut scratch = [0u8; 4096];
        let mut budget = usize::MAX;

        pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pipe, &mut scratch, &mut budget).unwrap();
        assert_eq!(dst.output.len(), 1000);
        assert!(pipe.has_pending());
        assert_eq!(src.input.len(), 10_000 - 4096, "stopped reading while pending");
        assert!(pipe.buffered_capacity() <= 4096);

        for _ in 0..100 {
            dst.write_room = 700;
            dr.writable = true;
            pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pipe, &mut scratch, &mut budget).unwrap();
        }
        assert_eq!(dst.output, data);
        assert_eq!(pipe.delivered, 10_000);
        assert!(!pipe.has_pending());
        assert_eq!(pipe.buffered_capacity(), 0, "drained pipe frees its buffer");
    }

    #[test]
    fn eof_shuts_destination_after_flush() {
        let mut src =
            Fake { input: b"hello".to_vec(), read_chunk: 2, input_closed: true, ..Default::default() };
        let mut dst = Fake { write_room: 3, ..Default::default() };
        // The FIN has been reported (as it would be with the data, by epoll's RDHUP).
        let (mut sr, mut dr) = (Readiness { peer_closed: true, ..ready() }, ready());
        let mut pipe = Pipe::default();
        let mut scratch = [0u8; 16];
        let mut budget = usize::MAX;
        pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pipe, &mut scratch, &mut budget).unwrap();
        assert!(!dst.shut.get(), "must not shut before pending bytes are written");
        dst.write_room = 100;
        dr.writable = true;
        pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pipe, &mut scratch, &mut budget).unwrap();
        assert_eq!(dst.output, b"hello");
        assert!(dst.shut.get() && pipe.is_done());
    }

    #[test]
    fn budget_limits_one_call() {
        let mut src = Fake { input: vec![1; 1000], read_chunk: 1000, ..Default::default() };
        let mut dst = Fake { write_room: usize::MAX, ..Default::default() };
        let (mut sr, mut dr) = (ready(), ready());
        let mut pipe = Pipe::default();
        let mut scratch = [0u8; 1000];
        let mut budget = 300;
        pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pipe, &mut scratch, &mut budget).unwrap();
        assert_eq!(dst.output.len(), 300);
        assert!(sr.readable, "still readable: caller must come back");
    }

    #[test]
    fn queued_bytes_go_first() {
        let mut src = Fake { input: b"data".to_vec(), read_chunk: 64, ..Default::default() };
        let mut dst = Fake { write_room: usize::MAX, ..Default::default() };
        let (mut sr, mut dr) = (ready(), ready());
        let mut pipe = Pipe::default();
        pipe.queue(b"reply:");
        let mut scratch = [0u8; 64];
        let mut budget = usize::MAX;
        pump(&mut src, &mut sr, &mut dst, &mut dr, &mut pipe, &mut scratch, &mut budget).unwrap();
        assert_eq!(dst.output, b"reply:data");
    }
}
