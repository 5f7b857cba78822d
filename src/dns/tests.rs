//! The DNS client against real servers on loopback: a `dnsmasq` each test starts (and stops,
//! by its pid) on 127.0.0.1 with a port of its own, and tiny fake servers (plain UDP sockets
//! the test answers from by hand) for what dnsmasq will not do: stay silent, send forged or
//! mismatched replies, fail. Each test drives the client with its own `mio::Poll`, as the
//! event loop will. No query leaves the machine: every nameserver is on 127.0.0.1.
//!
//! dnsmasq is required: without it these tests fail and say how to install it.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr, TcpListener, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use super::wire::build::{Response, read_query};
use super::wire::rcode::{NOERROR, REFUSED, SERVFAIL};
use super::wire::rtype::{A, AAAA};
use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn ips(list: &[&str]) -> Vec<IpAddr> {
    list.iter().map(|s| ip(s)).collect()
}

fn waiter(key: usize) -> Waiter {
    Waiter { key, conn: 1000 + key as u64 }
}

/// A directory of the test's own under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(what: &str) -> TempDir {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("socksloop-dns-{}-{what}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&path);
        std::fs::create_dir_all(&path).unwrap();
        TempDir(path)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn find_dnsmasq() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let dirs =
        std::env::split_paths(&path).chain(["/usr/sbin", "/sbin", "/usr/local/sbin"].map(PathBuf::from));
    for dir in dirs {
        let candidate = dir.join("dnsmasq");
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!(
        "dnsmasq not found (looked in PATH, /usr/sbin, /sbin, /usr/local/sbin): the DNS client's \
         tests need it; install it with `apt-get install dnsmasq-base` (.ci/run does)"
    );
}

/// A dnsmasq on 127.0.0.1 answering from its configuration only (no upstream, no hosts file),
/// logging every query to a file of its own. Killed by pid when dropped.
struct Dnsmasq {
    child: Child,
    addr: SocketAddr,
    log: PathBuf,
    _dir: TempDir,
}

