//! Command-line flags of `socksloop-bench` → [`Options`].

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use socksloop_bench::wire::{Login, Route};

pub const HELP: &str = "\
socksloop-bench: load generator for any SOCKS5 server (or none, with --direct)

USAGE:
    socksloop-bench (--proxy ADDR | --direct) [OPTIONS]

The tool starts its own target (echo / sink / source) in a child process on loopback and
sends every connection through the SOCKS5 server at --proxy to it (no-auth CONNECT to an
IPv4 or IPv6 literal; with --user and --password, a username/password login first). With
--direct it connects to the target itself: the machine's limit.

WORKLOADS (--workload, comma-separated; `all` = all four):
    throughput   Streams of verified pattern bytes for --duration (or --bytes per stream).
                 Every byte is checked on receipt, uploads by the target. Result: MiB/s.
    connrate     --concurrency clients, each looping: connect, greet, CONNECT, 64-byte
                 echo, close, for --duration (or --count connections in all). Result:
                 connections/s and handshake latency (connect start to CONNECT success
                 reply) p50 / p99 / max.
    latency      Latency under load: one interactive flow, a 64-byte ping-pong (send, wait
                 for the whole echo, check it) at a fixed --ping-rate, beside --bulk
                 download streams (verified, as in throughput), for --duration. Pings start
                 0.25 s after the downloads (a quarter of --duration if shorter) and stop at
                 --duration; one ping is in flight at a time, and a ping whose echo comes
                 back after the next one was due skips the slots it missed (counted as
                 `missed`). The echo is served by a thread of its own, so it never queues
                 behind the downloads in the bulk target's loop; under a real-time policy
                 (chrt) the ping and echo threads run one priority step above the bulk
                 readers. Result: ping RTT p50 / p99 / max and count, and the bulk MiB/s
                 over the same window.
    memory       Open --connections idle relays, then read VmRSS of --pid before and after.
                 Result: KiB per connection.

SERVER CPU (--pid PID, with throughput, latency and connrate):
    The server's CPU time is read at the start and end of the measured window: the process
    CPU clock of PID (nanoseconds, every thread, also threads that exited), or, when PID has
    child processes (a process-per-client server), utime+stime+cutime+cstime of PID and all
    its descendants from /proc/N/stat (clock ticks). Reported: server CPU seconds per GiB
    relayed (cpu_s_per_gib; both directions added, like MiB/s) or microseconds per
    connection (cpu_us_per_conn), and the share of one core it was busy (cpu_share).

OPTIONS:
    --proxy ADDR           SOCKS5 server to measure, e.g. 127.0.0.1:1080
    --target-name NAME     Name the target by this host name in every request (the proxy
                           resolves it; it must resolve to the target's loopback address,
                           e.g. localhost) instead of by its IP
    --user NAME            Log in to the proxy as NAME (RFC 1929 username/password) on
                           every connection; needs --password
    --password PASS        The password for --user
    --direct               No proxy: connect straight to the target
    --workload LIST        throughput, connrate, latency, memory or all [default: throughput]
    --streams LIST         Parallel streams for throughput [default: 1]
    --direction LIST       download, upload or both [default: download]
    --duration SECS        Length of each throughput / connrate / latency run [default: 5]
    --bytes SIZE           Throughput: send this much per stream instead of running for
                           --duration (suffixes K, M, G = KiB, MiB, GiB)
    --concurrency LIST     Parallel clients for connrate [default: 1]
    --count N              Connrate: stop after N connections in all (failed ones count)
                           instead of running for --duration; e.g. to count syscalls per
                           connection (scripts/syscalls-per-connection.sh)
    --bulk N               Download streams beside the ping-pong in latency [default: 8]
    --ping-rate N          Latency: pings per second, sent on a fixed schedule; 0 = back to
                           back (the next ping as soon as the echo is in) [default: 100]
    --connections LIST     Idle relays for memory [default: 1000]
    --pid PID              The server's process: memory reads its VmRSS (/proc/PID/status);
                           throughput, latency and connrate its CPU time (see SERVER CPU)
    --runs N               Repeat each measurement N times and report the median [default: 1]
    --label NAME           Name of the server in the output [default: direct or proxy ADDR]
    --json FILE            Append one JSON object per result to FILE
    --format FMT           table (default) or json (JSON lines on stdout instead of a table)
    --timeout SECS         Limit on every blocking socket step [default: 10]
    -h, --help             Print this help

