//! Hashed passwords (#13): argon2id users log in beside plaintext ones over real RFC 1929,
//! verification runs off the loop (other clients are served while 50 hashes wait), a
//! verified login is remembered, brute force from one address is throttled while another
//! logs in, `socksloop hash-password` makes hashes that work, and a config file's
//! `password-hash` users log in through the binary.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::process::Stdio;
use std::time::Duration;

use socksloop::users::{Secret, User};
use socksloop::verifier::{self, check_phc};

use crate::support::*;

/// A user whose secret is an argon2id hash of `password` made with `m` KiB, `t` passes.
fn hashed_user(name: &str, password: &str, m: u32, t: u32) -> User {
    let phc = verifier::hash_password_with(password.as_bytes(), verifier::params(m, t, 1).unwrap()).unwrap();
    let mut user = User::plain(name, b"");
    user.secret = Secret::Argon2id(phc);
    user
}

/// Greet with username/password from `from` and send the sub-negotiation, without waiting for
/// the answer.
fn send_login(proxy: SocketAddr, from: Ipv4Addr, user: &str, pass: &str) -> TcpStream {
    let mut stream = connect_from(from, proxy);
    greet_userpass(&mut stream);
    stream.write_all(&auth_request_bytes(user, pass)).unwrap();
    stream
}

/// The RFC 1929 status, waiting for it.
fn status(stream: &mut TcpStream) -> u8 {
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).expect("an RFC 1929 answer");
    assert_eq!(answer[0], 1, "sub-negotiation version");
    answer[1]
}

/// Whether the proxy has answered on `stream` yet (without waiting).
fn answered(stream: &TcpStream) -> bool {
    stream.set_nonblocking(true).unwrap();
    let mut byte = [0u8; 1];
    let seen = match stream.peek(&mut byte) {
        Ok(_) => true,
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => false,
        Err(_) => true, // reset: answered, in its way
    };
    stream.set_nonblocking(false).unwrap();
    seen
}

/// A whole login and CONNECT from `from`: the reply code, or the refused login's status.
fn login_from(
    proxy: SocketAddr,
    from: Ipv4Addr,
    user: &str,
    pass: &str,
    dest: SocketAddr,
) -> Result<TcpStream, u8> {
    let mut stream = send_login(proxy, from, user, pass);
    match status(&mut stream) {
        0 => {
            stream.write_all(&request_bytes(CMD_CONNECT, &Dest::Ip(dest))).unwrap();
            assert_eq!(read_reply(&mut stream).unwrap().code, REP_OK);
            Ok(stream)
        }
        refused => {
            expect_closed(&mut stream, "after a refused login");
            Err(refused)
        }
    }
}

#[test]
fn argon2id_and_plaintext_users_log_in_and_wrong_passwords_fail() {
    let server = start_server_with(|c| {
        c.users.add(hashed_user("alice", "wonder:land", 19456, 2)).unwrap();
        c.users.add(User::plain("bob", b"builder")).unwrap();
    });
    let proxy = proxy_addr(&server);
    let echo = echo_server("127.0.0.1:0");

    let (mut stream, code) = auth_connect(proxy, "alice", "wonder:land", &echo.addr.into()).unwrap();
    assert_eq!(code, REP_OK);
    assert_echo(&mut stream, b"alice, verified off the loop");
    let (mut stream, code) = auth_connect(proxy, "bob", "builder", &echo.addr.into()).unwrap();
    assert_eq!(code, REP_OK);
    assert_echo(&mut stream, b"bob, in plaintext");

    assert_eq!(auth_connect(proxy, "alice", "wonder", &echo.addr.into()).err(), Some(1));
    assert_eq!(auth_connect(proxy, "bob", "wonder:land", &echo.addr.into()).err(), Some(1));
    assert_eq!(auth_connect(proxy, "mallory", "builder", &echo.addr.into()).err(), Some(1));

    // Greeting, sub-negotiation and request in one segment: the request waits in the buffer
    // while the hash is verified, then goes on.
    let mut stream = tcp_connect(proxy);
    let mut bytes = vec![5, 1, USER_PASS];
    bytes.extend_from_slice(&auth_request_bytes("alice", "wonder:land"));
    bytes.extend_from_slice(&request_bytes(CMD_CONNECT, &Dest::Ip(echo.addr)));
    stream.write_all(&bytes).unwrap();
    let mut answers = [0u8; 4];
    stream.read_exact(&mut answers).unwrap();
    assert_eq!(answers, [5, USER_PASS, 1, 0]);
    assert_eq!(read_reply(&mut stream).unwrap().code, REP_OK);
    assert_echo(&mut stream, b"pipelined");
}

