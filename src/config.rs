//! Command-line flags → a validated [`Config`]; defaults; `--help` text.
//!
//! Parsing is separate from running so that the flags can be tested without sockets and so a
//! library user (the tests, the benches) can build a `Config` in code.

use std::ffi::OsString;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use crate::acl::{Cidr, Rules};
use crate::auth::AuthSource;
use crate::users::{BindOut, Egress, Users};

/// Everything the server needs to know to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// Addresses to accept SOCKS clients on.
    pub listen: Vec<SocketAddr>,
    /// Whether `--listen` (or the config file's `listen` key) named them; `false`: the default.
    /// Under socket activation the inherited sockets replace the default, and join named ones.
    pub listen_given: bool,
    pub log_level: log::LevelFilter,
    /// How the access log (one line per finished connection) is written.
    pub log_format: LogFormat,
    /// From accept until the request is complete (greeting, auth, request).
    pub handshake_timeout: Duration,
    /// From the complete request until the upstream connection is up (resolving included).
    pub connect_timeout: Duration,
    /// A relay with no bytes moving in either direction for this long is closed.
    pub idle_timeout: Duration,
    /// Cap on simultaneous client connections; `None` derives it from the fd limit.
    pub max_connections: Option<usize>,
    /// Threads that run blocking `getaddrinfo` calls off the event loop (per worker).
    pub resolver_threads: usize,
    /// Threads that verify password hashes off the event loops (for the whole process).
    pub verifier_threads: usize,
    /// Event loops, each on its own thread with its own `SO_REUSEPORT` listener.
    pub workers: usize,
    /// On the first SIGINT/SIGTERM, how long established connections may take to finish.
    pub shutdown_grace: Duration,
    /// Where usernames and passwords come from; none means no authentication.
    pub auth: AuthSource,
    /// Accept running without authentication on a non-loopback address.
    pub allow_open_proxy: bool,
    /// Client and destination rules.
    pub rules: Rules,
    /// Local address that outbound connections leave from (`incoming`: the one the client
    /// reached).
    pub bind_out: Option<BindOut>,
    /// `SO_BINDTODEVICE` on outbound sockets.
    pub bind_interface: Option<String>,
    /// `SO_MARK` on outbound sockets.
    pub fwmark: Option<u32>,
    /// Simultaneous connections from one client IP address, over all workers.
    pub max_connections_per_client: Option<usize>,
    /// Users from the config file's `[[users]]` tables (the auth file's are read apart).
    pub users: Users,
    /// The config file this configuration was read from (`--config`), if any.
    pub config_file: Option<PathBuf>,
    /// Warnings about the configuration (plaintext passwords), logged once logging runs.
    pub warnings: Vec<String>,
    /// Address put in UDP ASSOCIATE replies instead of the relay socket's own (behind NAT).
    pub udp_advertise: Option<IpAddr>,
    /// Accept SOCKS4 and SOCKS4a clients.
    pub socks4: bool,
    /// Accept SOCKS4 even when authentication is required (SOCKS4 has no passwords).
    pub socks4_without_auth: bool,
    /// How relayed bytes move between the two sockets.
    pub relay_mode: RelayMode,
    /// Happy Eyeballs (RFC 8305): how long a connect attempt runs alone before the next
    /// address is tried beside it.
    pub connect_attempt_delay: Duration,
    /// Which address family a connect tries first.
    pub prefer_family: PreferFamily,
    /// Idle time before the first TCP keepalive probe on client and upstream sockets;
    /// `None` turns keepalive off.
    pub tcp_keepalive: Option<Duration>,
    /// Load balancers whose connections begin with a PROXY protocol header (v1 or v2) that
    /// names the real client.
    pub proxy_protocol: Vec<Cidr>,
    /// Nameservers for the in-loop DNS client, tried in turn; empty: the system resolver
    /// (`getaddrinfo` on helper threads).
    pub nameservers: Vec<SocketAddr>,
    /// The ports UDP ASSOCIATE's client-facing sockets may use (inclusive), so they can be
    /// forwarded through NAT or published by a container; `None`: any ephemeral port.
    pub udp_ports: Option<(u16, u16)>,
    /// Serve Prometheus metrics (`GET /metrics`) on this address, from worker 0's loop.
    pub metrics: Option<SocketAddr>,
}

/// Which address family a connect tries first (`--prefer-family`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PreferFamily {
    /// The family of the resolver's first answer (its RFC 6724 order).
    #[default]
    Auto,
    Ipv4,
    Ipv6,
}

impl PreferFamily {
    /// `Some(true)` for IPv6 first, `Some(false)` for IPv4 first, `None` for the resolver's.
    pub fn v6_first(self) -> Option<bool> {
        match self {
            PreferFamily::Auto => None,
            PreferFamily::Ipv4 => Some(false),
            PreferFamily::Ipv6 => Some(true),
        }
    }
}

