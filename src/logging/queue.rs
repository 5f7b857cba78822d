//! The bounded queue between the threads that log and the one thread that writes.
//!
//! A thread that logs formats its line itself, then [`Queue::push`]es it: one short lock, no
//! I/O. The writer ([`Queue::run_writer`]) takes everything queued at once and writes it,
//! blocking as long as the output makes it. Queued lines and the batch being written together
//! hold at most `capacity` bytes; a line that does not fit is dropped and counted, and the
//! count is written as one line ("N log lines dropped (output blocked)") where the lines went
//! missing, once the output takes lines again.

use std::collections::VecDeque;
use std::io::{self, Write};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

/// Where a line goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// Diagnostics, and the access log in text format.
    Stderr,
    /// The access log in JSON format.
    Stdout,
}

/// Something the writer writes to: the process's stderr and stdout, or a test's recorder.
pub trait Output {
    /// Write all of `bytes` to `to`, blocking as long as it takes. A failure loses them:
    /// there is nowhere left to report it.
    fn write(&mut self, to: Stream, bytes: &[u8]);
}

enum Entry {
    Line {
        to: Stream,
        text: String,
    },
    /// This many lines were dropped here.
    Dropped(u64),
}

impl Entry {
    /// What the entry holds in memory, counted against the queue's capacity.
    fn cost(&self) -> usize {
        std::mem::size_of::<Entry>()
            + match self {
                Entry::Line { text, .. } => text.capacity(),
                Entry::Dropped(_) => 0,
            }
    }
}

struct State {
    entries: VecDeque<Entry>,
    /// Bytes held by the queued entries and the batch the writer is writing.
    bytes: usize,
    /// Lines dropped since the last notice was queued.
    dropped: u64,
    /// The writer waits on `wake` and must be woken for new entries.
    writer_asleep: bool,
    /// Entries ever queued, and ever written (or lost to a failed write): for `flush`.
    queued: u64,
    written: u64,
    /// The writer returns once everything is written (tests; the process's writer runs until
    /// the process ends).
    closed: bool,
}

impl State {
    fn enqueue(&mut self, entry: Entry) {
        self.bytes += entry.cost();
        self.queued += 1;
        self.entries.push_back(entry);
    }
}

/// Lines on their way from the threads that log to the writer thread.
pub struct Queue {
    state: Mutex<State>,
    /// Signalled when entries arrive for a sleeping writer.
    wake: Condvar,
    /// Signalled when the writer has written a batch (for `flush`).
    progress: Condvar,
    capacity: usize,
}

/// The notice for `dropped` lines, a warning in the text format.
pub fn dropped_notice(dropped: u64, at: SystemTime) -> String {
    super::text_line(
        at,
        log::Level::Warn,
        "socksloop",
        format_args!("{dropped} log lines dropped (output blocked)"),
    )
}

