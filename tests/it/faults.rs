//! Faults against the proxy binary: clients that vanish (FIN or RST) in every phase, upstreams
//! that reset or stop reading, resets on a side whose reads are paused by backpressure, and
//! 2,000 fixed-seed garbage payloads. After each, the proxy must still serve a normal client
//! and its open descriptors (/proc/PID/fd) must come back to the count it had before the
//! fault. (A black-holed connect is in `connect.rs`.)
//!
//! About 10 s of wall time, mostly the garbage test waiting for handshake timeouts:
//! `cargo test --test it faults::`.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// Connections per way of leaving (FIN, RST) in each phase: several, so a leak of one
/// descriptor per fault shows as a clear difference.
const REPEAT: usize = 4;

#[test]
fn client_gone_mid_greeting() {
    let (mut proxy, echo, baseline) = spawn_warm(&[]);
    for how in LEAVES {
        for _ in 0..REPEAT {
            let mut stream = tcp_connect(proxy.addr);
            // Claims three methods, sends one: the proxy is waiting for more.
            stream.write_all(&[5, 3, 0]).unwrap();
            leave(stream, how);
        }
    }
    assert_recovered(&mut proxy, &echo, baseline, "clients gone mid-greeting");
}

#[test]
fn client_gone_mid_auth() {
    let users = TempFile::new("faults-users", "user:pw\n");
    let echo = echo_server("127.0.0.1:0");
    let mut proxy = ProxyProcess::spawn(&["--auth-file", users.path()]);

    // With auth on, a normal client authenticates first.
    let serve = |proxy: SocketAddr| {
        let mut stream = tcp_connect(proxy);
        greet_userpass(&mut stream);
        assert_eq!(authenticate(&mut stream, "user", "pw"), 0, "authenticated");
        stream.write_all(&request_bytes(CMD_CONNECT, &Dest::Ip(echo.addr))).unwrap();
        assert_eq!(read_reply(&mut stream).unwrap().code, REP_OK);
        assert_echo(&mut stream, b"authenticated echo");
    };
    serve(proxy.addr);
    let baseline = settled_fd_count(proxy.pid());

    for how in LEAVES {
        for _ in 0..REPEAT {
            let mut stream = tcp_connect(proxy.addr);
            greet_userpass(&mut stream);
            // Half an RFC 1929 request: the user name is cut short.
            stream.write_all(&auth_request_bytes("user", "pw")[..4]).unwrap();
            leave(stream, how);
        }
    }
    assert_alive(&mut proxy, "clients gone mid-auth");
    serve(proxy.addr);
    assert_fds_return(&proxy, baseline, "clients gone mid-auth");
}

#[test]
fn client_gone_while_resolving() {
    // A lookup of `localhost` is quick, so "while resolving" means: gone right after the
    // request, before the answer can have been used. The late answer must find nothing.
    let (mut proxy, echo, baseline) = spawn_warm(&[]);
    for how in LEAVES {
        for _ in 0..REPEAT {
            let mut stream = tcp_connect(proxy.addr);
            let mut bytes = greeting_bytes();
            bytes.extend(request_bytes(CMD_CONNECT, &Dest::Domain("localhost".into(), echo.addr.port())));
            stream.write_all(&bytes).unwrap();
            leave(stream, how);
        }
    }
    assert_recovered(&mut proxy, &echo, baseline, "clients gone while resolving");
}

#[test]
fn client_gone_while_connecting() {
    // The connect to the black hole never completes; the client leaves mid-attempt. The
    // proxy cannot tell a FIN here from "request + early data + half-close", so it may keep
    // the attempt until the connect timeout; everything must be released by then.
    let (_hole, _fillers, hole) = black_hole();
    let (mut proxy, echo, baseline) = spawn_warm(&["--connect-timeout", "1.5"]);
    // The proxy's own sockets connecting to the hole, by local address.
    let attempts = |pid: i32| -> Vec<SocketAddr> {
        open_connections(pid).iter().filter(|e| e.remote == hole).map(|e| e.local).collect()
    };
    for how in LEAVES {
        let earlier = attempts(proxy.pid());
        let clients: Vec<TcpStream> = (0..REPEAT)
            .map(|_| {
                let mut stream = tcp_connect(proxy.addr);
                greet(&mut stream);
                stream.write_all(&request_bytes(CMD_CONNECT, &Dest::Ip(hole))).unwrap();
                stream
            })
            .collect();
        // Wait until the proxy is connecting for all of them (it answers nothing while SYNs go
        // unanswered): its new sockets to the hole show in /proc.
        let started = poll_until(TIMEOUT, || {
            let new = attempts(proxy.pid()).iter().filter(|a| !earlier.contains(a)).count();
            (new >= REPEAT).then_some(())
        });
        assert!(started.is_some(), "the proxy never started connecting to the black hole");
        for stream in clients {
            leave(stream, how);
        }
    }
    let gone = Instant::now();
    assert_recovered(&mut proxy, &echo, baseline, "clients gone while connecting");
    eprintln!("descriptors back {:?} after the clients left mid-connect", gone.elapsed());
}