/// How the access log is written (`--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// A text line among the diagnostics on stderr: `conn 7: 127.0.0.1:50000 -> ...`.
    #[default]
    Text,
    /// One JSON object per line on stdout (diagnostics stay text on stderr).
    Json,
}

/// How a relay moves bytes (`--relay`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelayMode {
    /// `read` into the loop's scratch buffer, `write` out: portable, the default off Linux.
    Copy,
    /// Linux only: `splice(2)` through a kernel pipe borrowed from the loop's pool; the bytes
    /// never enter user space (`src/relay/splice.rs`).
    Splice,
    /// Linux only, and the default there: splice a direction's bursts, copy its small
    /// messages (`crate::relay`, `move_some`).
    Auto,
}

impl Default for RelayMode {
    /// The cheapest relay per byte where it exists (`docs/benchmarks.md`, "The default
    /// relay"): `auto` on Linux, `copy` elsewhere.
    fn default() -> RelayMode {
        if cfg!(target_os = "linux") { RelayMode::Auto } else { RelayMode::Copy }
    }
}

pub const DEFAULT_LISTEN: &str = "127.0.0.1:1080";

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: vec![DEFAULT_LISTEN.parse().expect("valid default address")],
            listen_given: false,
            log_level: log::LevelFilter::Info,
            log_format: LogFormat::Text,
            handshake_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            max_connections: None,
            resolver_threads: 4,
            verifier_threads: crate::verifier::DEFAULT_THREADS,
            workers: 1,
            shutdown_grace: Duration::from_secs(10),
            auth: AuthSource::default(),
            allow_open_proxy: false,
            rules: Rules::default(),
            bind_out: None,
            bind_interface: None,
            fwmark: None,
            max_connections_per_client: None,
            users: Users::default(),
            config_file: None,
            warnings: Vec::new(),
            udp_advertise: None,
            socks4: true,
            socks4_without_auth: false,
            relay_mode: RelayMode::default(),
            connect_attempt_delay: Duration::from_millis(250),
            prefer_family: PreferFamily::Auto,
            tcp_keepalive: Some(Duration::from_secs(60)),
            proxy_protocol: Vec::new(),
            nameservers: Vec::new(),
            udp_ports: None,
            metrics: None,
        }
    }
}

impl Config {
    /// Whether names are resolved by the in-loop DNS client (`--nameserver`).
    pub fn in_loop_dns(&self) -> bool {
        !self.nameservers.is_empty()
    }

    /// The global egress settings (a user's own overlay them).
    pub fn egress(&self) -> Egress {
        Egress { bind_out: self.bind_out, interface: self.bind_interface.clone(), fwmark: self.fwmark }
    }
}

/// What the command line asked for.
#[derive(Debug)]
pub enum Action {
    Run(Box<Config>),
    /// `socksloop hash-password`: read a password from standard input, print its hash.
    HashPassword,
    PrintHelp,
    PrintVersion,
}

/// A bad flag or value: the message names it. Shown as one line, exit code 2.
#[derive(Debug, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ConfigError {}

pub const HELP: &str = "\
socksloop: a SOCKS5 proxy server on one event loop

USAGE:
    socksloop [OPTIONS]
    socksloop hash-password     Read a password (one line) from standard input and print
                                its argon2id hash, for password-hash in a config file

