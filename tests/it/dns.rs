//! The in-loop DNS client end to end (`--nameserver`): the proxy asks a real dnsmasq that the
//! test starts on 127.0.0.1 (a port of its own; stopped by its PID), and the test reads
//! dnsmasq's query log to count what was asked. The client's own behaviour against dnsmasq
//! and forged servers (truncation, spoofing, TTLs, every failure) is tested beside it, in
//! `src/dns/tests.rs`; here: CONNECT and UDP by name through the proxy, NXDOMAIN as reply 04,
//! many clients sharing one query, /etc/hosts first, a dead first nameserver.

use std::net::{SocketAddr, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::*;

/// A dnsmasq answering from its config file only, logging every query.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    log: TempFile,
    _conf: TempFile,
}

impl Dnsmasq {
    fn start(name: &str, records: &[&str]) -> Dnsmasq {
        let bin = ["/usr/sbin/dnsmasq", "/sbin/dnsmasq", "/usr/local/sbin/dnsmasq"]
            .into_iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .expect("dnsmasq not found: apt-get install dnsmasq-base (.ci/run does)");
        let conf = TempFile::new(&format!("dnsmasq-{name}.conf"), &(records.join("\n") + "\n"));
        let log = TempFile::new(&format!("dnsmasq-{name}.log"), "");
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut command = Command::new(&bin);
            command
                .args(["--keep-in-foreground", "--listen-address=127.0.0.1", "--bind-interfaces"])
                .args(["--no-resolv", "--no-hosts", "--log-queries", "--pid-file="])
                .arg(format!("--port={}", addr.port()))
                .arg(format!("--log-facility={}", log.path()))
                .arg(format!("--conf-file={}", conf.path()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } == 0 {
                command.arg("--user=root"); // so it can still write the log file
            }
            let mut child = command.spawn().expect("start dnsmasq");
            let listening = poll_until(Duration::from_secs(5), || {
                if child.try_wait().ok().flatten().is_some() {
                    return Some(false); // the port was taken: try another
                }
                std::fs::read_to_string(log.path()).ok().filter(|l| l.contains("started")).map(|_| true)
            });
            if listening == Some(true) {
                return Dnsmasq { child, addr, log, _conf: conf };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start on loopback");
    }

    /// Queries of `qtype` for `name` in the log so far (after a moment for stragglers).
    fn queries(&self, qtype: &str, name: &str) -> usize {
        std::thread::sleep(Duration::from_millis(200));
        let needle = format!("query[{qtype}] {name} from");
        std::fs::read_to_string(self.log.path())
            .unwrap_or_default()
            .lines()
            .filter(|l| l.contains(&needle))
            .count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn proxy_asking(nameservers: &[SocketAddr]) -> socksloop::Server {
    start_server_with(|c| c.nameservers = nameservers.to_vec())
}

#[test]
fn connect_by_name_through_the_in_loop_resolver_and_nxdomain_is_04() {
    let dns = Dnsmasq::start("connect", &["host-record=echo.test,127.0.0.1", "local=/test/"]);
    let echo = echo_server("127.0.0.1:0");
    let server = proxy_asking(&[dns.addr]);
    let proxy = proxy_addr(&server);
    let (mut stream, _) = socks_connect(proxy, Dest::Domain("echo.test".into(), echo.addr.port()));
    assert_echo(&mut stream, b"resolved in the loop");
    assert_eq!(dns.queries("A", "echo.test"), 1);
    assert_eq!(dns.queries("AAAA", "echo.test"), 1, "A and AAAA are both asked");

    let (_, reply) = socks_request(proxy, CMD_CONNECT, &Dest::Domain("missing.test".into(), 80));
    assert_eq!(reply.code, REP_HOST_UNREACHABLE, "NXDOMAIN");
}

#[test]
fn a_hundred_clients_share_one_query_and_the_cache() {
    // Both families have records: positive answers are cached for their TTL. (A NODATA answer
    // without an SOA may not be cached, RFC 2308, and dnsmasq's local records carry none.)
    let dns = Dnsmasq::start("coalesce", &["host-record=many.test,127.0.0.1,::1", "local-ttl=300"]);
    let echo = echo_server("127.0.0.1:0");
    let server = proxy_asking(&[dns.addr]);
    let proxy = proxy_addr(&server);
    let port = echo.addr.port();
    let clients: Vec<_> = (0..100)
        .map(|_| {
            std::thread::spawn(move || {
                let (mut stream, _) = socks_connect(proxy, Dest::Domain("many.test".into(), port));
                assert_echo(&mut stream, b"one of a hundred");
            })
        })
        .collect();
    for client in clients {
        client.join().expect("every client served");
    }
    assert_eq!(dns.queries("A", "many.test"), 1, "one A query for 100 clients");
    assert_eq!(dns.queries("AAAA", "many.test"), 1, "one AAAA query for 100 clients");
}

#[test]
fn the_hosts_file_is_read_first_and_a_dead_nameserver_is_skipped() {
    let dns = Dnsmasq::start("dead-first", &["host-record=alive.test,127.0.0.1"]);
    // A nameserver that never answers: a bound socket nobody reads.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let echo = echo_server("127.0.0.1:0");
    let server = proxy_asking(&[dead.local_addr().unwrap(), dns.addr]);
    let proxy = proxy_addr(&server);
    let started = Instant::now();
    let (mut stream, _) = socks_connect(proxy, Dest::Domain("alive.test".into(), echo.addr.port()));
    assert_echo(&mut stream, b"second nameserver");
    assert!(started.elapsed() < Duration::from_secs(5), "within a few seconds: {:?}", started.elapsed());
    // `localhost` is in /etc/hosts: answered without a query.
    let (mut stream, _) = socks_connect(proxy, Dest::Domain("localhost".into(), echo.addr.port()));
    assert_echo(&mut stream, b"from the hosts file");
    assert_eq!(dns.queries("A", "localhost"), 0);
}

#[test]
fn udp_datagrams_to_a_name_use_the_in_loop_resolver() {
    let dns = Dnsmasq::start("udp", &["host-record=udp.test,127.0.0.1"]);
    let echo_port = udp_echo(b"echo:");
    let server = proxy_asking(&[dns.addr]);
    let assoc = associate(proxy_addr(&server), true);
    let (_, payload) = round_trip(&assoc, &Dest::Domain("udp.test".into(), echo_port), b"by name");
    assert_eq!(payload, b"echo:by name");
    assert_eq!(dns.queries("A", "udp.test"), 1);
}
