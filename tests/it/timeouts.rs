//! Deadlines: a handshake that never completes, and a relay with no traffic.

use std::io::{Read, Write};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

const HANDSHAKE: Duration = Duration::from_millis(500);

/// Send `bytes` (maybe none), then expect the proxy to close us after the handshake timeout.
fn closed_after_handshake_timeout(bytes: &[u8], what: &str) {
    let server = start_server_with(|c| c.handshake_timeout = HANDSHAKE);
    let start = Instant::now();
    let mut stream = tcp_connect(proxy_addr(&server));
    stream.write_all(bytes).unwrap();
    expect_closed(&mut stream, what);
    // Not a speed check: a close long before the deadline would mean a different bug.
    assert!(start.elapsed() >= HANDSHAKE / 2, "{what}: closed after only {:?}", start.elapsed());
}

#[test]
fn handshake_timeout_closes_silent_client() {
    closed_after_handshake_timeout(&[], "silent client");
}

#[test]
fn handshake_timeout_closes_partial_greeting() {
    // Claims two methods, sends one.
    closed_after_handshake_timeout(&[5, 2, 0], "partial greeting");
}

#[test]
fn handshake_timeout_closes_partial_request() {
    let mut bytes = greeting_bytes();
    bytes.extend_from_slice(&[5, CMD_CONNECT, 0, 1, 127, 0]);
    let server = start_server_with(|c| c.handshake_timeout = HANDSHAKE);
    let mut stream = tcp_connect(proxy_addr(&server));
    stream.write_all(&bytes).unwrap();
    let mut selection = [0u8; 2];
    stream.read_exact(&mut selection).unwrap();
    assert_eq!(selection, [5, NO_AUTH]);
    expect_closed(&mut stream, "partial request");
}

#[test]
fn idle_relay_is_closed() {
    let server = start_server_with(|c| c.idle_timeout = Duration::from_secs(1));
    let echo = echo_server("127.0.0.1:0");
    let (mut stream, _) = socks_connect(proxy_addr(&server), echo.addr);
    assert_echo(&mut stream, b"one exchange, then silence");
    expect_closed(&mut stream, "idle relay");
}

#[test]
fn active_relay_is_not_closed() {
    // The gap between round trips (300 ms and a round trip) is far below the idle timeout, so
    // a test thread held up for a while on a busy machine does not look idle.
    const IDLE: Duration = Duration::from_secs(2);
    let server = start_server_with(|c| c.idle_timeout = IDLE);
    let echo = echo_server("127.0.0.1:0");
    let (mut stream, _) = socks_connect(proxy_addr(&server), echo.addr);
    // A byte every 300 ms for 2.5 idle timeouts and at least 8 round trips: well past the idle
    // timeout in total, never idle for it.
    let start = Instant::now();
    let mut i = 0u8;
    while start.elapsed() < IDLE * 5 / 2 || i < 8 {
        assert_echo(&mut stream, &[i]);
        i = i.wrapping_add(1);
        thread::sleep(Duration::from_millis(300));
    }
    assert!(i >= 8, "only {i} round trips");
    // Once quiet, the idle timeout applies again.
    expect_closed(&mut stream, "relay gone quiet");
}
