//! CONNECT outcomes: IPv4, IPv6 and domain targets (with BND.ADDR checked against what the
//! target saw), refused ports (05), unresolvable names (04), a connect that never completes
//! (06 at the connect timeout), and resolver threads started only when a name needs one.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::support::*;

/// CONNECT through the proxy to `dest`, check BND.ADDR/BND.PORT is the upstream socket's
/// local address (= the peer the target accepted), and echo through.
fn connect_and_echo(dest: Dest, echo: &Target<u64>) {
    let server = start_server();
    let (mut stream, reply) = socks_connect(proxy_addr(&server), dest.clone());
    let peer = echo.next_peer();
    assert_eq!(reply.bound, Bound::Ip(peer), "{dest:?}: BND.ADDR must be the upstream's local address");
    assert_ne!(peer.port(), 0);
    assert_echo(&mut stream, format!("via {dest:?}").as_bytes());
}

#[test]
fn connect_ipv4() {
    let echo = echo_server("127.0.0.1:0");
    connect_and_echo(Dest::Ip(echo.addr), &echo);
}

#[test]
fn connect_ipv6() {
    let echo = echo_server("[::1]:0");
    assert!(echo.addr.is_ipv6());
    connect_and_echo(Dest::Ip(echo.addr), &echo);
}

#[test]
fn connect_domain_localhost() {
    // Bound on 127.0.0.1 only: if localhost resolves to ::1 first, that attempt is refused
    // and the proxy must go on to the next address.
    let echo = echo_server("127.0.0.1:0");
    connect_and_echo(Dest::Domain("localhost".into(), echo.addr.port()), &echo);
}

#[test]
fn connect_domain_ip_literal() {
    // A "domain" that is an IP literal needs no lookup.
    let echo = echo_server("127.0.0.1:0");
    connect_and_echo(Dest::Domain("127.0.0.1".into(), echo.addr.port()), &echo);
}

#[test]
fn refused_port_gets_05() {
    let server = start_server();
    let dest = Dest::Ip(SocketAddr::from(([127, 0, 0, 1], free_port())));
    let (mut stream, reply) = socks_request(proxy_addr(&server), CMD_CONNECT, &dest);
    assert_eq!(reply.code, REP_REFUSED, "{reply:?}");
    expect_closed(&mut stream, "after refusal");
}

#[test]
fn unresolvable_name_gets_04() {
    let server = start_server();
    // A label over 63 bytes can never resolve; no query leaves the machine for it.
    let host = format!("{}.com", "a".repeat(70));
    let (mut stream, reply) = socks_request(proxy_addr(&server), CMD_CONNECT, &Dest::Domain(host, 80));
    assert_eq!(reply.code, REP_HOST_UNREACHABLE, "{reply:?}");
    expect_closed(&mut stream, "after host unreachable");
}

/// A connect to a black hole (SYNs dropped) ends in 06 when the connect timeout runs out, not
/// long before; twice, against the binary, which then still serves and holds no descriptor
/// more than before.
#[test]
fn black_holed_connect_gets_06_at_the_connect_timeout() {
    let (_hole, _fillers, hole) = black_hole();
    let (mut proxy, echo, baseline) = spawn_warm(&["--connect-timeout", "1"]);
    for _ in 0..2 {
        let start = Instant::now();
        let (mut stream, reply) = socks_request(proxy.addr, CMD_CONNECT, &Dest::Ip(hole));
        let waited = start.elapsed();
        assert_eq!(reply.code, REP_TTL_EXPIRED, "{reply:?}");
        // Not a speed check: an answer long before the timeout would be a different bug.
        assert!(waited >= Duration::from_millis(800), "06 after only {waited:?}");
        expect_closed(&mut stream, "after connect timeout");
    }
    assert_recovered(&mut proxy, &echo, baseline, "black-holed connects");
}

/// An idle proxy runs three threads (signals, one loop, the log writer) and starts a resolver
/// thread only when a name must be looked up: each thread costs resident memory. The log
/// writer is started with the logger: it is what lets the loop log without ever waiting for
/// stderr (`access_log.rs`).
#[test]
fn resolver_threads_start_on_first_lookup() {
    let proxy = ProxyProcess::spawn(&["--resolver-threads", "2"]);
    let target = echo_server("127.0.0.1:0");
    // A new thread names itself once it runs, which may be after the "listening on" line:
    // until then /proc shows the parent's name. Wait for the names to settle, then compare.
    let idle = ["log-writer", "socksloop", "socksloop-loop-"];
    poll_until(TIMEOUT, || (thread_names(proxy.pid()) == idle).then_some(()));
    assert_eq!(thread_names(proxy.pid()), idle, "idle threads");

    // An IP address needs no lookup, so no thread.
    let (mut stream, reply) = socks_connect(proxy.addr, target.addr);
    assert_eq!(reply.code, 0);
    assert_echo(&mut stream, b"by address");
    assert_eq!(thread_names(proxy.pid()).len(), 3, "{:?}", thread_names(proxy.pid()));

    let (mut stream, reply) = socks_connect(proxy.addr, Dest::Domain("localhost".into(), target.addr.port()));
    assert_eq!(reply.code, 0);
    assert_echo(&mut stream, b"by name");
    assert!(thread_names(proxy.pid()).contains(&"resolver-0".to_string()), "{:?}", thread_names(proxy.pid()));
}
