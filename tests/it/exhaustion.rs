//! Running out: more clients than the connection cap (derived from a low descriptor limit,
//! or set with `--max-connections`), and real descriptor exhaustion (EMFILE).
//!
//! The cap is (nofile - 64) / 2 connections: enough for two descriptors per relay plus a
//! reserve, so TCP relays alone can never reach EMFILE. A UDP association costs three (its
//! TCP control connection and two UDP sockets), so with a hard limit of 256 (cap 96) about 80
//! associations exhaust the descriptors before the cap is reached: that is how EMFILE is hit
//! here, both in `accept` and when an association opens its sockets.
//!
//! While accepting is paused the loop must sleep, not spin: the proxy's CPU time over a
//! ≥ 1 s window (utime + stime from /proc/PID/stat) must stay under 30 % of the wall time.
//!
//! All run in the default suite (a few seconds):
//! `cargo test --test it exhaustion:: -- --nocapture`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use crate::support::*;

/// The hard descriptor limit the limited proxies run under.
const NOFILE: u64 = 256;
/// CPU share (of one core) a paused proxy may use: generous, it only has to not spin.
const CPU_LIMIT: f64 = 0.30;
const CPU_WINDOW: Duration = Duration::from_millis(1500);

/// Fill the proxy's `cap` with relays to `echo`, then check that further clients wait (not
/// refused, not answered) while the loop sleeps, that freeing slots lets them in, and that
/// everything is released in the end.
fn cap_holds_and_resumes(proxy: &mut ProxyProcess, cap: usize, what: &str) {
    let echo = echo_server("127.0.0.1:0");
    let baseline = warm_up_and_count_fds(proxy, &echo);
    let mut holders: Vec<TcpStream> = (0..cap)
        .map(|i| {
            let (mut stream, _) = socks_connect(proxy.addr, echo.addr);
            assert_echo(&mut stream, format!("holder {i}").as_bytes());
            stream
        })
        .collect();

    // Beyond the cap: TCP completes in the kernel's backlog, but the greeting goes unanswered.
    const EXTRA: usize = 4;
    let mut waiting: Vec<TcpStream> = (0..EXTRA)
        .map(|_| {
            let mut stream = tcp_connect(proxy.addr);
            stream.write_all(&greeting_bytes()).unwrap();
            stream
        })
        .collect();
    assert!(
        nothing_arrives(&mut waiting[0], Duration::from_millis(300)),
        "{what}: client past the cap answered"
    );

    let share = cpu_share(proxy.pid(), CPU_WINDOW);
    eprintln!("{what}: proxy CPU while paused at the cap ({cap} connections): {:.1} %", share * 100.0);
    assert!(share < CPU_LIMIT, "{what}: the paused loop used {:.0} % CPU", share * 100.0);
    assert_alive(proxy, what);
    for holder in waiting.iter_mut() {
        assert!(nothing_arrives(holder, Duration::from_millis(50)), "{what}: answered while at the cap");
    }
    // The held relays still work while accepting is paused.
    for (i, holder) in holders.iter_mut().enumerate().step_by(cap.div_ceil(8)) {
        assert_echo(holder, format!("still relaying {i}").as_bytes());
    }

    // Free as many slots as there are waiting clients: each is accepted and fully served.
    holders.truncate(cap - EXTRA);
    for stream in waiting.iter_mut() {
        let mut selection = [0u8; 2];
        stream.read_exact(&mut selection).expect("answered once a slot freed");
        assert_eq!(selection, [5, NO_AUTH]);
        stream.write_all(&request_bytes(CMD_CONNECT, &Dest::Ip(echo.addr))).unwrap();
        assert_eq!(read_reply(stream).unwrap().code, REP_OK);
        assert_echo(stream, b"in after the pause");
    }
    drop(waiting);
    drop(holders);
    assert_serves(proxy.addr, &echo, what);
    assert_fds_return(proxy, baseline, what);
}

#[test]
fn fd_derived_cap_pauses_without_spinning_and_resumes() {
    let proxy = ProxyProcess::spawn_with_nofile(NOFILE, &[]);
    let limits = nofile_limits(proxy.pid());
    assert_eq!(limits, (NOFILE.to_string(), NOFILE.to_string()), "soft limit raised to the hard one");
    // Asking for more than the descriptors allow is capped by them.
    drop(proxy);
    let mut proxy = ProxyProcess::spawn_with_nofile(NOFILE, &["--max-connections", "1000"]);
    let cap = socksloop::limits::connections_for_fd_limit(NOFILE);
    assert_eq!(cap, 96);
    cap_holds_and_resumes(&mut proxy, cap, "nofile 256");
}

#[test]
fn max_connections_10_pauses_without_spinning_and_resumes() {
    let mut proxy = ProxyProcess::spawn(&["--max-connections", "10"]);
    cap_holds_and_resumes(&mut proxy, 10, "--max-connections 10");
}

/// One step of filling the proxy with UDP associations.
enum Outcome {
    /// Associated; the control connection keeps it alive. With its relay address.
    Associated(TcpStream, SocketAddr),
    /// The proxy answered 01: it could not open the association's sockets.
    GeneralFailure,
    /// The greeting went unanswered: the proxy cannot accept (EMFILE) and waits.
    NotAccepted(TcpStream),
}

