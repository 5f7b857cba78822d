//! Backpressure: a client that reads slowly must not make the proxy buffer what the target
//! pushes. Runs the binary so its resident memory can be read from /proc.

use std::io::Read;
use std::time::Duration;

use crate::support::*;

const TOTAL: usize = 256 * MIB;
const SEED: u64 = 0xbeef;
/// Generous: the relay holds at most one 64 KiB scratch plus pending bytes per pipe, so
/// anything near this means the proxy buffers what the socket buffers refuse.
const RSS_LIMIT: u64 = 40 * MIB as u64;

#[test]
fn slow_reader_keeps_proxy_memory_bounded() {
    let proxy = ProxyProcess::spawn(&[]);
    let rss_start = proxy.rss_bytes();
    let target = source_target(SEED, TOTAL);
    let (mut stream, _) = socks_connect(proxy.addr, target.addr);
    // The fast phase moves 256 MiB; allow for a slow machine.
    stream.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    let mut verifier = Verifier::new(SEED);
    let mut buf = vec![0u8; 64 * 1024];
    let mut rss_peak = 0u64;
    // Slow phase: ~1 s of small reads with pauses while the target writes flat out.
    read_slowly(&mut stream, &mut verifier, || rss_peak = rss_peak.max(proxy.rss_bytes()));
    let rss_slow = proxy.rss_bytes();
    rss_peak = rss_peak.max(rss_slow);
    // Fast phase: the rest at full speed, sampling now and then.
    let mut chunks = 0u64;
    loop {
        let n = stream.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        verifier.check(&buf[..n]).unwrap();
        chunks += 1;
        if chunks.is_multiple_of(256) {
            rss_peak = rss_peak.max(proxy.rss_bytes());
        }
    }
    let rss_end = proxy.rss_bytes();
    rss_peak = rss_peak.max(rss_end);
    eprintln!(
        "proxy VmRSS: start {} KiB, after slow phase {} KiB, end {} KiB, peak sampled {} KiB",
        rss_start / 1024,
        rss_slow / 1024,
        rss_end / 1024,
        rss_peak / 1024
    );
    assert_eq!(verifier.offset, TOTAL as u64, "all bytes arrived");
    assert_eq!(target.next_result(), Ok(()));
    assert!(rss_peak < RSS_LIMIT, "proxy RSS peaked at {} KiB", rss_peak / 1024);
}

/// Names of the proxy's threads, from /proc/PID/task/*/comm.
fn thread_names(pid: i32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read task dir")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    names.sort();
    names
}

/// An idle proxy runs two threads (signals, one loop) and starts a resolver thread only when
/// a name must be looked up: each thread costs resident memory.
#[test]
fn resolver_threads_start_on_first_lookup() {
    let proxy = ProxyProcess::spawn(&["--resolver-threads", "2"]);
    let target = echo_server("127.0.0.1:0");
    assert_eq!(thread_names(proxy.pid()), ["socksloop", "socksloop-loop-"], "idle threads");

    // An IP address needs no lookup, so no thread.
    let (mut stream, reply) = socks_connect(proxy.addr, target.addr);
    assert_eq!(reply.code, 0);
    assert_echo(&mut stream, b"by address");
    assert_eq!(thread_names(proxy.pid()).len(), 2, "{:?}", thread_names(proxy.pid()));

    let (mut stream, reply) = socks_connect(proxy.addr, Dest::Domain("localhost".into(), target.addr.port()));
    assert_eq!(reply.code, 0);
    assert_echo(&mut stream, b"by name");
    assert!(thread_names(proxy.pid()).contains(&"resolver-0".to_string()), "{:?}", thread_names(proxy.pid()));
}