impl Dnsmasq {
    /// Start one with `lines` as its configuration file (`host-record=…`, `local-ttl=…`).
    fn start(lines: &[&str]) -> Dnsmasq {
        let bin = find_dnsmasq();
        let dir = TempDir::new("dnsmasq");
        let conf = dir.path().join("dnsmasq.conf");
        std::fs::write(&conf, lines.join("\n") + "\n").unwrap();
        let log = dir.path().join("queries.log");
        // A port can be taken between finding it free and dnsmasq binding it: try a few.
        for _ in 0..5 {
            let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
            let mut command = Command::new(&bin);
            command
                .arg("--keep-in-foreground")
                .arg(format!("--port={}", addr.port()))
                .arg("--listen-address=127.0.0.1")
                .arg("--bind-interfaces")
                .arg("--no-resolv")
                .arg("--no-hosts")
                .arg("--log-queries")
                .arg(format!("--log-facility={}", log.display()))
                .arg("--pid-file=")
                .arg(format!("--conf-file={}", conf.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null());
            // As root it would switch to its own user, who may not write our log file.
            // SAFETY: geteuid has no preconditions and cannot fail.
            if unsafe { libc::geteuid() } == 0 {
                command.arg("--user=root");
            }
            let mut child = command.spawn().unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
            if answers_probe(&mut child, addr) {
                return Dnsmasq { child, addr, log, _dir: dir };
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start answering on loopback (5 ports tried)");
    }

    /// How many queries of `qtype` (`A`, `AAAA`) for `name` the log shows, waiting (at most
    /// 3 s) for at least `expected`, then a moment more so that an extra one would show too.
    fn queries(&self, qtype: &str, name: &str, expected: usize) -> usize {
        let count = || {
            let text = std::fs::read_to_string(&self.log).unwrap_or_default();
            let (query, auth) =
                (format!("]: query[{qtype}] {name} from "), format!("]: auth[{qtype}] {name} from "));
            text.lines().filter(|line| line.contains(&query) || line.contains(&auth)).count()
        };
        let deadline = Instant::now() + Duration::from_secs(3);
        while count() < expected && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        std::thread::sleep(Duration::from_millis(200));
        count()
    }
}

impl Drop for Dnsmasq {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port free for UDP and TCP right now.
fn free_port() -> u16 {
    for _ in 0..20 {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let port = udp.local_addr().unwrap().port();
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port for both UDP and TCP in 20 tries");
}

/// Wait (at most 5 s) until the server at `addr` answers a query for `probe.invalid`; false if
/// it exited (its port was taken) or never answered.
fn answers_probe(child: &mut Child, addr: SocketAddr) -> bool {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.set_read_timeout(Some(Duration::from_millis(100))).unwrap();
    let query = wire::build_query(7, &Question::new("probe.invalid", Family::V4).unwrap());
    let mut buf = [0u8; 512];
    for _ in 0..50 {
        if child.try_wait().ok().flatten().is_some() {
            return false;
        }
        let _ = socket.send_to(&query, addr);
        if let Ok((_, from)) = socket.recv_from(&mut buf)
            && from == addr
        {
            return true;
        }
    }
    false
}

/// The client under test and the `Poll` its sockets are registered with: a small event loop.
struct Loop {
    poll: mio::Poll,
    events: mio::Events,
    dns: DnsClient,
    /// Answers popped so far, by waiter and family.
    answers: HashMap<(Waiter, Family), Result<Vec<IpAddr>, DnsError>>,
}

impl Loop {
    fn new(config: DnsConfig) -> Loop {
        Loop {
            poll: mio::Poll::new().unwrap(),
            events: mio::Events::with_capacity(64),
            dns: DnsClient::new(config).unwrap(),
            answers: HashMap::new(),
        }
    }

    fn lookup(&mut self, name: &str, waiter: Waiter) {
        self.lookup_at(name, waiter, Instant::now());
    }

    fn lookup_at(&mut self, name: &str, waiter: Waiter, now: Instant) {
        self.dns.lookup(self.poll.registry(), name, waiter, now);
        self.collect();
    }

    fn collect(&mut self) {
        while let Some(answer) = self.dns.pop_answer() {
            let old = self.answers.insert((answer.waiter, answer.family), answer.result);
            assert!(old.is_none(), "a second answer for {:?} {:?}", answer.waiter, answer.family);
        }
    }

    /// One pass: poll until an event or the client's deadline (at most 50 ms), dispatch.
    fn turn(&mut self) {
        let now = Instant::now();
        let timeout = self.dns.next_deadline().map_or(Duration::from_millis(50), |at| {
            at.saturating_duration_since(now).min(Duration::from_millis(50))
        });
        self.poll.poll(&mut self.events, Some(timeout)).unwrap();
        let now = Instant::now();
        for event in self.events.iter() {
            let index = token::dns_index(event.token()).expect("only DNS sockets are registered");
            self.dns.on_ready(self.poll.registry(), index, now);
        }
        if self.dns.next_deadline().is_some_and(|at| at <= now) {
            self.dns.on_timer(self.poll.registry(), now);
        }
        self.collect();
    }

    /// Turn until `count` answers have arrived in all; fails after `limit`.
    fn run_until(&mut self, count: usize, limit: Duration) {
        let deadline = Instant::now() + limit;
        while self.answers.len() < count {
            assert!(
                Instant::now() < deadline,
                "{} of {count} answers in {limit:?}: {:?}",
                self.answers.len(),
                self.answers
            );
            self.turn();
        }
    }

    fn answer(&self, waiter: Waiter, family: Family) -> Result<Vec<IpAddr>, DnsError> {
        self.answers
            .get(&(waiter, family))
            .unwrap_or_else(|| panic!("no {family:?} answer for {waiter:?}"))
            .clone()
    }
}

/// A config asking `servers` with no hosts file.
fn config(servers: &[SocketAddr]) -> DnsConfig {
    DnsConfig { hosts_path: None, ..DnsConfig::new(servers.to_vec()) }
}

#[test]
fn answers_a_and_aaaa_then_from_the_cache() {
    // dnsmasq's own names have a TTL of 0 (never cached) unless `local-ttl` says otherwise.
    let dnsmasq = Dnsmasq::start(&[
        "local=/test/",
        "local-ttl=60",
        "host-record=both.test,192.0.2.10,2001:db8::10",
        "host-record=v4only.test,192.0.2.11",
    ]);
    let mut lp = Loop::new(config(&[dnsmasq.addr]));
    lp.lookup("both.test", waiter(1));
    lp.lookup("V4only.Test.", waiter(2));
    assert_eq!(lp.dns.stats().queries_sent, 4, "A and AAAA for each name, at once");
    lp.run_until(4, Duration::from_secs(5));
    assert_eq!(lp.answer(waiter(1), Family::V6), Ok(ips(&["2001:db8::10"])));
    assert_eq!(lp.answer(waiter(1), Family::V4), Ok(ips(&["192.0.2.10"])));
    assert_eq!(lp.answer(waiter(2), Family::V4), Ok(ips(&["192.0.2.11"])));
    assert_eq!(lp.answer(waiter(2), Family::V6), Ok(vec![]), "NODATA: no address of this family");

    // Asked again: both.test comes from the cache, at once.
    lp.lookup("both.test", waiter(3));
    assert_eq!(lp.answer(waiter(3), Family::V6), Ok(ips(&["2001:db8::10"])));
    assert_eq!(lp.answer(waiter(3), Family::V4), Ok(ips(&["192.0.2.10"])));
    let stats = lp.dns.stats();
    assert_eq!((stats.hits, stats.misses, stats.queries_sent), (2, 4, 4), "{stats:?}");
    assert_eq!((stats.in_flight, stats.ignored, stats.errors, stats.timeouts), (0, 0, 0, 0), "{stats:?}");
    assert_eq!(dnsmasq.queries("A", "both.test", 1), 1);
    assert_eq!(dnsmasq.queries("AAAA", "both.test", 1), 1);
}

#[test]
fn nxdomain_is_an_error_cached_for_the_soa_minimum() {
    // Authoritative for `test`, dnsmasq puts an SOA (minimum 7 s, `auth-ttl`) in negative replies.
    let dnsmasq = Dnsmasq::start(&[
        "auth-server=ns.test,127.0.0.1",
        "auth-zone=test",
        "auth-soa=1,hostmaster.test,1200,120,1209600",
        "auth-ttl=7",
        "host-record=exists.test,192.0.2.20",
    ]);
    let mut lp = Loop::new(config(&[dnsmasq.addr]));
    let t0 = Instant::now();
    lp.lookup_at("nx.test", waiter(1), t0);
    lp.run_until(2, Duration::from_secs(5));
    assert_eq!(lp.answer(waiter(1), Family::V4), Err(DnsError::NxDomain));
    assert_eq!(lp.answer(waiter(1), Family::V6), Err(DnsError::NxDomain));

    // Within the negative TTL the cache answers; after it, the server is asked again.
    lp.lookup_at("nx.test", waiter(2), t0 + Duration::from_secs(6));
    assert_eq!(lp.answer(waiter(2), Family::V4), Err(DnsError::NxDomain));
    assert_eq!(dnsmasq.queries("A", "nx.test", 1), 1, "the second lookup was a (negative) hit");
    lp.lookup_at("nx.test", waiter(3), t0 + Duration::from_secs(8));
    lp.run_until(6, Duration::from_secs(5));
    assert_eq!(lp.answer(waiter(3), Family::V6), Err(DnsError::NxDomain));
    assert_eq!(dnsmasq.queries("A", "nx.test", 2), 2);
    assert_eq!(dnsmasq.queries("AAAA", "nx.test", 2), 2);
    let stats = lp.dns.stats();
    assert_eq!((stats.nxdomain, stats.hits, stats.misses), (6, 2, 4), "{stats:?}");
}

#[test]
fn an_expired_ttl_asks_again() {
    let dnsmasq =
        Dnsmasq::start(&["local=/test/", "local-ttl=2", "host-record=ttl.test,192.0.2.30,2001:db8::30"]);
    let mut lp = Loop::new(config(&[dnsmasq.addr]));
    let t0 = Instant::now();
    lp.lookup_at("ttl.test", waiter(1), t0);
    lp.run_until(2, Duration::from_secs(5));
    lp.lookup_at("ttl.test", waiter(2), t0 + Duration::from_millis(1500));
    assert_eq!(lp.answers.len(), 4, "within the TTL: from the cache");
    assert_eq!(dnsmasq.queries("A", "ttl.test", 1), 1);
    // The clock is the caller's: 3 s later by it, the 2 s TTL is over.
    lp.lookup_at("ttl.test", waiter(3), t0 + Duration::from_secs(3));
    assert_eq!(lp.answers.len(), 4, "expired: nothing from the cache");
    lp.run_until(6, Duration::from_secs(5));
    assert_eq!(lp.answer(waiter(3), Family::V4), Ok(ips(&["192.0.2.30"])));
    assert_eq!(lp.answer(waiter(3), Family::V6), Ok(ips(&["2001:db8::30"])));
    assert_eq!(dnsmasq.queries("A", "ttl.test", 2), 2, "asked again once the TTL ran out");
    assert_eq!(dnsmasq.queries("AAAA", "ttl.test", 2), 2);
}

#[test]
fn a_hundred_concurrent_lookups_share_one_query_per_family() {
    let dnsmasq = Dnsmasq::start(&["local=/test/", "host-record=popular.test,192.0.2.40,2001:db8::40"]);
    let mut lp = Loop::new(config(&[dnsmasq.addr]));
    for key in 0..100 {
        lp.lookup(if key % 2 == 0 { "popular.test" } else { "POPULAR.test." }, waiter(key));
    }
    let stats = lp.dns.stats();
    assert_eq!((stats.queries_sent, stats.in_flight, stats.coalesced), (2, 2, 198), "{stats:?}");
    lp.run_until(200, Duration::from_secs(5));
    for key in 0..100 {
        assert_eq!(lp.answer(waiter(key), Family::V4), Ok(ips(&["192.0.2.40"])));
        assert_eq!(lp.answer(waiter(key), Family::V6), Ok(ips(&["2001:db8::40"])));
    }
    assert_eq!(dnsmasq.queries("A", "popular.test", 1), 1);
    assert_eq!(dnsmasq.queries("AAAA", "popular.test", 1), 1);
}

#[test]
fn a_truncated_answer_is_asked_again_over_tcp() {
    // 100 A records (1 600 bytes of answers) do not fit the 1 232 bytes the client offers.
    let records: Vec<String> = (1..=100).map(|i| format!("host-record=many.test,10.1.0.{i}")).collect();
    let mut lines = vec!["local=/test/"];
    lines.extend(records.iter().map(String::as_str));
    let dnsmasq = Dnsmasq::start(&lines);
    let mut lp = Loop::new(config(&[dnsmasq.addr]));
    lp.lookup("many.test", waiter(1));
    lp.run_until(2, Duration::from_secs(5));
    let v4 = lp.answer(waiter(1), Family::V4).expect("addresses over TCP");
    assert_eq!(v4.len(), cache::MAX_ADDRS, "every address came; the first MAX_ADDRS are kept");
    let all: Vec<IpAddr> = (1..=100).map(|i| IpAddr::from([10, 1, 0, i])).collect();
    assert!(v4.iter().all(|a| all.contains(a)), "{v4:?}");
    assert_eq!(lp.answer(waiter(1), Family::V6), Ok(vec![]));
    let stats = lp.dns.stats();
    assert_eq!((stats.tcp_retries, stats.queries_sent), (1, 3), "{stats:?}");
    assert_eq!(dnsmasq.queries("A", "many.test", 2), 2, "once over UDP (truncated), once over TCP");
}

#[test]
fn a_dead_first_nameserver_costs_one_timeout() {
    let dnsmasq = Dnsmasq::start(&["local=/test/", "host-record=alive.test,192.0.2.50,2001:db8::50"]);
    // Bound, so the kernel takes the queries and says nothing: a server that never answers.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut lp = Loop::new(config(&[dead.local_addr().unwrap(), dnsmasq.addr]));
    let started = Instant::now();
    lp.lookup("alive.test", waiter(1));
    lp.run_until(2, Duration::from_secs(5));
    let took = started.elapsed();
    assert_eq!(lp.answer(waiter(1), Family::V4), Ok(ips(&["192.0.2.50"])));
    assert_eq!(lp.answer(waiter(1), Family::V6), Ok(ips(&["2001:db8::50"])));
    assert!(took >= Duration::from_millis(900) && took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(lp.dns.stats().queries_sent, 4);
    // The dead server was asked first, once per family.
    dead.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 512];
    let mut asked = 0;
    while dead.recv_from(&mut buf).is_ok() {
        asked += 1;
    }
    assert_eq!(asked, 2);
}

#[test]
fn a_closed_port_moves_on_at_once_and_silence_everywhere_is_a_timeout() {
    let dnsmasq = Dnsmasq::start(&["local=/test/", "host-record=alive.test,192.0.2.51"]);
    // Nothing listens there: the ICMP port-unreachable ends that try without waiting.
    let closed = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut lp =
        Loop::new(DnsConfig { server_timeout: Duration::from_secs(3), ..config(&[closed, dnsmasq.addr]) });
    let started = Instant::now();
    lp.lookup("alive.test", waiter(1));
    lp.run_until(2, Duration::from_secs(5));
    assert_eq!(lp.answer(waiter(1), Family::V4), Ok(ips(&["192.0.2.51"])));
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());

    // Every server silent: each try times out, and the lookup with them.
    let dead = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut lp = Loop::new(DnsConfig {
        server_timeout: Duration::from_millis(200),
        attempts: 2,
        ..config(&[dead.local_addr().unwrap()])
    });
    let started = Instant::now();
    lp.lookup("alive.test", waiter(1));
    lp.run_until(2, Duration::from_secs(5));
    assert_eq!(lp.answer(waiter(1), Family::V4), Err(DnsError::Timeout));
    assert_eq!(lp.answer(waiter(1), Family::V6), Err(DnsError::Timeout));
    assert!(started.elapsed() >= Duration::from_millis(400), "two tries of 200 ms: {:?}", started.elapsed());
    let stats = lp.dns.stats();
    assert_eq!((stats.timeouts, stats.queries_sent, stats.in_flight), (2, 4, 0), "{stats:?}");
}

/// Read the queries waiting at a fake server: (id, name, type, from).
fn read_queries(server: &UdpSocket, count: usize) -> Vec<(u16, String, u16, SocketAddr)> {
    server.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 1500];
    (0..count)
        .map(|_| {
            let (n, from) = server.recv_from(&mut buf).expect("a query");
            let (id, name, rtype) = read_query(&buf[..n]).expect("one question");
            (id, name, rtype, from)
        })
        .collect()
}

#[test]
fn forged_and_mismatched_replies_are_ignored() {
    let fake = UdpSocket::bind("127.0.0.1:0").unwrap();
    let forger = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut lp = Loop::new(config(&[fake.local_addr().unwrap()]));
    lp.lookup("target.test", waiter(1));
    let evil = |rtype| if rtype == A { ip("203.0.113.66") } else { ip("2001:db8::666") };
    for (id, name, rtype, client) in read_queries(&fake, 2) {
        assert_eq!(name, "target.test.");
        let good = if rtype == A { ip("192.0.2.77") } else { ip("2001:db8::77") };
        let other = if rtype == A { AAAA } else { A };
        let reply = |id, qname: &str, qtype| Response::new(id, qname, qtype, NOERROR);
        let forged = [
            reply(id.wrapping_add(1), "target.test", rtype).ip("target.test", 3600, evil(rtype)).bytes(),
            reply(id, "other.test", rtype).ip("target.test", 3600, evil(rtype)).bytes(),
            reply(id, "target.test", other).ip("target.test", 3600, evil(rtype)).bytes(),
            b"\xff\x00 not a DNS message".to_vec(),
        ];
        // A flood first: more than one read budget, so the rest is read on a later pass.
        for _ in 0..query::UDP_BUDGET + 3 {
            fake.send_to(b"junk", client).unwrap();
        }
        for bytes in &forged {
            fake.send_to(bytes, client).unwrap();
        }
        // Right id and question, but from another address: the connected socket never sees it.
        forger
            .send_to(&reply(id, "target.test", rtype).ip("target.test", 3600, evil(rtype)).bytes(), client)
            .unwrap();
        fake.send_to(&reply(id, "target.test", rtype).ip("target.test", 60, good).bytes(), client).unwrap();
        // Too late: the query is over.
        fake.send_to(&reply(id, "target.test", rtype).ip("target.test", 3600, evil(rtype)).bytes(), client)
            .unwrap();
    }
    lp.run_until(2, Duration::from_secs(5));
    assert_eq!(lp.answer(waiter(1), Family::V4), Ok(ips(&["192.0.2.77"])));
    assert_eq!(lp.answer(waiter(1), Family::V6), Ok(ips(&["2001:db8::77"])));
    let ignored = 2 * (query::UDP_BUDGET + 3 + 4);
    assert_eq!(lp.dns.stats().ignored, ignored as u64, "the flood and four mismatched replies per family");
    // And the cache holds the real answer.
    lp.lookup("target.test", waiter(2));
    assert_eq!(lp.answer(waiter(2), Family::V4), Ok(ips(&["192.0.2.77"])));
    assert_eq!(lp.answer(waiter(2), Family::V6), Ok(ips(&["2001:db8::77"])));
}

#[test]
fn a_failing_server_hands_over_to_the_next_and_all_failing_is_an_error() {
    let failing = UdpSocket::bind("127.0.0.1:0").unwrap();
    let good = UdpSocket::bind("127.0.0.1:0").unwrap();
    good.set_nonblocking(true).unwrap();
    let mut lp = Loop::new(config(&[failing.local_addr().unwrap(), good.local_addr().unwrap()]));
    lp.lookup("flaky.test", waiter(1));
    for (id, _, rtype, client) in read_queries(&failing, 2) {
        let rcode = if rtype == A { SERVFAIL } else { REFUSED };
        failing.send_to(&Response::new(id, "flaky.test", rtype, rcode).bytes(), client).unwrap();
    }
    // The client moves on to the second server as soon as it reads the failures.
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut buf = [0u8; 1500];
    let mut answered = 0;
    while answered < 2 {
        assert!(Instant::now() < deadline, "the second server was not asked at once");
        lp.turn();
        while let Ok((n, client)) = good.recv_from(&mut buf) {
            let (id, _, rtype) = read_query(&buf[..n]).expect("one question");
            let addr = if rtype == A { ip("192.0.2.88") } else { ip("2001:db8::88") };
            let reply = Response::new(id, "flaky.test", rtype, NOERROR).ip("flaky.test", 60, addr);
            good.send_to(&reply.bytes(), client).unwrap();
            answered += 1;
        }
    }
    lp.run_until(2, Duration::from_secs(2));
    assert_eq!(lp.answer(waiter(1), Family::V4), Ok(ips(&["192.0.2.88"])));
    assert_eq!(lp.answer(waiter(1), Family::V6), Ok(ips(&["2001:db8::88"])));

    // Only failing servers: a server failure (more telling than the timeout it did not wait for).
    let mut lp = Loop::new(DnsConfig { attempts: 1, ..config(&[failing.local_addr().unwrap()]) });
    lp.lookup("broken.test", waiter(2));
    for (id, _, rtype, client) in read_queries(&failing, 2) {
        failing.send_to(&Response::new(id, "broken.test", rtype, SERVFAIL).bytes(), client).unwrap();
    }
    lp.run_until(2, Duration::from_secs(2));
    assert_eq!(lp.answer(waiter(2), Family::V4), Err(DnsError::ServerFailure));
    assert_eq!(lp.answer(waiter(2), Family::V6), Err(DnsError::ServerFailure));
    assert_eq!(lp.dns.stats().errors, 2);
}

#[test]
fn the_hosts_file_and_ip_literals_never_query() {
    let dir = TempDir::new("hosts");
    let hosts = dir.path().join("hosts");
    std::fs::write(
        &hosts,
        "# test hosts
192.0.2.5 hosted.test alias.test
2001:db8::5 hosted.test
",
    )
    .unwrap();
    // A nameserver that would notice any query.
    let watcher = UdpSocket::bind("127.0.0.1:0").unwrap();
    watcher.set_nonblocking(true).unwrap();
    let mut lp = Loop::new(DnsConfig { hosts_path: Some(hosts), ..config(&[watcher.local_addr().unwrap()]) });
    lp.lookup("HOSTED.test.", waiter(1));
    lp.lookup("alias.test", waiter(2));
    lp.lookup("192.0.2.9", waiter(3));
    lp.lookup("[2001:db8::9]", waiter(4));
    lp.lookup("bad..name", waiter(5));
    assert_eq!(lp.answer(waiter(1), Family::V4), Ok(ips(&["192.0.2.5"])));
    assert_eq!(lp.answer(waiter(1), Family::V6), Ok(ips(&["2001:db8::5"])));
    assert_eq!(
        lp.answer(waiter(2), Family::V6),
        Ok(vec![]),
        "the hosts file is the whole truth for its names"
    );
    assert_eq!(lp.answer(waiter(3), Family::V4), Ok(ips(&["192.0.2.9"])));
    assert_eq!(lp.answer(waiter(3), Family::V6), Ok(vec![]));
    assert_eq!(lp.answer(waiter(4), Family::V6), Ok(ips(&["2001:db8::9"])));
    assert_eq!(lp.answer(waiter(5), Family::V4), Err(DnsError::InvalidName));
    let stats = lp.dns.stats();
    assert_eq!((stats.queries_sent, stats.hits, stats.errors), (0, 8, 2), "{stats:?}");
    assert!(watcher.recv_from(&mut [0u8; 512]).is_err(), "no query reached the nameserver");

    // A missing hosts file is an empty one.
    let missing =
        DnsConfig { hosts_path: Some(dir.path().join("nope")), ..config(&[watcher.local_addr().unwrap()]) };
    assert!(DnsClient::new(missing).is_ok());
    assert!(DnsClient::new(config(&[])).is_err(), "no nameserver");
}

#[test]
fn a_forgotten_waiter_gets_nothing_but_its_answer_is_cached() {
    let dnsmasq = Dnsmasq::start(&["local=/test/", "local-ttl=60", "host-record=gone.test,192.0.2.60"]);
    let mut lp = Loop::new(config(&[dnsmasq.addr]));
    lp.lookup("gone.test", waiter(1));
    lp.dns.forget(waiter(1));
    let deadline = Instant::now() + Duration::from_secs(5);
    while lp.dns.stats().in_flight > 0 {
        assert!(Instant::now() < deadline, "the queries never finished");
        lp.turn();
    }
    assert!(lp.answers.is_empty(), "{:?}", lp.answers);
    lp.lookup("gone.test", waiter(2));
    assert_eq!(lp.answer(waiter(2), Family::V4), Ok(ips(&["192.0.2.60"])), "from the cache, at once");
    // dnsmasq's NODATA carries no SOA, so it was not cached (RFC 2308): asked again.
    lp.run_until(2, Duration::from_secs(5));
    assert_eq!(lp.answer(waiter(2), Family::V6), Ok(vec![]));
    let stats = lp.dns.stats();
    assert_eq!((stats.hits, stats.misses, stats.queries_sent), (1, 3, 3), "{stats:?}");
}
