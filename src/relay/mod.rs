//! Moving bytes one way between two nonblocking sockets: a [`Direction`] and its [`pump`].
//!
//! A relay is two directions, client→upstream ("up") and upstream→client ("down"). The one
//! pump, written once for both relay paths, runs this loop:
//!
//! 1. flush what waits for the destination: queued user-space bytes (a SOCKS reply, early
//!    payload, what the destination refused last time), then bytes parked in a kernel pipe;
//! 2. while anything still waits, stop: **backpressure**. The source is not read, its
//!    receive queue fills, and the kernel's TCP window pushes back on the sender;
//! 3. if the source has ended and nothing waits, shut the destination down for writing (TCP
//!    half-close) exactly once;
//! 4. otherwise *move some bytes* and go round again, until the source would block, the
//!    budget (fairness between connections on one loop) is spent, or the source ends.
//!
//! Only step 4 differs between the paths ([`Movers`]): `copy` reads into the loop's shared
//! scratch buffer and writes straight through, keeping only what the destination refused;
//! `splice` (Linux, [`splice`]) moves page references through a kernel pipe borrowed from the
//! loop's pool. Memory per direction is bounded by one scratch buffer (or one pipe), and an
//! idle direction holds no heap memory and no pipe.
//!
//! **The short-read rule.** On Linux every arrival on a socket raises a new edge, so a read
//! that returned less than it asked for has emptied the receive queue and the read that would
//! only answer `WouldBlock` can be skipped (nginx does the same): the mover reports
//! `drained`. A splice cannot tell (a pipe can fill its slots before the asked length), so it
//! never reports it. Neither applies once the peer's FIN or an error has been reported: no
//! edge will come for those again.

#[cfg(target_os = "linux")]
pub mod splice;

use std::io;

use crate::net::{End, ReadOutcome, Stream, WriteOutcome};

/// Bytes queued for a socket, written as it accepts them. Frees its memory when drained, so
/// an idle queue costs nothing.
#[derive(Debug, Default)]
pub struct Outbox {
    bytes: Vec<u8>,
    /// How much of `bytes` is already written.
    sent: usize,
}

impl Outbox {
    /// Queue bytes behind whatever is queued already.
    pub fn queue(&mut self, bytes: &[u8]) {
        self.bytes.extend_from_slice(bytes);
    }

    /// Bytes queued and not written yet.
    pub fn pending(&self) -> usize {
        self.bytes.len() - self.sent
    }

    pub fn has_pending(&self) -> bool {
        self.pending() > 0
    }

    /// Heap bytes held right now (for memory accounting and tests).
    pub fn capacity(&self) -> usize {
        self.bytes.capacity()
    }

    /// Write queued bytes until they are gone or the destination would block. Returns how
    /// many were written.
    pub fn flush<S: Stream>(&mut self, dst: &mut End<S>) -> io::Result<usize> {
        let mut written = 0;
        while self.has_pending() {
            match dst.write(&self.bytes[self.sent..]) {
                WriteOutcome::Wrote(n) => {
                    self.sent += n;
                    written += n;
                }
                WriteOutcome::WouldBlock => return Ok(written),
                WriteOutcome::Failed(e) => return Err(e),
            }
        }
        // Drained: give the memory back.
        if self.sent > 0 {
            *self = Outbox::default();
        }
        Ok(written)
    }
}

/// One direction of a relay: what waits for the destination, and how far the stream got.
#[derive(Debug, Default)]
pub struct Direction {
    /// User-space bytes for the destination (queued, or refused by it last time).
    backlog: Outbox,
    /// Bytes waiting in a borrowed kernel pipe (splice path).
    #[cfg(target_os = "linux")]
    parked: splice::Parked,
    /// `--relay auto`: the source showed a burst (a copy filled the whole request), so the
    /// next moves splice; a splice that finds the source empty ends the burst.
    #[cfg(target_os = "linux")]
    bulk: bool,
    /// The source has sent FIN.
    pub eof: bool,
    /// We have shut the destination down for writing (after `eof` and a full flush).
    pub shut: bool,
    /// The other direction is done, so this one finishing ends the relay, whose sockets are
    /// then closed, which sends the FIN: the half-close needs no `shutdown` call.
    pub last: bool,
    /// Bytes delivered to the destination.
    pub delivered: u64,
}

