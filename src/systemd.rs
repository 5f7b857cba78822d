//! Talking to systemd: socket activation (`LISTEN_FDS`) and `sd_notify` (`NOTIFY_SOCKET`, the
//! watchdog). Nothing here runs on an event loop.
//!
//! * **Socket activation** (`sd_listen_fds(3)`): when `LISTEN_PID` is this process and
//!   `LISTEN_FDS=N`, descriptors 3..3+N are listening sockets systemd opened for us.
//!   [`parse_listen_fds`] turns the variables into descriptor numbers (pure, table-tested);
//!   [`adopt`] checks each is a listening TCP socket, makes it nonblocking and close-on-exec,
//!   and hands it over as a `TcpListener` with its address for the logs.
//! * **Notifications** (`sd_notify(3)`): a [`Notifier`] sends datagrams to `NOTIFY_SOCKET` (a
//!   path, or an abstract name written `@name`) from a nonblocking unbound socket. The
//!   messages are built by the functions in [`message`]. A failed send is logged once and is
//!   never fatal: the proxy works the same without systemd listening.
//! * **Watchdog** (`sd_watchdog_enabled(3)`): with `WATCHDOG_USEC` set (and `WATCHDOG_PID`
//!   ours or unset), a thread of its own ([`Watchdog`]) sends `WATCHDOG=1` every half period,
//!   but only when its liveness check says every event loop went round since the last ping.
//!   The loops wake at least every quarter period for that (the server's `wake_every`).
//!
//! The variables are read once at the top of `main` and removed from the environment
//! ([`Environment::take`]), so a process this one starts (none today) would not take the
//! descriptors or the notify socket for its own.
//!
//! No crate: std's `UnixDatagram` speaks the notify protocol (abstract addresses through
//! `std::os::linux::net::SocketAddrExt`), and socket2, already a dependency, reads the socket
//! options the activation checks need. The `sd-notify` crate would cover only half of this.

use std::ffi::{OsStr, OsString};
use std::fmt;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::{self, UnixDatagram};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use socket2::{Domain, Protocol, SockRef, Type};

use crate::server::Heartbeats;

/// The first descriptor systemd passes (`SD_LISTEN_FDS_START`).
pub const LISTEN_FDS_START: RawFd = 3;

/// The most descriptors taken from `LISTEN_FDS`. systemd's own limit is the descriptor
/// numbers' range; this one keeps a garbage count from allocating a list of billions before
/// the first descriptor is found closed. No socket unit listens on this many addresses.
pub const MAX_LISTEN_FDS: u32 = 65_536;

/// Every variable systemd's protocols put in our environment; all are removed once read.
const VARIABLES: [&str; 6] =
    ["LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES", "NOTIFY_SOCKET", "WATCHDOG_USEC", "WATCHDOG_PID"];

/// What systemd told this process through its environment, read once.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Environment {
    pub listen_pid: Option<String>,
    pub listen_fds: Option<String>,
    pub listen_fdnames: Option<String>,
    pub notify_socket: Option<OsString>,
    pub watchdog_usec: Option<String>,
    pub watchdog_pid: Option<String>,
}

impl Environment {
    /// Read systemd's variables and remove them from the process environment, so that a
    /// child would not inherit them (it would take descriptors that are not its own, or speak
    /// for this service).
    ///
    /// # Safety
    ///
    /// No other thread may read or write the environment while this runs: call it before any
    /// thread is started. (That is why `std::env::remove_var` is `unsafe` since edition 2024:
    /// on glibc a `getenv` in another thread can read the memory `unsetenv` frees.)
    pub unsafe fn take() -> Environment {
        // A value that is not UTF-8 cannot be a number either; lossy keeps it for the error.
        let text = |name| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
        let environment = Environment {
            listen_pid: text("LISTEN_PID"),
            listen_fds: text("LISTEN_FDS"),
            listen_fdnames: text("LISTEN_FDNAMES"),
            notify_socket: std::env::var_os("NOTIFY_SOCKET"),
            watchdog_usec: text("WATCHDOG_USEC"),
            watchdog_pid: text("WATCHDOG_PID"),
        };
        for name in VARIABLES {
            // SAFETY: the caller guarantees that no other thread touches the environment.
            unsafe { std::env::remove_var(name) };
        }
        environment
    }

