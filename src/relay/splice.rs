//! The Linux fast path for relaying: `splice(2)` through a kernel pipe instead of a copy
//! through the loop's scratch buffer (`--relay splice`).
//!
//! ## Why it helps
//!
//! The copy path ([`super`]) moves every byte twice across the user/kernel boundary:
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
//! The readiness rules are those of the one relay pump ([`super::pump`]): an event sets a
//! readiness flag, only `EAGAIN` clears it, and the source is not read while bytes wait for
//! the destination. Three things are special here:
//!
//! * **A pipe is never registered with epoll.** It needs no events: it is filled only by us
//!   (splice in) and drained only by us (splice out), synchronously, in the same pump call.
//!   Bytes stay in it only when the destination socket returned `EAGAIN`; then the source is
//!   not read again until the destination's writable edge (an epoll event on a socket we do
//!   watch) lets the pump drain the pipe.
//! * **`EAGAIN` from a splice into a pipe is ambiguous**: it means "the socket has nothing" or
//!   "the pipe is full". We only splice in when the pipe is empty, so it can only mean the
//!   former, and clearing the source's readable flag stays correct.
//! * **A short splice proves nothing.** A pipe has 16 slots, one per page fragment, and can
//!   fill before the asked length, so a splice that moved less than asked does not mean the
//!   socket is empty: the short-read rule of the copy path is not applied here.
//!
//! Bytes queued in user space before relaying began (the SOCKS reply, early payload sent with
//! the request) wait in the direction's backlog and are flushed before anything is spliced,
//! so order is kept. The direction ([`super::Direction`]) also carries the EOF, half-close
//! and byte-count state, so both paths share one bookkeeping. The pool is owned by the event
//! loop and lent to each pump ([`super::Movers`]), like the scratch buffer.
//!
//! Splicing into a socket whose peer is gone raises `SIGPIPE` like `write` does (the kernel
//! does not pass `MSG_NOSIGNAL` here); Rust programs ignore `SIGPIPE` by default, so it
//! surfaces as `EPIPE`, an error that closes the relay.

use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::ptr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Moved;
use crate::net::{End, ReadOutcome, Stream};

/// Most pipes (lent and pooled) that may exist in one process, before division between
/// workers: 512 descriptors and at most 16 MiB of waiting data.
pub const PIPES_PER_PROCESS: usize = 256;
/// Bytes asked of one splice into a pipe: the default pipe capacity (16 pages).
const PIPE_CAPACITY: usize = 64 * 1024;
/// Empty pipes kept for reuse per event loop. Pipes come back at the end of the pump that
/// borrowed them, so a handful covers any number of busy relays on one thread.
const POOL_KEEP: usize = 16;

/// One kernel pipe: the read end and the write end. Counts itself in its pool's `open`
/// while it exists, wherever it is (pooled, lent, or closed with a relay that held it).
#[derive(Debug)]
struct KernelPipe {
    read: OwnedFd,
    write: OwnedFd,
    open: Arc<AtomicUsize>,
}

impl Drop for KernelPipe {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
        // The two OwnedFds close themselves after this.
    }
}

/// One event loop's pipes: the empty ones kept for reuse, and how many may exist. Owned by
/// the loop and lent to a pump through [`super::Movers`].
#[derive(Debug)]
pub struct PipePool {
    free: Vec<KernelPipe>,
    /// Most pipes this loop may have open (lent + free).
    limit: usize,
    /// Pipes of this pool that exist right now. An atomic only because a pipe dropped with
    /// its connection must count itself out; only the loop's thread ever touches it.
    open: Arc<AtomicUsize>,
}

impl PipePool {
    /// A pool for one of `workers` loops in a process whose fd limit is `nofile`.
    pub fn new(nofile: u64, workers: usize) -> PipePool {
        PipePool::with_limit(pipes_per_loop(nofile, workers))
    }

    fn with_limit(limit: usize) -> PipePool {
        PipePool { free: Vec::new(), limit, open: Arc::default() }
    }

    /// Borrow an empty pipe: a pooled one, else a new one if the limit allows. `None` means
    /// "copy this time" (limit reached, or no descriptors left).
    fn take(&mut self) -> Option<KernelPipe> {
        if let Some(pipe) = self.free.pop() {
            return Some(pipe);
        }
        if self.open.load(Ordering::Relaxed) >= self.limit {
            return None;
        }
        match pipe2() {
            Ok((read, write)) => {
                self.open.fetch_add(1, Ordering::Relaxed);
                Some(KernelPipe { read, write, open: Arc::clone(&self.open) })
            }
            Err(e) => {
                log::debug!("no pipe for splice ({e}); copying instead");
                None
            }
        }
    }

