//! Prometheus metrics (`--metrics`): known traffic through the binary (CONNECTs with known
//! byte counts, a refused connect, a UDP association, a failed authentication), then a scrape
//! whose counters must equal it, checked by a real exposition-format checker (`promtool check
//! metrics`, from Debian's `prometheus` package; `.ci/run` installs it); the sums over two
//! workers; the HTTP side (404, 405, 400, HEAD, a request split across writes, the cap on
//! concurrent scrapes); a metrics address in use.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::support::*;

/// The binary with `--metrics 127.0.0.1:0` and `extra`; the metrics address from its log.
fn spawn_with_metrics(extra: &[&str]) -> (ProxyProcess, SocketAddr) {
    let mut args = vec!["--metrics", "127.0.0.1:0"];
    args.extend_from_slice(extra);
    let proxy = ProxyProcess::spawn(&args);
    assert!(
        proxy.wait_for_log("metrics on ", TIMEOUT),
        "no 'metrics on' line: {:?}",
        proxy.stderr.lock().unwrap()
    );
    let addr = proxy
        .stderr
        .lock()
        .unwrap()
        .iter()
        .find_map(|line| line.split("metrics on ").nth(1)?.split_whitespace().next()?.parse().ok())
        .expect("an address after 'metrics on'");
    (proxy, addr)
}

/// Send `request` (raw bytes) to the endpoint and read the whole response (it closes).
fn http(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = tcp_connect(addr);
    stream.write_all(request).unwrap();
    let response = read_to_close(&mut stream).expect("the endpoint answers and closes");
    String::from_utf8(response).expect("a UTF-8 response")
}

/// `GET /metrics`: the exposition, after checking the status line and headers.
fn scrape(addr: SocketAddr) -> String {
    let response = http(addr, b"GET /metrics HTTP/1.1\r\nHost: socksloop\r\nUser-Agent: it\r\n\r\n");
    let (head, body) = response.split_once("\r\n\r\n").expect("a head and a body");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n"), "{head}");
    assert!(head.contains("\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\n"), "{head}");
    assert!(head.contains(&format!("\r\nContent-Length: {}\r\n", body.len())), "{head}");
    assert!(head.ends_with("\r\nConnection: close"), "{head}");
    body.to_string()
}

/// Every sample of an exposition: `name{labels}` as written → value.
fn samples(text: &str) -> HashMap<String, f64> {
    text.lines()
        .filter(|line| !line.starts_with('#') && !line.is_empty())
        .map(|line| {
            let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("sample line {line:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                "-Inf" => f64::NEG_INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("value in {line:?}")),
            };
            (series.to_string(), value)
        })
        .collect()
}

/// The value of one series, which must be present.
fn get(samples: &HashMap<String, f64>, series: &str) -> f64 {
    *samples.get(series).unwrap_or_else(|| panic!("no series {series}"))
}

/// The sum over every series of a family whose labels contain `labels`.
fn sum_where(samples: &HashMap<String, f64>, family: &str, labels: &str) -> f64 {
    samples
        .iter()
        .filter(|(series, _)| series.starts_with(&format!("{family}{{")) && series.contains(labels))
        .map(|(_, value)| value)
        .sum()
}

/// `promtool check metrics` (the Prometheus project's own checker of the text format and its
/// naming conventions) must accept the exposition without a complaint.
fn promtool_check(text: &str) {
    let child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(child) => child,
        Err(e) => panic!(
            "promtool is needed to check the exposition format ({e}); it is in Debian's `prometheus` \
             package, which .ci/run unpacks: `apt-get download prometheus && dpkg-deb -x prometheus_*.deb DIR` \
             and put DIR/usr/bin/promtool on the PATH"
        ),
    };
    child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said =
        format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics: {}: {said}\n{text}",
        output.status
    );
}

/// Scrape until `done` holds for the samples (closes finish at the end of a loop pass, a
/// rejected client lingers until its FIN); the last scrape.
fn scrape_until(addr: SocketAddr, what: &str, done: impl Fn(&HashMap<String, f64>) -> bool) -> String {
    let mut last = String::new();
    let settled = poll_until(SETTLE, || {
        last = scrape(addr);
        done(&samples(&last)).then_some(())
    });
    assert!(settled.is_some(), "{what}; last scrape:\n{last}");
    last
}

