//! The relay after a successful CONNECT, in every relay mode (the copy path, `splice(2)`
//! through kernel pipes with `--relay splice`, and `--relay auto`, which splices bursts and
//! copies small messages): bulk data one way each and full duplex,
//! verified byte for byte; half-close passed through in both directions; early payload
//! before spliced bytes; resets in either direction; and backpressure: a slow reader or a
//! stalled upload keeps the proxy's memory and descriptors bounded.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

use socksloop::{RelayMode, Server};

use crate::support::*;

/// A proxy on 127.0.0.1:0 relaying with `mode`.
fn start_in_mode(mode: RelayMode) -> Server {
    start_server_with(|c| c.relay_mode = mode)
}

const SIZE: usize = 64 * MIB;
const UP_SEED: u64 = 0x5eed_0001;
const DOWN_SEED: u64 = 0x5eed_0002;

// ---------------------------------------------------------------------------------------------
// Bulk transfer and half-close, in both modes

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
fn transfer(mode: RelayMode, up: usize, down: usize) {
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
fn splice_bulk_client_to_target() {
    transfer(RelayMode::Splice, SIZE, 0);
}

#[test]
fn splice_bulk_target_to_client() {
    transfer(RelayMode::Splice, 0, SIZE);
}

#[test]
fn splice_bulk_full_duplex() {
    transfer(RelayMode::Splice, SIZE, SIZE);
}

/// The client sends, then half-closes; the target reads to EOF, then answers.
fn client_half_close_scenario(mode: RelayMode) {
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
fn client_half_close_then_target_replies() {
    client_half_close_scenario(RelayMode::Copy);
}

#[test]
fn splice_client_half_close_then_target_replies() {
    client_half_close_scenario(RelayMode::Splice);
}

/// The target sends, then half-closes; the client reads to EOF, then uploads.
fn target_half_close_scenario(mode: RelayMode) {
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

#[test]
fn target_half_close_then_client_keeps_sending() {
    target_half_close_scenario(RelayMode::Copy);
}

#[test]
fn splice_target_half_close_then_client_keeps_sending() {
    target_half_close_scenario(RelayMode::Splice);
}

#[test]
fn auto_bulk_full_duplex() {
    transfer(RelayMode::Auto, SIZE, SIZE);
}

#[test]
fn auto_client_half_close_then_target_replies() {
    client_half_close_scenario(RelayMode::Auto);
}

#[test]
fn auto_target_half_close_then_client_keeps_sending() {
    target_half_close_scenario(RelayMode::Auto);
}

/// `--relay auto` switches a direction between copy and splice as its traffic goes from small
/// messages to bursts and back: every byte still arrives, in order.
#[test]
fn auto_small_messages_around_bursts_arrive_in_order() {
    let server = start_in_mode(RelayMode::Auto);
    let mut expected = Vec::new();
    for round in 0..3u8 {
        expected.extend_from_slice(&[b's', round]);
        expected.extend((0..3 * MIB + 77).map(|i| (i as u8).wrapping_mul(31).wrapping_add(round)));
    }
    expected.extend_from_slice(b"end");
    let script = expected.clone();
    let target = Target::start("127.0.0.1:0", move |mut stream, _| {
        // Small message, burst, pause: each round starts with the copy path again.
        let mut at = 0;
        for _ in 0..3 {
            stream.write_all(&script[at..at + 2]).unwrap();
            thread::sleep(Duration::from_millis(50));
            stream.write_all(&script[at + 2..at + 2 + 3 * MIB + 77]).unwrap();
            at += 2 + 3 * MIB + 77;
            thread::sleep(Duration::from_millis(50));
        }
        stream.write_all(&script[at..]).unwrap();
        stream.shutdown(Shutdown::Write).unwrap();
        read_to_close(&mut stream).map(|rest| rest.len()).map_err(|e| e.to_string())
    });
    let (mut stream, _) = socks_connect(proxy_addr(&server), target.addr);
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut got = Vec::new();
    stream.read_to_end(&mut got).unwrap();
    assert!(got == expected, "got {} bytes of {}, or out of order", got.len(), expected.len());
    drop(stream);
    assert_eq!(target.next_result(), Ok(0));
}

#[test]
fn splice_early_payload_and_reply_come_before_spliced_bytes() {
    early_payload_scenario(RelayMode::Splice);
}

#[test]
fn auto_early_payload_and_reply_come_before_spliced_bytes() {
    early_payload_scenario(RelayMode::Auto);
}

fn early_payload_scenario(mode: RelayMode) {
    // Upward: payload sent in the same segment as the request sits in user space until the
    // upstream is up; it must reach the target before anything spliced later. Downward: the
    // target talks first, so its bytes are spliced while the SOCKS reply is still queued.
    const EARLY: &[u8] = b"EARLY-PAYLOAD;";
    const LATER: usize = MIB;
    const TARGET_SAYS: usize = 2 * MIB;
    let server = start_in_mode(mode);
    let target = Target::start("127.0.0.1:0", |mut stream, _| {
        write_stream(&mut stream, DOWN_SEED, TARGET_SAYS).map_err(|e| e.to_string())?;
        stream.shutdown(Shutdown::Write).map_err(|e| e.to_string())?;
        read_to_close(&mut stream).map_err(|e| e.to_string())
    });
    let mut stream = tcp_connect(proxy_addr(&server));
    greet(&mut stream);
    let mut request = request_bytes(CMD_CONNECT, &Dest::Ip(target.addr));
    request.extend_from_slice(EARLY);
    stream.write_all(&request).unwrap();
    let reply = read_reply(&mut stream).expect("the reply comes before the target's bytes");
    assert_eq!(reply.code, REP_OK);
    assert_eq!(read_and_verify(&mut stream, DOWN_SEED), Ok(TARGET_SAYS as u64));
    write_stream(&mut stream, UP_SEED, LATER).unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    let got = target.next_result().expect("target read");
    assert_eq!(&got[..EARLY.len()], EARLY, "early payload first");
    assert_eq!(got.len(), EARLY.len() + LATER);
    let mut verifier = Verifier::new(UP_SEED);
    verifier.check(&got[EARLY.len()..]).expect("then the spliced stream, intact");
}

// ---------------------------------------------------------------------------------------------
// Resets

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
    leave(stream, Leave::Reset);
    assert_eq!(target.next_result(), Ok(0));
}

#[test]
fn target_reset_closes_client() {
    let server = start_server();
    let target = Target::start("127.0.0.1:0", |mut stream, _| {
        let mut ping = [0u8; 4];
        stream.read_exact(&mut ping).unwrap();
        leave(stream, Leave::Reset);
    });
    let (mut stream, _) = socks_connect(proxy_addr(&server), target.addr);
    stream.write_all(b"ping").unwrap();
    target.next_result();
    expect_closed(&mut stream, "after the target's reset");
}

#[test]
fn splice_upstream_reset_mid_transfer_closes_the_client() {
    const SEED: u64 = 0x7e5e;
    let target = Target::start("127.0.0.1:0", |mut stream, _| {
        let mut go = [0u8; 1];
        if stream.read_exact(&mut go).is_err() {
            return;
        }
        let _ = write_stream(&mut stream, SEED, 4 * MIB);
        leave(stream, Leave::Reset);
    });
    let server = start_in_mode(RelayMode::Splice);
    for _ in 0..4 {
        let (mut client, _) = socks_connect(proxy_addr(&server), target.addr);
        client.write_all(b"g").unwrap();
        let received = read_verified_prefix(&mut client, SEED);
        assert!(received <= 4 * MIB as u64);
    }
}

#[test]
fn splice_client_reset_mid_upload_closes_the_upstream_and_frees_everything() {
    let proxy = ProxyProcess::spawn(&["--relay", "splice"]);
    let (sockets_start, _) = fds_by_kind(proxy.pid());
    // Connections the target has accepted, and how many the test has released.
    let accepted = Arc::new(AtomicUsize::new(0));
    let released = Arc::new(AtomicUsize::new(0));
    let target = {
        let (accepted, released) = (Arc::clone(&accepted), Arc::clone(&released));
        Target::start("127.0.0.1:0", move |mut stream, _| {
            let me = accepted.fetch_add(1, Ordering::SeqCst);
            // Read a little, stall until the client has pushed what the path takes and reset
            // (so bytes are backed up in the proxy when it goes), then read to the end: EOF
            // or reset, not a hang.
            let mut first = [0u8; 1024];
            stream.read_exact(&mut first).map_err(|e| e.to_string())?;
            poll_until(Duration::from_secs(60), || (released.load(Ordering::SeqCst) > me).then_some(()));
            read_to_close(&mut stream).map(|rest| rest.len()).map_err(|e| e.to_string())
        })
    };
    for _ in 0..3 {
        let (mut client, _) = socks_connect(proxy.addr, target.addr);
        // Up to 8 MiB, less if the stalled path takes no more for a while.
        client.set_write_timeout(Some(Duration::from_millis(500))).unwrap();
        let (_, end) = push(&mut client, &DataGen::bytes(UP_SEED, 64 * 1024), 8 * MIB, || {});
        assert!(!matches!(end, Pushed::Failed(_)), "the upload failed before the reset: {end:?}");
        leave(client, Leave::Reset);
        released.fetch_add(1, Ordering::SeqCst);
        assert!(target.next_result_within(Duration::from_secs(15)).is_ok(), "the target saw the end");
    }
    // Every relay socket is closed; pipes are bounded by the pool (a pipe that still held
    // bytes was closed with its relay).
    let end = wait_for_sockets(proxy.pid(), sockets_start);
    assert!(end.is_ok(), "relay sockets still open: {end:?}, at start {sockets_start}");
    assert!(end.unwrap().1 <= 2 * 16 + 2, "pipes bounded by the pool");
}

// ---------------------------------------------------------------------------------------------
// Backpressure: a slow reader must not make the proxy buffer what the target pushes. These
// run the binary so its resident memory and descriptors can be read from /proc.

#[test]
fn slow_reader_keeps_proxy_memory_bounded() {
    const SEED: u64 = 0xbeef;
    // Generous: the relay holds at most one 64 KiB scratch plus pending bytes per pipe, so
    // anything near this means the proxy buffers what the socket buffers refuse.
    const RSS_LIMIT: u64 = 40 * MIB as u64;
    // 256 MiB, or twice what the buffers on the way can hold if that is more.
    let total = beyond_buffering(256 * MIB);
    let proxy = ProxyProcess::spawn(&["--relay", "copy"]);
    let rss_start = proxy.rss_bytes();
    let source = SourceTarget::start(SEED, total);
    let (mut stream, _) = socks_connect(proxy.addr, source.target.addr);
    // The fast phase moves 256 MiB; allow for a slow machine.
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    let mut verifier = Verifier::new(SEED);
    let mut rss_peak = 0u64;
    // Slow phase: small reads with pauses while the target writes flat out, until the target
    // is held back (at least ~1 s).
    let held_back =
        read_slowly(&mut stream, &mut verifier, &source, || rss_peak = rss_peak.max(proxy.rss_bytes()));
    let rss_slow = proxy.rss_bytes();
    rss_peak = rss_peak.max(rss_slow);
    // Fast phase: the rest at full speed, sampling now and then.
    read_rest(&mut stream, &mut verifier, || rss_peak = rss_peak.max(proxy.rss_bytes()));
    let rss_end = proxy.rss_bytes();
    eprintln!(
        "proxy VmRSS: start {} KiB, after slow phase {} KiB, end {} KiB, peak sampled {} KiB",
        rss_start / 1024,
        rss_slow / 1024,
        rss_end / 1024,
        rss_peak / 1024
    );
    assert!(held_back, "the slow reader never held the target back: no backpressure");
    assert_eq!(verifier.offset, total as u64, "all bytes arrived");
    assert_eq!(source.target.next_result(), Ok(()));
    assert!(rss_peak < RSS_LIMIT, "proxy RSS peaked at {} KiB", rss_peak / 1024);
}

#[test]
fn splice_slow_reader_keeps_proxy_memory_and_descriptors_bounded() {
    const SEED: u64 = 0x51_0e;
    const RSS_LIMIT: u64 = 40 * MIB as u64;
    // 128 MiB, or twice what the buffers on the way can hold if that is more.
    let total = beyond_buffering(128 * MIB);
    let proxy = ProxyProcess::spawn(&["--relay", "splice"]);
    let (sockets_start, pipes_start) = fds_by_kind(proxy.pid());
    let rss_start = proxy.rss_bytes();
    let source = SourceTarget::start(SEED, total);
    let (mut stream, _) = socks_connect(proxy.addr, source.target.addr);
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    let mut verifier = Verifier::new(SEED);
    let mut rss_peak = rss_start;
    let mut pipes_peak = 0;
    // Slow phase: 1 KiB reads with pauses while the target writes flat out, until the target
    // is held back (at least ~1 s).
    let held_back = read_slowly(&mut stream, &mut verifier, &source, || {
        rss_peak = rss_peak.max(proxy.rss_bytes());
        pipes_peak = pipes_peak.max(fds_by_kind(proxy.pid()).1);
    });
    assert!(held_back, "the slow reader never held the target back: no backpressure");
    // The stalled direction holds a borrowed pipe (2 fds) beside the relay's 2 sockets; the
    // loop's pool may keep another, empty. (The copy path would open no pipe at all.)
    let (sockets_slow, pipes_slow) = fds_by_kind(proxy.pid());
    assert_eq!(sockets_slow, sockets_start + 2, "the relay's two sockets");
    assert!(
        (pipes_start + 2..=pipes_start + 4).contains(&pipes_slow),
        "pipe ends while stalled: {pipes_slow}, at start {pipes_start} (one pipe should be borrowed)"
    );
    read_rest(&mut stream, &mut verifier, || rss_peak = rss_peak.max(proxy.rss_bytes()));
    eprintln!(
        "splice slow reader: VmRSS start {} KiB, peak {} KiB; pipe ends at start {pipes_start}, stalled {pipes_slow}, peak {pipes_peak}",
        rss_start / 1024,
        rss_peak / 1024
    );
    assert_eq!(verifier.offset, total as u64, "all bytes arrived");
    assert_eq!(source.target.next_result(), Ok(()));
    assert!(rss_peak < RSS_LIMIT, "proxy RSS peaked at {} KiB", rss_peak / 1024);
    drop(stream);
    // The relay's sockets close; only pooled empty pipes (at most 16 per loop) may remain.
    let end = wait_for_sockets(proxy.pid(), sockets_start);
    assert!(end.is_ok(), "relay sockets still open: {end:?}, at start {sockets_start}");
    let (_, pipes_end) = end.unwrap();
    assert!(pipes_end <= pipes_start + 2 * 16, "pipe ends after the relay closed: {pipes_end}");
}

#[test]
fn curl_through_a_splice_mode_proxy() {
    let server = start_in_mode(RelayMode::Splice);
    let http = http_server();
    let url = format!("http://127.0.0.1:{}/file", http.addr.port());
    let body = curl_with("--socks5", &proxy_addr(&server).to_string(), &url);
    check_body(&body);
    assert!(http.next_result().starts_with("GET /file "));
}