    /// Return an empty pipe: pooled for the next borrower, or closed if the pool is full.
    fn give_back(&mut self, pipe: KernelPipe) {
        if self.free.len() < POOL_KEEP {
            self.free.push(pipe);
        }
    }
}

/// How many pipes one event loop may have: [`PIPES_PER_PROCESS`], or a sixteenth of the
/// fd limit (each pipe is two descriptors, so an eighth of them) if that is less, shared
/// between `workers` loops; at least 2 so each loop can splice both directions of one relay.
fn pipes_per_loop(nofile: u64, workers: usize) -> usize {
    let per_process = PIPES_PER_PROCESS.min(usize::try_from(nofile / 16).unwrap_or(usize::MAX));
    (per_process / workers.max(1)).max(2)
}

/// The splice state of one relay direction: the borrowed pipe, if any, and how many bytes
/// sit in it. Lives in the direction ([`super::Direction`]).
#[derive(Debug, Default)]
pub struct Parked {
    pipe: Option<KernelPipe>,
    /// Bytes spliced into `pipe` and not yet out of it.
    held: u32,
}

impl Parked {
    /// Bytes wait in the kernel pipe for the destination (so the source is not read).
    pub fn has_bytes(&self) -> bool {
        self.held > 0
    }

    /// Whether this direction holds a pipe right now.
    #[cfg(test)]
    pub fn holds_pipe(&self) -> bool {
        self.pipe.is_some()
    }

    /// Make sure a pipe is borrowed; `false` if none can be had (copy instead).
    pub(super) fn borrow_pipe(&mut self, pool: &mut PipePool) -> bool {
        if self.pipe.is_none() {
            self.pipe = pool.take();
        }
        self.pipe.is_some()
    }

    /// Give the pipe back if it is empty: an idle direction holds no descriptors.
    pub(super) fn release_if_empty(&mut self, pool: &mut PipePool) {
        if self.held == 0
            && let Some(pipe) = self.pipe.take()
        {
            pool.give_back(pipe);
        }
    }

    /// Splice from the source into the (empty, borrowed) pipe. The pump's next flush drains
    /// it into the destination.
    pub(super) fn fill_from<S: Stream>(&mut self, src: &mut End<S>, budget: usize) -> Moved {
        let Some(pipe) = &self.pipe else { return Moved::Failed(io::Error::other("no pipe borrowed")) };
        match splice(src.socket.as_fd(), pipe.write.as_fd(), PIPE_CAPACITY.min(budget)) {
            ReadOutcome::Data(n) => {
                // n <= PIPE_CAPACITY: fits.
                self.held = n as u32;
                // A splice cannot tell whether it emptied the socket (the pipe may have run
                // out of slots first), so it never claims `drained`.
                Moved::Some { read: n, drained: false }
            }
            ReadOutcome::WouldBlock => {
                // The pipe is empty, so EAGAIN can only mean the socket has nothing.
                src.ready.readable = false;
                Moved::WouldBlock
            }
            ReadOutcome::Eof => Moved::Eof,
            ReadOutcome::Failed(e) => Moved::Failed(e),
        }
    }

    /// Splice the pipe's bytes into `dst` until it is empty or `dst` would block. Returns
    /// how many bytes left the pipe.
    pub(super) fn drain<D: Stream>(&mut self, dst: &mut End<D>) -> io::Result<usize> {
        let mut moved = 0;
        while self.held > 0 && dst.ready.writable {
            let Some(pipe) = &self.pipe else { return Err(io::Error::other("bytes held without a pipe")) };
            match splice(pipe.read.as_fd(), dst.socket.as_fd(), self.held as usize) {
                ReadOutcome::Data(n) => {
                    // n <= held <= PIPE_CAPACITY: the cast cannot truncate.
                    self.held -= n as u32;
                    moved += n;
                }
                ReadOutcome::WouldBlock => dst.ready.writable = false,
                // The pipe had bytes, so 0 cannot mean "empty": treat as a broken destination.
                ReadOutcome::Eof => return Err(io::ErrorKind::WriteZero.into()),
                ReadOutcome::Failed(e) => return Err(e),
            }
        }
        Ok(moved)
    }
}

