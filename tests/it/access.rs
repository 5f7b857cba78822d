//! Safe to expose (issue 3): RFC 1929 authentication, SIGHUP reload, client rules, egress
//! rules checked after resolution, `--bind-out`, and the refusal to run an open proxy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use socksloop::auth::AuthSource;

use crate::support::*;

const REP_NOT_ALLOWED: u8 = 0x02;

/// A file in the system temp dir, unique to this test process and name; removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let path = std::env::temp_dir().join(format!("socksloop-it-{}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Greet offering username/password; expect the server to choose it.
fn greet_userpass(stream: &mut TcpStream) {
    stream.write_all(&[5, 1, 2]).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [5, 2], "server should pick username/password");
}

/// Send an RFC 1929 request; the status byte of the answer.
fn authenticate(stream: &mut TcpStream, user: &str, pass: &str) -> u8 {
    let mut msg = vec![1, user.len() as u8];
    msg.extend_from_slice(user.as_bytes());
    msg.push(pass.len() as u8);
    msg.extend_from_slice(pass.as_bytes());
    stream.write_all(&msg).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer[0], 1, "sub-negotiation version");
    answer[1]
}

/// A full authenticated CONNECT; the reply code (the stream is returned for relaying).
fn auth_connect(proxy: SocketAddr, user: &str, pass: &str, dest: &Dest) -> Result<(TcpStream, u8), u8> {
    let mut stream = tcp_connect(proxy);
    greet_userpass(&mut stream);
    let status = authenticate(&mut stream, user, pass);
    if status != 0 {
        expect_closed(&mut stream, "after failed auth");
        return Err(status);
    }
    stream.write_all(&request_bytes(CMD_CONNECT, dest)).unwrap();
    let reply = read_reply(&mut stream).unwrap();
    Ok((stream, reply.code))
}

fn auth_server(users: &TempFile) -> socksloop::Server {
    start_server_with(|c| c.auth = AuthSource { file: Some(users.0.clone()), env_user: None })
}

#[test]
fn correct_password_relays_and_wrong_password_gets_01_01() {
    let users = TempFile::new("users-basic", "# test users\nalice:s3cret:with:colons\n");
    let server = auth_server(&users);
    let proxy = proxy_addr(&server);
    let echo = echo_server("127.0.0.1:0");

    let (mut stream, code) = auth_connect(proxy, "alice", "s3cret:with:colons", &echo.addr.into()).unwrap();
    assert_eq!(code, REP_OK);
    assert_echo(&mut stream, b"authenticated payload");

    assert_eq!(auth_connect(proxy, "alice", "wrong", &echo.addr.into()).err(), Some(1));
    assert_eq!(auth_connect(proxy, "mallory", "s3cret:with:colons", &echo.addr.into()).err(), Some(1));
}

#[test]
fn no_auth_only_client_gets_05_ff_when_auth_is_required() {
    let users = TempFile::new("users-ff", "alice:pw\n");
    let server = auth_server(&users);
    let mut stream = tcp_connect(proxy_addr(&server));
    stream.write_all(&[5, 1, 0]).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).unwrap();
    assert_eq!(answer, [5, 0xFF]);
    expect_closed(&mut stream, "after 05 FF");
}

#[test]
fn bad_subnegotiation_version_closes() {
    let users = TempFile::new("users-ver", "alice:pw\n");
    let server = auth_server(&users);
    let mut stream = tcp_connect(proxy_addr(&server));
    greet_userpass(&mut stream);
    stream.write_all(&[5, 5, b'a', b'l', b'i', b'c', b'e', 2, b'p', b'w']).unwrap();
    expect_closed(&mut stream, "after a sub-negotiation with version 5");
}

#[test]
fn curl_with_credentials_in_the_url() {
    let users = TempFile::new("users-curl", "alice:pw-123\n");
    let server = auth_server(&users);
    let proxy = proxy_addr(&server);
    let http = crate::curl::http_server();
    let url = format!("http://localhost:{}/auth", http.addr.port());
    let body = crate::curl::curl_with("-x", &format!("socks5h://alice:pw-123@{proxy}"), &url);
    assert_eq!(checksum(&body), checksum(&crate::curl::expected_body()));
}

