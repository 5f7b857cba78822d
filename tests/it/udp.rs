//! UDP ASSOCIATE: IPv4, IPv6 and `localhost` targets, 60 KB datagrams, foreign senders and
//! fragments dropped, the client's port learnt from its first datagram, the relay socket
//! closing with the control connection, and PySocks as a real client.
//! (Egress rules for datagrams are in `rules.rs`.)

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// The echo prefix: answers are `echo:` + payload.
const PREFIX: &[u8] = b"echo:";

#[test]
fn udp_associate_relays_ipv4_ipv6_and_domain_targets() {
    let server = start_server();
    let echo_port = udp_echo(PREFIX);
    let assoc = associate(proxy_addr(&server), true);

    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, echo_port));
    let (source, payload) = round_trip(&assoc, &Dest::Ip(v4), b"over ipv4");
    assert_eq!(payload, b"echo:over ipv4");
    assert!(matches!(source, Dest::Ip(a) if a == v4), "header names the target: {source:?}");

    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, echo_port));
    let (source, payload) = round_trip(&assoc, &Dest::Ip(v6), b"over ipv6");
    assert_eq!(payload, b"echo:over ipv6");
    assert!(matches!(source, Dest::Ip(a) if a == v6), "{source:?}");

    let (source, payload) = round_trip(&assoc, &Dest::Domain("localhost".into(), echo_port), b"by name");
    assert_eq!(payload, b"echo:by name");
    assert!(matches!(source, Dest::Ip(a) if a.ip().is_loopback() && a.port() == echo_port));

    let big = DataGen::bytes(7, 60_000);
    let (_, payload) = round_trip(&assoc, &Dest::Ip(v4), &big);
    assert_eq!(&payload[5..], &big[..], "a 60 KB datagram arrives whole");
}

#[test]
fn udp_ignores_foreign_senders_and_fragments() {
    let server = start_server();
    let echo_port = udp_echo(PREFIX);
    let assoc = associate(proxy_addr(&server), true);
    let dest = Dest::Ip(SocketAddr::from((Ipv4Addr::LOCALHOST, echo_port)));

    // Same IP, other port than announced: not the client.
    let stranger = UdpSocket::bind("127.0.0.1:0").unwrap();
    stranger.send_to(&udp_datagram(0, &dest, b"spoof"), assoc.relay).unwrap();
    assert_silent(&stranger, "foreign sender");
    assert_silent(&assoc.udp, "foreign sender's datagram must not be relayed");

    assoc.udp.send_to(&udp_datagram(1, &dest, b"fragment"), assoc.relay).unwrap();
    assert_silent(&assoc.udp, "FRAG != 0 is dropped");

    let (_, payload) = round_trip(&assoc, &dest, b"whole");
    assert_eq!(payload, b"echo:whole", "the association still works");
}

#[test]
fn udp_learns_the_client_port_when_the_request_names_none() {
    let server = start_server();
    let echo_port = udp_echo(PREFIX);
    let assoc = associate(proxy_addr(&server), false);
    let dest = Dest::Ip(SocketAddr::from((Ipv4Addr::LOCALHOST, echo_port)));
    let (_, payload) = round_trip(&assoc, &dest, b"first datagram fixes the port");
    assert_eq!(payload, b"echo:first datagram fixes the port");
}

#[test]
fn udp_relay_socket_closes_with_the_control_connection() {
    let server = start_server();
    let echo_port = udp_echo(PREFIX);
    let assoc = associate(proxy_addr(&server), true);
    let dest = Dest::Ip(SocketAddr::from((Ipv4Addr::LOCALHOST, echo_port)));
    let (_, payload) = round_trip(&assoc, &dest, b"alive");
    assert_eq!(payload, b"echo:alive");

    let Association { control, udp, relay } = assoc;
    drop(control);
    // Once the relay socket is closed, the kernel answers datagrams to it with ICMP port
    // unreachable, which a connected UDP socket reports as ConnectionRefused.
    udp.connect(relay).unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let deadline = Instant::now() + TIMEOUT;
    let mut buf = [0u8; 1024];
    loop {
        assert!(
            Instant::now() < deadline,
            "relay socket still open 10 s after the control connection closed"
        );
        let _ = udp.send(&udp_datagram(0, &dest, b"anyone there?"));
        match udp.recv(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
            _ => thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn pysocks_udp_through_the_proxy() {
    let server = start_server();
    let proxy = proxy_addr(&server);
    let echo_port = udp_echo(PREFIX);
    let script = r#"
import socket, sys
try:
    import socks
except ImportError:
    sys.exit("PySocks is not installed: run .ci/run or `pip install PySocks`")
proxy_port, echo_port = int(sys.argv[1]), int(sys.argv[2])
for host in ("127.0.0.1", "localhost"):
    s = socks.socksocket(socket.AF_INET, socket.SOCK_DGRAM)
    s.set_proxy(socks.SOCKS5, "127.0.0.1", proxy_port, rdns=True)
    s.settimeout(10)
    s.sendto(b"pysocks " + host.encode(), (host, echo_port))
    data, _ = s.recvfrom(2048)
    assert data == b"echo:pysocks " + host.encode(), data
    print("ok", host)
    s.close()
"#;
    let output = Command::new("python3")
        .args(["-c", script, &proxy.port().to_string(), &echo_port.to_string()])
        .output()
        .expect("python3 runs (CI installs it)");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "PySocks UDP failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("ok 127.0.0.1") && stdout.contains("ok localhost"), "{stdout}");
}

#[test]
fn udp_ports_confine_the_relay_and_a_full_range_gets_01() {
    // A UDP port free a moment ago: the whole range is this one port.
    let port = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let range = format!("{port}-{port}");
    let server = start_server_with(|c| c.udp_ports = Some((port, port)));
    let proxy = proxy_addr(&server);
    let first = associate(proxy, true);
    assert_eq!(first.relay.port(), port, "the relay listens in --udp-ports {range}");
    let echo_port = udp_echo(b"");
    let (_, payload) =
        round_trip(&first, &Dest::Ip(SocketAddr::from((Ipv4Addr::LOCALHOST, echo_port))), b"in range");
    assert_eq!(payload, b"in range");
    // The range is full while the first association lives: 01.
    let (_control, reply) = udp_associate(proxy, 0);
    assert_eq!(reply.code, REP_GENERAL_FAILURE, "no free port in {range}");
    // Once it ends, its port is free again.
    drop(first);
    let again = poll_until(TIMEOUT, || {
        let (control, reply) = udp_associate(proxy, 0);
        (reply.code == REP_OK).then_some((control, reply))
    });
    assert!(again.is_some(), "the port came back after the first association closed");
}
