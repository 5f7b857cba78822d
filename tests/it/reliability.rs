//! Helpers shared by the reliability tests (`faults`, `exhaustion`, `scale`, `soak`): watching
//! the proxy binary through /proc (open descriptors, CPU time), spawning it under a lower
//! descriptor limit, a black-holed target, a UDP echo, and an echo server in another process.
//!
//! Everything here is bounded: every wait has a limit, every child is stopped by its PID.

#![allow(dead_code)] // each reliability module uses a different subset

use std::io::{self, BufRead, BufReader, Write};
use std::net::{Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use socket2::{Domain, SockRef, Socket, Type};

use crate::support::*;

/// How long closing may take to show in /proc: closes happen at the end of a loop pass, and
/// a rejected client lingers for up to 2 s waiting for the client's FIN.
pub const SETTLE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// /proc

/// Open descriptors of process `pid` (entries of /proc/PID/fd).
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd").count()
}

/// Poll until the process has exactly `baseline` descriptors, at most `limit`.
/// Err carries the last count seen.
pub fn wait_for_fds(pid: i32, baseline: usize, limit: Duration) -> Result<(), usize> {
    let start = Instant::now();
    loop {
        let now = fd_count(pid);
        if now == baseline {
            return Ok(());
        }
        if start.elapsed() >= limit {
            return Err(now);
        }
        thread::sleep(Duration::from_millis(25));
    }
}

/// The proxy's descriptor count comes back to `baseline` within [`SETTLE`].
pub fn assert_fds_return(proxy: &ProxyProcess, baseline: usize, what: &str) {
    if let Err(now) = wait_for_fds(proxy.pid(), baseline, SETTLE) {
        let listing: Vec<String> = std::fs::read_dir(format!("/proc/{}/fd", proxy.pid()))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_link(e.path()).ok())
                    .map(|p| p.display().to_string())
                    .collect()
            })
            .unwrap_or_default();
        panic!("{what}: proxy holds {now} descriptors, baseline {baseline}: {listing:?}");
    }
}

/// The count once it has stopped changing (two equal readings 100 ms apart, at most 2 s).
pub fn stable_fd_count(pid: i32) -> usize {
    let start = Instant::now();
    let mut last = fd_count(pid);
    while start.elapsed() < Duration::from_secs(2) {
        thread::sleep(Duration::from_millis(100));
        let now = fd_count(pid);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// CPU time (user + system) the process has consumed, from /proc/PID/stat.
pub fn cpu_time(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/PID/stat");
    // The command name may contain spaces; the fields after its closing paren start at
    // field 3 (state), so utime (field 14) and stime (15) are at indexes 11 and 12.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 1..].split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Duration::from_micros(ticks * 1_000_000 / hz)
}

/// The share of one core the process used over `window` (1.0 = one core flat out).
pub fn cpu_share(pid: i32, window: Duration) -> f64 {
    let (cpu_before, start) = (cpu_time(pid), Instant::now());
    thread::sleep(window);
    let used = cpu_time(pid).saturating_sub(cpu_before);
    used.as_secs_f64() / start.elapsed().as_secs_f64()
}

/// The soft and hard "Max open files" of a process, from /proc/PID/limits.
pub fn nofile_limits(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files line");
    let mut numbers = line["Max open files".len()..].split_whitespace();
    (numbers.next().unwrap().to_string(), numbers.next().unwrap().to_string())
}

// ---------------------------------------------------------------------------------------------
// The proxy

/// Spawn the proxy binary under a hard `RLIMIT_NOFILE` of `nofile` (the binary raises its soft
/// limit to the hard one, so only a lower hard limit constrains it). The shell `exec`s the
/// binary, so the child's PID is the proxy's.
pub fn spawn_proxy_with_nofile(nofile: u64, extra: &[&str]) -> ProxyProcess {
    let mut command = Command::new("sh");
    command
        .arg("-c")
        // `ulimit -n` without -S/-H sets both limits; "$0" is the limit, "$@" the command.
        .arg("ulimit -n \"$0\" && exec \"$@\"")
        .arg(nofile.to_string())
        .arg(env!("CARGO_BIN_EXE_socksloop"))
        .args(["--listen", "127.0.0.1:0"])
        .args(extra);
    ProxyProcess::from_command(command)
}

/// The proxy process is still running (it has not crashed or exited).
pub fn assert_alive(proxy: &mut ProxyProcess, what: &str) {
    if let Some(status) = proxy.child.try_wait().expect("try_wait") {
        let tail: Vec<String> = proxy.stderr.lock().unwrap().iter().rev().take(20).cloned().collect();
        panic!("{what}: the proxy exited with {status}; last stderr lines (newest first): {tail:?}");
    }
}

/// A normal client is served: CONNECT to `echo` and round-trip a message.
pub fn assert_serves(proxy: SocketAddr, echo: &Target<u64>, what: &str) {
    let (mut stream, _) = socks_connect(proxy, echo.addr);
    assert_echo(&mut stream, format!("served after {what}").as_bytes());
}

/// Exercise the proxy once (a CONNECT by IP and one by name, so the resolver threads and
/// anything lazily opened exist), then return its settled descriptor count.
pub fn warm_up_and_count_fds(proxy: &ProxyProcess, echo: &Target<u64>) -> usize {
    assert_serves(proxy.addr, echo, "start");
    let (mut stream, _) = socks_connect(proxy.addr, Dest::Domain("localhost".into(), echo.addr.port()));
    assert_echo(&mut stream, b"warm-up by name");
    drop(stream);
    stable_fd_count(proxy.pid())
}

// ---------------------------------------------------------------------------------------------
// Client-side faults

/// How a test client goes away.
#[derive(Debug, Clone, Copy)]
pub enum Leave {
    /// close(): FIN.
    Close,
    /// SO_LINGER 0 then close(): RST.
    Reset,
}

pub const LEAVES: [Leave; 2] = [Leave::Close, Leave::Reset];

/// Close `stream` the way `how` says.
pub fn leave(stream: TcpStream, how: Leave) {
    if let Leave::Reset = how {
        SockRef::from(&stream).set_linger(Some(Duration::ZERO)).expect("SO_LINGER 0");
    }
    drop(stream);
}

// ---------------------------------------------------------------------------------------------
// Targets

/// A listener whose accept queue is full: Linux then drops further SYNs instead of refusing,
/// so a connect to it stays in SYN-SENT (as in `connect.rs`). Keep all three values alive.
pub fn black_hole() -> (Socket, Vec<TcpStream>, SocketAddr) {
    let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    listener.bind(&SocketAddr::from(([127, 0, 0, 1], 0)).into()).unwrap();
    listener.listen(0).unwrap();
    let addr = listener.local_addr().unwrap().as_socket().unwrap();
    let fillers: Vec<TcpStream> =
        (0..2).filter_map(|_| TcpStream::connect_timeout(&addr, Duration::from_millis(300)).ok()).collect();
    assert!(!fillers.is_empty(), "could not fill the black hole's accept queue");
    (listener, fillers, addr)
}

/// A UDP echo on a dual-stack socket; answers each datagram with its payload unchanged.
/// Runs until the test process ends.
pub fn udp_echo() -> u16 {
    udp_echo_with_prefix(b"")
}

/// A UDP echo on a dual-stack socket (`[::]:port`, so both 127.0.0.1 and ::1 reach it) that
/// answers each datagram with `prefix` + payload (a prefix proves the answer is the echo's,
/// not the datagram itself bounced back). Runs until the test process ends.
pub fn udp_echo_with_prefix(prefix: &'static [u8]) -> u16 {
    let socket = Socket::new(Domain::IPV6, Type::DGRAM, None).unwrap();
    socket.set_only_v6(false).unwrap();
    socket.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)).into()).unwrap();
    let socket: UdpSocket = socket.into();
    let port = socket.local_addr().unwrap().port();
    thread::spawn(move || {
        let mut buf = [0u8; 65536];
        while let Ok((n, from)) = socket.recv_from(&mut buf) {
            let reply = [prefix, &buf[..n]].concat();
            let _ = socket.send_to(&reply, from);
        }
    });
    port
}