Lists are comma-separated and multiply: --streams 1,8 --direction download,both runs four
cases. Progress goes to stderr. The tool raises its open-file limit to the hard limit; each
idle relay costs it one descriptor and its target child one.

EXAMPLES:
    socksloop-bench --proxy 127.0.0.1:1080 --workload throughput,connrate --streams 1,8 \\
        --direction both --concurrency 1,64 --pid 1234 --runs 3 --json results.jsonl
    socksloop-bench --proxy 127.0.0.1:1080 --workload latency --bulk 8 --duration 3 --pid 1234
    socksloop-bench --direct --workload latency --bulk 8 --duration 3
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Workload {
    Throughput,
    Connrate,
    Latency,
    Memory,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Download,
    Upload,
    Both,
}

impl Direction {
    pub fn name(self) -> &'static str {
        match self {
            Direction::Download => "download",
            Direction::Upload => "upload",
            Direction::Both => "both",
        }
    }
}

/// When a throughput stream stops sending.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limit {
    Time(Duration),
    Bytes(u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Table,
    Json,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub route: Route,
    pub workloads: Vec<Workload>,
    pub streams: Vec<usize>,
    pub directions: Vec<Direction>,
    pub duration: Duration,
    pub limit: Limit,
    pub concurrency: Vec<usize>,
    /// Connrate: connections in all instead of a duration.
    pub count: Option<u64>,
    pub bulk: usize,
    /// Latency: pings per second; 0 = back to back.
    pub ping_rate: u32,
    pub connections: Vec<usize>,
    pub pid: Option<u32>,
    pub runs: usize,
    pub label: String,
    pub json: Option<PathBuf>,
    pub format: Format,
    pub timeout: Duration,
}

pub enum Command {
    Help,
    /// Hidden: be the target (the tool re-executes itself with this).
    ServeTarget(SocketAddr),
    Run(Box<Options>),
}

/// How a route is shown in output.
pub fn route_name(route: Route) -> String {
    match route {
        Route::Direct => "direct".into(),
        Route::Proxy(addr) => format!("proxy {addr}"),
        Route::ProxyByName(addr, name) => format!("proxy {addr} by name {name}"),
        Route::ProxyAs(addr, None, login) => format!("proxy {addr} as {}", login.user),
        Route::ProxyAs(addr, Some(name), login) => format!("proxy {addr} by name {name} as {}", login.user),
    }
}

