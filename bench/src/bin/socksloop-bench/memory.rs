//! Memory: open K relays through the proxy, each carrying one byte end to end and then idle,
//! and read the server's resident set size (`VmRSS` in `/proc/PID/status`) before and after.
//! Result: (RSS with K relays − RSS before) / K, in KiB per connection.
//!
//! Only user-space memory shows in VmRSS: kernel socket buffers are charged elsewhere, and
//! are the same for every server anyway.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use socksloop_bench::wire::{self, HOLD_ACK, Header, Mode, Route};

use super::Run;
use super::report::Value;

/// Time for the server to finish whatever the last connections started before reading RSS.
const SETTLE: Duration = Duration::from_millis(1000);

/// What `/proc/PID/status` says about memory and threads.
#[derive(Debug, Clone, Copy)]
struct Status {
    rss_kib: u64,
    threads: u64,
}

fn status(pid: u32) -> Result<Status, String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .map_err(|e| format!("cannot read /proc/{pid}/status: {e}"))?;
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse::<u64>().ok())
            .ok_or_else(|| format!("/proc/{pid}/status has no {name}"))
    };
    Ok(Status { rss_kib: field("VmRSS:")?, threads: field("Threads:")? })
}

pub fn measure(
    route: Route,
    target: SocketAddr,
    connections: usize,
    pid: Option<u32>,
    timeout: Duration,
) -> Result<Run, String> {
    let before = pid.map(status).transpose()?;
    let started = Instant::now();
    let mut relays: Vec<TcpStream> = Vec::with_capacity(connections);
    for i in 0..connections {
        let stream = hold(route, target, timeout).map_err(|e| format!("relay {}: {e}", i + 1))?;
        relays.push(stream);
        if (i + 1) % 1000 == 0 && i + 1 < connections {
            eprintln!("    {} / {connections} relays open", i + 1);
        }
    }
    let open_secs = started.elapsed().as_secs_f64();
    std::thread::sleep(SETTLE);
    let during = pid.map(status).transpose()?;
    drop(relays);
    std::thread::sleep(SETTLE);
    let after = pid.map(status).transpose()?;

    let mut fields = vec![
        ("connections", Value::Int(connections as u64)),
        ("open_seconds", Value::Num(open_secs)),
        ("pid", pid.map_or(Value::Null, |p| Value::Int(p.into()))),
    ];
    let (value, details) = match (before, during, after) {
        (Some(b), Some(d), Some(a)) => {
            let per_conn = (d.rss_kib as f64 - b.rss_kib as f64) / connections as f64;
            fields.extend([
                ("rss_before_kib", Value::Int(b.rss_kib)),
                ("rss_open_kib", Value::Int(d.rss_kib)),
                ("rss_closed_kib", Value::Int(a.rss_kib)),
                ("threads_before", Value::Int(b.threads)),
                ("threads_open", Value::Int(d.threads)),
            ]);
            let details = format!(
                "RSS {:.1} → {:.1} MiB ({:.1} after close), threads {} → {}, opened in {open_secs:.2} s",
                b.rss_kib as f64 / 1024.0,
                d.rss_kib as f64 / 1024.0,
                a.rss_kib as f64 / 1024.0,
                b.threads,
                d.threads
            );
            (Some(per_conn), details)
        }
        _ => (None, format!("{connections} relays opened in {open_secs:.2} s; no --pid, so no RSS")),
    };
    Ok(Run { value: value.unwrap_or(f64::NAN), details, cpu: String::new(), fields })
}

/// Open one relay and prove it reaches the target (the target's one-byte answer).
fn hold(route: Route, target: SocketAddr, timeout: Duration) -> std::io::Result<TcpStream> {
    let (mut stream, _) = wire::open(route, target, timeout)?;
    stream.write_all(&Header { mode: Mode::Hold, seed: 0, len: 0 }.encode())?;
    let mut ack = [0u8; 1];
    stream.read_exact(&mut ack)?;
    if ack[0] != HOLD_ACK {
        return Err(std::io::Error::new(std::io::ErrorKind::InvalidData, "wrong hold acknowledgement"));
    }
    Ok(stream)
}