impl Queue {
    /// A queue whose lines (and the batch being written) hold at most `capacity` bytes.
    pub fn new(capacity: usize) -> Queue {
        Queue {
            state: Mutex::new(State {
                entries: VecDeque::new(),
                bytes: 0,
                dropped: 0,
                writer_asleep: false,
                queued: 0,
                written: 0,
                closed: false,
            }),
            wake: Condvar::new(),
            progress: Condvar::new(),
            capacity,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; if something did, the counts are still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queue `text` (a whole line, newline included) for `to`. Never blocks on the output:
    /// when the queue is full the line is dropped and counted. Returns whether it was queued.
    pub fn push(&self, to: Stream, text: String) -> bool {
        let entry = Entry::Line { to, text };
        let cost = entry.cost();
        let mut state = self.lock();
        let queued = state.bytes + cost <= self.capacity;
        if queued {
            if state.dropped > 0 {
                // The gap is here, before this line: say so in its place. (The notice may
                // take the queue a few bytes over: it is one small entry.)
                let dropped = std::mem::take(&mut state.dropped);
                state.enqueue(Entry::Dropped(dropped));
            }
            state.enqueue(entry);
        } else {
            state.dropped += 1;
        }
        // Woken also for a drop, which can happen with the writer asleep (a line larger than
        // the whole queue): it then writes the notice.
        if state.writer_asleep {
            state.writer_asleep = false;
            self.wake.notify_one();
        }
        queued
        // `entry` of a dropped line is freed here, after the lock is released.
    }

    /// Wait until everything queued before the call has been written (and any drops reported),
    /// at most `limit`. Returns whether it was.
    pub fn flush(&self, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        let mut state = self.lock();
        // Drops not yet reported become one notice, the next entry queued.
        let target = state.queued + u64::from(state.dropped > 0);
        while state.written < target {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            state =
                self.progress.wait_timeout(state, deadline - now).unwrap_or_else(PoisonError::into_inner).0;
        }
        true
    }

    /// Let the writer return once everything queued is written (tests: the process's writer
    /// runs as long as the process).
    #[cfg(test)]
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        self.wake.notify_one();
    }

    /// The writer: take what is queued, write it to `out`, repeat. Returns only once the
    /// queue is closed (`Queue::close`, in tests) and empty.
    pub fn run_writer(&self, out: &mut dyn Output) {
        let mut batch: VecDeque<Entry> = VecDeque::new();
        let mut buf: Vec<u8> = Vec::new();
        let (mut batch_len, mut batch_bytes) = (0, 0);
        loop {
            let mut state = self.lock();
            if batch_len > 0 {
                // The batch is out: its bytes make room only now.
                state.bytes -= std::mem::take(&mut batch_bytes);
                state.written += std::mem::take(&mut batch_len);
                self.progress.notify_all();
            }
            loop {
                if !state.entries.is_empty() {
                    break;
                }
                if state.dropped > 0 {
                    // The output took the lines that blocked it: report the drops now rather
                    // than before the next line, which may be long in coming.
                    let dropped = std::mem::take(&mut state.dropped);
                    state.enqueue(Entry::Dropped(dropped));
                    break;
                }
                if state.closed {
                    return;
                }
                state.writer_asleep = true;
                state = self.wake.wait(state).unwrap_or_else(PoisonError::into_inner);
            }
            std::mem::swap(&mut batch, &mut state.entries);
            drop(state);
            batch_len = batch.len() as u64;
            batch_bytes = batch.iter().map(Entry::cost).sum();
            write_batch(&mut batch, &mut buf, out);
            // Free the lines (outside the lock), and memory a burst left behind.
            batch.clear();
            batch.shrink_to(64);
            buf.clear();
            buf.shrink_to(16 * 1024);
        }
    }
}

/// Write `batch` in order, consecutive lines for the same stream in one write.
fn write_batch(batch: &mut VecDeque<Entry>, buf: &mut Vec<u8>, out: &mut dyn Output) {
    let mut current = None;
    for entry in batch.iter() {
        let (to, text): (Stream, std::borrow::Cow<'_, str>) = match entry {
            Entry::Line { to, text } => (*to, text.as_str().into()),
            Entry::Dropped(n) => (Stream::Stderr, dropped_notice(*n, SystemTime::now()).into()),
        };
        if current.is_some_and(|stream| stream != to) || buf.len() >= 64 * 1024 {
            out.write(current.unwrap_or(to), buf);
            buf.clear();
        }
        current = Some(to);
        buf.extend_from_slice(text.as_bytes());
    }
    if let Some(to) = current
        && !buf.is_empty()
    {
        out.write(to, buf);
    }
}

/// The process's stderr and stdout.
pub struct Stdio;

impl Output for Stdio {
    fn write(&mut self, to: Stream, bytes: &[u8]) {
        // Failures (a closed descriptor, a reader gone: EPIPE, since Rust ignores SIGPIPE) lose
        // the bytes; the output is where a failure would be reported.
        let _ = match to {
            Stream::Stderr => write_all_blocking(&mut io::stderr().lock(), bytes),
            Stream::Stdout => {
                let mut stdout = io::stdout().lock();
                write_all_blocking(&mut stdout, bytes).and_then(|()| stdout.flush())
            }
        };
    }
}

/// `write_all` that also waits out `EAGAIN`: stdout and stderr may be shared with a process
/// that made them nonblocking, and this thread is the one that may wait.
fn write_all_blocking(w: &mut impl Write, mut bytes: &[u8]) -> io::Result<()> {
    while !bytes.is_empty() {
        match w.write(bytes) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, mpsc};
    use std::thread;

    /// Records what is written; blocks every write while `gate` is closed, like a full pipe.
    #[derive(Clone, Default)]
    struct Recorder {
        written: Arc<Mutex<Vec<(Stream, String)>>>,
        gate: Arc<(Mutex<bool>, Condvar)>,
    }

    impl Recorder {
        fn set_blocked(&self, blocked: bool) {
            *self.gate.0.lock().unwrap() = blocked;
            self.gate.1.notify_all();
        }

        /// The lines written, in order, with the timestamp of notices cut off.
        fn lines(&self) -> Vec<(Stream, String)> {
            let mut lines = Vec::new();
            for (to, chunk) in self.written.lock().unwrap().iter() {
                for line in chunk.lines() {
                    let line = match line.find(" WARN  [socksloop] ") {
                        Some(at) => line[at + 1..].to_string(),
                        None => line.to_string(),
                    };
                    lines.push((*to, line));
                }
            }
            lines
        }
    }

    impl Output for Recorder {
        fn write(&mut self, to: Stream, bytes: &[u8]) {
            let (blocked, opened) = &*self.gate;
            let mut guard = blocked.lock().unwrap();
            while *guard {
                guard = opened.wait(guard).unwrap();
            }
            self.written.lock().unwrap().push((to, String::from_utf8(bytes.to_vec()).unwrap()));
        }
    }

    fn start(capacity: usize) -> (Arc<Queue>, Recorder, thread::JoinHandle<()>) {
        let queue = Arc::new(Queue::new(capacity));
        let recorder = Recorder::default();
        let writer = {
            let (queue, mut out) = (Arc::clone(&queue), recorder.clone());
            thread::spawn(move || queue.run_writer(&mut out))
        };
        (queue, recorder, writer)
    }

    fn line(n: usize) -> String {
        format!("line {n}\n")
    }

    #[test]
    fn lines_arrive_in_order_on_their_stream() {
        let (queue, recorder, writer) = start(1 << 20);
        for n in 0..100 {
            let to = if n % 3 == 0 { Stream::Stdout } else { Stream::Stderr };
            assert!(queue.push(to, line(n)));
        }
        assert!(queue.flush(Duration::from_secs(10)));
        queue.close();
        writer.join().unwrap();
        let expected: Vec<(Stream, String)> = (0..100)
            .map(|n| (if n % 3 == 0 { Stream::Stdout } else { Stream::Stderr }, format!("line {n}")))
            .collect();
        assert_eq!(recorder.lines(), expected);
    }

    /// While the output is blocked the queue fills and further lines are dropped without
    /// blocking the caller; once it flows, the notice comes where the lines went missing.
    #[test]
    fn a_blocked_output_drops_lines_and_reports_them_once_it_flows() {
        let per_line = Entry::Line { to: Stream::Stderr, text: line(0) }.cost();
        let (queue, recorder, writer) = start(10 * per_line);
        recorder.set_blocked(true);
        // The first line is taken by the writer, which then blocks writing it; it still counts
        // against the capacity until written.
        assert!(queue.push(Stream::Stderr, line(0)));
        assert!(poll(|| queue.lock().entries.is_empty()), "the writer took the first line");
        let (done_tx, done_rx) = mpsc::channel();
        let pusher = {
            let queue = Arc::clone(&queue);
            thread::spawn(move || {
                let accepted: Vec<bool> = (1..=30).map(|n| queue.push(Stream::Stderr, line(n))).collect();
                done_tx.send(()).unwrap();
                accepted
            })
        };
        // The pushes finish while the output is still blocked: logging never waits for it.
        done_rx.recv_timeout(Duration::from_secs(10)).expect("push never blocks");
        let accepted = pusher.join().unwrap();
        assert_eq!(accepted.iter().filter(|&&a| a).count(), 9, "{accepted:?}");
        assert!(accepted[..9].iter().all(|&a| a) && accepted[9..].iter().all(|&a| !a));
        assert!(!queue.flush(Duration::from_millis(50)), "nothing can be flushed while blocked");

        recorder.set_blocked(false);
        assert!(queue.flush(Duration::from_secs(10)));
        // Output flows: the next line comes after the notice.
        assert!(queue.push(Stream::Stderr, line(31)));
        assert!(queue.flush(Duration::from_secs(10)));
        queue.close();
        writer.join().unwrap();
        let mut expected: Vec<String> = (0..=9).map(|n| format!("line {n}")).collect();
        expected.push("WARN  [socksloop] 21 log lines dropped (output blocked)".into());
        expected.push("line 31".into());
        let lines: Vec<String> = recorder.lines().into_iter().map(|(_, l)| l).collect();
        assert_eq!(lines, expected);
    }

    /// Drops in two separate stalls give two notices, each where its gap was.
    #[test]
    fn each_gap_gets_its_own_notice() {
        let per_line = Entry::Line { to: Stream::Stderr, text: line(0) }.cost();
        let (queue, recorder, writer) = start(2 * per_line);
        for round in 0..2 {
            recorder.set_blocked(true);
            assert!(queue.push(Stream::Stdout, line(round * 10)));
            assert!(poll(|| queue.lock().entries.is_empty()));
            assert!(queue.push(Stream::Stdout, line(round * 10 + 1)));
            for n in 2..5 {
                assert!(!queue.push(Stream::Stdout, line(round * 10 + n)));
            }
            recorder.set_blocked(false);
            assert!(queue.flush(Duration::from_secs(10)));
        }
        queue.close();
        writer.join().unwrap();
        let lines = recorder.lines();
        let notice = (Stream::Stderr, "WARN  [socksloop] 3 log lines dropped (output blocked)".to_string());
        let l = |n: usize| (Stream::Stdout, format!("line {n}"));
        assert_eq!(lines, [l(0), l(1), notice.clone(), l(10), l(11), notice]);
    }

    /// A line larger than the whole queue is dropped even with the writer idle, and reported.
    #[test]
    fn an_oversized_line_is_reported_even_when_idle() {
        let (queue, recorder, writer) = start(256);
        assert!(queue.push(Stream::Stderr, line(1)));
        assert!(queue.flush(Duration::from_secs(10)));
        assert!(!queue.push(Stream::Stderr, "x".repeat(1000)));
        assert!(queue.flush(Duration::from_secs(10)));
        queue.close();
        writer.join().unwrap();
        let lines: Vec<String> = recorder.lines().into_iter().map(|(_, l)| l).collect();
        assert_eq!(lines, ["line 1", "WARN  [socksloop] 1 log lines dropped (output blocked)"]);
    }

    fn poll(mut done: impl FnMut() -> bool) -> bool {
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(10) {
            if done() {
                return true;
            }
            thread::sleep(Duration::from_millis(1));
        }
        false
    }
}
