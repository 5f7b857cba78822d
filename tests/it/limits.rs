//! Many connections: silent clients must not block others and are reaped by the handshake
//! timeout; the connection cap pauses accepting and resumes when a slot frees.

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::*;

#[test]
fn silent_clients_do_not_block_others_and_are_reaped() {
    let server = start_server_with(|c| c.handshake_timeout = Duration::from_secs(1));
    let proxy = proxy_addr(&server);
    let echo = echo_server("127.0.0.1:0");
    let opened = Instant::now();
    let mut silent: Vec<TcpStream> = (0..200).map(|_| tcp_connect(proxy)).collect();

    // A normal client gets through while 200 others say nothing.
    let (mut stream, _) = socks_connect(proxy, echo.addr);
    assert_echo(&mut stream, b"still served");
    drop(stream);

    // Each silent one is closed once its 1 s handshake time runs out; allow TIMEOUT more for
    // a busy machine (a deadline: the closes come at about 1 s).
    let limit = opened + Duration::from_secs(1) + TIMEOUT;
    for (i, sock) in silent.iter_mut().enumerate() {
        let left = limit.saturating_duration_since(Instant::now()).max(Duration::from_millis(50));
        sock.set_read_timeout(Some(left)).unwrap();
        let mut buf = [0u8; 16];
        match sock.read(&mut buf) {
            Ok(0) => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {}
            other => panic!("silent client {i}: expected close, got {other:?}"),
        }
    }
}

#[test]
fn max_connections_pauses_accepting_until_a_slot_frees() {
    let server = start_server_with(|c| c.max_connections = Some(3));
    let proxy = proxy_addr(&server);
    let mut holders: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut s = tcp_connect(proxy);
            greet(&mut s);
            s
        })
        .collect();

    // The 4th completes TCP (kernel backlog) but the proxy does not accept it yet.
    let mut fourth = tcp_connect(proxy);
    fourth.write_all(&greeting_bytes()).unwrap();
    fourth.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut selection = [0u8; 2];
    match fourth.read(&mut selection) {
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
        other => panic!("4th client answered while 3 are held: {other:?} {selection:?}"),
    }

    // Free a slot: the waiting client is accepted and answered.
    drop(holders.remove(0));
    fourth.set_read_timeout(Some(TIMEOUT)).unwrap();
    fourth.read_exact(&mut selection).expect("4th client answered after a slot freed");
    assert_eq!(selection, [5, NO_AUTH]);
    // The held ones are still being served.
    for holder in &mut holders {
        holder
            .write_all(&request_bytes(CMD_CONNECT, &Dest::Ip(([127, 0, 0, 1], free_port()).into())))
            .unwrap();
        assert_eq!(read_reply(holder).unwrap().code, REP_REFUSED);
    }
}

/// A full connection table pauses accepting again with every close. Operators need to know it
/// is full, but not once per connection: one warning per 10 s, however many pauses.
#[test]
fn a_full_table_warns_once_not_on_every_pause() {
    const WARNING_EVERY: Duration = Duration::from_secs(10);
    let proxy = ProxyProcess::spawn(&["--max-connections", "1"]);
    let started = Instant::now();
    let mut holder = tcp_connect(proxy.addr);
    greet(&mut holder);
    for _ in 0..10 {
        // Waits in the kernel's backlog until the holder leaves, then takes its place.
        let mut next = tcp_connect(proxy.addr);
        next.write_all(&greeting_bytes()).unwrap();
        drop(std::mem::replace(&mut holder, next));
        let mut selection = [0u8; 2];
        holder.read_exact(&mut selection).expect("accepted once the previous client left");
        assert_eq!(selection, [5, NO_AUTH]);
    }
    // The ten pauses take milliseconds: one warning. Only a machine so busy that they took
    // longer than 10 s may rightly have warned again, once per 10 s begun.
    let allowed = 1 + (started.elapsed().as_secs() / WARNING_EVERY.as_secs()) as usize;
    // The proxy's stderr is read by another thread: let it catch up before counting.
    assert!(proxy.wait_for_log("accepting paused", TIMEOUT), "no warning at all");
    let warnings = proxy.stderr.lock().unwrap().iter().filter(|l| l.contains("accepting paused")).count();
    if allowed == 1 {
        assert_eq!(warnings, 1, "stderr: {:?}", proxy.stderr.lock().unwrap());
    } else {
        assert!(
            (1..=allowed).contains(&warnings),
            "{allowed} allowed; stderr: {:?}",
            proxy.stderr.lock().unwrap()
        );
    }
}