    /// The descriptors passed to process `pid` ([`parse_listen_fds`]).
    pub fn listen_fds(&self, pid: u32) -> Result<Vec<ListenFd>, ActivationError> {
        parse_listen_fds(
            self.listen_pid.as_deref(),
            self.listen_fds.as_deref(),
            self.listen_fdnames.as_deref(),
            pid,
        )
    }

    /// The watchdog period for process `pid` ([`watchdog_period`]).
    pub fn watchdog(&self, pid: u32) -> Result<Option<Duration>, String> {
        watchdog_period(self.watchdog_usec.as_deref(), self.watchdog_pid.as_deref(), pid)
    }
}

// ---------------------------------------------------------------------------------------------
// Socket activation

/// One descriptor systemd passed, with its name from `LISTEN_FDNAMES` (the socket unit's
/// `FileDescriptorName=`, by default the unit's name).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenFd {
    pub fd: RawFd,
    pub name: Option<String>,
}

impl fmt::Display for ListenFd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.name {
            Some(name) => write!(f, "fd {} ({name})", self.fd),
            None => write!(f, "fd {}", self.fd),
        }
    }
}

/// Why the inherited sockets cannot be used. The proxy refuses to start: listening elsewhere
/// than systemd was told would be a silent misconfiguration.
#[derive(Debug)]
pub enum ActivationError {
    /// `LISTEN_PID` is not a process id.
    Pid(String),
    /// `LISTEN_FDS` is not a count of descriptors (or more than [`MAX_LISTEN_FDS`]).
    Count(String),
    /// The descriptor is not open.
    NotOpen(RawFd),
    /// The descriptor is open but is not a listening TCP socket.
    NotTcpListener { fd: ListenFd, found: String },
    /// A socket call on the descriptor failed.
    Io { fd: ListenFd, source: io::Error },
}

impl PartialEq for ActivationError {
    /// Equal by variant and text (an `io::Error` has no equality of its own).
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl fmt::Display for ActivationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActivationError::Pid(v) => write!(f, "LISTEN_PID={v:?} is not a process id"),
            ActivationError::Count(v) => {
                write!(f, "LISTEN_FDS={v:?} is not a number of descriptors (0 to {MAX_LISTEN_FDS})")
            }
            ActivationError::NotOpen(fd) => write!(f, "fd {fd} from LISTEN_FDS is not open"),
            ActivationError::NotTcpListener { fd, found } => {
                write!(f, "{fd} from LISTEN_FDS is not a listening TCP socket: {found}")
            }
            ActivationError::Io { fd, source } => write!(f, "{fd} from LISTEN_FDS: {source}"),
        }
    }
}

impl std::error::Error for ActivationError {}

