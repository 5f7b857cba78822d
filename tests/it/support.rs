//! Shared helpers: starting the proxy (in-process or as the binary), a small blocking SOCKS5
//! client, echo and scriptable target servers, and a deterministic data stream with its verifier.

#![allow(dead_code)] // each test module uses a different subset

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex, Once};
use std::thread;
use std::time::{Duration, Instant};

use socksloop::{Config, Server};

/// Default read/write timeout: generous, so only a real hang fails a test.
pub const TIMEOUT: Duration = Duration::from_secs(10);

pub const NO_AUTH: u8 = 0x00;
pub const CMD_CONNECT: u8 = 0x01;
pub const CMD_BIND: u8 = 0x02;
pub const CMD_UDP_ASSOCIATE: u8 = 0x03;

pub const REP_OK: u8 = 0x00;
pub const REP_HOST_UNREACHABLE: u8 = 0x04;
pub const REP_REFUSED: u8 = 0x05;
pub const REP_TTL_EXPIRED: u8 = 0x06;
pub const REP_CMD_NOT_SUPPORTED: u8 = 0x07;
pub const REP_ATYP_NOT_SUPPORTED: u8 = 0x08;

pub const MIB: usize = 1 << 20;

// ---------------------------------------------------------------------------------------------
// Proxy

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

/// The proxy binary running as a child process. Killed (by PID) on drop.
pub struct ProxyProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// Every stderr line so far (drained continuously: a full pipe would block the proxy's
    /// logging and with it the event loop).
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl ProxyProcess {
    /// Spawn the binary with `--listen 127.0.0.1:0` plus `extra` and wait for its
    /// "listening on" line to learn the port.
    pub fn spawn(extra: &[&str]) -> ProxyProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_socksloop"));
        command.args(["--listen", "127.0.0.1:0"]).args(extra);
        ProxyProcess::from_command(command)
    }

    /// Spawn `command` (which must end up exec'ing the proxy, so the child's PID is the
    /// proxy's) and wait for its "listening on" line to learn the port.
    pub fn from_command(mut command: Command) -> ProxyProcess {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn socksloop");
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let lines = Arc::clone(&lines);
            thread::spawn(move || {
                let mut tx = Some(tx);
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addr) = listening_addr(&line)
                        && let Some(tx) = tx.take()
                    {
                        let _ = tx.send(addr);
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        match rx.recv_timeout(TIMEOUT) {
            Ok(addr) => ProxyProcess { child, addr, stderr: lines },
            Err(_) => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("no 'listening on' line from socksloop; stderr: {:?}", lines.lock().unwrap());
            }
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Resident set size of the proxy process, from /proc/PID/status, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("read status");
        let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
        let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kb * 1024
    }

    /// Wait for the process to exit, at most `limit`; its exit status.
    pub fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        wait_child(&mut self.child, limit)
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Poll `child` until it exits or `limit` passes (bounded: no test can hang on a child).
pub fn wait_child(child: &mut Child, limit: Duration) -> Option<std::process::ExitStatus> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        thread::sleep(Duration::from_millis(20));
    }
    None
}

/// Parse `... listening on 127.0.0.1:PORT` from a log line.
pub fn listening_addr(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("listening on ")? + "listening on ".len()..];
    rest.split_whitespace().next()?.parse().ok()
}

// ---------------------------------------------------------------------------------------------
// SOCKS5 client

/// Where a request points.
#[derive(Clone, Debug)]
pub enum Dest {
    Ip(SocketAddr),
    Domain(String, u16),
}

impl From<SocketAddr> for Dest {
    fn from(addr: SocketAddr) -> Dest {
        Dest::Ip(addr)
    }
}

/// A parsed reply: `05 REP 00 ATYP BND.ADDR BND.PORT`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u8,
    pub bound: Bound,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Bound {
    Ip(SocketAddr),
    Domain(String, u16),
}

/// A TCP connection to `addr` with read and write timeouts set, so a hang fails.
pub fn tcp_connect(addr: SocketAddr) -> TcpStream {
    let stream = TcpStream::connect_timeout(&addr, TIMEOUT).expect("connect");
    stream.set_read_timeout(Some(TIMEOUT)).unwrap();
    stream.set_write_timeout(Some(TIMEOUT)).unwrap();
    stream
}

pub fn greeting_bytes() -> Vec<u8> {
    vec![5, 1, NO_AUTH]
}

/// Send `05 01 00` and expect `05 00`.
pub fn greet(stream: &mut TcpStream) {
    stream.write_all(&greeting_bytes()).unwrap();
    let mut answer = [0u8; 2];
    stream.read_exact(&mut answer).expect("method selection");
    assert_eq!(answer, [5, NO_AUTH], "method selection");
}

