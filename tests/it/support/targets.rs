//! Targets the proxy connects to: a scriptable server (one thread per connection), an echo, a
//! data source that reports its progress, a black hole (a connect that never completes), and
//! an echo in another process for tests with thousands of relays.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::Duration;

use socket2::{Domain, Socket, Type};

use super::*;

/// A target server: each accepted connection runs `handler` on its own thread; handler
/// results (and accepted peer addresses) come back over channels.
pub struct Target<T> {
    pub addr: SocketAddr,
    pub peers: Receiver<SocketAddr>,
    pub results: Receiver<T>,
}

impl<T: Send + 'static> Target<T> {
    /// Bind `bind` (port 0) and serve. The accept thread lives for the rest of the test
    /// process; it only costs a blocked thread.
    pub fn start(
        bind: &str,
        handler: impl Fn(TcpStream, SocketAddr) -> T + Send + Sync + 'static,
    ) -> Target<T> {
        let listener = TcpListener::bind(bind).expect("bind target");
        let addr = listener.local_addr().unwrap();
        let (peer_tx, peers) = mpsc::channel();
        let (result_tx, results) = mpsc::channel();
        let handler = Arc::new(handler);
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let peer = stream.peer_addr().unwrap();
                stream.set_read_timeout(Some(TIMEOUT)).unwrap();
                stream.set_write_timeout(Some(TIMEOUT)).unwrap();
                if peer_tx.send(peer).is_err() {
                    break; // the test is gone
                }
                let (handler, result_tx) = (Arc::clone(&handler), result_tx.clone());
                thread::spawn(move || {
                    let _ = result_tx.send(handler(stream, peer));
                });
            }
        });
        Target { addr, peers, results }
    }

    pub fn next_peer(&self) -> SocketAddr {
        self.peers.recv_timeout(TIMEOUT).expect("target saw no connection")
    }

    pub fn next_result(&self) -> T {
        self.next_result_within(Duration::from_secs(60))
    }

    pub fn next_result_within(&self, limit: Duration) -> T {
        self.results.recv_timeout(limit).expect("target handler did not finish")
    }
}

/// An echo server: copies everything back, half-closes on EOF. Result: bytes echoed.
pub fn echo_server(bind: &str) -> Target<u64> {
    Target::start(bind, |mut stream, _| {
        let mut buf = [0u8; 16 * 1024];
        let mut total = 0u64;
        loop {
            match stream.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    total += n as u64;
                }
            }
        }
        let _ = stream.shutdown(Shutdown::Write);
        total
    })
}

/// A target that writes `len` bytes of stream `seed` as fast as it can, then half-closes;
/// its result says whether the write completed, and [`SourceTarget::written`] how far it got.
pub struct SourceTarget {
    pub target: Target<Result<(), String>>,
    pub len: usize,
    written: Arc<AtomicU64>,
}

impl SourceTarget {
    pub fn start(seed: u64, len: usize) -> SourceTarget {
        let written = Arc::new(AtomicU64::new(0));
        let counter = Arc::clone(&written);
        let target = Target::start("127.0.0.1:0", move |mut stream, _| {
            let result = write_stream_counting(&mut stream, seed, len, &counter).map_err(|e| e.to_string());
            let _ = stream.shutdown(Shutdown::Write);
            result
        });
        SourceTarget { target, len, written }
    }

    /// Bytes the source's writes have handed to its socket so far.
    pub fn written(&self) -> u64 {
        self.written.load(Ordering::SeqCst)
    }
}

/// A free loopback port nothing listens on (bind, note the port, drop).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// A listener whose accept queue is full: Linux then drops further SYNs instead of refusing,
/// so a connect to it stays in SYN-SENT. Backlog 0 means one queued connection fills it; the
/// fillers are never accepted. Keep all three values alive.
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
}

impl Drop for PyEcho {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