/// The descriptors systemd passed to process `pid`, from the values of `LISTEN_PID`,
/// `LISTEN_FDS` and `LISTEN_FDNAMES` (pure; `sd_listen_fds_with_names(3)`'s rules).
///
/// None when `LISTEN_PID` or `LISTEN_FDS` is unset, or `LISTEN_PID` names another process
/// (the variables were inherited from a parent that was activated: the descriptors are not
/// ours). Names are only for the logs, so a `LISTEN_FDNAMES` whose count does not match is
/// ignored rather than refused.
pub fn parse_listen_fds(
    listen_pid: Option<&str>,
    listen_fds: Option<&str>,
    listen_fdnames: Option<&str>,
    pid: u32,
) -> Result<Vec<ListenFd>, ActivationError> {
    let Some(listen_pid) = listen_pid else { return Ok(Vec::new()) };
    match listen_pid.parse::<u32>() {
        Ok(0) | Err(_) => return Err(ActivationError::Pid(listen_pid.into())),
        Ok(p) if p != pid => return Ok(Vec::new()),
        Ok(_) => {}
    }
    let Some(listen_fds) = listen_fds else { return Ok(Vec::new()) };
    let count = listen_fds
        .parse::<u32>()
        .ok()
        .filter(|&n| n <= MAX_LISTEN_FDS)
        .and_then(|n| RawFd::try_from(n).ok())
        .ok_or_else(|| ActivationError::Count(listen_fds.into()))?;
    let names: Vec<&str> = listen_fdnames.map(|n| n.split(':').collect()).unwrap_or_default();
    let names_fit = names.len() == count as usize;
    Ok((0..count)
        .map(|i| ListenFd {
            fd: LISTEN_FDS_START + i,
            name: names_fit.then(|| names[i as usize]).filter(|n| !n.is_empty()).map(String::from),
        })
        .collect())
}

/// A listening socket inherited from systemd, ready for the event loop.
#[derive(Debug)]
pub struct Activated {
    pub fd: ListenFd,
    /// The address it listens on.
    pub addr: SocketAddr,
    /// Nonblocking and close-on-exec.
    pub listener: TcpListener,
}

/// Take the descriptors in `fds` as listeners: each must be an open, listening TCP socket
/// (`SO_ACCEPTCONN`, `SO_TYPE`, `SO_DOMAIN`, `SO_PROTOCOL`); each becomes nonblocking and
/// close-on-exec. Nothing is taken unless every descriptor passes the checks.
///
/// # Safety
///
/// The descriptors must have been handed to this process by systemd (as
/// [`parse_listen_fds`] found them for our own pid) and nothing else in the process may own
/// or use them; call this once. The returned listeners then own them.
pub unsafe fn adopt(fds: &[ListenFd]) -> Result<Vec<Activated>, ActivationError> {
    let mut checked = Vec::with_capacity(fds.len());
    for fd in fds {
        // SAFETY: fcntl(F_GETFD) reads the descriptor's flags, touches no memory and is
        // harmless on a descriptor that is not open (EBADF).
        if unsafe { libc::fcntl(fd.fd, libc::F_GETFD) } == -1 {
            return Err(ActivationError::NotOpen(fd.fd));
        }
        // SAFETY: the descriptor is open (just checked) and stays open for this borrow: the
        // caller guarantees nothing else in the process owns it, so nothing closes it.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd.fd) };
        let addr =
            check_listener(SockRef::from(&borrowed)).map_err(|e| e.into_activation_error(fd.clone()))?;
        checked.push((fd.clone(), addr));
    }
    let mut adopted = Vec::with_capacity(checked.len());
    for (fd, addr) in checked {
        // SAFETY: systemd handed this open descriptor to this process and the caller
        // guarantees nothing else owns it; from here on the listener is its only owner.
        let owned = unsafe { OwnedFd::from_raw_fd(fd.fd) };
        let socket = socket2::Socket::from(owned);
        let io_error = |source| ActivationError::Io { fd: fd.clone(), source };
        socket.set_nonblocking(true).map_err(io_error)?;
        socket.set_cloexec(true).map_err(io_error)?;
        adopted.push(Activated { fd, addr, listener: socket.into() });
    }
    Ok(adopted)
}

/// A failed check: what was found instead, or the call that failed.
enum CheckError {
    Found(String),
    Io(io::Error),
}

impl CheckError {
    fn into_activation_error(self, fd: ListenFd) -> ActivationError {
        match self {
            CheckError::Found(found) => ActivationError::NotTcpListener { fd, found },
            CheckError::Io(source) => ActivationError::Io { fd, source },
        }
    }
}