/// `00 00 00 ATYP ADDR PORT` + payload: a SOCKS5 UDP datagram.
pub fn udp_datagram(dest: &Dest, payload: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 0];
    out.extend_from_slice(&request_bytes(CMD_UDP_ASSOCIATE, dest)[3..]);
    out.extend_from_slice(payload);
    out
}

/// The payload of a relayed UDP reply (after its IPv4 or IPv6 header).
pub fn udp_reply_payload(datagram: &[u8]) -> Option<&[u8]> {
    match datagram.get(3)? {
        1 => datagram.get(10..),
        4 => datagram.get(22..),
        _ => None,
    }
}

/// UDP ASSOCIATE over `control`'s proxy: the control connection and the relay address.
pub fn udp_associate(proxy: SocketAddr) -> (TcpStream, Reply) {
    let dest = Dest::Ip(SocketAddr::from(([0, 0, 0, 0], 0)));
    socks_request(proxy, CMD_UDP_ASSOCIATE, &dest)
}

/// An asyncio echo server in a python3 child process: targets for thousands of relays must
/// not share the test process's descriptor limit with the clients. Killed (by PID) on drop;
/// it also exits by itself when its stdin closes (if the test process dies).
pub struct PyEcho {
    child: Child,
    _stdin: ChildStdin,
    pub addr: SocketAddr,
}

const PY_ECHO: &str = r#"
import asyncio, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
async def handle(reader, writer):
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except Exception:
        pass
    finally:
        writer.close()
async def main():
    server = await asyncio.start_server(handle, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
asyncio.run(main())
"#;

impl PyEcho {
    pub fn start() -> PyEcho {
        let mut child = Command::new("python3")
            .args(["-c", PY_ECHO])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 is needed for the scale test's echo target");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(TIMEOUT).unwrap_or_default();
        let Ok(port) = line.trim().parse::<u16>() else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("python echo server said {line:?}");
        };
        PyEcho { child, _stdin: stdin, addr: SocketAddr::from(([127, 0, 0, 1], port)) }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }
}

impl Drop for PyEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Wait up to `wait` for bytes without consuming them: `true` if nothing arrived, for
/// "not answered yet".
pub fn nothing_arrives(stream: &mut TcpStream, wait: Duration) -> bool {
    stream.set_read_timeout(Some(wait)).unwrap();
    let mut buf = [0u8; 16];
    let silent = matches!(
        stream.peek(&mut buf),
        Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut)
    );
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    silent
}

/// Write all of `bytes`, ignoring failures (the proxy may already have closed on us).
pub fn write_ignoring_errors(stream: &mut TcpStream, bytes: &[u8]) {
    let _ = stream.write_all(bytes);
}
