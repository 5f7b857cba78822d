//! Per-user rate limits (`rate-limit`, bytes per second each way, summed over the user's
//! connections and workers): measured over real sockets on loopback, in-process and through
//! the binary with a config file (and a reload that changes the rate of open connections).
//!
//! Every flow pushes as fast as it can (a target that writes without pause, a client that
//! uploads without pause) and counts what arrives; the rate is the bytes counted over a window
//! of a few seconds after a warm-up that spends the bucket's burst. The limit is an upper bound
//! that must always hold; the lower bound (90 %) holds as long as the machine can move
//! 20 MiB/s through loopback, which it can many times over even when busy.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use socksloop::users::User;
use socksloop::{RelayMode, Server};

use crate::support::*;

const LIMIT: u64 = 20 << 20;
const WARM_UP: Duration = Duration::from_millis(1500);
const WINDOW: Duration = Duration::from_secs(4);

/// Two workers (the limit is summed across them), `alice` limited to 20 MiB/s, `bob` not.
fn limited_server(mode: RelayMode) -> Server {
    start_server_with(|c| {
        c.workers = 2;
        c.relay_mode = mode;
        c.users.add(User { rate_limit: Some(LIMIT), ..User::plain("alice", b"a-pw") }).unwrap();
        c.users.add(User::plain("bob", b"b-pw")).unwrap();
    })
}

fn password(user: &str) -> &'static str {
    if user == "alice" { "a-pw" } else { "b-pw" }
}

/// An authenticated CONNECT to `target` as `user`.
fn login_connect(proxy: SocketAddr, user: &str, target: SocketAddr) -> TcpStream {
    let mut stream = tcp_connect(proxy);
    greet_userpass(&mut stream);
    assert_eq!(authenticate(&mut stream, user, password(user)), 0, "{user} logs in");
    stream.write_all(&request_bytes(CMD_CONNECT, &target.into())).unwrap();
    assert_eq!(read_reply(&mut stream).unwrap().code, REP_OK);
    stream
}

/// A target that writes to every connection as fast as the connection takes it, until it
/// closes.
fn firehose() -> Target<()> {
    Target::start("127.0.0.1:0", |mut stream, _| {
        let chunk = vec![0x5a; 64 * 1024];
        while stream.write_all(&chunk).is_ok() {}
    })
}

/// A target that reads every connection to its end, adding what arrives to `counter`.
fn sink(counter: Arc<AtomicU64>) -> Target<()> {
    Target::start("127.0.0.1:0", move |mut stream, _| {
        let mut buf = vec![0; 64 * 1024];
        while let Ok(n @ 1..) = stream.read(&mut buf) {
            counter.fetch_add(n as u64, Ordering::Relaxed);
        }
    })
}

/// Flows that run until dropped, each counting the bytes it moved.
struct Flows {
    counters: Vec<Arc<AtomicU64>>,
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<()>>,
}

impl Flows {
    fn new() -> Flows {
        Flows { counters: Vec::new(), stop: Arc::new(AtomicBool::new(false)), threads: Vec::new() }
    }

    /// `n` downloads from `source` as `user`, each counting what it reads.
    fn download(&mut self, n: usize, proxy: SocketAddr, user: &str, source: SocketAddr) {
        for _ in 0..n {
            let mut stream = login_connect(proxy, user, source);
            let (count, stop) = (Arc::new(AtomicU64::new(0)), Arc::clone(&self.stop));
            self.counters.push(Arc::clone(&count));
            self.threads.push(thread::spawn(move || {
                let mut buf = vec![0; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => count.fetch_add(n as u64, Ordering::Relaxed),
                    };
                }
            }));
        }
    }

    /// `n` uploads to `sink` as `user`; the sink counts what arrives (`self` counts writes).
    fn upload(&mut self, n: usize, proxy: SocketAddr, user: &str, sink: SocketAddr) {
        for _ in 0..n {
            let mut stream = login_connect(proxy, user, sink);
            let (count, stop) = (Arc::new(AtomicU64::new(0)), Arc::clone(&self.stop));
            self.counters.push(Arc::clone(&count));
            self.threads.push(thread::spawn(move || {
                let chunk = vec![0xa5; 16 * 1024];
                while !stop.load(Ordering::Relaxed) && stream.write_all(&chunk).is_ok() {
                    count.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                }
            }));
        }
    }
}

impl Drop for Flows {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for thread in self.threads.drain(..) {
            let _ = thread.join();
        }
    }
}

/// Bytes per second each counter advanced over `window`, after `warm_up`.
fn rates(counters: &[Arc<AtomicU64>], warm_up: Duration, window: Duration) -> Vec<f64> {
    thread::sleep(warm_up);
    let read = || counters.iter().map(|c| c.load(Ordering::Relaxed)).collect::<Vec<u64>>();
    let (start, before) = (Instant::now(), read());
    thread::sleep(window);
    let (after, seconds) = (read(), start.elapsed().as_secs_f64());
    before.iter().zip(after).map(|(b, a)| (a - b) as f64 / seconds).collect()
}

fn mib(rate: f64) -> String {
    format!("{:.2} MiB/s", rate / (1 << 20) as f64)
}

/// Within ±10 % of the limit (the upper bound also allows the window's share of the burst,
/// a tenth of a second of the rate, which the warm-up has normally spent).
fn assert_near_limit(total: f64, what: &str) {
    assert_near(total, LIMIT, what);
}

fn assert_near(total: f64, limit: u64, what: &str) {
    let limit = limit as f64;
    let burst_share = limit * 0.1 / WINDOW.as_secs_f64();
    assert!(total <= 1.1 * limit + burst_share, "{what}: {} exceeds the limit of {}", mib(total), mib(limit));
    assert!(total >= 0.9 * limit, "{what}: {} is under 90 % of {}", mib(total), mib(limit));
}

