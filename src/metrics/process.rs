//! The standard `process_*` metrics, read from `/proc/self` when a scrape arrives (Linux
//! only; elsewhere none are written).
//!
//! | metric | from |
//! | --- | --- |
//! | `process_cpu_seconds_total` | `/proc/self/stat` utime + stime, in clock ticks |
//! | `process_resident_memory_bytes` | `/proc/self/status` `VmRSS` |
//! | `process_virtual_memory_bytes` | `/proc/self/stat` vsize |
//! | `process_open_fds` | the entries of `/proc/self/fd`, less the one reading it |
//! | `process_max_fds` | the soft `RLIMIT_NOFILE` (`getrlimit`) |
//! | `process_start_time_seconds` | `/proc/self/stat` starttime (clock ticks after boot), placed on the wall clock with `CLOCK_BOOTTIME` |
//! | `process_threads` | `/proc/self/stat` num_threads |
//!
//! These are the names and meanings of the official clients' process collectors. Each source
//! is read on its own, and a family whose source fails is left out rather than all of them.
//! Only the process's own `/proc/self` is read: the official clients take the boot time from
//! `/proc/stat`, which systemd's `ProcSubset=pid` (set in the shipped unit) hides. Reading them
//! costs a few small file reads and one directory listing per scrape (the listing grows with
//! the open descriptors: tens of microseconds at thousands), on the event loop that serves the
//! scrape.

use std::io;

use super::exposition::{Exposition, Kind};

/// One reading of the process's counters; `None` where its source could not be read.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: Option<f64>,
    pub resident_bytes: Option<u64>,
    pub virtual_bytes: Option<u64>,
    pub open_fds: Option<u64>,
    pub max_fds: Option<u64>,
    pub start_time_seconds: Option<f64>,
    pub threads: Option<u64>,
}

impl ProcessStats {
    /// Read them now; a source that fails is logged (debug) and its families left out.
    #[cfg(target_os = "linux")]
    pub fn read() -> ProcessStats {
        fn note<T>(what: &str, result: io::Result<T>) -> Option<T> {
            result.map_err(|e| log::debug!("metrics: cannot read {what}: {e}")).ok()
        }
        // SAFETY: sysconf reads a configuration value; no memory is involved.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
        let stat = note(
            "/proc/self/stat",
            std::fs::read_to_string("/proc/self/stat").and_then(|text| parse_stat(&text)),
        );
        let resident_kib = note(
            "/proc/self/status",
            std::fs::read_to_string("/proc/self/status").and_then(|text| parse_status_rss_kib(&text)),
        );
        // The listing's own descriptor is among the entries while it is read.
        let open_fds = note("/proc/self/fd", std::fs::read_dir("/proc/self/fd"))
            .map(|dir| dir.count().saturating_sub(1) as u64);
        let start_time_seconds = stat.and_then(|stat| {
            // starttime counts from boot on CLOCK_BOOTTIME (suspends included).
            let since_boot = stat.start_ticks as f64 / ticks;
            Some(clock(libc::CLOCK_REALTIME)? - (clock(libc::CLOCK_BOOTTIME)? - since_boot))
        });
        ProcessStats {
            cpu_seconds: stat.map(|stat| (stat.utime + stat.stime) as f64 / ticks),
            resident_bytes: resident_kib.map(|kib| kib * 1024),
            virtual_bytes: stat.map(|stat| stat.vsize),
            open_fds,
            max_fds: Some(crate::limits::nofile_limit()),
            start_time_seconds,
            threads: stat.map(|stat| stat.threads),
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn read() -> ProcessStats {
        ProcessStats::default()
    }

    /// Write the `process_*` families that were read.
    pub fn write(&self, e: &mut Exposition) {
        if let Some(x) = self.cpu_seconds {
            e.single(
                "process_cpu_seconds_total",
                Kind::Counter,
                "Total user and system CPU time spent in seconds.",
                x,
            );
        }
        if let Some(n) = self.resident_bytes {
            e.single("process_resident_memory_bytes", Kind::Gauge, "Resident memory size in bytes.", n);
        }
        if let Some(n) = self.virtual_bytes {
            e.single("process_virtual_memory_bytes", Kind::Gauge, "Virtual memory size in bytes.", n);
        }
        if let Some(n) = self.open_fds {
            e.single("process_open_fds", Kind::Gauge, "Number of open file descriptors.", n);
        }
        if let Some(n) = self.max_fds {
            e.single("process_max_fds", Kind::Gauge, "Maximum number of open file descriptors.", n);
        }
        if let Some(x) = self.start_time_seconds {
            e.single(
                "process_start_time_seconds",
                Kind::Gauge,
                "Start time of the process since unix epoch in seconds.",
                x,
            );
        }
        if let Some(n) = self.threads {
            e.single("process_threads", Kind::Gauge, "Number of OS threads in the process.", n);
        }
    }
}

/// A clock's time now, in seconds.
#[cfg(target_os = "linux")]
fn clock(id: libc::clockid_t) -> Option<f64> {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the struct we own; no other memory is touched.
    (unsafe { libc::clock_gettime(id, &mut ts) } == 0).then(|| ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9)
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
    fn status() {
        assert_eq!(
            parse_status_rss_kib("Name:\tsocksloop\nVmPeak:\t 9 kB\nVmRSS:\t    2048 kB\n").unwrap(),
            2048
        );
        assert!(parse_status_rss_kib("Name:\tx\n").is_err());
    }

    #[test]
    fn only_what_was_read_is_written() {
        let mut e = Exposition::new();
        ProcessStats { open_fds: Some(7), ..ProcessStats::default() }.write(&mut e);
        let text = e.finish();
        assert!(text.contains("\nprocess_open_fds 7\n"), "{text}");
        assert_eq!(text.lines().filter(|l| !l.starts_with('#')).count(), 1, "{text}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_reads_sensibly() {
        let stats = ProcessStats::read();
        let (rss, vsize) = (stats.resident_bytes.unwrap(), stats.virtual_bytes.unwrap());
        assert!(rss > 0 && vsize >= rss, "{stats:?}");
        let (open, max) = (stats.open_fds.unwrap(), stats.max_fds.unwrap());
        assert!(open >= 3 && open <= max, "{stats:?}");
        assert!(stats.threads.unwrap() >= 1 && stats.cpu_seconds.unwrap() >= 0.0);
        // This test process started before now, and after the boot time /proc/stat names.
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
        let started = stats.start_time_seconds.unwrap();
        let boot: f64 = std::fs::read_to_string("/proc/stat")
            .unwrap()
            .lines()
            .find_map(|line| line.strip_prefix("btime "))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(started <= now && started >= boot - 1.0, "started {started}, now {now}, boot {boot}");
    }
}
