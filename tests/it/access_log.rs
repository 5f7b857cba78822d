//! The access log: with `--log-format json`, one JSON object per finished connection on
//! stdout, every field checked (parsed by Python's `json`, not by our code) for a CONNECT with
//! known bytes, a refused connect, a UDP association, and an authenticated (and a refused)
//! user. And logging that never stalls the loop: 500 clients are served while nobody reads the
//! proxy's output, and the lines it had to drop are reported once the output flows again.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::support::*;

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as i64
}

/// Send `len` bytes through `stream` (from another thread), half-close, and read everything
/// the echo sends back until its FIN: both directions end with a FIN, reason "done".
fn echo_exactly(stream: &mut std::net::TcpStream, len: usize) {
    let payload = DataGen::bytes(7, len);
    let mut writer = stream.try_clone().unwrap();
    let sent = payload.clone();
    let send = thread::spawn(move || {
        writer.write_all(&sent).unwrap();
        writer.shutdown(Shutdown::Write).unwrap();
    });
    let back = read_to_close(stream).expect("echo until its FIN");
    send.join().unwrap();
    assert!(back == payload, "the echo returned {} of {len} bytes, or other bytes", back.len());
}

/// The record of a connection that took place between `before` and `after` (ms since the
/// epoch): the timestamp lies in between, and the duration fits in it.
fn assert_timed(record: &AccessRecord, before: i64, after: i64) {
    assert!((before..=after).contains(&record.ts_ms), "ts {} not in [{before}, {after}]", record.ts_ms);
    let duration = record.number("duration_ms");
    assert!(duration > 0.0 && duration <= (after - before) as f64 + 1.0, "duration_ms {duration}");
}

#[test]
fn json_connect_with_known_bytes() {
    let echo = echo_server("127.0.0.1:0");
    let proxy = ProxyProcess::spawn(&["--log-format", "json"]);
    let before = now_ms();
    let (mut stream, _) = socks_connect(proxy.addr, echo.addr);
    let client = stream.local_addr().unwrap();
    // The echo sees the proxy's side of the outbound connection: the egress address.
    let egress = echo.next_peer();
    echo_exactly(&mut stream, 54_321);
    drop(stream);
    let record = access_record_for(&proxy, client);
    let after = now_ms();

    assert_eq!(record.keys, ACCESS_KEYS, "exactly these keys, in this order");
    assert_eq!(record.int("conn"), 1, "the proxy's first connection");
    assert_eq!(record.str("client"), Some(client.to_string()));
    assert_eq!(record.str("user"), None);
    assert_eq!(record.str("command").as_deref(), Some("connect"));
    assert_eq!(record.str("target"), Some(echo.addr.to_string()));
    assert_eq!(record.str("connected"), Some(echo.addr.to_string()));
    assert_eq!(record.str("local"), Some(egress.to_string()));
    assert!(egress.ip().is_loopback() && egress.port() != 0, "{egress}");
    assert_eq!(record.str("reply").as_deref(), Some("succeeded"));
    assert_eq!(record.int("bytes_up"), 54_321);
    assert_eq!(record.int("bytes_down"), 54_321);
    assert_eq!(record.str("reason").as_deref(), Some("done"));
    assert_timed(&record, before, after);
    // Diagnostics stay text on stderr; stdout carries only access records.
    assert!(proxy.stderr.lock().unwrap().iter().any(|l| l.contains(" INFO  [socksloop] listening on ")));
    assert!(proxy.stderr.lock().unwrap().iter().all(|l| !l.contains("\"conn\"")));
}

#[test]
fn json_refused_connect() {
    let proxy = ProxyProcess::spawn(&["--log-format", "json"]);
    let closed = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let before = now_ms();
    let (mut stream, reply) = socks_request(proxy.addr, CMD_CONNECT, &Dest::Ip(closed));
    assert_eq!(reply.code, REP_REFUSED);
    let client = stream.local_addr().unwrap();
    // The proxy lingers for our FIN after the reply.
    stream.shutdown(Shutdown::Write).unwrap();
    expect_closed(&mut stream, "after the refusal");
    let record = access_record_for(&proxy, client);
    let after = now_ms();

    assert_eq!(record.keys, ACCESS_KEYS);
    assert_eq!(record.str("client"), Some(client.to_string()));
    assert_eq!(record.str("user"), None);
    assert_eq!(record.str("command").as_deref(), Some("connect"));
    assert_eq!(record.str("target"), Some(closed.to_string()));
    assert_eq!(record.str("connected"), None);
    assert_eq!(record.str("local"), None);
    assert_eq!(record.str("reply").as_deref(), Some("connection_refused"));
    assert_eq!((record.int("bytes_up"), record.int("bytes_down")), (0, 0));
    assert_eq!(record.str("reason").as_deref(), Some("rejected"));
    assert_timed(&record, before, after);
}

