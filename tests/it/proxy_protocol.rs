//! The PROXY protocol behind a real HAProxy (Debian's `haproxy`, started by the test on
//! loopback and stopped by its PID): `send-proxy` (v1) and `send-proxy-v2`, the real client's
//! address in the log and for `--allow-client`, a v2 LOCAL health check that HAProxy sees
//! pass (it then speaks SOCKS on that connection), a forged header from an unlisted peer, and
//! a listed peer without a header.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};

use crate::support::*;

/// A running HAProxy, stopped when dropped.
struct Haproxy {
    child: Child,
    /// Frontends: (v1, v2).
    v1: SocketAddr,
    v2: SocketAddr,
    stats: TempFile,
    _config: TempFile,
}

impl Haproxy {
    /// Two frontends in front of `socks`: one with `send-proxy`, one with `send-proxy-v2`;
    /// the v2 backend's health check sends a LOCAL header, then a SOCKS greeting, and
    /// expects the method selection back.
    fn start(socks: SocketAddr) -> Haproxy {
        let (v1, v2) = (free_port(), free_port());
        // Named by the port: tests that start HAProxy run in parallel in one process, and a
        // shared name let one test's config replace the other's.
        let stats = TempFile::new(&format!("haproxy-{v1}-stats.sock"), "");
        std::fs::remove_file(stats.path()).unwrap();
        let config = TempFile::new(
            &format!("haproxy-{v1}.cfg"),
            &format!(
                "global\n  stats socket {stats} mode 600 level admin\n\
                 defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 30s\n  timeout server 30s\n\
                 frontend v1\n  bind 127.0.0.1:{v1}\n  default_backend b1\n\
                 backend b1\n  server s1 {socks} send-proxy\n\
                 frontend v2\n  bind 127.0.0.1:{v2}\n  default_backend b2\n\
                 backend b2\n  option tcp-check\n  tcp-check send-binary 050100\n  tcp-check expect binary 0500\n\
                 \x20 server s2 {socks} send-proxy-v2 check inter 200ms rise 1 check-send-proxy\n",
                stats = stats.path()
            ),
        );
        let child = Command::new("haproxy")
            .args(["-db", "-f", config.path()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start haproxy (apt-get install haproxy; .ci/run installs it)");
        let haproxy = Haproxy {
            child,
            v1: SocketAddr::from((Ipv4Addr::LOCALHOST, v1)),
            v2: SocketAddr::from((Ipv4Addr::LOCALHOST, v2)),
            stats,
            _config: config,
        };
        for addr in [haproxy.v1, haproxy.v2] {
            poll_until(TIMEOUT, || std::net::TcpStream::connect(addr).ok()).expect("haproxy listens");
        }
        haproxy
    }

    /// The server's status as HAProxy's stats socket shows it ("UP", "DOWN", ...).
    fn server_status(&self, backend: &str, server: &str) -> Option<String> {
        let mut socket = UnixStream::connect(self.stats.path()).ok()?;
        socket.set_read_timeout(Some(TIMEOUT)).unwrap();
        socket.write_all(b"show stat\n").ok()?;
        let mut csv = String::new();
        socket.read_to_string(&mut csv).ok()?;
        // # pxname,svname,qcur,...,status(18th) ...
        csv.lines().find_map(|line| {
            let fields: Vec<&str> = line.split(',').collect();
            (fields.first() == Some(&backend) && fields.get(1) == Some(&server))
                .then(|| fields[17].to_string())
        })
    }
}

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The proxy's finish line for a connection from `client`, within the time limit.
fn finish_line_from(proxy: &ProxyProcess, client: SocketAddr) -> Option<String> {
    let needle = format!(": {client} -> ");
    poll_until(TIMEOUT, || proxy.stderr.lock().unwrap().iter().find(|l| l.contains(&needle)).cloned())
}

#[test]
fn haproxy_v1_and_v2_pass_the_real_client_which_allow_client_then_judges() {
    let echo = echo_server("127.0.0.1:0");
    let proxy = ProxyProcess::spawn(&["--proxy-protocol", "127.0.0.1/32", "--allow-client", "127.0.0.2/32"]);
    let haproxy = Haproxy::start(proxy.addr);
    for frontend in [haproxy.v1, haproxy.v2] {
        // From 127.0.0.2: served, and logged as 127.0.0.2 though it arrived from HAProxy.
        let mut client = connect_from(Ipv4Addr::new(127, 0, 0, 2), frontend);
        let local = client.local_addr().unwrap();
        greet(&mut client);
        client.write_all(&request_bytes(CMD_CONNECT, &Dest::Ip(echo.addr))).unwrap();
        assert_eq!(read_reply(&mut client).unwrap().code, REP_OK, "through {frontend}");
        assert_echo(&mut client, b"through haproxy");
        drop(client);
        let line = finish_line_from(&proxy, local)
            .unwrap_or_else(|| panic!("no log line for {local}: {:?}", proxy.stderr.lock().unwrap()));
        assert!(line.contains(&echo.addr.to_string()), "{line}");

        // From 127.0.0.3: HAProxy's address is listed, but the client it names is not allowed.
        let mut refused = connect_from(Ipv4Addr::new(127, 0, 0, 3), frontend);
        let local = refused.local_addr().unwrap();
        let _ = refused.write_all(&greeting_bytes());
        expect_closed(&mut refused, "a client outside --allow-client, behind HAProxy");
        let line = finish_line_from(&proxy, local).expect("the refusal is logged with the real client");
        assert!(line.contains("client not allowed"), "{line}");
    }
}

#[test]
fn haproxy_v2_local_health_checks_pass() {
    let proxy = ProxyProcess::spawn(&["--proxy-protocol", "127.0.0.1/32", "--allow-client", "127.0.0.2/32"]);
    let haproxy = Haproxy::start(proxy.addr);
    // The check sends a LOCAL header, then a SOCKS greeting, and expects 05 00: "UP" means the
    // LOCAL header was accepted and the connection went on as the balancer's own.
    let status = poll_until(TIMEOUT, || haproxy.server_status("b2", "s2").filter(|s| s == "UP"));
    assert_eq!(status.as_deref(), Some("UP"), "last: {:?}", haproxy.server_status("b2", "s2"));
}

#[test]
fn forged_headers_are_not_believed_and_a_balancer_must_send_one() {
    let proxy = ProxyProcess::spawn(&["--proxy-protocol", "127.0.0.1/32"]);
    // An unlisted peer (127.0.0.4) sends a header claiming to be 127.0.0.2: those bytes are
    // not SOCKS, so the connection is closed, and the log names the real peer.
    let mut forger = connect_from(Ipv4Addr::new(127, 0, 0, 4), proxy.addr);
    let local = forger.local_addr().unwrap();
    forger.write_all(b"PROXY TCP4 127.0.0.2 127.0.0.1 40000 1080\r\n\x05\x01\x00").unwrap();
    expect_closed(&mut forger, "a forged PROXY header from an unlisted peer");
    let line = finish_line_from(&proxy, local).expect("logged under its real address");
    assert!(line.contains("not SOCKS"), "{line}");
    assert!(
        !proxy.stderr.lock().unwrap().iter().any(|l| l.contains("127.0.0.2:40000")),
        "the claim was believed"
    );

    // A listed peer (127.0.0.1) that starts with SOCKS instead of a header is closed.
    let mut bare = tcp_connect(proxy.addr);
    let local = bare.local_addr().unwrap();
    bare.write_all(&greeting_bytes()).unwrap();
    expect_closed(&mut bare, "a listed balancer without a header");
    let line = finish_line_from(&proxy, local).expect("logged");
    assert!(line.contains("bad PROXY header"), "{line}");
}
