//! The Linux fast path for relaying: `splice(2)` through a kernel pipe instead of a copy
//! through the loop's scratch buffer (`--relay splice`).
//!
//! ## Why it helps
//!
//! The copy path ([`crate::relay`]) moves every byte twice across the user/kernel boundary:
//! `read` copies it from the source socket's receive queue into the scratch buffer, `write`
//! copies it into the destination's send queue. `splice` moves *page references* instead:
//! splicing from a TCP socket into a pipe hands the pipe the pages that hold the received
//! data, and splicing from the pipe into the destination socket attaches those pages to the
//! outgoing packets. The bytes never enter user space. The syscall count is the same (one
//! splice in, one splice out, where the copy path does one read and one write); what goes is
//! the copying, which is most of the CPU a relay uses at high throughput.
//!
//! ## What it costs
//!
//! * **File descriptors.** `splice` needs a pipe between the two sockets, and a pipe is two
//!   descriptors. A relay that kept one pipe per direction open would cost 6 descriptors
//!   instead of 2, and 9 000 relays would need 54 000: far over a 20 000 hard limit. So pipes
//!   are **not** owned by relays. Each event loop keeps a small pool; a direction borrows a
//!   pipe when it has bytes to move and gives it back as soon as the pipe is empty again,
//!   which is at the end of almost every pump (the pipe is drained into the destination
//!   synchronously). An idle relay therefore holds no pipe and costs the same 2 descriptors
//!   as on the copy path. Only a direction whose destination is blocked while bytes sit in
//!   the pipe keeps its pipe, until the destination's writable edge drains it.
//! * **Kernel memory.** A pipe holds up to 16 page references (64 KiB by default). Spliced
//!   pages are shared with the socket that received them, not newly allocated, but they stay
//!   pinned while they wait. At most [`PIPES_PER_PROCESS`] pipes exist (also bounded by a
//!   sixteenth of the fd limit), so at most 16 MiB of data waits in pipes. When the pool is
//!   exhausted, or `pipe2` fails (EMFILE/ENFILE), that direction simply uses the copy path
//!   for this pump: slower, never failing. An empty pipe holds no data pages.
//!
//! ## Edge-triggered subtleties
//!
//! The readiness rules are exactly those of [`crate::relay::pump`]: an event sets a
//! [`Readiness`] flag, only `EAGAIN` clears it, and the source is not read while bytes wait
//! for the destination. Two things are special here:
//!
//! * **A pipe is never registered with epoll.** It needs no events: it is filled only by us
//!   (splice in) and drained only by us (splice out), synchronously, in the same pump call.
//!   Bytes stay in it only when the destination socket returned `EAGAIN`; then the source is
//!   not read again until the destination's writable edge (an epoll event on a socket we do
//!   watch) lets the pump drain the pipe.
//! * **`EAGAIN` from a splice into a pipe is ambiguous**: it means "the socket has nothing" or
//!   "the pipe is full". We only splice in when the pipe is empty, so it can only mean the
//!   former, and clearing the source's readable flag stays correct.
//!
//! Bytes queued in user space before relaying began (the SOCKS reply, early payload sent with
//! the request) live in the direction's [`relay::Pipe`] and are flushed before anything is
//! spliced, so order is kept. The same `relay::Pipe` also carries the direction's EOF,
//! half-close and byte-count state, so both paths share one bookkeeping.
//!
//! Splicing into a socket whose peer is gone raises `SIGPIPE` like `write` does (the kernel
//! does not pass `MSG_NOSIGNAL` here); Rust programs ignore `SIGPIPE` by default, so it
//! surfaces as `EPIPE`, an error that closes the relay.

use std::cell::{Cell, RefCell};
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;

use crate::relay::{self, Pipe, Stream};
use crate::sockio::{Io, Readiness};

/// Most pipes (lent and pooled) that may exist in one process, before division between
/// workers: 512 descriptors and at most 16 MiB of waiting data.
pub const PIPES_PER_PROCESS: usize = 256;
/// Bytes asked of one splice into a pipe: the default pipe capacity (16 pages).
const PIPE_CAPACITY: usize = 64 * 1024;
/// Empty pipes kept for reuse per event loop. Pipes come back at the end of the pump that
/// borrowed them, so a handful covers any number of busy relays on one thread.
const POOL_KEEP: usize = 16;