impl From<io::Error> for CheckError {
    fn from(e: io::Error) -> Self {
        // ENOTSOCK: a file, a pipe or a terminal where a socket was promised.
        if e.raw_os_error() == Some(libc::ENOTSOCK) {
            CheckError::Found("not a socket".into())
        } else {
            CheckError::Io(e)
        }
    }
}

/// The socket's address if it is a listening TCP socket over IPv4 or IPv6.
fn check_listener(socket: SockRef<'_>) -> Result<SocketAddr, CheckError> {
    let domain = socket.domain()?;
    if domain != Domain::IPV4 && domain != Domain::IPV6 {
        let found = if domain == Domain::UNIX { "a unix socket".into() } else { format!("{domain:?}") };
        return Err(CheckError::Found(found));
    }
    let kind = socket.r#type()?;
    if kind != Type::STREAM {
        let found = if kind == Type::DGRAM { "a UDP socket".into() } else { format!("{kind:?}") };
        return Err(CheckError::Found(found));
    }
    match socket.protocol()? {
        Some(p) if p == Protocol::TCP => {}
        other => return Err(CheckError::Found(format!("protocol {other:?}"))),
    }
    if !socket.is_listener()? {
        return Err(CheckError::Found("a TCP socket that is not listening".into()));
    }
    socket.local_addr()?.as_socket().ok_or_else(|| CheckError::Found("a socket without an IP address".into()))
}

// ---------------------------------------------------------------------------------------------
// Notifications

/// Where `NOTIFY_SOCKET` points.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NotifyAddress {
    /// A socket file (an absolute path).
    Path(std::path::PathBuf),
    /// A name in Linux's abstract namespace (`@name`; the `@` stands for the leading NUL).
    Abstract(Vec<u8>),
}

/// Parse `NOTIFY_SOCKET` (pure). systemd sets an absolute path or `@name`; anything else
/// (a relative path, `vsock:…`, which only virtual machines are given) is refused.
pub fn parse_notify_socket(value: &OsStr) -> Result<NotifyAddress, String> {
    let bytes = value.as_bytes();
    match bytes.first() {
        Some(b'/') => Ok(NotifyAddress::Path(value.into())),
        Some(b'@') if bytes.len() > 1 => Ok(NotifyAddress::Abstract(bytes[1..].to_vec())),
        _ => Err(format!(
            "NOTIFY_SOCKET={:?} is neither an absolute path nor an abstract name (@name)",
            value.to_string_lossy()
        )),
    }
}

/// Sends `sd_notify` messages to systemd.
///
/// The socket is unbound and nonblocking: a notify socket whose queue is full fails the send
/// with `EAGAIN` instead of stalling the sender. Failures are logged at `warn` once, then at
/// `debug`; they are never fatal.
#[derive(Debug)]
pub struct Notifier {
    socket: UnixDatagram,
    addr: net::SocketAddr,
    /// A send has failed before (later failures are logged quietly).
    failed: AtomicBool,
}

impl Notifier {
    /// A notifier for the address in `NOTIFY_SOCKET`.
    pub fn new(value: &OsStr) -> Result<Notifier, String> {
        let addr = match parse_notify_socket(value)? {
            NotifyAddress::Path(path) => net::SocketAddr::from_pathname(&path),
            NotifyAddress::Abstract(name) => abstract_address(&name),
        }
        .map_err(|e| format!("NOTIFY_SOCKET={:?}: {e}", value.to_string_lossy()))?;
        let socket = UnixDatagram::unbound().map_err(|e| format!("cannot open a notify socket: {e}"))?;
        socket.set_nonblocking(true).map_err(|e| format!("cannot open a notify socket: {e}"))?;
        Ok(Notifier { socket, addr, failed: AtomicBool::new(false) })
    }

