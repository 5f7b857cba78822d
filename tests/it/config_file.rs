//! The config file (`--config PATH`, TOML) run through the real binary: a file behaves like the
//! same flags, the command line overrides it, a bad file names its line and key, and
//! `[[users]]` log in.

use std::io::Write;
use std::net::SocketAddr;

use crate::support::*;

/// What a proxy answers to: a CONNECT to an allowed echo server, to a denied port, to an
/// address outside `--allow-dest` under `--block-private`, and a SOCKS4 request.
fn outcomes(proxy: SocketAddr, allowed: SocketAddr, denied_port: SocketAddr) -> Vec<u8> {
    let mut seen = Vec::new();
    let (mut stream, reply) = socks_request(proxy, CMD_CONNECT, &Dest::Ip(allowed));
    if reply.code == REP_OK {
        assert_echo(&mut stream, b"through the proxy");
    }
    seen.push(reply.code);
    seen.push(socks_request(proxy, CMD_CONNECT, &Dest::Ip(denied_port)).1.code);
    let other_loopback: SocketAddr = format!("127.0.0.2:{}", allowed.port()).parse().unwrap();
    seen.push(socks_request(proxy, CMD_CONNECT, &Dest::Ip(other_loopback)).1.code);
    // SOCKS4 CONNECT to the allowed target: 0x5A granted, 0x5B refused.
    let mut v4 = tcp_connect(proxy);
    let mut request = vec![4, 1];
    request.extend_from_slice(&allowed.port().to_be_bytes());
    request.extend_from_slice(&[127, 0, 0, 1, 0]);
    write_ignoring_errors(&mut v4, &request);
    let mut reply = [0u8; 8];
    seen.push(match std::io::Read::read_exact(&mut v4, &mut reply) {
        Ok(()) => reply[1],
        Err(_) => 0xFF, // closed without a reply
    });
    seen
}

#[test]
fn a_config_file_behaves_like_the_same_flags() {
    let echo = echo_server("127.0.0.1:0");
    let denied = echo_server("127.0.0.1:0");
    let (port, denied_port) = (echo.addr.port(), denied.addr.port());
    let flags = ProxyProcess::spawn(&[
        "--block-private",
        "--allow-dest",
        "127.0.0.1/32",
        "--deny-port",
        &denied_port.to_string(),
        "--no-socks4",
        "--idle-timeout",
        "30",
    ]);
    let file = TempFile::new(
        "config-same.toml",
        &format!(
            "# the same as the flags above\nblock-private = true\nallow-dest = [\"127.0.0.1/32\"]\n\
             deny-port = [{denied_port}]\nno-socks4 = true\nidle-timeout = 30\n"
        ),
    );
    let from_file = ProxyProcess::spawn(&["--config", file.path()]);
    let by_flags = outcomes(flags.addr, echo.addr, denied.addr);
    let by_file = outcomes(from_file.addr, echo.addr, denied.addr);
    assert_eq!(by_flags, by_file, "flags and file must behave the same");
    // And what they do is what was asked: allowed, denied port, outside allow-dest, no SOCKS4.
    assert_eq!(by_file, vec![REP_OK, REP_NOT_ALLOWED, REP_NOT_ALLOWED, 0x5B], "port {port}");
}

#[test]
fn the_command_line_overrides_the_file() {
    let echo = echo_server("127.0.0.1:0");
    let file = TempFile::new("config-override.toml", &format!("deny-port = [{}]\n", echo.addr.port()));
    let from_file = ProxyProcess::spawn(&["--config", file.path()]);
    assert_eq!(socks_request(from_file.addr, CMD_CONNECT, &Dest::Ip(echo.addr)).1.code, REP_NOT_ALLOWED);
    // The listen address in ProxyProcess::spawn already overrides any in the file; a repeatable
    // flag on the command line replaces the file's whole list.
    let overridden = ProxyProcess::spawn(&["--config", file.path(), "--deny-port", "9"]);
    let (mut stream, reply) = socks_connect(overridden.addr, echo.addr);
    assert_eq!(reply.code, REP_OK);
    assert_echo(&mut stream, b"the file's deny-port was replaced");
}

#[test]
fn a_bad_config_file_names_its_line_and_key() {
    let cases = [
        (
            "listen = [\"127.0.0.1:0\"]\n\nidle-timeout = \"soon\"\n",
            ":3: key 'idle-timeout': invalid value 'soon'",
        ),
        ("block-private = true\ncolour = \"blue\"\n", ":2: unknown key 'colour'"),
        (
            "[[users]]\nname = \"alice\"\npassword = \"x\"\nmax-connections = 0\n",
            ":4: key 'users.max-connections'",
        ),
        ("listen = [\n", ":"),
    ];
    for (text, expected) in cases {
        let file = TempFile::new("config-bad.toml", text);
        let mut command = bin();
        command.args(["--config", file.path()]);
        let output = run_to_exit(command);
        assert_eq!(output.status.code(), Some(2), "{text:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        let wanted = format!("{}{expected}", file.path());
        assert!(stderr.contains(&wanted), "{text:?}: wanted {wanted:?} in {stderr}");
    }
    let mut command = bin();
    command.args(["--config", "/nonexistent/socksloop.toml"]);
    let output = run_to_exit(command);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&output.stderr)
            .contains("cannot read config file /nonexistent/socksloop.toml")
    );
}

#[test]
fn users_from_the_file_log_in_and_a_plaintext_password_is_warned_about() {
    let echo = echo_server("127.0.0.1:0");
    let file = TempFile::new(
        "config-users.toml",
        "[[users]]\nname = \"alice\"\npassword = \"wonderland\"\n\n[[users]]\nname = \"bob\"\npassword = \"builder\"\n",
    );
    let proxy = ProxyProcess::spawn(&["--config", file.path()]);
    assert!(proxy.wait_for_log("user 'alice' has a plaintext password", TIMEOUT));
    let (mut stream, code) = auth_connect(proxy.addr, "alice", "wonderland", &echo.addr.into()).unwrap();
    assert_eq!(code, REP_OK);
    assert_echo(&mut stream, b"alice is in");
    assert_eq!(auth_connect(proxy.addr, "bob", "wonderland", &echo.addr.into()).err(), Some(1));
    // Users require authentication: a client offering only "no auth" is refused (FF).
    let mut anonymous = tcp_connect(proxy.addr);
    anonymous.write_all(&[5, 1, NO_AUTH]).unwrap();
    let mut choice = [0u8; 2];
    std::io::Read::read_exact(&mut anonymous, &mut choice).unwrap();
    assert_eq!(choice, [5, 0xFF]);
}
