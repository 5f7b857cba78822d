//! The binary's command line: bad flags, help, version, a port in use, and signals.

use std::net::TcpListener;
use std::process::Output;

use crate::support::*;

/// Run the binary with `args` to completion (killed if it does not exit).
fn run(args: &[&str]) -> Output {
    let mut command = bin();
    command.args(args);
    run_to_exit(command)
}

#[test]
fn bad_flags_exit_2_naming_the_flag() {
    let cases: &[(&[&str], &str)] = &[
        (&["--bogus"], "--bogus"),
        (&["--listen", "nowhere"], "--listen"),
        (&["--log-level", "loud"], "--log-level"),
        (&["--idle-timeout", "0"], "--idle-timeout"),
    ];
    for (args, flag) in cases {
        let out = run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        let lines: Vec<&str> = stderr.lines().collect();
        assert_eq!(lines.len(), 1, "{args:?}: one stderr line expected: {stderr}");
        assert!(lines[0].starts_with("socksloop: error:"), "{args:?}: {stderr}");
        assert!(lines[0].contains(flag), "{args:?}: message must name {flag}: {stderr}");
    }
}

#[test]
fn help_and_version() {
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--listen"));

    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(env!("CARGO_PKG_VERSION")), "{stdout}");
}

#[test]
fn port_in_use_exits_1() {
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = run(&["--listen", &addr]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("address already in use"), "{stderr}");
}

#[test]
fn sigterm_exits_0() {
    let mut proxy = ProxyProcess::spawn(&[]);
    proxy.signal(libc::SIGTERM);
    let status = proxy.wait_exit(TIMEOUT).expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0), "stderr: {:?}", proxy.stderr.lock().unwrap());
}

#[test]
fn sigint_exits_0() {
    let mut proxy = ProxyProcess::spawn(&[]);
    proxy.signal(libc::SIGINT);
    let status = proxy.wait_exit(TIMEOUT).expect("exits after SIGINT");
    assert_eq!(status.code(), Some(0), "stderr: {:?}", proxy.stderr.lock().unwrap());
}

#[test]
fn binary_relays() {
    let proxy = ProxyProcess::spawn(&[]);
    let echo = echo_server("127.0.0.1:0");
    let (mut stream, _) = socks_connect(proxy.addr, echo.addr);
    assert_echo(&mut stream, b"through the binary");
}
