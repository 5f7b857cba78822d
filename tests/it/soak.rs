//! Soak: a bounded mixed workload against the proxy binary for `SOCKSLOOP_SOAK_SECS` seconds
//! (default 8): short echo connections, long transfers checked against a regenerated stream,
//! UDP associations, and failures (a refused port → 05, an unresolvable name → 04). Every
//! transfer must verify; afterwards the proxy's descriptors are back to the baseline exactly
//! and its RSS within 8 MiB of it.
//!
//! Long run (60 s or more):
//! `SOCKSLOOP_SOAK_SECS=60 cargo test --release --test it soak:: -- --nocapture`

use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

const RSS_SLACK: u64 = 8 * MIB as u64;
/// Length of each long transfer (sent up and echoed back, both verified).
const LONG_LEN: usize = 8 * MIB;
const DATAGRAMS_PER_ASSOCIATION: usize = 20;

#[derive(Default)]
struct Counts {
    short: AtomicU64,
    long: AtomicU64,
    long_bytes: AtomicU64,
    udp_associations: AtomicU64,
    datagrams: AtomicU64,
    datagram_retries: AtomicU64,
    refused: AtomicU64,
    unresolvable: AtomicU64,
}

fn soak_duration() -> Duration {
    let secs = std::env::var("SOCKSLOOP_SOAK_SECS").ok().and_then(|s| s.parse::<f64>().ok()).unwrap_or(8.0);
    Duration::from_secs_f64(secs.clamp(1.0, 24.0 * 3600.0))
}

/// Short connections: CONNECT, one echo of a random size, close.
fn short_worker(proxy: SocketAddr, echo: SocketAddr, seed: u64, until: Instant, counts: &Counts) {
    let mut i = 0u64;
    // At least one round, then until the deadline (the warm-up passes a deadline already due).
    loop {
        let (mut stream, _) = socks_connect(proxy, echo);
        let len = 1 + (seed.wrapping_mul(31).wrapping_add(i * 977) % 4096) as usize;
        assert_echo(&mut stream, &DataGen::bytes(seed ^ i, len));
        counts.short.fetch_add(1, Ordering::Relaxed);
        i += 1;
        // A breath between connections: the machine is shared.
        thread::sleep(Duration::from_millis(2));
        if Instant::now() >= until {
            break;
        }
    }
}