#[test]
fn client_gone_mid_relay() {
    let (mut proxy, echo, baseline) = spawn_warm(&[]);
    for how in LEAVES {
        for i in 0..REPEAT {
            let (mut stream, _) = socks_connect(proxy.addr, echo.addr);
            assert_echo(&mut stream, b"relay up");
            // Leave with bytes in flight both ways: some echoed back unread, some not yet sent.
            stream.write_all(&DataGen::bytes(i as u64, 256 * 1024)).unwrap();
            leave(stream, how);
        }
    }
    assert_recovered(&mut proxy, &echo, baseline, "clients gone mid-relay");
}

#[test]
fn upstream_reset_mid_transfer_ends_the_client() {
    const SEED: u64 = 0x7e5e7;
    const SENT: usize = MIB;
    // Downloading: the target sends 1 MiB, then resets (SO_LINGER 0 + close). It waits for a
    // byte from the client first: a reset before the proxy has seen the connect complete
    // would (rightly) fail the CONNECT with 01 instead of testing a reset mid-transfer.
    let resetting = Target::start("127.0.0.1:0", |mut stream, _| {
        let mut go = [0u8; 1];
        if stream.read_exact(&mut go).is_err() {
            return;
        }
        let _ = write_stream(&mut stream, SEED, SENT);
        leave(stream, Leave::Reset);
    });
    // Uploading: the target reads a little of what the client pushes, then resets.
    let reading_then_resetting = Target::start("127.0.0.1:0", |mut stream, _| {
        let mut buf = vec![0u8; 64 * 1024];
        let mut got = 0;
        while got < 256 * 1024 {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got += n,
            }
        }
        leave(stream, Leave::Reset);
    });
    let (mut proxy, echo, baseline) = spawn_warm(&[]);

    for _ in 0..REPEAT {
        let (mut client, _) = socks_connect(proxy.addr, resetting.addr);
        client.write_all(b"g").unwrap();
        // The end must come as EOF or a reset well before the 10 s read timeout, and what
        // arrived before it must be the start of the stream.
        let received = read_verified_prefix(&mut client, SEED);
        assert!(received <= SENT as u64);
    }

    for _ in 0..REPEAT {
        let (mut client, _) = socks_connect(proxy.addr, reading_then_resetting.addr);
        // Push until the proxy gives up on us: a write error (EPIPE/ECONNRESET), never a
        // write stuck for the whole timeout. Bounded: 64 MiB, or twice what the buffers on
        // the way can hold if that is more.
        let (pushed, end) =
            push(&mut client, &DataGen::bytes(1, 64 * 1024), beyond_buffering(64 * MIB), || {});
        if let Pushed::Blocked = end {
            panic!("write blocked for 10 s after the upstream reset ({pushed} bytes pushed)")
        }
        let ended = matches!(end, Pushed::Failed(_));
        assert!(ended, "the proxy kept taking data after its upstream reset ({pushed} bytes)");
    }
    assert_recovered(&mut proxy, &echo, baseline, "upstream resets");
}

/// A target that accepts and holds the connection without reading until `release` is set
/// (at most 30 s).
fn held_target(release: &Arc<AtomicBool>) -> Target<()> {
    let release = Arc::clone(release);
    Target::start("127.0.0.1:0", move |stream, _| {
        let start = Instant::now();
        while !release.load(Ordering::SeqCst) && start.elapsed() < Duration::from_secs(30) {
            thread::sleep(Duration::from_millis(20));
        }
        drop(stream);
    })
}