/// Encode `05 CMD 00 ATYP ADDR PORT`.
pub fn request_bytes(cmd: u8, dest: &Dest) -> Vec<u8> {
    let mut out = vec![5, cmd, 0];
    match dest {
        Dest::Ip(SocketAddr::V4(a)) => {
            out.push(1);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Ip(SocketAddr::V6(a)) => {
            out.push(4);
            out.extend_from_slice(&a.ip().octets());
            out.extend_from_slice(&a.port().to_be_bytes());
        }
        Dest::Domain(host, port) => {
            assert!(host.len() <= 255);
            out.push(3);
            out.push(host.len() as u8);
            out.extend_from_slice(host.as_bytes());
            out.extend_from_slice(&port.to_be_bytes());
        }
    }
    out
}

/// Read one complete reply, however the variable-length BND.ADDR arrives.
pub fn read_reply(stream: &mut impl Read) -> io::Result<Reply> {
    let mut head = [0u8; 4];
    stream.read_exact(&mut head)?;
    if head[0] != 5 || head[2] != 0 {
        return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad reply head {head:?}")));
    }
    let bound = match head[3] {
        1 => {
            let mut b = [0u8; 6];
            stream.read_exact(&mut b)?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Bound::Ip(SocketAddr::new(ip.into(), u16::from_be_bytes([b[4], b[5]])))
        }
        4 => {
            let mut b = [0u8; 18];
            stream.read_exact(&mut b)?;
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&b[..16]).unwrap());
            Bound::Ip(SocketAddr::new(ip.into(), u16::from_be_bytes([b[16], b[17]])))
        }
        3 => {
            let mut len = [0u8; 1];
            stream.read_exact(&mut len)?;
            let mut b = vec![0u8; len[0] as usize + 2];
            stream.read_exact(&mut b)?;
            let port = u16::from_be_bytes([b[b.len() - 2], b[b.len() - 1]]);
            b.truncate(len[0] as usize);
            Bound::Domain(String::from_utf8_lossy(&b).into_owned(), port)
        }
        other => {
            return Err(io::Error::new(io::ErrorKind::InvalidData, format!("bad reply ATYP {other}")));
        }
    };
    Ok(Reply { code: head[1], bound })
}

/// Greet, send a request, and read its reply.
pub fn socks_request(proxy: SocketAddr, cmd: u8, dest: &Dest) -> (TcpStream, Reply) {
    let mut stream = tcp_connect(proxy);
    greet(&mut stream);
    stream.write_all(&request_bytes(cmd, dest)).unwrap();
    let reply = read_reply(&mut stream).expect("reply");
    (stream, reply)
}

/// CONNECT through the proxy and insist on success.
pub fn socks_connect(proxy: SocketAddr, dest: impl Into<Dest>) -> (TcpStream, Reply) {
    let dest = dest.into();
    let (stream, reply) = socks_request(proxy, CMD_CONNECT, &dest);
    assert_eq!(reply.code, REP_OK, "CONNECT {dest:?} failed: {reply:?}");
    (stream, reply)
}

/// Read until EOF (or a reset, which also ends the stream); everything read.
pub fn read_to_close(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(out),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return Ok(out),
            Err(e) => return Err(e),
        }
    }
}

/// Expect the server to close `stream` without sending anything more: the read must end in
/// EOF or a reset before the socket's read timeout.
pub fn expect_closed(stream: &mut TcpStream, what: &str) {
    match read_to_close(stream) {
        Ok(rest) => assert!(rest.is_empty(), "{what}: unexpected bytes before close: {rest:?}"),
        Err(e) => panic!("{what}: not closed: {e}"),
    }
}

/// Round-trip `msg` through an echo relay.
pub fn assert_echo(stream: &mut TcpStream, msg: &[u8]) {
    stream.write_all(msg).unwrap();
    let mut back = vec![0u8; msg.len()];
    stream.read_exact(&mut back).expect("echo");
    assert_eq!(back, msg);
}

// ---------------------------------------------------------------------------------------------
// Target servers

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

/// A free loopback port nothing listens on (bind, note the port, drop).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

// ---------------------------------------------------------------------------------------------
// Deterministic data

/// xorshift64 stream, produced in little-endian 8-byte words; any chunking of reads or writes
/// yields the same byte sequence for a seed.
pub struct DataGen {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl DataGen {
    pub fn new(seed: u64) -> DataGen {
        // xorshift must never have state 0; mix the seed so small seeds still look random.
        let state = (seed ^ 0x9E37_79B9_7F4A_7C15).max(1);
        DataGen { state, word: [0; 8], used: 8 }
    }