/// Long transfers: upload LONG_LEN of stream `seed` while verifying the echo as it comes.
fn long_worker(proxy: SocketAddr, echo: SocketAddr, until: Instant, counts: &Counts) {
    let mut seed = 1000u64;
    // At least one round, then until the deadline (the warm-up passes a deadline already due).
    loop {
        let (stream, _) = socks_connect(proxy, echo);
        let mut writer = stream.try_clone().unwrap();
        let upload = thread::spawn(move || {
            write_stream(&mut writer, seed, LONG_LEN).expect("upload");
            writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut reader = stream;
        let got = read_and_verify(&mut reader, seed).unwrap_or_else(|e| panic!("long transfer {seed}: {e}"));
        upload.join().expect("upload thread");
        assert_eq!(got, LONG_LEN as u64, "long transfer {seed}: the whole stream came back");
        counts.long.fetch_add(1, Ordering::Relaxed);
        counts.long_bytes.fetch_add(got, Ordering::Relaxed);
        seed += 1;
        if Instant::now() >= until {
            break;
        }
    }
}

/// UDP associations: each relays DATAGRAMS_PER_ASSOCIATION datagrams to a UDP echo.
fn udp_worker(proxy: SocketAddr, echo_port: u16, until: Instant, counts: &Counts) {
    let dest = Dest::Ip(SocketAddr::from(([127, 0, 0, 1], echo_port)));
    let mut n = 0u64;
    // At least one round, then until the deadline (the warm-up passes a deadline already due).
    loop {
        let (control, reply) = udp_associate(proxy, 0);
        assert_eq!(reply.code, REP_OK, "{reply:?}");
        let Bound::Ip(relay) = reply.bound else { panic!("{reply:?}") };
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let mut buf = vec![0u8; 65536];
        // Checksums of this association's earlier payloads: a retry's late first answer (on a
        // busy machine an echo can take longer than the wait) arrives after the one awaited
        // and is recognised as stale, not taken for a corrupted answer to the next datagram.
        let mut earlier: Vec<u64> = Vec::new();
        for _ in 0..DATAGRAMS_PER_ASSOCIATION {
            let payload = DataGen::bytes(n, 1 + (n % 1400) as usize);
            // UDP may drop; loopback practically never does. Retry a few times and count it.
            let mut answered = false;
            for attempt in 0..3 {
                if attempt > 0 {
                    counts.datagram_retries.fetch_add(1, Ordering::Relaxed);
                }
                udp.send_to(&udp_datagram(0, &dest, &payload), relay).unwrap();
                while let Ok((len, _)) = udp.recv_from(&mut buf) {
                    let Some(back) = udp_reply_payload(&buf[..len]) else { break };
                    if back != payload && earlier.contains(&checksum(back)) {
                        continue; // a duplicate answer to an earlier datagram
                    }
                    assert_eq!(checksum(back), checksum(&payload), "datagram {n} corrupted");
                    answered = true;
                    break;
                }
                if answered {
                    break;
                }
            }
            assert!(answered, "datagram {n}: no echo after 3 tries");
            earlier.push(checksum(&payload));
            counts.datagrams.fetch_add(1, Ordering::Relaxed);
            n += 1;
        }
        drop(control);
        counts.udp_associations.fetch_add(1, Ordering::Relaxed);
        if Instant::now() >= until {
            break;
        }
    }
}

/// Failures: a refused loopback port (05) and a name that can never resolve (04).
fn failure_worker(proxy: SocketAddr, until: Instant, counts: &Counts) {
    let bad_name = format!("{}.invalid", "x".repeat(64));
    let mut i = 0u64;
    // At least one round, then until the deadline (the warm-up passes a deadline already due).
    loop {
        let (dest, want, counter) = if i.is_multiple_of(2) {
            (Dest::Ip(SocketAddr::from(([127, 0, 0, 1], free_port()))), REP_REFUSED, &counts.refused)
        } else {
            (Dest::Domain(bad_name.clone(), 80), REP_HOST_UNREACHABLE, &counts.unresolvable)
        };
        let (mut stream, reply) = socks_request(proxy, CMD_CONNECT, &dest);
        assert_eq!(reply.code, want, "{dest:?}: {reply:?}");
        expect_closed(&mut stream, "after a failure reply");
        counter.fetch_add(1, Ordering::Relaxed);
        i += 1;
        thread::sleep(Duration::from_millis(2));
        if Instant::now() >= until {
            break;
        }
    }
}

#[test]
fn soak_mixed_workload() {
    let duration = soak_duration();
    let echo = echo_server("127.0.0.1:0");
    let udp_echo_port = udp_echo(b"");
    let mut proxy = ProxyProcess::spawn(&[]);
    // Warm up every path once so the baseline includes what is allocated once.
    let baseline_fds = {
        let warm = warm_up_and_count_fds(&proxy, &echo);
        let warm_counts = Counts::default();
        let soon = Instant::now();
        udp_worker(proxy.addr, udp_echo_port, soon, &warm_counts);
        failure_worker(proxy.addr, soon, &warm_counts);
        let settled = wait_for_fds(proxy.pid(), warm, SETTLE);
        assert!(settled.is_ok(), "warm-up left descriptors behind: {settled:?}, baseline {warm}");
        warm
    };
    let rss_before = proxy.rss_bytes();
    let cpu_before = cpu_time(proxy.pid());

    let counts = Arc::new(Counts::default());
    let started = Instant::now();
    let until = started + duration;
    let (p, e) = (proxy.addr, echo.addr);
    let mut workers = Vec::new();
    for seed in 0..2u64 {
        let counts = Arc::clone(&counts);
        workers.push(thread::spawn(move || short_worker(p, e, seed, until, &counts)));
    }
    {
        let counts = Arc::clone(&counts);
        workers.push(thread::spawn(move || long_worker(p, e, until, &counts)));
    }
    {
        let counts = Arc::clone(&counts);
        workers.push(thread::spawn(move || udp_worker(p, udp_echo_port, until, &counts)));
    }
    {
        let counts = Arc::clone(&counts);
        workers.push(thread::spawn(move || failure_worker(p, until, &counts)));
    }
    let mut rss_peak = rss_before;
    while workers.iter().any(|w| !w.is_finished()) && started.elapsed() < duration + Duration::from_secs(120)
    {
        rss_peak = rss_peak.max(proxy.rss_bytes());
        thread::sleep(Duration::from_millis(250));
    }
    for worker in workers {
        assert!(worker.is_finished(), "a soak worker did not finish within 120 s of the end");
        worker.join().expect("a soak worker failed (see its panic above)");
    }
    let ran = started.elapsed();
    assert_alive(&mut proxy, "soak");

    let fds_back = wait_for_fds(proxy.pid(), baseline_fds, SETTLE);
    let (fds_after, rss_after) = (fd_count(proxy.pid()), proxy.rss_bytes());
    let cpu = cpu_time(proxy.pid()).saturating_sub(cpu_before);
    let c = &*counts;
    let load = |a: &AtomicU64| a.load(Ordering::Relaxed);
    eprintln!(
        "soak {ran:.1?}: short {} | long {} ({} MiB verified each way) | UDP associations {} datagrams {} \
         (retries {}) | refused 05 {} | unresolvable 04 {} | proxy fds {baseline_fds} -> {fds_after} | \
         VmRSS {} KiB -> peak {} KiB -> {} KiB | proxy CPU {cpu:.1?}",
        load(&c.short),
        load(&c.long),
        load(&c.long_bytes) / MIB as u64,
        load(&c.udp_associations),
        load(&c.datagrams),
        load(&c.datagram_retries),
        load(&c.refused),
        load(&c.unresolvable),
        rss_before / 1024,
        rss_peak / 1024,
        rss_after / 1024,
    );
    for (what, n) in [
        ("short", &c.short),
        ("long", &c.long),
        ("UDP", &c.udp_associations),
        ("refused", &c.refused),
        ("unresolvable", &c.unresolvable),
    ] {
        assert!(load(n) > 0, "no {what} operation completed");
    }
    assert!(fds_back.is_ok(), "descriptors {fds_after} after the soak, baseline {baseline_fds}");
    assert!(
        rss_after <= rss_before + RSS_SLACK,
        "RSS grew from {} KiB to {} KiB",
        rss_before / 1024,
        rss_after / 1024
    );
    assert_serves(proxy.addr, &echo, "the soak");
}
