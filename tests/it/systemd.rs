//! systemd, with its real tools: socket activation through `systemd-socket-activate` (a
//! client served on the inherited socket, alone or beside `--listen`, with two workers),
//! `sd_notify` to a notify socket of the test's own (the messages in order, and watchdog
//! pings that stop while the event loop's thread is stopped), and `systemd-analyze verify` on the
//! shipped unit files.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;

/// A tool from Debian's `systemd` package; `.ci/run` installs it when missing.
fn systemd_tool(name: &str) -> &str {
    let found = Command::new(name).arg("--version").output().is_ok_and(|o| o.status.success());
    assert!(found, "{name} is missing: install Debian's systemd package (.ci/run does)");
    name
}

/// `systemd-socket-activate` listening on a free loopback port, to start the proxy with
/// `args` on the first client. Returns the command and the port.
fn socket_activate(args: &[&str]) -> (Command, u16) {
    let port = free_port();
    let mut command = Command::new(systemd_tool("systemd-socket-activate"));
    command
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--fdname=socksloop-it")
        .arg(env!("CARGO_BIN_EXE_socksloop"))
        .args(args);
    (command, port)
}

/// Start the proxy under `systemd-socket-activate`. In its default mode the tool waits for
/// the first client, then execs the proxy in place (so the child's PID becomes the proxy's,
/// `LISTEN_PID`): a thread connects as soon as the port takes connections, and that
/// connection, already in the inherited socket's queue, is returned for the test to use.
fn spawn_activated(args: &[&str]) -> (ProxyProcess, TcpStream, u16) {
    let (command, port) = socket_activate(args);
    let first = thread::spawn(move || {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        poll_until(TIMEOUT, || TcpStream::connect_timeout(&addr, TIMEOUT).ok()).expect("the port opens")
    });
    let proxy = ProxyProcess::from_command(command);
    let first = first.join().unwrap();
    first.set_read_timeout(Some(TIMEOUT)).unwrap();
    first.set_write_timeout(Some(TIMEOUT)).unwrap();
    (proxy, first, port)
}

/// CONNECT to `target` over an already open connection and round-trip a message.
fn serve_on(mut stream: TcpStream, target: SocketAddr, msg: &[u8]) {
    greet(&mut stream);
    stream.write_all(&request_bytes(CMD_CONNECT, &Dest::Ip(target))).unwrap();
    assert_eq!(read_reply(&mut stream).expect("reply").code, REP_OK);
    assert_echo(&mut stream, msg);
}

/// The addresses process `pid` listens on (its TCP sockets in the LISTEN state).
fn listening(pid: i32) -> Vec<SocketAddr> {
    let held = socket_inodes(pid);
    tcp_entries(pid).iter().filter(|e| e.state == 0x0A && held.contains(&e.inode)).map(|e| e.local).collect()
}

#[test]
fn socket_activation_serves_on_the_inherited_socket() {
    let echo = echo_server("127.0.0.1:0");
    let (mut proxy, first, port) = spawn_activated(&["--log-level", "info"]);
    let activated = SocketAddr::from(([127, 0, 0, 1], port));
    assert_eq!(
        proxy.addr, activated,
        "the only listener is the inherited one (no --listen: no default address)"
    );
    let line = format!("using inherited socket fd 3 (socksloop-it), a TCP listener on {activated}");
    assert!(proxy.wait_for_log(&line, TIMEOUT), "{:?}", proxy.stderr.lock().unwrap());
    // The client whose connection started the proxy is served, and so is the next one.
    serve_on(first, echo.addr, b"the client that woke it");
    assert_serves(activated, &echo, "activation");
    let lines: Vec<String> =
        proxy.stderr.lock().unwrap().iter().filter(|l| l.contains("listening on")).cloned().collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    // The default address (127.0.0.1:1080) was not bound: only the inherited socket listens.
    assert_eq!(listening(proxy.pid()), vec![activated]);
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_exit(TIMEOUT).is_some_and(|s| s.success()));
}

