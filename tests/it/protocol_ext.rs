//! The rest of the protocol (issue 4): UDP ASSOCIATE over raw sockets and through PySocks,
//! BIND with a second socket connecting in, and SOCKS4/4a through curl and raw bytes.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, Socket, Type};

use crate::reliability::udp_echo_with_prefix;
use crate::support::*;

const SHORT: Duration = Duration::from_millis(300);

/// A UDP echo that answers each datagram with `echo:` + payload.
fn udp_echo() -> u16 {
    udp_echo_with_prefix(b"echo:")
}

/// `00 00 FRAG ATYP ADDR PORT` + payload.
fn udp_datagram(frag: u8, dest: &Dest, payload: &[u8]) -> Vec<u8> {
    // The request encoding after its first three bytes is exactly ATYP ADDR PORT.
    let mut out = vec![0, 0, frag];
    out.extend_from_slice(&request_bytes(CMD_UDP_ASSOCIATE, dest)[3..]);
    out.extend_from_slice(payload);
    out
}

/// An association: the control connection, the client's UDP socket, the relay address.
struct Association {
    control: TcpStream,
    udp: UdpSocket,
    relay: SocketAddr,
}

fn associate(proxy: SocketAddr, announce_port: bool) -> Association {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let port = if announce_port { udp.local_addr().unwrap().port() } else { 0 };
    let dest = Dest::Ip(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    let (control, reply) = socks_request(proxy, CMD_UDP_ASSOCIATE, &dest);
    assert_eq!(reply.code, REP_OK, "UDP ASSOCIATE: {reply:?}");
    let Bound::Ip(relay) = reply.bound else { panic!("relay address must be an IP: {reply:?}") };
    assert!(!relay.ip().is_unspecified() && relay.port() != 0, "usable relay address: {relay}");
    Association { control, udp, relay }
}

/// Send one datagram through the relay and return the reply datagram's header and payload.
fn round_trip(assoc: &Association, dest: &Dest, payload: &[u8]) -> (Dest, Vec<u8>) {
    assoc.udp.send_to(&udp_datagram(0, dest, payload), assoc.relay).unwrap();
    let mut buf = [0u8; 65536];
    let (n, from) = assoc.udp.recv_from(&mut buf).expect("a reply through the relay");
    assert_eq!(from, assoc.relay, "replies come from the relay address");
    parse_udp_reply(&buf[..n])
}

fn parse_udp_reply(datagram: &[u8]) -> (Dest, Vec<u8>) {
    assert_eq!(&datagram[..3], &[0, 0, 0], "RSV and FRAG");
    let (source, header_len) = match datagram[3] {
        1 => {
            let ip = Ipv4Addr::new(datagram[4], datagram[5], datagram[6], datagram[7]);
            (SocketAddr::new(ip.into(), u16::from_be_bytes([datagram[8], datagram[9]])), 10)
        }
        4 => {
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&datagram[4..20]).unwrap());
            (SocketAddr::new(ip.into(), u16::from_be_bytes([datagram[20], datagram[21]])), 22)
        }
        other => panic!("reply ATYP {other}"),
    };
    (Dest::Ip(source), datagram[header_len..].to_vec())
}

/// Nothing arrives on `socket` for a short while.
fn assert_silent(socket: &UdpSocket, what: &str) {
    socket.set_read_timeout(Some(SHORT)).unwrap();
    let mut buf = [0u8; 2048];
    match socket.recv_from(&mut buf) {
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
        other => panic!("{what}: expected nothing, got {other:?}"),
    }
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
}

#[test]
fn udp_associate_relays_ipv4_ipv6_and_domain_targets() {
    let server = start_server();
    let echo_port = udp_echo();
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
    let echo_port = udp_echo();
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
    let echo_port = udp_echo();
    let assoc = associate(proxy_addr(&server), false);
    let dest = Dest::Ip(SocketAddr::from((Ipv4Addr::LOCALHOST, echo_port)));
    let (_, payload) = round_trip(&assoc, &dest, b"first datagram fixes the port");
    assert_eq!(payload, b"echo:first datagram fixes the port");
}

#[test]
fn udp_relay_socket_closes_with_the_control_connection() {
    let server = start_server();
    let echo_port = udp_echo();
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
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut buf = [0u8; 1024];
    loop {
        assert!(Instant::now() < deadline, "relay socket still open 5 s after the control connection closed");
        let _ = udp.send(&udp_datagram(0, &dest, b"anyone there?"));
        match udp.recv(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => break,
            _ => thread::sleep(Duration::from_millis(50)),
        }
    }
}

#[test]
fn udp_respects_egress_rules() {
    let server = start_server_with(|c| c.rules.block_private = true);
    let echo_port = udp_echo();
    let assoc = associate(proxy_addr(&server), true);
    let dest = Dest::Ip(SocketAddr::from((Ipv4Addr::LOCALHOST, echo_port)));
    assoc.udp.send_to(&udp_datagram(0, &dest, b"to a denied target"), assoc.relay).unwrap();
    assert_silent(&assoc.udp, "a datagram to a denied destination is dropped");
}

