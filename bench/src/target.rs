//! The target every benchmark connection ends at: one `mio` loop on its own thread that
//! speaks the header protocol of [`wire`](crate::wire) (echo, upload check, download,
//! hold).
//!
//! Event-driven rather than thread-per-connection so it can hold thousands of idle relays
//! (the memory workload) and accept tens of thousands of connections per second (the
//! connection-rate workload) without becoming what is measured. Upload checks are counted
//! in shared [`Stats`], which the load tool reads after each run to prove that every byte
//! it sent arrived intact.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};

use mio::event::Event;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::pattern::{MAX_CHUNK, Pattern};
use crate::wire::{HEADER_LEN, HOLD_ACK, Header, Mode};

const LISTENER: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);
/// An echo client that never reads would make us buffer without end: stop reading it here.
const ECHO_HIGH_WATER: usize = 256 * 1024;
/// Patterns cost ~320 KiB each; a few dozen streams' worth is plenty to keep.
const PATTERN_CACHE: usize = 64;

/// Counters the load tool reads (and diffs) between runs.
#[derive(Debug, Default)]
pub struct Stats {
    /// Upload bytes received and found correct (on connections without a mismatch so far).
    pub uploaded: AtomicU64,
    /// Connections whose upload did not match the pattern.
    pub mismatches: AtomicU64,
    pub accepted: AtomicU64,
}

/// A plain copy of [`Stats`] at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    pub uploaded: u64,
    pub mismatches: u64,
    pub accepted: u64,
}

impl Stats {
    pub fn snapshot(&self) -> Snapshot {
        Snapshot {
            uploaded: self.uploaded.load(Ordering::SeqCst),
            mismatches: self.mismatches.load(Ordering::SeqCst),
            accepted: self.accepted.load(Ordering::SeqCst),
        }
    }
}

/// A running target; dropping it stops the loop and closes every connection.
pub struct Target {
    addr: SocketAddr,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<io::Result<()>>>,
}

