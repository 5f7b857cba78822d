//! SOCKS5 UDP: the datagram header, associations, and a UDP echo target.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::*;

/// A UDP echo on a dual-stack socket (`[::]:port`, so both 127.0.0.1 and ::1 reach it) that
/// answers each datagram with `prefix` + payload (a prefix proves the answer is the echo's,
/// not the datagram itself bounced back). Runs until the test process ends; its port.
pub fn udp_echo(prefix: &'static [u8]) -> u16 {
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, None).unwrap();
    socket.set_only_v6(false).unwrap();
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into()).unwrap();
    let socket: UdpSocket = socket.into();
    let port = socket.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let reply = [prefix, &buf[..n]].concat();
            let _ = socket.send_to(&reply, from);
        }
    });
    port
}

/// `00 00 FRAG ATYP ADDR PORT` + payload: a SOCKS5 UDP datagram.
pub fn udp_datagram(frag: u8, dest: &Dest, payload: &[u8]) -> Vec<u8> {
    // The request encoding after its first three bytes is exactly ATYP ADDR PORT.
    let mut out = vec![0, 0, frag];
    out.extend_from_slice(&request_bytes(CMD_UDP_ASSOCIATE, dest)[3..]);
    out.extend_from_slice(payload);
    out
}

/// A relayed UDP reply split into the source its header names and its payload; `None` for a
/// header that is not IPv4 or IPv6, or is cut short.
pub fn split_udp_reply(datagram: &[u8]) -> Option<(SocketAddr, &[u8])> {
    match datagram.get(3)? {
        1 => {
            let b = datagram.get(4..10)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Some((SocketAddr::new(ip.into(), u16::from_be_bytes([b[4], b[5]])), &datagram[10..]))
        }
        4 => {
            let b = datagram.get(4..22)?;
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).unwrap());
            Some((SocketAddr::new(ip.into(), u16::from_be_bytes([b[16], b[17]])), &datagram[22..]))
        }
        _ => None,
    }
}

/// The payload of a relayed UDP reply (after its IPv4 or IPv6 header).
pub fn udp_reply_payload(datagram: &[u8]) -> Option<&[u8]> {
    split_udp_reply(datagram).map(|(_, payload)| payload)
}

/// A relayed UDP reply, insisting on RSV and FRAG being zero: the source its header names
/// and the payload.
pub fn parse_udp_reply(datagram: &[u8]) -> (Dest, Vec<u8>) {
    assert_eq!(&datagram[..3], &[0, 0, 0], "RSV and FRAG");
    match split_udp_reply(datagram) {
        Some((source, payload)) => (Dest::Ip(source), payload.to_vec()),
        None => panic!("reply ATYP {}", datagram[3]),
    }
}

/// UDP ASSOCIATE announcing the client's UDP port `port` (0: not known yet) on 0.0.0.0: the
/// control connection and the reply, whatever its code.
pub fn udp_associate(proxy: SocketAddr, port: u16) -> (TcpStream, Reply) {
    let dest = Dest::Ip(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)));
    socks_request(proxy, CMD_UDP_ASSOCIATE, &dest)
}

/// An association: the control connection, the client's UDP socket, the relay address.
pub struct Association {
    pub control: TcpStream,
    pub udp: UdpSocket,
    pub relay: SocketAddr,
}

/// A successful association from a fresh UDP socket on 127.0.0.1, announcing its port or not.
pub fn associate(proxy: SocketAddr, announce_port: bool) -> Association {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let port = if announce_port { udp.local_addr().unwrap().port() } else { 0 };
    let (control, reply) = udp_associate(proxy, port);
    assert_eq!(reply.code, REP_OK, "UDP ASSOCIATE: {reply:?}");
    let Bound::Ip(relay) = reply.bound else { panic!("relay address must be an IP: {reply:?}") };
    assert!(!relay.ip().is_unspecified() && relay.port() != 0, "usable relay address: {relay}");
    Association { control, udp, relay }
}

/// Send one datagram through the relay and return the reply datagram's header and payload.
pub fn round_trip(assoc: &Association, dest: &Dest, payload: &[u8]) -> (Dest, Vec<u8>) {
    assoc.udp.send_to(&udp_datagram(0, dest, payload), assoc.relay).unwrap();
    let mut buf = [0u8; 65536];
    let (n, from) = assoc.udp.recv_from(&mut buf).expect("a reply through the relay");
    assert_eq!(from, assoc.relay, "replies come from the relay address");
    parse_udp_reply(&buf[..n])
}

/// Nothing arrives on `socket` for a short while (300 ms).
pub fn assert_silent(socket: &UdpSocket, what: &str) {
    socket.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
    let mut buf = [0u8; 2048];
    match socket.recv_from(&mut buf) {
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
        other => panic!("{what}: expected nothing, got {other:?}"),
    }
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
}
