//! Scale: N relays established at once on one loop, each echoing verified data, and the
//! proxy's memory per relay ((RSS after − RSS before) / N, printed).
//!
//! Each relay costs the proxy two descriptors, the client side one and the target one; with a
//! hard limit of 20,000 per process the three parts live in three processes: the proxy binary,
//! a python3 asyncio echo server, and the clients in this test process.
//!
//! * default suite: N = `SOCKSLOOP_SCALE_RELAYS` or 1000 (a few seconds);
//! * 9,000 relays (ignored by default):
//!   `cargo test --release --test it scale_9000 -- --ignored --nocapture`
//!   (set `SOCKSLOOP_SCALE_RELAYS` to try another N with the same test).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// Bytes each relay echoes in the verified pass.
const ECHO_LEN: usize = 1024;
/// Client threads establishing relays (the proxy has one loop; this only overlaps round trips).
const THREADS: usize = 4;

fn relays_from_env(default: usize) -> usize {
    std::env::var("SOCKSLOOP_SCALE_RELAYS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn scale(n: usize) {
    // The clients need n descriptors here.
    let _ = socksloop::limits::raise_nofile_limit();
    let target = PyEcho::start();
    let mut proxy = ProxyProcess::spawn(&[]);
    // Warm up (one relay, opened and closed) so the baseline includes what the first
    // connection allocates once.
    {
        let (mut stream, _) = socks_connect(proxy.addr, target.addr);
        assert_echo(&mut stream, b"warm-up");
    }
    let baseline_fds = settled_fd_count(proxy.pid());
    let rss_before = proxy.rss_bytes();

    // Establish: each thread opens its share, each relay proven by one small echo.
    let started = Instant::now();
    let (proxy_addr, target_addr) = (proxy.addr, target.addr);
    let handles: Vec<_> = (0..THREADS)
        .map(|t| {
            let count = n / THREADS + usize::from(t < n % THREADS);
            thread::spawn(move || open_relays(proxy_addr, target_addr, count))
        })
        .collect();
    let mut streams: Vec<TcpStream> = Vec::with_capacity(n);
    for handle in handles {
        streams.extend(handle.join().expect("client thread"));
    }
    let establish = started.elapsed();
    assert_eq!(streams.len(), n);
    let rss_established = proxy.rss_bytes();
    assert_eq!(fd_count(proxy.pid()), baseline_fds + 2 * n, "two descriptors per relay");

    // Every relay at once: write to all, then read all back, verifying each one's stream.
    let started = Instant::now();
    for (i, stream) in streams.iter_mut().enumerate() {
        stream.write_all(&DataGen::bytes(i as u64, ECHO_LEN)).unwrap();
    }
    let mut buf = vec![0u8; ECHO_LEN];
    for (i, stream) in streams.iter_mut().enumerate() {
        stream.read_exact(&mut buf).unwrap_or_else(|e| panic!("relay {i}: echo failed: {e}"));
        Verifier::new(i as u64).check(&buf).unwrap_or_else(|e| panic!("relay {i}: {e}"));
    }
    let echo_pass = started.elapsed();
    let rss_after = proxy.rss_bytes();
    assert_alive(&mut proxy, "all relays up");

    let per_relay = |rss: u64| rss.saturating_sub(rss_before) as f64 / n as f64;
    eprintln!(
        "scale {n}: established in {establish:?}, echo pass {echo_pass:?}; proxy VmRSS before {} KiB, \
         established {} KiB, after echo {} KiB; per relay {:.0} B established, {:.0} B after echo",
        rss_before / 1024,
        rss_established / 1024,
        rss_after / 1024,
        per_relay(rss_established),
        per_relay(rss_after)
    );

    drop(streams);
    // Closing thousands takes a few passes of the loop; allow more than the usual settle time.
    if let Err(now) = wait_for_fds(proxy.pid(), baseline_fds, Duration::from_secs(20)) {
        panic!("after closing {n} relays the proxy holds {now} descriptors, baseline {baseline_fds}");
    }
    let (mut stream, _) = socks_connect(proxy.addr, target.addr);
    assert_echo(&mut stream, b"served after the crowd left");
}

fn open_relays(proxy: SocketAddr, target: SocketAddr, count: usize) -> Vec<TcpStream> {
    (0..count)
        .map(|i| {
            let (mut stream, _) = socks_connect(proxy, target);
            assert_echo(&mut stream, format!("relay {i}").as_bytes());
            stream
        })
        .collect()
}

#[test]
fn scale_relays() {
    scale(relays_from_env(1000));
}

#[test]
#[ignore = "9,000 relays: run with --ignored (see the module doc)"]
fn scale_9000_relays() {
    scale(relays_from_env(9000));
}