#[test]
fn socket_activation_beside_listen_with_two_workers() {
    let echo = echo_server("127.0.0.1:0");
    let (proxy, first, port) =
        spawn_activated(&["--log-level", "info", "--listen", "127.0.0.1:0", "--workers", "2"]);
    let activated = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(proxy.wait_for_log(&format!("listening on {activated}"), TIMEOUT));
    // --listen's address comes first, the inherited one beside it.
    assert_ne!(proxy.addr, activated);
    serve_on(first, echo.addr, b"first");
    // Both workers accept from the one inherited socket (each holds a duplicate of it);
    // whichever is first serves. Every client is served, on both addresses.
    for i in 0..8 {
        assert_serves(activated, &echo, &format!("activated client {i}"));
        assert_serves(proxy.addr, &echo, &format!("--listen client {i}"));
    }
    assert_eq!(thread_names(proxy.pid()).iter().filter(|t| t.starts_with("socksloop-loop")).count(), 2);
}

#[test]
fn socket_activation_beside_a_config_files_listen() {
    // A config file's `listen` names addresses as `--listen` does: the inherited socket joins
    // them instead of replacing them (only the default address is replaced).
    let echo = echo_server("127.0.0.1:0");
    let named = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let file = TempFile::new("activated.toml", &format!("listen = [\"{named}\"]\nlog-level = \"info\"\n"));
    let (proxy, first, port) = spawn_activated(&["--config", file.path()]);
    let activated = SocketAddr::from(([127, 0, 0, 1], port));
    assert!(proxy.wait_for_log(&format!("listening on {activated}"), TIMEOUT));
    assert_eq!(proxy.addr, named, "the file's address comes first");
    serve_on(first, echo.addr, b"first");
    assert_serves(named, &echo, "the config file's address");
    assert_serves(activated, &echo, "the inherited socket");
    let mut both = listening(proxy.pid());
    both.sort();
    assert_eq!(both, {
        let mut v = vec![named, activated];
        v.sort();
        v
    });
}

#[test]
fn socket_activation_refuses_a_descriptor_that_is_not_a_listener() {
    // The shell passes itself as LISTEN_PID and execs the proxy in place, with /dev/null as
    // descriptor 3.
    let mut command = Command::new("sh");
    command
        .arg("-c")
        .arg("export LISTEN_PID=$$ LISTEN_FDS=1; exec \"$0\" --log-level info 3</dev/null")
        .arg(env!("CARGO_BIN_EXE_socksloop"));
    let output = run_to_exit(command);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr
            .contains("socket activation: fd 3 from LISTEN_FDS is not a listening TCP socket: not a socket"),
        "{stderr}"
    );

    // Variables meant for another process (here pid 1) are ignored, and removed.
    let mut command = bin();
    command.args(["--listen", "127.0.0.1:0"]).env("LISTEN_PID", "1").env("LISTEN_FDS", "1");
    let proxy = ProxyProcess::from_command(command);
    assert_serves(proxy.addr, &echo_server("127.0.0.1:0"), "foreign LISTEN_PID");
}

/// The test's own notify socket: a unix datagram socket in the temp dir, removed on drop.
struct NotifySocket {
    socket: UnixDatagram,
    path: PathBuf,
}

