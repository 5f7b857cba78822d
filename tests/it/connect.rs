//! CONNECT outcomes: IPv4, IPv6 and domain targets (with BND.ADDR checked against what the
//! target saw), refused ports, unresolvable names, and a connect that never completes.

use std::net::SocketAddr;
use std::time::Duration;

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

/// A listener whose accept queue is full: Linux drops further SYNs (instead of refusing), so
/// a connect to it stays in SYN-SENT. Backlog 0 means one queued connection fills it.
fn black_hole() -> (socket2::Socket, Vec<std::net::TcpStream>, SocketAddr) {
    use socket2::{Domain, Socket, Type};
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    // Fill the queue; later connects from the proxy hang. Keep these open (never accepted).
    let fillers = (0..2)
        .filter_map(|_| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok())
        .collect();
    (listener, fillers, addr)
}

#[test]
fn connect_timeout_gets_06() {
    let (_listener, fillers, addr) = black_hole();
    assert!(!fillers.is_empty(), "could not fill the accept queue");
    let server = start_server_with(|c| c.connect_timeout = Duration::from_millis(500));
    let (mut stream, reply) = socks_request(proxy_addr(&server), CMD_CONNECT, &Dest::Ip(addr));
    assert_eq!(reply.code, REP_TTL_EXPIRED, "{reply:?}");
    expect_closed(&mut stream, "after connect timeout");
}
