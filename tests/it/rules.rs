//! Who may use the proxy and where it may go: client allow-lists, egress rules checked after
//! resolution (`--block-private`, `--deny-port`, `--allow-dest`) for CONNECT and UDP,
//! `--bind-out`, and the refusal to run an open proxy.

use std::net::{Ipv4Addr, SocketAddr};

use crate::support::*;

#[test]
fn denied_client_is_closed_without_a_reply() {
    let server = start_server_with(|c| c.rules.allow_clients = vec!["10.0.0.0/8".parse().unwrap()]);
    let mut stream = tcp_connect(proxy_addr(&server));
    write_ignoring_errors(&mut stream, &[5, 1, 0]);
    expect_closed(&mut stream, "denied client");

    let allowed = start_server_with(|c| c.rules.allow_clients = vec!["127.0.0.0/8".parse().unwrap()]);
    let echo = echo_server("127.0.0.1:0");
    let (mut stream, _) = socks_connect(proxy_addr(&allowed), echo.addr);
    assert_echo(&mut stream, b"allowed");
}

#[test]
fn denied_destination_gets_02_for_literals_and_resolved_names() {
    let echo = echo_server("127.0.0.1:0");
    let port = echo.addr.port();
    let server = start_server_with(|c| c.rules.block_private = true);
    let proxy = proxy_addr(&server);
    for dest in
        [Dest::Ip(echo.addr), Dest::Domain("localhost".into(), port), Dest::Domain("127.0.0.1".into(), port)]
    {
        let (mut stream, reply) = socks_request(proxy, CMD_CONNECT, &dest);
        assert_eq!(reply.code, REP_NOT_ALLOWED, "{dest:?}");
        expect_closed(&mut stream, "after 02");
    }
    let mapped: SocketAddr = format!("[::ffff:127.0.0.1]:{port}").parse().unwrap();
    let (_, reply) = socks_request(proxy, CMD_CONNECT, &Dest::Ip(mapped));
    assert_eq!(reply.code, REP_NOT_ALLOWED, "IPv4-mapped loopback");

    let by_port = start_server_with(|c| c.rules.deny_ports = vec![port]);
    let (_, reply) = socks_request(proxy_addr(&by_port), CMD_CONNECT, &Dest::Ip(echo.addr));
    assert_eq!(reply.code, REP_NOT_ALLOWED, "denied port");

    // An allow entry opens one private address while --block-private stays on.
    let opened = start_server_with(|c| {
        c.rules.block_private = true;
        c.rules.allow_dest = vec!["127.0.0.1/32".parse().unwrap()];
    });
    let (mut stream, _) = socks_connect(proxy_addr(&opened), echo.addr);
    assert_echo(&mut stream, b"allowed by --allow-dest");
}

#[test]
fn udp_respects_egress_rules() {
    let server = start_server_with(|c| c.rules.block_private = true);
    let echo_port = udp_echo(b"echo:");
    let assoc = associate(proxy_addr(&server), true);
    let dest = Dest::Ip(SocketAddr::from((Ipv4Addr::LOCALHOST, echo_port)));
    assoc.udp.send_to(&udp_datagram(0, &dest, b"to a denied target"), assoc.relay).unwrap();
    assert_silent(&assoc.udp, "a datagram to a denied destination is dropped");
}

#[test]
fn bind_out_sets_the_source_address_and_bnd_addr() {
    let echo = echo_server("127.0.0.1:0");
    let server = start_server_with(|c| {
        c.bind_out = Some(socksloop::users::BindOut::Addr("127.0.0.2".parse().unwrap()))
    });
    let (mut stream, reply) = socks_connect(proxy_addr(&server), echo.addr);
    let seen = echo.next_peer();
    assert_eq!(seen.ip().to_string(), "127.0.0.2", "the target sees the --bind-out address");
    assert_eq!(reply.bound, Bound::Ip(seen), "BND.ADDR:PORT is the upstream socket's local address");
    assert_echo(&mut stream, b"via 127.0.0.2");
}

#[test]
fn non_loopback_listen_without_auth_refuses_to_start() {
    let mut command = bin();
    command.args(["--listen", "0.0.0.0:0"]).env_remove("SOCKSLOOP_USER").env_remove("SOCKSLOOP_PASS");
    let output = run_to_exit(command);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("open proxy") && stderr.contains("--allow-open-proxy"), "{stderr}");

    // With credentials from the environment it starts (and is stopped at once): it says it is
    // listening (ProxyProcess waits for that line) and is still running.
    let mut command = bin();
    command
        .args(["--listen", "0.0.0.0:0"])
        .env("SOCKSLOOP_USER", "env-user")
        .env("SOCKSLOOP_PASS", "env-pass");
    let mut proxy = ProxyProcess::from_command(command);
    assert!(proxy.child.try_wait().unwrap().is_none(), "should be running with auth configured");
}