#[test]
fn curl_logs_in_with_a_hashed_password() {
    let server = start_server_with(|c| c.users.add(hashed_user("alice", "pw-123", 19456, 2)).unwrap());
    let http = http_server();
    let url = format!("http://127.0.0.1:{}/hashed", http.addr.port());
    let body = curl_with("--socks5", &format!("alice:pw-123@{}", proxy_addr(&server)), &url);
    check_body(&body);
}

/// The loop is not the verifier: while 50 expensive verifications are queued (64 MiB each,
/// about 3.5 times the default's cost; two threads), a remembered login and a plaintext login
/// are answered, and most of the 50 are still unanswered when they are. All 50 are answered
/// in the end.
#[test]
fn other_clients_are_served_while_50_hashes_are_verified() {
    let server = start_server_with(|c| {
        c.handshake_timeout = Duration::from_secs(120); // the 50 take seconds on a busy machine
        c.verifier_threads = 2;
        c.users.add(hashed_user("slow", "right", 65536, 1)).unwrap();
        c.users.add(hashed_user("cached", "remembered", 8, 1)).unwrap();
        c.users.add(User::plain("plain", b"text")).unwrap();
    });
    let proxy = proxy_addr(&server);
    let echo = echo_server("127.0.0.1:0");
    // The first login of "cached" is verified, and remembered.
    let mut first = login_from(proxy, Ipv4Addr::LOCALHOST, "cached", "remembered", echo.addr).unwrap();
    assert_echo(&mut first, b"verified once");

    // 50 different wrong guesses (identical ones would share one verification), each from its
    // own address so that none is throttled.
    let mut slow: Vec<TcpStream> = (0..50u8)
        .map(|i| send_login(proxy, Ipv4Addr::new(127, 0, 1, 10 + i), "slow", &format!("guess-{i}")))
        .collect();
    // Wait for the first answer: by then the loop has read every login (it had nothing else to
    // do for the whole verification) and the rest wait for the two threads.
    let first_answer = poll_until(Duration::from_secs(120), || slow.iter().position(answered));
    assert!(first_answer.is_some(), "no verification finished in 120 s");

    let mut remembered = login_from(proxy, Ipv4Addr::LOCALHOST, "cached", "remembered", echo.addr).unwrap();
    assert_echo(&mut remembered, b"answered from the cache");
    let mut plain = login_from(proxy, Ipv4Addr::LOCALHOST, "plain", "text", echo.addr).unwrap();
    assert_echo(&mut plain, b"answered on the loop");
    let done = slow.iter().filter(|s| answered(s)).count();
    assert!(done <= 25, "{done} of 50 verifications finished before two fast logins were answered");

    // Every one of the 50 is answered: a wrong guess, status 1.
    for (i, stream) in slow.iter_mut().enumerate() {
        assert_eq!(status(stream), 1, "guess {i}");
    }
}

/// Brute force from 127.0.0.2 is refused after five failures, even with the right password,
/// while 127.0.0.3 logs in with it; the lockout is logged once.
#[test]
fn brute_force_from_one_address_is_throttled_while_another_logs_in() {
    let server = start_server_with(|c| c.users.add(hashed_user("alice", "right", 19456, 2)).unwrap());
    let proxy = proxy_addr(&server);
    let echo = echo_server("127.0.0.1:0");
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    let neighbour = Ipv4Addr::new(127, 0, 0, 3);
    for i in 0..5 {
        assert_eq!(login_from(proxy, attacker, "alice", &format!("guess-{i}"), echo.addr).err(), Some(1));
    }
    // Locked out: even the right password is refused, without being checked.
    for _ in 0..3 {
        assert_eq!(login_from(proxy, attacker, "alice", "right", echo.addr).err(), Some(1));
    }
    let mut stream = login_from(proxy, neighbour, "alice", "right", echo.addr).unwrap();
    assert_echo(&mut stream, b"the neighbour is not slowed");
}

#[test]
fn a_lockout_is_logged_once_and_applies_to_plaintext_users_too() {
    let users = TempFile::new("users-brute", "alice:right\n");
    let proxy = ProxyProcess::spawn(&["--auth-file", users.path()]);
    let echo = echo_server("127.0.0.1:0");
    let attacker = Ipv4Addr::new(127, 0, 0, 2);
    for i in 0..8 {
        assert_eq!(
            login_from(proxy.addr, attacker, "alice", &format!("guess-{i}"), echo.addr).err(),
            Some(1)
        );
    }
    assert_eq!(login_from(proxy.addr, attacker, "alice", "right", echo.addr).err(), Some(1));
    assert!(login_from(proxy.addr, Ipv4Addr::new(127, 0, 0, 3), "alice", "right", echo.addr).is_ok());
    let lockout = "client 127.0.0.2: 5 failed logins within 60 s; refusing its logins for 60 s";
    assert!(proxy.wait_for_log(lockout, TIMEOUT), "{:?}", proxy.stderr.lock().unwrap());
    let lines = proxy.stderr.lock().unwrap().clone();
    assert_eq!(lines.iter().filter(|l| l.contains("refusing its logins")).count(), 1, "{lines:?}");
    // Five failures were logged as such; the refusals during the lockout were not.
    assert_eq!(lines.iter().filter(|l| l.contains("authentication failed")).count(), 5, "{lines:?}");
    assert!(lines.iter().all(|l| !l.contains("guess-")), "a password in the log: {lines:?}");
}