impl Direction {
    /// A direction whose destination first gets `queued` (a reply, early payload).
    pub fn with_queued(queued: Outbox) -> Direction {
        Direction { backlog: queued, ..Direction::default() }
    }

    /// Bytes wait for the destination (in user space or a kernel pipe): the source is not read.
    pub fn has_pending(&self) -> bool {
        #[cfg(target_os = "linux")]
        if self.parked.has_bytes() {
            return true;
        }
        self.backlog.has_pending()
    }

    /// Both halves of this direction are finished: FIN received, flushed, FIN sent.
    pub fn is_done(&self) -> bool {
        self.shut
    }

    /// Heap bytes this direction holds right now (for bounds checks in tests and fuzzing).
    pub fn buffered_capacity(&self) -> usize {
        self.backlog.capacity()
    }

    /// Whether a kernel pipe is borrowed right now.
    #[cfg(test)]
    pub fn holds_pipe(&self) -> bool {
        #[cfg(target_os = "linux")]
        return self.parked.holds_pipe();
        #[cfg(not(target_os = "linux"))]
        false
    }

    /// Flush the backlog, then the parked pipe. Returns whether anything was written.
    fn flush<D: Stream>(&mut self, dst: &mut End<D>) -> io::Result<bool> {
        let n = self.backlog.flush(dst)?;
        self.delivered += n as u64;
        let mut moved = n > 0;
        #[cfg(target_os = "linux")]
        if !self.backlog.has_pending() {
            let n = self.parked.drain(dst)?;
            self.delivered += n as u64;
            moved |= n > 0;
        }
        Ok(moved)
    }

    /// The source has ended and everything is delivered: shut the destination down for
    /// writing (TCP half-close), once. Returns whether this call did it. When this direction
    /// is the `last`, closing the socket sends the FIN instead (its receive queue is empty:
    /// the other direction read it to EOF, so the close is not a reset).
    fn half_close_once<D: Stream>(&mut self, dst: &End<D>) -> io::Result<bool> {
        if self.shut {
            return Ok(false);
        }
        self.shut = true;
        if self.last {
            return Ok(true);
        }
        match dst.socket.shutdown_write() {
            // The destination may already be fully gone; the other direction will notice.
            Err(e) if e.kind() != io::ErrorKind::NotConnected => Err(e),
            _ => Ok(true),
        }
    }
}

/// How bytes move (step 4 of the pump): the loop's scratch buffer, and on the splice path the
/// loop's pipe pool. Lent by the loop for one pump.
pub struct Movers<'a> {
    pub scratch: &'a mut [u8],
    /// `Some` on the splice path (`--relay splice` and `auto`).
    #[cfg(target_os = "linux")]
    pub pipes: Option<&'a mut splice::PipePool>,
    /// `--relay auto`: splice only a direction's bursts, copy the rest.
    #[cfg(target_os = "linux")]
    pub adaptive: bool,
}

/// What one "move some bytes" step did.
enum Moved {
    /// `read` bytes left the source (and went to the destination or wait in the direction);
    /// `drained`: the source's receive queue is known to be empty now.
    Some {
        read: usize,
        drained: bool,
    },
    WouldBlock,
    Eof,
    Failed(io::Error),
}

/// Move bytes from `src` to `dst` until one of them would block, the source ends, or
/// `budget` bytes have been read.
///
/// Returns whether any progress was made. An error means this relay is broken (reset, broken
/// pipe); the caller closes both sides.
pub fn pump<S: Stream, D: Stream>(
    src: &mut End<S>,
    dst: &mut End<D>,
    dir: &mut Direction,
    budget: &mut usize,
    movers: &mut Movers<'_>,
) -> io::Result<bool> {
    let result = pump_until_blocked(src, dst, dir, budget, movers);
    // An empty pipe goes back to the pool after every pump, so an idle relay holds none. (On
    // error the relay closes, and a pipe still holding bytes is closed with it.)
    #[cfg(target_os = "linux")]
    if result.is_ok()
        && let Some(pool) = movers.pipes.as_deref_mut()
    {
        dir.parked.release_if_empty(pool);
    }
    result
}