#[test]
fn sighup_reloads_credentials_without_dropping_relays() {
    let users = TempFile::new("users-hup", "alice:old\n");
    let proxy = ProxyProcess::spawn(&["--auth-file", users.path()]);
    let echo = echo_server("127.0.0.1:0");
    let (mut established, code) = auth_connect(proxy.addr, "alice", "old", &echo.addr.into()).unwrap();
    assert_eq!(code, REP_OK);
    assert_echo(&mut established, b"before reload");

    std::fs::write(&users.0, "alice:new\nbob:second\n").unwrap();
    // SAFETY: kill(2) on our own child's PID.
    assert_eq!(unsafe { libc::kill(proxy.pid(), libc::SIGHUP) }, 0);
    let reloaded = wait_for_log(&proxy, "credentials reloaded", Duration::from_secs(10));
    assert!(reloaded, "no reload line in {:?}", proxy.stderr.lock().unwrap());

    assert_eq!(auth_connect(proxy.addr, "alice", "old", &echo.addr.into()).err(), Some(1));
    assert!(auth_connect(proxy.addr, "bob", "second", &echo.addr.into()).is_ok());
    assert_echo(&mut established, b"after reload: still relaying");

    // A broken file on reload keeps the previous credentials.
    std::fs::write(&users.0, "this line has no colon\n").unwrap();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(proxy.pid(), libc::SIGHUP) }, 0);
    assert!(wait_for_log(&proxy, "keeping the old credentials", Duration::from_secs(10)));
    assert!(auth_connect(proxy.addr, "alice", "new", &echo.addr.into()).is_ok());
}

fn wait_for_log(proxy: &ProxyProcess, needle: &str, limit: Duration) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if proxy.stderr.lock().unwrap().iter().any(|l| l.contains(needle)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

#[test]
fn denied_client_is_closed_without_a_reply() {
    let server = start_server_with(|c| c.rules.allow_clients = vec!["10.0.0.0/8".parse().unwrap()]);
    let mut stream = tcp_connect(proxy_addr(&server));
    let _ = stream.write_all(&[5, 1, 0]);
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
fn bind_out_sets_the_source_address_and_bnd_addr() {
    let echo = echo_server("127.0.0.1:0");
    let server = start_server_with(|c| c.bind_out = Some("127.0.0.2".parse().unwrap()));
    let (mut stream, reply) = socks_connect(proxy_addr(&server), echo.addr);
    let seen = echo.next_peer();
    assert_eq!(seen.ip().to_string(), "127.0.0.2", "the target sees the --bind-out address");
    assert_eq!(reply.bound, Bound::Ip(seen), "BND.ADDR:PORT is the upstream socket's local address");
    assert_echo(&mut stream, b"via 127.0.0.2");
}

#[test]
fn non_loopback_listen_without_auth_refuses_to_start() {
    let output = Command::new(env!("CARGO_BIN_EXE_socksloop"))
        .args(["--listen", "0.0.0.0:0"])
        .env_remove("SOCKSLOOP_USER")
        .env_remove("SOCKSLOOP_PASS")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("open proxy") && stderr.contains("--allow-open-proxy"), "{stderr}");

    // With credentials from the environment it starts (and is stopped at once).
    let mut child = Command::new(env!("CARGO_BIN_EXE_socksloop"))
        .args(["--listen", "0.0.0.0:0"])
        .env("SOCKSLOOP_USER", "env-user")
        .env("SOCKSLOOP_PASS", "env-pass")
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "should be running with auth configured");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn malformed_auth_file_names_file_and_line() {
    let users = TempFile::new("users-bad", "alice:pw\nbroken\n");
    let output = Command::new(env!("CARGO_BIN_EXE_socksloop"))
        .args(["--listen", "127.0.0.1:0", "--auth-file", users.path()])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}:2", users.path())), "{stderr}");
}
