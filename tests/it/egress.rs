//! Where outbound connections leave from, per user and globally (#13): a user's `bind-out`
//! as the target sees it, `incoming` (the address the client reached), `bind-interface`
//! (`lo` works; a veth end in a network namespace the test makes cannot reach the target; an
//! interface that does not exist is a general failure), and `fwmark` read back from the
//! proxy's upstream socket with `ss -e` (and refused with 01 when the proxy lacks
//! CAP_NET_ADMIN).
//!
//! Only loopback addresses here (127.0.0.5-8 are loopback like 127.0.0.1 on Linux), and a
//! namespace of the test's own for the veth.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::thread;

use socksloop::users::{BindOut, Egress, User};

use crate::support::netns::{self, sh};
use crate::support::*;

/// A user with a password and `egress`.
fn user(name: &str, egress: Egress) -> User {
    let mut user = User::plain(name, format!("{name}-pw").as_bytes());
    user.egress = egress;
    user
}

fn leaving_from(ip: &str) -> Egress {
    Egress { bind_out: Some(BindOut::Addr(ip.parse().unwrap())), ..Egress::default() }
}

/// Log in as `name` (password `{name}-pw`) and send `cmd` toward `dest`: the stream and reply.
fn user_request(proxy: SocketAddr, name: &str, cmd: u8, dest: &Dest) -> (TcpStream, Reply) {
    let mut stream = tcp_connect(proxy);
    greet_userpass(&mut stream);
    assert_eq!(authenticate(&mut stream, name, &format!("{name}-pw")), 0, "login as {name}");
    stream.write_all(&request_bytes(cmd, dest)).unwrap();
    let reply = read_reply(&mut stream).expect("reply");
    (stream, reply)
}

/// A UDP target that answers each datagram with the address it came from, as text.
fn udp_source_echo() -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = socket.local_addr().unwrap();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = socket.recv_from(&mut buf) {
            let _ = socket.send_to(from.ip().to_string().as_bytes(), from);
        }
    });
    addr
}

#[test]
fn alice_and_bob_leave_from_their_own_addresses() {
    let echo = echo_server("127.0.0.1:0");
    let server = start_server_with(|c| {
        c.users.add(user("alice", leaving_from("127.0.0.5"))).unwrap();
        c.users.add(user("bob", leaving_from("127.0.0.6"))).unwrap();
        c.users.add(user("carol", Egress::default())).unwrap();
    });
    let proxy = proxy_addr(&server);
    for (name, source) in [("alice", "127.0.0.5"), ("bob", "127.0.0.6"), ("carol", "127.0.0.1")] {
        let (mut stream, reply) = user_request(proxy, name, CMD_CONNECT, &Dest::Ip(echo.addr));
        assert_eq!(reply.code, REP_OK, "{name}");
        let seen = echo.next_peer();
        assert_eq!(seen.ip().to_string(), source, "the target sees {name}'s address");
        assert_eq!(reply.bound, Bound::Ip(seen), "BND.ADDR is {name}'s upstream address");
        assert_echo(&mut stream, format!("from {name}").as_bytes());
    }

    // UDP ASSOCIATE: bob's datagrams leave from his address too.
    let target = udp_source_echo();
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let client_port = udp.local_addr().unwrap().port();
    let (_control, reply) = user_request(
        proxy,
        "bob",
        CMD_UDP_ASSOCIATE,
        &Dest::Ip(SocketAddr::from((Ipv4Addr::UNSPECIFIED, client_port))),
    );
    assert_eq!(reply.code, REP_OK);
    let Bound::Ip(relay) = reply.bound else { panic!("{reply:?}") };
    udp.send_to(&udp_datagram(0, &Dest::Ip(target), b"who am I?"), relay).unwrap();
    let mut buf = [0u8; 2048];
    let (n, _) = udp.recv_from(&mut buf).expect("the answer comes back through the relay");
    assert_eq!(udp_reply_payload(&buf[..n]), Some(&b"127.0.0.6"[..]), "the UDP target sees bob's address");
}

