//! RFC 1929 username/password authentication: raw bytes and curl with credentials in the URL,
//! wrong passwords (`01 01`), clients offering no auth (`05 FF`), a bad sub-negotiation
//! version, SIGHUP reloading the credentials file (ending the relays of a user whose password
//! changed, keeping the others), and a malformed file.

use std::io::{Read, Write};
use std::time::Duration;

use socksloop::auth::AuthSource;

use crate::support::*;

/// A full authenticated CONNECT; the reply code (the stream is returned for relaying).
fn auth_server(users: &TempFile) -> socksloop::Server {
    start_server_with(|c| c.auth = AuthSource { file: Some(users.path_buf()), env_user: None })
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
    let http = http_server();
    let url = format!("http://localhost:{}/auth", http.addr.port());
    let body = curl_with("-x", &format!("socks5h://alice:pw-123@{proxy}"), &url);
    check_body(&body);
}

#[test]
fn sighup_reloads_credentials_and_ends_the_relays_of_changed_users() {
    let users = TempFile::new("users-hup", "alice:old\ncarol:same\n");
    let proxy = ProxyProcess::spawn(&["--auth-file", users.path()]);
    let echo = echo_server("127.0.0.1:0");
    let (mut alices, code) = auth_connect(proxy.addr, "alice", "old", &echo.addr.into()).unwrap();
    assert_eq!(code, REP_OK);
    assert_echo(&mut alices, b"before reload");
    let (mut carols, code) = auth_connect(proxy.addr, "carol", "same", &echo.addr.into()).unwrap();
    assert_eq!(code, REP_OK);

    // Alice's password changes (#13: whoever logged in with the old one is out); carol's does
    // not, and her relay goes on.
    users.write("alice:new\nbob:second\ncarol:same\n");
    proxy.signal(libc::SIGHUP);
    let reloaded = proxy.wait_for_log("settings reloaded", Duration::from_secs(10));
    assert!(reloaded, "no reload line in {:?}", proxy.stderr.lock().unwrap());
    expect_closed(&mut alices, "alice's relay after her password changed");
    assert!(
        proxy.wait_for_log("user 'alice' revoked (password changed): closed 1 open connection", TIMEOUT),
        "{:?}",
        proxy.stderr.lock().unwrap()
    );
    assert!(proxy.wait_for_log("(user revoked)", TIMEOUT), "the access line's reason");
    assert_echo(&mut carols, b"after reload: still relaying");

    assert_eq!(auth_connect(proxy.addr, "alice", "old", &echo.addr.into()).err(), Some(1));
    assert!(auth_connect(proxy.addr, "bob", "second", &echo.addr.into()).is_ok());
    let (mut alices, _) = auth_connect(proxy.addr, "alice", "new", &echo.addr.into()).unwrap();
    assert_echo(&mut alices, b"with the new password");

    // A broken file on reload keeps the previous credentials, and ends nothing.
    users.write("this line has no colon\n");
    proxy.signal(libc::SIGHUP);
    assert!(proxy.wait_for_log("keeping the old settings", Duration::from_secs(10)));
    assert!(auth_connect(proxy.addr, "alice", "new", &echo.addr.into()).is_ok());
    assert_echo(&mut alices, b"still relaying after a failed reload");
}

#[test]
fn malformed_auth_file_names_file_and_line() {
    let users = TempFile::new("users-bad", "alice:pw\nbroken\n");
    let mut command = bin();
    command.args(["--listen", "127.0.0.1:0", "--auth-file", users.path()]);
    let output = run_to_exit(command);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&format!("{}:2", users.path())), "{stderr}");
}
