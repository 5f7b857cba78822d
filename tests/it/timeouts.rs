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
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
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
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
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
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    expect_closed(&mut stream, "idle relay");
}

#[test]
fn active_relay_is_not_closed() {
    let server = start_server_with(|c| c.idle_timeout = Duration::from_secs(1));
    let echo = echo_server("127.0.0.1:0");
    let (mut stream, _) = socks_connect(proxy_addr(&server), echo.addr);
    // A byte every 300 ms for 2.5 s: well past the idle timeout in total, never idle for it.
    let start = Instant::now();
    let mut i = 0u8;
    while start.elapsed() < Duration::from_millis(2500) && i < 20 {
        assert_echo(&mut stream, &[i]);
        i += 1;
        thread::sleep(Duration::from_millis(300));
    }
    assert!(i >= 8, "only {i} round trips");
    // Once quiet, the idle timeout applies again.
    stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    expect_closed(&mut stream, "relay gone quiet");
}