#[test]
fn json_udp_association() {
    const ROUND_TRIPS: i64 = 7;
    let proxy = ProxyProcess::spawn(&["--log-format", "json"]);
    let echo_port = udp_echo(b"echo:");
    let target = Dest::Ip(SocketAddr::from(([127, 0, 0, 1], echo_port)));
    let before = now_ms();
    let assoc = associate(proxy.addr, true);
    let client = assoc.control.local_addr().unwrap();
    let client_udp = assoc.udp.local_addr().unwrap();
    for n in 0..ROUND_TRIPS {
        if n == 3 {
            // A fragment (FRAG != 0) is dropped and counted; the round trips after it show
            // it has been handled.
            assoc.udp.send_to(&udp_datagram(1, &target, b"fragment"), assoc.relay).unwrap();
        }
        let (_, payload) = round_trip(&assoc, &target, format!("datagram {n}").as_bytes());
        assert_eq!(payload, format!("echo:datagram {n}").into_bytes());
    }
    // Closing the control connection ends the association (RFC 1928 §7).
    let Association { mut control, .. } = assoc;
    control.shutdown(Shutdown::Write).unwrap();
    let _ = read_to_close(&mut control);
    let record = access_record_for(&proxy, client);
    let after = now_ms();

    let with_udp: Vec<&str> = ACCESS_KEYS.iter().chain(&UDP_KEYS).copied().collect();
    assert_eq!(record.keys, with_udp);
    assert_eq!(record.str("command").as_deref(), Some("udp_associate"));
    // DST of the request: the port the client announced, on 0.0.0.0.
    assert_eq!(record.str("target"), Some(format!("0.0.0.0:{}", client_udp.port())));
    assert_eq!(record.str("connected"), None);
    let local: SocketAddr = record.str("local").expect("the upstream socket's address").parse().unwrap();
    assert_ne!(local.port(), 0);
    assert_eq!(record.str("reply").as_deref(), Some("succeeded"));
    assert_eq!(record.str("user"), None);
    assert_eq!(record.int("datagrams_up"), ROUND_TRIPS);
    assert_eq!(record.int("datagrams_down"), ROUND_TRIPS);
    assert_eq!(record.int("datagrams_dropped"), 1);
    assert_eq!(record.str("reason").as_deref(), Some("UDP association ended by client"));
    assert_timed(&record, before, after);
}

/// A user name with quotes, a backslash, a tab and non-ASCII letters comes out whole; a
/// failed login has no user, no command and no reply, only its reason.
#[test]
fn json_authenticated_and_refused_users() {
    let user = "jürgen \"q\" \\ tab\there {}";
    let file = TempFile::new("access-log-users", &format!("{user}:s3cret\nother:pw\n"));
    let echo = echo_server("127.0.0.1:0");
    let proxy = ProxyProcess::spawn(&["--log-format", "json", "--auth-file", file.path()]);

    let mut stream = tcp_connect(proxy.addr);
    greet_userpass(&mut stream);
    assert_eq!(authenticate(&mut stream, user, "s3cret"), 0);
    stream.write_all(&request_bytes(CMD_CONNECT, &Dest::Ip(echo.addr))).unwrap();
    assert_eq!(read_reply(&mut stream).unwrap().code, REP_OK);
    let client = stream.local_addr().unwrap();
    echo_exactly(&mut stream, 1000);
    drop(stream);
    let record = access_record_for(&proxy, client);
    assert_eq!(record.str("user").as_deref(), Some(user));
    assert_eq!(record.str("reply").as_deref(), Some("succeeded"));
    assert_eq!((record.int("bytes_up"), record.int("bytes_down")), (1000, 1000));
    assert_eq!(record.str("reason").as_deref(), Some("done"));

    let mut stream = tcp_connect(proxy.addr);
    greet_userpass(&mut stream);
    assert_ne!(authenticate(&mut stream, user, "wrong"), 0);
    let client = stream.local_addr().unwrap();
    stream.shutdown(Shutdown::Write).unwrap();
    expect_closed(&mut stream, "after the failed login");
    let record = access_record_for(&proxy, client);
    assert_eq!(record.keys, ACCESS_KEYS);
    assert_eq!(record.str("user"), None);
    assert_eq!(record.str("command"), None);
    assert_eq!(record.str("target"), None);
    assert_eq!(record.str("connected"), None);
    assert_eq!(record.str("local"), None);
    assert_eq!(record.str("reply"), None, "a failed login is answered by RFC 1929, not a SOCKS reply");
    assert_eq!(record.str("reason").as_deref(), Some("rejected"));
    assert!(proxy.wait_for_log("authentication failed for user", TIMEOUT));
}

