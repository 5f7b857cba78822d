//! The server's CPU time over a measured window (`--pid`), for CPU per GiB relayed and per
//! connection.
//!
//! Two sources, chosen per window:
//!
//! * **clock**: the process CPU clock of PID (`clock_getcpuclockid` + `clock_gettime`), in
//!   nanoseconds: the kernel's exact run time of every thread of the process, including
//!   threads that exited during the window. Used when the server is one process.
//!   `/proc/PID/schedstat` has the same precision but covers only the main thread, and
//!   socksloop's loops run in worker threads, so it would miss them.
//! * **proc-tree**: for a server with child processes (Dante forks per client), the sum over
//!   PID and its live descendants of `utime + stime + cutime + cstime` from `/proc/N/stat`, in
//!   clock ticks (`sysconf(_SC_CLK_TCK)`, 10 ms here). `cutime`/`cstime` carry the time of
//!   children that exited and were reaped by their parent, so a child that ends within the
//!   window still counts. Used when PID had descendants at either end of the window.

use std::time::Instant;

use super::report::Value;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// The fields of `/proc/N/stat` this module needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    pub ppid: u32,
    /// utime + stime + cutime + cstime, in clock ticks.
    pub ticks: u64,
}

/// Parse one `/proc/N/stat` line. The command name (field 2) is in parentheses and may hold
/// spaces and parentheses itself, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (head, tail) = text.rsplit_once(')')?;
    let pid = head.split_whitespace().next()?.parse().ok()?;
    // After the name: state (3), ppid (4), … utime (14), stime (15), cutime (16), cstime (17).
    let fields: Vec<&str> = tail.split_whitespace().collect();
    let field = |n: usize| -> Option<u64> { fields.get(n - 3)?.parse().ok() };
    let ppid = u32::try_from(field(4)?).ok()?;
    let ticks = field(14)? + field(15)? + field(16)? + field(17)?;
    Some(ProcStat { pid, ppid, ticks })
}

/// `root` and every process below it in the parent links of `all`, `root` first.
pub fn tree(root: u32, all: &[ProcStat]) -> Vec<ProcStat> {
    let mut found: Vec<ProcStat> = all.iter().filter(|p| p.pid == root).copied().collect();
    let mut i = 0;
    while i < found.len() {
        let parent = found[i].pid;
        for p in all.iter().filter(|p| p.ppid == parent && p.pid != 0) {
            // Each process once, whatever the parent links say (a pid reused meanwhile).
            if !found.iter().any(|f| f.pid == p.pid) {
                found.push(*p);
            }
        }
        i += 1;
    }
    found
}

/// Every process's `/proc/N/stat` that could be read (processes come and go meanwhile).
fn all_processes() -> Vec<ProcStat> {
    let Ok(dir) = std::fs::read_dir("/proc") else { return Vec::new() };
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        entry.file_name().to_str()?.parse::<u32>().ok()?;
        parse_stat(&std::fs::read_to_string(entry.path().join("stat")).ok()?)
    })
    .collect()
}

/// The process CPU clock of `pid`, in nanoseconds: all its threads, live and exited.
fn process_clock_ns(pid: u32) -> Option<u64> {
    let mut clock: libc::clockid_t = 0;
    let pid = libc::pid_t::try_from(pid).ok()?;
    // SAFETY: plain C calls writing only to the two locals passed by pointer.
    if unsafe { libc::clock_getcpuclockid(pid, &mut clock) } != 0 {
        return None;
    }
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: as above.
    if unsafe { libc::clock_gettime(clock, &mut now) } != 0 {
        return None;
    }
    Some(u64::try_from(now.tv_sec).ok()? * 1_000_000_000 + u64::try_from(now.tv_nsec).ok()?)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf reads a constant.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100)
}

/// Both readings at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    clock_ns: Option<u64>,
    tree_ticks: u64,
    tree_processes: usize,
}

fn sample(pid: u32) -> Result<Sample, String> {
    let clock_ns = process_clock_ns(pid);
    let at = Instant::now();
    let tree = tree(pid, &all_processes());
    if tree.is_empty() {
        return Err(format!("--pid {pid}: no such process (cannot read /proc/{pid}/stat)"));
    }
    Ok(Sample { at, clock_ns, tree_ticks: tree.iter().map(|p| p.ticks).sum(), tree_processes: tree.len() })
}