    fn next_word(&mut self) -> u64 {
        let mut x = self.state;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.state = x;
        x
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut i = 0;
        // Finish a partly used word first, then whole words, then start a new one.
        while self.used < 8 && i < buf.len() {
            buf[i] = self.word[self.used];
            self.used += 1;
            i += 1;
        }
        let mut words = buf[i..].chunks_exact_mut(8);
        for chunk in &mut words {
            chunk.copy_from_slice(&self.next_word().to_le_bytes());
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            self.word = self.next_word().to_le_bytes();
            let n = tail.len();
            tail.copy_from_slice(&self.word[..n]);
            self.used = n;
        }
    }

    pub fn bytes(seed: u64, len: usize) -> Vec<u8> {
        let mut out = vec![0u8; len];
        DataGen::new(seed).fill(&mut out);
        out
    }
}

/// Checks received bytes against a regenerated stream.
pub struct Verifier {
    generator: DataGen,
    scratch: Vec<u8>,
    pub offset: u64,
}

impl Verifier {
    pub fn new(seed: u64) -> Verifier {
        Verifier { generator: DataGen::new(seed), scratch: Vec::new(), offset: 0 }
    }

    pub fn check(&mut self, data: &[u8]) -> Result<(), String> {
        self.scratch.resize(data.len(), 0);
        self.generator.fill(&mut self.scratch);
        if let Some(i) = data.iter().zip(&self.scratch).position(|(a, b)| a != b) {
            return Err(format!("stream corrupt at byte {}", self.offset + i as u64));
        }
        self.offset += data.len() as u64;
        Ok(())
    }
}

/// Write `len` bytes of stream `seed` in 64 KiB chunks.
pub fn write_stream(stream: &mut impl Write, seed: u64, len: usize) -> io::Result<()> {
    let mut generator = DataGen::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        generator.fill(&mut buf[..n]);
        stream.write_all(&buf[..n])?;
        left -= n;
    }
    Ok(())
}

/// Read until EOF, verifying stream `seed`; the number of bytes read.
pub fn read_and_verify(stream: &mut impl Read, seed: u64) -> Result<u64, String> {
    let mut verifier = Verifier::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return Ok(verifier.offset),
            Ok(n) => verifier.check(&buf[..n])?,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("read failed after {} bytes: {e}", verifier.offset)),
        }
    }
}

/// A slow reader: about a second of 1 KiB reads with 10 ms pauses (500 at most), each checked
/// by `verifier`, while the sender writes flat out; `sample` runs after every 20th read.
pub fn read_slowly(stream: &mut impl Read, verifier: &mut Verifier, mut sample: impl FnMut()) {
    let mut buf = [0u8; 1024];
    let slow_until = Instant::now() + Duration::from_secs(1);
    let mut reads = 0u32;
    while Instant::now() < slow_until && reads < 500 {
        let n = stream.read(&mut buf).unwrap();
        assert!(n > 0, "early EOF");
        verifier.check(&buf[..n]).unwrap();
        reads += 1;
        thread::sleep(Duration::from_millis(10));
        if reads.is_multiple_of(20) {
            sample();
        }
    }
}

/// Read until the stream ends by EOF or a reset, verifying what arrives is a prefix of stream
/// `seed`; the number of bytes read. Any other error (a timeout: the relay hangs) panics.
pub fn read_verified_prefix(stream: &mut impl Read, seed: u64) -> u64 {
    let mut verifier = Verifier::new(seed);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut buf) {
            Ok(0) => return verifier.offset,
            Ok(n) => verifier.check(&buf[..n]).unwrap(),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return verifier.offset,
            Err(e) => panic!("the stream hangs instead of ending ({} bytes read): {e}", verifier.offset),
        }
    }
}

/// A target that writes `len` bytes of stream `seed` as fast as it can, then half-closes.
/// Result: whether the write completed.
pub fn source_target(seed: u64, len: usize) -> Target<Result<(), String>> {
    Target::start("127.0.0.1:0", move |mut stream, _| {
        let result = write_stream(&mut stream, seed, len).map_err(|e| e.to_string());
        let _ = stream.shutdown(Shutdown::Write);
        result
    })
}

/// FNV-1a 64: a cheap checksum to compare two byte sequences.
pub fn checksum(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3))
}

#[test]
fn data_gen_is_independent_of_chunking() {
    let whole = DataGen::bytes(7, 1000);
    let mut generator = DataGen::new(7);
    let mut pieces = Vec::new();
    for size in [1, 3, 8, 13, 5, 64, 906] {
        let mut buf = vec![0u8; size];
        generator.fill(&mut buf);
        pieces.extend_from_slice(&buf);
    }
    assert_eq!(pieces, whole);
    let mut verifier = Verifier::new(7);
    verifier.check(&whole[..5]).unwrap();
    verifier.check(&whole[5..]).unwrap();
    assert!(Verifier::new(8).check(&whole).is_err());
    assert_ne!(checksum(&whole), checksum(&DataGen::bytes(8, 1000)));
}