/// `clients` CONNECTs one after another, each round-tripping a message through `echo`: each
/// needs the loop again after the previous one's lines were logged. Every step has the usual
/// socket timeouts, so a loop stuck in a write fails here instead of hanging.
fn serve_one_by_one(proxy: &ProxyProcess, echo: &Target<u64>, clients: usize) {
    for n in 0..clients {
        let (mut stream, reply) = socks_request(proxy.addr, CMD_CONNECT, &Dest::Ip(echo.addr));
        assert_eq!(reply.code, REP_OK, "client {n}");
        assert_echo(&mut stream, format!("client {n}").as_bytes());
        stream.shutdown(Shutdown::Write).unwrap();
        let mut rest = Vec::new();
        stream.read_to_end(&mut rest).unwrap_or_else(|e| panic!("client {n}: {e}"));
    }
}

/// stderr (the text log, at debug: several lines per client) is a one-page pipe nobody reads
/// while 500 clients are served; all are served, and once the pipe is read the proxy reports
/// the lines it dropped.
#[test]
fn a_blocked_stderr_does_not_stall_the_loop() {
    let echo = echo_server("127.0.0.1:0");
    let proxy = ProxyProcess::spawn_holding_output(&["--log-level", "debug"]);
    serve_one_by_one(&proxy, &echo, 500);
    // What was read so far: the lines up to "listening on" (and whatever the reader had
    // buffered with it); far fewer than were logged.
    assert!(proxy.stderr.lock().unwrap().len() < 100, "stderr was held");

    proxy.release_output();
    let notice = poll_until(TIMEOUT, || {
        proxy
            .stderr
            .lock()
            .unwrap()
            .iter()
            .find(|l| l.contains("log lines dropped (output blocked)"))
            .cloned()
    })
    .unwrap_or_else(|| panic!("no drop notice; last lines: {:?}", tail(&proxy.stderr)));
    assert!(notice.contains(" WARN  [socksloop] "), "{notice}");
    let dropped: u64 =
        notice.split(" WARN  [socksloop] ").nth(1).unwrap().split(' ').next().unwrap().parse().unwrap();
    assert!(dropped > 0, "{notice}");
    // The loop is still fine, and lines flow again.
    assert_serves(proxy.addr, &echo, "the output was blocked");
    assert!(proxy.wait_for_log(" reply 00 succeeded", TIMEOUT));
}

/// The same with the JSON access log on stdout: every line that was written is a whole JSON
/// record (lines are dropped whole, never torn), and the notice is on stderr.
#[test]
fn a_blocked_stdout_does_not_stall_the_loop() {
    let echo = echo_server("127.0.0.1:0");
    let proxy = ProxyProcess::spawn_holding_output(&["--log-format", "json"]);
    serve_one_by_one(&proxy, &echo, 500);
    proxy.release_output();
    assert!(
        proxy.wait_for_log("log lines dropped (output blocked)", TIMEOUT),
        "no drop notice; stderr: {:?}",
        tail(&proxy.stderr)
    );
    assert_serves(proxy.addr, &echo, "stdout was blocked");
    let written: Vec<String> = proxy.stdout.lock().unwrap().clone();
    assert!(!written.is_empty() && written.len() < 500, "{} records", written.len());
    let records = parse_access_lines(&written);
    assert!(records.iter().all(|r| r.str("command").as_deref() == Some("connect")));
}

fn tail(lines: &std::sync::Mutex<Vec<String>>) -> Vec<String> {
    let lines = lines.lock().unwrap();
    lines[lines.len().saturating_sub(10)..].to_vec()
}
