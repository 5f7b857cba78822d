//! Throughput: `streams` connections moving pattern bytes in one or both directions, every
//! byte checked (downloads here, uploads by the target). Result: MiB/s, both directions
//! added up.
//!
//! A run ends the clean way in every mode: the client half-closes (after `--duration`, or
//! after `--bytes`), the target stops, flushes and closes, and the client reads to EOF. The
//! clock therefore includes draining what was still in flight, and nothing is cut by a reset.
//!
//! With `--pid`, the server's CPU time is read just before the streams are released and again
//! after the last one finished: [`cpu`](super::cpu) seconds per GiB moved (both directions).

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

use socksloop_bench::pattern::{MAX_CHUNK, Pattern};
use socksloop_bench::wire::{self, Header, Mode, Route};

use super::Run;
use super::args::{Direction, Limit};
use super::child::TargetProcess;
use super::cpu;
use super::report::Value;

const MIB: f64 = 1024.0 * 1024.0;

/// What one stream moved, and when it started and finished.
struct StreamResult {
    up: u64,
    down: u64,
    start: Instant,
    end: Instant,
}

pub struct Case {
    pub streams: usize,
    pub direction: Direction,
    pub limit: Limit,
}

pub fn measure(
    route: Route,
    target: &mut TargetProcess,
    case: &Case,
    pid: Option<u32>,
    timeout: Duration,
) -> Result<Run, String> {
    let before = target.stats().map_err(|e| format!("target stats: {e}"))?;
    let mode = match case.direction {
        Direction::Download => Mode::Download,
        Direction::Upload => Mode::Upload,
        Direction::Both => Mode::Both,
    };
    let len = match case.limit {
        Limit::Time(_) => u64::MAX,
        Limit::Bytes(n) => n,
    };
    // Connect every stream before the clock starts: this measures moving bytes, not setup.
    let mut sockets = Vec::with_capacity(case.streams);
    for _ in 0..case.streams {
        let (stream, _) = wire::open(route, target.addr(), timeout).map_err(|e| format!("connect: {e}"))?;
        sockets.push(stream);
    }
    let barrier = Arc::new(Barrier::new(case.streams));
    let meter = pid.map(cpu::Meter::start).transpose()?;
    let workers: Vec<_> = sockets
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            // Distinct seeds per stream and per run: misdelivered bytes fail the check.
            let header = Header { mode, seed: seed(i), len };
            let barrier = Arc::clone(&barrier);
            let limit = case.limit;
            thread::spawn(move || {
                barrier.wait();
                one_stream(stream, header, limit)
            })
        })
        .collect();
    let mut results = Vec::with_capacity(workers.len());
    for (i, worker) in workers.into_iter().enumerate() {
        match worker.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => return Err(format!("stream {i}: {e}")),
            Err(_) => return Err(format!("stream {i}: thread panicked")),
        }
    }
    let usage = meter.map(cpu::Meter::stop).transpose()?;
    let after = target.stats().map_err(|e| format!("target stats: {e}"))?;
    let up: u64 = results.iter().map(|r| r.up).sum();
    let down: u64 = results.iter().map(|r| r.down).sum();
    let start = results.iter().map(|r| r.start).min().ok_or("no streams")?;
    let end = results.iter().map(|r| r.end).max().ok_or("no streams")?;
    let elapsed = end.duration_since(start).as_secs_f64().max(1e-9);
    // Upload bytes are checked by the target as they arrive; only those count.
    let uploaded = after.uploaded - before.uploaded;
    let mismatches = after.mismatches - before.mismatches;
    if mismatches > 0 || uploaded > up {
        return Err(format!(
            "upload check failed: sent {up} B, target verified {uploaded} B, {mismatches} corrupt streams"
        ));
    }
    // A server without half-close support drops what was in flight when the client
    // half-closes; say so rather than count bytes that never arrived.
    let lost = up - uploaded;
    let rate = (uploaded + down) as f64 / MIB / elapsed;
    let mut details = format!(
        "up {:.0} MiB, down {:.0} MiB in {:.2} s, all bytes verified",
        uploaded as f64 / MIB,
        down as f64 / MIB,
        elapsed
    );
    if lost > 0 {
        details += &format!("; {lost} B sent were never delivered (no half-close?)");
    }
    // How evenly the streams shared (a rate limit's fairness, a loop's): each stream's own
    // rate over its own lifetime (uploads as sent).
    let each =
        results.iter().map(|r| (r.up + r.down) as f64 / MIB / r.end.duration_since(r.start).as_secs_f64());
    let (slowest, fastest) = each.fold((f64::INFINITY, 0.0f64), |(lo, hi), x| (lo.min(x), hi.max(x)));
    if results.len() > 1 {
        details += &format!("; streams from {slowest:.2} to {fastest:.2} MiB/s");
    }
    let moved = uploaded + down;
    let mut fields = vec![
        ("streams", Value::Int(results.len() as u64)),
        ("stream_min_mib_s", Value::Num(slowest)),
        ("stream_max_mib_s", Value::Num(fastest)),
        ("direction", Value::Str(case.direction.name().into())),
        ("up_bytes", Value::Int(uploaded)),
        ("up_lost_bytes", Value::Int(lost)),
        ("down_bytes", Value::Int(down)),
        ("seconds", Value::Num(elapsed)),
        ("verified", Value::Bool(true)),
    ];
    fields.extend(cpu::byte_fields(usage.as_ref(), moved));
    Ok(Run { value: rate, details, cpu: cpu::byte_cell(usage.as_ref(), moved), fields })
}

