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

/// Long flags named in a text: `--word-word` tokens (in roff, dashes are written `\-`).
fn long_flags(text: &str) -> std::collections::BTreeSet<String> {
    let text = text.replace("\\-", "-");
    let mut flags = std::collections::BTreeSet::new();
    for (i, _) in text.match_indices("--") {
        let rest = &text[i + 2..];
        let name: String =
            rest.chars().take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-').collect();
        let before = text[..i].chars().next_back();
        if !name.is_empty() && !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '-') {
            flags.insert(format!("--{}", name.trim_end_matches('-')));
        }
    }
    flags
}

#[test]
fn the_man_page_names_every_flag_of_help_and_no_other() {
    let out = run(&["--help"]);
    let help = long_flags(&String::from_utf8_lossy(&out.stdout));
    let man_path = concat!(env!("CARGO_MANIFEST_DIR"), "/man/socksloop.8");
    // The flags the man page documents: each is the tag line after a `.TP`.
    let text = std::fs::read_to_string(man_path).expect("man/socksloop.8");
    let lines: Vec<&str> = text.lines().collect();
    let tags: String =
        lines.windows(2).filter(|w| w[0] == ".TP").map(|w| w[1]).collect::<Vec<_>>().join("\n");
    let man = long_flags(&tags);
    assert!(help.len() > 20, "flags found in --help: {help:?}");
    let missing: Vec<_> = help.difference(&man).collect();
    let extra: Vec<_> = man.difference(&help).collect();
    assert!(missing.is_empty(), "flags in --help missing from man/socksloop.8: {missing:?}");
    assert!(extra.is_empty(), "flags in man/socksloop.8 that --help does not have: {extra:?}");
}

#[test]
fn the_man_page_is_valid_roff() {
    // `man` is not always installed; groff's checker is the real one where it is.
    let man_path = concat!(env!("CARGO_MANIFEST_DIR"), "/man/socksloop.8");
    let Ok(out) = std::process::Command::new("groff").args(["-man", "-ww", "-z", man_path]).output() else {
        panic!("groff not found: apt-get install groff-base (.ci/run installs it)");
    };
    let warnings = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success() && warnings.trim().is_empty(), "groff: {warnings}");
}