/// One kernel pipe: the read end and the write end.
#[derive(Debug)]
struct KernelPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl KernelPipe {
    fn open() -> io::Result<KernelPipe> {
        let (read, write) = pipe2()?;
        OPEN.with(|n| n.set(n.get() + 1));
        Ok(KernelPipe { read, write })
    }
}

impl Drop for KernelPipe {
    fn drop(&mut self) {
        // `OPEN` has no destructor, so it is reachable even while the thread is exiting.
        let _ = OPEN.try_with(|n| n.set(n.get().saturating_sub(1)));
        // The two OwnedFds close themselves after this.
    }
}

/// One event loop's pool of empty pipes, and how many pipes may exist.
struct Pool {
    free: Vec<KernelPipe>,
    /// Most pipes this thread may have open (lent + free); 0 until first computed.
    limit: usize,
}

thread_local! {
    // Thread-local because each event loop is one thread: this is the loop's own pool,
    // shared by its connections and by nobody else, and no lock is needed.
    static POOL: RefCell<Pool> = const { RefCell::new(Pool { free: Vec::new(), limit: 0 }) };
    /// Pipes open on this thread, lent or pooled.
    static OPEN: Cell<usize> = const { Cell::new(0) };
}

/// How many pipes one event loop may have: [`PIPES_PER_PROCESS`], or a sixteenth of the
/// fd limit (each pipe is two descriptors, so an eighth of them) if that is less, shared
/// between `workers` loops; at least 2 so each loop can splice both directions of one relay.
fn pipes_per_loop(nofile: u64, workers: usize) -> usize {
    let per_process = PIPES_PER_PROCESS.min(usize::try_from(nofile / 16).unwrap_or(usize::MAX));
    (per_process / workers.max(1)).max(2)
}

/// Borrow an empty pipe: a pooled one, else a new one if the limit allows. `None` means
/// "use the copy path this time" (limit reached, or no descriptors left).
fn take(workers: usize) -> Option<KernelPipe> {
    POOL.with(|pool| {
        let mut pool = pool.borrow_mut();
        if let Some(pipe) = pool.free.pop() {
            return Some(pipe);
        }
        if pool.limit == 0 {
            pool.limit = pipes_per_loop(crate::limits::nofile_limit(), workers);
        }
        if OPEN.with(Cell::get) >= pool.limit {
            return None;
        }
        match KernelPipe::open() {
            Ok(pipe) => Some(pipe),
            Err(e) => {
                log::debug!("no pipe for splice ({e}); copying instead");
                None
            }
        }
    })
}

/// Return an empty pipe: pooled for the next borrower, or closed if the pool is full.
fn give_back(pipe: KernelPipe) {
    let _ = POOL.try_with(|pool| {
        let mut pool = pool.borrow_mut();
        if pool.free.len() < POOL_KEEP {
            pool.free.push(pipe);
        }
    });
}

/// The splice state of one relay direction: the borrowed pipe, if any, and how many bytes
/// sit in it. Lives beside the direction's [`relay::Pipe`].
#[derive(Debug, Default)]
pub struct Spliced {
    kernel: Option<KernelPipe>,
    /// Bytes spliced into `kernel` and not yet out of it.
    held: u32,
}

impl Spliced {
    /// Bytes wait in the kernel pipe for the destination (so the source is not read).
    pub fn has_pending(&self) -> bool {
        self.held > 0
    }

    /// Whether this direction holds a pipe right now (tests and accounting).
    pub fn holds_pipe(&self) -> bool {
        self.kernel.is_some()
    }

    /// Give the pipe back if it is empty: an idle direction holds no descriptors.
    fn release_if_empty(&mut self) {
        if self.held == 0
            && let Some(pipe) = self.kernel.take()
        {
            give_back(pipe);
        }
    }

    /// Splice the pipe's bytes into `dst` until it is empty or `dst` would block.
    fn drain(
        &mut self,
        dst: BorrowedFd<'_>,
        dst_ready: &mut Readiness,
        delivered: &mut u64,
    ) -> io::Result<bool> {
        let mut moved = false;
        while self.held > 0 && dst_ready.writable {
            let Some(pipe) = &self.kernel else { unreachable!("bytes held without a pipe") };
            match splice(pipe.read.as_fd(), dst, self.held as usize) {
                Io::Done(n) => {
                    // n <= held <= PIPE_CAPACITY: the cast cannot truncate.
                    self.held -= n as u32;
                    *delivered += n as u64;
                    moved = true;
                }
                Io::WouldBlock => dst_ready.writable = false,
                // The pipe had bytes, so 0 cannot mean "empty": treat as a broken destination.
                Io::Eof => return Err(io::ErrorKind::WriteZero.into()),
                Io::Failed(e) => return Err(e),
            }
        }
        Ok(moved)
    }
}