    /// Send one message (`KEY=VALUE` lines, see [`message`]). Never blocks, never fails.
    pub fn send(&self, message: &str) {
        let Err(e) = self.socket.send_to_addr(message.as_bytes(), &self.addr) else {
            // The pings would fill a debug log.
            let level = if message == message::WATCHDOG { log::Level::Trace } else { log::Level::Debug };
            log::log!(level, "sd_notify: {}", message.replace('\n', " "));
            return;
        };
        if self.failed.swap(true, Ordering::Relaxed) {
            log::debug!("sd_notify: cannot send {:?}: {e}", first_line(message));
        } else {
            log::warn!(
                "sd_notify: cannot send {:?} to NOTIFY_SOCKET: {e} (further failures are logged at debug level)",
                first_line(message)
            );
        }
    }
}

fn first_line(message: &str) -> &str {
    message.lines().next().unwrap_or_default()
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_address(name: &[u8]) -> io::Result<net::SocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    net::SocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_address(_name: &[u8]) -> io::Result<net::SocketAddr> {
    Err(io::Error::new(io::ErrorKind::Unsupported, "abstract socket names exist only on Linux"))
}

/// The `sd_notify` messages socksloop sends (pure: text in, text out).
pub mod message {
    use std::net::SocketAddr;

    /// Sent every half watchdog period while the loops are alive.
    pub const WATCHDOG: &str = "WATCHDOG=1";

    /// Listening (at start and after a reload): `READY=1`, the main pid (systemd knows it when
    /// it started us; it matters if a wrapper did) and a status line `systemctl status` shows.
    pub fn ready(pid: u32, status: &str) -> String {
        format!("READY=1\nMAINPID={pid}\nSTATUS={}", one_line(status))
    }

    /// A reload begins (SIGHUP). `MONOTONIC_USEC` is `CLOCK_MONOTONIC` now, in µs: systemd 253
    /// and later match it against the SIGHUP they sent for `Type=notify-reload`; older ones
    /// ignore it.
    pub fn reloading(monotonic_usec: u64) -> String {
        format!("RELOADING=1\nMONOTONIC_USEC={monotonic_usec}\nSTATUS=reloading")
    }

    /// Draining has begun (the first SIGINT/SIGTERM).
    pub fn stopping() -> String {
        "STOPPING=1\nSTATUS=draining: not accepting, open connections finishing".into()
    }

    /// `listening on 127.0.0.1:1080, [::1]:1080`.
    pub fn listening(addrs: &[SocketAddr]) -> String {
        let list: Vec<String> = addrs.iter().map(SocketAddr::to_string).collect();
        format!("listening on {}", list.join(", "))
    }

    /// A `STATUS=` value must stay on its line: a newline would start a new assignment.
    fn one_line(text: &str) -> String {
        text.replace(['\n', '\r'], " ")
    }
}

/// `CLOCK_MONOTONIC` in microseconds, for `MONOTONIC_USEC=`. (`Instant` reads the same clock
/// but does not show its value.)
pub fn monotonic_usec() -> u64 {
    let mut now = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the struct we own; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    now.tv_sec as u64 * 1_000_000 + now.tv_nsec as u64 / 1_000
}

// ---------------------------------------------------------------------------------------------
// Watchdog

/// The watchdog period for process `pid` from `WATCHDOG_USEC` and `WATCHDOG_PID` (pure;
/// `sd_watchdog_enabled(3)`'s rules): none when unset or meant for another process.
pub fn watchdog_period(
    usec: Option<&str>,
    watchdog_pid: Option<&str>,
    pid: u32,
) -> Result<Option<Duration>, String> {
    let Some(usec) = usec else { return Ok(None) };
    if let Some(watchdog_pid) = watchdog_pid {
        match watchdog_pid.parse::<u32>() {
            Ok(p) if p == pid => {}
            Ok(p) if p != 0 => return Ok(None),
            _ => return Err(format!("WATCHDOG_PID={watchdog_pid:?} is not a process id")),
        }
    }
    match usec.parse::<u64>() {
        Ok(n) if n > 0 && n < u64::MAX => Ok(Some(Duration::from_micros(n))),
        _ => Err(format!("WATCHDOG_USEC={usec:?} is not a positive number of microseconds")),
    }
}

/// Whether every loop's heartbeat moved between two readings (pure). An entry of
/// [`u64::MAX`] in `now` is a loop that has finished: it has nothing left to prove.
pub fn all_advanced(before: &[u64], now: &[u64]) -> bool {
    before.len() == now.len() && before.iter().zip(now).all(|(&b, &n)| n == u64::MAX || n != b)
}

/// A liveness check for [`Watchdog::spawn`]: true when every loop has gone round since the
/// previous call (the first call compares with the counters as they were now).
pub fn loops_went_round(heartbeats: Heartbeats) -> impl FnMut() -> bool + Send + 'static {
    let mut last = heartbeats.read();
    move || {
        let now = heartbeats.read();
        let advanced = all_advanced(&last, &now);
        last = now;
        advanced
    }
}

