//! The SOCKS5 handshake as a client can send it: byte by byte, all in one write with early
//! payload, unsupported commands and address types, no acceptable method, wrong version.

use std::io::{Read, Write};
use std::thread;
use std::time::Duration;

use crate::support::*;

/// Write one byte at a time with a pause between, so the proxy sees every split point.
fn dribble(stream: &mut std::net::TcpStream, bytes: &[u8]) {
    for &b in bytes {
        stream.write_all(&[b]).unwrap();
        stream.flush().unwrap();
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn byte_at_a_time_greeting_and_request() {
    let server = start_server();
    let echo = echo_server("127.0.0.1:0");
    let dests = [Dest::Ip(echo.addr), Dest::Domain("localhost".into(), echo.addr.port())];
    for dest in dests {
        let mut stream = tcp_connect(proxy_addr(&server));
        stream.set_nodelay(true).unwrap();
        dribble(&mut stream, &greeting_bytes());
        let mut selection = [0u8; 2];
        stream.read_exact(&mut selection).unwrap();
        assert_eq!(selection, [5, NO_AUTH]);
        dribble(&mut stream, &request_bytes(CMD_CONNECT, &dest));
        let reply = read_reply(&mut stream).unwrap();
        assert_eq!(reply.code, REP_OK, "{dest:?}");
        assert_echo(&mut stream, b"hello, one byte at a time");
    }
}

#[test]
fn greeting_request_and_early_payload_in_one_write() {
    let server = start_server();
    let echo = echo_server("127.0.0.1:0");
    let payload = DataGen::bytes(11, 300);
    let mut all = greeting_bytes();
    all.extend_from_slice(&request_bytes(CMD_CONNECT, &Dest::Ip(echo.addr)));
    all.extend_from_slice(&payload);

    let mut stream = tcp_connect(proxy_addr(&server));
    stream.write_all(&all).unwrap();
    let mut selection = [0u8; 2];
    stream.read_exact(&mut selection).unwrap();
    assert_eq!(selection, [5, NO_AUTH]);
    assert_eq!(read_reply(&mut stream).unwrap().code, REP_OK);
    let mut back = vec![0u8; payload.len()];
    stream.read_exact(&mut back).expect("early payload echoed");
    assert_eq!(back, payload);
    // The relay still works after the early bytes.
    assert_echo(&mut stream, b"and more after");
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    expect_closed(&mut stream, "after echo");
    assert_eq!(echo.next_result(), payload.len() as u64 + 14);
}

/// Send a request, expect a failure reply with `code`, then the proxy closes.
fn expect_rejected(request: &[u8], code: u8) {
    let server = start_server();
    let mut stream = tcp_connect(proxy_addr(&server));
    greet(&mut stream);
    stream.write_all(request).unwrap();
    let reply = read_reply(&mut stream).unwrap_or_else(|e| panic!("{request:?}: no reply: {e}"));
    assert_eq!(reply.code, code, "{request:?}: {reply:?}");
    // The proxy lingers for our FIN after a rejection; sending it ends things cleanly.
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    expect_closed(&mut stream, "after rejection");
}

#[test]
fn unknown_command_is_not_supported() {
    let mut request = request_bytes(CMD_CONNECT, &Dest::Ip("127.0.0.1:9".parse().unwrap()));
    request[1] = 0x09;
    expect_rejected(&request, REP_CMD_NOT_SUPPORTED);
}

#[test]
fn unknown_address_type_is_not_supported() {
    // ATYP 0x02 does not exist; followed by bytes that would be an IPv4 address and port.
    expect_rejected(&[5, CMD_CONNECT, 0, 0x02, 127, 0, 0, 1, 0, 80], REP_ATYP_NOT_SUPPORTED);
}

#[test]
fn no_acceptable_method_gets_ff_then_close() {
    let server = start_server();
    let mut stream = tcp_connect(proxy_addr(&server));
    // Only username/password (0x02) offered; the proxy supports no-auth only.
    stream.write_all(&[5, 1, 0x02]).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [5, 0xFF]);
    // The proxy half-closes after 05 FF: EOF arrives even before we close our side.
    expect_closed(&mut stream, "after 05 FF");
}

#[test]
fn wrong_version_is_closed_without_reply() {
    let server = start_server();
    let mut stream = tcp_connect(proxy_addr(&server));
    stream.write_all(&[6, 1, 0]).unwrap();
    expect_closed(&mut stream, "version 6 greeting");
}

#[test]
fn zero_methods_gets_ff() {
    let server = start_server();
    let mut stream = tcp_connect(proxy_addr(&server));
    stream.write_all(&[5, 0]).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [5, 0xFF]);
    expect_closed(&mut stream, "after 05 FF");
}

#[test]
fn everything_then_fin_in_one_go() {
    // Greeting, request, payload and FIN all arrive before the upstream connect finishes:
    // the payload and the half-close must both reach the target, and its answer come back.
    let server = start_server();
    let echo = echo_server("127.0.0.1:0");
    let payload = DataGen::bytes(12, 5000);
    let mut all = greeting_bytes();
    all.extend_from_slice(&request_bytes(CMD_CONNECT, &Dest::Ip(echo.addr)));
    all.extend_from_slice(&payload);
    let mut stream = tcp_connect(proxy_addr(&server));
    stream.write_all(&all).unwrap();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    let mut selection = [0u8; 2];
    stream.read_exact(&mut selection).unwrap();
    assert_eq!(read_reply(&mut stream).unwrap().code, REP_OK);
    let back = read_to_close(&mut stream).unwrap();
    assert_eq!(back, payload);
    assert_eq!(echo.next_result(), payload.len() as u64);
}