/// A target that writes until its writes block (nothing taken for [`STALL`]), then resets.
/// Result: how its pushing ended.
fn pushing_then_resetting_target() -> Target<(usize, Pushed)> {
    Target::start("127.0.0.1:0", move |mut stream, _| {
        stream.set_write_timeout(Some(STALL)).unwrap();
        let pushed = push(&mut stream, &DataGen::bytes(3, 64 * 1024), beyond_buffering(256 * MIB), || {});
        leave(stream, Leave::Reset);
        pushed
    })
}

/// How long a write must take nothing to count as blocked by backpressure rather than slowed
/// by a busy machine.
const STALL: Duration = Duration::from_secs(2);

#[test]
fn upstream_that_never_reads_pushes_back_on_the_client() {
    const RSS_LIMIT: u64 = 40 * MIB as u64;
    // More than every buffer on the way can hold (64 MiB, or twice what autotuning allows).
    let write_limit = beyond_buffering(64 * MIB);
    // Accepts, never reads, holds the connection until released (at most 30 s).
    let release = Arc::new(AtomicBool::new(false));
    let held = held_target(&release);
    let (mut proxy, echo, baseline) = spawn_warm(&[]);
    let rss_start = proxy.rss_bytes();

    let (mut client, _) = socks_connect(proxy.addr, held.addr);
    // Once every buffer on the way is full, a write blocks: with a write timeout that shows
    // as WouldBlock/TimedOut, and the bytes accepted until then are what the path holds.
    // A write that takes nothing for STALL is blocked, not just slow on a busy machine.
    client.set_write_timeout(Some(STALL)).unwrap();
    let chunk = DataGen::bytes(2, 64 * 1024);
    let mut rss_peak = rss_start;
    let (written, end) =
        push(&mut client, &chunk, write_limit, || rss_peak = rss_peak.max(proxy.rss_bytes()));
    let blocked = match end {
        Pushed::Blocked => true,
        Pushed::Limit => false,
        Pushed::Failed(e) => panic!("write failed after {written} bytes: {e}"),
    };
    // Still blocked a moment later: the proxy is not draining the client into memory.
    thread::sleep(Duration::from_millis(300));
    let again = client.write(&chunk);
    rss_peak = rss_peak.max(proxy.rss_bytes());
    eprintln!(
        "never-reading upstream: client wrote {} KiB before blocking; proxy RSS {} KiB -> peak {} KiB",
        written / 1024,
        rss_start / 1024,
        rss_peak / 1024
    );
    assert!(blocked, "the client wrote {write_limit} bytes without ever blocking: no backpressure");
    assert!(
        matches!(&again, Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)),
        "a write after the stall should still block: {again:?}"
    );
    assert!(rss_peak < RSS_LIMIT, "proxy RSS peaked at {} KiB", rss_peak / 1024);

    // Released, the target closes with unread data (a reset): the client learns of it.
    release.store(true, Ordering::SeqCst);
    client.set_read_timeout(Some(TIMEOUT)).unwrap();
    let _ = client.shutdown(Shutdown::Write);
    read_to_close(&mut client).expect("the client sees the end after the upstream goes");
    drop(client);
    assert_recovered(&mut proxy, &echo, baseline, "a never-reading upstream");
}

#[test]
fn client_reset_while_upstream_stalls_frees_the_relay() {
    // The client pushes until the never-reading upstream stops it, then resets. Its bytes
    // can never be delivered now; the relay must be torn down at once, not held until the
    // idle timeout (60 s here, 300 s by default) or until the upstream reads.
    let release = Arc::new(AtomicBool::new(false));
    let held = held_target(&release);
    let (mut proxy, echo, baseline) = spawn_warm(&["--idle-timeout", "60"]);
    let (mut client, _) = socks_connect(proxy.addr, held.addr);
    client.set_write_timeout(Some(STALL)).unwrap();
    push(&mut client, &DataGen::bytes(2, 64 * 1024), beyond_buffering(64 * MIB), || {});
    leave(client, Leave::Reset);
    let result = wait_for_fds(proxy.pid(), baseline, SETTLE);
    release.store(true, Ordering::SeqCst);
    assert!(result.is_ok(), "client reset while the upstream stalls: relay still held ({result:?})");
    assert_recovered(&mut proxy, &echo, baseline, "client reset while the upstream stalls");
}