OPTIONS:
    --config PATH               Read settings from this TOML file: every long flag is a key
                                of the same name (listen = [\"127.0.0.1:1080\"]), and
                                [[users]] tables add users with their own settings (see
                                docs/configuration.md). Flags given here override the file.
                                Users and rules are re-read on SIGHUP
    --listen ADDR:PORT          Accept clients here; repeat for several addresses.
                                IPv6 in brackets: [::1]:1080. [default: 127.0.0.1:1080]
    --log-level LEVEL           error, warn, info, debug or trace [default: info]
    --log-format text|json      The access log, a line per finished connection at level
                                info: text among the other lines on stderr, or json, one
                                object per line on stdout (the rest stays text on stderr)
                                [default: text]
    --handshake-timeout SECS    Time allowed from accept to a complete request [default: 10]
    --connect-timeout SECS      Time allowed to resolve and connect upstream, all
                                addresses together [default: 10]
    --connect-attempt-delay MS  Happy Eyeballs (RFC 8305): start the next address's connect
                                this long after the previous one if it has not succeeded
                                (at once when it fails); 0 starts them all [default: 250]
    --prefer-family auto|ipv4|ipv6
                                Which family a connect tries first; auto follows the
                                resolver's order [default: auto]
    --idle-timeout SECS         Close a relay after this long without traffic [default: 300]
    --tcp-keepalive SECS        Idle time before TCP keepalive probes on client and upstream
                                sockets (then every 10 s, 6 probes: a dead peer is found
                                about a minute later); 0 turns keepalive off [default: 60]
    --max-connections N         Simultaneous clients; beyond it accepting pauses
                                [default: derived from the open-file limit]
    --resolver-threads N        Most threads for DNS lookups (started on demand) [default: 4]
    --verifier-threads N        Most threads verifying password hashes, for all workers
                                (started on demand) [default: 2]
    --nameserver IP[:PORT]      Resolve names inside the event loop by asking this DNS server
                                (repeatable: tried in turn); /etc/hosts is read first and
                                answers are cached for their TTL. Without it, the system
                                resolver (getaddrinfo) runs on the resolver threads
    --workers N                 Event loops (threads), each with its own SO_REUSEPORT
                                listener; use up to one per core [default: 1]
    --shutdown-grace SECS       On SIGINT/SIGTERM, stop accepting and let open connections
                                finish for this long; a second signal stops at once.
                                0 stops at once [default: 10]
    --relay auto|splice|copy    How relayed bytes move: copy (read/write through a buffer),
                                splice (Linux only: splice(2) through kernel pipes,
                                borrowed only while bytes wait), or auto (Linux only: splice
                                a direction's bursts, copy its small messages)
                                [default: auto on Linux, copy elsewhere]

MONITORING:
    --metrics ADDR:PORT         Serve Prometheus metrics (text format 0.0.4) at
                                http://ADDR:PORT/metrics, summed over all workers
                                [default: off]

AUTHENTICATION AND ACCESS:
    --auth-file PATH            Require RFC 1929 username/password; one user:password per
                                line, '#' comments. Re-read on SIGHUP. A single user can also
                                come from SOCKSLOOP_USER and SOCKSLOOP_PASS.
    --allow-open-proxy          Allow listening on a non-loopback address without auth
    --allow-client CIDR         Serve only clients from these ranges (repeatable)
    --allow-dest CIDR           Allow only these destinations; also exempts them from
                                --block-private (repeatable)
    --deny-dest CIDR            Never connect to these ranges (repeatable)
    --deny-port PORT            Never connect to this port (repeatable)
    --block-private             Deny loopback, private, link-local (cloud metadata) and other
                                special ranges, after name resolution
    --bind-out ADDR|incoming    Make outbound connections from this local IP address, or
                                from the address the client connected to (incoming)
    --bind-interface IFACE      Send outbound connections only through this interface
                                (SO_BINDTODEVICE; no capability needed since Linux 5.7)
    --fwmark N                  Put this firewall mark on outbound connections (SO_MARK, for
                                policy routing; needs CAP_NET_ADMIN, or CAP_NET_RAW on 5.17+)
    --max-connections-per-client N
                                Simultaneous connections from one client IP address; more
                                are refused (SOCKS5 reply 02) [default: no limit]
    --proxy-protocol CIDR       Connections from these load balancers must begin with a
                                PROXY protocol header (v1 or v2); the client it names is the
                                client for --allow-client and logs (repeatable)

PROTOCOL:
    --udp-advertise ADDR        IP address to announce in UDP ASSOCIATE replies (when the
                                proxy is behind NAT) [default: the address the client reached]
    --udp-ports LOW-HIGH        UDP ASSOCIATE relays listen for clients on ports in this range
                                (to forward through NAT or publish from a container); an
                                association that finds it full gets reply 01 [default: any]
    --no-socks4                 Refuse SOCKS4 and SOCKS4a clients
    --socks4-without-auth       Serve SOCKS4 even with --auth-file (SOCKS4 has no passwords,
                                so those clients bypass authentication)
    -h, --help                  Print this help
    -V, --version               Print the version

Timeouts take seconds, fractions allowed (0.5).

ENVIRONMENT:
    SOCKSLOOP_USER, SOCKSLOOP_PASS   One RFC 1929 user (so no password is on a command line)
    LISTEN_FDS, NOTIFY_SOCKET, WATCHDOG_USEC
                                     Set by systemd: socket activation, readiness, watchdog

SIGNALS: SIGINT or SIGTERM drains (a second one stops at once); SIGHUP re-reads users and
rules (the config file and the auth file) and ends the connections of removed users.
Exit codes: 0 after a stop, 1 when the server cannot start, 2 for a bad command line.
More in socksloop(8): man -l man/socksloop.8
";

/// Parse the process's arguments (without the program name), and the config file that
/// `--config PATH` names: its keys come first, so a flag given on the command line replaces the
/// file's key of the same name (`src/config_file.rs`).
pub fn parse_args(args: Vec<OsString>) -> Result<Action, ConfigError> {
    if args.first().is_some_and(|first| first == "hash-password") {
        // The extra argument is not shown: it may well be the password.
        return match args.len() {
            1 => Ok(Action::HashPassword),
            _ => Err(ConfigError(
                "hash-password takes no arguments: it reads the password from standard input".into(),
            )),
        };
    }
    let (path, rest) = take_config_flag(args)?;
    let Some(path) = path else { return parse_args_only(rest) };
    if rest.iter().any(|a| ["-h", "--help", "-V", "--version"].contains(&a.to_string_lossy().as_ref())) {
        return parse_args_only(rest);
    }
    let source = path.display().to_string();
    let text = std::fs::read_to_string(&path)
        .map_err(|e| ConfigError(format!("cannot read config file {source}: {e}")))?;
    let file = crate::config_file::parse(&text, &source).map_err(ConfigError)?;
    let mut merged: Vec<OsString> = Vec::new();
    for (flag, value) in &file.flags {
        if crate::config_file::given_on_command_line(&rest, flag) {
            continue; // the command line's value replaces the file's
        }
        merged.push(flag.into());
        merged.extend(value.iter().map(OsString::from));
    }
    merged.extend(rest);
    let action = parse_args_only(merged)?;
    Ok(match action {
        Action::Run(mut config) => {
            config.users = file.users;
            config.warnings = file.warnings;
            config.config_file = Some(path);
            Action::Run(config)
        }
        other => other,
    })
}

/// Remove `--config PATH` (or `--config=PATH`) from the arguments; once at most.
fn take_config_flag(args: Vec<OsString>) -> Result<(Option<PathBuf>, Vec<OsString>), ConfigError> {
    let mut path = None;
    let mut rest = Vec::with_capacity(args.len());
    let mut iter = args.into_iter();
    while let Some(arg) = iter.next() {
        let text = arg.to_string_lossy();
        let value = if text == "--config" {
            match iter.next() {
                Some(value) => value,
                None => return Err(ConfigError("the flag '--config' needs a value (see --help)".into())),
            }
        } else if let Some(value) = text.strip_prefix("--config=") {
            OsString::from(value)
        } else {
            rest.push(arg);
            continue;
        };
        if path.replace(PathBuf::from(value)).is_some() {
            return Err(ConfigError("--config is given twice".into()));
        }
    }
    Ok((path, rest))
}

/// Parse flags only (no config file): the command line's parser, also used on each key of a
/// config file.
pub fn parse_args_only(args: Vec<OsString>) -> Result<Action, ConfigError> {
    let mut args = pico_args::Arguments::from_vec(args);
    if args.contains(["-h", "--help"]) {
        return Ok(Action::PrintHelp);
    }
    if args.contains(["-V", "--version"]) {
        return Ok(Action::PrintVersion);
    }
    let mut config = Config::default();

    let listen: Vec<String> = args.values_from_str("--listen").map_err(flag_error)?;
    if !listen.is_empty() {
        config.listen = listen.iter().map(|s| parse_socket_addr("--listen", s)).collect::<Result<_, _>>()?;
        config.listen_given = true;
    }
    if let Some(level) = take(&mut args, "--log-level", parse_log_level)? {
        config.log_level = level;
    }
    if let Some(format) = take(&mut args, "--log-format", parse_log_format)? {
        config.log_format = format;
    }
    for (flag, slot) in [
        ("--handshake-timeout", &mut config.handshake_timeout),
        ("--connect-timeout", &mut config.connect_timeout),
        ("--idle-timeout", &mut config.idle_timeout),
    ] {
        if let Some(value) = take(&mut args, flag, |s| parse_seconds(flag, s))? {
            *slot = value;
        }
    }
    config.max_connections =
        take(&mut args, "--max-connections", |s| parse_positive("--max-connections", s))?;
    if let Some(n) = take(&mut args, "--resolver-threads", |s| parse_positive("--resolver-threads", s))? {
        config.resolver_threads = n;
    }
    if let Some(n) = take(&mut args, "--verifier-threads", |s| parse_positive("--verifier-threads", s))? {
        config.verifier_threads = n;
    }
    config.nameservers = take_all(&mut args, "--nameserver", parse_nameserver)?;
    if let Some(n) = take(&mut args, "--workers", |s| parse_positive("--workers", s))? {
        config.workers = n;
    }
    if let Some(grace) = take(&mut args, "--shutdown-grace", |s| {
        // 0 is allowed here: it means "no grace".
        if s.trim() == "0" { Ok(Duration::ZERO) } else { parse_seconds("--shutdown-grace", s) }
    })? {
        config.shutdown_grace = grace;
    }

    if let Some(path) = args
        .opt_value_from_os_str("--auth-file", |s| Ok::<_, String>(PathBuf::from(s)))
        .map_err(flag_error)?
    {
        config.auth.file = Some(path);
    }
    config.allow_open_proxy = args.contains("--allow-open-proxy");
    config.rules.block_private = args.contains("--block-private");
    config.rules.allow_clients = take_all(&mut args, "--allow-client", |s| parse_cidr("--allow-client", s))?;
    config.rules.allow_dest = take_all(&mut args, "--allow-dest", |s| parse_cidr("--allow-dest", s))?;
    config.rules.deny_dest = take_all(&mut args, "--deny-dest", |s| parse_cidr("--deny-dest", s))?;
    config.rules.deny_ports = take_all(&mut args, "--deny-port", parse_port)?;
    config.proxy_protocol = take_all(&mut args, "--proxy-protocol", |s| parse_cidr("--proxy-protocol", s))?;
    config.bind_out = take(&mut args, "--bind-out", parse_bind_out)?;
    config.bind_interface = take(&mut args, "--bind-interface", parse_interface)?;
    config.fwmark = take(&mut args, "--fwmark", parse_fwmark)?;
    config.max_connections_per_client = take(&mut args, "--max-connections-per-client", |s| {
        parse_positive("--max-connections-per-client", s)
    })?;
    config.udp_advertise = take(&mut args, "--udp-advertise", |s| {
        s.parse::<IpAddr>()
            .map_err(|_| format!("invalid value '{s}' for --udp-advertise: expected an IP address"))
    })?;
    config.udp_ports = take(&mut args, "--udp-ports", parse_port_range)?;
    if let Some(addr) = take(&mut args, "--metrics", |s| parse_socket_addr("--metrics", s).map_err(|e| e.0))?
    {
        config.metrics = Some(addr);
    }
    if let Some(mode) = take(&mut args, "--relay", parse_relay_mode)? {
        config.relay_mode = mode;
    }
    if let Some(delay) = take(&mut args, "--connect-attempt-delay", parse_attempt_delay)? {
        config.connect_attempt_delay = delay;
    }
    if let Some(family) = take(&mut args, "--prefer-family", parse_prefer_family)? {
        config.prefer_family = family;
    }
    if let Some(idle) = take(&mut args, "--tcp-keepalive", |s| {
        if s.trim() == "0" { Ok(Duration::ZERO) } else { parse_seconds("--tcp-keepalive", s) }
    })? {
        config.tcp_keepalive = Some(idle).filter(|d| !d.is_zero());
    }
    config.socks4 = !args.contains("--no-socks4");
    config.socks4_without_auth = args.contains("--socks4-without-auth");

    let rest = args.finish();
    if let Some(first) = rest.first() {
        let shown = first.to_string_lossy();
        return Err(ConfigError(if shown.starts_with('-') {
            format!("unknown flag '{shown}' (see --help)")
        } else {
            format!("unexpected argument '{shown}' (see --help)")
        }));
    }
    Ok(Action::Run(Box::new(config)))
}

/// Take an optional flag's value and parse it with our own parser, whose error names the flag.
fn take<T>(
    args: &mut pico_args::Arguments,
    flag: &'static str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Option<T>, ConfigError> {
    match args.opt_value_from_str::<_, String>(flag).map_err(flag_error)? {
        Some(raw) => parse(&raw).map(Some).map_err(ConfigError),
        None => Ok(None),
    }
}

/// Take every value of a repeatable flag, each parsed by our own parser.
fn take_all<T>(
    args: &mut pico_args::Arguments,
    flag: &'static str,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, ConfigError> {
    let raw: Vec<String> = args.values_from_str(flag).map_err(flag_error)?;
    raw.iter().map(|s| parse(s).map_err(ConfigError)).collect()
}

/// An IP address, or `incoming` (the local address the client connected to).
pub fn parse_bind_out(s: &str) -> Result<BindOut, String> {
    if s.eq_ignore_ascii_case("incoming") {
        return Ok(BindOut::Incoming);
    }
    s.parse::<IpAddr>()
        .map(BindOut::Addr)
        .map_err(|_| format!("invalid value '{s}' for --bind-out: expected an IP address or 'incoming'"))
}

/// A network interface name as the kernel accepts it: 1 to 15 bytes, no '/', no whitespace.
pub fn parse_interface(s: &str) -> Result<String, String> {
    let ok = !s.is_empty() && s.len() < 16 && !s.contains('/') && !s.chars().any(char::is_whitespace);
    if ok {
        Ok(s.to_owned())
    } else {
        Err(format!("invalid value '{s}' for --bind-interface: expected an interface name (1-15 bytes)"))
    }
}

/// A firewall mark: decimal or 0x-prefixed hexadecimal, 32 bits.
pub fn parse_fwmark(s: &str) -> Result<u32, String> {
    let parsed = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse::<u32>(),
    };
    parsed.map_err(|_| {
        format!("invalid value '{s}' for --fwmark: expected a number from 0 to 4294967295 (or 0x...)")
    })
}

fn parse_cidr(flag: &str, s: &str) -> Result<Cidr, String> {
    s.parse::<Cidr>().map_err(|why| format!("invalid value for {flag}: {why}"))
}

fn parse_port(s: &str) -> Result<u16, String> {
    s.parse::<u16>()
        .ok()
        .filter(|&p| p > 0)
        .ok_or_else(|| format!("invalid value '{s}' for --deny-port: expected a port 1-65535"))
}

fn flag_error(error: pico_args::Error) -> ConfigError {
    ConfigError(format!("{error} (see --help)"))
}

fn parse_socket_addr(flag: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse().map_err(|_| {
        ConfigError(format!(
            "invalid value '{s}' for {flag}: expected IP:PORT such as 127.0.0.1:1080 or [::1]:1080"
        ))
    })
}

fn parse_log_level(s: &str) -> Result<log::LevelFilter, String> {
    match s.to_ascii_lowercase().as_str() {
        "error" => Ok(log::LevelFilter::Error),
        "warn" => Ok(log::LevelFilter::Warn),
        "info" => Ok(log::LevelFilter::Info),
        "debug" => Ok(log::LevelFilter::Debug),
        "trace" => Ok(log::LevelFilter::Trace),
        _ => Err(format!("invalid value '{s}' for --log-level: expected error, warn, info, debug or trace")),
    }
}

/// `LOW-HIGH`, inclusive, 1 <= LOW <= HIGH <= 65535.
fn parse_port_range(s: &str) -> Result<(u16, u16), String> {
    let bad = || format!("invalid value '{s}' for --udp-ports: expected LOW-HIGH such as 40000-40999");
    let (low, high) = s.split_once('-').ok_or_else(bad)?;
    let (low, high) =
        (low.trim().parse::<u16>().map_err(|_| bad())?, high.trim().parse::<u16>().map_err(|_| bad())?);
    if low == 0 || low > high {
        return Err(bad());
    }
    Ok((low, high))
}

fn parse_log_format(s: &str) -> Result<LogFormat, String> {
    match s.to_ascii_lowercase().as_str() {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        _ => Err(format!("invalid value '{s}' for --log-format: expected text or json")),
    }
}

/// `IP`, `IP:PORT` or `[IPv6]:PORT`; the port defaults to 53.
fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, 53));
    }
    s.parse::<SocketAddr>().map_err(|_| {
        format!("invalid value '{s}' for --nameserver: expected an IP address, IP:PORT or [IPv6]:PORT")
    })
}