#[test]
fn four_limited_downloads_share_20_mib_per_second_while_an_unlimited_user_runs_free() {
    let server = limited_server(RelayMode::Copy);
    let proxy = proxy_addr(&server);
    let source = firehose();
    let mut alice = Flows::new();
    alice.download(4, proxy, "alice", source.addr);
    let mut bob = Flows::new();
    bob.download(1, proxy, "bob", source.addr);
    let mut all = alice.counters.clone();
    all.extend(bob.counters.iter().cloned());

    let measured = rates(&all, WARM_UP, WINDOW);
    let (alice_rates, bob_rate) = (&measured[..4], measured[4]);
    let total: f64 = alice_rates.iter().sum();
    let each: Vec<String> = alice_rates.iter().map(|&r| mib(r)).collect();
    eprintln!("alice: {} in all ({each:?}); bob: {}", mib(total), mib(bob_rate));
    assert_near_limit(total, "alice's 4 downloads");
    // Shared fairly: every flow gets a fair part of the limit.
    let fair = total / 4.0;
    for (i, &rate) in alice_rates.iter().enumerate() {
        assert!(
            rate >= 0.5 * fair && rate <= 1.5 * fair,
            "flow {i} got {} of a fair {}",
            mib(rate),
            mib(fair)
        );
    }
    // Bob is not limited: several times alice's limit, beside her flows.
    assert!(bob_rate >= 3.0 * LIMIT as f64, "unlimited bob got only {}", mib(bob_rate));
}

#[test]
fn the_limit_is_per_user_summed_over_connections_and_workers() {
    // On the splice path too: the budget a grant sets bounds a splice as it bounds a copy.
    let mode = if cfg!(target_os = "linux") { RelayMode::Splice } else { RelayMode::Copy };
    let server = limited_server(mode);
    let proxy = proxy_addr(&server);
    let source = firehose();
    let mut totals = Vec::new();
    for n in [2, 4] {
        let mut flows = Flows::new();
        flows.download(n, proxy, "alice", source.addr);
        let total: f64 = rates(&flows.counters, WARM_UP, WINDOW).iter().sum();
        eprintln!("{n} flows: {}", mib(total));
        assert_near_limit(total, &format!("{n} downloads"));
        totals.push(total);
        drop(flows);
        // The next round starts with a full bucket: let it refill.
        thread::sleep(Duration::from_millis(200));
    }
    let diff = (totals[0] - totals[1]).abs() / LIMIT as f64;
    assert!(
        diff < 0.1,
        "2 flows {} and 4 flows {} should get the same total",
        mib(totals[0]),
        mib(totals[1])
    );
}

#[test]
fn uploads_are_limited_too_and_each_way_has_its_own_limit() {
    let server = limited_server(RelayMode::Copy);
    let proxy = proxy_addr(&server);
    let arrived = Arc::new(AtomicU64::new(0));
    let target = sink(Arc::clone(&arrived));
    let source = firehose();
    let mut up = Flows::new();
    up.upload(3, proxy, "alice", target.addr);
    let mut down = Flows::new();
    down.download(2, proxy, "alice", source.addr);
    // Uploads are measured where they arrive: the client's writes also fill socket buffers.
    let mut counters = vec![Arc::clone(&arrived)];
    counters.extend(down.counters.iter().cloned());
    let measured = rates(&counters, WARM_UP, WINDOW);
    let (upload, download) = (measured[0], measured[1] + measured[2]);
    eprintln!("alice uploads {} and downloads {} at once", mib(upload), mib(download));
    assert_near_limit(upload, "alice's 3 uploads");
    assert_near_limit(download, "alice's 2 downloads beside them");
}

/// A config file with `alice` limited to `rate` and `bob` unlimited, on two workers.
fn config_file_text(rate: &str) -> String {
    format!(
        "workers = 2\n\n[[users]]\nname = \"alice\"\npassword = \"a-pw\"\nrate-limit = \"{rate}\"\n\n\
         [[users]]\nname = \"bob\"\npassword = \"b-pw\"\n"
    )
}

#[test]
fn a_config_file_limits_a_user_and_a_reload_changes_the_rate_of_open_connections_at_once() {
    let file = TempFile::new("config-rate.toml", &config_file_text("20M"));
    let proxy = ProxyProcess::spawn(&["--config", file.path()]);
    let source = firehose();
    let mut alice = Flows::new();
    alice.download(2, proxy.addr, "alice", source.addr);
    let mut bob = Flows::new();
    bob.download(1, proxy.addr, "bob", source.addr);
    let mut all = alice.counters.clone();
    all.extend(bob.counters.iter().cloned());
    let measured = rates(&all, WARM_UP, WINDOW);
    let (total, bob_rate) = (measured[0] + measured[1], measured[2]);
    eprintln!("rate-limit = \"20M\": alice {}, bob {}", mib(total), mib(bob_rate));
    assert_near_limit(total, "alice's 2 downloads under rate-limit = \"20M\"");
    assert!(bob_rate >= 3.0 * LIMIT as f64, "unlimited bob got only {}", mib(bob_rate));

    // The same open connections follow a changed limit as soon as it is reloaded.
    file.write(&config_file_text("10M"));
    proxy.signal(libc::SIGHUP);
    assert!(proxy.wait_for_log("settings reloaded", TIMEOUT));
    let total: f64 = rates(&alice.counters, WARM_UP, WINDOW).iter().sum();
    eprintln!("after the reload to \"10M\": alice {}", mib(total));
    assert_near(total, 10 << 20, "alice's open downloads after a reload to \"10M\"");
}