impl Target {
    pub fn start(bind: SocketAddr) -> io::Result<Target> {
        // socksloop's listener, not mio's `TcpListener::bind`: that one asks for a backlog of
        // 128, and at a concurrency above it the target's accept queue overflows and clients
        // wait a SYN retransmission (1 s), which would show up as the proxy's tail latency.
        let mut listener = socksloop::listen::bind(bind, false)?;
        let addr = listener.local_addr()?;
        let poll = Poll::new()?;
        poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
        let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
        let stats = Arc::new(Stats::default());
        let stop = Arc::new(AtomicBool::new(false));
        let mut lp = Loop {
            poll,
            listener,
            conns: Slab::new(),
            scratch: vec![0; MAX_CHUNK],
            patterns: HashMap::new(),
            stats: Arc::clone(&stats),
            stop: Arc::clone(&stop),
        };
        let thread = thread::Builder::new().name("bench-target".into()).spawn(move || lp.run())?;
        Ok(Target { addr, stats, stop, waker, thread: Some(thread) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn stats(&self) -> Snapshot {
        self.stats.snapshot()
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

struct Loop {
    poll: Poll,
    listener: TcpListener,
    conns: Slab<Conn>,
    scratch: Vec<u8>,
    patterns: HashMap<u64, Arc<Pattern>>,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
}

impl Loop {
    fn run(&mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        while !self.stop.load(Ordering::SeqCst) {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            for event in events.iter() {
                match event.token() {
                    WAKER => {}
                    LISTENER => self.accept(),
                    Token(key) => {
                        if let Some(conn) = self.conns.get_mut(key) {
                            conn.record(event);
                        }
                        self.drive(key);
                    }
                }
            }
        }
        Ok(())
    }

    fn accept(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((mut stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    let entry = self.conns.vacant_entry();
                    let key = entry.key();
                    let interest = Interest::READABLE | Interest::WRITABLE;
                    if self.poll.registry().register(&mut stream, Token(key), interest).is_err() {
                        continue;
                    }
                    entry.insert(Conn::new(stream));
                    self.stats.accepted.fetch_add(1, Ordering::Relaxed);
                    // The header often arrives with the connection: no need to wait for an event.
                    self.drive(key);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                // EMFILE and friends: the tool sized the fd limit; report and keep going.
                Err(e) => {
                    eprintln!("bench target: accept: {e}");
                    return;
                }
            }
        }
    }

    fn drive(&mut self, key: usize) {
        let Loop { conns, scratch, patterns, stats, .. } = self;
        let Some(conn) = conns.get_mut(key) else { return };
        if !conn.drive(scratch, patterns, stats) {
            // Dropping closes the socket (and deregisters it). Reaching here means the
            // client's FIN was read, or the connection broke, so no reset is sent for
            // unread data.
            conns.remove(key);
        }
    }
}

struct Conn {
    stream: TcpStream,
    readable: bool,
    writable: bool,
    header: [u8; HEADER_LEN],
    header_len: usize,
    job: Option<Header>,
    pattern: Option<Arc<Pattern>>,
    /// Upload bytes checked so far.
    received: u64,
    upload_ok: bool,
    /// Download bytes sent so far.
    sent: u64,
    /// Echoed bytes or the hold acknowledgement, not yet written.
    out: Vec<u8>,
    out_sent: usize,
    /// The client's FIN has been read.
    eof: bool,
    /// Our FIN has been sent (a finite download is complete).
    shut: bool,
}

impl Conn {
    fn new(stream: TcpStream) -> Conn {
        Conn {
            stream,
            readable: true,
            writable: true,
            header: [0; HEADER_LEN],
            header_len: 0,
            job: None,
            pattern: None,
            received: 0,
            upload_ok: true,
            sent: 0,
            out: Vec::new(),
            out_sent: 0,
            eof: false,
            shut: false,
        }
    }

    fn record(&mut self, event: &Event) {
        self.readable |= event.is_readable() || event.is_read_closed() || event.is_error();
        self.writable |= event.is_writable() || event.is_write_closed() || event.is_error();
    }

    /// Move whatever can move now. Returns `false` when the connection is finished.
    fn drive(
        &mut self,
        scratch: &mut [u8],
        patterns: &mut HashMap<u64, Arc<Pattern>>,
        stats: &Stats,
    ) -> bool {
        // Loops until both sides would block; each pass moves at most one buffer each way,
        // and socket buffers are finite, so this ends.
        loop {
            let mut progress = false;
            if self.wants_read() {
                match self.stream.read(scratch) {
                    Ok(0) => {
                        self.eof = true;
                        progress = true;
                    }
                    Ok(n) => {
                        if !self.take(&scratch[..n], patterns, stats) {
                            return false;
                        }
                        progress = true;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.readable = false,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => progress = true,
                    Err(_) => return false,
                }
            }
            if self.writable {
                match self.write_some() {
                    Ok(moved) => progress |= moved,
                    Err(_) => return false,
                }
            }
            if self.eof && self.out_sent == self.out.len() && !self.finite_download_left() {
                return false; // all said; closing sends our FIN
            }
            if !progress {
                return true;
            }
        }
    }

    /// A finite download still has bytes to send (it outlives the client's FIN).
    fn finite_download_left(&self) -> bool {
        self.job.is_some_and(|job| job.mode.downloads() && job.len != u64::MAX && !self.shut)
    }

    fn wants_read(&self) -> bool {
        let echo_backlog = self.out.len() - self.out_sent;
        self.readable && !self.eof && echo_backlog < ECHO_HIGH_WATER
    }

    /// Handle bytes read from the client. `false` = close (a bad header).
    fn take(&mut self, mut bytes: &[u8], patterns: &mut HashMap<u64, Arc<Pattern>>, stats: &Stats) -> bool {
        if self.job.is_none() {
            let want = (HEADER_LEN - self.header_len).min(bytes.len());
            self.header[self.header_len..self.header_len + want].copy_from_slice(&bytes[..want]);
            self.header_len += want;
            bytes = &bytes[want..];
            if self.header_len < HEADER_LEN {
                return true;
            }
            let Some(job) = Header::decode(&self.header) else { return false };
            if job.mode.uploads() || job.mode.downloads() {
                if patterns.len() >= PATTERN_CACHE {
                    patterns.clear();
                }
                let pattern = patterns.entry(job.seed).or_insert_with(|| Arc::new(Pattern::new(job.seed)));
                self.pattern = Some(Arc::clone(pattern));
            }
            if job.mode == Mode::Hold {
                self.out.push(HOLD_ACK);
            }
            self.job = Some(job);
        }
        let Some(job) = self.job else { return true };
        match job.mode {
            Mode::Echo => self.out.extend_from_slice(bytes),
            Mode::Upload | Mode::Both => {
                if let Some(pattern) = &self.pattern
                    && self.upload_ok
                {
                    if pattern.verify(self.received, bytes) {
                        // Counted as it arrives, so bytes count even if the proxy later
                        // tears the connection down instead of passing on a half-close.
                        stats.uploaded.fetch_add(bytes.len() as u64, Ordering::Relaxed);
                    } else {
                        self.upload_ok = false;
                        stats.mismatches.fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.received += bytes.len() as u64;
            }
            // Nothing is expected from these clients after the header; ignore it.
            Mode::Download | Mode::Hold => {}
        }
        true
    }

    /// Flush echo bytes, then generate download bytes. Returns whether anything moved.
    fn write_some(&mut self) -> io::Result<bool> {
        let mut moved = false;
        while self.out_sent < self.out.len() {
            match self.stream.write(&self.out[self.out_sent..]) {
                Ok(n) => {
                    self.out_sent += n;
                    moved = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    self.writable = false;
                    return Ok(moved);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        self.out.clear();
        self.out_sent = 0;
        let (Some(job), Some(pattern)) = (self.job, &self.pattern) else { return Ok(moved) };
        // The client's FIN ends an open-ended download (`u64::MAX`); a finite one is sent in
        // full even after the client has half-closed its upload.
        let stop_at_eof = job.len == u64::MAX;
        if !job.mode.downloads() || (self.eof && stop_at_eof) || self.shut {
            return Ok(moved);
        }
        if self.sent == job.len {
            // A finite download is complete. In `Both` mode our FIN waits for the client's:
            // the client stops at our FIN, and sent earlier it would let the client (and
            // then the tool, which stops this process) finish while the tail of its upload is
            // still on its way through the proxy, cut off as "never delivered".
            if job.mode == Mode::Both && !self.eof {
                return Ok(moved);
            }
            // FIN now, keep reading until the client's.
            self.shut = true;
            self.stream.shutdown(Shutdown::Write)?;
            return Ok(true);
        }
        let want = (job.len - self.sent).min(MAX_CHUNK as u64) as usize;
        match self.stream.write(pattern.chunk(self.sent, want)) {
            Ok(n) => {
                self.sent += n as u64;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                self.writable = false;
                Ok(moved)
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(true),
            Err(e) => Err(e),
        }
    }
}