/// Run `socksloop hash-password` with `input` on standard input.
fn hash_password(input: &[u8], args: &[&str]) -> std::process::Output {
    let mut child = bin()
        .arg("hash-password")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The command may exit without reading (a refused argument): a broken pipe is no error.
    let _ = child.stdin.take().unwrap().write_all(input);
    if wait_child(&mut child, TIMEOUT).is_none() {
        let _ = child.kill();
        panic!("hash-password did not exit");
    }
    child.wait_with_output().unwrap()
}

#[test]
fn hash_password_round_trip() {
    let out = hash_password(b"open sesame\n", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8(out.stdout).unwrap();
    assert!(out.stderr.is_empty(), "nothing but the hash: {:?}", String::from_utf8_lossy(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{stdout:?}");
    let phc = lines[0];
    assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
    assert_eq!(check_phc(phc), Ok(()));
    assert!(!stdout.contains("open sesame"));

    // The printed hash works: the user logs in with the password, and only with it.
    let server = start_server_with(|c| {
        let mut user = User::plain("alice", b"");
        user.secret = Secret::Argon2id(phc.to_owned());
        c.users.add(user).unwrap();
    });
    let echo = echo_server("127.0.0.1:0");
    let proxy = proxy_addr(&server);
    let (mut stream, code) = auth_connect(proxy, "alice", "open sesame", &echo.addr.into()).unwrap();
    assert_eq!(code, REP_OK);
    assert_echo(&mut stream, b"hashed by the binary");
    assert_eq!(auth_connect(proxy, "alice", "open sesame\n", &echo.addr.into()).err(), Some(1));

    // The same password hashes differently each time (a random salt).
    let again = hash_password(b"open sesame\r\n", &[]);
    assert_ne!(String::from_utf8(again.stdout).unwrap().trim(), phc);

    // Nothing usable on standard input, or an argument: exit 2, and the argument is not shown.
    let too_long = [b'x'; 300];
    let cases: [(&[u8], &[&str]); 4] =
        [(b"", &[]), (b"\n", &[]), (&too_long, &[]), (b"pw\n", &["pw-on-the-line"])];
    for (input, args) in cases {
        let out = hash_password(input, args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{stderr}");
        assert!(out.stdout.is_empty(), "{:?}", out.stdout);
        assert!(stderr.starts_with("socksloop: error:") && !stderr.contains("pw-on-the-line"), "{stderr}");
    }
}

#[test]
fn config_file_users_with_password_hashes_log_in() {
    let alice = verifier::hash_password(b"wonderland").unwrap();
    let echo = echo_server("127.0.0.1:0");
    let file = TempFile::new(
        "config-hashes.toml",
        &format!(
            "verifier-threads = 1\n\n[[users]]\nname = \"alice\"\npassword-hash = \"{alice}\"\n\n\
             [[users]]\nname = \"bob\"\npassword = \"builder\"\n"
        ),
    );
    let proxy = ProxyProcess::spawn(&["--config", file.path()]);
    let (mut stream, code) = auth_connect(proxy.addr, "alice", "wonderland", &echo.addr.into()).unwrap();
    assert_eq!(code, REP_OK);
    assert_echo(&mut stream, b"alice, from the file's hash");
    assert_eq!(auth_connect(proxy.addr, "alice", "builder", &echo.addr.into()).err(), Some(1));
    assert!(auth_connect(proxy.addr, "bob", "builder", &echo.addr.into()).is_ok());

    // A hash the verifier cannot use stops the start, naming the file, line and key.
    let bad = TempFile::new(
        "config-bad-hash.toml",
        "[[users]]\nname = \"alice\"\npassword-hash = \"$argon2id$v=19$m=8,t=1,p=1$c2FsdA$aGFzaA\"\n",
    );
    let mut command = bin();
    command.args(["--config", bad.path()]);
    let output = run_to_exit(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(&format!("{}:3: key 'users.password-hash'", bad.path())), "{stderr}");
}
