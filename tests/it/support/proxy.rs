//! Starting the proxy, in-process ([`start_server`]) or as the binary ([`ProxyProcess`]), and
//! the checks a test ends with after a fault: still alive, still serving, every descriptor
//! given back.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, Once};
use std::thread;
use std::time::Duration;

use socksloop::{Config, Server};

use super::*;

/// Start an in-process proxy on 127.0.0.1:0 with default settings.
pub fn start_server() -> Server {
    start_server_with(|_| {})
}

/// Start an in-process proxy on 127.0.0.1:0 after `tweak` adjusts the config.
pub fn start_server_with(tweak: impl FnOnce(&mut Config)) -> Server {
    // Tests run in parallel in one process, and some open hundreds of sockets: lift the soft
    // fd limit once so the derived connection cap and the test's own sockets have room.
    static RAISE: Once = Once::new();
    RAISE.call_once(|| {
        let _ = socksloop::limits::raise_nofile_limit();
    });
    let mut config = Config {
        listen: vec!["127.0.0.1:0".parse().unwrap()],
        log_level: log::LevelFilter::Warn,
        ..Default::default()
    };
    tweak(&mut config);
    Server::start(config).expect("proxy starts")
}

pub fn proxy_addr(server: &Server) -> SocketAddr {
    server.local_addrs()[0]
}

/// The proxy binary as a command, its stdin closed.
pub fn bin() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_socksloop"));
    command.stdin(Stdio::null());
    command
}

/// Run `command` to completion, killed after [`TIMEOUT`] so a proxy that starts by mistake
/// fails the test instead of hanging it.
pub fn run_to_exit(mut command: Command) -> Output {
    let mut child = command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    if wait_child(&mut child, TIMEOUT).is_none() {
        let _ = child.kill();
        let _ = child.wait();
        panic!("{command:?} did not exit");
    }
    child.wait_with_output().unwrap()
}

/// Poll `child` until it exits or `limit` passes (bounded: no test can hang on a child).
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    poll_until(limit, || child.try_wait().expect("try_wait"))
}

/// The proxy binary running as a child process. Killed (by PID) on drop.
pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every stderr line so far (drained continuously: a full pipe would block the proxy's
    /// log writer and lose lines; see [`ProxyProcess::spawn_holding_output`] for a test of
    /// that).
    pub stderr: Arc<Mutex<Vec<String>>>,
    /// Every stdout line so far (the JSON access log), drained the same way.
    pub stdout: Arc<Mutex<Vec<String>>>,
    /// Closed while the output is held unread; opened on release and on drop.
    output_gate: Gate,
}

/// A gate the output readers wait at: closed holds them, open lets them read.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open() -> Gate {
        let gate = Gate::default();
        gate.release();
        gate
    }

    fn release(&self) {
        *self.0.0.lock().unwrap() = true;
        self.0.1.notify_all();
    }

    fn pass(&self) {
        let mut open = self.0.0.lock().unwrap();
        while !*open {
            open = self.0.1.wait(open).unwrap();
        }
    }
}

impl ProxyProcess {
    /// Spawn the binary with `--listen 127.0.0.1:0` plus `extra` and wait for its
    /// "listening on" line to learn the port.
    pub fn spawn(extra: &[&str]) -> ProxyProcess {
        let mut command = bin();
        command.args(["--listen", "127.0.0.1:0"]).args(extra);
        ProxyProcess::from_command(command)
    }

    /// Like [`ProxyProcess::spawn`], but after the "listening on" line nobody reads the
    /// proxy's stderr or stdout until [`ProxyProcess::release_output`]: like a journald that
    /// stopped reading, or a pipe into a pager left open. Both pipes are shrunk to one page
    /// so they fill after a few lines.
    pub fn spawn_holding_output(extra: &[&str]) -> ProxyProcess {
        let mut command = bin();
        command.args(["--listen", "127.0.0.1:0"]).args(extra);
        ProxyProcess::start(command, Gate::default(), Some(4096))
    }