fn pump_until_blocked<S: Stream, D: Stream>(
    src: &mut End<S>,
    dst: &mut End<D>,
    dir: &mut Direction,
    budget: &mut usize,
    movers: &mut Movers<'_>,
) -> io::Result<bool> {
    let mut progress = false;
    // Each pass either moves at least one byte out of the source (spending budget), notes its
    // end, or returns: the loop ends within budget + 2 passes.
    loop {
        progress |= dir.flush(dst)?;
        if dir.has_pending() {
            return Ok(progress); // backpressure: do not read what cannot be passed on
        }
        if dir.eof {
            return Ok(dir.half_close_once(dst)? || progress);
        }
        if !src.ready.readable || *budget == 0 {
            return Ok(progress);
        }
        match move_some(src, dst, dir, *budget, movers) {
            Moved::Some { read, drained } => {
                progress = true;
                *budget -= read;
                if drained && cfg!(target_os = "linux") && !src.ready.peer_closed {
                    src.ready.readable = false;
                }
            }
            // `End::read` (and the splice path) cleared the readable flag.
            Moved::WouldBlock => return Ok(progress),
            Moved::Eof => {
                dir.eof = true;
                progress = true;
            }
            Moved::Failed(e) => return Err(e),
        }
    }
}

/// Step 4: splice through a borrowed pipe when on the splice path and a pipe can be had,
/// else copy through the scratch buffer.
///
/// `--relay auto` splices only bursts: a direction starts on copy, and a copy that filled
/// the whole request (the source had at least that much queued) marks it `bulk`, so its next
/// moves splice; a splice that finds the source empty (`EAGAIN`) ends the burst, and the
/// next one starts on copy again. Small messages (a handshake's, a keystroke's, a short
/// request's) are copied, where a short read proves the source empty and saves the read
/// that could only say `EAGAIN`; a splice cannot tell.
fn move_some<S: Stream, D: Stream>(
    src: &mut End<S>,
    dst: &mut End<D>,
    dir: &mut Direction,
    budget: usize,
    movers: &mut Movers<'_>,
) -> Moved {
    #[cfg(target_os = "linux")]
    if let Some(pool) = movers.pipes.as_deref_mut()
        && (dir.bulk || !movers.adaptive)
        && dir.parked.borrow_pipe(pool)
    {
        let moved = dir.parked.fill_from(src, budget);
        if matches!(moved, Moved::WouldBlock) {
            dir.bulk = false;
        }
        return moved;
    }
    let moved = copy_some(src, dst, dir, budget, movers.scratch);
    #[cfg(target_os = "linux")]
    if movers.adaptive && matches!(moved, Moved::Some { drained: false, .. }) {
        dir.bulk = true;
    }
    moved
}

