//! Stopping and scaling: graceful drain on SIGTERM (a transfer in flight completes intact, new
//! clients are refused), a second SIGTERM stops at once, the grace period is enforced, and
//! `--workers 2` serves clients from both loops.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// Connecting to the proxy fails (its listener is closed) within `limit`.
fn wait_until_refusing(proxy: &ProxyProcess, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if TcpStream::connect_timeout(&proxy.addr, Duration::from_millis(200)).is_err() {
            return true;
        }
        thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn sigterm_drains_a_transfer_in_flight_then_exits_0() {
    const LEN: usize = 16 * MIB;
    const SEED: u64 = 0xd4a1;
    // The target paces itself (about 1.5 s in all) so the transfer is surely in flight
    // when the signal comes.
    let target = Target::start("127.0.0.1:0", |mut stream, _| {
        let data = DataGen::bytes(SEED, LEN);
        for chunk in data.chunks(64 * 1024) {
            if stream.write_all(chunk).is_err() {
                return false;
            }
            thread::sleep(Duration::from_millis(6));
        }
        true
    });
    let mut proxy = ProxyProcess::spawn(&["--shutdown-grace", "20"]);
    let (mut client, _) = socks_connect(proxy.addr, target.addr);
    let mut first = vec![0u8; MIB];
    client.read_exact(&mut first).unwrap();

    proxy.signal(libc::SIGTERM);
    assert!(wait_until_refusing(&proxy, TIMEOUT), "listener still open while draining");
    assert!(proxy.wait_exit(Duration::from_millis(100)).is_none(), "must wait for the transfer");

    let mut verifier = Verifier::new(SEED);
    verifier.check(&first).unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match client.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => verifier.check(&buf[..n]).unwrap(),
            Err(e) => panic!("transfer cut after {} bytes: {e}", verifier.offset),
        }
    }
    assert_eq!(verifier.offset, LEN as u64, "the whole transfer arrives during the drain");
    assert!(target.next_result(), "target wrote everything");
    drop(client);
    let status = proxy.wait_exit(TIMEOUT).expect("exits once the relay is done");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn second_sigterm_stops_at_once() {
    let echo = echo_server("127.0.0.1:0");
    let mut proxy = ProxyProcess::spawn(&["--shutdown-grace", "60"]);
    let (mut client, _) = socks_connect(proxy.addr, echo.addr);
    assert_echo(&mut client, b"held open");
    proxy.signal(libc::SIGTERM);
    assert!(wait_until_refusing(&proxy, TIMEOUT));
    assert!(proxy.wait_exit(Duration::from_millis(300)).is_none(), "the open relay keeps it draining");
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(TIMEOUT).expect("second SIGTERM exits at once");
    assert_eq!(status.code(), Some(0));
    expect_closed(&mut client, "relay after the forced stop");
}

#[test]
fn grace_period_ends_the_drain() {
    let echo = echo_server("127.0.0.1:0");
    let mut proxy = ProxyProcess::spawn(&["--shutdown-grace", "0.5"]);
    let (mut client, _) = socks_connect(proxy.addr, echo.addr);
    assert_echo(&mut client, b"idle after this");
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(TIMEOUT).expect("exits when the grace period ends");
    assert_eq!(status.code(), Some(0));
    expect_closed(&mut client, "relay closed at the end of the grace period");
}

#[test]
fn two_workers_share_the_load() {
    let echo = echo_server("127.0.0.1:0");
    let proxy = ProxyProcess::spawn(&["--workers", "2"]);
    for i in 0..24 {
        let (mut client, _) = socks_connect(proxy.addr, echo.addr);
        assert_echo(&mut client, format!("client {i}").as_bytes());
    }
    // Connection ids interleave by worker (worker 0: odd, worker 1: even). With SO_REUSEPORT
    // spreading 24 connections by their addresses, both loops must have served some.
    let start = Instant::now();
    let (mut odd, mut even) = (false, false);
    while start.elapsed() < TIMEOUT && !(odd && even) {
        for line in proxy.stderr.lock().unwrap().iter() {
            if let Some(id) =
                line.split("conn ").nth(1).and_then(|r| r.split(':').next()?.parse::<u64>().ok())
            {
                odd |= id % 2 == 1;
                even |= id % 2 == 0;
            }
        }
        thread::sleep(Duration::from_millis(50));
    }
    assert!(odd && even, "both workers should serve clients: {:?}", proxy.stderr.lock().unwrap());
}