fn parse_attempt_delay(s: &str) -> Result<Duration, String> {
    match s.trim().parse::<u64>() {
        Ok(ms) if ms <= 10_000 => Ok(Duration::from_millis(ms)),
        _ => Err(format!(
            "invalid value '{s}' for --connect-attempt-delay: expected milliseconds from 0 to 10000"
        )),
    }
}

fn parse_prefer_family(s: &str) -> Result<PreferFamily, String> {
    match s.to_ascii_lowercase().as_str() {
        "auto" => Ok(PreferFamily::Auto),
        "ipv4" => Ok(PreferFamily::Ipv4),
        "ipv6" => Ok(PreferFamily::Ipv6),
        _ => Err(format!("invalid value '{s}' for --prefer-family: expected auto, ipv4 or ipv6")),
    }
}

fn parse_relay_mode(s: &str) -> Result<RelayMode, String> {
    match s.to_ascii_lowercase().as_str() {
        "copy" => Ok(RelayMode::Copy),
        "splice" if cfg!(target_os = "linux") => Ok(RelayMode::Splice),
        "auto" if cfg!(target_os = "linux") => Ok(RelayMode::Auto),
        mode @ ("splice" | "auto") => {
            Err(format!("invalid value '{mode}' for --relay: splice(2) is only available on Linux; use copy"))
        }
        _ => Err(format!("invalid value '{s}' for --relay: expected auto, splice or copy")),
    }
}