pub fn seed(stream: usize) -> u64 {
    let nanos =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    (nanos as u64) ^ ((stream as u64) << 48)
}

fn one_stream(mut stream: TcpStream, header: Header, limit: Limit) -> io::Result<StreamResult> {
    let start = Instant::now();
    let deadline = match limit {
        Limit::Time(d) => Some(start + d),
        Limit::Bytes(_) => None,
    };
    stream.write_all(&header.encode())?;
    let pattern = Arc::new(Pattern::new(header.seed));
    let mut up = 0;
    let mut down = 0;
    match header.mode {
        Mode::Upload => {
            up = send(&mut stream, &pattern, limit, deadline)?;
            stream.shutdown(Shutdown::Write)?;
            // The target closes only after reading our FIN: EOF here means all arrived.
            if receive(&mut stream, &pattern, None, None)? != 0 {
                return Err(io::Error::other("target sent bytes during an upload"));
            }
        }
        Mode::Download => down = receive(&mut stream, &pattern, deadline, None)?,
        Mode::Both => {
            let mut writer = stream.try_clone()?;
            let send_pattern = Arc::clone(&pattern);
            let sender = thread::spawn(move || -> io::Result<u64> {
                let sent = send(&mut writer, &send_pattern, limit, deadline)?;
                writer.shutdown(Shutdown::Write)?;
                Ok(sent)
            });
            down = receive(&mut stream, &pattern, None, None)?;
            up = sender.join().map_err(|_| io::Error::other("sender panicked"))??;
        }
        Mode::Echo | Mode::Hold => return Err(io::Error::other("not a throughput mode")),
    }
    if let Limit::Bytes(n) = limit
        && header.mode.downloads()
        && down != n
    {
        return Err(io::Error::other(format!("downloaded {down} B of {n} B")));
    }
    Ok(StreamResult { up, down, start, end: Instant::now() })
}

/// Write pattern bytes until the deadline or the byte limit. Returns bytes written.
fn send(
    stream: &mut TcpStream,
    pattern: &Pattern,
    limit: Limit,
    deadline: Option<Instant>,
) -> io::Result<u64> {
    let total = match limit {
        Limit::Bytes(n) => n,
        Limit::Time(_) => u64::MAX,
    };
    let mut sent = 0u64;
    while sent < total && deadline.is_none_or(|d| Instant::now() < d) {
        let want = (total - sent).min(MAX_CHUNK as u64) as usize;
        let n = stream.write(pattern.chunk(sent, want))?;
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        sent += n as u64;
    }
    Ok(sent)
}

/// Read and check pattern bytes until EOF. With a `half_close_at`, half-close the stream
/// when it passes (a timed download: the target then stops and closes). With `progress`,
/// add every checked read's length to it as it arrives. Returns bytes read.
pub fn receive(
    stream: &mut TcpStream,
    pattern: &Pattern,
    mut half_close_at: Option<Instant>,
    progress: Option<&AtomicU64>,
) -> io::Result<u64> {
    let mut buf = vec![0u8; MAX_CHUNK];
    let mut received = 0u64;
    loop {
        if half_close_at.is_some_and(|at| Instant::now() >= at) {
            stream.shutdown(Shutdown::Write)?;
            half_close_at = None;
        }
        let n = stream.read(&mut buf)?;
        if n == 0 {
            return Ok(received);
        }
        if !pattern.verify(received, &buf[..n]) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!("downloaded bytes differ from the pattern near offset {received}"),
            ));
        }
        received += n as u64;
        if let Some(progress) = progress {
            progress.fetch_add(n as u64, Ordering::Relaxed);
        }
    }
}