/// `splice(2)` up to `len` bytes from `from` to `to` (one of them a pipe), nonblocking,
/// sorted like a read: 0 is end-of-stream, `EAGAIN` is "not ready".
fn splice(from: BorrowedFd<'_>, to: BorrowedFd<'_>, len: usize) -> ReadOutcome {
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
            return ReadOutcome::Data(n as usize);
        }
        if n == 0 {
            return ReadOutcome::Eof;
        }
        let e = io::Error::last_os_error();
        match e.kind() {
            io::ErrorKind::Interrupted => continue,
            io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
            _ => return ReadOutcome::Failed(e),
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
    use super::super::{Direction, Movers, Outbox, pump};
    use super::*;
    use crate::net::Readiness;
    use std::io::{Read, Write};
    use std::net::{Shutdown, SocketAddr, TcpStream};
    use std::time::Duration;

    /// Socket buffers of the rig, pinned: with autotuning a loopback receive buffer can grow
    /// to `tcp_rmem`'s maximum (32 MiB on some kernels), and a test that must see the
    /// sender pushed back has to know how much the path can hold.
    const PINNED_BUF: usize = 64 * 1024;

    fn pinned(domain: socket2::Domain) -> socket2::Socket {
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).unwrap();
        socket.set_recv_buffer_size(PINNED_BUF).unwrap();
        socket.set_send_buffer_size(PINNED_BUF).unwrap();
        socket
    }

    /// A connected loopback TCP pair with pinned buffers: (the end the proxy uses, a
    /// nonblocking mio stream as in the server; the peer, blocking with a timeout).
    fn tcp_pair() -> (mio::net::TcpStream, TcpStream) {
        let listener = pinned(socket2::Domain::IPV4);
        listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
        listener.listen(1).unwrap();
        let peer = pinned(socket2::Domain::IPV4);
        peer.connect(&listener.local_addr().unwrap()).unwrap();
        // Accepted sockets inherit the listener's buffer sizes.
        let (ours, _) = listener.accept().unwrap();
        let (ours, peer): (TcpStream, TcpStream) = (ours.into(), peer.into());
        ours.set_nonblocking(true).unwrap();
        peer.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        (mio::net::TcpStream::from_std(ours), peer)
    }

    /// Most bytes the rig's path can hold while nobody reads the destination: each socket
    /// buffer (the kernel doubles the asked size for bookkeeping) and one pipe.
    fn path_capacity(rig: &Rig) -> usize {
        let buffers = |s: socket2::SockRef<'_>| s.recv_buffer_size().unwrap() + s.send_buffer_size().unwrap();
        let peers = buffers((&rig.src_peer).into()) + buffers((&rig.dst_peer).into());
        let ours = buffers((&rig.src.socket).into()) + buffers((&rig.dst.socket).into());
        peers + ours + PIPE_CAPACITY
    }

    /// A relay direction under test: src (fed by src_peer) → dst (read by dst_peer).
    struct Rig {
        src: End<mio::net::TcpStream>,
        src_peer: TcpStream,
        dst: End<mio::net::TcpStream>,
        dst_peer: TcpStream,
        dir: Direction,
        pool: PipePool,
        scratch: Vec<u8>,
        /// `--relay auto` instead of `splice`.
        adaptive: bool,
    }

    impl Rig {
        fn new() -> Rig {
            Rig::with_pool(PipePool::with_limit(4))
        }

        fn with_pool(pool: PipePool) -> Rig {
            let (src, src_peer) = tcp_pair();
            let (dst, dst_peer) = tcp_pair();
            Rig {
                src: End::new(src, Readiness::BOTH),
                src_peer,
                dst: End::new(dst, Readiness::BOTH),
                dst_peer,
                dir: Direction::default(),
                pool,
                scratch: vec![0; 4096],
                adaptive: false,
            }
        }

        /// One pump with both sides marked ready and no budget limit.
        fn pump(&mut self) -> io::Result<bool> {
            let mut unlimited = usize::MAX;
            self.pump_with_budget(&mut unlimited)
        }

        fn pump_with_budget(&mut self, budget: &mut usize) -> io::Result<bool> {
            self.src.ready = Readiness::BOTH;
            self.dst.ready = Readiness::BOTH;
            let adaptive = self.adaptive;
            let mut movers = Movers { scratch: &mut self.scratch, pipes: Some(&mut self.pool), adaptive };
            pump(&mut self.src, &mut self.dst, &mut self.dir, budget, &mut movers)
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
            assert!(!rig.dir.holds_pipe() || rig.dir.has_pending(), "empty pipe given back");
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
        assert_eq!(rig.dir.delivered, data.len() as u64);
    }

    #[test]
    fn blocked_destination_keeps_bytes_in_the_pipe_and_stops_reading() {
        let mut rig = Rig::new();
        // Push far more than the whole path can hold while nobody reads dst_peer.
        let total = 4 * path_capacity(&rig);
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
        rig.pump_until(|r| r.dir.has_pending());
        // Keep pumping: the destination stays blocked, so nothing more may be read.
        let delivered = rig.dir.delivered;
        for _ in 0..50 {
            rig.pump().unwrap();
            std::thread::sleep(Duration::from_millis(2));
        }
        assert!(rig.dir.has_pending() && rig.dir.holds_pipe(), "bytes wait in the pipe");
        assert!(
            rig.dir.delivered - delivered <= path_capacity(&rig) as u64,
            "destination blocked, little more delivered"
        );
        let sent = writer.join().unwrap();
        assert!(sent < total, "the sender was pushed back (sent {sent} of {total})");
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
        assert!(!rig.dir.holds_pipe());
    }

    #[test]
    fn queued_bytes_first_then_eof_becomes_one_half_close() {
        let mut rig = Rig::new();
        let mut queued = Outbox::default();
        queued.queue(b"reply:");
        rig.dir = Direction::with_queued(queued);
        rig.src_peer.write_all(b"spliced").unwrap();
        rig.src_peer.shutdown(Shutdown::Write).unwrap();
        rig.pump_until(|r| r.dir.is_done());
        let mut got = Vec::new();
        rig.dst_peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"reply:spliced");
        assert_eq!(rig.dir.delivered, 13);
        // More pumps after the half-close do nothing (and do not shut down again).
        assert!(!rig.pump().unwrap());
    }

    #[test]
    fn budget_limits_one_call() {
        let mut rig = Rig::new();
        rig.src_peer.write_all(&[1; 1000]).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut budget = 300;
        rig.pump_with_budget(&mut budget).unwrap();
        assert_eq!((budget, rig.dir.delivered), (0, 300));
    }

    #[test]
    fn reset_source_is_an_error() {
        let mut rig = Rig::new();
        socket2::SockRef::from(&rig.src_peer).set_linger(Some(Duration::ZERO)).unwrap();
        rig.src_peer.write_all(b"x").unwrap();
        drop(std::mem::replace(&mut rig.src_peer, tcp_pair().1));
        let mut failed = false;
        for _ in 0..1000 {
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
        let mut rig = Rig::with_pool(PipePool::with_limit(0));
        rig.src_peer.write_all(b"copied anyway").unwrap();
        rig.src_peer.shutdown(Shutdown::Write).unwrap();
        rig.pump_until(|r| r.dir.is_done());
        assert!(!rig.dir.holds_pipe());
        let mut got = Vec::new();
        rig.dst_peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"copied anyway");
    }

    /// `--relay auto`: a small message is copied (no pipe is ever made); a burst larger than
    /// the scratch buffer is spliced after its first copy; the splice that finds the source
    /// empty ends the burst, and the next small message is copied again.
    #[test]
    fn auto_copies_small_messages_and_splices_bursts() {
        let mut rig = Rig::new();
        rig.adaptive = true;
        let opened = |rig: &Rig| rig.pool.open.load(Ordering::Relaxed);
        rig.src_peer.write_all(b"small").unwrap();
        rig.pump_until(|r| r.dir.delivered == 5);
        assert_eq!(opened(&rig), 0, "a small message is copied");
        assert!(!rig.dir.bulk);

        let burst: Vec<u8> = (0..100_000u32).map(|i| (i * 13) as u8).collect();
        rig.src_peer.write_all(&burst).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        let mut budget = rig.scratch.len();
        rig.pump_with_budget(&mut budget).unwrap();
        assert!(rig.dir.bulk, "a full copy starts a burst");
        assert_eq!(opened(&rig), 0, "its first bytes were copied");
        rig.pump_until(|r| r.dir.delivered == 5 + burst.len() as u64);
        assert_eq!(opened(&rig), 1, "the rest was spliced");
        rig.pump().unwrap();
        assert!(!rig.dir.bulk, "the splice that found nothing ended the burst");

        rig.src_peer.write_all(b"tail").unwrap();
        rig.src_peer.shutdown(Shutdown::Write).unwrap();
        rig.pump_until(|r| r.dir.is_done());
        let mut got = Vec::new();
        rig.dst_peer.read_to_end(&mut got).unwrap();
        assert_eq!(got, [&b"small"[..], &burst, b"tail"].concat(), "in order, nothing lost");
        assert!(!rig.dir.holds_pipe(), "the pipe went back to the pool");
    }

    #[test]
    fn a_pipe_closed_with_its_relay_counts_itself_out() {
        let mut pool = PipePool::with_limit(2);
        let mut parked = Parked::default();
        assert!(parked.borrow_pipe(&mut pool));
        assert_eq!(pool.open.load(Ordering::Relaxed), 1);
        drop(parked); // a relay closed while holding it
        assert_eq!(pool.open.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn pipe_limit_follows_fds_and_workers() {
        assert_eq!(pipes_per_loop(20_000, 1), 256);
        assert_eq!(pipes_per_loop(20_000, 4), 64);
        assert_eq!(pipes_per_loop(1024, 1), 64);
        assert_eq!(pipes_per_loop(16, 8), 2);
    }
}