const USER: &str = "metrics-user";
const PASS: &str = "metrics-pass";

/// Greet with username/password, authenticate, send `cmd` toward `dest`: the reply.
fn auth_request(proxy: SocketAddr, cmd: u8, dest: &Dest) -> (TcpStream, Reply) {
    let mut stream = tcp_connect(proxy);
    greet_userpass(&mut stream);
    assert_eq!(authenticate(&mut stream, USER, PASS), 0, "authentication");
    stream.write_all(&request_bytes(cmd, dest)).unwrap();
    let reply = read_reply(&mut stream).expect("reply");
    (stream, reply)
}

/// Send `len` bytes through a relay to an echo and read them back; then half-close and read
/// to the end, so the relay finishes both ways ("done").
fn echo_exactly(mut stream: TcpStream, seed: u64, len: usize) {
    let data = DataGen::bytes(seed, len);
    let mut writer = stream.try_clone().unwrap();
    let sent = data.clone();
    // A thread writes while this one reads: an echo of more than the socket buffers would
    // otherwise block both.
    let writing = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let back = read_to_close(&mut stream).expect("echo");
    writing.join().unwrap();
    assert!(back == data, "{len} bytes echoed intact (got {})", back.len());
}

#[test]
fn counters_equal_known_traffic_and_promtool_accepts_the_exposition() {
    let users = TempFile::new("metrics-users", &format!("{USER}:{PASS}\n"));
    let (proxy, metrics) = spawn_with_metrics(&["--auth-file", users.path()]);
    let echo = echo_server("127.0.0.1:0");
    let udp_port = udp_echo(b"echo:");

    // Before any traffic: every family is there, at zero.
    let idle = scrape(metrics);
    promtool_check(&idle);
    let before = samples(&idle);
    assert_eq!(get(&before, "socksloop_connections_accepted_total"), 0.0);
    assert_eq!(get(&before, r#"socksloop_requests_total{command="connect",reply="succeeded"}"#), 0.0);

    // Three CONNECTs with known byte counts through an echo target.
    let lens = [1_000usize, 65_537, 3 * MIB];
    for (i, &len) in lens.iter().enumerate() {
        let (stream, reply) = auth_request(proxy.addr, CMD_CONNECT, &echo.addr.into());
        assert_eq!(reply.code, REP_OK);
        echo_exactly(stream, i as u64, len);
    }
    let relayed: usize = lens.iter().sum();

    // One refused connect (05): nothing listens on that port.
    let closed_port = SocketAddr::from((Ipv4Addr::LOCALHOST, free_port()));
    let (mut refused, reply) = auth_request(proxy.addr, CMD_CONNECT, &closed_port.into());
    assert_eq!(reply.code, REP_REFUSED);
    expect_closed(&mut refused, "after 05");
    drop(refused);

    // One UDP association with 5 datagrams each way.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(TIMEOUT)).unwrap();
    let announced = Dest::Ip(udp.local_addr().unwrap());
    let (control, reply) = auth_request(proxy.addr, CMD_UDP_ASSOCIATE, &announced);
    assert_eq!(reply.code, REP_OK);
    let Bound::Ip(relay) = reply.bound else { panic!("relay address: {reply:?}") };
    let assoc = Association { control, udp, relay };
    let target = Dest::Ip(SocketAddr::from((Ipv4Addr::LOCALHOST, udp_port)));
    for i in 0..5 {
        let (_, payload) = round_trip(&assoc, &target, format!("datagram {i}").as_bytes());
        assert_eq!(payload, format!("echo:datagram {i}").as_bytes());
    }
    drop(assoc);

    // One failed authentication (01 01).
    let mut wrong = tcp_connect(proxy.addr);
    greet_userpass(&mut wrong);
    assert_eq!(authenticate(&mut wrong, USER, "not the password"), 1);
    expect_closed(&mut wrong, "after 01 01");
    drop(wrong);

    // Every connection closed: active back to 0, six closes.
    let text = scrape_until(metrics, "all six connections closed", |s| {
        get(s, "socksloop_connections_active") == 0.0
            && sum_where(s, "socksloop_closed_total", "reason=") == 6.0
    });
    promtool_check(&text);
    let s = samples(&text);
    let count = |series: &str| get(&s, series);
    assert_eq!(count("socksloop_connections_accepted_total"), 6.0);
    assert_eq!(count("socksloop_connections_denied_total"), 0.0);
    assert_eq!(
        count(r#"socksloop_relay_bytes_total{direction="up"}"#),
        relayed as f64,
        "bytes to the target"
    );
    assert_eq!(
        count(r#"socksloop_relay_bytes_total{direction="down"}"#),
        relayed as f64,
        "bytes to the client"
    );
    assert_eq!(count(r#"socksloop_udp_datagrams_total{direction="up"}"#), 5.0);
    assert_eq!(count(r#"socksloop_udp_datagrams_total{direction="down"}"#), 5.0);
    assert_eq!(count(r#"socksloop_requests_total{command="connect",reply="succeeded"}"#), 3.0);
    assert_eq!(count(r#"socksloop_requests_total{command="connect",reply="connection_refused"}"#), 1.0);
    assert_eq!(count(r#"socksloop_requests_total{command="udp_associate",reply="succeeded"}"#), 1.0);
    assert_eq!(sum_where(&s, "socksloop_requests_total", "command="), 5.0, "no other request counted");
    assert_eq!(count("socksloop_auth_failures_total"), 1.0);
    assert_eq!(count(r#"socksloop_closed_total{reason="done"}"#), 3.0, "the echoed relays ended both ways");
    assert_eq!(
        count(r#"socksloop_closed_total{reason="rejected"}"#),
        2.0,
        "the refused connect and the failed auth"
    );
    assert_eq!(count(r#"socksloop_closed_total{reason="udp_ended_by_client"}"#), 1.0);
    // Five requests were complete (the failed authentication never sent one); three connected.
    assert_eq!(count("socksloop_handshake_seconds_count"), 5.0);
    assert_eq!(count(r#"socksloop_handshake_seconds_bucket{le="+Inf"}"#), 5.0);
    assert_eq!(count("socksloop_connect_seconds_count"), 3.0);
    assert!(count("socksloop_connect_seconds_sum") < 30.0);
    // IP literals only: no lookup.
    assert_eq!(sum_where(&s, "socksloop_dns_lookups_total", "result="), 0.0);
    assert!(!s.contains_key("socksloop_dns_cache_hits_total"), "no in-loop DNS client without --nameserver");

    // The process metrics describe the proxy process.
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs_f64();
    let started = count("process_start_time_seconds");
    assert!(started <= now + 1.0 && started > now - 600.0, "started {started}, now {now}");
    let rss = count("process_resident_memory_bytes");
    assert!(rss > 0.0 && rss < 1e9, "{rss}");
    let open = count("process_open_fds");
    // The scrape's own socket is open while it is answered, and nothing else is in flight.
    // Every descriptor counts here, the splice relay's pooled pipes included.
    settled_fd_count(proxy.pid());
    let fds = fd_count(proxy.pid()) as f64;
    assert!((open - (fds + 1.0)).abs() <= 1.0, "process_open_fds {open}, /proc says {fds} when idle");
    assert_eq!(count("process_max_fds"), nofile_limits(proxy.pid()).0.parse::<f64>().unwrap());
    assert!(count("process_cpu_seconds_total") >= 0.0);
}

#[test]
fn two_workers_are_summed() {
    let (proxy, metrics) = spawn_with_metrics(&["--workers", "2", "--log-level", "info"]);
    let echo = echo_server("127.0.0.1:0");
    let lens: Vec<usize> = (0..24).map(|i| 1 + i * 1_000).collect();
    for (i, &len) in lens.iter().enumerate() {
        let (stream, _) = socks_connect(proxy.addr, echo.addr);
        echo_exactly(stream, 100 + i as u64, len);
    }
    let text = scrape_until(metrics, "24 relays closed", |s| {
        get(s, r#"socksloop_closed_total{reason="done"}"#) == 24.0
            && get(s, "socksloop_connections_active") == 0.0
    });
    promtool_check(&text);
    let s = samples(&text);
    let total: usize = lens.iter().sum();
    assert_eq!(get(&s, "socksloop_connections_accepted_total"), 24.0);
    assert_eq!(get(&s, r#"socksloop_requests_total{command="connect",reply="succeeded"}"#), 24.0);
    assert_eq!(get(&s, r#"socksloop_relay_bytes_total{direction="up"}"#), total as f64);
    assert_eq!(get(&s, r#"socksloop_relay_bytes_total{direction="down"}"#), total as f64);
    assert_eq!(get(&s, "socksloop_handshake_seconds_count"), 24.0);
    // The sums above cover both workers only if both served some: connection ids interleave
    // by worker (worker 0 odd, worker 1 even), and the finish lines name them.
    let finished = || -> Vec<u64> {
        proxy
            .stderr
            .lock()
            .unwrap()
            .iter()
            .filter(|line| line.contains(" reply "))
            .filter_map(|line| line.split("conn ").nth(1)?.split(':').next()?.parse().ok())
            .collect()
    };
    // The counters move before the line is written: wait for the lines.
    let ids = poll_until(SETTLE, || Some(finished()).filter(|ids| ids.len() == 24))
        .unwrap_or_else(|| panic!("one finish line per connection: {:?}", finished()));
    assert!(
        ids.iter().any(|id| id % 2 == 1) && ids.iter().any(|id| id % 2 == 0),
        "both workers served: {ids:?}"
    );
}

#[test]
fn other_paths_methods_and_garbage_get_404_405_400() {
    let (_proxy, metrics) = spawn_with_metrics(&[]);
    let status = |request: &[u8]| -> String {
        let response = http(metrics, request);
        let line = response.lines().next().unwrap_or_default().to_string();
        assert!(response.contains("\r\nConnection: close\r\n"), "{response}");
        line
    };
    assert_eq!(status(b"GET / HTTP/1.1\r\n\r\n"), "HTTP/1.1 404 Not Found");
    assert_eq!(status(b"GET /metricsx HTTP/1.0\r\n\r\n"), "HTTP/1.1 404 Not Found");
    assert_eq!(
        status(b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi"),
        "HTTP/1.1 405 Method Not Allowed"
    );
    assert_eq!(status(b"\x05\x01\x00"), "HTTP/1.1 400 Bad Request", "a SOCKS greeting is no HTTP");
    assert_eq!(status(b"GET /metrics HTTP/2.0\r\n\r\n"), "HTTP/1.1 400 Bad Request");
    let mut too_long = b"GET /metrics HTTP/1.1\r\n".to_vec();
    too_long.extend(std::iter::repeat_n(b'a', 8192));
    assert_eq!(status(&too_long), "HTTP/1.1 400 Bad Request", "a head over 4 KiB");
    // HEAD: the headers of GET, no body.
    let head = http(metrics, b"HEAD /metrics?x=1 HTTP/1.1\r\n\r\n");
    assert!(head.starts_with("HTTP/1.1 200 OK\r\n") && head.ends_with("\r\n\r\n"), "{head}");
    assert!(!head.contains("Content-Length: 0\r\n"), "{head}");
}

#[test]
fn a_request_split_across_writes_is_answered() {
    let (_proxy, metrics) = spawn_with_metrics(&[]);
    let mut stream = tcp_connect(metrics);
    for part in [&b"GE"[..], b"T /met", b"rics HTTP/1.1\r", b"\nHost: x\r\n", b"\r", b"\n"] {
        assert!(
            nothing_arrives(&mut stream, Duration::from_millis(50)),
            "answered before the head was complete"
        );
        stream.write_all(part).unwrap();
    }
    let response = String::from_utf8(read_to_close(&mut stream).unwrap()).unwrap();
    assert!(response.starts_with("HTTP/1.1 200 OK\r\n"), "{response}");
    promtool_check(response.split_once("\r\n\r\n").unwrap().1);
}

#[test]
fn concurrent_scrapes_are_capped_and_the_endpoint_recovers() {
    let (mut proxy, metrics) = spawn_with_metrics(&[]);
    // Sixteen scrapers that never send a request hold every slot ...
    let idle: Vec<TcpStream> = (0..16).map(|_| tcp_connect(metrics)).collect();
    // ... (each is accepted: the proxy holds its connection) ...
    let held = poll_until(SETTLE, || {
        idle.iter().all(|s| holds_connection_from(proxy.pid(), s.local_addr().unwrap())).then_some(())
    });
    assert!(held.is_some(), "the sixteen idle scrapers are accepted");
    // ... so the seventeenth is closed at once, unanswered.
    let mut extra = tcp_connect(metrics);
    let _ = extra.write_all(b"GET /metrics HTTP/1.1\r\n\r\n");
    let mut buf = Vec::new();
    let closed = match extra.read_to_end(&mut buf) {
        Ok(_) => buf.is_empty(),
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    };
    assert!(closed, "a scrape beyond the cap is closed unanswered: {:?}", String::from_utf8_lossy(&buf));
    // The SOCKS side is not affected.
    let echo = echo_server("127.0.0.1:0");
    assert_serves(proxy.addr, &echo, "the scrape cap");
    // When the idle scrapers go, scraping works again.
    drop(idle);
    let ok = poll_until(SETTLE, || {
        let mut stream = tcp_connect(metrics);
        stream.write_all(b"GET /metrics HTTP/1.0\r\n\r\n").ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).ok()?;
        response.starts_with(b"HTTP/1.1 200 OK").then_some(())
    });
    assert!(ok.is_some(), "scrapes are served again");
    assert_alive(&mut proxy, "the scrape cap");
}

#[test]
fn a_metrics_address_in_use_stops_the_start() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let mut command = bin();
    command.args(["--listen", "127.0.0.1:0", "--metrics", &addr]);
    let output = run_to_exit(command);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("cannot serve metrics on {addr}: address already in use")), "{stderr}");
}

#[test]
fn per_user_series_count_each_users_connections_and_bytes() {
    // A name with a quote and a backslash: the label value must be escaped for promtool.
    let file = TempFile::new(
        "metrics-users.toml",
        "[[users]]\nname = \"alice\"\npassword = \"a-pw\"\n\n\
         [[users]]\nname = 'we\"ird\\name'\npassword = \"w-pw\"\nmax-connections = 1\n",
    );
    let (proxy, metrics) = spawn_with_metrics(&["--config", file.path(), "--workers", "2"]);
    let echo = echo_server("127.0.0.1:0");
    let login = |user: &str, pass: &str| {
        let mut stream = tcp_connect(proxy.addr);
        greet_userpass(&mut stream);
        assert_eq!(authenticate(&mut stream, user, pass), 0, "{user}");
        stream.write_all(&request_bytes(CMD_CONNECT, &Dest::Ip(echo.addr))).unwrap();
        let reply = read_reply(&mut stream).expect("reply");
        (stream, reply.code)
    };
    for (i, len) in [1_000usize, 20_000].into_iter().enumerate() {
        let (stream, code) = login("alice", "a-pw");
        assert_eq!(code, REP_OK);
        echo_exactly(stream, 300 + i as u64, len);
    }
    let (weird, code) = login("we\"ird\\name", "w-pw");
    assert_eq!(code, REP_OK);
    let (_, code) = login("we\"ird\\name", "w-pw");
    assert_eq!(code, REP_NOT_ALLOWED, "over max-connections: not counted as served");
    let alice = r#"user="alice""#;
    let text = scrape_until(metrics, "alice's relays closed and weird's open", |s| {
        get(s, &format!("socksloop_user_relay_bytes_total{{{alice},direction=\"down\"}}")) == 21_000.0
            && get(s, r#"socksloop_user_connections_active{user="we\"ird\\name"}"#) == 1.0
    });
    promtool_check(&text);
    let s = samples(&text);
    assert_eq!(get(&s, &format!("socksloop_user_connections_total{{{alice}}}")), 2.0);
    assert_eq!(get(&s, &format!("socksloop_user_connections_active{{{alice}}}")), 0.0);
    assert_eq!(get(&s, &format!("socksloop_user_relay_bytes_total{{{alice},direction=\"up\"}}")), 21_000.0);
    assert_eq!(get(&s, r#"socksloop_user_connections_total{user="we\"ird\\name"}"#), 1.0);
    drop(weird);
}
