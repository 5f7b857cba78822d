//! Shared helpers, one submodule per kind, all re-exported here so a test module needs only
//! `use crate::support::*;`:
//!
//! * [`access`]: the JSON access log, parsed by python3's `json` module;
//! * [`proxy`]: starting the proxy (in-process or as the binary), signals, its log, and the
//!   checks the fault tests end with (alive, serving, descriptors back);
//! * [`socks`]: a small blocking SOCKS5 client (greeting, auth, requests, replies) and ways to
//!   leave a connection (FIN or RST);
//! * [`targets`]: echo, data-source and black-holed targets, and an echo in another process;
//! * [`udp`]: SOCKS5 UDP datagrams, associations and a UDP echo;
//! * [`curl`]: a tiny HTTP server and curl run through the proxy;
//! * [`data`]: a deterministic byte stream and its verifier;
//! * [`process`]: a process seen through /proc (descriptors, sockets, CPU, RSS, threads);
//! * [`buffers`]: how much a TCP path can buffer here, for tests that must push more.
//!
//! Every wait here has a limit, and every child process is stopped by its PID.

pub mod access;
pub mod buffers;
pub mod curl;
pub mod data;
pub mod netns;
pub mod process;
pub mod proxy;
pub mod socks;
pub mod targets;
pub mod udp;

pub use self::access::*;
pub use self::buffers::*;
pub use self::curl::*;
pub use self::data::*;
pub use self::process::*;
pub use self::proxy::*;
pub use self::socks::*;
pub use self::targets::*;
pub use self::udp::*;

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

/// Default read/write timeout and deadline for anything that must happen: generous, so only a
/// real hang fails a test on a busy machine.
pub const TIMEOUT: Duration = Duration::from_secs(10);

/// How long closing may take to show in /proc: closes happen at the end of a loop pass, and a
/// rejected client lingers for up to 2 s waiting for the client's FIN; the rest is slack for a
/// busy machine (a deadline, not a wait: a test that passes does not spend it).
pub const SETTLE: Duration = Duration::from_secs(10);

pub const MIB: usize = 1 << 20;

/// Call `probe` every 20 ms until it returns `Some`, at most `limit` (it runs at least once).
pub fn poll_until<T>(limit: Duration, mut probe: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(found) = probe() {
            return Some(found);
        }
        if start.elapsed() >= limit {
            return None;
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// A file in the system temp dir, unique to this test process and name; removed on drop.
pub struct TempFile(PathBuf);

impl TempFile {
    pub fn new(name: &str, contents: &str) -> TempFile {
        // Unique within the process too: tests run in parallel and may ask for the same name.
        static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path = std::env::temp_dir().join(format!("socksloop-it-{}-{n}-{name}", std::process::id()));
        std::fs::write(&path, contents).unwrap();
        TempFile(path)
    }

    pub fn path(&self) -> &str {
        self.0.to_str().unwrap()
    }

    pub fn path_buf(&self) -> PathBuf {
        self.0.clone()
    }

    /// Replace the contents (for reload tests).
    pub fn write(&self, contents: &str) {
        std::fs::write(&self.0, contents).unwrap();
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