#[test]
fn pysocks_udp_through_the_proxy() {
    let server = start_server();
    let proxy = proxy_addr(&server);
    let echo_port = udp_echo();
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

/// Start a BIND; the control stream and the listening address from the first reply.
fn bind_request(proxy: SocketAddr, expected_peer: IpAddr) -> (TcpStream, SocketAddr) {
    let (stream, first) = socks_request(proxy, CMD_BIND, &Dest::Ip(SocketAddr::new(expected_peer, 0)));
    assert_eq!(first.code, REP_OK, "first BIND reply: {first:?}");
    let Bound::Ip(listening) = first.bound else { panic!("{first:?}") };
    assert_ne!(listening.port(), 0);
    (stream, listening)
}

fn connect_from(local: Ipv4Addr, to: SocketAddr) -> TcpStream {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket.bind(&SocketAddr::from((local, 0)).into()).unwrap();
    socket.connect(&to.into()).unwrap();
    let stream: TcpStream = socket.into();
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream
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

fn assert_echo_between(from: &mut TcpStream, to: &mut TcpStream, msg: &[u8]) {
    from.write_all(msg).unwrap();
    let mut buf = vec![0u8; msg.len()];
    to.read_exact(&mut buf).unwrap();
    assert_eq!(buf, msg);
}

#[test]
fn bind_refuses_unexpected_hosts_and_times_out() {
    let server = start_server_with(|c| c.connect_timeout = Duration::from_millis(1500));
    let (mut control, listening) = bind_request(proxy_addr(&server), Ipv4Addr::new(127, 0, 0, 2).into());
    let mut wrong = connect_from(Ipv4Addr::LOCALHOST, listening);
    expect_closed(&mut wrong, "a peer from an unexpected address");
    let right = connect_from(Ipv4Addr::new(127, 0, 0, 2), listening);
    let second = read_reply(&mut control).unwrap();
    assert_eq!((second.code, second.bound), (REP_OK, Bound::Ip(right.local_addr().unwrap())));

    // Nobody connects to this one: the connect timeout ends it with 06.
    let (mut idle, _) = bind_request(proxy_addr(&server), Ipv4Addr::LOCALHOST.into());
    let timeout = read_reply(&mut idle).unwrap();
    assert_eq!(timeout.code, REP_TTL_EXPIRED);
    expect_closed(&mut idle, "after the BIND timeout");
}

/// `04 CD PORT IP USERID 00 [HOST 00]`; the 8-byte reply.
fn socks4_request(
    proxy: SocketAddr,
    cmd: u8,
    port: u16,
    ip: [u8; 4],
    host: Option<&str>,
) -> (TcpStream, [u8; 8]) {
    let mut stream = tcp_connect(proxy);
    let mut msg = vec![4, cmd];
    msg.extend_from_slice(&port.to_be_bytes());
    msg.extend_from_slice(&ip);
    msg.extend_from_slice(b"tester\0");
    if let Some(host) = host {
        msg.extend_from_slice(host.as_bytes());
        msg.push(0);
    }
    stream.write_all(&msg).unwrap();
    let mut reply = [0u8; 8];
    stream.read_exact(&mut reply).unwrap();
    (stream, reply)
}

#[test]
fn socks4_and_4a_connect_with_raw_bytes() {
    let server = start_server();
    let echo = echo_server("127.0.0.1:0");
    let (mut stream, reply) = socks4_request(proxy_addr(&server), 1, echo.addr.port(), [127, 0, 0, 1], None);
    assert_eq!(&reply[..2], &[0, 0x5A]);
    assert_echo(&mut stream, b"socks4");

    let (mut stream, reply) =
        socks4_request(proxy_addr(&server), 1, echo.addr.port(), [0, 0, 0, 1], Some("localhost"));
    assert_eq!(&reply[..2], &[0, 0x5A]);
    assert_echo(&mut stream, b"socks4a");

    let (mut stream, reply) = socks4_request(proxy_addr(&server), 1, free_port(), [127, 0, 0, 1], None);
    assert_eq!(&reply[..2], &[0, 0x5B], "refused connect is 91");
    expect_closed(&mut stream, "after 91");
}

#[test]
fn socks4_is_refused_when_disabled_or_when_auth_is_required() {
    let echo = echo_server("127.0.0.1:0");
    let disabled = start_server_with(|c| c.socks4 = false);
    let (_, reply) = socks4_request(proxy_addr(&disabled), 1, echo.addr.port(), [127, 0, 0, 1], None);
    assert_eq!(reply[1], 0x5B);

    let users = std::env::temp_dir().join(format!("socksloop-it-{}-s4users", std::process::id()));
    std::fs::write(&users, "alice:pw\n").unwrap();
    let with_auth = start_server_with(|c| c.auth.file = Some(users.clone()));
    let (_, reply) = socks4_request(proxy_addr(&with_auth), 1, echo.addr.port(), [127, 0, 0, 1], None);
    assert_eq!(reply[1], 0x5B, "SOCKS4 has no passwords: refused when auth is on");
    let _ = std::fs::remove_file(&users);
}

#[test]
fn socks4_bind() {
    let server = start_server();
    let (mut control, reply) = socks4_request(proxy_addr(&server), 2, 0, [127, 0, 0, 1], None);
    assert_eq!(reply[1], 0x5A);
    let listening = SocketAddr::from((
        Ipv4Addr::new(reply[4], reply[5], reply[6], reply[7]),
        u16::from_be_bytes([reply[2], reply[3]]),
    ));
    let mut peer = connect_from(Ipv4Addr::LOCALHOST, listening);
    let mut second = [0u8; 8];
    control.read_exact(&mut second).unwrap();
    assert_eq!(second[1], 0x5A);
    assert_echo_between(&mut peer, &mut control, b"socks4 bind");
}

#[test]
fn curl_socks4_and_socks4a() {
    let server = start_server();
    let proxy = proxy_addr(&server);
    let http = crate::curl::http_server();
    let expected = checksum(&crate::curl::expected_body());
    let by_ip = crate::curl::curl_with(
        "--socks4",
        &proxy.to_string(),
        &format!("http://127.0.0.1:{}/4", http.addr.port()),
    );
    assert_eq!(checksum(&by_ip), expected);
    let by_name = crate::curl::curl_with(
        "--socks4a",
        &proxy.to_string(),
        &format!("http://localhost:{}/4a", http.addr.port()),
    );
    assert_eq!(checksum(&by_name), expected);
}