fn parse_seconds(flag: &str, s: &str) -> Result<Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs <= 86_400.0 * 365.0 => Ok(Duration::from_secs_f64(secs)),
        _ => Err(format!("invalid value '{s}' for {flag}: expected a number of seconds > 0")),
    }
}

fn parse_positive(flag: &str, s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("invalid value '{s}' for {flag}: expected a whole number > 0")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Action, ConfigError> {
        parse_args(args.iter().map(OsString::from).collect())
    }

    fn config(args: &[&str]) -> Config {
        match parse(args) {
            Ok(Action::Run(config)) => *config,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults() {
        let c = config(&[]);
        assert_eq!(c.listen, vec!["127.0.0.1:1080".parse().unwrap()]);
        assert_eq!(c.handshake_timeout, Duration::from_secs(10));
        assert_eq!(c.idle_timeout, Duration::from_secs(300));
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.log_format, LogFormat::Text);
    }

    #[test]
    fn log_format() {
        assert_eq!(config(&["--log-format", "json"]).log_format, LogFormat::Json);
        assert_eq!(config(&["--log-format=TEXT"]).log_format, LogFormat::Text);
        let err = parse(&["--log-format", "xml"]).expect_err("unknown format");
        assert!(err.0.contains("--log-format") && err.0.contains("text or json"), "{err}");
    }

    #[test]
    fn repeated_listen_and_ipv6() {
        let c = config(&["--listen", "[::1]:1081", "--listen", "127.0.0.1:1082"]);
        assert_eq!(c.listen, vec!["[::1]:1081".parse().unwrap(), "127.0.0.1:1082".parse().unwrap()]);
        assert!(c.listen_given);
        assert!(config(&["--listen=[::1]:1"]).listen_given);
        assert!(!config(&["--workers", "2"]).listen_given, "the default address is not given");
    }

    #[test]
    fn workers_and_grace() {
        let c = config(&["--workers", "2", "--shutdown-grace", "0"]);
        assert_eq!((c.workers, c.shutdown_grace), (2, Duration::ZERO));
        assert!(parse(&["--workers", "0"]).is_err());
        assert!(parse(&["--shutdown-grace", "-1"]).is_err());
    }

    #[test]
    fn fractional_timeouts() {
        let c = config(&["--handshake-timeout", "0.5", "--idle-timeout=60"]);
        assert_eq!(c.handshake_timeout, Duration::from_millis(500));
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
    }

    #[test]
    fn errors_name_the_flag_and_value() {
        let cases: &[(&[&str], &str)] = &[
            (&["--listen", "nowhere"], "--listen"),
            (&["--log-level", "loud"], "--log-level"),
            (&["--connect-timeout", "0"], "--connect-timeout"),
            (&["--idle-timeout", "-3"], "--idle-timeout"),
            (&["--max-connections", "many"], "--max-connections"),
            (&["--bogus"], "--bogus"),
            (&["--listen"], "--listen"),
        ];
        for (args, name) in cases {
            let err = parse(args).expect_err("should fail");
            assert!(err.0.contains(name), "{args:?} gave {err}");
            assert!(!err.0.contains('\n'), "one line: {err}");
        }
    }

    #[test]
    fn access_flags() {
        let c = config(&[
            "--auth-file",
            "/etc/socksloop/users",
            "--allow-client",
            "10.0.0.0/8",
            "--allow-client",
            "::1",
            "--deny-dest",
            "192.168.0.0/16",
            "--deny-port",
            "25",
            "--block-private",
            "--bind-out",
            "127.0.0.2",
            "--allow-open-proxy",
        ]);
        assert_eq!(c.auth.file, Some(PathBuf::from("/etc/socksloop/users")));
        assert_eq!(c.rules.allow_clients.len(), 2);
        assert_eq!(c.rules.deny_dest, vec!["192.168.0.0/16".parse::<Cidr>().unwrap()]);
        assert_eq!(c.rules.deny_ports, vec![25]);
        assert!(c.rules.block_private && c.allow_open_proxy);
        assert_eq!(c.bind_out, Some(BindOut::Addr("127.0.0.2".parse().unwrap())));
        for (args, name) in [
            (&["--allow-client", "10.0.0.0/40"][..], "--allow-client"),
            (&["--deny-port", "0"], "--deny-port"),
            (&["--bind-out", "eth0"], "--bind-out"),
        ] {
            let err = parse(args).expect_err("should fail");
            assert!(err.0.contains(name), "{err}");
        }
    }

    #[test]
    fn relay_mode() {
        let default = if cfg!(target_os = "linux") { RelayMode::Auto } else { RelayMode::Copy };
        assert_eq!(config(&[]).relay_mode, default);
        assert_eq!(config(&["--relay", "copy"]).relay_mode, RelayMode::Copy);
        let err = parse(&["--relay", "zerocopy"]).expect_err("unknown mode");
        assert!(err.0.contains("--relay") && err.0.contains("auto, splice or copy"), "{err}");
        if cfg!(target_os = "linux") {
            assert_eq!(config(&["--relay=splice"]).relay_mode, RelayMode::Splice);
            assert_eq!(config(&["--relay", "auto"]).relay_mode, RelayMode::Auto);
        } else {
            for mode in ["splice", "auto"] {
                let err = parse(&["--relay", mode]).expect_err("Linux only");
                assert!(err.0.contains("only available on Linux"), "{err}");
            }
        }
    }

    #[test]
    fn happy_eyeballs_and_keepalive_flags() {
        let c = config(&[]);
        assert_eq!(c.connect_attempt_delay, Duration::from_millis(250));
        assert_eq!(c.prefer_family, PreferFamily::Auto);
        assert_eq!(c.tcp_keepalive, Some(Duration::from_secs(60)));
        let c =
            config(&["--connect-attempt-delay", "100", "--prefer-family", "IPv6", "--tcp-keepalive", "0"]);
        assert_eq!(c.connect_attempt_delay, Duration::from_millis(100));
        assert_eq!(c.prefer_family, PreferFamily::Ipv6);
        assert_eq!(c.tcp_keepalive, None);
        assert_eq!(config(&["--tcp-keepalive", "30"]).tcp_keepalive, Some(Duration::from_secs(30)));
        for (args, flag) in [
            (&["--connect-attempt-delay", "fast"][..], "--connect-attempt-delay"),
            (&["--connect-attempt-delay", "20000"], "--connect-attempt-delay"),
            (&["--prefer-family", "ipv5"], "--prefer-family"),
            (&["--tcp-keepalive", "-1"], "--tcp-keepalive"),
        ] {
            let err = parse(args).expect_err("bad value");
            assert!(err.0.contains(flag), "{err}");
        }
    }

    #[test]
    fn udp_port_range() {
        assert_eq!(config(&[]).udp_ports, None);
        assert_eq!(config(&["--udp-ports", "40000-40999"]).udp_ports, Some((40000, 40999)));
        assert_eq!(config(&["--udp-ports", "5000-5000"]).udp_ports, Some((5000, 5000)));
        for bad in ["40000", "0-10", "20-10", "1-70000", "a-b"] {
            let err = parse(&["--udp-ports", bad]).expect_err(bad);
            assert!(err.0.contains("--udp-ports"), "{err}");
        }
    }

    #[test]
    fn nameservers() {
        assert!(config(&[]).nameservers.is_empty());
        let c = config(&["--nameserver", "127.0.0.1", "--nameserver", "[::1]:5353", "--nameserver", "::1"]);
        let expected: Vec<SocketAddr> =
            ["127.0.0.1:53", "[::1]:5353", "[::1]:53"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(c.nameservers, expected);
        assert!(c.in_loop_dns());
        let err = parse(&["--nameserver", "dns.example"]).expect_err("not an address");
        assert!(err.0.contains("--nameserver"), "{err}");
    }

    #[test]
    fn metrics_address() {
        assert_eq!(config(&[]).metrics, None);
        assert_eq!(config(&["--metrics", "127.0.0.1:9100"]).metrics, Some("127.0.0.1:9100".parse().unwrap()));
        assert_eq!(config(&["--metrics=[::1]:0"]).metrics, Some("[::1]:0".parse().unwrap()));
        let err = parse(&["--metrics", "9100"]).expect_err("a port alone is not an address");
        assert!(err.0.contains("--metrics") && err.0.contains("IP:PORT"), "{err}");
    }

    #[test]
    fn verifier_threads_and_hash_password() {
        assert_eq!(config(&[]).verifier_threads, 2);
        assert_eq!(config(&["--verifier-threads", "4"]).verifier_threads, 4);
        let err = parse(&["--verifier-threads", "0"]).expect_err("zero threads");
        assert!(err.0.contains("--verifier-threads"), "{err}");
        assert!(matches!(parse(&["hash-password"]), Ok(Action::HashPassword)));
        let err = parse(&["hash-password", "secret"]).expect_err("no password on the command line");
        assert!(err.0.contains("standard input") && !err.0.contains('\n'), "{err}");
        // Only as the first argument: elsewhere it is an unexpected word.
        assert!(parse(&["--workers", "2", "hash-password"]).is_err());
    }

    #[test]
    fn config_file_flag() {
        let path = std::env::temp_dir().join(format!("socksloop-config-{}.toml", std::process::id()));
        std::fs::write(
            &path,
            "idle-timeout = 60\ndeny-port = [25, 26]\n[[users]]\nname = \"u\"\npassword = \"p\"\n",
        )
        .unwrap();
        let arg = format!("--config={}", path.display());
        let c = config(&[&arg]);
        assert_eq!(c.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.rules.deny_ports, vec![25, 26]);
        assert_eq!(c.users.len(), 1);
        assert_eq!(c.config_file.as_deref(), Some(path.as_path()));
        // The command line wins, key by key.
        let c = config(&[&arg, "--idle-timeout", "5", "--deny-port=9"]);
        assert_eq!((c.idle_timeout, c.rules.deny_ports), (Duration::from_secs(5), vec![9]));
        assert!(parse(&[&arg, &arg]).unwrap_err().0.contains("twice"));
        assert!(parse(&["--config"]).unwrap_err().0.contains("needs a value"));
        assert!(matches!(parse(&[&arg, "--help"]), Ok(Action::PrintHelp)));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn egress_and_per_client_flags() {
        let c = config(&[
            "--bind-out",
            "incoming",
            "--bind-interface",
            "eth0",
            "--fwmark",
            "0x20",
            "--max-connections-per-client",
            "8",
        ]);
        assert_eq!(c.bind_out, Some(BindOut::Incoming));
        assert_eq!(
            c.egress(),
            Egress { bind_out: Some(BindOut::Incoming), interface: Some("eth0".into()), fwmark: Some(32) }
        );
        assert_eq!(c.max_connections_per_client, Some(8));
        for (args, flag) in [
            (&["--bind-interface", "a/b"][..], "--bind-interface"),
            (&["--bind-interface", "much-too-long-name"], "--bind-interface"),
            (&["--fwmark", "-1"], "--fwmark"),
            (&["--max-connections-per-client", "0"], "--max-connections-per-client"),
        ] {
            let err = parse(args).expect_err("bad value");
            assert!(err.0.contains(flag), "{err}");
        }
    }

    #[test]
    fn help_and_version() {
        assert!(matches!(parse(&["--help"]), Ok(Action::PrintHelp)));
        assert!(matches!(parse(&["-V"]), Ok(Action::PrintVersion)));
    }
}
