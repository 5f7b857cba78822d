//! A process seen through /proc: open descriptors (and which are sockets or pipes), CPU time,
//! resident memory, threads and limits.

use std::thread;
use std::time::{Duration, Instant};

use super::*;

/// Open descriptors of process `pid` (entries of /proc/PID/fd).
pub fn fd_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd").count()
}

/// What each open descriptor of `pid` points at (`socket:[123]`, `pipe:[456]`, a path, ...).
pub fn fd_targets(pid: i32) -> Vec<String> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|dir| {
            dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .map(|p| p.display().to_string())
                .collect()
        })
        .unwrap_or_default()
}

/// The process's open (sockets, pipes). The splice relay's pool keeps some empty pipes, so
/// relays are counted by their sockets and pipes separately.
pub fn fds_by_kind(pid: i32) -> (usize, usize) {
    let targets = fd_targets(pid);
    let sockets = targets.iter().filter(|t| t.starts_with("socket:")).count();
    let pipes = targets.iter().filter(|t| t.starts_with("pipe:")).count();
    (sockets, pipes)
}

/// Poll until the process has exactly `baseline` descriptors, at most `limit`.
/// Err carries the last count seen.
pub fn wait_for_fds(pid: i32, baseline: usize, limit: Duration) -> Result<(), usize> {
    let mut now = 0;
    poll_until(limit, || {
        now = fd_count(pid);
        (now == baseline).then_some(())
    })
    .ok_or(now)
}

/// Poll until the process has `sockets` sockets open, at most [`SETTLE`]; the last
/// (sockets, pipes) seen.
pub fn wait_for_sockets(pid: i32, sockets: usize) -> Result<(usize, usize), (usize, usize)> {
    let mut now = (0, 0);
    poll_until(SETTLE, || {
        now = fds_by_kind(pid);
        (now.0 == sockets).then_some(now)
    })
    .ok_or(now)
}

/// The proxy's descriptor count comes back to `baseline` within [`SETTLE`].
pub fn assert_fds_return(proxy: &ProxyProcess, baseline: usize, what: &str) {
    if let Err(now) = wait_for_fds(proxy.pid(), baseline, SETTLE) {
        let listing = fd_targets(proxy.pid());
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

/// Resident set size of process `pid`, from /proc/PID/status, in bytes.
pub fn rss_bytes(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("read status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS line");
    let kb: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    kb * 1024
}

/// The soft and hard "Max open files" of a process, from /proc/PID/limits.
pub fn nofile_limits(pid: i32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files line");
    let mut numbers = line["Max open files".len()..].split_whitespace();
    (numbers.next().unwrap().to_string(), numbers.next().unwrap().to_string())
}

/// Names of the process's threads, from /proc/PID/task/*/comm, sorted.
pub fn thread_names(pid: i32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("read task dir")
        .filter_map(|task| std::fs::read_to_string(task.ok()?.path().join("comm")).ok())
        .map(|name| name.trim().to_string())
        .collect();
    names.sort();
    names
}