#[test]
fn upstream_reset_while_client_stalls_frees_the_relay() {
    // The mirror image: the client never reads, the target pushes until it blocks, then
    // resets. The proxy must drop the relay (and the client) instead of holding both.
    let pushing = pushing_then_resetting_target();
    let (mut proxy, echo, baseline) = spawn_warm(&["--idle-timeout", "60"]);
    let (client, _) = socks_connect(proxy.addr, pushing.addr);
    // The target resets once its writes have blocked for STALL; wait for that, then the
    // settle time.
    let (pushed, end) = pushing.next_result();
    eprintln!("the target pushed {} KiB, then reset ({end:?})", pushed / 1024);
    assert!(matches!(end, Pushed::Blocked), "the target was never held back: {end:?} after {pushed} bytes");
    let result = wait_for_fds(proxy.pid(), baseline, SETTLE);
    drop(client);
    assert!(result.is_ok(), "upstream reset while the client stalls: relay still held ({result:?})");
    assert_recovered(&mut proxy, &echo, baseline, "upstream reset while the client stalls");
}

// ---------------------------------------------------------------------------------------------
// Garbage

/// xorshift64*: a small fixed-seed generator for payloads.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

/// Whether the proxy would send `payload`'s host name to the resolver (a DNS query that
/// could leave the machine). Such payloads are regenerated: the tests resolve only
/// `localhost`. The rules are the proxy's (its codec and name check), restated here so the
/// test needs nothing beyond the library's public API: a SOCKS5 greeting offering no-auth
/// followed by a complete request for a domain, or a complete SOCKS4a request, naming a host
/// that is neither an IP literal nor impossible.
fn would_look_up(payload: &[u8]) -> bool {
    let host = match payload.first() {
        Some(5) => socks5_host(payload),
        Some(4) => socks4a_host(payload),
        _ => None,
    };
    host.is_some_and(needs_lookup)
}

/// The host of `05 N METHODS.. | 05 CMD RSV 03 LEN HOST PORT` when the greeting offers
/// no-auth and the request is complete, with a known command and a UTF-8 name.
fn socks5_host(payload: &[u8]) -> Option<&str> {
    let methods = usize::from(*payload.get(1)?);
    if !payload.get(2..2 + methods)?.contains(&NO_AUTH) {
        return None;
    }
    let request = &payload[2 + methods..];
    if *request.first()? != 5 || !(1..=3).contains(request.get(1)?) || *request.get(3)? != 3 {
        return None;
    }
    let len = usize::from(*request.get(4)?);
    request.get(5 + len..7 + len)?; // the port: the request is complete
    std::str::from_utf8(request.get(5..5 + len)?).ok()
}

/// The host of a complete SOCKS4a request `04 CD PORT 0.0.0.x USERID 00 HOST 00` (x ≠ 0), with
/// a known command; fields longer than 255 bytes are refused by the proxy.
fn socks4a_host(payload: &[u8]) -> Option<&str> {
    const MAX_FIELD_LEN: usize = 255;
    let nul_terminated = |start: usize| -> Option<(&[u8], usize)> {
        let window = payload.get(start..).unwrap_or_default();
        let window = &window[..window.len().min(MAX_FIELD_LEN + 1)];
        let len = window.iter().position(|&b| b == 0)?;
        Some((&window[..len], start + len + 1))
    };
    if !(1..=2).contains(payload.get(1)?) {
        return None;
    }
    let ip = payload.get(4..8)?;
    let (_user, user_end) = nul_terminated(8)?;
    if ip[..3] != [0, 0, 0] || ip[3] == 0 {
        return None;
    }
    let (host, _) = nul_terminated(user_end)?;
    std::str::from_utf8(host).ok()
}