    /// Spawn the binary under a hard `RLIMIT_NOFILE` of `nofile` (the binary raises its soft
    /// limit to the hard one, so only a lower hard limit constrains it). The shell `exec`s the
    /// binary, so the child's PID is the proxy's.
    pub fn spawn_with_nofile(nofile: u64, extra: &[&str]) -> ProxyProcess {
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

    /// Spawn `command` (which must end up exec'ing the proxy, so the child's PID is the
    /// proxy's) and wait for its "listening on" line to learn the port.
    pub fn from_command(command: Command) -> ProxyProcess {
        ProxyProcess::start(command, Gate::open(), None)
    }

    /// Spawn with stdout and stderr read by threads that pass `gate` before reading on (after
    /// the "listening on" line, for stderr); `pipe_size` shrinks both pipes.
    fn start(mut command: Command, gate: Gate, pipe_size: Option<i32>) -> ProxyProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn socksloop");
        let stderr = child.stderr.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        if let Some(size) = pipe_size {
            use std::os::fd::AsRawFd;
            for fd in [stderr.as_raw_fd(), stdout.as_raw_fd()] {
                // SAFETY: fcntl on a pipe descriptor we own; no memory is involved.
                let set = unsafe { libc::fcntl(fd, libc::F_SETPIPE_SZ, size) };
                assert!(set >= size, "F_SETPIPE_SZ: {}", std::io::Error::last_os_error());
            }
        }
        let (err_lines, out_lines) = (Arc::new(Mutex::new(Vec::new())), Arc::new(Mutex::new(Vec::new())));
        let (tx, rx) = mpsc::channel();
        {
            let (lines, gate) = (Arc::clone(&err_lines), gate.clone());
            thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    let listening = listening_addr(&line);
                    lines.lock().unwrap().push(line);
                    if let Some(addr) = listening
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(addr);
                        gate.pass();
                    }
                }
            });
        }
        {
            let (lines, gate) = (Arc::clone(&out_lines), gate.clone());
            thread::spawn(move || {
                gate.pass();
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    lines.lock().unwrap().push(line);
                }
            });
        }
        match rx.recv_timeout(TIMEOUT) {
            Ok(addr) => ProxyProcess { child, addr, stderr: err_lines, stdout: out_lines, output_gate: gate },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                gate.release();
                panic!("no 'listening on' line from socksloop; stderr: {:?}", err_lines.lock().unwrap());
            }
        }
    }

    /// Start reading the output held since the start ([`ProxyProcess::spawn_holding_output`]).
    pub fn release_output(&self) {
        self.output_gate.release();
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Resident set size of the proxy process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid())
    }

    /// Wait for the process to exit, at most `limit`; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<ExitStatus> {
        wait_child(&mut self.child, limit)
    }

    /// Send signal `sig` to the proxy.
    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's PID; no memory is involved.
        assert_eq!(unsafe { libc::kill(self.pid(), sig) }, 0);
    }

    /// Whether a stderr line containing `needle` shows up within `limit`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        poll_until(limit, || self.stderr.lock().unwrap().iter().any(|l| l.contains(needle)).then_some(()))
            .is_some()
    }

    /// The first stdout line containing `needle`, waiting for it at most `limit`.
    pub fn wait_for_stdout(&self, needle: &str, limit: Duration) -> Option<String> {
        poll_until(limit, || self.stdout.lock().unwrap().iter().find(|l| l.contains(needle)).cloned())
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        // Readers held at the gate read to the end of the pipes and finish.
        self.output_gate.release();
    }
}

/// Parse `... listening on 127.0.0.1:PORT` from a log line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
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
/// anything lazily opened exist), then return its descriptor count once it is idle again.
pub fn warm_up_and_count_fds(proxy: &ProxyProcess, echo: &Target<u64>) -> usize {
    assert_serves(proxy.addr, echo, "start");
    let (mut stream, _) = socks_connect(proxy.addr, Dest::Domain("localhost".into(), echo.addr.port()));
    assert_echo(&mut stream, b"warm-up by name");
    drop(stream);
    settled_fd_count(proxy.pid())
}

/// A proxy child spawned with `extra`, an echo target, and the proxy's settled descriptor
/// count after a warm-up.
pub fn spawn_warm(extra: &[&str]) -> (ProxyProcess, Target<u64>, usize) {
    let echo = echo_server("127.0.0.1:0");
    let proxy = ProxyProcess::spawn(extra);
    let baseline = warm_up_and_count_fds(&proxy, &echo);
    (proxy, echo, baseline)
}

/// The common ending of a fault test: still alive, still serving, and every descriptor given
/// back.
pub fn assert_recovered(proxy: &mut ProxyProcess, echo: &Target<u64>, baseline: usize, what: &str) {
    assert_alive(proxy, what);
    assert_serves(proxy.addr, echo, what);
    assert_fds_return(proxy, baseline, what);
}
