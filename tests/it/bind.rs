//! BIND: the proxy listens for one peer, names it in the second reply and relays both ways;
//! a peer from an unexpected address is refused, and nobody connecting ends in 06.
//! (SOCKS4 BIND is in `socks4.rs`.)

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream};
use std::time::Duration;

use crate::support::*;

/// Start a BIND; the control stream and the listening address from the first reply.
fn bind_request(proxy: SocketAddr, expected_peer: IpAddr) -> (TcpStream, SocketAddr) {
    let (stream, first) = socks_request(proxy, CMD_BIND, &Dest::Ip(SocketAddr::new(expected_peer, 0)));
    assert_eq!(first.code, REP_OK, "first BIND reply: {first:?}");
    let Bound::Ip(listening) = first.bound else { panic!("{first:?}") };
    assert_ne!(listening.port(), 0);
    (stream, listening)
}

#[test]
fn bind_accepts_the_expected_peer_and_relays_both_ways() {
    let server = start_server();
    let (mut control, listening) = bind_request(proxy_addr(&server), Ipv4Addr::LOCALHOST.into());
    let mut peer = connect_from(Ipv4Addr::LOCALHOST, listening);
    let second = read_reply(&mut control).unwrap();
    assert_eq!(second.code, REP_OK);
    assert_eq!(second.bound, Bound::Ip(peer.local_addr().unwrap()), "second reply names the peer");

    peer.write_all(b"from the peer").unwrap();
    let mut buf = [0u8; 13];
    control.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"from the peer");
    assert_echo_between(&mut control, &mut peer, b"from the client");
}

#[test]
fn bind_refuses_unexpected_hosts_and_times_out() {
    // The refusal with the default (generous) BIND timeout, so the right peer surely comes
    // in time on a busy machine; the timeout on a second proxy with a short one.
    let server = start_server();
    let (mut control, listening) = bind_request(proxy_addr(&server), Ipv4Addr::new(127, 0, 0, 2).into());
    let mut wrong = connect_from(Ipv4Addr::LOCALHOST, listening);
    expect_closed(&mut wrong, "a peer from an unexpected address");
    let right = connect_from(Ipv4Addr::new(127, 0, 0, 2), listening);
    let second = read_reply(&mut control).unwrap();
    assert_eq!((second.code, second.bound), (REP_OK, Bound::Ip(right.local_addr().unwrap())));

    // Nobody connects to this one: the connect timeout ends it with 06.
    let short = start_server_with(|c| c.connect_timeout = Duration::from_millis(1500));
    let (mut idle, _) = bind_request(proxy_addr(&short), Ipv4Addr::LOCALHOST.into());
    let timeout = read_reply(&mut idle).unwrap();
    assert_eq!(timeout.code, REP_TTL_EXPIRED);
    expect_closed(&mut idle, "after the BIND timeout");
}