/// Which reading a [`Usage`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Clock,
    ProcTree,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Clock => "clock",
            Source::ProcTree => "proc-tree",
        }
    }
}

/// A window being measured: started with [`Meter::start`], ended with [`Meter::stop`].
pub struct Meter {
    pid: u32,
    start: Sample,
}

impl Meter {
    pub fn start(pid: u32) -> Result<Meter, String> {
        Ok(Meter { pid, start: sample(pid)? })
    }

    pub fn stop(self) -> Result<Usage, String> {
        let end = sample(self.pid)?;
        Ok(usage(&self.start, &end, clock_ticks_per_second()))
    }
}

fn usage(start: &Sample, end: &Sample, hz: u64) -> Usage {
    let wall_s = end.at.duration_since(start.at).as_secs_f64();
    let processes = start.tree_processes.max(end.tree_processes);
    match (start.clock_ns, end.clock_ns) {
        (Some(a), Some(b)) if processes == 1 => {
            Usage { cpu_s: b.saturating_sub(a) as f64 / 1e9, wall_s, source: Source::Clock, processes }
        }
        _ => Usage {
            cpu_s: end.tree_ticks.saturating_sub(start.tree_ticks) as f64 / hz as f64,
            wall_s,
            source: Source::ProcTree,
            processes,
        },
    }
}

/// The server's CPU time over one window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    /// CPU seconds the server used (all threads; with ProcTree all its processes).
    pub cpu_s: f64,
    /// The window's length.
    pub wall_s: f64,
    pub source: Source,
    /// Processes counted (1 unless the server has children).
    pub processes: usize,
}

impl Usage {
    /// Busy fraction of one core (can exceed 1 for a server on several cores).
    pub fn share(&self) -> f64 {
        if self.wall_s > 0.0 { self.cpu_s / self.wall_s } else { f64::NAN }
    }

    /// CPU seconds per GiB relayed; NaN when nothing moved.
    pub fn per_gib(&self, bytes: u64) -> f64 {
        if bytes > 0 { self.cpu_s / (bytes as f64 / GIB) } else { f64::NAN }
    }

    /// CPU microseconds per completed connection; NaN when none completed.
    pub fn per_connection_us(&self, connections: u64) -> f64 {
        if connections > 0 { self.cpu_s * 1e6 / connections as f64 } else { f64::NAN }
    }

    /// The fields every measured record carries.
    fn common(&self) -> Vec<(&'static str, Value)> {
        vec![
            ("cpu_source", Value::Str(self.source.name().into())),
            ("cpu_processes", Value::Int(self.processes as u64)),
            ("cpu_s", Value::Num(self.cpu_s)),
            ("cpu_window_s", Value::Num(self.wall_s)),
            ("cpu_share", Value::Num(self.share())),
        ]
    }
}

/// JSON fields for a workload that moves bytes (`bytes` relayed in the window); null without
/// `--pid`.
pub fn byte_fields(usage: Option<&Usage>, bytes: u64) -> Vec<(&'static str, Value)> {
    match usage {
        Some(u) => {
            let mut fields = u.common();
            fields.push(("cpu_s_per_gib", Value::Num(u.per_gib(bytes))));
            fields
        }
        None => vec![("cpu_s", Value::Null), ("cpu_share", Value::Null), ("cpu_s_per_gib", Value::Null)],
    }
}

/// JSON fields for the connection-rate workload; null without `--pid`.
pub fn connection_fields(usage: Option<&Usage>, connections: u64) -> Vec<(&'static str, Value)> {
    match usage {
        Some(u) => {
            let mut fields = u.common();
            fields.push(("cpu_us_per_conn", Value::Num(u.per_connection_us(connections))));
            fields
        }
        None => vec![("cpu_s", Value::Null), ("cpu_share", Value::Null), ("cpu_us_per_conn", Value::Null)],
    }
}

