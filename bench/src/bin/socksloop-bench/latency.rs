//! Latency under load: one interactive flow, a 64-byte ping-pong, beside `bulk` download
//! streams through the same server. Result: the ping's round-trip time p50 / p99 / max, and
//! the bulk throughput over the same window.
//!
//! * The bulk streams are the throughput workload's downloads (the target sends pattern
//!   bytes until the client half-closes; every byte is checked), connected before the clock
//!   starts and half-closed at `--duration`.
//! * The ping connection goes to an echo server of its own: one blocking thread in this
//!   process serving only that connection. In the bulk target's loop an echo would wait
//!   behind the downloads' writes, and that wait (the load generator's, not the server's)
//!   would be measured too.
//! * The load tool's own core must not hold the ping back either. Started under a real-time
//!   policy (`chrt -f 10`, as the benchmark scripts do), every thread of the tool and its
//!   target child is SCHED_FIFO at one priority, and a FIFO thread runs until it blocks: a
//!   waking ping thread would wait for every bulk reader that has data (18 ms median with
//!   `--direct` and 8 downloads, measured). So the ping and echo threads move one priority
//!   step up ([`boost`]); `ping_boosted` in the record says whether they did. Under the
//!   normal policy the kernel's fair scheduler shares the core, and `--direct` shows what
//!   that costs.
//! * Pings start [`warmup`] after the downloads (their queues fill first) and stop at
//!   `--duration`. One ping is in flight at a time: send 64 bytes, read the 64-byte echo,
//!   check it. At a fixed rate, ping `k` is due at `k / rate` seconds into the window; a
//!   ping whose echo came back after the next one was due skips the slots it missed
//!   ([`next_slot`]), so a stall yields one long sample plus a `missed` count, not a burst
//!   of catch-up pings. With rate 0 the next ping goes as soon as the echo is in.
//! * The window (first ping sent → last echo in) is also the window of the bulk MiB/s (bytes
//!   the streams checked in it, from a shared counter) and of the server's CPU with `--pid`.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socksloop_bench::pattern::Pattern;
use socksloop_bench::wire::{self, Header, Mode, Route};

use super::Run;
use super::child::TargetProcess;
use super::report::{Value, quantile};
use super::{cpu, throughput};

pub const PING_LEN: usize = 64;
const MIB: f64 = 1024.0 * 1024.0;

pub struct Case {
    pub bulk: usize,
    /// Pings per second; 0 = back to back.
    pub ping_rate: u32,
    pub duration: Duration,
}

/// How long the pings wait for the downloads to get going: 0.25 s, or a quarter of a
/// shorter run.
pub fn warmup(duration: Duration) -> Duration {
    (duration / 4).min(Duration::from_millis(250))
}

/// The ping after `current`, at `elapsed` into the window with slots every `interval`: the
/// first slot not yet past (never `current` again), and how many slots were skipped.
pub fn next_slot(current: u64, elapsed: Duration, interval: Duration) -> (u64, u64) {
    let interval_ns = interval.as_nanos().max(1);
    let due_now = elapsed.as_nanos().div_ceil(interval_ns);
    let next = u64::try_from(due_now).unwrap_or(u64::MAX).max(current + 1);
    (next, next - current - 1)
}

/// Ping `seq`'s bytes: its number, then a filler that depends on it, so a stale or
/// misplaced echo fails the check.
pub fn ping_payload(seq: u64) -> [u8; PING_LEN] {
    let mut out = [0u8; PING_LEN];
    out[..8].copy_from_slice(&seq.to_le_bytes());
    let mixed = seq.wrapping_add(1).wrapping_mul(0x9E37_79B9_7F4A_7C15).to_le_bytes();
    for (i, b) in out[8..].iter_mut().enumerate() {
        *b = mixed[i % 8] ^ (i as u8);
    }
    out
}

/// p50 / p99 / max of round-trip times, in microseconds.
pub fn summary(rtts_ns: &mut [u64]) -> (f64, f64, f64) {
    rtts_ns.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    (us(quantile(rtts_ns, 0.50)), us(quantile(rtts_ns, 0.99)), us(quantile(rtts_ns, 1.0)))
}

/// What the ping loop saw, and the window's edges.
struct Pings {
    rtts_ns: Vec<u64>,
    missed: u64,
    window: Duration,
    bulk_bytes: u64,
    usage: Option<cpu::Usage>,
    boosted: bool,
}

