//! A process seen through /proc: open descriptors (which are sockets or pipes, and which TCP
//! connections), CPU time, resident memory, threads and limits.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
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

/// Most empty pipes the splice relay's pools keep for reuse in the proxies these tests run:
/// 16 per event loop (`relay::splice`'s `POOL_KEEP`), up to 4 loops.
const POOLED_PIPES_MAX: usize = 16 * 4;

/// The process's descriptors, not counting the empty pipes its splice relay (`--relay auto`,
/// the default on Linux, or `splice`) keeps pooled for reuse: a pipe whose two ends the
/// process both holds is one it made for splicing (the test harness's stdio pipes show one
/// end each). More than the pools may keep counts in full: that would be a leak.
pub fn fd_count_besides_pooled_pipes(pid: i32) -> usize {
    let targets = fd_targets(pid);
    let mut ends: std::collections::HashMap<&str, usize> = std::collections::HashMap::new();
    for target in targets.iter().filter(|t| t.starts_with("pipe:")) {
        *ends.entry(target.as_str()).or_default() += 1;
    }
    let own_pipes = ends.values().filter(|&&n| n == 2).count();
    if own_pipes <= POOLED_PIPES_MAX { targets.len() - 2 * own_pipes } else { targets.len() }
}

/// Poll until the process has exactly `baseline` descriptors besides pooled pipes
/// ([`fd_count_besides_pooled_pipes`]), at most `limit`. Err carries the last count seen.
pub fn wait_for_fds(pid: i32, baseline: usize, limit: Duration) -> Result<(), usize> {
    let mut now = 0;
    poll_until(limit, || {
        now = fd_count_besides_pooled_pipes(pid);
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

/// One entry of /proc/PID/net/tcp or tcp6.
#[derive(Debug)]
pub struct TcpEntry {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The kernel's state number: 0x0A is LISTEN, 0x01 ESTABLISHED.
    pub state: u8,
    /// 0 for a connection no process holds yet (still in a listener's accept queue).
    pub inode: u64,
}

const TCP_LISTEN: u8 = 0x0A;

/// Parse `0100007F:1F90` (IPv4) or 32 hex digits and a port (IPv6): each 32-bit word is
/// printed in the machine's byte order, the port as a number.
fn proc_net_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let mut bytes = Vec::with_capacity(16);
    for word in ip.as_bytes().chunks(8) {
        let word = u32::from_str_radix(std::str::from_utf8(word).ok()?, 16).ok()?;
        bytes.extend_from_slice(&word.to_ne_bytes());
    }
    let ip: IpAddr = match bytes.len() {
        4 => Ipv4Addr::from(<[u8; 4]>::try_from(&bytes[..]).ok()?).into(),
        16 => Ipv6Addr::from(<[u8; 16]>::try_from(&bytes[..]).ok()?).into(),
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// Every TCP socket in `pid`'s network namespace (IPv4 and IPv6).
pub fn tcp_entries(pid: i32) -> Vec<TcpEntry> {
    let mut entries = Vec::new();
    for table in ["tcp", "tcp6"] {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else { continue };
        for line in text.lines().skip(1) {
            let f: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote)) =
                (f.get(1).and_then(|x| proc_net_addr(x)), f.get(2).and_then(|x| proc_net_addr(x)))
            else {
                continue;
            };
            let (Some(Ok(state)), Some(Ok(inode))) =
                (f.get(3).map(|x| u8::from_str_radix(x, 16)), f.get(9).map(|x| x.parse::<u64>()))
            else {
                continue;
            };
            entries.push(TcpEntry { local, remote, state, inode });
        }
    }
    entries
}

/// The socket inodes among `pid`'s open descriptors.
pub fn socket_inodes(pid: i32) -> HashSet<u64> {
    fd_targets(pid)
        .iter()
        .filter_map(|t| t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok())
        .collect()
}

/// The TCP sockets `pid` holds that are not listeners: connections still open or closing.
pub fn open_connections(pid: i32) -> Vec<TcpEntry> {
    let held = socket_inodes(pid);
    tcp_entries(pid).into_iter().filter(|e| e.state != TCP_LISTEN && held.contains(&e.inode)).collect()
}

/// Whether `pid` has accepted the connection whose client end is `client` (a connection
/// still in the accept queue belongs to no process).
pub fn holds_connection_from(pid: i32, client: SocketAddr) -> bool {
    let held = socket_inodes(pid);
    tcp_entries(pid).iter().any(|e| e.remote == client && e.inode != 0 && held.contains(&e.inode))
}

/// The proxy's descriptor count once it is idle: no TCP connection of its own left open or
/// closing (only listeners), and the count unchanged over two readings 100 ms apart. A
/// count taken while a warm-up connection is still being closed would make a wrong baseline.
pub fn settled_fd_count(pid: i32) -> usize {
    let settled = poll_until(SETTLE, || {
        if !open_connections(pid).is_empty() {
            return None;
        }
        let before = fd_count_besides_pooled_pipes(pid);
        thread::sleep(Duration::from_millis(100));
        (open_connections(pid).is_empty() && fd_count_besides_pooled_pipes(pid) == before).then_some(before)
    });
    settled.unwrap_or_else(|| {
        panic!(
            "the proxy did not become idle: open connections {:?}, fds {:?}",
            open_connections(pid),
            fd_targets(pid)
        )
    })
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

/// The thread id of `pid`'s first thread whose name starts with `prefix`.
pub fn thread_id_named(pid: i32, prefix: &str) -> Option<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task")).ok()?.find_map(|task| {
        let task = task.ok()?;
        let name = std::fs::read_to_string(task.path().join("comm")).ok()?;
        name.starts_with(prefix).then(|| task.file_name().to_str()?.parse().ok())?
    })
}

/// One thread of a child process stopped with ptrace (`PTRACE_SEIZE`, `PTRACE_INTERRUPT`)
/// while its other threads run on: an event loop stuck as if in a handler that never returns,
/// with its process otherwise alive. Dropping it detaches, and the thread runs again. ptrace
/// belongs to the tracing thread, so this must be dropped where it was made (it is not `Send`).
pub struct StoppedThread {
    tid: i32,
    _not_send: std::marker::PhantomData<*const ()>,
}

impl StoppedThread {
    pub fn stop(tid: i32) -> StoppedThread {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: ptrace requests on a thread of our own child process, with no addresses
        // (null pointers are what these requests take); waitpid writes into a local.
        unsafe {
            let seized = libc::ptrace(libc::PTRACE_SEIZE, tid, null, null);
            assert_eq!(seized, 0, "PTRACE_SEIZE {tid}: {}", std::io::Error::last_os_error());
            let interrupted = libc::ptrace(libc::PTRACE_INTERRUPT, tid, null, null);
            assert_eq!(interrupted, 0, "PTRACE_INTERRUPT {tid}: {}", std::io::Error::last_os_error());
            let mut status = 0;
            assert_eq!(libc::waitpid(tid, &mut status, libc::__WALL), tid, "waiting for {tid} to stop");
        }
        StoppedThread { tid, _not_send: std::marker::PhantomData }
    }
}

impl Drop for StoppedThread {
    fn drop(&mut self) {
        let null = std::ptr::null_mut::<libc::c_void>();
        // SAFETY: detaching a thread this thread traces; it is in a ptrace stop.
        unsafe { libc::ptrace(libc::PTRACE_DETACH, self.tid, null, null) };
    }
}
