//! socksloop's measuring instruments, kept out of the product crate: the load tool
//! `socksloop-bench` (`src/bin/socksloop-bench/`), the threaded baseline server
//! (`src/bin/threaded_baseline.rs`), and the code they share with the criterion benches
//! (`benches/`).
//!
//! * [`pattern`]: the deterministic, checkable byte stream of every throughput run;
//! * [`wire`]: the SOCKS5 client handshake and the header that tells the target what to do;
//! * [`target`]: the echo / sink / source server every benchmark connection ends at;
//! * [`threaded_baseline`]: the thread-per-connection SOCKS5 proxy socksloop is measured
//!   against;
//! * [`servers`]: the servers under test in the relay bench, started and stopped.
//!
//! It depends on the `socksloop` library only for what it measures or reuses: `Server` and
//! `Config` (socksloop in-process, in [`servers`]), its listener (`listen::bind`, for its
//! backlog), `limits::raise_nofile_limit`, and, in the codec bench, `protocol`.

pub mod pattern;
pub mod servers;
pub mod target;
pub mod threaded_baseline;
pub mod wire;