#[test]
fn incoming_leaves_from_the_address_the_client_reached() {
    let echo = echo_server("127.0.0.1:0");
    // Globally, and for a user whose own setting is `incoming` (over a global address).
    let global = start_server_with(|c| {
        c.listen = vec!["127.0.0.7:0".parse().unwrap(), "127.0.0.8:0".parse().unwrap()];
        c.bind_out = Some(BindOut::Incoming);
    });
    for &listener in global.local_addrs() {
        let (mut stream, reply) = socks_connect(listener, echo.addr);
        assert_eq!(reply.code, REP_OK);
        assert_eq!(echo.next_peer().ip(), listener.ip(), "leaves from the address {listener} reached");
        assert_echo(&mut stream, b"incoming");
    }
    let per_user = start_server_with(|c| {
        c.listen = vec!["127.0.0.7:0".parse().unwrap(), "127.0.0.8:0".parse().unwrap()];
        c.bind_out = Some(BindOut::Addr("127.0.0.5".parse().unwrap()));
        c.users.add(user("bob", Egress { bind_out: Some(BindOut::Incoming), ..Egress::default() })).unwrap();
        c.users.add(user("alice", Egress::default())).unwrap();
    });
    for &listener in per_user.local_addrs() {
        let (_bob, reply) = user_request(listener, "bob", CMD_CONNECT, &Dest::Ip(echo.addr));
        assert_eq!(reply.code, REP_OK);
        assert_eq!(echo.next_peer().ip(), listener.ip(), "bob via {listener}");
        let (_alice, reply) = user_request(listener, "alice", CMD_CONNECT, &Dest::Ip(echo.addr));
        assert_eq!(reply.code, REP_OK);
        assert_eq!(echo.next_peer().ip().to_string(), "127.0.0.5", "alice keeps the global address");
    }
}

#[test]
fn an_ipv4_egress_address_cannot_reach_an_ipv6_target() {
    let echo6 = match std::net::TcpListener::bind("[::1]:0") {
        Ok(listener) => listener,
        Err(_) => return, // no IPv6 loopback on this host: nothing to show
    };
    let target = echo6.local_addr().unwrap();
    let server = start_server_with(|c| c.users.add(user("alice", leaving_from("127.0.0.5"))).unwrap());
    let (_, reply) = user_request(proxy_addr(&server), "alice", CMD_CONNECT, &Dest::Ip(target));
    assert_eq!(reply.code, REP_ATYP_NOT_SUPPORTED, "as --bind-out does: the family is filtered");
}

#[test]
fn bind_interface_lo_works_and_a_missing_interface_is_a_general_failure() {
    let echo = echo_server("127.0.0.1:0");
    let server = start_server_with(|c| {
        c.bind_interface = Some("lo".into());
        c.users.add(user("alice", Egress::default())).unwrap();
        c.users
            .add(user("mallory", Egress { interface: Some("nosuch0".into()), ..Egress::default() }))
            .unwrap();
    });
    let proxy = proxy_addr(&server);
    let (mut stream, reply) = user_request(proxy, "alice", CMD_CONNECT, &Dest::Ip(echo.addr));
    assert_eq!(reply.code, REP_OK, "through lo");
    assert_echo(&mut stream, b"via lo");
    let (mut stream, reply) = user_request(proxy, "mallory", CMD_CONNECT, &Dest::Ip(echo.addr));
    assert_eq!(reply.code, REP_GENERAL_FAILURE, "an interface that does not exist");
    expect_closed(&mut stream, "after 01");
}

/// The `ss -tne` line of the TCP socket connected to `peer` from this process's side.
fn ss_line_to(peer: SocketAddr) -> Option<String> {
    let output = Command::new("ss")
        .args(["-tne", "state", "established", "dst", &peer.to_string()])
        .output()
        .expect("ss (iproute2)");
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.lines().find(|l| l.contains(&peer.to_string())).map(str::to_owned)
}