/// If the calling thread runs under a real-time policy (SCHED_FIFO or SCHED_RR, inherited
/// from `chrt`), raise it one priority step, so that it preempts the bulk readers and the
/// bulk target on the tool's core. Returns whether it did. On Linux, pid 0 in these calls is
/// the calling thread, not the whole process.
fn boost() -> bool {
    // SAFETY: plain C calls on the calling thread, writing only to `param`.
    unsafe {
        let policy = libc::sched_getscheduler(0);
        if policy != libc::SCHED_FIFO && policy != libc::SCHED_RR {
            return false;
        }
        let mut param = libc::sched_param { sched_priority: 0 };
        if libc::sched_getparam(0, &mut param) != 0
            || param.sched_priority >= libc::sched_get_priority_max(policy)
        {
            return false;
        }
        param.sched_priority += 1;
        libc::sched_setscheduler(0, policy, &param) == 0
    }
}

/// A listener on `bind` (port 0), or, when that address has no free port left (after tens of
/// thousands of connrate connections, their TIME_WAIT sockets can hold every ephemeral port of
/// 127.0.0.1 for a minute), on another loopback address: the proxy reaches any of them.
fn bind_somewhere(bind: SocketAddr) -> io::Result<TcpListener> {
    match TcpListener::bind(bind) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse && bind.ip().is_loopback() && bind.is_ipv4() => {
            for last in 2..=9u8 {
                if let Ok(listener) = TcpListener::bind(SocketAddr::from(([127, 0, 0, last], 0))) {
                    return Ok(listener);
                }
            }
            Err(e)
        }
        other => other,
    }
}

/// The ping's echo server: one connection, accepted within `timeout`, echoed by a blocking
/// thread until the client closes it. Returns its address and the thread.
fn echo_server(bind: SocketAddr, timeout: Duration) -> io::Result<(SocketAddr, JoinHandle<io::Result<()>>)> {
    let listener = bind_somewhere(bind)?;
    let addr = listener.local_addr()?;
    listener.set_nonblocking(true)?;
    let thread = thread::Builder::new().name("ping-echo".into()).spawn(move || {
        boost();
        let deadline = Instant::now() + timeout;
        let mut stream = loop {
            match listener.accept() {
                Ok((stream, _)) => break stream,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                    thread::sleep(Duration::from_millis(1));
                }
                Err(e) => return Err(e),
            }
        };
        drop(listener);
        stream.set_nonblocking(false)?;
        stream.set_nodelay(true)?;
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf)?;
            if n == 0 {
                return Ok(());
            }
            stream.write_all(&buf[..n])?;
        }
    })?;
    Ok((addr, thread))
}

