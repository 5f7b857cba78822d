//! The servers the relay bench measures: socksloop in-process, the threaded baseline
//! in-process, and an external server from `SOCKSLOOP_BENCH_PEER`.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::{threaded_baseline, wire};

/// A server under test; dropping it stops it (socksloop, a child) or leaves it to the
/// process's end (the threaded baseline's accept loop has no stop).
pub enum Server {
    Direct,
    Socksloop(socksloop::Server),
    Threaded(SocketAddr),
    Peer { child: Child, addr: SocketAddr },
}

impl Server {
    pub fn route(&self) -> wire::Route {
        match self {
            Server::Direct => wire::Route::Direct,
            Server::Socksloop(s) => wire::Route::Proxy(s.local_addrs()[0]),
            Server::Threaded(addr) | Server::Peer { addr, .. } => wire::Route::Proxy(*addr),
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Server::Peer { child, .. } = self {
            let _ = child.kill(); // by PID: our child only
            let _ = child.wait();
        }
    }
}

pub fn socksloop() -> Server {
    let config = socksloop::Config {
        listen: vec!["127.0.0.1:0".parse().expect("valid address")],
        log_level: log::LevelFilter::Warn,
        ..Default::default()
    };
    Server::Socksloop(socksloop::Server::start(config).expect("socksloop starts"))
}

pub fn threaded() -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind for the threaded baseline");
    let addr = listener.local_addr().expect("bound address");
    thread::spawn(move || threaded_baseline::serve(listener));
    Server::Threaded(addr)
}

/// `SOCKSLOOP_BENCH_PEER`, e.g. `microsocks -i 127.0.0.1 -p {port}`: split on whitespace
/// (no shell, so the PID we kill is the server's), `{port}` replaced by a free port.
pub fn peer() -> Option<(String, Server)> {
    let template = std::env::var("SOCKSLOOP_BENCH_PEER").ok().filter(|t| !t.trim().is_empty())?;
    let port = TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).expect("free port").port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("valid address");
    let words: Vec<String> =
        template.split_whitespace().map(|w| w.replace("{port}", &port.to_string())).collect();
    let name = words[0].rsplit('/').next().unwrap_or("peer").to_string();
    let child = Command::new(&words[0])
        .args(&words[1..])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("SOCKSLOOP_BENCH_PEER: cannot start {template:?}: {e}"));
    let server = Server::Peer { child, addr };
    // Wait (bounded) until it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(5);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "SOCKSLOOP_BENCH_PEER: nothing listens on {addr} after 5 s");
        thread::sleep(Duration::from_millis(20));
    }
    Some((name, server))
}