fn try_associate(proxy: &ProxyProcess) -> Outcome {
    let mut stream = tcp_connect(proxy.addr);
    stream.write_all(&greeting_bytes()).unwrap();
    // Unanswered for a second is "not accepted" only if the proxy really has not accepted
    // the connection (it is still in the listener's queue, which /proc shows); an accepted
    // client is answered, however busy the machine (at most TIMEOUT).
    let client = stream.local_addr().unwrap();
    let mut waited = Duration::ZERO;
    while nothing_arrives(&mut stream, Duration::from_millis(250)) {
        waited += Duration::from_millis(250);
        let accepted = holds_connection_from(proxy.pid(), client);
        if (waited >= Duration::from_millis(1000) && !accepted) || waited >= TIMEOUT {
            return Outcome::NotAccepted(stream);
        }
    }
    let mut selection = [0u8; 2];
    stream.read_exact(&mut selection).expect("method selection");
    assert_eq!(selection, [5, NO_AUTH]);
    let dest = Dest::Ip(SocketAddr::from(([0, 0, 0, 0], 0)));
    stream.write_all(&request_bytes(CMD_UDP_ASSOCIATE, &dest)).unwrap();
    let reply = read_reply(&mut stream).expect("UDP ASSOCIATE reply");
    match reply.code {
        REP_OK => match reply.bound {
            Bound::Ip(relay) => Outcome::Associated(stream, relay),
            other => panic!("relay address must be an IP: {other:?}"),
        },
        REP_GENERAL_FAILURE => {
            expect_closed(&mut stream, "after 01");
            Outcome::GeneralFailure
        }
        other => panic!("UDP ASSOCIATE under exhaustion: unexpected reply {other:#04x}"),
    }
}

/// A UDP round trip through a fresh association: the full path works.
fn assert_udp_works(proxy: SocketAddr, echo_port: u16) {
    let (control, reply) = udp_associate(proxy, 0);
    assert_eq!(reply.code, REP_OK, "{reply:?}");
    let Bound::Ip(relay) = reply.bound else { panic!("{reply:?}") };
    assert_udp_echo(relay, echo_port);
    drop(control);
}

/// One datagram through the association at `relay` comes back from the UDP echo.
fn assert_udp_echo(relay: SocketAddr, echo_port: u16) {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let dest = Dest::Ip(SocketAddr::from(([127, 0, 0, 1], echo_port)));
    let mut buf = [0u8; 2048];
    // Loopback does not drop datagrams in practice; retry anyway rather than flake.
    let answered = (0..3).any(|_| {
        udp.send_to(&udp_datagram(0, &dest, b"udp after exhaustion"), relay).unwrap();
        matches!(udp.recv_from(&mut buf), Ok((n, _)) if udp_reply_payload(&buf[..n]) == Some(b"udp after exhaustion"))
    });
    assert!(answered, "no UDP echo through association {relay}");
}

#[test]
fn udp_associations_exhaust_descriptors_and_the_proxy_recovers() {
    // Handshakes must outlive the test's waits: a client held in the handshake is part of
    // the plan below.
    let mut proxy = ProxyProcess::spawn_with_nofile(NOFILE, &["--handshake-timeout", "60"]);
    let echo = echo_server("127.0.0.1:0");
    let udp_echo_port = udp_echo(b"");
    let baseline = warm_up_and_count_fds(&proxy, &echo);
    assert_udp_works(proxy.addr, udp_echo_port);
    assert_fds_return(&proxy, baseline, "one association");

    // Open associations until the proxy runs out of descriptors. Two ways to notice:
    // * 01: accepted, but its UDP sockets could not be opened (the path this test wants);
    // * no answer to the greeting: accept() itself failed with EMFILE. Then free one
    //   association (3 descriptors); the waiting client is accepted (1) and held in its
    //   handshake, which leaves 2: the next association gets its TCP socket and one UDP
    //   socket, and fails on the second, so the next round ends in 01.
    let mut associations: Vec<(TcpStream, SocketAddr)> = Vec::new();
    let mut held_in_handshake: Vec<TcpStream> = Vec::new();
    let mut saw_general_failure = false;
    let mut saw_accept_stall = false;
    for _ in 0..200 {
        match try_associate(&proxy) {
            Outcome::Associated(stream, relay) => associations.push((stream, relay)),
            Outcome::GeneralFailure => {
                saw_general_failure = true;
                break;
            }
            Outcome::NotAccepted(mut stream) => {
                assert!(!saw_accept_stall, "accept still stalled after freeing an association");
                saw_accept_stall = true;
                // Out of descriptors with a client waiting in the backlog: the loop retries
                // accept now and then, and must not spin meanwhile.
                let share = cpu_share(proxy.pid(), CPU_WINDOW);
                eprintln!("EMFILE: proxy CPU while accept fails: {:.1} %", share * 100.0);
                assert!(
                    share < CPU_LIMIT,
                    "the loop used {:.0} % CPU while out of descriptors",
                    share * 100.0
                );
                drop(associations.pop().expect("at least one association"));
                let mut selection = [0u8; 2];
                stream.read_exact(&mut selection).expect("accepted once descriptors were freed");
                assert_eq!(selection, [5, NO_AUTH]);
                held_in_handshake.push(stream);
            }
        }
        assert_alive(&mut proxy, "filling with UDP associations");
    }
    eprintln!(
        "EMFILE: {} associations open (proxy at {} of {NOFILE} descriptors); accept stalled: {saw_accept_stall}; 01 seen: {saw_general_failure}",
        associations.len(),
        fd_count(proxy.pid())
    );
    assert!(saw_general_failure, "never reached a UDP ASSOCIATE the proxy could not open");

    // Still serving what it holds: an existing association relays (the test's own UDP
    // socket is on the test's side; the proxy needs no new descriptor for it).
    assert_alive(&mut proxy, "after EMFILE");
    assert_udp_echo(associations[0].1, udp_echo_port);
    drop(associations);
    drop(held_in_handshake);
    // Everything closed: new clients of every kind work, and every descriptor is back.
    assert_serves(proxy.addr, &echo, "EMFILE");
    assert_udp_works(proxy.addr, udp_echo_port);
    assert_fds_return(&proxy, baseline, "after UDP exhaustion");
}