/// The proxy looks up a name that is not an IP literal (bare or in brackets) and is valid:
/// at most 253 bytes (less a final dot), labels of 1 to 63 letters, digits, `-` or `_`.
fn needs_lookup(host: &str) -> bool {
    let bracketed = host.strip_prefix('[').and_then(|h| h.strip_suffix(']'));
    if host.parse::<IpAddr>().is_ok() || bracketed.is_some_and(|h| h.parse::<IpAddr>().is_ok()) {
        return false;
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
}

/// Payload `i` of the fixed-seed set: random bytes, random length 0..600; a quarter start
/// with 5, a quarter with 4, a quarter are a valid greeting followed by a request whose
/// command byte is 1, 2 or 3 (and whose ATYP is usually a real one), the rest anything.
fn garbage(rng: &mut Rng, i: usize) -> Vec<u8> {
    for _ in 0..100 {
        let len = rng.below(600) as usize;
        let mut payload = rng.bytes(len);
        match i % 4 {
            1 if len > 0 => payload[0] = 5,
            2 if len > 0 => payload[0] = 4,
            3 => {
                let mut request =
                    vec![5, 1, 0, 5, 1 + rng.below(3) as u8, 0, [1, 3, 4, 0][rng.below(4) as usize]];
                request.extend_from_slice(&payload[..len.min(300)]);
                payload = request;
            }
            _ => {}
        }
        if !would_look_up(&payload) {
            return payload;
        }
    }
    Vec::new()
}

/// How a garbage connection ended.
#[derive(Debug, Default)]
struct Endings {
    eof: usize,
    reset: usize,
    with_bytes: usize,
}

#[test]
fn garbage_never_crashes_and_every_connection_ends() {
    const COUNT: usize = 2000;
    const BATCH: usize = 250;
    // handshake 1 s; a parseable request also gets connect 1 s, and if it happens to name a
    // live loopback port, idle 1 s. Only loopback destinations are allowed, so no payload
    // can make the proxy reach another machine.
    let (mut proxy, echo, baseline) = spawn_warm(&[
        "--handshake-timeout",
        "1",
        "--connect-timeout",
        "1",
        "--idle-timeout",
        "1",
        "--allow-dest",
        "127.0.0.0/8",
        "--allow-dest",
        "::1/128",
    ]);
    // The test opens BATCH sockets at once; lift its own soft limit.
    let _ = socksloop::limits::raise_nofile_limit();
    let mut rng = Rng(0x5eed_0f9a_4ba6_e5c1);
    let payloads: Vec<Vec<u8>> = (0..COUNT).map(|i| garbage(&mut rng, i)).collect();
    let mut endings = Endings::default();
    let started = Instant::now();

    for (batch_no, batch) in payloads.chunks(BATCH).enumerate() {
        // All of a batch go out at once, then each is read to its end; they all wait on the
        // same timeouts, so a batch takes about one handshake timeout.
        let opened = Instant::now();
        let mut streams: Vec<TcpStream> = batch
            .iter()
            .map(|payload| {
                let mut stream = tcp_connect(proxy.addr);
                write_ignoring_errors(&mut stream, payload);
                stream
            })
            .collect();
        // handshake + connect + idle (3 s) is the longest a payload can keep a connection;
        // the rest is slack for a loaded machine.
        let limit = opened + Duration::from_secs(3) + TIMEOUT;
        for (j, stream) in streams.iter_mut().enumerate() {
            let index = batch_no * BATCH + j;
            let mut got = 0usize;
            let mut buf = [0u8; 1024];
            loop {
                let left = limit.saturating_duration_since(Instant::now()).max(Duration::from_millis(10));
                stream.set_read_timeout(Some(left)).unwrap();
                match stream.read(&mut buf) {
                    Ok(0) => {
                        endings.eof += 1;
                        break;
                    }
                    Ok(n) => got += n,
                    Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                        endings.reset += 1;
                        break;
                    }
                    Err(e) => panic!(
                        "garbage payload {index} ({} bytes, starts {:02x?}): connection did not end: {e}",
                        batch[j].len(),
                        &batch[j][..batch[j].len().min(16)]
                    ),
                }
            }
            if got > 0 {
                endings.with_bytes += 1;
            }
        }
        drop(streams);
        assert_alive(&mut proxy, &format!("garbage batch {batch_no}"));
    }
    eprintln!("garbage: {COUNT} payloads in {:?}: {endings:?}", started.elapsed());
    assert_eq!(endings.eof + endings.reset, COUNT);
    assert_recovered(&mut proxy, &echo, baseline, "garbage");
}
