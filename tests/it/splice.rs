//! The `splice(2)` relay path (`--relay splice`, Linux): the same guarantees as the copy path
//! — every byte in order, half-close both ways, early payload first, backpressure with
//! bounded memory, resets passed on — with bytes moving through kernel pipes.

use std::io::{Read, Write};
use std::net::Shutdown;
use std::thread;
use std::time::{Duration, Instant};

use socksloop::{Config, RelayMode, Server};

use crate::curl::{curl_with, expected_body, http_server};
use crate::reliability::{Leave, leave};
use crate::support::*;
use crate::transfer;

const SIZE: usize = 64 * MIB;
const UP_SEED: u64 = 0x5011_0001;
const DOWN_SEED: u64 = 0x5011_0002;

/// The proxy's open (sockets, pipes), from the targets of /proc/PID/fd links. The loop's pool
/// keeps some empty pipes, so relays are counted by their sockets and pipes separately.
fn fds_by_kind(pid: i32) -> (usize, usize) {
    let dir = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd");
    let targets: Vec<String> = dir
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .map(|p| p.display().to_string())
        .collect();
    let sockets = targets.iter().filter(|t| t.starts_with("socket:")).count();
    let pipes = targets.iter().filter(|t| t.starts_with("pipe:")).count();
    (sockets, pipes)
}

/// Poll until the proxy has `sockets` sockets open, at most 5 s; the last (sockets, pipes).
fn wait_for_sockets(pid: i32, sockets: usize) -> Result<(usize, usize), (usize, usize)> {
    let start = Instant::now();
    loop {
        let now = fds_by_kind(pid);
        if now.0 == sockets {
            return Ok(now);
        }
        if start.elapsed() > Duration::from_secs(5) {
            return Err(now);
        }
        thread::sleep(Duration::from_millis(25));
    }
}

fn splice_mode(config: &mut Config) {
    config.relay_mode = RelayMode::Splice;
}

fn start_splice_server() -> Server {
    start_server_with(splice_mode)
}

// The bulk and half-close scenarios are the copy path's, run in splice mode.

#[test]
fn splice_bulk_client_to_target() {
    transfer::transfer(RelayMode::Splice, SIZE, 0);
}

#[test]
fn splice_bulk_target_to_client() {
    transfer::transfer(RelayMode::Splice, 0, SIZE);
}

#[test]
fn splice_bulk_full_duplex() {
    transfer::transfer(RelayMode::Splice, SIZE, SIZE);
}

#[test]
fn splice_client_half_close_then_target_replies() {
    transfer::client_half_close_scenario(RelayMode::Splice);
}

#[test]
fn splice_target_half_close_then_client_keeps_sending() {
    transfer::target_half_close_scenario(RelayMode::Splice);
}

