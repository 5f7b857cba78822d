//! socksloop's logger: lines are formatted by the thread that logs and written by one
//! `log-writer` thread, so a slow or blocked stderr/stdout (journald under pressure, a pipe
//! nobody reads) never blocks an event loop.
//!
//! - **Format.** Diagnostics are text on stderr, `2026-11-29T20:46:09.054Z INFO  [socksloop]
//!   message` (UTC, milliseconds, the level padded to five, the record's target). Access-log
//!   records (target [`ACCESS_TARGET`], used with `--log-format json`) are written bare, one
//!   line each, to **stdout**, so stdout is a pure JSON Lines stream (`socksloop --log-format
//!   json | jq .`, or a file) while the diagnostics stay readable text on stderr. In text
//!   format the access line is an ordinary info line on stderr, as it always was.
//! - **Never blocking.** [`Logger::log`] formats the line and puts it in a bounded
//!   [`Queue`] ([`QUEUE_BYTES`]); it takes a lock held only for a push or a pop, never for I/O.
//!   When the queue is full the line is dropped and counted, and once the output takes lines
//!   again the writer says so in its place: `N log lines dropped (output blocked)`, a warning
//!   on stderr.
//! - **At exit** `main` calls `log::logger().flush()`, which waits (at most
//!   [`FLUSH_LIMIT`]) for the queue to be written, so the last lines are not lost.

mod format;
mod queue;

use std::fmt::{self, Write};
use std::io;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, SystemTime};

use log::{Level, LevelFilter, Log, Metadata, Record};

pub use format::{JsonOption, JsonString, Rfc3339};
use queue::{Queue, Stdio, Stream};

/// The target of access-log records that are complete lines of their own (the JSON access
/// log): the logger writes them to stdout without a prefix.
pub const ACCESS_TARGET: &str = "socksloop::access";

/// Most bytes of log lines waiting for the output (the lines queued and the batch being
/// written), about 900 access lines: together with the kernel's buffer behind stderr (64 KiB
/// for a pipe, more for journald's socket) that rides out a stall of the reader over some
/// 1 500 closing connections. Beyond it lines are dropped, and counted.
pub const QUEUE_BYTES: usize = 128 * 1024;

/// How long `flush` (at exit) waits for a blocked output before giving up on the lines left.
pub const FLUSH_LIMIT: Duration = Duration::from_secs(2);

/// The text format of one diagnostic line, newline included.
pub fn text_line(at: SystemTime, level: Level, target: &str, message: fmt::Arguments<'_>) -> String {
    let mut line = String::with_capacity(128);
    // Writing into a String cannot fail.
    let _ = writeln!(line, "{} {level:<5} [{target}] {message}", Rfc3339(at));
    line
}

/// The `log::Log` implementation: formats on the calling thread, queues for the writer.
pub struct Logger {
    level: LevelFilter,
    queue: Arc<Queue>,
}

impl Log for Logger {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &Record<'_>) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let (to, line) = if record.target() == ACCESS_TARGET {
            let mut line = String::with_capacity(384);
            let _ = writeln!(line, "{}", record.args());
            (Stream::Stdout, line)
        } else {
            let target = match record.target() {
                "" => record.module_path().unwrap_or_default(),
                target => target,
            };
            (Stream::Stderr, text_line(SystemTime::now(), record.level(), target, *record.args()))
        };
        self.queue.push(to, line);
    }

    fn flush(&self) {
        self.queue.flush(FLUSH_LIMIT);
    }
}

/// Why logging could not start.
#[derive(Debug)]
pub enum InitError {
    /// The writer thread could not be started.
    Thread(io::Error),
    /// Another logger was installed first.
    AlreadySet(log::SetLoggerError),
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            InitError::Thread(e) => write!(f, "cannot start the log-writer thread: {e}"),
            InitError::AlreadySet(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for InitError {}

/// Install the logger for records up to `level` and start its `log-writer` thread, which
/// runs for the rest of the process.
pub fn init(level: LevelFilter) -> Result<(), InitError> {
    let queue = Arc::new(Queue::new(QUEUE_BYTES));
    {
        let queue = Arc::clone(&queue);
        thread::Builder::new()
            .name("log-writer".into())
            // It formats only the drop notice and copies lines into a buffer.
            .stack_size(64 * 1024)
            .spawn(move || queue.run_writer(&mut Stdio))
            .map_err(InitError::Thread)?;
    }
    // Installed for the life of the process (`log` holds a `&'static`).
    log::set_logger(Box::leak(Box::new(Logger { level, queue }))).map_err(InitError::AlreadySet)?;
    log::set_max_level(level);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    /// The same line simple_logger wrote (`with_utc_timestamps`, no colours), so scripts and
    /// tests that read the text log see no change.
    #[test]
    fn text_line_format() {
        let at = UNIX_EPOCH + Duration::from_millis(1_795_985_169_054);
        assert_eq!(
            text_line(at, Level::Info, "socksloop", format_args!("listening on {}", "127.0.0.1:1080")),
            "2026-11-29T20:46:09.054Z INFO  [socksloop] listening on 127.0.0.1:1080\n"
        );
        assert_eq!(
            text_line(at, Level::Error, "socksloop::server", format_args!("x")),
            "2026-11-29T20:46:09.054Z ERROR [socksloop::server] x\n"
        );
        assert_eq!(
            queue::dropped_notice(3, at),
            "2026-11-29T20:46:09.054Z WARN  [socksloop] 3 log lines dropped (output blocked)\n"
        );
    }

    #[test]
    fn access_records_go_bare_to_stdout_and_the_rest_to_stderr() {
        // A logger whose queue has no writer: what it queued is inspected through a flush-less
        // writer run after close.
        let queue = Arc::new(Queue::new(1 << 20));
        let logger = Logger { level: LevelFilter::Info, queue: Arc::clone(&queue) };
        let record = |target: &'static str, level: Level, args: fmt::Arguments<'_>| {
            logger.log(&Record::builder().target(target).level(level).args(args).build());
        };
        record(ACCESS_TARGET, Level::Info, format_args!("{{\"conn\":1}}"));
        record("socksloop::server", Level::Warn, format_args!("careful"));
        record("socksloop::server", Level::Debug, format_args!("filtered out"));
        queue.close();
        struct Collect(Vec<(Stream, String)>);
        impl queue::Output for Collect {
            fn write(&mut self, to: Stream, bytes: &[u8]) {
                self.0.push((to, String::from_utf8(bytes.to_vec()).unwrap()));
            }
        }
        let mut out = Collect(Vec::new());
        queue.run_writer(&mut out);
        assert_eq!(out.0.len(), 2, "{:?}", out.0);
        assert_eq!(out.0[0], (Stream::Stdout, "{\"conn\":1}\n".to_string()));
        assert_eq!(out.0[1].0, Stream::Stderr);
        assert!(out.0[1].1.ends_with("Z WARN  [socksloop::server] careful\n"), "{:?}", out.0[1]);
    }
}
