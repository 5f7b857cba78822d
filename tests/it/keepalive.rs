//! TCP keepalive (`--tcp-keepalive`): both sockets of an established relay carry it, with the
//! configured idle time, as the kernel reports them (`ss -o` shows a keepalive timer only on a
//! socket with SO_KEEPALIVE set). The sockets are the in-process proxy's, so `ss` sees them in
//! this test's own network namespace.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use crate::support::*;

/// `ss`'s line for the established TCP socket matching `filter` once no data is in flight
/// (while bytes wait for an ACK, `ss` shows the retransmit timer instead), within 5 s.
fn socket_line(filter: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let line = ss_line(filter);
        if !line.contains("timer:(on,") || std::time::Instant::now() > deadline {
            return line;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn ss_line(filter: &str) -> String {
    let output = Command::new("ss")
        .args(["-tnoH", "state", "established", filter])
        .output()
        .expect("run ss (iproute2)");
    assert!(output.status.success(), "ss {filter}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// The keepalive timer's remaining time on the socket `ss` describes, if it has one.
fn keepalive_secs(line: &str) -> Option<u64> {
    // e.g. "... timer:(keepalive,59sec,0)" or "timer:(keepalive,1min,0)"
    let rest = &line[line.find("timer:(keepalive,")? + "timer:(keepalive,".len()..];
    let value = &rest[..rest.find(',')?];
    if let Some(min) = value.strip_suffix("min") {
        return min.parse::<u64>().ok().map(|m| m * 60);
    }
    value.strip_suffix("sec").and_then(|s| s.split('.').next()).and_then(|s| s.parse().ok())
}

fn relay_sockets(proxy: SocketAddr, echo: &Target<u64>) -> (String, String, std::net::TcpStream) {
    let (mut stream, _) = socks_connect(proxy, echo.addr);
    assert_echo(&mut stream, b"keepalive?");
    let client = stream.local_addr().unwrap();
    // The proxy's client-side socket: from the proxy's port to the test client's.
    let client_side = socket_line(&format!("( sport = :{} and dport = :{} )", proxy.port(), client.port()));
    // The proxy's upstream: to the echo target's port, from anything but the target itself.
    let upstream = socket_line(&format!("( dport = :{} )", echo.addr.port()));
    (client_side, upstream, stream)
}

#[test]
fn both_sockets_of_a_relay_have_keepalive() {
    let server = start_server_with(|c| c.tcp_keepalive = Some(Duration::from_secs(45)));
    let echo = echo_server("127.0.0.1:0");
    let (client_side, upstream, _stream) = relay_sockets(proxy_addr(&server), &echo);
    for (what, line) in [("client side", &client_side), ("upstream", &upstream)] {
        let secs = keepalive_secs(line).unwrap_or_else(|| panic!("{what}: no keepalive timer in {line:?}"));
        assert!((30..=45).contains(&secs), "{what}: keepalive in {secs} s, configured 45: {line}");
    }
}

#[test]
fn tcp_keepalive_zero_turns_it_off() {
    let server = start_server_with(|c| c.tcp_keepalive = None);
    let echo = echo_server("127.0.0.1:0");
    let (client_side, upstream, _stream) = relay_sockets(proxy_addr(&server), &echo);
    assert!(!client_side.is_empty() && !upstream.is_empty(), "sockets found: {client_side:?} {upstream:?}");
    assert_eq!(keepalive_secs(&client_side), None, "{client_side}");
    assert_eq!(keepalive_secs(&upstream), None, "{upstream}");
}
