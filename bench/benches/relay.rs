//! End-to-end relay benchmarks over loopback: a 16 MiB verified download, and one complete
//! short connection (connect, greeting, CONNECT, 64-byte echo, close), through
//!
//! * `direct`: no proxy, the machine's limit;
//! * `socksloop`: in-process, `socksloop::Server::start`;
//! * `threaded`: the thread-per-connection baseline (`socksloop_bench::threaded_baseline`);
//! * the server named by `SOCKSLOOP_BENCH_PEER` (e.g. `microsocks -i 127.0.0.1 -p {port}`),
//!   started as a child process on a free port and killed by PID afterwards.
//!
//! Everything shares this process and the machine's cores, so compare servers with each
//! other, not with the pinned `socksloop-bench` numbers in docs/benchmarks.md.

use std::io::{Read, Write};
use std::time::Duration;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use socksloop_bench::pattern::{MAX_CHUNK, Pattern};
use socksloop_bench::servers::{self, Server};
use socksloop_bench::target::Target;
use socksloop_bench::wire::{self, HEADER_LEN, Header, Mode, Route};

const DOWNLOAD: u64 = 16 << 20;
const TIMEOUT: Duration = Duration::from_secs(10);
const SEED: u64 = 0x50c5_100b;

fn all_servers() -> Vec<(String, Server)> {
    let mut all = vec![
        ("direct".to_string(), Server::Direct),
        ("socksloop".to_string(), servers::socksloop()),
        ("threaded".to_string(), servers::threaded()),
    ];
    all.extend(servers::peer());
    all
}

/// One connection, 16 MiB downloaded and checked byte for byte.
fn download(route: Route, target: std::net::SocketAddr, pattern: &Pattern, buf: &mut [u8]) {
    let (mut stream, _) = wire::open(route, target, TIMEOUT).expect("tunnel opens");
    stream.write_all(&Header { mode: Mode::Download, seed: SEED, len: DOWNLOAD }.encode()).expect("header");
    let mut got = 0u64;
    loop {
        let n = stream.read(buf).expect("read");
        if n == 0 {
            break;
        }
        assert!(pattern.verify(got, &buf[..n]), "corrupt download at {got}");
        got += n as u64;
    }
    assert_eq!(got, DOWNLOAD);
}

/// One complete short connection with a 64-byte echo.
fn connect_echo(route: Route, target: std::net::SocketAddr) {
    let (mut stream, _) = wire::open(route, target, TIMEOUT).expect("tunnel opens");
    let mut message = [7u8; HEADER_LEN + 64];
    message[..HEADER_LEN].copy_from_slice(&Header { mode: Mode::Echo, seed: 0, len: 0 }.encode());
    stream.write_all(&message).expect("write");
    let mut echo = [0u8; 64];
    stream.read_exact(&mut echo).expect("echo");
    assert_eq!(echo, [7u8; 64]);
}

fn relay(c: &mut Criterion) {
    let target = Target::start("127.0.0.1:0".parse().expect("valid address")).expect("target starts");
    let addr = target.addr();
    let servers = all_servers();
    let pattern = Pattern::new(SEED);
    let mut buf = vec![0u8; MAX_CHUNK];

    let mut group = c.benchmark_group("relay_download_16MiB");
    group.throughput(Throughput::Bytes(DOWNLOAD)).sample_size(10).measurement_time(Duration::from_secs(4));
    for (name, server) in &servers {
        let route = server.route();
        group.bench_function(name.as_str(), |b| b.iter(|| download(route, addr, &pattern, &mut buf)));
    }
    group.finish();

    let mut group = c.benchmark_group("relay_connect_echo");
    group.throughput(Throughput::Elements(1)).measurement_time(Duration::from_secs(3));
    for (name, server) in &servers {
        let route = server.route();
        group.bench_function(name.as_str(), |b| b.iter(|| connect_echo(route, addr)));
    }
    group.finish();
    drop(servers); // stop servers (and kill the peer) before the target goes
}

criterion_group!(benches, relay);
criterion_main!(benches);
