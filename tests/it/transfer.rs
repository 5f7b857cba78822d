//! Bulk data through the relay (one way each, and full duplex), verified byte for byte against
//! the regenerated stream, and TCP half-close passed through in both directions. The scenarios
//! take the relay mode, so `splice.rs` runs the same ones with `--relay splice`.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::thread;

use socksloop::{RelayMode, Server};

use crate::support::*;

/// A proxy on 127.0.0.1:0 relaying with `mode`.
pub(crate) fn start_in_mode(mode: RelayMode) -> Server {
    start_server_with(|c| c.relay_mode = mode)
}

const SIZE: usize = 64 * MIB;
const UP_SEED: u64 = 0x5eed_0001;
const DOWN_SEED: u64 = 0x5eed_0002;

/// A target that reads (and verifies) stream `UP_SEED` until EOF while writing `down` bytes of
/// `DOWN_SEED` from a second thread, then half-closes. Result: bytes verified from the client.
fn duplex_target(down: usize) -> Target<Result<u64, String>> {
    Target::start("127.0.0.1:0", move |mut stream, _| {
        let mut writer = stream.try_clone().unwrap();
        let sender = thread::spawn(move || {
            let sent = write_stream(&mut writer, DOWN_SEED, down);
            let _ = writer.shutdown(Shutdown::Write);
            sent
        });
        let received = read_and_verify(&mut stream, UP_SEED);
        sender.join().unwrap().map_err(|e| format!("target write: {e}"))?;
        received
    })
}

/// The client side of the same: write `up` bytes from a thread, verify what comes back.
fn run_client(stream: TcpStream, up: usize) -> (u64, Result<u64, String>) {
    let mut writer = stream.try_clone().unwrap();
    let sender = thread::spawn(move || {
        write_stream(&mut writer, UP_SEED, up).expect("client write");
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let mut reader = stream;
    let received = read_and_verify(&mut reader, DOWN_SEED);
    sender.join().unwrap();
    (up as u64, received)
}

/// `up` bytes client → target and `down` bytes target → client at the same time, verified.
pub(crate) fn transfer(mode: RelayMode, up: usize, down: usize) {
    let server = start_in_mode(mode);
    let target = duplex_target(down);
    let (stream, _) = socks_connect(proxy_addr(&server), target.addr);
    let (_, got_down) = run_client(stream, up);
    assert_eq!(got_down, Ok(down as u64), "target -> client");
    assert_eq!(target.next_result(), Ok(up as u64), "client -> target");
}

#[test]
fn bulk_client_to_target() {
    transfer(RelayMode::Copy, SIZE, 0);
}

#[test]
fn bulk_target_to_client() {
    transfer(RelayMode::Copy, 0, SIZE);
}

#[test]
fn bulk_full_duplex() {
    transfer(RelayMode::Copy, SIZE, SIZE);
}

#[test]
fn client_half_close_then_target_replies() {
    client_half_close_scenario(RelayMode::Copy);
}

/// The client sends, then half-closes; the target reads to EOF, then answers.
pub(crate) fn client_half_close_scenario(mode: RelayMode) {
    let server = start_in_mode(mode);
    let request = DataGen::bytes(21, 200_000);
    let answer = DataGen::bytes(22, 300_000);
    let target = {
        let answer = answer.clone();
        Target::start("127.0.0.1:0", move |mut stream, _| {
            // Read to EOF first: the client's FIN must arrive after all its data...
            let got = read_to_close(&mut stream).map_err(|e| e.to_string())?;
            // ...and our direction must still be open afterwards.
            stream.write_all(&answer).map_err(|e| e.to_string())?;
            stream.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            Ok::<_, String>(checksum(&got))
        })
    };
    let (mut stream, _) = socks_connect(proxy_addr(&server), target.addr);
    stream.write_all(&request).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let back = read_to_close(&mut stream).expect("answer then EOF");
    assert_eq!(target.next_result(), Ok(checksum(&request)), "target saw all data then EOF");
    assert_eq!(back.len(), answer.len());
    assert_eq!(checksum(&back), checksum(&answer));
}

#[test]
fn target_half_close_then_client_keeps_sending() {
    target_half_close_scenario(RelayMode::Copy);
}

/// The target sends, then half-closes; the client reads to EOF, then uploads.
pub(crate) fn target_half_close_scenario(mode: RelayMode) {
    let server = start_in_mode(mode);
    let greeting = DataGen::bytes(31, 250_000);
    let upload = DataGen::bytes(32, 400_000);
    let target = {
        let greeting = greeting.clone();
        Target::start("127.0.0.1:0", move |mut stream, _| {
            stream.write_all(&greeting).map_err(|e| e.to_string())?;
            stream.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
            let got = read_to_close(&mut stream).map_err(|e| e.to_string())?;
            Ok::<_, String>(checksum(&got))
        })
    };
    let (mut stream, _) = socks_connect(proxy_addr(&server), target.addr);
    // All of the target's data, then EOF, while our direction is still open.
    let mut got = vec![0u8; greeting.len()];
    stream.read_exact(&mut got).unwrap();
    assert_eq!(checksum(&got), checksum(&greeting));
    let mut one = [0u8; 1];
    assert_eq!(stream.read(&mut one).unwrap(), 0, "EOF after the target's half-close");
    // Now the other direction still flows.
    stream.write_all(&upload).expect("client -> target after target's FIN");
    stream.shutdown(Shutdown::Write).unwrap();
    assert_eq!(target.next_result(), Ok(checksum(&upload)));
    expect_closed(&mut stream, "after both directions finished");
}

/// Close `stream` with a reset (SO_LINGER 0) instead of a FIN.
fn reset(stream: TcpStream) {
    socket2::SockRef::from(&stream).set_linger(Some(std::time::Duration::ZERO)).unwrap();
    drop(stream);
}

#[test]
fn client_reset_closes_upstream() {
    let server = start_server();
    let target = Target::start("127.0.0.1:0", |mut stream, _| {
        stream.write_all(b"hi").unwrap();
        // The proxy must drop the upstream once the client is gone: EOF or reset, not a hang.
        read_to_close(&mut stream).map(|rest| rest.len()).map_err(|e| e.to_string())
    });
    let (mut stream, _) = socks_connect(proxy_addr(&server), target.addr);
    let mut hi = [0u8; 2];
    stream.read_exact(&mut hi).unwrap();
    reset(stream);
    assert_eq!(target.next_result(), Ok(0));
}

#[test]
fn target_reset_closes_client() {
    let server = start_server();
    let target = Target::start("127.0.0.1:0", |mut stream, _| {
        let mut ping = [0u8; 4];
        stream.read_exact(&mut ping).unwrap();
        reset(stream);
    });
    let (mut stream, _) = socks_connect(proxy_addr(&server), target.addr);
    stream.write_all(b"ping").unwrap();
    target.next_result();
    expect_closed(&mut stream, "after the target's reset");
}