pub fn measure(
    route: Route,
    target: &mut TargetProcess,
    case: &Case,
    pid: Option<u32>,
    timeout: Duration,
) -> Result<Run, String> {
    let bind = SocketAddr::new(target.addr().ip(), 0);
    let (echo_addr, echo) =
        echo_server(bind, timeout).map_err(|e| format!("cannot start the echo server: {e}"))?;
    let mut streams = Vec::with_capacity(case.bulk);
    for _ in 0..case.bulk {
        let (stream, _) =
            wire::open(route, target.addr(), timeout).map_err(|e| format!("bulk connect: {e}"))?;
        streams.push(stream);
    }
    let (mut ping, _) = wire::open(route, echo_addr, timeout).map_err(|e| format!("ping connect: {e}"))?;
    one_ping(&mut ping, u64::MAX).map_err(|e| format!("first ping: {e}"))?;

    let barrier = Arc::new(Barrier::new(case.bulk + 1));
    let progress = Arc::new(AtomicU64::new(0));
    let bulk: Vec<_> = streams
        .into_iter()
        .enumerate()
        .map(|(i, stream)| {
            let header = Header { mode: Mode::Download, seed: throughput::seed(i), len: u64::MAX };
            let (barrier, progress, duration) = (Arc::clone(&barrier), Arc::clone(&progress), case.duration);
            thread::spawn(move || {
                barrier.wait();
                download(stream, header, Instant::now() + duration, &progress)
            })
        })
        .collect();
    // The pings in a thread of their own: its boost must not pass to threads spawned later.
    let pinger = {
        let (barrier, progress) = (Arc::clone(&barrier), Arc::clone(&progress));
        let (ping_rate, duration) = (case.ping_rate, case.duration);
        thread::spawn(move || {
            let boosted = boost();
            barrier.wait();
            let result = pings(&mut ping, ping_rate, duration, Instant::now(), &progress, pid);
            // Half-closing tells the echo thread we are done; it returns at EOF.
            let _ = ping.shutdown(Shutdown::Write);
            result.map(|p| Pings { boosted, ..p })
        })
    };
    let result = pinger.join().map_err(|_| "ping thread panicked".to_string())?;
    let mut bulk_total = 0;
    for (i, worker) in bulk.into_iter().enumerate() {
        match worker.join() {
            Ok(Ok(n)) => bulk_total += n,
            Ok(Err(e)) => return Err(format!("bulk stream {i}: {e}")),
            Err(_) => return Err(format!("bulk stream {i}: thread panicked")),
        }
    }
    // Its result adds nothing: every echo was checked by the ping loop.
    let _ = echo.join();
    let Pings { mut rtts_ns, missed, window, bulk_bytes, usage, boosted } = result?;
    if rtts_ns.is_empty() {
        return Err("no ping completed in the window".into());
    }
    let count = rtts_ns.len() as u64;
    let (p50, p99, max) = summary(&mut rtts_ns);
    let secs = window.as_secs_f64().max(1e-9);
    let bulk_rate = bulk_bytes as f64 / MIB / secs;
    let details = format!(
        "ping RTT p50 {} / p99 {} / max {} ({count} pings, {missed} missed); bulk download x{} \
         {bulk_rate:.0} MiB/s in the same {secs:.2} s; all bytes verified",
        ms(p50),
        ms(p99),
        ms(max),
        case.bulk,
    );
    let mut fields = vec![
        ("bulk_streams", Value::Int(case.bulk as u64)),
        ("bulk_direction", Value::Str("download".into())),
        ("ping_rate", Value::Int(case.ping_rate.into())),
        ("ping_count", Value::Int(count)),
        ("ping_missed", Value::Int(missed)),
        ("ping_rtt_p50_us", Value::Num(p50)),
        ("ping_rtt_p99_us", Value::Num(p99)),
        ("ping_rtt_max_us", Value::Num(max)),
        ("ping_boosted", Value::Bool(boosted)),
        ("seconds", Value::Num(secs)),
        ("bulk_bytes", Value::Int(bulk_bytes)),
        ("bulk_total_bytes", Value::Int(bulk_total)),
        ("bulk_mib_s", Value::Num(bulk_rate)),
        ("verified", Value::Bool(true)),
    ];
    fields.extend(cpu::byte_fields(usage.as_ref(), bulk_bytes));
    Ok(Run { value: p99, details, cpu: cpu::byte_cell(usage.as_ref(), bulk_bytes), fields })
}

/// Milliseconds, readable at every scale (0.084 ms, 12.4 ms, 430 ms).
fn ms(us: f64) -> String {
    let ms = us / 1000.0;
    match ms {
        x if x >= 100.0 => format!("{ms:.0} ms"),
        x if x >= 10.0 => format!("{ms:.1} ms"),
        x if x >= 1.0 => format!("{ms:.2} ms"),
        _ => format!("{ms:.3} ms"),
    }
}

/// The ping loop, from `warmup` after `start` to `start + duration`.
fn pings(
    ping: &mut TcpStream,
    ping_rate: u32,
    duration: Duration,
    start: Instant,
    progress: &AtomicU64,
    pid: Option<u32>,
) -> Result<Pings, String> {
    let end = start + duration;
    thread::sleep(warmup(duration));
    let meter = pid.map(cpu::Meter::start).transpose()?;
    let bulk_before = progress.load(Ordering::Relaxed);
    let first = Instant::now();
    let interval = (ping_rate > 0).then(|| Duration::from_secs(1) / ping_rate);
    let mut rtts_ns = Vec::with_capacity(4096);
    let (mut slot, mut missed) = (0u64, 0u64);
    loop {
        if let Some(interval) = interval {
            let due = first + interval * u32::try_from(slot).unwrap_or(u32::MAX);
            if due >= end {
                break;
            }
            let now = Instant::now();
            if due > now {
                thread::sleep(due - now);
            }
        }
        if Instant::now() >= end {
            break;
        }
        let sent = Instant::now();
        one_ping(ping, slot).map_err(|e| format!("ping {slot}: {e}"))?;
        let back = Instant::now();
        rtts_ns.push(u64::try_from(back.duration_since(sent).as_nanos()).unwrap_or(u64::MAX));
        match interval {
            Some(interval) => {
                let (next, skipped) = next_slot(slot, back.duration_since(first), interval);
                slot = next;
                missed += skipped;
            }
            None => slot += 1,
        }
    }
    let window = first.elapsed();
    let bulk_bytes = progress.load(Ordering::Relaxed) - bulk_before;
    let usage = meter.map(cpu::Meter::stop).transpose()?;
    Ok(Pings { rtts_ns, missed, window, bulk_bytes, usage, boosted: false })
}

