//! Connection rate: `concurrency` clients, each looping for the duration over one complete
//! short connection: TCP connect, greeting, CONNECT, a 64-byte echo through the relay,
//! close. Result: completed connections per second, and the handshake latency (connect
//! start → CONNECT success reply read; with `--direct`, connect start → connected).
//!
//! With `--count N` the clients stop after N attempts in all instead of after the duration
//! (a known number of connections, e.g. to divide a syscall count by). With `--pid`, the
//! server's CPU time over the run: [`cpu`](super::cpu) microseconds per connection.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use socksloop_bench::wire::{self, HEADER_LEN, Header, Mode, Route};

use super::Run;
use super::cpu;
use super::report::{Value, quantile};

const ECHO_LEN: usize = 64;
/// Latency samples kept per client; beyond it only the count grows (memory stays bounded).
const MAX_SAMPLES: usize = 4_000_000;
/// A client that fails this often (and more often than it succeeds) stops early.
const MAX_ERRORS: u64 = 200;

struct ClientResult {
    ok: u64,
    errors: u64,
    first_error: Option<String>,
    latencies_ns: Vec<u64>,
    start: Instant,
    end: Instant,
}

/// When the clients stop.
#[derive(Debug, Clone, Copy)]
pub enum Stop {
    After(Duration),
    Count(u64),
}

pub fn measure(
    route: Route,
    target: SocketAddr,
    concurrency: usize,
    stop: Stop,
    pid: Option<u32>,
    timeout: Duration,
) -> Result<Run, String> {
    let barrier = Arc::new(Barrier::new(concurrency));
    let tickets = Arc::new(Tickets::new(stop));
    let meter = pid.map(cpu::Meter::start).transpose()?;
    let clients: Vec<_> = (0..concurrency)
        .map(|_| {
            let barrier = Arc::clone(&barrier);
            let tickets = Arc::clone(&tickets);
            thread::spawn(move || {
                barrier.wait();
                client(route, target, &tickets, timeout)
            })
        })
        .collect();
    let mut results = Vec::with_capacity(concurrency);
    for c in clients {
        results.push(c.join().map_err(|_| "client thread panicked".to_string())?);
    }
    let usage = meter.map(cpu::Meter::stop).transpose()?;
    let ok: u64 = results.iter().map(|r| r.ok).sum();
    let errors: u64 = results.iter().map(|r| r.errors).sum();
    let first_error = results.iter().find_map(|r| r.first_error.clone());
    if ok == 0 {
        return Err(format!("no connection succeeded: {}", first_error.unwrap_or_default()));
    }
    let start = results.iter().map(|r| r.start).min().ok_or("no clients")?;
    let end = results.iter().map(|r| r.end).max().ok_or("no clients")?;
    let elapsed = end.duration_since(start).as_secs_f64().max(1e-9);
    let mut lat: Vec<u64> = results.into_iter().flat_map(|r| r.latencies_ns).collect();
    lat.sort_unstable();
    let us = |ns: u64| ns as f64 / 1000.0;
    let (p50, p99, max) = (us(quantile(&lat, 0.50)), us(quantile(&lat, 0.99)), us(quantile(&lat, 1.0)));
    let rate = ok as f64 / elapsed;
    let mut details = format!("handshake p50 {p50:.0} µs, p99 {p99:.0} µs, max {max:.0} µs; {ok} ok");
    if errors > 0 {
        details += &format!(", {errors} errors (first: {})", first_error.as_deref().unwrap_or("?"));
    }
    let mut fields = vec![
        ("concurrency", Value::Int(concurrency as u64)),
        ("connections", Value::Int(ok)),
        ("errors", Value::Int(errors)),
        ("seconds", Value::Num(elapsed)),
        ("handshake_p50_us", Value::Num(p50)),
        ("handshake_p99_us", Value::Num(p99)),
        ("handshake_max_us", Value::Num(max)),
        ("first_error", first_error.map_or(Value::Null, Value::Str)),
    ];
    fields.extend(cpu::connection_fields(usage.as_ref(), ok));
    Ok(Run { value: rate, details, cpu: cpu::connection_cell(usage.as_ref(), ok), fields })
}

/// What lets a client start one more connection: time left (the clock starts at the first
/// attempt, once every client is released), or attempts left in a shared count.
pub struct Tickets {
    duration: Option<Duration>,
    deadline: OnceLock<Instant>,
    left: AtomicU64,
}

impl Tickets {
    pub fn new(stop: Stop) -> Tickets {
        let (duration, left) = match stop {
            Stop::After(d) => (Some(d), u64::MAX),
            Stop::Count(n) => (None, n),
        };
        Tickets { duration, deadline: OnceLock::new(), left: AtomicU64::new(left) }
    }

    /// Whether one more attempt may start (taking it from the count).
    pub fn take(&self) -> bool {
        if let Some(d) = self.duration {
            return Instant::now() < *self.deadline.get_or_init(|| Instant::now() + d);
        }
        self.left.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| n.checked_sub(1)).is_ok()
    }
}

fn client(route: Route, target: SocketAddr, tickets: &Tickets, timeout: Duration) -> ClientResult {
    let start = Instant::now();
    let mut r =
        ClientResult { ok: 0, errors: 0, first_error: None, latencies_ns: Vec::new(), start, end: start };
    while tickets.take() {
        match one(route, target, timeout) {
            Ok(handshake) => {
                r.ok += 1;
                if r.latencies_ns.len() < MAX_SAMPLES {
                    r.latencies_ns.push(u64::try_from(handshake.as_nanos()).unwrap_or(u64::MAX));
                }
            }
            Err(e) => {
                r.errors += 1;
                r.first_error.get_or_insert_with(|| e.to_string());
                if r.errors > MAX_ERRORS && r.errors > r.ok {
                    break;
                }
                // Do not spin on a refusing server: a failing loop would measure nothing.
                thread::sleep(Duration::from_millis(1));
            }
        }
    }
    r.end = Instant::now();
    r
}

/// One complete connection; returns its handshake time.
fn one(route: Route, target: SocketAddr, timeout: Duration) -> io::Result<Duration> {
    let (mut stream, handshake) = wire::open(route, target, timeout)?;
    let mut message = [0u8; HEADER_LEN + ECHO_LEN];
    message[..HEADER_LEN].copy_from_slice(&Header { mode: Mode::Echo, seed: 0, len: 0 }.encode());
    for (i, b) in message[HEADER_LEN..].iter_mut().enumerate() {
        *b = i as u8 ^ 0x5a;
    }
    stream.write_all(&message)?;
    let mut echo = [0u8; ECHO_LEN];
    stream.read_exact(&mut echo)?;
    if echo[..] != message[HEADER_LEN..] {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "echo differs"));
    }
    Ok(handshake)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_hands_out_exactly_that_many() {
        let t = Arc::new(Tickets::new(Stop::Count(1000)));
        let takers: Vec<_> = (0..4)
            .map(|_| {
                let t = Arc::clone(&t);
                thread::spawn(move || std::iter::from_fn(|| t.take().then_some(())).count())
            })
            .collect();
        let taken: usize = takers.into_iter().map(|h| h.join().unwrap()).sum();
        assert_eq!(taken, 1000);
        assert!(!t.take());
    }

    #[test]
    fn a_duration_runs_out() {
        let t = Tickets::new(Stop::After(Duration::from_millis(30)));
        assert!(t.take());
        thread::sleep(Duration::from_millis(40));
        assert!(!t.take());
    }
}
