//! Happy Eyeballs (RFC 8305) against addresses whose SYNs vanish, in a network namespace.
//!
//! `happy_eyeballs_in_a_network_namespace` re-runs this test binary (only the test
//! `in_namespace`) under `unshare --net --mount`. Inside, the namespace gets a veth pair with
//! both ends up, `198.18.0.1/24` and `2001:db8::1/64` on one end, and permanent neighbour
//! entries that send `198.18.0.99` and `2001:db8::99/98/97` to a MAC nobody has: SYNs to them
//! leave and vanish, with no RST and no ICMP, as on a host whose IPv6 is broken. A hosts file
//! bind-mounted over `/etc/hosts` (in the private mount namespace only) names the targets, so
//! the proxy's own `getaddrinfo` resolves them. Nothing leaves the namespace.
//!
//! Needs root (CI runs as root), `unshare` (util-linux) and `ip` (iproute2).

use std::net::{SocketAddr, TcpListener};
use std::time::{Duration, Instant};

use socksloop::config::PreferFamily;

use crate::support::netns::{self, sh};
use crate::support::*;

/// Set when this binary runs inside the namespace the outer test made.
const INSIDE: &str = "SOCKSLOOP_TEST_IN_NETNS";

#[test]
fn happy_eyeballs_in_a_network_namespace() {
    netns::run_inside(&["--net", "--mount"], "happy_eyeballs::in_namespace", INSIDE);
}

/// The black-holed network and the hosts file.
fn build_namespace() {
    sh(&["ip", "link", "set", "lo", "up"]);
    sh(&["ip", "link", "add", "he0", "type", "veth", "peer", "name", "he1"]);
    sh(&["ip", "link", "set", "he0", "up"]);
    sh(&["ip", "link", "set", "he1", "up"]);
    sh(&["ip", "addr", "add", "198.18.0.1/24", "dev", "he0"]);
    sh(&["ip", "-6", "addr", "add", "2001:db8::1/64", "dev", "he0", "nodad"]);
    // Permanent neighbour entries to a MAC nobody has: SYNs to these leave and vanish.
    for host in ["198.18.0.99", "2001:db8::99", "2001:db8::98", "2001:db8::97"] {
        let family = if host.contains(':') { "-6" } else { "-4" };
        sh(&[
            "ip",
            family,
            "neigh",
            "add",
            host,
            "lladdr",
            "02:00:00:00:00:99",
            "dev",
            "he0",
            "nud",
            "permanent",
        ]);
    }
    let hosts = std::env::temp_dir().join(format!("socksloop-he-hosts-{}", std::process::id()));
    std::fs::write(
        &hosts,
        "127.0.0.1 localhost\n\
         2001:db8::99 broken6.test\n127.0.0.1 broken6.test\n\
         2001:db8::99 three.test\n2001:db8::98 three.test\n198.18.0.99 three.test\n127.0.0.1 three.test\n\
         2001:db8::97 dead.test\n198.18.0.99 dead.test\n\
         127.0.0.1 v4only.test\n\
         ::1 refused6.test\n127.0.0.1 refused6.test\n",
    )
    .expect("write hosts file");
    sh(&["mount", "--bind", hosts.to_str().unwrap(), "/etc/hosts"]);
    // glibc sorts getaddrinfo's answers (RFC 6724); its precedence table, from gai.conf,
    // decides here, so every name resolves in the order its addresses are listed above.
    let gai = std::env::temp_dir().join(format!("socksloop-he-gai-{}", std::process::id()));
    std::fs::write(
        &gai,
        "precedence 2001:db8::99/128 100
precedence 2001:db8::98/128 90
precedence 2001:db8::97/128 85
         precedence ::1/128 80
precedence ::ffff:198.18.0.99/128 70
precedence ::ffff:127.0.0.1/128 60
         precedence ::/0 40
precedence ::ffff:0:0/96 35
",
    )
    .expect("write gai.conf");
    // A bind mount needs a file to cover; the host's /etc is never written (Debian's libc-bin
    // ships /etc/gai.conf).
    assert!(std::path::Path::new("/etc/gai.conf").exists(), "/etc/gai.conf is missing: nothing to bind over");
    sh(&["mount", "--bind", gai.to_str().unwrap(), "/etc/gai.conf"]);
}

/// CONNECT by name through `proxy`; the reply code and how long it took.
fn connect_by_name(proxy: SocketAddr, host: &str, port: u16) -> (u8, Duration) {
    let started = Instant::now();
    let (_stream, reply) = socks_request(proxy, CMD_CONNECT, &Dest::Domain(host.into(), port));
    (reply.code, started.elapsed())
}

#[test]
#[ignore = "run by happy_eyeballs_in_a_network_namespace, inside the namespace it makes"]
fn in_namespace() {
    assert!(std::env::var_os(INSIDE).is_some(), "run happy_eyeballs_in_a_network_namespace instead");
    build_namespace();
    let echo = echo_server("127.0.0.1:0");
    let port = echo.addr.port();
    // Nothing listens on [::1]:port (checked by binding it), so that address refuses at once.
    drop(TcpListener::bind(("::1", port)).expect("[::1]:port is free"));

    // The default attempt delay (250 ms), IPv6 first as a host with IPv6 would order it.
    let server = start_server_with(|c| {
        c.prefer_family = PreferFamily::Ipv6;
        c.connect_timeout = Duration::from_secs(3);
    });
    let proxy = proxy_addr(&server);

    let (code, took) = connect_by_name(proxy, "broken6.test", port);
    assert_eq!(code, REP_OK, "black-holed IPv6, then working IPv4");
    assert!(took < Duration::from_secs(1), "IPv4 after one attempt delay, not the connect timeout: {took:?}");
    println!("broken6.test: {took:?}");

    let (code, took) = connect_by_name(proxy, "three.test", port);
    assert_eq!(code, REP_OK, "three black holes, then the working address");
    assert!(took < Duration::from_secs(3), "three attempt delays, not three timeouts: {took:?}");
    assert!(took >= Duration::from_millis(3 * 250), "the working address was tried fourth: {took:?}");
    println!("three.test: {took:?}");

    let (code, took) = connect_by_name(proxy, "dead.test", port);
    assert_eq!(code, REP_TTL_EXPIRED, "every address silent: 06 at the connect timeout");
    assert!(took >= Duration::from_secs(3) && took < Duration::from_secs(10), "{took:?}");
    println!("dead.test: {took:?}");
    drop(server);

    // A long attempt delay: "at once" and "after the delay" are two seconds apart.
    let server = start_server_with(|c| {
        c.prefer_family = PreferFamily::Ipv6;
        c.connect_attempt_delay = Duration::from_secs(2);
    });
    let proxy = proxy_addr(&server);
    let (code, took) = connect_by_name(proxy, "v4only.test", port);
    assert_eq!(code, REP_OK);
    assert!(took < Duration::from_secs(1), "an IPv4-only name waits for no delay: {took:?}");
    println!("v4only.test: {took:?}");
    let (code, took) = connect_by_name(proxy, "refused6.test", port);
    assert_eq!(code, REP_OK, "a refused IPv6 falls back to IPv4");
    assert!(took < Duration::from_secs(1), "at once, not after the 2 s delay: {took:?}");
    println!("refused6.test: {took:?}");
}
