//! How much a TCP path can hold on this machine, for tests that must push more than the socket
//! buffers take (to reach backpressure) without assuming a kernel's buffer sizes.
//!
//! A connection holds at most its sender's send buffer plus its receiver's receive buffer.
//! Linux autotuning grows a socket's buffers up to `tcp_wmem[2]` and `tcp_rmem[2]` (32 MiB
//! receive on some machines) unless SO_SNDBUF/SO_RCVBUF pinned them, so a bound takes, for
//! each, the larger of its size now (read back with getsockopt) and that maximum.

use socket2::{Domain, Socket, Type};

use super::*;

/// The most autotuning may grow a TCP socket's (receive, send) buffer to: the third values of
/// /proc/sys/net/ipv4/tcp_rmem and tcp_wmem.
pub fn autotune_limits() -> (usize, usize) {
    let max = |name: &str| -> usize {
        let path = format!("/proc/sys/net/ipv4/{name}");
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        text.split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("{path}: {text}"))
    };
    (max("tcp_rmem"), max("tcp_wmem"))
}

/// An upper bound on the payload one TCP connection on loopback can hold in flight between
/// two sockets like the tests' (created with the kernel's defaults, not pinned) and the
/// proxy's: each buffer at the larger of a fresh socket's size, read back with getsockopt,
/// and what autotuning may grow it to.
pub fn connection_capacity() -> usize {
    let (rmem_max, wmem_max) = autotune_limits();
    let fresh = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a TCP socket");
    let rcvbuf = fresh.recv_buffer_size().expect("SO_RCVBUF");
    let sndbuf = fresh.send_buffer_size().expect("SO_SNDBUF");
    rcvbuf.max(rmem_max) + sndbuf.max(wmem_max)
}

/// An upper bound on what a relay through the proxy can hold between a client and its
/// target: two connections, plus 1 MiB for what the proxy itself holds (its relay buffers
/// or kernel pipes).
pub fn relay_capacity() -> usize {
    2 * connection_capacity() + MIB
}

/// `at_least` bytes, or twice what a relay can buffer if that is more: enough that pushing it
/// through a relay must run into backpressure.
pub fn beyond_buffering(at_least: usize) -> usize {
    at_least.max(2 * relay_capacity())
}