/// The thread that pings the watchdog. Dropping it stops the thread and waits for it.
pub struct Watchdog {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Send `WATCHDOG=1` every `period / 2` while `alive()` says the loops went round since
    /// the last call. A thread of its own: the main thread waits in signal-hook's iterator,
    /// which has no timed wait.
    pub fn spawn(
        notifier: std::sync::Arc<Notifier>,
        period: Duration,
        mut alive: impl FnMut() -> bool + Send + 'static,
    ) -> io::Result<Watchdog> {
        let (stop, stopped) = mpsc::channel::<()>();
        let every = period / 2;
        let thread = thread::Builder::new().name("watchdog".into()).spawn(move || {
            // Ends when the sender is dropped (`Disconnected`): the proxy is exiting.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                if alive() {
                    notifier.send(message::WATCHDOG);
                } else {
                    log::warn!(
                        "watchdog: an event loop has not gone round in {every:?}; not pinging systemd"
                    );
                }
            }
        })?;
        Ok(Watchdog { stop: Some(stop), thread: Some(thread) })
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fds(list: &[(RawFd, Option<&str>)]) -> Vec<ListenFd> {
        list.iter().map(|&(fd, name)| ListenFd { fd, name: name.map(String::from) }).collect()
    }

    #[test]
    fn listen_fds_for_us() {
        let parse = |pid, n, names| parse_listen_fds(pid, n, names, 42);
        assert_eq!(parse(Some("42"), Some("1"), None), Ok(fds(&[(3, None)])));
        assert_eq!(parse(Some("42"), Some("3"), None), Ok(fds(&[(3, None), (4, None), (5, None)])));
        assert_eq!(
            parse(Some("42"), Some("2"), Some("socksloop.socket:admin")),
            Ok(fds(&[(3, Some("socksloop.socket")), (4, Some("admin"))]))
        );
        // Names whose count does not match are only lost, not an error.
        assert_eq!(parse(Some("42"), Some("2"), Some("one")), Ok(fds(&[(3, None), (4, None)])));
        assert_eq!(parse(Some("42"), Some("2"), Some(":b")), Ok(fds(&[(3, None), (4, Some("b"))])));
        assert_eq!(parse(Some("42"), Some("0"), None), Ok(vec![]));
    }

    #[test]
    fn listen_fds_not_for_us() {
        let parse = |pid, n| parse_listen_fds(pid, n, None, 42);
        assert_eq!(parse(None, None), Ok(vec![]));
        assert_eq!(parse(None, Some("2")), Ok(vec![]), "no LISTEN_PID: not activated");
        assert_eq!(parse(Some("41"), Some("2")), Ok(vec![]), "a parent's descriptors");
        assert_eq!(parse(Some("42"), None), Ok(vec![]));
    }

    #[test]
    fn listen_fds_errors() {
        let parse = |pid, n| parse_listen_fds(pid, n, None, 42);
        for pid in ["", "0", "-42", "42x", " 42", "99999999999"] {
            assert_eq!(parse(Some(pid), Some("1")), Err(ActivationError::Pid(pid.into())), "{pid:?}");
        }
        for n in ["", "-1", "one", "1 ", "65537", "2147483645", "4294967296"] {
            assert_eq!(parse(Some("42"), Some(n)), Err(ActivationError::Count(n.into())), "{n:?}");
        }
        assert!(parse(Some("42"), Some("65536")).is_ok_and(|v| v.last().unwrap().fd == 65_538));
        assert_eq!(
            ActivationError::Count("x".into()).to_string(),
            "LISTEN_FDS=\"x\" is not a number of descriptors (0 to 65536)"
        );
    }

    #[test]
    fn adopt_refuses_what_is_not_a_tcp_listener() {
        use std::os::fd::AsRawFd;
        // A descriptor that is not open. (Not one closed here: tests run on threads, and
        // another could open a socket under the same number meanwhile.)
        let closed = RawFd::MAX - 1;
        // SAFETY (each `adopt` below): the descriptors are ours, or not open, and the checks
        // refuse them before anything takes ownership.
        let err = unsafe { adopt(&fds(&[(closed, None)])) }.unwrap_err();
        assert_eq!(err.to_string(), format!("fd {closed} from LISTEN_FDS is not open"));

        let file = std::fs::File::open("/dev/null").unwrap();
        let err = unsafe { adopt(&fds(&[(file.as_raw_fd(), Some("x"))])) }.unwrap_err();
        assert!(
            err.to_string().ends_with("(x) from LISTEN_FDS is not a listening TCP socket: not a socket"),
            "{err}"
        );

        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let err = unsafe { adopt(&fds(&[(udp.as_raw_fd(), None)])) }.unwrap_err();
        assert!(err.to_string().ends_with("a UDP socket"), "{err}");

        let (unix, _) = std::os::unix::net::UnixStream::pair().unwrap();
        let err = unsafe { adopt(&fds(&[(unix.as_raw_fd(), None)])) }.unwrap_err();
        assert!(err.to_string().ends_with("a unix socket"), "{err}");

        let unbound = socket2::Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let err = unsafe { adopt(&fds(&[(unbound.as_raw_fd(), None)])) }.unwrap_err();
        assert!(err.to_string().ends_with("a TCP socket that is not listening"), "{err}");
    }

    #[test]
    fn adopt_takes_a_listener() {
        use std::os::fd::IntoRawFd;
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        // Clear close-on-exec, as a descriptor inherited across exec has it.
        let fd = listener.into_raw_fd();
        // SAFETY: flag changes on a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_SETFD, 0) };
        // SAFETY: we own `fd` (from into_raw_fd) and hand it over once.
        let mut adopted = unsafe { adopt(&fds(&[(fd, Some("test"))])) }.unwrap();
        let activated = adopted.pop().unwrap();
        assert_eq!((activated.addr, activated.fd.fd), (addr, fd));
        // SAFETY: reading flags of the descriptor the listener owns.
        let (fd_flags, status) = unsafe { (libc::fcntl(fd, libc::F_GETFD), libc::fcntl(fd, libc::F_GETFL)) };
        assert_ne!(fd_flags & libc::FD_CLOEXEC, 0, "close-on-exec");
        assert_ne!(status & libc::O_NONBLOCK, 0, "nonblocking");
        let client = std::net::TcpStream::connect(addr).unwrap();
        let (_, peer) = activated.listener.accept().unwrap();
        assert_eq!(peer, client.local_addr().unwrap());
    }

    #[test]
    fn notify_socket_addresses() {
        let parse = |s: &str| parse_notify_socket(OsStr::new(s));
        assert_eq!(parse("/run/systemd/notify"), Ok(NotifyAddress::Path("/run/systemd/notify".into())));
        assert_eq!(
            parse("@/org/freedesktop/systemd1/notify/1"),
            Ok(NotifyAddress::Abstract(b"/org/freedesktop/systemd1/notify/1".to_vec()))
        );
        for bad in ["", "@", "run/notify", "vsock:2:1234"] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn messages() {
        let addrs = ["127.0.0.1:1080".parse().unwrap(), "[::1]:1080".parse().unwrap()];
        let status = message::listening(&addrs);
        assert_eq!(status, "listening on 127.0.0.1:1080, [::1]:1080");
        assert_eq!(
            message::ready(7, &status),
            "READY=1\nMAINPID=7\nSTATUS=listening on 127.0.0.1:1080, [::1]:1080"
        );
        assert_eq!(message::ready(7, "a\nWATCHDOG=1"), "READY=1\nMAINPID=7\nSTATUS=a WATCHDOG=1");
        assert_eq!(message::reloading(123), "RELOADING=1\nMONOTONIC_USEC=123\nSTATUS=reloading");
        assert!(message::stopping().starts_with("STOPPING=1\nSTATUS="));
        assert_eq!(message::WATCHDOG, "WATCHDOG=1");
        let (a, b) = (monotonic_usec(), monotonic_usec());
        assert!(a > 0 && b >= a);
    }

    #[test]
    fn watchdog_rules() {
        let period = |usec, pid| watchdog_period(usec, pid, 42);
        assert_eq!(period(None, None), Ok(None));
        assert_eq!(period(Some("30000000"), None), Ok(Some(Duration::from_secs(30))));
        assert_eq!(period(Some("200000"), Some("42")), Ok(Some(Duration::from_millis(200))));
        assert_eq!(period(Some("200000"), Some("41")), Ok(None), "another process's watchdog");
        for bad in ["", "0", "-5", "1s", "18446744073709551615"] {
            assert!(period(Some(bad), None).is_err(), "{bad:?}");
        }
        assert!(period(Some("1000"), Some("x")).is_err());
        assert!(period(Some("1000"), Some("0")).is_err());
    }

    #[test]
    fn heartbeats_advance() {
        assert!(all_advanced(&[1, 5], &[2, 9]));
        assert!(!all_advanced(&[1, 5], &[2, 5]), "the second loop is stuck");
        assert!(all_advanced(&[1, 5], &[2, u64::MAX]), "the second loop has finished");
        assert!(!all_advanced(&[1], &[2, 3]));
        assert!(all_advanced(&[], &[]));
    }

    #[test]
    fn notifier_sends_to_a_path_and_an_abstract_name() {
        let dir = std::env::temp_dir().join(format!("socksloop-notify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify");
        let _ = std::fs::remove_file(&path);
        let receiver = UnixDatagram::bind(&path).unwrap();
        receiver.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Notifier::new(path.as_os_str()).unwrap().send("READY=1");
        let mut buf = [0; 64];
        let n = receiver.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        std::fs::remove_dir_all(&dir).unwrap();

        #[cfg(target_os = "linux")]
        {
            use std::os::linux::net::SocketAddrExt;
            let name = format!("socksloop-notify-unit-{}", std::process::id());
            let receiver =
                UnixDatagram::bind_addr(&net::SocketAddr::from_abstract_name(&name).unwrap()).unwrap();
            receiver.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            Notifier::new(OsStr::new(&format!("@{name}"))).unwrap().send("STOPPING=1");
            let n = receiver.recv(&mut buf).unwrap();
            assert_eq!(&buf[..n], b"STOPPING=1");
        }

        // Nobody listening: the send fails, quietly, and returns.
        let gone = Notifier::new(OsStr::new("/nonexistent/socksloop/notify")).unwrap();
        gone.send("READY=1");
        gone.send("READY=1");
        assert!(gone.failed.load(Ordering::Relaxed));
    }
}