/// Read into `scratch`, write straight through, and queue only what the destination refused.
fn copy_some<S: Stream, D: Stream>(
    src: &mut End<S>,
    dst: &mut End<D>,
    dir: &mut Direction,
    budget: usize,
    scratch: &mut [u8],
) -> Moved {
    let want = scratch.len().min(budget);
    let n = match src.read(&mut scratch[..want]) {
        ReadOutcome::Data(n) => n,
        ReadOutcome::WouldBlock => return Moved::WouldBlock,
        ReadOutcome::Eof => return Moved::Eof,
        ReadOutcome::Failed(e) => return Moved::Failed(e),
    };
    let mut written = 0;
    while written < n {
        match dst.write(&scratch[written..n]) {
            WriteOutcome::Wrote(m) => written += m,
            WriteOutcome::WouldBlock => break,
            WriteOutcome::Failed(e) => return Moved::Failed(e),
        }
    }
    dir.delivered += written as u64;
    if written < n {
        dir.backlog.queue(&scratch[written..n]);
    }
    Moved::Some { read: n, drained: n < want }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::Readiness;
    use crate::sim::{Script, SimStream};

    fn end(script: &Script) -> End<SimStream> {
        End::new(script.stream(), Readiness::BOTH)
    }

    fn copy_movers(scratch: &mut [u8]) -> Movers<'_> {
        Movers {
            scratch,
            #[cfg(target_os = "linux")]
            pipes: None,
            #[cfg(target_os = "linux")]
            adaptive: false,
        }
    }

    #[test]
    fn slow_destination_applies_backpressure_and_loses_nothing() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let (src_script, dst_script) = (Script::default(), Script::default());
        src_script.supply(&data);
        dst_script.grant(1000);
        let (mut src, mut dst) = (end(&src_script), end(&dst_script));
        let mut dir = Direction::default();
        let mut scratch = [0u8; 4096];
        let mut budget = usize::MAX;

        pump(&mut src, &mut dst, &mut dir, &mut budget, &mut copy_movers(&mut scratch)).unwrap();
        assert_eq!(dst_script.written().len(), 1000);
        assert!(dir.has_pending());
        assert_eq!(src_script.unread(), 10_000 - 4096, "stopped reading while pending");
        assert!(dir.buffered_capacity() <= 4096);

        for _ in 0..100 {
            dst_script.grant(700);
            dst.ready.writable = true;
            src.ready.readable = true;
            pump(&mut src, &mut dst, &mut dir, &mut budget, &mut copy_movers(&mut scratch)).unwrap();
        }
        assert_eq!(dst_script.written(), data);
        assert_eq!(dir.delivered, 10_000);
        assert!(!dir.has_pending());
        assert_eq!(dir.buffered_capacity(), 0, "drained direction frees its buffer");
    }

    #[test]
    fn eof_shuts_destination_after_flush() {
        let (src_script, dst_script) = (Script::default(), Script::default());
        src_script.supply(b"hello");
        src_script.close();
        dst_script.grant(3);
        let (mut src, mut dst) = (end(&src_script), end(&dst_script));
        // The FIN has been reported (as it would be with the data, by epoll's RDHUP).
        src.ready.peer_closed = true;
        let mut dir = Direction::default();
        let mut scratch = [0u8; 16];
        let mut budget = usize::MAX;
        pump(&mut src, &mut dst, &mut dir, &mut budget, &mut copy_movers(&mut scratch)).unwrap();
        assert!(!dst_script.is_shut(), "must not shut before pending bytes are written");
        dst_script.grant(100);
        dst.ready.writable = true;
        pump(&mut src, &mut dst, &mut dir, &mut budget, &mut copy_movers(&mut scratch)).unwrap();
        assert_eq!(dst_script.written(), b"hello");
        assert!(dst_script.is_shut() && dir.is_done());
    }

    #[test]
    fn budget_limits_one_call() {
        let (src_script, dst_script) = (Script::default(), Script::default());
        src_script.supply(&[1; 1000]);
        dst_script.grant(usize::MAX);
        let (mut src, mut dst) = (end(&src_script), end(&dst_script));
        let mut dir = Direction::default();
        let mut scratch = [0u8; 1000];
        let mut budget = 300;
        pump(&mut src, &mut dst, &mut dir, &mut budget, &mut copy_movers(&mut scratch)).unwrap();
        assert_eq!(dst_script.written().len(), 300);
        assert!(src.ready.readable, "still readable: caller must come back");
    }

    #[test]
    fn queued_bytes_go_first() {
        let (src_script, dst_script) = (Script::default(), Script::default());
        src_script.supply(b"data");
        dst_script.grant(usize::MAX);
        let (mut src, mut dst) = (end(&src_script), end(&dst_script));
        let mut queued = Outbox::default();
        queued.queue(b"reply:");
        let mut dir = Direction::with_queued(queued);
        let mut scratch = [0u8; 64];
        let mut budget = usize::MAX;
        pump(&mut src, &mut dst, &mut dir, &mut budget, &mut copy_movers(&mut scratch)).unwrap();
        assert_eq!(dst_script.written(), b"reply:data");
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn short_read_skips_the_would_block_read_unless_the_peer_closed() {
        let (src_script, dst_script) = (Script::default(), Script::default());
        src_script.supply(b"abc");
        dst_script.grant(usize::MAX);
        let (mut src, mut dst) = (end(&src_script), end(&dst_script));
        let mut dir = Direction::default();
        let mut scratch = [0u8; 64];
        let mut budget = usize::MAX;
        pump(&mut src, &mut dst, &mut dir, &mut budget, &mut copy_movers(&mut scratch)).unwrap();
        assert_eq!(src_script.reads(), 1, "a short read ends the pump on Linux");
        assert!(!src.ready.readable);

        src_script.supply(b"def");
        src_script.close();
        src.ready = Readiness { peer_closed: true, ..Readiness::BOTH };
        pump(&mut src, &mut dst, &mut dir, &mut budget, &mut copy_movers(&mut scratch)).unwrap();
        assert!(dir.is_done(), "after the FIN was reported the pump reads on to EOF");
        assert_eq!(dst_script.written(), b"abcdef");
    }
}
