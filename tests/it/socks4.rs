//! SOCKS4 and 4a: CONNECT by address and by name with raw bytes and through curl, a refused
//! connect (91), BIND, and refusal when SOCKS4 is disabled or passwords are required.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};

use crate::support::*;

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

    let users = TempFile::new("s4users", "alice:pw\n");
    let with_auth = start_server_with(|c| c.auth.file = Some(users.path_buf()));
    let (_, reply) = socks4_request(proxy_addr(&with_auth), 1, echo.addr.port(), [127, 0, 0, 1], None);
    assert_eq!(reply[1], 0x5B, "SOCKS4 has no passwords: refused when auth is on");
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
    let http = http_server();
    let by_ip =
        curl_with("--socks4", &proxy.to_string(), &format!("http://127.0.0.1:{}/4", http.addr.port()));
    check_body(&by_ip);
    let by_name =
        curl_with("--socks4a", &proxy.to_string(), &format!("http://localhost:{}/4a", http.addr.port()));
    check_body(&by_name);
}