#[test]
fn splice_early_payload_and_reply_come_before_spliced_bytes() {
    // Upward: payload sent in the same segment as the request sits in user space until the
    // upstream is up; it must reach the target before anything spliced later. Downward: the
    // target talks first, so its bytes are spliced while the SOCKS reply is still queued.
    const EARLY: &[u8] = b"EARLY-PAYLOAD;";
    const LATER: usize = MIB;
    const TARGET_SAYS: usize = 2 * MIB;
    let server = start_splice_server();
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

#[test]
fn splice_slow_reader_keeps_proxy_memory_and_descriptors_bounded() {
    const TOTAL: usize = 128 * MIB;
    const SEED: u64 = 0x51_0e;
    const RSS_LIMIT: u64 = 40 * MIB as u64;
    let proxy = ProxyProcess::spawn(&["--relay", "splice"]);
    let (sockets_start, pipes_start) = fds_by_kind(proxy.pid());
    let rss_start = proxy.rss_bytes();
    let target = source_target(SEED, TOTAL);
    let (mut stream, _) = socks_connect(proxy.addr, target.addr);
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    let mut verifier = Verifier::new(SEED);
    let mut buf = vec![0u8; 64 * 1024];
    let mut rss_peak = rss_start;
    let mut pipes_peak = 0;
    // Slow phase: ~1 s of 1 KiB reads with pauses while the target writes flat out.
    read_slowly(&mut stream, &mut verifier, || {
        rss_peak = rss_peak.max(proxy.rss_bytes());
        pipes_peak = pipes_peak.max(fds_by_kind(proxy.pid()).1);
    });
    // The stalled direction holds a borrowed pipe (2 fds) beside the relay's 2 sockets; the
    // loop's pool may keep another, empty. (The copy path would open no pipe at all.)
    let (sockets_slow, pipes_slow) = fds_by_kind(proxy.pid());
    assert_eq!(sockets_slow, sockets_start + 2, "the relay's two sockets");
    assert!(
        (pipes_start + 2..=pipes_start + 4).contains(&pipes_slow),
        "pipe ends while stalled: {pipes_slow}, at start {pipes_start} (one pipe should be borrowed)"
    );
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        verifier.check(&buf[..n]).unwrap();
        if (verifier.offset / (64 * 1024) as u64).is_multiple_of(256) {
            rss_peak = rss_peak.max(proxy.rss_bytes());
        }
    }
    rss_peak = rss_peak.max(proxy.rss_bytes());
    eprintln!(
        "splice slow reader: VmRSS start {} KiB, peak {} KiB; pipe ends at start {pipes_start}, stalled {pipes_slow}, peak {pipes_peak}",
        rss_start / 1024,
        rss_peak / 1024
    );
    assert_eq!(verifier.offset, TOTAL as u64, "all bytes arrived");
    assert_eq!(target.next_result(), Ok(()));
    assert!(rss_peak < RSS_LIMIT, "proxy RSS peaked at {} KiB", rss_peak / 1024);
    drop(stream);
    // The relay's sockets close; only pooled empty pipes (at most 16 per loop) may remain.
    let end = wait_for_sockets(proxy.pid(), sockets_start);
    assert!(end.is_ok(), "relay sockets still open: {end:?}, at start {sockets_start}");
    let (_, pipes_end) = end.unwrap();
    assert!(pipes_end <= pipes_start + 2 * 16, "pipe ends after the relay closed: {pipes_end}");
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
    let server = start_splice_server();
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
    let target = Target::start("127.0.0.1:0", |mut stream, _| {
        // Read a little, stall so bytes back up into the proxy, then read to the end: EOF
        // or reset, not a hang.
        let mut first = [0u8; 1024];
        stream.read_exact(&mut first).map_err(|e| e.to_string())?;
        thread::sleep(Duration::from_millis(300));
        read_to_close(&mut stream).map(|rest| rest.len()).map_err(|e| e.to_string())
    });
    for _ in 0..3 {
        let (mut client, _) = socks_connect(proxy.addr, target.addr);
        write_stream(&mut client, UP_SEED, 8 * MIB).unwrap();
        leave(client, Leave::Reset);
        assert!(target.next_result_within(Duration::from_secs(15)).is_ok(), "the target saw the end");
    }
    // Every relay socket is closed; pipes are bounded by the pool (a pipe that still held
    // bytes was closed with its relay).
    let end = wait_for_sockets(proxy.pid(), sockets_start);
    assert!(end.is_ok(), "relay sockets still open: {end:?}, at start {sockets_start}");
    assert!(end.unwrap().1 <= 2 * 16 + 2, "pipes bounded by the pool");
}

#[test]
fn curl_through_a_splice_mode_proxy() {
    let server = start_splice_server();
    let http = http_server();
    let url = format!("http://127.0.0.1:{}/file", http.addr.port());
    let body = curl_with("--socks5", &proxy_addr(&server).to_string(), &url);
    assert_eq!(body.len(), expected_body().len());
    assert_eq!(checksum(&body), checksum(&expected_body()));
    assert!(http.next_result().starts_with("GET /file "));
}