/// Send ping `seq`, read its echo, check it.
fn one_ping(stream: &mut TcpStream, seq: u64) -> io::Result<()> {
    let payload = ping_payload(seq);
    stream.write_all(&payload)?;
    let mut echo = [0u8; PING_LEN];
    stream.read_exact(&mut echo)?;
    if echo != payload {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs from the ping"));
    }
    Ok(())
}

/// One bulk stream: ask for an endless download, check every byte, half-close at `until`,
/// read to EOF. Returns bytes received.
fn download(mut stream: TcpStream, header: Header, until: Instant, progress: &AtomicU64) -> io::Result<u64> {
    stream.write_all(&header.encode())?;
    let pattern = Pattern::new(header.seed);
    throughput::receive(&mut stream, &pattern, Some(until), Some(progress))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn slots() {
        let iv = 10 * MS;
        // On time: the next slot.
        assert_eq!(next_slot(0, 3 * MS, iv), (1, 0));
        assert_eq!(next_slot(4, 41 * MS, iv), (5, 0));
        // Exactly at the next slot's time: that slot, now.
        assert_eq!(next_slot(4, 50 * MS, iv), (5, 0));
        // The echo took 35 ms: slots 1, 2 and 3 passed; 4 is next, 3 missed.
        assert_eq!(next_slot(0, 35 * MS, iv), (4, 3));
        // Never the same slot twice, even with a clock at the slot's own time.
        assert_eq!(next_slot(7, 70 * MS, iv), (8, 0));
    }

    #[test]
    fn warmups() {
        assert_eq!(warmup(Duration::from_secs(3)), 250 * MS);
        assert_eq!(warmup(Duration::from_millis(400)), 100 * MS);
    }

    #[test]
    fn payloads_differ_per_ping() {
        let a = ping_payload(1);
        assert_eq!(a.len(), 64);
        assert_eq!(a[..8], 1u64.to_le_bytes());
        assert_ne!(a, ping_payload(2));
        assert_ne!(a[8..], ping_payload(257)[8..], "the filler changes too");
    }

    #[test]
    fn summaries() {
        let mut rtts: Vec<u64> = (1..=1000).rev().map(|i| i * 1000).collect();
        assert_eq!(summary(&mut rtts), (500.0, 990.0, 1000.0));
    }

    #[test]
    fn over_loopback_direct() {
        use socksloop_bench::target::Target;

        // The pure parts and the loop itself, with both targets in-process (a test binary
        // cannot re-execute itself as the target child).
        let bulk = Target::start("127.0.0.1:0".parse().unwrap()).unwrap();
        let timeout = Duration::from_secs(5);
        let (echo_addr, echo) = echo_server("127.0.0.1:0".parse().unwrap(), timeout).unwrap();
        let (mut ping, _) = wire::open(Route::Direct, echo_addr, timeout).unwrap();
        let (stream, _) = wire::open(Route::Direct, bulk.addr(), timeout).unwrap();
        let progress = Arc::new(AtomicU64::new(0));
        let p = Arc::clone(&progress);
        let header = Header { mode: Mode::Download, seed: 9, len: u64::MAX };
        let worker = thread::spawn(move || download(stream, header, Instant::now() + 400 * MS, &p));
        let me = Some(std::process::id());
        let pings = pings(&mut ping, 200, 400 * MS, Instant::now(), &progress, me).unwrap();
        let total = worker.join().unwrap().unwrap();
        ping.shutdown(Shutdown::Write).unwrap();
        echo.join().unwrap().unwrap();
        // 200/s over at most 0.3 s: 60 slots at most, each sent or missed; every echo checked.
        let slots = pings.rtts_ns.len() as u64 + pings.missed;
        assert!(!pings.rtts_ns.is_empty() && slots <= 61, "{slots} slots");
        assert!(pings.bulk_bytes > 0 && pings.bulk_bytes <= total);
        let usage = pings.usage.unwrap();
        assert!(usage.cpu_s > 0.0 && usage.wall_s > 0.25);
    }
}
