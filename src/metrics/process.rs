//! The standard `process_*` metrics, read from `/proc` when a scrape arrives (Linux only;
//! elsewhere none are written).
//!
//! | metric | from |
//! | --- | --- |
//! | `process_cpu_seconds_total` | `/proc/self/stat` utime + stime, in clock ticks |
//! | `process_resident_memory_bytes` | `/proc/self/status` `VmRSS` |
//! | `process_virtual_memory_bytes` | `/proc/self/stat` vsize |
//! | `process_open_fds` | the entries of `/proc/self/fd`, less the one reading it |
//! | `process_max_fds` | the soft `RLIMIT_NOFILE` (`getrlimit`) |
//! | `process_start_time_seconds` | `/proc/self/stat` starttime (ticks after boot) + `btime` of `/proc/stat` |
//! | `process_threads` | `/proc/self/stat` num_threads |
//!
//! These are the names and meanings of the official clients' process collectors. Reading
//! them costs a few small file reads and one directory listing per scrape (the listing grows
//! with the open descriptors: tens of microseconds at thousands), on the event loop that
//! serves the scrape.

use std::io;

use super::exposition::{Exposition, Kind};

/// One reading of the process's counters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub open_fds: u64,
    pub max_fds: u64,
    pub start_time_seconds: f64,
    pub threads: u64,
}

impl ProcessStats {
    /// Read them now.
    #[cfg(target_os = "linux")]
    pub fn read() -> io::Result<ProcessStats> {
        let stat = parse_stat(&std::fs::read_to_string("/proc/self/stat")?)?;
        let resident_kib = parse_status_rss_kib(&std::fs::read_to_string("/proc/self/status")?)?;
        let boot_time = parse_boot_time(&std::fs::read_to_string("/proc/stat")?)?;
        // The listing's own descriptor is among the entries while it is read.
        let open_fds = std::fs::read_dir("/proc/self/fd")?.count().saturating_sub(1) as u64;
        // SAFETY: sysconf reads a configuration value; no memory is involved.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        Ok(ProcessStats {
            cpu_seconds: (stat.utime + stat.stime) as f64 / ticks,
            resident_bytes: resident_kib * 1024,
            virtual_bytes: stat.vsize,
            open_fds,
            max_fds: crate::limits::nofile_limit(),
            start_time_seconds: boot_time as f64 + stat.start_ticks as f64 / ticks,
            threads: stat.threads,
        })
    }

    #[cfg(not(target_os = "linux"))]
    pub fn read() -> io::Result<ProcessStats> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "process metrics are read from /proc"))
    }

    /// Write the `process_*` families.
    pub fn write(&self, e: &mut Exposition) {
        e.single(
            "process_cpu_seconds_total",
            Kind::Counter,
            "Total user and system CPU time spent in seconds.",
            self.cpu_seconds,
        );
        e.single(
            "process_resident_memory_bytes",
            Kind::Gauge,
            "Resident memory size in bytes.",
            self.resident_bytes,
        );
        e.single(
            "process_virtual_memory_bytes",
            Kind::Gauge,
            "Virtual memory size in bytes.",
            self.virtual_bytes,
        );
        e.single("process_open_fds", Kind::Gauge, "Number of open file descriptors.", self.open_fds);
        e.single("process_max_fds", Kind::Gauge, "Maximum number of open file descriptors.", self.max_fds);
        e.single(
            "process_start_time_seconds",
            Kind::Gauge,
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds,
        );
        e.single("process_threads", Kind::Gauge, "Number of OS threads in the process.", self.threads);
    }
}

/// What `/proc/self/stat` gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stat {
    utime: u64,
    stime: u64,
    threads: u64,
    start_ticks: u64,
    vsize: u64,
}

fn invalid(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("unexpected {what}"))
}

/// `pid (comm) state ...`: the command name may hold spaces and parentheses, so the fields
/// are counted from the last `)`. Field numbers are proc(5)'s: utime 14, stime 15,
/// num_threads 20, starttime 22, vsize 23.
fn parse_stat(text: &str) -> io::Result<Stat> {
    let after = &text[text.rfind(')').ok_or_else(|| invalid("/proc/self/stat"))? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // After the `)`, field 3 (state) is at index 0.
    let field = |n: usize| -> io::Result<u64> {
        fields.get(n - 3).and_then(|f| f.parse().ok()).ok_or_else(|| invalid("/proc/self/stat"))
    };
    Ok(Stat {
        utime: field(14)?,
        stime: field(15)?,
        threads: field(20)?,
        start_ticks: field(22)?,
        vsize: field(23)?,
    })
}

/// `VmRSS:    1234 kB`
fn parse_status_rss_kib(text: &str) -> io::Result<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| invalid("/proc/self/status"))
}

/// `btime 1700000000` in `/proc/stat`: the boot time in seconds since the epoch.
fn parse_boot_time(text: &str) -> io::Result<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|rest| rest.trim().parse().ok())
        .ok_or_else(|| invalid("/proc/stat"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let line = "4242 (socks loop) (x)) S 1 4242 4242 0 -1 4194560 500 0 0 0 \
                    150 25 0 0 20 0 3 0 9000 123456789 800 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(
            parse_stat(line).unwrap(),
            Stat { utime: 150, stime: 25, threads: 3, start_ticks: 9000, vsize: 123_456_789 }
        );
        assert!(parse_stat("4242 (x S 1").is_err());
        assert!(parse_stat("4242 (x) S 1 2").is_err());
    }

    #[test]
    fn status_and_boot_time() {
        assert_eq!(
            parse_status_rss_kib("Name:\tsocksloop\nVmPeak:\t 9 kB\nVmRSS:\t    2048 kB\n").unwrap(),
            2048
        );
        assert!(parse_status_rss_kib("Name:\tx\n").is_err());
        assert_eq!(
            parse_boot_time("cpu  1 2 3\nintr 5\nbtime 1700000000\nprocesses 9\n").unwrap(),
            1_700_000_000
        );
        assert!(parse_boot_time("cpu 1\n").is_err());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_sensibly() {
        let stats = ProcessStats::read().unwrap();
        assert!(stats.resident_bytes > 0 && stats.virtual_bytes >= stats.resident_bytes);
        assert!(stats.open_fds >= 3 && stats.open_fds <= stats.max_fds, "{stats:?}");
        assert!(stats.threads >= 1);
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        assert!(stats.start_time_seconds <= now + 1.0 && stats.start_time_seconds > now - 86_400.0 * 365.0);
    }
}