pub fn parse(args: Vec<OsString>) -> Result<Command, String> {
    let mut args = pico_args::Arguments::from_vec(args);
    if args.contains(["-h", "--help"]) {
        return Ok(Command::Help);
    }
    if let Some(addr) = opt(&mut args, "--serve-target")? {
        return Ok(Command::ServeTarget(parse_addr("--serve-target", &addr)?));
    }
    let proxy = opt(&mut args, "--proxy")?.map(|s| parse_addr("--proxy", &s)).transpose()?;
    let direct = args.contains("--direct");
    let target_name = opt(&mut args, "--target-name")?;
    if target_name.is_some() && direct {
        return Err("--target-name needs --proxy (the proxy resolves the name)".into());
    }
    // Leaked once per run: a Route is Copy and shared by every client thread.
    let leak = |s: String| -> &'static str { Box::leak(s.into_boxed_str()) };
    let login = match (opt(&mut args, "--user")?, opt(&mut args, "--password")?) {
        (None, None) => None,
        (Some(user), Some(password)) if user.len() <= 255 && password.len() <= 255 && !user.is_empty() => {
            Some(Login { user: leak(user), password: leak(password) })
        }
        (Some(_), Some(_)) => return Err("--user must be 1 to 255 bytes, --password at most 255".into()),
        _ => return Err("--user and --password go together".into()),
    };
    if login.is_some() && direct {
        return Err("--user needs --proxy (it logs in to the proxy)".into());
    }
    let route = match (proxy, direct) {
        (Some(addr), false) => match (target_name, login) {
            (name, Some(login)) => Route::ProxyAs(addr, name.map(leak), login),
            (Some(name), None) => Route::ProxyByName(addr, leak(name)),
            (None, None) => Route::Proxy(addr),
        },
        (None, true) => Route::Direct,
        (Some(_), true) => return Err("--proxy and --direct exclude each other".into()),
        (None, false) => return Err("say what to measure: --proxy ADDR or --direct (see --help)".into()),
    };
    let workloads = list(&mut args, "--workload", "throughput", parse_workloads)?.concat();
    let streams = list(&mut args, "--streams", "1", |s| positive("--streams", s))?;
    let directions = list(&mut args, "--direction", "download", parse_direction)?;
    let duration = opt(&mut args, "--duration")?.map(|s| seconds("--duration", &s)).transpose()?;
    let duration = duration.unwrap_or(Duration::from_secs(5));
    let bytes = opt(&mut args, "--bytes")?.map(|s| size("--bytes", &s)).transpose()?;
    let limit = bytes.map_or(Limit::Time(duration), Limit::Bytes);
    let concurrency = list(&mut args, "--concurrency", "1", |s| positive("--concurrency", s))?;
    let count = opt(&mut args, "--count")?.map(|s| positive("--count", &s)).transpose()?;
    let count = count.map(|n| n as u64);
    let bulk = opt(&mut args, "--bulk")?.map(|s| positive("--bulk", &s)).transpose()?.unwrap_or(8);
    let ping_rate = match opt(&mut args, "--ping-rate")? {
        None => 100,
        Some(s) => match s.parse::<u32>() {
            Ok(n) if n <= 100_000 => n,
            _ => return Err(format!("invalid --ping-rate '{s}': expected pings per second, 0 to 100000")),
        },
    };
    let connections = list(&mut args, "--connections", "1000", |s| positive("--connections", s))?;
    let pid = opt(&mut args, "--pid")?.map(|s| positive("--pid", &s)).transpose()?;
    let pid = pid.map(|p| u32::try_from(p).map_err(|_| format!("--pid {p} is out of range"))).transpose()?;
    let runs = opt(&mut args, "--runs")?.map(|s| positive("--runs", &s)).transpose()?.unwrap_or(1);
    let label = opt(&mut args, "--label")?.unwrap_or_else(|| route_name(route));
    let json = opt(&mut args, "--json")?.map(PathBuf::from);
    let format = match opt(&mut args, "--format")?.as_deref() {
        None | Some("table") => Format::Table,
        Some("json") => Format::Json,
        Some(other) => return Err(format!("invalid --format '{other}': expected table or json")),
    };
    let timeout = opt(&mut args, "--timeout")?.map(|s| seconds("--timeout", &s)).transpose()?;
    let timeout = timeout.unwrap_or(Duration::from_secs(10));
    let rest = args.finish();
    if let Some(first) = rest.first() {
        return Err(format!("unexpected argument '{}' (see --help)", first.to_string_lossy()));
    }
    Ok(Command::Run(Box::new(Options {
        route,
        workloads,
        streams,
        directions,
        duration,
        limit,
        concurrency,
        count,
        bulk,
        ping_rate,
        connections,
        pid,
        runs,
        label,
        json,
        format,
        timeout,
    })))
}

fn opt(args: &mut pico_args::Arguments, flag: &'static str) -> Result<Option<String>, String> {
    args.opt_value_from_str(flag).map_err(|e| format!("{e} (see --help)"))
}

/// A comma-separated flag, each item parsed by `item`.
fn list<T>(
    args: &mut pico_args::Arguments,
    flag: &'static str,
    default: &str,
    item: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    let raw = opt(args, flag)?.unwrap_or_else(|| default.to_string());
    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(item).collect()
}

fn parse_workloads(s: &str) -> Result<Vec<Workload>, String> {
    Ok(match s {
        "throughput" => vec![Workload::Throughput],
        "connrate" => vec![Workload::Connrate],
        "latency" => vec![Workload::Latency],
        "memory" => vec![Workload::Memory],
        "all" => vec![Workload::Throughput, Workload::Connrate, Workload::Latency, Workload::Memory],
        _ => {
            return Err(format!(
                "invalid --workload '{s}': expected throughput, connrate, latency, memory or all"
            ));
        }
    })
}

fn parse_direction(s: &str) -> Result<Direction, String> {
    match s {
        "download" => Ok(Direction::Download),
        "upload" => Ok(Direction::Upload),
        "both" => Ok(Direction::Both),
        _ => Err(format!("invalid --direction '{s}': expected download, upload or both")),
    }
}

fn parse_addr(flag: &str, s: &str) -> Result<SocketAddr, String> {
    s.parse().map_err(|_| format!("invalid {flag} '{s}': expected IP:PORT such as 127.0.0.1:1080"))
}

fn positive(flag: &str, s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("invalid {flag} '{s}': expected a whole number > 0")),
    }
}

