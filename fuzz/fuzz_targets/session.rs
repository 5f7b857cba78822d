//! Drives the whole server, every connection phase, with arbitrary bytes from both sides.
//!
//! The parser targets check the codec alone; this one checks the state machine around it:
//! handshake, auth-less CONNECT, relaying, half-close, timeouts and rejections, fed with
//! whatever the fuzzer invents for the client *and* for the upstream. It uses real loopback
//! sockets (so it is slow: hundreds to thousands of runs a second), and it refuses to run
//! unless the process sits in a network namespace whose only interface is `lo`, so that no
//! DNS query for a fuzzed name can leave the machine:
//!
//! ```sh
//! unshare -n sh -c 'ip link set lo up && RUSTC_BOOTSTRAP=1 cargo fuzz run --fuzz-dir fuzz session'
//! ```
//!
//! Input: byte 0 holds flags (bit 0: the harness first sends a valid greeting and a CONNECT
//! to its own upstream, making the client bytes payload; bit 1: the client half-closes after
//! writing), bytes 1-2 the length of the client part; the rest after the client part is what
//! the upstream sends. Invariants: no crash, every connection ends within a bounded time, and
//! the server still answers a greeting afterwards.

#![no_main]

use std::collections::VecDeque;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use socksloop::{Config, Server};

struct Harness {
    proxy: SocketAddr,
    upstream: SocketAddr,
    /// What the upstream sends to each connection it accepts, in order.
    upstream_script: Arc<Mutex<VecDeque<Vec<u8>>>>,
    runs: AtomicU64,
    _server: Server,
}

/// `/proc/net/dev` lists the interfaces of this process's own network namespace (unlike
/// `/sys/class/net`, which shows the namespace sysfs was mounted in).
fn only_loopback_interfaces() -> bool {
    match std::fs::read_to_string("/proc/net/dev") {
        Ok(table) => table.lines().skip(2).all(|line| line.trim_start().starts_with("lo:")),
        Err(_) => false,
    }
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        assert!(
            only_loopback_interfaces(),
            "run this target in a network namespace with only `lo` (see the module docs)"
        );
        let config = Config {
            listen: vec!["127.0.0.1:0".parse().unwrap()],
            handshake_timeout: Duration::from_millis(200),
            connect_timeout: Duration::from_millis(200),
            idle_timeout: Duration::from_millis(300),
            rules: socksloop::acl::Rules {
                allow_dest: vec!["127.0.0.0/8".parse().unwrap()],
                ..Default::default()
            },
            ..Default::default()
        };
        let server = Server::start(config).expect("proxy starts");
        let proxy = server.local_addrs()[0];
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = listener.local_addr().unwrap();
        let upstream_script: Arc<Mutex<VecDeque<Vec<u8>>>> = Arc::default();
        let script = Arc::clone(&upstream_script);
        thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let bytes = script.lock().unwrap().pop_front().unwrap_or_default();
                thread::spawn(move || serve_upstream(stream, &bytes));
            }
        });
        Harness { proxy, upstream, upstream_script, runs: AtomicU64::new(0), _server: server }
    })
}

/// The upstream's side of one connection: send the scripted bytes, half-close, and read
/// whatever comes until EOF or a short timeout.
fn serve_upstream(mut stream: TcpStream, bytes: &[u8]) {
    let _ = stream.set_read_timeout(Some(Duration::from_millis(300)));
    let _ = stream.set_write_timeout(Some(Duration::from_millis(300)));
    let _ = stream.write_all(bytes);
    let _ = stream.shutdown(Shutdown::Write);
    drain(&mut stream, Duration::from_millis(600));
}

/// Read until EOF, an error, or `limit`; bounded in time whatever the peer does.
fn drain(stream: &mut TcpStream, limit: Duration) -> usize {
    let start = Instant::now();
    let mut buf = [0u8; 4096];
    let mut total = 0;
    while start.elapsed() < limit {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => total += n,
        }
    }
    total
}

fn connect_request(target: SocketAddr) -> Vec<u8> {
    let SocketAddr::V4(v4) = target else { unreachable!("the upstream is on 127.0.0.1") };
    let mut bytes = vec![5, 1, 0, 5, 1, 0, 1];
    bytes.extend_from_slice(&v4.ip().octets());
    bytes.extend_from_slice(&v4.port().to_be_bytes());
    bytes
}

/// The server still completes a greeting.
fn assert_serving(proxy: SocketAddr) {
    let mut stream = TcpStream::connect_timeout(&proxy, Duration::from_secs(2)).expect("proxy accepts");
    stream.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    stream.write_all(&[5, 1, 0]).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).expect("proxy answers a greeting");
    assert_eq!(answer, [5, 0]);
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else { return };
    let Some((len, rest)) = rest.split_first_chunk::<2>() else { return };
    let client_len = usize::from(u16::from_le_bytes(*len)).min(rest.len());
    let (client_bytes, upstream_bytes) = rest.split_at(client_len);
    let h = harness();

    let Ok(mut client) = TcpStream::connect_timeout(&h.proxy, Duration::from_secs(2)) else {
        panic!("the proxy stopped accepting");
    };
    let _ = client.set_read_timeout(Some(Duration::from_millis(300)));
    let _ = client.set_write_timeout(Some(Duration::from_millis(300)));
    if flags & 1 == 1 {
        h.upstream_script.lock().unwrap().push_back(upstream_bytes.to_vec());
        let _ = client.write_all(&connect_request(h.upstream));
    }
    let _ = client.write_all(client_bytes);
    if flags & 2 == 2 {
        let _ = client.shutdown(Shutdown::Write);
    }
    drain(&mut client, Duration::from_secs(1));
    drop(client);

    if h.runs.fetch_add(1, Ordering::Relaxed) % 256 == 255 {
        assert_serving(h.proxy);
    }
});