/// The table's "server CPU" cell for a byte-moving workload.
pub fn byte_cell(usage: Option<&Usage>, bytes: u64) -> String {
    usage.map_or_else(String::new, |u| {
        format!("{:.3} s/GiB, {:.0} % of a core", u.per_gib(bytes), 100.0 * u.share())
    })
}

/// The table's "server CPU" cell for the connection-rate workload.
pub fn connection_cell(usage: Option<&Usage>, connections: u64) -> String {
    usage.map_or_else(String::new, |u| {
        format!("{:.1} µs/conn, {:.0} % of a core", u.per_connection_us(connections), 100.0 * u.share())
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn stat_lines() {
        // A name with spaces and a parenthesis, as a thread or process may have.
        let line = "4242 (my (odd) name) S 17 4242 4242 0 -1 4194560 120 0 0 0 250 80 7 3 20 0 2 0 \
                    1000 1234 56 18446744073709551615 1 1 0 0 0 0 0 4096 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_stat(line), Some(ProcStat { pid: 4242, ppid: 17, ticks: 250 + 80 + 7 + 3 }));
        assert_eq!(parse_stat("4242 (cut short) S 1 2"), None);
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn own_stat_and_clock() {
        let me = std::process::id();
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat").unwrap()).unwrap();
        assert_eq!(stat.pid, me);
        let a = process_clock_ns(me).expect("our own process clock");
        let spin = Instant::now();
        while spin.elapsed() < Duration::from_millis(20) {}
        assert!(process_clock_ns(me).unwrap() > a);
    }

    #[test]
    fn trees() {
        let p = |pid, ppid| ProcStat { pid, ppid, ticks: u64::from(pid) };
        let all = [p(1, 0), p(10, 1), p(11, 10), p(12, 10), p(13, 11), p(20, 1), p(0, 0)];
        let pids: Vec<u32> = tree(10, &all).iter().map(|p| p.pid).collect();
        assert_eq!(pids, [10, 11, 12, 13]);
        assert_eq!(tree(20, &all).len(), 1);
        assert!(tree(99, &all).is_empty());
    }

    #[test]
    fn usage_picks_the_clock_for_one_process() {
        let t = Instant::now();
        let s = |after_ms, clock_ns, tree_ticks, tree_processes| Sample {
            at: t + Duration::from_millis(after_ms),
            clock_ns,
            tree_ticks,
            tree_processes,
        };
        let u = usage(&s(0, Some(1_000_000_000), 100, 1), &s(2000, Some(2_500_000_000), 250, 1), 100);
        assert_eq!(u.source, Source::Clock);
        assert!((u.cpu_s - 1.5).abs() < 1e-9);
        assert!((u.share() - 0.75).abs() < 1e-9);
        assert!((u.per_gib(3 << 30) - 0.5).abs() < 1e-9);
        assert!((u.per_connection_us(1_500_000) - 1.0).abs() < 1e-9);
        assert!(u.per_gib(0).is_nan());
        // A child appeared: the clock of PID alone would miss it.
        let u = usage(&s(0, Some(1_000_000_000), 100, 1), &s(2000, Some(2_500_000_000), 400, 3), 100);
        assert_eq!((u.source, u.processes), (Source::ProcTree, 3));
        assert!((u.cpu_s - 3.0).abs() < 1e-9);
        // No clock (another kernel): ticks.
        let u = usage(&s(0, None, 100, 1), &s(1000, None, 150, 1), 100);
        assert_eq!(u.source, Source::ProcTree);
        assert!((u.cpu_s - 0.5).abs() < 1e-9);
    }

    #[test]
    fn fields_without_pid_are_null() {
        let names: Vec<&str> = byte_fields(None, 1).iter().map(|(k, _)| *k).collect();
        assert_eq!(names, ["cpu_s", "cpu_share", "cpu_s_per_gib"]);
        assert!(byte_cell(None, 1).is_empty());
        let u = Usage { cpu_s: 0.5, wall_s: 1.0, source: Source::Clock, processes: 1 };
        assert_eq!(byte_cell(Some(&u), 1 << 30), "0.500 s/GiB, 50 % of a core");
        assert_eq!(connection_cell(Some(&u), 1000), "500.0 µs/conn, 50 % of a core");
    }
}