fn seconds(flag: &str, s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("invalid {flag} '{s}': expected seconds > 0")),
    }
}

fn size(flag: &str, s: &str) -> Result<u64, String> {
    let (digits, unit) = match s.char_indices().find(|(_, c)| c.is_ascii_alphabetic()) {
        Some((i, _)) => s.split_at(i),
        None => (s, ""),
    };
    let shift = match unit.to_ascii_uppercase().trim_end_matches("IB").trim_end_matches('B') {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        _ => return Err(format!("invalid {flag} '{s}': unknown unit (use K, M or G)")),
    };
    match digits.trim().parse::<u64>() {
        Ok(n) if n > 0 => n.checked_shl(shift).ok_or_else(|| format!("{flag} '{s}' is too large")),
        _ => Err(format!("invalid {flag} '{s}': expected a size such as 16M")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(args: &[&str]) -> Result<Options, String> {
        match parse(args.iter().map(OsString::from).collect())? {
            Command::Run(o) => Ok(*o),
            _ => Err("not a run".into()),
        }
    }

    #[test]
    fn lists_and_defaults() {
        let o = run(&["--proxy", "127.0.0.1:1080", "--streams", "1,8", "--workload", "all"]).unwrap();
        assert_eq!(o.streams, vec![1, 8]);
        assert_eq!(o.workloads.len(), 4);
        assert_eq!((o.bulk, o.ping_rate, o.count), (8, 100, None));
        assert_eq!(o.limit, Limit::Time(Duration::from_secs(5)));
        assert_eq!(o.label, "proxy 127.0.0.1:1080");
        let o = run(&["--direct", "--bytes", "16M"]).unwrap();
        assert_eq!(o.limit, Limit::Bytes(16 << 20));
        assert_eq!(o.route, Route::Direct);
    }

    #[test]
    fn target_by_name() {
        let o = run(&["--proxy", "127.0.0.1:1080", "--target-name", "localhost"]).unwrap();
        assert_eq!(o.route, Route::ProxyByName("127.0.0.1:1080".parse().unwrap(), "localhost"));
        assert_eq!(o.label, "proxy 127.0.0.1:1080 by name localhost");
        assert!(run(&["--direct", "--target-name", "localhost"]).is_err());
    }

    #[test]
    fn user_and_password() {
        let o = run(&["--proxy", "127.0.0.1:1080", "--user", "alice", "--password", "pw"]).unwrap();
        let login = Login { user: "alice", password: "pw" };
        assert_eq!(o.route, Route::ProxyAs("127.0.0.1:1080".parse().unwrap(), None, login));
        assert_eq!(o.label, "proxy 127.0.0.1:1080 as alice");
        assert!(run(&["--proxy", "127.0.0.1:1080", "--user", "alice"]).is_err());
        assert!(run(&["--direct", "--user", "alice", "--password", "pw"]).is_err());
        assert!(run(&["--proxy", "127.0.0.1:1080", "--user", "", "--password", "pw"]).is_err());
    }

    #[test]
    fn latency_and_count() {
        let o = run(&[
            "--direct",
            "--workload",
            "latency,connrate",
            "--bulk",
            "4",
            "--ping-rate",
            "0",
            "--count",
            "500",
            "--pid",
            "77",
        ])
        .unwrap();
        assert_eq!(o.workloads, [Workload::Latency, Workload::Connrate]);
        assert_eq!((o.bulk, o.ping_rate, o.count, o.pid), (4, 0, Some(500), Some(77)));
        assert!(run(&["--direct", "--bulk", "0"]).is_err());
        assert!(run(&["--direct", "--ping-rate", "-1"]).is_err());
        assert!(run(&["--direct", "--count", "0"]).is_err());
    }

    #[test]
    fn help_names_every_flag() {
        for flag in
            ["--bulk", "--ping-rate", "--count", "--pid", "--user", "--password", "latency", "cpu_s_per_gib"]
        {
            assert!(HELP.contains(flag), "{flag} missing from --help");
        }
    }

    #[test]
    fn errors() {
        assert!(run(&[]).is_err());
        assert!(run(&["--direct", "--proxy", "127.0.0.1:1"]).is_err());
        assert!(run(&["--direct", "--workload", "speed"]).is_err());
        assert!(run(&["--direct", "--bytes", "3X"]).is_err());
        assert!(run(&["--direct", "--streams", "0"]).is_err());
    }
}