/// Both directions of one relay. Lives in the connection; holds no pipe while idle.
#[derive(Debug, Default)]
pub struct SplicePipes {
    pub to_upstream: Spliced,
    pub to_client: Spliced,
}

/// Move bytes from `src` to `dst` through a kernel pipe, with exactly the semantics of
/// [`relay::pump`]: until one side would block, the source ends, or `budget` bytes have
/// been read. `pipe` holds the direction's queued user-space bytes (flushed first) and its
/// EOF / half-close / byte-count state; `spliced` its kernel pipe. `scratch` is used only
/// when no pipe is available and this pump falls back to copying.
///
/// Returns whether any progress was made; an error means the relay is broken.
#[allow(clippy::too_many_arguments)] // relay::pump's arguments plus the kernel pipe
pub fn pump<S: Stream + AsFd, D: Stream + AsFd>(
    src: &mut S,
    src_ready: &mut Readiness,
    dst: &mut D,
    dst_ready: &mut Readiness,
    pipe: &mut Pipe,
    spliced: &mut Spliced,
    scratch: &mut [u8],
    budget: &mut usize,
    workers: usize,
) -> io::Result<bool> {
    let result = pump_inner(src, src_ready, dst, dst_ready, pipe, spliced, scratch, budget, workers);
    // Whatever happened, an empty pipe goes back to the pool (on error the relay closes and
    // a pipe still holding bytes is closed with it).
    if result.is_ok() {
        spliced.release_if_empty();
    }
    result
}

#[allow(clippy::too_many_arguments)]
fn pump_inner<S: Stream + AsFd, D: Stream + AsFd>(
    src: &mut S,
    src_ready: &mut Readiness,
    dst: &mut D,
    dst_ready: &mut Readiness,
    pipe: &mut Pipe,
    spliced: &mut Spliced,
    scratch: &mut [u8],
    budget: &mut usize,
    workers: usize,
) -> io::Result<bool> {
    let mut progress = false;
    // Each pass either splices at least one byte in (spending budget) or returns, so the
    // loop ends within budget + 2 passes.
    loop {
        // 1. User-space bytes first (the SOCKS reply, early payload, a copy fallback's rest).
        progress |= pipe.flush(dst, dst_ready)?;
        if pipe.has_pending() {
            return Ok(progress);
        }
        // 2. Then what waits in the kernel pipe. While any remains, do not read the source:
        //    that is the backpressure, as on the copy path.
        progress |= spliced.drain(dst.as_fd(), dst_ready, &mut pipe.delivered)?;
        if spliced.has_pending() {
            return Ok(progress);
        }
        // 3. Source ended and everything is delivered: half-close the destination, once.
        if pipe.eof {
            return Ok(pipe.half_close_once(dst)? || progress);
        }
        if !src_ready.readable || *budget == 0 {
            return Ok(progress);
        }
        // 4. Borrow a pipe, or copy this time if none can be had.
        if spliced.kernel.is_none() {
            match take(workers) {
                Some(kernel) => spliced.kernel = Some(kernel),
                None => {
                    let copied = relay::pump(src, src_ready, dst, dst_ready, pipe, scratch, budget)?;
                    return Ok(progress | copied);
                }
            }
        }
        let Some(kernel) = &spliced.kernel else { unreachable!("pipe borrowed above") };
        // 5. Splice the source into the (empty) pipe; the next pass drains it into dst.
        match splice(src.as_fd(), kernel.write.as_fd(), PIPE_CAPACITY.min(*budget)) {
            Io::Done(n) => {
                progress = true;
                *budget -= n;
                // n <= PIPE_CAPACITY: fits.
                spliced.held = n as u32;
            }
            Io::WouldBlock => {
                // The pipe is empty, so EAGAIN can only mean the socket has nothing.
                src_ready.readable = false;
                return Ok(progress);
            }
            Io::Eof => {
                pipe.eof = true;
                progress = true;
            }
            Io::Failed(e) => return Err(e),
        }
    }
}