#[test]
fn the_fwmark_is_on_the_upstream_socket_per_user() {
    let echo = echo_server("127.0.0.1:0");
    let server = start_server_with(|c| {
        c.fwmark = Some(0x2a);
        c.users.add(user("alice", Egress { fwmark: Some(0x7), ..Egress::default() })).unwrap();
        c.users.add(user("bob", Egress::default())).unwrap();
    });
    let proxy = proxy_addr(&server);
    // The proxy runs in this process: its upstream socket is the one whose peer is the echo.
    // Each relay stays open while `ss` looks, one at a time.
    for (name, mark) in [("alice", "fwmark:0x7"), ("bob", "fwmark:0x2a")] {
        let (mut stream, reply) = user_request(proxy, name, CMD_CONNECT, &Dest::Ip(echo.addr));
        assert_eq!(reply.code, REP_OK);
        assert_echo(&mut stream, b"marked");
        let Bound::Ip(upstream) = reply.bound else { panic!("{reply:?}") };
        // The upstream socket, found by its own address (BND) and the echo's.
        let line =
            poll_until(TIMEOUT, || ss_line_to(echo.addr).filter(|l| l.contains(&upstream.to_string())))
                .unwrap_or_else(|| panic!("no upstream socket {upstream} -> {} in ss", echo.addr));
        assert!(line.contains(mark), "{name}: {line}");
        drop(stream);
        echo.next_peer();
        poll_until(TIMEOUT, || ss_line_to(echo.addr).is_none().then_some(())).expect("relay closed");
    }
}

#[test]
fn an_fwmark_without_the_capability_is_a_general_failure_and_says_so() {
    // The binary, with CAP_NET_ADMIN and CAP_NET_RAW (either allows SO_MARK since Linux 5.17)
    // out of its bounding set (it runs as root here, so this is the way to take them away):
    // SO_MARK fails with EPERM.
    let mut command = Command::new("setpriv");
    command
        .args(["--bounding-set=-net_admin,-net_raw", "--inh-caps=-net_admin,-net_raw", "--"])
        .arg(env!("CARGO_BIN_EXE_socksloop"))
        .args(["--listen", "127.0.0.1:0", "--fwmark", "9"]);
    let proxy = ProxyProcess::from_command(command);
    let echo = echo_server("127.0.0.1:0");
    let (mut stream, reply) = socks_request(proxy.addr, CMD_CONNECT, &Dest::Ip(echo.addr));
    assert_eq!(reply.code, REP_GENERAL_FAILURE, "not 02: the ruleset did not refuse, the setup failed");
    expect_closed(&mut stream, "after 01");
    assert!(
        proxy.wait_for_log("cannot set SO_MARK 9", TIMEOUT)
            && proxy.wait_for_log("(needs CAP_NET_ADMIN", TIMEOUT),
        "{:?}",
        proxy.stderr.lock().unwrap()
    );
}

/// Set when this binary runs inside the namespace the outer test made.
const INSIDE: &str = "SOCKSLOOP_TEST_EGRESS_NETNS";

#[test]
fn a_veth_end_in_a_network_namespace_cannot_reach_the_target() {
    netns::run_inside(&["--net"], "egress::in_namespace", INSIDE);
}

#[test]
#[ignore = "run by a_veth_end_in_a_network_namespace_cannot_reach_the_target, inside its namespace"]
fn in_namespace() {
    assert!(
        std::env::var_os(INSIDE).is_some(),
        "run a_veth_end_in_a_network_namespace_cannot_reach_the_target"
    );
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&["ip", "link", "add", "eg0", "type", "veth", "peer", "name", "eg1"]);
    sh(&["ip", "link", "set", "eg0", "up"]);
    sh(&["ip", "link", "set", "eg1", "up"]);
    sh(&["ip", "addr", "add", "198.18.7.1/24", "dev", "eg0"]);
    let echo = echo_server("127.0.0.1:0");
    let server = start_server_with(|c| {
        c.connect_timeout = std::time::Duration::from_secs(1);
        c.users.add(user("alice", Egress { interface: Some("eg0".into()), ..Egress::default() })).unwrap();
        c.users.add(user("bob", Egress { interface: Some("lo".into()), ..Egress::default() })).unwrap();
    });
    let proxy = proxy_addr(&server);
    let (_, reply) = user_request(proxy, "alice", CMD_CONNECT, &Dest::Ip(echo.addr));
    println!("alice through eg0: reply {:#04x}", reply.code);
    assert_ne!(reply.code, REP_OK, "127.0.0.1 is not reachable through a veth end");
    assert!(echo.peers.try_recv().is_err(), "the target saw no connection");
    // Bob, on lo, reaches the same target from the same proxy.
    let (mut stream, reply) = user_request(proxy, "bob", CMD_CONNECT, &Dest::Ip(echo.addr));
    assert_eq!(reply.code, REP_OK);
    assert_eq!(echo.next_peer().ip(), IpAddr::from(Ipv4Addr::LOCALHOST));
    assert_echo(&mut stream, b"via lo");
}