impl NotifySocket {
    fn bind(name: &str) -> NotifySocket {
        let path = std::env::temp_dir().join(format!("socksloop-it-{}-{name}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path).unwrap();
        NotifySocket { socket, path }
    }

    /// The next datagram, if one arrives within `limit`.
    fn recv(&self, limit: Duration) -> Option<String> {
        self.socket.set_read_timeout(Some(limit)).unwrap();
        let mut buf = [0u8; 4096];
        let n = self.socket.recv(&mut buf).ok()?;
        Some(String::from_utf8(buf[..n].to_vec()).unwrap())
    }

    /// The next message other than `WATCHDOG=1`, within [`TIMEOUT`].
    fn next_not_watchdog(&self) -> String {
        let start = Instant::now();
        while start.elapsed() < TIMEOUT {
            match self.recv(TIMEOUT) {
                Some(m) if m == "WATCHDOG=1" => continue,
                Some(m) => return m,
                None => break,
            }
        }
        panic!("no notification within {TIMEOUT:?}");
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `CLOCK_MONOTONIC` in µs, as systemd and the proxy read it.
fn monotonic_usec() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the struct we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

/// One `KEY=VALUE` line of a message.
fn field<'a>(message: &'a str, key: &str) -> Option<&'a str> {
    message.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
}

#[test]
fn notify_ready_watchdog_reload_stopping_in_order() {
    let notify = NotifySocket::bind("notify");
    let mut command = bin();
    command
        .args(["--listen", "127.0.0.1:0", "--log-level", "info"])
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "200000");
    let mut proxy = ProxyProcess::from_command(command);

    let ready = notify.recv(TIMEOUT).expect("READY=1");
    assert_eq!(field(&ready, "READY"), Some("1"), "the first message: {ready:?}");
    assert_eq!(field(&ready, "MAINPID"), Some(proxy.pid().to_string().as_str()));
    assert_eq!(field(&ready, "STATUS"), Some(format!("listening on {}", proxy.addr).as_str()));

    // WATCHDOG=1 every 100 ms (half of WATCHDOG_USEC) while the loop goes round; nothing
    // else meanwhile. Two are expected in about 0.2 s; the limit is for a busy machine.
    let start = Instant::now();
    for i in 0..2 {
        let ping = notify.recv(Duration::from_secs(3)).unwrap_or_else(|| panic!("watchdog ping {i}"));
        assert_eq!(ping, "WATCHDOG=1");
    }
    assert!(start.elapsed() < Duration::from_secs(3), "two pings took {:?}", start.elapsed());

    let before = monotonic_usec();
    proxy.signal(libc::SIGHUP);
    let reloading = notify.next_not_watchdog();
    let after = monotonic_usec();
    assert_eq!(field(&reloading, "RELOADING"), Some("1"), "{reloading:?}");
    let stamp: u64 = field(&reloading, "MONOTONIC_USEC").expect("MONOTONIC_USEC").parse().unwrap();
    assert!((before..=after).contains(&stamp), "MONOTONIC_USEC {stamp} not within {before}..={after}");
    let ready = notify.next_not_watchdog();
    assert_eq!(field(&ready, "READY"), Some("1"), "after the reload: {ready:?}");
    assert!(proxy.wait_for_log("SIGHUP: settings reloaded (0 users)", TIMEOUT));

    proxy.signal(libc::SIGTERM);
    let stopping = notify.next_not_watchdog();
    assert_eq!(field(&stopping, "STOPPING"), Some("1"), "{stopping:?}");
    assert!(proxy.wait_exit(TIMEOUT).is_some_and(|s| s.success()));
}

#[test]
fn notify_to_an_abstract_socket() {
    use std::os::linux::net::SocketAddrExt;
    let name = format!("socksloop-it-{}-abstract", std::process::id());
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(&name).unwrap();
    let socket = UnixDatagram::bind_addr(&addr).unwrap();
    socket.set_read_timeout(Some(TIMEOUT)).unwrap();
    let mut command = bin();
    command.args(["--listen", "127.0.0.1:0"]).env("NOTIFY_SOCKET", format!("@{name}"));
    let proxy = ProxyProcess::from_command(command);
    let mut buf = [0u8; 4096];
    let n = socket.recv(&mut buf).expect("READY=1 on the abstract socket");
    assert!(buf[..n].starts_with(b"READY=1\n"), "{:?}", String::from_utf8_lossy(&buf[..n]));
    proxy.signal(libc::SIGTERM);
    let n = socket.recv(&mut buf).expect("STOPPING=1");
    assert!(buf[..n].starts_with(b"STOPPING=1\n"));
}

/// The pings prove the event loop is alive, not only the process: with the loop thread alone
/// stopped (ptrace; the main, watchdog and log-writer threads run on) they stop and the
/// watchdog says why, and they resume once the loop runs again. (This test used to stall the
/// loop with an unread stderr pipe; logging no longer blocks it: `access_log.rs`.)
#[test]
fn watchdog_pings_stop_while_the_event_loop_is_stuck() {
    let notify = NotifySocket::bind("stuck");
    let mut command = bin();
    command
        .args(["--listen", "127.0.0.1:0", "--log-level", "debug"])
        .env("NOTIFY_SOCKET", notify.path())
        .env("WATCHDOG_USEC", "200000");
    let mut proxy = ProxyProcess::from_command(command);
    assert!(notify.recv(TIMEOUT).is_some_and(|m| m.starts_with("READY=1")));
    assert_eq!(notify.recv(TIMEOUT).as_deref(), Some("WATCHDOG=1"));
    let pid = proxy.pid();
    assert!(thread_names(pid).iter().any(|t| t == "watchdog"), "{:?}", thread_names(pid));
    let loop_tid = thread_id_named(pid, "socksloop-loop").expect("the loop thread");

    let stopped = StoppedThread::stop(loop_tid);
    // Clients that connect and leave meanwhile wait in the listener's backlog.
    for _ in 0..100 {
        drop(TcpStream::connect_timeout(&proxy.addr, TIMEOUT).expect("connect"));
    }
    // Pings already sent may still arrive; then silence, for a full second (ten periods).
    let start = Instant::now();
    loop {
        match notify.recv(Duration::from_secs(1)) {
            None => break,
            Some(m) => assert_eq!(m, "WATCHDOG=1"),
        }
        assert!(start.elapsed() < TIMEOUT, "the pings never stopped while the loop was stopped");
    }
    assert!(
        proxy.wait_for_log("watchdog: an event loop has not gone round", TIMEOUT),
        "the watchdog said why it did not ping"
    );

    drop(stopped);
    assert_eq!(notify.recv(TIMEOUT).as_deref(), Some("WATCHDOG=1"), "pings resume");
    // Every client waited and was served once the loop could go on.
    let served = || {
        proxy.stderr.lock().unwrap().iter().filter(|l| l.contains("client closed during handshake")).count()
    };
    poll_until(TIMEOUT, || (served() == 100).then_some(()));
    assert_eq!(served(), 100);
    proxy.signal(libc::SIGTERM);
    assert!(proxy.wait_exit(TIMEOUT).is_some_and(|s| s.success()));
}

/// The shipped unit files pass `systemd-analyze verify`, with no warning about them.
/// `verify` checks that ExecStart's binary exists, so a copy names the one just built.
#[test]
fn unit_files_pass_systemd_analyze_verify() {
    let analyze = systemd_tool("systemd-analyze");
    let units = Path::new(env!("CARGO_MANIFEST_DIR")).join("contrib/systemd");
    let dir = std::env::temp_dir().join(format!("socksloop-it-{}-units", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let socket_unit = std::fs::read_to_string(units.join("socksloop.socket")).unwrap();
    let service = std::fs::read_to_string(units.join("socksloop.service")).unwrap();
    let exec_start = "ExecStart=/usr/local/bin/socksloop ";
    assert_eq!(
        service.lines().filter(|l| l.starts_with(exec_start)).count(),
        1,
        "one ExecStart, of the installed binary"
    );
    let built = format!("ExecStart={} ", env!("CARGO_BIN_EXE_socksloop"));
    let service: String = service
        .lines()
        .map(|l| match l.strip_prefix(exec_start) {
            Some(rest) => format!("{built}{rest}\n"),
            None => format!("{l}\n"),
        })
        .collect();
    std::fs::write(dir.join("socksloop.socket"), socket_unit).unwrap();
    std::fs::write(dir.join("socksloop.service"), service).unwrap();

    let output = run_to_exit({
        let mut command = Command::new(analyze);
        command
            .args(["verify", "--man=no"])
            .arg(dir.join("socksloop.socket"))
            .arg(dir.join("socksloop.service"));
        command
    });
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(output.status.success(), "systemd-analyze verify failed: {stderr}");
    // Unknown keys and bad values are warnings with exit status 0: none may name our units.
    let about_ours: Vec<&str> = stderr.lines().filter(|l| l.contains("socksloop")).collect();
    assert!(about_ours.is_empty(), "systemd-analyze verify warns: {about_ours:#?}");
}

/// The check above fails when a unit file is wrong (so its silence means something).
#[test]
fn systemd_analyze_verify_reports_a_bad_unit() {
    let analyze = systemd_tool("systemd-analyze");
    let dir = std::env::temp_dir().join(format!("socksloop-it-{}-bad-unit", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let unit = format!(
        "[Service]\nType=notiffy\nProtectSystem=strict\nExecStart={} --log-level info\n",
        env!("CARGO_BIN_EXE_socksloop")
    );
    std::fs::write(dir.join("socksloop-bad.service"), unit).unwrap();
    let output = run_to_exit({
        let mut command = Command::new(analyze);
        command.args(["verify", "--man=no"]).arg(dir.join("socksloop-bad.service"));
        command
    });
    let _ = std::fs::remove_dir_all(&dir);
    let mut stderr = String::new();
    output.stderr.as_slice().read_to_string(&mut stderr).unwrap();
    assert!(stderr.contains("socksloop-bad.service:2: Failed to parse service type"), "{stderr}");
}