/// `splice(2)` up to `len` bytes from `from` to `to` (one of them a pipe), nonblocking,
/// sorted like [`crate::sockio`] sorts reads: 0 is end-of-stream, `EAGAIN` is "not ready".
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> Io {
    loop {
        // SAFETY: both descriptors are borrowed, so they stay open for the whole call; the
        // offsets are null (required for pipes and sockets: use the stream position), and no
        // memory of ours is handed to the kernel.
        let n = unsafe {
            libc::splice(
                from.as_raw_fd(),
                ptr::null_mut(),
                to.as_raw_fd(),
                ptr::null_mut(),
                len,
                libc::SPLICE_F_NONBLOCK | libc::SPLICE_F_MOVE,
            )
        };
        if n > 0 {
            return Io::Done(n as usize);
        }
        if n == 0 {
            return Io::Eof;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return Io::WouldBlock,
            _ => return Io::Failed(e),
        }
    }
}

/// A new nonblocking, close-on-exec pipe: (read end, write end).
fn pipe2() -> io::Result<(OwnedFd, OwnedFd)> {
    let mut fds: [libc::c_int; 2] = [-1; 2];
    // SAFETY: pipe2 writes two descriptors into the array we own and touches nothing else.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: on success both descriptors are new, open, and owned by nobody else, so each
    // may be owned (and eventually closed) by exactly one OwnedFd.
    Ok(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{Shutdown, TcpListener, TcpStream};
    use std::time::Duration;

    impl Stream for TcpStream {
        fn shutdown_write(&self) -> io::Result<()> {
            self.shutdown(Shutdown::Write)
        }
    }

    /// A connected loopback TCP pair: (the end the proxy uses, nonblocking; the peer, blocking
    /// with a timeout).
    fn tcp_pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let peer = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (ours, _) = listener.accept().unwrap();
        ours.set_nonblocking(true).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (ours, peer)
    }

    fn ready() -> Readiness {
        Readiness::BOTH
    }

    /// A relay direction under test: src (fed by src_peer) → dst (read by dst_peer).
    struct Rig {
        src: TcpStream,
        src_peer: TcpStream,
        dst: TcpStream,
        dst_peer: TcpStream,
        pipe: Pipe,
        spliced: Spliced,
        scratch: Vec<u8>,
    }

    impl Rig {
        fn new() -> Rig {
            let (src, src_peer) = tcp_pair();
            let (dst, dst_peer) = tcp_pair();
            Rig {
                src,
                src_peer,
                dst,
                dst_peer,
                pipe: Pipe::default(),
                spliced: Spliced::default(),
                scratch: vec![0; 4096],
            }
        }

        /// One pump with both sides ready and no budget limit.
        fn pump(&mut self) -> io::Result<bool> {
            let (mut sr, mut dr) = (ready(), ready());
            let mut budget = usize::MAX;
            let Rig { src, dst, pipe, spliced, scratch, .. } = self;
            pump(src, &mut sr, dst, &mut dr, pipe, spliced, scratch, &mut budget, 1)
        }

        /// Pump until `done` holds or 1000 passes have run (loopback can lag a little).
        fn pump_until(&mut self, mut done: impl FnMut(&Rig) -> bool) {
            for _ in 0..1000 {
                self.pump().unwrap();
                if done(self) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            panic!("pump did not get there");
        }
    }

    #[test]
    fn moves_bytes_and_returns_the_pipe() {
        let mut rig = Rig::new();
        let data: Vec<u8> = (0..200_000u32).map(|i| (i * 31) as u8).collect();
        let writer = {
            let mut peer = rig.src_peer.try_clone().unwrap();
            let data = data.clone();
            std::thread::spawn(move || peer.write_all(&data).unwrap())
        };
        let mut got = Vec::new();
        let mut buf = vec![0; 65536];
        rig.dst_peer.set_nonblocking(true).unwrap();
        for _ in 0..10_000 {
            rig.pump().unwrap();
            assert!(!rig.spliced.holds_pipe() || rig.spliced.has_pending(), "empty pipe given back");
            match rig.dst_peer.read(&mut buf) {
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(e) => panic!("{e}"),
            }
            if got.len() == data.len() {
                break;
            }
        }
        writer.join().unwrap();
        assert_eq!(got, data);
        assert_eq!(rig.pipe.delivered, data.len() as u64);
    }

    #[test]
    fn blocked_destination_keeps_bytes_in_the_pipe_and_stops_reading() {
        let mut rig = Rig::new();
        // Fill far more than the destination's buffers can take while nobody reads dst_peer.
        let total = 16 << 20;
        let writer = {
            let mut peer = rig.src_peer.try_clone().unwrap();
            std::thread::spawn(move || {
                let chunk = vec![7u8; 65536];
                let mut sent = 0;
                peer.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
                while sent < total {
                    match peer.write(&chunk) {
                        Ok(n) => sent += n,
                        Err(_) => break, // the proxy stopped reading: its window is full
                    }
                }
                sent
            })
        };
        rig.pump_until(|r| r.spliced.has_pending());
        // Keep pumping: the destination stays blocked, so nothing more may be read.
        let delivered = rig.pipe.delivered;
        for _ in 0..50 {
            rig.pump().unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(rig.spliced.has_pending() && rig.spliced.holds_pipe(), "bytes wait in the pipe");
        assert!(rig.pipe.delivered - delivered < 4 << 20, "destination blocked, little more delivered");
        let sent = writer.join().unwrap();
        assert!(sent < total, "the sender was pushed back (sent {sent})");
        // Now the reader drains everything: the pipe empties and goes back.
        let mut buf = vec![0; 1 << 20];
        rig.dst_peer.set_nonblocking(true).unwrap();
        let mut got = 0u64;
        for _ in 0..10_000 {
            while let Ok(n) = rig.dst_peer.read(&mut buf) {
                got += n as u64;
            }
            rig.pump().unwrap();
            if got == sent as u64 {
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert_eq!(got, sent as u64);
        assert!(!rig.spliced.holds_pipe());
    }

    #[test]
    fn queued_bytes_first_then_eof_becomes_one_half_close() {
        let mut rig = Rig::new();
        rig.pipe.queue(b"reply:");
        rig.src_peer.write_all(b"spliced").unwrap();
        rig.src_peer.shutdown(Shutdown::Write).unwrap();
        rig.pump_until(|r| r.pipe.is_done());
        let mut got = Vec::new();
        rig.dst_peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"reply:spliced");
        assert_eq!(rig.pipe.delivered, 13);
        // More pumps after the half-close do nothing (and do not shut down again).
        assert!(!rig.pump().unwrap());
    }

    #[test]
    fn budget_limits_one_call() {
        let mut rig = Rig::new();
        rig.src_peer.write_all(&[1; 1000]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut budget = 300;
        let (mut sr, mut dr) = (ready(), ready());
        pump(
            &mut rig.src,
            &mut sr,
            &mut rig.dst,
            &mut dr,
            &mut rig.pipe,
            &mut rig.spliced,
            &mut rig.scratch,
            &mut budget,
            1,
        )
        .unwrap();
        assert_eq!((budget, rig.pipe.delivered), (0, 300));
        assert!(sr.readable, "still readable: the caller must come back");
    }

    #[test]
    fn reset_source_is_an_error() {
        let mut rig = Rig::new();
        socket2::SockRef::from(&rig.src_peer).set_linger(Some(Duration::ZERO)).unwrap();
        rig.src_peer.write_all(b"x").unwrap();
        drop(std::mem::replace(&mut rig.src_peer, tcp_pair().1));
        std::thread::sleep(Duration::from_millis(20));
        let mut failed = false;
        for _ in 0..100 {
            if rig.pump().is_err() {
                failed = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(failed, "a reset source ends the pump with an error");
    }

    #[test]
    fn no_pipe_available_falls_back_to_copying() {
        POOL.with(|p| p.borrow_mut().limit = usize::MAX);
        OPEN.with(|n| n.set(usize::MAX)); // pretend the limit is reached
        let mut rig = Rig::new();
        rig.src_peer.write_all(b"copied anyway").unwrap();
        rig.src_peer.shutdown(Shutdown::Write).unwrap();
        rig.pump_until(|r| r.pipe.is_done());
        assert!(!rig.spliced.holds_pipe());
        let mut got = Vec::new();
        rig.dst_peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"copied anyway");
        OPEN.with(|n| n.set(0));
    }

    #[test]
    fn pipe_limit_follows_fds_and_workers() {
        assert_eq!(pipes_per_loop(20_000, 1), 256);
        assert_eq!(pipes_per_loop(20_000, 4), 64);
        assert_eq!(pipes_per_loop(1024, 1), 64);
        assert_eq!(pipes_per_loop(16, 8), 2);
    }
}
